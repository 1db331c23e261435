/* seal: see seal.h. */
#include "seal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#define SEAL_VERSION 1
#define NONCE_LEN 12
#define TAG_LEN 16

/* The additional data, "app_id\nout_serial_no", fed to ctx in pieces
 * (GCM takes it as one stream): 1, or 0 on failure. */
static int put_row(EVP_CIPHER_CTX *ctx, int enc, const char *app_id, const char *serial)
{
    int (*update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int) =
        enc ? EVP_EncryptUpdate : EVP_DecryptUpdate;
    int n = 0;
    return update(ctx, NULL, &n, (const unsigned char *)app_id, (int)strlen(app_id)) == 1 &&
           update(ctx, NULL, &n, (const unsigned char *)"\n", 1) == 1 &&
           update(ctx, NULL, &n, (const unsigned char *)serial, (int)strlen(serial)) == 1;
}

struct seal_box {
    EVP_CIPHER_CTX *ctx; /* AES-256-GCM with the key set, no nonce yet */
};

struct seal_box *seal_box_new(const unsigned char key[SEAL_KEY_LEN])
{
    struct seal_box *b = calloc(1, sizeof(*b));
    if (b && (!(b->ctx = EVP_CIPHER_CTX_new()) ||
              EVP_EncryptInit_ex(b->ctx, EVP_aes_256_gcm(), NULL, key, NULL) != 1)) {
        EVP_CIPHER_CTX_free(b->ctx);
        free(b);
        b = NULL;
    }
    return b;
}

/* A fresh nonce, then the row, the text and the tag, with the box's key
 * already in its context. The output as seal.h says. */
unsigned char *seal_box_encrypt(struct seal_box *b, const char *app_id, const char *serial,
                                const void *plain, size_t len, size_t *outlen)
{
    if (len > INT_MAX - SEAL_OVERHEAD)
        return NULL;
    unsigned char *out = malloc(len + SEAL_OVERHEAD);
    if (!out)
        return NULL;
    unsigned char *nonce = out + 1, *body = out + 1 + NONCE_LEN, *tag = body + len;
    int n = 0, fin = 0;
    int ok = RAND_bytes(nonce, NONCE_LEN) == 1 &&
             EVP_EncryptInit_ex(b->ctx, NULL, NULL, NULL, nonce) == 1 &&
             put_row(b->ctx, 1, app_id, serial) &&
             EVP_EncryptUpdate(b->ctx, body, &n, plain, (int)len) == 1 &&
             EVP_EncryptFinal_ex(b->ctx, body + n, &fin) == 1 &&
             EVP_CIPHER_CTX_ctrl(b->ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
    if (!ok) {
        free(out);
        return NULL;
    }
    out[0] = SEAL_VERSION;
    *outlen = len + SEAL_OVERHEAD;
    return out;
}

void seal_box_free(struct seal_box *b)
{
    if (!b)
        return;
    EVP_CIPHER_CTX_free(b->ctx);
    free(b);
}

char *seal_decrypt(const unsigned char key[SEAL_KEY_LEN], const char *app_id, const char *serial,
                   const unsigned char *sealed, size_t len, size_t *outlen)
{
    if (len < SEAL_OVERHEAD || len > INT_MAX || sealed[0] != SEAL_VERSION)
        return NULL;
    size_t plain_len = len - SEAL_OVERHEAD;
    const unsigned char *nonce = sealed + 1, *body = nonce + NONCE_LEN, *tag = body + plain_len;
    char *out = malloc(plain_len + 1);
    if (!out)
        return NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    /* The tag is checked by the final step: nothing is returned before. */
    int ok = ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) == 1 &&
             put_row(ctx, 0, app_id, serial) &&
             EVP_DecryptUpdate(ctx, (unsigned char *)out, &n, body, (int)plain_len) == 1 &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)tag) == 1 &&
             EVP_DecryptFinal_ex(ctx, (unsigned char *)out + n, &fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        OPENSSL_cleanse(out, plain_len);
        free(out);
        return NULL;
    }
    out[plain_len] = '\0';
    *outlen = plain_len;
    return out;
}
