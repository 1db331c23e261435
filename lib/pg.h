/* pg: a per-worker pool of non-blocking PostgreSQL connections on a libevent
 * event_base.
 *
 * Each worker thread owns one pool on its own event_base; a pool is used only
 * from that base's thread. Nothing blocks the loop: connecting, reconnecting,
 * preparing and querying all go through libpq's asynchronous API driven by
 * events on the connection's socket. Connections start when the pool is
 * created and come back by themselves, with backoff, after any failure; the
 * statements are prepared again on every new connection before it is used.
 *
 * A query is never retried by the pool: when its connection dies the caller
 * hears unavailable=1 and decides (the statement may have committed). */
#ifndef CARDGATE_PG_H
#define CARDGATE_PG_H

#include <stdatomic.h>
#include <stddef.h>
#include <event2/event.h>
#include <libpq-fe.h>

#include "log.h"

/* A statement prepared on every connection under `name`. */
struct pg_statement {
    const char *name;
    const char *sql;
    int nparams; /* parameter types are left to the server to infer */
};

/* What /metrics shows of the pools: connections up (idle or busy), busy,
 * and queries waiting for a connection. Several pools (one per worker) may
 * add into one struct; each keeps its share current (atomics, any thread
 * may read) and takes it back when freed. */
struct pg_gauges {
    atomic_long up, busy, queued;
};

struct pg_pool_options {
    const char *conninfo;                  /* libpq connection string or URI */
    int size;                              /* connections; <= 0: 4 */
    const struct pg_statement *statements; /* prepared on every (re)connect */
    size_t n_statements;
    long retry_ms;            /* reconnect backoff, doubling up to 5000; <= 0: 500 */
    long connect_timeout_ms;  /* connect + prepare; <= 0: 5000 */
    long query_timeout_ms;    /* a query outstanding longer drops its connection; <= 0: 10000 */
    size_t max_queue;         /* queries waiting for a connection; 0: 10000 */
    struct pg_gauges *gauges; /* optional; borrowed, must outlive the pool */
};

/* The outcome of one pg_pool_exec.
 * res: the result, or NULL on failure. The callback does NOT own it: it is
 *   PQclear'ed after the callback returns (copy what you need).
 * unavailable: 1 when the database could not be reached — no connection was
 *   up, the connection broke mid-query, or the query outlived
 *   query_timeout_ms (its connection is dropped); res is NULL then and the
 *   caller answers 503 DATABASE_UNAVAILABLE. The statement may or may not
 *   have run.
 * error: one line (no newline) when res is NULL or res is an error
 *   (PGRES_FATAL_ERROR: PQresultErrorMessage; the SQLSTATE is in
 *   PQresultErrorField(res, PG_DIAG_SQLSTATE)), else NULL. Valid during the
 *   call only. */
typedef void (*pg_cb)(PGresult *res, int unavailable, const char *error, void *arg);

/* Creates the pool and starts connecting every connection. The options and
 * the statements are copied. lg may be NULL (no logging); it is borrowed and
 * must outlive the pool. Returns NULL with err on bad options (a conninfo
 * libpq cannot parse, no statement name/sql, ...) or out of memory; a
 * database that cannot be reached is not an error here (the pool keeps
 * trying). */
struct pg_pool *pg_pool_new(struct event_base *base, const struct pg_pool_options *o,
                            const struct log *lg, char *err, size_t errlen);

/* Runs the prepared statement `stmt` with nparams text parameters (values
 * may hold NULL for SQL NULL; values are copied). cb runs later from the
 * loop, exactly once, never from inside this call. When no connection is up
 * it fails at once (unavailable=1) instead of queueing; when connections are
 * up but busy the query waits in a FIFO queue. An unknown statement or a
 * wrong parameter count fails through cb with unavailable=0. Returns 0, or -1
 * when the queue is full or out of memory (cb will not be called). */
int pg_pool_exec(struct pg_pool *p, const char *stmt, int nparams, const char *const *values,
                 pg_cb cb, void *arg);

/* As pg_pool_exec, for a query that must start by deadline_ms (on the
 * monotonic clock in ms, as CLOCK_MONOTONIC; 0: no deadline): one still
 * waiting for a connection then fails with unavailable=1 ("deadline"),
 * never sent. Once sent, the statement's own limits apply (the pool's
 * query timeout; the caller may bound lock waits in its SQL). */
int pg_pool_exec_until(struct pg_pool *p, const char *stmt, int nparams, const char *const *values,
                       long long deadline_ms, pg_cb cb, void *arg);

/* Connections currently usable (connected, statements prepared). */
int pg_pool_up(const struct pg_pool *p);

/* Closes every connection and frees the pool; the callbacks of queued and
 * in-flight queries are NOT called. May be called from inside a pg_cb (the
 * pool is then freed when that callback returns). NULL is a no-op. */
void pg_pool_free(struct pg_pool *p);

#endif
