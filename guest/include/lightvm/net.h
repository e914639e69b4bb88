/*
 * net.h: the guest's TCP/IP stack (lib/ip/). One network device (the first
 * of type NOXS_DEV_NET), one IPv4 address, Ethernet II, ARP, IPv4 without
 * fragments, ICMP echo, UDP and a small TCP. Everything is static: no heap.
 *
 * Single-threaded and event driven: the app registers callbacks, then calls
 * net_run() (or net_step() in its own loop); callbacks run from inside it.
 *
 * Addresses are uint32_t in network byte order (as they lie in a packet,
 * as in the device page); ports in the API are in host order.
 */
#ifndef LIGHTVM_NET_H
#define LIGHTVM_NET_H

#include "lvm.h"

/* Byte order (x86 is little-endian). */
#define NET_HTONS(x) ((uint16_t)((((x) & 0xffu) << 8) | (((x) >> 8) & 0xffu)))
static inline uint16_t net_htons(uint16_t v) { return __builtin_bswap16(v); }
static inline uint16_t net_ntohs(uint16_t v) { return __builtin_bswap16(v); }
static inline uint32_t net_htonl(uint32_t v) { return __builtin_bswap32(v); }
static inline uint32_t net_ntohl(uint32_t v) { return __builtin_bswap32(v); }
/* printf("%u.%u.%u.%u", NET_IP4(addr)) */
#define NET_IP4(a) ((a) & 0xffu), ((a) >> 8 & 0xffu), ((a) >> 16 & 0xffu), ((a) >> 24 & 0xffu)

/* The largest IP MTU the stack uses: a device's larger MTU is cut to this. */
#define NET_MTU_MAX 1500
#define NET_FRAME_MAX (14 + NET_MTU_MAX)

/* What net_init found; read-only for apps. */
struct net_config {
    unsigned dev;      /* device id: bit `dev` of lvm_poll's ready set */
    uint8_t mac[6];
    uint16_t mtu;      /* the device's MTU (0 in the page: 1500), at most NET_MTU_MAX */
    uint32_t addr;     /* ours */
    uint32_t netmask;
    uint32_t gateway;  /* 0: none, only on-link destinations are reachable */
};
extern struct net_config net_cfg;

#define NET_ERR_NODEV (-1)   /* no network device (e.g. on PVH) */
#define NET_ERR_NOADDR (-2)  /* neither ip= nor the device page gives an address */
#define NET_ERR_CMDLINE (-3) /* ip= or gw= is not an address */

/*
 * Finds the device and the configuration: the command line's
 * ip=A.B.C.D[/N] (address and netmask) and gw=A.B.C.D (gateway, 0.0.0.0
 * for none), each in place of the device's ipv4 fields (a missing prefix
 * or netmask means /24). Announces the address with a gratuitous ARP.
 * Returns 0 or NET_ERR_*.
 */
int net_init(void);
/* A message for a NET_ERR_* code. */
const char *net_strerror(int err);
/* Writes "who: <message>\n" to the console (one write, no printf). */
void net_perror(const char *who, int err);

/*
 * One turn of the event loop: handles the frames that wait, runs the
 * timers that are due, then waits in lvm_poll until a frame comes, the
 * next timer, or max_wait_ns, whichever is first.
 */
void net_step(uint64_t max_wait_ns);
/* net_step forever. A shutdown request halts the guest inside lvm_poll. */
__attribute__((noreturn)) void net_run(void);
/* Monotonic ns as of the last wake-up (cheap: no clock read). */
uint64_t net_now(void);

/* Parse "A.B.C.D" (exactly len bytes); 0 and *out, or -1. */
int net_parse_ipv4(const char *s, size_t len, uint32_t *out);

/* ---- UDP ---- */

/* A datagram for a bound port; data points into the received frame. */
typedef void (*udp_recv_fn)(uint32_t src, uint16_t sport, uint16_t dport, const uint8_t *data,
                            size_t len);
#define UDP_MAX_BINDS 8
/* 0, or -1 if the port is taken or the table is full. */
int udp_bind(uint16_t port, udp_recv_fn fn);
/* Send a datagram (at most mtu - 28 bytes). 0 sent (or queued while the
 * next hop resolves), -1 too long or no route. */
int udp_sendto(uint16_t sport, uint32_t dst, uint16_t dport, const void *data, size_t len);

/* ---- TCP ---- */

#define TCP_MAX_CONNS 32
#define TCP_MAX_LISTENERS 8
#define TCP_SNDBUF 4096      /* bytes an app may queue per connection */
#define TCP_WINDOW 8192      /* receive window advertised by default */

/* Why a connection ended (the `err` of tcp_ops.closed). */
#define TCP_OK 0
#define TCP_ERR_RESET 1      /* the peer sent RST */
#define TCP_ERR_TIMEOUT 2    /* retransmissions ran out */
#define TCP_ERR_REFUSED 3    /* connect: RST in answer to our SYN */

struct tcp_conn;

/*
 * What a connection tells its app; every member may be NULL. Callbacks may
 * call tcp_send/tcp_close/tcp_abort on c; the stack sends what they queue
 * when the callback returns (one segment carries the reply and the ACK).
 */
struct tcp_ops {
    /* Established: accepted by a listener, or connect succeeded. */
    void (*open)(struct tcp_conn *c);
    /* In-order data, straight from the frame. Returns how many bytes the
     * app took; the rest is not acknowledged and the peer sends it again.
     * NULL: data is taken and dropped. */
    size_t (*recv)(struct tcp_conn *c, const uint8_t *data, size_t len);
    /* The peer sent FIN: no more data will come (reply, then tcp_close). */
    void (*peer_closed)(struct tcp_conn *c);
    /* Once, when c is done for the app (both sides closed, or reset, or
     * timed out, or connect failed). c must not be used afterwards. */
    void (*closed)(struct tcp_conn *c, int err);
    /* The receive window to advertise (default TCP_WINDOW); e.g. an echo
     * server returns tcp_send_space(c) so that it never takes more than it
     * can send back. */
    size_t (*window)(struct tcp_conn *c);
};

struct tcp_conn {
    uint64_t key;            /* remote addr | rport << 32 | lport << 48 (net order); 0 when free */
    uint8_t state;           /* TCP_S_* (lib/ip/tcp.c) */
    uint8_t flags;
    uint8_t retries;
    uint8_t index;           /* 0..TCP_MAX_CONNS-1: for per-connection arrays in apps */
    uint16_t mss;            /* largest segment we send */
    uint16_t pad;
    uint32_t snd_una, snd_nxt, snd_max, snd_wnd, iss;
    uint32_t rcv_nxt;
    uint32_t rcv_adv;        /* right edge of the window we advertised last */
    uint32_t sb_len;         /* bytes in sbuf; sbuf[0] is sequence number snd_una */
    uint32_t rto_ms;
    uint64_t timer;          /* deadline (monotonic ns) of the connection's one timer, 0 if none */
    uint64_t last_rx;        /* when the peer last sent a segment (keepalive) */
    const struct tcp_ops *ops;
    void *user;              /* the app's */
    uint8_t *sbuf;
};

/* Accept connections on port; 0, or -1 if taken or the table is full. */
int tcp_listen(uint16_t port, const struct tcp_ops *ops);
/* Open a connection (SYN now, open() or closed() later); NULL if no slot
 * or no route. */
struct tcp_conn *tcp_connect(uint32_t addr, uint16_t port, const struct tcp_ops *ops, void *user);
/* Queue data: returns how many bytes fit in the send buffer. */
size_t tcp_send(struct tcp_conn *c, const void *data, size_t len);
size_t tcp_send_space(const struct tcp_conn *c);
/* Send FIN once the queued data is out; closed() follows later. */
void tcp_close(struct tcp_conn *c);
/* Send RST and forget c at once (closed() is not called). */
void tcp_abort(struct tcp_conn *c);
/* The peer's address and port (host order). */
static inline uint32_t tcp_remote_addr(const struct tcp_conn *c) { return (uint32_t)c->key; }
static inline uint16_t tcp_remote_port(const struct tcp_conn *c)
{
    return net_ntohs((uint16_t)(c->key >> 32));
}

#endif
