/* jsonw: what it writes is JSON that reads back (json-c) as what was
 * written, for every byte a value may hold. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "jsonw.h"
#include "support.h"

/* Writes {"k":s} and reads k back. */
static void round_trip(const char *s)
{
    struct jsonw w = {0};
    jsonw_puts(&w, "{\"k\":");
    jsonw_string(&w, s);
    jsonw_raw(&w, "}", 1);
    char *text = jsonw_take(&w);
    ck_assert_ptr_nonnull(text);
    json_object *o = json_tokener_parse(text), *v;
    ck_assert_msg(o != NULL, "not JSON: %s", text);
    ck_assert(json_object_object_get_ex(o, "k", &v));
    if (!s) {
        ck_assert(json_object_is_type(v, json_type_null));
    } else {
        ck_assert(json_object_is_type(v, json_type_string));
        ck_assert_str_eq(json_object_get_string(v), s);
    }
    json_object_put(o);
    free(text);
}

START_TEST(test_escapes)
{
    round_trip("plain");
    round_trip("");
    round_trip(NULL);
    round_trip("quote \" backslash \\ slash /");
    round_trip("line\nfeed\rtab\tbell\x07 unit\x1f del\x7f");
    round_trip("专业 金融贸易 \xf0\x9f\x92\xb3");
}
END_TEST

/* Every byte from 0x01 to 0x7f, and long values across the buffer's
 * growth. */
START_TEST(test_every_ascii_byte_and_growth)
{
    char all[128];
    for (int i = 1; i < 128; i++)
        all[i - 1] = (char)i;
    all[127] = '\0';
    round_trip(all);
    char *big = malloc(20001);
    ck_assert_ptr_nonnull(big);
    for (int i = 0; i < 20000; i++)
        big[i] = "a\"\\\n\x01"[i % 5];
    big[20000] = '\0';
    round_trip(big);
    free(big);
}
END_TEST

/* A length-bounded value stops at its length, and writes a NUL inside. */
START_TEST(test_string_len)
{
    struct jsonw w = {0};
    jsonw_string_len(&w, "ab\0cdXXXX", 5);
    char *t = jsonw_take(&w);
    ck_assert_str_eq(t, "\"ab\\u0000cd\"");
    free(t);
}
END_TEST

START_TEST(test_take_empties)
{
    struct jsonw w = {0};
    char *empty = jsonw_take(&w);
    ck_assert_ptr_nonnull(empty);
    ck_assert_str_eq(empty, "");
    free(empty);
    jsonw_puts(&w, "[1]");
    char *t = jsonw_take(&w);
    ck_assert_str_eq(t, "[1]");
    ck_assert_ptr_null(w.p);
    ck_assert_uint_eq(w.len, 0);
    free(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jsonw");
    TCase *tc = tcase_create("jsonw");
    tcase_add_test(tc, test_escapes);
    tcase_add_test(tc, test_every_ascii_byte_and_growth);
    tcase_add_test(tc, test_take_empties);
    tcase_add_test(tc, test_string_len);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
