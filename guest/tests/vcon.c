/* vcon: says hello on its virtio-console, then echoes every input line it
 * receives in capitals; "quit" ends it with status 0. */
#include <lightvm/lvm.h>
#include <lightvm/vcon.h>

int main(void)
{
    char buf[256];
    if (lvm_vcon_init() < 0) {
        lvm_puts("vcon: no console device\n");
        return 2;
    }
    lvm_vcon_write("vcon: hello over virtio-console\n", 32);
    for (;;) {
        long n = lvm_vcon_read(buf, sizeof buf);
        if (n < 0)
            return 3;
        if (n == 0) {
            lvm_poll(1000000000ull);
            continue;
        }
        if (n >= 4 && memcmp(buf, "quit", 4) == 0)
            return 0;
        for (long i = 0; i < n; i++)
            if (buf[i] >= 'a' && buf[i] <= 'z')
                buf[i] = (char)(buf[i] - 32);
        lvm_vcon_write(buf, (size_t)n);
    }
}
