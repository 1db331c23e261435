/* alipay_aes: Alipay's content encryption (encrypt_type=AES).
 *
 * With encryption switched on in Alipay's console, biz_content is sent as
 * base64 of AES-CBC under the app's AES key (128, 192 or 256 bits, by the
 * key's length), a zero IV and PKCS#5/#7 padding, over the UTF-8 JSON; the
 * answer's response node comes back the same way. Only OpenSSL's EVP
 * cipher APIs are used. */
#ifndef CARDGATE_ALIPAY_AES_H
#define CARDGATE_ALIPAY_AES_H

#include <stddef.h>

struct alipay_aes; /* the key and its cipher, fetched once; read-only after creation */

/* Makes a key from the base64 text Alipay's console shows (16, 24 or 32
 * bytes once decoded). Returns it (free with alipay_aes_free), or NULL with
 * a one-line reason in err that never quotes the key. */
struct alipay_aes *alipay_aes_new(const char *key_b64, char *err, size_t errlen);
void alipay_aes_free(struct alipay_aes *a);

/* Encrypts the n bytes at text: the base64 ciphertext on one line,
 * malloc'd, which the caller frees; NULL with err. */
char *alipay_aes_encrypt(const struct alipay_aes *a, const char *text, size_t n, char *err,
                         size_t errlen);

/* Decrypts base64 ciphertext (len bytes): the plaintext, malloc'd and
 * NUL-terminated, its length in *out_len; NULL with err when the text is
 * not base64, its padding does not check (another key), or it is not valid
 * UTF-8 (the rare other key whose padding happens to check). */
char *alipay_aes_decrypt(const struct alipay_aes *a, const char *b64, size_t len, size_t *out_len,
                         char *err, size_t errlen);

#endif
