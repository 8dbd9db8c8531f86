#include "orchestrator/sse.h"

#include <string.h>

static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};

void meao_sse_init(struct meao_sse *s, size_t max_event)
{
    memset(s, 0, sizeof *s);
    s->max_event = max_event ? max_event : MEAO_SSE_DEFAULT_MAX_EVENT;
    s->retry_ms = -1;
}

void meao_sse_free(struct meao_sse *s)
{
    if (s == NULL)
        return;
    meao_buf_free(&s->line);
    meao_buf_free(&s->data);
    meao_buf_free(&s->type);
    meao_buf_free(&s->id);
}

bool meao_sse_pending(const struct meao_sse *s)
{
    return s->line.len > 0 || s->data.len > 0 || s->type.len > 0;
}

/* Everything held for the current event, plus n more bytes, must fit. */
static bool fits(const struct meao_sse *s, size_t n)
{
    size_t held = s->line.len + s->data.len + s->type.len;
    return n <= s->max_event && held <= s->max_event - n;
}

static bool fail(struct meao_sse *s, enum meao_sse_status st)
{
    s->failed = st;
    return false;
}

static bool append(struct meao_sse *s, struct meao_buf *b, const char *p, size_t n)
{
    if (!fits(s, n))
        return fail(s, MEAO_SSE_TOO_LARGE);
    if (!meao_buf_append(b, p, n))
        return fail(s, MEAO_SSE_NOMEM);
    return true;
}

static bool field_is(const char *f, size_t flen, const char *name)
{
    return flen == strlen(name) && memcmp(f, name, flen) == 0;
}

static enum meao_sse_status dispatch(struct meao_sse *s, meao_sse_cb cb, void *ctx)
{
    struct meao_sse_event ev;
    bool go_on;

    if (s->data.len == 0) {
        /* no data field: the spec drops the event (and forgets its type) */
        meao_buf_reset(&s->type);
        return MEAO_SSE_OK;
    }
    s->data.len--; /* the LF after the last data line */
    s->data.p[s->data.len] = '\0';
    ev.type = s->type.len ? s->type.p : "message";
    ev.type_len = s->type.len ? s->type.len : strlen("message");
    ev.data = s->data.p;
    ev.data_len = s->data.len;
    ev.id = s->id.p ? s->id.p : "";
    ev.id_len = s->id.len;
    go_on = cb(ctx, &ev);
    meao_buf_reset(&s->data);
    meao_buf_reset(&s->type);
    return go_on ? MEAO_SSE_OK : MEAO_SSE_STOPPED;
}

static void set_retry(struct meao_sse *s, const char *v, size_t n)
{
    int64_t ms = 0;
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return;
        if (ms < INT64_MAX / 10 - 10)
            ms = ms * 10 + (v[i] - '0');
    }
    s->retry_ms = ms;
}

/* One complete line sits in s->line: act on it, then forget it. */
static enum meao_sse_status end_line(struct meao_sse *s, meao_sse_cb cb, void *ctx)
{
    const char *line = s->line.p, *colon, *value;
    size_t n = s->line.len, flen, vlen;
    enum meao_sse_status st = MEAO_SSE_OK;

    if (n == 0)
        return dispatch(s, cb, ctx);
    if (line[0] == ':')
        goto out; /* a comment (keep-alive) */
    colon = memchr(line, ':', n);
    flen = colon ? (size_t)(colon - line) : n;
    value = colon ? colon + 1 : line + n;
    vlen = n - (size_t)(value - line);
    if (vlen > 0 && value[0] == ' ') {
        value++;
        vlen--;
    }
    /* the line's own bytes stop counting against the bound once it is
     * consumed; the copies below are checked as they are made */
    s->line.len = 0;
    if (field_is(line, flen, "data")) {
        if (!append(s, &s->data, value, vlen) || !append(s, &s->data, "\n", 1))
            st = s->failed;
    } else if (field_is(line, flen, "event")) {
        meao_buf_reset(&s->type);
        if (!append(s, &s->type, value, vlen))
            st = s->failed;
    } else if (field_is(line, flen, "id")) {
        if (memchr(value, '\0', vlen) == NULL) {
            meao_buf_reset(&s->id);
            if (!meao_buf_append(&s->id, value, vlen)) {
                fail(s, MEAO_SSE_NOMEM);
                st = s->failed;
            }
        }
    } else if (field_is(line, flen, "retry")) {
        set_retry(s, value, vlen);
    }
out:
    meao_buf_reset(&s->line);
    return st;
}

enum meao_sse_status meao_sse_feed(struct meao_sse *s, const char *buf, size_t len, meao_sse_cb cb,
                                   void *ctx)
{
    const char *p = buf, *end = buf + len;

    if (s->failed != MEAO_SSE_OK)
        return s->failed;
    /* a UTF-8 byte order mark may open the stream, possibly split */
    while (!s->started && p < end) {
        if ((unsigned char)*p == bom[s->bom_seen]) {
            p++;
            if (++s->bom_seen == sizeof bom)
                s->started = true;
            continue;
        }
        s->started = true;
        if (s->bom_seen > 0 && !append(s, &s->line, (const char *)bom, s->bom_seen))
            return s->failed;
    }
    while (p < end) {
        const char *q = p;
        enum meao_sse_status st;

        if (s->cr_pending) {
            s->cr_pending = false;
            if (*p == '\n') {
                p++;
                continue;
            }
        }
        while (q < end && *q != '\n' && *q != '\r')
            q++;
        if (q > p && !append(s, &s->line, p, (size_t)(q - p)))
            return s->failed;
        if (q == end)
            break;
        s->cr_pending = *q == '\r';
        p = q + 1;
        st = end_line(s, cb, ctx);
        if (st != MEAO_SSE_OK)
            return st;
    }
    return MEAO_SSE_OK;
}
