/*
 * vif_floor: a VM's network interface set-up as LightVM's executor does
 * it (src/vmm/net.ts NetDevice.create), in C, for bench net's vif_setup to
 * be compared with. Each iteration, timed: looks the bridge up by name,
 * opens /dev/net/tun and makes a tap (TUNSETIFF, IFF_TAP | IFF_NO_PI), looks
 * the tap up, and sends one RTM_NEWLINK on an already open rtnetlink socket
 * that attaches it to the bridge and sets it up, waiting for the ACK. Off
 * the clock, closing the fd removes the tap.
 * Prints per-iteration times in milliseconds: {"samples_ms":[...]}.
 *
 * usage: vif_floor BRIDGE [iterations (default 100)]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "vif_floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* RTM_NEWLINK: link index up, master = bridge; waits for the ACK. */
static void attach_and_up(int nl, unsigned index, unsigned master, unsigned seq)
{
    struct {
        struct nlmsghdr h;
        struct ifinfomsg i;
        struct rtattr a;
        uint32_t master;
    } req = {
        .h = {.nlmsg_len = sizeof req, .nlmsg_type = RTM_NEWLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK, .nlmsg_seq = seq},
        .i = {.ifi_family = AF_UNSPEC, .ifi_index = (int)index, .ifi_flags = IFF_UP, .ifi_change = IFF_UP},
        .a = {.rta_len = RTA_LENGTH(sizeof(uint32_t)), .rta_type = IFLA_MASTER},
        .master = master,
    };
    if (send(nl, &req, sizeof req, 0) != (ssize_t)sizeof req)
        die("send RTM_NEWLINK");
    char buf[4096];
    for (;;) {
        ssize_t n = recv(nl, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("recv");
        }
        struct nlmsghdr *h = (struct nlmsghdr *)buf;
        if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR)
            continue;
        int err = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
        if (err) {
            errno = -err;
            die("RTM_NEWLINK (attach to the bridge, up)");
        }
        return;
    }
}

int main(int argc, char **argv)
{
    char *end = NULL;
    long n = argc > 2 ? strtol(argv[2], &end, 10) : 100;
    if (argc < 2 || argc > 3 || n <= 0 || (end && *end) || strlen(argv[1]) >= IFNAMSIZ) {
        fprintf(stderr, "usage: vif_floor BRIDGE [iterations]\n");
        return 2;
    }
    const char *bridge = argv[1];
    int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (nl < 0)
        die("socket(AF_NETLINK)");
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (bind(nl, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind(AF_NETLINK)");
    double *samples = calloc((size_t)n, sizeof *samples);
    if (!samples)
        die("calloc");
    for (long i = 0; i < n; i++) {
        double t0 = now_ms();
        unsigned master = if_nametoindex(bridge);
        if (!master) {
            fprintf(stderr, "vif_floor: bridge \"%s\" does not exist\n", bridge);
            return 1;
        }
        int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            die("/dev/net/tun");
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        snprintf(ifr.ifr_name, IFNAMSIZ, "lvfloor%ld", i % 1000);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
        if (ioctl(fd, TUNSETIFF, &ifr) < 0)
            die("TUNSETIFF");
        unsigned index = if_nametoindex(ifr.ifr_name);
        if (!index)
            die("if_nametoindex(tap)");
        attach_and_up(nl, index, master, (unsigned)i + 1);
        samples[i] = now_ms() - t0;
        close(fd);
    }
    printf("{\"samples_ms\":[");
    for (long i = 0; i < n; i++)
        printf("%s%.4f", i ? "," : "", samples[i]);
    printf("]}\n");
    return 0;
}
