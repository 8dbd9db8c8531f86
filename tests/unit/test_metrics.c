/* GET /metrics building blocks: address lists (metrics_allow) and the shared
 * counter block, which forked workers add to together. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "core/metrics.h"
#include "core/netmatch.h"

static void net_list_validates(void **state)
{
    char why[128];
    (void)state;
    assert_true(meao_net_list_valid("", why, sizeof why));
    assert_true(meao_net_list_valid("127.0.0.1 ::1", why, sizeof why));
    assert_true(meao_net_list_valid("10.0.0.0/8,fd00::/8 , 192.0.2.7/32", why, sizeof why));
    assert_false(meao_net_list_valid("localhost", why, sizeof why));
    assert_non_null(strstr(why, "localhost"));
    assert_false(meao_net_list_valid("10.0.0.0/33", why, sizeof why));
    assert_false(meao_net_list_valid("::1/129", why, sizeof why));
    assert_false(meao_net_list_valid("10.0.0.1/", why, sizeof why));
    assert_false(meao_net_list_valid("10.0.0.1/-1", why, sizeof why));
    assert_false(meao_net_list_valid("1.2.3.4 x", why, sizeof why));
}

static void net_list_matches(void **state)
{
    (void)state;
    assert_true(meao_net_list_match("127.0.0.1 ::1", "127.0.0.1"));
    assert_true(meao_net_list_match("127.0.0.1 ::1", "::1"));
    assert_true(meao_net_list_match("127.0.0.1", "::ffff:127.0.0.1")); /* mapped IPv4 */
    assert_false(meao_net_list_match("127.0.0.1 ::1", "127.0.0.2"));
    assert_true(meao_net_list_match("10.0.0.0/8", "10.255.1.2"));
    assert_false(meao_net_list_match("10.0.0.0/8", "11.0.0.1"));
    assert_true(meao_net_list_match("192.0.2.0/25", "192.0.2.127"));
    assert_false(meao_net_list_match("192.0.2.0/25", "192.0.2.128"));
    assert_true(meao_net_list_match("fd00::/8", "fdab::1"));
    assert_false(meao_net_list_match("fd00::/8", "fe80::1"));
    assert_true(meao_net_list_match("0.0.0.0/0", "203.0.113.9"));
    assert_false(meao_net_list_match("", "127.0.0.1"));
    assert_false(meao_net_list_match("127.0.0.1", "not-an-ip"));
    assert_false(meao_net_list_match("127.0.0.1", NULL));
}

static void config_rejects_a_bad_allow_list(void **state)
{
    struct meao_config cfg;
    char err[256];
    (void)state;
    meao_config_defaults(&cfg);
    assert_string_equal(cfg.metrics_allow, "127.0.0.1 ::1");
    assert_int_equal(meao_config_set(&cfg, "metrics_allow", "10.0.0.0/8 ::1", err, sizeof err), 0);
    assert_int_equal(meao_config_set(&cfg, "metrics_allow", "10.0.0.0/99", err, sizeof err), -1);
    assert_non_null(strstr(err, "metrics_allow"));
    assert_string_equal(cfg.metrics_allow, "10.0.0.0/8 ::1");
    meao_config_free(&cfg);
}

/* Must run last in this file: the block stays attached to the process. */
static void forked_workers_share_the_counters(void **state)
{
    const struct meao_metrics_block *m;
    enum { ROUTES = 4, CHILDREN = 3, EACH = 1000 };
    (void)state;
    meao_metrics_request(0, 200, 10); /* not attached yet: a no-op */
    assert_null(meao_metrics_block());
    assert_int_equal(meao_metrics_init(ROUTES + 1, 1234), 0);
    m = meao_metrics_block();
    assert_non_null(m);
    for (int c = 0; c < CHILDREN; c++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (int i = 0; i < EACH; i++) {
                meao_metrics_request(1, 201, 700);
                meao_metrics_request(99, 404, 40000000); /* unknown route → unmatched slot */
            }
            meao_metrics_rate_limited(1);
            meao_metrics_orch_error(MEAO_E_TIMEOUT);
            meao_metrics_orch_error(MEAO_E_DB); /* not an orchestrator failure */
            _exit(0);
        }
    }
    for (int c = 0; c < CHILDREN; c++) {
        int status;
        assert_true(wait(&status) > 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    assert_int_equal(m->started_ms, 1234);
    assert_int_equal(m->route[1].status[1], CHILDREN * EACH); /* 201 is slot 1 */
    assert_int_equal(m->route[1].count, CHILDREN * EACH);
    assert_int_equal(m->route[1].bucket[1], CHILDREN * EACH); /* 700 us: le 0.001 */
    assert_int_equal(m->route[1].sum_us, (uint64_t)CHILDREN * EACH * 700);
    assert_int_equal(m->route[ROUTES].status[6], CHILDREN * EACH); /* 404 is slot 6 */
    for (int b = 0; b < MEAO_METRICS_NBUCKETS; b++) /* 40 s: only in +Inf (= count) */
        assert_int_equal(m->route[ROUTES].bucket[b], 0);
    assert_int_equal(m->rate_limited[1], CHILDREN);
    assert_int_equal(m->orch_errors[MEAO_METRICS_ORCH_TIMEOUT], CHILDREN);
    assert_int_equal(m->orch_errors[MEAO_METRICS_ORCH_UNAVAILABLE], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(net_list_validates),
        cmocka_unit_test(net_list_matches),
        cmocka_unit_test(config_rejects_a_bad_allow_list),
        cmocka_unit_test(forked_workers_share_the_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
