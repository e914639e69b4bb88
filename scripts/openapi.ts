// Regenerates docs/openapi.json from a real daemon: `npm run openapi`.
import { writeFileSync } from 'node:fs';
import { startDaemon } from '../src/bench/daemon-peer.js';

const daemon = await startDaemon(['--pool', '4:0']);
try {
  const doc = await daemon.client.request<unknown>('GET', '/v1/openapi.json');
  writeFileSync(new URL('../docs/openapi.json', import.meta.url), `${JSON.stringify(doc, null, 2)}\n`);
  process.stdout.write('wrote docs/openapi.json\n');
} finally {
  await daemon.stop();
}
