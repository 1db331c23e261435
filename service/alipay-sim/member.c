/* member: the member's sign-up, OAuth tokens and the submitted form. See
 * member.h; where each rule comes from is in README.md. */
#include "member.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonx.h"
#include "program.h"
#include "validate.h"

/* The lifetimes an access and a refresh token are announced with (15 and
 * 30 days, what Alipay answers for user tokens). The simulator's tokens
 * do not run out while it runs. */
#define TOKEN_EXPIRES_IN 1296000
#define TOKEN_RE_EXPIRES_IN 2592000

/* ------------------------------------------------------------------ state */

int member_init(struct sim *s)
{
    s->members = json_object_new_object();
    s->auth_codes = json_object_new_object();
    s->access_tokens = json_object_new_object();
    s->refresh_tokens = json_object_new_object();
    return s->members && s->auth_codes && s->access_tokens && s->refresh_tokens ? 0 : -1;
}

void member_free(struct sim *s)
{
    json_object_put(s->members);
    json_object_put(s->auth_codes);
    json_object_put(s->access_tokens);
    json_object_put(s->refresh_tokens);
    s->members = s->auth_codes = s->access_tokens = s->refresh_tokens = NULL;
}

void member_reset(struct sim *s)
{
    member_free(s);
    member_init(s);
}

static const char *str_at(json_object *o, const char *key)
{
    json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

const char *member_token_user(const struct sim *s, const char *access_token)
{
    json_object *v;
    if (access_token && json_object_object_get_ex(s->access_tokens, access_token, &v))
        return json_object_get_string(v);
    return NULL;
}

/* ---------------------------------------------------------- oauth.token */

/* Spends an auth code: good once, before it expires. Copies its user. */
static int redeem_code(struct sim *s, const char *code, char user[32])
{
    json_object *grant, *used, *expires;
    if (!code || !json_object_object_get_ex(s->auth_codes, code, &grant) ||
        !json_object_object_get_ex(grant, "used", &used) ||
        !json_object_object_get_ex(grant, "expires_ms", &expires))
        return -1;
    if (json_object_get_boolean(used) || sim_now_ms() >= json_object_get_int64(expires))
        return -1;
    json_object_object_add(grant, "used", json_object_new_boolean(1));
    snprintf(user, 32, "%s", str_at(grant, "user_id"));
    return 0;
}

/* Spends a refresh token (a refresh gives a new one). Copies its user. */
static int redeem_refresh(struct sim *s, const char *token, char user[32])
{
    json_object *v;
    if (!token || !json_object_object_get_ex(s->refresh_tokens, token, &v))
        return -1;
    snprintf(user, 32, "%s", json_object_get_string(v));
    json_object_object_del(s->refresh_tokens, token);
    return 0;
}

/* Issues a token pair for user and answers it. The success node has no
 * code or msg (the SDK's AlipaySystemOauthTokenResponse and the API
 * page's example): a client must not wait for "10000" here. */
static int answer_tokens(struct sim *s, const struct sim_req *r, const char *user,
                         struct sim_node *out)
{
    char access[48] = "authusrB", refresh[48] = "authusrB", start[20];
    sim_random_hex(s, access + 8, 32);
    sim_random_hex(s, refresh + 8, 32);
    alipay_sign_timestamp(time(NULL), start);
    json_object_object_add(s->access_tokens, access, json_object_new_string(user));
    json_object_object_add(s->refresh_tokens, refresh, json_object_new_string(user));
    json_object *o = json_object_new_object();
    sim_add_str(o, "access_token", access);
    sim_add_str(o, "alipay_user_id", user); /* deprecated; older answers still carry it */
    sim_add_str(o, "auth_start", start);
    json_object_object_add(o, "expires_in", json_object_new_int(TOKEN_EXPIRES_IN));
    json_object_object_add(o, "re_expires_in", json_object_new_int(TOKEN_RE_EXPIRES_IN));
    sim_add_str(o, "refresh_token", refresh);
    sim_add_str(o, "user_id", user);
    return sim_method_success(out, r->method, r->type, o);
}

int member_oauth_token(struct sim *s, const struct sim_req *r, struct sim_node *out)
{
    const char *grant = alipay_params_get(r->params, "grant_type");
    char user[32];
    /* Refusals are gateway-level: an unsigned error_response, as the
     * official SDKs' own example shows ("授权码code无效"). */
    if (grant && strcmp(grant, "authorization_code") == 0) {
        if (redeem_code(s, alipay_params_get(r->params, "code"), user) < 0)
            return sim_gateway_error(out, "40002", "isv.code-invalid", "授权码code无效", r->type);
    } else if (grant && strcmp(grant, "refresh_token") == 0) {
        if (redeem_refresh(s, alipay_params_get(r->params, "refresh_token"), user) < 0)
            return sim_gateway_error(out, "40002", "isv.refresh-token-invalid",
                                     "刷新令牌refresh_token无效", r->type);
    } else {
        return sim_gateway_error(out, "40002", "isv.grant-type-invalid", "grant_type参数不正确",
                                 r->type);
    }
    return answer_tokens(s, r, user, out);
}

/* --------------------------------------------------- activateform.query */

struct form_req {
    const char *biz_type, *template_id, *request_id;
};

static int check_form_query(json_object *biz, struct form_req *f, struct check *c)
{
    static const char *const keys[] = {"biz_type", "template_id", "request_id", NULL};
    static const char *const types[] = {"MEMBER_CARD", NULL};
    if (chk_only_keys(biz, "", keys, c) < 0 ||
        chk_str(biz, "", "biz_type", 1, 32, &f->biz_type, c) < 0 ||
        chk_str(biz, "", "template_id", 1, 32, &f->template_id, c) < 0 ||
        chk_str(biz, "", "request_id", 1, 64, &f->request_id, c) < 0)
        return -1;
    return chk_one_of("biz_type", f->biz_type, types, c);
}

/* infos: the form as a JSON array of one-field objects, in the form's
 * order, as text: [{"OPEN_FORM_FIELD_MOBILE":"130…"},{…}]. */
static char *form_infos(json_object *form)
{
    json_object *list = json_object_new_array();
    json_object_object_foreach(form, name, value)
    {
        json_object *one = json_object_new_object();
        json_object_object_add(one, name, json_object_get(value));
        json_object_array_add(list, one);
    }
    char *text = jsonx_text(list);
    json_object_put(list);
    return text;
}

int member_activateform_query(struct sim *s, const struct sim_req *r, struct sim_node *out)
{
    struct form_req f;
    struct check c;
    json_object *member, *form;
    /* The form is the member's: only their own token reads it. */
    const char *owner = member_token_user(s, alipay_params_get(r->params, "auth_token"));
    if (!owner)
        return sim_bad_token(out, r);
    if (check_form_query(r->biz, &f, &c) < 0)
        return sim_business_error(out, r->method, r->type, "INVALID_PARAMETER", c.msg);
    if (!sim_template_known(s, f.template_id))
        return sim_business_error(out, r->method, r->type, "TEMPLATE_NOT_EXIT", "会员卡模板不存在");
    if (!json_object_object_get_ex(s->members, f.request_id, &member) ||
        strcmp(str_at(member, "template_id"), f.template_id) != 0) {
        snprintf(c.msg, sizeof(c.msg), "request_id '%s' is no submitted form of template %s",
                 f.request_id, f.template_id);
        return sim_business_error(out, r->method, r->type, "INVALID_PARAMETER", c.msg);
    }
    if (strcmp(owner, str_at(member, "user_id")) != 0)
        return sim_bad_token(out, r);
    json_object_object_get_ex(member, "form", &form);
    char *infos = form_infos(form);
    if (!infos)
        return -1;
    json_object *o = sim_code_object("10000", "Success", NULL, NULL);
    sim_add_str(o, "infos", infos);
    free(infos);
    return sim_method_success(out, r->method, r->type, o);
}

/* ------------------------------------------------------------ sign-up */

/* What a member plausibly types into each field. Gender and the yes/no
 * fields come as Chinese text, as clients' parsers of infos expect. */
static const char *plausible(const char *field)
{
    static const char *const values[][2] = {
        {"OPEN_FORM_FIELD_GENDER", "男"},
        {"OPEN_FORM_FIELD_NAME", "张三"},
        {"OPEN_FORM_FIELD_BIRTHDAY", "01-01"},
        {"OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR", "1990-01-01"},
        {"OPEN_FORM_FIELD_IDCARD", "110101199001010011"},
        {"OPEN_FORM_FIELD_CERT_TYPE", "0"},
        {"OPEN_FORM_FIELD_CERT_NO", "110101199001010011"},
        {"OPEN_FORM_FIELD_EMAIL", "member@example.com"},
        {"OPEN_FORM_FIELD_ADDRESS", "浙江省杭州市西湖区文三路1号"},
        {"OPEN_FORM_FIELD_CITY", "杭州市"},
        {"OPEN_FORM_FIELD_IS_STUDENT", "否"},
        {"OPEN_FORM_FIELD_MEMBER_GRADE", "VIP1"},
    };
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        if (strcmp(values[i][0], field) == 0)
            return values[i][1];
    return "-";
}

/* The template's required fields, filled in (a new object). */
static json_object *form_default(struct sim *s, json_object *tpl_form)
{
    json_object *form = json_object_new_object(), *required;
    if (!form || !tpl_form || !json_object_object_get_ex(tpl_form, "required", &required))
        return form;
    for (size_t i = 0; i < json_object_array_length(required); i++) {
        const char *name = json_object_get_string(json_object_array_get_idx(required, i));
        if (strcmp(name, "OPEN_FORM_FIELD_MOBILE") == 0) {
            char mobile[16] = "13";
            sim_random_digits(s, mobile + 2, 9);
            sim_add_str(form, name, mobile);
        } else {
            sim_add_str(form, name, plausible(name));
        }
    }
    return form;
}

static int list_has(json_object *tpl_form, const char *part, const char *name)
{
    json_object *list;
    if (!json_object_object_get_ex(tpl_form, part, &list))
        return 0;
    for (size_t i = 0; i < json_object_array_length(list); i++)
        if (strcmp(json_object_get_string(json_object_array_get_idx(list, i)), name) == 0)
            return 1;
    return 0;
}

/* A form the test filled in itself: known fields with text values; when
 * the template has a form, only its fields and every required one (Alipay's
 * page lets the member submit nothing else). NULL, or what is wrong. */
static const char *form_problem(json_object *tpl_form, json_object *form, char *buf, size_t n)
{
    json_object *required;
    json_object_object_foreach(form, name, value)
    {
        if (!program_form_field_known(name))
            snprintf(buf, n, "form: %s is not a form field (OPEN_FORM_FIELD_...)", name);
        else if (!json_object_is_type(value, json_type_string))
            snprintf(buf, n, "form: %s must be a string", name);
        else if (tpl_form && !list_has(tpl_form, "required", name) &&
                 !list_has(tpl_form, "optional", name))
            snprintf(buf, n, "form: %s is not in the template's form", name);
        else
            continue;
        return buf;
    }
    if (!tpl_form || !json_object_object_get_ex(tpl_form, "required", &required))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(required); i++) {
        const char *req = json_object_get_string(json_object_array_get_idx(required, i));
        if (!json_object_object_get_ex(form, req, NULL)) {
            snprintf(buf, n, "form: the template's form requires %s", req);
            return buf;
        }
    }
    return NULL;
}

/* callback?app_id=…&template_id=…&auth_code=…&request_id=…[&out_string=…],
 * the values URL-encoded: where Alipay sends the member's browser. */
static char *callback_url(json_object *tpl, const char *auth_code, const char *request_id)
{
    const char *out_string = str_at(tpl, "out_string");
    char *enc[3] = {sim_url_encode(str_at(tpl, "app_id")),
                    sim_url_encode(str_at(tpl, "template_id")),
                    out_string ? sim_url_encode(out_string) : NULL};
    const char *callback = str_at(tpl, "callback");
    char *url = NULL;
    if (enc[0] && enc[1] && (!out_string || enc[2])) {
        size_t n = strlen(callback) + strlen(enc[0]) + strlen(enc[1]) + strlen(auth_code) +
                   strlen(request_id) + (enc[2] ? strlen(enc[2]) : 0) + 80;
        url = malloc(n);
        if (url)
            snprintf(url, n, "%s?app_id=%s&template_id=%s&auth_code=%s&request_id=%s%s%s", callback,
                     enc[0], enc[1], auth_code, request_id, enc[2] ? "&out_string=" : "",
                     enc[2] ? enc[2] : "");
    }
    for (size_t i = 0; i < 3; i++)
        free(enc[i]);
    return url;
}

/* Keeps the submitted form (by request_id) and the auth code that goes
 * with it. Takes form over. */
static void store_signup(struct sim *s, const char *request_id, const char *auth_code,
                         const char *template_id, const char *user_id, json_object *form,
                         long ttl_ms)
{
    json_object *member = json_object_new_object(), *grant = json_object_new_object();
    sim_add_str(member, "request_id", request_id);
    sim_add_str(member, "template_id", template_id);
    sim_add_str(member, "user_id", user_id);
    json_object_object_add(member, "form", form);
    json_object_object_add(s->members, request_id, member);
    sim_add_str(grant, "request_id", request_id);
    sim_add_str(grant, "user_id", user_id);
    json_object_object_add(grant, "expires_ms", json_object_new_int64(sim_now_ms() + ttl_ms));
    json_object_object_add(grant, "used", json_object_new_boolean(0));
    json_object_object_add(s->auth_codes, auth_code, grant);
}

/* The answer when the member closed the form: Alipay sends nobody back
 * to the callback, so there is no address, code or form to give. */
static json_object *declined_answer(const char *template_id, const char *user_id)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "declined", json_object_new_boolean(1));
    json_object_object_add(o, "callback_url", NULL);
    json_object_object_add(o, "auth_code", NULL);
    json_object_object_add(o, "request_id", NULL);
    sim_add_str(o, "user_id", user_id);
    sim_add_str(o, "template_id", template_id);
    return o;
}

/* Checks the sign-up against the template; the member's user id into
 * user (given or fresh). Returns 0, or the HTTP status with problem. */
static int signup_check(struct sim *s, const struct member_signup *m, json_object *tpl,
                        char user[32], char *problem, size_t plen)
{
    json_object *tpl_form = NULL;
    if (!tpl) {
        snprintf(problem, plen, "no such template");
        return 404;
    }
    if (!str_at(tpl, "callback")) {
        snprintf(problem, plen,
                 "the template has no activation link yet: "
                 "call alipay.marketing.card.activateurl.apply first");
        return 400;
    }
    if (m->user_id && validate_user_id(m->user_id) < 0) {
        snprintf(problem, plen, "user_id must be an Alipay user id (16 digits starting 2088)");
        return 400;
    }
    json_object_object_get_ex(tpl, "form", &tpl_form);
    if (m->form && form_problem(tpl_form, m->form, problem, plen))
        return 400;
    if (m->user_id) {
        snprintf(user, 32, "%s", m->user_id);
    } else {
        memcpy(user, "2088", 4);
        sim_random_digits(s, user + 4, 12);
    }
    return 0;
}

int member_signup(struct sim *s, const struct member_signup *m, json_object **answer, char *problem,
                  size_t problem_len)
{
    json_object *tpl = program_template(s, m->template_id), *tpl_form = NULL, *form;
    char user[32], request_id[33], code[33];
    int status = signup_check(s, m, tpl, user, problem, problem_len);
    if (status != 0)
        return status;
    if (m->declined) {
        *answer = declined_answer(m->template_id, user);
        return 201;
    }
    json_object_object_get_ex(tpl, "form", &tpl_form);
    form = m->form ? json_object_get(m->form) : form_default(s, tpl_form);
    sim_new_id(s, '1', ++s->member_seq, request_id);
    sim_random_hex(s, code, 32);
    char *url = form ? callback_url(tpl, code, request_id) : NULL;
    if (!url) {
        json_object_put(form);
        snprintf(problem, problem_len, "out of memory");
        return 500;
    }
    long ttl = m->auth_code_ttl_ms < 0 ? MEMBER_AUTH_CODE_TTL_MS : m->auth_code_ttl_ms;
    store_signup(s, request_id, code, m->template_id, user, json_object_get(form), ttl);
    json_object *o = json_object_new_object();
    sim_add_str(o, "callback_url", url);
    sim_add_str(o, "auth_code", code);
    sim_add_str(o, "request_id", request_id);
    sim_add_str(o, "user_id", user);
    sim_add_str(o, "template_id", m->template_id);
    json_object_object_add(o, "form", form);
    free(url);
    *answer = o;
    return 201;
}
