/* ops: /healthz, /readyz and /metrics. */
#include <stdlib.h>

#include "log.h"
#include "ops.h"
#include "store.h"

static void ops_healthz(struct request *r)
{
    reply_json(r, 200, json_tokener_parse("{\"status\":\"ok\"}"));
}

static void ready_checked(int current, const char *error, void *arg)
{
    struct request *r = arg;
    if (current == 1) {
        reply_json(r, 200, json_tokener_parse("{\"status\":\"ready\"}"));
        return;
    }
    if (current == 0) {
        reply_error(r, 503, "SCHEMA_BEHIND",
                    "the database schema is behind this binary: run `cardgate migrate`", NULL,
                    NULL);
        return;
    }
    /* libpq's text names hosts, users and what failed: the log has it, the
     * answer (anyone may ask) only the reason. */
    log_write(&r->w->srv->log, LOG_WARN, "not ready: database unavailable", "request_id", r->id,
              "error", error, NULL);
    reply_error(r, 503, "DATABASE_UNAVAILABLE", "the database does not answer", NULL, NULL);
}

static void ops_readyz(struct request *r)
{
    if (store_schema_check(r->w->pg, ready_checked, r) < 0)
        ready_checked(-1, "database queue full", r);
}

static void ops_metrics(struct request *r)
{
    char *text = metrics_render(&r->w->srv->metrics);
    reply_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", text ? text : "");
    free(text);
}

void ops_register(struct route_table *t)
{
    static const struct {
        const char *path;
        enum metrics_route metric;
        enum route_access access;
        route_handler handler;
    } ops[] = {{"/healthz", METRICS_ROUTE_HEALTHZ, ROUTE_PROBE, ops_healthz},
               {"/readyz", METRICS_ROUTE_READYZ, ROUTE_PROBE, ops_readyz},
               {"/metrics", METRICS_ROUTE_METRICS, ROUTE_OPS, ops_metrics}};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        routes_add(t, EVHTTP_REQ_GET, ops[i].path, ops[i].metric, ops[i].access, ops[i].handler);
        routes_add(t, EVHTTP_REQ_HEAD, ops[i].path, ops[i].metric, ops[i].access, ops[i].handler);
    }
}
