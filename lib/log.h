/* log: one structured line per event, JSON or text, on a shared FILE.
 *
 * A struct log is filled once at start and then shared by every worker
 * thread; only its level changes later (SIGHUP), atomically. Each line goes out
 * with one fwrite under the FILE's stdio lock, so lines of different threads
 * never interleave.
 *
 * Member data (names, phones, birthdays) is never logged. Phone numbers and
 * tokens that must appear are passed through log_mask_phone/log_mask_token. */
#ifndef CARDGATE_LOG_H
#define CARDGATE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

enum log_level {
    LOG_DEBUG,
    LOG_INFO,
    LOG_WARN,
    LOG_ERROR,
};

struct log {
    _Atomic int level; /* an enum log_level: lines below it are dropped */
    int json;          /* 1: JSON lines, 0: text lines */
    FILE *out;         /* borrowed; NULL means stderr */
};

/* Parses "debug", "info", "warn"/"warning", "error" (case-insensitive).
 * Returns 0 and sets *out, or -1 leaving *out alone. */
int log_level_parse(const char *s, enum log_level *out);
/* "debug", "info", "warn" or "error"; a static string. */
const char *log_level_name(enum log_level lvl);

/* 1 when a line at lvl would be written: lets a caller skip formatting
 * numbers into strings for a line that would be dropped anyway. */
int log_enabled(const struct log *lg, enum log_level lvl);

/* Writes one line when lvl >= lg->level:
 *   JSON: {"ts":"2026-11-21T22:31:06.123Z","level":"info","msg":"...","k":"v",...}
 *   text: 2026-11-21T22:31:06.123Z info msg k=v k2="quoted value" ...
 * The variadic part is key, value, key, value, ..., NULL: all const char *.
 * A NULL value skips its pair. Values are strings (callers format numbers);
 * bytes that are not valid UTF-8 are written as U+FFFD so every JSON line
 * parses. A key equal to "ts", "level" or "msg" is written with a leading
 * "_" so it cannot replace those fields. Nothing is retained after the call.
 * Never fails visibly: when out of memory the line is lost. */
void log_write(const struct log *lg, enum log_level lvl, const char *msg, ...)
    __attribute__((sentinel));
/* The same with a va_list, for modules that wrap log_write. */
void log_vwrite(const struct log *lg, enum log_level lvl, const char *msg, va_list ap);

/* Masks a phone number for a log line, writing a NUL-terminated string into
 * out (truncated to outlen): 11 or more characters keep the first 3 and the
 * last 4 ("13012345678" -> "130****5678"); 4 to 10 keep only the last 2
 * ("****78"); shorter ones become "****". NULL becomes "-". */
void log_mask_phone(const char *s, char *out, size_t outlen);
/* Masks a token (auth_token, bearer key, ...): the first 4 characters, "…"
 * and the length, e.g. "comp…(40)". Tokens shorter than 16 characters show
 * no prefix at all ("…(8)"), as 4 characters would be too much of them.
 * NULL becomes "-". */
void log_mask_token(const char *s, char *out, size_t outlen);

#endif
