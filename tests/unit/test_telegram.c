/* Telegram: Update classification, the 4096-character split, button data,
 * the inbox (duplicates, order, retries), identities and stranger pairing,
 * the webhook secret's keyed hash, and token redaction in the Bot API client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/secrets.h"
#include "core/log.h"
#include "http/app.h"
#include "proto/telegram.h"
#include "store/identity.h"
#include "store/telegram.h"
#include "telegram/botapi.h"

#define T0 1796000000000LL

struct fx {
    struct meao_db *db;
    struct meao_secrets keys;
    int64_t alice, bob;
    char dir[64], path[128];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    unsigned char master[MEAO_KEY_BYTES] = {7};
    char err[256];
    snprintf(f->dir, sizeof f->dir, "/tmp/meao-tg-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    assert_int_equal(meao_db_open(f->path, 5000, MEAO_DB_MIGRATE, &f->db, err, sizeof err),
                     MEAO_OK);
    meao_secrets_derive(master, &f->keys);
    assert_int_equal(meao_user_create(f->db, "alice", MEAO_ROLE_OWNER, T0, &f->alice), MEAO_OK);
    assert_int_equal(meao_user_create(f->db, "bob", MEAO_ROLE_USER, T0, &f->bob), MEAO_OK);
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

static enum meao_err parse(const char *text, struct meao_tg_update *u, json_t **keep)
{
    char why[200];
    *keep = json_loads(text, 0, NULL);
    assert_non_null(*keep);
    return meao_tg_update_parse(*keep, u, why, sizeof why);
}

static void update_kinds(void **state)
{
    struct meao_tg_update u;
    json_t *j;
    (void)state;
    assert_int_equal(parse("{\"update_id\":5,\"message\":{\"message_id\":1,\"from\":{\"id\":"
                           "9007199254740993,\"first_name\":\"A\"},\"chat\":{\"id\":"
                           "9007199254740993,\"type\":\"private\"},\"text\":\"hi\"}}",
                           &u, &j),
                     MEAO_OK);
    assert_int_equal(u.kind, MEAO_TG_MESSAGE);
    assert_string_equal(u.kind_name, "message");
    assert_true(u.chat_id == 9007199254740993LL); /* 64-bit ids survive */
    assert_true(u.from_id == 9007199254740993LL);
    assert_true(u.private_chat);
    assert_string_equal(u.text, "hi");
    json_decref(j);

    assert_int_equal(
        parse("{\"update_id\":6,\"callback_query\":{\"id\":\"q1\",\"from\":{\"id\":7},"
              "\"message\":{\"message_id\":3,\"chat\":{\"id\":7}},\"data\":\"a:apr_x\"}}",
              &u, &j),
        MEAO_OK);
    assert_int_equal(u.kind, MEAO_TG_CALLBACK);
    assert_string_equal(u.callback_id, "q1");
    assert_string_equal(u.callback_data, "a:apr_x");
    assert_int_equal(u.callback_message_id, 3);
    json_decref(j);

    /* kept and ignored: edits, polls, anything new */
    assert_int_equal(parse("{\"update_id\":7,\"edited_message\":{\"chat\":{\"id\":1}}}", &u, &j),
                     MEAO_OK);
    assert_int_equal(u.kind, MEAO_TG_OTHER);
    assert_string_equal(u.kind_name, "edited_message");
    json_decref(j);
    assert_int_equal(parse("{\"update_id\":8,\"some_future_thing\":{}}", &u, &j), MEAO_OK);
    assert_int_equal(u.kind, MEAO_TG_OTHER);
    json_decref(j);
    assert_int_equal(parse("{\"update_id\":8,\"BAD-name\":{}}", &u, &j), MEAO_OK);
    assert_string_equal(u.kind_name, "unknown");
    json_decref(j);
}

static void update_refusals(void **state)
{
    static const char *const bad[] = {
        "[]",
        "{}",
        "{\"update_id\":\"1\"}",
        "{\"update_id\":-3}",
        "{\"update_id\":1.5}",
        "{\"update_id\":1,\"message\":{\"text\":\"x\"}}",
        "{\"update_id\":1,\"message\":{\"chat\":{\"id\":\"1\"}}}",
        "{\"update_id\":1,\"message\":{\"chat\":{\"id\":1},\"text\":5}}",
        "{\"update_id\":1,\"message\":{\"chat\":{\"id\":1},\"from\":{}}}",
        "{\"update_id\":1,\"message\":7}",
        "{\"update_id\":1,\"callback_query\":{\"from\":{\"id\":1}}}",
        "{\"update_id\":1,\"callback_query\":{\"id\":\"q\"}}",
        "{\"update_id\":1,\"callback_query\":{\"id\":\"q\",\"from\":{\"id\":1},\"data\":1}}",
    };
    struct meao_tg_update u;
    json_t *j;
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i], &u, &j) != MEAO_E_INVALID_REQUEST)
            fail_msg("accepted: %s", bad[i]);
        json_decref(j);
    }
}

static void split_counts_utf16_and_keeps_characters(void **state)
{
    char *s = malloc(20000);
    size_t len = 0, off, total = 0;
    (void)state;
    assert_int_equal(meao_tg_text_units("a\xc3\xa9\xe2\x9c\x93\xf0\x9f\x90\x88", 10), 5);
    /* exactly the limit fits whole */
    memset(s, 'a', 4096);
    assert_int_equal(meao_tg_split_point(s, 4096, 4096), 4096);
    assert_int_equal(meao_tg_split_point(s, 4097, 4096), 4096);
    /* cats (4 bytes, 2 units each): 2048 fit */
    for (len = 0; len < 3000 * 4; len += 4)
        memcpy(s + len, "\xf0\x9f\x90\x88", 4);
    assert_int_equal(meao_tg_split_point(s, len, 4096), 2048 * 4);
    assert_int_equal(meao_tg_split_point(s, len, 3), 4); /* never half a pair */
    /* lines: cut after a newline in the second half */
    len = 0;
    while (len < 9000) {
        memcpy(s + len, "0123456789 abc\xc3\xa9\n", 17);
        len += 17;
    }
    off = meao_tg_split_point(s, len, 4096);
    assert_true(meao_tg_text_units(s, off) > 2048 && meao_tg_text_units(s, off) <= 4096);
    assert_int_equal(s[off - 1], '\n');
    /* the pieces cover the text exactly, each within the limit */
    for (off = 0; off < len; total++) {
        size_t n = meao_tg_split_point(s + off, len - off, 4096);
        assert_true(n > 0);
        assert_true(meao_tg_text_units(s + off, n) <= 4096);
        assert_true(((unsigned char)s[off + n - 1] & 0xc0) != 0xc0); /* no dangling lead byte */
        off += n;
    }
    assert_int_equal(off, len);
    assert_int_equal(total, 3);
    free(s);
}

static void callback_data(void **state)
{
    char a = 0, id[65];
    (void)state;
    assert_true(meao_tg_callback_parse("a:apr_0123456789abcdefghij", &a, id, sizeof id));
    assert_int_equal(a, 'a');
    assert_string_equal(id, "apr_0123456789abcdefghij");
    assert_true(meao_tg_callback_parse("i:x", &a, id, sizeof id));
    assert_int_equal(a, 'i');
    assert_false(meao_tg_callback_parse("x:apr_1", &a, id, sizeof id));
    assert_false(meao_tg_callback_parse("a:", &a, id, sizeof id));
    assert_false(meao_tg_callback_parse("a:apr 1", &a, id, sizeof id));
    assert_false(meao_tg_callback_parse("aa:apr", &a, id, sizeof id));
    assert_false(meao_tg_callback_parse(NULL, &a, id, sizeof id));
    assert_false(meao_tg_callback_parse("a:apr_0123456789abcdefghij", &a, id, 8));
}

static void inbox_duplicates_order_and_retries(void **state)
{
    struct fx *f = *state;
    struct meao_tg_item items[8];
    size_t n;
    bool dup;
    char *body;
    json_t *counts;

    assert_int_equal(meao_tg_inbox_put(f->db, 20, "message", 7, 7, "{\"a\":1}", 7, false, T0, &dup),
                     MEAO_OK);
    assert_false(dup);
    assert_int_equal(meao_tg_inbox_put(f->db, 20, "message", 7, 7, "{\"b\":2}", 7, true, T0, &dup),
                     MEAO_OK);
    assert_true(dup);
    assert_int_equal(meao_tg_inbox_put(f->db, 10, "poll", 0, 0, "{}", 2, true, T0, &dup), MEAO_OK);
    assert_int_equal(meao_tg_inbox_put(f->db, 30, "message", 8, 8, "{}", 2, false, T0, &dup),
                     MEAO_OK);
    assert_int_equal(meao_tg_inbox_body(f->db, 20, &body), MEAO_OK);
    assert_string_equal(body, "{\"a\":1}"); /* the first delivery is what counts */
    free(body);
    assert_int_equal(meao_tg_inbox_open(f->db, items, 8, &n), MEAO_OK);
    assert_int_equal(n, 3);
    assert_int_equal(items[0].update_id, 10);
    assert_int_equal(items[0].chat_id, 0);
    assert_int_equal(items[1].update_id, 20);
    assert_false(items[1].working);

    assert_int_equal(meao_tg_inbox_start(f->db, 20), MEAO_OK);
    assert_int_equal(meao_tg_inbox_set_reply(f->db, 20, 555), MEAO_OK);
    assert_int_equal(meao_tg_inbox_set_turn(f->db, 20, "lease-1", "ses_x"), MEAO_OK);
    assert_int_equal(meao_tg_inbox_open(f->db, items, 8, &n), MEAO_OK);
    assert_true(items[1].working);
    assert_int_equal(items[1].attempts, 1);
    assert_int_equal(items[1].reply_message_id, 555);
    assert_string_equal(items[1].lease, "lease-1");
    assert_string_equal(items[1].session, "ses_x");

    assert_int_equal(meao_tg_inbox_retry(f->db, 20, T0 + 5000, "later"), MEAO_OK);
    assert_int_equal(meao_tg_inbox_open(f->db, items, 8, &n), MEAO_OK);
    assert_false(items[1].working);
    assert_int_equal(items[1].not_before_ms, T0 + 5000);
    assert_string_equal(items[1].lease, "");          /* the turn was released */
    assert_int_equal(items[1].reply_message_id, 555); /* the reply message is kept */

    assert_int_equal(meao_tg_inbox_finish(f->db, 20, "done", "replied", T0), MEAO_OK);
    assert_int_equal(meao_tg_inbox_finish(f->db, 10, "ignored", "poll", T0), MEAO_OK);
    assert_int_equal(meao_tg_inbox_finish(f->db, 99, "done", "x", T0), MEAO_E_NOT_FOUND);
    assert_int_equal(meao_tg_inbox_open(f->db, items, 8, &n), MEAO_OK);
    assert_int_equal(n, 1);
    assert_int_equal(meao_tg_inbox_counts(f->db, &counts), MEAO_OK);
    assert_int_equal(json_integer_value(json_object_get(counts, "done")), 1);
    json_decref(counts);
    /* pruning keeps open rows and recent settled ones */
    {
        int64_t pruned = -1;
        assert_int_equal(meao_tg_inbox_prune(f->db, T0, &pruned), MEAO_OK);
        assert_int_equal(pruned, 0);
        assert_int_equal(meao_tg_inbox_prune(f->db, T0 + 1, &pruned), MEAO_OK);
        assert_int_equal(pruned, 2);
        assert_int_equal(meao_tg_inbox_put(f->db, 20, "message", 7, 7, "{}", 2, false, T0, &dup),
                         MEAO_OK);
        assert_false(dup); /* forgotten: only after Telegram stopped redelivering */
    }
    assert_int_equal(meao_tg_inbox_counts(f->db, &counts), MEAO_OK);
    assert_int_equal(json_integer_value(json_object_get(counts, "ignored")), 0);
    assert_int_equal(json_integer_value(json_object_get(counts, "new")), 2);
    json_decref(counts);
}

static int64_t inbox_rows(struct meao_db *db)
{
    static const char sql[] = "SELECT count(*) FROM telegram_inbox";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int64_t n;
    assert_non_null(st);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return n;
}

/* In the responder the webhook's insert is one part of the epoll batch's
 * group commit (FULL or relaxed): nothing is visible, let alone durable,
 * until meao_db_group_commit(), and a redelivery inside the same group is
 * a duplicate already. */
static void inbox_put_joins_the_group_commit(void **state)
{
    struct fx *f = *state;
    struct meao_db *other;
    char err[256];
    bool dup;

    assert_int_equal(meao_db_open(f->path, 5000, 0, &other, err, sizeof err), MEAO_OK);
    meao_db_group_begin(f->db);
    assert_int_equal(meao_tg_inbox_put(f->db, 40, "message", 7, 7, "{}", 2, false, T0, &dup),
                     MEAO_OK);
    assert_false(dup);
    assert_true(meao_db_group_pending(f->db));
    assert_int_equal(meao_db_group_joined(f->db), 1);
    assert_int_equal(meao_tg_inbox_put(f->db, 40, "message", 7, 7, "{}", 2, true, T0, &dup),
                     MEAO_OK);
    assert_true(dup); /* the same update_id earlier in the group */
    assert_int_equal(meao_tg_inbox_put(f->db, 41, "message", 7, 7, "{}", 2, true, T0, &dup),
                     MEAO_OK);
    assert_false(dup);
    assert_int_equal(meao_db_group_joined(f->db), 3);
    assert_int_equal(inbox_rows(other), 0); /* not committed: no answer may go out yet */
    assert_int_equal(meao_db_group_commit(f->db), MEAO_OK);
    assert_false(meao_db_group_pending(f->db));
    assert_int_equal(inbox_rows(other), 2);

    /* outside a group: committed (and fsynced) before it returns */
    assert_int_equal(meao_tg_inbox_put(f->db, 42, "message", 7, 7, "{}", 2, false, T0, &dup),
                     MEAO_OK);
    assert_int_equal(inbox_rows(other), 3);
    meao_db_close(other);
}

static void identities_link_allow_and_pairing(void **state)
{
    struct fx *f = *state;
    struct meao_user u;
    char code[MEAO_PAIR_CODE_LEN + 1], again[MEAO_PAIR_CODE_LEN + 1];
    int64_t tg;
    json_t *list;

    assert_int_equal(meao_tg_identity_get(f->db, 111, &u), MEAO_E_NOT_FOUND);
    assert_int_equal(meao_tg_link(f->db, 111, f->alice, 0, T0), MEAO_OK);
    assert_int_equal(meao_tg_identity_get(f->db, 111, &u), MEAO_OK);
    assert_int_equal(u.id, f->alice);
    assert_int_equal(u.role, MEAO_ROLE_OWNER);
    /* relinking moves it */
    assert_int_equal(meao_tg_link(f->db, 111, f->bob, 0, T0), MEAO_OK);
    assert_int_equal(meao_tg_identity_get(f->db, 111, &u), MEAO_OK);
    assert_int_equal(u.id, f->bob);
    /* allow: a tg<id> user of role user, made once */
    assert_int_equal(meao_tg_allow(f->db, 9000000000LL, 0, T0, &u), MEAO_OK);
    assert_string_equal(u.name, "tg9000000000");
    assert_int_equal(u.role, MEAO_ROLE_USER);
    assert_int_equal(meao_tg_allow(f->db, 9000000000LL, 0, T0, &u), MEAO_OK);
    assert_int_equal(meao_tg_unlink(f->db, 9000000000LL, T0), MEAO_OK);
    {
        int64_t owner;
        assert_int_equal(meao_user_create(f->db, "tg333", MEAO_ROLE_OWNER, T0, &owner), MEAO_OK);
        assert_int_equal(meao_tg_allow(f->db, 333, 0, T0, &u), MEAO_E_CONFLICT);
        assert_int_equal(meao_tg_identity_get(f->db, 333, &u), MEAO_E_NOT_FOUND);
    }
    assert_int_equal(meao_tg_unlink(f->db, 9000000000LL, T0), MEAO_E_NOT_FOUND);

    /* pairing: a code per stranger, hashed, single use, expires */
    assert_int_equal(meao_tg_pair_issue(f->db, &f->keys, 222, "eve", T0, code), MEAO_OK);
    assert_int_equal(meao_tg_pair_issue(f->db, &f->keys, 222, "eve", T0, again), MEAO_OK);
    assert_int_equal(meao_tg_pair_approve(f->db, &f->keys, code, f->alice, T0, &tg),
                     MEAO_E_NOT_FOUND); /* replaced by the newer code */
    assert_int_equal(meao_tg_identity_get(f->db, 222, &u), MEAO_E_NOT_FOUND); /* pending only */
    assert_int_equal(
        meao_tg_pair_approve(f->db, &f->keys, again, f->alice, T0 + MEAO_TG_PAIR_TTL_MS, &tg),
        MEAO_E_NOT_FOUND); /* expired */
    assert_int_equal(meao_tg_pair_approve(f->db, &f->keys, again, f->alice, T0 + 1000, &tg),
                     MEAO_OK);
    assert_int_equal(tg, 222);
    assert_int_equal(meao_tg_identity_get(f->db, 222, &u), MEAO_OK);
    assert_string_equal(u.name, "tg222");
    assert_int_equal(meao_tg_pair_approve(f->db, &f->keys, again, f->alice, T0 + 1000, &tg),
                     MEAO_E_NOT_FOUND); /* single use */
    assert_int_equal(meao_tg_pair_issue(f->db, &f->keys, 222, "eve", T0, code), MEAO_E_CONFLICT);
    assert_int_equal(meao_tg_pair_approve(f->db, &f->keys, "not a code", f->alice, T0, &tg),
                     MEAO_E_NOT_FOUND);

    assert_int_equal(meao_tg_identities_list(f->db, &list), MEAO_OK);
    assert_int_equal(json_array_size(list), 2);
    json_decref(list);
}

static void chats_and_approvals(void **state)
{
    struct fx *f = *state;
    char id[MEAO_PUBLIC_ID_LEN + 1];
    struct meao_tg_approval a = {.chat_id = 5, .message_id = 77, .status = "pending"}, b;

    assert_int_equal(meao_tg_chat_session(f->db, 5, f->alice, id), MEAO_E_NOT_FOUND);
    assert_int_equal(meao_tg_chat_set_session(f->db, 5, f->alice, "ses_one", T0), MEAO_OK);
    assert_int_equal(meao_tg_chat_session(f->db, 5, f->alice, id), MEAO_OK);
    assert_string_equal(id, "ses_one");
    assert_int_equal(meao_tg_chat_session(f->db, 5, f->bob, id), MEAO_E_NOT_FOUND);

    snprintf(a.approval_id, sizeof a.approval_id, "apr_1");
    snprintf(a.tool_name, sizeof a.tool_name, "bash");
    snprintf(a.details, sizeof a.details, "ls -la");
    a.user_id = f->alice;
    assert_int_equal(meao_tg_approval_put(f->db, &a, T0), MEAO_OK);
    assert_int_equal(meao_tg_approval_get(f->db, "apr_1", &b), MEAO_OK);
    assert_int_equal(b.message_id, 77);
    assert_string_equal(b.details, "ls -la");
    assert_string_equal(b.status, "pending");
    assert_int_equal(meao_tg_approval_settle(f->db, "apr_1", "timeout"), MEAO_OK);
    assert_int_equal(meao_tg_approval_get(f->db, "apr_1", &b), MEAO_OK);
    assert_string_equal(b.status, "timeout");
    assert_int_equal(meao_tg_approval_get(f->db, "apr_2", &b), MEAO_E_NOT_FOUND);
}

static void webhook_secret_is_a_keyed_hash(void **state)
{
    struct fx *f = *state;
    struct meao_secrets other;
    unsigned char master[MEAO_KEY_BYTES] = {8};
    char h[MEAO_TG_SECRET_HEX + 1], v[MEAO_TG_SECRET_HEX + 1];
    static const char secret[] = "s3cr3t_token-ABCDEFGHIJKLMNOPQRSTUVWXYZ";

    meao_tg_secret_hash(&f->keys, secret, strlen(secret), h);
    assert_int_equal(strlen(h), MEAO_TG_SECRET_HEX);
    assert_null(strstr(h, "s3cr3t"));
    assert_true(meao_tg_secret_matches(&f->keys, secret, strlen(secret), h));
    assert_false(meao_tg_secret_matches(&f->keys, secret, strlen(secret) - 1, h));
    assert_false(meao_tg_secret_matches(&f->keys, "", 0, h));
    assert_false(meao_tg_secret_matches(&f->keys, secret, strlen(secret), "abc"));
    assert_false(meao_tg_secret_matches(&f->keys, NULL, 0, h));
    meao_secrets_derive(master, &other); /* another deployment: another hash */
    assert_false(meao_tg_secret_matches(&other, secret, strlen(secret), h));
    assert_int_equal(meao_tg_state_set(f->db, "webhook_secret_hash", h, T0), MEAO_OK);
    assert_int_equal(meao_tg_state_get(f->db, "webhook_secret_hash", v, sizeof v), MEAO_OK);
    assert_string_equal(v, h);
    assert_int_equal(meao_tg_state_set(f->db, "webhook_secret_hash", NULL, T0), MEAO_OK);
    assert_int_equal(meao_tg_state_get(f->db, "webhook_secret_hash", v, sizeof v),
                     MEAO_E_NOT_FOUND);
}

static void bot_token_is_redacted(void **state)
{
    static const char token[] = "123456789:AAE-secret_part_of_the_token_xyz";
    struct meao_tg_bot *b;
    char line[300], why[300];
    json_t *r = NULL;
    (void)state;
    b = meao_tg_bot_new(&(struct meao_tg_bot_opts){
        .base = "http://127.0.0.1:1/", .token = token, .timeout_ms = 500, .retry_max_ms = 100});
    assert_non_null(b);
    snprintf(line, sizeof line, "GET http://x/bot%s/getMe failed; again %s.", token, token);
    meao_tg_bot_redact(b, line);
    assert_null(strstr(line, "secret_part"));
    assert_string_equal(line, "GET http://x/bot<token>/getMe failed; again <token>.");
    /* nothing listens on port 1: unavailable, one try, and no token in the reason */
    assert_int_equal(meao_tg_bot_call(b, "getMe", NULL, MEAO_TG_ONCE, &r, NULL, why, sizeof why),
                     MEAO_E_UNAVAILABLE);
    assert_null(r);
    assert_null(strstr(why, "secret_part"));
    meao_tg_bot_free(b);
    assert_null(meao_tg_bot_new(&(struct meao_tg_bot_opts){.base = "http://x", .token = ""}));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(update_kinds),
        cmocka_unit_test(update_refusals),
        cmocka_unit_test(split_counts_utf16_and_keeps_characters),
        cmocka_unit_test(callback_data),
        cmocka_unit_test_setup_teardown(inbox_duplicates_order_and_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(inbox_put_joins_the_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(identities_link_allow_and_pairing, setup, teardown),
        cmocka_unit_test_setup_teardown(chats_and_approvals, setup, teardown),
        cmocka_unit_test_setup_teardown(webhook_secret_is_a_keyed_hash, setup, teardown),
        cmocka_unit_test(bot_token_is_redacted),
    };
    int rc;
    meao_log_init("test_telegram", MEAO_LOG_ERROR);
    if (meao_lib_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
