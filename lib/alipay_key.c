/* alipay_key: see alipay_key.h. */
#include "alipay_key.h"

#include "alipay_sign.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>

#define KEY_FILE_MAX (64 * 1024)

static int has_pem_header(const char *text, size_t len)
{
    return memmem(text, len, "-----BEGIN", 10) != NULL;
}

static int mentions(const char *text, size_t len, const char *what)
{
    return memmem(text, len, what, strlen(what)) != NULL;
}

/* Decodes one-line (or wrapped) base64 into DER. Whitespace is ignored.
 * Returns a malloc'd buffer the caller frees, or NULL when the text is not
 * base64. */
static unsigned char *base64_to_der(const char *text, size_t len, size_t *outlen)
{
    char *clean = malloc(len + 1);
    size_t n = 0;
    if (!clean)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (!isspace((unsigned char)text[i]))
            clean[n++] = text[i];
    }
    unsigned char *der = n > 0 ? malloc(n / 4 * 3 + 1) : NULL;
    long got = der ? alipay_b64_decode(clean, n, der) : -1;
    free(clean);
    if (got <= 0) {
        free(der);
        return NULL;
    }
    *outlen = (size_t)got;
    return der;
}

/* Lets OpenSSL's decoders recognise the structure (PKCS#1, PKCS#8, SPKI) of
 * an RSA key in PEM or DER. Returns a new key or NULL. */
static EVP_PKEY *decode_rsa(const unsigned char *data, size_t len, const char *input_type,
                            int selection)
{
    EVP_PKEY *pkey = NULL;
    OSSL_DECODER_CTX *dctx =
        OSSL_DECODER_CTX_new_for_pkey(&pkey, input_type, NULL, "RSA", selection, NULL, NULL);
    if (!dctx)
        return NULL;
    const unsigned char *p = data;
    size_t left = len;
    if (!OSSL_DECODER_from_data(dctx, &p, &left)) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    OSSL_DECODER_CTX_free(dctx);
    ERR_clear_error();
    return pkey;
}

static EVP_PKEY *decode_any_form(const char *text, size_t len, int selection)
{
    if (has_pem_header(text, len))
        return decode_rsa((const unsigned char *)text, len, "PEM", selection);
    size_t derlen = 0;
    unsigned char *der = base64_to_der(text, len, &derlen);
    if (!der)
        return NULL;
    EVP_PKEY *pkey = decode_rsa(der, derlen, "DER", selection);
    OPENSSL_cleanse(der, derlen);
    free(der);
    return pkey;
}

EVP_PKEY *alipay_key_parse_private(const char *text, size_t len, const char *name, char *err,
                                   size_t errlen)
{
    EVP_PKEY *pkey = decode_any_form(text, len, OSSL_KEYMGMT_SELECT_PRIVATE_KEY);
    if (!pkey) {
        snprintf(err, errlen,
                 "%s: not an RSA private key (expected PKCS#1 or PKCS#8 PEM, or the one-line "
                 "base64 key from Alipay's key tool)",
                 name);
        return NULL;
    }
    return pkey;
}

/* A public key whose object also carries the private exponent came from a
 * private key file. */
static int has_private_part(const EVP_PKEY *pkey)
{
    BIGNUM *d = NULL;
    int has = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &d) == 1;
    BN_clear_free(d);
    ERR_clear_error();
    return has;
}

EVP_PKEY *alipay_key_parse_public(const char *text, size_t len, const char *name, char *err,
                                  size_t errlen)
{
    if (has_pem_header(text, len) && mentions(text, len, "PRIVATE KEY")) {
        snprintf(err, errlen,
                 "%s: is a private key; expected Alipay's RSA public key (PEM or one-line base64)",
                 name);
        return NULL;
    }
    EVP_PKEY *pkey = decode_any_form(text, len, OSSL_KEYMGMT_SELECT_PUBLIC_KEY);
    if (pkey && has_private_part(pkey)) {
        EVP_PKEY_free(pkey);
        snprintf(err, errlen,
                 "%s: is a private key; expected Alipay's RSA public key (PEM or one-line base64)",
                 name);
        return NULL;
    }
    if (!pkey) {
        snprintf(err, errlen,
                 "%s: not an RSA public key (expected PEM or the one-line base64 public key "
                 "from Alipay)",
                 name);
        return NULL;
    }
    return pkey;
}

char *alipay_key_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(KEY_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, KEY_FILE_MAX + 1, f) : 0;
    int failed = !buf || ferror(f);
    fclose(f);
    if (failed || n > KEY_FILE_MAX || n == 0) {
        snprintf(err, errlen, "%s: %s", path,
                 n > KEY_FILE_MAX ? "too large for a key or certificate file"
                 : n == 0         ? "is empty"
                                  : "cannot read");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

EVP_PKEY *alipay_key_load_private(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text = alipay_key_read_file(path, &len, err, errlen);
    if (!text)
        return NULL;
    EVP_PKEY *pkey = alipay_key_parse_private(text, len, path, err, errlen);
    OPENSSL_cleanse(text, len);
    free(text);
    return pkey;
}

EVP_PKEY *alipay_key_load_public(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text = alipay_key_read_file(path, &len, err, errlen);
    if (!text)
        return NULL;
    EVP_PKEY *pkey = alipay_key_parse_public(text, len, path, err, errlen);
    free(text);
    return pkey;
}

int alipay_key_is_pair(EVP_PKEY *priv, EVP_PKEY *pub)
{
    int eq = EVP_PKEY_eq(priv, pub) == 1;
    ERR_clear_error();
    return eq;
}
