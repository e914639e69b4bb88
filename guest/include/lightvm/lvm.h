/*
 * lvm: the tiny library OS of LightVM guests. An app defines
 * `int main(void)`; the library enters it and halts with its return value.
 *
 * The same calls work on both platforms: under the LightVM monitor each is
 * a hypercall (abi.h); entered through the PVH note (QEMU), the console is
 * the 16550 UART at 0x3f8, halt is isa-debug-exit at 0xf4, walltime is the
 * CMOS RTC and poll only waits.
 */
#ifndef LIGHTVM_LVM_H
#define LIGHTVM_LVM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "abi.h"

int main(void);

/* Boot information (never NULL once main runs). */
const struct lvm_boot_info *lvm_boot_info(void);
/* The NUL-terminated command line ("" if none). */
const char *lvm_cmdline(void);
/* The noxs device page, or NULL if there is none (or its magic is wrong). */
const struct noxs_page *lvm_device_page(void);
/* Nonzero when entered through the PVH note (QEMU). */
extern uint8_t lvm_on_pvh;

/* Write len bytes to the console: one hypercall for the whole buffer. */
void lvm_console_write(const char *buf, size_t len);
/* Write a string; for a literal the length is computed at compile time. */
static inline __attribute__((always_inline)) void lvm_puts(const char *s)
{
    lvm_console_write(s, __builtin_strlen(s));
}
/* printf subset: %s %c %d %i %u %x %X %p %%, l/ll/z sizes, width, 0 and - flags. */
int lvm_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int lvm_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int lvm_snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Nanoseconds since the Unix epoch (0 if unknown). */
uint64_t lvm_walltime_ns(void);
/* Monotonic nanoseconds: rdtsc scaled by tsc_hz, or walltime if tsc_hz == 0. */
uint64_t lvm_monotonic_ns(void);
/* Wait up to timeout_ns or until a device is ready; returns the ready set. */
uint64_t lvm_poll(uint64_t timeout_ns);
/* Stop the VM with this exit status. */
__attribute__((noreturn)) void lvm_halt(int status);

/*
 * Network devices (lib/net.c). The guest uses the first NOXS_DEV_NET entry of
 * the device page; `dev` below is its id (its bit in lvm_poll's ready set).
 * Without a device page (PVH/QEMU) there is no device: lvm_net_device()
 * returns NULL and the calls return -1.
 */
const struct noxs_device *lvm_net_device(void);
/* Send one Ethernet frame (no FCS): one NET_WRITE. 0 sent, -1 dropped. */
int lvm_net_write(unsigned dev, const void *buf, size_t len);
/* Receive one frame into buf (cap bytes): one NET_READ. 0 and *len set,
 * or -1 if no frame waits (a frame longer than cap is dropped by the host). */
int lvm_net_read(unsigned dev, void *buf, size_t cap, size_t *len);

/*
 * The command line as blank-separated words, some of them key=value
 * (lib/cmdline.c). lvm_cmdline_get returns the value of the first word
 * "key=..." (not NUL-terminated: *len is its length), or NULL.
 * lvm_cmdline_has is nonzero if the bare word appears.
 */
const char *lvm_cmdline_get(const char *key, size_t *len);
int lvm_cmdline_has(const char *word);

/* Parse an optionally signed decimal number, surrounding blanks allowed.
 * Returns 0 and stores it in *out, or -1 if s is not such a number. */
int lvm_parse_long(const char *s, long *out);

/* Freestanding string helpers (gcc may emit calls to memcpy/memset). */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* Raw port I/O, for test guests and the PVH drivers. */
static inline void lvm_outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}
static inline void lvm_outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}
static inline uint8_t lvm_inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

/* One hypercall: a 32-bit OUT of the argument's GPA to BASE + nr. */
static inline void lvm_hypercall(unsigned nr, void *arg)
{
    lvm_outl((uint16_t)(LVM_HC_PIO_BASE + nr), (uint32_t)(uintptr_t)arg);
}

static inline uint64_t lvm_rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

#endif
