#include "core/clock.h"

#include <stdio.h>
#include <time.h>

static int64_t sys_now(void *ctx)
{
    struct timespec ts;
    (void)ctx;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t sys_mono(void *ctx)
{
    struct timespec ts;
    (void)ctx;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const struct meao_clock system_clock = {sys_now, sys_mono, NULL};

const struct meao_clock *meao_clock_system(void)
{
    return &system_clock;
}

static int64_t fake_now(void *ctx)
{
    return ((struct meao_fake_clock *)ctx)->now_ms;
}

static int64_t fake_mono(void *ctx)
{
    return ((struct meao_fake_clock *)ctx)->mono_ms;
}

void meao_fake_clock_init(struct meao_fake_clock *fc, int64_t start_ms)
{
    fc->clock.now_ms = fake_now;
    fc->clock.mono_ms = fake_mono;
    fc->clock.ctx = fc;
    fc->now_ms = start_ms;
    fc->mono_ms = 1000;
}

void meao_fake_clock_advance(struct meao_fake_clock *fc, int64_t ms)
{
    fc->now_ms += ms;
    fc->mono_ms += ms;
}

char *meao_iso8601(int64_t ms, char *buf, size_t len)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return buf;
}
