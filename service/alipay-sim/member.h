/* member: the member's own sign-up, as Alipay runs it. The member opens a
 * template's activation link and submits its form; Alipay sends the browser
 * to the template's callback with a single-use auth_code and the form's
 * request_id. alipay.system.oauth.token trades the code for the member's
 * access token, and alipay.marketing.card.activateform.query gives that
 * token's holder the values the member filled in.
 *
 * The control call POST /_sim/members plays the member (member_signup).
 * State, in s: members (request_id -> {"request_id","template_id",
 * "user_id","form"}), auth_codes (code -> {"request_id","user_id",
 * "expires_ms","used"}), access_tokens and refresh_tokens (token -> user
 * id). A reset forgets all of it. */
#ifndef ALIPAY_SIM_MEMBER_H
#define ALIPAY_SIM_MEMBER_H

#include "method.h"

/* How long an auth_code stays good unless the sign-up says otherwise. */
#define MEMBER_AUTH_CODE_TTL_MS 120000L

int member_init(struct sim *s);
void member_free(struct sim *s);
void member_reset(struct sim *s);

/* The user an access token was issued to, or NULL for a token the
 * simulator never issued (card.open keeps accepting those). */
const char *member_token_user(const struct sim *s, const char *access_token);

/* The gateway methods. oauth.token has no biz_content: grant_type and
 * code (or refresh_token) are parameters of their own. */
int member_oauth_token(struct sim *s, const struct sim_req *r, struct sim_node *out);
int member_activateform_query(struct sim *s, const struct sim_req *r, struct sim_node *out);

/* One member's sign-up, as POST /_sim/members asks for it. */
struct member_signup {
    const char *template_id;
    const char *user_id;   /* NULL: a fresh 2088… id */
    json_object *form;     /* NULL: the template's required fields, filled in */
    int declined;          /* the member closed the form without submitting */
    long auth_code_ttl_ms; /* < 0: MEMBER_AUTH_CODE_TTL_MS */
};

/* Plays the member. Returns the HTTP status for the control answer: 201
 * with *answer (a new object), or 400/404 (and 500 when out of memory)
 * with the reason in problem. */
int member_signup(struct sim *s, const struct member_signup *m, json_object **answer, char *problem,
                  size_t problem_len);

#endif
