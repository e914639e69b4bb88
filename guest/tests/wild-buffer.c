/* wild-buffer: a valid CONSOLE_WRITE struct whose data pointer lies outside RAM. */
#include <lightvm/lvm.h>

int main(void)
{
    struct lvm_hc_console_write a = {.data = 0x7fff0000u, .len = 16};
    lvm_hypercall(LVM_HC_CONSOLE_WRITE, &a);
    lvm_puts("wild-buffer: survived\n");
    return 1;
}
