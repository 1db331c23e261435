/* signup: GET /callbacks/card-activation — a member's own sign-up.
 *
 * The member scanned the till's QR code (the template's apply_card_url),
 * filled in Alipay's form, and Alipay sends their browser here with an
 * auth_code and the form's request_id. cardgate then opens the card through
 * the ledger, once per request_id whatever the reloads:
 *
 *   claim (out_serial_no derived from request_id; a reload after success is
 *   answered from the ledger) → alipay.system.oauth.token (auth_code → the
 *   member's token and user id) → activateform.query (the form) →
 *   card.open with that token → 302 to the template's success_url.
 *
 * The browser gets pages, never JSON: a failure says, in Chinese and
 * English, what the member can do. The form and the tokens are held in
 * memory for the request only: they go to Alipay and nowhere else (not the
 * ledger, which keeps a hash and the page; not the logs). */
#include "activation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/queue.h>

#include "alipay_card.h"
#include "alipay_sign.h"
#include "handler.h"
#include "jsonx.h"
#include "log.h"
#include "routes.h"
#include "signup.h"
#include "store.h"
#include "validate.h"

#define HTML_TYPE "text/html; charset=utf-8"

/* One sign-up's state; r->data. */
struct signup {
    struct activation_callback cb; /* Alipay's redirect */
    json_object *settings;         /* the template's activation settings */
    char *external_no;             /* a fresh number for external_card_no */
    char *user_id;                 /* the member's, from oauth.token */
    json_object *member;           /* the form, as card.open's member object */
};

static void signup_free(void *p)
{
    struct signup *s = p;
    if (!s)
        return;
    activation_callback_clear(&s->cb);
    free(s->external_no);
    free(s->user_id);
    json_object_put(s->settings);
    json_object_put(s->member);
    free(s);
}

/* --- pages ------------------------------------------------------------------ */

/* What the member reads for an error code: Chinese, then English. */
static void page_text(int status, const char *code, const char **zh, const char **en)
{
    static const struct {
        const char *code, *zh, *en;
    } texts[] = {
        {"REQUEST_IN_PROGRESS", "正在为您开卡，请稍候，本页会自动刷新。",
         "Your card is being opened. Please wait: this page reloads by itself."},
        {"AUTH_CODE_INVALID", "领卡链接已失效或已被使用，请在收银台重新扫码领卡。",
         "This sign-up link has expired or was already used. Scan the code at the till again."},
        {"FORM_NOT_COMPLETED", "您尚未完成开卡信息的填写与授权，请在收银台重新扫码领卡。",
         "The sign-up form was not completed. Scan the code at the till again to try once more."},
        {"ALIPAY_AUTH_FAILED", "支付宝授权已失效，请在收银台重新扫码领卡。",
         "Alipay's authorisation has expired. Scan the code at the till again."},
        {"ALIPAY_REJECTED", "支付宝未能为您开卡，请联系店员。",
         "Alipay could not open your card. Please ask a member of staff."},
        {"ACTIVATION_NOT_CONFIGURED", "该会员卡暂未开放领取，请联系店员。",
         "This membership card cannot be signed up for yet. Please ask a member of staff."},
        {"SIGNUP_OUTCOME_UNKNOWN",
         "我们无法确认您的会员卡是否已开通，请打开支付宝卡包查看；如未找到，请在收银台重新扫码领卡"
         "。",
         "We could not confirm whether your card was opened. Look in your Alipay card wallet; "
         "if it is not there, scan the code at the till again."},
        {"INVALID_PARAMETER", "领卡链接不完整或无效，请在收银台重新扫码领卡。",
         "This sign-up link is incomplete or not valid. Scan the code at the till again."},
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(*texts); i++) {
        if (strcmp(code, texts[i].code) == 0) {
            *zh = texts[i].zh, *en = texts[i].en;
            return;
        }
    }
    if (status >= 500 || status == 409) {
        *zh = "服务暂时繁忙，请稍后刷新本页重试。";
        *en = "The service is busy right now. Reload this page in a moment.";
    } else {
        *zh = "无法完成领卡，请联系店员。";
        *en = "Your card could not be opened. Please ask a member of staff.";
    }
}

/* A page in Chinese, then English; footer (HTML of ours: the error code, a
 * link) is shown small at the end. Nothing from the request goes in. */
static char *page(const char *title_zh, const char *title_en, const char *zh, const char *en,
                  const char *footer, int refresh)
{
    const char *code = footer;
    const char *fmt =
        "<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">%s"
        "<title>%s / %s</title></head>\n<body style=\"font-family:sans-serif;margin:2em\">"
        "<h1>%s</h1><p>%s</p><h2 lang=\"en\">%s</h2><p lang=\"en\">%s</p>"
        "%s%s%s</body></html>\n";
    const char *meta = refresh ? "<meta http-equiv=\"refresh\" content=\"2\">" : "";
    size_t n = strlen(fmt) + 2 * (strlen(title_zh) + strlen(title_en)) + strlen(zh) + strlen(en) +
               strlen(meta) + (code ? strlen(code) : 0) + 64;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, meta, title_zh, title_en, title_zh, zh, title_en, en,
                 code ? "<p><small>" : "", code ? code : "", code ? "</small></p>" : "");
    return s;
}

/* The success page, with `extra` (HTML) after its text. */
static char *success_body(const char *extra)
{
    return page("开卡成功", "Your card is open", "会员卡已放入您的支付宝卡包。",
                "Your membership card is now in your Alipay wallet.", extra, 0);
}

/* The ledger's error_page: every error the member can meet. Codes are
 * shown small, for the staff; the detail (Alipay's answer) is logged, not
 * shown. */
static char *signup_error_page(int status, const char *code, const char *message,
                               const struct alipay_reply *alipay)
{
    (void)message;
    (void)alipay;
    const char *zh, *en;
    page_text(status, code, &zh, &en);
    return page("未能开卡", "Card not opened", zh, en, code, status == 409);
}

static void send_page(struct request *r, int status, const char *code)
{
    char *body = signup_error_page(status, code, NULL, NULL);
    if (status == 409)
        reply_add_header(r, "Retry-After", "2");
    reply_send(r, status, HTML_TYPE, body ? body : "");
    free(body);
}

/* --- the open ---------------------------------------------------------------- */

static char *signup_biz(struct request *r)
{
    struct signup *s = r->data;
    char now[20], err[256];
    alipay_sign_timestamp(time(NULL), now); /* Beijing time, as Alipay keeps it */
    json_object *req =
        activation_open_request(r->ledger.serial, s->cb.template_id, s->user_id, s->settings,
                                s->external_no, now, s->member, err, sizeof(err));
    if (!req)
        return NULL;
    struct validate_card_open open;
    char *biz = validate_card_open(req, &open, NULL) == 0 ? validate_card_open_biz(&open) : NULL;
    json_object_put(req);
    return biz;
}

static const char *settings_str(const struct signup *s, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(s->settings, key, &v))
        return NULL;
    return json_object_get_string(v);
}

/* Where a success sends the member: success_url?biz_card_no=…, malloc'd;
 * NULL when the settings have no success_url. */
static char *next_url(const struct signup *s, const char *biz_card_no)
{
    const char *url = settings_str(s, "success_url");
    if (!url || !biz_card_no)
        return NULL;
    char *enc = evhttp_uriencode(biz_card_no, -1, 0);
    size_t n = strlen(url) + (enc ? strlen(enc) : 0) + 16;
    char *next = malloc(n);
    if (next)
        snprintf(next, n, "%s%cbiz_card_no=%s", url, strchr(url, '?') ? '&' : '?', enc ? enc : "");
    free(enc);
    return next;
}

#define NEXT_LINK "<a id=\"next\" href=\""

/* The success page; with a link to `next` when there is one. The link is
 * also where a replay of the 302 takes its Location from, so a reload goes
 * where the first answer went even if the settings changed since. */
static char *success_page(const char *next)
{
    char *escaped = NULL;
    if (next) {
        /* success_url has no quotes, spaces or control characters (the
         * settings' check); & is the one character to escape. */
        size_t n = strlen(next);
        escaped = malloc(5 * n + 1);
        if (!escaped)
            return NULL;
        char *o = escaped;
        for (const char *c = next; *c; c++)
            o = *c == '&' ? stpcpy(o, "&amp;") : (*o = *c, o + 1);
        *o = '\0';
    }
    char link[1200] = "";
    if (escaped)
        snprintf(link, sizeof(link), NEXT_LINK "%.1000s\">继续 / Continue</a>", escaped);
    free(escaped);
    char *page = success_body(link);
    return page;
}

/* A 302 (and its replays) carries Location: the link of the page. */
static void signup_decorate(struct request *r, int status, const char *biz_card_no,
                            const char *body)
{
    (void)biz_card_no;
    const char *at = status == 302 && body ? strstr(body, NEXT_LINK) : NULL;
    if (!at)
        return;
    at += strlen(NEXT_LINK);
    size_t n = strcspn(at, "\"");
    char *location = malloc(n + 1), *o = location;
    if (!location)
        return;
    for (size_t i = 0; i < n;) {
        if (strncmp(at + i, "&amp;", 5) == 0)
            *o++ = '&', i += 5;
        else
            *o++ = at[i++];
    }
    *o = '\0';
    reply_add_header(r, "Location", location);
    free(location);
}

static int signup_success(struct request *r, struct alipay_reply *rep, struct ledger_success *out)
{
    struct signup *s = r->data;
    struct alipay_card_open_result res;
    if (!rep || alipay_card_open_read(rep, &res) < 0)
        return -1;
    static const char *const kept[] = {"level", "point", "balance"};
    json_object *card = json_object_new_object();
    const char *prefix = settings_str(s, "external_card_no_prefix");
    char external[160];
    snprintf(external, sizeof(external), "%s%s", prefix ? prefix : "", s->external_no);
    json_object_object_add(
        card, "external_card_no",
        json_object_new_string(res.card.external_card_no ? res.card.external_card_no : external));
    json_object_object_add(card, "user_id", json_object_new_string(s->user_id));
    json_object_object_add(card, "card_template_id", json_object_new_string(s->cb.template_id));
    for (size_t i = 0; i < sizeof(kept) / sizeof(*kept); i++) {
        json_object *v;
        if (json_object_object_get_ex(res.card.json, kept[i], &v))
            json_object_object_add(card, kept[i], json_object_get(v));
    }
    char *next = next_url(s, res.card.biz_card_no);
    out->status = next ? 302 : 200;
    out->body = success_page(next);
    free(next);
    out->biz_card_no = strdup(res.card.biz_card_no);
    out->card = jsonx_text(card);
    json_object_put(card);
    if (out->body && out->biz_card_no && out->card)
        return 0;
    free(out->body);
    free(out->biz_card_no);
    free(out->card);
    return -1;
}

/* --- the steps before the open: the member's token, then the form ---------- */

static void prepare(struct request *r);

/* A step failed: the member's page, per the contract's table, but a
 * refused auth_code is the member's link gone stale, not our fault. */
static void step_failed(struct request *r, struct alipay_reply *rep, int token_step)
{
    struct ledger_answer a;
    ledger_gateway_answer(rep, 0, &a);
    if (token_step && (rep->outcome == ALIPAY_REFUSED || rep->outcome == ALIPAY_REJECTED) &&
        rep->sub_code && strstr(rep->sub_code, "code"))
        a.status = 422, a.code = "AUTH_CODE_INVALID";
    ledger_stop(r, rep, a.status, a.code, a.message);
}

static void form_answered(struct alipay_reply *rep, void *arg)
{
    struct request *r = arg;
    struct signup *s = r->data;
    handler_gateway_answered(r, METRICS_METHOD_ACTIVATEFORM_QUERY, rep);
    if (rep->outcome != ALIPAY_OK) {
        step_failed(r, rep, 0);
        return;
    }
    json_object *infos;
    if (!json_object_object_get_ex(rep->node, "infos", &infos) ||
        !(s->member = activation_member(json_object_get_string(infos)))) {
        rep->outcome = ALIPAY_BAD_SIGNATURE;
        snprintf(rep->detail, sizeof(rep->detail), "activateform.query answered no infos");
        step_failed(r, rep, 0);
        return;
    }
    ledger_send(r);
}

static void token_answered(struct alipay_reply *rep, void *arg)
{
    struct request *r = arg;
    struct signup *s = r->data;
    handler_gateway_answered(r, METRICS_METHOD_OAUTH_TOKEN, rep);
    if (rep->outcome != ALIPAY_OK) {
        step_failed(r, rep, 1);
        return;
    }
    json_object *v;
    const char *token =
        json_object_object_get_ex(rep->node, "access_token", &v) ? json_object_get_string(v) : NULL;
    const char *user =
        json_object_object_get_ex(rep->node, "user_id", &v) ? json_object_get_string(v) : NULL;
    if (!token || !*token || validate_user_id(user) < 0 || ledger_set_auth_token(r, token) < 0 ||
        !(s->user_id = strdup(user))) {
        rep->outcome = ALIPAY_BAD_SIGNATURE;
        snprintf(rep->detail, sizeof(rep->detail), "oauth.token answered no usable token");
        step_failed(r, rep, 1);
        return;
    }
    json_object *biz = json_object_new_object();
    json_object_object_add(biz, "biz_type", json_object_new_string("MEMBER_CARD"));
    json_object_object_add(biz, "template_id", json_object_new_string(s->cb.template_id));
    json_object_object_add(biz, "request_id", json_object_new_string(s->cb.request_id));
    char *text = jsonx_text(biz);
    json_object_put(biz);
    handler_call_gateway(r, metrics_method_name(METRICS_METHOD_ACTIVATEFORM_QUERY), text,
                         r->ledger.auth_token, NULL, form_answered);
}

/* Claimed: exchange the auth_code for the member's token first. */
static void prepare(struct request *r)
{
    struct signup *s = r->data;
    struct alipay_call_params p = {.grant_type = "authorization_code", .code = s->cb.auth_code};
    handler_call_params(r, ALIPAY_OAUTH_TOKEN, &p, token_answered);
}

/* The previous attempt's card.open got no answer: Alipay may have opened
 * the card. Its auth_code is spent, so it cannot be asked again for the
 * member; the member is told to look in the wallet (the card is there, or
 * a new scan opens it), and the ledger keeps the outcome unknown. */
static void signup_undecided(struct request *r)
{
    struct alipay_reply none = {.outcome = ALIPAY_UNAVAILABLE};
    snprintf(none.detail, sizeof(none.detail), "the previous card.open got no answer");
    ledger_fail_as(r, &none, 502, "SIGNUP_OUTCOME_UNKNOWN",
                   "the previous attempt's card.open got no answer; it cannot be retried");
}

static const struct ledger_op signup_op = {
    .operation = "activate",
    .key_field = "",
    .method = ALIPAY_CARD_OPEN,
    .metric = METRICS_METHOD_OPEN,
    .gateway_calls = 3, /* the token, the form, the open */
    .not_redriven = 1,  /* the member's one-time code is spent */
    .decorate = signup_decorate,
    .error_page = signup_error_page,
    .content_type = HTML_TYPE,
    .biz = signup_biz,
    .success = signup_success,
    .prepare = prepare,
    .verify = signup_undecided,
};

/* --- the callback ------------------------------------------------------------ */

static void settings_read(const char *const *row, int unavailable, const char *error, void *arg)
{
    struct request *r = arg;
    struct server *srv = r->w->srv;
    struct signup *s = r->data;
    if (!row && error) {
        atomic_fetch_add(&srv->metrics.db_errors, 1);
        log_write(&srv->log, LOG_WARN, "database unavailable", "request_id", r->id, "error", error,
                  NULL);
        send_page(r, 503, "DATABASE_UNAVAILABLE");
        return;
    }
    if (!row || !row[0] || !row[1] || !(s->settings = jsonx_parse(row[0], strlen(row[0]))) ||
        !(s->external_no = strdup(row[1]))) {
        send_page(r, 400, "ACTIVATION_NOT_CONFIGURED");
        return;
    }
    char serial[33], hash[65];
    json_object *what = json_object_new_object();
    json_object_object_add(what, "template_id", json_object_new_string(s->cb.template_id));
    json_object_object_add(what, "request_id", json_object_new_string(s->cb.request_id));
    int rc = activation_serial(s->cb.app_id, s->cb.template_id, s->cb.request_id, serial) < 0 ||
             validate_request_hash(what, r->w->hasher, hash) < 0;
    json_object_put(what);
    if (rc) {
        send_page(r, 500, "INTERNAL");
        return;
    }
    struct ledger_key key = {.serial = serial, .hash = hash};
    ledger_run(r, &signup_op, &key);
}

static void signup_callback(struct request *r)
{
    struct server *srv = r->w->srv;
    if (!srv->cfg.public_url) {
        send_page(r, 503, "ACTIVATION_NOT_CONFIGURED");
        return;
    }
    struct signup *s = calloc(1, sizeof(*s));
    if (!s) {
        send_page(r, 500, "INTERNAL");
        return;
    }
    r->data = s;
    r->free_data = signup_free;
    r->caller = "member"; /* the ledger's caller: the member's own browser */
    const char *query = request_query(r);
    enum activation_callback_result parsed = activation_parse_callback(query, &s->cb);
    if (parsed == ACTIVATION_CALLBACK_INVALID ||
        strcmp(s->cb.app_id, srv->cfg.alipay_app_id) != 0) {
        send_page(r, 400, "INVALID_PARAMETER");
        return;
    }
    /* No auth_code: the member did not authorise (or the link is cut). */
    if (parsed == ACTIVATION_CALLBACK_NO_CODE) {
        send_page(r, 400, "FORM_NOT_COMPLETED");
        return;
    }
    if (store_template_activation(r->w->pg, srv->cfg.alipay_app_id, s->cb.template_id,
                                  settings_read, r) < 0)
        send_page(r, 503, "DATABASE_UNAVAILABLE");
}

void signup_register(struct route_table *t)
{
    routes_add(t, EVHTTP_REQ_GET, "/callbacks/card-activation", METRICS_ROUTE_ACTIVATION,
               ROUTE_PUBLIC, signup_callback);
}
