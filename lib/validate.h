/* validate: checks REST API request bodies and parameters against the
 * contract (spec/api.md §2) and the seeds' field limits, maps a valid
 * POST /v1/cards body to alipay.marketing.card.open's biz_content, and
 * computes the idempotency hash of a request.
 *
 * Pure functions: no I/O, no clock, no global state; safe on any thread.
 *
 * Decisions beyond the spec (api.md and the seeds say nothing):
 * - Lengths are counted in Unicode code points; invalid UTF-8 is refused.
 *   Strings must not contain control characters (U+0000-U+001F, U+007F):
 *   they would end up on a card face or in a signed form parameter.
 * - auth_token: at most 128 characters (Alipay publishes no limit; its
 *   tokens are ~40). app_auth_token: at most 40 (the query seed).
 *   open_card_channel / open_card_channel_id: at most 64 each (the open
 *   seed gives no limit).
 * - An optional string that is present must not be empty, and null is not
 *   "absent": Alipay leaves empty parameters out, so callers omit them.
 *   Empty containers (member {}, front_text_list []) are accepted as given.
 * - point: optional '-', digits, optionally '.' and 1-2 digits ("88",
 *   "0.5", "-20", "124.89"). Negative points are allowed (a refund after a
 *   redemption can overdraw a points account). balance: the same without a
 *   sign: a stored-value balance in yuan cannot be negative. No exponent,
 *   no '+', no leading or trailing '.'.
 * - mdcode_info.time_stamp: a JSON integer 0..9223372036854775807 (the
 *   seed's "long"; any 20-digit number exceeds it).
 * - Dates are checked as calendar dates only (leap years, days per month,
 *   00:00:00-23:59:59); no ordering between open_date and valid_date and no
 *   "not in the future" rule for birth.
 */
#ifndef CARDGATE_VALIDATE_H
#define CARDGATE_VALIDATE_H

#include <stddef.h>
#include <json-c/json.h>

/* Why a request was refused. field is the path in the request body
 * ("card.front_text_list[0].label"), or "" when the error is not about one
 * field; message is a one-line sentence for the API's error.message. */
struct validate_error {
    char field[128];
    char message[256];
};

/* The validated POST /v1/cards body. Every pointer borrows from root (the
 * caller keeps root alive and unchanged while it uses this struct); root
 * itself is borrowed too, no reference is taken. */
struct validate_card_open {
    json_object *root;
    const char *out_serial_no, *card_template_id, *user_id;
    const char *auth_token, *app_auth_token; /* NULL when absent */
    const char *external_card_no;            /* card.external_card_no, NULL when absent */
    const char *open_card_channel, *open_card_channel_id; /* NULL when absent */
};

/* Validates a POST /v1/cards body. Returns 0 and fills out, or -1 and fills
 * err (which may be NULL) with the first problem found. Unknown fields are
 * refused at every level, named by their path. */
int validate_card_open(json_object *root, struct validate_card_open *out,
                       struct validate_error *err);

/* The validated PATCH /v1/cards/{biz_card_no} body; pointers borrow from
 * root as for validate_card_open. */
struct validate_card_update {
    json_object *root;
    json_object *card; /* the card object: at least one field, no dates */
    const char *out_serial_no, *occur_time;
    const char *changed_point;    /* NULL when absent */
    const char *external_card_no; /* card.external_card_no, NULL when absent */
};

/* Validates an update body: out_serial_no (1-64), occur_time
 * (yyyy-MM-dd HH:mm:ss), card (the open's card fields and rules, but
 * open_date and valid_date are refused by name: Alipay does not let an
 * update change them; at least one field), changed_point (optional, a
 * number with at most 2 decimals, may be negative). Returns 0 or -1 with
 * err, as validate_card_open. */
int validate_card_update(json_object *root, struct validate_card_update *out,
                         struct validate_error *err);

/* alipay.marketing.card.update's biz_content for an accepted update of
 * biz_card_no: target_card_no, target_card_no_type BIZ_CARD, occur_time,
 * card_info (the card's fields in the seed's order), and
 * merchant_card_msg_info.changed_point when given. malloc'd; NULL when out
 * of memory. */
char *validate_card_update_biz(const struct validate_card_update *req, const char *biz_card_no);

/* 1 when an out_serial_no begins with a prefix cardgate keeps for its own
 * ledger keys (template:, template-modify:, activateurl:): a caller's
 * serial number may not, so the two can never meet. */
int validate_serial_reserved(const char *serial);

/* card.delete's reason_code: USER_UNBUND, CANCEL or PRESENT. 0 or -1. */
int validate_reason_code(const char *s);

/* Text of 1 to max_chars characters: valid UTF-8, no control characters.
 * 0 or -1 (also for NULL). */
int validate_text(const char *s, size_t max_chars);

/* The biz_content of alipay.marketing.card.open for a request that
 * validate_card_open accepted: compact JSON, keys in the seed's order,
 * member.gender spelled "gende", auth tokens left out (they are public
 * parameters). Returns a malloc'd string the caller frees; NULL when out of
 * memory or req is NULL. */
char *validate_card_open_biz(const struct validate_card_open *req);

/* The key of the request hashes, prepared once (HMAC-SHA256 initialised
 * with it; each hash copies the prepared state, which saves the algorithm's
 * fetch and the key's setup per request). One per worker: not for two
 * threads at once. NULL from _new when key is empty or OpenSSL fails. */
struct validate_hasher;
struct validate_hasher *validate_hasher_new(const unsigned char *key, size_t keylen);
void validate_hasher_free(struct validate_hasher *h);

/* The idempotency hash of a request body: HMAC-SHA256 with h's key over a
 * canonical form of root without its top-level auth_token and
 * app_auth_token (objects' keys sorted by byte order at every level, compact,
 * arrays in order), so key order and whitespace do not matter but every
 * value does. The key keeps stored hashes of low-entropy member data (phone
 * numbers) from being brute-forced. Writes 64 lowercase hex digits and a NUL
 * to out. Returns 0, or -1 (root or h NULL, OpenSSL failure). */
int validate_request_hash(json_object *root, const struct validate_hasher *h, char out[65]);

/* "yyyy-MM-dd HH:mm:ss" (with_time 1) or "yyyy-MM-dd" (0) naming a real
 * calendar date and time. Returns 0, or -1 (also for NULL). */
int validate_datetime(const char *s, int with_time);

/* A number with at most 2 decimals ("88", "124.89"); a leading '-' only
 * when allow_negative. No exponent, no '+'. Returns 0, or -1. */
int validate_decimal(const char *s, int allow_negative);

/* An Alipay user id: exactly 16 ASCII digits starting with 2088.
 * Returns 0 when s is one, -1 otherwise (also for NULL). */
int validate_user_id(const char *s);

/* A card number as a path parameter (biz_card_no) or lookup code: 1 to 32
 * characters, each a printable ASCII character other than space (0x21-0x7E).
 * Returns 0, or -1 and fills err (may be NULL) naming `field`. */
int validate_card_no(const char *s, struct validate_error *err, const char *field);

/* The number of Unicode code points in the NUL-terminated s. *ok (may be
 * NULL) is set to 1, or to 0 when s is not valid UTF-8 (overlong forms,
 * surrogates, code points above U+10FFFF, truncated sequences), in which case
 * the count is meaningless. */
size_t validate_utf8_chars(const char *s, int *ok);

#endif
