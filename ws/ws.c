/* meao-ws: one WebSocket connection (see ws.h and ws/README.md).
 *
 * One thread, one loop. Between turns it polls stdin with a timeout set by
 * the next timer (auth deadline, idle close, token re-check). During a turn
 * it waits on the orchestrator connection with meao_orch_next(), which also
 * wakes when stdin becomes readable, so pings, approval answers and cancels
 * flow while the reply streams, and stdin EOF is seen at once: the
 * orchestrator connection is closed (which denies every pending approval of
 * the turn and cancels it there), the user's message is marked failed, and
 * the program exits before websocketd's signals arrive.
 *
 * Every frame we write is one compact JSON line, written at once with one
 * writev (stdout is a pipe to websocketd; no stdio buffer is kept). Nothing here ever writes a
 * token to a log line. */
#include "ws/ws.h"

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "api/api.h"
#include "api/chat.h"
#include "auth/authn.h"
#include "auth/ratelimit.h"
#include "auth/token.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/lines.h"
#include "core/log.h"
#include "orch/client.h"
#include "store/db.h"
#include "store/identity.h"
#include "store/sessions.h"

#define TURN_SLICE_MS     200  /* how often a running turn looks at its timers */
#define REVOCATION_POLL   1000 /* how often the shared revocation counter is read */
#define REAUTH_GRACE_MS   3000 /* after our token died: time to send a fresh one */
#define MAX_AUTH_FAILURES 3    /* bad `auth` frames before the connection is closed */
#define WS_CHANNEL        "websocket"

struct ws {
    struct meao_app *app;
    const struct meao_ws_env *env;
    int in_fd;
    int out_fd;
    struct meao_lines in;
    char conn_id[MEAO_REQUEST_ID_MAX + 1];

    /* identity */
    bool authed;
    struct meao_principal who;
    char token[MEAO_TOKEN_LEN + 1]; /* kept to re-check it: a secret, zeroed at exit */
    int auth_failures;
    char slot_key[40];
    bool have_slot;

    /* timers, monotonic ms */
    int64_t auth_deadline, last_client, next_recheck, next_poll;
    int64_t reauth_deadline;   /* non-zero: the token died; a fresh `auth` is due by then */
    uint64_t seen_revocations; /* meao_rl_revocations() when the token was last checked */

    /* the user's default (websocket) session, once resolved */
    char default_session[MEAO_PUBLIC_ID_LEN + 1];

    /* the running turn */
    bool turn;
    struct meao_chat chat;
    char turn_rid[MEAO_REQUEST_ID_MAX + 1];
    int64_t turn_deadline, turn_last_frame;

    /* counters for the close log line */
    uint64_t frames_in, frames_out, turns;
    const char *close_reason;
    bool done;
};

/* ---- output ---- */

/* line + "\n" to fd, all of it (a pipe may take a long line in pieces).
 * false when the reader is gone. */
static bool write_line(int fd, const char *line, size_t len)
{
    struct iovec iov[2] = {{(void *)line, len}, {(void *)"\n", 1}};
    struct iovec *v = iov;
    int n = 2;
    while (n > 0) {
        ssize_t w = writev(fd, v, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        while (n > 0 && (size_t)w >= v->iov_len) {
            w -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n > 0) {
            v->iov_base = (char *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
    return true;
}

/* Write v (stolen) as one line. A client that is gone (EPIPE) ends
 * the connection. */
static void emit(struct ws *w, json_t *v)
{
    char *s;
    if (v == NULL)
        return;
    s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (s == NULL)
        return;
    if (!write_line(w->out_fd, s, strlen(s))) {
        if (!w->done)
            w->close_reason = "client_gone";
        w->done = true;
    } else
        w->frames_out++;
    free(s);
}

/* An `error` frame: code is an API error code, message one line; rid and
 * extra (stolen; more fields) may be NULL. */
static void emit_error(struct ws *w, const char *rid, const char *code, const char *message,
                       json_t *extra)
{
    json_t *f = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code, "message", message);
    if (f && rid)
        json_object_set_new(f, "requestId", json_string(rid));
    if (f && extra)
        json_object_update(f, extra);
    json_decref(extra);
    emit(w, f);
}

/* The error of a failed library call: its code and resp's message. */
static void emit_failure(struct ws *w, const char *rid, enum meao_err e,
                         const struct meao_resp *resp)
{
    const struct meao_err_info *info = meao_err_info(e);
    json_t *extra = NULL;
    if (resp->retry_after_s > 0)
        extra = json_pack("{s:I}", "retryAfter", (json_int_t)resp->retry_after_s);
    emit_error(w, rid, info->code, resp->error_message[0] ? resp->error_message : info->message,
               extra);
}

/* The main thread's stack below what is in use now: pages a deep call
 * (SQLite's parser, JSON) touched once stay resident; give them back. A
 * later call faults fresh zero pages in, as the stack always may. */
static void release_stack(void)
{
    static uintptr_t low; /* lowest address of the stack mapping, 0: unknown */
    static bool looked;
    char here;
    uintptr_t sp = (uintptr_t)&here, page = (uintptr_t)sysconf(_SC_PAGESIZE), top;

    if (!looked) {
        FILE *f = fopen("/proc/self/maps", "r");
        char line[256];
        looked = true;
        while (f && fgets(line, sizeof line, f)) {
            unsigned long a, b;
            if (strstr(line, "[stack]") && sscanf(line, "%lx-%lx", &a, &b) == 2)
                low = a;
        }
        if (f)
            fclose(f);
    }
    /* keep a margin below the current frame for the calls still to come */
    top = (sp - 4096) & ~(page - 1);
    if (low && top > low)
        madvise((void *)low, top - low, MADV_DONTNEED);
}

/* An idle connection should cost little memory: between turns the database
 * connection is closed (its schema and statements are most of a process's
 * heap; reopening costs a fraction of a millisecond per turn or check) and
 * the heap's free pages are given back. */
static void trim(struct ws *w)
{
    if (!w->turn) {
        meao_app_db_reset(w->app);
        meao_db_release_idle();
    }
    malloc_trim(0);
    release_stack();
}

static uint64_t revocations(struct ws *w)
{
    struct meao_rl *rl = meao_app_rl(w->app);
    return rl ? meao_rl_revocations(rl) : 0;
}

/* ---- authentication ---- */

static const char *role_name(enum meao_role r)
{
    return r == MEAO_ROLE_OWNER ? "owner" : "user";
}

static void auth_result_fail(struct ws *w, const char *rid, enum meao_err e, const char *msg)
{
    json_t *f = json_pack("{s:s, s:b, s:{s:s, s:s}}", "type", "auth_result", "success", 0, "error",
                          "code", meao_err_info(e)->code, "message", msg);
    if (f && rid)
        json_object_set_new(f, "requestId", json_string(rid));
    emit(w, f);
}

/* Authenticate the connection with token (from the upgrade's header when
 * from_header, else from an `auth` frame whose requestId is rid, or NULL).
 * Answers auth_result. A bad header token closes the connection; a bad
 * frame may be retried up to MAX_AUTH_FAILURES times. A connection stays
 * bound to its first user; a later `auth` of that user replaces the token
 * (after a refresh). */
static void authenticate(struct ws *w, const char *token, bool from_header, const char *rid)
{
    struct meao_principal who;
    uint64_t seen = revocations(w); /* before the check: a revocation after it is noticed */
    enum meao_err e = meao_token_check(w->app, token, &who);
    int64_t count = 0;
    char uid[24];
    json_t *f;

    if (e == MEAO_E_UNAVAILABLE || e == MEAO_E_DB || e == MEAO_E_INTERNAL || e == MEAO_E_NOMEM) {
        auth_result_fail(w, rid, MEAO_E_UNAVAILABLE, "Authentication is unavailable right now");
        w->close_reason = "auth_unavailable";
        w->done = true;
        return;
    }
    if (e != MEAO_OK) {
        auth_result_fail(w, rid, MEAO_E_AUTH_INVALID_TOKEN, "Invalid, expired or revoked token");
        meao_log(MEAO_LOG_INFO, w->conn_id, "ws_auth_failed", "bad token (%s)",
                 from_header ? "header" : "frame");
        trim(w);
        if (from_header || ++w->auth_failures >= MAX_AUTH_FAILURES) {
            w->close_reason = "auth_failed";
            w->done = true;
        }
        return;
    }
    if (w->authed && who.user_id != w->who.user_id) {
        auth_result_fail(w, rid, MEAO_E_FORBIDDEN, "This connection belongs to another user");
        trim(w);
        return;
    }
    if (!w->authed) {
        struct meao_rl *rl = meao_app_rl(w->app);
        snprintf(w->slot_key, sizeof w->slot_key, "ws:u:%lld", (long long)who.user_id);
        if (rl == NULL)
            meao_log(MEAO_LOG_WARN, w->conn_id, "ws_slot", "rate-limit table unavailable");
        else if (meao_rl_conn_acquire(rl, w->slot_key, w->app->cfg->ws_max_connections_per_user,
                                      getpid(), &count) == MEAO_E_RATE_LIMITED) {
            char msg[96];
            snprintf(msg, sizeof msg, "At most %lld open connections per user",
                     (long long)w->app->cfg->ws_max_connections_per_user);
            auth_result_fail(w, rid, MEAO_E_RATE_LIMITED, msg);
            w->close_reason = "too_many_connections";
            w->done = true;
            return;
        } else
            w->have_slot = true;
    }
    w->authed = true;
    w->who = who;
    w->reauth_deadline = 0;
    w->seen_revocations = seen;
    snprintf(w->token, sizeof w->token, "%s", token);
    w->next_recheck = meao_mono_ms(w->app->clock) + w->app->cfg->ws_auth_recheck_ms;
    snprintf(uid, sizeof uid, "%lld", (long long)who.user_id);
    f = json_pack("{s:s, s:b, s:s, s:s, s:s}", "type", "auth_result", "success", 1, "userId", uid,
                  "role", role_name(who.role), "connectionId", w->conn_id);
    if (f && rid)
        json_object_set_new(f, "requestId", json_string(rid));
    emit(w, f);
    meao_log(MEAO_LOG_INFO, w->conn_id, "ws_auth", "user %s authenticated (%lld open)", uid,
             (long long)count);
    trim(w);
}

/* ---- the turn ---- */

static void end_turn(struct ws *w)
{
    meao_chat_end(&w->chat);
    w->turn = false;
    meao_log_set_context(w->conn_id);
    trim(w);
}

/* Settle the running turn as failed and tell the client. */
static void fail_turn(struct ws *w, enum meao_err e, const char *msg)
{
    struct meao_resp resp;
    meao_resp_init(&resp);
    e = meao_chat_fail(&w->chat, &resp, e, msg);
    emit_failure(w, w->turn_rid, e, &resp);
    meao_resp_free(&resp);
    end_turn(w);
}

/* The session a `message` names, or the user's websocket session. */
static enum meao_err resolve_session(struct ws *w, struct meao_db *db, const json_t *frame,
                                     struct meao_resp *resp, struct meao_session *s)
{
    const json_t *sid = json_object_get(frame, "sessionId");
    int64_t now = meao_now_ms(w->app->clock);
    enum meao_err e;

    if (sid && !json_is_null(sid)) {
        if (!json_is_string(sid))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "sessionId must be a string");
        if (!meao_public_id_valid(json_string_value(sid), "ses_"))
            return meao_fail(resp, MEAO_E_NOT_FOUND, "Session not found");
        e = meao_session_get(db, w->who.user_id, json_string_value(sid), now, s);
        if (e == MEAO_E_NOT_FOUND)
            return meao_fail(resp, e, "Session not found");
        return e;
    }
    if (w->default_session[0]) {
        e = meao_session_get(db, w->who.user_id, w->default_session, now, s);
        if (e == MEAO_OK && !s->ended)
            return MEAO_OK;
    }
    e = meao_chat_default_session(w->app, db, w->who.user_id, WS_CHANNEL, w->conn_id, s);
    if (e != MEAO_OK)
        return meao_fail(resp, e == MEAO_E_UNAVAILABLE ? e : MEAO_E_DB,
                         "Cannot open the websocket session");
    snprintf(w->default_session, sizeof w->default_session, "%s", s->public_id);
    return MEAO_OK;
}

/* A `message` / `chat` frame: rate limit, session, then start the turn. */
static void start_turn(struct ws *w, const json_t *frame, const char *rid)
{
    struct meao_resp resp;
    struct meao_session s;
    struct meao_rl_result rr;
    struct meao_rl_class cls;
    struct meao_rl *rl;
    struct meao_db *db;
    enum meao_err e;
    char key[32];

    meao_resp_init(&resp);
    if (w->reauth_deadline) {
        e = meao_fail(&resp, MEAO_E_AUTH_INVALID_TOKEN,
                      "The connection's token is no longer valid; send a fresh auth frame");
        goto fail;
    }
    if (w->turn) {
        e = meao_fail(&resp, MEAO_E_CONFLICT,
                      "A turn is already running on this connection; wait for it or cancel it");
        goto fail;
    }
    if (w->app->cfg->ratelimit_enabled) {
        rl = meao_app_rl(w->app);
        meao_rl_class_ws_messages(w->app->cfg, &cls);
        snprintf(key, sizeof key, "u:%lld", (long long)w->who.user_id);
        if (rl == NULL ||
            meao_rl_check(rl, key, &cls, meao_now_ms(w->app->clock), &rr) != MEAO_OK) {
            e = meao_fail(&resp, MEAO_E_UNAVAILABLE, "Rate limiter unavailable");
            goto fail;
        }
        if (!rr.allowed) {
            resp.retry_after_s = meao_rl_retry_after_s(&rr);
            e = meao_fail(&resp, MEAO_E_RATE_LIMITED, "Too many messages; retry in %lld s",
                          (long long)resp.retry_after_s);
            goto fail;
        }
    }
    db = meao_app_db(w->app);
    if (db == NULL) {
        e = meao_fail(&resp, MEAO_E_UNAVAILABLE, "Database unavailable");
        goto fail;
    }
    e = resolve_session(w, db, frame, &resp, &s);
    if (e != MEAO_OK)
        goto fail;
    snprintf(w->turn_rid, sizeof w->turn_rid, "%s", rid);
    meao_log_set_context(w->turn_rid);
    e = meao_chat_start(&w->chat, w->app, db, &s, w->who.user_id, w->turn_rid,
                        json_object_get(frame, "content"), json_object_get(frame, "attachments"),
                        &resp);
    if (e != MEAO_OK) {
        meao_log_set_context(w->conn_id);
        goto fail;
    }
    w->turn = true;
    w->turns++;
    w->turn_last_frame = meao_mono_ms(w->app->clock);
    w->turn_deadline = w->turn_last_frame + w->app->cfg->turn_deadline_s * 1000;
    meao_log(MEAO_LOG_INFO, NULL, "ws_turn", "session %s turn started", s.public_id);
    meao_resp_free(&resp);
    return;
fail:
    emit_failure(w, rid, e, &resp);
    meao_resp_free(&resp);
}

/* One frame of the orchestrator (stolen). */
static void relay(struct ws *w, json_t *frame, enum meao_orch_type type)
{
    struct meao_resp resp;
    json_t *answer = NULL;
    enum meao_err e;

    switch (type) {
    case MEAO_ORCH_TEXT_DELTA:
    case MEAO_ORCH_TOOL_CALL_START:
    case MEAO_ORCH_TOOL_CALL_RESULT:
    case MEAO_ORCH_APPROVAL_REQUEST:
    case MEAO_ORCH_APPROVAL_RESOLVED:
        /* same shape on both sides (API.md "WebSocket", PROTOCOL.md) */
        emit(w, frame);
        return;
    case MEAO_ORCH_ERROR:
        if (meao_json_str(frame, "requestId") == NULL) {
            /* about one of our lines (an approval answer): the turn goes on */
            const char *code = meao_json_str(frame, "code");
            const char *aid = meao_json_str(frame, "approvalId");
            char line[181];
            meao_api_safe_line(meao_json_str(frame, "message"), line, sizeof line);
            emit_error(w, NULL, code ? code : "INVALID_REQUEST",
                       line[0] ? line : "The orchestrator refused the frame",
                       aid ? json_pack("{s:s}", "approvalId", aid) : NULL);
            json_decref(frame);
            return;
        }
        meao_resp_init(&resp);
        e = meao_chat_error_frame(&w->chat, frame, &resp);
        emit_failure(w, w->turn_rid, e, &resp);
        meao_resp_free(&resp);
        json_decref(frame);
        end_turn(w);
        return;
    case MEAO_ORCH_MESSAGE_COMPLETE:
        meao_resp_init(&resp);
        e = meao_chat_complete(&w->chat, frame, &resp, &answer);
        json_decref(frame);
        if (e != MEAO_OK)
            emit_failure(w, w->turn_rid, e, &resp);
        else
            emit(w,
                 json_pack("{s:s, s:s, s:O, s:O, s:s, s:O, s:O, s:O}", "type", "message_complete",
                           "requestId", w->turn_rid, "messageId", json_object_get(answer, "id"),
                           "userMessageId", json_object_get(answer, "messageId"), "sessionId",
                           w->chat.s.public_id, "content", json_object_get(answer, "content"),
                           "toolCalls", json_object_get(answer, "toolCalls"), "usage",
                           json_object_get(answer, "usage")));
        json_decref(answer);
        meao_resp_free(&resp);
        meao_log(MEAO_LOG_INFO, NULL, "ws_turn_done", "session %s: %s", w->chat.s.public_id,
                 e == MEAO_OK ? "ok" : meao_err_info(e)->code);
        end_turn(w);
        return;
    default: /* pong, and frame types a newer orchestrator may add */ json_decref(frame); return;
    }
}

/* ---- client frames ---- */

static void on_ping(struct ws *w, const json_t *frame)
{
    char ts[32];
    const json_t *t = json_object_get(frame, "timestamp");
    json_t *f = json_pack("{s:s, s:s}", "type", "pong", "serverTime",
                          meao_iso8601(meao_now_ms(w->app->clock), ts, sizeof ts));
    if (f && t && (json_is_string(t) || json_is_number(t)))
        json_object_set(f, "timestamp", (json_t *)t);
    emit(w, f);
}

static void on_approval(struct ws *w, const json_t *frame)
{
    const char *aid = meao_json_str(frame, "approvalId");
    const json_t *approved = json_object_get(frame, "approved");
    const json_t *trust = json_object_get(frame, "trustSession");
    json_t *msg, *answer = NULL;
    enum meao_orch_type type;
    enum meao_err e;
    char uid[24];

    if (aid == NULL)
        aid = meao_json_str(frame, "requestId");
    if (aid == NULL || !meao_request_id_valid(aid) || !json_is_boolean(approved) ||
        (trust && !json_is_boolean(trust))) {
        emit_error(w, NULL, "INVALID_PARAMETER",
                   "approval_response needs approvalId (or requestId) and a boolean approved",
                   NULL);
        return;
    }
    snprintf(uid, sizeof uid, "%lld", (long long)w->who.user_id);
    msg = json_pack("{s:s, s:i, s:s, s:O, s:b, s:s}", "type", "approval_response", "v",
                    MEAO_ORCH_VERSION, "approvalId", aid, "approved", approved, "trustSession",
                    json_is_true(trust), "userId", uid);
    if (msg == NULL)
        return;
    if (w->turn) {
        /* on the turn's own connection: approval_resolved (or an error) is the answer */
        e = meao_orch_send(w->chat.orch, msg, 1000);
        json_decref(msg);
        if (e != MEAO_OK)
            fail_turn(w, MEAO_E_UNAVAILABLE, "Orchestrator connection lost mid-turn");
        return;
    }
    /* no turn here: an approval of another of the user's connections */
    e = meao_orch_call(w->app->cfg->orchestrator_socket, w->app->clock, msg, 5000, &answer, &type);
    json_decref(msg);
    if (e != MEAO_OK) {
        emit_error(w, NULL, "SERVICE_UNAVAILABLE", "Orchestrator unavailable",
                   json_pack("{s:s}", "approvalId", aid));
        return;
    }
    if (type == MEAO_ORCH_ACK)
        emit(w, json_pack("{s:s, s:s, s:O}", "type", "approval_ack", "approvalId", aid, "approved",
                          approved));
    else {
        const char *code = meao_json_str(answer, "code");
        /* another user's approval looks exactly like an unknown one */
        if (code && strcmp(code, "FORBIDDEN") == 0)
            code = "APPROVAL_NOT_FOUND";
        emit_error(w, NULL, code ? code : "INTERNAL_ERROR", "The approval answer was refused",
                   json_pack("{s:s}", "approvalId", aid));
    }
    json_decref(answer);
}

static void on_cancel(struct ws *w, const json_t *frame)
{
    const char *target = meao_json_str(frame, "targetRequestId");
    if (!w->turn || (target && strcmp(target, w->turn_rid) != 0)) {
        emit_error(w, target, "NOT_FOUND", "No running turn with that requestId", NULL);
        return;
    }
    meao_chat_cancel(&w->chat); /* the orchestrator ends the turn with CANCELLED */
}

static void on_line(struct ws *w, const char *line, size_t len)
{
    char why[128], rid[MEAO_REQUEST_ID_MAX + 1];
    const char *type, *given;
    json_t *frame = NULL;

    w->frames_in++;
    w->last_client = meao_mono_ms(w->app->clock);
    if (meao_json_parse(line, len, MEAO_WS_MAX_FRAME, MEAO_JSON_DEFAULT_DEPTH, &frame, why,
                        sizeof why) != MEAO_OK) {
        emit_error(w, NULL, "INVALID_REQUEST", why[0] ? why : "Invalid JSON", NULL);
        return;
    }
    type = meao_json_str(frame, "type");
    if (!json_is_object(frame) || type == NULL) {
        emit_error(w, NULL, "INVALID_REQUEST", "A frame is a JSON object with a string \"type\"",
                   NULL);
        goto out;
    }
    given = meao_json_str(frame, "requestId");
    if (json_object_get(frame, "requestId") && (given == NULL || !meao_request_id_valid(given))) {
        emit_error(w, NULL, "INVALID_PARAMETER", "requestId must be 1-64 of [A-Za-z0-9._:-]", NULL);
        goto out;
    }
    if (strcmp(type, "auth") == 0) {
        authenticate(w, meao_json_str(frame, "token"), false, given);
        goto out;
    }
    if (!w->authed) {
        emit_error(w, given, "AUTH_REQUIRED",
                   "Authenticate first: {\"type\":\"auth\",\"token\":ACCESS_TOKEN}", NULL);
        goto out;
    }
    if (strcmp(type, "ping") == 0)
        on_ping(w, frame);
    else if (strcmp(type, "message") == 0 || strcmp(type, "chat") == 0) {
        meao_request_id_pick(given, rid);
        start_turn(w, frame, rid);
    } else if (strcmp(type, "approval_response") == 0)
        on_approval(w, frame);
    else if (strcmp(type, "cancel") == 0)
        on_cancel(w, frame);
    else
        emit_error(w, given, "INVALID_REQUEST", "Unknown frame type", NULL);
out:
    json_decref(frame);
}

/* Read what stdin has and act on every complete line. */
static void read_client(struct ws *w)
{
    const char *line;
    size_t len;
    ssize_t n = meao_lines_fill(&w->in, w->in_fd);

    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        w->close_reason = errno == ENOMEM ? "out_of_memory" : "read_error";
        w->done = true;
        return;
    }
    for (;;) {
        enum meao_line_status st = meao_lines_next(&w->in, &line, &len);
        if (st == MEAO_LINE_NONE)
            break;
        if (st == MEAO_LINE_EOF) {
            w->close_reason = "client_closed";
            w->done = true;
            break;
        }
        if (st == MEAO_LINE_TOO_LONG) {
            w->frames_in++;
            emit_error(w, NULL, "PAYLOAD_TOO_LARGE", "A frame may be at most 1 MiB", NULL);
            continue;
        }
        if (len == 0) /* websocketd adds a newline per message: an empty one is nothing */
            continue;
        on_line(w, line, len);
        if (w->done)
            break;
    }
}

/* ---- timers ---- */

/* Re-check the connection's token (its revocation counter moved, or the
 * periodic check is due). A token that no longer authenticates — revoked,
 * expired, or replaced by a refresh — gets REAUTH_GRACE_MS for the client to
 * send a fresh token of the same user in an `auth` frame; then the
 * connection closes (a running turn is cancelled). */
static void recheck_token(struct ws *w, int64_t now)
{
    struct meao_principal who;
    uint64_t seen = revocations(w);
    enum meao_err e;

    w->next_recheck = now + w->app->cfg->ws_auth_recheck_ms;
    e = meao_token_check(w->app, w->token, &who);
    trim(w);
    if (e == MEAO_E_UNAVAILABLE || e == MEAO_E_DB || e == MEAO_E_INTERNAL || e == MEAO_E_NOMEM)
        return; /* a database hiccup is no reason to drop anyone: check again later */
    w->seen_revocations = seen;
    if (e == MEAO_OK || w->reauth_deadline)
        return;
    w->reauth_deadline = now + REAUTH_GRACE_MS;
    emit_error(w, NULL, "AUTH_INVALID_TOKEN",
               "The token was revoked or has expired; send a fresh auth frame within 3 s",
               json_pack("{s:b}", "reauth", 1));
    meao_log(MEAO_LOG_INFO, w->conn_id, "ws_token_dead", "token no longer valid; grace period");
}

/* Check every timer; returns the next time one is due. */
static int64_t timers(struct ws *w, int64_t now)
{
    const struct meao_config *cfg = w->app->cfg;
    int64_t next, idle_at;

    if (!w->authed && now >= w->auth_deadline) {
        emit_error(w, NULL, "AUTH_REQUIRED", "No authentication in time; closing", NULL);
        w->close_reason = "auth_timeout";
        w->done = true;
        return now;
    }
    idle_at = w->last_client + cfg->ws_idle_timeout_s * 1000;
    if (w->authed && !w->turn && now >= idle_at) {
        emit_error(w, NULL, "IDLE_TIMEOUT", "No frame for too long; closing", NULL);
        w->close_reason = "idle";
        w->done = true;
        return now;
    }
    if (w->reauth_deadline && now >= w->reauth_deadline) {
        if (w->turn) {
            meao_chat_cancel(&w->chat);
            fail_turn(w, MEAO_E_CANCELLED, "The connection's token was revoked");
        }
        emit_error(w, NULL, "AUTH_INVALID_TOKEN", "The token was revoked or has expired; closing",
                   NULL);
        w->close_reason = "token_revoked";
        w->done = true;
        return now;
    }
    if (w->authed && now >= w->next_poll) {
        w->next_poll = now + REVOCATION_POLL;
        if (revocations(w) != w->seen_revocations)
            w->next_recheck = now;
    }
    if (w->authed && now >= w->next_recheck)
        recheck_token(w, now);
    if (w->turn) {
        if (now >= w->turn_deadline)
            fail_turn(w, MEAO_E_TIMEOUT, "The turn did not finish in time");
        else if (now - w->turn_last_frame >= cfg->orchestrator_idle_timeout_ms)
            fail_turn(w, MEAO_E_TIMEOUT, "The orchestrator went silent");
        else
            meao_chat_renew(&w->chat);
    }
    next = w->authed ? w->next_recheck : w->auth_deadline;
    if (w->authed && w->next_poll < next)
        next = w->next_poll;
    if (w->reauth_deadline && w->reauth_deadline < next)
        next = w->reauth_deadline;
    if (w->authed && !w->turn && idle_at < next)
        next = idle_at;
    if (w->turn && w->turn_deadline < next)
        next = w->turn_deadline;
    return next;
}

/* ---- the loop ---- */

static void wait_turn(struct ws *w, int64_t until)
{
    int64_t now = meao_mono_ms(w->app->clock);
    enum meao_orch_type type;
    json_t *frame = NULL;
    bool client = false;
    enum meao_err e;

    if (until > now + TURN_SLICE_MS)
        until = now + TURN_SLICE_MS;
    e = meao_orch_next(w->chat.orch, until, w->in_fd, &frame, &type, &client);
    if (e == MEAO_OK && client) {
        read_client(w);
        return;
    }
    if (e == MEAO_OK) {
        w->turn_last_frame = meao_mono_ms(w->app->clock);
        relay(w, frame, type);
        return;
    }
    if (e == MEAO_E_TIMEOUT)
        return; /* timers() decides */
    if (e == MEAO_E_UNAVAILABLE || e == MEAO_E_IO)
        fail_turn(w, MEAO_E_UNAVAILABLE, "Orchestrator connection lost mid-turn");
    else
        fail_turn(w, MEAO_E_PROVIDER, "Orchestrator sent an invalid frame");
}

static void wait_client(struct ws *w, int64_t until)
{
    int64_t now = meao_mono_ms(w->app->clock);
    struct pollfd p = {.fd = w->in_fd, .events = POLLIN};
    int64_t ms = until > now ? until - now : 0;
    int r = poll(&p, 1, (int)(ms > 60000 ? 60000 : ms));
    if (r > 0)
        read_client(w);
    else if (r < 0 && errno != EINTR) {
        w->close_reason = "poll_error";
        w->done = true;
    }
}

/* The client is gone or we close: stop the turn (the orchestrator denies its
 * approvals when the connection drops) and give the slot back. */
static void finish(struct ws *w, int64_t started)
{
    if (w->turn) {
        struct meao_resp resp;
        /* drop the orchestrator connection first: its pending approvals are
         * denied at once, before the database write below */
        meao_orch_close(w->chat.orch);
        w->chat.orch = NULL;
        meao_resp_init(&resp);
        (void)meao_chat_fail(&w->chat, &resp, MEAO_E_CANCELLED, "The client went away");
        meao_resp_free(&resp);
        end_turn(w);
    }
    if (w->have_slot && meao_app_rl(w->app))
        meao_rl_conn_release(meao_app_rl(w->app), w->slot_key, getpid());
    sodium_memzero(w->token, sizeof w->token);
    meao_log(MEAO_LOG_INFO, w->conn_id, "ws_close",
             "%s after %lld ms; frames in %llu, out %llu; turns %llu",
             w->close_reason ? w->close_reason : "stopped",
             (long long)(meao_mono_ms(w->app->clock) - started), (unsigned long long)w->frames_in,
             (unsigned long long)w->frames_out, (unsigned long long)w->turns);
}

/* A version other than 1, or a token in the query string: refuse the
 * connection with a frame saying why. */
static bool query_ok(struct ws *w)
{
    const char *q = w->env->query;
    char v[8];
    struct meao_req req;
    bool ok = true;

    if (q == NULL || q[0] == '\0')
        return true;
    meao_req_init(&req);
    req.query = (char *)q;
    if (meao_req_query(&req, "v", v, sizeof v) && strcmp(v, "1") != 0) {
        emit_error(w, NULL, "UNSUPPORTED_VERSION", "This server speaks /ws?v=1",
                   json_pack("{s:[i]}", "supported", 1));
        ok = false;
    } else if (strstr(q, "token=") || strstr(q, "access_token=")) {
        emit_error(w, NULL, "AUTH_INVALID_TOKEN",
                   "Tokens are never accepted in the URL; send an auth frame", NULL);
        ok = false;
    }
    req.query = NULL;
    meao_req_free(&req);
    return ok;
}

int meao_ws_run(struct meao_app *app, const struct meao_ws_env *env, int in_fd, int out_fd,
                volatile int *stop)
{
    struct ws w = {.app = app, .env = env, .in_fd = in_fd, .out_fd = out_fd};
    int64_t started = meao_mono_ms(app->clock);
    char token[MEAO_TOKEN_LEN + 1];

    meao_lines_init(&w.in, MEAO_WS_MAX_FRAME);
    meao_request_id_pick(env->request_id, w.conn_id);
    meao_log_set_context(w.conn_id);
    w.auth_deadline = started + app->cfg->ws_auth_timeout_ms;
    w.last_client = started;
    meao_log(MEAO_LOG_INFO, w.conn_id, "ws_open", "from %s",
             env->real_ip && env->real_ip[0] ? env->real_ip : "unknown");

    if (!query_ok(&w)) {
        w.close_reason = "bad_query";
        w.done = true;
    } else if (env->authorization && env->authorization[0]) {
        if (meao_token_from_authorization(env->authorization, token))
            authenticate(&w, token, true, NULL);
        else
            authenticate(&w, NULL, true, NULL);
        sodium_memzero(token, sizeof token);
    }
    while (!w.done && !*stop) {
        int64_t next = timers(&w, meao_mono_ms(app->clock));
        if (w.done)
            break;
        if (w.turn)
            wait_turn(&w, next);
        else
            wait_client(&w, next);
    }
    if (*stop && !w.close_reason)
        w.close_reason = "signal";
    finish(&w, started);
    meao_lines_free(&w.in);
    return 0;
}
