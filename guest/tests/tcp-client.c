/*
 * tcp-client: an active open. Command line: connect=A.B.C.D:PORT
 * [msg=WORD] [ip=A.B.C.D/N gw=A.B.C.D]. Connects, sends WORD (default
 * "hello") and "\n", prints "reply: <what came back up to the first
 * newline>", closes, waits for the close to finish and prints "closed".
 * Exits 0, or 1 on an error (printed), 2 after 10 s without an end.
 */
#include <lightvm/net.h>

static char msg[128];
static size_t msg_len;
static char reply[1024];
static size_t reply_len;
static int printed, done, result = -1;

static void print_reply(void)
{
    if (printed)
        return;
    printed = 1;
    lvm_printf("reply: %.*s", (int)reply_len, reply);
    if (!reply_len || reply[reply_len - 1] != '\n')
        lvm_puts("\n");
}

static void client_open(struct tcp_conn *c)
{
    lvm_printf("connected from port %u\n", net_ntohs((uint16_t)(c->key >> 48)));
    tcp_send(c, msg, msg_len);
}

static size_t client_recv(struct tcp_conn *c, const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (printed)
            break;
        if (reply_len < sizeof reply)
            reply[reply_len++] = (char)data[i];
        if (data[i] == '\n') {
            print_reply();
            tcp_close(c);
        }
    }
    return len;
}

static void client_peer_closed(struct tcp_conn *c)
{
    print_reply();
    tcp_close(c);
}

static void client_closed(struct tcp_conn *c, int err)
{
    (void)c;
    done = 1;
    result = err;
}

static const struct tcp_ops client_ops = {
    .open = client_open,
    .recv = client_recv,
    .peer_closed = client_peer_closed,
    .closed = client_closed,
};

int main(void)
{
    int err = net_init();
    if (err) {
        lvm_printf("tcp-client: %s\n", net_strerror(err));
        return 1;
    }
    size_t n;
    const char *to = lvm_cmdline_get("connect", &n);
    size_t colon = 0;
    while (to && colon < n && to[colon] != ':')
        colon++;
    uint32_t addr;
    long port;
    char portbuf[8];
    if (!to || colon == n || n - colon - 1 >= sizeof portbuf ||
        net_parse_ipv4(to, colon, &addr) < 0) {
        lvm_puts("tcp-client: give connect=A.B.C.D:PORT\n");
        return 1;
    }
    memcpy(portbuf, to + colon + 1, n - colon - 1);
    portbuf[n - colon - 1] = 0;
    if (lvm_parse_long(portbuf, &port) < 0 || port < 1 || port > 65535) {
        lvm_puts("tcp-client: bad port\n");
        return 1;
    }
    const char *m = lvm_cmdline_get("msg", &n);
    if (!m) {
        m = "hello";
        n = 5;
    }
    if (n > sizeof msg - 1)
        n = sizeof msg - 1;
    memcpy(msg, m, n);
    msg[n] = '\n';
    msg_len = n + 1;

    struct tcp_conn *c = tcp_connect(addr, (uint16_t)port, &client_ops, NULL);
    if (!c) {
        lvm_puts("tcp-client: no route or no free connection\n");
        return 1;
    }
    uint64_t deadline = net_now() + 10000000000ull;
    while (!done && net_now() < deadline)
        net_step(deadline - net_now());
    if (!done) {
        print_reply();
        lvm_puts("tcp-client: timed out\n");
        return 2;
    }
    static const char *const why[] = {"closed", "reset by peer", "timed out", "refused"};
    print_reply();
    lvm_printf("%s\n", why[result & 3]);
    return result ? 1 : 0;
}
