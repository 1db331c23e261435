/* sim: the state and the rules of alipay-sim, the local stand-in for the
 * Alipay OpenAPI gateway.
 *
 * Everything the simulator knows lives in one struct sim that main owns and
 * hands to every callback: the keys, the known card templates, the opened
 * cards (in memory only, deleted ones included), the members' sign-ups,
 * the fault rules and the call counters. This module does no I/O: it turns
 * the parameters of one gateway call into the answer node (card.open,
 * .query, .update and .delete here; the membership program's methods in
 * program.c and member.c), and the HTTP side (gateway.c, control.c) puts
 * it on the wire. */
#ifndef ALIPAY_SIM_SIM_H
#define ALIPAY_SIM_SIM_H

#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "alipay_sign.h"

/* The default templates: the seeds' examples. */
#define SIM_DEFAULT_TEMPLATES "20170308000000000058101000300045,201606270000001"

/* Allowed distance between a request's timestamp and now, in seconds. */
#define SIM_TIMESTAMP_WINDOW 600

enum sim_fault_mode {
    SIM_FAULT_NONE,
    SIM_FAULT_DELAY,            /* answer normally, after delay_ms */
    SIM_FAULT_CODE_20000,       /* signed 20000 isp.unknow-error */
    SIM_FAULT_CODE_20001,       /* signed 20001 aop.invalid-auth-token */
    SIM_FAULT_BAD_SIGNATURE,    /* normal answer, signature over other text */
    SIM_FAULT_UNSIGNED_SUCCESS, /* normal answer without sign */
    SIM_FAULT_ERROR_RESPONSE,   /* unsigned error_response isv.invalid-app-id */
    SIM_FAULT_HTTP_500,         /* HTTP 500 with a text body */
    SIM_FAULT_DROP,             /* close the connection without answering */
    SIM_FAULT_SIGN_FIRST,       /* normal answer with "sign" before the node */
    SIM_FAULT_SYSTEM_ERROR,     /* signed 40004 SYSTEM_ERROR: Alipay failed inside */
    /* with --aes-key, answers to encrypted calls: */
    SIM_FAULT_AES_UNQUOTED,  /* the ciphertext signed without its quotes */
    SIM_FAULT_AES_OTHER_KEY, /* encrypted with another key, well signed */
};

/* "code_20000" -> SIM_FAULT_CODE_20000; returns -1 for an unknown name. */
int sim_fault_mode_parse(const char *name, enum sim_fault_mode *out);
const char *sim_fault_mode_name(enum sim_fault_mode m);

/* One fault rule. method/out_serial_no NULL match anything. */
struct sim_fault {
    struct sim_fault *next;
    long id;
    enum sim_fault_mode mode;
    char *method;
    char *out_serial_no;
    long count; /* matching calls it still applies to; -1 = unlimited */
    long delay_ms;
};

/* One opened card. All strings are owned by the card. */
struct sim_card {
    struct sim_card *next;
    char *biz_card_no;
    char *out_serial_no;
    char *user_id;
    char *template_id; /* card_template_id of the open call */
    char *qr_code;     /* the dynamic codes a wallet would show */
    char *bar_code;
    char *open_card_channel; /* NULL when not given */
    char *open_card_channel_id;
    json_object *card_info; /* what open and query answer as card_info */

    /* What card.update and card.delete did to it. A deleted card stays in
     * memory (and in /_sim/cards) but the gateway no longer knows it. */
    int deleted;
    char *delete_reason;    /* the delete's reason_code; NULL while active */
    char *delete_serial_no; /* the delete's out_serial_no (Alipay dedups on it) */
    char *biz_serial_no;    /* what the delete answered; NULL while active */
    long updates;           /* accepted card.update calls */
    long points_messages;   /* ...of which gave merchant_card_msg_info.changed_point */
};

struct sim_pending; /* a delayed gateway answer, owned by gateway.c */
struct sim_cert;    /* one of Alipay's certificates, owned by cert.c */
struct alipay_aes;

struct sim {
    EVP_PKEY *app_public;     /* verifies the requests */
    EVP_PKEY *alipay_private; /* signs the answers */
    char *app_id;             /* NULL: every app id is accepted */
    enum alipay_sign_type sign_type_default;

    /* Certificate mode (cert.c), NULL in public-key mode: the SNs every
     * request must carry, Alipay's root bundle, and every certificate of
     * Alipay's the answers were ever signed with, the current one first
     * (for alipay.open.app.alipaycert.download). A reset keeps them. */
    char *app_cert_sn, *root_cert_sn;
    STACK_OF(X509) * roots;
    struct sim_cert *alipay_certs;
    /* Content encryption (encrypt.c): the app's AES key; NULL when off. */
    struct alipay_aes *aes;

    /* The membership program (program.c): template id -> its record, and
     * each template.create's request_id -> the template id it made. */
    json_object *templates;
    json_object *template_requests;
    uint64_t template_seq;

    /* The members' sign-ups (member.c): request_id -> member, auth code ->
     * grant, access and refresh token -> user id. */
    json_object *members, *auth_codes, *access_tokens, *refresh_tokens;
    uint64_t member_seq;

    struct sim_card *cards, *cards_tail; /* in opening order */
    size_t ncards;
    /* Keys borrowed from cards. by_delete: the out_serial_no of each delete. */
    struct lh_table *by_serial, *by_biz, *by_qr, *by_bar, *by_delete;
    uint64_t card_seq;
    uint64_t delete_seq; /* numbers the deletes' biz_serial_no */
    uint64_t rng;        /* xorshift state for the random digits of codes */
    char instance[13];   /* 12 random digits: card numbers differ between runs */

    struct sim_fault *faults; /* in the order they were added */
    long next_fault_id;

    long calls_total;
    json_object *calls_methods; /* method -> count */
    json_object *calls_serials; /* out_serial_no -> count */

    /* Concurrency evidence: card.update/.delete calls per target_card_no
     * between arrival and answer, now and the most ever seen. A reset starts
     * a new generation, so calls that arrived before it leave no trace. */
    json_object *in_flight;     /* target_card_no -> calls now */
    json_object *in_flight_max; /* target_card_no -> most at once */
    unsigned long in_flight_gen;

    /* The HTTP side's state (gateway.c): delayed answers still to send. */
    struct event_base *base;
    struct sim_pending *pending;
};

/* Sets up s with borrowed-then-owned keys: on success s owns app_public and
 * alipay_private (sim_free frees them). templates is a comma-separated list
 * (NULL: the defaults), app_id may be NULL. Returns 0, or -1 with err. */
int sim_init(struct sim *s, EVP_PKEY *app_public, EVP_PKEY *alipay_private, const char *app_id,
             const char *templates, enum alipay_sign_type sign_type_default, char *err,
             size_t errlen);
/* Frees everything s owns (not the pending answers: see gateway_shutdown). */
void sim_free(struct sim *s);

/* Adds a known template (program.c); an id already known keeps its
 * record. Returns 0, or -1 when the id is empty or too long. */
int sim_template_add(struct sim *s, const char *template_id);
int sim_template_known(const struct sim *s, const char *template_id);

/* Forgets faults, counters (in-flight ones and the templates'
 * activateurl_calls too), cards and members' sign-ups (templates stay). */
void sim_reset(struct sim *s);

/* ---- faults ---- */

/* Adds a rule; method/out_serial_no may be NULL, count -1 = unlimited.
 * Returns its id, or -1 when out of memory. */
long sim_fault_add(struct sim *s, enum sim_fault_mode mode, const char *method,
                   const char *out_serial_no, long count, long delay_ms);
/* Removes one rule (returns 0) or reports it unknown (-1). */
int sim_fault_remove(struct sim *s, long id);
/* Removes every rule; returns how many there were. */
size_t sim_faults_clear(struct sim *s);
/* The first rule matching a call to method (may be NULL) whose biz_content
 * names out_serial_no (may be NULL): copies its mode and delay into *mode
 * and *delay_ms, spends one of its count (dropping it when used up) and
 * returns 1; returns 0 (mode NONE, delay 0) when none matches. */
int sim_fault_take(struct sim *s, const char *method, const char *out_serial_no,
                   enum sim_fault_mode *mode, long *delay_ms);

/* ---- calls ---- */

/* The key facts of one gateway call, for counting, fault matching and the
 * log. Strings are owned by the struct; free with sim_call_info_free. */
struct sim_call_info {
    char *method;                /* NULL when absent */
    char *out_serial_no;         /* biz_content's out_serial_no (open, delete), or
                                  * without one its target_card_no (query, update);
                                  * NULL when absent */
    int counted_serial;          /* 1 when out_serial_no came from out_serial_no */
    char *target_card_no;        /* biz_content's target_card_no, or NULL */
    int in_flight;               /* 1 while counted in s->in_flight */
    unsigned long in_flight_gen; /* the generation it was counted in */
};
/* Reads biz_content decrypted when the call is encrypted (see encrypt.h),
 * so fault rules and counters see an encrypted call's out_serial_no too. */
void sim_call_info_get(const struct sim *s, const struct alipay_params *p,
                       struct sim_call_info *out);
void sim_call_info_free(struct sim_call_info *ci);

/* Counts one call that reached the gateway endpoint. */
void sim_count_call(struct sim *s, const struct sim_call_info *ci);
/* The count for one out_serial_no, or one method (0 when never seen). */
long sim_calls_for_serial(const struct sim *s, const char *out_serial_no);
long sim_calls_for_method(const struct sim *s, const char *method);

/* A card.update or card.delete call with a target_card_no counts as in
 * flight from sim_in_flight_enter (on arrival) to sim_in_flight_leave (its
 * answer sent, dropped or cut short); other calls are not counted. Both may
 * be called for any call and leave is a no-op when it was not counted. */
void sim_in_flight_enter(struct sim *s, struct sim_call_info *ci);
void sim_in_flight_leave(struct sim *s, struct sim_call_info *ci);
/* The most card.update/.delete calls for target_card_no ever in flight at
 * once since the last reset (0 when none came). */
long sim_max_in_flight(const struct sim *s, const char *target_card_no);

/* ---- answers ---- */

/* One answer node before it is put on the wire. */
struct sim_node {
    char name[128]; /* "alipay_marketing_card_open_response" or "error_response" */
    char *text;     /* the node's JSON text, malloc'd */
    int sign;       /* 1: to be signed with the simulator's key */
    int encrypt;    /* 1: to be sent encrypted (the call said encrypt_type=AES) */
    enum alipay_sign_type type;
    char code[8]; /* for the log */
    char sub_code[64];
};
void sim_node_free(struct sim_node *n);

/* Handles one gateway call: checks the public parameters and the signature,
 * then runs the method. Fills out; returns 0, or -1 only when out of
 * memory. */
int sim_handle(struct sim *s, const struct alipay_params *p, struct sim_node *out);

/* The answer a fault mode stands for, without doing any work: the signed
 * 20000/20001 nodes and the unsigned error_response. Returns 0 or -1. */
int sim_fault_node(struct sim *s, const struct alipay_params *p, enum sim_fault_mode mode,
                   struct sim_node *out);

/* Puts a node on the wire as the gateway's JSON body, shaped by mode
 * (BAD_SIGNATURE, UNSIGNED_SUCCESS, SIGN_FIRST; other modes answer
 * normally). Returns a malloc'd body, or NULL. */
char *sim_render(struct sim *s, const struct sim_node *n, enum sim_fault_mode mode);

/* ---- cards ---- */

/* The card with this number, deleted or not (NULL when none). */
const struct sim_card *sim_card_by_biz(const struct sim *s, const char *biz_card_no);
/* {"biz_card_no","out_serial_no","user_id","qr_code","bar_code",
 *  "card_template_id","card_info","status","delete_reason","biz_serial_no",
 *  "updates","points_messages","max_in_flight"}; a new object the caller
 * puts. */
json_object *sim_card_json(const struct sim *s, const struct sim_card *c);

#endif
