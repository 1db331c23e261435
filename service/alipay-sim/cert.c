/* cert: Alipay's certificate mode. See cert.h. */
#include "cert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alipay_key.h"

static void free_chain(STACK_OF(X509) * chain)
{
    sk_X509_pop_free(chain, X509_free);
}

int cert_app_use(struct sim *s, const char *app_cert, const char *root_cert, char *err,
                 size_t errlen)
{
    char sn[ALIPAY_CERT_SN_LEN + 1];
    STACK_OF(X509) *chain = alipay_cert_load(app_cert, err, errlen);
    STACK_OF(X509) *roots = chain ? alipay_cert_load(root_cert, err, errlen) : NULL;
    EVP_PKEY *pub = roots ? alipay_cert_public_key(chain, app_cert, err, errlen) : NULL;
    char *root_sn = pub ? alipay_cert_root_sn(roots, err, errlen) : NULL;
    char *app_sn = NULL;
    if (root_sn && alipay_cert_sn(sk_X509_value(chain, 0), sn, err, errlen) == 0 &&
        !(app_sn = strdup(sn)))
        snprintf(err, errlen, "out of memory");
    free_chain(chain);
    if (!app_sn) {
        free_chain(roots);
        EVP_PKEY_free(pub);
        free(root_sn);
        return -1;
    }
    EVP_PKEY_free(s->app_public);
    free(s->app_cert_sn);
    free(s->root_cert_sn);
    free_chain(s->roots);
    s->app_public = pub;
    s->app_cert_sn = app_sn;
    s->root_cert_sn = root_sn;
    s->roots = roots;
    return 0;
}

/* The link that holds the known certificate with this SN (NULL in it when
 * there is none). */
static struct sim_cert **find_link(struct sim *s, const char *sn)
{
    struct sim_cert **pp = &s->alipay_certs;
    while (*pp && strcmp((*pp)->sn, sn) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* The known certificate with this SN, unlinked from the list, or NULL. */
static struct sim_cert *take_known(struct sim *s, const char *sn)
{
    struct sim_cert **pp = find_link(s, sn), *c = *pp;
    if (c) {
        *pp = c->next;
        c->next = NULL;
    }
    return c;
}

static void cert_record_free(struct sim_cert *c)
{
    if (c) {
        free(c->pem);
        free(c);
    }
}

/* Reads cert_file: the record (SN and text) and the parsed chain. Returns
 * 0, or -1 with err. */
static int read_cert(const char *cert_file, struct sim_cert **rec, STACK_OF(X509) * *chain,
                     char *err, size_t errlen)
{
    size_t len;
    char *pem = alipay_key_read_file(cert_file, &len, err, errlen);
    STACK_OF(X509) *ch = pem ? alipay_cert_parse(pem, len, cert_file, err, errlen) : NULL;
    struct sim_cert *c = ch ? calloc(1, sizeof(*c)) : NULL;
    if (ch && !c)
        snprintf(err, errlen, "out of memory");
    if (!c || alipay_cert_sn(sk_X509_value(ch, 0), c->sn, err, errlen) < 0) {
        free(pem);
        free(c);
        free_chain(ch);
        return -1;
    }
    c->pem = pem;
    c->pem_len = len;
    *rec = c;
    *chain = ch;
    return 0;
}

int cert_alipay_use(struct sim *s, const char *cert_file, EVP_PKEY *key, char *chain_err,
                    size_t chain_errlen, char *err, size_t errlen)
{
    struct sim_cert *rec;
    STACK_OF(X509) * chain;
    EVP_PKEY *signer = key ? key : s->alipay_private;
    if (read_cert(cert_file, &rec, &chain, err, errlen) < 0)
        return -1;
    EVP_PKEY *pub = alipay_cert_public_key(chain, cert_file, err, errlen);
    /* Answers signed with another key would name a certificate that does
     * not verify them: the one mistake a rotation must not make. */
    int paired = pub && alipay_key_is_pair(signer, pub);
    if (pub && !paired)
        snprintf(err, errlen, "%s: the private key is not this certificate's key", cert_file);
    snprintf(chain_err, chain_errlen, "%s", "");
    if (paired) /* --root-cert came with --alipay-cert: the roots are there */
        alipay_cert_verify(chain, s->roots, 0, chain_err, chain_errlen);
    EVP_PKEY_free(pub);
    free_chain(chain);
    if (!paired) {
        cert_record_free(rec);
        return -1;
    }
    /* Once known, always downloadable: an SN seen again moves first. */
    struct sim_cert *had = take_known(s, rec->sn);
    if (had) {
        cert_record_free(rec);
        rec = had;
    }
    rec->next = s->alipay_certs;
    s->alipay_certs = rec;
    if (key) {
        EVP_PKEY_free(s->alipay_private);
        s->alipay_private = key;
    }
    return 0;
}

const char *cert_alipay_sn(const struct sim *s)
{
    return s->alipay_certs ? s->alipay_certs->sn : NULL;
}

int cert_check_request(const struct sim *s, const struct alipay_params *p,
                       enum alipay_sign_type type, struct sim_node *out)
{
    if (!s->app_cert_sn)
        return 0;
    const char *app = alipay_params_get(p, "app_cert_sn");
    const char *root = alipay_params_get(p, "alipay_root_cert_sn");
    int r;
    /* Alipay's sub codes (its common error table); the gateway needs the
     * app's SN to pick the key it verifies with, hence before the
     * signature. */
    if (!app)
        r = sim_gateway_error(out, "40002", "isv.missing-app-cert-sn", "缺少应用公钥证书序列号",
                              type);
    else if (strcmp(app, s->app_cert_sn) != 0)
        r = sim_gateway_error(out, "40002", "isv.app-cert-not-exist", "应用公钥证书不存在", type);
    else if (!root)
        r = sim_gateway_error(out, "40002", "isv.missing-alipay-root-cert-sn",
                              "缺少支付宝根证书序列号", type);
    else if (strcmp(root, s->root_cert_sn) != 0)
        r = sim_gateway_error(out, "40002", "isv.invalid-alipay-root-cert-sn",
                              "无效的支付宝根证书序列号", type);
    else
        return 0;
    return r < 0 ? -1 : 1;
}

int cert_download(struct sim *s, const struct sim_req *r, struct sim_node *out)
{
    static const char *const keys[] = {"alipay_cert_sn", NULL};
    struct check c;
    const char *sn;
    if (chk_only_keys(r->biz, "", keys, &c) < 0 ||
        chk_str(r->biz, "", "alipay_cert_sn", 1, 128, &sn, &c) < 0)
        return sim_business_error(out, r->method, r->type, "INVALID_PARAMETER", c.msg);
    const struct sim_cert *cert = *find_link(s, sn);
    if (!cert)
        return sim_business_error(out, r->method, r->type, "CERT_NOT_EXIST", "证书不存在");
    char *content = alipay_b64_encode((const unsigned char *)cert->pem, cert->pem_len);
    if (!content)
        return -1;
    json_object *o = sim_code_object("10000", "Success", NULL, NULL);
    sim_add_str(o, "alipay_cert_content", content);
    free(content);
    return sim_method_success(out, r->method, r->type, o);
}

json_object *cert_json(const struct sim *s)
{
    const char *sn = cert_alipay_sn(s);
    json_object *o = json_object_new_object(), *known = json_object_new_array();
    json_object_object_add(o, "alipay_cert_sn", sn ? json_object_new_string(sn) : NULL);
    for (const struct sim_cert *c = s->alipay_certs; c; c = c->next)
        json_object_array_add(known, json_object_new_string(c->sn));
    json_object_object_add(o, "known", known);
    return o;
}

void cert_free(struct sim *s)
{
    for (struct sim_cert *c = s->alipay_certs, *next; c; c = next) {
        next = c->next;
        cert_record_free(c);
    }
    s->alipay_certs = NULL;
    free(s->app_cert_sn);
    free(s->root_cert_sn);
    free_chain(s->roots);
    s->app_cert_sn = s->root_cert_sn = NULL;
    s->roots = NULL;
}
