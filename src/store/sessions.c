#include "store/sessions.h"

#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/identity.h"

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

void meao_public_id_new(const char *prefix, char out[MEAO_PUBLIC_ID_LEN + 1])
{
    /* one random buffer, not a getrandom() per character: bytes >= 248 (the
     * largest multiple of 62 that fits a byte) are rejected, so every
     * character is uniform; 48 bytes almost always suffice */
    unsigned char rnd[48];
    size_t n = MEAO_PUBLIC_ID_TIME, used = sizeof rnd;
    struct timespec ts;
    uint64_t t;

    memcpy(out, prefix, 4);
    clock_gettime(CLOCK_REALTIME, &ts);
    t = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    for (size_t i = MEAO_PUBLIC_ID_TIME; i-- > 0; t /= 62)
        out[4 + i] = b62[t % 62];
    while (n < MEAO_PUBLIC_ID_RANDOM) {
        if (used == sizeof rnd) {
            randombytes_buf(rnd, sizeof rnd);
            used = 0;
        }
        if (rnd[used] < 248)
            out[4 + n++] = b62[rnd[used] % 62];
        used++;
    }
    out[MEAO_PUBLIC_ID_LEN] = '\0';
    sodium_memzero(rnd, sizeof rnd);
}

bool meao_public_id_valid(const char *s, const char *prefix)
{
    if (s == NULL || strncmp(s, prefix, 4) != 0 || strlen(s) != MEAO_PUBLIC_ID_LEN)
        return false;
    for (size_t i = 4; i < MEAO_PUBLIC_ID_LEN; i++)
        if (strchr(b62, s[i]) == NULL)
            return false;
    return true;
}

bool meao_channel_valid(const char *s)
{
    size_t n;
    if (s == NULL)
        return false;
    n = strlen(s);
    if (n == 0 || n > MEAO_CHANNEL_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}

json_t *meao_session_to_json(const struct meao_session *s)
{
    char c[32], u[32], e[32];
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:b}", "id", s->public_id, "channel",
                          s->channel, "createdAt", meao_iso8601(s->created_ms, c, sizeof c),
                          "updatedAt", meao_iso8601(s->updated_ms, u, sizeof u), "messageCount",
                          (json_int_t)s->message_count, "status", s->ended ? "ended" : "active",
                          "busy", s->busy ? 1 : 0);
    if (o && s->ended)
        json_object_set_new(o, "endedAt", json_string(meao_iso8601(s->ended_ms, e, sizeof e)));
    return o;
}

/* Columns every session read selects, in this order. */
#define SESSION_COLS                                                                               \
    "s.id, s.public_id, s.user_id, s.channel, s.work_dir, s.status, s.created_ms,"                 \
    " s.updated_ms, s.ended_ms, s.lease_token IS NOT NULL AND s.lease_until_ms > ?9,"              \
    " (SELECT count(*) FROM messages m WHERE m.session_id = s.id)"

static void read_session(sqlite3_stmt *st, struct meao_session *out)
{
    memset(out, 0, sizeof *out);
    out->id = sqlite3_column_int64(st, 0);
    snprintf(out->public_id, sizeof out->public_id, "%s", col_text(st, 1));
    out->user_id = sqlite3_column_int64(st, 2);
    snprintf(out->channel, sizeof out->channel, "%s", col_text(st, 3));
    snprintf(out->work_dir, sizeof out->work_dir, "%s", col_text(st, 4));
    out->ended = strcmp(col_text(st, 5), "ended") == 0;
    out->created_ms = sqlite3_column_int64(st, 6);
    out->updated_ms = sqlite3_column_int64(st, 7);
    out->ended_ms = sqlite3_column_int64(st, 8);
    out->busy = sqlite3_column_int(st, 9) != 0;
    out->message_count = sqlite3_column_int64(st, 10);
}

enum meao_err meao_session_create(struct meao_db *db, const char *public_id, int64_t user_id,
                                  const char *channel, const char *work_dir, int64_t now_ms,
                                  struct meao_session *out)
{
    static const char sql[] =
        "INSERT INTO sessions(public_id, user_id, channel, work_dir, status, created_ms,"
        " updated_ms) VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?5)";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, public_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_text(st, 3, channel, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, work_dir, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now_ms);
    e = meao_db_step(db, st);
    if (e == MEAO_OK && out) {
        memset(out, 0, sizeof *out);
        out->id = sqlite3_last_insert_rowid(meao_db_handle(db));
        snprintf(out->public_id, sizeof out->public_id, "%s", public_id);
        out->user_id = user_id;
        snprintf(out->channel, sizeof out->channel, "%s", channel);
        snprintf(out->work_dir, sizeof out->work_dir, "%s", work_dir);
        out->created_ms = out->updated_ms = now_ms;
    }
    sqlite3_reset(st);
    return e;
}

/* Step a bound single-session query (?9 = now_ms, for the lease) into out. */
static enum meao_err one_session(sqlite3_stmt *st, int64_t now_ms, struct meao_session *out)
{
    enum meao_err e = MEAO_OK;
    int rc;
    sqlite3_bind_int64(st, 9, now_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_session(st, out);
    else
        e = rc == SQLITE_DONE ? MEAO_E_NOT_FOUND : meao_db_err(rc);
    sqlite3_reset(st);
    return e;
}

enum meao_err meao_session_get(struct meao_db *db, int64_t user_id, const char *public_id,
                               int64_t now_ms, struct meao_session *out)
{
    static const char sql[] =
        "SELECT " SESSION_COLS " FROM sessions s WHERE s.public_id = ?1 AND s.user_id = ?2";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, public_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, user_id);
    return one_session(st, now_ms, out);
}

enum meao_err meao_session_latest(struct meao_db *db, int64_t user_id, const char *channel,
                                  int64_t now_ms, struct meao_session *out)
{
    static const char sql[] = "SELECT " SESSION_COLS " FROM sessions s WHERE s.user_id = ?1"
                              " AND s.channel = ?2 AND s.status = 'active' ORDER BY s.id DESC"
                              " LIMIT 1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_text(st, 2, channel, -1, SQLITE_STATIC);
    return one_session(st, now_ms, out);
}

enum meao_err meao_session_list(struct meao_db *db, int64_t user_id, const char *status, int limit,
                                int64_t now_ms, json_t **out)
{
    static const char sql[] = "SELECT " SESSION_COLS " FROM sessions s WHERE s.user_id = ?1"
                              " AND (?2 IS NULL OR s.status = ?2) ORDER BY s.id DESC LIMIT ?3";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    json_t *arr = json_array();
    enum meao_err e = MEAO_OK;
    int rc;

    *out = NULL;
    if (st == NULL || arr == NULL) {
        json_decref(arr);
        return st ? MEAO_E_NOMEM : MEAO_E_INTERNAL;
    }
    sqlite3_bind_int64(st, 1, user_id);
    if (status)
        sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, limit);
    sqlite3_bind_int64(st, 9, now_ms);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct meao_session s;
        read_session(st, &s);
        if (json_array_append_new(arr, meao_session_to_json(&s)) != 0) {
            e = MEAO_E_NOMEM;
            goto out;
        }
    }
    if (rc != SQLITE_DONE)
        e = meao_db_err(rc);
out:
    sqlite3_reset(st);
    if (e != MEAO_OK)
        json_decref(arr);
    else
        *out = arr;
    return e;
}

enum meao_err meao_session_end(struct meao_db *db, int64_t user_id, const char *public_id,
                               int64_t now_ms)
{
    static const char sql[] =
        "UPDATE sessions SET status = 'ended', updated_ms = ?3, ended_ms = coalesce(ended_ms, ?3)"
        " WHERE public_id = ?1 AND user_id = ?2";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, public_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_int64(st, 3, now_ms);
    e = meao_db_step(db, st);
    if (e == MEAO_OK && sqlite3_changes(meao_db_handle(db)) == 0)
        e = MEAO_E_NOT_FOUND;
    sqlite3_reset(st);
    return e;
}

enum meao_err meao_session_trusted_tools(struct meao_db *db, int64_t session_id, json_t **out)
{
    static const char sql[] = "SELECT trusted_tools FROM sessions WHERE id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e = MEAO_OK;
    int rc;
    *out = NULL;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, session_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = json_loads(col_text(st, 0), 0, NULL);
        if (!json_is_array(*out)) { /* never written but by us; recover rather than fail */
            json_decref(*out);
            *out = json_array();
        }
        if (*out == NULL)
            e = MEAO_E_NOMEM;
    } else {
        e = rc == SQLITE_DONE ? MEAO_E_NOT_FOUND : meao_db_err(rc);
    }
    sqlite3_reset(st);
    return e;
}

/* ---- turns ---- */

static enum meao_err insert_message(struct meao_db *db, int64_t session_id, const char *role,
                                    const char *content, const char *status, const char *tool_calls,
                                    const char *attachments, const int64_t *usage,
                                    const char *request_id, int64_t now_ms,
                                    struct meao_msg_ref *out)
{
    static const char sql[] =
        "INSERT INTO messages(public_id, session_id, role, content, status, tool_calls,"
        " attachments, input_tokens, output_tokens, request_id, created_ms)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    meao_public_id_new("msg_", out->public_id);
    sqlite3_bind_text(st, 1, out->public_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, session_id);
    sqlite3_bind_text(st, 3, role, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, content, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, status, -1, SQLITE_STATIC);
    if (tool_calls)
        sqlite3_bind_text(st, 6, tool_calls, -1, SQLITE_STATIC);
    if (attachments)
        sqlite3_bind_text(st, 7, attachments, -1, SQLITE_STATIC);
    if (usage) {
        sqlite3_bind_int64(st, 8, usage[0]);
        sqlite3_bind_int64(st, 9, usage[1]);
    }
    if (request_id)
        sqlite3_bind_text(st, 10, request_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, now_ms);
    e = meao_db_step(db, st);
    if (e == MEAO_OK)
        out->id = sqlite3_last_insert_rowid(meao_db_handle(db));
    sqlite3_reset(st);
    return e;
}

/* Why a lease could not be taken: the session's state inside the transaction. */
/* Is a lease token's holder gone? Tokens minted by meao_lease_token_new()
 * start with the holder's pid; a process that no longer exists (on this
 * host: the database is local) cannot finish its turn, so its lease is free
 * at once instead of at its expiry. */
static bool holder_gone(const char *token)
{
    char *end;
    long pid;
    if (token == NULL)
        return false;
    errno = 0;
    pid = strtol(token, &end, 10);
    if (errno || end == token || *end != '.' || pid <= 1)
        return false;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Why the lease could not be taken: ended, or busy. A busy lease whose
 * holder process is gone is reported as *dead_token (a copy) so the caller
 * may take it over. */
static enum meao_err refusal(struct meao_db *db, int64_t session_id, enum meao_turn_refusal *why,
                             char dead_token[MEAO_LEASE_TOKEN_MAX])
{
    static const char sql[] = "SELECT status, lease_token FROM sessions WHERE id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;
    dead_token[0] = '\0';
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, session_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *why = strcmp(col_text(st, 0), "ended") == 0 ? MEAO_TURN_ENDED : MEAO_TURN_BUSY;
        if (*why == MEAO_TURN_BUSY && holder_gone(col_text(st, 1)))
            snprintf(dead_token, MEAO_LEASE_TOKEN_MAX, "%s", col_text(st, 1));
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return MEAO_E_NOT_FOUND;
    return rc == SQLITE_ROW ? MEAO_E_CONFLICT : meao_db_err(rc);
}

void meao_lease_token_new(char out[MEAO_LEASE_TOKEN_MAX])
{
    char id[MEAO_PUBLIC_ID_LEN + 1];
    meao_public_id_new("lse_", id);
    snprintf(out, MEAO_LEASE_TOKEN_MAX, "%ld.%s", (long)getpid(), id + 4);
}

enum meao_err meao_turn_begin(struct meao_db *db, const struct meao_session *s,
                              const struct meao_turn_start *t, int64_t now_ms,
                              struct meao_msg_ref *msg, enum meao_turn_refusal *why)
{
    static const char lease_sql[] =
        "UPDATE sessions SET lease_token = ?2, lease_request_id = ?3, lease_until_ms = ?4,"
        " updated_ms = ?5 WHERE id = ?1 AND status = 'active'"
        " AND (lease_token IS NULL OR lease_until_ms <= ?5 OR lease_token = ?6)";
    /* we hold the lease: a message still pending belongs to a turn that died */
    static const char abandoned_sql[] =
        "UPDATE messages SET status = 'failed', error_code = 'CANCELLED'"
        " WHERE session_id = ?1 AND status = 'pending'";
    char dead[MEAO_LEASE_TOKEN_MAX] = "";
    sqlite3_stmt *st;
    enum meao_err e;

    *why = MEAO_TURN_OK;
    memset(msg, 0, sizeof *msg);
    e = meao_db_begin_relaxed(db);
    if (e != MEAO_OK)
        return e;
    st = meao_db_stmt(db, lease_sql);
    if (st == NULL) {
        e = MEAO_E_INTERNAL;
        goto fail;
    }
    sqlite3_bind_int64(st, 1, s->id);
    sqlite3_bind_text(st, 2, t->lease_token, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, t->request_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms + t->lease_ms);
    sqlite3_bind_int64(st, 5, now_ms);
    e = meao_db_step(db, st);
    if (e == MEAO_OK && sqlite3_changes(meao_db_handle(db)) == 0) {
        sqlite3_reset(st);
        e = refusal(db, s->id, why, dead);
        if (e == MEAO_E_CONFLICT && dead[0]) {
            /* the holder died mid-turn: take its lease over */
            meao_log(MEAO_LOG_WARN, NULL, "lease_takeover",
                     "session %s: the process holding the turn is gone", s->public_id);
            sqlite3_bind_text(st, 6, dead, -1, SQLITE_STATIC);
            e = meao_db_step(db, st);
            if (e == MEAO_OK && sqlite3_changes(meao_db_handle(db)) == 0)
                e = MEAO_E_CONFLICT;
            else if (e == MEAO_OK)
                *why = MEAO_TURN_OK;
        }
    }
    sqlite3_reset(st);
    if (e != MEAO_OK)
        goto fail;
    st = meao_db_stmt(db, abandoned_sql);
    if (st == NULL) {
        e = MEAO_E_INTERNAL;
        goto fail;
    }
    sqlite3_bind_int64(st, 1, s->id);
    e = meao_db_step(db, st);
    sqlite3_reset(st);
    if (e != MEAO_OK)
        goto fail;
    e = insert_message(db, s->id, "user", t->content, "pending", NULL, t->attachments, NULL,
                       t->request_id, now_ms, msg);
    if (e != MEAO_OK)
        goto fail;
    e = meao_audit(db, now_ms, t->request_id, t->user_id, "message.create", s->public_id,
                   msg->public_id);
    if (e != MEAO_OK)
        goto fail;
    return meao_db_commit(db);
fail:
    meao_db_rollback(db);
    return e;
}

enum meao_err meao_turn_renew(struct meao_db *db, int64_t session_id, const char *lease_token,
                              int64_t now_ms, int64_t lease_ms)
{
    static const char sql[] =
        "UPDATE sessions SET lease_until_ms = ?3 WHERE id = ?1 AND lease_token = ?2";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, session_id);
    sqlite3_bind_text(st, 2, lease_token, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms + lease_ms);
    e = meao_db_step(db, st);
    if (e == MEAO_OK && sqlite3_changes(meao_db_handle(db)) == 0)
        e = MEAO_E_CONFLICT;
    sqlite3_reset(st);
    return e;
}

static enum meao_err release_lease(struct meao_db *db, int64_t session_id, const char *lease_token,
                                   int64_t now_ms)
{
    static const char sql[] =
        "UPDATE sessions SET lease_token = NULL, lease_request_id = NULL, lease_until_ms = NULL,"
        " updated_ms = ?3 WHERE id = ?1 AND lease_token = ?2";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, session_id);
    sqlite3_bind_text(st, 2, lease_token, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms);
    e = meao_db_step(db, st); /* 0 rows: it expired and someone else holds it now; fine */
    sqlite3_reset(st);
    return e;
}

static enum meao_err settle_user_message(struct meao_db *db, int64_t msg_id, const char *status,
                                         const char *code)
{
    static const char sql[] = "UPDATE messages SET status = ?2, error_code = ?3 WHERE id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, msg_id);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    if (code)
        sqlite3_bind_text(st, 3, code, -1, SQLITE_STATIC);
    e = meao_db_step(db, st);
    sqlite3_reset(st);
    return e;
}

static enum meao_err session_public_id(struct meao_db *db, int64_t session_id,
                                       char out[MEAO_PUBLIC_ID_LEN + 1])
{
    static const char sql[] = "SELECT public_id FROM sessions WHERE id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, session_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        snprintf(out, MEAO_PUBLIC_ID_LEN + 1, "%s", col_text(st, 0));
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return MEAO_E_NOT_FOUND;
    return rc == SQLITE_ROW ? MEAO_OK : meao_db_err(rc);
}

enum meao_err meao_turn_complete(struct meao_db *db, int64_t session_id, const char *lease_token,
                                 const struct meao_msg_ref *user_msg,
                                 const struct meao_turn_result *r, int64_t now_ms,
                                 struct meao_msg_ref *out)
{
    static const char trust_sql[] = "UPDATE sessions SET trusted_tools = ?2 WHERE id = ?1";
    char *calls = NULL, *trusted = NULL;
    char sid[MEAO_PUBLIC_ID_LEN + 1];
    int64_t usage[2] = {r->input_tokens, r->output_tokens};
    sqlite3_stmt *st;
    enum meao_err e;

    memset(out, 0, sizeof *out);
    if (r->tool_calls && json_array_size(r->tool_calls) > 0 &&
        (calls = json_dumps(r->tool_calls, JSON_COMPACT)) == NULL)
        return MEAO_E_NOMEM;
    if (r->trusted_tools && (trusted = json_dumps(r->trusted_tools, JSON_COMPACT)) == NULL) {
        free(calls);
        return MEAO_E_NOMEM;
    }
    e = meao_db_begin_relaxed(db);
    if (e != MEAO_OK)
        goto out;
    e = session_public_id(db, session_id, sid);
    if (e != MEAO_OK)
        goto fail;
    e = insert_message(db, session_id, "assistant", r->content, "ok", calls, NULL, usage,
                       r->request_id, now_ms, out);
    if (e != MEAO_OK)
        goto fail;
    e = settle_user_message(db, user_msg->id, "ok", NULL);
    if (e != MEAO_OK)
        goto fail;
    if (trusted) {
        st = meao_db_stmt(db, trust_sql);
        if (st == NULL) {
            e = MEAO_E_INTERNAL;
            goto fail;
        }
        sqlite3_bind_int64(st, 1, session_id);
        sqlite3_bind_text(st, 2, trusted, -1, SQLITE_STATIC);
        e = meao_db_step(db, st);
        sqlite3_reset(st);
        if (e != MEAO_OK)
            goto fail;
    }
    e = release_lease(db, session_id, lease_token, now_ms);
    if (e != MEAO_OK)
        goto fail;
    e = meao_audit(db, now_ms, r->request_id, r->user_id, "turn.complete", sid, out->public_id);
    if (e != MEAO_OK)
        goto fail;
    e = meao_db_commit(db);
    goto out;
fail:
    meao_db_rollback(db);
out:
    free(calls);
    free(trusted);
    return e;
}

enum meao_err meao_turn_fail(struct meao_db *db, int64_t session_id, const char *lease_token,
                             const struct meao_msg_ref *user_msg, const char *code,
                             const char *request_id, int64_t user_id, int64_t now_ms)
{
    char sid[MEAO_PUBLIC_ID_LEN + 1];
    enum meao_err e = meao_db_begin_relaxed(db);
    if (e != MEAO_OK)
        return e;
    e = session_public_id(db, session_id, sid);
    if (e == MEAO_OK)
        e = settle_user_message(db, user_msg->id, "failed", code);
    if (e == MEAO_OK)
        e = release_lease(db, session_id, lease_token, now_ms);
    if (e == MEAO_OK)
        e = meao_audit(db, now_ms, request_id, user_id, "turn.fail", sid, code);
    if (e != MEAO_OK) {
        meao_db_rollback(db);
        return e;
    }
    return meao_db_commit(db);
}

enum meao_err meao_history_window(struct meao_db *db, int64_t session_id, int64_t before_id,
                                  int max_n, json_t **out)
{
    static const char sql[] = "SELECT role, content FROM messages WHERE session_id = ?1"
                              " AND status = 'ok' AND id < ?2 ORDER BY id DESC LIMIT ?3";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    json_t *arr = json_array();
    enum meao_err e = MEAO_OK;
    int rc;

    *out = NULL;
    if (st == NULL || arr == NULL) {
        json_decref(arr);
        return st ? MEAO_E_NOMEM : MEAO_E_INTERNAL;
    }
    sqlite3_bind_int64(st, 1, session_id);
    sqlite3_bind_int64(st, 2, before_id > 0 ? before_id : INT64_MAX);
    sqlite3_bind_int(st, 3, max_n);
    /* newest first from the index; inserted at the front to end up oldest first */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *m = json_pack("{s:s, s:s%}", "role", col_text(st, 0), "content", col_text(st, 1),
                              (size_t)sqlite3_column_bytes(st, 1));
        if (m == NULL || json_array_insert_new(arr, 0, m) != 0) {
            e = MEAO_E_NOMEM;
            break;
        }
    }
    if (e == MEAO_OK && rc != SQLITE_DONE)
        e = meao_db_err(rc);
    sqlite3_reset(st);
    if (e != MEAO_OK)
        json_decref(arr);
    else
        *out = arr;
    return e;
}

/* ---- history over the API ---- */

void meao_content_hash(const unsigned char key[32], const char *content, size_t len,
                       char out[MEAO_CONTENT_HASH_LEN + 1])
{
    unsigned char h[crypto_generichash_BYTES_MIN]; /* 16; the first 8 are shown */
    crypto_generichash(h, sizeof h, (const unsigned char *)content, len, key, 32);
    sodium_bin2hex(out, MEAO_CONTENT_HASH_LEN + 1, h, MEAO_CONTENT_HASH_LEN / 2);
}

static enum meao_err message_row_id(struct meao_db *db, int64_t session_id, const char *public_id,
                                    int64_t *out)
{
    static const char sql[] = "SELECT id FROM messages WHERE public_id = ?1 AND session_id = ?2";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, public_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, session_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return MEAO_E_NOT_FOUND;
    return rc == SQLITE_ROW ? MEAO_OK : meao_db_err(rc);
}

enum meao_err meao_messages_page(struct meao_db *db, int64_t session_id,
                                 const struct meao_page_query *q, json_t **out, bool *has_more)
{
    static const char sql[] =
        "SELECT public_id, role, content, status, tool_calls IS NOT NULL, tool_call_id,"
        " created_ms FROM messages WHERE session_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3";
    int64_t before = INT64_MAX;
    sqlite3_stmt *st;
    json_t *arr = NULL;
    enum meao_err e;
    int rc, n = 0;

    *out = NULL;
    *has_more = false;
    if (q->before) {
        e = message_row_id(db, session_id, q->before, &before);
        if (e != MEAO_OK)
            return e;
    }
    st = meao_db_stmt(db, sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    arr = json_array();
    if (arr == NULL)
        return MEAO_E_NOMEM;
    sqlite3_bind_int64(st, 1, session_id);
    sqlite3_bind_int64(st, 2, before);
    sqlite3_bind_int(st, 3, q->limit + 1); /* one more tells whether older ones exist */
    e = MEAO_OK;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *content = col_text(st, 2);
        size_t clen = (size_t)sqlite3_column_bytes(st, 2);
        const char *tcid = (const char *)sqlite3_column_text(st, 5);
        char hash[MEAO_CONTENT_HASH_LEN + 1], ts[32];
        json_t *m;
        if (++n > q->limit) {
            *has_more = true;
            break;
        }
        meao_content_hash(q->hash_key, content, clen, hash);
        m = json_pack("{s:s, s:s, s:s, s:o, s:b, s:s, s:s}", "id", col_text(st, 0), "role",
                      col_text(st, 1), "timestamp",
                      meao_iso8601(sqlite3_column_int64(st, 6), ts, sizeof ts), "toolCallId",
                      tcid ? json_string(tcid) : json_null(), "hasToolCalls",
                      sqlite3_column_int(st, 4), "contentHash", hash, "status", col_text(st, 3));
        if (m && q->include_content)
            json_object_set_new(m, "content", json_stringn(content, clen));
        if (m == NULL || json_array_insert_new(arr, 0, m) != 0) {
            e = MEAO_E_NOMEM;
            break;
        }
    }
    if (e == MEAO_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        e = meao_db_err(rc);
    sqlite3_reset(st);
    if (e != MEAO_OK) {
        json_decref(arr);
        return e;
    }
    *out = arr;
    return MEAO_OK;
}
