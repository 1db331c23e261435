/* Unit tests for the pure parts of card updates and deletions: the PATCH
 * body's rules (api.md "PATCH /v1/cards/{biz_card_no}"), the update's and
 * the delete's biz_content (AlipayMarketingCardUpdateModel /
 * AlipayMarketingCardDeleteModel field names), and the comparison that
 * decides whether a card already shows an update. Expected values are
 * written from the contract and the SDK models, not from the code. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "alipay_card.h"
#include "support.h"
#include "validate.h"

static json_object *parse(const char *text)
{
    json_object *o = json_tokener_parse(text);
    ck_assert_msg(o != NULL, "test JSON does not parse: %s", text);
    return o;
}

/* Validates text; returns the refused field ("" when accepted). */
static char *refused_field(const char *text)
{
    json_object *o = parse(text);
    struct validate_card_update u;
    struct validate_error err;
    int rc = validate_card_update(o, &u, &err);
    char *field = strdup(rc == 0 ? "" : err.field);
    if (rc != 0)
        ck_assert_msg(err.message[0] != '\0', "a refusal says why");
    json_object_put(o);
    return field;
}

static void assert_refused(const char *text, const char *field)
{
    char *got = refused_field(text);
    ck_assert_msg(strcmp(got, field) == 0, "%s: refused at '%s', want '%s'", text, got, field);
    free(got);
}

#define HEAD "\"out_serial_no\":\"CRM-1\",\"occur_time\":\"2026-11-30 10:15:00\""

START_TEST(update_example_passes)
{
    json_object *o = parse("{" HEAD ",\"card\":{\"point\":\"120\",\"balance\":\"88.50\","
                           "\"level\":\"VIP2\"},\"changed_point\":\"20\"}");
    struct validate_card_update u;
    struct validate_error err;
    ck_assert_int_eq(validate_card_update(o, &u, &err), 0);
    ck_assert_str_eq(u.out_serial_no, "CRM-1");
    ck_assert_str_eq(u.occur_time, "2026-11-30 10:15:00");
    ck_assert_str_eq(u.changed_point, "20");
    ck_assert_ptr_null(u.external_card_no);
    json_object_put(o);
}
END_TEST

START_TEST(update_rules)
{
    assert_refused("{\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"level\":\"V\"}}",
                   "out_serial_no");
    assert_refused("{\"out_serial_no\":\"CRM-1\",\"card\":{\"level\":\"V\"}}", "occur_time");
    assert_refused("{\"out_serial_no\":\"CRM-1\",\"occur_time\":\"2026-11-30\","
                   "\"card\":{\"level\":\"V\"}}",
                   "occur_time");
    assert_refused("{" HEAD "}", "card");
    assert_refused("{" HEAD ",\"card\":{}}", "card");
    assert_refused("{" HEAD ",\"card\":[]}", "card");
    /* Alipay does not let an update change the dates. */
    assert_refused("{" HEAD ",\"card\":{\"open_date\":\"2014-02-20 21:20:46\"}}", "card.open_date");
    assert_refused("{" HEAD ",\"card\":{\"level\":\"V\",\"valid_date\":\"2020-02-20 21:20:46\"}}",
                   "card.valid_date");
    /* The open's card rules hold. */
    assert_refused("{" HEAD ",\"card\":{\"point\":\"1.001\"}}", "card.point");
    assert_refused("{" HEAD ",\"card\":{\"balance\":\"-5\"}}", "card.balance");
    assert_refused("{" HEAD ",\"card\":{\"colour\":\"red\"}}", "card.colour");
    assert_refused("{" HEAD ",\"card\":{\"front_text_list\":[{\"label\":\"专业课程A\"}]}}",
                   "card.front_text_list[0].label");
    assert_refused("{" HEAD ",\"card\":{\"mdcode_info\":{\"code_status\":\"SUCCESS\","
                   "\"time_stamp\":1}}}",
                   "card.mdcode_info.code_value");
    /* changed_point: a number with at most 2 decimals, negative allowed. */
    assert_refused("{" HEAD ",\"card\":{\"level\":\"V\"},\"changed_point\":\"+5\"}",
                   "changed_point");
    assert_refused("{" HEAD ",\"card\":{\"level\":\"V\"},\"changed_point\":20}", "changed_point");
    assert_refused("{" HEAD ",\"card\":{\"level\":\"V\"},\"changed_point\":\"-20.50\"}", "");
    /* The open's other fields are not the update's. */
    assert_refused("{" HEAD ",\"card\":{\"level\":\"V\"},\"user_id\":\"2088302463082075\"}",
                   "user_id");
    char *long_serial = malloc(70);
    memset(long_serial, 'a', 65);
    long_serial[65] = '\0';
    char body[256];
    snprintf(body, sizeof(body),
             "{\"out_serial_no\":\"%s\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"level\":"
             "\"V\"}}",
             long_serial);
    assert_refused(body, "out_serial_no");
    free(long_serial);
}
END_TEST

START_TEST(update_biz_content)
{
    json_object *o =
        parse("{\"changed_point\":\"-20\",\"card\":{\"level\":\"VIP2\",\"point\":\"120\","
              "\"external_card_no\":\"M9\"}," HEAD "}");
    struct validate_card_update u;
    ck_assert_int_eq(validate_card_update(o, &u, NULL), 0);
    char *biz = validate_card_update_biz(&u, "20161111000000001");
    /* The SDK model's names; card_info in the seed's MerchantCard order. */
    ck_assert_str_eq(biz, "{\"target_card_no\":\"20161111000000001\","
                          "\"target_card_no_type\":\"BIZ_CARD\","
                          "\"occur_time\":\"2026-11-30 10:15:00\","
                          "\"card_info\":{\"external_card_no\":\"M9\",\"level\":\"VIP2\","
                          "\"point\":\"120\"},"
                          "\"merchant_card_msg_info\":{\"changed_point\":\"-20\"}}");
    ck_assert_str_eq(u.external_card_no, "M9");
    free(biz);
    json_object_put(o);

    o = parse("{" HEAD ",\"card\":{\"balance\":\"1\"}}");
    ck_assert_int_eq(validate_card_update(o, &u, NULL), 0);
    biz = validate_card_update_biz(&u, "B1");
    ck_assert_ptr_null(strstr(biz, "merchant_card_msg_info")); /* no message without a change */
    free(biz);
    json_object_put(o);
}
END_TEST

START_TEST(delete_parameters)
{
    ck_assert_int_eq(validate_reason_code("USER_UNBUND"), 0);
    ck_assert_int_eq(validate_reason_code("CANCEL"), 0);
    ck_assert_int_eq(validate_reason_code("PRESENT"), 0);
    ck_assert_int_eq(validate_reason_code("cancel"), -1);
    ck_assert_int_eq(validate_reason_code(""), -1);
    ck_assert_int_eq(validate_reason_code(NULL), -1);
    ck_assert_int_eq(validate_text("12345678901234567890123456789012", 32), 0);
    ck_assert_int_eq(validate_text("123456789012345678901234567890123", 32), -1);
    ck_assert_int_eq(validate_text("", 32), -1);
    ck_assert_int_eq(validate_text("a\tb", 32), -1);
    char *biz = alipay_card_delete_biz("DEL-1", "20161111000000001", "PRESENT");
    ck_assert_str_eq(biz, "{\"out_serial_no\":\"DEL-1\",\"target_card_no\":\"20161111000000001\","
                          "\"target_card_no_type\":\"BIZ_CARD\",\"reason_code\":\"PRESENT\"}");
    free(biz);
}
END_TEST

static int shows(const char *card_info, const char *wanted)
{
    json_object *a = parse(card_info), *b = parse(wanted);
    int r = alipay_card_info_shows(a, b);
    json_object_put(a);
    json_object_put(b);
    return r;
}

START_TEST(card_shows_update)
{
    const char *info =
        "{\"biz_card_no\":\"B\",\"point\":\"120\",\"balance\":\"88.50\","
        "\"level\":\"VIP2\",\"front_text_list\":[{\"label\":\"a\",\"value\":\"b\"}]}";
    ck_assert_int_eq(shows(info, "{\"point\":\"120\",\"level\":\"VIP2\"}"), 1);
    /* Amounts compare as numbers. */
    ck_assert_int_eq(shows(info, "{\"point\":\"120.00\",\"balance\":\"88.5\"}"), 1);
    ck_assert_int_eq(shows(info, "{\"balance\":\"88.51\"}"), 0);
    ck_assert_int_eq(shows(info, "{\"point\":\"12\"}"), 0);
    ck_assert_int_eq(shows(info, "{\"level\":\"VIP3\"}"), 0);
    ck_assert_int_eq(shows(info, "{\"front_text_list\":[{\"label\":\"a\",\"value\":\"b\"}]}"), 1);
    ck_assert_int_eq(shows(info, "{\"front_text_list\":[{\"label\":\"a\",\"value\":\"c\"}]}"), 0);
    /* A field the query does not return is not evidence either way; with
     * nothing comparable, the update is not known to be there. */
    ck_assert_int_eq(shows(info, "{\"point\":\"120\",\"front_image_id\":\"x\"}"), 1);
    ck_assert_int_eq(shows(info, "{\"front_image_id\":\"x\"}"), 0);
    ck_assert_int_eq(shows("{\"point\":\"-0.10\"}", "{\"point\":\"-0.1\"}"), 1);
    ck_assert_int_eq(shows("{\"point\":\"0\"}", "{\"point\":\"-0\"}"), 1);
    ck_assert_int_eq(shows("{\"point\":\"100\"}", "{\"point\":\"10\"}"), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("card_change");
    TCase *t = tcase_create("rules");
    tcase_add_test(t, update_example_passes);
    tcase_add_test(t, update_rules);
    tcase_add_test(t, update_biz_content);
    tcase_add_test(t, delete_parameters);
    tcase_add_test(t, card_shows_update);
    suite_add_tcase(s, t);
    return ts_run_suite(s);
}
