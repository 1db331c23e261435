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

/* --check targets (why these values: tests/bench/README.md). */
#define TARGET_REPLAY_SPEEDUP 2.0 /* replays/s vs opens/s */
#define TARGET_OPEN_RATIO 0.3     /* opens/s vs (raw signing rate / 2) */

#define MAX_PG_BACKENDS 64
#define CARD_NO_SIZE 40 /* biz_card_no is at most 32 characters */

struct options {
    int check;
    int opens;          /* cards opened (and replayed, and queried) */
    int window;         /* requests in flight at once */
    double min_seconds; /* each signing measurement runs at least this long */
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
    EVP_PKEY *key;
    char *data;
    size_t len;
};

/* Seconds per alipay_sign_data call over a run of at least min_seconds on
 * this thread; -1 on failure or interrupt. */
static double sign_batch(const struct signer *s, double min_seconds)
{
    char err[256];
    long n = 0;
    double start = now_s(), elapsed = 0;
    while (elapsed < min_seconds) {
        if (interrupted)
            return -1;
        for (int i = 0; i < 20; i++) {
            char *sig =
                alipay_sign_data(s->key, ALIPAY_SIGN_RSA2, s->data, s->len, err, sizeof(err));
            if (!sig) {
                fprintf(stderr, "bench: sign: %s\n", err);
                return -1;
            }
            free(sig);
        }
        n += 20;
        elapsed = now_s() - start;
    }
    return elapsed / (double)n;
}

/* The best of `rounds` batches after a warm-up (OpenSSL's first fetches):
 * the minimum is the figure least disturbed by other load. -1 on failure. */
static double sign_seconds(const struct signer *s, int rounds, double min_seconds)
{
    double best = 0;
    if (sign_batch(s, 0.05) < 0)
        return -1;
    for (int r = 0; r < rounds; r++) {
        double t = sign_batch(s, min_seconds);
        if (t < 0)
            return -1;
        if (best == 0 || t < best)
            best = t;
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

enum kind { OPEN, REPLAY, QUERY };

static const char *kind_name(enum kind k)
{
    return k == OPEN ? "open" : k == REPLAY ? "replay" : "query";
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
    if (l->kind == QUERY) {
        snprintf(url, sizeof(url), "%s/v1/cards/%s", l->base_url, l->cards[s->index]);
        curl_easy_setopt(s->easy, CURLOPT_HTTPGET, 1L);
    } else {
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
    long want = l->kind == QUERY ? 200 : 201;
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

/* Runs a phase between two CPU snapshots. */
static int measured_phase(struct load *l, const struct watched *w, enum kind kind,
                          char (*cards)[CARD_NO_SIZE], int total, struct usage *u)
{
    struct snap a, b;
    snap_take(w, &a);
    if (load_phase(l, kind, 'O', cards, total) < 0)
        return -1;
    snap_take(w, &b);
    usage_between(&a, &b, u);
    return 0;
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
               "  --check      exit 1 when a ratio target is missed\n"
               "  --opens N    cards opened, then replayed and queried (default 5000)\n"
               "  --window N   requests in flight at once (default 32)\n"
               "  --seconds S  each signing measurement runs this long (default 0.5)\n");
}

/* Fills opt; returns 0, 1 for --help, -1 on a usage error. */
static int parse_args(int argc, char **argv, struct options *opt)
{
    *opt = (struct options){0, 5000, 32, 0.5};
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
        } else {
            return -1;
        }
    }
    return opt->opens > 0 && opt->opens < 1000000 && opt->window > 0 && opt->window <= 1000 &&
                   opt->min_seconds > 0
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
static void print_cpu_row(const char *name, const struct usage *u, int n, int cores)
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
    printf("\n");
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

/* Starts the database, the simulator and cardgate; 0, or -1 (reported). */
static int run_start(struct run *r)
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
    if (interrupted || ts_sim_start(&r->sim, NULL) != 0)
        return -1;
    child_pid[0] = r->sim.pid;
    /* The production log level (one line per request) and a gateway timeout
     * no queue of --window requests comes near. */
    const char *env[] = {"CARDGATE_WORKERS=2", "CARDGATE_LOG_LEVEL=info",
                         "CARDGATE_ALIPAY_TIMEOUT_MS=10000", NULL};
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
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);

    /* (1) The signing bound, measured before anything else of ours runs. */
    sg.key = alipay_key_load_private(ts_vector("keys/app_private_pkcs1.pem"), err, sizeof(err));
    sg.data = ts_read_file(ts_vector("v1_card_open_rsa2.string_to_sign.txt"), &sg.len);
    if (!sg.key || !sg.data) {
        fprintf(stderr, "bench: cannot load the vectors: %s\n", sg.key ? "string to sign" : err);
        goto done;
    }
    double sign_s = sign_seconds(&sg, 3, opt.min_seconds);
    if (sign_s < 0)
        goto done;
    double sign_rate = 1.0 / sign_s, open_bound = sign_rate / 2;

    /* (2) The service. */
    int warm_n = 2 * opt.window;
    r.cards = calloc((size_t)opt.opens, sizeof(*r.cards));
    r.warm = calloc((size_t)warm_n, sizeof(*r.warm));
    if (!r.cards || !r.warm || run_start(&r) < 0)
        goto done;
    if (load_init(&r.load, r.cg.url, opt.window) < 0) {
        fprintf(stderr, "bench: cannot set up libcurl\n");
        goto done;
    }
    /* Warm-up, unmeasured: the connections, cardgate's database pool and its
     * prepared paths, the simulator's first answers. */
    if (load_phase(&r.load, OPEN, 'W', r.warm, warm_n) < 0 ||
        load_phase(&r.load, REPLAY, 'W', r.warm, warm_n) < 0 ||
        load_phase(&r.load, QUERY, 'W', r.warm, warm_n) < 0)
        goto done;
    long warm_connects = r.load.connects;

    struct watched w = {r.cg.pid, r.sim.pid, r.stats};
    struct usage u_open, u_replay, u_query;
    long calls0 = gateway_calls(&r);
    if (measured_phase(&r.load, &w, OPEN, r.cards, opt.opens, &u_open) < 0)
        goto done;
    long calls1 = gateway_calls(&r);
    if (measured_phase(&r.load, &w, REPLAY, r.cards, opt.opens, &u_replay) < 0)
        goto done;
    long calls2 = gateway_calls(&r);
    if (measured_phase(&r.load, &w, QUERY, r.cards, opt.opens, &u_query) < 0)
        goto done;
    long calls3 = gateway_calls(&r);
    /* The simulator is the witness that each phase did what it is named
     * for: one gateway call per open and per query, none per replay. */
    if (calls0 < 0 || calls1 - calls0 != opt.opens || calls2 != calls1 ||
        calls3 - calls2 != opt.opens) {
        fprintf(stderr,
                "bench: gateway calls per phase: opens %ld, replays %ld, queries %ld; "
                "expected %d, 0, %d\n",
                calls1 - calls0, calls2 - calls1, calls3 - calls2, opt.opens, opt.opens);
        goto done;
    }

    double opens_s = opt.opens / u_open.wall, replays_s = opt.opens / u_replay.wall;
    double queries_s = opt.opens / u_query.wall;
    double open_ratio = opens_s / open_bound, replay_speedup = replays_s / opens_s;
    printf("bench_service: cardgate (2 workers) + alipay-sim + PostgreSQL on %d cores; "
           "%d opens, window %d, %ld new connections after warm-up\n\n",
           cores, opt.opens, opt.window, r.load.connects - warm_connects);
    printf("%-44s %12s %10s\n", "measure", "value", "ratio");
    printf("%-44s %9.0f /s %10s\n", "raw signing rate (one thread)", sign_rate, "");
    printf("%-44s %9.0f /s %10s\n", "open bound: signing rate / 2", open_bound, "1.00");
    printf("%-44s %9.0f /s %10.2f\n", "opens: POST /v1/cards, new out_serial_no", opens_s,
           open_ratio);
    printf("%-44s %9.0f /s %10.2f\n", "queries: GET /v1/cards/{biz_card_no}", queries_s,
           queries_s / open_bound);
    printf("%-44s %9.0f /s %9.2fx\n", "replays: the same POST again (no gateway)", replays_s,
           replay_speedup);
    printf("\nCPU per request in us (one signature = %.0f us; wall = 1 / rate)\n", sign_s * 1e6);
    printf("%-9s %10s %10s %10s %10s %10s %10s %10s\n", "phase", "wall", "cardgate", "alipay-sim",
           "postgres", "bench", "other", "idle");
    print_cpu_row("opens", &u_open, opt.opens, cores);
    print_cpu_row("replays", &u_replay, opt.opens, cores);
    print_cpu_row("queries", &u_query, opt.opens, cores);
    printf("\nreplays %.2fx opens (target >= %.1fx); opens at %.2f of the open bound "
           "(target >= %.2f)\n",
           replay_speedup, TARGET_REPLAY_SPEEDUP, open_ratio, TARGET_OPEN_RATIO);

    status = 0;
    if (opt.check && replay_speedup < TARGET_REPLAY_SPEEDUP) {
        printf("CHECK FAILED: replays only %.2fx faster than opens (< %.1fx)\n", replay_speedup,
               TARGET_REPLAY_SPEEDUP);
        status = 1;
    }
    if (opt.check && open_ratio < TARGET_OPEN_RATIO) {
        printf("CHECK FAILED: opens at %.2f of the open bound (< %.2f)\n", open_ratio,
               TARGET_OPEN_RATIO);
        status = 1;
    }
done:
    run_stop(&r);
    EVP_PKEY_free(sg.key);
    free(sg.data);
    curl_global_cleanup();
    if (interrupted) {
        fprintf(stderr, "bench: interrupted; everything it started is stopped\n");
        return 128 + interrupted;
    }
    return status;
}
