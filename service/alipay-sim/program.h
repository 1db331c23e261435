/* program: the membership program a merchant sets up once, as the gateway
 * keeps it: card templates (alipay.marketing.card.template.create, .query
 * and .modify; Alipay dedups creates on request_id), each template's
 * sign-up form (alipay.marketing.card.formtemplate.set) and its activation
 * link (alipay.marketing.card.activateurl.apply, which names the callback
 * Alipay sends the member back to).
 *
 * Every known template is a JSON record in s->templates, keyed by its id:
 *   {"template_id", "request_id" (the create's; null for templates given on
 *    the command line or by control), "template" (the create's biz_content
 *    without request_id, modifications applied; null when never created),
 *    "form" ({"required":[…],"optional":[…]} or null), "callback",
 *    "out_string", "follow_app_id", "app_id" (of the last activateurl.apply;
 *    null before), "activateurl_calls"}. */
#ifndef ALIPAY_SIM_PROGRAM_H
#define ALIPAY_SIM_PROGRAM_H

#include "method.h"

/* Sets up and frees the program's state in s. init returns 0 or -1. */
int program_init(struct sim *s);
void program_free(struct sim *s);
/* A reset forgets counters: every template's activateurl_calls go to 0.
 * The templates themselves stay, as cards' templates always have. */
void program_reset(struct sim *s);

/* The record of a known template (borrowed), or NULL. */
json_object *program_template(const struct sim *s, const char *template_id);
/* The record for GET /_sim/templates/{id}: a new reference, or NULL. */
json_object *program_template_json(const struct sim *s, const char *template_id);
/* Is name one of the OPEN_FORM_FIELD_* fields of Alipay's sign-up form? */
int program_form_field_known(const char *name);

/* The gateway methods. */
int program_template_create(struct sim *s, const struct sim_req *r, struct sim_node *out);
int program_template_query(struct sim *s, const struct sim_req *r, struct sim_node *out);
int program_template_modify(struct sim *s, const struct sim_req *r, struct sim_node *out);
int program_form_set(struct sim *s, const struct sim_req *r, struct sim_node *out);
int program_activateurl_apply(struct sim *s, const struct sim_req *r, struct sim_node *out);

#endif
