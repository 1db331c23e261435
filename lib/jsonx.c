/* jsonx: see jsonx.h. */
#include "jsonx.h"

#include <stdlib.h>
#include <string.h>

/* One object being scanned: the keys met so far, decoded. */
struct level {
    int is_object, want_key;
    json_object *keys; /* an object used as a set; NULL for arrays */
};

#define MAX_DEPTH 64

/* Decodes the JSON string text[0..n) (with its quotes) by json-c itself, so
 * "a" and "\u0061" are the same key. malloc'd, or NULL. */
static char *decode_key(const char *text, size_t n)
{
    char *quoted = strndup(text, n);
    json_object *k = quoted ? json_tokener_parse(quoted) : NULL;
    free(quoted);
    char *s = json_object_is_type(k, json_type_string) ? strdup(json_object_get_string(k)) : NULL;
    json_object_put(k);
    return s;
}

/* 1 when an object of the (already valid) document repeats a key, or the
 * document quotes a string with ' (json-c takes that even when strict): json-c
 * would keep the last one silently, and a body saying out_serial_no twice
 * must not mean one of them. Documents nested deeper than MAX_DEPTH count
 * as repeating (json-c refuses them anyway). The scan only tracks strings
 * and brackets; json-c has judged everything else. */
static int repeats_a_key(const char *text, size_t len)
{
    struct level stack[MAX_DEPTH];
    int depth = 0, dup = 0;
    for (size_t i = 0; i < len && !dup; i++) {
        char ch = text[i];
        if (ch == '"') {
            size_t j = i + 1;
            while (j < len && text[j] != '"')
                j += text[j] == '\\' ? 2 : 1;
            if (depth > 0 && stack[depth - 1].is_object && stack[depth - 1].want_key) {
                /* Without an escape, the key is its bytes (json-c checked
                 * them): decoding through a tokener of its own per key cost
                 * more than the whole parse. */
                char *key = memchr(text + i + 1, '\\', j - i - 1)
                                ? decode_key(text + i, j + 1 - i)
                                : strndup(text + i + 1, j - i - 1);
                dup = !key || json_object_object_get_ex(stack[depth - 1].keys, key, NULL);
                if (key && !dup)
                    json_object_object_add(stack[depth - 1].keys, key, NULL);
                free(key);
                stack[depth - 1].want_key = 0;
            }
            i = j;
        } else if (ch == '{' || ch == '[') {
            if (depth == MAX_DEPTH) {
                dup = 1;
                break;
            }
            stack[depth++] =
                (struct level){ch == '{', ch == '{', ch == '{' ? json_object_new_object() : NULL};
        } else if (ch == '}' || ch == ']') {
            if (depth > 0)
                json_object_put(stack[--depth].keys);
        } else if (ch == ',' && depth > 0 && stack[depth - 1].is_object) {
            stack[depth - 1].want_key = 1;
        } else if (ch == '\'') {
            dup = 1; /* json-c's strict mode lets single-quoted strings through */
        }
    }
    while (depth > 0)
        json_object_put(stack[--depth].keys);
    return dup;
}

json_object *jsonx_parse(const char *text, size_t len)
{
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return NULL;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = len ? json_tokener_parse_ex(tok, text, (int)len) : NULL;
    size_t end = o && json_tokener_get_error(tok) == json_tokener_success
                     ? json_tokener_get_parse_end(tok)
                     : 0;
    json_tokener_free(tok);
    while (end && end < len &&
           (text[end] == ' ' || text[end] == '\t' || text[end] == '\r' || text[end] == '\n'))
        end++;
    if (o && (end != len || repeats_a_key(text, len))) {
        json_object_put(o);
        o = NULL;
    }
    return o;
}

char *jsonx_text(json_object *o)
{
    const char *t =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    return t ? strdup(t) : NULL;
}
