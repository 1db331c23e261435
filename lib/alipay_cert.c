/* alipay_cert: see alipay_cert.h. */
#include "alipay_cert.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "alipay_key.h"

/* The RSA signature algorithms: PKCS#1's arc. */
#define RSA_SIGNATURE_ARC "1.2.840.113549.1.1."

/* A growing string. */
struct text {
    char *s;
    size_t len, cap;
};

static int text_add(struct text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 128;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = realloc(t->s, cap);
        if (!p)
            return -1;
        t->s = p;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
    return 0;
}

/* pem without its blank (empty or whitespace-only) lines: OpenSSL's PEM
 * reader stops at one inside a block. Returns malloc'd text or NULL. */
static char *drop_blank_lines(const char *pem, size_t len, size_t *out_len)
{
    char *out = malloc(len + 1);
    size_t n = 0, i = 0;
    if (!out)
        return NULL;
    while (i < len) {
        size_t end = i;
        int blank = 1;
        while (end < len && pem[end] != '\n') {
            if (pem[end] != ' ' && pem[end] != '\t' && pem[end] != '\r')
                blank = 0;
            end++;
        }
        if (end < len)
            end++; /* the '\n' */
        if (!blank) {
            memcpy(out + n, pem + i, end - i);
            n += end - i;
        }
        i = end;
    }
    out[n] = '\0';
    *out_len = n;
    return out;
}

STACK_OF(X509) *
    alipay_cert_parse(const char *pem, size_t len, const char *name, char *err, size_t errlen)
{
    size_t clean_len;
    char *clean = drop_blank_lines(pem, len, &clean_len);
    BIO *bio = clean ? BIO_new_mem_buf(clean, (int)clean_len) : NULL;
    STACK_OF(X509) *certs = bio ? sk_X509_new_null() : NULL;
    if (!certs) {
        snprintf(err, errlen, "%s: out of memory", name);
        BIO_free(bio);
        free(clean);
        return NULL;
    }
    ERR_clear_error();
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(certs, x)) {
            X509_free(x);
            break;
        }
    }
    /* The loop ends at the text's end (no further BEGIN line: the normal
     * way) or at a block that does not parse. */
    unsigned long e = ERR_peek_last_error();
    int at_end = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
    ERR_clear_error();
    BIO_free(bio);
    free(clean);
    if (sk_X509_num(certs) == 0 || !at_end) {
        snprintf(err, errlen, "%s: %s", name,
                 sk_X509_num(certs) == 0 ? "no PEM certificate in it"
                                         : "a certificate in it does not parse");
        sk_X509_pop_free(certs, X509_free);
        return NULL;
    }
    return certs;
}

STACK_OF(X509) * alipay_cert_load(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *text = alipay_key_read_file(path, &len, err, errlen);
    if (!text)
        return NULL;
    STACK_OF(X509) *certs = alipay_cert_parse(text, len, path, err, errlen);
    free(text);
    return certs;
}

/* Appends one attribute "sn=value" of a name. */
static int add_entry(struct text *t, const X509_NAME_ENTRY *e)
{
    const ASN1_OBJECT *obj = X509_NAME_ENTRY_get_object(e);
    int nid = OBJ_obj2nid(obj);
    /* the SDK that made the vectors (alipay-sdk's getSN, node-forge's
     * short names) writes an e-mail address as E */
    const char *sn = nid == NID_pkcs9_emailAddress ? "E"
                     : nid != NID_undef            ? OBJ_nid2sn(nid)
                                                   : NULL;
    char oid[128];
    if (!sn) {
        OBJ_obj2txt(oid, sizeof(oid), obj, 1);
        sn = oid;
    }
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
    if (n < 0)
        return -1;
    int rc = text_add(t, sn, strlen(sn)) || text_add(t, "=", 1) ||
             text_add(t, (const char *)utf8, (size_t)n);
    OPENSSL_free(utf8);
    return rc ? -1 : 0;
}

char *alipay_cert_issuer_text(X509 *cert)
{
    const X509_NAME *name = X509_get_issuer_name(cert);
    struct text t = {0};
    int n = X509_NAME_entry_count(name);
    if (text_add(&t, "", 0) < 0)
        return NULL;
    /* RFC 2253's order, the last attribute first, every one joined by ','
     * as the SDKs write it (they flatten a multi-valued RDN: no '+') */
    for (int i = n - 1; i >= 0; i--) {
        if (add_entry(&t, X509_NAME_get_entry(name, i)) < 0 ||
            (i > 0 && text_add(&t, ",", 1) < 0)) {
            free(t.s);
            return NULL;
        }
    }
    return t.s;
}

int alipay_cert_sn(X509 *cert, char out[ALIPAY_CERT_SN_LEN + 1], char *err, size_t errlen)
{
    char *issuer = alipay_cert_issuer_text(cert);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *serial = bn ? BN_bn2dec(bn) : NULL;
    struct text t = {0};
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    int rc = -1;
    if (issuer && serial && text_add(&t, issuer, strlen(issuer)) == 0 &&
        text_add(&t, serial, strlen(serial)) == 0 &&
        EVP_Digest(t.s, t.len, md, &md_len, EVP_md5(), NULL) == 1 && md_len == 16) {
        for (unsigned int i = 0; i < md_len; i++)
            snprintf(out + 2 * i, 3, "%02x", md[i]);
        rc = 0;
    } else {
        snprintf(err, errlen, "cannot compute the certificate's SN");
    }
    ERR_clear_error();
    free(t.s);
    OPENSSL_free(serial);
    BN_free(bn);
    free(issuer);
    return rc;
}

/* Is cert signed with an RSA algorithm (PKCS#1's arc)? */
static int rsa_signed(const X509 *cert)
{
    const X509_ALGOR *alg = NULL;
    const ASN1_OBJECT *obj = NULL;
    char oid[128];
    X509_get0_signature(NULL, &alg, cert);
    if (!alg)
        return 0;
    X509_ALGOR_get0(&obj, NULL, NULL, alg);
    if (!obj || OBJ_obj2txt(oid, sizeof(oid), obj, 1) <= 0)
        return 0;
    return strncmp(oid, RSA_SIGNATURE_ARC, strlen(RSA_SIGNATURE_ARC)) == 0;
}

char *alipay_cert_root_sn(STACK_OF(X509) * roots, char *err, size_t errlen)
{
    struct text t = {0};
    for (int i = 0; i < sk_X509_num(roots); i++) {
        X509 *root = sk_X509_value(roots, i);
        char sn[ALIPAY_CERT_SN_LEN + 1];
        if (!rsa_signed(root))
            continue;
        if (alipay_cert_sn(root, sn, err, errlen) < 0) {
            free(t.s);
            return NULL;
        }
        if ((t.len > 0 && text_add(&t, "_", 1) < 0) || text_add(&t, sn, strlen(sn)) < 0) {
            snprintf(err, errlen, "out of memory");
            free(t.s);
            return NULL;
        }
    }
    if (t.len == 0) {
        snprintf(err, errlen, "no RSA-signed root certificate in the bundle");
        free(t.s);
        return NULL;
    }
    return t.s;
}

int alipay_cert_verify(STACK_OF(X509) * chain, STACK_OF(X509) * roots, time_t at, char *err,
                       size_t errlen)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    int rc = -1;
    if (!store || !ctx || !untrusted || sk_X509_num(chain) < 1) {
        snprintf(err, errlen, "%s", sk_X509_num(chain) < 1 ? "no certificate" : "out of memory");
        goto done;
    }
    for (int i = 0; i < sk_X509_num(roots); i++) {
        if (X509_STORE_add_cert(store, sk_X509_value(roots, i)) != 1) {
            snprintf(err, errlen, "cannot use the root bundle");
            goto done;
        }
    }
    for (int i = 1; i < sk_X509_num(chain); i++) {
        if (!sk_X509_push(untrusted, sk_X509_value(chain, i))) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
    }
    if (X509_STORE_CTX_init(ctx, store, sk_X509_value(chain, 0), untrusted) != 1) {
        snprintf(err, errlen, "cannot check the certificate chain");
        goto done;
    }
    if (at)
        X509_STORE_CTX_set_time(ctx, 0, at);
    if (X509_verify_cert(ctx) == 1) {
        rc = 0;
    } else {
        snprintf(err, errlen, "does not chain to the root bundle: %s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    }
done:
    ERR_clear_error();
    sk_X509_free(untrusted); /* the certificates are chain's */
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return rc;
}

EVP_PKEY *alipay_cert_public_key(STACK_OF(X509) * chain, const char *name, char *err, size_t errlen)
{
    EVP_PKEY *pk = sk_X509_num(chain) > 0 ? X509_get_pubkey(sk_X509_value(chain, 0)) : NULL;
    if (!pk || !EVP_PKEY_is_a(pk, "RSA")) {
        snprintf(err, errlen, "%s: the certificate's key is not an RSA key", name);
        EVP_PKEY_free(pk);
        ERR_clear_error();
        return NULL;
    }
    return pk;
}

/* ---- the store ---------------------------------------------------------- */

struct cert_entry {
    char sn[ALIPAY_CERT_SN_LEN + 1];
    EVP_PKEY *key;
};

struct alipay_cert_store {
    pthread_mutex_t lock;
    STACK_OF(X509) * roots;
    X509_NAME *owner;     /* the first admitted subject without its CN: Alipay's */
    struct cert_entry *v; /* few: one per certificate Alipay has signed with */
    size_t n, cap;
};

struct alipay_cert_store *alipay_cert_store_new(STACK_OF(X509) * roots)
{
    struct alipay_cert_store *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->roots = roots;
    return s;
}

void alipay_cert_store_free(struct alipay_cert_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        EVP_PKEY_free(s->v[i].key);
    free(s->v);
    X509_NAME_free(s->owner);
    sk_X509_pop_free(s->roots, X509_free);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Keeps key under sn unless the store has it; takes the reference. */
static int store_put(struct alipay_cert_store *s, const char *sn, EVP_PKEY *key)
{
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->v[i].sn, sn) == 0) {
            pthread_mutex_unlock(&s->lock);
            EVP_PKEY_free(key);
            return 0;
        }
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 4;
        struct cert_entry *v = realloc(s->v, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&s->lock);
            EVP_PKEY_free(key);
            return -1;
        }
        s->v = v;
        s->cap = cap;
    }
    snprintf(s->v[s->n].sn, sizeof(s->v[s->n].sn), "%s", sn);
    s->v[s->n++].key = key;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* name without its CN attributes: whose certificate it is. NULL on OOM. */
static X509_NAME *name_without_cn(const X509_NAME *name)
{
    X509_NAME *n = X509_NAME_dup(name);
    int i;
    while (n && (i = X509_NAME_get_index_by_NID(n, NID_commonName, -1)) >= 0)
        X509_NAME_ENTRY_free(X509_NAME_delete_entry(n, i));
    return n;
}

/* Is leaf Alipay's, as the store knows Alipay (the first admitted sets it)?
 * Returns 0, or -1 with err. */
static int store_owner_check(struct alipay_cert_store *s, X509 *leaf, char *err, size_t errlen)
{
    X509_NAME *who = name_without_cn(X509_get_subject_name(leaf));
    int rc = -1;
    if (!who) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_lock(&s->lock);
    if (!s->owner) {
        s->owner = who; /* the configured certificate */
        who = NULL;
        rc = 0;
    } else if (X509_NAME_cmp(s->owner, who) == 0) {
        rc = 0;
    } else {
        snprintf(err, errlen,
                 "its subject is not Alipay's (another organisation than the configured "
                 "certificate's: a merchant's certificate, not Alipay's)");
    }
    pthread_mutex_unlock(&s->lock);
    X509_NAME_free(who);
    return rc;
}

int alipay_cert_store_admit(struct alipay_cert_store *s, const char *pem, size_t len,
                            const char *want_sn, char sn_out[ALIPAY_CERT_SN_LEN + 1], char *err,
                            size_t errlen)
{
    char sn[ALIPAY_CERT_SN_LEN + 1];
    EVP_PKEY *key = NULL;
    STACK_OF(X509) *chain = alipay_cert_parse(pem, len, "Alipay's certificate", err, errlen);
    int rc = -1;
    if (!chain || alipay_cert_sn(sk_X509_value(chain, 0), sn, err, errlen) < 0)
        goto done;
    if (want_sn && strcmp(sn, want_sn) != 0) {
        snprintf(err, errlen, "Alipay's certificate has SN %s, not %s", sn, want_sn);
        goto done;
    }
    if (alipay_cert_verify(chain, s->roots, 0, err, errlen) < 0)
        goto done;
    if (X509_check_ca(sk_X509_value(chain, 0)) != 0) {
        snprintf(err, errlen, "Alipay's certificate is a CA's, not a signer's");
        goto done;
    }
    if (store_owner_check(s, sk_X509_value(chain, 0), err, errlen) < 0 ||
        !(key = alipay_cert_public_key(chain, "Alipay's certificate", err, errlen)))
        goto done;
    if (store_put(s, sn, key) < 0) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (sn_out)
        memcpy(sn_out, sn, sizeof(sn));
    rc = 0;
done:
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

EVP_PKEY *alipay_cert_store_get(struct alipay_cert_store *s, const char *sn)
{
    EVP_PKEY *key = NULL;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n && !key; i++) {
        if (strcmp(s->v[i].sn, sn) == 0 && EVP_PKEY_up_ref(s->v[i].key) == 1)
            key = s->v[i].key;
    }
    pthread_mutex_unlock(&s->lock);
    return key;
}
