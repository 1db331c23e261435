/* templates: the /v1/templates resource — a membership program's card
 * template (alipay.marketing.card.template.create / .query / .modify), its
 * sign-up form (formtemplate.set) and the settings and sign-up address of
 * members' own sign-up (activateurl.apply; the sign-up itself is
 * activation.c). Creating, modifying and asking for the address go through
 * the ledger: each is done once, whatever the retries. */
#include "templates.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "alipay_card.h"
#include "handler.h"
#include "jsonx.h"
#include "log.h"
#include "store.h"
#include "template.h"
#include "validate.h"

#define METHOD_QUERY metrics_method_name(METRICS_METHOD_TEMPLATE_QUERY)
#define METHOD_FORM metrics_method_name(METRICS_METHOD_FORMTEMPLATE_SET)

#define CALLBACK_PATH "/callbacks/card-activation"

/* A string field of o, or NULL. */
static const char *str_of(json_object *o, const char *key)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* Takes o and returns its compact text. */
static char *text_of(json_object *o)
{
    char *s = jsonx_text(o);
    json_object_put(o);
    return s;
}

/* {"template_id": id} as text. */
static char *template_id_body(const char *id, const char *url)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "template_id", json_object_new_string(id));
    if (url)
        json_object_object_add(o, "apply_card_url", json_object_new_string(url));
    return text_of(o);
}

/* Reads {"request_id", "template"} (nothing else). Answers 4xx and returns
 * NULL when it cannot; the caller owns the result. */
static json_object *template_body(struct request *r, int for_create)
{
    struct validate_error verr;
    json_object *body = handler_json_body(r); /* on NULL r is gone */
    if (!body)
        return NULL;
    if (!json_object_is_type(body, json_type_object)) {
        json_object_put(body);
        reply_error(r, 400, "INVALID_PARAMETER", "the request body must be a JSON object", NULL,
                    NULL);
        return NULL;
    }
    json_object_object_foreach(body, key, val)
    {
        (void)val;
        if (strcmp(key, "request_id") != 0 && strcmp(key, "template") != 0) {
            char shown[64], msg[128];
            snprintf(shown, sizeof(shown), "%.60s", key);
            snprintf(msg, sizeof(msg), "unknown field %s", shown);
            json_object_put(body);
            reply_error(r, 400, "INVALID_PARAMETER", msg, shown, NULL);
            return NULL;
        }
    }
    json_object *tpl = json_object_object_get(body, "template");
    if (template_check_request_id(str_of(body, "request_id"), &verr) < 0 ||
        template_check(tpl, for_create, &verr) < 0) {
        json_object_put(body);
        handler_invalid(r, &verr);
        return NULL;
    }
    return body;
}

/* A template id in a ledger success: the answer's, or the path's. */
static int template_success(struct ledger_success *out, int status, const char *id, const char *url,
                            json_object *card)
{
    if (url)
        json_object_object_add(card, "apply_card_url", json_object_new_string(url));
    json_object_object_add(card, "template_id", json_object_new_string(id));
    out->status = status;
    out->body = template_id_body(id, url);
    out->biz_card_no = NULL;
    out->card = text_of(card);
    if (out->body && out->card)
        return 0;
    free(out->body);
    free(out->card);
    return -1;
}

/* --- POST /v1/templates --------------------------------------------------- */

static char *create_biz(struct request *r)
{
    return template_create_biz(str_of(r->body, "request_id"),
                               json_object_object_get(r->body, "template"));
}

static int create_success(struct request *r, struct alipay_reply *rep, struct ledger_success *out)
{
    const char *id = rep ? str_of(rep->node, "template_id") : NULL;
    if (!id || validate_card_no(id, NULL, "template_id") < 0)
        return -1; /* an answer without a usable template_id */
    json_object *card = json_object_new_object();
    json_object_object_add(card, "request_id",
                           json_object_new_string(str_of(r->body, "request_id")));
    return template_success(out, 201, id, NULL, card);
}

/* 201 and its replays: Location: /v1/templates/{template_id}. */
static void create_decorate(struct request *r, int status, const char *biz_card_no,
                            const char *body)
{
    (void)biz_card_no;
    json_object *o = status == 201 && body ? jsonx_parse(body, strlen(body)) : NULL;
    const char *id = str_of(o, "template_id");
    if (id) {
        char *enc = evhttp_uriencode(id, -1, 0);
        char location[160];
        snprintf(location, sizeof(location), "/v1/templates/%s", enc ? enc : "");
        reply_add_header(r, "Location", location);
        free(enc);
    }
    json_object_put(o);
}

static const struct ledger_op create_op = {
    .operation = "template",
    .key_field = "request_id",
    .method = "alipay.marketing.card.template.create",
    .metric = METRICS_METHOD_TEMPLATE_CREATE,
    .decorate = create_decorate,
    .biz = create_biz,
    .success = create_success,
};

/* The ledger key of a template request: its own out_serial_no namespace
 * ("template:<request_id>"), which card serial numbers may not use
 * (validate_serial_reserved). */
static void run_template_op(struct request *r, const struct ledger_op *op, const char *ns,
                            json_object *what)
{
    char serial[96], hash[65];
    snprintf(serial, sizeof(serial), "%s:%s", ns, str_of(r->body, "request_id"));
    if (validate_request_hash(what, r->w->hasher, hash) < 0) {
        reply_error(r, 500, "INTERNAL", "cannot hash the request", NULL, NULL);
        return;
    }
    struct ledger_key key = {.serial = serial, .hash = hash};
    ledger_run(r, op, &key);
}

static void templates_create(struct request *r)
{
    json_object *body = template_body(r, 1);
    if (!body)
        return;
    r->body = body;
    run_template_op(r, &create_op, "template", r->body);
}

/* --- PATCH /v1/templates/{template_id} ------------------------------------ */

static char *modify_biz(struct request *r)
{
    return template_modify_biz(str_of(r->body, "request_id"), r->param,
                               json_object_object_get(r->body, "template"));
}

static int modify_success(struct request *r, struct alipay_reply *rep, struct ledger_success *out)
{
    (void)rep;
    return template_success(out, 200, r->param, NULL, json_object_new_object());
}

static const struct ledger_op modify_op = {
    .operation = "template_modify",
    .key_field = "request_id",
    .method = "alipay.marketing.card.template.modify",
    .metric = METRICS_METHOD_TEMPLATE_MODIFY,
    .template_not_found_404 = 1,
    .biz = modify_biz,
    .success = modify_success,
};

static void templates_modify(struct request *r)
{
    if (handler_path_id(r, "template_id") < 0)
        return;
    json_object *body = template_body(r, 0);
    if (!body)
        return;
    r->body = body;
    /* The template is part of the request's meaning. */
    json_object *what = json_object_new_object();
    json_object_object_add(what, "template_id", json_object_new_string(r->param));
    json_object_object_add(what, "modify", json_object_get(r->body));
    run_template_op(r, &modify_op, "template-modify", what);
    json_object_put(what);
}

/* --- GET /v1/templates/{id} and PUT /v1/templates/{id}/form ---------------- */

/* Answers a call made without the ledger (a read, or a PUT that is the
 * same however often it is made): the gateway's failure as the contract
 * says, or `ok` on success. */
static void direct_answer(struct request *r, enum metrics_method m, struct alipay_reply *rep,
                          void (*ok)(struct request *r, struct alipay_reply *rep))
{
    handler_gateway_answered(r, m, rep);
    if (rep->outcome == ALIPAY_OK) {
        ok(r, rep);
        return;
    }
    int status;
    char *body = ledger_gateway_error(rep, LEDGER_TEMPLATE_404, &status);
    reply_send(r, status, JSON_TYPE, body ? body : "{}");
    free(body);
}

/* The template as Alipay returned it: the answer's fields but its codes. */
static void queried_ok(struct request *r, struct alipay_reply *rep)
{
    static const char *const codes[] = {"code", "msg", "sub_code", "sub_msg"};
    json_object *tpl = json_object_new_object();
    json_object_object_foreach(rep->node, key, val)
    {
        size_t i = 0;
        while (i < sizeof(codes) / sizeof(*codes) && strcmp(key, codes[i]) != 0)
            i++;
        if (i == sizeof(codes) / sizeof(*codes))
            json_object_object_add(tpl, key, json_object_get(val));
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "template_id", json_object_new_string(r->param));
    json_object_object_add(o, "template", tpl);
    reply_json(r, 200, o);
}

static void queried(struct alipay_reply *rep, void *arg)
{
    direct_answer(arg, METRICS_METHOD_TEMPLATE_QUERY, rep, queried_ok);
}

static void templates_get(struct request *r)
{
    if (handler_path_id(r, "template_id") < 0)
        return;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "template_id", json_object_new_string(r->param));
    handler_call_gateway(r, METHOD_QUERY, text_of(o), NULL, NULL, queried);
}

static void form_ok(struct request *r, struct alipay_reply *rep)
{
    (void)rep;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "template_id", json_object_new_string(r->param));
    json_object_object_add(o, "required",
                           json_object_get(json_object_object_get(r->body, "required")));
    json_object *opt = json_object_object_get(r->body, "optional");
    json_object_object_add(o, "optional", opt ? json_object_get(opt) : json_object_new_array());
    reply_json(r, 200, o);
}

static void form_set(struct alipay_reply *rep, void *arg)
{
    direct_answer(arg, METRICS_METHOD_FORMTEMPLATE_SET, rep, form_ok);
}

/* The PUTs under a template: its id from the path, the JSON body into
 * r->body (r owns it) and `check` on it. Returns 0, or -1 after answering. */
static int template_put_body(struct request *r,
                             int (*check)(json_object *, struct validate_error *))
{
    struct validate_error verr;
    if (handler_path_and_body(r, "template_id") < 0)
        return -1;
    if (check(r->body, &verr) < 0) {
        handler_invalid(r, &verr);
        return -1;
    }
    return 0;
}

static void templates_form(struct request *r)
{
    if (template_put_body(r, template_form_check) < 0)
        return;
    handler_call_gateway(r, METHOD_FORM, template_form_biz(r->param, r->body), NULL, NULL,
                         form_set);
}

/* --- PUT /v1/templates/{template_id}/activation ---------------------------- */

/* The callback Alipay sends members back to; malloc'd. */
static char *activation_callback(const struct server *srv)
{
    size_t n = strlen(srv->cfg.public_url) + sizeof(CALLBACK_PATH);
    char *cb = malloc(n);
    if (cb)
        snprintf(cb, n, "%s%s", srv->cfg.public_url, CALLBACK_PATH);
    return cb;
}

static char *activateurl_biz(struct request *r)
{
    char *callback = activation_callback(r->w->srv);
    if (!callback)
        return NULL;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "template_id", json_object_new_string(r->param));
    json_object_object_add(o, "callback", json_object_new_string(callback));
    free(callback);
    return text_of(o);
}

static int activateurl_success(struct request *r, struct alipay_reply *rep,
                               struct ledger_success *out)
{
    const char *sent = rep ? str_of(rep->node, "apply_card_url") : NULL;
    /* Alipay sends the link URL-encoded (its SDK: 使用时需URLDecode解码). */
    char *url = sent && !strstr(sent, "://") ? evhttp_uridecode(sent, 0, NULL)
                                             : (sent ? strdup(sent) : NULL);
    char *callback = activation_callback(r->w->srv);
    if (!url || strncmp(url, "http", 4) != 0 || !strstr(url, "://") || !callback) {
        free(url);
        free(callback);
        return -1;
    }
    json_object *card = json_object_new_object();
    json_object_object_add(card, "callback", json_object_new_string(callback));
    free(callback);
    int rc = template_success(out, 200, r->param, url, card);
    free(url);
    return rc;
}

static const struct ledger_op activateurl_op = {
    .operation = "activation_url",
    .key_field = "",
    /* A refusal (the callback's domain not yet allowed in Alipay's console,
     * the template still in review) must not block the template for good. */
    .rejection_not_final = 1,
    /* Made again, the PUT would first store its settings over any newer
     * ones; asking for the address again is the caller's to do. */
    .not_redriven = 1,
    .method = "alipay.marketing.card.activateurl.apply",
    .metric = METRICS_METHOD_ACTIVATEURL_APPLY,
    .template_not_found_404 = 1,
    .biz = activateurl_biz,
    .success = activateurl_success,
};

/* The settings are stored; the URL is asked for once per template and
 * callback, and only when none is stored for them yet. */
static void configured(const char *const *row, int unavailable, const char *error, void *arg)
{
    struct request *r = arg;
    if (!row && error) {
        handler_database_unavailable(r, error);
        return;
    }
    if (row && row[0]) {
        char *body = template_id_body(r->param, row[0]);
        reply_send(r, 200, JSON_TYPE, body ? body : "{}");
        free(body);
        return;
    }
    char *callback = activation_callback(r->w->srv);
    if (!callback) {
        reply_error(r, 500, "INTERNAL", "out of memory", NULL, NULL);
        return;
    }
    /* One serial per template and callback: asking again would reset the
     * form of members who already hold the card. */
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(callback, strlen(callback), md, &mdlen, EVP_sha256(), NULL);
    char serial[128], hash[65];
    int n = snprintf(serial, sizeof(serial), "activateurl:%.40s:", r->param);
    for (int i = 0; i < 8 && n + 2 < (int)sizeof(serial); i++)
        n += snprintf(serial + n, sizeof(serial) - (size_t)n, "%02x", md[i]);
    json_object *what = json_object_new_object();
    json_object_object_add(what, "template_id", json_object_new_string(r->param));
    json_object_object_add(what, "callback", json_object_new_string(callback));
    free(callback);
    int rc = validate_request_hash(what, r->w->hasher, hash);
    json_object_put(what);
    if (rc < 0) {
        reply_error(r, 500, "INTERNAL", "cannot hash the request", NULL, NULL);
        return;
    }
    struct ledger_key key = {.serial = serial, .hash = hash};
    ledger_run(r, &activateurl_op, &key);
}

static void templates_activation(struct request *r)
{
    struct server *srv = r->w->srv;
    if (!srv->cfg.public_url) {
        reply_error(r, 503, "ACTIVATION_NOT_CONFIGURED",
                    "members' sign-up needs CARDGATE_PUBLIC_URL, the address Alipay sends "
                    "them back to",
                    NULL, NULL);
        return;
    }
    if (template_put_body(r, template_activation_check) < 0)
        return;
    char *settings = jsonx_text(r->body);
    char *callback = activation_callback(srv);
    int rc = settings && callback
                 ? store_template_configure(r->w->pg, srv->cfg.alipay_app_id, r->param, r->caller,
                                            settings, callback, configured, r)
                 : -1;
    free(settings);
    free(callback);
    if (rc < 0)
        handler_database_unavailable(r, "database queue full");
}

void templates_register(struct route_table *t)
{
    routes_add(t, EVHTTP_REQ_POST, "/v1/templates", METRICS_ROUTE_TEMPLATES, ROUTE_BEARER,
               templates_create);
    routes_add(t, EVHTTP_REQ_GET, "/v1/templates/{}", METRICS_ROUTE_TEMPLATES, ROUTE_BEARER,
               templates_get);
    routes_add(t, EVHTTP_REQ_PATCH, "/v1/templates/{}", METRICS_ROUTE_TEMPLATES, ROUTE_BEARER,
               templates_modify);
    routes_add(t, EVHTTP_REQ_PUT, "/v1/templates/{}/form", METRICS_ROUTE_TEMPLATES, ROUTE_BEARER,
               templates_form);
    routes_add(t, EVHTTP_REQ_PUT, "/v1/templates/{}/activation", METRICS_ROUTE_TEMPLATES,
               ROUTE_BEARER, templates_activation);
}
