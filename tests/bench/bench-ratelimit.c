/* Micro-benchmark of the rate limiter (not a test): ns per meao_rl_check in one
 * process and with several processes contending, plus the cost of its parts and
 * of a write-behind save. Build against the library, e.g.:
 *
 *   cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Isrc \
 *      tests/bench/bench-ratelimit.c build/libmeao.a \
 *      $(pkg-config --libs libsodium sqlite3 jansson) -lpthread -lm -o bench-ratelimit
 *   ./bench-ratelimit [dir]      (dir for the temp files, default /tmp)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth/ratelimit.h"
#include "core/log.h"
#include "http/http.h"
#include "store/db.h"

#define NOW_MS INT64_C(1800000000000)
#define NKEYS  4096

static char keys[NKEYS][24];

static double mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static const struct meao_rl_class rest = {"rest", {{60, 60000}, {1000, 3600000}}, 2};

/* n checks over nkeys subjects; now advances 1 ms per call so most are admitted. */
static double run_checks(struct meao_rl *rl, long n, int nkeys, long *admitted)
{
    struct meao_rl_result r;
    double t0 = mono_ns();
    *admitted = 0;
    for (long i = 0; i < n; i++) {
        if (meao_rl_check(rl, keys[i % nkeys], &rest, NOW_MS + i, &r) != MEAO_OK)
            abort();
        *admitted += r.allowed;
    }
    return (mono_ns() - t0) / (double)n;
}

static void contended(const char *path, int nproc, int nkeys, long n)
{
    int p[2];
    double sum = 0;
    if (pipe(p) != 0)
        abort();
    for (int k = 0; k < nproc; k++) {
        if (fork() == 0) {
            struct meao_rl *rl;
            long adm;
            double ns;
            if (meao_rl_open(path, 0, NULL, NOW_MS, &rl) != MEAO_OK)
                _exit(1);
            ns = run_checks(rl, n, nkeys, &adm);
            if (write(p[1], &ns, sizeof ns) != (ssize_t)sizeof ns)
                _exit(1);
            meao_rl_close(rl);
            _exit(0);
        }
    }
    for (int k = 0; k < nproc; k++) {
        double ns;
        if (read(p[0], &ns, sizeof ns) != (ssize_t)sizeof ns)
            abort();
        sum += ns;
    }
    while (wait(NULL) > 0)
        ;
    close(p[0]);
    close(p[1]);
    printf("  %d processes, %5d key(s):  %7.1f ns/check per process\n", nproc, nkeys, sum / nproc);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    char path[512], dbpath[512], err[256];
    struct meao_rl *rl;
    struct meao_db *db;
    struct meao_rl_result r;
    long n = 2000000, adm;
    double t0, ns;
    volatile uint64_t sink = 0;

    meao_log_init("bench-ratelimit", MEAO_LOG_WARN);
    snprintf(path, sizeof path, "%s/bench-rl-%d.shm", dir, (int)getpid());
    snprintf(dbpath, sizeof dbpath, "%s/bench-rl-%d.db", dir, (int)getpid());
    for (int i = 0; i < NKEYS; i++)
        snprintf(keys[i], sizeof keys[i], "u:%d", i + 1);

    t0 = mono_ns();
    if (meao_rl_open(path, 0, NULL, NOW_MS, &rl) != MEAO_OK)
        return 1;
    printf("open (build 65536-slot table): %.2f ms\n", (mono_ns() - t0) / 1e6);

    t0 = mono_ns();
    for (long i = 0; i < n; i++)
        sink += meao_rl_key_hash("rest", keys[i % NKEYS]);
    printf("key hash (BLAKE2b-128):        %7.1f ns\n", (mono_ns() - t0) / (double)n);
    {
        int64_t tat[2] = {0, 0};
        t0 = mono_ns();
        for (long i = 0; i < n; i++)
            sink += meao_rl_decide(&rest, tat, NOW_MS + i, &r);
        printf("GCRA decide (2 limits):        %7.1f ns\n", (mono_ns() - t0) / (double)n);
    }
    {
        struct meao_rl *rl2;
        t0 = mono_ns();
        for (int i = 0; i < 1000; i++) {
            if (meao_rl_open(path, 0, NULL, NOW_MS, &rl2) != MEAO_OK)
                return 1;
            meao_rl_close(rl2);
        }
        printf("attach to an existing table:   %7.1f us\n", (mono_ns() - t0) / 1000 / 1e3);
    }
    {
        struct meao_resp resp;
        int64_t tat[2] = {0, 0};
        meao_rl_decide(&rest, tat, NOW_MS, &r);
        meao_resp_init(&resp);
        t0 = mono_ns();
        for (long i = 0; i < n / 10; i++) {
            resp.nheaders = 0;
            meao_rl_headers(&resp, &rest, &r);
        }
        printf("meao_rl_headers (5 headers):   %7.1f ns\n", (mono_ns() - t0) / (double)(n / 10));
        meao_resp_free(&resp);
    }
    printf("meao_rl_check, single process:\n");
    ns = run_checks(rl, n, 1, &adm);
    printf("  1 key:     %7.1f ns/check (%ld admitted)\n", ns, adm);
    ns = run_checks(rl, n, NKEYS, &adm);
    printf("  %d keys: %7.1f ns/check (%ld admitted)\n", NKEYS, ns, adm);

    printf("meao_rl_check, contending processes (each its own mapping):\n");
    contended(path, 2, 1, n);
    contended(path, 2, NKEYS, n);
    contended(path, 4, 1, n / 2);

    if (meao_db_open(dbpath, 5000, MEAO_DB_MIGRATE, &db, err, sizeof err) != MEAO_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    /* NKEYS live buckets (touched at NOW_MS + n), all dirty: a first, full save */
    for (int i = 0; i < NKEYS; i++)
        meao_rl_check(rl, keys[i], &rest, NOW_MS + n, &r);
    t0 = mono_ns();
    meao_rl_save(rl, db, NOW_MS + n);
    printf("save, %d live buckets (first save: all): %.2f ms\n", NKEYS, (mono_ns() - t0) / 1e6);
    for (int i = 0; i < 100; i++)
        meao_rl_check(rl, keys[i], &rest, NOW_MS + n + 1, &r);
    t0 = mono_ns();
    meao_rl_save(rl, db, NOW_MS + n + 1);
    printf("save, 100 changed of %d live:            %.2f ms\n", NKEYS, (mono_ns() - t0) / 1e6);
    t0 = mono_ns();
    meao_rl_save(rl, db, NOW_MS + n + 2);
    printf("save, nothing changed:                   %.2f ms\n", (mono_ns() - t0) / 1e6);
    meao_rl_close(rl);
    unlink(path);
    t0 = mono_ns();
    if (meao_rl_open(path, 0, db, NOW_MS + n + 3, &rl) != MEAO_OK)
        return 1;
    printf("open with restore of %d rows:           %.2f ms\n", NKEYS, (mono_ns() - t0) / 1e6);
    meao_rl_close(rl);
    meao_db_close(db);
    unlink(path);
    unlink(dbpath);
    {
        char wal[600];
        snprintf(wal, sizeof wal, "%s-wal", dbpath);
        unlink(wal);
        snprintf(wal, sizeof wal, "%s-shm", dbpath);
        unlink(wal);
    }
    return sink == 42 ? 2 : 0;
}
