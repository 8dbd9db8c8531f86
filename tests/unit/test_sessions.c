/* Sessions, turns (leases on a fake clock), messages, history pages, the
 * keyed contentHash, work-directory confinement and live settings, against
 * a real SQLite database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth/secrets.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "http/app.h"
#include "store/identity.h"
#include "store/sessions.h"
#include "store/settings.h"
#include "store/workdir.h"

#define T0    1796000000000LL
#define LEASE 60000

struct fx {
    struct meao_db *db;
    int64_t now;
    int64_t alice, bob;
    char dir[64], path[128], root[128];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    char err[256];
    snprintf(f->dir, sizeof f->dir, "/tmp/meao-sess-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    snprintf(f->root, sizeof f->root, "%s/ws", f->dir);
    assert_int_equal(meao_db_open(f->path, 5000, MEAO_DB_MIGRATE, &f->db, err, sizeof err),
                     MEAO_OK);
    f->now = T0;
    assert_int_equal(meao_user_create(f->db, "alice", MEAO_ROLE_OWNER, f->now, &f->alice), MEAO_OK);
    assert_int_equal(meao_user_create(f->db, "bob", MEAO_ROLE_USER, f->now, &f->bob), MEAO_OK);
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

static void new_session(struct fx *f, int64_t user, struct meao_session *s)
{
    char id[MEAO_PUBLIC_ID_LEN + 1];
    meao_public_id_new("ses_", id);
    assert_int_equal(meao_session_create(f->db, id, user, "rest", "/tmp/x", f->now, s), MEAO_OK);
}

static void begin_turn(struct fx *f, const struct meao_session *s, const char *lease,
                       const char *content, struct meao_msg_ref *m, enum meao_err want)
{
    enum meao_turn_refusal why;
    struct meao_turn_start t = {.lease_token = lease,
                                .request_id = "rid-1",
                                .user_id = s->user_id,
                                .content = content,
                                .lease_ms = LEASE};
    assert_int_equal(meao_turn_begin(f->db, s, &t, f->now, m, &why), want);
}

static void complete_turn(struct fx *f, const struct meao_session *s, const char *lease,
                          const struct meao_msg_ref *um, const char *reply,
                          struct meao_msg_ref *out)
{
    struct meao_turn_result r = {.content = reply, .request_id = "rid-1", .user_id = s->user_id};
    assert_int_equal(meao_turn_complete(f->db, s->id, lease, um, &r, f->now, out), MEAO_OK);
}

/* ---- ids ---- */

static void public_ids_are_prefixed_base62(void **state)
{
    char a[MEAO_PUBLIC_ID_LEN + 1], b[MEAO_PUBLIC_ID_LEN + 1];
    (void)state;
    meao_public_id_new("ses_", a);
    meao_public_id_new("ses_", b);
    assert_int_equal(strlen(a), 24);
    assert_string_not_equal(a, b);
    assert_true(meao_public_id_valid(a, "ses_"));
    assert_false(meao_public_id_valid(a, "msg_"));
    assert_false(meao_public_id_valid("ses_short", "ses_"));
    assert_false(meao_public_id_valid("ses_aaaaaaaaaaaaaaaaaaa-", "ses_"));
    assert_false(meao_public_id_valid("ses_aaaaaaaaaaaaaaaaaaaaa", "ses_"));
    assert_false(meao_public_id_valid(NULL, "ses_"));
    assert_true(meao_channel_valid("rest"));
    assert_true(meao_channel_valid("tg:bot-1.x_y"));
    assert_false(meao_channel_valid(""));
    assert_false(meao_channel_valid("a b"));
    assert_false(meao_channel_valid("123456789012345678901234567890123"));
}

/* ---- sessions ---- */

static void session_create_get_is_owner_scoped(void **state)
{
    struct fx *f = *state;
    struct meao_session s, g;
    new_session(f, f->bob, &s);
    assert_int_equal(meao_session_get(f->db, f->bob, s.public_id, f->now, &g), MEAO_OK);
    assert_string_equal(g.public_id, s.public_id);
    assert_string_equal(g.channel, "rest");
    assert_false(g.ended);
    assert_false(g.busy);
    assert_int_equal(g.message_count, 0);
    /* another user's session is indistinguishable from a missing one */
    assert_int_equal(meao_session_get(f->db, f->alice, s.public_id, f->now, &g), MEAO_E_NOT_FOUND);
    assert_int_equal(meao_session_get(f->db, f->bob, "ses_00000000000000000000", f->now, &g),
                     MEAO_E_NOT_FOUND);
    assert_int_equal(meao_session_end(f->db, f->alice, s.public_id, f->now), MEAO_E_NOT_FOUND);
}

static void session_end_is_idempotent_and_listed_by_status(void **state)
{
    struct fx *f = *state;
    struct meao_session a, b, g;
    json_t *list;
    new_session(f, f->bob, &a);
    f->now += 1000;
    new_session(f, f->bob, &b);
    new_session(f, f->alice, &g);
    f->now += 1000;
    assert_int_equal(meao_session_end(f->db, f->bob, a.public_id, f->now), MEAO_OK);
    assert_int_equal(meao_session_end(f->db, f->bob, a.public_id, f->now + 5), MEAO_OK);
    assert_int_equal(meao_session_get(f->db, f->bob, a.public_id, f->now, &g), MEAO_OK);
    assert_true(g.ended);
    assert_int_equal(g.ended_ms, f->now); /* the first end counts */

    assert_int_equal(meao_session_list(f->db, f->bob, NULL, 50, f->now, &list), MEAO_OK);
    assert_int_equal(json_array_size(list), 2);
    /* newest first */
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "id")),
                        b.public_id);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "status")),
                        "ended");
    json_decref(list);
    assert_int_equal(meao_session_list(f->db, f->bob, "active", 50, f->now, &list), MEAO_OK);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    assert_int_equal(meao_session_list(f->db, f->bob, "ended", 50, f->now, &list), MEAO_OK);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    assert_int_equal(meao_session_list(f->db, f->bob, NULL, 1, f->now, &list), MEAO_OK);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
}

/* ---- turns and leases ---- */

static void turn_begin_stores_pending_message_and_leases(void **state)
{
    struct fx *f = *state;
    struct meao_session s, g;
    struct meao_msg_ref m, m2, reply;
    json_t *tools;
    new_session(f, f->bob, &s);
    begin_turn(f, &s, "lease-a", "hello", &m, MEAO_OK);
    assert_true(meao_public_id_valid(m.public_id, "msg_"));
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM messages WHERE status = 'pending'"), 1);
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM audit WHERE action = 'message.create'"),
                     1);
    assert_int_equal(meao_session_get(f->db, f->bob, s.public_id, f->now, &g), MEAO_OK);
    assert_true(g.busy);
    assert_int_equal(g.message_count, 1);

    /* a second turn while the first holds the lease: refused, nothing stored */
    {
        enum meao_turn_refusal why;
        struct meao_turn_start t = {.lease_token = "lease-b",
                                    .request_id = "rid-2",
                                    .user_id = f->bob,
                                    .content = "again",
                                    .lease_ms = LEASE};
        assert_int_equal(meao_turn_begin(f->db, &s, &t, f->now + 1000, &m2, &why), MEAO_E_CONFLICT);
        assert_int_equal(why, MEAO_TURN_BUSY);
    }
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM messages"), 1);

    /* completion: reply stored ok, user message ok, lease released, trusted tools kept */
    tools = json_pack("[s]", "read_file");
    {
        json_t *calls = json_pack("[{s:s, s:s}]", "id", "t1", "name", "read_file");
        struct meao_turn_result r = {.content = "hi there",
                                     .tool_calls = calls,
                                     .input_tokens = 3,
                                     .output_tokens = 4,
                                     .trusted_tools = tools,
                                     .request_id = "rid-1",
                                     .user_id = f->bob};
        assert_int_equal(meao_turn_complete(f->db, s.id, "lease-a", &m, &r, f->now, &reply),
                         MEAO_OK);
        json_decref(calls);
    }
    json_decref(tools);
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM messages WHERE status = 'ok'"), 2);
    assert_int_equal(scalar(f->db, "SELECT output_tokens FROM messages WHERE role = 'assistant'"),
                     4);
    assert_int_equal(meao_session_get(f->db, f->bob, s.public_id, f->now, &g), MEAO_OK);
    assert_false(g.busy);
    assert_int_equal(meao_session_trusted_tools(f->db, s.id, &tools), MEAO_OK);
    assert_int_equal(json_array_size(tools), 1);
    assert_string_equal(json_string_value(json_array_get(tools, 0)), "read_file");
    json_decref(tools);
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM audit WHERE action = 'turn.complete'"), 1);
    /* now a new turn may start */
    begin_turn(f, &s, "lease-b", "next", &m2, MEAO_OK);
}

static void lease_of_a_crashed_turn_expires(void **state)
{
    struct fx *f = *state;
    struct meao_session s;
    struct meao_msg_ref m, m2;
    new_session(f, f->bob, &s);
    begin_turn(f, &s, "crashed", "one", &m, MEAO_OK);
    /* the holder vanished: just before the lease ends the session is still busy */
    f->now += LEASE - 1;
    begin_turn(f, &s, "next", "two", &m2, MEAO_E_CONFLICT);
    f->now += 1;
    begin_turn(f, &s, "next", "two", &m2, MEAO_OK);
    /* the crashed holder comes back: it can neither renew nor release the new lease */
    assert_int_equal(meao_turn_renew(f->db, s.id, "crashed", f->now, LEASE), MEAO_E_CONFLICT);
    assert_int_equal(
        meao_turn_fail(f->db, s.id, "crashed", &m, "INTERNAL_ERROR", "rid-x", f->bob, f->now),
        MEAO_OK);
    assert_int_equal(scalar(f->db, "SELECT lease_token = 'next' FROM sessions"), 1);
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM messages WHERE status = 'failed'"), 1);
}

/* A lease minted by a process that no longer exists is free at once (no
 * waiting for its expiry), and the dead turn's pending message is marked
 * failed; a live holder's lease still refuses. */
static void lease_of_a_dead_process_is_taken_over_at_once(void **state)
{
    struct fx *f = *state;
    struct meao_session s, live;
    struct meao_msg_ref m, m2;
    char dead_lease[MEAO_LEASE_TOKEN_MAX], mine[MEAO_LEASE_TOKEN_MAX];
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(0);
    assert_int_equal(waitpid(child, NULL, 0), child); /* reaped: the pid is gone */
    snprintf(dead_lease, sizeof dead_lease, "%ld.deadholder", (long)child);

    new_session(f, f->bob, &s);
    begin_turn(f, &s, dead_lease, "one", &m, MEAO_OK);
    meao_lease_token_new(mine);
    begin_turn(f, &s, mine, "two", &m2, MEAO_OK); /* no clock moved */
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM messages WHERE status = 'failed'"
                                   " AND error_code = 'CANCELLED' AND content = 'one'"),
                     1);
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM messages WHERE status = 'pending'"), 1);

    /* our own lease: we are alive, so a second turn is refused */
    new_session(f, f->bob, &live);
    begin_turn(f, &live, mine, "three", &m, MEAO_OK);
    begin_turn(f, &live, "other.token", "four", &m2, MEAO_E_CONFLICT);
}

static void lease_renewal_keeps_the_session_busy(void **state)
{
    struct fx *f = *state;
    struct meao_session s;
    struct meao_msg_ref m, m2;
    new_session(f, f->bob, &s);
    begin_turn(f, &s, "holder", "one", &m, MEAO_OK);
    for (int i = 0; i < 10; i++) {
        f->now += LEASE / 2;
        assert_int_equal(meao_turn_renew(f->db, s.id, "holder", f->now, LEASE), MEAO_OK);
    }
    f->now += LEASE - 1;
    begin_turn(f, &s, "other", "two", &m2, MEAO_E_CONFLICT);
}

static void turn_fail_keeps_message_failed_and_frees_session(void **state)
{
    struct fx *f = *state;
    struct meao_session s, g;
    struct meao_msg_ref m;
    json_t *hist;
    new_session(f, f->bob, &s);
    begin_turn(f, &s, "l1", "lost", &m, MEAO_OK);
    assert_int_equal(
        meao_turn_fail(f->db, s.id, "l1", &m, "SERVICE_UNAVAILABLE", "rid-1", f->bob, f->now),
        MEAO_OK);
    assert_int_equal(scalar(f->db,
                            "SELECT count(*) FROM messages WHERE status = 'failed' AND error_code ="
                            " 'SERVICE_UNAVAILABLE'"),
                     1);
    assert_int_equal(meao_session_get(f->db, f->bob, s.public_id, f->now, &g), MEAO_OK);
    assert_false(g.busy);
    assert_int_equal(g.message_count, 1);
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM audit WHERE action = 'turn.fail'"), 1);
    /* failed messages are not history */
    assert_int_equal(meao_history_window(f->db, s.id, 0, 50, &hist), MEAO_OK);
    assert_int_equal(json_array_size(hist), 0);
    json_decref(hist);
}

static void ended_session_refuses_turns(void **state)
{
    struct fx *f = *state;
    struct meao_session s;
    struct meao_msg_ref m;
    enum meao_turn_refusal why;
    struct meao_turn_start t = {
        .lease_token = "l", .request_id = "r", .user_id = 0, .content = "x", .lease_ms = LEASE};
    new_session(f, f->bob, &s);
    assert_int_equal(meao_session_end(f->db, f->bob, s.public_id, f->now), MEAO_OK);
    t.user_id = f->bob;
    assert_int_equal(meao_turn_begin(f->db, &s, &t, f->now, &m, &why), MEAO_E_CONFLICT);
    assert_int_equal(why, MEAO_TURN_ENDED);
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM messages"), 0);
}

static void history_window_is_last_n_ok_oldest_first(void **state)
{
    struct fx *f = *state;
    struct meao_session s;
    struct meao_msg_ref um, reply, last;
    json_t *h;
    char text[32];
    new_session(f, f->bob, &s);
    for (int i = 0; i < 30; i++) {
        snprintf(text, sizeof text, "q%d", i);
        begin_turn(f, &s, "l", text, &um, MEAO_OK);
        snprintf(text, sizeof text, "a%d", i);
        complete_turn(f, &s, "l", &um, text, &reply);
        f->now += 10;
    }
    begin_turn(f, &s, "l", "failing", &um, MEAO_OK);
    assert_int_equal(meao_turn_fail(f->db, s.id, "l", &um, "GATEWAY_TIMEOUT", "r", f->bob, f->now),
                     MEAO_OK);
    begin_turn(f, &s, "l", "current", &last, MEAO_OK);
    assert_int_equal(meao_history_window(f->db, s.id, last.id, 50, &h), MEAO_OK);
    assert_int_equal(json_array_size(h), 50);
    /* 60 ok messages; the 50 newest, oldest first: q5 .. a29 */
    assert_string_equal(json_string_value(json_object_get(json_array_get(h, 0), "content")), "q5");
    assert_string_equal(json_string_value(json_object_get(json_array_get(h, 0), "role")), "user");
    assert_string_equal(json_string_value(json_object_get(json_array_get(h, 49), "content")),
                        "a29");
    assert_string_equal(json_string_value(json_object_get(json_array_get(h, 49), "role")),
                        "assistant");
    json_decref(h);
}

/* ---- the API's history pages ---- */

static void messages_page_with_before_and_privacy(void **state)
{
    struct fx *f = *state;
    struct meao_session s, other;
    struct meao_msg_ref um, reply, first = {0};
    unsigned char key[32] = {7};
    char text[16];
    json_t *page;
    bool more;
    new_session(f, f->bob, &s);
    for (int i = 0; i < 5; i++) {
        snprintf(text, sizeof text, "q%d", i);
        begin_turn(f, &s, "l", text, &um, MEAO_OK);
        if (i == 0)
            first = um;
        snprintf(text, sizeof text, "a%d", i);
        complete_turn(f, &s, "l", &um, text, &reply);
    }
    /* newest 4, oldest first, without content */
    assert_int_equal(meao_messages_page(f->db, s.id,
                                        &(struct meao_page_query){.limit = 4, .hash_key = key},
                                        &page, &more),
                     MEAO_OK);
    assert_true(more);
    assert_int_equal(json_array_size(page), 4);
    {
        json_t *m0 = json_array_get(page, 0), *m3 = json_array_get(page, 3);
        char hash[MEAO_CONTENT_HASH_LEN + 1];
        assert_null(json_object_get(m0, "content"));
        assert_string_equal(json_string_value(json_object_get(m0, "role")), "user");
        assert_string_equal(json_string_value(json_object_get(m3, "id")), reply.public_id);
        assert_true(json_is_null(json_object_get(m0, "toolCallId")));
        assert_true(json_is_false(json_object_get(m0, "hasToolCalls")));
        assert_string_equal(json_string_value(json_object_get(m0, "status")), "ok");
        meao_content_hash(key, "q3", 2, hash);
        assert_string_equal(json_string_value(json_object_get(m0, "contentHash")), hash);
        assert_string_equal(json_string_value(json_object_get(m3, "timestamp")),
                            "2026-11-30T00:53:20.000Z");
        /* page further back from the oldest of this page */
        {
            const char *older = json_string_value(json_object_get(m0, "id"));
            json_t *p2;
            assert_int_equal(meao_messages_page(f->db, s.id,
                                                &(struct meao_page_query){.limit = 50,
                                                                          .before = older,
                                                                          .include_content = true,
                                                                          .hash_key = key},
                                                &p2, &more),
                             MEAO_OK);
            assert_false(more);
            assert_int_equal(json_array_size(p2), 6);
            assert_string_equal(
                json_string_value(json_object_get(json_array_get(p2, 0), "content")), "q0");
            assert_string_equal(json_string_value(json_object_get(json_array_get(p2, 0), "id")),
                                first.public_id);
            json_decref(p2);
        }
    }
    json_decref(page);
    /* a `before` from another session, or unknown: NOT_FOUND */
    new_session(f, f->bob, &other);
    assert_int_equal(meao_messages_page(f->db, other.id,
                                        &(struct meao_page_query){
                                            .limit = 4, .before = first.public_id, .hash_key = key},
                                        &page, &more),
                     MEAO_E_NOT_FOUND);
    assert_int_equal(
        meao_messages_page(f->db, s.id,
                           &(struct meao_page_query){
                               .limit = 4, .before = "msg_00000000000000000000", .hash_key = key},
                           &page, &more),
        MEAO_E_NOT_FOUND);
}

static void content_hash_is_keyed(void **state)
{
    unsigned char k1[32] = {1}, k2[32] = {2};
    char a[MEAO_CONTENT_HASH_LEN + 1], b[MEAO_CONTENT_HASH_LEN + 1], c[MEAO_CONTENT_HASH_LEN + 1];
    (void)state;
    meao_content_hash(k1, "same text", 9, a);
    meao_content_hash(k1, "same text", 9, b);
    meao_content_hash(k2, "same text", 9, c);
    assert_int_equal(strlen(a), 16);
    assert_int_equal(strspn(a, "0123456789abcdef"), 16);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    meao_content_hash(k1, "other text", 10, b);
    assert_string_not_equal(a, b);
}

/* ---- work directories ---- */

static enum meao_err resolve(struct fx *f, int64_t uid, bool owner, const char *requested,
                             char *out, char *why)
{
    struct meao_workdir_req r = {.root = f->root,
                                 .user_id = uid,
                                 .may_use_whole_root = owner,
                                 .requested = requested,
                                 .default_leaf = "ses_aaaaaaaaaaaaaaaaaaaa"};
    return meao_workdir_resolve(&r, out, MEAO_WORKDIR_MAX + 1, why, 200);
}

static void workdir_default_relative_and_absolute(void **state)
{
    struct fx *f = *state;
    char out[MEAO_WORKDIR_MAX + 1], why[200], want[512], abs[512];
    struct stat st;

    /* the default is only named at creation and made before the first turn */
    assert_int_equal(resolve(f, 2, false, NULL, out, why), MEAO_OK);
    snprintf(want, sizeof want, "%s/2/ses_aaaaaaaaaaaaaaaaaaaa", f->root);
    assert_string_equal(out, want);
    assert_int_equal(stat(out, &st), -1);
    assert_int_equal(meao_workdir_ensure(f->root, out), MEAO_OK);
    assert_int_equal(stat(out, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(want, sizeof want, "%s/2", f->root);
    assert_int_equal(stat(want, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(meao_workdir_ensure(f->root, out), MEAO_OK); /* idempotent */
    /* a directory outside the root is never made */
    assert_int_equal(meao_workdir_ensure(f->root, "/tmp/meao-not-in-root/x"), MEAO_E_IO);
    assert_int_equal(stat("/tmp/meao-not-in-root", &st), -1);

    assert_int_equal(resolve(f, 2, false, "proj/./a//b/", out, why), MEAO_OK);
    snprintf(want, sizeof want, "%s/2/proj/a/b", f->root);
    assert_string_equal(out, want);
    assert_int_equal(stat(out, &st), 0);

    snprintf(abs, sizeof abs, "%s/2/abs", f->root);
    assert_int_equal(resolve(f, 2, false, abs, out, why), MEAO_OK);
    assert_string_equal(out, abs);
    /* the user's own directory itself is fine */
    snprintf(abs, sizeof abs, "%s//2/", f->root);
    assert_int_equal(resolve(f, 2, false, abs, out, why), MEAO_OK);
    snprintf(want, sizeof want, "%s/2", f->root);
    assert_string_equal(out, want);
}

static void workdir_refuses_escapes(void **state)
{
    struct fx *f = *state;
    char out[MEAO_WORKDIR_MAX + 1], why[200], p[512], link[512];
    char longname[300];

    assert_int_equal(resolve(f, 2, false, "../3", out, why), MEAO_E_INVALID_PARAMETER);
    assert_non_null(strstr(why, ".."));
    assert_int_equal(resolve(f, 2, false, "a/../../etc", out, why), MEAO_E_INVALID_PARAMETER);
    assert_int_equal(resolve(f, 2, false, "/etc", out, why), MEAO_E_INVALID_PARAMETER);
    assert_int_equal(resolve(f, 2, false, "/", out, why), MEAO_E_INVALID_PARAMETER);
    snprintf(p, sizeof p, "%sx/2/a", f->root); /* a sibling that shares the prefix */
    assert_int_equal(resolve(f, 2, false, p, out, why), MEAO_E_INVALID_PARAMETER);
    /* another user's directory: a user may not, an owner may */
    snprintf(p, sizeof p, "%s/3/a", f->root);
    assert_int_equal(resolve(f, 2, false, p, out, why), MEAO_E_INVALID_PARAMETER);
    assert_int_equal(resolve(f, 1, true, p, out, why), MEAO_OK);
    /* the root itself is never a session's directory */
    assert_int_equal(resolve(f, 1, true, f->root, out, why), MEAO_E_INVALID_PARAMETER);
    assert_int_equal(resolve(f, 2, false, "a\001b", out, why), MEAO_E_INVALID_PARAMETER);
    memset(longname, 'x', 299);
    longname[299] = '\0';
    assert_int_equal(resolve(f, 2, false, longname, out, why), MEAO_E_INVALID_PARAMETER);
    assert_int_equal(resolve(f, 2, false, "", out, why), MEAO_E_INVALID_PARAMETER);

    /* symlinks: out of the root, and even inside it, are refused */
    assert_int_equal(resolve(f, 2, false, "base", out, why), MEAO_OK);
    snprintf(link, sizeof link, "%s/2/out", f->root);
    assert_int_equal(symlink("/etc", link), 0);
    assert_int_equal(resolve(f, 2, false, "out", out, why), MEAO_E_INVALID_PARAMETER);
    assert_non_null(strstr(why, "symlink"));
    assert_int_equal(resolve(f, 2, false, "out/sub", out, why), MEAO_E_INVALID_PARAMETER);
    snprintf(link, sizeof link, "%s/2/in", f->root);
    assert_int_equal(symlink("base", link), 0);
    assert_int_equal(resolve(f, 2, false, "in/x", out, why), MEAO_E_INVALID_PARAMETER);
    /* a file in the way */
    snprintf(p, sizeof p, "%s/2/file", f->root);
    fclose(fopen(p, "w"));
    assert_int_equal(resolve(f, 2, false, "file/x", out, why), MEAO_E_INVALID_PARAMETER);
    assert_int_equal(access("/etc/sub", F_OK), -1); /* nothing was made through the link */

    /* a session directory swapped for a symlink after creation is refused at the turn */
    assert_int_equal(resolve(f, 2, false, NULL, out, why), MEAO_OK);
    assert_int_equal(symlink("/etc", out), 0);
    assert_int_equal(meao_workdir_ensure(f->root, out), MEAO_E_IO);
    snprintf(p, sizeof p, "%s/2/in/deeper", f->root);
    assert_int_equal(meao_workdir_ensure(f->root, p), MEAO_E_IO);
}

/* ---- live settings ---- */

static void settings_validate_update_and_overlay(void **state)
{
    struct fx *f = *state;
    struct meao_config base, live;
    json_t *ch, *ov;
    int64_t v;
    char why[200];

    assert_int_equal(meao_settings_version(f->db, &v), MEAO_OK);
    assert_int_equal(v, 0);
    assert_int_equal(meao_settings_validate("rate_rest_per_min", "0", why, sizeof why),
                     MEAO_E_INVALID_PARAMETER);
    assert_int_equal(meao_settings_validate("tool_policy_bash", "never", why, sizeof why),
                     MEAO_E_INVALID_PARAMETER);
    assert_int_equal(meao_settings_validate("db_path", "/x", why, sizeof why),
                     MEAO_E_INVALID_PARAMETER);
    assert_int_equal(meao_settings_validate("log_level", "debug", why, sizeof why), MEAO_OK);

    /* one bad value: nothing is written */
    ch = json_pack("{s:s, s:s}", "log_level", "debug", "rate_rest_per_min", "-5");
    assert_int_equal(meao_settings_update(f->db, ch, f->alice, "rid", f->now, why, sizeof why),
                     MEAO_E_INVALID_PARAMETER);
    json_decref(ch);
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM settings"), 0);

    ch = json_pack("{s:s, s:s, s:s}", "log_level", "debug", "rate_rest_per_min", "7",
                   "tool_policy_bash", "ask");
    assert_int_equal(meao_settings_update(f->db, ch, f->alice, "rid", f->now, why, sizeof why),
                     MEAO_OK);
    json_decref(ch);
    assert_int_equal(meao_settings_load(f->db, &ov, &v), MEAO_OK);
    assert_int_equal(v, 1);
    assert_int_equal(json_object_size(ov), 3);
    assert_int_equal(scalar(f->db, "SELECT count(*) FROM audit WHERE action = 'config.update'"), 1);

    meao_config_defaults(&base);
    meao_settings_overlay(&base, ov, &live);
    json_decref(ov);
    assert_int_equal(live.log_level, MEAO_LOG_DEBUG);
    assert_int_equal(live.rate_rest_per_min, 7);
    assert_string_equal(live.tool_policy_bash, "ask");
    assert_ptr_equal(live.db_path, base.db_path); /* shallow: the rest is base's */
    assert_int_equal(base.rate_rest_per_min, 60);

    /* null resets */
    ch = json_pack("{s:n}", "rate_rest_per_min");
    assert_int_equal(meao_settings_update(f->db, ch, f->alice, "rid", f->now, why, sizeof why),
                     MEAO_OK);
    json_decref(ch);
    assert_int_equal(meao_settings_load(f->db, &ov, &v), MEAO_OK);
    assert_int_equal(v, 2);
    assert_null(json_object_get(ov, "rate_rest_per_min"));
    json_decref(ov);
    meao_config_free(&base);
}

static void settings_reach_another_connection(void **state)
{
    struct fx *f = *state;
    struct meao_config cfg;
    struct meao_fake_clock clk;
    struct meao_app app;
    char err[256], why[200];
    json_t *ch;
    enum meao_log_level before = meao_log_get_level();

    /* a second "process": its own app and connection on the same file */
    meao_config_defaults(&cfg);
    meao_fake_clock_init(&clk, T0);
    meao_app_init(&app, &cfg, &clk.clock, "test");
    assert_int_equal(meao_db_open(f->path, 1000, 0, &app.db, err, sizeof err), MEAO_OK);
    meao_app_settings_refresh(&app, false);
    assert_ptr_equal(app.cfg, &cfg);

    ch = json_pack("{s:s}", "rate_messages_per_min", "3");
    assert_int_equal(meao_settings_update(f->db, ch, f->alice, "rid", f->now, why, sizeof why),
                     MEAO_OK);
    json_decref(ch);
    /* not looked at again before the check interval */
    meao_app_settings_refresh(&app, false);
    assert_int_equal(app.cfg->rate_messages_per_min, 10);
    meao_fake_clock_advance(&clk, MEAO_SETTINGS_CHECK_MS);
    meao_app_settings_refresh(&app, false);
    assert_int_equal(app.cfg->rate_messages_per_min, 3);
    assert_int_equal(meao_log_get_level(), before); /* no log_level override: untouched */

    ch = json_pack("{s:n}", "rate_messages_per_min");
    assert_int_equal(meao_settings_update(f->db, ch, f->alice, "rid", f->now, why, sizeof why),
                     MEAO_OK);
    json_decref(ch);
    meao_app_settings_refresh(&app, true);
    assert_ptr_equal(app.cfg, &cfg);
    assert_int_equal(app.cfg->rate_messages_per_min, 10);
    meao_app_fini(&app);
    meao_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(public_ids_are_prefixed_base62),
        cmocka_unit_test_setup_teardown(session_create_get_is_owner_scoped, setup, teardown),
        cmocka_unit_test_setup_teardown(session_end_is_idempotent_and_listed_by_status, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(turn_begin_stores_pending_message_and_leases, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(lease_of_a_crashed_turn_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(lease_of_a_dead_process_is_taken_over_at_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(lease_renewal_keeps_the_session_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(turn_fail_keeps_message_failed_and_frees_session, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(ended_session_refuses_turns, setup, teardown),
        cmocka_unit_test_setup_teardown(history_window_is_last_n_ok_oldest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(messages_page_with_before_and_privacy, setup, teardown),
        cmocka_unit_test(content_hash_is_keyed),
        cmocka_unit_test_setup_teardown(workdir_default_relative_and_absolute, setup, teardown),
        cmocka_unit_test_setup_teardown(workdir_refuses_escapes, setup, teardown),
        cmocka_unit_test_setup_teardown(settings_validate_update_and_overlay, setup, teardown),
        cmocka_unit_test_setup_teardown(settings_reach_another_connection, setup, teardown),
    };
    meao_log_init("test_sessions", MEAO_LOG_ERROR);
    if (meao_lib_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
