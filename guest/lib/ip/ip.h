/*
 * ip.h: what the parts of the stack (lib/ip/) share: wire formats, the
 * checksum, the frame buffers and the calls between layers. Not for apps.
 */
#ifndef LVM_IP_H
#define LVM_IP_H

#include <lightvm/net.h>

/* Wire structs: packed but 2-byte aligned (an IP header sits at frame + 14). */
#define WIRE __attribute__((packed, aligned(2)))

#define ETH_HLEN 14
#define ETH_P_IP NET_HTONS(0x0800)
#define ETH_P_ARP NET_HTONS(0x0806)

struct eth_hdr {
    uint8_t dst[6];
    uint8_t src[6];
    uint16_t type;
} WIRE;

struct arp_pkt {
    uint16_t htype, ptype;
    uint8_t hlen, plen;
    uint16_t op;
    uint8_t sha[6];
    uint32_t spa;
    uint8_t tha[6];
    uint32_t tpa;
} WIRE;

#define IP_PROTO_ICMP 1
#define IP_PROTO_TCP 6
#define IP_PROTO_UDP 17
#define IP_HLEN 20

struct ip_hdr {
    uint8_t vhl;   /* version 4, header length in words */
    uint8_t tos;
    uint16_t len;
    uint16_t id;
    uint16_t frag; /* flags and fragment offset */
    uint8_t ttl;
    uint8_t proto;
    uint16_t csum;
    uint32_t src;
    uint32_t dst;
} WIRE;

struct icmp_hdr {
    uint8_t type, code;
    uint16_t csum;
    uint16_t id, seq;
} WIRE;

struct udp_hdr {
    uint16_t sport, dport, len, csum;
} WIRE;

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10

struct tcp_hdr {
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t off;   /* data offset in words, << 4 */
    uint8_t flags;
    uint16_t wnd, csum, urg;
} WIRE;

/* Where the layers start in a frame we build (no IP options). */
#define L4_OFF (ETH_HLEN + IP_HLEN)

/*
 * The Internet checksum, summed as little-endian 64-bit words (the sum of
 * byte-swapped 16-bit words; the folded result is stored as is). Pieces
 * must start at even offsets of the checksummed whole.
 */
uint64_t csum_add(uint64_t sum, const void *buf, size_t len);
static inline uint16_t csum_fold(uint64_t s)
{
    uint32_t lo = (uint32_t)s, hi = (uint32_t)(s >> 32);
    lo += hi;
    lo += lo < hi;
    uint32_t v = (lo & 0xffff) + (lo >> 16);
    v = (v & 0xffff) + (v >> 16);
    return (uint16_t)~v;
}
/* The checksum of a 20-byte IP header: five 32-bit words. */
static inline uint16_t csum_ip20(const void *h)
{
    uint32_t w[5];
    __builtin_memcpy(w, h, 20);
    return csum_fold((uint64_t)w[0] + w[1] + w[2] + w[3] + w[4]);
}
/* Sum of the TCP/UDP pseudo-header. */
static inline uint64_t csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len)
{
    return (uint64_t)src + dst + ((uint32_t)proto << 8) + net_htons(len);
}

/* The frame being built for sending (one at a time) and the current time. */
extern uint8_t net_txbuf[NET_FRAME_MAX];
extern uint64_t net_now_ns;
/* Ask for a wake-up at t (monotonic ns) at the latest. */
static inline void net_timer_at(uint64_t t)
{
    extern uint64_t net_next_timer;
    if (t < net_next_timer)
        net_next_timer = t;
}
/* A timer was stopped: net_step finds the next deadline again before it
 * sleeps (a few instructions) rather than wake up for nothing (an exit). */
extern uint8_t net_timers_dirty;

/* eth/arp (arp.c): send an IPv4 frame (headers filled but the Ethernet
 * addresses) to next hop nh; queued while ARP resolves it. 0 or -1. */
int eth_output_ip(uint8_t *frame, size_t len, uint32_t nh);
void arp_input(uint8_t *frame, size_t len);
void arp_glean(uint32_t ip, const uint8_t *mac);
void arp_announce(void);
uint64_t arp_timers(uint64_t now);
uint64_t arp_next_timer(void);

/* ipv4.c */
void ip_input(uint8_t *frame, size_t len);
/* Fill the IP header of frame (payload of plen bytes at L4_OFF) and send. */
int ip_output(uint8_t *frame, size_t plen, uint8_t proto, uint32_t dst);
/* The next hop for dst, 0 if unreachable; 0xffffffff for a broadcast. */
uint32_t ip_route(uint32_t dst);

/* udp.c, tcp.c: l4 points at the transport header, len is its length. */
void udp_input(const struct ip_hdr *ip, uint8_t *l4, size_t len);
void tcp_input(const struct ip_hdr *ip, uint8_t *l4, size_t len);
uint64_t tcp_timers(uint64_t now);
uint64_t tcp_next_timer(void);

static inline void mac_copy(uint8_t *d, const uint8_t *s)
{
    __builtin_memcpy(d, s, 6);
}
static inline int mac_eq(const uint8_t *a, const uint8_t *b)
{
    uint32_t a0, b0;
    uint16_t a1, b1;
    __builtin_memcpy(&a0, a, 4);
    __builtin_memcpy(&b0, b, 4);
    __builtin_memcpy(&a1, a + 4, 2);
    __builtin_memcpy(&b1, b + 4, 2);
    return ((a0 ^ b0) | (uint32_t)(a1 ^ b1)) == 0;
}

#endif
