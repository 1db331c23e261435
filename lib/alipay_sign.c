/* alipay_sign: see alipay_sign.h. */
#include "alipay_sign.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>

int alipay_sign_type_parse(const char *s, enum alipay_sign_type *out)
{
    if (strcmp(s, "RSA2") == 0)
        *out = ALIPAY_SIGN_RSA2;
    else if (strcmp(s, "RSA") == 0)
        *out = ALIPAY_SIGN_RSA;
    else
        return -1;
    return 0;
}

const char *alipay_sign_type_name(enum alipay_sign_type t)
{
    return t == ALIPAY_SIGN_RSA ? "RSA" : "RSA2";
}

static const EVP_MD *sign_md(enum alipay_sign_type t)
{
    return t == ALIPAY_SIGN_RSA ? EVP_sha1() : EVP_sha256();
}

void alipay_params_init(struct alipay_params *p)
{
    memset(p, 0, sizeof(*p));
}

void alipay_params_free(struct alipay_params *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].key);
        free(p->v[i].value);
    }
    free(p->v);
    memset(p, 0, sizeof(*p));
}

static struct alipay_param *params_find(const struct alipay_params *p, const char *key)
{
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->v[i].key, key) == 0)
            return &p->v[i];
    }
    return NULL;
}

int alipay_params_set(struct alipay_params *p, const char *key, const char *value)
{
    if (!value || !*value)
        return 0;
    char *copy = strdup(value);
    if (!copy)
        return -1;
    struct alipay_param *old = params_find(p, key);
    if (old) {
        free(old->value);
        old->value = copy;
        return 0;
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct alipay_param *v = realloc(p->v, cap * sizeof(*v));
        if (!v) {
            free(copy);
            return -1;
        }
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n].key = strdup(key);
    if (!p->v[p->n].key) {
        free(copy);
        return -1;
    }
    p->v[p->n].value = copy;
    p->n++;
    return 0;
}

const char *alipay_params_get(const struct alipay_params *p, const char *key)
{
    const struct alipay_param *kv = params_find(p, key);
    return kv ? kv->value : NULL;
}

static int param_cmp(const void *a, const void *b)
{
    const struct alipay_param *const *x = a, *const *y = b;
    return strcmp((*x)->key, (*y)->key); /* strcmp compares as unsigned char: byte order */
}

char *alipay_sign_content(const struct alipay_params *p)
{
    const struct alipay_param **sorted = malloc((p->n ? p->n : 1) * sizeof(*sorted));
    if (!sorted)
        return NULL;
    size_t n = 0, total = 1;
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->v[i].key, "sign") == 0)
            continue;
        sorted[n++] = &p->v[i];
        total += strlen(p->v[i].key) + strlen(p->v[i].value) + 2;
    }
    qsort(sorted, n, sizeof(*sorted), param_cmp);
    char *out = malloc(total), *w = out;
    if (out) {
        for (size_t i = 0; i < n; i++) {
            w += sprintf(w, "%s%s=%s", i ? "&" : "", sorted[i]->key, sorted[i]->value);
        }
        *w = '\0';
    }
    free(sorted);
    return out;
}

/* Signs data with ctx, which DigestSignInit (or a copy of one) prepared;
 * the base64, malloc'd, or NULL with err. ctx is freed. */
static char *sign_with(EVP_MD_CTX *ctx, const char *data, size_t len, char *err, size_t errlen)
{
    unsigned char *sig = NULL;
    char *b64 = NULL;
    size_t siglen = 0;
    if (!ctx || EVP_DigestSign(ctx, NULL, &siglen, (const unsigned char *)data, len) != 1)
        goto fail;
    sig = malloc(siglen);
    if (!sig || EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)data, len) != 1)
        goto fail;
    b64 = alipay_b64_encode(sig, siglen);
    if (!b64)
        goto fail;
    free(sig);
    EVP_MD_CTX_free(ctx);
    return b64;
fail:
    snprintf(err, errlen, "signing failed: %s", ERR_reason_error_string(ERR_get_error()));
    ERR_clear_error();
    free(sig);
    EVP_MD_CTX_free(ctx);
    return NULL;
}

char *alipay_sign_data(EVP_PKEY *key, enum alipay_sign_type type, const char *data, size_t len,
                       char *err, size_t errlen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestSignInit(ctx, NULL, sign_md(type), NULL, key) != 1) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    return sign_with(ctx, data, len, err, errlen);
}

struct alipay_signer {
    EVP_MD_CTX *prepared;
};

struct alipay_signer *alipay_signer_new(EVP_PKEY *key, enum alipay_sign_type type, char *err,
                                        size_t errlen)
{
    struct alipay_signer *s = calloc(1, sizeof(*s));
    if (s)
        s->prepared = EVP_MD_CTX_new();
    if (!s || !s->prepared ||
        EVP_DigestSignInit(s->prepared, NULL, sign_md(type), NULL, key) != 1) {
        snprintf(err, errlen, "cannot prepare signing: %s",
                 ERR_reason_error_string(ERR_get_error()));
        ERR_clear_error();
        alipay_signer_free(s);
        return NULL;
    }
    return s;
}

char *alipay_signer_sign(const struct alipay_signer *s, const char *data, size_t len, char *err,
                         size_t errlen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_MD_CTX_copy_ex(ctx, s->prepared) != 1) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    return sign_with(ctx, data, len, err, errlen);
}

void alipay_signer_free(struct alipay_signer *s)
{
    if (!s)
        return;
    EVP_MD_CTX_free(s->prepared);
    free(s);
}

char *alipay_b64_encode(const unsigned char *data, size_t n)
{
    char *b64 = malloc(4 * ((n + 2) / 3) + 1);
    if (b64)
        EVP_EncodeBlock((unsigned char *)b64, data, (int)n); /* one line, NUL-terminated */
    return b64;
}

long alipay_b64_decode(const char *b64, size_t len, unsigned char *out)
{
    if (len == 0 || len % 4 != 0 || len > INT_MAX)
        return len == 0 ? 0 : -1;
    int got = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)len);
    if (got < 0)
        return -1;
    /* EVP_DecodeBlock counts the padding as zero bytes: take them off */
    return (long)got - (b64[len - 1] == '=') - (b64[len - 2] == '=');
}

int alipay_sign_verify(EVP_PKEY *pub, enum alipay_sign_type type, const char *data, size_t len,
                       const char *sig_b64)
{
    size_t b64len = strlen(sig_b64);
    if (b64len == 0 || b64len > 4096)
        return 0;
    unsigned char sig[3072];
    long got = alipay_b64_decode(sig_b64, b64len, sig);
    if (got <= 0)
        return 0;
    size_t siglen = (size_t)got;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, sign_md(type), NULL, pub) == 1 &&
             EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)data, len) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

void alipay_sign_timestamp(time_t t, char out[20])
{
    /* Beijing has no daylight saving: UTC+8 all year, so shifting the
     * instant and formatting it as UTC is exact whatever TZ says. */
    time_t beijing = t + 8 * 3600;
    struct tm tm;
    gmtime_r(&beijing, &tm);
    strftime(out, 20, "%Y-%m-%d %H:%M:%S", &tm);
}
