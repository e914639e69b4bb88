/*
 * blk.c: a tiny virtio-blk driver over virtio-mmio (virtio.h). One split
 * queue of 16 descriptors in the image's bss; each request is a chain of
 * three (header, data, status). The host serves a notify before the guest
 * resumes, so the used ring is up to date when the write returns; the queue
 * asks for no notifications back (VIRTQ_AVAIL_F_NO_INTERRUPT).
 */
#include <lightvm/blk.h>

#include "virtio.h"

#define QSIZE 16

static struct {
    struct virtq_desc desc[QSIZE];
    uint16_t avail[2 + QSIZE + 1] __attribute__((aligned(2)));
    uint8_t used[VIRTQ_USED_RING + sizeof(struct virtq_used_elem) * QSIZE + 2] __attribute__((aligned(4)));
} q __attribute__((aligned(4096)));

static struct virtio_blk_req_header hdr[LVM_BLK_BATCH_MAX];
static uint8_t status[LVM_BLK_BATCH_MAX];
static volatile uint32_t *regs;
static uint64_t sectors;
static int state; /* 0 not tried, 1 ready, -1 no disk */
static uint32_t features;
static uint16_t avail_idx;

static inline uint32_t rd(unsigned off) { return lvm_virtio_rd(regs, off); }
static inline void wr(unsigned off, uint32_t v) { lvm_virtio_wr(regs, off, v); }

static int setup(void)
{
    features = (1u << VIRTIO_BLK_F_RO) | (1u << VIRTIO_BLK_F_FLUSH) | (1u << VIRTIO_BLK_F_BLK_SIZE);
    regs = lvm_virtio_open(NOXS_DEV_BLOCK, VIRTIO_ID_BLOCK, &features);
    if (!regs)
        return -1;
    q.avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
    if (lvm_virtio_queue(regs, 0, q.desc, q.avail, q.used, QSIZE) < 0)
        return -1;
    lvm_virtio_ready(regs);
    sectors = rd(VIRTIO_MMIO_CONFIG) | (uint64_t)rd(VIRTIO_MMIO_CONFIG + 4) << 32;
    return 0;
}

int lvm_blk_init(void)
{
    if (!state)
        state = setup() == 0 ? 1 : -1;
    return state > 0 ? 0 : -1;
}

uint64_t lvm_blk_sectors(void) { return lvm_blk_init() == 0 ? sectors : 0; }
int lvm_blk_readonly(void) { return lvm_blk_init() == 0 && (features & (1u << VIRTIO_BLK_F_RO)); }

/* Puts request k (header, data, status) on the available ring; the notify comes later. */
static void add(unsigned k, uint32_t type, uint64_t sector, void *buf, size_t len)
{
    struct virtq_desc *d = &q.desc[3 * k];
    hdr[k].type = type;
    hdr[k].sector = sector;
    status[k] = 0xff;
    d[0] = (struct virtq_desc){(uint64_t)(uintptr_t)&hdr[k], sizeof hdr[k], VIRTQ_DESC_F_NEXT, (uint16_t)(3 * k + 1)};
    d[1] = (struct virtq_desc){(uint64_t)(uintptr_t)buf, (uint32_t)len,
                               (uint16_t)(VIRTQ_DESC_F_NEXT | (type == VIRTIO_BLK_T_OUT ? 0 : VIRTQ_DESC_F_WRITE)), (uint16_t)(3 * k + 2)};
    d[2] = (struct virtq_desc){(uint64_t)(uintptr_t)&status[k], 1, VIRTQ_DESC_F_WRITE, 0};
    if (!len) { /* flush: no data descriptor */
        d[0].next = (uint16_t)(3 * k + 2);
    }
    q.avail[2 + (avail_idx % QSIZE)] = (uint16_t)(3 * k);
    avail_idx++;
}

/* Publishes what add() queued, notifies, and checks every status. */
static int kick(unsigned n)
{
    __asm__ volatile("" ::: "memory");
    q.avail[1] = avail_idx;
    wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    __asm__ volatile("" ::: "memory");
    int rc = *(volatile uint16_t *)&q.used[VIRTQ_USED_IDX] == avail_idx ? 0 : -1;
    for (unsigned k = 0; k < n; k++)
        if (status[k] != VIRTIO_BLK_S_OK)
            rc = -1;
    return rc;
}

int lvm_blk_batch(int write, uint64_t sector, void *buf, size_t len, unsigned n)
{
    if (lvm_blk_init() < 0 || n == 0 || n > LVM_BLK_BATCH_MAX || len % VIRTIO_BLK_SECTOR_SIZE || !len)
        return -1;
    for (unsigned k = 0; k < n; k++)
        add(k, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, sector + k * (len / VIRTIO_BLK_SECTOR_SIZE), (char *)buf + k * len, len);
    return kick(n);
}

int lvm_blk_read(uint64_t sector, void *buf, size_t len) { return lvm_blk_batch(0, sector, buf, len, 1); }
int lvm_blk_write(uint64_t sector, const void *buf, size_t len) { return lvm_blk_batch(1, sector, (void *)buf, len, 1); }

int lvm_blk_flush(void)
{
    if (lvm_blk_init() < 0)
        return -1;
    add(0, VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
    return kick(1);
}

int lvm_blk_get_id(char *id)
{
    if (lvm_blk_init() < 0)
        return -1;
    add(0, VIRTIO_BLK_T_GET_ID, 0, id, VIRTIO_BLK_ID_BYTES);
    id[VIRTIO_BLK_ID_BYTES] = 0;
    return kick(1);
}
