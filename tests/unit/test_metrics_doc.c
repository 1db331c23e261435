/* Every metric /metrics shows is described in the README's metrics table,
 * and every metric an alert rule (deploy/prometheus/alerts.yml, read with
 * libyaml) uses is one /metrics shows: no alert on a name that never comes. */
#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "support.h"
#include "yamldoc.h"

#define README CARDGATE_SOURCE_DIR "/README.md"
#define ALERTS CARDGATE_SOURCE_DIR "/deploy/prometheus/alerts.yml"
#define MAX_NAMES 64

/* The metric names of the exposition, from its "# TYPE" lines. */
static size_t metric_names(char names[][96], size_t max)
{
    static struct metrics m;
    metrics_init(&m);
    char *text = metrics_render(&m);
    ck_assert_ptr_nonnull(text);
    size_t n = 0;
    for (const char *p = strstr(text, "# TYPE "); p && n < max; p = strstr(p + 1, "# TYPE ")) {
        ck_assert_int_eq(sscanf(p, "# TYPE %95s", names[n]), 1);
        n++;
    }
    free(text);
    ck_assert_uint_gt(n, 10);
    return n;
}

/* A series name as an alert writes it, without a histogram's suffix. */
static void base_name(char *s)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    size_t n = strlen(s);
    for (size_t i = 0; i < 3; i++) {
        size_t k = strlen(suffixes[i]);
        if (n > k && strcmp(s + n - k, suffixes[i]) == 0 && strstr(s, "_seconds")) {
            s[n - k] = '\0';
            return;
        }
    }
}

START_TEST(test_readme_describes_every_metric)
{
    char names[MAX_NAMES][96];
    size_t n = metric_names(names, MAX_NAMES);
    char *readme = ts_read_file(README, NULL);
    ck_assert_ptr_nonnull(readme);
    const char *table = strstr(readme, "### Metrics");
    ck_assert_msg(table != NULL, "README has no Metrics section");
    for (size_t i = 0; i < n; i++) {
        char cell[128];
        snprintf(cell, sizeof(cell), "| `%.95s`", names[i]);
        ck_assert_msg(strstr(table, cell), "README's metrics table does not describe %s", names[i]);
    }
    free(readme);
}
END_TEST

START_TEST(test_alerts_use_real_metrics)
{
    char names[MAX_NAMES][96];
    size_t n = metric_names(names, MAX_NAMES), rules = 0;
    struct ts_ydoc y = {0};
    char err[256];
    ck_assert_msg(ts_ydoc_load(&y, ALERTS, err, sizeof(err)) == 0, "%s", err);
    for (size_t i = 0; i < y.n; i++) {
        if (strcmp(y.e[i].path, "groups|-|rules|-|expr") != 0)
            continue;
        rules++;
        for (const char *p = strstr(y.e[i].value, "cardgate_"); p; p = strstr(p + 1, "cardgate_")) {
            if (p != y.e[i].value && (isalnum((unsigned char)p[-1]) || p[-1] == '_'))
                continue;
            char used[96];
            size_t k = strspn(p, "abcdefghijklmnopqrstuvwxyz_");
            snprintf(used, sizeof(used), "%.*s", (int)k, p);
            base_name(used);
            int known = 0;
            for (size_t j = 0; j < n && !known; j++)
                known = strcmp(names[j], used) == 0;
            ck_assert_msg(known, "alerts.yml uses %s, which /metrics does not show", used);
        }
    }
    /* The four: the gateway refusing us, stale requests, the
     * database down, the error rate. */
    ck_assert_uint_ge(rules, 4);
    static const char *const wanted[] = {"result=\"refused\"", "cardgate_stale_requests",
                                         "cardgate_db_connections_up", "status=~\"5..\""};
    for (size_t w = 0; w < 4; w++) {
        int found = 0;
        for (size_t i = 0; i < y.n && !found; i++)
            found = strcmp(y.e[i].path, "groups|-|rules|-|expr") == 0 &&
                    strstr(y.e[i].value, wanted[w]) != NULL;
        ck_assert_msg(found, "no alert rule on %s", wanted[w]);
    }
    ts_ydoc_free(&y);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics_doc");
    TCase *tc = tcase_create("metrics_doc");
    tcase_add_test(tc, test_readme_describes_every_metric);
    tcase_add_test(tc, test_alerts_use_real_metrics);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
