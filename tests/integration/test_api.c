/* The REST API of the real cardgate binary against the real alipay-sim and a
 * throwaway PostgreSQL: every endpoint and every error code of the contract
 * (spec/api.md §2), with the error envelope, the `field` paths, the headers,
 * the idempotency ledger in the database and the gateway outcome table.
 *
 * Each test case has one unchecked fixture: a fresh database (migrated), a
 * simulator and a cardgate (2 workers, 2 s gateway timeout, see support.h).
 * The tests of a case share them, so each test uses its own out_serial_no
 * values and scopes its simulator faults to them. Expected values come from
 * the contract, the seeds and the request the test sent; the simulator's
 * control interface (/_sim/cards, /_sim/calls) is the witness of what reached
 * the gateway. */
#include <check.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

#define TEMPLATE "20170308000000000058101000300045" /* the seeds' template */
#define USER "2088302463082075"                     /* the seeds' user */
#define UNKNOWN_TEMPLATE "20990101000000000000000000000001"
#define OPEN_METHOD "alipay.marketing.card.open"
#define QUERY_METHOD "alipay.marketing.card.query"
#define JSON_CT "application/json; charset=utf-8"

/* Member data that must never reach the database or the log: values no
 * other part of a request or an answer can contain. */
#define MEMBER_NAME "Kongming Zhuge"
#define MEMBER_CELL "13987654321"
#define MEMBER_BIRTH "1987-03-14"
#define AUTH_TOKEN "composeBe5f1c0d3a9b47e2f8c6d7a1b2c3d4e5f6"

/* Longer than the 2 s gateway timeout ts_cardgate_start configures. */
#define BEYOND_TIMEOUT_MS 4500

/* No field expected in the error (the error is not about one). */
#define NO_FIELD ""

static struct ts_stack st; /* the database, the simulator and cardgate */

/* ------------------------------------------------------------- fixtures */

/* The fixture's teardown. Check gives up on the whole run when an unchecked
 * teardown fails, so a bad exit is reported here on stderr only; a crash
 * during the tests is caught by test_no_sanitizer_report, the last test of
 * every case. */
static void env_teardown(void)
{
    char log[sizeof(st.cg.log)];
    snprintf(log, sizeof(log), "%s", st.cg.log);
    int status = ts_stack_down(&st);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "cardgate did not exit 0 on SIGTERM; see %s\n", log);
}

/* Runs unchecked, in the runner process. */
static void env_up(void)
{
    char err[512];
    ck_assert_msg(ts_stack_up(&st, NULL, NULL, err, sizeof(err)) == 0, "%s", err);
}

/* ------------------------------------------------------------ JSON help */

/* The value at a path such as "error.alipay.code" or
 * "card.front_text_list[0].label", borrowed from o; NULL when absent. */
static json_object *jget(json_object *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *part = buf, *next; o && part; part = next) {
        next = strchr(part, '.');
        if (next)
            *next++ = '\0';
        char *idx = strchr(part, '[');
        if (idx)
            *idx++ = '\0';
        if (*part &&
            (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, part, &o)))
            return NULL;
        if (idx) {
            if (!json_object_is_type(o, json_type_array))
                return NULL;
            o = json_object_array_get_idx(o, (size_t)strtoul(idx, NULL, 10));
        }
    }
    return o;
}

/* The string at path, or NULL when absent or not a string. */
static const char *jstr(json_object *o, const char *path)
{
    json_object *v = jget(o, path);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int jhas(json_object *o, const char *path)
{
    return jget(o, path) != NULL;
}

/* Compact text of o, malloc'd. */
static char *jtext(json_object *o)
{
    return strdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* A deep copy of o with the keys of every object in reverse order: the same
 * meaning, a different text. */
static json_object *jreversed(json_object *o)
{
    if (json_object_is_type(o, json_type_array)) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; i < json_object_array_length(o); i++)
            json_object_array_add(a, jreversed(json_object_array_get_idx(o, i)));
        return a;
    }
    if (!json_object_is_type(o, json_type_object))
        return json_object_get(o);
    const char *keys[64];
    size_t n = 0;
    json_object_object_foreach(o, key, val)
    {
        (void)val;
        ck_assert(n < 64);
        keys[n++] = key;
    }
    json_object *r = json_object_new_object();
    while (n-- > 0)
        json_object_object_add(r, keys[n], jreversed(json_object_object_get(o, keys[n])));
    return r;
}

/* --------------------------------------------------------------- calls */

/* One answer of cardgate: the raw HTTP answer and, when the body is JSON,
 * its parse (owned here). */
struct resp {
    struct ts_http h;
    json_object *j;
    char *ct; /* Content-Type, malloc'd or NULL */
};

static void resp_free(struct resp *r)
{
    ts_http_free(&r->h);
    json_object_put(r->j);
    free(r->ct);
    memset(r, 0, sizeof(*r));
}

/* Calls cardgate; every answer, whatever it is, carries an X-Request-Id. */
static void call(struct resp *r, const char *method, const char *path, const char *const hdrs[],
                 const char *body)
{
    char url[1024];
    memset(r, 0, sizeof(*r));
    snprintf(url, sizeof(url), "%s%s", st.cg.url, path);
    ck_assert_msg(ts_http_call(method, url, hdrs, body, &r->h) == 0,
                  "%s %s: no HTTP answer from cardgate", method, path);
    char *rid = ts_http_header(&r->h, "X-Request-Id");
    ck_assert_msg(rid && *rid, "%s %s -> %ld without X-Request-Id", method, path, r->h.status);
    free(rid);
    r->ct = ts_http_header(&r->h, "Content-Type");
    r->j = json_tokener_parse(r->h.body);
}

static void post_open(struct resp *r, const char *body)
{
    const char *const h[] = {TS_AUTH, TS_JSON, NULL};
    call(r, "POST", "/v1/cards", h, body);
}

static void get_v1(struct resp *r, const char *path)
{
    const char *const h[] = {TS_AUTH, NULL};
    call(r, "GET", path, h, NULL);
}

/* Asserts status and a JSON object body with the contract's Content-Type. */
static void expect_json(const struct resp *r, long status)
{
    ck_assert_msg(r->h.status == status, "status %ld, expected %ld; body: %s", r->h.status, status,
                  r->h.body);
    ck_assert_msg(r->ct && strcasecmp(r->ct, JSON_CT) == 0, "Content-Type %s, expected %s",
                  r->ct ? r->ct : "(none)", JSON_CT);
    ck_assert_msg(r->j && json_object_is_type(r->j, json_type_object), "not a JSON object: %s",
                  r->h.body);
}

/* Asserts the error envelope {"error":{"code","message","field"?,"alipay"?}}
 * with status and code. field: NULL = not checked, NO_FIELD = absent, else
 * the expected path. Returns the "error" object (borrowed from r). */
static json_object *expect_error(const struct resp *r, long status, const char *code,
                                 const char *field)
{
    static const char *const known[] = {"code", "message", "field", "alipay", NULL};
    expect_json(r, status);
    ck_assert_msg(json_object_object_length(r->j) == 1, "extra members beside error: %s",
                  r->h.body);
    json_object *e = jget(r->j, "error");
    ck_assert_msg(e && json_object_is_type(e, json_type_object), "no error object: %s", r->h.body);
    json_object_object_foreach(e, key, val)
    {
        (void)val;
        size_t i = 0;
        while (known[i] && strcmp(known[i], key) != 0)
            i++;
        ck_assert_msg(known[i] != NULL, "unknown member error.%s: %s", key, r->h.body);
    }
    ck_assert_msg(jstr(e, "code") && strcmp(jstr(e, "code"), code) == 0, "error.code is not %s: %s",
                  code, r->h.body);
    ck_assert_msg(jstr(e, "message") && *jstr(e, "message"), "no error.message: %s", r->h.body);
    if (field && !*field)
        ck_assert_msg(!jhas(e, "field"), "unexpected error.field: %s", r->h.body);
    else if (field)
        ck_assert_msg(jstr(e, "field") && strcmp(jstr(e, "field"), field) == 0,
                      "error.field is not %s: %s", field, r->h.body);
    return e;
}

static void expect_no_alipay(json_object *err)
{
    ck_assert_msg(!jhas(err, "alipay"), "unexpected error.alipay: %s",
                  json_object_to_json_string(err));
}

/* error.alipay with code and, when given, sub_code. */
static void expect_alipay(json_object *err, const char *code, const char *sub_code)
{
    const char *c = jstr(err, "alipay.code"), *s = jstr(err, "alipay.sub_code");
    ck_assert_msg(c && strcmp(c, code) == 0, "error.alipay.code is not %s: %s", code,
                  json_object_to_json_string(err));
    ck_assert_msg(jstr(err, "alipay.msg") && *jstr(err, "alipay.msg"), "no error.alipay.msg: %s",
                  json_object_to_json_string(err));
    if (sub_code)
        ck_assert_msg(s && strcmp(s, sub_code) == 0, "error.alipay.sub_code is not %s: %s",
                      sub_code, json_object_to_json_string(err));
}

/* Asserts header name is value (value NULL: absent). */
static void expect_header(const struct resp *r, const char *name, const char *value)
{
    char *v = ts_http_header(&r->h, name);
    if (value)
        ck_assert_msg(v && strcmp(v, value) == 0, "header %s is %s, expected %s", name,
                      v ? v : "(absent)", value);
    else
        ck_assert_msg(v == NULL, "unexpected header %s: %s", name, v);
    free(v);
}

/* ------------------------------------------------------------ requests */

/* A valid open request for serial (the contract's example, with a Chinese
 * front_text_list and member data that must not be stored). Caller puts. */
static json_object *open_req(const char *serial)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"out_serial_no\":\"%s\",\"card_template_id\":\"" TEMPLATE "\","
             "\"user_id\":\"" USER "\",\"auth_token\":\"" AUTH_TOKEN "\","
             "\"card\":{\"external_card_no\":\"EXT-%s\",\"open_date\":\"2014-02-20 21:20:46\","
             "\"valid_date\":\"2030-02-20 21:20:46\",\"level\":\"VIP1\",\"point\":\"88\","
             "\"balance\":\"124.89\",\"front_text_list\":[{\"label\":\"专业\","
             "\"value\":\"金融贸易\"},{\"label\":\"年级\",\"value\":\"2014级\"}],"
             "\"mdcode_info\":{\"code_status\":\"SUCCESS\",\"code_value\":\"1KFCDY0002\","
             "\"expire_time\":\"2017-06-09 16:25:53\",\"time_stamp\":1496996459}},"
             "\"member\":{\"name\":\"" MEMBER_NAME "\",\"gender\":\"MALE\","
             "\"birth\":\"" MEMBER_BIRTH "\",\"cell\":\"" MEMBER_CELL "\"},"
             "\"open_card_channel\":\"20161534000000000008863\","
             "\"open_card_channel_id\":\"2088123123123123\"}",
             serial, serial);
    json_object *o = json_tokener_parse(text);
    ck_assert_ptr_nonnull(o);
    return o;
}

/* POSTs o (which it puts) and returns the answer in r. */
static void post_obj(struct resp *r, json_object *o)
{
    char *text = jtext(o);
    json_object_put(o);
    post_open(r, text);
    free(text);
}

static void set_str(json_object *o, const char *path, const char *key, const char *value)
{
    json_object *parent = jget(o, path);
    ck_assert_ptr_nonnull(parent);
    json_object_object_add(parent, key, json_object_new_string(value));
}

/* ---------------------------------------------------------- simulator */

static long sim_calls(const char *serial)
{
    long n = ts_sim_calls(&st.sim, serial);
    ck_assert_msg(n >= 0, "cannot read the simulator's counters");
    return n;
}

static void sim_fault(const char *mode, const char *method, const char *target, long delay_ms)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"mode\":\"%s\",\"method\":\"%s\",\"out_serial_no\":\"%s\",\"delay_ms\":%ld}", mode,
             method, target, delay_ms);
    ck_assert_msg(ts_sim_fault(&st.sim, json) == 0, "the simulator refused fault %s", json);
}

/* The simulator's record of a card: {"biz_card_no","qr_code","bar_code",
 * "card_info",…}. Caller puts. */
static json_object *sim_card(const char *biz_card_no)
{
    char url[256];
    struct ts_http h;
    snprintf(url, sizeof(url), "%s/cards/%s", st.sim.control, biz_card_no);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &h), 0);
    ck_assert_msg(h.status == 200, "the simulator has no card %s", biz_card_no);
    json_object *o = json_tokener_parse(h.body);
    ts_http_free(&h);
    ck_assert_ptr_nonnull(o);
    return o;
}

/* --------------------------------------------------------------- database */

static long sql(const char *fmt, ...)
{
    char q[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);
    return ts_pg_long(st.db, q);
}

/* How many tables of the public schema hold needle anywhere in a row. */
static long tables_holding(const char *needle)
{
    return sql("SELECT count(*) FROM information_schema.tables t WHERE t.table_schema = 'public' "
               "AND t.table_type = 'BASE TABLE' AND strpos(query_to_xml(format('SELECT * FROM "
               "%%I.%%I', t.table_schema, t.table_name), true, false, '')::text, '%s') > 0",
               needle);
}

/* Opens a card for serial (the default request) and returns its
 * biz_card_no, malloc'd. */
static char *open_card(const char *serial, const char *user_id)
{
    struct resp r;
    json_object *o = open_req(serial);
    if (user_id)
        set_str(o, "", "user_id", user_id);
    post_obj(&r, o);
    expect_json(&r, 201);
    const char *biz = jstr(r.j, "biz_card_no");
    ck_assert_msg(biz && *biz, "no biz_card_no: %s", r.h.body);
    char *out = strdup(biz);
    resp_free(&r);
    return out;
}

/* ====================================================== POST /v1/cards */

START_TEST(test_open_created)
{
    const char *serial = "open-created-1";
    long before = sim_calls(serial);
    struct resp r;
    const char *const h[] = {TS_AUTH, TS_JSON, "X-Request-Id: api-test-open-0001", NULL};
    json_object *req = open_req(serial);
    char *text = jtext(req);
    call(&r, "POST", "/v1/cards", h, text);
    free(text);
    expect_json(&r, 201);
    expect_header(&r, "X-Request-Id", "api-test-open-0001");
    expect_header(&r, "Idempotent-Replayed", NULL);

    /* Every field of the contract's 201 body. */
    static const char *const fields[] = {
        "out_serial_no", "biz_card_no",       "external_card_no",     "card_template_id", "user_id",
        "card",          "open_card_channel", "open_card_channel_id", "created_at",       NULL};
    for (size_t i = 0; fields[i]; i++)
        ck_assert_msg(jhas(r.j, fields[i]), "201 body without %s: %s", fields[i], r.h.body);
    ck_assert_str_eq(jstr(r.j, "out_serial_no"), serial);
    ck_assert_str_eq(jstr(r.j, "external_card_no"), "EXT-open-created-1");
    ck_assert_str_eq(jstr(r.j, "card_template_id"), TEMPLATE);
    ck_assert_str_eq(jstr(r.j, "user_id"), USER);
    ck_assert_str_eq(jstr(r.j, "open_card_channel"), "20161534000000000008863");
    ck_assert_str_eq(jstr(r.j, "open_card_channel_id"), "2088123123123123");
    ck_assert_msg(jstr(r.j, "created_at") && *jstr(r.j, "created_at"), "created_at: %s", r.h.body);
    const char *biz = jstr(r.j, "biz_card_no");
    ck_assert_msg(biz && *biz, "biz_card_no: %s", r.h.body);

    char location[128];
    snprintf(location, sizeof(location), "/v1/cards/%s", biz);
    expect_header(&r, "Location", location);

    /* card is card_info as Alipay returned it: what the simulator holds. */
    json_object *card = jget(r.j, "card");
    ck_assert_msg(json_object_is_type(card, json_type_object), "card: %s", r.h.body);
    json_object *sc = sim_card(biz);
    ck_assert_msg(json_object_equal(card, jget(sc, "card_info")),
                  "card differs from Alipay's card_info:\n%s\n%s", json_object_to_json_string(card),
                  json_object_to_json_string(jget(sc, "card_info")));
    json_object_put(sc);
    ck_assert_str_eq(jstr(card, "biz_card_no"), biz);
    ck_assert_str_eq(jstr(card, "external_card_no"), "EXT-open-created-1");
    ck_assert_str_eq(jstr(card, "point"), "88");
    ck_assert_str_eq(jstr(card, "balance"), "124.89");
    ck_assert_str_eq(jstr(card, "front_text_list[0].label"), "专业");
    ck_assert_str_eq(jstr(card, "front_text_list[0].value"), "金融贸易");
    ck_assert_str_eq(jstr(card, "front_text_list[1].label"), "年级");
    ck_assert_str_eq(jstr(card, "front_text_list[1].value"), "2014级");
    ck_assert_int_eq(sim_calls(serial), before + 1);

    /* The mapping and the ledger. */
    ck_assert_int_eq(sql("SELECT count(*) FROM cards WHERE biz_card_no = '%s' AND out_serial_no "
                         "= '%s' AND user_id = '" USER "' AND card_template_id = '" TEMPLATE "' "
                         "AND external_card_no = 'EXT-open-created-1'",
                         biz, serial),
                     1);
    ck_assert_int_eq(sql("SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND "
                         "state = 'succeeded' AND http_status = 201 AND caller = 'pos' AND "
                         "attempts = 1",
                         serial),
                     1);

    /* Member data is stored nowhere (the search itself finds the serial),
     * nor logged; the token is not logged in full. */
    ck_assert_int_ge(tables_holding(serial), 2);
    ck_assert_int_eq(tables_holding(MEMBER_NAME), 0);
    ck_assert_int_eq(tables_holding(MEMBER_CELL), 0);
    ck_assert_int_eq(tables_holding(MEMBER_BIRTH), 0);
    ck_assert_int_eq(sql("SELECT count(*) FROM card_requests r WHERE r.out_serial_no = '%s' AND "
                         "(coalesce(r.response_body, '') LIKE '%%" MEMBER_CELL "%%' OR "
                         "coalesce(r.response_body, '') LIKE '%%" MEMBER_NAME "%%' OR "
                         "r::text LIKE '%%" MEMBER_CELL "%%' OR r::text LIKE '%%" MEMBER_NAME
                         "%%')",
                         serial),
                     0);
    ck_assert_int_eq(sql("SELECT count(*) FROM cards c WHERE c::text LIKE '%%" MEMBER_CELL
                         "%%' OR c::text LIKE '%%" MEMBER_NAME "%%'"),
                     0);
    size_t len = 0;
    char *log = ts_read_file(st.cg.log, &len);
    ck_assert_msg(log && len > 0, "cannot read cardgate's log %s", st.cg.log);
    ck_assert_msg(!strstr(log, MEMBER_NAME), "member.name in %s", st.cg.log);
    ck_assert_msg(!strstr(log, MEMBER_CELL), "member.cell in %s", st.cg.log);
    ck_assert_msg(!strstr(log, MEMBER_BIRTH), "member.birth in %s", st.cg.log);
    ck_assert_msg(!strstr(log, AUTH_TOKEN), "auth_token unmasked in %s", st.cg.log);
    free(log);
    json_object_put(req);
    resp_free(&r);
}
END_TEST

START_TEST(test_open_replay)
{
    const char *serial = "open-replay-1";
    struct resp first, again, reordered, other;
    json_object *req = open_req(serial);
    char *text = jtext(req);
    post_open(&first, text);
    expect_json(&first, 201);
    expect_header(&first, "Idempotent-Replayed", NULL);
    char *location = ts_http_header(&first.h, "Location");
    ck_assert_ptr_nonnull(location);
    long calls = sim_calls(serial), total = sim_calls(NULL);
    ck_assert_int_eq(calls, 1);

    /* The same text again. */
    post_open(&again, text);
    expect_json(&again, 201);
    ck_assert_str_eq(again.h.body, first.h.body);
    expect_header(&again, "Idempotent-Replayed", "true");
    expect_header(&again, "Location", location);

    /* The same meaning: keys reversed, pretty-printed, a refreshed token. */
    json_object *alt = jreversed(req);
    set_str(alt, "", "auth_token", "composeBrefreshed0000000000000000000000000");
    set_str(alt, "", "app_auth_token", "201510BBaabdb44d8fd04607abf8d5931ec75D84");
    const char *alt_text = json_object_to_json_string_ext(alt, JSON_C_TO_STRING_PRETTY);
    ck_assert_str_ne(alt_text, text);
    post_open(&reordered, alt_text);
    expect_json(&reordered, 201);
    ck_assert_str_eq(reordered.h.body, first.h.body);
    expect_header(&reordered, "Idempotent-Replayed", "true");
    json_object_put(alt);
    ck_assert_int_eq(sim_calls(serial), calls);
    ck_assert_int_eq(sim_calls(NULL), total);

    /* A different request under the same serial. */
    set_str(req, "card", "level", "VIP2");
    char *changed = jtext(req);
    post_open(&other, changed);
    expect_error(&other, 422, "OUT_SERIAL_NO_REUSED", NULL);
    expect_header(&other, "Idempotent-Replayed", NULL);
    ck_assert_int_eq(sim_calls(serial), calls);
    ck_assert_int_eq(sim_calls(NULL), total);
    ck_assert_int_eq(
        sql("SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND attempts = 1 AND "
            "state = 'succeeded'",
            serial),
        1);
    ck_assert_int_eq(sql("SELECT count(*) FROM cards WHERE out_serial_no = '%s'", serial), 1);

    free(changed);
    free(text);
    free(location);
    json_object_put(req);
    resp_free(&first);
    resp_free(&again);
    resp_free(&reordered);
    resp_free(&other);
}
END_TEST

/* One invalid body: how to spoil the default request, and the field named. */
struct invalid_case {
    const char *name;
    void (*spoil)(json_object *req);
    const char *field;
};

static void no_serial(json_object *o)
{
    json_object_object_del(o, "out_serial_no");
}

static void bad_user(json_object *o)
{
    set_str(o, "", "user_id", "2089302463082075");
}

static void short_user(json_object *o)
{
    set_str(o, "", "user_id", "208830246308207");
}

static void feb_29(json_object *o)
{
    set_str(o, "card", "open_date", "2023-02-29 10:00:00");
}

static void three_decimals(json_object *o)
{
    set_str(o, "card", "point", "1.234");
}

static void long_label(json_object *o)
{
    set_str(o, "card.front_text_list[0]", "label", "专业课程A");
}

static void five_rows(json_object *o)
{
    json_object *list = jget(o, "card.front_text_list");
    while (json_object_array_length(list) < 5) {
        json_object *row = json_object_new_object();
        json_object_object_add(row, "label", json_object_new_string("等级"));
        json_object_object_add(row, "value", json_object_new_string("金卡"));
        json_object_array_add(list, row);
    }
}

static void gender_x(json_object *o)
{
    set_str(o, "member", "gender", "X");
}

static void colour(json_object *o)
{
    set_str(o, "card", "colour", "red");
}

START_TEST(test_open_invalid)
{
    static const struct invalid_case cases[] = {
        {"missing out_serial_no", no_serial, "out_serial_no"},
        {"user_id not 2088…", bad_user, "user_id"},
        {"user_id of 15 digits", short_user, "user_id"},
        {"open_date 2023-02-29", feb_29, "card.open_date"},
        {"point 1.234", three_decimals, "card.point"},
        {"label of 5 characters", long_label, "card.front_text_list[0].label"},
        {"5 front_text_list rows", five_rows, "card.front_text_list"},
        {"gender X", gender_x, "member.gender"},
        {"unknown card.colour", colour, "card.colour"},
    };
    long total = sim_calls(NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char serial[32];
        snprintf(serial, sizeof(serial), "invalid-%zu", i);
        json_object *o = open_req(serial);
        cases[i].spoil(o);
        struct resp r;
        post_obj(&r, o);
        ck_assert_msg(r.h.status == 400, "%s: status %ld (%s)", cases[i].name, r.h.status,
                      r.h.body);
        json_object *e = expect_error(&r, 400, "INVALID_PARAMETER", cases[i].field);
        expect_no_alipay(e);
        resp_free(&r);
    }
    ck_assert_int_eq(sim_calls(NULL), total);
    ck_assert_int_eq(
        sql("SELECT count(*) FROM card_requests WHERE out_serial_no LIKE 'invalid-%%'"), 0);

    /* Four characters are the limit, not four bytes: "专业课程" passes. */
    json_object *o = open_req("label-4-chars");
    set_str(o, "card.front_text_list[0]", "label", "专业课程");
    struct resp r;
    post_obj(&r, o);
    expect_json(&r, 201);
    ck_assert_str_eq(jstr(r.j, "card.front_text_list[0].label"), "专业课程");
    resp_free(&r);
    ck_assert_int_eq(sim_calls(NULL), total + 1);
}
END_TEST

START_TEST(test_open_refused_requests)
{
    long total = sim_calls(NULL);
    struct resp r;
    json_object *req = open_req("refused-1");
    char *valid = jtext(req);
    json_object_put(req);
    json_object *e;

    /* Truncated JSON, and a document followed by garbage. */
    char *truncated = strndup(valid, strlen(valid) / 2);
    post_open(&r, truncated);
    e = expect_error(&r, 400, "MALFORMED_JSON", NO_FIELD);
    expect_no_alipay(e);
    resp_free(&r);
    free(truncated);
    size_t n = strlen(valid);
    char *trailing = malloc(n + 8);
    snprintf(trailing, n + 8, "%s xyz", valid);
    post_open(&r, trailing);
    expect_error(&r, 400, "MALFORMED_JSON", NO_FIELD);
    resp_free(&r);
    free(trailing);

    /* Over 64 KiB: about 70 KiB, valid JSON otherwise. */
    size_t big = 70 * 1024;
    char *large = malloc(big + 64);
    int k = snprintf(large, big + 64, "{\"out_serial_no\":\"large-1\",\"pad\":\"");
    memset(large + k, 'a', big);
    strcpy(large + k + big, "\"}");
    post_open(&r, large);
    expect_error(&r, 413, "PAYLOAD_TOO_LARGE", NO_FIELD);
    resp_free(&r);
    free(large);

    /* Not JSON's media type. */
    const char *const plain[] = {TS_AUTH, "Content-Type: text/plain", NULL};
    call(&r, "POST", "/v1/cards", plain, valid);
    expect_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE", NO_FIELD);
    resp_free(&r);

    /* No key, a wrong key; the caller's request id comes back on errors. */
    const char *const none[] = {TS_JSON, "X-Request-Id: api-test-401-a", NULL};
    call(&r, "POST", "/v1/cards", none, valid);
    expect_error(&r, 401, "UNAUTHENTICATED", NO_FIELD);
    expect_header(&r, "X-Request-Id", "api-test-401-a");
    resp_free(&r);
    const char *const wrong[] = {"Authorization: Bearer test-key-0123456788", TS_JSON, NULL};
    call(&r, "POST", "/v1/cards", wrong, valid);
    expect_error(&r, 401, "UNAUTHENTICATED", NO_FIELD);
    resp_free(&r);
    const char *const get_none[] = {NULL};
    call(&r, "GET", "/v1/cards?user_id=" USER, get_none, NULL);
    expect_error(&r, 401, "UNAUTHENTICATED", NO_FIELD);
    resp_free(&r);
    call(&r, "GET", "/v1/cards/1234567890", get_none, NULL);
    expect_error(&r, 401, "UNAUTHENTICATED", NO_FIELD);
    resp_free(&r);

    ck_assert_int_eq(sim_calls(NULL), total);
    ck_assert_int_eq(sql("SELECT count(*) FROM card_requests WHERE out_serial_no IN "
                         "('refused-1', 'large-1')"),
                     0);
    free(valid);
}
END_TEST

/* ==================================================== gateway outcomes */

/* One row of the contract's outcome table, made by a simulator fault. */
struct outcome_case {
    const char *mode;
    long delay_ms;
    long status;
    const char *code;
    const char *alipay_code; /* NULL: no error.alipay */
    const char *alipay_sub_code;
};

static const struct outcome_case outcomes[] = {
    {"code_20001", 0, 422, "ALIPAY_AUTH_FAILED", "20001", "aop.invalid-auth-token"},
    /* The st.sim's error_response is unsigned: api.md gives error.alipay only
     * where the signature held (the codes are in the message). */
    {"error_response", 0, 502, "ALIPAY_REQUEST_REFUSED", NULL, NULL},
    {"code_20000", 0, 502, "ALIPAY_UNAVAILABLE", "20000", NULL},
    {"http_500", 0, 502, "ALIPAY_UNAVAILABLE", NULL, NULL},
    {"drop", 0, 502, "ALIPAY_UNAVAILABLE", NULL, NULL},
    {"bad_signature", 0, 502, "ALIPAY_BAD_SIGNATURE", NULL, NULL},
    {"unsigned_success", 0, 502, "ALIPAY_BAD_SIGNATURE", NULL, NULL},
    {"delay", BEYOND_TIMEOUT_MS, 504, "ALIPAY_TIMEOUT", NULL, NULL},
};
#define N_OUTCOMES (sizeof(outcomes) / sizeof(outcomes[0]))

/* A non-final failure: answered as the table says, nothing stored as a
 * card, and a retry with the same out_serial_no (a fresh token for 20001)
 * calls the gateway again and opens the card. */
START_TEST(test_open_gateway_failures)
{
    const struct outcome_case *c = &outcomes[_i];
    char serial[64];
    snprintf(serial, sizeof(serial), "gw-%s", c->mode);
    ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);
    sim_fault(c->mode, OPEN_METHOD, serial, c->delay_ms);

    struct resp r;
    post_obj(&r, open_req(serial));
    json_object *e = expect_error(&r, c->status, c->code, NO_FIELD);
    if (c->alipay_code)
        expect_alipay(e, c->alipay_code, c->alipay_sub_code);
    else
        expect_no_alipay(e);
    expect_header(&r, "Idempotent-Replayed", NULL);
    resp_free(&r);
    long calls = sim_calls(serial);
    ck_assert_int_ge(calls, 1);
    ck_assert_int_eq(sql("SELECT count(*) FROM cards WHERE out_serial_no = '%s'", serial), 0);
    ck_assert_int_eq(sql("SELECT attempts FROM card_requests WHERE out_serial_no = '%s'", serial),
                     1);
    ck_assert_int_eq(sql("SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND "
                         "state IN ('succeeded', 'rejected')",
                         serial),
                     0);

    ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);
    json_object *o = open_req(serial);
    set_str(o, "", "auth_token", "composeBfresh00000000000000000000000000000");
    post_obj(&r, o);
    expect_json(&r, 201);
    expect_header(&r, "Idempotent-Replayed", NULL);
    ck_assert_str_eq(jstr(r.j, "out_serial_no"), serial);
    resp_free(&r);
    ck_assert_int_eq(sim_calls(serial), calls + 1);
    ck_assert_int_eq(sql("SELECT attempts FROM card_requests WHERE out_serial_no = '%s' AND "
                         "state = 'succeeded'",
                         serial),
                     2);
    ck_assert_int_eq(sql("SELECT count(*) FROM cards WHERE out_serial_no = '%s'", serial), 1);
    /* each attempt's call is on the dashboards, told apart by its token */
    ck_assert_int_eq(sql("SELECT count(DISTINCT attempt) FROM gateway_calls WHERE "
                         "out_serial_no = '%s' AND method = '" OPEN_METHOD "'",
                         serial),
                     2);
}
END_TEST

/* Alipay's business refusal is final: stored and replayed. */
START_TEST(test_open_rejected_is_final)
{
    const char *serial = "gw-template";
    ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);
    json_object *o = open_req(serial);
    set_str(o, "", "card_template_id", UNKNOWN_TEMPLATE);
    char *text = jtext(o);
    json_object_put(o);
    struct resp r, again, listed;
    post_open(&r, text);
    json_object *e = expect_error(&r, 422, "ALIPAY_REJECTED", NO_FIELD);
    expect_alipay(e, "40004", "TEMPLATE_NOT_EXIT");
    ck_assert_int_eq(sim_calls(serial), 1);
    ck_assert_int_eq(sql("SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND "
                         "state = 'rejected' AND http_status = 422",
                         serial),
                     1);

    post_open(&again, text);
    expect_error(&again, 422, "ALIPAY_REJECTED", NO_FIELD);
    ck_assert_str_eq(again.h.body, r.h.body);
    expect_header(&again, "Idempotent-Replayed", "true");
    ck_assert_int_eq(sim_calls(serial), 1);
    ck_assert_int_eq(sql("SELECT attempts FROM card_requests WHERE out_serial_no = '%s'", serial),
                     1);

    get_v1(&listed, "/v1/cards?out_serial_no=gw-template");
    expect_json(&listed, 200);
    ck_assert_int_eq(json_object_array_length(jget(listed.j, "cards")), 0);
    free(text);
    resp_free(&r);
    resp_free(&again);
    resp_free(&listed);
}
END_TEST

/* ============================================ GET /v1/cards/{biz_card_no} */

START_TEST(test_query)
{
    char *biz = open_card("query-1", NULL);
    char path[256];
    struct resp r;
    snprintf(path, sizeof(path), "/v1/cards/%s", biz);
    get_v1(&r, path);
    expect_json(&r, 200);
    ck_assert_int_eq(json_object_object_length(r.j), 3);
    ck_assert_str_eq(jstr(r.j, "biz_card_no"), biz);
    const char *schema = jstr(r.j, "schema_url");
    ck_assert_msg(schema && strncmp(schema, "alipays://", 10) == 0, "schema_url: %s", r.h.body);
    json_object *sc = sim_card(biz);
    ck_assert_msg(json_object_equal(jget(r.j, "card"), jget(sc, "card_info")),
                  "card differs from Alipay's card_info: %s", r.h.body);
    ck_assert_str_eq(jstr(r.j, "card.front_text_list[0].label"), "专业");
    json_object_put(sc);
    resp_free(&r);

    /* The owner's user_id. */
    snprintf(path, sizeof(path), "/v1/cards/%s?user_id=" USER, biz);
    get_v1(&r, path);
    expect_json(&r, 200);
    ck_assert_str_eq(jstr(r.j, "biz_card_no"), biz);
    resp_free(&r);

    /* A bad user_id never reaches the gateway. */
    long total = sim_calls(NULL);
    snprintf(path, sizeof(path), "/v1/cards/%s?user_id=1234", biz);
    get_v1(&r, path);
    expect_no_alipay(expect_error(&r, 400, "INVALID_PARAMETER", "user_id"));
    resp_free(&r);
    ck_assert_int_eq(sim_calls(NULL), total);

    /* Unknown to Alipay; the caller's request id comes back on a 404. */
    const char *const h[] = {TS_AUTH, "X-Request-Id: api-test-404-q", NULL};
    call(&r, "GET", "/v1/cards/999999999999000", h, NULL);
    json_object *e = expect_error(&r, 404, "CARD_NOT_FOUND", NO_FIELD);
    expect_alipay(e, "40004", "CARD_NOT_EXIT");
    expect_header(&r, "X-Request-Id", "api-test-404-q");
    resp_free(&r);
    free(biz);
}
END_TEST

/* The outcome table on the query: never a 200 with unverified content. */
START_TEST(test_query_gateway_failures)
{
    const struct outcome_case *c = &outcomes[_i];
    char serial[64], path[256];
    snprintf(serial, sizeof(serial), "qgw-%s", c->mode);
    char *biz = open_card(serial, NULL);
    ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);
    sim_fault(c->mode, QUERY_METHOD, biz, c->delay_ms);
    struct resp r;
    snprintf(path, sizeof(path), "/v1/cards/%s", biz);
    get_v1(&r, path);
    json_object *e = expect_error(&r, c->status, c->code, NO_FIELD);
    if (c->alipay_code)
        expect_alipay(e, c->alipay_code, c->alipay_sub_code);
    else
        expect_no_alipay(e);
    resp_free(&r);

    ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);
    get_v1(&r, path);
    expect_json(&r, 200);
    ck_assert_str_eq(jstr(r.j, "biz_card_no"), biz);
    resp_free(&r);
    free(biz);
}
END_TEST

/* ======================================================= GET lookup */

START_TEST(test_lookup)
{
    char *biz = open_card("lookup-1", NULL);
    json_object *sc = sim_card(biz);
    const char *qr = jstr(sc, "qr_code"), *bar = jstr(sc, "bar_code");
    ck_assert_ptr_nonnull(qr);
    ck_assert_ptr_nonnull(bar);
    char path[256];
    struct resp r;

    snprintf(path, sizeof(path), "/v1/cards/lookup?code=%s&type=D_QR_CODE", qr);
    get_v1(&r, path);
    expect_json(&r, 200);
    ck_assert_str_eq(jstr(r.j, "biz_card_no"), biz);
    ck_assert_msg(json_object_equal(jget(r.j, "card"), jget(sc, "card_info")), "card: %s",
                  r.h.body);
    ck_assert_msg(jstr(r.j, "schema_url") != NULL, "no schema_url: %s", r.h.body);
    resp_free(&r);

    snprintf(path, sizeof(path), "/v1/cards/lookup?type=D_BAR_CODE&code=%s", bar);
    get_v1(&r, path);
    expect_json(&r, 200);
    ck_assert_str_eq(jstr(r.j, "biz_card_no"), biz);
    resp_free(&r);

    /* The bar code is not a QR code. */
    snprintf(path, sizeof(path), "/v1/cards/lookup?code=%s&type=D_QR_CODE", bar);
    get_v1(&r, path);
    expect_alipay(expect_error(&r, 404, "CARD_NOT_FOUND", NO_FIELD), "40004", "CARD_NOT_EXIT");
    resp_free(&r);
    get_v1(&r, "/v1/cards/lookup?code=QR000000000000000000&type=D_QR_CODE");
    expect_error(&r, 404, "CARD_NOT_FOUND", NO_FIELD);
    resp_free(&r);

    /* Gateway failures as the table says. */
    ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);
    sim_fault("bad_signature", QUERY_METHOD, qr, 0);
    snprintf(path, sizeof(path), "/v1/cards/lookup?code=%s&type=D_QR_CODE", qr);
    get_v1(&r, path);
    expect_no_alipay(expect_error(&r, 502, "ALIPAY_BAD_SIGNATURE", NO_FIELD));
    resp_free(&r);
    ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);

    /* Bad parameters never reach the gateway. */
    long total = sim_calls(NULL);
    get_v1(&r, "/v1/cards/lookup?type=D_QR_CODE");
    expect_error(&r, 400, "INVALID_PARAMETER", "code");
    resp_free(&r);
    snprintf(path, sizeof(path), "/v1/cards/lookup?code=%s&type=BIZ_CARD", qr);
    get_v1(&r, path);
    expect_error(&r, 400, "INVALID_PARAMETER", "type");
    resp_free(&r);
    snprintf(path, sizeof(path), "/v1/cards/lookup?code=%s", qr);
    get_v1(&r, path);
    expect_error(&r, 400, "INVALID_PARAMETER", "type");
    resp_free(&r);
    ck_assert_int_eq(sim_calls(NULL), total);
    json_object_put(sc);
    free(biz);
}
END_TEST

/* ===================================================== GET /v1/cards?… */

/* Asserts one listed card: the contract's fields with the values opened. */
static void expect_listed(json_object *card, const char *biz, const char *serial,
                          const char *user_id)
{
    static const char *const fields[] = {
        "biz_card_no",      "external_card_no", "out_serial_no", "user_id",
        "card_template_id", "status",           "created_at",    NULL};
    char ext[80];
    const char *text = json_object_to_json_string(card);
    for (size_t i = 0; fields[i]; i++)
        ck_assert_msg(jstr(card, fields[i]) && *jstr(card, fields[i]), "listed card without %s: %s",
                      fields[i], text);
    snprintf(ext, sizeof(ext), "EXT-%s", serial);
    ck_assert_str_eq(jstr(card, "biz_card_no"), biz);
    ck_assert_str_eq(jstr(card, "external_card_no"), ext);
    ck_assert_str_eq(jstr(card, "out_serial_no"), serial);
    ck_assert_str_eq(jstr(card, "user_id"), user_id);
    ck_assert_str_eq(jstr(card, "card_template_id"), TEMPLATE);
}

/* GET path; asserts 200 {"cards":[…]} with n entries; returns the array. */
static json_object *list(struct resp *r, const char *path, size_t n)
{
    get_v1(r, path);
    expect_json(r, 200);
    ck_assert_int_eq(json_object_object_length(r->j), 1);
    json_object *cards = jget(r->j, "cards");
    ck_assert_msg(json_object_is_type(cards, json_type_array), "no cards array: %s", r->h.body);
    ck_assert_msg(json_object_array_length(cards) == n, "%s: %zu cards, expected %zu: %s", path,
                  json_object_array_length(cards), n, r->h.body);
    return cards;
}

START_TEST(test_list)
{
    const char *user = "2088000000000777";
    char *a = open_card("list-a", user), *b = open_card("list-b", user);
    long total = sim_calls(NULL);
    struct resp r;

    json_object *cards = list(&r, "/v1/cards?user_id=2088000000000777", 2);
    json_object *c0 = json_object_array_get_idx(cards, 0),
                *c1 = json_object_array_get_idx(cards, 1);
    if (strcmp(jstr(c0, "out_serial_no"), "list-a") != 0) {
        json_object *t = c0;
        c0 = c1;
        c1 = t;
    }
    expect_listed(c0, a, "list-a", user);
    expect_listed(c1, b, "list-b", user);
    resp_free(&r);

    cards = list(&r, "/v1/cards?external_card_no=EXT-list-a", 1);
    expect_listed(json_object_array_get_idx(cards, 0), a, "list-a", user);
    resp_free(&r);
    cards = list(&r, "/v1/cards?out_serial_no=list-b", 1);
    expect_listed(json_object_array_get_idx(cards, 0), b, "list-b", user);
    resp_free(&r);

    /* None: an empty list. */
    list(&r, "/v1/cards?user_id=2088000000000778", 0);
    resp_free(&r);
    list(&r, "/v1/cards?external_card_no=EXT-none", 0);
    resp_free(&r);
    list(&r, "/v1/cards?out_serial_no=never-used", 0);
    resp_free(&r);

    /* Exactly one filter, and only known parameters. */
    get_v1(&r, "/v1/cards");
    expect_error(&r, 400, "INVALID_PARAMETER", NULL);
    resp_free(&r);
    get_v1(&r, "/v1/cards?user_id=2088000000000777&out_serial_no=list-a");
    expect_error(&r, 400, "INVALID_PARAMETER", NULL);
    resp_free(&r);
    get_v1(&r, "/v1/cards?colour=red");
    expect_error(&r, 400, "INVALID_PARAMETER", "colour");
    resp_free(&r);
    get_v1(&r, "/v1/cards?user_id=2088000000000777&colour=red");
    expect_error(&r, 400, "INVALID_PARAMETER", "colour");
    resp_free(&r);
    /* A value cut at an encoded NUL, or a parameter given twice, would
     * look up something else than what was asked: refused whole. */
    get_v1(&r, "/v1/cards?out_serial_no=list-b%00junk");
    expect_error(&r, 400, "INVALID_PARAMETER", NULL);
    resp_free(&r);
    get_v1(&r, "/v1/cards?out_serial_no=list-b&out_serial_no=list-a");
    expect_error(&r, 400, "INVALID_PARAMETER", "out_serial_no");
    resp_free(&r);

    ck_assert_int_eq(sim_calls(NULL), total);
    free(a);
    free(b);
}
END_TEST

/* ============================================================ operations */

/* The value of one series in Prometheus text (0 when absent). */
static double metric(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = strstr(text, series); p; p = strstr(p + 1, series)) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return 0;
}

static char *metrics_text(void)
{
    struct resp r;
    call(&r, "GET", "/metrics", NULL, NULL);
    ck_assert_int_eq(r.h.status, 200);
    ck_assert_msg(r.ct && strncmp(r.ct, "text/plain", 10) == 0, "Content-Type %s", r.ct);
    char *text = strdup(r.h.body);
    resp_free(&r);
    return text;
}

START_TEST(test_ops)
{
    struct resp r;
    call(&r, "GET", "/healthz", NULL, NULL);
    ck_assert_int_eq(r.h.status, 200);
    resp_free(&r);
    const char *const h[] = {"X-Request-Id: api-test-ready", NULL};
    call(&r, "GET", "/readyz", h, NULL);
    ck_assert_int_eq(r.h.status, 200);
    expect_header(&r, "X-Request-Id", "api-test-ready");
    resp_free(&r);

    const char *open201 = "cardgate_http_requests_total{route=\"open\",status=\"201\"}";
    char *before = metrics_text();
    free(open_card("metrics-1", NULL));
    char *after = metrics_text();
    ck_assert_msg(strstr(after, "cardgate_http_requests_total"), "%s", after);
    ck_assert_msg(strstr(after, "cardgate_gateway_calls_total"), "%s", after);
    ck_assert_msg(strstr(after, "cardgate_gateway_latency_seconds_bucket"), "%s", after);
    ck_assert_msg(metric(after, open201) >= metric(before, open201) + 1,
                  "%s did not increase: %g -> %g", open201, metric(before, open201),
                  metric(after, open201));
    /* Per caller; the pools' and the recorder's gauges (the database is up,
     * nothing waits, nothing is left to record). */
    const char *pos2xx = "cardgate_caller_requests_total{caller=\"pos\",route=\"open\",status="
                         "\"2xx\"}";
    ck_assert_msg(metric(after, pos2xx) >= metric(before, pos2xx) + 1,
                  "%s did not increase: %g -> %g", pos2xx, metric(before, pos2xx),
                  metric(after, pos2xx));
    ck_assert_msg(metric(after, "cardgate_db_connections_up") >= 1, "%s", after);
    ck_assert_msg(strstr(after, "\ncardgate_db_connections_busy "), "%s", after);
    ck_assert_msg(strstr(after, "\ncardgate_db_queries_waiting 0\n"), "%s", after);
    ck_assert_msg(strstr(after, "\ncardgate_outcomes_unrecorded 0\n"), "%s", after);
    ck_assert_msg(strstr(after, "\ncardgate_stale_requests "), "%s", after);
    free(before);
    free(after);

    /* Without a caller's id, each answer gets a new one. */
    char *ids[2];
    for (int i = 0; i < 2; i++) {
        call(&r, "GET", "/healthz", NULL, NULL);
        ids[i] = ts_http_header(&r.h, "X-Request-Id");
        resp_free(&r);
    }
    ck_assert_str_ne(ids[0], ids[1]);
    free(ids[0]);
    free(ids[1]);

    /* Unknown resource: still a request id. */
    const char *const h404[] = {TS_AUTH, "X-Request-Id: api-test-404", NULL};
    call(&r, "GET", "/v1/nothing", h404, NULL);
    ck_assert_int_eq(r.h.status, 404);
    expect_header(&r, "X-Request-Id", "api-test-404");
    resp_free(&r);
}
END_TEST

/* Runs last in each case: cardgate survived the case, then stops, without a
 * sanitizer report — leaks are reported only at exit, so it is stopped
 * here, where a report fails the test (a crash makes the tests after it
 * fail too; this names the cause). */
START_TEST(test_no_sanitizer_report)
{
    ck_assert_msg(kill(st.cg.pid, 0) == 0, "cardgate is gone; see %s", st.cg.log);
    ck_assert_int_eq(ts_stop_unrelated(st.cg.pid, 20000), 0);
    ck_assert_msg(!ts_log_has_sanitizer_report(st.cg.log),
                  "cardgate's log has a sanitizer report; see %s", st.cg.log);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");

    TCase *tc_open = tcase_create("open");
    tcase_add_unchecked_fixture(tc_open, env_up, env_teardown);
    tcase_set_timeout(tc_open, 60);
    tcase_add_test(tc_open, test_open_created);
    tcase_add_test(tc_open, test_open_replay);
    tcase_add_test(tc_open, test_open_invalid);
    tcase_add_test(tc_open, test_open_refused_requests);
    tcase_add_test(tc_open, test_ops);
    tcase_add_test(tc_open, test_no_sanitizer_report);
    suite_add_tcase(s, tc_open);

    TCase *tc_gw = tcase_create("gateway");
    tcase_add_unchecked_fixture(tc_gw, env_up, env_teardown);
    tcase_set_timeout(tc_gw, 60);
    tcase_add_loop_test(tc_gw, test_open_gateway_failures, 0, (int)N_OUTCOMES);
    tcase_add_test(tc_gw, test_open_rejected_is_final);
    tcase_add_loop_test(tc_gw, test_query_gateway_failures, 0, (int)N_OUTCOMES);
    tcase_add_test(tc_gw, test_no_sanitizer_report);
    suite_add_tcase(s, tc_gw);

    TCase *tc_read = tcase_create("read");
    tcase_add_unchecked_fixture(tc_read, env_up, env_teardown);
    tcase_set_timeout(tc_read, 60);
    tcase_add_test(tc_read, test_query);
    tcase_add_test(tc_read, test_lookup);
    tcase_add_test(tc_read, test_list);
    tcase_add_test(tc_read, test_no_sanitizer_report);
    suite_add_tcase(s, tc_read);

    return ts_run_suite(s);
}
