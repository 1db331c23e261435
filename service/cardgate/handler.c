/* handler: see handler.h. */
#include "handler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <openssl/rand.h>
#include <sys/queue.h>

#include "jsonx.h"
#include "log.h"

static const char *input_header(struct request *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

void handler_database_unavailable(struct request *r, const char *error)
{
    struct server *srv = r->w->srv;
    atomic_fetch_add(&srv->metrics.db_errors, 1);
    log_write(&srv->log, LOG_WARN, "database unavailable", "request_id", r->id, "error", error,
              NULL);
    reply_error(r, 503, "DATABASE_UNAVAILABLE", "the database is unavailable; retry later", NULL,
                NULL);
}

/* "application/json" with optional parameters (charset=utf-8). */
static int is_json_type(const char *ct)
{
    if (!ct)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

json_object *handler_json_body(struct request *r)
{
    if (!is_json_type(input_header(r, "Content-Type"))) {
        reply_error(r, 415, "UNSUPPORTED_MEDIA_TYPE",
                    "Content-Type must be application/json; charset=utf-8", NULL, NULL);
        return NULL;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    size_t len = evbuffer_get_length(in);
    if (len > API_MAX_BODY) {
        reply_error(r, 413, "PAYLOAD_TOO_LARGE", "the body is over 64 KiB", NULL, NULL);
        return NULL;
    }
    json_object *o = jsonx_parse((const char *)evbuffer_pullup(in, -1), len);
    if (!o) {
        reply_error(r, 400, "MALFORMED_JSON", "the body is not one valid JSON document", NULL,
                    NULL);
        return NULL;
    }
    return o;
}

int handler_query_params(struct request *r, struct evkeyvalq *q, const char *const allowed[])
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->req));
    TAILQ_INIT(q);
    if (query && evhttp_parse_query_str(query, q) < 0) {
        reply_error(r, 400, "INVALID_PARAMETER", "the query string cannot be parsed", NULL, NULL);
        return -1;
    }
    for (struct evkeyval *kv = TAILQ_FIRST(q); kv; kv = TAILQ_NEXT(kv, next)) {
        int known = 0;
        for (size_t i = 0; allowed[i] && !known; i++)
            known = strcmp(kv->key, allowed[i]) == 0;
        if (!known) {
            char msg[200];
            snprintf(msg, sizeof(msg), "unknown query parameter %.100s", kv->key);
            reply_error(r, 400, "INVALID_PARAMETER", msg, kv->key, NULL);
            evhttp_clear_headers(q);
            return -1;
        }
    }
    return 0;
}

void handler_utc_now(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void handler_add_nullable(json_object *o, const char *key, const char *v)
{
    json_object_object_add(o, key, v ? json_object_new_string(v) : NULL);
}

void handler_add_location(struct request *r, const char *biz_card_no)
{
    char *enc = evhttp_uriencode(biz_card_no, -1, 0);
    char location[160];
    snprintf(location, sizeof(location), "/v1/cards/%s", enc ? enc : "");
    reply_add_header(r, "Location", location);
    free(enc);
}

void handler_log_gateway(struct request *r, const char *method, const struct alipay_reply *rep)
{
    char ms[32];
    snprintf(ms, sizeof(ms), "%.1f", rep->latency_ms);
    log_write(&r->w->srv->log, rep->outcome == ALIPAY_OK ? LOG_DEBUG : LOG_WARN, "gateway call",
              "request_id", r->id, "method", method, "outcome", alipay_outcome_name(rep->outcome),
              "code", rep->code, "sub_code", rep->sub_code, "detail", rep->detail, "latency_ms", ms,
              NULL);
}

int handler_random_token(char out[33])
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    for (size_t i = 0; i < sizeof(raw); i++)
        sprintf(out + 2 * i, "%02x", raw[i]);
    return 0;
}

void handler_call_gateway(struct request *r, const char *method, char *biz, const char *auth_token,
                          const char *app_auth_token, alipay_client_cb cb)
{
    char err[256];
    int rc = biz ? alipay_client_call(r->w->alipay, method, biz, auth_token, app_auth_token, cb, r,
                                      err, sizeof(err))
                 : -1;
    atomic_fetch_add(&r->w->srv->metrics.gateway_in_flight, 1);
    if (rc == 0) {
        free(biz);
        return;
    }
    struct alipay_reply none = {.outcome = ALIPAY_UNAVAILABLE};
    snprintf(none.detail, sizeof(none.detail), "%s not sent: %.200s", method,
             biz ? err : "out of memory");
    free(biz);
    cb(&none, r);
}
