/* exit-status: exit with the number on the command line (default 3). */
#include <lightvm/lvm.h>

int main(void)
{
    long status = 3;
    if (lvm_parse_long(lvm_cmdline(), &status) < 0)
        status = 3;
    return (int)status;
}
