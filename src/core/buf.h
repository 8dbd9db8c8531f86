/* A growable byte buffer. Caller owns buf->p; meao_buf_free() releases it. */
#ifndef MEAO_CORE_BUF_H
#define MEAO_CORE_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct meao_buf {
    char *p;
    size_t len;
    size_t cap;
};

/* Make room for n more bytes; false on allocation failure (buffer unchanged). */
bool meao_buf_reserve(struct meao_buf *b, size_t n);
bool meao_buf_append(struct meao_buf *b, const void *data, size_t n);
bool meao_buf_puts(struct meao_buf *b, const char *s);
bool meao_buf_printf(struct meao_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Keeps the allocation, forgets the contents. */
void meao_buf_reset(struct meao_buf *b);
void meao_buf_free(struct meao_buf *b);

#endif
