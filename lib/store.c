/* store: see store.h. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonw.h"
#include "migrate.h"

#define CARD_COLUMNS                                                                               \
    "biz_card_no, external_card_no, out_serial_no, user_id, card_template_id, status, "            \
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

const struct pg_statement store_statements[] = {
    {"claim",
     "SELECT verdict, http_status, response_body, attempts, biz_card_no, prior "
     "FROM card_request_claim_op($1, $2, $3, $4, $5, $6::integer, $7, $8, $9::timestamp, $10, "
     "$11::integer, $12::bytea)",
     12},
    {"complete",
     "SELECT card_request_finish($1, $2, $3, $4, $5, $6, $7, $8::integer, $9, $10::integer, "
     "$11, $12, $13, coalesce($14::jsonb, '{}'::jsonb), $15::integer)",
     15},
    {"record_call",
     "INSERT INTO gateway_calls (app_id, method, out_serial_no, outcome, alipay_code, "
     "alipay_sub_code, http_status, latency_ms) VALUES ($1, $2, $3, $4, $5, $6, $7::integer, "
     "$8::integer)",
     8},
    {"cards_by_external_card_no",
     "SELECT " CARD_COLUMNS " FROM cards WHERE app_id = $1 AND external_card_no = $2 "
     "ORDER BY created_at, biz_card_no LIMIT 1000",
     2},
    {"cards_by_user_id",
     "SELECT " CARD_COLUMNS " FROM cards WHERE app_id = $1 AND user_id = $2 "
     "ORDER BY created_at, biz_card_no LIMIT 1000",
     2},
    {"cards_by_out_serial_no",
     "SELECT " CARD_COLUMNS " FROM cards WHERE app_id = $1 AND out_serial_no = $2 "
     "ORDER BY created_at, biz_card_no LIMIT 1000",
     2},
    /* Picks the oldest abandoned requests that can be made again (sealed),
     * overdue by $4 ms past their lock, that no sweeper tried lately (one a
     * sweeper could not finish waits $3 ms before the next try, so it
     * cannot starve the others), and counts every abandoned one. */
    {"abandoned",
     "WITH picked AS ("
     " SELECT app_id, out_serial_no FROM card_requests"
     " WHERE app_id = $1 AND state = 'pending' AND sealed IS NOT NULL"
     " AND lock_expires_at < now() - make_interval(secs => $4::integer / 1000.0)"
     " AND (swept_at IS NULL OR swept_at < now() - make_interval(secs => $3::integer / 1000.0))"
     " ORDER BY swept_at NULLS FIRST, lock_expires_at LIMIT $2::integer FOR UPDATE SKIP LOCKED), "
     "swept AS ("
     " UPDATE card_requests c SET swept_at = now() FROM picked p"
     " WHERE c.app_id = p.app_id AND c.out_serial_no = p.out_serial_no"
     " RETURNING c.out_serial_no, c.sealed) "
     "SELECT s.out_serial_no, s.sealed, t.total FROM (SELECT count(*) AS total FROM stale_requests"
     " WHERE app_id = $1) t"
     " LEFT JOIN swept s ON true",
     4},
    {"schema_check", "SELECT 1 FROM schema_migrations WHERE version = $1", 1},
    /* Alipay's certificates (certs.h): read one, claim its fetch (a row
     * inserted, or one whose fetch was claimed $3 ms ago and never
     * finished), store it, or give the claim back. */
    {"cert_get", "SELECT pem FROM alipay_certs WHERE sn = $1 AND pem IS NOT NULL", 1},
    {"cert_claim",
     "INSERT INTO alipay_certs AS a (sn, app_id) VALUES ($1, $2) ON CONFLICT (sn) DO UPDATE SET "
     "claimed_at = now() WHERE a.pem IS NULL AND a.claimed_at < now() - make_interval(secs => "
     "$3::integer / 1000.0) RETURNING a.claimed_at::text",
     3},
    /* stored whoever holds the claim now: the certificate was checked */
    {"cert_put",
     "INSERT INTO alipay_certs AS a (sn, app_id, pem, fetched_at) VALUES ($1, $2, $3, now()) "
     "ON CONFLICT (sn) DO UPDATE SET pem = EXCLUDED.pem, fetched_at = now()",
     3},
    /* only our own claim ($2: its claimed_at), not one taken over since */
    {"cert_release",
     "DELETE FROM alipay_certs WHERE sn = $1 AND pem IS NULL AND claimed_at = $2::timestamptz", 2},
    {"template_configure",
     "SELECT apply_card_url FROM card_template_configure($1, $2, $3, $4::jsonb, $5)", 5},
    {"template_activation",
     "SELECT activation::text, external_no FROM card_template_activation($1, $2)", 2},
};
const size_t store_statements_count = sizeof(store_statements) / sizeof(store_statements[0]);

/* The caller's callback, carried through pg_pool_exec. */
struct pending {
    void (*cb)(void);
    void *arg;
};

static struct pending *pending_new(void (*cb)(void), void *arg)
{
    struct pending *p = malloc(sizeof(*p));
    if (p) {
        p->cb = cb;
        p->arg = arg;
    }
    return p;
}

static int exec_or_free(struct pg_pool *pool, const char *stmt, int n, const char *const *values,
                        pg_cb cb, struct pending *p)
{
    if (!p)
        return -1;
    if (pg_pool_exec(pool, stmt, n, values, cb, p) < 0) {
        free(p);
        return -1;
    }
    return 0;
}

static int result_ok(PGresult *res)
{
    return res && PQresultStatus(res) == PGRES_TUPLES_OK;
}

/* bytea's text input ("\\x" and hex), malloc'd. */
static char *bytea_text(const unsigned char *b, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *t = malloc(2 * n + 3);
    if (!t)
        return NULL;
    t[0] = '\\', t[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        t[2 + 2 * i] = hex[b[i] >> 4];
        t[3 + 2 * i] = hex[b[i] & 15];
    }
    t[2 * n + 2] = '\0';
    return t;
}

/* --- claim --------------------------------------------------------------- */

static void on_claim(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct pending *p = arg;
    store_claim_cb cb = (store_claim_cb)p->cb;
    void *uarg = p->arg;
    free(p);
    if (!result_ok(res) || PQntuples(res) != 1) {
        cb(NULL, error ? error : "claim returned no row", uarg);
        return;
    }
    struct store_claim c = {0};
    static const struct {
        const char *name;
        enum store_verdict verdict;
    } verdicts[] = {
        {"claimed", STORE_CLAIMED},   {"replay", STORE_REPLAY},
        {"mismatch", STORE_MISMATCH}, {"no_card", STORE_NO_CARD},
        {"deleted", STORE_DELETED},   {"stale", STORE_STALE},
        {"busy", STORE_BUSY},         {"external_taken", STORE_EXTERNAL_TAKEN},
    };
    const char *v = PQgetvalue(res, 0, 0);
    c.verdict = STORE_IN_PROGRESS;
    for (size_t i = 0; i < sizeof(verdicts) / sizeof(verdicts[0]); i++)
        if (strcmp(v, verdicts[i].name) == 0)
            c.verdict = verdicts[i].verdict;
    c.http_status = PQgetisnull(res, 0, 1) ? 0 : atoi(PQgetvalue(res, 0, 1));
    c.body = PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2);
    c.attempts = atoi(PQgetvalue(res, 0, 3));
    c.biz_card_no = PQgetisnull(res, 0, 4) ? NULL : PQgetvalue(res, 0, 4);
    c.prior = PQgetisnull(res, 0, 5) ? NULL : PQgetvalue(res, 0, 5);
    if (c.verdict == STORE_REPLAY && !c.body) {
        cb(NULL, "stored outcome has no body", uarg);
        return;
    }
    cb(&c, NULL, uarg);
}

int store_claim(struct pg_pool *pool, const struct store_claim_args *a, store_claim_cb cb,
                void *arg)
{
    char stale[32], lock[32];
    snprintf(stale, sizeof(stale), "%ld", a->stale_ms);
    /* Lock waits end at the deadline: a claim never commits after it. */
    long long left = 0;
    if (a->deadline_ms) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        left = a->deadline_ms - ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        if (left < 1)
            left = 1;
    }
    snprintf(lock, sizeof(lock), "%lld", left);
    char *sealed = a->sealed ? bytea_text(a->sealed, a->sealed_len) : NULL;
    const char *values[] = {
        a->app_id,    a->serial,      a->hash,       a->caller,           a->token, stale,
        a->operation, a->biz_card_no, a->occur_time, a->external_card_no, lock,     sealed};
    struct pending *pd = pending_new((void (*)(void))cb, arg);
    int rc =
        pd && (sealed || !a->sealed) &&
                pg_pool_exec_until(pool, "claim", 12, values, a->deadline_ms, on_claim, pd) == 0
            ? 0
            : -1;
    if (rc < 0)
        free(pd);
    free(sealed);
    return rc;
}

/* --- complete ------------------------------------------------------------ */

static void on_complete(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct pending *p = arg;
    store_done_cb cb = (store_done_cb)p->cb;
    void *uarg = p->arg;
    free(p);
    if (!result_ok(res) || PQntuples(res) != 1) {
        cb(0, 0, error ? error : "complete returned no row", uarg);
        return;
    }
    cb(1, strcmp(PQgetvalue(res, 0, 0), "t") == 0, NULL, uarg);
}

int store_complete(struct pg_pool *pool, const struct store_completion *c, store_done_cb cb,
                   void *arg)
{
    char status[16], latency[32], cool[32];
    snprintf(status, sizeof(status), "%d", c->http_status);
    snprintf(latency, sizeof(latency), "%ld", c->latency_ms);
    snprintf(cool, sizeof(cool), "%ld", c->cool_ms);
    const char *values[] = {c->app_id, c->serial,    c->token,       c->state, c->outcome,
                            c->code,   c->sub_code,  status,         c->body,  latency,
                            c->method, c->operation, c->biz_card_no, c->card,  cool};
    return exec_or_free(pool, "complete", 15, values, on_complete,
                        pending_new((void (*)(void))cb, arg));
}

/* --- gateway calls ------------------------------------------------------- */

static void on_recorded(PGresult *res, int unavailable, const char *error, void *arg)
{
    (void)res;
    (void)unavailable;
    (void)error;
    (void)arg;
}

void store_record_call(struct pg_pool *pool, const char *app_id, const char *method,
                       const char *out_serial_no, const char *outcome, const char *code,
                       const char *sub_code, long http_status, long latency_ms)
{
    char status[16], latency[32];
    snprintf(status, sizeof(status), "%ld", http_status);
    snprintf(latency, sizeof(latency), "%ld", latency_ms);
    const char *values[] = {
        app_id, method, out_serial_no, outcome, code, sub_code, http_status ? status : NULL,
        latency};
    pg_pool_exec(pool, "record_call", 8, values, on_recorded, NULL);
}

/* --- cards --------------------------------------------------------------- */

static void on_cards(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct pending *p = arg;
    store_cards_cb cb = (store_cards_cb)p->cb;
    void *uarg = p->arg;
    free(p);
    if (!result_ok(res)) {
        cb(NULL, unavailable, error ? error : "query failed", uarg);
        return;
    }
    static const char *const names[] = {"biz_card_no", "external_card_no", "out_serial_no",
                                        "user_id",     "card_template_id", "status",
                                        "created_at"};
    /* Written as text straight from the rows (the database's text is
     * UTF-8): a lookup is answered from here. */
    struct jsonw w = {0};
    jsonw_puts(&w, "{\"cards\":[");
    for (int row = 0; row < PQntuples(res); row++) {
        jsonw_puts(&w, row ? ",{" : "{");
        for (int col = 0; col < 7; col++) {
            if (col)
                jsonw_raw(&w, ",", 1);
            jsonw_string(&w, names[col]);
            jsonw_raw(&w, ":", 1);
            jsonw_string(&w, PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col));
        }
        jsonw_raw(&w, "}", 1);
    }
    jsonw_raw(&w, "]}", 2);
    char *text = jsonw_take(&w);
    if (text)
        cb(text, 0, NULL, uarg);
    else
        cb(NULL, 0, "out of memory", uarg);
    free(text);
}

int store_cards_list(struct pg_pool *pool, const char *app_id, enum store_card_filter by,
                     const char *value, store_cards_cb cb, void *arg)
{
    static const char *const stmts[] = {"cards_by_external_card_no", "cards_by_user_id",
                                        "cards_by_out_serial_no"};
    const char *values[] = {app_id, value};
    return exec_or_free(pool, stmts[by], 2, values, on_cards, pending_new((void (*)(void))cb, arg));
}

/* --- one row ------------------------------------------------------------- */

#define STORE_ROW_MAX 8

static void on_row(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct pending *p = arg;
    store_row_cb cb = (store_row_cb)p->cb;
    void *uarg = p->arg;
    free(p);
    if (!result_ok(res)) {
        cb(NULL, unavailable, error ? error : "query failed", uarg);
        return;
    }
    if (PQntuples(res) == 0) {
        cb(NULL, 0, NULL, uarg);
        return;
    }
    const char *row[STORE_ROW_MAX] = {0};
    int n = PQnfields(res) < STORE_ROW_MAX ? PQnfields(res) : STORE_ROW_MAX;
    for (int i = 0; i < n; i++)
        row[i] = PQgetisnull(res, 0, i) ? NULL : PQgetvalue(res, 0, i);
    cb(row, 0, NULL, uarg);
}

int store_template_configure(struct pg_pool *pool, const char *app_id, const char *template_id,
                             const char *caller, const char *settings, const char *callback,
                             store_row_cb cb, void *arg)
{
    const char *values[] = {app_id, template_id, caller, settings, callback};
    return exec_or_free(pool, "template_configure", 5, values, on_row,
                        pending_new((void (*)(void))cb, arg));
}

int store_template_activation(struct pg_pool *pool, const char *app_id, const char *template_id,
                              store_row_cb cb, void *arg)
{
    const char *values[] = {app_id, template_id};
    return exec_or_free(pool, "template_activation", 2, values, on_row,
                        pending_new((void (*)(void))cb, arg));
}

/* --- abandoned requests ------------------------------------------------- */

static void on_abandoned(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct pending *p = arg;
    store_abandoned_cb cb = (store_abandoned_cb)p->cb;
    void *uarg = p->arg;
    free(p);
    if (!result_ok(res)) {
        cb(NULL, 0, -1, error ? error : "query failed", uarg);
        return;
    }
    /* One row at least (the total); a NULL serial is no request. */
    long total = PQntuples(res) ? atol(PQgetvalue(res, 0, 2)) : 0;
    int n = PQntuples(res) && !PQgetisnull(res, 0, 0) ? PQntuples(res) : 0;
    struct store_abandoned *rows = calloc(n ? (size_t)n : 1, sizeof(*rows));
    if (!rows) {
        cb(NULL, 0, -1, "out of memory", uarg);
        return;
    }
    for (int i = 0; i < n; i++) {
        rows[i].serial = PQgetvalue(res, i, 0);
        if (!PQgetisnull(res, i, 1))
            rows[i].sealed =
                PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 1), &rows[i].sealed_len);
    }
    cb(rows, (size_t)n, total, NULL, uarg);
    for (int i = 0; i < n; i++)
        PQfreemem(rows[i].sealed);
    free(rows);
}

int store_abandoned(struct pg_pool *pool, const char *app_id, int limit, long backoff_ms,
                    long grace_ms, store_abandoned_cb cb, void *arg)
{
    char lim[16], backoff[32], grace[32];
    snprintf(lim, sizeof(lim), "%d", limit);
    snprintf(backoff, sizeof(backoff), "%ld", backoff_ms);
    snprintf(grace, sizeof(grace), "%ld", grace_ms);
    const char *values[] = {app_id, lim, backoff, grace};
    return exec_or_free(pool, "abandoned", 4, values, on_abandoned,
                        pending_new((void (*)(void))cb, arg));
}

/* --- schema -------------------------------------------------------------- */

static void on_schema(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct pending *p = arg;
    store_schema_cb cb = (store_schema_cb)p->cb;
    void *uarg = p->arg;
    free(p);
    if (!result_ok(res)) {
        cb(-1, error ? error : "schema check failed", uarg);
        return;
    }
    cb(PQntuples(res) == 1 ? 1 : 0, PQntuples(res) == 1 ? NULL : "schema is behind", uarg);
}

int store_schema_check(struct pg_pool *pool, store_schema_cb cb, void *arg)
{
    const char *values[] = {migrate_latest()};
    return exec_or_free(pool, "schema_check", 1, values, on_schema,
                        pending_new((void (*)(void))cb, arg));
}
