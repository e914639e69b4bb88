/* stray-port: an OUT to port 0x80, which is not a hypercall port. */
#include <lightvm/lvm.h>

int main(void)
{
    lvm_outb(0x80, 0);
    lvm_puts("stray-port: survived\n");
    return 1;
}
