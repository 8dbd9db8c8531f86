/* A bounded line reader over a file descriptor, for JSON-lines peers (the
 * orchestrator socket, websocketd's stdin). A line longer than the limit is
 * reported once and its remaining bytes are skipped up to the next newline,
 * so one oversized frame never costs unbounded memory nor the connection. */
#ifndef MEAO_CORE_LINES_H
#define MEAO_CORE_LINES_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct meao_lines {
    char *buf;
    size_t start; /* first unconsumed byte */
    size_t len;   /* bytes in buf */
    size_t cap;
    size_t max;      /* longest accepted line, without its newline */
    bool discarding; /* inside an over-long line */
    bool eof;
};

enum meao_line_status {
    MEAO_LINE_OK,       /* line and len hold one line (no newline; a trailing \r removed) */
    MEAO_LINE_NONE,     /* no complete line buffered: fill again */
    MEAO_LINE_TOO_LONG, /* a line exceeded max; it is being skipped */
    MEAO_LINE_EOF,      /* the peer closed and nothing is left (a final unterminated
                         * line is returned as OK first) */
};

/* max_line: the longest line accepted (e.g. 1 MiB). Nothing is allocated yet. */
void meao_lines_init(struct meao_lines *lr, size_t max_line);
void meao_lines_free(struct meao_lines *lr);

/* One read(2) from fd into the buffer. Returns bytes read, 0 at end of file
 * (remembered), -1 on error with errno (EAGAIN on a non-blocking fd with
 * nothing to read, ENOMEM when the buffer cannot grow). */
ssize_t meao_lines_fill(struct meao_lines *lr, int fd);

/* Add bytes that were read elsewhere (tests, other transports). false on ENOMEM. */
bool meao_lines_feed(struct meao_lines *lr, const char *data, size_t n);

/* The next complete line. The returned pointer is valid until the next call
 * to any meao_lines_* function. */
enum meao_line_status meao_lines_next(struct meao_lines *lr, const char **line, size_t *len);

#endif
