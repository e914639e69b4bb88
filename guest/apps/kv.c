/*
 * kv: a key-value store on TCP port 7070 that keeps its data on its virtio-
 * blk disk, so that a new VM on the same disk file finds it again. One
 * request a line, one answer a line:
 *   PUT key value  -> OK          (written to the disk before the answer)
 *   GET key        -> VALUE value | NONE
 *   FLUSH          -> OK          (the host makes the writes durable)
 * anything else    -> ERR <why>
 * Keys are 1..64 bytes without blanks, values up to 400 bytes. On the disk:
 * sector 0 is a header ("LVMKV1", the table size), then one sector per
 * slot of an open-addressed hash table (linear probing), each holding one
 * key and its value. A new disk is a file of zeros (truncate -s 1M kv.img).
 * Needs a network device and a disk.
 */
#include <lightvm/blk.h>
#include <lightvm/net.h>

#define PORT 7070
#define KEY_MAX 64
#define VAL_MAX 400
#define LINE_MAX (8 + KEY_MAX + VAL_MAX)
#define SLOTS_MAX 65536u

struct slot {
    uint16_t klen, vlen;
    char data[VIRTIO_BLK_SECTOR_SIZE - 4];
};

static struct slot sec __attribute__((aligned(512)));
static uint32_t slots;
static char line[TCP_MAX_CONNS][LINE_MAX + 1];
static uint16_t used[TCP_MAX_CONNS];

static char *find_char(char *s, char ch, size_t n)
{
    for (; n; n--, s++)
        if (*s == ch)
            return s;
    return NULL;
}

static uint32_t hash(const char *k, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    while (n--)
        h = (h ^ (uint8_t)*k++) * 16777619u;
    return h;
}

/* The slot of key, or the first free one on its probe path; -1 on a disk error or a full table. */
static long find(const char *k, size_t n)
{
    uint32_t s = hash(k, n) % slots;
    for (uint32_t i = 0; i < slots; i++, s = (s + 1) % slots) {
        if (lvm_blk_read(1 + s, &sec, sizeof sec) < 0)
            return -1;
        if (sec.klen == 0 || (sec.klen == n && memcmp(sec.data, k, n) == 0))
            return s;
    }
    return -1;
}

static void reply(struct tcp_conn *c, const char *s, size_t n) { tcp_send(c, s, n); }

static void ok(struct tcp_conn *c, int rc)
{
    if (rc == 0)
        reply(c, "OK\n", 3);
    else
        reply(c, "ERR disk\n", 9);
}

static void request(struct tcp_conn *c, char *l, size_t n)
{
    char *sp = find_char(l, ' ', n);
    size_t cmd = sp ? (size_t)(sp - l) : n;
    char *k = sp ? sp + 1 : l + n;
    char *end = l + n;
    char *ksp = find_char(k, ' ', (size_t)(end - k));
    size_t klen = (size_t)((ksp ? ksp : end) - k);
    if (cmd == 5 && memcmp(l, "FLUSH", 5) == 0) {
        ok(c, lvm_blk_flush());
        return;
    }
    int put = cmd == 3 && memcmp(l, "PUT", 3) == 0, get = cmd == 3 && memcmp(l, "GET", 3) == 0;
    if (!put && !get) {
        reply(c, "ERR unknown command\n", 20);
        return;
    }
    if (klen == 0 || klen > KEY_MAX || (get && ksp) || (put && !ksp)) {
        reply(c, "ERR bad key\n", 12);
        return;
    }
    size_t vlen = put ? (size_t)(end - ksp - 1) : 0;
    if (vlen > VAL_MAX) {
        reply(c, "ERR value too long\n", 19);
        return;
    }
    long s = find(k, klen);
    if (s < 0) {
        reply(c, "ERR disk\n", 9);
        return;
    }
    if (get) {
        if (sec.klen == 0) {
            reply(c, "NONE\n", 5);
            return;
        }
        reply(c, "VALUE ", 6);
        reply(c, sec.data + sec.klen, sec.vlen);
        reply(c, "\n", 1);
        return;
    }
    sec.klen = (uint16_t)klen;
    sec.vlen = (uint16_t)vlen;
    memcpy(sec.data, k, klen);
    memcpy(sec.data + klen, ksp + 1, vlen);
    ok(c, lvm_blk_write(1 + (uint64_t)s, &sec, sizeof sec));
}

static size_t kv_recv(struct tcp_conn *c, const uint8_t *data, size_t len)
{
    /* Take no more than the answers can carry: the rest comes again. */
    if (tcp_send_space(c) < LINE_MAX)
        return 0;
    char *l = line[c->index];
    size_t taken = 0;
    while (taken < len) {
        uint8_t b = data[taken++];
        if (b == '\n') {
            size_t n = used[c->index];
            if (n && l[n - 1] == '\r')
                n--;
            used[c->index] = 0;
            request(c, l, n);
            if (tcp_send_space(c) < LINE_MAX)
                break;
        } else if (used[c->index] < LINE_MAX) {
            l[used[c->index]++] = (char)b;
        } else {
            used[c->index] = 0;
            reply(c, "ERR line too long\n", 18);
            tcp_close(c);
            return len;
        }
    }
    return taken;
}

static void kv_open(struct tcp_conn *c) { used[c->index] = 0; }
static void kv_peer_closed(struct tcp_conn *c) { tcp_close(c); }

static const struct tcp_ops kv_ops = {.open = kv_open, .recv = kv_recv, .peer_closed = kv_peer_closed};

int main(void)
{
    int err = net_init();
    if (err) {
        net_perror("kv", err);
        return 1;
    }
    if (lvm_blk_init() < 0 || lvm_blk_sectors() < 2) {
        lvm_puts("kv: no disk\n");
        return 1;
    }
    /* A new disk (no header) gets an empty table; a known one is used as it is. */
    if (lvm_blk_read(0, &sec, sizeof sec) < 0)
        return 1;
    uint64_t n = lvm_blk_sectors() - 1;
    if (memcmp(&sec, "LVMKV1", 6) == 0) {
        memcpy(&slots, (char *)&sec + 8, 4);
    } else {
        slots = n < SLOTS_MAX ? (uint32_t)n : SLOTS_MAX;
        memset(&sec, 0, sizeof sec);
        memcpy(&sec, "LVMKV1", 6);
        memcpy((char *)&sec + 8, &slots, 4);
        if (lvm_blk_write(0, &sec, sizeof sec) < 0)
            return 1;
    }
    if (slots == 0 || slots > n) {
        lvm_puts("kv: the disk's table does not fit it\n");
        return 1;
    }
    tcp_listen(PORT, &kv_ops);
    lvm_printf("kv: serving on port %u, %u slots\n", PORT, slots);
    net_run();
}
