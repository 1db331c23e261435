/* certs: see certs.h. */
#include "certs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>

#include "server.h"
#include "store.h"

/* Another instance is fetching: look again this often. Its claim is taken
 * over once older than its download can take (the gateway timeout) plus
 * this margin: it died, or stopped, while fetching. Looks go on until a
 * claim left so can be taken over. */
#define CERTS_RETRY_MS 200
#define CERTS_CLAIM_MARGIN_MS 3000
/* A certificate that could not be found is not looked for again this long:
 * answers naming it are refused at once (one look per worker, not one per
 * answer, for a gateway that names certificates nobody has). */
#define CERTS_FAILED_MS 10000
#define CERTS_FAILED_KEPT 8

struct certs_waiter {
    void (*done)(void *arg);
    void *arg;
    struct certs_waiter *next;
};

/* One certificate being looked for. */
struct certs_lookup {
    struct certs *owner;
    char sn[ALIPAY_CERT_SN_LEN + 1];
    struct certs_waiter *waiters;
    int tries;
    int claimed;         /* this instance fetches it and stores it ... */
    char claimed_at[64]; /* ... under the claim made then */
    int found;
    struct event *retry;
    struct certs_lookup *prev, *next;
};

struct certs {
    struct worker *w;
    struct certs_lookup *lookups;
    long stale_ms; /* a claim older than this is taken over */
    struct {
        char sn[ALIPAY_CERT_SN_LEN + 1];
        long long until_ms;
    } failed[CERTS_FAILED_KEPT]; /* recently not found */
    int next_failed;
};

int certs_start(struct worker *w)
{
    w->certs = calloc(1, sizeof(*w->certs));
    if (!w->certs)
        return -1;
    w->certs->w = w;
    w->certs->stale_ms = w->srv->cfg.alipay_timeout_ms + CERTS_CLAIM_MARGIN_MS;
    return 0;
}

static void lookup_free(struct certs_lookup *l)
{
    struct certs *c = l->owner;
    if (l->prev)
        l->prev->next = l->next;
    else
        c->lookups = l->next;
    if (l->next)
        l->next->prev = l->prev;
    while (l->waiters) {
        struct certs_waiter *x = l->waiters;
        l->waiters = x->next;
        free(x);
    }
    if (l->retry)
        event_free(l->retry);
    free(l);
}

void certs_free(struct certs *c)
{
    if (!c)
        return;
    while (c->lookups)
        lookup_free(c->lookups);
    free(c);
}

/* The look is over, found or not: every answer waiting is judged again. */
static void lookup_finish(struct certs_lookup *l)
{
    struct certs *c = l->owner;
    if (!l->found) {
        int i = c->next_failed++ % CERTS_FAILED_KEPT;
        snprintf(c->failed[i].sn, sizeof(c->failed[i].sn), "%s", l->sn);
        c->failed[i].until_ms = server_now_ms() + CERTS_FAILED_MS;
    }
    struct certs_waiter *x = l->waiters;
    l->waiters = NULL;
    lookup_free(l);
    while (x) {
        struct certs_waiter *next = x->next;
        x->done(x->arg);
        free(x);
        x = next;
    }
}

static void log_cert(struct certs_lookup *l, enum log_level lv, const char *msg, const char *why)
{
    log_write(&l->owner->w->srv->log, lv, msg, "alipay_cert_sn", l->sn, "error", why, NULL);
}

/* The certificate is in force here already; when it could not be stored,
 * other instances fetch it again (said, not fatal). */
static void on_stored(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct worker *w = arg;
    (void)unavailable;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_write(&w->srv->log, LOG_WARN, "Alipay certificate not stored in the database", "error",
                  error, NULL);
}

static void on_fetched(int ok, const char *pem, size_t pem_len, const char *why, void *arg)
{
    struct certs_lookup *l = arg;
    struct worker *w = l->owner->w;
    (void)pem_len;
    if (ok) {
        l->found = 1;
        log_cert(l, LOG_INFO, "Alipay certificate fetched and checked", NULL);
        if (l->claimed) {
            const char *v[] = {l->sn, w->srv->cfg.alipay_app_id, pem};
            pg_pool_exec(w->pg, "cert_put", 3, v, on_stored, w);
        }
    } else {
        log_cert(l, LOG_ERROR, "Alipay certificate cannot be fetched; its answers are refused",
                 why);
        if (l->claimed) {
            const char *v[] = {l->sn, l->claimed_at};
            pg_pool_exec(w->pg, "cert_release", 2, v, on_stored, w);
        }
    }
    lookup_finish(l);
}

static void fetch(struct certs_lookup *l)
{
    char err[256];
    if (alipay_client_fetch_cert(l->owner->w->alipay, l->sn, on_fetched, l, err, sizeof(err)) < 0) {
        log_cert(l, LOG_ERROR, "Alipay certificate cannot be fetched; its answers are refused",
                 err);
        lookup_finish(l);
    }
}

static void look_in_table(struct certs_lookup *l);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    look_in_table(arg);
}

static void on_claim(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct certs_lookup *l = arg;
    (void)unavailable; /* down or failing: the same, fetched here */
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* no database: fetched here, not shared */
        log_cert(l, LOG_WARN, "Alipay certificate cannot be claimed in the database", error);
        fetch(l);
        return;
    }
    if (PQntuples(res) == 1) {
        l->claimed = 1;
        snprintf(l->claimed_at, sizeof(l->claimed_at), "%s", PQgetvalue(res, 0, 0));
        fetch(l);
        return;
    }
    /* another instance is fetching it: look again soon, until its claim
     * may be taken over */
    if (++l->tries > (l->owner->stale_ms + 2 * CERTS_RETRY_MS) / CERTS_RETRY_MS) {
        log_cert(l, LOG_ERROR, "Alipay certificate not stored by the instance fetching it", NULL);
        lookup_finish(l);
        return;
    }
    struct timeval tv = {0, CERTS_RETRY_MS * 1000};
    if (!l->retry)
        l->retry = evtimer_new(l->owner->w->base, on_retry, l);
    if (!l->retry || evtimer_add(l->retry, &tv) != 0)
        lookup_finish(l);
}

static void on_table(PGresult *res, int unavailable, const char *error, void *arg)
{
    struct certs_lookup *l = arg;
    struct worker *w = l->owner->w;
    char err[256];
    (void)unavailable;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_cert(l, LOG_WARN, "Alipay certificate cannot be looked up in the database", error);
        fetch(l);
        return;
    }
    if (PQntuples(res) == 1) {
        const char *pem = PQgetvalue(res, 0, 0);
        if (alipay_cert_store_admit(w->srv->certs, pem, strlen(pem), l->sn, NULL, err,
                                    sizeof(err)) == 0) {
            l->found = 1;
            log_cert(l, LOG_INFO, "Alipay certificate taken from the database", NULL);
        } else
            log_cert(l, LOG_ERROR, "Alipay certificate in the database refused", err);
        lookup_finish(l);
        return;
    }
    char stale[24];
    snprintf(stale, sizeof(stale), "%ld", l->owner->stale_ms);
    const char *v[] = {l->sn, w->srv->cfg.alipay_app_id, stale};
    if (pg_pool_exec(w->pg, "cert_claim", 3, v, on_claim, l) < 0)
        fetch(l);
}

static void look_in_table(struct certs_lookup *l)
{
    const char *v[] = {l->sn};
    if (pg_pool_exec(l->owner->w->pg, "cert_get", 1, v, on_table, l) < 0)
        fetch(l);
}

void certs_resolve(void *ctx, const char *sn, void (*done)(void *arg), void *arg)
{
    struct certs *c = ctx;
    struct certs_lookup *l = c->lookups;
    for (int i = 0; i < CERTS_FAILED_KEPT; i++) {
        if (strcmp(c->failed[i].sn, sn) == 0 && server_now_ms() < c->failed[i].until_ms) {
            done(arg); /* looked for a moment ago, in vain: refused */
            return;
        }
    }
    struct certs_waiter *x = calloc(1, sizeof(*x));
    while (l && strcmp(l->sn, sn) != 0)
        l = l->next;
    int fresh = !l;
    if (fresh && x && (l = calloc(1, sizeof(*l))) != NULL) {
        l->owner = c;
        snprintf(l->sn, sizeof(l->sn), "%s", sn);
        l->next = c->lookups;
        if (c->lookups)
            c->lookups->prev = l;
        c->lookups = l;
    }
    if (!x || !l) {
        free(x);
        done(arg); /* judged without it: refused */
        return;
    }
    x->done = done;
    x->arg = arg;
    x->next = l->waiters;
    l->waiters = x;
    if (fresh)
        look_in_table(l);
}

int certs_load_stored(struct server *srv, PGconn *conn)
{
    const char *v[] = {srv->cfg.alipay_app_id};
    PGresult *res = PQexecParams(conn,
                                 "SELECT sn, pem FROM alipay_certs WHERE app_id = $1 AND pem IS "
                                 "NOT NULL ORDER BY fetched_at",
                                 1, NULL, v, NULL, NULL, 0);
    int n = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        n = 0;
        for (int i = 0; i < PQntuples(res); i++) {
            char err[256];
            const char *sn = PQgetvalue(res, i, 0), *pem = PQgetvalue(res, i, 1);
            if (alipay_cert_store_admit(srv->certs, pem, strlen(pem), sn, NULL, err, sizeof(err)) ==
                0)
                n++;
            else
                log_write(&srv->log, LOG_WARN, "stored Alipay certificate refused",
                          "alipay_cert_sn", sn, "error", err, NULL);
        }
    }
    PQclear(res);
    return n;
}
