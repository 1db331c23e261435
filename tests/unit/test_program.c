/* Unit tests for the membership program's pure parts: template.create's
 * rules and biz_content (lib/template), the sign-up form and the activation
 * settings, and a member's sign-up (lib/activation): the out_serial_no, the
 * form turned into member_ext_info, and the open built from the settings.
 * Expected values come from the contract, the SDK models' field names and
 * SHA-256 computed independently (openssl dgst), not from the code. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "activation.h"
#include "support.h"
#include "template.h"
#include "validate.h"

static json_object *parse(const char *text)
{
    json_object *o = json_tokener_parse(text);
    ck_assert_msg(o != NULL, "test JSON does not parse: %s", text);
    return o;
}

#define STYLE                                                                                      \
    "\"template_style_info\":{\"card_show_name\":\"会员卡\",\"logo_id\":\"L\","                 \
    "\"background_id\":\"B\",\"bg_color\":\"rgb(55,112,179)\"}"
#define MINIMAL                                                                                    \
    "{\"card_type\":\"OUT_MEMBER_CARD\",\"biz_no_suffix_len\":\"10\",\"write_off_type\":"          \
    "\"qrcode\"," STYLE ",\"field_rule_list\":[]}"

static void assert_template(const char *text, int create, const char *field)
{
    json_object *o = parse(text);
    struct validate_error err;
    int rc = template_check(o, create, &err);
    if (!field)
        ck_assert_msg(rc == 0, "%s: refused at %s (%s)", text, err.field, err.message);
    else
        ck_assert_msg(rc < 0 && strcmp(err.field, field) == 0, "%s: %s, want refusal at %s", text,
                      rc == 0 ? "accepted" : err.field, field);
    json_object_put(o);
}

START_TEST(template_rules)
{
    assert_template(MINIMAL, 1, NULL);
    /* Fields cardgate does not know pass through. */
    assert_template("{\"card_type\":\"OUT_MEMBER_CARD\",\"biz_no_suffix_len\":\"32\","
                    "\"write_off_type\":\"dqrcode\"," STYLE ",\"field_rule_list\":[],"
                    "\"new_alipay_field\":{\"x\":1}}",
                    1, NULL);
    assert_template("{\"biz_no_suffix_len\":\"10\"}", 1, "template.card_type");
    assert_template("{\"card_type\":\"MEMBER\",\"biz_no_suffix_len\":\"10\",\"write_off_type\":"
                    "\"qrcode\"," STYLE ",\"field_rule_list\":[]}",
                    1, "template.card_type");
    assert_template("{\"card_type\":\"OUT_MEMBER_CARD\",\"biz_no_suffix_len\":\"33\","
                    "\"write_off_type\":\"qrcode\"," STYLE ",\"field_rule_list\":[]}",
                    1, "template.biz_no_suffix_len");
    assert_template("{\"card_type\":\"OUT_MEMBER_CARD\",\"biz_no_suffix_len\":10,"
                    "\"write_off_type\":\"qrcode\"," STYLE ",\"field_rule_list\":[]}",
                    1, "template.biz_no_suffix_len");
    assert_template("{\"card_type\":\"OUT_MEMBER_CARD\",\"biz_no_suffix_len\":\"10\","
                    "\"write_off_type\":\"qrcode\",\"template_style_info\":{\"card_show_name\":"
                    "\"x\",\"logo_id\":\"L\",\"background_id\":\"B\"},\"field_rule_list\":[]}",
                    1, "template.template_style_info.bg_color");
    assert_template("{\"card_type\":\"OUT_MEMBER_CARD\",\"biz_no_suffix_len\":\"10\","
                    "\"write_off_type\":\"qrcode\"," STYLE "}",
                    1, "template.field_rule_list");
    assert_template("{\"card_type\":\"OUT_MEMBER_CARD\",\"biz_no_prefix\":\"12345678901\","
                    "\"biz_no_suffix_len\":\"10\",\"write_off_type\":\"qrcode\"," STYLE
                    ",\"field_rule_list\":[]}",
                    1, "template.biz_no_prefix");
    assert_template("[]", 1, "template");
    assert_template("{\"request_id\":\"x\"}", 1, "template.request_id");
    /* A modify sets what it gives, but at least one thing. */
    assert_template("{\"write_off_type\":\"barcode\"}", 0, NULL);
    assert_template("{}", 0, "template");
    assert_template("{\"template_style_info\":{\"logo_id\":7}}", 0,
                    "template.template_style_info.card_show_name");
    /* template.modify takes no card_type, and replaces the style whole. */
    assert_template("{\"card_type\":\"OUT_MEMBER_CARD\"}", 0, "template.card_type");
    assert_template("{" STYLE "}", 0, NULL);
    assert_template("{\"template_style_info\":{\"card_show_name\":\"x\",\"logo_id\":\"L\","
                    "\"background_id\":\"B\"}}",
                    0, "template.template_style_info.bg_color");

    struct validate_error err;
    ck_assert_int_eq(template_check_request_id("2016072600000000000000001", &err), 0);
    ck_assert_int_eq(template_check_request_id("", &err), -1);
    ck_assert_str_eq(err.field, "request_id");
    ck_assert_int_eq(template_check_request_id("123456789012345678901234567890123", &err), -1);
    ck_assert_int_eq(template_check_request_id(NULL, &err), -1);
}
END_TEST

START_TEST(template_biz)
{
    json_object *tpl = parse(MINIMAL);
    char *biz = template_create_biz("R1", tpl);
    ck_assert_str_eq(biz, "{\"request_id\":\"R1\",\"card_type\":\"OUT_MEMBER_CARD\","
                          "\"biz_no_suffix_len\":\"10\",\"write_off_type\":\"qrcode\","
                          "\"template_style_info\":{\"card_show_name\":\"会员卡\",\"logo_id\":"
                          "\"L\",\"background_id\":\"B\",\"bg_color\":\"rgb(55,112,179)\"},"
                          "\"field_rule_list\":[]}");
    free(biz);
    json_object_put(tpl);
    tpl = parse("{\"write_off_type\":\"barcode\"}");
    biz = template_modify_biz("R2", "T9", tpl);
    ck_assert_str_eq(
        biz, "{\"request_id\":\"R2\",\"template_id\":\"T9\",\"write_off_type\":\"barcode\"}");
    free(biz);
    json_object_put(tpl);
}
END_TEST

static void assert_form(const char *text, const char *field)
{
    json_object *o = parse(text);
    struct validate_error err;
    int rc = template_form_check(o, &err);
    if (!field)
        ck_assert_msg(rc == 0, "%s: refused at %s", text, err.field);
    else
        ck_assert_msg(rc < 0 && strcmp(err.field, field) == 0, "%s: %s, want %s", text,
                      rc == 0 ? "accepted" : err.field, field);
    json_object_put(o);
}

START_TEST(form_rules_and_biz)
{
    assert_form("{\"required\":[\"OPEN_FORM_FIELD_MOBILE\"]}", NULL);
    assert_form("{\"required\":[\"OPEN_FORM_FIELD_MOBILE\"],\"optional\":["
                "\"OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR\",\"OPEN_FORM_FIELD_MEMBER_GRADE\"]}",
                NULL);
    assert_form("{}", "required");
    assert_form("{\"required\":[]}", "required");
    assert_form("{\"required\":\"OPEN_FORM_FIELD_MOBILE\"}", "required");
    assert_form("{\"required\":[\"OPEN_FORM_FIELD_MOBILE\",\"MOBILE\"]}", "required[1]");
    assert_form("{\"required\":[\"OPEN_FORM_FIELD_NAME\"],\"optional\":[\"OPEN_FORM_FIELD_NAME\"]}",
                "optional[0]");
    assert_form("{\"required\":[\"OPEN_FORM_FIELD_IDCARD\"],\"optional\":["
                "\"OPEN_FORM_FIELD_CERT_NO\"]}",
                "required");
    assert_form("{\"required\":[\"OPEN_FORM_FIELD_NAME\"],\"colour\":[]}", "colour");

    json_object *o = parse("{\"required\":[\"OPEN_FORM_FIELD_MOBILE\",\"OPEN_FORM_FIELD_NAME\"],"
                           "\"optional\":[\"OPEN_FORM_FIELD_GENDER\"]}");
    char *biz = template_form_biz("T1", o);
    /* AlipayMarketingCardFormtemplateSetModel: fields (OpenFormFieldDO), whose
     * required/optional are Strings: the JSON text of {"common_fields": [...]} */
    ck_assert_str_eq(
        biz, "{\"template_id\":\"T1\",\"fields\":{\"required\":\"{\\\"common_fields\\\":["
             "\\\"OPEN_FORM_FIELD_MOBILE\\\",\\\"OPEN_FORM_FIELD_NAME\\\"]}\",\"optional\":\"{"
             "\\\"common_fields\\\":[\\\"OPEN_FORM_FIELD_GENDER\\\"]}\"}}");
    free(biz);
    json_object_put(o);
}
END_TEST

static void assert_settings(const char *text, const char *field)
{
    json_object *o = parse(text);
    struct validate_error err;
    int rc = template_activation_check(o, &err);
    if (!field)
        ck_assert_msg(rc == 0, "%s: refused at %s (%s)", text, err.field, err.message);
    else
        ck_assert_msg(rc < 0 && strcmp(err.field, field) == 0, "%s: %s, want %s", text,
                      rc == 0 ? "accepted" : err.field, field);
    json_object_put(o);
}

START_TEST(activation_settings)
{
    assert_settings("{\"valid_date\":\"2030-12-31 23:59:59\"}", NULL);
    assert_settings("{\"valid_date\":\"2030-12-31 23:59:59\",\"level\":\"VIP1\",\"point\":\"0\","
                    "\"balance\":\"0.00\",\"external_card_no_prefix\":\"M\",\"success_url\":"
                    "\"https://shop.example/ok?src=pos\"}",
                    NULL);
    assert_settings("{}", "valid_date");
    assert_settings("{\"valid_date\":\"2030-02-30 00:00:00\"}", "valid_date");
    assert_settings("{\"valid_date\":\"2030-12-31 23:59:59\",\"balance\":\"-1\"}", "balance");
    assert_settings("{\"valid_date\":\"2030-12-31 23:59:59\",\"point\":1}", "point");
    assert_settings("{\"valid_date\":\"2030-12-31 23:59:59\",\"success_url\":\"ftp://x\"}",
                    "success_url");
    assert_settings("{\"valid_date\":\"2030-12-31 23:59:59\",\"external_card_no_prefix\":"
                    "\"123456789012345678901234567890123\"}",
                    "external_card_no_prefix");
    assert_settings("{\"valid_date\":\"2030-12-31 23:59:59\",\"open_date\":\"x\"}", "open_date");
}
END_TEST

START_TEST(signup_serial)
{
    char a[33], b[33], c[33];
    ck_assert_int_eq(activation_serial("2021000000000001", "T1", "R1", a), 0);
    ck_assert_int_eq(activation_serial("2021000000000001", "T1", "R1", b), 0);
    ck_assert_int_eq(activation_serial("2021000000000001", "T1", "R2", c), 0);
    ck_assert_str_eq(a, b);
    ck_assert_str_ne(a, c);
    /* printf %s 2021000000000001:T1:R1 | openssl dgst -sha256 gives
     * a76a378c5881...: "A" + its first 31 hex digits. */
    ck_assert_str_eq(a, "Aa76a378c58815156c608fb382870f57");
    ck_assert_uint_eq(strlen(a), 32);
}
END_TEST

START_TEST(signup_member)
{
    json_object *m = activation_member(
        "[{\"OPEN_FORM_FIELD_MOBILE\":\"13000000000\"},{\"OPEN_FORM_FIELD_NAME\":\"张三\"},"
        "{\"OPEN_FORM_FIELD_GENDER\":\"女\"},{\"OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR\":"
        "\"1988-01-01\"},{\"OPEN_FORM_FIELD_EMAIL\":\"a@b.c\"},{\"OPEN_FORM_FIELD_BIRTHDAY\":"
        "\"01-01\"}]");
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(
        json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
        "{\"cell\":\"13000000000\",\"name\":\"张三\",\"gender\":\"FEMALE\","
        "\"birth\":\"1988-01-01\"}");
    json_object_put(m);
    m = activation_member("[{\"OPEN_FORM_FIELD_GENDER\":\"男\"}]");
    ck_assert_str_eq(json_object_get_string(json_object_object_get(m, "gender")), "MALE");
    json_object_put(m);
    ck_assert_ptr_null(activation_member("{\"OPEN_FORM_FIELD_NAME\":\"x\"}"));
    ck_assert_ptr_null(activation_member("not json"));
    ck_assert_ptr_null(activation_member(NULL));
}
END_TEST

START_TEST(signup_callback_query)
{
    struct activation_callback cb;
    /* Alipay's redirect, URL-encoded, with parameters it does not document. */
    ck_assert_int_eq(activation_parse_callback("app_id=2021000000000001&template_id=T1&request_id="
                                               "R%2B1&auth_code=abc&out_string=x%20y&scope=a",
                                               &cb),
                     ACTIVATION_CALLBACK_OK);
    ck_assert_str_eq(cb.app_id, "2021000000000001");
    ck_assert_str_eq(cb.template_id, "T1");
    ck_assert_str_eq(cb.request_id, "R+1");
    ck_assert_str_eq(cb.auth_code, "abc");
    activation_callback_clear(&cb);
    ck_assert_ptr_null(cb.app_id);
    /* No auth_code at all: the member did not consent. */
    ck_assert_int_eq(activation_parse_callback("app_id=A&template_id=T&request_id=R", &cb),
                     ACTIVATION_CALLBACK_NO_CODE);
    ck_assert_str_eq(cb.request_id, "R");
    ck_assert_ptr_null(cb.auth_code);
    activation_callback_clear(&cb);
    static const char *const invalid[] = {
        NULL,
        "",
        "app_id=A&template_id=T&auth_code=c",                      /* no request_id */
        "app_id=A&template_id=T&request_id=R&auth_code=",          /* empty code */
        "app_id=A&template_id=T&request_id=R%20S&auth_code=c",     /* a space */
        "app_id=A&template_id=T&request_id=R&auth_code=%E4%B8%AD", /* not ASCII */
        "app_id=A&template_id=T&request_id=R&auth_code=c%00d",
        "app_id=A&template_id=T&request_id=R&auth_code=c&request_id=S", /* twice */
        "app_id=A&template_id=T&request_id=R&auth_code=c&AUTH_CODE=d",  /* twice, any case */
        /* 33 characters of template_id, one past its limit */
        "app_id=A&template_id=TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT&request_id=R&auth_code=c",
    };
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        ck_assert_msg(activation_parse_callback(invalid[i], &cb) == ACTIVATION_CALLBACK_INVALID,
                      "accepted %s", invalid[i] ? invalid[i] : "(null)");
        ck_assert_ptr_null(cb.app_id);
        ck_assert_ptr_null(cb.template_id);
        activation_callback_clear(&cb);
    }
    /* 32 characters is the limit itself. */
    ck_assert_int_eq(
        activation_parse_callback(
            "app_id=A&template_id=TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT&request_id=R&auth_code=c", &cb),
        ACTIVATION_CALLBACK_OK);
    activation_callback_clear(&cb);
}
END_TEST

START_TEST(signup_open)
{
    char err[256];
    json_object *settings = parse(
        "{\"valid_date\":\"2030-12-31 23:59:59\",\"level\":\"VIP1\",\"point\":\"0\","
        "\"balance\":\"0.00\",\"external_card_no_prefix\":\"M\",\"success_url\":\"https://x\"}");
    json_object *member =
        parse("{\"name\":\"张三\",\"cell\":\"13000000000000000000000000000000000\",\"gender\":"
              "\"MALE\"}");
    json_object *req = activation_open_request("A1", "T1", "2088000000000001", settings, "100007",
                                               "2026-11-30 12:00:00", member, err, sizeof(err));
    ck_assert_msg(req != NULL, "%s", err);
    struct validate_card_open open;
    ck_assert_int_eq(validate_card_open(req, &open, NULL), 0);
    char *biz = validate_card_open_biz(&open);
    /* The too-long phone number is dropped; the member still gets a card. */
    ck_assert_str_eq(biz, "{\"out_serial_no\":\"A1\",\"card_template_id\":\"T1\","
                          "\"card_user_info\":{\"user_uni_id\":\"2088000000000001\","
                          "\"user_uni_id_type\":\"UID\"},\"card_ext_info\":{\"external_card_no\":"
                          "\"M100007\",\"open_date\":\"2026-11-30 12:00:00\",\"valid_date\":"
                          "\"2030-12-31 23:59:59\",\"level\":\"VIP1\",\"point\":\"0\",\"balance\":"
                          "\"0.00\"},\"member_ext_info\":{\"name\":\"张三\",\"gende\":\"MALE\"}}");
    free(biz);
    json_object_put(req);
    /* A user id that is not one: refused with a reason. */
    ck_assert_ptr_null(activation_open_request("A1", "T1", "12", settings, "1",
                                               "2026-11-30 12:00:00", NULL, err, sizeof(err)));
    ck_assert(err[0] != '\0');
    json_object_put(member);
    json_object_put(settings);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("program");
    TCase *t = tcase_create("rules");
    tcase_add_test(t, template_rules);
    tcase_add_test(t, template_biz);
    tcase_add_test(t, form_rules_and_biz);
    tcase_add_test(t, activation_settings);
    tcase_add_test(t, signup_serial);
    tcase_add_test(t, signup_member);
    tcase_add_test(t, signup_callback_query);
    tcase_add_test(t, signup_open);
    suite_add_tcase(s, t);
    return ts_run_suite(s);
}
