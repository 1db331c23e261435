/* Test support: see support.h. */
#include "support.h"

#include <check.h>
#include <json-c/json.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

int ts_free_port(void)
{
    /* Each call draws anew: two calls in one second of one process must not
     * pick the same port before either binds it. */
    static _Atomic unsigned calls;
    unsigned seed =
        (unsigned)getpid() ^ (unsigned)time(NULL) ^ (atomic_fetch_add(&calls, 1) * 2654435761u);
    for (int tries = 0; tries < 200; tries++) {
        int port = 20000 + (int)(rand_r(&seed) % 12000);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (ok)
            return port;
    }
    return -1;
}

const char *ts_vector(const char *relpath)
{
    static __thread char slots[8][512];
    static __thread int next;
    char *buf = slots[next++ % 8];
    snprintf(buf, 512, "%s/%s", CARDGATE_VECTORS_DIR, relpath);
    return buf;
}

char *ts_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

pid_t ts_spawn(const char *const argv[], const char *const env[], const char *logfile)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    setpgid(0, 0);
    /* A test that fails stops where it is, without its teardown: the
     * binaries it started must not outlive it (they would hold ports and
     * the throwaway cluster's connections). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (size_t i = 0; env && env[i]; i++)
        putenv((char *)env[i]);
    if (logfile) {
        int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
    }
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int ts_wait_port(int port, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (ok)
            return 0;
        usleep(20000);
    }
    return -1;
}

/* After the port accepts, the child must still be running: another process
 * may have taken the port between ts_free_port and the child's bind. */
static int child_serving(pid_t pid, int port)
{
    if (pid < 0 || ts_wait_port(port, 15000) < 0)
        return 0;
    usleep(50000);
    int status;
    return waitpid(pid, &status, WNOHANG) == 0;
}

int ts_stop(pid_t pid, int sig, int timeout_ms)
{
    int status;
    kill(pid, sig);
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

size_t ts_buf_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct ts_buf *b = arg;
    size_t len = size * nmemb;
    char *p = realloc(b->p, b->n + len + 1);
    if (!p)
        return 0;
    memcpy(p + b->n, data, len);
    b->n += len;
    p[b->n] = '\0';
    b->p = p;
    return len;
}

int ts_http_call(const char *method, const char *url, const char *const headers[], const char *body,
                 struct ts_http *out)
{
    struct ts_buf b = {0}, h = {0};
    struct curl_slist *hl = NULL;
    CURL *c = curl_easy_init();
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ts_buf_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, ts_buf_write);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L); /* else curl waits for a body */
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    out->body = b.p ? b.p : strdup("");
    out->body_len = b.n;
    out->headers = h.p ? h.p : strdup("");
    return rc == CURLE_OK ? 0 : -1;
}

char *ts_http_header(const struct ts_http *r, const char *name)
{
    size_t nl = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(line + len - v));
        }
        line = eol ? eol + 2 : line + len;
    }
    return NULL;
}

void ts_http_free(struct ts_http *r)
{
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof(*r));
}

char *ts_pg_create_db(void)
{
    const char *admin = getenv("CARDGATE_TEST_PG");
    if (!admin || !*admin)
        return NULL;
    PGconn *conn = PQconnectdb(admin);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "ts_pg_create_db: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    static __thread unsigned counter;
    char name[64], sql[128];
    snprintf(name, sizeof(name), "t_%d_%ld_%u", (int)getpid(), (long)time(NULL), counter++);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "ts_pg_create_db: %s", PQresultErrorMessage(res));
    PQclear(res);
    PQfinish(conn);
    if (!ok)
        return NULL;
    size_t cap = strlen(admin) + 64;
    char *conninfo = malloc(cap);
    snprintf(conninfo, cap, "%s dbname=%s", admin, name);
    return conninfo;
}

/* TS_VALGRIND=1 (the long memcheck run, tests/run.sh): the binaries the
 * tests start run under memcheck; an error or a definite leak makes them
 * exit 99 and leaves a report in their log. */
static int valgrind_on(void)
{
    const char *vg = getenv("TS_VALGRIND");
    return vg && *vg && strcmp(vg, "0") != 0;
}

static const char *const valgrind_argv[] = {"/usr/bin/valgrind",
                                            "--quiet",
                                            "--error-exitcode=99",
                                            "--leak-check=full",
                                            "--show-leak-kinds=definite",
                                            "--errors-for-leak-kinds=definite",
                                            NULL};

static int sim_start_once(struct ts_sim *sim, const char *const extra_args[])
{
    char listen[64], bin[512], log[512];
    memset(sim, 0, sizeof(*sim));
    sim->port = ts_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", sim->port);
    snprintf(bin, sizeof(bin), "%s/alipay-sim", CARDGATE_BIN_DIR);
    snprintf(log, sizeof(log), "%s/../tests/alipay-sim-%d.log", CARDGATE_BIN_DIR, sim->port);
    const char *argv[40];
    size_t n = 0;
    /* TS_VALGRIND=1: the simulator under memcheck too (see cardgate's). */
    if (valgrind_on())
        for (const char *const *v = valgrind_argv; *v; v++)
            argv[n++] = *v;
    const char *const own[] = {bin,
                               "--listen",
                               listen,
                               "--app-public-key",
                               ts_vector("keys/app_public.pem"),
                               "--alipay-private-key",
                               ts_vector("keys/alipay_private_sim.pem"),
                               NULL};
    for (const char *const *v = own; *v; v++)
        argv[n++] = *v;
    for (size_t i = 0; extra_args && extra_args[i] && n < 39; i++)
        argv[n++] = extra_args[i];
    argv[n] = NULL;
    sim->pid = ts_spawn(argv, NULL, log);
    if (!child_serving(sim->pid, sim->port)) {
        fprintf(stderr, "alipay-sim did not start; see %s\n", log);
        if (sim->pid > 0)
            ts_stop(sim->pid, SIGKILL, 2000);
        return -1;
    }
    snprintf(sim->url, sizeof(sim->url), "http://127.0.0.1:%d/gateway.do", sim->port);
    snprintf(sim->control, sizeof(sim->control), "http://127.0.0.1:%d/_sim", sim->port);
    return 0;
}

int ts_sim_start(struct ts_sim *sim, const char *const extra_args[])
{
    for (int attempt = 0; attempt < 5; attempt++) {
        if (sim_start_once(sim, extra_args) == 0)
            return 0;
    }
    return -1;
}

void ts_sim_stop(struct ts_sim *sim)
{
    if (sim->pid > 0)
        ts_stop(sim->pid, SIGTERM, valgrind_on() ? 60000 : 5000);
    sim->pid = 0;
}

int ts_sim_fault(const struct ts_sim *sim, const char *json)
{
    char url[192];
    struct ts_http r;
    const char *h[] = {TS_JSON, NULL};
    snprintf(url, sizeof(url), "%s/faults", sim->control);
    int rc = ts_http_call("POST", url, h, json, &r);
    int ok = rc == 0 && r.status == 201;
    ts_http_free(&r);
    return ok ? 0 : -1;
}

int ts_sim_clear_faults(const struct ts_sim *sim)
{
    char url[192];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/faults", sim->control);
    int rc = ts_http_call("DELETE", url, NULL, NULL, &r);
    int ok = rc == 0 && r.status == 200;
    ts_http_free(&r);
    return ok ? 0 : -1;
}

long ts_sim_calls(const struct ts_sim *sim, const char *out_serial_no)
{
    char url[320];
    struct ts_http r;
    if (out_serial_no)
        snprintf(url, sizeof(url), "%s/calls?out_serial_no=%s", sim->control, out_serial_no);
    else
        snprintf(url, sizeof(url), "%s/calls", sim->control);
    if (ts_http_call("GET", url, NULL, NULL, &r) < 0 || r.status != 200) {
        ts_http_free(&r);
        return -1;
    }
    const char *key = out_serial_no ? "\"count\":" : "\"total\":";
    const char *p = strstr(r.body, key);
    long n = p ? strtol(p + strlen(key), NULL, 10) : -1;
    ts_http_free(&r);
    return n;
}

long ts_sim_method_calls(const struct ts_sim *sim, const char *method)
{
    char url[256];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/calls", sim->control);
    if (ts_http_call("GET", url, NULL, NULL, &r) < 0 || r.status != 200) {
        ts_http_free(&r);
        return -1;
    }
    json_object *o = json_tokener_parse(r.body), *m, *v;
    long n = json_object_object_get_ex(o, "methods", &m) && json_object_object_get_ex(m, method, &v)
                 ? (long)json_object_get_int64(v)
                 : 0;
    json_object_put(o);
    ts_http_free(&r);
    return n;
}

void ts_cert_mode(const char *sim_args[], size_t *na, const char *env[], size_t *ne)
{
    static char app_cert[512], root[512], cert[512], cert_key[512], app_key[512];
    static char env_app_cert[600], env_root[600], env_cert[600], env_key[600];
    snprintf(app_cert, sizeof(app_cert), "%s",
             ts_vector("cert/appCertPublicKey_2021000000000001.crt"));
    snprintf(root, sizeof(root), "%s", ts_vector("cert/alipayRootCert.crt"));
    snprintf(cert, sizeof(cert), "%s", ts_vector("cert/alipayCertPublicKey_RSA2.crt"));
    snprintf(cert_key, sizeof(cert_key), "%s", ts_vector("cert/alipayCertPrivateKey_RSA2.pem"));
    snprintf(app_key, sizeof(app_key), "%s",
             ts_vector("cert/appCertPrivateKey_2021000000000001.pem"));
    if (sim_args) {
        const char *const a[] = {"--app-cert",    app_cert, "--root-cert",          root,
                                 "--alipay-cert", cert,     "--alipay-private-key", cert_key};
        for (size_t i = 0; i < sizeof(a) / sizeof(a[0]); i++)
            sim_args[(*na)++] = a[i];
        sim_args[*na] = NULL;
    }
    if (env) {
        snprintf(env_app_cert, sizeof(env_app_cert), "CARDGATE_ALIPAY_APP_CERT_FILE=%s", app_cert);
        snprintf(env_root, sizeof(env_root), "CARDGATE_ALIPAY_ROOT_CERT_FILE=%s", root);
        snprintf(env_cert, sizeof(env_cert), "CARDGATE_ALIPAY_CERT_FILE=%s", cert);
        snprintf(env_key, sizeof(env_key), "CARDGATE_ALIPAY_PRIVATE_KEY_FILE=%s", app_key);
        const char *const e[] = {"CARDGATE_ALIPAY_PUBLIC_KEY_FILE=",
                                 "CARDGATE_ALIPAY_APP_ID=" TS_CERT_APP_ID,
                                 env_app_cert,
                                 env_root,
                                 env_cert,
                                 env_key};
        for (size_t i = 0; i < sizeof(e) / sizeof(e[0]); i++)
            env[(*ne)++] = e[i];
        env[*ne] = NULL;
    }
}

static void bin_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", CARDGATE_BIN_DIR, name);
}

int ts_cardgate_migrate(const char *db)
{
    char bin[512], env_db[1024];
    bin_path(bin, sizeof(bin), "cardgate");
    snprintf(env_db, sizeof(env_db), "CARDGATE_DATABASE_URL=%s", db);
    const char *argv[] = {bin, "migrate", NULL};
    const char *env[] = {env_db, NULL};
    pid_t pid = ts_spawn(argv, env, NULL);
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int cardgate_start_once(struct ts_cardgate *cg, int port, const char *db,
                               const struct ts_sim *sim, const char *const extra_env[])
{
    static char env[24][1024];
    const char *envp[48];
    size_t n = 0;
    memset(cg, 0, sizeof(*cg));
    cg->port = port ? port : ts_free_port();
    snprintf(cg->url, sizeof(cg->url), "http://127.0.0.1:%d", cg->port);
    snprintf(cg->log, sizeof(cg->log), "%s/../tests/cardgate-%d.log", CARDGATE_BIN_DIR, cg->port);
    /* sha256("test-key-0123456789") */
    snprintf(env[n++], 1024, "CARDGATE_API_KEYS=pos:%s",
             "0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d");
    snprintf(env[n++], 1024, "CARDGATE_LISTEN=127.0.0.1:%d", cg->port);
    snprintf(env[n++], 1024, "CARDGATE_DATABASE_URL=%s", db);
    snprintf(env[n++], 1024, "CARDGATE_ALIPAY_GATEWAY=%s", sim ? sim->url : "http://127.0.0.1:1/");
    snprintf(env[n++], 1024, "CARDGATE_ALIPAY_ALLOW_HTTP=1");
    snprintf(env[n++], 1024, "CARDGATE_ALIPAY_APP_ID=2014072300007148");
    snprintf(env[n++], 1024, "CARDGATE_ALIPAY_PRIVATE_KEY_FILE=%s",
             ts_vector("keys/app_private_pkcs1.pem"));
    snprintf(env[n++], 1024, "CARDGATE_ALIPAY_PUBLIC_KEY_FILE=%s",
             ts_vector("keys/alipay_public_sim.pem"));
    snprintf(env[n++], 1024, "CARDGATE_WORKERS=2");
    snprintf(env[n++], 1024, "CARDGATE_ALIPAY_TIMEOUT_MS=2000");
    snprintf(env[n++], 1024, "CARDGATE_LOCK_MARGIN_MS=1000");
    snprintf(env[n++], 1024, "CARDGATE_LOG_LEVEL=debug");
    /* A test that kills a holder decides who takes its request over: the
     * caller's retry, or (when it turns the sweeper on) the sweeper. */
    snprintf(env[n++], 1024, "CARDGATE_SWEEP_INTERVAL_MS=0");
    for (size_t i = 0; i < n; i++)
        envp[i] = env[i];
    for (size_t i = 0; extra_env && extra_env[i] && n < 47; i++)
        envp[n++] = extra_env[i];
    envp[n] = NULL;
    char bin[512];
    bin_path(bin, sizeof(bin), "cardgate");
    /* TS_VALGRIND=1 (the long memcheck run, tests/run.sh): cardgate under
     * memcheck; an error or a definite leak makes it exit 99, which the
     * tests' checks of its exit status report. */
    const char *argv[] = {bin, "serve", NULL};
    const char *vg_argv[10];
    size_t nv = 0;
    for (const char *const *v = valgrind_argv; *v; v++)
        vg_argv[nv++] = *v;
    vg_argv[nv++] = bin;
    vg_argv[nv++] = "serve";
    vg_argv[nv] = NULL;
    cg->pid = ts_spawn(valgrind_on() ? vg_argv : argv, envp, cg->log);
    if (!child_serving(cg->pid, cg->port)) {
        fprintf(stderr, "cardgate did not start; see %s\n", cg->log);
        if (cg->pid > 0)
            ts_stop(cg->pid, SIGKILL, 2000);
        cg->pid = 0;
        return -1;
    }
    return 0;
}

int ts_cardgate_start(struct ts_cardgate *cg, const char *db, const struct ts_sim *sim,
                      const char *const extra_env[])
{
    for (int attempt = 0; attempt < 5; attempt++) {
        if (cardgate_start_once(cg, 0, db, sim, extra_env) == 0)
            return 0;
    }
    return -1;
}

int ts_cardgate_start_port(struct ts_cardgate *cg, int port, const char *db,
                           const struct ts_sim *sim, const char *const extra_env[])
{
    return cardgate_start_once(cg, port, db, sim, extra_env);
}

int ts_cardgate_stop(struct ts_cardgate *cg)
{
    /* Under valgrind the drain and the leak check at exit take far longer;
     * a cardgate killed before its leak check would report nothing. */
    int wait_ms = valgrind_on() ? 120000 : 15000;
    int status = cg->pid > 0 ? ts_stop(cg->pid, SIGTERM, wait_ms) : -1;
    cg->pid = 0;
    return status;
}

long ts_pg_long(const char *db, const char *sql)
{
    PGconn *conn = PQconnectdb(db);
    long v = -1;
    if (PQstatus(conn) == CONNECTION_OK) {
        PGresult *res = PQexec(conn, sql);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
            v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
    }
    PQfinish(conn);
    return v;
}

static int run_shell(const char *script)
{
    int status = system(script);
    return (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
}

static int pg_private_cmd(struct ts_pg *pg, const char *fn)
{
    char script[1024];
    snprintf(script, sizeof(script), "bash -c '. %s/deploy/common.sh && %s %s %d' >>%s/ts.log 2>&1",
             CARDGATE_SOURCE_DIR, fn, pg->dir, pg->port, pg->dir);
    return run_shell(script);
}

int ts_pg_private_start(struct ts_pg *pg)
{
    if (!pg->dir[0]) {
        snprintf(pg->dir, sizeof(pg->dir), "/tmp/cardgate-pg-%d-XXXXXX", (int)getpid());
        if (!mkdtemp(pg->dir))
            return -1;
        chmod(pg->dir, 0755);
        pg->port = ts_free_port();
        snprintf(pg->conninfo, sizeof(pg->conninfo),
                 "host=127.0.0.1 port=%d user=postgres dbname=postgres", pg->port);
    }
    return pg_private_cmd(pg, "start_pg");
}

int ts_pg_private_stop(struct ts_pg *pg)
{
    return pg_private_cmd(pg, "stop_pg");
}

int ts_pg_private_restart(struct ts_pg *pg)
{
    return pg_private_cmd(pg, "start_pg");
}

void ts_pg_private_destroy(struct ts_pg *pg)
{
    if (!pg->dir[0])
        return;
    ts_pg_private_stop(pg);
    char script[256];
    snprintf(script, sizeof(script), "rm -rf %s", pg->dir);
    run_shell(script);
    pg->dir[0] = '\0';
}

struct parallel_call {
    pthread_barrier_t *start;
    const char *method, *url, *body;
    const char *const *headers;
    struct ts_http *out;
};

static void *parallel_one(void *arg)
{
    struct parallel_call *c = arg;
    pthread_barrier_wait(c->start);
    ts_http_call(c->method, c->url, c->headers, c->body, c->out);
    return NULL;
}

void ts_http_parallel(int n, const char *method, const char *const urls[],
                      const char *const headers[], const char *body, struct ts_http out[])
{
    pthread_t *th = calloc((size_t)n, sizeof(*th));
    struct parallel_call *calls = calloc((size_t)n, sizeof(*calls));
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        calls[i] = (struct parallel_call){&start, method, urls[i], body, headers, &out[i]};
        pthread_create(&th[i], NULL, parallel_one, &calls[i]);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    free(th);
    free(calls);
}

char *ts_open_body(const char *serial, const char *extra)
{
    size_t n = strlen(extra) + 2 * strlen(serial) + 512;
    char *b = malloc(n);
    ck_assert_ptr_nonnull(b);
    snprintf(b, n,
             "{\"out_serial_no\":\"%s\",\"card_template_id\":"
             "\"20170308000000000058101000300045\",\"user_id\":\"2088302463082075\","
             "\"card\":{\"external_card_no\":\"EXT-%s\",\"open_date\":\"2024-02-20 "
             "21:20:46\",\"valid_date\":\"2030-02-20 21:20:46\",\"level\":\"VIP1\","
             "\"point\":\"1\"}%s}",
             serial, serial, extra);
    return b;
}

int ts_run_suite(struct Suite *s)
{
    /* The load tests hold hundreds of connections at once, in this process
     * and in the cardgate and simulator it starts (which inherit the limit):
     * the hard limit, not the 1,024 a shell may give by default. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
        rlim_t want = nofile.rlim_max > 65536 ? 65536 : nofile.rlim_max;
        if (nofile.rlim_cur < want) {
            nofile.rlim_cur = want;
            setrlimit(RLIMIT_NOFILE, &nofile);
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

int ts_stack_up(struct ts_stack *st, const char *const sim_args[], const char *const env[],
                char *err, size_t errlen)
{
    memset(st, 0, sizeof(*st));
    const char *admin = getenv("CARDGATE_TEST_PG");
    if (!admin || !*admin) {
        snprintf(err, errlen,
                 "CARDGATE_TEST_PG is not set: it must hold the admin conninfo of a "
                 "throwaway PostgreSQL cluster (tests/run.sh sets it)");
        return -1;
    }
    st->db = ts_pg_create_db();
    if (!st->db) {
        snprintf(err, errlen, "cannot create a database in $CARDGATE_TEST_PG");
        return -1;
    }
    int rc = ts_cardgate_migrate(st->db);
    if (rc != 0) {
        snprintf(err, errlen, "cardgate migrate exited %d", rc);
    } else if (ts_sim_start(&st->sim, sim_args) != 0) {
        snprintf(err, errlen, "alipay-sim did not start");
    } else if (ts_cardgate_start(&st->cg, st->db, &st->sim, env) != 0) {
        snprintf(err, errlen, "cardgate did not start; see %s", st->cg.log);
    } else {
        return 0;
    }
    ts_stack_down(st);
    return -1;
}

int ts_stack_down(struct ts_stack *st)
{
    int status = st->cg.pid > 0 ? ts_cardgate_stop(&st->cg) : -1;
    ts_sim_stop(&st->sim);
    free(st->db);
    st->db = NULL;
    return status;
}

json_object *ts_json_of(const struct ts_http *r)
{
    json_object *o = r->body ? json_tokener_parse(r->body) : NULL;
    ck_assert_msg(o != NULL, "not JSON (status %ld): %s", r->status, r->body ? r->body : "");
    return o;
}

char *ts_json_at(const struct ts_http *r, const char *path)
{
    json_object *o = ts_json_of(r), *v = o;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    char *save = NULL;
    for (char *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        if (!json_object_object_get_ex(v, k, &v))
            v = NULL;
    char *s =
        v && !json_object_is_type(v, json_type_null) ? strdup(json_object_get_string(v)) : NULL;
    json_object_put(o);
    return s;
}

void ts_assert_field(const struct ts_http *r, const char *path, const char *want)
{
    char *got = ts_json_at(r, path);
    ck_assert_msg(got && strcmp(got, want) == 0, "%s: got %s, want %s (body %s)", path,
                  got ? got : "(absent)", want, r->body);
    free(got);
}

void ts_assert_error(const struct ts_http *r, long status, const char *code, const char *field)
{
    ck_assert_msg(r->status == status, "status %ld, want %ld: %s", r->status, status, r->body);
    ts_assert_field(r, "error.code", code);
    if (field)
        ts_assert_field(r, "error.field", field);
}

int ts_stop_unrelated(pid_t pid, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    kill(pid, SIGTERM);
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        char path[64], state = 0;
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            return 0; /* gone */
        /* "pid (comm) S ...": the state follows the last ')'. */
        char buf[512];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *close = strrchr(buf, ')');
        if (close && close[1] == ' ')
            state = close[2];
        if (state == 'Z' || state == 'X')
            return 0;
        usleep(20000);
    }
    return -1;
}

int ts_log_has_sanitizer_report(const char *log)
{
    char *text = ts_read_file(log, NULL);
    if (!text)
        return 1;
    int report = strstr(text, "Sanitizer") || strstr(text, "runtime error:");
    /* valgrind (TS_VALGRIND, run --quiet) writes only its reports, each
     * line "==PID== ...". */
    for (const char *line = text; line && *line && !report;) {
        const char *d = line + 2;
        if (strncmp(line, "==", 2) == 0) {
            while (*d >= '0' && *d <= '9')
                d++;
            report = d > line + 2 && strncmp(d, "==", 2) == 0;
        }
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    free(text);
    return report;
}

long long ts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- raw connections ------------------------------------------------------ */

int ts_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Sends what it can of len bytes (the server may close first); returns how
 * many went. */
size_t ts_send_some(int fd, const char *p, size_t len)
{
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, p + sent, len - sent, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        sent += (size_t)n;
    }
    return sent;
}

/* The answer's status code, 0 when the connection was closed without one,
 * -1 when nothing came within timeout_ms. */
int ts_read_status(int fd, int timeout_ms)
{
    char buf[4096];
    size_t got = 0;
    long long until = ts_now_ms() + timeout_ms;
    while (got < sizeof buf - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)(until - ts_now_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return -1;
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "\r\n"))
            break;
    }
    buf[got] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return 0;
    return status;
}

long ts_metric(const struct ts_cardgate *cg, const char *name)
{
    char url[128], line[128];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/metrics", cg->url);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    snprintf(line, sizeof(line), "\n%s ", name);
    const char *at = strstr(r.body, line);
    long v = at ? atol(at + strlen(line)) : -1;
    ts_http_free(&r);
    return v;
}

struct json_object *ts_sim_cards(const struct ts_sim *sim)
{
    char url[160];
    struct ts_http r;
    snprintf(url, sizeof url, "%s/cards", sim->control);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    json_object *o = json_tokener_parse(r.body), *list;
    ts_http_free(&r);
    ck_assert_ptr_nonnull(o);
    ck_assert(json_object_object_get_ex(o, "cards", &list));
    json_object *by_serial = json_object_new_object();
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *c = json_object_array_get_idx(list, i), *s;
        ck_assert(json_object_object_get_ex(c, "out_serial_no", &s));
        json_object *seen;
        if (json_object_object_get_ex(by_serial, json_object_get_string(s), &seen)) {
            ck_abort_msg("two cards at the simulator for out_serial_no %s",
                         json_object_get_string(s));
        }
        json_object_object_add(by_serial, json_object_get_string(s), json_object_get(c));
    }
    json_object_put(o);
    return by_serial;
}

long ts_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* PUT of JSON to cardgate's API, asserting 200. */
static void put_ok(const struct ts_cardgate *cg, const char *path, const char *body,
                   const char *what)
{
    char url[256];
    struct ts_http r;
    const char *const h[] = {TS_AUTH, TS_JSON, NULL};
    snprintf(url, sizeof(url), "%s%s", cg->url, path);
    ck_assert_int_eq(ts_http_call("PUT", url, h, body, &r), 0);
    ck_assert_msg(r.status == 200, "%s: %ld %s", what, r.status, r.body);
    ts_http_free(&r);
}

void ts_signup_setup(const struct ts_cardgate *cg, const char *tpl, const char *success_url)
{
    char path[128], body[512];
    snprintf(path, sizeof(path), "/v1/templates/%s/form", tpl);
    put_ok(cg, path,
           "{\"required\":[\"OPEN_FORM_FIELD_MOBILE\",\"OPEN_FORM_FIELD_NAME\"],"
           "\"optional\":[\"OPEN_FORM_FIELD_GENDER\",\"OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR\"]}",
           "form");
    snprintf(path, sizeof(path), "/v1/templates/%s/activation", tpl);
    snprintf(body, sizeof(body),
             "{\"valid_date\":\"2030-12-31 23:59:59\",\"level\":\"VIP1\",\"point\":\"0\","
             "\"balance\":\"0.00\",\"external_card_no_prefix\":\"M\"%s%s%s}",
             success_url ? ",\"success_url\":\"" : "", success_url ? success_url : "",
             success_url ? "\"" : "");
    put_ok(cg, path, body, "activation");
}

char *ts_member_signs_up(const struct ts_sim *sim, const char *tpl, const char *public_url,
                         const char *extra, char **auth_code)
{
    char url[256], body[512];
    struct ts_http r;
    const char *const h[] = {TS_JSON, NULL};
    snprintf(url, sizeof(url), "%s/members", sim->control);
    snprintf(body, sizeof(body), "{\"template_id\":\"%s\"%s%s}", tpl, extra ? "," : "",
             extra ? extra : "");
    ck_assert_int_eq(ts_http_call("POST", url, h, body, &r), 0);
    ck_assert_msg(r.status == 201, "member: %ld %s", r.status, r.body);
    char *cb = ts_json_at(&r, "callback_url");
    if (auth_code)
        *auth_code = ts_json_at(&r, "auth_code");
    ts_http_free(&r);
    ck_assert_ptr_nonnull(cb);
    ck_assert_msg(strncmp(cb, public_url, strlen(public_url)) == 0, "callback %s", cb);
    char *path = strdup(cb + strlen(public_url));
    free(cb);
    return path;
}
