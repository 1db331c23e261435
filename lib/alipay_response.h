/* alipay_response: judging what the gateway answered.
 *
 * The signed text is the response node's value exactly as received, so the
 * node is cut out of the raw body by a scanner that knows JSON strings, and
 * only then parsed. Where `sign` stands does not matter. */
#ifndef CARDGATE_ALIPAY_RESPONSE_H
#define CARDGATE_ALIPAY_RESPONSE_H

#include <stddef.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include "alipay_sign.h"

#define ALIPAY_OAUTH_TOKEN "alipay.system.oauth.token"

/* The outcome classes of the contract's mapping table (api.md §2). */
enum alipay_outcome {
    ALIPAY_OK,            /* code 10000, signature verified */
    ALIPAY_REJECTED,      /* code 40004, signature verified: final (but see
                           * alipay_sub_code_is_system_failure) */
    ALIPAY_AUTH_FAILED,   /* code 20001: the user's or provider's token refused */
    ALIPAY_REFUSED,       /* 40001/40002/40006 or error_response: our config/signing */
    ALIPAY_UNAVAILABLE,   /* 20000, HTTP status other than 200, connection failure */
    ALIPAY_BAD_SIGNATURE, /* missing or invalid signature, unparseable answer */
    ALIPAY_TIMEOUT,       /* no answer within the call's timeout */
};

const char *alipay_outcome_name(enum alipay_outcome o);

/* 1 when a 40004's sub_code says Alipay itself failed (SYSTEM_ERROR,
 * *.SYSTEM_ERROR, UNKNOW_ERROR, isp.*, ...): such a 40004 is judged
 * ALIPAY_UNAVAILABLE, not final, instead of a final ALIPAY_REJECTED. */
int alipay_sub_code_is_system_failure(const char *sub_code);

/* What one gateway call came to. Strings are NUL-terminated and owned by
 * the reply; free with alipay_reply_free. code/msg/sub_code/sub_msg are set
 * only when the gateway gave them in content we may trust (verified, or an
 * unsigned error_response, which is reported as a gateway error only). */
struct alipay_reply {
    enum alipay_outcome outcome;
    int verified; /* 1 when the response signature held */
    char *code, *msg, *sub_code, *sub_msg;
    json_object *node; /* the parsed node when verified, or the body of an unsigned
                        * error_response (a gateway error, never a success); else NULL */
    long http_status;  /* 0 when no HTTP answer came */
    int not_sent;      /* 1: the call was never made (nothing reached the gateway) */
    double latency_ms; /* whole call, set by the client */
    char detail[256];  /* one line for logs and error messages */
};

void alipay_reply_free(struct alipay_reply *r);

/* Finds the top-level key `name` in the JSON object text body[0..len) and
 * sets *start and *vlen to its value's raw text: for an object, from its `{` to
 * the matching `}`; for a string, the raw text between its quotes (escapes
 * left as they are). Scans with string state: braces inside strings and
 * escaped quotes do not count. Returns 0, or -1 when absent or malformed. */
int alipay_response_find(const char *body, size_t len, const char *name, const char **start,
                         size_t *vlen);

/* Judges a 200 answer to `method` (e.g. "alipay.marketing.card.open"):
 * finds `<method with _>_response` or `error_response`, verifies `sign`
 * over the node's raw text with Alipay's public key, and fills out. Never
 * fails: an answer it cannot trust becomes ALIPAY_BAD_SIGNATURE. */
void alipay_response_judge(const char *body, size_t len, const char *method, EVP_PKEY *alipay_pub,
                           enum alipay_sign_type type, struct alipay_reply *out);

struct alipay_aes;

/* As alipay_response_judge, for an app with content encryption (aes not
 * NULL): a response node that is a JSON string is the ciphertext; `sign`
 * covers that string with its quotes, as received; it is verified first,
 * then decrypted, then judged like any node. A string node without aes, or
 * one that does not decrypt with it: ALIPAY_BAD_SIGNATURE. Object nodes
 * (Alipay's gateway errors are never encrypted) are judged as usual. */
void alipay_response_judge_aes(const char *body, size_t len, const char *method,
                               EVP_PKEY *alipay_pub, enum alipay_sign_type type,
                               const struct alipay_aes *aes, struct alipay_reply *out);

/* Copies the answer's top-level "alipay_cert_sn" (certificate mode: which
 * of Alipay's certificates signed it) into out. Returns 0, or -1 when the
 * answer has none or it is not an SN (32 hex digits). */
int alipay_response_cert_sn(const char *body, size_t len, char out[33]);

/* Builds a gateway answer `{"<node_name>":<node_text>,"sign":"..."}` with the
 * signature over node_text made by key (the simulator's and the tests' side).
 * key NULL leaves `sign` out; sign_first puts it before the node. Returns a
 * malloc'd string the caller frees, or NULL. */
char *alipay_response_build(const char *node_name, const char *node_text, EVP_PKEY *key,
                            enum alipay_sign_type type, int sign_first);

/* As alipay_response_build, in Alipay's other modes: with cert_sn (not
 * NULL) the answer carries `"alipay_cert_sn":"<cert_sn>"` after the node
 * (certificate mode); with aes (not NULL) node_text is encrypted and the
 * node is the base64 ciphertext as a JSON string, the signature over that
 * string with its quotes. Returns a malloc'd string or NULL. */
char *alipay_response_build_ex(const char *node_name, const char *node_text, EVP_PKEY *key,
                               enum alipay_sign_type type, int sign_first, const char *cert_sn,
                               const struct alipay_aes *aes);

/* "alipay.marketing.card.open" -> "alipay_marketing_card_open_response" into
 * out; returns -1 when it does not fit. */
int alipay_response_node_name(const char *method, char *out, size_t outlen);

#endif
