#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"

static const char *prog = "meao";
static _Thread_local char context_rid[65];
/* Read by every thread, changed at run time (PATCH /api/v1/config): atomic. */
static int min_level = MEAO_LOG_INFO;
#define MIN_LEVEL() __atomic_load_n(&min_level, __ATOMIC_RELAXED)
static const char *level_names[] = {"debug", "info", "warn", "error"};

void meao_log_init(const char *program, enum meao_log_level level)
{
    prog = program;
    __atomic_store_n(&min_level, (int)level, __ATOMIC_RELAXED);
}

void meao_log_set_context(const char *request_id)
{
    snprintf(context_rid, sizeof context_rid, "%s", request_id ? request_id : "");
}

const char *meao_log_context(void)
{
    return context_rid[0] ? context_rid : NULL;
}

void meao_log_set_level(enum meao_log_level level)
{
    __atomic_store_n(&min_level, (int)level, __ATOMIC_RELAXED);
}

enum meao_log_level meao_log_get_level(void)
{
    return (enum meao_log_level)MIN_LEVEL();
}

bool meao_log_enabled(enum meao_log_level level)
{
    return (int)level >= MIN_LEVEL();
}

bool meao_log_parse_level(const char *s, enum meao_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum meao_log_level)i;
            return true;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = MEAO_LOG_WARN;
        return true;
    }
    return false;
}

const char *meao_log_level_name(enum meao_log_level level)
{
    return level_names[level <= MEAO_LOG_ERROR ? level : MEAO_LOG_ERROR];
}

int meao_log_reopen(const char *path)
{
    int fd;
    if (path == NULL || path[0] == '\0')
        return 0;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    if (fd != STDERR_FILENO) {
        if (dup2(fd, STDERR_FILENO) < 0) {
            close(fd);
            return -1;
        }
        close(fd);
    }
    return 0;
}

static bool is_tok_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.' || c == '~' || c == '+' || c == '/' || c == '=';
}

void meao_log_redact(char *s)
{
    static const char *marks[] = {"meao_at_", "meao_rt_", "meao_dc_", "Bearer ", "bearer "};
    for (size_t m = 0; m < sizeof marks / sizeof marks[0]; m++) {
        char *p = s;
        size_t ml = strlen(marks[m]);
        while ((p = strstr(p, marks[m])) != NULL) {
            char *q = p + ml;
            char *end = q;
            while (*end && is_tok_char(*end))
                end++;
            if (end == q) {
                p = q;
                continue;
            }
            static const char red[] = "[redacted]";
            size_t rl = sizeof red - 1;
            size_t tl = (size_t)(end - q);
            if (tl >= rl) {
                memcpy(q, red, rl);
                memmove(q + rl, end, strlen(end) + 1);
            } else {
                memset(q, '*', tl);
            }
            p = q;
        }
    }
}

static void emit(enum meao_log_level level, const char *rid, const char *event, json_t *fields,
                 const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
static void emit(enum meao_log_level level, const char *rid, const char *event, json_t *fields,
                 const char *fmt, va_list ap)
{
    char msg[1024];
    char ts[32];
    struct timeval tv;
    json_t *o;
    char *line;

    vsnprintf(msg, sizeof msg, fmt, ap);
    gettimeofday(&tv, NULL);
    meao_iso8601((int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000, ts, sizeof ts);

    o = json_object();
    if (o == NULL)
        return;
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(meao_log_level_name(level)));
    json_object_set_new(o, "prog", json_string(prog));
    json_object_set_new(o, "pid", json_integer(getpid()));
    if (rid == NULL || rid[0] == '\0')
        rid = meao_log_context();
    if (rid && rid[0])
        json_object_set_new(o, "requestId", json_string(rid));
    if (event)
        json_object_set_new(o, "event", json_string(event));
    if (msg[0])
        json_object_set_new(o, "msg", json_stringn_nocheck(msg, strlen(msg)));
    if (fields)
        json_object_update_missing(o, fields);
    line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    if (line == NULL)
        return;
    meao_log_redact(line);
    {
        struct meao_buf b = {0};
        if (meao_buf_puts(&b, line) && meao_buf_append(&b, "\n", 1)) {
            /* one write() per line so lines from workers never interleave */
            ssize_t w = write(STDERR_FILENO, b.p, b.len);
            (void)w;
        }
        meao_buf_free(&b);
    }
    free(line);
}

void meao_log(enum meao_log_level level, const char *rid, const char *event, const char *fmt, ...)
{
    va_list ap;
    if ((int)level < MIN_LEVEL())
        return;
    va_start(ap, fmt);
    emit(level, rid, event, NULL, fmt, ap);
    va_end(ap);
}

void meao_log_fields(enum meao_log_level level, const char *rid, const char *event, json_t *fields,
                     const char *fmt, ...)
{
    va_list ap;
    if ((int)level < MIN_LEVEL())
        return;
    va_start(ap, fmt);
    emit(level, rid, event, fields, fmt, ap);
    va_end(ap);
}
