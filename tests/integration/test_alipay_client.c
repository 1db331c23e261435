/* alipay_client + alipay_http against the real alipay-sim: the client's
 * calls, made on one libevent loop the way a cardgate worker makes them,
 * come back with the outcome class of api.md §2's mapping table for every
 * answer the simulator can give (its README lists the fault modes and what
 * each one answers), Chinese text survives the round trip, and a thousand
 * concurrent calls on one loop each complete exactly once.
 *
 * One simulator serves every test (started once, reset before each test).
 * Each test owns its event_base, alipay_http and clients; a watchdog timer
 * on the loop fails the test instead of letting it hang. */
#include <check.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alipay_card.h"
#include "alipay_client.h"
#include "alipay_http.h"
#include "alipay_key.h"
#include "support.h"

#define APP_ID "2014072300007148"
#define TEMPLATE "20170308000000000058101000300045" /* the seeds' template */
#define USER "2088302463082075"                     /* the seeds' user */
#define LABEL "专业"
#define VALUE "金融贸易"
#define CHANNEL "专业/金融贸易"
#define SCHEMA_PREFIX "alipays://platformapi/startapp?appId=20000021&b=m&p="

#define GENEROUS_MS 60000L /* client timeout where no timeout is under test */
#define WATCHDOG_S 120     /* the loop gives up after this: the test fails */

static struct ts_sim sim;

/* Per test (checked fixture: runs in the forked child). */
static EVP_PKEY *app_key, *app_key_sha1_form, *alipay_pub, *wrong_app_key;
static struct event_base *base;
static struct alipay_http *http;

/* ------------------------------------------------------------- fixtures */

static void sim_up(void)
{
    ck_assert_int_eq(ts_sim_start(&sim, NULL), 0);
}

static void sim_down(void)
{
    ts_sim_stop(&sim);
}

static EVP_PKEY *load_private(const char *rel)
{
    char err[256];
    EVP_PKEY *k = alipay_key_load_private(ts_vector(rel), err, sizeof(err));
    ck_assert_msg(k != NULL, "%s: %s", rel, err);
    return k;
}

static void reset_sim(void)
{
    char url[192];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/reset", sim.control);
    ck_assert_int_eq(ts_http_call("POST", url, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ts_http_free(&r);
}

static void setup(void)
{
    char err[256];
    signal(SIGPIPE, SIG_IGN); /* alipay_http.h: the caller ignores SIGPIPE */
    ck_assert_int_eq(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    app_key = load_private("keys/app_private_pkcs1.pem");
    /* The same app key as Alipay's key tool hands it out, for the RSA client. */
    app_key_sha1_form = load_private("keys/app_private_pkcs8_oneline.txt");
    /* Not the app's key: the simulator checks requests with app_public.pem. */
    wrong_app_key = load_private("keys/alipay_private_sim.pem");
    alipay_pub = alipay_key_load_public(ts_vector("keys/alipay_public_sim.pem"), err, sizeof(err));
    ck_assert_msg(alipay_pub != NULL, "%s", err);
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    http = alipay_http_new(base, NULL, err, sizeof(err));
    ck_assert_msg(http != NULL, "%s", err);
    reset_sim();
}

static void teardown(void)
{
    alipay_http_free(http);
    event_base_free(base);
    EVP_PKEY_free(app_key);
    EVP_PKEY_free(app_key_sha1_form);
    EVP_PKEY_free(wrong_app_key);
    EVP_PKEY_free(alipay_pub);
    curl_global_cleanup();
}

/* A client on the test's http; the caller frees it. */
static struct alipay_client *client_at(const char *gateway, EVP_PKEY *key,
                                       enum alipay_sign_type type, long timeout_ms)
{
    char err[256];
    struct alipay_client_config cfg = {.gateway_url = gateway,
                                       .app_id = APP_ID,
                                       .app_key = key,
                                       .alipay_key = alipay_pub,
                                       .sign_type = type,
                                       .timeout_ms = timeout_ms};
    struct alipay_client *c = alipay_client_new(&cfg, http, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    return c;
}

static struct alipay_client *client(void)
{
    return client_at(sim.url, app_key, ALIPAY_SIGN_RSA2, GENEROUS_MS);
}

/* ---------------------------------------------------------- the loop */

/* What the test waits for: `done` callbacks out of `want`. */
struct waiter {
    int done, want, timed_out;
};

/* One call's result, copied out of the callback (the reply is the
 * client's and lives only during it). */
struct got {
    struct waiter *w;
    int calls;                 /* how many times the callback ran */
    struct alipay_reply reply; /* strings strdup'd, node referenced */
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void on_reply(struct alipay_reply *r, void *arg)
{
    struct got *g = arg;
    if (g->calls++ == 0) {
        g->reply = *r;
        g->reply.code = dup_or_null(r->code);
        g->reply.msg = dup_or_null(r->msg);
        g->reply.sub_code = dup_or_null(r->sub_code);
        g->reply.sub_msg = dup_or_null(r->sub_msg);
        g->reply.node = r->node ? json_object_get(r->node) : NULL;
    }
    if (++g->w->done >= g->w->want)
        event_base_loopbreak(base);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    struct waiter *w = arg;
    w->timed_out = 1;
    event_base_loopbreak(base);
}

/* Runs the loop until w->want callbacks came or the watchdog fires, then a
 * moment longer so that a second callback for any call would show. */
static void run_loop(struct waiter *w, int watchdog_s)
{
    struct timeval tv = {watchdog_s, 0}, linger = {0, 200000};
    struct event *dog = evtimer_new(base, on_watchdog, w);
    ck_assert_ptr_nonnull(dog);
    evtimer_add(dog, &tv);
    if (w->done < w->want)
        event_base_dispatch(base);
    ck_assert_msg(!w->timed_out, "watchdog: only %d of %d callbacks in %d s", w->done, w->want,
                  watchdog_s);
    event_base_loopexit(base, &linger);
    event_base_dispatch(base);
    event_free(dog);
}

/* One call, waited for; the result is in g (free with got_free). */
static void call_one(struct alipay_client *c, const char *method, const char *biz, struct got *g)
{
    char err[256];
    struct waiter w = {0, 1, 0};
    memset(g, 0, sizeof(*g));
    g->w = &w;
    ck_assert_msg(alipay_client_call(c, method, biz, NULL, NULL, on_reply, g, err, sizeof(err)) ==
                      0,
                  "call: %s", err);
    ck_assert_int_eq(g->calls, 0); /* never from inside the call */
    run_loop(&w, WATCHDOG_S);
    ck_assert_int_eq(g->calls, 1);
    g->w = NULL;
}

static void got_free(struct got *g)
{
    alipay_reply_free(&g->reply);
}

static void expect_outcome(const struct got *g, enum alipay_outcome want)
{
    ck_assert_msg(g->reply.outcome == want, "outcome %s, want %s (%s)",
                  alipay_outcome_name(g->reply.outcome), alipay_outcome_name(want),
                  g->reply.detail);
}

/* ---------------------------------------------------------- biz_content */

/* card.open's biz_content per the seed, with Chinese in the front text and
 * the channel; malloc'd. */
static char *open_biz(const char *serial, const char *template_id)
{
    static const char fmt[] =
        "{\"out_serial_no\":\"%s\",\"card_template_id\":\"%s\","
        "\"card_user_info\":{\"user_uni_id\":\"" USER "\",\"user_uni_id_type\":\"UID\"},"
        "\"card_ext_info\":{\"external_card_no\":\"EXT-%s\",\"open_date\":\"2024-02-20 21:20:46\","
        "\"valid_date\":\"2030-02-20 21:20:46\",\"level\":\"VIP1\",\"point\":\"88\","
        "\"balance\":\"124.89\",\"front_text_list\":[{\"label\":\"" LABEL "\",\"value\":\"" VALUE
        "\"}]},"
        "\"open_card_channel\":\"" CHANNEL "\",\"open_card_channel_id\":\"2088123123123123\"}";
    size_t n = sizeof(fmt) + 2 * strlen(serial) + strlen(template_id);
    char *b = malloc(n);
    ck_assert_ptr_nonnull(b);
    snprintf(b, n, fmt, serial, template_id, serial);
    return b;
}

static const char *str_at(json_object *o, const char *key)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* Opens a card through the client; returns its biz_card_no (malloc'd). */
static char *open_ok(struct alipay_client *c, const char *serial)
{
    struct got g;
    struct alipay_card_open_result res;
    char *biz = open_biz(serial, TEMPLATE);
    call_one(c, ALIPAY_CARD_OPEN, biz, &g);
    free(biz);
    expect_outcome(&g, ALIPAY_OK);
    ck_assert_int_eq(g.reply.verified, 1);
    ck_assert_str_eq(g.reply.code, "10000");
    ck_assert_int_eq(alipay_card_open_read(&g.reply, &res), 0);
    /* The simulator's card numbers: 20 digits. */
    ck_assert_uint_eq(strlen(res.card.biz_card_no), 20);
    ck_assert_uint_eq(strspn(res.card.biz_card_no, "0123456789"), 20);
    ck_assert_pstr_eq(res.open_card_channel, CHANNEL);
    ck_assert_pstr_eq(res.open_card_channel_id, "2088123123123123");
    char *no = strdup(res.card.biz_card_no);
    got_free(&g);
    return no;
}

/* card_info must carry the front text exactly as it was sent. */
static void expect_front_text(json_object *card_info)
{
    json_object *list, *row;
    ck_assert(json_object_object_get_ex(card_info, "front_text_list", &list));
    ck_assert_uint_eq(json_object_array_length(list), 1);
    row = json_object_array_get_idx(list, 0);
    ck_assert_pstr_eq(str_at(row, "label"), LABEL);
    ck_assert_pstr_eq(str_at(row, "value"), VALUE);
}

/* Queries target/type and checks the answer is card `no`, Chinese intact. */
static void query_ok(struct alipay_client *c, const char *target, const char *type, const char *no)
{
    struct got g;
    struct alipay_card_query_result res;
    char schema[128];
    char *biz = alipay_card_query_biz(target, type, NULL);
    ck_assert_ptr_nonnull(biz);
    call_one(c, ALIPAY_CARD_QUERY, biz, &g);
    free(biz);
    expect_outcome(&g, ALIPAY_OK);
    ck_assert_int_eq(g.reply.verified, 1);
    ck_assert_int_eq(alipay_card_query_read(&g.reply, &res), 0);
    ck_assert_str_eq(res.card.biz_card_no, no);
    ck_assert_pstr_eq(res.card.level, "VIP1");
    ck_assert_pstr_eq(res.card.balance, "124.89");
    expect_front_text(res.card.json);
    snprintf(schema, sizeof(schema), SCHEMA_PREFIX "%s", no);
    ck_assert_pstr_eq(res.schema_url, schema);
    got_free(&g);
}

/* The simulator's record of a card (GET /_sim/cards/{no}); caller puts. */
static json_object *sim_card(const char *no)
{
    char url[256];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/cards/%s", sim.control, no);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    json_object *o = json_tokener_parse(r.body);
    ck_assert_msg(o != NULL, "not JSON: %s", r.body);
    ts_http_free(&r);
    return o;
}

/* ----------------------------------------------------------------- tests */

START_TEST(open_then_query)
{
    struct alipay_client *c = client();
    char *no = open_ok(c, "IT-open-1");
    query_ok(c, no, "BIZ_CARD", no);

    json_object *card = sim_card(no);
    ck_assert_pstr_eq(str_at(card, "out_serial_no"), "IT-open-1");
    const char *qr = str_at(card, "qr_code");
    const char *bar = str_at(card, "bar_code");
    ck_assert_ptr_nonnull(qr);
    ck_assert_ptr_nonnull(bar);
    query_ok(c, qr, "D_QR_CODE", no);
    query_ok(c, bar, "D_BAR_CODE", no);
    json_object_put(card);

    /* Alipay dedups on out_serial_no: the same card again. */
    char *again = open_ok(c, "IT-open-1");
    ck_assert_str_eq(again, no);
    ck_assert_int_eq(ts_sim_calls(&sim, NULL), 5);
    free(again);
    free(no);
    alipay_client_free(c);
}
END_TEST

START_TEST(rsa_sha1_end_to_end)
{
    struct alipay_client *c = client_at(sim.url, app_key_sha1_form, ALIPAY_SIGN_RSA, GENEROUS_MS);
    char *no = open_ok(c, "IT-sha1-1");
    query_ok(c, no, "BIZ_CARD", no);
    free(no);
    alipay_client_free(c);
}
END_TEST

/* One fault mode (service/alipay-sim/README.md "Faults") and the class the
 * mapping table gives its answer. */
struct fault_case {
    const char *mode;
    long delay_ms;
    long client_timeout_ms;
    enum alipay_outcome outcome;
    int verified;
    const char *code, *sub_code; /* NULL: none may be exposed */
    long http_status;
};

static const struct fault_case fault_cases[] = {
    {"code_20000", 0, GENEROUS_MS, ALIPAY_UNAVAILABLE, 1, "20000", "isp.unknow-error", 200},
    {"code_20001", 0, GENEROUS_MS, ALIPAY_AUTH_FAILED, 1, "20001", "aop.invalid-auth-token", 200},
    {"error_response", 0, GENEROUS_MS, ALIPAY_REFUSED, 0, "40002", "isv.invalid-app-id", 200},
    {"bad_signature", 0, GENEROUS_MS, ALIPAY_BAD_SIGNATURE, 0, NULL, NULL, 200},
    {"unsigned_success", 0, GENEROUS_MS, ALIPAY_BAD_SIGNATURE, 0, NULL, NULL, 200},
    {"http_500", 0, GENEROUS_MS, ALIPAY_UNAVAILABLE, 0, NULL, NULL, 500},
    {"drop", 0, GENEROUS_MS, ALIPAY_UNAVAILABLE, 0, NULL, NULL, 0},
    {"delay", 3000, 500, ALIPAY_TIMEOUT, 0, NULL, NULL, 0},
    {"sign_first", 0, GENEROUS_MS, ALIPAY_OK, 1, "10000", NULL, 200},
};

START_TEST(fault_modes)
{
    const struct fault_case *fc = &fault_cases[_i];
    char serial[64], rule[256];
    snprintf(serial, sizeof(serial), "IT-fault-%s", fc->mode);
    snprintf(rule, sizeof(rule),
             "{\"mode\":\"%s\",\"method\":\"" ALIPAY_CARD_OPEN "\",\"out_serial_no\":\"%s\","
             "\"count\":1,\"delay_ms\":%ld}",
             fc->mode, serial, fc->delay_ms);
    ck_assert_int_eq(ts_sim_fault(&sim, rule), 0);

    struct alipay_client *c = client_at(sim.url, app_key, ALIPAY_SIGN_RSA2, fc->client_timeout_ms);
    struct got g;
    char *biz = open_biz(serial, TEMPLATE);
    call_one(c, ALIPAY_CARD_OPEN, biz, &g);
    expect_outcome(&g, fc->outcome);
    ck_assert_int_eq(g.reply.verified, fc->verified);
    ck_assert_pstr_eq(g.reply.code, fc->code);
    ck_assert_pstr_eq(g.reply.sub_code, fc->sub_code);
    ck_assert_int_eq(g.reply.http_status, fc->http_status);
    if (!fc->code) /* content not trusted is never handed out */
        ck_assert_ptr_null(g.reply.node);
    if (fc->outcome == ALIPAY_OK) {
        struct alipay_card_open_result res;
        ck_assert_int_eq(alipay_card_open_read(&g.reply, &res), 0);
    }
    got_free(&g);
    ck_assert_int_eq(ts_sim_calls(&sim, serial), 1);

    /* The rule was used up by that call: a retry is answered normally. */
    char *no = open_ok(c, serial);
    free(no);
    free(biz);
    alipay_client_free(c);
}
END_TEST

START_TEST(wrong_app_key_refused)
{
    struct alipay_client *c = client_at(sim.url, wrong_app_key, ALIPAY_SIGN_RSA2, GENEROUS_MS);
    struct got g;
    char *biz = open_biz("IT-wrong-key", TEMPLATE);
    call_one(c, ALIPAY_CARD_OPEN, biz, &g);
    expect_outcome(&g, ALIPAY_REFUSED);
    ck_assert_int_eq(g.reply.verified, 0);
    ck_assert_pstr_eq(g.reply.code, "40002");
    ck_assert_pstr_eq(g.reply.sub_code, "isv.invalid-signature");
    got_free(&g);
    free(biz);
    alipay_client_free(c);
}
END_TEST

START_TEST(unknown_template_rejected)
{
    struct alipay_client *c = client();
    struct got g;
    char *biz = open_biz("IT-template", "20990101000000000000000000000001");
    call_one(c, ALIPAY_CARD_OPEN, biz, &g);
    expect_outcome(&g, ALIPAY_REJECTED);
    ck_assert_int_eq(g.reply.verified, 1);
    ck_assert_pstr_eq(g.reply.code, "40004");
    ck_assert_pstr_eq(g.reply.sub_code, "TEMPLATE_NOT_EXIT");
    ck_assert_int_eq(alipay_card_not_found(&g.reply), 0);
    got_free(&g);
    free(biz);
    alipay_client_free(c);
}
END_TEST

START_TEST(unknown_card_not_found)
{
    struct alipay_client *c = client();
    struct got g;
    char *biz = alipay_card_query_biz("99999999999999999999", "BIZ_CARD", NULL);
    call_one(c, ALIPAY_CARD_QUERY, biz, &g);
    expect_outcome(&g, ALIPAY_REJECTED);
    ck_assert_int_eq(g.reply.verified, 1);
    ck_assert_pstr_eq(g.reply.code, "40004");
    ck_assert_pstr_eq(g.reply.sub_code, "CARD_NOT_EXIT");
    ck_assert_pstr_eq(g.reply.sub_msg, "会员卡不存在");
    ck_assert_int_eq(alipay_card_not_found(&g.reply), 1);
    got_free(&g);
    free(biz);
    alipay_client_free(c);
}
END_TEST

START_TEST(closed_port_unavailable)
{
    char url[128];
    /* Free a moment ago and nobody listens on it: connection refused. */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/gateway.do", ts_free_port());
    struct alipay_client *c = client_at(url, app_key, ALIPAY_SIGN_RSA2, GENEROUS_MS);
    struct got g;
    char *biz = open_biz("IT-closed", TEMPLATE);
    call_one(c, ALIPAY_CARD_OPEN, biz, &g);
    expect_outcome(&g, ALIPAY_UNAVAILABLE);
    ck_assert_int_eq(g.reply.http_status, 0);
    ck_assert_int_eq(g.reply.verified, 0);
    ck_assert_ptr_null(g.reply.code);
    got_free(&g);
    free(biz);
    alipay_client_free(c);
}
END_TEST

#define CONCURRENT 1000

START_TEST(thousand_concurrent_calls)
{
    struct alipay_client *c = client();
    char err[256];
    /* The card the queries look at; it counts as one call sent. */
    char *no = open_ok(c, "IT-many-base");
    long sent = 1;

    struct got *g = calloc(CONCURRENT, sizeof(*g));
    ck_assert_ptr_nonnull(g);
    struct waiter w = {0, CONCURRENT, 0};
    char *query = alipay_card_query_biz(no, "BIZ_CARD", NULL);
    for (int i = 0; i < CONCURRENT; i++) {
        char serial[32];
        char *biz = NULL;
        const char *method = ALIPAY_CARD_QUERY;
        if (i % 2 == 0) {
            snprintf(serial, sizeof(serial), "IT-many-%04d", i);
            biz = open_biz(serial, TEMPLATE);
            method = ALIPAY_CARD_OPEN;
        }
        g[i].w = &w;
        ck_assert_msg(alipay_client_call(c, method, biz ? biz : query, NULL, NULL, on_reply, &g[i],
                                         err, sizeof(err)) == 0,
                      "call %d: %s", i, err);
        sent++;
        free(biz);
    }
    run_loop(&w, 2 * WATCHDOG_S);

    int opened = 0;
    for (int i = 0; i < CONCURRENT; i++) {
        ck_assert_msg(g[i].calls == 1, "call %d: callback ran %d times", i, g[i].calls);
        ck_assert_msg(g[i].reply.outcome == ALIPAY_OK, "call %d: %s (%s)", i,
                      alipay_outcome_name(g[i].reply.outcome), g[i].reply.detail);
        ck_assert_int_eq(g[i].reply.verified, 1);
        if (i % 2 == 0) {
            struct alipay_card_open_result res;
            ck_assert_int_eq(alipay_card_open_read(&g[i].reply, &res), 0);
            ck_assert_str_ne(res.card.biz_card_no, no);
            opened++;
        } else {
            struct alipay_card_query_result res;
            ck_assert_int_eq(alipay_card_query_read(&g[i].reply, &res), 0);
            ck_assert_str_eq(res.card.biz_card_no, no);
        }
        got_free(&g[i]);
    }
    ck_assert_int_eq(opened, CONCURRENT / 2);
    ck_assert_uint_eq(alipay_http_in_flight(http), 0);
    ck_assert_int_eq(ts_sim_calls(&sim, NULL), sent);
    free(query);
    free(g);
    free(no);
    alipay_client_free(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alipay_client");
    TCase *t = tcase_create("client");
    tcase_set_timeout(t, 180);
    tcase_add_unchecked_fixture(t, sim_up, sim_down);
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, open_then_query);
    tcase_add_test(t, rsa_sha1_end_to_end);
    tcase_add_loop_test(t, fault_modes, 0, (int)(sizeof(fault_cases) / sizeof(*fault_cases)));
    tcase_add_test(t, wrong_app_key_refused);
    tcase_add_test(t, unknown_template_rejected);
    tcase_add_test(t, unknown_card_not_found);
    tcase_add_test(t, closed_port_unavailable);
    suite_add_tcase(s, t);

    TCase *m = tcase_create("concurrency");
    tcase_set_timeout(m, 280);
    tcase_add_unchecked_fixture(m, sim_up, sim_down);
    tcase_add_checked_fixture(m, setup, teardown);
    tcase_add_test(m, thousand_concurrent_calls);
    suite_add_tcase(s, m);

    return ts_run_suite(s);
}
