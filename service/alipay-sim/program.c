/* program: templates, the sign-up form and the activation link. See
 * program.h; where each rule comes from is in README.md. */
#include "program.h"

#include "template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonx.h"

/* Where a member opens a template's sign-up form; Alipay's own host. */
#define APPLY_CARD_BASE "https://memberprod.alipay.com/account/openform/activecard.htm"

/* ------------------------------------------------------------------ state */

int program_init(struct sim *s)
{
    s->templates = json_object_new_object();
    s->template_requests = json_object_new_object();
    return s->templates && s->template_requests ? 0 : -1;
}

void program_free(struct sim *s)
{
    json_object_put(s->templates);
    json_object_put(s->template_requests);
    s->templates = s->template_requests = NULL;
}

void program_reset(struct sim *s)
{
    json_object_object_foreach(s->templates, id, rec)
    {
        (void)id;
        json_object_object_add(rec, "activateurl_calls", json_object_new_int64(0));
    }
}

/* A template known by its id only: nothing set up for it yet. */
static json_object *record_new(const char *template_id)
{
    static const char *const unset[] = {"request_id", "template",      "form",  "callback",
                                        "out_string", "follow_app_id", "app_id"};
    json_object *rec = json_object_new_object();
    if (!rec)
        return NULL;
    sim_add_str(rec, "template_id", template_id);
    for (size_t i = 0; i < sizeof(unset) / sizeof(unset[0]); i++)
        json_object_object_add(rec, unset[i], NULL);
    json_object_object_add(rec, "activateurl_calls", json_object_new_int64(0));
    return rec;
}

int sim_template_add(struct sim *s, const char *template_id)
{
    size_t n = template_id ? chk_chars(template_id) : 0;
    if (n == 0 || n > 32)
        return -1;
    if (sim_template_known(s, template_id))
        return 0; /* what was set up for it stays */
    json_object *rec = record_new(template_id);
    return rec ? json_object_object_add(s->templates, template_id, rec) : -1;
}

int sim_template_known(const struct sim *s, const char *template_id)
{
    return program_template(s, template_id) != NULL;
}

json_object *program_template(const struct sim *s, const char *template_id)
{
    json_object *rec = NULL;
    if (template_id && json_object_object_get_ex(s->templates, template_id, &rec))
        return rec;
    return NULL;
}

json_object *program_template_json(const struct sim *s, const char *template_id)
{
    json_object *rec = program_template(s, template_id);
    return rec ? json_object_get(rec) : NULL;
}

int program_form_field_known(const char *name)
{
    /* The same list cardgate checks forms with. */
    return template_form_field_known(name);
}

static const char *rec_str(json_object *rec, const char *key)
{
    json_object *v;
    if (json_object_object_get_ex(rec, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

static int not_found(struct sim_node *out, const struct sim_req *r)
{
    return sim_business_error(out, r->method, r->type, "TEMPLATE_NOT_EXIT", "会员卡模板不存在");
}

static int invalid(struct sim_node *out, const struct sim_req *r, const struct check *c)
{
    return sim_business_error(out, r->method, r->type, "INVALID_PARAMETER", c->msg);
}

/* -------------------------------------------------- template validation */

enum kind { K_STR, K_OBJ, K_ARR };

/* The fields of AlipayMarketingCardTemplateCreateModel. `create` marks the
 * ones a create must give; a modify may give any of them but card_type. */
static const struct field {
    const char *key;
    enum kind kind;
    size_t max; /* K_STR: characters */
    int create;
} template_fields[] = {
    {"card_type", K_STR, 32, 1},           {"biz_no_prefix", K_STR, 10, 0},
    {"biz_no_suffix_len", K_STR, 2, 1},    {"write_off_type", K_STR, 32, 1},
    {"template_style_info", K_OBJ, 0, 1},  {"template_benefit_info", K_ARR, 0, 0},
    {"column_info_list", K_ARR, 0, 0},     {"field_rule_list", K_ARR, 0, 1},
    {"card_action_list", K_ARR, 0, 0},     {"open_card_conf", K_OBJ, 0, 0},
    {"service_label_list", K_ARR, 0, 0},   {"shop_ids", K_ARR, 0, 0},
    {"pub_channels", K_ARR, 0, 0},         {"card_level_conf", K_ARR, 0, 0},
    {"mdcode_notify_conf", K_OBJ, 0, 0},   {"spi_app_id", K_STR, 32, 0},
    {"card_spec_tag", K_STR, 64, 0},       {"access_version", K_STR, 32, 0},
    {"paid_outer_card_conf", K_OBJ, 0, 0}, {"template_form_config", K_OBJ, 0, 0},
};
#define NFIELDS (sizeof(template_fields) / sizeof(template_fields[0]))

static int check_keys(json_object *biz, int create, struct check *c)
{
    const char *keys[NFIELDS + 3];
    size_t n = 0;
    keys[n++] = "request_id";
    if (!create)
        keys[n++] = "template_id";
    for (size_t i = 0; i < NFIELDS; i++)
        if (create || strcmp(template_fields[i].key, "card_type") != 0)
            keys[n++] = template_fields[i].key;
    keys[n] = NULL;
    return chk_only_keys(biz, "", keys, c);
}

/* Presence and type of every field (a modify needs none of them). */
static int check_kinds(json_object *biz, int create, struct check *c)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &template_fields[i];
        int req = create && f->create;
        const char *str;
        json_object *o;
        int r = f->kind == K_STR   ? chk_str(biz, "", f->key, req, f->max, &str, c)
                : f->kind == K_OBJ ? chk_obj(biz, "", f->key, req, &o, c)
                                   : chk_array(biz, "", f->key, req, &o, c);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* biz_no_suffix_len: digits, 8 to 32, and with the prefix at most 32 (the
 * card numbers Alipay makes are at most 32 characters). */
static int check_card_no(json_object *biz, struct check *c)
{
    const char *prefix, *len;
    chk_str(biz, "", "biz_no_prefix", 0, 10, &prefix, c);
    chk_str(biz, "", "biz_no_suffix_len", 0, 2, &len, c);
    if (!len)
        return 0;
    int n = atoi(len);
    if (!*len || !chk_digits(len, strlen(len)) || n < 8 || n > 32)
        return chk_fail(c, "biz_no_suffix_len must be a number from 8 to 32");
    if (prefix && chk_chars(prefix) + (size_t)n > 32)
        return chk_fail(c, "biz_no_prefix and biz_no_suffix_len make card numbers longer than "
                           "32 characters");
    return 0;
}

static int check_write_off(json_object *biz, struct check *c)
{
    static const char *const types[] = {"qrcode",   "barcode",   "dqrcode", "dbarcode",
                                        "mdqrcode", "mdbarcode", "text",    NULL};
    const char *type;
    json_object *conf;
    chk_str(biz, "", "write_off_type", 0, 32, &type, c);
    if (!type)
        return 0;
    if (chk_one_of("write_off_type", type, types, c) < 0)
        return -1;
    /* The merchant's dynamic codes need to know where to ask for them. */
    chk_obj(biz, "", "mdcode_notify_conf", 0, &conf, c);
    if (strncmp(type, "md", 2) == 0 && !conf)
        return chk_fail(c, "mdcode_notify_conf is required when write_off_type is %s", type);
    return 0;
}

static int check_string_list(json_object *list, const char *path, struct check *c)
{
    for (size_t i = 0; list && i < json_object_array_length(list); i++)
        if (!json_object_is_type(json_object_array_get_idx(list, i), json_type_string))
            return chk_fail(c, "%s[%zu] must be a string", path, i);
    return 0;
}

static int check_bool(json_object *obj, const char *path, const char *key, struct check *c)
{
    json_object *v;
    if (json_object_object_get_ex(obj, key, &v) && v && !json_object_is_type(v, json_type_boolean))
        return chk_fail(c, "%s.%s must be true or false", path, key);
    return 0;
}

/* template_style_info (TemplateStyleInfoDTO); given whole, also to modify. */
static int check_style(json_object *st, struct check *c)
{
    static const char *const keys[] = {"background_id",
                                       "banner_img_id",
                                       "banner_url",
                                       "bg_color",
                                       "brand_name",
                                       "card_show_name",
                                       "color",
                                       "column_info_layout",
                                       "feature_descriptions",
                                       "front_image_enable",
                                       "front_text_list_enable",
                                       "logo_id",
                                       "slogan",
                                       "slogan_img_id",
                                       NULL};
    static const char *const required[] = {"card_show_name", "logo_id", "background_id", "bg_color",
                                           NULL};
    static const char *const optional[] = {"banner_img_id", "banner_url",    "brand_name", "color",
                                           "slogan",        "slogan_img_id", NULL};
    static const char *const layouts[] = {"list", "grid", NULL};
    const char *p = "template_style_info", *str, *layout;
    json_object *list;
    if (chk_only_keys(st, p, keys, c) < 0)
        return -1;
    for (size_t i = 0; required[i]; i++)
        if (chk_str(st, p, required[i], 1, 1024, &str, c) < 0)
            return -1;
    for (size_t i = 0; optional[i]; i++)
        if (chk_str(st, p, optional[i], 0, 1024, &str, c) < 0)
            return -1;
    if (chk_str(st, p, "column_info_layout", 0, 16, &layout, c) < 0 ||
        (layout && chk_one_of("template_style_info.column_info_layout", layout, layouts, c) < 0) ||
        check_bool(st, p, "front_image_enable", c) < 0 ||
        check_bool(st, p, "front_text_list_enable", c) < 0 ||
        chk_array(st, p, "feature_descriptions", 0, &list, c) < 0 ||
        check_string_list(list, "template_style_info.feature_descriptions", c) < 0)
        return -1;
    return 0;
}

/* One field_rule_list row (TemplateFieldRuleDTO): how a card of the
 * template gets one of its fields when it is opened. */
static int check_field_rule(json_object *row, const char *path, struct check *c)
{
    static const char *const keys[] = {"field_name", "rule_name", "rule_value", NULL};
    static const char *const names[] = {"Balance", "Point", "Level", "OpenDate", "ValidDate", NULL};
    static const char *const rules[] = {"ASSIGN_FROM_REQUEST", "DATE_IN_FUTURE", "CONST", NULL};
    const char *name, *rule, *value;
    char sub[96];
    if (!json_object_is_type(row, json_type_object))
        return chk_fail(c, "%s must be an object", path);
    if (chk_only_keys(row, path, keys, c) < 0 ||
        chk_str(row, path, "field_name", 1, 32, &name, c) < 0 ||
        chk_str(row, path, "rule_name", 1, 32, &rule, c) < 0 ||
        chk_str(row, path, "rule_value", 1, 256, &value, c) < 0)
        return -1;
    snprintf(sub, sizeof(sub), "%s.field_name", path);
    if (chk_one_of(sub, name, names, c) < 0)
        return -1;
    snprintf(sub, sizeof(sub), "%s.rule_name", path);
    if (chk_one_of(sub, rule, rules, c) < 0)
        return -1;
    if (strcmp(rule, "DATE_IN_FUTURE") != 0)
        return 0;
    /* "10m" or "10d": ten months or days from the opening, for a date. */
    size_t n = strlen(value);
    if (strcmp(name, "OpenDate") != 0 && strcmp(name, "ValidDate") != 0)
        return chk_fail(c, "%s: DATE_IN_FUTURE is for OpenDate or ValidDate", path);
    if (n < 2 || !chk_digits(value, n - 1) || (value[n - 1] != 'm' && value[n - 1] != 'd'))
        return chk_fail(c, "%s.rule_value must be months or days such as 10m or 10d", path);
    return 0;
}

/* One column_info_list row (TemplateColumnInfoDTO): a line of the card's
 * detail page. */
static int check_column(json_object *row, const char *path, struct check *c)
{
    static const char *const keys[] = {"code",    "title", "operate_type", "value", "more_info",
                                       "icon_id", "tag",   "group_title",  NULL};
    static const char *const ops[] = {"openNative", "openWeb", "staticinfo", NULL};
    const char *str, *op;
    json_object *more;
    char sub[96];
    if (!json_object_is_type(row, json_type_object))
        return chk_fail(c, "%s must be an object", path);
    if (chk_only_keys(row, path, keys, c) < 0 || chk_str(row, path, "code", 1, 1000, &str, c) < 0 ||
        chk_str(row, path, "title", 1, 1000, &str, c) < 0 ||
        chk_str(row, path, "operate_type", 0, 32, &op, c) < 0 ||
        chk_str(row, path, "value", 0, 1000, &str, c) < 0 ||
        chk_str(row, path, "icon_id", 0, 1000, &str, c) < 0 ||
        chk_str(row, path, "tag", 0, 1000, &str, c) < 0 ||
        chk_str(row, path, "group_title", 0, 1000, &str, c) < 0 ||
        chk_obj(row, path, "more_info", 0, &more, c) < 0)
        return -1;
    snprintf(sub, sizeof(sub), "%s.operate_type", path);
    return op ? chk_one_of(sub, op, ops, c) : 0;
}

static int check_rows(json_object *biz, const char *key,
                      int (*row)(json_object *, const char *, struct check *), struct check *c)
{
    json_object *list;
    chk_array(biz, "", key, 0, &list, c);
    for (size_t i = 0; list && i < json_object_array_length(list); i++) {
        char path[64];
        snprintf(path, sizeof(path), "%s[%zu]", key, i);
        if (row(json_object_array_get_idx(list, i), path, c) < 0)
            return -1;
    }
    return 0;
}

/* A create's (create 1) or a modify's biz_content. */
static int check_template(json_object *biz, int create, struct check *c)
{
    const char *str, *card_type;
    json_object *style;
    if (check_keys(biz, create, c) < 0 ||
        chk_str(biz, "", "request_id", 1, create ? 32 : 64, &str, c) < 0 ||
        (!create && chk_str(biz, "", "template_id", 1, 32, &str, c) < 0) ||
        check_kinds(biz, create, c) < 0)
        return -1;
    chk_str(biz, "", "card_type", 0, 32, &card_type, c);
    if (card_type && strcmp(card_type, "OUT_MEMBER_CARD") != 0)
        return chk_fail(c, "card_type must be OUT_MEMBER_CARD");
    chk_obj(biz, "", "template_style_info", 0, &style, c);
    if (check_card_no(biz, c) < 0 || check_write_off(biz, c) < 0 ||
        (style && check_style(style, c) < 0) ||
        check_rows(biz, "field_rule_list", check_field_rule, c) < 0 ||
        check_rows(biz, "column_info_list", check_column, c) < 0)
        return -1;
    return 0;
}

/* -------------------------------------------------------------- templates */

/* Makes the template a create asks for; returns its id (borrowed from
 * its record), or NULL when out of memory. */
static const char *template_create(struct sim *s, const char *request_id, json_object *biz)
{
    char id[33];
    json_object *tpl = NULL;
    sim_new_id(s, '0', ++s->template_seq, id);
    json_object *rec = record_new(id);
    if (!rec || json_object_deep_copy(biz, &tpl, NULL) != 0) {
        json_object_put(rec);
        return NULL;
    }
    json_object_object_del(tpl, "request_id");
    sim_add_str(rec, "request_id", request_id);
    json_object_object_add(rec, "template", tpl);
    json_object_object_add(s->templates, id, rec);
    json_object_object_add(s->template_requests, request_id, json_object_new_string(id));
    return rec_str(rec, "template_id");
}

static int answer_template_id(struct sim_node *out, const struct sim_req *r, const char *id)
{
    json_object *o = sim_code_object("10000", "Success", NULL, NULL);
    sim_add_str(o, "template_id", id);
    return sim_method_success(out, r->method, r->type, o);
}

int program_template_create(struct sim *s, const struct sim_req *r, struct sim_node *out)
{
    struct check c;
    const char *request_id, *id;
    json_object *made;
    if (check_template(r->biz, 1, &c) < 0)
        return invalid(out, r, &c);
    chk_str(r->biz, "", "request_id", 1, 32, &request_id, &c);
    /* Alipay dedups on request_id: a retry whose answer was lost gets the
     * template it made (the other fields are not compared). */
    if (json_object_object_get_ex(s->template_requests, request_id, &made))
        id = json_object_get_string(made);
    else if (!(id = template_create(s, request_id, r->biz)))
        return -1;
    return answer_template_id(out, r, id);
}

static int template_id_only(const struct sim_req *r, const char **id, struct check *c)
{
    static const char *const keys[] = {"template_id", NULL};
    if (chk_only_keys(r->biz, "", keys, c) < 0 ||
        chk_str(r->biz, "", "template_id", 1, 32, id, c) < 0)
        return -1;
    return 0;
}

int program_template_query(struct sim *s, const struct sim_req *r, struct sim_node *out)
{
    struct check c;
    const char *id;
    json_object *tpl;
    if (template_id_only(r, &id, &c) < 0)
        return invalid(out, r, &c);
    json_object *rec = program_template(s, id);
    if (!rec)
        return not_found(out, r);
    json_object *o = sim_code_object("10000", "Success", NULL, NULL);
    sim_add_str(o, "template_id", id);
    if (json_object_object_get_ex(rec, "template", &tpl) && tpl) {
        json_object_object_foreach(tpl, key, val)
        {
            json_object *copy = NULL;
            if (json_object_deep_copy(val, &copy, NULL) == 0)
                json_object_object_add(o, key, copy);
        }
    }
    return sim_method_success(out, r->method, r->type, o);
}

int program_template_modify(struct sim *s, const struct sim_req *r, struct sim_node *out)
{
    struct check c;
    const char *id;
    json_object *tpl;
    if (check_template(r->biz, 0, &c) < 0)
        return invalid(out, r, &c);
    chk_str(r->biz, "", "template_id", 1, 32, &id, &c);
    json_object *rec = program_template(s, id);
    if (!rec)
        return not_found(out, r);
    if (!json_object_object_get_ex(rec, "template", &tpl) || !tpl) {
        tpl = json_object_new_object(); /* known by id only until now */
        json_object_object_add(rec, "template", tpl);
    }
    /* Each field given replaces the template's, objects and lists whole. */
    json_object_object_foreach(r->biz, key, val)
    {
        json_object *copy = NULL;
        if (strcmp(key, "template_id") == 0 || strcmp(key, "request_id") == 0)
            continue;
        if (json_object_deep_copy(val, &copy, NULL) != 0)
            return -1;
        json_object_object_add(tpl, key, copy);
    }
    return answer_template_id(out, r, rec_str(rec, "template_id"));
}

/* ------------------------------------------------------------ the form */

/* fields.required or fields.optional: {"common_fields":[names]}. The SDK
 * types both as String, so its users send the object's JSON text; the
 * object itself is taken too. *out gets the list (a new reference; an
 * empty one when the optional part is absent). */
static int form_part(json_object *fields, const char *key, int required, json_object **out,
                     struct check *c)
{
    static const char *const keys[] = {"common_fields", NULL};
    json_object *v = NULL, *part = NULL, *list;
    char path[32];
    snprintf(path, sizeof(path), "fields.%s", key);
    *out = NULL;
    if (!json_object_object_get_ex(fields, key, &v) || !v) {
        if (required)
            return chk_fail(c, "%s is required", path);
        *out = json_object_new_array();
        return 0;
    }
    if (json_object_is_type(v, json_type_string))
        part = jsonx_parse(json_object_get_string(v), (size_t)json_object_get_string_len(v));
    else
        part = json_object_get(v);
    int r = -1;
    if (!part || !json_object_is_type(part, json_type_object))
        chk_fail(c, "%s must be {\"common_fields\":[...]} or its JSON text", path);
    else if (chk_only_keys(part, path, keys, c) == 0 &&
             chk_array(part, path, "common_fields", required, &list, c) == 0) {
        *out = list ? json_object_get(list) : json_object_new_array();
        r = 0;
    }
    json_object_put(part);
    return r;
}

static int list_has(json_object *list, const char *name)
{
    for (size_t i = 0; i < json_object_array_length(list); i++)
        if (strcmp(json_object_get_string(json_object_array_get_idx(list, i)), name) == 0)
            return 1;
    return 0;
}

/* Names known, each once, none both required and optional ("可选字段配置中
 * 不能含有必须字段配置的有效值"). Alipay's limit of 20 fields cannot be
 * reached by the 13 names there are. */
static int check_form_names(json_object *list, const char *path, json_object *other,
                            struct check *c)
{
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *v = json_object_array_get_idx(list, i);
        const char *name = json_object_get_string(v);
        if (!json_object_is_type(v, json_type_string))
            return chk_fail(c, "%s.common_fields[%zu] must be a string", path, i);
        if (!program_form_field_known(name))
            return chk_fail(c,
                            "%s.common_fields[%zu] '%s' is not a form field (OPEN_FORM_FIELD_"
                            "MOBILE, _NAME, _GENDER, _BIRTHDAY, ...)",
                            path, i, name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(json_object_get_string(json_object_array_get_idx(list, j)), name) == 0)
                return chk_fail(c, "%s.common_fields lists %s twice", path, name);
        if (other && list_has(other, name))
            return chk_fail(c, "%s is both required and optional", name);
    }
    return 0;
}

/* "身份证字段和证件号、证件类型字段不可同时配置" (OpenFormFieldDetailDO): the
 * ID card field, or a certificate's type and number, not both. */
static int check_id_fields(json_object *req, json_object *opt, struct check *c)
{
    int idcard = list_has(req, "OPEN_FORM_FIELD_IDCARD") || list_has(opt, "OPEN_FORM_FIELD_IDCARD");
    int cert = list_has(req, "OPEN_FORM_FIELD_CERT_TYPE") ||
               list_has(opt, "OPEN_FORM_FIELD_CERT_TYPE") ||
               list_has(req, "OPEN_FORM_FIELD_CERT_NO") || list_has(opt, "OPEN_FORM_FIELD_CERT_NO");
    if (idcard && cert)
        return chk_fail(c, "OPEN_FORM_FIELD_IDCARD cannot be in one form with "
                           "OPEN_FORM_FIELD_CERT_TYPE or OPEN_FORM_FIELD_CERT_NO");
    return 0;
}

/* biz_content of formtemplate.set into a form {"required","optional"}
 * (a new object), or NULL with c. */
static json_object *check_form(json_object *biz, const char **id, struct check *c)
{
    static const char *const keys[] = {"template_id", "fields", NULL};
    static const char *const parts[] = {"required", "optional", NULL};
    json_object *fields, *req = NULL, *opt = NULL;
    if (chk_only_keys(biz, "", keys, c) < 0 || chk_str(biz, "", "template_id", 1, 32, id, c) < 0 ||
        chk_obj(biz, "", "fields", 1, &fields, c) < 0 ||
        chk_only_keys(fields, "fields", parts, c) < 0 ||
        form_part(fields, "required", 1, &req, c) < 0 ||
        form_part(fields, "optional", 0, &opt, c) < 0 ||
        check_form_names(req, "fields.required", NULL, c) < 0 ||
        check_form_names(opt, "fields.optional", req, c) < 0 || check_id_fields(req, opt, c) < 0) {
        json_object_put(req);
        json_object_put(opt);
        return NULL;
    }
    json_object *form = json_object_new_object();
    json_object_object_add(form, "required", req);
    json_object_object_add(form, "optional", opt);
    return form;
}

int program_form_set(struct sim *s, const struct sim_req *r, struct sim_node *out)
{
    struct check c;
    const char *id;
    json_object *form = check_form(r->biz, &id, &c);
    if (!form)
        return invalid(out, r, &c);
    json_object *rec = program_template(s, id);
    if (!rec) {
        json_object_put(form);
        return not_found(out, r);
    }
    json_object_object_add(rec, "form", form); /* the last one set is the form */
    return sim_method_success(out, r->method, r->type,
                              sim_code_object("10000", "Success", NULL, NULL));
}

/* ---------------------------------------------------- the activation link */

/* The callback Alipay redirects the member to: a plain http(s) address,
 * "该地址不可带参数" (AlipayMarketingCardActivateurlApplyModel): Alipay
 * appends its own query, and out_string carries the merchant's. */
static int check_callback(const char *url, struct check *c)
{
    if (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0)
        return chk_fail(c, "callback must be an http:// or https:// address");
    if (strpbrk(url, "?# \t"))
        return chk_fail(c, "callback must be a plain address without parameters (use "
                           "out_string to get a value back)");
    return 0;
}

struct apply_req {
    const char *template_id, *callback, *out_string, *follow_app_id;
};

static int check_apply(json_object *biz, struct apply_req *a, struct check *c)
{
    static const char *const keys[] = {"template_id", "callback", "out_string", "follow_app_id",
                                       NULL};
    if (chk_only_keys(biz, "", keys, c) < 0 ||
        chk_str(biz, "", "template_id", 1, 32, &a->template_id, c) < 0 ||
        chk_str(biz, "", "callback", 1, 1024, &a->callback, c) < 0 ||
        chk_str(biz, "", "out_string", 0, 1024, &a->out_string, c) < 0 ||
        chk_str(biz, "", "follow_app_id", 0, 32, &a->follow_app_id, c) < 0)
        return -1;
    return check_callback(a->callback, c);
}

/* APPLY_CARD_BASE?app_id=…&template_id=…&__webview_options=…
 * [&out_string=…]&callback=…, every value URL-encoded; malloc'd. */
static char *apply_card_url(const char *app_id, const struct apply_req *a)
{
    char *enc[4] = {sim_url_encode(app_id), sim_url_encode(a->template_id),
                    a->out_string ? sim_url_encode(a->out_string) : NULL,
                    sim_url_encode(a->callback)};
    char *url = NULL;
    if (enc[0] && enc[1] && enc[3] && (!a->out_string || enc[2])) {
        size_t n = strlen(APPLY_CARD_BASE) + strlen(enc[0]) + strlen(enc[1]) +
                   (enc[2] ? strlen(enc[2]) : 0) + strlen(enc[3]) + 160;
        url = malloc(n);
        if (url)
            snprintf(url, n,
                     "%s?app_id=%s&template_id=%s"
                     "&__webview_options=canPullDown%%3dNO%%26transparentTitle%%3dauto"
                     "%s%s&callback=%s",
                     APPLY_CARD_BASE, enc[0], enc[1], enc[2] ? "&out_string=" : "",
                     enc[2] ? enc[2] : "", enc[3]);
    }
    for (size_t i = 0; i < 4; i++)
        free(enc[i]);
    return url;
}

static void set_or_null(json_object *rec, const char *key, const char *val)
{
    json_object_object_add(rec, key, val ? json_object_new_string(val) : NULL);
}

int program_activateurl_apply(struct sim *s, const struct sim_req *r, struct sim_node *out)
{
    struct check c;
    struct apply_req a;
    json_object *calls;
    if (check_apply(r->biz, &a, &c) < 0)
        return invalid(out, r, &c);
    json_object *rec = program_template(s, a.template_id);
    if (!rec)
        return not_found(out, r);
    const char *app_id = alipay_params_get(r->params, "app_id");
    char *url = apply_card_url(app_id, &a);
    if (!url)
        return -1;
    /* The last link asked for is the one members come back through. */
    set_or_null(rec, "callback", a.callback);
    set_or_null(rec, "out_string", a.out_string);
    set_or_null(rec, "follow_app_id", a.follow_app_id);
    set_or_null(rec, "app_id", app_id);
    if (json_object_object_get_ex(rec, "activateurl_calls", &calls))
        json_object_set_int64(calls, json_object_get_int64(calls) + 1);
    /* AlipayMarketingCardActivateurlApplyResponse: the link comes
     * URL-encoded (使用时需URLDecode解码), as Alipay sends it. */
    char *sent = sim_url_encode(url);
    free(url);
    if (!sent)
        return -1;
    json_object *o = sim_code_object("10000", "Success", NULL, NULL);
    sim_add_str(o, "apply_card_url", sent);
    free(sent);
    return sim_method_success(out, r->method, r->type, o);
}
