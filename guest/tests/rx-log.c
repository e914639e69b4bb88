/*
 * rx-log: puts every frame that reaches its network device back to back in
 * a log that only the host writes (NET_READ reads each frame into it), and
 * keeps a checksum (FNV-1a) of the log as it grows. A UDP datagram whose
 * payload starts with "check" makes it sum the log again and print
 * "rx ok <frames> <bytes>" if that matches, else "rx BAD <frames> <bytes>".
 * Waits in POLL between frames. Without a network device: exit 1.
 */
#include <lightvm/lvm.h>

#define LOG_BYTES (1024 * 1024)
#define FNV_START 2166136261u
static uint8_t rxlog[LOG_BYTES] __attribute__((aligned(4096)));

static uint32_t fnv(const uint8_t *p, size_t n, uint32_t h)
{
    while (n--)
        h = (h ^ *p++) * 16777619u;
    return h;
}

int main(void)
{
    const struct noxs_device *d = lvm_net_device();
    if (!d)
        return 1;
    size_t off = 0, len;
    uint64_t frames = 0;
    uint32_t sum = FNV_START;
    lvm_puts("listening\n");
    for (;;) {
        lvm_poll(1000000000ull);
        while (lvm_net_read(d->id, rxlog + off, LOG_BYTES - off, &len) == 0) {
            if (len >= 47 && memcmp(rxlog + off + 42, "check", 5) == 0) {
                const char *v = fnv(rxlog, off, FNV_START) == sum ? "ok" : "BAD";
                lvm_printf("rx %s %lu %lu\n", v, frames, (unsigned long)off);
                continue;
            }
            sum = fnv(rxlog + off, len, sum);
            off += len;
            frames++;
            if (LOG_BYTES - off < 2048) { /* full: start again */
                off = 0;
                sum = FNV_START;
            }
        }
    }
}
