/* alipay_client: see alipay_client.h. */
#include "alipay_client.h"

#include <time.h>

#include <stdatomic.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct alipay_client {
    char *gateway_url;
    char *app_id;
    EVP_PKEY *app_key;
    struct alipay_signer *signer; /* app_key, prepared once (alipay_sign.h) */
    EVP_PKEY *alipay_key;
    _Atomic(struct alipay_trust *) *trust;
    enum alipay_sign_type sign_type;
    long timeout_ms;
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
    c->app_key = cfg->app_key;
    c->signer = alipay_signer_new(cfg->app_key, cfg->sign_type, err, errlen);
    if (!c->signer) {
        alipay_client_free(c);
        return NULL;
    }
    c->alipay_key = cfg->alipay_key;
    c->trust = cfg->trust;
    c->sign_type = cfg->sign_type;
    c->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 15000;
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
        free(call);
    }
    alipay_signer_free(c->signer);
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

static const char *const public_order[] = {"app_id",         "method",     "format",  "charset",
                                           "sign_type",      "timestamp",  "version", "auth_token",
                                           "app_auth_token", "grant_type", "code",    "sign"};

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
    char *content = NULL, *sign = NULL;
    memset(out, 0, sizeof(*out));
    alipay_params_init(&p);
    alipay_sign_timestamp(now, ts);
    if (alipay_params_set(&p, "app_id", c->app_id) || alipay_params_set(&p, "method", method) ||
        alipay_params_set(&p, "format", "JSON") || alipay_params_set(&p, "charset", "utf-8") ||
        alipay_params_set(&p, "sign_type", alipay_sign_type_name(c->sign_type)) ||
        alipay_params_set(&p, "timestamp", ts) || alipay_params_set(&p, "version", "1.0") ||
        alipay_params_set(&p, "auth_token", cp->auth_token) ||
        alipay_params_set(&p, "app_auth_token", cp->app_auth_token) ||
        alipay_params_set(&p, "grant_type", cp->grant_type) ||
        alipay_params_set(&p, "code", cp->code) ||
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
    alipay_params_free(&p);
    return rc;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Judges with the key in force; after a rotation, an answer the new key
 * does not verify is tried with the previous key while its grace lasts. */
static void judge_with_trust(const struct alipay_client *c, const struct alipay_http_response *res,
                             const char *method, struct alipay_reply *reply)
{
    struct alipay_trust *t = c->trust ? atomic_load(c->trust) : NULL;
    EVP_PKEY *key = t ? t->current : c->alipay_key;
    double latency = reply->latency_ms;
    long status = reply->http_status;
    alipay_response_judge(res->body, res->body_len, method, key, c->sign_type, reply);
    if (reply->outcome != ALIPAY_BAD_SIGNATURE || !t || !t->previous ||
        mono_ms() >= t->previous_until_ms)
        return;
    alipay_reply_free(reply);
    memset(reply, 0, sizeof(*reply));
    reply->latency_ms = latency;
    reply->http_status = status;
    alipay_response_judge(res->body, res->body_len, method, t->previous, c->sign_type, reply);
}

static void on_http_done(const struct alipay_http_response *res, void *arg)
{
    struct call *call = arg;
    struct alipay_client *c = call->client;
    struct alipay_reply reply;
    memset(&reply, 0, sizeof(reply));
    reply.latency_ms = res->total_ms;
    switch (res->status) {
    case ALIPAY_HTTP_DONE:
        reply.http_status = res->http_code;
        if (res->http_code == 200) {
            judge_with_trust(c, res, call->method, &reply);
        } else {
            reply.outcome = ALIPAY_UNAVAILABLE;
            snprintf(reply.detail, sizeof(reply.detail), "gateway answered HTTP %ld",
                     res->http_code);
        }
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
    call_unlink(call);
    call->cb(&reply, call->arg);
    alipay_reply_free(&reply);
    free(call);
}

int alipay_client_call(struct alipay_client *c, const char *method, const char *biz_content,
                       const char *auth_token, const char *app_auth_token, alipay_client_cb cb,
                       void *arg, char *err, size_t errlen)
{
    struct alipay_call_params p = {
        .biz_content = biz_content, .auth_token = auth_token, .app_auth_token = app_auth_token};
    return alipay_client_call_params(c, method, &p, cb, arg, err, errlen);
}

int alipay_client_call_params(struct alipay_client *c, const char *method,
                              const struct alipay_call_params *p, alipay_client_cb cb, void *arg,
                              char *err, size_t errlen)
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
