/* alipay_key: loading the app's private key and Alipay's public key.
 *
 * Alipay's key tool hands keys out as one line of base64 (PKCS#8 "for Java",
 * PKCS#1 for the other languages); people also keep them as PEM files. All
 * forms are accepted and OpenSSL's decoder decides which one it is, so nobody
 * converts keys by hand. */
#ifndef CARDGATE_ALIPAY_KEY_H
#define CARDGATE_ALIPAY_KEY_H

#include <stddef.h>
#include <openssl/evp.h>

/* Parses an RSA private key from text: PKCS#1 PEM, PKCS#8 PEM, or the
 * one-line base64 of either. `name` (a file name or setting) is used in the
 * error message. Returns a new key the caller frees with EVP_PKEY_free, or
 * NULL with a one-line reason in err. */
EVP_PKEY *alipay_key_parse_private(const char *text, size_t len, const char *name, char *err,
                                   size_t errlen);

/* Parses an RSA public key: PEM (SubjectPublicKeyInfo or PKCS#1) or the
 * one-line base64 of the DER. Ownership and errors as above. */
EVP_PKEY *alipay_key_parse_public(const char *text, size_t len, const char *name, char *err,
                                  size_t errlen);

/* Reads a key or certificate file (at most 64 KiB) whole: malloc'd and
 * NUL-terminated text the caller frees, its length in *len; NULL with a
 * one-line reason naming the file in err. */
char *alipay_key_read_file(const char *path, size_t *len, char *err, size_t errlen);

/* Reads `path` and parses it as above; the message names the file. */
EVP_PKEY *alipay_key_load_private(const char *path, char *err, size_t errlen);
EVP_PKEY *alipay_key_load_public(const char *path, char *err, size_t errlen);

/* Returns 1 when `pub` is the public half of `priv` (the misconfiguration
 * where the app's own public key is set where Alipay's belongs), else 0. */
int alipay_key_is_pair(EVP_PKEY *priv, EVP_PKEY *pub);

#endif
