/*
 * tcp.c: a small TCP (RFC 793/9293) for request/reply services.
 *
 * Up to TCP_MAX_CONNS connections, passive (listen) and active (connect).
 * MSS option (ours: mtu - 40; the peer's, else 536). In-order receive
 * only: a segment that starts beyond rcv_nxt is dropped and answered with
 * an ACK, one that overlaps what we have is trimmed. Data goes to the app
 * straight from the frame (no receive buffer): the app takes what it can
 * and the rest is not acknowledged. Sending copies into a per-connection
 * buffer of TCP_SNDBUF bytes and sends within the peer's window (no
 * congestion control); one timer per connection: retransmission (RTO from
 * 200 ms, doubling, at most 8 s; go-back-N from the first unacknowledged
 * byte), zero-window probe, FIN_WAIT_2 (10 s) and TIME_WAIT (1 s; a new
 * SYN may take over a connection in TIME_WAIT, and a new connection may
 * take the oldest one when no slot is free) and keepalive (an ESTABLISHED
 * connection silent for 60 s is probed every 10 s and dropped after 3
 * unanswered probes, so a vanished peer cannot hold a slot for ever).
 * Unknown segments get an RST.
 * We ACK every segment at once, after the app's callback, so a reply rides
 * on the ACK. Left out: window scaling, timestamps, SACK, RTT estimation,
 * fast retransmit, congestion control, Nagle, delayed ACKs, urgent data,
 * simultaneous open, SYN cookies, a listen backlog limit.
 */
#include "ip.h"

enum {
    S_CLOSED,
    S_SYN_SENT,
    S_SYN_RCVD,
    S_ESTABLISHED,
    S_FIN_WAIT_1,
    S_FIN_WAIT_2,
    S_CLOSING,
    S_TIME_WAIT,
    S_CLOSE_WAIT,
    S_LAST_ACK,
};

#define F_ACKNOW 1      /* send an ACK after this input */
#define F_FIN_PENDING 2 /* the app closed: FIN follows the queued data (until it is acked) */
#define F_OPENED 4      /* open() was called, closed() is due */
#define F_ACTIVE 8      /* connect(): closed() is due even if open() never came */
#define F_IN_INPUT 16   /* inside tcp_input: send when it is done */
#define F_KEEPALIVE 32  /* the timer is the idle (keepalive) timer */

#define RTO_INIT_MS 200
#define RTO_MAX_MS 8000
#define MAX_RETRIES 10
#define SYN_RETRIES 6
#define TIME_WAIT_NS 1000000000ull
#define FIN_WAIT_2_NS 10000000000ull
#define IDLE_NS 60000000000ull        /* keepalive: probe after 60 s of silence */
#define PROBE_NS 10000000000ull       /* then every 10 s */
#define PROBES 3                      /* and give up after 3 unanswered */

#define SEQ_LT(a, b) ((int32_t)((a) - (b)) < 0)
#define SEQ_LEQ(a, b) ((int32_t)((a) - (b)) <= 0)
#define SEQ_GT(a, b) ((int32_t)((a) - (b)) > 0)

static struct tcp_conn conns[TCP_MAX_CONNS];
static uint8_t sbufs[TCP_MAX_CONNS][TCP_SNDBUF];
static struct {
    uint16_t port; /* network order, 0: free */
    const struct tcp_ops *ops;
} listeners[TCP_MAX_LISTENERS];
static unsigned nslots; /* slots below this may be in use: scans stop here */
static uint32_t iss_step;
static uint16_t next_port;

static inline uint64_t mkkey(uint32_t addr, uint16_t rport, uint16_t lport)
{
    return addr | (uint64_t)rport << 32 | (uint64_t)lport << 48;
}
static inline uint32_t raddr(const struct tcp_conn *c) { return (uint32_t)c->key; }
static inline uint16_t rport(const struct tcp_conn *c) { return (uint16_t)(c->key >> 32); }
static inline uint16_t lport(const struct tcp_conn *c) { return (uint16_t)(c->key >> 48); }

static struct tcp_conn *find(uint64_t key)
{
    for (struct tcp_conn *c = conns; c < conns + nslots; c++)
        if (c->key == key)
            return c;
    return NULL;
}

/* A free slot, else the oldest connection in TIME_WAIT, else NULL. */
static struct tcp_conn *conn_alloc(uint64_t key)
{
    struct tcp_conn *c = NULL;
    for (unsigned i = 0; i < TCP_MAX_CONNS; i++) {
        struct tcp_conn *x = &conns[i];
        if (!x->key) {
            c = x;
            break;
        }
        if (x->state == S_TIME_WAIT && (!c || x->timer < c->timer))
            c = x;
    }
    if (!c)
        return NULL;
    unsigned i = (unsigned)(c - conns);
    if (i >= nslots)
        nslots = i + 1;
    memset(c, 0, sizeof *c);
    c->key = key;
    c->index = (uint8_t)i;
    c->sbuf = sbufs[i];
    c->rto_ms = RTO_INIT_MS;
    c->mss = 536;
    c->iss = (uint32_t)(lvm_rdtsc() >> 8) + (iss_step += 0x10001u * 64);
    c->snd_una = c->iss;
    c->snd_nxt = c->snd_max = c->iss + 1;
    return c;
}

static void conn_free(struct tcp_conn *c)
{
    c->key = 0;
    c->state = S_CLOSED;
    if (c->timer)
        net_timers_dirty = 1;
    c->timer = 0;
    c->ops = NULL;
    while (nslots && !conns[nslots - 1].key)
        nslots--;
}

/* Tells the app (once) that c is done for it. */
static void notify_closed(struct tcp_conn *c, int err)
{
    const struct tcp_ops *ops = c->ops;
    c->ops = NULL;
    if (ops && ops->closed && (c->flags & (F_OPENED | F_ACTIVE)))
        ops->closed(c, err);
}

static void conn_drop(struct tcp_conn *c, int err)
{
    notify_closed(c, err);
    conn_free(c);
}

static void arm(struct tcp_conn *c, uint64_t ns)
{
    c->timer = net_now_ns + ns;
    net_timer_at(c->timer);
}

static void arm_other(struct tcp_conn *c, uint64_t ns)
{
    c->flags &= (uint8_t)~F_KEEPALIVE;
    arm(c, ns);
}

static size_t rcv_window(struct tcp_conn *c)
{
    size_t w = c->ops && c->ops->window ? c->ops->window(c) : TCP_WINDOW;
    return w > 65535 ? 65535 : w;
}

static uint16_t our_mss(void) { return (uint16_t)(net_cfg.mtu - IP_HLEN - 20); }

/* Builds one segment in net_txbuf and sends it. */
static void xmit(struct tcp_conn *c, uint32_t seq, uint8_t flags, const uint8_t *data, size_t len)
{
    uint8_t *f = net_txbuf;
    struct tcp_hdr *t = (struct tcp_hdr *)(f + L4_OFF);
    size_t hlen = sizeof *t;
    t->sport = lport(c);
    t->dport = rport(c);
    t->seq = net_htonl(seq);
    t->ack = flags & TCP_ACK ? net_htonl(c->rcv_nxt) : 0;
    t->flags = flags;
    size_t w = flags & TCP_RST ? 0 : rcv_window(c);
    t->wnd = net_htons((uint16_t)w);
    c->rcv_adv = c->rcv_nxt + (uint32_t)w;
    t->csum = 0;
    t->urg = 0;
    if (flags & TCP_SYN) {
        uint8_t *o = (uint8_t *)(t + 1);
        uint16_t m = our_mss();
        o[0] = 2;
        o[1] = 4;
        o[2] = (uint8_t)(m >> 8);
        o[3] = (uint8_t)m;
        hlen += 4;
    }
    t->off = (uint8_t)(hlen << 2);
    if (len)
        memcpy((uint8_t *)t + hlen, data, len);
    size_t tl = hlen + len;
    uint64_t ph = csum_pseudo(net_cfg.addr, raddr(c), IP_PROTO_TCP, (uint16_t)tl);
    t->csum = csum_fold(csum_add(ph, t, tl));
    ip_output(f, tl, IP_PROTO_TCP, raddr(c));
}

/* RST for a segment that belongs to no connection (RFC 9293 3.10.7.1). */
static void send_reset(const struct ip_hdr *ip, const struct tcp_hdr *in, uint32_t seglen)
{
    if (in->flags & TCP_RST)
        return;
    uint8_t *f = net_txbuf;
    struct tcp_hdr *t = (struct tcp_hdr *)(f + L4_OFF);
    t->sport = in->dport;
    t->dport = in->sport;
    if (in->flags & TCP_ACK) {
        t->seq = in->ack;
        t->ack = 0;
        t->flags = TCP_RST;
    } else {
        t->seq = 0;
        t->ack = net_htonl(net_ntohl(in->seq) + seglen);
        t->flags = TCP_RST | TCP_ACK;
    }
    t->off = 5 << 4;
    t->wnd = 0;
    t->csum = 0;
    t->urg = 0;
    uint32_t dst = ip->src;
    t->csum = csum_fold(csum_add(csum_pseudo(net_cfg.addr, dst, IP_PROTO_TCP, 20), t, 20));
    ip_output(f, 20, IP_PROTO_TCP, dst);
}

/* Sends what the window allows of the queued data, then the FIN, else an
 * ACK if one is due; keeps the timer running while anything is in flight. */
static void output(struct tcp_conn *c)
{
    uint8_t st = c->state;
    if (st == S_SYN_SENT || st == S_SYN_RCVD || st == S_CLOSED)
        return;
    int sent = 0;
    uint32_t off = c->snd_nxt - c->snd_una;
    uint32_t wnd_end = c->snd_una + c->snd_wnd;
    while (off < c->sb_len) {
        uint32_t n = c->sb_len - off;
        if (n > c->mss)
            n = c->mss;
        int32_t room = (int32_t)(wnd_end - c->snd_nxt);
        if (room <= 0)
            break;
        if (n > (uint32_t)room)
            n = (uint32_t)room;
        uint8_t fl = TCP_ACK;
        off += n;
        if (off == c->sb_len)
            fl |= TCP_PSH | (c->flags & F_FIN_PENDING ? TCP_FIN : 0);
        xmit(c, c->snd_nxt, fl, c->sbuf + off - n, n);
        c->snd_nxt += n + (fl & TCP_FIN ? 1 : 0);
        sent = 1;
    }
    if ((c->flags & F_FIN_PENDING) && off == c->sb_len && c->snd_nxt == c->snd_una + off) {
        xmit(c, c->snd_nxt, TCP_ACK | TCP_FIN, NULL, 0);
        c->snd_nxt++;
        sent = 1;
    }
    if (!sent) {
        int due = c->flags & F_ACKNOW;
        if (!due && (st == S_ESTABLISHED || st == S_FIN_WAIT_1 || st == S_FIN_WAIT_2) && c->ops &&
            c->ops->window) {
            /* Window update: the app's window grew by a segment, or opened. */
            int32_t grow = (int32_t)(c->rcv_nxt + (uint32_t)rcv_window(c) - c->rcv_adv);
            due = grow >= (int32_t)c->mss || (grow > 0 && c->rcv_adv == c->rcv_nxt);
        }
        if (due)
            xmit(c, c->snd_nxt, TCP_ACK, NULL, 0);
    }
    c->flags &= (uint8_t)~F_ACKNOW;
    if (SEQ_GT(c->snd_nxt, c->snd_max))
        c->snd_max = c->snd_nxt;
    if (c->snd_max != c->snd_una || (c->sb_len && !c->snd_wnd)) {
        if (!c->timer || (c->flags & F_KEEPALIVE)) {
            if (c->flags & F_KEEPALIVE) {
                c->flags &= (uint8_t)~F_KEEPALIVE;
                c->retries = 0; /* probes do not count against the data */
            }
            arm(c, (uint64_t)c->rto_ms * 1000000u);
        }
    } else if (st == S_ESTABLISHED) {
        if (!(c->flags & F_KEEPALIVE)) { /* idle: keepalive (moved lazily, see tcp_timers) */
            c->flags |= F_KEEPALIVE;
            if (c->timer)
                net_timers_dirty = 1;
            arm(c, IDLE_NS);
        }
    } else if (st != S_TIME_WAIT && st != S_FIN_WAIT_2 && c->timer) {
        c->flags &= (uint8_t)~F_KEEPALIVE;
        c->timer = 0;
        net_timers_dirty = 1;
    }
}

static void enter_time_wait(struct tcp_conn *c)
{
    c->state = S_TIME_WAIT;
    arm_other(c, TIME_WAIT_NS);
    notify_closed(c, TCP_OK);
}

static uint16_t parse_mss(const struct tcp_hdr *t, size_t hlen)
{
    const uint8_t *o = (const uint8_t *)(t + 1), *end = (const uint8_t *)t + hlen;
    uint16_t m = 536;
    while (o < end && *o != 0) {
        if (*o == 1) {
            o++;
            continue;
        }
        if (o + 2 > end || o[1] < 2 || o + o[1] > end)
            break;
        if (o[0] == 2 && o[1] == 4) {
            m = (uint16_t)(o[2] << 8 | o[3]);
            break;
        }
        o += o[1];
    }
    uint16_t ours = our_mss();
    if (m > ours)
        m = ours;
    return m < 64 ? 64 : m;
}

/* The app's open(); returns 0 if the app closed c in it (abort). */
static int opened(struct tcp_conn *c)
{
    c->state = S_ESTABLISHED;
    c->flags |= F_OPENED;
    c->retries = 0;
    c->rto_ms = RTO_INIT_MS;
    if (c->timer) {
        c->timer = 0;
        net_timers_dirty = 1;
    }
    if (c->ops && c->ops->open)
        c->ops->open(c);
    return c->state != S_CLOSED;
}

/* A segment for connection c (the heart of RFC 9293 3.10.7.4). */
static void segment(struct tcp_conn *c, const struct tcp_hdr *t, size_t hlen, const uint8_t *data,
                    size_t dlen)
{
    uint8_t fl = t->flags;
    uint32_t seq = net_ntohl(t->seq), ack = net_ntohl(t->ack);
    uint32_t wnd = net_ntohs(t->wnd);

    if (c->state == S_SYN_SENT) {
        if ((fl & TCP_ACK) && ack != c->iss + 1) {
            if (!(fl & TCP_RST))
                xmit(c, ack, TCP_RST, NULL, 0);
            return;
        }
        if (fl & TCP_RST) {
            if (fl & TCP_ACK)
                conn_drop(c, TCP_ERR_REFUSED);
            return;
        }
        if ((fl & (TCP_SYN | TCP_ACK)) != (TCP_SYN | TCP_ACK))
            return; /* no simultaneous open */
        c->rcv_nxt = seq + 1;
        c->mss = parse_mss(t, hlen);
        c->snd_una = ack;
        c->snd_wnd = wnd;
        c->flags |= F_ACKNOW;
        opened(c);
        return;
    }

    if (fl & TCP_RST) {
        /* In the window we advertised (or exactly at rcv_nxt when it is 0). */
        if (seq == c->rcv_nxt || (SEQ_GT(seq, c->rcv_nxt) && SEQ_LT(seq, c->rcv_adv)))
            conn_drop(c, TCP_ERR_RESET);
        return;
    }
    if (fl & TCP_SYN) {
        if (c->state == S_SYN_RCVD && seq + 1 == c->rcv_nxt)
            xmit(c, c->iss, TCP_SYN | TCP_ACK, NULL, 0); /* our SYN-ACK was lost */
        else
            c->flags |= F_ACKNOW; /* challenge ACK (RFC 5961) */
        return;
    }
    if (!(fl & TCP_ACK))
        return;

    if (c->state == S_SYN_RCVD) {
        if (ack != c->iss + 1) {
            xmit(c, ack, TCP_RST, NULL, 0);
            return;
        }
        c->snd_una = ack;
        c->snd_wnd = wnd;
        if (!opened(c))
            return;
    } else if (SEQ_GT(ack, c->snd_una) && SEQ_LEQ(ack, c->snd_max)) {
        uint32_t acked = ack - c->snd_una;
        int fin_acked = (c->flags & F_FIN_PENDING) && acked > c->sb_len;
        uint32_t d = acked > c->sb_len ? c->sb_len : acked;
        if (d) {
            c->sb_len -= d;
            if (c->sb_len)
                memmove(c->sbuf, c->sbuf + d, c->sb_len);
        }
        c->snd_una = ack;
        if (SEQ_LT(c->snd_nxt, ack))
            c->snd_nxt = ack;
        c->snd_wnd = wnd;
        c->retries = 0;
        c->rto_ms = RTO_INIT_MS;
        if (c->timer && !(c->flags & F_KEEPALIVE)) {
            c->timer = 0; /* output() starts it again if anything is still in flight */
            net_timers_dirty = 1;
        }
        if (fin_acked) {
            c->flags &= (uint8_t)~F_FIN_PENDING; /* done: output() must not send it again */
            switch (c->state) {
            case S_FIN_WAIT_1:
                c->state = S_FIN_WAIT_2;
                arm_other(c, FIN_WAIT_2_NS);
                break;
            case S_CLOSING:
                enter_time_wait(c);
                return;
            case S_LAST_ACK:
                conn_drop(c, TCP_OK);
                return;
            }
        }
    } else if (SEQ_GT(ack, c->snd_max)) {
        c->flags |= F_ACKNOW; /* acknowledges what we never sent */
        return;
    } else if (ack == c->snd_una) {
        if (!c->snd_wnd && wnd)
            c->snd_nxt = c->snd_una; /* the window opened: resend from the probe byte on */
        c->snd_wnd = wnd;
    }

    if (!dlen && !(fl & TCP_FIN))
        return;
    int32_t off = (int32_t)(c->rcv_nxt - seq);
    c->flags |= F_ACKNOW;
    if (off < 0)
        return; /* out of order: dropped, the ACK asks for what is missing */
    if ((uint32_t)off > dlen || ((uint32_t)off == dlen && !(fl & TCP_FIN))) {
        if (c->state == S_TIME_WAIT)
            arm_other(c, TIME_WAIT_NS); /* the peer's FIN again: our ACK was lost */
        return; /* all old */
    }
    uint8_t st = c->state;
    if (st != S_ESTABLISHED && st != S_FIN_WAIT_1 && st != S_FIN_WAIT_2)
        return; /* after the peer's FIN nothing new can come */
    data += off;
    dlen -= (uint32_t)off;
    if (dlen) {
        size_t took = dlen;
        if (c->ops && c->ops->recv) {
            took = c->ops->recv(c, data, dlen);
            if (c->state == S_CLOSED)
                return;
            if (took > dlen)
                took = dlen;
        }
        c->rcv_nxt += (uint32_t)took;
        if (took < dlen)
            return; /* the rest (and a FIN) comes again */
    }
    if (fl & TCP_FIN) {
        c->rcv_nxt++;
        switch (c->state) {
        case S_ESTABLISHED:
            c->state = S_CLOSE_WAIT;
            if (c->ops && c->ops->peer_closed)
                c->ops->peer_closed(c);
            break;
        case S_FIN_WAIT_1: /* our FIN is not acknowledged yet */
            c->state = S_CLOSING;
            break;
        case S_FIN_WAIT_2:
            enter_time_wait(c);
            break;
        }
    }
}

void tcp_input(const struct ip_hdr *ip, uint8_t *l4, size_t len)
{
    const struct tcp_hdr *t = (const struct tcp_hdr *)l4;
    if (len < sizeof *t)
        return;
    size_t hlen = (size_t)(t->off >> 4) * 4;
    if (hlen < sizeof *t || hlen > len || ip->dst != net_cfg.addr)
        return;
    if (csum_fold(csum_add(csum_pseudo(ip->src, ip->dst, IP_PROTO_TCP, (uint16_t)len), t, len)))
        return;
    uint8_t fl = t->flags;
    uint64_t key = mkkey(ip->src, t->sport, t->dport);
    struct tcp_conn *c = find(key);
    if (c && c->state == S_TIME_WAIT && (fl & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_SYN &&
        SEQ_GT(net_ntohl(t->seq), c->rcv_nxt)) {
        conn_free(c); /* a new incarnation takes over TIME_WAIT */
        c = NULL;
    }
    if (!c) {
        if ((fl & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_SYN) {
            for (int i = 0; i < TCP_MAX_LISTENERS; i++) {
                if (listeners[i].port != t->dport || !listeners[i].port)
                    continue;
                c = conn_alloc(key);
                if (!c)
                    return; /* full: the peer will try again */
                c->ops = listeners[i].ops;
                c->state = S_SYN_RCVD;
                c->rcv_nxt = net_ntohl(t->seq) + 1;
                c->snd_wnd = net_ntohs(t->wnd);
                c->mss = parse_mss(t, hlen);
                xmit(c, c->iss, TCP_SYN | TCP_ACK, NULL, 0);
                arm(c, (uint64_t)c->rto_ms * 1000000u);
                return;
            }
        }
        send_reset(ip, t, (uint32_t)(len - hlen) + (fl & TCP_SYN ? 1 : 0) + (fl & TCP_FIN ? 1 : 0));
        return;
    }
    c->flags |= F_IN_INPUT;
    c->last_rx = net_now_ns;
    segment(c, t, hlen, l4 + hlen, len - hlen);
    if (c->state != S_CLOSED) {
        c->flags &= (uint8_t)~F_IN_INPUT;
        output(c);
    }
}

uint64_t tcp_timers(uint64_t now)
{
    uint64_t next = ~0ull;
    for (struct tcp_conn *c = conns; c < conns + nslots; c++) {
        if (!c->key || !c->timer)
            continue;
        if (c->timer <= now) {
            c->timer = 0;
            if (c->state == S_TIME_WAIT) {
                conn_free(c);
                continue;
            }
            if (c->state == S_FIN_WAIT_2) {
                conn_drop(c, TCP_OK);
                continue;
            }
            if (c->flags & F_KEEPALIVE) {
                if (now - c->last_rx < IDLE_NS) { /* heard from the peer since: wait on */
                    c->retries = 0;
                    c->timer = c->last_rx + IDLE_NS;
                } else if (c->retries >= PROBES) {
                    xmit(c, c->snd_nxt, TCP_RST | TCP_ACK, NULL, 0);
                    conn_drop(c, TCP_ERR_TIMEOUT);
                    continue;
                } else { /* an old sequence number: a live peer answers with an ACK */
                    c->retries++;
                    xmit(c, c->snd_una - 1, TCP_ACK, NULL, 0);
                    c->timer = now + PROBE_NS;
                }
                if (c->timer < next)
                    next = c->timer;
                continue;
            }
            int probe = c->snd_max == c->snd_una && c->state != S_SYN_SENT && c->state != S_SYN_RCVD;
            if (probe) {
                if (!c->sb_len)
                    continue; /* nothing to send: the timer stays off */
                c->retries = 0; /* a zero window may last: never give up on it */
            }
            if (++c->retries > (c->state <= S_SYN_RCVD ? SYN_RETRIES : MAX_RETRIES)) {
                if (c->state != S_SYN_SENT)
                    xmit(c, c->snd_nxt, TCP_RST | TCP_ACK, NULL, 0);
                conn_drop(c, TCP_ERR_TIMEOUT);
                continue;
            }
            c->rto_ms = c->rto_ms * 2 > RTO_MAX_MS ? RTO_MAX_MS : c->rto_ms * 2;
            arm(c, (uint64_t)c->rto_ms * 1000000u);
            if (c->state == S_SYN_SENT) {
                xmit(c, c->iss, TCP_SYN, NULL, 0);
            } else if (c->state == S_SYN_RCVD) {
                xmit(c, c->iss, TCP_SYN | TCP_ACK, NULL, 0);
            } else if (probe) { /* one byte past the closed window */
                xmit(c, c->snd_una, TCP_ACK, c->sbuf, 1);
                c->snd_nxt = c->snd_max = c->snd_una + 1;
            } else {
                c->snd_nxt = c->snd_una; /* go back N */
                output(c);
            }
        }
        if (c->key && c->timer && c->timer < next)
            next = c->timer;
    }
    return next;
}

uint64_t tcp_next_timer(void)
{
    uint64_t next = ~0ull;
    for (struct tcp_conn *c = conns; c < conns + nslots; c++)
        if (c->key && c->timer && c->timer < next)
            next = c->timer;
    return next;
}

int tcp_listen(uint16_t port, const struct tcp_ops *ops)
{
    uint16_t p = net_htons(port);
    int slot = -1;
    for (int i = 0; i < TCP_MAX_LISTENERS; i++) {
        if (listeners[i].port == p)
            return -1;
        if (!listeners[i].port && slot < 0)
            slot = i;
    }
    if (!p || slot < 0)
        return -1;
    listeners[slot].port = p;
    listeners[slot].ops = ops;
    return 0;
}

struct tcp_conn *tcp_connect(uint32_t addr, uint16_t port, const struct tcp_ops *ops, void *user)
{
    uint32_t nh = ip_route(addr);
    if (!nh || nh == 0xffffffffu || !port)
        return NULL;
    uint64_t key;
    int tries = 0;
    if (!next_port) /* start elsewhere on every boot: a reused 4-tuple may meet a TIME_WAIT */
        next_port = (uint16_t)(lvm_rdtsc() >> 4) | 1;
    do {
        uint16_t lp = (uint16_t)(49152 + (next_port++ & 0x3fff));
        key = mkkey(addr, net_htons(port), net_htons(lp));
        if (++tries > 16384)
            return NULL;
    } while (find(key));
    struct tcp_conn *c = conn_alloc(key);
    if (!c)
        return NULL;
    c->ops = ops;
    c->user = user;
    c->state = S_SYN_SENT;
    c->flags = F_ACTIVE;
    xmit(c, c->iss, TCP_SYN, NULL, 0);
    arm(c, (uint64_t)c->rto_ms * 1000000u);
    return c;
}

size_t tcp_send_space(const struct tcp_conn *c) { return TCP_SNDBUF - c->sb_len; }

size_t tcp_send(struct tcp_conn *c, const void *data, size_t len)
{
    uint8_t st = c->state;
    if ((st != S_ESTABLISHED && st != S_CLOSE_WAIT && st != S_SYN_SENT) ||
        (c->flags & F_FIN_PENDING))
        return 0;
    size_t room = TCP_SNDBUF - c->sb_len;
    if (len > room)
        len = room;
    memcpy(c->sbuf + c->sb_len, data, len);
    c->sb_len += (uint32_t)len;
    if (!(c->flags & F_IN_INPUT))
        output(c);
    return len;
}

void tcp_close(struct tcp_conn *c)
{
    switch (c->state) {
    case S_SYN_SENT:
        conn_drop(c, TCP_OK);
        return;
    case S_ESTABLISHED:
        c->state = S_FIN_WAIT_1;
        break;
    case S_CLOSE_WAIT:
        c->state = S_LAST_ACK;
        break;
    default:
        return; /* closing already */
    }
    c->flags |= F_FIN_PENDING;
    if (!(c->flags & F_IN_INPUT))
        output(c);
}

void tcp_abort(struct tcp_conn *c)
{
    uint8_t st = c->state;
    if (st != S_CLOSED && st != S_SYN_SENT && st != S_TIME_WAIT)
        xmit(c, c->snd_nxt, TCP_RST | TCP_ACK, NULL, 0);
    c->ops = NULL;
    conn_free(c);
}
