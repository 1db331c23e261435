/* Fuzz target: a POST or PATCH /v1/cards body. Any bytes either parse and
 * validate into a biz_content that is itself valid JSON, or are refused
 * with a message; nothing crashes or leaks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "validate.h"

int fuzz_init(void)
{
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *root = json_tokener_parse_ex(tok, (const char *)data, (int)size);
    json_tokener_free(tok);
    if (!root)
        return 0;
    struct validate_card_open req;
    struct validate_error err;
    if (validate_card_open(root, &req, &err) == 0) {
        char *biz = validate_card_open_biz(&req);
        json_object *again = biz ? json_tokener_parse(biz) : NULL;
        if (!again)
            abort();
        json_object_put(again);
        free(biz);
        char hash[65];
        static const unsigned char key[] = "fuzz";
        struct validate_hasher *h = validate_hasher_new(key, 4);
        int rc = validate_request_hash(root, h, hash);
        validate_hasher_free(h);
        if (rc != 0 || strlen(hash) != 64)
            abort();
    } else if (!err.message[0]) {
        abort(); /* a refusal always says why */
    }
    struct validate_card_update upd;
    if (validate_card_update(root, &upd, &err) == 0) {
        char *biz = validate_card_update_biz(&upd, "20161111000000001");
        json_object *again = biz ? json_tokener_parse(biz) : NULL;
        if (!again)
            abort();
        json_object_put(again);
        free(biz);
    } else if (!err.message[0]) {
        abort();
    }
    json_object_put(root);
    return 0;
}
