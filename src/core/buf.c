#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool meao_buf_reserve(struct meao_buf *b, size_t n)
{
    size_t need, cap;
    char *p;
    if (n > ((size_t)-1) / 2 - b->len - 1)
        return false;
    need = b->len + n + 1; /* always keep room for a NUL */
    if (need <= b->cap)
        return true;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    p = realloc(b->p, cap);
    if (p == NULL)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

bool meao_buf_append(struct meao_buf *b, const void *data, size_t n)
{
    if (!meao_buf_reserve(b, n))
        return false;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

bool meao_buf_puts(struct meao_buf *b, const char *s)
{
    return meao_buf_append(b, s, strlen(s));
}

bool meao_buf_printf(struct meao_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    char small[256];

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return false;
    if ((size_t)n < sizeof small)
        return meao_buf_append(b, small, (size_t)n);
    if (!meao_buf_reserve(b, (size_t)n))
        return false;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

void meao_buf_reset(struct meao_buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

void meao_buf_free(struct meao_buf *b)
{
    if (b == NULL)
        return;
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
