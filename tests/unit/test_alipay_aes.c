/* Content encryption (encrypt_type=AES) against the SDK's vectors:
 * tests/vectors/aes_vector.json, cert/v5_card_open_aes.json and
 * cert/response_aes.json. */
#include <check.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "alipay_aes.h"
#include "support.h"

static const char *field(json_object *o, const char *key)
{
    json_object *v;
    ck_assert_msg(json_object_object_get_ex(o, key, &v), "no %s", key);
    return json_object_get_string(v);
}

static struct alipay_aes *key_of(const char *b64)
{
    char err[256] = "";
    struct alipay_aes *a = alipay_aes_new(b64, err, sizeof(err));
    ck_assert_msg(a != NULL, "%s", err);
    return a;
}

static void check_encrypts(struct alipay_aes *a, const char *plain, const char *want_b64)
{
    char err[256] = "";
    char *ct = alipay_aes_encrypt(a, plain, strlen(plain), err, sizeof(err));
    ck_assert_msg(ct != NULL, "%s", err);
    ck_assert_str_eq(ct, want_b64);
    size_t n = 0;
    char *back = alipay_aes_decrypt(a, ct, strlen(ct), &n, err, sizeof(err));
    ck_assert_msg(back != NULL, "%s", err);
    ck_assert_uint_eq(n, strlen(plain));
    ck_assert_str_eq(back, plain);
    free(back);
    free(ct);
}

START_TEST(test_vector_and_request)
{
    json_object *v = json_object_from_file(ts_vector("aes_vector.json"));
    json_object *v5 = json_object_from_file(ts_vector("cert/v5_card_open_aes.json"));
    ck_assert(v && v5);
    struct alipay_aes *a = key_of(field(v, "aes_key_b64"));
    check_encrypts(a, field(v, "plaintext_utf8"), field(v, "ciphertext_b64"));
    /* the encrypted biz_content of the SDK's request */
    check_encrypts(a, field(v5, "biz_content_plaintext"),
                   field(json_object_object_get(v5, "params_signed"), "biz_content"));
    alipay_aes_free(a);
    json_object_put(v);
    json_object_put(v5);
}
END_TEST

/* An encrypted answer decrypts to the SDK's plaintext; the one encrypted
 * with another key does not decrypt with ours. */
START_TEST(test_answers)
{
    char err[256] = "";
    json_object *r = json_object_from_file(ts_vector("cert/response_aes.json"));
    ck_assert_ptr_nonnull(r);
    struct alipay_aes *a = key_of(field(r, "aes_key_b64"));
    const char *ct = field(r, "ciphertext_b64");
    size_t n = 0;
    char *pt = alipay_aes_decrypt(a, ct, strlen(ct), &n, err, sizeof(err));
    ck_assert_msg(pt != NULL, "%s", err);
    ck_assert_str_eq(pt, field(r, "plaintext"));
    free(pt);

    /* the node of other_aes_key: the quoted string after the first ':' */
    json_object *other =
        json_tokener_parse(field(json_object_object_get(r, "cases"), "other_aes_key"));
    const char *oct = field(other, "alipay_marketing_card_open_response");
    ck_assert_ptr_null(alipay_aes_decrypt(a, oct, strlen(oct), &n, err, sizeof(err)));
    ck_assert_msg(strstr(err, "does not decrypt with the configured key"), "%s", err);
    struct alipay_aes *b = key_of(field(r, "other_aes_key_b64"));
    pt = alipay_aes_decrypt(b, oct, strlen(oct), &n, err, sizeof(err));
    ck_assert_msg(pt != NULL && pt[0] == '{', "%s", err);
    free(pt);
    alipay_aes_free(b);
    json_object_put(other);

    /* padding that checks over bytes that are not text (what another key
     * gives one time in 256): refused too */
    char *bin = alipay_aes_encrypt(a, "\xff\xfe{\0}", 5, err, sizeof(err));
    ck_assert_ptr_nonnull(bin);
    ck_assert_ptr_null(alipay_aes_decrypt(a, bin, strlen(bin), &n, err, sizeof(err)));
    ck_assert_msg(strstr(err, "not UTF-8 text"), "%s", err);
    free(bin);
    ck_assert_ptr_null(alipay_aes_decrypt(a, "not base64!", 11, &n, err, sizeof(err)));
    ck_assert_str_eq(err, "the ciphertext is not base64");
    ck_assert_ptr_null(alipay_aes_decrypt(a, "AAAA", 4, &n, err, sizeof(err)));
    ck_assert_str_eq(err, "the ciphertext is not whole AES blocks");
    alipay_aes_free(a);
    json_object_put(r);
}
END_TEST

/* 192- and 256-bit keys work; other lengths and non-base64 are refused
 * without quoting the key. */
START_TEST(test_key_sizes)
{
    char err[256] = "";
    /* expected values from `openssl enc -aes-{192,256}-cbc -iv 0…0` */
    struct alipay_aes *k24 = key_of("ERERERERERERERERERERERERERERERER");
    struct alipay_aes *k32 = key_of("ERERERERERERERERERERERERERERERERERERERERERE=");
    check_encrypts(k24, "{\"a\":\"张三\"}", "qTSHPyjqxK6AGz0Gf/pxrg==");
    check_encrypts(k32, "{\"a\":\"张三\"}", "v04blfzNL2YRlTTxGCkhmw==");
    alipay_aes_free(k24);
    alipay_aes_free(k32);

    static const char *const bad[] = {"", "ERERERERERERERERERERERER", "not base64 at all!!",
                                      "ERERERERERERERERERERERERERERERERERERERERERERERER"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_ptr_null(alipay_aes_new(bad[i], err, sizeof(err)));
        ck_assert_msg(strstr(err, "not an AES key"), "%s", err);
        ck_assert(bad[i][0] == '\0' || strstr(err, bad[i]) == NULL);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alipay_aes");
    TCase *tc = tcase_create("vectors");
    tcase_add_test(tc, test_vector_and_request);
    tcase_add_test(tc, test_answers);
    tcase_add_test(tc, test_key_sizes);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
