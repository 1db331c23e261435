/* The ops dashboards: migrations/005_dashboard.sql's cardgate_dashboard role
 * and deploy/grafana/cardgate.json, against the real schema.
 *
 * After a scenario (cards opened, one refused by the gateway, one updated
 * and deleted, one request left pending past its lock), a login role of the
 * test's own, granted cardgate_dashboard, runs every panel's SQL (Grafana's
 * macros made plain SQL): each one succeeds and returns rows. The same role
 * reads each of the six views and is refused every table, the ledger's
 * response_body, and changes through the one updatable view; what it may
 * use is exactly the views. Re-running cardgate_dashboard_grant() takes back
 * what PUBLIC was given on the tables, now and by default privileges.
 *
 * In a private cluster (the role must not exist yet): a migrating user that
 * may not create roles migrates, told how an admin makes the role, and the
 * admin's later CREATE ROLE + cardgate_dashboard_grant() gives the grants; a
 * migration racing another database's CREATE ROLE (uncommitted while it
 * checks) still succeeds. */
#include <check.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate.h"
#include "support.h"

#define DASHBOARD_JSON CARDGATE_SOURCE_DIR "/deploy/grafana/cardgate.json"
#define LOGIN_PASSWORD "cg-dash-test"
#define MAX_QUERIES 64

static const char *const views[] = {"cards_opened_per_day",   "gateway_failures_per_hour",
                                    "gateway_calls_per_hour", "card_requests_by_state",
                                    "card_changes_per_day",   "stale_requests"};
#define N_VIEWS (sizeof(views) / sizeof(*views))
/* The same, sorted, as string_agg(relname, ',' ORDER BY relname) gives them. */
#define VIEWS_SORTED                                                                               \
    "card_changes_per_day,card_requests_by_state,cards_opened_per_day,gateway_calls_per_hour,"     \
    "gateway_failures_per_hour,stale_requests"

static const char *const json_headers[] = {TS_AUTH, TS_JSON, NULL};
static const char *const auth_headers[] = {TS_AUTH, NULL};

/* The test's login role (roles are cluster-wide: its own name, dropped at
 * the end of the test and again, if a failure left it, by the runner). */
static char login_role[64];
/* The private cluster of the bootstrap tests. */
static struct ts_pg pg;
static int pg_up;

/* ---------------------------------------------------------------- helpers */

static PGconn *db_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect %s: %s", conninfo, PQerrorMessage(c));
    return c;
}

/* conninfo with another user (a later keyword wins) and, when given, dbname. */
static void conninfo_as(char *out, size_t n, const char *base, const char *user, const char *dbname)
{
    snprintf(out, n, "%s user=%s password=%s%s%s", base, user, LOGIN_PASSWORD,
             dbname ? " dbname=" : "", dbname ? dbname : "");
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
                  PQresultErrorMessage(r));
    PQclear(r);
}

/* Runs sql on a new connection to db; asserts it succeeds. */
static void db_exec(const char *db, const char *sql)
{
    PGconn *c = db_connect(db);
    exec_ok(c, sql);
    PQfinish(c);
}

/* The first value of sql's first row, malloc'd ("" for NULL). */
static char *db_text(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", sql,
                  PQresultErrorMessage(r));
    char *s = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return s;
}

/* Asserts that sql is refused for lack of privilege (SQLSTATE 42501). */
static void assert_denied(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    ck_assert_msg(PQresultStatus(r) == PGRES_FATAL_ERROR && state && strcmp(state, "42501") == 0,
                  "%s as the dashboard role: %s (want permission denied)", sql,
                  PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK
                      ? "allowed"
                      : PQresultErrorMessage(r));
    ck_assert_msg(strstr(PQresultErrorMessage(r), "permission denied") != NULL, "%s: %s", sql,
                  PQresultErrorMessage(r));
    PQclear(r);
}

/* Runs sql, asserts it succeeds; returns its rows (the caller clears). */
static PGresult *query_ok(PGconn *c, const char *what, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s\n%s", what, PQresultErrorMessage(r),
                  sql);
    return r;
}

/* What cardgate_dashboard may use in db's public schema, checked in the
 * catalogue (as an admin): SELECT on the six views and nothing else — no
 * table, sequence or column, no change through a view, no default
 * privilege for it or PUBLIC on what cardgate's owner creates later. */
static void assert_grants(const char *db)
{
    PGconn *c = db_connect(db);
    char *readable = db_text(
        c, "SELECT coalesce(string_agg(c.relname, ',' ORDER BY c.relname), '') FROM pg_class c "
           "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND "
           "c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND "
           "(has_table_privilege('cardgate_dashboard', c.oid, 'SELECT') OR "
           "has_any_column_privilege('cardgate_dashboard', c.oid, 'SELECT'))");
    ck_assert_msg(strcmp(readable, VIEWS_SORTED) == 0,
                  "cardgate_dashboard may read %s; want the views " VIEWS_SORTED, readable);
    free(readable);
    char *writable = db_text(
        c, "SELECT coalesce(string_agg(c.relname, ','), '') FROM pg_class c JOIN pg_namespace n "
           "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND "
           "c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND "
           "(has_table_privilege('cardgate_dashboard', c.oid, "
           "'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') OR "
           "has_any_column_privilege('cardgate_dashboard', c.oid, 'INSERT, UPDATE, REFERENCES') "
           "OR (c.relkind = 'S' AND has_sequence_privilege('cardgate_dashboard', c.oid, "
           "'USAGE, UPDATE')))");
    ck_assert_msg(writable[0] == '\0', "cardgate_dashboard may change or use %s", writable);
    free(writable);
    char *schema = db_text(c, "SELECT has_schema_privilege('cardgate_dashboard', 'public', "
                              "'USAGE')::text || ' ' || has_schema_privilege('cardgate_dashboard', "
                              "'public', 'CREATE')::text");
    ck_assert_str_eq(schema, "true false");
    free(schema);
    char *defaults = db_text(c, "SELECT count(*) FROM pg_default_acl d, "
                                "aclexplode(d.defaclacl) a WHERE a.grantee = 0 OR "
                                "a.grantee = 'cardgate_dashboard'::regrole");
    ck_assert_msg(strcmp(defaults, "0") == 0, "%s default privileges for PUBLIC/the role",
                  defaults);
    free(defaults);
    PQfinish(c);
}

/* ------------------------------------------------------------ the scenario */

static char *open_card(const struct ts_stack *st, const char *serial, long want)
{
    char url[128];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/v1/cards", st->cg.url);
    char *body = ts_open_body(serial, "");
    ck_assert_int_eq(ts_http_call("POST", url, json_headers, body, &r), 0);
    free(body);
    ck_assert_msg(r.status == want, "open %s: %ld %s", serial, r.status, r.body);
    char *biz = want == 201 ? ts_json_at(&r, "biz_card_no") : NULL;
    ts_http_free(&r);
    return biz;
}

/* Cards opened, one open refused by the gateway (20000), one card updated
 * and deleted, and a request claimed by a holder that died at once (the
 * ledger's own claim with a 1 ms lock, as an instance killed mid-call
 * leaves it; no sweeper runs in the test's cardgate). Every view then has
 * rows. */
static void scenario(struct ts_stack *st)
{
    char *biz = open_card(st, "dash-open-1", 201);
    free(open_card(st, "dash-open-2", 201));
    ck_assert_int_eq(ts_sim_fault(&st->sim, "{\"mode\":\"code_20000\",\"method\":"
                                            "\"alipay.marketing.card.open\",\"out_serial_no\":"
                                            "\"dash-fail-1\",\"count\":1}"),
                     0);
    open_card(st, "dash-fail-1", 502);

    char url[256];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/v1/cards/%s", st->cg.url, biz);
    ck_assert_int_eq(ts_http_call("PATCH", url, json_headers,
                                  "{\"out_serial_no\":\"dash-up-1\",\"occur_time\":"
                                  "\"2026-11-30 10:15:00\",\"card\":{\"point\":\"120\"}}",
                                  &r),
                     0);
    ck_assert_msg(r.status == 200, "update: %ld %s", r.status, r.body);
    ts_http_free(&r);
    snprintf(url, sizeof(url), "%s/v1/cards/%s?out_serial_no=dash-del-1&reason_code=CANCEL",
             st->cg.url, biz);
    ck_assert_int_eq(ts_http_call("DELETE", url, auth_headers, NULL, &r), 0);
    ck_assert_msg(r.status == 200, "delete: %ld %s", r.status, r.body);
    ts_http_free(&r);
    free(biz);

    ck_assert_int_eq(
        ts_pg_long(st->db, "SELECT count(*) FROM card_request_claim_op("
                           "(SELECT app_id FROM cards LIMIT 1), 'dash-stale-1', 'dash-hash', "
                           "'pos', 'dash-token', 1, 'open', NULL, NULL, NULL, 0, '\\x00'::bytea) "
                           "WHERE verdict = 'claimed'"),
        1);
    long long until = ts_now_ms() + 5000;
    while (ts_pg_long(st->db, "SELECT count(*) FROM stale_requests") < 1 && ts_now_ms() < until)
        usleep(20 * 1000);

    /* Each view has rows (as the admin: the scenario did its part). */
    for (size_t i = 0; i < N_VIEWS; i++) {
        char q[128];
        snprintf(q, sizeof(q), "SELECT count(*) FROM %s", views[i]);
        ck_assert_msg(ts_pg_long(st->db, q) >= 1, "the scenario left %s empty", views[i]);
    }
}

/* ---------------------------------------------------- the Grafana dashboard */

struct panel_query {
    char where[160]; /* panel title and refId */
    char format[16];
    char *sql; /* Grafana's rawSql */
};

static const char *str_of(json_object *o, const char *key)
{
    json_object *v;
    return o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

static int postgres_type(const char *t)
{
    return t && (strcmp(t, "grafana-postgresql-datasource") == 0 || strcmp(t, "postgres") == 0);
}

/* Collects every target of every panel (rows' panels too). */
static void collect(json_object *panels, struct panel_query *q, size_t *n)
{
    ck_assert_msg(panels && json_object_is_type(panels, json_type_array), "no panels array");
    for (size_t i = 0; i < json_object_array_length(panels); i++) {
        json_object *p = json_object_array_get_idx(panels, i), *sub, *targets, *ds;
        const char *title = str_of(p, "title");
        if (json_object_object_get_ex(p, "panels", &sub))
            collect(sub, q, n);
        if (strcmp(str_of(p, "type") ? str_of(p, "type") : "", "row") == 0)
            continue;
        json_object *panel_ds = json_object_object_get_ex(p, "datasource", &ds) ? ds : NULL;
        ck_assert_msg(json_object_object_get_ex(p, "targets", &targets) &&
                          json_object_array_length(targets) > 0,
                      "panel %s has no query", title ? title : "?");
        for (size_t j = 0; j < json_object_array_length(targets); j++) {
            json_object *t = json_object_array_get_idx(targets, j);
            json_object *t_ds = json_object_object_get_ex(t, "datasource", &ds) ? ds : panel_ds;
            ck_assert_int_lt(*n, MAX_QUERIES);
            struct panel_query *pq = &q[(*n)++];
            snprintf(pq->where, sizeof(pq->where), "panel \"%s\" target %s", title ? title : "?",
                     str_of(t, "refId") ? str_of(t, "refId") : "?");
            ck_assert_msg(postgres_type(str_of(t_ds, "type")),
                          "%s: not on the PostgreSQL data source", pq->where);
            ck_assert_msg(str_of(t, "rawSql") != NULL, "%s: no rawSql", pq->where);
            const char *format = str_of(t, "format");
            ck_assert_msg(format &&
                              (strcmp(format, "time_series") == 0 || strcmp(format, "table") == 0),
                          "%s: format %s", pq->where, format ? format : "(none)");
            snprintf(pq->format, sizeof(pq->format), "%s", format);
            pq->sql = strdup(str_of(t, "rawSql"));
        }
    }
}

/* rawSql with Grafana's macros made plain SQL: $__timeFilter(col) becomes
 * the last 7 days. Any other macro or variable is refused. malloc'd. */
static char *plain_sql(const struct panel_query *pq)
{
    static const char macro[] = "$__timeFilter(";
    size_t cap = strlen(pq->sql) * 8 + 64, n = 0;
    char *out = malloc(cap);
    const char *p = pq->sql, *m;
    while ((m = strstr(p, macro)) != NULL) {
        const char *col = m + strlen(macro), *end = strchr(col, ')');
        ck_assert_msg(end != NULL, "%s: unclosed $__timeFilter", pq->where);
        n += (size_t)snprintf(out + n, cap - n,
                              "%.*s(%.*s BETWEEN now() - interval '7 days' AND now())",
                              (int)(m - p), p, (int)(end - col), col);
        p = end + 1;
    }
    snprintf(out + n, cap - n, "%s", p);
    ck_assert_msg(strchr(out, '$') == NULL,
                  "%s: a Grafana macro or variable the test cannot make plain SQL: %s", pq->where,
                  out);
    return out;
}

static int is_time_type(Oid t)
{
    return t == 1114 || t == 1184; /* timestamp, timestamptz */
}

static int is_number_type(Oid t)
{
    return t == 20 || t == 21 || t == 23 || t == 700 || t == 701 || t == 1700;
}

/* Runs every panel's query as the dashboard role: each succeeds, returns
 * rows, and a time series has its "time" column and a number. Every view
 * is charted. */
static void run_panels(PGconn *dash)
{
    size_t len;
    char *text = ts_read_file(DASHBOARD_JSON, &len);
    ck_assert_msg(text != NULL, "cannot read " DASHBOARD_JSON);
    json_object *d = json_tokener_parse(text), *v;
    free(text);
    ck_assert_msg(d != NULL, DASHBOARD_JSON " is not JSON");
    ck_assert_str_eq(str_of(d, "title"), "cardgate");
    ck_assert_msg(str_of(d, "uid") && *str_of(d, "uid"), "no uid");
    ck_assert(json_object_object_get_ex(d, "schemaVersion", &v) && json_object_get_int(v) >= 36);
    ck_assert_msg(json_object_object_get_ex(d, "__inputs", &v) &&
                      json_object_array_length(v) >= 1 &&
                      postgres_type(str_of(json_object_array_get_idx(v, 0), "pluginId")),
                  "no PostgreSQL data source input");

    struct panel_query q[MAX_QUERIES];
    size_t n = 0;
    ck_assert(json_object_object_get_ex(d, "panels", &v));
    collect(v, q, &n);
    ck_assert_int_ge(n, N_VIEWS);

    for (size_t i = 0; i < N_VIEWS; i++) {
        int charted = 0;
        for (size_t j = 0; j < n && !charted; j++)
            charted = strstr(q[j].sql, views[i]) != NULL;
        ck_assert_msg(charted, "no panel queries %s", views[i]);
    }

    for (size_t i = 0; i < n; i++) {
        char *sql = plain_sql(&q[i]);
        PGresult *r = query_ok(dash, q[i].where, sql);
        ck_assert_msg(PQntuples(r) >= 1, "%s: no row after the scenario\n%s", q[i].where, sql);
        if (strcmp(q[i].format, "time_series") == 0) {
            int t = PQfnumber(r, "time"), number = 0;
            ck_assert_msg(t >= 0 && is_time_type(PQftype(r, t)),
                          "%s: a time series without a timestamp column \"time\"", q[i].where);
            for (int c = 0; c < PQnfields(r); c++)
                number |= c != t && is_number_type(PQftype(r, c));
            ck_assert_msg(number, "%s: a time series without a number", q[i].where);
        }
        PQclear(r);
        free(sql);
        free(q[i].sql);
    }
    json_object_put(d);
}

/* ----------------------------------------------------------- the login role */

static void drop_login_role(const char *admin)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP ROLE IF EXISTS %s", login_role);
    db_exec(admin, sql);
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* The runner's safety net: a failed test left its role behind. */
static void login_role_cleanup(void)
{
    const char *admin = getenv("CARDGATE_TEST_PG");
    if (!admin || !*admin)
        return;
    PGconn *c = PQconnectdb(admin);
    PQsetNoticeProcessor(c, quiet, NULL); /* "does not exist, skipping": the test dropped it */
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP ROLE IF EXISTS %s", login_role);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fprintf(stderr, "test_dashboard: could not drop role %s: %s", login_role,
                r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* ------------------------------------------------------------------ tests */

START_TEST(panels_run_as_the_dashboard_role)
{
    struct ts_stack st;
    char err[512], sql[512], ci[1024];
    ck_assert_msg(ts_stack_up(&st, NULL, NULL, err, sizeof(err)) == 0, "%s", err);
    scenario(&st);
    assert_grants(st.db);

    const char *admin = getenv("CARDGATE_TEST_PG");
    snprintf(sql, sizeof(sql),
             "CREATE ROLE %s LOGIN PASSWORD '" LOGIN_PASSWORD "'; GRANT cardgate_dashboard TO %s",
             login_role, login_role);
    db_exec(admin, sql);
    /* A database hardened further than PostgreSQL 15's defaults (PUBLIC
     * without USAGE on the schema): the role's own USAGE is what counts. */
    db_exec(st.db, "REVOKE ALL ON SCHEMA public FROM PUBLIC");
    conninfo_as(ci, sizeof(ci), st.db, login_role, NULL);
    PGconn *dash = db_connect(ci);

    /* The views, with their owner's rights: the role reads each. */
    for (size_t i = 0; i < N_VIEWS; i++) {
        snprintf(sql, sizeof(sql), "SELECT * FROM %s", views[i]);
        PGresult *r = query_ok(dash, views[i], sql);
        ck_assert_msg(PQntuples(r) >= 1, "%s: no row", views[i]);
        PQclear(r);
    }
    /* Never the tables behind them. */
    const char *const denied[] = {
        "SELECT * FROM card_requests LIMIT 1",
        "SELECT response_body FROM card_requests LIMIT 1",
        "SELECT request_hash, lock_token, sealed FROM card_requests LIMIT 1",
        "SELECT * FROM cards LIMIT 1",
        "SELECT * FROM gateway_calls LIMIT 1",
        "SELECT * FROM card_templates LIMIT 1",
        "SELECT * FROM schema_migrations LIMIT 1",
        "SELECT nextval('card_external_no_seq')",
        /* stale_requests is a simple view, so an updatable one: not by it. */
        "DELETE FROM stale_requests",
        "UPDATE stale_requests SET attempts = 0",
        "SELECT cardgate_dashboard_grant()",
        "CREATE TABLE dash_own (a int)",
    };
    for (size_t i = 0; i < sizeof(denied) / sizeof(*denied); i++)
        assert_denied(dash, denied[i]);

    run_panels(dash);

    /* PUBLIC given a table, now and by default: the role reads it... */
    db_exec(st.db, "GRANT SELECT ON card_requests TO PUBLIC; "
                   "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC; "
                   "CREATE TABLE dash_later (a int); INSERT INTO dash_later VALUES (1)");
    PGresult *r = query_ok(dash, "PUBLIC's grant", "SELECT response_body FROM card_requests");
    PQclear(r);
    r = query_ok(dash, "PUBLIC's default", "SELECT * FROM dash_later");
    PQclear(r);
    /* ...until an admin runs the grants again. */
    db_exec(st.db, "SELECT cardgate_dashboard_grant()");
    assert_denied(dash, "SELECT response_body FROM card_requests");
    assert_denied(dash, "SELECT * FROM dash_later");
    db_exec(st.db, "DROP TABLE dash_later");
    assert_grants(st.db);

    PQfinish(dash);
    drop_login_role(admin);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* Notices a connection receives, for the migration's advice to the admin. */
struct notices {
    char text[4096];
};

static void on_notice(void *arg, const PGresult *r)
{
    struct notices *n = arg;
    size_t used = strlen(n->text);
    snprintf(n->text + used, sizeof(n->text) - used, "%s", PQresultErrorMessage(r));
}

static void private_db(const char *name, const char *owner)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s OWNER %s", name, owner);
    db_exec(pg.conninfo, sql);
}

struct migrator {
    char conninfo[512];
    int applied;
    int done;
    char err[512];
};

static void *migrator_run(void *arg)
{
    struct migrator *m = arg;
    PGconn *c = PQconnectdb(m->conninfo);
    m->applied = PQstatus(c) == CONNECTION_OK ? migrate_apply(c, m->err, sizeof(m->err)) : -2;
    if (m->applied == -2)
        snprintf(m->err, sizeof(m->err), "%s", PQerrorMessage(c));
    PQfinish(c);
    __atomic_store_n(&m->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

START_TEST(migrating_user_without_createrole_and_a_racing_create)
{
    ck_assert_msg(pg_up, "the private cluster did not start");
    char ci[512], dbci[512];
    ck_assert_int_eq(ts_pg_long(pg.conninfo, "SELECT count(*) FROM pg_roles WHERE rolname = "
                                             "'cardgate_dashboard'"),
                     0);
    db_exec(pg.conninfo,
            "CREATE ROLE cg_owner LOGIN NOCREATEROLE NOSUPERUSER PASSWORD '" LOGIN_PASSWORD "'");
    private_db("boot_norole", "cg_owner");
    private_db("boot_race", "postgres");
    private_db("boot_after", "cg_owner");

    /* A user that may not create roles migrates; the admin is told how. */
    conninfo_as(ci, sizeof(ci), pg.conninfo, "cg_owner", "boot_norole");
    PGconn *c = db_connect(ci);
    struct notices notes = {{0}};
    PQsetNoticeReceiver(c, on_notice, &notes);
    char err[512] = "";
    ck_assert_msg(migrate_apply(c, err, sizeof(err)) == (int)migrations_count, "%s", err);
    ck_assert_msg(strstr(notes.text, "CREATE ROLE cardgate_dashboard NOLOGIN") &&
                      strstr(notes.text, "SELECT cardgate_dashboard_grant()"),
                  "notices: %s", notes.text);
    ck_assert_int_eq(ts_pg_long(pg.conninfo, "SELECT count(*) FROM pg_roles WHERE rolname = "
                                             "'cardgate_dashboard'"),
                     0);
    PGresult *r = PQexec(c, "SELECT cardgate_dashboard_grant()");
    ck_assert_msg(PQresultStatus(r) == PGRES_FATAL_ERROR &&
                      strstr(PQresultErrorMessage(r), "does not exist"),
                  "grant without the role: %s", PQresultErrorMessage(r));
    PQclear(r);

    /* Another database's migration creates the role and has not committed
     * when this one looks: it waits for that one, then finds the role. */
    PGconn *creator = db_connect(pg.conninfo);
    exec_ok(creator, "BEGIN");
    exec_ok(creator, "CREATE ROLE cardgate_dashboard NOLOGIN");
    struct migrator m = {.applied = -3};
    snprintf(m.conninfo, sizeof(m.conninfo), "%s dbname=boot_race", pg.conninfo);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, migrator_run, &m), 0);
    long waiting = 0;
    long long until = ts_now_ms() + 30000;
    while (
        !__atomic_load_n(&m.done, __ATOMIC_SEQ_CST) && ts_now_ms() < until &&
        (waiting = ts_pg_long(pg.conninfo, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                           "'boot_race' AND wait_event_type = 'Lock' AND "
                                           "wait_event = 'transactionid'")) < 1)
        usleep(20 * 1000);
    exec_ok(creator, "COMMIT");
    PQfinish(creator);
    pthread_join(th, NULL);
    ck_assert_msg(m.applied == (int)migrations_count, "racing migration: %d %s", m.applied, m.err);
    ck_assert_msg(waiting == 1, "the migration did not wait on the uncommitted CREATE ROLE");
    snprintf(dbci, sizeof(dbci), "%s dbname=boot_race", pg.conninfo);
    assert_grants(dbci);

    /* The admin made the role: the grants, run by the tables' owner. */
    exec_ok(c, "SELECT cardgate_dashboard_grant()");
    PQfinish(c);
    snprintf(dbci, sizeof(dbci), "%s dbname=boot_norole", pg.conninfo);
    assert_grants(dbci);

    /* Once the role exists, that user's migration grants by itself. */
    conninfo_as(ci, sizeof(ci), pg.conninfo, "cg_owner", "boot_after");
    c = db_connect(ci);
    memset(&notes, 0, sizeof(notes));
    PQsetNoticeReceiver(c, on_notice, &notes);
    ck_assert_msg(migrate_apply(c, err, sizeof(err)) == (int)migrations_count, "%s", err);
    ck_assert_msg(notes.text[0] == '\0', "notices: %s", notes.text);
    PQfinish(c);
    snprintf(dbci, sizeof(dbci), "%s dbname=boot_after", pg.conninfo);
    assert_grants(dbci);
}
END_TEST

static void private_up(void)
{
    pg_up = ts_pg_private_start(&pg) == 0;
}

static void private_down(void)
{
    ts_pg_private_destroy(&pg);
}

int main(void)
{
    snprintf(login_role, sizeof(login_role), "cg_dash_%d", (int)getpid());
    Suite *s = suite_create("dashboard");
    TCase *t = tcase_create("panels");
    tcase_set_timeout(t, 120);
    tcase_add_unchecked_fixture(t, NULL, login_role_cleanup);
    tcase_add_test(t, panels_run_as_the_dashboard_role);
    suite_add_tcase(s, t);
    TCase *b = tcase_create("bootstrap");
    tcase_set_timeout(b, 120);
    tcase_add_unchecked_fixture(b, private_up, private_down);
    tcase_add_test(b, migrating_user_without_createrole_and_a_racing_create);
    suite_add_tcase(s, b);
    return ts_run_suite(s);
}
