/* Fuzz target: judging whatever a gateway (or a man in the middle) sends.
 * Whatever the bytes, the verdict is a class and never a trusted success
 * without a signature that holds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctype.h>

#include "alipay_aes.h"
#include "alipay_cert.h"
#include "alipay_key.h"
#include "alipay_response.h"
#include "fuzz.h"

static EVP_PKEY *pub;
/* certificate mode and encryption: the vectors' Alipay certificate and key */
static EVP_PKEY *cert_pub;
static struct alipay_aes *aes;

int fuzz_init(void)
{
    char err[256];
    pub = alipay_key_load_public(CARDGATE_VECTORS_DIR "/keys/alipay_public_sim.pem", err,
                                 sizeof(err));
    STACK_OF(X509) *c = alipay_cert_load(CARDGATE_VECTORS_DIR "/cert/alipayCertPublicKey_RSA2.crt",
                                         err, sizeof(err));
    cert_pub = c ? alipay_cert_public_key(c, "cert", err, sizeof(err)) : NULL;
    sk_X509_pop_free(c, X509_free);
    aes = alipay_aes_new("EREREREREREREREREREREQ==", err, sizeof(err));
    return pub && cert_pub && aes ? 0 : -1;
}

/* The verdict's promises, whatever the bytes. */
static void check_reply(const struct alipay_reply *r)
{
    if (r->outcome == ALIPAY_OK && !r->verified)
        abort(); /* an unsigned success must never pass */
    if (r->outcome != ALIPAY_BAD_SIGNATURE && !r->node)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pub && fuzz_init() < 0)
        abort();
    struct alipay_reply r;
    memset(&r, 0, sizeof(r));
    alipay_response_judge((const char *)data, size, "alipay.marketing.card.open", pub,
                          ALIPAY_SIGN_RSA2, &r);
    check_reply(&r);
    alipay_reply_free(&r);
    /* an encrypted answer: verified over its quoted text, then decrypted */
    memset(&r, 0, sizeof(r));
    alipay_response_judge_aes((const char *)data, size, "alipay.marketing.card.open", cert_pub,
                              ALIPAY_SIGN_RSA2, aes, &r);
    check_reply(&r);
    alipay_reply_free(&r);
    char sn[33];
    if (alipay_response_cert_sn((const char *)data, size, sn) == 0) {
        for (int i = 0; i < 32; i++)
            if (!isxdigit((unsigned char)sn[i]) || isupper((unsigned char)sn[i]))
                abort();
        if (sn[32] != '\0')
            abort();
    }
    const char *v;
    size_t n;
    if (alipay_response_find((const char *)data, size, "sign", &v, &n) == 0 &&
        (v < (const char *)data || v + n > (const char *)data + size))
        abort();
    return 0;
}
