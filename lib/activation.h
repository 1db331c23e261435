/* activation: the pure parts of a member's own sign-up — the ledger's
 * out_serial_no derived from Alipay's request_id, the sign-up form Alipay
 * hands back (activateform.query's `infos`) turned into card.open's
 * member_ext_info, and the open itself built from a template's settings.
 *
 * No I/O, no clock (the caller gives "now"), no global state. Nothing here
 * keeps or prints the form: the member's data lives only in the objects the
 * caller owns, and goes only to Alipay. */
#ifndef CARDGATE_ACTIVATION_H
#define CARDGATE_ACTIVATION_H

#include <json-c/json.h>

/* The parameters of Alipay's redirect to GET /callbacks/card-activation,
 * each printable ASCII within its limit: app_id and template_id up to 32,
 * request_id up to 64, auth_code up to 128. Strings the struct owns. */
struct activation_callback {
    char *app_id, *template_id, *request_id, *auth_code;
};

enum activation_callback_result {
    ACTIVATION_CALLBACK_OK = 0,
    ACTIVATION_CALLBACK_INVALID = -1, /* unparseable, or a parameter missing or malformed */
    ACTIVATION_CALLBACK_NO_CODE = -2, /* the rest is valid, auth_code absent: no consent */
};

/* Reads query (the URI's query string, may be NULL) into out. Parameters
 * beyond these four (out_string, Alipay's own tracking ones) are ignored: a
 * redirect from Alipay may carry more than it documents. One of the four
 * given twice (names compared without case) or a %00 anywhere: INVALID. On OK all four are
 * set; on NO_CODE all but auth_code; on INVALID none (out is cleared).
 * The caller frees with activation_callback_clear in every case. */
enum activation_callback_result activation_parse_callback(const char *query,
                                                          struct activation_callback *out);

/* Frees what cb owns and zeroes it; safe on a zeroed cb. */
void activation_callback_clear(struct activation_callback *cb);

/* The out_serial_no of a sign-up: "A" and 31 hex digits of
 * SHA-256(app_id ":" template_id ":" request_id), so every reload, double
 * tap and concurrent hit of one sign-up is one ledger row and, at Alipay,
 * one card (card.open dedups on out_serial_no). Returns 0 or -1. */
int activation_serial(const char *app_id, const char *template_id, const char *request_id,
                      char out[33]);

/* The member as card.open's member object ({"name", "gender", "birth",
 * "cell"} of POST /v1/cards) from `infos`, the JSON array text of objects
 * such as [{"OPEN_FORM_FIELD_MOBILE":"130..."},{"OPEN_FORM_FIELD_NAME":"..."}].
 * GENDER "男"/"MALE" and "女"/"FEMALE" become MALE/FEMALE; BIRTHDAY_WITH_YEAR
 * (yyyy-MM-dd) becomes birth; other fields have no place in
 * member_ext_info and are dropped. A new object the caller puts, or NULL
 * when infos is not such an array. */
json_object *activation_member(const char *infos);

/* The POST /v1/cards body for a sign-up: out_serial_no, template, the
 * member's user_id, card = the settings' valid_date, level, point, balance
 * plus open_date (now, Beijing time, "yyyy-MM-dd HH:mm:ss") and
 * external_card_no = prefix + number; member as given (may be NULL). A
 * member field the open's rules refuse is left out rather than failing the
 * member's sign-up. Returns a new object that validate_card_open accepts,
 * or NULL (settings or ids invalid: err says). */
json_object *activation_open_request(const char *serial, const char *template_id,
                                     const char *user_id, json_object *settings,
                                     const char *external_no, const char *open_date,
                                     json_object *member, char *err, size_t errlen);

#endif
