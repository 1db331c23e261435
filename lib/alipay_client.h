/* alipay_client: one signed call to the Alipay OpenAPI gateway, end to end.
 *
 * Builds the public parameters, signs them with the app key, puts them in
 * the URL query and biz_content in the form body (as the official SDKs do),
 * sends it through alipay_http without blocking, and judges the answer with
 * alipay_response. One client per worker, on that worker's alipay_http. */
#ifndef CARDGATE_ALIPAY_CLIENT_H
#define CARDGATE_ALIPAY_CLIENT_H

#include <time.h>
#include <openssl/evp.h>

#include "alipay_aes.h"
#include "alipay_cert.h"
#include "alipay_http.h"
#include "alipay_response.h"
#include "alipay_sign.h"

/* The Alipay public keys answers are verified with: the current one and,
 * after a rotation, the previous one until previous_until_ms (on
 * server_now_ms's monotonic clock). Owned by whoever publishes it; a client
 * only reads it. */
struct alipay_trust {
    EVP_PKEY *current;
    EVP_PKEY *previous; /* NULL: none */
    long long previous_until_ms;
};

struct alipay_client_config {
    const char *gateway_url; /* copied */
    const char *app_id;      /* copied */
    EVP_PKEY *app_key;       /* borrowed: the app's private key, parsed once at start */
    EVP_PKEY *alipay_key;    /* borrowed: Alipay's public key */
    enum alipay_sign_type sign_type;
    long timeout_ms; /* whole call */
    /* Optional, borrowed: where the keys in force are published (SIGHUP
     * rotates them); when set it is used instead of alipay_key. */
    _Atomic(struct alipay_trust *) *trust;
    /* Certificate mode (all NULL in public-key mode): the SNs every request
     * carries (copied), Alipay's certificates by SN (borrowed: an answer is
     * verified with the key of the certificate its alipay_cert_sn names),
     * and the SN of the configured one, for answers that name none. */
    const char *app_cert_sn, *root_cert_sn, *alipay_cert_sn;
    struct alipay_cert_store *certs;
    /* Certificate mode: finds a certificate the store lacks (the service's
     * database, else alipay_client_fetch_cert) and calls done(arg) once,
     * whatever happened; the answer is then judged again. NULL: the client
     * fetches it itself. */
    void (*resolve)(void *ctx, const char *sn, void (*done)(void *arg), void *arg);
    void *resolve_ctx;
    /* Content encryption (borrowed; NULL: off): biz_content is sent
     * encrypted with encrypt_type=AES, and answers are decrypted. */
    const struct alipay_aes *aes;
};

#define ALIPAY_CERT_DOWNLOAD "alipay.open.app.alipaycert.download"

struct alipay_client;

/* http is borrowed; free it before the client (alipay_client_free). NULL with err. */
struct alipay_client *alipay_client_new(const struct alipay_client_config *cfg,
                                        struct alipay_http *http, char *err, size_t errlen);
/* Frees the client and the state of calls never answered: free the
 * alipay_http first (it drops those calls without their callbacks). */
void alipay_client_free(struct alipay_client *c);

/* A request ready for the wire; both strings malloc'd, freed together. */
struct alipay_request {
    char *url;  /* gateway URL + '?' + URL-encoded public parameters and sign */
    char *body; /* biz_content=<URL-encoded biz_content> */
};
void alipay_request_free(struct alipay_request *r);

/* Builds and signs a request at time `now`. auth_token / app_auth_token may
 * be NULL or empty (then left out). Returns 0, or -1 with err. */
int alipay_client_build(const struct alipay_client *c, const char *method, const char *biz_content,
                        const char *auth_token, const char *app_auth_token, time_t now,
                        struct alipay_request *out, char *err, size_t errlen);

/* Writes the n bytes at s percent-encoded to out, exactly as
 * curl_easy_escape does (every byte but ALPHA, DIGIT and "-._~" becomes
 * %XX, upper case), NUL-terminated; out has room for 3 * n + 1 bytes.
 * Returns the length written. (curl's own adds one byte at a time, and
 * formats each %XX with its printf: a measurable part of every call.) */
size_t alipay_client_escape(const char *s, size_t n, char *out);

/* A call's own parameters. Every one may be NULL (left out). grant_type and
 * code are alipay.system.oauth.token's public parameters (it has no
 * biz_content). */
struct alipay_call_params {
    const char *biz_content;
    const char *auth_token, *app_auth_token;
    const char *grant_type, *code;
    long timeout_ms; /* this call's whole-call timeout; 0: the client's */
};

/* As alipay_client_build, with every parameter of p. */
int alipay_client_build_params(const struct alipay_client *c, const char *method,
                               const struct alipay_call_params *p, time_t now,
                               struct alipay_request *out, char *err, size_t errlen);

/* The reply is owned by the client and valid during the callback only; the
 * callback may keep reply->node by taking a reference (json_object_get). */
typedef void (*alipay_client_cb)(struct alipay_reply *reply, void *arg);

/* Calls `method` now. The callback runs later from the event loop, exactly
 * once, with the outcome class set whatever happened. Returns 0, or -1 with
 * err (then the callback never runs). */
int alipay_client_call(struct alipay_client *c, const char *method, const char *biz_content,
                       const char *auth_token, const char *app_auth_token, alipay_client_cb cb,
                       void *arg, char *err, size_t errlen);
/* As alipay_client_call, with every parameter of p. */
int alipay_client_call_params(struct alipay_client *c, const char *method,
                              const struct alipay_call_params *p, alipay_client_cb cb, void *arg,
                              char *err, size_t errlen);

/* Certificate mode: fetches Alipay's certificate `sn` with
 * alipay.open.app.alipaycert.download, admits it to the store (it must
 * chain to the roots, be valid and have that SN) and calls
 * done(ok, pem, pem_len, arg) once from the event loop: pem is the
 * certificate's PEM text (valid during the call) when ok is 1. Returns 0,
 * or -1 with err (then done never runs). */
typedef void (*alipay_fetch_cb)(int ok, const char *pem, size_t pem_len, const char *why,
                                void *arg);
int alipay_client_fetch_cert(struct alipay_client *c, const char *sn, alipay_fetch_cb done,
                             void *arg, char *err, size_t errlen);

#endif
