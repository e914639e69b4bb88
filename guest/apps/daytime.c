/*
 * daytime: the RFC 867 service of the paper's daytime unikernel.
 *
 * With a network device (the first NOXS_DEV_NET of the device page) it
 * serves TCP port 13 forever: each connection gets one line,
 * "Saturday, November 28, 2026 19:47:07-UTC\r\n", and is closed by us; it
 * answers ping; a shutdown request ends it. The address comes from
 * ip=A.B.C.D/N gw=A.B.C.D on the command line, else from the device page.
 *
 * Without one, as before: read WALLTIME once and print the line (with
 * "\n"), then exit 0. With the command line "stay" it prints nothing and
 * waits, parked, until the host asks it to shut down, as a daytime server
 * waits for its first client: the idle guest of the density benchmark.
 * The date is formatted by hand (~200 emulated instructions, not the
 * ~2,500 of printf), since a server pays it per client.
 */
#include <lightvm/net.h>

static const char *const weekdays[7] = {
    "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
};
static const char *const months[12] = {
    "January", "February", "March",     "April",   "May",      "June",
    "July",    "August",   "September", "October", "November", "December",
};

/* Civil (proleptic Gregorian) date of a day count since 1970-01-01 (H. Hinnant). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static char *put_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *put_2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

/* "Weekday, Month D, YYYY HH:MM:SS-UTC" then eol; returns the length. */
static size_t format_date(char *buf, uint64_t secs, const char *eol)
{
    int64_t days = (int64_t)(secs / 86400);
    unsigned sod = (unsigned)(secs % 86400);
    int64_t year;
    unsigned month, day;
    civil_from_days(days, &year, &month, &day);
    char *p = put_str(buf, weekdays[(days + 4) % 7]);
    p = put_str(p, ", ");
    p = put_str(p, months[month - 1]);
    *p++ = ' ';
    if (day >= 10)
        *p++ = (char)('0' + day / 10);
    *p++ = (char)('0' + day % 10);
    p = put_str(p, ", ");
    uint64_t y = year < 0 ? (uint64_t)-year : (uint64_t)year;
    if (year < 0)
        *p++ = '-';
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + y % 10);
        y /= 10;
    } while (y);
    while (n)
        *p++ = digits[--n];
    *p++ = ' ';
    p = put_2(p, sod / 3600);
    *p++ = ':';
    p = put_2(p, sod / 60 % 60);
    *p++ = ':';
    p = put_2(p, sod % 60);
    p = put_str(p, "-UTC");
    p = put_str(p, eol);
    return (size_t)(p - buf);
}

static void daytime_open(struct tcp_conn *c)
{
    static char line[64];
    static size_t len;
    static uint64_t line_secs = ~0ull;
    uint64_t secs = lvm_walltime_ns() / 1000000000ull;
    if (secs != line_secs) { /* format once per second */
        len = format_date(line, secs, "\r\n");
        line_secs = secs;
    }
    tcp_send(c, line, len);
    tcp_close(c);
}

static const struct tcp_ops daytime_ops = {.open = daytime_open};

static int serve(void)
{
    int err = net_init();
    if (err) {
        net_perror("daytime", err);
        return 1;
    }
    tcp_listen(13, &daytime_ops);
    lvm_puts("daytime: serving RFC 867 on port 13\n");
    net_run();
}

int main(void)
{
    if (lvm_net_device())
        return serve();
    if (strcmp(lvm_cmdline(), "stay") == 0)
        for (;;)
            lvm_poll(~0ull); /* returns only for devices; a shutdown request ends us inside */
    char line[64];
    lvm_console_write(line, format_date(line, lvm_walltime_ns() / 1000000000ull, "\n"));
    return 0;
}
