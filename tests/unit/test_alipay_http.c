/* Unit tests for alipay_http: real calls to an evhttp server that runs on
 * the same event_base as the client, so one thread drives both sides.
 *
 * Server paths: /echo (200, "回显:" + the request body), /len (200, the
 * body's length), /fail500, /slow (answers after SLOW_REPLY_S, far beyond
 * any call timeout here), /drop (shuts the connection down unanswered),
 * /big_max, /big_over, /big_over_chunked (bodies around the 1 MiB cap).
 * Besides, a port that refuses connections and one that answers a TLS
 * handshake with plain HTTP. */
#include <check.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "alipay_http.h"
#include "support.h"

#define CALL_TIMEOUT_MS 10000L /* calls that should be answered */
#define SHORT_TIMEOUT_MS 500L  /* calls meant to time out */
#define SLOW_REPLY_S 30        /* /slow answers this late */
#define WAIT_MS 20000          /* how long a test waits for its callbacks */
#define ECHO_PREFIX "回显:"    /* UTF-8, 7 bytes */
#define FORM_CT "application/x-www-form-urlencoded;charset=utf-8"
#define MAX_LIVE 256
#define MAX_PENDING 32
#define MAX_JUNK 8
#define MIB (1024 * 1024)

/* ---- server ---- */

struct srv;

/* A request answered later (/slow) or never (/drop), until srv_stop. */
struct pending {
    struct srv *s;
    struct evhttp_request *req;
    struct event *timer; /* NULL for /drop */
    int answered;
};

struct srv {
    struct event_base *base;
    struct evhttp *http;
    int port;
    int requests; /* every request that reached a handler */
    int stalled;  /* requests to /slow and /drop */
    int conns;    /* distinct connections that carried a request */
    int closes;   /* of those, how many closed */
    struct evhttp_connection *live[MAX_LIVE];
    int n_live, max_live, live_overflow;
    /* the last /echo or /len request as it arrived */
    int was_post;
    char content_type[128];
    char accept[64];
    int had_expect;
    long body_len;
    struct pending pend[MAX_PENDING];
    int n_pend;
    /* a listener that answers TLS with plain HTTP */
    struct evconnlistener *junk;
    int junk_port;
    struct bufferevent *junk_bev[MAX_JUNK];
    /* bound, never listening: connecting to it is refused */
    int refused_fd;
    int refused_port;
};

static unsigned port_seed;

static int random_port(void)
{
    return 20000 + (int)(rand_r(&port_seed) % 12000);
}

static void srv_on_close(struct evhttp_connection *evcon, void *arg)
{
    struct srv *s = arg;
    s->closes++;
    for (int i = 0; i < s->n_live; i++) {
        if (s->live[i] == evcon) {
            s->live[i] = s->live[--s->n_live];
            return;
        }
    }
}

/* Counts the request's connection the first time it carries a request. */
static void srv_track(struct srv *s, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    s->requests++;
    if (!evcon)
        return;
    for (int i = 0; i < s->n_live; i++)
        if (s->live[i] == evcon)
            return;
    s->conns++;
    if (s->n_live == MAX_LIVE) {
        s->live_overflow = 1;
        return;
    }
    s->live[s->n_live++] = evcon;
    if (s->n_live > s->max_live)
        s->max_live = s->n_live;
    evhttp_connection_set_closecb(evcon, srv_on_close, s);
}

static void srv_record(struct srv *s, struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *ct = evhttp_find_header(in, "Content-Type");
    const char *acc = evhttp_find_header(in, "Accept");
    s->was_post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;
    snprintf(s->content_type, sizeof(s->content_type), "%s", ct ? ct : "");
    snprintf(s->accept, sizeof(s->accept), "%s", acc ? acc : "");
    s->had_expect = evhttp_find_header(in, "Expect") != NULL;
    s->body_len = (long)evbuffer_get_length(evhttp_request_get_input_buffer(req));
}

static void srv_reply(struct evhttp_request *req, int code, const char *reason, const void *body,
                      size_t len)
{
    struct evbuffer *out = evbuffer_new();
    evbuffer_add(out, body, len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json;charset=utf-8");
    evhttp_send_reply(req, code, reason, out);
    evbuffer_free(out);
}

static void srv_echo(struct evhttp_request *req, void *arg)
{
    struct srv *s = arg;
    struct evbuffer *out = evbuffer_new();
    srv_track(s, req);
    srv_record(s, req);
    evbuffer_add(out, ECHO_PREFIX, strlen(ECHO_PREFIX));
    evbuffer_add_buffer(out, evhttp_request_get_input_buffer(req));
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

static void srv_len(struct evhttp_request *req, void *arg)
{
    struct srv *s = arg;
    char n[32];
    srv_track(s, req);
    srv_record(s, req);
    snprintf(n, sizeof(n), "%ld", s->body_len);
    srv_reply(req, 200, "OK", n, strlen(n));
}

static void srv_fail500(struct evhttp_request *req, void *arg)
{
    static const char body[] = "{\"msg\":\"系统繁忙\"}";
    srv_track(arg, req);
    srv_reply(req, 500, "Internal Server Error", body, strlen(body));
}

static void srv_on_late(evutil_socket_t fd, short what, void *arg)
{
    struct pending *p = arg;
    p->answered = 1;
    srv_reply(p->req, 200, "OK", "late", 4);
}

static struct pending *srv_hold(struct srv *s, struct evhttp_request *req)
{
    struct pending *p;
    ck_assert_int_lt(s->n_pend, MAX_PENDING);
    p = &s->pend[s->n_pend++];
    p->s = s;
    p->req = req;
    s->stalled++;
    return p;
}

static void srv_slow(struct evhttp_request *req, void *arg)
{
    struct pending *p;
    struct timeval tv = {SLOW_REPLY_S, 0};
    srv_track(arg, req);
    p = srv_hold(arg, req);
    p->timer = evtimer_new(((struct srv *)arg)->base, srv_on_late, p);
    evtimer_add(p->timer, &tv);
}

static void srv_drop(struct evhttp_request *req, void *arg)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evhttp_request_get_connection(req));
    srv_track(arg, req);
    srv_hold(arg, req);
    shutdown(bufferevent_getfd(bev), SHUT_RDWR);
}

static void srv_big(struct evhttp_request *req, size_t len, int chunked)
{
    char *body = malloc(len);
    ck_assert_ptr_nonnull(body);
    memset(body, 'a', len);
    if (!chunked) {
        srv_reply(req, 200, "OK", body, len);
    } else {
        /* no Content-Length: the client only learns the size by reading */
        struct evbuffer *out = evbuffer_new();
        evhttp_send_reply_start(req, 200, "OK");
        evbuffer_add(out, body, len / 2);
        evhttp_send_reply_chunk(req, out);
        evbuffer_add(out, body + len / 2, len - len / 2);
        evhttp_send_reply_chunk(req, out);
        evhttp_send_reply_end(req);
        evbuffer_free(out);
    }
    free(body);
}

static void srv_big_max(struct evhttp_request *req, void *arg)
{
    srv_track(arg, req);
    srv_big(req, MIB, 0);
}

static void srv_big_over(struct evhttp_request *req, void *arg)
{
    srv_track(arg, req);
    srv_big(req, MIB + 1, 0);
}

static void srv_big_over_chunked(struct evhttp_request *req, void *arg)
{
    srv_track(arg, req);
    srv_big(req, MIB + 1, 1);
}

static void srv_other(struct evhttp_request *req, void *arg)
{
    srv_track(arg, req);
    evhttp_send_error(req, 404, NULL);
}

static void junk_read(struct bufferevent *bev, void *arg)
{
    static const char reply[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
    bufferevent_write(bev, reply, strlen(reply));
}

static void junk_event(struct bufferevent *bev, short what, void *arg)
{
    struct srv *s = arg;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    for (int i = 0; i < MAX_JUNK; i++)
        if (s->junk_bev[i] == bev)
            s->junk_bev[i] = NULL;
    bufferevent_free(bev);
}

static void junk_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                        void *arg)
{
    struct srv *s = arg;
    struct bufferevent *bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    for (int i = 0; i < MAX_JUNK; i++) {
        if (!s->junk_bev[i]) {
            s->junk_bev[i] = bev;
            bufferevent_setcb(bev, junk_read, NULL, junk_event, s);
            bufferevent_enable(bev, EV_READ);
            return;
        }
    }
    bufferevent_free(bev);
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
}

static void srv_start(struct srv *s, struct event_base *base)
{
    memset(s, 0, sizeof(*s));
    s->base = base;
    s->refused_fd = -1;
    s->http = evhttp_new(base);
    ck_assert_ptr_nonnull(s->http);
    evhttp_set_cb(s->http, "/echo", srv_echo, s);
    evhttp_set_cb(s->http, "/len", srv_len, s);
    evhttp_set_cb(s->http, "/fail500", srv_fail500, s);
    evhttp_set_cb(s->http, "/slow", srv_slow, s);
    evhttp_set_cb(s->http, "/drop", srv_drop, s);
    evhttp_set_cb(s->http, "/big_max", srv_big_max, s);
    evhttp_set_cb(s->http, "/big_over", srv_big_over, s);
    evhttp_set_cb(s->http, "/big_over_chunked", srv_big_over_chunked, s);
    evhttp_set_gencb(s->http, srv_other, s);

    /* binding is the check that a random port is free */
    for (int i = 0; i < 100 && !s->port; i++) {
        int port = random_port();
        if (evhttp_bind_socket_with_handle(s->http, "127.0.0.1", port))
            s->port = port;
    }
    ck_assert_int_ne(s->port, 0);

    for (int i = 0; i < 100 && !s->junk; i++) {
        struct sockaddr_in sa = loopback(random_port());
        s->junk = evconnlistener_new_bind(base, junk_accept, s, LEV_OPT_CLOSE_ON_FREE, 16,
                                          (struct sockaddr *)&sa, sizeof(sa));
        if (s->junk)
            s->junk_port = ntohs(sa.sin_port);
    }
    ck_assert_ptr_nonnull(s->junk);

    s->refused_fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(s->refused_fd, 0);
    for (int i = 0; i < 100 && !s->refused_port; i++) {
        struct sockaddr_in sa = loopback(random_port());
        if (bind(s->refused_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            s->refused_port = ntohs(sa.sin_port);
    }
    ck_assert_int_ne(s->refused_port, 0);
}

static void srv_stop(struct srv *s)
{
    /* a held request is ours until answered: answer what is left (when its
     * connection is gone, evhttp just frees it), then free the server */
    for (int i = 0; i < s->n_pend; i++) {
        struct pending *p = &s->pend[i];
        if (p->timer)
            event_free(p->timer);
        if (!p->answered)
            srv_reply(p->req, 200, "OK", "late", 4);
    }
    evhttp_free(s->http);
    for (int i = 0; i < MAX_JUNK; i++)
        if (s->junk_bev[i])
            bufferevent_free(s->junk_bev[i]);
    evconnlistener_free(s->junk);
    close(s->refused_fd);
}

/* ---- client side ---- */

struct fx;

/* What one callback saw. */
struct rec {
    struct fx *f;
    int id;
    int done;
    enum alipay_http_status status;
    long code;
    char *body; /* copy */
    size_t len;
    int nul_terminated;
    double total_ms;
    char error[256];
    size_t in_flight;            /* alipay_http_in_flight during the callback */
    void (*then)(struct rec *r); /* runs inside the callback */
    struct rec *next;            /* for `then` */
};

struct fx {
    struct event_base *base;
    struct srv srv;
    struct alipay_http *h;
    int in_post;        /* inside alipay_http_post */
    int sync_callbacks; /* callbacks that ran inside alipay_http_post */
    int completed;      /* callbacks run */
};

static void fx_start(struct fx *f, const struct alipay_http_options *opt)
{
    char err[256] = "";
    memset(f, 0, sizeof(*f));
    port_seed ^= (unsigned)getpid(); /* each forked test picks other ports */
    f->base = event_base_new();
    ck_assert_ptr_nonnull(f->base);
    srv_start(&f->srv, f->base);
    f->h = alipay_http_new(f->base, opt, err, sizeof(err));
    ck_assert_msg(f->h != NULL, "alipay_http_new: %s", err);
}

static void fx_stop(struct fx *f)
{
    alipay_http_free(f->h);
    srv_stop(&f->srv);
    event_base_free(f->base);
}

static void on_done(const struct alipay_http_response *res, void *arg)
{
    struct rec *r = arg;
    struct fx *f = r->f;
    if (f->in_post)
        f->sync_callbacks++;
    r->done++;
    r->status = res->status;
    r->code = res->http_code;
    r->len = res->body_len;
    r->nul_terminated = res->body[res->body_len] == '\0';
    free(r->body);
    r->body = malloc(res->body_len + 1);
    memcpy(r->body, res->body, res->body_len + 1);
    r->total_ms = res->total_ms;
    snprintf(r->error, sizeof(r->error), "%s", res->error);
    r->in_flight = alipay_http_in_flight(f->h);
    f->completed++;
    if (r->then)
        r->then(r);
}

static void fx_post_url(struct fx *f, const char *url, const void *body, size_t len,
                        long timeout_ms, struct rec *r)
{
    char err[256] = "";
    int rc;
    r->f = f;
    f->in_post = 1;
    rc = alipay_http_post(f->h, url, body, len, timeout_ms, on_done, r, err, sizeof(err));
    f->in_post = 0;
    ck_assert_msg(rc == 0, "alipay_http_post(%s): %s", url, err);
}

static void fx_post(struct fx *f, const char *path, const void *body, size_t len, long timeout_ms,
                    struct rec *r)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", f->srv.port, path);
    fx_post_url(f, url, body, len, timeout_ms, r);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(int *)arg = 1;
}

/* Runs the loop until *counter >= target or ms pass; returns *counter. */
static int fx_run_until(struct fx *f, const int *counter, int target, int ms)
{
    int expired = 0;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct event *deadline = evtimer_new(f->base, on_deadline, &expired);
    evtimer_add(deadline, &tv);
    while (*counter < target && !expired)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(deadline);
    return *counter;
}

static void fx_run_for(struct fx *f, int ms)
{
    int never = 0;
    fx_run_until(f, &never, 1, ms);
}

static void rec_free(struct rec *r)
{
    free(r->body);
    r->body = NULL;
}

/* ---- tests ---- */

START_TEST(test_post_200_body_intact)
{
    /* form body with raw UTF-8 Chinese and a NUL byte: len, not strlen */
    static const char body[] = "biz_content={\"name\":\"张三\",\"level\":\"金卡\"}&x=\0tail";
    static const char want[] =
        ECHO_PREFIX "biz_content={\"name\":\"张三\",\"level\":\"金卡\"}&x=\0tail";
    struct fx f;
    struct rec r = {0};

    fx_start(&f, NULL);
    fx_post(&f, "/echo", body, sizeof(body) - 1, CALL_TIMEOUT_MS, &r);
    ck_assert_uint_eq(alipay_http_in_flight(f.h), 1);
    ck_assert_int_eq(r.done, 0);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 1, WAIT_MS), 1);

    ck_assert_int_eq(r.done, 1);
    ck_assert_int_eq(f.sync_callbacks, 0);
    ck_assert_int_eq(r.status, ALIPAY_HTTP_DONE);
    ck_assert_int_eq(r.code, 200);
    ck_assert_uint_eq(r.len, sizeof(want) - 1);
    ck_assert(memcmp(r.body, want, sizeof(want) - 1) == 0);
    ck_assert(r.nul_terminated);
    ck_assert_str_eq(r.error, "");
    ck_assert(r.total_ms >= 0);
    ck_assert_uint_eq(r.in_flight, 0);
    ck_assert_uint_eq(alipay_http_in_flight(f.h), 0);

    /* the request as the server saw it (alipay.md: form POST, JSON back) */
    ck_assert(f.srv.was_post);
    ck_assert_str_eq(f.srv.content_type, FORM_CT);
    ck_assert_str_eq(f.srv.accept, "application/json");
    ck_assert(!f.srv.had_expect);

    fx_run_for(&f, 100);
    ck_assert_int_eq(r.done, 1); /* exactly once */
    rec_free(&r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_large_request_no_expect)
{
    /* curl asks "Expect: 100-continue" for large bodies unless told not to */
    size_t n = 2 * MIB;
    char *body = malloc(n);
    struct fx f;
    struct rec r = {0};

    ck_assert_ptr_nonnull(body);
    memset(body, 'b', n);
    fx_start(&f, NULL);
    fx_post(&f, "/len", body, n, CALL_TIMEOUT_MS, &r);
    free(body); /* the client has its own copy */
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 1, WAIT_MS), 1);
    ck_assert_int_eq(r.status, ALIPAY_HTTP_DONE);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.body, "2097152");
    ck_assert(!f.srv.had_expect);
    rec_free(&r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_http_500_is_done)
{
    struct fx f;
    struct rec r = {0};

    fx_start(&f, NULL);
    fx_post(&f, "/fail500", "a=1", 3, CALL_TIMEOUT_MS, &r);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 1, WAIT_MS), 1);
    ck_assert_int_eq(r.status, ALIPAY_HTTP_DONE);
    ck_assert_int_eq(r.code, 500);
    ck_assert_str_eq(r.body, "{\"msg\":\"系统繁忙\"}");
    rec_free(&r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_slow_answer_times_out)
{
    struct fx f;
    struct rec r = {0};

    fx_start(&f, NULL);
    fx_post(&f, "/slow", "a=1", 3, SHORT_TIMEOUT_MS, &r);
    /* WAIT_MS < SLOW_REPLY_S: the answer cannot have come */
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 1, WAIT_MS), 1);
    ck_assert_int_eq(f.srv.stalled, 1);
    ck_assert_int_eq(r.status, ALIPAY_HTTP_TIMEOUT);
    ck_assert_int_eq(r.code, 0);
    ck_assert_msg(r.error[0] != '\0', "no error text");
    ck_assert(strchr(r.error, '\n') == NULL);
    ck_assert_msg(r.total_ms >= SHORT_TIMEOUT_MS * 0.9, "timed out after %.1f ms", r.total_ms);
    ck_assert_uint_eq(alipay_http_in_flight(f.h), 0);
    rec_free(&r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_dropped_connection_fails)
{
    struct fx f;
    struct rec r = {0};

    fx_start(&f, NULL);
    fx_post(&f, "/drop", "a=1", 3, CALL_TIMEOUT_MS, &r);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 1, WAIT_MS), 1);
    ck_assert_int_ge(f.srv.stalled, 1);
    ck_assert_int_eq(r.status, ALIPAY_HTTP_FAILED);
    ck_assert_int_eq(r.code, 0);
    ck_assert_msg(r.error[0] != '\0', "no error text");
    rec_free(&r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_refused_port_connect_failed)
{
    struct fx f;
    struct rec r = {0};
    char url[128];

    fx_start(&f, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/gateway.do", f.srv.refused_port);
    fx_post_url(&f, url, "a=1", 3, CALL_TIMEOUT_MS, &r);
    ck_assert_int_eq(r.done, 0);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 1, WAIT_MS), 1);
    ck_assert_int_eq(f.sync_callbacks, 0);
    ck_assert_int_eq(r.status, ALIPAY_HTTP_CONNECT_FAILED);
    ck_assert_msg(r.error[0] != '\0', "no error text");
    rec_free(&r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_malformed_url_fails_later)
{
    /* curl refuses this URL on its first step: still never inside post */
    struct fx f;
    struct rec r = {0};

    fx_start(&f, NULL);
    fx_post_url(&f, "http://exa mple.invalid/gateway.do", "a=1", 3, CALL_TIMEOUT_MS, &r);
    ck_assert_int_eq(r.done, 0);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 1, WAIT_MS), 1);
    ck_assert_int_eq(f.sync_callbacks, 0);
    ck_assert_int_eq(r.status, ALIPAY_HTTP_FAILED);
    ck_assert_msg(r.error[0] != '\0', "no error text");
    rec_free(&r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_sockets_unwatched_after_close)
{
    /* curl's CURL_POLL_REMOVE must drop the event: none may pile up */
    struct fx f;
    struct rec r[5];
    char url[128];
    int base_events;

    memset(r, 0, sizeof(r));
    fx_start(&f, NULL);
    base_events = event_base_get_num_events(f.base, EVENT_BASE_COUNT_ADDED);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/gateway.do", f.srv.refused_port);
    for (int i = 0; i < 5; i++)
        fx_post_url(&f, url, "a=1", 3, CALL_TIMEOUT_MS, &r[i]);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 5, WAIT_MS), 5);
    /* all five sockets are closed; only curl's timer may still be armed */
    ck_assert_int_le(event_base_get_num_events(f.base, EVENT_BASE_COUNT_ADDED), base_events + 1);
    for (int i = 0; i < 5; i++)
        rec_free(&r[i]);
    fx_stop(&f);
}
END_TEST

START_TEST(test_tls_handshake_failure_connect_failed)
{
    struct fx f;
    struct rec r = {0};
    char url[128];

    fx_start(&f, NULL);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/gateway.do", f.srv.junk_port);
    fx_post_url(&f, url, "a=1", 3, CALL_TIMEOUT_MS, &r);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 1, WAIT_MS), 1);
    ck_assert_msg(r.status == ALIPAY_HTTP_CONNECT_FAILED, "status %d: %s", r.status, r.error);
    rec_free(&r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_body_cap)
{
    struct fx f;
    struct rec max = {0}, over = {0}, chunked = {0};

    fx_start(&f, NULL);
    fx_post(&f, "/big_max", "", 0, CALL_TIMEOUT_MS, &max);
    fx_post(&f, "/big_over", "", 0, CALL_TIMEOUT_MS, &over);
    fx_post(&f, "/big_over_chunked", "", 0, CALL_TIMEOUT_MS, &chunked);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 3, WAIT_MS), 3);

    ck_assert_int_eq(max.status, ALIPAY_HTTP_DONE);
    ck_assert_uint_eq(max.len, MIB);
    ck_assert(max.body[0] == 'a' && max.body[MIB - 1] == 'a' && max.nul_terminated);
    ck_assert_msg(over.status == ALIPAY_HTTP_FAILED, "status %d: %s", over.status, over.error);
    ck_assert_msg(chunked.status == ALIPAY_HTTP_FAILED, "status %d: %s", chunked.status,
                  chunked.error);
    ck_assert_msg(strstr(chunked.error, "1048576") != NULL, "error: %s", chunked.error);
    rec_free(&max);
    rec_free(&over);
    rec_free(&chunked);
    fx_stop(&f);
}
END_TEST

/* Easy handles are kept for the next calls (alipay_http.c): nothing of a
 * call that timed out, failed on its size or sent a large body is left in
 * the call that takes its handle next (body, length, timeout, error). */
START_TEST(test_next_call_keeps_nothing_of_the_last)
{
    static const char want[] = ECHO_PREFIX "b=2";
    struct fx f;
    struct rec slow = {0}, over = {0}, echo = {0}, slow2 = {0};
    size_t n = 2 * MIB;
    char *big = malloc(n);
    ck_assert_ptr_nonnull(big);
    memset(big, 'x', n);

    fx_start(&f, NULL);
    fx_post(&f, "/slow", "a=1", 3, SHORT_TIMEOUT_MS, &slow);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 1, WAIT_MS), 1);
    ck_assert_int_eq(slow.status, ALIPAY_HTTP_TIMEOUT);
    fx_post(&f, "/big_over", big, n, CALL_TIMEOUT_MS, &over);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 2, WAIT_MS), 2);
    ck_assert_int_eq(over.status, ALIPAY_HTTP_FAILED);

    fx_post(&f, "/echo", "b=2", 3, CALL_TIMEOUT_MS, &echo);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 3, WAIT_MS), 3);
    ck_assert_msg(echo.status == ALIPAY_HTTP_DONE, "status %d: %s", echo.status, echo.error);
    ck_assert_int_eq(echo.code, 200);
    ck_assert_uint_eq(echo.len, sizeof(want) - 1);
    ck_assert(memcmp(echo.body, want, sizeof(want) - 1) == 0);
    ck_assert_str_eq(echo.error, "");

    /* the long timeout of the call before is not this one's */
    fx_post(&f, "/slow", "a=1", 3, SHORT_TIMEOUT_MS, &slow2);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 4, WAIT_MS), 4);
    ck_assert_int_eq(slow2.status, ALIPAY_HTTP_TIMEOUT);
    ck_assert_msg(slow2.total_ms < CALL_TIMEOUT_MS, "timed out after %.1f ms", slow2.total_ms);
    rec_free(&slow);
    rec_free(&over);
    rec_free(&echo);
    rec_free(&slow2);
    free(big);
    fx_stop(&f);
}
END_TEST

START_TEST(test_keepalive_reuses_one_connection)
{
    struct fx f;
    struct rec r[20];

    memset(r, 0, sizeof(r));
    fx_start(&f, NULL);
    for (int i = 0; i < 20; i++) {
        char body[32];
        int n = snprintf(body, sizeof(body), "seq=%d", i);
        fx_post(&f, "/echo", body, (size_t)n, CALL_TIMEOUT_MS, &r[i]);
        ck_assert_int_eq(fx_run_until(&f, &f.completed, i + 1, WAIT_MS), i + 1);
        ck_assert_int_eq(r[i].status, ALIPAY_HTTP_DONE);
        ck_assert_int_eq(r[i].code, 200);
    }
    ck_assert_int_eq(f.srv.requests, 20);
    ck_assert_int_eq(f.srv.conns, 1);
    ck_assert_int_eq(f.srv.closes, 0);
    for (int i = 0; i < 20; i++)
        rec_free(&r[i]);
    fx_stop(&f);
}
END_TEST

START_TEST(test_1000_concurrent)
{
    enum { N = 1000 };
    struct fx f;
    struct rec *r = calloc(N, sizeof(*r));

    ck_assert_ptr_nonnull(r);
    fx_start(&f, NULL);
    for (int i = 0; i < N; i++) {
        char body[64];
        int n = snprintf(body, sizeof(body), "id=%d&name=会员%d", i, i);
        r[i].id = i;
        fx_post(&f, "/echo", body, (size_t)n, 30000L, &r[i]);
    }
    ck_assert_uint_eq(alipay_http_in_flight(f.h), N);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, N, 45000), N);
    ck_assert_int_eq(f.sync_callbacks, 0);
    for (int i = 0; i < N; i++) {
        char want[96];
        snprintf(want, sizeof(want), ECHO_PREFIX "id=%d&name=会员%d", i, i);
        ck_assert_int_eq(r[i].done, 1);
        ck_assert_msg(r[i].status == ALIPAY_HTTP_DONE, "call %d: status %d: %s", i, r[i].status,
                      r[i].error);
        ck_assert_int_eq(r[i].code, 200);
        ck_assert_str_eq(r[i].body, want);
        rec_free(&r[i]);
    }
    ck_assert_uint_eq(alipay_http_in_flight(f.h), 0);
    ck_assert_int_eq(f.srv.requests, N);
    /* the default max_host_connections is 64: the rest queued */
    ck_assert(!f.srv.live_overflow);
    ck_assert_int_le(f.srv.max_live, 64);
    ck_assert_int_le(f.srv.conns, 64);
    free(r);
    fx_stop(&f);
}
END_TEST

START_TEST(test_max_host_connections_option)
{
    enum { N = 40 };
    struct alipay_http_options opt = {.max_host_connections = 4};
    struct fx f;
    struct rec r[N];

    memset(r, 0, sizeof(r));
    fx_start(&f, &opt);
    for (int i = 0; i < N; i++)
        fx_post(&f, "/echo", "a=1", 3, CALL_TIMEOUT_MS, &r[i]);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, N, WAIT_MS), N);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(r[i].status, ALIPAY_HTTP_DONE);
        rec_free(&r[i]);
    }
    ck_assert_int_le(f.srv.conns, 4);
    fx_stop(&f);
}
END_TEST

/* A call queued behind a busy connection (max_host_connections reached)
 * still ends at its own timeout: curl before 8.8 does not time out calls
 * waiting for a connection, so the client bounds them itself. */
START_TEST(test_queued_call_times_out)
{
    struct alipay_http_options opt = {.max_host_connections = 1};
    struct fx f;
    struct rec busy = {0}, queued = {0};

    fx_start(&f, &opt);
    fx_post(&f, "/slow", "a=1", 3, CALL_TIMEOUT_MS, &busy);
    fx_post(&f, "/echo", "a=2", 3, SHORT_TIMEOUT_MS, &queued);
    ck_assert_int_eq(fx_run_until(&f, &queued.done, 1, WAIT_MS), 1);
    ck_assert_int_eq(queued.status, ALIPAY_HTTP_TIMEOUT);
    ck_assert_int_eq(busy.done, 0);
    ck_assert_uint_eq(alipay_http_in_flight(f.h), 1);
    rec_free(&queued);
    rec_free(&busy);
    fx_stop(&f);
}
END_TEST

/* Each link posts the next one from inside its callback. */
static void post_next(struct rec *r)
{
    char body[32];
    int n;
    if (!r->next)
        return;
    n = snprintf(body, sizeof(body), "id=%d", r->next->id);
    fx_post(r->f, "/echo", body, (size_t)n, CALL_TIMEOUT_MS, r->next);
}

START_TEST(test_post_from_callback)
{
    struct fx f;
    struct rec r[4];
    char url[128];

    memset(r, 0, sizeof(r));
    for (int i = 0; i < 4; i++) {
        r[i].id = i;
        r[i].then = post_next;
        r[i].next = i < 3 ? &r[i + 1] : NULL;
    }
    fx_start(&f, NULL);
    /* the chain starts with a failure: callbacks from that path may post too */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/gateway.do", f.srv.refused_port);
    fx_post_url(&f, url, "id=0", 4, CALL_TIMEOUT_MS, &r[0]);
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 4, WAIT_MS), 4);
    ck_assert_int_eq(f.sync_callbacks, 0);
    ck_assert_int_eq(r[0].status, ALIPAY_HTTP_CONNECT_FAILED);
    for (int i = 1; i < 4; i++) {
        char want[32];
        snprintf(want, sizeof(want), ECHO_PREFIX "id=%d", i);
        ck_assert_int_eq(r[i].done, 1);
        ck_assert_int_eq(r[i].status, ALIPAY_HTTP_DONE);
        ck_assert_str_eq(r[i].body, want);
    }
    /* in each callback, the call it posted was not yet counted */
    for (int i = 0; i < 4; i++) {
        ck_assert_uint_eq(r[i].in_flight, 0);
        rec_free(&r[i]);
    }
    fx_stop(&f);
}
END_TEST

START_TEST(test_free_with_calls_in_flight)
{
    struct fx f;
    struct rec slow[4], fresh[3];

    memset(slow, 0, sizeof(slow));
    memset(fresh, 0, sizeof(fresh));
    fx_start(&f, NULL);
    for (int i = 0; i < 4; i++)
        fx_post(&f, "/slow", "a=1", 3, CALL_TIMEOUT_MS, &slow[i]);
    /* all four are on the wire, waiting for their answers */
    ck_assert_int_eq(fx_run_until(&f, &f.srv.stalled, 4, WAIT_MS), 4);
    /* and three that have not started */
    for (int i = 0; i < 3; i++)
        fx_post(&f, "/echo", "a=1", 3, CALL_TIMEOUT_MS, &fresh[i]);
    ck_assert_uint_eq(alipay_http_in_flight(f.h), 7);

    alipay_http_free(f.h);
    f.h = NULL;
    fx_run_for(&f, 300);
    ck_assert_int_eq(f.completed, 0);
    /* leaks would show at exit (ASan build) */
    fx_stop(&f);
}
END_TEST

START_TEST(test_free_before_loop_runs)
{
    struct fx f;
    struct rec r[3];

    memset(r, 0, sizeof(r));
    fx_start(&f, NULL);
    for (int i = 0; i < 3; i++)
        fx_post(&f, "/echo", "a=1", 3, CALL_TIMEOUT_MS, &r[i]);
    alipay_http_free(f.h);
    f.h = NULL;
    fx_run_for(&f, 300);
    ck_assert_int_eq(f.completed, 0);
    ck_assert_int_eq(f.srv.requests, 0);
    fx_stop(&f);
}
END_TEST

static void free_client(struct rec *r)
{
    alipay_http_free(r->f->h);
    r->f->h = NULL;
}

START_TEST(test_free_from_callback)
{
    struct fx f;
    struct rec r[3], slow = {0};

    memset(r, 0, sizeof(r));
    fx_start(&f, NULL);
    fx_post(&f, "/slow", "a=1", 3, CALL_TIMEOUT_MS, &slow);
    for (int i = 0; i < 3; i++) {
        r[i].then = free_client;
        fx_post(&f, "/echo", "a=1", 3, CALL_TIMEOUT_MS, &r[i]);
    }
    ck_assert_int_eq(fx_run_until(&f, &f.completed, 1, WAIT_MS), 1);
    fx_run_for(&f, 300);
    /* the first callback freed the client: no other callback ran */
    ck_assert_int_eq(f.completed, 1);
    for (int i = 0; i < 3; i++)
        rec_free(&r[i]);
    fx_stop(&f);
}
END_TEST

START_TEST(test_bad_arguments)
{
    struct fx f;
    struct rec r = {0};
    char err[256];
    struct alipay_http_options opt = {.ca_file = "/nonexistent/cardgate-ca.pem"};

    fx_start(&f, NULL);
    r.f = &f;
    err[0] = '\0';
    ck_assert_int_eq(alipay_http_post(f.h, NULL, "a", 1, 1000, on_done, &r, err, sizeof(err)), -1);
    ck_assert(err[0] != '\0');
    err[0] = '\0';
    ck_assert_int_eq(
        alipay_http_post(f.h, "ftp://127.0.0.1/x", "a", 1, 1000, on_done, &r, err, sizeof(err)),
        -1);
    ck_assert(err[0] != '\0');
    err[0] = '\0';
    ck_assert_int_eq(
        alipay_http_post(f.h, "http://127.0.0.1/x", "a", 1, 0, on_done, &r, err, sizeof(err)), -1);
    ck_assert(err[0] != '\0');
    err[0] = '\0';
    ck_assert_int_eq(
        alipay_http_post(f.h, "http://127.0.0.1/x", "a", 1, 1000, NULL, &r, err, sizeof(err)), -1);
    ck_assert(err[0] != '\0');
    ck_assert_uint_eq(alipay_http_in_flight(f.h), 0);
    fx_run_for(&f, 100);
    ck_assert_int_eq(r.done, 0);

    err[0] = '\0';
    ck_assert_ptr_null(alipay_http_new(NULL, NULL, err, sizeof(err)));
    ck_assert(err[0] != '\0');
    err[0] = '\0';
    ck_assert_ptr_null(alipay_http_new(f.base, &opt, err, sizeof(err)));
    ck_assert_msg(strstr(err, "/nonexistent/cardgate-ca.pem") != NULL, "err: %s", err);
    alipay_http_free(NULL);
    fx_stop(&f);
}
END_TEST

static Suite *alipay_http_suite(void)
{
    Suite *s = suite_create("alipay_http");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_post_200_body_intact);
    tcase_add_test(tc, test_large_request_no_expect);
    tcase_add_test(tc, test_http_500_is_done);
    tcase_add_test(tc, test_slow_answer_times_out);
    tcase_add_test(tc, test_dropped_connection_fails);
    tcase_add_test(tc, test_refused_port_connect_failed);
    tcase_add_test(tc, test_malformed_url_fails_later);
    tcase_add_test(tc, test_sockets_unwatched_after_close);
    tcase_add_test(tc, test_tls_handshake_failure_connect_failed);
    tcase_add_test(tc, test_body_cap);
    tcase_add_test(tc, test_keepalive_reuses_one_connection);
    tcase_add_test(tc, test_next_call_keeps_nothing_of_the_last);
    tcase_add_test(tc, test_1000_concurrent);
    tcase_add_test(tc, test_max_host_connections_option);
    tcase_add_test(tc, test_queued_call_times_out);
    tcase_add_test(tc, test_post_from_callback);
    tcase_add_test(tc, test_free_with_calls_in_flight);
    tcase_add_test(tc, test_free_before_loop_runs);
    tcase_add_test(tc, test_free_from_callback);
    tcase_add_test(tc, test_bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* evhttp writes to connections the client may have closed */
    signal(SIGPIPE, SIG_IGN);
    port_seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    return ts_run_suite(alipay_http_suite());
}
