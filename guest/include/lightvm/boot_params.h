/* Linux's x86 boot protocol as a guest entered through it sees it:
 * struct boot_params (the "zero page", its address in %rsi at the 64-bit
 * entry) and the setup header inside it, after Documentation/arch/x86/
 * boot.rst and zero-page.rst. Only what LightVM fills or reads is named;
 * the rest is padding. Mirrored in src/vmm/boot-params.ts;
 * test/boot-params-abi.test.ts checks that the two agree. */
#ifndef LIGHTVM_BOOT_PARAMS_H
#define LIGHTVM_BOOT_PARAMS_H

#include <stdint.h>

#define LVM_LINUX_SETUP_HEADER_LIMIT 0x290
#define LVM_LINUX_E820_MAX_ENTRIES 128
#define LVM_LINUX_E820_RAM 1
#define LVM_LINUX_E820_RESERVED 2
#define LVM_LINUX_HDR_MAGIC 0x53726448 /* "HdrS" */
#define LVM_LINUX_BOOT_FLAG 0xaa55
#define LVM_LINUX_LOADED_HIGH 0x01
#define LVM_LINUX_CAN_USE_HEAP 0x80
#define LVM_LINUX_XLF_KERNEL_64 0x01
#define LVM_LINUX_ENTRY_64_OFFSET 0x200
#define LVM_LINUX_MIN_PROTOCOL_VERSION 0x020c
#define LVM_LINUX_LOADER_UNDEFINED 0xff
#define LVM_LINUX_DEFAULT_SETUP_SECTS 4
#define LVM_LINUX_SECTOR 512

/* One e820 entry (Linux names len "size"). */
struct lvm_e820_entry {
	uint64_t addr;
	uint64_t len;
	uint32_t type;
} __attribute__((packed));

struct lvm_setup_header {
	uint8_t setup_sects;
	uint16_t root_flags;
	uint32_t syssize;
	uint16_t ram_size;
	uint16_t vid_mode;
	uint16_t root_dev;
	uint16_t boot_flag;
	uint16_t jump;
	uint32_t header;
	uint16_t version;
	uint32_t realmode_swtch;
	uint16_t start_sys_seg;
	uint16_t kernel_version;
	uint8_t type_of_loader;
	uint8_t loadflags;
	uint16_t setup_move_size;
	uint32_t code32_start;
	uint32_t ramdisk_image;
	uint32_t ramdisk_size;
	uint32_t bootsect_kludge;
	uint16_t heap_end_ptr;
	uint8_t ext_loader_ver;
	uint8_t ext_loader_type;
	uint32_t cmd_line_ptr;
	uint32_t initrd_addr_max;
	uint32_t kernel_alignment;
	uint8_t relocatable_kernel;
	uint8_t min_alignment;
	uint16_t xloadflags;
	uint32_t cmdline_size;
	uint32_t hardware_subarch;
	uint64_t hardware_subarch_data;
	uint32_t payload_offset;
	uint32_t payload_length;
	uint64_t setup_data;
	uint64_t pref_address;
	uint32_t init_size;
	uint32_t handover_offset;
	uint32_t kernel_info_offset;
} __attribute__((packed));

struct lvm_boot_params {
	uint8_t reserved0[0x0c0];
	uint32_t ext_ramdisk_image;
	uint32_t ext_ramdisk_size;
	uint32_t ext_cmd_line_ptr;
	uint8_t reserved1[0x1e8 - 0x0cc];
	uint8_t e820_entries;
	uint8_t reserved2[0x1ef - 0x1e9];
	uint8_t sentinel;
	uint8_t reserved3;
	struct lvm_setup_header hdr;
	uint8_t reserved4[0x2d0 - 0x1f1 - sizeof(struct lvm_setup_header)];
	struct lvm_e820_entry e820_table[LVM_LINUX_E820_MAX_ENTRIES];
	uint8_t reserved5[4096 - 0x2d0 - LVM_LINUX_E820_MAX_ENTRIES * sizeof(struct lvm_e820_entry)];
} __attribute__((packed));

#endif
