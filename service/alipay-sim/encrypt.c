/* encrypt: content encryption. See encrypt.h. */
#include "encrypt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alipay_aes.h"

int encrypt_use(struct sim *s, const char *key_b64, char *err, size_t errlen)
{
    struct alipay_aes *aes = alipay_aes_new(key_b64, err, errlen);
    if (!aes)
        return -1;
    alipay_aes_free(s->aes);
    s->aes = aes;
    return 0;
}

void encrypt_free(struct sim *s)
{
    alipay_aes_free(s->aes);
    s->aes = NULL;
}

int encrypt_check_request(const struct sim *s, const struct alipay_params *p, int takes_biz,
                          enum alipay_sign_type type, struct sim_node *out)
{
    const char *et = alipay_params_get(p, "encrypt_type");
    int r;
    /* Sub codes from Alipay's common error table. */
    if (et && !s->aes)
        r = sim_gateway_error(out, "40002", "isv.missing-encrypt-key", "缺少加密配置", type);
    else if (et && strcmp(et, "AES") != 0)
        r = sim_gateway_error(out, "40002", "isv.decryption-error-not-valid-encrypt-type",
                              "解密出错, 不支持的加密算法", type);
    else if (!et && s->aes && takes_biz && alipay_params_get(p, "biz_content"))
        /* The app encrypts: a plain call is a client that forgot to. */
        r = sim_gateway_error(out, "40001", "isv.decryption-error-missing-encrypt-type",
                              "解密出错, 未指定加密算法", type);
    else
        return 0;
    return r < 0 ? -1 : 1;
}

int encrypt_on(const struct sim *s, const struct alipay_params *p)
{
    const char *et = alipay_params_get(p, "encrypt_type");
    return s->aes && et && strcmp(et, "AES") == 0;
}

int encrypt_biz(const struct sim *s, const struct alipay_params *p, char **out)
{
    const char *biz = alipay_params_get(p, "biz_content");
    char err[128];
    size_t n;
    *out = NULL;
    if (!biz)
        return 0;
    if (!encrypt_on(s, p))
        *out = strdup(biz);
    else
        *out = alipay_aes_decrypt(s->aes, biz, strlen(biz), &n, err, sizeof(err));
    return *out ? 0 : -1;
}

int encrypt_refusal(struct sim_node *out, const char *method, enum alipay_sign_type type)
{
    /* As Alipay's sandbox answered the Node SDK's test of a call it could
     * not decrypt: signed, in the method's node, not encrypted. */
    return sim_method_code(out, method, type, "40003", "Insufficient Conditions",
                           "isv.decryption-error-unknown", "解密出错, 未知错误");
}
