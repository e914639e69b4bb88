/*
 * vcon.c: a tiny virtio-console driver (one port). Queue 0 (receive) keeps
 * RXN buffers posted; queue 1 (transmit) sends one buffer per write, served
 * by the host at the notify.
 */
#include <lightvm/vcon.h>

#include "virtio.h"

#define QSIZE 8
#define RXN 4
#define RXBUF 256
#define TXMAX 4096

struct ring {
    struct virtq_desc desc[QSIZE];
    uint16_t avail[2 + QSIZE + 1];
    uint8_t used[VIRTQ_USED_RING + sizeof(struct virtq_used_elem) * QSIZE + 2] __attribute__((aligned(4)));
} __attribute__((aligned(16)));

static struct ring rx, tx;
static uint8_t rxbuf[RXN][RXBUF], txbuf[TXMAX];
static volatile uint32_t *regs;
static int state, id = -1;
static uint16_t rx_avail, rx_seen, tx_avail;

static void post(unsigned k)
{
    rx.desc[k] = (struct virtq_desc){(uint64_t)(uintptr_t)rxbuf[k], RXBUF, VIRTQ_DESC_F_WRITE, 0};
    rx.avail[2 + rx_avail % QSIZE] = (uint16_t)k;
    rx_avail++;
}

static int setup(void)
{
    uint32_t features = 0;
    regs = lvm_virtio_open(NOXS_DEV_CONSOLE, VIRTIO_ID_CONSOLE, &features);
    if (!regs)
        return -1;
    tx.avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
    if (lvm_virtio_queue(regs, VIRTIO_CONSOLE_RX, rx.desc, rx.avail, rx.used, QSIZE) < 0 ||
        lvm_virtio_queue(regs, VIRTIO_CONSOLE_TX, tx.desc, tx.avail, tx.used, QSIZE) < 0)
        return -1;
    lvm_virtio_ready(regs);
    for (unsigned k = 0; k < RXN; k++)
        post(k);
    rx.avail[1] = rx_avail;
    lvm_virtio_wr(regs, VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_CONSOLE_RX);
    const struct noxs_page *p = lvm_device_page();
    for (unsigned i = 0; i < p->header.device_count; i++)
        if (p->devices[i].type == NOXS_DEV_CONSOLE) {
            id = (int)p->devices[i].id;
            break;
        }
    return 0;
}

int lvm_vcon_init(void)
{
    if (!state)
        state = setup() == 0 ? 1 : -1;
    return state > 0 ? 0 : -1;
}

int lvm_vcon_id(void) { return lvm_vcon_init() == 0 ? id : -1; }

int lvm_vcon_write(const void *buf, size_t len)
{
    if (lvm_vcon_init() < 0 || len > TXMAX)
        return -1;
    memcpy(txbuf, buf, len);
    tx.desc[0] = (struct virtq_desc){(uint64_t)(uintptr_t)txbuf, (uint32_t)len, 0, 0};
    tx.avail[2 + tx_avail % QSIZE] = 0;
    tx_avail++;
    __asm__ volatile("" ::: "memory");
    tx.avail[1] = tx_avail;
    lvm_virtio_wr(regs, VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_CONSOLE_TX);
    return *(volatile uint16_t *)&tx.used[VIRTQ_USED_IDX] == tx_avail ? 0 : -1;
}

long lvm_vcon_read(void *buf, size_t cap)
{
    if (lvm_vcon_init() < 0)
        return -1;
    uint16_t used = *(volatile uint16_t *)&rx.used[VIRTQ_USED_IDX];
    if (used == rx_seen)
        return 0;
    /* Seen: the device's ready bit goes down (one exit, only when input came). */
    lvm_virtio_wr(regs, VIRTIO_MMIO_INTERRUPT_ACK, 1);
    const struct virtq_used_elem *e = (const struct virtq_used_elem *)&rx.used[VIRTQ_USED_RING] + rx_seen % QSIZE;
    size_t n = e->len < cap ? e->len : cap; /* the rest of a buffer larger than cap is dropped */
    memcpy(buf, rxbuf[e->id], n);
    rx_seen++;
    post(e->id);
    __asm__ volatile("" ::: "memory");
    rx.avail[1] = rx_avail;
    lvm_virtio_wr(regs, VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_CONSOLE_RX);
    return (long)n;
}
