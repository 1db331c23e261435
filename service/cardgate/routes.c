/* routes: see routes.h. */
#include "routes.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <openssl/rand.h>

#include "jsonx.h"
#include "log.h"
#include "recorder.h"

static void live_add(struct worker *w, struct request *r)
{
    r->next = w->live;
    if (w->live)
        w->live->prev = r;
    w->live = r;
    w->in_flight++;
    atomic_fetch_add(&w->srv->metrics.requests_in_flight, 1);
}

static void request_free(struct request *r)
{
    struct worker *w = r->w;
    if (r->prev)
        r->prev->next = r->next;
    else
        w->live = r->next;
    if (r->next)
        r->next->prev = r->prev;
    w->in_flight--;
    atomic_fetch_sub(&w->srv->metrics.requests_in_flight, 1);
    if (r->body)
        json_object_put(r->body);
    free(r->target);
    free(r->user_id);
    free(r->answer);
    recorder_lost(r->record); /* only set when shutting down mid-write */
    free(r);
}

void routes_abandon(struct worker *w)
{
    while (w->live)
        request_free(w->live);
}

/* A caller's X-Request-Id is kept when it is a sane token; otherwise (or
 * when absent) a random one is made. */
static void request_id(struct request *r)
{
    const char *given =
        evhttp_find_header(evhttp_request_get_input_headers(r->req), "X-Request-Id");
    if (given && *given && strlen(given) < sizeof(r->id)) {
        int ok = 1;
        for (const char *c = given; *c && ok; c++)
            ok = isalnum((unsigned char)*c) || strchr("-_.:/+=", *c);
        if (ok) {
            strcpy(r->id, given);
            return;
        }
    }
    unsigned char raw[12];
    RAND_bytes(raw, sizeof(raw));
    for (size_t i = 0; i < sizeof(raw); i++)
        sprintf(r->id + 2 * i, "%02x", raw[i]);
}

void reply_add_header(struct request *r, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

void reply_send(struct request *r, int status, const char *content_type, const char *body)
{
    struct server *srv = r->w->srv;
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, "X-Request-Id", r->id);
    /* While draining, keep-alive clients are sent elsewhere. */
    if (r->w->draining)
        evhttp_add_header(h, "Connection", "close");
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add(buf, body, strlen(body));
    evhttp_send_reply(r->req, status, NULL, buf);
    evbuffer_free(buf);
    metrics_request(&srv->metrics, r->route, status);
    if (log_enabled(&srv->log, LOG_INFO)) {
        char st[16], ms[32];
        snprintf(st, sizeof(st), "%d", status);
        snprintf(ms, sizeof(ms), "%lld", server_now_ms() - r->start_ms);
        log_write(&srv->log, LOG_INFO, "request", "request_id", r->id, "route",
                  metrics_route_name(r->route), "status", st, "duration_ms", ms, "caller",
                  r->caller, "out_serial_no", r->open.out_serial_no, NULL);
    }
    request_free(r);
}

void reply_json(struct request *r, int status, json_object *o)
{
    char *text = jsonx_text(o);
    json_object_put(o);
    reply_send(r, status, "application/json; charset=utf-8", text ? text : "{}");
    free(text);
}

/* key: v only when v is given (error fields appear only where they apply). */
static void add_present(json_object *o, const char *key, const char *v)
{
    if (v)
        json_object_object_add(o, key, json_object_new_string(v));
}

char *error_body(const char *code, const char *message, const char *field,
                 const struct alipay_reply *alipay)
{
    json_object *root = json_object_new_object(), *e = json_object_new_object();
    add_present(e, "code", code);
    add_present(e, "message", message);
    add_present(e, "field", field);
    if (alipay && alipay->code) {
        json_object *a = json_object_new_object();
        add_present(a, "code", alipay->code);
        add_present(a, "msg", alipay->msg);
        add_present(a, "sub_code", alipay->sub_code);
        add_present(a, "sub_msg", alipay->sub_msg);
        json_object_object_add(e, "alipay", a);
    }
    json_object_object_add(root, "error", e);
    char *text = jsonx_text(root);
    json_object_put(root);
    return text;
}

void reply_error(struct request *r, int status, const char *code, const char *message,
                 const char *field, const struct alipay_reply *alipay)
{
    char *body = error_body(code, message, field, alipay);
    reply_send(r, status, "application/json; charset=utf-8", body ? body : "{}");
    free(body);
}

/* Bearer authentication for /v1: the key's SHA-256 is compared in constant
 * time with every configured one. */
static int authenticate(struct request *r)
{
    const char *auth =
        evhttp_find_header(evhttp_request_get_input_headers(r->req), "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *key = auth + 7;
        while (*key == ' ')
            key++;
        r->caller = config_api_key_lookup(&r->w->srv->cfg, key, strlen(key));
    }
    if (!r->caller) {
        reply_add_header(r, "WWW-Authenticate", "Bearer");
        reply_error(r, 401, "UNAUTHENTICATED",
                    auth ? "the bearer key is not valid"
                         : "Authorization: Bearer <key> is required",
                    NULL, NULL);
        return -1;
    }
    return 0;
}

static void method_not_allowed(struct request *r, const char *allow)
{
    reply_add_header(r, "Allow", allow);
    reply_error(r, 405, "METHOD_NOT_ALLOWED", "method not allowed on this path", NULL, NULL);
}

static void dispatch_v1(struct request *r, enum evhttp_cmd_type cmd, const char *path)
{
    const char *rest = path + strlen("/v1/cards");
    if (strcmp(rest, "") == 0) {
        r->route = cmd == EVHTTP_REQ_POST ? METRICS_ROUTE_OPEN : METRICS_ROUTE_LIST;
        if (cmd != EVHTTP_REQ_POST && cmd != EVHTTP_REQ_GET)
            return method_not_allowed(r, "GET, POST");
        if (authenticate(r) < 0)
            return;
        return cmd == EVHTTP_REQ_POST ? cards_open(r) : cards_list(r);
    }
    if (rest[0] != '/' || rest[1] == '\0' || strchr(rest + 1, '/')) {
        r->route = METRICS_ROUTE_OTHER;
        return reply_error(r, 404, "NOT_FOUND", "no such resource", NULL, NULL);
    }
    int lookup = strcmp(rest + 1, "lookup") == 0;
    r->route = lookup ? METRICS_ROUTE_LOOKUP : METRICS_ROUTE_QUERY;
    if (cmd != EVHTTP_REQ_GET)
        return method_not_allowed(r, "GET");
    if (authenticate(r) < 0)
        return;
    if (lookup)
        return cards_lookup(r);
    size_t len = 0;
    char *card = evhttp_uridecode(rest + 1, 0, &len);
    /* An encoded NUL would cut the number short: refuse it whole. */
    cards_query(r, card && strlen(card) == len ? card : "");
    free(card);
}

void routes_dispatch(struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    struct request *r = calloc(1, sizeof(*r));
    if (!r) {
        evhttp_send_error(req, 503, "out of memory");
        return;
    }
    r->w = w;
    r->req = req;
    r->start_ms = server_now_ms();
    r->route = METRICS_ROUTE_OTHER;
    live_add(w, r);
    request_id(r);

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (!path)
        return reply_error(r, 400, "INVALID_PARAMETER", "bad request target", NULL, NULL);
    if (strcmp(path, "/v1/cards") == 0 || strncmp(path, "/v1/cards/", 10) == 0)
        return dispatch_v1(r, cmd, path);
    if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0 ||
        strcmp(path, "/metrics") == 0) {
        r->route = path[1] == 'h'   ? METRICS_ROUTE_HEALTHZ
                   : path[1] == 'r' ? METRICS_ROUTE_READYZ
                                    : METRICS_ROUTE_METRICS;
        if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD)
            return method_not_allowed(r, "GET, HEAD");
        if (r->route == METRICS_ROUTE_HEALTHZ)
            return ops_healthz(r);
        return r->route == METRICS_ROUTE_READYZ ? ops_readyz(r) : ops_metrics(r);
    }
    reply_error(r, 404, "NOT_FOUND", "no such resource", NULL, NULL);
}
