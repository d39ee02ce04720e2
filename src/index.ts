/** minigpt as a library. Everything the CLI does goes through these. */
export { MinigptError } from './errors.js';
export { resolveConfig, DEFAULT_CONFIG, type ModelConfig, type MlpKind, type InitStrategy } from './model/config.js';
export { paramLayout, initialWeights, countParams, type ParamLayout, type ParamSpec } from './model/params.js';
export { createModel, setWeights, readWeights, forward, backward, zeroGrads, meanLoss, type Model } from './model/model.js';
export { createBackend, createReferenceBackend, BACKEND_NAMES, type Backend, type Tensor, type IntTensor } from './backend/index.js';
export { createOptimizer, optimizerStep, lastGradNorm, DEFAULT_ADAMW, type AdamWConfig, type OptimizerState } from './train/optimizer.js';
export { saveCheckpoint, loadCheckpoint, type Checkpoint, type TrainingState } from './io/checkpoint.js';
export { encodeSafetensors, decodeSafetensors, readSafetensorsFile, writeSafetensorsFile, type NamedTensor } from './io/safetensors.js';
export { buildCharTokenizer, tokenizerFromJson, type Tokenizer } from './data/tokenizer.js';
export { loadText, cleanText, splitTrainVal } from './data/text.js';
export { loadModel, computeLogits, scoreText, type LoadedModel, type TextScore } from './inference.js';
export { createRng, type Rng } from './util/random.js';
export { train, loadTrainingData, evaluateText, TRAIN_DEFAULTS, type TrainOptions, type TrainSummary, type StepInfo, type EvalInfo } from './train/train.js';
export { findLearningRate, type LrFindOptions, type LrFindResult } from './train/lr-find.js';
export { generate, type SampleOptions, type GeneratedToken } from './generate.js';
export { renderLossPlot, readMetrics } from './train/plot.js';
export { createKvCache, forwardCached } from './model/model.js';
