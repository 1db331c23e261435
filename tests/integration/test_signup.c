/* A membership program from scratch, against the real binaries and a real
 * PostgreSQL: templates (create once, query, modify), the sign-up form, the
 * activation settings and their one sign-up address, and members signing
 * themselves up through the callback — once per request_id whatever the
 * reloads and concurrent hits, the right page for every failure, and
 * nothing of the form, the auth code or the token in the database or the
 * logs. alipay-sim plays Alipay and, through POST /_sim/members, the
 * member filling in the form. */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support.h"

#define PUBLIC_URL "https://cards.example.test"
#define APP_ID "2014072300007148" /* ts_cardgate_start's */
#define SUCCESS_URL "https://shop.example.test/welcome"

static const char *const json_headers[] = {TS_AUTH, TS_JSON, NULL};
static const char *const auth_headers[] = {TS_AUTH, NULL};

static const char *const TEMPLATE =
    "{\"card_type\":\"OUT_MEMBER_CARD\",\"biz_no_prefix\":\"prex\",\"biz_no_suffix_len\":\"10\","
    "\"write_off_type\":\"qrcode\",\"template_style_info\":{\"card_show_name\":\"会员卡\","
    "\"logo_id\":\"1T8Pp00AT7eo9NoAJkMR3AAAACMAAQEC\","
    "\"background_id\":\"1T8Pp00AT7eo9NoAJkMR3AAAACMAAQEC\",\"bg_color\":\"rgb(55,112,179)\"},"
    "\"field_rule_list\":[{\"field_name\":\"Balance\",\"rule_name\":\"ASSIGN_FROM_REQUEST\","
    "\"rule_value\":\"Balance\"}]}";

/* ---------------------------------------------------------------- helpers */

static void api(const struct ts_stack *st, const char *method, const char *path, const char *body,
                struct ts_http *r)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", st->cg.url, path);
    ts_http_call(method, url, body ? json_headers : auth_headers, body, r);
}

static void sim_post(const struct ts_stack *st, const char *path, const char *body,
                     struct ts_http *r)
{
    char url[256];
    const char *const h[] = {TS_JSON, NULL};
    snprintf(url, sizeof(url), "%s%s", st->sim.control, path);
    ck_assert_int_eq(ts_http_call("POST", url, h, body, r), 0);
}

static long sim_long(const struct ts_stack *st, const char *path, const char *key)
{
    char url[256];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s%s", st->sim.control, path);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    json_object *o = ts_json_of(&r), *v = o;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", key);
    char *save = NULL;
    for (char *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        if (!json_object_object_get_ex(v, k, &v))
            v = NULL;
    long n = v ? (long)json_object_get_int64(v) : 0;
    json_object_put(o);
    ts_http_free(&r);
    return n;
}

#define OAUTH "alipay.system.oauth.token"
#define FORM "alipay.marketing.card.activateform.query"
#define OPEN "alipay.marketing.card.open"
#define APPLY "alipay.marketing.card.activateurl.apply"

static void fault(const struct ts_stack *st, const char *mode, const char *method, int delay_ms)
{
    char json[256];
    snprintf(json, sizeof(json), "{\"mode\":\"%s\",\"method\":\"%s\",\"count\":1,\"delay_ms\":%d}",
             mode, method, delay_ms);
    ck_assert_int_eq(ts_sim_fault(&st->sim, json), 0);
}

static void stack_up(struct ts_stack *st, const char *public_url)
{
    char err[512], env0[256];
    snprintf(env0, sizeof(env0), "CARDGATE_PUBLIC_URL=%s", public_url ? public_url : "");
    const char *env[] = {public_url ? env0 : NULL, NULL};
    ck_assert_msg(ts_stack_up(st, NULL, env, err, sizeof(err)) == 0, "%s", err);
}

/* Creates a template with request_id and returns its id (malloc'd). */
static char *create_template(const struct ts_stack *st, const char *request_id)
{
    char body[2048];
    struct ts_http r;
    snprintf(body, sizeof(body), "{\"request_id\":\"%s\",\"template\":%s}", request_id, TEMPLATE);
    api(st, "POST", "/v1/templates", body, &r);
    ck_assert_msg(r.status == 201, "create: %ld %s", r.status, r.body);
    char *id = ts_json_at(&r, "template_id");
    ts_http_free(&r);
    ck_assert_ptr_nonnull(id);
    return id;
}

/* GET the callback as the member's browser (no API key). */
static void follow(const struct ts_stack *st, const char *path, struct ts_http *r)
{
    char url[2048];
    snprintf(url, sizeof(url), "%s%s", st->cg.url, path);
    ts_http_call("GET", url, NULL, NULL, r);
}

static void assert_page(const struct ts_http *r, long status, const char *code)
{
    ck_assert_msg(r->status == status, "status %ld, want %ld: %s", r->status, status, r->body);
    char *ct = ts_http_header(r, "Content-Type");
    ck_assert_msg(ct && strncmp(ct, "text/html", 9) == 0, "Content-Type %s", ct ? ct : "-");
    free(ct);
    ck_assert_msg(strstr(r->body, "<html") != NULL, "not a page: %s", r->body);
    if (code)
        ck_assert_msg(strstr(r->body, code) != NULL, "page without %s: %s", code, r->body);
    /* Chinese and English. */
    ck_assert_msg(strstr(r->body, "lang=\"en\"") != NULL, "no English: %s", r->body);
}

static long db_long(const struct ts_stack *st, const char *sql)
{
    return ts_pg_long(st->db, sql);
}

/* ------------------------------------------------------------- templates */

/* Create once (a retry is the stored answer), query, modify; the rules of
 * template.create are checked before anything is sent. */
START_TEST(test_templates)
{
    struct ts_stack st;
    struct ts_http r, again;
    char body[2048], path[128];
    stack_up(&st, PUBLIC_URL);
    snprintf(body, sizeof(body), "{\"request_id\":\"tpl-a\",\"template\":%s}", TEMPLATE);
    api(&st, "POST", "/v1/templates", body, &r);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    char *id = ts_json_at(&r, "template_id");
    char *loc = ts_http_header(&r, "Location");
    snprintf(path, sizeof(path), "/v1/templates/%s", id);
    ck_assert_str_eq(loc, path);
    free(loc);
    api(&st, "POST", "/v1/templates", body, &again);
    ck_assert_int_eq(again.status, 201);
    ck_assert_str_eq(again.body, r.body);
    char *replayed = ts_http_header(&again, "Idempotent-Replayed");
    ck_assert_str_eq(replayed, "true");
    free(replayed);
    ts_http_free(&again);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, "alipay.marketing.card.template.create"), 1);
    ck_assert_int_eq(db_long(&st, "SELECT count(*) FROM card_templates WHERE request_id = "
                                  "'tpl-a' AND caller = 'pos'"),
                     1);
    /* Another template under the same request_id: refused, not sent. */
    api(&st, "POST", "/v1/templates",
        "{\"request_id\":\"tpl-a\",\"template\":{\"card_type\":\"OUT_MEMBER_CARD\","
        "\"biz_no_suffix_len\":\"12\",\"write_off_type\":\"qrcode\",\"template_style_info\":{"
        "\"card_show_name\":\"x\",\"logo_id\":\"l\",\"background_id\":\"b\",\"bg_color\":\"c\"},"
        "\"field_rule_list\":[]}}",
        &r);
    ts_assert_error(&r, 422, "OUT_SERIAL_NO_REUSED", "request_id");
    ts_http_free(&r);
    /* A card's serial number cannot take the templates' keys. */
    api(&st, "POST", "/v1/cards",
        "{\"out_serial_no\":\"template:tpl-a\",\"card_template_id\":\"T\",\"user_id\":"
        "\"2088302463082075\",\"card\":{\"open_date\":\"2024-02-20 21:20:46\","
        "\"valid_date\":\"2030-02-20 21:20:46\"}}",
        &r);
    ts_assert_error(&r, 400, "INVALID_PARAMETER", "out_serial_no");
    ts_http_free(&r);

    api(&st, "GET", path, NULL, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_assert_field(&r, "template_id", id);
    ts_assert_field(&r, "template.card_type", "OUT_MEMBER_CARD");
    ts_assert_field(&r, "template.template_style_info.card_show_name", "会员卡");
    ts_http_free(&r);

    api(&st, "PATCH", path,
        "{\"request_id\":\"tpl-a-m1\",\"template\":{\"template_style_info\":{\"card_show_name\":"
        "\"金卡\",\"logo_id\":\"l\",\"background_id\":\"b\",\"bg_color\":\"rgb(1,2,3)\"}}}",
        &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_assert_field(&r, "template_id", id);
    ts_http_free(&r);
    api(&st, "GET", path, NULL, &r);
    ts_assert_field(&r, "template.template_style_info.card_show_name", "金卡");
    ts_http_free(&r);

    api(&st, "GET", "/v1/templates/NOSUCHTEMPLATE", NULL, &r);
    ts_assert_error(&r, 404, "TEMPLATE_NOT_FOUND", NULL);
    ts_http_free(&r);

    /* The rules, with their paths. */
    static const char *const bad[][2] = {
        {"{\"template\":{}}", "request_id"},
        {"{\"request_id\":\"x\"}", "template"},
        {"{\"request_id\":\"x\",\"template\":{\"biz_no_suffix_len\":\"10\"}}",
         "template.card_type"},
        {"{\"request_id\":\"x\",\"template\":{\"card_type\":\"OUT_MEMBER_CARD\","
         "\"biz_no_suffix_len\":\"7\",\"write_off_type\":\"qrcode\",\"template_style_info\":{"
         "\"card_show_name\":\"x\",\"logo_id\":\"l\",\"background_id\":\"b\",\"bg_color\":\"c\"},"
         "\"field_rule_list\":[]}}",
         "template.biz_no_suffix_len"},
        {"{\"request_id\":\"x\",\"template\":{\"card_type\":\"OUT_MEMBER_CARD\","
         "\"biz_no_suffix_len\":\"10\",\"write_off_type\":\"qrcode\",\"template_style_info\":{"
         "\"card_show_name\":\"x\",\"background_id\":\"b\",\"bg_color\":\"c\"},"
         "\"field_rule_list\":[]}}",
         "template.template_style_info.logo_id"},
        {"{\"request_id\":\"x\",\"template\":{\"card_type\":\"OUT_MEMBER_CARD\","
         "\"biz_no_suffix_len\":\"10\",\"write_off_type\":\"qrcode\",\"template_style_info\":{"
         "\"card_show_name\":\"x\",\"logo_id\":\"l\",\"background_id\":\"b\",\"bg_color\":\"c\"},"
         "\"field_rule_list\":{}}}",
         "template.field_rule_list"},
        {"{\"request_id\":\"x\",\"template\":{},\"colour\":1}", "colour"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        api(&st, "POST", "/v1/templates", bad[i][0], &r);
        ts_assert_error(&r, 400, "INVALID_PARAMETER", bad[i][1]);
        ts_http_free(&r);
    }
    snprintf(path, sizeof(path), "/v1/templates/%s/form", id);
    api(&st, "PUT", path, "{\"required\":[\"OPEN_FORM_FIELD_SHOE_SIZE\"]}", &r);
    ts_assert_error(&r, 400, "INVALID_PARAMETER", "required[0]");
    ts_http_free(&r);
    snprintf(path, sizeof(path), "/v1/templates/%s/activation", id);
    api(&st, "PUT", path, "{\"level\":\"VIP1\"}", &r);
    ts_assert_error(&r, 400, "INVALID_PARAMETER", "valid_date");
    ts_http_free(&r);
    api(&st, "PUT", path, "{\"valid_date\":\"2030-12-31 23:59:59\",\"point\":\"1.234\"}", &r);
    ts_assert_error(&r, 400, "INVALID_PARAMETER", "point");
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, "alipay.marketing.card.template.create"), 1);
    free(id);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* ------------------------------------------------------------ the sign-up */

/* template → form → activation → a member signs up → the card is in cards
 * with the template's settings and a number from the sequence → 302 to
 * success_url; a reload answers from the ledger, calling nothing. */
START_TEST(test_whole_flow)
{
    struct ts_stack st;
    struct ts_http r;
    char path[128];
    stack_up(&st, PUBLIC_URL);
    char *id = create_template(&st, "flow-1");
    ts_signup_setup(&st.cg, id, SUCCESS_URL);

    /* The sign-up address is asked for once per template and callback. */
    snprintf(path, sizeof(path), "/v1/templates/%s/activation", id);
    api(&st, "PUT", path,
        "{\"valid_date\":\"2031-12-31 23:59:59\",\"level\":\"VIP1\",\"point\":"
        "\"0\",\"balance\":\"0.00\",\"external_card_no_prefix\":\"M\","
        "\"success_url\":\"" SUCCESS_URL "\"}",
        &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    char *url = ts_json_at(&r, "apply_card_url");
    ck_assert_ptr_nonnull(url);
    ck_assert_msg(strstr(url, "template_id=") != NULL, "%s", url);
    free(url);
    ts_http_free(&r);
    char sim_path[128];
    snprintf(sim_path, sizeof(sim_path), "/templates/%s", id);
    ck_assert_int_eq(sim_long(&st, sim_path, "activateurl_calls"), 1);

    char *cb = ts_member_signs_up(&st.sim, id, PUBLIC_URL, NULL, NULL);
    follow(&st, cb, &r);
    ck_assert_msg(r.status == 302, "%ld %s", r.status, r.body);
    char *loc = ts_http_header(&r, "Location");
    ck_assert_msg(loc && strncmp(loc, SUCCESS_URL "?biz_card_no=", strlen(SUCCESS_URL) + 13) == 0,
                  "Location %s", loc ? loc : "-");
    char *biz = strdup(loc + strlen(SUCCESS_URL) + 13);
    free(loc);
    ts_http_free(&r);

    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM cards WHERE biz_card_no = '%s' AND card_template_id = '%s' AND "
             "level = 'VIP1' AND point = 0 AND balance = 0 AND external_card_no ~ '^M[0-9]+$' "
             "AND status = 'active'",
             biz, id);
    ck_assert_int_eq(db_long(&st, sql), 1);
    ck_assert_int_eq(db_long(&st, "SELECT count(*) FROM card_requests WHERE operation = "
                                  "'activate' AND state = 'succeeded'"),
                     1);

    /* A reload: the same answer, nothing called. */
    long opens = ts_sim_method_calls(&st.sim, OPEN), tokens = ts_sim_method_calls(&st.sim, OAUTH);
    follow(&st, cb, &r);
    ck_assert_int_eq(r.status, 302);
    loc = ts_http_header(&r, "Location");
    ck_assert_ptr_nonnull(strstr(loc, biz));
    free(loc);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, OPEN), opens);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, OAUTH), tokens);

    /* A second member gets the next number; without success_url, a page.
     * The first member's reload still goes where its first answer went. */
    ts_signup_setup(&st.cg, id, NULL);
    follow(&st, cb, &r);
    ck_assert_int_eq(r.status, 302);
    loc = ts_http_header(&r, "Location");
    ck_assert_msg(loc && strstr(loc, biz), "Location %s", loc ? loc : "-");
    free(loc);
    ts_http_free(&r);
    char *cb2 = ts_member_signs_up(&st.sim, id, PUBLIC_URL, NULL, NULL);
    follow(&st, cb2, &r);
    assert_page(&r, 200, NULL);
    ts_http_free(&r);
    ck_assert_int_eq(db_long(&st, "SELECT count(DISTINCT external_card_no) FROM cards"), 2);
    ck_assert_int_eq(sim_long(&st, sim_path, "activateurl_calls"), 1);
    free(cb);
    free(cb2);
    free(biz);
    free(id);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* 20 hits of one callback at once (double taps, a flaky network): one
 * token exchange, one card.open, one card. */
START_TEST(test_concurrent_hits_one_card)
{
    struct ts_stack st;
    stack_up(&st, PUBLIC_URL);
    char *id = create_template(&st, "conc-1");
    ts_signup_setup(&st.cg, id, SUCCESS_URL);
    char *cb = ts_member_signs_up(&st.sim, id, PUBLIC_URL, NULL, NULL);
    fault(&st, "delay", OPEN, 800);

    enum { N = 20 };
    struct ts_http out[N];
    const char *urls[N];
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", st.cg.url, cb);
    for (int i = 0; i < N; i++)
        urls[i] = url;
    ts_http_parallel(N, "GET", urls, NULL, NULL, out);
    int opened = 0;
    for (int i = 0; i < N; i++) {
        if (out[i].status == 302)
            opened++;
        else
            assert_page(&out[i], 409, "REQUEST_IN_PROGRESS");
        ts_http_free(&out[i]);
    }
    ck_assert_int_ge(opened, 1);
    struct ts_http r;
    follow(&st, cb, &r);
    ck_assert_int_eq(r.status, 302);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, OAUTH), 1);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, OPEN), 1);
    ck_assert_int_eq(db_long(&st, "SELECT count(*) FROM cards"), 1);
    free(cb);
    free(id);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

struct step_fault {
    const char *mode, *method;
    int delay_ms;
    long status;
    const char *code;
};

/* What goes wrong on the member's side or Alipay's: the right page, no
 * card, no half-done state; the next member is not affected. */
START_TEST(test_failures)
{
    static const struct step_fault faults[] = {
        {"code_20000", OAUTH, 0, 502, "ALIPAY_UNAVAILABLE"},
        {"code_20001", FORM, 0, 422, "ALIPAY_AUTH_FAILED"},
        {"http_500", FORM, 0, 502, "ALIPAY_UNAVAILABLE"},
        {"delay", OPEN, 3000, 504, "ALIPAY_TIMEOUT"},
        {"bad_signature", OPEN, 0, 502, "ALIPAY_BAD_SIGNATURE"},
    };
    struct ts_stack st;
    struct ts_http r;
    stack_up(&st, PUBLIC_URL); /* gateway timeout 2 s */
    char *id = create_template(&st, "fail-1");
    ts_signup_setup(&st.cg, id, SUCCESS_URL);

    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        char *cb = ts_member_signs_up(&st.sim, id, PUBLIC_URL, NULL, NULL);
        fault(&st, faults[i].mode, faults[i].method, faults[i].delay_ms);
        follow(&st, cb, &r);
        assert_page(&r, faults[i].status, faults[i].code);
        ts_http_free(&r);
        if (faults[i].status == 504) {
            /* Alipay may have opened the card; the spent auth_code cannot
             * ask again: the member is sent to the wallet. */
            follow(&st, cb, &r);
            assert_page(&r, 502, "SIGNUP_OUTCOME_UNKNOWN");
            ts_http_free(&r);
        }
        free(cb);
    }
    /* The timed-out open may have been carried out by the simulator after
     * cardgate gave up: that member's card is the only one there can be. */
    long cards = db_long(&st, "SELECT count(*) FROM cards");
    ck_assert_int_eq(cards, 0);
    ck_assert_int_eq(db_long(&st, "SELECT count(*) FROM card_requests WHERE operation = "
                                  "'activate' AND state <> 'failed'"),
                     0);

    /* A used auth_code (the member's back button after a failure) and an
     * expired one: the member scans again. */
    char *code = NULL;
    char *cb = ts_member_signs_up(&st.sim, id, PUBLIC_URL, NULL, &code);
    fault(&st, "code_20000", FORM, 0);
    follow(&st, cb, &r); /* the code is spent by this attempt */
    assert_page(&r, 502, "ALIPAY_UNAVAILABLE");
    ts_http_free(&r);
    follow(&st, cb, &r);
    assert_page(&r, 422, "AUTH_CODE_INVALID");
    ts_http_free(&r);
    free(cb);
    free(code);
    cb = ts_member_signs_up(&st.sim, id, PUBLIC_URL, "\"auth_code_ttl_ms\":1", NULL);
    usleep(50000);
    follow(&st, cb, &r);
    assert_page(&r, 422, "AUTH_CODE_INVALID");
    ts_http_free(&r);
    free(cb);

    /* A member who declined the form never comes back with a code: a
     * callback without one says so (400, as any link missing a part), and
     * asks Alipay nothing. */
    long tokens = ts_sim_method_calls(&st.sim, OAUTH);
    char path[256];
    snprintf(path, sizeof(path),
             "/callbacks/card-activation?app_id=" APP_ID "&template_id=%s&request_id=r1", id);
    follow(&st, path, &r);
    assert_page(&r, 400, "FORM_NOT_COMPLETED");
    ts_http_free(&r);
    /* Links that are not ours or not whole: 400, nothing asked. */
    static const char *const bad[] = {
        "/callbacks/card-activation",
        "/callbacks/card-activation?app_id=9999&template_id=T&auth_code=a&request_id=r",
        "/callbacks/card-activation?app_id=" APP_ID "&auth_code=a&request_id=r",
        "/callbacks/card-activation?app_id=" APP_ID "&template_id=NOSETTINGS&auth_code=a&"
        "request_id=r",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        follow(&st, bad[i], &r);
        ck_assert_msg(r.status == 400, "%s: %ld", bad[i], r.status);
        assert_page(&r, 400, NULL);
        ts_http_free(&r);
    }
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, OAUTH), tokens);

    /* And the next member signs up as if nothing happened, even through a
     * redirect that carries parameters Alipay does not document. */
    ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);
    cb = ts_member_signs_up(&st.sim, id, PUBLIC_URL, NULL, NULL);
    char extra[1100];
    snprintf(extra, sizeof(extra), "%s&spm=a.b.c&out_string=pos-7", cb);
    follow(&st, extra, &r);
    ck_assert_msg(r.status == 302, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    free(cb);
    free(id);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* Alipay refusing the sign-up address (a template it does not know yet, a
 * callback domain not yet allowed) does not block the template for good:
 * once Alipay has it, the same PUT gets the address. */
START_TEST(test_activation_refusal_not_final)
{
    struct ts_stack st;
    struct ts_http r;
    stack_up(&st, PUBLIC_URL);
    const char *id = "20991231000000000000000000000077";
    char path[128];
    snprintf(path, sizeof(path), "/v1/templates/%s/activation", id);
    api(&st, "PUT", path, "{\"valid_date\":\"2030-12-31 23:59:59\"}", &r);
    ts_assert_error(&r, 404, "TEMPLATE_NOT_FOUND", NULL);
    ts_http_free(&r);
    /* The template comes to exist at Alipay (made in its console). */
    struct ts_http made;
    sim_post(&st, "/templates", "{\"template_id\":\"20991231000000000000000000000077\"}", &made);
    ck_assert_int_eq(made.status, 201);
    ts_http_free(&made);
    api(&st, "PUT", path, "{\"valid_date\":\"2030-12-31 23:59:59\"}", &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    char *url = ts_json_at(&r, "apply_card_url");
    /* Decoded: Alipay sends it URL-encoded. */
    ck_assert_msg(url && strncmp(url, "https://", 8) == 0, "apply_card_url %s", url ? url : "-");
    free(url);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, APPLY), 2);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* Without CARDGATE_PUBLIC_URL the sign-up is off; the rest works. */
START_TEST(test_not_configured)
{
    struct ts_stack st;
    struct ts_http r;
    stack_up(&st, NULL);
    char *id = create_template(&st, "nc-1");
    char path[128];
    snprintf(path, sizeof(path), "/v1/templates/%s/activation", id);
    api(&st, "PUT", path, "{\"valid_date\":\"2030-12-31 23:59:59\"}", &r);
    ts_assert_error(&r, 503, "ACTIVATION_NOT_CONFIGURED", NULL);
    ts_http_free(&r);
    follow(&st,
           "/callbacks/card-activation?app_id=" APP_ID "&template_id=T&auth_code=a&"
           "request_id=r",
           &r);
    assert_page(&r, 503, "ACTIVATION_NOT_CONFIGURED");
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, APPLY), 0);
    free(id);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* ------------------------------------------------------------ no leaks */

static char *read_all(const char *path)
{
    size_t len;
    char *s = ts_read_file(path, &len);
    ck_assert_msg(s != NULL, "cannot read %s", path);
    return s;
}

/* A whole scenario, then the database dump and cardgate's log: no form
 * value, no auth code, no token anywhere. */
START_TEST(test_nothing_of_the_member_kept)
{
    struct ts_stack st;
    struct ts_http r;
    stack_up(&st, PUBLIC_URL);
    char *id = create_template(&st, "leak-1");
    ts_signup_setup(&st.cg, id, SUCCESS_URL);
    char *code = NULL;
    const char *form = "\"form\":{\"OPEN_FORM_FIELD_MOBILE\":\"13912345678\","
                       "\"OPEN_FORM_FIELD_NAME\":\"欧阳娜娜\",\"OPEN_FORM_FIELD_GENDER\":\"女\","
                       "\"OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR\":\"1990-07-15\"}";
    char *cb = ts_member_signs_up(&st.sim, id, PUBLIC_URL, form, &code);
    follow(&st, cb, &r);
    ck_assert_msg(r.status == 302, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    /* A failed one too: its attempt must leave nothing either. */
    char *code2 = NULL;
    char *cb2 = ts_member_signs_up(&st.sim, id, PUBLIC_URL, form, &code2);
    fault(&st, "code_20000", OPEN, 0);
    follow(&st, cb2, &r);
    ts_http_free(&r);

    /* The token the simulator issued for the first member. */
    char url[256];
    snprintf(url, sizeof(url), "%s/cards", st.sim.control);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    ts_http_free(&r);

    char dump[256], cmd[1024];
    snprintf(dump, sizeof(dump), "/tmp/cardgate-signup-dump-%d.sql", (int)getpid());
    snprintf(cmd, sizeof(cmd), "pg_dump --data-only -d '%s' > %s 2>/dev/null", st.db, dump);
    ck_assert_int_eq(system(cmd), 0);
    char *db = read_all(dump);
    unlink(dump);
    ck_assert_int_eq(ts_stack_down(&st), 0);
    char *log = read_all(st.cg.log);
    const char *secrets[] = {"13912345678", "欧阳娜娜", "1990-07-15", code, code2};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        ck_assert_msg(strstr(db, secrets[i]) == NULL, "the database holds %s", secrets[i]);
        ck_assert_msg(strstr(log, secrets[i]) == NULL, "the log holds %s", secrets[i]);
    }
    /* Tokens: whatever the simulator issued starts "authusr". */
    ck_assert_msg(strstr(db, "authusr") == NULL, "the database holds a token");
    ck_assert_msg(strstr(log, "authusr") == NULL, "the log holds a token");
    free(db);
    free(log);
    free(cb);
    free(cb2);
    free(code);
    free(code2);
    free(id);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("signup");
    TCase *tc = tcase_create("program");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_templates);
    tcase_add_test(tc, test_whole_flow);
    tcase_add_test(tc, test_concurrent_hits_one_card);
    tcase_add_test(tc, test_failures);
    tcase_add_test(tc, test_activation_refusal_not_final);
    tcase_add_test(tc, test_not_configured);
    tcase_add_test(tc, test_nothing_of_the_member_kept);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
