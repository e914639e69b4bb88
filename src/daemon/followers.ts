// Streams that follow an emitter's event (console -f, /v1/events). Any
// number of them share one listener on the emitter: a listener each would
// be a leak to Node at 11 (MaxListenersExceededWarning) while nothing leaks,
// and the warning must stay meaningful for real leaks.
import type { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';

type Handler = (...args: unknown[]) => void;

interface Relay {
  handlers: Set<Handler>;
  listener: Handler;
}

export class Followers {
  private readonly relays = new WeakMap<EventEmitter, Map<string, Relay>>();

  /** Calls fn on each `event` of em until the returned function is called. */
  follow<A extends unknown[]>(em: EventEmitter, event: string, fn: (...args: A) => void): () => void {
    let byEvent = this.relays.get(em);
    if (!byEvent) {
      byEvent = new Map();
      this.relays.set(em, byEvent);
    }
    let relay = byEvent.get(event);
    if (!relay) {
      const handlers = new Set<Handler>();
      const listener = (...args: unknown[]): void => {
        for (const h of [...handlers]) h(...args);
      };
      relay = { handlers, listener };
      byEvent.set(event, relay);
      em.on(event, listener);
    }
    const r = relay;
    const map = byEvent;
    const h = fn as unknown as Handler;
    r.handlers.add(h);
    return () => {
      if (!r.handlers.delete(h) || r.handlers.size) return;
      em.off(event, r.listener);
      map.delete(event);
    };
  }
}

/** Bytes a follower's response may buffer for a reader that does not keep up; beyond, output is skipped and said so. */
export const FOLLOW_BUFFER = 1 << 20;

/**
 * Writes to a streamed response without letting a slow reader grow the
 * daemon: past FOLLOW_BUFFER unsent bytes, what comes is skipped until the
 * reader has caught up, then note(bytes skipped) says so.
 */
export function boundedWriter(raw: ServerResponse, note: (skipped: number) => string): (chunk: string | Buffer) => void {
  let skipped = 0;
  return (chunk) => {
    if (raw.writableLength > FOLLOW_BUFFER) {
      skipped += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      return;
    }
    if (skipped) {
      raw.write(note(skipped));
      skipped = 0;
    }
    raw.write(chunk);
  };
}
