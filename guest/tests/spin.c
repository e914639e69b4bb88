/* spin: announce, then run forever without a single exit. */
#include <lightvm/lvm.h>

int main(void)
{
    lvm_puts("spinning\n");
    for (;;)
        __asm__ volatile("" ::: "memory");
}
