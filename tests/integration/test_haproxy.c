/* Several instances behind a real HAProxy (issue 8, "prove it under load" 3):
 * three cardgate instances on one database behind deploy/haproxy.cfg, run
 * outside containers the way its header says. Duplicates of one
 * out_serial_no spread across the instances make one gateway call; a
 * rolling restart (SIGTERM, one instance at a time, twice round) under
 * steady load fails no request. Without the file's retry-on, a request
 * HAProxy sends to a stopping instance (caught between its listener closing
 * and HAProxy's health check seeing it) fails with 502, in most runs. */
#include <check.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

#define HAPROXY "/usr/sbin/haproxy"
#define INSTANCES 3

static const char *const post_headers[] = {TS_AUTH, TS_JSON, NULL};

struct lb {
    struct ts_stack st; /* the database, the simulator and instance 0 */
    struct ts_cardgate cg[INSTANCES];
    pid_t haproxy;
    int port;
    char url[64]; /* http://127.0.0.1:PORT, HAProxy's */
    char dir[64];
};

static const char *const cg_env[] = {"CARDGATE_LOG_LEVEL=info", "CARDGATE_DRAIN_TIMEOUT_MS=10000",
                                     NULL};

/* The database, the simulator, three instances and HAProxy in front. */
static void lb_up(struct lb *lb)
{
    char err[512];
    ck_assert_msg(ts_stack_up(&lb->st, NULL, cg_env, err, sizeof err) == 0, "%s", err);
    lb->cg[0] = lb->st.cg;
    for (int i = 1; i < INSTANCES; i++)
        ck_assert_msg(ts_cardgate_start(&lb->cg[i], lb->st.db, &lb->st.sim, cg_env) == 0,
                      "instance %d did not start", i);

    snprintf(lb->dir, sizeof lb->dir, "/tmp/cardgate-lb.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(lb->dir));
    char local[128];
    snprintf(local, sizeof local, "%s/local.cfg", lb->dir);
    FILE *f = fopen(local, "w");
    ck_assert_ptr_nonnull(f);
    /* Checks every 300 ms here (2 s in the file's defaults), so that the
     * test does not wait long for a restarted instance to count as up. */
    fprintf(f, "backend local\n");
    for (int i = 0; i < INSTANCES; i++)
        fprintf(f, "    server cg%d 127.0.0.1:%d check inter 300ms\n", i, lb->cg[i].port);
    fclose(f);

    lb->port = ts_free_port();
    snprintf(lb->url, sizeof lb->url, "http://127.0.0.1:%d", lb->port);
    char listen[64], cfg[512], log[128];
    snprintf(listen, sizeof listen, "CARDGATE_LB_LISTEN=127.0.0.1:%d", lb->port);
    snprintf(cfg, sizeof cfg, "%s/deploy/haproxy.cfg", CARDGATE_SOURCE_DIR);
    snprintf(log, sizeof log, "%s/haproxy.log", lb->dir);
    const char *const env[] = {listen, "CARDGATE_LB_BACKEND=local", NULL};
    const char *const argv[] = {HAPROXY, "-db", "-f", cfg, "-f", local, NULL};
    lb->haproxy = ts_spawn(argv, env, log);
    ck_assert_msg(lb->haproxy > 0 && ts_wait_port(lb->port, 15000) == 0,
                  "HAProxy did not start; see %s", log);
}

static void lb_down(struct lb *lb)
{
    ts_stop(lb->haproxy, SIGTERM, 5000);
    for (int i = 1; i < INSTANCES; i++) {
        int status = ts_cardgate_stop(&lb->cg[i]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "instance %d did not exit cleanly; see %s", i, lb->cg[i].log);
    }
    lb->st.cg = lb->cg[0];
    int status = ts_stack_down(&lb->st);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "instance 0 did not exit cleanly; see %s", lb->cg[0].log);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", lb->dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* 30 POSTs of one out_serial_no at once, through HAProxy to all three
 * instances, while the gateway holds its answer: one gateway call, one
 * 201, the rest 409 REQUEST_IN_PROGRESS. */
START_TEST(test_duplicates_across_instances)
{
    struct lb lb;
    lb_up(&lb);
    ck_assert_int_eq(ts_sim_fault(&lb.st.sim, "{\"mode\":\"delay\",\"out_serial_no\":\"lb-dup\","
                                              "\"delay_ms\":1500}"),
                     0);
    enum { N = 30 };
    struct ts_http out[N];
    const char *urls[N];
    char url[128];
    snprintf(url, sizeof url, "%s/v1/cards", lb.url);
    for (int i = 0; i < N; i++)
        urls[i] = url;
    char *body = ts_open_body("lb-dup", "");
    ts_http_parallel(N, "POST", urls, post_headers, body, out);
    /* One 201 that opened the card; the rest 409 while it was in flight,
     * or (a duplicate slowed past the gateway's hold) the same card replayed. */
    int created = 0;
    char *card = NULL;
    for (int i = 0; i < N; i++) {
        if (out[i].status == 201) {
            char *replayed = ts_http_header(&out[i], "Idempotent-Replayed");
            created += !replayed;
            free(replayed);
            char *biz = ts_json_at(&out[i], "biz_card_no");
            ck_assert_ptr_nonnull(biz);
            if (card)
                ck_assert_str_eq(biz, card);
            free(card);
            card = biz;
        } else {
            ts_assert_error(&out[i], 409, "REQUEST_IN_PROGRESS", NULL);
        }
        ts_http_free(&out[i]);
    }
    free(card);
    ck_assert_int_eq(created, 1);
    ck_assert_int_eq(ts_sim_calls(&lb.st.sim, "lb-dup"), 1);
    /* They did reach more than one instance. */
    int reached = 0;
    for (int i = 0; i < INSTANCES; i++) {
        char *log = ts_read_file(lb.cg[i].log, NULL);
        reached += log && strstr(log, "lb-dup") != NULL;
        free(log);
    }
    ck_assert_int_ge(reached, 2);
    free(body);
    lb_down(&lb);
}
END_TEST

/* Steady load from client threads, each sending distinct opens one after
 * another through HAProxy, until told to stop. */
struct load {
    const char *url;
    atomic_int stop;
    atomic_int sent, failed;
    pthread_mutex_t lock;
    char first_failure[512];
};

struct load_client {
    struct load *load;
    int id;
};

static void *load_client(void *arg)
{
    struct load_client *c = arg;
    struct load *l = c->load;
    char url[128], serial[40];
    snprintf(url, sizeof url, "%s/v1/cards", l->url);
    for (int i = 0; !atomic_load(&l->stop); i++) {
        snprintf(serial, sizeof serial, "roll-%d-%d", c->id, i);
        char *body = ts_open_body(serial, "");
        struct ts_http r;
        ts_http_call("POST", url, post_headers, body, &r);
        atomic_fetch_add(&l->sent, 1);
        if (r.status != 201) {
            atomic_fetch_add(&l->failed, 1);
            pthread_mutex_lock(&l->lock);
            if (!l->first_failure[0])
                snprintf(l->first_failure, sizeof l->first_failure, "%s: %ld %s", serial, r.status,
                         r.body ? r.body : "(no answer)");
            pthread_mutex_unlock(&l->lock);
        }
        ts_http_free(&r);
        free(body);
    }
    return NULL;
}

/* The number of requests the load has sent, once it has sent `more` more. */
static void load_wait(struct load *l, int more)
{
    int target = atomic_load(&l->sent) + more;
    for (int i = 0; i < 3000 && atomic_load(&l->sent) < target; i++)
        usleep(10 * 1000);
    ck_assert_msg(atomic_load(&l->sent) >= target, "the load stalled");
}

START_TEST(test_rolling_restart_under_load)
{
    struct lb lb;
    lb_up(&lb);
    enum { CLIENTS = 6 };
    struct load l = {.url = lb.url};
    pthread_mutex_init(&l.lock, NULL);
    pthread_t th[CLIENTS];
    struct load_client clients[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        clients[i] = (struct load_client){&l, i};
        pthread_create(&th[i], NULL, load_client, &clients[i]);
    }
    load_wait(&l, 50);
    /* Two rounds: each instance drains twice while the others serve. */
    for (int k = 0; k < 2 * INSTANCES; k++) {
        int i = k % INSTANCES;
        int port = lb.cg[i].port;
        int status = ts_cardgate_stop(&lb.cg[i]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "instance %d did not drain cleanly; see %s", i, lb.cg[i].log);
        load_wait(&l, 30); /* served by the other two alone */
        int started = -1;
        for (int attempt = 0; attempt < 5 && started != 0; attempt++)
            started = ts_cardgate_start_port(&lb.cg[i], port, lb.st.db, &lb.st.sim, cg_env);
        ck_assert_msg(started == 0, "instance %d did not restart on port %d; see %s", i, port,
                      lb.cg[i].log);
        /* Counted up again by HAProxy (2 checks 300 ms apart) before the
         * next one stops. */
        usleep(1500 * 1000);
        load_wait(&l, 30);
    }
    atomic_store(&l.stop, 1);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(th[i], NULL);
    int sent = atomic_load(&l.sent);
    fprintf(stderr, "haproxy: %d opens during the rolling restart, %d failed\n", sent,
            atomic_load(&l.failed));
    ck_assert_msg(atomic_load(&l.failed) == 0, "%d of %d requests failed; the first: %s",
                  atomic_load(&l.failed), sent, l.first_failure);
    /* Each one a card, once. */
    ck_assert_int_eq(ts_pg_long(lb.st.db, "SELECT count(*) FROM cards"), sent);
    ck_assert_int_eq(ts_pg_long(lb.st.db, "SELECT count(*) FROM card_requests WHERE state = "
                                          "'succeeded'"),
                     sent);
    ck_assert_int_eq(ts_sim_calls(&lb.st.sim, NULL), sent);
    pthread_mutex_destroy(&l.lock);
    lb_down(&lb);
}
END_TEST

/* A header trickled one byte every 200 ms is never cut by cardgate itself
 * (evhttp's timeout is per read): in front of it, HAProxy's `timeout
 * http-request 10s` (deploy/haproxy.cfg) cuts the whole header at 10 s,
 * whatever the pace, with 408 — and the instances never see it. */
START_TEST(test_trickled_header_cut)
{
    struct lb lb;
    lb_up(&lb);
    int fd = ts_connect(lb.port);
    const char *head = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    ck_assert_uint_eq(ts_send_some(fd, head, strlen(head)), strlen(head));
    long long start = ts_now_ms();
    int status = -1;
    while (status < 0 && ts_now_ms() - start < 20000) {
        if (ts_send_some(fd, "a", 1) != 1)
            break; /* closed: the status is waiting */
        status = ts_read_status(fd, 200);
    }
    if (status < 0)
        status = ts_read_status(fd, 2000);
    long long took = ts_now_ms() - start;
    close(fd);
    fprintf(stderr, "haproxy: trickled header answered %d after %lld ms\n", status, took);
    ck_assert_msg(status == 408 || status == 0, "trickled header: %d after %lld ms", status, took);
    ck_assert_msg(took >= 9000 && took < 14000, "cut after %lld ms, not at 10 s", took);
    lb_down(&lb);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("haproxy");
    TCase *t = tcase_create("haproxy");
    tcase_set_timeout(t, 240);
    tcase_add_test(t, test_duplicates_across_instances);
    tcase_add_test(t, test_rolling_restart_under_load);
    tcase_add_test(t, test_trickled_header_cut);
    suite_add_tcase(s, t);
    return ts_run_suite(s);
}
