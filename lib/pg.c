/* pg: per-worker pool of non-blocking libpq connections (see pg.h).
 *
 * Each connection is a small state machine driven by one non-persistent
 * socket event (re-registered after every libpq call, because the socket can
 * change while connecting) and one timer (retry backoff, connect timeout or
 * query timeout, depending on the state):
 *
 *   DOWN --timer--> CONNECTING --PQconnectPoll OK--> PREPARING --all prepared--> IDLE
 *   IDLE --query--> BUSY --results drained--> IDLE
 *   any failure --> DOWN (timer armed with the backoff)
 *
 * Callbacks never run from inside the libpq/state-machine code: a finished
 * query goes to the pool's done list and one event delivers the list. So a
 * callback may call pg_pool_exec or pg_pool_free freely, and pg_pool_exec can
 * "fail at once" without calling back from inside itself. */
#include "pg.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PG_DEFAULT_SIZE 4
#define PG_DEFAULT_RETRY_MS 500
#define PG_MAX_RETRY_MS 5000
#define PG_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define PG_DEFAULT_QUERY_TIMEOUT_MS 10000
#define PG_DEFAULT_MAX_QUEUE 10000

enum pg_conn_state {
    PG_DOWN,       /* no PGconn; the timer brings it back */
    PG_CONNECTING, /* PQconnectPoll in progress */
    PG_PREPARING,  /* connected, sending the statements one by one */
    PG_IDLE,       /* usable, nothing in flight */
    PG_BUSY,       /* one query in flight (c->q) */
};

/* One pg_pool_exec call, from the call until its callback has returned.
 * Owns its parameter copies (in the same allocation), res and error. */
struct pg_query {
    struct pg_query *next;
    const struct pg_statement *stmt; /* the pool's copy */
    pg_cb cb;
    void *arg;
    int nparams;
    char **values;
    PGresult *res;         /* set when finished */
    int unavailable;       /* set when finished */
    char *error;           /* set when finished with an error; malloc'd */
    long long deadline_ms; /* start by then or fail (0: none) */
};

struct pg_conn {
    struct pg_pool *pool;
    int id;
    enum pg_conn_state state;
    PGconn *conn;
    struct event *io; /* on PQsocket(conn); recreated when fd or events change */
    int io_fd;
    short io_what;
    struct event *timer;
    long backoff_ms;    /* the next reconnect delay after a failed attempt */
    int failures;       /* consecutive failed attempts, for the log level */
    size_t prep_next;   /* PREPARING: index of the statement being prepared */
    int flushing;       /* PQflush returned 1: wait for EV_WRITE too */
    PGresult *res;      /* the result kept while draining to NULL */
    struct pg_query *q; /* BUSY: the query in flight */
};

struct pg_pool {
    struct event_base *base;
    const struct log *lg;
    char *conninfo;
    char *hostaddr;             /* the host resolved once at creation, or NULL */
    struct pg_statement *stmts; /* deep copies */
    size_t n_stmts;
    long retry_ms, max_retry_ms, connect_timeout_ms, query_timeout_ms;
    size_t max_queue;
    int size;
    struct pg_conn *conns;
    int up;                         /* connections in IDLE or BUSY */
    struct pg_query *qhead, *qtail; /* waiting for a connection, FIFO */
    size_t qlen;
    struct pg_query *dhead, *dtail; /* finished, callbacks not yet run */
    struct event *done_ev;
    struct event *expire_ev;  /* fails queued queries whose deadline passed */
    long long next_deadline;  /* the earliest deadline in the queue (0: none) */
    struct pg_gauges *gauges; /* optional (pg.h) */
    int in_done;              /* pool_on_done is running callbacks */
    int freeing;              /* pg_pool_free was called from a callback */
    char last_error[256];
};

static void conn_start(struct pg_conn *c);
static void conn_broken(struct pg_conn *c, const char *why);
static int pool_hopeful(const struct pg_pool *p);
static void pool_dispatch(struct pg_pool *p);
static char *pool_resolve_host(const char *conninfo);
static void pool_gauges(struct pg_pool *p, long up, long busy, long queued);
static void queue_grow(struct pg_pool *p, long delta);

/* Copies src into dst as one line: newlines and tabs become spaces, runs of
 * spaces collapse, leading/trailing spaces go. */
static void pg_one_line(char *dst, size_t n, const char *src)
{
    size_t o = 0;
    int space = 1; /* drop leading spaces */
    if (n == 0)
        return;
    for (const char *s = src ? src : ""; *s && o + 1 < n; s++) {
        char ch = (*s == '\n' || *s == '\r' || *s == '\t') ? ' ' : *s;
        if (ch == ' ' && space)
            continue;
        space = ch == ' ';
        dst[o++] = ch;
    }
    while (o > 0 && dst[o - 1] == ' ')
        o--;
    dst[o] = '\0';
}

static char *pg_strdup_line(const char *src)
{
    size_t n = strlen(src ? src : "") + 1;
    char *s = malloc(n);
    if (s)
        pg_one_line(s, n, src);
    return s;
}

static void conn_log(const struct pg_conn *c, enum log_level lvl, const char *msg,
                     const char *error)
{
    char id[16], line[512];
    if (!log_enabled(c->pool->lg, lvl))
        return;
    snprintf(id, sizeof id, "%d", c->id);
    pg_one_line(line, sizeof line, error);
    log_write(c->pool->lg, lvl, msg, "conn", id, "error", error ? line : NULL, NULL);
}

/* libpq prints notices on stderr by default; they belong in the log. */
static void conn_on_notice(void *arg, const char *message)
{
    const struct pg_conn *c = arg;
    conn_log(c, LOG_DEBUG, "database notice", message);
}

/* ---- queries ---------------------------------------------------------- */

static struct pg_query *query_new(const struct pg_statement *stmt, int nparams,
                                  const char *const *values, pg_cb cb, void *arg)
{
    size_t size = sizeof(struct pg_query) + (size_t)nparams * sizeof(char *);
    for (int i = 0; i < nparams; i++)
        if (values[i])
            size += strlen(values[i]) + 1;
    struct pg_query *q = calloc(1, size);
    if (!q)
        return NULL;
    q->stmt = stmt;
    q->cb = cb;
    q->arg = arg;
    q->nparams = nparams;
    q->values = (char **)(q + 1);
    char *text = (char *)(q->values + nparams);
    for (int i = 0; i < nparams; i++) {
        if (!values[i])
            continue;
        size_t len = strlen(values[i]) + 1;
        memcpy(text, values[i], len);
        q->values[i] = text;
        text += len;
    }
    return q;
}

static void query_free(struct pg_query *q)
{
    PQclear(q->res);
    free(q->error);
    free(q);
}

static void query_list_free(struct pg_query *q)
{
    while (q) {
        struct pg_query *next = q->next;
        query_free(q);
        q = next;
    }
}

/* Records the outcome (taking res) and queues the callback for the done
 * event: never calls back from here. */
static void query_finish(struct pg_pool *p, struct pg_query *q, PGresult *res, int unavailable,
                         const char *error)
{
    q->res = res;
    q->unavailable = unavailable;
    if (error) {
        q->error = pg_strdup_line(error);
        if (!q->error && !res)
            q->unavailable = 1; /* out of memory: still an error, say something */
    }
    q->next = NULL;
    if (p->dtail)
        p->dtail->next = q;
    else
        p->dhead = q;
    p->dtail = q;
    event_active(p->done_ev, EV_TIMEOUT, 0);
}

/* Fails every waiting query: called when the last connection went down, as
 * nothing could run them soon and callers must answer 503 now. */
static void pool_fail_queue(struct pg_pool *p, const char *why)
{
    char msg[320];
    snprintf(msg, sizeof msg, "database unavailable: %s", why);
    while (p->qhead) {
        struct pg_query *q = p->qhead;
        p->qhead = q->next;
        query_finish(p, q, NULL, 1, msg);
    }
    p->qtail = NULL;
    queue_grow(p, -(long)p->qlen);
}

static void pool_destroy(struct pg_pool *p);

/* The done event: runs the finished queries' callbacks in finishing order. */
static void pool_on_done(evutil_socket_t fd, short what, void *arg)
{
    struct pg_pool *p = arg;
    struct pg_query *q = p->dhead;
    p->dhead = p->dtail = NULL;
    p->in_done = 1;
    while (q) {
        struct pg_query *next = q->next;
        if (!p->freeing)
            q->cb(q->res, q->unavailable,
                  q->error ? q->error : (q->res || !q->unavailable ? NULL : "database unavailable"),
                  q->arg);
        query_free(q);
        q = next;
    }
    p->in_done = 0;
    if (p->freeing)
        pool_destroy(p);
}

/* ---- connection plumbing ---------------------------------------------- */

static void conn_on_io(evutil_socket_t fd, short what, void *arg);
static void conn_on_timer(evutil_socket_t fd, short what, void *arg);

static void conn_unwatch(struct pg_conn *c)
{
    if (c->io)
        event_del(c->io);
}

/* Waits for `what` on the connection's current socket. The socket may be a
 * new one after any libpq call, so the fd is checked every time. */
static void conn_watch(struct pg_conn *c, short what)
{
    int fd = PQsocket(c->conn);
    if (fd < 0) {
        conn_broken(c, "no socket");
        return;
    }
    if (c->io && (c->io_fd != fd || c->io_what != what)) {
        event_free(c->io);
        c->io = NULL;
    }
    if (!c->io) {
        c->io = event_new(c->pool->base, fd, what, conn_on_io, c);
        if (!c->io) {
            conn_broken(c, "out of memory");
            return;
        }
        c->io_fd = fd;
        c->io_what = what;
    }
    if (event_add(c->io, NULL) < 0)
        conn_broken(c, "event_add failed");
}

static void conn_timer(struct pg_conn *c, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/* Drops the PGconn (if any) and every event on it. The event is deleted
 * before PQfinish closes the socket, so a reused fd number never meets a
 * stale registration. */
static void conn_close(struct pg_conn *c)
{
    if (c->io) {
        event_free(c->io);
        c->io = NULL;
    }
    if (c->timer)
        evtimer_del(c->timer);
    PQclear(c->res);
    c->res = NULL;
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    c->flushing = 0;
}

static int state_is_up(enum pg_conn_state s)
{
    return s == PG_IDLE || s == PG_BUSY;
}

/* Moves the pool's share of the gauges by these deltas. */
static void pool_gauges(struct pg_pool *p, long up, long busy, long queued)
{
    if (!p->gauges)
        return;
    if (up)
        atomic_fetch_add(&p->gauges->up, up);
    if (busy)
        atomic_fetch_add(&p->gauges->busy, busy);
    if (queued)
        atomic_fetch_add(&p->gauges->queued, queued);
}

/* Moves the queue's length and its gauge together. */
static void queue_grow(struct pg_pool *p, long delta)
{
    p->qlen = (size_t)((long)p->qlen + delta);
    pool_gauges(p, 0, 0, delta);
}

static void conn_set_state(struct pg_conn *c, enum pg_conn_state s)
{
    int up = state_is_up(s) - state_is_up(c->state);
    int busy = (s == PG_BUSY) - (c->state == PG_BUSY);
    c->pool->up += up;
    pool_gauges(c->pool, up, busy, 0);
    c->state = s;
}

/* Any failure, in any state but DOWN: the query in flight (if any) fails
 * with unavailable=1 (never retried: it may have run), the connection is
 * closed and the timer brings it back after the backoff. */
static void conn_broken(struct pg_conn *c, const char *why)
{
    struct pg_pool *p = c->pool;
    int was_up = state_is_up(c->state);
    char line[256];
    pg_one_line(line, sizeof line, why);
    snprintf(p->last_error, sizeof p->last_error, "%s", line);

    if (c->q) {
        char msg[320];
        snprintf(msg, sizeof msg, "database connection lost: %s", line);
        query_finish(p, c->q, NULL, 1, msg);
        c->q = NULL;
    }
    conn_close(c);
    conn_set_state(c, PG_DOWN);

    long delay;
    if (was_up) {
        conn_log(c, LOG_WARN, "database connection lost", line);
        c->backoff_ms = p->retry_ms;
        delay = p->retry_ms;
    } else {
        conn_log(c, c->failures == 0 ? LOG_WARN : LOG_DEBUG, "database connection failed", line);
        c->failures++;
        delay = c->backoff_ms;
        c->backoff_ms = c->backoff_ms * 2 > p->max_retry_ms ? p->max_retry_ms : c->backoff_ms * 2;
    }
    conn_timer(c, delay);
    if (p->up == 0 && !pool_hopeful(p))
        pool_fail_queue(p, line);
}

/* Sends what libpq has buffered; waits for writability too while it cannot
 * (and for readability: the server may need us to read before it reads). */
static void conn_flush_and_wait(struct pg_conn *c)
{
    int r = PQflush(c->conn);
    if (r < 0) {
        conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
    c->flushing = r == 1;
    conn_watch(c, c->flushing ? EV_READ | EV_WRITE : EV_READ);
}

/* ---- connecting and preparing ----------------------------------------- */

static void conn_start(struct pg_conn *c)
{
    struct pg_pool *p = c->pool;
    conn_set_state(c, PG_CONNECTING);
    /* With hostaddr given, libpq does no name lookup: a DNS lookup would
     * block the loop on every (re)connect. */
    const char *kw[] = {"dbname", "hostaddr", NULL};
    const char *vals[] = {p->conninfo, p->hostaddr, NULL};
    c->conn = p->hostaddr ? PQconnectStartParams(kw, vals, 1) : PQconnectStart(p->conninfo);
    if (!c->conn) {
        conn_broken(c, "out of memory");
        return;
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
    PQsetNoticeProcessor(c->conn, conn_on_notice, c);
    conn_timer(c, p->connect_timeout_ms); /* covers connecting and preparing */
    /* libpq: start as if PQconnectPoll had returned PGRES_POLLING_WRITING. */
    conn_watch(c, EV_WRITE);
}

static void conn_ready(struct pg_conn *c)
{
    struct pg_pool *p = c->pool;
    evtimer_del(c->timer);
    if (c->failures > 0)
        conn_log(c, LOG_INFO, "database connection up", NULL);
    c->failures = 0;
    c->backoff_ms = p->retry_ms;
    conn_set_state(c, PG_IDLE);
    conn_watch(c, EV_READ); /* notices, and the server closing on us */
    if (c->state == PG_IDLE)
        pool_dispatch(p);
}

/* Prepares statement c->prep_next, or declares the connection ready. */
static void conn_prepare_next(struct pg_conn *c)
{
    const struct pg_pool *p = c->pool;
    if (c->prep_next == p->n_stmts) {
        conn_ready(c);
        return;
    }
    const struct pg_statement *s = &p->stmts[c->prep_next];
    if (!PQsendPrepare(c->conn, s->name, s->sql, s->nparams, NULL)) {
        conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
    conn_flush_and_wait(c);
}

static void conn_poll_connect(struct pg_conn *c)
{
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING:
        conn_watch(c, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        conn_watch(c, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->conn, 1) != 0) {
            conn_broken(c, PQerrorMessage(c->conn));
            return;
        }
        conn_set_state(c, PG_PREPARING);
        c->prep_next = 0;
        conn_prepare_next(c);
        return;
    default: /* PGRES_POLLING_FAILED */
        conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
}

/* ---- running commands -------------------------------------------------- */

/* Keeps the most telling result of a command while draining it: the first
 * one, unless a later one is an error. */
static void conn_keep_result(struct pg_conn *c, PGresult *r)
{
    if (!c->res) {
        c->res = r;
    } else if (PQresultStatus(r) == PGRES_FATAL_ERROR &&
               PQresultStatus(c->res) != PGRES_FATAL_ERROR) {
        PQclear(c->res);
        c->res = r;
    } else {
        PQclear(r);
    }
}

/* An error that means the session is gone rather than the statement failed:
 * class 08 (connection exception) and 57P01-57P03 (admin/crash shutdown,
 * cannot connect now), or a connection libpq has already marked bad. */
static int conn_result_is_gone(const struct pg_conn *c, const PGresult *r)
{
    if (PQstatus(c->conn) == CONNECTION_BAD)
        return 1;
    if (!r || PQresultStatus(r) != PGRES_FATAL_ERROR)
        return 0;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0);
}

static void conn_prepared_one(struct pg_conn *c, PGresult *r)
{
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        char why[384];
        snprintf(why, sizeof why, "preparing %s: %s", c->pool->stmts[c->prep_next].name,
                 r ? PQresultErrorMessage(r) : PQerrorMessage(c->conn));
        PQclear(r);
        conn_log(c, LOG_ERROR, "database prepare failed", why);
        conn_broken(c, why);
        return;
    }
    PQclear(r);
    c->prep_next++;
    conn_prepare_next(c);
}

static void conn_query_done(struct pg_conn *c, PGresult *r)
{
    struct pg_pool *p = c->pool;
    struct pg_query *q = c->q;
    if (conn_result_is_gone(c, r)) {
        char why[384];
        pg_one_line(why, sizeof why, r ? PQresultErrorMessage(r) : PQerrorMessage(c->conn));
        PQclear(r);
        conn_broken(c, why[0] ? why : "connection lost"); /* fails c->q with unavailable=1 */
        return;
    }
    c->q = NULL;
    evtimer_del(c->timer);
    int failed = !r || PQresultStatus(r) == PGRES_FATAL_ERROR ||
                 PQresultStatus(r) == PGRES_NONFATAL_ERROR ||
                 PQresultStatus(r) == PGRES_BAD_RESPONSE;
    query_finish(p, q, r, 0, failed ? (r ? PQresultErrorMessage(r) : "no result") : NULL);
    conn_set_state(c, PG_IDLE);
    conn_watch(c, EV_READ);
    if (c->state == PG_IDLE)
        pool_dispatch(p);
}

/* PREPARING or BUSY: reads, flushes, and drains the results to NULL. */
static void conn_io_command(struct pg_conn *c, short what)
{
    if ((what & EV_READ) && !PQconsumeInput(c->conn)) {
        conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
    if (c->flushing) {
        int r = PQflush(c->conn);
        if (r < 0) {
            conn_broken(c, PQerrorMessage(c->conn));
            return;
        }
        c->flushing = r == 1;
    }
    while (!PQisBusy(c->conn)) {
        PGresult *r = PQgetResult(c->conn);
        if (!r) {
            r = c->res;
            c->res = NULL;
            if (c->state == PG_PREPARING)
                conn_prepared_one(c, r);
            else
                conn_query_done(c, r);
            return;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(r); /* no COPY through the pool: drop rather than hang */
            conn_broken(c, "unexpected COPY");
            return;
        }
        conn_keep_result(c, r);
    }
    conn_watch(c, c->flushing ? EV_READ | EV_WRITE : EV_READ);
}

/* IDLE: reads what the server sends unasked (notices, a FATAL before it
 * closes) so a dead connection is seen before a query is sent on it. */
static void conn_io_idle(struct pg_conn *c)
{
    if (!PQconsumeInput(c->conn) || PQstatus(c->conn) == CONNECTION_BAD) {
        conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(c->conn)) != NULL) /* also parses the input: notices */
        PQfreemem(n);
    conn_watch(c, EV_READ);
}

static void conn_on_io(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *c = arg;
    switch (c->state) {
    case PG_CONNECTING:
        conn_poll_connect(c);
        break;
    case PG_PREPARING:
    case PG_BUSY:
        conn_io_command(c, what);
        break;
    case PG_IDLE:
        conn_io_idle(c);
        break;
    case PG_DOWN:
        break;
    }
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *c = arg;
    char why[96];
    switch (c->state) {
    case PG_DOWN:
        conn_start(c);
        break;
    case PG_CONNECTING:
    case PG_PREPARING:
        snprintf(why, sizeof why, "connect timeout after %ld ms", c->pool->connect_timeout_ms);
        conn_broken(c, why);
        break;
    case PG_BUSY:
        snprintf(why, sizeof why, "query timeout after %ld ms", c->pool->query_timeout_ms);
        conn_broken(c, why);
        break;
    case PG_IDLE:
        break;
    }
}

/* Starts q on the idle connection c. */
static void conn_send(struct pg_conn *c, struct pg_query *q)
{
    conn_unwatch(c);
    conn_set_state(c, PG_BUSY);
    c->q = q;
    if (!PQsendQueryPrepared(c->conn, q->stmt->name, q->nparams, (const char *const *)q->values,
                             NULL, NULL, 0)) {
        conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
    conn_timer(c, c->pool->query_timeout_ms);
    conn_flush_and_wait(c);
}

static long long pg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void expire_at(struct pg_pool *p, long long deadline, long long now)
{
    long long ms = deadline > now ? deadline - now : 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(p->expire_ev, &tv);
}

/* Fails the waiting queries whose deadline has passed (they were never
 * sent), and sets the timer for the next deadline. */
static void pool_expire(struct pg_pool *p)
{
    long long now = pg_now_ms(), next = 0;
    struct pg_query **pp = &p->qhead, *last = NULL;
    while (*pp) {
        struct pg_query *q = *pp;
        if (q->deadline_ms && q->deadline_ms <= now) {
            *pp = q->next;
            queue_grow(p, -1);
            query_finish(p, q, NULL, 1,
                         "database unavailable: the request's deadline passed while it waited "
                         "for a connection");
            continue;
        }
        if (q->deadline_ms && (!next || q->deadline_ms < next))
            next = q->deadline_ms;
        last = q;
        pp = &q->next;
    }
    p->qtail = last;
    p->next_deadline = next;
    if (next)
        expire_at(p, next, now);
}

static void pool_on_expire(evutil_socket_t fd, short what, void *arg)
{
    pool_expire(arg);
}

/* Hands waiting queries to idle connections, oldest first. */
static void pool_dispatch(struct pg_pool *p)
{
    if (p->next_deadline && pg_now_ms() >= p->next_deadline)
        pool_expire(p);
    for (int i = 0; i < p->size && p->qhead; i++) {
        struct pg_conn *c = &p->conns[i];
        if (c->state != PG_IDLE)
            continue;
        struct pg_query *q = p->qhead;
        p->qhead = q->next;
        if (!p->qhead)
            p->qtail = NULL;
        queue_grow(p, -1);
        q->next = NULL;
        conn_send(c, q);
    }
}

/* ---- public API --------------------------------------------------------- */

static int pool_copy_options(struct pg_pool *p, const struct pg_pool_options *o, char *err,
                             size_t errlen)
{
    p->size = o->size > 0 ? o->size : PG_DEFAULT_SIZE;
    p->retry_ms = o->retry_ms > 0 ? o->retry_ms : PG_DEFAULT_RETRY_MS;
    p->max_retry_ms = p->retry_ms > PG_MAX_RETRY_MS ? p->retry_ms : PG_MAX_RETRY_MS;
    p->connect_timeout_ms =
        o->connect_timeout_ms > 0 ? o->connect_timeout_ms : PG_DEFAULT_CONNECT_TIMEOUT_MS;
    p->query_timeout_ms =
        o->query_timeout_ms > 0 ? o->query_timeout_ms : PG_DEFAULT_QUERY_TIMEOUT_MS;
    p->max_queue = o->max_queue > 0 ? o->max_queue : PG_DEFAULT_MAX_QUEUE;
    p->gauges = o->gauges;
    p->conninfo = strdup(o->conninfo);
    p->hostaddr = pool_resolve_host(o->conninfo);
    p->n_stmts = o->n_statements;
    p->stmts = calloc(p->n_stmts ? p->n_stmts : 1, sizeof *p->stmts);
    if (!p->conninfo || !p->stmts) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < p->n_stmts; i++) {
        const struct pg_statement *s = &o->statements[i];
        if (!s->name || !*s->name || !s->sql || s->nparams < 0) {
            snprintf(err, errlen, "statement %zu: name and sql are required", i);
            return -1;
        }
        p->stmts[i].nparams = s->nparams;
        p->stmts[i].name = strdup(s->name);
        p->stmts[i].sql = strdup(s->sql);
        if (!p->stmts[i].name || !p->stmts[i].sql) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Checks the connection string the way libpq will read it, so a typo is a
 * start-up error rather than an endless reconnect loop. */
static int pool_check_conninfo(const char *conninfo, char *err, size_t errlen)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    if (!opts) {
        char line[256];
        pg_one_line(line, sizeof line, msg ? msg : "out of memory");
        snprintf(err, errlen, "database URL: %s", line);
        PQfreemem(msg);
        return -1;
    }
    PQconninfoFree(opts);
    return 0;
}

/* Resolves a single host name of the connection string once, here at
 * creation (main's thread, before the loops run), so that reconnects never
 * look names up. Addresses, socket paths, host lists and an explicit
 * hostaddr are left to libpq. A name that does not resolve now is left to
 * libpq too (it then resolves it on each connect). */
static char *pool_resolve_host(const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    char *out = NULL;
    unsigned char buf[sizeof(struct in6_addr)];
    if (host && *host && host[0] != '/' && !strchr(host, ',') && !(hostaddr && *hostaddr) &&
        inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1) {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        struct addrinfo *ai = NULL;
        char ip[INET6_ADDRSTRLEN];
        if (getaddrinfo(host, NULL, &hints, &ai) == 0 &&
            getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof ip, NULL, 0, NI_NUMERICHOST) == 0)
            out = strdup(ip);
        if (ai)
            freeaddrinfo(ai);
    }
    PQconninfoFree(opts);
    return out;
}

struct pg_pool *pg_pool_new(struct event_base *base, const struct pg_pool_options *o,
                            const struct log *lg, char *err, size_t errlen)
{
    if (!base || !o || !o->conninfo || (o->n_statements && !o->statements)) {
        snprintf(err, errlen, "pg_pool_new: base, options and conninfo are required");
        return NULL;
    }
    if (pool_check_conninfo(o->conninfo, err, errlen) < 0)
        return NULL;
    struct pg_pool *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->base = base;
    p->lg = lg;
    snprintf(p->last_error, sizeof p->last_error, "connecting");
    if (pool_copy_options(p, o, err, errlen) < 0) {
        pool_destroy(p);
        return NULL;
    }
    p->done_ev = event_new(base, -1, 0, pool_on_done, p);
    p->expire_ev = evtimer_new(base, pool_on_expire, p);
    p->conns = calloc((size_t)p->size, sizeof *p->conns);
    if (!p->done_ev || !p->expire_ev || !p->conns) {
        snprintf(err, errlen, "out of memory");
        pool_destroy(p);
        return NULL;
    }
    for (int i = 0; i < p->size; i++) {
        struct pg_conn *c = &p->conns[i];
        c->pool = p;
        c->id = i;
        c->state = PG_DOWN;
        c->backoff_ms = p->retry_ms;
        c->timer = evtimer_new(base, conn_on_timer, c);
        if (!c->timer) {
            snprintf(err, errlen, "out of memory");
            pool_destroy(p);
            return NULL;
        }
    }
    for (int i = 0; i < p->size; i++)
        conn_start(&p->conns[i]);
    return p;
}

static const struct pg_statement *pool_find_stmt(const struct pg_pool *p, const char *name)
{
    for (size_t i = 0; i < p->n_stmts; i++)
        if (strcmp(p->stmts[i].name, name) == 0)
            return &p->stmts[i];
    return NULL;
}

/* 1 while a connection is on its first attempt since start or since it was
 * lost: queries wait for it (bounded by the connect timeout) rather than
 * failing, so a fresh process or a brief reconnect does not answer 503.
 * Once every attempt has failed, the database counts as down. */
static int pool_hopeful(const struct pg_pool *p)
{
    for (int i = 0; i < p->size; i++) {
        const struct pg_conn *c = &p->conns[i];
        if ((c->state == PG_CONNECTING || c->state == PG_PREPARING) && c->failures == 0)
            return 1;
    }
    return 0;
}

int pg_pool_exec(struct pg_pool *p, const char *stmt, int nparams, const char *const *values,
                 pg_cb cb, void *arg)
{
    return pg_pool_exec_until(p, stmt, nparams, values, 0, cb, arg);
}

int pg_pool_exec_until(struct pg_pool *p, const char *stmt, int nparams, const char *const *values,
                       long long deadline_ms, pg_cb cb, void *arg)
{
    if (!p || p->freeing || !stmt || !cb || nparams < 0 || (nparams > 0 && !values))
        return -1;
    const struct pg_statement *s = pool_find_stmt(p, stmt);
    int usable = p->up > 0 || pool_hopeful(p);
    if (usable && s && s->nparams == nparams && p->qlen >= p->max_queue)
        return -1;
    struct pg_query *q = query_new(s, nparams, values, cb, arg);
    if (!q)
        return -1;
    q->deadline_ms = deadline_ms;
    if (deadline_ms && (!p->next_deadline || deadline_ms < p->next_deadline)) {
        p->next_deadline = deadline_ms;
        expire_at(p, deadline_ms, pg_now_ms());
    }
    char msg[320];
    if (!s || s->nparams != nparams) {
        snprintf(msg, sizeof msg, "statement %s: %s", stmt,
                 s ? "wrong number of parameters" : "not prepared by this pool");
        query_finish(p, q, NULL, 0, msg);
        return 0;
    }
    if (!usable) {
        /* Fail fast: a caller waiting on a down database would only time out. */
        snprintf(msg, sizeof msg, "database unavailable: %s", p->last_error);
        query_finish(p, q, NULL, 1, msg);
        return 0;
    }
    if (p->qtail)
        p->qtail->next = q;
    else
        p->qhead = q;
    p->qtail = q;
    queue_grow(p, 1);
    pool_dispatch(p);
    return 0;
}

int pg_pool_up(const struct pg_pool *p)
{
    return p ? p->up : 0;
}

static void pool_destroy(struct pg_pool *p)
{
    int busy = 0;
    for (int i = 0; p->conns && i < p->size; i++)
        busy += p->conns[i].state == PG_BUSY;
    pool_gauges(p, -p->up, -busy, -(long)p->qlen); /* its share goes with it */
    for (int i = 0; p->conns && i < p->size; i++) {
        struct pg_conn *c = &p->conns[i];
        if (c->q)
            query_free(c->q);
        conn_close(c);
        if (c->timer)
            event_free(c->timer);
    }
    query_list_free(p->qhead);
    query_list_free(p->dhead);
    if (p->done_ev)
        event_free(p->done_ev);
    if (p->expire_ev)
        event_free(p->expire_ev);
    for (size_t i = 0; p->stmts && i < p->n_stmts; i++) {
        free((char *)p->stmts[i].name);
        free((char *)p->stmts[i].sql);
    }
    free(p->stmts);
    free(p->conns);
    free(p->conninfo);
    free(p->hostaddr);
    free(p);
}

void pg_pool_free(struct pg_pool *p)
{
    if (!p)
        return;
    if (p->in_done) {
        p->freeing = 1; /* pool_on_done destroys it once the callback returns */
        return;
    }
    pool_destroy(p);
}
