/*
 * LightVM guest ABI: the contract between a guest image and the monitor.
 *
 * Defined once here for the guest and once in src/vmm/abi.ts for the host;
 * test/abi.test.ts compiles a program against this header and checks that
 * every number, struct size and field offset matches the TypeScript side.
 *
 * Entry (LightVM monitor): 64-bit long mode, paging on, RAM identity-mapped
 * from 0 to mem_size except page 0 (left unmapped to catch NULL), the device
 * page mapped read-only at LVM_DEVICE_PAGE_GPA, interrupts off.
 * rip = ELF entry, rdi = GPA of struct lvm_boot_info, rsp = mem_size
 * (16-byte aligned). Memory past the image's file contents is zero.
 *
 * A hypercall is one 32-bit OUT to port LVM_HC_PIO_BASE + number; the value
 * written is the guest-physical address of the call's argument struct, and
 * results are written back into that struct before the guest resumes.
 * There are no interrupts: a guest waits with LVM_HC_POLL.
 */
#ifndef LIGHTVM_ABI_H
#define LIGHTVM_ABI_H

#include <stdint.h>

#define LVM_ABI_VERSION 1

/* Hypercalls. */
#define LVM_HC_PIO_BASE 0x500
#define LVM_HC_WALLTIME 1
#define LVM_HC_CONSOLE_WRITE 2
#define LVM_HC_POLL 3
#define LVM_HC_HALT 4
#define LVM_HC_NET_WRITE 5
#define LVM_HC_NET_READ 6
#define LVM_HC_XENBUS_NOTIFY 7
#define LVM_HC_COUNT 8 /* one past the highest number */

/* Largest buffer one CONSOLE_WRITE may pass. */
#define LVM_CONSOLE_WRITE_MAX 65536

/* WALLTIME: nanoseconds since the Unix epoch (out). */
struct lvm_hc_walltime {
    uint64_t nsecs;
};

/* CONSOLE_WRITE: write len bytes at guest-physical address data (in). */
struct lvm_hc_console_write {
    uint64_t data;
    uint64_t len;
};

/*
 * POLL: wait until timeout_nsecs have passed or a device is ready (in);
 * ready_set has one bit per ready device id (out, 0 on timeout), and
 * LVM_POLL_CONTROL when the host changed the device page's flags (e.g. asked
 * for a shutdown): the guest should then read them.
 */
#define LVM_POLL_CONTROL (1ull << 63)
struct lvm_hc_poll {
    uint64_t timeout_nsecs;
    uint64_t ready_set;
};

/* HALT: the guest is done; status is its exit status (in). */
struct lvm_hc_halt {
    int64_t status;
};

/*
 * NET_WRITE: send one Ethernet frame (no FCS) of len bytes at data on
 * network device `device` (its id in the device page). ret (out): 0 sent,
 * -1 dropped (a frame shorter than 14 bytes or longer than mtu + 14 is
 * dropped and counted, never sent; the guest goes on).
 */
struct lvm_hc_net_write {
    uint64_t device;
    uint64_t data;
    uint64_t len;
    int64_t ret;
};

/*
 * NET_READ: receive one frame into data (capacity bytes of room). ret
 * (out): 0 and len = the frame's length, or -1 if no frame is waiting
 * (POLL's ready_set says when one is). A frame longer than capacity is
 * dropped.
 */
struct lvm_hc_net_read {
    uint64_t device;
    uint64_t data;
    uint64_t capacity;
    uint64_t len;
    int64_t ret;
};

/* Boot information: rdi at entry points here. */
#define LVM_BOOT_MAGIC 0x4d564c42u /* "BLVM" */
#define LVM_PLATFORM_LIGHTVM 1
#define LVM_PLATFORM_PVH 2 /* entered through the PVH note (QEMU) */
#define LVM_CMDLINE_MAX 512

struct lvm_boot_info {
    uint32_t magic;
    uint32_t abi_version;
    uint64_t mem_size;    /* bytes of RAM, from guest-physical 0 */
    uint64_t kernel_end;  /* first page after the image: free memory starts here */
    uint64_t cmdline;     /* GPA of the NUL-terminated command line */
    uint64_t cmdline_len; /* without the NUL */
    uint64_t device_page; /* GPA of the noxs device page, 0 if none */
    uint64_t tsc_hz;      /* TSC frequency, 0 if unknown */
    uint64_t platform;    /* LVM_PLATFORM_* */
};

/*
 * noxs: the per-VM device page. Written only by the host before the VM
 * starts (or between generations), mapped read-only into the guest. A guest
 * write to it is refused: the monitor stops that VM and says why.
 */
#define LVM_DEVICE_PAGE_GPA 0xc0000000u
#define NOXS_PAGE_SIZE 4096
#define NOXS_MAGIC 0x53584f4eu /* "NOXS" */
#define NOXS_VERSION 1
#define NOXS_NAME_MAX 64
#define NOXS_MAX_DEVICES 62

/* noxs_header.flags */
#define NOXS_FLAG_SHUTDOWN 1u /* the host asks the guest to end cleanly */

#define NOXS_DEV_CONSOLE 1
#define NOXS_DEV_NET 2
#define NOXS_DEV_BLOCK 3
#define NOXS_DEV_XENSTORE 4 /* backend: GPA of its ring page (struct lvm_xenstore_ring) */

struct noxs_header {
    uint32_t magic;
    uint16_t version;
    uint16_t device_count;
    uint32_t generation; /* bumped by the host on every change; odd while changing */
    uint32_t flags;
    uint64_t vm_id;
    char name[NOXS_NAME_MAX]; /* NUL-padded */
    uint8_t reserved[40];
};

struct noxs_device {
    uint16_t type;  /* NOXS_DEV_* */
    uint16_t flags;
    uint32_t id;    /* device id (0..62): its bit in lvm_hc_poll.ready_set */
    uint64_t backend; /* host-side handle */
    uint8_t mac[6];
    uint16_t mtu;
    uint32_t ipv4_addr;    /* network byte order, 0 if unset */
    uint32_t ipv4_netmask;
    uint32_t ipv4_gateway;
    uint8_t reserved[28];
};

struct noxs_page {
    struct noxs_header header;
    struct noxs_device devices[NOXS_MAX_DEVICES];
};

/*
 * xenstore (a VM created with a xenstore device): Xen's xenstore ring page
 * (struct xenstore_domain_interface of io/xs_wire.h), in guest RAM at the
 * device entry's backend. The guest produces requests into req and
 * consumes replies and watch events from rsp; each message is an xs_wire
 * header (type, req_id, tx_id, len: u32 little-endian) and len payload
 * bytes. Indices are free-running, masked with LVM_XENSTORE_RING_BYTES - 1;
 * the host keeps its own copy of the indices it owns (req_cons, rsp_prod).
 * XENBUS_NOTIFY (no argument: pass 0) says "requests written": the host
 * takes them and puts what waits for the guest on rsp, as it also does at
 * each POLL (no notify is needed after consuming); the device's bit in
 * POLL's ready set says rsp holds bytes. A producer index more than the
 * ring's size ahead of its consumer (either ring), or a request longer than
 * LVM_XENSTORE_PAYLOAD_MAX, ends the VM.
 */
#define LVM_XENSTORE_RING_BYTES 1024
#define LVM_XENSTORE_PAYLOAD_MAX 4096

struct lvm_xenstore_ring {
    char req[LVM_XENSTORE_RING_BYTES];
    char rsp[LVM_XENSTORE_RING_BYTES];
    uint32_t req_cons;
    uint32_t req_prod;
    uint32_t rsp_cons;
    uint32_t rsp_prod;
    uint32_t server_features;
    uint32_t connection;
    uint32_t error;
};

#endif
