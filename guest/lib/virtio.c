/*
 * virtio.c: the virtio-mmio handshake the libOS's drivers share (virtio
 * 1.x, 3.1.1): reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues,
 * DRIVER_OK. Each register access is an exit, so it does no more of them
 * than it must: the high address halves stay 0 from the reset.
 */
#include "virtio.h"

#define ST_BASE (VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK)

volatile uint32_t *lvm_virtio_open(unsigned noxs_type, uint32_t device_id, uint32_t *features)
{
    const struct noxs_page *p = lvm_device_page();
    if (!p)
        return NULL;
    const struct noxs_device *d = NULL;
    for (unsigned i = 0; i < p->header.device_count && i < NOXS_MAX_DEVICES && !d; i++)
        if (p->devices[i].type == noxs_type)
            d = &p->devices[i];
    if (!d || !d->backend)
        return NULL;
    volatile uint32_t *r = (volatile uint32_t *)(uintptr_t)d->backend;
    if (lvm_virtio_rd(r, VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC || lvm_virtio_rd(r, VIRTIO_MMIO_VERSION) != VIRTIO_MMIO_VERSION_2 ||
        lvm_virtio_rd(r, VIRTIO_MMIO_DEVICE_ID) != device_id)
        return NULL;
    lvm_virtio_wr(r, VIRTIO_MMIO_STATUS, 0);
    lvm_virtio_wr(r, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    lvm_virtio_wr(r, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    if (!(lvm_virtio_rd(r, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << (VIRTIO_F_VERSION_1 - 32))))
        return NULL;
    if (*features) {
        lvm_virtio_wr(r, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        *features &= lvm_virtio_rd(r, VIRTIO_MMIO_DEVICE_FEATURES);
    }
    lvm_virtio_wr(r, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    lvm_virtio_wr(r, VIRTIO_MMIO_DRIVER_FEATURES, 1u << (VIRTIO_F_VERSION_1 - 32));
    if (*features) {
        lvm_virtio_wr(r, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        lvm_virtio_wr(r, VIRTIO_MMIO_DRIVER_FEATURES, *features);
    }
    lvm_virtio_wr(r, VIRTIO_MMIO_STATUS, ST_BASE);
    if (!(lvm_virtio_rd(r, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK))
        return NULL;
    return r;
}

int lvm_virtio_queue(volatile uint32_t *r, unsigned index, void *desc, void *avail, void *used, unsigned size)
{
    lvm_virtio_wr(r, VIRTIO_MMIO_QUEUE_SEL, index);
    if (lvm_virtio_rd(r, VIRTIO_MMIO_QUEUE_NUM_MAX) < size)
        return -1;
    lvm_virtio_wr(r, VIRTIO_MMIO_QUEUE_NUM, size);
    lvm_virtio_wr(r, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)(uintptr_t)desc);
    lvm_virtio_wr(r, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)(uintptr_t)avail);
    lvm_virtio_wr(r, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)(uintptr_t)used);
    lvm_virtio_wr(r, VIRTIO_MMIO_QUEUE_READY, 1);
    return 0;
}

void lvm_virtio_ready(volatile uint32_t *r) { lvm_virtio_wr(r, VIRTIO_MMIO_STATUS, ST_BASE | VIRTIO_STATUS_DRIVER_OK); }
