/* check: biz_content validation helpers. See check.h. */
#include "check.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "validate.h"

int chk_fail(struct check *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
    va_end(ap);
    return -1;
}

size_t chk_chars(const char *str)
{
    int ok;
    size_t n = validate_utf8_chars(str, &ok);
    return ok ? n : SIZE_MAX;
}

int chk_digits(const char *str, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)str[i]))
            return 0;
    return 1;
}

static const char *dot(const char *path)
{
    return *path ? "." : "";
}

int chk_only_keys(json_object *obj, const char *path, const char *const allowed[], struct check *c)
{
    json_object_object_foreach(obj, key, val)
    {
        (void)val;
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (!allowed[i])
            return chk_fail(c, "%s%s%s is not a known field", path, dot(path), key);
    }
    return 0;
}

/* obj[key] into *v when present and not null; 0 when absent (then a
 * required key fails with "is required"). */
static int present(json_object *obj, const char *path, const char *key, int required,
                   json_object **v, struct check *c)
{
    *v = NULL;
    if (json_object_object_get_ex(obj, key, v) && *v != NULL)
        return 1;
    if (required)
        return chk_fail(c, "%s%s%s is required", path, dot(path), key);
    return 0;
}

int chk_str(json_object *obj, const char *path, const char *key, int required, size_t maxchars,
            const char **out, struct check *c)
{
    json_object *v;
    int r = present(obj, path, key, required, &v, c);
    *out = NULL;
    if (r <= 0)
        return r;
    if (!json_object_is_type(v, json_type_string))
        return chk_fail(c, "%s%s%s must be a string", path, dot(path), key);
    const char *str = json_object_get_string(v);
    if (required && *str == '\0')
        return chk_fail(c, "%s%s%s is required", path, dot(path), key);
    if (chk_chars(str) > maxchars)
        return chk_fail(c, "%s%s%s is longer than %zu characters", path, dot(path), key, maxchars);
    *out = str;
    return 0;
}

int chk_obj(json_object *obj, const char *path, const char *key, int required, json_object **out,
            struct check *c)
{
    json_object *v;
    int r = present(obj, path, key, required, &v, c);
    *out = NULL;
    if (r <= 0)
        return r;
    if (!json_object_is_type(v, json_type_object))
        return chk_fail(c, "%s%s%s must be an object", path, dot(path), key);
    *out = v;
    return 0;
}

int chk_array(json_object *obj, const char *path, const char *key, int required, json_object **out,
              struct check *c)
{
    json_object *v;
    int r = present(obj, path, key, required, &v, c);
    *out = NULL;
    if (r <= 0)
        return r;
    if (!json_object_is_type(v, json_type_array))
        return chk_fail(c, "%s%s%s must be an array", path, dot(path), key);
    if (required && json_object_array_length(v) == 0)
        return chk_fail(c, "%s%s%s must not be empty", path, dot(path), key);
    *out = v;
    return 0;
}

int chk_datetime(const char *path, const char *str, int with_time, struct check *c)
{
    if (str && validate_datetime(str, with_time) < 0)
        return chk_fail(c, "%s must be a date %s", path,
                        with_time ? "yyyy-MM-dd HH:mm:ss" : "yyyy-MM-dd");
    return 0;
}

int chk_one_of(const char *path, const char *str, const char *const allowed[], struct check *c)
{
    char list[200] = "";
    size_t used = 0;
    for (size_t i = 0; allowed[i]; i++) {
        if (str && strcmp(str, allowed[i]) == 0)
            return 0;
        int n = snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", allowed[i]);
        if (n > 0 && (size_t)n < sizeof(list) - used)
            used += (size_t)n;
    }
    return chk_fail(c, "%s must be one of %s", path, list);
}
