/**
 * The page's training worker (a module Web Worker, bundled as train-worker.js). It holds one
 * model: the page starts a fresh worker for each run or loaded checkpoint. Messages from the page:
 *   { type: 'start', options, text, dataName, notIsolated }  runs web/run.ts's loop here, off the page's main
 *       thread (the cpu backend's threads block in Atomics.wait, which only a worker may), posting
 *       { type: 'state', state } on every change; the trained model stays here afterwards
 *   { type: 'load', bytes, fileName, backend, threads, notIsolated }  reads a checkpoint .zip instead, posts
 *       its { type: 'state' } ('loaded' or 'error')
 *   { type: 'stop' }  ends the run after the current step
 *   { type: 'generate', prompt, maxTokens, ... }  streams { type: 'token', text } and ends with
 *       { type: 'generated', end, error, note }
 *   { type: 'stop-generate' }  ends the generation after the current token
 *   { type: 'export', format }  builds a download: { type: 'exported', format, fileName, bytes }
 *       (bytes transferred) or { type: 'exported', format, error }
 *   { type: 'snapshot' }  the checkpoint .zip again, for the page to keep in IndexedDB (not to
 *       download): { type: 'snapshot', bytes } or { type: 'snapshot', error }
 * `notIsolated`: why the page is not cross-origin isolated ('' when it is), for the backend note.
 */
import {
  MinigptError, checkPrompt, checkpointToZip, preparePrompt, encodeGguf, generate, ggufFromCheckpoint, hfExportFiles, readWeights, zipFiles,
  type Checkpoint, type CleanOptions, type LoadedModel,
} from '../src/index.js';
import { errorText, loadCheckpointModel, runTraining, type PageBackend, type PageOptions, type PageState } from './run.js';

/** A download the page can ask for: the checkpoint .zip, a llama.cpp GGUF file, a transformers folder .zip. */
export type ExportFormat = 'checkpoint' | 'gguf' | 'hf';

/** The file names the downloads get (the checkpoint's is the one the CLI line on the page names). */
export const EXPORT_FILE_NAMES: Record<ExportFormat, string> = {
  checkpoint: 'minigpt-model.zip',
  gguf: 'minigpt-model.gguf',
  hf: 'minigpt-hf.zip',
};

export interface GenerateRequest {
  prompt: string;
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
}

export type ToTrainWorker =
  | { type: 'start'; options: PageOptions; text: string; dataName: string; notIsolated: string }
  | { type: 'load'; bytes: ArrayBuffer; fileName: string; backend: PageBackend; threads: number; notIsolated: string; keptClean: Partial<CleanOptions> | null }
  | { type: 'stop' }
  | ({ type: 'generate' } & GenerateRequest)
  | { type: 'stop-generate' }
  | { type: 'export'; format: ExportFormat }
  | { type: 'snapshot' };

export type FromTrainWorker =
  | { type: 'state'; state: PageState }
  | { type: 'token'; text: string }
  | { type: 'generated'; end: 'done' | 'stopped' | 'error'; error: string; note: string }
  | { type: 'exported'; format: ExportFormat; fileName: string; bytes: ArrayBuffer }
  | { type: 'exported'; format: ExportFormat; error: string }
  | { type: 'snapshot'; bytes: ArrayBuffer }
  | { type: 'snapshot'; error: string };

/** The worker's global scope, typed here (web/tsconfig's lib is the page's DOM). */
const scope = globalThis as unknown as {
  postMessage(message: FromTrainWorker, transfer?: Transferable[]): void;
  addEventListener(type: 'message', fn: (e: { data: ToTrainWorker }) => void): void;
};
const post = (message: FromTrainWorker, transfer: Transferable[] = []): void => scope.postMessage(message, transfer);

/** The model here, once a run has ended or a checkpoint has loaded. */
let current: LoadedModel | null = null;
let training: AbortController | null = null;
let generating: AbortController | null = null;

const NO_MODEL = 'no model yet: train one or load a checkpoint .zip';

scope.addEventListener('message', ({ data }) => {
  switch (data.type) {
    case 'start': {
      const run = new AbortController();
      training = run;
      void runTraining(data.options, data.text, data.dataName, {
        signal: run.signal, notIsolated: data.notIsolated, onUpdate: (state) => post({ type: 'state', state }),
      })
        .then(({ trained }) => {
          current = trained;
          training = null;
        });
      return;
    }
    case 'load':
      void loadCheckpointModel(new Uint8Array(data.bytes), data.fileName, data.backend, data.threads, data.notIsolated, data.keptClean).then(({ state, loaded }) => {
        current = loaded;
        post({ type: 'state', state });
      });
      return;
    case 'stop':
      training?.abort();
      return;
    case 'generate':
      void generateText(data);
      return;
    case 'stop-generate':
      generating?.abort();
      return;
    case 'export':
      void exportModel(data.format);
      return;
    case 'snapshot':
      void snapshotModel();
      return;
  }
});

/** Streams the continuation of `req.prompt` as 'token' messages, then one 'generated'. */
async function generateText(req: GenerateRequest): Promise<void> {
  const loaded = current;
  if (!loaded || training || generating) {
    post({ type: 'generated', end: 'error', error: !loaded ? NO_MODEL : training ? 'the model is still training' : 'already generating', note: '' });
    return;
  }
  const stop = new AbortController();
  generating = stop;
  let note = '';
  try {
    const prepared = preparePrompt(loaded, req.prompt);
    note = [prepared.note, checkPrompt(loaded, prepared.prompt, 'prompt')].filter(Boolean).join('; ');
    // generate() lets the event loop turn every 25 ms, so a stop message is taken while it runs.
    for await (const t of generate(loaded, prepared.prompt, {
      maxTokens: req.maxTokens, temperature: req.temperature, topK: req.topK, topP: req.topP, seed: req.seed, signal: stop.signal,
    })) {
      if (t.endOfText) note = [note, `the model ended the text (${loaded.tokenizer.decode([t.id])})`].filter(Boolean).join('; ');
      if (t.text) post({ type: 'token', text: t.text });
    }
    post({ type: 'generated', end: stop.signal.aborted ? 'stopped' : 'done', error: '', note });
  } catch (e) {
    post({ type: 'generated', end: 'error', error: errorText(e), note });
  } finally {
    generating = null;
  }
}

/** The file `format` built from the model's current weights. */
async function modelFile(format: ExportFormat): Promise<ArrayBuffer> {
  const loaded = current;
  if (!loaded) throw new MinigptError(training ? 'the model is still training' : NO_MODEL);
  // With the cleaning its prompts get, so the CLI cleans them alike and the hf export's normalizer does it.
  const ckpt: Checkpoint = {
    config: loaded.model.config, weights: await readWeights(loaded.model), tokenizer: loaded.tokenizer,
    ...(loaded.clean ? { recorded: { clean: loaded.clean } } : {}),
  };
  const bytes = format === 'checkpoint' ? await checkpointToZip(ckpt)
    : format === 'gguf' ? encodeGguf(ggufFromCheckpoint(ckpt))
    : zipFiles(hfExportFiles(ckpt), 'minigpt-hf');
  // A view of part of a buffer is copied, so the page gets exactly the file's bytes.
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes.buffer as ArrayBuffer : bytes.slice().buffer;
}

/** Builds the download `format` and transfers its bytes to the page. */
async function exportModel(format: ExportFormat): Promise<void> {
  try {
    const buffer = await modelFile(format);
    post({ type: 'exported', format, fileName: EXPORT_FILE_NAMES[format], bytes: buffer }, [buffer]);
  } catch (e) {
    post({ type: 'exported', format, error: errorText(e) });
  }
}

/** The checkpoint .zip, transferred to the page to keep in the browser's storage. */
async function snapshotModel(): Promise<void> {
  try {
    const buffer = await modelFile('checkpoint');
    post({ type: 'snapshot', bytes: buffer }, [buffer]);
  } catch (e) {
    post({ type: 'snapshot', error: errorText(e) });
  }
}
