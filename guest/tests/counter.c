/* counter: "count N" every 10 ms, forever; with a number K on the command
 * line, stop after K lines and exit 0. */
#include <lightvm/lvm.h>

int main(void)
{
    long limit = -1;
    if (lvm_parse_long(lvm_cmdline(), &limit) < 0 || limit < 0)
        limit = -1;
    for (uint64_t n = 0; limit < 0 || n < (uint64_t)limit; n++) {
        lvm_printf("count %lu\n", n);
        lvm_poll(10000000ull);
    }
    return 0;
}
