/* method: what sim.c shares with the modules that implement gateway
 * methods beside the cards' own (program.c: templates, the sign-up form and
 * the activation link; member.c: the member's sign-up, OAuth tokens and the
 * submitted form). A method gets one call that passed the gateway's checks
 * (public parameters, signature) and fills in the answer node. */
#ifndef ALIPAY_SIM_METHOD_H
#define ALIPAY_SIM_METHOD_H

#include <stdint.h>

#include "check.h"
#include "sim.h"

/* One gateway call, as a method sees it. Everything is borrowed. */
struct sim_req {
    const struct alipay_params *params; /* every parameter, biz_content too */
    json_object *biz;                   /* parsed biz_content; NULL for oauth.token */
    const char *method;
    enum alipay_sign_type type; /* the request's: the answer is signed alike */
};

/* ---- answer nodes (each fills out; returns 0, or -1 when out of memory) */

/* {"code","msg"[,"sub_code"][,"sub_msg"]}: a new object. */
json_object *sim_code_object(const char *code, const char *msg, const char *sub_code,
                             const char *sub_msg);
void sim_add_str(json_object *o, const char *key, const char *val);
/* A signed success node of method made of o (which it puts). */
int sim_method_success(struct sim_node *out, const char *method, enum alipay_sign_type type,
                       json_object *o);
/* A signed node of method with just the codes: 20000s, 20001, 40004. */
int sim_method_code(struct sim_node *out, const char *method, enum alipay_sign_type type,
                    const char *code, const char *msg, const char *sub_code, const char *sub_msg);
/* 40004 "Business Failed" with sub_code and sub_msg, signed. */
int sim_business_error(struct sim_node *out, const char *method, enum alipay_sign_type type,
                       const char *sub_code, const char *sub_msg);
/* 20001 aop.invalid-auth-token, signed: the user's token does not allow
 * the call. */
int sim_bad_token(struct sim_node *out, const struct sim_req *r);
/* The unsigned error_response of gateway-level refusals (40001/40002). */
int sim_gateway_error(struct sim_node *out, const char *code, const char *sub_code,
                      const char *sub_msg, enum alipay_sign_type type);

/* ---- ids, secrets, time */

/* n random digits (no leading zero) and a NUL into out. */
void sim_random_digits(struct sim *s, char *out, size_t n);
/* n random lowercase hex digits and a NUL into out, from the system's
 * random source: auth codes and tokens must not be guessable. */
void sim_random_hex(struct sim *s, char *out, size_t n);
/* A fresh 32-digit id, unique per run and across runs: today's Beijing
 * date, the run's 12 random digits, kind (one digit, so ids of different
 * things never look alike), seq as 11 digits. */
void sim_new_id(const struct sim *s, char kind, uint64_t seq, char out[33]);
/* Milliseconds of a monotonic clock. */
int64_t sim_now_ms(void);
/* s with every byte but RFC 3986's unreserved characters as %XX; malloc'd,
 * or NULL. */
char *sim_url_encode(const char *s);

#endif
