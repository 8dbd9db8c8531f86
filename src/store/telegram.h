/* Telegram state (migration 4): the durable webhook inbox, the identities
 * that map Telegram users to meao users, each chat's session, the approval
 * prompts shown as inline buttons, and the webhook's secret.
 *
 * The inbox is keyed by Telegram's update_id: the webhook inserts with
 * synchronous=FULL (telegram_inbox_sync) as part of the responder's group
 * commit and answers 2xx only after that commit, so an acknowledged update
 * survives kill -9 and a power cut; a redelivered update_id is a
 * duplicate, acknowledged and dropped. The worker moves a row
 * new → working → done | ignored | failed, or back to new with a not-before
 * time when it must retry (orchestrator down). Everything the worker needs to
 * resume a row after a crash (the reply message it was editing, the lease of
 * the turn it had started) is kept in the row. */
#ifndef MEAO_STORE_TELEGRAM_H
#define MEAO_STORE_TELEGRAM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/pairing.h"
#include "auth/secrets.h"
#include "core/err.h"
#include "store/db.h"
#include "store/identity.h"
#include "store/sessions.h"

#define MEAO_TG_KIND_MAX        32 /* "message", "callback_query", ... */
#define MEAO_TG_SECRET_MIN      16 /* webhook secret_token length bounds (Bot API: 1..256) */
#define MEAO_TG_SECRET_MAX      256
#define MEAO_TG_SECRET_HEX      64 /* stored keyed hash, hex */
#define MEAO_TG_APPROVAL_MAX    64 /* approval id length */
#define MEAO_TG_DETAILS_MAX     1024
#define MEAO_TG_PAIR_TTL_MS     (5 * 60 * 1000LL)
#define MEAO_TG_STATE_VALUE_MAX 2048

/* ---- inbox ---- */

/* One open inbox row, without its body. */
struct meao_tg_item {
    int64_t update_id;
    char kind[MEAO_TG_KIND_MAX + 1];
    int64_t chat_id; /* 0 when the update has no chat */
    int64_t from_id; /* 0 when it has no sender */
    bool working;    /* a worker had started it (and may have crashed) */
    int64_t attempts;
    int64_t not_before_ms;
    int64_t reply_message_id;             /* 0: no reply message yet */
    char lease[MEAO_LEASE_TOKEN_MAX + 1]; /* "" when no turn was begun */
    char session[MEAO_PUBLIC_ID_LEN + 1]; /* the turn's session, "" when none */
};

/* Store one update (body: the raw JSON, borrowed) unless its update_id is
 * already there (*duplicate = true, nothing written), in a transaction of its
 * own (meao_db_begin_immediate, or meao_db_begin_relaxed when relaxed).
 * Outside a group the commit is done before MEAO_OK is returned: with
 * synchronous=FULL (fsync'ed) unless relaxed, then NORMAL (survives any
 * process crash, kill -9 included, but not a power cut before the next
 * checkpoint). Inside a group (meao_db_group_begin) the insert is one part
 * of the shared transaction: MEAO_OK means "stored once
 * meao_db_group_commit() succeeds", which fsyncs the WAL once for the whole
 * group if any part was not relaxed — the caller holds its answer until
 * then (the responder's held answers). */
enum meao_err meao_tg_inbox_put(struct meao_db *db, int64_t update_id, const char *kind,
                                int64_t chat_id, int64_t from_id, const char *body, size_t len,
                                bool relaxed, int64_t now_ms, bool *duplicate);

/* Up to max open rows (new or working), oldest update first, into out;
 * *n gets the count. */
enum meao_err meao_tg_inbox_open(struct meao_db *db, struct meao_tg_item *out, size_t max,
                                 size_t *n);

/* The stored body of update_id (caller frees *body). */
enum meao_err meao_tg_inbox_body(struct meao_db *db, int64_t update_id, char **body);

/* Mark a row working and count the attempt. */
enum meao_err meao_tg_inbox_start(struct meao_db *db, int64_t update_id);

/* Remember the Bot API message that shows this update's reply. */
enum meao_err meao_tg_inbox_set_reply(struct meao_db *db, int64_t update_id, int64_t message_id);

/* Remember the turn begun for this update (lease token and session public
 * id; NULL clears both), so a restarted worker can release it. */
enum meao_err meao_tg_inbox_set_turn(struct meao_db *db, int64_t update_id, const char *lease,
                                     const char *session);

/* Settle a row: status "done", "ignored" or "failed", with a short outcome. */
enum meao_err meao_tg_inbox_finish(struct meao_db *db, int64_t update_id, const char *status,
                                   const char *outcome, int64_t now_ms);

/* Put a row back to new, not to be tried before not_before_ms. */
enum meao_err meao_tg_inbox_retry(struct meao_db *db, int64_t update_id, int64_t not_before_ms,
                                  const char *outcome);

/* Delete settled rows (done, ignored, failed) settled before before_ms, and
 * approval prompts created before it; *n (may be NULL) gets the inbox rows
 * deleted. Telegram redelivers for at most 24 hours, so rows kept longer
 * than that still catch every duplicate. */
enum meao_err meao_tg_inbox_prune(struct meao_db *db, int64_t before_ms, int64_t *n);

/* Row counts by status: {"new":n, "working":n, ...} (caller owns *out). */
enum meao_err meao_tg_inbox_counts(struct meao_db *db, json_t **out);

/* ---- identities ---- */

/* The meao user a Telegram user is linked to; MEAO_E_NOT_FOUND when none. */
enum meao_err meao_tg_identity_get(struct meao_db *db, int64_t telegram_user_id,
                                   struct meao_user *out);

/* Link telegram_user_id to user_id (replacing a pending code or an earlier
 * link) and write the audit row. */
enum meao_err meao_tg_link(struct meao_db *db, int64_t telegram_user_id, int64_t user_id,
                           int64_t actor_user_id, int64_t now_ms);

/* Remove a link or a pending code; MEAO_E_NOT_FOUND when there was none. */
enum meao_err meao_tg_unlink(struct meao_db *db, int64_t telegram_user_id, int64_t now_ms);

/* Link telegram_user_id to the user named "tg<id>" (role user), creating that
 * user first when it does not exist: what `allow` and an approved pairing do.
 * An already linked Telegram user keeps its link. MEAO_E_CONFLICT when an
 * owner bears that name (never handed to a stranger). out (may be NULL) gets
 * the user. */
enum meao_err meao_tg_allow(struct meao_db *db, int64_t telegram_user_id, int64_t actor_user_id,
                            int64_t now_ms, struct meao_user *out);

/* Every identity: [{telegramUserId, status, user?, role?, displayName?}]. */
enum meao_err meao_tg_identities_list(struct meao_db *db, json_t **out);

/* A stranger under the pairing policy: issue a fresh pairing code for
 * telegram_user_id (valid MEAO_TG_PAIR_TTL_MS, stored hashed with the
 * pairing key), replacing an earlier one. MEAO_E_CONFLICT when the user is
 * already linked. */
enum meao_err meao_tg_pair_issue(struct meao_db *db, const struct meao_secrets *keys,
                                 int64_t telegram_user_id, const char *display_name, int64_t now_ms,
                                 char code[MEAO_PAIR_CODE_LEN + 1]);

/* The owner approves a stranger's code (normalised like every pairing code):
 * the Telegram user is allowed (meao_tg_allow). MEAO_E_NOT_FOUND when no
 * open code matches. *telegram_user_id gets whom it was. */
enum meao_err meao_tg_pair_approve(struct meao_db *db, const struct meao_secrets *keys,
                                   const char *code, int64_t approver_user_id, int64_t now_ms,
                                   int64_t *telegram_user_id);

/* ---- chats ---- */

/* The chat's current session public id (out: MEAO_PUBLIC_ID_LEN + 1 bytes);
 * MEAO_E_NOT_FOUND when none is recorded for this user. */
enum meao_err meao_tg_chat_session(struct meao_db *db, int64_t chat_id, int64_t user_id,
                                   char out[MEAO_PUBLIC_ID_LEN + 1]);

/* Record the chat's session (public id) for user_id. */
enum meao_err meao_tg_chat_set_session(struct meao_db *db, int64_t chat_id, int64_t user_id,
                                       const char *session, int64_t now_ms);

/* ---- resuming a turn after a crash ---- */

/* The newest user message stored under request_id in session_id (*found
 * false when none; *pending whether it is still pending) and the content of
 * the assistant reply stored under it (*reply, caller frees; NULL when the
 * turn never completed). */
enum meao_err meao_tg_turn_find(struct meao_db *db, int64_t session_id, const char *request_id,
                                struct meao_msg_ref *user_msg, bool *found, bool *pending,
                                char **reply);

/* ---- approval prompts ---- */

struct meao_tg_approval {
    char approval_id[MEAO_TG_APPROVAL_MAX + 1];
    int64_t chat_id;
    int64_t message_id;
    int64_t user_id;
    char tool_name[65];
    char details[MEAO_TG_DETAILS_MAX + 1];
    char status[12]; /* pending | approved | denied | timeout */
};

/* Remember a prompt (insert or replace). */
enum meao_err meao_tg_approval_put(struct meao_db *db, const struct meao_tg_approval *a,
                                   int64_t now_ms);

/* The prompt of approval_id; MEAO_E_NOT_FOUND when unknown. */
enum meao_err meao_tg_approval_get(struct meao_db *db, const char *approval_id,
                                   struct meao_tg_approval *out);

/* Record the outcome (status as in struct meao_tg_approval). */
enum meao_err meao_tg_approval_settle(struct meao_db *db, const char *approval_id,
                                      const char *status);

/* ---- webhook state ---- */

/* The value of key ("webhook_secret_hash", "webhook_url"), copied into out;
 * MEAO_E_NOT_FOUND when unset. */
enum meao_err meao_tg_state_get(struct meao_db *db, const char *key, char *out, size_t outlen);

/* Set key to value, or delete it when value is NULL (synchronous=FULL). */
enum meao_err meao_tg_state_set(struct meao_db *db, const char *key, const char *value,
                                int64_t now_ms);

/* Hex of a BLAKE2b-256 of secret keyed with the token key (domain-separated
 * from tokens): what is stored instead of the webhook's secret token. */
void meao_tg_secret_hash(const struct meao_secrets *keys, const char *secret, size_t len,
                         char out[MEAO_TG_SECRET_HEX + 1]);

/* Constant-time: does presented (len bytes) hash to stored_hex? */
bool meao_tg_secret_matches(const struct meao_secrets *keys, const char *presented, size_t len,
                            const char *stored_hex);

#endif
