/* alipay_card: the typed side of alipay.marketing.card.open and .query —
 * the query's biz_content, and reading card_info, schema_url and the
 * channel fields out of a trusted reply. */
#ifndef CARDGATE_ALIPAY_CARD_H
#define CARDGATE_ALIPAY_CARD_H

#include <json-c/json.h>

#include "alipay_response.h"

#define ALIPAY_CARD_OPEN "alipay.marketing.card.open"
#define ALIPAY_CARD_QUERY "alipay.marketing.card.query"
#define ALIPAY_CARD_UPDATE "alipay.marketing.card.update"
#define ALIPAY_CARD_DELETE "alipay.marketing.card.delete"

/* card_info as Alipay returned it. Every pointer borrows from the reply's
 * node and lives as long as it; absent fields are NULL. */
struct alipay_card_info {
    json_object *json; /* the card_info object itself */
    const char *biz_card_no, *external_card_no, *open_date, *valid_date, *level, *point, *balance,
        *template_id, *front_image_id;
};

struct alipay_card_open_result {
    struct alipay_card_info card;
    const char *open_card_channel, *open_card_channel_id;
};

struct alipay_card_query_result {
    struct alipay_card_info card;
    const char *schema_url;
};

/* Reads a successful (ALIPAY_OK) open reply. An OK reply without
 * card_info.biz_card_no cannot be mapped: it is turned into
 * ALIPAY_BAD_SIGNATURE ("unparseable answer", not final) and -1 returned. */
int alipay_card_open_read(struct alipay_reply *r, struct alipay_card_open_result *out);
int alipay_card_query_read(struct alipay_reply *r, struct alipay_card_query_result *out);

/* card.query's biz_content: target_card_no, target_card_no_type
 * (BIZ_CARD | D_QR_CODE | D_BAR_CODE) and, when user_id is non-NULL,
 * card_user_info. Compact JSON, malloc'd; the caller frees. */
char *alipay_card_query_biz(const char *target_card_no, const char *type, const char *user_id);

/* card.delete's biz_content: out_serial_no, target_card_no (BIZ_CARD) and
 * reason_code. Compact JSON, malloc'd; the caller frees. */
char *alipay_card_delete_biz(const char *out_serial_no, const char *biz_card_no,
                             const char *reason_code);

/* The biz_serial_no of a successful (ALIPAY_OK) delete reply, borrowed
 * from the reply; NULL when the answer lacks it (then the reply is turned
 * into ALIPAY_BAD_SIGNATURE, "unparseable answer", as for card_info). */
const char *alipay_card_delete_read(struct alipay_reply *r);

/* Whether card_info (as card.query answers it) already shows what an
 * update sets: 1 when at least one field of `wanted` (the update's card
 * object) is in card_info and every such field has the same value (points
 * and balances compared as numbers, "120" = "120.00"; objects and lists as
 * JSON); 0 otherwise, also when card_info shows none of them. */
int alipay_card_info_shows(json_object *card_info, json_object *wanted);

/* 1 when the reply is Alipay's "no such card" (40004 CARD_NOT_EXIT). */
int alipay_card_not_found(const struct alipay_reply *r);

#endif
