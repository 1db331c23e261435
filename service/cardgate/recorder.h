/* recorder: writes a final outcome (a card Alipay opened, or Alipay's final
 * refusal) into the ledger again and again, with backoff, when the first
 * write failed. The caller has its answer already; what must not happen is
 * that the card is missing from `cards`, or that a retry re-opens a refused
 * request, because the database blinked at the wrong moment. */
#ifndef CARDGATE_RECORDER_H
#define CARDGATE_RECORDER_H

/* The longest wait between two tries of one write: once the database is
 * back, every live instance has written what it holds within this. */
#define RECORDER_RETRY_MAX_MS 5000

#include "server.h"
#include "store.h"

struct record;

/* A copy of c, kept in case its first write fails (NULL when out of
 * memory). Either recorder_start or recorder_drop it. */
struct record *recorder_keep(struct worker *w, const struct store_completion *c,
                             const char *request_id);
/* Keeps writing it on w's loop, with backoff, until it is written. */
void recorder_start(struct record *rec);
/* It was written the first time: forget it. */
void recorder_drop(struct record *rec);
/* Shutting down before it was written: log it for reconciliation, free it. */
void recorder_lost(struct record *rec);

/* Outcomes still waiting; at shutdown each is logged at error level with
 * its out_serial_no and biz_card_no for reconciliation, then freed. */
void recorder_abandon(struct worker *w);

#endif
