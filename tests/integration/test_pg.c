/* Integration tests of lib/pg (the non-blocking pool) and lib/migrate against
 * a real PostgreSQL: each test gets a fresh database from ts_pg_create_db()
 * in the throwaway cluster named by $CARDGATE_TEST_PG. */
#include <check.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate.h"
#include "pg.h"
#include "support.h"

#define WAIT_MS 30000 /* generous: a loaded 2-core box must not fail here */

/* ---- helpers ------------------------------------------------------------ */

static char *need_db(void)
{
    ck_assert_msg(getenv("CARDGATE_TEST_PG") && *getenv("CARDGATE_TEST_PG"),
                  "CARDGATE_TEST_PG is not set: it must hold the admin conninfo of a throwaway "
                  "PostgreSQL 15 cluster (e.g. \"host=127.0.0.1 port=25432 user=postgres "
                  "dbname=postgres\")");
    char *ci = ts_pg_create_db();
    ck_assert_msg(ci != NULL, "could not create a test database in $CARDGATE_TEST_PG");
    return ci;
}

static PGconn *db_connect(const char *ci)
{
    PGconn *c = PQconnectdb(ci);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    return c;
}

/* First value of a one-row query, copied into out. */
static void db_value(PGconn *c, const char *sql, char *out, size_t outlen)
{
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", sql,
                  PQresultErrorMessage(r));
    snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(int *)arg = 1;
}

/* Runs the loop until cond(arg) holds or ms pass; 1 when cond held. The
 * deadline timer makes a hang fail the test instead of blocking it. */
static int run_until(struct event_base *b, int (*cond)(void *), void *arg, long ms)
{
    int expired = 0;
    struct event *t = evtimer_new(b, on_deadline, &expired);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (!cond(arg) && !expired)
        event_base_loop(b, EVLOOP_ONCE);
    event_free(t);
    return cond(arg);
}

static int never(void *arg)
{
    return 0;
}

/* Runs the loop for ms, whatever happens. */
static void run_for(struct event_base *b, long ms)
{
    run_until(b, never, NULL, ms);
}

struct up_wait {
    struct pg_pool *p;
    int n;
};

static int pool_has_up(void *arg)
{
    struct up_wait *w = arg;
    return pg_pool_up(w->p) == w->n;
}

static void wait_up(struct event_base *b, struct pg_pool *p, int n)
{
    struct up_wait w = {p, n};
    ck_assert_msg(run_until(b, pool_has_up, &w, WAIT_MS),
                  "pool did not reach %d connections up "
                  "(%d up)",
                  n, pg_pool_up(p));
}

/* What one callback saw. */
struct call {
    int called;
    int unavailable;
    int has_res;
    ExecStatusType status;
    char value[128];  /* first value of the first row */
    char value2[128]; /* second value of the first row */
    char sqlstate[8];
    char error[512];
    int has_error;
};

static void on_call(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct call *c = arg;
    c->called++;
    c->unavailable = unavailable;
    c->has_res = res != NULL;
    c->has_error = error != NULL;
    snprintf(c->error, sizeof c->error, "%s", error ? error : "");
    if (!res)
        return;
    c->status = PQresultStatus(res);
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", st ? st : "");
    if (c->status == PGRES_TUPLES_OK && PQntuples(res) > 0) {
        snprintf(c->value, sizeof c->value, "%s", PQgetvalue(res, 0, 0));
        if (PQnfields(res) > 1)
            snprintf(c->value2, sizeof c->value2, "%s", PQgetvalue(res, 0, 1));
    }
}

static int call_done(void *arg)
{
    return ((struct call *)arg)->called > 0;
}

static void wait_call(struct event_base *b, struct call *c)
{
    ck_assert_msg(run_until(b, call_done, c, WAIT_MS), "callback not called in time");
    ck_assert_int_eq(c->called, 1);
}

static const struct pg_statement stmts[] = {
    {"add", "SELECT $1::int + $2::int, $3::text IS NULL", 3},
    {"echo", "SELECT $1::int, pg_backend_pid()", 1},
    {"div", "SELECT 1 / $1::int", 1},
    {"sleep", "SELECT pg_sleep($1::float8)::text, pg_backend_pid()", 1},
    {"pid", "SELECT pg_backend_pid()", 0},
};

static struct pg_pool *pool_new(struct event_base *b, const char *ci, int size)
{
    struct pg_pool_options o = {
        .conninfo = ci,
        .size = size,
        .statements = stmts,
        .n_statements = sizeof stmts / sizeof stmts[0],
        .retry_ms = 100,
    };
    char err[256] = "";
    struct pg_pool *p = pg_pool_new(b, &o, NULL, err, sizeof err);
    ck_assert_msg(p != NULL, "pg_pool_new: %s", err);
    return p;
}

static int table_exists(PGconn *c, const char *name)
{
    const char *v[1] = {name};
    PGresult *r = PQexecParams(c, "SELECT to_regclass($1) IS NOT NULL", 1, NULL, v, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    int yes = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return yes;
}

/* ---- migrate -------------------------------------------------------------- */

START_TEST(migrate_applies_once)
{
    char *ci = need_db();
    PGconn *c = db_connect(ci);
    char err[512] = "", buf[64];

    ck_assert_msg(migrations_count >= 1, "no migration embedded");
    for (size_t i = 1; i < migrations_count; i++) /* applied in file-name order */
        ck_assert_msg(strcmp(migrations[i - 1].name, migrations[i].name) < 0,
                      "migrations not sorted: %s, %s", migrations[i - 1].name, migrations[i].name);
    ck_assert_str_eq(migrate_latest(), migrations[migrations_count - 1].name);

    /* A fresh database is behind, and the message names what is missing. */
    ck_assert_int_eq(migrate_check(c, err, sizeof err), 1);
    ck_assert_msg(strstr(err, migrations[0].name) != NULL, "err: %s", err);

    ck_assert_int_eq(migrate_apply(c, err, sizeof err), (int)migrations_count);
    /* api.md §3: the tables the dashboards read. */
    ck_assert(table_exists(c, "cards"));
    ck_assert(table_exists(c, "card_requests"));
    db_value(c, "SELECT count(*) FROM schema_migrations", buf, sizeof buf);
    ck_assert_int_eq(atoi(buf), (int)migrations_count);
    for (size_t i = 0; i < migrations_count; i++) {
        const char *v[1] = {migrations[i].name};
        PGresult *r = PQexecParams(c,
                                   "SELECT applied_at IS NOT NULL FROM schema_migrations "
                                   "WHERE version = $1",
                                   1, NULL, v, NULL, NULL, 0);
        ck_assert_msg(PQntuples(r) == 1, "%s not recorded", migrations[i].name);
        ck_assert_str_eq(PQgetvalue(r, 0, 0), "t");
        PQclear(r);
    }
    err[0] = '\0';
    ck_assert_int_eq(migrate_check(c, err, sizeof err), 0);

    /* Idempotent: a second run applies nothing and changes nothing. */
    ck_assert_int_eq(migrate_apply(c, err, sizeof err), 0);
    db_value(c, "SELECT count(*) FROM schema_migrations", buf, sizeof buf);
    ck_assert_int_eq(atoi(buf), (int)migrations_count);
    ck_assert_int_eq(migrate_check(c, err, sizeof err), 0);

    /* The advisory lock is released: another session can take it at once. */
    PGconn *c2 = db_connect(ci);
    db_value(c2,
             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
             "(SELECT oid FROM pg_database WHERE datname = current_database())",
             buf, sizeof buf);
    ck_assert_str_eq(buf, "0");
    PQfinish(c2);
    PQfinish(c);
    free(ci);
}
END_TEST

START_TEST(migrate_check_behind)
{
    char *ci = need_db();
    PGconn *c = db_connect(ci);
    char err[512] = "", sql[256];
    ck_assert_int_eq(migrate_apply(c, err, sizeof err), (int)migrations_count);
    ck_assert_int_eq(migrate_check(c, err, sizeof err), 0);

    /* Forget the newest migration: the schema is now behind by exactly it. */
    snprintf(sql, sizeof sql, "DELETE FROM schema_migrations WHERE version = '%s'",
             migrate_latest());
    PQclear(PQexec(c, sql));
    err[0] = '\0';
    ck_assert_int_eq(migrate_check(c, err, sizeof err), 1);
    ck_assert_msg(strstr(err, migrate_latest()) != NULL, "err: %s", err);

    /* A version this binary does not know (a newer binary ran) is not "behind". */
    snprintf(sql, sizeof sql,
             "INSERT INTO schema_migrations (version) VALUES ('%s'), "
             "('999_from_the_future.sql')",
             migrate_latest());
    PQclear(PQexec(c, sql));
    ck_assert_int_eq(migrate_check(c, err, sizeof err), 0);

    /* A broken connection is an error, not "current" or "behind". */
    PQfinish(c);
    c = PQconnectdb("host=127.0.0.1 port=1 connect_timeout=2");
    ck_assert_int_eq(migrate_check(c, err, sizeof err), -1);
    ck_assert_int_eq(migrate_apply(c, err, sizeof err), -1);
    PQfinish(c);
    free(ci);
}
END_TEST

struct migrator {
    const char *ci;
    pthread_barrier_t *start;
    int applied;
    char err[512];
};

static void *migrator_run(void *arg)
{
    struct migrator *m = arg;
    PGconn *c = PQconnectdb(m->ci);
    pthread_barrier_wait(m->start); /* both connected: race for real */
    m->applied = PQstatus(c) == CONNECTION_OK ? migrate_apply(c, m->err, sizeof m->err) : -2;
    PQfinish(c);
    return NULL;
}

START_TEST(migrate_concurrent)
{
    char *ci = need_db();
    enum { N = 3 };
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N);
    struct migrator m[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        m[i] = (struct migrator){.ci = ci, .start = &start};
        ck_assert_int_eq(pthread_create(&th[i], NULL, migrator_run, &m[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(m[i].applied >= 0, "migrator %d: %d %s", i, m[i].applied, m[i].err);
        total += m[i].applied;
    }
    pthread_barrier_destroy(&start);
    /* Every migration applied exactly once among all of them. */
    ck_assert_int_eq(total, (int)migrations_count);
    PGconn *c = db_connect(ci);
    char buf[64], err[256];
    db_value(c, "SELECT count(*) FROM schema_migrations", buf, sizeof buf);
    ck_assert_int_eq(atoi(buf), (int)migrations_count);
    ck_assert_int_eq(migrate_check(c, err, sizeof err), 0);
    PQfinish(c);
    free(ci);
}
END_TEST

/* ---- pool ------------------------------------------------------------------- */

START_TEST(pool_runs_prepared)
{
    char *ci = need_db();
    struct event_base *b = event_base_new();
    struct pg_pool *p = pool_new(b, ci, 2);
    wait_up(b, p, 2);

    struct call c = {0};
    const char *v[3] = {"2", "40", NULL}; /* NULL is SQL NULL */
    ck_assert_int_eq(pg_pool_exec(p, "add", 3, v, on_call, &c), 0);
    ck_assert_int_eq(c.called, 0); /* never from inside the call */
    wait_call(b, &c);
    ck_assert_int_eq(c.unavailable, 0);
    ck_assert(c.has_res);
    ck_assert_int_eq(c.status, PGRES_TUPLES_OK);
    ck_assert_str_eq(c.value, "42");
    ck_assert_str_eq(c.value2, "t");
    ck_assert(!c.has_error);

    /* Several rows come back too. */
    pg_pool_free(p);
    struct pg_statement rows = {"rows", "SELECT generate_series(1, $1::int)", 1};
    struct pg_pool_options o = {.conninfo = ci, .size = 1, .statements = &rows, .n_statements = 1};
    char err[256];
    p = pg_pool_new(b, &o, NULL, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    wait_up(b, p, 1);
    struct call n = {0};
    const char *five[1] = {"5"};
    ck_assert_int_eq(pg_pool_exec(p, "rows", 1, five, on_call, &n), 0);
    wait_call(b, &n);
    ck_assert_int_eq(n.status, PGRES_TUPLES_OK);
    ck_assert_str_eq(n.value, "1");
    pg_pool_free(p);
    event_base_free(b);
    free(ci);
}
END_TEST

enum { FIFO_N = 1000 };

struct fifo {
    int got;
    int seen[FIFO_N];
    int value[FIFO_N]; /* in arrival order */
    int pid[FIFO_N];
    int bad;
    char bad_msg[256];
};

static void on_fifo(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct fifo *f = arg;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || f->got >= FIFO_N) {
        if (!f->bad)
            snprintf(f->bad_msg, sizeof f->bad_msg, "unavailable=%d %s", unavailable,
                     error ? error : "");
        f->bad++;
        return;
    }
    int v = atoi(PQgetvalue(res, 0, 0));
    f->value[f->got] = v;
    f->pid[f->got] = atoi(PQgetvalue(res, 0, 1));
    f->got++;
    if (v >= 0 && v < FIFO_N)
        f->seen[v]++;
}

static int fifo_done(void *arg)
{
    struct fifo *f = arg;
    return f->got + f->bad >= FIFO_N;
}

static void run_fifo(int size)
{
    char *ci = need_db();
    struct event_base *b = event_base_new();
    struct pg_pool *p = pool_new(b, ci, size);
    wait_up(b, p, size);
    struct fifo *f = calloc(1, sizeof *f);
    char vals[FIFO_N][12];
    for (int i = 0; i < FIFO_N; i++) {
        snprintf(vals[i], sizeof vals[i], "%d", i);
        const char *v[1] = {vals[i]};
        ck_assert_int_eq(pg_pool_exec(p, "echo", 1, v, on_fifo, f), 0);
    }
    ck_assert_msg(run_until(b, fifo_done, f, WAIT_MS * 2), "only %d of %d done", f->got, FIFO_N);
    ck_assert_msg(f->bad == 0, "%d failed: %s", f->bad, f->bad_msg);
    for (int i = 0; i < FIFO_N; i++)
        ck_assert_msg(f->seen[i] == 1, "query %d answered %d times", i, f->seen[i]);
    /* FIFO per connection: on each backend the values rise. */
    for (int i = 0; i < FIFO_N; i++)
        for (int j = i + 1; j < FIFO_N; j++)
            if (f->pid[j] == f->pid[i]) {
                ck_assert_msg(f->value[j] > f->value[i], "backend %d: %d after %d", f->pid[i],
                              f->value[j], f->value[i]);
                break;
            }
    int pids = 0;
    for (int i = 0; i < FIFO_N; i++) {
        int first = 1;
        for (int j = 0; j < i && first; j++)
            first = f->pid[j] != f->pid[i];
        pids += first;
    }
    ck_assert_int_le(pids, size); /* one query at a time on at most `size` backends */
    if (size == 1)                /* one connection: the whole stream is in order */
        for (int i = 0; i < FIFO_N; i++)
            ck_assert_int_eq(f->value[i], i);
    free(f);
    pg_pool_free(p);
    event_base_free(b);
    free(ci);
}

START_TEST(pool_fifo_one_connection)
{
    run_fifo(1);
}
END_TEST

START_TEST(pool_fifo_four_connections)
{
    run_fifo(4);
}
END_TEST

START_TEST(pool_error_result)
{
    char *ci = need_db();
    struct event_base *b = event_base_new();
    struct pg_pool *p = pool_new(b, ci, 1);
    wait_up(b, p, 1);

    /* A statement failing on the server is an error result, not unavailable. */
    struct call c = {0};
    const char *zero[1] = {"0"};
    ck_assert_int_eq(pg_pool_exec(p, "div", 1, zero, on_call, &c), 0);
    wait_call(b, &c);
    ck_assert_int_eq(c.unavailable, 0);
    ck_assert(c.has_res);
    ck_assert_int_eq(c.status, PGRES_FATAL_ERROR);
    ck_assert_str_eq(c.sqlstate, "22012"); /* division_by_zero */
    ck_assert(c.has_error);
    ck_assert_msg(strchr(c.error, '\n') == NULL, "error is not one line: %s", c.error);
    ck_assert_msg(strstr(c.error, "division by zero") != NULL, "error: %s", c.error);

    /* A bad parameter value, likewise (22P02 invalid_text_representation). */
    struct call t = {0};
    const char *text[1] = {"not a number"};
    ck_assert_int_eq(pg_pool_exec(p, "div", 1, text, on_call, &t), 0);
    wait_call(b, &t);
    ck_assert_int_eq(t.unavailable, 0);
    ck_assert_str_eq(t.sqlstate, "22P02");

    /* A statement the pool never prepared: an error, through the callback. */
    struct call u = {0};
    ck_assert_int_eq(pg_pool_exec(p, "nope", 0, NULL, on_call, &u), 0);
    ck_assert_int_eq(u.called, 0);
    wait_call(b, &u);
    ck_assert_int_eq(u.unavailable, 0);
    ck_assert(!u.has_res);
    ck_assert(u.has_error);

    /* The connection is still good afterwards. */
    struct call ok = {0};
    const char *two[1] = {"2"};
    ck_assert_int_eq(pg_pool_exec(p, "div", 1, two, on_call, &ok), 0);
    wait_call(b, &ok);
    ck_assert_int_eq(ok.status, PGRES_TUPLES_OK);
    ck_assert_str_eq(ok.value, "0");
    ck_assert_int_eq(pg_pool_up(p), 1);
    pg_pool_free(p);
    event_base_free(b);
    free(ci);
}
END_TEST

START_TEST(pool_bad_statement_never_up)
{
    char *ci = need_db();
    struct event_base *b = event_base_new();
    struct pg_statement bad = {"bad", "SELEC 1", 0};
    struct pg_pool_options o = {
        .conninfo = ci, .size = 2, .statements = &bad, .n_statements = 1, .retry_ms = 100};
    char err[256];
    struct pg_pool *p = pg_pool_new(b, &o, NULL, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    run_for(b, 1500);                   /* several connect + prepare attempts */
    ck_assert_int_eq(pg_pool_up(p), 0); /* never handed out unprepared */
    struct call c = {0};
    ck_assert_int_eq(pg_pool_exec(p, "bad", 0, NULL, on_call, &c), 0);
    wait_call(b, &c);
    ck_assert_int_eq(c.unavailable, 1);
    pg_pool_free(p);
    event_base_free(b);
    free(ci);
}
END_TEST

START_TEST(pool_queue_limit)
{
    char *ci = need_db();
    struct event_base *b = event_base_new();
    struct pg_pool_options o = {.conninfo = ci,
                                .size = 1,
                                .statements = stmts,
                                .n_statements = sizeof stmts / sizeof stmts[0],
                                .max_queue = 3};
    char err[256];
    struct pg_pool *p = pg_pool_new(b, &o, NULL, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    wait_up(b, p, 1);
    struct call c[5] = {{0}};
    const char *v[1] = {"0.2"};
    /* One in flight + 3 waiting fit; the fifth is refused with no callback. */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pg_pool_exec(p, "sleep", 1, v, on_call, &c[i]), 0);
    ck_assert_int_eq(pg_pool_exec(p, "sleep", 1, v, on_call, &c[4]), -1);
    for (int i = 0; i < 4; i++) {
        wait_call(b, &c[i]);
        ck_assert_int_eq(c[i].status, PGRES_TUPLES_OK);
    }
    run_for(b, 100);
    ck_assert_int_eq(c[4].called, 0);
    pg_pool_free(p);
    event_base_free(b);
    free(ci);
}
END_TEST

static void terminate_backends(PGconn *admin)
{
    PGresult *r = PQexec(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()");
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
}

/* The sleep is running on the server (not merely sent). */
static int sleep_running(PGconn *admin)
{
    char buf[16];
    db_value(admin,
             "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
             "AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
             buf, sizeof buf);
    return atoi(buf) > 0;
}

START_TEST(pool_survives_terminated_backends)
{
    char *ci = need_db();
    PGconn *admin = db_connect(ci);
    struct event_base *b = event_base_new();
    struct pg_pool *p = pool_new(b, ci, 2);
    wait_up(b, p, 2);

    struct call before = {0};
    ck_assert_int_eq(pg_pool_exec(p, "pid", 0, NULL, on_call, &before), 0);
    wait_call(b, &before);
    ck_assert_int_eq(before.status, PGRES_TUPLES_OK);

    /* One connection busy with a long query, the other idle: kill both. */
    struct call inflight = {0};
    const char *v[1] = {"60"};
    ck_assert_int_eq(pg_pool_exec(p, "sleep", 1, v, on_call, &inflight), 0);
    for (int i = 0; i < 100 && !sleep_running(admin); i++)
        run_for(b, 100);
    ck_assert_msg(sleep_running(admin), "the sleep never started");
    terminate_backends(admin);

    wait_call(b, &inflight);
    ck_assert_int_eq(inflight.unavailable, 1);
    ck_assert(!inflight.has_res);
    ck_assert(inflight.has_error);

    /* It comes back by itself, statements prepared again on new backends. */
    wait_up(b, p, 2);
    struct call after = {0};
    ck_assert_int_eq(pg_pool_exec(p, "pid", 0, NULL, on_call, &after), 0);
    wait_call(b, &after);
    ck_assert_int_eq(after.unavailable, 0);
    ck_assert_int_eq(after.status, PGRES_TUPLES_OK);
    ck_assert_str_ne(after.value, before.value);
    struct call add = {0};
    const char *three[3] = {"1", "2", "x"};
    ck_assert_int_eq(pg_pool_exec(p, "add", 3, three, on_call, &add), 0);
    wait_call(b, &add);
    ck_assert_str_eq(add.value, "3");
    ck_assert_str_eq(add.value2, "f");

    pg_pool_free(p);
    event_base_free(b);
    PQfinish(admin);
    free(ci);
}
END_TEST

/* A query that must start by a deadline fails unsent when no connection
 * frees up in time — the one busy connection's query goes on — and one
 * whose deadline is far goes when the connection is free. */
START_TEST(pool_queue_deadline)
{
    char *ci = need_db();
    struct event_base *b = event_base_new();
    struct pg_pool *p = pool_new(b, ci, 1);
    wait_up(b, p, 1);
    struct call slow = {0}, late = {0}, patient = {0};
    const char *v[1] = {"1.5"};
    ck_assert_int_eq(pg_pool_exec(p, "sleep", 1, v, on_call, &slow), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long long now = (long long)t0.tv_sec * 1000 + t0.tv_nsec / 1000000;
    const char *e[1] = {"7"};
    ck_assert_int_eq(pg_pool_exec_until(p, "echo", 1, e, now + 300, on_call, &late), 0);
    ck_assert_int_eq(pg_pool_exec_until(p, "echo", 1, e, now + 60000, on_call, &patient), 0);
    wait_call(b, &late);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long took = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    ck_assert_int_eq(late.unavailable, 1);
    ck_assert(!late.has_res);
    ck_assert_msg(strstr(late.error, "deadline") != NULL, "%s", late.error);
    ck_assert_msg(took < 1200, "failed after %lld ms, not at its deadline", took);
    ck_assert_int_eq(slow.called, 0); /* still sleeping: the deadline did not touch it */
    wait_call(b, &slow);
    ck_assert_int_eq(slow.status, PGRES_TUPLES_OK);
    wait_call(b, &patient);
    ck_assert_str_eq(patient.value, "7");
    pg_pool_free(p);
    event_base_free(b);
    free(ci);
}
END_TEST

START_TEST(pool_query_timeout)
{
    char *ci = need_db();
    struct event_base *b = event_base_new();
    struct pg_pool_options o = {.conninfo = ci,
                                .size = 1,
                                .statements = stmts,
                                .n_statements = sizeof stmts / sizeof stmts[0],
                                .retry_ms = 100,
                                .query_timeout_ms = 500};
    char err[256];
    struct pg_pool *p = pg_pool_new(b, &o, NULL, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    wait_up(b, p, 1);
    struct call slow = {0};
    const char *v[1] = {"30"};
    ck_assert_int_eq(pg_pool_exec(p, "sleep", 1, v, on_call, &slow), 0);
    wait_call(b, &slow); /* long before the 30 s sleep would end */
    ck_assert_int_eq(slow.unavailable, 1);
    ck_assert(!slow.has_res);
    wait_up(b, p, 1);
    struct call ok = {0};
    ck_assert_int_eq(pg_pool_exec(p, "pid", 0, NULL, on_call, &ok), 0);
    wait_call(b, &ok);
    ck_assert_int_eq(ok.status, PGRES_TUPLES_OK);
    pg_pool_free(p);
    event_base_free(b);
    free(ci);
}
END_TEST

START_TEST(pool_closed_port)
{
    char *ci = need_db(); /* the suite needs the cluster anyway */
    int port = ts_free_port();
    ck_assert_int_gt(port, 0);
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d user=postgres dbname=postgres",
             port);
    struct event_base *b = event_base_new();
    struct pg_pool *p = pool_new(b, conninfo, 2);
    ck_assert_int_eq(pg_pool_up(p), 0);

    /* No connection up: the answer is immediate, and "unavailable". */
    struct call c = {0};
    ck_assert_int_eq(pg_pool_exec(p, "pid", 0, NULL, on_call, &c), 0);
    ck_assert_int_eq(c.called, 0);
    ck_assert_msg(run_until(b, call_done, &c, 2000), "no quick answer");
    ck_assert_int_eq(c.unavailable, 1);
    ck_assert(!c.has_res);
    ck_assert(c.has_error);

    run_for(b, 1000); /* a few refused reconnects */
    ck_assert_int_eq(pg_pool_up(p), 0);
    struct call again = {0};
    ck_assert_int_eq(pg_pool_exec(p, "pid", 0, NULL, on_call, &again), 0);
    ck_assert_msg(run_until(b, call_done, &again, 2000), "no quick answer");
    ck_assert_int_eq(again.unavailable, 1);
    pg_pool_free(p);
    event_base_free(b);
    free(ci);
}
END_TEST

START_TEST(pool_bad_options)
{
    struct event_base *b = event_base_new();
    char err[256] = "";
    struct pg_pool_options o = {.conninfo = "host=127.0.0.1 nonsense_key=1"};
    ck_assert_ptr_null(pg_pool_new(b, &o, NULL, err, sizeof err));
    ck_assert_msg(strstr(err, "nonsense_key") != NULL, "err: %s", err);
    struct pg_statement s = {NULL, "SELECT 1", 0};
    struct pg_pool_options o2 = {.conninfo = "host=127.0.0.1", .statements = &s, .n_statements = 1};
    err[0] = '\0';
    ck_assert_ptr_null(pg_pool_new(b, &o2, NULL, err, sizeof err));
    ck_assert(err[0] != '\0');
    event_base_free(b);
}
END_TEST

struct freer {
    struct pg_pool *p;
    int called;
};

static void on_free_pool(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct freer *f = arg;
    f->called++;
    pg_pool_free(f->p); /* from inside a callback: allowed */
}

static int freer_done(void *arg)
{
    return ((struct freer *)arg)->called > 0;
}

START_TEST(pool_free_with_pending)
{
    char *ci = need_db();
    struct event_base *b = event_base_new();
    struct pg_pool *p = pool_new(b, ci, 1);
    wait_up(b, p, 1);

    /* Freed with a query in flight and two waiting: no callback runs. */
    struct call c[3] = {{0}};
    const char *v[1] = {"5"};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pg_pool_exec(p, "sleep", 1, v, on_call, &c[i]), 0);
    pg_pool_free(p);
    run_for(b, 300);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(c[i].called, 0);

    /* Freed from inside a callback, with others finished in the same batch. */
    p = pool_new(b, ci, 2);
    wait_up(b, p, 2);
    struct freer f = {p, 0};
    struct call other = {0};
    ck_assert_int_eq(pg_pool_exec(p, "pid", 0, NULL, on_free_pool, &f), 0);
    ck_assert_int_eq(pg_pool_exec(p, "pid", 0, NULL, on_call, &other), 0);
    ck_assert(run_until(b, freer_done, &f, WAIT_MS));
    run_for(b, 300);
    ck_assert_int_eq(f.called, 1);
    ck_assert_int_le(other.called, 1);
    event_base_free(b);
    free(ci);
}
END_TEST

int main(void)
{
    if (!getenv("CARDGATE_TEST_PG") || !*getenv("CARDGATE_TEST_PG"))
        fprintf(stderr, "test_pg: CARDGATE_TEST_PG is not set; every database test will fail\n");
    Suite *s = suite_create("pg");
    TCase *m = tcase_create("migrate");
    tcase_set_timeout(m, 120);
    tcase_add_test(m, migrate_applies_once);
    tcase_add_test(m, migrate_check_behind);
    tcase_add_test(m, migrate_concurrent);
    suite_add_tcase(s, m);
    TCase *t = tcase_create("pool");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, pool_runs_prepared);
    tcase_add_test(t, pool_fifo_one_connection);
    tcase_add_test(t, pool_fifo_four_connections);
    tcase_add_test(t, pool_error_result);
    tcase_add_test(t, pool_bad_statement_never_up);
    tcase_add_test(t, pool_queue_limit);
    tcase_add_test(t, pool_survives_terminated_backends);
    tcase_add_test(t, pool_query_timeout);
    tcase_add_test(t, pool_queue_deadline);
    tcase_add_test(t, pool_closed_port);
    tcase_add_test(t, pool_bad_options);
    tcase_add_test(t, pool_free_with_pending);
    suite_add_tcase(s, t);
    return ts_run_suite(s);
}
