/* server: what the whole cardgate process shares, and the workers.
 *
 * main owns one struct server. It is filled before any worker starts and is
 * read-only afterwards, except the metrics (atomics). Each worker owns its
 * event_base and everything on it: the evhttp listener (its own socket on
 * the shared port, SO_REUSEPORT), the curl multi handle, the Alipay client
 * and the PostgreSQL pool. Nothing of a worker is touched by another thread
 * but through event_active on its base. */
#ifndef CARDGATE_SERVER_H
#define CARDGATE_SERVER_H

#include <pthread.h>
#include <openssl/evp.h>

#include "alipay_client.h"
#include "config.h"
#include "log.h"
#include "metrics.h"

struct route_table;

/* What SIGHUP can change, published whole: workers read the current one
 * atomically, main replaces it. Replaced ones stay until exit: a request in
 * flight may still hold a caller's name or a key of theirs. */
struct reload {
    struct config cfg;         /* the API keys are read from it */
    struct alipay_trust trust; /* holds a reference to each of its keys */
    struct reload *older;
};

struct server {
    struct config cfg;
    struct log log;
    EVP_PKEY *app_key;    /* parsed once at start */
    EVP_PKEY *alipay_key; /* Alipay's public key at start */
    /* Certificate mode (NULL/empty in public-key mode): Alipay's
     * certificates by SN (the configured one, those fetched since), the
     * SNs every request carries, and the configured certificate's. */
    struct alipay_cert_store *certs;
    char app_cert_sn[ALIPAY_CERT_SN_LEN + 1], alipay_cert_sn[ALIPAY_CERT_SN_LEN + 1];
    char *root_cert_sn;
    struct alipay_aes *aes;               /* content encryption; NULL: off */
    _Atomic(struct reload *) live;        /* API keys and Alipay's keys in force */
    _Atomic(struct alipay_trust *) trust; /* &live->trust, for the Alipay clients */
    unsigned char hash_key[32];           /* keys the request hashes: derived from the app key */
    unsigned char seal_key[32];           /* seals requests for the sweeper: derived the same way */
    struct metrics metrics;
    const struct route_table *routes; /* filled by main before the workers start */
    int nworkers;
    struct worker *workers;
};

struct worker {
    int id;
    struct server *srv;
    pthread_t thread;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct evhttp_bound_socket *ops_bound; /* CARDGATE_OPS_LISTEN, worker 0 only */
    struct alipay_http *ahttp;
    struct alipay_client *alipay;
    struct pg_pool *pg;
    struct validate_hasher *hasher; /* srv->hash_key, prepared (validate.h) */
    struct seal_box *sealer;        /* srv->seal_key, prepared (seal.h) */
    struct event *drain_ev;         /* activated by main on SIGTERM */
    struct event *drain_tick;
    long in_flight;          /* requests being handled; this thread only */
    char id_prefix[20];      /* request ids: 16 random hex digits and '-' ... */
    unsigned long id_seq;    /* ... then this count */
    struct request *live;    /* those requests, to free them if the drain times out */
    struct record *records;  /* final outcomes being written again (recorder.h) */
    struct sweeper *sweeper; /* worker 0 only (sweeper.h) */
    struct certs *certs;     /* certificate mode: unknown certificates looked for (certs.h) */
    long long drain_deadline_ms;
    int draining; /* answers then close their connection */
};

/* Creates worker w's loop, listener and clients (in the calling thread, so a
 * bad setting fails start-up), then starts its thread. Returns 0, or -1 with
 * err. */
int worker_start(struct worker *w, struct server *srv, int id, char *err, size_t errlen);

/* Asks the worker to stop accepting and to exit once its in-flight requests
 * are done or the drain timeout passes. Safe from any thread. */
void worker_drain(struct worker *w);

/* Waits for the worker's thread and frees what it owns. */
void worker_join(struct worker *w);

/* Milliseconds on the monotonic clock. */
long long server_now_ms(void);

#endif
