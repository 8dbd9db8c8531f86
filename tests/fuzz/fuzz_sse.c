/* libFuzzer target for the SSE parser. The first two bytes choose an event
 * bound and a chunking seed; the rest is the stream. The same stream fed in
 * one piece and in arbitrary pieces must yield the same events and the same
 * final status; every event must respect the bound and the parser's own
 * NUL-termination promises. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "orchestrator/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
    struct meao_buf log;
    size_t max;
};

static bool record(void *ctx, const struct meao_sse_event *ev)
{
    struct seen *s = ctx;
    if (ev->type[ev->type_len] != '\0' || ev->data[ev->data_len] != '\0' ||
        ev->id[ev->id_len] != '\0' || ev->data_len > s->max || ev->type_len > s->max)
        abort();
    if (!meao_buf_printf(&s->log, "%zu:%zu:%zu:", ev->type_len, ev->id_len, ev->data_len) ||
        !meao_buf_append(&s->log, ev->type, ev->type_len) ||
        !meao_buf_append(&s->log, ev->id, ev->id_len) ||
        !meao_buf_append(&s->log, ev->data, ev->data_len))
        abort();
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meao_sse a, b;
    struct seen sa = {{0}, 0}, sb = {{0}, 0};
    enum meao_sse_status st_a, st_b = MEAO_SSE_OK;
    const char *s;
    size_t max, off = 0;
    uint32_t seed;

    if (size < 2)
        return 0;
    max = 8 + (size_t)data[0] * 4; /* 8..1028 bytes */
    seed = data[1] | 1u;
    s = (const char *)data + 2;
    size -= 2;
    sa.max = sb.max = max;

    meao_sse_init(&a, max);
    st_a = meao_sse_feed(&a, s, size, record, &sa);

    meao_sse_init(&b, max);
    while (off < size && st_b == MEAO_SSE_OK) {
        size_t n;
        seed = seed * 1103515245u + 12345u;
        n = (seed >> 16) % 17; /* 0..16, empty chunks included */
        if (n > size - off)
            n = size - off;
        st_b = meao_sse_feed(&b, s + off, n, record, &sb);
        off += n;
    }
    if (st_a != st_b || sa.log.len != sb.log.len ||
        (sa.log.len && memcmp(sa.log.p, sb.log.p, sa.log.len) != 0))
        abort();
    if (st_a == MEAO_SSE_OK && meao_sse_pending(&a) != meao_sse_pending(&b))
        abort();
    if (a.line.len + a.data.len + a.type.len > max)
        abort();
    meao_sse_free(&a);
    meao_sse_free(&b);
    meao_buf_free(&sa.log);
    meao_buf_free(&sb.log);
    return 0;
}
