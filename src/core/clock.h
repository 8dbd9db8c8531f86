/* Injectable clock. Library code never calls time()/clock_gettime() directly:
 * it asks a struct meao_clock, so tests can run on a fake one. */
#ifndef MEAO_CORE_CLOCK_H
#define MEAO_CORE_CLOCK_H

#include <stddef.h>
#include <stdint.h>

struct meao_clock {
    /* Wall-clock milliseconds since the Unix epoch. */
    int64_t (*now_ms)(void *ctx);
    /* Monotonic milliseconds, for deadlines and durations. */
    int64_t (*mono_ms)(void *ctx);
    void *ctx;
};

/* The real system clock (a static instance; never freed). */
const struct meao_clock *meao_clock_system(void);

/* A fake clock whose time only moves when told to; for tests. */
struct meao_fake_clock {
    struct meao_clock clock;
    int64_t now_ms;
    int64_t mono_ms;
};
void meao_fake_clock_init(struct meao_fake_clock *fc, int64_t start_ms);
void meao_fake_clock_advance(struct meao_fake_clock *fc, int64_t ms);

static inline int64_t meao_now_ms(const struct meao_clock *c)
{
    return c->now_ms(c->ctx);
}
static inline int64_t meao_mono_ms(const struct meao_clock *c)
{
    return c->mono_ms(c->ctx);
}

/* Format epoch milliseconds as ISO 8601 UTC with milliseconds
 * ("2026-11-27T18:00:00.000Z") into buf (at least 25 bytes). Returns buf. */
char *meao_iso8601(int64_t ms, char *buf, size_t len);

#endif
