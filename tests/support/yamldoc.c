/* yamldoc: see yamldoc.h. */
#include "yamldoc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "support.h"

static int add(struct ts_ydoc *d, const char *path, const char *value, int doc)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        struct ts_yent *e = realloc(d->e, cap * sizeof(*e));
        if (!e)
            return -1;
        d->e = e, d->cap = cap;
    }
    d->e[d->n].path = strdup(path);
    d->e[d->n].value = strdup(value);
    d->e[d->n].doc = doc;
    if (!d->e[d->n].path || !d->e[d->n].value)
        return -1;
    d->n++;
    return 0;
}

static const char *scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A flow sequence of scalars as "[a, b]"; NULL when it is not one. */
static char *flow_text(yaml_document_t *y, yaml_node_t *seq)
{
    if (seq->data.sequence.style != YAML_FLOW_SEQUENCE_STYLE)
        return NULL;
    size_t cap = 2;
    for (yaml_node_item_t *i = seq->data.sequence.items.start; i < seq->data.sequence.items.top;
         i++) {
        const char *s = scalar(yaml_document_get_node(y, *i));
        if (!s)
            return NULL;
        cap += strlen(s) + 4;
    }
    char *out = malloc(cap + 1), *o = out;
    if (!out)
        return NULL;
    *o++ = '[';
    for (yaml_node_item_t *i = seq->data.sequence.items.start; i < seq->data.sequence.items.top;
         i++) {
        const char *s = scalar(yaml_document_get_node(y, *i));
        int quote = strpbrk(s, ",[]") != NULL;
        o += sprintf(o, "%s%s%s%s", i == seq->data.sequence.items.start ? "" : ", ",
                     quote ? "'" : "", s, quote ? "'" : "");
    }
    strcpy(o, "]");
    return out;
}

/* Adds node (at path; item: it is a sequence item) and what is under it. */
static int walk(struct ts_ydoc *d, yaml_document_t *y, yaml_node_t *node, const char *path,
                int item, int doc, char *err, size_t errlen)
{
    char sub[2048];
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return add(d, path, scalar(node), doc);
    case YAML_SEQUENCE_NODE: {
        char *flow = flow_text(y, node);
        if (flow) {
            int rc = add(d, path, flow, doc);
            free(flow);
            return rc;
        }
        if (!item && *path && add(d, path, "", doc) < 0)
            return -1;
        snprintf(sub, sizeof(sub), "%s%s-", path, *path ? "|" : "");
        for (yaml_node_item_t *i = node->data.sequence.items.start;
             i < node->data.sequence.items.top; i++)
            if (walk(d, y, yaml_document_get_node(y, *i), sub, 1, doc, err, errlen) < 0)
                return -1;
        return 0;
    }
    case YAML_MAPPING_NODE:
        /* A mapping that is a sequence item is known by its keys only. */
        if (!item && *path && add(d, path, "", doc) < 0)
            return -1;
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
             p++) {
            const char *key = scalar(yaml_document_get_node(y, p->key));
            if (!key || strchr(key, '|')) {
                snprintf(err, errlen, "line %lu: a key that is not a plain name",
                         (unsigned long)node->start_mark.line + 1);
                return -1;
            }
            snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "|" : "", key);
            if (walk(d, y, yaml_document_get_node(y, p->value), sub, 0, doc, err, errlen) < 0)
                return -1;
        }
        return 0;
    default:
        return 0;
    }
}

int ts_ydoc_load(struct ts_ydoc *d, const char *file, char *err, size_t errlen)
{
    size_t len = 0;
    char *text = ts_read_file(file, &len);
    if (!text) {
        snprintf(err, errlen, "cannot read %s", file);
        return -1;
    }
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    for (;;) {
        yaml_document_t y;
        if (!yaml_parser_load(&parser, &y)) {
            snprintf(err, errlen, "%s: line %lu: %s", file,
                     (unsigned long)parser.problem_mark.line + 1,
                     parser.problem ? parser.problem : "cannot parse");
            rc = -1;
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&y);
        if (!root) { /* the end of the stream */
            yaml_document_delete(&y);
            break;
        }
        rc = walk(d, &y, root, "", 0, d->docs++, err, errlen);
        yaml_document_delete(&y);
        if (rc < 0)
            break;
    }
    yaml_parser_delete(&parser);
    free(text);
    return rc;
}

void ts_ydoc_free(struct ts_ydoc *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->e[i].path);
        free(d->e[i].value);
    }
    free(d->e);
    memset(d, 0, sizeof(*d));
}

const char *ts_ydoc_get(const struct ts_ydoc *d, int doc, const char *path)
{
    for (size_t i = 0; i < d->n; i++)
        if ((doc < 0 || d->e[i].doc == doc) && strcmp(d->e[i].path, path) == 0)
            return d->e[i].value;
    return NULL;
}

int ts_ydoc_flow_next(const char **p, char *out, size_t n)
{
    const char *s = *p + strspn(*p, "[ ,"), *e;
    if (!*s || *s == ']')
        return 0;
    if (*s == '\'' || *s == '"') {
        char q = *s++;
        for (e = s; *e && !(e[0] == q && (e[1] == ',' || e[1] == ']' || !e[1])); e++)
            ;
        snprintf(out, n, "%.*s", (int)(e - s), s);
        *p = *e ? e + 1 : e;
        return 1;
    }
    e = s + strcspn(s, ",]");
    const char *t = e;
    while (t > s && t[-1] == ' ')
        t--;
    snprintf(out, n, "%.*s", (int)(t - s), s);
    *p = e;
    return 1;
}

int ts_ydoc_flow_has(const char *flow, const char *item)
{
    char v[256];
    for (const char *p = flow; p && ts_ydoc_flow_next(&p, v, sizeof(v));)
        if (strcmp(v, item) == 0)
            return 1;
    return 0;
}
