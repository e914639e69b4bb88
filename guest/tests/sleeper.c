/* sleeper: POLL once for M ms (command line, default 100), measure the
 * sleep with WALLTIME and print "slept X ms" with X the measured time. */
#include <lightvm/lvm.h>

int main(void)
{
    long ms = 100;
    if (lvm_parse_long(lvm_cmdline(), &ms) < 0 || ms < 0)
        ms = 100;
    uint64_t t0 = lvm_walltime_ns();
    lvm_poll((uint64_t)ms * 1000000ull);
    uint64_t t1 = lvm_walltime_ns();
    lvm_printf("slept %lu ms\n", (uint64_t)((t1 - t0) / 1000000u));
    return 0;
}
