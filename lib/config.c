/* config: defaults, INI file, CARDGATE_* environment (see config.h). */
#include "config.h"

#include "alipay_aes.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#include <ini.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define CONFIG_DEFAULT_GATEWAY "https://openapi.alipay.com/gateway.do"
#define CONFIG_MAX_WORKERS 256
#define CONFIG_DB_TOTAL 32 /* database connections of one instance, by default */

struct setting;
/* Applies value v (non-empty) of setting s to c. `cont` is 1 when v is an
 * INI continuation line of the same key. Returns 0, or -1 with the reason in
 * err, already prefixed with the variable's name. */
typedef int (*setting_fn)(struct config *c, const struct setting *s, const char *v, int cont,
                          char *err, size_t errlen);

struct setting {
    const char *env;     /* CARDGATE_... */
    const char *section; /* INI section */
    const char *key;     /* INI key */
    setting_fn set;
    size_t off;    /* the field in struct config, for the generic setters */
    long min, max; /* bounds, for the numeric setters */
};

/* Writes "VAR: reason" into err. */
__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen,
                                                      const struct setting *s, const char *fmt, ...)
{
    char reason[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (errlen)
        snprintf(err, errlen, "%s: %s", s->env, reason);
    return -1;
}

/* A value shown back in a message: printable ASCII only, at most 40
 * characters, so an error line stays one short line. Only used for values
 * that are not secret. */
static const char *shown(const char *v, char out[48])
{
    size_t i = 0;
    for (; v[i] && i < 40; i++)
        out[i] = (v[i] >= 0x20 && v[i] < 0x7f && v[i] != '"') ? v[i] : '?';
    out[i] = '\0';
    if (v[i])
        strcpy(out + 37, "...");
    return out;
}

static int parse_long(const char *v, long *out)
{
    char *end;
    if (!((*v >= '0' && *v <= '9') || (*v == '-' && v[1] >= '0' && v[1] <= '9')))
        return -1;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end)
        return -1;
    *out = n;
    return 0;
}

static int set_number(const struct setting *s, const char *v, long *n, char *err, size_t errlen)
{
    char buf[48];
    if (parse_long(v, n) != 0 || *n < s->min || *n > s->max)
        return fail(err, errlen, s, "must be an integer from %ld to %ld (got \"%s\")", s->min,
                    s->max, shown(v, buf));
    return 0;
}

static int set_int(struct config *c, const struct setting *s, const char *v, int cont, char *err,
                   size_t errlen)
{
    long n = 0;
    if (set_number(s, v, &n, err, errlen) != 0)
        return -1;
    *(int *)(void *)((char *)c + s->off) = (int)n;
    return 0;
}

static int set_long(struct config *c, const struct setting *s, const char *v, int cont, char *err,
                    size_t errlen)
{
    long n = 0;
    if (set_number(s, v, &n, err, errlen) != 0)
        return -1;
    *(long *)(void *)((char *)c + s->off) = n;
    return 0;
}

static int replace_string(struct config *c, const struct setting *s, const char *v, char *err,
                          size_t errlen)
{
    char **field = (char **)(void *)((char *)c + s->off);
    char *copy = strdup(v);
    if (!copy)
        return fail(err, errlen, s, "out of memory");
    free(*field);
    *field = copy;
    return 0;
}

/* Key files and the CA bundle: any path; whether it can be read is checked
 * by whoever opens it, with its own message. */
static int set_path(struct config *c, const struct setting *s, const char *v, int cont, char *err,
                    size_t errlen)
{
    return replace_string(c, s, v, err, errlen);
}

/* A secret is never quoted back; it only has to be long enough. */
static int set_secret(struct config *c, const struct setting *s, const char *v, int cont, char *err,
                      size_t errlen)
{
    if (strlen(v) < 16) {
        snprintf(err, errlen, "%s: must be at least 16 characters", s->env);
        return -1;
    }
    return replace_string(c, s, v, err, errlen);
}

/* Alipay's AES key: checked as one (base64 of 16, 24 or 32 bytes) and
 * never quoted back. */
static int set_encrypt_key(struct config *c, const struct setting *s, const char *v, int cont,
                           char *err, size_t errlen)
{
    char why[160];
    struct alipay_aes *a = alipay_aes_new(v, why, sizeof(why));
    if (!a) {
        snprintf(err, errlen, "%s: %s", s->env, why);
        return -1;
    }
    alipay_aes_free(a);
    return replace_string(c, s, v, err, errlen);
}

/* libpq's own parser, so a typo shows at start rather than at the first
 * connect. Its message is not copied: it can quote parts of a password. */
static int set_database_url(struct config *c, const struct setting *s, const char *v, int cont,
                            char *err, size_t errlen)
{
    char *pqerr = NULL;
    PQconninfoOption *opts = PQconninfoParse(v, &pqerr);
    if (!opts) {
        int oom = pqerr == NULL;
        PQfreemem(pqerr);
        if (oom)
            return fail(err, errlen, s, "out of memory");
        return fail(err, errlen, s,
                    "not a valid libpq connection string (host=... dbname=...) or URI "
                    "(postgresql://...)");
    }
    PQconninfoFree(opts);
    return replace_string(c, s, v, err, errlen);
}

static int set_gateway(struct config *c, const struct setting *s, const char *v, int cont,
                       char *err, size_t errlen)
{
    char buf[48];
    size_t skip = strncasecmp(v, "https://", 8) == 0  ? 8
                  : strncasecmp(v, "http://", 7) == 0 ? 7
                                                      : 0;
    if (!skip || !v[skip] || v[skip] == '/' || strpbrk(v, " \t\r\n"))
        return fail(err, errlen, s, "must be an http:// or https:// URL (got \"%s\")",
                    shown(v, buf));
    return replace_string(c, s, v, err, errlen);
}

/* The service's public address, where Alipay sends members back: an
 * http(s) URL, kept without a trailing '/' (paths are appended to it). */
static int set_public_url(struct config *c, const struct setting *s, const char *v, int cont,
                          char *err, size_t errlen)
{
    char buf[48];
    size_t skip = strncasecmp(v, "https://", 8) == 0  ? 8
                  : strncasecmp(v, "http://", 7) == 0 ? 7
                                                      : 0;
    if (!skip || !v[skip] || v[skip] == '/' || strpbrk(v, " \t\r\n?#") || strlen(v) > 400)
        return fail(err, errlen, s,
                    "must be the http:// or https:// address members reach cardgate at, "
                    "without ? or # (got \"%s\")",
                    shown(v, buf));
    if (replace_string(c, s, v, err, errlen) < 0)
        return -1;
    size_t n = strlen(c->public_url);
    while (n > skip && c->public_url[n - 1] == '/')
        c->public_url[--n] = '\0';
    return 0;
}

static int set_app_id(struct config *c, const struct setting *s, const char *v, int cont, char *err,
                      size_t errlen)
{
    char buf[48];
    size_t n = strlen(v);
    int ok = n <= 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = v[i] > 0x20 && v[i] < 0x7f;
    if (!ok)
        return fail(err, errlen, s,
                    "must be up to 64 printable characters without spaces (got \"%s\")",
                    shown(v, buf));
    return replace_string(c, s, v, err, errlen);
}

static int set_sign_type(struct config *c, const struct setting *s, const char *v, int cont,
                         char *err, size_t errlen)
{
    char buf[48];
    if (alipay_sign_type_parse(v, &c->alipay_sign_type) != 0)
        return fail(err, errlen, s, "must be RSA2 or RSA (got \"%s\")", shown(v, buf));
    return 0;
}

static int set_log_level(struct config *c, const struct setting *s, const char *v, int cont,
                         char *err, size_t errlen)
{
    char buf[48];
    if (log_level_parse(v, &c->log_level) != 0)
        return fail(err, errlen, s, "must be debug, info, warn or error (got \"%s\")",
                    shown(v, buf));
    return 0;
}

static int set_log_format(struct config *c, const struct setting *s, const char *v, int cont,
                          char *err, size_t errlen)
{
    char buf[48];
    if (strcasecmp(v, "json") == 0)
        c->log_json = 1;
    else if (strcasecmp(v, "text") == 0)
        c->log_json = 0;
    else
        return fail(err, errlen, s, "must be json or text (got \"%s\")", shown(v, buf));
    return 0;
}

static int host_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_';
}

/* "host:port", "[v6]:port" or ":port" (all addresses). */
static int set_listen(struct config *c, const struct setting *s, const char *v, int cont, char *err,
                      size_t errlen)
{
    char buf[48], host[64];
    const char *port;
    size_t hlen;
    long p;
    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        struct in6_addr a6;
        hlen = close ? (size_t)(close - v - 1) : 0;
        if (!close || close[1] != ':' || hlen == 0 || hlen >= sizeof host)
            goto bad;
        memcpy(host, v + 1, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET6, host, &a6) != 1)
            return fail(err, errlen, s, "\"%s\" is not an IPv6 address", shown(host, buf));
        port = close + 2;
    } else {
        const char *colon = strrchr(v, ':');
        if (!colon)
            goto bad;
        hlen = (size_t)(colon - v);
        if (memchr(v, ':', hlen))
            return fail(err, errlen, s,
                        "an IPv6 address goes in brackets, e.g. [::1]:8080 (got \"%s\")",
                        shown(v, buf));
        if (hlen >= sizeof host)
            goto bad;
        for (size_t i = 0; i < hlen; i++)
            if (!host_char_ok(v[i]))
                goto bad;
        memcpy(host, v, hlen);
        host[hlen] = '\0';
        if (hlen == 0)
            strcpy(host, "0.0.0.0");
        port = colon + 1;
    }
    if (parse_long(port, &p) != 0 || p < 1 || p > 65535)
        return fail(err, errlen, s, "the port must be an integer from 1 to 65535 (got \"%s\")",
                    shown(v, buf));
    /* CARDGATE_LISTEN, or the ops listener's address (the setting's off). */
    char *dst = s->off ? (char *)c + s->off : c->listen_host;
    memcpy(dst, host, strlen(host) + 1);
    *(s->off ? &c->ops_port : &c->listen_port) = (int)p;
    return 0;
bad:
    return fail(err, errlen, s, "must be host:port or [ipv6]:port, e.g. 0.0.0.0:8080 (got \"%s\")",
                shown(v, buf));
}

static int hex_nibble(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int api_key_name_ok(const char *name, size_t n)
{
    if (n < 1 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
              (name[i] >= '0' && name[i] <= '9') || name[i] == '_' || name[i] == '.' ||
              name[i] == '-'))
            return 0;
    return 1;
}

/* One "name:sha256hex" entry (already trimmed, n bytes) into k; pos is its
 * 1-based place in the whole list, for the message. The hash and an invalid
 * name (which might be a pasted key) are never echoed. */
static int api_key_parse(const struct setting *s, const char *e, size_t n, size_t pos,
                         struct config_api_key *k, char *err, size_t errlen)
{
    const char *colon = memchr(e, ':', n);
    if (!colon)
        return fail(err, errlen, s, "entry %zu: expected name:sha256hex", pos);
    size_t nlen = (size_t)(colon - e), hlen = n - nlen - 1;
    const char *hex = colon + 1;
    if (!api_key_name_ok(e, nlen))
        return fail(err, errlen, s,
                    "entry %zu: the name must be 1 to 63 characters from A-Z a-z 0-9 _ . -", pos);
    memcpy(k->name, e, nlen);
    k->name[nlen] = '\0';
    int ok = hlen == 64;
    for (size_t i = 0; ok && i < 32; i++) {
        int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);
        ok = hi >= 0 && lo >= 0;
        if (ok)
            k->sha256[i] = (unsigned char)(hi << 4 | lo);
    }
    if (!ok)
        return fail(err, errlen, s,
                    "entry %zu (%s): the hash must be 64 hex characters, the SHA-256 of the "
                    "caller's key (printf %%s KEY | sha256sum)",
                    pos, k->name);
    return 0;
}

/* "name:hex[,name:hex...]". A continuation line appends to the list; any
 * other value replaces it. Blanks around entries and empty entries are
 * ignored, so a list can be split after a comma. The new list is built
 * aside and swapped in only when all of it parsed. */
static int set_api_keys(struct config *c, const struct setting *s, const char *v, int cont,
                        char *err, size_t errlen)
{
    size_t base = cont ? c->n_api_keys : 0, n = base, cap = base + 1;
    for (const char *p = v; *p; p++)
        cap += *p == ',';
    struct config_api_key *keys = calloc(cap, sizeof *keys);
    if (!keys)
        return fail(err, errlen, s, "out of memory");
    if (base)
        memcpy(keys, c->api_keys, base * sizeof *keys);
    for (const char *p = v; *p;) {
        size_t len = strcspn(p, ",");
        const char *e = p, *next = p[len] ? p + len + 1 : p + len;
        while (len && (*e == ' ' || *e == '\t'))
            e++, len--;
        while (len && (e[len - 1] == ' ' || e[len - 1] == '\t'))
            len--;
        if (len && api_key_parse(s, e, len, n + 1, &keys[n], err, errlen) != 0) {
            OPENSSL_cleanse(keys, cap * sizeof *keys);
            free(keys);
            return -1;
        }
        n += len != 0;
        p = next;
    }
    free(c->api_keys);
    c->api_keys = keys;
    c->n_api_keys = n;
    return 0;
}

#define FIELD(f) offsetof(struct config, f)

static const struct setting settings[] = {
    {"CARDGATE_LISTEN", "server", "listen", set_listen, 0, 0, 0},
    {"CARDGATE_WORKERS", "server", "workers", set_int, FIELD(workers), 1, CONFIG_MAX_WORKERS},
    {"CARDGATE_DRAIN_TIMEOUT_MS", "server", "drain_timeout_ms", set_long, FIELD(drain_timeout_ms),
     0, 600000},
    {"CARDGATE_IDLE_TIMEOUT_S", "server", "idle_timeout_s", set_long, FIELD(idle_timeout_s), 1,
     3600},
    {"CARDGATE_LOCK_MARGIN_MS", "server", "lock_margin_ms", set_long, FIELD(lock_margin_ms), 0,
     3600000},
    {"CARDGATE_SWEEP_INTERVAL_MS", "server", "sweep_interval_ms", set_long,
     FIELD(sweep_interval_ms), 0, 3600000},
    {"CARDGATE_PUBLIC_URL", "server", "public_url", set_public_url, FIELD(public_url), 0, 0},
    {"CARDGATE_REQUEST_DEADLINE_MS", "server", "request_deadline_ms", set_long,
     FIELD(request_deadline_ms), 100, 600000},
    {"CARDGATE_OPS_LISTEN", "server", "ops_listen", set_listen, FIELD(ops_host), 0, 0},
    {"CARDGATE_DATABASE_URL", "database", "url", set_database_url, FIELD(database_url), 0, 0},
    {"CARDGATE_DB_POOL_SIZE", "database", "pool_size", set_int, FIELD(db_pool_size), 1, 100},
    {"CARDGATE_API_KEYS", "auth", "api_keys", set_api_keys, 0, 0, 0},
    {"CARDGATE_REQUEST_HASH_SECRET", "auth", "request_hash_secret", set_secret,
     FIELD(request_hash_secret), 0, 0},
    {"CARDGATE_ALIPAY_GATEWAY", "alipay", "gateway", set_gateway, FIELD(alipay_gateway), 0, 0},
    {"CARDGATE_ALIPAY_APP_ID", "alipay", "app_id", set_app_id, FIELD(alipay_app_id), 0, 0},
    {"CARDGATE_ALIPAY_PRIVATE_KEY_FILE", "alipay", "private_key_file", set_path,
     FIELD(alipay_private_key_file), 0, 0},
    {"CARDGATE_ALIPAY_PUBLIC_KEY_FILE", "alipay", "public_key_file", set_path,
     FIELD(alipay_public_key_file), 0, 0},
    {"CARDGATE_ALIPAY_APP_CERT_FILE", "alipay", "app_cert_file", set_path,
     FIELD(alipay_app_cert_file), 0, 0},
    {"CARDGATE_ALIPAY_CERT_FILE", "alipay", "cert_file", set_path, FIELD(alipay_cert_file), 0, 0},
    {"CARDGATE_ALIPAY_ROOT_CERT_FILE", "alipay", "root_cert_file", set_path,
     FIELD(alipay_root_cert_file), 0, 0},
    {"CARDGATE_ALIPAY_ENCRYPT_KEY", "alipay", "encrypt_key", set_encrypt_key,
     FIELD(alipay_encrypt_key), 0, 0},
    {"CARDGATE_ALIPAY_SIGN_TYPE", "alipay", "sign_type", set_sign_type, 0, 0, 0},
    {"CARDGATE_ALIPAY_TIMEOUT_MS", "alipay", "timeout_ms", set_long, FIELD(alipay_timeout_ms), 10,
     600000},
    {"CARDGATE_ALIPAY_CA_FILE", "alipay", "ca_file", set_path, FIELD(alipay_ca_file), 0, 0},
    {"CARDGATE_ALIPAY_ALLOW_HTTP", "alipay", "allow_http", set_int, FIELD(alipay_allow_http), 0, 1},
    {"CARDGATE_ALIPAY_KEY_GRACE_S", "alipay", "key_grace_s", set_long, FIELD(alipay_key_grace_s), 0,
     2592000},
    {"CARDGATE_LOG_LEVEL", "log", "level", set_log_level, 0, 0, 0},
    {"CARDGATE_LOG_FORMAT", "log", "format", set_log_format, 0, 0, 0},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

static int config_defaults(struct config *c, char *err, size_t errlen)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    memset(c, 0, sizeof *c);
    strcpy(c->listen_host, "0.0.0.0");
    c->listen_port = 8080;
    c->workers = cores < 1 ? 1 : cores > CONFIG_MAX_WORKERS ? CONFIG_MAX_WORKERS : (int)cores;
    c->alipay_gateway = strdup(CONFIG_DEFAULT_GATEWAY);
    c->alipay_sign_type = ALIPAY_SIGN_RSA2;
    c->alipay_timeout_ms = 15000;
    c->log_level = LOG_INFO;
    c->log_json = 1;
    c->drain_timeout_ms = 20000;
    c->lock_margin_ms = 5000;
    c->sweep_interval_ms = 5000;
    c->idle_timeout_s = 30;
    c->db_pool_size = 0; /* not set: from the workers, at the end of config_load */
    c->alipay_key_grace_s = 86400;
    c->request_deadline_ms = 30000;
    if (!c->alipay_gateway) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static int section_known(const char *section)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strcmp(settings[i].section, section) == 0)
            return 1;
    return 0;
}

/* --- the INI file ------------------------------------------------------ */

/* inih reads through ini_read_line, which lets us know the number of the
 * line being handled (inih only reports the first error's line), refuse
 * lines longer than inih's fixed buffer instead of having them split, and
 * mirror inih's rule for continuation lines (an indented line after a key
 * continues that key's value). */
struct ini_ctx {
    struct config *c;
    const char *path;
    FILE *f;
    char *buf; /* getline's buffer */
    size_t cap;
    int lineno;
    int have_prev; /* inih has a previous key that an indented line would continue */
    int cont;      /* the current line is a continuation */
    int err_line;  /* line of the first error we found; 0: none */
    int read_errno;
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 2, 3))) static int ini_fail(struct ini_ctx *x, const char *fmt, ...)
{
    char reason[448];
    va_list ap;
    if (x->err_line)
        return 0;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    x->err_line = x->lineno;
    snprintf(x->err, x->errlen, "%s:%d: %s", x->path, x->lineno, reason);
    return 0;
}

static char *ini_read_line(char *str, int num, void *stream)
{
    struct ini_ctx *x = stream;
    if (x->err_line || num < 4)
        return NULL; /* stop at our first error */
    errno = 0;
    ssize_t n = getline(&x->buf, &x->cap, x->f);
    if (n < 0) {
        x->read_errno = ferror(x->f) ? (errno ? errno : EIO) : 0;
        return NULL;
    }
    x->lineno++;
    size_t len = (size_t)n;
    while (len && (x->buf[len - 1] == '\n' || x->buf[len - 1] == '\r'))
        len--;
    /* inih's buffer holds num bytes: the text, its line end and a NUL. */
    if (len > (size_t)num - 3 || (size_t)n > (size_t)num - 1) {
        ini_fail(x, "line longer than %d characters", num - 3);
        return NULL;
    }
    if (memchr(x->buf, '\0', len)) {
        ini_fail(x, "NUL byte in line");
        return NULL;
    }
    memcpy(str, x->buf, (size_t)n);
    str[n] = '\0';
    /* Mirror inih: skip blanks; comments and empty lines change nothing; a
     * section resets the previous key; an indented line after a key is a
     * continuation of it; any other line is a new key. */
    const char *p = x->buf;
    if (x->lineno == 1 && strncmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3; /* inih skips a UTF-8 BOM */
    const char *start = p + strspn(p, " \t\f\v\r\n");
    x->cont = 0;
    if (*start == '\0' || *start == ';' || *start == '#')
        return str;
    if (*start == '[') {
        /* Checked here rather than at the section's first key, so the
         * message names the right line and an empty typo is caught too. */
        const char *close = strchr(start, ']');
        size_t nlen = close ? (size_t)(close - start - 1) : 0;
        char name[48], b1[48];
        if (close && nlen < sizeof name) {
            memcpy(name, start + 1, nlen);
            name[nlen] = '\0';
        }
        if (close && (nlen >= sizeof name || !section_known(name))) {
            ini_fail(x, "unknown section [%s]", nlen < sizeof name ? shown(name, b1) : "...");
            return NULL;
        }
        x->have_prev = 0;
    } else if (x->have_prev && start > x->buf)
        x->cont = 1;
    else
        x->have_prev = 1;
    return str;
}

static const struct setting *setting_find(const char *section, const char *key)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strcmp(settings[i].section, section) == 0 && strcmp(settings[i].key, key) == 0)
            return &settings[i];
    return NULL;
}

static int ini_on_value(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *x = user;
    char reason[400], b1[48], b2[48];
    if (x->err_line)
        return 0;
    if (!*section)
        return ini_fail(x, "key \"%s\" outside a section", shown(name, b1));
    if (!section_known(section))
        return ini_fail(x, "unknown section [%s]", shown(section, b1));
    const struct setting *s = setting_find(section, name);
    if (!s)
        return ini_fail(x, "unknown key \"%s\" in [%s]", shown(name, b1), shown(section, b2));
    if (x->cont && s->set != set_api_keys)
        return ini_fail(x, "%s: an indented line continues [%s] %s; only api_keys may span lines",
                        s->env, section, name);
    if (!*value)
        return 1; /* empty: not set */
    if (s->set(x->c, s, value, x->cont, reason, sizeof reason) != 0)
        return ini_fail(x, "%s", reason);
    return 1;
}

static int config_load_file(struct config *c, const char *path, char *err, size_t errlen)
{
    struct ini_ctx x = {.c = c, .path = path, .err = err, .errlen = errlen};
    x.f = fopen(path, "r");
    if (!x.f) {
        snprintf(err, errlen, "cannot open config file %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = ini_parse_stream(ini_read_line, &x, ini_on_value, &x);
    fclose(x.f);
    free(x.buf);
    /* inih reports syntax errors only through rc, the first error's line. */
    if (rc > 0 && (x.err_line == 0 || rc < x.err_line)) {
        snprintf(err, errlen, "%s:%d: syntax error (expected [section], key = value or a comment)",
                 path, rc);
        return -1;
    }
    if (x.err_line)
        return -1;
    if (x.read_errno) {
        snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(x.read_errno));
        return -1;
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot parse config file %s: out of memory", path);
        return -1;
    }
    return 0;
}

/* Environment variables win over the file; an empty one counts as unset. */
static int config_load_env(struct config *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *v = getenv(settings[i].env);
        if (v && *v && settings[i].set(c, &settings[i], v, 0, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
    if (config_defaults(c, err, errlen) != 0 ||
        (path && config_load_file(c, path, err, errlen) != 0) ||
        config_load_env(c, err, errlen) != 0) {
        config_free(c);
        return -1;
    }
    /* Unless set: 4 connections per worker, but at most CONFIG_DB_TOTAL in
     * all (one per worker at the least), so that many cores or instances do
     * not exhaust the server's max_connections. */
    if (c->db_pool_size == 0) {
        int per = CONFIG_DB_TOTAL / c->workers;
        c->db_pool_size = per < 1 ? 1 : per > 4 ? 4 : per;
    }
    return 0;
}

int config_cert_mode(const struct config *c)
{
    return c->alipay_app_cert_file || c->alipay_cert_file || c->alipay_root_cert_file;
}

/* Public-key mode (Alipay's public key) or certificate mode (the three
 * certificate files): one of them, whole. */
static int config_check_alipay_mode(const struct config *c, char *err, size_t errlen)
{
    if (!config_cert_mode(c)) {
        if (!c->alipay_public_key_file) {
            snprintf(err, errlen,
                     "CARDGATE_ALIPAY_PUBLIC_KEY_FILE ([alipay] public_key_file) is not set: "
                     "Alipay's RSA public key (or, in certificate mode, set "
                     "CARDGATE_ALIPAY_APP_CERT_FILE, CARDGATE_ALIPAY_CERT_FILE and "
                     "CARDGATE_ALIPAY_ROOT_CERT_FILE instead)");
            return -1;
        }
        return 0;
    }
    if (c->alipay_public_key_file) {
        snprintf(err, errlen,
                 "CARDGATE_ALIPAY_PUBLIC_KEY_FILE and the certificate files (CARDGATE_ALIPAY_*_CERT"
                 "_FILE) are both set: certificate mode replaces Alipay's public key; keep one");
        return -1;
    }
    static const struct {
        size_t off;
        const char *name;
    } certs[] = {
        {FIELD(alipay_app_cert_file),
         "CARDGATE_ALIPAY_APP_CERT_FILE (appCertPublicKey_<app id>.crt)"},
        {FIELD(alipay_cert_file), "CARDGATE_ALIPAY_CERT_FILE (alipayCertPublicKey_RSA2.crt)"},
        {FIELD(alipay_root_cert_file), "CARDGATE_ALIPAY_ROOT_CERT_FILE (alipayRootCert.crt)"},
    };
    for (size_t i = 0; i < sizeof certs / sizeof certs[0]; i++) {
        if (!*(char *const *)(const void *)((const char *)c + certs[i].off)) {
            snprintf(err, errlen,
                     "%s is not set: certificate mode needs all three certificate files",
                     certs[i].name);
            return -1;
        }
    }
    return 0;
}

int config_check_serve(const struct config *c, char *err, size_t errlen)
{
    static const struct {
        size_t off;
        const char *what;
    } needed[] = {
        {FIELD(database_url), "CARDGATE_DATABASE_URL ([database] url) is not set: the "
                              "PostgreSQL connection string or URI"},
        {FIELD(alipay_app_id), "CARDGATE_ALIPAY_APP_ID ([alipay] app_id) is not set: the "
                               "Alipay app id"},
        {FIELD(alipay_private_key_file), "CARDGATE_ALIPAY_PRIVATE_KEY_FILE ([alipay] "
                                         "private_key_file) is not set: the app's RSA "
                                         "private key"},
    };
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        const char *v = *(char *const *)(const void *)((const char *)c + needed[i].off);
        if (!v || !*v) {
            snprintf(err, errlen, "%s", needed[i].what);
            return -1;
        }
    }
    if (config_check_alipay_mode(c, err, errlen) < 0)
        return -1;
    if (c->ops_port && c->ops_port == c->listen_port && strcmp(c->ops_host, c->listen_host) == 0) {
        snprintf(err, errlen, "CARDGATE_OPS_LISTEN: must be another address than CARDGATE_LISTEN");
        return -1;
    }
    /* Signed requests carry members' data and tokens: never in clear text
     * but to a simulator the operator names as such. */
    if (c->alipay_gateway && strncasecmp(c->alipay_gateway, "http://", 7) == 0 &&
        !c->alipay_allow_http) {
        snprintf(err, errlen,
                 "CARDGATE_ALIPAY_GATEWAY: a plain http:// gateway is refused (Alipay's is "
                 "https://); set CARDGATE_ALIPAY_ALLOW_HTTP=1 for the simulator");
        return -1;
    }
    return 0;
}

void config_free(struct config *c)
{
    free(c->database_url);
    free(c->alipay_gateway);
    free(c->alipay_app_id);
    free(c->alipay_private_key_file);
    free(c->alipay_public_key_file);
    free(c->alipay_app_cert_file);
    free(c->alipay_cert_file);
    free(c->alipay_root_cert_file);
    if (c->alipay_encrypt_key)
        OPENSSL_cleanse(c->alipay_encrypt_key, strlen(c->alipay_encrypt_key));
    free(c->alipay_encrypt_key);
    free(c->alipay_ca_file);
    free(c->public_url);
    free(c->request_hash_secret);
    if (c->api_keys)
        OPENSSL_cleanse(c->api_keys, c->n_api_keys * sizeof *c->api_keys);
    free(c->api_keys);
    memset(c, 0, sizeof *c);
}

const char *config_api_key_lookup(const struct config *c, const char *bearer, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const char *found = NULL;
    if (!c->n_api_keys || !bearer || !len)
        return NULL;
    if (!EVP_Digest(bearer, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return NULL;
    /* Every key is compared, matched or not, so the time taken does not
     * depend on which one (if any) matches. */
    for (size_t i = 0; i < c->n_api_keys; i++) {
        int eq = CRYPTO_memcmp(md, c->api_keys[i].sha256, 32) == 0;
        if (eq && !found)
            found = c->api_keys[i].name;
    }
    return found;
}
