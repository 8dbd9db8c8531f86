/* Benchmark client of meao-orchestrator (not a test): run by
 * tests/bench/bench-orchestrator, which builds it against libmeao and starts a
 * private daemon with the echo provider.
 *
 *   bench-orchestrator-client SOCKET WORKDIR [TURNS [CLIENTS [SECONDS]]]
 *
 * Phase 1: TURNS (default 2000) turns one after another, each on a fresh
 * connection (the protocol's one turn per connection): the time from sending
 * the turn request to receiving the first text_delta is recorded (connect is
 * not included; reading the rest of the turn is), then p50/p90/p99/max.
 * Phase 2: CLIENTS (default 32) threads run whole turns (connect, send, read
 * to message_complete, close) back to back for SECONDS (default 5): turns/s.
 * The client is the gateway's own (src/orch/client.h): frames are decoded and
 * validated as the gateway would. Prints one JSON object on stdout. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "http/app.h"
#include "orch/client.h"
#include "proto/orch.h"

static const char *sock_path, *work_dir;
static const char content[] = "Benchmark turn: please echo this sentence back in a few pieces.";

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One turn. *first_ns gets send -> first text_delta (may be NULL). 0 on
 * success (message_complete seen). */
static int one_turn(unsigned long n, int64_t *first_ns)
{
    const struct meao_clock *clock = meao_clock_system();
    struct meao_orch_client *c = NULL;
    char rid[64];
    json_t *none = json_array(), *req, *frame;
    enum meao_orch_type type;
    int64_t t0;
    int rc = -1;
    bool first = true;

    snprintf(rid, sizeof rid, "bench-%lu", n);
    req = meao_orch_turn_request(rid, "s1", "bench", "bench", work_dir, none, none, content, NULL);
    if (meao_orch_connect(sock_path, clock, 1000, 10000, &c) != MEAO_OK)
        goto out;
    t0 = now_ns();
    if (meao_orch_send(c, req, 1000) != MEAO_OK)
        goto out;
    for (;;) {
        if (meao_orch_next(c, 0, -1, &frame, &type, NULL) != MEAO_OK)
            goto out;
        if (type == MEAO_ORCH_TEXT_DELTA && first) {
            if (first_ns)
                *first_ns = now_ns() - t0;
            first = false;
        }
        json_decref(frame);
        if (type == MEAO_ORCH_MESSAGE_COMPLETE) {
            rc = 0;
            break;
        }
        if (type == MEAO_ORCH_ERROR)
            break;
    }
out:
    meao_orch_close(c);
    json_decref(req);
    json_decref(none);
    return rc;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static atomic_ulong done_turns, failed_turns, seq;
static atomic_bool stop;

static void *worker(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        if (one_turn(atomic_fetch_add(&seq, 1), NULL) == 0)
            atomic_fetch_add(&done_turns, 1);
        else
            atomic_fetch_add(&failed_turns, 1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    unsigned long turns = 2000, clients = 32, secs = 5, fails = 0;
    int64_t *lat, t0, elapsed;
    pthread_t *th;
    struct timespec run;

    if (argc < 3) {
        fprintf(stderr, "usage: %s SOCKET WORKDIR [TURNS [CLIENTS [SECONDS]]]\n", argv[0]);
        return 2;
    }
    sock_path = argv[1];
    work_dir = argv[2];
    if (argc > 3)
        turns = strtoul(argv[3], NULL, 10);
    if (argc > 4)
        clients = strtoul(argv[4], NULL, 10);
    if (argc > 5)
        secs = strtoul(argv[5], NULL, 10);
    if (turns == 0 || clients == 0 || secs == 0)
        return 2;
    meao_lib_init();
    meao_log_init("bench", MEAO_LOG_ERROR);

    /* warm-up: thread stacks, page cache, allocator */
    for (unsigned long i = 0; i < 200; i++)
        if (one_turn(atomic_fetch_add(&seq, 1), NULL) != 0)
            fails++;
    lat = calloc(turns, sizeof *lat);
    for (unsigned long i = 0; i < turns; i++) {
        if (one_turn(atomic_fetch_add(&seq, 1), &lat[i]) != 0) {
            fails++;
            lat[i] = INT64_MAX;
        }
    }
    qsort(lat, turns, sizeof *lat, cmp_i64);

    th = calloc(clients, sizeof *th);
    t0 = now_ns();
    for (unsigned long i = 0; i < clients; i++)
        pthread_create(&th[i], NULL, worker, NULL);
    run.tv_sec = (time_t)secs;
    run.tv_nsec = 0;
    nanosleep(&run, NULL);
    atomic_store(&stop, true);
    for (unsigned long i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    elapsed = now_ns() - t0;

    printf("{\"turns\":%lu,\"first_delta_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
           "\"max\":%.1f},\"sequential_failures\":%lu,\"clients\":%lu,\"seconds\":%.2f,"
           "\"concurrent_turns\":%lu,\"concurrent_failures\":%lu,\"turns_per_s\":%.0f}\n",
           turns, lat[turns / 2] / 1e3, lat[turns * 9 / 10] / 1e3, lat[turns * 99 / 100] / 1e3,
           lat[turns - 1] / 1e3, fails, clients, elapsed / 1e9, atomic_load(&done_turns),
           atomic_load(&failed_turns), atomic_load(&done_turns) / (elapsed / 1e9));
    free(lat);
    free(th);
    return fails || atomic_load(&failed_turns) ? 1 : 0;
}
