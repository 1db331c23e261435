/* Certificate mode and content encryption end to end: cardgate against
 * alipay-sim in each mode and both, with the vectors' test PKI
 * (tests/vectors/cert) and AES key. Alipay rotating its certificate: one
 * download for many answers across two instances and a restart; a
 * certificate that does not chain is refused and never stored. */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "support.h"

#define AES_KEY "EREREREREREREREREREREQ=="
#define OTHER_AES_KEY "TwLAzlBZt78H4a4GQi8UwQ=="
#define DOWNLOAD "alipay.open.app.alipaycert.download"
#define SN_ROTATED "04ac1e4d72a3fde9877efee9fe6af827"
#define PUBLIC_URL "https://cards.example.test"
#define SUCCESS_URL "https://shop.example.test/welcome"

enum mode { CERT = 1, AES = 2 };

static const char *cert_path(const char *file)
{
    static char slots[8][512];
    static int next;
    char *s = slots[next++ % 8], rel[256];
    snprintf(rel, sizeof(rel), "cert/%s", file);
    snprintf(s, 512, "%s", ts_vector(rel));
    return s;
}

/* The simulator's arguments and cardgate's settings for `modes`. */
static void mode_args(int modes, const char *sim_aes, const char *sim_args[16], const char *env[16])
{
    size_t a = 0, e = 0;
    if (modes & CERT)
        ts_cert_mode(sim_args, &a, env, &e);
    if (modes & AES) {
        sim_args[a++] = "--aes-key";
        sim_args[a++] = sim_aes ? sim_aes : AES_KEY;
        env[e++] = "CARDGATE_ALIPAY_ENCRYPT_KEY=" AES_KEY;
    }
    env[e++] = "CARDGATE_PUBLIC_URL=" PUBLIC_URL;
    sim_args[a] = NULL;
    env[e] = NULL;
}

static void up(struct ts_stack *st, int modes, const char *sim_aes)
{
    const char *sim_args[16], *env[16];
    char err[512] = "";
    mode_args(modes, sim_aes, sim_args, env);
    ck_assert_msg(ts_stack_up(st, sim_args, env, err, sizeof(err)) == 0, "%s", err);
}

static void down(struct ts_stack *st)
{
    int status = ts_stack_down(st);
    ck_assert_msg(status == 0, "cardgate exited with %d (see its log)", status);
}

static void call(const struct ts_cardgate *cg, const char *method, const char *path,
                 const char *body, struct ts_http *r)
{
    char url[512];
    const char *headers[] = {TS_AUTH, TS_JSON, NULL};
    snprintf(url, sizeof(url), "%s%s", cg->url, path);
    ck_assert_int_eq(ts_http_call(method, url, headers, body, r), 0);
}

/* Opens a card with out_serial_no serial: its biz_card_no in out. */
static void open_card(const struct ts_cardgate *cg, const char *serial, char out[64])
{
    struct ts_http r;
    char *body = ts_open_body(serial, "");
    call(cg, "POST", "/v1/cards", body, &r);
    free(body);
    ck_assert_msg(r.status == 201, "open %s: %ld %s", serial, r.status, r.body);
    char *biz = ts_json_at(&r, "biz_card_no");
    ck_assert_ptr_nonnull(biz);
    snprintf(out, 64, "%s", biz);
    free(biz);
    ts_http_free(&r);
}

/* Alipay switches the certificate it signs answers with (files of the
 * vectors' cert/, or absolute paths). */
static void sim_rotate(const struct ts_sim *sim, const char *cert, const char *key)
{
    char url[256], body[1200];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/alipay-cert", sim->control);
    snprintf(body, sizeof(body), "{\"cert\":\"%s\",\"key\":\"%s\"}",
             cert[0] == '/' ? cert : cert_path(cert), key[0] == '/' ? key : cert_path(key));
    ck_assert_int_eq(ts_http_call("PUT", url, NULL, body, &r), 0);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
}

/* The sign-up of a member (formtemplate.set, activateurl.apply; then,
 * from the callback, oauth.token, activateform.query and card.open): the
 * callback redirects to the card. */
static void member_signs_up(const struct ts_stack *st, const char *tpl)
{
    struct ts_http r;
    char url[2048];
    ts_signup_setup(&st->cg, tpl, SUCCESS_URL);
    char *cb = ts_member_signs_up(&st->sim, tpl, PUBLIC_URL, NULL, NULL);
    snprintf(url, sizeof(url), "%s%s", st->cg.url, cb);
    free(cb);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    ck_assert_msg(r.status == 302, "callback: %ld %s", r.status, r.body);
    char *loc = ts_http_header(&r, "Location");
    ck_assert_msg(loc && strncmp(loc, SUCCESS_URL "?biz_card_no=", strlen(SUCCESS_URL) + 13) == 0,
                  "Location %s", loc ? loc : "-");
    free(loc);
    ts_http_free(&r);
}

#define TEMPLATE_BODY                                                                              \
    "{\"request_id\":\"%s\",\"template\":{\"card_type\":\"OUT_MEMBER_CARD\","                      \
    "\"biz_no_suffix_len\":\"10\",\"write_off_type\":\"qrcode\",\"template_style_info\":{"         \
    "\"card_show_name\":\"会员卡\",\"logo_id\":\"1T8Pp00AT7eo9NoAJkMR3AAAACMAAQEC\","           \
    "\"background_id\":\"1T8Pp00AT7eo9NoAJkMR3AAAACMAAQEC\",\"bg_color\":\"rgb(55,112,179)\"},"    \
    "\"field_rule_list\":[{\"field_name\":\"Balance\",\"rule_name\":\"ASSIGN_FROM_REQUEST\","      \
    "\"rule_value\":\"Balance\"}]}}"

/* Each mode, and both: a template, then a card opened, replayed, queried,
 * updated and deleted — every answer verified (and decrypted) by cardgate,
 * every request accepted by the simulator's checks of the mode. */
START_TEST(test_round_trips)
{
    static const int modes[] = {CERT, AES, CERT | AES};
    struct ts_stack st;
    struct ts_http r;
    char biz[64], serial[64], body[2048], path[256];
    up(&st, modes[_i], NULL);

    snprintf(body, sizeof(body), TEMPLATE_BODY, "modes-tpl");
    call(&st.cg, "POST", "/v1/templates", body, &r);
    ck_assert_msg(r.status == 201, "template: %ld %s", r.status, r.body);
    char *tpl = ts_json_at(&r, "template_id");
    ts_http_free(&r);
    ck_assert_ptr_nonnull(tpl);
    member_signs_up(&st, tpl);
    free(tpl);

    snprintf(serial, sizeof(serial), "modes-%d", modes[_i]);
    open_card(&st.cg, serial, biz);
    char *again = ts_open_body(serial, "");
    call(&st.cg, "POST", "/v1/cards", again, &r);
    free(again);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    ts_assert_field(&r, "biz_card_no", biz);
    ts_http_free(&r);

    snprintf(path, sizeof(path), "/v1/cards/%s", biz);
    call(&st.cg, "GET", path, NULL, &r);
    ck_assert_msg(r.status == 200, "query: %ld %s", r.status, r.body);
    ts_assert_field(&r, "biz_card_no", biz);
    ts_http_free(&r);

    call(&st.cg, "PATCH", path,
         "{\"out_serial_no\":\"modes-upd\",\"occur_time\":\"2026-11-30 10:15:00\","
         "\"card\":{\"point\":\"120\",\"level\":\"VIP2\"},\"changed_point\":\"20\"}",
         &r);
    ck_assert_msg(r.status == 200, "update: %ld %s", r.status, r.body);
    ts_http_free(&r);

    snprintf(path, sizeof(path), "/v1/cards/%s?out_serial_no=modes-del&reason_code=CANCEL", biz);
    call(&st.cg, "DELETE", path, NULL, &r);
    ck_assert_msg(r.status == 200, "delete: %ld %s", r.status, r.body);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, DOWNLOAD), 0);
    char cg_log[256];
    snprintf(cg_log, sizeof(cg_log), "%s", st.cg.log);
    down(&st);
    /* the AES key is never in a log line */
    char *log = ts_read_file(cg_log, NULL);
    ck_assert_ptr_nonnull(log);
    ck_assert_ptr_null(strstr(log, AES_KEY));
    free(log);
}
END_TEST

/* The gateway has another AES key than cardgate's: it cannot read the
 * request and says so (a signed 40003 isv.decryption-error-unknown, as
 * Alipay's sandbox answers): a configuration error, 502
 * ALIPAY_REQUEST_REFUSED, nothing stored. */
START_TEST(test_other_aes_key)
{
    struct ts_stack st;
    struct ts_http r;
    up(&st, AES, OTHER_AES_KEY);
    char *body = ts_open_body("modes-otherkey", "");
    call(&st.cg, "POST", "/v1/cards", body, &r);
    free(body);
    ts_assert_error(&r, 502, "ALIPAY_REQUEST_REFUSED", NULL);
    ts_assert_field(&r, "error.alipay.code", "40003");
    ts_assert_field(&r, "error.alipay.sub_code", "isv.decryption-error-unknown");
    ts_http_free(&r);
    ck_assert_int_eq(
        ts_pg_long(st.db, "SELECT count(*) FROM cards WHERE out_serial_no = 'modes-otherkey'"), 0);
    down(&st);
}
END_TEST

/* Answers that must not be trusted: the ciphertext signed without its
 * quotes, and a well-signed answer encrypted with another key. Both 502
 * ALIPAY_BAD_SIGNATURE, no card stored; the retry opens the card once. */
START_TEST(test_untrusted_encrypted_answers)
{
    static const char *const faults[] = {"aes_unquoted_sign", "aes_other_key"};
    struct ts_stack st;
    struct ts_http r;
    up(&st, CERT | AES, NULL);
    for (int i = 0; i < 2; i++) {
        char serial[32], json[256], sql[160];
        snprintf(serial, sizeof(serial), "untrusted-%d", i);
        snprintf(json, sizeof(json),
                 "{\"mode\":\"%s\",\"method\":\"alipay.marketing.card.open\",\"count\":1}",
                 faults[i]);
        ck_assert_int_eq(ts_sim_fault(&st.sim, json), 0);
        char *body = ts_open_body(serial, "");
        call(&st.cg, "POST", "/v1/cards", body, &r);
        ts_assert_error(&r, 502, "ALIPAY_BAD_SIGNATURE", NULL);
        ck_assert_ptr_null(strstr(r.body, "\"alipay\""));
        ts_http_free(&r);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM cards WHERE out_serial_no = '%s'", serial);
        ck_assert_int_eq(ts_pg_long(st.db, sql), 0);
        call(&st.cg, "POST", "/v1/cards", body, &r);
        free(body);
        ck_assert_msg(r.status == 201, "%s: %ld %s", faults[i], r.status, r.body);
        ts_http_free(&r);
        ck_assert_int_eq(ts_pg_long(st.db, sql), 1);
    }
    down(&st);
}
END_TEST

/* A claim left by an instance that died downloading the new certificate
 * is taken over once older than a download can take (the gateway timeout,
 * 2 s here, plus 3 s): the answers waiting for it are then verified, and
 * the certificate is downloaded once. An unsigned answer naming an unknown
 * certificate makes nobody fetch anything. */
START_TEST(test_dead_claim_taken_over)
{
    struct ts_stack st;
    struct ts_http r;
    char biz[64];
    up(&st, CERT, NULL);
    open_card(&st.cg, "dead-claim-0", biz);
    sim_rotate(&st.sim, "alipayCertPublicKey_RSA2_rotated.crt",
               "alipayCertPrivateKey_RSA2_rotated.pem");
    ck_assert_int_eq(ts_sim_fault(&st.sim, "{\"mode\":\"unsigned_success\",\"method\":"
                                           "\"alipay.marketing.card.open\",\"count\":1}"),
                     0);
    char *body = ts_open_body("dead-claim-1", "");
    call(&st.cg, "POST", "/v1/cards", body, &r);
    ts_assert_error(&r, 502, "ALIPAY_BAD_SIGNATURE", NULL);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, DOWNLOAD), 0);
    /* the dead instance's claim, 4 s old: stale in 1 s */
    ck_assert_int_eq(ts_pg_long(st.db,
                                "WITH c AS (INSERT INTO alipay_certs (sn, app_id, "
                                "claimed_at) VALUES ('" SN_ROTATED "', '2021000000000001', "
                                "now() - interval '4 s') RETURNING 1) SELECT count(*) FROM c"),
                     1);
    call(&st.cg, "POST", "/v1/cards", body, &r);
    free(body);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, DOWNLOAD), 1);
    ck_assert_int_eq(ts_pg_long(st.db, "SELECT count(*) FROM alipay_certs WHERE sn = '" SN_ROTATED
                                       "' AND pem IS NOT NULL"),
                     1);
    down(&st);
}
END_TEST

/* SIGHUP in certificate mode: the settings that can change are taken, the
 * certificates stay in force, and cards still open. */
START_TEST(test_reload_in_cert_mode)
{
    struct ts_stack st;
    char biz[64];
    up(&st, CERT | AES, NULL);
    ck_assert_int_eq(kill(st.cg.pid, SIGHUP), 0);
    char *log = NULL;
    for (int i = 0; i < 100; i++) {
        free(log);
        log = ts_read_file(st.cg.log, NULL);
        if (log && strstr(log, "\"msg\":\"reloaded\""))
            break;
        usleep(50000);
    }
    ck_assert_msg(log && strstr(log, "\"msg\":\"reloaded\""), "no reload in %s", st.cg.log);
    ck_assert_ptr_null(strstr(log, "reload refused"));
    free(log);
    open_card(&st.cg, "reload-cert", biz);
    down(&st);
}
END_TEST

/* Alipay rotates its certificate: the first answers signed with the new
 * one make one download for both instances; the certificate is in
 * alipay_certs, and a restarted instance uses it without downloading. */
START_TEST(test_rotation_one_download)
{
    struct ts_stack st;
    struct ts_cardgate second;
    const char *sim_args[16], *env[16];
    char biz[64], err[512] = "";
    mode_args(CERT, NULL, sim_args, env);
    ck_assert_msg(ts_stack_up(&st, sim_args, env, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(ts_cardgate_start(&second, st.db, &st.sim, env), 0);
    open_card(&st.cg, "rot-before", biz);

    sim_rotate(&st.sim, "alipayCertPublicKey_RSA2_rotated.crt",
               "alipayCertPrivateKey_RSA2_rotated.pem");
    /* 40 queries at once, 20 on each instance: each answer is signed with
     * the new certificate */
    enum { N = 40 };
    char urls[N][160];
    const char *u[N];
    struct ts_http out[N];
    const char *headers[] = {TS_AUTH, NULL};
    for (int k = 0; k < N; k++) {
        snprintf(urls[k], sizeof(urls[k]), "%s/v1/cards/%s", k % 2 ? second.url : st.cg.url, biz);
        u[k] = urls[k];
    }
    ts_http_parallel(N, "GET", u, headers, NULL, out);
    for (int k = 0; k < N; k++) {
        ck_assert_msg(out[k].status == 200, "%d: %ld %s", k, out[k].status, out[k].body);
        ts_http_free(&out[k]);
    }
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, DOWNLOAD), 1);
    ck_assert_int_eq(ts_pg_long(st.db, "SELECT count(*) FROM alipay_certs WHERE sn = '" SN_ROTATED
                                       "' AND pem LIKE '-----BEGIN CERTIFICATE-----%'"),
                     1);

    /* a restart: the certificate comes from the database */
    ck_assert_int_eq(ts_cardgate_stop(&second), 0);
    ck_assert_int_eq(ts_cardgate_start(&second, st.db, &st.sim, env), 0);
    struct ts_http r;
    char path[128];
    snprintf(path, sizeof(path), "/v1/cards/%s", biz);
    call(&second, "GET", path, NULL, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    open_card(&second, "rot-after-restart", biz);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, DOWNLOAD), 1);
    ck_assert_int_eq(ts_cardgate_stop(&second), 0);
    down(&st);
}
END_TEST

/* Alipay's answers signed with a certificate that does not chain to the
 * roots (an impostor CA of the same name), has expired, or is another
 * merchant's (it chains: Alipay's CA issued it): 502
 * ALIPAY_BAD_SIGNATURE, the certificate never stored; back to a good one,
 * the retry opens the card once. */
START_TEST(test_bad_certificates_refused)
{
    static const char *const certs[][2] = {
        {"alipayCertPublicKey_RSA2_unknown_ca.crt", "alipayCertPrivateKey_RSA2_unknown_ca.pem"},
        {"alipayCertPublicKey_RSA2_expired.crt", "alipayCertPrivateKey_RSA2_expired.pem"},
        {CARDGATE_SOURCE_DIR "/tests/fixtures/other_merchant_cert.crt",
         CARDGATE_SOURCE_DIR "/tests/fixtures/other_merchant_key.pem"},
    };
    struct ts_stack st;
    struct ts_http r;
    up(&st, CERT, NULL);
    for (int i = 0; i < 3; i++) {
        char serial[32];
        snprintf(serial, sizeof(serial), "badcert-%d", i);
        sim_rotate(&st.sim, certs[i][0], certs[i][1]);
        char *body = ts_open_body(serial, "");
        call(&st.cg, "POST", "/v1/cards", body, &r);
        ck_assert_msg(r.status == 502, "%s: %ld %s", certs[i][0], r.status, r.body);
        ts_assert_error(&r, 502, "ALIPAY_BAD_SIGNATURE", NULL);
        ts_http_free(&r);
        ck_assert_int_eq(ts_pg_long(st.db, "SELECT count(*) FROM alipay_certs"), 0);
        sim_rotate(&st.sim, "alipayCertPublicKey_RSA2.crt", "alipayCertPrivateKey_RSA2.pem");
        call(&st.cg, "POST", "/v1/cards", body, &r);
        free(body);
        ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
        ts_http_free(&r);
    }
    ck_assert_int_eq(ts_pg_long(st.db, "SELECT count(*) FROM cards WHERE out_serial_no LIKE "
                                       "'badcert-%'"),
                     3);
    down(&st);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("modes");
    TCase *tc = tcase_create("modes");
    tcase_set_timeout(tc, 240);
    tcase_add_loop_test(tc, test_round_trips, 0, 3);
    tcase_add_test(tc, test_other_aes_key);
    tcase_add_test(tc, test_untrusted_encrypted_answers);
    tcase_add_test(tc, test_reload_in_cert_mode);
    tcase_add_test(tc, test_dead_claim_taken_over);
    tcase_add_test(tc, test_rotation_one_download);
    tcase_add_test(tc, test_bad_certificates_refused);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
