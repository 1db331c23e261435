/* Schema migration runner (blocking libpq; see migrate.h). */
#include "migrate.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The advisory lock key: "cardgate" as a big-endian int64. Fixed forever, so
 * that every version of the binary serialises against every other. */
#define MIGRATE_LOCK_KEY "7161130658052535397"

#define MIGRATE_TABLE_SQL                                                                          \
    "CREATE TABLE schema_migrations ("                                                             \
    " version text PRIMARY KEY,"                                                                   \
    " applied_at timestamptz NOT NULL DEFAULT now())"

/* Formats err, folding the newlines libpq puts in its messages so the result
 * is one log line. */
static void migrate_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void migrate_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
    for (char *c = err; *c; c++)
        if (*c == '\n' || *c == '\r' || *c == '\t')
            *c = ' ';
}

/* Runs sql (no parameters, or one text parameter when param is not NULL) and
 * checks the result status; on failure fills err with `what` and libpq's
 * message and returns NULL. The caller owns (PQclear) a non-NULL result. */
static PGresult *migrate_exec(PGconn *conn, const char *sql, const char *param, const char *what,
                              char *err, size_t errlen)
{
    PGresult *r =
        param ? PQexecParams(conn, sql, 1, NULL, &param, NULL, NULL, 0) : PQexec(conn, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY)
        return r;
    migrate_err(err, errlen, "%s: %s", what, r ? PQresultErrorMessage(r) : PQerrorMessage(conn));
    PQclear(r);
    return NULL;
}

static int migrate_exec_ok(PGconn *conn, const char *sql, const char *param, const char *what,
                           char *err, size_t errlen)
{
    PGresult *r = migrate_exec(conn, sql, param, what, err, errlen);
    PQclear(r);
    return r ? 0 : -1;
}

/* 1 when version is among the first column of the rows of r. */
static int migrate_recorded(const PGresult *r, const char *version)
{
    for (int i = 0; i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), version) == 0)
            return 1;
    return 0;
}

/* Applies one migration and its schema_migrations row in one transaction. */
static int migrate_one(PGconn *conn, const struct migration *m, char *err, size_t errlen)
{
    char what[160];
    if (migrate_exec_ok(conn, "BEGIN", NULL, "begin", err, errlen) < 0)
        return -1;
    snprintf(what, sizeof what, "migration %s", m->name);
    if (migrate_exec_ok(conn, m->sql, NULL, what, err, errlen) < 0)
        goto rollback;
    /* A COMMIT inside the file would leave the row below outside the
     * migration's transaction: refuse rather than half-record it. */
    if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
        migrate_err(err, errlen,
                    "migration %s ended the transaction itself (no BEGIN/COMMIT "
                    "allowed in a migration file)",
                    m->name);
        goto rollback;
    }
    if (migrate_exec_ok(conn, "INSERT INTO schema_migrations (version) VALUES ($1)", m->name,
                        "recording the migration", err, errlen) < 0)
        goto rollback;
    if (migrate_exec_ok(conn, "COMMIT", NULL, "commit", err, errlen) < 0)
        goto rollback;
    return 0;
rollback:
    PQclear(PQexec(conn, "ROLLBACK"));
    return -1;
}

/* 1 when schema_migrations exists (on the search path), 0 when not, -1 on
 * error. */
static int migrate_table_exists(PGconn *conn, char *err, size_t errlen)
{
    PGresult *r = migrate_exec(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL", NULL,
                               "looking for schema_migrations", err, errlen);
    if (!r)
        return -1;
    int exists = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return exists;
}

/* The body of migrate_apply, run while holding the advisory lock. */
static int migrate_locked(PGconn *conn, char *err, size_t errlen)
{
    /* Created only when missing (the lock rules out a race): IF NOT EXISTS
     * alone would print a NOTICE on every run. */
    int exists = migrate_table_exists(conn, err, errlen);
    if (exists < 0)
        return -1;
    if (!exists && migrate_exec_ok(conn, MIGRATE_TABLE_SQL, NULL, "creating schema_migrations", err,
                                   errlen) < 0)
        return -1;
    PGresult *done = migrate_exec(conn, "SELECT version FROM schema_migrations", NULL,
                                  "reading schema_migrations", err, errlen);
    if (!done)
        return -1;
    int applied = 0;
    for (size_t i = 0; i < migrations_count; i++) {
        if (migrate_recorded(done, migrations[i].name))
            continue;
        if (migrate_one(conn, &migrations[i], err, errlen) < 0) {
            applied = -1;
            break;
        }
        applied++;
    }
    PQclear(done);
    return applied;
}

int migrate_apply(PGconn *conn, char *err, size_t errlen)
{
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        migrate_err(err, errlen, "database connection: %s",
                    conn ? PQerrorMessage(conn) : "not connected");
        return -1;
    }
    if (migrate_exec_ok(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", NULL,
                        "taking the migration lock", err, errlen) < 0)
        return -1;
    int applied = migrate_locked(conn, err, errlen);
    /* A session lock outlives transactions: release it explicitly (if the
     * connection broke, the server has released it already). */
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return applied;
}

int migrate_check(PGconn *conn, char *err, size_t errlen)
{
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        migrate_err(err, errlen, "database connection: %s",
                    conn ? PQerrorMessage(conn) : "not connected");
        return -1;
    }
    int exists = migrate_table_exists(conn, err, errlen);
    if (exists < 0)
        return -1;
    if (!exists) {
        if (migrations_count == 0)
            return 0;
        migrate_err(err, errlen,
                    "schema is behind: no migration applied (missing %s); run "
                    "`cardgate migrate`",
                    migrations[0].name);
        return 1;
    }
    PGresult *r = migrate_exec(conn, "SELECT version FROM schema_migrations", NULL,
                               "reading schema_migrations", err, errlen);
    if (!r)
        return -1;
    int behind = 0;
    for (size_t i = 0; i < migrations_count && !behind; i++) {
        if (!migrate_recorded(r, migrations[i].name)) {
            migrate_err(err, errlen,
                        "schema is behind: migration %s not applied; run "
                        "`cardgate migrate`",
                        migrations[i].name);
            behind = 1;
        }
    }
    PQclear(r);
    return behind;
}

const char *migrate_latest(void)
{
    return migrations_count ? migrations[migrations_count - 1].name : NULL;
}
