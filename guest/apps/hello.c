/* hello: one console write, then halt with status 0. */
#include <lightvm/lvm.h>

int main(void)
{
    lvm_puts("Hello from LightVM!\n");
    return 0;
}
