/*
 * daytime: the RFC 867 service of the paper's daytime unikernel, without
 * the network for now: read WALLTIME once and print it in RFC 867 style,
 * "Saturday, November 28, 2026 19:47:07-UTC". With the command line "stay"
 * it prints nothing and waits, parked, until the host asks it to shut
 * down, as a daytime server waits for its first client: the idle guest of
 * the density benchmark (formatting the date costs ~2,500 emulated
 * instructions here, which a server spends per client, not at boot).
 */
#include <lightvm/lvm.h>

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

int main(void)
{
    if (strcmp(lvm_cmdline(), "stay") == 0)
        for (;;)
            lvm_poll(~0ull); /* returns only for devices; a shutdown request ends us inside */
    uint64_t secs = lvm_walltime_ns() / 1000000000ull;
    int64_t days = (int64_t)(secs / 86400);
    unsigned sod = (unsigned)(secs % 86400);
    int64_t year;
    unsigned month, day;
    civil_from_days(days, &year, &month, &day);
    lvm_printf("%s, %s %u, %ld %02u:%02u:%02u-UTC\n", weekdays[(days + 4) % 7], months[month - 1],
               day, year, sod / 3600, sod / 60 % 60, sod % 60);
    return 0;
}
