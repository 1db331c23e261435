/* cardgate: entry point — the command line, start-up checks, workers and
 * the signal-driven drain. */
#include <curl/curl.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alipay_key.h"
#include "cards.h"
#include "migrate.h"
#include "ops.h"
#include "routes.h"
#include "server.h"
#include "signup.h"
#include "templates.h"

static const char usage[] =
    "usage: cardgate [--config FILE] [serve | migrate]\n"
    "       cardgate --help | --version\n"
    "\n"
    "  serve    run the HTTP API (the default)\n"
    "  migrate  apply the database schema and exit (safe to run again, and\n"
    "           from several instances at once)\n"
    "\n"
    "Settings come from the INI file given with --config and from CARDGATE_*\n"
    "environment variables, which win. See config/cardgate.ini and README.md.\n";

static int fail(const char *msg)
{
    fprintf(stderr, "cardgate: %s\n", msg);
    return 1;
}

static int cmd_migrate(const struct config *cfg)
{
    char err[512];
    if (!cfg->database_url)
        return fail("CARDGATE_DATABASE_URL: not set (a libpq connection string or URI)");
    PGconn *conn = PQconnectdb(cfg->database_url);
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(err, sizeof(err), "CARDGATE_DATABASE_URL: cannot connect: %s",
                 PQerrorMessage(conn));
        err[strcspn(err, "\n")] = '\0';
        PQfinish(conn);
        return fail(err);
    }
    int applied = migrate_apply(conn, err, sizeof(err));
    PQfinish(conn);
    if (applied < 0)
        return fail(err);
    printf("cardgate: schema at %s (%d migration%s applied)\n", migrate_latest(), applied,
           applied == 1 ? "" : "s");
    return 0;
}

/* The key of the request hashes: CARDGATE_REQUEST_HASH_SECRET when set,
 * else derived from the app's private key, which every instance of one app
 * shares (but which changes when the key is rotated: see the README). */
static int derive_hash_key(struct server *srv)
{
    const char *secret = srv->cfg.request_hash_secret;
    unsigned char *der = NULL;
    int len = secret ? (int)strlen(secret) : i2d_PrivateKey(srv->app_key, &der);
    if (len <= 0)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, "cardgate request hash v1", 24) &&
             EVP_DigestUpdate(ctx, secret ? (const unsigned char *)secret : der, (size_t)len) &&
             EVP_DigestFinal_ex(ctx, srv->hash_key, NULL);
    EVP_MD_CTX_free(ctx);
    if (der)
        OPENSSL_clear_free(der, (size_t)len);
    return ok ? 0 : -1;
}

static int load_keys(struct server *srv, char *err, size_t errlen)
{
    const struct config *cfg = &srv->cfg;
    char why[400];
    srv->app_key = alipay_key_load_private(cfg->alipay_private_key_file, why, sizeof(why));
    if (!srv->app_key) {
        snprintf(err, errlen, "CARDGATE_ALIPAY_PRIVATE_KEY_FILE: %s", why);
        return -1;
    }
    srv->alipay_key = alipay_key_load_public(cfg->alipay_public_key_file, why, sizeof(why));
    if (!srv->alipay_key) {
        snprintf(err, errlen, "CARDGATE_ALIPAY_PUBLIC_KEY_FILE: %s", why);
        return -1;
    }
    if (alipay_key_is_pair(srv->app_key, srv->alipay_key)) {
        snprintf(err, errlen,
                 "CARDGATE_ALIPAY_PUBLIC_KEY_FILE: %s is the app's own public key (it matches "
                 "CARDGATE_ALIPAY_PRIVATE_KEY_FILE); set Alipay's public key, the one the Alipay "
                 "open platform shows after you upload the app's public key",
                 cfg->alipay_public_key_file);
        return -1;
    }
    if (derive_hash_key(srv) < 0) {
        snprintf(err, errlen, "cannot derive the request hash key");
        return -1;
    }
    return 0;
}

/* Refuses to serve on a schema that is behind. A database that cannot be
 * reached now is not fatal: /readyz says so until it is back. */
static int check_schema(struct server *srv, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {srv->cfg.database_url, "5", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
        char why[512];
        snprintf(why, sizeof(why), "%s", PQerrorMessage(conn));
        why[strcspn(why, "\n")] = '\0';
        log_write(&srv->log, LOG_WARN, "database unreachable at start; serving anyway", "error",
                  why, NULL);
        PQfinish(conn);
        return 0;
    }
    int rc = migrate_check(conn, err, errlen);
    PQfinish(conn);
    if (rc == 1) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, ": run `cardgate migrate` first");
    }
    return rc == 1 ? -1 : 0;
}

static int cmd_serve(struct server *srv)
{
    char err[1024];
    if (config_check_serve(&srv->cfg, err, sizeof(err)) < 0 ||
        load_keys(srv, err, sizeof(err)) < 0 || check_schema(srv, err, sizeof(err)) < 0)
        return fail(err);

    /* Signals are taken by sigwait below, so every thread blocks them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv->nworkers = srv->cfg.workers;
    srv->workers = calloc((size_t)srv->nworkers, sizeof(struct worker));
    int started = 0;
    for (; started < srv->nworkers; started++) {
        if (worker_start(&srv->workers[started], srv, started, err, sizeof(err)) < 0)
            break;
    }
    int rc = 0;
    if (started < srv->nworkers) {
        fail(err);
        rc = 1;
    } else {
        char port[16], workers[16];
        snprintf(port, sizeof(port), "%d", srv->cfg.listen_port);
        snprintf(workers, sizeof(workers), "%d", srv->nworkers);
        log_write(&srv->log, LOG_INFO, "listening", "host", srv->cfg.listen_host, "port", port,
                  "workers", workers, "gateway", srv->cfg.alipay_gateway, "version",
                  CARDGATE_VERSION, NULL);
        int sig = 0;
        sigwait(&sigs, &sig);
        log_write(&srv->log, LOG_INFO, "draining", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM",
                  NULL);
    }
    for (int i = 0; i < started; i++)
        worker_drain(&srv->workers[i]);
    for (int i = 0; i < started; i++)
        worker_join(&srv->workers[i]);
    if (rc == 0)
        log_write(&srv->log, LOG_INFO, "stopped", NULL);
    return rc;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL, *command = "serve";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("cardgate %s\n", CARDGATE_VERSION);
            return 0;
        } else if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) &&
                   i + 1 < argc) {
            config_path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            config_path = argv[i] + 9;
        } else if (strcmp(argv[i], "serve") == 0 || strcmp(argv[i], "migrate") == 0) {
            command = argv[i];
        } else {
            fprintf(stderr, "cardgate: unknown argument %s\n%s", argv[i], usage);
            return 2;
        }
    }

    struct server srv;
    memset(&srv, 0, sizeof(srv));
    char err[1024];
    if (config_load(&srv.cfg, config_path, err, sizeof(err)) < 0) {
        config_free(&srv.cfg);
        return fail(err);
    }
    srv.log.level = srv.cfg.log_level;
    srv.log.json = srv.cfg.log_json;
    srv.log.out = stderr;
    metrics_init(&srv.metrics);
    /* Every handler file registers its routes; read-only from here on. */
    struct route_table routes;
    routes_init(&routes);
    cards_register(&routes);
    templates_register(&routes);
    signup_register(&routes);
    ops_register(&routes);
    srv.routes = &routes;

    int rc;
    if (strcmp(command, "migrate") == 0) {
        rc = cmd_migrate(&srv.cfg);
    } else {
        evthread_use_pthreads();
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = cmd_serve(&srv);
        curl_global_cleanup();
        libevent_global_shutdown();
    }
    free(srv.workers);
    EVP_PKEY_free(srv.app_key);
    EVP_PKEY_free(srv.alipay_key);
    config_free(&srv.cfg);
    return rc;
}
