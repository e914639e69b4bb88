/* vcon-flood: floods its virtio-console: each round puts QSIZE chains of
 * 64 KiB (lines of 'x') on the transmit queue and notifies once, never
 * waiting in POLL; with a number K on the command line, K rounds and then
 * exit 0. The host must hold it to its console's rate, as it holds
 * CONSOLE_WRITE: the notify returns once every chain is used. */
#include <lightvm/lvm.h>
#include <lightvm/virtio.h>

#include "../lib/virtio.h"

#define QSIZE 8
#define CHAIN 65536

static struct {
    struct virtq_desc desc[QSIZE];
    uint16_t avail[2 + QSIZE + 1];
    uint8_t used[VIRTQ_USED_RING + sizeof(struct virtq_used_elem) * QSIZE + 2] __attribute__((aligned(4)));
} tx __attribute__((aligned(4096)));
static uint64_t buf[CHAIN / 8];

int main(void)
{
    long limit = -1;
    if (lvm_parse_long(lvm_cmdline(), &limit) < 0 || limit < 0)
        limit = -1;
    uint32_t features = 0;
    volatile uint32_t *regs = lvm_virtio_open(NOXS_DEV_CONSOLE, VIRTIO_ID_CONSOLE, &features);
    if (!regs) {
        lvm_puts("vcon-flood: no console device\n");
        return 2;
    }
    tx.avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
    if (lvm_virtio_queue(regs, VIRTIO_CONSOLE_TX, tx.desc, tx.avail, tx.used, QSIZE) < 0)
        return 3;
    lvm_virtio_ready(regs);
    for (size_t i = 0; i < CHAIN / 8; i++)
        buf[i] = i % 8 == 7 ? 0x0a78787878787878ull : 0x7878787878787878ull;
    for (unsigned k = 0; k < QSIZE; k++)
        tx.desc[k] = (struct virtq_desc){(uint64_t)(uintptr_t)buf, CHAIN, 0, 0};
    uint16_t idx = 0;
    for (long n = 0; limit < 0 || n < limit; n++) {
        for (unsigned k = 0; k < QSIZE; k++)
            tx.avail[2 + idx++ % QSIZE] = (uint16_t)k;
        __asm__ volatile("" ::: "memory");
        tx.avail[1] = idx;
        lvm_virtio_wr(regs, VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_CONSOLE_TX);
        if (*(volatile uint16_t *)&tx.used[VIRTQ_USED_IDX] != idx) {
            lvm_puts("vcon-flood: the notify returned before every chain was used\n");
            return 4;
        }
    }
    return 0;
}
