#include "telegram/worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "auth/ratelimit.h"
#include "auth/secrets.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "orch/client.h"
#include "proto/telegram.h"
#include "store/db.h"
#include "store/pairing.h"
#include "store/sessions.h"
#include "store/settings.h"
#include "store/telegram.h"
#include "store/workdir.h"
#include "telegram/botapi.h"

#define MAX_OPEN        256   /* inbox rows looked at per pass */
#define TURN_LEASE_MS   60000 /* as for REST turns: a crashed worker frees the session soon */
#define LEASE_RENEW_MS  15000
#define SLICE_MS        200
#define SEND_TIMEOUT_MS 5000
#define ORCH_SHORT_MS   5000
#define BUSY_RETRY_MS   2000 /* the session runs another turn (e.g. over REST) */
#define STOP_GRACE_MS   15000
#define MAX_BACKOFF_MS  60000
#define KEEP_SETTLED_MS (7 * 24 * 3600 * 1000LL) /* settled rows still catch redeliveries */
#define PRUNE_EVERY_MS  (3600 * 1000LL)

static const char msg_private[] =
    "Sorry, this assistant is private and only talks to people its owner has allowed.";
static const char msg_down[] = "The assistant is unavailable right now. Your message is kept "
                               "and will be answered as soon as it is back.";
static const char msg_gave_up[] =
    "Sorry, the assistant stayed unavailable for too long; your message was dropped.";
static const char msg_text_only[] = "Only text messages are supported.";

struct worker {
    const struct meao_config *cfg;
    const struct meao_clock *clock;
    const int *stop;
    struct meao_secrets keys;
    struct meao_rl *rl; /* strangers' replies; NULL: none are sent (fail closed) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t njobs;
    int64_t *job_chat;   /* per slot: the chat a job holds (0: none) */
    int64_t *job_update; /* per slot: its update id (-1: free slot) */
};

struct job {
    struct worker *w;
    struct meao_tg_item item;
    size_t slot;
};

/* One update being handled. */
struct ctx {
    struct worker *w;
    const struct meao_config *cfg;
    struct meao_db *db;
    struct meao_tg_bot *bot;
    struct meao_tg_item *item;
    struct meao_tg_update u;
    json_t *update;
    struct meao_user user;
    char rid[48];      /* the rows' request id: "tg-<update_id>", stable across attempts */
    char orch_rid[64]; /* the orchestrator's: "tg-<update_id>.<attempt>" */
    bool settled;
};

/* The reply being streamed into one message. */
struct stream {
    struct meao_buf text;
    int64_t message_id;
    int64_t last_edit_ms; /* monotonic */
    char *shown;          /* what the message shows now */
};

static int64_t now_ms(const struct ctx *c)
{
    return meao_now_ms(c->w->clock);
}

static int64_t mono_ms(const struct ctx *c)
{
    return meao_mono_ms(c->w->clock);
}

static bool stopping(const struct worker *w)
{
    return __atomic_load_n(w->stop, __ATOMIC_ACQUIRE) != 0;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    if (ms > 0)
        nanosleep(&ts, NULL);
}

/* ---- settling the inbox row ---- */

static void finish(struct ctx *c, const char *status, const char *outcome)
{
    enum meao_err e = meao_tg_inbox_finish(c->db, c->item->update_id, status, outcome, now_ms(c));
    if (e != MEAO_OK)
        meao_log(MEAO_LOG_ERROR, NULL, "telegram_inbox", "update %lld: cannot mark %s: %s",
                 (long long)c->item->update_id, status, meao_strerror(e));
    else
        meao_log(MEAO_LOG_INFO, NULL, "telegram_update", "update %lld %s: %s",
                 (long long)c->item->update_id, status, outcome);
    c->settled = true;
}

/* Put the row back for another try. A failure that may be permanent (a
 * database or Bot API that keeps failing) gives up after
 * telegram_max_attempts tries; waiting for a busy session or a stop does not
 * count against that. */
static void retry_later(struct ctx *c, int64_t delay_ms, const char *why, bool counted)
{
    enum meao_err e;
    if (counted && c->item->attempts + 1 >= c->cfg->telegram_max_attempts) {
        char outcome[160];
        snprintf(outcome, sizeof outcome, "gave up after %lld attempts: %s",
                 (long long)c->item->attempts + 1, why);
        finish(c, "failed", outcome);
        return;
    }
    e = meao_tg_inbox_retry(c->db, c->item->update_id, now_ms(c) + delay_ms, why);
    if (e != MEAO_OK)
        meao_log(MEAO_LOG_ERROR, NULL, "telegram_inbox", "update %lld: cannot requeue: %s",
                 (long long)c->item->update_id, meao_strerror(e));
    else
        meao_log(MEAO_LOG_INFO, NULL, "telegram_update", "update %lld retried in %lld ms: %s",
                 (long long)c->item->update_id, (long long)delay_ms, why);
    c->settled = true;
}

/* A plain answer in the update's chat (best effort: failures are logged). */
static void say(struct ctx *c, const char *text)
{
    (void)meao_tg_send(c->bot, c->u.chat_id, text, NULL, NULL);
}

/* ---- strangers ---- */

/* May we send this stranger one more reply? (GCRA, shared limiter) */
static bool stranger_reply_allowed(struct ctx *c)
{
    struct meao_rl_class cls = {
        .name = "tgs",
        .limits = {{c->cfg->telegram_stranger_replies_per_hour, 3600000}},
        .nlimits = 1,
    };
    struct meao_rl_result r;
    char key[40];
    if (c->w->rl == NULL)
        return false;
    snprintf(key, sizeof key, "tg:%lld", (long long)c->u.from_id);
    if (meao_rl_check(c->w->rl, key, &cls, now_ms(c), &r) != MEAO_OK)
        return false;
    return r.allowed;
}

static void refuse_stranger(struct ctx *c)
{
    if (stranger_reply_allowed(c))
        say(c, msg_private);
    finish(c, "ignored", "stranger refused");
}

static void pairing_stranger(struct ctx *c)
{
    char code[MEAO_PAIR_CODE_LEN + 1], text[400], name[65];
    enum meao_err e;
    if (!stranger_reply_allowed(c)) {
        finish(c, "ignored", "stranger rate-limited");
        return;
    }
    snprintf(name, sizeof name, "%s", c->u.from_name ? c->u.from_name : "");
    e = meao_tg_pair_issue(c->db, &c->w->keys, c->u.from_id, name, now_ms(c), code);
    if (e != MEAO_OK) {
        say(c, msg_private);
        finish(c, "ignored", "pairing code not issued");
        return;
    }
    snprintf(text, sizeof text,
             "This assistant only talks to people its owner has approved. Your pairing code is "
             "%s (valid for 5 minutes): ask the owner to send /pair %s to this bot.",
             code, code);
    say(c, text);
    finish(c, "ignored", "pairing code issued");
}

/* ---- sessions ---- */

static enum meao_err new_session(struct ctx *c, struct meao_session *s)
{
    char id[MEAO_PUBLIC_ID_LEN + 1], dir[MEAO_WORKDIR_MAX + 1], why[200];
    int64_t now = now_ms(c);
    enum meao_err e;

    meao_public_id_new("ses_", id);
    e = meao_workdir_resolve(&(struct meao_workdir_req){.root = c->cfg->workspace_root,
                                                        .user_id = c->user.id,
                                                        .default_leaf = id},
                             dir, sizeof dir, why, sizeof why);
    if (e != MEAO_OK)
        return e;
    e = meao_db_begin_relaxed(c->db);
    if (e != MEAO_OK)
        return e;
    e = meao_session_create(c->db, id, c->user.id, "telegram", dir, now, s);
    if (e == MEAO_OK)
        e = meao_audit(c->db, now, c->rid, c->user.id, "session.create", id, "telegram");
    if (e == MEAO_OK)
        e = meao_tg_chat_set_session(c->db, c->u.chat_id, c->user.id, id, now);
    if (e == MEAO_OK)
        return meao_db_commit(c->db);
    meao_db_rollback(c->db);
    return e;
}

/* The chat's current session, made when it has none (or it ended). */
static enum meao_err chat_session(struct ctx *c, struct meao_session *s)
{
    char id[MEAO_PUBLIC_ID_LEN + 1];
    enum meao_err e = meao_tg_chat_session(c->db, c->u.chat_id, c->user.id, id);
    if (e == MEAO_OK) {
        e = meao_session_get(c->db, c->user.id, id, now_ms(c), s);
        if (e == MEAO_OK && !s->ended)
            return MEAO_OK;
    }
    if (e != MEAO_OK && e != MEAO_E_NOT_FOUND)
        return e;
    return new_session(c, s);
}

/* ---- streaming the reply ---- */

/* The part of text the reply message shows: its first 4096 characters. */
static size_t first_chunk(const char *text, size_t len)
{
    return meao_tg_split_point(text, len, MEAO_TG_TEXT_MAX);
}

/* Show text[0..n) in the reply message: send it when there is none yet,
 * else edit it (once, or with retries when final). */
static enum meao_err show(struct ctx *c, struct stream *st, const char *text, size_t n, bool final)
{
    char *dup;
    enum meao_err e;

    if (n == 0 || (st->shown && strlen(st->shown) == n && memcmp(st->shown, text, n) == 0))
        return MEAO_OK;
    dup = strndup(text, n);
    if (dup == NULL)
        return MEAO_E_NOMEM;
    if (st->message_id == 0) {
        e = meao_tg_send_ex(c->bot, c->u.chat_id, dup, NULL, final ? MEAO_TG_RETRY : MEAO_TG_ONCE,
                            &st->message_id);
        if (e == MEAO_OK && st->message_id)
            (void)meao_tg_inbox_set_reply(c->db, c->item->update_id, st->message_id);
    } else {
        int64_t wait = st->last_edit_ms + c->cfg->telegram_edit_interval_ms - mono_ms(c);
        if (!final && wait > 0) { /* not yet: the next delta or slice shows it */
            free(dup);
            return MEAO_OK;
        }
        sleep_ms(wait); /* the final edit waits its turn too: at most one edit a second */
        e = meao_tg_edit(c->bot, c->u.chat_id, st->message_id, dup, NULL,
                         final ? MEAO_TG_RETRY : MEAO_TG_ONCE);
        if (e == MEAO_E_INVALID_REQUEST && final) {
            /* the message is gone (deleted by the user?): show the reply anew */
            st->message_id = 0;
            e = meao_tg_send(c->bot, c->u.chat_id, dup, NULL, &st->message_id);
            if (e == MEAO_OK && st->message_id)
                (void)meao_tg_inbox_set_reply(c->db, c->item->update_id, st->message_id);
        }
    }
    st->last_edit_ms = mono_ms(c);
    if (e == MEAO_OK) {
        free(st->shown);
        st->shown = dup;
    } else {
        free(dup);
    }
    return e;
}

/* Deliver the whole reply: the first chunk in the reply message, the rest as
 * new messages. MEAO_OK when everything went out. */
static enum meao_err deliver(struct ctx *c, struct stream *st, const char *content)
{
    size_t len, off, n;
    enum meao_err e = MEAO_OK;

    if (content == NULL || content[0] == '\0')
        content = "(no reply)";
    len = strlen(content);
    n = first_chunk(content, len);
    e = show(c, st, content, n, true);
    if (e != MEAO_OK)
        return e;
    for (off = n; off < len && e == MEAO_OK; off += n) {
        char *part;
        n = meao_tg_split_point(content + off, len - off, MEAO_TG_TEXT_MAX);
        part = strndup(content + off, n);
        if (part == NULL)
            return MEAO_E_NOMEM;
        e = meao_tg_send(c->bot, c->u.chat_id, part, NULL, NULL);
        free(part);
    }
    return e;
}

static void stream_free(struct stream *st)
{
    meao_buf_free(&st->text);
    free(st->shown);
}

/* ---- approvals ---- */

static json_t *approval_keyboard(const char *id)
{
    char a[MEAO_TG_CALLBACK_MAX + 1], d[MEAO_TG_CALLBACK_MAX + 1], i[MEAO_TG_CALLBACK_MAX + 1];
    snprintf(a, sizeof a, "a:%s", id);
    snprintf(d, sizeof d, "d:%s", id);
    snprintf(i, sizeof i, "i:%s", id);
    return json_pack("{s:[[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}]]}", "inline_keyboard", "text",
                     "Allow", "callback_data", a, "text", "Deny", "callback_data", d, "text",
                     "Details", "callback_data", i);
}

static void approval_prompt(struct ctx *c, const json_t *frame)
{
    const char *id = meao_json_str(frame, "approvalId");
    const char *tool = meao_json_str(frame, "toolName");
    const json_t *req = json_object_get(frame, "request");
    const char *summary = meao_json_str(req, "summary");
    const char *args = meao_json_str(frame, "argsSummary");
    struct meao_tg_approval a = {0};
    char text[600];
    json_t *kb;

    if (id == NULL || strlen(id) > MEAO_TG_APPROVAL_MAX || strlen(id) + 2 > MEAO_TG_CALLBACK_MAX)
        return;
    snprintf(a.approval_id, sizeof a.approval_id, "%s", id);
    snprintf(a.tool_name, sizeof a.tool_name, "%s", tool ? tool : "tool");
    snprintf(a.details, sizeof a.details, "%s%s%s", summary ? summary : "",
             summary && args ? "\n" : "", args ? args : "");
    a.chat_id = c->u.chat_id;
    a.user_id = c->user.id;
    snprintf(a.status, sizeof a.status, "pending");
    /* stored before the prompt is shown, so a press always finds it */
    (void)meao_tg_approval_put(c->db, &a, now_ms(c));
    snprintf(text, sizeof text,
             "Approval needed: %s\n%.300s\nAllow it? (No answer in %lld s "
             "means no.)",
             a.tool_name, summary ? summary : "",
             (long long)json_integer_value(json_object_get(frame, "timeout")));
    kb = approval_keyboard(id);
    if (kb && meao_tg_send(c->bot, c->u.chat_id, text, kb, &a.message_id) == MEAO_OK)
        (void)meao_tg_approval_put(c->db, &a, now_ms(c));
    json_decref(kb);
}

/* approval_resolved: the prompt shows the outcome, its buttons go. */
static void approval_outcome(struct ctx *c, const json_t *frame)
{
    const char *id = meao_json_str(frame, "approvalId");
    const char *reason = meao_json_str(frame, "reason");
    bool approved = json_is_true(json_object_get(frame, "approved"));
    struct meao_tg_approval a;
    const char *status, *what;
    char text[200];

    if (id == NULL || meao_tg_approval_get(c->db, id, &a) != MEAO_OK)
        return; /* a trusted tool's approval: never prompted */
    if (approved) {
        status = "approved";
        what = "Allowed";
    } else if (reason && strcmp(reason, "timeout") == 0) {
        status = "timeout";
        what = "No answer in time: denied";
    } else {
        status = "denied";
        what = "Denied";
    }
    (void)meao_tg_approval_settle(c->db, id, status);
    snprintf(text, sizeof text, "%s: %s", what, a.tool_name);
    if (a.message_id)
        (void)meao_tg_edit(c->bot, a.chat_id, a.message_id, text, NULL, MEAO_TG_RETRY);
}

/* ---- the turn ---- */

/* The orchestrator cannot be reached: tell the user once, keep the update,
 * try again later with back-off. */
static void orchestrator_down(struct ctx *c)
{
    int64_t attempts = c->item->attempts + 1, backoff = 1000;
    if (attempts >= c->cfg->telegram_max_attempts) {
        say(c, msg_gave_up);
        finish(c, "failed", "orchestrator unavailable; gave up");
        return;
    }
    if (attempts == 1)
        say(c, msg_down);
    for (int64_t i = 1; i < attempts && backoff < MAX_BACKOFF_MS; i++)
        backoff *= 2;
    retry_later(c, backoff < MAX_BACKOFF_MS ? backoff : MAX_BACKOFF_MS, "orchestrator unavailable",
                false);
}

struct turn {
    struct meao_session s;
    struct meao_msg_ref user_msg;
    char lease[MEAO_LEASE_TOKEN_MAX];
    bool leased;
};

static void turn_settle_failed(struct ctx *c, struct turn *t, const char *code)
{
    enum meao_err e;
    if (!t->leased)
        return;
    e = meao_turn_fail(c->db, t->s.id, t->lease, &t->user_msg, code, c->rid, c->user.id, now_ms(c));
    if (e != MEAO_OK) /* the lease expires by itself */
        meao_log(MEAO_LOG_ERROR, NULL, "turn_settle", "cannot mark the message failed: %s",
                 meao_strerror(e));
    t->leased = false;
    (void)meao_tg_inbox_set_turn(c->db, c->item->update_id, NULL, NULL);
}

static void turn_complete(struct ctx *c, struct turn *t, struct stream *st, const json_t *frame)
{
    const char *content = meao_json_str(frame, "content");
    const json_t *usage = json_object_get(frame, "usage");
    const json_t *calls = json_object_get(frame, "toolCalls");
    const json_t *trusted = json_object_get(frame, "trustedTools");
    struct meao_msg_ref reply;
    struct meao_turn_result r = {
        .content = content ? content : "",
        .tool_calls = json_is_array(calls) ? calls : NULL,
        .input_tokens = json_integer_value(json_object_get(usage, "inputTokens")),
        .output_tokens = json_integer_value(json_object_get(usage, "outputTokens")),
        .trusted_tools = json_is_array(trusted) ? trusted : NULL,
        .request_id = c->rid,
        .user_id = c->user.id,
    };
    enum meao_err e =
        meao_turn_complete(c->db, t->s.id, t->lease, &t->user_msg, &r, now_ms(c), &reply);
    if (e != MEAO_OK) {
        turn_settle_failed(c, t, "SERVICE_UNAVAILABLE");
        say(c, "Sorry, the reply could not be stored; please send your message again.");
        finish(c, "failed", "reply not stored");
        return;
    }
    t->leased = false;
    (void)meao_tg_inbox_set_turn(c->db, c->item->update_id, NULL, NULL);
    e = deliver(c, st, r.content);
    if (e == MEAO_OK)
        finish(c, "done", "replied");
    else if (e == MEAO_E_UNAVAILABLE || e == MEAO_E_RATE_LIMITED || e == MEAO_E_CANCELLED)
        retry_later(c, 5000, "Bot API unavailable; the reply is stored", true);
    else
        finish(c, "failed", "Bot API refused the reply");
}

static void turn_error(struct ctx *c, struct turn *t, const json_t *frame)
{
    const char *code = meao_json_str(frame, "code");
    enum meao_err e = meao_orch_error_code_to_err(code);
    char line[181], text[260];

    turn_settle_failed(c, t, meao_err_info(e)->code);
    if (e == MEAO_E_UNAVAILABLE) { /* BUSY or SHUTTING_DOWN: the turn never ran */
        orchestrator_down(c);
        return;
    }
    snprintf(line, sizeof line, "%s",
             meao_json_str(frame, "message") ? meao_json_str(frame, "message") : "");
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    snprintf(text, sizeof text, "Sorry, that failed: %s",
             line[0] ? line : meao_err_info(e)->message);
    say(c, text);
    finish(c, "done", "turn failed");
}

/* Read frames until the turn ends; every way out settles the row. */
static void run_frames(struct ctx *c, struct turn *t, struct meao_orch_client *oc)
{
    const struct meao_config *cfg = c->cfg;
    int64_t start = mono_ms(c), deadline = start + cfg->turn_deadline_s * 1000;
    int64_t last_frame = start, next_renew = start + LEASE_RENEW_MS;
    struct stream st = {.message_id = c->item->reply_message_id};

    while (!c->settled) {
        int64_t now = mono_ms(c), slice = now + SLICE_MS;
        enum meao_orch_type type;
        json_t *frame = NULL;
        enum meao_err e;

        if (slice > deadline)
            slice = deadline;
        e = meao_orch_next(oc, slice, -1, &frame, &type, NULL);
        now = mono_ms(c);
        if (e == MEAO_E_TIMEOUT) {
            if (stopping(c->w)) { /* cancelled by closing; run again by the next start */
                turn_settle_failed(c, t, "SERVICE_UNAVAILABLE");
                retry_later(c, 0, "worker stopped mid-turn", false);
            } else if (now >= deadline || now - last_frame >= cfg->orchestrator_idle_timeout_ms) {
                turn_settle_failed(c, t, "GATEWAY_TIMEOUT");
                say(c, "Sorry, that took too long and was stopped.");
                finish(c, "done", "turn timed out");
            } else {
                if (now >= next_renew) {
                    (void)meao_turn_renew(c->db, t->s.id, t->lease, now_ms(c), TURN_LEASE_MS);
                    next_renew = now + LEASE_RENEW_MS;
                }
                if (st.text.len)
                    (void)show(c, &st, st.text.p, first_chunk(st.text.p, st.text.len), false);
            }
            continue;
        }
        if (e != MEAO_OK) { /* connection lost mid-turn: the orchestrator went away */
            turn_settle_failed(c, t, "SERVICE_UNAVAILABLE");
            orchestrator_down(c);
            break;
        }
        last_frame = now;
        switch (type) {
        case MEAO_ORCH_TEXT_DELTA: {
            const char *d = meao_json_str(frame, "delta");
            if (d && meao_buf_puts(&st.text, d))
                (void)show(c, &st, st.text.p, first_chunk(st.text.p, st.text.len), false);
            break;
        }
        case MEAO_ORCH_APPROVAL_REQUEST: approval_prompt(c, frame); break;
        case MEAO_ORCH_APPROVAL_RESOLVED: approval_outcome(c, frame); break;
        case MEAO_ORCH_MESSAGE_COMPLETE:
            if (meao_json_str(frame, "requestId") &&
                strcmp(meao_json_str(frame, "requestId"), c->orch_rid) == 0) {
                turn_complete(c, t, &st, frame);
            } else {
                turn_settle_failed(c, t, "PROVIDER_ERROR");
                finish(c, "failed", "orchestrator answered another turn");
            }
            break;
        case MEAO_ORCH_ERROR: turn_error(c, t, frame); break;
        default: break; /* tool events: the reply tells the story */
        }
        json_decref(frame);
    }
    stream_free(&st);
}

/* A reply already stored by an earlier attempt: deliver it, do not run again. */
static bool resume(struct ctx *c, const struct meao_session *s)
{
    struct meao_msg_ref um;
    struct meao_session then;
    bool found, pending;
    char *reply = NULL;
    struct stream st = {.message_id = c->item->reply_message_id};
    enum meao_err e;

    if (c->item->attempts == 0)
        return false;
    /* the dead attempt's turn ran in the session the row names (the chat's
     * current one may have changed since, e.g. the old one was ended) */
    if (c->item->session[0] && strcmp(c->item->session, s->public_id) != 0 &&
        meao_session_get(c->db, c->user.id, c->item->session, now_ms(c), &then) == MEAO_OK)
        s = &then;
    if (meao_tg_turn_find(c->db, s->id, c->rid, &um, &found, &pending, &reply) != MEAO_OK)
        return false;
    if (found && pending && c->item->lease[0]) /* the dead attempt's turn: release it */
        (void)meao_turn_fail(c->db, s->id, c->item->lease, &um, "SERVICE_UNAVAILABLE", c->rid,
                             c->user.id, now_ms(c));
    if (reply == NULL)
        return false;
    e = deliver(c, &st, reply);
    if (e == MEAO_OK)
        finish(c, "done", "stored reply delivered again");
    else if (e == MEAO_E_UNAVAILABLE || e == MEAO_E_RATE_LIMITED || e == MEAO_E_CANCELLED)
        retry_later(c, 5000, "Bot API unavailable; the reply is stored", true);
    else
        finish(c, "failed", "Bot API refused the reply");
    stream_free(&st);
    free(reply);
    return true;
}

static void run_turn(struct ctx *c, const char *text)
{
    struct turn t = {0};
    struct meao_orch_client *oc = NULL;
    json_t *trusted = NULL, *history = NULL, *msg = NULL;
    enum meao_turn_refusal why;
    char uid[24];
    size_t base;
    enum meao_err e;

    e = chat_session(c, &t.s);
    if (e != MEAO_OK) {
        retry_later(c, BUSY_RETRY_MS, "database unavailable", true);
        return;
    }
    if (resume(c, &t.s))
        return;
    e = meao_orch_connect(c->cfg->orchestrator_socket, c->w->clock,
                          c->cfg->orchestrator_connect_timeout_ms,
                          c->cfg->orchestrator_idle_timeout_ms, &oc);
    if (e != MEAO_OK) {
        orchestrator_down(c);
        return;
    }
    if (meao_session_trusted_tools(c->db, t.s.id, &trusted) != MEAO_OK)
        goto db_down;
    snprintf(uid, sizeof uid, "%lld", (long long)c->user.id);
    msg = meao_orch_turn_request(c->orch_rid, t.s.public_id, uid, "telegram", t.s.work_dir, trusted,
                                 NULL, text, NULL);
    if (msg) { /* tool policies changed at run time (PATCH /api/v1/config) apply here too */
        json_t *ov = NULL, *policies = NULL;
        struct meao_config live;
        int64_t version;
        if (meao_settings_load(c->db, &ov, &version) == MEAO_OK && json_object_size(ov) > 0) {
            meao_settings_overlay(c->cfg, ov, &live);
            policies = meao_api_tool_policies(&live, c->cfg);
        }
        if (policies)
            json_object_set_new(msg, "toolPolicies", policies);
        json_decref(ov);
    }
    base = msg ? meao_orch_line_size(msg) : 0;
    if (base == 0 || base + 64 > MEAO_ORCH_MAX_LINE || strlen(text) > MEAO_ORCH_MAX_CONTENT) {
        say(c, "Sorry, that message is too long.");
        finish(c, "done", "message too long");
        goto out;
    }
    if (meao_workdir_ensure(c->cfg->workspace_root, t.s.work_dir) != MEAO_OK) {
        say(c, "Sorry, the session's work directory is unavailable.");
        finish(c, "failed", "work directory unavailable");
        goto out;
    }
    meao_lease_token_new(t.lease);
    if (meao_tg_inbox_set_turn(c->db, c->item->update_id, t.lease, t.s.public_id) != MEAO_OK)
        goto db_down;
    e = meao_turn_begin(c->db, &t.s,
                        &(struct meao_turn_start){.lease_token = t.lease,
                                                  .request_id = c->rid,
                                                  .user_id = c->user.id,
                                                  .content = text,
                                                  .lease_ms = TURN_LEASE_MS},
                        now_ms(c), &t.user_msg, &why);
    if (e == MEAO_E_CONFLICT) { /* busy (a REST turn, or our dead attempt's lease) or ended */
        if (why == MEAO_TURN_ENDED)
            (void)meao_tg_chat_set_session(c->db, c->u.chat_id, c->user.id, NULL, now_ms(c));
        retry_later(c, why == MEAO_TURN_ENDED ? 0 : BUSY_RETRY_MS, "session busy", false);
        goto out;
    }
    if (e != MEAO_OK)
        goto db_down;
    t.leased = true;
    if (meao_history_window(c->db, t.s.id, t.user_msg.id, MEAO_HISTORY_MAX_N, &history) !=
        MEAO_OK) {
        turn_settle_failed(c, &t, "SERVICE_UNAVAILABLE");
        goto db_down;
    }
    meao_orch_fit_history(history, MEAO_ORCH_MAX_LINE - 64 - base);
    json_object_set(msg, "history", history);
    if (meao_orch_send(oc, msg, SEND_TIMEOUT_MS) != MEAO_OK) {
        turn_settle_failed(c, &t, "SERVICE_UNAVAILABLE");
        orchestrator_down(c);
        goto out;
    }
    run_frames(c, &t, oc);
    goto out;
db_down:
    retry_later(c, BUSY_RETRY_MS, "database unavailable", true);
out:
    if (t.leased) /* not reached in practice: every path above settles */
        turn_settle_failed(c, &t, "INTERNAL_ERROR");
    meao_orch_close(oc);
    json_decref(msg);
    json_decref(history);
    json_decref(trusted);
}

/* ---- commands ---- */

/* "/cmd" or "/cmd@bot" at the start of text: true with the argument (after
 * spaces) in *arg. */
static bool command(const char *text, const char *cmd, const char **arg)
{
    size_t n = strlen(cmd);
    if (strncmp(text, cmd, n) != 0)
        return false;
    if (text[n] == '@')
        n += strcspn(text + n, " \n");
    else if (text[n] != '\0' && text[n] != ' ' && text[n] != '\n')
        return false;
    text += n;
    while (*text == ' ' || *text == '\n')
        text++;
    *arg = text;
    return true;
}

static void cmd_new(struct ctx *c)
{
    char id[MEAO_PUBLIC_ID_LEN + 1];
    struct meao_session s;
    if (meao_tg_chat_session(c->db, c->u.chat_id, c->user.id, id) == MEAO_OK)
        (void)meao_session_end(c->db, c->user.id, id, now_ms(c));
    if (new_session(c, &s) != MEAO_OK) {
        retry_later(c, BUSY_RETRY_MS, "database unavailable", true);
        return;
    }
    say(c, "New session started.");
    finish(c, "done", "new session");
}

static void cmd_pair(struct ctx *c, const char *code)
{
    char name[MEAO_NAME_MAX + 1], text[300];
    int64_t tg = 0;
    enum meao_err e;

    if (c->user.role != MEAO_ROLE_OWNER) {
        say(c, "Only the owner can approve pairings.");
        finish(c, "done", "pair refused: not the owner");
        return;
    }
    /* a Telegram stranger's code first, then a device's (store/pairing.h) */
    e = meao_tg_pair_approve(c->db, &c->w->keys, code, c->user.id, now_ms(c), &tg);
    if (e == MEAO_OK) {
        snprintf(text, sizeof text, "Approved: Telegram user %lld may now talk to the assistant.",
                 (long long)tg);
        say(c, text);
        /* a private chat's id is the user's id */
        (void)meao_tg_send(c->bot, tg, "You have been approved; you can talk to the assistant now.",
                           NULL, NULL);
        finish(c, "done", "telegram pairing approved");
        return;
    }
    e = meao_pair_decide(c->db, &c->w->keys, c->user.id, code, true, now_ms(c), name);
    if (e == MEAO_OK) {
        snprintf(text, sizeof text, "Approved the device \"%s\".", name);
        say(c, text);
        finish(c, "done", "device pairing approved");
        return;
    }
    say(c, "No pending pairing has that code (or it expired).");
    finish(c, "done", "pair: no such code");
}

/* ---- updates ---- */

static void handle_message(struct ctx *c)
{
    const char *policy = c->cfg->telegram_dm_policy, *arg;
    enum meao_err e;

    if (!c->u.private_chat || c->u.from_id == 0) {
        finish(c, "ignored", "not a private chat");
        return;
    }
    e = meao_tg_identity_get(c->db, c->u.from_id, &c->user);
    if (e == MEAO_E_NOT_FOUND && strcmp(policy, "open") == 0)
        e = meao_tg_allow(c->db, c->u.from_id, 0, now_ms(c), &c->user);
    if (e == MEAO_E_NOT_FOUND || e == MEAO_E_CONFLICT) { /* conflict: see meao_tg_allow */
        if (strcmp(policy, "pairing") == 0 && e == MEAO_E_NOT_FOUND)
            pairing_stranger(c);
        else
            refuse_stranger(c);
        return;
    }
    if (e != MEAO_OK) {
        retry_later(c, BUSY_RETRY_MS, "database unavailable", true);
        return;
    }
    if (strcmp(policy, "owner_only") == 0 && c->user.role != MEAO_ROLE_OWNER) {
        refuse_stranger(c);
        return;
    }
    if (c->u.text == NULL || c->u.text[0] == '\0') {
        say(c, msg_text_only);
        finish(c, "done", "not a text message");
        return;
    }
    if (command(c->u.text, "/start", &arg)) {
        say(c, "Hello! Send a message to talk to the assistant; /new starts a new session.");
        finish(c, "done", "start");
    } else if (command(c->u.text, "/new", &arg)) {
        cmd_new(c);
    } else if (command(c->u.text, "/pair", &arg)) {
        cmd_pair(c, arg);
    } else {
        run_turn(c, c->u.text);
    }
}

static void handle_callback(struct ctx *c)
{
    char action = 0, id[MEAO_TG_APPROVAL_MAX + 1], uid[24], details[4 * 190 + 1];
    struct meao_tg_approval a;
    struct meao_user presser;
    json_t *call, *answer = NULL;
    enum meao_orch_type type;
    const char *reply;
    enum meao_err e;

    if (!meao_tg_callback_parse(c->u.callback_data, &action, id, sizeof id)) {
        (void)meao_tg_answer_callback(c->bot, c->u.callback_id, "Unknown button.", false);
        finish(c, "ignored", "unknown button");
        return;
    }
    if (meao_tg_approval_get(c->db, id, &a) != MEAO_OK ||
        meao_tg_identity_get(c->db, c->u.from_id, &presser) != MEAO_OK || presser.id != a.user_id) {
        (void)meao_tg_answer_callback(c->bot, c->u.callback_id,
                                      "This approval is not yours or no longer exists.", false);
        finish(c, "ignored", "approval not found");
        return;
    }
    if (action == 'i') {
        const char *d = a.details[0] ? a.details : a.tool_name;
        /* an alert holds 200 characters: cut on a character boundary */
        size_t n = meao_tg_split_point(d, strlen(d), 190);
        if (n >= sizeof details)
            n = sizeof details - 1;
        memcpy(details, d, n);
        details[n] = '\0';
        (void)meao_tg_answer_callback(c->bot, c->u.callback_id, details, true);
        finish(c, "done", "approval details");
        return;
    }
    snprintf(uid, sizeof uid, "%lld", (long long)a.user_id);
    call = json_pack("{s:s, s:i, s:s, s:b, s:s}", "type", "approval_response", "v",
                     MEAO_ORCH_VERSION, "approvalId", id, "approved", action == 'a', "userId", uid);
    e = call ? meao_orch_call(c->cfg->orchestrator_socket, c->w->clock, call, ORCH_SHORT_MS,
                              &answer, &type)
             : MEAO_E_NOMEM;
    if (e != MEAO_OK)
        reply = "The assistant is unavailable; try again.";
    else if (type == MEAO_ORCH_ACK)
        reply = action == 'a' ? "Allowed." : "Denied.";
    else
        reply = "Too late: this approval was already decided or timed out.";
    (void)meao_tg_answer_callback(c->bot, c->u.callback_id, reply, false);
    finish(c, "done", reply);
    json_decref(call);
    json_decref(answer);
}

static void handle(struct ctx *c)
{
    char why[200], *body = NULL;
    enum meao_err e;

    if (meao_tg_inbox_start(c->db, c->item->update_id) != MEAO_OK ||
        meao_tg_inbox_body(c->db, c->item->update_id, &body) != MEAO_OK) {
        c->settled = true; /* the row stays open: the next pass takes it again */
        free(body);
        return;
    }
    e = meao_json_parse(body, strlen(body), strlen(body) + 1, 64, &c->update, why, sizeof why);
    free(body);
    if (e == MEAO_OK)
        e = meao_tg_update_parse(c->update, &c->u, why, sizeof why);
    if (e != MEAO_OK) { /* the webhook checked it: only a damaged row gets here */
        finish(c, "failed", "stored update unreadable");
        return;
    }
    if (c->u.kind == MEAO_TG_CALLBACK)
        handle_callback(c);
    else if (c->u.kind == MEAO_TG_MESSAGE)
        handle_message(c);
    else
        finish(c, "ignored", "update type not handled");
}

/* ---- the job threads ---- */

static void *job_main(void *arg)
{
    struct job *j = arg;
    struct worker *w = j->w;
    const struct meao_config *cfg = w->cfg;
    struct ctx c = {.w = w, .cfg = cfg, .item = &j->item};
    char err[256];

    snprintf(c.rid, sizeof c.rid, "tg-%lld", (long long)j->item.update_id);
    snprintf(c.orch_rid, sizeof c.orch_rid, "tg-%lld.%lld", (long long)j->item.update_id,
             (long long)j->item.attempts + 1);
    meao_log_set_context(c.rid);
    if (meao_db_open(cfg->db_path, (int)cfg->db_busy_timeout_ms, 0, &c.db, err, sizeof err) !=
        MEAO_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "db_open", "%s", err);
    } else {
        c.bot =
            meao_tg_bot_new(&(struct meao_tg_bot_opts){.base = cfg->telegram_api_base,
                                                       .token = cfg->telegram_bot_token,
                                                       .timeout_ms = cfg->telegram_api_timeout_ms,
                                                       .retry_max_ms = cfg->telegram_retry_max_ms,
                                                       .stop = w->stop,
                                                       .clock = w->clock});
        if (c.bot)
            handle(&c);
    }
    json_decref(c.update);
    meao_tg_bot_free(c.bot);
    meao_db_close(c.db);
    meao_log_set_context(NULL);

    pthread_mutex_lock(&w->mu);
    w->job_chat[j->slot] = 0;
    w->job_update[j->slot] = -1;
    w->njobs--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    free(j);
    return NULL;
}

/* Is a job running for this chat (chat != 0) or this update? Under mu. */
static bool taken(const struct worker *w, int64_t chat, int64_t update)
{
    for (int64_t i = 0; i < w->cfg->telegram_max_chats; i++)
        if ((chat && w->job_chat[i] == chat) || w->job_update[i] == update)
            return true;
    return false;
}

/* Start a job for it; false when no slot or thread was available. Under mu. */
static bool start_job(struct worker *w, const struct meao_tg_item *it, bool chained)
{
    pthread_attr_t attr;
    pthread_t th;
    struct job *j;
    size_t slot = 0;
    int rc;

    while ((int64_t)slot < w->cfg->telegram_max_chats && w->job_update[slot] != -1)
        slot++;
    if ((int64_t)slot == w->cfg->telegram_max_chats || (j = calloc(1, sizeof *j)) == NULL)
        return false;
    j->w = w;
    j->item = *it;
    j->slot = slot;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&th, &attr, job_main, j);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        meao_log(MEAO_LOG_ERROR, NULL, "thread", "cannot start a job: %s", strerror(rc));
        free(j);
        return false;
    }
    w->job_chat[slot] = chained ? it->chat_id : 0;
    w->job_update[slot] = it->update_id;
    w->njobs++;
    return true;
}

static bool in_list(const int64_t *list, size_t n, int64_t v)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == v)
            return true;
    return false;
}

/* One pass over the open rows: start what may start, in order per chat. */
static void dispatch(struct worker *w, struct meao_db *db, struct meao_tg_item *rows, int64_t *held)
{
    size_t n = 0, nheld = 0;
    int64_t now = meao_now_ms(w->clock);

    /* read the rows under the lock: a job marks its row settled before it
     * frees its slot (which needs the lock), so a row read here is either
     * still taken or no longer open — never both free and stale, which would
     * start a finished update a second time */
    pthread_mutex_lock(&w->mu);
    if (meao_tg_inbox_open(db, rows, MAX_OPEN, &n) != MEAO_OK) {
        pthread_mutex_unlock(&w->mu);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct meao_tg_item *it = &rows[i];
        bool message = strcmp(it->kind, "message") == 0;
        if (strcmp(it->kind, "callback_query") == 0) {
            /* not behind its chat: the chat's turn may be waiting for this press */
            if (!taken(w, 0, it->update_id) && !start_job(w, it, false))
                break;
            continue;
        }
        if (!message) {
            pthread_mutex_unlock(&w->mu);
            (void)meao_tg_inbox_finish(db, it->update_id, "ignored", "update type not handled",
                                       now);
            pthread_mutex_lock(&w->mu);
            continue;
        }
        /* later updates of a chat wait for its earlier ones */
        if (in_list(held, nheld, it->chat_id) || taken(w, it->chat_id, it->update_id) ||
            it->not_before_ms > now) {
            if (nheld < MAX_OPEN)
                held[nheld++] = it->chat_id;
            continue;
        }
        if (!start_job(w, it, true))
            break;
        if (nheld < MAX_OPEN)
            held[nheld++] = it->chat_id;
    }
    pthread_mutex_unlock(&w->mu);
}

int meao_tg_worker_run(const struct meao_config *cfg, const int *stop, int *reopen)
{
    struct worker w = {.cfg = cfg, .clock = meao_clock_system(), .stop = stop};
    struct meao_tg_item *rows = calloc(MAX_OPEN, sizeof *rows);
    int64_t *held = calloc(MAX_OPEN, sizeof *held);
    struct meao_db *db = NULL;
    char err[256];
    int64_t next_prune = 0;
    int rc = 1;

    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.job_chat = calloc((size_t)cfg->telegram_max_chats, sizeof *w.job_chat);
    w.job_update = calloc((size_t)cfg->telegram_max_chats, sizeof *w.job_update);
    if (rows == NULL || held == NULL || w.job_chat == NULL || w.job_update == NULL)
        goto out;
    for (int64_t i = 0; i < cfg->telegram_max_chats; i++)
        w.job_update[i] = -1;
    if (cfg->telegram_bot_token == NULL || cfg->telegram_bot_token[0] == '\0') {
        meao_log(MEAO_LOG_ERROR, NULL, "telegram_config",
                 "telegram_bot_token is not set (MEAO_TELEGRAM_BOT_TOKEN)");
        goto out;
    }
    if (meao_secrets_load(cfg->secret_file, &w.keys, err, sizeof err) != MEAO_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "secrets", "%s", err);
        goto out;
    }
    if (meao_db_open(cfg->db_path, (int)cfg->db_busy_timeout_ms, MEAO_DB_MIGRATE, &db, err,
                     sizeof err) != MEAO_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "db_open", "%s", err);
        goto out;
    }
    if (meao_rl_open(cfg->ratelimit_shm, 0, db, meao_now_ms(w.clock), &w.rl) != MEAO_OK)
        meao_log(MEAO_LOG_WARN, NULL, "ratelimit_open", "cannot open %s: strangers get no replies",
                 cfg->ratelimit_shm);
    meao_log(MEAO_LOG_INFO, NULL, "start", "serving the Telegram inbox (policy %s, %lld chats)",
             cfg->telegram_dm_policy, (long long)cfg->telegram_max_chats);

    while (!stopping(&w)) {
        struct timespec until;
        int64_t mono = meao_mono_ms(w.clock), pruned = 0;
        if (mono >= next_prune) {
            if (meao_tg_inbox_prune(db, meao_now_ms(w.clock) - KEEP_SETTLED_MS, &pruned) ==
                    MEAO_OK &&
                pruned > 0)
                meao_log(MEAO_LOG_INFO, NULL, "telegram_prune", "deleted %lld settled updates",
                         (long long)pruned);
            next_prune = mono + PRUNE_EVERY_MS;
        }
        if (reopen && __atomic_exchange_n(reopen, 0, __ATOMIC_ACQ_REL) &&
            meao_log_reopen(cfg->log_file) < 0)
            meao_log(MEAO_LOG_ERROR, NULL, "log_reopen", "cannot reopen the log file");
        dispatch(&w, db, rows, held);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)(cfg->telegram_poll_ms % 1000) * 1000000L;
        until.tv_sec += cfg->telegram_poll_ms / 1000 + until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&w.mu);
        /* a job that ends lets its chat's next update start at once */
        (void)pthread_cond_timedwait(&w.cv, &w.mu, &until);
        pthread_mutex_unlock(&w.mu);
    }
    /* running jobs see the stop flag: turns are cancelled and put back */
    {
        int64_t end = meao_mono_ms(w.clock) + STOP_GRACE_MS;
        pthread_mutex_lock(&w.mu);
        while (w.njobs > 0 && meao_mono_ms(w.clock) < end) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 100000000L;
            until.tv_sec += until.tv_nsec / 1000000000L;
            until.tv_nsec %= 1000000000L;
            (void)pthread_cond_timedwait(&w.cv, &w.mu, &until);
        }
        rc = w.njobs > 0 ? 1 : 0;
        pthread_mutex_unlock(&w.mu);
    }
    meao_log(MEAO_LOG_INFO, NULL, "stop", "stopped%s", rc ? " with jobs still running" : "");
out:
    if (rc == 0 || w.njobs == 0) { /* never free what a running job still uses */
        meao_rl_close(w.rl);
        meao_db_close(db);
        free(w.job_chat);
        free(w.job_update);
        pthread_cond_destroy(&w.cv);
        pthread_mutex_destroy(&w.mu);
    }
    meao_secrets_wipe(&w.keys);
    free(rows);
    free(held);
    return rc;
}
