/* blkbench: the guest side of `lightvm bench disk`. With n=N on the command
 * line: N single 4 KiB requests (a read, then a write of it back, at
 * scattered 4 KiB offsets), then N more in batches of LVM_BLK_BATCH_MAX
 * (one notify each). The host measures its cost per request. */
#include <lightvm/blk.h>
#include <lightvm/lvm.h>

#define BS 4096
static uint8_t buf[LVM_BLK_BATCH_MAX * BS] __attribute__((aligned(4096)));

int main(void)
{
    size_t len;
    long n = 1000;
    const char *v = lvm_cmdline_get("n", &len);
    if (v) {
        char tmp[16] = {0};
        memcpy(tmp, v, len < 15 ? len : 15);
        if (lvm_parse_long(tmp, &n) < 0 || n < 1)
            n = 1000;
    }
    uint64_t blocks = lvm_blk_sectors() / (BS / VIRTIO_BLK_SECTOR_SIZE);
    if (blocks < 2 * LVM_BLK_BATCH_MAX) {
        lvm_puts("blkbench: no disk, or one too small\n");
        return 1;
    }
    uint64_t b = 0;
    for (long i = 0; i < n; i += 2) {
        b = (b + 7919) % blocks;
        if (lvm_blk_read(b * (BS / 512), buf, BS) < 0 || lvm_blk_write(b * (BS / 512), buf, BS) < 0) {
            lvm_puts("blkbench: a single request failed\n");
            return 1;
        }
    }
    for (long i = 0; i < n; i += LVM_BLK_BATCH_MAX) {
        b = (b + 7919) % (blocks - LVM_BLK_BATCH_MAX);
        if (lvm_blk_batch((int)(i / LVM_BLK_BATCH_MAX) & 1, b * (BS / 512), buf, BS, LVM_BLK_BATCH_MAX) < 0) {
            lvm_puts("blkbench: a batch failed\n");
            return 1;
        }
    }
    lvm_puts("blkbench: done\n");
    return 0;
}
