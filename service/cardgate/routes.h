/* routes: the HTTP side of a worker — one struct request per call, the
 * dispatch by method and path, authentication, request ids, and the replies
 * (every error in the contract's JSON envelope). */
#ifndef CARDGATE_ROUTES_H
#define CARDGATE_ROUTES_H

#include <event2/http.h>
#include <json-c/json.h>

#include "alipay_response.h"
#include "metrics.h"
#include "server.h"
#include "validate.h"

/* The API's body limit; evhttp's own hard limit is above it so that the 413
 * comes in the JSON envelope. */
#define API_MAX_BODY (64 * 1024)

/* One HTTP call from arrival to reply. Owned by the worker's live list; a
 * reply frees it. */
struct request {
    struct worker *w;
    struct evhttp_request *req;
    struct request *prev, *next;
    enum metrics_route route;
    char id[80];        /* X-Request-Id */
    const char *caller; /* the API key's name, borrowed from the config */
    long long start_ms;
    /* what the handlers carry across their asynchronous steps */
    json_object *body;
    struct validate_card_open open;
    char token[33];
    char hash[65];
    char *target; /* card number or dynamic code being queried */
    char *user_id;
    int status;            /* an answer waiting for the ledger */
    struct record *record; /* a final outcome kept until the ledger has it */
    char *answer;
};

void routes_dispatch(struct evhttp_request *req, void *arg);

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

/* Handlers (cards.c, ops.c). */
void cards_open(struct request *r);
void cards_query(struct request *r, const char *biz_card_no);
void cards_lookup(struct request *r);
void cards_list(struct request *r);
void ops_healthz(struct request *r);
void ops_readyz(struct request *r);
void ops_metrics(struct request *r);

#endif
