/*
 * xs.c: xenbus over the xenstore ring page (xs.h). The guest owns req_prod
 * and rsp_cons, the host req_cons and rsp_prod; indices run free and are
 * masked with the ring's size. The host is only ever running while this
 * vCPU is out of the guest (a hypercall), so a compiler barrier orders our
 * ring accesses against its. A request is copied into req in pieces as room
 * allows (the host takes it all at each notify); replies are read off rsp,
 * waiting in POLL, whose ready set has the device's bit while bytes wait
 * (a POLL also lets the host put more there: no notify after consuming).
 */
#include <lightvm/lvm.h>
#include <lightvm/xs.h>

#define RING LVM_XENSTORE_RING_BYTES
#define MASK (RING - 1)
/* Watch events kept while a call waits for its reply. */
#define EVENTS 4
#define EVENT_BYTES 160

struct xs_header {
    uint32_t type, req_id, tx_id, len;
};

static volatile struct lvm_xenstore_ring *ring;
static uint64_t ready_bit;
static int state; /* 0 not tried, 1 ready, -1 no device */
static uint32_t next_req;
static const char *why = "";
static char store_errno[16];
/* The reply (or event) being read, NUL-terminated. */
static char body[LVM_XENSTORE_PAYLOAD_MAX + 1];
static char events[EVENTS][EVENT_BYTES];
static uint16_t event_len[EVENTS];
static unsigned event_head, event_count;
static int events_lost;

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

static int fail(const char *e)
{
    why = e;
    return -1;
}

const char *xs_error(void) { return why; }

int xs_init(void)
{
    if (state)
        return state > 0 ? 0 : -1;
    state = -1;
    const struct noxs_page *p = lvm_device_page();
    if (!p)
        return fail("ENODEV");
    for (unsigned i = 0; i < p->header.device_count && i < NOXS_MAX_DEVICES; i++) {
        const struct noxs_device *d = &p->devices[i];
        if (d->type != NOXS_DEV_XENSTORE)
            continue;
        ring = (volatile struct lvm_xenstore_ring *)(uintptr_t)d->backend;
        ready_bit = 1ull << d->id;
        state = 1;
        return 0;
    }
    return fail("ENODEV");
}

static void notify(void) { lvm_hypercall(LVM_HC_XENBUS_NOTIFY, 0); }

/* Copies len bytes into req; when it is full, notifies (the host takes all). */
static int put(const void *src, size_t len)
{
    const char *s = src;
    while (len) {
        uint32_t prod = ring->req_prod;
        uint32_t room = RING - (prod - ring->req_cons);
        if (room == 0) {
            notify();
            if (ring->req_prod - ring->req_cons >= RING)
                return fail("EIO"); /* the host took nothing: its queue to the store is full */
            continue;
        }
        if (room > RING)
            return fail("EIO");
        uint32_t at = prod & MASK;
        uint32_t n = len < room ? (uint32_t)len : room;
        if (n > RING - at)
            n = RING - at; /* up to the ring's end; the rest next round */
        memcpy((char *)ring->req + at, s, n);
        barrier();
        ring->req_prod = prod + n;
        s += n;
        len -= n;
    }
    return 0;
}

/* Waits in POLL until rsp has bytes, up to the deadline. */
static int wait_rsp(uint64_t deadline)
{
    while (ring->rsp_prod == ring->rsp_cons) {
        uint64_t now = lvm_monotonic_ns();
        if (now >= deadline)
            return fail("ETIMEDOUT");
        lvm_poll(deadline - now);
    }
    return 0;
}

/* Copies len bytes out of rsp, waiting for them. */
static int get(void *dst, size_t len, uint64_t deadline)
{
    char *d = dst;
    while (len) {
        if (wait_rsp(deadline) < 0)
            return -1;
        uint32_t cons = ring->rsp_cons;
        uint32_t avail = ring->rsp_prod - cons;
        if (avail > RING)
            return fail("EIO");
        barrier();
        uint32_t at = cons & MASK;
        uint32_t n = len < avail ? (uint32_t)len : avail;
        if (n > RING - at)
            n = RING - at;
        memcpy(d, (const char *)ring->rsp + at, n);
        barrier();
        ring->rsp_cons = cons + n;
        d += n;
        len -= n;
    }
    return 0;
}

/* Reads one message into body; its header into *h. */
static int take(struct xs_header *h, uint64_t deadline)
{
    if (get(h, sizeof *h, deadline) < 0)
        return -1;
    if (h->len > LVM_XENSTORE_PAYLOAD_MAX)
        return fail("EIO");
    if (get(body, h->len, deadline) < 0)
        return -1;
    body[h->len] = 0;
    return 0;
}

static void keep_event(uint32_t len)
{
    if (event_count == EVENTS || len > EVENT_BYTES) {
        events_lost = 1;
        return;
    }
    unsigned slot = (event_head + event_count++) % EVENTS;
    memcpy(events[slot], body, len);
    event_len[slot] = (uint16_t)len;
}

/* One request of up to two payload pieces; its reply's payload in body. Returns its length. */
static int request(uint32_t type, const char *a, size_t alen, const char *b, size_t blen)
{
    if (xs_init() < 0)
        return -1;
    if (alen + blen > LVM_XENSTORE_PAYLOAD_MAX)
        return fail("E2BIG");
    struct xs_header h = {.type = type, .req_id = ++next_req, .tx_id = 0, .len = (uint32_t)(alen + blen)};
    if (put(&h, sizeof h) < 0 || put(a, alen) < 0 || put(b, blen) < 0)
        return -1;
    notify();
    uint64_t deadline = lvm_monotonic_ns() + LVM_XS_TIMEOUT_NS;
    for (;;) {
        struct xs_header r;
        if (take(&r, deadline) < 0)
            return -1;
        if (r.type == XS_WATCH_EVENT) {
            keep_event(r.len);
            continue;
        }
        if (r.req_id != h.req_id)
            continue; /* not ours: a reply to a call that timed out */
        if (r.type == XS_ERROR) {
            size_t n = r.len < sizeof store_errno - 1 ? r.len : sizeof store_errno - 1;
            memcpy(store_errno, body, n);
            store_errno[n] = 0;
            return fail(store_errno);
        }
        return (int)r.len;
    }
}

/* A path with its NUL, as requests carry it. */
static int path_request(uint32_t type, const char *path, const char *value, size_t vlen)
{
    return request(type, path, strlen(path) + 1, value, vlen);
}

int xs_read(const char *path, char *buf, size_t cap)
{
    int n = path_request(XS_READ, path, NULL, 0);
    if (n < 0)
        return -1;
    if ((size_t)n >= cap)
        return fail("E2BIG");
    memcpy(buf, body, (size_t)n + 1);
    return n;
}

int xs_write(const char *path, const char *value)
{
    return path_request(XS_WRITE, path, value, strlen(value)) < 0 ? -1 : 0;
}

int xs_directory(const char *path, char *buf, size_t cap)
{
    int n = path_request(XS_DIRECTORY, path, NULL, 0);
    if (n < 0)
        return -1;
    if ((size_t)n > cap)
        return fail("E2BIG");
    memcpy(buf, body, (size_t)n);
    int count = 0;
    for (int i = 0; i < n; i++)
        count += body[i] == 0;
    return count;
}

int xs_watch(const char *path, const char *token)
{
    return path_request(XS_WATCH, path, token, strlen(token) + 1) < 0 ? -1 : 0;
}

int xs_unwatch(const char *path, const char *token)
{
    return path_request(XS_UNWATCH, path, token, strlen(token) + 1) < 0 ? -1 : 0;
}

/* Copies the NUL-terminated string at s (within end) into dst; where the next one starts. */
static const char *copy_string(char *dst, size_t cap, const char *s, const char *end)
{
    size_t i = 0;
    while (s < end && *s) {
        if (i + 1 < cap)
            dst[i++] = *s;
        s++;
    }
    if (cap)
        dst[i] = 0;
    return s < end ? s + 1 : s;
}

int xs_watch_wait(char *path, size_t pcap, char *token, size_t tcap)
{
    if (xs_init() < 0)
        return -1;
    const char *s, *end;
    if (event_count) {
        s = events[event_head];
        end = s + event_len[event_head];
        event_head = (event_head + 1) % EVENTS;
        event_count--;
    } else if (events_lost) {
        events_lost = 0;
        s = end = "";
    } else {
        uint64_t deadline = lvm_monotonic_ns() + LVM_XS_TIMEOUT_NS;
        struct xs_header r;
        do {
            if (take(&r, deadline) < 0)
                return -1;
        } while (r.type != XS_WATCH_EVENT); /* a late reply to a call that timed out */
        s = body;
        end = body + r.len;
    }
    s = copy_string(path, pcap, s, end);
    copy_string(token, tcap, s, end);
    return 0;
}

/* ---- the frontend's state machine ---- */

static int set_state(const char *dir, int st, void (*seen)(const char *, int))
{
    char path[128], v[4];
    lvm_snprintf(path, sizeof path, "%s/state", dir);
    lvm_snprintf(v, sizeof v, "%d", st);
    if (xs_write(path, v) < 0)
        return -1;
    if (seen)
        seen("frontend", st);
    return 0;
}

/* Waits (on the watch of its state) until the backend is at least in state want. */
static int backend_reaches(const char *state_path, int want, void (*seen)(const char *, int))
{
    char v[8], p[8], t[8];
    for (;;) {
        long st = 0;
        /* A backend not there yet has no state: wait for it. */
        if (xs_read(state_path, v, sizeof v) >= 0 && lvm_parse_long(v, &st) == 0) {
            if (st >= XENBUS_STATE_CLOSING)
                return fail("ECONNRESET");
            if (st >= want) {
                if (seen)
                    seen("backend", (int)st);
                return 0;
            }
        } else if (strcmp(why, "ENOENT") != 0) {
            return -1;
        }
        if (xs_watch_wait(p, sizeof p, t, sizeof t) < 0)
            return -1;
    }
}

int xs_front_connect(const char *dir, unsigned ring_ref, unsigned event_channel,
                     void (*seen)(const char *who, int state))
{
    char path[128], backend[96], state_path[128], v[12];
    lvm_snprintf(path, sizeof path, "%s/backend", dir);
    if (xs_read(path, backend, sizeof backend) < 0)
        return -1;
    lvm_snprintf(state_path, sizeof state_path, "%s/state", backend);
    if (set_state(dir, XENBUS_STATE_INITIALISING, seen) < 0 || xs_watch(state_path, "be") < 0)
        return -1;
    if (backend_reaches(state_path, XENBUS_STATE_INIT_WAIT, seen) < 0)
        return -1;
    lvm_snprintf(path, sizeof path, "%s/ring-ref", dir);
    lvm_snprintf(v, sizeof v, "%u", ring_ref);
    if (xs_write(path, v) < 0)
        return -1;
    lvm_snprintf(path, sizeof path, "%s/event-channel", dir);
    lvm_snprintf(v, sizeof v, "%u", event_channel);
    if (xs_write(path, v) < 0 || set_state(dir, XENBUS_STATE_INITIALISED, seen) < 0)
        return -1;
    if (backend_reaches(state_path, XENBUS_STATE_CONNECTED, seen) < 0)
        return -1;
    if (set_state(dir, XENBUS_STATE_CONNECTED, seen) < 0)
        return -1;
    /* Events of the watch still in the ring are dropped with it by the store; any already here stay kept. */
    return xs_unwatch(state_path, "be");
}
