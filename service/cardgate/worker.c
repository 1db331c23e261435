/* worker: one event loop thread. See server.h. */
#include "server.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <openssl/rand.h>

#include "alipay_client.h"
#include "alipay_http.h"
#include "pg.h"
#include "certs.h"
#include "recorder.h"
#include "routes.h"
#include "store.h"
#include "seal.h"
#include "sweeper.h"
#include "validate.h"

/* evhttp itself stops bodies beyond this; routes answer 413 in the JSON
 * envelope for anything over the API's 64 KiB below it. */
#define HTTP_HARD_BODY_LIMIT (1024 * 1024)

long long server_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A listening socket of our own on the shared address host:port (the
 * setting `name`): with SO_REUSEPORT the kernel spreads connections over
 * the workers' sockets. */
static int listen_socket(const char *host, int port_no, const char *name, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", port_no);
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s: %s", name, host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
        snprintf(err, errlen, "%s: cannot listen on %s:%d: %s", name, host, port_no,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* evhttp keeps a header value as a C string, so "Bearer <key>\0junk" would
 * read as "Bearer <key>": a value cut short, taken for what it is not. So
 * every NUL byte a client sends becomes 0x01 before evhttp parses anything.
 * A header holding one then matches nothing it names (401 for a key, 415
 * for a Content-Type, 400 for a path), and a body holding one is not JSON
 * (400, as with the NUL itself: JSON allows neither raw). Runs on the
 * connection's input buffer as each read adds to it. */
static void nul_guard(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
    (void)arg;
    size_t len = evbuffer_get_length(in);
    struct evbuffer_ptr from;
    if (info->n_added == 0 ||
        evbuffer_ptr_set(in, &from, info->n_added < len ? len - info->n_added : 0,
                         EVBUFFER_PTR_SET) < 0 ||
        evbuffer_search(in, "", 1, &from).pos < 0)
        return;
    /* Rare and hostile: rewritten whole, through the buffer's own API. */
    unsigned char *all = malloc(len);
    if (!all) {
        evbuffer_drain(in, len); /* what cannot be cleaned is not parsed */
        return;
    }
    evbuffer_remove(in, all, len);
    for (size_t i = 0; i < len; i++)
        if (all[i] == 0)
            all[i] = 1;
    evbuffer_add(in, all, len);
    free(all);
}

/* evhttp's connections, made here so that each input is guarded. */
static struct bufferevent *guarded_bev(struct event_base *base, void *arg)
{
    (void)arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (bev && !evbuffer_add_cb(bufferevent_get_input(bev), nul_guard, NULL)) {
        bufferevent_free(bev);
        return NULL;
    }
    return bev;
}

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if ((w->in_flight == 0 && !w->records && !sweeper_busy(w)) ||
        server_now_ms() >= w->drain_deadline_ms)
        event_base_loopexit(w->base, NULL);
}

/* Runs on the worker's thread when main asks it to stop. */
static void drain_start(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (w->bound) {
        evhttp_del_accept_socket(w->http, w->bound);
        w->bound = NULL;
    }
    if (w->ops_bound) {
        evhttp_del_accept_socket(w->http, w->ops_bound);
        w->ops_bound = NULL;
    }
    w->draining = 1;
    w->drain_deadline_ms = server_now_ms() + w->srv->cfg.drain_timeout_ms;
    struct timeval tick = {0, 20 * 1000};
    w->drain_tick = event_new(w->base, -1, EV_PERSIST, drain_check, w);
    event_add(w->drain_tick, &tick);
    drain_check(-1, 0, w);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

static int worker_clients(struct worker *w, char *err, size_t errlen)
{
    const struct config *cfg = &w->srv->cfg;
    struct alipay_http_options hopt = {.ca_file = cfg->alipay_ca_file};
    w->ahttp = alipay_http_new(w->base, &hopt, err, errlen);
    if (!w->ahttp)
        return -1;
    if (w->srv->certs && certs_start(w) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct alipay_client_config acfg = {
        .gateway_url = cfg->alipay_gateway,
        .app_id = cfg->alipay_app_id,
        .app_key = w->srv->app_key,
        .alipay_key = w->srv->alipay_key,
        .trust = &w->srv->trust,
        .sign_type = cfg->alipay_sign_type,
        .timeout_ms = cfg->alipay_timeout_ms,
        .aes = w->srv->aes,
    };
    if (w->srv->certs) {
        acfg.certs = w->srv->certs;
        acfg.app_cert_sn = w->srv->app_cert_sn;
        acfg.root_cert_sn = w->srv->root_cert_sn;
        acfg.alipay_cert_sn = w->srv->alipay_cert_sn;
        acfg.resolve = certs_resolve;
        acfg.resolve_ctx = w->certs;
    }
    w->alipay = alipay_client_new(&acfg, w->ahttp, err, errlen);
    if (!w->alipay)
        return -1;
    struct pg_pool_options popt = {
        .conninfo = cfg->database_url,
        .size = cfg->db_pool_size,
        .statements = store_statements,
        .n_statements = store_statements_count,
        .gauges = &w->srv->metrics.db,
    };
    w->pg = pg_pool_new(w->base, &popt, &w->srv->log, err, errlen);
    return w->pg ? 0 : -1;
}

/* Frees what a worker made; its thread is not running (or has ended). */
static void worker_free(struct worker *w)
{
    /* In-flight work past the drain timeout is dropped here: its callbacks
     * are not called, and the requests' connections close with evhttp. */
    pg_pool_free(w->pg);
    alipay_http_free(w->ahttp);
    alipay_client_free(w->alipay);
    certs_free(w->certs);
    routes_abandon(w);
    recorder_abandon(w);
    sweeper_free(w);
    validate_hasher_free(w->hasher);
    seal_box_free(w->sealer);
    if (w->drain_tick)
        event_free(w->drain_tick);
    if (w->drain_ev)
        event_free(w->drain_ev);
    if (w->http)
        evhttp_free(w->http);
    if (w->base)
        event_base_free(w->base);
    memset(w, 0, sizeof(*w));
}

static int worker_setup(struct worker *w, struct server *srv, int id, char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->srv = srv;
    unsigned char raw[8];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        snprintf(err, errlen, "no random bytes for the request ids");
        return -1;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        sprintf(w->id_prefix + 2 * i, "%02x", raw[i]);
    strcat(w->id_prefix, "-");
    /* epoll's changelist: an event deleted and added again in one loop
     * turn (libpq's socket between queries, a bufferevent's write
     * interest) costs no epoll_ctl. Safe here: cardgate never dup()s a
     * socket it watches. */
    struct event_config *ec = event_config_new();
    if (ec)
        event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = ec ? event_base_new_with_config(ec) : NULL;
    event_config_free(ec);
    w->http = w->base ? evhttp_new(w->base) : NULL;
    if (!w->http) {
        snprintf(err, errlen, "cannot create the event loop");
        return -1;
    }
    evhttp_set_max_body_size(w->http, HTTP_HARD_BODY_LIMIT);
    evhttp_set_max_headers_size(w->http, 32 * 1024);
    evhttp_set_timeout(w->http, (int)srv->cfg.idle_timeout_s);
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(w->http, routes_dispatch, w);
    evhttp_set_bevcb(w->http, guarded_bev, NULL);
    int fd =
        listen_socket(srv->cfg.listen_host, srv->cfg.listen_port, "CARDGATE_LISTEN", err, errlen);
    if (fd < 0)
        return -1;
    w->bound = evhttp_accept_socket_with_handle(w->http, fd);
    if (!w->bound) {
        close(fd);
        snprintf(err, errlen, "CARDGATE_LISTEN: cannot accept on the socket");
        return -1;
    }
    /* The ops listener: its traffic is small, one worker serves it. */
    if (srv->cfg.ops_port && id == 0) {
        fd =
            listen_socket(srv->cfg.ops_host, srv->cfg.ops_port, "CARDGATE_OPS_LISTEN", err, errlen);
        if (fd < 0)
            return -1;
        w->ops_bound = evhttp_accept_socket_with_handle(w->http, fd);
        if (!w->ops_bound) {
            close(fd);
            snprintf(err, errlen, "CARDGATE_OPS_LISTEN: cannot accept on the socket");
            return -1;
        }
    }
    if (worker_clients(w, err, errlen) < 0)
        return -1;
    w->hasher = validate_hasher_new(srv->hash_key, sizeof(srv->hash_key));
    w->sealer = seal_box_new(srv->seal_key);
    if (!w->hasher || !w->sealer) {
        snprintf(err, errlen, "cannot prepare the request hash and seal keys");
        return -1;
    }
    /* One sweeper per instance is enough: the ledger keeps several apart. */
    if (id == 0 && sweeper_start(w) < 0) {
        snprintf(err, errlen, "cannot start the sweeper");
        return -1;
    }
    w->drain_ev = event_new(w->base, -1, 0, drain_start, w);
    return 0;
}

int worker_start(struct worker *w, struct server *srv, int id, char *err, size_t errlen)
{
    if (worker_setup(w, srv, id, err, errlen) < 0) {
        worker_free(w);
        return -1;
    }
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        snprintf(err, errlen, "cannot start worker thread");
        worker_free(w);
        return -1;
    }
    return 0;
}

void worker_drain(struct worker *w)
{
    event_active(w->drain_ev, 0, 0);
}

void worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
    worker_free(w);
}
