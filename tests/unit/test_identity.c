/* Tokens, users, devices, refresh/revoke and pairing flows against a real
 * SQLite database with a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth/pairing.h"
#include "auth/token.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/app.h"
#include "store/pairing.h"

#define T0 1796000000000LL

struct fx {
    struct meao_db *db;
    struct meao_secrets keys;
    struct meao_token_ttl ttl;
    int64_t now;
    int64_t owner, user;
    char dir[64], path[128];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    unsigned char master[MEAO_KEY_BYTES] = {1, 2, 3};
    char err[256];
    snprintf(f->dir, sizeof f->dir, "/tmp/meao-ident-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    assert_int_equal(meao_db_open(f->path, 5000, MEAO_DB_MIGRATE, &f->db, err, sizeof err),
                     MEAO_OK);
    meao_secrets_derive(master, &f->keys);
    f->ttl.access_ms = 86400000LL;
    f->ttl.refresh_ms = 30 * 86400000LL;
    f->now = T0;
    assert_int_equal(meao_user_create(f->db, "alice", MEAO_ROLE_OWNER, f->now, &f->owner), MEAO_OK);
    assert_int_equal(meao_user_create(f->db, "bob", MEAO_ROLE_USER, f->now, &f->user), MEAO_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    meao_db_close(f->db);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void token_format_and_checksum(void **state)
{
    char t[MEAO_TOKEN_LEN + 1], u[MEAO_TOKEN_LEN + 1], hdr[200];
    (void)state;
    meao_token_mint(MEAO_TOKEN_ACCESS, t);
    assert_int_equal(strlen(t), MEAO_TOKEN_LEN);
    assert_memory_equal(t, "meao_at_", 8);
    assert_true(meao_token_wellformed(t, MEAO_TOKEN_ACCESS));
    assert_false(meao_token_wellformed(t, MEAO_TOKEN_REFRESH));
    memcpy(u, t, sizeof u);
    u[20] = u[20] == 'a' ? 'b' : 'a'; /* one typo: checksum catches it */
    assert_false(meao_token_wellformed(u, MEAO_TOKEN_ACCESS));
    memcpy(u, t, sizeof u);
    u[10] = '\'';
    assert_false(meao_token_wellformed(u, MEAO_TOKEN_ACCESS));
    assert_false(meao_token_wellformed("meao_at_", MEAO_TOKEN_ACCESS));
    assert_false(meao_token_wellformed(NULL, MEAO_TOKEN_ACCESS));
    meao_token_mint(MEAO_TOKEN_ACCESS, u);
    assert_string_not_equal(t, u);
    snprintf(hdr, sizeof hdr, "Bearer %s", t);
    assert_true(meao_token_from_authorization(hdr, u));
    assert_string_equal(t, u);
    snprintf(hdr, sizeof hdr, "Basic %s", t);
    assert_false(meao_token_from_authorization(hdr, u));
    snprintf(hdr, sizeof hdr, "Bearer %sX", t);
    assert_false(meao_token_from_authorization(hdr, u));
}

static void pairing_codes_are_uniform_and_normalised(void **state)
{
    char c[MEAO_PAIR_CODE_LEN + 1];
    int counts[128] = {0};
    (void)state;
    for (int i = 0; i < 3000; i++) {
        meao_pair_code_new(c);
        assert_int_equal(strlen(c), 6);
        for (int j = 0; j < 6; j++) {
            assert_non_null(strchr(meao_pair_alphabet, c[j]));
            counts[(int)c[j]]++;
        }
    }
    /* 18000 draws over 30 symbols: every symbol shows up, none is far off 600 */
    for (const char *a = meao_pair_alphabet; *a; a++)
        assert_true(counts[(int)*a] > 450 && counts[(int)*a] < 750);
    assert_true(meao_pair_code_normalise("abc-d2 3", c));
    assert_string_equal(c, "ABCD23");
    assert_false(meao_pair_code_normalise("ABCD2", c));   /* short */
    assert_false(meao_pair_code_normalise("ABCD234", c)); /* long */
    assert_false(meao_pair_code_normalise("ABCDE0", c));  /* 0 is a look-alike */
    assert_false(meao_pair_code_normalise("ABCDEI", c));  /* I too */
    assert_false(meao_pair_code_normalise("ABC\xd0\x92"
                                          "D2",
                                          c)); /* Cyrillic В */
    assert_false(meao_pair_code_normalise("AB'; --", c));
    assert_false(meao_pair_code_normalise(NULL, c));
}

static void enroll_authenticate_and_revoke(void **state)
{
    struct fx *f = *state;
    struct meao_token_pair p;
    struct meao_principal who = {0};
    int64_t n = 0;
    assert_int_equal(meao_device_enroll(f->db, &f->keys, f->owner, "laptop", f->now, &f->ttl, &p),
                     MEAO_OK);
    assert_true(meao_token_wellformed(p.access, MEAO_TOKEN_ACCESS));
    assert_true(meao_token_wellformed(p.refresh, MEAO_TOKEN_REFRESH));
    assert_memory_equal(p.device_id, "dev_", 4);
    assert_int_equal(meao_token_authenticate(f->db, &f->keys, p.access, f->now, &who), MEAO_OK);
    assert_int_equal(who.user_id, f->owner);
    assert_int_equal(who.role, MEAO_ROLE_OWNER);
    /* a refresh token is not an access token */
    assert_int_equal(meao_token_authenticate(f->db, &f->keys, p.refresh, f->now, &who),
                     MEAO_E_AUTH_INVALID_TOKEN);
    /* expiry */
    assert_int_equal(
        meao_token_authenticate(f->db, &f->keys, p.access, f->now + f->ttl.access_ms, &who),
        MEAO_E_AUTH_INVALID_TOKEN);
    /* revoke by token */
    assert_int_equal(meao_revoke_token(f->db, &f->keys, NULL, p.access, f->now, &n), MEAO_OK);
    assert_int_equal(n, 1);
    assert_int_equal(meao_token_authenticate(f->db, &f->keys, p.access, f->now, &who),
                     MEAO_E_AUTH_INVALID_TOKEN);
}

static void users_cannot_revoke_each_other(void **state)
{
    struct fx *f = *state;
    struct meao_token_pair a, b;
    struct meao_principal bob = {0}, alice = {0};
    int64_t n;
    meao_device_enroll(f->db, &f->keys, f->owner, "a", f->now, &f->ttl, &a);
    meao_device_enroll(f->db, &f->keys, f->user, "b", f->now, &f->ttl, &b);
    meao_token_authenticate(f->db, &f->keys, b.access, f->now, &bob);
    meao_token_authenticate(f->db, &f->keys, a.access, f->now, &alice);
    assert_int_equal(meao_revoke_token(f->db, &f->keys, &bob, a.access, f->now, &n),
                     MEAO_E_NOT_FOUND);
    assert_int_equal(meao_revoke_device(f->db, &bob, a.device_id, f->now, &n), MEAO_E_NOT_FOUND);
    assert_int_equal(meao_token_authenticate(f->db, &f->keys, a.access, f->now, &alice), MEAO_OK);
    /* the owner may revoke anyone's device */
    assert_int_equal(meao_revoke_device(f->db, &alice, b.device_id, f->now, &n), MEAO_OK);
    assert_int_equal(n, 2);
    assert_int_equal(meao_token_authenticate(f->db, &f->keys, b.access, f->now, &bob),
                     MEAO_E_AUTH_INVALID_TOKEN);
}

static void refresh_rotates_and_reuse_revokes_device(void **state)
{
    struct fx *f = *state;
    struct meao_token_pair p1, p2, p3;
    struct meao_principal who;
    int64_t uid = 0;
    meao_device_enroll(f->db, &f->keys, f->user, "phone", f->now, &f->ttl, &p1);
    assert_int_equal(
        meao_token_refresh(f->db, &f->keys, p1.refresh, f->now + 1000, &f->ttl, &p2, &uid),
        MEAO_OK);
    assert_int_equal(uid, f->user);
    assert_string_equal(p1.device_id, p2.device_id);
    assert_string_not_equal(p1.refresh, p2.refresh);
    /* old access token died with the rotation, the new one works */
    assert_int_equal(meao_token_authenticate(f->db, &f->keys, p1.access, f->now + 2000, &who),
                     MEAO_E_AUTH_INVALID_TOKEN);
    assert_int_equal(meao_token_authenticate(f->db, &f->keys, p2.access, f->now + 2000, &who),
                     MEAO_OK);
    /* reuse of the rotated refresh token: theft; the whole device dies */
    assert_int_equal(
        meao_token_refresh(f->db, &f->keys, p1.refresh, f->now + 3000, &f->ttl, &p3, NULL),
        MEAO_E_AUTH_INVALID_TOKEN);
    assert_int_equal(meao_token_authenticate(f->db, &f->keys, p2.access, f->now + 4000, &who),
                     MEAO_E_AUTH_INVALID_TOKEN);
    assert_int_equal(
        meao_token_refresh(f->db, &f->keys, p2.refresh, f->now + 5000, &f->ttl, &p3, NULL),
        MEAO_E_AUTH_INVALID_TOKEN);
}

static void owner_initiated_pairing(void **state)
{
    struct fx *f = *state;
    struct meao_pair_created pc;
    struct meao_token_pair p;
    struct meao_principal who;
    int64_t uid = 0;
    assert_int_equal(meao_pair_create_for_owner(f->db, &f->keys, f->owner, "tablet", f->now, &pc),
                     MEAO_OK);
    assert_int_equal(strlen(pc.code), 6);
    assert_int_equal(
        meao_pair_complete_code(f->db, &f->keys, pc.code, NULL, f->now + 1000, &f->ttl, &p, &uid),
        MEAO_OK);
    assert_int_equal(uid, f->owner);
    assert_int_equal(meao_token_authenticate(f->db, &f->keys, p.access, f->now + 2000, &who),
                     MEAO_OK);
    assert_int_equal(who.user_id, f->owner);
    /* single use */
    assert_int_equal(
        meao_pair_complete_code(f->db, &f->keys, pc.code, NULL, f->now + 3000, &f->ttl, &p, NULL),
        MEAO_E_PAIR_INVALID_CODE);
}

static void pairing_code_expires(void **state)
{
    struct fx *f = *state;
    struct meao_pair_created pc;
    struct meao_token_pair p;
    meao_pair_create_for_owner(f->db, &f->keys, f->owner, "tablet", f->now, &pc);
    assert_int_equal(meao_pair_complete_code(f->db, &f->keys, pc.code, NULL,
                                             f->now + MEAO_PAIR_TTL_MS, &f->ttl, &p, NULL),
                     MEAO_E_PAIR_INVALID_CODE);
}

static void five_wrong_guesses_kill_every_open_code(void **state)
{
    struct fx *f = *state;
    struct meao_pair_created a, b;
    struct meao_token_pair p;
    char wrong[7] = "222222";
    meao_pair_create_for_owner(f->db, &f->keys, f->owner, "one", f->now, &a);
    meao_pair_create_for_owner(f->db, &f->keys, f->owner, "two", f->now, &b);
    if (strcmp(wrong, a.code) == 0 || strcmp(wrong, b.code) == 0)
        strcpy(wrong, "333333");
    for (int i = 0; i < MEAO_PAIR_MAX_FAILURES; i++)
        assert_int_equal(
            meao_pair_complete_code(f->db, &f->keys, wrong, NULL, f->now + i, &f->ttl, &p, NULL),
            MEAO_E_PAIR_INVALID_CODE);
    /* the right code, sixth, is dead too */
    assert_int_equal(
        meao_pair_complete_code(f->db, &f->keys, a.code, NULL, f->now + 10, &f->ttl, &p, NULL),
        MEAO_E_PAIR_INVALID_CODE);
    assert_int_equal(
        meao_pair_complete_code(f->db, &f->keys, b.code, NULL, f->now + 10, &f->ttl, &p, NULL),
        MEAO_E_PAIR_INVALID_CODE);
}

static void device_initiated_pairing(void **state)
{
    struct fx *f = *state;
    struct meao_pair_created pc;
    struct meao_token_pair p;
    struct meao_principal who;
    int64_t t = f->now, uid = 0;
    char name[MEAO_NAME_MAX + 1];
    assert_int_equal(meao_pair_request(f->db, &f->keys, "browser", "10.0.0.1", t, &pc), MEAO_OK);
    assert_true(meao_token_wellformed(pc.device_code, MEAO_TOKEN_DEVICE));
    assert_int_equal(meao_pair_poll(f->db, &f->keys, pc.device_code, t += 100, &f->ttl, &p, NULL),
                     MEAO_E_PAIR_PENDING);
    /* faster than the interval */
    assert_int_equal(meao_pair_poll(f->db, &f->keys, pc.device_code, t += 1000, &f->ttl, &p, NULL),
                     MEAO_E_PAIR_SLOW_DOWN);
    assert_int_equal(meao_pair_decide(f->db, &f->keys, f->owner, pc.code, true, t += 100, name),
                     MEAO_OK);
    assert_string_equal(name, "browser");
    assert_int_equal(meao_pair_poll(f->db, &f->keys, pc.device_code, t += 6000, &f->ttl, &p, &uid),
                     MEAO_OK);
    assert_int_equal(uid, f->owner);
    assert_int_equal(meao_token_authenticate(f->db, &f->keys, p.access, t, &who), MEAO_OK);
    /* exactly once */
    assert_int_equal(meao_pair_poll(f->db, &f->keys, pc.device_code, t += 6000, &f->ttl, &p, NULL),
                     MEAO_E_PAIR_EXPIRED);
}

static void device_initiated_denied_and_expired(void **state)
{
    struct fx *f = *state;
    struct meao_pair_created a, b;
    struct meao_token_pair p;
    int64_t t = f->now;
    meao_pair_request(f->db, &f->keys, "x", NULL, t, &a);
    meao_pair_request(f->db, &f->keys, "y", NULL, t, &b);
    assert_int_equal(meao_pair_decide(f->db, &f->keys, f->owner, a.code, false, t + 1, NULL),
                     MEAO_OK);
    assert_int_equal(meao_pair_poll(f->db, &f->keys, a.device_code, t + 10, &f->ttl, &p, NULL),
                     MEAO_E_PAIR_DENIED);
    assert_int_equal(
        meao_pair_poll(f->db, &f->keys, b.device_code, t + MEAO_PAIR_TTL_MS, &f->ttl, &p, NULL),
        MEAO_E_PAIR_EXPIRED);
    /* approving a decided or expired code names no open code */
    assert_int_equal(meao_pair_decide(f->db, &f->keys, f->owner, a.code, true, t + 20, NULL),
                     MEAO_E_PAIR_INVALID_CODE);
}

static void concurrent_completions_issue_one_pair(void **state)
{
    struct fx *f = *state;
    struct meao_pair_created pc;
    pid_t kids[6];
    int ok = 0;
    meao_pair_create_for_owner(f->db, &f->keys, f->owner, "race", f->now, &pc);
    for (int i = 0; i < 6; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            struct meao_db *db;
            struct meao_token_pair p;
            char err[256];
            if (meao_db_open(f->path, 5000, 0, &db, err, sizeof err) != MEAO_OK)
                _exit(2);
            _exit(meao_pair_complete_code(db, &f->keys, pc.code, NULL, f->now + 1, &f->ttl, &p,
                                          NULL) == MEAO_OK
                      ? 0
                      : 1);
        }
    }
    for (int i = 0; i < 6; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        assert_true(WIFEXITED(st));
        assert_int_not_equal(WEXITSTATUS(st), 2);
        ok += WEXITSTATUS(st) == 0;
    }
    assert_int_equal(ok, 1);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(token_format_and_checksum),
        cmocka_unit_test(pairing_codes_are_uniform_and_normalised),
        T(enroll_authenticate_and_revoke),
        T(users_cannot_revoke_each_other),
        T(refresh_rotates_and_reuse_revokes_device),
        T(owner_initiated_pairing),
        T(pairing_code_expires),
        T(five_wrong_guesses_kill_every_open_code),
        T(device_initiated_pairing),
        T(device_initiated_denied_and_expired),
        T(concurrent_completions_issue_one_pair),
    };
    meao_lib_init();
    meao_log_init("test", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
