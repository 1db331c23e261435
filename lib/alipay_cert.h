/* alipay_cert: Alipay's certificate mode ("公钥证书").
 *
 * In certificate mode every request carries app_cert_sn (the SN of the
 * app's public-key certificate) and alipay_root_cert_sn (the SNs of Alipay's
 * RSA-signed roots), and every answer says which of Alipay's certificates
 * signed it (alipay_cert_sn). An SN is the lowercase hex MD5 of the
 * certificate's issuer written in RFC 2253 order (CN=…,OU=…,O=…,C=…: the
 * reverse of the certificate's order, short names, raw UTF-8 values) and
 * its serial number in decimal, as Alipay's SDKs compute it (see
 * tests/vectors/cert and the SDK bugs it guards against). Everything here
 * uses OpenSSL's X509 APIs; nothing parses ASN.1 by hand. */
#ifndef CARDGATE_ALIPAY_CERT_H
#define CARDGATE_ALIPAY_CERT_H

#include <stddef.h>
#include <time.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#define ALIPAY_CERT_SN_LEN 32 /* hex digits of an SN */

/* Parses every certificate of PEM text, in order (Alipay's files hold the
 * certificate followed by its issuer; a bundle holds its roots). Blank lines
 * inside a block, which OpenSSL's PEM reader refuses and some of Alipay's
 * bundles have, are ignored. `name` (a file or setting) goes in the error.
 * Returns a new stack the caller frees with
 * sk_X509_pop_free(s, X509_free), or NULL with err (no certificate, or one
 * that does not parse). */
STACK_OF(X509) *
    alipay_cert_parse(const char *pem, size_t len, const char *name, char *err, size_t errlen);

/* Reads `path` and parses it as above; the error names the file. */
STACK_OF(X509) * alipay_cert_load(const char *path, char *err, size_t errlen);

/* Writes the SN of `cert` (32 lowercase hex digits and a NUL) to out.
 * Returns 0, or -1 with err. cert is borrowed. */
int alipay_cert_sn(X509 *cert, char out[ALIPAY_CERT_SN_LEN + 1], char *err, size_t errlen);

/* The issuer of `cert` as the SN hashes it: "CN=…,OU=…,O=…,C=…". Returns a
 * malloc'd string the caller frees, or NULL when out of memory. */
char *alipay_cert_issuer_text(X509 *cert);

/* The root SN of a bundle: the SNs of its RSA-signed certificates
 * (signature algorithm under 1.2.840.113549.1.1, SHA-1 included) joined
 * with '_', in bundle order; the others (ECDSA, SM2) are skipped. Returns a
 * malloc'd string the caller frees, or NULL with err (no RSA-signed root). */
char *alipay_cert_root_sn(STACK_OF(X509) * roots, char *err, size_t errlen);

/* Checks that the first certificate of `chain` chains to one of `roots`,
 * with the chain's other certificates as intermediates, and that every
 * certificate of that path is valid at `at` (0: now). Returns 0, or -1 with
 * a one-line reason in err. Both stacks are borrowed. */
int alipay_cert_verify(STACK_OF(X509) * chain, STACK_OF(X509) * roots, time_t at, char *err,
                       size_t errlen);

/* The public key of the first certificate of `chain`, with a reference the
 * caller frees with EVP_PKEY_free, or NULL with err (not RSA). */
EVP_PKEY *alipay_cert_public_key(STACK_OF(X509) * chain, const char *name, char *err,
                                 size_t errlen);

/* Alipay's certificates by SN, for certificate mode: the one configured
 * at start and those fetched since (Alipay rotating its certificate), with
 * the root bundle they must chain to. Shared by every worker: its
 * functions lock. */
struct alipay_cert_store;

/* Takes roots (freed with the store). Returns NULL when out of memory. */
struct alipay_cert_store *alipay_cert_store_new(STACK_OF(X509) * roots);
void alipay_cert_store_free(struct alipay_cert_store *s);

/* Checks the certificate of PEM text (its first one, the rest its
 * intermediates) as a certificate of Alipay: it chains to the store's
 * roots, is valid now, is not a CA, has an RSA key, and its SN is want_sn
 * (NULL: any). Chaining is not enough: Alipay's CA issues every merchant's
 * app certificate too. So the first certificate admitted (the configured
 * one) sets whose they are: every later one must have its subject but for
 * the CN (C, O, OU: Alipay's, not a merchant's). Then keeps its key under
 * its SN (written to sn_out when not NULL). Returns 0, or -1 with a
 * one-line reason in err (nothing kept). */
int alipay_cert_store_admit(struct alipay_cert_store *s, const char *pem, size_t len,
                            const char *want_sn, char sn_out[ALIPAY_CERT_SN_LEN + 1], char *err,
                            size_t errlen);

/* The key of the certificate with SN `sn`, with a reference the caller
 * frees with EVP_PKEY_free; NULL when the store has none. */
EVP_PKEY *alipay_cert_store_get(struct alipay_cert_store *s, const char *sn);

#endif
