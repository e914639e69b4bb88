/* xenbus: a xenbus client through lib/xs.c, saying what it saw. Reads the
 * keys the host wrote under data/ (one of them 3000 bytes: the ring wraps),
 * writes data/answer and an echo of the long value, lists data/, is refused
 * data/secret and finds no data/missing, watches data/poke and waits for
 * the host to write it, then sets device/vif/0 up as a frontend with the
 * host's backend. */
#include <lightvm/lvm.h>
#include <lightvm/xs.h>

static char big[4000];
static char list[512];

static void seen(const char *who, int st) { lvm_printf("xs: %s state %d\n", who, st); }

static unsigned sum(const char *s, int n)
{
    unsigned h = 0;
    for (int i = 0; i < n; i++)
        h = h * 31 + (unsigned char)s[i];
    return h;
}

int main(void)
{
    char v[64], path[64], token[16];
    if (xs_init() < 0) {
        lvm_puts("xs: no xenstore device\n");
        return 2;
    }
    if (xs_read("data/greeting", v, sizeof v) < 0)
        return lvm_printf("xs: read data/greeting: %s\n", xs_error()), 3;
    lvm_printf("xs: data/greeting = %s\n", v);
    int n = xs_read("data/big", big, sizeof big);
    if (n < 0)
        return lvm_printf("xs: read data/big: %s\n", xs_error()), 3;
    lvm_printf("xs: data/big has %d bytes, sum %u\n", n, sum(big, n));
    if (xs_write("data/answer", "42") < 0 || xs_write("data/echo", big) < 0)
        return lvm_printf("xs: write: %s\n", xs_error()), 3;
    lvm_puts("xs: wrote data/answer and data/echo\n");
    n = xs_directory("data", list, sizeof list);
    if (n < 0)
        return lvm_printf("xs: directory data: %s\n", xs_error()), 3;
    lvm_printf("xs: data has %d:", n);
    for (const char *s = list; n-- > 0; s += strlen(s) + 1)
        lvm_printf(" %s", s);
    lvm_puts("\n");
    lvm_printf("xs: data/secret: %s\n", xs_read("data/secret", v, sizeof v) < 0 ? xs_error() : v);
    lvm_printf("xs: data/missing: %s\n", xs_read("data/missing", v, sizeof v) < 0 ? xs_error() : v);
    if (xs_watch("data/poke", "tok") < 0)
        return lvm_printf("xs: watch: %s\n", xs_error()), 3;
    if (xs_watch_wait(path, sizeof path, token, sizeof token) < 0)
        return lvm_printf("xs: first event: %s\n", xs_error()), 3;
    lvm_printf("xs: event %s %s\n", path, token);
    lvm_puts("xs: waiting for a poke\n");
    for (;;) {
        if (xs_watch_wait(path, sizeof path, token, sizeof token) < 0)
            return lvm_printf("xs: poke: %s\n", xs_error()), 3;
        if (xs_read("data/poke", v, sizeof v) >= 0)
            break; /* an event without the value yet would read ENOENT */
    }
    lvm_printf("xs: event %s %s, poked: %s\n", path, token, v);
    if (xs_front_connect("device/vif/0", 8, 3, seen) < 0)
        return lvm_printf("xs: frontend: %s\n", xs_error()), 3;
    lvm_puts("xs: connected\n");
    return 0;
}
