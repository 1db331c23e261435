/* yamldoc: a YAML file read with libyaml into a flat list of keys, for the
 * tests that check the project's YAML (service/openapi.yaml, deploy/k8s/).
 *
 * Each entry is one key: its path (the keys from the document's root joined
 * by '|'; a sequence item is the key "-") and its value — the scalar's text
 * (a block scalar's whole text), "" for a mapping, and for a sequence of
 * scalars written in flow style its items as "[a, b]" (items holding ',' or
 * brackets quoted). A block sequence of scalars gives one "path|-" entry per
 * item; a sequence item that is a mapping gives only its keys
 * ("path|-|key"). Entries come in document order; doc tells which document
 * of a multi-document file ("---") an entry is in, from 0. */
#ifndef TS_YAMLDOC_H
#define TS_YAMLDOC_H

#include <stddef.h>

struct ts_yent {
    char *path, *value;
    int doc;
};

struct ts_ydoc {
    struct ts_yent *e;
    size_t n, cap;
    int docs; /* how many documents the file holds */
};

/* Reads file into d (zeroed by the caller or by a previous ts_ydoc_free).
 * Returns 0, or -1 with err (libyaml's message and line, or a key holding
 * '|', which a path could not tell apart). */
int ts_ydoc_load(struct ts_ydoc *d, const char *file, char *err, size_t errlen);
void ts_ydoc_free(struct ts_ydoc *d);

/* The value at path in document doc (-1: any), or NULL when absent. */
const char *ts_ydoc_get(const struct ts_ydoc *d, int doc, const char *path);

/* A flow sequence of scalars as yamldoc writes it, "[a, 'b, c', \"d\"]":
 * the item at *p into out (quotes taken off; a quoted item may hold ',' or
 * brackets), *p moved past it. Start with *p at the '['. Returns 1, or 0
 * at the end. */
int ts_ydoc_flow_next(const char **p, char *out, size_t n);
/* 1 when the flow sequence holds item. */
int ts_ydoc_flow_has(const char *flow, const char *item);

#endif
