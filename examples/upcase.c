/*
 * upcase.c: a tiny TCP service. On port 7777 it greets each client, sends
 * every line back in capitals, and closes when the client does. It needs
 * a network device (a vif) and the TCP/IP stack (--net):
 *
 *   npx lightvm build --net examples/upcase.c -o upcase.elf
 *   cat > upcase.cfg <<'CFG'
 *   name = "upcase"
 *   kernel = "./upcase.elf"
 *   vif = [ 'ip=10.0.0.2/24,gateway=10.0.0.1' ]
 *   CFG
 *   npx lightvm create upcase.cfg && nc 10.0.0.2 7777
 */
#include <lightvm/net.h>

#define PORT 7777

static unsigned served;

static void on_open(struct tcp_conn *c)
{
    char line[64];
    int n = lvm_snprintf(line, sizeof line, "upcase: client %u, say something\r\n", ++served);
    tcp_send(c, line, (size_t)n);
}

/* Data comes straight from the frame; take only what fits in the send buffer. */
static size_t on_recv(struct tcp_conn *c, const uint8_t *data, size_t len)
{
    char out[512];
    size_t n = tcp_send_space(c);
    if (n > len)
        n = len;
    if (n > sizeof out)
        n = sizeof out;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(data[i] >= 'a' && data[i] <= 'z' ? data[i] - 'a' + 'A' : data[i]);
    return tcp_send(c, out, n);
}

static void on_peer_closed(struct tcp_conn *c) { tcp_close(c); }

static const struct tcp_ops upcase_ops = {
    .open = on_open,
    .recv = on_recv,
    .peer_closed = on_peer_closed,
};

int main(void)
{
    int err = net_init();
    if (err) {
        net_perror("upcase", err);
        return 1;
    }
    tcp_listen(PORT, &upcase_ops);
    lvm_printf("upcase: serving TCP port %u at %u.%u.%u.%u\n", PORT, NET_IP4(net_cfg.addr));
    net_run(); /* a shutdown request halts the guest cleanly */
}
