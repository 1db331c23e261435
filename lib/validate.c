/* validate: request validation, biz_content mapping and the idempotency
 * hash. See validate.h for the rules and the decisions behind them. */
#include "validate.h"
#include "jsonx.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/params.h>

/* What a field holds. The string kinds share the generic string checks
 * (type, empty, UTF-8, control characters, length) before their format. */
enum vkind {
    VK_TEXT,        /* any text up to max characters */
    VK_USER_ID,     /* 2088 + 12 digits */
    VK_DATETIME,    /* yyyy-MM-dd HH:mm:ss */
    VK_DATE,        /* yyyy-MM-dd */
    VK_POINT,       /* signed number, at most 2 decimals */
    VK_BALANCE,     /* unsigned number, at most 2 decimals */
    VK_GENDER,      /* MALE | FEMALE */
    VK_CODE_STATUS, /* SUCCESS | FAIL_RETRY | FAIL_NOT_RETRY */
    VK_TIME_STAMP,  /* JSON integer 0..INT64_MAX */
    VK_CARD,        /* nested objects and the text list */
    VK_MDCODE,
    VK_MEMBER,
    VK_TEXT_LIST,
    VK_CARD_UPDATE, /* the update's card: no dates, at least one field */
    VK_FIXED,       /* a field Alipay lets no update change: refused when present */
};

struct vfield {
    const char *name;
    enum vkind kind;
    size_t max; /* characters; 0: the format fixes the length */
    int required;
};

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

/* Fields in the order checks run: the seed's order, so the first error
 * reported is the one a reader of the seed meets first. */
static const struct vfield top_fields[] = {
    {"out_serial_no", VK_TEXT, 64, 1},
    {"card_template_id", VK_TEXT, 32, 1},
    {"user_id", VK_USER_ID, 0, 1},
    {"auth_token", VK_TEXT, 128, 0},
    {"app_auth_token", VK_TEXT, 40, 0},
    {"card", VK_CARD, 0, 1},
    {"member", VK_MEMBER, 0, 0},
    {"open_card_channel", VK_TEXT, 64, 0},
    {"open_card_channel_id", VK_TEXT, 64, 0},
};

static const struct vfield card_fields[] = {
    {"external_card_no", VK_TEXT, 64, 0},
    {"open_date", VK_DATETIME, 0, 1},
    {"valid_date", VK_DATETIME, 0, 1},
    {"level", VK_TEXT, 64, 0},
    {"point", VK_POINT, 64, 0},
    {"balance", VK_BALANCE, 64, 0},
    {"template_id", VK_TEXT, 32, 0},
    {"mdcode_info", VK_MDCODE, 0, 0},
    {"front_text_list", VK_TEXT_LIST, 0, 0},
    {"front_image_id", VK_TEXT, 1024, 0},
};

/* PATCH /v1/cards/{biz_card_no}: the update takes the open's card, but
 * Alipay does not let an update change the card's dates. */
static const struct vfield update_fields[] = {
    {"out_serial_no", VK_TEXT, 64, 1},
    {"occur_time", VK_DATETIME, 0, 1},
    {"card", VK_CARD_UPDATE, 0, 1},
    {"changed_point", VK_POINT, 64, 0},
};

static const struct vfield card_update_fields[] = {
    {"external_card_no", VK_TEXT, 64, 0},
    {"open_date", VK_FIXED, 0, 0},
    {"valid_date", VK_FIXED, 0, 0},
    {"level", VK_TEXT, 64, 0},
    {"point", VK_POINT, 64, 0},
    {"balance", VK_BALANCE, 64, 0},
    {"template_id", VK_TEXT, 32, 0},
    {"mdcode_info", VK_MDCODE, 0, 0},
    {"front_text_list", VK_TEXT_LIST, 0, 0},
    {"front_image_id", VK_TEXT, 1024, 0},
};

static const struct vfield mdcode_fields[] = {
    {"code_status", VK_CODE_STATUS, 0, 1},
    {"code_value", VK_TEXT, 128, 0},
    {"expire_time", VK_DATETIME, 0, 0},
    {"time_stamp", VK_TIME_STAMP, 0, 1},
};

static const struct vfield text_row_fields[] = {
    {"label", VK_TEXT, 4, 0},
    {"value", VK_TEXT, 32, 0},
};

static const struct vfield member_fields[] = {
    {"name", VK_TEXT, 64, 0},
    {"gender", VK_GENDER, 0, 0},
    {"birth", VK_DATE, 0, 0},
    {"cell", VK_TEXT, 32, 0},
};

#define TEXT_LIST_MAX_ROWS 4
_Static_assert(TEXT_LIST_MAX_ROWS <= 10, "row paths use a one-digit index");

#define RESERVED_MESSAGE                                                                           \
    "out_serial_no must not begin with template:, template-modify: or activateurl: (cardgate's "   \
    "own keys)"

/* ---- errors and paths ---- */

static void set_err(struct validate_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(struct validate_error *err, const char *field, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return;
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

/* Length in bytes of the valid UTF-8 sequence at p, 0 when it is not one
 * (or p is at the NUL); *cp gets the code point. */
static size_t utf8_seq(const unsigned char *p, uint32_t *cp)
{
    size_t len, i;
    uint32_t c = p[0], min;

    if (c == 0)
        return 0;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xE0) == 0xC0) {
        len = 2, c &= 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, c &= 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, c &= 0x07, min = 0x10000;
    } else {
        return 0;
    }
    /* A NUL is not a continuation byte, so this never reads past the end. */
    for (i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

size_t validate_utf8_chars(const char *s, int *ok)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0, len;
    uint32_t cp;

    if (ok)
        *ok = s != NULL;
    if (!s)
        return 0;
    while (*p) {
        len = utf8_seq(p, &cp);
        if (len == 0) {
            if (ok)
                *ok = 0;
            return n;
        }
        p += len;
        n++;
    }
    return n;
}

/* Copies a caller-supplied key into out for an error path, cut to fit
 * outsz bytes (whole characters, then "..."); control characters and
 * invalid bytes become '?', so the message stays valid, printable UTF-8
 * whatever the caller sent. */
static void display_key(const char *key, char *out, size_t outsz)
{
    const unsigned char *p = (const unsigned char *)key;
    size_t o = 0, len, room = outsz - 4; /* keeps space for "..." and the NUL */
    uint32_t cp;

    while (*p) {
        len = utf8_seq(p, &cp);
        if (len == 0 || cp < 0x20 || cp == 0x7F) {
            if (o + 1 > room)
                break;
            out[o++] = '?';
            p += len ? len : 1;
        } else {
            if (o + len > room)
                break;
            memcpy(out + o, p, len);
            o += len;
            p += len;
        }
    }
    if (*p) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Appends s to the NUL-terminated out, cutting at outsz. Paths never
 * reach the cut (known names are short, display_key bounds a caller's key);
 * this is hand-rolled because gcc -O2 flags every snprintf that might. */
static void path_append(char *out, size_t outsz, const char *s)
{
    size_t o = strlen(out), n = strlen(s);

    if (o + n >= outsz)
        n = outsz - 1 - o;
    memcpy(out + o, s, n);
    out[o + n] = '\0';
}

/* parent.name, or name at the top level. */
static void join_path(char *out, size_t outsz, const char *parent, const char *name)
{
    out[0] = '\0';
    path_append(out, outsz, parent);
    if (parent[0])
        path_append(out, outsz, ".");
    path_append(out, outsz, name);
}

/* ---- formats ---- */

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* n digits at s as a number, or -1. */
static int digits(const char *s, int n)
{
    int v = 0, i;

    for (i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : days[m - 1];
}

/* "yyyy-MM-dd" at s (exactly 10 characters there) is a real date. */
static int date_ok(const char *s)
{
    int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);

    if (s[4] != '-' || s[7] != '-' || y < 1 || m < 1 || m > 12 || d < 1)
        return 0;
    return d <= days_in_month(y, m);
}

static int is_date(const char *s)
{
    return strlen(s) == 10 && date_ok(s);
}

static int is_datetime(const char *s)
{
    int h, mi, se;

    if (strlen(s) != 19 || !date_ok(s) || s[10] != ' ' || s[13] != ':' || s[16] != ':')
        return 0;
    h = digits(s + 11, 2), mi = digits(s + 14, 2), se = digits(s + 17, 2);
    return h >= 0 && h <= 23 && mi >= 0 && mi <= 59 && se >= 0 && se <= 59;
}

/* Digits, then optionally '.' and one or two digits; a leading '-' only
 * when allowed. No exponent, no '+', nothing after. */
static int is_decimal(const char *s, int allow_negative)
{
    int frac = 0;

    if (*s == '-' && allow_negative)
        s++;
    if (!is_digit(*s))
        return 0;
    while (is_digit(*s))
        s++;
    if (*s == '.') {
        s++;
        while (is_digit(*s) && frac < 3)
            s++, frac++;
        if (frac < 1 || frac > 2)
            return 0;
    }
    return *s == '\0';
}

int validate_datetime(const char *s, int with_time)
{
    return s && (with_time ? is_datetime(s) : is_date(s)) ? 0 : -1;
}

int validate_decimal(const char *s, int allow_negative)
{
    return s && is_decimal(s, allow_negative) ? 0 : -1;
}

int validate_user_id(const char *s)
{
    if (!s || strlen(s) != 16 || strncmp(s, "2088", 4) != 0)
        return -1;
    for (; *s; s++)
        if (!is_digit(*s))
            return -1;
    return 0;
}

int validate_card_no(const char *s, struct validate_error *err, const char *field)
{
    size_t n;

    if (!field)
        field = "";
    if (!s || !*s) {
        set_err(err, field, "%s is required", field);
        return -1;
    }
    for (n = 0; s[n]; n++) {
        if (n >= 32 || s[n] < 0x21 || s[n] > 0x7E) {
            set_err(err, field, "%s must be 1 to 32 printable ASCII characters without spaces",
                    field);
            return -1;
        }
    }
    return 0;
}

/* ---- checking one field ---- */

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7F)
            return 1;
    return 0;
}

static int check_object(json_object *obj, const char *path, const struct vfield *fields, size_t n,
                        struct validate_error *err);

/* The generic string checks, then the kind's format. */
static int check_string(json_object *v, const char *path, const struct vfield *f,
                        struct validate_error *err)
{
    const char *s;
    size_t len, chars;
    int ok;

    if (!json_object_is_type(v, json_type_string)) {
        set_err(err, path, "%s must be a string", path);
        return -1;
    }
    s = json_object_get_string(v);
    len = (size_t)json_object_get_string_len(v);
    if (len == 0) {
        set_err(err, path, "%s must not be empty", path);
        return -1;
    }
    chars = validate_utf8_chars(s, &ok);
    if (!ok) {
        set_err(err, path, "%s must be valid UTF-8", path);
        return -1;
    }
    /* strlen < len: an embedded \u0000, which C strings would cut. */
    if (strlen(s) != len || has_control(s)) {
        set_err(err, path, "%s must not contain control characters", path);
        return -1;
    }
    if (f->max && chars > f->max) {
        set_err(err, path, "%s must be at most %zu characters", path, f->max);
        return -1;
    }
    switch (f->kind) {
    case VK_USER_ID:
        if (validate_user_id(s) == 0)
            return 0;
        set_err(err, path, "%s must be 16 digits starting with 2088", path);
        return -1;
    case VK_DATETIME:
        if (is_datetime(s))
            return 0;
        set_err(err, path, "%s must be a real date and time in the form yyyy-MM-dd HH:mm:ss", path);
        return -1;
    case VK_DATE:
        if (is_date(s))
            return 0;
        set_err(err, path, "%s must be a real date in the form yyyy-MM-dd", path);
        return -1;
    case VK_POINT:
        if (is_decimal(s, 1))
            return 0;
        set_err(err, path, "%s must be a number with at most 2 decimals", path);
        return -1;
    case VK_BALANCE:
        if (is_decimal(s, 0))
            return 0;
        set_err(err, path, "%s must be a non-negative number with at most 2 decimals", path);
        return -1;
    case VK_GENDER:
        if (strcmp(s, "MALE") == 0 || strcmp(s, "FEMALE") == 0)
            return 0;
        set_err(err, path, "%s must be MALE or FEMALE", path);
        return -1;
    case VK_CODE_STATUS:
        if (strcmp(s, "SUCCESS") == 0 || strcmp(s, "FAIL_RETRY") == 0 ||
            strcmp(s, "FAIL_NOT_RETRY") == 0)
            return 0;
        set_err(err, path, "%s must be SUCCESS, FAIL_RETRY or FAIL_NOT_RETRY", path);
        return -1;
    default:
        return 0;
    }
}

/* The seed's "long": a JSON integer (not 1.0, not "1"), 0..INT64_MAX.
 * json-c clamps bigger numbers to UINT64_MAX, which this refuses too. */
static int check_time_stamp(json_object *v, const char *path, struct validate_error *err)
{
    if (!json_object_is_type(v, json_type_int)) {
        set_err(err, path, "%s must be an integer", path);
        return -1;
    }
    if (json_object_get_int64(v) < 0 || json_object_get_uint64(v) > (uint64_t)INT64_MAX) {
        set_err(err, path, "%s must be an integer from 0 to 9223372036854775807", path);
        return -1;
    }
    return 0;
}

/* code_value and expire_time are required when the code was issued. */
static int check_mdcode(json_object *v, const char *path, struct validate_error *err)
{
    static const char *const needed[] = {"code_value", "expire_time"};
    char sub[128];
    size_t i;

    if (check_object(v, path, mdcode_fields, NFIELDS(mdcode_fields), err) != 0)
        return -1;
    if (strcmp(json_object_get_string(json_object_object_get(v, "code_status")), "SUCCESS") != 0)
        return 0;
    for (i = 0; i < NFIELDS(needed); i++) {
        if (!json_object_object_get_ex(v, needed[i], NULL)) {
            join_path(sub, sizeof(sub), path, needed[i]);
            set_err(err, sub, "%s is required when code_status is SUCCESS", sub);
            return -1;
        }
    }
    return 0;
}

static int check_text_list(json_object *v, const char *path, struct validate_error *err)
{
    char row[128];
    size_t i, n;

    if (!json_object_is_type(v, json_type_array)) {
        set_err(err, path, "%s must be an array", path);
        return -1;
    }
    n = json_object_array_length(v);
    if (n > TEXT_LIST_MAX_ROWS) {
        set_err(err, path, "%s must have at most %d rows", path, TEXT_LIST_MAX_ROWS);
        return -1;
    }
    for (i = 0; i < n; i++) {
        char idx[4] = {'[', (char)('0' + i), ']', '\0'}; /* i < TEXT_LIST_MAX_ROWS */

        row[0] = '\0';
        path_append(row, sizeof(row), path);
        path_append(row, sizeof(row), idx);
        if (check_object(json_object_array_get_idx(v, i), row, text_row_fields,
                         NFIELDS(text_row_fields), err) != 0)
            return -1;
    }
    return 0;
}

static int check_value(json_object *v, const char *path, const struct vfield *f,
                       struct validate_error *err)
{
    switch (f->kind) {
    case VK_CARD:
        return check_object(v, path, card_fields, NFIELDS(card_fields), err);
    case VK_MEMBER:
        return check_object(v, path, member_fields, NFIELDS(member_fields), err);
    case VK_MDCODE:
        return check_mdcode(v, path, err);
    case VK_TEXT_LIST:
        return check_text_list(v, path, err);
    case VK_TIME_STAMP:
        return check_time_stamp(v, path, err);
    case VK_CARD_UPDATE:
        if (check_object(v, path, card_update_fields, NFIELDS(card_update_fields), err) != 0)
            return -1;
        if (json_object_object_length(v) > 0)
            return 0;
        set_err(err, path, "%s must set at least one field", path);
        return -1;
    case VK_FIXED:
        set_err(err, path, "%s cannot be changed by an update (Alipay keeps the card's dates)",
                path);
        return -1;
    default:
        return check_string(v, path, f, err);
    }
}

/* Checks that obj is an object with no key outside fields, then each field
 * in table order. path is "" for the request body itself. */
static int check_object(json_object *obj, const char *path, const struct vfield *fields, size_t n,
                        struct validate_error *err)
{
    char sub[128], shown[64];
    json_object *v;
    size_t i;

    if (!json_object_is_type(obj, json_type_object)) {
        if (path[0])
            set_err(err, path, "%s must be an object", path);
        else
            set_err(err, "", "the request body must be a JSON object");
        return -1;
    }
    json_object_object_foreach(obj, key, val)
    {
        (void)val;
        for (i = 0; i < n && strcmp(key, fields[i].name) != 0; i++)
            ;
        if (i == n) {
            display_key(key, shown, sizeof(shown));
            join_path(sub, sizeof(sub), path, shown);
            set_err(err, sub, "unknown field %s", sub);
            return -1;
        }
    }
    for (i = 0; i < n; i++) {
        join_path(sub, sizeof(sub), path, fields[i].name);
        if (!json_object_object_get_ex(obj, fields[i].name, &v)) {
            if (fields[i].required) {
                set_err(err, sub, "%s is required", sub);
                return -1;
            }
            continue;
        }
        if (check_value(v, sub, &fields[i], err) != 0)
            return -1;
    }
    return 0;
}

/* The string at obj.key, or NULL when absent. */
static const char *get_str(json_object *obj, const char *key)
{
    json_object *v;

    if (!obj || !json_object_object_get_ex(obj, key, &v))
        return NULL;
    return json_object_get_string(v);
}

int validate_card_open(json_object *root, struct validate_card_open *out,
                       struct validate_error *err)
{
    if (out)
        memset(out, 0, sizeof(*out));
    if (err)
        err->field[0] = err->message[0] = '\0';
    if (check_object(root, "", top_fields, NFIELDS(top_fields), err) != 0)
        return -1;
    if (validate_serial_reserved(get_str(root, "out_serial_no"))) {
        set_err(err, "out_serial_no", RESERVED_MESSAGE);
        return -1;
    }
    if (!out)
        return 0;
    out->root = root;
    out->out_serial_no = get_str(root, "out_serial_no");
    out->card_template_id = get_str(root, "card_template_id");
    out->user_id = get_str(root, "user_id");
    out->auth_token = get_str(root, "auth_token");
    out->app_auth_token = get_str(root, "app_auth_token");
    out->external_card_no = get_str(json_object_object_get(root, "card"), "external_card_no");
    out->open_card_channel = get_str(root, "open_card_channel");
    out->open_card_channel_id = get_str(root, "open_card_channel_id");
    return 0;
}

int validate_card_update(json_object *root, struct validate_card_update *out,
                         struct validate_error *err)
{
    if (out)
        memset(out, 0, sizeof(*out));
    if (err)
        err->field[0] = err->message[0] = '\0';
    if (check_object(root, "", update_fields, NFIELDS(update_fields), err) != 0)
        return -1;
    if (validate_serial_reserved(get_str(root, "out_serial_no"))) {
        set_err(err, "out_serial_no", RESERVED_MESSAGE);
        return -1;
    }
    if (!out)
        return 0;
    json_object *card = json_object_object_get(root, "card");
    out->root = root;
    out->card = card;
    out->out_serial_no = get_str(root, "out_serial_no");
    out->occur_time = get_str(root, "occur_time");
    out->changed_point = get_str(root, "changed_point");
    out->external_card_no = get_str(card, "external_card_no");
    return 0;
}

/* ---- biz_content ---- */

/* Building a tree with a sticky failure flag keeps the mapping readable:
 * every add checks the flag once at the end. */
struct builder {
    int failed;
};

static void b_add(struct builder *b, json_object *dst, const char *key, json_object *v)
{
    if (!v || json_object_object_add(dst, key, v) != 0) {
        json_object_put(v);
        b->failed = 1;
    }
}

/* A fresh copy of a validated leaf (string or integer): the result owns no
 * reference into the caller's tree. */
static json_object *leaf_copy(json_object *v)
{
    if (json_object_is_type(v, json_type_int))
        return json_object_new_int64(json_object_get_int64(v));
    return json_object_new_string_len(json_object_get_string(v), json_object_get_string_len(v));
}

/* Copies src's leaves named in names (in that order) into dst, as to_names
 * (NULL: the same names). Absent ones are left out. */
static void b_copy(struct builder *b, json_object *dst, json_object *src, const char *const *names,
                   const char *const *to_names, size_t n)
{
    json_object *v;
    size_t i;

    for (i = 0; i < n; i++)
        if (json_object_object_get_ex(src, names[i], &v))
            b_add(b, dst, to_names ? to_names[i] : names[i], leaf_copy(v));
}

static json_object *b_object(struct builder *b)
{
    json_object *o = json_object_new_object();

    if (!o)
        b->failed = 1;
    return o;
}

static json_object *biz_text_list(struct builder *b, json_object *src)
{
    static const char *const row_keys[] = {"label", "value"};
    json_object *list = json_object_new_array(), *row;
    size_t i, n = json_object_array_length(src);

    if (!list) {
        b->failed = 1;
        return NULL;
    }
    for (i = 0; i < n; i++) {
        row = b_object(b);
        if (!row)
            break;
        b_copy(b, row, json_object_array_get_idx(src, i), row_keys, NULL, NFIELDS(row_keys));
        if (json_object_array_add(list, row) != 0) {
            json_object_put(row);
            b->failed = 1;
        }
    }
    return list;
}

/* card_ext_info: the card's fields in the seed's order. */
static json_object *biz_card(struct builder *b, json_object *card)
{
    static const char *const head[] = {
        "external_card_no", "open_date", "valid_date", "level", "point", "balance", "template_id"};
    static const char *const md_keys[] = {"code_status", "code_value", "expire_time", "time_stamp"};
    static const char *const tail[] = {"front_image_id"};
    json_object *ext = b_object(b), *v, *md;

    if (!ext)
        return NULL;
    b_copy(b, ext, card, head, NULL, NFIELDS(head));
    if (json_object_object_get_ex(card, "mdcode_info", &v)) {
        md = b_object(b);
        if (md)
            b_copy(b, md, v, md_keys, NULL, NFIELDS(md_keys));
        b_add(b, ext, "mdcode_info", md);
    }
    if (json_object_object_get_ex(card, "front_text_list", &v))
        b_add(b, ext, "front_text_list", biz_text_list(b, v));
    b_copy(b, ext, card, tail, NULL, NFIELDS(tail));
    return ext;
}

/* member_ext_info: Alipay spells gender "gende". */
static json_object *biz_member(struct builder *b, json_object *member)
{
    static const char *const from[] = {"name", "gender", "birth", "cell"};
    static const char *const to[] = {"name", "gende", "birth", "cell"};
    json_object *m = b_object(b);

    if (m)
        b_copy(b, m, member, from, to, NFIELDS(from));
    return m;
}

char *validate_card_open_biz(const struct validate_card_open *req)
{
    static const char *const head[] = {"out_serial_no", "card_template_id"};
    static const char *const tail[] = {"open_card_channel", "open_card_channel_id"};
    struct builder b = {0};
    json_object *biz, *user, *v;
    char *out = NULL;

    if (!req || !req->root)
        return NULL;
    biz = b_object(&b);
    if (!biz)
        return NULL;
    b_copy(&b, biz, req->root, head, NULL, NFIELDS(head));
    user = b_object(&b);
    if (user) {
        b_add(&b, user, "user_uni_id", json_object_new_string(req->user_id));
        b_add(&b, user, "user_uni_id_type", json_object_new_string("UID"));
    }
    b_add(&b, biz, "card_user_info", user);
    b_add(&b, biz, "card_ext_info", biz_card(&b, json_object_object_get(req->root, "card")));
    if (json_object_object_get_ex(req->root, "member", &v))
        b_add(&b, biz, "member_ext_info", biz_member(&b, v));
    b_copy(&b, biz, req->root, tail, NULL, NFIELDS(tail));
    if (!b.failed)
        out = jsonx_text(biz);
    json_object_put(biz);
    return out;
}

char *validate_card_update_biz(const struct validate_card_update *req, const char *biz_card_no)
{
    struct builder b = {0};
    json_object *biz, *msg;
    char *out = NULL;

    if (!req || !req->root || !biz_card_no)
        return NULL;
    biz = b_object(&b);
    if (!biz)
        return NULL;
    b_add(&b, biz, "target_card_no", json_object_new_string(biz_card_no));
    b_add(&b, biz, "target_card_no_type", json_object_new_string("BIZ_CARD"));
    b_add(&b, biz, "occur_time", json_object_new_string(req->occur_time));
    b_add(&b, biz, "card_info", biz_card(&b, req->card));
    if (req->changed_point) {
        msg = b_object(&b);
        if (msg)
            b_add(&b, msg, "changed_point", json_object_new_string(req->changed_point));
        b_add(&b, biz, "merchant_card_msg_info", msg);
    }
    if (!b.failed)
        out = jsonx_text(biz);
    json_object_put(biz);
    return out;
}

int validate_serial_reserved(const char *serial)
{
    static const char *const reserved[] = {"template:", "template-modify:", "activateurl:"};
    for (size_t i = 0; serial && i < sizeof(reserved) / sizeof(*reserved); i++)
        if (strncmp(serial, reserved[i], strlen(reserved[i])) == 0)
            return 1;
    return 0;
}

int validate_reason_code(const char *s)
{
    return s && (strcmp(s, "USER_UNBUND") == 0 || strcmp(s, "CANCEL") == 0 ||
                 strcmp(s, "PRESENT") == 0)
               ? 0
               : -1;
}

int validate_text(const char *s, size_t max_chars)
{
    int ok;
    size_t n = s ? validate_utf8_chars(s, &ok) : 0;
    return s && ok && n >= 1 && n <= max_chars && !has_control(s) ? 0 : -1;
}

/* ---- idempotency hash ---- */

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A copy of v with every object's keys inserted in byte order (json-c
 * serializes in insertion order), numbers re-made from their values so
 * that 1.0 and 1.00 agree. skip_tokens drops the request's credentials at
 * the top level. Sets *failed on out of memory. */
static json_object *canonical(json_object *v, int skip_tokens, int *failed);

static json_object *canonical_object(json_object *v, int skip_tokens, int *failed)
{
    json_object *o = json_object_new_object(), *c;
    const char **keys;
    size_t n = 0, i;

    keys = calloc((size_t)json_object_object_length(v) + 1, sizeof(*keys));
    if (!o || !keys) {
        json_object_put(o);
        free(keys);
        *failed = 1;
        return NULL;
    }
    json_object_object_foreach(v, key, val)
    {
        (void)val;
        if (skip_tokens && (strcmp(key, "auth_token") == 0 || strcmp(key, "app_auth_token") == 0))
            continue;
        keys[n++] = key;
    }
    qsort(keys, n, sizeof(*keys), cmp_keys);
    for (i = 0; i < n; i++) {
        c = canonical(json_object_object_get(v, keys[i]), 0, failed);
        if (json_object_object_add(o, keys[i], c) != 0) {
            json_object_put(c);
            *failed = 1;
        }
    }
    free(keys);
    return o;
}

static json_object *canonical(json_object *v, int skip_tokens, int *failed)
{
    json_object *a, *r = NULL;
    size_t i, n;

    switch (json_object_get_type(v)) {
    case json_type_null:
        return NULL; /* json-c's null */
    case json_type_object:
        return canonical_object(v, skip_tokens, failed);
    case json_type_array:
        a = json_object_new_array();
        n = a ? json_object_array_length(v) : 0;
        for (i = 0; i < n; i++) {
            json_object *c = canonical(json_object_array_get_idx(v, i), 0, failed);
            if (json_object_array_add(a, c) != 0) {
                json_object_put(c);
                *failed = 1;
            }
        }
        r = a;
        break;
    case json_type_string:
        r = json_object_new_string_len(json_object_get_string(v), json_object_get_string_len(v));
        break;
    case json_type_int:
        if (json_object_get_int64(v) == INT64_MAX && json_object_get_uint64(v) > INT64_MAX)
            r = json_object_new_uint64(json_object_get_uint64(v));
        else
            r = json_object_new_int64(json_object_get_int64(v));
        break;
    case json_type_double:
        r = json_object_new_double(json_object_get_double(v));
        break;
    case json_type_boolean:
        r = json_object_new_boolean(json_object_get_boolean(v));
        break;
    }
    if (!r)
        *failed = 1;
    return r;
}

struct validate_hasher {
    EVP_MAC_CTX *keyed; /* HMAC-SHA256 initialised with the key, copied per hash */
};

struct validate_hasher *validate_hasher_new(const unsigned char *key, size_t keylen)
{
    struct validate_hasher *h = key && keylen ? calloc(1, sizeof(*h)) : NULL;
    EVP_MAC *mac = h ? EVP_MAC_fetch(NULL, "HMAC", NULL) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (mac)
        h->keyed = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context holds its own reference */
    if (!h || !h->keyed || EVP_MAC_init(h->keyed, key, keylen, params) != 1) {
        validate_hasher_free(h);
        return NULL;
    }
    return h;
}

void validate_hasher_free(struct validate_hasher *h)
{
    if (!h)
        return;
    EVP_MAC_CTX_free(h->keyed);
    free(h);
}

int validate_request_hash(json_object *root, const struct validate_hasher *h, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    int failed = 0, rc = -1;
    if (!root || !h || !out)
        return -1;
    json_object *canon = canonical(root, 1, &failed);
    if (failed || !canon) {
        json_object_put(canon);
        return -1;
    }
    const char *text = json_object_to_json_string_ext(canon, JSON_C_TO_STRING_PLAIN |
                                                                 JSON_C_TO_STRING_NOSLASHESCAPE);
    EVP_MAC_CTX *c = text ? EVP_MAC_CTX_dup(h->keyed) : NULL;
    if (c && EVP_MAC_update(c, (const unsigned char *)text, strlen(text)) == 1 &&
        EVP_MAC_final(c, mac, &maclen, sizeof(mac)) == 1 && maclen == 32) {
        for (size_t i = 0; i < maclen; i++) {
            out[2 * i] = hex[mac[i] >> 4];
            out[2 * i + 1] = hex[mac[i] & 0xF];
        }
        out[64] = '\0';
        rc = 0;
    }
    EVP_MAC_CTX_free(c);
    json_object_put(canon);
    return rc;
}
