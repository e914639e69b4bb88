/* oversize: CONSOLE_WRITE of LVM_CONSOLE_WRITE_MAX + 1 bytes from a valid
 * pointer (the image itself, at 1 MiB, with RAM above it). */
#include <lightvm/lvm.h>

int main(void)
{
    struct lvm_hc_console_write a = {.data = 0x100000u, .len = LVM_CONSOLE_WRITE_MAX + 1};
    lvm_hypercall(LVM_HC_CONSOLE_WRITE, &a);
    lvm_puts("oversize: survived\n");
    return 1;
}
