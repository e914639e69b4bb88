/*
 * kvm_floor: the physical floor of VM creation on this machine, in C.
 * Each iteration creates a VM with 4 KiB of memory and one vCPU on an
 * already open /dev/kvm, runs three real-mode instructions ending in HLT
 * and tears everything down. Prints the per-iteration times in
 * milliseconds as JSON: {"samples_ms":[...]}.
 *
 * usage: kvm_floor [iterations (default 100)]
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

static void one_vm(int kvm, int run_size)
{
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");
    void *mem = mmap(NULL, GUEST_MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        die("mmap guest memory");
    memcpy(mem, code, sizeof code);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = GUEST_MEM, .userspace_addr = (uintptr_t)mem,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        die("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        die("KVM_CREATE_VCPU");
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        die("KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
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

    munmap(run, run_size);
    munmap(mem, GUEST_MEM);
    close(vcpu);
    close(vm);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 100;
    if (n <= 0) {
        fprintf(stderr, "usage: kvm_floor [iterations]\n");
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
