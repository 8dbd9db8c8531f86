/* The orchestrator's approvals registry: approve, deny, timeout on a fake
 * monotonic clock, late / unknown / foreign / duplicate answers, the ten-
 * minute tombstone, disconnect denying a whole turn at once, trustSession,
 * list_approvals, and a waiter blocked on another thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "http/app.h"
#include "orchestrator/approvals.h"

#define TIMEOUT_MS 30000

/* A fake clock that another thread may read while the test moves it (the
 * core fake clock is single-threaded). */
struct atomic_clock {
    struct meao_clock clock;
    _Atomic int64_t now_ms, mono_ms;
};

static int64_t atomic_now(void *ctx)
{
    return atomic_load(&((struct atomic_clock *)ctx)->now_ms);
}

static int64_t atomic_mono(void *ctx)
{
    return atomic_load(&((struct atomic_clock *)ctx)->mono_ms);
}

static void clock_advance(struct atomic_clock *c, int64_t ms)
{
    atomic_fetch_add(&c->now_ms, ms);
    atomic_fetch_add(&c->mono_ms, ms);
}

struct fixture {
    struct atomic_clock fc;
    struct meao_approvals *r;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->fc.clock.now_ms = atomic_now;
    f->fc.clock.mono_ms = atomic_mono;
    f->fc.clock.ctx = &f->fc;
    atomic_init(&f->fc.now_ms, 1700000000000LL);
    atomic_init(&f->fc.mono_ms, 1000);
    f->r = meao_approvals_new(&f->fc.clock, TIMEOUT_MS);
    assert_non_null(f->r);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    meao_approvals_free(f->r);
    free(f);
    return 0;
}

static struct meao_approval *open_one(struct fixture *f, const void *owner, const char *user,
                                      char id[MEAO_APPROVAL_ID_LEN + 1])
{
    json_t *req = json_pack("{s:s}", "tool", "bash");
    struct meao_approval_spec spec = {
        .owner = owner,
        .user_id = user,
        .correlation_id = "turn-1",
        .session_id = "s_1",
        .tool_call_id = "call_1",
        .tool_name = "bash",
        .args_summary = "$ ls",
        .request = req,
    };
    struct meao_approval *a = NULL;
    assert_int_equal(meao_approvals_open(f->r, &spec, &a, id, NULL), MEAO_OK);
    assert_non_null(a);
    json_decref(req);
    return a;
}

static int64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ids_are_apr_and_20_base62(void **state)
{
    char a[MEAO_APPROVAL_ID_LEN + 1], b[MEAO_APPROVAL_ID_LEN + 1];
    (void)state;
    meao_approvals_mint_id(a);
    meao_approvals_mint_id(b);
    assert_int_equal(strlen(a), 24);
    assert_memory_equal(a, "apr_", 4);
    for (int i = 4; i < 24; i++)
        assert_non_null(
            strchr("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", a[i]));
    assert_string_not_equal(a, b);
}

static void approve_then_wait(void **state)
{
    struct fixture *f = *state;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *a = open_one(f, f, "u1", id);
    struct meao_approval_decision d;

    assert_int_equal(meao_approvals_pending_count(f->r), 1);
    assert_int_equal(meao_approvals_answer(f->r, id, "u1", true, false), MEAO_OK);
    meao_approvals_wait(f->r, a, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_APPROVED);
    assert_true(d.approved);
    assert_false(d.trust_session);
    assert_int_equal(meao_approvals_pending_count(f->r), 0);
    /* a decided id is remembered: answering again is "expired", not "unknown" */
    assert_int_equal(meao_approvals_answer(f->r, id, "u1", true, false), MEAO_E_CONFLICT);
}

static void deny(void **state)
{
    struct fixture *f = *state;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *a = open_one(f, f, "u1", id);
    struct meao_approval_decision d;

    assert_int_equal(meao_approvals_answer(f->r, id, "u1", false, true), MEAO_OK);
    meao_approvals_wait(f->r, a, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_DENIED);
    assert_false(d.approved);
    assert_false(d.trust_session); /* trust comes only with an approval */
}

static void trust_session_is_reported(void **state)
{
    struct fixture *f = *state;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *a = open_one(f, f, "u1", id);
    struct meao_approval_decision d;

    assert_int_equal(meao_approvals_answer(f->r, id, "u1", true, true), MEAO_OK);
    meao_approvals_wait(f->r, a, &d);
    assert_true(d.approved);
    assert_true(d.trust_session);
}

static void timeout_on_the_fake_clock(void **state)
{
    struct fixture *f = *state;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *a = open_one(f, f, "u1", id);
    struct meao_approval_decision d;

    clock_advance(&f->fc, TIMEOUT_MS - 1);
    meao_approvals_tick(f->r);
    assert_int_equal(meao_approvals_pending_count(f->r), 1);
    clock_advance(&f->fc, 1);
    /* the waiter finds its deadline passed at once: no real time needed */
    meao_approvals_wait(f->r, a, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_TIMEOUT);
    assert_false(d.approved);
    assert_int_equal(meao_approvals_pending_count(f->r), 0);
}

static void late_answer_is_expired(void **state)
{
    struct fixture *f = *state;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *a = open_one(f, f, "u1", id);
    struct meao_approval_decision d;

    clock_advance(&f->fc, TIMEOUT_MS);
    /* nobody ticked yet: the answer itself notices the deadline */
    assert_int_equal(meao_approvals_answer(f->r, id, "u1", true, false), MEAO_E_CONFLICT);
    meao_approvals_wait(f->r, a, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_TIMEOUT);
    assert_false(d.approved);
}

static void unknown_is_not_found(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(meao_approvals_answer(f->r, "apr_00000000000000000000", "u1", true, false),
                     MEAO_E_NOT_FOUND);
    assert_int_equal(meao_approvals_answer(f->r, "", "u1", true, false), MEAO_E_NOT_FOUND);
}

static void foreign_user_is_forbidden_and_changes_nothing(void **state)
{
    struct fixture *f = *state;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *a = open_one(f, f, "u1", id);
    struct meao_approval_decision d;

    assert_int_equal(meao_approvals_answer(f->r, id, "u2", true, false), MEAO_E_FORBIDDEN);
    assert_int_equal(meao_approvals_answer(f->r, id, "u1x", false, false), MEAO_E_FORBIDDEN);
    assert_int_equal(meao_approvals_pending_count(f->r), 1);
    /* still the owner's to answer */
    assert_int_equal(meao_approvals_answer(f->r, id, "u1", false, false), MEAO_OK);
    meao_approvals_wait(f->r, a, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_DENIED);
    /* and a foreign user learns nothing about the state afterwards either */
    assert_int_equal(meao_approvals_answer(f->r, id, "u2", true, false), MEAO_E_FORBIDDEN);
}

static void duplicate_answer_is_expired(void **state)
{
    struct fixture *f = *state;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *a = open_one(f, f, "u1", id);
    struct meao_approval_decision d;

    assert_int_equal(meao_approvals_answer(f->r, id, "u1", true, false), MEAO_OK);
    assert_int_equal(meao_approvals_answer(f->r, id, "u1", false, false), MEAO_E_CONFLICT);
    meao_approvals_wait(f->r, a, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_APPROVED); /* the second answer changed nothing */
    assert_true(d.approved);
}

static void tombstone_lasts_ten_minutes(void **state)
{
    struct fixture *f = *state;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *a = open_one(f, f, "u1", id);
    struct meao_approval_decision d;

    assert_int_equal(meao_approvals_answer(f->r, id, "u1", true, false), MEAO_OK);
    meao_approvals_wait(f->r, a, &d);
    clock_advance(&f->fc, MEAO_APPROVAL_TOMBSTONE_MS - 1);
    meao_approvals_tick(f->r);
    assert_int_equal(meao_approvals_known_count(f->r), 1);
    assert_int_equal(meao_approvals_answer(f->r, id, "u1", true, false), MEAO_E_CONFLICT);
    clock_advance(&f->fc, 1);
    meao_approvals_tick(f->r);
    assert_int_equal(meao_approvals_known_count(f->r), 0);
    assert_int_equal(meao_approvals_answer(f->r, id, "u1", true, false), MEAO_E_NOT_FOUND);
}

static void disconnect_denies_all_of_the_turn_at_once(void **state)
{
    struct fixture *f = *state;
    int turn_a = 0, turn_b = 0;
    char a1[MEAO_APPROVAL_ID_LEN + 1], a2[MEAO_APPROVAL_ID_LEN + 1], b1[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *x1 = open_one(f, &turn_a, "u1", a1);
    struct meao_approval *x2 = open_one(f, &turn_a, "u1", a2);
    struct meao_approval *y1 = open_one(f, &turn_b, "u1", b1);
    struct meao_approval_decision d;

    assert_int_equal(meao_approvals_deny_owner(f->r, &turn_a, MEAO_APPROVAL_DISCONNECT), 2);
    assert_int_equal(meao_approvals_pending_count(f->r), 1);
    meao_approvals_wait(f->r, x1, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_DISCONNECT);
    assert_false(d.approved);
    meao_approvals_wait(f->r, x2, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_DISCONNECT);
    /* an answer after the drop is late */
    assert_int_equal(meao_approvals_answer(f->r, a1, "u1", true, false), MEAO_E_CONFLICT);
    /* the other turn is untouched */
    assert_int_equal(meao_approvals_answer(f->r, b1, "u1", true, false), MEAO_OK);
    meao_approvals_wait(f->r, y1, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_APPROVED);
    /* nothing left to deny */
    assert_int_equal(meao_approvals_deny_owner(f->r, &turn_a, MEAO_APPROVAL_DISCONNECT), 0);
}

static void deny_all_for_shutdown(void **state)
{
    struct fixture *f = *state;
    int t1 = 0, t2 = 0;
    char i1[MEAO_APPROVAL_ID_LEN + 1], i2[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *x1 = open_one(f, &t1, "u1", i1);
    struct meao_approval *x2 = open_one(f, &t2, "u2", i2);
    struct meao_approval_decision d;

    assert_int_equal(meao_approvals_deny_all(f->r, MEAO_APPROVAL_DISCONNECT), 2);
    meao_approvals_wait(f->r, x1, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_DISCONNECT);
    meao_approvals_wait(f->r, x2, &d);
    assert_int_equal(d.reason, MEAO_APPROVAL_DISCONNECT);
}

static void list_shows_only_the_users_pending(void **state)
{
    struct fixture *f = *state;
    char i1[MEAO_APPROVAL_ID_LEN + 1], i2[MEAO_APPROVAL_ID_LEN + 1], i3[MEAO_APPROVAL_ID_LEN + 1];
    struct meao_approval *x1 = open_one(f, f, "u1", i1);
    struct meao_approval *x2 = open_one(f, f, "u1", i2);
    struct meao_approval *x3 = open_one(f, f, "u2", i3);
    struct meao_approval_decision d;
    json_t *list, *item;

    assert_int_equal(meao_approvals_answer(f->r, i2, "u1", true, false), MEAO_OK);
    list = meao_approvals_list(f->r, "u1");
    assert_int_equal(json_array_size(list), 1);
    item = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(item, "approvalId")), i1);
    assert_string_equal(json_string_value(json_object_get(item, "correlationId")), "turn-1");
    assert_string_equal(json_string_value(json_object_get(item, "sessionId")), "s_1");
    assert_string_equal(json_string_value(json_object_get(item, "toolCallId")), "call_1");
    assert_string_equal(json_string_value(json_object_get(item, "toolName")), "bash");
    assert_string_equal(json_string_value(json_object_get(item, "argsSummary")), "$ ls");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(item, "request"), "tool")), "bash");
    /* created at 1700000000000 ms + 30 s */
    assert_string_equal(json_string_value(json_object_get(item, "expiresAt")),
                        "2023-11-14T22:13:50.000Z");
    json_decref(list);
    list = meao_approvals_list(f->r, "nobody");
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    /* an expired one is no longer listed */
    clock_advance(&f->fc, TIMEOUT_MS);
    list = meao_approvals_list(f->r, "u1");
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    meao_approvals_wait(f->r, x1, &d);
    meao_approvals_wait(f->r, x2, &d);
    meao_approvals_wait(f->r, x3, &d);
}

struct waiter {
    struct meao_approvals *r;
    struct meao_approval *a;
    struct meao_approval_decision d;
    int64_t returned_ms;
};

static void *wait_thread(void *arg)
{
    struct waiter *w = arg;
    meao_approvals_wait(w->r, w->a, &w->d);
    w->returned_ms = real_ms();
    return NULL;
}

static void blocked_waiter_wakes_on_answer(void **state)
{
    struct fixture *f = *state;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    struct waiter w = {.r = f->r};
    pthread_t th;
    struct timespec ms50 = {0, 50000000L};
    int64_t answered;

    w.a = open_one(f, f, "u1", id);
    assert_int_equal(pthread_create(&th, NULL, wait_thread, &w), 0);
    nanosleep(&ms50, NULL);
    assert_int_equal(w.returned_ms, 0);
    answered = real_ms();
    assert_int_equal(meao_approvals_answer(f->r, id, "u1", true, false), MEAO_OK);
    pthread_join(th, NULL);
    assert_int_equal(w.d.reason, MEAO_APPROVAL_APPROVED);
    assert_true(w.returned_ms - answered < 100); /* woken, not polled */
}

static void blocked_waiter_times_out_when_the_clock_moves(void **state)
{
    struct fixture *f = *state;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    struct waiter w = {.r = f->r};
    pthread_t th;
    struct timespec ms50 = {0, 50000000L};

    w.a = open_one(f, f, "u1", id);
    assert_int_equal(pthread_create(&th, NULL, wait_thread, &w), 0);
    nanosleep(&ms50, NULL);
    clock_advance(&f->fc, TIMEOUT_MS);
    meao_approvals_tick(f->r);
    pthread_join(th, NULL);
    assert_int_equal(w.d.reason, MEAO_APPROVAL_TIMEOUT);
}

static void real_clock_short_timeout(void **state)
{
    struct meao_approvals *r = meao_approvals_new(meao_clock_system(), 100);
    struct meao_approval_spec spec = {.owner = state, .user_id = "u1"};
    struct meao_approval *a;
    struct meao_approval_decision d;
    char id[MEAO_APPROVAL_ID_LEN + 1];
    int64_t t0 = real_ms(), took;

    assert_int_equal(meao_approvals_open(r, &spec, &a, id, NULL), MEAO_OK);
    meao_approvals_wait(r, a, &d);
    took = real_ms() - t0;
    assert_int_equal(d.reason, MEAO_APPROVAL_TIMEOUT);
    assert_true(took >= 99 && took < 600);
    meao_approvals_free(r);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ids_are_apr_and_20_base62),
        T(approve_then_wait),
        T(deny),
        T(trust_session_is_reported),
        T(timeout_on_the_fake_clock),
        T(late_answer_is_expired),
        T(unknown_is_not_found),
        T(foreign_user_is_forbidden_and_changes_nothing),
        T(duplicate_answer_is_expired),
        T(tombstone_lasts_ten_minutes),
        T(disconnect_denies_all_of_the_turn_at_once),
        T(deny_all_for_shutdown),
        T(list_shows_only_the_users_pending),
        T(blocked_waiter_wakes_on_answer),
        T(blocked_waiter_times_out_when_the_clock_moves),
        cmocka_unit_test(real_clock_short_timeout),
    };
#undef T
    meao_lib_init();
    meao_log_init("test", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
