/* alipay-sim: a local stand-in for the Alipay OpenAPI gateway.
 *
 * main owns the one struct sim and the libevent objects, routes requests to
 * the gateway endpoint (gateway.c) or the control interface (control.c),
 * and stops cleanly on SIGTERM/SIGINT. Single-threaded. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <event2/event.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <openssl/ssl.h>

#include "alipay_key.h"
#include "cert.h"
#include "control.h"
#include "encrypt.h"
#include "gateway.h"
#include "sim.h"

/* Largest request body accepted on any route. */
#define SIM_MAX_BODY (4 * 1024 * 1024)

struct options {
    const char *listen;
    const char *app_public_key;
    const char *alipay_private_key;
    const char *app_id;
    const char *templates;
    const char *sign_type_default;
    const char *tls_listen, *tls_cert, *tls_key;    /* a second listener, HTTPS */
    const char *app_cert, *root_cert, *alipay_cert; /* certificate mode: all or none */
    const char *aes_key;                            /* content encryption */
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: alipay-sim --listen HOST:PORT --app-public-key FILE --alipay-private-key FILE\n"
        "                  [--app-id ID] [--templates ID,ID,...] [--sign-type-default RSA2|RSA]\n"
        "                  [--app-cert FILE --root-cert FILE --alipay-cert FILE] [--aes-key KEY]\n"
        "\n"
        "A local stand-in for the Alipay OpenAPI gateway (POST /gateway.do) with a\n"
        "control interface under /_sim. See service/alipay-sim/README.md.\n"
        "\n"
        "  --listen HOST:PORT          address to serve on, e.g. 127.0.0.1:9000\n"
        "  --app-public-key FILE       the app's public key: checks request signatures\n"
        "  --alipay-private-key FILE   the simulated Alipay private key: signs answers\n"
        "  --app-id ID                 accept only this app id (default: any)\n"
        "  --templates ID,ID,...       known card templates (default: %s)\n"
        "  --sign-type-default TYPE    sign type of calls that give no sign_type (RSA2)\n"
        "  --tls-listen HOST:PORT      also serve HTTPS there, with --tls-cert FILE and\n"
        "                              --tls-key FILE (PEM): a gateway behind TLS\n"
        "  --app-cert FILE             certificate mode: the app's public-key certificate\n"
        "                              (instead of --app-public-key); requests must carry its\n"
        "                              app_cert_sn, and alipay_root_cert_sn of:\n"
        "  --root-cert FILE            Alipay's root bundle (alipayRootCert.crt)\n"
        "  --alipay-cert FILE          Alipay's certificate: answers carry its SN; it must\n"
        "                              be --alipay-private-key's\n"
        "  --aes-key KEY               content encryption with this AES key (base64)\n"
        "  --help                      this text\n",
        SIM_DEFAULT_TEMPLATES);
}

/* Returns 0, 1 when --help was asked for, -1 on a usage error (reported). */
static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"app-public-key", required_argument, NULL, 'p'},
        {"alipay-private-key", required_argument, NULL, 'k'},
        {"app-id", required_argument, NULL, 'a'},
        {"templates", required_argument, NULL, 't'},
        {"sign-type-default", required_argument, NULL, 's'},
        {"tls-listen", required_argument, NULL, 'T'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
        {"app-cert", required_argument, NULL, 'c'},
        {"root-cert", required_argument, NULL, 'r'},
        {"alipay-cert", required_argument, NULL, 'A'},
        {"aes-key", required_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    memset(o, 0, sizeof(*o));
    o->sign_type_default = "RSA2";
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            o->listen = optarg;
            break;
        case 'p':
            o->app_public_key = optarg;
            break;
        case 'k':
            o->alipay_private_key = optarg;
            break;
        case 'a':
            o->app_id = optarg;
            break;
        case 't':
            o->templates = optarg;
            break;
        case 's':
            o->sign_type_default = optarg;
            break;
        case 'T':
            o->tls_listen = optarg;
            break;
        case 'C':
            o->tls_cert = optarg;
            break;
        case 'K':
            o->tls_key = optarg;
            break;
        case 'c':
            o->app_cert = optarg;
            break;
        case 'r':
            o->root_cert = optarg;
            break;
        case 'A':
            o->alipay_cert = optarg;
            break;
        case 'e':
            o->aes_key = optarg;
            break;
        case 'h':
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "alipay-sim: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    const char *missing = !o->listen                           ? "--listen"
                          : !o->app_public_key && !o->app_cert ? "--app-public-key"
                          : !o->alipay_private_key             ? "--alipay-private-key"
                                                               : NULL;
    if (missing) {
        fprintf(stderr, "alipay-sim: %s is required (see --help)\n", missing);
        return -1;
    }
    /* Alipay's certificate mode is the app's: requests and answers alike. */
    if (!o->app_cert != !o->root_cert || !o->app_cert != !o->alipay_cert) {
        fprintf(stderr, "alipay-sim: --app-cert, --root-cert and --alipay-cert go together\n");
        return -1;
    }
    if (o->tls_listen && (!o->tls_cert || !o->tls_key)) {
        fprintf(stderr, "alipay-sim: --tls-listen needs --tls-cert and --tls-key\n");
        return -1;
    }
    return 0;
}

/* "HOST:PORT" (or "[v6]:PORT") into host and port. Returns 0 or -1. */
static int split_listen(const char *listen, char *host, size_t hostlen, unsigned short *port)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen)
        return -1;
    const char *h = listen;
    size_t n = (size_t)(colon - listen);
    if (h[0] == '[' && colon[-1] == ']') {
        h++;
        n -= 2;
    }
    if (n == 0 || n >= hostlen)
        return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || p < 0 || p > 65535)
        return -1;
    *port = (unsigned short)p;
    return 0;
}

/* Certificate mode and content encryption, on an s that is set up.
 * Returns 0, or -1 after reporting. */
static int load_modes(struct sim *s, const struct options *o)
{
    char err[256], chain_err[256];
    if (o->app_cert) {
        if (o->app_public_key)
            fprintf(stderr, "alipay-sim: --app-cert given: --app-public-key is not used\n");
        if (cert_app_use(s, o->app_cert, o->root_cert, err, sizeof(err)) < 0 ||
            cert_alipay_use(s, o->alipay_cert, NULL, chain_err, sizeof(chain_err), err,
                            sizeof(err)) < 0) {
            fprintf(stderr, "alipay-sim: certificate mode: %s\n", err);
            return -1;
        }
        /* Allowed, to show clients refusing it; said, in case it was not meant. */
        if (chain_err[0])
            fprintf(stderr,
                    "alipay-sim: warning: --alipay-cert does not chain to --root-cert: %s\n",
                    chain_err);
        fprintf(stderr, "alipay-sim: certificate mode: app_cert_sn=%s alipay_cert_sn=%s\n",
                s->app_cert_sn, cert_alipay_sn(s));
    }
    if (o->aes_key && encrypt_use(s, o->aes_key, err, sizeof(err)) < 0) {
        fprintf(stderr, "alipay-sim: --aes-key: %s\n", err);
        return -1;
    }
    return 0;
}

/* Loads both keys and sets up s. Returns 0, or -1 after reporting. */
static int load(struct sim *s, const struct options *o)
{
    char err[256];
    enum alipay_sign_type type;
    if (alipay_sign_type_parse(o->sign_type_default, &type) < 0) {
        fprintf(stderr, "alipay-sim: --sign-type-default must be RSA2 or RSA\n");
        return -1;
    }
    /* In certificate mode the app's key comes from its certificate. */
    EVP_PKEY *pub =
        o->app_cert ? NULL : alipay_key_load_public(o->app_public_key, err, sizeof(err));
    if (!pub && !o->app_cert) {
        fprintf(stderr, "alipay-sim: --app-public-key: %s\n", err);
        return -1;
    }
    EVP_PKEY *priv = alipay_key_load_private(o->alipay_private_key, err, sizeof(err));
    if (!priv) {
        fprintf(stderr, "alipay-sim: --alipay-private-key: %s\n", err);
        EVP_PKEY_free(pub);
        return -1;
    }
    if (sim_init(s, pub, priv, o->app_id, o->templates, type, err, sizeof(err)) < 0) {
        fprintf(stderr, "alipay-sim: %s\n", err);
        EVP_PKEY_free(pub);
        EVP_PKEY_free(priv);
        return -1;
    }
    if (load_modes(s, o) < 0) {
        sim_free(s);
        return -1;
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Every request comes here: the gateway endpoint, the control interface,
 * or 404. */
static void route(struct evhttp_request *req, void *arg)
{
    struct sim *s = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path)
        path = "/";
    if (ends_with(path, "gateway.do")) {
        gateway_handle(s, req);
    } else if (strcmp(path, "/_sim") == 0 || strncmp(path, "/_sim/", 6) == 0) {
        control_handle(s, req, path);
    } else {
        fprintf(stderr, "alipay-sim: 404 %s\n", path);
        evhttp_send_error(req, 404, "Not Found");
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    fprintf(stderr, "alipay-sim: signal %d, stopping\n", (int)sig);
    event_base_loopbreak(arg);
}

/* Logs where it listens (the real port when 0 was asked for). */
static void log_bound(struct evhttp_bound_socket *bound, const char *host)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int port = -1;
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    fprintf(stderr, "alipay-sim: listening on %s:%d\n", host, port);
}

/* Each connection of the HTTPS listener speaks TLS with the given context. */
static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    SSL *ssl = SSL_new(arg);
    return ssl ? bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE)
               : NULL;
}

/* The TLS context of --tls-cert/--tls-key, or NULL after reporting. */
static SSL_CTX *tls_context(const struct options *o)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, o->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, o->tls_key, SSL_FILETYPE_PEM) != 1) {
        fprintf(stderr, "alipay-sim: cannot load --tls-cert/--tls-key\n");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Runs the server until a signal; returns the exit status. */
static int serve(struct sim *s, const struct options *o)
{
    char host[256];
    unsigned short port;
    int rc = 1;
    if (split_listen(o->listen, host, sizeof(host), &port) < 0) {
        fprintf(stderr, "alipay-sim: --listen must be HOST:PORT, got '%s'\n", o->listen);
        return 2;
    }
    struct event_base *base = event_base_new();
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    struct evhttp *https = NULL;
    SSL_CTX *ctx = NULL;
    struct event *sigterm = base ? evsignal_new(base, SIGTERM, on_signal, base) : NULL;
    struct event *sigint = base ? evsignal_new(base, SIGINT, on_signal, base) : NULL;
    if (!http || !sigterm || !sigint || evsignal_add(sigterm, NULL) < 0 ||
        evsignal_add(sigint, NULL) < 0) {
        fprintf(stderr, "alipay-sim: cannot set up libevent\n");
        goto done;
    }
    s->base = base;
    evhttp_set_max_body_size(http, SIM_MAX_BODY);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(http, route, s);
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(http, host, port);
    if (!bound) {
        fprintf(stderr, "alipay-sim: cannot listen on %s\n", o->listen);
        goto done;
    }
    log_bound(bound, host);
    if (o->tls_listen) {
        char thost[256];
        unsigned short tport;
        if (split_listen(o->tls_listen, thost, sizeof(thost), &tport) < 0 ||
            !(ctx = tls_context(o)) || !(https = evhttp_new(base))) {
            fprintf(stderr, "alipay-sim: cannot serve HTTPS on %s\n", o->tls_listen);
            goto done;
        }
        evhttp_set_max_body_size(https, SIM_MAX_BODY);
        evhttp_set_allowed_methods(https, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_HEAD);
        evhttp_set_gencb(https, route, s);
        evhttp_set_bevcb(https, tls_bev, ctx);
        struct evhttp_bound_socket *tb = evhttp_bind_socket_with_handle(https, thost, tport);
        if (!tb) {
            fprintf(stderr, "alipay-sim: cannot listen on %s\n", o->tls_listen);
            goto done;
        }
        log_bound(tb, thost);
    }
    event_base_dispatch(base);
    rc = 0;
done:
    if (s->base)
        gateway_shutdown(s);
    if (http)
        evhttp_free(http);
    if (https)
        evhttp_free(https);
    SSL_CTX_free(ctx);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (base)
        event_base_free(base);
    s->base = NULL;
    return rc;
}

int main(int argc, char **argv)
{
    struct options o;
    struct sim s;
    int r = parse_args(argc, argv, &o);
    if (r != 0) {
        if (r > 0)
            usage(stdout);
        return r > 0 ? 0 : 2;
    }
    /* A client that goes away must not kill the simulator on write. */
    signal(SIGPIPE, SIG_IGN);
    if (load(&s, &o) < 0)
        return 1;
    r = serve(&s, &o);
    sim_free(&s);
    libevent_global_shutdown();
    return r;
}
