/* template: the membership program's set-up — the bodies of
 * POST/PATCH /v1/templates (alipay.marketing.card.template.create /
 * .modify), PUT /v1/templates/{id}/form (formtemplate.set) and
 * PUT /v1/templates/{id}/activation (how cardgate opens the cards of
 * members who sign themselves up), checked and mapped to biz_content.
 *
 * Pure functions: no I/O, no global state. Errors name the field by its
 * path in the request body ("template.template_style_info.logo_id").
 *
 * Where the rules come from (the SDK model classes and Alipay's API pages
 * for these methods): template.create requires request_id (≤32),
 * card_type (OUT_MEMBER_CARD), biz_no_suffix_len (a string, 8 to 32),
 * write_off_type, template_style_info (card_show_name, logo_id,
 * background_id and bg_color) and field_rule_list; biz_no_prefix is at most
 * 10 characters. Other fields (column_info_list, open_card_conf, ...) and
 * the rows of the lists are checked for
 * their JSON type only and passed through as given: Alipay adds fields to
 * this method often, and it judges their content itself. formtemplate.set
 * takes fields.required/optional.common_fields, names from the
 * OPEN_FORM_FIELD_* list. */
#ifndef CARDGATE_TEMPLATE_H
#define CARDGATE_TEMPLATE_H

#include <json-c/json.h>

#include "validate.h"

/* Checks the "template" object of a create (for_create 1: the required
 * fields must be there) or of a modify (0: at least one field). Returns 0,
 * or -1 with err (field paths start with "template"). */
int template_check(json_object *tpl, int for_create, struct validate_error *err);

/* A request_id: 1 to 32 characters of printable ASCII without spaces.
 * Returns 0, or -1 with err naming "request_id". */
int template_check_request_id(const char *request_id, struct validate_error *err);

/* template.create's biz_content: request_id, then the template's fields as
 * given. template.modify's: request_id, template_id, then the fields.
 * malloc'd; NULL when out of memory. */
char *template_create_biz(const char *request_id, json_object *tpl);
char *template_modify_biz(const char *request_id, const char *template_id, json_object *tpl);

/* The form body {"required": [names], "optional": [names]}: required is a
 * non-empty list, optional may be absent; names are OPEN_FORM_FIELD_*
 * (MOBILE, GENDER, NAME, BIRTHDAY, BIRTHDAY_WITH_YEAR, IDCARD, CERT_TYPE,
 * CERT_NO, EMAIL, ADDRESS, CITY, IS_STUDENT, MEMBER_GRADE: the SDK's
 * OpenFormFieldDetailDO), each at most once across both lists, and IDCARD
 * not together with CERT_TYPE or CERT_NO (the same class's note).
 * Returns 0 or -1 with err. */
int template_form_check(json_object *body, struct validate_error *err);

/* 1 when name is one of the OPEN_FORM_FIELD_* names above. */
int template_form_field_known(const char *name);

/* formtemplate.set's biz_content for an accepted form body. malloc'd. */
char *template_form_biz(const char *template_id, json_object *body);

/* The activation settings {"valid_date" (required), "level", "point",
 * "balance", "external_card_no_prefix" (≤ 32), "success_url" (http(s)://,
 * ≤ 512)} with the open's rules for the card fields. Returns 0 or -1. */
int template_activation_check(json_object *body, struct validate_error *err);

#endif
