/* routes: see routes.h. */
#include "routes.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>

#include "jsonw.h"
#include "jsonx.h"
#include "log.h"

static void live_add(struct worker *w, struct request *r)
{
    r->next = w->live;
    if (w->live)
        w->live->prev = r;
    w->live = r;
    w->in_flight++;
    atomic_fetch_add(&w->srv->metrics.requests_in_flight, 1);
}

static void redrive_free(struct redrive *d)
{
    if (!d)
        return;
    free(d->path);
    free(d->query);
    free(d->body);
    free(d->caller);
    free(d);
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
    redrive_free(r->redrive);
    free(r->param);
    free(r->target);
    free(r->user_id);
    if (r->free_data)
        r->free_data(r->data);
    ledger_call_free(&r->ledger);
    free(r);
}

void routes_abandon(struct worker *w)
{
    while (w->live)
        request_free(w->live);
}

/* A caller's X-Request-Id is kept when it is a sane token; otherwise (or
 * when absent) one is made: the worker's random prefix (drawn at start) and
 * its count of requests. Unique across instances and restarts without a
 * call to the RNG per request (an id finds a request in the logs; it
 * guards nothing). */
static void request_id(struct request *r)
{
    const char *given = request_header(r, "X-Request-Id");
    if (given && *given && strlen(given) < sizeof(r->id)) {
        int ok = 1;
        for (const char *c = given; *c && ok; c++)
            ok = isalnum((unsigned char)*c) || strchr("-_.:/+=", *c);
        if (ok) {
            strcpy(r->id, given);
            return;
        }
    }
    snprintf(r->id, sizeof(r->id), "%s%08lx", r->w->id_prefix, ++r->w->id_seq);
}

void reply_add_header(struct request *r, const char *name, const char *value)
{
    if (r->req)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

static void send_http(struct request *r, int status, const char *content_type, const char *body)
{
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
}

void reply_send(struct request *r, int status, const char *content_type, const char *body)
{
    struct server *srv = r->w->srv;
    if (r->req) {
        send_http(r, status, content_type, body);
        metrics_request(&srv->metrics, r->route, status);
        metrics_caller(&srv->metrics, r->caller, r->route, status);
    }
    /* A request made again has nobody to answer: its line in the log (at
     * every level) is what tells how it ended. */
    if (!r->req || log_enabled(&srv->log, LOG_INFO)) {
        char st[16], ms[32];
        snprintf(st, sizeof(st), "%d", status);
        snprintf(ms, sizeof(ms), "%lld", server_now_ms() - r->start_ms);
        log_write(&srv->log, r->req ? LOG_INFO : LOG_WARN,
                  r->req ? "request" : "abandoned request made again", "request_id", r->id, "route",
                  metrics_route_name(r->route), "status", st, "duration_ms", ms, "caller",
                  r->caller, "out_serial_no", r->ledger.serial, NULL);
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
    const char *auth = request_header(r, "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *key = auth + 7;
        while (*key == ' ')
            key++;
        struct reload *live = atomic_load(&r->w->srv->live);
        r->caller = config_api_key_lookup(&live->cfg, key, strlen(key));
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

/* --- the route table ----------------------------------------------------- */

void routes_init(struct route_table *t)
{
    memset(t, 0, sizeof(*t));
}

int routes_add(struct route_table *t, enum evhttp_cmd_type method, const char *pattern,
               enum metrics_route metric, enum route_access access, route_handler handler)
{
    if (t->n >= ROUTES_MAX)
        return -1;
    t->routes[t->n++] = (struct route){method, pattern, metric, access, handler};
    return 0;
}

/* Does path match pattern? On a match, *param points at the raw text of
 * the "{}" segment (length *plen), or is NULL when the pattern has none. */
static int pattern_match(const char *pattern, const char *path, const char **param, size_t *plen)
{
    *param = NULL;
    *plen = 0;
    while (*pattern && *path) {
        if (strncmp(pattern, "{}", 2) == 0) {
            size_t n = strcspn(path, "/");
            if (n == 0)
                return 0;
            *param = path, *plen = n;
            pattern += 2, path += n;
        } else if (*pattern++ != *path++) {
            return 0;
        }
    }
    return *pattern == '\0' && *path == '\0';
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    default:
        return "OPTIONS";
    }
}

/* 405 with Allow: every method registered for pattern. */
static void method_not_allowed(struct request *r, const struct route_table *t, const char *pattern)
{
    char allow[128] = "";
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->routes[i].pattern, pattern) != 0)
            continue;
        if (allow[0])
            strcat(allow, ", ");
        strcat(allow, method_name(t->routes[i].method));
    }
    reply_add_header(r, "Allow", allow);
    reply_error(r, 405, "METHOD_NOT_ALLOWED", "method not allowed on this path", NULL, NULL);
}

/* The local port the request came in on, or -1. */
static int local_port(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    int fd = bev ? bufferevent_getfd(bev) : -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

/* Whether a route is served on the listener the request came in on. */
static int served_here(struct request *r, enum route_access access)
{
    const struct config *cfg = &r->w->srv->cfg;
    if (!r->req)
        return access == ROUTE_BEARER;
    if (!cfg->ops_port || access == ROUTE_PROBE)
        return 1;
    int on_ops = local_port(r->req) == cfg->ops_port;
    return access == ROUTE_OPS ? on_ops : !on_ops;
}

/* The first pattern that matches the path names the resource; the method
 * then picks its route, or gets 405. */
static void dispatch(struct request *r, enum evhttp_cmd_type cmd, const char *path)
{
    const struct route_table *t = r->w->srv->routes;
    const struct route *resource = NULL, *route = NULL;
    const char *param = NULL;
    size_t plen = 0;
    for (size_t i = 0; i < t->n && !resource; i++)
        if (pattern_match(t->routes[i].pattern, path, &param, &plen) &&
            served_here(r, t->routes[i].access))
            resource = &t->routes[i];
    if (!resource) {
        reply_error(r, 404, "NOT_FOUND", "no such resource", NULL, NULL);
        return;
    }
    for (size_t i = 0; i < t->n && !route; i++)
        if (t->routes[i].method == cmd && strcmp(t->routes[i].pattern, resource->pattern) == 0)
            route = &t->routes[i];
    r->route = route ? route->metric : resource->metric;
    if (!route) {
        method_not_allowed(r, t, resource->pattern);
        return;
    }
    /* A request made again was authenticated the first time; its caller
     * is the one the ledger row was claimed for. */
    if (route->access == ROUTE_BEARER && !r->redrive && authenticate(r) < 0)
        return;
    if (param) {
        size_t len = 0;
        char *raw = strndup(param, plen);
        r->param = raw ? evhttp_uridecode(raw, 0, &len) : NULL;
        free(raw);
        /* An encoded NUL would cut the value short: refuse it whole. */
        if (r->param && strlen(r->param) != len)
            r->param[0] = '\0';
        if (!r->param) {
            reply_error(r, 500, "INTERNAL", "out of memory", NULL, NULL);
            return;
        }
    }
    route->handler(r);
}

static struct request *request_new(struct worker *w, struct evhttp_request *req)
{
    struct request *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->w = w;
    r->req = req;
    r->start_ms = server_now_ms();
    r->deadline_ms = r->start_ms + w->srv->cfg.request_deadline_ms;
    r->route = METRICS_ROUTE_OTHER;
    live_add(w, r);
    return r;
}

/* The path of a request: from evhttp's URI, or of a request made again
 * (routes_redrive). NULL when the target has none. */
static const char *request_path(struct request *r)
{
    if (r->req) {
        const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->req);
        return uri ? evhttp_uri_get_path(uri) : NULL;
    }
    return r->redrive->path;
}

void routes_dispatch(struct evhttp_request *req, void *arg)
{
    struct worker *w = arg;
    struct request *r = request_new(w, req);
    if (!r) {
        evhttp_send_error(req, 503, "out of memory");
        return;
    }
    request_id(r);

    const char *path = request_path(r);
    if (!path) {
        reply_error(r, 400, "INVALID_PARAMETER", "bad request target", NULL, NULL);
        return;
    }
    dispatch(r, evhttp_request_get_command(req), path);
}

/* --- the request's inputs, and making a request again -------------------- */

const char *request_header(struct request *r, const char *name)
{
    if (r->req)
        return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
    return strcasecmp(name, "Content-Type") == 0 ? "application/json" : NULL;
}

const char *request_query(struct request *r)
{
    if (r->req)
        return evhttp_uri_get_query(evhttp_request_get_evhttp_uri(r->req));
    return r->redrive->query;
}

const char *request_body(struct request *r, size_t *len)
{
    if (r->req) {
        struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
        *len = evbuffer_get_length(in);
        return *len ? (const char *)evbuffer_pullup(in, -1) : "";
    }
    *len = r->redrive->body_len;
    return r->redrive->body;
}

static enum evhttp_cmd_type request_method(struct request *r)
{
    return r->req ? evhttp_request_get_command(r->req) : r->redrive->method;
}

char *routes_capture(struct request *r, size_t *len)
{
    size_t body_len = 0;
    const char *body = request_body(r, &body_len), *path = request_path(r);
    /* The body was read as JSON (valid UTF-8) before the ledger captures
     * it. */
    struct jsonw w = {0};
    jsonw_puts(&w, "{\"method\":");
    jsonw_string(&w, method_name(request_method(r)));
    jsonw_puts(&w, ",\"path\":");
    jsonw_string(&w, path ? path : "");
    jsonw_puts(&w, ",\"query\":");
    jsonw_string(&w, request_query(r));
    jsonw_puts(&w, ",\"body\":");
    jsonw_string_len(&w, body, body_len); /* the input buffer: no NUL after it */
    jsonw_puts(&w, ",\"caller\":");
    jsonw_string(&w, r->caller ? r->caller : "");
    jsonw_raw(&w, "}", 1);
    size_t n = w.len;
    char *text = jsonw_take(&w);
    if (text)
        *len = n;
    return text;
}

static const enum evhttp_cmd_type redrive_methods[] = {EVHTTP_REQ_POST, EVHTTP_REQ_PUT,
                                                       EVHTTP_REQ_PATCH, EVHTTP_REQ_DELETE};

/* The string member key of o, copied (NULL member: *out NULL); -1 when it
 * is missing, not a string, or memory runs out. */
static int take_string(json_object *o, const char *key, int nullable, char **out)
{
    json_object *v = NULL;
    *out = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        return -1;
    if (!v)
        return nullable ? 0 : -1;
    if (!json_object_is_type(v, json_type_string))
        return -1;
    *out = strndup(json_object_get_string(v), (size_t)json_object_get_string_len(v));
    return *out ? 0 : -1;
}

static struct redrive *redrive_parse(const char *text, size_t len)
{
    json_object *o = jsonx_parse(text, len), *m = NULL;
    struct redrive *d = o ? calloc(1, sizeof(*d)) : NULL;
    int ok =
        d && json_object_object_get_ex(o, "method", &m) && json_object_is_type(m, json_type_string);
    for (size_t i = 0; ok && i < sizeof(redrive_methods) / sizeof(*redrive_methods); i++)
        if (strcmp(json_object_get_string(m), method_name(redrive_methods[i])) == 0)
            d->method = redrive_methods[i], ok = 2;
    ok = ok == 2 && take_string(o, "path", 0, &d->path) == 0 &&
         take_string(o, "query", 1, &d->query) == 0 && take_string(o, "body", 0, &d->body) == 0 &&
         take_string(o, "caller", 0, &d->caller) == 0 && *d->caller;
    if (d && ok)
        d->body_len = strlen(d->body);
    json_object_put(o);
    if (!ok) {
        redrive_free(d);
        return NULL;
    }
    return d;
}

int routes_redrive(struct worker *w, const char *text, size_t len, const char *origin)
{
    struct redrive *d = redrive_parse(text, len);
    if (!d)
        return -1;
    struct request *r = request_new(w, NULL);
    if (!r) {
        redrive_free(d);
        return -1;
    }
    r->redrive = d;
    r->caller = d->caller;
    snprintf(r->id, sizeof(r->id), "redrive-%.60s", origin);
    dispatch(r, d->method, d->path);
    return 0;
}
