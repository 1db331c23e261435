/* Exactly-once under load and crashes (issue 8, "prove it under load" 1):
 * hundreds of distinct opens in flight, cardgate killed with SIGKILL three
 * times at random moments, restarted, every caller retrying whatever did not
 * get a final answer — then updates and deletes of those cards the same way.
 *
 * What must hold at the end: every out_serial_no has exactly one card at the
 * simulator (Alipay's side), one `succeeded` ledger row and one `cards` row,
 * every answer for it named the same card, nothing is left pending; every
 * update reached the simulator's card once, every delete left it deleted.
 *
 * The kill comes after a random share (10-70 %) of a round's answers, so it
 * always lands with requests in flight whatever the machine's speed; the
 * simulator holds each gateway answer 60 ms so that many are in flight at
 * the gateway when it does. The seed is printed; TS_CRASH_SEED repeats a run,
 * TS_CRASH_OPENS sets the number of cards (500 by default). */
#include <check.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support.h"

#define FAULTS 3          /* kills, or database stops, per phase */
#define GIVE_UP_MS 300000 /* the whole test; a round that never converges fails */

enum job_kind { JOB_OPEN, JOB_UPDATE, JOB_DELETE };

/* One caller's request, retried until it has a final answer. */
struct job {
    enum job_kind kind;
    char serial[40];   /* out_serial_no of the open or the update */
    char biz[40];      /* the card: learnt from the open's answer */
    int done;          /* a final answer came */
    long status;       /* the last answer's HTTP status (0: no answer) */
    struct ts_buf out; /* the last answer's body */
    CURL *easy;
    struct curl_slist *headers;
    char *body;
};

static unsigned long long rng;

static unsigned next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng >> 11);
}

static void job_body(struct job *j, int i)
{
    if (j->kind == JOB_OPEN) {
        j->body = ts_open_body(j->serial, "");
        return;
    }
    char *b = malloc(1024);
    ck_assert_ptr_nonnull(b);
    if (j->kind == JOB_UPDATE)
        snprintf(b, 1024,
                 "{\"out_serial_no\":\"%s\",\"occur_time\":\"2024-03-01 10:00:00\","
                 "\"card\":{\"point\":\"%d\"},\"changed_point\":\"%d\"}",
                 j->serial, 101 + i, i + 1);
    else
        b[0] = '\0';
    j->body = b;
}

/* Starts j's request on multi against base (http://127.0.0.1:PORT). */
static void job_start(CURLM *multi, struct job *j, const char *base)
{
    char url[160];
    free(j->out.p);
    j->out.p = NULL;
    j->out.n = 0;
    j->status = 0;
    j->easy = curl_easy_init();
    ck_assert_ptr_nonnull(j->easy);
    if (j->kind == JOB_OPEN)
        snprintf(url, sizeof url, "%s/v1/cards", base);
    else if (j->kind == JOB_UPDATE)
        snprintf(url, sizeof url, "%s/v1/cards/%s", base, j->biz);
    else
        snprintf(url, sizeof url, "%s/v1/cards/%s?out_serial_no=%s&reason_code=CANCEL", base,
                 j->biz, j->serial);
    curl_easy_setopt(j->easy, CURLOPT_URL, url);
    curl_easy_setopt(j->easy, CURLOPT_HTTPHEADER, j->headers);
    curl_easy_setopt(j->easy, CURLOPT_WRITEFUNCTION, ts_buf_write);
    curl_easy_setopt(j->easy, CURLOPT_WRITEDATA, &j->out);
    curl_easy_setopt(j->easy, CURLOPT_PRIVATE, j);
    curl_easy_setopt(j->easy, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(j->easy, CURLOPT_FORBID_REUSE, 1L);
    if (j->kind == JOB_DELETE) {
        curl_easy_setopt(j->easy, CURLOPT_CUSTOMREQUEST, "DELETE");
    } else {
        curl_easy_setopt(j->easy, CURLOPT_POSTFIELDS, j->body);
        if (j->kind == JOB_UPDATE)
            curl_easy_setopt(j->easy, CURLOPT_CUSTOMREQUEST, "PATCH");
    }
    ck_assert_int_eq(curl_multi_add_handle(multi, j->easy), CURLM_OK);
}

static char *json_string_at(const char *body, const char *key)
{
    json_object *o = body ? json_tokener_parse(body) : NULL, *v;
    char *s = NULL;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        s = strdup(json_object_get_string(v));
    json_object_put(o);
    return s;
}

static char *error_code(const char *body)
{
    json_object *o = body ? json_tokener_parse(body) : NULL, *e, *c;
    char *s = NULL;
    if (o && json_object_object_get_ex(o, "error", &e) && json_object_object_get_ex(e, "code", &c))
        s = strdup(json_object_get_string(c));
    json_object_put(o);
    return s;
}

/* Judges j's answer: final (done), or one a caller retries with the same
 * out_serial_no (no answer, 502, 503, 504 — the outcome is unknown or
 * nothing was done — and 409 in progress or busy). Anything else fails the
 * test. */
static void job_answered(struct job *j)
{
    char *code = error_code(j->out.p);
    int retry = j->status == 0 || j->status == 502 || j->status == 503 || j->status == 504 ||
                (j->status == 409 && code &&
                 (strcmp(code, "REQUEST_IN_PROGRESS") == 0 || strcmp(code, "CARD_BUSY") == 0));
    if (retry) {
        free(code);
        return;
    }
    if (j->kind == JOB_OPEN) {
        ck_assert_msg(j->status == 201, "open %s: %ld %s", j->serial, j->status,
                      j->out.p ? j->out.p : "");
        char *biz = json_string_at(j->out.p, "biz_card_no");
        ck_assert_ptr_nonnull(biz);
        /* Every answer for one out_serial_no names the same card. */
        if (j->biz[0])
            ck_assert_str_eq(biz, j->biz);
        snprintf(j->biz, sizeof j->biz, "%s", biz);
        free(biz);
    } else if (j->kind == JOB_UPDATE) {
        ck_assert_msg(j->status == 200, "update %s: %ld %s", j->serial, j->status,
                      j->out.p ? j->out.p : "");
    } else {
        /* A retried delete (same out_serial_no) is replayed, never 410. */
        ck_assert_msg(j->status == 200, "delete %s: %ld %s", j->biz, j->status,
                      j->out.p ? j->out.p : "");
    }
    free(code);
    j->done = 1;
}

/* What a round does to the system, and what it needs to do it. */
struct fault {
    enum { FAULT_KILL, FAULT_DB_DOWN } kind;
    struct ts_cardgate *cg;
    struct ts_pg *pg; /* FAULT_DB_DOWN: the private cluster stopped and started */
    const char *db;
    const struct ts_sim *sim;
    const char *const *env;
    long long give_up_at;
    long long db_down_until; /* 0: up */
    long long db_back_at;    /* when it last came back */
};

#define DB_DOWN_MS 1500
#define RECONNECT_MS 15000 /* 503 after the database is back this long: a failure */

static void fault_db_start(struct fault *f)
{
    ck_assert_int_eq(ts_pg_private_start(f->pg), 0);
    f->db_down_until = 0;
    f->db_back_at = ts_now_ms();
}

/* Judges an answer that came with the fault plan in force: 503 only while
 * the database is down or reconnecting. */
static void fault_check_answer(const struct fault *f, const struct job *j)
{
    if (j->status != 503)
        return;
    ck_assert_msg(f->db_down_until || (f->db_back_at && ts_now_ms() - f->db_back_at < RECONNECT_MS),
                  "503 with the database up: %s", j->out.p ? j->out.p : "");
}

/* One round: every job not done is sent at once; after trigger_after answers
 * (trigger_after > 0) the fault strikes — cardgate killed with SIGKILL, or
 * the database stopped for DB_DOWN_MS — and the round ends when every
 * request has failed or answered. Returns how many jobs are done. */
static int round_run(struct job *jobs, int n, struct fault *f, int trigger_after)
{
    CURLM *multi = curl_multi_init();
    ck_assert_ptr_nonnull(multi);
    int running = 0, answers = 0, struck = 0;
    for (int i = 0; i < n; i++)
        if (!jobs[i].done)
            job_start(multi, &jobs[i], f->cg->url);
    do {
        ck_assert_int_eq(curl_multi_perform(multi, &running), CURLM_OK);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct job *j;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            if (m->data.result == CURLE_OK)
                curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &j->status);
            curl_multi_remove_handle(multi, m->easy_handle);
            curl_easy_cleanup(m->easy_handle);
            j->easy = NULL;
            if (f->kind == FAULT_DB_DOWN)
                fault_check_answer(f, j);
            job_answered(j);
            answers++;
        }
        if (trigger_after > 0 && !struck && answers >= trigger_after) {
            struck = 1;
            if (f->kind == FAULT_KILL) {
                kill(f->cg->pid, SIGKILL);
                waitpid(f->cg->pid, NULL, 0);
                f->cg->pid = -1;
            } else {
                ck_assert_int_eq(ts_pg_private_stop(f->pg), 0);
                f->db_down_until = ts_now_ms() + DB_DOWN_MS;
            }
        }
        if (f->db_down_until && ts_now_ms() >= f->db_down_until)
            fault_db_start(f);
        if (running)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    } while (running);
    curl_multi_cleanup(multi);
    if (f->db_down_until) {
        long long wait = f->db_down_until - ts_now_ms();
        if (wait > 0)
            usleep((useconds_t)wait * 1000);
        fault_db_start(f);
    }
    ck_assert_msg(!trigger_after || struck, "the round ended before the fault");
    int done = 0;
    for (int i = 0; i < n; i++)
        done += jobs[i].done;
    return done;
}

/* Rounds until every job is done: FAULTS of them with the fault (and a
 * restart after each kill), then plain retries, a little apart so that
 * abandoned locks expire (the gateway timeout plus the margin: 3 s here). */
static void run_all(struct job *jobs, int n, struct fault *f)
{
    for (int k = 0; k < FAULTS; k++) {
        /* The killed holder's locks must expire first, or the next round is
         * all 409s and its kill cuts nothing off. */
        while (ts_pg_long(f->db, "SELECT count(*) FROM card_requests WHERE state = 'pending' AND "
                                 "lock_expires_at > now()") != 0) {
            ck_assert_msg(ts_now_ms() < f->give_up_at, "locks never expired");
            usleep(200 * 1000);
        }
        int left = 0;
        for (int i = 0; i < n; i++)
            left += !jobs[i].done;
        if (left == 0)
            break; /* nothing left to strike at */
        /* A kill after 10-70 % of the answers; a database stop early (after
         * up to 10 %), while most requests still need it for their claim. */
        int after = f->kind == FAULT_KILL
                        ? left / 10 + (int)(next_rand() % (unsigned)(left * 6 / 10 + 1)) + 1
                        : 1 + (int)(next_rand() % (unsigned)(left / 10 + 1));
        int done = round_run(jobs, n, f, after);
        fprintf(stderr, "crash_load: %s %d after %d answers; %d of %d done\n",
                f->kind == FAULT_KILL ? "kill" : "database stop", k + 1, after, done, n);
        if (f->kind == FAULT_KILL)
            ck_assert_msg(ts_cardgate_start(f->cg, f->db, f->sim, f->env) == 0,
                          "restart failed; see %s", f->cg->log);
    }
    int done;
    while ((done = round_run(jobs, n, f, 0)) < n) {
        ck_assert_msg(ts_now_ms() < f->give_up_at, "%d of %d requests never got a final answer",
                      n - done, n);
        usleep(500 * 1000);
    }
    /* An outcome answered while the database was down is written when it is
     * back, by cardgate alone: wait for it, no caller helps. */
    long long settled_by = ts_now_ms() + 60000;
    while (ts_pg_long(f->db, "SELECT count(*) FROM card_requests WHERE state = 'pending'") != 0) {
        ck_assert_msg(ts_now_ms() < settled_by, "requests left pending");
        usleep(200 * 1000);
    }
}

static struct job *jobs_new(int n, enum job_kind kind, const char *prefix,
                            struct curl_slist *headers)
{
    struct job *jobs = calloc((size_t)n, sizeof *jobs);
    ck_assert_ptr_nonnull(jobs);
    for (int i = 0; i < n; i++) {
        jobs[i].kind = kind;
        jobs[i].headers = headers;
        snprintf(jobs[i].serial, sizeof jobs[i].serial, "%s%05d", prefix, i);
    }
    return jobs;
}

static void jobs_free(struct job *jobs, int n)
{
    for (int i = 0; i < n; i++) {
        free(jobs[i].out.p);
        free(jobs[i].body);
    }
    free(jobs);
}

static long sql_long(const char *db, const char *sql)
{
    long v = ts_pg_long(db, sql);
    ck_assert_msg(v >= 0, "query failed: %s", sql);
    return v;
}

/* Every out_serial_no the simulator was called with is one of jobs'. */
static void sim_serials_known(const struct ts_sim *sim, const struct job *a, int na,
                              const struct job *b, int nb)
{
    char url[160];
    struct ts_http r;
    snprintf(url, sizeof url, "%s/calls", sim->control);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    json_object *o = json_tokener_parse(r.body), *serials;
    ts_http_free(&r);
    ck_assert(o && json_object_object_get_ex(o, "out_serial_no", &serials));
    json_object_object_foreach(serials, serial, count)
    {
        (void)count;
        int known = 0;
        for (int i = 0; i < na && !known; i++)
            known = strcmp(a[i].serial, serial) == 0;
        for (int i = 0; i < nb && !known; i++)
            known = strcmp(b[i].serial, serial) == 0;
        ck_assert_msg(known, "a gateway call for %s, which no caller sent", serial);
    }
    json_object_put(o);
}

/* The whole scenario under one kind of fault: opens, then updates and
 * deletes of the cards, each phase with FAULTS faults, then the checks. */
static void exercise(int kind)
{
    const char *seed_env = getenv("TS_CRASH_SEED");
    unsigned long long seed =
        seed_env ? strtoull(seed_env, NULL, 10) : (unsigned long long)time(NULL);
    rng = seed * 0x9e3779b97f4a7c15ULL | 1;
    int n = getenv("TS_CRASH_OPENS") ? atoi(getenv("TS_CRASH_OPENS")) : 500;
    ck_assert_int_ge(n, 10);
    fprintf(stderr, "crash_load: seed %llu (TS_CRASH_SEED=%llu repeats it), %d cards\n", seed, seed,
            n);
    long long give_up_at = ts_now_ms() + GIVE_UP_MS * (n > 500 ? n / 500 : 1);

    struct ts_stack st = {0};
    struct ts_pg pg = {0};
    char err[512];
    /* Enough connections for every request at once, and the defaults of
     * ts_cardgate_start otherwise (2 s gateway timeout, 1 s lock margin). */
    /* The sweeper finishes what the kills leave behind, racing the
     * callers' retries, as it would in production. */
    const char *const env[] = {"CARDGATE_DB_POOL_SIZE=8", "CARDGATE_LOG_LEVEL=warn",
                               "CARDGATE_SWEEP_INTERVAL_MS=300", NULL};
    if (kind == FAULT_KILL) {
        ck_assert_msg(ts_stack_up(&st, NULL, env, err, sizeof(err)) == 0, "%s", err);
    } else {
        /* A cluster of the test's own, to stop and start. */
        ck_assert_int_eq(ts_pg_private_start(&pg), 0);
        st.db = strdup(pg.conninfo);
        ck_assert_int_eq(ts_cardgate_migrate(st.db), 0);
        ck_assert_int_eq(ts_sim_start(&st.sim, NULL), 0);
        ck_assert_msg(ts_cardgate_start(&st.cg, st.db, &st.sim, env) == 0, "see %s", st.cg.log);
    }
    ck_assert_int_eq(ts_sim_fault(&st.sim, "{\"mode\":\"delay\",\"delay_ms\":60}"), 0);
    struct fault f = {.kind = kind,
                      .cg = &st.cg,
                      .pg = &pg,
                      .db = st.db,
                      .sim = &st.sim,
                      .env = env,
                      .give_up_at = give_up_at};

    struct curl_slist *headers = curl_slist_append(NULL, TS_AUTH);
    headers = curl_slist_append(headers, TS_JSON);
    headers = curl_slist_append(headers, "Expect:");

    /* Opens. */
    struct job *opens = jobs_new(n, JOB_OPEN, "crash-", headers);
    for (int i = 0; i < n; i++)
        job_body(&opens[i], i);
    run_all(opens, n, &f);

    /* More calls than cards: requests the kills cut off at the gateway were
     * sent again with their out_serial_no (and deduplicated there). */
    fprintf(stderr, "crash_load: %d cards opened with %ld gateway calls\n", n,
            ts_sim_calls(&st.sim, NULL));
    json_object *cards = ts_sim_cards(&st.sim);
    ck_assert_int_eq(json_object_object_length(cards), n);
    for (int i = 0; i < n; i++) {
        json_object *c, *biz;
        ck_assert_msg(json_object_object_get_ex(cards, opens[i].serial, &c),
                      "no card at the simulator for %s", opens[i].serial);
        ck_assert(json_object_object_get_ex(c, "biz_card_no", &biz));
        ck_assert_str_eq(json_object_get_string(biz), opens[i].biz);
    }
    json_object_put(cards);
    ck_assert_int_eq(sql_long(st.db, "SELECT count(*) FROM card_requests WHERE operation = 'open' "
                                     "AND state = 'succeeded'"),
                     n);
    ck_assert_int_eq(sql_long(st.db, "SELECT count(*) FROM card_requests WHERE state <> "
                                     "'succeeded'"),
                     0);
    ck_assert_int_eq(sql_long(st.db, "SELECT count(*) FROM cards"), n);
    ck_assert_int_eq(sql_long(st.db, "SELECT count(DISTINCT out_serial_no) FROM cards"), n);
    ck_assert_int_eq(sql_long(st.db, "SELECT count(*) FROM stale_requests"), 0);

    /* Updates of four cards in five, deletes of the fifth, all at once. */
    struct job *changes = jobs_new(n, JOB_UPDATE, "crash-u-", headers);
    int deletes = 0;
    for (int i = 0; i < n; i++) {
        if (i % 5 == 4) {
            changes[i].kind = JOB_DELETE;
            deletes++;
        }
        snprintf(changes[i].biz, sizeof changes[i].biz, "%s", opens[i].biz);
        job_body(&changes[i], i);
    }
    run_all(changes, n, &f);

    fprintf(stderr, "crash_load: %d updates and deletes, %ld gateway calls in all\n", n,
            ts_sim_calls(&st.sim, NULL));
    cards = ts_sim_cards(&st.sim);
    for (int i = 0; i < n; i++) {
        json_object *c, *v;
        ck_assert(json_object_object_get_ex(cards, opens[i].serial, &c));
        ck_assert(json_object_object_get_ex(c, "status", &v));
        if (changes[i].kind == JOB_DELETE) {
            ck_assert_msg(strcmp(json_object_get_string(v), "deleted") == 0, "%s not deleted",
                          opens[i].biz);
        } else {
            ck_assert_str_eq(json_object_get_string(v), "active");
            /* The update reached Alipay's card once, whatever was retried,
             * and the member was told of its points once. */
            ck_assert(json_object_object_get_ex(c, "updates", &v));
            ck_assert_msg(json_object_get_int64(v) == 1, "card %s updated %lld times", opens[i].biz,
                          (long long)json_object_get_int64(v));
            ck_assert(json_object_object_get_ex(c, "points_messages", &v));
            ck_assert_msg(json_object_get_int64(v) == 1, "card %s: %lld points messages",
                          opens[i].biz, (long long)json_object_get_int64(v));
        }
    }
    json_object_put(cards);
    ck_assert_int_eq(sql_long(st.db, "SELECT count(*) FROM card_requests WHERE state <> "
                                     "'succeeded'"),
                     0);
    ck_assert_int_eq(sql_long(st.db, "SELECT count(*) FROM cards WHERE deleted_at IS NOT NULL"),
                     deletes);
    /* Each updated card holds its own update's points (101 + its index). */
    ck_assert_int_eq(sql_long(st.db, "SELECT count(*) FROM cards c JOIN card_requests r ON "
                                     "r.out_serial_no = 'crash-u-' || substr(c.out_serial_no, 7) "
                                     "WHERE c.point = 101 + substr(c.out_serial_no, 7)::int"),
                     n - deletes);
    ck_assert_int_eq(sql_long(st.db, "SELECT count(*) FROM stale_requests"), 0);
    /* No gateway call without its ledger row: every call's out_serial_no is
     * a caller's, and every caller's request is a succeeded row. */
    sim_serials_known(&st.sim, opens, n, changes, n);

    jobs_free(opens, n);
    jobs_free(changes, n);
    curl_slist_free_all(headers);
    int status = ts_stack_down(&st);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the last cardgate did not exit cleanly (status %d)", status);
    if (kind == FAULT_DB_DOWN)
        ts_pg_private_destroy(&pg);
}

START_TEST(test_kill_under_load)
{
    exercise(FAULT_KILL);
}
END_TEST

/* The database stopped for 1.5 s under load, three times per phase: 503
 * only while it is down (or reconnecting), nothing duplicated or lost. */
START_TEST(test_database_outage_under_load)
{
    exercise(FAULT_DB_DOWN);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("crash_load");
    TCase *t = tcase_create("crash_load");
    /* Room for a slow machine, and for a long run's TS_CRASH_OPENS. */
    const char *opens = getenv("TS_CRASH_OPENS");
    int n = opens ? atoi(opens) : 500;
    tcase_set_timeout(t, 420.0 * (n > 500 ? n / 500 : 1));
    tcase_add_test(t, test_kill_under_load);
    tcase_add_test(t, test_database_outage_under_load);
    suite_add_tcase(s, t);
    return ts_run_suite(s);
}
