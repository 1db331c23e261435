/* alipay_response: see alipay_response.h. */
#include "alipay_response.h"

#include "alipay_aes.h"

#include "jsonx.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *alipay_outcome_name(enum alipay_outcome o)
{
    switch (o) {
    case ALIPAY_OK:
        return "ok";
    case ALIPAY_REJECTED:
        return "rejected";
    case ALIPAY_AUTH_FAILED:
        return "auth_failed";
    case ALIPAY_REFUSED:
        return "refused";
    case ALIPAY_UNAVAILABLE:
        return "unavailable";
    case ALIPAY_BAD_SIGNATURE:
        return "bad_signature";
    case ALIPAY_TIMEOUT:
        return "timeout";
    }
    return "unknown";
}

void alipay_reply_free(struct alipay_reply *r)
{
    free(r->code);
    free(r->msg);
    free(r->sub_code);
    free(r->sub_msg);
    if (r->node)
        json_object_put(r->node);
    r->code = r->msg = r->sub_code = r->sub_msg = NULL;
    r->node = NULL;
}

/* --- the raw scanner ---------------------------------------------------- */

struct scan {
    const char *p, *end;
};

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* At a '"': moves past the closing quote. A quote toggles only when not
 * escaped, so `\"` and `\\` inside strings are stepped over. */
static int skip_string(struct scan *s)
{
    s->p++;
    while (s->p < s->end) {
        char c = *s->p++;
        if (c == '\\') {
            if (s->p == s->end)
                return -1;
            s->p++;
        } else if (c == '"') {
            return 0;
        }
    }
    return -1;
}

/* Skips one value of any type. Objects and arrays are matched by depth,
 * counting only brackets outside strings. */
static int skip_value(struct scan *s)
{
    if (s->p >= s->end)
        return -1;
    if (*s->p == '"')
        return skip_string(s);
    if (*s->p == '{' || *s->p == '[') {
        int depth = 0;
        while (s->p < s->end) {
            char c = *s->p;
            if (c == '"') {
                if (skip_string(s) < 0)
                    return -1;
                continue;
            }
            s->p++;
            if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                return 0;
        }
        return -1;
    }
    /* number, true, false, null */
    const char *start = s->p;
    while (s->p < s->end && !strchr(",}] \t\r\n", *s->p))
        s->p++;
    return s->p > start ? 0 : -1;
}

int alipay_response_find(const char *body, size_t len, const char *name, const char **start,
                         size_t *vlen)
{
    struct scan s = {body, body + len};
    size_t namelen = strlen(name);
    int found = 0;
    skip_ws(&s);
    if (s.p >= s.end || *s.p++ != '{')
        return -1;
    skip_ws(&s);
    if (s.p < s.end && *s.p == '}')
        return -1;
    while (s.p < s.end) {
        skip_ws(&s);
        if (s.p >= s.end || *s.p != '"')
            return -1;
        const char *key = s.p + 1;
        if (skip_string(&s) < 0)
            return -1;
        size_t keylen = (size_t)(s.p - 1 - key);
        skip_ws(&s);
        if (s.p >= s.end || *s.p++ != ':')
            return -1;
        skip_ws(&s);
        const char *v = s.p;
        if (skip_value(&s) < 0)
            return -1;
        if (keylen == namelen && memcmp(key, name, namelen) == 0) {
            if (found)
                return -1; /* a second copy: which one was signed is unclear */
            found = 1;
            int quoted = *v == '"';
            *start = v + quoted;
            *vlen = (size_t)(s.p - v) - 2 * quoted;
        }
        skip_ws(&s);
        if (s.p < s.end && *s.p == ',') {
            s.p++;
            continue;
        }
        if (s.p < s.end && *s.p == '}')
            return found ? 0 : -1;
        return -1;
    }
    return -1;
}

int alipay_response_node_name(const char *method, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s_response", method);
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    for (char *c = out; *c; c++) {
        if (*c == '.')
            *c = '_';
    }
    return 0;
}

/* --- judging ------------------------------------------------------------ */

static char *dup_field(json_object *node, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(node, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return strdup(json_object_get_string(v));
}

/* Decodes the raw text of a JSON string (between its quotes) with json-c,
 * so that escapes like `\/` in a signature are undone by a real parser. */
static char *decode_json_string(const char *raw, size_t len)
{
    char *quoted = malloc(len + 3);
    if (!quoted)
        return NULL;
    quoted[0] = '"';
    memcpy(quoted + 1, raw, len);
    quoted[len + 1] = '"';
    quoted[len + 2] = '\0';
    json_object *o = json_tokener_parse(quoted);
    free(quoted);
    char *s =
        (o && json_object_is_type(o, json_type_string)) ? strdup(json_object_get_string(o)) : NULL;
    json_object_put(o);
    return s;
}

int alipay_sub_code_is_system_failure(const char *sub_code)
{
    /* Alipay's own failures, written into a 40004: the request was not
     * judged, so the refusal is not final. One list, here. */
    static const char *const exact[] = {"SYSTEM_ERROR", "SYSTEM_BUSY", "UNKNOW_ERROR",
                                        "UNKNOWN_ERROR"};
    static const char *const suffix[] = {".SYSTEM_ERROR",  ".SYSTEM_BUSY",  ".UNKNOW_ERROR",
                                         ".UNKNOWN_ERROR", ".system-error", ".unknow-error"};
    if (!sub_code)
        return 0;
    if (strncmp(sub_code, "isp.", 4) == 0) /* "isp": Alipay's side of the call */
        return 1;
    size_t n = strlen(sub_code);
    for (size_t i = 0; i < sizeof(exact) / sizeof(*exact); i++)
        if (strcasecmp(sub_code, exact[i]) == 0)
            return 1;
    for (size_t i = 0; i < sizeof(suffix) / sizeof(*suffix); i++) {
        size_t k = strlen(suffix[i]);
        if (n > k && strcasecmp(sub_code + n - k, suffix[i]) == 0)
            return 1;
    }
    return 0;
}

static enum alipay_outcome outcome_of_code(const char *code, const char *sub_code)
{
    if (!code)
        return ALIPAY_BAD_SIGNATURE;
    if (strcmp(code, "10000") == 0)
        return ALIPAY_OK;
    if (strcmp(code, "40004") == 0)
        return alipay_sub_code_is_system_failure(sub_code) ? ALIPAY_UNAVAILABLE : ALIPAY_REJECTED;
    if (strcmp(code, "20001") == 0)
        return ALIPAY_AUTH_FAILED;
    if (strcmp(code, "40001") == 0 || strcmp(code, "40002") == 0 || strcmp(code, "40006") == 0)
        return ALIPAY_REFUSED;
    /* The gateway could not decrypt biz_content (40003
     * isv.decryption-error-*): the AES key is wrong, a configuration error
     * like a refused signature, not something a retry mends. */
    if (sub_code && strncmp(sub_code, "isv.decryption-error", 20) == 0)
        return ALIPAY_REFUSED;
    return ALIPAY_UNAVAILABLE; /* 20000 and codes this client does not know */
}

static void take_codes(struct alipay_reply *out, json_object *node)
{
    out->code = dup_field(node, "code");
    out->msg = dup_field(node, "msg");
    out->sub_code = dup_field(node, "sub_code");
    out->sub_msg = dup_field(node, "sub_msg");
    out->node = node;
}

static void bad(struct alipay_reply *out, const char *why)
{
    out->outcome = ALIPAY_BAD_SIGNATURE;
    snprintf(out->detail, sizeof(out->detail), "%s", why);
}

int alipay_response_cert_sn(const char *body, size_t len, char out[33])
{
    const char *raw;
    size_t n;
    if (alipay_response_find(body, len, "alipay_cert_sn", &raw, &n) < 0 || n != 32 ||
        raw[-1] != '"')
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)raw[i]))
            return -1;
        out[i] = (char)tolower((unsigned char)raw[i]);
    }
    out[n] = '\0';
    return 0;
}

void alipay_response_judge(const char *body, size_t len, const char *method, EVP_PKEY *alipay_pub,
                           enum alipay_sign_type type, struct alipay_reply *out)
{
    alipay_response_judge_aes(body, len, method, alipay_pub, type, NULL, out);
}

/* The plaintext node of an encrypted answer whose quoted text was
 * verified: the JSON string decoded (escapes such as \/ undone), then
 * decrypted. NULL with a reason in out. */
static char *decrypt_node(const char *raw, size_t len, const struct alipay_aes *aes, size_t *pt_len,
                          struct alipay_reply *out)
{
    char err[160];
    char *b64 = decode_json_string(raw, len);
    char *pt = b64 ? alipay_aes_decrypt(aes, b64, strlen(b64), pt_len, err, sizeof(err)) : NULL;
    if (!pt)
        snprintf(out->detail, sizeof(out->detail), "gateway answer's encrypted node: %s",
                 b64 ? err : "not a JSON string");
    free(b64);
    return pt;
}

void alipay_response_judge_aes(const char *body, size_t len, const char *method,
                               EVP_PKEY *alipay_pub, enum alipay_sign_type type,
                               const struct alipay_aes *aes, struct alipay_reply *out)
{
    char name[160];
    const char *node_raw = NULL, *sign_raw = NULL;
    size_t node_len = 0, sign_len = 0;
    int is_error = 0;
    char *plain = NULL; /* the decrypted node of an encrypted answer */

    out->verified = 0;
    out->node = NULL;
    out->code = out->msg = out->sub_code = out->sub_msg = NULL;
    json_object *whole = jsonx_parse(body, len);
    if (!whole || !json_object_is_type(whole, json_type_object)) {
        json_object_put(whole);
        bad(out, "gateway answer is not a JSON object");
        return;
    }
    json_object_put(whole);
    if (alipay_response_node_name(method, name, sizeof(name)) < 0) {
        bad(out, "method name too long");
        return;
    }
    if (alipay_response_find(body, len, name, &node_raw, &node_len) < 0) {
        if (alipay_response_find(body, len, "error_response", &node_raw, &node_len) < 0) {
            bad(out, "gateway answer has no response node");
            return;
        }
        is_error = 1;
    }
    char *sign = NULL;
    if (alipay_response_find(body, len, "sign", &sign_raw, &sign_len) == 0)
        sign = decode_json_string(sign_raw, sign_len);
    int has_sign = sign && *sign, verified;
    if (node_raw[-1] == '"') {
        /* An encrypted node: the signature covers the string with its
         * quotes, and only a verified one is decrypted. */
        verified = aes && has_sign &&
                   alipay_sign_verify(alipay_pub, type, node_raw - 1, node_len + 2, sign);
        free(sign);
        if (!verified) {
            bad(out, !aes ? "gateway answer is encrypted, and no AES key is configured"
                          : "gateway answer's signature does not verify");
            return;
        }
        if (!(plain = decrypt_node(node_raw, node_len, aes, &node_len, out))) {
            out->outcome = ALIPAY_BAD_SIGNATURE;
            return;
        }
        node_raw = plain;
    } else {
        verified = has_sign && alipay_sign_verify(alipay_pub, type, node_raw, node_len, sign);
        free(sign);
        if (has_sign && !verified) {
            bad(out, "gateway answer's signature does not verify");
            return;
        }
    }
    /* Parse the very bytes that are verified (or decrypted from them), so
     * what is trusted is what was signed even if the body repeats a key. */
    json_object *node = jsonx_parse(node_raw, node_len);
    free(plain);
    if (!node || !json_object_is_type(node, json_type_object)) {
        json_object_put(node);
        bad(out, "gateway response node is not a JSON object");
        return;
    }
    if (verified) {
        out->verified = 1;
        take_codes(out, node);
        out->outcome = is_error ? ALIPAY_REFUSED : outcome_of_code(out->code, out->sub_code);
        /* alipay.system.oauth.token answers its success without a code
         * (access_token, user_id, ...): Alipay's own SDKs treat it so. */
        if (!is_error && !out->code && strcmp(method, ALIPAY_OAUTH_TOKEN) == 0 &&
            json_object_object_get_ex(node, "access_token", NULL))
            out->outcome = ALIPAY_OK;
        snprintf(out->detail, sizeof(out->detail), "code %s%s%s", out->code ? out->code : "?",
                 out->sub_code ? " " : "", out->sub_code ? out->sub_code : "");
        return;
    }
    if (is_error) {
        /* Unsigned gateway-level error (bad app id, our signature refused):
         * reported as such, never as a success. */
        take_codes(out, node);
        out->outcome = ALIPAY_REFUSED;
        snprintf(out->detail, sizeof(out->detail), "unsigned error_response %s%s%s",
                 out->code ? out->code : "?", out->sub_code ? " " : "",
                 out->sub_code ? out->sub_code : "");
        return;
    }
    json_object_put(node);
    bad(out, "gateway answer is not signed; its content is not trusted");
}

char *alipay_response_build(const char *node_name, const char *node_text, EVP_PKEY *key,
                            enum alipay_sign_type type, int sign_first)
{
    return alipay_response_build_ex(node_name, node_text, key, type, sign_first, NULL, NULL);
}

char *alipay_response_build_ex(const char *node_name, const char *node_text, EVP_PKEY *key,
                               enum alipay_sign_type type, int sign_first, const char *cert_sn,
                               const struct alipay_aes *aes)
{
    char err[256];
    char *sign = NULL, *quoted = NULL;
    if (aes) {
        /* base64 needs no JSON escaping: quoting it makes the string */
        char *ct = alipay_aes_encrypt(aes, node_text, strlen(node_text), err, sizeof(err));
        size_t n = ct ? strlen(ct) : 0;
        quoted = ct ? malloc(n + 3) : NULL;
        if (quoted)
            snprintf(quoted, n + 3, "\"%s\"", ct);
        free(ct);
        if (!quoted)
            return NULL;
        node_text = quoted;
    }
    if (key) {
        sign = alipay_sign_data(key, type, node_text, strlen(node_text), err, sizeof(err));
        if (!sign) {
            free(quoted);
            return NULL;
        }
    }
    char sn_part[64] = "";
    if (cert_sn)
        snprintf(sn_part, sizeof(sn_part), ",\"alipay_cert_sn\":\"%.32s\"", cert_sn);
    size_t cap = strlen(node_name) + strlen(node_text) + (sign ? strlen(sign) : 0) + 96;
    char *out = malloc(cap);
    if (out) {
        if (!sign)
            snprintf(out, cap, "{\"%s\":%s%s}", node_name, node_text, sn_part);
        else if (sign_first)
            snprintf(out, cap, "{\"sign\":\"%s\",\"%s\":%s%s}", sign, node_name, node_text,
                     sn_part);
        else
            snprintf(out, cap, "{\"%s\":%s%s,\"sign\":\"%s\"}", node_name, node_text, sn_part,
                     sign);
    }
    free(sign);
    free(quoted);
    return out;
}
