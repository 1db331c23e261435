/* Unit tests for lib/validate: every rule of POST /v1/cards (api.md §2 and
 * the seeds' limits), the biz_content mapping, the idempotency hash and the
 * path-parameter checks. Expected values come from the spec, the seeds and
 * the Node SDK vector, never from the code's own output. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "validate.h"
#include "support.h"

/* The api.md example request, with real values where it shows "…". */
static const char *const EXAMPLE =
    "{\n"
    "  \"out_serial_no\": \"201606270000001\",\n"
    "  \"card_template_id\": \"20170308000000000058101000300045\",\n"
    "  \"user_id\": \"2088302463082075\",\n"
    "  \"auth_token\": \"composeB1a2b3c\",\n"
    "  \"app_auth_token\": \"201708BB28623ce3d10f4f62875e9ef5cbeebX07\",\n"
    "  \"card\": {\n"
    "    \"external_card_no\": \"EXT0001\",\n"
    "    \"open_date\": \"2014-02-20 21:20:46\",\n"
    "    \"valid_date\": \"2020-02-20 21:20:46\",\n"
    "    \"level\": \"VIP1\", \"point\": \"88\", \"balance\": \"124.89\",\n"
    "    \"template_id\": \"20170308000000000058101000300045\",\n"
    "    \"front_image_id\": \"9fxnkgt0QFmqKAl5V2BqxQAAACMAAQED\",\n"
    "    \"front_text_list\": [{\"label\": \"专业\", \"value\": \"金融贸易\"}],\n"
    "    \"mdcode_info\": {\"code_status\": \"SUCCESS\", \"code_value\": \"1KFCDY0002\",\n"
    "                    \"expire_time\": \"2017-06-09 16:25:53\", \"time_stamp\": 1496996459}\n"
    "  },\n"
    "  \"member\": {\"name\": \"Lee\", \"gender\": \"MALE\", \"birth\": \"2016-06-27\", \"cell\": "
    "\"13000000000\"},\n"
    "  \"open_card_channel\": \"20161534000000000008863\",\n"
    "  \"open_card_channel_id\": \"2088123123123123\"\n"
    "}";

/* Only what api.md marks required. */
static const char *const MINIMAL =
    "{\"out_serial_no\":\"1\",\"card_template_id\":\"T1\",\"user_id\":\"2088000000000001\","
    "\"card\":{\"open_date\":\"2024-01-01 00:00:00\",\"valid_date\":\"2034-01-01 00:00:00\"}}";

/* ---- helpers ---- */

static json_object *parse(const char *text)
{
    json_object *o = json_tokener_parse(text);

    ck_assert_msg(o != NULL, "test JSON does not parse: %s", text);
    return o;
}

/* n copies of unit, malloc'd. */
static char *rep(const char *unit, size_t n)
{
    size_t len = strlen(unit), i;
    char *s = malloc(len * n + 1);

    ck_assert_ptr_nonnull(s);
    for (i = 0; i < n; i++)
        memcpy(s + i * len, unit, len);
    s[len * n] = '\0';
    return s;
}

#define DELETE ((json_object *)-1)

/* Sets (or, with DELETE, removes) the value at path ("card.point",
 * "card.front_text_list[1]", "card.front_text_list[0].label"); val is
 * consumed, NULL sets JSON null. */
static void set_at(json_object *root, const char *path, json_object *val)
{
    char buf[256], *tok, *next, *br;
    json_object *cur = root;
    int idx;

    snprintf(buf, sizeof(buf), "%s", path);
    for (tok = buf;; tok = next) {
        next = strchr(tok, '.');
        if (next)
            *next++ = '\0';
        br = strchr(tok, '[');
        idx = -1;
        if (br) {
            *br = '\0';
            idx = atoi(br + 1);
        }
        if (!next && idx < 0) {
            if (val == DELETE)
                json_object_object_del(cur, tok);
            else
                json_object_object_add(cur, tok, val);
            return;
        }
        cur = json_object_object_get(cur, tok);
        ck_assert_msg(cur != NULL, "no %s in %s", tok, path);
        if (idx >= 0) {
            if (!next) {
                ck_assert(val != DELETE);
                json_object_array_put_idx(cur, (size_t)idx, val);
                return;
            }
            cur = json_object_array_get_idx(cur, (size_t)idx);
            ck_assert_msg(cur != NULL, "no row %d in %s", idx, path);
        }
    }
}

static void set_str(json_object *root, const char *path, const char *s)
{
    set_at(root, path, json_object_new_string(s));
}

/* Sets path to the JSON value text (e.g. "88", "\"x\"", "[1]"). */
static void set_json(json_object *root, const char *path, const char *json)
{
    set_at(root, path, strcmp(json, "null") == 0 ? NULL : parse(json));
}

static void expect_ok_root(json_object *root, const char *what)
{
    struct validate_card_open req;
    struct validate_error err;
    int rc = validate_card_open(root, &req, &err);

    ck_assert_msg(rc == 0, "%s: refused: field '%s': %s", what, err.field, err.message);
    json_object_put(root);
}

/* Refused, with this exact field; message exact when given, else it must at
 * least name the field. */
static void expect_fail_root(json_object *root, const char *field, const char *message,
                             const char *what)
{
    struct validate_card_open req;
    struct validate_error err;
    int rc = validate_card_open(root, &req, &err);

    ck_assert_msg(rc == -1, "%s: accepted, expected refusal on %s", what, field);
    ck_assert_msg(strcmp(err.field, field) == 0, "%s: field '%s', expected '%s' (%s)", what,
                  err.field, field, err.message);
    if (message)
        ck_assert_str_eq(err.message, message);
    else
        ck_assert_msg(strstr(err.message, field) == err.message && err.message[strlen(field)],
                      "%s: message '%s' does not start with the field", what, err.message);
    json_object_put(root);
}

/* The example with path set to a string value: accepted or refused. */
static void str_ok(const char *path, const char *s)
{
    json_object *r = parse(EXAMPLE);

    set_str(r, path, s);
    expect_ok_root(r, s);
}

static void str_bad(const char *path, const char *s, const char *field)
{
    json_object *r = parse(EXAMPLE);

    set_str(r, path, s);
    expect_fail_root(r, field ? field : path, NULL, s);
}

static void json_ok(const char *path, const char *json)
{
    json_object *r = parse(EXAMPLE);

    set_json(r, path, json);
    expect_ok_root(r, json);
}

static void json_bad(const char *path, const char *json, const char *field)
{
    json_object *r = parse(EXAMPLE);

    set_json(r, path, json);
    expect_fail_root(r, field ? field : path, NULL, json);
}

static void removed_bad(const char *path, const char *field)
{
    json_object *r = parse(EXAMPLE);

    set_at(r, path, DELETE);
    expect_fail_root(r, field ? field : path, NULL, path);
}

static void removed_ok(const char *path)
{
    json_object *r = parse(EXAMPLE);

    set_at(r, path, DELETE);
    expect_ok_root(r, path);
}

/* A string field of at most max characters: max passes, max+1 does not,
 * counted in characters (a 3-byte Chinese character counts once). */
static void limit(const char *path, size_t max)
{
    char *s = rep("a", max), *t = rep("a", max + 1), *c = rep("中", max), *d = rep("中", max + 1);
    char msg[256];

    str_ok(path, s);
    str_ok(path, c);
    str_bad(path, t, NULL);
    str_bad(path, d, NULL);
    {
        json_object *r = parse(EXAMPLE);
        struct validate_error err;

        set_str(r, path, t);
        ck_assert_int_eq(validate_card_open(r, NULL, &err), -1);
        snprintf(msg, sizeof(msg), "%s must be at most %zu characters", path, max);
        ck_assert_str_eq(err.message, msg);
        json_object_put(r);
    }
    free(s), free(t), free(c), free(d);
}

/* Wrong JSON types and empty values of a string field. */
static void string_types(const char *path)
{
    json_bad(path, "88", NULL);
    json_bad(path, "true", NULL);
    json_bad(path, "null", NULL);
    json_bad(path, "[\"a\"]", NULL);
    json_bad(path, "{}", NULL);
    str_bad(path, "", NULL);
}

/* ---- the example and the overall shape ---- */

START_TEST(example_passes_and_fills_out)
{
    json_object *r = parse(EXAMPLE);
    struct validate_card_open req;
    struct validate_error err;

    ck_assert_int_eq(validate_card_open(r, &req, &err), 0);
    ck_assert_ptr_eq(req.root, r);
    ck_assert_str_eq(req.out_serial_no, "201606270000001");
    ck_assert_str_eq(req.card_template_id, "20170308000000000058101000300045");
    ck_assert_str_eq(req.user_id, "2088302463082075");
    ck_assert_str_eq(req.auth_token, "composeB1a2b3c");
    ck_assert_str_eq(req.app_auth_token, "201708BB28623ce3d10f4f62875e9ef5cbeebX07");
    ck_assert_str_eq(req.external_card_no, "EXT0001");
    ck_assert_str_eq(req.open_card_channel, "20161534000000000008863");
    ck_assert_str_eq(req.open_card_channel_id, "2088123123123123");
    json_object_put(r);
}
END_TEST

START_TEST(minimal_passes_absent_are_null)
{
    json_object *r = parse(MINIMAL);
    struct validate_card_open req;
    struct validate_error err;

    ck_assert_int_eq(validate_card_open(r, &req, &err), 0);
    ck_assert_ptr_null(req.auth_token);
    ck_assert_ptr_null(req.app_auth_token);
    ck_assert_ptr_null(req.external_card_no);
    ck_assert_ptr_null(req.open_card_channel);
    ck_assert_ptr_null(req.open_card_channel_id);
    ck_assert_str_eq(req.out_serial_no, "1");
    json_object_put(r);
}
END_TEST

START_TEST(root_must_be_object)
{
    struct validate_error err;
    struct validate_card_open req;
    json_object *a = parse("[1]"), *s = json_object_new_string("x");

    ck_assert_int_eq(validate_card_open(a, &req, &err), -1);
    ck_assert_str_eq(err.field, "");
    ck_assert(err.message[0] != '\0');
    ck_assert_int_eq(validate_card_open(s, &req, &err), -1);
    ck_assert_str_eq(err.field, "");
    ck_assert_int_eq(validate_card_open(NULL, &req, &err), -1);
    ck_assert_str_eq(err.field, "");
    json_object_put(a);
    json_object_put(s);
}
END_TEST

START_TEST(unknown_fields_everywhere)
{
    json_object *r;

    r = parse(EXAMPLE);
    set_str(r, "card.colour", "red");
    expect_fail_root(r, "card.colour", "unknown field card.colour", "card.colour");

    r = parse(EXAMPLE);
    set_str(r, "colour", "red");
    expect_fail_root(r, "colour", "unknown field colour", "colour");

    r = parse(EXAMPLE);
    set_str(r, "card.mdcode_info.x", "1");
    expect_fail_root(r, "card.mdcode_info.x", "unknown field card.mdcode_info.x", "md");

    r = parse(EXAMPLE);
    set_str(r, "card.front_text_list[0].x", "1");
    expect_fail_root(r, "card.front_text_list[0].x", "unknown field card.front_text_list[0].x",
                     "row");

    r = parse(EXAMPLE);
    set_str(r, "member.gende", "MALE"); /* Alipay's spelling is not the API's */
    expect_fail_root(r, "member.gende", "unknown field member.gende", "member");

    /* biz_card_no is Alipay's answer, not part of an open request */
    r = parse(EXAMPLE);
    set_str(r, "card.biz_card_no", "000001");
    expect_fail_root(r, "card.biz_card_no", "unknown field card.biz_card_no", "biz_card_no");

    /* Alipay's own names are not accepted at the top level either */
    r = parse(EXAMPLE);
    set_json(r, "card_ext_info", "{}");
    expect_fail_root(r, "card_ext_info", "unknown field card_ext_info", "card_ext_info");
}
END_TEST

START_TEST(unknown_field_name_is_made_printable)
{
    json_object *r = parse(EXAMPLE);
    json_object *card = json_object_object_get(r, "card");
    char *longkey = rep("k", 300);
    struct validate_error err;

    json_object_object_add(card, "a\x01z", json_object_new_string("x"));
    ck_assert_int_eq(validate_card_open(r, NULL, &err), -1);
    ck_assert_str_eq(err.field, "card.a?z");
    json_object_put(r);

    r = parse(EXAMPLE);
    json_object_object_add(r, longkey, json_object_new_int(1));
    ck_assert_int_eq(validate_card_open(r, NULL, &err), -1);
    ck_assert_uint_lt(strlen(err.field), sizeof(err.field));
    ck_assert(strncmp(err.field, "kkkk", 4) == 0);
    ck_assert(strstr(err.field, "...") != NULL);
    json_object_put(r);
    free(longkey);
}
END_TEST

/* ---- required fields ---- */

START_TEST(required_fields)
{
    removed_bad("out_serial_no", NULL);
    removed_bad("card_template_id", NULL);
    removed_bad("user_id", NULL);
    removed_bad("card", NULL);
    removed_bad("card.open_date", NULL);
    removed_bad("card.valid_date", NULL);
    removed_bad("card.mdcode_info.code_status", NULL);
    removed_bad("card.mdcode_info.time_stamp", NULL);
    {
        json_object *r = parse(EXAMPLE);

        set_at(r, "user_id", DELETE);
        expect_fail_root(r, "user_id", "user_id is required", "user_id");
    }
}
END_TEST

START_TEST(optional_fields_may_be_absent)
{
    removed_ok("auth_token");
    removed_ok("app_auth_token");
    removed_ok("member");
    removed_ok("open_card_channel");
    removed_ok("open_card_channel_id");
    removed_ok("card.external_card_no");
    removed_ok("card.level");
    removed_ok("card.point");
    removed_ok("card.balance");
    removed_ok("card.template_id");
    removed_ok("card.mdcode_info");
    removed_ok("card.front_text_list");
    removed_ok("card.front_image_id");
    removed_ok("card.front_text_list[0].label");
    removed_ok("card.front_text_list[0].value");
    removed_ok("member.name");
    removed_ok("member.gender");
    removed_ok("member.birth");
    removed_ok("member.cell");
}
END_TEST

/* ---- lengths and types ---- */

START_TEST(string_limits)
{
    limit("out_serial_no", 64);
    limit("card_template_id", 32);
    limit("auth_token", 128);
    limit("app_auth_token", 40);
    limit("open_card_channel", 64);
    limit("open_card_channel_id", 64);
    limit("card.external_card_no", 64);
    limit("card.level", 64);
    limit("card.template_id", 32);
    limit("card.front_image_id", 1024);
    limit("card.mdcode_info.code_value", 128);
    limit("card.front_text_list[0].label", 4);
    limit("card.front_text_list[0].value", 32);
    limit("member.name", 64);
    limit("member.cell", 32);
}
END_TEST

START_TEST(string_types_and_empty)
{
    static const char *const paths[] = {
        "out_serial_no",
        "card_template_id",
        "user_id",
        "auth_token",
        "app_auth_token",
        "open_card_channel",
        "open_card_channel_id",
        "card.external_card_no",
        "card.open_date",
        "card.valid_date",
        "card.level",
        "card.point",
        "card.balance",
        "card.template_id",
        "card.front_image_id",
        "card.mdcode_info.code_status",
        "card.mdcode_info.code_value",
        "card.mdcode_info.expire_time",
        "card.front_text_list[0].label",
        "card.front_text_list[0].value",
        "member.name",
        "member.gender",
        "member.birth",
        "member.cell",
    };
    size_t i;

    for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        string_types(paths[i]);
}
END_TEST

START_TEST(label_counts_characters)
{
    json_object *r = parse(EXAMPLE);

    str_ok("card.front_text_list[0].label", "专业课程");
    str_ok("card.front_text_list[0].label", "Majr");
    set_str(r, "card.front_text_list[0].label", "专业课程A");
    expect_fail_root(r, "card.front_text_list[0].label",
                     "card.front_text_list[0].label must be at most 4 characters", "label");
    /* 4 characters of 4 bytes each: 16 bytes, still 4 characters */
    str_ok("card.front_text_list[0].label", "😀😀😀😀");
    str_bad("card.front_text_list[0].label", "Major", NULL);
}
END_TEST

START_TEST(bad_text_refused)
{
    json_object *r;

    str_bad("card.level", "\xff", NULL);         /* not UTF-8 */
    str_bad("card.level", "a\xe4\xb8", NULL);    /* truncated */
    str_bad("card.level", "\xc0\x80", NULL);     /* overlong NUL */
    str_bad("card.level", "\xed\xa0\x80", NULL); /* surrogate */
    str_bad("member.name", "Lee\nSmith", NULL);  /* control character */
    str_bad("member.name", "Lee\x7f", NULL);     /* DEL */
    str_bad("out_serial_no", "12\t3", NULL);
    /* an embedded \u0000 that C strings would cut */
    r = parse(EXAMPLE);
    set_at(r, "card.level", json_object_new_string_len("VIP\0x", 5));
    expect_fail_root(r, "card.level", NULL, "NUL");
    str_ok("member.name", "李 四");
}
END_TEST

/* ---- formats ---- */

START_TEST(user_id_rule)
{
    json_object *r = parse(EXAMPLE);

    str_ok("user_id", "2088000000000000");
    set_str(r, "user_id", "2089302463082075");
    expect_fail_root(r, "user_id", "user_id must be 16 digits starting with 2088", "2089");
    str_bad("user_id", "208830246308207", NULL);   /* 15 */
    str_bad("user_id", "20883024630820755", NULL); /* 17 */
    str_bad("user_id", "208830246308207a", NULL);
    str_bad("user_id", " 2088302463082075", NULL);
    str_bad("user_id", "２０８８３０２４６３０８２０７５", NULL); /* full-width digits */
    json_bad("user_id", "2088302463082075", NULL);                /* a number, not a string */

    ck_assert_int_eq(validate_user_id("2088302463082075"), 0);
    ck_assert_int_eq(validate_user_id("2088123123123123"), 0);
    ck_assert_int_eq(validate_user_id("1088302463082075"), -1);
    ck_assert_int_eq(validate_user_id("2088"), -1);
    ck_assert_int_eq(validate_user_id(""), -1);
    ck_assert_int_eq(validate_user_id(NULL), -1);
    ck_assert_int_eq(validate_user_id("2088-02463082075"), -1);
}
END_TEST

static void datetime_rules(const char *path)
{
    str_ok(path, "2024-02-29 12:00:00");
    str_ok(path, "2000-02-29 00:00:00");
    str_ok(path, "2023-12-31 23:59:59");
    str_ok(path, "2023-04-30 00:00:00");
    str_bad(path, "2023-02-29 12:00:00", NULL);
    str_bad(path, "1900-02-29 12:00:00", NULL);
    str_bad(path, "2023-04-31 00:00:00", NULL);
    str_bad(path, "2023-13-01 00:00:00", NULL);
    str_bad(path, "2023-00-10 00:00:00", NULL);
    str_bad(path, "2023-01-00 00:00:00", NULL);
    str_bad(path, "2023-01-32 00:00:00", NULL);
    str_bad(path, "0000-01-01 00:00:00", NULL);
    str_bad(path, "2023-01-01 24:00:00", NULL);
    str_bad(path, "2023-01-01 23:60:00", NULL);
    str_bad(path, "2023-01-01 23:59:60", NULL);
    str_bad(path, "2023-01-01T00:00:00", NULL);
    str_bad(path, "2023-1-01 00:00:00", NULL);
    str_bad(path, "2023-01-01 0:00:00", NULL);
    str_bad(path, "2023-01-01", NULL);
    str_bad(path, "2023-01-01 00:00:00 ", NULL);
    str_bad(path, "2023-01-01 00:00", NULL);
    str_bad(path, "2023/01/01 00:00:00", NULL);
    str_bad(path, "2023-01-01 00:00:0a", NULL);
    str_bad(path, "yesterday", NULL);
}

START_TEST(datetimes)
{
    json_object *r = parse(EXAMPLE);

    datetime_rules("card.open_date");
    datetime_rules("card.valid_date");
    datetime_rules("card.mdcode_info.expire_time");
    set_str(r, "card.open_date", "2023-02-29 21:20:46");
    expect_fail_root(r, "card.open_date",
                     "card.open_date must be a real date and time in the form yyyy-MM-dd HH:mm:ss",
                     "2023-02-29");
}
END_TEST

START_TEST(birth_date)
{
    str_ok("member.birth", "2016-06-27");
    str_ok("member.birth", "2024-02-29");
    str_bad("member.birth", "2023-02-29", NULL);
    str_bad("member.birth", "2016-06-31", NULL);
    str_bad("member.birth", "2016-06-27 00:00:00", NULL);
    str_bad("member.birth", "2016-6-27", NULL);
    str_bad("member.birth", "20160627", NULL);
    str_bad("member.birth", "27/06/2016", NULL);
}
END_TEST

START_TEST(point_rule)
{
    static const char *const good[] = {"88", "0", "0.5", "124.89", "-20", "-0.25", "1000000"};
    static const char *const bad[] = {"1.234", "abc", "1e3",  "-",     "1.",  ".5",  "+1",  " 1",
                                      "1 ",    "1,5", "0x10", "1.2.3", "--1", "NaN", "８８"};
    json_object *r = parse(EXAMPLE);
    char *max = rep("9", 64), *over = rep("9", 65);
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        str_ok("card.point", good[i]);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        str_bad("card.point", bad[i], NULL);
    str_bad("card.point", "", NULL);
    json_bad("card.point", "88", NULL);
    set_str(r, "card.point", "1.234");
    expect_fail_root(r, "card.point", "card.point must be a number with at most 2 decimals",
                     "1.234");
    str_ok("card.point", max);
    str_bad("card.point", over, NULL);
    free(max);
    free(over);
}
END_TEST

START_TEST(balance_rule)
{
    static const char *const good[] = {"124.89", "0", "0.00", "88", "5.5"};
    static const char *const bad[] = {"-1", "-0.01", "1.234", "abc", "1e3", "-", "1.", "+1"};
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        str_ok("card.balance", good[i]);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        str_bad("card.balance", bad[i], NULL);
    json_bad("card.balance", "124.89", NULL);
}
END_TEST

START_TEST(gender_rule)
{
    json_object *r = parse(EXAMPLE);

    str_ok("member.gender", "MALE");
    str_ok("member.gender", "FEMALE");
    str_bad("member.gender", "male", NULL);
    str_bad("member.gender", "M", NULL);
    str_bad("member.gender", "OTHER", NULL);
    set_str(r, "member.gender", "UNKNOWN");
    expect_fail_root(r, "member.gender", "member.gender must be MALE or FEMALE", "gender");
    json_bad("member", "[]", NULL);
    json_bad("member", "\"Lee\"", NULL);
    json_ok("member", "{}");
}
END_TEST

/* ---- nested structures ---- */

START_TEST(card_must_be_object)
{
    json_bad("card", "\"x\"", NULL);
    json_bad("card", "[]", NULL);
    json_bad("card", "null", NULL);
    json_bad("card", "{}", "card.open_date");
}
END_TEST

START_TEST(front_text_list_rows)
{
    static const char *const four =
        "[{\"label\":\"专业\",\"value\":\"金融贸易\"},{\"label\":\"a\"},"
        "{\"value\":\"b\"},{\"label\":\"学院\",\"value\":\"新闻学院\"}]";
    static const char *const five = "[{\"label\":\"a\"},{\"label\":\"b\"},{\"label\":\"c\"},"
                                    "{\"label\":\"d\"},{\"label\":\"e\"}]";
    json_object *r = parse(EXAMPLE);

    json_ok("card.front_text_list", four);
    json_ok("card.front_text_list", "[]");
    set_json(r, "card.front_text_list", five);
    expect_fail_root(r, "card.front_text_list", "card.front_text_list must have at most 4 rows",
                     "five rows");
    json_bad("card.front_text_list", "{\"label\":\"a\"}", NULL);
    json_bad("card.front_text_list", "\"a\"", NULL);
    json_bad("card.front_text_list", "[{\"label\":\"a\"},\"b\"]", "card.front_text_list[1]");
    json_bad("card.front_text_list", "[{\"label\":\"a\"},{\"label\":\"b\"},{\"value\":7}]",
             "card.front_text_list[2].value");
    json_bad("card.front_text_list", "[{},{},{\"label\":\"12345\"}]",
             "card.front_text_list[2].label");
}
END_TEST

START_TEST(mdcode_info_rules)
{
    json_object *r;

    json_bad("card.mdcode_info", "\"SUCCESS\"", NULL);
    str_ok("card.mdcode_info.code_status", "FAIL_RETRY");
    str_ok("card.mdcode_info.code_status", "FAIL_NOT_RETRY");
    str_bad("card.mdcode_info.code_status", "success", NULL);
    str_bad("card.mdcode_info.code_status", "FAIL", NULL);
    /* code_value and expire_time are required only when SUCCESS */
    removed_bad("card.mdcode_info.code_value", NULL);
    removed_bad("card.mdcode_info.expire_time", NULL);
    r = parse(EXAMPLE);
    set_at(r, "card.mdcode_info.code_value", DELETE);
    expect_fail_root(r, "card.mdcode_info.code_value",
                     "card.mdcode_info.code_value is required when code_status is SUCCESS",
                     "code_value");
    json_ok("card.mdcode_info", "{\"code_status\":\"FAIL_RETRY\",\"time_stamp\":1496996459}");
    json_ok("card.mdcode_info", "{\"code_status\":\"FAIL_NOT_RETRY\",\"time_stamp\":0}");
    json_bad("card.mdcode_info", "{\"code_status\":\"FAIL_RETRY\"}", "card.mdcode_info.time_stamp");
}
END_TEST

START_TEST(time_stamp_rule)
{
    json_ok("card.mdcode_info.time_stamp", "0");
    json_ok("card.mdcode_info.time_stamp", "1496996459");
    json_ok("card.mdcode_info.time_stamp", "1496996459000");
    json_ok("card.mdcode_info.time_stamp", "9223372036854775807");
    json_bad("card.mdcode_info.time_stamp", "-1", NULL);
    json_bad("card.mdcode_info.time_stamp", "9223372036854775808", NULL);
    json_bad("card.mdcode_info.time_stamp", "18446744073709551615", NULL);
    json_bad("card.mdcode_info.time_stamp", "123456789012345678901", NULL); /* 21 digits */
    json_bad("card.mdcode_info.time_stamp", "1496996459.5", NULL);
    json_bad("card.mdcode_info.time_stamp", "1.0", NULL);
    json_bad("card.mdcode_info.time_stamp", "1e3", NULL);
    json_bad("card.mdcode_info.time_stamp", "\"1496996459\"", NULL);
    json_bad("card.mdcode_info.time_stamp", "null", NULL);
    json_bad("card.mdcode_info.time_stamp", "true", NULL);
}
END_TEST

/* ---- path parameters and UTF-8 ---- */

START_TEST(card_no_rule)
{
    struct validate_error err;
    char *max = rep("9", 32), *over = rep("9", 33);

    ck_assert_int_eq(validate_card_no("000001", &err, "biz_card_no"), 0);
    ck_assert_int_eq(validate_card_no(max, &err, "biz_card_no"), 0);
    ck_assert_int_eq(validate_card_no("a-B_c.9~!", &err, "code"), 0);
    ck_assert_int_eq(validate_card_no(over, &err, "biz_card_no"), -1);
    ck_assert_str_eq(err.field, "biz_card_no");
    ck_assert(err.message[0] != '\0');
    ck_assert_int_eq(validate_card_no("", &err, "code"), -1);
    ck_assert_str_eq(err.field, "code");
    ck_assert_int_eq(validate_card_no(NULL, &err, "code"), -1);
    ck_assert_str_eq(err.field, "code");
    ck_assert_int_eq(validate_card_no("12 34", &err, "code"), -1);
    ck_assert_int_eq(validate_card_no("1234\n", &err, "code"), -1);
    ck_assert_int_eq(validate_card_no("12\x7f", &err, "code"), -1);
    ck_assert_int_eq(validate_card_no("卡号", &err, "code"), -1);
    ck_assert_int_eq(validate_card_no("x", NULL, "code"), 0);
    ck_assert_int_eq(validate_card_no("\t", NULL, "code"), -1);
    free(max);
    free(over);
}
END_TEST

START_TEST(utf8_counting)
{
    int ok = -1;

    ck_assert_uint_eq(validate_utf8_chars("", &ok), 0);
    ck_assert_int_eq(ok, 1);
    ck_assert_uint_eq(validate_utf8_chars("Major", &ok), 5);
    ck_assert_int_eq(ok, 1);
    ck_assert_uint_eq(validate_utf8_chars("专业课程", &ok), 4);
    ck_assert_int_eq(ok, 1);
    ck_assert_uint_eq(validate_utf8_chars("专业课程A", &ok), 5);
    ck_assert_uint_eq(validate_utf8_chars("é😀", &ok), 2);
    ck_assert_int_eq(ok, 1);
    ck_assert_uint_eq(validate_utf8_chars("\xf4\x8f\xbf\xbf", &ok), 1); /* U+10FFFF */
    ck_assert_int_eq(ok, 1);
    validate_utf8_chars("\xf4\x90\x80\x80", &ok); /* above U+10FFFF */
    ck_assert_int_eq(ok, 0);
    validate_utf8_chars("a\x80", &ok); /* lone continuation */
    ck_assert_int_eq(ok, 0);
    validate_utf8_chars("\xc1\xbf", &ok); /* overlong */
    ck_assert_int_eq(ok, 0);
    validate_utf8_chars("\xe0\x80\xaf", &ok); /* overlong '/' */
    ck_assert_int_eq(ok, 0);
    validate_utf8_chars("\xed\xbf\xbf", &ok); /* surrogate */
    ck_assert_int_eq(ok, 0);
    validate_utf8_chars("\xe4\xb8", &ok); /* truncated */
    ck_assert_int_eq(ok, 0);
    validate_utf8_chars("\xf8\x88\x80\x80\x80", &ok); /* 5-byte form */
    ck_assert_int_eq(ok, 0);
    validate_utf8_chars("\xfe", &ok);
    ck_assert_int_eq(ok, 0);
    ck_assert_uint_eq(validate_utf8_chars("abc", NULL), 3);
}
END_TEST

/* ---- biz_content ---- */

static char *biz_of(const char *request)
{
    json_object *r = parse(request);
    struct validate_card_open req;
    struct validate_error err;
    char *biz;

    ck_assert_msg(validate_card_open(r, &req, &err) == 0, "%s: %s", err.field, err.message);
    biz = validate_card_open_biz(&req);
    ck_assert_ptr_nonnull(biz);
    json_object_put(r);
    return biz;
}

/* Written by hand from the seed's Java sample (001, card.open) with the
 * api.md example's values: seed key order, gende, card_user_info, no
 * biz_card_no, no auth tokens. */
START_TEST(biz_of_example)
{
    static const char *const expected =
        "{\"out_serial_no\":\"201606270000001\","
        "\"card_template_id\":\"20170308000000000058101000300045\","
        "\"card_user_info\":{\"user_uni_id\":\"2088302463082075\",\"user_uni_id_type\":\"UID\"},"
        "\"card_ext_info\":{\"external_card_no\":\"EXT0001\","
        "\"open_date\":\"2014-02-20 21:20:46\",\"valid_date\":\"2020-02-20 21:20:46\","
        "\"level\":\"VIP1\",\"point\":\"88\",\"balance\":\"124.89\","
        "\"template_id\":\"20170308000000000058101000300045\","
        "\"mdcode_info\":{\"code_status\":\"SUCCESS\",\"code_value\":\"1KFCDY0002\","
        "\"expire_time\":\"2017-06-09 16:25:53\",\"time_stamp\":1496996459},"
        "\"front_text_list\":[{\"label\":\"专业\",\"value\":\"金融贸易\"}],"
        "\"front_image_id\":\"9fxnkgt0QFmqKAl5V2BqxQAAACMAAQED\"},"
        "\"member_ext_info\":{\"name\":\"Lee\",\"gende\":\"MALE\",\"birth\":\"2016-06-27\","
        "\"cell\":\"13000000000\"},"
        "\"open_card_channel\":\"20161534000000000008863\","
        "\"open_card_channel_id\":\"2088123123123123\"}";
    char *biz = biz_of(EXAMPLE);

    ck_assert_str_eq(biz, expected);
    free(biz);
}
END_TEST

START_TEST(biz_order_does_not_follow_the_request)
{
    /* the example's fields in reverse order: the biz_content is the same */
    static const char *const shuffled =
        "{\"open_card_channel_id\":\"2088123123123123\","
        "\"open_card_channel\":\"20161534000000000008863\","
        "\"member\":{\"cell\":\"13000000000\",\"birth\":\"2016-06-27\",\"gender\":\"MALE\","
        "\"name\":\"Lee\"},"
        "\"card\":{\"mdcode_info\":{\"time_stamp\":1496996459,\"expire_time\":\"2017-06-09 "
        "16:25:53\",\"code_value\":\"1KFCDY0002\",\"code_status\":\"SUCCESS\"},"
        "\"front_text_list\":[{\"value\":\"金融贸易\",\"label\":\"专业\"}],"
        "\"front_image_id\":\"9fxnkgt0QFmqKAl5V2BqxQAAACMAAQED\","
        "\"template_id\":\"20170308000000000058101000300045\",\"balance\":\"124.89\","
        "\"point\":\"88\",\"level\":\"VIP1\",\"valid_date\":\"2020-02-20 21:20:46\","
        "\"open_date\":\"2014-02-20 21:20:46\",\"external_card_no\":\"EXT0001\"},"
        "\"app_auth_token\":\"x\",\"auth_token\":\"y\",\"user_id\":\"2088302463082075\","
        "\"card_template_id\":\"20170308000000000058101000300045\","
        "\"out_serial_no\":\"201606270000001\"}";
    char *a = biz_of(EXAMPLE), *b = biz_of(shuffled);

    ck_assert_str_eq(a, b);
    free(a);
    free(b);
}
END_TEST

START_TEST(biz_of_minimal_leaves_absent_out)
{
    static const char *const expected =
        "{\"out_serial_no\":\"1\",\"card_template_id\":\"T1\","
        "\"card_user_info\":{\"user_uni_id\":\"2088000000000001\",\"user_uni_id_type\":\"UID\"},"
        "\"card_ext_info\":{\"open_date\":\"2024-01-01 00:00:00\","
        "\"valid_date\":\"2034-01-01 00:00:00\"}}";
    char *biz = biz_of(MINIMAL);

    ck_assert_str_eq(biz, expected);
    ck_assert_ptr_null(strstr(biz, "auth_token"));
    free(biz);
}
END_TEST

START_TEST(biz_partial_member_and_mdcode)
{
    static const char *const request =
        "{\"out_serial_no\":\"S/1\",\"card_template_id\":\"T1\",\"user_id\":\"2088000000000001\","
        "\"auth_token\":\"tok\",\"member\":{\"gender\":\"FEMALE\"},"
        "\"card\":{\"open_date\":\"2024-01-01 00:00:00\",\"valid_date\":\"2034-01-01 00:00:00\","
        "\"mdcode_info\":{\"time_stamp\":0,\"code_status\":\"FAIL_RETRY\"}}}";
    static const char *const expected =
        "{\"out_serial_no\":\"S/1\",\"card_template_id\":\"T1\","
        "\"card_user_info\":{\"user_uni_id\":\"2088000000000001\",\"user_uni_id_type\":\"UID\"},"
        "\"card_ext_info\":{\"open_date\":\"2024-01-01 00:00:00\","
        "\"valid_date\":\"2034-01-01 00:00:00\","
        "\"mdcode_info\":{\"code_status\":\"FAIL_RETRY\",\"time_stamp\":0}},"
        "\"member_ext_info\":{\"gende\":\"FEMALE\"}}";
    char *biz = biz_of(request);

    ck_assert_str_eq(biz, expected);
    free(biz);
}
END_TEST

/* The Node SDK vector: a request that means its biz_content must map to it
 * byte for byte (raw UTF-8, '/' unescaped, '"' escaped). */
START_TEST(biz_matches_sdk_vector)
{
    static const char *const request =
        "{\"member\":{\"name\":\"张三\",\"gender\":\"MALE\",\"birth\":\"1990-01-01\","
        "\"cell\":\"13000000000\"},"
        "\"user_id\":\"2088102146225135\","
        "\"out_serial_no\":\"20140724030750000001\","
        "\"card_template_id\":\"20170308000000000058101000300045\","
        "\"auth_token\":\"composeBd1a3b7e0b5b4a0d8f1c2e3f4a5b6c7X12\","
        "\"app_auth_token\":\"201708BB28623ce3d10f4f62875e9ef5cbeebX07\","
        "\"card\":{\"balance\":\"124.89\",\"external_card_no\":\"EXT0001\","
        "\"open_date\":\"2014-07-24 03:07:50\",\"valid_date\":\"2020-02-20 23:59:59\","
        "\"level\":\"VIP1\",\"point\":\"88\"},"
        "\"open_card_channel\":\"专业\\/金融贸易\","
        "\"open_card_channel_id\":\"\\u95e8\\u5e97\\\"A\\\"&B=1\"}";
    char path[1024];
    FILE *f;
    char *text, *biz;
    long len;
    json_object *vec, *params, *expected;

    snprintf(path, sizeof(path), "%s/v1_card_open_rsa2.json", CARDGATE_VECTORS_DIR);
    f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    text = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(fread(text, 1, (size_t)len, f), (size_t)len);
    text[len] = '\0';
    fclose(f);
    vec = parse(text);
    ck_assert(json_object_object_get_ex(vec, "params_signed", &params));
    ck_assert(json_object_object_get_ex(params, "biz_content", &expected));

    biz = biz_of(request);
    ck_assert_str_eq(biz, json_object_get_string(expected));
    free(biz);
    json_object_put(vec);
    free(text);
}
END_TEST

START_TEST(biz_null_request)
{
    ck_assert_ptr_null(validate_card_open_biz(NULL));
}
END_TEST

/* ---- idempotency hash ---- */

static const unsigned char KEY[] = "k3y";
#define KEYLEN (sizeof(KEY) - 1)

/* validate_request_hash with a hasher of KEY made for the one hash. */
static int hash_with_key(json_object *r, char out[65])
{
    struct validate_hasher *h = validate_hasher_new(KEY, KEYLEN);
    int rc = validate_request_hash(r, h, out);
    validate_hasher_free(h);
    return rc;
}

static void hash_of(const char *text, char out[65])
{
    json_object *r = parse(text);

    ck_assert_int_eq(hash_with_key(r, out), 0);
    ck_assert_uint_eq(strlen(out), 64);
    json_object_put(r);
}

START_TEST(hash_known_answer)
{
    /* canonical form {"m":"/","z":{"a":true,"b":[2,{"c":null,"d":"专"}]}};
     * expected = HMAC-SHA256("k3y", that), computed with Python's hmac */
    char h[65];

    hash_of("{ \"z\" : {\"b\":[2, {\"d\":\"\\u4e13\",\"c\":null}], \"a\":true},\n"
            "  \"auth_token\":\"t\", \"app_auth_token\":\"u\", \"m\":\"\\/\" }",
            h);
    ck_assert_str_eq(h, "4dd24c56bad02e6c1b3b0ab6c00447c06f9775dc14555bd12582cdf1c740bf3e");
}
END_TEST

/* The prepared key gives the same known answer, hash after hash (each one
 * from a copy of the prepared state, which is never used up). */
START_TEST(hash_prepared_key)
{
    struct validate_hasher *hk = validate_hasher_new(KEY, KEYLEN);
    ck_assert_ptr_nonnull(hk);
    json_object *r = parse("{\"z\":{\"b\":[2,{\"d\":\"\u4e13\",\"c\":null}],\"a\":true},"
                           "\"m\":\"/\"}");
    for (int round = 0; round < 3; round++) {
        char h[65];
        ck_assert_int_eq(validate_request_hash(r, hk, h), 0);
        ck_assert_str_eq(h, "4dd24c56bad02e6c1b3b0ab6c00447c06f9775dc14555bd12582cdf1c740bf3e");
    }
    json_object_put(r);
    validate_hasher_free(hk);
    ck_assert_ptr_null(validate_hasher_new(KEY, 0));
}
END_TEST

START_TEST(hash_same_meaning_same_hash)
{
    static const char *const compact =
        "{\"out_serial_no\":\"201606270000001\","
        "\"card_template_id\":\"20170308000000000058101000300045\","
        "\"user_id\":\"2088302463082075\",\"auth_token\":\"another-token\","
        "\"card\":{\"mdcode_info\":{\"time_stamp\":1496996459,\"expire_time\":\"2017-06-09 "
        "16:25:53\",\"code_value\":\"1KFCDY0002\",\"code_status\":\"SUCCESS\"},"
        "\"front_text_list\":[{\"value\":\"\\u91d1\\u878d\\u8d38\\u6613\",\"label\":\"专业\"}],"
        "\"front_image_id\":\"9fxnkgt0QFmqKAl5V2BqxQAAACMAAQED\","
        "\"template_id\":\"20170308000000000058101000300045\",\"balance\":\"124.89\","
        "\"point\":\"88\",\"level\":\"VIP1\",\"valid_date\":\"2020-02-20 21:20:46\","
        "\"open_date\":\"2014-02-20 21:20:46\",\"external_card_no\":\"EXT0001\"},"
        "\"member\":{\"cell\":\"13000000000\",\"birth\":\"2016-06-27\",\"gender\":\"MALE\","
        "\"name\":\"Lee\"},"
        "\"open_card_channel_id\":\"2088123123123123\","
        "\"open_card_channel\":\"20161534000000000008863\"}";
    char a[65], b[65], c[65];
    json_object *r = parse(EXAMPLE);

    hash_of(EXAMPLE, a);
    hash_of(compact, b); /* reordered, no whitespace, \u escapes, other token */
    ck_assert_str_eq(a, b);
    /* without the tokens at all */
    set_at(r, "auth_token", DELETE);
    set_at(r, "app_auth_token", DELETE);
    ck_assert_int_eq(hash_with_key(r, c), 0);
    ck_assert_str_eq(a, c);
    json_object_put(r);
}
END_TEST

START_TEST(hash_any_change_changes_it)
{
    static const struct {
        const char *path, *json;
    } changes[] = {
        {"out_serial_no", "\"201606270000002\""},
        {"user_id", "\"2088302463082076\""},
        {"card.point", "\"88.0\""},
        {"card.balance", "\"124.88\""},
        {"card.mdcode_info.time_stamp", "1496996460"},
        {"card.front_text_list[0].label", "\"专\""},
        {"member.cell", "\"13000000001\""},
        {"member.name", "\"lee\""},
        {"open_card_channel_id", "\"2088123123123124\""},
        {"card.level", "null"},
        {"card.level", "\"VIP1 \""},
        {"member.birth", "\"2016-06-28\""},
    };
    char base[65], h[65];
    size_t i;

    hash_of(EXAMPLE, base);
    for (i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        json_object *r = parse(EXAMPLE);

        set_json(r, changes[i].path, changes[i].json);
        ck_assert_int_eq(hash_with_key(r, h), 0);
        ck_assert_msg(strcmp(h, base) != 0, "hash unchanged by %s", changes[i].path);
        json_object_put(r);
    }
    {
        /* a removed optional field, and a row order change */
        json_object *r = parse(EXAMPLE);

        set_at(r, "member.cell", DELETE);
        ck_assert_int_eq(hash_with_key(r, h), 0);
        ck_assert_str_ne(h, base);
        json_object_put(r);
        hash_of("{\"l\":[1,2]}", base);
        hash_of("{\"l\":[2,1]}", h);
        ck_assert_str_ne(h, base);
        /* auth_token is only ignored at the top level */
        hash_of("{\"a\":{\"auth_token\":\"1\"}}", base);
        hash_of("{\"a\":{\"auth_token\":\"2\"}}", h);
        ck_assert_str_ne(h, base);
    }
}
END_TEST

START_TEST(hash_depends_on_key)
{
    json_object *r = parse(EXAMPLE);
    char a[65], b[65];

    ck_assert_int_eq(hash_with_key(r, a), 0);
    struct validate_hasher *other = validate_hasher_new((const unsigned char *)"k3z", 3);
    ck_assert_int_eq(validate_request_hash(r, other, b), 0);
    validate_hasher_free(other);
    ck_assert_str_ne(a, b);
    /* no key, no hasher; no hasher, no hash */
    ck_assert_ptr_null(validate_hasher_new(KEY, 0));
    ck_assert_ptr_null(validate_hasher_new(NULL, 3));
    ck_assert_int_eq(validate_request_hash(r, NULL, b), -1);
    ck_assert_int_eq(hash_with_key(NULL, b), -1);
    json_object_put(r);
}
END_TEST

static Suite *validate_suite(void)
{
    Suite *s = suite_create("validate");
    TCase *t;

    t = tcase_create("shape");
    tcase_add_test(t, example_passes_and_fills_out);
    tcase_add_test(t, minimal_passes_absent_are_null);
    tcase_add_test(t, root_must_be_object);
    tcase_add_test(t, unknown_fields_everywhere);
    tcase_add_test(t, unknown_field_name_is_made_printable);
    tcase_add_test(t, required_fields);
    tcase_add_test(t, optional_fields_may_be_absent);
    tcase_add_test(t, card_must_be_object);
    suite_add_tcase(s, t);

    t = tcase_create("fields");
    tcase_add_test(t, string_limits);
    tcase_add_test(t, string_types_and_empty);
    tcase_add_test(t, label_counts_characters);
    tcase_add_test(t, bad_text_refused);
    tcase_add_test(t, user_id_rule);
    tcase_add_test(t, datetimes);
    tcase_add_test(t, birth_date);
    tcase_add_test(t, point_rule);
    tcase_add_test(t, balance_rule);
    tcase_add_test(t, gender_rule);
    tcase_add_test(t, front_text_list_rows);
    tcase_add_test(t, mdcode_info_rules);
    tcase_add_test(t, time_stamp_rule);
    suite_add_tcase(s, t);

    t = tcase_create("params");
    tcase_add_test(t, card_no_rule);
    tcase_add_test(t, utf8_counting);
    suite_add_tcase(s, t);

    t = tcase_create("biz");
    tcase_add_test(t, biz_of_example);
    tcase_add_test(t, biz_order_does_not_follow_the_request);
    tcase_add_test(t, biz_of_minimal_leaves_absent_out);
    tcase_add_test(t, biz_partial_member_and_mdcode);
    tcase_add_test(t, biz_matches_sdk_vector);
    tcase_add_test(t, biz_null_request);
    suite_add_tcase(s, t);

    t = tcase_create("hash");
    tcase_add_test(t, hash_known_answer);
    tcase_add_test(t, hash_prepared_key);
    tcase_add_test(t, hash_same_meaning_same_hash);
    tcase_add_test(t, hash_any_change_changes_it);
    tcase_add_test(t, hash_depends_on_key);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return ts_run_suite(validate_suite());
}
