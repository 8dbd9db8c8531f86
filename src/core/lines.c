#include "core/lines.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK   65536
#define SHRINK_ABOVE (64 * 1024)
#define MIN_BUF      4096 /* first allocation */
#define MIN_READ     1024 /* grow when less room than this is left */

void meao_lines_init(struct meao_lines *lr, size_t max_line)
{
    memset(lr, 0, sizeof *lr);
    lr->max = max_line;
}

void meao_lines_free(struct meao_lines *lr)
{
    if (lr == NULL)
        return;
    free(lr->buf);
    lr->buf = NULL;
    lr->start = lr->len = lr->cap = 0;
}

/* Make room for n more bytes at the end, compacting consumed bytes first. */
static bool room(struct meao_lines *lr, size_t n)
{
    size_t need, cap;
    char *p;
    if (lr->start > 0) {
        memmove(lr->buf, lr->buf + lr->start, lr->len - lr->start);
        lr->len -= lr->start;
        lr->start = 0;
    }
    need = lr->len + n;
    if (need <= lr->cap)
        return true;
    cap = lr->cap ? lr->cap : MIN_BUF;
    while (cap < need)
        cap *= 2;
    p = realloc(lr->buf, cap);
    if (p == NULL)
        return false;
    lr->buf = p;
    lr->cap = cap;
    return true;
}

bool meao_lines_feed(struct meao_lines *lr, const char *data, size_t n)
{
    if (!room(lr, n))
        return false;
    memcpy(lr->buf + lr->len, data, n);
    lr->len += n;
    return true;
}

ssize_t meao_lines_fill(struct meao_lines *lr, int fd)
{
    ssize_t n;
    size_t want;
    /* start small and double only when a line does not fit: a reader that
     * lives long with short lines (a WebSocket connection) stays at 4 KiB */
    if (!room(lr, 0) || (lr->cap - lr->len < MIN_READ && !room(lr, lr->cap ? lr->cap : MIN_BUF))) {
        errno = ENOMEM;
        return -1;
    }
    want = lr->cap - lr->len;
    if (want > READ_CHUNK)
        want = READ_CHUNK;
    do {
        n = read(fd, lr->buf + lr->len, want);
    } while (n < 0 && errno == EINTR);
    if (n > 0)
        lr->len += (size_t)n;
    else if (n == 0)
        lr->eof = true;
    return n;
}

/* An empty buffer that grew for a big line is given back, so one large
 * frame does not keep a long-lived reader (a WebSocket connection) big. */
static enum meao_line_status none(struct meao_lines *lr)
{
    if (lr->start == lr->len && lr->cap > SHRINK_ABOVE) {
        free(lr->buf);
        lr->buf = NULL;
        lr->start = lr->len = lr->cap = 0;
    }
    return MEAO_LINE_NONE;
}

enum meao_line_status meao_lines_next(struct meao_lines *lr, const char **line, size_t *len)
{
    for (;;) {
        char *p = lr->buf ? lr->buf + lr->start : NULL;
        size_t avail = lr->len - lr->start;
        char *nl = avail ? memchr(p, '\n', avail) : NULL;

        if (lr->discarding) {
            if (nl == NULL) {
                lr->start = lr->len = 0; /* drop everything: still inside the long line */
                if (lr->eof)
                    return MEAO_LINE_EOF;
                return none(lr);
            }
            lr->start += (size_t)(nl - p) + 1;
            lr->discarding = false;
            continue;
        }
        if (nl == NULL) {
            if (avail > lr->max) {
                lr->discarding = true;
                lr->start = lr->len = 0;
                return MEAO_LINE_TOO_LONG;
            }
            if (lr->eof) {
                if (avail == 0)
                    return MEAO_LINE_EOF;
                /* a last line without its newline */
                *line = p;
                *len = avail;
                lr->start = lr->len;
                return MEAO_LINE_OK;
            }
            return none(lr);
        }
        *len = (size_t)(nl - p);
        *line = p;
        lr->start += *len + 1;
        if (*len > lr->max)
            return MEAO_LINE_TOO_LONG;
        if (*len > 0 && p[*len - 1] == '\r')
            (*len)--;
        return MEAO_LINE_OK;
    }
}
