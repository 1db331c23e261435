/* seal: what the ledger keeps of a request while its outcome is not known
 * (card_requests.sealed), encrypted so that nothing of it — member data
 * included — can be read in the database or its backups.
 *
 * AES-256-GCM with a random 96-bit nonce per message; the additional data
 * binds a sealed text to the ledger row it was made for (app_id and
 * out_serial_no), so a text copied to another row does not open. Layout:
 * one version byte (1), the 12-byte nonce, the ciphertext, the 16-byte tag. */
#ifndef CARDGATE_SEAL_H
#define CARDGATE_SEAL_H

#include <stddef.h>

#define SEAL_KEY_LEN 32
#define SEAL_OVERHEAD (1 + 12 + 16)

/* A sealer: AES-256-GCM with key set up once (the cipher's fetch and key
 * schedule); only the nonce changes per message. One per worker: not for
 * two threads at once. NULL from _new when OpenSSL fails. */
struct seal_box;
struct seal_box *seal_box_new(const unsigned char key[SEAL_KEY_LEN]);
void seal_box_free(struct seal_box *b);

/* Encrypts plain[0..len), bound to the row of app_id and out_serial_no
 * serial (the additional data "app_id\nserial"). Returns the sealed bytes,
 * malloc'd (the caller frees), with their length in *outlen; NULL when the
 * RNG or the cipher fails or memory runs out. */
unsigned char *seal_box_encrypt(struct seal_box *b, const char *app_id, const char *serial,
                                const void *plain, size_t len, size_t *outlen);

/* Opens what a box of the same key sealed for the same row. Returns the plain
 * text, malloc'd with a NUL after it (the caller frees), its length in
 * *outlen; NULL when the text was changed, is bound to another row, was
 * sealed under another key, or is not a sealed text at all. */
char *seal_decrypt(const unsigned char key[SEAL_KEY_LEN], const char *app_id, const char *serial,
                   const unsigned char *sealed, size_t len, size_t *outlen);

#endif
