/* Unit tests for lib/jsonx: what cardgate takes as one JSON document. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "jsonx.h"
#include "support.h"

static int parses(const char *text)
{
    json_object *o = jsonx_parse(text, strlen(text));
    json_object_put(o);
    return o != NULL;
}

START_TEST(documents)
{
    ck_assert(parses("{\"a\":1}"));
    ck_assert(parses(" {\"a\":[1,{\"a\":2}]}\n"));              /* the same key in another object */
    ck_assert(parses("{\"a\":\"{\\\"a\\\":1,\\\"a\\\":2}\"}")); /* inside a string: text */
    ck_assert(parses("[{\"k\":1},{\"k\":2}]"));
    ck_assert(!parses("{\"a\":1} x"));
    ck_assert(!parses("{'a':1}"));
    ck_assert(!parses(""));
}
END_TEST

/* A key said twice in one object is refused, however it is spelled. */
START_TEST(repeated_keys_refused)
{
    ck_assert(!parses("{\"out_serial_no\":\"a\",\"out_serial_no\":\"b\"}"));
    ck_assert(!parses("{\"card\":{\"point\":\"1\",\"level\":\"V\",\"point\":\"2\"}}"));
    ck_assert(!parses("{\"a\":1,\"\\u0061\":2}"));
    ck_assert(!parses("[1,{\"x\":[{\"y\":1,\"y\":1}]}]"));
    ck_assert(parses("{\"a\":1,\"b\":{\"a\":1}}"));
    ck_assert(parses("{\"a\\\\\":1,\"a\":2}")); /* "a\\" and "a" differ */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("jsonx");
    TCase *t = tcase_create("parse");
    tcase_add_test(t, documents);
    tcase_add_test(t, repeated_keys_refused);
    suite_add_tcase(s, t);
    return ts_run_suite(s);
}
