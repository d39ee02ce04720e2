import { paritySuite } from './support/parity.js';
import { createReferenceBackend } from '../src/backend/reference/index.js';

paritySuite('reference (f32)', () => createReferenceBackend(), 1e-5);
paritySuite('reference (f64)', () => createReferenceBackend({ precision: 'f64' }), 1e-6);
