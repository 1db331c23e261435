/* Fuzz target: certificate files and bundles as operators and Alipay's
 * download hand them over. Any bytes either parse into certificates whose
 * SN is 32 lowercase hex digits (and a root SN made of such, joined by
 * '_'), or are refused with one line; the chain check and the store never
 * admit what does not chain to the vectors' roots; nothing crashes or
 * leaks. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alipay_cert.h"
#include "fuzz.h"

static STACK_OF(X509) * roots;

int fuzz_init(void)
{
    char err[256];
    roots = alipay_cert_load(CARDGATE_VECTORS_DIR "/cert/alipayRootCert.crt", err, sizeof(err));
    return roots ? 0 : -1;
}

static int is_sn(const char *s)
{
    for (int i = 0; i < ALIPAY_CERT_SN_LEN; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return 0;
    return s[ALIPAY_CERT_SN_LEN] == '\0' || s[ALIPAY_CERT_SN_LEN] == '_';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "", sn[ALIPAY_CERT_SN_LEN + 1];
    if (!roots && fuzz_init() < 0)
        abort();
    STACK_OF(X509) *certs = alipay_cert_parse((const char *)data, size, "fuzz", err, sizeof(err));
    if (!certs) {
        if (strncmp(err, "fuzz: ", 6) != 0 || strchr(err, '\n'))
            abort();
        return 0;
    }
    for (int i = 0; i < sk_X509_num(certs); i++) {
        X509 *x = sk_X509_value(certs, i);
        if (alipay_cert_sn(x, sn, err, sizeof(err)) == 0 && !is_sn(sn))
            abort();
        free(alipay_cert_issuer_text(x));
    }
    char *root_sn = alipay_cert_root_sn(certs, err, sizeof(err));
    for (const char *p = root_sn; p && *p; p += ALIPAY_CERT_SN_LEN + (p[ALIPAY_CERT_SN_LEN] == '_'))
        if (!is_sn(p))
            abort();
    free(root_sn);
    /* whatever verifies against the vectors' roots: the store agrees */
    int chains = alipay_cert_verify(certs, roots, 0, err, sizeof(err)) == 0;
    STACK_OF(X509) *copy = sk_X509_new_null();
    for (int i = 0; copy && i < sk_X509_num(roots); i++) {
        X509_up_ref(sk_X509_value(roots, i));
        sk_X509_push(copy, sk_X509_value(roots, i));
    }
    struct alipay_cert_store *store = copy ? alipay_cert_store_new(copy) : NULL;
    if (store &&
        alipay_cert_store_admit(store, (const char *)data, size, NULL, sn, err, sizeof(err)) == 0) {
        if (!chains)
            abort(); /* admitted what does not chain */
        EVP_PKEY *k = alipay_cert_store_get(store, sn);
        if (!k)
            abort();
        EVP_PKEY_free(k);
    }
    alipay_cert_store_free(store);
    sk_X509_pop_free(certs, X509_free);
    return 0;
}
