/* alipay_http: asynchronous HTTP POSTs to the Alipay gateway.
 *
 * libcurl's multi interface driven by a libevent event_base, the way curl's
 * docs/examples/multi-event.c and hiperfifo.c do it (socket + timer callbacks,
 * curl_multi_socket_action). Nothing here blocks and nothing starts a thread
 * (curl's own resolver may use one for DNS). One struct alipay_http per
 * event_base, i.e. per worker thread; it must only be used from the thread
 * that runs that base.
 *
 * Connections stay alive in the multi handle's connection cache and are
 * reused; TLS peer and host verification is always on.
 *
 * The caller (main) runs curl_global_init(CURL_GLOBAL_DEFAULT) once before
 * the first alipay_http_new and curl_global_cleanup after the last
 * alipay_http_free, and should ignore SIGPIPE (CURLOPT_NOSIGNAL is set, so
 * curl does not do that for us). */
#ifndef CARDGATE_ALIPAY_HTTP_H
#define CARDGATE_ALIPAY_HTTP_H

#include <stddef.h>

struct event_base;

/* Largest response body accepted; a longer one ends the call as FAILED. */
#define ALIPAY_HTTP_MAX_BODY (1024 * 1024)

struct alipay_http; /* one per event_base; owns the CURLM, its timer and socket events */

struct alipay_http_options {
    const char *ca_file;       /* NULL: system bundle; TLS peer+host always verified */
    long connect_timeout_ms;   /* 0: 3000 (the Java SDK's) */
    long max_host_connections; /* 0: 64; further calls queue inside curl */
};

enum alipay_http_status {
    ALIPAY_HTTP_DONE,           /* an HTTP answer came (any status code) */
    ALIPAY_HTTP_TIMEOUT,        /* timeout hit (whole call, or connect): outcome unknown */
    ALIPAY_HTTP_CONNECT_FAILED, /* could not connect / resolve / TLS handshake failed */
    ALIPAY_HTTP_FAILED,         /* connection dropped, empty reply, too large a body, other */
};

struct alipay_http_response {
    enum alipay_http_status status;
    long http_code;   /* set when DONE, else 0 */
    const char *body; /* NUL-terminated (never NULL); valid only during the callback */
    size_t body_len;
    double total_ms; /* the whole call as curl measured it */
    char error[256]; /* one line: what failed (curl's error text); "" when DONE */
};

/* Runs from the event loop, exactly once per accepted post. It may post new
 * calls and may call alipay_http_free (then no further callbacks run). */
typedef void (*alipay_http_cb)(const struct alipay_http_response *res, void *arg);

/* A client on `base` (borrowed: it must outlive the client). opt may be NULL
 * for all defaults; ca_file is copied and must be readable. Returns the
 * client, which the caller frees with alipay_http_free, or NULL with err. */
struct alipay_http *alipay_http_new(struct event_base *base, const struct alipay_http_options *opt,
                                    char *err, size_t errlen);

/* POSTs `len` bytes of `body` (copied; may hold any bytes) to url (http:// or
 * https://) with Content-Type application/x-www-form-urlencoded;charset=utf-8
 * and Accept: application/json, the whole call bounded by timeout_ms (> 0).
 * cb(res, arg) runs later from the event loop, exactly once, never from
 * inside this function. Returns 0, or -1 with err (then cb never runs). */
int alipay_http_post(struct alipay_http *h, const char *url, const char *body, size_t len,
                     long timeout_ms, alipay_http_cb cb, void *arg, char *err, size_t errlen);

/* Calls posted whose callback has not started yet. */
size_t alipay_http_in_flight(const struct alipay_http *h);

/* Aborts calls still in flight without calling their callbacks, closes the
 * cached connections and frees everything. NULL is a no-op. Called from
 * inside a callback, the rest is done when that callback returns. */
void alipay_http_free(struct alipay_http *h);

#endif
