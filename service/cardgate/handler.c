/* handler: see handler.h. */
#include "handler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <sys/queue.h>

#include "jsonx.h"
#include "log.h"
#include "store.h"
#include "validate.h"

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

void handler_invalid(struct request *r, const struct validate_error *verr)
{
    reply_error(r, 400, "INVALID_PARAMETER", verr->message, verr->field[0] ? verr->field : NULL,
                NULL);
}

int handler_path_id(struct request *r, const char *field)
{
    struct validate_error verr;
    if (validate_card_no(r->param, &verr, field) == 0)
        return 0;
    handler_invalid(r, &verr);
    return -1;
}

int handler_path_and_body(struct request *r, const char *field)
{
    json_object *body;
    if (handler_path_id(r, field) < 0 || !(body = handler_json_body(r)))
        return -1; /* answered: r is gone */
    r->body = body;
    return 0;
}

json_object *handler_json_body(struct request *r)
{
    if (!is_json_type(request_header(r, "Content-Type"))) {
        reply_error(r, 415, "UNSUPPORTED_MEDIA_TYPE",
                    "Content-Type must be application/json; charset=utf-8", NULL, NULL);
        return NULL;
    }
    size_t len = 0;
    const char *body = request_body(r, &len);
    if (len > API_MAX_BODY) {
        reply_error(r, 413, "PAYLOAD_TOO_LARGE", "the body is over 64 KiB", NULL, NULL);
        return NULL;
    }
    json_object *o = jsonx_parse(body, len);
    if (!o) {
        reply_error(r, 400, "MALFORMED_JSON", "the body is not one valid JSON document", NULL,
                    NULL);
        return NULL;
    }
    return o;
}

int handler_query_params(struct request *r, struct evkeyvalq *q, const char *const allowed[])
{
    const char *query = request_query(r);
    TAILQ_INIT(q);
    /* evhttp decodes %00 into a NUL that cuts the value short: refused
     * whole, like a query it cannot parse. */
    if (query && (strstr(query, "%00") || evhttp_parse_query_str(query, q) < 0)) {
        evhttp_clear_headers(q);
        reply_error(r, 400, "INVALID_PARAMETER", "the query string cannot be parsed", NULL, NULL);
        return -1;
    }
    for (struct evkeyval *kv = TAILQ_FIRST(q); kv; kv = TAILQ_NEXT(kv, next)) {
        int known = 0, twice = 0;
        for (size_t i = 0; allowed[i] && !known; i++)
            known = strcmp(kv->key, allowed[i]) == 0;
        /* evhttp_find_header would take the first of two: which one the
         * caller meant is not known. */
        for (struct evkeyval *o = TAILQ_FIRST(q); o != kv && !twice; o = TAILQ_NEXT(o, next))
            twice = strcmp(o->key, kv->key) == 0;
        if (!known || twice) {
            char msg[200];
            snprintf(msg, sizeof(msg), "%s query parameter %.100s", twice ? "repeated" : "unknown",
                     kv->key);
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

void handler_attempt_token(struct worker *w, char out[33])
{
    /* the worker's 16 random hex digits, then its count in 16 more */
    snprintf(out, 33, "%.16s%016lx", w->id_prefix, ++w->id_seq);
}

void handler_gateway_answered(struct request *r, enum metrics_method m,
                              const struct alipay_reply *rep)
{
    struct server *srv = r->w->srv;
    const char *method = metrics_method_name(m);
    atomic_fetch_sub(&srv->metrics.gateway_in_flight, 1);
    handler_log_gateway(r, method, rep);
    if (rep->not_sent)
        return;
    metrics_gateway(&srv->metrics, m, rep->outcome, rep->latency_ms);
    store_record_call(r->w->pg, srv->cfg.alipay_app_id, method, r->ledger.serial,
                      alipay_outcome_name(rep->outcome), rep->code, rep->sub_code, rep->http_status,
                      (long)rep->latency_ms);
}

/* A call needs at least this much of the request's deadline to be worth
 * making. */
#define MIN_CALL_MS 200

void handler_call_params(struct request *r, const char *method, struct alipay_call_params *p,
                         alipay_client_cb cb)
{
    char err[256];
    long long left = r->deadline_ms - server_now_ms();
    atomic_fetch_add(&r->w->srv->metrics.gateway_in_flight, 1);
    if (left < MIN_CALL_MS) {
        struct alipay_reply none = {.outcome = ALIPAY_TIMEOUT, .not_sent = 1};
        snprintf(none.detail, sizeof(none.detail),
                 "%s not sent: the request's deadline (CARDGATE_REQUEST_DEADLINE_MS) has passed",
                 method);
        cb(&none, r);
        return;
    }
    p->timeout_ms = (long)left;
    if (alipay_client_call_params(r->w->alipay, method, p, cb, r, err, sizeof(err)) == 0)
        return;
    struct alipay_reply none = {.outcome = ALIPAY_UNAVAILABLE, .not_sent = 1};
    snprintf(none.detail, sizeof(none.detail), "%s not sent: %.200s", method, err);
    cb(&none, r);
}

void handler_call_gateway(struct request *r, const char *method, char *biz, const char *auth_token,
                          const char *app_auth_token, alipay_client_cb cb)
{
    if (!biz) {
        atomic_fetch_add(&r->w->srv->metrics.gateway_in_flight, 1);
        struct alipay_reply none = {.outcome = ALIPAY_UNAVAILABLE, .not_sent = 1};
        snprintf(none.detail, sizeof(none.detail), "%s not sent: out of memory", method);
        cb(&none, r);
        return;
    }
    struct alipay_call_params p = {
        .biz_content = biz, .auth_token = auth_token, .app_auth_token = app_auth_token};
    handler_call_params(r, method, &p, cb);
    free(biz);
}
