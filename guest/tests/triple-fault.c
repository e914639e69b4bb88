/* triple-fault: read address 0. Page 0 is unmapped and there is no IDT,
 * so the #PF escalates to a triple fault (KVM_EXIT_SHUTDOWN). */
#include <lightvm/lvm.h>

int main(void)
{
    uint32_t v;
    __asm__ volatile("movl 0, %0" : "=r"(v) : : "memory");
    lvm_printf("triple-fault: survived (%u)\n", v);
    return 1;
}
