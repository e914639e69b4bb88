/*
 * blk: the virtio-blk driver of the libOS (lib/blk.c). The disk is the first
 * NOXS_DEV_BLOCK entry of the device page; its virtio-mmio window is at the
 * entry's `backend` (virtio.h). Requests are served by the host at the
 * queue notify, so each call returns with its result: no interrupts, no
 * waiting. Lengths are whole 512-byte sectors; the calls return 0, or -1
 * (no disk, a request past its end, a write to a read-only disk, a host
 * I/O error).
 */
#ifndef LIGHTVM_BLK_H
#define LIGHTVM_BLK_H

#include <stddef.h>
#include <stdint.h>

#include "virtio.h"

/* Largest number of requests one lvm_blk_batch submits with one notify. */
#define LVM_BLK_BATCH_MAX 5

/* Sets the disk up (done by the first call that needs it): 0, or -1 if there is none. */
int lvm_blk_init(void);
/* Its size in 512-byte sectors (0 without a disk). */
uint64_t lvm_blk_sectors(void);
/* Nonzero if the host offers the disk read-only. */
int lvm_blk_readonly(void);
int lvm_blk_read(uint64_t sector, void *buf, size_t len);
int lvm_blk_write(uint64_t sector, const void *buf, size_t len);
/* Makes the writes so far durable on the host (fsync of the disk file). */
int lvm_blk_flush(void);
/* The disk's id (up to VIRTIO_BLK_ID_BYTES bytes, NUL-padded) into id[VIRTIO_BLK_ID_BYTES + 1]. */
int lvm_blk_get_id(char *id);
/* n (<= LVM_BLK_BATCH_MAX) requests of len bytes each, sectors from `sector` on, buffers from buf on,
 * with one notify: reads (write = 0) or writes. 0 if all succeeded. */
int lvm_blk_batch(int write, uint64_t sector, void *buf, size_t len, unsigned n);

#endif
