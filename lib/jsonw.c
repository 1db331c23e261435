/* jsonw: see jsonw.h. */
#include "jsonw.h"

#include <stdlib.h>
#include <string.h>

void jsonw_raw(struct jsonw *w, const char *s, size_t n)
{
    if (w->oom)
        return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 512;
        while (cap < w->len + n + 1)
            cap *= 2;
        char *p = realloc(w->p, cap);
        if (!p) {
            w->oom = 1;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = '\0';
}

void jsonw_puts(struct jsonw *w, const char *s)
{
    jsonw_raw(w, s, strlen(s));
}

void jsonw_string(struct jsonw *w, const char *s)
{
    if (!s)
        jsonw_raw(w, "null", 4);
    else
        jsonw_string_len(w, s, strlen(s));
}

void jsonw_string_len(struct jsonw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const char *run = s;
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    jsonw_raw(w, "\"", 1);
    for (; p < end; p++) {
        if (*p >= 0x20 && *p != '"' && *p != '\\')
            continue;
        jsonw_raw(w, run, (size_t)((const char *)p - run));
        run = (const char *)p + 1;
        char esc[7] = {'\\', (char)*p, 0};
        if (*p == '\n' || *p == '\r' || *p == '\t')
            esc[1] = *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
        else if (*p < 0x20)
            esc[1] = 'u', esc[2] = esc[3] = '0', esc[4] = hex[*p >> 4], esc[5] = hex[*p & 15];
        jsonw_puts(w, esc);
    }
    jsonw_raw(w, run, (size_t)((const char *)end - run));
    jsonw_raw(w, "\"", 1);
}

char *jsonw_take(struct jsonw *w)
{
    char *p = w->oom ? NULL : w->p;
    if (w->oom)
        free(w->p);
    if (p == NULL && !w->oom)
        p = strdup("");
    memset(w, 0, sizeof(*w));
    return p;
}
