/* alipay-sim, the real binary over plain HTTP: requests signed with the
 * app's key (tests/vectors/keys) open, query, update and delete cards, and
 * show how many changes of a card were in flight at once; they set up a
 * membership program (templates, the sign-up form, the activation link),
 * and a member signs up (POST /_sim/members), trades the auth code for a
 * token and has the form read with it. The answers verify with the
 * simulated Alipay public key, refusals come the way alipay.md and the seeds
 * say, every fault mode shows, and the counters count.
 *
 * One simulator serves the "sim" test case (reset before each test); the
 * "process" case starts its own to check the CLI and a clean exit. */
#include <check.h>
#include <event2/http.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alipay_aes.h"
#include "alipay_cert.h"
#include "alipay_key.h"
#include "alipay_response.h"
#include "alipay_sign.h"
#include "support.h"

#define OPEN "alipay.marketing.card.open"
#define QUERY "alipay.marketing.card.query"
#define UPDATE "alipay.marketing.card.update"
#define DELETE "alipay.marketing.card.delete"
#define TPL_CREATE "alipay.marketing.card.template.create"
#define TPL_QUERY "alipay.marketing.card.template.query"
#define TPL_MODIFY "alipay.marketing.card.template.modify"
#define FORM_SET "alipay.marketing.card.formtemplate.set"
#define URL_APPLY "alipay.marketing.card.activateurl.apply"
#define OAUTH "alipay.system.oauth.token"
#define FORM_QUERY "alipay.marketing.card.activateform.query"
#define DOWNLOAD "alipay.open.app.alipaycert.download"
#define APP_ID "2014072300007148"
#define TEMPLATE "20170308000000000058101000300045" /* the seeds' template */
#define USER "2088302463082075"                     /* the seeds' user */

static struct ts_sim sim;
static EVP_PKEY *app_priv, *alipay_pub, *alipay_priv;

/* ------------------------------------------------------------- fixtures */

static void sim_up(void)
{
    ck_assert_int_eq(ts_sim_start(&sim, NULL), 0);
}

static void sim_down(void)
{
    ts_sim_stop(&sim);
}

static void keys_up(void)
{
    char err[256];
    app_priv = alipay_key_load_private(ts_vector("keys/app_private_pkcs1.pem"), err, sizeof(err));
    alipay_pub = alipay_key_load_public(ts_vector("keys/alipay_public_sim.pem"), err, sizeof(err));
    alipay_priv =
        alipay_key_load_private(ts_vector("keys/alipay_private_sim.pem"), err, sizeof(err));
    ck_assert_ptr_nonnull(app_priv);
    ck_assert_ptr_nonnull(alipay_pub);
    ck_assert_ptr_nonnull(alipay_priv);
}

static void keys_down(void)
{
    EVP_PKEY_free(app_priv);
    EVP_PKEY_free(alipay_pub);
    EVP_PKEY_free(alipay_priv);
}

/* ---------------------------------------------------------- control API */

static json_object *parse(const char *text)
{
    json_object *o = json_tokener_parse(text);
    ck_assert_msg(o != NULL, "not JSON: %s", text);
    return o;
}

/* A control call; returns the parsed answer (caller puts) and its status. */
static json_object *control(const char *method, const char *route, const char *body, long *status)
{
    char url[256];
    const char *const json_hdr[] = {"Content-Type: application/json", NULL};
    struct ts_http r;
    snprintf(url, sizeof(url), "%s%s", sim.control, route);
    ck_assert_int_eq(ts_http_call(method, url, body ? json_hdr : NULL, body, &r), 0);
    if (status)
        *status = r.status;
    json_object *o = parse(r.body);
    ts_http_free(&r);
    return o;
}

static void control_ok(const char *method, const char *route, const char *body, long want)
{
    long status;
    json_object_put(control(method, route, body, &status));
    ck_assert_int_eq(status, want);
}

static void reset(void)
{
    control_ok("POST", "/reset", NULL, 200);
}

static void add_fault(const char *json)
{
    long status;
    json_object *o = control("POST", "/faults", json, &status);
    ck_assert_int_eq(status, 201);
    ck_assert(json_object_get_int(json_object_object_get(o, "id")) > 0);
    json_object_put(o);
}

static const char *str_at(json_object *o, const char *key)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return json_object_get_string(v);
}

/* --------------------------------------------------------- gateway calls */

/* How the calls speak to the simulator: public-key mode when zero (the
 * "sim" and "process" cases); the certificate and encryption cases set it
 * in a checked fixture. gw_build, judge and signed_node apply it, so every
 * helper below speaks every mode. */
static struct {
    EVP_PKEY *app_key;                      /* signs requests (NULL: app_priv) */
    const char *app_id;                     /* NULL: APP_ID */
    const char *app_cert_sn, *root_cert_sn; /* sent when not NULL */
    struct alipay_aes *aes;                 /* encrypts biz_content, decrypts answers */
    EVP_PKEY *alipay_pub;                   /* verifies answers (NULL: alipay_pub) */
    const char *alipay_cert_sn;             /* every signed answer must carry it */
} mode;

static EVP_PKEY *answer_key(void)
{
    return mode.alipay_pub ? mode.alipay_pub : alipay_pub;
}

/* How to make one gateway call; zero fields take the defaults. */
struct call {
    const char *method;
    const char *biz;
    const char *sign_type;     /* default RSA2 */
    time_t when;               /* timestamp, default now */
    const char *omit;          /* parameters left out, "a,b" (the mode's too) */
    EVP_PKEY *key;             /* signing key, default the app's */
    int tamper;                /* change biz_content after signing */
    int plus_spaces;           /* encode spaces as '+', as HTML forms do */
    const char *app_id;        /* default APP_ID */
    const char *const *params; /* more parameters: key, value, ..., NULL */
    /* Content encryption: biz_content sent in plain all the same, or
     * encrypted with another key than the mode's; encrypt_type in the form
     * body (the Node SDK's way) instead of the URL query (cardgate's). */
    int plain;
    const struct alipay_aes *aes;
    int encrypt_type_in_body;
    const char *const *unsigned_params; /* sent, but not in the string to sign */
};

static int omitted(const struct call *c, const char *key)
{
    size_t n = strlen(key);
    for (const char *o = c->omit; o && *o;) {
        size_t len = strcspn(o, ",");
        if (len == n && strncmp(o, key, n) == 0)
            return 1;
        o += len + (o[len] == ',');
    }
    return 0;
}

/* Does the parameter go in the form body rather than the URL query? */
static int in_body(const struct call *c, const char *key)
{
    return strcmp(key, "biz_content") == 0 ||
           (c->encrypt_type_in_body && strcmp(key, "encrypt_type") == 0);
}

static char *escape(const char *s, int plus_spaces)
{
    CURL *c = curl_easy_init();
    char *e = curl_easy_escape(c, s, 0);
    curl_easy_cleanup(c);
    ck_assert_ptr_nonnull(e);
    size_t n = strlen(e);
    char *out = malloc(n * 3 + 1), *w = out;
    for (const char *p = e; *p;) {
        if (plus_spaces && strncmp(p, "%20", 3) == 0) {
            *w++ = '+';
            p += 3;
        } else {
            *w++ = *p++;
        }
    }
    *w = '\0';
    curl_free(e);
    return out;
}

static void append(char **buf, size_t *len, const char *s)
{
    size_t n = strlen(s);
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, s, n + 1);
    *len += n;
}

static const char *const form_hdr[] = {
    "Content-Type: application/x-www-form-urlencoded;charset=utf-8", NULL};

/* Signs the call like a client does: public parameters in the URL query
 * (*url_out), biz_content in the form body (*body_out); both malloc'd. */
static void gw_build(const struct call *c, char **url_out, char **body_out)
{
    struct alipay_params p;
    char ts[20], err[256];
    enum alipay_sign_type type;
    const char *sign_type = c->sign_type ? c->sign_type : "RSA2";
    ck_assert_int_eq(alipay_sign_type_parse(sign_type, &type), 0);
    alipay_sign_timestamp(c->when ? c->when : time(NULL), ts);
    const struct alipay_aes *aes = c->aes ? c->aes : mode.aes;
    const char *pub[][2] = {{"app_id", c->app_id     ? c->app_id
                                       : mode.app_id ? mode.app_id
                                                     : APP_ID},
                            {"method", c->method},
                            {"format", "JSON"},
                            {"charset", "utf-8"},
                            {"sign_type", sign_type},
                            {"timestamp", ts},
                            {"version", "1.0"},
                            /* the mode's; the call's own params may replace them */
                            {"app_cert_sn", mode.app_cert_sn},
                            {"alipay_root_cert_sn", mode.root_cert_sn},
                            {"encrypt_type", aes ? "AES" : NULL}};
    alipay_params_init(&p);
    for (size_t i = 0; i < sizeof(pub) / sizeof(pub[0]); i++)
        if (pub[i][1] && !omitted(c, pub[i][0]))
            alipay_params_set(&p, pub[i][0], pub[i][1]);
    for (size_t i = 0; c->params && c->params[i]; i += 2)
        alipay_params_set(&p, c->params[i], c->params[i + 1]);
    char *sealed = NULL;
    if (c->biz && aes && !c->plain) {
        sealed = alipay_aes_encrypt(aes, c->biz, strlen(c->biz), err, sizeof(err));
        ck_assert_msg(sealed != NULL, "%s", err);
    }
    if (c->biz)
        alipay_params_set(&p, "biz_content", sealed ? sealed : c->biz);
    free(sealed);
    char *content = alipay_sign_content(&p);
    EVP_PKEY *key = c->key ? c->key : mode.app_key ? mode.app_key : app_priv;
    char *sign = alipay_sign_data(key, type, content, strlen(content), err, sizeof(err));
    ck_assert_msg(sign != NULL, "%s", err);
    if (!omitted(c, "sign"))
        alipay_params_set(&p, "sign", sign);
    for (size_t i = 0; c->unsigned_params && c->unsigned_params[i]; i += 2)
        alipay_params_set(&p, c->unsigned_params[i], c->unsigned_params[i + 1]);

    char *url = NULL, *body = NULL;
    size_t ulen = 0, blen = 0;
    append(&url, &ulen, sim.url);
    append(&body, &blen, "");
    for (size_t i = 0; i < p.n; i++) {
        int to_body = in_body(c, p.v[i].key);
        char *val = strdup(p.v[i].value);
        if (c->tamper && strcmp(p.v[i].key, "biz_content") == 0)
            val[strlen(val) - 3] ^= 1; /* a character inside the last value */
        char *v = escape(val, c->plus_spaces);
        if (to_body)
            append(&body, &blen, blen == 0 ? "" : "&");
        else
            append(&url, &ulen, ulen == strlen(sim.url) ? "?" : "&");
        append(to_body ? &body : &url, to_body ? &blen : &ulen, p.v[i].key);
        append(to_body ? &body : &url, to_body ? &blen : &ulen, "=");
        append(to_body ? &body : &url, to_body ? &blen : &ulen, v);
        free(v);
        free(val);
    }
    free(sign);
    free(content);
    alipay_params_free(&p);
    *url_out = url;
    *body_out = body;
}

/* Signs the call and posts it. Returns ts_http_call's result. */
static int gw_call(const struct call *c, struct ts_http *out)
{
    char *url, *body;
    gw_build(c, &url, &body);
    int rc = ts_http_call("POST", url, form_hdr, body, out);
    free(url);
    free(body);
    return rc;
}

/* Is the answer's node `name` a JSON string (an encrypted node)? */
static int node_is_string(const struct ts_http *r, const char *name)
{
    const char *node;
    size_t nlen;
    ck_assert_msg(alipay_response_find(r->body, r->body_len, name, &node, &nlen) == 0,
                  "no %s in %s", name, r->body);
    return node > r->body && node[-1] == '"';
}

/* What every verified answer shows in the mode: certificate mode names
 * the certificate that signed it; an encrypted call's node is encrypted. */
static void expect_mode_shape(const struct ts_http *r, const char *method)
{
    char name[128], sn[33];
    if (mode.alipay_cert_sn) {
        ck_assert_msg(alipay_response_cert_sn(r->body, r->body_len, sn) == 0,
                      "no alipay_cert_sn in %s", r->body);
        ck_assert_str_eq(sn, mode.alipay_cert_sn);
    }
    ck_assert_int_eq(alipay_response_node_name(method, name, sizeof(name)), 0);
    if (mode.aes)
        ck_assert_msg(node_is_string(r, name), "not encrypted: %s", r->body);
}

/* The client's verdict on an answer (the library's judge, the mode's
 * way: an encrypted node is verified with its quotes, then decrypted). */
static void judge(const struct ts_http *r, const char *method, struct alipay_reply *rep)
{
    memset(rep, 0, sizeof(*rep));
    if (mode.aes)
        alipay_response_judge_aes(r->body, r->body_len, method, answer_key(), ALIPAY_SIGN_RSA2,
                                  mode.aes, rep);
    else
        alipay_response_judge(r->body, r->body_len, method, answer_key(), ALIPAY_SIGN_RSA2, rep);
    if (rep->verified)
        expect_mode_shape(r, method);
}

/* Calls and judges; the reply's node is the trusted content. */
static void call_judged(const struct call *c, struct alipay_reply *rep)
{
    struct ts_http r;
    ck_assert_int_eq(gw_call(c, &r), 0);
    ck_assert_int_eq(r.status, 200);
    judge(&r, c->method, rep);
    ts_http_free(&r);
}

/* The unsigned error_response node of an answer (caller puts). */
static json_object *error_node(const struct call *c)
{
    struct ts_http r;
    ck_assert_int_eq(gw_call(c, &r), 0);
    ck_assert_int_eq(r.status, 200);
    json_object *o = parse(r.body);
    ck_assert_msg(!json_object_object_get_ex(o, "sign", NULL), "error_response is not signed");
    json_object *n = json_object_get(json_object_object_get(o, "error_response"));
    ck_assert_msg(n != NULL, "no error_response in %s", r.body);
    json_object_put(o);
    ts_http_free(&r);
    return n;
}

static char *open_biz(const char *serial, const char *template_id, const char *ext_extra)
{
    static const char fmt[] =
        "{\"out_serial_no\":\"%s\",\"card_template_id\":\"%s\","
        "\"card_user_info\":{\"user_uni_id\":\"" USER "\",\"user_uni_id_type\":\"UID\"},"
        "\"card_ext_info\":{\"external_card_no\":\"EXT0001\",\"open_date\":\"2014-02-20 "
        "21:20:46\",\"valid_date\":\"2020-02-20 21:20:46\",\"level\":\"VIP1\",\"point\":\"88\","
        "\"balance\":\"124.89\"%s%s},"
        "\"member_ext_info\":{\"name\":\"张三\",\"gende\":\"MALE\",\"birth\":\"2016-06-27\","
        "\"cell\":\"13000000000\"},"
        "\"open_card_channel\":\"20161534000000000008863\","
        "\"open_card_channel_id\":\"2088123123123123\"}";
    size_t n = sizeof(fmt) + strlen(serial) + strlen(template_id) + strlen(ext_extra) + 128;
    char *b = malloc(n);
    /* A test that gives its own front_text_list replaces the default one
     * (a key said twice is not JSON cardgate or the simulator accepts). */
    const char *list = strstr(ext_extra, "\"front_text_list\"")
                           ? ""
                           : ",\"front_text_list\":[{\"label\":\"专业\",\"value\":\"金融贸易\"}]";
    snprintf(b, n, fmt, serial, template_id, list, ext_extra);
    return b;
}

/* Opens a card for serial and returns its biz_card_no (malloc'd). */
static char *open_card(const char *serial)
{
    char *biz = open_biz(serial, TEMPLATE, "");
    struct call c = {.method = OPEN, .biz = biz};
    struct alipay_reply rep;
    call_judged(&c, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "open: %s", rep.detail);
    char *no = strdup(str_at(json_object_object_get(rep.node, "card_info"), "biz_card_no"));
    alipay_reply_free(&rep);
    free(biz);
    return no;
}

static void query(const char *no, const char *type, const char *user, struct alipay_reply *rep)
{
    char biz[512];
    if (user)
        snprintf(biz, sizeof(biz),
                 "{\"target_card_no\":\"%s\",\"target_card_no_type\":\"%s\","
                 "\"card_user_info\":{\"user_uni_id\":\"%s\",\"user_uni_id_type\":\"UID\"}}",
                 no, type, user);
    else
        snprintf(biz, sizeof(biz), "{\"target_card_no\":\"%s\",\"target_card_no_type\":\"%s\"}", no,
                 type);
    struct call c = {.method = QUERY, .biz = biz};
    call_judged(&c, rep);
}

/* A business failure of method: its sub_code and (a part of) its sub_msg. */
static void expect_rejected(const char *method, const char *biz, const char *sub_code,
                            const char *msg_part)
{
    struct call c = {.method = method, .biz = biz};
    struct alipay_reply rep;
    call_judged(&c, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_REJECTED, "%s: %s", biz, rep.detail);
    ck_assert_str_eq(rep.code, "40004");
    ck_assert_str_eq(rep.sub_code, sub_code);
    if (msg_part)
        ck_assert_msg(rep.sub_msg && strstr(rep.sub_msg, msg_part), "sub_msg '%s' lacks '%s'",
                      rep.sub_msg, msg_part);
    alipay_reply_free(&rep);
}

static void expect_open_rejected(const char *biz, const char *sub_code, const char *msg_part)
{
    expect_rejected(OPEN, biz, sub_code, msg_part);
}

/* printf into a malloc'd string. */
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static char *
fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    char *out = malloc((size_t)n + 1);
    va_start(ap, f);
    vsnprintf(out, (size_t)n + 1, f, ap);
    va_end(ap);
    return out;
}

/* card.update's biz_content (the SDK's AlipayMarketingCardUpdateModel);
 * changed_point NULL leaves merchant_card_msg_info out. */
static char *update_biz(const char *no, const char *card_info, const char *changed_point)
{
    char msg[128] = "";
    if (changed_point)
        snprintf(msg, sizeof(msg), ",\"merchant_card_msg_info\":{\"changed_point\":\"%s\"}",
                 changed_point);
    return fmt("{\"target_card_no\":\"%s\",\"target_card_no_type\":\"BIZ_CARD\","
               "\"occur_time\":\"2026-11-30 10:15:00\",\"card_info\":%s%s}",
               no, card_info, msg);
}

static void update(const char *no, const char *card_info, const char *changed_point,
                   struct alipay_reply *rep)
{
    char *biz = update_biz(no, card_info, changed_point);
    struct call c = {.method = UPDATE, .biz = biz};
    call_judged(&c, rep);
    free(biz);
}

static char *delete_biz(const char *no, const char *serial, const char *reason)
{
    return fmt("{\"out_serial_no\":\"%s\",\"target_card_no\":\"%s\","
               "\"target_card_no_type\":\"BIZ_CARD\",\"reason_code\":\"%s\"}",
               serial, no, reason);
}

static void delete_card(const char *no, const char *serial, const char *reason,
                        struct alipay_reply *rep)
{
    char *biz = delete_biz(no, serial, reason);
    struct call c = {.method = DELETE, .biz = biz};
    call_judged(&c, rep);
    free(biz);
}

/* GET /_sim/cards/{no} (caller puts). */
static json_object *card_state(const char *no)
{
    char route[128];
    long status;
    snprintf(route, sizeof(route), "/cards/%s", no);
    json_object *o = control("GET", route, NULL, &status);
    ck_assert_int_eq(status, 200);
    return o;
}

static long int_at(json_object *o, const char *key)
{
    json_object *v;
    ck_assert_msg(json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int),
                  "no integer %s", key);
    return (long)json_object_get_int64(v);
}

static int is_null(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && v == NULL;
}

/* The card's updates, points_messages and max_in_flight counters. */
static void expect_counters(const char *no, long updates, long points_messages, long max_in_flight)
{
    json_object *card = card_state(no);
    ck_assert_int_eq(int_at(card, "updates"), updates);
    ck_assert_int_eq(int_at(card, "points_messages"), points_messages);
    ck_assert_int_eq(int_at(card, "max_in_flight"), max_in_flight);
    json_object_put(card);
}

/* A query's card_info field, or NULL when the query fails (malloc'd). */
static char *queried(const char *no, const char *key)
{
    struct alipay_reply rep;
    query(no, "BIZ_CARD", NULL, &rep);
    const char *v = rep.outcome == ALIPAY_OK
                        ? str_at(json_object_object_get(rep.node, "card_info"), key)
                        : NULL;
    char *out = v ? strdup(v) : NULL;
    alipay_reply_free(&rep);
    return out;
}

static void expect_point(const char *no, const char *point)
{
    char *p = queried(no, "point");
    ck_assert_msg(p && strcmp(p, point) == 0, "point %s, expected %s", p ? p : "(none)", point);
    free(p);
}

/* ----------------------------------------------------------------- tests */

START_TEST(open_card_signed_answer)
{
    reset();
    char *biz = open_biz("S-open-1", TEMPLATE, "");
    struct call c = {.method = OPEN, .biz = biz};
    struct ts_http r;
    ck_assert_int_eq(gw_call(&c, &r), 0);
    ck_assert_int_eq(r.status, 200);

    /* The signature covers the node's raw text (alipay.md, Response). */
    const char *node, *sig;
    size_t nlen, slen;
    ck_assert_int_eq(alipay_response_find(r.body, r.body_len, "alipay_marketing_card_open_response",
                                          &node, &nlen),
                     0);
    ck_assert_int_eq(alipay_response_find(r.body, r.body_len, "sign", &sig, &slen), 0);
    char *sigz = strndup(sig, slen);
    ck_assert_int_eq(alipay_sign_verify(alipay_pub, ALIPAY_SIGN_RSA2, node, nlen, sigz), 1);
    free(sigz);

    struct alipay_reply rep;
    judge(&r, OPEN, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    ck_assert_str_eq(rep.code, "10000");
    json_object *ci = json_object_object_get(rep.node, "card_info");
    const char *no = str_at(ci, "biz_card_no");
    ck_assert_ptr_nonnull(no);
    ck_assert(strlen(no) >= 1 && strlen(no) <= 32 && strspn(no, "0123456789") == strlen(no));
    /* card_info echoes card_ext_info, Chinese text unchanged. */
    ck_assert_str_eq(str_at(ci, "external_card_no"), "EXT0001");
    ck_assert_str_eq(str_at(ci, "open_date"), "2014-02-20 21:20:46");
    ck_assert_str_eq(str_at(ci, "valid_date"), "2020-02-20 21:20:46");
    ck_assert_str_eq(str_at(ci, "level"), "VIP1");
    ck_assert_str_eq(str_at(ci, "point"), "88");
    ck_assert_str_eq(str_at(ci, "balance"), "124.89");
    json_object *row = json_object_array_get_idx(json_object_object_get(ci, "front_text_list"), 0);
    ck_assert_str_eq(str_at(row, "label"), "专业");
    ck_assert_str_eq(str_at(row, "value"), "金融贸易");
    ck_assert_str_eq(str_at(rep.node, "open_card_channel"), "20161534000000000008863");
    ck_assert_str_eq(str_at(rep.node, "open_card_channel_id"), "2088123123123123");

    /* The control interface knows the card, its user and its codes. */
    char route[128];
    long status;
    snprintf(route, sizeof(route), "/cards/%s", no);
    json_object *card = control("GET", route, NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(str_at(card, "biz_card_no"), no);
    ck_assert_str_eq(str_at(card, "out_serial_no"), "S-open-1");
    ck_assert_str_eq(str_at(card, "user_id"), USER);
    const char *qr = str_at(card, "qr_code"), *bar = str_at(card, "bar_code");
    ck_assert(qr && *qr && bar && strlen(bar) == 18 && strspn(bar, "0123456789") == 18);
    ck_assert_str_ne(qr, bar);
    json_object_put(card);
    control_ok("GET", "/cards/0000000000", NULL, 404);

    alipay_reply_free(&rep);
    ts_http_free(&r);
    free(biz);
}
END_TEST

START_TEST(open_rsa_sha1)
{
    reset();
    char *biz = open_biz("S-rsa1", TEMPLATE, "");
    struct call c = {.method = OPEN, .biz = biz, .sign_type = "RSA"};
    struct ts_http r;
    struct alipay_reply rep;
    ck_assert_int_eq(gw_call(&c, &r), 0);
    memset(&rep, 0, sizeof(rep));
    /* Answered with the request's sign type: SHA-1. */
    alipay_response_judge(r.body, r.body_len, OPEN, alipay_pub, ALIPAY_SIGN_RSA, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    ts_http_free(&r);
    free(biz);
}
END_TEST

START_TEST(same_serial_same_card)
{
    reset();
    char *a = open_card("S-dedup-1");
    char *b = open_card("S-dedup-1");
    char *other = open_card("S-dedup-2");
    ck_assert_str_eq(a, b);
    ck_assert_str_ne(a, other);
    long status;
    json_object *o = control("GET", "/cards", NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq(json_object_array_length(json_object_object_get(o, "cards")), 2);
    json_object_put(o);
    free(a);
    free(b);
    free(other);
}
END_TEST

START_TEST(query_by_card_and_codes)
{
    reset();
    char *no = open_card("S-query-1");
    char route[128];
    snprintf(route, sizeof(route), "/cards/%s", no);
    json_object *card = control("GET", route, NULL, NULL);
    const char *by[][2] = {{no, "BIZ_CARD"},
                           {str_at(card, "qr_code"), "D_QR_CODE"},
                           {str_at(card, "bar_code"), "D_BAR_CODE"}};
    char schema[128];
    snprintf(schema, sizeof(schema), "alipays://platformapi/startapp?appId=20000021&b=m&p=%s", no);
    for (size_t i = 0; i < 3; i++) {
        struct alipay_reply rep;
        query(by[i][0], by[i][1], i == 0 ? USER : NULL, &rep);
        ck_assert_msg(rep.outcome == ALIPAY_OK, "%s: %s", by[i][1], rep.detail);
        ck_assert_str_eq(str_at(json_object_object_get(rep.node, "card_info"), "biz_card_no"), no);
        ck_assert_str_eq(str_at(json_object_object_get(rep.node, "card_info"), "external_card_no"),
                         "EXT0001");
        ck_assert_str_eq(str_at(rep.node, "schema_url"), schema);
        alipay_reply_free(&rep);
    }
    /* A code is not a card number of another kind. */
    struct alipay_reply rep;
    query(str_at(card, "qr_code"), "BIZ_CARD", NULL, &rep);
    ck_assert_str_eq(rep.sub_code, "CARD_NOT_EXIT");
    alipay_reply_free(&rep);
    /* card_user_info is one more condition. */
    query(no, "BIZ_CARD", "2088000000000001", &rep);
    ck_assert_int_eq(rep.outcome, ALIPAY_REJECTED);
    ck_assert_str_eq(rep.sub_code, "CARD_NOT_EXIT");
    alipay_reply_free(&rep);
    json_object_put(card);
    free(no);
}
END_TEST

START_TEST(query_unknown_card)
{
    reset();
    struct alipay_reply rep;
    query("0000001", "BIZ_CARD", NULL, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_REJECTED, "%s", rep.detail);
    ck_assert_int_eq(rep.verified, 1);
    ck_assert_str_eq(rep.code, "40004");
    ck_assert_str_eq(rep.msg, "Business Failed");
    ck_assert_str_eq(rep.sub_code, "CARD_NOT_EXIT");
    ck_assert_str_eq(rep.sub_msg, "会员卡不存在");
    alipay_reply_free(&rep);
    /* target_card_no_type outside the seed's list */
    struct call c = {.method = QUERY,
                     .biz = "{\"target_card_no\":\"1\",\"target_card_no_type\":\"PHONE\"}"};
    call_judged(&c, &rep);
    ck_assert_str_eq(rep.sub_code, "INVALID_PARAMETER");
    alipay_reply_free(&rep);
}
END_TEST

START_TEST(bad_signature_refused)
{
    reset();
    char *biz = open_biz("S-badsig", TEMPLATE, "");
    struct call tampered = {.method = OPEN, .biz = biz, .tamper = 1};
    struct call wrong_key = {.method = OPEN, .biz = biz, .key = alipay_priv};
    const struct call *cases[] = {&tampered, &wrong_key};
    for (size_t i = 0; i < 2; i++) {
        json_object *n = error_node(cases[i]);
        ck_assert_str_eq(str_at(n, "code"), "40002");
        ck_assert_str_eq(str_at(n, "msg"), "Invalid Arguments");
        ck_assert_str_eq(str_at(n, "sub_code"), "isv.invalid-signature");
        json_object_put(n);
    }
    /* Nothing was opened. */
    json_object *o = control("GET", "/cards", NULL, NULL);
    ck_assert_int_eq(json_object_array_length(json_object_object_get(o, "cards")), 0);
    json_object_put(o);
    free(biz);
}
END_TEST

START_TEST(timestamp_must_be_beijing_time)
{
    reset();
    char *biz = open_biz("S-ts", TEMPLATE, "");
    /* A client writing UTC (or a UTC host's local time) is 8 hours behind. */
    time_t offs[] = {-8 * 3600, 8 * 3600, -11 * 60};
    for (size_t i = 0; i < 3; i++) {
        struct call c = {.method = OPEN, .biz = biz, .when = time(NULL) + offs[i]};
        json_object *n = error_node(&c);
        ck_assert_str_eq(str_at(n, "code"), "40002");
        ck_assert_str_eq(str_at(n, "sub_code"), "isv.invalid-timestamp");
        json_object_put(n);
    }
    /* A little clock skew is fine. */
    struct call ok = {.method = OPEN, .biz = biz, .when = time(NULL) - 60};
    struct alipay_reply rep;
    call_judged(&ok, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    free(biz);
}
END_TEST

START_TEST(public_parameters_checked)
{
    reset();
    char *biz = open_biz("S-pub", TEMPLATE, "");
    const char *missing[][2] = {{"method", "isv.missing-method"},
                                {"sign", "isv.missing-signature"},
                                {"app_id", "isv.missing-app-id"}};
    for (size_t i = 0; i < 3; i++) {
        struct call c = {.method = OPEN, .biz = biz, .omit = missing[i][0]};
        json_object *n = error_node(&c);
        ck_assert_str_eq(str_at(n, "code"), "40001");
        ck_assert_str_eq(str_at(n, "sub_code"), missing[i][1]);
        json_object_put(n);
    }
    struct call unknown = {.method = "alipay.marketing.card.nosuch", .biz = biz};
    json_object *n = error_node(&unknown);
    ck_assert_str_eq(str_at(n, "code"), "40002");
    ck_assert_str_eq(str_at(n, "sub_code"), "isv.invalid-method");
    json_object_put(n);
    free(biz);
}
END_TEST

START_TEST(unknown_template)
{
    reset();
    char *biz = open_biz("S-tpl", "20990101000000000000000000000001", "");
    expect_open_rejected(biz, "TEMPLATE_NOT_EXIT", NULL);
    /* Once the template exists, the same call opens the card. */
    control_ok("POST", "/templates", "{\"template_id\":\"20990101000000000000000000000001\"}", 201);
    struct call c = {.method = OPEN, .biz = biz};
    struct alipay_reply rep;
    call_judged(&c, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    free(biz);
}
END_TEST

START_TEST(biz_content_checked_against_seed)
{
    reset();
    /* Limits count characters: a 4-character Chinese label passes. */
    char *ok =
        open_biz("S-val-ok", TEMPLATE,
                 ",\"mdcode_info\":{\"code_status\":\"SUCCESS\",\"code_value\":\"1KFCDY0002\","
                 "\"expire_time\":\"2017-06-09 16:25:53\",\"time_stamp\":1496996459}");
    char *four = strstr(ok, "专业");
    ck_assert_ptr_nonnull(four);
    struct call c = {.method = OPEN, .biz = ok};
    struct alipay_reply rep;
    call_judged(&c, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    free(ok);

    static const struct {
        const char *extra, *field;
    } bad_ext[] = {
        {",\"front_text_list\":[{\"label\":\"专业课程A\",\"value\":\"x\"}]",
         "front_text_list[0].label"},
        {",\"front_text_list\":[{},{},{},{},{}]", "front_text_list"},
        {",\"mdcode_info\":{\"code_status\":\"MAYBE\",\"time_stamp\":1}", "code_status"},
    };
    for (size_t i = 0; i < sizeof(bad_ext) / sizeof(bad_ext[0]); i++) {
        /* open_biz already has a front_text_list: the later key replaces it. */
        char *b = open_biz("S-val-bad", TEMPLATE, bad_ext[i].extra);
        expect_open_rejected(b, "INVALID_PARAMETER", bad_ext[i].field);
        free(b);
    }
    static const struct {
        const char *from, *to, *field;
    } edits[] = {
        {"\"point\":\"88\"", "\"point\":\"88.123\"", "point"},
        {"\"balance\":\"124.89\"", "\"balance\":\"12a\"", "balance"},
        {"\"open_date\":\"2014-02-20 21:20:46\"", "\"open_date\":\"2014-02-30 21:20:46\"",
         "open_date"},
        {"\"valid_date\":\"2020-02-20 21:20:46\"", "\"valid_date\":\"2020/02/20\"", "valid_date"},
        {"\"user_uni_id\":\"" USER "\"", "\"user_uni_id\":\"1088302463082075\"", "user_uni_id"},
        {"\"gende\":\"MALE\"", "\"gender\":\"MALE\"", "gender"},
        {"\"out_serial_no\":\"S-val-bad\",", "", "out_serial_no"},
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        char *b = open_biz("S-val-bad", TEMPLATE, "");
        char *at = strstr(b, edits[i].from);
        ck_assert_msg(at != NULL, "%s", edits[i].from);
        size_t n = strlen(b) + strlen(edits[i].to) + 1;
        char *e = malloc(n);
        snprintf(e, n, "%.*s%s%s", (int)(at - b), b, edits[i].to, at + strlen(edits[i].from));
        expect_open_rejected(e, "INVALID_PARAMETER", edits[i].field);
        free(e);
        free(b);
    }
    expect_open_rejected("not json", "INVALID_PARAMETER", NULL);
    json_object *o = control("GET", "/cards", NULL, NULL);
    ck_assert_int_eq(json_object_array_length(json_object_object_get(o, "cards")), 1);
    json_object_put(o);
}
END_TEST

START_TEST(form_plus_is_space)
{
    reset();
    /* Spaces sent as '+' (HTML forms, the Node SDK's timestamp) are spaces:
     * the signature over "VIP 1" and "yyyy-MM-dd HH:mm:ss" holds. */
    char *biz = open_biz("S-plus", TEMPLATE, "");
    char *at = strstr(biz, "VIP1");
    memmove(at + 5, at + 4, strlen(at + 4) + 1);
    memcpy(at, "VIP 1", 5);
    struct call c = {.method = OPEN, .biz = biz, .plus_spaces = 1};
    struct alipay_reply rep;
    call_judged(&c, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    ck_assert_str_eq(str_at(json_object_object_get(rep.node, "card_info"), "level"), "VIP 1");
    alipay_reply_free(&rep);
    free(biz);
}
END_TEST

/* One open call with a fault in place: its judged outcome and raw answer. */
static void faulted_open(const char *serial, struct ts_http *r, struct alipay_reply *rep)
{
    char *biz = open_biz(serial, TEMPLATE, "");
    struct call c = {.method = OPEN, .biz = biz};
    memset(rep, 0, sizeof(*rep));
    if (gw_call(&c, r) == 0)
        judge(r, OPEN, rep);
    free(biz);
}

static long cards_count(void)
{
    json_object *o = control("GET", "/cards", NULL, NULL);
    long n = (long)json_object_array_length(json_object_object_get(o, "cards"));
    json_object_put(o);
    return n;
}

START_TEST(fault_codes_change_nothing)
{
    reset();
    add_fault("{\"mode\":\"code_20000\",\"method\":\"" OPEN "\",\"out_serial_no\":\"F1\","
              "\"count\":1}");
    add_fault("{\"mode\":\"code_20001\",\"out_serial_no\":\"F2\",\"count\":1}");
    add_fault("{\"mode\":\"error_response\",\"out_serial_no\":\"F3\",\"count\":1}");
    struct ts_http r;
    struct alipay_reply rep;

    faulted_open("F1", &r, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_UNAVAILABLE, "%s", rep.detail);
    ck_assert_int_eq(rep.verified, 1);
    ck_assert_str_eq(rep.code, "20000");
    ck_assert_str_eq(rep.sub_code, "isp.unknow-error");
    alipay_reply_free(&rep);
    ts_http_free(&r);
    ck_assert_int_eq(cards_count(), 0); /* the refusal opened nothing */

    faulted_open("F2", &r, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_AUTH_FAILED, "%s", rep.detail);
    ck_assert_str_eq(rep.code, "20001");
    ck_assert_str_eq(rep.sub_code, "aop.invalid-auth-token");
    alipay_reply_free(&rep);
    ts_http_free(&r);

    faulted_open("F3", &r, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_REFUSED, "%s", rep.detail);
    ck_assert_ptr_nonnull(strstr(r.body, "\"error_response\""));
    ck_assert_ptr_nonnull(strstr(r.body, "isv.invalid-app-id"));
    ck_assert_ptr_null(strstr(r.body, "\"sign\""));
    alipay_reply_free(&rep);
    ts_http_free(&r);
    ck_assert_int_eq(cards_count(), 0);

    /* Each rule was used up: the retry with the same serial opens. */
    faulted_open("F1", &r, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    ts_http_free(&r);
    ck_assert_int_eq(cards_count(), 1);
}
END_TEST

START_TEST(fault_signature_shapes)
{
    reset();
    add_fault("{\"mode\":\"bad_signature\",\"out_serial_no\":\"G1\",\"count\":1}");
    add_fault("{\"mode\":\"unsigned_success\",\"out_serial_no\":\"G2\",\"count\":1}");
    add_fault("{\"mode\":\"sign_first\",\"out_serial_no\":\"G3\",\"count\":1}");
    struct ts_http r;
    struct alipay_reply rep;

    faulted_open("G1", &r, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_BAD_SIGNATURE, "%s", rep.detail);
    ck_assert_ptr_nonnull(strstr(r.body, "\"10000\""));
    ck_assert_ptr_nonnull(strstr(r.body, "\"sign\""));
    alipay_reply_free(&rep);
    ts_http_free(&r);

    faulted_open("G2", &r, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_BAD_SIGNATURE, "%s", rep.detail);
    ck_assert_ptr_nonnull(strstr(r.body, "\"10000\""));
    ck_assert_ptr_null(strstr(r.body, "\"sign\""));
    alipay_reply_free(&rep);
    ts_http_free(&r);

    faulted_open("G3", &r, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    ck_assert_msg(strncmp(r.body, "{\"sign\":", 8) == 0, "%s", r.body);
    alipay_reply_free(&rep);
    ts_http_free(&r);
}
END_TEST

START_TEST(fault_transport)
{
    reset();
    add_fault("{\"mode\":\"http_500\",\"out_serial_no\":\"H1\",\"count\":1}");
    add_fault("{\"mode\":\"drop\",\"out_serial_no\":\"H2\",\"count\":1}");
    add_fault("{\"mode\":\"delay\",\"out_serial_no\":\"H3\",\"count\":1,\"delay_ms\":400}");
    struct ts_http r;
    struct alipay_reply rep;

    faulted_open("H1", &r, &rep);
    ck_assert_int_eq(r.status, 500);
    alipay_reply_free(&rep);
    ts_http_free(&r);

    char *biz = open_biz("H2", TEMPLATE, "");
    struct call c = {.method = OPEN, .biz = biz};
    ck_assert_int_eq(gw_call(&c, &r), -1); /* no HTTP answer at all */
    ck_assert_int_eq(r.status, 0);
    ts_http_free(&r);
    free(biz);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    faulted_open("H3", &r, &rep);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    ck_assert_msg(ms >= 380, "answered after %.0f ms, before the delay", ms);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    ts_http_free(&r);
    ck_assert_int_eq(cards_count(), 1); /* only the delayed one opened */
    control_ok("GET", "/health", NULL, 200);
}
END_TEST

START_TEST(fault_filters_and_count)
{
    reset();
    /* A rule for query does not touch open; count 2 applies twice. */
    add_fault("{\"mode\":\"code_20000\",\"method\":\"" QUERY "\"}");
    add_fault("{\"mode\":\"code_20000\",\"method\":\"" OPEN "\",\"count\":2}");
    struct ts_http r;
    struct alipay_reply rep;
    for (int i = 0; i < 3; i++) {
        faulted_open("K1", &r, &rep);
        ck_assert_int_eq(rep.outcome, (i < 2 ? ALIPAY_UNAVAILABLE : ALIPAY_OK));
        alipay_reply_free(&rep);
        ts_http_free(&r);
    }
    query("0000001", "BIZ_CARD", NULL, &rep);
    ck_assert_int_eq(rep.outcome, ALIPAY_UNAVAILABLE);
    alipay_reply_free(&rep);
    /* Cleared, the query answers for itself again. */
    control_ok("DELETE", "/faults", NULL, 200);
    query("0000001", "BIZ_CARD", NULL, &rep);
    ck_assert_str_eq(rep.sub_code, "CARD_NOT_EXIT");
    alipay_reply_free(&rep);
    control_ok("POST", "/faults", "{\"mode\":\"explode\"}", 400);
    control_ok("POST", "/faults", "{\"mode\":\"delay\",\"count\":0}", 400);
}
END_TEST

/* A client that gives up during a delay: the simulator survives, and the
 * delayed call still does its work when its time comes. */
START_TEST(delay_client_gone)
{
    reset();
    add_fault("{\"mode\":\"delay\",\"out_serial_no\":\"D1\",\"delay_ms\":600}");
    char *biz = open_biz("D1", TEMPLATE, "");
    struct alipay_params p;
    char ts[20], err[256];
    alipay_sign_timestamp(time(NULL), ts);
    alipay_params_init(&p);
    alipay_params_set(&p, "app_id", APP_ID);
    alipay_params_set(&p, "method", OPEN);
    alipay_params_set(&p, "charset", "utf-8");
    alipay_params_set(&p, "sign_type", "RSA2");
    alipay_params_set(&p, "timestamp", ts);
    alipay_params_set(&p, "version", "1.0");
    alipay_params_set(&p, "biz_content", biz);
    char *content = alipay_sign_content(&p);
    char *sign =
        alipay_sign_data(app_priv, ALIPAY_SIGN_RSA2, content, strlen(content), err, sizeof(err));
    alipay_params_set(&p, "sign", sign);
    CURL *c = curl_easy_init();
    char *form = NULL;
    size_t flen = 0;
    for (size_t i = 0; i < p.n; i++) {
        char *v = curl_easy_escape(c, p.v[i].value, 0);
        append(&form, &flen, i ? "&" : "");
        append(&form, &flen, p.v[i].key);
        append(&form, &flen, "=");
        append(&form, &flen, v);
        curl_free(v);
    }
    /* Everything in the form body this time: also a valid way to call. */
    curl_easy_setopt(c, CURLOPT_URL, sim.url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 150L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OPERATION_TIMEDOUT);
    curl_easy_cleanup(c);

    long n = 0;
    for (int i = 0; i < 100 && n == 0; i++) { /* up to 10 s on a loaded box */
        usleep(100000);
        n = cards_count();
    }
    ck_assert_int_eq(n, 1);
    control_ok("GET", "/health", NULL, 200);
    free(form);
    free(sign);
    free(content);
    alipay_params_free(&p);
    free(biz);
}
END_TEST

START_TEST(calls_counted)
{
    reset();
    add_fault("{\"mode\":\"http_500\",\"out_serial_no\":\"C2\",\"count\":1}");
    free(open_card("C1"));
    free(open_card("C1"));
    struct ts_http r;
    struct alipay_reply rep;
    faulted_open("C2", &r, &rep); /* faulted calls count too */
    alipay_reply_free(&rep);
    ts_http_free(&r);
    query("0000001", "BIZ_CARD", NULL, &rep);
    alipay_reply_free(&rep);

    long status;
    json_object *o = control("GET", "/calls", NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "total")), 4);
    json_object *m = json_object_object_get(o, "methods");
    ck_assert_int_eq(json_object_get_int(json_object_object_get(m, OPEN)), 3);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(m, QUERY)), 1);
    json_object *s = json_object_object_get(o, "out_serial_no");
    ck_assert_int_eq(json_object_get_int(json_object_object_get(s, "C1")), 2);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(s, "C2")), 1);
    json_object_put(o);

    o = control("GET", "/calls?out_serial_no=C1", NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(str_at(o, "out_serial_no"), "C1");
    ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "count")), 2);
    json_object_put(o);

    reset();
    o = control("GET", "/calls", NULL, NULL);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "total")), 0);
    json_object_put(o);
    ck_assert_int_eq(cards_count(), 0);
}
END_TEST

/* Its own simulator: --app-id refuses other apps, --help works, and SIGTERM
 * ends it with status 0 even with a delayed answer pending (under the
 * sanitizers a leak would make the status non-zero). */
START_TEST(process_app_id_and_clean_exit)
{
    struct ts_sim own;
    const char *const extra[] = {"--app-id", APP_ID, "--templates", "T1,T2", NULL};
    ck_assert_int_eq(ts_sim_start(&own, extra), 0);
    struct ts_sim saved = sim;
    sim = own;

    char *biz = open_biz("P1", TEMPLATE, "");
    struct call other = {.method = OPEN, .biz = biz, .app_id = "2021000000000000"};
    json_object *n = error_node(&other);
    ck_assert_str_eq(str_at(n, "sub_code"), "isv.invalid-app-id");
    json_object_put(n);
    /* --templates replaced the defaults. */
    expect_open_rejected(biz, "TEMPLATE_NOT_EXIT", NULL);
    free(biz);
    biz = open_biz("P2", "T1", "");
    struct call mine = {.method = OPEN, .biz = biz};
    struct alipay_reply rep;
    call_judged(&mine, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    free(biz);

    /* Leave delayed calls pending (an open, and an update that is counted
     * in flight until shutdown cuts it), then stop. */
    add_fault("{\"mode\":\"delay\",\"delay_ms\":30000}");
    pid_t child[2];
    for (int k = 0; k < 2; k++) {
        child[k] = fork();
        if (child[k] == 0) {
            struct ts_http r;
            char *b = k == 0 ? open_biz("P3", "T1", "") : update_biz("0000001", "{}", "1");
            struct call c = {.method = k == 0 ? OPEN : UPDATE, .biz = b};
            gw_call(&c, &r);
            _exit(0);
        }
    }
    long total = 0;
    for (int i = 0; i < 100 && total < 5; i++) { /* wait until they arrived */
        usleep(100000);
        json_object *o = control("GET", "/calls", NULL, NULL);
        total = json_object_get_int(json_object_object_get(o, "total"));
        json_object_put(o);
    }
    ck_assert_int_eq(total, 5);
    int status = ts_stop(own.pid, SIGTERM, 10000);
    waitpid(child[0], NULL, 0);
    waitpid(child[1], NULL, 0);
    sim = saved;
    ck_assert_msg(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "alipay-sim exit status %d", status);

    char bin[512];
    snprintf(bin, sizeof(bin), "%s/alipay-sim", CARDGATE_BIN_DIR);
    const char *const help[] = {bin, "--help", NULL};
    pid_t pid = ts_spawn(help, NULL, NULL);
    ck_assert_int_gt(pid, 0);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    const char *const bad[] = {bin, "--listen", "127.0.0.1:1", NULL};
    pid = ts_spawn(bad, NULL, NULL);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0); /* keys are required */
}
END_TEST

START_TEST(update_round_trip)
{
    reset();
    char *no = open_card("S-upd-1");
    struct alipay_reply rep;
    /* open_date may be repeated, just not changed. */
    update(no,
           "{\"point\":\"108\",\"level\":\"VIP2\",\"open_date\":\"2014-02-20 21:20:46\","
           "\"front_text_list\":[{\"label\":\"等级\",\"value\":\"金卡\"},"
           "{\"label\":\"门店\",\"value\":\"西湖店\"}]}",
           "20", &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    ck_assert_int_eq(rep.verified, 1);
    ck_assert_str_eq(rep.code, "10000");
    ck_assert_str_eq(str_at(rep.node, "msg"), "Success");
    ck_assert_str_eq(str_at(rep.node, "result_code"), "SUCCESS");
    alipay_reply_free(&rep);

    /* The fields given replace the card's (front_text_list whole); the
     * others stay. */
    query(no, "BIZ_CARD", NULL, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    json_object *ci = json_object_object_get(rep.node, "card_info");
    ck_assert_str_eq(str_at(ci, "biz_card_no"), no);
    ck_assert_str_eq(str_at(ci, "point"), "108");
    ck_assert_str_eq(str_at(ci, "level"), "VIP2");
    ck_assert_str_eq(str_at(ci, "balance"), "124.89");
    ck_assert_str_eq(str_at(ci, "external_card_no"), "EXT0001");
    ck_assert_str_eq(str_at(ci, "open_date"), "2014-02-20 21:20:46");
    ck_assert_str_eq(str_at(ci, "valid_date"), "2020-02-20 21:20:46");
    json_object *rows = json_object_object_get(ci, "front_text_list");
    ck_assert_int_eq(json_object_array_length(rows), 2);
    ck_assert_str_eq(str_at(json_object_array_get_idx(rows, 0), "label"), "等级");
    ck_assert_str_eq(str_at(json_object_array_get_idx(rows, 1), "value"), "西湖店");
    alipay_reply_free(&rep);

    json_object *card = card_state(no);
    ck_assert_str_eq(str_at(card, "status"), "active");
    ck_assert(is_null(card, "delete_reason"));
    ck_assert(is_null(card, "biz_serial_no"));
    ck_assert_str_eq(str_at(json_object_object_get(card, "card_info"), "level"), "VIP2");
    json_object_put(card);
    expect_counters(no, 1, 1, 1);

    /* No changed_point, no points message; a negative one is a message. */
    update(no, "{\"balance\":\"0.5\"}", NULL, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    update(no, "{\"point\":\"100\"}", "-8", &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    expect_counters(no, 3, 2, 1);
    char *balance = queried(no, "balance");
    ck_assert_str_eq(balance, "0.5");
    free(balance);
    expect_point(no, "100");
    free(no);
}
END_TEST

START_TEST(update_refusals)
{
    reset();
    char *no = open_card("S-upd-2");
    static const struct {
        const char *card_info, *changed_point, *sub_msg;
    } bad[] = {
        {"{\"open_date\":\"2015-01-01 00:00:00\"}", NULL, "open_date cannot be changed"},
        {"{\"valid_date\":\"2030-01-01 00:00:00\"}", NULL, "valid_date cannot be changed"},
        {"{\"point\":\"1.234\"}", NULL, "card_info.point"},
        {"{\"colour\":\"red\"}", NULL, "card_info.colour"},
        {"{\"front_text_list\":[{\"label\":\"专业课程A\"}]}", NULL,
         "card_info.front_text_list[0].label"},
        {"{\"mdcode_info\":{\"code_status\":\"SUCCESS\",\"time_stamp\":1}}", NULL,
         "card_info.mdcode_info.code_value"},
        {"{\"point\":\"1\"}", "20.123", "changed_point"},
        {"{\"point\":\"1\"}", "", "changed_point"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *biz = update_biz(no, bad[i].card_info, bad[i].changed_point);
        expect_rejected(UPDATE, biz, "INVALID_PARAMETER", bad[i].sub_msg);
        free(biz);
    }
    /* The top level: occur_time, the target, unknown keys, card_info. */
    static const struct {
        const char *biz, *sub_msg;
    } raw[] = {
        {"{\"target_card_no\":\"%s\",\"target_card_no_type\":\"BIZ_CARD\","
         "\"occur_time\":\"2026-02-30 10:00:00\",\"card_info\":{}}",
         "occur_time"},
        {"{\"target_card_no\":\"%s\",\"target_card_no_type\":\"BIZ_CARD\","
         "\"occur_time\":\"2026/11/30 10:00\",\"card_info\":{}}",
         "occur_time"},
        {"{\"target_card_no\":\"%s\",\"target_card_no_type\":\"BIZ_CARD\",\"card_info\":{}}",
         "occur_time is required"},
        {"{\"target_card_no\":\"%s\",\"target_card_no_type\":\"BIZ_CARD\","
         "\"occur_time\":\"2026-11-30 10:15:00\"}",
         "card_info is required"},
        {"{\"target_card_no\":\"%s\",\"target_card_no_type\":\"D_QR_CODE\","
         "\"occur_time\":\"2026-11-30 10:15:00\",\"card_info\":{}}",
         "target_card_no_type must be BIZ_CARD"},
        {"{\"out_serial_no\":\"U1\",\"target_card_no\":\"%s\",\"target_card_no_type\":"
         "\"BIZ_CARD\",\"occur_time\":\"2026-11-30 10:15:00\",\"card_info\":{}}",
         "out_serial_no is not a known field"},
        {"{\"target_card_no\":\"%s\",\"target_card_no_type\":\"BIZ_CARD\","
         "\"occur_time\":\"2026-11-30 10:15:00\",\"card_info\":{},"
         "\"merchant_card_msg_info\":{\"points\":\"1\"}}",
         "merchant_card_msg_info.points is not a known field"},
    };
    for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
        char *biz = fmt(raw[i].biz, no);
        expect_rejected(UPDATE, biz, "INVALID_PARAMETER", raw[i].sub_msg);
        free(biz);
    }
    /* Nothing was applied or counted. */
    expect_counters(no, 0, 0, 1);
    expect_point(no, "88");

    /* An unknown card, well formed. */
    struct alipay_reply rep;
    update("0000001", "{\"point\":\"1\"}", "1", &rep);
    ck_assert_msg(rep.outcome == ALIPAY_REJECTED, "%s", rep.detail);
    ck_assert_int_eq(rep.verified, 1);
    ck_assert_str_eq(rep.sub_code, "CARD_NOT_EXIT");
    ck_assert_str_eq(rep.sub_msg, "会员卡不存在");
    alipay_reply_free(&rep);
    free(no);
}
END_TEST

START_TEST(delete_round_trip)
{
    reset();
    char *no = open_card("S-del-1");
    json_object *card = card_state(no);
    char *qr = strdup(str_at(card, "qr_code")), *bar = strdup(str_at(card, "bar_code"));
    json_object_put(card);

    struct alipay_reply rep;
    delete_card(no, "DEL-1", "CANCEL", &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    ck_assert_int_eq(rep.verified, 1);
    ck_assert_str_eq(str_at(rep.node, "msg"), "Success");
    const char *serial = str_at(rep.node, "biz_serial_no");
    ck_assert_ptr_nonnull(serial);
    ck_assert(*serial && strspn(serial, "0123456789") == strlen(serial));
    char *first = strdup(serial);
    alipay_reply_free(&rep);

    /* Alipay dedups on out_serial_no: the same answer, card gone or not. */
    delete_card(no, "DEL-1", "CANCEL", &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    ck_assert_str_eq(str_at(rep.node, "biz_serial_no"), first);
    alipay_reply_free(&rep);

    card = card_state(no);
    ck_assert_str_eq(str_at(card, "status"), "deleted");
    ck_assert_str_eq(str_at(card, "delete_reason"), "CANCEL");
    ck_assert_str_eq(str_at(card, "biz_serial_no"), first);
    json_object_put(card);

    /* Gone for query (by number and by codes) and update. */
    const char *by[][2] = {{no, "BIZ_CARD"}, {qr, "D_QR_CODE"}, {bar, "D_BAR_CODE"}};
    for (size_t i = 0; i < 3; i++) {
        query(by[i][0], by[i][1], NULL, &rep);
        ck_assert_msg(rep.outcome == ALIPAY_REJECTED, "%s: %s", by[i][1], rep.detail);
        ck_assert_str_eq(rep.sub_code, "CARD_NOT_EXIT");
        alipay_reply_free(&rep);
    }
    update(no, "{\"point\":\"1\"}", "1", &rep);
    ck_assert_str_eq(rep.sub_code, "CARD_NOT_EXIT");
    ck_assert_str_eq(rep.sub_msg, "会员卡不存在");
    alipay_reply_free(&rep);
    /* Another serial is a new delete of a card that is gone. */
    delete_card(no, "DEL-2", "CANCEL", &rep);
    ck_assert_int_eq(rep.outcome, ALIPAY_REJECTED);
    ck_assert_str_eq(rep.sub_code, "CARD_NOT_EXIT");
    alipay_reply_free(&rep);
    expect_counters(no, 0, 0, 1);

    /* DEL-1 belongs to the first card; reason codes come from a list. */
    char *other = open_card("S-del-2");
    char *biz = delete_biz(other, "DEL-1", "USER_UNBUND");
    expect_rejected(DELETE, biz, "INVALID_PARAMETER", "out_serial_no");
    free(biz);
    biz = delete_biz(other, "DEL-3", "LOST");
    expect_rejected(DELETE, biz, "INVALID_PARAMETER", "reason_code");
    free(biz);
    card = card_state(other);
    ck_assert_str_eq(str_at(card, "status"), "active");
    json_object_put(card);
    delete_card(other, "DEL-3", "PRESENT", &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    ck_assert_str_ne(str_at(rep.node, "biz_serial_no"), first);
    alipay_reply_free(&rep);
    card = card_state(other);
    ck_assert_str_eq(str_at(card, "delete_reason"), "PRESENT");
    json_object_put(card);

    delete_card("0000001", "DEL-4", "CANCEL", &rep);
    ck_assert_str_eq(rep.sub_code, "CARD_NOT_EXIT");
    alipay_reply_free(&rep);

    /* Deletes are counted per method and per out_serial_no; updates have
     * no serial to count. */
    json_object *o = control("GET", "/calls", NULL, NULL);
    json_object *m = json_object_object_get(o, "methods");
    ck_assert_int_eq(json_object_get_int(json_object_object_get(m, DELETE)), 7);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(m, UPDATE)), 1);
    json_object *s = json_object_object_get(o, "out_serial_no");
    ck_assert_int_eq(json_object_get_int(json_object_object_get(s, "DEL-1")), 3);
    ck_assert(!json_object_object_get_ex(s, no, NULL));
    json_object_put(o);
    free(first);
    free(other);
    free(qr);
    free(bar);
    free(no);
}
END_TEST

/* Two updates of one card at once show as max_in_flight 2; one after the
 * other, 1. A delay fault holds each call in flight for its whole delay. */
START_TEST(max_in_flight_per_card)
{
    reset();
    char *a = open_card("S-fly-1"), *b = open_card("S-fly-2");
    expect_counters(a, 0, 0, 0); /* opens do not count */

    /* The fault's out_serial_no matches an update's target_card_no. */
    char *rule = fmt("{\"mode\":\"delay\",\"method\":\"" UPDATE "\",\"out_serial_no\":\"%s\","
                     "\"delay_ms\":800,\"count\":2}",
                     a);
    add_fault(rule);
    free(rule);
    char *biz = update_biz(a, "{\"point\":\"90\"}", "2");
    struct call c = {.method = UPDATE, .biz = biz};
    char *url, *body;
    gw_build(&c, &url, &body);
    const char *const urls[] = {url, url};
    struct ts_http r[2];
    ts_http_parallel(2, "POST", urls, form_hdr, body, r);
    for (int i = 0; i < 2; i++) {
        struct alipay_reply rep;
        ck_assert_int_eq(r[i].status, 200);
        judge(&r[i], UPDATE, &rep);
        ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
        alipay_reply_free(&rep);
        ts_http_free(&r[i]);
    }
    free(url);
    free(body);
    free(biz);
    expect_counters(a, 2, 2, 2);

    rule = fmt("{\"mode\":\"delay\",\"out_serial_no\":\"%s\",\"delay_ms\":100,\"count\":2}", b);
    add_fault(rule);
    free(rule);
    for (int i = 0; i < 2; i++) {
        struct alipay_reply rep;
        update(b, "{\"level\":\"VIP3\"}", NULL, &rep);
        ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
        alipay_reply_free(&rep);
    }
    expect_counters(b, 2, 0, 1);
    expect_counters(a, 2, 2, 2); /* per card */
    free(a);
    free(b);
}
END_TEST

/* Posts a signed call and gives up after ms, as a client whose timeout is
 * shorter than the gateway's delay. */
static void call_and_give_up(const struct call *call, long ms)
{
    char *url, *body;
    gw_build(call, &url, &body);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, form_hdr[0]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OPERATION_TIMEDOUT);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    free(url);
    free(body);
}

/* The same faults as for open: refusals and lost answers change nothing,
 * signature shapes do the work, a delayed call does it even when its
 * client has gone. */
START_TEST(faults_apply_to_update_and_delete)
{
    reset();
    char *no = open_card("S-fault-1");
    static const char *const refusals[] = {"code_20000", "code_20001", "error_response", "http_500",
                                           "drop"};
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        char *rule = fmt("{\"mode\":\"%s\",\"method\":\"" UPDATE "\",\"out_serial_no\":"
                         "\"%s\",\"count\":1}",
                         refusals[i], no);
        add_fault(rule);
        free(rule);
    }
    static const enum alipay_outcome want[] = {ALIPAY_UNAVAILABLE, ALIPAY_AUTH_FAILED,
                                               ALIPAY_REFUSED};
    char *biz = update_biz(no, "{\"point\":\"120\"}", "20");
    struct call c = {.method = UPDATE, .biz = biz};
    for (size_t i = 0; i < 3; i++) {
        struct alipay_reply rep;
        call_judged(&c, &rep);
        ck_assert_msg(rep.outcome == want[i], "%s: %s", refusals[i], rep.detail);
        alipay_reply_free(&rep);
    }
    struct ts_http r;
    ck_assert_int_eq(gw_call(&c, &r), 0);
    ck_assert_int_eq(r.status, 500);
    ts_http_free(&r);
    ck_assert_int_eq(gw_call(&c, &r), -1); /* dropped */
    ts_http_free(&r);
    expect_counters(no, 0, 0, 1);
    expect_point(no, "88"); /* the rules were for update: query unaffected */

    /* Rules used up: the retry applies. Signature shapes do the work. */
    add_fault("{\"mode\":\"bad_signature\",\"method\":\"" UPDATE "\",\"count\":1}");
    add_fault("{\"mode\":\"unsigned_success\",\"method\":\"" UPDATE "\",\"count\":1}");
    add_fault("{\"mode\":\"sign_first\",\"method\":\"" UPDATE "\",\"count\":1}");
    static const enum alipay_outcome shapes[] = {ALIPAY_BAD_SIGNATURE, ALIPAY_BAD_SIGNATURE,
                                                 ALIPAY_OK, ALIPAY_OK};
    for (size_t i = 0; i < 4; i++) {
        struct alipay_reply rep;
        call_judged(&c, &rep);
        ck_assert_msg(rep.outcome == shapes[i], "shape %zu: %s", i, rep.detail);
        alipay_reply_free(&rep);
    }
    expect_counters(no, 4, 4, 1);
    expect_point(no, "120");
    free(biz);

    /* A delayed update whose client gave up is applied all the same. */
    add_fault("{\"mode\":\"delay\",\"method\":\"" UPDATE "\",\"delay_ms\":600,\"count\":1}");
    biz = update_biz(no, "{\"point\":\"130\"}", NULL);
    struct call late = {.method = UPDATE, .biz = biz};
    call_and_give_up(&late, 150);
    free(biz);
    long updates = 4;
    for (int i = 0; i < 100 && updates == 4; i++) { /* up to 10 s on a loaded box */
        usleep(100000);
        json_object *card = card_state(no);
        updates = int_at(card, "updates");
        json_object_put(card);
    }
    expect_counters(no, 5, 4, 1);
    expect_point(no, "130");

    /* Delete: a 20000 (matched on the delete's out_serial_no) deletes
     * nothing; the retry with the same serial does. */
    add_fault("{\"mode\":\"code_20000\",\"out_serial_no\":\"DEL-F\",\"count\":1}");
    struct alipay_reply rep;
    delete_card(no, "DEL-F", "USER_UNBUND", &rep);
    ck_assert_msg(rep.outcome == ALIPAY_UNAVAILABLE, "%s", rep.detail);
    ck_assert_str_eq(rep.code, "20000");
    alipay_reply_free(&rep);
    json_object *card = card_state(no);
    ck_assert_str_eq(str_at(card, "status"), "active");
    json_object_put(card);
    delete_card(no, "DEL-F", "USER_UNBUND", &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    card = card_state(no);
    ck_assert_str_eq(str_at(card, "status"), "deleted");
    ck_assert_str_eq(str_at(card, "delete_reason"), "USER_UNBUND");
    json_object_put(card);
    free(no);
}
END_TEST

/* ------------------------------------------------- the membership program */

#define LOGO "1T8Pp00AT7eo9NoAJkMR3AAAACMAAQEC"
#define CALLBACK "https://cards.example.com/callbacks/card-activation"

/* template.create's biz_content (the SDK's
 * AlipayMarketingCardTemplateCreateModel) with every field Alipay
 * requires. */
static char *template_biz(const char *request_id, const char *name)
{
    return fmt("{\"request_id\":\"%s\",\"card_type\":\"OUT_MEMBER_CARD\",\"biz_no_prefix\":\"CG\","
               "\"biz_no_suffix_len\":\"12\",\"write_off_type\":\"qrcode\","
               "\"template_style_info\":{\"card_show_name\":\"%s\",\"logo_id\":\"" LOGO "\","
               "\"background_id\":\"" LOGO "\",\"bg_color\":\"rgb(55,112,179)\"},"
               "\"column_info_list\":[{\"code\":\"BENEFIT_INFO\",\"title\":\"会员权益\","
               "\"operate_type\":\"openNative\",\"more_info\":{\"title\":\"会员专享\","
               "\"descs\":[\"生日7折\"]}}],"
               "\"field_rule_list\":[{\"field_name\":\"Balance\",\"rule_name\":"
               "\"ASSIGN_FROM_REQUEST\",\"rule_value\":\"Balance\"},{\"field_name\":"
               "\"ValidDate\",\"rule_name\":\"DATE_IN_FUTURE\",\"rule_value\":\"24m\"}]}",
               request_id, name);
}

/* A successful call of method; the reply's node is trusted. */
static void call_ok(const char *method, const char *biz, const char *const *params,
                    struct alipay_reply *rep)
{
    struct call c = {.method = method, .biz = biz, .params = params};
    call_judged(&c, rep);
    ck_assert_msg(rep->outcome == ALIPAY_OK, "%s: %s", method, rep->detail);
    ck_assert_int_eq(rep->verified, 1);
}

/* Creates a template; returns its id (malloc'd). */
static char *create_template(const char *request_id, const char *name)
{
    char *biz = template_biz(request_id, name);
    struct alipay_reply rep;
    call_ok(TPL_CREATE, biz, NULL, &rep);
    char *id = strdup(str_at(rep.node, "template_id"));
    alipay_reply_free(&rep);
    free(biz);
    return id;
}

/* GET /_sim/templates/{id} (caller puts). */
static json_object *template_state(const char *id)
{
    char route[128];
    long status;
    snprintf(route, sizeof(route), "/templates/%s", id);
    json_object *o = control("GET", route, NULL, &status);
    ck_assert_int_eq(status, 200);
    return o;
}

/* How many templates the simulator knows (they outlive resets). */
static size_t templates_count(void)
{
    json_object *o = control("GET", "/templates", NULL, NULL);
    size_t n = json_object_array_length(json_object_object_get(o, "templates"));
    json_object_put(o);
    return n;
}

/* Sets the form as the SDK's users do: each part is the JSON text of
 * {"common_fields":[...]} (OpenFormFieldDO types them as String). */
static void set_form(const char *id)
{
    char *biz = fmt("{\"template_id\":\"%s\",\"fields\":{"
                    "\"required\":\"{\\\"common_fields\\\":[\\\"OPEN_FORM_FIELD_MOBILE\\\","
                    "\\\"OPEN_FORM_FIELD_NAME\\\"]}\","
                    "\"optional\":\"{\\\"common_fields\\\":[\\\"OPEN_FORM_FIELD_GENDER\\\"]}\"}}",
                    id);
    struct alipay_reply rep;
    call_ok(FORM_SET, biz, NULL, &rep);
    alipay_reply_free(&rep);
    free(biz);
}

/* activateurl.apply with CALLBACK; returns apply_card_url, URL-decoded as
 * the SDK's response class says it must be before use (malloc'd). */
static char *apply_url(const char *id, const char *out_string)
{
    char extra[128] = "";
    if (out_string)
        snprintf(extra, sizeof(extra), ",\"out_string\":\"%s\"", out_string);
    char *biz = fmt("{\"template_id\":\"%s\",\"callback\":\"" CALLBACK "\"%s}", id, extra);
    struct alipay_reply rep;
    call_ok(URL_APPLY, biz, NULL, &rep);
    const char *sent = str_at(rep.node, "apply_card_url");
    ck_assert_msg(strncmp(sent, "https%3A%2F%2F", 14) == 0, "not encoded as Alipay sends it: %s",
                  sent);
    char *url = evhttp_uridecode(sent, 0, NULL);
    alipay_reply_free(&rep);
    free(biz);
    return url;
}

/* A template with a form (mobile and name required, gender optional) and
 * an activation link that hands "pos-7" back; returns its id. */
static char *program_up(const char *request_id)
{
    char *id = create_template(request_id, "cardgate会员卡");
    set_form(id);
    free(apply_url(id, "pos-7"));
    return id;
}

/* POST /_sim/members; the answer (caller puts) after checking its status. */
static json_object *sign_up(const char *body, long want)
{
    long status;
    json_object *o = control("POST", "/members", body, &status);
    ck_assert_msg(status == want, "POST /_sim/members %s: %ld, expected %ld", body, status, want);
    return o;
}

/* A member of template id signs up; returns the answer (caller puts). */
static json_object *member_of(const char *id, const char *user)
{
    char body[256];
    if (user)
        snprintf(body, sizeof(body), "{\"template_id\":\"%s\",\"user_id\":\"%s\"}", id, user);
    else
        snprintf(body, sizeof(body), "{\"template_id\":\"%s\"}", id);
    return sign_up(body, 201);
}

/* alipay.system.oauth.token for an auth code: the raw answer. */
static void oauth(const char *grant, const char *key, const char *value, struct ts_http *r)
{
    const char *const params[] = {"grant_type", grant, key, value, NULL};
    struct call c = {.method = OAUTH, .params = params};
    ck_assert_int_eq(gw_call(&c, r), 0);
    ck_assert_int_eq(r->status, 200);
}

/* The node `name` of an answer when its signature verifies (caller puts),
 * else NULL. For answers a judge cannot take: oauth.token's success has no
 * code. An encrypted node (a string) is verified with its quotes and
 * decrypted with the mode's key; in certificate mode the answer must name
 * the certificate. */
static json_object *signed_node(const struct ts_http *r, const char *name)
{
    const char *node, *sig;
    size_t nlen, slen, n;
    char err[128], sn[33];
    if (alipay_response_find(r->body, r->body_len, name, &node, &nlen) < 0 ||
        alipay_response_find(r->body, r->body_len, "sign", &sig, &slen) < 0)
        return NULL;
    int sealed = node_is_string(r, name);
    char *sigz = strndup(sig, slen);
    int ok = alipay_sign_verify(answer_key(), ALIPAY_SIGN_RSA2, sealed ? node - 1 : node,
                                sealed ? nlen + 2 : nlen, sigz);
    free(sigz);
    if (!ok)
        return NULL;
    if (mode.alipay_cert_sn) {
        ck_assert_int_eq(alipay_response_cert_sn(r->body, r->body_len, sn), 0);
        ck_assert_str_eq(sn, mode.alipay_cert_sn);
    }
    ck_assert_msg(!sealed || mode.aes, "an encrypted node without a key: %s", r->body);
    char *text = sealed ? alipay_aes_decrypt(mode.aes, node, nlen, &n, err, sizeof(err))
                        : strndup(node, nlen);
    ck_assert_msg(text != NULL, "%s", err);
    json_object *o = parse(text);
    free(text);
    return o;
}

/* Trades an auth code for a token; returns the token (malloc'd) after
 * checking the answer names user. */
static char *token_for(const char *code, const char *user)
{
    struct ts_http r;
    oauth("authorization_code", "code", code, &r);
    /* The mode's calls say encrypt_type=AES, oauth.token's too. */
    ck_assert(!mode.aes || node_is_string(&r, "alipay_system_oauth_token_response"));
    json_object *n = signed_node(&r, "alipay_system_oauth_token_response");
    ck_assert_msg(n != NULL, "no signed token answer: %s", r.body);
    ck_assert_str_eq(str_at(n, "user_id"), user);
    char *token = strdup(str_at(n, "access_token"));
    json_object_put(n);
    ts_http_free(&r);
    return token;
}

/* The unsigned error_response's sub_code of a refused oauth.token. */
static void expect_oauth_refused(const char *grant, const char *key, const char *value,
                                 const char *sub_code)
{
    struct ts_http r;
    oauth(grant, key, value, &r);
    json_object *o = parse(r.body);
    json_object *n = json_object_object_get(o, "error_response");
    ck_assert_msg(n != NULL && !json_object_object_get_ex(o, "sign", NULL), "%s", r.body);
    ck_assert_str_eq(str_at(n, "code"), "40002");
    ck_assert_str_eq(str_at(n, "msg"), "Invalid Arguments");
    ck_assert_str_eq(str_at(n, "sub_code"), sub_code);
    json_object_put(o);
    ts_http_free(&r);
}

/* activateform.query of template id and request_id with token (NULL: none). */
static void form_query(const char *id, const char *request_id, const char *token,
                       struct alipay_reply *rep)
{
    const char *const params[] = {"auth_token", token, NULL};
    char *biz = fmt("{\"biz_type\":\"MEMBER_CARD\",\"template_id\":\"%s\",\"request_id\":\"%s\"}",
                    id, request_id);
    struct call c = {.method = FORM_QUERY, .biz = biz, .params = token ? params : NULL};
    call_judged(&c, rep);
    free(biz);
}

START_TEST(template_create_dedup_query_modify)
{
    reset();
    size_t before = templates_count();
    char *a = create_template("TPL-REQ-1", "金卡");
    /* Alipay dedups on request_id; the other fields are not compared. */
    char *again = create_template("TPL-REQ-1", "银卡");
    char *b = create_template("TPL-REQ-2", "银卡");
    ck_assert_str_eq(a, again);
    ck_assert_str_ne(a, b);
    ck_assert_int_eq(strlen(a), 32);
    ck_assert_int_eq(strspn(a, "0123456789"), 32);

    json_object *st = template_state(a);
    ck_assert_str_eq(str_at(st, "template_id"), a);
    ck_assert_str_eq(str_at(st, "request_id"), "TPL-REQ-1");
    ck_assert(is_null(st, "callback"));
    ck_assert(is_null(st, "form"));
    ck_assert_int_eq(int_at(st, "activateurl_calls"), 0);
    json_object *tpl = json_object_object_get(st, "template");
    ck_assert_str_eq(str_at(tpl, "card_type"), "OUT_MEMBER_CARD");
    ck_assert(!json_object_object_get_ex(tpl, "request_id", NULL));
    json_object_put(st);
    control_ok("GET", "/templates/20990101000000000000000000000009", NULL, 404);

    /* query answers the stored fields, Chinese text unchanged. */
    char *q = fmt("{\"template_id\":\"%s\"}", a);
    struct alipay_reply rep;
    call_ok(TPL_QUERY, q, NULL, &rep);
    ck_assert_str_eq(str_at(rep.node, "template_id"), a);
    ck_assert_str_eq(str_at(rep.node, "biz_no_suffix_len"), "12");
    ck_assert_str_eq(
        str_at(json_object_object_get(rep.node, "template_style_info"), "card_show_name"), "金卡");
    alipay_reply_free(&rep);

    /* modify replaces the fields it gives, whole, and keeps the others. */
    char *m = fmt("{\"template_id\":\"%s\",\"request_id\":\"TPL-MOD-1\",\"write_off_type\":"
                  "\"dqrcode\",\"template_style_info\":{\"card_show_name\":\"钻石卡\","
                  "\"logo_id\":\"" LOGO "\",\"background_id\":\"" LOGO "\","
                  "\"bg_color\":\"rgb(0,0,0)\"}}",
                  a);
    call_ok(TPL_MODIFY, m, NULL, &rep);
    ck_assert_str_eq(str_at(rep.node, "template_id"), a);
    alipay_reply_free(&rep);
    call_ok(TPL_QUERY, q, NULL, &rep);
    ck_assert_str_eq(str_at(rep.node, "write_off_type"), "dqrcode");
    ck_assert_str_eq(str_at(rep.node, "biz_no_prefix"), "CG");
    json_object *style = json_object_object_get(rep.node, "template_style_info");
    ck_assert_str_eq(str_at(style, "card_show_name"), "钻石卡");
    ck_assert_str_eq(str_at(style, "bg_color"), "rgb(0,0,0)");
    alipay_reply_free(&rep);

    /* Unknown templates, for query and modify. */
    expect_rejected(TPL_QUERY, "{\"template_id\":\"20990101000000000000000000000009\"}",
                    "TEMPLATE_NOT_EXIT", "会员卡模板不存在");
    char *m2 = fmt("{\"template_id\":\"20990101000000000000000000000009\",\"request_id\":\"X\"}");
    expect_rejected(TPL_MODIFY, m2, "TEMPLATE_NOT_EXIT", NULL);

    /* A created template opens cards; templates are listed. */
    char *open = open_biz("S-tpl-new", b, "");
    struct alipay_reply orep;
    call_ok(OPEN, open, NULL, &orep);
    alipay_reply_free(&orep);
    ck_assert_int_eq(templates_count(), before + 2);
    free(open);
    free(m2);
    free(m);
    free(q);
    free(a);
    free(again);
    free(b);
}
END_TEST

/* Replaces the first `from` in a malloc'd string with `to`; frees s. */
static char *edit(char *s, const char *from, const char *to)
{
    char *at = strstr(s, from);
    ck_assert_msg(at != NULL, "%s not in %s", from, s);
    char *e = fmt("%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    free(s);
    return e;
}

START_TEST(template_refusals)
{
    reset();
    size_t before = templates_count();
    static const struct {
        const char *from, *to, *field;
    } bad[] = {
        {"\"request_id\":\"TPL-BAD\",", "", "request_id is required"},
        {"\"card_type\":\"OUT_MEMBER_CARD\",", "", "card_type is required"},
        {"OUT_MEMBER_CARD", "INNER_CARD", "card_type must be OUT_MEMBER_CARD"},
        {"\"12\"", "\"5\"", "biz_no_suffix_len"},
        {"\"qrcode\"", "\"hologram\"", "write_off_type must be one of"},
        {"\"qrcode\"", "\"mdqrcode\"", "mdcode_notify_conf is required"},
        {"\"logo_id\":\"" LOGO "\",", "", "template_style_info.logo_id is required"},
        {"\"bg_color\"", "\"colour\"", "template_style_info.colour is not a known field"},
        {"\"field_rule_list\":[", "\"field_rules\":[", "field_rules is not a known field"},
        {"\"ASSIGN_FROM_REQUEST\"", "\"COPY\"", "field_rule_list[0].rule_name"},
        {"\"24m\"", "\"2 years\"", "field_rule_list[1].rule_value"},
        {"\"code\":\"BENEFIT_INFO\",", "", "column_info_list[0].code is required"},
        {"\"openNative\"", "\"openApp\"", "column_info_list[0].operate_type"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *biz = edit(template_biz("TPL-BAD", "金卡"), bad[i].from, bad[i].to);
        expect_rejected(TPL_CREATE, biz, "INVALID_PARAMETER", bad[i].field);
        free(biz);
    }
    expect_rejected(TPL_CREATE, "[1]", "INVALID_PARAMETER", "biz_content must be a JSON object");
    ck_assert_int_eq(templates_count(), before); /* nothing was made */

    /* A modify names the template and cannot change the card type. */
    char *id = create_template("TPL-OK", "金卡");
    char *m = fmt("{\"template_id\":\"%s\",\"request_id\":\"M1\",\"card_type\":"
                  "\"OUT_MEMBER_CARD\"}",
                  id);
    expect_rejected(TPL_MODIFY, m, "INVALID_PARAMETER", "card_type is not a known field");
    free(m);
    m = fmt("{\"template_id\":\"%s\"}", id);
    expect_rejected(TPL_MODIFY, m, "INVALID_PARAMETER", "request_id is required");
    free(m);
    m = fmt("{\"template_id\":\"%s\",\"request_id\":\"M2\",\"template_style_info\":"
            "{\"card_show_name\":\"x\"}}",
            id);
    expect_rejected(TPL_MODIFY, m, "INVALID_PARAMETER", "template_style_info.logo_id");
    free(m);
    free(id);
}
END_TEST

START_TEST(form_set_checked)
{
    reset();
    char *id = create_template("TPL-FORM", "金卡");
    set_form(id);
    json_object *st = template_state(id);
    json_object *form = json_object_object_get(st, "form");
    json_object *req = json_object_object_get(form, "required");
    ck_assert_int_eq(json_object_array_length(req), 2);
    ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(req, 0)),
                     "OPEN_FORM_FIELD_MOBILE");
    ck_assert_str_eq(json_object_get_string(
                         json_object_array_get_idx(json_object_object_get(form, "optional"), 0)),
                     "OPEN_FORM_FIELD_GENDER");
    json_object_put(st);

    /* The parts as objects work too; the last form set is the form. */
    char *biz = fmt("{\"template_id\":\"%s\",\"fields\":{\"required\":{\"common_fields\":"
                    "[\"OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR\"]}}}",
                    id);
    struct alipay_reply rep;
    call_ok(FORM_SET, biz, NULL, &rep);
    ck_assert_str_eq(rep.code, "10000");
    alipay_reply_free(&rep);
    free(biz);
    st = template_state(id);
    req = json_object_object_get(json_object_object_get(st, "form"), "required");
    ck_assert_int_eq(json_object_array_length(req), 1);
    json_object_put(st);

    static const struct {
        const char *fields, *sub_msg;
    } bad[] = {
        {"{\"required\":{\"common_fields\":[\"OPEN_FORM_FIELD_SHOE_SIZE\"]}}",
         "'OPEN_FORM_FIELD_SHOE_SIZE' is not a form field"},
        {"{\"required\":{\"common_fields\":[]}}",
         "fields.required.common_fields must not be empty"},
        {"{\"optional\":{\"common_fields\":[\"OPEN_FORM_FIELD_NAME\"]}}",
         "fields.required is required"},
        {"{\"required\":{\"common_fields\":[\"OPEN_FORM_FIELD_NAME\"]},\"optional\":"
         "{\"common_fields\":[\"OPEN_FORM_FIELD_NAME\"]}}",
         "both required and optional"},
        {"{\"required\":{\"common_fields\":[\"OPEN_FORM_FIELD_NAME\",\"OPEN_FORM_FIELD_NAME\"]}}",
         "twice"},
        {"{\"required\":\"not json\"}", "fields.required must be"},
        {"{\"required\":{\"common_fields\":[\"OPEN_FORM_FIELD_IDCARD\"]},\"optional\":"
         "{\"common_fields\":[\"OPEN_FORM_FIELD_CERT_NO\"]}}",
         "OPEN_FORM_FIELD_IDCARD cannot be in one form"},
        {"{\"required\":{\"fields\":[]}}", "fields.required.fields is not a known field"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        biz = fmt("{\"template_id\":\"%s\",\"fields\":%s}", id, bad[i].fields);
        expect_rejected(FORM_SET, biz, "INVALID_PARAMETER", bad[i].sub_msg);
        free(biz);
    }
    expect_rejected(
        FORM_SET,
        "{\"template_id\":\"20990101000000000000000000000009\",\"fields\":{\"required\":"
        "{\"common_fields\":[\"OPEN_FORM_FIELD_NAME\"]}}}",
        "TEMPLATE_NOT_EXIT", NULL);
    free(id);
}
END_TEST

START_TEST(activateurl_apply_link)
{
    reset();
    char *id = create_template("TPL-URL", "金卡");
    /* No activation link yet: there is nowhere to send a member. */
    char *body = fmt("{\"template_id\":\"%s\"}", id);
    json_object_put(sign_up(body, 400));
    json_object_put(sign_up("{\"template_id\":\"20990101000000000000000000000009\"}", 404));
    json_object_put(sign_up("{\"user_id\":\"" USER "\"}", 400));

    char *url = apply_url(id, "pos-7");
    char *want = fmt("https://memberprod.alipay.com/account/openform/activecard.htm?app_id=" APP_ID
                     "&template_id=%s&__webview_options=canPullDown%%3dNO%%26transparentTitle%%3d"
                     "auto&out_string=pos-7&callback=https%%3A%%2F%%2Fcards.example.com%%2F"
                     "callbacks%%2Fcard-activation",
                     id);
    ck_assert_str_eq(url, want);
    free(url);
    url = apply_url(id, NULL);
    ck_assert_ptr_null(strstr(url, "out_string"));
    free(url);

    json_object *st = template_state(id);
    ck_assert_int_eq(int_at(st, "activateurl_calls"), 2);
    ck_assert_str_eq(str_at(st, "callback"), CALLBACK);
    ck_assert(is_null(st, "out_string")); /* the last link's */
    json_object_put(st);

    static const struct {
        const char *callback, *sub_msg;
    } bad[] = {
        {CALLBACK "?shop=7", "without parameters"},
        {"ftp://cards.example.com/cb", "http:// or https://"},
        {"", "callback is required"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *biz = fmt("{\"template_id\":\"%s\",\"callback\":\"%s\"}", id, bad[i].callback);
        expect_rejected(URL_APPLY, biz, "INVALID_PARAMETER", bad[i].sub_msg);
        free(biz);
    }
    expect_rejected(URL_APPLY,
                    "{\"template_id\":\"20990101000000000000000000000009\",\"callback\":"
                    "\"" CALLBACK "\"}",
                    "TEMPLATE_NOT_EXIT", NULL);
    st = template_state(id);
    ck_assert_int_eq(int_at(st, "activateurl_calls"), 2);
    json_object_put(st);
    free(want);
    free(body);
    free(id);
}
END_TEST

START_TEST(member_oauth_token)
{
    reset();
    char *id = program_up("TPL-MEMBER");
    json_object *m = member_of(id, NULL);
    const char *code = str_at(m, "auth_code"), *rid = str_at(m, "request_id");
    const char *user = str_at(m, "user_id");
    ck_assert(user && strlen(user) == 16 && strncmp(user, "2088", 4) == 0);
    ck_assert(code && strlen(code) == 32);
    /* The address Alipay sends the member's browser to. */
    char *want = fmt(CALLBACK "?app_id=" APP_ID "&template_id=%s&auth_code=%s&request_id=%s"
                              "&out_string=pos-7",
                     id, code, rid);
    ck_assert_str_eq(str_at(m, "callback_url"), want);
    free(want);
    /* The required fields, filled in. */
    json_object *form = json_object_object_get(m, "form");
    ck_assert_str_eq(str_at(form, "OPEN_FORM_FIELD_NAME"), "张三");
    ck_assert_int_eq(strlen(str_at(form, "OPEN_FORM_FIELD_MOBILE")), 11);
    ck_assert(!json_object_object_get_ex(form, "OPEN_FORM_FIELD_GENDER", NULL));

    /* The success is signed and carries no code (the SDK's response). */
    struct ts_http r;
    oauth("authorization_code", "code", code, &r);
    json_object *n = signed_node(&r, "alipay_system_oauth_token_response");
    ck_assert_msg(n != NULL, "%s", r.body);
    ck_assert(!json_object_object_get_ex(n, "code", NULL));
    ck_assert_str_eq(str_at(n, "user_id"), user);
    ck_assert_str_eq(str_at(n, "alipay_user_id"), user);
    ck_assert(str_at(n, "access_token") && str_at(n, "refresh_token"));
    ck_assert_int_gt(int_at(n, "expires_in"), 0);
    ck_assert_int_gt(int_at(n, "re_expires_in"), 0);
    char *refresh = strdup(str_at(n, "refresh_token"));
    json_object_put(n);
    ts_http_free(&r);

    /* A code is good once. Unknown codes and grant types are refused. */
    expect_oauth_refused("authorization_code", "code", code, "isv.code-invalid");
    expect_oauth_refused("authorization_code", "code", "00000000000000000000000000000000",
                         "isv.code-invalid");
    expect_oauth_refused("password", "code", code, "isv.grant-type-invalid");

    /* A refresh token gives a new access token for the same member, once. */
    struct ts_http rr;
    oauth("refresh_token", "refresh_token", refresh, &rr);
    n = signed_node(&rr, "alipay_system_oauth_token_response");
    ck_assert_msg(n != NULL, "%s", rr.body);
    ck_assert_str_eq(str_at(n, "user_id"), user);
    json_object_put(n);
    ts_http_free(&rr);
    expect_oauth_refused("refresh_token", "refresh_token", refresh, "isv.refresh-token-invalid");
    free(refresh);

    /* An expired code is refused like a used one; another member's code
     * is theirs. */
    char *body = fmt("{\"template_id\":\"%s\",\"auth_code_ttl_ms\":0}", id);
    json_object *late = sign_up(body, 201);
    expect_oauth_refused("authorization_code", "code", str_at(late, "auth_code"),
                         "isv.code-invalid");
    free(body);
    body = fmt("{\"template_id\":\"%s\",\"auth_code_ttl_ms\":300}", id);
    json_object *soon = sign_up(body, 201);
    usleep(400000);
    expect_oauth_refused("authorization_code", "code", str_at(soon, "auth_code"),
                         "isv.code-invalid");
    free(body);
    json_object *other = member_of(id, USER);
    ck_assert_str_ne(str_at(other, "request_id"), rid);
    free(token_for(str_at(other, "auth_code"), USER));

    json_object_put(other);
    json_object_put(soon);
    json_object_put(late);
    json_object_put(m);
    free(id);
}
END_TEST

START_TEST(member_forms_and_declines)
{
    reset();
    char *id = program_up("TPL-FORMS");
    static const struct {
        const char *form;
        long status;
    } forms[] = {
        {"{\"OPEN_FORM_FIELD_MOBILE\":\"13900000000\",\"OPEN_FORM_FIELD_NAME\":\"李四\","
         "\"OPEN_FORM_FIELD_GENDER\":\"女\"}",
         201},
        {"{\"OPEN_FORM_FIELD_MOBILE\":\"13900000000\"}", 400}, /* name is required */
        {"{\"OPEN_FORM_FIELD_MOBILE\":\"13900000000\",\"OPEN_FORM_FIELD_NAME\":\"李四\","
         "\"OPEN_FORM_FIELD_EMAIL\":\"a@b.c\"}",
         400}, /* not in the template's form */
        {"{\"OPEN_FORM_FIELD_SHOE_SIZE\":\"42\"}", 400},
        {"{\"OPEN_FORM_FIELD_MOBILE\":13900000000,\"OPEN_FORM_FIELD_NAME\":\"李四\"}", 400},
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        char *body = fmt("{\"template_id\":\"%s\",\"form\":%s}", id, forms[i].form);
        json_object_put(sign_up(body, forms[i].status));
        free(body);
    }
    char *body = fmt("{\"template_id\":\"%s\",\"user_id\":\"1088302463082075\"}", id);
    json_object_put(sign_up(body, 400));
    free(body);
    body = fmt("{\"template_id\":\"%s\",\"colour\":\"red\"}", id);
    json_object_put(sign_up(body, 400));
    free(body);

    /* A member who closes the form is never sent back: nothing to follow. */
    body = fmt("{\"template_id\":\"%s\",\"declined\":true}", id);
    json_object *d = sign_up(body, 201);
    ck_assert(json_object_get_boolean(json_object_object_get(d, "declined")));
    ck_assert(is_null(d, "callback_url"));
    ck_assert(is_null(d, "auth_code"));
    ck_assert(is_null(d, "request_id"));
    ck_assert_ptr_nonnull(str_at(d, "user_id"));
    json_object_put(d);
    free(body);
    free(id);
}
END_TEST

START_TEST(activateform_query_by_token)
{
    reset();
    char *id = program_up("TPL-QUERYFORM");
    char *body = fmt("{\"template_id\":\"%s\",\"form\":{\"OPEN_FORM_FIELD_MOBILE\":"
                     "\"13000000000\",\"OPEN_FORM_FIELD_NAME\":\"张三\"}}",
                     id);
    json_object *m = sign_up(body, 201);
    const char *rid = str_at(m, "request_id");
    char *token = token_for(str_at(m, "auth_code"), str_at(m, "user_id"));
    json_object *m2 = member_of(id, NULL);
    char *token2 = token_for(str_at(m2, "auth_code"), str_at(m2, "user_id"));

    /* infos is a JSON array, as text, of one-field objects. */
    struct alipay_reply rep;
    form_query(id, rid, token, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    ck_assert_str_eq(str_at(rep.node, "infos"), "[{\"OPEN_FORM_FIELD_MOBILE\":\"13000000000\"},"
                                                "{\"OPEN_FORM_FIELD_NAME\":\"张三\"}]");
    alipay_reply_free(&rep);

    /* Only the member's own token reads the form. */
    const char *tokens[] = {token2, "composeB-made-up-token", NULL};
    for (size_t i = 0; i < 3; i++) {
        form_query(id, rid, tokens[i], &rep);
        ck_assert_msg(rep.outcome == ALIPAY_AUTH_FAILED, "%zu: %s", i, rep.detail);
        ck_assert_int_eq(rep.verified, 1);
        ck_assert_str_eq(rep.code, "20001");
        ck_assert_str_eq(rep.sub_code, "aop.invalid-auth-token");
        alipay_reply_free(&rep);
    }
    /* Unknown forms and templates; biz_type from the list. */
    form_query(id, "00000000000000000000000000000000", token, &rep);
    ck_assert_int_eq(rep.outcome, ALIPAY_REJECTED);
    ck_assert_str_eq(rep.sub_code, "INVALID_PARAMETER");
    ck_assert_ptr_nonnull(strstr(rep.sub_msg, "request_id"));
    alipay_reply_free(&rep);
    form_query("20990101000000000000000000000009", rid, token, &rep);
    ck_assert_str_eq(rep.sub_code, "TEMPLATE_NOT_EXIT");
    alipay_reply_free(&rep);
    const char *const params[] = {"auth_token", token, NULL};
    char *biz =
        fmt("{\"biz_type\":\"COUPON\",\"template_id\":\"%s\",\"request_id\":\"%s\"}", id, rid);
    struct call c = {.method = FORM_QUERY, .biz = biz, .params = params};
    call_judged(&c, &rep);
    ck_assert_str_eq(rep.sub_code, "INVALID_PARAMETER");
    ck_assert_ptr_nonnull(strstr(rep.sub_msg, "biz_type"));
    alipay_reply_free(&rep);

    free(biz);
    free(token);
    free(token2);
    json_object_put(m2);
    json_object_put(m);
    free(body);
    free(id);
}
END_TEST

START_TEST(card_open_with_member_token)
{
    reset();
    char *id = program_up("TPL-OPEN");
    json_object *stranger = member_of(id, NULL), *member = member_of(id, USER);
    char *theirs = token_for(str_at(stranger, "auth_code"), str_at(stranger, "user_id"));
    char *mine = token_for(str_at(member, "auth_code"), USER);

    /* A token the simulator issued acts for its own member only. */
    char *biz = open_biz("S-token-1", id, "");
    const char *const other[] = {"auth_token", theirs, NULL};
    struct call c = {.method = OPEN, .biz = biz, .params = other};
    struct alipay_reply rep;
    call_judged(&c, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_AUTH_FAILED, "%s", rep.detail);
    ck_assert_str_eq(rep.sub_code, "aop.invalid-auth-token");
    alipay_reply_free(&rep);
    ck_assert_int_eq(cards_count(), 0);

    const char *const own[] = {"auth_token", mine, NULL};
    call_ok(OPEN, biz, own, &rep);
    alipay_reply_free(&rep);
    /* Tokens it never issued are taken on trust, as before. */
    free(biz);
    biz = open_biz("S-token-2", id, "");
    const char *const made_up[] = {"auth_token", "authusrB-made-up", NULL};
    call_ok(OPEN, biz, made_up, &rep);
    alipay_reply_free(&rep);
    ck_assert_int_eq(cards_count(), 2);

    free(biz);
    free(mine);
    free(theirs);
    json_object_put(member);
    json_object_put(stranger);
    free(id);
}
END_TEST

/* The same faults as for cards: refusals change nothing (a template is
 * not made, a code not spent), signature shapes do the work; the calls
 * are counted by method. */
START_TEST(faults_apply_to_program_methods)
{
    reset();
    size_t before = templates_count();
    add_fault("{\"mode\":\"code_20000\",\"method\":\"" TPL_CREATE "\",\"count\":1}");
    char *biz = template_biz("TPL-FAULT", "金卡");
    struct call c = {.method = TPL_CREATE, .biz = biz};
    struct alipay_reply rep;
    call_judged(&c, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_UNAVAILABLE, "%s", rep.detail);
    ck_assert_str_eq(rep.sub_code, "isp.unknow-error");
    alipay_reply_free(&rep);
    ck_assert_int_eq(templates_count(), before);
    char *id = create_template("TPL-FAULT", "金卡");
    set_form(id);

    /* activateurl.apply: a bad signature still asks for the link. */
    add_fault("{\"mode\":\"bad_signature\",\"method\":\"" URL_APPLY "\",\"count\":1}");
    char *apply = fmt("{\"template_id\":\"%s\",\"callback\":\"" CALLBACK "\"}", id);
    struct call a = {.method = URL_APPLY, .biz = apply};
    call_judged(&a, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_BAD_SIGNATURE, "%s", rep.detail);
    alipay_reply_free(&rep);
    json_object *st = template_state(id);
    ck_assert_int_eq(int_at(st, "activateurl_calls"), 1);
    json_object_put(st);

    /* oauth.token: refused or lost answers spend no code. */
    json_object *m = member_of(id, NULL);
    const char *code = str_at(m, "auth_code");
    add_fault("{\"mode\":\"error_response\",\"method\":\"" OAUTH "\",\"count\":1}");
    add_fault("{\"mode\":\"http_500\",\"method\":\"" OAUTH "\",\"count\":1}");
    add_fault("{\"mode\":\"drop\",\"method\":\"" OAUTH "\",\"count\":1}");
    add_fault("{\"mode\":\"delay\",\"method\":\"" OAUTH "\",\"count\":1,\"delay_ms\":300}");
    expect_oauth_refused("authorization_code", "code", code, "isv.invalid-app-id");
    const char *const params[] = {"grant_type", "authorization_code", "code", code, NULL};
    struct call o = {.method = OAUTH, .params = params};
    struct ts_http r;
    ck_assert_int_eq(gw_call(&o, &r), 0);
    ck_assert_int_eq(r.status, 500);
    ts_http_free(&r);
    ck_assert_int_eq(gw_call(&o, &r), -1);
    ts_http_free(&r);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *token = token_for(code, str_at(m, "user_id"));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_assert_int_ge((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000, 280);

    /* activateform.query: 20001 on demand, then the form. */
    add_fault("{\"mode\":\"code_20001\",\"method\":\"" FORM_QUERY "\",\"count\":1}");
    add_fault("{\"mode\":\"sign_first\",\"method\":\"" FORM_QUERY "\",\"count\":1}");
    form_query(id, str_at(m, "request_id"), token, &rep);
    ck_assert_int_eq(rep.outcome, ALIPAY_AUTH_FAILED);
    alipay_reply_free(&rep);
    form_query(id, str_at(m, "request_id"), token, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);

    json_object *calls = control("GET", "/calls", NULL, NULL);
    json_object *by = json_object_object_get(calls, "methods");
    ck_assert_int_eq(json_object_get_int(json_object_object_get(by, TPL_CREATE)), 2);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(by, FORM_SET)), 1);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(by, URL_APPLY)), 1);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(by, OAUTH)), 4);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(by, FORM_QUERY)), 2);
    json_object_put(calls);

    /* A reset forgets sign-ups, tokens and counts; templates stay. */
    reset();
    form_query(id, str_at(m, "request_id"), token, &rep);
    ck_assert_int_eq(rep.outcome, ALIPAY_AUTH_FAILED);
    alipay_reply_free(&rep);
    st = template_state(id);
    ck_assert_int_eq(int_at(st, "activateurl_calls"), 0);
    ck_assert_str_eq(str_at(st, "callback"), CALLBACK);
    json_object_put(st);

    free(token);
    json_object_put(m);
    free(apply);
    free(id);
    free(biz);
}
END_TEST

/* ------------------------------------- certificate mode and encryption */

#define CERT_APP_ID "2021000000000001"     /* the vectors' app certificate is for it */
#define AES_KEY "EREREREREREREREREREREQ==" /* tests/vectors/aes_vector.json */
#define OTHER_AES_KEY "IiIiIiIiIiIiIiIiIiIiIg=="

/* The SNs of tests/vectors/cert/sn.json, made with the SDK: the tests
 * compare with them, never with what the simulator computes. */
static char sn_app[33], sn_alipay[33], sn_rotated[33], sn_expired[33], sn_unknown[33], sn_root[80];

/* A vector's path in a buffer of its own (ts_vector's slots are reused
 * by ts_sim_start). */
static const char *vpath(int slot, const char *rel)
{
    static char paths[12][512];
    snprintf(paths[slot], sizeof(paths[slot]), "%s", ts_vector(rel));
    return paths[slot];
}

#define APP_CERT vpath(0, "cert/appCertPublicKey_2021000000000001.crt")
#define APP_CERT_KEY vpath(1, "cert/appCertPrivateKey_2021000000000001.pem")
#define ROOT_CERT vpath(2, "cert/alipayRootCert.crt")
#define ALIPAY_CERT vpath(3, "cert/alipayCertPublicKey_RSA2.crt")
#define ALIPAY_CERT_KEY vpath(4, "cert/alipayCertPrivateKey_RSA2.pem")
#define ROTATED_CERT vpath(5, "cert/alipayCertPublicKey_RSA2_rotated.crt")
#define ROTATED_KEY vpath(6, "cert/alipayCertPrivateKey_RSA2_rotated.pem")
#define UNKNOWN_CERT vpath(7, "cert/alipayCertPublicKey_RSA2_unknown_ca.crt")
#define UNKNOWN_KEY vpath(8, "cert/alipayCertPrivateKey_RSA2_unknown_ca.pem")
#define EXPIRED_CERT vpath(9, "cert/alipayCertPublicKey_RSA2_expired.crt")
#define EXPIRED_KEY vpath(10, "cert/alipayCertPrivateKey_RSA2_expired.pem")

static void sn_copy(json_object *o, const char *key, char *out, size_t n)
{
    const char *v = str_at(o, key);
    ck_assert_msg(v != NULL, "sn.json has no %s", key);
    snprintf(out, n, "%s", v);
}

/* The public key of a certificate file (caller frees). */
static EVP_PKEY *cert_key(const char *file)
{
    char err[256];
    STACK_OF(X509) *chain = alipay_cert_load(file, err, sizeof(err));
    ck_assert_msg(chain != NULL, "%s", err);
    EVP_PKEY *k = alipay_cert_public_key(chain, file, err, sizeof(err));
    ck_assert_msg(k != NULL, "%s", err);
    sk_X509_pop_free(chain, X509_free);
    return k;
}

static void sns_load(void)
{
    char *text = ts_read_file(ts_vector("cert/sn.json"), NULL);
    ck_assert_ptr_nonnull(text);
    json_object *o = parse(text);
    sn_copy(o, "app_cert_sn", sn_app, sizeof(sn_app));
    sn_copy(o, "alipay_cert_sn", sn_alipay, sizeof(sn_alipay));
    sn_copy(o, "alipay_cert_sn_rotated", sn_rotated, sizeof(sn_rotated));
    sn_copy(o, "alipay_cert_sn_expired", sn_expired, sizeof(sn_expired));
    sn_copy(o, "alipay_cert_sn_unknown_ca", sn_unknown, sizeof(sn_unknown));
    sn_copy(o, "alipay_root_cert_sn", sn_root, sizeof(sn_root));
    json_object_put(o);
    free(text);
}

/* Checked fixtures: the calls speak certificate mode (the app
 * certificate's key and SNs; answers verified with Alipay's certificate),
 * content encryption, or both. */
static void mode_cert(void)
{
    char err[256];
    sns_load();
    mode.app_key = alipay_key_load_private(APP_CERT_KEY, err, sizeof(err));
    ck_assert_msg(mode.app_key != NULL, "%s", err);
    mode.app_id = CERT_APP_ID;
    mode.app_cert_sn = sn_app;
    mode.root_cert_sn = sn_root;
    mode.alipay_pub = cert_key(ALIPAY_CERT);
    mode.alipay_cert_sn = sn_alipay;
}

static void mode_aes(void)
{
    char err[128];
    sns_load();
    mode.aes = alipay_aes_new(AES_KEY, err, sizeof(err));
    ck_assert_msg(mode.aes != NULL, "%s", err);
}

static void mode_cert_aes(void)
{
    mode_cert();
    mode_aes();
}

static void mode_off(void)
{
    EVP_PKEY_free(mode.app_key);
    EVP_PKEY_free(mode.alipay_pub);
    alipay_aes_free(mode.aes);
    memset(&mode, 0, sizeof(mode));
}

/* The simulator's arguments for certificate mode (NULL-terminated, in a
 * static array), then `more`. */
static const char *const *cert_args(const char *const *more)
{
    static const char *args[24];
    const char *const own[] = {"--app-cert",
                               APP_CERT,
                               "--root-cert",
                               ROOT_CERT,
                               "--alipay-cert",
                               ALIPAY_CERT,
                               "--alipay-private-key",
                               ALIPAY_CERT_KEY,
                               "--app-id",
                               CERT_APP_ID,
                               NULL};
    size_t n = 0;
    for (size_t i = 0; own[i]; i++)
        args[n++] = own[i];
    for (size_t i = 0; more && more[i] && n < 23; i++)
        args[n++] = more[i];
    args[n] = NULL;
    return args;
}

static const char *const aes_args[] = {"--aes-key", AES_KEY, NULL};

/* Unchecked fixtures: one simulator per case, in the case's mode. */
static void sim_cert_up(void)
{
    ck_assert_int_eq(ts_sim_start(&sim, cert_args(NULL)), 0);
}

static void sim_aes_up(void)
{
    ck_assert_int_eq(ts_sim_start(&sim, aes_args), 0);
}

static void sim_cert_aes_up(void)
{
    ck_assert_int_eq(ts_sim_start(&sim, cert_args(aes_args)), 0);
}

/* alipay.open.app.alipaycert.download of sn: the file it answers (its
 * text, malloc'd), checked to hold the certificate with that SN. */
static char *download(const char *sn)
{
    struct alipay_reply rep;
    char err[256], got[33];
    char *biz = fmt("{\"alipay_cert_sn\":\"%s\"}", sn);
    call_ok(DOWNLOAD, biz, NULL, &rep);
    const char *b64 = str_at(rep.node, "alipay_cert_content");
    ck_assert_ptr_nonnull(b64);
    size_t n = strlen(b64);
    char *pem = malloc(n / 4 * 3 + 1);
    long len = alipay_b64_decode(b64, n, (unsigned char *)pem);
    ck_assert_msg(len > 0, "alipay_cert_content is not base64: %s", b64);
    pem[len] = '\0';
    STACK_OF(X509) *chain = alipay_cert_parse(pem, (size_t)len, "download", err, sizeof(err));
    ck_assert_msg(chain != NULL, "%s", err);
    ck_assert_int_eq(alipay_cert_sn(sk_X509_value(chain, 0), got, err, sizeof(err)), 0);
    ck_assert_str_eq(got, sn);
    sk_X509_pop_free(chain, X509_free);
    alipay_reply_free(&rep);
    free(biz);
    return pem;
}

/* Downloads sn and compares with the certificate file it came from. */
static void expect_download(const char *sn, const char *file)
{
    char *pem = download(sn);
    char *want = ts_read_file(file, NULL);
    ck_assert_ptr_nonnull(want);
    ck_assert_str_eq(pem, want);
    free(want);
    free(pem);
}

/* Every method the simulator speaks, once each, in the case's mode: judge
 * and signed_node check every answer the mode's way (alipay_cert_sn,
 * encryption), business failures included. */
static void every_method(const char *tag)
{
    struct alipay_reply rep;
    char serial[32], del[32], req_id[32];
    snprintf(serial, sizeof(serial), "%s-OPEN", tag);
    snprintf(del, sizeof(del), "%s-DEL", tag);
    snprintf(req_id, sizeof(req_id), "%s-TPL", tag);
    reset();
    char *no = open_card(serial);
    /* The serial is read from biz_content, decrypted when encrypted. */
    ck_assert_int_eq(ts_sim_calls(&sim, serial), 1);
    query(no, "BIZ_CARD", USER, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "query: %s", rep.detail);
    alipay_reply_free(&rep);
    update(no, "{\"level\":\"VIP2\"}", "5", &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "update: %s", rep.detail);
    alipay_reply_free(&rep);
    delete_card(no, del, "CANCEL", &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "delete: %s", rep.detail);
    alipay_reply_free(&rep);
    query(no, "BIZ_CARD", NULL, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_REJECTED, "query: %s", rep.detail);
    ck_assert_str_eq(rep.sub_code, "CARD_NOT_EXIT");
    alipay_reply_free(&rep);

    char *id = program_up(req_id); /* template.create, formtemplate.set, activateurl.apply */
    char *biz = fmt("{\"template_id\":\"%s\"}", id);
    call_ok(TPL_QUERY, biz, NULL, &rep);
    ck_assert_str_eq(str_at(rep.node, "template_id"), id);
    alipay_reply_free(&rep);
    free(biz);
    biz = fmt("{\"template_id\":\"%s\",\"request_id\":\"%s-M\",\"biz_no_prefix\":\"MD\"}", id, tag);
    call_ok(TPL_MODIFY, biz, NULL, &rep);
    alipay_reply_free(&rep);
    free(biz);
    json_object *m = member_of(id, USER);
    char *token = token_for(str_at(m, "auth_code"), USER);
    form_query(id, str_at(m, "request_id"), token, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "activateform.query: %s", rep.detail);
    alipay_reply_free(&rep);

    if (mode.alipay_cert_sn) {
        expect_download(mode.alipay_cert_sn, ALIPAY_CERT);
    } else { /* public-key mode: Alipay has no certificate to give */
        biz = fmt("{\"alipay_cert_sn\":\"%s\"}", sn_alipay);
        expect_rejected(DOWNLOAD, biz, "CERT_NOT_EXIST", NULL);
        free(biz);
    }
    free(token);
    json_object_put(m);
    free(id);
    free(no);
}

START_TEST(cert_every_method)
{
    every_method("C");
}
END_TEST

START_TEST(aes_every_method)
{
    every_method("A");
}
END_TEST

START_TEST(cert_aes_every_method)
{
    every_method("B");
}
END_TEST

/* The unsigned error_response's sub_code of a call (and nothing done). */
static void expect_gateway_refusal(const struct call *c, const char *code, const char *sub_code)
{
    json_object *n = error_node(c);
    ck_assert_str_eq(str_at(n, "code"), code);
    ck_assert_str_eq(str_at(n, "sub_code"), sub_code);
    json_object_put(n);
}

/* Certificate mode's parameters: both SNs present and right, and signed
 * like any parameter; the app certificate's key is the one that counts. */
START_TEST(cert_sn_checked)
{
    reset();
    char *biz = open_biz("CS1", TEMPLATE, "");
    const char *const other_app[] = {"app_cert_sn", sn_alipay, NULL};
    /* The classic root SN bug: only the sha256 roots, or the EC one too. */
    char short_root[40];
    snprintf(short_root, sizeof(short_root), "%.32s", sn_root);
    const char *const other_root[] = {"alipay_root_cert_sn", short_root, NULL};
    const char *const unsigned_app[] = {"app_cert_sn", sn_app, NULL};
    const char *const unsigned_root[] = {"alipay_root_cert_sn", sn_root, NULL};
    const char *const unsigned_both[] = {"app_cert_sn", sn_app, "alipay_root_cert_sn", sn_root,
                                         NULL};
    struct call c = {.method = OPEN, .biz = biz, .omit = "app_cert_sn"};
    expect_gateway_refusal(&c, "40002", "isv.missing-app-cert-sn");
    c = (struct call){.method = OPEN, .biz = biz, .params = other_app};
    expect_gateway_refusal(&c, "40002", "isv.app-cert-not-exist");
    c = (struct call){.method = OPEN, .biz = biz, .omit = "alipay_root_cert_sn"};
    expect_gateway_refusal(&c, "40002", "isv.missing-alipay-root-cert-sn");
    c = (struct call){.method = OPEN, .biz = biz, .params = other_root};
    expect_gateway_refusal(&c, "40002", "isv.invalid-alipay-root-cert-sn");
    /* Signed with the public-key mode's app key: the certificate's key
     * decides. */
    c = (struct call){.method = OPEN, .biz = biz, .key = app_priv};
    expect_gateway_refusal(&c, "40002", "isv.invalid-signature");
    /* Right SNs that the signature does not cover. */
    c = (struct call){
        .method = OPEN, .biz = biz, .omit = "app_cert_sn", .unsigned_params = unsigned_app};
    expect_gateway_refusal(&c, "40002", "isv.invalid-signature");
    c = (struct call){.method = OPEN,
                      .biz = biz,
                      .omit = "alipay_root_cert_sn",
                      .unsigned_params = unsigned_root};
    expect_gateway_refusal(&c, "40002", "isv.invalid-signature");
    c = (struct call){.method = OPEN,
                      .biz = biz,
                      .omit = "app_cert_sn,alipay_root_cert_sn",
                      .unsigned_params = unsigned_both};
    expect_gateway_refusal(&c, "40002", "isv.invalid-signature");
    ck_assert_int_eq(cards_count(), 0);
    /* oauth.token too: every method is certificate mode's. */
    const char *const params[] = {"grant_type", "authorization_code", "code", "x", NULL};
    c = (struct call){.method = OAUTH, .params = params, .omit = "app_cert_sn"};
    expect_gateway_refusal(&c, "40002", "isv.missing-app-cert-sn");
    /* The right call goes through. */
    free(open_card("CS1"));
    free(biz);
}
END_TEST

/* The download gives the certificate file of any SN Alipay signed with,
 * and is counted by method. */
START_TEST(cert_download_counted)
{
    reset();
    expect_download(sn_alipay, ALIPAY_CERT);
    char *biz = fmt("{\"alipay_cert_sn\":\"%s\"}", sn_rotated); /* never signed with */
    expect_rejected(DOWNLOAD, biz, "CERT_NOT_EXIST", NULL);
    free(biz);
    expect_rejected(DOWNLOAD, "{}", "INVALID_PARAMETER", "alipay_cert_sn");
    long status;
    json_object *o = control("GET", "/calls?method=" DOWNLOAD, NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(str_at(o, "method"), DOWNLOAD);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "count")), 3);
    json_object_put(o);
    o = control("GET", "/calls?method=" OPEN, NULL, NULL);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "count")), 0);
    json_object_put(o);
    reset();
    o = control("GET", "/calls?method=" DOWNLOAD, NULL, NULL);
    ck_assert_int_eq(json_object_get_int(json_object_object_get(o, "count")), 0);
    json_object_put(o);
}
END_TEST

/* PUT /_sim/alipay-cert {"cert","key"}; the answer (caller puts). */
static json_object *rotate(const char *cert, const char *key, long want)
{
    long status;
    char *body = fmt("{\"cert\":\"%s\",\"key\":\"%s\"}", cert, key);
    json_object *o = control("PUT", "/alipay-cert", body, &status);
    ck_assert_msg(status == want, "PUT /_sim/alipay-cert %s: %ld", body, status);
    free(body);
    return o;
}

/* An open answered in the mode; returns its verdict with key (NULL: the
 * mode's). */
static void open_judged_with(const char *serial, EVP_PKEY *key, struct alipay_reply *rep)
{
    EVP_PKEY *was = mode.alipay_pub;
    char *biz = open_biz(serial, TEMPLATE, "");
    struct call c = {.method = OPEN, .biz = biz};
    if (key)
        mode.alipay_pub = key;
    call_judged(&c, rep);
    mode.alipay_pub = was;
    free(biz);
}

/* Alipay rotates its certificate: answers name and verify with the new
 * one, the old one stays downloadable; a key that is not the
 * certificate's is refused; certificates that do not chain can be used on
 * purpose. Its own simulator, which exits cleanly afterwards. */
START_TEST(cert_rotation)
{
    struct ts_sim own, saved = sim;
    ck_assert_int_eq(ts_sim_start(&own, cert_args(NULL)), 0);
    sim = own;
    json_object *o = control("GET", "/alipay-cert", NULL, NULL);
    ck_assert_str_eq(str_at(o, "alipay_cert_sn"), sn_alipay);
    json_object_put(o);

    json_object_put(rotate(ROTATED_CERT, ALIPAY_CERT_KEY, 400)); /* not its key */
    json_object_put(rotate(ROTATED_CERT, "/nonexistent.pem", 400));
    o = control("GET", "/alipay-cert", NULL, NULL);
    ck_assert_str_eq(str_at(o, "alipay_cert_sn"), sn_alipay);
    json_object_put(o);

    o = rotate(ROTATED_CERT, ROTATED_KEY, 200);
    ck_assert_str_eq(str_at(o, "alipay_cert_sn"), sn_rotated);
    ck_assert(json_object_get_boolean(json_object_object_get(o, "chains")));
    json_object_put(o);
    EVP_PKEY *rotated = cert_key(ROTATED_CERT), *original = mode.alipay_pub;
    struct alipay_reply rep;
    mode.alipay_cert_sn = sn_rotated;
    open_judged_with("R1", rotated, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    mode.alipay_cert_sn = NULL; /* the next answer is judged with the old key: it must fail */
    open_judged_with("R1", NULL, &rep);
    ck_assert_int_eq(rep.outcome, ALIPAY_BAD_SIGNATURE);
    alipay_reply_free(&rep);
    mode.alipay_pub = rotated; /* the download is signed with the new one */
    mode.alipay_cert_sn = sn_rotated;
    expect_download(sn_alipay, ALIPAY_CERT); /* the old one stays */
    expect_download(sn_rotated, ROTATED_CERT);

    /* Certificates a client must refuse: served, said not to chain. */
    const char *bad[][3] = {{UNKNOWN_CERT, UNKNOWN_KEY, sn_unknown},
                            {EXPIRED_CERT, EXPIRED_KEY, sn_expired}};
    char err[256];
    STACK_OF(X509) *roots = alipay_cert_load(ROOT_CERT, err, sizeof(err));
    ck_assert_ptr_nonnull(roots);
    for (size_t i = 0; i < 2; i++) {
        o = rotate(bad[i][0], bad[i][1], 200);
        ck_assert_str_eq(str_at(o, "alipay_cert_sn"), bad[i][2]);
        ck_assert(!json_object_get_boolean(json_object_object_get(o, "chains")));
        ck_assert_ptr_nonnull(str_at(o, "chain_error"));
        json_object_put(o);
        EVP_PKEY *k = cert_key(bad[i][0]);
        mode.alipay_pub = k;
        mode.alipay_cert_sn = bad[i][2];
        open_judged_with("R1", NULL, &rep);
        ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
        alipay_reply_free(&rep);
        char *pem = download(bad[i][2]);
        STACK_OF(X509) *chain = alipay_cert_parse(pem, strlen(pem), "download", err, sizeof(err));
        ck_assert_ptr_nonnull(chain);
        ck_assert_int_eq(alipay_cert_verify(chain, roots, 0, err, sizeof(err)), -1);
        sk_X509_pop_free(chain, X509_free);
        free(pem);
        mode.alipay_pub = rotated;
        EVP_PKEY_free(k);
    }
    sk_X509_pop_free(roots, X509_free);
    o = control("GET", "/alipay-cert", NULL, NULL);
    ck_assert_int_eq(json_object_array_length(json_object_object_get(o, "known")), 4);
    json_object_put(o);
    mode.alipay_pub = original;
    EVP_PKEY_free(rotated);

    int status = ts_stop(own.pid, SIGTERM, 10000);
    sim = saved;
    ck_assert_msg(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "alipay-sim exit status %d", status);
}
END_TEST

/* A business failure, a fault's answer and the calls of an encrypted
 * call: encrypted, and found by the decrypted out_serial_no. Other
 * encrypt_type mistakes are refused. */
START_TEST(aes_answers_and_refusals)
{
    reset();
    char *biz = open_biz("AE1", "20990101000000000000000000000001", "");
    expect_open_rejected(biz, "TEMPLATE_NOT_EXIT", NULL); /* judge: encrypted */
    free(biz);
    add_fault("{\"mode\":\"code_20000\",\"out_serial_no\":\"AE2\",\"count\":1}");
    struct ts_http r;
    struct alipay_reply rep;
    faulted_open("AE2", &r, &rep);
    ck_assert_msg(rep.verified && strcmp(rep.code, "20000") == 0, "%s", r.body);
    alipay_reply_free(&rep);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_calls(&sim, "AE2"), 1);

    /* encrypt_type in the form body, as the Node SDK sends it. */
    biz = open_biz("AE3", TEMPLATE, "");
    struct call c = {.method = OPEN, .biz = biz, .encrypt_type_in_body = 1};
    call_judged(&c, &rep);
    ck_assert_msg(rep.outcome == ALIPAY_OK, "%s", rep.detail);
    alipay_reply_free(&rep);
    free(biz);

    biz = open_biz("AE4", TEMPLATE, "");
    c = (struct call){.method = OPEN, .biz = biz, .omit = "encrypt_type"};
    expect_gateway_refusal(&c, "40001", "isv.decryption-error-missing-encrypt-type");
    c = (struct call){.method = OPEN, .biz = biz, .omit = "encrypt_type", .plain = 1};
    expect_gateway_refusal(&c, "40001", "isv.decryption-error-missing-encrypt-type");
    const char *const rsa[] = {"encrypt_type", "RSA", NULL};
    c = (struct call){.method = OPEN, .biz = biz, .params = rsa};
    expect_gateway_refusal(&c, "40002", "isv.decryption-error-not-valid-encrypt-type");

    /* A biz_content that does not decrypt (plain, or another key): signed
     * 40003 in the method's node, in plain, as Alipay answers it. */
    char err[128];
    struct alipay_aes *other = alipay_aes_new(OTHER_AES_KEY, err, sizeof(err));
    ck_assert_ptr_nonnull(other);
    struct call undecryptable[] = {{.method = OPEN, .biz = biz, .plain = 1},
                                   {.method = OPEN, .biz = biz, .aes = other}};
    for (size_t i = 0; i < 2; i++) {
        ck_assert_int_eq(gw_call(&undecryptable[i], &r), 0);
        ck_assert_msg(!node_is_string(&r, "alipay_marketing_card_open_response"), "%s", r.body);
        memset(&rep, 0, sizeof(rep));
        alipay_response_judge(r.body, r.body_len, OPEN, answer_key(), ALIPAY_SIGN_RSA2, &rep);
        ck_assert_msg(rep.verified == 1, "%s", r.body);
        ck_assert_str_eq(rep.code, "40003");
        ck_assert_str_eq(rep.sub_code, "isv.decryption-error-unknown");
        alipay_reply_free(&rep);
        ts_http_free(&r);
    }
    alipay_aes_free(other);
    ck_assert_int_eq(cards_count(), 1); /* AE3 only */
    free(biz);

    /* oauth.token has no biz_content: without encrypt_type it is taken and
     * answered in plain (SDKs encrypt only calls with a biz_content). */
    char *id = program_up("AE-TPL");
    json_object *m = member_of(id, USER);
    const char *const params[] = {"grant_type", "authorization_code", "code",
                                  str_at(m, "auth_code"), NULL};
    c = (struct call){.method = OAUTH, .params = params, .omit = "encrypt_type"};
    ck_assert_int_eq(gw_call(&c, &r), 0);
    ck_assert(!node_is_string(&r, "alipay_system_oauth_token_response"));
    json_object *n = signed_node(&r, "alipay_system_oauth_token_response");
    ck_assert_msg(n != NULL, "%s", r.body);
    ck_assert_str_eq(str_at(n, "user_id"), USER);
    json_object_put(n);
    ts_http_free(&r);
    json_object_put(m);
    free(id);
}
END_TEST

/* The faults that change how an answer looks keep certificate mode's SN
 * and the encryption: a signature over other text than the ciphertext as
 * sent, none, or first. */
START_TEST(cert_aes_fault_shapes)
{
    static const struct {
        const char *fault;
        enum alipay_outcome outcome;
    } cases[] = {{"bad_signature", ALIPAY_BAD_SIGNATURE},
                 {"unsigned_success", ALIPAY_BAD_SIGNATURE},
                 {"sign_first", ALIPAY_OK}};
    reset();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char serial[16], rule[128], sn[33];
        snprintf(serial, sizeof(serial), "FS%zu", i);
        snprintf(rule, sizeof(rule), "{\"mode\":\"%s\",\"count\":1}", cases[i].fault);
        add_fault(rule);
        struct ts_http r;
        struct alipay_reply rep;
        faulted_open(serial, &r, &rep);
        ck_assert_msg(rep.outcome == cases[i].outcome, "%s: %s", cases[i].fault, r.body);
        ck_assert_msg(node_is_string(&r, "alipay_marketing_card_open_response"), "%s", r.body);
        ck_assert_int_eq(alipay_response_cert_sn(r.body, r.body_len, sn), 0);
        ck_assert_str_eq(sn, sn_alipay);
        alipay_reply_free(&rep);
        ts_http_free(&r);
    }
    ck_assert_int_eq(cards_count(), 3); /* these faults do the work */
}
END_TEST

/* The two faults of encrypted answers give what they say: the ciphertext
 * signed without its quotes, and a well-signed node encrypted with another
 * key (response_aes.json's other_aes_key_b64), each shown with the keys
 * themselves, not with cardgate's judgement. */
START_TEST(cert_aes_encryption_faults)
{
    char err[256];
    json_object *ra = json_object_from_file(ts_vector("cert/response_aes.json"));
    ck_assert_ptr_nonnull(ra);
    struct alipay_aes *other = alipay_aes_new(
        json_object_get_string(json_object_object_get(ra, "other_aes_key_b64")), err, sizeof(err));
    ck_assert_msg(other != NULL, "%s", err);
    EVP_PKEY *pub = cert_key(ALIPAY_CERT);
    reset();
    for (int i = 0; i < 2; i++) {
        struct ts_http r;
        struct alipay_reply rep;
        const char *raw, *sign_raw;
        size_t n, sign_len, pt_len = 0;
        add_fault(i == 0 ? "{\"mode\":\"aes_unquoted_sign\",\"count\":1}"
                         : "{\"mode\":\"aes_other_key\",\"count\":1}");
        faulted_open(i == 0 ? "EF0" : "EF1", &r, &rep);
        ck_assert_int_eq(rep.outcome, ALIPAY_BAD_SIGNATURE);
        ck_assert_int_eq(alipay_response_find(r.body, r.body_len,
                                              "alipay_marketing_card_open_response", &raw, &n),
                         0);
        ck_assert_msg(raw[-1] == '"', "not encrypted: %s", r.body);
        ck_assert_int_eq(alipay_response_find(r.body, r.body_len, "sign", &sign_raw, &sign_len), 0);
        char *sign = strndup(sign_raw, sign_len); /* base64: nothing to unescape */
        char *ct = strndup(raw, n);
        int bare = alipay_sign_verify(pub, ALIPAY_SIGN_RSA2, raw, n, sign);
        int quoted = alipay_sign_verify(pub, ALIPAY_SIGN_RSA2, raw - 1, n + 2, sign);
        char *pt = alipay_aes_decrypt(other, ct, n, &pt_len, err, sizeof(err));
        if (i == 0) {
            ck_assert_msg(bare && !quoted, "aes_unquoted_sign: bare %d quoted %d", bare, quoted);
        } else {
            ck_assert_msg(quoted && !bare, "aes_other_key: bare %d quoted %d", bare, quoted);
            ck_assert_msg(pt && strstr(pt, "\"code\":\"10000\""), "other key: %s", pt ? pt : err);
        }
        free(pt);
        free(ct);
        free(sign);
        alipay_reply_free(&rep);
        ts_http_free(&r);
    }
    EVP_PKEY_free(pub);
    alipay_aes_free(other);
    json_object_put(ra);
}
END_TEST

/* Without --aes-key an encrypted call is refused, and without
 * --alipay-cert there is no certificate to rotate. */
START_TEST(modes_off)
{
    reset();
    char *biz = open_biz("MO1", TEMPLATE, "");
    const char *const aes[] = {"encrypt_type", "AES", NULL};
    struct call c = {.method = OPEN, .biz = biz, .params = aes};
    expect_gateway_refusal(&c, "40002", "isv.missing-encrypt-key");
    free(biz);
    json_object *o = control("GET", "/alipay-cert", NULL, NULL);
    ck_assert(json_object_object_get(o, "alipay_cert_sn") == NULL);
    json_object_put(o);
    json_object_put(rotate(ALIPAY_CERT, ALIPAY_CERT_KEY, 409));
}
END_TEST

/* The simulator refuses to start on a certificate whose key it does not
 * hold, an incomplete certificate mode, or a bad AES key. */
START_TEST(process_mode_refusals)
{
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/alipay-sim", CARDGATE_BIN_DIR);
    const char *const wrong_key[] = {
        bin,           "--listen", "127.0.0.1:1",   "--app-cert", APP_CERT,
        "--root-cert", ROOT_CERT,  "--alipay-cert", ALIPAY_CERT,  "--alipay-private-key",
        ROTATED_KEY,   NULL};
    const char *const no_root[] = {bin,
                                   "--listen",
                                   "127.0.0.1:1",
                                   "--app-cert",
                                   APP_CERT,
                                   "--alipay-cert",
                                   ALIPAY_CERT,
                                   "--alipay-private-key",
                                   ALIPAY_CERT_KEY,
                                   NULL};
    const char *const bad_aes[] = {bin,
                                   "--listen",
                                   "127.0.0.1:1",
                                   "--app-public-key",
                                   vpath(11, "keys/app_public.pem"),
                                   "--alipay-private-key",
                                   ALIPAY_CERT_KEY,
                                   "--aes-key",
                                   "not a key",
                                   NULL};
    const struct {
        const char *const *argv;
        int status;
    } cases[] = {{wrong_key, 1}, {no_root, 2}, {bad_aes, 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = -1;
        pid_t pid = ts_spawn(cases[i].argv, NULL, NULL);
        ck_assert_int_gt(pid, 0);
        /* One that wrongly starts serving is stopped, not waited for. */
        for (int k = 0; k < 100 && waitpid(pid, &st, WNOHANG) == 0; k++)
            usleep(50000);
        if (st == -1)
            ts_stop(pid, SIGKILL, 2000);
        ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == cases[i].status,
                      "case %zu: status %d (-1: it started)", i, st);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alipay-sim");
    TCase *t = tcase_create("sim");
    tcase_set_timeout(t, 60);
    tcase_add_unchecked_fixture(t, sim_up, sim_down);
    tcase_add_checked_fixture(t, keys_up, keys_down);
    tcase_add_test(t, open_card_signed_answer);
    tcase_add_test(t, open_rsa_sha1);
    tcase_add_test(t, same_serial_same_card);
    tcase_add_test(t, query_by_card_and_codes);
    tcase_add_test(t, query_unknown_card);
    tcase_add_test(t, bad_signature_refused);
    tcase_add_test(t, timestamp_must_be_beijing_time);
    tcase_add_test(t, public_parameters_checked);
    tcase_add_test(t, unknown_template);
    tcase_add_test(t, biz_content_checked_against_seed);
    tcase_add_test(t, form_plus_is_space);
    tcase_add_test(t, fault_codes_change_nothing);
    tcase_add_test(t, fault_signature_shapes);
    tcase_add_test(t, fault_transport);
    tcase_add_test(t, fault_filters_and_count);
    tcase_add_test(t, delay_client_gone);
    tcase_add_test(t, calls_counted);
    tcase_add_test(t, update_round_trip);
    tcase_add_test(t, update_refusals);
    tcase_add_test(t, delete_round_trip);
    tcase_add_test(t, max_in_flight_per_card);
    tcase_add_test(t, faults_apply_to_update_and_delete);
    tcase_add_test(t, template_create_dedup_query_modify);
    tcase_add_test(t, template_refusals);
    tcase_add_test(t, form_set_checked);
    tcase_add_test(t, activateurl_apply_link);
    tcase_add_test(t, member_oauth_token);
    tcase_add_test(t, member_forms_and_declines);
    tcase_add_test(t, activateform_query_by_token);
    tcase_add_test(t, card_open_with_member_token);
    tcase_add_test(t, faults_apply_to_program_methods);
    tcase_add_test(t, modes_off);
    suite_add_tcase(s, t);
    TCase *cert = tcase_create("cert");
    tcase_set_timeout(cert, 60);
    tcase_add_unchecked_fixture(cert, sim_cert_up, sim_down);
    tcase_add_checked_fixture(cert, keys_up, keys_down);
    tcase_add_checked_fixture(cert, mode_cert, mode_off);
    tcase_add_test(cert, cert_every_method);
    tcase_add_test(cert, cert_sn_checked);
    tcase_add_test(cert, cert_download_counted);
    tcase_add_test(cert, cert_rotation);
    suite_add_tcase(s, cert);
    TCase *aes = tcase_create("aes");
    tcase_set_timeout(aes, 60);
    tcase_add_unchecked_fixture(aes, sim_aes_up, sim_down);
    tcase_add_checked_fixture(aes, keys_up, keys_down);
    tcase_add_checked_fixture(aes, mode_aes, mode_off);
    tcase_add_test(aes, aes_every_method);
    tcase_add_test(aes, aes_answers_and_refusals);
    suite_add_tcase(s, aes);
    TCase *both = tcase_create("cert_aes");
    tcase_set_timeout(both, 60);
    tcase_add_unchecked_fixture(both, sim_cert_aes_up, sim_down);
    tcase_add_checked_fixture(both, keys_up, keys_down);
    tcase_add_checked_fixture(both, mode_cert_aes, mode_off);
    tcase_add_test(both, cert_aes_every_method);
    tcase_add_test(both, cert_aes_fault_shapes);
    tcase_add_test(both, cert_aes_encryption_faults);
    suite_add_tcase(s, both);
    TCase *p = tcase_create("process");
    tcase_set_timeout(p, 60);
    tcase_add_checked_fixture(p, keys_up, keys_down);
    tcase_add_test(p, process_app_id_and_clean_exit);
    tcase_add_test(p, process_mode_refusals);
    suite_add_tcase(s, p);
    return ts_run_suite(s);
}
