/* sweeper: finishes the requests whose holder died.
 *
 * A request claimed in the ledger keeps, while it is pending, what is
 * needed to make it again, sealed (seal.h, migrations/004). When its holder
 * dies — kill -9, an OOM kill, a drain that ran out, a database that stayed
 * away longer than the recorder could wait — the row stays pending past its
 * lock. Worker 0 of every instance looks for such rows every
 * CARDGATE_SWEEP_INTERVAL_MS — once its database has answered for a grace
 * period, and only rows overdue by it, so that a live instance writing an
 * outcome again as the database returns (recorder.h) is not overtaken —
 * and makes each again through the same route,
 * handler and ledger as its caller's retry would (routes_redrive): same
 * out_serial_no, so Alipay's dedup and the ledger's checks keep it to one
 * card, and the ledger takes the outcome. Several instances may sweep at
 * once: the claim lets one of them through, and a row a sweeper took waits
 * before another try (store_abandoned). A request whose claim is now
 * refused for good (its card deleted, or changed by a newer update) is
 * closed by that claim (migrations/004). What cannot be made again — no
 * seal, or a seal under another key — stays in the stale_requests view and
 * the metrics. */
#ifndef CARDGATE_SWEEPER_H
#define CARDGATE_SWEEPER_H

struct worker;

/* Starts w's sweeper (on w's loop; worker 0 only, interval from the
 * configuration). Returns 0, or -1 when its timer cannot be made. The
 * sweeper is owned by w and freed by sweeper_free. */
int sweeper_start(struct worker *w);
/* 1 while a look's query is in flight: a drain waits for it, as for a
 * request, so that nothing it owns is left with the database pool. */
int sweeper_busy(const struct worker *w);
void sweeper_free(struct worker *w);

#endif
