/*
 * udp.c: UDP. Up to UDP_MAX_BINDS bound ports, each with a callback that
 * gets the datagram straight from the received frame. Checksums are
 * checked when present and always set. Datagrams for unbound ports are
 * dropped silently (no ICMP port unreachable).
 */
#include "ip.h"

static struct {
    uint16_t port; /* network order, 0: free */
    udp_recv_fn fn;
} binds[UDP_MAX_BINDS];

int udp_bind(uint16_t port, udp_recv_fn fn)
{
    uint16_t p = net_htons(port);
    if (!p || !fn)
        return -1;
    int slot = -1;
    for (int i = 0; i < UDP_MAX_BINDS; i++) {
        if (binds[i].port == p)
            return -1;
        if (!binds[i].port && slot < 0)
            slot = i;
    }
    if (slot < 0)
        return -1;
    binds[slot].port = p;
    binds[slot].fn = fn;
    return 0;
}

void udp_input(const struct ip_hdr *ip, uint8_t *l4, size_t len)
{
    const struct udp_hdr *u = (const struct udp_hdr *)l4;
    if (len < sizeof *u)
        return;
    size_t ulen = net_ntohs(u->len);
    if (ulen < sizeof *u || ulen > len)
        return;
    for (int i = 0; i < UDP_MAX_BINDS; i++) {
        if (binds[i].port != u->dport)
            continue;
        uint64_t ph = csum_pseudo(ip->src, ip->dst, IP_PROTO_UDP, (uint16_t)ulen);
        if (u->csum && csum_fold(csum_add(ph, u, ulen)))
            return;
        binds[i].fn(ip->src, net_ntohs(u->sport), net_ntohs(u->dport), l4 + sizeof *u,
                    ulen - sizeof *u);
        return;
    }
}

int udp_sendto(uint16_t sport, uint32_t dst, uint16_t dport, const void *data, size_t len)
{
    if (len > (size_t)net_cfg.mtu - IP_HLEN - sizeof(struct udp_hdr))
        return -1;
    uint8_t *f = net_txbuf;
    struct udp_hdr *u = (struct udp_hdr *)(f + L4_OFF);
    uint16_t ulen = (uint16_t)(sizeof *u + len);
    u->sport = net_htons(sport);
    u->dport = net_htons(dport);
    u->len = net_htons(ulen);
    u->csum = 0;
    memcpy(u + 1, data, len);
    uint16_t c = csum_fold(csum_add(csum_pseudo(net_cfg.addr, dst, IP_PROTO_UDP, ulen), u, ulen));
    u->csum = c ? c : 0xffff;
    return ip_output(f, ulen, IP_PROTO_UDP, dst);
}
