/* alipay_aes: see alipay_aes.h. */
#include "alipay_aes.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "alipay_sign.h"
#include "validate.h"

struct alipay_aes {
    EVP_CIPHER *cipher; /* AES-{128,192,256}-CBC, fetched once */
    unsigned char key[32];
    size_t key_len;
};

struct alipay_aes *alipay_aes_new(const char *key_b64, char *err, size_t errlen)
{
    size_t len = key_b64 ? strlen(key_b64) : 0;
    unsigned char raw[64];
    long n = len > 0 && len <= 64 ? alipay_b64_decode(key_b64, len, raw) : -1;
    if (n != 16 && n != 24 && n != 32) {
        snprintf(err, errlen,
                 "not an AES key: base64 of 16, 24 or 32 bytes is expected (as Alipay's console "
                 "shows it)");
        OPENSSL_cleanse(raw, sizeof(raw));
        return NULL;
    }
    struct alipay_aes *a = calloc(1, sizeof(*a));
    const char *name = n == 16 ? "AES-128-CBC" : n == 24 ? "AES-192-CBC" : "AES-256-CBC";
    if (a)
        a->cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    if (!a || !a->cipher) {
        snprintf(err, errlen, "cannot use %s", name);
        OPENSSL_cleanse(raw, sizeof(raw));
        free(a);
        ERR_clear_error();
        return NULL;
    }
    memcpy(a->key, raw, (size_t)n);
    a->key_len = (size_t)n;
    OPENSSL_cleanse(raw, sizeof(raw));
    return a;
}

void alipay_aes_free(struct alipay_aes *a)
{
    if (!a)
        return;
    EVP_CIPHER_free(a->cipher);
    OPENSSL_cleanse(a->key, sizeof(a->key));
    free(a);
}

/* Runs the cipher once over in (n bytes) into out (room for n + 16). Returns
 * the output length, or -1 (the padding did not check, when decrypting). */
static long crypt_once(const struct alipay_aes *a, int enc, const unsigned char *in, size_t n,
                       unsigned char *out)
{
    static const unsigned char zero_iv[16];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0;
    int ok = ctx && n <= (size_t)INT32_MAX - 32 &&
             EVP_CipherInit_ex2(ctx, a->cipher, a->key, zero_iv, enc, NULL) == 1 &&
             EVP_CipherUpdate(ctx, out, &l1, in, (int)n) == 1 &&
             EVP_CipherFinal_ex(ctx, out + l1, &l2) == 1;
    EVP_CIPHER_CTX_free(ctx);
    ERR_clear_error();
    return ok ? (long)l1 + l2 : -1;
}

char *alipay_aes_encrypt(const struct alipay_aes *a, const char *text, size_t n, char *err,
                         size_t errlen)
{
    unsigned char *ct = malloc(n + 16);
    long got = ct ? crypt_once(a, 1, (const unsigned char *)text, n, ct) : -1;
    char *b64 = got >= 0 ? alipay_b64_encode(ct, (size_t)got) : NULL;
    free(ct);
    if (!b64)
        snprintf(err, errlen, "cannot encrypt biz_content");
    return b64;
}

char *alipay_aes_decrypt(const struct alipay_aes *a, const char *b64, size_t len, size_t *out_len,
                         char *err, size_t errlen)
{
    unsigned char *ct = malloc(len / 4 * 3 + 1);
    char *pt = malloc(len / 4 * 3 + 17);
    long n = ct && pt ? alipay_b64_decode(b64, len, ct) : -1;
    const char *why = !ct || !pt ? "out of memory" : "the ciphertext is not base64";
    long got = -1;
    if (n > 0 && n % 16 == 0) {
        got = crypt_once(a, 0, ct, (size_t)n, (unsigned char *)pt);
        why = "it does not decrypt with the configured key";
    } else if (n >= 0) {
        why = "the ciphertext is not whole AES blocks";
    }
    free(ct);
    int utf8 = 0;
    if (got >= 0) {
        pt[got] = '\0';
        if (memchr(pt, '\0', (size_t)got) == NULL)
            validate_utf8_chars(pt, &utf8);
        if (!utf8) {
            got = -1;
            why = "it does not decrypt with the configured key (not UTF-8 text)";
        }
    }
    if (got < 0) {
        snprintf(err, errlen, "%s", why);
        free(pt);
        return NULL;
    }
    *out_len = (size_t)got;
    return pt;
}
