#include "core/metrics.h"

#include <sys/mman.h>
#include <time.h>

#include "core/log.h"

const int meao_metrics_status_code[MEAO_METRICS_NSTATUS] = {
    200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415, 429, 500, 502, 503, 504, 101, 0};

const int64_t meao_metrics_bucket_us[MEAO_METRICS_NBUCKETS] = {
    500,    1000,   2500,    5000,    10000,   25000,    50000,   100000,
    250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000};

static struct meao_metrics_block *block;

int meao_metrics_init(size_t nroutes, int64_t now_ms)
{
    size_t size = sizeof *block + nroutes * sizeof block->route[0];
    void *p;
    if (block != NULL)
        return 0;
    if (nroutes == 0)
        return -1;
    /* cppcheck-suppress invalidFunctionArg ; fd -1 is what MAP_ANONYMOUS wants */
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        meao_log(MEAO_LOG_WARN, NULL, "metrics", "no shared memory for metrics: %m");
        return -1;
    }
    block = p; /* anonymous memory comes zeroed */
    block->started_ms = now_ms;
    block->nroutes = nroutes;
    return 0;
}

const struct meao_metrics_block *meao_metrics_block(void)
{
    return block;
}

int64_t meao_metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void add(uint64_t *c, uint64_t n)
{
    __atomic_add_fetch(c, n, __ATOMIC_RELAXED);
}

void meao_metrics_request(size_t route, int status, int64_t elapsed_us)
{
    struct meao_metrics_route *r;
    size_t s = MEAO_METRICS_NSTATUS - 1, b = 0;
    if (block == NULL)
        return;
    if (route >= block->nroutes)
        route = block->nroutes - 1;
    if (elapsed_us < 0)
        elapsed_us = 0;
    r = &block->route[route];
    for (size_t i = 0; i + 1 < MEAO_METRICS_NSTATUS; i++)
        if (meao_metrics_status_code[i] == status) {
            s = i;
            break;
        }
    while (b < MEAO_METRICS_NBUCKETS && elapsed_us > meao_metrics_bucket_us[b])
        b++;
    add(&r->status[s], 1);
    if (b < MEAO_METRICS_NBUCKETS)
        add(&r->bucket[b], 1);
    add(&r->sum_us, (uint64_t)elapsed_us);
    add(&r->count, 1);
}

void meao_metrics_rate_limited(int rate_class)
{
    if (block != NULL && rate_class >= 0 && rate_class < MEAO_METRICS_NRATE)
        add(&block->rate_limited[rate_class], 1);
}

void meao_metrics_orch_error(enum meao_err e)
{
    if (block == NULL)
        return;
    if (e == MEAO_E_UNAVAILABLE)
        add(&block->orch_errors[MEAO_METRICS_ORCH_UNAVAILABLE], 1);
    else if (e == MEAO_E_TIMEOUT)
        add(&block->orch_errors[MEAO_METRICS_ORCH_TIMEOUT], 1);
    else if (e == MEAO_E_PROVIDER)
        add(&block->orch_errors[MEAO_METRICS_ORCH_PROVIDER], 1);
}
