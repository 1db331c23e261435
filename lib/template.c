/* template: see template.h. */
#include "template.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonx.h"

static int fail(struct validate_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct validate_error *err, const char *field, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    snprintf(err->field, sizeof(err->field), "%s", field);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -1;
}

/* What a field of the template must be. */
enum tkind { TK_STRING, TK_OBJECT, TK_ARRAY };

struct tfield {
    const char *name;
    enum tkind kind;
    size_t max; /* characters, TK_STRING only; 0: no limit */
    int required_on_create;
};

/* The fields cardgate knows the type of; others pass through unchecked. */
static const struct tfield template_fields[] = {
    {"card_type", TK_STRING, 32, 1},
    {"biz_no_prefix", TK_STRING, 10, 0},
    {"biz_no_suffix_len", TK_STRING, 2, 1},
    {"write_off_type", TK_STRING, 32, 1},
    {"template_style_info", TK_OBJECT, 0, 1},
    {"template_benefit_info", TK_ARRAY, 0, 0},
    {"column_info_list", TK_ARRAY, 0, 0},
    {"field_rule_list", TK_ARRAY, 0, 1},
    {"card_action_list", TK_ARRAY, 0, 0},
    {"open_card_conf", TK_OBJECT, 0, 0},
    {"shop_ids", TK_ARRAY, 0, 0},
    {"pub_channels", TK_ARRAY, 0, 0},
    {"card_level_conf", TK_ARRAY, 0, 0},
    {"mdcode_notify_conf", TK_OBJECT, 0, 0},
    {"card_spec_tag", TK_STRING, 0, 0},
    {"service_label_list", TK_ARRAY, 0, 0},
    {"spi_app_id", TK_STRING, 32, 0},
};

static const struct tfield style_fields[] = {
    {"card_show_name", TK_STRING, 0, 1},
    {"logo_id", TK_STRING, 0, 1},
    {"background_id", TK_STRING, 0, 1},
    {"color", TK_STRING, 0, 0},
    {"bg_color", TK_STRING, 0, 1},
    {"brand_name", TK_STRING, 0, 0},
    {"slogan", TK_STRING, 0, 0},
    {"slogan_img_id", TK_STRING, 0, 0},
    {"feature_descriptions", TK_ARRAY, 0, 0},
    {"column_info_layout", TK_STRING, 0, 0},
};

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

static const char *kind_name(enum tkind k)
{
    return k == TK_STRING ? "a string" : k == TK_OBJECT ? "an object" : "an array";
}

static int kind_ok(json_object *v, enum tkind k)
{
    switch (k) {
    case TK_STRING:
        return json_object_is_type(v, json_type_string);
    case TK_OBJECT:
        return json_object_is_type(v, json_type_object);
    default:
        return json_object_is_type(v, json_type_array);
    }
}

/* Checks obj's known fields (type, non-empty string, length); required ones
 * must be there when `create`. */
static int check_fields(json_object *obj, const char *path, const struct tfield *fields, size_t n,
                        int create, struct validate_error *err)
{
    char sub[128];
    for (size_t i = 0; i < n; i++) {
        json_object *v;
        snprintf(sub, sizeof(sub), "%s.%s", path, fields[i].name);
        if (!json_object_object_get_ex(obj, fields[i].name, &v)) {
            if (create && fields[i].required_on_create)
                return fail(err, sub, "%s is required", sub);
            continue;
        }
        if (!kind_ok(v, fields[i].kind))
            return fail(err, sub, "%s must be %s", sub, kind_name(fields[i].kind));
        if (fields[i].kind != TK_STRING)
            continue;
        int ok;
        size_t chars = validate_utf8_chars(json_object_get_string(v), &ok);
        if (!ok || chars == 0)
            return fail(err, sub, "%s must be non-empty UTF-8 text", sub);
        if (fields[i].max && chars > fields[i].max)
            return fail(err, sub, "%s must be at most %zu characters", sub, fields[i].max);
    }
    return 0;
}

int template_check(json_object *tpl, int for_create, struct validate_error *err)
{
    json_object *v;
    if (!json_object_is_type(tpl, json_type_object))
        return fail(err, "template", "template must be an object");
    if (!for_create && json_object_object_length(tpl) == 0)
        return fail(err, "template", "template must change at least one field");
    if (json_object_object_get_ex(tpl, "request_id", NULL))
        return fail(err, "template.request_id",
                    "template.request_id is not part of the template: give request_id beside it");
    if (json_object_object_get_ex(tpl, "template_id", NULL))
        return fail(err, "template.template_id",
                    "template.template_id is not part of the template: it is in the path");
    if (check_fields(tpl, "template", template_fields, NFIELDS(template_fields), for_create, err) <
        0)
        return -1;
    if (json_object_object_get_ex(tpl, "card_type", &v) &&
        strcmp(json_object_get_string(v), "OUT_MEMBER_CARD") != 0)
        return fail(err, "template.card_type", "template.card_type must be OUT_MEMBER_CARD");
    if (json_object_object_get_ex(tpl, "biz_no_suffix_len", &v)) {
        const char *s = json_object_get_string(v);
        int n = (int)strtol(s, NULL, 10);
        if (strspn(s, "0123456789") != strlen(s) || n < 8 || n > 32)
            return fail(err, "template.biz_no_suffix_len",
                        "template.biz_no_suffix_len must be a number from 8 to 32, as a string");
    }
    if (!for_create && json_object_object_get_ex(tpl, "card_type", NULL))
        return fail(err, "template.card_type",
                    "template.card_type cannot be changed (template.modify does not take it)");
    /* A modify replaces the style whole: it must be complete there too. */
    if (json_object_object_get_ex(tpl, "template_style_info", &v) &&
        check_fields(v, "template.template_style_info", style_fields, NFIELDS(style_fields), 1,
                     err) < 0)
        return -1;
    return 0;
}

int template_check_request_id(const char *request_id, struct validate_error *err)
{
    struct validate_error e;
    if (validate_card_no(request_id, &e, "request_id") == 0)
        return 0;
    return fail(err, "request_id",
                "request_id is required: 1 to 32 printable ASCII characters without spaces");
}

/* {first..., then every field of tpl as given}; takes first. */
static char *with_fields(json_object *first, json_object *tpl)
{
    json_object_object_foreach(tpl, key, val)
    {
        json_object_object_add(first, key, json_object_get(val));
    }
    char *s = jsonx_text(first);
    json_object_put(first);
    return s;
}

char *template_create_biz(const char *request_id, json_object *tpl)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "request_id", json_object_new_string(request_id));
    return with_fields(o, tpl);
}

char *template_modify_biz(const char *request_id, const char *template_id, json_object *tpl)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "request_id", json_object_new_string(request_id));
    json_object_object_add(o, "template_id", json_object_new_string(template_id));
    return with_fields(o, tpl);
}

/* --- the sign-up form ------------------------------------------------------ */

static const char *const form_fields[] = {
    "OPEN_FORM_FIELD_MOBILE",
    "OPEN_FORM_FIELD_GENDER",
    "OPEN_FORM_FIELD_NAME",
    "OPEN_FORM_FIELD_BIRTHDAY",
    "OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR",
    "OPEN_FORM_FIELD_IDCARD",
    "OPEN_FORM_FIELD_CERT_TYPE",
    "OPEN_FORM_FIELD_CERT_NO",
    "OPEN_FORM_FIELD_EMAIL",
    "OPEN_FORM_FIELD_ADDRESS",
    "OPEN_FORM_FIELD_CITY",
    "OPEN_FORM_FIELD_IS_STUDENT",
    "OPEN_FORM_FIELD_MEMBER_GRADE",
};

int template_form_field_known(const char *s)
{
    for (size_t i = 0; i < NFIELDS(form_fields); i++)
        if (strcmp(s, form_fields[i]) == 0)
            return 1;
    return 0;
}

/* Checks one list; seen collects the names of both lists. */
static int check_form_list(json_object *list, const char *name, int required, json_object *seen,
                           struct validate_error *err)
{
    char path[64];
    if (!list) {
        if (required)
            return fail(err, name, "%s is required: a list of OPEN_FORM_FIELD_* names", name);
        return 0;
    }
    if (!json_object_is_type(list, json_type_array))
        return fail(err, name, "%s must be an array of OPEN_FORM_FIELD_* names", name);
    size_t n = json_object_array_length(list);
    if (required && n == 0)
        return fail(err, name, "%s must name at least one field", name);
    for (size_t i = 0; i < n; i++) {
        json_object *v = json_object_array_get_idx(list, i);
        snprintf(path, sizeof(path), "%s[%zu]", name, i);
        if (!json_object_is_type(v, json_type_string) ||
            !template_form_field_known(json_object_get_string(v)))
            return fail(err, path, "%s must be one of the OPEN_FORM_FIELD_* names", path);
        if (json_object_object_get_ex(seen, json_object_get_string(v), NULL))
            return fail(err, path, "%s names a field already listed", path);
        json_object_object_add(seen, json_object_get_string(v), NULL);
    }
    return 0;
}

int template_form_check(json_object *body, struct validate_error *err)
{
    json_object *req = NULL, *opt = NULL;
    if (!json_object_is_type(body, json_type_object))
        return fail(err, "", "the request body must be a JSON object");
    json_object_object_foreach(body, key, val)
    {
        (void)val;
        if (strcmp(key, "required") != 0 && strcmp(key, "optional") != 0) {
            char shown[64];
            snprintf(shown, sizeof(shown), "%.60s", key);
            return fail(err, shown, "unknown field %s", shown);
        }
    }
    json_object_object_get_ex(body, "required", &req);
    json_object_object_get_ex(body, "optional", &opt);
    json_object *seen = json_object_new_object();
    int rc = check_form_list(req, "required", 1, seen, err) < 0 ||
                     check_form_list(opt, "optional", 0, seen, err) < 0
                 ? -1
                 : 0;
    if (rc == 0 && json_object_object_get_ex(seen, "OPEN_FORM_FIELD_IDCARD", NULL) &&
        (json_object_object_get_ex(seen, "OPEN_FORM_FIELD_CERT_TYPE", NULL) ||
         json_object_object_get_ex(seen, "OPEN_FORM_FIELD_CERT_NO", NULL)))
        rc = fail(err, "required",
                  "OPEN_FORM_FIELD_IDCARD cannot be asked together with CERT_TYPE or CERT_NO");
    json_object_put(seen);
    return rc;
}

char *template_form_biz(const char *template_id, json_object *body)
{
    json_object *o = json_object_new_object(), *fields = json_object_new_object();
    static const char *const lists[] = {"required", "optional"};
    for (size_t i = 0; i < NFIELDS(lists); i++) {
        json_object *list;
        if (!json_object_object_get_ex(body, lists[i], &list))
            continue;
        /* OpenFormFieldDO types required/optional as String: the JSON text
         * of {"common_fields": [...]}, as the SDK's users send it. */
        json_object *common = json_object_new_object();
        json_object_object_add(common, "common_fields", json_object_get(list));
        char *text = jsonx_text(common);
        json_object_put(common);
        json_object_object_add(fields, lists[i], text ? json_object_new_string(text) : NULL);
        free(text);
    }
    json_object_object_add(o, "template_id", json_object_new_string(template_id));
    json_object_object_add(o, "fields", fields);
    char *s = jsonx_text(o);
    json_object_put(o);
    return s;
}

/* --- activation settings --------------------------------------------------- */

int template_activation_check(json_object *body, struct validate_error *err)
{
    /* The card fields follow the open's rules: an open body built from them
     * is what validate_card_open checks. */
    static const char *const known[] = {
        "valid_date", "level", "point", "balance", "external_card_no_prefix", "success_url"};
    if (!json_object_is_type(body, json_type_object))
        return fail(err, "", "the request body must be a JSON object");
    json_object_object_foreach(body, key, val)
    {
        size_t i = 0;
        while (i < NFIELDS(known) && strcmp(key, known[i]) != 0)
            i++;
        char shown[64];
        snprintf(shown, sizeof(shown), "%.60s", key);
        if (i == NFIELDS(known))
            return fail(err, shown, "unknown field %s", shown);
        if (!json_object_is_type(val, json_type_string))
            return fail(err, shown, "%s must be a string", shown);
    }
    json_object *card = json_object_new_object(), *v;
    json_object_object_add(card, "open_date", json_object_new_string("2000-01-01 00:00:00"));
    static const char *const card_keys[] = {"valid_date", "level", "point", "balance"};
    for (size_t i = 0; i < NFIELDS(card_keys); i++)
        if (json_object_object_get_ex(body, card_keys[i], &v))
            json_object_object_add(card, card_keys[i], json_object_get(v));
    json_object *open = json_object_new_object();
    json_object_object_add(open, "out_serial_no", json_object_new_string("x"));
    json_object_object_add(open, "card_template_id", json_object_new_string("x"));
    json_object_object_add(open, "user_id", json_object_new_string("2088000000000000"));
    json_object_object_add(open, "card", card);
    struct validate_error e;
    int rc = validate_card_open(open, NULL, &e);
    json_object_put(open);
    if (rc < 0) /* "card.valid_date" -> "valid_date" */
        return fail(err, strncmp(e.field, "card.", 5) == 0 ? e.field + 5 : e.field, "%s",
                    strncmp(e.message, "card.", 5) == 0 ? e.message + 5 : e.message);
    if (json_object_object_get_ex(body, "external_card_no_prefix", &v) &&
        validate_text(json_object_get_string(v), 32) < 0)
        return fail(err, "external_card_no_prefix",
                    "external_card_no_prefix must be 1 to 32 characters");
    if (json_object_object_get_ex(body, "success_url", &v)) {
        const char *u = json_object_get_string(v);
        if (validate_text(u, 512) < 0 ||
            (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0) || strchr(u, ' '))
            return fail(err, "success_url",
                        "success_url must be an http:// or https:// address of at most 512 "
                        "characters");
    }
    return 0;
}
