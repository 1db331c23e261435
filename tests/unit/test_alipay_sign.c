/* The string to sign and the signatures, byte for byte against the vectors
 * made with Alipay's official SDK, with every key form. */
#include <check.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alipay_key.h"
#include "alipay_sign.h"
#include "support.h"

static const char *const private_forms[] = {
    "keys/app_private_pkcs1.pem",
    "keys/app_private_pkcs8.pem",
    "keys/app_private_pkcs1_oneline.txt",
    "keys/app_private_pkcs8_oneline.txt",
};

/* Loads params_signed of a vector into p (sign left out). */
static void load_vector_params(const char *vector, struct alipay_params *p,
                               enum alipay_sign_type *type)
{
    char path[256];
    snprintf(path, sizeof(path), "%s.json", vector);
    json_object *root = json_object_from_file(ts_vector(path));
    ck_assert_ptr_nonnull(root);
    json_object *ps = json_object_object_get(root, "params_signed");
    ck_assert_ptr_nonnull(ps);
    alipay_params_init(p);
    json_object_object_foreach(ps, k, v)
    {
        if (strcmp(k, "sign") != 0)
            ck_assert_int_eq(alipay_params_set(p, k, json_object_get_string(v)), 0);
    }
    ck_assert_int_eq(alipay_sign_type_parse(alipay_params_get(p, "sign_type"), type), 0);
    json_object_put(root);
}

static char *vector_file(const char *vector, const char *suffix)
{
    char path[256];
    snprintf(path, sizeof(path), "%s.%s", vector, suffix);
    char *s = ts_read_file(ts_vector(path), NULL);
    ck_assert_ptr_nonnull(s);
    return s;
}

static void check_vector(const char *vector)
{
    struct alipay_params p;
    enum alipay_sign_type type;
    char err[256];
    load_vector_params(vector, &p, &type);
    char *expected_content = vector_file(vector, "string_to_sign.txt");
    char *expected_sign = vector_file(vector, "sign.b64");

    char *content = alipay_sign_content(&p);
    ck_assert_str_eq(content, expected_content);

    for (size_t i = 0; i < sizeof(private_forms) / sizeof(*private_forms); i++) {
        EVP_PKEY *key = alipay_key_load_private(ts_vector(private_forms[i]), err, sizeof(err));
        ck_assert_msg(key != NULL, "%s: %s", private_forms[i], err);
        char *sig = alipay_sign_data(key, type, content, strlen(content), err, sizeof(err));
        ck_assert_msg(sig != NULL, "%s", err);
        ck_assert_msg(strcmp(sig, expected_sign) == 0, "%s with %s differs", vector,
                      private_forms[i]);
        free(sig);
        /* The prepared signer gives the same bytes, call after call (each
         * signs from a copy: the prepared context is never used up). */
        struct alipay_signer *signer = alipay_signer_new(key, type, err, sizeof(err));
        ck_assert_msg(signer != NULL, "%s", err);
        for (int round = 0; round < 3; round++) {
            sig = alipay_signer_sign(signer, content, strlen(content), err, sizeof(err));
            ck_assert_msg(sig != NULL, "%s", err);
            ck_assert_msg(strcmp(sig, expected_sign) == 0, "%s with %s, prepared, round %d", vector,
                          private_forms[i], round);
            free(sig);
        }
        alipay_signer_free(signer);
        EVP_PKEY_free(key);
    }
    EVP_PKEY *pub = alipay_key_load_public(ts_vector("keys/app_public.pem"), err, sizeof(err));
    ck_assert_ptr_nonnull(pub);
    ck_assert_int_eq(alipay_sign_verify(pub, type, content, strlen(content), expected_sign), 1);
    /* One byte changed: the signature no longer holds. */
    content[0] ^= 1;
    ck_assert_int_eq(alipay_sign_verify(pub, type, content, strlen(content), expected_sign), 0);
    EVP_PKEY_free(pub);
    free(content);
    free(expected_content);
    free(expected_sign);
    alipay_params_free(&p);
}

START_TEST(test_vector_card_open_rsa2)
{
    check_vector("v1_card_open_rsa2");
}
END_TEST

START_TEST(test_vector_card_query_rsa2)
{
    check_vector("v2_card_query_rsa2");
}
END_TEST

START_TEST(test_vector_card_open_rsa_sha1)
{
    check_vector("v3_card_open_rsa_sha1");
}
END_TEST

START_TEST(test_empty_values_left_out)
{
    struct alipay_params p;
    alipay_params_init(&p);
    alipay_params_set(&p, "b", "2");
    alipay_params_set(&p, "app_auth_token", "");
    alipay_params_set(&p, "a", "1");
    alipay_params_set(&p, "auth_token", NULL);
    alipay_params_set(&p, "sign", "ignored");
    char *s = alipay_sign_content(&p);
    ck_assert_str_eq(s, "a=1&b=2");
    ck_assert_ptr_null(alipay_params_get(&p, "app_auth_token"));
    free(s);
    alipay_params_free(&p);
}
END_TEST

START_TEST(test_sort_is_byte_order)
{
    struct alipay_params p;
    alipay_params_init(&p);
    alipay_params_set(&p, "b", "x");
    alipay_params_set(&p, "B", "y");
    alipay_params_set(&p, "a_b", "z");
    alipay_params_set(&p, "ab", "w");
    char *s = alipay_sign_content(&p);
    ck_assert_str_eq(s, "B=y&a_b=z&ab=w&b=x"); /* 'B' 0x42 < '_' 0x5f < 'b' 0x62 */
    free(s);
    alipay_params_free(&p);
}
END_TEST

/* 2014-07-23 19:07:50 UTC is 2014-07-24 03:07:50 in Beijing. */
static void check_timestamp_in_zone(const char *tz)
{
    setenv("TZ", tz, 1);
    tzset();
    char out[20];
    alipay_sign_timestamp((time_t)1406142470, out);
    ck_assert_str_eq(out, "2014-07-24 03:07:50");
    /* A date change across the year boundary. */
    alipay_sign_timestamp((time_t)1704038400 /* 2023-12-31 16:00:00 UTC */, out);
    ck_assert_str_eq(out, "2024-01-01 00:00:00");
}

START_TEST(test_timestamp_beijing_under_utc)
{
    check_timestamp_in_zone("UTC");
}
END_TEST

START_TEST(test_timestamp_beijing_under_other_zones)
{
    check_timestamp_in_zone("America/New_York");
    check_timestamp_in_zone("Asia/Tokyo");
    check_timestamp_in_zone("EST5EDT");
}
END_TEST

START_TEST(test_sign_type_parse)
{
    enum alipay_sign_type t;
    ck_assert_int_eq(alipay_sign_type_parse("RSA2", &t), 0);
    ck_assert_int_eq(t, ALIPAY_SIGN_RSA2);
    ck_assert_int_eq(alipay_sign_type_parse("RSA", &t), 0);
    ck_assert_int_eq(t, ALIPAY_SIGN_RSA);
    ck_assert_int_eq(alipay_sign_type_parse("rsa2", &t), -1);
    ck_assert_int_eq(alipay_sign_type_parse("SM2", &t), -1);
}
END_TEST

START_TEST(test_bad_signature_text)
{
    char err[256];
    EVP_PKEY *pub = alipay_key_load_public(ts_vector("keys/app_public.pem"), err, sizeof(err));
    ck_assert_int_eq(alipay_sign_verify(pub, ALIPAY_SIGN_RSA2, "x", 1, ""), 0);
    ck_assert_int_eq(alipay_sign_verify(pub, ALIPAY_SIGN_RSA2, "x", 1, "!!!!"), 0);
    ck_assert_int_eq(alipay_sign_verify(pub, ALIPAY_SIGN_RSA2, "x", 1, "abc"), 0);
    EVP_PKEY_free(pub);
}
END_TEST

/* --- keys ---------------------------------------------------------------- */

START_TEST(test_public_key_forms)
{
    char err[256];
    EVP_PKEY *a = alipay_key_load_public(ts_vector("keys/alipay_public_sim.pem"), err, sizeof(err));
    EVP_PKEY *b =
        alipay_key_load_public(ts_vector("keys/alipay_public_sim_oneline.txt"), err, sizeof(err));
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(EVP_PKEY_eq(a, b), 1);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}
END_TEST

START_TEST(test_key_errors_name_the_file)
{
    char err[256];
    char path[] = "/tmp/cardgate-key-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "not a key\n", 10), 10);
    close(fd);
    ck_assert_ptr_null(alipay_key_load_private(path, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "PKCS#8"));
    ck_assert_ptr_null(alipay_key_load_public(path, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "public key"));
    unlink(path);

    ck_assert_ptr_null(alipay_key_load_private("/nonexistent/key.pem", err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/key.pem"));

    /* A public key where the private key belongs, and the other way round. */
    ck_assert_ptr_null(alipay_key_load_private(ts_vector("keys/app_public.pem"), err, sizeof(err)));
    ck_assert_ptr_null(
        alipay_key_load_public(ts_vector("keys/app_private_pkcs1.pem"), err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "private key"));
    ck_assert_ptr_null(
        alipay_key_load_public(ts_vector("keys/app_private_pkcs8_oneline.txt"), err, sizeof(err)));
}
END_TEST

START_TEST(test_own_public_key_detected)
{
    char err[256];
    EVP_PKEY *priv =
        alipay_key_load_private(ts_vector("keys/app_private_pkcs8_oneline.txt"), err, sizeof(err));
    EVP_PKEY *own = alipay_key_load_public(ts_vector("keys/app_public.pem"), err, sizeof(err));
    EVP_PKEY *alipay =
        alipay_key_load_public(ts_vector("keys/alipay_public_sim.pem"), err, sizeof(err));
    ck_assert_int_eq(alipay_key_is_pair(priv, own), 1);
    ck_assert_int_eq(alipay_key_is_pair(priv, alipay), 0);
    EVP_PKEY_free(priv);
    EVP_PKEY_free(own);
    EVP_PKEY_free(alipay);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alipay_sign");
    TCase *tc = tcase_create("vectors");
    tcase_add_test(tc, test_vector_card_open_rsa2);
    tcase_add_test(tc, test_vector_card_query_rsa2);
    tcase_add_test(tc, test_vector_card_open_rsa_sha1);
    tcase_add_test(tc, test_empty_values_left_out);
    tcase_add_test(tc, test_sort_is_byte_order);
    tcase_add_test(tc, test_timestamp_beijing_under_utc);
    tcase_add_test(tc, test_timestamp_beijing_under_other_zones);
    tcase_add_test(tc, test_sign_type_parse);
    tcase_add_test(tc, test_bad_signature_text);
    suite_add_tcase(s, tc);
    TCase *keys = tcase_create("keys");
    tcase_add_test(keys, test_public_key_forms);
    tcase_add_test(keys, test_key_errors_name_the_file);
    tcase_add_test(keys, test_own_public_key_detected);
    suite_add_tcase(s, keys);
    return ts_run_suite(s);
}
