/* echo-cmdline: print the command line between brackets. */
#include <lightvm/lvm.h>

int main(void)
{
    lvm_printf("cmdline=[%s]\n", lvm_cmdline());
    return 0;
}
