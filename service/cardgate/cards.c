/* cards: the /v1/cards resource — open, update and delete (each through the
 * ledger: ledger.h), query, the POS lookup, and listing the card mappings. */
#include "cards.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>

#include "alipay_card.h"
#include "alipay_client.h"
#include "handler.h"
#include "jsonx.h"
#include "log.h"
#include "store.h"
#include "validate.h"

/* Takes o (a new object) and returns its compact text, malloc'd. */
static char *text_of(json_object *o)
{
    char *text = jsonx_text(o);
    json_object_put(o);
    return text;
}

/* A string field of o, or NULL. */
static const char *str_of(json_object *o, const char *key)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* Copies o's string fields named in keys (NULL-terminated) into to. */
static void copy_strings(json_object *to, json_object *o, const char *const keys[])
{
    for (size_t i = 0; keys[i]; i++) {
        const char *v = str_of(o, keys[i]);
        if (v)
            json_object_object_add(to, keys[i], json_object_new_string(v));
    }
}

/* The request hash of `what` (the body, or what stands for it) for a
 * change of card biz_card_no: the card is part of the request's meaning, so
 * one out_serial_no used for two cards is a reuse. Returns 0 or -1. */
static int change_hash(struct request *r, const char *operation, const char *biz_card_no,
                       json_object *what, char out[65])
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "biz_card_no", json_object_new_string(biz_card_no));
    json_object_object_add(o, operation, json_object_get(what));
    int rc = validate_request_hash(o, r->w->hasher, out);
    json_object_put(o);
    return rc;
}

/* Fills out with the three malloc'd pieces of a success, or frees them all
 * and returns -1 when one is missing (out of memory). */
static int success_take(struct ledger_success *out, int status, char *body, char *biz_card_no,
                        char *card)
{
    if (!body || !biz_card_no || !card) {
        free(body);
        free(biz_card_no);
        free(card);
        return -1;
    }
    *out = (struct ledger_success){status, body, biz_card_no, card};
    return 0;
}

/* --- POST /v1/cards ------------------------------------------------------ */

static char *open_biz(struct request *r)
{
    return validate_card_open_biz(r->data);
}

/* The 201 body; external_card_no as Alipay returned it, else the caller's. */
static int open_success(struct request *r, struct alipay_reply *rep, struct ledger_success *out)
{
    const struct validate_card_open *req = r->data;
    struct alipay_card_open_result res;
    if (!rep || alipay_card_open_read(rep, &res) < 0)
        return -1;
    const char *external_card_no =
        res.card.external_card_no ? res.card.external_card_no : req->external_card_no;
    char now[32];
    handler_utc_now(now);
    json_object *o = json_object_new_object();
    handler_add_nullable(o, "out_serial_no", req->out_serial_no);
    handler_add_nullable(o, "biz_card_no", res.card.biz_card_no);
    handler_add_nullable(o, "external_card_no", external_card_no);
    handler_add_nullable(o, "card_template_id", req->card_template_id);
    handler_add_nullable(o, "user_id", req->user_id);
    json_object_object_add(o, "card", json_object_get(res.card.json));
    handler_add_nullable(o, "open_card_channel",
                         res.open_card_channel ? res.open_card_channel : req->open_card_channel);
    handler_add_nullable(o, "open_card_channel_id",
                         res.open_card_channel_id ? res.open_card_channel_id
                                                  : req->open_card_channel_id);
    handler_add_nullable(o, "created_at", now);

    /* What cards keeps: the mapping, and the values Alipay accepted. */
    static const char *const kept[] = {"level", "point", "balance", NULL};
    json_object *card = json_object_new_object();
    handler_add_nullable(card, "external_card_no", external_card_no);
    handler_add_nullable(card, "user_id", req->user_id);
    handler_add_nullable(card, "card_template_id", req->card_template_id);
    copy_strings(card, res.card.json, kept);

    return success_take(out, 201, text_of(o), strdup(res.card.biz_card_no), text_of(card));
}

/* A 201 and its replays carry Location: /v1/cards/{biz_card_no}. */
static void open_decorate(struct request *r, int status, const char *biz_card_no, const char *body)
{
    (void)body;
    if (status == 201 && biz_card_no)
        handler_add_location(r, biz_card_no);
}

static const struct ledger_op open_op = {
    .operation = "open",
    .method = ALIPAY_CARD_OPEN,
    .metric = METRICS_METHOD_OPEN,
    .decorate = open_decorate,
    .biz = open_biz,
    .success = open_success,
};

static void cards_open(struct request *r)
{
    struct validate_error verr;
    struct validate_card_open *req = calloc(1, sizeof(*req));
    if (!req) {
        reply_error(r, 500, "INTERNAL", "out of memory", NULL, NULL);
        return;
    }
    r->data = req;
    r->free_data = free;
    json_object *body = handler_json_body(r); /* on NULL it has answered, and r is gone */
    if (!body)
        return;
    r->body = body;
    if (validate_card_open(r->body, req, &verr) < 0) {
        handler_invalid(r, &verr);
        return;
    }
    char hash[65];
    if (validate_request_hash(r->body, r->w->hasher, hash) < 0) {
        reply_error(r, 500, "INTERNAL", "cannot hash the request", NULL, NULL);
        return;
    }
    struct ledger_key key = {
        .serial = req->out_serial_no,
        .hash = hash,
        .auth_token = req->auth_token,
        .app_auth_token = req->app_auth_token,
    };
    ledger_run(r, &open_op, &key);
}

/* --- PATCH /v1/cards/{biz_card_no} --------------------------------------- */

static char *update_biz(struct request *r)
{
    return validate_card_update_biz(r->data, r->param);
}

static int update_success(struct request *r, struct alipay_reply *rep, struct ledger_success *out)
{
    const struct validate_card_update *req = r->data;
    (void)rep; /* card.update answers nothing beyond its code */
    char now[32];
    handler_utc_now(now);
    json_object *o = json_object_new_object();
    handler_add_nullable(o, "biz_card_no", r->param);
    handler_add_nullable(o, "out_serial_no", req->out_serial_no);
    handler_add_nullable(o, "occur_time", req->occur_time);
    json_object_object_add(o, "card", json_object_get(req->card));
    handler_add_nullable(o, "updated_at", now);

    static const char *const kept[] = {"external_card_no", "level", "point", "balance", NULL};
    json_object *card = json_object_new_object();
    handler_add_nullable(card, "occur_time", req->occur_time);
    copy_strings(card, req->card, kept);

    return success_take(out, 200, text_of(o), strdup(r->param), text_of(card));
}

/* The previous attempt may have reached Alipay: look at the card first, and
 * send the update again only when the card does not show it yet, so that a
 * member never gets the same "+20 points" message twice. */
static void update_verified(struct alipay_reply *rep, void *arg)
{
    struct request *r = arg;
    const struct validate_card_update *req = r->data;
    struct alipay_card_query_result res;
    int ok = rep->outcome == ALIPAY_OK && alipay_card_query_read(rep, &res) == 0;
    handler_gateway_answered(r, METRICS_METHOD_QUERY, rep);
    if (ok && alipay_card_info_shows(res.card.json, req->card)) {
        ledger_succeed_unsent(r, rep);
        return;
    }
    /* Not applied, or no such card (the update's own answer will say so). */
    if (ok || alipay_card_not_found(rep)) {
        ledger_send(r);
        return;
    }
    ledger_fail(r, rep);
}

static void update_verify(struct request *r)
{
    handler_call_gateway(r, ALIPAY_CARD_QUERY, alipay_card_query_biz(r->param, "BIZ_CARD", NULL),
                         NULL, NULL, update_verified);
}

static const struct ledger_op update_op = {
    .operation = "update",
    .method = ALIPAY_CARD_UPDATE,
    .metric = METRICS_METHOD_UPDATE,
    .card_not_found_404 = 1,
    .gateway_calls = 2, /* verify's query, then the update */
    .cool_down = 1,
    .biz = update_biz,
    .success = update_success,
    .verify = update_verify,
};

static void cards_update(struct request *r)
{
    struct validate_error verr;
    struct validate_card_update *req = calloc(1, sizeof(*req));
    if (!req) {
        reply_error(r, 500, "INTERNAL", "out of memory", NULL, NULL);
        return;
    }
    r->data = req;
    r->free_data = free;
    if (handler_path_and_body(r, "biz_card_no") < 0)
        return;
    if (validate_card_update(r->body, req, &verr) < 0) {
        handler_invalid(r, &verr);
        return;
    }
    char hash[65];
    if (change_hash(r, "update", r->param, r->body, hash) < 0) {
        reply_error(r, 500, "INTERNAL", "cannot hash the request", NULL, NULL);
        return;
    }
    struct ledger_key key = {
        .serial = req->out_serial_no,
        .hash = hash,
        .biz_card_no = r->param,
        .occur_time = req->occur_time,
        .external_card_no = req->external_card_no,
    };
    ledger_run(r, &update_op, &key);
}

/* --- DELETE /v1/cards/{biz_card_no}?out_serial_no=…&reason_code=… -------- */

/* The delete's parameters, in r->body as {"out_serial_no","reason_code"}:
 * that object is also what the request hash covers. */
static char *delete_biz(struct request *r)
{
    return alipay_card_delete_biz(str_of(r->body, "out_serial_no"), r->param,
                                  str_of(r->body, "reason_code"));
}

static int delete_success(struct request *r, struct alipay_reply *rep, struct ledger_success *out)
{
    const char *biz_serial_no = rep ? alipay_card_delete_read(rep) : NULL;
    if (!biz_serial_no)
        return -1;
    char now[32];
    handler_utc_now(now);
    json_object *o = json_object_new_object();
    handler_add_nullable(o, "biz_card_no", r->param);
    handler_add_nullable(o, "out_serial_no", str_of(r->body, "out_serial_no"));
    handler_add_nullable(o, "reason_code", str_of(r->body, "reason_code"));
    handler_add_nullable(o, "biz_serial_no", biz_serial_no);
    handler_add_nullable(o, "deleted_at", now);
    json_object *card = json_object_new_object();
    handler_add_nullable(card, "reason_code", str_of(r->body, "reason_code"));
    return success_take(out, 200, text_of(o), strdup(r->param), text_of(card));
}

/* Alipay dedups a delete on its out_serial_no: a retry is simply sent
 * again, so no verify. */
static const struct ledger_op delete_op = {
    .operation = "delete",
    .method = ALIPAY_CARD_DELETE,
    .metric = METRICS_METHOD_DELETE,
    .card_not_found_404 = 1,
    .cool_down = 1,
    .biz = delete_biz,
    .success = delete_success,
};

static void cards_delete(struct request *r)
{
    static const char *const allowed[] = {"out_serial_no", "reason_code", NULL};
    struct evkeyvalq q;
    if (handler_path_id(r, "biz_card_no") < 0 || handler_query_params(r, &q, allowed) < 0)
        return;
    const char *serial = evhttp_find_header(&q, "out_serial_no");
    const char *reason = evhttp_find_header(&q, "reason_code");
    if (validate_text(serial, 32) < 0 || validate_serial_reserved(serial)) {
        evhttp_clear_headers(&q);
        reply_error(r, 400, "INVALID_PARAMETER",
                    "out_serial_no is required: 1 to 32 characters, no control characters, "
                    "not beginning with template:, template-modify: or activateurl:",
                    "out_serial_no", NULL);
        return;
    }
    if (validate_reason_code(reason) < 0) {
        evhttp_clear_headers(&q);
        reply_error(r, 400, "INVALID_PARAMETER",
                    "reason_code is required: USER_UNBUND, CANCEL or PRESENT", "reason_code", NULL);
        return;
    }
    r->body = json_object_new_object();
    json_object_object_add(r->body, "out_serial_no", json_object_new_string(serial));
    json_object_object_add(r->body, "reason_code", json_object_new_string(reason));
    evhttp_clear_headers(&q);
    char hash[65];
    if (change_hash(r, "delete", r->param, r->body, hash) < 0) {
        reply_error(r, 500, "INTERNAL", "cannot hash the request", NULL, NULL);
        return;
    }
    struct ledger_key key = {
        .serial = str_of(r->body, "out_serial_no"),
        .hash = hash,
        .biz_card_no = r->param,
    };
    ledger_run(r, &delete_op, &key);
}

/* --- GET /v1/cards/{biz_card_no} and /v1/cards/lookup -------------------- */

static void query_answered(struct alipay_reply *rep, void *arg)
{
    struct request *r = arg;
    struct alipay_card_query_result res;
    int ok = rep->outcome == ALIPAY_OK && alipay_card_query_read(rep, &res) == 0;
    handler_gateway_answered(r, METRICS_METHOD_QUERY, rep);
    if (!ok) {
        int status;
        char *body = ledger_gateway_error(rep, LEDGER_CARD_404, &status);
        reply_send(r, status, JSON_TYPE, body);
        free(body);
        return;
    }
    json_object *o = json_object_new_object();
    handler_add_nullable(o, "biz_card_no", res.card.biz_card_no);
    json_object_object_add(o, "card", json_object_get(res.card.json));
    handler_add_nullable(o, "schema_url", res.schema_url);
    reply_json(r, 200, o);
}

static void query_call(struct request *r, const char *type)
{
    handler_call_gateway(r, ALIPAY_CARD_QUERY, alipay_card_query_biz(r->target, type, r->user_id),
                         NULL, NULL, query_answered);
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

static void cards_query(struct request *r)
{
    const char *biz_card_no = r->param;
    static const char *const allowed[] = {"user_id", NULL};
    struct evkeyvalq q;
    struct validate_error verr;
    if (handler_query_params(r, &q, allowed) < 0)
        return;
    if (validate_card_no(biz_card_no, &verr, "biz_card_no") < 0) {
        evhttp_clear_headers(&q);
        handler_invalid(r, &verr);
        return;
    }
    int bad = take_user_id(r, evhttp_find_header(&q, "user_id")) < 0;
    evhttp_clear_headers(&q);
    if (bad)
        return;
    r->target = strdup(biz_card_no);
    query_call(r, "BIZ_CARD");
}

static void cards_lookup(struct request *r)
{
    static const char *const allowed[] = {"code", "type", NULL};
    struct evkeyvalq q;
    struct validate_error verr;
    if (handler_query_params(r, &q, allowed) < 0)
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
        query_call(r, t);
        return;
    }
    evhttp_clear_headers(&q);
}

/* --- GET /v1/cards?filter ------------------------------------------------ */

static void cards_listed(const char *cards, int unavailable, const char *error, void *arg)
{
    struct request *r = arg;
    if (!cards) {
        if (unavailable) {
            handler_database_unavailable(r, error);
            return;
        }
        log_write(&r->w->srv->log, LOG_ERROR, "card list failed", "request_id", r->id, "error",
                  error, NULL);
        reply_error(r, 500, "INTERNAL", "the card list query failed", NULL, NULL);
        return;
    }
    reply_send(r, 200, JSON_TYPE, cards);
}

static void cards_list(struct request *r)
{
    static const char *const allowed[] = {"external_card_no", "user_id", "out_serial_no", NULL};
    struct evkeyvalq q;
    if (handler_query_params(r, &q, allowed) < 0)
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
            handler_database_unavailable(r, "database queue full");
        free(v);
        return;
    }
    evhttp_clear_headers(&q);
}

void cards_register(struct route_table *t)
{
    routes_add(t, EVHTTP_REQ_POST, "/v1/cards", METRICS_ROUTE_OPEN, ROUTE_BEARER, cards_open);
    routes_add(t, EVHTTP_REQ_GET, "/v1/cards", METRICS_ROUTE_LIST, ROUTE_BEARER, cards_list);
    /* Before "{}", which would take "lookup" for a card number. */
    routes_add(t, EVHTTP_REQ_GET, "/v1/cards/lookup", METRICS_ROUTE_LOOKUP, ROUTE_BEARER,
               cards_lookup);
    routes_add(t, EVHTTP_REQ_GET, "/v1/cards/{}", METRICS_ROUTE_QUERY, ROUTE_BEARER, cards_query);
    routes_add(t, EVHTTP_REQ_PATCH, "/v1/cards/{}", METRICS_ROUTE_UPDATE, ROUTE_BEARER,
               cards_update);
    routes_add(t, EVHTTP_REQ_DELETE, "/v1/cards/{}", METRICS_ROUTE_DELETE, ROUTE_BEARER,
               cards_delete);
}
