/* recorder: see recorder.h. */
#include "recorder.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"

#define RETRY_FIRST_MS 200
#define RETRY_MAX_MS RECORDER_RETRY_MAX_MS

struct record {
    struct worker *w;
    struct record *prev, *next;
    struct event *timer;
    long delay_ms;
    int attempts;
    char *request_id;
    /* owned copies of every string of c */
    char *s[13];
    struct store_completion c;
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void record_free(struct record *rec)
{
    struct worker *w = rec->w;
    if (rec->timer) {
        atomic_fetch_sub(&w->srv->metrics.outcomes_unrecorded, 1);
        if (rec->prev)
            rec->prev->next = rec->next;
        else
            w->records = rec->next;
        if (rec->next)
            rec->next->prev = rec->prev;
        event_free(rec->timer);
    }
    for (size_t i = 0; i < sizeof(rec->s) / sizeof(*rec->s); i++)
        free(rec->s[i]);
    free(rec->request_id);
    free(rec);
}

static void record_log(struct record *rec, enum log_level lvl, const char *msg, const char *error)
{
    log_write(&rec->w->srv->log, lvl, msg, "request_id", rec->request_id, "out_serial_no",
              rec->c.serial, "state", rec->c.state, "biz_card_no", rec->c.biz_card_no, "error",
              error, NULL);
}

static void record_try(evutil_socket_t fd, short what, void *arg);

static void record_written(int ok, int held, const char *error, void *arg)
{
    struct record *rec = arg;
    if (ok) {
        record_log(rec, LOG_WARN, "outcome recorded after retries", NULL);
        record_free(rec);
        return;
    }
    if (rec->attempts == 1 || rec->attempts % 20 == 0)
        record_log(rec, LOG_ERROR, "outcome not recorded yet; retrying", error);
    struct timeval tv = {rec->delay_ms / 1000, (rec->delay_ms % 1000) * 1000};
    rec->delay_ms = rec->delay_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : rec->delay_ms * 2;
    event_add(rec->timer, &tv);
}

static void record_try(evutil_socket_t fd, short what, void *arg)
{
    struct record *rec = arg;
    rec->attempts++;
    if (store_complete(rec->w->pg, &rec->c, record_written, rec) < 0)
        record_written(0, 0, "database queue full", rec);
}

struct record *recorder_keep(struct worker *w, const struct store_completion *c,
                             const char *request_id)
{
    struct record *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return NULL;
    rec->w = w;
    rec->delay_ms = RETRY_FIRST_MS;
    rec->request_id = dup_or_null(request_id);
    rec->c = *c;
    const char **fields[] = {&rec->c.app_id,  &rec->c.serial,    &rec->c.token,       &rec->c.state,
                             &rec->c.outcome, &rec->c.code,      &rec->c.sub_code,    &rec->c.body,
                             &rec->c.method,  &rec->c.operation, &rec->c.biz_card_no, &rec->c.card};
    _Static_assert(sizeof(fields) / sizeof(*fields) <= sizeof(rec->s) / sizeof(*rec->s),
                   "every string of the completion has its owned copy");
    for (size_t i = 0; i < sizeof(fields) / sizeof(*fields); i++) {
        rec->s[i] = dup_or_null(*fields[i]);
        *fields[i] = rec->s[i];
    }
    return rec;
}

void recorder_drop(struct record *rec)
{
    if (rec)
        record_free(rec);
}

void recorder_lost(struct record *rec)
{
    if (!rec)
        return;
    record_log(rec, LOG_ERROR, "outcome never recorded: reconcile this out_serial_no by hand",
               NULL);
    record_free(rec);
}

void recorder_start(struct record *rec)
{
    if (!rec)
        return;
    struct worker *w = rec->w;
    rec->timer = event_new(w->base, -1, 0, record_try, rec);
    if (!rec->timer) { /* out of memory: not even a timer to retry with */
        recorder_lost(rec);
        return;
    }
    rec->next = w->records;
    if (w->records)
        w->records->prev = rec;
    w->records = rec;
    atomic_fetch_add(&w->srv->metrics.outcomes_unrecorded, 1);
    record_log(rec, LOG_ERROR, "outcome not recorded; retrying", NULL);
    struct timeval tv = {0, RETRY_FIRST_MS * 1000};
    event_add(rec->timer, &tv);
}

void recorder_abandon(struct worker *w)
{
    while (w->records)
        recorder_lost(w->records);
}
