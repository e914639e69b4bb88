/* bzImage test guest: checks what the 64-bit boot protocol gave it (the
 * setup header, the command line, the e820 map, the initrd's place and an
 * FNV-1a sum of its bytes) and reports each on the console, then halts with
 * 0 if everything held, 1 if not. Uses only the console and halt hypercalls. */
#include <stdint.h>
#include <lightvm/abi.h>
#include <lightvm/boot_params.h>
#include <lightvm/lvm.h>

static void put(const char *s)
{
	struct lvm_hc_console_write a;
	uint64_t n = 0;
	while (s[n])
		n++;
	a.data = (uint64_t)(uintptr_t)s;
	a.len = n;
	lvm_hypercall(LVM_HC_CONSOLE_WRITE, &a);
}

static void put_hex(const char *what, uint64_t v)
{
	char buf[20];
	int i = 19;
	buf[i] = 0;
	do {
		buf[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v && i > 2);
	buf[--i] = 'x';
	buf[--i] = '0';
	put(what);
	put(&buf[i]);
	put("\n");
}

void probe_main(const struct lvm_boot_params *bp)
{
	int ok = bp->hdr.header == LVM_LINUX_HDR_MAGIC && bp->hdr.type_of_loader == LVM_LINUX_LOADER_UNDEFINED;
	put_hex("header ", bp->hdr.header);
	put("cmdline ");
	put((const char *)(uintptr_t)bp->hdr.cmd_line_ptr);
	put("\n");
	put_hex("e820 ", bp->e820_entries);
	for (unsigned i = 0; i < bp->e820_entries && i < LVM_LINUX_E820_MAX_ENTRIES; i++) {
		put_hex(" addr ", bp->e820_table[i].addr);
		put_hex(" len ", bp->e820_table[i].len);
		put_hex(" type ", bp->e820_table[i].type);
	}
	const uint8_t *rd = (const uint8_t *)(uintptr_t)bp->hdr.ramdisk_image;
	uint32_t sum = 2166136261u;
	for (uint32_t i = 0; i < bp->hdr.ramdisk_size; i++)
		sum = (sum ^ rd[i]) * 16777619u;
	put_hex("initrd ", bp->hdr.ramdisk_image);
	put_hex("initrd_size ", bp->hdr.ramdisk_size);
	put_hex("initrd_fnv ", sum);
	struct lvm_hc_halt h = { .status = ok ? 0 : 1 };
	lvm_hypercall(LVM_HC_HALT, &h);
	for (;;)
		__asm__ volatile("cli; hlt");
}
