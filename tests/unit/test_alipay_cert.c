/* Certificate mode: SNs, the root SN and chain checks, byte for byte
 * against tests/vectors/cert (values made by alipay-sdk's own getSN), and
 * each mistake SDKs are known to make given as an input that must still
 * give the right SN. */
#include <check.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alipay_cert.h"
#include "alipay_key.h"
#include "support.h"

static json_object *sn_json;

static const char *want(const char *key)
{
    json_object *v;
    ck_assert_msg(json_object_object_get_ex(sn_json, key, &v), "sn.json has no %s", key);
    return json_object_get_string(v);
}

static void setup(void)
{
    sn_json = json_object_from_file(ts_vector("cert/sn.json"));
    ck_assert_ptr_nonnull(sn_json);
}

static void teardown(void)
{
    json_object_put(sn_json);
}

static STACK_OF(X509) * load(const char *file)
{
    char path[256], err[256] = "";
    snprintf(path, sizeof(path), "cert/%s", file);
    STACK_OF(X509) *certs = alipay_cert_load(ts_vector(path), err, sizeof(err));
    ck_assert_msg(certs != NULL, "%s: %s", file, err);
    return certs;
}

static void sn_of(const char *file, char out[ALIPAY_CERT_SN_LEN + 1])
{
    char err[256] = "";
    STACK_OF(X509) *certs = load(file);
    ck_assert_int_eq(alipay_cert_sn(sk_X509_value(certs, 0), out, err, sizeof(err)), 0);
    sk_X509_pop_free(certs, X509_free);
}

static char *root_sn_of_text(const char *pem, size_t len)
{
    char err[256] = "";
    STACK_OF(X509) *roots = alipay_cert_parse(pem, len, "bundle", err, sizeof(err));
    ck_assert_msg(roots != NULL, "%s", err);
    char *sn = alipay_cert_root_sn(roots, err, sizeof(err));
    ck_assert_msg(sn != NULL, "%s", err);
    sk_X509_pop_free(roots, X509_free);
    return sn;
}

/* Every SN of the vectors: 128-bit serials with the top bit set (a 64-bit
 * or float conversion, a hex or a signed reading give another SN), a
 * four-part issuer with a non-ASCII value (RFC 2253 order, raw UTF-8), and
 * the app certificate's SN starting with 0. */
START_TEST(test_sns_equal_the_sdk)
{
    static const char *const keys[] = {"app_cert_sn", "alipay_cert_sn", "alipay_cert_sn_rotated",
                                       "alipay_cert_sn_expired", "alipay_cert_sn_unknown_ca"};
    json_object *files = json_object_object_get(sn_json, "files");
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char sn[ALIPAY_CERT_SN_LEN + 1];
        sn_of(json_object_get_string(json_object_object_get(files, keys[i])), sn);
        ck_assert_msg(strcmp(sn, want(keys[i])) == 0, "%s: %s, SDK %s", keys[i], sn, want(keys[i]));
    }
    ck_assert(want("app_cert_sn")[0] == '0'); /* the classic: MD5 hex without its leading 0 */
}
END_TEST

/* The text hashed, as the SDK hashed it. */
START_TEST(test_issuer_text_is_rfc2253_raw_utf8)
{
    json_object *d =
        json_object_object_get(json_object_object_get(sn_json, "details"), "app_cert_sn");
    STACK_OF(X509) *certs = load("appCertPublicKey_2021000000000001.crt");
    char *issuer = alipay_cert_issuer_text(sk_X509_value(certs, 0));
    ck_assert_str_eq(issuer, json_object_get_string(json_object_object_get(d, "issuer_name")));
    ck_assert_ptr_nonnull(strstr(issuer, "O=蚂蚁金服(杭州)网络技术有限公司"));
    free(issuer);
    sk_X509_pop_free(certs, X509_free);
}
END_TEST

/* An issuer the vectors do not have: a multi-valued RDN (OU+CN) and an
 * e-mail address. Written as the SDKs write it: every attribute reversed
 * and flattened, joined by ',', the e-mail address as E. */
START_TEST(test_issuer_text_multi_valued_and_email)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    ck_assert(x && n);
    ck_assert(
        X509_NAME_add_entry_by_txt(n, "C", MBSTRING_UTF8, (const unsigned char *)"CN", -1, -1, 0));
    ck_assert(
        X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"Org", -1, -1, 0));
    ck_assert(X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_UTF8, (const unsigned char *)"Unit", -1,
                                         -1, 0));
    /* set -1 with loc -1: into the previous RDN (OU+CN) */
    ck_assert(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"Multi", -1,
                                         -1, -1));
    ck_assert(X509_NAME_add_entry_by_txt(n, "emailAddress", MBSTRING_UTF8,
                                         (const unsigned char *)"ca@example.test", -1, -1, 0));
    ck_assert_int_eq(X509_NAME_ENTRY_set(X509_NAME_get_entry(n, 3)),
                     X509_NAME_ENTRY_set(X509_NAME_get_entry(n, 2)));
    ck_assert(X509_set_issuer_name(x, n));
    char *text = alipay_cert_issuer_text(x);
    ck_assert_str_eq(text, "E=ca@example.test,CN=Multi,OU=Unit,O=Org,C=CN");
    free(text);
    X509_NAME_free(n);
    X509_free(x);
}
END_TEST

/* The bundle's RSA-signed roots only, SHA-1 included, in bundle order: the
 * EC and the SM2 roots are skipped. */
START_TEST(test_root_sn_equals_the_sdk)
{
    size_t len;
    char *pem = ts_read_file(ts_vector("cert/alipayRootCert.crt"), &len);
    ck_assert_ptr_nonnull(pem);
    char *sn = root_sn_of_text(pem, len);
    ck_assert_str_eq(sn, want("alipay_root_cert_sn"));
    free(sn);

    /* a blank line before END CERTIFICATE (OpenSSL's PEM reader alone
     * stops there), and CRLF line ends: the same root SN */
    char *odd = malloc(2 * len + 16);
    size_t n = 0;
    int blanked = 0;
    for (size_t i = 0; i < len; i++) {
        if (!blanked && strncmp(pem + i, "-----END CERTIFICATE", 20) == 0) {
            memcpy(odd + n, "\r\n", 2);
            n += 2;
            blanked = 1;
        }
        if (pem[i] == '\n')
            odd[n++] = '\r';
        odd[n++] = pem[i];
    }
    sn = root_sn_of_text(odd, n);
    ck_assert_str_eq(sn, want("alipay_root_cert_sn"));
    free(sn);
    free(odd);
    free(pem);
}
END_TEST

/* Roots of another order give another root SN (order is part of it), and
 * a bundle of EC/SM2 roots only has none. */
START_TEST(test_root_sn_order_and_no_rsa_root)
{
    char err[256] = "";
    size_t l1, l2, l3;
    char *r1 = ts_read_file(ts_vector("cert/ca/root_r1.crt"), &l1);
    char *sha1 = ts_read_file(ts_vector("cert/ca/root_sha1.crt"), &l2);
    char *e1 = ts_read_file(ts_vector("cert/ca/root_e1.crt"), &l3);
    ck_assert(r1 && sha1 && e1);
    char both[16384];
    int n = snprintf(both, sizeof(both), "%s\n%s", sha1, r1);
    char *sn = root_sn_of_text(both, (size_t)n);
    const char *w = want("alipay_root_cert_sn");
    char swapped[80];
    snprintf(swapped, sizeof(swapped), "%.32s_%.32s", w + 33, w);
    ck_assert_str_eq(sn, swapped);
    free(sn);

    STACK_OF(X509) *ec = alipay_cert_parse(e1, l3, "ec", err, sizeof(err));
    ck_assert_ptr_nonnull(ec);
    ck_assert_ptr_null(alipay_cert_root_sn(ec, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "no RSA-signed root"));
    sk_X509_pop_free(ec, X509_free);
    free(r1);
    free(sha1);
    free(e1);
}
END_TEST

static int verify(const char *file, time_t at, char *err, size_t errlen)
{
    STACK_OF(X509) *chain = load(file), *roots = load("alipayRootCert.crt");
    int rc = alipay_cert_verify(chain, roots, at, err, errlen);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(roots, X509_free);
    return rc;
}

/* Alipay's certificates chain to the bundle through the intermediate their
 * file carries; the impostor intermediate (same name, other key) and an
 * expired certificate do not. */
START_TEST(test_chain_checks)
{
    char err[256] = "";
    ck_assert_msg(verify("alipayCertPublicKey_RSA2.crt", 0, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(verify("alipayCertPublicKey_RSA2_rotated.crt", 0, err, sizeof(err)) == 0, "%s",
                  err);
    ck_assert_msg(verify("appCertPublicKey_2021000000000001.crt", 0, err, sizeof(err)) == 0, "%s",
                  err);
    ck_assert_int_eq(verify("alipayCertPublicKey_RSA2_unknown_ca.crt", 0, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "does not chain"), "%s", err);
    ck_assert_int_eq(verify("alipayCertPublicKey_RSA2_expired.crt", 0, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "expired"), "%s", err);
    /* within its validity (2020-2021) it chains */
    ck_assert_msg(verify("alipayCertPublicKey_RSA2_expired.crt", 1593561600 /* 2020-07-01 */, err,
                         sizeof(err)) == 0,
                  "%s", err);
    /* without its intermediate the certificate does not chain */
    STACK_OF(X509) *chain = load("alipayCertPublicKey_RSA2.crt"),
                   *roots = load("alipayRootCert.crt");
    X509_free(sk_X509_pop(chain));
    ck_assert_int_eq(alipay_cert_verify(chain, roots, 0, err, sizeof(err)), -1);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(roots, X509_free);
}
END_TEST

/* The app certificate's key is the app key's public half; Alipay's is not. */
START_TEST(test_public_key_and_pair)
{
    char err[256] = "";
    EVP_PKEY *priv = alipay_key_load_private(
        ts_vector("cert/appCertPrivateKey_2021000000000001.pem"), err, sizeof(err));
    ck_assert_msg(priv != NULL, "%s", err);
    STACK_OF(X509) *app = load("appCertPublicKey_2021000000000001.crt");
    STACK_OF(X509) *ali = load("alipayCertPublicKey_RSA2.crt");
    EVP_PKEY *app_pub = alipay_cert_public_key(app, "app", err, sizeof(err));
    EVP_PKEY *ali_pub = alipay_cert_public_key(ali, "alipay", err, sizeof(err));
    ck_assert(app_pub && ali_pub);
    ck_assert_int_eq(alipay_key_is_pair(priv, app_pub), 1);
    ck_assert_int_eq(alipay_key_is_pair(priv, ali_pub), 0);
    EVP_PKEY_free(app_pub);
    EVP_PKEY_free(ali_pub);
    EVP_PKEY_free(priv);
    sk_X509_pop_free(app, X509_free);
    sk_X509_pop_free(ali, X509_free);

    /* an EC root's key is refused as a signing key */
    STACK_OF(X509) *ec = load("ca/root_e1.crt");
    ck_assert_ptr_null(alipay_cert_public_key(ec, "root_e1.crt", err, sizeof(err)));
    ck_assert_msg(strstr(err, "root_e1.crt: the certificate's key is not an RSA key"), "%s", err);
    sk_X509_pop_free(ec, X509_free);
}
END_TEST

/* Not a certificate: one line naming the file. */
START_TEST(test_bad_files)
{
    char err[256] = "";
    ck_assert_ptr_null(alipay_cert_parse("hello", 5, "x.crt", err, sizeof(err)));
    ck_assert_str_eq(err, "x.crt: no PEM certificate in it");
    /* a good certificate, then a block that is not one */
    size_t len;
    char *pem = ts_read_file(ts_vector("cert/alipayCertPublicKey_RSA2.crt"), &len);
    char *end = strstr(pem, "-----END CERTIFICATE-----\n");
    ck_assert_ptr_nonnull(end);
    char two[8192];
    int n = snprintf(two, sizeof(two),
                     "%.*s-----BEGIN CERTIFICATE-----\nAAAA\n"
                     "-----END CERTIFICATE-----\n",
                     (int)(end - pem + 26), pem);
    ck_assert_ptr_null(alipay_cert_parse(two, (size_t)n, "y.crt", err, sizeof(err)));
    ck_assert_str_eq(err, "y.crt: a certificate in it does not parse");
    free(pem);
    ck_assert_ptr_null(alipay_cert_load("/nonexistent/z.crt", err, sizeof(err)));
    ck_assert_msg(strstr(err, "/nonexistent/z.crt: cannot read"), "%s", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alipay_cert");
    TCase *tc = tcase_create("vectors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_sns_equal_the_sdk);
    tcase_add_test(tc, test_issuer_text_is_rfc2253_raw_utf8);
    tcase_add_test(tc, test_issuer_text_multi_valued_and_email);
    tcase_add_test(tc, test_root_sn_equals_the_sdk);
    tcase_add_test(tc, test_root_sn_order_and_no_rsa_root);
    tcase_add_test(tc, test_chain_checks);
    tcase_add_test(tc, test_public_key_and_pair);
    tcase_add_test(tc, test_bad_files);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
