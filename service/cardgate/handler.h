/* handler: what the handler files share — reading a JSON body and a query
 * string with the contract's errors, the 503 for a database that does not
 * answer, and small pieces of the answers. Each function that can answer
 * says so; once it has answered, the request is gone. */
#ifndef CARDGATE_HANDLER_H
#define CARDGATE_HANDLER_H

#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "alipay_client.h"
#include "alipay_response.h"
#include "routes.h"

#define JSON_TYPE "application/json; charset=utf-8"

/* Reads and parses the JSON body (415, 413, 400 MALFORMED_JSON otherwise);
 * answers the error itself and returns NULL when it cannot. The caller owns
 * the result. */
json_object *handler_json_body(struct request *r);

/* 400 INVALID_PARAMETER with a validator's message and, when it names one,
 * its field. */
struct validate_error;
void handler_invalid(struct request *r, const struct validate_error *verr);

/* The path's id (r->param), reported as `field`: 1 to 32 printable ASCII
 * characters. Returns 0, or -1 after answering 400. */
int handler_path_id(struct request *r, const char *field);

/* A PUT or PATCH of one resource: handler_path_id, then the JSON body into
 * r->body (the request owns it). Returns 0, or -1 after answering (r is
 * then gone). */
int handler_path_and_body(struct request *r, const char *field);

/* Parses the query string into q and refuses parameters other than the
 * `allowed` ones (NULL-terminated). Returns 0 (the caller clears q with
 * evhttp_clear_headers), or -1 after answering 400. */
int handler_query_params(struct request *r, struct evkeyvalq *q, const char *const allowed[]);

/* 503 DATABASE_UNAVAILABLE, counted and logged with `error`. */
void handler_database_unavailable(struct request *r, const char *error);

/* Now in UTC as "yyyy-MM-ddTHH:mm:ssZ". */
void handler_utc_now(char out[32]);

/* key: v, or key: null when v is NULL (the contract lists these fields always). */
void handler_add_nullable(json_object *o, const char *key, const char *v);

/* Location: /v1/cards/{biz_card_no}. */
void handler_add_location(struct request *r, const char *biz_card_no);

/* One log line for a gateway call (warn unless it succeeded). */
void handler_log_gateway(struct request *r, const char *method, const struct alipay_reply *rep);

/* Calls `method` at the gateway for r with p, within what is left of r's
 * deadline (at most the gateway timeout), counting the call in flight. cb
 * runs later exactly once: with the answer, or — when the call was not
 * made (the deadline has passed, it could not be built) — with a reply
 * whose not_sent is 1 (ALIPAY_TIMEOUT or ALIPAY_UNAVAILABLE) saying why. */
void handler_call_params(struct request *r, const char *method, struct alipay_call_params *p,
                         alipay_client_cb cb);

/* The same with biz (taken: freed here; NULL means out of memory) and the
 * two tokens. */
void handler_call_gateway(struct request *r, const char *method, char *biz, const char *auth_token,
                          const char *app_auth_token, alipay_client_cb cb);

/* A call outside the ledger has answered: no longer in flight, and — when
 * it was made — counted, logged and recorded in gateway_calls. */
void handler_gateway_answered(struct request *r, enum metrics_method m,
                              const struct alipay_reply *rep);

/* A token no other attempt of any instance has (32 hex digits and a NUL):
 * the worker's random prefix (64 bits drawn at its start) and its count.
 * It tells a ledger attempt from every other one; it is never shown to a
 * caller, so being foreseeable costs nothing (RAND_bytes per request did
 * cost 6 % of a replay's instructions). */
void handler_attempt_token(struct worker *w, char out[33]);

#endif
