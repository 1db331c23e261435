/* ledger: see ledger.h. */
#include "ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "alipay_card.h"
#include "alipay_client.h"
#include "handler.h"
#include "log.h"
#include "recorder.h"
#include "routes.h"
#include "seal.h"
#include "store.h"

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

void ledger_call_free(struct ledger_call *c)
{
    char **owned[] = {
        &c->serial,     &c->hash,           &c->biz_card_no, &c->occur_time, &c->external_card_no,
        &c->auth_token, &c->app_auth_token, &c->prior,       &c->answer};
    for (size_t i = 0; i < sizeof(owned) / sizeof(*owned); i++) {
        free(*owned[i]);
        *owned[i] = NULL;
    }
    recorder_lost(c->record); /* only set when shutting down mid-write */
    c->record = NULL;
}

void ledger_gateway_answer(const struct alipay_reply *rep, int not_found_404,
                           struct ledger_answer *out)
{
    int status;
    const char *code, *msg;
    /* Alipay's codes go to the caller only where the signature held. */
    const struct alipay_reply *a = rep->verified ? rep : NULL;
    switch (rep->outcome) {
    case ALIPAY_REJECTED:
        if ((not_found_404 & LEDGER_CARD_404) && alipay_card_not_found(rep)) {
            status = 404, code = "CARD_NOT_FOUND", msg = "Alipay has no such card";
        } else if ((not_found_404 & LEDGER_TEMPLATE_404) && rep->sub_code &&
                   strcmp(rep->sub_code, "TEMPLATE_NOT_EXIT") == 0) {
            status = 404, code = "TEMPLATE_NOT_FOUND", msg = "Alipay has no such template";
        } else {
            status = 422, code = "ALIPAY_REJECTED", msg = "Alipay refused the request";
        }
        break;
    case ALIPAY_AUTH_FAILED:
        status = 422, code = "ALIPAY_AUTH_FAILED",
        msg = "Alipay refused the user's or the provider's token; retry with a fresh token";
        break;
    case ALIPAY_REFUSED:
        status = 502, code = "ALIPAY_REQUEST_REFUSED",
        msg = "the gateway refused our request (configuration or signing)";
        break;
    case ALIPAY_UNAVAILABLE:
        status = 502, code = "ALIPAY_UNAVAILABLE", msg = "the Alipay gateway is unavailable";
        break;
    case ALIPAY_TIMEOUT:
        status = 504, code = "ALIPAY_TIMEOUT", msg = "the Alipay gateway did not answer in time";
        a = NULL;
        break;
    case ALIPAY_BAD_SIGNATURE:
    case ALIPAY_OK:
    default:
        status = 502, code = "ALIPAY_BAD_SIGNATURE",
        msg = "the gateway's answer could not be verified; its content is not trusted";
        a = NULL;
        break;
    }
    *out = (struct ledger_answer){status, code, msg, a};
}

char *ledger_gateway_error(const struct alipay_reply *rep, int not_found_404, int *status)
{
    struct ledger_answer a;
    ledger_gateway_answer(rep, not_found_404, &a);
    char message[384];
    snprintf(message, sizeof(message), "%s (%s)", a.message, rep->detail);
    *status = a.status;
    return error_body(a.code, message, NULL, a.alipay);
}

static int not_found_flags(const struct ledger_op *op)
{
    return (op->card_not_found_404 ? LEDGER_CARD_404 : 0) |
           (op->template_not_found_404 ? LEDGER_TEMPLATE_404 : 0);
}

/* The body of an error in the op's own form. */
static char *error_text(const struct ledger_op *op, int status, const char *code,
                        const char *message, const char *field, const struct alipay_reply *alipay)
{
    if (op->error_page)
        return op->error_page(status, code, message, alipay);
    return error_body(code, message, field, alipay);
}

static const char *content_type(const struct ledger_op *op)
{
    return op->content_type ? op->content_type : JSON_TYPE;
}

/* The field the ledger's refusals name: the op's key field. */
static const char *key_field(const struct ledger_op *op)
{
    if (!op->key_field)
        return "out_serial_no";
    return *op->key_field ? op->key_field : NULL;
}

/* Answers an error in the op's form and frees r. */
static void refuse(struct request *r, int status, const char *code, const char *message,
                   const char *field)
{
    const struct ledger_op *op = r->ledger.op;
    char *body = error_text(op, status, code, message, field, NULL);
    reply_send(r, status, content_type(op), body ? body : "");
    free(body);
}

static void unavailable(struct request *r, const char *error)
{
    struct server *srv = r->w->srv;
    atomic_fetch_add(&srv->metrics.db_errors, 1);
    log_write(&srv->log, LOG_WARN, "database unavailable", "request_id", r->id, "error", error,
              NULL);
    refuse(r, 503, "DATABASE_UNAVAILABLE", "the database is unavailable; retry later", NULL);
}

/* --- the end: the outcome in the ledger, then the answer ---------------- */

static void recorded(int ok, int held, const char *error, void *arg)
{
    struct request *r = arg;
    struct ledger_call *c = &r->ledger;
    struct record *rec = c->record;
    c->record = NULL;
    if (ok) {
        recorder_drop(rec);
        if (!held)
            log_write(&r->w->srv->log, LOG_WARN, "outcome not taken: the request was taken over",
                      "request_id", r->id, "out_serial_no", c->serial, NULL);
    } else if (rec) {
        /* A change Alipay made, or its final refusal, must reach the
         * ledger: the caller hears the truth now and the write goes on. */
        recorder_start(rec);
    } else {
        /* A non-final outcome: the lock runs out and a retry goes on. */
        log_write(&r->w->srv->log, LOG_WARN, "outcome not recorded", "request_id", r->id,
                  "out_serial_no", c->serial, "error", error, NULL);
    }
    reply_send(r, c->status, content_type(c->op), c->answer ? c->answer : "");
}

/* A failed call that may still be carried out at Alipay: it was sent (or
 * may have been) and no answer came. Until the margin has passed no other
 * change of the card may go, or the late call could land after it. */
static int may_still_land(const struct ledger_op *op, const char *state, const char *method,
                          const struct alipay_reply *rep)
{
    return op->cool_down && method && strcmp(state, "failed") == 0 &&
           (rep->outcome == ALIPAY_TIMEOUT ||
            (rep->outcome == ALIPAY_UNAVAILABLE && rep->http_status == 0));
}

/* Records state for the call (method: the gateway call made, NULL when
 * none was; outcome: the outcome class to remember, NULL for rep's) and
 * answers c->status / c->answer once the ledger has it. */
static void finish(struct request *r, const char *state, const struct alipay_reply *rep,
                   const char *method, const char *outcome, const char *biz_card_no,
                   const char *card)
{
    struct server *srv = r->w->srv;
    struct ledger_call *c = &r->ledger;
    struct store_completion done = {
        .app_id = srv->cfg.alipay_app_id,
        .serial = c->serial,
        .token = c->token,
        .state = state,
        .outcome = outcome ? outcome : alipay_outcome_name(rep->outcome),
        .code = rep->code,
        .sub_code = rep->sub_code,
        .http_status = c->status,
        .body = c->answer,
        .latency_ms = (long)rep->latency_ms,
        .method = method,
        .operation = c->op->operation,
        .biz_card_no = biz_card_no ? biz_card_no : c->biz_card_no,
        .card = card,
        .cool_ms = may_still_land(c->op, state, method, rep) ? srv->cfg.lock_margin_ms : 0,
    };
    if (strcmp(state, "failed") != 0)
        c->record = recorder_keep(r->w, &done, r->id);
    if (store_complete(r->w->pg, &done, recorded, r) < 0)
        recorded(0, 0, "database queue full", r);
}

static void finish_success(struct request *r, const struct alipay_reply *rep, const char *method,
                           struct ledger_success *s)
{
    struct ledger_call *c = &r->ledger;
    c->status = s->status;
    c->answer = s->body;
    if (c->op->decorate)
        c->op->decorate(r, s->status, s->biz_card_no, s->body);
    finish(r, "succeeded", rep, method, NULL, s->biz_card_no, s->card);
    free(s->biz_card_no);
    free(s->card);
}

static void finish_failure(struct request *r, const struct alipay_reply *rep, const char *method)
{
    struct ledger_call *c = &r->ledger;
    struct ledger_answer a;
    char message[384];
    ledger_gateway_answer(rep, not_found_flags(c->op), &a);
    snprintf(message, sizeof(message), "%s (%s)", a.message, rep->detail);
    c->status = a.status;
    c->answer = error_text(c->op, a.status, a.code, message, NULL, a.alipay);
    int final = rep->outcome == ALIPAY_REJECTED && !c->op->rejection_not_final;
    finish(r, final ? "rejected" : "failed", rep, method, NULL, NULL, NULL);
}

/* --- the gateway call --------------------------------------------------- */

static void answered(struct alipay_reply *rep, void *arg)
{
    struct request *r = arg;
    struct server *srv = r->w->srv;
    const struct ledger_op *op = r->ledger.op;
    atomic_fetch_sub(&srv->metrics.gateway_in_flight, 1);
    struct ledger_success s = {0};
    int ok = rep->outcome == ALIPAY_OK && op->success(r, rep, &s) == 0;
    if (!ok && rep->outcome == ALIPAY_OK) {
        /* Alipay acted, but its answer could not be used: not known. */
        rep->outcome = ALIPAY_BAD_SIGNATURE;
        snprintf(rep->detail, sizeof(rep->detail), "the answer could not be read");
    }
    /* A call never made is neither counted nor recorded as one. */
    const char *method = rep->not_sent ? NULL : op->method;
    if (!rep->not_sent)
        metrics_gateway(&srv->metrics, op->metric, rep->outcome, rep->latency_ms);
    handler_log_gateway(r, op->method, rep);
    if (ok)
        finish_success(r, rep, method, &s);
    else
        finish_failure(r, rep, method);
}

void ledger_send(struct request *r)
{
    struct ledger_call *c = &r->ledger;
    /* When nothing could be sent, the claim is released as a failure. */
    handler_call_gateway(r, c->op->method, c->op->biz(r), c->auth_token, c->app_auth_token,
                         answered);
}

void ledger_succeed_unsent(struct request *r, const struct alipay_reply *seen)
{
    struct ledger_success s = {0};
    if (r->ledger.op->success(r, NULL, &s) < 0) {
        struct alipay_reply none = {.outcome = ALIPAY_UNAVAILABLE};
        snprintf(none.detail, sizeof(none.detail), "out of memory");
        finish_failure(r, &none, NULL);
        return;
    }
    log_write(&r->w->srv->log, LOG_INFO, "change found already made at Alipay: not sent again",
              "request_id", r->id, "out_serial_no", r->ledger.serial, "biz_card_no",
              r->ledger.biz_card_no, NULL);
    finish_success(r, seen, NULL, &s);
}

void ledger_fail_as(struct request *r, const struct alipay_reply *rep, int status, const char *code,
                    const char *message)
{
    struct ledger_call *c = &r->ledger;
    c->status = status;
    c->answer = error_text(c->op, status, code, message, NULL, NULL);
    finish(r, "failed", rep, NULL, c->prior, NULL, NULL);
}

void ledger_fail(struct request *r, struct alipay_reply *rep)
{
    int timeout = rep->outcome == ALIPAY_TIMEOUT;
    char message[384];
    snprintf(message, sizeof(message),
             "could not check at Alipay whether the previous attempt went through; nothing was "
             "sent: retry later (%s)",
             rep->detail);
    ledger_fail_as(r, rep, timeout ? 504 : 502, timeout ? "ALIPAY_TIMEOUT" : "ALIPAY_UNAVAILABLE",
                   message);
}

void ledger_stop(struct request *r, const struct alipay_reply *rep, int status, const char *code,
                 const char *message)
{
    struct ledger_call *c = &r->ledger;
    c->status = status;
    c->answer = error_text(c->op, status, code, message, NULL, rep->verified ? rep : NULL);
    /* The op's own call was not sent: that, not the step's outcome, is
     * what the next attempt must know. */
    finish(r, "failed", rep, NULL, "not_sent", NULL, NULL);
}

int ledger_set_auth_token(struct request *r, const char *token)
{
    free(r->ledger.auth_token);
    r->ledger.auth_token = token ? strdup(token) : NULL;
    return !token || r->ledger.auth_token ? 0 : -1;
}

/* --- the claim ---------------------------------------------------------- */

static void replay(struct request *r, const struct store_claim *cl)
{
    atomic_fetch_add(&r->w->srv->metrics.idempotent_replays, 1);
    reply_add_header(r, "Idempotent-Replayed", "true");
    if (r->ledger.op->decorate)
        r->ledger.op->decorate(r, cl->http_status, cl->biz_card_no, cl->body);
    reply_send(r, cl->http_status, content_type(r->ledger.op), cl->body);
}

/* Did the previous attempt end without knowing whether Alipay acted? Then
 * a change that Alipay does not dedup may already be made. */
static int prior_unknown(const char *prior)
{
    static const char *const unknown[] = {"abandoned", "timeout", "unavailable", "bad_signature"};
    for (size_t i = 0; prior && i < sizeof(unknown) / sizeof(*unknown); i++)
        if (strcmp(prior, unknown[i]) == 0)
            return 1;
    return 0;
}

static void claimed(const struct store_claim *cl, const char *error, void *arg)
{
    struct request *r = arg;
    struct ledger_call *c = &r->ledger;
    char msg[256];
    if (!cl) {
        unavailable(r, error);
        return;
    }
    switch (cl->verdict) {
    case STORE_REPLAY:
        replay(r, cl);
        return;
    case STORE_MISMATCH:
        refuse(r, 422, "OUT_SERIAL_NO_REUSED",
               "this key (out_serial_no or request_id) was already used for a different "
               "request",
               key_field(c->op));
        return;
    case STORE_IN_PROGRESS:
        reply_add_header(r, "Retry-After", "1");
        refuse(r, 409, "REQUEST_IN_PROGRESS", "a request with this key is in progress; retry later",
               key_field(c->op));
        return;
    case STORE_NO_CARD:
        refuse(r, 404, "CARD_NOT_FOUND", "cardgate has no card with this biz_card_no for this app",
               NULL);
        return;
    case STORE_DELETED:
        refuse(r, 410, "CARD_DELETED",
               "this card was deleted; it cannot be changed or deleted again", NULL);
        return;
    case STORE_STALE:
        snprintf(msg, sizeof(msg),
                 "occur_time is older than the last update Alipay accepted for this card (%s); "
                 "it is not sent",
                 cl->prior ? cl->prior : "?");
        refuse(r, 409, "STALE_UPDATE", msg, "occur_time");
        return;
    case STORE_BUSY:
        reply_add_header(r, "Retry-After", "1");
        refuse(r, 409, "CARD_BUSY", "another change of this card is in flight; retry later", NULL);
        return;
    case STORE_EXTERNAL_TAKEN:
        refuse(r, 409, "EXTERNAL_CARD_NO_TAKEN",
               "card.external_card_no already belongs to another live card",
               "card.external_card_no");
        return;
    case STORE_CLAIMED:
        break;
    }
    c->prior = cl->prior ? strdup(cl->prior) : NULL;
    if (c->op->verify && prior_unknown(cl->prior))
        c->op->verify(r);
    else if (c->op->prepare)
        c->op->prepare(r);
    else
        ledger_send(r);
}

/* What the sweeper needs to make r again if its holder dies, sealed for
 * r's ledger row (seal.h), malloc'd; NULL when out of memory or random. */
static unsigned char *seal_request(struct request *r, size_t *len)
{
    size_t n = 0;
    char *what = routes_capture(r, &n);
    unsigned char *sealed = what ? seal_box_encrypt(r->w->sealer, r->w->srv->cfg.alipay_app_id,
                                                    r->ledger.serial, what, n, len)
                                 : NULL;
    if (what)
        OPENSSL_cleanse(what, n);
    free(what);
    return sealed;
}

void ledger_run(struct request *r, const struct ledger_op *op, const struct ledger_key *key)
{
    struct server *srv = r->w->srv;
    struct ledger_call *c = &r->ledger;
    c->op = op;
    c->serial = dup_or_null(key->serial);
    c->hash = dup_or_null(key->hash);
    c->biz_card_no = dup_or_null(key->biz_card_no);
    c->occur_time = dup_or_null(key->occur_time);
    c->external_card_no = dup_or_null(key->external_card_no);
    c->auth_token = dup_or_null(key->auth_token);
    c->app_auth_token = dup_or_null(key->app_auth_token);
    if (!c->serial || !c->hash) {
        refuse(r, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    handler_attempt_token(r->w, c->token);
    size_t sealed_len = 0;
    unsigned char *sealed = op->not_redriven ? NULL : seal_request(r, &sealed_len);
    if (!op->not_redriven && !sealed) {
        refuse(r, 500, "INTERNAL", "the request could not be sealed for the ledger", NULL);
        return;
    }
    struct store_claim_args a = {
        .app_id = srv->cfg.alipay_app_id,
        .serial = c->serial,
        .hash = c->hash,
        .caller = r->caller,
        .token = c->token,
        .stale_ms = (op->gateway_calls > 1 ? op->gateway_calls : 1) * srv->cfg.alipay_timeout_ms +
                    srv->cfg.lock_margin_ms,
        .operation = op->operation,
        .biz_card_no = c->biz_card_no,
        .occur_time = c->occur_time,
        .external_card_no = c->external_card_no,
        .deadline_ms = r->deadline_ms,
        .sealed = sealed,
        .sealed_len = sealed_len,
    };
    int rc = store_claim(r->w->pg, &a, claimed, r);
    free(sealed);
    if (rc < 0)
        unavailable(r, "database queue full");
}
