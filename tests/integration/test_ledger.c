/* The ledger's SQL functions (card_request_claim_op and card_request_finish,
 * migrations/002) under the races the service cannot stage on demand:
 * holders with different timeouts, a late success after a takeover, a
 * refusal arriving for a serial whose card exists; and for changes of a
 * card, its lock, its order and its deletion. */
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

/* The first row of a claim_op call with a sealed request (bytea text, or
 * NULL): its verdict, and its prior in *prior (malloc'd, NULL when SQL
 * NULL) when prior is not NULL. */
static char *claim_sealed(const char *serial, const char *hash, const char *token,
                          const char *stale, const char *operation, const char *biz,
                          const char *occur, const char *external, const char *sealed, char **prior)
{
    const char *v[] = {"app",     serial, hash,  "pos",    token, stale,
                       operation, biz,    occur, external, "0",   sealed};
    PGresult *r = PQexecParams(conn,
                               "SELECT verdict, prior FROM card_request_claim_op($1, $2, $3, $4, "
                               "$5, $6::integer, $7, $8, $9::timestamp, $10, $11::integer, "
                               "$12::bytea)",
                               12, NULL, v, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    char *verdict = strdup(PQgetvalue(r, 0, 0));
    if (prior)
        *prior = PQgetisnull(r, 0, 1) ? NULL : strdup(PQgetvalue(r, 0, 1));
    PQclear(r);
    return verdict;
}

/* The same without a sealed request. */
static char *claim_op(const char *serial, const char *hash, const char *token, const char *stale,
                      const char *operation, const char *biz, const char *occur,
                      const char *external, char **prior)
{
    return claim_sealed(serial, hash, token, stale, operation, biz, occur, external, NULL, prior);
}

/* claim(serial, hash, token, stale_ms) -> verdict, for an open */
static char *claim(const char *serial, const char *hash, const char *token, const char *stale)
{
    return claim_op(serial, hash, token, stale, "open", NULL, NULL, NULL, NULL);
}

static int finish(const char *serial, const char *token, const char *state, const char *operation,
                  const char *biz, const char *card)
{
    const char *v[] = {"app", serial, token,      state,     state, NULL, NULL, "201",
                       "{}",  "5",    "a.method", operation, biz,   card, "0"};
    PGresult *r =
        PQexecParams(conn,
                     "SELECT card_request_finish($1, $2, $3, $4, $5, $6, $7, "
                     "$8::integer, $9, $10::integer, $11, $12, $13, $14::jsonb, $15::integer)",
                     15, NULL, v, NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    int held = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return held;
}

/* An open's completion; card: the biz_card_no of a success, or NULL. */
static int complete(const char *serial, const char *token, const char *state, const char *card)
{
    return finish(serial, token, state, "open", card,
                  "{\"user_id\":\"2088302463082075\",\"card_template_id\":\"tpl\"}");
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
    /* ... and one gateway call. */
    ck_assert_int_eq(
        ts_pg_long(db, "SELECT count(*) FROM gateway_calls WHERE out_serial_no = 's4'"), 1);
}
END_TEST

/* Two opens whose cards Alipay gave the same merchant number: both cards
 * are kept (Alipay has both), the second flagged without the number; a
 * completion written again changes neither. */
START_TEST(test_external_card_no_clash_kept_and_flagged)
{
    const char *card = "{\"user_id\":\"2088302463082075\",\"card_template_id\":\"tpl\","
                       "\"external_card_no\":\"EXT-SAME\"}";
    assert_verdict(claim("s5", "h", "A", "60000"), "claimed");
    ck_assert_int_eq(finish("s5", "A", "succeeded", "open", "BIZ5", card), 1);
    assert_verdict(claim("s6", "h", "B", "60000"), "claimed");
    ck_assert_int_eq(finish("s6", "B", "succeeded", "open", "BIZ6", card), 1);
    ck_assert_int_eq(finish("s6", "B", "succeeded", "open", "BIZ6", card), 0);
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM cards WHERE biz_card_no = 'BIZ5' AND "
                                    "external_card_no = 'EXT-SAME' AND status = 'active'"),
                     1);
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM cards WHERE biz_card_no = 'BIZ6' AND "
                                    "external_card_no IS NULL AND "
                                    "status = 'external_card_no_conflict'"),
                     1);
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM cards"), 2);
}
END_TEST

static void add_card(const char *biz, const char *external)
{
    char sql[300];
    snprintf(sql, sizeof(sql),
             "INSERT INTO cards (biz_card_no, external_card_no, out_serial_no, app_id, user_id, "
             "card_template_id) VALUES ('%s', '%s', 'o-%s', 'app', '2088302463082075', 'tpl')",
             biz, external, biz);
    exec(sql);
}

#define T1 "2026-11-30 10:00:00"
#define T2 "2026-11-30 10:05:00"

/* One change of a card at a time: a second serial is busy until the first
 * finishes (whatever its outcome), or its holder's lock has run out. */
START_TEST(test_card_lock)
{
    add_card("C1", "E1");
    assert_verdict(claim_op("u1", "h1", "A", "60000", "update", "C1", T1, NULL, NULL), "claimed");
    assert_verdict(claim_op("u2", "h2", "B", "60000", "update", "C1", T1, NULL, NULL), "busy");
    assert_verdict(claim_op("d1", "h3", "B", "60000", "delete", "C1", NULL, NULL, NULL), "busy");
    /* The same serial again is in progress, not busy. */
    assert_verdict(claim_op("u1", "h1", "B", "60000", "update", "C1", T1, NULL, NULL),
                   "in_progress");
    ck_assert_int_eq(finish("u1", "A", "failed", "update", "C1", NULL), 1);
    assert_verdict(claim_op("u2", "h2", "B", "60000", "update", "C1", T1, NULL, NULL), "claimed");
    /* A dead holder's card lock runs out with its request's. */
    exec("UPDATE cards SET lock_expires_at = now() - interval '1 second'");
    exec("UPDATE card_requests SET lock_expires_at = now() - interval '1 second'");
    char *prior = NULL;
    assert_verdict(claim_op("u1", "h1", "C", "60000", "update", "C1", T1, NULL, &prior), "claimed");
    ck_assert_str_eq(prior, "failed");
    free(prior);
    /* u2's holder died: its retry knows the outcome is unknown. */
    exec("UPDATE cards SET lock_expires_at = now() - interval '1 second'");
    exec("UPDATE card_requests SET lock_expires_at = now() - interval '1 second'");
    assert_verdict(claim_op("u2", "h2", "D", "60000", "update", "C1", T1, NULL, &prior), "claimed");
    ck_assert_str_eq(prior, "abandoned");
    free(prior);
    /* A finish by a holder that lost the lock does not free the card. */
    ck_assert_int_eq(finish("u1", "C", "failed", "update", "C1", NULL), 1);
    assert_verdict(claim_op("u3", "h4", "E", "60000", "update", "C1", T1, NULL, NULL), "busy");
}
END_TEST

/* An update abandoned pending (its holder died) that can no longer be made —
 * a newer update went through meanwhile, or the card was deleted — is
 * closed by the claim that refuses it: failed, its outcome unknown, its
 * sealed copy gone; not left pending for the sweeper to try for ever. */
START_TEST(test_abandoned_and_refused_is_closed)
{
    add_card("C7", "E7");
    exec("UPDATE cards SET last_occur_time = '" T2 "' WHERE biz_card_no = 'C7'");
    /* refused at once: never pending */
    assert_verdict(
        claim_sealed("u7", "h7", "A", "60000", "update", "C7", T1, NULL, "\\x0102", NULL), "stale");
    /* Pending with an expired lock and its seal, as a dead holder leaves it. */
    exec("INSERT INTO card_requests (app_id, out_serial_no, state, request_hash, caller, "
         "lock_token, locked_at, lock_expires_at, operation, biz_card_no, sealed) VALUES "
         "('app', 'u7', 'pending', 'h7', 'pos', 'A', now(), now() - interval '1 second', "
         "'update', 'C7', '\\x0102')");
    assert_verdict(claim_op("u7", "h7", "B", "60000", "update", "C7", T1, NULL, NULL), "stale");
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM card_requests WHERE out_serial_no = "
                                    "'u7' AND state = 'failed' AND last_outcome = 'abandoned' AND "
                                    "sealed IS NULL AND lock_token IS NULL"),
                     1);
    /* The same for a deleted card. */
    exec("INSERT INTO card_requests (app_id, out_serial_no, state, request_hash, caller, "
         "lock_token, locked_at, lock_expires_at, operation, biz_card_no, sealed) VALUES "
         "('app', 'd7', 'pending', 'hd', 'pos', 'A', now(), now() - interval '1 second', "
         "'delete', 'C7', '\\x0102')");
    exec("UPDATE cards SET status = 'deleted' WHERE biz_card_no = 'C7'");
    assert_verdict(claim_op("d7", "hd", "C", "60000", "delete", "C7", NULL, NULL, NULL), "deleted");
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM card_requests WHERE out_serial_no = "
                                    "'d7' AND state = 'failed' AND sealed IS NULL"),
                     1);
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM stale_requests"), 0);
}
END_TEST

/* The newest accepted occur_time wins: older updates are stale, and a late
 * success of an older one moves nothing back. */
START_TEST(test_update_order)
{
    add_card("C2", "E2");
    assert_verdict(claim_op("a", "ha", "A", "60000", "update", "C2", T1, NULL, NULL), "claimed");
    exec("UPDATE card_requests SET lock_expires_at = now() - interval '1 second'");
    exec("UPDATE cards SET lock_expires_at = now() - interval '1 second'");
    assert_verdict(claim_op("b", "hb", "B", "60000", "update", "C2", T2, NULL, NULL), "claimed");
    ck_assert_int_eq(finish("b", "B", "succeeded", "update", "C2",
                            "{\"occur_time\":\"" T2 "\",\"point\":\"200\",\"level\":\"V2\"}"),
                     1);
    char *prior = NULL;
    assert_verdict(claim_op("c", "hc", "C", "60000", "update", "C2", T1, NULL, &prior), "stale");
    ck_assert_str_eq(prior, T2);
    free(prior);
    /* a's success arrives late: recorded in the ledger, the card keeps b's. */
    ck_assert_int_eq(finish("a", "A", "succeeded", "update", "C2",
                            "{\"occur_time\":\"" T1 "\",\"point\":\"100\",\"level\":\"V1\"}"),
                     1);
    ck_assert_int_eq(ts_pg_long(db, "SELECT point FROM cards WHERE biz_card_no = 'C2' AND level = "
                                    "'V2' AND last_occur_time = '" T2 "'"),
                     200);
    assert_verdict(claim_op("a", "ha", "D", "60000", "update", "C2", T1, NULL, NULL), "replay");
}
END_TEST

/* A deleted card: changes refused, its delete replayed, its merchant number
 * free; an update cannot take a live card's merchant number. */
START_TEST(test_deleted_card)
{
    add_card("C3", "E3");
    add_card("C4", "E4");
    assert_verdict(claim_op("u4", "h", "A", "60000", "update", "C4", T1, "E3", NULL),
                   "external_taken");
    assert_verdict(claim_op("d3", "hd", "A", "60000", "delete", "C3", NULL, NULL, NULL), "claimed");
    ck_assert_int_eq(finish("d3", "A", "succeeded", "delete", "C3", "{\"reason_code\":\"CANCEL\"}"),
                     1);
    assert_verdict(claim_op("d3", "hd", "B", "60000", "delete", "C3", NULL, NULL, NULL), "replay");
    assert_verdict(claim_op("d4", "hd", "B", "60000", "delete", "C3", NULL, NULL, NULL), "deleted");
    assert_verdict(claim_op("u5", "h", "B", "60000", "update", "C3", T1, NULL, NULL), "deleted");
    assert_verdict(claim_op("u6", "h", "B", "60000", "update", "C9", T1, NULL, NULL), "no_card");
    /* E3 is free now: C4 may take it. */
    assert_verdict(claim_op("u4", "h", "A", "60000", "update", "C4", T1, "E3", NULL), "claimed");
    ck_assert_int_eq(finish("u4", "A", "succeeded", "update", "C4",
                            "{\"occur_time\":\"" T1 "\",\"external_card_no\":\"E3\"}"),
                     1);
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM cards WHERE external_card_no = 'E3'"), 2);
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM cards WHERE biz_card_no = 'C3' AND "
                                    "status = 'deleted' AND delete_reason = 'CANCEL'"),
                     1);
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM cards WHERE lock_token IS NOT NULL"), 0);
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
    tcase_add_test(tc, test_external_card_no_clash_kept_and_flagged);
    tcase_add_test(tc, test_card_lock);
    tcase_add_test(tc, test_update_order);
    tcase_add_test(tc, test_deleted_card);
    tcase_add_test(tc, test_abandoned_and_refused_is_closed);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
