/* alipay_client: see alipay_client.h. */
#include "alipay_client.h"

#include "jsonx.h"

#include <time.h>

#include <stdatomic.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct alipay_client {
    char *gateway_url;
    char *app_id;
    struct alipay_signer *signer; /* the app's key, prepared once (alipay_sign.h) */
    EVP_PKEY *alipay_key;
    _Atomic(struct alipay_trust *) *trust;
    enum alipay_sign_type sign_type;
    long timeout_ms;
    char *app_cert_sn, *root_cert_sn; /* certificate mode; NULL otherwise */
    char alipay_cert_sn[ALIPAY_CERT_SN_LEN + 1];
    struct alipay_cert_store *certs;
    void (*resolve)(void *ctx, const char *sn, void (*done)(void *arg), void *arg);
    void *resolve_ctx;
    const struct alipay_aes *aes;
    struct alipay_http *http;
    struct call *calls; /* in flight: freed by alipay_client_free if never answered */
};

/* One call in flight: what the answer is judged against. */
struct call {
    struct call *prev, *next;
    struct alipay_client *client;
    char method[128];
    long timeout_ms;
    alipay_client_cb cb;
    void *arg;
    /* a certificate fetch (alipay_client_fetch_cert): the SN asked for */
    char fetch_sn[ALIPAY_CERT_SN_LEN + 1];
    alipay_fetch_cb fetch_cb;
    /* an answer waiting for its certificate (certificate mode) */
    char *body;
    size_t body_len;
    long http_code;
    double latency_ms;
};

struct alipay_client *alipay_client_new(const struct alipay_client_config *cfg,
                                        struct alipay_http *http, char *err, size_t errlen)
{
    struct alipay_client *c = calloc(1, sizeof(*c));
    if (!c || !(c->gateway_url = strdup(cfg->gateway_url)) || !(c->app_id = strdup(cfg->app_id))) {
        alipay_client_free(c);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->signer = alipay_signer_new(cfg->app_key, cfg->sign_type, err, errlen);
    if (!c->signer) {
        alipay_client_free(c);
        return NULL;
    }
    c->alipay_key = cfg->alipay_key;
    c->trust = cfg->trust;
    c->sign_type = cfg->sign_type;
    c->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 15000;
    if (cfg->certs) {
        if (!cfg->app_cert_sn || !cfg->root_cert_sn || !cfg->alipay_cert_sn ||
            !(c->app_cert_sn = strdup(cfg->app_cert_sn)) ||
            !(c->root_cert_sn = strdup(cfg->root_cert_sn))) {
            alipay_client_free(c);
            snprintf(err, errlen, "certificate mode needs the app's and the roots' SNs");
            return NULL;
        }
        snprintf(c->alipay_cert_sn, sizeof(c->alipay_cert_sn), "%s", cfg->alipay_cert_sn);
        c->certs = cfg->certs;
        c->resolve = cfg->resolve;
        c->resolve_ctx = cfg->resolve_ctx;
    }
    c->aes = cfg->aes;
    c->http = http;
    return c;
}

static void call_unlink(struct call *call)
{
    struct alipay_client *c = call->client;
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
}

void alipay_client_free(struct alipay_client *c)
{
    if (!c)
        return;
    while (c->calls) {
        struct call *call = c->calls;
        call_unlink(call);
        if (call->fetch_sn[0])
            free(call->arg); /* its struct fetch */
        free(call->body);
        free(call);
    }
    alipay_signer_free(c->signer);
    free(c->app_cert_sn);
    free(c->root_cert_sn);
    free(c->gateway_url);
    free(c->app_id);
    free(c);
}

void alipay_request_free(struct alipay_request *r)
{
    free(r->url);
    free(r->body);
    r->url = r->body = NULL;
}

size_t alipay_client_escape(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    char *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* Appends "<sep>key=<urlencoded value>" to a malloc'd string. */
static int append_encoded(char **buf, size_t *len, const char *sep, const char *key,
                          const char *value)
{
    size_t sep_len = strlen(sep), key_len = strlen(key), value_len = strlen(value);
    char *p = realloc(*buf, *len + sep_len + key_len + 1 + 3 * value_len + 1);
    if (!p)
        return -1;
    memcpy(p + *len, sep, sep_len);
    memcpy(p + *len + sep_len, key, key_len);
    p[*len + sep_len + key_len] = '=';
    *len += sep_len + key_len + 1;
    *len += alipay_client_escape(value, value_len, p + *len);
    *buf = p;
    return 0;
}

/* In the URL, in this order (the Java SDK's; encrypt_type with them). */
static const char *const public_order[] = {"app_id",
                                           "method",
                                           "format",
                                           "charset",
                                           "sign_type",
                                           "timestamp",
                                           "version",
                                           "auth_token",
                                           "app_auth_token",
                                           "app_cert_sn",
                                           "alipay_root_cert_sn",
                                           "encrypt_type",
                                           "grant_type",
                                           "code",
                                           "sign"};

int alipay_client_build(const struct alipay_client *c, const char *method, const char *biz_content,
                        const char *auth_token, const char *app_auth_token, time_t now,
                        struct alipay_request *out, char *err, size_t errlen)
{
    struct alipay_call_params p = {
        .biz_content = biz_content, .auth_token = auth_token, .app_auth_token = app_auth_token};
    return alipay_client_build_params(c, method, &p, now, out, err, errlen);
}

int alipay_client_build_params(const struct alipay_client *c, const char *method,
                               const struct alipay_call_params *cp, time_t now,
                               struct alipay_request *out, char *err, size_t errlen)
{
    const char *biz_content = cp->biz_content;
    struct alipay_params p;
    char ts[20];
    int rc = -1;
    char *content = NULL, *sign = NULL, *encrypted = NULL;
    memset(out, 0, sizeof(*out));
    alipay_params_init(&p);
    /* Content encryption: the ciphertext is what is signed and sent. */
    if (c->aes && biz_content && *biz_content) {
        encrypted = alipay_aes_encrypt(c->aes, biz_content, strlen(biz_content), err, errlen);
        if (!encrypted)
            goto done;
        biz_content = encrypted;
    }
    alipay_sign_timestamp(now, ts);
    if (alipay_params_set(&p, "app_id", c->app_id) || alipay_params_set(&p, "method", method) ||
        alipay_params_set(&p, "format", "JSON") || alipay_params_set(&p, "charset", "utf-8") ||
        alipay_params_set(&p, "sign_type", alipay_sign_type_name(c->sign_type)) ||
        alipay_params_set(&p, "timestamp", ts) || alipay_params_set(&p, "version", "1.0") ||
        alipay_params_set(&p, "auth_token", cp->auth_token) ||
        alipay_params_set(&p, "app_auth_token", cp->app_auth_token) ||
        alipay_params_set(&p, "grant_type", cp->grant_type) ||
        alipay_params_set(&p, "code", cp->code) ||
        alipay_params_set(&p, "app_cert_sn", c->app_cert_sn) ||
        alipay_params_set(&p, "alipay_root_cert_sn", c->root_cert_sn) ||
        alipay_params_set(&p, "encrypt_type", encrypted ? "AES" : NULL) ||
        alipay_params_set(&p, "biz_content", biz_content)) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (!(content = alipay_sign_content(&p))) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (!(sign = alipay_signer_sign(c->signer, content, strlen(content), err, errlen)))
        goto done;
    alipay_params_set(&p, "sign", sign);

    size_t ulen = strlen(c->gateway_url), blen = 0;
    out->url = malloc(ulen + 1);
    if (!out->url)
        goto oom;
    memcpy(out->url, c->gateway_url, ulen + 1);
    const char *sep = strchr(c->gateway_url, '?') ? "&" : "?";
    for (size_t i = 0; i < sizeof(public_order) / sizeof(*public_order); i++) {
        const char *v = alipay_params_get(&p, public_order[i]);
        if (!v)
            continue;
        if (append_encoded(&out->url, &ulen, sep, public_order[i], v) < 0)
            goto oom;
        sep = "&";
    }
    if (biz_content && *biz_content &&
        append_encoded(&out->body, &blen, "", "biz_content", biz_content) < 0)
        goto oom;
    if (!out->body && !(out->body = strdup("")))
        goto oom;
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "out of memory");
    alipay_request_free(out);
done:
    free(content);
    free(sign);
    free(encrypted);
    alipay_params_free(&p);
    return rc;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Certificate mode: the key of the certificate the answer names (the
 * configured one when it names none), with a reference the caller frees;
 * NULL when the store lacks it, its SN then in sn. */
static EVP_PKEY *answer_cert_key(const struct alipay_client *c, const char *body, size_t len,
                                 char sn[ALIPAY_CERT_SN_LEN + 1])
{
    if (alipay_response_cert_sn(body, len, sn) < 0)
        snprintf(sn, ALIPAY_CERT_SN_LEN + 1, "%s", c->alipay_cert_sn);
    return alipay_cert_store_get(c->certs, sn);
}

/* Judges with the key in force; after a rotation, an answer the new key
 * does not verify is tried with the previous key while its grace lasts.
 * In certificate mode, cert_key is that of the certificate cert_sn the
 * answer names (answer_cert_key), NULL when nobody could find it. */
static void judge_answer(const struct alipay_client *c, const char *body, size_t len,
                         const char *method, EVP_PKEY *cert_key, const char *cert_sn,
                         struct alipay_reply *reply)
{
    double latency = reply->latency_ms;
    long status = reply->http_status;
    if (c->certs) {
        if (!cert_key) {
            /* the answer cannot be trusted */
            reply->outcome = ALIPAY_BAD_SIGNATURE;
            snprintf(reply->detail, sizeof(reply->detail),
                     "answer signed by Alipay certificate %s, which cannot be fetched", cert_sn);
            return;
        }
        alipay_response_judge_aes(body, len, method, cert_key, c->sign_type, c->aes, reply);
        return;
    }
    struct alipay_trust *t = c->trust ? atomic_load(c->trust) : NULL;
    EVP_PKEY *key = t ? t->current : c->alipay_key;
    alipay_response_judge_aes(body, len, method, key, c->sign_type, c->aes, reply);
    if (reply->outcome != ALIPAY_BAD_SIGNATURE || !t || !t->previous ||
        mono_ms() >= t->previous_until_ms)
        return;
    alipay_reply_free(reply);
    memset(reply, 0, sizeof(*reply));
    reply->latency_ms = latency;
    reply->http_status = status;
    alipay_response_judge_aes(body, len, method, t->previous, c->sign_type, c->aes, reply);
}

/* Runs the caller's callback with reply, then frees the call. */
static void call_finish(struct call *call, struct alipay_reply *reply)
{
    call_unlink(call);
    call->cb(reply, call->arg);
    alipay_reply_free(reply);
    free(call->body);
    free(call);
}

/* Judges a 200 answer (with cert_key and cert_sn, see judge_answer; the
 * key's reference is taken) and finishes the call. */
static void call_judge(struct call *call, const char *body, size_t len, long http_code,
                       double latency_ms, EVP_PKEY *cert_key, const char *cert_sn)
{
    struct alipay_reply reply;
    memset(&reply, 0, sizeof(reply));
    reply.latency_ms = latency_ms;
    reply.http_status = http_code;
    judge_answer(call->client, body, len, call->method, cert_key, cert_sn, &reply);
    EVP_PKEY_free(cert_key);
    call_finish(call, &reply);
}

/* The certificate an answer waited for was looked for: judge it now. */
static void on_cert_resolved(void *arg)
{
    struct call *call = arg;
    char sn[ALIPAY_CERT_SN_LEN + 1];
    EVP_PKEY *key = answer_cert_key(call->client, call->body, call->body_len, sn);
    call_judge(call, call->body, call->body_len, call->http_code, call->latency_ms, key, sn);
}

/* The PEM text of a download's alipay_cert_content (base64), malloc'd and
 * NUL-terminated, its length in *len; NULL with why. */
static char *cert_content_pem(json_object *node, size_t *len, char *why, size_t whylen)
{
    json_object *content = NULL;
    if (!json_object_object_get_ex(node, "alipay_cert_content", &content) ||
        !json_object_is_type(content, json_type_string)) {
        snprintf(why, whylen, "the download's answer has no alipay_cert_content");
        return NULL;
    }
    const char *b64 = json_object_get_string(content);
    size_t blen = strlen(b64);
    char *pem = malloc(blen / 4 * 3 + 1);
    long got = pem ? alipay_b64_decode(b64, blen, (unsigned char *)pem) : -1;
    if (got <= 0) {
        snprintf(why, whylen, "alipay_cert_content is not base64");
        free(pem);
        return NULL;
    }
    pem[got] = '\0';
    *len = (size_t)got;
    return pem;
}

static void fetch_on_reply(struct alipay_reply *reply, void *arg);

/* An answer waits for the certificate that signed it: the service's
 * resolver (database, then download), or a download of our own. Returns 0
 * when it is being looked for (the call then finishes later). */
static int call_await_cert(struct call *call, const struct alipay_http_response *res,
                           const char *sn)
{
    struct alipay_client *c = call->client;
    char err[128];
    if (!(call->body = malloc(res->body_len + 1)))
        return -1;
    memcpy(call->body, res->body, res->body_len);
    call->body[res->body_len] = '\0';
    call->body_len = res->body_len;
    call->http_code = res->http_code;
    call->latency_ms = res->total_ms;
    if (c->resolve) {
        c->resolve(c->resolve_ctx, sn, on_cert_resolved, call);
        return 0;
    }
    if (alipay_client_fetch_cert(c, sn, NULL, call, err, sizeof(err)) == 0)
        return 0;
    free(call->body);
    call->body = NULL;
    return -1;
}

/* A download's answer may be signed by the very certificate it carries
 * (Alipay rotating to it): that certificate is admitted first, on the
 * strength of its chain to the roots, then the answer is judged with it. */
static void fetch_admit_unverified(struct alipay_client *c, const struct call *call,
                                   const struct alipay_http_response *res)
{
    char sn[ALIPAY_CERT_SN_LEN + 1], name[128], err[256];
    const char *raw;
    size_t n;
    EVP_PKEY *known = answer_cert_key(c, res->body, res->body_len, sn);
    EVP_PKEY_free(known);
    if (known || strcmp(sn, call->fetch_sn) != 0 ||
        alipay_response_node_name(ALIPAY_CERT_DOWNLOAD, name, sizeof(name)) < 0 ||
        alipay_response_find(res->body, res->body_len, name, &raw, &n) < 0)
        return;
    /* no key: the node is read, not trusted; only the certificate's chain is */
    json_object *node = NULL;
    if (raw[0] == '{') {
        node = jsonx_parse(raw, n);
    } else if (raw[-1] == '"' && c->aes) {
        size_t pt_len = 0;
        char *b64 = strndup(raw, n); /* base64: no escapes to undo */
        char *pt = b64 ? alipay_aes_decrypt(c->aes, b64, n, &pt_len, err, sizeof(err)) : NULL;
        node = pt ? jsonx_parse(pt, pt_len) : NULL;
        free(pt);
        free(b64);
    }
    size_t pem_len = 0;
    char *pem = node ? cert_content_pem(node, &pem_len, err, sizeof(err)) : NULL;
    if (pem)
        alipay_cert_store_admit(c->certs, pem, pem_len, call->fetch_sn, NULL, err, sizeof(err));
    free(pem);
    json_object_put(node);
}

/* Does the answer carry a signature at all? */
static int answer_signed(const struct alipay_http_response *res)
{
    const char *sign;
    size_t n;
    return alipay_response_find(res->body, res->body_len, "sign", &sign, &n) == 0;
}

static void on_http_done(const struct alipay_http_response *res, void *arg)
{
    struct call *call = arg;
    struct alipay_client *c = call->client;
    struct alipay_reply reply;
    char sn[ALIPAY_CERT_SN_LEN + 1];
    memset(&reply, 0, sizeof(reply));
    reply.latency_ms = res->total_ms;
    switch (res->status) {
    case ALIPAY_HTTP_DONE:
        reply.http_status = res->http_code;
        if (res->http_code == 200) {
            EVP_PKEY *key = NULL;
            if (call->fetch_sn[0])
                fetch_admit_unverified(c, call, res);
            /* An unknown certificate is looked for, unless the answer is
             * unsigned (judged as it is) or is a download's own. */
            if (c->certs && !(key = answer_cert_key(c, res->body, res->body_len, sn)) &&
                !call->fetch_sn[0] && answer_signed(res) && call_await_cert(call, res, sn) == 0)
                return;
            call_judge(call, res->body, res->body_len, res->http_code, res->total_ms, key,
                       c->certs ? sn : NULL);
            return;
        }
        reply.outcome = ALIPAY_UNAVAILABLE;
        snprintf(reply.detail, sizeof(reply.detail), "gateway answered HTTP %ld", res->http_code);
        break;
    case ALIPAY_HTTP_TIMEOUT:
        reply.outcome = ALIPAY_TIMEOUT;
        snprintf(reply.detail, sizeof(reply.detail), "no answer within %ld ms: %.200s",
                 call->timeout_ms, res->error);
        break;
    case ALIPAY_HTTP_CONNECT_FAILED:
        reply.outcome = ALIPAY_UNAVAILABLE;
        snprintf(reply.detail, sizeof(reply.detail), "cannot connect to the gateway: %.200s",
                 res->error);
        break;
    case ALIPAY_HTTP_FAILED:
        reply.outcome = ALIPAY_UNAVAILABLE;
        snprintf(reply.detail, sizeof(reply.detail), "gateway connection failed: %.200s",
                 res->error);
        break;
    }
    call_finish(call, &reply);
}

int alipay_client_call(struct alipay_client *c, const char *method, const char *biz_content,
                       const char *auth_token, const char *app_auth_token, alipay_client_cb cb,
                       void *arg, char *err, size_t errlen)
{
    struct alipay_call_params p = {
        .biz_content = biz_content, .auth_token = auth_token, .app_auth_token = app_auth_token};
    return alipay_client_call_params(c, method, &p, cb, arg, err, errlen);
}

/* Builds, sends and lists one call; fetch_sn (or NULL) marks a
 * certificate download. Returns 0, or -1 with err (cb never runs). */
static int start_call(struct alipay_client *c, const char *method,
                      const struct alipay_call_params *p, alipay_client_cb cb, void *arg,
                      const char *fetch_sn, char *err, size_t errlen)
{
    struct alipay_request req;
    struct call *call = calloc(1, sizeof(*call));
    if (!call || strlen(method) >= sizeof(call->method)) {
        free(call);
        snprintf(err, errlen, "bad method or out of memory");
        return -1;
    }
    if (alipay_client_build_params(c, method, p, time(NULL), &req, err, errlen) < 0) {
        free(call);
        return -1;
    }
    call->client = c;
    strcpy(call->method, method);
    if (fetch_sn)
        snprintf(call->fetch_sn, sizeof(call->fetch_sn), "%s", fetch_sn);
    call->cb = cb;
    call->arg = arg;
    call->timeout_ms =
        p->timeout_ms > 0 && p->timeout_ms < c->timeout_ms ? p->timeout_ms : c->timeout_ms;
    int rc = alipay_http_post(c->http, req.url, req.body, strlen(req.body), call->timeout_ms,
                              on_http_done, call, err, errlen);
    alipay_request_free(&req);
    if (rc < 0) {
        free(call);
        return rc;
    }
    call->next = c->calls;
    if (c->calls)
        c->calls->prev = call;
    c->calls = call;
    return 0;
}

int alipay_client_call_params(struct alipay_client *c, const char *method,
                              const struct alipay_call_params *p, alipay_client_cb cb, void *arg,
                              char *err, size_t errlen)
{
    return start_call(c, method, p, cb, arg, NULL, err, errlen);
}

/* One certificate fetch: who hears of it. */
struct fetch {
    struct alipay_client *client;
    char sn[ALIPAY_CERT_SN_LEN + 1];
    alipay_fetch_cb done; /* the caller's, or NULL ... */
    void *arg;            /* ... then arg is the call waiting for it */
};

static void fetch_on_reply(struct alipay_reply *reply, void *arg)
{
    struct fetch *f = arg;
    char why[256] = "";
    char *pem = NULL;
    size_t pem_len = 0;
    if (reply->outcome != ALIPAY_OK)
        snprintf(why, sizeof(why), "the download was answered: %.200s", reply->detail);
    else
        pem = cert_content_pem(reply->node, &pem_len, why, sizeof(why));
    /* trusted for its chain to the roots, whoever signed the answer */
    int ok = pem && alipay_cert_store_admit(f->client->certs, pem, pem_len, f->sn, NULL, why,
                                            sizeof(why)) == 0;
    if (f->done) {
        f->done(ok, ok ? pem : NULL, ok ? pem_len : 0, why, f->arg);
    } else {
        on_cert_resolved(f->arg);
    }
    free(pem);
    free(f);
}

int alipay_client_fetch_cert(struct alipay_client *c, const char *sn, alipay_fetch_cb done,
                             void *arg, char *err, size_t errlen)
{
    char biz[96];
    struct fetch *f = calloc(1, sizeof(*f));
    if (!c->certs || !f || strlen(sn) != ALIPAY_CERT_SN_LEN) {
        free(f);
        snprintf(err, errlen, "%s", !c->certs ? "not in certificate mode" : "bad SN");
        return -1;
    }
    snprintf(f->sn, sizeof(f->sn), "%s", sn);
    f->client = c;
    f->done = done;
    f->arg = arg;
    snprintf(biz, sizeof(biz), "{\"alipay_cert_sn\":\"%s\"}", sn);
    struct alipay_call_params p = {.biz_content = biz};
    if (start_call(c, ALIPAY_CERT_DOWNLOAD, &p, fetch_on_reply, f, sn, err, errlen) < 0) {
        free(f);
        return -1;
    }
    return 0;
}
