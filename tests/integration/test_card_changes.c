/* A card's life after opening — PATCH (alipay.marketing.card.update) and
 * DELETE (alipay.marketing.card.delete) — against the real binaries and a
 * real PostgreSQL: round trips, validation, one gateway call per
 * out_serial_no, one change of a card in flight at a time across two
 * instances, no rollback by a late older update, no second points message
 * after an unknown outcome, kill -9 mid-change, and deleted cards.
 *
 * The simulator is the witness: its per-card counters (updates applied,
 * points messages sent, the most update/delete calls it held at once) and
 * its per-method call counts say what reached "Alipay". */
#include <check.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

#define METHOD_UPDATE "alipay.marketing.card.update"
#define METHOD_DELETE "alipay.marketing.card.delete"
#define METHOD_QUERY "alipay.marketing.card.query"

static const char *const json_headers[] = {TS_AUTH, TS_JSON, NULL};
static const char *const auth_headers[] = {TS_AUTH, NULL};

/* ---------------------------------------------------------------- helpers */

static void assert_header(const struct ts_http *r, const char *name, const char *want)
{
    char *v = ts_http_header(r, name);
    ck_assert_msg(v && strcmp(v, want) == 0, "%s: got %s, want %s", name, v ? v : "(absent)", want);
    free(v);
}

/* The POST /v1/cards body the tests open cards with. */
static void open_body(char *out, size_t n, const char *serial, const char *external)
{
    snprintf(out, n,
             "{\"out_serial_no\":\"%s\",\"card_template_id\":\"20170308000000000058101000300045\","
             "\"user_id\":\"2088302463082075\",\"auth_token\":\"composeB_token\","
             "\"card\":{\"external_card_no\":\"%s\",\"open_date\":\"2024-02-20 21:20:46\","
             "\"valid_date\":\"2030-02-20 21:20:46\",\"level\":\"VIP1\",\"point\":\"88\","
             "\"balance\":\"10.00\"}}",
             serial, external);
}

static void open_card(const struct ts_stack *st, const char *serial, const char *external,
                      char **biz_card_no)
{
    char url[128], body[1024];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/v1/cards", st->cg.url);
    open_body(body, sizeof(body), serial, external);
    ck_assert_int_eq(ts_http_call("POST", url, json_headers, body, &r), 0);
    ck_assert_msg(r.status == 201, "open: %ld %s", r.status, r.body);
    *biz_card_no = ts_json_at(&r, "biz_card_no");
    ck_assert_ptr_nonnull(*biz_card_no);
    ts_http_free(&r);
}

static char *update_body(const char *serial, const char *occur_time, const char *card,
                         const char *changed_point)
{
    char *b = malloc(2048);
    int n = snprintf(b, 2048, "{\"out_serial_no\":\"%s\",\"occur_time\":\"%s\",\"card\":%s", serial,
                     occur_time, card);
    if (changed_point)
        n += snprintf(b + n, 2048 - (size_t)n, ",\"changed_point\":\"%s\"", changed_point);
    snprintf(b + n, 2048 - (size_t)n, "}");
    return b;
}

static void patch(const struct ts_stack *st, const char *biz, const char *body, struct ts_http *r)
{
    char url[160];
    snprintf(url, sizeof(url), "%s/v1/cards/%s", st->cg.url, biz);
    ck_assert_int_eq(ts_http_call("PATCH", url, json_headers, body, r) == 0 || r->status == 0, 1);
}

static void del(const struct ts_stack *st, const char *biz, const char *query, struct ts_http *r)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/v1/cards/%s?%s", st->cg.url, biz, query);
    ts_http_call("DELETE", url, auth_headers, NULL, r);
}

/* The simulator's view of a card (GET /_sim/cards/{biz}); the caller puts. */
static json_object *sim_card(const struct ts_sim *sim, const char *biz)
{
    char url[200];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/cards/%s", sim->control, biz);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    json_object *o = ts_json_of(&r);
    ts_http_free(&r);
    return o;
}

static long sim_card_long(const struct ts_sim *sim, const char *biz, const char *key)
{
    json_object *o = sim_card(sim, biz), *v;
    long n = json_object_object_get_ex(o, key, &v) ? (long)json_object_get_int64(v) : -1;
    json_object_put(o);
    return n;
}

/* card_info.<key> at the simulator, malloc'd. */
static char *sim_card_info(const struct ts_sim *sim, const char *biz, const char *key)
{
    json_object *o = sim_card(sim, biz), *info, *v;
    char *s = NULL;
    if (json_object_object_get_ex(o, "card_info", &info) &&
        json_object_object_get_ex(info, key, &v))
        s = strdup(json_object_get_string(v));
    json_object_put(o);
    return s;
}

static char *sim_card_str(const struct ts_sim *sim, const char *biz, const char *key)
{
    json_object *o = sim_card(sim, biz), *v;
    char *s = NULL;
    if (json_object_object_get_ex(o, key, &v) && v)
        s = strdup(json_object_get_string(v));
    json_object_put(o);
    return s;
}

static void fault(const struct ts_sim *sim, const char *mode, const char *method, const char *key,
                  int delay_ms, int count)
{
    char json[300];
    snprintf(json, sizeof(json),
             "{\"mode\":\"%s\",\"method\":\"%s\",\"out_serial_no\":\"%s\",\"delay_ms\":%d%s%.0d}",
             mode, method, key, delay_ms, count ? ",\"count\":" : "", count);
    ck_assert_int_eq(ts_sim_fault(sim, json), 0);
}

static long db_long(const struct ts_stack *st, const char *fmt, const char *arg)
{
    char sql[600];
    snprintf(sql, sizeof(sql), fmt, arg);
    return ts_pg_long(st->db, sql);
}

static void stack_up(struct ts_stack *st, const char *const env[])
{
    char err[512];
    ck_assert_msg(ts_stack_up(st, NULL, env, err, sizeof(err)) == 0, "%s", err);
}

/* ------------------------------------------------------------- round trip */

/* open → update → replay → reuse → delete → replay → 410s → the number
 * reused by a new card; the simulator, the answers and the tables agree. */
START_TEST(test_update_and_delete_round_trip)
{
    struct ts_stack st;
    struct ts_http r, again;
    char *biz, *biz2;
    stack_up(&st, NULL);
    open_card(&st, "rt-open", "EXT-RT", &biz);

    char *body = update_body("rt-up-1", "2026-11-30 10:15:00",
                             "{\"point\":\"120\",\"balance\":\"88.50\",\"level\":\"VIP2\","
                             "\"front_text_list\":[{\"label\":\"专业\",\"value\":\"金融\"}]}",
                             "20");
    patch(&st, biz, body, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_assert_field(&r, "biz_card_no", biz);
    ts_assert_field(&r, "out_serial_no", "rt-up-1");
    ts_assert_field(&r, "occur_time", "2026-11-30 10:15:00");
    ts_assert_field(&r, "card.point", "120");
    ts_assert_field(&r, "card.balance", "88.50");
    ts_assert_field(&r, "card.level", "VIP2");
    char *updated_at = ts_json_at(&r, "updated_at");
    ck_assert_ptr_nonnull(updated_at);
    free(updated_at);

    /* What Alipay holds now, and the one points message the member got. */
    char *v = sim_card_info(&st.sim, biz, "point");
    ck_assert_str_eq(v, "120");
    free(v);
    v = sim_card_info(&st.sim, biz, "level");
    ck_assert_str_eq(v, "VIP2");
    free(v);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "points_messages"), 1);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 1);

    /* cards keeps the accepted values; the ledger row says what it was. */
    char sql[400];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM cards WHERE biz_card_no = '%s' AND level = 'VIP2' AND point = "
             "120 AND balance = 88.50 AND last_occur_time = '2026-11-30 10:15:00'",
             biz);
    ck_assert_int_eq(ts_pg_long(st.db, sql), 1);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM card_requests WHERE out_serial_no = 'rt-up-1' AND operation = "
             "'update' AND state = 'succeeded' AND biz_card_no = '%s'",
             biz);
    ck_assert_int_eq(ts_pg_long(st.db, sql), 1);

    /* A retry is the stored answer, with no gateway call. */
    patch(&st, biz, body, &again);
    ck_assert_int_eq(again.status, 200);
    assert_header(&again, "Idempotent-Replayed", "true");
    ck_assert_str_eq(again.body, r.body);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 1);
    ts_http_free(&again);
    ts_http_free(&r);
    free(body);

    /* The serial number is cardgate's key for that change only. */
    body = update_body("rt-up-1", "2026-11-30 10:15:00", "{\"point\":\"121\"}", NULL);
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 422, "OUT_SERIAL_NO_REUSED", "out_serial_no");
    ts_http_free(&r);
    free(body);
    /* The card is part of the change: the same body for another card is a
     * reuse too, not a replay of this card's answer. */
    char *other;
    open_card(&st, "rt-open-b", "EXT-RT-B", &other);
    body = update_body("rt-up-1", "2026-11-30 10:15:00",
                       "{\"point\":\"120\",\"balance\":\"88.50\",\"level\":\"VIP2\","
                       "\"front_text_list\":[{\"label\":\"专业\",\"value\":\"金融\"}]}",
                       "20");
    patch(&st, other, body, &r);
    ts_assert_error(&r, 422, "OUT_SERIAL_NO_REUSED", "out_serial_no");
    ts_http_free(&r);
    free(body);
    free(other);
    /* ... and so is an open's serial. */
    body = update_body("rt-open", "2026-11-30 10:16:00", "{\"point\":\"121\"}", NULL);
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 422, "OUT_SERIAL_NO_REUSED", "out_serial_no");
    ts_http_free(&r);
    free(body);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 1);

    /* Delete. */
    del(&st, biz, "out_serial_no=rt-del-1&reason_code=CANCEL", &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_assert_field(&r, "biz_card_no", biz);
    ts_assert_field(&r, "out_serial_no", "rt-del-1");
    ts_assert_field(&r, "reason_code", "CANCEL");
    char *serial_at_sim = sim_card_str(&st.sim, biz, "biz_serial_no");
    ck_assert_ptr_nonnull(serial_at_sim);
    ts_assert_field(&r, "biz_serial_no", serial_at_sim);
    free(serial_at_sim);
    v = sim_card_str(&st.sim, biz, "status");
    ck_assert_str_eq(v, "deleted");
    free(v);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM cards WHERE biz_card_no = '%s' AND status = 'deleted' AND "
             "delete_reason = 'CANCEL' AND deleted_at IS NOT NULL",
             biz);
    ck_assert_int_eq(ts_pg_long(st.db, sql), 1);

    del(&st, biz, "out_serial_no=rt-del-1&reason_code=CANCEL", &again);
    ck_assert_int_eq(again.status, 200);
    assert_header(&again, "Idempotent-Replayed", "true");
    ck_assert_str_eq(again.body, r.body);
    ts_http_free(&again);
    ts_http_free(&r);

    /* A deleted card: 410 for other changes, and nothing reaches Alipay. */
    long updates = ts_sim_method_calls(&st.sim, METHOD_UPDATE);
    long deletes = ts_sim_method_calls(&st.sim, METHOD_DELETE);
    body = update_body("rt-up-2", "2026-11-30 11:00:00", "{\"point\":\"1\"}", NULL);
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 410, "CARD_DELETED", NULL);
    ts_http_free(&r);
    free(body);
    del(&st, biz, "out_serial_no=rt-del-2&reason_code=USER_UNBUND", &r);
    ts_assert_error(&r, 410, "CARD_DELETED", NULL);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), updates);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_DELETE), deletes);

    /* The merchant's number is free for a new card. */
    open_card(&st, "rt-open-2", "EXT-RT", &biz2);
    ck_assert_int_eq(db_long(&st,
                             "SELECT count(*) FROM cards WHERE external_card_no = 'EXT-RT' AND "
                             "status = 'active' AND biz_card_no = '%s'",
                             biz2),
                     1);

    /* The dashboard view counts every operation the ledger took (a 410 is
     * refused before it). */
    ck_assert_int_eq(
        db_long(&st, "SELECT sum(requests) FROM card_changes_per_day WHERE operation = '%s'",
                "update"),
        1);
    ck_assert_int_eq(
        db_long(&st, "SELECT sum(succeeded) FROM card_changes_per_day WHERE operation = '%s'",
                "delete"),
        1);
    free(biz);
    free(biz2);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* Every card field an update may set reaches Alipay's card_info, and the
 * merchant's card number follows in cards. */
START_TEST(test_update_every_field)
{
    struct ts_stack st;
    struct ts_http r;
    char *biz;
    stack_up(&st, NULL);
    open_card(&st, "ef-open", "EXT-EF", &biz);
    char *body = update_body(
        "ef-up", "2026-11-30 10:15:00",
        "{\"external_card_no\":\"EXT-EF-2\",\"level\":\"GOLD\",\"point\":\"-5.5\","
        "\"balance\":\"0\",\"template_id\":\"20170308000000000058101000300045\","
        "\"front_image_id\":\"9fxnkgt0QFmqKAl5V2BqxQAAACMAAQED\","
        "\"front_text_list\":[{\"label\":\"会员\",\"value\":\"金卡\"},{\"label\":\"a\","
        "\"value\":\"b\"}],\"mdcode_info\":{\"code_status\":\"SUCCESS\",\"code_value\":"
        "\"1KFCDY0002\",\"expire_time\":\"2030-06-09 16:25:53\",\"time_stamp\":1496996459}}",
        NULL);
    patch(&st, biz, body, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    static const char *const want[][2] = {
        {"external_card_no", "EXT-EF-2"},
        {"level", "GOLD"},
        {"point", "-5.5"},
        {"balance", "0"},
        {"template_id", "20170308000000000058101000300045"},
        {"front_image_id", "9fxnkgt0QFmqKAl5V2BqxQAAACMAAQED"},
        {"open_date", "2024-02-20 21:20:46"}, /* untouched */
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char *v = sim_card_info(&st.sim, biz, want[i][0]);
        ck_assert_msg(v && strcmp(v, want[i][1]) == 0, "%s: %s", want[i][0], v ? v : "(absent)");
        free(v);
    }
    json_object *card = sim_card(&st.sim, biz), *info, *list, *md, *v;
    ck_assert(json_object_object_get_ex(card, "card_info", &info));
    ck_assert(json_object_object_get_ex(info, "front_text_list", &list));
    ck_assert_int_eq(json_object_array_length(list), 2);
    ck_assert(json_object_object_get_ex(json_object_array_get_idx(list, 0), "value", &v));
    ck_assert_str_eq(json_object_get_string(v), "金卡");
    ck_assert(json_object_object_get_ex(info, "mdcode_info", &md));
    ck_assert(json_object_object_get_ex(md, "code_value", &v));
    ck_assert_str_eq(json_object_get_string(v), "1KFCDY0002");
    json_object_put(card);
    /* No changed_point: no message to the member. */
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "points_messages"), 0);
    ck_assert_int_eq(db_long(&st,
                             "SELECT count(*) FROM cards WHERE biz_card_no = '%s' AND "
                             "external_card_no = 'EXT-EF-2' AND level = 'GOLD' AND point = -5.5 "
                             "AND balance = 0",
                             biz),
                     1);
    /* The old number is free, the new one taken. */
    char *other;
    open_card(&st, "ef-open-2", "EXT-EF", &other);
    free(body);
    body =
        update_body("ef-up-2", "2026-11-30 10:16:00", "{\"external_card_no\":\"EXT-EF-2\"}", NULL);
    patch(&st, other, body, &r);
    ts_assert_error(&r, 409, "EXTERNAL_CARD_NO_TAKEN", "card.external_card_no");
    ts_http_free(&r);
    free(body);
    free(other);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

struct outcome_case {
    const char *mode;
    long status;
    const char *code;
    int final;
};

/* The contract's gateway-outcome table for update and delete: each fault
 * once, its answer, and — when it is not final — a retry that succeeds. */
START_TEST(test_gateway_outcomes_for_changes)
{
    static const struct outcome_case cases[] = {
        {"code_20000", 502, "ALIPAY_UNAVAILABLE", 0},
        {"system_error", 502, "ALIPAY_UNAVAILABLE", 0}, /* a 40004 that is Alipay's failure */
        {"code_20001", 422, "ALIPAY_AUTH_FAILED", 0},
        {"error_response", 502, "ALIPAY_REQUEST_REFUSED", 0},
        {"bad_signature", 502, "ALIPAY_BAD_SIGNATURE", 0},
        {"unsigned_success", 502, "ALIPAY_BAD_SIGNATURE", 0},
        {"http_500", 502, "ALIPAY_UNAVAILABLE", 0},
        {"sign_first", 200, NULL, 1},
    };
    struct ts_stack st;
    struct ts_http r;
    char *biz;
    stack_up(&st, NULL);
    /* An open that met Alipay's internal failure is retried, not refused
     * for good. */
    ck_assert_int_eq(ts_sim_fault(&st.sim, "{\"mode\":\"system_error\",\"method\":"
                                           "\"alipay.marketing.card.open\",\"count\":1}"),
                     0);
    char url[160], first[1024];
    snprintf(url, sizeof(url), "%s/v1/cards", st.cg.url);
    open_body(first, sizeof(first), "oc-open", "EXT-OC");
    ts_http_call("POST", url, json_headers, first, &r);
    ts_assert_error(&r, 502, "ALIPAY_UNAVAILABLE", NULL);
    ts_assert_field(&r, "error.alipay.sub_code", "SYSTEM_ERROR");
    ts_http_free(&r);
    open_card(&st, "oc-open", "EXT-OC", &biz);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct outcome_case *c = &cases[i];
        char serial[32], occur[32], card[48];
        snprintf(serial, sizeof(serial), "oc-up-%zu", i);
        snprintf(occur, sizeof(occur), "2026-11-30 10:%02zu:00", i);
        snprintf(card, sizeof(card), "{\"point\":\"%zu\"}", 500 + i);
        fault(&st.sim, c->mode, METHOD_UPDATE, biz, 0, 1);
        char *body = update_body(serial, occur, card, "1");
        patch(&st, biz, body, &r);
        if (c->code)
            ts_assert_error(&r, c->status, c->code, NULL);
        else
            ck_assert_msg(r.status == c->status, "%s: %ld %s", c->mode, r.status, r.body);
        ts_http_free(&r);
        patch(&st, biz, body, &r);
        ck_assert_msg(r.status == 200, "%s, retry: %ld %s", c->mode, r.status, r.body);
        char *replayed = ts_http_header(&r, "Idempotent-Replayed");
        ck_assert_int_eq(replayed != NULL, c->final);
        free(replayed);
        ts_http_free(&r);
        free(body);
        char *point = sim_card_info(&st.sim, biz, "point");
        ck_assert_msg(atoi(point) == (int)(500 + i), "%s: point %s", c->mode, point);
        free(point);
    }
    /* An answer later than the gateway timeout: 504, then the retry. */
    fault(&st.sim, "delay", METHOD_UPDATE, biz, 3000, 1);
    char *body = update_body("oc-up-late", "2026-11-30 11:00:00", "{\"level\":\"LATE\"}", NULL);
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 504, "ALIPAY_TIMEOUT", NULL);
    ts_http_free(&r);
    free(body);

    /* Delete: a 20000, then the retry with the same serial deletes it. */
    char *biz2;
    open_card(&st, "oc-open-2", "EXT-OC-2", &biz2);
    fault(&st.sim, "code_20000", METHOD_DELETE, "oc-del", 0, 1);
    del(&st, biz2, "out_serial_no=oc-del&reason_code=USER_UNBUND", &r);
    ts_assert_error(&r, 502, "ALIPAY_UNAVAILABLE", NULL);
    ts_http_free(&r);
    ck_assert_int_eq(
        db_long(&st, "SELECT count(*) FROM cards WHERE biz_card_no = '%s' AND status = 'active'",
                biz2),
        1);
    del(&st, biz2, "out_serial_no=oc-del&reason_code=USER_UNBUND", &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    free(biz2);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* ------------------------------------------------------------ validation */

struct bad_update {
    const char *body;
    const char *field;
};

/* Each refusal names its field, and nothing reaches the gateway. */
START_TEST(test_validation_errors)
{
    static const struct bad_update cases[] = {
        {"{\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"point\":\"1\"}}", "out_serial_no"},
        {"{\"out_serial_no\":\"v1\",\"card\":{\"point\":\"1\"}}", "occur_time"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-02-30 10:15:00\",\"card\":{\"point\":"
         "\"1\"}}",
         "occur_time"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-11-30 10:15:00\"}", "card"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{}}", "card"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"open_"
         "date\":\"2024-02-20 21:20:46\"}}",
         "card.open_date"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"valid_"
         "date\":\"2031-02-20 21:20:46\"}}",
         "card.valid_date"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"point\":"
         "\"1.234\"}}",
         "card.point"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"balance\":"
         "\"-1\"}}",
         "card.balance"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"colour\":"
         "\"red\"}}",
         "card.colour"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"front_text_"
         "list\":[{\"label\":\"专业课程A\",\"value\":\"x\"}]}}",
         "card.front_text_list[0].label"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"point\":"
         "\"1\"},\"changed_point\":\"2e3\"}",
         "changed_point"},
        {"{\"out_serial_no\":\"v1\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{\"point\":"
         "\"1\"},\"member\":{}}",
         "member"},
    };
    struct ts_stack st;
    struct ts_http r;
    char *biz;
    stack_up(&st, NULL);
    open_card(&st, "val-open", "EXT-VAL", &biz);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        patch(&st, biz, cases[i].body, &r);
        ts_assert_error(&r, 400, "INVALID_PARAMETER", cases[i].field);
        ts_http_free(&r);
    }
    patch(&st, biz, "{\"out_serial_no\":", &r);
    ts_assert_error(&r, 400, "MALFORMED_JSON", NULL);
    ts_http_free(&r);
    /* A key said twice means nothing sure: refused, not the last one kept. */
    patch(&st, biz,
          "{\"out_serial_no\":\"v-dup\",\"occur_time\":\"2026-11-30 10:15:00\",\"card\":{"
          "\"point\":\"1\",\"point\":\"99999\"}}",
          &r);
    ts_assert_error(&r, 400, "MALFORMED_JSON", NULL);
    ts_http_free(&r);

    static const char *const bad_deletes[][2] = {
        {"out_serial_no=d1", "reason_code"},
        {"out_serial_no=d1&reason_code=LOST", "reason_code"},
        {"reason_code=CANCEL", "out_serial_no"},
        {"out_serial_no=123456789012345678901234567890123&reason_code=CANCEL", "out_serial_no"},
        {"out_serial_no=d1&reason_code=CANCEL&force=1", "force"},
    };
    for (size_t i = 0; i < sizeof(bad_deletes) / sizeof(bad_deletes[0]); i++) {
        del(&st, biz, bad_deletes[i][0], &r);
        ts_assert_error(&r, 400, "INVALID_PARAMETER", bad_deletes[i][1]);
        ts_http_free(&r);
    }

    /* A card cardgate never opened: 404, no gateway call. */
    char *body = update_body("v-unknown", "2026-11-30 10:15:00", "{\"point\":\"1\"}", NULL);
    patch(&st, "99999999999999", body, &r);
    ts_assert_error(&r, 404, "CARD_NOT_FOUND", NULL);
    ts_http_free(&r);
    free(body);
    del(&st, "99999999999999", "out_serial_no=d-unknown&reason_code=CANCEL", &r);
    ts_assert_error(&r, 404, "CARD_NOT_FOUND", NULL);
    ts_http_free(&r);

    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 0);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_DELETE), 0);
    ck_assert_int_eq(ts_pg_long(st.db, "SELECT count(*) FROM card_requests WHERE operation <> "
                                       "'open'"),
                     0);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* Alipay answers CARD_NOT_EXIT (the member removed the card in the
 * wallet): 404 CARD_NOT_FOUND, final and replayed. */
START_TEST(test_card_gone_at_alipay)
{
    struct ts_stack st;
    struct ts_http r;
    char *biz;
    stack_up(&st, NULL);
    open_card(&st, "gone-open", "EXT-GONE", &biz);
    /* The card disappears at Alipay behind cardgate's back: deleted there
     * directly through the gateway by another delete call. */
    del(&st, biz, "out_serial_no=gone-del&reason_code=USER_UNBUND", &r);
    ck_assert_int_eq(r.status, 200);
    ts_http_free(&r);
    ck_assert_int_eq(ts_pg_long(st.db, "UPDATE cards SET status = 'active' RETURNING 1"), 1);

    char *body = update_body("gone-up", "2026-11-30 10:15:00", "{\"point\":\"1\"}", NULL);
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 404, "CARD_NOT_FOUND", NULL);
    ts_assert_field(&r, "error.alipay.sub_code", "CARD_NOT_EXIT");
    ts_http_free(&r);
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 404, "CARD_NOT_FOUND", NULL);
    assert_header(&r, "Idempotent-Replayed", "true");
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 1);
    free(body);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* ----------------------------------------------------------- concurrency */

/* 50 concurrent PATCHes with one out_serial_no while Alipay holds the
 * first: one gateway call, one 200, the rest 409 REQUEST_IN_PROGRESS. */
START_TEST(test_concurrent_same_serial_one_call)
{
    struct ts_stack st;
    char *biz;
    const char *env[] = {"CARDGATE_ALIPAY_TIMEOUT_MS=20000", NULL};
    stack_up(&st, env);
    open_card(&st, "same-open", "EXT-SAME", &biz);
    fault(&st.sim, "delay", METHOD_UPDATE, biz, 1500, 0);

    enum { N = 50 };
    struct ts_http out[N];
    const char *urls[N];
    char url[160];
    snprintf(url, sizeof(url), "%s/v1/cards/%s", st.cg.url, biz);
    for (int i = 0; i < N; i++)
        urls[i] = url;
    char *body = update_body("same-1", "2026-11-30 10:15:00", "{\"point\":\"100\"}", "12");
    ts_http_parallel(N, "PATCH", urls, json_headers, body, out);
    int ok = 0, in_progress = 0;
    for (int i = 0; i < N; i++) {
        if (out[i].status == 200) {
            ok++;
        } else {
            ts_assert_error(&out[i], 409, "REQUEST_IN_PROGRESS", NULL);
            char *retry = ts_http_header(&out[i], "Retry-After");
            ck_assert_ptr_nonnull(retry);
            free(retry);
            in_progress++;
        }
        ts_http_free(&out[i]);
    }
    ck_assert_int_eq(ok, 1);
    ck_assert_int_eq(in_progress, N - 1);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 1);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "points_messages"), 1);
    free(body);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

struct change_call {
    char url[200];
    char body[512];
    struct ts_http r;
};

static void *change_thread(void *arg)
{
    struct change_call *c = arg;
    ts_http_call("PATCH", c->url, json_headers, c->body, &c->r);
    return NULL;
}

/* 20 concurrent PATCHes of one card with different serial numbers, sent to
 * two instances sharing the database: never two in flight at Alipay, and
 * every answer is 200 or 409 CARD_BUSY with Retry-After. */
START_TEST(test_one_change_of_a_card_in_flight)
{
    struct ts_stack st;
    struct ts_cardgate second;
    char *biz;
    const char *env[] = {"CARDGATE_ALIPAY_TIMEOUT_MS=20000", NULL};
    stack_up(&st, env);
    ck_assert_int_eq(ts_cardgate_start(&second, st.db, &st.sim, env), 0);
    open_card(&st, "busy-open", "EXT-BUSY", &biz);
    fault(&st.sim, "delay", METHOD_UPDATE, biz, 400, 0);

    enum { N = 20 };
    struct change_call calls[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        snprintf(calls[i].url, sizeof(calls[i].url), "%s/v1/cards/%s",
                 i % 2 ? second.url : st.cg.url, biz);
        char serial[32], card[64];
        snprintf(serial, sizeof(serial), "busy-%02d", i);
        snprintf(card, sizeof(card), "{\"point\":\"%d\"}", 100 + i);
        char *b = update_body(serial, "2026-11-30 10:15:00", card, "1");
        snprintf(calls[i].body, sizeof(calls[i].body), "%s", b);
        free(b);
        pthread_create(&th[i], NULL, change_thread, &calls[i]);
    }
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (calls[i].r.status == 200) {
            ok++;
        } else {
            ts_assert_error(&calls[i].r, 409, "CARD_BUSY", NULL);
            char *retry = ts_http_header(&calls[i].r, "Retry-After");
            ck_assert_ptr_nonnull(retry);
            free(retry);
            busy++;
        }
        ts_http_free(&calls[i].r);
    }
    ck_assert_int_ge(ok, 1);
    ck_assert_int_eq(ok + busy, N);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), ok);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "max_in_flight"), 1);
    /* The card's lock is free again: a later change goes through. */
    char *body = update_body("busy-after", "2026-11-30 10:15:00", "{\"point\":\"7\"}", NULL);
    struct ts_http r;
    patch(&st, biz, body, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    free(body);
    free(biz);
    ck_assert_int_eq(ts_cardgate_stop(&second), 0);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* --------------------------------------------------------------- ordering */

/* An update that failed (20000), a newer one that succeeded, then the late
 * retry of the first: 409 STALE_UPDATE, never sent, the card unchanged. */
START_TEST(test_late_older_update_is_stale)
{
    struct ts_stack st;
    struct ts_http r;
    char *biz;
    stack_up(&st, NULL);
    open_card(&st, "stale-open", "EXT-STALE", &biz);
    fault(&st.sim, "code_20000", METHOD_UPDATE, biz, 0, 1);

    char *older = update_body("stale-old", "2026-11-30 10:00:00", "{\"point\":\"100\"}", "12");
    patch(&st, biz, older, &r);
    ts_assert_error(&r, 502, "ALIPAY_UNAVAILABLE", NULL);
    ts_http_free(&r);

    char *newer = update_body("stale-new", "2026-11-30 10:05:00", "{\"point\":\"200\"}", "100");
    patch(&st, biz, newer, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    long calls = ts_sim_method_calls(&st.sim, METHOD_UPDATE);

    patch(&st, biz, older, &r);
    ts_assert_error(&r, 409, "STALE_UPDATE", "occur_time");
    ts_http_free(&r);
    /* A new serial with the old time is just as stale. */
    char *again = update_body("stale-old-2", "2026-11-30 10:04:59", "{\"point\":\"100\"}", NULL);
    patch(&st, biz, again, &r);
    ts_assert_error(&r, 409, "STALE_UPDATE", "occur_time");
    ts_http_free(&r);

    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), calls);
    char *point = sim_card_info(&st.sim, biz, "point");
    ck_assert_str_eq(point, "200");
    free(point);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "updates"), 1);
    ck_assert_int_eq(db_long(&st, "SELECT point FROM cards WHERE biz_card_no = '%s'", biz), 200);
    /* The same time again is not older: it goes. */
    char *same = update_body("stale-same", "2026-11-30 10:05:00", "{\"point\":\"201\"}", NULL);
    patch(&st, biz, same, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    free(older);
    free(newer);
    free(again);
    free(same);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* ----------------------------------------------------- unknown outcomes */

struct bg_change {
    const char *method, *url, *body;
    struct ts_http r;
};

static void *bg_change(void *arg)
{
    struct bg_change *c = arg;
    ts_http_call(c->method, c->url, c->body ? json_headers : auth_headers, c->body, &c->r);
    return NULL;
}

static int wait_card_long(const struct ts_sim *sim, const char *biz, const char *key, long want)
{
    for (int i = 0; i < 500; i++) {
        if (sim_card_long(sim, biz, key) >= want)
            return 0;
        usleep(20000);
    }
    return -1;
}

/* Alipay applied the update but cardgate timed out: the retry queries the
 * card, finds the update there, and records success without sending it
 * again — one points message for the member. */
START_TEST(test_timeout_then_retry_no_second_points_message)
{
    struct ts_stack st;
    struct ts_http r;
    char *biz;
    stack_up(&st, NULL); /* gateway timeout 2 s */
    open_card(&st, "to-open", "EXT-TO", &biz);
    fault(&st.sim, "delay", METHOD_UPDATE, biz, 3000, 1);

    char *body = update_body("to-up", "2026-11-30 10:15:00",
                             "{\"point\":\"120\",\"balance\":\"88.5\",\"level\":\"VIP2\"}", "20");
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 504, "ALIPAY_TIMEOUT", NULL);
    ts_http_free(&r);
    ck_assert_int_eq(wait_card_long(&st.sim, biz, "updates", 1), 0);
    long queries = ts_sim_method_calls(&st.sim, METHOD_QUERY);

    patch(&st, biz, body, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 1);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_QUERY), queries + 1);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "points_messages"), 1);
    ck_assert_int_eq(db_long(&st,
                             "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND "
                             "state = 'succeeded' AND attempts = 2",
                             "to-up"),
                     1);
    ck_assert_int_eq(db_long(&st, "SELECT balance * 10 FROM cards WHERE biz_card_no = '%s'", biz),
                     885);
    free(body);

    /* A 20000 changed nothing: the retry's query shows the old values and
     * the update is sent again (one message, from the one that worked). */
    fault(&st.sim, "code_20000", METHOD_UPDATE, biz, 0, 1);
    body = update_body("to-up-2", "2026-11-30 10:20:00", "{\"point\":\"140\"}", "20");
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 502, "ALIPAY_UNAVAILABLE", NULL);
    ts_http_free(&r);
    patch(&st, biz, body, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 3);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "points_messages"), 2);
    char *point = sim_card_info(&st.sim, biz, "point");
    ck_assert_str_eq(point, "140");
    free(point);
    free(body);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* A call that timed out may still land at Alipay: until the lock margin
 * has passed, no other change of the card goes (409 CARD_BUSY), so the late
 * call cannot land after a newer one. Its own retry checks the card and
 * does not send it again; a retry whose check fails checks again next
 * time. */
START_TEST(test_timed_out_change_holds_the_card)
{
    struct ts_stack st;
    struct ts_http r;
    char *biz;
    const char *env[] = {"CARDGATE_LOCK_MARGIN_MS=3000", NULL};
    stack_up(&st, env); /* gateway timeout 2 s */
    open_card(&st, "hold-open", "EXT-HOLD", &biz);
    fault(&st.sim, "delay", METHOD_UPDATE, biz, 3000, 1);

    char *body = update_body("hold-1", "2026-11-30 10:00:00", "{\"point\":\"100\"}", "10");
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 504, "ALIPAY_TIMEOUT", NULL);
    ts_http_free(&r);
    /* Alipay may still carry it out: a newer change waits. */
    char *newer = update_body("hold-2", "2026-11-30 11:00:00", "{\"point\":\"200\"}", NULL);
    patch(&st, biz, newer, &r);
    ts_assert_error(&r, 409, "CARD_BUSY", NULL);
    ts_http_free(&r);

    /* The late call lands; the retry's check fails once (the query is
     * refused), which leaves the outcome unknown: the next retry checks
     * again instead of sending. */
    ck_assert_int_eq(wait_card_long(&st.sim, biz, "updates", 1), 0);
    fault(&st.sim, "error_response", METHOD_QUERY, biz, 0, 1);
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 502, "ALIPAY_UNAVAILABLE", NULL);
    ts_http_free(&r);
    patch(&st, biz, body, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 1);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "points_messages"), 1);

    /* The newer change goes now, after the late one: the card ends newest. */
    patch(&st, biz, newer, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    char *point = sim_card_info(&st.sim, biz, "point");
    ck_assert_str_eq(point, "200");
    free(point);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "max_in_flight"), 1);
    free(body);
    free(newer);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* A retry that checks the card before sending makes two gateway calls in a
 * row; its lock lasts for both, so a second retry arriving after one
 * timeout plus the margin does not take it over and send again. */
START_TEST(test_verify_then_send_keeps_the_lock)
{
    struct ts_stack st;
    struct ts_http r;
    char *biz, url[200];
    stack_up(&st, NULL); /* gateway timeout 2 s, lock margin 1 s */
    open_card(&st, "keep-open", "EXT-KEEP", &biz);
    snprintf(url, sizeof(url), "%s/v1/cards/%s", st.cg.url, biz);
    fault(&st.sim, "code_20000", METHOD_UPDATE, biz, 0, 1);
    char *body = update_body("keep-1", "2026-11-30 10:00:00", "{\"point\":\"100\"}", "10");
    patch(&st, biz, body, &r);
    ts_assert_error(&r, 502, "ALIPAY_UNAVAILABLE", NULL);
    ts_http_free(&r);

    /* The retry: its check takes 1.5 s and the update 1.9 s, 3.4 s in all,
     * more than one timeout plus the margin. */
    fault(&st.sim, "delay", METHOD_QUERY, biz, 1500, 1);
    fault(&st.sim, "delay", METHOD_UPDATE, biz, 1900, 1);
    struct bg_change first = {.method = "PATCH", .url = url, .body = body};
    pthread_t th;
    pthread_create(&th, NULL, bg_change, &first);
    usleep(3150000);
    patch(&st, biz, body, &r);
    ck_assert_msg(r.status == 409 || r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    pthread_join(th, NULL);
    ck_assert_msg(first.r.status == 200, "%ld %s", first.r.status, first.r.body);
    ts_http_free(&first.r);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "updates"), 1);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "points_messages"), 1);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "max_in_flight"), 1);
    free(body);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* Sends method url body in the background, waits until the simulator has
 * the call (calls of `sim_method` reach want), then kill -9s cardgate. */
static void kill_mid_call(struct ts_stack *st, const char *method, const char *url,
                          const char *body, const char *sim_method, long want)
{
    struct bg_change bg = {.method = method, .url = url, .body = body};
    pthread_t th;
    pthread_create(&th, NULL, bg_change, &bg);
    int seen = 0;
    for (int i = 0; i < 500 && !seen; i++) {
        seen = ts_sim_method_calls(&st->sim, sim_method) >= want;
        if (!seen)
            usleep(10000);
    }
    ck_assert_int_eq(seen, 1);
    kill(st->cg.pid, SIGKILL);
    waitpid(st->cg.pid, NULL, 0);
    st->cg.pid = -1;
    pthread_join(th, NULL);
    ck_assert_int_eq(bg.r.status, 0); /* the caller saw the connection die */
    ts_http_free(&bg.r);
}

/* Retries until the answer is not 409 (the dead holder's lock runs out
 * after the gateway timeout plus the margin), returning it in r. */
static void retry_past_lock(struct ts_stack *st, const char *method, const char *url,
                            const char *body, struct ts_http *r)
{
    for (int i = 0; i < 200; i++) {
        ts_http_call(method, url, body ? json_headers : auth_headers, body, r);
        if (r->status != 409)
            return;
        char *code = ts_json_at(r, "error.code");
        ck_assert_str_eq(code, "REQUEST_IN_PROGRESS");
        free(code);
        ts_http_free(r);
        usleep(100000);
    }
    ck_abort_msg("still in progress");
}

/* kill -9 while Alipay holds an update and while it holds a delete; after a
 * restart the retries take the requests over, and each change happened
 * exactly once at the simulator. */
START_TEST(test_kill_mid_update_and_delete)
{
    struct ts_stack st;
    struct ts_http r;
    char *biz, url[200], durl[260];
    stack_up(&st, NULL); /* gateway timeout 2 s, lock margin 1 s */
    open_card(&st, "kill-open", "EXT-KILL", &biz);
    snprintf(url, sizeof(url), "%s/v1/cards/%s", st.cg.url, biz);

    /* The update: Alipay applies it (after 1.5 s) while cardgate is dead. */
    fault(&st.sim, "delay", METHOD_UPDATE, biz, 1500, 1);
    char *body = update_body("kill-up", "2026-11-30 10:15:00", "{\"point\":\"300\"}", "50");
    kill_mid_call(&st, "PATCH", url, body, METHOD_UPDATE, 1);
    ck_assert_int_eq(db_long(&st,
                             "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s' AND "
                             "state = 'pending'",
                             "kill-up"),
                     1);
    ck_assert_int_eq(ts_cardgate_start(&st.cg, st.db, &st.sim, NULL), 0);
    snprintf(url, sizeof(url), "%s/v1/cards/%s", st.cg.url, biz);
    ck_assert_int_eq(wait_card_long(&st.sim, biz, "updates", 1), 0);
    retry_past_lock(&st, "PATCH", url, body, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 1);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "updates"), 1);
    ck_assert_int_eq(sim_card_long(&st.sim, biz, "points_messages"), 1);
    ck_assert_int_eq(db_long(&st, "SELECT point FROM cards WHERE biz_card_no = '%s'", biz), 300);
    free(body);

    /* The delete: Alipay dedups on its out_serial_no, so it is sent again. */
    fault(&st.sim, "delay", METHOD_DELETE, "kill-del", 1500, 1);
    snprintf(durl, sizeof(durl), "%s/v1/cards/%s?out_serial_no=kill-del&reason_code=PRESENT",
             st.cg.url, biz);
    kill_mid_call(&st, "DELETE", durl, NULL, METHOD_DELETE, 1);
    ck_assert_int_eq(ts_cardgate_start(&st.cg, st.db, &st.sim, NULL), 0);
    snprintf(durl, sizeof(durl), "%s/v1/cards/%s?out_serial_no=kill-del&reason_code=PRESENT",
             st.cg.url, biz);
    retry_past_lock(&st, "DELETE", durl, NULL, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    char *at_sim = sim_card_str(&st.sim, biz, "biz_serial_no");
    ts_assert_field(&r, "biz_serial_no", at_sim);
    free(at_sim);
    ts_http_free(&r);
    char *status = sim_card_str(&st.sim, biz, "status");
    ck_assert_str_eq(status, "deleted");
    free(status);
    ck_assert_int_eq(ts_sim_calls(&st.sim, "kill-del"), 2);
    ck_assert_int_eq(db_long(&st,
                             "SELECT count(*) FROM cards WHERE biz_card_no = '%s' AND status = "
                             "'deleted' AND delete_reason = 'PRESENT'",
                             biz),
                     1);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

/* One deadline per request (CARDGATE_REQUEST_DEADLINE_MS) covers the wait
 * for the database too: a claim stuck behind another transaction's lock on
 * the card gives up at the deadline, answers 503, and commits nothing — the
 * caller's retry starts clean, and nothing was sent. */
START_TEST(test_deadline_covers_the_ledger)
{
    struct ts_stack st;
    struct ts_http r;
    char *biz;
    const char *env[] = {"CARDGATE_REQUEST_DEADLINE_MS=1500", NULL};
    stack_up(&st, env);
    open_card(&st, "dl-open", "EXT-DL", &biz);

    /* Another transaction holds the card's row. */
    PGconn *holder = PQconnectdb(st.db);
    ck_assert_int_eq(PQstatus(holder), CONNECTION_OK);
    char sql[256];
    snprintf(sql, sizeof(sql), "BEGIN; SELECT 1 FROM cards WHERE biz_card_no = '%s' FOR UPDATE",
             biz);
    PGresult *res = PQexec(holder, sql);
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);

    char *body = update_body("dl-1", "2026-11-30 10:00:00", "{\"point\":\"5\"}", NULL);
    long long t0 = ts_now_ms();
    patch(&st, biz, body, &r);
    long long took = ts_now_ms() - t0;
    ts_assert_error(&r, 503, "DATABASE_UNAVAILABLE", NULL);
    ts_http_free(&r);
    /* The deadline, not the pool's 10 s query timeout. */
    ck_assert_msg(took < 6000, "the answer took %lld ms", took);

    res = PQexec(holder, "ROLLBACK");
    PQclear(res);
    PQfinish(holder);
    usleep(300000);
    /* The claim gave up inside the database: nothing of it is left. */
    ck_assert_int_eq(
        db_long(&st, "SELECT count(*) FROM card_requests WHERE out_serial_no = '%s'", "dl-1"), 0);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, METHOD_UPDATE), 0);
    patch(&st, biz, body, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ts_http_free(&r);
    free(body);
    free(biz);
    ck_assert_int_eq(ts_stack_down(&st), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("card_changes");
    TCase *tc = tcase_create("card_changes");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_update_and_delete_round_trip);
    tcase_add_test(tc, test_update_every_field);
    tcase_add_test(tc, test_gateway_outcomes_for_changes);
    tcase_add_test(tc, test_validation_errors);
    tcase_add_test(tc, test_card_gone_at_alipay);
    tcase_add_test(tc, test_concurrent_same_serial_one_call);
    tcase_add_test(tc, test_one_change_of_a_card_in_flight);
    tcase_add_test(tc, test_late_older_update_is_stale);
    tcase_add_test(tc, test_timeout_then_retry_no_second_points_message);
    tcase_add_test(tc, test_kill_mid_update_and_delete);
    tcase_add_test(tc, test_timed_out_change_holds_the_card);
    tcase_add_test(tc, test_verify_then_send_keeps_the_lock);
    tcase_add_test(tc, test_deadline_covers_the_ledger);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
