/*
 * echo: RFC 862 on TCP and UDP port 7. TCP: every byte comes back until the
 * client closes, then we close. The receive window is the room left in the
 * connection's send buffer, so nothing taken ever has to be dropped. UDP:
 * each datagram goes back to its sender. Answers ping. Needs a network
 * device; the address is ip=A.B.C.D/N gw=A.B.C.D or the device page's.
 */
#include <lightvm/net.h>

static size_t echo_recv(struct tcp_conn *c, const uint8_t *data, size_t len)
{
    return tcp_send(c, data, len);
}

static void echo_peer_closed(struct tcp_conn *c) { tcp_close(c); }

static size_t echo_window(struct tcp_conn *c) { return tcp_send_space(c); }

static const struct tcp_ops echo_ops = {
    .recv = echo_recv,
    .peer_closed = echo_peer_closed,
    .window = echo_window,
};

static void echo_udp(uint32_t src, uint16_t sport, uint16_t dport, const uint8_t *data, size_t len)
{
    udp_sendto(dport, src, sport, data, len);
}

int main(void)
{
    int err = net_init();
    if (err) {
        net_perror("echo", err);
        return 1;
    }
    tcp_listen(7, &echo_ops);
    udp_bind(7, echo_udp);
    lvm_puts("echo: serving TCP and UDP on port 7\n");
    net_run();
}
