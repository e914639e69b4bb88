// A frontend's side of device set-up, as guest/lib/xs.c's xs_front_connect
// walks it, on a connection bound as the guest's domain: for the control
// path's measurements without a VM (the bench's control-path series, the
// xenstore-mode tests). A VM's own frontend is that C code, in the guest.
import { XsClient } from './client.js';
import { XenbusState } from './backend.js';
import { Watcher } from './watcher.js';

export interface FrontendTimes {
  /** Backend states seen, in order (InitWait, Connected). */
  backendStates: number[];
}

/** `dir` is relative to the domain's home (device/vif/0), as a guest names it. */
export async function frontConnect(xs: XsClient, dir: string, ringRef: number, eventChannel: number, timeoutMs: number): Promise<FrontendTimes> {
  const w = new Watcher(xs);
  const backend = await xs.read(`${dir}/backend`);
  const seen: number[] = [];
  const reach = async (want: number): Promise<void> => {
    const v = await w.until(`${backend}/state`, (s) => Number(s) >= want, timeoutMs, `the backend of ${dir} to reach state ${want}`);
    seen.push(Number(v));
  };
  await xs.write(`${dir}/state`, String(XenbusState.Initialising));
  await reach(XenbusState.InitWait);
  await xs.write(`${dir}/ring-ref`, String(ringRef));
  await xs.write(`${dir}/event-channel`, String(eventChannel));
  await xs.write(`${dir}/state`, String(XenbusState.Initialised));
  await reach(XenbusState.Connected);
  await xs.write(`${dir}/state`, String(XenbusState.Connected));
  return { backendStates: seen };
}
