/* parse.c: decimal numbers from the command line. */
#include <lightvm/lvm.h>

static int blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int lvm_parse_long(const char *s, long *out)
{
    while (blank(*s))
        s++;
    int neg = 0;
    if (*s == '-' || *s == '+')
        neg = *s++ == '-';
    if (*s < '0' || *s > '9')
        return -1;
    unsigned long v = 0;
    while (*s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s++ - '0');
        if (v > (0x7fffffffffffffffull - d) / 10)
            return -1; /* overflow */
        v = v * 10 + d;
    }
    while (blank(*s))
        s++;
    if (*s)
        return -1;
    *out = neg ? -(long)v : (long)v;
    return 0;
}
