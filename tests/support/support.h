/* Test support: what the unit and integration tests share.
 * Everything here may block: it runs in test processes, never in cardgate. */
#ifndef CARDGATE_TEST_SUPPORT_H
#define CARDGATE_TEST_SUPPORT_H

#include <stddef.h>
#include <sys/types.h>

/* A loopback TCP port below 32768 that was free a moment ago (the range
 * 32768-60999 belongs to outgoing connections and can collide). */
int ts_free_port(void);

/* Path of a file under tests/vectors, in a static buffer per call slot
 * (valid until 8 more calls). */
const char *ts_vector(const char *relpath);

/* Reads a whole file; malloc'd, NUL-terminated, caller frees. NULL on error. */
char *ts_read_file(const char *path, size_t *len);

/* Starts argv[0] (a path) with the current environment plus `env`
 * ("KEY=VALUE" strings, NULL-terminated, may be NULL); its stdout and
 * stderr go to logfile (appended) when given. Returns the pid, or -1. */
pid_t ts_spawn(const char *const argv[], const char *const env[], const char *logfile);

/* Waits until something accepts on 127.0.0.1:port; 0, or -1 on timeout. */
int ts_wait_port(int port, int timeout_ms);

/* Sends sig and waits for the exit; returns the exit status as waitpid gives
 * it, or -1 when it had not exited within timeout_ms (then it is SIGKILLed). */
int ts_stop(pid_t pid, int sig, int timeout_ms);

/* One blocking HTTP call with libcurl. headers: NULL-terminated "Name: value"
 * strings, or NULL. body may be NULL. Fills out; returns 0, or -1 when no
 * HTTP answer came (then out->status is 0). */
struct ts_http {
    long status;
    char *body;     /* NUL-terminated */
    size_t body_len;
    char *headers;  /* raw response headers */
};
int ts_http_call(const char *method, const char *url, const char *const headers[], const char *body,
                 struct ts_http *out);
/* The value of response header `name` (case-insensitive), malloc'd, or NULL. */
char *ts_http_header(const struct ts_http *r, const char *name);
void ts_http_free(struct ts_http *r);

/* A fresh, empty database in the throwaway cluster whose admin conninfo is
 * in $CARDGATE_TEST_PG (set by the test command). Returns its conninfo,
 * malloc'd; NULL when CARDGATE_TEST_PG is unset or the cluster refuses. */
char *ts_pg_create_db(void);

/* The simulator, started on a free port with the vector keys. */
struct ts_sim {
    pid_t pid;
    int port;
    char url[128];      /* gateway URL: http://127.0.0.1:PORT/gateway.do */
    char control[128];  /* control base: http://127.0.0.1:PORT/_sim */
};
/* extra_args: NULL-terminated extra command-line arguments, or NULL. */
int ts_sim_start(struct ts_sim *sim, const char *const extra_args[]);
void ts_sim_stop(struct ts_sim *sim);

#endif
