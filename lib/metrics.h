/* metrics: the service's counters, shared by every worker through one
 * struct that main owns (relaxed atomics: no lock on the hot path), and
 * their Prometheus text rendering for GET /metrics. */
#ifndef CARDGATE_METRICS_H
#define CARDGATE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

#include "alipay_response.h"
#include "pg.h"

enum metrics_route {
    METRICS_ROUTE_OPEN,       /* POST /v1/cards */
    METRICS_ROUTE_QUERY,      /* GET /v1/cards/{biz_card_no} */
    METRICS_ROUTE_LOOKUP,     /* GET /v1/cards/lookup */
    METRICS_ROUTE_LIST,       /* GET /v1/cards */
    METRICS_ROUTE_UPDATE,     /* PATCH /v1/cards/{biz_card_no} */
    METRICS_ROUTE_DELETE,     /* DELETE /v1/cards/{biz_card_no} */
    METRICS_ROUTE_TEMPLATES,  /* /v1/templates... */
    METRICS_ROUTE_ACTIVATION, /* GET /callbacks/card-activation */
    METRICS_ROUTE_HEALTHZ,
    METRICS_ROUTE_READYZ,
    METRICS_ROUTE_METRICS,
    METRICS_ROUTE_OTHER,
    METRICS_ROUTES
};

enum metrics_method {
    METRICS_METHOD_OPEN,
    METRICS_METHOD_QUERY,
    METRICS_METHOD_UPDATE,
    METRICS_METHOD_DELETE,
    METRICS_METHOD_TEMPLATE_CREATE,
    METRICS_METHOD_TEMPLATE_QUERY,
    METRICS_METHOD_TEMPLATE_MODIFY,
    METRICS_METHOD_FORMTEMPLATE_SET,
    METRICS_METHOD_ACTIVATEURL_APPLY,
    METRICS_METHOD_OAUTH_TOKEN,
    METRICS_METHOD_ACTIVATEFORM_QUERY,
    METRICS_METHODS
};

/* The method's name as Alipay spells it ("alipay.marketing.card.open"). */
const char *metrics_method_name(enum metrics_method m);

#define METRICS_OUTCOMES (ALIPAY_TIMEOUT + 1)
#define METRICS_BUCKETS 12
#define METRICS_STATUS_MAX 600

/* Answers per caller (the API key's name), route and status class (1xx..5xx).
 * A slot is taken for a name on its first answer; a name comes from the
 * configuration, whose strings live until exit (a reload keeps the old). */
#define METRICS_CALLERS 64
#define METRICS_CLASSES 5
struct metrics_caller {
    _Atomic(const char *) name;
    atomic_ulong n[METRICS_ROUTES][METRICS_CLASSES];
};

struct metrics {
    atomic_ulong requests[METRICS_ROUTES][METRICS_STATUS_MAX];
    atomic_ulong gateway_calls[METRICS_METHODS][METRICS_OUTCOMES];
    atomic_ulong latency_bucket[METRICS_METHODS][METRICS_BUCKETS]; /* cumulative on render */
    atomic_ulong latency_sum_us[METRICS_METHODS];
    atomic_long requests_in_flight;
    atomic_long gateway_in_flight;
    atomic_ulong db_errors;
    atomic_ulong idempotent_replays;
    /* The sweeper's (sweeper.h): requests left pending past their lock, as
     * its last look saw them (0 until it has looked), those it made
     * again, and those it could not (the seal did not open with this
     * instance's key). */
    atomic_long stale_requests;
    atomic_ulong requests_redriven;
    atomic_ulong redrives_impossible;
    struct pg_gauges db;             /* every worker's pool adds in (pg.h) */
    atomic_long outcomes_unrecorded; /* final outcomes the recorder still writes */
    struct metrics_caller callers[METRICS_CALLERS];
};

void metrics_init(struct metrics *m);
const char *metrics_route_name(enum metrics_route r);
void metrics_request(struct metrics *m, enum metrics_route r, int status);
/* One answer to caller (NULL: not counted). Lock-free: callers past the
 * 64th share the last slot, shown as "(others)". */
void metrics_caller(struct metrics *m, const char *caller, enum metrics_route r, int status);
void metrics_gateway(struct metrics *m, enum metrics_method method, enum alipay_outcome o,
                     double latency_ms);

/* The Prometheus text exposition, malloc'd; the caller frees. */
char *metrics_render(struct metrics *m);

#endif
