/* ledger: the one way every endpoint that acts at Alipay runs —
 *
 *   claim the out_serial_no (and, for a change of a card, the card) in the
 *   PostgreSQL ledger → [verify, for a retry after an unknown outcome] →
 *   call the gateway → record the outcome (again and again if the database
 *   blinks: recorder.h) → answer, and replay that answer to later retries.
 *
 * An endpoint describes itself once in a struct ledger_op (its operation,
 * Alipay method, how to build biz_content and how to read a success) and
 * hands each request to ledger_run. The answers for the ledger's verdicts
 * (replay, 422 OUT_SERIAL_NO_REUSED, 409 REQUEST_IN_PROGRESS, 404, 410,
 * 409 STALE_UPDATE, 409 CARD_BUSY) and for the gateway's outcomes (the
 * contract's table) are made here, the same for every endpoint. */
#ifndef CARDGATE_LEDGER_H
#define CARDGATE_LEDGER_H

#include "alipay_response.h"
#include "metrics.h"

struct request;
struct record;

/* What a success turns into. All three strings are malloc'd and owned by
 * the ledger call once success() returns. */
struct ledger_success {
    int status;        /* 201 or 200 */
    char *body;        /* the answer (stored for replay) */
    char *biz_card_no; /* the card, for the ledger, cards and Location */
    char *card;        /* JSON: what the success changes in `cards` (store.h) */
};

struct ledger_op {
    const char *operation; /* open | update | delete: card_requests.operation */
    const char *method;    /* the Alipay method */
    enum metrics_method metric;
    int card_not_found_404;     /* CARD_NOT_EXIT answers 404 CARD_NOT_FOUND (else 422) */
    int template_not_found_404; /* TEMPLATE_NOT_EXIT answers 404 TEMPLATE_NOT_FOUND */
    /* Alipay's business refusals (40004) are final, stored and replayed,
     * unless this is set: then a retry asks again (the ledger only has to
     * keep a success from being repeated). */
    int rejection_not_final;
    /* The request's field that holds the key, named by the 409 and 422 of
     * the ledger; NULL: "out_serial_no"; "": none (the key is derived). */
    const char *key_field;
    /* Gateway calls one attempt may make in a row (verify's query, then the
     * call): the lock lives that many gateway timeouts plus the margin, so
     * a live holder is never taken over. 0 counts as 1. */
    int gateway_calls;
    /* After a call that may still land at Alipay (timeout, broken
     * connection), hold the card's other changes for the lock margin: for
     * changes, whose order matters (its own retry checks the card first).
     * An open needs no wait: Alipay dedups it on out_serial_no. */
    int cool_down;
    /* The request cannot be made again without its client (a member's
     * sign-up: its one-time code is spent): nothing is sealed for the
     * sweeper, and a request its holder abandoned waits for a retry. */
    int not_redriven;
    /* Optional: headers of a success and of its replays (Location). */
    void (*decorate)(struct request *r, int status, const char *biz_card_no, const char *body);
    /* Optional: the endpoint's own form for every error it answers (the
     * member's sign-up answers HTML pages): the body, malloc'd, sent as
     * content_type. NULL: the JSON error envelope. */
    char *(*error_page)(int status, const char *code, const char *message,
                        const struct alipay_reply *alipay);
    const char *content_type;
    /* biz_content for the call, malloc'd; NULL when out of memory. */
    char *(*biz)(struct request *r);
    /* Reads a success (rep->outcome ALIPAY_OK), or builds one without an
     * answer (rep NULL: verify found the change already made). Returns 0,
     * or -1 when the answer cannot be used: rep->outcome is then set to
     * ALIPAY_BAD_SIGNATURE and the call counts as a failure. */
    int (*success)(struct request *r, struct alipay_reply *rep, struct ledger_success *out);
    /* Optional. Called instead of sending when the previous attempt of this
     * out_serial_no ended without a known outcome; it must end in exactly
     * one of ledger_send, ledger_succeed_unsent or ledger_fail. */
    void (*verify)(struct request *r);
    /* Optional. Called instead of sending on every claimed attempt (the
     * calls that come before the op's own: a sign-up's token and form); it
     * must end in exactly one of ledger_send or ledger_stop. */
    void (*prepare)(struct request *r);
};

/* A request's ledger state; lives in struct request, freed with it. */
struct ledger_call {
    const struct ledger_op *op;
    char *serial, *hash, *biz_card_no, *occur_time, *external_card_no;
    char *auth_token, *app_auth_token;
    char *prior;    /* how the previous attempt ended (store_claim.prior) */
    char token[33]; /* this holder's lock token */
    int status;     /* the answer waiting for the ledger write */
    char *answer;
    struct record *record; /* a final outcome kept until the ledger has it */
};

/* The key of one ledger call; every string is copied. biz_card_no,
 * occur_time and external_card_no only for a change of a card. */
struct ledger_key {
    const char *serial, *hash;
    const char *biz_card_no, *occur_time, *external_card_no;
    const char *auth_token, *app_auth_token; /* public parameters of the call */
};

/* Runs op for r: claim, then the gateway, then the answer. r is answered
 * (and freed) whatever happens. */
void ledger_run(struct request *r, const struct ledger_op *op, const struct ledger_key *key);

/* The steps a verify may end in. */
void ledger_send(struct request *r);
/* The change is already made at Alipay (found by verify with the reply
 * `seen`): recorded as succeeded without calling the op's method. */
void ledger_succeed_unsent(struct request *r, const struct alipay_reply *seen);
/* verify could not tell (its own call failed with rep): the attempt fails,
 * not final, and the previous attempt's outcome stays what the ledger
 * remembers, so the next retry verifies again. */
void ledger_fail(struct request *r, struct alipay_reply *rep);
/* The same with the op's own status, code and message. */
void ledger_fail_as(struct request *r, const struct alipay_reply *rep, int status, const char *code,
                    const char *message);

/* prepare could not go on (its own call failed with rep, or what it got
 * cannot be used): the attempt fails, not final, answered with status,
 * code and message; nothing was sent of the op's own method. */
void ledger_stop(struct request *r, const struct alipay_reply *rep, int status, const char *code,
                 const char *message);

/* The auth_token of the op's call, found by prepare (copied). */
int ledger_set_auth_token(struct request *r, const char *token);

/* Frees what a ledger call owns (the request is going away). */
void ledger_call_free(struct ledger_call *c);

/* The contract's answer for a gateway outcome other than success: its
 * status, error code and message (a static string). not_found_404 (flags):
 * LEDGER_CARD_404 turns a CARD_NOT_EXIT refusal into 404 CARD_NOT_FOUND,
 * LEDGER_TEMPLATE_404 a TEMPLATE_NOT_EXIT into 404 TEMPLATE_NOT_FOUND. */
#define LEDGER_CARD_404 1
#define LEDGER_TEMPLATE_404 2
struct ledger_answer {
    int status;
    const char *code, *message;
    const struct alipay_reply *alipay; /* the codes to show: NULL unless verified */
};
void ledger_gateway_answer(const struct alipay_reply *rep, int not_found_404,
                           struct ledger_answer *out);
/* The same as the JSON error envelope: sets *status, returns the body. */
char *ledger_gateway_error(const struct alipay_reply *rep, int not_found_404, int *status);

#endif
