/* SIGHUP against the real binaries: cardgate reads its configuration file
 * again and takes the API keys, the log level and Alipay's public key
 * (answers signed with the previous key are still accepted for
 * CARDGATE_ALIPAY_KEY_GRACE_S), logs what changed, keeps serving, and keeps
 * what is in force when the new settings are wrong. alipay-sim rotates the
 * key it signs with through PUT /_sim/signing-key. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

#define POS_HASH "0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d"
#define CRM_KEY "crm-key-9876543210" /* sha256: 95b6abed... below */
#define CRM_AUTH "Authorization: Bearer " CRM_KEY

static char dir[] = "/tmp/cardgate-reload-XXXXXX";
static char ini[256], pubfile[256], log_path[256], url[64];

static void run(const char *cmd)
{
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
}

/* The INI file cardgate reads at start and on SIGHUP. */
static void write_ini(const char *db, const char *sim_url, int port, const char *api_keys,
                      const char *level)
{
    FILE *f = fopen(ini, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "[server]\nlisten = 127.0.0.1:%d\nworkers = 2\n[database]\nurl = %s\n"
            "[auth]\napi_keys = %s\n"
            "[alipay]\napp_id = 2014072300007148\nprivate_key_file = %s\npublic_key_file = %s\n"
            "gateway = %s\nallow_http = 1\ntimeout_ms = 2000\nkey_grace_s = 2\n"
            "[log]\nlevel = %s\n",
            port, db, api_keys, ts_vector("keys/app_private_pkcs8_oneline.txt"), pubfile, sim_url,
            level);
    fclose(f);
}

static long get(const char *path, const char *auth)
{
    char u[256];
    struct ts_http r;
    const char *h[] = {auth, NULL};
    snprintf(u, sizeof(u), "%s%s", url, path);
    if (ts_http_call("GET", u, h, NULL, &r) < 0)
        return 0;
    long s = r.status;
    ts_http_free(&r);
    return s;
}

static void sim_key(const struct ts_sim *sim, const char *file)
{
    char u[200], body[400];
    struct ts_http r;
    const char *h[] = {TS_JSON, NULL};
    snprintf(u, sizeof(u), "%s/signing-key", sim->control);
    snprintf(body, sizeof(body), "{\"file\":\"%s\"}", file);
    ck_assert_int_eq(ts_http_call("PUT", u, h, body, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ts_http_free(&r);
}

START_TEST(test_sighup_reload)
{
    struct ts_sim sim;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(ini, sizeof(ini), "%s/cardgate.ini", dir);
    snprintf(pubfile, sizeof(pubfile), "%s/alipay_public.pem", dir);
    snprintf(log_path, sizeof(log_path), "%s/cardgate.log", dir);
    char cmd[2048], b_priv[256], b_pub[256];
    snprintf(b_priv, sizeof(b_priv), "%s/b.pem", dir);
    snprintf(b_pub, sizeof(b_pub), "%s/b_pub.pem", dir);
    snprintf(cmd, sizeof(cmd),
             "openssl genrsa -out %s 2048 2>/dev/null && openssl rsa -in %s -pubout -out %s "
             "2>/dev/null && cp %s %s",
             b_priv, b_priv, b_pub, ts_vector("keys/alipay_public_sim.pem"), pubfile);
    run(cmd);

    char *db = ts_pg_create_db();
    ck_assert_ptr_nonnull(db);
    ck_assert_int_eq(ts_cardgate_migrate(db), 0);
    ck_assert_int_eq(ts_sim_start(&sim, NULL), 0);
    int port = ts_free_port();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    write_ini(db, sim.url, port, "pos:" POS_HASH, "info");
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/cardgate", CARDGATE_BIN_DIR);
    const char *argv[] = {bin, "--config", ini, "serve", NULL};
    pid_t pid = ts_spawn(argv, NULL, log_path);
    ck_assert_int_eq(ts_wait_port(port, 15000), 0);

    /* A card, then Alipay rotates its key: its answers no longer verify. */
    char u[256], body[512], path[128];
    struct ts_http r;
    const char *h[] = {TS_AUTH, TS_JSON, NULL};
    snprintf(u, sizeof(u), "%s/v1/cards", url);
    snprintf(body, sizeof(body),
             "{\"out_serial_no\":\"reload-1\",\"card_template_id\":"
             "\"20170308000000000058101000300045\",\"user_id\":\"2088302463082075\","
             "\"card\":{\"open_date\":\"2024-02-20 21:20:46\",\"valid_date\":"
             "\"2030-02-20 21:20:46\"}}");
    ck_assert_int_eq(ts_http_call("POST", u, h, body, &r), 0);
    ck_assert_int_eq(r.status, 201);
    char *biz = ts_json_at(&r, "biz_card_no");
    ts_http_free(&r);
    snprintf(path, sizeof(path), "/v1/cards/%s", biz);
    ck_assert_int_eq(get(path, TS_AUTH), 200);
    sim_key(&sim, b_priv);
    ck_assert_int_eq(get(path, TS_AUTH), 502);
    ck_assert_int_eq(get(path, CRM_AUTH), 401);

    /* The new key, a new caller and another log level: SIGHUP. */
    snprintf(cmd, sizeof(cmd), "cp %s %s", b_pub, pubfile);
    run(cmd);
    write_ini(db, sim.url, port,
              "pos:" POS_HASH
              ",crm:95b6abedcff1cf5468af01796c0a1442602757dd8e83b7a95cae60588a84f448",
              "debug");
    kill(pid, SIGHUP);
    long s = 0;
    for (int i = 0; i < 100 && s != 200; i++) {
        s = get(path, CRM_AUTH);
        if (s != 200)
            usleep(50000);
    }
    ck_assert_int_eq(s, 200); /* the new caller, and the new key verifies */
    ck_assert_int_eq(get(path, TS_AUTH), 200);
    /* Answers still signed with the previous key pass during the grace. */
    sim_key(&sim, ts_vector("keys/alipay_private_sim.pem"));
    ck_assert_int_eq(get(path, TS_AUTH), 200);
    usleep(2500000);
    ck_assert_int_eq(get(path, TS_AUTH), 502);

    /* A reload that cannot be taken keeps what is in force. */
    sim_key(&sim, b_priv);
    FILE *f = fopen(pubfile, "w");
    fputs("not a key\n", f);
    fclose(f);
    kill(pid, SIGHUP);
    usleep(500000);
    ck_assert_int_eq(kill(pid, 0), 0); /* still serving */
    ck_assert_int_eq(get(path, CRM_AUTH), 200);

    int status = ts_stop(pid, SIGTERM, 15000);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    size_t len;
    char *log = ts_read_file(log_path, &len);
    ck_assert_ptr_nonnull(log);
    ck_assert_msg(strstr(log, "reloaded") && strstr(log, "rotated") &&
                      strstr(log, "1 (was") == NULL && strstr(log, "2 (was 1)"),
                  "the log does not say what changed:\n%s", log);
    ck_assert_msg(strstr(log, "reload refused"), "the log does not say the reload was refused");
    free(log);
    ts_sim_stop(&sim);
    free(biz);
    free(db);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    run(cmd);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reload");
    TCase *tc = tcase_create("sighup");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_sighup_reload);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
