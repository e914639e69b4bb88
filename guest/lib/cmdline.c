/* cmdline.c: the command line as blank-separated words and key=value pairs. */
#include <lightvm/lvm.h>

static int blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The first word "key=..." (with_value: returns its value) or "key". */
static const char *find_word(const char *key, size_t klen, int with_value, size_t *vlen)
{
    const char *s = lvm_cmdline();
    for (;;) {
        while (blank(*s))
            s++;
        if (!*s)
            return NULL;
        const char *w = s;
        while (*s && !blank(*s))
            s++;
        size_t n = (size_t)(s - w);
        if (with_value) {
            if (n > klen && w[klen] == '=' && memcmp(w, key, klen) == 0) {
                *vlen = n - klen - 1;
                return w + klen + 1;
            }
        } else if (n == klen && memcmp(w, key, klen) == 0) {
            return w;
        }
    }
}

const char *lvm_cmdline_get(const char *key, size_t *len)
{
    size_t n;
    const char *v = find_word(key, strlen(key), 1, &n);
    if (v && len)
        *len = n;
    return v;
}

int lvm_cmdline_has(const char *word)
{
    return find_word(word, strlen(word), 0, NULL) != NULL;
}
