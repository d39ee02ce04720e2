import { paritySuite } from './support/parity.js';
import { createCpuBackend } from '../src/backend/cpu/index.js';

// Single-threaded plain SIMD, every core with relaxed SIMD where the runtime has it, and 3 threads
// with every kernel split across them (by default the fixtures' small shapes mostly run on one).
paritySuite('cpu (1 thread, simd)', () => createCpuBackend({ threads: 1, relaxedSimd: false }), 1e-4);
paritySuite('cpu', () => createCpuBackend(), 1e-4);
paritySuite('cpu (3 threads, every kernel split)', () => createCpuBackend({ threads: 3, parallelMinNs: 0 }), 1e-4);
