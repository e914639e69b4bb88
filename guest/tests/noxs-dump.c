/* noxs-dump: print the noxs device page: the VM, its devices, the generation. */
#include <lightvm/lvm.h>

int main(void)
{
    const struct noxs_page *p = lvm_device_page();
    if (!p) {
        lvm_puts("no device page\n");
        return 1;
    }
    const struct noxs_header *h = &p->header;
    lvm_printf("vm %lu %.*s\n", h->vm_id, NOXS_NAME_MAX, h->name);
    unsigned count = h->device_count < NOXS_MAX_DEVICES ? h->device_count : NOXS_MAX_DEVICES;
    for (unsigned i = 0; i < count; i++) {
        const struct noxs_device *d = &p->devices[i];
        lvm_printf("dev %u type %u mac %02x:%02x:%02x:%02x:%02x:%02x mtu %u\n", d->id, d->type,
                   d->mac[0], d->mac[1], d->mac[2], d->mac[3], d->mac[4], d->mac[5], d->mtu);
    }
    lvm_printf("generation %u\n", h->generation);
    return 0;
}
