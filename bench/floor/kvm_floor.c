/*
 * kvm_floor: the physical floor of VM creation on this machine, in C.
 * Each iteration creates a VM with 4 KiB of memory and one vCPU on an
 * already open /dev/kvm, runs three real-mode instructions ending in HLT
 * and tears everything down. Prints the per-iteration times in
 * milliseconds as JSON: {"samples_ms":[...]}.
 *
 * With --hold N it keeps N such VMs (each has run once) and prints the
 * host memory they hold, per VM, from MemAvailable before and after, and
 * what of it the kernel's own lines (Slab, KernelStack, PageTables,
 * VmallocUsed) show: {"vms":N,"mem_per_vm_kib":...,"kernel_per_vm_kib":...}.
 * That is the kernel's floor for a VM; the second figure does not move
 * with page cache the host reclaims meanwhile.
 *
 * With --long (first) the guest enters in 64-bit mode with identity page
 * tables, as LightVM's guests do (shadow paging then keeps more per vCPU).
 *
 * usage: kvm_floor [--long] [iterations (default 100)] | kvm_floor [--long] --hold N
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define GUEST_MEM 4096
/* --long: 16 KiB, identity page tables at 0x1000-0x3fff, HLT at 0. */
#define LONG_MEM 16384

static int long_mode; /* enter in 64-bit mode with paging, as LightVM's guests do */

static void die(const char *what)
{
    fprintf(stderr, "kvm_floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* xor %ax,%ax; inc %ax; hlt (16-bit real mode, at GPA 0). */
static const uint8_t code[] = {0x31, 0xc0, 0x40, 0xf4};

/*
 * Moves a new VM or vCPU fd above 1023, as LightVM does (src/kvm/fds.ts):
 * the next VM then gets the number the last one had, KVM finds that VM's
 * debugfs directory name taken and makes none (~70 files, ~65 KiB of
 * kernel memory, ~0.1 ms). It tells only while the last VM lives (--hold).
 */
static int park_fd(int fd)
{
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 1024);
    if (moved < 0)
        return fd;
    close(fd);
    return moved;
}

/* The fds and mappings of a VM, kept by --hold. */
struct held {
    int vm, vcpu;
    void *mem, *run;
};

static struct held make_vm(int kvm, int run_size)
{
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");
    vm = park_fd(vm);
    size_t size = long_mode ? LONG_MEM : GUEST_MEM;
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        die("mmap guest memory");
    if (long_mode) {
        uint64_t *pt = mem;
        pt[0x1000 / 8] = 0x2000 | 3;        /* PML4[0] -> PDPT */
        pt[0x2000 / 8] = 0x3000 | 3;        /* PDPT[0] -> PD */
        pt[0x3000 / 8] = 0 | 3 | 0x80;      /* PD[0]: 2 MiB page at 0 */
        *(uint8_t *)mem = 0xf4;             /* hlt */
    } else {
        memcpy(mem, code, sizeof code);
    }
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = size, .userspace_addr = (uintptr_t)mem,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        die("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        die("KVM_CREATE_VCPU");
    vcpu = park_fd(vcpu);
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        die("KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (long_mode) {
        struct kvm_segment seg = {.base = 0, .limit = 0xffffffff, .present = 1, .dpl = 0, .s = 1, .g = 1};
        seg.type = 11; seg.selector = 8; seg.l = 1;
        sregs.cs = seg;
        seg.type = 3; seg.selector = 16; seg.l = 0; seg.db = 1;
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg;
        sregs.cr3 = 0x1000;
        sregs.cr4 = 1 << 5;                               /* PAE */
        sregs.cr0 = 1 | (1 << 4) | (1 << 5) | (1u << 31); /* PE ET NE PG */
        sregs.efer = (1 << 8) | (1 << 10);                /* LME LMA */
    }
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
        die("KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = 0, .rflags = 2};
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        die("KVM_SET_REGS");

    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR)
                continue;
            die("KVM_RUN");
        }
        if (run->exit_reason == KVM_EXIT_HLT)
            break;
        fprintf(stderr, "kvm_floor: unexpected exit reason %u\n", run->exit_reason);
        exit(1);
    }

    return (struct held){.vm = vm, .vcpu = vcpu, .mem = mem, .run = run};
}

static void one_vm(int kvm, int run_size)
{
    struct held h = make_vm(kvm, run_size);
    munmap(h.run, run_size);
    munmap(h.mem, long_mode ? LONG_MEM : GUEST_MEM);
    close(h.vcpu);
    close(h.vm);
}

/* One line of /proc/meminfo, in KiB ("MemAvailable", "Slab", ...). */
static long meminfo_kib(const char *name)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        die("/proc/meminfo");
    char line[256];
    long kib = -1;
    size_t n = strlen(name);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, n) == 0 && line[n] == ':' && sscanf(line + n + 1, "%ld", &kib) == 1)
            break;
    fclose(f);
    if (kib < 0) {
        fprintf(stderr, "kvm_floor: /proc/meminfo has no %s\n", name);
        exit(1);
    }
    return kib;
}

/*
 * What the kernel holds for itself, by the lines that name it. Unlike
 * MemAvailable, page cache the host reclaims meanwhile does not move it.
 */
static long kernel_kib(void)
{
    return meminfo_kib("Slab") + meminfo_kib("KernelStack") + meminfo_kib("PageTables") + meminfo_kib("VmallocUsed");
}

static int hold(int kvm, int run_size, long n)
{
    long before = meminfo_kib("MemAvailable"), kernel_before = kernel_kib();
    for (long i = 0; i < n; i++)
        make_vm(kvm, run_size); /* kept until the process exits */
    long after = meminfo_kib("MemAvailable"), kernel_after = kernel_kib();
    printf("{\"vms\":%ld,\"mem_per_vm_kib\":%.1f,\"kernel_per_vm_kib\":%.1f}\n", n, (double)(before - after) / n,
           (double)(kernel_after - kernel_before) / n);
    return 0;
}

int main(int argc, char **argv)
{
    int a = 1;
    if (argc > a && strcmp(argv[a], "--long") == 0) {
        long_mode = 1;
        a++;
    }
    int holding = argc > a && strcmp(argv[a], "--hold") == 0;
    a += holding;
    char *end = NULL;
    long n = argc > a ? strtol(argv[a], &end, 10) : 100;
    if (n <= 0 || (end && *end) || argc > a + 1 || (holding && argc != a + 1)) {
        fprintf(stderr, "usage: kvm_floor [--long] [iterations] | kvm_floor [--long] --hold N\n");
        return 2;
    }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("/dev/kvm");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < 0)
        die("KVM_GET_VCPU_MMAP_SIZE");

    if (holding)
        return hold(kvm, run_size, n);

    double *samples = calloc((size_t)n, sizeof *samples);
    if (!samples)
        die("calloc");
    for (long i = 0; i < n; i++) {
        double t0 = now_ms();
        one_vm(kvm, run_size);
        samples[i] = now_ms() - t0;
    }
    printf("{\"samples_ms\":[");
    for (long i = 0; i < n; i++)
        printf("%s%.4f", i ? "," : "", samples[i]);
    printf("]}\n");
    return 0;
}
