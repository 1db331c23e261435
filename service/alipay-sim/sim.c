/* sim: state and rules of the gateway stand-in. See sim.h. */
#include "sim.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <json-c/linkhash.h>
#include <openssl/rand.h>

#include "alipay_aes.h"
#include "alipay_response.h"
#include "cert.h"
#include "encrypt.h"
#include "jsonx.h"
#include "member.h"
#include "method.h"
#include "program.h"
#include "validate.h"

#define METHOD_OPEN "alipay.marketing.card.open"
#define METHOD_QUERY "alipay.marketing.card.query"
#define METHOD_UPDATE "alipay.marketing.card.update"
#define METHOD_DELETE "alipay.marketing.card.delete"
#define METHOD_TEMPLATE_CREATE "alipay.marketing.card.template.create"
#define METHOD_TEMPLATE_QUERY "alipay.marketing.card.template.query"
#define METHOD_TEMPLATE_MODIFY "alipay.marketing.card.template.modify"
#define METHOD_FORM_SET "alipay.marketing.card.formtemplate.set"
#define METHOD_ACTIVATEURL_APPLY "alipay.marketing.card.activateurl.apply"
#define METHOD_OAUTH_TOKEN "alipay.system.oauth.token"
#define METHOD_ACTIVATEFORM_QUERY "alipay.marketing.card.activateform.query"
#define METHOD_CERT_DOWNLOAD "alipay.open.app.alipaycert.download"

/* The key of the aes_other_key fault's answers (tests/vectors/cert/
 * response_aes.json's other_aes_key_b64). */
#define SIM_OTHER_AES_KEY "TwLAzlBZt78H4a4GQi8UwQ=="

/* Seconds east of UTC of the time Alipay's timestamps are written in. */
#define BEIJING_OFFSET (8 * 3600)

static const char *const fault_names[] = {
    [SIM_FAULT_NONE] = "none",
    [SIM_FAULT_DELAY] = "delay",
    [SIM_FAULT_CODE_20000] = "code_20000",
    [SIM_FAULT_CODE_20001] = "code_20001",
    [SIM_FAULT_BAD_SIGNATURE] = "bad_signature",
    [SIM_FAULT_UNSIGNED_SUCCESS] = "unsigned_success",
    [SIM_FAULT_ERROR_RESPONSE] = "error_response",
    [SIM_FAULT_HTTP_500] = "http_500",
    [SIM_FAULT_DROP] = "drop",
    [SIM_FAULT_SIGN_FIRST] = "sign_first",
    [SIM_FAULT_SYSTEM_ERROR] = "system_error",
    [SIM_FAULT_AES_UNQUOTED] = "aes_unquoted_sign",
    [SIM_FAULT_AES_OTHER_KEY] = "aes_other_key",
};

int sim_fault_mode_parse(const char *name, enum sim_fault_mode *out)
{
    /* "none" is not a mode one can ask for: start at DELAY. */
    for (size_t i = SIM_FAULT_DELAY; i < sizeof(fault_names) / sizeof(fault_names[0]); i++) {
        if (name && strcmp(name, fault_names[i]) == 0) {
            *out = (enum sim_fault_mode)i;
            return 0;
        }
    }
    return -1;
}

const char *sim_fault_mode_name(enum sim_fault_mode m)
{
    if ((size_t)m < sizeof(fault_names) / sizeof(fault_names[0]))
        return fault_names[m];
    return "?";
}

/* ---------------------------------------------------------------- helpers */

/* xorshift64*: the random digits of card numbers and codes. They only have
 * to differ between runs and look like Alipay's, not be secret. */
static uint64_t rng_next(struct sim *s)
{
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void sim_random_digits(struct sim *s, char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (char)('0' + rng_next(s) % 10);
    out[n] = '\0';
    if (n > 0 && out[0] == '0')
        out[0] = '1'; /* no leading zero: some clients keep numbers as numbers */
}

void sim_random_hex(struct sim *s, char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char b;
        if (RAND_bytes(&b, 1) != 1)
            b = (unsigned char)rng_next(s);
        out[i] = hex[b & 15];
    }
    out[n] = '\0';
}

void sim_new_id(const struct sim *s, char kind, uint64_t seq, char out[33])
{
    time_t now = time(NULL) + BEIJING_OFFSET;
    struct tm tm;
    char day[16] = "20000101";
    if (gmtime_r(&now, &tm))
        strftime(day, sizeof(day), "%Y%m%d", &tm);
    snprintf(out, 33, "%.8s%.12s%c%011" PRIu64, day, s->instance, kind,
             (uint64_t)(seq % 100000000000ULL));
}

int64_t sim_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *sim_url_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1), *w = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || strchr("-._~", *p)) {
            *w++ = (char)*p;
        } else {
            *w++ = '%';
            *w++ = hex[*p >> 4];
            *w++ = hex[*p & 15];
        }
    }
    *w = '\0';
    return out;
}

void sim_add_str(json_object *o, const char *key, const char *val)
{
    json_object_object_add(o, key, json_object_new_string(val));
}

/* --------------------------------------------------------------- lifecycle */

static int make_indexes(struct sim *s)
{
    s->by_serial = lh_kchar_table_new(64, NULL);
    s->by_biz = lh_kchar_table_new(64, NULL);
    s->by_qr = lh_kchar_table_new(64, NULL);
    s->by_bar = lh_kchar_table_new(64, NULL);
    s->by_delete = lh_kchar_table_new(64, NULL);
    return (s->by_serial && s->by_biz && s->by_qr && s->by_bar && s->by_delete) ? 0 : -1;
}

static void free_indexes(struct sim *s)
{
    struct lh_table **t[] = {&s->by_serial, &s->by_biz, &s->by_qr, &s->by_bar, &s->by_delete};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (*t[i])
            lh_table_free(*t[i]);
        *t[i] = NULL;
    }
}

static void card_free(struct sim_card *c)
{
    free(c->biz_card_no);
    free(c->out_serial_no);
    free(c->user_id);
    free(c->template_id);
    free(c->qr_code);
    free(c->bar_code);
    free(c->open_card_channel);
    free(c->open_card_channel_id);
    free(c->delete_reason);
    free(c->delete_serial_no);
    free(c->biz_serial_no);
    json_object_put(c->card_info);
    free(c);
}

static void free_cards(struct sim *s)
{
    for (struct sim_card *c = s->cards, *next; c; c = next) {
        next = c->next;
        card_free(c);
    }
    s->cards = s->cards_tail = NULL;
    s->ncards = 0;
}

static int reset_counters(struct sim *s)
{
    json_object_put(s->calls_methods);
    json_object_put(s->calls_serials);
    json_object_put(s->in_flight);
    json_object_put(s->in_flight_max);
    s->calls_total = 0;
    s->calls_methods = json_object_new_object();
    s->calls_serials = json_object_new_object();
    s->in_flight = json_object_new_object();
    s->in_flight_max = json_object_new_object();
    /* Delayed calls that arrived before now must not leave the new counts. */
    s->in_flight_gen++;
    return (s->calls_methods && s->calls_serials && s->in_flight && s->in_flight_max) ? 0 : -1;
}

static void seed_rng(struct sim *s)
{
    if (RAND_bytes((unsigned char *)&s->rng, sizeof(s->rng)) != 1)
        s->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (s->rng == 0)
        s->rng = 0x9E3779B97F4A7C15ULL;
}

int sim_init(struct sim *s, EVP_PKEY *app_public, EVP_PKEY *alipay_private, const char *app_id,
             const char *templates, enum alipay_sign_type sign_type_default, char *err,
             size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->sign_type_default = sign_type_default;
    s->next_fault_id = 1;
    seed_rng(s);
    sim_random_digits(s, s->instance, 12);
    if (program_init(s) < 0 || member_init(s) < 0 || make_indexes(s) < 0 || reset_counters(s) < 0 ||
        (app_id && !(s->app_id = strdup(app_id)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    char *list = strdup(templates ? templates : SIM_DEFAULT_TEMPLATES);
    if (!list) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    char *save = NULL;
    for (char *id = strtok_r(list, ",", &save); id; id = strtok_r(NULL, ",", &save)) {
        if (sim_template_add(s, id) < 0) {
            snprintf(err, errlen, "bad template id '%s' (1-32 characters)", id);
            free(list);
            goto fail;
        }
    }
    free(list);
    /* Taken last: on failure the caller still owns the keys. */
    s->app_public = app_public;
    s->alipay_private = alipay_private;
    return 0;
fail:
    sim_free(s);
    return -1;
}

static void free_faults(struct sim *s)
{
    for (struct sim_fault *f = s->faults, *next; f; f = next) {
        next = f->next;
        free(f->method);
        free(f->out_serial_no);
        free(f);
    }
    s->faults = NULL;
}

void sim_free(struct sim *s)
{
    free_faults(s);
    free_cards(s);
    free_indexes(s);
    program_free(s);
    member_free(s);
    json_object_put(s->calls_methods);
    json_object_put(s->calls_serials);
    json_object_put(s->in_flight);
    json_object_put(s->in_flight_max);
    cert_free(s);
    encrypt_free(s);
    EVP_PKEY_free(s->app_public);
    EVP_PKEY_free(s->alipay_private);
    free(s->app_id);
    memset(s, 0, sizeof(*s));
}

void sim_reset(struct sim *s)
{
    free_faults(s);
    free_cards(s);
    free_indexes(s);
    make_indexes(s);
    reset_counters(s);
    program_reset(s);
    member_reset(s);
}

/* ------------------------------------------------------------------ faults */

long sim_fault_add(struct sim *s, enum sim_fault_mode mode, const char *method,
                   const char *out_serial_no, long count, long delay_ms)
{
    struct sim_fault *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->mode = mode;
    f->count = count;
    f->delay_ms = delay_ms;
    f->method = method ? strdup(method) : NULL;
    f->out_serial_no = out_serial_no ? strdup(out_serial_no) : NULL;
    if ((method && !f->method) || (out_serial_no && !f->out_serial_no)) {
        free(f->method);
        free(f->out_serial_no);
        free(f);
        return -1;
    }
    f->id = s->next_fault_id++;
    struct sim_fault **tail = &s->faults;
    while (*tail)
        tail = &(*tail)->next;
    *tail = f;
    return f->id;
}

static void fault_unlink(struct sim *s, struct sim_fault *f)
{
    for (struct sim_fault **pp = &s->faults; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            free(f->method);
            free(f->out_serial_no);
            free(f);
            return;
        }
    }
}

int sim_fault_remove(struct sim *s, long id)
{
    for (struct sim_fault *f = s->faults; f; f = f->next) {
        if (f->id == id) {
            fault_unlink(s, f);
            return 0;
        }
    }
    return -1;
}

size_t sim_faults_clear(struct sim *s)
{
    size_t n = 0;
    for (struct sim_fault *f = s->faults; f; f = f->next)
        n++;
    free_faults(s);
    return n;
}

int sim_fault_take(struct sim *s, const char *method, const char *out_serial_no,
                   enum sim_fault_mode *mode, long *delay_ms)
{
    *mode = SIM_FAULT_NONE;
    *delay_ms = 0;
    for (struct sim_fault *f = s->faults; f; f = f->next) {
        if (f->method && (!method || strcmp(f->method, method) != 0))
            continue;
        if (f->out_serial_no && (!out_serial_no || strcmp(f->out_serial_no, out_serial_no) != 0))
            continue;
        *mode = f->mode;
        *delay_ms = f->delay_ms;
        if (f->count > 0 && --f->count == 0)
            fault_unlink(s, f);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------- calls */

void sim_call_info_get(const struct sim *s, const struct alipay_params *p,
                       struct sim_call_info *out)
{
    memset(out, 0, sizeof(*out));
    const char *method = alipay_params_get(p, "method");
    if (method)
        out->method = strdup(method);
    char *biz = NULL;
    encrypt_biz(s, p, &biz);
    json_object *o = biz ? jsonx_parse(biz, strlen(biz)) : NULL, *v;
    free(biz);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return;
    }
    if (json_object_object_get_ex(o, "target_card_no", &v) &&
        json_object_is_type(v, json_type_string))
        out->target_card_no = strdup(json_object_get_string(v));
    if (json_object_object_get_ex(o, "out_serial_no", &v) &&
        json_object_is_type(v, json_type_string)) {
        out->out_serial_no = strdup(json_object_get_string(v));
        out->counted_serial = 1;
    } else if (out->target_card_no) {
        /* query and update have no serial: fault rules match their card. */
        out->out_serial_no = strdup(out->target_card_no);
    }
    json_object_put(o);
}

void sim_call_info_free(struct sim_call_info *ci)
{
    free(ci->method);
    free(ci->out_serial_no);
    free(ci->target_card_no);
    memset(ci, 0, sizeof(*ci));
}

static void count_key(json_object *map, const char *key)
{
    json_object *v;
    if (json_object_object_get_ex(map, key, &v))
        json_object_set_int64(v, json_object_get_int64(v) + 1);
    else
        json_object_object_add(map, key, json_object_new_int64(1));
}

void sim_count_call(struct sim *s, const struct sim_call_info *ci)
{
    s->calls_total++;
    if (ci->method)
        count_key(s->calls_methods, ci->method);
    if (ci->out_serial_no && ci->counted_serial)
        count_key(s->calls_serials, ci->out_serial_no);
}

static long count_of(json_object *map, const char *key)
{
    json_object *v;
    if (json_object_object_get_ex(map, key, &v))
        return (long)json_object_get_int64(v);
    return 0;
}

long sim_calls_for_serial(const struct sim *s, const char *out_serial_no)
{
    return count_of(s->calls_serials, out_serial_no);
}

long sim_calls_for_method(const struct sim *s, const char *method)
{
    return count_of(s->calls_methods, method);
}

/* Only the calls that change a card count: two of them at once for one card
 * is what a client must avoid (the later may be applied first). */
static int changes_card(const char *method)
{
    return method && (strcmp(method, METHOD_UPDATE) == 0 || strcmp(method, METHOD_DELETE) == 0);
}

void sim_in_flight_enter(struct sim *s, struct sim_call_info *ci)
{
    const char *no = ci->target_card_no;
    json_object *v;
    int64_t now = 1;
    if (ci->in_flight || !no || !changes_card(ci->method))
        return;
    if (json_object_object_get_ex(s->in_flight, no, &v)) {
        now = json_object_get_int64(v) + 1;
        json_object_set_int64(v, now);
    } else {
        json_object_object_add(s->in_flight, no, json_object_new_int64(now));
    }
    if (now > sim_max_in_flight(s, no))
        json_object_object_add(s->in_flight_max, no, json_object_new_int64(now));
    ci->in_flight = 1;
    ci->in_flight_gen = s->in_flight_gen;
}

void sim_in_flight_leave(struct sim *s, struct sim_call_info *ci)
{
    json_object *v;
    if (!ci->in_flight)
        return;
    ci->in_flight = 0;
    /* Counted before a reset: the reset's fresh counts never included it. */
    if (ci->in_flight_gen != s->in_flight_gen ||
        !json_object_object_get_ex(s->in_flight, ci->target_card_no, &v))
        return;
    int64_t now = json_object_get_int64(v) - 1;
    if (now <= 0)
        json_object_object_del(s->in_flight, ci->target_card_no);
    else
        json_object_set_int64(v, now);
}

long sim_max_in_flight(const struct sim *s, const char *target_card_no)
{
    json_object *v;
    if (json_object_object_get_ex(s->in_flight_max, target_card_no, &v))
        return (long)json_object_get_int64(v);
    return 0;
}

/* ------------------------------------------------------------------- nodes */

void sim_node_free(struct sim_node *n)
{
    free(n->text);
    n->text = NULL;
}

/* Fills out with a node made of o (which it puts). Returns 0 or -1. */
static int node_set(struct sim_node *out, const char *name, json_object *o, int sign,
                    enum alipay_sign_type type)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", name);
    json_object *v;
    if (json_object_object_get_ex(o, "code", &v))
        snprintf(out->code, sizeof(out->code), "%s", json_object_get_string(v));
    if (json_object_object_get_ex(o, "sub_code", &v))
        snprintf(out->sub_code, sizeof(out->sub_code), "%s", json_object_get_string(v));
    out->text = jsonx_text(o);
    out->sign = sign;
    out->type = type;
    json_object_put(o);
    return out->text ? 0 : -1;
}

json_object *sim_code_object(const char *code, const char *msg, const char *sub_code,
                             const char *sub_msg)
{
    json_object *o = json_object_new_object();
    sim_add_str(o, "code", code);
    sim_add_str(o, "msg", msg);
    if (sub_code)
        sim_add_str(o, "sub_code", sub_code);
    if (sub_msg)
        sim_add_str(o, "sub_msg", sub_msg);
    return o;
}

/* The unsigned error_response Alipay answers gateway-level refusals with. */
int sim_gateway_error(struct sim_node *out, const char *code, const char *sub_code,
                      const char *sub_msg, enum alipay_sign_type type)
{
    const char *msg =
        strcmp(code, "40001") == 0 ? "Missing Required Arguments" : "Invalid Arguments";
    return node_set(out, "error_response", sim_code_object(code, msg, sub_code, sub_msg), 0, type);
}

/* The node name for method, or "error_response" when there is none. */
static void node_name_for(const char *method, char *out, size_t outlen)
{
    if (!method || alipay_response_node_name(method, out, outlen) < 0)
        snprintf(out, outlen, "error_response");
}

/* A signed answer in the method's node: business failures and the 20000s. */
int sim_method_code(struct sim_node *out, const char *method, enum alipay_sign_type type,
                    const char *code, const char *msg, const char *sub_code, const char *sub_msg)
{
    char name[128];
    node_name_for(method, name, sizeof(name));
    return node_set(out, name, sim_code_object(code, msg, sub_code, sub_msg), 1, type);
}

int sim_business_error(struct sim_node *out, const char *method, enum alipay_sign_type type,
                       const char *sub_code, const char *sub_msg)
{
    return sim_method_code(out, method, type, "40004", "Business Failed", sub_code, sub_msg);
}

int sim_bad_token(struct sim_node *out, const struct sim_req *r)
{
    return sim_method_code(out, r->method, r->type, "20001", "Insufficient Token Permissions",
                           "aop.invalid-auth-token", "无效的访问令牌");
}

/* ----------------------------------------------------- public parameters */

static const struct method_def *method_find(const char *name);
static int method_takes_biz(const char *name);

/* Is the Beijing-time timestamp within the window around now? */
static int timestamp_ok(const char *ts)
{
    struct tm tm = {0};
    if (validate_datetime(ts, 1) < 0 || !strptime(ts, "%Y-%m-%d %H:%M:%S", &tm))
        return 0;
    time_t t = timegm(&tm) - BEIJING_OFFSET;
    double d = difftime(t, time(NULL));
    return d >= -SIM_TIMESTAMP_WINDOW && d <= SIM_TIMESTAMP_WINDOW;
}

/* Verifies sign with the app's public key (its certificate's in
 * certificate mode) over every parameter but sign. Returns 1 when it
 * filled out with the refusal, 0 when the signature holds, -1 when out of
 * memory. */
static int check_signature(const struct sim *s, const struct alipay_params *p,
                           enum alipay_sign_type t, struct sim_node *out)
{
    char *content = alipay_sign_content(p);
    if (!content)
        return -1;
    if (alipay_sign_verify(s->app_public, t, content, strlen(content),
                           alipay_params_get(p, "sign"))) {
        free(content);
        return 0;
    }
    /* Like Alipay, tell the caller what text was verified. */
    size_t n = strlen(content) + 128;
    char *msg = malloc(n);
    int r = -1;
    if (msg) {
        snprintf(msg, n,
                 "验签出错,建议检查签名字符串或签名私钥与应用公钥是否匹配,"
                 "网关生成的验签字符串为:%s",
                 content);
        r = sim_gateway_error(out, "40002", "isv.invalid-signature", msg, t);
    }
    free(msg);
    free(content);
    return r < 0 ? -1 : 1;
}

/* After the public parameters: certificate mode's SNs and encrypt_type,
 * which the gateway reads before it verifies, then the signature. Returns
 * as check_public. */
static int check_call(const struct sim *s, const struct alipay_params *p, enum alipay_sign_type t,
                      enum alipay_sign_type *type, struct sim_node *out)
{
    int r = cert_check_request(s, p, t, out);
    if (r == 0)
        r = encrypt_check_request(s, p, method_takes_biz(alipay_params_get(p, "method")), t, out);
    if (r == 0)
        r = check_signature(s, p, t, out);
    if (r == 0)
        *type = t;
    return r;
}

/* Checks the public parameters and the signature the way the gateway does.
 * Returns 1 when it filled out with the refusal, 0 when the call may go on
 * (with its sign type in *type), -1 when out of memory. */
static int check_public(struct sim *s, const struct alipay_params *p, enum alipay_sign_type *type,
                        struct sim_node *out)
{
    static const struct {
        const char *param, *sub_code, *sub_msg;
    } required[] = {
        {"app_id", "isv.missing-app-id", "缺少AppID参数"},
        {"method", "isv.missing-method", "缺少方法名参数"},
        {"sign", "isv.missing-signature", "缺少签名参数"},
        {"timestamp", "isv.missing-timestamp", "缺少时间戳参数"},
        {"version", "isv.missing-version", "缺少版本参数"},
        {"charset", "isv.missing-charset", "缺少编码集参数"},
    };
    enum alipay_sign_type t = s->sign_type_default;
    const char *st = alipay_params_get(p, "sign_type");
    int r = 0;

    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (!alipay_params_get(p, required[i].param)) {
            r = sim_gateway_error(out, "40001", required[i].sub_code, required[i].sub_msg, t);
            return r < 0 ? -1 : 1;
        }
    }
    const char *app_id = alipay_params_get(p, "app_id");
    const char *format = alipay_params_get(p, "format");
    const char *method = alipay_params_get(p, "method");
    if (s->app_id && strcmp(app_id, s->app_id) != 0)
        r = sim_gateway_error(out, "40002", "isv.invalid-app-id", "无效的AppID参数", t);
    else if (format && strcasecmp(format, "JSON") != 0)
        r = sim_gateway_error(out, "40002", "isv.invalid-format", "只支持JSON格式", t);
    else if (strcasecmp(alipay_params_get(p, "charset"), "utf-8") != 0)
        r = sim_gateway_error(out, "40002", "isv.invalid-charset", "字符集错误,只支持utf-8", t);
    else if (st && alipay_sign_type_parse(st, &t) < 0)
        r = sim_gateway_error(out, "40002", "isv.invalid-signature-type", "无效的签名类型", t);
    else if (strcmp(alipay_params_get(p, "version"), "1.0") != 0)
        r = sim_gateway_error(out, "40002", "isv.invalid-version", "版本号错误,只支持1.0", t);
    else if (!timestamp_ok(alipay_params_get(p, "timestamp")))
        r = sim_gateway_error(
            out, "40002", "isv.invalid-timestamp",
            "非法的时间戳参数(须为北京时间yyyy-MM-dd HH:mm:ss,与当前时间相差10分钟内)", t);
    else if (!method_find(method))
        r = sim_gateway_error(out, "40002", "isv.invalid-method", "不存在的方法名", t);
    else
        return check_call(s, p, t, type, out);
    return r < 0 ? -1 : 1;
}

/* -------------------------------------------------------- biz validation */

/* card_user_info{user_uni_id: 16 digits starting 2088, user_uni_id_type: UID} */
static int check_user(json_object *u, const char *path, const char **user_id, struct check *c)
{
    static const char *const keys[] = {"user_uni_id", "user_uni_id_type", NULL};
    const char *id, *type;
    char p[64];
    if (chk_only_keys(u, path, keys, c) < 0 || chk_str(u, path, "user_uni_id", 1, 32, &id, c) < 0 ||
        chk_str(u, path, "user_uni_id_type", 1, 32, &type, c) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s.user_uni_id", path);
    if (validate_user_id(id) < 0)
        return chk_fail(c, "%s must be an Alipay user id (16 digits starting 2088)", p);
    if (strcmp(type, "UID") != 0)
        return chk_fail(c, "%s.user_uni_id_type must be UID", path);
    *user_id = id;
    return 0;
}

/* parent.mdcode_info (MdCodeInfoDTO); parent is card_ext_info or card_info. */
static int check_mdcode(json_object *md, const char *parent, struct check *c)
{
    static const char *const keys[] = {"code_status", "code_value", "expire_time", "time_stamp",
                                       NULL};
    char path[64], expire_path[80];
    const char *status, *value, *expire;
    json_object *ts;
    snprintf(path, sizeof(path), "%s.mdcode_info", parent);
    snprintf(expire_path, sizeof(expire_path), "%s.expire_time", path);
    if (chk_only_keys(md, path, keys, c) < 0 ||
        chk_str(md, path, "code_status", 1, 14, &status, c) < 0 ||
        chk_str(md, path, "code_value", 0, 128, &value, c) < 0 ||
        chk_str(md, path, "expire_time", 0, 19, &expire, c) < 0)
        return -1;
    if (strcmp(status, "SUCCESS") != 0 && strcmp(status, "FAIL_RETRY") != 0 &&
        strcmp(status, "FAIL_NOT_RETRY") != 0)
        return chk_fail(c, "%s.code_status must be SUCCESS, FAIL_RETRY or FAIL_NOT_RETRY", path);
    if (strcmp(status, "SUCCESS") == 0 && (!value || !*value))
        return chk_fail(c, "%s.code_value is required when code_status is SUCCESS", path);
    if (strcmp(status, "SUCCESS") == 0 && (!expire || !*expire))
        return chk_fail(c, "%s.expire_time is required when code_status is SUCCESS", path);
    if (chk_datetime(expire_path, expire, 1, c) < 0)
        return -1;
    if (!json_object_object_get_ex(md, "time_stamp", &ts) || ts == NULL)
        return chk_fail(c, "%s.time_stamp is required", path);
    if (json_object_is_type(ts, json_type_int)) {
        if (json_object_get_int64(ts) < 0)
            return chk_fail(c, "%s.time_stamp must be a non-negative number", path);
    } else if (json_object_is_type(ts, json_type_string)) {
        const char *t = json_object_get_string(ts);
        if (!*t || strlen(t) > 20 || !chk_digits(t, strlen(t)))
            return chk_fail(c, "%s.time_stamp must be a number of at most 20 digits", path);
    } else {
        return chk_fail(c, "%s.time_stamp must be a number", path);
    }
    return 0;
}

/* parent.front_text_list (CardFrontTextDTO[]). */
static int check_front_text(json_object *list, const char *parent, struct check *c)
{
    static const char *const keys[] = {"label", "value", NULL};
    if (!json_object_is_type(list, json_type_array))
        return chk_fail(c, "%s.front_text_list must be an array", parent);
    size_t n = json_object_array_length(list);
    if (n > 4)
        return chk_fail(c, "%s.front_text_list has more than 4 rows", parent);
    for (size_t i = 0; i < n; i++) {
        json_object *row = json_object_array_get_idx(list, i);
        char path[64];
        const char *label, *value;
        snprintf(path, sizeof(path), "%s.front_text_list[%zu]", parent, i);
        if (!json_object_is_type(row, json_type_object))
            return chk_fail(c, "%s must be an object", path);
        if (chk_only_keys(row, path, keys, c) < 0 ||
            chk_str(row, path, "label", 0, 4, &label, c) < 0 ||
            chk_str(row, path, "value", 0, 32, &value, c) < 0)
            return -1;
    }
    return 0;
}

/* A MerchantCard as a request carries it: the open's card_ext_info (p),
 * where open_date and valid_date are required (dates 1), or the update's
 * card_info, where they are optional (dates 0) since the card has them. */
static int check_ext(json_object *ext, const char *p, int dates, struct check *c)
{
    static const char *const keys[] = {"biz_card_no",    "external_card_no",
                                       "open_date",      "valid_date",
                                       "level",          "point",
                                       "balance",        "template_id",
                                       "mdcode_info",    "front_text_list",
                                       "front_image_id", NULL};
    const char *s, *open_date, *valid_date, *point, *balance;
    char open_path[48], valid_path[48];
    json_object *md, *list;
    if (chk_only_keys(ext, p, keys, c) < 0 || chk_str(ext, p, "biz_card_no", 0, 32, &s, c) < 0 ||
        chk_str(ext, p, "external_card_no", 0, 64, &s, c) < 0 ||
        chk_str(ext, p, "open_date", dates, 32, &open_date, c) < 0 ||
        chk_str(ext, p, "valid_date", dates, 32, &valid_date, c) < 0 ||
        chk_str(ext, p, "level", 0, 64, &s, c) < 0 ||
        chk_str(ext, p, "point", 0, 64, &point, c) < 0 ||
        chk_str(ext, p, "balance", 0, 64, &balance, c) < 0 ||
        chk_str(ext, p, "template_id", 0, 32, &s, c) < 0 ||
        chk_str(ext, p, "front_image_id", 0, 1024, &s, c) < 0)
        return -1;
    snprintf(open_path, sizeof(open_path), "%s.open_date", p);
    snprintf(valid_path, sizeof(valid_path), "%s.valid_date", p);
    if (chk_datetime(open_path, open_date, 1, c) < 0 ||
        chk_datetime(valid_path, valid_date, 1, c) < 0)
        return -1;
    if (point && validate_decimal(point, 1) < 0)
        return chk_fail(c, "%s.point must be a number with at most 2 decimals", p);
    if (balance && validate_decimal(balance, 1) < 0)
        return chk_fail(c, "%s.balance must be an amount in yuan with at most 2 decimals", p);
    if (chk_obj(ext, p, "mdcode_info", 0, &md, c) < 0 || (md && check_mdcode(md, p, c) < 0))
        return -1;
    if (json_object_object_get_ex(ext, "front_text_list", &list) && list &&
        check_front_text(list, p, c) < 0)
        return -1;
    return 0;
}

static int check_member(json_object *m, struct check *c)
{
    static const char *const keys[] = {"name", "gende", "birth", "cell", NULL};
    const char *p = "member_ext_info";
    const char *s, *gende, *birth;
    if (chk_only_keys(m, p, keys, c) < 0 || chk_str(m, p, "name", 0, 64, &s, c) < 0 ||
        chk_str(m, p, "gende", 0, 32, &gende, c) < 0 ||
        chk_str(m, p, "birth", 0, 32, &birth, c) < 0 || chk_str(m, p, "cell", 0, 32, &s, c) < 0)
        return -1;
    if (gende && strcmp(gende, "MALE") != 0 && strcmp(gende, "FEMALE") != 0)
        return chk_fail(c, "member_ext_info.gende must be MALE or FEMALE");
    return chk_datetime("member_ext_info.birth", birth, 0, c);
}

/* What an open call asks for, borrowed from its parsed biz_content. */
struct open_req {
    const char *out_serial_no, *template_id, *user_id, *channel, *channel_id;
    json_object *ext, *member;
};

static int check_open(json_object *biz, struct open_req *r, struct check *c)
{
    static const char *const keys[] = {
        "out_serial_no",   "card_template_id",  "card_user_info",       "card_ext_info",
        "member_ext_info", "open_card_channel", "open_card_channel_id", NULL};
    json_object *user;
    memset(r, 0, sizeof(*r));
    if (chk_only_keys(biz, "", keys, c) < 0 ||
        chk_str(biz, "", "out_serial_no", 1, 64, &r->out_serial_no, c) < 0 ||
        chk_str(biz, "", "card_template_id", 1, 32, &r->template_id, c) < 0 ||
        chk_obj(biz, "", "card_user_info", 1, &user, c) < 0 ||
        check_user(user, "card_user_info", &r->user_id, c) < 0 ||
        chk_obj(biz, "", "card_ext_info", 1, &r->ext, c) < 0 ||
        check_ext(r->ext, "card_ext_info", 1, c) < 0 ||
        chk_obj(biz, "", "member_ext_info", 0, &r->member, c) < 0 ||
        (r->member && check_member(r->member, c) < 0) ||
        chk_str(biz, "", "open_card_channel", 0, 64, &r->channel, c) < 0 ||
        chk_str(biz, "", "open_card_channel_id", 0, 64, &r->channel_id, c) < 0)
        return -1;
    return 0;
}

/* target_card_no with target_card_no_type BIZ_CARD: update and delete act
 * on Alipay's card number only (the dynamic codes are for looking up). */
static int check_biz_card_target(json_object *biz, const char **no, struct check *c)
{
    const char *type;
    if (chk_str(biz, "", "target_card_no", 1, 32, no, c) < 0 ||
        chk_str(biz, "", "target_card_no_type", 1, 64, &type, c) < 0)
        return -1;
    if (strcmp(type, "BIZ_CARD") != 0)
        return chk_fail(c, "target_card_no_type must be BIZ_CARD");
    return 0;
}

/* merchant_card_msg_info{changed_point}: the change Alipay tells the member
 * about ("+20 points"); negative for a redemption. */
static int check_msg_info(json_object *m, const char **changed_point, struct check *c)
{
    static const char *const keys[] = {"changed_point", NULL};
    const char *p = "merchant_card_msg_info";
    if (chk_only_keys(m, p, keys, c) < 0 ||
        chk_str(m, p, "changed_point", 0, 64, changed_point, c) < 0)
        return -1;
    if (*changed_point && validate_decimal(*changed_point, 1) < 0)
        return chk_fail(c, "%s.changed_point must be a number with at most 2 decimals", p);
    return 0;
}

/* What an update call asks for, borrowed from its parsed biz_content. */
struct update_req {
    const char *card_no, *occur_time;
    const char *changed_point; /* NULL: no points message */
    json_object *card_info;
};

static int check_update(json_object *biz, struct update_req *r, struct check *c)
{
    static const char *const keys[] = {"target_card_no",
                                       "target_card_no_type",
                                       "occur_time",
                                       "card_info",
                                       "merchant_card_msg_info",
                                       "ext_info",
                                       NULL};
    const char *ext;
    json_object *msg;
    memset(r, 0, sizeof(*r));
    if (chk_only_keys(biz, "", keys, c) < 0 || check_biz_card_target(biz, &r->card_no, c) < 0 ||
        chk_str(biz, "", "occur_time", 1, 32, &r->occur_time, c) < 0 ||
        chk_datetime("occur_time", r->occur_time, 1, c) < 0 ||
        chk_obj(biz, "", "card_info", 1, &r->card_info, c) < 0 ||
        check_ext(r->card_info, "card_info", 0, c) < 0 ||
        chk_obj(biz, "", "merchant_card_msg_info", 0, &msg, c) < 0 ||
        (msg && check_msg_info(msg, &r->changed_point, c) < 0) ||
        chk_str(biz, "", "ext_info", 0, 1024, &ext, c) < 0)
        return -1;
    return 0;
}

/* What a delete call asks for, borrowed from its parsed biz_content. */
struct delete_req {
    const char *out_serial_no, *card_no, *reason_code;
};

static int check_delete(json_object *biz, struct delete_req *r, struct check *c)
{
    static const char *const keys[] = {"out_serial_no", "target_card_no", "target_card_no_type",
                                       "reason_code",   "ext_info",       NULL};
    const char *ext, *why;
    memset(r, 0, sizeof(*r));
    if (chk_only_keys(biz, "", keys, c) < 0 ||
        chk_str(biz, "", "out_serial_no", 1, 32, &r->out_serial_no, c) < 0 ||
        check_biz_card_target(biz, &r->card_no, c) < 0 ||
        chk_str(biz, "", "reason_code", 1, 32, &r->reason_code, c) < 0 ||
        chk_str(biz, "", "ext_info", 0, 1024, &ext, c) < 0)
        return -1;
    why = r->reason_code;
    if (strcmp(why, "USER_UNBUND") != 0 && strcmp(why, "CANCEL") != 0 &&
        strcmp(why, "PRESENT") != 0)
        return chk_fail(c, "reason_code must be USER_UNBUND, CANCEL or PRESENT");
    return 0;
}

/* ------------------------------------------------------------------- cards */

/* card_info's fields after biz_card_no, in the seeds' order. */
static const char *const card_fields[] = {
    "external_card_no", "open_date",   "valid_date",  "level",           "point",
    "balance",          "template_id", "mdcode_info", "front_text_list", "front_image_id"};
#define NCARD_FIELDS (sizeof(card_fields) / sizeof(card_fields[0]))

static void copy_field(json_object *to, json_object *from, const char *key)
{
    json_object *v, *copy = NULL;
    if (!json_object_object_get_ex(from, key, &v) || v == NULL)
        return;
    if (json_object_deep_copy(v, &copy, NULL) == 0)
        json_object_object_add(to, key, copy);
}

/* card_info as Alipay answers it: card_ext_info's fields plus biz_card_no,
 * in the seeds' order; template_id is the card_template_id unless given. */
static json_object *make_card_info(const char *biz_card_no, const struct open_req *r)
{
    json_object *ci = json_object_new_object(), *v;
    if (!ci)
        return NULL;
    sim_add_str(ci, "biz_card_no", biz_card_no);
    for (size_t i = 0; i < NCARD_FIELDS; i++) {
        const char *k = card_fields[i];
        if (strcmp(k, "template_id") == 0 && !(json_object_object_get_ex(r->ext, k, &v) && v))
            sim_add_str(ci, k, r->template_id);
        else
            copy_field(ci, r->ext, k);
    }
    return ci;
}

/* card_info after an update: each field the update gives replaces the
 * card's (mdcode_info and front_text_list whole), rebuilt in the seeds'
 * order so a query answers alike whatever was updated. biz_card_no is the
 * card's own, whatever the update says. */
static json_object *merge_card_info(json_object *card, json_object *upd)
{
    json_object *ci = json_object_new_object(), *v;
    if (!ci)
        return NULL;
    copy_field(ci, card, "biz_card_no");
    for (size_t i = 0; i < NCARD_FIELDS; i++) {
        const char *k = card_fields[i];
        copy_field(ci, json_object_object_get_ex(upd, k, &v) && v ? upd : card, k);
    }
    return ci;
}

/* open_date and valid_date are fixed at the open (the open seed: "cannot
 * be modified"): an update may repeat them, not change them. */
static int check_fixed_dates(const struct sim_card *card, json_object *upd, struct check *c)
{
    static const char *const fixed[] = {"open_date", "valid_date"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        json_object *v, *had;
        if (!json_object_object_get_ex(upd, fixed[i], &v) || v == NULL)
            continue;
        const char *was = json_object_object_get_ex(card->card_info, fixed[i], &had) && had
                              ? json_object_get_string(had)
                              : "";
        if (strcmp(was, json_object_get_string(v)) != 0)
            return chk_fail(c, "card_info.%s cannot be changed by an update (the card's is '%s')",
                            fixed[i], was);
    }
    return 0;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static struct sim_card *card_new(struct sim *s, const struct open_req *r)
{
    struct sim_card *c = calloc(1, sizeof(*c));
    char biz[40], qr[40], bar[40], rnd[16];
    if (!c)
        return NULL;
    unsigned long seq = (unsigned long)(++s->card_seq % 100000000);
    snprintf(biz, sizeof(biz), "%s%08lu", s->instance, seq);
    sim_random_digits(s, rnd, 12);
    snprintf(qr, sizeof(qr), "QR%s%08lu", rnd, seq);
    sim_random_digits(s, rnd, 8);
    snprintf(bar, sizeof(bar), "28%s%08lu", rnd, seq);
    c->biz_card_no = strdup(biz);
    c->qr_code = strdup(qr);
    c->bar_code = strdup(bar);
    c->out_serial_no = strdup(r->out_serial_no);
    c->user_id = strdup(r->user_id);
    c->template_id = strdup(r->template_id);
    c->open_card_channel = dup_or_null(r->channel);
    c->open_card_channel_id = dup_or_null(r->channel_id);
    c->card_info = make_card_info(biz, r);
    if (!c->biz_card_no || !c->qr_code || !c->bar_code || !c->out_serial_no || !c->user_id ||
        !c->template_id || (r->channel && !c->open_card_channel) ||
        (r->channel_id && !c->open_card_channel_id) || !c->card_info) {
        card_free(c);
        return NULL;
    }
    return c;
}

static void card_store(struct sim *s, struct sim_card *c)
{
    if (s->cards_tail)
        s->cards_tail->next = c;
    else
        s->cards = c;
    s->cards_tail = c;
    s->ncards++;
    lh_table_insert(s->by_serial, c->out_serial_no, c);
    lh_table_insert(s->by_biz, c->biz_card_no, c);
    lh_table_insert(s->by_qr, c->qr_code, c);
    lh_table_insert(s->by_bar, c->bar_code, c);
}

/* Marks c deleted for r and gives the delete its biz_serial_no: the run's
 * 12 digits and 12 of sequence, so numbers do not repeat across restarts
 * and never look like a card number (20 digits). Returns 0 or -1. */
static int card_delete(struct sim *s, struct sim_card *c, const struct delete_req *r)
{
    char no[40];
    snprintf(no, sizeof(no), "%s%012" PRIu64, s->instance,
             (uint64_t)(++s->delete_seq % 1000000000000ULL));
    c->delete_reason = strdup(r->reason_code);
    c->delete_serial_no = strdup(r->out_serial_no);
    c->biz_serial_no = strdup(no);
    if (!c->delete_reason || !c->delete_serial_no || !c->biz_serial_no) {
        free(c->delete_reason);
        free(c->delete_serial_no);
        free(c->biz_serial_no);
        c->delete_reason = c->delete_serial_no = c->biz_serial_no = NULL;
        return -1;
    }
    c->deleted = 1;
    lh_table_insert(s->by_delete, c->delete_serial_no, c);
    return 0;
}

static struct sim_card *lookup(struct lh_table *t, const char *key)
{
    void *v = NULL;
    if (key && lh_table_lookup_ex(t, key, &v))
        return v;
    return NULL;
}

const struct sim_card *sim_card_by_biz(const struct sim *s, const char *biz_card_no)
{
    return lookup(s->by_biz, biz_card_no);
}

static json_object *string_or_null(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

json_object *sim_card_json(const struct sim *s, const struct sim_card *c)
{
    json_object *o = json_object_new_object();
    sim_add_str(o, "biz_card_no", c->biz_card_no);
    sim_add_str(o, "out_serial_no", c->out_serial_no);
    sim_add_str(o, "user_id", c->user_id);
    sim_add_str(o, "qr_code", c->qr_code);
    sim_add_str(o, "bar_code", c->bar_code);
    sim_add_str(o, "card_template_id", c->template_id);
    json_object_object_add(o, "card_info", json_object_get(c->card_info));
    sim_add_str(o, "status", c->deleted ? "deleted" : "active");
    json_object_object_add(o, "delete_reason", string_or_null(c->delete_reason));
    json_object_object_add(o, "biz_serial_no", string_or_null(c->biz_serial_no));
    json_object_object_add(o, "updates", json_object_new_int64(c->updates));
    json_object_object_add(o, "points_messages", json_object_new_int64(c->points_messages));
    json_object_object_add(o, "max_in_flight",
                           json_object_new_int64(sim_max_in_flight(s, c->biz_card_no)));
    return o;
}

/* ----------------------------------------------------------------- methods */

int sim_method_success(struct sim_node *out, const char *method, enum alipay_sign_type type,
                       json_object *o)
{
    char name[128];
    node_name_for(method, name, sizeof(name));
    return node_set(out, name, o, 1, type);
}

static int answer_open(struct sim_node *out, const char *method, enum alipay_sign_type type,
                       const struct sim_card *c)
{
    json_object *o = sim_code_object("10000", "Success", NULL, NULL);
    json_object_object_add(o, "card_info", json_object_get(c->card_info));
    if (c->open_card_channel)
        sim_add_str(o, "open_card_channel", c->open_card_channel);
    if (c->open_card_channel_id)
        sim_add_str(o, "open_card_channel_id", c->open_card_channel_id);
    return sim_method_success(out, method, type, o);
}

/* A token the simulator issued acts for its member only; tokens it never
 * issued are taken on trust, as they always were (clients' tests make
 * them up). */
static int token_fits(const struct sim *s, const struct sim_req *req, const char *user_id)
{
    const char *token = alipay_params_get(req->params, "auth_token");
    const char *owner = token ? member_token_user(s, token) : NULL;
    return !owner || strcmp(owner, user_id) == 0;
}

static int do_open(struct sim *s, const struct sim_req *req, struct sim_node *out)
{
    const char *method = req->method;
    enum alipay_sign_type type = req->type;
    struct open_req r;
    struct check c;
    if (check_open(req->biz, &r, &c) < 0)
        return sim_business_error(out, method, type, "INVALID_PARAMETER", c.msg);
    if (!token_fits(s, req, r.user_id))
        return sim_bad_token(out, req);
    if (!sim_template_known(s, r.template_id))
        return sim_business_error(out, method, type, "TEMPLATE_NOT_EXIT", "会员卡模板不存在");
    /* Alipay dedups on out_serial_no: a retry gets the card it opened. */
    struct sim_card *card = lookup(s->by_serial, r.out_serial_no);
    if (!card) {
        card = card_new(s, &r);
        if (!card)
            return -1;
        card_store(s, card);
    }
    return answer_open(out, method, type, card);
}

static int do_query(struct sim *s, const struct sim_req *req, struct sim_node *out)
{
    json_object *biz = req->biz;
    const char *method = req->method;
    enum alipay_sign_type type = req->type;
    static const char *const keys[] = {"target_card_no", "target_card_no_type", "card_user_info",
                                       "ext_info", NULL};
    struct check c;
    const char *no, *no_type, *ext, *user_id = NULL;
    json_object *user;
    if (chk_only_keys(biz, "", keys, &c) < 0 ||
        chk_str(biz, "", "target_card_no", 1, 32, &no, &c) < 0 ||
        chk_str(biz, "", "target_card_no_type", 1, 64, &no_type, &c) < 0 ||
        chk_obj(biz, "", "card_user_info", 0, &user, &c) < 0 ||
        (user && check_user(user, "card_user_info", &user_id, &c) < 0) ||
        chk_str(biz, "", "ext_info", 0, 1024, &ext, &c) < 0)
        return sim_business_error(out, method, type, "INVALID_PARAMETER", c.msg);

    struct lh_table *index;
    if (strcmp(no_type, "BIZ_CARD") == 0)
        index = s->by_biz;
    else if (strcmp(no_type, "D_QR_CODE") == 0)
        index = s->by_qr;
    else if (strcmp(no_type, "D_BAR_CODE") == 0)
        index = s->by_bar;
    else
        return sim_business_error(out, method, type, "INVALID_PARAMETER",
                                  "target_card_no_type must be BIZ_CARD, D_QR_CODE or D_BAR_CODE");
    const struct sim_card *card = lookup(index, no);
    /* card_user_info, when given, is one more condition of the query. A
     * deleted card is gone for Alipay, by its number and by its codes. */
    if (!card || card->deleted || (user_id && strcmp(user_id, card->user_id) != 0))
        return sim_business_error(out, method, type, "CARD_NOT_EXIT", "会员卡不存在");

    char url[128];
    snprintf(url, sizeof(url), "alipays://platformapi/startapp?appId=20000021&b=m&p=%s",
             card->biz_card_no);
    json_object *o = sim_code_object("10000", "Success", NULL, NULL);
    json_object_object_add(o, "card_info", json_object_get(card->card_info));
    sim_add_str(o, "schema_url", url);
    return sim_method_success(out, method, type, o);
}

static int do_update(struct sim *s, const struct sim_req *req, struct sim_node *out)
{
    const char *method = req->method;
    enum alipay_sign_type type = req->type;
    struct update_req r;
    struct check c;
    if (check_update(req->biz, &r, &c) < 0)
        return sim_business_error(out, method, type, "INVALID_PARAMETER", c.msg);
    struct sim_card *card = lookup(s->by_biz, r.card_no);
    if (!card || card->deleted)
        return sim_business_error(out, method, type, "CARD_NOT_EXIT", "会员卡不存在");
    if (check_fixed_dates(card, r.card_info, &c) < 0)
        return sim_business_error(out, method, type, "INVALID_PARAMETER", c.msg);
    json_object *merged = merge_card_info(card->card_info, r.card_info);
    if (!merged)
        return -1;
    json_object_put(card->card_info);
    card->card_info = merged;
    card->updates++;
    if (r.changed_point)
        card->points_messages++; /* Alipay would now tell the member */
    json_object *o = sim_code_object("10000", "Success", NULL, NULL);
    sim_add_str(o, "result_code", "SUCCESS");
    return sim_method_success(out, method, type, o);
}

static int answer_delete(struct sim_node *out, const char *method, enum alipay_sign_type type,
                         const struct sim_card *c)
{
    json_object *o = sim_code_object("10000", "Success", NULL, NULL);
    sim_add_str(o, "biz_serial_no", c->biz_serial_no);
    return sim_method_success(out, method, type, o);
}

static int do_delete(struct sim *s, const struct sim_req *req, struct sim_node *out)
{
    const char *method = req->method;
    enum alipay_sign_type type = req->type;
    struct delete_req r;
    struct check c;
    if (check_delete(req->biz, &r, &c) < 0)
        return sim_business_error(out, method, type, "INVALID_PARAMETER", c.msg);
    /* Alipay dedups on out_serial_no: the retry of a delete whose answer
     * was lost gets that answer again, though the card is gone by now. */
    struct sim_card *card = lookup(s->by_delete, r.out_serial_no);
    if (card && strcmp(card->biz_card_no, r.card_no) != 0)
        return sim_business_error(out, method, type, "INVALID_PARAMETER",
                                  "out_serial_no was already used to delete another card");
    if (card)
        return answer_delete(out, method, type, card);
    card = lookup(s->by_biz, r.card_no);
    if (!card || card->deleted)
        return sim_business_error(out, method, type, "CARD_NOT_EXIT", "会员卡不存在");
    if (card_delete(s, card, &r) < 0)
        return -1;
    return answer_delete(out, method, type, card);
}

/* Every method the gateway knows, and whether it takes a biz_content
 * (oauth.token's parameters are parameters of their own). */
static const struct method_def {
    const char *name;
    int biz;
    int (*run)(struct sim *s, const struct sim_req *r, struct sim_node *out);
} methods[] = {
    {METHOD_OPEN, 1, do_open},
    {METHOD_QUERY, 1, do_query},
    {METHOD_UPDATE, 1, do_update},
    {METHOD_DELETE, 1, do_delete},
    {METHOD_TEMPLATE_CREATE, 1, program_template_create},
    {METHOD_TEMPLATE_QUERY, 1, program_template_query},
    {METHOD_TEMPLATE_MODIFY, 1, program_template_modify},
    {METHOD_FORM_SET, 1, program_form_set},
    {METHOD_ACTIVATEURL_APPLY, 1, program_activateurl_apply},
    {METHOD_OAUTH_TOKEN, 0, member_oauth_token},
    {METHOD_ACTIVATEFORM_QUERY, 1, member_activateform_query},
    {METHOD_CERT_DOWNLOAD, 1, cert_download},
};

static const struct method_def *method_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i].name, name) == 0)
            return &methods[i];
    return NULL;
}

static int method_takes_biz(const char *name)
{
    const struct method_def *m = method_find(name);
    return m && m->biz;
}

/* Runs method m with biz_text, the call's biz_content in plain (NULL when
 * it has none). */
static int run_method(struct sim *s, struct sim_req *req, const struct method_def *m,
                      const char *biz_text, struct sim_node *out)
{
    if (!m->biz)
        return m->run(s, req, out);
    if (!biz_text)
        return sim_business_error(out, req->method, req->type, "INVALID_PARAMETER",
                                  "biz_content is required");
    req->biz = jsonx_parse(biz_text, strlen(biz_text));
    if (!req->biz || !json_object_is_type(req->biz, json_type_object)) {
        json_object_put(req->biz);
        req->biz = NULL;
        return sim_business_error(out, req->method, req->type, "INVALID_PARAMETER",
                                  "biz_content must be a JSON object");
    }
    int r = m->run(s, req, out);
    json_object_put(req->biz);
    req->biz = NULL;
    return r;
}

int sim_handle(struct sim *s, const struct alipay_params *p, struct sim_node *out)
{
    struct sim_req req = {.params = p, .type = s->sign_type_default};
    int r = check_public(s, p, &req.type, out);
    if (r != 0)
        return r < 0 ? -1 : 0;

    req.method = alipay_params_get(p, "method");
    const struct method_def *m = method_find(req.method);
    char *biz_text = NULL;
    /* Decrypted only now: the signature covers the ciphertext. */
    if (m->biz && encrypt_biz(s, p, &biz_text) < 0)
        return encrypt_refusal(out, req.method, req.type);
    r = run_method(s, &req, m, biz_text, out);
    free(biz_text);
    if (r == 0 && out->sign)
        out->encrypt = encrypt_on(s, p);
    return r;
}

int sim_fault_node(struct sim *s, const struct alipay_params *p, enum sim_fault_mode mode,
                   struct sim_node *out)
{
    enum alipay_sign_type type = s->sign_type_default;
    const char *st = alipay_params_get(p, "sign_type");
    const char *method = alipay_params_get(p, "method");
    if (st && alipay_sign_type_parse(st, &type) < 0)
        type = s->sign_type_default;
    int r;
    switch (mode) {
    case SIM_FAULT_CODE_20000:
        r = sim_method_code(out, method, type, "20000", "Service Currently Unavailable",
                            "isp.unknow-error", "系统繁忙");
        break;
    case SIM_FAULT_CODE_20001:
        r = sim_method_code(out, method, type, "20001", "Insufficient Token Permissions",
                            "aop.invalid-auth-token", "无效的访问令牌");
        break;
    case SIM_FAULT_SYSTEM_ERROR:
        r = sim_method_code(out, method, type, "40004", "Business Failed", "SYSTEM_ERROR",
                            "系统异常");
        break;
    default:
        return sim_gateway_error(out, "40002", "isv.invalid-app-id", "无效的AppID参数", type);
    }
    /* A signed node answers an encrypted call encrypted, faults' too. */
    if (r == 0)
        out->encrypt = encrypt_on(s, p);
    return r;
}

/* The answer as it would go out, plus "sign": a real signature with the
 * right key over other text than the node as sent (its ciphertext, with
 * quotes, when encrypted; or, unquoted, over an encrypted node's
 * ciphertext without its quotes, the mistake the SDKs make). unsigned_body
 * is that answer without sign. */
static char *render_bad_signature(struct sim *s, const struct sim_node *n,
                                  const char *unsigned_body, int unquoted)
{
    size_t blen = strlen(unsigned_body), nlen;
    const char *node;
    char err[128], *sig = NULL, *body = NULL;
    if (alipay_response_find(unsigned_body, blen, n->name, &node, &nlen) < 0)
        return NULL;
    if (!unquoted && node > unsigned_body && node[-1] == '"') { /* its quotes are signed too */
        node--;
        nlen += 2;
    }
    char *other = malloc(nlen + 2);
    if (other) {
        memcpy(other, node, nlen);
        memcpy(other + nlen, " ", 2); /* other text: one more byte */
        other[nlen + !unquoted] = '\0';
        sig = alipay_sign_data(s->alipay_private, n->type, other, strlen(other), err, sizeof(err));
    }
    free(other);
    size_t cap = blen + (sig ? strlen(sig) : 0) + 16;
    body = sig ? malloc(cap) : NULL;
    if (body) /* the closing brace of the object gives way to sign */
        snprintf(body, cap, "%.*s,\"sign\":\"%s\"}", (int)(blen - 1), unsigned_body, sig);
    free(sig);
    return body;
}

char *sim_render(struct sim *s, const struct sim_node *n, enum sim_fault_mode mode)
{
    if (!n->sign)
        return alipay_response_build(n->name, n->text, NULL, n->type, 0);
    /* Certificate mode names the certificate; an encrypted call gets the
     * node encrypted. Both whatever the fault does to the signature. */
    const char *sn = cert_alipay_sn(s);
    const struct alipay_aes *aes = n->encrypt ? s->aes : NULL;
    if (mode == SIM_FAULT_AES_OTHER_KEY && aes) {
        char err[128];
        struct alipay_aes *other = alipay_aes_new(SIM_OTHER_AES_KEY, err, sizeof(err));
        char *body = other ? alipay_response_build_ex(n->name, n->text, s->alipay_private, n->type,
                                                      0, sn, other)
                           : NULL;
        alipay_aes_free(other);
        return body;
    }
    if (mode == SIM_FAULT_UNSIGNED_SUCCESS || mode == SIM_FAULT_BAD_SIGNATURE ||
        (mode == SIM_FAULT_AES_UNQUOTED && aes)) {
        char *body = alipay_response_build_ex(n->name, n->text, NULL, n->type, 0, sn, aes);
        if (!body || mode == SIM_FAULT_UNSIGNED_SUCCESS)
            return body;
        char *bad = render_bad_signature(s, n, body, mode == SIM_FAULT_AES_UNQUOTED);
        free(body);
        return bad;
    }
    return alipay_response_build_ex(n->name, n->text, s->alipay_private, n->type,
                                    mode == SIM_FAULT_SIGN_FIRST, sn, aes);
}
