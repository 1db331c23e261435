/* Fuzz target: judging whatever a gateway (or a man in the middle) sends.
 * Whatever the bytes, the verdict is a class and never a trusted success
 * without a signature that holds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alipay_key.h"
#include "alipay_response.h"
#include "fuzz.h"

static EVP_PKEY *pub;

int fuzz_init(void)
{
    char err[256];
    pub = alipay_key_load_public(CARDGATE_VECTORS_DIR "/keys/alipay_public_sim.pem", err,
                                 sizeof(err));
    return pub ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pub && fuzz_init() < 0)
        abort();
    struct alipay_reply r;
    memset(&r, 0, sizeof(r));
    alipay_response_judge((const char *)data, size, "alipay.marketing.card.open", pub,
                          ALIPAY_SIGN_RSA2, &r);
    if (r.outcome == ALIPAY_OK && !r.verified)
        abort(); /* an unsigned success must never pass */
    if (r.outcome != ALIPAY_BAD_SIGNATURE && !r.node)
        abort();
    alipay_reply_free(&r);
    const char *v;
    size_t n;
    if (alipay_response_find((const char *)data, size, "sign", &v, &n) == 0 &&
        (v < (const char *)data || v + n > (const char *)data + size))
        abort();
    return 0;
}
