/*
 * printf.c: a small printf. Conversions %s %c %d %i %u %x %X %p %%; sizes
 * l, ll, z; flags 0 and -; a field width; a precision for %s (also .*).
 * lvm_printf formats into a stack buffer and writes it with one console
 * write per 256 bytes.
 */
#include <lightvm/lvm.h>

struct out {
    char *buf;
    size_t cap;    /* usable bytes in buf */
    size_t n;      /* bytes in buf */
    size_t total;  /* bytes produced */
    int console;   /* flush to the console when full */
};

static void put(struct out *o, char c)
{
    if (o->n == o->cap) {
        if (!o->console) {
            o->total++;
            return;
        }
        lvm_console_write(o->buf, o->n);
        o->n = 0;
    }
    o->buf[o->n++] = c;
    o->total++;
}

static void pad(struct out *o, char c, int n)
{
    while (n-- > 0)
        put(o, c);
}

static void number(struct out *o, uint64_t v, int neg, unsigned base, int upper, int width,
                   int zero, int left)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    int len = n + neg;
    if (!left && !zero)
        pad(o, ' ', width - len);
    if (neg)
        put(o, '-');
    if (!left && zero)
        pad(o, '0', width - len);
    while (n)
        put(o, tmp[--n]);
    if (left)
        pad(o, ' ', width - len);
}

static void format(struct out *o, const char *f, va_list ap)
{
    for (; *f; f++) {
        if (*f != '%') {
            put(o, *f);
            continue;
        }
        f++;
        int zero = 0, left = 0, width = 0, prec = -1, size = 0;
        for (;; f++) {
            if (*f == '0')
                zero = 1;
            else if (*f == '-')
                left = 1;
            else
                break;
        }
        if (*f == '*') {
            width = va_arg(ap, int);
            f++;
        } else {
            while (*f >= '0' && *f <= '9')
                width = width * 10 + (*f++ - '0');
        }
        if (*f == '.') {
            f++;
            prec = 0;
            if (*f == '*') {
                prec = va_arg(ap, int);
                f++;
            } else {
                while (*f >= '0' && *f <= '9')
                    prec = prec * 10 + (*f++ - '0');
            }
        }
        while (*f == 'l' || *f == 'z') {
            size++;
            f++;
        }
        switch (*f) {
        case 'd':
        case 'i': {
            int64_t v = size ? va_arg(ap, int64_t) : va_arg(ap, int);
            number(o, v < 0 ? -(uint64_t)v : (uint64_t)v, v < 0, 10, 0, width, zero, left);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v = size ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            number(o, v, 0, *f == 'u' ? 10 : 16, *f == 'X', width, zero, left);
            break;
        }
        case 'p':
            put(o, '0');
            put(o, 'x');
            number(o, (uint64_t)(uintptr_t)va_arg(ap, void *), 0, 16, 0, width, zero, left);
            break;
        case 'c': {
            char c = (char)va_arg(ap, int);
            if (!left)
                pad(o, ' ', width - 1);
            put(o, c);
            if (left)
                pad(o, ' ', width - 1);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int len = 0;
            while (s[len] && (prec < 0 || len < prec))
                len++;
            if (!left)
                pad(o, ' ', width - len);
            for (int i = 0; i < len; i++)
                put(o, s[i]);
            if (left)
                pad(o, ' ', width - len);
            break;
        }
        case '%':
            put(o, '%');
            break;
        case '\0':
            return;
        default: /* unknown: print it as written */
            put(o, '%');
            put(o, *f);
        }
    }
}

int lvm_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = {.buf = buf, .cap = size ? size - 1 : 0};
    format(&o, fmt, ap);
    if (size)
        buf[o.n] = '\0';
    return (int)o.total;
}

int lvm_snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = lvm_vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int lvm_printf(const char *fmt, ...)
{
    char buf[256];
    struct out o = {.buf = buf, .cap = sizeof buf, .console = 1};
    va_list ap;
    va_start(ap, fmt);
    format(&o, fmt, ap);
    va_end(ap);
    if (o.n)
        lvm_console_write(buf, o.n);
    return (int)o.total;
}
