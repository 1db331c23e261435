/* The sweeper: a request whose cardgate died between sending it and
 * recording its outcome is finished by the next cardgate on its own —
 * nobody retries — with one card at Alipay, one ledger row and one cards
 * row; what the ledger kept of it in the meantime could not be read; and a
 * request that cannot be made again stays in stale_requests, counted. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>
#include <libpq-fe.h>

#include "support.h"

/* Looks often, so the test does not wait; the lock of a call is the 2 s
 * gateway timeout plus the 1 s margin (ts_cardgate_start). */
static const char *const env[] = {"CARDGATE_SWEEP_INTERVAL_MS=200", NULL};
/* The same, under another key: what it finds sealed does not open. */
static const char *const other_key_env[] = {
    "CARDGATE_SWEEP_INTERVAL_MS=200", "CARDGATE_REQUEST_HASH_SECRET=not-the-key-it-was-sealed-with",
    NULL};

struct call {
    const char *method;
    char url[256];
    char *body;
};

/* A caller that hangs up with the dead cardgate: its answer is ignored. */
static void *send_call(void *arg)
{
    struct call *c = arg;
    const char *headers[] = {TS_AUTH, TS_JSON, NULL};
    struct ts_http r;
    ts_http_call(c->method, c->url, headers, c->body, &r);
    ts_http_free(&r);
    return NULL;
}

static long sql(const char *db, const char *fmt, const char *serial)
{
    char q[1024];
    snprintf(q, sizeof(q), fmt, serial);
    return ts_pg_long(db, q);
}

/* Sends the call, and kills cardgate with SIGKILL once the call is at the
 * simulator (which holds its answer for 1.5 s): once the simulator has
 * seen more than calls_before calls for serial (NULL: in all). */
static void kill_during(struct ts_stack *st, struct call *c, const char *serial, long calls_before)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, send_call, c), 0);
    long long until = ts_now_ms() + 10000;
    while (ts_sim_calls(&st->sim, serial) <= calls_before && ts_now_ms() < until)
        usleep(20 * 1000);
    ck_assert_int_gt(ts_sim_calls(&st->sim, serial), calls_before);
    kill(st->cg.pid, SIGKILL);
    waitpid(st->cg.pid, NULL, 0);
    st->cg.pid = 0;
    pthread_join(t, NULL);
}

/* Waits until the SQL's value (one %s: serial) is want; returns it. */
static long wait_sql(const char *db, const char *fmt, const char *serial, long want, int ms)
{
    long long until = ts_now_ms() + ms;
    long v;
    while ((v = sql(db, fmt, serial)) != want && ts_now_ms() < until)
        usleep(100 * 1000);
    return v;
}

/* The simulator's card for serial (a new reference), or NULL. */
static json_object *sim_card(const struct ts_sim *sim, const char *serial)
{
    json_object *cards = ts_sim_cards(sim), *card = NULL;
    if (json_object_object_get_ex(cards, serial, &card))
        json_object_get(card);
    json_object_put(cards);
    return card;
}

static const char *field(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

/* An open with member data, which must never be readable where the
 * ledger keeps the request. malloc'd. */
static char *member_open_body(const char *serial)
{
    return ts_open_body(serial,
                        ",\"member\":{\"name\":\"Zhang Sanfeng\",\"cell\":\"13812345678\"}");
}

/* Opens with the answer held, kills cardgate, and checks what the ledger
 * holds meanwhile: a pending row whose sealed copy shows nothing. */
static void open_and_die(struct ts_stack *st, const char *serial)
{
    char fault[256];
    snprintf(fault, sizeof(fault),
             "{\"mode\":\"delay\",\"delay_ms\":1500,\"method\":\"alipay.marketing.card.open\","
             "\"out_serial_no\":\"%s\",\"count\":1}",
             serial);
    ck_assert_int_eq(ts_sim_fault(&st->sim, fault), 0);
    struct call c = {.method = "POST", .body = member_open_body(serial)};
    snprintf(c.url, sizeof(c.url), "%s/v1/cards", st->cg.url);
    kill_during(st, &c, serial, 0);
    free(c.body);
    ck_assert_int_eq(sql(st->db,
                         "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND "
                         "state = 'pending' AND sealed IS NOT NULL",
                         serial),
                     1);
    /* Nothing of the request can be read where it is kept. */
    const char *clear[] = {"Zhang Sanfeng", "13812345678", "EXT-", "2088302463082075",
                           "out_serial_no"};
    for (size_t i = 0; i < sizeof(clear) / sizeof(*clear); i++) {
        char q[512];
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM card_requests WHERE out_serial_no = '%%s' AND "
                 "position(convert_to('%s', 'UTF8') IN sealed) > 0",
                 clear[i]);
        ck_assert_msg(sql(st->db, q, serial) == 0, "%s readable in card_requests.sealed", clear[i]);
    }
    /* Alipay opens the card while no cardgate lives. */
    long long until = ts_now_ms() + 5000;
    json_object *card = NULL;
    while (!(card = sim_card(&st->sim, serial)) && ts_now_ms() < until)
        usleep(100 * 1000);
    ck_assert_msg(card != NULL, "the simulator never opened %s", serial);
    json_object_put(card);
    ck_assert_int_eq(sql(st->db, "SELECT count(*) FROM cards WHERE out_serial_no = '%s'", serial),
                     0);
}

/* One card everywhere, the same one; the row final and its seal gone. */
static void assert_recorded_once(struct ts_stack *st, const char *serial)
{
    json_object *card = sim_card(&st->sim, serial);
    ck_assert_ptr_nonnull(card);
    char q[256];
    snprintf(q, sizeof(q),
             "SELECT count(*) FROM cards WHERE out_serial_no = '%%s' AND "
             "biz_card_no = '%s'",
             field(card, "biz_card_no"));
    ck_assert_int_eq(sql(st->db, q, serial), 1);
    ck_assert_int_eq(sql(st->db, "SELECT count(*) FROM cards WHERE out_serial_no = '%s'", serial),
                     1);
    ck_assert_int_eq(sql(st->db,
                         "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND "
                         "state = 'succeeded' AND sealed IS NULL AND biz_card_no IS NOT NULL",
                         serial),
                     1);
    /* The caller's late retry is told of that card. */
    char *body = member_open_body(serial), url[128];
    snprintf(url, sizeof(url), "%s/v1/cards", st->cg.url);
    const char *headers[] = {TS_AUTH, TS_JSON, NULL};
    struct ts_http r;
    ck_assert_int_eq(ts_http_call("POST", url, headers, body, &r), 0);
    ck_assert_int_eq(r.status, 201);
    ts_assert_field(&r, "biz_card_no", field(card, "biz_card_no"));
    char *replayed = ts_http_header(&r, "Idempotent-Replayed");
    ck_assert_str_eq(replayed ? replayed : "", "true");
    free(replayed);
    ts_http_free(&r);
    free(body);
    json_object_put(card);
}

START_TEST(open_abandoned_by_a_dead_instance_is_finished)
{
    struct ts_stack st;
    char err[512];
    const char *serial = "sweep-open-1";
    ck_assert_msg(ts_stack_up(&st, NULL, env, err, sizeof(err)) == 0, "%s", err);
    open_and_die(&st, serial);

    /* The next instance finds the row once its lock has run out, and
     * records the card Alipay opened: nobody retried. */
    ck_assert_msg(ts_cardgate_start(&st.cg, st.db, &st.sim, env) == 0, "see %s", st.cg.log);
    ck_assert_int_eq(wait_sql(st.db,
                              "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' "
                              "AND state = 'succeeded'",
                              serial, 1, 45000),
                     1);
    ck_assert_int_ge(ts_metric(&st.cg, "cardgate_requests_redriven_total"), 1);
    /* Made again with the same out_serial_no: Alipay kept one card. */
    ck_assert_int_eq(ts_sim_calls(&st.sim, serial), 2);
    assert_recorded_once(&st, serial);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

START_TEST(update_abandoned_is_finished_without_a_second_message)
{
    struct ts_stack st;
    char err[512];
    const char *serial = "sweep-upd-open";
    ck_assert_msg(ts_stack_up(&st, NULL, env, err, sizeof(err)) == 0, "%s", err);
    const char *headers[] = {TS_AUTH, TS_JSON, NULL};
    char url[256];
    struct ts_http r;
    char *body = ts_open_body(serial, "");
    snprintf(url, sizeof(url), "%s/v1/cards", st.cg.url);
    ck_assert_int_eq(ts_http_call("POST", url, headers, body, &r), 0);
    free(body);
    ck_assert_int_eq(r.status, 201);
    char *biz = ts_json_at(&r, "biz_card_no");
    ts_http_free(&r);

    ck_assert_int_eq(ts_sim_fault(&st.sim, "{\"mode\":\"delay\",\"delay_ms\":1500,\"method\":"
                                           "\"alipay.marketing.card.update\",\"count\":1}"),
                     0);
    struct call c = {.method = "PATCH",
                     .body = strdup("{\"out_serial_no\":\"sweep-upd-1\",\"occur_time\":"
                                    "\"2024-03-01 10:00:00\",\"card\":{\"point\":\"250\"},"
                                    "\"changed_point\":\"249\"}")};
    snprintf(c.url, sizeof(c.url), "%s/v1/cards/%s", st.cg.url, biz);
    kill_during(&st, &c, NULL, ts_sim_calls(&st.sim, NULL));
    free(c.body);
    ck_assert_int_eq(sql(st.db,
                         "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' "
                         "AND state = 'pending' AND sealed IS NOT NULL",
                         "sweep-upd-1"),
                     1);
    usleep(1600 * 1000); /* the update lands at Alipay meanwhile */

    ck_assert_msg(ts_cardgate_start(&st.cg, st.db, &st.sim, env) == 0, "see %s", st.cg.log);
    ck_assert_int_eq(wait_sql(st.db,
                              "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' "
                              "AND state = 'succeeded' AND sealed IS NULL",
                              "sweep-upd-1", 1, 45000),
                     1);
    ck_assert_int_eq(sql(st.db, "SELECT point::integer FROM cards WHERE biz_card_no = '%s'", biz),
                     250);
    /* The sweeper asked first (the previous attempt's outcome was not
     * known) and found the update made: the member got one message. */
    json_object *card = sim_card(&st.sim, serial), *v;
    ck_assert_ptr_nonnull(card);
    ck_assert(json_object_object_get_ex(card, "updates", &v));
    ck_assert_int_eq(json_object_get_int64(v), 1);
    ck_assert(json_object_object_get_ex(card, "points_messages", &v));
    ck_assert_int_eq(json_object_get_int64(v), 1);
    json_object_put(card);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

START_TEST(what_cannot_be_made_again_stays_in_view)
{
    struct ts_stack st;
    char err[512];
    const char *serial = "sweep-key-1";
    ck_assert_msg(ts_stack_up(&st, NULL, env, err, sizeof(err)) == 0, "%s", err);
    open_and_die(&st, serial);

    /* An instance under another key cannot open the seal: the row stays,
     * in the view and the metrics, and the log says what to do. */
    ck_assert_msg(ts_cardgate_start(&st.cg, st.db, &st.sim, other_key_env) == 0, "see %s",
                  st.cg.log);
    long long until = ts_now_ms() + 45000;
    while (ts_metric(&st.cg, "cardgate_redrives_impossible_total") < 1 && ts_now_ms() < until)
        usleep(200 * 1000);
    ck_assert_int_ge(ts_metric(&st.cg, "cardgate_redrives_impossible_total"), 1);
    ck_assert_int_ge(ts_metric(&st.cg, "cardgate_stale_requests"), 1);
    ck_assert_int_eq(sql(st.db,
                         "SELECT count(*) FROM stale_requests WHERE out_serial_no = '%s' AND "
                         "redrivable",
                         serial),
                     1);
    ck_assert_int_eq(ts_sim_calls(&st.sim, serial), 1);
    ck_assert_int_eq(ts_cardgate_stop(&st.cg), 0);
    char *log = ts_read_file(st.cg.log, NULL);
    ck_assert_ptr_nonnull(log);
    ck_assert_ptr_nonnull(strstr(log, "its seal does not open with this instance's key"));
    free(log);

    /* Back under the right key, it is finished. */
    ck_assert_msg(ts_cardgate_start(&st.cg, st.db, &st.sim, env) == 0, "see %s", st.cg.log);
    ck_assert_int_eq(wait_sql(st.db,
                              "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' "
                              "AND state = 'succeeded'",
                              serial, 1, 60000),
                     1);
    assert_recorded_once(&st, serial);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* A stop while the sweeper's look at the ledger is in flight waits for the
 * look: nothing is left with the database pool at exit (LeakSanitizer
 * would report it, and the exit status would not be 0). The look is held
 * by a lock on the ledger's table until after the SIGTERM. */
START_TEST(stop_waits_for_a_look)
{
    struct ts_stack st;
    char err[512];
    const char *const busy[] = {"CARDGATE_SWEEP_INTERVAL_MS=50", NULL};
    ck_assert_msg(ts_stack_up(&st, NULL, busy, err, sizeof(err)) == 0, "%s", err);
    usleep(11000 * 1000); /* the database has answered for the grace period */
    PGconn *lock = PQconnectdb(st.db);
    ck_assert_int_eq(PQstatus(lock), CONNECTION_OK);
    PQclear(PQexec(lock, "BEGIN"));
    PGresult *res = PQexec(lock, "LOCK TABLE card_requests IN ACCESS EXCLUSIVE MODE");
    ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    usleep(500 * 1000); /* a look is waiting on the lock now */
    kill(st.cg.pid, SIGTERM);
    usleep(1000 * 1000);
    PQclear(PQexec(lock, "COMMIT"));
    PQfinish(lock);
    int status = ts_stack_down(&st);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d; see %s", status,
                  st.cg.log);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sweeper");
    TCase *tc = tcase_create("sweeper");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, open_abandoned_by_a_dead_instance_is_finished);
    tcase_add_test(tc, update_abandoned_is_finished_without_a_second_message);
    tcase_add_test(tc, what_cannot_be_made_again_stays_in_view);
    tcase_add_test(tc, stop_waits_for_a_look);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
