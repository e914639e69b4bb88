/*
 * hello.c: a first unikernel of your own. It greets whoever the command
 * line names (name=...), says how much memory it was given, and exits 0.
 *
 *   npx lightvm build examples/hello.c -o hello.elf
 *   npx lightvm run ./hello.elf --cmdline "name=Ada"
 */
#include <lightvm/lvm.h>

int main(void)
{
    size_t len;
    const char *name = lvm_cmdline_get("name", &len);
    if (!name) {
        name = "world";
        len = 5;
    }
    lvm_printf("Hello, %.*s, from a unikernel of my own!\n", (int)len, name);
    lvm_printf("I have %lu KiB of RAM and the command line [%s]\n",
               (unsigned long)(lvm_boot_info()->mem_size >> 10), lvm_cmdline());
    return 0;
}
