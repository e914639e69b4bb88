/**
 * V8 flags the daemon runs with: the bins' shebang lines (lightvmd, lightvm)
 * carry them, and the benchmarks' daemon is started with them. Node cannot
 * take them once running. Young-generation semi-spaces of 1 MiB instead of
 * V8's 16: the daemon makes short-lived garbage with every request, and the
 * default let its young generation grow to tens of MiB that stayed resident
 * (measured at 3,000 VMs: 12.5 -> 4.8 KiB of daemon memory per VM, the same
 * rate of creation).
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1'];
