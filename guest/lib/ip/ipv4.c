/*
 * ipv4.c: IPv4 input and output, routing, the checksum, and ICMP echo.
 *
 * Input checks version, header length, total length and the header
 * checksum, accepts frames for our address (and, for UDP, broadcasts),
 * and drops fragments. Options are skipped. Output sets DF, TTL 64 and the
 * checksum; the next hop is the destination if it is on-link (per the
 * netmask), else the gateway. ICMP: echo requests are answered in place
 * (the request frame becomes the reply, sent back to the MAC it came
 * from); everything else is dropped. Left out: fragmentation and
 * reassembly, IP options, multicast, ICMP errors (unreachable, TTL
 * exceeded) in either direction, PMTU discovery.
 */
#include "ip.h"

uint64_t csum_add(uint64_t sum, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    size_t n = len >> 6;
    if (n) {
        /* 64 bytes per turn, one carry chain (lea and dec keep CF). */
        __asm__("clc\n"
                "1:\tadcq 0(%[p]), %[s]\n\t"
                "adcq 8(%[p]), %[s]\n\t"
                "adcq 16(%[p]), %[s]\n\t"
                "adcq 24(%[p]), %[s]\n\t"
                "adcq 32(%[p]), %[s]\n\t"
                "adcq 40(%[p]), %[s]\n\t"
                "adcq 48(%[p]), %[s]\n\t"
                "adcq 56(%[p]), %[s]\n\t"
                "leaq 64(%[p]), %[p]\n\t"
                "decq %[n]\n\t"
                "jnz 1b\n\t"
                "adcq $0, %[s]"
                : [s] "+r"(sum), [p] "+r"(p), [n] "+r"(n)
                : "m"(*(const uint8_t(*)[len])buf)
                : "cc");
    }
    len &= 63;
    while (len >= 8) {
        uint64_t v;
        __builtin_memcpy(&v, p, 8);
        sum += v;
        sum += sum < v;
        p += 8;
        len -= 8;
    }
    uint64_t t = 0;
    if (len & 4) {
        uint32_t v;
        __builtin_memcpy(&v, p, 4);
        t = v;
        p += 4;
    }
    if (len & 2) {
        uint16_t v;
        __builtin_memcpy(&v, p, 2);
        t += v;
        p += 2;
    }
    if (len & 1)
        t += *p;
    sum += t;
    sum += sum < t;
    return sum;
}

uint32_t ip_route(uint32_t dst)
{
    uint32_t mask = net_cfg.netmask;
    if (dst == 0xffffffffu || dst == (net_cfg.addr | ~mask))
        return 0xffffffffu;
    if (!((dst ^ net_cfg.addr) & mask))
        return dst;
    return net_cfg.gateway;
}

static uint16_t ip_id;

int ip_output(uint8_t *frame, size_t plen, uint8_t proto, uint32_t dst)
{
    uint32_t nh = ip_route(dst);
    if (!nh)
        return -1;
    struct ip_hdr *ip = (struct ip_hdr *)(frame + ETH_HLEN);
    ip->vhl = 0x45;
    ip->tos = 0;
    ip->len = net_htons((uint16_t)(IP_HLEN + plen));
    ip->id = net_htons(ip_id++);
    ip->frag = NET_HTONS(0x4000); /* DF */
    ip->ttl = 64;
    ip->proto = proto;
    ip->csum = 0;
    ip->src = net_cfg.addr;
    ip->dst = dst;
    ip->csum = csum_ip20(ip);
    return eth_output_ip(frame, ETH_HLEN + IP_HLEN + plen, nh);
}

/* Echo request -> echo reply, in the same frame. */
static void icmp_input(uint8_t *frame, struct ip_hdr *ip, size_t hlen, size_t len)
{
    struct icmp_hdr *ic = (struct icmp_hdr *)((uint8_t *)ip + hlen);
    if (len < sizeof *ic || ic->type != 8 || ic->code != 0 || ip->dst != net_cfg.addr)
        return;
    if (csum_fold(csum_add(0, ic, len)) != 0)
        return;
    /* Type 8 -> 0: the checksum grows by 0x0800 (RFC 1624), byte-swapped here. */
    ic->type = 0;
    uint32_t c = (uint32_t)ic->csum + 0x0008;
    ic->csum = (uint16_t)(c + (c >> 16));
    struct eth_hdr *e = (struct eth_hdr *)frame;
    mac_copy(e->dst, e->src);
    mac_copy(e->src, net_cfg.mac);
    ip->dst = ip->src;
    ip->src = net_cfg.addr;
    ip->ttl = 64;
    ip->frag = NET_HTONS(0x4000);
    ip->csum = 0;
    ip->csum = hlen == IP_HLEN ? csum_ip20(ip) : csum_fold(csum_add(0, ip, hlen));
    lvm_net_write(net_cfg.dev, frame, ETH_HLEN + hlen + len);
}

void ip_input(uint8_t *frame, size_t len)
{
    if (len < ETH_HLEN + IP_HLEN)
        return;
    struct ip_hdr *ip = (struct ip_hdr *)(frame + ETH_HLEN);
    size_t hlen = (size_t)(ip->vhl & 15) * 4;
    size_t tot = net_ntohs(ip->len);
    if ((ip->vhl >> 4) != 4 || hlen < IP_HLEN || tot < hlen || tot > len - ETH_HLEN)
        return;
    if (ip->frag & NET_HTONS(0x3fff))
        return; /* a fragment (MF set or an offset) */
    if ((hlen == IP_HLEN ? csum_ip20(ip) : csum_fold(csum_add(0, ip, hlen))) != 0)
        return;
    uint32_t dst = ip->dst;
    if (dst != net_cfg.addr) {
        if (ip->proto != IP_PROTO_UDP || ip_route(dst) != 0xffffffffu)
            return;
    }
    uint32_t src = ip->src;
    /* The sender is on-link: remember its MAC (see arp.c). */
    if (src && !((src ^ net_cfg.addr) & net_cfg.netmask) && src != net_cfg.addr)
        arp_glean(src, ((struct eth_hdr *)frame)->src);
    uint8_t *l4 = (uint8_t *)ip + hlen;
    size_t l4len = tot - hlen;
    switch (ip->proto) {
    case IP_PROTO_TCP:
        tcp_input(ip, l4, l4len);
        break;
    case IP_PROTO_UDP:
        udp_input(ip, l4, l4len);
        break;
    case IP_PROTO_ICMP:
        icmp_input(frame, ip, hlen, l4len);
        break;
    }
}
