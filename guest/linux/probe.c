/* bzImage test guest: checks what the 64-bit boot protocol gave it (the
 * setup header, the command line, the e820 map, the initrd's place and an
 * FNV-1a sum of its bytes) and reports each on the console, then halts with
 * 0 if everything held, 1 if not. Uses the console and halt hypercalls;
 * also reports CPUID leaf 1 and writes a line to COM1 as Linux's early
 * console does (polling the line status register); with "probe.hlt" on its
 * command line it ends in cli; hlt instead, which only a destroy ends. */
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

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

#define COM1 0x3f8

static void uart_puts(const char *s)
{
	for (; *s; s++) {
		for (int i = 0; i < 0xffff && !(inb(COM1 + 5) & 0x20); i++)
			;
		outb(COM1, (uint8_t)*s);
	}
}

/* Whether the command line has the word w (space separated). */
static int has_word(const char *line, const char *w)
{
	for (const char *s = line; *s; s++) {
		if (s != line && s[-1] != ' ')
			continue;
		const char *a = s, *b = w;
		while (*b && *a == *b)
			a++, b++;
		if (!*b && (*a == 0 || *a == ' '))
			return 1;
	}
	return 0;
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
	uint32_t a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	put_hex("cpuid1_ecx ", c);
	put_hex("cpuid1_edx ", d);
	/* 8 data bits, divisor 1, as Linux's early serial console sets it up. */
	outb(COM1 + 3, 0x83);
	outb(COM1, 1);
	outb(COM1 + 1, 0);
	outb(COM1 + 3, 0x03);
	uart_puts("uart: probe on COM1\n");
	if (has_word((const char *)(uintptr_t)bp->hdr.cmd_line_ptr, "probe.hlt")) {
		put("hlt\n");
		for (;;)
			__asm__ volatile("cli; hlt");
	}
	struct lvm_hc_halt h = { .status = ok ? 0 : 1 };
	lvm_hypercall(LVM_HC_HALT, &h);
	for (;;)
		__asm__ volatile("cli; hlt");
}
