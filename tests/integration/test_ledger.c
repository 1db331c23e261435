/* The ledger's SQL functions (migrations/001) under the races the service
 * cannot stage on demand: holders with different timeouts, a late success
 * after a takeover, a refusal arriving for a serial whose card exists. */
#include <check.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

static char *db;
static PGconn *conn;

static void setup(void)
{
    db = ts_pg_create_db();
    ck_assert_msg(db != NULL, "CARDGATE_TEST_PG must name a PostgreSQL cluster (see tests/run.sh)");
    ck_assert_int_eq(ts_cardgate_migrate(db), 0);
    conn = PQconnectdb(db);
    ck_assert_int_eq(PQstatus(conn), CONNECTION_OK);
}

static void teardown(void)
{
    PQfinish(conn);
    free(db);
}

/* claim(serial, hash, token, stale_ms) -> verdict */
static char *claim(const char *serial, const char *hash, const char *token, const char *stale)
{
    const char *v[] = {"app", serial, hash, "pos", token, stale};
    PGresult *r = PQexecParams(
        conn, "SELECT verdict FROM card_request_claim($1, $2, $3, $4, $5, $6::integer)", 6, NULL, v,
        NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    char *verdict = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return verdict;
}

static int complete(const char *serial, const char *token, const char *state, const char *card)
{
    const char *v[] = {"app",
                       serial,
                       token,
                       state,
                       state,
                       NULL,
                       NULL,
                       "201",
                       "{}",
                       "5",
                       card,
                       NULL,
                       "2088302463082075",
                       "tpl"};
    PGresult *r = PQexecParams(conn,
                               "SELECT card_request_complete($1, $2, $3, $4, $5, $6, $7, "
                               "$8::integer, $9, $10::integer, $11, $12, $13, $14)",
                               14, NULL, v, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    int held = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return held;
}

static void exec(const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
}

static void assert_verdict(char *got, const char *want)
{
    ck_assert_str_eq(got, want);
    free(got);
}

/* A claimer with a short timeout cannot take over a holder's longer lock. */
START_TEST(test_lock_life_is_the_holders)
{
    assert_verdict(claim("s1", "h", "A", "60000"), "claimed");
    assert_verdict(claim("s1", "h", "B", "1"), "in_progress");
    /* Once the holder's own life has passed, the takeover goes through. */
    exec("UPDATE card_requests SET lock_expires_at = now() - interval '1 second'");
    assert_verdict(claim("s1", "h", "B", "1"), "claimed");
    assert_verdict(claim("s1", "other", "C", "1"), "mismatch");
}
END_TEST

/* A's success arrives after B took over: it is the same card, and it is
 * recorded; B's later failure cannot undo it. */
START_TEST(test_late_success_wins)
{
    assert_verdict(claim("s2", "h", "A", "60000"), "claimed");
    exec("UPDATE card_requests SET lock_expires_at = now() - interval '1 second'");
    assert_verdict(claim("s2", "h", "B", "60000"), "claimed");
    ck_assert_int_eq(complete("s2", "A", "succeeded", "BIZ2"), 1);
    ck_assert_int_eq(complete("s2", "B", "failed", NULL), 0);
    ck_assert_int_eq(complete("s2", "B", "rejected", NULL), 0);
    ck_assert_int_eq(ts_pg_long(db,
                                "SELECT count(*) FROM card_requests WHERE state = 'succeeded' AND "
                                "out_serial_no = 's2' AND lock_token IS NULL"),
                     1);
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM cards WHERE out_serial_no = 's2'"), 1);
    assert_verdict(claim("s2", "h", "D", "60000"), "replay");
}
END_TEST

/* A refusal for a serial whose card is already recorded is not stored. */
START_TEST(test_no_refusal_over_a_card)
{
    assert_verdict(claim("s3", "h", "A", "60000"), "claimed");
    exec("INSERT INTO cards (biz_card_no, out_serial_no, app_id, user_id, card_template_id) "
         "VALUES ('BIZ3', 's3', 'app', '2088302463082075', 'tpl')");
    ck_assert_int_eq(complete("s3", "A", "rejected", NULL), 0);
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM card_requests WHERE state = 'rejected'"),
                     0);
}
END_TEST

/* Completing twice (a retried completion whose first try did commit) keeps
 * one card. */
START_TEST(test_completion_repeatable)
{
    assert_verdict(claim("s4", "h", "A", "60000"), "claimed");
    ck_assert_int_eq(complete("s4", "A", "succeeded", "BIZ4"), 1);
    ck_assert_int_eq(complete("s4", "A", "succeeded", "BIZ4"), 0);
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM cards WHERE out_serial_no = 's4'"), 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ledger");
    TCase *tc = tcase_create("functions");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_lock_life_is_the_holders);
    tcase_add_test(tc, test_late_success_wins);
    tcase_add_test(tc, test_no_refusal_over_a_card);
    tcase_add_test(tc, test_completion_repeatable);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
