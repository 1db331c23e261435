/* The cardgate command line and start-up checks, run as a newcomer would:
 * every missing or bad setting stops `serve` with one line naming it. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

/* Runs cardgate with args and extra env; returns its exit code and its
 * output (malloc'd) in *out. Kills it after timeout_ms (exit code -1). */
static int run_cardgate(const char *const args[], const char *const env[], char **out,
                        int timeout_ms)
{
    char bin[512], log[128];
    snprintf(bin, sizeof(bin), "%s/cardgate", CARDGATE_BIN_DIR);
    snprintf(log, sizeof(log), "/tmp/cardgate-startup-%d-XXXXXX", (int)getpid());
    int fd = mkstemp(log);
    close(fd);
    const char *argv[16] = {bin};
    size_t n = 1;
    for (size_t i = 0; args && args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = ts_spawn(argv, env, log);
    int code = -1, status;
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            pid = 0;
            break;
        }
        usleep(20000);
    }
    if (pid)
        ts_stop(pid, SIGKILL, 2000);
    *out = ts_read_file(log, NULL);
    unlink(log);
    return code;
}

/* "K=V" in one of a few static slots (each test is its own process). */
static const char *env_kv(const char *k, const char *v)
{
    static char slots[16][1024];
    static int next;
    char *s = slots[next++ % 16];
    snprintf(s, 1024, "%s=%s", k, v);
    return s;
}

/* A complete serve environment; `drop` names a variable to leave out and
 * `over` replaces one ("K=V"). */
static const char **serve_env(const char *db, const char *drop, const char *over)
{
    static const char *env[16];
    size_t n = 0;
    char port[32];
    snprintf(port, sizeof(port), "127.0.0.1:%d", ts_free_port());
    const char *kv[][2] = {
        {"CARDGATE_DATABASE_URL", db},
        {"CARDGATE_ALIPAY_APP_ID", "2014072300007148"},
        {"CARDGATE_ALIPAY_PRIVATE_KEY_FILE", ts_vector("keys/app_private_pkcs8_oneline.txt")},
        {"CARDGATE_ALIPAY_PUBLIC_KEY_FILE", ts_vector("keys/alipay_public_sim_oneline.txt")},
        {"CARDGATE_ALIPAY_GATEWAY", "http://127.0.0.1:1/gateway.do"},
        {"CARDGATE_ALIPAY_ALLOW_HTTP", "1"},
        {"CARDGATE_LISTEN", port},
        {"CARDGATE_WORKERS", "1"},
    };
    for (size_t i = 0; i < sizeof(kv) / sizeof(*kv); i++) {
        if (drop && strcmp(drop, kv[i][0]) == 0)
            continue;
        if (over && strncmp(over, kv[i][0], strlen(kv[i][0])) == 0 && over[strlen(kv[i][0])] == '=')
            continue;
        env[n++] = env_kv(kv[i][0], kv[i][1]);
    }
    if (over)
        env[n++] = over;
    env[n] = NULL;
    return env;
}

/* Certificate mode's environment (the vectors' test PKI, tests/vectors/cert)
 * with each "K=V" of over replacing or adding one setting ("K=" unsets). */
static const char **cert_env(const char *db, const char *const over[])
{
    static const char *env[24];
    const char **base = serve_env(db, NULL, NULL);
    size_t n = 0;
    for (; base[n]; n++)
        env[n] = base[n];
    ts_cert_mode(NULL, NULL, env, &n);
    for (size_t i = 0; over && over[i]; i++)
        env[n++] = over[i];
    env[n] = NULL;
    return env;
}

/* serve with env exits 1 with one line naming `names` (and `also`). */
static void assert_refused_env(const char **env, const char *names, const char *also)
{
    char *out = NULL;
    const char *args[] = {"serve", NULL};
    int code = run_cardgate(args, env, &out, 20000);
    ck_assert_msg(code == 1, "exit %d, output: %s", code, out);
    ck_assert_msg(strstr(out, names) != NULL, "output does not name %s: %s", names, out);
    if (also)
        ck_assert_msg(strstr(out, also) != NULL, "output lacks '%s': %s", also, out);
    /* One line. */
    char *nl = strchr(out, '\n');
    ck_assert_msg(nl && nl[1] == '\0', "more than one line: %s", out);
    free(out);
}

static void assert_refused(const char *db, const char *drop, const char *over, const char *names,
                           const char *also)
{
    assert_refused_env(serve_env(db, drop, over), names, also);
}

static char *migrated_db(void)
{
    char *db = ts_pg_create_db();
    ck_assert_msg(db != NULL, "CARDGATE_TEST_PG must name a PostgreSQL cluster (see tests/run.sh)");
    ck_assert_int_eq(ts_cardgate_migrate(db), 0);
    return db;
}

START_TEST(test_help_and_version)
{
    char *out;
    const char *v[] = {"--version", NULL};
    ck_assert_int_eq(run_cardgate(v, NULL, &out, 10000), 0);
    ck_assert_str_eq(out, "cardgate " CARDGATE_TEST_VERSION "\n");
    free(out);
    const char *h[] = {"--help", NULL};
    ck_assert_int_eq(run_cardgate(h, NULL, &out, 10000), 0);
    ck_assert_ptr_nonnull(strstr(out, "migrate"));
    ck_assert_ptr_nonnull(strstr(out, "--config"));
    free(out);
    const char *bad[] = {"sevre", NULL};
    ck_assert_int_eq(run_cardgate(bad, NULL, &out, 10000), 2);
    free(out);
}
END_TEST

START_TEST(test_missing_settings_named)
{
    char *db = migrated_db();
    assert_refused(db, "CARDGATE_DATABASE_URL", NULL, "CARDGATE_DATABASE_URL", NULL);
    assert_refused(db, "CARDGATE_ALIPAY_APP_ID", NULL, "CARDGATE_ALIPAY_APP_ID", NULL);
    assert_refused(db, "CARDGATE_ALIPAY_PRIVATE_KEY_FILE", NULL, "CARDGATE_ALIPAY_PRIVATE_KEY_FILE",
                   NULL);
    assert_refused(db, "CARDGATE_ALIPAY_PUBLIC_KEY_FILE", NULL, "CARDGATE_ALIPAY_PUBLIC_KEY_FILE",
                   NULL);
    free(db);
}
END_TEST

START_TEST(test_bad_settings_named)
{
    char *db = migrated_db();
    assert_refused(db, NULL, "CARDGATE_WORKERS=many", "CARDGATE_WORKERS", NULL);
    assert_refused(db, NULL, "CARDGATE_ALIPAY_SIGN_TYPE=MD5", "CARDGATE_ALIPAY_SIGN_TYPE", NULL);
    assert_refused(db, NULL, "CARDGATE_API_KEYS=pos:nothex", "CARDGATE_API_KEYS", NULL);
    /* A plain http:// gateway without CARDGATE_ALIPAY_ALLOW_HTTP=1. */
    assert_refused(db, "CARDGATE_ALIPAY_ALLOW_HTTP", NULL, "CARDGATE_ALIPAY_GATEWAY",
                   "CARDGATE_ALIPAY_ALLOW_HTTP=1");
    /* Key files: unreadable, not a key, and the app's own public key where
     * Alipay's belongs. */
    assert_refused(db, NULL, "CARDGATE_ALIPAY_PRIVATE_KEY_FILE=/nonexistent/app.pem",
                   "CARDGATE_ALIPAY_PRIVATE_KEY_FILE", "/nonexistent/app.pem");
    const char *over = env_kv("CARDGATE_ALIPAY_PRIVATE_KEY_FILE", ts_vector("response_cases.json"));
    assert_refused(db, NULL, over, "CARDGATE_ALIPAY_PRIVATE_KEY_FILE", "response_cases.json");
    over = env_kv("CARDGATE_ALIPAY_PUBLIC_KEY_FILE", ts_vector("keys/app_public.pem"));
    assert_refused(db, NULL, over, "CARDGATE_ALIPAY_PUBLIC_KEY_FILE", "own public key");
    free(db);
}
END_TEST

/* Certificate mode starts with the three files, and each way to get them
 * wrong is one line naming the setting; the AES key likewise. */
START_TEST(test_cert_mode_refusals)
{
    char *db = migrated_db();
    char *out = NULL;
    const char *args[] = {"serve", NULL};
    /* the right files: it starts (and is stopped by the timeout) */
    int code = run_cardgate(args, cert_env(db, NULL), &out, 3000);
    ck_assert_msg(code == -1, "exit %d: %s", code, out);
    ck_assert_msg(strstr(out, "\"app_cert_sn\":\"0fa88bf29337fdfe54f5511c4cb6a96c\""), "%s", out);
    ck_assert_msg(strstr(out, "\"alipay_root_cert_sn\":\"02eb7b94e17272a95fd383f67fe8ada0_"
                              "8dcabef931a14c4de1675387b8ef6921\""),
                  "%s", out);
    free(out);

    const char *both[] = {
        env_kv("CARDGATE_ALIPAY_PUBLIC_KEY_FILE", ts_vector("keys/alipay_public_sim.pem")), NULL};
    assert_refused_env(cert_env(db, both), "CARDGATE_ALIPAY_PUBLIC_KEY_FILE and the certificate",
                       "keep one");
    const char *two[] = {"CARDGATE_ALIPAY_ROOT_CERT_FILE=", NULL};
    assert_refused_env(cert_env(db, two), "CARDGATE_ALIPAY_ROOT_CERT_FILE", "all three");
    const char *unreadable[] = {"CARDGATE_ALIPAY_APP_CERT_FILE=/nonexistent/app.crt", NULL};
    assert_refused_env(cert_env(db, unreadable), "CARDGATE_ALIPAY_APP_CERT_FILE",
                       "/nonexistent/app.crt: cannot read");
    const char *not_cert[] = {
        env_kv("CARDGATE_ALIPAY_CERT_FILE", ts_vector("keys/alipay_public_sim.pem")), NULL};
    assert_refused_env(cert_env(db, not_cert), "CARDGATE_ALIPAY_CERT_FILE",
                       "no PEM certificate in it");
    /* the app certificate of another key (Alipay's in its place) */
    const char *not_pair[] = {
        env_kv("CARDGATE_ALIPAY_APP_CERT_FILE", ts_vector("cert/alipayCertPublicKey_RSA2.crt")),
        NULL};
    assert_refused_env(cert_env(db, not_pair), "CARDGATE_ALIPAY_APP_CERT_FILE",
                       "is not the certificate of the app's private key");
    /* Alipay's certificate: under an impostor CA of the same name, expired,
     * or the app's own */
    const char *impostor[] = {env_kv("CARDGATE_ALIPAY_CERT_FILE",
                                     ts_vector("cert/alipayCertPublicKey_RSA2_unknown_ca.crt")),
                              NULL};
    assert_refused_env(cert_env(db, impostor), "CARDGATE_ALIPAY_CERT_FILE",
                       "does not chain to the root bundle");
    const char *expired[] = {
        env_kv("CARDGATE_ALIPAY_CERT_FILE", ts_vector("cert/alipayCertPublicKey_RSA2_expired.crt")),
        NULL};
    assert_refused_env(cert_env(db, expired), "CARDGATE_ALIPAY_CERT_FILE", "expired");
    const char *own[] = {env_kv("CARDGATE_ALIPAY_CERT_FILE",
                                ts_vector("cert/appCertPublicKey_2021000000000001.crt")),
                         NULL};
    assert_refused_env(cert_env(db, own), "CARDGATE_ALIPAY_CERT_FILE", "the app's own certificate");
    /* a bundle without an RSA-signed root */
    const char *ec_roots[] = {
        env_kv("CARDGATE_ALIPAY_ROOT_CERT_FILE", ts_vector("cert/ca/root_e1.crt")), NULL};
    assert_refused_env(cert_env(db, ec_roots), "CARDGATE_ALIPAY_ROOT_CERT_FILE",
                       "no RSA-signed root");
    /* the AES key, never echoed */
    const char *aes[] = {"CARDGATE_ALIPAY_ENCRYPT_KEY=c2VjcmV0LXZhbHVl", NULL};
    assert_refused_env(cert_env(db, aes), "CARDGATE_ALIPAY_ENCRYPT_KEY", "not an AES key");
    run_cardgate(args, cert_env(db, aes), &out, 20000);
    ck_assert_ptr_null(strstr(out, "c2VjcmV0LXZhbHVl"));
    free(out);
    free(db);
}
END_TEST

START_TEST(test_schema_behind_refused)
{
    char *db = ts_pg_create_db();
    ck_assert_ptr_nonnull(db);
    char *out;
    const char *args[] = {"serve", NULL};
    int code = run_cardgate(args, serve_env(db, NULL, NULL), &out, 20000);
    ck_assert_int_eq(code, 1);
    ck_assert_msg(strstr(out, "cardgate migrate") != NULL, "%s", out);
    free(out);
    free(db);
}
END_TEST

/* Several instances migrating at once all succeed, one set of rows. */
START_TEST(test_concurrent_migrate)
{
    char *db = ts_pg_create_db();
    ck_assert_ptr_nonnull(db);
    char bin[512], env_db[1024];
    snprintf(bin, sizeof(bin), "%s/cardgate", CARDGATE_BIN_DIR);
    snprintf(env_db, sizeof(env_db), "CARDGATE_DATABASE_URL=%s", db);
    const char *argv[] = {bin, "migrate", NULL};
    const char *env[] = {env_db, NULL};
    pid_t pids[4];
    for (int i = 0; i < 4; i++)
        pids[i] = ts_spawn(argv, env, NULL);
    for (int i = 0; i < 4; i++) {
        int status;
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    ck_assert_int_eq(ts_pg_long(db, "SELECT count(*) FROM schema_migrations"),
                     ts_pg_long(db, "SELECT count(DISTINCT version) FROM schema_migrations"));
    ck_assert_int_ge(ts_pg_long(db, "SELECT count(*) FROM schema_migrations"), 1);
    ck_assert_int_eq(ts_cardgate_migrate(db), 0);
    free(db);
}
END_TEST

/* The INI file is read and a variable wins over it. */
START_TEST(test_config_file_and_env_precedence)
{
    char *db = migrated_db();
    int file_port = ts_free_port(), env_port;
    do
        env_port = ts_free_port();
    while (env_port == file_port);
    char path[] = "/tmp/cardgate-ini-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "[server]\nlisten = 127.0.0.1:%d\nworkers = 1\n[database]\nurl = %s\n"
            "[alipay]\napp_id = 2014072300007148\nprivate_key_file = %s\npublic_key_file = %s\n"
            "gateway = http://127.0.0.1:1/gateway.do\nallow_http = 1\n",
            file_port, db, ts_vector("keys/app_private_pkcs1_oneline.txt"),
            ts_vector("keys/alipay_public_sim.pem"));
    fclose(f);
    char bin[512], listen[64];
    snprintf(bin, sizeof(bin), "%s/cardgate", CARDGATE_BIN_DIR);
    snprintf(listen, sizeof(listen), "CARDGATE_LISTEN=127.0.0.1:%d", env_port);
    const char *argv[] = {bin, "--config", path, "serve", NULL};
    const char *env[] = {listen, NULL};
    pid_t pid = ts_spawn(argv, env, NULL);
    ck_assert_int_eq(ts_wait_port(env_port, 15000), 0);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", env_port);
    struct ts_http r;
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ts_http_free(&r);
    int status = ts_stop(pid, SIGTERM, 15000);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    unlink(path);
    free(db);
}
END_TEST

/* CARDGATE_OPS_LISTEN: /metrics only there, the probes on both, the API
 * only on its own listener. */
START_TEST(test_ops_listener)
{
    struct ts_stack st;
    char err[512], ops[64], env0[96];
    int port = ts_free_port();
    snprintf(ops, sizeof(ops), "http://127.0.0.1:%d", port);
    snprintf(env0, sizeof(env0), "CARDGATE_OPS_LISTEN=127.0.0.1:%d", port);
    const char *env[] = {env0, NULL};
    ck_assert_msg(ts_stack_up(&st, NULL, env, err, sizeof(err)) == 0, "%s", err);
    static const struct {
        int on_ops;
        const char *path;
        long status;
    } cases[] = {
        {1, "/metrics", 200}, {1, "/healthz", 200}, {1, "/readyz", 200}, {1, "/v1/cards", 404},
        {0, "/metrics", 404}, {0, "/healthz", 200}, {0, "/readyz", 200},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char url[160];
        struct ts_http r;
        snprintf(url, sizeof(url), "%s%s", cases[i].on_ops ? ops : st.cg.url, cases[i].path);
        ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
        ck_assert_msg(r.status == cases[i].status, "%s: %ld, want %ld", url, r.status,
                      cases[i].status);
        ts_http_free(&r);
    }
    /* `cardgate health` (the image's HEALTHCHECK) asks the ops listener of
     * the same settings; it fails when nothing answers there. */
    char *out, api[96];
    snprintf(api, sizeof(api), "CARDGATE_LISTEN=127.0.0.1:%d", st.cg.port);
    const char *health[] = {"health", NULL};
    const char *same[] = {api, env0, NULL};
    ck_assert_int_eq(run_cardgate(health, same, &out, 10000), 0);
    free(out);
    char elsewhere[96];
    snprintf(elsewhere, sizeof(elsewhere), "CARDGATE_OPS_LISTEN=0.0.0.0:%d", ts_free_port());
    const char *other[] = {api, elsewhere, NULL};
    ck_assert_int_eq(run_cardgate(health, other, &out, 10000), 1);
    ck_assert_ptr_nonnull(strstr(out, "/healthz"));
    free(out);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* A gateway behind TLS whose certificate does not verify is refused: the
 * call never reaches it (502 ALIPAY_UNAVAILABLE); with its CA given in
 * CARDGATE_ALIPAY_CA_FILE, the same gateway works. */
START_TEST(test_gateway_tls_verified)
{
    char dir[] = "/tmp/cardgate-tls-XXXXXX", cert[128], key[128], cmd[512];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
             key, cert);
    ck_assert_int_eq(system(cmd), 0);
    int tls_port = ts_free_port();
    char tls_listen[64], gateway[128], gw_env[160], ca_env[192];
    snprintf(tls_listen, sizeof(tls_listen), "127.0.0.1:%d", tls_port);
    snprintf(gateway, sizeof(gateway), "https://127.0.0.1:%d/gateway.do", tls_port);
    snprintf(gw_env, sizeof(gw_env), "CARDGATE_ALIPAY_GATEWAY=%s", gateway);
    snprintf(ca_env, sizeof(ca_env), "CARDGATE_ALIPAY_CA_FILE=%s", cert);
    const char *sim_args[] = {"--tls-listen", tls_listen, "--tls-cert", cert,
                              "--tls-key",    key,        NULL};
    const char *env[] = {gw_env, NULL};
    struct ts_stack st;
    char err[512];
    ck_assert_msg(ts_stack_up(&st, sim_args, env, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(ts_wait_port(tls_port, 10000), 0);

    char url[128];
    const char *h[] = {TS_AUTH, TS_JSON, NULL};
    const char *body = "{\"out_serial_no\":\"tls-1\",\"card_template_id\":"
                       "\"20170308000000000058101000300045\",\"user_id\":\"2088302463082075\","
                       "\"card\":{\"open_date\":\"2024-02-20 21:20:46\",\"valid_date\":"
                       "\"2030-02-20 21:20:46\"}}";
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/v1/cards", st.cg.url);
    ck_assert_int_eq(ts_http_call("POST", url, h, body, &r), 0);
    ts_assert_error(&r, 502, "ALIPAY_UNAVAILABLE", NULL);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_calls(&st.sim, "tls-1"), 0); /* nothing reached the gateway */

    ck_assert_int_eq(ts_cardgate_stop(&st.cg), 0);
    const char *env2[] = {gw_env, ca_env, NULL};
    ck_assert_int_eq(ts_cardgate_start(&st.cg, st.db, &st.sim, env2), 0);
    snprintf(url, sizeof(url), "%s/v1/cards", st.cg.url);
    ck_assert_int_eq(ts_http_call("POST", url, h, body, &r), 0);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_calls(&st.sim, "tls-1"), 1);
    ck_assert_int_eq(ts_stack_down(&st), 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("startup");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_help_and_version);
    tcase_add_test(tc, test_missing_settings_named);
    tcase_add_test(tc, test_bad_settings_named);
    tcase_add_test(tc, test_cert_mode_refusals);
    tcase_add_test(tc, test_schema_behind_refused);
    tcase_add_test(tc, test_concurrent_migrate);
    tcase_add_test(tc, test_config_file_and_env_precedence);
    tcase_add_test(tc, test_ops_listener);
    tcase_add_test(tc, test_gateway_tls_verified);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
