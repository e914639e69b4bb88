/*
 * netif.c: configuration, Ethernet input and the event loop.
 *
 * One device, one address: the first NOXS_DEV_NET device, its MAC, its MTU
 * (cut to NET_MTU_MAX), and ip=/gw= from the command line or else the
 * device's ipv4 fields. Frames for other MACs (but broadcast) are dropped;
 * so are VLAN tags, multicast and every EtherType but IPv4 and ARP.
 *
 * The loop: handle the frames that wait (NET_READ until -1), run the timers
 * that are due, POLL until the next timer. Nothing is read after a POLL that
 * timed out, so an idle guest with no timers costs one POLL per wake-up.
 */
#include "ip.h"

struct net_config net_cfg;
uint8_t net_txbuf[NET_FRAME_MAX];
uint64_t net_now_ns;
uint64_t net_next_timer = ~0ull;
uint8_t net_timers_dirty;

/* 8-byte aligned + 2: the IP header after the 14-byte Ethernet header is aligned. */
static uint8_t rx_space[NET_FRAME_MAX + 2] __attribute__((aligned(8)));
#define rxbuf (rx_space + 2)
static int rx_ready = 1;

uint64_t net_now(void) { return net_now_ns; }

int net_parse_ipv4(const char *s, size_t len, uint32_t *out)
{
    uint32_t a = 0;
    unsigned part = 0, digits = 0, v = 0;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? s[i] : '.';
        if (c >= '0' && c <= '9') {
            v = v * 10 + (unsigned)(c - '0');
            if (++digits > 3 || v > 255)
                return -1;
        } else if (c == '.' && digits) {
            a |= v << (8 * part);
            if (++part > 4)
                return -1;
            v = digits = 0;
        } else {
            return -1;
        }
    }
    if (part != 4)
        return -1;
    *out = a;
    return 0;
}

/* ip=A.B.C.D[/N] (address and netmask) and gw=A.B.C.D (gateway,
 * 0.0.0.0 for none), each in place of the device page's. */
static int config_from_cmdline(const struct noxs_device *dev)
{
    size_t n;
    const char *v = lvm_cmdline_get("gw", &n);
    if (!v)
        net_cfg.gateway = dev->ipv4_gateway;
    else if (net_parse_ipv4(v, n, &net_cfg.gateway) < 0)
        return -1;
    v = lvm_cmdline_get("ip", &n);
    if (!v) {
        net_cfg.addr = dev->ipv4_addr;
        net_cfg.netmask = dev->ipv4_netmask;
        return 0;
    }
    size_t alen = 0;
    while (alen < n && v[alen] != '/')
        alen++;
    if (net_parse_ipv4(v, alen, &net_cfg.addr) < 0)
        return -1;
    net_cfg.netmask = 0; /* no prefix: /24 (net_init) */
    if (alen < n) {
        unsigned prefix = 0, digits = 0;
        for (size_t i = alen + 1; i < n; i++) {
            if (v[i] < '0' || v[i] > '9' || ++digits > 2)
                return -1;
            prefix = prefix * 10 + (unsigned)(v[i] - '0');
        }
        if (prefix < 1 || prefix > 32)
            return -1;
        net_cfg.netmask = net_htonl(~0u << (32 - prefix));
    }
    return 0;
}

int net_init(void)
{
    const struct noxs_device *d = lvm_net_device();
    if (!d)
        return NET_ERR_NODEV;
    const struct noxs_page *p = lvm_device_page();
    struct noxs_device dev;
    /* A consistent copy: the generation is odd while the host changes the page. */
    for (int tries = 0; tries < 1000; tries++) {
        uint32_t g = *(volatile const uint32_t *)&p->header.generation;
        __asm__ volatile("" ::: "memory");
        memcpy(&dev, d, sizeof dev);
        __asm__ volatile("" ::: "memory");
        if (!(g & 1) && g == *(volatile const uint32_t *)&p->header.generation)
            break;
    }
    net_cfg.dev = dev.id;
    mac_copy(net_cfg.mac, dev.mac);
    net_cfg.mtu = dev.mtu == 0 || dev.mtu > NET_MTU_MAX ? NET_MTU_MAX : dev.mtu;
    if (config_from_cmdline(&dev) < 0)
        return NET_ERR_CMDLINE;
    if (!net_cfg.netmask)
        net_cfg.netmask = net_htonl(0xffffff00u);
    if (!net_cfg.addr)
        return NET_ERR_NOADDR;
    net_now_ns = lvm_monotonic_ns();
    arp_announce();
    return 0;
}

const char *net_strerror(int err)
{
    switch (err) {
    case NET_ERR_NODEV:
        return "no network device";
    case NET_ERR_NOADDR:
        return "no IPv4 address (give ip=A.B.C.D/N, or set the device's ipv4)";
    case NET_ERR_CMDLINE:
        return "ip= or gw= on the command line is not an IPv4 address";
    default:
        return "error";
    }
}

void net_perror(const char *who, int err)
{
    char buf[128];
    const char *m = net_strerror(err);
    size_t a = strlen(who), b = strlen(m);
    if (a > 40)
        a = 40;
    memcpy(buf, who, a);
    buf[a] = ':';
    buf[a + 1] = ' ';
    memcpy(buf + a + 2, m, b);
    buf[a + 2 + b] = '\n';
    lvm_console_write(buf, a + b + 3);
}

static void eth_input(uint8_t *frame, size_t len)
{
    const struct eth_hdr *e = (const struct eth_hdr *)frame;
    /* Ours or broadcast. */
    uint32_t d0;
    uint16_t d1;
    __builtin_memcpy(&d0, e->dst, 4);
    __builtin_memcpy(&d1, e->dst + 4, 2);
    if (!mac_eq(e->dst, net_cfg.mac) && !(d0 == ~0u && d1 == 0xffff))
        return;
    if (e->type == ETH_P_IP)
        ip_input(frame, len);
    else if (e->type == ETH_P_ARP)
        arp_input(frame, len);
}

void net_step(uint64_t max_wait_ns)
{
    if (rx_ready) {
        size_t len;
        while (lvm_net_read(net_cfg.dev, rxbuf, ETH_HLEN + net_cfg.mtu, &len) == 0)
            if (len >= ETH_HLEN)
                eth_input(rxbuf, len);
    }
    if (net_now_ns >= net_next_timer) {
        net_next_timer = ~0ull;
        net_timers_dirty = 0;
        net_timer_at(arp_timers(net_now_ns));
        net_timer_at(tcp_timers(net_now_ns));
    } else if (net_timers_dirty) {
        net_timers_dirty = 0;
        uint64_t a = arp_next_timer(), t = tcp_next_timer();
        net_next_timer = a < t ? a : t;
    }
    uint64_t wait = max_wait_ns;
    if (net_next_timer != ~0ull) {
        uint64_t left = net_next_timer > net_now_ns ? net_next_timer - net_now_ns : 0;
        if (left < wait)
            wait = left;
    }
    uint64_t ready = wait ? lvm_poll(wait) : 0;
    rx_ready = (ready >> net_cfg.dev) & 1;
    net_now_ns = lvm_monotonic_ns();
    if (!wait)
        rx_ready = 1; /* no POLL: look for frames anyway */
}

void net_run(void)
{
    for (;;)
        net_step(~0ull);
}
