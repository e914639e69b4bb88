/*
 * kvm_floor_monitor: what LightVM's monitor must do for a cold boot, in C,
 * so that lightvm_cold over this floor is our own overhead alone. Each
 * iteration, on an already open /dev/kvm:
 *   - creates a VM (its fd moved above 1023, as LightVM does);
 *   - maps 4 MiB of anonymous RAM (MAP_NORESERVE) as slot 0 at 0, and one
 *     4 KiB device page as a KVM_MEM_READONLY slot 1 at 0xc0000000;
 *   - creates the vCPU, maps its kvm_run, sets its signal mask;
 *   - writes the 64-bit entry state as src/vmm/cpu.ts does: a GDT, 4-level
 *     identity page tables (a 4 KiB table for the first 2 MiB with page 0
 *     absent, 2 MiB pages above, one 2 MiB page for the device page), the
 *     special registers (long mode, paging, a busy TSS), the device page's
 *     header, a boot-info block, the guest's code, then the registers;
 *   - runs it to the first hypercall (an OUT to port 0x500);
 *   - destroys it all.
 * It leaves out what LightVM also does and C would not need: checking and
 * copying an ELF image, the toolstack's request and reply.
 * Prints per-iteration times in milliseconds: {"samples_ms":[...]}.
 *
 * usage: kvm_floor_monitor [iterations (default 100)]
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

#define RAM_SIZE (4u << 20)
#define DEVICE_PAGE_GPA 0xc0000000ull
#define GDT_GPA 0x1000
#define BOOT_INFO_GPA 0x1800
#define PML4_GPA 0x2000
#define PDPT_GPA 0x3000
#define PT0_GPA 0x4000
#define PD_DEVICE_GPA 0x5000
#define PD_RAM_GPA 0x8000
#define ENTRY_GPA 0x100000
#define HYPERCALL_PORT 0x500

#define P 1ull
#define W 2ull
#define PS 0x80ull

static void die(const char *what)
{
    fprintf(stderr, "kvm_floor_monitor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int park_fd(int fd)
{
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 1024);
    if (moved < 0)
        return fd;
    close(fd);
    return moved;
}

/* mov $0x500,%edx; mov $0x1800,%eax; out %eax,(%dx); hlt */
static const uint8_t code[] = {0xba, 0x00, 0x05, 0x00, 0x00, 0xb8, 0x00, 0x18, 0x00, 0x00, 0xef, 0xf4};

static const uint64_t gdt[] = {
    0,
    0x00af9b000000ffffull, /* 0x08: 64-bit code */
    0x00cf93000000ffffull, /* 0x10: data */
    0x00008b0000000067ull, /* 0x18: busy TSS */
    0,
};

static void write_entry_state(uint8_t *ram, uint8_t *page)
{
    uint64_t *q = (uint64_t *)ram;
    memcpy(ram + GDT_GPA, gdt, sizeof gdt);
    for (int i = 1; i < 512; i++)
        q[PT0_GPA / 8 + i] = ((uint64_t)i << 12) | P | W;
    q[PML4_GPA / 8] = PDPT_GPA | P | W;
    q[PDPT_GPA / 8] = PD_RAM_GPA | P | W;
    q[PD_RAM_GPA / 8] = PT0_GPA | P | W;
    for (unsigned i = 1; i < RAM_SIZE >> 21; i++)
        q[PD_RAM_GPA / 8 + i] = ((uint64_t)i << 21) | P | W | PS;
    q[PDPT_GPA / 8 + (DEVICE_PAGE_GPA >> 30)] = PD_DEVICE_GPA | P | W;
    q[PD_DEVICE_GPA / 8 + ((DEVICE_PAGE_GPA & ((1u << 30) - 1)) >> 21)] = DEVICE_PAGE_GPA | P | W | PS;
    /* Device page header and boot info: a magic, a version, sizes, a name. */
    memcpy(page, "noxs\1\0\0\0", 8);
    memcpy(page + 16, "floor", 6);
    uint64_t *bi = (uint64_t *)(ram + BOOT_INFO_GPA);
    bi[0] = 0x4c564d31;
    bi[1] = RAM_SIZE;
    bi[2] = ENTRY_GPA + sizeof code;
    bi[3] = DEVICE_PAGE_GPA;
    memcpy(ram + ENTRY_GPA, code, sizeof code);
}

static void one_vm(int kvm, int run_size)
{
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");
    vm = park_fd(vm);
    uint8_t *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uint8_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ram == MAP_FAILED || page == MAP_FAILED)
        die("mmap guest memory");
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = RAM_SIZE, .userspace_addr = (uintptr_t)ram,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        die("KVM_SET_USER_MEMORY_REGION (RAM)");
    struct kvm_userspace_memory_region device = {
        .slot = 1, .flags = KVM_MEM_READONLY, .guest_phys_addr = DEVICE_PAGE_GPA, .memory_size = 4096,
        .userspace_addr = (uintptr_t)page,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &device) < 0)
        die("KVM_SET_USER_MEMORY_REGION (read-only device page)");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        die("KVM_CREATE_VCPU");
    vcpu = park_fd(vcpu);
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");
    /* An empty mask: every signal may interrupt KVM_RUN, as in LightVM. */
    struct kvm_signal_mask *mask = calloc(1, sizeof *mask + 8);
    if (!mask)
        die("calloc");
    mask->len = 8;
    if (ioctl(vcpu, KVM_SET_SIGNAL_MASK, mask) < 0)
        die("KVM_SET_SIGNAL_MASK");
    free(mask);

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        die("KVM_GET_SREGS");
    struct kvm_segment seg = {.base = 0, .limit = 0xffffffff, .present = 1, .dpl = 0, .s = 1, .g = 1};
    seg.type = 11; seg.selector = 0x08; seg.l = 1;
    sregs.cs = seg;
    seg.type = 3; seg.selector = 0x10; seg.l = 0; seg.db = 1;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg;
    sregs.tr = (struct kvm_segment){.base = 0, .limit = 0x67, .selector = 0x18, .type = 11, .present = 1};
    sregs.gdt.base = GDT_GPA;
    sregs.gdt.limit = sizeof gdt - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr3 = PML4_GPA;
    sregs.cr4 = 1 << 5;                                                      /* PAE */
    sregs.cr0 = 1 | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 18) | (1u << 31); /* PE MP ET NE WP AM PG */
    sregs.efer = (1 << 8) | (1 << 10);                                       /* LME LMA */
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
        die("KVM_SET_SREGS");
    write_entry_state(ram, page);
    struct kvm_regs regs = {.rip = ENTRY_GPA, .rsp = RAM_SIZE, .rdi = BOOT_INFO_GPA, .rflags = 2};
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        die("KVM_SET_REGS");

    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR)
                continue;
            die("KVM_RUN");
        }
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == HYPERCALL_PORT && run->io.direction == KVM_EXIT_IO_OUT)
            break;
        fprintf(stderr, "kvm_floor_monitor: exit reason %u before the first hypercall\n", run->exit_reason);
        exit(1);
    }

    munmap(run, run_size);
    close(vcpu);
    close(vm);
    munmap(ram, RAM_SIZE);
    munmap(page, 4096);
}

int main(int argc, char **argv)
{
    char *end = NULL;
    long n = argc > 1 ? strtol(argv[1], &end, 10) : 100;
    if (n <= 0 || (end && *end) || argc > 2) {
        fprintf(stderr, "usage: kvm_floor_monitor [iterations]\n");
        return 2;
    }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("/dev/kvm");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < 0)
        die("KVM_GET_VCPU_MMAP_SIZE");
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
