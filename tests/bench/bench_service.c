/* bench_service: how fast the real cardgate serves its API, as ratios.
 *
 * Starts a PostgreSQL database (in the cluster $CARDGATE_TEST_PG names, or in
 * a private cluster of its own), alipay-sim and cardgate (CARDGATE_WORKERS=2),
 * then drives cardgate's HTTP API with a libcurl multi load generator
 * (--window requests in flight on keep-alive connections) in three phases:
 *
 *   opens    POST /v1/cards with --opens distinct out_serial_no: the ledger
 *            write, a signed card.open to the simulator, its verified answer,
 *            the card stored;
 *   replays  the same POSTs again: the stored outcomes, from the database
 *            alone (no gateway call, no RSA);
 *   queries  GET /v1/cards/{biz_card_no} of every card opened: a signed
 *            card.query, no database write.
 *
 * An open costs two RSA signatures (cardgate signs the request, the
 * simulator signs its answer) and two verifications, all on the same cores,
 * so opens/s is compared with half the raw signing rate of one thread. The
 * CPU time each process spends per request (from /proc) shows where the time
 * goes.
 *
 * Absolute rates depend on the machine; the ratios are the results. Not a
 * test (ctest does not run it); see tests/bench/README.md. Exit status: 0,
 * 1 when --check is given and a target is missed, 2 on a usage or setup
 * error (a process does not start, a request fails), 128+signal when
 * interrupted (after stopping everything it started). */
#include <curl/curl.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "alipay_key.h"
#include "alipay_sign.h"
#include "support.h"

#define TEMPLATE "20170308000000000058101000300045" /* the seeds' template */
#define USER "2088302463082075"                     /* the seeds' user */

/* --check targets (why these values: tests/bench/README.md). "raw" is one
 * RSA-2048 signature plus one verification, measured in the same run. */
#define TARGET_REPLAY_SPEEDUP 2.0 /* replays/s vs opens/s */
#define TARGET_OPEN_RATIO 0.3     /* opens/s vs (raw signing rate / 2) */
#define TARGET_CG_OPEN 1.3        /* cardgate's CPU per open, in raws */
#define TARGET_CG_QUERY 1.2       /* ... per query */
#define TARGET_CG_UPDATE 1.3      /* ... per update */
#define TARGET_PG_OPEN 0.5        /* PostgreSQL's CPU per open, in raws */
#define TARGET_CG_DB_ONLY 0.05    /* cardgate's CPU per replay or lookup (1/20 raw) */
#define TARGET_P99_P50 2.0        /* p99 latency vs p50, every phase */
#define TARGET_RSS_MIB 64.0       /* cardgate's RSS with --memory-conns in flight */

#define MAX_PG_BACKENDS 64
#define CARD_NO_SIZE 40 /* biz_card_no is at most 32 characters */

struct options {
    int check;
    int opens;          /* cards opened (and replayed, queried, updated, looked up) */
    int window;         /* requests in flight at once */
    double min_seconds; /* each signing measurement runs at least this long */
    int memory_conns;   /* opens in flight at once against a slow gateway (0: none) */
    int cert, aes;      /* Alipay's certificate mode, content encryption */
};

/* Set by the first SIGINT/SIGTERM: the phases stop and main stops every
 * process it started. A second signal kills them by pid and exits at once.
 * (ts_spawn puts the children in their own process groups and pg_ctl
 * detaches the postmaster, so a terminal's Ctrl-C reaches none of them.) */
static volatile sig_atomic_t interrupted;
static volatile pid_t child_pid[3]; /* the simulator, cardgate, our postmaster */

static void on_signal(int sig)
{
    if (!interrupted) {
        interrupted = sig;
        return;
    }
    if (child_pid[0] > 0)
        kill(child_pid[0], SIGKILL);
    if (child_pid[1] > 0)
        kill(child_pid[1], SIGKILL);
    if (child_pid[2] > 0)
        kill(child_pid[2], SIGQUIT); /* PostgreSQL's immediate shutdown */
    _exit(128 + sig);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------- signing */

/* What the signing measurement signs with: the app key, parsed once, and
 * the SDK vector's card.open string to sign. */
struct signer {
    EVP_PKEY *key, *pub; /* the app's key pair */
    char *data;
    size_t len;
    char *sig; /* data signed with key, base64 (what a verification checks) */
};

/* Seconds per alipay_sign_data call (verify: per alipay_sign_verify) over a
 * run of at least min_seconds on this thread; -1 on failure or interrupt. */
/* One signature (verify: one verification of the vector's signature);
 * 1, or 0 after saying on stderr what failed. */
static int one_op(const struct signer *s, int verify)
{
    char err[256];
    if (verify) {
        if (alipay_sign_verify(s->pub, ALIPAY_SIGN_RSA2, s->data, s->len, s->sig))
            return 1;
        fprintf(stderr, "bench: the vector's signature does not verify\n");
        return 0;
    }
    char *sig = alipay_sign_data(s->key, ALIPAY_SIGN_RSA2, s->data, s->len, err, sizeof(err));
    if (!sig) {
        fprintf(stderr, "bench: sign: %s\n", err);
        return 0;
    }
    free(sig);
    return 1;
}

static double sign_batch(const struct signer *s, int verify, double min_seconds)
{
    long n = 0;
    double start = now_s(), elapsed = 0;
    while (elapsed < min_seconds) {
        if (interrupted)
            return -1;
        for (int i = 0; i < 20; i++)
            if (!one_op(s, verify))
                return -1;
        n += 20;
        elapsed = now_s() - start;
    }
    return elapsed / (double)n;
}

/* The best of `rounds` batches after a warm-up (OpenSSL's first fetches):
 * the minimum is the figure least disturbed by other load. -1 on failure. */
static double sign_seconds(const struct signer *s, int verify, int rounds, double min_seconds)
{
    double best = 0;
    if (sign_batch(s, verify, 0.05) < 0)
        return -1;
    for (int r = 0; r < rounds; r++) {
        double t = sign_batch(s, verify, min_seconds);
        if (t < 0)
            return -1;
        if (best == 0 || t < best)
            best = t;
    }
    return best;
}

/* CPU seconds this thread has used. */
static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One thread of the loaded measurement: CPU seconds per operation. */
struct loaded {
    const struct signer *s;
    int verify;
    double min_seconds, per_op;
    pthread_t t;
};

static void *loaded_run(void *arg)
{
    struct loaded *l = arg;
    double cpu0 = thread_cpu_s(), wall0 = now_s();
    long n = 0;
    while (now_s() - wall0 < l->min_seconds && !interrupted)
        n += one_op(l->s, l->verify);
    l->per_op = n ? (thread_cpu_s() - cpu0) / (double)n : -1;
    return NULL;
}

/* The CPU one signature (verify: one verification) costs while every core
 * does the same: what it costs inside a busy service, where the cores share
 * caches and the host's attention. The mean over the threads, the best of
 * `rounds`; -1 on failure. */
static double loaded_seconds(const struct signer *s, int verify, int threads, int rounds,
                             double min_seconds)
{
    double best = -1;
    struct loaded l[64];
    threads = threads > 64 ? 64 : threads;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < threads; i++) {
            l[i] = (struct loaded){s, verify, min_seconds, 0, 0};
            pthread_create(&l[i].t, NULL, loaded_run, &l[i]);
        }
        double sum = 0;
        for (int i = 0; i < threads; i++) {
            pthread_join(l[i].t, NULL);
            sum = sum < 0 || l[i].per_op < 0 ? -1 : sum + l[i].per_op;
        }
        if (sum < 0)
            return -1;
        if (best < 0 || sum / threads < best)
            best = sum / threads;
    }
    return best;
}

/* ------------------------------------------------------ CPU accounting */

/* CPU seconds (user + system, all threads) process pid has used, from
 * /proc/<pid>/stat; -1 when it cannot be read. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and parentheses: count the
     * fields from the last ')'. utime and stime are fields 14 and 15. */
    const char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Is pid a postgres process on this machine? (A cluster on another host
 * reports pids that mean nothing here.) */
static int proc_is_postgres(pid_t pid)
{
    char path[64], comm[32] = "";
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int ok = fgets(comm, sizeof(comm), f) != NULL && strncmp(comm, "postgres", 8) == 0;
    fclose(f);
    return ok;
}

/* CPU seconds every process on the machine has used, all cores together
 * (the "cpu" line of /proc/stat without idle and iowait); -1 when unreadable. */
static double machine_busy_s(void)
{
    unsigned long long v[8];
    FILE *f = fopen("/proc/stat", "r");
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                       &v[4], &v[5], &v[6], &v[7])
              : 0;
    if (f)
        fclose(f);
    if (n != 8)
        return -1;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

/* What is measured around a phase. */
struct watched {
    pid_t cardgate, sim;
    PGconn *stats; /* to the benchmark's database: lists its backends */
};

/* CPU counters at one moment. pg_n is -1 when the backends' CPU cannot be
 * read (a cluster on another host). */
struct snap {
    double wall, self, cardgate, sim, machine;
    int pg_n;
    pid_t pg_pid[MAX_PG_BACKENDS];
    double pg_cpu[MAX_PG_BACKENDS];
};

/* Records the CPU time of the backends serving the benchmark's database
 * (cardgate's pool), our own stats connection left out. */
static void snap_pg(const struct watched *w, struct snap *s)
{
    s->pg_n = -1;
    PGresult *res = PQexec(w->stats, "SELECT pid FROM pg_stat_activity "
                                     "WHERE datname = current_database() "
                                     "AND pid <> pg_backend_pid()");
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        s->pg_n = 0;
        for (int i = 0; i < PQntuples(res) && s->pg_n < MAX_PG_BACKENDS; i++) {
            pid_t pid = (pid_t)atoi(PQgetvalue(res, i, 0));
            double cpu = proc_is_postgres(pid) ? proc_cpu_s(pid) : -1;
            if (cpu < 0) {
                s->pg_n = -1;
                break;
            }
            s->pg_pid[s->pg_n] = pid;
            s->pg_cpu[s->pg_n++] = cpu;
        }
    }
    PQclear(res);
}

static void snap_take(const struct watched *w, struct snap *s)
{
    snap_pg(w, s);
    s->wall = now_s();
    s->self = self_cpu_s();
    s->cardgate = proc_cpu_s(w->cardgate);
    s->sim = proc_cpu_s(w->sim);
    s->machine = machine_busy_s();
}

/* CPU seconds each party used during a phase; -1 where unknown. */
struct usage {
    double wall, bench, cardgate, sim, pg, machine;
};

static double delta(double before, double after)
{
    return before < 0 || after < 0 ? -1 : after - before;
}

static void usage_between(const struct snap *a, const struct snap *b, struct usage *u)
{
    u->wall = b->wall - a->wall;
    u->bench = b->self - a->self;
    u->cardgate = delta(a->cardgate, b->cardgate);
    u->sim = delta(a->sim, b->sim);
    u->machine = delta(a->machine, b->machine);
    u->pg = a->pg_n < 0 || b->pg_n < 0 ? -1 : 0;
    for (int i = 0; u->pg >= 0 && i < b->pg_n; i++) {
        double before = 0; /* a backend that connected during the phase */
        for (int j = 0; j < a->pg_n; j++)
            if (a->pg_pid[j] == b->pg_pid[i])
                before = a->pg_cpu[j];
        u->pg += b->pg_cpu[i] - before;
    }
}

/* ------------------------------------------------------ load generator */

enum kind { OPEN, REPLAY, QUERY, UPDATE, LOOKUP };

static const char *kind_name(enum kind k)
{
    static const char *const names[] = {"open", "replay", "query", "update", "lookup"};
    return names[k];
}

struct load;

/* One request slot: an easy handle reused request after request, so the
 * multi handle's connection cache keeps its connection open (keep-alive). */
struct slot {
    struct load *load;
    CURL *easy;
    struct ts_buf body; /* the answer's body, NUL-terminated */
    int index;          /* which card the request is about */
    int active;         /* added to the multi handle */
    double started;     /* when the request was started (now_s) */
};

/* The load generator: `window` slots on one curl multi handle, and the
 * phase being run. Owns the handles, the slots and their buffers. */
struct load {
    CURLM *multi;
    const char *base_url; /* cardgate's, borrowed */
    struct curl_slist *headers;
    struct slot *slots;
    int window;
    long connects; /* new connections curl made, over every phase */

    enum kind kind;
    char prefix;                 /* serial numbers are bench-<prefix><index> */
    char (*cards)[CARD_NO_SIZE]; /* biz_card_no by index: opens write, others read */
    int total, started, done, failed;
    char first_error[300];
    double *latency; /* seconds, by request index (NULL: not kept) */
    pid_t watch_rss; /* a process whose peak RSS is sampled (0: none) */
    long peak_rss_kib;
};

static void load_free(struct load *l)
{
    for (int i = 0; l->slots && i < l->window; i++) {
        if (l->slots[i].active)
            curl_multi_remove_handle(l->multi, l->slots[i].easy);
        curl_easy_cleanup(l->slots[i].easy);
        free(l->slots[i].body.p);
    }
    free(l->slots);
    curl_slist_free_all(l->headers);
    if (l->multi)
        curl_multi_cleanup(l->multi);
    memset(l, 0, sizeof(*l));
}

/* Sets up the generator against base_url; 0, or -1 (then load_free). */
static int load_init(struct load *l, const char *base_url, int window)
{
    memset(l, 0, sizeof(*l));
    l->base_url = base_url;
    l->window = window;
    l->multi = curl_multi_init();
    l->slots = calloc((size_t)window, sizeof(*l->slots));
    l->headers = curl_slist_append(NULL, TS_AUTH);
    l->headers = curl_slist_append(l->headers, TS_JSON);
    l->headers = curl_slist_append(l->headers, "Expect:");
    if (!l->multi || !l->slots || !l->headers)
        return -1;
    /* One connection per slot, all kept between requests. */
    curl_multi_setopt(l->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)window);
    curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, (long)window);
    for (int i = 0; i < window; i++) {
        struct slot *s = &l->slots[i];
        s->load = l;
        s->easy = curl_easy_init();
        if (!s->easy)
            return -1;
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, l->headers);
        curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, ts_buf_write);
        curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, &s->body);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
        curl_easy_setopt(s->easy, CURLOPT_TIMEOUT, 60L);
        curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    }
    return 0;
}

/* A valid POST /v1/cards body (spec/api.md §2) for serial, with a Chinese
 * front_text_list as real requests have; malloc'd, caller frees. */
static char *open_body(const char *serial)
{
    static const char fmt[] =
        "{\"out_serial_no\":\"%s\",\"card_template_id\":\"" TEMPLATE "\","
        "\"user_id\":\"" USER "\",\"card\":{\"external_card_no\":\"EXT-%s\","
        "\"open_date\":\"2024-02-20 21:20:46\",\"valid_date\":\"2030-02-20 21:20:46\","
        "\"level\":\"VIP1\",\"point\":\"88\",\"balance\":\"124.89\","
        "\"front_text_list\":[{\"label\":\"专业\",\"value\":\"金融贸易\"}]},"
        "\"open_card_channel\":\"20161534000000000008863\"}";
    size_t n = sizeof(fmt) + 2 * strlen(serial);
    char *b = malloc(n);
    if (b)
        snprintf(b, n, fmt, serial, serial);
    return b;
}

/* Records a failed request; no more are started, so the phase ends once
 * the requests in flight are back. */
static void load_fail(struct load *l, int index, const char *why)
{
    if (l->failed++ == 0)
        snprintf(l->first_error, sizeof(l->first_error), "%s #%d: %s", kind_name(l->kind), index,
                 why);
    l->total = l->started;
}

/* Starts the next request of the phase on slot s. */
static void slot_start(struct slot *s)
{
    struct load *l = s->load;
    char url[256], serial[64];
    s->index = l->started++;
    s->body.n = 0;
    if (s->body.p)
        s->body.p[0] = '\0';
    s->started = now_s();
    if (l->kind == QUERY || l->kind == LOOKUP) {
        if (l->kind == QUERY)
            snprintf(url, sizeof(url), "%s/v1/cards/%s", l->base_url, l->cards[s->index]);
        else
            snprintf(url, sizeof(url), "%s/v1/cards?out_serial_no=bench-%c%06d", l->base_url,
                     l->prefix, s->index);
        curl_easy_setopt(s->easy, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, NULL);
    } else if (l->kind == UPDATE) {
        char body[256];
        snprintf(url, sizeof(url), "%s/v1/cards/%s", l->base_url, l->cards[s->index]);
        snprintf(body, sizeof(body),
                 "{\"out_serial_no\":\"bench-u%c%06d\",\"occur_time\":\"2024-03-01 10:00:00\","
                 "\"card\":{\"point\":\"99\",\"level\":\"VIP2\"},\"changed_point\":\"11\"}",
                 l->prefix, s->index);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        curl_easy_setopt(s->easy, CURLOPT_COPYPOSTFIELDS, body);
        curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, "PATCH");
    } else {
        curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, NULL);
        snprintf(url, sizeof(url), "%s/v1/cards", l->base_url);
        snprintf(serial, sizeof(serial), "bench-%c%06d", l->prefix, s->index);
        char *body = open_body(serial);
        if (!body) {
            l->done++;
            load_fail(l, s->index, "no memory");
            return;
        }
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        curl_easy_setopt(s->easy, CURLOPT_COPYPOSTFIELDS, body);
        free(body);
    }
    curl_easy_setopt(s->easy, CURLOPT_URL, url);
    if (curl_multi_add_handle(l->multi, s->easy) != CURLM_OK) {
        l->done++;
        load_fail(l, s->index, "curl_multi_add_handle failed");
        return;
    }
    s->active = 1;
}

/* Checks an answer against the contract (spec/api.md §2): an open is a 201
 * that was not replayed, a replay a 201 with Idempotent-Replayed: true and
 * the same card, a query a 200 about the card asked for. An open's card
 * number is kept for the later phases. Fills why on a mismatch. */
static void check_answer(struct load *l, struct slot *s, long status, char *why, size_t n)
{
    long want = l->kind == OPEN || l->kind == REPLAY ? 201 : 200;
    if (l->kind == LOOKUP) { /* {"cards":[the card]} */
        const char *text = s->body.p ? s->body.p : "";
        if (status != 200 || !strstr(text, l->cards[s->index]))
            snprintf(why, n, "HTTP %ld, expected 200 with %s: %.150s", status, l->cards[s->index],
                     text);
        return;
    }
    struct curl_header *h = NULL;
    int replayed =
        curl_easy_header(s->easy, "Idempotent-Replayed", 0, CURLH_HEADER, -1, &h) == CURLHE_OK &&
        strcmp(h->value, "true") == 0;
    const char *text = s->body.p ? s->body.p : "";
    json_object *o = status == want ? json_tokener_parse(text) : NULL, *v = NULL;
    const char *card = o && json_object_object_get_ex(o, "biz_card_no", &v) &&
                               json_object_is_type(v, json_type_string)
                           ? json_object_get_string(v)
                           : NULL;
    char *mine = l->cards[s->index];
    if (status != want)
        snprintf(why, n, "HTTP %ld, expected %ld: %.150s", status, want, text);
    else if (!card || !*card || strlen(card) >= CARD_NO_SIZE)
        snprintf(why, n, "no biz_card_no in %.150s", text);
    else if (replayed != (l->kind == REPLAY))
        snprintf(why, n, replayed ? "Idempotent-Replayed on a first open" : "not replayed");
    else if (l->kind == OPEN)
        snprintf(mine, CARD_NO_SIZE, "%s", card);
    else if (strcmp(card, mine) != 0)
        snprintf(why, n, "card %s, expected %s", card, mine);
    json_object_put(o);
}

static void slot_finish(struct slot *s, CURLcode rc)
{
    struct load *l = s->load;
    char why[256] = "";
    long status = 0, connects = 0;
    curl_multi_remove_handle(l->multi, s->easy);
    s->active = 0;
    l->done++;
    curl_easy_getinfo(s->easy, CURLINFO_NUM_CONNECTS, &connects);
    l->connects += connects;
    if (rc != CURLE_OK) {
        snprintf(why, sizeof(why), "%s", curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
        check_answer(l, s, status, why, sizeof(why));
    }
    if (why[0])
        load_fail(l, s->index, why);
    if (l->latency)
        l->latency[s->index] = now_s() - s->started;
}

/* The peak resident memory of l->watch_rss so far. */
static void sample_rss(struct load *l)
{
    long kib = ts_rss_kib(l->watch_rss);
    if (kib > l->peak_rss_kib)
        l->peak_rss_kib = kib;
}

/* Runs one phase: `total` requests of `kind` about cards bench-<prefix>0...,
 * `window` in flight at a time. Returns 0 when every answer was the one
 * expected, -1 when one was not (reported on stderr) or on an interrupt. */
static int load_phase(struct load *l, enum kind kind, char prefix, char (*cards)[CARD_NO_SIZE],
                      int total)
{
    l->kind = kind;
    l->prefix = prefix;
    l->cards = cards;
    l->total = total;
    l->started = l->done = l->failed = 0;
    l->first_error[0] = '\0';
    for (int i = 0; i < l->window && l->started < l->total; i++)
        slot_start(&l->slots[i]);
    while (l->done < l->started && !interrupted) {
        int running, queued;
        CURLMsg *m;
        curl_multi_perform(l->multi, &running);
        while ((m = curl_multi_info_read(l->multi, &queued))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct slot *s = NULL;
            CURLcode rc = m->data.result; /* m dies with the handle's removal */
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            slot_finish(s, rc);
            if (l->started < l->total)
                slot_start(s);
        }
        if (l->watch_rss)
            sample_rss(l);
        if (l->done < l->started)
            curl_multi_poll(l->multi, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < l->window; i++) {
        if (l->slots[i].active) { /* interrupted */
            curl_multi_remove_handle(l->multi, l->slots[i].easy);
            l->slots[i].active = 0;
        }
    }
    if (l->failed)
        fprintf(stderr, "bench: %d %s requests failed; first: %s\n", l->failed, kind_name(kind),
                l->first_error);
    return l->failed || interrupted ? -1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* What a measured phase gives: the CPU each party used, the latency
 * percentiles of its requests, and the raw crypto (one signature plus one
 * verification, every core busy) measured just before and just after it:
 * the machine's speed drifts, so each phase is compared with its own. */
struct phase {
    struct usage u;
    double p50, p99, raw_s;
};

/* The raw crypto now: a short loaded measurement of both operations. */
static double raw_now(const struct signer *sg, int cores)
{
    double sign = loaded_seconds(sg, 0, cores, 1, 0.2);
    double verify = loaded_seconds(sg, 1, cores, 1, 0.1);
    return sign < 0 || verify < 0 ? -1 : sign + verify;
}

/* Runs a phase between two CPU snapshots, keeping each request's latency. */
static int measured_phase(struct load *l, const struct watched *w, const struct signer *sg,
                          int cores, enum kind kind, char (*cards)[CARD_NO_SIZE], int total,
                          struct phase *ph)
{
    struct snap a, b;
    double *lat = calloc((size_t)total, sizeof(*lat));
    if (!lat)
        return -1;
    double raw_before = raw_now(sg, cores);
    l->latency = lat;
    snap_take(w, &a);
    int rc = load_phase(l, kind, 'O', cards, total);
    snap_take(w, &b);
    l->latency = NULL;
    double raw_after = raw_now(sg, cores);
    ph->raw_s = raw_before < 0 || raw_after < 0 ? -1 : (raw_before + raw_after) / 2;
    if (rc == 0) {
        usage_between(&a, &b, &ph->u);
        qsort(lat, (size_t)total, sizeof(*lat), cmp_double);
        ph->p50 = lat[total / 2];
        ph->p99 = lat[(size_t)((double)total * 0.99)];
    }
    free(lat);
    return rc;
}

/* ------------------------------------------------------------- database */

/* The postmaster's pid from its pid file, for the hard stop; 0 if unknown. */
static pid_t postmaster_pid(const struct ts_pg *pg)
{
    char path[256];
    int pid = 0;
    snprintf(path, sizeof(path), "%s/data/postmaster.pid", pg->dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return (pid_t)pid;
}

/* Drops the benchmark's database from the cluster $CARDGATE_TEST_PG names
 * (a private cluster is removed whole instead). */
static void drop_db(const char *db)
{
    PGconn *c = PQconnectdb(db);
    char *name =
        PQstatus(c) == CONNECTION_OK ? PQescapeIdentifier(c, PQdb(c), strlen(PQdb(c))) : NULL;
    PQfinish(c);
    if (!name)
        return;
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    PQfreemem(name);
    PGconn *admin = PQconnectdb(getenv("CARDGATE_TEST_PG"));
    if (PQstatus(admin) == CONNECTION_OK)
        PQclear(PQexec(admin, sql));
    PQfinish(admin);
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_service [--check] [--opens N] [--window N] [--seconds S]\n"
               "                     [--memory-conns N] [--mode cert|aes|cert+aes]\n"
               "  --check           exit 1 when a target is missed\n"
               "  --opens N         cards opened, then replayed, queried, updated and looked up\n"
               "                    (default 5000)\n"
               "  --window N        requests in flight at once (default 64)\n"
               "  --seconds S       each signing measurement runs this long (default 0.5)\n"
               "  --memory-conns N  opens in flight at once against a 300 ms gateway, for\n"
               "                    cardgate's peak RSS (default 2000; 0: skip)\n"
               "  --mode M          Alipay's certificate mode, content encryption or both\n"
               "                    (the vectors' test PKI and AES key; default: public key)\n");
}

/* Fills opt; returns 0, 1 for --help, -1 on a usage error. */
static int parse_args(int argc, char **argv, struct options *opt)
{
    *opt = (struct options){0, 5000, 64, 0.5, 2000, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--check") == 0) {
            opt->check = 1;
        } else if (strcmp(a, "--help") == 0) {
            return 1;
        } else if (strcmp(a, "--opens") == 0 && v) {
            opt->opens = atoi(v), i++;
        } else if (strcmp(a, "--window") == 0 && v) {
            opt->window = atoi(v), i++;
        } else if (strcmp(a, "--seconds") == 0 && v) {
            opt->min_seconds = atof(v), i++;
        } else if (strcmp(a, "--memory-conns") == 0 && v) {
            opt->memory_conns = atoi(v), i++;
        } else if (strcmp(a, "--mode") == 0 && v) {
            opt->cert = strstr(v, "cert") != NULL;
            opt->aes = strstr(v, "aes") != NULL;
            if (!opt->cert && !opt->aes)
                return -1;
            i++;
        } else {
            return -1;
        }
    }
    return opt->opens > 0 && opt->opens < 1000000 && opt->window > 0 && opt->window <= 1000 &&
                   opt->min_seconds > 0 && opt->memory_conns >= 0 && opt->memory_conns <= 10000
               ? 0
               : -1;
}

/* One cell of the CPU table: microseconds per request, or n/a. */
static void print_us(double seconds, int requests)
{
    if (seconds < 0)
        printf(" %10s", "n/a");
    else
        printf(" %10.0f", seconds / (double)requests * 1e6);
}

/* A row of the CPU table: what each party spent per request in the phase.
 * "other" is the machine's busy time that none of them accounts for (the
 * postmaster's helpers, the kernel's interrupts, other programs); "idle"
 * is what was left of the cores. */
static void print_cpu_row(const char *name, const struct usage *u, int n, int cores, double raw_s)
{
    int known = u->machine >= 0 && u->cardgate >= 0 && u->sim >= 0;
    double other =
        known ? u->machine - u->bench - u->cardgate - u->sim - (u->pg > 0 ? u->pg : 0) : -1;
    double idle = u->machine >= 0 ? cores * u->wall - u->machine : -1;
    printf("%-9s", name);
    print_us(u->wall, n);
    print_us(u->cardgate, n);
    print_us(u->sim, n);
    print_us(u->pg, n);
    print_us(u->bench, n);
    /* Clock ticks are 10 ms: a remainder near 0 may come out below it. */
    print_us(known && other < 0 ? 0 : other, n);
    print_us(u->machine >= 0 && idle < 0 ? 0 : idle, n);
    printf(" %10.0f\n", raw_s * 1e6);
}

/* The run after the signing measurement: processes, phases, checks. */
struct run {
    struct ts_pg pg; /* our private cluster, when dir[0] */
    char *db;
    struct ts_sim sim;
    struct ts_cardgate cg;
    PGconn *stats;
    struct load load;
    char (*cards)[CARD_NO_SIZE];
    char (*warm)[CARD_NO_SIZE];
};

/* The simulator's arguments and cardgate's settings of --mode. */
static void mode_args(const struct options *opt, const char *sim_args[12], const char *env[16])
{
    size_t a = 0, e = 0;
    env[e++] = "CARDGATE_WORKERS=2";
    env[e++] = "CARDGATE_LOG_LEVEL=info";
    env[e++] = "CARDGATE_ALIPAY_TIMEOUT_MS=10000";
    if (opt->cert)
        ts_cert_mode(sim_args, &a, env, &e);
    if (opt->aes) {
        sim_args[a++] = "--aes-key";
        sim_args[a++] = "EREREREREREREREREREREQ==";
        env[e++] = "CARDGATE_ALIPAY_ENCRYPT_KEY=EREREREREREREREREREREQ==";
    }
    sim_args[a] = NULL;
    env[e] = NULL;
}

/* Starts the database, the simulator and cardgate; 0, or -1 (reported). */
static int run_start(struct run *r, const struct options *opt)
{
    if (!getenv("CARDGATE_TEST_PG")) {
        if (ts_pg_private_start(&r->pg) != 0) {
            fprintf(stderr, "bench: cannot start a private PostgreSQL cluster (see %s/ts.log)\n",
                    r->pg.dir);
            return -1;
        }
        child_pid[2] = postmaster_pid(&r->pg);
        setenv("CARDGATE_TEST_PG", r->pg.conninfo, 1);
    }
    r->db = interrupted ? NULL : ts_pg_create_db();
    /* `cardgate migrate` reports on stdout, which is the table's: send its
     * report to stderr. */
    int migrated = -1, saved = dup(STDOUT_FILENO);
    if (r->db && saved >= 0) {
        fflush(stdout);
        dup2(STDERR_FILENO, STDOUT_FILENO);
        migrated = ts_cardgate_migrate(r->db);
        dup2(saved, STDOUT_FILENO);
    }
    if (saved >= 0)
        close(saved);
    if (migrated != 0) {
        fprintf(stderr, "bench: cannot create and migrate a database\n");
        return -1;
    }
    /* The production log level (one line per request) and a gateway timeout
     * no queue of --window requests comes near; the mode asked for. */
    const char *sim_args[12], *env[16];
    mode_args(opt, sim_args, env);
    if (interrupted || ts_sim_start(&r->sim, sim_args) != 0)
        return -1;
    child_pid[0] = r->sim.pid;
    if (interrupted || ts_cardgate_start(&r->cg, r->db, &r->sim, env) != 0)
        return -1;
    child_pid[1] = r->cg.pid;
    r->stats = PQconnectdb(r->db);
    if (PQstatus(r->stats) != CONNECTION_OK) {
        fprintf(stderr, "bench: %s", PQerrorMessage(r->stats));
        return -1;
    }
    return 0;
}

/* Stops what run_start started, each by its pid, and frees the run. */
static void run_stop(struct run *r)
{
    load_free(&r->load);
    PQfinish(r->stats);
    child_pid[1] = 0;
    if (r->cg.pid > 0)
        ts_cardgate_stop(&r->cg);
    child_pid[0] = 0;
    ts_sim_stop(&r->sim);
    if (r->db && !r->pg.dir[0])
        drop_db(r->db);
    child_pid[2] = 0;
    ts_pg_private_destroy(&r->pg);
    free(r->db);
    free(r->cards);
    free(r->warm);
}

/* The gateway calls the simulator has counted, or -1. */
static long gateway_calls(const struct run *r)
{
    return ts_sim_calls(&r->sim, NULL);
}

/* One line of the targets: the figure, the target, and whether it holds
 * (lower is better unless higher is set). Returns 1 when missed. */
static int target_line(const char *what, double value, double target, int higher)
{
    int missed = value < 0 || (higher ? value < target : value > target);
    printf("%-50s %8.2f %s %-6.2f %s\n", what, value, higher ? ">=" : "<=", target,
           value < 0 ? "n/a"
           : missed  ? "MISSED"
                     : "ok");
    return missed;
}

/* CPU seconds per request of one party, in raws (-1 when unknown). */
static double in_raws(double seconds, int requests, double raw_s)
{
    return seconds < 0 ? -1 : seconds / requests / raw_s;
}

/* The memory phase: n opens at once against a gateway that holds every
 * answer 300 ms; cardgate's peak RSS in MiB, or -1 on failure. */
static double memory_phase(struct run *r, int n)
{
    struct load big;
    if (ts_sim_fault(&r->sim, "{\"mode\":\"delay\",\"delay_ms\":300,\"method\":"
                              "\"alipay.marketing.card.open\"}") != 0 ||
        load_init(&big, r->cg.url, n) < 0) {
        fprintf(stderr, "bench: cannot set up the memory phase\n");
        return -1;
    }
    char(*cards)[CARD_NO_SIZE] = calloc((size_t)n, sizeof(*cards));
    big.watch_rss = r->cg.pid;
    int rc = cards ? load_phase(&big, OPEN, 'M', cards, n) : -1;
    long peak = big.peak_rss_kib;
    load_free(&big);
    free(cards);
    ts_sim_clear_faults(&r->sim);
    return rc < 0 ? -1 : (double)peak / 1024.0;
}

int main(int argc, char **argv)
{
    struct options opt;
    char err[256];
    int status = 2;
    struct signer sg = {0};
    struct run r = {0};
    int parsed = parse_args(argc, argv, &opt);
    if (parsed != 0) {
        usage(parsed > 0 ? stdout : stderr);
        return parsed > 0 ? 0 : 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* The memory phase holds thousands of connections here and in cardgate
     * (which inherits the limit). */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);

    /* (1) The raw crypto, measured before anything else of ours runs: one
     * RSA-2048 signature and one verification over the same key. */
    sg.key = alipay_key_load_private(ts_vector("keys/app_private_pkcs1.pem"), err, sizeof(err));
    sg.pub = alipay_key_load_public(ts_vector("keys/app_public.pem"), err, sizeof(err));
    sg.data = ts_read_file(ts_vector("v1_card_open_rsa2.string_to_sign.txt"), &sg.len);
    sg.sig = sg.key && sg.data
                 ? alipay_sign_data(sg.key, ALIPAY_SIGN_RSA2, sg.data, sg.len, err, sizeof(err))
                 : NULL;
    if (!sg.key || !sg.pub || !sg.data || !sg.sig) {
        fprintf(stderr, "bench: cannot load the vectors: %s\n", err);
        goto done;
    }
    double sign_s = sign_seconds(&sg, 0, 3, opt.min_seconds);
    double verify_s = sign_seconds(&sg, 1, 3, opt.min_seconds);
    double lsign_s = loaded_seconds(&sg, 0, cores, 3, opt.min_seconds);
    double lverify_s = loaded_seconds(&sg, 1, cores, 3, opt.min_seconds);
    if (sign_s < 0 || verify_s < 0 || lsign_s < 0 || lverify_s < 0)
        goto done;
    /* The targets compare CPU with CPU on a busy machine. */
    double raw_s = lsign_s + lverify_s;
    double sign_rate = 1.0 / sign_s, open_bound = sign_rate / 2;

    /* (2) The service. */
    int warm_n = 2 * opt.window;
    r.cards = calloc((size_t)opt.opens, sizeof(*r.cards));
    r.warm = calloc((size_t)warm_n, sizeof(*r.warm));
    if (!r.cards || !r.warm || run_start(&r, &opt) < 0)
        goto done;
    if (load_init(&r.load, r.cg.url, opt.window) < 0) {
        fprintf(stderr, "bench: cannot set up libcurl\n");
        goto done;
    }
    /* Warm-up, unmeasured: the connections, cardgate's database pool and its
     * prepared paths, the simulator's first answers. */
    static const enum kind order[] = {OPEN, REPLAY, QUERY, UPDATE, LOOKUP};
    for (size_t k = 0; k < 5; k++)
        if (load_phase(&r.load, order[k], 'W', r.warm, warm_n) < 0)
            goto done;
    long warm_connects = r.load.connects;

    /* (3) The measured phases over the same cards; the simulator witnesses
     * that each did what it is named for: one gateway call per open, query
     * and update, none per replay or lookup. */
    struct watched w = {r.cg.pid, r.sim.pid, r.stats};
    struct phase ph[5];
    static const int calls_per[] = {1, 0, 1, 1, 0};
    for (size_t k = 0; k < 5; k++) {
        long before = gateway_calls(&r);
        if (measured_phase(&r.load, &w, &sg, cores, order[k], r.cards, opt.opens, &ph[k]) < 0)
            goto done;
        long made = gateway_calls(&r) - before;
        if (before < 0 || made != (long)calls_per[k] * opt.opens) {
            fprintf(stderr, "bench: %s phase: %ld gateway calls, expected %d\n",
                    kind_name(order[k]), made, calls_per[k] * opt.opens);
            goto done;
        }
    }
    double rss_mib = opt.memory_conns ? memory_phase(&r, opt.memory_conns) : 0;
    if (opt.memory_conns && rss_mib < 0)
        goto done;

    double rate[5];
    for (size_t k = 0; k < 5; k++)
        rate[k] = opt.opens / ph[k].u.wall;
    double open_ratio = rate[0] / open_bound, replay_speedup = rate[1] / rate[0];
    printf("bench_service: cardgate (2 workers) + alipay-sim + PostgreSQL on %d cores; "
           "%d requests per phase, window %d, %ld new connections after warm-up; %s\n\n",
           cores, opt.opens, opt.window, r.load.connects - warm_connects,
           opt.cert && opt.aes ? "certificate mode + AES"
           : opt.cert          ? "certificate mode"
           : opt.aes           ? "AES content encryption"
                               : "public-key mode");
    printf("raw crypto, best of 3: alone sign %.0f us + verify %.0f us; every core busy (CPU "
           "per op) sign %.0f us + verify %.0f us = raw %.0f us\n\n",
           sign_s * 1e6, verify_s * 1e6, lsign_s * 1e6, lverify_s * 1e6, raw_s * 1e6);
    printf("%-44s %12s %10s %8s %8s\n", "phase", "rate", "vs bound", "p50 ms", "p99 ms");
    static const char *const names[] = {
        "opens: POST /v1/cards, new out_serial_no", "replays: the same POST again",
        "queries: GET /v1/cards/{biz_card_no}", "updates: PATCH /v1/cards/{biz_card_no}",
        "lookups: GET /v1/cards?out_serial_no="};
    for (size_t k = 0; k < 5; k++)
        printf("%-44s %9.0f /s %10.2f %8.1f %8.1f\n", names[k], rate[k], rate[k] / open_bound,
               ph[k].p50 * 1e3, ph[k].p99 * 1e3);
    printf("\nCPU per request in us (wall = 1 / rate; raw: sign + verify with every core busy, "
           "around the phase)\n");
    printf("%-9s %10s %10s %10s %10s %10s %10s %10s %10s\n", "phase", "wall", "cardgate",
           "alipay-sim", "postgres", "bench", "other", "idle", "raw");
    for (size_t k = 0; k < 5; k++)
        print_cpu_row(kind_name(order[k]), &ph[k].u, opt.opens, cores, ph[k].raw_s);

    printf("\n%-50s %8s    %-6s\n", "target (ratios in this run)", "value", "target");
    int missed = 0;
    missed += target_line("replays/s vs opens/s", replay_speedup, TARGET_REPLAY_SPEEDUP, 1);
    missed += target_line("opens/s vs open bound", open_ratio, TARGET_OPEN_RATIO, 1);
    missed += target_line("cardgate CPU per open, in raws",
                          in_raws(ph[0].u.cardgate, opt.opens, ph[0].raw_s), TARGET_CG_OPEN, 0);
    missed += target_line("cardgate CPU per query, in raws",
                          in_raws(ph[2].u.cardgate, opt.opens, ph[2].raw_s), TARGET_CG_QUERY, 0);
    missed += target_line("cardgate CPU per update, in raws",
                          in_raws(ph[3].u.cardgate, opt.opens, ph[3].raw_s), TARGET_CG_UPDATE, 0);
    missed += target_line("PostgreSQL CPU per open, in raws",
                          in_raws(ph[0].u.pg, opt.opens, ph[0].raw_s), TARGET_PG_OPEN, 0);
    missed += target_line("cardgate CPU per replay, in raws",
                          in_raws(ph[1].u.cardgate, opt.opens, ph[1].raw_s), TARGET_CG_DB_ONLY, 0);
    missed += target_line("cardgate CPU per lookup, in raws",
                          in_raws(ph[4].u.cardgate, opt.opens, ph[4].raw_s), TARGET_CG_DB_ONLY, 0);
    for (size_t k = 0; k < 5; k++) {
        char what[64];
        snprintf(what, sizeof(what), "p99 / p50, %s", kind_name(order[k]));
        missed += target_line(what, ph[k].p99 / ph[k].p50, TARGET_P99_P50, 0);
    }
    if (opt.memory_conns) {
        char what[80];
        snprintf(what, sizeof(what), "cardgate RSS MiB, %d opens in flight (300 ms gw)",
                 opt.memory_conns);
        missed += target_line(what, rss_mib, TARGET_RSS_MIB, 0);
    }
    status = opt.check && missed ? 1 : 0;
    if (opt.check && missed)
        printf("CHECK FAILED: %d target(s) missed\n", missed);
done:
    run_stop(&r);
    EVP_PKEY_free(sg.key);
    EVP_PKEY_free(sg.pub);
    free(sg.data);
    free(sg.sig);
    curl_global_cleanup();
    if (interrupted) {
        fprintf(stderr, "bench: interrupted; everything it started is stopped\n");
        return 128 + interrupted;
    }
    return status;
}
