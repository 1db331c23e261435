/* jsonx: see jsonx.h. */
#include "jsonx.h"

#include <stdlib.h>
#include <string.h>

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
    if (o && end != len) {
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
