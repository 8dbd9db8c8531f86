#include "store/telegram.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* Copy column i (text) into out, truncated to outlen - 1; "" when NULL. */
static void col_text(sqlite3_stmt *st, int i, char *out, size_t outlen)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, outlen, "%s", t ? (const char *)t : "");
}

/* Step a statement that returns no row of interest, then reset it. */
static enum meao_err step_reset(struct meao_db *db, sqlite3_stmt *st)
{
    enum meao_err e = meao_db_step(db, st);
    sqlite3_reset(st);
    return e;
}

/* MEAO_E_NOT_FOUND when the last write changed nothing. */
static enum meao_err changed(struct meao_db *db, enum meao_err e)
{
    if (e == MEAO_OK && sqlite3_changes(meao_db_handle(db)) == 0)
        return MEAO_E_NOT_FOUND;
    return e;
}

/* ---- inbox ---- */

/* End the caller's BEGIN IMMEDIATE transaction: commit on success (FULL
 * durability), else roll back; returns e or the commit's error. */
static enum meao_err in_tx(struct meao_db *db, enum meao_err e)
{
    if (e == MEAO_OK)
        return meao_db_commit(db);
    meao_db_rollback(db);
    return e;
}

enum meao_err meao_tg_inbox_put(struct meao_db *db, int64_t update_id, const char *kind,
                                int64_t chat_id, int64_t from_id, const char *body, size_t len,
                                bool relaxed, int64_t now_ms, bool *duplicate)
{
    /* ON CONFLICT DO NOTHING: a redelivery changes nothing and is no error */
    static const char sql[] =
        "INSERT INTO telegram_inbox(update_id, kind, chat_id, from_id, body, status, received_ms)"
        " VALUES (?1, ?2, ?3, ?4, ?5, 'new', ?6) ON CONFLICT(update_id) DO NOTHING";
    sqlite3_stmt *st;
    enum meao_err e;

    *duplicate = false;
    /* A transaction of its own, never a bare statement: it queues on the
     * writer lock like every other write and, inside a responder's group
     * commit, becomes one savepoint of the group. A FULL part makes the whole
     * group fsync the WAL once before any held answer goes out; a relaxed
     * one commits with NORMAL. */
    e = relaxed ? meao_db_begin_relaxed(db) : meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    st = meao_db_stmt(db, sql);
    if (st == NULL)
        return in_tx(db, MEAO_E_INTERNAL);
    sqlite3_bind_int64(st, 1, update_id);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    if (chat_id)
        sqlite3_bind_int64(st, 3, chat_id);
    if (from_id)
        sqlite3_bind_int64(st, 4, from_id);
    sqlite3_bind_text(st, 5, body, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now_ms);
    e = meao_db_step(db, st);
    /* in a group the shared transaction may already hold this update_id
     * (a redelivery in the same batch): a duplicate too, answered with it */
    if (e == MEAO_OK && sqlite3_changes(meao_db_handle(db)) == 0)
        *duplicate = true;
    sqlite3_reset(st);
    return in_tx(db, e);
}

enum meao_err meao_tg_inbox_open(struct meao_db *db, struct meao_tg_item *out, size_t max,
                                 size_t *n)
{
    static const char sql[] =
        "SELECT update_id, kind, chat_id, from_id, status, attempts, not_before_ms,"
        " reply_message_id, lease_token, session FROM telegram_inbox"
        " WHERE status IN ('new', 'working') ORDER BY update_id LIMIT ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;

    *n = 0;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)max);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
        struct meao_tg_item *it = &out[(*n)++];
        memset(it, 0, sizeof *it);
        it->update_id = sqlite3_column_int64(st, 0);
        col_text(st, 1, it->kind, sizeof it->kind);
        it->chat_id = sqlite3_column_int64(st, 2);
        it->from_id = sqlite3_column_int64(st, 3);
        it->working = strcmp((const char *)sqlite3_column_text(st, 4), "working") == 0;
        it->attempts = sqlite3_column_int64(st, 5);
        it->not_before_ms = sqlite3_column_int64(st, 6);
        it->reply_message_id = sqlite3_column_int64(st, 7);
        col_text(st, 8, it->lease, sizeof it->lease);
        col_text(st, 9, it->session, sizeof it->session);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? MEAO_OK : meao_db_err(rc);
}

enum meao_err meao_tg_inbox_body(struct meao_db *db, int64_t update_id, char **body)
{
    static const char sql[] = "SELECT body FROM telegram_inbox WHERE update_id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e = MEAO_E_NOT_FOUND;
    int rc;

    *body = NULL;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, update_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        *body = strdup(t ? t : "");
        e = *body ? MEAO_OK : MEAO_E_NOMEM;
    } else if (rc != SQLITE_DONE) {
        e = meao_db_err(rc);
    }
    sqlite3_reset(st);
    return e;
}

enum meao_err meao_tg_inbox_start(struct meao_db *db, int64_t update_id)
{
    static const char sql[] = "UPDATE telegram_inbox SET status = 'working', attempts ="
                              " attempts + 1 WHERE update_id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, update_id);
    return changed(db, step_reset(db, st));
}

enum meao_err meao_tg_inbox_set_reply(struct meao_db *db, int64_t update_id, int64_t message_id)
{
    static const char sql[] =
        "UPDATE telegram_inbox SET reply_message_id = ?2 WHERE update_id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, update_id);
    sqlite3_bind_int64(st, 2, message_id);
    return changed(db, step_reset(db, st));
}

enum meao_err meao_tg_inbox_set_turn(struct meao_db *db, int64_t update_id, const char *lease,
                                     const char *session)
{
    static const char sql[] =
        "UPDATE telegram_inbox SET lease_token = ?2, session = ?3 WHERE update_id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, update_id);
    if (lease)
        sqlite3_bind_text(st, 2, lease, -1, SQLITE_STATIC);
    if (session)
        sqlite3_bind_text(st, 3, session, -1, SQLITE_STATIC);
    return changed(db, step_reset(db, st));
}

enum meao_err meao_tg_inbox_finish(struct meao_db *db, int64_t update_id, const char *status,
                                   const char *outcome, int64_t now_ms)
{
    static const char sql[] = "UPDATE telegram_inbox SET status = ?2, outcome = ?3, done_ms = ?4,"
                              " lease_token = NULL WHERE update_id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, update_id);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, outcome ? outcome : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms);
    return changed(db, step_reset(db, st));
}

enum meao_err meao_tg_inbox_retry(struct meao_db *db, int64_t update_id, int64_t not_before_ms,
                                  const char *outcome)
{
    static const char sql[] = "UPDATE telegram_inbox SET status = 'new', not_before_ms = ?2,"
                              " outcome = ?3, lease_token = NULL WHERE update_id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, update_id);
    sqlite3_bind_int64(st, 2, not_before_ms);
    sqlite3_bind_text(st, 3, outcome ? outcome : "", -1, SQLITE_STATIC);
    return changed(db, step_reset(db, st));
}

enum meao_err meao_tg_inbox_prune(struct meao_db *db, int64_t before_ms, int64_t *n)
{
    static const char inbox[] = "DELETE FROM telegram_inbox WHERE status IN ('done', 'ignored',"
                                " 'failed') AND done_ms < ?1";
    static const char prompts[] = "DELETE FROM telegram_approvals WHERE created_ms < ?1";
    sqlite3_stmt *st;
    enum meao_err e;

    if (n)
        *n = 0;
    e = meao_db_begin_relaxed(db);
    if (e != MEAO_OK)
        return e;
    st = meao_db_stmt(db, inbox);
    if (st == NULL)
        return in_tx(db, MEAO_E_INTERNAL);
    sqlite3_bind_int64(st, 1, before_ms);
    e = step_reset(db, st);
    if (e == MEAO_OK && n)
        *n = sqlite3_changes(meao_db_handle(db));
    if (e == MEAO_OK && (st = meao_db_stmt(db, prompts)) != NULL) {
        sqlite3_bind_int64(st, 1, before_ms);
        e = step_reset(db, st);
    }
    return in_tx(db, e);
}

enum meao_err meao_tg_inbox_counts(struct meao_db *db, json_t **out)
{
    static const char sql[] = "SELECT status, count(*) FROM telegram_inbox GROUP BY status";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    json_t *o = json_pack("{s:i, s:i, s:i, s:i, s:i}", "new", 0, "working", 0, "done", 0, "ignored",
                          0, "failed", 0);
    int rc;

    *out = NULL;
    if (st == NULL || o == NULL) {
        json_decref(o);
        return st ? MEAO_E_NOMEM : MEAO_E_INTERNAL;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_object_set_new(o, (const char *)sqlite3_column_text(st, 0),
                            json_integer(sqlite3_column_int64(st, 1)));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(o);
        return meao_db_err(rc);
    }
    *out = o;
    return MEAO_OK;
}

/* ---- identities ---- */

enum meao_err meao_tg_identity_get(struct meao_db *db, int64_t telegram_user_id,
                                   struct meao_user *out)
{
    static const char sql[] = "SELECT user_id FROM telegram_identities WHERE telegram_user_id = ?1"
                              " AND status = 'linked'";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int64_t uid = 0;
    int rc;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, telegram_user_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        uid = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return meao_db_err(rc);
    if (uid == 0)
        return MEAO_E_NOT_FOUND;
    return meao_user_get(db, uid, out);
}

/* Link inside the caller's transaction. */
static enum meao_err link_row(struct meao_db *db, int64_t telegram_user_id, int64_t user_id,
                              int64_t now_ms)
{
    static const char sql[] =
        "INSERT INTO telegram_identities(telegram_user_id, user_id, status, created_ms,"
        " updated_ms) VALUES (?1, ?2, 'linked', ?3, ?3) ON CONFLICT(telegram_user_id) DO UPDATE"
        " SET user_id = ?2, status = 'linked', code_hash = NULL, code_expires_ms = NULL,"
        " updated_ms = ?3";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, telegram_user_id);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_int64(st, 3, now_ms);
    return step_reset(db, st);
}

static enum meao_err audit_link(struct meao_db *db, int64_t now_ms, int64_t actor,
                                const char *action, int64_t telegram_user_id, int64_t user_id)
{
    char target[32], detail[32];
    snprintf(target, sizeof target, "tg:%lld", (long long)telegram_user_id);
    snprintf(detail, sizeof detail, "user:%lld", (long long)user_id);
    return meao_audit(db, now_ms, NULL, actor, action, target, user_id ? detail : NULL);
}

enum meao_err meao_tg_link(struct meao_db *db, int64_t telegram_user_id, int64_t user_id,
                           int64_t actor_user_id, int64_t now_ms)
{
    enum meao_err e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    e = link_row(db, telegram_user_id, user_id, now_ms);
    if (e == MEAO_OK)
        e = audit_link(db, now_ms, actor_user_id, "telegram.link", telegram_user_id, user_id);
    return in_tx(db, e);
}

enum meao_err meao_tg_unlink(struct meao_db *db, int64_t telegram_user_id, int64_t now_ms)
{
    static const char sql[] = "DELETE FROM telegram_identities WHERE telegram_user_id = ?1";
    sqlite3_stmt *st;
    enum meao_err e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    st = meao_db_stmt(db, sql);
    if (st == NULL)
        return in_tx(db, MEAO_E_INTERNAL);
    sqlite3_bind_int64(st, 1, telegram_user_id);
    e = changed(db, step_reset(db, st));
    if (e == MEAO_OK)
        e = audit_link(db, now_ms, 0, "telegram.unlink", telegram_user_id, 0);
    return in_tx(db, e);
}

/* The "tg<id>" user, created when missing; inside the caller's transaction. */
static enum meao_err tg_user(struct meao_db *db, int64_t telegram_user_id, int64_t now_ms,
                             struct meao_user *out)
{
    char name[MEAO_NAME_MAX + 1];
    int64_t id;
    enum meao_err e;
    snprintf(name, sizeof name, "tg%lld", (long long)telegram_user_id);
    e = meao_user_get_by_name(db, name, out);
    /* an owner that happens to bear the name is never handed to a stranger */
    if (e == MEAO_OK && out->role == MEAO_ROLE_OWNER)
        return MEAO_E_CONFLICT;
    if (e != MEAO_E_NOT_FOUND)
        return e;
    e = meao_user_create(db, name, MEAO_ROLE_USER, now_ms, &id);
    if (e != MEAO_OK)
        return e;
    return meao_user_get(db, id, out);
}

/* Allow inside the caller's transaction. */
static enum meao_err allow_in_tx(struct meao_db *db, int64_t telegram_user_id, int64_t actor,
                                 int64_t now_ms, struct meao_user *out)
{
    struct meao_user u;
    enum meao_err e = meao_tg_identity_get(db, telegram_user_id, &u);
    if (e == MEAO_E_NOT_FOUND) {
        e = tg_user(db, telegram_user_id, now_ms, &u);
        if (e == MEAO_OK)
            e = link_row(db, telegram_user_id, u.id, now_ms);
        if (e == MEAO_OK)
            e = audit_link(db, now_ms, actor, "telegram.allow", telegram_user_id, u.id);
    }
    if (e == MEAO_OK && out)
        *out = u;
    return e;
}

enum meao_err meao_tg_allow(struct meao_db *db, int64_t telegram_user_id, int64_t actor_user_id,
                            int64_t now_ms, struct meao_user *out)
{
    enum meao_err e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    return in_tx(db, allow_in_tx(db, telegram_user_id, actor_user_id, now_ms, out));
}

enum meao_err meao_tg_identities_list(struct meao_db *db, json_t **out)
{
    static const char sql[] =
        "SELECT t.telegram_user_id, t.status, u.name, u.role, t.display_name,"
        " t.code_expires_ms FROM telegram_identities t LEFT JOIN users u ON u.id = t.user_id"
        " ORDER BY t.telegram_user_id";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    json_t *list = json_array();
    int rc;

    *out = NULL;
    if (st == NULL || list == NULL) {
        json_decref(list);
        return st ? MEAO_E_NOMEM : MEAO_E_INTERNAL;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o =
            json_pack("{s:I, s:s}", "telegramUserId", (json_int_t)sqlite3_column_int64(st, 0),
                      "status", (const char *)sqlite3_column_text(st, 1));
        if (o == NULL)
            continue;
        if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
            json_object_set_new(o, "user", json_string((const char *)sqlite3_column_text(st, 2)));
            json_object_set_new(o, "role", json_string((const char *)sqlite3_column_text(st, 3)));
        }
        if (sqlite3_column_type(st, 4) != SQLITE_NULL)
            json_object_set_new(o, "displayName",
                                json_string((const char *)sqlite3_column_text(st, 4)));
        if (sqlite3_column_type(st, 5) != SQLITE_NULL)
            json_object_set_new(o, "codeExpiresMs", json_integer(sqlite3_column_int64(st, 5)));
        json_array_append_new(list, o);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(list);
        return meao_db_err(rc);
    }
    *out = list;
    return MEAO_OK;
}

enum meao_err meao_tg_pair_issue(struct meao_db *db, const struct meao_secrets *keys,
                                 int64_t telegram_user_id, const char *display_name, int64_t now_ms,
                                 char code[MEAO_PAIR_CODE_LEN + 1])
{
    static const char sql[] =
        "INSERT INTO telegram_identities(telegram_user_id, status, code_hash, code_expires_ms,"
        " display_name, created_ms, updated_ms) VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?5)"
        " ON CONFLICT(telegram_user_id) DO UPDATE SET code_hash = ?2, code_expires_ms = ?3,"
        " display_name = ?4, updated_ms = ?5 WHERE status = 'pending'";
    unsigned char h[MEAO_PAIR_HASH_BYTES];
    enum meao_err e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    for (int attempt = 0; attempt < 8; attempt++) { /* a (rare) code collision draws again */
        sqlite3_stmt *st = meao_db_stmt(db, sql);
        if (st == NULL)
            return in_tx(db, MEAO_E_INTERNAL);
        meao_pair_code_new(code);
        meao_pair_code_hash(keys, code, h);
        sqlite3_bind_int64(st, 1, telegram_user_id);
        sqlite3_bind_blob(st, 2, h, sizeof h, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, now_ms + MEAO_TG_PAIR_TTL_MS);
        if (display_name)
            sqlite3_bind_text(st, 4, display_name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now_ms);
        e = step_reset(db, st);
        if (e == MEAO_OK) {
            if (sqlite3_changes(meao_db_handle(db)) == 0)
                e = MEAO_E_CONFLICT; /* linked already: the upsert's WHERE refused */
            break;
        }
        if (e != MEAO_E_CONFLICT) /* a conflict here is a code collision */
            break;
    }
    sodium_memzero(h, sizeof h);
    if (e != MEAO_OK)
        code[0] = '\0';
    return in_tx(db, e);
}

enum meao_err meao_tg_pair_approve(struct meao_db *db, const struct meao_secrets *keys,
                                   const char *code, int64_t approver_user_id, int64_t now_ms,
                                   int64_t *telegram_user_id)
{
    static const char sql[] =
        "SELECT telegram_user_id FROM telegram_identities WHERE code_hash = ?1 AND"
        " status = 'pending' AND code_expires_ms > ?2";
    char norm[MEAO_PAIR_CODE_LEN + 1];
    unsigned char h[MEAO_PAIR_HASH_BYTES];
    sqlite3_stmt *st;
    int64_t tg = 0;
    int rc;
    enum meao_err e;

    *telegram_user_id = 0;
    if (!meao_pair_code_normalise(code, norm))
        return MEAO_E_NOT_FOUND;
    meao_pair_code_hash(keys, norm, h);
    e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    st = meao_db_stmt(db, sql);
    if (st == NULL)
        return in_tx(db, MEAO_E_INTERNAL);
    sqlite3_bind_blob(st, 1, h, sizeof h, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, now_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        tg = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return in_tx(db, rc == SQLITE_DONE ? MEAO_E_NOT_FOUND : meao_db_err(rc));
    e = allow_in_tx(db, tg, approver_user_id, now_ms, NULL);
    if (e == MEAO_OK)
        *telegram_user_id = tg;
    return in_tx(db, e);
}

/* ---- chats ---- */

enum meao_err meao_tg_chat_session(struct meao_db *db, int64_t chat_id, int64_t user_id,
                                   char out[MEAO_PUBLIC_ID_LEN + 1])
{
    static const char sql[] = "SELECT session_public_id FROM telegram_chats WHERE chat_id = ?1"
                              " AND user_id = ?2 AND session_public_id IS NOT NULL";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;
    out[0] = '\0';
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, chat_id);
    sqlite3_bind_int64(st, 2, user_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        col_text(st, 0, out, MEAO_PUBLIC_ID_LEN + 1);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return MEAO_OK;
    return rc == SQLITE_DONE ? MEAO_E_NOT_FOUND : meao_db_err(rc);
}

enum meao_err meao_tg_chat_set_session(struct meao_db *db, int64_t chat_id, int64_t user_id,
                                       const char *session, int64_t now_ms)
{
    static const char sql[] =
        "INSERT INTO telegram_chats(chat_id, user_id, session_public_id, updated_ms)"
        " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(chat_id) DO UPDATE SET user_id = ?2,"
        " session_public_id = ?3, updated_ms = ?4";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, chat_id);
    sqlite3_bind_int64(st, 2, user_id);
    if (session)
        sqlite3_bind_text(st, 3, session, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms);
    return step_reset(db, st);
}

/* ---- resuming a turn ---- */

enum meao_err meao_tg_turn_find(struct meao_db *db, int64_t session_id, const char *request_id,
                                struct meao_msg_ref *user_msg, bool *found, bool *pending,
                                char **reply)
{
    static const char sql[] =
        "SELECT id, public_id, status, role, content FROM messages WHERE session_id = ?1 AND"
        " request_id = ?2 ORDER BY id DESC";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;

    *found = *pending = false;
    *reply = NULL;
    memset(user_msg, 0, sizeof *user_msg);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, session_id);
    sqlite3_bind_text(st, 2, request_id, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *role = (const char *)sqlite3_column_text(st, 3);
        if (strcmp(role, "assistant") == 0 && *reply == NULL && !*found) {
            const char *c = (const char *)sqlite3_column_text(st, 4);
            *reply = strdup(c ? c : "");
        } else if (strcmp(role, "user") == 0 && !*found) {
            user_msg->id = sqlite3_column_int64(st, 0);
            col_text(st, 1, user_msg->public_id, sizeof user_msg->public_id);
            *pending = strcmp((const char *)sqlite3_column_text(st, 2), "pending") == 0;
            *found = true;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        free(*reply);
        *reply = NULL;
        return meao_db_err(rc);
    }
    return MEAO_OK;
}

/* ---- approval prompts ---- */

enum meao_err meao_tg_approval_put(struct meao_db *db, const struct meao_tg_approval *a,
                                   int64_t now_ms)
{
    static const char sql[] =
        "INSERT OR REPLACE INTO telegram_approvals(approval_id, chat_id, message_id, user_id,"
        " tool_name, details, status, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, a->approval_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, a->chat_id);
    sqlite3_bind_int64(st, 3, a->message_id);
    sqlite3_bind_int64(st, 4, a->user_id);
    sqlite3_bind_text(st, 5, a->tool_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, a->details, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, a->status[0] ? a->status : "pending", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, now_ms);
    return step_reset(db, st);
}

enum meao_err meao_tg_approval_get(struct meao_db *db, const char *approval_id,
                                   struct meao_tg_approval *out)
{
    static const char sql[] = "SELECT approval_id, chat_id, message_id, user_id, tool_name,"
                              " details, status FROM telegram_approvals WHERE approval_id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;
    memset(out, 0, sizeof *out);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, approval_id, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        col_text(st, 0, out->approval_id, sizeof out->approval_id);
        out->chat_id = sqlite3_column_int64(st, 1);
        out->message_id = sqlite3_column_int64(st, 2);
        out->user_id = sqlite3_column_int64(st, 3);
        col_text(st, 4, out->tool_name, sizeof out->tool_name);
        col_text(st, 5, out->details, sizeof out->details);
        col_text(st, 6, out->status, sizeof out->status);
    }
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return MEAO_OK;
    return rc == SQLITE_DONE ? MEAO_E_NOT_FOUND : meao_db_err(rc);
}

enum meao_err meao_tg_approval_settle(struct meao_db *db, const char *approval_id,
                                      const char *status)
{
    static const char sql[] = "UPDATE telegram_approvals SET status = ?2 WHERE approval_id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, approval_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    return changed(db, step_reset(db, st));
}

/* ---- webhook state ---- */

enum meao_err meao_tg_state_get(struct meao_db *db, const char *key, char *out, size_t outlen)
{
    static const char sql[] = "SELECT value FROM telegram_state WHERE key = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;
    if (outlen)
        out[0] = '\0';
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        col_text(st, 0, out, outlen);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return MEAO_OK;
    return rc == SQLITE_DONE ? MEAO_E_NOT_FOUND : meao_db_err(rc);
}

enum meao_err meao_tg_state_set(struct meao_db *db, const char *key, const char *value,
                                int64_t now_ms)
{
    static const char put[] =
        "INSERT INTO telegram_state(key, value, updated_ms) VALUES (?1, ?2, ?3)"
        " ON CONFLICT(key) DO UPDATE SET value = ?2, updated_ms = ?3";
    static const char del[] = "DELETE FROM telegram_state WHERE key = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, value ? put : del);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (value) {
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, now_ms);
    }
    return step_reset(db, st);
}

void meao_tg_secret_hash(const struct meao_secrets *keys, const char *secret, size_t len,
                         char out[MEAO_TG_SECRET_HEX + 1])
{
    static const char domain[] = "meao telegram webhook secret";
    unsigned char h[32];
    crypto_generichash_state s;
    crypto_generichash_init(&s, keys->token_key, sizeof keys->token_key, sizeof h);
    crypto_generichash_update(&s, (const unsigned char *)domain, sizeof domain);
    crypto_generichash_update(&s, (const unsigned char *)secret, len);
    crypto_generichash_final(&s, h, sizeof h);
    sodium_bin2hex(out, MEAO_TG_SECRET_HEX + 1, h, sizeof h);
    sodium_memzero(h, sizeof h);
}

bool meao_tg_secret_matches(const struct meao_secrets *keys, const char *presented, size_t len,
                            const char *stored_hex)
{
    char got[MEAO_TG_SECRET_HEX + 1];
    bool ok;
    if (presented == NULL || stored_hex == NULL || strlen(stored_hex) != MEAO_TG_SECRET_HEX)
        return false;
    /* both sides are hashes of equal length: the comparison time says nothing */
    meao_tg_secret_hash(keys, presented, len, got);
    ok = sodium_memcmp(got, stored_hex, MEAO_TG_SECRET_HEX) == 0;
    sodium_memzero(got, sizeof got);
    return ok;
}
