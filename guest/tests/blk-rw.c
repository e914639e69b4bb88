/* blk-rw: drives its disk through lib/blk.c and says what it saw. Reads
 * sector 1 (the host put a line there), writes "written by the guest" to
 * sector 2 and flushes, reads it back, then tries a read past the end and,
 * on a read-only disk, a write: both must fail, the VM living on. With
 * "pause", it waits 0.4 s after the first read (to be saved there). */
#include <lightvm/blk.h>
#include <lightvm/lvm.h>

static char buf[1024] __attribute__((aligned(512)));

int main(void)
{
    char id[VIRTIO_BLK_ID_BYTES + 1];
    if (lvm_blk_init() < 0) {
        lvm_puts("blk: no disk\n");
        return 2;
    }
    uint64_t n = lvm_blk_sectors();
    lvm_printf("blk: %lu sectors%s\n", (unsigned long)n, lvm_blk_readonly() ? " read-only" : "");
    if (lvm_blk_get_id(id) == 0)
        lvm_printf("blk: id %s\n", id);
    if (lvm_blk_read(1, buf, 512) < 0)
        lvm_puts("blk: read failed\n");
    buf[511] = 0;
    lvm_printf("blk: sector 1: %s\n", buf);
    if (lvm_cmdline_has("pause")) {
        /* Saved and restored here: the disk must work on without a new set-up. */
        lvm_puts("blk: waiting\n");
        lvm_poll(400000000ull);
    }
    memset(buf, 0, 512);
    memcpy(buf, "written by the guest", 20);
    lvm_printf("blk: write %s\n", lvm_blk_write(2, buf, 512) == 0 ? "ok" : "failed");
    lvm_printf("blk: flush %s\n", lvm_blk_flush() == 0 ? "ok" : "failed");
    memset(buf, 0, 512);
    lvm_blk_read(2, buf, 512);
    lvm_printf("blk: sector 2: %s\n", buf);
    lvm_printf("blk: past the end %s\n", lvm_blk_read(n - 1, buf, 1024) == 0 ? "read" : "refused");
    lvm_printf("blk: last sector %s\n", lvm_blk_read(n - 1, buf, 512) == 0 ? "read" : "refused");
    return 0;
}
