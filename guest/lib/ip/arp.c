/*
 * arp.c: ARP for IPv4 over Ethernet, and sending IPv4 frames to a next hop.
 *
 * A 16-entry cache (least recently refreshed goes first), filled from ARP
 * requests for our address, from replies, and from the source of IPv4
 * frames of on-link hosts ("gleaning", which saves a round trip when a
 * peer already knew us). Entries live 10 minutes. While a next hop
 * resolves, up to 4 frames wait (more are dropped: TCP sends again); the
 * request is repeated every 250 ms, 5 times, then the frames are dropped.
 * We answer requests for our address and announce it at start with a
 * gratuitous ARP. Left out: conflict detection, proxy ARP, RARP.
 */
#include "ip.h"

#define ARP_ENTRIES 16
#define ARP_PENDING 4
#define ARP_RETRY_NS 250000000ull
#define ARP_TRIES 5
#define ARP_TTL_NS 600000000000ull
#define ARP_REQUEST NET_HTONS(1)
#define ARP_REPLY NET_HTONS(2)

struct arp_entry {
    uint32_t ip;        /* 0: free */
    uint8_t mac[6];
    uint8_t resolving;
    uint8_t tries;
    uint64_t when;      /* resolving: next retry; else: expiry */
};

struct arp_pending {
    uint32_t nh;
    uint16_t len;       /* 0: free */
    uint8_t frame[NET_FRAME_MAX];
};

static struct arp_entry cache[ARP_ENTRIES];
static unsigned last_hit;
static struct arp_pending pending[ARP_PENDING];
static unsigned npending;
static unsigned nresolving; /* entries being resolved: the timer scan runs only if any */

static struct arp_entry *lookup(uint32_t ip)
{
    if (cache[last_hit].ip == ip)
        return &cache[last_hit];
    for (unsigned i = 0; i < ARP_ENTRIES; i++) {
        if (cache[i].ip == ip) {
            last_hit = i;
            return &cache[i];
        }
    }
    return NULL;
}

/* A free entry, else the resolved one closest to expiry. */
static struct arp_entry *victim(void)
{
    struct arp_entry *v = NULL;
    for (unsigned i = 0; i < ARP_ENTRIES; i++) {
        struct arp_entry *e = &cache[i];
        if (!e->ip)
            return e;
        if (!e->resolving && (!v || e->when < v->when))
            v = e;
    }
    return v ? v : &cache[0];
}

static void arp_send(uint16_t op, const uint8_t *eth_dst, const uint8_t *tha, uint32_t tpa)
{
    uint8_t f[ETH_HLEN + sizeof(struct arp_pkt)] __attribute__((aligned(8)));
    struct eth_hdr *e = (struct eth_hdr *)f;
    struct arp_pkt *a = (struct arp_pkt *)(f + ETH_HLEN);
    mac_copy(e->dst, eth_dst);
    mac_copy(e->src, net_cfg.mac);
    e->type = ETH_P_ARP;
    a->htype = NET_HTONS(1);
    a->ptype = ETH_P_IP;
    a->hlen = 6;
    a->plen = 4;
    a->op = op;
    mac_copy(a->sha, net_cfg.mac);
    a->spa = net_cfg.addr;
    mac_copy(a->tha, tha);
    a->tpa = tpa;
    lvm_net_write(net_cfg.dev, f, sizeof f);
}

static const uint8_t mac_bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const uint8_t mac_zero[6];

void arp_announce(void) { arp_send(ARP_REQUEST, mac_bcast, mac_zero, net_cfg.addr); }

/* Sends (dst = mac) or drops the frames waiting for ip. */
static void flush(uint32_t ip, const uint8_t *mac)
{
    for (unsigned i = 0; npending && i < ARP_PENDING; i++) {
        struct arp_pending *p = &pending[i];
        if (p->len && p->nh == ip) {
            if (mac) {
                mac_copy(((struct eth_hdr *)p->frame)->dst, mac);
                lvm_net_write(net_cfg.dev, p->frame, p->len);
            }
            p->len = 0;
            npending--;
        }
    }
}

/* ip is at mac: refresh or add the entry, send what waited for it. */
static void learn(struct arp_entry *e, uint32_t ip, const uint8_t *mac)
{
    if (!e) {
        e = victim();
        if (e->ip && e->resolving) { /* all are resolving: give up the oldest */
            flush(e->ip, NULL);
            e->ip = 0;
        }
    }
    e->ip = ip;
    mac_copy(e->mac, mac);
    e->when = net_now_ns + ARP_TTL_NS;
    if (e->resolving) {
        e->resolving = 0;
        nresolving--;
        flush(ip, mac);
    }
}

void arp_glean(uint32_t ip, const uint8_t *mac)
{
    struct arp_entry *e = lookup(ip);
    /* Known, and more than half its life left: the common case. */
    if (e && !e->resolving && mac_eq(e->mac, mac) &&
        (int64_t)(e->when - net_now_ns) > (int64_t)(ARP_TTL_NS / 2))
        return;
    learn(e, ip, mac);
}

void arp_input(uint8_t *frame, size_t len)
{
    if (len < ETH_HLEN + sizeof(struct arp_pkt))
        return;
    const struct arp_pkt *a = (const struct arp_pkt *)(frame + ETH_HLEN);
    if (a->htype != NET_HTONS(1) || a->ptype != ETH_P_IP || a->hlen != 6 || a->plen != 4)
        return;
    int for_us = a->tpa == net_cfg.addr;
    if (a->spa && a->spa != net_cfg.addr) {
        struct arp_entry *e = lookup(a->spa);
        if (e || for_us)
            learn(e, a->spa, a->sha);
    }
    if (for_us && a->op == ARP_REQUEST)
        arp_send(ARP_REPLY, a->sha, a->sha, a->spa);
}

int eth_output_ip(uint8_t *frame, size_t len, uint32_t nh)
{
    struct eth_hdr *e = (struct eth_hdr *)frame;
    mac_copy(e->src, net_cfg.mac);
    e->type = ETH_P_IP;
    if (nh == 0xffffffffu) {
        mac_copy(e->dst, mac_bcast);
        return lvm_net_write(net_cfg.dev, frame, len);
    }
    struct arp_entry *a = lookup(nh);
    if (a && !a->resolving && a->when > net_now_ns) {
        mac_copy(e->dst, a->mac);
        return lvm_net_write(net_cfg.dev, frame, len);
    }
    /* Unknown or stale: keep the frame, ask who has nh. */
    for (unsigned i = 0; i < ARP_PENDING; i++) {
        struct arp_pending *p = &pending[i];
        if (!p->len) {
            p->nh = nh;
            p->len = (uint16_t)len;
            memcpy(p->frame, frame, len);
            npending++;
            break;
        }
    }
    if (!a || !a->resolving) {
        if (!a) {
            a = victim();
            if (a->ip && a->resolving) { /* all are resolving: take over the oldest */
                flush(a->ip, NULL);
                a->resolving = 0;
                nresolving--;
            }
            a->ip = nh;
        }
        a->resolving = 1;
        nresolving++;
        a->tries = 1;
        a->when = net_now_ns + ARP_RETRY_NS;
        net_timer_at(a->when);
        arp_send(ARP_REQUEST, mac_bcast, mac_zero, nh);
    }
    return 0;
}

uint64_t arp_next_timer(void)
{
    uint64_t next = ~0ull;
    for (unsigned i = 0; nresolving && i < ARP_ENTRIES; i++)
        if (cache[i].resolving && cache[i].when < next)
            next = cache[i].when;
    return next;
}

uint64_t arp_timers(uint64_t now)
{
    uint64_t next = ~0ull;
    for (unsigned i = 0; nresolving && i < ARP_ENTRIES; i++) {
        struct arp_entry *e = &cache[i];
        if (!e->resolving)
            continue;
        if (e->when <= now) {
            if (e->tries >= ARP_TRIES) {
                flush(e->ip, NULL);
                e->ip = 0;
                e->resolving = 0;
                nresolving--;
                continue;
            }
            e->tries++;
            e->when = now + ARP_RETRY_NS;
            arp_send(ARP_REQUEST, mac_bcast, mac_zero, e->ip);
        }
        if (e->when < next)
            next = e->when;
    }
    return next;
}
