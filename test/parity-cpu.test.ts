import { paritySuite } from './support/parity.js';
import { createCpuBackend } from '../src/backend/cpu/index.js';

// Single-threaded plain SIMD, and every core with relaxed SIMD where the runtime has it.
paritySuite('cpu (1 thread, simd)', () => createCpuBackend({ threads: 1, relaxedSimd: false }), 1e-4);
paritySuite('cpu', () => createCpuBackend(), 1e-4);
