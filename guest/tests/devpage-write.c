/* devpage-write: a write into the read-only noxs device page. The monitor
 * must stop the VM before "survived". */
#include <lightvm/lvm.h>

int main(void)
{
    lvm_puts("writing\n");
    volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)(lvm_boot_info()->device_page + 16);
    *p = 0x5a;
    lvm_puts("survived\n");
    return 0;
}
