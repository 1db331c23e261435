/* Exactly-once card opening against the real binaries and a real
 * PostgreSQL: concurrent duplicates, a killed holder, the database going
 * away and coming back, two instances racing, and the SIGTERM drain. */
#include <check.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

static const char *const post_headers[] = {TS_AUTH, TS_JSON, NULL};
static const char *const get_headers[] = {TS_AUTH, NULL};

static char *open_body(const char *serial)
{
    char *b = malloc(1024);
    snprintf(b, 1024,
             "{\"out_serial_no\":\"%s\",\"card_template_id\":\"20170308000000000058101000300045\","
             "\"user_id\":\"2088302463082075\",\"auth_token\":\"composeB_token\","
             "\"card\":{\"external_card_no\":\"EXT-%s\",\"open_date\":\"2024-02-20 21:20:46\","
             "\"valid_date\":\"2030-02-20 21:20:46\",\"level\":\"VIP1\",\"point\":\"88\","
             "\"front_text_list\":[{\"label\":\"专业\",\"value\":\"金融贸易\"}]},"
             "\"member\":{\"name\":\"Lee\",\"cell\":\"13000000000\"}}",
             serial, serial);
    return b;
}

static char *biz_card_no_of(const struct ts_http *r)
{
    json_object *o = json_tokener_parse(r->body), *v;
    char *s = NULL;
    if (o && json_object_object_get_ex(o, "biz_card_no", &v))
        s = strdup(json_object_get_string(v));
    json_object_put(o);
    return s;
}

static char *error_code_of(const struct ts_http *r)
{
    json_object *o = json_tokener_parse(r->body), *e, *c;
    char *s = NULL;
    if (o && json_object_object_get_ex(o, "error", &e) && json_object_object_get_ex(e, "code", &c))
        s = strdup(json_object_get_string(c));
    json_object_put(o);
    return s;
}

static void post_open(const struct ts_cardgate *cg, const char *serial, struct ts_http *r)
{
    char url[128];
    char *body = open_body(serial);
    snprintf(url, sizeof(url), "%s/v1/cards", cg->url);
    ts_http_call("POST", url, post_headers, body, r);
    free(body);
}

static long sql_long(const char *db, const char *fmt, const char *arg)
{
    char sql[512];
    snprintf(sql, sizeof(sql), fmt, arg);
    return ts_pg_long(db, sql);
}

static void fault(const struct ts_sim *sim, const char *mode, const char *serial, int delay_ms)
{
    char json[256];
    snprintf(json, sizeof(json), "{\"mode\":\"%s\",\"out_serial_no\":\"%s\",\"delay_ms\":%d}", mode,
             serial, delay_ms);
    ck_assert_int_eq(ts_sim_fault(sim, json), 0);
}

static char *fresh_db(void)
{
    char *db = ts_pg_create_db();
    ck_assert_msg(db != NULL, "CARDGATE_TEST_PG must name a PostgreSQL cluster (see tests/run.sh)");
    ck_assert_int_eq(ts_cardgate_migrate(db), 0);
    return db;
}

/* 50 concurrent POSTs with one out_serial_no while the gateway holds its
 * answer: one gateway call, one 201, the rest 409 with Retry-After; then
 * every retry replays the same card. */
START_TEST(test_concurrent_duplicates_one_gateway_call)
{
    struct ts_stack st;
    char err[512];
    const char *env[] = {"CARDGATE_ALIPAY_TIMEOUT_MS=20000", NULL};
    ck_assert_msg(ts_stack_up(&st, NULL, env, err, sizeof(err)) == 0, "%s", err);
    fault(&st.sim, "delay", "dup-50", 1500);

    enum { N = 50 };
    struct ts_http out[N];
    const char *urls[N];
    char url[128];
    snprintf(url, sizeof(url), "%s/v1/cards", st.cg.url);
    for (int i = 0; i < N; i++)
        urls[i] = url;
    char *body = open_body("dup-50");
    ts_http_parallel(N, "POST", urls, post_headers, body, out);

    int created = 0, in_progress = 0;
    char *card = NULL;
    for (int i = 0; i < N; i++) {
        if (out[i].status == 201) {
            created++;
            card = biz_card_no_of(&out[i]);
        } else {
            ck_assert_int_eq(out[i].status, 409);
            char *code = error_code_of(&out[i]);
            ck_assert_str_eq(code, "REQUEST_IN_PROGRESS");
            char *retry = ts_http_header(&out[i], "Retry-After");
            ck_assert_ptr_nonnull(retry);
            free(retry);
            free(code);
            in_progress++;
        }
        ts_http_free(&out[i]);
    }
    ck_assert_int_eq(created, 1);
    ck_assert_int_eq(in_progress, N - 1);
    ck_assert_int_eq(ts_sim_calls(&st.sim, "dup-50"), 1);

    /* Everyone who retries now gets the stored card. */
    for (int i = 0; i < N; i++)
        urls[i] = url;
    ts_http_parallel(10, "POST", urls, post_headers, body, out);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(out[i].status, 201);
        char *replayed = ts_http_header(&out[i], "Idempotent-Replayed");
        ck_assert_ptr_nonnull(replayed);
        ck_assert_str_eq(replayed, "true");
        char *again = biz_card_no_of(&out[i]);
        ck_assert_str_eq(again, card);
        free(again);
        free(replayed);
        ts_http_free(&out[i]);
    }
    ck_assert_int_eq(ts_sim_calls(&st.sim, "dup-50"), 1);
    ck_assert_int_eq(
        sql_long(st.db, "SELECT count(*) FROM cards WHERE out_serial_no = '%s'", "dup-50"), 1);
    free(card);
    free(body);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

struct bg_post {
    const struct ts_cardgate *cg;
    const char *serial;
    struct ts_http r;
    atomic_int done; /* set once r holds the answer */
};

static void *post_in_background(void *arg)
{
    struct bg_post *p = arg;
    post_open(p->cg, p->serial, &p->r);
    atomic_store(&p->done, 1);
    return NULL;
}

static int wait_for_calls(const struct ts_sim *sim, const char *serial, long n, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (ts_sim_calls(sim, serial) >= n)
            return 0;
        usleep(20000);
    }
    return -1;
}

/* kill -9 of cardgate while the gateway holds the call: after a restart, a
 * retry takes the dead holder's lock over once it is stale, and the ledger
 * ends with one card and a succeeded row. */
START_TEST(test_killed_holder_taken_over)
{
    struct ts_sim sim;
    struct ts_cardgate cg;
    char *db = fresh_db();
    ck_assert_int_eq(ts_sim_start(&sim, NULL), 0);
    ck_assert_int_eq(ts_cardgate_start(&cg, db, &sim, NULL), 0);
    fault(&sim, "delay", "killed-1", 60000);

    struct bg_post bg = {.cg = &cg, .serial = "killed-1"};
    pthread_t th;
    pthread_create(&th, NULL, post_in_background, &bg);
    ck_assert_int_eq(wait_for_calls(&sim, "killed-1", 1, 15000), 0);
    kill(cg.pid, SIGKILL);
    waitpid(cg.pid, NULL, 0);
    pthread_join(th, NULL);
    ck_assert_int_eq(bg.r.status, 0); /* the caller saw the connection die */
    ts_http_free(&bg.r);
    ck_assert_int_eq(
        sql_long(db,
                 "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND state = "
                 "'pending'",
                 "killed-1"),
        1);

    ck_assert_int_eq(ts_sim_clear_faults(&sim), 0);
    ck_assert_int_eq(ts_cardgate_start(&cg, db, &sim, NULL), 0);
    struct ts_http r;
    int status = 0, saw_in_progress = 0;
    /* The lock is fresh for the gateway timeout (2 s) plus the margin (1 s). */
    for (int i = 0; i < 100 && status != 201; i++) {
        post_open(&cg, "killed-1", &r);
        status = (int)r.status;
        if (status == 409)
            saw_in_progress = 1;
        else
            ck_assert_int_eq(status, 201);
        if (status != 201) {
            ts_http_free(&r);
            usleep(200000);
        }
    }
    ck_assert_int_eq(status, 201);
    ck_assert_int_eq(saw_in_progress, 1);
    char *card = biz_card_no_of(&r);
    ts_http_free(&r);
    /* Two calls reached the gateway with the same out_serial_no; Alipay
     * dedups on it, so there is one card. */
    ck_assert_int_eq(ts_sim_calls(&sim, "killed-1"), 2);
    ck_assert_int_eq(
        sql_long(db, "SELECT count(*) FROM cards WHERE out_serial_no = '%s'", "killed-1"), 1);
    ck_assert_int_eq(
        sql_long(db,
                 "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND state = "
                 "'succeeded' AND attempts = 2",
                 "killed-1"),
        1);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM cards WHERE biz_card_no = '%s'", card);
    ck_assert_int_eq(ts_pg_long(db, sql), 1);
    free(card);
    ck_assert_int_eq(ts_cardgate_stop(&cg), 0);
    ts_sim_stop(&sim);
    free(db);
}
END_TEST

static long status_of(const char *method, const char *url, const char *const *headers,
                      const char *body, char **code)
{
    struct ts_http r;
    ts_http_call(method, url, headers, body, &r);
    long s = r.status;
    if (code)
        *code = error_code_of(&r);
    ts_http_free(&r);
    return s;
}

/* The database stops: every endpoint that needs it answers 503
 * DATABASE_UNAVAILABLE and nothing reaches the gateway; /readyz is 503. It
 * comes back: cardgate recovers by itself. */
START_TEST(test_database_down_and_back)
{
    struct ts_pg pg = {0};
    struct ts_sim sim;
    struct ts_cardgate cg;
    ck_assert_int_eq(ts_pg_private_start(&pg), 0);
    char db[512];
    snprintf(db, sizeof(db), "%s", pg.conninfo);
    ck_assert_int_eq(ts_cardgate_migrate(db), 0);
    ck_assert_int_eq(ts_sim_start(&sim, NULL), 0);
    ck_assert_int_eq(ts_cardgate_start(&cg, db, &sim, NULL), 0);
    char url[160], ready[160], list[200];
    snprintf(url, sizeof(url), "%s/v1/cards", cg.url);
    snprintf(ready, sizeof(ready), "%s/readyz", cg.url);
    snprintf(list, sizeof(list), "%s/v1/cards?user_id=2088302463082075", cg.url);
    struct ts_http r;
    post_open(&cg, "before-down", &r);
    ck_assert_int_eq(r.status, 201);
    ts_http_free(&r);
    ck_assert_int_eq(status_of("GET", ready, NULL, NULL, NULL), 200);

    ck_assert_int_eq(ts_pg_private_stop(&pg), 0);
    char *code = NULL;
    char *body = open_body("while-down");
    ck_assert_int_eq(status_of("POST", url, post_headers, body, &code), 503);
    ck_assert_str_eq(code, "DATABASE_UNAVAILABLE");
    free(code);
    ck_assert_int_eq(status_of("GET", list, get_headers, NULL, &code), 503);
    ck_assert_str_eq(code, "DATABASE_UNAVAILABLE");
    free(code);
    ck_assert_int_eq(status_of("GET", ready, NULL, NULL, NULL), 503);
    /* The reason only: libpq's text (host, port, user) is for the log. */
    ck_assert_int_eq(ts_http_call("GET", ready, NULL, NULL, &r), 0);
    ts_assert_error(&r, 503, "DATABASE_UNAVAILABLE", NULL);
    ts_assert_field(&r, "error.message", "the database does not answer");
    char port[16];
    snprintf(port, sizeof(port), "%d", pg.port);
    ck_assert_msg(strstr(r.body, port) == NULL, "readyz shows the database's port: %s", r.body);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_calls(&sim, "while-down"), 0);

    ck_assert_int_eq(ts_pg_private_restart(&pg), 0);
    long s = 0;
    for (int i = 0; i < 150 && s != 200; i++) {
        s = status_of("GET", ready, NULL, NULL, NULL);
        if (s != 200)
            usleep(100000);
    }
    ck_assert_int_eq(s, 200);
    ck_assert_int_eq(status_of("POST", url, post_headers, body, NULL), 201);
    ck_assert_int_eq(ts_sim_calls(&sim, "while-down"), 1);
    free(body);
    ck_assert_int_eq(ts_cardgate_stop(&cg), 0);
    ts_sim_stop(&sim);
    ts_pg_private_destroy(&pg);
}
END_TEST

/* The database goes away while the gateway holds the call: the caller still
 * gets the card Alipay opened (201), and once the database is back the card
 * and the succeeded ledger row are written without anyone retrying. */
START_TEST(test_opened_card_recorded_after_database_returns)
{
    struct ts_pg pg = {0};
    struct ts_sim sim;
    struct ts_cardgate cg;
    ck_assert_int_eq(ts_pg_private_start(&pg), 0);
    char db[512];
    snprintf(db, sizeof(db), "%s", pg.conninfo);
    ck_assert_int_eq(ts_cardgate_migrate(db), 0);
    ck_assert_int_eq(ts_sim_start(&sim, NULL), 0);
    const char *env[] = {"CARDGATE_ALIPAY_TIMEOUT_MS=20000", NULL};
    ck_assert_int_eq(ts_cardgate_start(&cg, db, &sim, env), 0);
    fault(&sim, "delay", "late-db", 2000);
    struct bg_post bg = {.cg = &cg, .serial = "late-db"};
    pthread_t th;
    pthread_create(&th, NULL, post_in_background, &bg);
    ck_assert_int_eq(wait_for_calls(&sim, "late-db", 1, 15000), 0);
    ck_assert_int_eq(ts_pg_private_stop(&pg), 0);
    pthread_join(th, NULL);
    ck_assert_int_eq(bg.r.status, 201);
    char *card = biz_card_no_of(&bg.r);
    ck_assert_ptr_nonnull(card);
    ts_http_free(&bg.r);
    /* Meanwhile /metrics shows the outcome waiting, and no connection up. */
    ck_assert_int_eq(ts_metric(&cg, "cardgate_outcomes_unrecorded"), 1);
    ck_assert_int_eq(ts_metric(&cg, "cardgate_db_connections_up"), 0);

    ck_assert_int_eq(ts_pg_private_restart(&pg), 0);
    long n = 0;
    for (int i = 0; i < 200 && n != 1; i++) {
        n = sql_long(db, "SELECT count(*) FROM cards WHERE out_serial_no = '%s'", "late-db");
        if (n != 1)
            usleep(100000);
    }
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(sql_long(db,
                              "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND "
                              "state = 'succeeded'",
                              "late-db"),
                     1);
    struct ts_http r;
    post_open(&cg, "late-db", &r);
    ck_assert_int_eq(r.status, 201);
    char *again = biz_card_no_of(&r);
    ck_assert_str_eq(again, card);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_calls(&sim, "late-db"), 1);
    ck_assert_int_eq(ts_metric(&cg, "cardgate_outcomes_unrecorded"), 0);
    free(again);
    free(card);
    ck_assert_int_eq(ts_cardgate_stop(&cg), 0);
    ts_sim_stop(&sim);
    ts_pg_private_destroy(&pg);
}
END_TEST

/* Two cardgate processes on one database race the same out_serial_no:
 * one gateway call. */
START_TEST(test_two_instances_one_gateway_call)
{
    struct ts_sim sim;
    struct ts_cardgate a, b;
    char *db = fresh_db();
    ck_assert_int_eq(ts_sim_start(&sim, NULL), 0);
    const char *env[] = {"CARDGATE_ALIPAY_TIMEOUT_MS=20000", NULL};
    ck_assert_int_eq(ts_cardgate_start(&a, db, &sim, env), 0);
    ck_assert_int_eq(ts_cardgate_start(&b, db, &sim, env), 0);
    fault(&sim, "delay", "race-2", 1500);
    enum { N = 20 };
    char ua[128], ub[128];
    snprintf(ua, sizeof(ua), "%s/v1/cards", a.url);
    snprintf(ub, sizeof(ub), "%s/v1/cards", b.url);
    const char *urls[N];
    for (int i = 0; i < N; i++)
        urls[i] = i % 2 ? ua : ub;
    struct ts_http out[N];
    char *body = open_body("race-2");
    ts_http_parallel(N, "POST", urls, post_headers, body, out);
    int created = 0;
    for (int i = 0; i < N; i++) {
        ck_assert_msg(out[i].status == 201 || out[i].status == 409, "status %ld", out[i].status);
        created += out[i].status == 201;
        ts_http_free(&out[i]);
    }
    ck_assert_int_eq(created, 1);
    ck_assert_int_eq(ts_sim_calls(&sim, "race-2"), 1);
    /* Both instances replay the same stored card. */
    struct ts_http ra, rb;
    ts_http_call("POST", ua, post_headers, body, &ra);
    ts_http_call("POST", ub, post_headers, body, &rb);
    ck_assert_int_eq(ra.status, 201);
    ck_assert_int_eq(rb.status, 201);
    ck_assert_str_eq(ra.body, rb.body);
    ts_http_free(&ra);
    ts_http_free(&rb);
    free(body);
    ck_assert_int_eq(ts_cardgate_stop(&a), 0);
    ck_assert_int_eq(ts_cardgate_stop(&b), 0);
    ts_sim_stop(&sim);
    free(db);
}
END_TEST

/* CARDGATE_REQUEST_HASH_SECRET keys "the same request": an instance with
 * the same secret replays, one with another secret cannot match it. */
START_TEST(test_request_hash_secret)
{
    struct ts_sim sim;
    struct ts_cardgate cg;
    char *db = fresh_db();
    ck_assert_int_eq(ts_sim_start(&sim, NULL), 0);
    const char *first[] = {"CARDGATE_REQUEST_HASH_SECRET=first-secret-0123456789", NULL};
    const char *other[] = {"CARDGATE_REQUEST_HASH_SECRET=other-secret-0123456789", NULL};
    struct ts_http r;
    ck_assert_int_eq(ts_cardgate_start(&cg, db, &sim, first), 0);
    post_open(&cg, "secret-1", &r);
    ck_assert_int_eq(r.status, 201);
    ts_http_free(&r);
    ck_assert_int_eq(ts_cardgate_stop(&cg), 0);

    ck_assert_int_eq(ts_cardgate_start(&cg, db, &sim, other), 0);
    post_open(&cg, "secret-1", &r);
    ck_assert_int_eq(r.status, 422);
    ts_http_free(&r);
    ck_assert_int_eq(ts_cardgate_stop(&cg), 0);

    ck_assert_int_eq(ts_cardgate_start(&cg, db, &sim, first), 0);
    post_open(&cg, "secret-1", &r);
    ck_assert_int_eq(r.status, 201);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_calls(&sim, "secret-1"), 1);
    ck_assert_int_eq(ts_cardgate_stop(&cg), 0);
    ts_sim_stop(&sim);
    free(db);
}
END_TEST

/* SIGTERM while a call is in flight: the call completes, then exit 0. */
START_TEST(test_sigterm_drains_in_flight)
{
    struct ts_stack st;
    char err[512];
    const char *env[] = {"CARDGATE_ALIPAY_TIMEOUT_MS=20000", NULL};
    ck_assert_msg(ts_stack_up(&st, NULL, env, err, sizeof(err)) == 0, "%s", err);
    fault(&st.sim, "delay", "drain-1", 3000);
    struct bg_post bg = {.cg = &st.cg, .serial = "drain-1"};
    pthread_t th;
    pthread_create(&th, NULL, post_in_background, &bg);
    ck_assert_int_eq(wait_for_calls(&st.sim, "drain-1", 1, 15000), 0);
    pid_t pid = st.cg.pid;
    kill(pid, SIGTERM);
    /* New connections are refused while it drains (the call is still held). */
    int refused = 0;
    for (int i = 0; i < 250 && !refused; i++) {
        refused = ts_wait_port(st.cg.port, 1) < 0;
        if (!refused)
            usleep(20000);
    }
    ck_assert_msg(refused && !atomic_load(&bg.done),
                  "cardgate still accepted connections while the held call was draining");
    pthread_join(th, NULL);
    ck_assert_int_eq(bg.r.status, 201);
    /* Keep-alive callers are told to go elsewhere. */
    char *conn = ts_http_header(&bg.r, "Connection");
    ck_assert_ptr_nonnull(conn);
    ck_assert_str_eq(conn, "close");
    free(conn);
    ts_http_free(&bg.r);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    st.cg.pid = 0;
    ck_assert_int_eq(
        sql_long(st.db,
                 "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND state = "
                 "'succeeded'",
                 "drain-1"),
        1);
    ts_stack_down(&st);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("idempotency");
    TCase *tc = tcase_create("exactly-once");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_concurrent_duplicates_one_gateway_call);
    tcase_add_test(tc, test_killed_holder_taken_over);
    tcase_add_test(tc, test_database_down_and_back);
    tcase_add_test(tc, test_opened_card_recorded_after_database_returns);
    tcase_add_test(tc, test_two_instances_one_gateway_call);
    tcase_add_test(tc, test_sigterm_drains_in_flight);
    tcase_add_test(tc, test_request_hash_secret);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
