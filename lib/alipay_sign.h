/* alipay_sign: Alipay's request parameters, the string to sign, RSA/RSA2
 * signatures and the Beijing-time timestamp. Byte-exact with the official
 * SDKs (see tests/vectors). */
#ifndef CARDGATE_ALIPAY_SIGN_H
#define CARDGATE_ALIPAY_SIGN_H

#include <stddef.h>
#include <time.h>
#include <openssl/evp.h>

enum alipay_sign_type {
    ALIPAY_SIGN_RSA2, /* SHA256withRSA, preferred */
    ALIPAY_SIGN_RSA,  /* SHA1withRSA */
};

/* Parses "RSA2" / "RSA"; returns 0 on success, -1 otherwise. */
int alipay_sign_type_parse(const char *s, enum alipay_sign_type *out);
const char *alipay_sign_type_name(enum alipay_sign_type t);

struct alipay_param {
    char *key;
    char *value;
};

/* An ordered list of request parameters. Owns copies of its strings. */
struct alipay_params {
    struct alipay_param *v;
    size_t n;
    size_t cap;
};

void alipay_params_init(struct alipay_params *p);
void alipay_params_free(struct alipay_params *p);
/* Copies key and value in. An empty or NULL value is left out (the Java
 * SDK's rule: signing `k=` makes the gateway refuse). Replaces an existing
 * key. Returns 0, or -1 when out of memory. */
int alipay_params_set(struct alipay_params *p, const char *key, const char *value);
/* The value of `key`, or NULL. Owned by p. */
const char *alipay_params_get(const struct alipay_params *p, const char *key);

/* The string to sign: every parameter but `sign` (and `sign_type` is kept),
 * sorted by key in byte order, joined k=v&k=v with raw values. Returns a
 * malloc'd string the caller frees, or NULL when out of memory. */
char *alipay_sign_content(const struct alipay_params *p);

/* Signs data with RSASSA-PKCS1-v1_5 (SHA-256 for RSA2, SHA-1 for RSA) and
 * returns the standard base64 of the signature on one line, malloc'd, which
 * the caller frees; NULL with a reason in err. key is borrowed. */
char *alipay_sign_data(EVP_PKEY *key, enum alipay_sign_type type, const char *data, size_t len,
                       char *err, size_t errlen);

/* The same, many times with one key: the signing context is prepared once
 * (EVP_DigestSignInit fetches the digest and the key's signature method
 * from the providers) and copied for each signature, which saves those
 * fetches on every call. Not for use by two threads at once (one per
 * worker). key is borrowed and must outlive the signer. */
struct alipay_signer;
struct alipay_signer *alipay_signer_new(EVP_PKEY *key, enum alipay_sign_type type, char *err,
                                        size_t errlen);
/* As alipay_sign_data: the base64 signature, malloc'd; NULL with err. */
char *alipay_signer_sign(const struct alipay_signer *s, const char *data, size_t len, char *err,
                         size_t errlen);
void alipay_signer_free(struct alipay_signer *s);

/* Verifies a base64 signature over data. Returns 1 when it holds, 0 when it
 * does not (including bad base64). key is borrowed. */
int alipay_sign_verify(EVP_PKEY *pub, enum alipay_sign_type type, const char *data, size_t len,
                       const char *sig_b64);

/* Standard base64 on one line of the n bytes at data: malloc'd and
 * NUL-terminated, which the caller frees; NULL when out of memory. */
char *alipay_b64_encode(const unsigned char *data, size_t n);

/* Decodes standard base64 (no whitespace, padded to a multiple of 4) into
 * out, which has room for len / 4 * 3 bytes. Returns the decoded length,
 * or -1 when the text is not base64. */
long alipay_b64_decode(const char *b64, size_t len, unsigned char *out);

/* Writes t as Beijing time (UTC+8), "yyyy-MM-dd HH:mm:ss", whatever TZ is. */
void alipay_sign_timestamp(time_t t, char out[20]);

#endif
