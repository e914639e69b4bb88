/*
 * lvm.c: boot information and the core calls. On LightVM each call is one
 * hypercall; the PVH platform costs one predictable branch on lvm_on_pvh.
 */
#include "pvh.h"

/* Set by _start (entry.S) before main. */
const struct lvm_boot_info *lvm_bi;

const struct lvm_boot_info *lvm_boot_info(void) { return lvm_bi; }

const char *lvm_cmdline(void)
{
    uint64_t c = lvm_bi->cmdline;
    return c ? (const char *)(uintptr_t)c : "";
}

const struct noxs_page *lvm_device_page(void)
{
    uint64_t g = lvm_bi->device_page;
    if (!g)
        return NULL;
    const struct noxs_page *p = (const struct noxs_page *)(uintptr_t)g;
    return p->header.magic == NOXS_MAGIC ? p : NULL;
}

void lvm_console_write(const char *buf, size_t len)
{
    if (__builtin_expect(lvm_on_pvh, 0)) {
        lvm_pvh_console_write(buf, len);
        return;
    }
    struct lvm_hc_console_write a;
    while (__builtin_expect(len > LVM_CONSOLE_WRITE_MAX, 0)) {
        a.data = (uint64_t)(uintptr_t)buf;
        a.len = LVM_CONSOLE_WRITE_MAX;
        lvm_hypercall(LVM_HC_CONSOLE_WRITE, &a);
        buf += LVM_CONSOLE_WRITE_MAX;
        len -= LVM_CONSOLE_WRITE_MAX;
    }
    a.data = (uint64_t)(uintptr_t)buf;
    a.len = len;
    lvm_hypercall(LVM_HC_CONSOLE_WRITE, &a);
}

void lvm_halt(int status)
{
    if (__builtin_expect(lvm_on_pvh, 0))
        lvm_pvh_halt(status);
    struct lvm_hc_halt a = {.status = status};
    lvm_hypercall(LVM_HC_HALT, &a);
    for (;;) /* the monitor never resumes a halted VM */
        __asm__ volatile("cli; hlt");
}

uint64_t lvm_walltime_ns(void)
{
    if (__builtin_expect(lvm_on_pvh, 0))
        return lvm_pvh_walltime_ns();
    struct lvm_hc_walltime a = {0};
    lvm_hypercall(LVM_HC_WALLTIME, &a);
    return a.nsecs;
}

uint64_t lvm_poll(uint64_t timeout_ns)
{
    if (__builtin_expect(lvm_on_pvh, 0))
        return lvm_pvh_poll(timeout_ns);
    struct lvm_hc_poll a = {.timeout_nsecs = timeout_ns, .ready_set = 0};
    lvm_hypercall(LVM_HC_POLL, &a);
    if (__builtin_expect(a.ready_set & LVM_POLL_CONTROL, 0)) {
        /* The host changed the device page's flags: a shutdown request
         * ends the guest cleanly, as if main had returned 0. */
        const struct noxs_page *p = lvm_device_page();
        if (p && (p->header.flags & NOXS_FLAG_SHUTDOWN))
            lvm_halt(0);
        a.ready_set &= ~LVM_POLL_CONTROL;
    }
    return a.ready_set;
}

uint64_t lvm_monotonic_ns(void)
{
    uint64_t hz = lvm_bi->tsc_hz;
    if (!hz)
        return lvm_walltime_ns();
    uint64_t t = lvm_rdtsc();
    /* Split so that (t % hz) * 1e9 fits in 64 bits for any hz below 18 GHz. */
    return (t / hz) * 1000000000ull + (t % hz) * 1000000000ull / hz;
}
