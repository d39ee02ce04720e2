/**
 * Cross-origin isolation where the host cannot send COOP/COEP (GitHub Pages, most static hosts).
 * The cpu backend needs SharedArrayBuffer, which a browser gives only a cross-origin isolated page.
 * `minigpt web` sends both headers, so there the page is isolated already and this does nothing
 * (no service worker, no reload). Elsewhere it registers coi-serviceworker.js, the service worker of
 * the coi-serviceworker package (MIT; scripts/build-web.mjs copies it beside the page), which
 * re-serves every response in the page's folder (the page, its workers, the wasm) with COOP
 * same-origin and COEP require-corp, then reloads once so that the page comes back through it.
 *
 * Only the package's service-worker half is used. Its page half (the same file as a <script> in
 * index.html) reloads whenever its worker is new or not in control, with no limit and no word when
 * it fails; and it would reload in the middle of the run the page autostarts, which the page's
 * leave-while-training prompt then stops. Here the page registers the worker itself, before it
 * starts anything: at most one automatic reload per tab until the page is isolated (a
 * sessionStorage flag), none once a run or a load has begun, and a one-line reason when isolation
 * does not come, for the backend note.
 */
import { errorText } from './run.js';

/** The service worker file, beside index.html. */
export const ISOLATION_WORKER = 'coi-serviceworker.js';
/** sessionStorage: 'pending' just before the reload, 'done' once the reloaded page has read it; removed once the page is isolated. */
const RELOAD_FLAG = 'minigpt-isolation-reload';
/** How long to wait for the service worker to become active. */
const READY_TIMEOUT_MS = 10_000;

export interface Isolation {
  /** The page is reloading through the service worker: start nothing. */
  reloading: boolean;
  /** This load is that reload (the page's, not the user's). */
  afterIsolationReload: boolean;
  /** Why the page is not cross-origin isolated, in one line ('' when it is, or while it reloads). */
  why: string;
}

/** The flag's value (null: not set, or no sessionStorage). */
function readFlag(): string | null {
  try { return sessionStorage.getItem(RELOAD_FLAG); } catch { return null; }
}

function setFlag(value: 'pending' | 'done'): boolean {
  try { sessionStorage.setItem(RELOAD_FLAG, value); return true; } catch { return false; }
}

function clearFlag(): void {
  try { sessionStorage.removeItem(RELOAD_FLAG); } catch { /* no storage: nothing was set */ }
}

/**
 * Makes the page cross-origin isolated if it can: at once when it is (the server sent the headers),
 * else by registering the service worker and reloading, once. `mayReload` is asked just before the
 * reload: false (a run has started meanwhile) keeps the page as it is.
 */
export async function ensureIsolation(mayReload: () => boolean): Promise<Isolation> {
  const flag = readFlag();
  const afterIsolationReload = flag === 'pending';
  if (afterIsolationReload) setFlag('done');
  const notIsolated = (why: string): Isolation => ({ reloading: false, afterIsolationReload, why });
  if (globalThis.crossOriginIsolated === true) {
    clearFlag();
    return { reloading: false, afterIsolationReload, why: '' };
  }
  if (globalThis.crossOriginIsolated === undefined) return notIsolated('this browser has no cross-origin isolation');
  if (!isSecureContext) {
    return notIsolated('this address is not a secure context (plain http from another machine), and only a secure one may have the service worker that adds the COOP/COEP headers: serve the page over https, or open it on localhost');
  }
  if (!('serviceWorker' in navigator) || !navigator.serviceWorker) {
    return notIsolated('this browser gives the page no service worker (a private window?) to add the COOP/COEP headers this server does not send');
  }
  // The flag stays for the rest of the tab's life: no second automatic reload. A normal reload goes
  // through the (already registered) service worker, and clears it once the page is isolated.
  if (flag !== null) {
    return notIsolated('the page is still not isolated after reloading through the service worker that adds the COOP/COEP headers (a hard reload bypasses it: reload normally)');
  }
  try {
    await navigator.serviceWorker.register(new URL(ISOLATION_WORKER, document.baseURI));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`it was not active after ${READY_TIMEOUT_MS / 1000} s`)), READY_TIMEOUT_MS);
    });
    await Promise.race([navigator.serviceWorker.ready, timeout]).finally(() => clearTimeout(timer));
  } catch (e) {
    return notIsolated(`the service worker that adds the COOP/COEP headers this server does not send failed (${errorText(e).split('\n')[0]})`);
  }
  if (!mayReload()) return notIsolated('a run or load began before the service worker that adds the COOP/COEP headers was ready: reload the page to use it');
  if (!setFlag('pending')) return notIsolated('the page has no session storage to remember its one reload through the service worker that adds the COOP/COEP headers');
  location.reload();
  return { reloading: true, afterIsolationReload, why: '' };
}
