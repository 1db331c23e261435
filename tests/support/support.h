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

/* Milliseconds on the monotonic clock. */
long long ts_now_ms(void);

/* Waits until something accepts on 127.0.0.1:port; 0, or -1 on timeout. */
int ts_wait_port(int port, int timeout_ms);

/* Sends sig and waits for the exit; returns the exit status as waitpid gives
 * it, or -1 when it had not exited within timeout_ms (then it is SIGKILLed). */
int ts_stop(pid_t pid, int sig, int timeout_ms);

/* A growing NUL-terminated buffer, and the libcurl write callback that
 * appends to it (CURLOPT_WRITEFUNCTION / HEADERFUNCTION, data = the buffer).
 * The caller frees p. */
struct ts_buf {
    char *p;
    size_t n;
};
size_t ts_buf_write(char *data, size_t size, size_t nmemb, void *arg);

/* One blocking HTTP call with libcurl. headers: NULL-terminated "Name: value"
 * strings, or NULL. body may be NULL. Fills out; returns 0, or -1 when no
 * HTTP answer came (then out->status is 0). */
struct ts_http {
    long status;
    char *body; /* NUL-terminated */
    size_t body_len;
    char *headers; /* raw response headers */
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
    char url[128];     /* gateway URL: http://127.0.0.1:PORT/gateway.do */
    char control[128]; /* control base: http://127.0.0.1:PORT/_sim */
};
/* extra_args: NULL-terminated extra command-line arguments, or NULL. */
int ts_sim_start(struct ts_sim *sim, const char *const extra_args[]);
void ts_sim_stop(struct ts_sim *sim);

/* Adds a fault rule to the simulator (POST /_sim/faults with this JSON);
 * returns 0 on 201. */
int ts_sim_fault(const struct ts_sim *sim, const char *json);
/* Clears the fault rules. */
int ts_sim_clear_faults(const struct ts_sim *sim);
/* The simulator's cards (GET /_sim/cards) as a new object keyed by
 * out_serial_no (the caller puts); asserts that no serial has two cards. */
struct json_object;
struct json_object *ts_sim_cards(const struct ts_sim *sim);
/* How many calls reached the gateway for out_serial_no (NULL: all). */
long ts_sim_calls(const struct ts_sim *sim, const char *out_serial_no);
/* How many calls of `method` reached the gateway (0 when none). */
long ts_sim_method_calls(const struct ts_sim *sim, const char *method);

/* Alipay's certificate mode with the vectors' test PKI (tests/vectors/cert,
 * app TS_CERT_APP_ID): the simulator's arguments appended to sim_args at
 * *na and cardgate's settings to env at *ne (either may be NULL), each then
 * NULL-terminated. The strings are static. */
#define TS_CERT_APP_ID "2021000000000001"
void ts_cert_mode(const char *sim_args[], size_t *na, const char *env[], size_t *ne);

/* A valid POST /v1/cards body: out_serial_no serial, external_card_no
 * "EXT-" serial, the vectors' template and user, level VIP1, point 1, and
 * `extra` ("" or more top-level members, each after a comma) before the
 * final brace. malloc'd; the caller frees. */
char *ts_open_body(const char *serial, const char *extra);

/* The API key every test cardgate accepts (caller name "pos"). */
#define TS_API_KEY "test-key-0123456789"
#define TS_AUTH "Authorization: Bearer " TS_API_KEY
#define TS_JSON "Content-Type: application/json; charset=utf-8"

/* A running cardgate. */
struct ts_cardgate {
    pid_t pid;
    int port;
    char url[64]; /* http://127.0.0.1:PORT */
    char log[256];
};

/* Stops a cardgate (or any process) that is not the caller's child — one an
 * unchecked fixture started in the runner — with SIGTERM and waits until it
 * has exited (gone, or a zombie its parent will reap). What it wrote last,
 * a sanitizer's leak report included, is in its log then. Returns 0, or -1
 * when it still runs after timeout_ms. */
int ts_stop_unrelated(pid_t pid, int timeout_ms);

/* 1 when the log file holds a sanitizer report (ASan, UBSan, LeakSanitizer),
 * a valgrind report (TS_VALGRIND), or cannot be read. */
int ts_log_has_sanitizer_report(const char *log);

/* Runs `cardgate migrate` on db; returns its exit status (0 on success). */
int ts_cardgate_migrate(const char *db);
/* Starts `cardgate serve` on a free port against db and sim, with the vector
 * keys, 2 workers, a 2 s gateway timeout and 1 s lock margin, no sweeper
 * (CARDGATE_SWEEP_INTERVAL_MS=0); extra_env
 * ("K=V", NULL-terminated, may be NULL) overrides or adds settings. Waits
 * until it accepts. Returns 0, or -1 (the log is in cg->log). */
int ts_cardgate_start(struct ts_cardgate *cg, const char *db, const struct ts_sim *sim,
                      const char *const extra_env[]);
/* The same on a given port (a restart behind a load balancer); one try. */
int ts_cardgate_start_port(struct ts_cardgate *cg, int port, const char *db,
                           const struct ts_sim *sim, const char *const extra_env[]);
/* SIGTERM and wait; returns the exit status as waitpid gives it. */
int ts_cardgate_stop(struct ts_cardgate *cg);

/* A member's sign-up set up on template tpl through cg's API: the form,
 * then the activation settings (success_url, or none). Asserts each 200. */
void ts_signup_setup(const struct ts_cardgate *cg, const char *tpl, const char *success_url);
/* A member fills in tpl's form (POST /_sim/members; extra: more JSON
 * members, or NULL): the callback's path and query on cardgate, after
 * public_url (where Alipay's redirect goes; asserted), malloc'd; the
 * auth code in *auth_code (malloc'd) when not NULL. */
char *ts_member_signs_up(const struct ts_sim *sim, const char *tpl, const char *public_url,
                         const char *extra, char **auth_code);
/* Resident memory of process pid in KiB, from /proc; -1 when unreadable. */
long ts_rss_kib(pid_t pid);
/* One unlabelled series of cg's /metrics ("cardgate_stale_requests"), -1
 * when absent. */
long ts_metric(const struct ts_cardgate *cg, const char *name);

/* One value of a SQL query's first row and column, as a long (-1 on error
 * or no row). Blocking, for assertions. */
long ts_pg_long(const char *db, const char *sql);

/* A private PostgreSQL cluster of the test's own (for tests that stop the
 * database), made with deploy/common.sh's start_pg. */
struct ts_pg {
    char dir[128];
    int port;
    char conninfo[256]; /* admin conninfo (dbname=postgres) */
};
int ts_pg_private_start(struct ts_pg *pg); /* initdb (first time) + start */
int ts_pg_private_stop(struct ts_pg *pg);  /* fast shutdown, data kept */
int ts_pg_private_restart(struct ts_pg *pg);
void ts_pg_private_destroy(struct ts_pg *pg);

/* Sends one HTTP call per thread, `n` at once (all threads released
 * together); out[i] receives each answer. */
void ts_http_parallel(int n, const char *method, const char *const urls[],
                      const char *const headers[], const char *body, struct ts_http out[]);

/* The answer's body as JSON (asserts that it is); the caller puts. */
struct json_object;
struct json_object *ts_json_of(const struct ts_http *r);
/* The value at a dotted path of the answer's JSON body ("error.code") as a
 * string, malloc'd; NULL when absent or null. */
char *ts_json_at(const struct ts_http *r, const char *path);
/* Asserts the string at path. */
void ts_assert_field(const struct ts_http *r, const char *path, const char *want);
/* Asserts an error answer: its status, error.code and, when field is not
 * NULL, error.field. */
void ts_assert_error(const struct ts_http *r, long status, const char *code, const char *field);

/* What most integration tests stand on: a fresh migrated database, the
 * simulator (sim_args: extra arguments, may be NULL) and cardgate (env:
 * extra settings, may be NULL). On failure whatever was started is stopped
 * and -1 returned with the reason in err. */
struct ts_stack {
    char *db;
    struct ts_sim sim;
    struct ts_cardgate cg;
};
int ts_stack_up(struct ts_stack *st, const char *const sim_args[], const char *const env[],
                char *err, size_t errlen);
/* Stops cardgate (returning its exit status as waitpid gives it, -1 when it
 * was not running) and the simulator, and frees the database name. */
int ts_stack_down(struct ts_stack *st);

/* Raw loopback connections, for what an HTTP client library will not send.
 * ts_connect: a connected socket to 127.0.0.1:port (asserts). ts_send_some:
 * sends what it can of len bytes (the server may close first), returns how
 * many went. ts_read_status: the answer's status code, 0 when the
 * connection was closed without one, -1 when nothing came in timeout_ms. */
int ts_connect(int port);
size_t ts_send_some(int fd, const char *p, size_t len);
int ts_read_status(int fd, int timeout_ms);

/* Runs a Check suite with libcurl initialised around it (the HTTP helpers
 * need it) and returns the process exit status: 0 when every test passed. */
struct Suite;
int ts_run_suite(struct Suite *s);

#endif
