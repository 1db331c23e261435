/* alipay_http: libcurl multi driven by libevent (see alipay_http.h).
 *
 * The shape is curl's docs/examples/multi-event.c: curl tells us which
 * sockets to watch (http_on_curl_socket) and when to wake it up
 * (http_on_curl_timer); libevent calls back into curl_multi_socket_action
 * (http_on_socket, http_on_timer) and after every action we collect the
 * finished transfers (http_dispatch_done). */
#include "alipay_http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#define HTTP_DEFAULT_CONNECT_MS 3000L
#define HTTP_DEFAULT_HOST_CONNS 64L
#define HTTP_KEEPIDLE_S 60L
#define HTTP_KEEPINTVL_S 20L
/* Easy handles kept for the next calls: making one and freeing it cost
 * more than a call's own work in curl (issue 10's profile). */
#define HTTP_IDLE_EASY 64

/* One socket curl asked us to watch; curl holds it as the socketp. */
struct http_sock {
    struct event *ev;
    struct http_sock *prev, *next;
};

/* One POST in flight; the easy handle's CURLOPT_PRIVATE. */
struct http_call {
    struct alipay_http *h;
    CURL *easy;
    struct event *deadline; /* our own bound on the whole call (see http_on_deadline) */
    alipay_http_cb cb;
    void *arg;
    char *req_body; /* our copy of the request body; curl reads it in place */
    char *body;     /* the response body so far, NUL-terminated when non-NULL */
    size_t body_len, body_cap;
    int too_large;
    char errbuf[CURL_ERROR_SIZE];
    struct http_call *prev, *next;
};

struct alipay_http {
    struct event_base *base; /* borrowed */
    CURLM *multi;
    struct event *timer;        /* curl's single timeout */
    struct curl_slist *headers; /* shared by every call's easy handle */
    char *ca_file;              /* NULL: curl's default bundle */
    long connect_timeout_ms;
    struct http_call *calls; /* in flight */
    size_t n_calls;
    struct http_sock *socks;    /* watched sockets, so free can drop them */
    CURL *idle[HTTP_IDLE_EASY]; /* finished easy handles, their common options set */
    size_t n_idle;
    int dispatching;  /* inside http_dispatch_done */
    int free_pending; /* alipay_http_free was called from a callback */
};

static void http_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void http_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- sockets and timer: curl -> libevent ---- */

static void http_dispatch_done(struct alipay_http *h);

/* libevent: a watched socket is ready. h may be freed on return (a user
 * callback may call alipay_http_free), so nothing touches it afterwards. */
static void http_on_socket(evutil_socket_t fd, short what, void *arg)
{
    struct alipay_http *h = arg;
    int action = 0, running;
    if (what & EV_READ)
        action |= CURL_CSELECT_IN;
    if (what & EV_WRITE)
        action |= CURL_CSELECT_OUT;
    curl_multi_socket_action(h->multi, fd, action, &running);
    http_dispatch_done(h);
}

/* libevent: curl's timeout expired. Same ownership rule as http_on_socket. */
static void http_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct alipay_http *h = arg;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    http_dispatch_done(h);
}

/* Unlinks and frees one watched socket's event. The fd stays open: it is
 * curl's, and curl closes it right after telling us CURL_POLL_REMOVE (so the
 * event must go first, before the number can be reused). */
static void http_sock_free(struct alipay_http *h, struct http_sock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        h->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    event_free(s->ev);
    free(s);
}

/* curl: watch socket fd for `what`, or stop watching it. */
static int http_on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct alipay_http *h = userp;
    struct http_sock *s = socketp;
    short kind = EV_PERSIST;

    if (what == CURL_POLL_REMOVE) {
        if (s)
            http_sock_free(h, s);
        return 0;
    }
    if (what & CURL_POLL_IN)
        kind |= EV_READ;
    if (what & CURL_POLL_OUT)
        kind |= EV_WRITE;

    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->ev = event_new(h->base, fd, kind, http_on_socket, h);
        if (!s->ev) {
            free(s);
            return -1;
        }
        s->next = h->socks;
        if (h->socks)
            h->socks->prev = s;
        h->socks = s;
        curl_multi_assign(h->multi, fd, s);
    } else {
        /* event_assign needs the event not pending */
        event_del(s->ev);
        event_assign(s->ev, h->base, fd, kind, http_on_socket, h);
    }
    return event_add(s->ev, NULL) == 0 ? 0 : -1;
}

/* curl: call curl_multi_socket_action(CURL_SOCKET_TIMEOUT) in timeout_ms,
 * or never (-1). Never call curl from here: we are inside curl. */
static int http_on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct alipay_http *h = userp;
    struct timeval tv;

    if (timeout_ms < 0)
        return evtimer_del(h->timer) == 0 ? 0 : -1;
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    return evtimer_add(h->timer, &tv) == 0 ? 0 : -1;
}

/* ---- calls ---- */

/* curl: response body bytes. Keeps them NUL-terminated; refuses more than
 * ALIPAY_HTTP_MAX_BODY (returning short makes curl fail the transfer). */
static size_t http_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_call *c = arg;
    size_t len = size * nmemb;

    if (len > ALIPAY_HTTP_MAX_BODY - c->body_len) {
        c->too_large = 1;
        return 0;
    }
    if (c->body_len + len + 1 > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 1024;
        char *p;
        while (cap < c->body_len + len + 1)
            cap *= 2;
        p = realloc(c->body, cap);
        if (!p)
            return 0;
        c->body = p;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, data, len);
    c->body_len += len;
    c->body[c->body_len] = '\0';
    return len;
}

/* Frees a call; its easy handle goes back to h's idle ones (or is freed
 * when they are enough, or h is going). The caller has removed it from the
 * multi handle and from h->calls. */
static void http_call_free(struct http_call *c)
{
    struct alipay_http *h = c->h;
    if (c->deadline)
        event_free(c->deadline);
    if (c->easy && !h->free_pending && h->n_idle < HTTP_IDLE_EASY)
        h->idle[h->n_idle++] = c->easy;
    else if (c->easy)
        curl_easy_cleanup(c->easy);
    free(c->req_body);
    free(c->body);
    free(c);
}

static void http_call_unlink(struct alipay_http *h, struct http_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        h->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    h->n_calls--;
}

static enum alipay_http_status http_status_of(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return ALIPAY_HTTP_DONE;
    case CURLE_OPERATION_TIMEDOUT:
        return ALIPAY_HTTP_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_INITFAILED:
        return ALIPAY_HTTP_CONNECT_FAILED;
    default:
        return ALIPAY_HTTP_FAILED;
    }
}

/* Fills res->error with one line saying why call c ended with rc. */
static void http_describe(const struct http_call *c, CURLcode rc, struct alipay_http_response *res)
{
    char *nl;
    if (rc == CURLE_OK) {
        res->error[0] = '\0';
        return;
    }
    if (c->too_large || rc == CURLE_FILESIZE_EXCEEDED)
        snprintf(res->error, sizeof(res->error), "response body larger than %d bytes",
                 ALIPAY_HTTP_MAX_BODY);
    else if (c->errbuf[0])
        snprintf(res->error, sizeof(res->error), "%s", c->errbuf);
    else
        snprintf(res->error, sizeof(res->error), "%s", curl_easy_strerror(rc));
    while ((nl = strpbrk(res->error, "\r\n")) != NULL)
        *nl = ' ';
}

/* A transfer ended with rc: takes c out of the multi handle and h->calls,
 * runs the user callback, then frees c. */
static void http_call_finish(struct alipay_http *h, struct http_call *c, CURLcode rc)
{
    struct alipay_http_response res;
    curl_off_t total_us = 0;

    curl_multi_remove_handle(h->multi, c->easy);
    http_call_unlink(h, c);

    memset(&res, 0, sizeof(res));
    if (c->too_large || rc == CURLE_FILESIZE_EXCEEDED)
        res.status = ALIPAY_HTTP_FAILED;
    else
        res.status = http_status_of(rc);
    if (res.status == ALIPAY_HTTP_DONE)
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &res.http_code);
    curl_easy_getinfo(c->easy, CURLINFO_TOTAL_TIME_T, &total_us);
    res.total_ms = (double)total_us / 1000.0;
    res.body = c->body ? c->body : "";
    res.body_len = c->body_len;
    http_describe(c, rc, &res);

    c->cb(&res, c->arg);
    http_call_free(c);
}

static void http_destroy(struct alipay_http *h);

/* The call's own deadline passed and curl has not ended it: curl before
 * 8.8 does not time out a transfer still waiting for a connection (all
 * max_host_connections busy), so the whole-call timeout is enforced here. */
static void http_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct http_call *c = arg;
    struct alipay_http *h = c->h;
    snprintf(c->errbuf, sizeof(c->errbuf), "no answer within the call's timeout");
    h->dispatching++;
    http_call_finish(h, c, CURLE_OPERATION_TIMEDOUT);
    h->dispatching--;
    if (h->free_pending && h->dispatching == 0)
        http_destroy(h);
}

/* Runs the callbacks of every finished transfer. A callback may post (that
 * only adds a handle; curl's message queue is not disturbed) or free h, in
 * which case the remaining finished calls are dropped with everything else. */
static void http_dispatch_done(struct alipay_http *h)
{
    CURLMsg *msg;
    int left;

    h->dispatching++;
    while (!h->free_pending && (msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        char *priv = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        if (msg->msg != CURLMSG_DONE)
            continue;
        /* msg dies with curl_multi_remove_handle: copied out above */
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        http_call_finish(h, (struct http_call *)priv, rc);
    }
    h->dispatching--;
    if (h->free_pending && h->dispatching == 0)
        http_destroy(h);
}

/* Sets one option; on failure writes the enclosing function's err and
 * returns -1 from it. */
#define HTTP_SET(easy, opt, val)                                                                   \
    do {                                                                                           \
        CURLcode set_rc_ = curl_easy_setopt((easy), (opt), (val));                                 \
        if (set_rc_ != CURLE_OK) {                                                                 \
            http_seterr(err, errlen, "curl_easy_setopt(%s): %s", #opt,                             \
                        curl_easy_strerror(set_rc_));                                              \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

/* Sets the options every call of h shares on a new easy handle e. They
 * stay set while e is kept idle for the next call. */
static int http_easy_setup(struct alipay_http *h, CURL *e, char *err, size_t errlen)
{
    HTTP_SET(e, CURLOPT_PROTOCOLS_STR, "http,https");
    HTTP_SET(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    HTTP_SET(e, CURLOPT_POST, 1L);
    HTTP_SET(e, CURLOPT_HTTPHEADER, h->headers);
    HTTP_SET(e, CURLOPT_USERAGENT, "cardgate/" CARDGATE_VERSION);
    HTTP_SET(e, CURLOPT_CONNECTTIMEOUT_MS, h->connect_timeout_ms);
    /* signals and threads do not mix; timeouts come from the multi timer */
    HTTP_SET(e, CURLOPT_NOSIGNAL, 1L);
    /* pooled connections sit idle between calls: let TCP notice dead ones */
    HTTP_SET(e, CURLOPT_TCP_KEEPALIVE, 1L);
    HTTP_SET(e, CURLOPT_TCP_KEEPIDLE, HTTP_KEEPIDLE_S);
    HTTP_SET(e, CURLOPT_TCP_KEEPINTVL, HTTP_KEEPINTVL_S);
    HTTP_SET(e, CURLOPT_SSL_VERIFYPEER, 1L);
    HTTP_SET(e, CURLOPT_SSL_VERIFYHOST, 2L);
    HTTP_SET(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (h->ca_file)
        HTTP_SET(e, CURLOPT_CAINFO, h->ca_file);
    /* Content-Length lets curl refuse a large body before reading it */
    HTTP_SET(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)ALIPAY_HTTP_MAX_BODY);
    HTTP_SET(e, CURLOPT_WRITEFUNCTION, http_on_body);
    return 0;
}

/* Takes an idle easy handle of h, or makes one: c->easy, or -1 with err. */
static int http_call_easy(struct alipay_http *h, struct http_call *c, char *err, size_t errlen)
{
    if (h->n_idle > 0) {
        c->easy = h->idle[--h->n_idle];
        return 0;
    }
    c->easy = curl_easy_init();
    if (!c->easy) {
        http_seterr(err, errlen, "alipay_http_post: curl_easy_init failed");
        return -1;
    }
    if (http_easy_setup(h, c->easy, err, errlen) != 0) {
        /* never kept idle half set */
        curl_easy_cleanup(c->easy);
        c->easy = NULL;
        return -1;
    }
    return 0;
}

/* Points c->easy at this call: one POST of c->req_body (len bytes) to url. */
static int http_call_setup(struct http_call *c, const char *url, size_t len, long timeout_ms,
                           char *err, size_t errlen)
{
    CURL *e = c->easy;

    HTTP_SET(e, CURLOPT_URL, url);
    HTTP_SET(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    HTTP_SET(e, CURLOPT_POSTFIELDS, c->req_body);
    HTTP_SET(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    HTTP_SET(e, CURLOPT_WRITEDATA, c);
    HTTP_SET(e, CURLOPT_ERRORBUFFER, c->errbuf);
    HTTP_SET(e, CURLOPT_PRIVATE, c);
    return 0;
}

#undef HTTP_SET

static int http_url_ok(const char *url)
{
    return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

int alipay_http_post(struct alipay_http *h, const char *url, const char *body, size_t len,
                     long timeout_ms, alipay_http_cb cb, void *arg, char *err, size_t errlen)
{
    struct http_call *c;
    CURLMcode mrc;

    if (!h || !url || !cb || (!body && len > 0)) {
        http_seterr(err, errlen, "alipay_http_post: missing argument");
        return -1;
    }
    if (h->free_pending) {
        http_seterr(err, errlen, "alipay_http_post: client is being freed");
        return -1;
    }
    if (!http_url_ok(url)) {
        http_seterr(err, errlen, "alipay_http_post: not an http(s) URL: %.100s", url);
        return -1;
    }
    if (timeout_ms <= 0) {
        http_seterr(err, errlen, "alipay_http_post: timeout must be > 0 ms, got %ld", timeout_ms);
        return -1;
    }

    c = calloc(1, sizeof(*c));
    if (!c || !(c->req_body = malloc(len + 1))) {
        free(c);
        http_seterr(err, errlen, "alipay_http_post: out of memory");
        return -1;
    }
    if (len > 0)
        memcpy(c->req_body, body, len);
    c->req_body[len] = '\0';
    c->cb = cb;
    c->arg = arg;
    c->h = h;
    /* A little later than curl's own timeout, which normally ends it. */
    long grace_ms = timeout_ms + 200;
    struct timeval tv = {grace_ms / 1000, (grace_ms % 1000) * 1000};
    c->deadline = evtimer_new(h->base, http_on_deadline, c);
    if (!c->deadline || evtimer_add(c->deadline, &tv) != 0) {
        http_seterr(err, errlen, "alipay_http_post: cannot arm the deadline");
        http_call_free(c);
        return -1;
    }

    if (http_call_easy(h, c, err, errlen) != 0 ||
        http_call_setup(c, url, len, timeout_ms, err, errlen) != 0) {
        http_call_free(c);
        return -1;
    }
    /* only arms curl's timer; the transfer starts from the event loop */
    mrc = curl_multi_add_handle(h->multi, c->easy);
    if (mrc != CURLM_OK) {
        http_seterr(err, errlen, "curl_multi_add_handle: %s", curl_multi_strerror(mrc));
        http_call_free(c);
        return -1;
    }
    c->next = h->calls;
    if (h->calls)
        h->calls->prev = c;
    h->calls = c;
    h->n_calls++;
    return 0;
}

size_t alipay_http_in_flight(const struct alipay_http *h)
{
    return h ? h->n_calls : 0;
}

/* ---- client ---- */

static struct curl_slist *http_make_headers(void)
{
    static const char *const lines[] = {
        "Content-Type: application/x-www-form-urlencoded;charset=utf-8", "Accept: application/json",
        "Expect:", /* no 100-continue round trip before the body */
    };
    struct curl_slist *list = NULL;
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        struct curl_slist *next = curl_slist_append(list, lines[i]);
        if (!next) {
            curl_slist_free_all(list);
            return NULL;
        }
        list = next;
    }
    return list;
}

static int http_multi_setup(struct alipay_http *h, long max_host, char *err, size_t errlen)
{
    CURLMcode rc = CURLM_OK;
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, http_on_curl_socket);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, http_on_curl_timer);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_host);
    /* keep as many idle connections as we may open, so a burst's
     * connections survive for the next one */
    if (rc == CURLM_OK)
        rc = curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, max_host);
    if (rc != CURLM_OK) {
        http_seterr(err, errlen, "curl_multi_setopt: %s", curl_multi_strerror(rc));
        return -1;
    }
    return 0;
}

struct alipay_http *alipay_http_new(struct event_base *base, const struct alipay_http_options *opt,
                                    char *err, size_t errlen)
{
    struct alipay_http *h;
    long max_host = HTTP_DEFAULT_HOST_CONNS;

    if (!base) {
        http_seterr(err, errlen, "alipay_http_new: no event_base");
        return NULL;
    }
    if (opt && opt->ca_file && access(opt->ca_file, R_OK) != 0) {
        http_seterr(err, errlen, "CA file %.200s is not readable", opt->ca_file);
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        http_seterr(err, errlen, "alipay_http_new: out of memory");
        return NULL;
    }
    h->base = base;
    h->connect_timeout_ms = HTTP_DEFAULT_CONNECT_MS;
    if (opt && opt->connect_timeout_ms > 0)
        h->connect_timeout_ms = opt->connect_timeout_ms;
    if (opt && opt->max_host_connections > 0)
        max_host = opt->max_host_connections;

    if ((opt && opt->ca_file && !(h->ca_file = strdup(opt->ca_file))) ||
        !(h->headers = http_make_headers()) || !(h->timer = evtimer_new(base, http_on_timer, h))) {
        http_seterr(err, errlen, "alipay_http_new: out of memory");
        alipay_http_free(h);
        return NULL;
    }
    h->multi = curl_multi_init();
    if (!h->multi) {
        http_seterr(err, errlen, "curl_multi_init failed (was curl_global_init called?)");
        alipay_http_free(h);
        return NULL;
    }
    if (http_multi_setup(h, max_host, err, errlen) != 0) {
        alipay_http_free(h);
        return NULL;
    }
    return h;
}

/* Frees h for real: aborts the calls, drops our socket events before curl
 * closes the sockets, then lets curl close its cached connections. */
static void http_destroy(struct alipay_http *h)
{
    while (h->calls) {
        struct http_call *c = h->calls;
        http_call_unlink(h, c);
        if (h->multi)
            curl_multi_remove_handle(h->multi, c->easy);
        http_call_free(c);
    }
    if (h->multi) {
        /* from here curl must not call back into a half-freed h */
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, (curl_socket_callback)NULL);
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, (curl_multi_timer_callback)NULL);
    }
    while (h->socks)
        http_sock_free(h, h->socks);
    while (h->n_idle > 0)
        curl_easy_cleanup(h->idle[--h->n_idle]);
    if (h->multi)
        curl_multi_cleanup(h->multi);
    if (h->timer)
        event_free(h->timer);
    curl_slist_free_all(h->headers);
    free(h->ca_file);
    free(h);
}

void alipay_http_free(struct alipay_http *h)
{
    if (!h)
        return;
    if (h->dispatching) {
        h->free_pending = 1;
        return;
    }
    http_destroy(h);
}
