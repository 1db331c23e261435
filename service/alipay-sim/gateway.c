/* gateway: the simulated gateway endpoint on the wire. See gateway.h. */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>

/* A gateway call whose answer waits for its fault's delay. It owns the
 * decoded parameters; the request itself stays libevent's. */
struct sim_pending {
    struct sim_pending *prev, *next;
    struct sim *s;
    struct evhttp_request *req;
    struct event *timer;
    struct alipay_params params;
    struct sim_call_info info;
    enum sim_fault_mode mode;
    struct timespec start;
};

static double ms_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 +
           (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

/* Adds the pairs of an application/x-www-form-urlencoded text to p. The
 * values come back decoded by libevent, '+' as a space (it always decodes
 * '+' in query values); the keys come back raw, so they are decoded here.
 * Returns 0, or -1 when the text is malformed or memory runs out. */
static int parse_form(const char *text, struct alipay_params *p)
{
    struct evkeyvalq kv;
    if (evhttp_parse_query_str(text, &kv) < 0)
        return -1;
    int rc = 0;
    for (struct evkeyval *e = kv.tqh_first; e && rc == 0; e = e->next.tqe_next) {
        char *key = evhttp_uridecode(e->key, 1, NULL);
        if (!key || alipay_params_set(p, key, e->value) < 0)
            rc = -1;
        free(key);
    }
    evhttp_clear_headers(&kv);
    return rc;
}

static int is_form(struct evhttp_request *req)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    static const char form[] = "application/x-www-form-urlencoded";
    return ct && strncasecmp(ct, form, sizeof(form) - 1) == 0;
}

/* The URL query's parameters, then the form body's (the body wins when a
 * key is in both). Returns 0 or -1. */
static int read_params(struct evhttp_request *req, struct alipay_params *p)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    if (query && parse_form(query, p) < 0)
        return -1;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0 || !is_form(req))
        return 0;
    char *body = malloc(len + 1);
    if (!body)
        return -1;
    evbuffer_copyout(in, body, len);
    body[len] = '\0';
    int rc = parse_form(body, p);
    free(body);
    return rc;
}

static const char *req_path(struct evhttp_request *req)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    return path ? path : "-";
}

static void log_call(const char *path, const struct sim_call_info *ci, enum sim_fault_mode mode,
                     int status, const char *code, const char *sub_code,
                     const struct timespec *start)
{
    fprintf(stderr,
            "alipay-sim: %s method=%s out_serial_no=%s fault=%s -> http=%d code=%s "
            "sub_code=%s %.1fms\n",
            path, ci->method ? ci->method : "-", ci->out_serial_no ? ci->out_serial_no : "-",
            sim_fault_mode_name(mode), status, code && *code ? code : "-",
            sub_code && *sub_code ? sub_code : "-", ms_since(start));
}

static void send_text(struct evhttp_request *req, int status, const char *reason,
                      const char *content_type, const char *body)
{
    struct evbuffer *buf = evbuffer_new();
    if (buf)
        evbuffer_add(buf, body, strlen(body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
    evhttp_send_reply(req, status, reason, buf);
    if (buf)
        evbuffer_free(buf);
}

/* Closes the connection without an answer. The socket is shut down first,
 * so the reply libevent is then asked to send cannot reach the client; the
 * failed write makes libevent free the connection and the request. */
static void drop(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon) {
        evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
        if (fd >= 0)
            shutdown(fd, SHUT_RDWR);
    }
    evhttp_send_reply(req, 500, "Dropped", NULL);
}

/* Does the call's work now and sends its answer, shaped by mode. */
static void answer(struct sim *s, struct evhttp_request *req, const struct alipay_params *p,
                   const struct sim_call_info *ci, enum sim_fault_mode mode,
                   const struct timespec *start)
{
    struct sim_node node;
    int rc;
    /* Copied: sending may free a request whose client went away. */
    char path[128];
    snprintf(path, sizeof(path), "%s", req_path(req));
    switch (mode) {
    case SIM_FAULT_HTTP_500:
        send_text(req, 500, "Internal Server Error", "text/plain; charset=utf-8",
                  "simulated gateway failure (alipay-sim fault http_500)\n");
        log_call(path, ci, mode, 500, NULL, NULL, start);
        return;
    case SIM_FAULT_DROP:
        log_call(path, ci, mode, 0, NULL, NULL, start);
        drop(req);
        return;
    case SIM_FAULT_CODE_20000:
    case SIM_FAULT_CODE_20001:
    case SIM_FAULT_SYSTEM_ERROR:
    case SIM_FAULT_ERROR_RESPONSE:
        /* A refusal changes nothing: the card is not opened. */
        rc = sim_fault_node(s, p, mode, &node);
        break;
    default:
        rc = sim_handle(s, p, &node);
        break;
    }
    char *body = rc == 0 ? sim_render(s, &node, mode) : NULL;
    if (!body) {
        send_text(req, 500, "Internal Server Error", "text/plain; charset=utf-8",
                  "alipay-sim: out of memory\n");
        log_call(path, ci, mode, 500, NULL, NULL, start);
    } else {
        send_text(req, 200, "OK", "application/json;charset=utf-8", body);
        log_call(path, ci, mode, 200, node.code, node.sub_code, start);
    }
    free(body);
    if (rc == 0)
        sim_node_free(&node);
}

static void pending_unlink(struct sim *s, struct sim_pending *pd)
{
    if (pd->prev)
        pd->prev->next = pd->next;
    else
        s->pending = pd->next;
    if (pd->next)
        pd->next->prev = pd->prev;
}

static void pending_free(struct sim_pending *pd)
{
    if (pd->timer)
        event_free(pd->timer);
    alipay_params_free(&pd->params);
    sim_call_info_free(&pd->info);
    free(pd);
}

/* The delay is over: answer. If the client went away meanwhile, libevent
 * has detached the request from its connection and evhttp_send_reply only
 * frees it; the work is done all the same, and only now is the call no
 * longer in flight. */
static void pending_fire(evutil_socket_t fd, short what, void *arg)
{
    struct sim_pending *pd = arg;
    struct sim *s = pd->s;
    pending_unlink(s, pd);
    answer(s, pd->req, &pd->params, &pd->info, pd->mode, &pd->start);
    sim_in_flight_leave(s, &pd->info);
    pending_free(pd);
}

/* Takes over *p and *ci (leaving them empty) and schedules the answer. */
static int delay_answer(struct sim *s, struct evhttp_request *req, struct alipay_params *p,
                        struct sim_call_info *ci, enum sim_fault_mode mode, long delay_ms,
                        const struct timespec *start)
{
    struct sim_pending *pd = calloc(1, sizeof(*pd));
    if (!pd)
        return -1;
    pd->timer = evtimer_new(s->base, pending_fire, pd);
    if (!pd->timer) {
        free(pd);
        return -1;
    }
    struct timeval tv = {.tv_sec = delay_ms / 1000, .tv_usec = (delay_ms % 1000) * 1000};
    if (evtimer_add(pd->timer, &tv) < 0) {
        event_free(pd->timer);
        free(pd);
        return -1;
    }
    pd->s = s;
    pd->req = req;
    pd->params = *p;
    pd->info = *ci;
    pd->mode = mode;
    pd->start = *start;
    alipay_params_init(p);
    memset(ci, 0, sizeof(*ci));
    pd->next = s->pending;
    if (s->pending)
        s->pending->prev = pd;
    s->pending = pd;
    return 0;
}

void gateway_handle(struct sim *s, struct evhttp_request *req)
{
    struct timespec start;
    struct alipay_params p;
    struct sim_call_info ci;
    enum sim_fault_mode mode;
    long delay_ms;

    clock_gettime(CLOCK_MONOTONIC, &start);
    alipay_params_init(&p);
    int bad = read_params(req, &p);
    sim_call_info_get(s, &p, &ci);
    sim_count_call(s, &ci); /* on arrival, whatever happens next */
    sim_in_flight_enter(s, &ci);
    if (bad < 0) {
        log_call(req_path(req), &ci, SIM_FAULT_NONE, 400, NULL, NULL, &start);
        send_text(req, 400, "Bad Request", "text/plain; charset=utf-8",
                  "alipay-sim: malformed URL query or form body\n");
    } else {
        sim_fault_take(s, ci.method, ci.out_serial_no, &mode, &delay_ms);
        if (delay_ms <= 0 || delay_answer(s, req, &p, &ci, mode, delay_ms, &start) < 0)
            answer(s, req, &p, &ci, mode, &start);
    }
    /* Answered (or dropped) by now, unless delay_answer took ci over: then
     * ci is empty and this does nothing. */
    sim_in_flight_leave(s, &ci);
    alipay_params_free(&p);
    sim_call_info_free(&ci);
}

void gateway_shutdown(struct sim *s)
{
    size_t n = 0;
    for (struct sim_pending *pd = s->pending; pd; pd = pd->next)
        n++;
    if (n > 0)
        fprintf(stderr, "alipay-sim: answering %zu delayed calls with 503\n", n);
    while (s->pending) {
        struct sim_pending *pd = s->pending;
        pending_unlink(s, pd);
        send_text(pd->req, 503, "Service Unavailable", "text/plain; charset=utf-8",
                  "alipay-sim: shutting down\n");
        sim_in_flight_leave(s, &pd->info);
        pending_free(pd);
    }
}
