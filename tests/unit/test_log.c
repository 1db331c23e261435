/* log: JSON and text lines, escaping, level filtering, masks. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "log.h"
#include "support.h"

/* A log writing into memory. */
struct capture {
    char *buf;
    size_t len;
    FILE *f;
    struct log lg;
};

static void capture_open(struct capture *cap, enum log_level level, int json)
{
    memset(cap, 0, sizeof *cap);
    cap->f = open_memstream(&cap->buf, &cap->len);
    ck_assert_ptr_nonnull(cap->f);
    cap->lg.level = level;
    cap->lg.json = json;
    cap->lg.out = cap->f;
}

/* What was written so far (NUL-terminated, owned by cap). */
static const char *capture_text(struct capture *cap)
{
    fflush(cap->f);
    return cap->buf;
}

static void capture_close(struct capture *cap)
{
    fclose(cap->f);
    free(cap->buf);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static const char *jstr(json_object *o, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* Checks "YYYY-MM-DDTHH:MM:SS.mmmZ" and that it is within a day of now. */
static void check_ts(const char *ts)
{
    ck_assert_ptr_nonnull(ts);
    ck_assert_uint_eq(strlen(ts), 24);
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < 24; i++) {
        if (shape[i] == 'd')
            ck_assert_msg(ts[i] >= '0' && ts[i] <= '9', "ts %s", ts);
        else
            ck_assert_msg(ts[i] == shape[i], "ts %s", ts);
    }
    struct tm tm = {0};
    ck_assert_ptr_nonnull(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm), now = time(NULL);
    ck_assert_msg(t > now - 86400 && t < now + 86400, "ts %s far from now", ts);
}

START_TEST(test_json_line)
{
    struct capture cap;
    capture_open(&cap, LOG_INFO, 1);
    log_write(&cap.lg, LOG_INFO, "card opened", "biz_card_no", "NO20261121001", "skipped", NULL,
              "caller", "pos", NULL);
    const char *text = capture_text(&cap);
    ck_assert_uint_eq(count_lines(text), 1);
    ck_assert_int_eq(text[strlen(text) - 1], '\n');
    json_object *o = json_tokener_parse(text);
    ck_assert_msg(o != NULL, "not JSON: %s", text);
    ck_assert(json_object_is_type(o, json_type_object));
    check_ts(jstr(o, "ts"));
    ck_assert_str_eq(jstr(o, "level"), "info");
    ck_assert_str_eq(jstr(o, "msg"), "card opened");
    ck_assert_str_eq(jstr(o, "biz_card_no"), "NO20261121001");
    ck_assert_str_eq(jstr(o, "caller"), "pos");
    /* A NULL value leaves its pair out. */
    ck_assert(!json_object_object_get_ex(o, "skipped", NULL));
    ck_assert_int_eq(json_object_object_length(o), 5);
    json_object_put(o);
    capture_close(&cap);
}
END_TEST

START_TEST(test_json_escaping)
{
    struct capture cap;
    const char *tricky = "say \"hi\"\nnext line\ttab \\ back/slash \x01 end";
    const char *chinese = "会员卡开卡成功：张三的卡";
    capture_open(&cap, LOG_DEBUG, 1);
    log_write(&cap.lg, LOG_WARN, "quote \" and\nnewline", "tricky", tricky, "cn", chinese,
              "bad_utf8", "a\xff\xc3(b", NULL);
    const char *text = capture_text(&cap);
    /* Everything stays on one line. */
    ck_assert_uint_eq(count_lines(text), 1);
    json_object *o = json_tokener_parse(text);
    ck_assert_msg(o != NULL, "not JSON: %s", text);
    ck_assert_str_eq(jstr(o, "level"), "warn");
    ck_assert_str_eq(jstr(o, "msg"), "quote \" and\nnewline");
    ck_assert_str_eq(jstr(o, "tricky"), tricky);
    ck_assert_str_eq(jstr(o, "cn"), chinese);
    /* Bytes that are not UTF-8 become U+FFFD, one per bad byte. */
    ck_assert_str_eq(jstr(o, "bad_utf8"), "a\xef\xbf\xbd\xef\xbf\xbd(b");
    json_object_put(o);
    capture_close(&cap);
}
END_TEST

START_TEST(test_json_reserved_keys)
{
    struct capture cap;
    capture_open(&cap, LOG_DEBUG, 1);
    log_write(&cap.lg, LOG_ERROR, "real message", "msg", "fake", "level", "debug", NULL);
    json_object *o = json_tokener_parse(capture_text(&cap));
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(jstr(o, "msg"), "real message");
    ck_assert_str_eq(jstr(o, "level"), "error");
    ck_assert_str_eq(jstr(o, "_msg"), "fake");
    ck_assert_str_eq(jstr(o, "_level"), "debug");
    json_object_put(o);
    capture_close(&cap);
}
END_TEST

START_TEST(test_level_filter)
{
    struct capture cap;
    capture_open(&cap, LOG_WARN, 1);
    ck_assert(!log_enabled(&cap.lg, LOG_INFO));
    ck_assert(log_enabled(&cap.lg, LOG_WARN));
    log_write(&cap.lg, LOG_DEBUG, "d", NULL);
    log_write(&cap.lg, LOG_INFO, "i", NULL);
    ck_assert_uint_eq(count_lines(capture_text(&cap)), 0);
    log_write(&cap.lg, LOG_WARN, "w", NULL);
    log_write(&cap.lg, LOG_ERROR, "e", NULL);
    const char *text = capture_text(&cap);
    ck_assert_uint_eq(count_lines(text), 2);
    const char *nl = strchr(text, '\n');
    json_object *a = json_tokener_parse(text), *b = json_tokener_parse(nl + 1);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_str_eq(jstr(a, "msg"), "w");
    ck_assert_str_eq(jstr(b, "msg"), "e");
    ck_assert_str_eq(jstr(b, "level"), "error");
    json_object_put(a);
    json_object_put(b);
    capture_close(&cap);
}
END_TEST

START_TEST(test_text_line)
{
    struct capture cap;
    capture_open(&cap, LOG_INFO, 0);
    log_write(&cap.lg, LOG_INFO, "card opened", "caller", "pos", "note", "two words", "q", "a\"b",
              "nl", "x\ny", "empty", "", "skip", NULL, NULL);
    const char *text = capture_text(&cap);
    ck_assert_uint_eq(count_lines(text), 1);
    ck_assert_uint_gt(strlen(text), 25);
    char ts[25];
    memcpy(ts, text, 24);
    ts[24] = '\0';
    check_ts(ts);
    ck_assert_str_eq(text + 24, " info card opened caller=pos note=\"two words\" q=\"a\\\"b\" "
                                "nl=\"x\\ny\" empty=\"\"\n");
    capture_close(&cap);
}
END_TEST

START_TEST(test_text_message_one_line)
{
    struct capture cap;
    capture_open(&cap, LOG_DEBUG, 0);
    log_write(&cap.lg, LOG_ERROR, "first\nsecond", "cn", "张三", NULL);
    const char *text = capture_text(&cap);
    ck_assert_uint_eq(count_lines(text), 1);
    ck_assert_str_eq(text + 24, " error first\\nsecond cn=张三\n");
    capture_close(&cap);
}
END_TEST

/* Many threads, one FILE: every line must come out whole. */
struct writer_arg {
    const struct log *lg;
    int id;
};

static void *writer(void *p)
{
    const struct writer_arg *a = p;
    char id[16], seq[16], pad[600];
    memset(pad, 'a' + a->id, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    snprintf(id, sizeof id, "%d", a->id);
    for (int i = 0; i < 300; i++) {
        snprintf(seq, sizeof seq, "%d", i);
        log_write(a->lg, LOG_INFO, "line", "thread", id, "seq", seq, "pad", pad, NULL);
    }
    return NULL;
}

START_TEST(test_threads_do_not_interleave)
{
    struct capture cap;
    pthread_t th[4];
    struct writer_arg args[4];
    capture_open(&cap, LOG_INFO, 1);
    for (int i = 0; i < 4; i++) {
        args[i] = (struct writer_arg){&cap.lg, i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, writer, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    char *text = strdup(capture_text(&cap));
    ck_assert_uint_eq(count_lines(text), 1200);
    int next[4] = {0};
    char *save;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_object *o = json_tokener_parse(line);
        ck_assert_msg(o != NULL, "broken line: %.80s", line);
        int t = atoi(jstr(o, "thread"));
        ck_assert(t >= 0 && t < 4);
        /* Each thread's own lines keep their order. */
        ck_assert_int_eq(atoi(jstr(o, "seq")), next[t]++);
        ck_assert_uint_eq(strlen(jstr(o, "pad")), 599);
        json_object_put(o);
    }
    free(text);
    capture_close(&cap);
}
END_TEST

START_TEST(test_level_parse)
{
    enum log_level l = LOG_ERROR;
    ck_assert_int_eq(log_level_parse("debug", &l), 0);
    ck_assert_int_eq(l, LOG_DEBUG);
    ck_assert_int_eq(log_level_parse("info", &l), 0);
    ck_assert_int_eq(l, LOG_INFO);
    ck_assert_int_eq(log_level_parse("warn", &l), 0);
    ck_assert_int_eq(l, LOG_WARN);
    l = LOG_DEBUG;
    ck_assert_int_eq(log_level_parse("warning", &l), 0);
    ck_assert_int_eq(l, LOG_WARN);
    ck_assert_int_eq(log_level_parse("error", &l), 0);
    ck_assert_int_eq(l, LOG_ERROR);
    ck_assert_int_eq(log_level_parse("INFO", &l), 0);
    ck_assert_int_eq(l, LOG_INFO);
    ck_assert_int_eq(log_level_parse("verbose", &l), -1);
    ck_assert_int_eq(log_level_parse("", &l), -1);
    ck_assert_int_eq(log_level_parse(NULL, &l), -1);
    ck_assert_int_eq(l, LOG_INFO); /* unchanged on failure */
    ck_assert_str_eq(log_level_name(LOG_WARN), "warn");
}
END_TEST

START_TEST(test_mask_phone)
{
    char out[32];
    log_mask_phone("13012345678", out, sizeof out); /* the spec's example */
    ck_assert_str_eq(out, "130****5678");
    log_mask_phone("+8613012345678", out, sizeof out);
    ck_assert_str_eq(out, "+86****5678");
    ck_assert_ptr_null(strstr(out, "1301234"));
    log_mask_phone("1234567", out, sizeof out);
    ck_assert_str_eq(out, "****67");
    log_mask_phone("123", out, sizeof out);
    ck_assert_str_eq(out, "****");
    log_mask_phone(NULL, out, sizeof out);
    ck_assert_str_eq(out, "-");
    /* Cut to the buffer, always terminated. */
    log_mask_phone("13012345678", out, 5);
    ck_assert_str_eq(out, "130*");
}
END_TEST

START_TEST(test_mask_token)
{
    char out[32];
    /* 40 characters, the spec's example "comp…(40)". */
    log_mask_token("composeB8f0a1c2d3e4f5a6b7c8d9e0f1a2b3c4d", out, sizeof out);
    ck_assert_str_eq(out, "comp\xe2\x80\xa6(40)");
    log_mask_token("short-token", out, sizeof out);
    ck_assert_str_eq(out, "\xe2\x80\xa6(11)");
    log_mask_token("", out, sizeof out);
    ck_assert_str_eq(out, "\xe2\x80\xa6(0)");
    log_mask_token(NULL, out, sizeof out);
    ck_assert_str_eq(out, "-");
    log_mask_token("composeB8f0a1c2d3e4f5a6b7c8d9e0f1a2b3c4d", out, 3);
    ck_assert_str_eq(out, "co");
}
END_TEST

static Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_add_test(tc, test_json_line);
    tcase_add_test(tc, test_json_escaping);
    tcase_add_test(tc, test_json_reserved_keys);
    tcase_add_test(tc, test_level_filter);
    tcase_add_test(tc, test_text_line);
    tcase_add_test(tc, test_text_message_one_line);
    tcase_add_test(tc, test_threads_do_not_interleave);
    tcase_add_test(tc, test_level_parse);
    tcase_add_test(tc, test_mask_phone);
    tcase_add_test(tc, test_mask_token);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ts_run_suite(log_suite());
}
