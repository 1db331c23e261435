/* alipay_card: see alipay_card.h. */
#include "alipay_card.h"

#include "jsonx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *str_field(json_object *o, const char *key)
{
    json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int card_info_read(struct alipay_reply *r, struct alipay_card_info *c)
{
    memset(c, 0, sizeof(*c));
    if (r->outcome != ALIPAY_OK || !r->node)
        return -1;
    json_object *info;
    if (!json_object_object_get_ex(r->node, "card_info", &info) ||
        !json_object_is_type(info, json_type_object) || !str_field(info, "biz_card_no")) {
        r->outcome = ALIPAY_BAD_SIGNATURE;
        snprintf(r->detail, sizeof(r->detail), "success answer lacks card_info.biz_card_no");
        return -1;
    }
    c->json = info;
    c->biz_card_no = str_field(info, "biz_card_no");
    c->external_card_no = str_field(info, "external_card_no");
    c->open_date = str_field(info, "open_date");
    c->valid_date = str_field(info, "valid_date");
    c->level = str_field(info, "level");
    c->point = str_field(info, "point");
    c->balance = str_field(info, "balance");
    c->template_id = str_field(info, "template_id");
    c->front_image_id = str_field(info, "front_image_id");
    return 0;
}

int alipay_card_open_read(struct alipay_reply *r, struct alipay_card_open_result *out)
{
    memset(out, 0, sizeof(*out));
    if (card_info_read(r, &out->card) < 0)
        return -1;
    out->open_card_channel = str_field(r->node, "open_card_channel");
    out->open_card_channel_id = str_field(r->node, "open_card_channel_id");
    return 0;
}

int alipay_card_query_read(struct alipay_reply *r, struct alipay_card_query_result *out)
{
    memset(out, 0, sizeof(*out));
    if (card_info_read(r, &out->card) < 0)
        return -1;
    out->schema_url = str_field(r->node, "schema_url");
    return 0;
}

char *alipay_card_query_biz(const char *target_card_no, const char *type, const char *user_id)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "target_card_no", json_object_new_string(target_card_no));
    json_object_object_add(o, "target_card_no_type", json_object_new_string(type));
    if (user_id) {
        json_object *u = json_object_new_object();
        json_object_object_add(u, "user_uni_id", json_object_new_string(user_id));
        json_object_object_add(u, "user_uni_id_type", json_object_new_string("UID"));
        json_object_object_add(o, "card_user_info", u);
    }
    char *s = jsonx_text(o);
    json_object_put(o);
    return s;
}

int alipay_card_not_found(const struct alipay_reply *r)
{
    return r->outcome == ALIPAY_REJECTED && r->sub_code &&
           strcmp(r->sub_code, "CARD_NOT_EXIT") == 0;
}

char *alipay_card_delete_biz(const char *out_serial_no, const char *biz_card_no,
                             const char *reason_code)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "out_serial_no", json_object_new_string(out_serial_no));
    json_object_object_add(o, "target_card_no", json_object_new_string(biz_card_no));
    json_object_object_add(o, "target_card_no_type", json_object_new_string("BIZ_CARD"));
    json_object_object_add(o, "reason_code", json_object_new_string(reason_code));
    char *s = jsonx_text(o);
    json_object_put(o);
    return s;
}

const char *alipay_card_delete_read(struct alipay_reply *r)
{
    const char *serial = r->outcome == ALIPAY_OK ? str_field(r->node, "biz_serial_no") : NULL;
    if (!serial && r->outcome == ALIPAY_OK) {
        r->outcome = ALIPAY_BAD_SIGNATURE;
        snprintf(r->detail, sizeof(r->detail), "success answer lacks biz_serial_no");
    }
    return serial;
}

/* A decimal without its sign's '+', leading zeros and trailing fractional
 * zeros, so "0120.50" and "120.5" compare equal. Writes into out. */
static void decimal_norm(const char *s, char *out, size_t outlen)
{
    const char *neg = "";
    if (*s == '-')
        neg = "-", s++;
    while (*s == '0' && s[1] >= '0' && s[1] <= '9')
        s++;
    snprintf(out, outlen, "%s%s", neg, s);
    char *dot = strchr(out, '.');
    if (dot) {
        char *end = out + strlen(out);
        while (end > dot + 1 && end[-1] == '0')
            *--end = '\0';
        if (end == dot + 1)
            *dot = '\0';
    }
    if (strcmp(out, "-0") == 0) /* zero has no sign */
        memmove(out, out + 1, strlen(out));
}

static int same_value(const char *key, json_object *have, json_object *want)
{
    if ((strcmp(key, "point") == 0 || strcmp(key, "balance") == 0) &&
        json_object_is_type(have, json_type_string) &&
        json_object_is_type(want, json_type_string)) {
        char a[80], b[80];
        decimal_norm(json_object_get_string(have), a, sizeof(a));
        decimal_norm(json_object_get_string(want), b, sizeof(b));
        return strcmp(a, b) == 0;
    }
    return json_object_equal(have, want);
}

int alipay_card_info_shows(json_object *card_info, json_object *wanted)
{
    int compared = 0;
    if (!json_object_is_type(card_info, json_type_object) ||
        !json_object_is_type(wanted, json_type_object))
        return 0;
    json_object_object_foreach(wanted, key, want)
    {
        json_object *have;
        if (!json_object_object_get_ex(card_info, key, &have))
            continue;
        if (!same_value(key, have, want))
            return 0;
        compared++;
    }
    return compared > 0;
}
