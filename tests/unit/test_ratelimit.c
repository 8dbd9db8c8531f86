/* Rate limiting: GCRA maths with exact numbers, headers, and the shared table
 * across processes (exactness, eviction, dead lock holders, repair, restore). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth/ratelimit.h"
#include "core/config.h"
#include "http/http.h"
#include "store/db.h"

#define NOW_MS INT64_C(1800000000000) /* a fixed wall-clock instant */
#define SEC_US INT64_C(1000000)

static char dir[64];
static char path[128];
static char dbpath[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/meao-rl-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/rl.shm", dir);
    snprintf(dbpath, sizeof dbpath, "%s/t.db", dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[200];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const struct meao_rl_class one_per_min = {"t1", {{1, 60000}}, 1};
static const struct meao_rl_class rest_default = {"rest", {{60, 60000}, {1000, 3600000}}, 2};

/* ---- pure GCRA -------------------------------------------------------------- */

static void gcra_burst_of_l_then_denied(void **state)
{
    const struct meao_rl_limit lim = {60, 60000};
    struct meao_gcra_out g;
    int64_t tat = 0, now = NOW_MS * 1000;
    (void)state;
    for (int i = 0; i < 60; i++) {
        assert_true(meao_gcra(tat, now, &lim, &g));
        assert_int_equal(g.remaining, 59 - i);
        assert_int_equal(g.reset_us, (i + 1) * SEC_US);
        assert_int_equal(g.retry_after_us, 0);
        tat = g.tat_us;
    }
    assert_int_equal(tat, now + 60 * SEC_US);
    assert_false(meao_gcra(tat, now, &lim, &g));
    assert_int_equal(g.remaining, 0);
    assert_int_equal(g.retry_after_us, SEC_US); /* one emission interval */
    assert_int_equal(g.reset_us, 60 * SEC_US);
    assert_int_equal(g.tat_us, tat); /* a denial changes nothing */
    /* one more after exactly T, not a microsecond earlier */
    assert_false(meao_gcra(tat, now + SEC_US - 1, &lim, &g));
    assert_int_equal(g.retry_after_us, 1);
    assert_true(meao_gcra(tat, now + SEC_US, &lim, &g));
    assert_int_equal(g.remaining, 0);
    assert_int_equal(g.reset_us, 60 * SEC_US);
}

static void gcra_remaining_and_reset_after_partial_use(void **state)
{
    const struct meao_rl_limit lim = {60, 60000};
    struct meao_gcra_out g;
    int64_t tat = 0, now = NOW_MS * 1000;
    (void)state;
    for (int i = 0; i < 10; i++) {
        meao_gcra(tat, now, &lim, &g);
        tat = g.tat_us;
    }
    assert_int_equal(g.remaining, 50);
    assert_int_equal(g.reset_us, 10 * SEC_US);
    /* 5 s later, 5 intervals have drained: 6 s of debt after this request */
    assert_true(meao_gcra(tat, now + 5 * SEC_US, &lim, &g));
    assert_int_equal(g.remaining, 54);
    assert_int_equal(g.reset_us, 6 * SEC_US);
    /* an empty bucket long after: L - 1 */
    assert_true(meao_gcra(tat, now + 3600 * SEC_US, &lim, &g));
    assert_int_equal(g.remaining, 59);
}

static void gcra_uneven_interval_keeps_exact_burst(void **state)
{
    /* 7/min: T = 8571428 us, C = 7T = 59999996 us — a burst of exactly 7 */
    const struct meao_rl_limit lim = {7, 60000};
    struct meao_gcra_out g;
    int64_t tat = 0, now = NOW_MS * 1000;
    (void)state;
    for (int i = 0; i < 7; i++) {
        assert_true(meao_gcra(tat, now, &lim, &g));
        tat = g.tat_us;
    }
    assert_false(meao_gcra(tat, now, &lim, &g));
    assert_int_equal(g.retry_after_us, 8571428);
    /* over a day the sustained rate stays at one per T: exactly 7 * 1440 + 7 more */
    {
        int admitted = 0;
        tat = 0;
        for (int64_t t = now; t < now + 86400 * SEC_US; t += 1000) { /* every 1 ms */
            if (meao_gcra(tat, t, &lim, &g)) {
                tat = g.tat_us;
                admitted++;
            }
        }
        assert_in_range(admitted, 7 * 1440, 7 * 1440 + 7);
    }
}

static void gcra_retry_after_is_never_early(void **state)
{
    const struct meao_rl_limit lims[] = {{60, 60000}, {7, 60000}, {10, 900000}, {1000, 3600000}};
    (void)state;
    for (size_t k = 0; k < sizeof lims / sizeof lims[0]; k++) {
        struct meao_gcra_out g, h;
        int64_t tat = 0, now = NOW_MS * 1000;
        int denials = 0;
        /* a client that hammers, then retries exactly when told */
        for (int i = 0; i < 3000 && denials < 50; i++) {
            if (meao_gcra(tat, now, &lims[k], &g)) {
                tat = g.tat_us;
                now += 997; /* odd steps so TATs don't line up with now */
                continue;
            }
            denials++;
            assert_true(g.retry_after_us > 0);
            assert_false(meao_gcra(tat, now + g.retry_after_us - 1, &lims[k], &h));
            assert_true(meao_gcra(tat, now + g.retry_after_us, &lims[k], &h));
            now += g.retry_after_us;
        }
        assert_int_equal(denials, 50);
    }
}

static void gcra_future_tat_counts_as_full(void **state)
{
    const struct meao_rl_limit lim = {60, 60000};
    struct meao_gcra_out g;
    int64_t now = NOW_MS * 1000;
    (void)state;
    /* clock stepped back an hour: at most one window of denial, not an hour */
    assert_false(meao_gcra(now + 3600 * SEC_US, now, &lim, &g));
    assert_int_equal(g.retry_after_us, SEC_US);
    assert_int_equal(g.reset_us, 60 * SEC_US);
    assert_int_equal(g.tat_us, now + 60 * SEC_US); /* stored capped ... */
    /* ... so the retry it promised holds */
    assert_true(meao_gcra(g.tat_us, now + SEC_US, &lim, &g));
    assert_int_equal(g.tat_us, now + SEC_US + 60 * SEC_US);
    /* the class stores the cap even when denying */
    {
        const struct meao_rl_class c = {"c", {{60, 60000}, {1000, 3600000}}, 2};
        struct meao_rl_result r;
        int64_t tat[2] = {now + 7200 * SEC_US, 0};
        assert_false(meao_rl_decide(&c, tat, NOW_MS, &r));
        assert_int_equal(r.retry_after_ms, 1000);
        assert_int_equal(tat[0], now + 60 * SEC_US);
        assert_int_equal(tat[1], 0); /* the hour admitted: untouched */
        assert_true(meao_rl_decide(&c, tat, NOW_MS + 1000, &r));
    }
}

static void class_hour_limit_binds_and_denial_advances_nothing(void **state)
{
    const struct meao_rl_class cls = {"c", {{10, 60000}, {15, 3600000}}, 2};
    struct meao_rl_result r;
    int64_t tat[2] = {0, 0}, saved[2];
    (void)state;
    for (int i = 0; i < 10; i++) {
        assert_true(meao_rl_decide(&cls, tat, NOW_MS, &r));
        /* minute: 9 - i left; hour: 14 - i: the minute binds */
        assert_int_equal(r.limit, 10);
        assert_int_equal(r.window_ms, 60000);
        assert_int_equal(r.remaining, 9 - i);
    }
    assert_false(meao_rl_decide(&cls, tat, NOW_MS, &r));
    assert_int_equal(r.limit, 10);
    assert_int_equal(r.retry_after_ms, 6000);
    /* a minute later the minute bucket is full again; the hour has 5 left */
    for (int i = 0; i < 5; i++) {
        assert_true(meao_rl_decide(&cls, tat, NOW_MS + 60000, &r));
        assert_int_equal(r.limit, 15); /* hour: 4 - i left, minute: 9 - i */
        assert_int_equal(r.remaining, 4 - i);
    }
    /* hour: TAT = +3600 s, 0 left and full in 3540 s; minute: 5 left */
    assert_int_equal(r.limit, 15);
    assert_int_equal(r.window_ms, 3600000);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_ms, 3540000);
    memcpy(saved, tat, sizeof tat);
    assert_false(meao_rl_decide(&cls, tat, NOW_MS + 60000, &r));
    assert_int_equal(r.limit, 15);
    assert_int_equal(r.remaining, 0);
    /* hour T = 240 s: admitted again when TAT + T - C <= now → 180 s from now */
    assert_int_equal(r.retry_after_ms, 180000);
    assert_memory_equal(tat, saved, sizeof tat); /* the minute admitted, but nothing moved */
    assert_false(meao_rl_decide(&cls, tat, NOW_MS + 60000 + 179999, &r));
    assert_true(meao_rl_decide(&cls, tat, NOW_MS + 60000 + 180000, &r));
}

static void class_from_config_and_validation(void **state)
{
    struct meao_config cfg;
    struct meao_rl_class c;
    (void)state;
    meao_config_defaults(&cfg);
    meao_rl_class_from_config(&cfg, MEAO_RATE_REST, &c);
    assert_string_equal(c.name, "rest");
    assert_int_equal(c.nlimits, 2);
    assert_int_equal(c.limits[0].limit, 60);
    assert_int_equal(c.limits[0].window_ms, 60000);
    assert_int_equal(c.limits[1].limit, 1000);
    assert_int_equal(c.limits[1].window_ms, 3600000);
    assert_true(meao_rl_class_valid(&c));
    meao_rl_class_from_config(&cfg, MEAO_RATE_MESSAGES, &c);
    assert_string_equal(c.name, "msg");
    assert_int_equal(c.nlimits, 1);
    assert_int_equal(c.limits[0].limit, 10);
    meao_rl_class_from_config(&cfg, MEAO_RATE_PAIRING, &c);
    assert_string_equal(c.name, "pair");
    assert_int_equal(c.limits[0].limit, 10);
    assert_int_equal(c.limits[0].window_ms, 900000);
    meao_rl_class_from_config(&cfg, MEAO_RATE_NONE, &c);
    assert_int_equal(c.nlimits, 0);
    assert_true(meao_rl_class_valid(&c));
    meao_rl_class_ws_messages(&cfg, &c);
    assert_string_equal(c.name, "ws");
    assert_int_equal(c.limits[0].limit, 30);
    meao_config_free(&cfg);

    c = (struct meao_rl_class){"x", {{0, 60000}}, 1};
    assert_false(meao_rl_class_valid(&c));
    c = (struct meao_rl_class){"x", {{2000, 1}}, 1}; /* interval under 1 us */
    assert_false(meao_rl_class_valid(&c));
    c = (struct meao_rl_class){NULL, {{1, 1}}, 1};
    assert_false(meao_rl_class_valid(&c));
    c = (struct meao_rl_class){"x", {{1, 1}}, 3};
    assert_false(meao_rl_class_valid(&c));
}

static const char *header(const struct meao_resp *resp, const char *name)
{
    for (size_t i = 0; i < resp->nheaders; i++)
        if (strcmp(resp->headers[i].name, name) == 0)
            return resp->headers[i].value;
    return NULL;
}

static void headers_both_families(void **state)
{
    struct meao_resp resp;
    struct meao_rl_result r;
    int64_t tat[2] = {0, 0};
    (void)state;
    meao_resp_init(&resp);
    assert_true(meao_rl_decide(&rest_default, tat, NOW_MS, &r));
    meao_rl_headers(&resp, &rest_default, &r);
    assert_string_equal(header(&resp, "X-RateLimit-Limit"), "60");
    assert_string_equal(header(&resp, "X-RateLimit-Remaining"), "59");
    assert_string_equal(header(&resp, "X-RateLimit-Reset"), "1");
    assert_string_equal(header(&resp, "RateLimit-Policy"), "60;w=60, 1000;w=3600");
    assert_string_equal(header(&resp, "RateLimit"), "limit=60, remaining=59, reset=1");
    assert_int_equal(meao_rl_retry_after_s(&r), 0);
    meao_resp_free(&resp);

    /* denied: Retry-After rounds up (1.5 s → 2), reset until full */
    {
        const struct meao_rl_class c = {"c", {{2, 3000}}, 1}; /* T = 1.5 s */
        int64_t t1[2] = {0, 0};
        meao_resp_init(&resp);
        meao_rl_decide(&c, t1, NOW_MS, &r);
        meao_rl_decide(&c, t1, NOW_MS, &r);
        assert_false(meao_rl_decide(&c, t1, NOW_MS, &r));
        assert_int_equal(r.retry_after_ms, 1500);
        assert_int_equal(meao_rl_retry_after_s(&r), 2);
        meao_rl_headers(&resp, &c, &r);
        assert_string_equal(header(&resp, "X-RateLimit-Remaining"), "0");
        assert_string_equal(header(&resp, "X-RateLimit-Reset"), "3");
        assert_string_equal(header(&resp, "RateLimit-Policy"), "2;w=3");
        assert_string_equal(header(&resp, "RateLimit"), "limit=2, remaining=0, reset=3");
        meao_resp_free(&resp);
    }
    /* a class without limits adds nothing */
    {
        const struct meao_rl_class none = {"none", {{0, 0}}, 0};
        meao_resp_init(&resp);
        assert_true(meao_rl_decide(&none, tat, NOW_MS, &r));
        meao_rl_headers(&resp, &none, &r);
        assert_int_equal(resp.nheaders, 0);
        meao_resp_free(&resp);
    }
}

static void key_hash_separates_classes(void **state)
{
    (void)state;
    assert_int_equal(meao_rl_key_hash("rest", "u:42"), meao_rl_key_hash("rest", "u:42"));
    assert_int_not_equal(meao_rl_key_hash("rest", "u:42"), meao_rl_key_hash("msg", "u:42"));
    /* the separator keeps ("ab", "c") and ("a", "bc") apart */
    assert_int_not_equal(meao_rl_key_hash("ab", "c"), meao_rl_key_hash("a", "bc"));
    assert_int_not_equal(meao_rl_key_hash("rest", "u:42"), 0);
    {
        char longkey[600];
        memset(longkey, 'k', sizeof longkey - 1);
        longkey[sizeof longkey - 1] = '\0';
        assert_int_not_equal(meao_rl_key_hash("rest", longkey), 0);
    }
}

/* ---- the shared table --------------------------------------------------------- */

static int admit_until_denied(struct meao_rl *rl, const char *key, const struct meao_rl_class *cls,
                              int64_t now)
{
    struct meao_rl_result r;
    int n = 0;
    for (;;) {
        assert_int_equal(meao_rl_check(rl, key, cls, now, &r), MEAO_OK);
        if (!r.allowed)
            return n;
        n++;
        assert_true(n < 100000);
    }
}

static void table_limits_and_keeps_keys_apart(void **state)
{
    struct meao_rl *rl;
    struct meao_rl_result r;
    struct stat st;
    (void)state;
    assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &rl), MEAO_OK);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(admit_until_denied(rl, "u:1", &rest_default, NOW_MS), 60);
    assert_int_equal(meao_rl_check(rl, "u:1", &rest_default, NOW_MS, &r), MEAO_OK);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ms, 1000);
    /* another user, and the same user in another class, are untouched */
    assert_int_equal(admit_until_denied(rl, "u:2", &rest_default, NOW_MS), 60);
    assert_int_equal(admit_until_denied(rl, "u:1", &one_per_min, NOW_MS), 1);
    /* one second later exactly one more for u:1 */
    assert_int_equal(admit_until_denied(rl, "u:1", &rest_default, NOW_MS + 1000), 1);
    /* a second handle (as another process would) sees the same buckets */
    {
        struct meao_rl *rl2;
        assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &rl2), MEAO_OK);
        assert_int_equal(admit_until_denied(rl2, "u:2", &rest_default, NOW_MS), 0);
        meao_rl_close(rl2);
    }
    /* an invalid class is refused, and admits */
    {
        const struct meao_rl_class bad = {"bad", {{0, 1000}}, 1};
        assert_int_equal(meao_rl_check(rl, "u:1", &bad, NOW_MS, &r), MEAO_E_INTERNAL);
        assert_true(r.allowed);
    }
    assert_int_equal(meao_rl_evictions(rl), 0);
    meao_rl_close(rl);
    meao_rl_close(NULL);
}

/* N processes race to create the table, then hammer one key at a fixed now:
 * exactly the limit is admitted, no matter how the checks interleave. */
static void processes_never_admit_more_than_the_limit(void **state)
{
    enum { NPROC = 8, TRIES = 2000 };
    int go[2], res[2];
    pid_t pids[NPROC];
    int64_t total = 0, total_one = 0;
    (void)state;
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(res), 0);
    for (int i = 0; i < NPROC; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct meao_rl *rl;
            struct meao_rl_result r;
            int64_t counts[2] = {0, 0};
            char c;
            close(go[1]);
            if (read(go[0], &c, 1) != 1)
                _exit(2);
            if (meao_rl_open(path, 0, NULL, NOW_MS, &rl) != MEAO_OK)
                _exit(3);
            for (int k = 0; k < TRIES; k++) {
                if (meao_rl_check(rl, "u:7", &rest_default, NOW_MS, &r) != MEAO_OK)
                    _exit(4);
                counts[0] += r.allowed;
                if (meao_rl_check(rl, "ip:192.0.2.1", &one_per_min, NOW_MS, &r) != MEAO_OK)
                    _exit(4);
                counts[1] += r.allowed;
            }
            if (write(res[1], counts, sizeof counts) != (ssize_t)sizeof counts)
                _exit(5);
            meao_rl_close(rl);
            _exit(0);
        }
    }
    close(go[0]);
    close(res[1]);
    /* release them all at once */
    for (int i = 0; i < NPROC; i++)
        assert_int_equal(write(go[1], "g", 1), 1);
    close(go[1]);
    for (int i = 0; i < NPROC; i++) {
        int64_t counts[2];
        assert_int_equal(read(res[0], counts, sizeof counts), sizeof counts);
        total += counts[0];
        total_one += counts[1];
    }
    close(res[0]);
    for (int i = 0; i < NPROC; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    assert_int_equal(total, 60);
    assert_int_equal(total_one, 1);
}

static void full_probe_window_evicts_closest_to_empty(void **state)
{
    struct meao_rl *rl;
    struct meao_rl_result r;
    char key[16];
    (void)state;
    /* 8 slots: one stripe whose probe window is the whole stripe */
    assert_int_equal(meao_rl_open(path, 8, NULL, NOW_MS, &rl), MEAO_OK);
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(meao_rl_check(rl, key, &one_per_min, NOW_MS + i, &r), MEAO_OK);
        assert_true(r.allowed);
    }
    assert_int_equal(meao_rl_evictions(rl), 0);
    /* a denial claims no slot */
    assert_int_equal(meao_rl_check(rl, "k0", &one_per_min, NOW_MS + 8, &r), MEAO_OK);
    assert_false(r.allowed);
    assert_int_equal(meao_rl_evictions(rl), 0);
    /* a ninth subject evicts k0, whose TAT is the earliest */
    assert_int_equal(meao_rl_check(rl, "k8", &one_per_min, NOW_MS + 9, &r), MEAO_OK);
    assert_true(r.allowed);
    assert_int_equal(meao_rl_evictions(rl), 1);
    /* the documented consequence: k0's bucket was reset (fails open once) */
    assert_int_equal(meao_rl_check(rl, "k0", &one_per_min, NOW_MS + 10, &r), MEAO_OK);
    assert_true(r.allowed);
    assert_int_equal(meao_rl_evictions(rl), 2); /* and it pushed out k1 */
    /* k2..k8 are intact */
    for (int i = 2; i <= 8; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(meao_rl_check(rl, key, &one_per_min, NOW_MS + 11, &r), MEAO_OK);
        assert_false(r.allowed);
    }
    /* a minute later every bucket is empty: new subjects reuse slots, no eviction */
    for (int i = 100; i < 108; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(meao_rl_check(rl, key, &one_per_min, NOW_MS + 120000, &r), MEAO_OK);
        assert_true(r.allowed);
    }
    assert_int_equal(meao_rl_evictions(rl), 2);
    meao_rl_close(rl);
}

/* A child takes a stripe lock and dies holding it: the next locker gets
 * EOWNERDEAD, recovers, and nobody deadlocks. */
static void dead_lock_holder_does_not_deadlock(void **state)
{
    struct meao_rl *rl;
    struct meao_rl_result r;
    (void)state;
    assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &rl), MEAO_OK);
    for (int variant = 0; variant < 2; variant++) {
        int p[2];
        char c;
        int status;
        pid_t pid;
        assert_int_equal(pipe(p), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            struct meao_rl *crl;
            close(p[0]);
            if (meao_rl_open(path, 0, NULL, NOW_MS, &crl) != MEAO_OK)
                _exit(3);
            meao_rl_debug_hold_lock(crl, "rest", "u:9");
            if (write(p[1], "L", 1) != 1)
                _exit(4);
            if (variant == 1)
                _exit(0); /* exits normally, still holding it */
            pause();      /* killed with SIGKILL below */
            _exit(5);
        }
        close(p[1]);
        assert_int_equal(read(p[0], &c, 1), 1);
        close(p[0]);
        if (variant == 0)
            kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_int_equal(meao_rl_check(rl, "u:9", &rest_default, NOW_MS, &r), MEAO_OK);
        assert_true(r.allowed);
        /* and the lock is usable afterwards */
        assert_int_equal(meao_rl_check(rl, "u:9", &rest_default, NOW_MS, &r), MEAO_OK);
        assert_int_equal(r.remaining, 58 - variant * 2);
    }
    meao_rl_close(rl);
}

/* A live process stuck holding a lock: checks give up after a second
 * (UNAVAILABLE, admitted) instead of hanging the worker. */
static void stuck_lock_holder_times_out(void **state)
{
    struct meao_rl *rl;
    struct meao_rl_result r;
    int p[2];
    char c;
    pid_t pid;
    (void)state;
    assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &rl), MEAO_OK);
    assert_int_equal(pipe(p), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        meao_rl_debug_hold_lock(rl, "rest", "u:3");
        if (write(p[1], "L", 1) != 1)
            _exit(4);
        pause();
        _exit(5);
    }
    close(p[1]);
    assert_int_equal(read(p[0], &c, 1), 1);
    close(p[0]);
    assert_int_equal(meao_rl_check(rl, "u:3", &rest_default, NOW_MS, &r), MEAO_E_UNAVAILABLE);
    assert_true(r.allowed);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_int_equal(meao_rl_check(rl, "u:3", &rest_default, NOW_MS, &r), MEAO_OK);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 59);
    meao_rl_close(rl);
}

static void write_file(const char *p, const void *data, size_t len)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void patch_file(const char *p, off_t off, const void *data, size_t len)
{
    int fd = open(p, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, len, off), (ssize_t)len);
    close(fd);
}

static char *slurp(const char *p, size_t *len)
{
    struct stat st;
    char *buf;
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    buf = malloc((size_t)st.st_size);
    assert_non_null(buf);
    assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

/* Open, use up u:1's single request, close; true if a fresh open still sees it used. */
static bool state_survives_reopen(void)
{
    struct meao_rl *rl;
    struct meao_rl_result r;
    assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &rl), MEAO_OK);
    assert_int_equal(meao_rl_check(rl, "u:1", &one_per_min, NOW_MS, &r), MEAO_OK);
    meao_rl_close(rl);
    return !r.allowed;
}

static void corrupt_or_foreign_files_are_rebuilt(void **state)
{
    struct meao_rl *rl;
    struct meao_rl_result r;
    char junk[4096];
    size_t len;
    char *buf, *p;
    uint32_t version;
    (void)state;
    /* short garbage */
    write_file(path, "garbage", 7);
    assert_false(state_survives_reopen()); /* rebuilt: admitted */
    assert_true(state_survives_reopen());  /* now a valid table that keeps state */
    /* right size, wrong magic */
    memset(junk, 0x5a, sizeof junk);
    patch_file(path, 0, junk, 64);
    assert_false(state_survives_reopen());
    /* truncated mid-table */
    assert_int_equal(truncate(path, 100000), 0);
    assert_false(state_survives_reopen());
    /* an older layout version is rebuilt */
    version = 0;
    patch_file(path, 8, &version, sizeof version);
    assert_false(state_survives_reopen());
    /* a table from an earlier boot (its mutexes may be held by the dead) */
    assert_true(state_survives_reopen());
    buf = slurp(path, &len);
    {
        char boot[64] = "";
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
        if (f != NULL) {
            assert_non_null(fgets(boot, sizeof boot, f));
            fclose(f);
            boot[strcspn(boot, "\n")] = '\0';
            p = NULL;
            for (size_t i = 0; p == NULL && i + strlen(boot) <= len; i++)
                if (memcmp(buf + i, boot, strlen(boot)) == 0)
                    p = buf + i;
            assert_non_null(p);
            patch_file(path, p - buf, "X", 1);
            assert_false(state_survives_reopen());
        }
    }
    free(buf);
    /* a newer release's table is left alone */
    version = 99;
    patch_file(path, 8, &version, sizeof version);
    assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &rl), MEAO_E_UNAVAILABLE);
    assert_null(rl);
    version = 1;
    patch_file(path, 8, &version, sizeof version);
    assert_true(state_survives_reopen());
    /* a symlink is not followed */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(symlink("/tmp/meao-rl-nowhere", path), 0);
    assert_int_not_equal(meao_rl_open(path, 0, NULL, NOW_MS, &rl), MEAO_OK);
    assert_int_equal(unlink(path), 0);
    (void)r;
}

/* A table replaced under a running process (other geometry here; in real life
 * an upgrade or a repair): the process moves to the new table on its next check. */
static void replaced_table_is_followed(void **state)
{
    struct meao_rl *a, *b;
    struct meao_rl_result r;
    (void)state;
    assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &a), MEAO_OK);
    assert_int_equal(meao_rl_open(path, 1024, NULL, NOW_MS, &b), MEAO_OK);
    assert_int_equal(meao_rl_check(a, "u:5", &one_per_min, NOW_MS, &r), MEAO_OK);
    assert_true(r.allowed);
    assert_int_equal(meao_rl_check(b, "u:5", &one_per_min, NOW_MS, &r), MEAO_OK);
    assert_false(r.allowed);
    /* nslots 0 takes whatever geometry the file has */
    {
        struct meao_rl *c;
        assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &c), MEAO_OK);
        assert_int_equal(meao_rl_check(c, "u:5", &one_per_min, NOW_MS, &r), MEAO_OK);
        assert_false(r.allowed);
        meao_rl_close(c);
    }
    meao_rl_close(a);
    meao_rl_close(b);
}

static int64_t scalar(struct meao_db *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    assert_int_equal(sqlite3_prepare_v2(meao_db_handle(db), sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void save_and_restore_round_trip(void **state)
{
    struct meao_db *db;
    struct meao_rl *rl;
    struct meao_rl_result r;
    char err[256];
    (void)state;
    assert_int_equal(meao_db_open(dbpath, 1000, MEAO_DB_MIGRATE, &db, err, sizeof err), MEAO_OK);
    assert_int_equal(meao_rl_open(path, 0, db, NOW_MS, &rl), MEAO_OK);
    assert_int_equal(admit_until_denied(rl, "u:1", &rest_default, NOW_MS), 60);
    assert_int_equal(admit_until_denied(rl, "ip:198.51.100.4", &one_per_min, NOW_MS), 1);
    /* 7/min leaves a TAT in fractional ms: stored rounded up */
    {
        const struct meao_rl_class seven = {"seven", {{7, 60000}}, 1};
        assert_int_equal(admit_until_denied(rl, "u:1", &seven, NOW_MS), 7);
    }
    assert_int_equal(meao_rl_save(rl, db, NOW_MS), MEAO_OK);
    assert_int_equal(scalar(db, "SELECT count(*) FROM rate_buckets"), 3);
    {
        char sql[200];
        snprintf(sql, sizeof sql, "SELECT tat0_ms FROM rate_buckets WHERE key_hash = %lld",
                 (long long)meao_rl_key_hash("rest", "u:1"));
        assert_int_equal(scalar(db, sql), NOW_MS + 60000);
        snprintf(sql, sizeof sql, "SELECT tat1_ms FROM rate_buckets WHERE key_hash = %lld",
                 (long long)meao_rl_key_hash("rest", "u:1"));
        assert_int_equal(scalar(db, sql), NOW_MS + 60 * 3600);
        snprintf(sql, sizeof sql, "SELECT tat0_ms FROM rate_buckets WHERE key_hash = %lld",
                 (long long)meao_rl_key_hash("seven", "u:1"));
        assert_int_equal(scalar(db, sql), NOW_MS + 60000); /* 59999.996 ms, up */
    }
    /* only changed buckets are written again */
    assert_int_equal(meao_rl_check(rl, "u:2", &one_per_min, NOW_MS + 500, &r), MEAO_OK);
    assert_int_equal(meao_rl_save(rl, db, NOW_MS + 500), MEAO_OK);
    assert_int_equal(
        scalar(db, "SELECT count(*) FROM rate_buckets WHERE updated_ms = 1800000000500"), 1);
    assert_int_equal(scalar(db, "SELECT count(*) FROM rate_buckets"), 4);
    meao_rl_close(rl);

    /* the table is lost (reboot, deleted): rebuilt and restored from SQLite */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(meao_rl_open(path, 0, db, NOW_MS + 1000, &rl), MEAO_OK);
    assert_int_equal(admit_until_denied(rl, "u:1", &rest_default, NOW_MS + 1000), 1);
    assert_int_equal(admit_until_denied(rl, "ip:198.51.100.4", &one_per_min, NOW_MS + 1000), 0);
    assert_int_equal(meao_rl_check(rl, "u:2", &one_per_min, NOW_MS + 1000, &r), MEAO_OK);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ms, 59500);
    meao_rl_close(rl);

    /* load merges into a live table and never loosens it */
    assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS + 1000, &rl), MEAO_OK);
    assert_int_equal(meao_rl_load(rl, db, NOW_MS + 1000), MEAO_OK);
    assert_int_equal(admit_until_denied(rl, "u:1", &rest_default, NOW_MS + 1000), 0);

    /* two hours on everything expired: rows are deleted */
    assert_int_equal(meao_rl_save(rl, db, NOW_MS + 2 * 3600 * 1000), MEAO_OK);
    assert_int_equal(scalar(db, "SELECT count(*) FROM rate_buckets"), 0);
    meao_rl_close(rl);
    meao_db_close(db);
}

static void save_due_once_per_interval(void **state)
{
    struct meao_rl *rl, *rl2;
    (void)state;
    assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &rl), MEAO_OK);
    assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &rl2), MEAO_OK);
    assert_true(meao_rl_save_due(rl, NOW_MS, 5000));
    assert_false(meao_rl_save_due(rl2, NOW_MS + 1, 5000));
    assert_false(meao_rl_save_due(rl, NOW_MS + 4999, 5000));
    assert_true(meao_rl_save_due(rl2, NOW_MS + 5000, 5000));
    assert_false(meao_rl_save_due(rl, NOW_MS + 5000, 5000));
    /* the clock stepped back a day: saving is not suspended for a day */
    assert_true(meao_rl_save_due(rl, NOW_MS - 86400000, 5000));
    meao_rl_close(rl);
    meao_rl_close(rl2);
}

static pid_t sleeper(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pause();
        _exit(0);
    }
    return pid;
}

static void open_connections_counted_and_reaped(void **state)
{
    struct meao_rl *rl;
    int64_t n;
    pid_t a, b;
    (void)state;
    assert_int_equal(meao_rl_open(path, 0, NULL, NOW_MS, &rl), MEAO_OK);
    a = sleeper();
    b = sleeper();
    assert_int_equal(meao_rl_conn_acquire(rl, "u:1", 2, getpid(), &n), MEAO_OK);
    assert_int_equal(n, 1);
    assert_int_equal(meao_rl_conn_acquire(rl, "u:1", 2, getpid(), &n), MEAO_OK); /* same pid */
    assert_int_equal(n, 1);
    assert_int_equal(meao_rl_conn_acquire(rl, "u:1", 2, a, &n), MEAO_OK);
    assert_int_equal(n, 2);
    assert_int_equal(meao_rl_conn_acquire(rl, "u:1", 2, b, &n), MEAO_E_RATE_LIMITED);
    assert_int_equal(n, 2);
    assert_int_equal(meao_rl_conn_acquire(rl, "u:2", 2, b, &n), MEAO_OK); /* other user */
    /* a crashes without releasing: its entry is reaped on the next acquire */
    kill(a, SIGKILL);
    waitpid(a, NULL, 0);
    assert_int_equal(meao_rl_conn_acquire(rl, "u:1", 2, b, &n), MEAO_OK);
    assert_int_equal(n, 2);
    meao_rl_conn_release(rl, "u:1", getpid());
    meao_rl_conn_release(rl, "u:1", getpid()); /* idempotent */
    assert_int_equal(meao_rl_conn_acquire(rl, "u:1", 2, getpid(), &n), MEAO_OK);
    assert_int_equal(n, 2);
    assert_int_equal(meao_rl_conn_acquire(rl, "u:1", 2, 0, &n), MEAO_E_INTERNAL);
    kill(b, SIGKILL);
    waitpid(b, NULL, 0);
    meao_rl_close(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gcra_burst_of_l_then_denied),
        cmocka_unit_test(gcra_remaining_and_reset_after_partial_use),
        cmocka_unit_test(gcra_uneven_interval_keeps_exact_burst),
        cmocka_unit_test(gcra_retry_after_is_never_early),
        cmocka_unit_test(gcra_future_tat_counts_as_full),
        cmocka_unit_test(class_hour_limit_binds_and_denial_advances_nothing),
        cmocka_unit_test(class_from_config_and_validation),
        cmocka_unit_test(headers_both_families),
        cmocka_unit_test(key_hash_separates_classes),
        cmocka_unit_test_setup_teardown(table_limits_and_keeps_keys_apart, setup, teardown),
        cmocka_unit_test_setup_teardown(processes_never_admit_more_than_the_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(full_probe_window_evicts_closest_to_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(dead_lock_holder_does_not_deadlock, setup, teardown),
        cmocka_unit_test_setup_teardown(stuck_lock_holder_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_or_foreign_files_are_rebuilt, setup, teardown),
        cmocka_unit_test_setup_teardown(replaced_table_is_followed, setup, teardown),
        cmocka_unit_test_setup_teardown(save_and_restore_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(save_due_once_per_interval, setup, teardown),
        cmocka_unit_test_setup_teardown(open_connections_counted_and_reaped, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
