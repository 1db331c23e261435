/* sweeper: see sweeper.h. */
#include "sweeper.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "log.h"
#include "pg.h"
#include "recorder.h"
#include "routes.h"
#include "seal.h"
#include "server.h"
#include "store.h"

/* Rows made again per look; the rest wait for the next look. */
#define SWEEP_BATCH 32

/* An expired lock does not prove its holder dead: a live instance may be
 * writing the outcome again (recorder.h) while the database comes back.
 * Once the database has answered for this long, every live instance has
 * written what it held; and only rows overdue by this long are taken. */
#define SWEEP_GRACE_MS (2 * RECORDER_RETRY_MAX_MS)

struct sweeper {
    struct worker *w;
    struct event *timer;
    int looking;           /* a look's query is in flight: the next tick waits */
    long long db_up_since; /* since when this worker's pool has had a connection (0: down) */
};

/* One row: opens its seal and makes it again; 0, or -1 when it cannot. */
static int redrive(struct worker *w, const struct store_abandoned *row)
{
    size_t n = 0;
    char *what = row->sealed ? seal_decrypt(w->srv->seal_key, w->srv->cfg.alipay_app_id,
                                            row->serial, row->sealed, row->sealed_len, &n)
                             : NULL;
    int rc = what ? routes_redrive(w, what, n, row->serial) : -1;
    if (what)
        OPENSSL_cleanse(what, n);
    free(what);
    return rc;
}

static void looked(const struct store_abandoned *rows, size_t n, long total, const char *error,
                   void *arg)
{
    struct sweeper *s = arg;
    struct worker *w = s->w;
    struct metrics *m = &w->srv->metrics;
    s->looking = 0;
    if (!rows) {
        log_write(&w->srv->log, LOG_DEBUG, "sweeper: no look at the ledger", "error", error, NULL);
        return;
    }
    atomic_store(&m->stale_requests, total);
    for (size_t i = 0; i < n && !w->draining; i++) {
        if (redrive(w, &rows[i]) == 0) {
            atomic_fetch_add(&m->requests_redriven, 1);
            continue;
        }
        atomic_fetch_add(&m->redrives_impossible, 1);
        log_write(&w->srv->log, LOG_ERROR,
                  "abandoned request cannot be made again: its seal does not open with this "
                  "instance's key; reconcile it by hand",
                  "out_serial_no", rows[i].serial, NULL);
    }
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct sweeper *s = arg;
    struct worker *w = s->w;
    const struct config *cfg = &w->srv->cfg;
    if (s->looking || w->draining)
        return;
    long long now = server_now_ms();
    if (pg_pool_up(w->pg) == 0) {
        s->db_up_since = 0;
        return;
    }
    if (!s->db_up_since)
        s->db_up_since = now;
    if (now - s->db_up_since < SWEEP_GRACE_MS)
        return;
    /* A row a sweeper took and could not finish waits ten looks. */
    long backoff = cfg->sweep_interval_ms * 10 > 1000 ? cfg->sweep_interval_ms * 10 : 1000;
    s->looking = 1;
    if (store_abandoned(w->pg, cfg->alipay_app_id, SWEEP_BATCH, backoff, SWEEP_GRACE_MS, looked,
                        s) < 0)
        s->looking = 0;
}

int sweeper_start(struct worker *w)
{
    long ms = w->srv->cfg.sweep_interval_ms;
    if (ms <= 0)
        return 0;
    struct sweeper *s = calloc(1, sizeof(*s));
    if (!s)
        return -1;
    s->w = w;
    s->timer = event_new(w->base, -1, EV_PERSIST, tick, s);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (!s->timer || event_add(s->timer, &tv) < 0) {
        if (s->timer)
            event_free(s->timer);
        free(s);
        return -1;
    }
    w->sweeper = s;
    return 0;
}

int sweeper_busy(const struct worker *w)
{
    return w->sweeper && w->sweeper->looking;
}

void sweeper_free(struct worker *w)
{
    struct sweeper *s = w->sweeper;
    if (!s)
        return;
    event_free(s->timer);
    free(s);
    w->sweeper = NULL;
}
