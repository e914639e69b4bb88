/* exit-status: exit with the number on the command line (default 3), all
 * 64 bits of it under the LightVM monitor (lvm_halt takes an int). */
#include <lightvm/lvm.h>

int main(void)
{
    long status = 3;
    if (lvm_parse_long(lvm_cmdline(), &status) < 0)
        status = 3;
    if (!lvm_on_pvh) {
        struct lvm_hc_halt a = {.status = status};
        lvm_hypercall(LVM_HC_HALT, &a);
    }
    return (int)status;
}
