/* check: the biz_content validation helpers every method of the simulator
 * shares. A refusal names the field by its path in biz_content
 * ("card_ext_info.front_text_list[0].label is longer than 4 characters"),
 * so a client's tests see which field was wrong; the method answers it as
 * 40004 INVALID_PARAMETER with that sub_msg. */
#ifndef ALIPAY_SIM_CHECK_H
#define ALIPAY_SIM_CHECK_H

#include <stddef.h>
#include <json-c/json.h>

/* A validation failure: the message names the field. */
struct check {
    char msg[256];
};

/* Sets c->msg and returns -1, so a check can `return chk_fail(...)`. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int chk_fail(struct check *c, const char *fmt, ...);

/* Characters (Unicode code points) in UTF-8 text: Alipay's limits count
 * characters, and "专业" is 2 of them, not 6 bytes. Text that is not UTF-8
 * counts as SIZE_MAX, longer than any limit. */
size_t chk_chars(const char *str);

/* Are the n bytes of str all ASCII digits? */
int chk_digits(const char *str, size_t n);

/* Refuses keys of obj not in allowed (NULL-terminated): a misspelled key
 * would be ignored by the real gateway and lose data silently; the
 * simulator names it so the client's tests catch it. path is where obj is
 * ("" for biz_content itself). */
int chk_only_keys(json_object *obj, const char *path, const char *const allowed[], struct check *c);

/* The string obj[key] into *out (NULL when absent or null and optional):
 * checks presence, type and the length in characters. */
int chk_str(json_object *obj, const char *path, const char *key, int required, size_t maxchars,
            const char **out, struct check *c);

/* obj[key] as an object into *out (NULL when absent and optional). */
int chk_obj(json_object *obj, const char *path, const char *key, int required, json_object **out,
            struct check *c);

/* obj[key] as an array into *out (NULL when absent and optional); a
 * required array must not be empty. */
int chk_array(json_object *obj, const char *path, const char *key, int required, json_object **out,
              struct check *c);

/* str (may be NULL: nothing to check) is a real date, yyyy-MM-dd HH:mm:ss
 * (with_time) or yyyy-MM-dd. path names it in the message. */
int chk_datetime(const char *path, const char *str, int with_time, struct check *c);

/* str is one of allowed (NULL-terminated); the message lists them. */
int chk_one_of(const char *path, const char *str, const char *const allowed[], struct check *c);

#endif
