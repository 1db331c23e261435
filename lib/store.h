/* store: cardgate's queries, on a worker's pg_pool — the idempotency ledger
 * (claim a request before calling the gateway, complete it after), the card
 * mappings, the record of gateway calls, and the schema check.
 *
 * The claim and the completion are plpgsql functions (migrations/002) so
 * each is one round trip and one transaction. Every call here is
 * asynchronous: the callback runs later from the worker's loop, once. */
#ifndef CARDGATE_STORE_H
#define CARDGATE_STORE_H

#include <json-c/json.h>

#include "pg.h"

/* The statements every connection prepares (pass to pg_pool_new). */
extern const struct pg_statement store_statements[];
extern const size_t store_statements_count;

enum store_verdict {
    STORE_CLAIMED,     /* ours: call the gateway, then store_complete */
    STORE_REPLAY,      /* a final outcome is stored: http_status + body */
    STORE_MISMATCH,    /* the out_serial_no belongs to another request */
    STORE_IN_PROGRESS, /* another holder's lock is fresh */
    /* A change of a card (store_claim_args.biz_card_no given) only: */
    STORE_NO_CARD,        /* cardgate has no card with that number */
    STORE_DELETED,        /* the card was deleted */
    STORE_STALE,          /* occur_time is older than the newest accepted update */
    STORE_BUSY,           /* another change of the card is in flight */
    STORE_EXTERNAL_TAKEN, /* the new external_card_no belongs to another live card */
};

/* What to claim. Strings are copied before store_claim returns. */
struct store_claim_args {
    const char *app_id, *serial, *hash, *caller, *token;
    long stale_ms;         /* a pending lock older than this is taken over */
    const char *operation; /* open | update | delete | activate */
    /* For a change of a card (NULL for an open): the card, the update's
     * occur_time ("yyyy-MM-dd HH:mm:ss", NULL for a delete) and the new
     * external_card_no the update sets (NULL when it sets none). */
    const char *biz_card_no, *occur_time, *external_card_no;
    /* The request's deadline (monotonic ms, 0: none): the claim must start
     * by then, and its lock waits end by then (nothing committed). */
    long long deadline_ms;
    /* The request sealed for the sweeper (seal.h), kept in the row while
     * it is pending; NULL: nothing to make again. */
    const unsigned char *sealed;
    size_t sealed_len;
};

struct store_claim {
    enum store_verdict verdict;
    int http_status;  /* REPLAY */
    const char *body; /* REPLAY; valid during the callback */
    int attempts;
    const char *biz_card_no; /* REPLAY of a success; valid during the callback */
    /* CLAIMED: how the previous attempt of this serial ended: NULL (first
     * attempt), an outcome class name, or "abandoned" (its holder died).
     * STALE: the occur_time of the newest accepted update. */
    const char *prior;
};

/* claim NULL: the database could not be reached or failed (error says). */
typedef void (*store_claim_cb)(const struct store_claim *claim, const char *error, void *arg);

/* Claims (app_id, out_serial_no) under `token` (and, for a change of a
 * card, the card's lock), in one round trip. Returns 0, or -1 (no
 * callback) when the pool's queue is full. */
int store_claim(struct pg_pool *p, const struct store_claim_args *a, store_claim_cb cb, void *arg);

struct store_completion {
    const char *app_id, *serial, *token;
    const char *state;   /* succeeded | rejected | failed */
    const char *outcome; /* alipay_outcome_name() */
    const char *code, *sub_code;
    int http_status;
    const char *body;
    long latency_ms;
    const char *method;    /* the gateway call to record; NULL: none was made */
    const char *operation; /* as claimed */
    const char *biz_card_no;
    const char *card; /* JSON object: what a success changes in cards (see
                       * card_request_apply in migrations/002); NULL: {} */
    long cool_ms;     /* > 0: a failed call that may still land at Alipay; no
                       * retry (and no other change of the card) for this long */
};

/* ok: 1 when recorded; held: 0 when our lock had been taken over. */
typedef void (*store_done_cb)(int ok, int held, const char *error, void *arg);

/* Records a claimed request's outcome (and the card's change, on success),
 * releasing the request's and the card's locks. The strings are copied
 * before this returns. */
int store_complete(struct pg_pool *p, const struct store_completion *c, store_done_cb cb,
                   void *arg);

/* Records one gateway call for the dashboards; best effort, no callback. */
void store_record_call(struct pg_pool *p, const char *app_id, const char *method,
                       const char *out_serial_no, const char *outcome, const char *code,
                       const char *sub_code, long http_status, long latency_ms);

enum store_card_filter { STORE_BY_EXTERNAL_CARD_NO, STORE_BY_USER_ID, STORE_BY_OUT_SERIAL_NO };

/* cards: the JSON text of the list's answer, {"cards":[...]} with one
 * object per card (biz_card_no, external_card_no, out_serial_no, user_id,
 * card_template_id, status, created_at; null where unset), valid during
 * the callback; NULL when the database failed (unavailable says whether
 * it was down). */
typedef void (*store_cards_cb)(const char *cards, int unavailable, const char *error, void *arg);
int store_cards_list(struct pg_pool *p, const char *app_id, enum store_card_filter by,
                     const char *value, store_cards_cb cb, void *arg);

/* The first row of a query as text (row[i] NULL for SQL NULL), valid during
 * the callback; row NULL when there was none (error NULL) or the database
 * failed (error says; unavailable 1 when it could not be reached). */
typedef void (*store_row_cb)(const char *const *row, int unavailable, const char *error, void *arg);

/* Stores a template's activation settings (settings: a JSON object's text)
 * and answers the sign-up URL already asked for with that callback: row[0]
 * (NULL when none yet). */
int store_template_configure(struct pg_pool *p, const char *app_id, const char *template_id,
                             const char *caller, const char *settings, const char *callback,
                             store_row_cb cb, void *arg);

/* A template's activation settings (row[0], JSON text) and a fresh number
 * for a member's external_card_no (row[1]); no row when the template has
 * no settings. */
int store_template_activation(struct pg_pool *p, const char *app_id, const char *template_id,
                              store_row_cb cb, void *arg);

/* One request left pending past its lock: its out_serial_no and what was
 * sealed of it (NULL when nothing was). Valid during the callback. */
struct store_abandoned {
    const char *serial;
    unsigned char *sealed;
    size_t sealed_len;
};
/* rows NULL: the database failed (error says). total: how many such rows
 * there are in all, of which the oldest n are given. */
typedef void (*store_abandoned_cb)(const struct store_abandoned *rows, size_t n, long total,
                                   const char *error, void *arg);
/* Takes the oldest `limit` requests of app_id left pending past their lock
 * by more than grace_ms that hold a sealed copy and that no sweeper took in
 * the last backoff_ms, marking them taken now (swept_at). total counts every
 * request pending past its lock (the stale_requests view). Returns 0, or -1
 * when the pool's queue is full. */
int store_abandoned(struct pg_pool *p, const char *app_id, int limit, long backoff_ms,
                    long grace_ms, store_abandoned_cb cb, void *arg);

/* current: 1 when the newest embedded migration is applied, 0 when behind,
 * -1 when the database could not answer. */
typedef void (*store_schema_cb)(int current, const char *error, void *arg);
int store_schema_check(struct pg_pool *p, store_schema_cb cb, void *arg);

#endif
