/* metrics: see metrics.h. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bucket_ms[METRICS_BUCKETS] = {5,   10,   25,   50,   100,   250,
                                                  500, 1000, 2500, 5000, 10000, 30000};
static const char *const route_names[METRICS_ROUTES] = {
    "open",      "query",      "lookup",  "list",   "update",  "delete",
    "templates", "activation", "healthz", "readyz", "metrics", "other"};
static const char *const method_names[METRICS_METHODS] = {
    "alipay.marketing.card.open",
    "alipay.marketing.card.query",
    "alipay.marketing.card.update",
    "alipay.marketing.card.delete",
    "alipay.marketing.card.template.create",
    "alipay.marketing.card.template.query",
    "alipay.marketing.card.template.modify",
    "alipay.marketing.card.formtemplate.set",
    "alipay.marketing.card.activateurl.apply",
    "alipay.system.oauth.token",
    "alipay.marketing.card.activateform.query"};

const char *metrics_method_name(enum metrics_method m)
{
    return method_names[m];
}

void metrics_init(struct metrics *m)
{
    memset(m, 0, sizeof(*m)); /* all-zero is a valid atomic zero on every target we build for */
}

const char *metrics_route_name(enum metrics_route r)
{
    return route_names[r];
}

void metrics_request(struct metrics *m, enum metrics_route r, int status)
{
    if (status < 0 || status >= METRICS_STATUS_MAX)
        status = 0;
    atomic_fetch_add_explicit(&m->requests[r][status], 1, memory_order_relaxed);
}

void metrics_gateway(struct metrics *m, enum metrics_method method, enum alipay_outcome o,
                     double latency_ms)
{
    atomic_fetch_add_explicit(&m->gateway_calls[method][o], 1, memory_order_relaxed);
    int b = 0;
    while (b < METRICS_BUCKETS && latency_ms > bucket_ms[b])
        b++;
    if (b < METRICS_BUCKETS)
        atomic_fetch_add_explicit(&m->latency_bucket[method][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_sum_us[method], (unsigned long)(latency_ms * 1000),
                              memory_order_relaxed);
}

struct text {
    char *p;
    size_t n, cap;
};

static void put(struct text *t, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int w = vsnprintf(t->p + t->n, t->cap - t->n, fmt, ap);
        va_end(ap);
        if (w >= 0 && (size_t)w < t->cap - t->n) {
            t->n += (size_t)w;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)(w > 0 ? w : 0);
        char *p = realloc(t->p, cap);
        if (!p)
            return;
        t->p = p;
        t->cap = cap;
    }
}

static unsigned long load(atomic_ulong *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

static void render_gateway(struct text *t, struct metrics *m)
{
    put(t, "# HELP cardgate_gateway_calls_total Alipay gateway calls by method and result.\n"
           "# TYPE cardgate_gateway_calls_total counter\n");
    for (int me = 0; me < METRICS_METHODS; me++) {
        for (int o = 0; o < METRICS_OUTCOMES; o++)
            put(t, "cardgate_gateway_calls_total{method=\"%s\",result=\"%s\"} %lu\n",
                method_names[me], alipay_outcome_name((enum alipay_outcome)o),
                load(&m->gateway_calls[me][o]));
    }
    put(t, "# HELP cardgate_gateway_latency_seconds Alipay gateway call latency.\n"
           "# TYPE cardgate_gateway_latency_seconds histogram\n");
    for (int me = 0; me < METRICS_METHODS; me++) {
        unsigned long cum = 0, total = 0;
        for (int o = 0; o < METRICS_OUTCOMES; o++)
            total += load(&m->gateway_calls[me][o]);
        for (int b = 0; b < METRICS_BUCKETS; b++) {
            cum += load(&m->latency_bucket[me][b]);
            put(t, "cardgate_gateway_latency_seconds_bucket{method=\"%s\",le=\"%g\"} %lu\n",
                method_names[me], bucket_ms[b] / 1000.0, cum);
        }
        put(t, "cardgate_gateway_latency_seconds_bucket{method=\"%s\",le=\"+Inf\"} %lu\n",
            method_names[me], total);
        put(t, "cardgate_gateway_latency_seconds_sum{method=\"%s\"} %.6f\n", method_names[me],
            load(&m->latency_sum_us[me]) / 1e6);
        put(t, "cardgate_gateway_latency_seconds_count{method=\"%s\"} %lu\n", method_names[me],
            total);
    }
}

void metrics_caller(struct metrics *m, const char *caller, enum metrics_route r, int status)
{
    if (!caller || status < 100 || status >= 600)
        return;
    for (int i = 0; i < METRICS_CALLERS; i++) {
        struct metrics_caller *c = &m->callers[i];
        const char *name = atomic_load(&c->name);
        if (!name) {
            const char *none = NULL;
            /* Take the free slot; a racing taker may have won it with this
             * very name (then it is ours too) or another (look on). */
            if (!atomic_compare_exchange_strong(&c->name, &none, caller))
                name = none;
            else
                name = caller;
        }
        if (name == caller || strcmp(name, caller) == 0 || i == METRICS_CALLERS - 1) {
            atomic_fetch_add_explicit(&c->n[r][status / 100 - 1], 1, memory_order_relaxed);
            return;
        }
    }
}

/* Per caller: slots holding one name (taken twice in a race, or one name
 * from an old and a new configuration) are summed into the first. */
static void render_callers(struct text *t, struct metrics *m)
{
    put(t, "# HELP cardgate_caller_requests_total Answers per caller (API key name), route and "
           "status class.\n"
           "# TYPE cardgate_caller_requests_total counter\n");
    for (int i = 0; i < METRICS_CALLERS; i++) {
        const char *name = atomic_load(&m->callers[i].name);
        int first = name != NULL;
        for (int j = 0; j < i && first; j++) {
            const char *other = atomic_load(&m->callers[j].name);
            first = !other || strcmp(other, name) != 0;
        }
        if (!first)
            continue;
        for (int r = 0; r < METRICS_ROUTES; r++) {
            for (int k = 0; k < METRICS_CLASSES; k++) {
                unsigned long v = 0;
                for (int j = i; j < METRICS_CALLERS; j++) {
                    const char *other = atomic_load(&m->callers[j].name);
                    if (other && strcmp(other, name) == 0)
                        v += load(&m->callers[j].n[r][k]);
                }
                if (v)
                    put(t,
                        "cardgate_caller_requests_total{caller=\"%s\",route=\"%s\",status="
                        "\"%dxx\"} %lu\n",
                        i == METRICS_CALLERS - 1 ? "(others)" : name, route_names[r], k + 1, v);
            }
        }
    }
}

char *metrics_render(struct metrics *m)
{
    struct text t = {malloc(8192), 0, 8192};
    if (!t.p)
        return NULL;
    t.p[0] = '\0';
    put(&t, "# HELP cardgate_http_requests_total HTTP requests by route and status.\n"
            "# TYPE cardgate_http_requests_total counter\n");
    for (int r = 0; r < METRICS_ROUTES; r++) {
        for (int s = 0; s < METRICS_STATUS_MAX; s++) {
            unsigned long v = load(&m->requests[r][s]);
            if (v)
                put(&t, "cardgate_http_requests_total{route=\"%s\",status=\"%d\"} %lu\n",
                    route_names[r], s, v);
        }
    }
    render_gateway(&t, m);
    render_callers(&t, m);
    put(&t,
        "# HELP cardgate_http_requests_in_flight Requests being handled.\n"
        "# TYPE cardgate_http_requests_in_flight gauge\n"
        "cardgate_http_requests_in_flight %ld\n"
        "# HELP cardgate_gateway_calls_in_flight Gateway calls awaiting an answer.\n"
        "# TYPE cardgate_gateway_calls_in_flight gauge\n"
        "cardgate_gateway_calls_in_flight %ld\n"
        "# HELP cardgate_database_errors_total Database calls that failed.\n"
        "# TYPE cardgate_database_errors_total counter\n"
        "cardgate_database_errors_total %lu\n"
        "# HELP cardgate_idempotent_replays_total Stored outcomes replayed.\n"
        "# TYPE cardgate_idempotent_replays_total counter\n"
        "cardgate_idempotent_replays_total %lu\n"
        "# HELP cardgate_stale_requests Requests left pending past their lock (the "
        "stale_requests view), as the sweeper last counted them.\n"
        "# TYPE cardgate_stale_requests gauge\n"
        "cardgate_stale_requests %ld\n"
        "# HELP cardgate_requests_redriven_total Abandoned requests the sweeper made again.\n"
        "# TYPE cardgate_requests_redriven_total counter\n"
        "cardgate_requests_redriven_total %lu\n"
        "# HELP cardgate_redrives_impossible_total Abandoned requests the sweeper could not make "
        "again (sealed under another key).\n"
        "# TYPE cardgate_redrives_impossible_total counter\n"
        "cardgate_redrives_impossible_total %lu\n"
        "# HELP cardgate_db_connections_up Database connections up (idle or busy), all workers.\n"
        "# TYPE cardgate_db_connections_up gauge\n"
        "cardgate_db_connections_up %ld\n"
        "# HELP cardgate_db_connections_busy Database connections running a query.\n"
        "# TYPE cardgate_db_connections_busy gauge\n"
        "cardgate_db_connections_busy %ld\n"
        "# HELP cardgate_db_queries_waiting Queries (requests) waiting for a free connection.\n"
        "# TYPE cardgate_db_queries_waiting gauge\n"
        "cardgate_db_queries_waiting %ld\n"
        "# HELP cardgate_outcomes_unrecorded Final outcomes from Alipay not yet written to the "
        "ledger (the database failed after the answer; retried with backoff).\n"
        "# TYPE cardgate_outcomes_unrecorded gauge\n"
        "cardgate_outcomes_unrecorded %ld\n",
        atomic_load(&m->requests_in_flight), atomic_load(&m->gateway_in_flight),
        load(&m->db_errors), load(&m->idempotent_replays), atomic_load(&m->stale_requests),
        load(&m->requests_redriven), load(&m->redrives_impossible), atomic_load(&m->db.up),
        atomic_load(&m->db.busy), atomic_load(&m->db.queued), atomic_load(&m->outcomes_unrecorded));
    return t.p;
}
