/* Building a request for the wire: the signature equals the official SDK's
 * for the same parameters, public parameters travel in the URL query and
 * biz_content alone in the form body. */
#include <check.h>
#include <curl/curl.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "alipay_client.h"
#include "alipay_key.h"
#include "support.h"

static EVP_PKEY *app_key, *app_pub;
static json_object *v1;

static void setup(void)
{
    char err[256];
    app_key =
        alipay_key_load_private(ts_vector("keys/app_private_pkcs8_oneline.txt"), err, sizeof(err));
    app_pub = alipay_key_load_public(ts_vector("keys/app_public.pem"), err, sizeof(err));
    v1 = json_object_from_file(ts_vector("v1_card_open_rsa2.json"));
    ck_assert_ptr_nonnull(app_key);
    ck_assert_ptr_nonnull(v1);
}

static void teardown(void)
{
    EVP_PKEY_free(app_key);
    EVP_PKEY_free(app_pub);
    json_object_put(v1);
}

static const char *v1_param(const char *key)
{
    json_object *ps = json_object_object_get(v1, "params_signed");
    return json_object_get_string(json_object_object_get(ps, key));
}

static struct alipay_client *make_client(const char *gateway, enum alipay_sign_type t)
{
    char err[256];
    struct alipay_client_config cfg = {.gateway_url = gateway,
                                       .app_id = "2014072300007148",
                                       .app_key = app_key,
                                       .alipay_key = app_pub,
                                       .sign_type = t,
                                       .timeout_ms = 1000};
    struct alipay_client *c = alipay_client_new(&cfg, NULL, err, sizeof(err));
    ck_assert_ptr_nonnull(c);
    return c;
}

/* Decodes a query string with libevent (not our code) into q. */
static void decode(const char *query, struct evkeyvalq *q)
{
    TAILQ_INIT(q);
    ck_assert_int_eq(evhttp_parse_query_str(query, q), 0);
}

START_TEST(test_request_matches_sdk_vector)
{
    struct alipay_client *c = make_client("https://gw.example/gateway.do", ALIPAY_SIGN_RSA2);
    struct alipay_request req;
    char err[256];
    /* 2014-07-24 03:07:50 in Beijing, the vector's timestamp. */
    ck_assert_int_eq(alipay_client_build(c, "alipay.marketing.card.open", v1_param("biz_content"),
                                         v1_param("auth_token"), v1_param("app_auth_token"),
                                         (time_t)1406142470, &req, err, sizeof(err)),
                     0);
    ck_assert_int_eq(strncmp(req.url, "https://gw.example/gateway.do?", 30), 0);
    struct evkeyvalq q, b;
    decode(strchr(req.url, '?') + 1, &q);
    const char *keys[] = {"app_id",    "method",  "format",     "charset",        "sign_type",
                          "timestamp", "version", "auth_token", "app_auth_token", "sign"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++) {
        const char *got = evhttp_find_header(&q, keys[i]);
        ck_assert_msg(got != NULL, "%s missing from the query", keys[i]);
        ck_assert_msg(strcmp(got, v1_param(keys[i])) == 0, "%s: %s", keys[i], got);
    }
    ck_assert_ptr_null(evhttp_find_header(&q, "biz_content"));
    decode(req.body, &b);
    ck_assert_str_eq(evhttp_find_header(&b, "biz_content"), v1_param("biz_content"));
    int n = 0;
    for (struct evkeyval *kv = TAILQ_FIRST(&b); kv; kv = TAILQ_NEXT(kv, next))
        n++;
    ck_assert_int_eq(n, 1);
    /* '+' would read as a space in a form: everything reserved is escaped. */
    ck_assert_ptr_null(strchr(strchr(req.url, '?'), '+'));
    ck_assert_ptr_null(strchr(req.url, ' '));
    evhttp_clear_headers(&q);
    evhttp_clear_headers(&b);
    alipay_request_free(&req);
    alipay_client_free(c);
}
END_TEST

/* The form encoding of every parameter is curl_easy_escape's, byte for
 * byte: each of the 256 byte values alone, and a card's biz_content. */
START_TEST(test_escape_is_curls)
{
    char in[2] = {0, 0}, out[3 * 4096 + 1];
    for (int b = 0; b < 256; b++) {
        in[0] = (char)b;
        char *want = curl_easy_escape(NULL, in, 1);
        ck_assert_ptr_nonnull(want);
        ck_assert_uint_eq(alipay_client_escape(in, 1, out), strlen(want));
        ck_assert_msg(strcmp(out, want) == 0, "byte %d: %s, curl %s", b, out, want);
        curl_free(want);
    }
    const char *text = "{\"out_serial_no\":\"a b+c/d?e=f&g\",\"member_ext_info\":{\"name\":"
                       "\"\xe5\xbc\xa0\xe4\xb8\x89\xe4\xb8\xb0\",\"level\":\"VIP1~*'()!\"}}";
    char *want = curl_easy_escape(NULL, text, 0);
    ck_assert_uint_eq(alipay_client_escape(text, strlen(text), out), strlen(want));
    ck_assert_str_eq(out, want);
    curl_free(want);
    ck_assert_uint_eq(alipay_client_escape("", 0, out), 0);
    ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(test_empty_tokens_left_out_and_rsa)
{
    struct alipay_client *c = make_client("http://127.0.0.1:1/gateway.do", ALIPAY_SIGN_RSA);
    struct alipay_request req;
    char err[256];
    setenv("TZ", "America/Los_Angeles", 1);
    tzset();
    ck_assert_int_eq(alipay_client_build(c, "alipay.marketing.card.query", "{\"a\":\"专 业\"}", "",
                                         NULL, (time_t)1704038400, &req, err, sizeof(err)),
                     0);
    struct evkeyvalq q, b;
    decode(strchr(req.url, '?') + 1, &q);
    decode(req.body, &b);
    ck_assert_ptr_null(evhttp_find_header(&q, "auth_token"));
    ck_assert_ptr_null(evhttp_find_header(&q, "app_auth_token"));
    ck_assert_str_eq(evhttp_find_header(&q, "sign_type"), "RSA");
    ck_assert_str_eq(evhttp_find_header(&q, "timestamp"), "2024-01-01 00:00:00");
    ck_assert_str_eq(evhttp_find_header(&b, "biz_content"), "{\"a\":\"专 业\"}");
    /* The signature holds over what the gateway will rebuild. */
    struct alipay_params p;
    alipay_params_init(&p);
    for (struct evkeyval *kv = TAILQ_FIRST(&q); kv; kv = TAILQ_NEXT(kv, next))
        alipay_params_set(&p, kv->key, kv->value);
    alipay_params_set(&p, "biz_content", evhttp_find_header(&b, "biz_content"));
    char *content = alipay_sign_content(&p);
    ck_assert_int_eq(alipay_sign_verify(app_pub, ALIPAY_SIGN_RSA, content, strlen(content),
                                        alipay_params_get(&p, "sign")),
                     1);
    ck_assert_int_eq(alipay_sign_verify(app_pub, ALIPAY_SIGN_RSA2, content, strlen(content),
                                        alipay_params_get(&p, "sign")),
                     0);
    free(content);
    alipay_params_free(&p);
    evhttp_clear_headers(&q);
    evhttp_clear_headers(&b);
    alipay_request_free(&req);
    alipay_client_free(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alipay_client");
    TCase *tc = tcase_create("build");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_request_matches_sdk_vector);
    tcase_add_test(tc, test_empty_tokens_left_out_and_rsa);
    tcase_add_test(tc, test_escape_is_curls);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
