/* Fuzz target: what Alipay's redirect to GET /callbacks/card-activation
 * brings — its query string, and the sign-up form (activateform.query's
 * `infos`) read with the same bytes. The query either yields parameters
 * that keep their documented limits or is refused; the form either becomes
 * a member object with only card.open's fields or is refused; nothing
 * crashes or leaks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "activation.h"
#include "fuzz.h"

int fuzz_init(void)
{
    return 0;
}

/* NULL, or 1 to max printable ASCII characters. */
static void check_param(const char *v, size_t max, int required)
{
    if (!v) {
        if (required)
            abort();
        return;
    }
    size_t n = strlen(v);
    if (n < 1 || n > max)
        abort();
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x21 || v[i] > 0x7E)
            abort();
}

static void check_query(const char *text)
{
    struct activation_callback cb;
    enum activation_callback_result rc = activation_parse_callback(text, &cb);
    if (rc == ACTIVATION_CALLBACK_INVALID) {
        if (cb.app_id || cb.template_id || cb.request_id || cb.auth_code)
            abort(); /* a refusal hands nothing on */
    } else {
        check_param(cb.app_id, 32, 1);
        check_param(cb.template_id, 32, 1);
        check_param(cb.request_id, 64, 1);
        check_param(cb.auth_code, 128, rc == ACTIVATION_CALLBACK_OK);
        if (rc == ACTIVATION_CALLBACK_NO_CODE && cb.auth_code)
            abort();
        char serial[33];
        if (activation_serial(cb.app_id, cb.template_id, cb.request_id, serial) != 0 ||
            strlen(serial) != 32 || serial[0] != 'A')
            abort();
    }
    activation_callback_clear(&cb);
}

static void check_form(const char *text)
{
    json_object *m = activation_member(text);
    if (!m)
        return;
    if (!json_object_is_type(m, json_type_object))
        abort();
    json_object_object_foreach(m, key, val)
    {
        if (strcmp(key, "name") != 0 && strcmp(key, "gender") != 0 && strcmp(key, "birth") != 0 &&
            strcmp(key, "cell") != 0)
            abort(); /* nothing of the form beyond card.open's member fields */
        if (!json_object_is_type(val, json_type_string))
            abort();
    }
    json_object *g = json_object_object_get(m, "gender");
    if (g && strcmp(json_object_get_string(g), "MALE") != 0 &&
        strcmp(json_object_get_string(g), "FEMALE") != 0)
        abort();
    json_object_put(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    check_query(text);
    check_form(text);
    free(text);
    return 0;
}
