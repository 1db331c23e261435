/* cards: the /v1/cards handlers — open (with the idempotency ledger), query,
 * the POS lookup, and listing the card mappings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <openssl/rand.h>

#include "alipay_card.h"
#include "alipay_client.h"
#include "jsonx.h"
#include "log.h"
#include "recorder.h"
#include "routes.h"
#include "store.h"

#define JSON_TYPE "application/json; charset=utf-8"

static const char *input_header(struct request *r, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

static void database_unavailable(struct request *r, const char *error)
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

/* Reads and parses the JSON body; answers the error itself and returns
 * NULL when it cannot. */
static json_object *read_json_body(struct request *r)
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

static void utc_now(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* key: v, or key: null when v is NULL (the contract lists these fields always). */
static void add_nullable(json_object *o, const char *key, const char *v)
{
    json_object_object_add(o, key, v ? json_object_new_string(v) : NULL);
}

/* The contract's answer for a gateway outcome other than success. Sets
 * *status and returns the body (malloc'd). */
static char *gateway_error(const struct alipay_reply *rep, int is_query, int *status)
{
    const char *code, *msg;
    /* Alipay's codes go to the caller only where the signature held. */
    const struct alipay_reply *a = rep->verified ? rep : NULL;
    switch (rep->outcome) {
    case ALIPAY_REJECTED:
        if (is_query && alipay_card_not_found(rep)) {
            *status = 404, code = "CARD_NOT_FOUND", msg = "Alipay has no such card";
        } else {
            *status = 422, code = "ALIPAY_REJECTED", msg = "Alipay refused the request";
        }
        break;
    case ALIPAY_AUTH_FAILED:
        *status = 422, code = "ALIPAY_AUTH_FAILED",
        msg = "Alipay refused the user's or the provider's token; retry with a fresh token";
        break;
    case ALIPAY_REFUSED:
        *status = 502, code = "ALIPAY_REQUEST_REFUSED",
        msg = "the gateway refused our request (configuration or signing)";
        break;
    case ALIPAY_UNAVAILABLE:
        *status = 502, code = "ALIPAY_UNAVAILABLE", msg = "the Alipay gateway is unavailable";
        break;
    case ALIPAY_TIMEOUT:
        *status = 504, code = "ALIPAY_TIMEOUT", msg = "the Alipay gateway did not answer in time";
        a = NULL;
        break;
    case ALIPAY_BAD_SIGNATURE:
    case ALIPAY_OK:
    default:
        *status = 502, code = "ALIPAY_BAD_SIGNATURE",
        msg = "the gateway's answer could not be verified; its content is not trusted";
        a = NULL;
        break;
    }
    char message[384];
    snprintf(message, sizeof(message), "%s (%s)", msg, rep->detail);
    return error_body(code, message, NULL, a);
}

static void log_gateway(struct request *r, const char *method, const struct alipay_reply *rep)
{
    char ms[32];
    snprintf(ms, sizeof(ms), "%.1f", rep->latency_ms);
    log_write(&r->w->srv->log, rep->outcome == ALIPAY_OK ? LOG_DEBUG : LOG_WARN, "gateway call",
              "request_id", r->id, "method", method, "outcome", alipay_outcome_name(rep->outcome),
              "code", rep->code, "sub_code", rep->sub_code, "detail", rep->detail, "latency_ms", ms,
              NULL);
}

/* --- POST /v1/cards ------------------------------------------------------ */

static void open_recorded(int ok, int held, const char *error, void *arg)
{
    struct request *r = arg;
    struct record *rec = r->record;
    r->record = NULL;
    if (ok) {
        recorder_drop(rec);
        if (!held)
            log_write(&r->w->srv->log, LOG_WARN, "outcome not taken: the request was taken over",
                      "request_id", r->id, "out_serial_no", r->open.out_serial_no, NULL);
    } else if (rec) {
        /* A card Alipay opened, or its final refusal, must reach the
         * ledger: the caller hears the truth now and the write goes on. */
        recorder_start(rec);
    } else {
        /* A non-final outcome: the lock runs out and a retry goes on. */
        log_write(&r->w->srv->log, LOG_WARN, "outcome not recorded", "request_id", r->id, "error",
                  error, NULL);
    }
    reply_send(r, r->status, JSON_TYPE, r->answer);
}

/* Location: /v1/cards/{biz_card_no}, for a 201 and its replays. */
static void add_location(struct request *r, const char *biz_card_no)
{
    char *enc = evhttp_uriencode(biz_card_no, -1, 0);
    char location[160];
    snprintf(location, sizeof(location), "/v1/cards/%s", enc ? enc : "");
    reply_add_header(r, "Location", location);
    free(enc);
}

/* The 201 body; external_card_no as Alipay returned it, else the caller's. */
static char *open_success_body(struct request *r, const struct alipay_card_open_result *res,
                               const char *external_card_no)
{
    char now[32];
    utc_now(now);
    json_object *o = json_object_new_object();
    add_nullable(o, "out_serial_no", r->open.out_serial_no);
    add_nullable(o, "biz_card_no", res->card.biz_card_no);
    add_nullable(o, "external_card_no", external_card_no);
    add_nullable(o, "card_template_id", r->open.card_template_id);
    add_nullable(o, "user_id", r->open.user_id);
    json_object_object_add(o, "card", json_object_get(res->card.json));
    add_nullable(o, "open_card_channel",
                 res->open_card_channel ? res->open_card_channel : r->open.open_card_channel);
    add_nullable(o, "open_card_channel_id",
                 res->open_card_channel_id ? res->open_card_channel_id
                                           : r->open.open_card_channel_id);
    add_nullable(o, "created_at", now);
    char *text = jsonx_text(o);
    json_object_put(o);
    return text;
}

static void open_answered(struct alipay_reply *rep, void *arg)
{
    struct request *r = arg;
    struct server *srv = r->w->srv;
    atomic_fetch_sub(&srv->metrics.gateway_in_flight, 1);
    struct alipay_card_open_result res;
    const char *state = "failed", *biz_card_no = NULL, *external_card_no = NULL;
    if (rep->outcome == ALIPAY_OK && alipay_card_open_read(rep, &res) == 0) {
        biz_card_no = res.card.biz_card_no;
        external_card_no =
            res.card.external_card_no ? res.card.external_card_no : r->open.external_card_no;
        r->status = 201;
        r->answer = open_success_body(r, &res, external_card_no);
        state = "succeeded";
        add_location(r, biz_card_no);
    } else {
        r->answer = gateway_error(rep, 0, &r->status);
        if (rep->outcome == ALIPAY_REJECTED)
            state = "rejected";
    }
    metrics_gateway(&srv->metrics, METRICS_METHOD_OPEN, rep->outcome, rep->latency_ms);
    log_gateway(r, ALIPAY_CARD_OPEN, rep);
    struct store_completion c = {
        .app_id = srv->cfg.alipay_app_id,
        .serial = r->open.out_serial_no,
        .token = r->token,
        .state = state,
        .outcome = alipay_outcome_name(rep->outcome),
        .code = rep->code,
        .sub_code = rep->sub_code,
        .http_status = r->status,
        .body = r->answer,
        .latency_ms = (long)rep->latency_ms,
        .biz_card_no = biz_card_no,
        .external_card_no = external_card_no,
        .user_id = r->open.user_id,
        .template_id = r->open.card_template_id,
    };
    if (strcmp(state, "failed") != 0)
        r->record = recorder_keep(r->w, &c, r->id);
    if (store_complete(r->w->pg, &c, open_recorded, r) < 0)
        open_recorded(0, 0, "database queue full", r);
}

static void open_replay(struct request *r, const struct store_claim *c)
{
    atomic_fetch_add(&r->w->srv->metrics.idempotent_replays, 1);
    reply_add_header(r, "Idempotent-Replayed", "true");
    if (c->http_status == 201 && c->biz_card_no)
        add_location(r, c->biz_card_no);
    reply_send(r, c->http_status, JSON_TYPE, c->body);
}

static void open_claimed(const struct store_claim *c, const char *error, void *arg)
{
    struct request *r = arg;
    if (!c)
        return database_unavailable(r, error);
    switch (c->verdict) {
    case STORE_REPLAY:
        return open_replay(r, c);
    case STORE_MISMATCH:
        return reply_error(r, 422, "OUT_SERIAL_NO_REUSED",
                           "this out_serial_no was already used for a different request",
                           "out_serial_no", NULL);
    case STORE_IN_PROGRESS:
        reply_add_header(r, "Retry-After", "1");
        return reply_error(r, 409, "REQUEST_IN_PROGRESS",
                           "a request with this out_serial_no is in progress; retry later",
                           "out_serial_no", NULL);
    case STORE_CLAIMED:
        break;
    }
    char err[256];
    char *biz = validate_card_open_biz(&r->open);
    int rc = biz ? alipay_client_call(r->w->alipay, ALIPAY_CARD_OPEN, biz, r->open.auth_token,
                                      r->open.app_auth_token, open_answered, r, err, sizeof(err))
                 : -1;
    free(biz);
    if (rc == 0) {
        atomic_fetch_add(&r->w->srv->metrics.gateway_in_flight, 1);
        return;
    }
    /* Nothing was sent: release the claim as a failure so a retry may go. */
    struct alipay_reply none = {.outcome = ALIPAY_UNAVAILABLE};
    snprintf(none.detail, sizeof(none.detail), "request not sent: %.200s",
             biz ? err : "out of memory");
    atomic_fetch_add(&r->w->srv->metrics.gateway_in_flight, 1);
    open_answered(&none, r);
}

void cards_open(struct request *r)
{
    struct server *srv = r->w->srv;
    struct validate_error verr;
    json_object *body = read_json_body(r); /* on NULL it has answered, and r is gone */
    if (!body)
        return;
    r->body = body;
    if (validate_card_open(r->body, &r->open, &verr) < 0)
        return reply_error(r, 400, "INVALID_PARAMETER", verr.message,
                           verr.field[0] ? verr.field : NULL, NULL);
    if (validate_request_hash(r->body, srv->hash_key, sizeof(srv->hash_key), r->hash) < 0)
        return reply_error(r, 500, "INTERNAL", "cannot hash the request", NULL, NULL);
    unsigned char raw[16];
    RAND_bytes(raw, sizeof(raw));
    for (size_t i = 0; i < sizeof(raw); i++)
        sprintf(r->token + 2 * i, "%02x", raw[i]);
    long stale = srv->cfg.alipay_timeout_ms + srv->cfg.lock_margin_ms;
    if (store_claim(r->w->pg, srv->cfg.alipay_app_id, r->open.out_serial_no, r->hash, r->caller,
                    r->token, stale, open_claimed, r) < 0)
        database_unavailable(r, "database queue full");
}

/* --- GET /v1/cards/{biz_card_no} and /v1/cards/lookup -------------------- */

static void query_answered(struct alipay_reply *rep, void *arg)
{
    struct request *r = arg;
    struct server *srv = r->w->srv;
    atomic_fetch_sub(&srv->metrics.gateway_in_flight, 1);
    struct alipay_card_query_result res;
    int ok = rep->outcome == ALIPAY_OK && alipay_card_query_read(rep, &res) == 0;
    metrics_gateway(&srv->metrics, METRICS_METHOD_QUERY, rep->outcome, rep->latency_ms);
    log_gateway(r, ALIPAY_CARD_QUERY, rep);
    store_record_call(r->w->pg, srv->cfg.alipay_app_id, ALIPAY_CARD_QUERY, NULL,
                      alipay_outcome_name(rep->outcome), rep->code, rep->sub_code, rep->http_status,
                      (long)rep->latency_ms);
    if (!ok) {
        int status;
        char *body = gateway_error(rep, 1, &status);
        reply_send(r, status, JSON_TYPE, body);
        free(body);
        return;
    }
    json_object *o = json_object_new_object();
    add_nullable(o, "biz_card_no", res.card.biz_card_no);
    json_object_object_add(o, "card", json_object_get(res.card.json));
    add_nullable(o, "schema_url", res.schema_url);
    reply_json(r, 200, o);
}

static void query_call(struct request *r, const char *type)
{
    char err[256];
    char *biz = alipay_card_query_biz(r->target, type, r->user_id);
    int rc = biz ? alipay_client_call(r->w->alipay, ALIPAY_CARD_QUERY, biz, NULL, NULL,
                                      query_answered, r, err, sizeof(err))
                 : -1;
    free(biz);
    if (rc < 0)
        return reply_error(r, 500, "INTERNAL", "cannot build the gateway request", NULL, NULL);
    atomic_fetch_add(&r->w->srv->metrics.gateway_in_flight, 1);
}

/* Parses the query string into q and refuses parameters other than the
 * `allowed` ones (NULL-terminated). Answers the error itself. */
static int query_params(struct request *r, struct evkeyvalq *q, const char *const allowed[])
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

static int take_user_id(struct request *r, const char *user_id)
{
    if (!user_id)
        return 0;
    if (validate_user_id(user_id) < 0) {
        reply_error(r, 400, "INVALID_PARAMETER", "user_id must be 16 digits starting with 2088",
                    "user_id", NULL);
        return -1;
    }
    r->user_id = strdup(user_id);
    return 0;
}

void cards_query(struct request *r, const char *biz_card_no)
{
    static const char *const allowed[] = {"user_id", NULL};
    struct evkeyvalq q;
    struct validate_error verr;
    if (query_params(r, &q, allowed) < 0)
        return;
    if (validate_card_no(biz_card_no, &verr, "biz_card_no") < 0) {
        evhttp_clear_headers(&q);
        return reply_error(r, 400, "INVALID_PARAMETER", verr.message, verr.field, NULL);
    }
    int bad = take_user_id(r, evhttp_find_header(&q, "user_id")) < 0;
    evhttp_clear_headers(&q);
    if (bad)
        return;
    r->target = strdup(biz_card_no);
    query_call(r, "BIZ_CARD");
}

void cards_lookup(struct request *r)
{
    static const char *const allowed[] = {"code", "type", NULL};
    struct evkeyvalq q;
    struct validate_error verr;
    if (query_params(r, &q, allowed) < 0)
        return;
    const char *code = evhttp_find_header(&q, "code");
    const char *type = evhttp_find_header(&q, "type");
    if (!code || validate_card_no(code, &verr, "code") < 0) {
        reply_error(r, 400, "INVALID_PARAMETER",
                    code ? verr.message : "code is required: the dynamic code scanned at the till",
                    "code", NULL);
    } else if (!type || (strcmp(type, "D_QR_CODE") != 0 && strcmp(type, "D_BAR_CODE") != 0)) {
        reply_error(r, 400, "INVALID_PARAMETER", "type must be D_QR_CODE or D_BAR_CODE", "type",
                    NULL);
    } else {
        r->target = strdup(code);
        const char *t = strcmp(type, "D_QR_CODE") == 0 ? "D_QR_CODE" : "D_BAR_CODE";
        evhttp_clear_headers(&q);
        return query_call(r, t);
    }
    evhttp_clear_headers(&q);
}

/* --- GET /v1/cards?filter ------------------------------------------------ */

static void cards_listed(json_object *cards, int unavailable, const char *error, void *arg)
{
    struct request *r = arg;
    if (!cards) {
        if (unavailable)
            return database_unavailable(r, error);
        log_write(&r->w->srv->log, LOG_ERROR, "card list failed", "request_id", r->id, "error",
                  error, NULL);
        return reply_error(r, 500, "INTERNAL", "the card list query failed", NULL, NULL);
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "cards", cards);
    reply_json(r, 200, o);
}

void cards_list(struct request *r)
{
    static const char *const allowed[] = {"external_card_no", "user_id", "out_serial_no", NULL};
    struct evkeyvalq q;
    if (query_params(r, &q, allowed) < 0)
        return;
    int n = 0;
    enum store_card_filter by = STORE_BY_USER_ID;
    const char *value = NULL;
    for (struct evkeyval *kv = TAILQ_FIRST(&q); kv; kv = TAILQ_NEXT(kv, next)) {
        n++;
        value = kv->value;
        by = strcmp(kv->key, "external_card_no") == 0 ? STORE_BY_EXTERNAL_CARD_NO
             : strcmp(kv->key, "user_id") == 0        ? STORE_BY_USER_ID
                                                      : STORE_BY_OUT_SERIAL_NO;
    }
    int chars_ok = 0;
    size_t chars = value ? validate_utf8_chars(value, &chars_ok) : 0;
    if (n != 1) {
        reply_error(r, 400, "INVALID_PARAMETER",
                    "give exactly one filter: external_card_no, user_id or out_serial_no", NULL,
                    NULL);
    } else if (!chars_ok || chars == 0 || chars > 64) {
        reply_error(r, 400, "INVALID_PARAMETER", "the filter value must be 1 to 64 characters",
                    TAILQ_FIRST(&q)->key, NULL);
    } else {
        char *v = strdup(value);
        evhttp_clear_headers(&q);
        if (store_cards_list(r->w->pg, r->w->srv->cfg.alipay_app_id, by, v, cards_listed, r) < 0)
            database_unavailable(r, "database queue full");
        free(v);
        return;
    }
    evhttp_clear_headers(&q);
}
