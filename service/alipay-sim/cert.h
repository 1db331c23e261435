/* cert: Alipay's certificate mode ("公钥证书"), as the gateway plays it.
 *
 * With --app-cert the app's public key comes from its certificate, and
 * every request must name that certificate (app_cert_sn) and Alipay's root
 * bundle (alipay_root_cert_sn); both are checked before the signature,
 * which covers them like any parameter, and refused the way Alipay does
 * (an unsigned error_response 40002). With --alipay-cert every signed
 * answer says which of Alipay's certificates signed it (alipay_cert_sn),
 * and alipay.open.app.alipaycert.download hands out any certificate the
 * simulator has signed with: the current one and every one it rotated away
 * from (PUT /_sim/alipay-cert), as Alipay keeps serving its old
 * certificates to clients that still see their SN.
 *
 * The certificates and their SNs come from lib/alipay_cert (the SDKs'
 * rules); nothing here parses a certificate by hand. */
#ifndef ALIPAY_SIM_CERT_H
#define ALIPAY_SIM_CERT_H

#include "alipay_cert.h"
#include "method.h"

/* One of Alipay's certificates: its SN and its file's text (the
 * certificate followed by its issuer, as Alipay's files are), which the
 * download hands out. */
struct sim_cert {
    struct sim_cert *next;
    char sn[ALIPAY_CERT_SN_LEN + 1];
    char *pem;
    size_t pem_len;
};

/* --app-cert and --root-cert: the app's public key from its certificate
 * (replacing s->app_public) and the SNs every request must carry from now
 * on. Returns 0, or -1 with err (s unchanged). */
int cert_app_use(struct sim *s, const char *app_cert, const char *root_cert, char *err,
                 size_t errlen);

/* Signs answers with the certificate in cert_file and key from now on (key
 * NULL: s->alipay_private, the key already in use). A key that is not the
 * certificate's is refused. On success takes key (replacing
 * s->alipay_private), puts the certificate first in s->alipay_certs (a
 * known SN moves there) and writes to chain_err "" when the certificate
 * chains to the root bundle and is valid now, else why not: a rotation may
 * use such a certificate on purpose, to show that clients refuse it.
 * Returns 0, or -1 with err (nothing changed, key still the caller's). */
int cert_alipay_use(struct sim *s, const char *cert_file, EVP_PKEY *key, char *chain_err,
                    size_t chain_errlen, char *err, size_t errlen);

/* The SN of the certificate answers are signed with; NULL when answers
 * carry none (public-key mode). */
const char *cert_alipay_sn(const struct sim *s);

/* Checks app_cert_sn and alipay_root_cert_sn in certificate mode (in
 * public-key mode every call passes). Returns 1 when it filled out with the
 * refusal, 0 when the call may go on, -1 when out of memory. */
int cert_check_request(const struct sim *s, const struct alipay_params *p,
                       enum alipay_sign_type type, struct sim_node *out);

/* alipay.open.app.alipaycert.download: {"alipay_cert_sn"} ->
 * alipay_cert_content, the base64 of a known certificate's file. */
int cert_download(struct sim *s, const struct sim_req *r, struct sim_node *out);

/* {"alipay_cert_sn": the current SN or null, "known": [SN, ...]}, a new
 * object for GET /_sim/alipay-cert. */
json_object *cert_json(const struct sim *s);

/* Frees what certificate mode keeps in s. */
void cert_free(struct sim *s);

#endif
