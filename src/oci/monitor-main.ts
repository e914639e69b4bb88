// Entry of a container's monitor process: monitor-main.js <root> <id>.
import { runMonitor } from './monitor.js';

const [root, id] = process.argv.slice(2);
if (!root || !id) {
  process.stderr.write('usage: monitor-main.js <root> <container-id> (started by lightvm-oci create)\n');
  process.exitCode = 1;
} else {
  process.exitCode = await runMonitor(root, id);
}
