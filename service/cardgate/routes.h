/* routes: the HTTP side of a worker — one struct request per call, the
 * route table that the handler files register into, the dispatch by path
 * and method, authentication, request ids, and the replies (every error in
 * the contract's JSON envelope).
 *
 * The table is filled once in main, before any worker starts, by each
 * handler file's *_register function, and is read-only afterwards: routes.c
 * knows no handler by name. */
#ifndef CARDGATE_ROUTES_H
#define CARDGATE_ROUTES_H

#include <event2/http.h>
#include <json-c/json.h>

#include "alipay_response.h"
#include "ledger.h"
#include "metrics.h"
#include "server.h"

/* The API's body limit; evhttp's own hard limit is above it so that the 413
 * comes in the JSON envelope. */
#define API_MAX_BODY (64 * 1024)

/* A request the sweeper makes again from what the ledger sealed of it
 * (routes_capture): it stands for the HTTP call that first made it. The
 * strings are owned by it; query may be NULL. */
struct redrive {
    enum evhttp_cmd_type method;
    char *path, *query, *body, *caller;
    size_t body_len;
};

/* One HTTP call from arrival to reply. Owned by the worker's live list; a
 * reply frees it. */
struct request {
    struct worker *w;
    struct evhttp_request *req; /* NULL for a request made again */
    struct redrive *redrive;    /* only for a request made again */
    struct request *prev, *next;
    enum metrics_route route;
    char id[80];        /* X-Request-Id */
    const char *caller; /* the API key's name, borrowed from the config */
    long long start_ms;
    long long deadline_ms; /* start_ms + CARDGATE_REQUEST_DEADLINE_MS */
    /* what the handlers carry across their asynchronous steps */
    json_object *body; /* the parsed request body, or what stands for it */
    char *param;       /* the path's {} segment, decoded; NULL when none */
    char *target;      /* card number or dynamic code being queried */
    char *user_id;
    void *data; /* the handler's own state, freed with free_data */
    void (*free_data)(void *);
    struct ledger_call ledger; /* for the endpoints that go through the ledger */
};

/* A handler; r->param holds the path's {} segment when the route has one. */
typedef void (*route_handler)(struct request *r);

/* Who may call a route, and on which listener. With CARDGATE_OPS_LISTEN,
 * the ops listener serves ROUTE_PROBE and ROUTE_OPS routes only, and the
 * API listener everything but ROUTE_OPS; without it, the API listener
 * serves everything. */
enum route_access {
    ROUTE_PUBLIC, /* no key (the members' sign-up callback) */
    ROUTE_BEARER, /* Authorization: Bearer <key> */
    ROUTE_PROBE,  /* no key, on both listeners (/healthz, /readyz) */
    ROUTE_OPS,    /* no key, on the ops listener when there is one (/metrics) */
};

/* One (HTTP method, path pattern) pair. A pattern is a path whose segments
 * are literals or "{}", which matches one non-empty segment (handed to the
 * handler decoded, in r->param). */
struct route {
    enum evhttp_cmd_type method;
    const char *pattern;
    enum metrics_route metric;
    enum route_access access;
    route_handler handler;
};

#define ROUTES_MAX 32

struct route_table {
    struct route routes[ROUTES_MAX];
    size_t n;
};

void routes_init(struct route_table *t);
/* Adds a route. Patterns are matched in the order they were first added,
 * so a literal segment ("/v1/cards/lookup") must come before the "{}" it
 * would also match. Returns 0, or -1 when the table is full. */
int routes_add(struct route_table *t, enum evhttp_cmd_type method, const char *pattern,
               enum metrics_route metric, enum route_access access, route_handler handler);

void routes_dispatch(struct evhttp_request *req, void *arg);

/* What a request is, as the sweeper needs it to make the request again
 * (method, path, query, body and caller as JSON text), malloc'd; NULL when
 * out of memory. */
char *routes_capture(struct request *r, size_t *len);

/* Makes again the request that routes_capture described (text[0..len)),
 * through the same route, handler and ledger as the first time, with no
 * client to answer: the outcome is recorded and logged only. origin names
 * it in the logs. Returns 0, or -1 when text is not such a description. */
int routes_redrive(struct worker *w, const char *text, size_t len, const char *origin);

/* The request's inputs, whether it came over HTTP or is made again: an
 * input header (NULL when absent; a request made again has only its
 * Content-Type), the query string (NULL when none), the body (*len). */
const char *request_header(struct request *r, const char *name);
const char *request_query(struct request *r);
const char *request_body(struct request *r, size_t *len);

/* Frees the requests still live after the loop stopped (drain timeout). */
void routes_abandon(struct worker *w);

/* Sends `body` with `status` and frees r. */
void reply_send(struct request *r, int status, const char *content_type, const char *body);
/* Serializes o (taking ownership) as the JSON answer. */
void reply_json(struct request *r, int status, json_object *o);
/* The error envelope: field and alipay may be NULL. */
void reply_error(struct request *r, int status, const char *code, const char *message,
                 const char *field, const struct alipay_reply *alipay);
/* The envelope as text (for answers that are also stored), malloc'd. */
char *error_body(const char *code, const char *message, const char *field,
                 const struct alipay_reply *alipay);

void reply_add_header(struct request *r, const char *name, const char *value);

#endif
