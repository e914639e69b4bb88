/* virtio.h (lib): what the libOS's virtio drivers (blk.c, vcon.c) share. */
#ifndef LVM_LIB_VIRTIO_H
#define LVM_LIB_VIRTIO_H

#include <lightvm/lvm.h>
#include <lightvm/virtio.h>

/*
 * Finds the first device-page entry of noxs_type, checks its window holds a
 * virtio-mmio v2 device of device_id and runs the handshake up to
 * FEATURES_OK, accepting VERSION_1 and the bits of *features the device
 * offers (*features becomes those). NULL if anything is missing.
 */
volatile uint32_t *lvm_virtio_open(unsigned noxs_type, uint32_t device_id, uint32_t *features);
/* Sets queue index up on the given areas (below 4 GiB); 0 or -1. */
int lvm_virtio_queue(volatile uint32_t *regs, unsigned index, void *desc, void *avail, void *used, unsigned size);
/* DRIVER_OK: the device is live. */
void lvm_virtio_ready(volatile uint32_t *regs);

static inline uint32_t lvm_virtio_rd(volatile uint32_t *r, unsigned off) { return r[off / 4]; }
static inline void lvm_virtio_wr(volatile uint32_t *r, unsigned off, uint32_t v) { r[off / 4] = v; }

#endif
