/* huge-length: CONSOLE_WRITE whose length wraps the address space. */
#include <lightvm/lvm.h>

static const char msg[] = "huge\n";

int main(void)
{
    struct lvm_hc_console_write a = {.data = (uint64_t)(uintptr_t)msg,
                                     .len = 0xffffffffffff0000ull};
    lvm_hypercall(LVM_HC_CONSOLE_WRITE, &a);
    lvm_puts("huge-length: survived\n");
    return 1;
}
