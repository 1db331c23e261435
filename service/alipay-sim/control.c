/* control: the /_sim control interface. See control.h. */
#include "control.h"

#include "alipay_key.h"
#include "cert.h"
#include "jsonx.h"
#include "member.h"
#include "program.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

/* Largest control body accepted (a fault rule, a template or a member's
 * form is tiny). */
#define CONTROL_MAX_BODY 65536

/* Sends o (which it puts) with status. */
static void send_json(struct evhttp_request *req, int status, json_object *o)
{
    struct evbuffer *buf = evbuffer_new();
    const char *text =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (buf && text) {
        evbuffer_add(buf, text, strlen(text));
        evbuffer_add(buf, "\n", 1);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json; charset=utf-8");
    evhttp_send_reply(req, status, NULL, buf);
    if (buf)
        evbuffer_free(buf);
    json_object_put(o);
}

static void send_error(struct evhttp_request *req, int status, const char *message)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(message));
    send_json(req, status, o);
}

static void send_status_ok(struct evhttp_request *req, int status)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string("ok"));
    send_json(req, status, o);
}

/* The request body as a JSON object, or NULL after answering 400. */
static json_object *body_object(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > CONTROL_MAX_BODY) {
        send_error(req, 413, "body too large");
        return NULL;
    }
    char *text = malloc(len + 1);
    if (!text) {
        send_error(req, 500, "out of memory");
        return NULL;
    }
    evbuffer_copyout(in, text, len);
    text[len] = '\0';
    json_object *o = jsonx_parse(text, len);
    free(text);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        send_error(req, 400, "the body must be a JSON object");
        return NULL;
    }
    return o;
}

/* Optional string member: 0 with *out (NULL when absent or null), -1 when
 * it is not a string. */
static int opt_string(json_object *o, const char *key, const char **out)
{
    json_object *v = NULL;
    *out = NULL;
    if (!json_object_object_get_ex(o, key, &v) || v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return -1;
    *out = json_object_get_string(v);
    return 0;
}

/* Optional integer member >= min: 0 with *out (dflt when absent or null),
 * -1 otherwise. */
static int opt_long(json_object *o, const char *key, long min, long dflt, long *out)
{
    json_object *v = NULL;
    *out = dflt;
    if (!json_object_object_get_ex(o, key, &v) || v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_int))
        return -1;
    errno = 0;
    int64_t n = json_object_get_int64(v);
    if (errno != 0 || n < min || n > LONG_MAX)
        return -1;
    *out = (long)n;
    return 0;
}

/* Is every key of o in keys (NULL-terminated)? */
static int only_known(json_object *o, const char *const keys[])
{
    json_object_object_foreach(o, key, val)
    {
        (void)val;
        size_t i = 0;
        while (keys[i] && strcmp(keys[i], key) != 0)
            i++;
        if (!keys[i])
            return 0;
    }
    return 1;
}

static json_object *fault_json(const struct sim_fault *f)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_int64(f->id));
    json_object_object_add(o, "mode", json_object_new_string(sim_fault_mode_name(f->mode)));
    json_object_object_add(o, "method", f->method ? json_object_new_string(f->method) : NULL);
    json_object_object_add(o, "out_serial_no",
                           f->out_serial_no ? json_object_new_string(f->out_serial_no) : NULL);
    json_object_object_add(o, "count", f->count < 0 ? NULL : json_object_new_int64(f->count));
    json_object_object_add(o, "delay_ms", json_object_new_int64(f->delay_ms));
    return o;
}

/* A fault rule as POST /_sim/faults gives it, borrowed from the body. */
struct fault_req {
    enum sim_fault_mode mode;
    const char *method, *out_serial_no;
    long count, delay_ms;
};

/* Reads the rule from o; returns NULL, or what is wrong with it. */
static const char *fault_req_read(json_object *o, struct fault_req *f)
{
    static const char *const keys[] = {"mode",  "method",   "out_serial_no",
                                       "count", "delay_ms", NULL};
    const char *mode_name;
    if (!only_known(o, keys))
        return "unknown field (known: mode, method, out_serial_no, count, delay_ms)";
    if (opt_string(o, "mode", &mode_name) < 0 || !mode_name ||
        sim_fault_mode_parse(mode_name, &f->mode) < 0)
        return "mode must be one of delay, code_20000, code_20001, system_error, bad_signature, "
               "unsigned_success, error_response, http_500, drop, sign_first";
    if (opt_string(o, "method", &f->method) < 0)
        return "method must be a string";
    if (opt_string(o, "out_serial_no", &f->out_serial_no) < 0)
        return "out_serial_no must be a string";
    if (opt_long(o, "count", 1, -1, &f->count) < 0)
        return "count must be an integer >= 1 (leave it out for no limit)";
    if (opt_long(o, "delay_ms", 0, 0, &f->delay_ms) < 0)
        return "delay_ms must be an integer >= 0";
    return NULL;
}

/* POST /_sim/faults {"mode","method","out_serial_no","count","delay_ms"} */
static void faults_add(struct sim *s, struct evhttp_request *req)
{
    json_object *o = body_object(req);
    if (!o)
        return;
    struct fault_req f;
    const char *problem = fault_req_read(o, &f);
    if (problem) {
        send_error(req, 400, problem);
        json_object_put(o);
        return;
    }
    long id = sim_fault_add(s, f.mode, f.method, f.out_serial_no, f.count, f.delay_ms);
    json_object_put(o);
    if (id < 0) {
        send_error(req, 500, "out of memory");
        return;
    }
    json_object *r = json_object_new_object();
    json_object_object_add(r, "id", json_object_new_int64(id));
    send_json(req, 201, r);
}

static void faults_list(struct sim *s, struct evhttp_request *req)
{
    json_object *list = json_object_new_array();
    for (const struct sim_fault *f = s->faults; f; f = f->next)
        json_object_array_add(list, fault_json(f));
    json_object *o = json_object_new_object();
    json_object_object_add(o, "faults", list);
    send_json(req, 200, o);
}

static void route_faults(struct sim *s, struct evhttp_request *req, const char *rest)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (*rest == '\0') {
        if (cmd == EVHTTP_REQ_POST) {
            faults_add(s, req);
        } else if (cmd == EVHTTP_REQ_GET) {
            faults_list(s, req);
        } else if (cmd == EVHTTP_REQ_DELETE) {
            json_object *o = json_object_new_object();
            json_object_object_add(o, "cleared",
                                   json_object_new_int64((int64_t)sim_faults_clear(s)));
            send_json(req, 200, o);
        } else {
            send_error(req, 405, "use GET, POST or DELETE");
        }
        return;
    }
    /* /_sim/faults/{id} */
    char *end;
    long id = strtol(rest + 1, &end, 10);
    if (*rest != '/' || end == rest + 1 || *end != '\0')
        send_error(req, 404, "no such route");
    else if (cmd != EVHTTP_REQ_DELETE)
        send_error(req, 405, "use DELETE");
    else if (sim_fault_remove(s, id) < 0)
        send_error(req, 404, "no such fault");
    else
        send_status_ok(req, 200);
}

/* {"<key>":value,"count":n} for GET /_sim/calls?<key>=value, or NULL when
 * the query names neither an out_serial_no nor a method. */
static json_object *calls_for(struct sim *s, struct evkeyvalq *kv)
{
    const char *serial = evhttp_find_header(kv, "out_serial_no");
    const char *method = evhttp_find_header(kv, "method");
    if (!serial && !method)
        return NULL;
    json_object *o = json_object_new_object();
    const char *key = serial ? "out_serial_no" : "method";
    json_object_object_add(o, key, json_object_new_string(serial ? serial : method));
    json_object_object_add(o, "count",
                           json_object_new_int64(serial ? sim_calls_for_serial(s, serial)
                                                        : sim_calls_for_method(s, method)));
    return o;
}

/* GET /_sim/calls[?out_serial_no=X | ?method=M] */
static void route_calls(struct sim *s, struct evhttp_request *req)
{
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        send_error(req, 405, "use GET");
        return;
    }
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq kv;
    if (query && *query) {
        if (evhttp_parse_query_str(query, &kv) < 0) {
            send_error(req, 400, "malformed query");
            return;
        }
        json_object *o = calls_for(s, &kv);
        evhttp_clear_headers(&kv);
        if (o) {
            send_json(req, 200, o);
            return;
        }
    }
    json_object *o = json_object_new_object();
    json_object_object_add(o, "total", json_object_new_int64(s->calls_total));
    json_object_object_add(o, "methods", json_object_get(s->calls_methods));
    json_object_object_add(o, "out_serial_no", json_object_get(s->calls_serials));
    send_json(req, 200, o);
}

/* GET /_sim/cards and /_sim/cards/{biz_card_no} */
static void route_cards(struct sim *s, struct evhttp_request *req, const char *rest)
{
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        send_error(req, 405, "use GET");
        return;
    }
    if (*rest == '\0') {
        json_object *list = json_object_new_array();
        for (const struct sim_card *c = s->cards; c; c = c->next)
            json_object_array_add(list, sim_card_json(s, c));
        json_object *o = json_object_new_object();
        json_object_object_add(o, "cards", list);
        send_json(req, 200, o);
        return;
    }
    const struct sim_card *c = *rest == '/' ? sim_card_by_biz(s, rest + 1) : NULL;
    if (!c)
        send_error(req, 404, "no such card");
    else
        send_json(req, 200, sim_card_json(s, c));
}

/* POST /_sim/templates {"template_id"}: one more known template. */
static void template_add(struct sim *s, struct evhttp_request *req)
{
    json_object *o = body_object(req);
    if (!o)
        return;
    const char *id;
    if (opt_string(o, "template_id", &id) < 0 || !id || sim_template_add(s, id) < 0) {
        send_error(req, 400, "template_id must be a string of 1-32 characters");
    } else {
        json_object *r = json_object_new_object();
        json_object_object_add(r, "template_id", json_object_new_string(id));
        send_json(req, 201, r);
    }
    json_object_put(o);
}

/* GET /_sim/templates/{template_id}: what the program set up for it. */
static void template_get(struct sim *s, struct evhttp_request *req, const char *rest)
{
    json_object *rec = *rest == '/' ? program_template_json(s, rest + 1) : NULL;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET)
        send_error(req, 405, "use GET");
    else if (!rec)
        send_error(req, 404, "no such template");
    else
        send_json(req, 200, json_object_get(rec));
    json_object_put(rec);
}

/* POST /_sim/templates {"template_id"}, GET /_sim/templates[/{id}] */
static void route_templates(struct sim *s, struct evhttp_request *req, const char *rest)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (*rest != '\0') {
        template_get(s, req, rest);
    } else if (cmd == EVHTTP_REQ_GET) {
        json_object *list = json_object_new_array();
        json_object_object_foreach(s->templates, id, val)
        {
            (void)val;
            json_object_array_add(list, json_object_new_string(id));
        }
        json_object *o = json_object_new_object();
        json_object_object_add(o, "templates", list);
        send_json(req, 200, o);
    } else if (cmd == EVHTTP_REQ_POST) {
        template_add(s, req);
    } else {
        send_error(req, 405, "use GET or POST");
    }
}

/* A member's sign-up as POST /_sim/members gives it, borrowed from the
 * body; returns NULL, or what is wrong with it. */
static const char *member_req_read(json_object *o, struct member_signup *m)
{
    static const char *const keys[] = {"template_id", "user_id",          "form",
                                       "declined",    "auth_code_ttl_ms", NULL};
    json_object *v;
    memset(m, 0, sizeof(*m));
    if (!only_known(o, keys))
        return "unknown field (known: template_id, user_id, form, declined, auth_code_ttl_ms)";
    if (opt_string(o, "template_id", &m->template_id) < 0 || !m->template_id)
        return "template_id is required";
    if (opt_string(o, "user_id", &m->user_id) < 0)
        return "user_id must be a string";
    if (json_object_object_get_ex(o, "form", &v) && v) {
        if (!json_object_is_type(v, json_type_object))
            return "form must be an object {\"OPEN_FORM_FIELD_…\": \"value\", …}";
        m->form = v;
    }
    if (json_object_object_get_ex(o, "declined", &v) && v) {
        if (!json_object_is_type(v, json_type_boolean))
            return "declined must be true or false";
        m->declined = json_object_get_boolean(v);
    }
    if (opt_long(o, "auth_code_ttl_ms", 0, -1, &m->auth_code_ttl_ms) < 0)
        return "auth_code_ttl_ms must be an integer >= 0";
    return NULL;
}

/* POST /_sim/members: plays a member who submits a template's form. */
static void route_members(struct sim *s, struct evhttp_request *req)
{
    struct member_signup m;
    json_object *answer = NULL;
    char problem[256];
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        send_error(req, 405, "use POST");
        return;
    }
    json_object *o = body_object(req);
    if (!o)
        return;
    const char *bad = member_req_read(o, &m);
    int status = bad ? 400 : member_signup(s, &m, &answer, problem, sizeof(problem));
    if (bad)
        send_error(req, status, bad);
    else if (status != 201)
        send_error(req, status, problem);
    else
        send_json(req, status, answer);
    json_object_put(o);
}

/* Is path equal to name, or name followed by '/'? Sets *rest past name. */
static int route_is(const char *path, const char *name, const char **rest)
{
    size_t n = strlen(name);
    if (strncmp(path, name, n) != 0 || (path[n] != '\0' && path[n] != '/'))
        return 0;
    *rest = path + n;
    return 1;
}

/* PUT /_sim/signing-key {"file": "<private key>"}: Alipay rotates the key
 * it signs answers with (what a client's SIGHUP reload is for). */
static void route_signing_key(struct sim *s, struct evhttp_request *req)
{
    if (evhttp_request_get_command(req) != EVHTTP_REQ_PUT) {
        send_error(req, 405, "use PUT");
        return;
    }
    json_object *o = body_object(req);
    if (!o)
        return;
    const char *file;
    char err[256];
    EVP_PKEY *key = NULL;
    if (opt_string(o, "file", &file) < 0 || !file)
        send_error(req, 400, "file must name a private key file");
    else if (!(key = alipay_key_load_private(file, err, sizeof(err))))
        send_error(req, 400, err);
    else {
        EVP_PKEY_free(s->alipay_private);
        s->alipay_private = key;
        send_status_ok(req, 200);
    }
    json_object_put(o);
}

/* The certificate and key of PUT /_sim/alipay-cert's body: the answers'
 * certificate then is the file's. Answers 200 with what it is and whether
 * it chains, or 400. */
static void alipay_cert_put(struct sim *s, struct evhttp_request *req, json_object *o)
{
    static const char *const keys[] = {"cert", "key", NULL};
    const char *cert, *key_file;
    char err[256], chain_err[256];
    EVP_PKEY *key = NULL;
    if (!only_known(o, keys) || opt_string(o, "cert", &cert) < 0 || !cert ||
        opt_string(o, "key", &key_file) < 0 || !key_file) {
        send_error(req, 400,
                   "the body is {\"cert\": \"<certificate file>\", \"key\": \"<its private key "
                   "file>\"}");
        return;
    }
    if (!(key = alipay_key_load_private(key_file, err, sizeof(err))) ||
        cert_alipay_use(s, cert, key, chain_err, sizeof(chain_err), err, sizeof(err)) < 0) {
        EVP_PKEY_free(key);
        send_error(req, 400, err);
        return;
    }
    json_object *r = cert_json(s);
    json_object_object_add(r, "chains", json_object_new_boolean(!chain_err[0]));
    json_object_object_add(r, "chain_error",
                           chain_err[0] ? json_object_new_string(chain_err) : NULL);
    send_json(req, 200, r);
}

/* GET and PUT /_sim/alipay-cert: which of Alipay's certificates signs the
 * answers, and Alipay rotating it (certificate mode only). */
static void route_alipay_cert(struct sim *s, struct evhttp_request *req)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_PUT) {
        send_error(req, 405, "use GET or PUT");
    } else if (cmd == EVHTTP_REQ_GET) {
        send_json(req, 200, cert_json(s));
    } else if (!cert_alipay_sn(s)) {
        send_error(req, 409,
                   "not in certificate mode (start with --app-cert, --root-cert and "
                   "--alipay-cert)");
    } else {
        json_object *o = body_object(req);
        if (o)
            alipay_cert_put(s, req, o);
        json_object_put(o);
    }
}

void control_handle(struct sim *s, struct evhttp_request *req, const char *path)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *rest;
    fprintf(stderr, "alipay-sim: control %s\n", path);
    if (strcmp(path, "/_sim/health") == 0) {
        send_status_ok(req, 200);
    } else if (strcmp(path, "/_sim/reset") == 0) {
        if (cmd != EVHTTP_REQ_POST) {
            send_error(req, 405, "use POST");
            return;
        }
        sim_reset(s);
        send_status_ok(req, 200);
    } else if (route_is(path, "/_sim/faults", &rest)) {
        route_faults(s, req, rest);
    } else if (strcmp(path, "/_sim/calls") == 0) {
        route_calls(s, req);
    } else if (route_is(path, "/_sim/cards", &rest)) {
        route_cards(s, req, rest);
    } else if (route_is(path, "/_sim/templates", &rest)) {
        route_templates(s, req, rest);
    } else if (strcmp(path, "/_sim/members") == 0) {
        route_members(s, req);
    } else if (strcmp(path, "/_sim/signing-key") == 0) {
        route_signing_key(s, req);
    } else if (strcmp(path, "/_sim/alipay-cert") == 0) {
        route_alipay_cert(s, req);
    } else {
        send_error(req, 404, "no such route");
    }
}
