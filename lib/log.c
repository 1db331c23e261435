/* log: structured log lines (see log.h). */
#include "log.h"
#include "jsonw.h"

#include <stdatomic.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int log_level_parse(const char *s, enum log_level *out)
{
    static const struct {
        const char *name;
        enum log_level lvl;
    } names[] = {
        {"debug", LOG_DEBUG},  {"info", LOG_INFO},   {"warn", LOG_WARN},
        {"warning", LOG_WARN}, {"error", LOG_ERROR},
    };
    if (!s)
        return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].lvl;
            return 0;
        }
    }
    return -1;
}

const char *log_level_name(enum log_level lvl)
{
    switch (lvl) {
    case LOG_DEBUG:
        return "debug";
    case LOG_INFO:
        return "info";
    case LOG_WARN:
        return "warn";
    case LOG_ERROR:
        return "error";
    }
    return "error";
}

int log_enabled(const struct log *lg, enum log_level lvl)
{
    return lg && (int)lvl >= atomic_load_explicit(&lg->level, memory_order_relaxed);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when the bytes there
 * are not one (overlong forms, surrogates and code points past U+10FFFF
 * included). */
static size_t utf8_seq_len(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        if (s[1] < lo || s[1] > hi || (s[2] & 0xc0) != 0x80)
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        if (s[1] < lo || s[1] > hi || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

/* Returns s when it is valid UTF-8; otherwise a malloc'd copy with every
 * bad byte replaced by U+FFFD, also stored in *tmp for the caller to free.
 * Values come from callers and gateways we do not control, and one bad byte
 * would make a JSON line unreadable for the log shipper. NULL when out of
 * memory. */
static const char *utf8_clean(const char *s, char **tmp)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, n;
    *tmp = NULL;
    while (u[i] && (n = utf8_seq_len(u + i)) > 0)
        i += n;
    if (!u[i])
        return s;
    struct jsonw b = {0};
    jsonw_raw(&b, s, i);
    while (u[i]) {
        n = utf8_seq_len(u + i);
        if (n) {
            jsonw_raw(&b, (const char *)u + i, n);
            i += n;
        } else {
            jsonw_puts(&b, "\xef\xbf\xbd");
            i++;
        }
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *tmp = b.p;
    return b.p;
}

/* "2026-11-21T22:31:06.123Z", UTC with milliseconds. */
static void log_timestamp(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    long ms = ts.tv_nsec / 1000000;
    out[n] = '.';
    out[n + 1] = (char)('0' + ms / 100);
    out[n + 2] = (char)('0' + ms / 10 % 10);
    out[n + 3] = (char)('0' + ms % 10);
    out[n + 4] = 'Z';
    out[n + 5] = '\0';
}

/* Keys the line itself uses get a "_" so a caller's pair cannot replace them. */
static const char *log_key(const char *key, char *buf, size_t buflen)
{
    if (strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "msg") == 0) {
        snprintf(buf, buflen, "_%s", key);
        return buf;
    }
    return key;
}

/* "key":"value" after the previous member, both cleaned to UTF-8. */
static void json_put_member(struct jsonw *b, const char *key, const char *val)
{
    char *tk, *tv;
    const char *ckey = utf8_clean(key, &tk), *cval = utf8_clean(val, &tv);
    if (!ckey || !cval) {
        b->oom = 1;
    } else {
        jsonw_raw(b, ",", 1);
        jsonw_string(b, ckey);
        jsonw_raw(b, ":", 1);
        jsonw_string(b, cval);
    }
    free(tk);
    free(tv);
}

/* Written member by member, not through json-c's objects: a line per
 * request, so its cost counts (issue 10). A key given twice appears
 * twice; callers do not. */
static void log_format_json(struct jsonw *b, const char *ts, enum log_level lvl, const char *msg,
                            va_list ap)
{
    char kbuf[64];
    jsonw_puts(b, "{\"ts\":\"");
    jsonw_puts(b, ts);
    jsonw_puts(b, "\",\"level\":\"");
    jsonw_puts(b, log_level_name(lvl));
    jsonw_raw(b, "\"", 1);
    json_put_member(b, "msg", msg ? msg : "");
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key)
            break;
        const char *val = va_arg(ap, const char *);
        if (val)
            json_put_member(b, log_key(key, kbuf, sizeof kbuf), val);
    }
    jsonw_raw(b, "}", 1);
}

/* Text lines: control characters are escaped so one event stays one line;
 * values are quoted (logfmt style) when they hold a space, '=', '"', '\' or
 * a control character, or are empty. */
static void text_put_escaped(struct jsonw *b, const char *s, int quote)
{
    char tmp_esc[8];
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '\n':
            jsonw_puts(b, "\\n");
            break;
        case '\r':
            jsonw_puts(b, "\\r");
            break;
        case '\t':
            jsonw_puts(b, "\\t");
            break;
        case '"':
        case '\\':
            if (quote)
                jsonw_raw(b, "\\", 1);
            jsonw_raw(b, (const char *)p, 1);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                snprintf(tmp_esc, sizeof tmp_esc, "\\x%02x", *p);
                jsonw_puts(b, tmp_esc);
            } else {
                jsonw_raw(b, (const char *)p, 1);
            }
        }
    }
}

static int text_needs_quotes(const char *s)
{
    if (!*s)
        return 1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '=' || *p == '\\')
            return 1;
    return 0;
}

static void text_put_clean(struct jsonw *b, const char *s, int quote)
{
    char *tmp;
    const char *clean = utf8_clean(s, &tmp);
    if (!clean) {
        b->oom = 1;
        return;
    }
    if (quote)
        jsonw_raw(b, "\"", 1);
    text_put_escaped(b, clean, quote);
    if (quote)
        jsonw_raw(b, "\"", 1);
    free(tmp);
}

static void log_format_text(struct jsonw *b, const char *ts, enum log_level lvl, const char *msg,
                            va_list ap)
{
    jsonw_puts(b, ts);
    jsonw_raw(b, " ", 1);
    jsonw_puts(b, log_level_name(lvl));
    jsonw_raw(b, " ", 1);
    text_put_clean(b, msg ? msg : "", 0);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key)
            break;
        const char *val = va_arg(ap, const char *);
        if (!val)
            continue;
        jsonw_raw(b, " ", 1);
        text_put_clean(b, key, 0);
        jsonw_raw(b, "=", 1);
        text_put_clean(b, val, text_needs_quotes(val));
    }
}

void log_vwrite(const struct log *lg, enum log_level lvl, const char *msg, va_list ap)
{
    if (!log_enabled(lg, lvl))
        return;
    char ts[32];
    struct jsonw b = {0};
    log_timestamp(ts);
    if (lg->json)
        log_format_json(&b, ts, lvl, msg, ap);
    else
        log_format_text(&b, ts, lvl, msg, ap);
    jsonw_raw(&b, "\n", 1);
    if (!b.oom) {
        FILE *out = lg->out ? lg->out : stderr;
        /* One fwrite under the lock, then flush, so a line is whole and
         * visible at once even when out is a pipe to a log collector. */
        flockfile(out);
        fwrite(b.p, 1, b.len, out);
        fflush(out);
        funlockfile(out);
    }
    free(b.p);
}

void log_write(const struct log *lg, enum log_level lvl, const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    log_vwrite(lg, lvl, msg, ap);
    va_end(ap);
}

/* Copies src into out like snprintf would: truncated, always terminated. */
static void copy_out(char *out, size_t outlen, const char *src)
{
    if (outlen)
        snprintf(out, outlen, "%s", src);
}

void log_mask_phone(const char *s, char *out, size_t outlen)
{
    if (!outlen)
        return;
    if (!s) {
        copy_out(out, outlen, "-");
        return;
    }
    size_t n = strlen(s);
    if (n >= 11)
        snprintf(out, outlen, "%.3s****%s", s, s + n - 4);
    else if (n >= 4)
        snprintf(out, outlen, "****%s", s + n - 2);
    else
        copy_out(out, outlen, "****");
}

void log_mask_token(const char *s, char *out, size_t outlen)
{
    if (!outlen)
        return;
    if (!s) {
        copy_out(out, outlen, "-");
        return;
    }
    size_t n = strlen(s);
    if (n >= 16)
        snprintf(out, outlen, "%.4s\xe2\x80\xa6(%zu)", s, n);
    else
        snprintf(out, outlen, "\xe2\x80\xa6(%zu)", n);
}
