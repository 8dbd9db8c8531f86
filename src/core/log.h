/* Structured logs: one JSON object per line on stderr (or the configured file,
 * reopened on SIGHUP). Every line carries the request id when there is one.
 * Callers never pass secrets; as a second line of defence anything shaped
 * like a meao token is redacted before the line is written. */
#ifndef MEAO_CORE_LOG_H
#define MEAO_CORE_LOG_H

#include <jansson.h>
#include <stdbool.h>

enum meao_log_level { MEAO_LOG_DEBUG = 0, MEAO_LOG_INFO, MEAO_LOG_WARN, MEAO_LOG_ERROR };

/* Name used in every line ("meao-fcgi", "meaoctl", ...); borrowed, keep it static. */
void meao_log_init(const char *program, enum meao_log_level level);
void meao_log_set_level(enum meao_log_level level);
enum meao_log_level meao_log_get_level(void);
bool meao_log_enabled(enum meao_log_level level);
/* Parse "debug"/"info"/"warn"/"error"; false when unknown. */
bool meao_log_parse_level(const char *s, enum meao_log_level *out);
const char *meao_log_level_name(enum meao_log_level level);

/* Point stderr at path (append, 0640), or leave it alone when path is NULL or
 * empty. Called at start-up and again on SIGHUP (log rotation). 0 or -1. */
int meao_log_reopen(const char *path);

/* The request id of the work this thread is doing now (copied; NULL clears).
 * Log lines and audit rows written without an explicit id use it, so every
 * line logged while serving a request carries that request's id. */
void meao_log_set_context(const char *request_id);
const char *meao_log_context(void);

/* Log a printf-formatted message. rid may be NULL; event is a short
 * machine-friendly name (often __func__). */
void meao_log(enum meao_log_level level, const char *rid, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Log with extra structured fields (borrowed; may be NULL). */
void meao_log_fields(enum meao_log_level level, const char *rid, const char *event, json_t *fields,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Replace every substring shaped like a meao token (meao_at_..., meao_rt_...)
 * or a bearer credential in s with "[redacted]", in place. Exposed for tests. */
void meao_log_redact(char *s);

#endif
