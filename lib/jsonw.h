/* jsonw: JSON text written directly into a growable buffer, for the lines
 * and answers written on every request, where building json-c objects
 * first and serialising them costs more than the rest of the work (a log
 * line, a card list). Reading JSON stays with json-c (jsonx.h).
 *
 * The buffer's `oom` sticks once an allocation failed, so writers need not
 * check every append; jsonw_take tells at the end. */
#ifndef CARDGATE_JSONW_H
#define CARDGATE_JSONW_H

#include <stddef.h>

struct jsonw {
    char *p; /* NUL-terminated text so far; owned until jsonw_take */
    size_t len, cap;
    int oom;
};

/* Appends n raw bytes (already JSON: punctuation, a number, a key). */
void jsonw_raw(struct jsonw *w, const char *s, size_t n);
void jsonw_puts(struct jsonw *w, const char *s);

/* Appends s, which must be valid UTF-8, as a JSON string: '"' and '\'
 * escaped, control characters as \n, \r, \t or \u00XX (RFC 8259); NULL
 * appends null. */
void jsonw_string(struct jsonw *w, const char *s);
/* The same for s[0..n), which need not end in a NUL (a NUL inside is
 * written \u0000). */
void jsonw_string_len(struct jsonw *w, const char *s, size_t n);

/* The text, malloc'd and NUL-terminated, for the caller to free; NULL when
 * memory ran out (everything is freed then). The buffer is empty after. */
char *jsonw_take(struct jsonw *w);

#endif
