/* activation: see activation.h. */
#include "activation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>

#include "jsonx.h"
#include "validate.h"

int activation_serial(const char *app_id, const char *template_id, const char *request_id,
                      char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, app_id, strlen(app_id)) && EVP_DigestUpdate(ctx, ":", 1) &&
             EVP_DigestUpdate(ctx, template_id, strlen(template_id)) &&
             EVP_DigestUpdate(ctx, ":", 1) &&
             EVP_DigestUpdate(ctx, request_id, strlen(request_id)) &&
             EVP_DigestFinal_ex(ctx, md, &len) && len >= 16;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    out[0] = 'A';
    for (int i = 0; i < 31; i++)
        out[1 + i] = hex[(md[i / 2] >> (i % 2 ? 0 : 4)) & 0xF];
    out[32] = '\0';
    return 0;
}

/* A parameter from Alipay's redirect: printable ASCII, 1 to max. */
static char *take_param(struct evkeyvalq *q, const char *name, size_t max)
{
    const char *v = evhttp_find_header(q, name);
    if (!v || !*v || strlen(v) > max)
        return NULL;
    for (const char *c = v; *c; c++)
        if (*c < 0x21 || *c > 0x7E)
            return NULL;
    return strdup(v);
}

enum activation_callback_result activation_parse_callback(const char *query,
                                                          struct activation_callback *out)
{
    struct evkeyvalq q;
    memset(out, 0, sizeof(*out));
    TAILQ_INIT(&q);
    /* evhttp decodes %00 into a NUL that would silently cut a value short:
     * no parameter of Alipay's has one, so such a query is refused whole. */
    if (query && strstr(query, "%00"))
        return ACTIVATION_CALLBACK_INVALID;
    if (query && evhttp_parse_query_str(query, &q) < 0) {
        evhttp_clear_headers(&q);
        return ACTIVATION_CALLBACK_INVALID;
    }
    /* A parameter given twice (in any case: evhttp's lookup ignores case)
     * is ambiguous: Alipay never sends one twice, so refuse the query. */
    static const char *const names[] = {"app_id", "template_id", "request_id", "auth_code"};
    int seen[4] = {0};
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, &q, next)
    {
        for (int i = 0; i < 4; i++)
            if (strcasecmp(kv->key, names[i]) == 0 && seen[i]++) {
                evhttp_clear_headers(&q);
                return ACTIVATION_CALLBACK_INVALID;
            }
    }
    out->app_id = take_param(&q, "app_id", 32);
    out->template_id = take_param(&q, "template_id", 32);
    out->request_id = take_param(&q, "request_id", 64);
    out->auth_code = take_param(&q, "auth_code", 128);
    int no_code = !evhttp_find_header(&q, "auth_code");
    evhttp_clear_headers(&q);
    if (!out->app_id || !out->template_id || !out->request_id || (!out->auth_code && !no_code)) {
        activation_callback_clear(out);
        return ACTIVATION_CALLBACK_INVALID;
    }
    return out->auth_code ? ACTIVATION_CALLBACK_OK : ACTIVATION_CALLBACK_NO_CODE;
}

void activation_callback_clear(struct activation_callback *cb)
{
    free(cb->app_id);
    free(cb->template_id);
    free(cb->request_id);
    free(cb->auth_code);
    memset(cb, 0, sizeof(*cb));
}

/* MALE / FEMALE from what the form gives (Alipay's form says 男 / 女). */
static const char *gender_of(const char *v)
{
    if (strcmp(v, "男") == 0 || strcmp(v, "MALE") == 0 || strcmp(v, "M") == 0)
        return "MALE";
    if (strcmp(v, "女") == 0 || strcmp(v, "FEMALE") == 0 || strcmp(v, "F") == 0)
        return "FEMALE";
    return NULL;
}

json_object *activation_member(const char *infos)
{
    static const struct {
        const char *field, *key;
    } map[] = {
        {"OPEN_FORM_FIELD_NAME", "name"},
        {"OPEN_FORM_FIELD_MOBILE", "cell"},
        {"OPEN_FORM_FIELD_GENDER", "gender"},
        {"OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR", "birth"},
    };
    json_object *list = infos ? jsonx_parse(infos, strlen(infos)) : NULL;
    if (!json_object_is_type(list, json_type_array)) {
        json_object_put(list);
        return NULL;
    }
    json_object *member = json_object_new_object();
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *row = json_object_array_get_idx(list, i);
        if (!json_object_is_type(row, json_type_object))
            continue;
        json_object_object_foreach(row, field, val)
        {
            if (!json_object_is_type(val, json_type_string))
                continue;
            const char *v = json_object_get_string(val);
            for (size_t k = 0; k < sizeof(map) / sizeof(map[0]); k++) {
                if (strcmp(field, map[k].field) != 0)
                    continue;
                if (strcmp(map[k].key, "gender") == 0)
                    v = gender_of(v);
                if (v && *v)
                    json_object_object_add(member, map[k].key, json_object_new_string(v));
            }
        }
    }
    json_object_put(list);
    return member;
}

static void put_str(json_object *o, const char *key, const char *v)
{
    if (v)
        json_object_object_add(o, key, json_object_new_string(v));
}

json_object *activation_open_request(const char *serial, const char *template_id,
                                     const char *user_id, json_object *settings,
                                     const char *external_no, const char *open_date,
                                     json_object *member, char *err, size_t errlen)
{
    static const char *const card_keys[] = {"valid_date", "level", "point", "balance"};
    json_object *req = json_object_new_object(), *card = json_object_new_object(), *v;
    put_str(req, "out_serial_no", serial);
    put_str(req, "card_template_id", template_id);
    put_str(req, "user_id", user_id);
    char external[160];
    const char *prefix = NULL;
    if (json_object_object_get_ex(settings, "external_card_no_prefix", &v))
        prefix = json_object_get_string(v);
    snprintf(external, sizeof(external), "%s%s", prefix ? prefix : "", external_no);
    put_str(card, "external_card_no", external);
    put_str(card, "open_date", open_date);
    for (size_t i = 0; i < sizeof(card_keys) / sizeof(*card_keys); i++)
        if (json_object_object_get_ex(settings, card_keys[i], &v))
            put_str(card, card_keys[i], json_object_get_string(v));
    json_object_object_add(req, "card", card);
    if (member)
        json_object_object_add(req, "member", json_object_get(member));

    /* A member field the open refuses (a phone number too long for the
     * seed's limit, ...) is dropped: the member still gets the card. */
    struct validate_error e;
    for (int tries = 0; tries < 5; tries++) {
        if (validate_card_open(req, NULL, &e) == 0)
            return req;
        json_object *m;
        if (strncmp(e.field, "member.", 7) != 0 || !json_object_object_get_ex(req, "member", &m))
            break;
        json_object_object_del(m, e.field + 7);
    }
    snprintf(err, errlen, "%s", e.message);
    json_object_put(req);
    return NULL;
}
