/* service/openapi.yaml against the running service.
 *
 * The reference must stay true: this test reads openapi.yaml with libyaml
 * (tests/support/yamldoc.h) and compares it with a real cardgate, alipay-sim
 * and a fresh database:
 *
 * - every answer the tests provoke must be documented for its path, method
 *   and status: its Content-Type, its headers (documented ones that are
 *   required must be there, the ones the service sends must be documented),
 *   its body valid against the documented schema, so error.code must be in
 *   that response's enum;
 * - every documented (path, method, status) but the 500s (no deterministic
 *   way to make cardgate fail inside) is provoked at least once: the
 *   answers are counted in memory shared by the forked tests, and the last
 *   test checks the count;
 * - request bodies the contract accepts must validate against the request
 *   schema and be accepted by the service; bodies it refuses must fail both,
 *   at the same field;
 * - every path the service answers is documented (probed with unusual
 *   methods and near-miss paths, plus the path literals in the sources), and
 *   405's Allow agrees with the documented methods;
 * - every error code in the service/cardgate sources (literals in the calls
 *   that answer errors: reply_error, error_body, send_page, and the ledger's
 *   refuse, error_text, ledger_stop and ledger_fail_as; and `code = "..."`
 *   assignments) is in the ErrorCode enum and in some response's enum,
 *   and every documented code is used;
 * - the member's sign-up answers HTML pages (text/html): a page is checked
 *   for its Content-Type, its documented headers, and the error code it
 *   shows, which must be the one expected and listed in the response's
 *   x-error-codes (a page of a success shows none).
 *
 * Expected statuses and codes come from spec/api.md §2; the simulator's
 * fault modes (service/alipay-sim/README.md) provoke the gateway outcomes,
 * and its POST /_sim/members plays the member who fills in Alipay's form.
 * The cardgate under test has CARDGATE_PUBLIC_URL set (PUBLIC_URL below);
 * the answers of one without it come from a second cardgate on the same
 * database and simulator.
 * Updates and deletes (PATCH and DELETE /v1/cards/{biz_card_no}) are made
 * on cards the tests open first; the simulator's card records
 * (/_sim/cards) show what reached Alipay, so the tests also check that a
 * change refused by cardgate is never sent and that a retry after an
 * unknown outcome never sends an update (and its points message) twice. */
#include <check.h>
#include <curl/curl.h>
#include <dirent.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "support.h"
#include "yamldoc.h"

#define SPEC_FILE CARDGATE_SOURCE_DIR "/service/openapi.yaml"
#define SERVICE_SRC CARDGATE_SOURCE_DIR "/service/cardgate"

#define TEMPLATE "20170308000000000058101000300045" /* the seeds' template */
#define USER "2088302463082075"                     /* the seeds' user */
#define DATES "\"open_date\":\"2014-02-20 21:20:46\",\"valid_date\":\"2030-02-20 21:20:46\""
#define BEYOND_TIMEOUT_MS 3500                  /* ts_cardgate_start sets a 2 s gateway timeout */
#define PUBLIC_URL "https://cards.example.test" /* where Alipay sends members back */
#define APP_ID "2014072300007148"               /* ts_cardgate_start's */

/* ============================================ the document, read by libyaml */

/* openapi.yaml as a flat list of keys (yamldoc.h), read once. */
static struct ts_ydoc doc;

/* The value at path, or NULL when the document has no such key. */
static const char *yget(const char *path)
{
    for (size_t i = 0; i < doc.n; i++)
        if (strcmp(doc.e[i].path, path) == 0)
            return doc.e[i].value;
    return NULL;
}

/* Joins its arguments (until NULL) with '|' into out; returns out. */
static char *ypath(char *out, size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    out[0] = '\0';
    size_t used = 0;
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *))
        used += (size_t)snprintf(out + used, used < n ? n - used : 0, "%s%s", used ? "|" : "", s);
    va_end(ap);
    return out;
}

/* The value of key under path (path|key), or NULL. */
static const char *ysub(const char *path, const char *key)
{
    char p[1200];
    return yget(ypath(p, sizeof(p), path, key, NULL));
}

/* The keys directly under prefix, in document order; returns how many. */
static size_t ychildren(const char *prefix, const char *out[], size_t max)
{
    size_t n = 0, pl = strlen(prefix);
    for (size_t i = 0; i < doc.n && n < max; i++) {
        const char *p = doc.e[i].path;
        if (strncmp(p, prefix, pl) == 0 && p[pl] == '|' && !strchr(p + pl + 1, '|'))
            out[n++] = p + pl + 1;
    }
    return n;
}

/* "#/components/schemas/X" as a document path. */
static char *ref_path(const char *ref, char *out, size_t n)
{
    snprintf(out, n, "%s", ref + (strncmp(ref, "#/", 2) == 0 ? 2 : 0));
    for (char *c = out; *c; c++)
        if (*c == '/')
            *c = '|';
    return out;
}

/* ============================================= a JSON Schema subset check */

/* The first violation found: where (a body path as api.md writes `field`:
 * card.front_text_list[0].label) and why. */
struct verr {
    int bad;
    char where[256];
    char why[512];
};

static void vfail(struct verr *e, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void vfail(struct verr *e, const char *where, const char *fmt, ...)
{
    if (e->bad++)
        return;
    snprintf(e->where, sizeof(e->where), "%s", where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->why, sizeof(e->why), fmt, ap);
    va_end(ap);
}

static int type_is(json_object *v, const char *t)
{
    switch (json_object_get_type(v)) {
    case json_type_null:
        return strcmp(t, "null") == 0;
    case json_type_boolean:
        return strcmp(t, "boolean") == 0;
    case json_type_int:
        return strcmp(t, "integer") == 0 || strcmp(t, "number") == 0;
    case json_type_double:
        return strcmp(t, "number") == 0;
    case json_type_string:
        return strcmp(t, "string") == 0;
    case json_type_object:
        return strcmp(t, "object") == 0;
    case json_type_array:
        return strcmp(t, "array") == 0;
    }
    return 0;
}

static size_t code_points(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* An ECMA-262 pattern of this file as a POSIX ERE: \uXXXX escapes below
 * U+0080 become the byte (U+0000 becomes 0x01: C strings hold no NUL). */
static int pattern_matches(const char *pattern, const char *s)
{
    char ere[512];
    size_t o = 0;
    for (const char *p = pattern; *p && o < sizeof(ere) - 1; p++) {
        if (p[0] == '\\' && p[1] == 'u' && strlen(p) >= 6) {
            char hex[5] = {p[2], p[3], p[4], p[5], '\0'};
            long cp = strtol(hex, NULL, 16);
            ck_assert_msg(cp < 0x80, "pattern %s: only \\u escapes below U+0080 are supported",
                          pattern);
            ere[o++] = (char)(cp ? cp : 1);
            p += 5;
        } else {
            ere[o++] = *p;
        }
    }
    ere[o] = '\0';
    regex_t re;
    ck_assert_msg(regcomp(&re, ere, REG_EXTENDED | REG_NOSUB) == 0, "bad pattern %s", pattern);
    int m = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return m;
}

static void vcheck(json_object *v, const char *sp, const char *where, struct verr *e);

static void vcheck_object(json_object *v, const char *sp, const char *where, struct verr *e)
{
    char props[1100], sub[1200], w[256];
    const char *x;
    ypath(props, sizeof(props), sp, "properties", NULL);
    json_object_object_foreach(v, k, val)
    {
        snprintf(w, sizeof(w), "%s%s%s", where, *where ? "." : "", k);
        ypath(sub, sizeof(sub), props, k, NULL);
        if (yget(sub))
            vcheck(val, sub, w, e);
        else if ((x = ysub(sp, "additionalProperties")) && strcmp(x, "false") == 0)
            vfail(e, w, "%s is not a documented property", w);
    }
    if ((x = ysub(sp, "minProperties")) &&
        (size_t)json_object_object_length(v) < strtoul(x, NULL, 10))
        vfail(e, where, "%s has fewer than %s properties", where[0] ? where : "the body", x);
    if ((x = ysub(sp, "required"))) {
        char name[128];
        for (const char *p = x; ts_ydoc_flow_next(&p, name, sizeof(name));) {
            snprintf(w, sizeof(w), "%s%s%s", where, *where ? "." : "", name);
            if (!json_object_object_get_ex(v, name, NULL))
                vfail(e, w, "%s is required", w);
        }
    }
    ypath(sub, sizeof(sub), sp, "if", NULL);
    if (yget(sub)) {
        struct verr cond = {0};
        vcheck(v, sub, where, &cond);
        if (!cond.bad)
            vcheck(v, ypath(sub, sizeof(sub), sp, "then", NULL), where, e);
    }
}

static void vcheck_string(json_object *v, const char *sp, const char *where, struct verr *e)
{
    const char *s = json_object_get_string(v), *x;
    if ((x = ysub(sp, "minLength")) && code_points(s) < strtoul(x, NULL, 10))
        vfail(e, where, "%s is shorter than %s characters", where, x);
    if ((x = ysub(sp, "maxLength")) && code_points(s) > strtoul(x, NULL, 10))
        vfail(e, where, "%s is longer than %s characters", where, x);
    if ((x = ysub(sp, "pattern")) &&
        (strlen(s) != (size_t)json_object_get_string_len(v) || !pattern_matches(x, s)))
        vfail(e, where, "%s does not match %s", where, x);
}

/* Checks v against the schema at document path sp: the schema `false`,
 * $ref (with sibling keywords, as OpenAPI 3.1 allows), type, const, enum,
 * string lengths and patterns, integer bounds, properties / required /
 * additionalProperties, minProperties, if-then, items / minItems /
 * maxItems. What the file uses, no more. */
static void vcheck(json_object *v, const char *sp, const char *where, struct verr *e)
{
    char rp[512];
    const char *x;
    ck_assert_msg(yget(sp) != NULL, "openapi.yaml has no schema at %s", sp);
    if (strcmp(yget(sp), "false") == 0) { /* nothing is valid */
        vfail(e, where, "%s is not allowed", where);
        return;
    }
    if ((x = ysub(sp, "$ref")))
        vcheck(v, ref_path(x, rp, sizeof(rp)), where, e);
    if ((x = ysub(sp, "type"))) {
        int ok = x[0] == '[' ? 0 : type_is(v, x);
        char t[32];
        for (const char *p = x; x[0] == '[' && ts_ydoc_flow_next(&p, t, sizeof(t));)
            ok = ok || type_is(v, t);
        if (!ok) {
            vfail(e, where, "%s is not of type %s", where, x);
            return;
        }
    }
    if ((x = ysub(sp, "const")) && strcmp(json_object_get_string(v), x) != 0)
        vfail(e, where, "%s is not %s", where, x);
    if ((x = ysub(sp, "enum")) && !ts_ydoc_flow_has(x, json_object_get_string(v)))
        vfail(e, where, "%s: %s is not one of %s", where, json_object_get_string(v), x);
    switch (json_object_get_type(v)) {
    case json_type_string:
        vcheck_string(v, sp, where, e);
        break;
    case json_type_int:
        if ((x = ysub(sp, "minimum")) && json_object_get_int64(v) < strtoll(x, NULL, 10))
            vfail(e, where, "%s is below %s", where, x);
        if ((x = ysub(sp, "maximum")) && json_object_get_uint64(v) > strtoull(x, NULL, 10))
            vfail(e, where, "%s is above %s", where, x);
        break;
    case json_type_object:
        vcheck_object(v, sp, where, e);
        break;
    case json_type_array: {
        size_t n = json_object_array_length(v);
        char items[1100], w[256];
        if ((x = ysub(sp, "minItems")) && n < strtoul(x, NULL, 10))
            vfail(e, where, "%s has fewer than %s items", where, x);
        if ((x = ysub(sp, "maxItems")) && n > strtoul(x, NULL, 10))
            vfail(e, where, "%s has more than %s items", where, x);
        ypath(items, sizeof(items), sp, "items", NULL);
        for (size_t i = 0; i < n && yget(items); i++) {
            snprintf(w, sizeof(w), "%s[%zu]", where, i);
            vcheck(json_object_array_get_idx(v, i), items, w, e);
        }
        break;
    }
    default:
        break;
    }
}

/* ============================================= the environment and calls */

static struct ts_stack st; /* the database, the simulator and cardgate */
/* A second cardgate on the same database and simulator, without
 * CARDGATE_PUBLIC_URL (members' sign-up off). Started with the first, so
 * both run the same build. */
static struct ts_cardgate off;

/* Documented (path, method, status) triples and whether an answer was seen,
 * in memory the forked tests share with the runner. */
#define MAX_TRIPLES 256
struct triple {
    char path[64], method[8];
    int status;
};
static struct triple triples[MAX_TRIPLES];
static size_t ntriples;
static int *seen; /* MAP_SHARED, one per triple */

static const char *const METHODS[] = {"get",     "put",  "post",  "delete",
                                      "options", "head", "patch", NULL};

static int is_method(const char *k)
{
    for (size_t i = 0; METHODS[i]; i++)
        if (strcmp(k, METHODS[i]) == 0)
            return 1;
    return 0;
}

static void env_down(void)
{
    ts_cardgate_stop(&off);
    ts_stack_down(&st);
}

/* Unchecked (runs once in the runner): reads the spec, lists its triples,
 * starts a fresh database, the simulator and cardgate. */
static void env_up(void)
{
    char err[256], p[600];
    if (doc.n == 0)
        ck_assert_msg(ts_ydoc_load(&doc, SPEC_FILE, err, sizeof(err)) == 0, "openapi.yaml: %s",
                      err);
    const char *paths[32], *methods[16], *codes[32];
    size_t np = ychildren("paths", paths, 32);
    for (size_t i = 0; i < np; i++) {
        size_t nm = ychildren(ypath(p, sizeof(p), "paths", paths[i], NULL), methods, 16);
        for (size_t j = 0; j < nm; j++) {
            if (!is_method(methods[j]))
                continue;
            size_t nc = ychildren(
                ypath(p, sizeof(p), "paths", paths[i], methods[j], "responses", NULL), codes, 32);
            for (size_t k = 0; k < nc && ntriples < MAX_TRIPLES; k++) {
                struct triple *t = &triples[ntriples++];
                snprintf(t->path, sizeof(t->path), "%s", paths[i]);
                snprintf(t->method, sizeof(t->method), "%s", methods[j]);
                t->status = atoi(codes[k]);
            }
        }
    }
    seen = mmap(NULL, MAX_TRIPLES * sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                -1, 0);
    ck_assert(seen != MAP_FAILED);
    memset(seen, 0, MAX_TRIPLES * sizeof(int));

    /* The seeds' template, and one of the longest id the contract allows. */
    const char *templates[] = {"--templates", TEMPLATE ",xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", NULL};
    const char *env[] = {"CARDGATE_PUBLIC_URL=" PUBLIC_URL, NULL};
    char why[512];
    ck_assert_msg(ts_stack_up(&st, templates, env, why, sizeof(why)) == 0, "%s", why);
    unsetenv("CARDGATE_PUBLIC_URL"); /* the second one's environment */
    ck_assert_msg(ts_cardgate_start(&off, st.db, &st.sim, NULL) == 0,
                  "the cardgate without CARDGATE_PUBLIC_URL did not start; see %s", off.log);
}

static const char *const AUTH_JSON[] = {TS_AUTH, TS_JSON, NULL};
static const char *const AUTH[] = {TS_AUTH, NULL};

/* One call to cardgate; target is the path and query. */
static void api(struct ts_http *r, const char *method, const char *target,
                const char *const headers[], const char *body)
{
    char url[2048];
    snprintf(url, sizeof(url), "%s%s", st.cg.url, target);
    int rc = ts_http_call(method, url, headers, body, r);
    ck_assert_msg(rc == 0, "%s %s: no HTTP answer (cardgate's log: %s)", method, target, st.cg.log);
}

/* A HEAD call. */
static void api_head(struct ts_http *r, const char *target)
{
    api(r, "HEAD", target, NULL, NULL);
}

/* =============================================== an answer against the spec */

/* The document path of a response (following a $ref into
 * components/responses), or -1 when it is not documented. */
static int response_base(const char *base, char *out, size_t n)
{
    const char *ref;
    if (!yget(base))
        return -1;
    snprintf(out, n, "%s", base);
    if ((ref = ysub(base, "$ref"))) {
        ref_path(ref, out, n);
        if (!yget(out))
            return -1;
    }
    return 0;
}

static const char *const WATCHED_HEADERS[] = {
    "X-Request-Id", "Location", "Idempotent-Replayed", "Retry-After", "WWW-Authenticate",
    "Allow",        NULL};

/* The response's headers against the documented ones. */
static void check_headers(const char *what, const char *rb, const struct ts_http *r)
{
    char hp[700], sp[700];
    const char *names[16];
    size_t n = ychildren(ypath(hp, sizeof(hp), rb, "headers", NULL), names, 16);
    for (size_t i = 0; WATCHED_HEADERS[i]; i++) {
        char *v = ts_http_header(r, WATCHED_HEADERS[i]);
        int documented = 0;
        for (size_t j = 0; j < n; j++)
            documented = documented || strcasecmp(names[j], WATCHED_HEADERS[i]) == 0;
        ck_assert_msg(!v || documented, "%s: header %s is sent but not documented", what,
                      WATCHED_HEADERS[i]);
        free(v);
    }
    for (size_t j = 0; j < n; j++) {
        char h[700];
        ypath(h, sizeof(h), hp, names[j], NULL);
        const char *ref = ysub(h, "$ref");
        if (ref)
            ref_path(ref, h, sizeof(h));
        ck_assert_msg(yget(h) != NULL, "%s: header %s has no definition", what, names[j]);
        char *v = ts_http_header(r, names[j]);
        const char *req = ysub(h, "required");
        ck_assert_msg(v || !req || strcmp(req, "true") != 0,
                      "%s: header %s is documented as required but missing", what, names[j]);
        if (v) {
            const char *type = ysub(ypath(sp, sizeof(sp), h, "schema", NULL), "type");
            json_object *jv =
                type && strcmp(type, "integer") == 0 && v[0] && strspn(v, "0123456789") == strlen(v)
                    ? json_object_new_int64(strtoll(v, NULL, 10))
                    : json_object_new_string(v);
            struct verr e = {0};
            vcheck(jv, sp, names[j], &e);
            json_object_put(jv);
            ck_assert_msg(!e.bad, "%s: header %s: %s", what, names[j], e.why);
        }
        free(v);
    }
}

/* Whether word appears in text as a whole word (not inside a longer
 * A-Z 0-9 _ identifier). */
static int has_word(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) {
        int before = p > text && (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", p[-1]) != NULL);
        int after = p[n] && strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", p[n]) != NULL;
        if (!before && !after)
            return 1;
    }
    return 0;
}

/* An HTML page (the member's sign-up) against its documented content at
 * mp (a document path, content|text/html): a page, valid against the
 * documented string schema, showing exactly one error code of ErrorCode,
 * which is among the response's x-error-codes, or none when the response
 * lists none. Returns the code (malloc'd) or NULL. */
static char *check_page(const char *what, const char *mp, const struct ts_http *r)
{
    char sp[900], c[64];
    ck_assert_msg(strstr(r->body, "<html") != NULL, "%s: not an HTML page: %s", what, r->body);
    ypath(sp, sizeof(sp), mp, "schema", NULL);
    if (yget(sp)) {
        json_object *page = json_object_new_string_len(r->body, (int)r->body_len);
        struct verr e = {0};
        vcheck(page, sp, "the page", &e);
        json_object_put(page);
        ck_assert_msg(!e.bad, "%s: the page does not match the documented schema: %s", what, e.why);
    }
    const char *all = ysub("components|schemas|ErrorCode", "enum");
    ck_assert_msg(all != NULL, "no ErrorCode enum");
    char *code = NULL;
    for (const char *p = all; ts_ydoc_flow_next(&p, c, sizeof(c));) {
        if (!has_word(r->body, c))
            continue;
        ck_assert_msg(code == NULL, "%s: the page shows two codes, %s and %s", what,
                      code ? code : "", c);
        code = strdup(c);
    }
    const char *listed = ysub(mp, "x-error-codes");
    if (listed) {
        ck_assert_msg(code != NULL, "%s: the page shows none of the codes %s: %s", what, listed,
                      r->body);
        ck_assert_msg(ts_ydoc_flow_has(listed, code), "%s: code %s is not in the documented %s",
                      what, code, listed);
    } else {
        ck_assert_msg(code == NULL, "%s: the page shows %s where no error is documented", what,
                      code ? code : "");
    }
    return code;
}

/* Checks one answer against the documented response at base (a document
 * path). Returns error.code (for a page, the code it shows; malloc'd) or
 * NULL. */
static char *check_response(const char *what, const char *base, const struct ts_http *r, int head)
{
    char rb[600], cp[700], sp[900];
    ck_assert_msg(response_base(base, rb, sizeof(rb)) == 0, "%s: answered %ld, not documented",
                  what, r->status);
    check_headers(what, rb, r);
    const char *types[8];
    size_t nt = ychildren(ypath(cp, sizeof(cp), rb, "content", NULL), types, 8);
    if (head || nt == 0) {
        ck_assert_msg(r->body_len == 0, "%s: a body where none is documented", what);
        return NULL;
    }
    char *ct = ts_http_header(r, "Content-Type");
    ck_assert_msg(ct != NULL, "%s: no Content-Type", what);
    ct[strcspn(ct, "; ")] = '\0';
    const char *media = NULL;
    for (size_t i = 0; i < nt; i++)
        if (strcasecmp(types[i], ct) == 0)
            media = types[i];
    ck_assert_msg(media != NULL, "%s: Content-Type %s is not documented", what, ct);
    free(ct);
    if (strcmp(media, "text/html") == 0)
        return check_page(what, ypath(sp, sizeof(sp), cp, media, NULL), r);
    if (strcmp(media, "application/json") != 0)
        return NULL;
    ypath(sp, sizeof(sp), cp, media, "schema", NULL);
    json_object *body = json_tokener_parse(r->body);
    ck_assert_msg(body != NULL, "%s: the body is not JSON: %s", what, r->body);
    struct verr e = {0};
    vcheck(body, sp, "", &e);
    ck_assert_msg(!e.bad, "%s: the body does not match the documented schema: %s\n%s", what, e.why,
                  r->body);
    char *code = NULL;
    json_object *err, *c;
    if (json_object_object_get_ex(body, "error", &err) &&
        json_object_object_get_ex(err, "code", &c)) {
        code = strdup(json_object_get_string(c));
        char ep[1000];
        const char *en = yget(
            ypath(ep, sizeof(ep), sp, "properties", "error", "properties", "code", "enum", NULL));
        ck_assert_msg(en != NULL, "%s: the documented error has no code enum", what);
        ck_assert_msg(ts_ydoc_flow_has(en, code), "%s: code %s is not in the documented %s", what,
                      code, en);
    }
    json_object_put(body);
    return code;
}

/* An answer of the operation (tpath, method): documented, counted for the
 * coverage check, and its status and code the ones api.md gives
 * (code NULL: a success). */
static void expect(const struct ts_http *r, const char *tpath, const char *method, int status,
                   const char *code)
{
    char what[256], base[600], status_text[16];
    snprintf(what, sizeof(what), "%s %s -> %ld", method, tpath, r->status);
    ck_assert_msg(r->status == status, "%s: expected %d: %s", what, status, r->body);
    snprintf(status_text, sizeof(status_text), "%d", status);
    ypath(base, sizeof(base), "paths", tpath, method, "responses", status_text, NULL);
    char *got = check_response(what, base, r, strcmp(method, "head") == 0);
    ck_assert_msg((code == NULL) == (got == NULL) && (!code || strcmp(code, got) == 0),
                  "%s: expected code %s, got %s", what, code ? code : "(none)",
                  got ? got : "(none)");
    free(got);
    for (size_t i = 0; i < ntriples; i++)
        if (strcmp(triples[i].path, tpath) == 0 && strcmp(triples[i].method, method) == 0 &&
            triples[i].status == status)
            seen[i] = 1;
}

/* An answer that belongs to no operation: 404 NOT_FOUND / 405. */
static void expect_component(const struct ts_http *r, const char *response, int status,
                             const char *code, const char *what)
{
    char base[300];
    ck_assert_msg(r->status == status, "%s: expected %d, got %ld: %s", what, status, r->status,
                  r->body);
    ypath(base, sizeof(base), "components", "responses", response, NULL);
    char *got = check_response(what, base, r, 0);
    ck_assert_msg(got && strcmp(got, code) == 0, "%s: expected %s, got %s", what, code,
                  got ? got : "(none)");
    free(got);
}

/* The request body with "@S" replaced by serial and "@L<n>@" by n 'x's. */
static char *expand(const char *fmt, const char *serial)
{
    size_t cap = strlen(fmt) + 4096, o = 0;
    char *out = malloc(cap);
    for (const char *p = fmt; *p;) {
        if (p[0] == '@' && p[1] == 'S') {
            o += (size_t)snprintf(out + o, cap - o, "%s", serial);
            p += 2;
        } else if (p[0] == '@' && p[1] == 'L') {
            char *end;
            long n = strtol(p + 2, &end, 10);
            for (long i = 0; i < n && o < cap - 1; i++)
                out[o++] = 'x';
            p = end + 1;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return out;
}

static char *open_body(const char *serial, const char *template_id)
{
    char *b = malloc(512);
    snprintf(b, 512,
             "{\"out_serial_no\":\"%s\",\"card_template_id\":\"%s\",\"user_id\":\"" USER
             "\",\"card\":{" DATES "}}",
             serial, template_id);
    return b;
}

/* POST /v1/cards of the minimal body. */
static void open_card(struct ts_http *r, const char *serial, const char *template_id)
{
    char *b = open_body(serial, template_id);
    api(r, "POST", "/v1/cards", AUTH_JSON, b);
    free(b);
}

static json_object *body_json(const struct ts_http *r)
{
    json_object *o = json_tokener_parse(r->body);
    ck_assert_msg(o != NULL, "not JSON: %s", r->body);
    return o;
}

/* ------------------------------------------ updates and deletes of cards */

#define CARD_T "/v1/cards/{biz_card_no}"
#define TPL_T "/v1/templates/{template_id}"
#define FORM_T "/v1/templates/{template_id}/form"
#define ACT_T "/v1/templates/{template_id}/activation"
#define SIGNUP_T "/callbacks/card-activation"
#define OCCUR "2026-11-30 10:15:00"

/* The error answer's error.field is field (NULL: it has none). */
static void expect_field(const struct ts_http *r, const char *field)
{
    json_object *a = body_json(r), *err, *f;
    const char *got =
        json_object_object_get_ex(a, "error", &err) && json_object_object_get_ex(err, "field", &f)
            ? json_object_get_string(f)
            : NULL;
    ck_assert_msg(field ? got && strcmp(got, field) == 0 : got == NULL, "expected field %s: %s",
                  field ? field : "(none)", r->body);
    json_object_put(a);
}

/* Idempotent-Replayed: true when replayed, absent otherwise. */
static void expect_replayed(const struct ts_http *r, int replayed)
{
    char *v = ts_http_header(r, "Idempotent-Replayed");
    ck_assert_msg((v != NULL) == (replayed != 0) && (!v || strcmp(v, "true") == 0),
                  "Idempotent-Replayed is %s, expected %s: %s", v ? v : "absent",
                  replayed ? "true" : "absent", r->body);
    free(v);
}

/* Retry-After present (with REQUEST_IN_PROGRESS, CARD_BUSY) or absent. */
static void expect_retry_after(const struct ts_http *r, int present)
{
    char *v = ts_http_header(r, "Retry-After");
    ck_assert_msg((v != NULL) == (present != 0), "Retry-After %s: %s", v ? v : "absent", r->body);
    free(v);
}

/* The string field key of an object, or "" (borrowed from o). */
static const char *str_field(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : "";
}

/* Opens a card (the minimal body, plus the card fields card_extra when
 * given), checks the 201 against the spec and puts its number in biz. */
static void open_new(const char *serial, const char *card_extra, char biz[64])
{
    char b[1024];
    snprintf(b, sizeof(b),
             "{\"out_serial_no\":\"%s\",\"card_template_id\":\"" TEMPLATE "\",\"user_id\":\"" USER
             "\",\"card\":{" DATES "%s%s}}",
             serial, card_extra ? "," : "", card_extra ? card_extra : "");
    struct ts_http r;
    api(&r, "POST", "/v1/cards", AUTH_JSON, b);
    expect(&r, "/v1/cards", "post", 201, NULL);
    json_object *o = body_json(&r);
    snprintf(biz, 64, "%s", str_field(o, "biz_card_no"));
    ck_assert_msg(biz[0] != '\0', "no biz_card_no: %s", r.body);
    json_object_put(o);
    ts_http_free(&r);
}

/* A PATCH body: the card's fields and, when given, more top-level fields. */
static char *update_body(const char *serial, const char *occur_time, const char *card,
                         const char *extra)
{
    char *b = malloc(2048);
    snprintf(b, 2048, "{\"out_serial_no\":\"%s\",\"occur_time\":\"%s\",\"card\":{%s}%s%s}", serial,
             occur_time, card, extra ? "," : "", extra ? extra : "");
    return b;
}

static void patch_card(struct ts_http *r, const char *biz, const char *body)
{
    char target[128];
    snprintf(target, sizeof(target), "/v1/cards/%s", biz);
    api(r, "PATCH", target, AUTH_JSON, body);
}

static void delete_card(struct ts_http *r, const char *biz, const char *serial, const char *reason)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/cards/%s?out_serial_no=%s&reason_code=%s", biz, serial,
             reason);
    api(r, "DELETE", target, AUTH, NULL);
}

/* The simulator's record of a card (GET /_sim/cards/{biz}): what Alipay
 * holds, how many updates and points messages reached it. */
static json_object *sim_card(const char *biz)
{
    char url[256];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/cards/%s", st.sim.control, biz);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    ck_assert_msg(r.status == 200, "the simulator has no card %s: %s", biz, r.body);
    json_object *o = body_json(&r);
    ts_http_free(&r);
    return o;
}

/* An integer of the simulator's card record (updates, points_messages,
 * max_in_flight). */
static long sim_card_long(const char *biz, const char *key)
{
    json_object *o = sim_card(biz), *v;
    long n = json_object_object_get_ex(o, key, &v) ? (long)json_object_get_int64(v) : -1;
    json_object_put(o);
    return n;
}

/* Whether the simulator holds the card as deleted. */
static int sim_card_deleted(const char *biz)
{
    json_object *o = sim_card(biz);
    int deleted = strcmp(str_field(o, "status"), "deleted") == 0;
    json_object_put(o);
    return deleted;
}

/* Waits (up to 20 s: the machine may be loaded) until the simulator's card
 * record has key >= n; returns the last value seen. */
static long sim_card_wait(const char *biz, const char *key, long n)
{
    long v = sim_card_long(biz, key);
    for (int i = 0; i < 1000 && v < n; i++) {
        usleep(20 * 1000);
        v = sim_card_long(biz, key);
    }
    return v;
}

/* ====================================================== the spec's shape */

/* Whether the flow sequences a and b hold the same items. */
static int same_items(const char *a, const char *b)
{
    char v[128];
    size_t na = 0, nb = 0;
    for (const char *p = a; a && ts_ydoc_flow_next(&p, v, sizeof(v)); na++)
        if (!ts_ydoc_flow_has(b, v))
            return 0;
    for (const char *p = b; b && ts_ydoc_flow_next(&p, v, sizeof(v));)
        nb++;
    return a && b && na == nb;
}

/* Whether the operation (path, method) documents name as a required
 * query parameter. Its parameters are a sequence: each item begins with
 * its first key (name, or $ref for a shared one). */
static int required_query_param(const char *path, const char *method, const char *name)
{
    char pre[600];
    ypath(pre, sizeof(pre), "paths", path, method, "parameters", "-", NULL);
    size_t pl = strlen(pre);
    int named = 0, in_query = 0, required = 0;
    for (size_t i = 0; i < doc.n; i++) {
        const char *p = doc.e[i].path, *v = doc.e[i].value;
        if (strncmp(p, pre, pl) != 0 || p[pl] != '|')
            continue;
        const char *k = p + pl + 1;
        if (strcmp(k, "name") == 0 || strcmp(k, "$ref") == 0) {
            if (named && in_query && required)
                return 1;
            named = strcmp(k, "name") == 0 && strcmp(v, name) == 0;
            in_query = required = 0;
        } else if (strcmp(k, "in") == 0) {
            in_query = strcmp(v, "query") == 0;
        } else if (strcmp(k, "required") == 0) {
            required = strcmp(v, "true") == 0;
        }
    }
    return named && in_query && required;
}

START_TEST(test_operations_and_security)
{
    /* The operations api.md §2 names, and bearer security exactly on /v1. */
    static const char *const ops[][2] = {
        {"/v1/cards", "post"},     {"/v1/cards", "get"}, {CARD_T, "get"},
        {CARD_T, "patch"},         {CARD_T, "delete"},   {"/v1/cards/lookup", "get"},
        {"/v1/templates", "post"}, {TPL_T, "get"},       {TPL_T, "patch"},
        {FORM_T, "put"},           {ACT_T, "put"},       {SIGNUP_T, "get"},
        {"/healthz", "get"},       {"/readyz", "get"},   {"/metrics", "get"},
    };
    char p[600];
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        ck_assert_msg(yget(ypath(p, sizeof(p), "paths", ops[i][0], ops[i][1], NULL)),
                      "%s %s is not documented", ops[i][1], ops[i][0]);
    ck_assert_str_eq(ysub("components|securitySchemes|bearer", "type"), "http");
    ck_assert_str_eq(ysub("components|securitySchemes|bearer", "scheme"), "bearer");
    for (size_t i = 0; i < ntriples; i++) {
        ypath(p, sizeof(p), "paths", triples[i].path, triples[i].method, "security", "-", "bearer",
              NULL);
        int v1 = strncmp(triples[i].path, "/v1/", 4) == 0;
        ck_assert_msg((yget(p) != NULL) == v1, "%s %s: bearer security %s", triples[i].method,
                      triples[i].path, v1 ? "missing" : "where no key is needed");
    }
    ck_assert_msg(yget("security") == NULL, "no top-level security: the ops paths are open");
    /* The request schema is closed and requires what api.md requires. */
    const char *req = "components|schemas|CardOpenRequest";
    ck_assert_str_eq(ysub(req, "additionalProperties"), "false");
    static const char *const required[] = {"out_serial_no", "card_template_id", "user_id", "card"};
    for (size_t i = 0; i < 4; i++)
        ck_assert_msg(ts_ydoc_flow_has(ysub(req, "required"), required[i]), "%s not required",
                      required[i]);
    ck_assert(ts_ydoc_flow_has(ysub("components|schemas|CardExtInfo", "required"), "open_date"));
    ck_assert(ts_ydoc_flow_has(ysub("components|schemas|CardExtInfo", "required"), "valid_date"));
    ck_assert_str_eq(ysub("components|schemas|UserId", "pattern"), "^2088[0-9]{12}$");
    /* The update's body likewise; its card has no dates and at least one
     * field. The delete's two query parameters are required. */
    const char *upd = "components|schemas|CardUpdateRequest";
    ck_assert_str_eq(ysub(upd, "additionalProperties"), "false");
    static const char *const upd_required[] = {"out_serial_no", "occur_time", "card"};
    for (size_t i = 0; i < 3; i++)
        ck_assert_msg(ts_ydoc_flow_has(ysub(upd, "required"), upd_required[i]), "%s not required",
                      upd_required[i]);
    ck_assert_msg(!ts_ydoc_flow_has(ysub(upd, "required"), "changed_point"),
                  "changed_point is optional");
    const char *upd_card = "components|schemas|CardUpdateInfo";
    ck_assert_str_eq(ysub(upd_card, "additionalProperties"), "false");
    ck_assert_str_eq(ysub(upd_card, "minProperties"), "1");
    ck_assert(yget("components|schemas|CardUpdateInfo|properties|open_date") == NULL);
    ck_assert(yget("components|schemas|CardUpdateInfo|properties|valid_date") == NULL);
    ck_assert(required_query_param(CARD_T, "delete", "out_serial_no"));
    ck_assert(required_query_param(CARD_T, "delete", "reason_code"));
    /* Enums exactly as api.md and the seeds give them. */
    static const char *const enums[][2] = {
        {"components|schemas|MemberExtInfo|properties|gender|enum", "[MALE, FEMALE]"},
        {"components|schemas|MdcodeInfo|properties|code_status|enum",
         "[SUCCESS, FAIL_RETRY, FAIL_NOT_RETRY]"},
        {"paths|/v1/cards/lookup|get|parameters|-|schema|enum", "[D_QR_CODE, D_BAR_CODE]"},
        {"components|schemas|ReasonCode|enum", "[USER_UNBUND, CANCEL, PRESENT]"},
    };
    for (size_t i = 0; i < sizeof(enums) / sizeof(enums[0]); i++)
        ck_assert_msg(same_items(yget(enums[i][0]), enums[i][1]), "%s is %s, not %s", enums[i][0],
                      yget(enums[i][0]) ? yget(enums[i][0]) : "(absent)", enums[i][1]);
    /* The templates' bodies are closed where cardgate closes them and
     * require what api.md and template.create require; the sign-up's
     * callback takes Alipay's redirect parameters. */
    static const char *const closed[] = {"TemplateCreateRequest", "TemplateModifyRequest",
                                         "FormRequest", "ActivationSettings"};
    char sp[256];
    for (size_t i = 0; i < sizeof(closed) / sizeof(closed[0]); i++) {
        ypath(sp, sizeof(sp), "components", "schemas", closed[i], NULL);
        ck_assert_msg(ysub(sp, "additionalProperties") &&
                          strcmp(ysub(sp, "additionalProperties"), "false") == 0,
                      "%s is not closed", closed[i]);
    }
    ck_assert(same_items(ysub("components|schemas|TemplateCreateRequest", "required"),
                         "[request_id, template]"));
    ck_assert(same_items(ysub("components|schemas|TemplateModifyRequest", "required"),
                         "[request_id, template]"));
    ck_assert(
        same_items(ysub("components|schemas|TemplateCreateRequest|properties|template", "required"),
                   "[card_type, biz_no_suffix_len, write_off_type, template_style_info, "
                   "field_rule_list]"));
    ck_assert(
        same_items(ysub("components|schemas|ActivationSettings", "required"), "[valid_date]"));
    ck_assert(same_items(ysub("components|schemas|FormRequest", "required"), "[required]"));
    ck_assert(
        ts_ydoc_flow_has(ysub("components|schemas|FormField", "enum"), "OPEN_FORM_FIELD_MOBILE"));
    ck_assert(ts_ydoc_flow_has(ysub("components|schemas|FormField", "enum"),
                               "OPEN_FORM_FIELD_MEMBER_GRADE"));
    ck_assert(required_query_param(SIGNUP_T, "get", "app_id"));
    ck_assert(required_query_param(SIGNUP_T, "get", "template_id"));
    ck_assert(required_query_param(SIGNUP_T, "get", "request_id"));
    ck_assert(!required_query_param(SIGNUP_T, "get", "auth_code")); /* FORM_NOT_COMPLETED */
}
END_TEST

/* ================================================ error codes in the source */

/* Appends the upper-case identifier literal at s (after its opening
 * quote) to codes when it is one. */
static void take_code(const char *s, char codes[][40], size_t *n, size_t max)
{
    size_t len = strcspn(s, "\"");
    if (len < 6 || len >= 40 || *n >= max || !(s[0] >= 'A' && s[0] <= 'Z') ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != len)
        return;
    for (size_t i = 0; i < *n; i++)
        if (strncmp(codes[i], s, len) == 0 && codes[i][len] == '\0')
            return;
    snprintf(codes[(*n)++], 40, "%.*s", (int)len, s);
}

/* The error codes a C source passes to the functions that answer errors
 * (reply_error, error_body, the sign-up's send_page, and the ledger's
 * refuse, error_text, ledger_stop and ledger_fail_as) or assigns to a
 * `code` variable. */
static void scan_codes(const char *text, char codes[][40], size_t *n, size_t max)
{
    static const char *const calls[] = {"reply_error(",    "error_body(", "send_page(",
                                        "refuse(",         "error_text(", "ledger_stop(",
                                        "ledger_fail_as(", NULL};
    for (size_t c = 0; calls[c]; c++) {
        for (const char *p = strstr(text, calls[c]); p; p = strstr(p + 1, calls[c])) {
            int depth = 0;
            for (const char *q = p + strlen(calls[c]) - 1; *q; q++) {
                if (*q == '"') {
                    take_code(q + 1, codes, n, max);
                    for (q++; *q && *q != '"'; q++)
                        if (*q == '\\' && q[1])
                            q++;
                } else if (*q == '(') {
                    depth++;
                } else if (*q == ')' && --depth == 0) {
                    break;
                }
            }
        }
    }
    for (const char *p = strstr(text, "code = \""); p; p = strstr(p + 1, "code = \""))
        take_code(p + strlen("code = \""), codes, n, max);
}

/* The path literals ("/...") of a C source, cut at a printf '%'. A lone
 * "/" is a separator (strcspn(path, "/")), not a path. */
static void scan_paths(const char *text, char paths[][64], size_t *n, size_t max)
{
    for (const char *p = strstr(text, "\"/"); p && *n < max; p = strstr(p + 1, "\"/")) {
        size_t len = strcspn(p + 1, "\"%");
        if (len > 1 && len < 64 && strspn(p + 1, "abcdefghijklmnopqrstuvwxyz0123456789_-./") == len)
            snprintf(paths[(*n)++], 64, "%.*s", (int)len, p + 1);
    }
}

/* The sources of service/cardgate, concatenated. */
static char *service_sources(void)
{
    DIR *d = opendir(SERVICE_SRC);
    ck_assert_msg(d != NULL, "cannot open %s", SERVICE_SRC);
    size_t total = 0, files = 0;
    char *all = strdup("");
    for (struct dirent *de; (de = readdir(d));) {
        size_t l = strlen(de->d_name);
        if (l < 3 || (strcmp(de->d_name + l - 2, ".c") != 0 && strcmp(de->d_name + l - 2, ".h")))
            continue;
        char path[512];
        size_t len;
        snprintf(path, sizeof(path), "%s/%s", SERVICE_SRC, de->d_name);
        char *t = ts_read_file(path, &len);
        ck_assert_msg(t != NULL, "cannot read %s", path);
        all = realloc(all, total + len + 2);
        memcpy(all + total, t, len);
        total += len;
        all[total++] = '\n';
        all[total] = '\0';
        free(t);
        files++;
    }
    closedir(d);
    ck_assert_msg(files >= 3, "no sources in %s", SERVICE_SRC);
    return all;
}

/* Whether path ends with tail. */
static int ends_with(const char *path, const char *tail)
{
    size_t l = strlen(path), t = strlen(tail);
    return l > t && strcmp(path + l - t, tail) == 0;
}

/* Whether any response of the document (operations and components) lists
 * code in its enum, or, for a page, in its x-error-codes. */
static int some_response_has(const char *code)
{
    for (size_t i = 0; i < doc.n; i++) {
        const char *p = doc.e[i].path;
        if (((ends_with(p, "|properties|error|properties|code|enum") &&
              strstr(p, "|content|application/json|schema|")) ||
             ends_with(p, "|content|text/html|x-error-codes")) &&
            ts_ydoc_flow_has(doc.e[i].value, code))
            return 1;
    }
    return 0;
}

START_TEST(test_error_codes_documented)
{
    char codes[64][40];
    size_t n = 0;
    char *src = service_sources();
    scan_codes(src, codes, &n, 64);
    free(src);
    /* The contract's own codes must be among them, or the scan is blind. */
    ck_assert_msg(n >= 15, "only %zu error codes found in %s", n, SERVICE_SRC);
    const char *all = ysub("components|schemas|ErrorCode", "enum");
    ck_assert_msg(all != NULL, "no ErrorCode enum");
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(ts_ydoc_flow_has(all, codes[i]), "%s (in the service) is not in ErrorCode",
                      codes[i]);
        ck_assert_msg(some_response_has(codes[i]), "%s (in the service) is in no response",
                      codes[i]);
    }
    /* And nothing documented that the service never answers. */
    char c[64];
    for (const char *p = all; ts_ydoc_flow_next(&p, c, sizeof(c));) {
        int used = 0;
        for (size_t i = 0; i < n; i++)
            used = used || strcmp(codes[i], c) == 0;
        ck_assert_msg(used, "ErrorCode %s is documented but the service never answers it", c);
    }
    /* Every response enum (and page's x-error-codes) draws from ErrorCode. */
    for (size_t i = 0; i < doc.n; i++) {
        const char *p = doc.e[i].path;
        if (!strstr(p, "|properties|error|properties|code|enum") && !ends_with(p, "|x-error-codes"))
            continue;
        for (const char *q = doc.e[i].value; ts_ydoc_flow_next(&q, c, sizeof(c));)
            ck_assert_msg(ts_ydoc_flow_has(all, c), "%s: %s is not in ErrorCode", p, c);
    }
}
END_TEST

/* ============================================================== the routes */

/* Whether a concrete path matches a documented template ({x}: one
 * non-empty segment). */
static int template_matches(const char *tpl, const char *path)
{
    while (*tpl && *path) {
        if (*tpl == '{') {
            const char *close = strchr(tpl, '}');
            size_t seg = strcspn(path, "/");
            if (!close || seg == 0)
                return 0;
            tpl = close + 1, path += seg;
        } else if (*tpl++ != *path++) {
            return 0;
        }
    }
    return *tpl == '\0' && *path == '\0';
}

static int documented_path(const char *path)
{
    const char *paths[32];
    size_t n = ychildren("paths", paths, 32);
    for (size_t i = 0; i < n; i++)
        if (template_matches(paths[i], path))
            return 1;
    return 0;
}

/* A concrete path for a template. */
static void concrete(const char *tpl, char *out, size_t n)
{
    const char *open = strchr(tpl, '{');
    if (!open)
        snprintf(out, n, "%s", tpl);
    else
        snprintf(out, n, "%.*s%s%s", (int)(open - tpl), tpl, "20000000000000000001",
                 strchr(open, '}') + 1);
}

START_TEST(test_routes_documented)
{
    /* Each documented path, with every method it does not document: 405
     * whose Allow lists the documented methods (HEAD may go unlisted). */
    static const char *const probes[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", NULL};
    const char *paths[32], *methods[16];
    char p[600], target[128], what[200];
    size_t np = ychildren("paths", paths, 32);
    ck_assert_uint_ge(np, 6);
    for (size_t i = 0; i < np; i++) {
        size_t nm = ychildren(ypath(p, sizeof(p), "paths", paths[i], NULL), methods, 16);
        concrete(paths[i], target, sizeof(target));
        for (size_t k = 0; probes[k]; k++) {
            char lower[16];
            size_t l;
            for (l = 0; probes[k][l] && l < sizeof(lower) - 1; l++)
                lower[l] = (char)(probes[k][l] | 0x20);
            lower[l] = '\0';
            if (yget(ypath(p, sizeof(p), "paths", paths[i], lower, NULL)))
                continue;
            struct ts_http r;
            api(&r, probes[k], target, NULL, NULL);
            snprintf(what, sizeof(what), "%s %s", probes[k], target);
            expect_component(&r, "MethodNotAllowed", 405, "METHOD_NOT_ALLOWED", what);
            char *allow = ts_http_header(&r, "Allow");
            ck_assert_msg(allow != NULL, "%s: no Allow", what);
            char listed[128];
            snprintf(listed, sizeof(listed), ",%s,", allow);
            for (size_t j = 0; j < nm; j++) {
                if (!is_method(methods[j]) || strcmp(methods[j], "head") == 0)
                    continue;
                char m[24];
                snprintf(m, sizeof(m), "%s", methods[j]);
                for (char *c = m; *c; c++)
                    *c = (char)(*c & ~0x20);
                char needle[32];
                snprintf(needle, sizeof(needle), "%s", m);
                ck_assert_msg(strstr(allow, needle) != NULL, "%s: Allow %s lacks documented %s",
                              what, allow, m);
            }
            for (char *tok = strtok(listed, ", "); tok; tok = strtok(NULL, ", ")) {
                char m[16];
                snprintf(m, sizeof(m), "%s", tok);
                for (char *c = m; *c; c++)
                    *c = (char)(*c | 0x20);
                ck_assert_msg(yget(ypath(p, sizeof(p), "paths", paths[i], m, NULL)),
                              "%s: Allow lists %s, which is not documented", what, tok);
            }
            free(allow);
            ts_http_free(&r);
        }
    }
    /* Near-miss paths: whatever the service answers other than 404
     * NOT_FOUND must be a documented path, and a 404 must not be one. */
    static const char *const candidates[] = {"/",
                                             "/v1",
                                             "/v1/",
                                             "/v1/cards",
                                             "/v1/cards/",
                                             "/v1/card",
                                             "/v1/cardsx",
                                             "/v1/cards/a/b",
                                             "/v1/cards/lookup",
                                             "/v1/cards/lookup/",
                                             "/v2/cards",
                                             "/v1/healthz",
                                             "/healthz",
                                             "/healthz/",
                                             "/health",
                                             "/readyz",
                                             "/readyz/x",
                                             "/ready",
                                             "/metrics",
                                             "/metrics/",
                                             "/status",
                                             "/version",
                                             "/openapi.yaml",
                                             "/v1/openapi",
                                             "/_sim/health",
                                             "/v1/cards/20000000000000000001",
                                             "/V1/CARDS",
                                             "/debug",
                                             "/v1/template",
                                             "/v1/templates/",
                                             "/v1/templates/20000000000000000001/",
                                             "/v1/templates/20000000000000000001/forms",
                                             "/v1/templates/20000000000000000001/form/x",
                                             "/v1/templates/20000000000000000001/activate",
                                             "/v1/templates/a/b/c",
                                             "/callbacks",
                                             "/callbacks/",
                                             "/callbacks/card-activation/",
                                             "/callbacks/card-activation/x",
                                             "/callback/card-activation",
                                             NULL};
    for (size_t i = 0; candidates[i]; i++) {
        struct ts_http r;
        api(&r, "DELETE", candidates[i], AUTH, NULL);
        snprintf(what, sizeof(what), "DELETE %s", candidates[i]);
        if (r.status == 404) {
            expect_component(&r, "NoSuchPath", 404, "NOT_FOUND", what);
            ck_assert_msg(!documented_path(candidates[i]), "%s: 404 on a documented path", what);
        } else {
            ck_assert_msg(documented_path(candidates[i]),
                          "%s: answered %ld, but the path is not documented", what, r.status);
        }
        ts_http_free(&r);
    }
    /* The path literals of the sources: each a documented path, or the
     * prefix of a templated one. */
    char lits[32][64];
    size_t nl = 0;
    char *src = service_sources();
    scan_paths(src, lits, &nl, 32);
    free(src);
    ck_assert_msg(nl >= 4, "only %zu path literals found in %s", nl, SERVICE_SRC);
    for (size_t i = 0; i < nl; i++) {
        int ok = documented_path(lits[i]);
        size_t l = strlen(lits[i]);
        for (size_t j = 0; j < np && !ok && l && lits[i][l - 1] == '/'; j++)
            ok = strncmp(paths[j], lits[i], l) == 0 && paths[j][l] == '{';
        ck_assert_msg(ok, "the service routes \"%s\", which openapi.yaml does not document",
                      lits[i]);
    }
}
END_TEST

/* ================================================================ successes */

START_TEST(test_open_query_lookup_list)
{
    struct ts_http r;
    const char *rid[] = {TS_AUTH, TS_JSON, "X-Request-Id: openapi-probe-1", NULL};
    char *b = open_body("oa-ok-1", TEMPLATE);
    api(&r, "POST", "/v1/cards", rid, b);
    expect(&r, "/v1/cards", "post", 201, NULL);
    char *xid = ts_http_header(&r, "X-Request-Id");
    ck_assert_str_eq(xid, "openapi-probe-1");
    free(xid);
    json_object *o = body_json(&r);
    char biz[64], loc[128];
    snprintf(biz, sizeof(biz), "%s",
             json_object_get_string(json_object_object_get(o, "biz_card_no")));
    char *location = ts_http_header(&r, "Location");
    snprintf(loc, sizeof(loc), "/v1/cards/%s", biz);
    ck_assert_str_eq(location, loc);
    free(location);
    char *first = strdup(r.body);
    ts_http_free(&r);
    json_object_put(o);

    /* The replay: same status, same body, Idempotent-Replayed: true. */
    api(&r, "POST", "/v1/cards", AUTH_JSON, b);
    expect(&r, "/v1/cards", "post", 201, NULL);
    char *rep = ts_http_header(&r, "Idempotent-Replayed");
    ck_assert_msg(rep && strcmp(rep, "true") == 0, "replay without Idempotent-Replayed: true");
    ck_assert_str_eq(r.body, first);
    free(rep);
    free(first);
    free(b);
    ts_http_free(&r);

    /* The same out_serial_no, another request. */
    b = open_body("oa-ok-1", "20170308000000000058101000300046");
    api(&r, "POST", "/v1/cards", AUTH_JSON, b);
    expect(&r, "/v1/cards", "post", 422, "OUT_SERIAL_NO_REUSED");
    free(b);
    ts_http_free(&r);

    char target[256];
    snprintf(target, sizeof(target), "/v1/cards/%s", biz);
    api(&r, "GET", target, AUTH, NULL);
    expect(&r, "/v1/cards/{biz_card_no}", "get", 200, NULL);
    ts_http_free(&r);
    snprintf(target, sizeof(target), "/v1/cards/%s?user_id=" USER, biz);
    api(&r, "GET", target, AUTH, NULL);
    expect(&r, "/v1/cards/{biz_card_no}", "get", 200, NULL);
    ts_http_free(&r);

    /* The wallet's dynamic codes, as the simulator issued them. */
    char url[256];
    snprintf(url, sizeof(url), "%s/cards/%s", st.sim.control, biz);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    ck_assert_int_eq(r.status, 200);
    o = body_json(&r);
    ts_http_free(&r);
    static const char *const kinds[][2] = {{"qr_code", "D_QR_CODE"}, {"bar_code", "D_BAR_CODE"}};
    for (size_t i = 0; i < 2; i++) {
        const char *code = json_object_get_string(json_object_object_get(o, kinds[i][0]));
        snprintf(target, sizeof(target), "/v1/cards/lookup?code=%s&type=%s", code, kinds[i][1]);
        api(&r, "GET", target, AUTH, NULL);
        expect(&r, "/v1/cards/lookup", "get", 200, NULL);
        ts_http_free(&r);
    }
    json_object_put(o);

    api(&r, "GET", "/v1/cards?out_serial_no=oa-ok-1", AUTH, NULL);
    expect(&r, "/v1/cards", "get", 200, NULL);
    o = body_json(&r);
    ck_assert_uint_eq(json_object_array_length(json_object_object_get(o, "cards")), 1);
    json_object_put(o);
    ts_http_free(&r);
    api(&r, "GET", "/v1/cards?user_id=2088000000000000", AUTH, NULL);
    expect(&r, "/v1/cards", "get", 200, NULL);
    ck_assert_str_eq(r.body, "{\"cards\":[]}");
    ts_http_free(&r);
}
END_TEST

START_TEST(test_operations_endpoints)
{
    struct ts_http r;
    static const char *const ops[] = {"/healthz", "/readyz", "/metrics"};
    for (size_t i = 0; i < 3; i++) {
        api(&r, "GET", ops[i], NULL, NULL);
        expect(&r, ops[i], "get", 200, NULL);
        ts_http_free(&r);
        api_head(&r, ops[i]);
        expect(&r, ops[i], "head", 200, NULL);
        ts_http_free(&r);
    }
}
END_TEST

/* ========================================================= request schema */

/* A body and the verdict api.md and the seeds give it: NULL (accepted) or
 * the `field` of the 400. beyond_schema: a rule JSON Schema cannot say
 * (real calendar dates), described in prose only. */
struct body_case {
    const char *body;
    const char *field;
    int beyond_schema;
};

#define T_ "\"card_template_id\":\"" TEMPLATE "\""
#define U_ "\"user_id\":\"" USER "\""
#define TOP_ "\"out_serial_no\":\"@S\"," T_ "," U_
#define MIN_ "{" TOP_ ",\"card\":{" DATES "}}"
#define WITH_CARD_(x) "{" TOP_ ",\"card\":{" DATES "," x "}}"
#define WITH_TOP_(x) "{" TOP_ ",\"card\":{" DATES "}," x "}"
#define WITH_MEMBER_(x) WITH_TOP_("\"member\":{" x "}")
#define MDCODE_(x) WITH_CARD_("\"mdcode_info\":{" x "}")

static const struct body_case body_cases[] = {
    /* accepted */
    {MIN_, NULL, 0},
    {"{\"out_serial_no\":\"@S\",\"card_template_id\":\"" TEMPLATE "\",\"user_id\":\"" USER
     "\",\"auth_token\":\"composeB0123\",\"card\":{\"external_card_no\":\"EXT0001\","
     "\"open_date\":\"2014-02-20 21:20:46\",\"valid_date\":\"2020-02-20 21:20:46\","
     "\"level\":\"VIP1\",\"point\":\"88\",\"balance\":\"124.89\",\"template_id\":\"" TEMPLATE
     "\",\"front_text_list\":[{\"label\":\"专业\",\"value\":\"金融贸易\"}],"
     "\"mdcode_info\":{\"code_status\":\"SUCCESS\",\"code_value\":\"1KFCDY0002\","
     "\"expire_time\":\"2017-06-09 16:25:53\",\"time_stamp\":1496996459}},"
     "\"member\":{\"name\":\"Lee\",\"gender\":\"MALE\",\"birth\":\"2016-06-27\","
     "\"cell\":\"13000000000\"},\"open_card_channel\":\"20161534000000000008863\","
     "\"open_card_channel_id\":\"2088123123123123\"}",
     NULL, 0},
    {"{\"out_serial_no\":\"@L58@@S\"," T_ "," U_ ",\"card\":{" DATES "}}", NULL, 0},
    {"{\"out_serial_no\":\"@S\",\"card_template_id\":\"@L32@\"," U_ ",\"card\":{" DATES "}}", NULL,
     0},
    {WITH_CARD_("\"front_text_list\":[{\"label\":\"专业课程\",\"value\":\"@L32@\"},{},"
                "{\"label\":\"a\"},{\"value\":\"b\"}]"),
     NULL, 0},
    {WITH_CARD_("\"external_card_no\":\"@L64@\",\"level\":\"@L64@\",\"point\":\"0.5\","
                "\"balance\":\"0\",\"template_id\":\"@L32@\",\"front_image_id\":\"@L1024@\""),
     NULL, 0},
    {MDCODE_("\"code_status\":\"FAIL_RETRY\",\"time_stamp\":0"), NULL, 0},
    {MDCODE_("\"code_status\":\"SUCCESS\",\"code_value\":\"@L128@\","
             "\"expire_time\":\"2017-06-09 16:25:53\",\"time_stamp\":9223372036854775807"),
     NULL, 0},
    {WITH_MEMBER_("\"name\":\"@L64@\",\"gender\":\"FEMALE\",\"birth\":\"2000-02-29\","
                  "\"cell\":\"@L32@\""),
     NULL, 0},
    {WITH_TOP_("\"auth_token\":\"@L128@\",\"app_auth_token\":\"@L40@\","
               "\"open_card_channel\":\"@L64@\",\"open_card_channel_id\":\"@L64@\""),
     NULL, 0},
    /* refused, at `field` */
    {"{" T_ "," U_ ",\"card\":{" DATES "}}", "out_serial_no", 0},
    {"{\"out_serial_no\":\"@L59@@S\"," T_ "," U_ ",\"card\":{" DATES "}}", "out_serial_no", 0},
    {"{\"out_serial_no\":\"\"," T_ "," U_ ",\"card\":{" DATES "}}", "out_serial_no", 0},
    {"{\"out_serial_no\":\"a\\u0001b\"," T_ "," U_ ",\"card\":{" DATES "}}", "out_serial_no", 0},
    {"{\"out_serial_no\":\"@S\",\"card_template_id\":\"@L33@\"," U_ ",\"card\":{" DATES "}}",
     "card_template_id", 0},
    {"{\"out_serial_no\":\"@S\"," T_ ",\"user_id\":\"2087302463082075\",\"card\":{" DATES "}}",
     "user_id", 0},
    {"{\"out_serial_no\":\"@S\"," T_ ",\"user_id\":\"208830246308207\",\"card\":{" DATES "}}",
     "user_id", 0},
    {"{" TOP_ "}", "card", 0},
    {"{" TOP_ ",\"card\":\"x\"}", "card", 0},
    {"{" TOP_ ",\"card\":{\"open_date\":\"2014-02-20 21:20:46\"}}", "card.valid_date", 0},
    {"{" TOP_ ",\"card\":{\"open_date\":\"2014-02-20T21:20:46\","
     "\"valid_date\":\"2030-02-20 21:20:46\"}}",
     "card.open_date", 0},
    {"{" TOP_ ",\"card\":{\"open_date\":\"2014-02-20 21:20:46\","
     "\"valid_date\":\"2030-02-20 24:00:00\"}}",
     "card.valid_date", 0},
    {"{" TOP_ ",\"card\":{\"open_date\":\"2014-02-30 21:20:46\","
     "\"valid_date\":\"2030-02-20 21:20:46\"}}",
     "card.open_date", 1},
    {WITH_CARD_("\"point\":\"1.234\""), "card.point", 0},
    {WITH_CARD_("\"point\":\"1e3\""), "card.point", 0},
    {WITH_CARD_("\"point\":88"), "card.point", 0},
    {WITH_CARD_("\"balance\":\"-1\""), "card.balance", 0},
    {WITH_CARD_("\"balance\":\"12.5.1\""), "card.balance", 0},
    {WITH_CARD_("\"level\":null"), "card.level", 0},
    {WITH_CARD_("\"level\":\"@L65@\""), "card.level", 0},
    {WITH_CARD_("\"external_card_no\":\"@L65@\""), "card.external_card_no", 0},
    {WITH_CARD_("\"template_id\":\"@L33@\""), "card.template_id", 0},
    {WITH_CARD_("\"front_image_id\":\"@L1025@\""), "card.front_image_id", 0},
    {WITH_CARD_("\"colour\":\"red\""), "card.colour", 0},
    {WITH_CARD_("\"front_text_list\":[{\"label\":\"专业课程A\",\"value\":\"v\"}]"),
     "card.front_text_list[0].label", 0},
    {WITH_CARD_("\"front_text_list\":[{\"label\":\"a\"},{\"value\":\"@L33@\"}]"),
     "card.front_text_list[1].value", 0},
    {WITH_CARD_("\"front_text_list\":[{},{},{},{},{}]"), "card.front_text_list", 0},
    {MDCODE_("\"code_status\":\"OK\",\"time_stamp\":1"), "card.mdcode_info.code_status", 0},
    {MDCODE_("\"code_status\":\"SUCCESS\",\"expire_time\":\"2017-06-09 16:25:53\","
             "\"time_stamp\":1"),
     "card.mdcode_info.code_value", 0},
    {MDCODE_("\"code_status\":\"FAIL_RETRY\",\"time_stamp\":\"1496996459\""),
     "card.mdcode_info.time_stamp", 0},
    {MDCODE_("\"code_status\":\"FAIL_RETRY\""), "card.mdcode_info.time_stamp", 0},
    {MDCODE_("\"code_status\":\"FAIL_RETRY\",\"time_stamp\":1,\"code_value\":\"@L129@\""),
     "card.mdcode_info.code_value", 0},
    {WITH_MEMBER_("\"gender\":\"male\""), "member.gender", 0},
    {WITH_MEMBER_("\"gende\":\"MALE\""), "member.gende", 0},
    {WITH_MEMBER_("\"birth\":\"2016-6-27\""), "member.birth", 0},
    {WITH_MEMBER_("\"name\":\"\""), "member.name", 0},
    {WITH_MEMBER_("\"name\":\"@L65@\""), "member.name", 0},
    {WITH_MEMBER_("\"cell\":\"@L33@\""), "member.cell", 0},
    {WITH_TOP_("\"auth_token\":\"@L129@\""), "auth_token", 0},
    {WITH_TOP_("\"app_auth_token\":\"@L41@\""), "app_auth_token", 0},
    {WITH_TOP_("\"open_card_channel\":\"@L65@\""), "open_card_channel", 0},
    {WITH_TOP_("\"open_card_channel_id\":\"@L65@\""), "open_card_channel_id", 0},
    {WITH_TOP_("\"foo\":1"), "foo", 0},
};

/* The schema's verdict on case c's body agrees with the contract's: it
 * accepts what the contract accepts and refuses the rest at the same field. */
static void schema_verdict(const char *schema, size_t i, const struct body_case *c,
                           const char *body)
{
    json_object *o = json_tokener_parse(body);
    ck_assert_msg(o != NULL, "%s case %zu: not JSON: %s", schema, i, body);
    struct verr e = {0};
    vcheck(o, schema, "", &e);
    json_object_put(o);
    if (!c->field || c->beyond_schema)
        ck_assert_msg(!e.bad, "%s case %zu: the schema refuses a body the contract accepts (%s)",
                      schema, i, e.why);
    else
        ck_assert_msg(e.bad && strcmp(e.where, c->field) == 0,
                      "%s case %zu: the schema should refuse %s: %s", schema, i, c->field,
                      e.bad ? e.why : "it accepts the body");
}

START_TEST(test_request_schema_agrees)
{
    const char *schema = "components|schemas|CardOpenRequest";
    for (size_t i = 0; i < sizeof(body_cases) / sizeof(body_cases[0]); i++) {
        const struct body_case *c = &body_cases[i];
        char serial[16];
        snprintf(serial, sizeof(serial), "oars%02zu", i);
        char *body = expand(c->body, serial);
        schema_verdict(schema, i, c, body);

        struct ts_http r;
        api(&r, "POST", "/v1/cards", AUTH_JSON, body);
        if (c->field) {
            expect(&r, "/v1/cards", "post", 400, "INVALID_PARAMETER");
            json_object *a = body_json(&r), *err, *f;
            ck_assert_msg(json_object_object_get_ex(a, "error", &err) &&
                              json_object_object_get_ex(err, "field", &f) &&
                              strcmp(json_object_get_string(f), c->field) == 0,
                          "case %zu: expected field %s: %s", i, c->field, r.body);
            json_object_put(a);
        } else {
            ck_assert_msg(r.status == 201, "case %zu: the service refuses a valid body: %ld %s", i,
                          r.status, r.body);
            expect(&r, "/v1/cards", "post", 201, NULL);
        }
        ts_http_free(&r);
        free(body);
    }
}
END_TEST

/* The update's bodies: the same agreement between the schema, the
 * contract and the service. The accepted ones update one card, all at the
 * same occur_time (an equal occur_time is not stale). */
#define OC_ "\"occur_time\":\"" OCCUR "\""
#define UTOP_ "\"out_serial_no\":\"@S\"," OC_
#define UCARD_(x) "{" UTOP_ ",\"card\":{" x "}}"
#define UWITH_(x) "{" UTOP_ ",\"card\":{\"point\":\"1\"}," x "}"

static const struct body_case update_cases[] = {
    /* accepted */
    {UCARD_("\"point\":\"1\""), NULL, 0},
    {UCARD_("\"external_card_no\":\"OA-US-EXT\",\"level\":\"VIP1\",\"point\":\"-3.5\","
            "\"balance\":\"0.01\",\"template_id\":\"" TEMPLATE "\","
            "\"front_text_list\":[{\"label\":\"专业课程\",\"value\":\"金融贸易\"}],"
            "\"mdcode_info\":{\"code_status\":\"SUCCESS\",\"code_value\":\"1KFCDY0002\","
            "\"expire_time\":\"2017-06-09 16:25:53\",\"time_stamp\":1496996459},"
            "\"front_image_id\":\"@L1024@\""),
     NULL, 0},
    {"{\"out_serial_no\":\"@L58@@S\"," OC_ ",\"card\":{\"level\":\"@L64@\"}}", NULL, 0},
    {UCARD_("\"mdcode_info\":{\"code_status\":\"FAIL_RETRY\",\"time_stamp\":0}"), NULL, 0},
    {UWITH_("\"changed_point\":\"20\""), NULL, 0},
    {UWITH_("\"changed_point\":\"-5.5\""), NULL, 0},
    /* refused, at `field` */
    {"{" OC_ ",\"card\":{\"point\":\"1\"}}", "out_serial_no", 0},
    {"{\"out_serial_no\":\"@L59@@S\"," OC_ ",\"card\":{\"point\":\"1\"}}", "out_serial_no", 0},
    {"{\"out_serial_no\":\"\"," OC_ ",\"card\":{\"point\":\"1\"}}", "out_serial_no", 0},
    {"{\"out_serial_no\":\"@S\",\"card\":{\"point\":\"1\"}}", "occur_time", 0},
    {"{\"out_serial_no\":\"@S\",\"occur_time\":\"2026-11-30T10:15:00\",\"card\":{\"point\":\"1\"}}",
     "occur_time", 0},
    {"{\"out_serial_no\":\"@S\",\"occur_time\":\"2026-02-30 10:15:00\",\"card\":{\"point\":\"1\"}}",
     "occur_time", 1},
    {"{" UTOP_ "}", "card", 0},
    {"{" UTOP_ ",\"card\":{}}", "card", 0},
    {"{" UTOP_ ",\"card\":[]}", "card", 0},
    {UCARD_("\"open_date\":\"2014-02-20 21:20:46\""), "card.open_date", 0},
    {UCARD_("\"point\":\"1\",\"valid_date\":\"2030-02-20 21:20:46\""), "card.valid_date", 0},
    {UCARD_("\"point\":\"1.234\""), "card.point", 0},
    {UCARD_("\"balance\":\"-1\""), "card.balance", 0},
    {UCARD_("\"level\":\"@L65@\""), "card.level", 0},
    {UCARD_("\"external_card_no\":\"@L65@\""), "card.external_card_no", 0},
    {UCARD_("\"colour\":\"red\""), "card.colour", 0},
    {UCARD_("\"front_text_list\":[{\"label\":\"专业课程A\"}]"), "card.front_text_list[0].label", 0},
    {UCARD_("\"mdcode_info\":{\"code_status\":\"SUCCESS\",\"time_stamp\":1}"),
     "card.mdcode_info.code_value", 0},
    {UWITH_("\"changed_point\":\"1.234\""), "changed_point", 0},
    {UWITH_("\"changed_point\":20"), "changed_point", 0},
    {UWITH_("\"auth_token\":\"composeB0123\""), "auth_token", 0},
    {UWITH_("\"card_template_id\":\"" TEMPLATE "\""), "card_template_id", 0},
};

START_TEST(test_update_schema_agrees)
{
    const char *schema = "components|schemas|CardUpdateRequest";
    char biz[64];
    open_new("oa-us-card", NULL, biz);
    for (size_t i = 0; i < sizeof(update_cases) / sizeof(update_cases[0]); i++) {
        const struct body_case *c = &update_cases[i];
        char serial[16];
        snprintf(serial, sizeof(serial), "oaus%02zu", i);
        char *body = expand(c->body, serial);
        schema_verdict(schema, i, c, body);

        struct ts_http r;
        patch_card(&r, biz, body);
        if (c->field) {
            expect(&r, CARD_T, "patch", 400, "INVALID_PARAMETER");
            expect_field(&r, c->field);
        } else {
            ck_assert_msg(r.status == 200, "case %zu: the service refuses a valid body: %ld %s", i,
                          r.status, r.body);
            expect(&r, CARD_T, "patch", 200, NULL);
        }
        ts_http_free(&r);
        free(body);
    }
    /* What reached Alipay: the accepted ones, each once. */
    size_t accepted = 0;
    for (size_t i = 0; i < sizeof(update_cases) / sizeof(update_cases[0]); i++)
        accepted += update_cases[i].field == NULL;
    ck_assert_int_eq(sim_card_long(biz, "updates"), (long)accepted);
}
END_TEST

/* =========================================================== request errors */

START_TEST(test_request_errors)
{
    struct ts_http r;
    char *b = open_body("oa-req-1", TEMPLATE);
    const char *text[] = {TS_AUTH, "Content-Type: text/plain", NULL};
    api(&r, "POST", "/v1/cards", text, b);
    expect(&r, "/v1/cards", "post", 415, "UNSUPPORTED_MEDIA_TYPE");
    ts_http_free(&r);
    api(&r, "POST", "/v1/cards", AUTH_JSON, "{\"out_serial_no\":");
    expect(&r, "/v1/cards", "post", 400, "MALFORMED_JSON");
    ts_http_free(&r);
    api(&r, "POST", "/v1/cards", AUTH_JSON, "{} {}");
    expect(&r, "/v1/cards", "post", 400, "MALFORMED_JSON");
    ts_http_free(&r);

    /* Over 64 KiB. */
    size_t big = 64 * 1024 + 1;
    char *huge = malloc(big + 1);
    memset(huge, ' ', big);
    huge[0] = '{', huge[big - 1] = '}', huge[big] = '\0';
    api(&r, "POST", "/v1/cards", AUTH_JSON, huge);
    expect(&r, "/v1/cards", "post", 413, "PAYLOAD_TOO_LARGE");
    ts_http_free(&r);

    /* The same for an update (of a card nobody has: the body is judged
     * first). */
    const char *card = "/v1/cards/20000000000000000001";
    char *ub = update_body("oa-req-up", OCCUR, "\"point\":\"1\"", NULL);
    api(&r, "PATCH", card, text, ub);
    expect(&r, CARD_T, "patch", 415, "UNSUPPORTED_MEDIA_TYPE");
    ts_http_free(&r);
    api(&r, "PATCH", card, AUTH, ub);
    expect(&r, CARD_T, "patch", 415, "UNSUPPORTED_MEDIA_TYPE");
    ts_http_free(&r);
    api(&r, "PATCH", card, AUTH_JSON, "{\"out_serial_no\":");
    expect(&r, CARD_T, "patch", 400, "MALFORMED_JSON");
    ts_http_free(&r);
    api(&r, "PATCH", card, AUTH_JSON, huge);
    expect(&r, CARD_T, "patch", 413, "PAYLOAD_TOO_LARGE");
    ts_http_free(&r);
    free(huge);
    api(&r, "PATCH", card, AUTH_JSON, "[]");
    expect(&r, CARD_T, "patch", 400, "INVALID_PARAMETER");
    ts_http_free(&r);
    char *long_no = expand("/v1/cards/@L33@", "");
    api(&r, "PATCH", long_no, AUTH_JSON, ub);
    expect(&r, CARD_T, "patch", 400, "INVALID_PARAMETER");
    expect_field(&r, "biz_card_no");
    ts_http_free(&r);
    free(long_no);

    /* No key, a wrong key: every /v1 operation. */
    const char *nokey[] = {TS_JSON, NULL};
    const char *badkey[] = {"Authorization: Bearer not-a-key", TS_JSON, NULL};
    const char *const *hs[] = {nokey, badkey};
    for (size_t i = 0; i < 2; i++) {
        api(&r, "POST", "/v1/cards", hs[i], b);
        expect(&r, "/v1/cards", "post", 401, "UNAUTHENTICATED");
        ts_http_free(&r);
        api(&r, "GET", "/v1/cards?user_id=" USER, hs[i], NULL);
        expect(&r, "/v1/cards", "get", 401, "UNAUTHENTICATED");
        ts_http_free(&r);
        api(&r, "GET", "/v1/cards/20000000000000000001", hs[i], NULL);
        expect(&r, "/v1/cards/{biz_card_no}", "get", 401, "UNAUTHENTICATED");
        ts_http_free(&r);
        api(&r, "GET", "/v1/cards/lookup?code=QR1&type=D_QR_CODE", hs[i], NULL);
        expect(&r, "/v1/cards/lookup", "get", 401, "UNAUTHENTICATED");
        ts_http_free(&r);
        api(&r, "PATCH", card, hs[i], ub);
        expect(&r, CARD_T, "patch", 401, "UNAUTHENTICATED");
        ts_http_free(&r);
        api(&r, "DELETE",
            "/v1/cards/20000000000000000001?out_serial_no=oa-req-del&reason_code=CANCEL", hs[i],
            NULL);
        expect(&r, CARD_T, "delete", 401, "UNAUTHENTICATED");
        ts_http_free(&r);
    }
    free(b);
    free(ub);

    /* Query parameters. */
    static const char *const list_bad[] = {
        "/v1/cards", "/v1/cards?user_id=" USER "&out_serial_no=x", "/v1/cards?colour=red",
        "/v1/cards?out_serial_no=", NULL};
    for (size_t i = 0; list_bad[i]; i++) {
        api(&r, "GET", list_bad[i], AUTH, NULL);
        expect(&r, "/v1/cards", "get", 400, "INVALID_PARAMETER");
        ts_http_free(&r);
    }
    static const char *const query_bad[] = {"/v1/cards/20000000000000000001?user_id=123",
                                            "/v1/cards/20000000000000000001?colour=red",
                                            "/v1/cards/"
                                            "@L33@",
                                            NULL};
    for (size_t i = 0; query_bad[i]; i++) {
        char *t = expand(query_bad[i], "");
        api(&r, "GET", t, AUTH, NULL);
        expect(&r, "/v1/cards/{biz_card_no}", "get", 400, "INVALID_PARAMETER");
        ts_http_free(&r);
        free(t);
    }
    static const char *const lookup_bad[] = {"/v1/cards/lookup",
                                             "/v1/cards/lookup?code=QR1",
                                             "/v1/cards/lookup?type=D_QR_CODE",
                                             "/v1/cards/lookup?code=QR1&type=BIZ_CARD",
                                             "/v1/cards/lookup?code=QR1&type=D_QR_CODE&x=1",
                                             NULL};
    for (size_t i = 0; lookup_bad[i]; i++) {
        api(&r, "GET", lookup_bad[i], AUTH, NULL);
        expect(&r, "/v1/cards/lookup", "get", 400, "INVALID_PARAMETER");
        ts_http_free(&r);
    }
    /* The delete's query, each refusal naming its parameter. */
    static const char *const delete_bad[][2] = {
        {"?reason_code=CANCEL", "out_serial_no"},
        {"?out_serial_no=&reason_code=CANCEL", "out_serial_no"},
        {"?out_serial_no=@L33@&reason_code=CANCEL", "out_serial_no"},
        {"?out_serial_no=a%01b&reason_code=CANCEL", "out_serial_no"},
        {"?out_serial_no=oa-req-del", "reason_code"},
        {"?out_serial_no=oa-req-del&reason_code=LOST", "reason_code"},
        {"?out_serial_no=oa-req-del&reason_code=cancel", "reason_code"},
        {"?out_serial_no=oa-req-del&reason_code=CANCEL&colour=red", "colour"},
    };
    for (size_t i = 0; i < sizeof(delete_bad) / sizeof(delete_bad[0]); i++) {
        char q[256];
        snprintf(q, sizeof(q), "/v1/cards/20000000000000000001%s", delete_bad[i][0]);
        char *t = expand(q, "");
        api(&r, "DELETE", t, AUTH, NULL);
        expect(&r, CARD_T, "delete", 400, "INVALID_PARAMETER");
        expect_field(&r, delete_bad[i][1]);
        ts_http_free(&r);
        free(t);
    }
    char *t = expand("/v1/cards/@L33@?out_serial_no=oa-req-del&reason_code=CANCEL", "");
    api(&r, "DELETE", t, AUTH, NULL);
    expect(&r, CARD_T, "delete", 400, "INVALID_PARAMETER");
    expect_field(&r, "biz_card_no");
    ts_http_free(&r);
    free(t);
}
END_TEST

/* ============================================================ gateway faults */

struct fault_case {
    const char *mode;
    int status;
    const char *code;
};

/* The outcome table of api.md §2, through the simulator's fault modes. */
static const struct fault_case fault_cases[] = {
    {"code_20001", 422, "ALIPAY_AUTH_FAILED"},
    {"error_response", 502, "ALIPAY_REQUEST_REFUSED"},
    {"code_20000", 502, "ALIPAY_UNAVAILABLE"},
    {"http_500", 502, "ALIPAY_UNAVAILABLE"},
    {"drop", 502, "ALIPAY_UNAVAILABLE"},
    {"bad_signature", 502, "ALIPAY_BAD_SIGNATURE"},
    {"unsigned_success", 502, "ALIPAY_BAD_SIGNATURE"},
};

/* A fault for the next calls about key. A dropped connection counts
 * twice: libcurl sends a request again, once, when a reused keep-alive
 * connection closes before any answer. */
static void add_fault(const char *mode, const char *method, const char *key, int delay_ms)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"mode\":\"%s\",\"method\":\"alipay.marketing.card.%s\",\"out_serial_no\":\"%s\","
             "\"count\":%d,\"delay_ms\":%d}",
             mode, method, key, strcmp(mode, "drop") == 0 ? 2 : 1, delay_ms);
    ck_assert_msg(ts_sim_fault(&st.sim, json) == 0, "the simulator refused fault %s", json);
}

START_TEST(test_gateway_outcomes)
{
    struct ts_http r;
    /* 40004 TEMPLATE_NOT_EXIT: final, replayed. */
    for (int i = 0; i < 2; i++) {
        open_card(&r, "oa-gw-rej", "20990101000000000000000000000001");
        expect(&r, "/v1/cards", "post", 422, "ALIPAY_REJECTED");
        char *rep = ts_http_header(&r, "Idempotent-Replayed");
        ck_assert_msg((rep != NULL) == (i == 1), "Idempotent-Replayed %s on try %d",
                      rep ? "present" : "absent", i + 1);
        free(rep);
        ts_http_free(&r);
    }
    for (size_t i = 0; i < sizeof(fault_cases) / sizeof(fault_cases[0]); i++) {
        const struct fault_case *f = &fault_cases[i];
        char key[32], target[128];
        snprintf(key, sizeof(key), "oa-gw-%zu", i);
        add_fault(f->mode, "open", key, 0);
        open_card(&r, key, TEMPLATE);
        expect(&r, "/v1/cards", "post", f->status, f->code);
        ts_http_free(&r);

        snprintf(key, sizeof(key), "3000000000000000%04zu", i);
        add_fault(f->mode, "query", key, 0);
        snprintf(target, sizeof(target), "/v1/cards/%s", key);
        api(&r, "GET", target, AUTH, NULL);
        expect(&r, "/v1/cards/{biz_card_no}", "get", f->status, f->code);
        ts_http_free(&r);

        snprintf(key, sizeof(key), "QR%020zu", i);
        add_fault(f->mode, "query", key, 0);
        snprintf(target, sizeof(target), "/v1/cards/lookup?code=%s&type=D_QR_CODE", key);
        api(&r, "GET", target, AUTH, NULL);
        expect(&r, "/v1/cards/lookup", "get", f->status, f->code);
        ts_http_free(&r);
    }
    /* Cards Alipay does not have. */
    api(&r, "GET", "/v1/cards/39999999999999999999", AUTH, NULL);
    expect(&r, "/v1/cards/{biz_card_no}", "get", 404, "CARD_NOT_FOUND");
    ts_http_free(&r);
    api(&r, "GET", "/v1/cards/lookup?code=280000000000000000&type=D_BAR_CODE", AUTH, NULL);
    expect(&r, "/v1/cards/lookup", "get", 404, "CARD_NOT_FOUND");
    ts_http_free(&r);
}
END_TEST

struct async_call {
    pthread_t th;
    const char *method, *target, *body;
    struct ts_http r;
};

static void *async_run(void *arg)
{
    struct async_call *a = arg;
    char url[512];
    snprintf(url, sizeof(url), "%s%s", st.cg.url, a->target);
    ts_http_call(a->method, url, a->body ? AUTH_JSON : AUTH, a->body, &a->r);
    return NULL;
}

START_TEST(test_timeouts_and_in_progress)
{
    /* Answers held past the gateway timeout: 504 for each operation; while
     * the open is in flight, its repeat is 409 with Retry-After. */
    add_fault("delay", "open", "oa-slow", BEYOND_TIMEOUT_MS);
    add_fault("delay", "query", "31111111111111111111", BEYOND_TIMEOUT_MS);
    add_fault("delay", "query", "QRSLOW", BEYOND_TIMEOUT_MS);
    char *b = open_body("oa-slow", TEMPLATE);
    struct async_call calls[3] = {
        {.method = "POST", .target = "/v1/cards", .body = b},
        {.method = "GET", .target = "/v1/cards/31111111111111111111"},
        {.method = "GET", .target = "/v1/cards/lookup?code=QRSLOW&type=D_QR_CODE"},
    };
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&calls[i].th, NULL, async_run, &calls[i]), 0);
    /* The open reached the gateway, so its claim is in the ledger. */
    long n = 0;
    for (int i = 0; i < 200 && n < 1; i++) {
        n = ts_sim_calls(&st.sim, "oa-slow");
        if (n < 1)
            usleep(20 * 1000);
    }
    ck_assert_int_eq(n, 1);
    struct ts_http r;
    api(&r, "POST", "/v1/cards", AUTH_JSON, b);
    for (size_t i = 0; i < 3; i++)
        pthread_join(calls[i].th, NULL);
    expect(&r, "/v1/cards", "post", 409, "REQUEST_IN_PROGRESS");
    ts_http_free(&r);
    expect(&calls[0].r, "/v1/cards", "post", 504, "ALIPAY_TIMEOUT");
    expect(&calls[1].r, "/v1/cards/{biz_card_no}", "get", 504, "ALIPAY_TIMEOUT");
    expect(&calls[2].r, "/v1/cards/lookup", "get", 504, "ALIPAY_TIMEOUT");
    for (size_t i = 0; i < 3; i++)
        ts_http_free(&calls[i].r);
    free(b);
}
END_TEST

/* ================================================== updates and deletes */

static int sql(const char *conninfo, const char *stmt);

START_TEST(test_update_and_delete)
{
    struct ts_http r;
    char a[64], b[64];
    open_new("oa-chg-a", "\"external_card_no\":\"OA-EXT-A\",\"point\":\"100\"", a);
    open_new("oa-chg-b", NULL, b);

    /* An update, and its replay. */
    char *up1 =
        update_body("oa-up-1", OCCUR, "\"point\":\"120\",\"balance\":\"88.50\",\"level\":\"VIP2\"",
                    "\"changed_point\":\"20\"");
    patch_card(&r, a, up1);
    expect(&r, CARD_T, "patch", 200, NULL);
    expect_replayed(&r, 0);
    json_object *o = body_json(&r), *card;
    ck_assert_str_eq(str_field(o, "biz_card_no"), a);
    ck_assert_str_eq(str_field(o, "out_serial_no"), "oa-up-1");
    ck_assert_str_eq(str_field(o, "occur_time"), OCCUR);
    ck_assert(json_object_object_get_ex(o, "card", &card));
    ck_assert_str_eq(str_field(card, "point"), "120");
    ck_assert_str_eq(str_field(card, "balance"), "88.50");
    ck_assert_str_eq(str_field(card, "level"), "VIP2");
    ck_assert_int_eq(json_object_object_length(card), 3);
    json_object_put(o);
    char *first = strdup(r.body);
    ts_http_free(&r);
    patch_card(&r, a, up1);
    expect(&r, CARD_T, "patch", 200, NULL);
    expect_replayed(&r, 1);
    ck_assert_str_eq(r.body, first);
    ts_http_free(&r);
    free(first);
    ck_assert_int_eq(sim_card_long(a, "updates"), 1);
    ck_assert_int_eq(sim_card_long(a, "points_messages"), 1);

    /* The serial again with another change, for another card, and an
     * open's serial: one namespace. */
    char *reused[] = {update_body("oa-up-1", OCCUR, "\"point\":\"121\"", NULL),
                      update_body("oa-chg-b", OCCUR, "\"point\":\"121\"", NULL)};
    patch_card(&r, a, reused[0]);
    expect(&r, CARD_T, "patch", 422, "OUT_SERIAL_NO_REUSED");
    expect_field(&r, "out_serial_no");
    ts_http_free(&r);
    patch_card(&r, b, up1);
    expect(&r, CARD_T, "patch", 422, "OUT_SERIAL_NO_REUSED");
    ts_http_free(&r);
    patch_card(&r, b, reused[1]);
    expect(&r, CARD_T, "patch", 422, "OUT_SERIAL_NO_REUSED");
    ts_http_free(&r);
    free(reused[0]);
    free(reused[1]);
    free(up1);

    /* The same occur_time again is in order; points may go down. */
    char *up2 = update_body("oa-up-2", OCCUR, "\"point\":\"115\"", "\"changed_point\":\"-5\"");
    patch_card(&r, a, up2);
    expect(&r, CARD_T, "patch", 200, NULL);
    ts_http_free(&r);
    free(up2);

    /* Refused by cardgate, not sent: an older occur_time, another card's
     * merchant number, a card cardgate does not have. */
    long calls = ts_sim_calls(&st.sim, NULL);
    char *stale = update_body("oa-up-3", "2026-11-30 10:14:59", "\"point\":\"1\"", NULL);
    patch_card(&r, a, stale);
    expect(&r, CARD_T, "patch", 409, "STALE_UPDATE");
    expect_field(&r, "occur_time");
    expect_retry_after(&r, 0);
    ts_http_free(&r);
    free(stale);
    char *taken = update_body("oa-up-4", OCCUR, "\"external_card_no\":\"OA-EXT-A\"", NULL);
    patch_card(&r, b, taken);
    expect(&r, CARD_T, "patch", 409, "EXTERNAL_CARD_NO_TAKEN");
    expect_field(&r, "card.external_card_no");
    expect_retry_after(&r, 0);
    ts_http_free(&r);
    char *nocard = update_body("oa-up-5", OCCUR, "\"point\":\"1\"", NULL);
    patch_card(&r, "39999999999999999998", nocard);
    expect(&r, CARD_T, "patch", 404, "CARD_NOT_FOUND");
    expect_replayed(&r, 0);
    ts_http_free(&r);
    free(nocard);
    delete_card(&r, "39999999999999999998", "oa-del-0", "CANCEL");
    expect(&r, CARD_T, "delete", 404, "CARD_NOT_FOUND");
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_calls(&st.sim, NULL), calls);
    ck_assert_int_eq(sim_card_long(a, "updates"), 2);
    ck_assert_int_eq(sim_card_long(b, "updates"), 0);

    /* A delete, and its replay. */
    delete_card(&r, a, "oa-del-1", "CANCEL");
    expect(&r, CARD_T, "delete", 200, NULL);
    expect_replayed(&r, 0);
    o = body_json(&r);
    ck_assert_str_eq(str_field(o, "biz_card_no"), a);
    ck_assert_str_eq(str_field(o, "out_serial_no"), "oa-del-1");
    ck_assert_str_eq(str_field(o, "reason_code"), "CANCEL");
    ck_assert(str_field(o, "biz_serial_no")[0] != '\0');
    json_object_put(o);
    first = strdup(r.body);
    ts_http_free(&r);
    delete_card(&r, a, "oa-del-1", "CANCEL");
    expect(&r, CARD_T, "delete", 200, NULL);
    expect_replayed(&r, 1);
    ck_assert_str_eq(r.body, first);
    ts_http_free(&r);
    free(first);
    ck_assert(sim_card_deleted(a));

    /* The deleted card: 410 for changes with other serials, no call; its
     * delete's serial for another card is a reuse. */
    calls = ts_sim_calls(&st.sim, NULL);
    char *late = update_body("oa-up-6", "2026-11-30 10:16:00", "\"point\":\"1\"", NULL);
    patch_card(&r, a, late);
    expect(&r, CARD_T, "patch", 410, "CARD_DELETED");
    ts_http_free(&r);
    free(late);
    delete_card(&r, a, "oa-del-2", "USER_UNBUND");
    expect(&r, CARD_T, "delete", 410, "CARD_DELETED");
    ts_http_free(&r);
    delete_card(&r, b, "oa-del-1", "CANCEL");
    expect(&r, CARD_T, "delete", 422, "OUT_SERIAL_NO_REUSED");
    expect_field(&r, "out_serial_no");
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_calls(&st.sim, NULL), calls);

    /* Its merchant number is free for another card now. */
    free(taken);
    taken = update_body("oa-up-7", OCCUR, "\"external_card_no\":\"OA-EXT-A\"", NULL);
    patch_card(&r, b, taken);
    expect(&r, CARD_T, "patch", 200, NULL);
    ts_http_free(&r);
    free(taken);
    api(&r, "GET", "/v1/cards?external_card_no=OA-EXT-A", AUTH, NULL);
    expect(&r, "/v1/cards", "get", 200, NULL);
    o = body_json(&r);
    json_object *cards = json_object_object_get(o, "cards");
    ck_assert_uint_eq(json_object_array_length(cards), 2);
    ck_assert_str_eq(str_field(json_object_array_get_idx(cards, 0), "biz_card_no"), a);
    ck_assert_str_eq(str_field(json_object_array_get_idx(cards, 0), "status"), "deleted");
    ck_assert_str_eq(str_field(json_object_array_get_idx(cards, 1), "biz_card_no"), b);
    ck_assert_str_eq(str_field(json_object_array_get_idx(cards, 1), "status"), "active");
    json_object_put(o);
    ts_http_free(&r);
}
END_TEST

START_TEST(test_change_gateway_outcomes)
{
    /* The outcome table for updates and deletes, each on a card of its
     * own. Then the retry of each: an update whose outcome was unknown is
     * sent again only when the card does not show it yet, so Alipay has
     * it once and the member one points message, whatever happened. */
    struct ts_http r;
    for (size_t i = 0; i < sizeof(fault_cases) / sizeof(fault_cases[0]); i++) {
        const struct fault_case *f = &fault_cases[i];
        char serial[32], up[32], del[32], biz[64];
        snprintf(serial, sizeof(serial), "oa-cgw-%zu", i);
        snprintf(up, sizeof(up), "oa-cgw-up-%zu", i);
        snprintf(del, sizeof(del), "oa-cgw-del-%zu", i);
        open_new(serial, NULL, biz);
        char *body = update_body(up, OCCUR, "\"point\":\"120\",\"level\":\"VIP2\"",
                                 "\"changed_point\":\"20\"");
        add_fault(f->mode, "update", biz, 0);
        patch_card(&r, biz, body);
        expect(&r, CARD_T, "patch", f->status, f->code);
        ts_http_free(&r);
        /* A dropped call's second rule may be left unused. */
        ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);
        /* A call that may still land at Alipay (a dropped connection) holds
         * its retry for the lock margin: 409 REQUEST_IN_PROGRESS until then. */
        for (int k = 0; k < 100; k++) {
            patch_card(&r, biz, body);
            if (r.status != 409)
                break;
            expect(&r, CARD_T, "patch", 409, "REQUEST_IN_PROGRESS");
            ts_http_free(&r);
            usleep(100000);
        }
        ck_assert_msg(r.status == 200, "%s: the retry answered %ld: %s", f->mode, r.status, r.body);
        expect(&r, CARD_T, "patch", 200, NULL);
        ts_http_free(&r);
        free(body);
        ck_assert_msg(sim_card_long(biz, "updates") == 1, "%s: %ld updates reached Alipay", f->mode,
                      sim_card_long(biz, "updates"));
        ck_assert_msg(sim_card_long(biz, "points_messages") == 1, "%s: %ld points messages",
                      f->mode, sim_card_long(biz, "points_messages"));

        add_fault(f->mode, "delete", del, 0);
        delete_card(&r, biz, del, "PRESENT");
        expect(&r, CARD_T, "delete", f->status, f->code);
        ts_http_free(&r);
        ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);
        for (int k = 0; k < 100; k++) {
            delete_card(&r, biz, del, "PRESENT");
            if (r.status != 409)
                break;
            expect(&r, CARD_T, "delete", 409, "REQUEST_IN_PROGRESS");
            ts_http_free(&r);
            usleep(100000);
        }
        ck_assert_msg(r.status == 200, "%s: the retry answered %ld: %s", f->mode, r.status, r.body);
        expect(&r, CARD_T, "delete", 200, NULL);
        ts_http_free(&r);
        ck_assert(sim_card_deleted(biz));
    }

    /* A card Alipay no longer has while cardgate holds it live (its
     * delete's answer could not be trusted): CARD_NOT_EXIT, final. */
    char g[64];
    open_new("oa-gone", NULL, g);
    add_fault("bad_signature", "delete", "oa-gone-del", 0);
    delete_card(&r, g, "oa-gone-del", "CANCEL");
    expect(&r, CARD_T, "delete", 502, "ALIPAY_BAD_SIGNATURE");
    ts_http_free(&r);
    char *body = update_body("oa-gone-up", OCCUR, "\"point\":\"1\"", NULL);
    for (int i = 0; i < 2; i++) {
        patch_card(&r, g, body);
        expect(&r, CARD_T, "patch", 404, "CARD_NOT_FOUND");
        expect_replayed(&r, i);
        ts_http_free(&r);
        delete_card(&r, g, "oa-gone-del2", "CANCEL");
        expect(&r, CARD_T, "delete", 404, "CARD_NOT_FOUND");
        expect_replayed(&r, i);
        ts_http_free(&r);
    }
    free(body);
    /* The first delete's retry: Alipay dedups it and answers again. */
    delete_card(&r, g, "oa-gone-del", "CANCEL");
    expect(&r, CARD_T, "delete", 200, NULL);
    ts_http_free(&r);

    /* A business refusal of a delete: Alipay has this out_serial_no for
     * another card, while cardgate's ledger no longer has it (rows purged,
     * say, by a retention job). Final, replayed. An update has no
     * business refusal of that kind: cardgate checks everything the
     * simulator would refuse before sending, so its 422s are reuse and
     * token refusals. */
    char x[64], y[64];
    open_new("oa-rej-x", NULL, x);
    open_new("oa-rej-y", NULL, y);
    delete_card(&r, x, "oa-rej-del", "CANCEL");
    expect(&r, CARD_T, "delete", 200, NULL);
    ts_http_free(&r);
    ck_assert_int_eq(sql(st.db, "DELETE FROM card_requests WHERE out_serial_no = 'oa-rej-del'"), 0);
    for (int i = 0; i < 2; i++) {
        delete_card(&r, y, "oa-rej-del", "CANCEL");
        expect(&r, CARD_T, "delete", 422, "ALIPAY_REJECTED");
        expect_replayed(&r, i);
        json_object *o = body_json(&r), *err, *alipay;
        ck_assert_msg(json_object_object_get_ex(o, "error", &err) &&
                          json_object_object_get_ex(err, "alipay", &alipay) &&
                          strcmp(str_field(alipay, "code"), "40004") == 0,
                      "no error.alipay 40004: %s", r.body);
        json_object_put(o);
        ts_http_free(&r);
    }
    ck_assert(!sim_card_deleted(y));
}
END_TEST

START_TEST(test_change_timeouts_and_busy)
{
    /* An update and a delete held at the gateway past its timeout: 504
     * each. While they are in flight their repeats are 409
     * REQUEST_IN_PROGRESS and other changes of the two cards 409
     * CARD_BUSY, all with Retry-After and none sent. */
    char c[64], d[64], ut[128], dt[192];
    open_new("oa-slow-c", NULL, c);
    open_new("oa-slow-d", NULL, d);
    snprintf(ut, sizeof(ut), "/v1/cards/%s", c);
    snprintf(dt, sizeof(dt), "/v1/cards/%s?out_serial_no=oa-slow-del&reason_code=CANCEL", d);
    char *ub = update_body("oa-slow-up", OCCUR, "\"point\":\"120\"", "\"changed_point\":\"20\"");
    char *other = update_body("oa-slow-up2", OCCUR, "\"point\":\"121\"", NULL);
    char *other_d = update_body("oa-slow-up3", OCCUR, "\"point\":\"121\"", NULL);
    add_fault("delay", "update", c, BEYOND_TIMEOUT_MS);
    add_fault("delay", "delete", "oa-slow-del", BEYOND_TIMEOUT_MS);
    struct async_call calls[2] = {
        {.method = "PATCH", .target = ut, .body = ub},
        {.method = "DELETE", .target = dt},
    };
    for (size_t i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&calls[i].th, NULL, async_run, &calls[i]), 0);
    /* Both reached the gateway, so both hold their claims. */
    long up_in = 0, del_in = 0;
    for (int i = 0; i < 500 && (up_in < 1 || del_in < 1); i++) {
        up_in = sim_card_long(c, "max_in_flight");
        del_in = ts_sim_calls(&st.sim, "oa-slow-del");
        if (up_in < 1 || del_in < 1)
            usleep(20 * 1000);
    }
    struct ts_http busy[5];
    patch_card(&busy[0], c, ub);
    patch_card(&busy[1], c, other);
    delete_card(&busy[2], c, "oa-slow-del2", "CANCEL");
    api(&busy[3], "DELETE", dt, AUTH, NULL);
    patch_card(&busy[4], d, other_d);
    for (size_t i = 0; i < 2; i++)
        pthread_join(calls[i].th, NULL);
    ck_assert_int_eq(up_in, 1);
    ck_assert_int_eq(del_in, 1);
    expect(&busy[0], CARD_T, "patch", 409, "REQUEST_IN_PROGRESS");
    expect_field(&busy[0], "out_serial_no");
    expect(&busy[1], CARD_T, "patch", 409, "CARD_BUSY");
    expect(&busy[2], CARD_T, "delete", 409, "CARD_BUSY");
    expect(&busy[3], CARD_T, "delete", 409, "REQUEST_IN_PROGRESS");
    expect(&busy[4], CARD_T, "patch", 409, "CARD_BUSY");
    for (size_t i = 0; i < 5; i++) {
        expect_retry_after(&busy[i], 1);
        ts_http_free(&busy[i]);
    }
    expect(&calls[0].r, CARD_T, "patch", 504, "ALIPAY_TIMEOUT");
    expect(&calls[1].r, CARD_T, "delete", 504, "ALIPAY_TIMEOUT");
    for (size_t i = 0; i < 2; i++)
        ts_http_free(&calls[i].r);

    /* The held calls are done at Alipay once their answers go out. Then
     * the retries: the card already shows the update, so it is recorded
     * without a second call (and no second points message); the delete
     * is sent again and Alipay's dedup answers it. */
    ck_assert_int_eq(sim_card_wait(c, "updates", 1), 1);
    for (int i = 0; i < 1000 && !sim_card_deleted(d); i++)
        usleep(20 * 1000);
    ck_assert(sim_card_deleted(d));
    struct ts_http r;
    patch_card(&r, c, ub);
    expect(&r, CARD_T, "patch", 200, NULL);
    expect_replayed(&r, 0);
    ts_http_free(&r);
    ck_assert_int_eq(sim_card_long(c, "updates"), 1);
    ck_assert_int_eq(sim_card_long(c, "points_messages"), 1);
    ck_assert_int_eq(sim_card_long(c, "max_in_flight"), 1);
    api(&r, "DELETE", dt, AUTH, NULL);
    expect(&r, CARD_T, "delete", 200, NULL);
    ts_http_free(&r);
    free(ub);
    free(other);
    free(other_d);
}
END_TEST

/* ============================================ templates and the sign-up */

/* A template the simulator takes (template.create's required fields and
 * the rows it checks), in pieces for the bodies that leave one out. */
#define TCT_ "\"card_type\":\"OUT_MEMBER_CARD\""
#define TSUF_ "\"biz_no_suffix_len\":\"10\""
#define TWO_ "\"write_off_type\":\"qrcode\""
#define TSTYLE_                                                                                    \
    "\"template_style_info\":{\"card_show_name\":\"会员卡\","                                   \
    "\"logo_id\":\"1T8Pp00AT7eo9NoAJkMR3AAAACMAAQEC\","                                            \
    "\"background_id\":\"1T8Pp00AT7eo9NoAJkMR3AAAACMAAQEC\",\"bg_color\":\"rgb(55,112,179)\"}"
#define TRULES_                                                                                    \
    "\"field_rule_list\":[{\"field_name\":\"Balance\",\"rule_name\":\"ASSIGN_FROM_REQUEST\","      \
    "\"rule_value\":\"Balance\"}]"
#define TFIELDS_ TCT_ "," TSUF_ "," TWO_ "," TSTYLE_ "," TRULES_
#define TREQ_(x) "{\"request_id\":\"@S\",\"template\":{" x "}}"
#define SUCCESS_URL "https://shop.example.test/welcome"
#define NO_TEMPLATE "29990101000000000000000000000001" /* Alipay has none */
#define FORM_BODY                                                                                  \
    "{\"required\":[\"OPEN_FORM_FIELD_MOBILE\",\"OPEN_FORM_FIELD_NAME\"],"                         \
    "\"optional\":[\"OPEN_FORM_FIELD_GENDER\",\"OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR\"]}"
#define SETTINGS_                                                                                  \
    "{\"valid_date\":\"2030-12-31 23:59:59\",\"level\":\"VIP1\",\"point\":\"0\","                  \
    "\"balance\":\"0.00\",\"external_card_no_prefix\":\"M\""
#define SETTINGS_BODY SETTINGS_ "}"

#define CREATE_M "alipay.marketing.card.template.create"
#define QUERY_M "alipay.marketing.card.template.query"
#define MODIFY_M "alipay.marketing.card.template.modify"
#define FORMSET_M "alipay.marketing.card.formtemplate.set"
#define APPLY_M "alipay.marketing.card.activateurl.apply"
#define OAUTH_M "alipay.system.oauth.token"
#define FORMQ_M "alipay.marketing.card.activateform.query"
#define OPEN_M "alipay.marketing.card.open"

/* A fault for the next call of an Alipay method (the membership program's
 * methods have no out_serial_no to match on). */
static void add_method_fault(const char *mode, const char *method, int delay_ms)
{
    char json[256];
    snprintf(json, sizeof(json), "{\"mode\":\"%s\",\"method\":\"%s\",\"count\":1,\"delay_ms\":%d}",
             mode, method, delay_ms);
    ck_assert_msg(ts_sim_fault(&st.sim, json) == 0, "the simulator refused fault %s", json);
}

/* Waits (up to 20 s: the machine may be loaded) until the simulator has
 * seen more than `before` calls of method. */
static void sim_method_wait(const char *method, long before)
{
    for (int i = 0; i < 1000 && ts_sim_method_calls(&st.sim, method) <= before; i++)
        usleep(20 * 1000);
    ck_assert_msg(ts_sim_method_calls(&st.sim, method) > before, "%s never reached the simulator",
                  method);
}

/* The simulator's activateurl_calls of a template. */
static long sim_activateurl_calls(const char *id)
{
    char url[256];
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/templates/%s", st.sim.control, id);
    ck_assert_int_eq(ts_http_call("GET", url, NULL, NULL, &r), 0);
    ck_assert_msg(r.status == 200, "the simulator has no template %s: %s", id, r.body);
    json_object *o = body_json(&r), *v;
    long n =
        json_object_object_get_ex(o, "activateurl_calls", &v) ? (long)json_object_get_int64(v) : -1;
    json_object_put(o);
    ts_http_free(&r);
    return n;
}

/* The create's body of the template above (malloc'd). */
static char *template_body(const char *request_id)
{
    char *b = malloc(2048);
    snprintf(b, 2048, "{\"request_id\":\"%s\",\"template\":{" TFIELDS_ "}}", request_id);
    return b;
}

/* POST /v1/templates of a fresh template: checks the 201 and its Location
 * and puts the template's id in id. */
static void create_template(const char *request_id, char id[64])
{
    struct ts_http r;
    char *b = template_body(request_id), want[128];
    api(&r, "POST", "/v1/templates", AUTH_JSON, b);
    free(b);
    expect(&r, "/v1/templates", "post", 201, NULL);
    expect_replayed(&r, 0);
    json_object *o = body_json(&r);
    snprintf(id, 64, "%s", str_field(o, "template_id"));
    json_object_put(o);
    ck_assert_msg(id[0] != '\0', "no template_id: %s", r.body);
    char *loc = ts_http_header(&r, "Location");
    snprintf(want, sizeof(want), "/v1/templates/%s", id);
    ck_assert_msg(loc && strcmp(loc, want) == 0, "Location %s, want %s", loc ? loc : "-", want);
    free(loc);
    ts_http_free(&r);
}

/* A call on template id, or on its sub-resource sub ("/form",
 * "/activation"). */
static void template_call(struct ts_http *r, const char *method, const char *id, const char *sub,
                          const char *const headers[], const char *body)
{
    char target[256];
    snprintf(target, sizeof(target), "/v1/templates/%s%s", id, sub);
    api(r, method, target, headers, body);
}

/* Sets template id's form and its activation settings (with success_url
 * when given); checks both 200s. */
static void set_up_signup(const char *id, const char *success_url)
{
    struct ts_http r;
    char body[512];
    template_call(&r, "PUT", id, "/form", AUTH_JSON, FORM_BODY);
    expect(&r, FORM_T, "put", 200, NULL);
    ts_http_free(&r);
    snprintf(body, sizeof(body), SETTINGS_ "%s%s%s}", success_url ? ",\"success_url\":\"" : "",
             success_url ? success_url : "", success_url ? "\"" : "");
    template_call(&r, "PUT", id, "/activation", AUTH_JSON, body);
    expect(&r, ACT_T, "put", 200, NULL);
    ts_http_free(&r);
}

/* A member fills in template id's form (POST /_sim/members; extra: more
 * members of its body): the path and query of the callback Alipay's
 * redirect to PUBLIC_URL gives (malloc'd), and its auth code in code when
 * asked. */
static char *member_signs_up(const char *id, const char *extra, char code[64])
{
    char url[256], body[512];
    const char *h[] = {TS_JSON, NULL};
    struct ts_http r;
    snprintf(url, sizeof(url), "%s/members", st.sim.control);
    snprintf(body, sizeof(body), "{\"template_id\":\"%s\"%s%s}", id, extra ? "," : "",
             extra ? extra : "");
    ck_assert_int_eq(ts_http_call("POST", url, h, body, &r), 0);
    ck_assert_msg(r.status == 201, "the simulator's member: %ld %s", r.status, r.body);
    json_object *o = body_json(&r);
    const char *cb = str_field(o, "callback_url");
    ck_assert_msg(strncmp(cb, PUBLIC_URL SIGNUP_T "?", strlen(PUBLIC_URL SIGNUP_T "?")) == 0,
                  "callback_url %s", cb);
    char *path = strdup(cb + strlen(PUBLIC_URL));
    if (code)
        snprintf(code, 64, "%s", str_field(o, "auth_code"));
    json_object_put(o);
    ts_http_free(&r);
    return path;
}

/* The member's browser at the callback: no key. */
static void follow(struct ts_http *r, const char *path)
{
    api(r, "GET", path, NULL, NULL);
}

START_TEST(test_templates)
{
    /* Create (and its replay), query, modify (and its replay), the form,
     * and the activation settings with their one sign-up address. */
    struct ts_http r;
    char id[64];
    long creates = ts_sim_method_calls(&st.sim, CREATE_M);
    create_template("oa-tpl-1", id);
    char *b = template_body("oa-tpl-1");
    api(&r, "POST", "/v1/templates", AUTH_JSON, b);
    expect(&r, "/v1/templates", "post", 201, NULL);
    expect_replayed(&r, 1);
    json_object *o = body_json(&r);
    ck_assert_str_eq(str_field(o, "template_id"), id);
    json_object_put(o);
    ts_http_free(&r);
    free(b);
    /* The same request_id, another template: refused, not sent. */
    api(&r, "POST", "/v1/templates", AUTH_JSON,
        "{\"request_id\":\"oa-tpl-1\",\"template\":{" TCT_ "," TSUF_
        ",\"write_off_type\":\"barcode\"," TSTYLE_ "," TRULES_ "}}");
    expect(&r, "/v1/templates", "post", 422, "OUT_SERIAL_NO_REUSED");
    expect_field(&r, "request_id");
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, CREATE_M), creates + 1);

    template_call(&r, "GET", id, "", AUTH, NULL);
    expect(&r, TPL_T, "get", 200, NULL);
    o = body_json(&r);
    json_object *tpl;
    ck_assert_str_eq(str_field(o, "template_id"), id);
    ck_assert(json_object_object_get_ex(o, "template", &tpl));
    ck_assert_str_eq(str_field(tpl, "card_type"), "OUT_MEMBER_CARD");
    json_object_put(o);
    ts_http_free(&r);

    const char *mod =
        "{\"request_id\":\"oa-tpl-1-m\",\"template\":{\"write_off_type\":\"barcode\"}}";
    for (int i = 0; i < 2; i++) {
        template_call(&r, "PATCH", id, "", AUTH_JSON, mod);
        expect(&r, TPL_T, "patch", 200, NULL);
        expect_replayed(&r, i);
        o = body_json(&r);
        ck_assert_str_eq(str_field(o, "template_id"), id);
        json_object_put(o);
        ts_http_free(&r);
    }
    template_call(&r, "GET", id, "", AUTH, NULL);
    expect(&r, TPL_T, "get", 200, NULL);
    o = body_json(&r);
    ck_assert(json_object_object_get_ex(o, "template", &tpl));
    ck_assert_str_eq(str_field(tpl, "write_off_type"), "barcode");
    json_object_put(o);
    ts_http_free(&r);
    /* Its request_id with another change, or for another template. */
    template_call(&r, "PATCH", id, "", AUTH_JSON,
                  "{\"request_id\":\"oa-tpl-1-m\",\"template\":{\"write_off_type\":\"qrcode\"}}");
    expect(&r, TPL_T, "patch", 422, "OUT_SERIAL_NO_REUSED");
    expect_field(&r, "request_id");
    ts_http_free(&r);
    template_call(&r, "PATCH", TEMPLATE, "", AUTH_JSON, mod);
    expect(&r, TPL_T, "patch", 422, "OUT_SERIAL_NO_REUSED");
    expect_field(&r, "request_id");
    ts_http_free(&r);

    /* The form: optional may be left out (then answered as []). */
    template_call(&r, "PUT", id, "/form", AUTH_JSON, "{\"required\":[\"OPEN_FORM_FIELD_MOBILE\"]}");
    expect(&r, FORM_T, "put", 200, NULL);
    o = body_json(&r);
    ck_assert_str_eq(str_field(o, "template_id"), id);
    ck_assert_str_eq(json_object_to_json_string_ext(json_object_object_get(o, "required"),
                                                    JSON_C_TO_STRING_PLAIN),
                     "[\"OPEN_FORM_FIELD_MOBILE\"]");
    ck_assert_str_eq(json_object_to_json_string_ext(json_object_object_get(o, "optional"),
                                                    JSON_C_TO_STRING_PLAIN),
                     "[]");
    json_object_put(o);
    ts_http_free(&r);
    template_call(&r, "PUT", id, "/form", AUTH_JSON, FORM_BODY);
    expect(&r, FORM_T, "put", 200, NULL);
    ts_http_free(&r);

    /* The activation settings: the address is asked for once; later
     * settings are stored and answered with the same address. */
    char url[1024] = "";
    const char *const settings[] = {SETTINGS_BODY,
                                    SETTINGS_ ",\"success_url\":\"" SUCCESS_URL "\"}",
                                    "{\"valid_date\":\"2031-01-31 00:00:00\"}"};
    for (size_t i = 0; i < 3; i++) {
        template_call(&r, "PUT", id, "/activation", AUTH_JSON, settings[i]);
        expect(&r, ACT_T, "put", 200, NULL);
        o = body_json(&r);
        ck_assert_str_eq(str_field(o, "template_id"), id);
        if (i == 0)
            snprintf(url, sizeof(url), "%s", str_field(o, "apply_card_url"));
        ck_assert_str_eq(str_field(o, "apply_card_url"), url);
        json_object_put(o);
        ts_http_free(&r);
    }
    ck_assert_msg(strstr(url, "template_id=") != NULL, "apply_card_url %s", url);
    ck_assert_int_eq(sim_activateurl_calls(id), 1);

    /* Templates Alipay does not have: final for a modify (replayed); a
     * plain answer for a read and a form; for the activation address not
     * final (the next call asks again). */
    template_call(&r, "GET", NO_TEMPLATE, "", AUTH, NULL);
    expect(&r, TPL_T, "get", 404, "TEMPLATE_NOT_FOUND");
    ts_http_free(&r);
    template_call(&r, "PUT", NO_TEMPLATE, "/form", AUTH_JSON, FORM_BODY);
    expect(&r, FORM_T, "put", 404, "TEMPLATE_NOT_FOUND");
    ts_http_free(&r);
    for (int i = 0; i < 2; i++) {
        template_call(
            &r, "PATCH", NO_TEMPLATE, "", AUTH_JSON,
            "{\"request_id\":\"oa-tpl-404\",\"template\":{\"write_off_type\":\"qrcode\"}}");
        expect(&r, TPL_T, "patch", 404, "TEMPLATE_NOT_FOUND");
        expect_replayed(&r, i);
        ts_http_free(&r);
        long applies = ts_sim_method_calls(&st.sim, APPLY_M);
        template_call(&r, "PUT", NO_TEMPLATE, "/activation", AUTH_JSON, SETTINGS_BODY);
        expect(&r, ACT_T, "put", 404, "TEMPLATE_NOT_FOUND");
        expect_replayed(&r, 0);
        ts_http_free(&r);
        ck_assert_int_eq(ts_sim_method_calls(&st.sim, APPLY_M), applies + 1);
    }

    /* Alipay's business refusals (what only Alipay checks): final,
     * replayed. */
    for (int i = 0; i < 2; i++) {
        api(&r, "POST", "/v1/templates", AUTH_JSON,
            "{\"request_id\":\"oa-tpl-rej\",\"template\":{" TCT_ "," TSUF_
            ",\"write_off_type\":\"nonsense\"," TSTYLE_ "," TRULES_ "}}");
        expect(&r, "/v1/templates", "post", 422, "ALIPAY_REJECTED");
        expect_replayed(&r, i);
        ts_http_free(&r);
        template_call(&r, "PATCH", id, "", AUTH_JSON,
                      "{\"request_id\":\"oa-tpl-rej-m\",\"template\":{\"write_off_type\":"
                      "\"nonsense\"}}");
        expect(&r, TPL_T, "patch", 422, "ALIPAY_REJECTED");
        expect_replayed(&r, i);
        ts_http_free(&r);
    }
}
END_TEST

START_TEST(test_template_request_errors)
{
    struct ts_http r;
    const char *text[] = {TS_AUTH, "Content-Type: text/plain", NULL};
    const char *nokey[] = {TS_JSON, NULL};
    const char *badkey[] = {"Authorization: Bearer not-a-key", TS_JSON, NULL};
    const char *const *keys[] = {nokey, badkey};
    size_t big = 64 * 1024 + 1;
    char *huge = malloc(big + 1);
    memset(huge, ' ', big);
    huge[0] = '{', huge[big - 1] = '}', huge[big] = '\0';
    char *create = template_body("oa-treq-1");
    static const char *const some = "20000000000000000001";
    const struct {
        const char *method, *sub, *tpath, *op, *body;
    } ops[] = {
        {"POST", NULL, "/v1/templates", "post", create},
        {"PATCH", "", TPL_T, "patch",
         "{\"request_id\":\"oa-treq-m\",\"template\":{\"write_off_type\":\"qrcode\"}}"},
        {"PUT", "/form", FORM_T, "put", FORM_BODY},
        {"PUT", "/activation", ACT_T, "put", SETTINGS_BODY},
    };
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        char target[160];
        if (ops[i].sub)
            snprintf(target, sizeof(target), "/v1/templates/%s%s", some, ops[i].sub);
        else
            snprintf(target, sizeof(target), "%s", ops[i].tpath);
        api(&r, ops[i].method, target, text, ops[i].body);
        expect(&r, ops[i].tpath, ops[i].op, 415, "UNSUPPORTED_MEDIA_TYPE");
        ts_http_free(&r);
        api(&r, ops[i].method, target, AUTH, ops[i].body);
        expect(&r, ops[i].tpath, ops[i].op, 415, "UNSUPPORTED_MEDIA_TYPE");
        ts_http_free(&r);
        api(&r, ops[i].method, target, AUTH_JSON, "{\"required\":");
        expect(&r, ops[i].tpath, ops[i].op, 400, "MALFORMED_JSON");
        ts_http_free(&r);
        api(&r, ops[i].method, target, AUTH_JSON, "{} {}");
        expect(&r, ops[i].tpath, ops[i].op, 400, "MALFORMED_JSON");
        ts_http_free(&r);
        api(&r, ops[i].method, target, AUTH_JSON, "[]");
        expect(&r, ops[i].tpath, ops[i].op, 400, "INVALID_PARAMETER");
        ts_http_free(&r);
        api(&r, ops[i].method, target, AUTH_JSON, huge);
        expect(&r, ops[i].tpath, ops[i].op, 413, "PAYLOAD_TOO_LARGE");
        ts_http_free(&r);
        for (size_t k = 0; k < 2; k++) {
            api(&r, ops[i].method, target, keys[k], ops[i].body);
            expect(&r, ops[i].tpath, ops[i].op, 401, "UNAUTHENTICATED");
            ts_http_free(&r);
        }
        if (ops[i].sub) { /* a malformed template id in the path */
            char *t = expand("/v1/templates/@L33@", "");
            snprintf(target, sizeof(target), "%s%s", t, ops[i].sub);
            free(t);
            api(&r, ops[i].method, target, AUTH_JSON, ops[i].body);
            expect(&r, ops[i].tpath, ops[i].op, 400, "INVALID_PARAMETER");
            expect_field(&r, "template_id");
            ts_http_free(&r);
        }
    }
    for (size_t k = 0; k < 2; k++) {
        template_call(&r, "GET", some, "", keys[k], NULL);
        expect(&r, TPL_T, "get", 401, "UNAUTHENTICATED");
        ts_http_free(&r);
    }
    char *t = expand("/v1/templates/@L33@", "");
    api(&r, "GET", t, AUTH, NULL);
    expect(&r, TPL_T, "get", 400, "INVALID_PARAMETER");
    expect_field(&r, "template_id");
    ts_http_free(&r);
    free(t);
    template_call(&r, "GET", "a%01b", "", AUTH, NULL);
    expect(&r, TPL_T, "get", 400, "INVALID_PARAMETER");
    ts_http_free(&r);
    free(create);
    free(huge);
}
END_TEST

/* The bodies of the templates' operations: the schema, the contract and
 * the service agree, as for the cards' bodies. */
static void body_cases_agree(const struct body_case *cases, size_t n, const char *schema,
                             const char *method, const char *target, const char *tpath,
                             const char *op, int ok_status, const char *prefix)
{
    for (size_t i = 0; i < n; i++) {
        const struct body_case *c = &cases[i];
        char serial[48];
        snprintf(serial, sizeof(serial), "%.8s%02u", prefix, (unsigned)(i % 100));
        char *body = expand(c->body, serial);
        schema_verdict(schema, i, c, body);
        struct ts_http r;
        api(&r, method, target, AUTH_JSON, body);
        if (c->field) {
            expect(&r, tpath, op, 400, "INVALID_PARAMETER");
            expect_field(&r, c->field);
        } else {
            ck_assert_msg(r.status == ok_status,
                          "%s case %zu: the service refuses a valid body: %ld %s", schema, i,
                          r.status, r.body);
            expect(&r, tpath, op, ok_status, NULL);
        }
        ts_http_free(&r);
        free(body);
    }
}

static const struct body_case create_cases[] = {
    /* accepted */
    {TREQ_(TFIELDS_), NULL, 0},
    {"{\"request_id\":\"@L26@@S\",\"template\":{" TFIELDS_ ",\"biz_no_prefix\":\"@L10@\"}}", NULL,
     0},
    {TREQ_(TCT_ ",\"biz_no_suffix_len\":\"32\"," TWO_ "," TSTYLE_ "," TRULES_
                ",\"open_card_conf\":{\"open_card_source_type\":\"ISV\"}"),
     NULL, 0},
    /* refused, at `field` */
    {"{\"template\":{" TFIELDS_ "}}", "request_id", 0},
    {"{\"request_id\":\"\",\"template\":{" TFIELDS_ "}}", "request_id", 0},
    {"{\"request_id\":\"@L33@\",\"template\":{" TFIELDS_ "}}", "request_id", 0},
    {"{\"request_id\":\"a b\",\"template\":{" TFIELDS_ "}}", "request_id", 0},
    {"{\"request_id\":\"@S\"}", "template", 0},
    {"{\"request_id\":\"@S\",\"template\":[]}", "template", 0},
    {TREQ_(TSUF_ "," TWO_ "," TSTYLE_ "," TRULES_), "template.card_type", 0},
    {TREQ_("\"card_type\":\"MEMBER_CARD\"," TSUF_ "," TWO_ "," TSTYLE_ "," TRULES_),
     "template.card_type", 0},
    {TREQ_(TCT_ ",\"biz_no_suffix_len\":\"7\"," TWO_ "," TSTYLE_ "," TRULES_),
     "template.biz_no_suffix_len", 0},
    {TREQ_(TCT_ ",\"biz_no_suffix_len\":10," TWO_ "," TSTYLE_ "," TRULES_),
     "template.biz_no_suffix_len", 0},
    {TREQ_(TCT_ "," TSUF_ "," TSTYLE_ "," TRULES_), "template.write_off_type", 0},
    {TREQ_(TFIELDS_ ",\"biz_no_prefix\":\"@L11@\""), "template.biz_no_prefix", 0},
    {TREQ_(TCT_ "," TSUF_ "," TWO_ "," TRULES_), "template.template_style_info", 0},
    {TREQ_(TCT_ "," TSUF_ "," TWO_ ",\"template_style_info\":\"x\"," TRULES_),
     "template.template_style_info", 0},
    {TREQ_(TCT_ "," TSUF_ "," TWO_ ",\"template_style_info\":{\"card_show_name\":\"x\","
                "\"background_id\":\"b\",\"bg_color\":\"c\"}," TRULES_),
     "template.template_style_info.logo_id", 0},
    {TREQ_(TCT_ "," TSUF_ "," TWO_ ",\"template_style_info\":{\"card_show_name\":\"x\","
                "\"logo_id\":\"\",\"background_id\":\"b\",\"bg_color\":\"c\"}," TRULES_),
     "template.template_style_info.logo_id", 0},
    {TREQ_(TCT_ "," TSUF_ "," TWO_ "," TSTYLE_), "template.field_rule_list", 0},
    {TREQ_(TCT_ "," TSUF_ "," TWO_ "," TSTYLE_ ",\"field_rule_list\":{}"),
     "template.field_rule_list", 0},
    {"{\"request_id\":\"@S\",\"template\":{\"request_id\":\"x\"," TFIELDS_ "}}",
     "template.request_id", 0},
    {"{\"request_id\":\"@S\",\"template\":{\"template_id\":\"x\"," TFIELDS_ "}}",
     "template.template_id", 0},
    {"{\"request_id\":\"@S\",\"template\":{" TFIELDS_ "},\"colour\":1}", "colour", 0},
};

static const struct body_case modify_cases[] = {
    /* accepted */
    {TREQ_(TSTYLE_), NULL, 0},
    {TREQ_("\"biz_no_prefix\":\"abc\",\"write_off_type\":\"dqrcode\""), NULL, 0},
    /* refused, at `field` */
    {"{\"template\":{" TWO_ "}}", "request_id", 0},
    {"{\"request_id\":\"@S\"}", "template", 0},
    {TREQ_(""), "template", 0},
    {TREQ_("\"card_type\":\"MEMBER_CARD\""), "template.card_type", 0},
    {TREQ_(TCT_), "template.card_type", 0},
    {TREQ_("\"biz_no_suffix_len\":\"40\""), "template.biz_no_suffix_len", 0},
    {TREQ_("\"template_style_info\":{\"card_show_name\":\"x\"}"),
     "template.template_style_info.logo_id", 0},
    {TREQ_("\"template_id\":\"x\""), "template.template_id", 0},
    {TREQ_("\"write_off_type\":\"\""), "template.write_off_type", 0},
    {"{\"request_id\":\"@S\",\"template\":{" TWO_ "},\"template_id\":\"x\"}", "template_id", 0},
};

static const struct body_case form_cases[] = {
    /* accepted */
    {"{\"required\":[\"OPEN_FORM_FIELD_MOBILE\"]}", NULL, 0},
    {FORM_BODY, NULL, 0},
    {"{\"required\":[\"OPEN_FORM_FIELD_NAME\"],\"optional\":[]}", NULL, 0},
    /* refused, at `field` */
    {"{}", "required", 0},
    {"{\"required\":[]}", "required", 0},
    {"{\"required\":\"OPEN_FORM_FIELD_MOBILE\"}", "required", 0},
    {"{\"required\":[\"OPEN_FORM_FIELD_SHOE_SIZE\"]}", "required[0]", 0},
    {"{\"required\":[\"OPEN_FORM_FIELD_MOBILE\",1]}", "required[1]", 0},
    {"{\"required\":[\"OPEN_FORM_FIELD_MOBILE\"],\"optional\":\"x\"}", "optional", 0},
    {"{\"required\":[\"OPEN_FORM_FIELD_MOBILE\"],\"optional\":[\"open_form_field_name\"]}",
     "optional[0]", 0},
    {"{\"required\":[\"OPEN_FORM_FIELD_MOBILE\"],\"colour\":1}", "colour", 0},
    /* beyond JSON Schema: a name twice across the lists, IDCARD with CERT */
    {"{\"required\":[\"OPEN_FORM_FIELD_MOBILE\"],\"optional\":[\"OPEN_FORM_FIELD_MOBILE\"]}",
     "optional[0]", 1},
    {"{\"required\":[\"OPEN_FORM_FIELD_IDCARD\",\"OPEN_FORM_FIELD_CERT_NO\"]}", "required", 1},
};

#define VD_ "\"valid_date\":\"2030-12-31 23:59:59\""
static const struct body_case activation_cases[] = {
    /* accepted */
    {"{" VD_ "}", NULL, 0},
    {"{" VD_ ",\"level\":\"@L64@\",\"point\":\"-1.5\",\"balance\":\"12.34\","
     "\"external_card_no_prefix\":\"@L32@\",\"success_url\":\"http://shop.example.test/a?b=c\"}",
     NULL, 0},
    /* refused, at `field` */
    {"{}", "valid_date", 0},
    {"{\"level\":\"VIP1\"}", "valid_date", 0},
    {"{\"valid_date\":\"2030-12-31\"}", "valid_date", 0},
    {"{\"valid_date\":\"2030-02-30 00:00:00\"}", "valid_date", 1},
    {"{" VD_ ",\"point\":\"1.234\"}", "point", 0},
    {"{" VD_ ",\"point\":1}", "point", 0},
    {"{" VD_ ",\"balance\":\"-1\"}", "balance", 0},
    {"{" VD_ ",\"level\":\"@L65@\"}", "level", 0},
    {"{" VD_ ",\"level\":\"\"}", "level", 0},
    {"{" VD_ ",\"external_card_no_prefix\":\"@L33@\"}", "external_card_no_prefix", 0},
    {"{" VD_ ",\"external_card_no_prefix\":\"\"}", "external_card_no_prefix", 0},
    {"{" VD_ ",\"success_url\":\"ftp://shop.example.test/\"}", "success_url", 0},
    {"{" VD_ ",\"success_url\":\"https://shop.example.test/a b\"}", "success_url", 0},
    {"{" VD_ ",\"success_url\":\"https://@L505@\"}", "success_url", 0},
    {"{" VD_ ",\"colour\":\"red\"}", "colour", 0},
};

START_TEST(test_template_bodies_agree)
{
    char id[64], target[160];
    create_template("oa-tb", id);
    body_cases_agree(create_cases, sizeof(create_cases) / sizeof(create_cases[0]),
                     "components|schemas|TemplateCreateRequest", "POST", "/v1/templates",
                     "/v1/templates", "post", 201, "oatc");
    snprintf(target, sizeof(target), "/v1/templates/%s", id);
    body_cases_agree(modify_cases, sizeof(modify_cases) / sizeof(modify_cases[0]),
                     "components|schemas|TemplateModifyRequest", "PATCH", target, TPL_T, "patch",
                     200, "oatm");
    snprintf(target, sizeof(target), "/v1/templates/%s/form", id);
    body_cases_agree(form_cases, sizeof(form_cases) / sizeof(form_cases[0]),
                     "components|schemas|FormRequest", "PUT", target, FORM_T, "put", 200, "");
    snprintf(target, sizeof(target), "/v1/templates/%s/activation", id);
    body_cases_agree(activation_cases, sizeof(activation_cases) / sizeof(activation_cases[0]),
                     "components|schemas|ActivationSettings", "PUT", target, ACT_T, "put", 200, "");
}
END_TEST

START_TEST(test_template_gateway_outcomes)
{
    /* The outcome table for each template call; none of these failures
     * is final, so the activation address is asked for again each time
     * and a failed create's retry makes the template. */
    static const struct fault_case faults[] = {
        {"code_20001", 422, "ALIPAY_AUTH_FAILED"},
        {"error_response", 502, "ALIPAY_REQUEST_REFUSED"},
        {"code_20000", 502, "ALIPAY_UNAVAILABLE"},
        {"http_500", 502, "ALIPAY_UNAVAILABLE"},
        {"bad_signature", 502, "ALIPAY_BAD_SIGNATURE"},
        {"unsigned_success", 502, "ALIPAY_BAD_SIGNATURE"},
    };
    struct ts_http r;
    char id[64], act[64];
    create_template("oa-tgw", id);
    create_template("oa-tgw-act", act);
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        const struct fault_case *f = &faults[i];
        char rid[32], mod[160];
        snprintf(rid, sizeof(rid), "oa-tgw-c-%zu", i);
        char *b = template_body(rid);
        add_method_fault(f->mode, CREATE_M, 0);
        api(&r, "POST", "/v1/templates", AUTH_JSON, b);
        expect(&r, "/v1/templates", "post", f->status, f->code);
        ts_http_free(&r);
        api(&r, "POST", "/v1/templates", AUTH_JSON, b); /* not final */
        expect(&r, "/v1/templates", "post", 201, NULL);
        expect_replayed(&r, 0);
        ts_http_free(&r);
        free(b);

        add_method_fault(f->mode, QUERY_M, 0);
        template_call(&r, "GET", id, "", AUTH, NULL);
        expect(&r, TPL_T, "get", f->status, f->code);
        ts_http_free(&r);

        snprintf(mod, sizeof(mod),
                 "{\"request_id\":\"oa-tgw-m-%zu\",\"template\":{\"write_off_type\":\"qrcode\"}}",
                 i);
        add_method_fault(f->mode, MODIFY_M, 0);
        template_call(&r, "PATCH", id, "", AUTH_JSON, mod);
        expect(&r, TPL_T, "patch", f->status, f->code);
        ts_http_free(&r);

        add_method_fault(f->mode, FORMSET_M, 0);
        template_call(&r, "PUT", id, "/form", AUTH_JSON, FORM_BODY);
        expect(&r, FORM_T, "put", f->status, f->code);
        ts_http_free(&r);

        add_method_fault(f->mode, APPLY_M, 0);
        template_call(&r, "PUT", act, "/activation", AUTH_JSON, SETTINGS_BODY);
        expect(&r, ACT_T, "put", f->status, f->code);
        ts_http_free(&r);
    }
    ck_assert_int_eq(ts_sim_clear_faults(&st.sim), 0);
    template_call(&r, "PUT", act, "/activation", AUTH_JSON, SETTINGS_BODY);
    expect(&r, ACT_T, "put", 200, NULL);
    ts_http_free(&r);
}
END_TEST

START_TEST(test_template_timeouts_and_in_progress)
{
    /* Each template call held past the gateway timeout: 504. While they
     * are in flight, the same create, modify and activation again are
     * 409 REQUEST_IN_PROGRESS with Retry-After, and not sent. */
    char id[64], act[64], t_get[128], t_form[160], t_act[160];
    create_template("oa-tslow", id);
    create_template("oa-tslow-act", act);
    snprintf(t_get, sizeof(t_get), "/v1/templates/%s", id);
    snprintf(t_form, sizeof(t_form), "/v1/templates/%s/form", id);
    snprintf(t_act, sizeof(t_act), "/v1/templates/%s/activation", act);
    char *create = template_body("oa-tslow-c");
    const char *mod =
        "{\"request_id\":\"oa-tslow-m\",\"template\":{\"write_off_type\":\"qrcode\"}}";
    static const char *const methods[] = {CREATE_M, QUERY_M, MODIFY_M, FORMSET_M, APPLY_M};
    long before[5];
    for (size_t i = 0; i < 5; i++) {
        before[i] = ts_sim_method_calls(&st.sim, methods[i]);
        add_method_fault("delay", methods[i], BEYOND_TIMEOUT_MS);
    }
    struct async_call calls[5] = {
        {.method = "POST", .target = "/v1/templates", .body = create},
        {.method = "GET", .target = t_get},
        {.method = "PATCH", .target = t_get, .body = mod},
        {.method = "PUT", .target = t_form, .body = FORM_BODY},
        {.method = "PUT", .target = t_act, .body = SETTINGS_BODY},
    };
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(pthread_create(&calls[i].th, NULL, async_run, &calls[i]), 0);
    /* The three that hold a claim reached the gateway. */
    sim_method_wait(CREATE_M, before[0]);
    sim_method_wait(MODIFY_M, before[2]);
    sim_method_wait(APPLY_M, before[4]);
    struct ts_http busy[3];
    api(&busy[0], "POST", "/v1/templates", AUTH_JSON, create);
    api(&busy[1], "PATCH", t_get, AUTH_JSON, mod);
    api(&busy[2], "PUT", t_act, AUTH_JSON, SETTINGS_BODY);
    for (size_t i = 0; i < 5; i++)
        pthread_join(calls[i].th, NULL);
    expect(&busy[0], "/v1/templates", "post", 409, "REQUEST_IN_PROGRESS");
    expect_field(&busy[0], "request_id");
    expect(&busy[1], TPL_T, "patch", 409, "REQUEST_IN_PROGRESS");
    expect_field(&busy[1], "request_id");
    expect(&busy[2], ACT_T, "put", 409, "REQUEST_IN_PROGRESS");
    expect_field(&busy[2], NULL);
    for (size_t i = 0; i < 3; i++) {
        expect_retry_after(&busy[i], 1);
        ts_http_free(&busy[i]);
    }
    expect(&calls[0].r, "/v1/templates", "post", 504, "ALIPAY_TIMEOUT");
    expect(&calls[1].r, TPL_T, "get", 504, "ALIPAY_TIMEOUT");
    expect(&calls[2].r, TPL_T, "patch", 504, "ALIPAY_TIMEOUT");
    expect(&calls[3].r, FORM_T, "put", 504, "ALIPAY_TIMEOUT");
    expect(&calls[4].r, ACT_T, "put", 504, "ALIPAY_TIMEOUT");
    for (size_t i = 0; i < 5; i++)
        ts_http_free(&calls[i].r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, CREATE_M), before[0] + 1);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, MODIFY_M), before[2] + 1);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, APPLY_M), before[4] + 1);
    free(create);
}
END_TEST

START_TEST(test_signup)
{
    /* Members signing themselves up: the card is opened once per form
     * whatever the reloads, and every failure gets its page. */
    struct ts_http r;
    char a[64], b[64], code[64], path[512];
    create_template("oa-su-a", a);
    set_up_signup(a, SUCCESS_URL);
    create_template("oa-su-b", b);
    set_up_signup(b, NULL);

    /* 302 to success_url, and a reload: the same answer, no call. */
    char *cb = member_signs_up(a, NULL, NULL);
    char first[256] = "";
    long opens = 0;
    for (int i = 0; i < 2; i++) {
        /* The reload carries a parameter of Alipay's own: ignored. */
        snprintf(path, sizeof(path), "%s%s", cb, i ? "&scope=auth_base&alipay_trace=x" : "");
        follow(&r, path);
        expect(&r, SIGNUP_T, "get", 302, NULL);
        expect_replayed(&r, i);
        char *loc = ts_http_header(&r, "Location");
        ck_assert_msg(loc &&
                          strncmp(loc, SUCCESS_URL "?biz_card_no=",
                                  strlen(SUCCESS_URL "?biz_card_no=")) == 0 &&
                          loc[strlen(SUCCESS_URL "?biz_card_no=")] != '\0',
                      "Location %s", loc ? loc : "-");
        if (i == 0) {
            snprintf(first, sizeof(first), "%s", loc);
            opens = ts_sim_method_calls(&st.sim, OPEN_M);
        }
        ck_assert_str_eq(loc, first);
        free(loc);
        ts_http_free(&r);
    }
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, OPEN_M), opens);
    free(cb);
    /* Without success_url: a page, and its reload. */
    cb = member_signs_up(b, NULL, NULL);
    for (int i = 0; i < 2; i++) {
        follow(&r, cb);
        expect(&r, SIGNUP_T, "get", 200, NULL);
        expect_replayed(&r, i);
        ts_http_free(&r);
    }
    free(cb);

    /* Links that are not whole or not ours, and a template without
     * settings: 400, nothing asked. */
    long tokens = ts_sim_method_calls(&st.sim, OAUTH_M);
    static const char *const bad[] = {
        "",
        "?template_id=T&auth_code=c&request_id=r",
        "?app_id=" APP_ID "&auth_code=c&request_id=r",
        "?app_id=" APP_ID "&template_id=T&auth_code=c",
        "?app_id=9999&template_id=T&auth_code=c&request_id=r",
        "?app_id=" APP_ID "&template_id=@L33@&auth_code=c&request_id=r",
        "?app_id=" APP_ID "&template_id=T&auth_code=c&request_id=a%20b",
        "?app_id=" APP_ID "&template_id=T&auth_code=&request_id=r",
        "?app_id=" APP_ID "&template_id=T&auth_code=a%01b&request_id=r",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *q = expand(bad[i], "");
        snprintf(path, sizeof(path), SIGNUP_T "%s", q);
        free(q);
        follow(&r, path);
        expect(&r, SIGNUP_T, "get", 400, "INVALID_PARAMETER");
        ts_http_free(&r);
    }
    follow(&r, SIGNUP_T "?app_id=" APP_ID "&template_id=NOSETTINGS&auth_code=c&request_id=r"
                        "&out_string=x&state=s");
    expect(&r, SIGNUP_T, "get", 400, "ACTIVATION_NOT_CONFIGURED");
    ts_http_free(&r);

    /* No auth_code: the member did not complete the form. */
    snprintf(path, sizeof(path), SIGNUP_T "?app_id=" APP_ID "&template_id=%s&request_id=r1", a);
    follow(&r, path);
    expect(&r, SIGNUP_T, "get", 400, "FORM_NOT_COMPLETED");
    ts_http_free(&r);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, OAUTH_M), tokens);

    /* The member's side: an expired auth code. */
    cb = member_signs_up(a, "\"auth_code_ttl_ms\":0", NULL);
    follow(&r, cb);
    expect(&r, SIGNUP_T, "get", 422, "AUTH_CODE_INVALID");
    ts_http_free(&r);
    free(cb);
    /* A form Alipay does not have (a request_id of no form of this
     * template): refused. */
    cb = member_signs_up(a, NULL, code);
    free(cb);
    snprintf(path, sizeof(path),
             SIGNUP_T "?app_id=" APP_ID "&template_id=%s&auth_code=%s&request_id=oa-no-such-form",
             a, code);
    follow(&r, path);
    expect(&r, SIGNUP_T, "get", 422, "ALIPAY_REJECTED");
    ts_http_free(&r);

    /* Alipay's side, at each step. */
    static const struct {
        const char *mode, *method;
        int status;
        const char *code;
    } steps[] = {
        {"code_20001", FORMQ_M, 422, "ALIPAY_AUTH_FAILED"},
        {"code_20000", OAUTH_M, 502, "ALIPAY_UNAVAILABLE"},
        {"error_response", FORMQ_M, 502, "ALIPAY_REQUEST_REFUSED"},
        {"bad_signature", OPEN_M, 502, "ALIPAY_BAD_SIGNATURE"},
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        cb = member_signs_up(a, NULL, NULL);
        add_method_fault(steps[i].mode, steps[i].method, 0);
        follow(&r, cb);
        expect(&r, SIGNUP_T, "get", steps[i].status, steps[i].code);
        expect_replayed(&r, 0);
        ts_http_free(&r);
        if (strcmp(steps[i].method, OPEN_M) == 0) {
            /* The card may be open now: not asked again. */
            follow(&r, cb);
            expect(&r, SIGNUP_T, "get", 502, "SIGNUP_OUTCOME_UNKNOWN");
            ts_http_free(&r);
        }
        free(cb);
    }

    /* The open held past the gateway timeout: 504; while it is in flight
     * a reload is 409 with Retry-After; after it, the outcome is
     * unknown. */
    cb = member_signs_up(a, NULL, NULL);
    long before = ts_sim_method_calls(&st.sim, OPEN_M);
    add_method_fault("delay", OPEN_M, BEYOND_TIMEOUT_MS);
    struct async_call held = {.method = "GET", .target = cb};
    ck_assert_int_eq(pthread_create(&held.th, NULL, async_run, &held), 0);
    sim_method_wait(OPEN_M, before);
    struct ts_http busy;
    follow(&busy, cb);
    pthread_join(held.th, NULL);
    expect(&busy, SIGNUP_T, "get", 409, "REQUEST_IN_PROGRESS");
    expect_retry_after(&busy, 1);
    ts_http_free(&busy);
    expect(&held.r, SIGNUP_T, "get", 504, "ALIPAY_TIMEOUT");
    ts_http_free(&held.r);
    follow(&r, cb);
    expect(&r, SIGNUP_T, "get", 502, "SIGNUP_OUTCOME_UNKNOWN");
    ts_http_free(&r);
    free(cb);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, OPEN_M), before + 1);
}
END_TEST

START_TEST(test_activation_not_configured)
{
    /* The cardgate without CARDGATE_PUBLIC_URL: members cannot sign up,
     * and activation settings are refused; nothing is asked of Alipay. */
    struct ts_http r, put;
    char url[512];
    long applies = ts_sim_method_calls(&st.sim, APPLY_M),
         tokens = ts_sim_method_calls(&st.sim, OAUTH_M);
    snprintf(url, sizeof(url),
             "%s" SIGNUP_T "?app_id=" APP_ID "&template_id=" TEMPLATE "&auth_code=c&request_id=r",
             off.url);
    ck_assert_msg(ts_http_call("GET", url, NULL, NULL, &r) == 0, "no answer; see %s", off.log);
    expect(&r, SIGNUP_T, "get", 503, "ACTIVATION_NOT_CONFIGURED");
    ts_http_free(&r);
    snprintf(url, sizeof(url), "%s/v1/templates/" TEMPLATE "/activation", off.url);
    ck_assert_msg(ts_http_call("PUT", url, AUTH_JSON, SETTINGS_BODY, &put) == 0,
                  "no answer; see %s", off.log);
    expect(&put, ACT_T, "put", 503, "ACTIVATION_NOT_CONFIGURED");
    ts_http_free(&put);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, APPLY_M), applies);
    ck_assert_int_eq(ts_sim_method_calls(&st.sim, OAUTH_M), tokens);
}
END_TEST

/* ================================================================ database */

static int sql(const char *conninfo, const char *stmt)
{
    PGconn *c = PQconnectdb(conninfo);
    int ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *res = PQexec(c, stmt);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
        if (!ok)
            fprintf(stderr, "%s: %s", stmt, PQresultErrorMessage(res));
        PQclear(res);
    }
    PQfinish(c);
    return ok ? 0 : -1;
}

static void db_name(char *out, size_t n)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(st.db, &err);
    ck_assert_msg(opts != NULL, "cannot parse the conninfo: %s", err ? err : "");
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val)
            snprintf(out, n, "%s", o->val);
    PQconninfoFree(opts);
    ck_assert(out[0] != '\0');
}

START_TEST(test_schema_behind)
{
    struct ts_http get, head, after;
    ck_assert_int_eq(sql(st.db, "UPDATE schema_migrations SET version = version || '.moved'"), 0);
    api(&get, "GET", "/readyz", NULL, NULL);
    api_head(&head, "/readyz");
    int restored = sql(st.db, "UPDATE schema_migrations SET version = "
                              "left(version, length(version) - 6) WHERE version LIKE '%.moved'");
    api(&after, "GET", "/readyz", NULL, NULL);
    ck_assert_int_eq(restored, 0);
    expect(&get, "/readyz", "get", 503, "SCHEMA_BEHIND");
    expect(&head, "/readyz", "head", 503, NULL);
    expect(&after, "/readyz", "get", 200, NULL);
    ts_http_free(&get);
    ts_http_free(&head);
    ts_http_free(&after);
}
END_TEST

START_TEST(test_database_down)
{
    /* The database refuses cardgate: no new connections, its sessions
     * ended. */
    char name[128], stmt[512];
    const char *admin = getenv("CARDGATE_TEST_PG");
    db_name(name, sizeof(name));
    snprintf(stmt, sizeof(stmt), "ALTER DATABASE %s ALLOW_CONNECTIONS false", name);
    ck_assert_int_eq(sql(admin, stmt), 0);
    snprintf(stmt, sizeof(stmt),
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'", name);
    ck_assert_int_eq(sql(admin, stmt), 0);
    snprintf(stmt, sizeof(stmt), "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s'",
             name);
    long left = -1;
    for (int i = 0; i < 100 && left != 0; i++) {
        left = ts_pg_long(admin, stmt);
        if (left != 0)
            usleep(50 * 1000);
    }
    struct ts_http open, list, ready, update, del;
    long before = ts_sim_calls(&st.sim, NULL);
    open_card(&open, "oa-db-1", TEMPLATE);
    api(&list, "GET", "/v1/cards?user_id=" USER, AUTH, NULL);
    api(&ready, "GET", "/readyz", NULL, NULL);
    char *ub = update_body("oa-db-up", OCCUR, "\"point\":\"1\"", NULL);
    patch_card(&update, "20000000000000000001", ub);
    free(ub);
    delete_card(&del, "20000000000000000001", "oa-db-del", "CANCEL");
    struct ts_http tcreate, tmodify, tact, page;
    char *tb = template_body("oa-db-tpl");
    api(&tcreate, "POST", "/v1/templates", AUTH_JSON, tb);
    free(tb);
    template_call(&tmodify, "PATCH", TEMPLATE, "", AUTH_JSON,
                  "{\"request_id\":\"oa-db-m\",\"template\":{\"write_off_type\":\"qrcode\"}}");
    template_call(&tact, "PUT", TEMPLATE, "/activation", AUTH_JSON, SETTINGS_BODY);
    follow(&page, SIGNUP_T "?app_id=" APP_ID "&template_id=" TEMPLATE "&auth_code=c&request_id=r");
    long calls = ts_sim_calls(&st.sim, "oa-db-1");
    long after = ts_sim_calls(&st.sim, NULL);
    snprintf(stmt, sizeof(stmt), "ALTER DATABASE %s ALLOW_CONNECTIONS true", name);
    ck_assert_int_eq(sql(admin, stmt), 0);
    ck_assert_int_eq(left, 0);
    expect(&open, "/v1/cards", "post", 503, "DATABASE_UNAVAILABLE");
    expect(&list, "/v1/cards", "get", 503, "DATABASE_UNAVAILABLE");
    expect(&ready, "/readyz", "get", 503, "DATABASE_UNAVAILABLE");
    expect(&update, CARD_T, "patch", 503, "DATABASE_UNAVAILABLE");
    expect(&del, CARD_T, "delete", 503, "DATABASE_UNAVAILABLE");
    expect(&tcreate, "/v1/templates", "post", 503, "DATABASE_UNAVAILABLE");
    expect(&tmodify, TPL_T, "patch", 503, "DATABASE_UNAVAILABLE");
    expect(&tact, ACT_T, "put", 503, "DATABASE_UNAVAILABLE");
    expect(&page, SIGNUP_T, "get", 503, "DATABASE_UNAVAILABLE");
    ck_assert_int_eq(calls, 0);      /* nothing sent without the intent */
    ck_assert_int_eq(after, before); /* by any of them */
    ts_http_free(&open);
    ts_http_free(&list);
    ts_http_free(&ready);
    ts_http_free(&update);
    ts_http_free(&del);
    ts_http_free(&tcreate);
    ts_http_free(&tmodify);
    ts_http_free(&tact);
    ts_http_free(&page);
}
END_TEST

/* ================================================================ coverage */

/* Last of all: both cardgates stop without a sanitizer report (leaks are
 * reported at exit only). */
START_TEST(test_no_sanitizer_report)
{
    const struct ts_cardgate *cgs[] = {&st.cg, &off};
    for (size_t i = 0; i < 2; i++) {
        ck_assert_int_eq(ts_stop_unrelated(cgs[i]->pid, 20000), 0);
        ck_assert_msg(!ts_log_has_sanitizer_report(cgs[i]->log),
                      "cardgate's log has a sanitizer report; see %s", cgs[i]->log);
    }
}
END_TEST

START_TEST(test_every_documented_answer_seen)
{
    char missing[2048] = "";
    size_t used = 0;
    for (size_t i = 0; i < ntriples; i++) {
        /* INTERNAL has no deterministic trigger (out of memory, a failed
         * statement on a live connection). */
        if (seen[i] || triples[i].status == 500)
            continue;
        used +=
            (size_t)snprintf(missing + used, used < sizeof(missing) ? sizeof(missing) - used : 0,
                             " %s %s %d;", triples[i].method, triples[i].path, triples[i].status);
    }
    ck_assert_msg(ntriples >= 30, "only %zu documented answers", ntriples);
    ck_assert_msg(missing[0] == '\0', "documented but never provoked:%s", missing);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("openapi");
    TCase *tc = tcase_create("spec_vs_service");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, env_up, env_down);
    tcase_add_test(tc, test_operations_and_security);
    tcase_add_test(tc, test_error_codes_documented);
    tcase_add_test(tc, test_routes_documented);
    tcase_add_test(tc, test_open_query_lookup_list);
    tcase_add_test(tc, test_operations_endpoints);
    tcase_add_test(tc, test_request_schema_agrees);
    tcase_add_test(tc, test_request_errors);
    tcase_add_test(tc, test_gateway_outcomes);
    tcase_add_test(tc, test_timeouts_and_in_progress);
    tcase_add_test(tc, test_update_schema_agrees);
    tcase_add_test(tc, test_update_and_delete);
    tcase_add_test(tc, test_change_gateway_outcomes);
    tcase_add_test(tc, test_change_timeouts_and_busy);
    tcase_add_test(tc, test_templates);
    tcase_add_test(tc, test_template_request_errors);
    tcase_add_test(tc, test_template_bodies_agree);
    tcase_add_test(tc, test_template_gateway_outcomes);
    tcase_add_test(tc, test_template_timeouts_and_in_progress);
    tcase_add_test(tc, test_signup);
    tcase_add_test(tc, test_activation_not_configured);
    tcase_add_test(tc, test_schema_behind);
    /* Last: they leave the database refusing, then recovering. */
    tcase_add_test(tc, test_database_down);
    tcase_add_test(tc, test_every_documented_answer_seen);
    tcase_add_test(tc, test_no_sanitizer_report);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
