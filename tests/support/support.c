/* Test support: see support.h. */
#include "support.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int ts_free_port(void)
{
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
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

struct growbuf {
    char *p;
    size_t n;
};

static size_t grow_write(char *data, size_t size, size_t nmemb, void *arg)
{
    struct growbuf *b = arg;
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
    struct growbuf b = {0}, h = {0};
    struct curl_slist *hl = NULL;
    CURL *c = curl_easy_init();
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, grow_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, grow_write);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
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

int ts_sim_start(struct ts_sim *sim, const char *const extra_args[])
{
    char listen[64], bin[512], log[512];
    memset(sim, 0, sizeof(*sim));
    sim->port = ts_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", sim->port);
    snprintf(bin, sizeof(bin), "%s/alipay-sim", CARDGATE_BIN_DIR);
    snprintf(log, sizeof(log), "%s/../tests/alipay-sim-%d.log", CARDGATE_BIN_DIR, sim->port);
    const char *argv[32] = {bin,
                            "--listen",
                            listen,
                            "--app-public-key",
                            ts_vector("keys/app_public.pem"),
                            "--alipay-private-key",
                            ts_vector("keys/alipay_private_sim.pem")};
    size_t n = 7;
    for (size_t i = 0; extra_args && extra_args[i] && n < 31; i++)
        argv[n++] = extra_args[i];
    argv[n] = NULL;
    sim->pid = ts_spawn(argv, NULL, log);
    if (sim->pid < 0 || ts_wait_port(sim->port, 10000) < 0) {
        fprintf(stderr, "alipay-sim did not start; see %s\n", log);
        return -1;
    }
    snprintf(sim->url, sizeof(sim->url), "http://127.0.0.1:%d/gateway.do", sim->port);
    snprintf(sim->control, sizeof(sim->control), "http://127.0.0.1:%d/_sim", sim->port);
    return 0;
}

void ts_sim_stop(struct ts_sim *sim)
{
    if (sim->pid > 0)
        ts_stop(sim->pid, SIGTERM, 5000);
    sim->pid = 0;
}
