/*
 * pvh.c: the PVH platform, used when QEMU boots the image through the PVH
 * note. Devices are QEMU's: the 16550 UART at 0x3f8 for the console,
 * isa-debug-exit at 0xf4 for halt (QEMU exits with (status << 1) | 1), the
 * CMOS RTC for walltime, and kvmclock (if offered) to learn the TSC rate.
 */
#include "pvh.h"

#define UART_BASE 0x3f8
#define UART_LSR (UART_BASE + 5)
#define UART_LSR_THRE 0x20
#define DEBUG_EXIT_PORT 0xf4
#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71

#define PVH_MAPPED_BYTES (1ull << 30) /* what pvh_entry.S maps */
#define PVH_DEFAULT_MEM (4ull << 20)  /* if QEMU gives no memory map */

#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)

uint8_t lvm_on_pvh;

extern char __image_end[];

static struct lvm_boot_info pvh_bi;
static char pvh_cmdline[LVM_CMDLINE_MAX];

struct pvclock_vcpu_time_info {
    uint32_t version;
    uint32_t pad0;
    uint64_t tsc_timestamp;
    uint64_t system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags;
    uint8_t pad[2];
} __attribute__((aligned(32)));

static struct pvclock_vcpu_time_info pvh_pvclock;

static inline void cpuid(uint32_t leaf, uint32_t r[4])
{
    __asm__ volatile("cpuid"
                     : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                     : "a"(leaf), "c"(0));
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

/* The TSC rate from kvmclock's scale factors, or 0 if there is no kvmclock. */
static uint64_t kvmclock_tsc_hz(void)
{
    uint32_t r[4];
    cpuid(0x40000000u, r);
    if (r[1] != 0x4b4d564bu || r[2] != 0x564b4d56u || r[3] != 0x4du || r[0] < 0x40000001u)
        return 0; /* not "KVMKVMKVM" */
    cpuid(0x40000001u, r);
    if (!(r[0] & KVM_FEATURE_CLOCKSOURCE2))
        return 0;
    volatile struct pvclock_vcpu_time_info *p = &pvh_pvclock;
    wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (uint64_t)(uintptr_t)&pvh_pvclock | 1);
    uint32_t mul;
    int shift;
    uint32_t v;
    do {
        v = p->version;
        __asm__ volatile("" ::: "memory");
        mul = p->tsc_to_system_mul;
        shift = p->tsc_shift;
        __asm__ volatile("" ::: "memory");
    } while ((v & 1) || v != p->version);
    wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0); /* stop the host writing to us */
    if (!mul)
        return 0;
    /* ns = ((tsc << shift) * mul) >> 32, so hz = 1e9 * 2^32 / (mul << shift). */
    uint64_t hz = (1000000000ull << 32) / mul;
    return shift >= 0 ? hz >> shift : hz << -shift;
}

struct lvm_boot_info *lvm_pvh_init(uint32_t start_info_gpa)
{
    const struct hvm_start_info *si = (const void *)(uintptr_t)start_info_gpa;
    struct lvm_boot_info *bi = &pvh_bi;

    lvm_on_pvh = 1;
    lvm_outb(UART_BASE + 1, 0x00); /* no interrupts */
    lvm_outb(UART_BASE + 3, 0x03); /* 8N1 */

    bi->magic = LVM_BOOT_MAGIC;
    bi->abi_version = LVM_ABI_VERSION;
    bi->platform = LVM_PLATFORM_PVH;
    bi->kernel_end = ((uint64_t)(uintptr_t)__image_end + 4095) & ~4095ull;
    bi->mem_size = PVH_DEFAULT_MEM;
    bi->cmdline = (uint64_t)(uintptr_t)pvh_cmdline;

    if (si && si->magic == HVM_START_MAGIC) {
        if (si->cmdline_paddr && si->cmdline_paddr < PVH_MAPPED_BYTES) {
            const char *c = (const char *)(uintptr_t)si->cmdline_paddr;
            size_t n = 0;
            while (n < LVM_CMDLINE_MAX - 1 && c[n]) {
                pvh_cmdline[n] = c[n];
                n++;
            }
            bi->cmdline_len = n;
        }
        if (si->version >= 1 && si->memmap_paddr && si->memmap_paddr < PVH_MAPPED_BYTES) {
            const struct hvm_memmap_table_entry *e = (const void *)(uintptr_t)si->memmap_paddr;
            /* RAM from 0 is the RAM entry holding the image; stop at what we map. */
            for (uint32_t i = 0; i < si->memmap_entries && i < 128; i++) {
                if (e[i].type == HVM_MEMMAP_TYPE_RAM && e[i].addr <= bi->kernel_end &&
                    e[i].addr + e[i].size > bi->kernel_end) {
                    uint64_t end = e[i].addr + e[i].size;
                    bi->mem_size = end < PVH_MAPPED_BYTES ? end : PVH_MAPPED_BYTES;
                }
            }
        }
    }
    bi->tsc_hz = kvmclock_tsc_hz();
    return bi;
}

void lvm_pvh_console_write(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        for (int spin = 0; spin < 100000 && !(lvm_inb(UART_LSR) & UART_LSR_THRE); spin++)
            ;
        lvm_outb(UART_BASE, (uint8_t)buf[i]);
    }
}

void lvm_pvh_halt(int status)
{
    lvm_outb(DEBUG_EXIT_PORT, (uint8_t)status);
    for (;;) /* no isa-debug-exit device: stop here */
        __asm__ volatile("cli; hlt");
}

static uint8_t cmos_read(uint8_t reg)
{
    lvm_outb(CMOS_INDEX, reg);
    return lvm_inb(CMOS_DATA);
}

static unsigned bcd(uint8_t v) { return (v & 0x0f) + (v >> 4) * 10; }

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static uint64_t rtc_walltime_ns(void)
{
    uint8_t t[7], again[7];
    static const uint8_t regs[7] = {0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32};
    int tries = 0;
    do { /* read until two reads agree and no update is in progress */
        for (int spin = 0; spin < 100000 && (cmos_read(0x0a) & 0x80); spin++)
            ;
        for (int i = 0; i < 7; i++)
            t[i] = cmos_read(regs[i]);
        for (int i = 0; i < 7; i++)
            again[i] = cmos_read(regs[i]);
    } while (memcmp(t, again, sizeof t) && ++tries < 5);

    uint8_t b = cmos_read(0x0b);
    int pm = t[2] & 0x80;
    t[2] &= 0x7f;
    unsigned v[7];
    for (int i = 0; i < 7; i++)
        v[i] = (b & 0x04) ? t[i] : bcd(t[i]);
    if (!(b & 0x02)) /* 12-hour clock */
        v[2] = (v[2] % 12) + (pm ? 12 : 0);
    unsigned century = (v[6] >= 19 && v[6] <= 99) ? v[6] : 20;
    if (v[4] < 1 || v[4] > 12 || v[3] < 1 || v[3] > 31)
        return 0;
    int64_t days = days_from_civil(century * 100 + v[5], v[4], v[3]);
    uint64_t secs = (uint64_t)days * 86400 + v[2] * 3600 + v[1] * 60 + v[0];
    return secs * 1000000000ull;
}

/*
 * The RTC counts whole seconds: read it once, then, if the TSC rate is
 * known, advance from there with the TSC, so that intervals are precise.
 */
uint64_t lvm_pvh_walltime_ns(void)
{
    static uint64_t base_ns, base_tsc;
    uint64_t hz = pvh_bi.tsc_hz;
    if (!hz)
        return rtc_walltime_ns();
    if (!base_ns) {
        base_ns = rtc_walltime_ns();
        base_tsc = lvm_rdtsc();
    }
    uint64_t t = lvm_rdtsc() - base_tsc;
    return base_ns + (t / hz) * 1000000000ull + (t % hz) * 1000000000ull / hz;
}

/* No interrupts and no devices to wait on here: spin on the TSC. */
uint64_t lvm_pvh_poll(uint64_t timeout_ns)
{
    uint64_t hz = pvh_bi.tsc_hz;
    if (!hz)
        return 0;
    uint64_t ticks = (timeout_ns / 1000000000ull) * hz + (timeout_ns % 1000000000ull) * hz / 1000000000ull;
    uint64_t start = lvm_rdtsc();
    while (lvm_rdtsc() - start < ticks)
        __asm__ volatile("pause");
    return 0;
}
