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
#include "certs.h"
#include "cards.h"
#include "migrate.h"
#include "ops.h"
#include "routes.h"
#include "server.h"
#include "signup.h"
#include "templates.h"

static const char usage[] =
    "usage: cardgate [--config FILE] [serve | migrate | health]\n"
    "       cardgate --help | --version\n"
    "\n"
    "  serve    run the HTTP API (the default)\n"
    "  migrate  apply the database schema and exit (safe to run again, and\n"
    "           from several instances at once)\n"
    "  health   ask the cardgate of these settings for /healthz on this host\n"
    "           (the ops listener when there is one); exit 0 when it answers\n"
    "           200 within 2 s: a container's HEALTHCHECK\n"
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

static size_t discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data;
    (void)arg;
    return size * n;
}

/* GET /healthz of the local instance these settings describe. */
static int cmd_health(const struct config *cfg)
{
    int port = cfg->ops_port ? cfg->ops_port : cfg->listen_port;
    const char *host = cfg->ops_port ? cfg->ops_host : cfg->listen_host;
    /* A wildcard listener is reached on loopback. */
    int v6 = strchr(host, ':') != NULL;
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 || !*host)
        host = v6 ? "::1" : "127.0.0.1";
    char url[160];
    snprintf(url, sizeof(url), v6 ? "http://[%s]:%d/healthz" : "http://%s:%d/healthz", host, port);
    CURL *c = curl_easy_init();
    long status = 0;
    if (!c)
        return fail("health: out of memory");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*"); /* a container's http_proxy is not for us */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (status == 200)
        return 0;
    if (rc == CURLE_OK)
        fprintf(stderr, "cardgate: health: %s: HTTP %ld\n", url, status);
    else
        fprintf(stderr, "cardgate: health: %s: %s\n", url, curl_easy_strerror(rc));
    return 1;
}

/* The keys of the request hashes and of the sealed requests (seal.h), one
 * per label: from CARDGATE_REQUEST_HASH_SECRET when set, else from the
 * app's private key, which every instance of one app shares (but which
 * changes when the key is rotated: see the README). */
static int derive_key(struct server *srv, const char *label, unsigned char out[32])
{
    const char *secret = srv->cfg.request_hash_secret;
    unsigned char *der = NULL;
    int len = secret ? (int)strlen(secret) : i2d_PrivateKey(srv->app_key, &der);
    if (len <= 0)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, label, strlen(label)) &&
             EVP_DigestUpdate(ctx, secret ? (const unsigned char *)secret : der, (size_t)len) &&
             EVP_DigestFinal_ex(ctx, out, NULL);
    EVP_MD_CTX_free(ctx);
    if (der)
        OPENSSL_clear_free(der, (size_t)len);
    return ok ? 0 : -1;
}

/* The app's certificate: its SN, and its key must be the app key's half. */
static int derive_keys(struct server *srv, char *err, size_t errlen)
{
    if (derive_key(srv, "cardgate request hash v1", srv->hash_key) < 0 ||
        derive_key(srv, "cardgate sealed request v1", srv->seal_key) < 0) {
        snprintf(err, errlen, "cannot derive the request hash and seal keys");
        return -1;
    }
    return 0;
}

static int load_app_cert(struct server *srv, char *err, size_t errlen)
{
    const struct config *cfg = &srv->cfg;
    char why[400];
    STACK_OF(X509) *app = alipay_cert_load(cfg->alipay_app_cert_file, why, sizeof(why));
    EVP_PKEY *pub =
        app ? alipay_cert_public_key(app, cfg->alipay_app_cert_file, why, sizeof(why)) : NULL;
    int rc = -1;
    if (!pub)
        snprintf(err, errlen, "CARDGATE_ALIPAY_APP_CERT_FILE: %s", why);
    else if (!alipay_key_is_pair(srv->app_key, pub))
        snprintf(err, errlen,
                 "CARDGATE_ALIPAY_APP_CERT_FILE: %s is not the certificate of the app's private "
                 "key (CARDGATE_ALIPAY_PRIVATE_KEY_FILE); use the appCertPublicKey_<app id>.crt "
                 "Alipay issued for that key",
                 cfg->alipay_app_cert_file);
    else if (alipay_cert_sn(sk_X509_value(app, 0), srv->app_cert_sn, why, sizeof(why)) < 0)
        snprintf(err, errlen, "CARDGATE_ALIPAY_APP_CERT_FILE: %s", why);
    else
        rc = 0;
    EVP_PKEY_free(pub);
    sk_X509_pop_free(app, X509_free);
    return rc;
}

/* Certificate mode: the roots, Alipay's certificate (it must chain to
 * them), and the app's. srv->alipay_key becomes the Alipay certificate's. */
static int load_certs(struct server *srv, char *err, size_t errlen)
{
    const struct config *cfg = &srv->cfg;
    char why[400];
    size_t len = 0;
    STACK_OF(X509) *roots = alipay_cert_load(cfg->alipay_root_cert_file, why, sizeof(why));
    if (!roots || !(srv->root_cert_sn = alipay_cert_root_sn(roots, why, sizeof(why)))) {
        snprintf(err, errlen, "CARDGATE_ALIPAY_ROOT_CERT_FILE: %s", why);
        sk_X509_pop_free(roots, X509_free);
        return -1;
    }
    if (!(srv->certs = alipay_cert_store_new(roots))) {
        sk_X509_pop_free(roots, X509_free);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *pem = alipay_key_read_file(cfg->alipay_cert_file, &len, why, sizeof(why));
    int ok = pem && alipay_cert_store_admit(srv->certs, pem, len, NULL, srv->alipay_cert_sn, why,
                                            sizeof(why)) == 0;
    free(pem);
    if (!ok) {
        snprintf(err, errlen, "CARDGATE_ALIPAY_CERT_FILE: %s", why);
        return -1;
    }
    srv->alipay_key = alipay_cert_store_get(srv->certs, srv->alipay_cert_sn);
    if (alipay_key_is_pair(srv->app_key, srv->alipay_key)) {
        snprintf(err, errlen,
                 "CARDGATE_ALIPAY_CERT_FILE: %s is the app's own certificate (it matches "
                 "CARDGATE_ALIPAY_PRIVATE_KEY_FILE); set Alipay's, alipayCertPublicKey_RSA2.crt",
                 cfg->alipay_cert_file);
        return -1;
    }
    return load_app_cert(srv, err, errlen);
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
    if (cfg->alipay_encrypt_key &&
        !(srv->aes = alipay_aes_new(cfg->alipay_encrypt_key, why, sizeof(why)))) {
        snprintf(err, errlen, "CARDGATE_ALIPAY_ENCRYPT_KEY: %s", why);
        return -1;
    }
    if (config_cert_mode(cfg)) {
        if (load_certs(srv, err, errlen) < 0)
            return -1;
        return derive_keys(srv, err, errlen);
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
    return derive_keys(srv, err, errlen);
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
    if (rc == 0 && srv->certs) {
        /* the certificates other instances (or this one) fetched before */
        char n[16];
        snprintf(n, sizeof(n), "%d", certs_load_stored(srv, conn));
        log_write(&srv->log, LOG_INFO, "certificate mode", "app_cert_sn", srv->app_cert_sn,
                  "alipay_cert_sn", srv->alipay_cert_sn, "alipay_root_cert_sn", srv->root_cert_sn,
                  "stored_alipay_certs", n, NULL);
    }
    PQfinish(conn);
    if (rc == 1) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, ": run `cardgate migrate` first");
    }
    return rc == 1 ? -1 : 0;
}

/* --- SIGHUP: what can change without a restart ------------------------- */

static void reload_free(struct reload *x)
{
    while (x) {
        struct reload *older = x->older;
        config_free(&x->cfg);
        EVP_PKEY_free(x->trust.current);
        EVP_PKEY_free(x->trust.previous);
        free(x);
        x = older;
    }
}

/* The first snapshot: the settings as loaded at start, the key in force. */
static int reload_first(struct server *srv, const char *config_path, char *err, size_t errlen)
{
    struct reload *x = calloc(1, sizeof(*x));
    if (!x || config_load(&x->cfg, config_path, err, errlen) < 0) {
        free(x);
        return -1;
    }
    EVP_PKEY_up_ref(srv->alipay_key);
    x->trust.current = srv->alipay_key;
    atomic_store(&srv->live, x);
    atomic_store(&srv->trust, &x->trust);
    return 0;
}

/* Reads the configuration again and publishes what can change: the API
 * keys, the log level, and Alipay's public key (the previous one still
 * verifies for CARDGATE_ALIPAY_KEY_GRACE_S). Anything wrong keeps what is
 * in force and says why. Runs on main's thread only. */
static void reload(struct server *srv, const char *config_path)
{
    struct reload *cur = atomic_load(&srv->live);
    struct reload *next = calloc(1, sizeof(*next));
    char err[1024], why[400];
    if (!next || config_load(&next->cfg, config_path, err, sizeof(err)) < 0) {
        log_write(&srv->log, LOG_ERROR, "reload refused; the settings in force stay", "error",
                  next ? err : "out of memory", NULL);
        free(next);
        return;
    }
    EVP_PKEY *key;
    if (srv->certs) {
        /* certificate mode: Alipay's certificates rotate by download, not here */
        key = cur->trust.current;
        EVP_PKEY_up_ref(key);
    } else {
        key = alipay_key_load_public(next->cfg.alipay_public_key_file, why, sizeof(why));
    }
    if (!key || (!srv->certs && alipay_key_is_pair(srv->app_key, key))) {
        log_write(&srv->log, LOG_ERROR, "reload refused; the settings in force stay", "error",
                  key ? "CARDGATE_ALIPAY_PUBLIC_KEY_FILE is the app's own public key" : why, NULL);
        EVP_PKEY_free(key);
        reload_free(next);
        return;
    }
    int rotated = EVP_PKEY_eq(key, cur->trust.current) != 1;
    if (rotated) {
        next->trust.current = key;
        EVP_PKEY_up_ref(cur->trust.current);
        next->trust.previous = cur->trust.current;
        next->trust.previous_until_ms = server_now_ms() + next->cfg.alipay_key_grace_s * 1000;
    } else {
        EVP_PKEY_free(key);
        next->trust = cur->trust;
        EVP_PKEY_up_ref(next->trust.current);
        if (next->trust.previous)
            EVP_PKEY_up_ref(next->trust.previous);
    }
    next->older = cur;
    atomic_store(&srv->trust, &next->trust);
    atomic_store(&srv->live, next);
    enum log_level was = (enum log_level)atomic_load(&srv->log.level);
    atomic_store(&srv->log.level, (int)next->cfg.log_level);

    char keys[48], grace[32];
    snprintf(keys, sizeof(keys), "%zu (was %zu)", next->cfg.n_api_keys, cur->cfg.n_api_keys);
    snprintf(grace, sizeof(grace), "%ld", next->cfg.alipay_key_grace_s);
    log_write(&srv->log, LOG_INFO, "reloaded", "api_keys", keys, "log_level",
              log_level_name(next->cfg.log_level), "log_level_was", log_level_name(was),
              "alipay_public_key", rotated ? "rotated" : "unchanged", "previous_key_grace_s",
              rotated ? grace : NULL, NULL);
}

static int cmd_serve(struct server *srv, const char *config_path)
{
    char err[1024];
    if (config_check_serve(&srv->cfg, err, sizeof(err)) < 0 ||
        load_keys(srv, err, sizeof(err)) < 0 || check_schema(srv, err, sizeof(err)) < 0 ||
        reload_first(srv, config_path, err, sizeof(err)) < 0)
        return fail(err);

    /* Signals are taken by sigwait below, so every thread blocks them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
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
        while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP)
            reload(srv, config_path);
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
        } else if (strcmp(argv[i], "serve") == 0 || strcmp(argv[i], "migrate") == 0 ||
                   strcmp(argv[i], "health") == 0) {
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
    } else if (strcmp(command, "health") == 0) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = cmd_health(&srv.cfg);
        curl_global_cleanup();
    } else {
        evthread_use_pthreads();
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = cmd_serve(&srv, config_path);
        curl_global_cleanup();
        libevent_global_shutdown();
    }
    free(srv.workers);
    EVP_PKEY_free(srv.app_key);
    EVP_PKEY_free(srv.alipay_key);
    alipay_cert_store_free(srv.certs);
    free(srv.root_cert_sn);
    alipay_aes_free(srv.aes);
    reload_free(atomic_load(&srv.live));
    config_free(&srv.cfg);
    return rc;
}
