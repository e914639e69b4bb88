// Watches on one client, routed by token, and "wait until this key says
// that" on top of them: what libxl's libxl__ev_xswatch and
// libxl__ev_devstate_wait do, and what a backend needs per device.
import { XsClient, XsReplyError } from './client.js';

export type WatchHandler = (path: string) => void;

export class Watcher {
  private readonly handlers = new Map<string, WatchHandler>();
  private nextToken = 1;
  /** Watch events this client received (the initial ones included). */
  events = 0;

  constructor(readonly xs: XsClient) {
    xs.onEvent = (path, token) => {
      this.events++;
      this.handlers.get(token)?.(path);
    };
  }

  async watch(path: string, handler: WatchHandler, token = `w${this.nextToken++}`): Promise<string> {
    this.handlers.set(token, handler);
    try {
      await this.xs.watch(path, token);
    } catch (err) {
      this.handlers.delete(token);
      throw err;
    }
    return token;
  }

  async unwatch(path: string, token: string): Promise<void> {
    this.handlers.delete(token);
    await this.xs.unwatch(path, token);
  }

  /**
   * Resolves with the value of `path` once `ok` accepts it, read at each of
   * its watch's events (the first comes at once); rejects with `what` after
   * `timeoutMs`. A missing key reads as undefined.
   */
  async until(path: string, ok: (v: string | undefined) => boolean, timeoutMs: number, what: string): Promise<string | undefined> {
    let token = '';
    let timer: NodeJS.Timeout | undefined;
    try {
      return await new Promise<string | undefined>((resolve, reject) => {
        let chain = Promise.resolve();
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${path})`)), timeoutMs);
        const check = (): void => {
          chain = chain.then(async () => {
            const v = await this.xs.read(path).catch((e: unknown) => {
              if (e instanceof XsReplyError && e.errno === 'ENOENT') return undefined;
              throw e;
            });
            if (ok(v)) resolve(v);
          }).catch(reject);
        };
        this.watch(path, check).then((t) => { token = t; }, reject);
      });
    } finally {
      clearTimeout(timer);
      if (token) await this.unwatch(path, token).catch(() => {});
    }
  }
}
