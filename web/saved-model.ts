/**
 * The last model made in the page, kept in the browser's IndexedDB so that a reload or a closed tab
 * does not lose it: its checkpoint .zip (checkpointToZip's bytes, the same file as the checkpoint
 * download) and a little about it (SavedModelInfo). Only one model is kept: each save replaces the
 * one before. It is two records of one object store, written and deleted in one transaction: the
 * info, read on every page load to offer the model, and the zip, read only to restore it.
 *
 * Every function throws a MinigptError with a one-line message (no IndexedDB, a full quota...).
 */
import { MinigptError, type CleanOptions, type ModelConfig } from '../src/index.js';

const DB_NAME = 'minigpt';
const DB_VERSION = 1;
const STORE = 'saved-model';
const INFO_KEY = 'info';
const ZIP_KEY = 'zip';

/** What the page says about the kept model. */
export interface SavedModelInfo {
  /** When it was saved (ms since 1970). */
  savedAt: number;
  /** 'trained': a run in the page (done, or stopped early); 'loaded': a checkpoint .zip loaded from a file. */
  source: 'trained' | 'loaded';
  /** The data it was trained on (the page's data name), or the file it was loaded from. */
  from: string;
  /** How its run ended ('loaded' for a loaded file). */
  ended: 'done' | 'stopped' | 'loaded';
  backend: string;
  config: ModelConfig;
  parameters: number;
  /** Steps trained in the page, and the run's planned steps (0 and 0 for a loaded model). */
  steps: number;
  plannedSteps: number;
  /** The last training and validation loss (null: none, as for a loaded model). */
  trainLoss: number | null;
  valLoss: number | null;
  /** The zip's size. */
  bytes: number;
  /** How a loaded model's prompts are cleaned (its zip's run recorded it; the kept zip does not): null or absent, the default. */
  clean?: Partial<CleanOptions> | null;
}

/** An IndexedDB or storage failure in one line: "QuotaExceededError: ..." says what the browser said. */
function storageError(what: string, e: unknown): MinigptError {
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return new MinigptError(`${what}: ${text.split('\n')[0]}`);
}

/** The database (created on first use). */
function openDb(): Promise<IDBDatabase> {
  if (typeof indexedDB === 'undefined' || !indexedDB) {
    return Promise.reject(new MinigptError('this browser gives the page no IndexedDB (a private window, or storage turned off)'));
  }
  return new Promise((resolve, reject) => {
    let request: IDBOpenDBRequest;
    try {
      request = indexedDB.open(DB_NAME, DB_VERSION);
    } catch (e) {
      reject(storageError('could not open the browser storage', e));
      return;
    }
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(storageError('could not open the browser storage', request.error));
    request.onblocked = () => reject(new MinigptError('the browser storage is busy in another tab of this page; close it and try again'));
  });
}

/** Runs `fn` in one transaction of the store; resolves with its result once the transaction has committed. */
async function inTransaction<T>(mode: IDBTransactionMode, what: string, fn: (store: IDBObjectStore) => IDBRequest<T> | void): Promise<T | undefined> {
  const db = await openDb();
  try {
    return await new Promise<T | undefined>((resolve, reject) => {
      // strict: the save is on disk when this resolves, so a tab closed right after keeps the model.
      const tx = db.transaction(STORE, mode, { durability: mode === 'readwrite' ? 'strict' : 'default' });
      let request: IDBRequest<T> | void;
      try {
        request = fn(tx.objectStore(STORE));
      } catch (e) {
        reject(storageError(what, e));
        return;
      }
      tx.oncomplete = () => resolve(request ? request.result : undefined);
      tx.onerror = () => reject(storageError(what, tx.error));
      tx.onabort = () => reject(storageError(what, tx.error ?? new Error('the transaction was aborted')));
    });
  } finally {
    db.close();
  }
}

/** Keeps `zip` and `info` in place of any model kept before (both or neither: one transaction). */
export async function saveModel(info: SavedModelInfo, zip: ArrayBuffer): Promise<void> {
  await inTransaction('readwrite', 'could not keep the model in this browser', (store) => {
    store.put(zip, ZIP_KEY);
    store.put(info, INFO_KEY);
  });
}

/** The kept model's info, or null when none is kept. */
export async function readSavedInfo(): Promise<SavedModelInfo | null> {
  const info = await inTransaction<SavedModelInfo | undefined>('readonly', 'could not read the model kept in this browser', (store) => store.get(INFO_KEY));
  return info ?? null;
}

/** The kept model's checkpoint .zip; throws when there is none. */
export async function readSavedZip(): Promise<ArrayBuffer> {
  const zip = await inTransaction<ArrayBuffer | undefined>('readonly', 'could not read the model kept in this browser', (store) => store.get(ZIP_KEY));
  if (!(zip instanceof ArrayBuffer)) throw new MinigptError('no model is kept in this browser any more (forgotten in another tab?)');
  return zip;
}

/** Deletes the kept model. */
export async function forgetSavedModel(): Promise<void> {
  await inTransaction('readwrite', 'could not delete the model kept in this browser', (store) => {
    store.delete(ZIP_KEY);
    store.delete(INFO_KEY);
  });
}
