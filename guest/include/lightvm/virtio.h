/*
 * virtio-mmio as LightVM offers it: virtio 1.x, MMIO transport version 2,
 * split virtqueues. Defined once here for the guest and once in
 * src/vmm/virtio/abi.ts for the host; test/virtio-abi.test.ts compiles a
 * program against this header and checks every value against that file.
 *
 * A virtio device's window is LVM_VIRTIO_MMIO_SIZE bytes of MMIO at the
 * address its device-page entry gives in `backend` (no bus probing); the
 * windows follow the device page, from LVM_VIRTIO_MMIO_BASE. Every register
 * access is an exit to the host. A queue-notify write is served before the
 * guest resumes: the used ring is up to date when the write returns.
 */
#ifndef LIGHTVM_VIRTIO_H
#define LIGHTVM_VIRTIO_H

#include <stdint.h>

#define LVM_VIRTIO_MMIO_BASE 0xc0001000u
#define LVM_VIRTIO_MMIO_SIZE 0x1000u
/* Largest queue a LightVM device offers (QueueNumMax). */
#define LVM_VIRTIO_QUEUE_MAX 256

/* MMIO registers: offsets in the window, all 32 bits wide. */
#define VIRTIO_MMIO_MAGIC_VALUE 0x000 /* "virt" */
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW 0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976u
#define VIRTIO_MMIO_VERSION_2 2
#define VIRTIO_VENDOR_LIGHTVM 0x4d564c /* "LVM" */

#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3

/* Device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

/* Feature bits (bit numbers). */
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9

/* Split virtqueue. */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

/* struct virtq_avail { u16 flags; u16 idx; u16 ring[size]; u16 used_event; } */
#define VIRTQ_AVAIL_FLAGS 0
#define VIRTQ_AVAIL_IDX 2
#define VIRTQ_AVAIL_RING 4
/* avail.flags: the driver wants no notification (no used-buffer bit, no POLL ready bit) for this queue. */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

/* struct virtq_used { u16 flags; u16 idx; struct virtq_used_elem ring[size]; u16 avail_event; } */
#define VIRTQ_USED_FLAGS 0
#define VIRTQ_USED_IDX 2
#define VIRTQ_USED_RING 4

struct virtq_used_elem {
    uint32_t id;
    uint32_t len; /* bytes the device wrote into the chain */
};

/* virtio-blk: one request is a chain of header, data, status byte. */
#define VIRTIO_BLK_SECTOR_SIZE 512
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20

struct virtio_blk_req_header {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

/* virtio-blk config space (at VIRTIO_MMIO_CONFIG), the fields we offer. */
struct virtio_blk_config {
    uint64_t capacity; /* in 512-byte sectors */
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    uint32_t blk_size;
};

/* virtio-console queues (one port, no multiport). */
#define VIRTIO_CONSOLE_RX 0
#define VIRTIO_CONSOLE_TX 1

#endif
