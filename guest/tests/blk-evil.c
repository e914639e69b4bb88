/* blk-evil: a driver that breaks the virtio rules its command line names
 * (outside, buffer, loop, next, avail, early); the host must end only this
 * VM, saying why. It prints "survived" if the host let it go on. */
#include <lightvm/lvm.h>
#include <lightvm/virtio.h>

#define QSIZE 8
static struct {
    struct virtq_desc desc[QSIZE];
    uint16_t avail[2 + QSIZE + 1];
    uint8_t used[VIRTQ_USED_RING + sizeof(struct virtq_used_elem) * QSIZE + 2] __attribute__((aligned(4)));
} q __attribute__((aligned(4096)));
static struct virtio_blk_req_header hdr;
static uint8_t data[512], st;
static volatile uint32_t *regs;

static void wr(unsigned off, uint32_t v) { regs[off / 4] = v; }

int main(void)
{
    const struct noxs_page *p = lvm_device_page();
    for (unsigned i = 0; p && i < p->header.device_count; i++)
        if (p->devices[i].type == NOXS_DEV_BLOCK)
            regs = (volatile uint32_t *)(uintptr_t)p->devices[i].backend;
    if (!regs)
        return 2;
    int early = lvm_cmdline_has("early");
    wr(VIRTIO_MMIO_STATUS, 0);
    wr(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(VIRTIO_MMIO_DRIVER_FEATURES, 1);
    wr(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
    wr(VIRTIO_MMIO_QUEUE_NUM, QSIZE);
    wr(VIRTIO_MMIO_QUEUE_DESC_LOW, lvm_cmdline_has("outside") ? 0x7fff0000u : (uint32_t)(uintptr_t)q.desc);
    wr(VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)(uintptr_t)q.avail);
    wr(VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)(uintptr_t)q.used);
    wr(VIRTIO_MMIO_QUEUE_READY, 1);
    if (!early)
        wr(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
    q.desc[0] = (struct virtq_desc){(uint64_t)(uintptr_t)&hdr, sizeof hdr, VIRTQ_DESC_F_NEXT, 1};
    q.desc[1] = (struct virtq_desc){(uint64_t)(uintptr_t)data, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2};
    q.desc[2] = (struct virtq_desc){(uint64_t)(uintptr_t)&st, 1, VIRTQ_DESC_F_WRITE, 0};
    if (lvm_cmdline_has("buffer"))
        q.desc[1].addr = 0x7fff0000u;
    if (lvm_cmdline_has("loop")) { /* 0 -> 1 -> 2 -> 1 -> 2 ... */
        q.desc[2].flags |= VIRTQ_DESC_F_NEXT;
        q.desc[2].next = 1;
    }
    if (lvm_cmdline_has("next"))
        q.desc[1].next = 200;
    q.avail[2] = 0;
    q.avail[1] = lvm_cmdline_has("avail") ? 100 : 1;
    wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    lvm_printf("blk-evil: survived, status %u\n", st);
    return 1;
}
