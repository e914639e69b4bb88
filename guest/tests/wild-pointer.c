/* wild-pointer: a CONSOLE_WRITE whose argument struct lies far outside RAM. */
#include <lightvm/lvm.h>

int main(void)
{
    lvm_outl(LVM_HC_PIO_BASE + LVM_HC_CONSOLE_WRITE, 0x7fff0000u);
    lvm_puts("wild-pointer: survived\n");
    return 1;
}
