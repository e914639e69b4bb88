/* xenbus-evil: breaks the xenstore ring's rules, as the command line says:
 * "prod" claims req_prod 5000 bytes ahead, "len" sends a header announcing
 * 100000 payload bytes, "cons" moves rsp_cons past rsp_prod and makes a
 * call; "notify" makes XENBUS_NOTIFY without a xenstore device. The host
 * must end it; if it lives on, it says so and halts with 9. */
#include <lightvm/lvm.h>
#include <lightvm/xs.h>

int main(void)
{
    volatile struct lvm_xenstore_ring *r = 0;
    const struct noxs_page *p = lvm_device_page();
    for (unsigned i = 0; p && i < p->header.device_count; i++)
        if (p->devices[i].type == NOXS_DEV_XENSTORE)
            r = (volatile struct lvm_xenstore_ring *)(uintptr_t)p->devices[i].backend;
    if (lvm_cmdline_has("notify")) {
        lvm_puts("evil: notify\n");
        lvm_hypercall(LVM_HC_XENBUS_NOTIFY, 0);
    } else if (!r) {
        lvm_puts("evil: no ring\n");
        return 2;
    } else if (lvm_cmdline_has("prod")) {
        lvm_puts("evil: prod\n");
        r->req_prod = r->req_cons + 5000;
        lvm_hypercall(LVM_HC_XENBUS_NOTIFY, 0);
    } else if (lvm_cmdline_has("len")) {
        lvm_puts("evil: len\n");
        uint32_t h[4] = {XS_READ, 1, 0, 100000};
        memcpy((char *)r->req, h, sizeof h);
        r->req_prod = sizeof h;
        lvm_hypercall(LVM_HC_XENBUS_NOTIFY, 0);
    } else if (lvm_cmdline_has("cons")) {
        lvm_puts("evil: cons\n");
        r->rsp_cons = 12345;
        xs_write("data/x", "y");
    }
    lvm_puts("evil: still running\n");
    return 9;
}
