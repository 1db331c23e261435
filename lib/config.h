/* config: the service's settings, from defaults, an optional INI file and
 * CARDGATE_* environment variables (a variable wins over the file).
 *
 * Every setting has one environment variable and one INI key; the key is
 * the variable's name lower-cased without the CARDGATE_ prefix (and without
 * the section's own prefix), inside its section:
 *
 *   variable                          [section] key          default
 *   CARDGATE_LISTEN                   [server] listen         0.0.0.0:8080
 *   CARDGATE_WORKERS                  [server] workers        online cores (1-256)
 *   CARDGATE_DRAIN_TIMEOUT_MS         [server] drain_timeout_ms   20000
 *   CARDGATE_IDLE_TIMEOUT_S           [server] idle_timeout_s     30
 *   CARDGATE_LOCK_MARGIN_MS           [server] lock_margin_ms     5000
 *   CARDGATE_SWEEP_INTERVAL_MS        [server] sweep_interval_ms  5000 (0: no sweeper)
 *   CARDGATE_DATABASE_URL             [database] url          (none; serve needs it)
 *   CARDGATE_DB_POOL_SIZE             [database] pool_size    4 per worker, 32 in all
 *   CARDGATE_API_KEYS                 [auth] api_keys         (none: every /v1 call is 401)
 *   CARDGATE_REQUEST_HASH_SECRET      [auth] request_hash_secret  (derived from the app key)
 *   CARDGATE_ALIPAY_GATEWAY           [alipay] gateway        https://openapi.alipay.com/gateway.do
 *   CARDGATE_ALIPAY_APP_ID            [alipay] app_id         (none; serve needs it)
 *   CARDGATE_ALIPAY_PRIVATE_KEY_FILE  [alipay] private_key_file  (none; serve needs it)
 *   CARDGATE_ALIPAY_PUBLIC_KEY_FILE   [alipay] public_key_file   (none; serve needs it, or:)
 *   CARDGATE_ALIPAY_APP_CERT_FILE     [alipay] app_cert_file     (certificate mode: all
 *   CARDGATE_ALIPAY_CERT_FILE         [alipay] cert_file          three instead of the
 *   CARDGATE_ALIPAY_ROOT_CERT_FILE    [alipay] root_cert_file     public key file)
 *   CARDGATE_ALIPAY_ENCRYPT_KEY       [alipay] encrypt_key    (none: no content encryption)
 *   CARDGATE_ALIPAY_SIGN_TYPE         [alipay] sign_type      RSA2
 *   CARDGATE_ALIPAY_TIMEOUT_MS        [alipay] timeout_ms     15000
 *   CARDGATE_ALIPAY_CA_FILE           [alipay] ca_file        (system bundle)
 *   CARDGATE_ALIPAY_ALLOW_HTTP        [alipay] allow_http     0 (http:// gateway refused)
 *   CARDGATE_ALIPAY_KEY_GRACE_S       [alipay] key_grace_s    86400
 *   CARDGATE_REQUEST_DEADLINE_MS      [server] request_deadline_ms  30000
 *   CARDGATE_PUBLIC_URL               [server] public_url     (none: members' sign-up off)
 *   CARDGATE_OPS_LISTEN               [server] ops_listen     (none: ops on the API listener)
 *   CARDGATE_LOG_LEVEL                [log] level             info
 *   CARDGATE_LOG_FORMAT               [log] format            json
 *
 * The team's own settings:
 *   - drain_timeout_ms: how long a stopping service waits for in-flight
 *     requests after SIGTERM/SIGINT (0 to 600000).
 *   - idle_timeout_s: an HTTP client that is idle or too slow to send its
 *     request is dropped after this many seconds (1 to 3600).
 *   - lock_margin_ms: a `pending` ledger row is considered abandoned (its
 *     lock stale) after the Alipay timeout plus this margin (0 to 3600000).
 *   - sweep_interval_ms: how often worker 0 looks for requests whose
 *     holder died (pending past their lock) and makes them again (sweeper.h;
 *     0 to 3600000, 0 turns it off).
 *   - pool_size: database connections per worker thread (1 to 100). Not
 *     set: 4, or fewer when workers x 4 would pass 32 (at least 1).
 *
 * An empty value (VAR= or key =) counts as not set. In the file, api_keys
 * may go on over indented continuation lines (inih's multi-line values);
 * no other key may. File lines are limited to 197 characters (inih's line
 * buffer); a longer line is an error, never silently cut. */
#ifndef CARDGATE_CONFIG_H
#define CARDGATE_CONFIG_H

#include <stddef.h>

#include "alipay_sign.h"
#include "log.h"

struct config_api_key {
    char name[64];            /* [A-Za-z0-9_.-]{1,63}; one name may have several keys */
    unsigned char sha256[32]; /* SHA-256 of the caller's bearer key */
};

struct config {
    char listen_host[64]; /* without brackets: "0.0.0.0", "::1", "localhost" */
    int listen_port;
    char ops_host[64]; /* CARDGATE_OPS_LISTEN: /metrics and the probes apart */
    int ops_port;      /* 0: none (everything on the API listener) */
    int workers;
    char *database_url;
    struct config_api_key *api_keys;
    size_t n_api_keys;
    char *alipay_gateway;
    char *alipay_app_id, *alipay_private_key_file, *alipay_public_key_file;
    /* certificate mode: all three, or none (then alipay_public_key_file) */
    char *alipay_app_cert_file, *alipay_cert_file, *alipay_root_cert_file;
    char *alipay_encrypt_key;  /* base64 AES key; NULL: no content encryption */
    char *alipay_ca_file;      /* NULL: the system bundle */
    char *public_url;          /* NULL: members' sign-up is off; no trailing '/' */
    char *request_hash_secret; /* NULL: derived from the app's private key */
    enum alipay_sign_type alipay_sign_type;
    long alipay_timeout_ms;
    enum log_level log_level;
    int log_json;
    long drain_timeout_ms, lock_margin_ms, idle_timeout_s, sweep_interval_ms;
    int db_pool_size;
    int alipay_allow_http;    /* 1: a plain http:// gateway (the simulator) is allowed */
    long alipay_key_grace_s;  /* after a rotation, the old Alipay key still verifies this long */
    long request_deadline_ms; /* one request's whole time: queue, ledger and gateway */
};

/* Fills c: the defaults, then the INI file at path (when path is not NULL),
 * then the environment. Returns 0, or -1 with one line in err naming the
 * setting by its variable name, e.g.
 *   CARDGATE_WORKERS: must be an integer from 1 to 256 (got "x")
 * and, for a value from the file, prefixed with "path:line: ". A missing or
 * unreadable file, an unknown section or key, a syntax error or an
 * over-long line are errors naming file:line. Secrets (database URL, API key
 * hashes) are never copied into err.
 * On 0 the strings and the key array belong to c; the caller frees them with
 * config_free. On -1 c holds nothing (config_free on it is harmless). */
int config_load(struct config *c, const char *path, char *err, size_t errlen);

/* What `serve` needs beyond the defaults: the database URL, the app id, the
 * private key file and either Alipay's public key file or the three
 * certificate files (not both). Returns 0, or -1 with one line naming the first missing
 * setting. (Whether the key files can be read is alipay_key's check.) */
int config_check_serve(const struct config *c, char *err, size_t errlen);

/* 1 when any certificate file is set (certificate mode), else 0. */
int config_cert_mode(const struct config *c);

/* Frees what c owns and zeroes it; safe on a zeroed or already freed c. */
void config_free(struct config *c);

/* The caller's name for a presented bearer key: the SHA-256 of the key is
 * compared in constant time with every configured key (all of them, always,
 * so the time does not tell which one matched). Returns the name (owned by
 * c), or NULL when no key matches, the key is empty, or none is configured. */
const char *config_api_key_lookup(const struct config *c, const char *bearer, size_t len);

#endif
