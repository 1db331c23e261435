/* encrypt: content encryption (encrypt_type=AES), as the gateway plays it.
 *
 * With --aes-key (the key Alipay's console shows the app), a call with a
 * biz_content must say encrypt_type=AES (in the URL query or the form body:
 * the two are merged, and SDKs put it in either) and send biz_content as
 * the base64 AES ciphertext. The signature covers the ciphertext, so it is
 * checked first and biz_content decrypted after; a biz_content that does
 * not decrypt (sent in plain, or under another key) gets the signed 40003
 * Alipay answers then. The answer to a call that said encrypt_type=AES is
 * encrypted: its node is the ciphertext as a JSON string, signed with its
 * quotes. oauth.token has no biz_content: it is taken without
 * encrypt_type, and then answered in plain, as the SDKs, which never
 * encrypt a call without biz_content, expect. Gateway refusals
 * (error_response) are never encrypted. The cipher is lib/alipay_aes. */
#ifndef ALIPAY_SIM_ENCRYPT_H
#define ALIPAY_SIM_ENCRYPT_H

#include "method.h"

/* --aes-key: switches content encryption on. Returns 0, or -1 with err
 * (which never quotes the key). */
int encrypt_use(struct sim *s, const char *key_b64, char *err, size_t errlen);
void encrypt_free(struct sim *s);

/* Checks encrypt_type before the signature; takes_biz: the method has a
 * biz_content. Returns 1 when it filled out with the refusal (an unsigned
 * error_response), 0 when the call may go on, -1 when out of memory. */
int encrypt_check_request(const struct sim *s, const struct alipay_params *p, int takes_biz,
                          enum alipay_sign_type type, struct sim_node *out);

/* 1 when the call said encrypt_type=AES and the simulator has a key: its
 * biz_content is ciphertext and its answer goes out encrypted. */
int encrypt_on(const struct sim *s, const struct alipay_params *p);

/* biz_content as the method reads it: decrypted when encrypt_on, else as
 * sent. Returns 0 with *out malloc'd (NULL when there is none), or -1 when
 * it does not decrypt or memory runs out. */
int encrypt_biz(const struct sim *s, const struct alipay_params *p, char **out);

/* What Alipay answers a biz_content it cannot decrypt: a signed node of
 * the method, in plain, 40003 isv.decryption-error-unknown. */
int encrypt_refusal(struct sim_node *out, const char *method, enum alipay_sign_type type);

#endif
