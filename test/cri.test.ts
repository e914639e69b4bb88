// Kubernetes' path to LightVM: the CRI calls kubelet makes for a pod whose
// runtimeClassName maps to the handler "lightvm", sent by a test-only gRPC
// client to a private containerd with its CRI plugin on. A host-network pod
// (no CNI here); the sandbox is a placeholder task; each container is a VM,
// its console the container log in CRI format, its exit code in
// ContainerStatus (which CRI learns from the shim's /tasks/exit events).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { buildImage } from '../src/container/oci-image.js';
import { ok, startTestDaemon, type TestDaemon, type VmView } from './daemon-helpers.js';
import { guestImage, ROOT, sleep, tempDir } from './helpers.js';
import { cleanContainerd, have, privateContainerd, type PrivateContainerd } from './oci-helpers.js';

const skip = !have('containerd', '--version') ? 'containerd is not installed (scripts/install-peers.sh)' : !have('ctr', '--version') ? 'ctr is not installed' : false;

type Call = (req: object) => Promise<Record<string, unknown>>;

void describe('CRI: a pod with runtimeClassName lightvm', { skip }, () => {
  let daemon: TestDaemon;
  let tmp: { dir: string; cleanup: () => void };
  let c: PrivateContainerd;
  let client: grpc.Client;
  let rpc: Record<string, Call>;

  before(async () => {
    tmp = tempDir('cri');
    daemon = await startTestDaemon({ prefix: 'cri' });
    // The sandbox image must be there already (no registry): any image will do, its task has no VM.
    c = privateContainerd(tmp.dir, daemon.socket, [
      '[plugins."io.containerd.grpc.v1.cri"]',
      '  sandbox_image = "docker.io/lightvm/hello:1"',
      '  [plugins."io.containerd.grpc.v1.cri".containerd]',
      '    default_runtime_name = "runc"',
      '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
      '      runtime_type = "io.containerd.runc.v2"',
      '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.lightvm]',
      '      runtime_type = "io.containerd.lightvm.v1"',
      '      pod_annotations = ["org.lightvm.*"]',
      '  [plugins."io.containerd.grpc.v1.cri".cni]',
      `    conf_dir = "${tmp.dir}/cni"`,
      '    bin_dir = "/usr/lib/cni"',
    ].join('\n'));
    await c.start();
    for (const g of ['hello', 'exit-status', 'sleeper']) {
      const file = join(tmp.dir, `${g}.tar`);
      writeFileSync(file, buildImage({ kernel: guestImage(g), tag: `lightvm/${g}:1` }).archive);
      const r = c.ctr('-n', 'k8s.io', 'image', 'import', file);
      assert.equal(r.status, 0, r.stderr);
    }
    const def = protoLoader.loadSync(join(ROOT, 'test', 'fixtures', 'cri-subset.proto'), { keepCase: true, enums: String, longs: Number, defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor } } };
    const Service = pkg.runtime.v1.RuntimeService;
    client = new Service(`unix://${c.sock}`, grpc.credentials.createInsecure());
    rpc = {};
    for (const name of Object.keys(Service.service)) {
      const fn = (client as unknown as Record<string, (req: object, cb: (err: Error | null, res: Record<string, unknown>) => void) => void>)[name]!.bind(client);
      rpc[name] = (req) => new Promise((resolve, reject) => fn(req, (err, res) => (err ? reject(err) : resolve(res))));
    }
  });

  after(async () => {
    client?.close();
    if (c) await cleanContainerd(c, tmp.dir, 'k8s.io');
    await daemon?.stop();
    tmp?.cleanup();
  });

  void it('RunPodSandbox with runtime_handler lightvm, two containers: their logs in CRI format and exit codes 0 and 5', async () => {
    const v = await rpc.Version!({ version: '0.1.0' });
    assert.equal(v.runtime_name, 'containerd');
    const logDir = join(tmp.dir, 'pods', 'p1');
    const sandboxConfig = {
      metadata: { name: 'p1', uid: 'uid-p1', namespace: 'default', attempt: 0 },
      hostname: 'p1',
      log_directory: logDir,
      annotations: { 'org.lightvm.grace_ms': '500' },
      linux: { security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
    };
    const pod = await rpc.RunPodSandbox!({ config: sandboxConfig, runtime_handler: 'lightvm' });
    const podId = pod.pod_sandbox_id as string;
    assert.match(podId, /^[0-9a-f]{64}$/);
    assert.deepEqual((await ok<{ vms: VmView[] }>(daemon.socket, 'GET', '/v1/vms')).vms, [], 'the sandbox runs no VM');

    const results: Record<string, { code: number; log: string }> = {};
    for (const [name, image, args] of [['hello', 'docker.io/lightvm/hello:1', []], ['five', 'docker.io/lightvm/exit-status:1', ['5']]] as const) {
      const created = await rpc.CreateContainer!({
        pod_sandbox_id: podId,
        config: { metadata: { name, attempt: 0 }, image: { image }, args, log_path: `${name}.log` },
        sandbox_config: sandboxConfig,
      });
      const id = created.container_id as string;
      await rpc.StartContainer!({ container_id: id });
      const t0 = Date.now();
      let st: { state: string; exit_code: number; reason: string };
      for (;;) {
        st = (await rpc.ContainerStatus!({ container_id: id })).status as typeof st;
        if (st.state === 'CONTAINER_EXITED') break;
        if (Date.now() - t0 > 20_000) throw new Error(`container ${name} still ${st.state} after 20 s: ${c.log().slice(-2000)}`);
        await sleep(50);
      }
      results[name] = { code: st.exit_code, log: readFileSync(join(logDir, `${name}.log`), 'utf8') };
      await rpc.RemoveContainer!({ container_id: id });
    }
    assert.equal(results.hello!.code, 0);
    assert.match(results.hello!.log, /^\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d) stdout F Hello from LightVM!\n$/);
    assert.equal(results.five!.code, 5);

    // kubelet's container stats: the CRI plugin decodes the shim's cgroups v1 metrics.
    const sl = (await rpc.CreateContainer!({
      pod_sandbox_id: podId,
      config: { metadata: { name: 'sleeper', attempt: 0 }, image: { image: 'docker.io/lightvm/sleeper:1' }, args: ['600000'], log_path: 'sleeper.log' },
      sandbox_config: sandboxConfig,
    })).container_id as string;
    await rpc.StartContainer!({ container_id: sl });
    type U64 = { value: number } | null;
    const { stats } = await rpc.ContainerStats!({ container_id: sl }) as {
      stats: { cpu: { usage_core_nano_seconds: U64 }; memory: { working_set_bytes: U64; available_bytes: U64; usage_bytes: U64; rss_bytes: U64 } };
    };
    const usage = stats.memory.usage_bytes?.value ?? 0;
    assert.ok(usage > 0 && usage <= 4 * 1048576 + 65536, `usage_bytes ${usage}`);
    assert.equal(stats.memory.rss_bytes?.value, usage);
    assert.equal(stats.memory.working_set_bytes?.value, usage, 'a VM has no page cache on the host to discount');
    assert.equal(stats.memory.available_bytes?.value, 4 * 1048576 - usage, 'the guest\'s 4 MiB less what it uses');
    assert.ok((stats.cpu.usage_core_nano_seconds?.value ?? 0) > 0, 'the guest has run');
    await rpc.StopContainer!({ container_id: sl, timeout: 1 });
    await rpc.RemoveContainer!({ container_id: sl });

    await rpc.StopPodSandbox!({ pod_sandbox_id: podId });
    await rpc.RemovePodSandbox!({ pod_sandbox_id: podId });
    assert.deepEqual((await ok<{ vms: VmView[] }>(daemon.socket, 'GET', '/v1/vms')).vms.filter((x) => x.state !== 'exited'), []);
    assert.equal(c.ctr('-n', 'k8s.io', 'task', 'ls', '-q').stdout, '', 'no task left');
  });
});
