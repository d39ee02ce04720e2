/** minigpt as a library. Everything the CLI does goes through these. */
export { MinigptError } from './errors.js';
export { UnknownCharacterError } from './data/tokenizer.js';
export { resolveConfig, DEFAULT_CONFIG, type ModelConfig, type MlpKind, type InitStrategy, type SettingName } from './model/config.js';
export { paramLayout, initialWeights, countParams, type ParamLayout, type ParamSpec, type LayerOffsets } from './model/params.js';
export { createModel, setWeights, readWeights, forward, backward, zeroGrads, meanLoss, tuneKernels, type Model, type ForwardOptions, type Activations, type ParamTensors, type LayerTensors } from './model/model.js';
export { createBackend, createReferenceBackend, webgpuAvailable, BACKEND_NAMES, type BackendName, type Backend, type Tensor, type IntTensor, type WebGpuBackend, type BackendOptions, type CpuOptions, type WebGpuOptions, type AttentionShape, type AdamWHyper } from './backend/index.js';
export { createOptimizer, optimizerStep, optimizerStepChecked, undoSkippedStep, lastGradNorm, DEFAULT_ADAMW, type AdamWConfig, type OptimizerState } from './train/optimizer.js';
export { saveCheckpoint, loadCheckpoint, recordedClean, checkpointFiles, checkpointToZip, checkpointFromZip, checkCheckpointZip, type Checkpoint, type TrainingState, type SaveOptions, type WeightDType } from './io/checkpoint.js';
export { zipFiles, unzipFiles, zipFileNames } from './io/zip.js';
export { encodeSafetensors, decodeSafetensors, readSafetensorsFile, writeSafetensorsFile, type NamedTensor, type SafetensorsContents, type SafetensorsDType } from './io/safetensors.js';
export {
  buildCharTokenizer, tokenizerFromJson, makeTokenizer, createStreamingDecoder, endOfTextToken, startOfTextToken, textStartIds, type Tokenizer, type EncodeOptions,
  type CharTokenizerOptions, type TokenizerKind, type MakeTokenizerOptions, type StreamingDecoder, type TokenizerJson,
} from './data/tokenizer.js';
export { trainBpe, END_OF_TEXT, type BpeTrainOptions, type ByteLevelTokenizer, type SafeCuts } from './data/bpe.js';
export { gpt2Tokenizer } from './data/gpt2.js';
export { type HfBpeTokenizerJson, type HfPretokenizer } from './data/hf-bpe.js';
export { type SpBpeTokenizerJson, type SpBpeTokenizer, type SpSpaces } from './data/sp-bpe.js';
export { loadText, loadDocuments, cleanText, splitTrainVal, BLANK_LINE_SEPARATOR, type CleanOptions, type LoadTextOptions } from './data/text.js';
export { cleanDocuments, encodeDocuments, documentSeparatorOf, START_OF_TEXT_SEPARATOR, type DocumentSeparator } from './data/documents.js';
export { loadModel, computeLogits, scoreText, type LoadedModel, type LoadModelOptions, type TextScore } from './inference.js';
export { createRng, type Rng, type RngState } from './util/random.js';
export { learningRate, type LrSchedule } from './train/schedule.js';
export { createBatchSampler, memoryTokens, type BatchSampler, type TokenStream } from './data/batches.js';
export {
  train, loadTrainingData, evaluateText, evaluateShards, evaluateRunData, TRAIN_DEFAULTS, type TrainOptions, type TrainSummary, type StepInfo, type EvalInfo, type EvalResult, type StartInfo, type TrainingData,
  type EvalTextOptions, type EvalShardsOptions, type EvalRunDataOptions, type SampleInfo, type SaveInfo,
} from './train/train.js';
export { findLearningRate, type LrFindOptions, type LrFindResult, type LrPoint } from './train/lr-find.js';
export { generate, checkPrompt, preparePrompt, type SampleOptions, type GeneratedToken } from './generate.js';
export { renderLossPlot, readMetrics, type PlotSeries, type PlotOptions, type MetricRecord, type ReadMetricsOptions } from './train/plot.js';
export { createKvCache, forwardCached, type KvCache } from './model/model.js';
export { prepareShards, openShards, isShardDir, SHARDS_FORMAT, type PrepareOptions, type PrepareSummary, type OpenedShards, type ShardsMeta, type ShardDType, type PrepareProgress, type ShardSplitSummary } from './data/shards.js';
export { exportHf, hfExportFiles, readHfModel, tokenizerFromHfJson, type HfExportOptions, type HfImportOptions, type HfImportResult } from './io/hf.js';
export { exportGguf, ggufFromCheckpoint, encodeGguf, type GgufExportOptions, type GgufContents, type GgufValue, type GgufTensor, GgufType, GgmlType } from './io/gguf.js';
export { type AmpMode } from './train/amp.js';
export { type ReferenceOptions } from './backend/reference/index.js';
export { type MmTile } from './backend/webgpu/tiled.js';
