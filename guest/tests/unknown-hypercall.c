/* unknown-hypercall: an OUT to LVM_HC_PIO_BASE + 20, past the last hypercall. */
#include <lightvm/lvm.h>

int main(void)
{
    struct lvm_hc_walltime a = {0};
    lvm_hypercall(20, &a);
    lvm_puts("unknown-hypercall: survived\n");
    return 1;
}
