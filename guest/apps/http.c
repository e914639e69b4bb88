/*
 * http: a tiny HTTP/1.1 server on TCP port 80. GET / (or /index.html)
 * answers 200 with a fixed page, another path 404, another method 405; HEAD
 * works too. Every reply carries Content-Type, Content-Length and
 * "Connection: close", and we close after it (no keep-alive, no pipelining).
 * The request is gathered per connection up to 1 KiB (a longer head gets
 * 431). Replies are built on first use, so that boot stays short. Answers
 * ping. Needs a network device; the address is ip=A.B.C.D/N gw=A.B.C.D or
 * the device page's.
 */
#include <lightvm/net.h>

#define REQ_MAX 1024

static const char page[] =
    "<!DOCTYPE html>\n"
    "<html><head><title>LightVM</title></head>\n"
    "<body><h1>Hello from LightVM</h1><p>A tiny HTTP server in a unikernel.</p></body></html>\n";
static const char page_404[] = "<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>\n";
static const char page_405[] = "<!DOCTYPE html>\n<html><body><h1>405 Method Not Allowed</h1></body></html>\n";
static const char page_431[] =
    "<!DOCTYPE html>\n<html><body><h1>431 Request Header Fields Too Large</h1></body></html>\n";

/* A reply, built on first use (in bss: the image carries no copy): the head, then the body. */
struct reply {
    const char *status, *extra, *body;
    size_t head, len;
    char *text; /* 512 bytes */
};
static char texts[4][512];
static struct reply r200 = {"200 OK", "", page, 0, 0, texts[0]};
static struct reply r404 = {"404 Not Found", "", page_404, 0, 0, texts[1]};
static struct reply r405 = {"405 Method Not Allowed", "Allow: GET, HEAD\r\n", page_405, 0, 0, texts[2]};
static struct reply r431 = {"431 Request Header Fields Too Large", "", page_431, 0, 0, texts[3]};

static char *put(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static void build(struct reply *r)
{
    static const char ct[] = "\r\nContent-Type: text/html\r\nContent-Length: ";
    static const char conn[] = "\r\nConnection: close\r\nServer: LightVM\r\n";
    size_t blen = strlen(r->body);
    char digits[8], *d = digits + sizeof digits;
    size_t v = blen;
    do
        *--d = (char)('0' + v % 10);
    while (v /= 10);
    char *p = put(r->text, "HTTP/1.1 ");
    p = put(p, r->status);
    p = put(p, ct);
    memcpy(p, d, (size_t)(digits + sizeof digits - d));
    p += digits + sizeof digits - d;
    p = put(p, conn);
    p = put(p, r->extra);
    p = put(p, "\r\n");
    r->head = (size_t)(p - r->text);
    memcpy(p, r->body, blen);
    r->len = r->head + blen;
}

static struct {
    uint16_t len;
    uint8_t done;
    char buf[REQ_MAX];
} req[TCP_MAX_CONNS];

static void send_reply(struct tcp_conn *c, struct reply *r, int head_only)
{
    if (!r->len)
        build(r);
    tcp_send(c, r->text, head_only ? r->head : r->len);
    tcp_close(c);
}

static int word_is(const char *s, size_t n, const char *w)
{
    return strlen(w) == n && memcmp(s, w, n) == 0;
}

static void answer(struct tcp_conn *c, const char *b, size_t n)
{
    size_t m = 0;
    while (m < n && b[m] != ' ')
        m++;
    size_t ps = m + 1, pe = ps;
    while (pe < n && b[pe] != ' ' && b[pe] != '?' && b[pe] != '\r' && b[pe] != '\n')
        pe++;
    int head = word_is(b, m, "HEAD");
    if (!head && !word_is(b, m, "GET"))
        send_reply(c, &r405, 0);
    else if (ps < n && (word_is(b + ps, pe - ps, "/") || word_is(b + ps, pe - ps, "/index.html")))
        send_reply(c, &r200, head);
    else
        send_reply(c, &r404, head);
}

/* Does the head end (an empty line: "\r\n\r\n", or "\n\n" when typed by
 * hand) in b[0..n)? Only bytes from old on are new. Usually the request is
 * all there and ends with it: check the tail before scanning. */
static int head_complete(const char *b, size_t old, size_t n)
{
    uint32_t tail;
    if (n >= 4) {
        memcpy(&tail, b + n - 4, 4);
        if (tail == 0x0a0d0a0du || (tail >> 16) == 0x0a0au)
            return 1;
    }
    for (size_t i = old > 2 ? old - 2 : 0; i < n; i++) {
        if (b[i] != '\n')
            continue;
        if ((i + 1 < n && b[i + 1] == '\n') || (i + 2 < n && b[i + 1] == '\r' && b[i + 2] == '\n'))
            return 1;
    }
    return 0;
}

static void http_open(struct tcp_conn *c)
{
    req[c->index].len = 0;
    req[c->index].done = 0;
}

static size_t http_recv(struct tcp_conn *c, const uint8_t *data, size_t len)
{
    typeof(&req[0]) r = &req[c->index];
    if (r->done)
        return len; /* after the reply: ignored */
    size_t old = r->len, n = len;
    if (n > REQ_MAX - old)
        n = REQ_MAX - old;
    memcpy(r->buf + old, data, n);
    r->len = (uint16_t)(old + n);
    if (head_complete(r->buf, old, r->len)) {
        r->done = 1;
        answer(c, r->buf, r->len);
        return len;
    }
    if (r->len == REQ_MAX) {
        r->done = 1;
        send_reply(c, &r431, 0);
    }
    return len;
}

static void http_peer_closed(struct tcp_conn *c)
{
    if (!req[c->index].done)
        tcp_close(c); /* gave up before a whole request */
}

static const struct tcp_ops http_ops = {
    .open = http_open,
    .recv = http_recv,
    .peer_closed = http_peer_closed,
};

int main(void)
{
    int err = net_init();
    if (err) {
        net_perror("http", err);
        return 1;
    }
    tcp_listen(80, &http_ops);
    lvm_puts("http: serving on port 80\n");
    net_run();
}
