/* pvh.h: the PVH platform (QEMU), inside the library only. */
#ifndef LVM_PVH_H
#define LVM_PVH_H

#include <lightvm/lvm.h>

/* Our own definitions of Xen's public arch-x86/hvm/start_info.h. */
#define HVM_START_MAGIC 0x336ec578u
#define HVM_MEMMAP_TYPE_RAM 1

struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    /* version >= 1 */
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct hvm_memmap_table_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};

/* Called once from pvh_entry.S in long mode, before _start. */
struct lvm_boot_info *lvm_pvh_init(uint32_t start_info_gpa);
void lvm_pvh_console_write(const char *buf, size_t len);
__attribute__((noreturn)) void lvm_pvh_halt(int status);
uint64_t lvm_pvh_walltime_ns(void);
uint64_t lvm_pvh_poll(uint64_t timeout_ns);

#endif
