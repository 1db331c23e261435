/* Judging gateway answers: the raw node text, the signature wherever it
 * stands, and the verdict of every case in response_cases.json. */
#include <check.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "alipay_key.h"
#include "alipay_response.h"
#include "support.h"

#define OPEN "alipay.marketing.card.open"
#define QUERY "alipay.marketing.card.query"

static EVP_PKEY *alipay_pub, *alipay_priv;
static json_object *cases;

static void setup(void)
{
    char err[256];
    alipay_pub = alipay_key_load_public(ts_vector("keys/alipay_public_sim.pem"), err, sizeof(err));
    alipay_priv =
        alipay_key_load_private(ts_vector("keys/alipay_private_sim.pem"), err, sizeof(err));
    cases = json_object_from_file(ts_vector("response_cases.json"));
    ck_assert_ptr_nonnull(alipay_pub);
    ck_assert_ptr_nonnull(alipay_priv);
    ck_assert_ptr_nonnull(cases);
}

static void teardown(void)
{
    EVP_PKEY_free(alipay_pub);
    EVP_PKEY_free(alipay_priv);
    json_object_put(cases);
}

static const char *case_text(const char *name)
{
    json_object *c = json_object_object_get(json_object_object_get(cases, "cases"), name);
    ck_assert_ptr_nonnull(c);
    return json_object_get_string(c);
}

static void judge(const char *body, const char *method, struct alipay_reply *r)
{
    memset(r, 0, sizeof(*r));
    alipay_response_judge(body, strlen(body), method, alipay_pub, ALIPAY_SIGN_RSA2, r);
}

static const char *node_str(const struct alipay_reply *r, const char *key)
{
    json_object *v;
    ck_assert_ptr_nonnull(r->node);
    if (!json_object_object_get_ex(r->node, key, &v))
        return NULL;
    return json_object_get_string(v);
}

START_TEST(test_case_sign_last_verified)
{
    struct alipay_reply r;
    judge(case_text("sign_last"), OPEN, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_OK);
    ck_assert_int_eq(r.verified, 1);
    ck_assert_str_eq(r.code, "10000");
    ck_assert_str_eq(r.msg, "Success");
    /* The parser unescapes what the verifier had to leave alone. */
    ck_assert_str_eq(node_str(&r, "open_card_channel"), "专业/金融贸易}");
    ck_assert_str_eq(node_str(&r, "open_card_channel_id"), "专业");
    json_object *card = json_object_object_get(r.node, "card_info");
    ck_assert_str_eq(json_object_get_string(json_object_object_get(card, "biz_card_no")),
                     "0000001");
    alipay_reply_free(&r);
}
END_TEST

START_TEST(test_case_tampered)
{
    struct alipay_reply r;
    judge(case_text("tampered"), OPEN, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_BAD_SIGNATURE);
    ck_assert_int_eq(r.verified, 0);
    ck_assert_ptr_null(r.node);
    ck_assert_ptr_null(r.code);
    alipay_reply_free(&r);
}
END_TEST

START_TEST(test_case_success_no_sign)
{
    struct alipay_reply r;
    judge(case_text("success_no_sign"), OPEN, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_BAD_SIGNATURE);
    ck_assert_ptr_null(r.node);
    alipay_reply_free(&r);
}
END_TEST

START_TEST(test_case_error_response_unsigned)
{
    struct alipay_reply r;
    judge(case_text("error_response_unsigned"), OPEN, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_REFUSED);
    ck_assert_int_eq(r.verified, 0);
    ck_assert_str_eq(r.code, "40002");
    ck_assert_str_eq(r.msg, "Invalid Arguments");
    ck_assert_str_eq(r.sub_code, "isv.invalid-app-id");
    ck_assert_str_eq(r.sub_msg, "无效的AppID参数");
    alipay_reply_free(&r);
}
END_TEST

/* The same signed node, with sign first: position must not matter. */
START_TEST(test_sign_first)
{
    const char *signed_text = json_object_get_string(json_object_object_get(cases, "signed_text"));
    const char *sign = json_object_get_string(json_object_object_get(cases, "sign"));
    char body[4096];
    snprintf(
        body, sizeof(body),
        "{\"sign\":\"%s\",\"alipay_cert_sn\":\"x\",\"alipay_marketing_card_open_response\":%s}",
        sign, signed_text);
    struct alipay_reply r;
    judge(body, OPEN, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_OK);
    ck_assert_int_eq(r.verified, 1);
    alipay_reply_free(&r);
}
END_TEST

/* Whitespace, \uXXXX, \/ and braces in strings survive to the verifier. */
START_TEST(test_whitespace_and_escapes_survive)
{
    const char *node = "{\n  \"code\" : \"10000\",\t\"msg\":\"Success\",\n"
                       "  \"card_info\" : { \"biz_card_no\" : \"00\\\"{}7\" ,"
                       " \"level\":\"\\u4e13\\/}\" },\r\n  \"schema_url\": \"a\\\\\" }";
    char *body = alipay_response_build("alipay_marketing_card_query_response", node, alipay_priv,
                                       ALIPAY_SIGN_RSA2, 1);
    struct alipay_reply r;
    judge(body, QUERY, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_OK);
    json_object *card = json_object_object_get(r.node, "card_info");
    ck_assert_str_eq(json_object_get_string(json_object_object_get(card, "biz_card_no")),
                     "00\"{}7");
    ck_assert_str_eq(json_object_get_string(json_object_object_get(card, "level")), "专/}");
    ck_assert_str_eq(node_str(&r, "schema_url"), "a\\");
    alipay_reply_free(&r);
    free(body);
}
END_TEST

static void check_code(const char *code, const char *sub_code, enum alipay_outcome expected)
{
    char node[256];
    snprintf(node, sizeof(node),
             "{\"code\":\"%s\",\"msg\":\"m\",\"sub_code\":\"%s\",\"sub_msg\":\"s\"}", code,
             sub_code);
    char *body = alipay_response_build("alipay_marketing_card_open_response", node, alipay_priv,
                                       ALIPAY_SIGN_RSA2, 0);
    struct alipay_reply r;
    judge(body, OPEN, &r);
    ck_assert_msg(r.outcome == expected, "code %s: got %s", code, alipay_outcome_name(r.outcome));
    ck_assert_int_eq(r.verified, 1);
    ck_assert_str_eq(r.code, code);
    ck_assert_str_eq(r.sub_code, sub_code);
    alipay_reply_free(&r);
    free(body);
}

START_TEST(test_code_classes)
{
    check_code("40004", "TEMPLATE_NOT_EXIT", ALIPAY_REJECTED);
    check_code("40004", "CARD_NOT_EXIT", ALIPAY_REJECTED);
    /* Alipay's own failures in a 40004 are not final. */
    check_code("40004", "SYSTEM_ERROR", ALIPAY_UNAVAILABLE);
    check_code("40004", "ACQ.SYSTEM_ERROR", ALIPAY_UNAVAILABLE);
    check_code("40004", "UNKNOW_ERROR", ALIPAY_UNAVAILABLE);
    check_code("40004", "isp.unknow-error", ALIPAY_UNAVAILABLE);
    check_code("40004", "SYSTEM_ERROR_IN_TEMPLATE", ALIPAY_REJECTED);
    check_code("20001", "aop.invalid-auth-token", ALIPAY_AUTH_FAILED);
    check_code("20000", "isp.unknow-error", ALIPAY_UNAVAILABLE);
    check_code("40001", "isv.missing-method", ALIPAY_REFUSED);
    check_code("40002", "isv.invalid-signature", ALIPAY_REFUSED);
    check_code("40006", "isv.insufficient-isv-permissions", ALIPAY_REFUSED);
}
END_TEST

START_TEST(test_signed_error_response)
{
    const char *node = "{\"code\":\"40002\",\"msg\":\"Invalid Arguments\",\"sub_code\":\"x\"}";
    char *body = alipay_response_build("error_response", node, alipay_priv, ALIPAY_SIGN_RSA2, 0);
    struct alipay_reply r;
    judge(body, OPEN, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_REFUSED);
    ck_assert_int_eq(r.verified, 1);
    alipay_reply_free(&r);
    free(body);
}
END_TEST

/* alipay.system.oauth.token answers a success without a code (the shape
 * of AlipaySystemOauthTokenResponse); no other method may. */
START_TEST(test_oauth_token_success_has_no_code)
{
    const char *node = "{\"access_token\":\"publicpB1\",\"alipay_user_id\":\"2088102150477652\","
                       "\"expires_in\":300,\"re_expires_in\":300,\"refresh_token\":\"publicpB2\","
                       "\"user_id\":\"2088102150477652\"}";
    char *body = alipay_response_build("alipay_system_oauth_token_response", node, alipay_priv,
                                       ALIPAY_SIGN_RSA2, 0);
    struct alipay_reply r;
    judge(body, "alipay.system.oauth.token", &r);
    ck_assert_int_eq(r.outcome, ALIPAY_OK);
    ck_assert_int_eq(r.verified, 1);
    alipay_reply_free(&r);
    free(body);
    body = alipay_response_build("alipay_marketing_card_open_response", node, alipay_priv,
                                 ALIPAY_SIGN_RSA2, 0);
    judge(body, OPEN, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_BAD_SIGNATURE);
    alipay_reply_free(&r);
    free(body);
    /* Unsigned, it is not trusted either. */
    body = alipay_response_build("alipay_system_oauth_token_response", node, NULL, ALIPAY_SIGN_RSA2,
                                 0);
    judge(body, "alipay.system.oauth.token", &r);
    ck_assert_int_eq(r.outcome, ALIPAY_BAD_SIGNATURE);
    alipay_reply_free(&r);
    free(body);
}
END_TEST

START_TEST(test_wrong_algorithm_or_node)
{
    const char *node = "{\"code\":\"10000\",\"msg\":\"Success\"}";
    /* Signed with SHA-1 but checked as RSA2. */
    char *body = alipay_response_build("alipay_marketing_card_open_response", node, alipay_priv,
                                       ALIPAY_SIGN_RSA, 0);
    struct alipay_reply r;
    judge(body, OPEN, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_BAD_SIGNATURE);
    alipay_reply_free(&r);
    /* The node of another method is no answer to this one. */
    judge(body, QUERY, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_BAD_SIGNATURE);
    alipay_reply_free(&r);
    free(body);
    /* A signed code 40004 from someone else's key is not a refusal. */
    memset(&r, 0, sizeof(r));
    const char *forged =
        "{\"alipay_marketing_card_open_response\":{\"code\":\"40004\"},\"sign\":\"AAAA\"}";
    judge(forged, OPEN, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_BAD_SIGNATURE);
    alipay_reply_free(&r);
}
END_TEST

START_TEST(test_unparseable_answers)
{
    const char *bodies[] = {
        "",
        "<html>502</html>",
        "[]",
        "{",
        "{\"sign\":\"x\"}",
        "{\"alipay_marketing_card_open_response\":\"str\",\"sign\":\"x\"}",
        "{\"alipay_marketing_card_open_response\":{\"code\":\"10000\"}} trailing"};
    for (size_t i = 0; i < sizeof(bodies) / sizeof(*bodies); i++) {
        struct alipay_reply r;
        judge(bodies[i], OPEN, &r);
        ck_assert_msg(r.outcome == ALIPAY_BAD_SIGNATURE, "body %zu", i);
        ck_assert_ptr_null(r.node);
        alipay_reply_free(&r);
    }
}
END_TEST

START_TEST(test_duplicate_node_refused)
{
    const char *signed_text = json_object_get_string(json_object_object_get(cases, "signed_text"));
    const char *sign = json_object_get_string(json_object_object_get(cases, "sign"));
    char body[4096];
    snprintf(body, sizeof(body),
             "{\"alipay_marketing_card_open_response\":%s,\"sign\":\"%s\","
             "\"alipay_marketing_card_open_response\":{\"code\":\"10000\",\"card_info\":{}}}",
             signed_text, sign);
    struct alipay_reply r;
    judge(body, OPEN, &r);
    ck_assert_int_eq(r.outcome, ALIPAY_BAD_SIGNATURE);
    alipay_reply_free(&r);
}
END_TEST

START_TEST(test_find_raw)
{
    const char *body = " { \"a\" : \"x\\\"}\" , \"b\":{\"c\":\"}\",\"d\":[1,{\"e\":2}]} ,\"n\":12,"
                       "\"s\":\"\\/\\u4e13\"}";
    const char *v;
    size_t n;
    ck_assert_int_eq(alipay_response_find(body, strlen(body), "b", &v, &n), 0);
    ck_assert_int_eq((int)n, (int)strlen("{\"c\":\"}\",\"d\":[1,{\"e\":2}]}"));
    ck_assert_int_eq(strncmp(v, "{\"c\":\"}\",\"d\":[1,{\"e\":2}]}", n), 0);
    ck_assert_int_eq(alipay_response_find(body, strlen(body), "a", &v, &n), 0);
    ck_assert_int_eq(strncmp(v, "x\\\"}", n), 0);
    ck_assert_int_eq((int)n, 4);
    ck_assert_int_eq(alipay_response_find(body, strlen(body), "s", &v, &n), 0);
    ck_assert_int_eq(strncmp(v, "\\/\\u4e13", n), 0);
    ck_assert_int_eq(alipay_response_find(body, strlen(body), "c", &v, &n), -1); /* not top level */
    ck_assert_int_eq(alipay_response_find(body, strlen(body), "zz", &v, &n), -1);
    ck_assert_int_eq(alipay_response_find("{\"a\":1,\"a\":2}", 13, "a", &v, &n), -1);
}
END_TEST

START_TEST(test_node_name)
{
    char out[64];
    ck_assert_int_eq(alipay_response_node_name(QUERY, out, sizeof(out)), 0);
    ck_assert_str_eq(out, "alipay_marketing_card_query_response");
    ck_assert_int_eq(alipay_response_node_name(QUERY, out, 10), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alipay_response");
    TCase *tc = tcase_create("judge");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_case_sign_last_verified);
    tcase_add_test(tc, test_case_tampered);
    tcase_add_test(tc, test_case_success_no_sign);
    tcase_add_test(tc, test_case_error_response_unsigned);
    tcase_add_test(tc, test_sign_first);
    tcase_add_test(tc, test_whitespace_and_escapes_survive);
    tcase_add_test(tc, test_code_classes);
    tcase_add_test(tc, test_signed_error_response);
    tcase_add_test(tc, test_oauth_token_success_has_no_code);
    tcase_add_test(tc, test_wrong_algorithm_or_node);
    tcase_add_test(tc, test_unparseable_answers);
    tcase_add_test(tc, test_duplicate_node_refused);
    tcase_add_test(tc, test_find_raw);
    tcase_add_test(tc, test_node_name);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
