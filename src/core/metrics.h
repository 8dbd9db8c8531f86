/* Counters for GET /metrics, shared by every process of one meao-fcgi.
 *
 * The master maps one block of counters (anonymous MAP_SHARED memory) before
 * it forks its workers, so every worker — also the fresh generation a reload
 * (SIGUSR2) forks — adds to the same numbers, with lock-free relaxed atomic
 * adds; a scrape served by any worker sees the sum. Nothing is written to
 * disk: counters start at zero when the master starts (Prometheus handles
 * counter resets). In a process that never attached a block (plain CGI,
 * meao-replay, meao-ws, unit tests) every recording call is a no-op.
 *
 * Per route (an index into the route table, or the last index for requests
 * that matched no route): answers by status code, and a latency histogram
 * (MEAO_METRICS_NBUCKETS upper bounds plus +Inf, the sum and the count).
 * Process-wide: rate-limit rejections by rate class, orchestrator failures by
 * kind. */
#ifndef MEAO_CORE_METRICS_H
#define MEAO_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Status codes counted one by one; anything else lands in the last slot. */
#define MEAO_METRICS_NSTATUS 18
extern const int meao_metrics_status_code[MEAO_METRICS_NSTATUS]; /* 0: "other" */

/* Latency bucket upper bounds in microseconds (le="0.0005" ... le="30"). */
#define MEAO_METRICS_NBUCKETS 15
extern const int64_t meao_metrics_bucket_us[MEAO_METRICS_NBUCKETS];

/* Rate classes as in http/router.h (enum meao_rate_class), kinds of
 * orchestrator failure. */
#define MEAO_METRICS_NRATE 4
enum meao_metrics_orch {
    MEAO_METRICS_ORCH_UNAVAILABLE,
    MEAO_METRICS_ORCH_TIMEOUT,
    MEAO_METRICS_ORCH_PROVIDER,
    MEAO_METRICS_NORCH
};

struct meao_metrics_route {
    uint64_t status[MEAO_METRICS_NSTATUS];
    uint64_t bucket[MEAO_METRICS_NBUCKETS]; /* per bucket, not cumulative; +Inf = count */
    uint64_t count;
    uint64_t sum_us;
};

struct meao_metrics_block {
    int64_t started_ms; /* wall clock when the block was made */
    uint64_t rate_limited[MEAO_METRICS_NRATE];
    uint64_t orch_errors[MEAO_METRICS_NORCH];
    size_t nroutes; /* route table size + 1 (unmatched) */
    struct meao_metrics_route route[];
};

/* Map a zeroed block for nroutes route slots (the route table's size + 1)
 * and attach this process to it: processes forked afterwards share it.
 * Returns 0, or -1 (logged; recording stays a no-op). Call once, before
 * forking; a second call keeps the first block. */
int meao_metrics_init(size_t nroutes, int64_t now_ms);

/* The attached block for reading (a scrape), or NULL. Borrowed; values
 * change under the reader (read them with __atomic_load_n, relaxed). */
const struct meao_metrics_block *meao_metrics_block(void);

/* A monotonic clock in microseconds, for request latency. */
int64_t meao_metrics_now_us(void);

/* One answered request: route slot (nroutes - 1 for "no route"), its HTTP
 * status and how long it took. */
void meao_metrics_request(size_t route, int status, int64_t elapsed_us);

/* A request refused by the rate limiter, by rate class (0..3). */
void meao_metrics_rate_limited(int rate_class);

/* A turn or short orchestrator call failed with e: MEAO_E_UNAVAILABLE,
 * MEAO_E_TIMEOUT and MEAO_E_PROVIDER are counted, anything else ignored. */
void meao_metrics_orch_error(enum meao_err e);

#endif
