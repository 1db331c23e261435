/* Certificate mode and content encryption in the client, byte for byte
 * against the SDK's vectors: the v4 (certificate mode) and v5 (both
 * modes) requests, and the encrypted answers of cert/response_aes.json. */
#include <check.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "alipay_aes.h"
#include "alipay_cert.h"
#include "alipay_client.h"
#include "alipay_key.h"
#include "support.h"

#define APP_ID "2021000000000001"
/* 2026-11-30 10:15:00 in Beijing, the vectors' timestamp */
#define VECTOR_TIME ((time_t)1796004900)

static EVP_PKEY *app_key;
static struct alipay_cert_store *store;
static struct alipay_aes *aes;
static json_object *sn_json;

static const char *field(json_object *o, const char *key)
{
    json_object *v;
    ck_assert_msg(json_object_object_get_ex(o, key, &v), "no %s", key);
    return json_object_get_string(v);
}

static STACK_OF(X509) * load(const char *file)
{
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "cert/%s", file);
    STACK_OF(X509) *certs = alipay_cert_load(ts_vector(path), err, sizeof(err));
    ck_assert_msg(certs != NULL, "%s: %s", file, err);
    return certs;
}

/* Admits one of the vectors' Alipay certificates to the store. */
static int admit(const char *file)
{
    char path[256], err[256] = "";
    size_t len;
    snprintf(path, sizeof(path), "cert/%s", file);
    char *pem = ts_read_file(ts_vector(path), &len);
    ck_assert_ptr_nonnull(pem);
    int rc = alipay_cert_store_admit(store, pem, len, NULL, NULL, err, sizeof(err));
    free(pem);
    return rc;
}

static void setup(void)
{
    char err[256] = "";
    app_key = alipay_key_load_private(ts_vector("cert/appCertPrivateKey_2021000000000001.pem"), err,
                                      sizeof(err));
    ck_assert_msg(app_key != NULL, "%s", err);
    store = alipay_cert_store_new(load("alipayRootCert.crt"));
    ck_assert_int_eq(admit("alipayCertPublicKey_RSA2.crt"), 0);
    aes = alipay_aes_new("EREREREREREREREREREREQ==", err, sizeof(err));
    sn_json = json_object_from_file(ts_vector("cert/sn.json"));
    ck_assert(store && aes && sn_json);
}

static void teardown(void)
{
    EVP_PKEY_free(app_key);
    alipay_cert_store_free(store);
    alipay_aes_free(aes);
    json_object_put(sn_json);
}

static struct alipay_client *make_client(int with_aes)
{
    char err[256] = "";
    struct alipay_client_config cfg = {
        .gateway_url = "https://gw.example/gateway.do",
        .app_id = APP_ID,
        .app_key = app_key,
        .sign_type = ALIPAY_SIGN_RSA2,
        .timeout_ms = 1000,
        .app_cert_sn = field(sn_json, "app_cert_sn"),
        .root_cert_sn = field(sn_json, "alipay_root_cert_sn"),
        .alipay_cert_sn = field(sn_json, "alipay_cert_sn"),
        .certs = store,
        .aes = with_aes ? aes : NULL,
    };
    struct alipay_client *c = alipay_client_new(&cfg, NULL, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    return c;
}

/* The request as the client builds it: its parameters decoded by libevent
 * (not our code), the string to sign rebuilt from them, and the signature,
 * equal to the vector's. */
static void check_request(const char *vector, int with_aes)
{
    json_object *v = json_object_from_file(ts_vector(vector));
    ck_assert_ptr_nonnull(v);
    json_object *ps = json_object_object_get(v, "params_signed");
    const char *biz = with_aes ? field(v, "biz_content_plaintext") : field(ps, "biz_content");
    struct alipay_client *c = make_client(with_aes);
    struct alipay_request req;
    char err[256] = "";
    ck_assert_int_eq(alipay_client_build(c, "alipay.marketing.card.open", biz,
                                         field(ps, "auth_token"), field(ps, "app_auth_token"),
                                         VECTOR_TIME, &req, err, sizeof(err)),
                     0);
    struct evkeyvalq q, b;
    TAILQ_INIT(&q);
    TAILQ_INIT(&b);
    ck_assert_int_eq(evhttp_parse_query_str(strchr(req.url, '?') + 1, &q), 0);
    ck_assert_int_eq(evhttp_parse_query_str(req.body, &b), 0);
    struct alipay_params p;
    alipay_params_init(&p);
    int n = 0;
    json_object_object_foreach(ps, key, val)
    {
        const char *got = strcmp(key, "biz_content") == 0 ? evhttp_find_header(&b, key)
                                                          : evhttp_find_header(&q, key);
        ck_assert_msg(got != NULL, "%s missing", key);
        ck_assert_msg(strcmp(got, json_object_get_string(val)) == 0, "%s: %s", key, got);
        if (strcmp(key, "sign") != 0)
            alipay_params_set(&p, key, got);
        n++;
    }
    int sent = 0;
    for (struct evkeyval *kv = TAILQ_FIRST(&q); kv; kv = TAILQ_NEXT(kv, next))
        sent++;
    ck_assert_int_eq(sent + 1, n); /* nothing else in the query; biz_content in the body */
    char *content = alipay_sign_content(&p);
    ck_assert_str_eq(content, field(v, "string_to_sign"));
    free(content);
    alipay_params_free(&p);
    evhttp_clear_headers(&q);
    evhttp_clear_headers(&b);
    alipay_request_free(&req);
    alipay_client_free(c);
    json_object_put(v);
}

START_TEST(test_cert_mode_request)
{
    check_request("cert/v4_card_open_cert_rsa2.json", 0);
}
END_TEST

START_TEST(test_cert_and_aes_request)
{
    check_request("cert/v5_card_open_aes.json", 1);
}
END_TEST

/* No biz_content (oauth.token): nothing to encrypt, no encrypt_type. */
START_TEST(test_no_biz_content_no_encrypt_type)
{
    struct alipay_client *c = make_client(1);
    struct alipay_request req;
    char err[256] = "";
    struct alipay_call_params p = {.grant_type = "authorization_code", .code = "abc"};
    ck_assert_int_eq(alipay_client_build_params(c, "alipay.system.oauth.token", &p, VECTOR_TIME,
                                                &req, err, sizeof(err)),
                     0);
    ck_assert_ptr_null(strstr(req.url, "encrypt_type"));
    ck_assert_ptr_nonnull(strstr(req.url, "app_cert_sn="));
    ck_assert_str_eq(req.body, "");
    alipay_request_free(&req);
    alipay_client_free(c);
}
END_TEST

static enum alipay_outcome judge(const char *body, const struct alipay_aes *key,
                                 struct alipay_reply *r)
{
    char err[256] = "";
    STACK_OF(X509) *ali = load("alipayCertPublicKey_RSA2.crt");
    EVP_PKEY *pub = alipay_cert_public_key(ali, "alipay", err, sizeof(err));
    memset(r, 0, sizeof(*r));
    alipay_response_judge_aes(body, strlen(body), "alipay.marketing.card.open", pub,
                              ALIPAY_SIGN_RSA2, key, r);
    EVP_PKEY_free(pub);
    sk_X509_pop_free(ali, X509_free);
    return r->outcome;
}

/* The encrypted answer verifies over the quoted text and decrypts; signed
 * over the bare text, encrypted with another key, or met without a key:
 * not trusted. Its alipay_cert_sn is read. */
START_TEST(test_encrypted_answers)
{
    json_object *ra = json_object_from_file(ts_vector("cert/response_aes.json"));
    json_object *cases = json_object_object_get(ra, "cases");
    struct alipay_reply r;
    ck_assert_int_eq(judge(field(cases, "encrypted"), aes, &r), ALIPAY_OK);
    ck_assert_int_eq(r.verified, 1);
    json_object *plain = json_tokener_parse(field(ra, "plaintext"));
    ck_assert(json_object_equal(r.node, plain));
    ck_assert_str_eq(field(json_object_object_get(r.node, "card_info"), "biz_card_no"), "0000004");
    json_object_put(plain);
    alipay_reply_free(&r);

    ck_assert_int_eq(judge(field(cases, "signed_without_quotes"), aes, &r), ALIPAY_BAD_SIGNATURE);
    ck_assert_int_eq(r.verified, 0);
    alipay_reply_free(&r);
    ck_assert_int_eq(judge(field(cases, "other_aes_key"), aes, &r), ALIPAY_BAD_SIGNATURE);
    ck_assert_msg(strstr(r.detail, "does not decrypt"), "%s", r.detail);
    alipay_reply_free(&r);
    ck_assert_int_eq(judge(field(cases, "encrypted"), NULL, &r), ALIPAY_BAD_SIGNATURE);
    ck_assert_msg(strstr(r.detail, "no AES key"), "%s", r.detail);
    alipay_reply_free(&r);

    char sn[33];
    const char *enc = field(cases, "encrypted");
    ck_assert_int_eq(alipay_response_cert_sn(enc, strlen(enc), sn), 0);
    ck_assert_str_eq(sn, field(ra, "alipay_cert_sn"));
    json_object_put(ra);
}
END_TEST

/* The store admits Alipay's certificates that chain and are valid, under
 * their SN, and nothing else. */
START_TEST(test_store_admits_only_good_certificates)
{
    char path[256], err[256] = "", sn[33];
    EVP_PKEY *k = alipay_cert_store_get(store, field(sn_json, "alipay_cert_sn"));
    ck_assert_ptr_nonnull(k);
    EVP_PKEY_free(k);
    ck_assert_ptr_null(alipay_cert_store_get(store, field(sn_json, "alipay_cert_sn_rotated")));
    ck_assert_int_eq(admit("alipayCertPublicKey_RSA2_unknown_ca.crt"), -1);
    ck_assert_int_eq(admit("alipayCertPublicKey_RSA2_expired.crt"), -1);
    ck_assert_ptr_null(alipay_cert_store_get(store, field(sn_json, "alipay_cert_sn_unknown_ca")));
    ck_assert_ptr_null(alipay_cert_store_get(store, field(sn_json, "alipay_cert_sn_expired")));
    /* chaining is not enough: merchants' certificates (ours, and another
     * merchant's) come from the same CA as Alipay's */
    ck_assert_int_eq(admit("appCertPublicKey_2021000000000001.crt"), -1);
    size_t olen;
    char *other =
        ts_read_file(CARDGATE_SOURCE_DIR "/tests/fixtures/other_merchant_cert.crt", &olen);
    ck_assert_ptr_nonnull(other);
    ck_assert_int_eq(alipay_cert_store_admit(store, other, olen, NULL, NULL, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "its subject is not Alipay's"), "%s", err);
    free(other);
    /* a CA is no signer, though it chains */
    ck_assert_int_eq(admit("ca/class2_r1.crt"), -1);

    size_t len;
    snprintf(path, sizeof(path), "cert/%s", "alipayCertPublicKey_RSA2_rotated.crt");
    char *pem = ts_read_file(ts_vector(path), &len);
    /* asked for another SN: refused */
    ck_assert_int_eq(alipay_cert_store_admit(store, pem, len, field(sn_json, "alipay_cert_sn"), sn,
                                             err, sizeof(err)),
                     -1);
    char not_sn[64];
    snprintf(not_sn, sizeof(not_sn), "not %s", field(sn_json, "alipay_cert_sn"));
    ck_assert_msg(strstr(err, not_sn), "%s", err);
    ck_assert_int_eq(alipay_cert_store_admit(store, pem, len,
                                             field(sn_json, "alipay_cert_sn_rotated"), sn, err,
                                             sizeof(err)),
                     0);
    ck_assert_str_eq(sn, field(sn_json, "alipay_cert_sn_rotated"));
    k = alipay_cert_store_get(store, sn);
    ck_assert_ptr_nonnull(k);
    EVP_PKEY_free(k);
    free(pem);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alipay_modes");
    TCase *tc = tcase_create("vectors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_cert_mode_request);
    tcase_add_test(tc, test_cert_and_aes_request);
    tcase_add_test(tc, test_no_biz_content_no_encrypt_type);
    tcase_add_test(tc, test_encrypted_answers);
    tcase_add_test(tc, test_store_admits_only_good_certificates);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
