/*
 * net.c: the network device driver. A device is an entry of type
 * NOXS_DEV_NET in the noxs device page; a frame goes out with one NET_WRITE
 * and comes in with one NET_READ (abi.h). No rings, no interrupts: POLL's
 * ready set says when frames wait. On PVH (QEMU) there is no device page,
 * so there is no device and every call fails.
 */
#include <lightvm/lvm.h>

const struct noxs_device *lvm_net_device(void)
{
    const struct noxs_page *p = lvm_device_page();
    if (!p)
        return NULL;
    unsigned n = p->header.device_count;
    if (n > NOXS_MAX_DEVICES)
        n = NOXS_MAX_DEVICES;
    for (unsigned i = 0; i < n; i++)
        if (p->devices[i].type == NOXS_DEV_NET && p->devices[i].id < 63)
            return &p->devices[i];
    return NULL;
}

int lvm_net_write(unsigned dev, const void *buf, size_t len)
{
    if (__builtin_expect(lvm_on_pvh, 0))
        return -1;
    struct lvm_hc_net_write a = {
        .device = dev, .data = (uint64_t)(uintptr_t)buf, .len = len, .ret = -1,
    };
    lvm_hypercall(LVM_HC_NET_WRITE, &a);
    return (int)a.ret;
}

int lvm_net_read(unsigned dev, void *buf, size_t cap, size_t *len)
{
    if (__builtin_expect(lvm_on_pvh, 0))
        return -1;
    struct lvm_hc_net_read a = {
        .device = dev, .data = (uint64_t)(uintptr_t)buf, .capacity = cap, .len = 0, .ret = -1,
    };
    lvm_hypercall(LVM_HC_NET_READ, &a);
    if (a.ret != 0 || a.len > cap)
        return -1;
    *len = a.len;
    return 0;
}
