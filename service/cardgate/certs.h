/* certs: Alipay's certificates met in answers, in certificate mode.
 *
 * An answer signed by a certificate this instance lacks (Alipay rotated
 * it) waits here while the certificate is looked for: first in the
 * alipay_certs table (another instance, or this one before a restart, may
 * have fetched it), else fetched from Alipay with
 * alipay.open.app.alipaycert.download by the one instance that claims its
 * row, then stored for the others. Concurrent answers naming the same
 * certificate share one look; a certificate is only ever trusted when it
 * chains to the configured roots (alipay_cert_store_admit). One per worker;
 * on the worker's loop only. */
#ifndef CARDGATE_CERTS_H
#define CARDGATE_CERTS_H

#include <libpq-fe.h>

struct worker;
struct server;
struct certs;

/* Makes w's (w->certs); 0, or -1 when out of memory. */
int certs_start(struct worker *w);

/* Frees what is in flight without calling anyone back (the worker is
 * stopping; the answers waiting are dropped with the Alipay client). */
void certs_free(struct certs *c);

/* The alipay_client_config.resolve hook: ctx is the worker's struct certs. */
void certs_resolve(void *ctx, const char *sn, void (*done)(void *arg), void *arg);

/* At start (main's thread, before the workers): admits the certificates
 * the alipay_certs table holds for the app, checked again. Returns how many,
 * or -1 when they cannot be read (the caller goes on: they are fetched
 * again when met). */
int certs_load_stored(struct server *srv, PGconn *conn);

#endif
