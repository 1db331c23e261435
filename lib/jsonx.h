/* jsonx: how cardgate reads and writes JSON text, in one place, so the API,
 * the Alipay client and the simulator agree on what a document is. */
#ifndef CARDGATE_JSONX_H
#define CARDGATE_JSONX_H

#include <stddef.h>
#include <json-c/json.h>

/* Parses text[0..len) as exactly one strict JSON document in valid UTF-8,
 * with nothing but whitespace around it and no object repeating a key
 * (RFC 8259 leaves that to the reader; I-JSON refuses it, and so does
 * cardgate: a body naming out_serial_no twice means nothing sure), nested
 * at most 64 deep. Returns a new object the caller puts, or NULL. */
json_object *jsonx_parse(const char *text, size_t len);

/* Compact text of o with raw UTF-8 and '/' unescaped, malloc'd (the caller
 * frees), or NULL when out of memory. o is not consumed. */
char *jsonx_text(json_object *o);

#endif
