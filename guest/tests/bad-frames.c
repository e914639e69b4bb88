/*
 * bad-frames: frames the host must check. Sends, on the first network
 * device, a 10-byte frame (too short: dropped, ret -1), a frame of
 * mtu + 100 bytes (too long: dropped, ret -1), an ARP request for the
 * gateway from a foreign source MAC, 02:00:00:00:00:99, claiming x.y.z.99
 * (spoofed: dropped, ret -1), then the same request from the device's own
 * MAC and address (sent, ret 0); prints "sent\n" and exits 0.
 * Without a network device: "bad-frames: no network device\n", exit 1.
 */
#include <lightvm/lvm.h>

static uint8_t frame[65535 + 100];

int main(void)
{
    const struct noxs_device *d = lvm_net_device();
    if (!d) {
        lvm_puts("bad-frames: no network device\n");
        return 1;
    }
    unsigned mtu = d->mtu ? d->mtu : 1500;
    memset(frame, 0xff, 6); /* broadcast */
    memcpy(frame + 6, d->mac, 6);
    frame[12] = 0x08; /* ARP */
    frame[13] = 0x06;
    lvm_net_write(d->id, frame, 10);
    lvm_net_write(d->id, frame, mtu + 100);

    uint8_t *a = frame + 14;
    static const uint8_t head[8] = {0, 1, 8, 0, 6, 4, 0, 1}; /* Ethernet, IPv4, request */
    memcpy(a, head, 8);
    memcpy(a + 8, d->mac, 6);
    memcpy(a + 14, &d->ipv4_addr, 4);
    memset(a + 18, 0, 6);
    uint32_t target = d->ipv4_gateway;
    if (!target) /* x.y.z.1 of the device's network */
        target = (d->ipv4_addr & d->ipv4_netmask) | 0x01000000u;
    memcpy(a + 24, &target, 4);
    static const uint8_t foreign[6] = {2, 0, 0, 0, 0, 0x99};
    uint32_t spoofed = (d->ipv4_addr & 0x00ffffffu) | 0x63000000u;
    memcpy(frame + 6, foreign, 6);
    memcpy(a + 8, foreign, 6);
    memcpy(a + 14, &spoofed, 4);
    lvm_net_write(d->id, frame, 14 + 28);
    memcpy(frame + 6, d->mac, 6);
    memcpy(a + 8, d->mac, 6);
    memcpy(a + 14, &d->ipv4_addr, 4);
    lvm_net_write(d->id, frame, 14 + 28);
    lvm_puts("sent\n");
    return 0;
}
