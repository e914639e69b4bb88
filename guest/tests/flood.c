/* flood: console writes of LVM_CONSOLE_WRITE_MAX bytes (64-byte lines of
 * 'x'), back to back, never waiting; with a number K on the command line,
 * K of them and then exit 0. The buffer is filled 8 bytes a store: every
 * guest instruction is emulated here. */
#include <lightvm/lvm.h>

static uint64_t buf[LVM_CONSOLE_WRITE_MAX / 8];

int main(void)
{
    long limit = -1;
    if (lvm_parse_long(lvm_cmdline(), &limit) < 0 || limit < 0)
        limit = -1;
    for (size_t i = 0; i < sizeof buf / 8; i++)
        buf[i] = i % 8 == 7 ? 0x0a78787878787878ull : 0x7878787878787878ull;
    for (long n = 0; limit < 0 || n < limit; n++)
        lvm_console_write((const char *)buf, sizeof buf);
    return 0;
}
