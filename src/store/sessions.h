/* Sessions and their messages (migration 3).
 *
 * A session belongs to one user; every look-up takes the caller's user id,
 * so another user's session is indistinguishable from a missing one
 * (MEAO_E_NOT_FOUND, no existence oracle).
 *
 * One turn at a time per session: a turn holds a lease in the session row
 * (lease_token, lease_until_ms). meao_turn_begin() takes it and stores the
 * user's message (status pending) in one BEGIN IMMEDIATE transaction;
 * meao_turn_complete() / meao_turn_fail() settle the message and release the
 * lease in another. A holder renews the lease while the turn runs
 * (meao_turn_renew()); a crashed holder's lease just expires, so no session
 * stays locked for longer than one lease period. */
#ifndef MEAO_STORE_SESSIONS_H
#define MEAO_STORE_SESSIONS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "store/db.h"

#define MEAO_PUBLIC_ID_RANDOM 20 /* base62 characters after the prefix */
#define MEAO_PUBLIC_ID_TIME   7  /* of which the first: milliseconds since 1970 */
#define MEAO_PUBLIC_ID_LEN    (4 + MEAO_PUBLIC_ID_RANDOM) /* "ses_" / "msg_" + 20 */
#define MEAO_CHANNEL_MAX      32
#define MEAO_WORKDIR_MAX      4096
#define MEAO_LEASE_TOKEN_MAX  48 /* "<pid>." + 20 base62 characters, with room */
#define MEAO_CONTENT_HASH_LEN 16 /* hex characters */
#define MEAO_HISTORY_MAX_N    50 /* messages of history sent with a turn */

struct meao_session {
    int64_t id; /* row id: internal, never shown */
    char public_id[MEAO_PUBLIC_ID_LEN + 1];
    int64_t user_id;
    char channel[MEAO_CHANNEL_MAX + 1];
    char work_dir[MEAO_WORKDIR_MAX + 1];
    bool ended;
    bool busy; /* a turn holds a live lease (at the time of the read) */
    int64_t created_ms, updated_ms, ended_ms;
    int64_t message_count;
};

/* A stored message as the turn code needs it. */
struct meao_msg_ref {
    int64_t id;
    char public_id[MEAO_PUBLIC_ID_LEN + 1];
};

/* Write prefix ("ses_", "msg_") + 20 base62 characters into out
 * (MEAO_PUBLIC_ID_LEN + 1 bytes): 7 encoding the wall clock in milliseconds
 * (big-endian base62, wraps in 2081), then 13 uniformly drawn (77 bits).
 * Why the time: ids are the key of a UNIQUE index, and uniformly random keys
 * put every insert on a different leaf page — one 4 KiB WAL frame per row,
 * and checkpoints to match; time-ordered keys append to the same few pages
 * (measured: 16.8k → 22.3k durable inserts/s through the whole stack). The
 * random part keeps ids unguessable; every look-up is scoped to the owner
 * anyway. prefix must be 4 characters. */
void meao_public_id_new(const char *prefix, char out[MEAO_PUBLIC_ID_LEN + 1]);

/* True when s is prefix + exactly 20 base62 characters. */
bool meao_public_id_valid(const char *s, const char *prefix);

/* True when s is a channel name: 1..32 of [A-Za-z0-9._:-]. */
bool meao_channel_valid(const char *s);

/* The public session as the API shows it: {id, channel, createdAt,
 * updatedAt, messageCount, status, busy, endedAt?}. New reference. */
json_t *meao_session_to_json(const struct meao_session *s);

/* Create a session with the given public id (drawn by the caller, because the
 * default work directory is named after it). out (may be NULL) is filled. */
enum meao_err meao_session_create(struct meao_db *db, const char *public_id, int64_t user_id,
                                  const char *channel, const char *work_dir, int64_t now_ms,
                                  struct meao_session *out);

/* The caller's session by public id; MEAO_E_NOT_FOUND when it does not exist
 * or belongs to someone else. now_ms decides whether a lease is live. */
enum meao_err meao_session_get(struct meao_db *db, int64_t user_id, const char *public_id,
                               int64_t now_ms, struct meao_session *out);

/* The caller's newest active session of channel (borrowed);
 * MEAO_E_NOT_FOUND when there is none. */
enum meao_err meao_session_latest(struct meao_db *db, int64_t user_id, const char *channel,
                                  int64_t now_ms, struct meao_session *out);
/* The caller's sessions, newest first, as a JSON array (caller owns *out).
 * status: NULL (all), "active" or "ended". limit 1..200. */
enum meao_err meao_session_list(struct meao_db *db, int64_t user_id, const char *status, int limit,
                                int64_t now_ms, json_t **out);

/* End the caller's session (idempotent). MEAO_E_NOT_FOUND as for _get. A
 * running turn is not interrupted; it stores its result when it ends. */
enum meao_err meao_session_end(struct meao_db *db, int64_t user_id, const char *public_id,
                               int64_t now_ms);

/* The session's trusted tools (a JSON array of strings; caller owns *out). */
enum meao_err meao_session_trusted_tools(struct meao_db *db, int64_t session_id, json_t **out);

/* ---- turns ---- */

/* What meao_turn_begin() refused: the session has ended, or another turn
 * holds a live lease. */
enum meao_turn_refusal { MEAO_TURN_OK = 0, MEAO_TURN_BUSY, MEAO_TURN_ENDED };

struct meao_turn_start {
    const char *lease_token; /* random per turn: only its holder releases the lease */
    const char *request_id;  /* for the row, logs and the audit trail */
    int64_t user_id;         /* the actor, for the audit row */
    const char *content;     /* the user's message (stored) */
    const char *attachments; /* JSON text of attachment metadata, or NULL */
    int64_t lease_ms;        /* lease length from now */
};

/* A lease token for this process: "<pid>." + 20 random base62 characters
 * (out: MEAO_LEASE_TOKEN_MAX bytes). The pid lets a later turn see that the
 * holder died (meao_turn_begin). */
void meao_lease_token_new(char out[MEAO_LEASE_TOKEN_MAX]);

/* In one BEGIN IMMEDIATE transaction: take the session's lease (free,
 * expired, or held by a process that no longer exists), mark messages left
 * pending by a turn that died as failed (CANCELLED), store the user's
 * message as pending and write the audit row.
 * MEAO_E_CONFLICT with *why set when refused; *msg gets the message. */
enum meao_err meao_turn_begin(struct meao_db *db, const struct meao_session *s,
                              const struct meao_turn_start *t, int64_t now_ms,
                              struct meao_msg_ref *msg, enum meao_turn_refusal *why);

/* Push the lease to now + lease_ms. MEAO_E_CONFLICT when the lease is no
 * longer this token's (it expired and another turn took it). */
enum meao_err meao_turn_renew(struct meao_db *db, int64_t session_id, const char *lease_token,
                              int64_t now_ms, int64_t lease_ms);

struct meao_turn_result {
    const char *content;         /* the assistant's full reply */
    const json_t *tool_calls;    /* array (borrowed) or NULL */
    int64_t input_tokens;        /* usage */
    int64_t output_tokens;       /* usage */
    const json_t *trusted_tools; /* the session's trusted set after the turn, or NULL: keep */
    const char *request_id;      /* for the row and the audit trail */
    int64_t user_id;             /* the actor */
};

/* In one transaction: store the assistant's message (ok), mark the user's
 * message ok, keep the trusted tools, release the lease (when still ours)
 * and write the audit row. *out gets the assistant message. */
enum meao_err meao_turn_complete(struct meao_db *db, int64_t session_id, const char *lease_token,
                                 const struct meao_msg_ref *user_msg,
                                 const struct meao_turn_result *r, int64_t now_ms,
                                 struct meao_msg_ref *out);

/* In one transaction: mark the user's message failed with code (an API error
 * code), release the lease (when still ours), write the audit row. */
enum meao_err meao_turn_fail(struct meao_db *db, int64_t session_id, const char *lease_token,
                             const struct meao_msg_ref *user_msg, const char *code,
                             const char *request_id, int64_t user_id, int64_t now_ms);

/* The history a turn sends: the session's last max_n messages with status
 * ok before message `before_id` (0: all), oldest first, as
 * [{"role","content"}] (caller owns *out). */
enum meao_err meao_history_window(struct meao_db *db, int64_t session_id, int64_t before_id,
                                  int max_n, json_t **out);

/* ---- history over the API ---- */

/* 16 hex characters of BLAKE2b(content) keyed with key (the server's
 * content_key): equal texts match within one deployment, and a guessed text
 * cannot be confirmed without the key. */
void meao_content_hash(const unsigned char key[32], const char *content, size_t len,
                       char out[MEAO_CONTENT_HASH_LEN + 1]);

struct meao_page_query {
    int limit;                     /* 1..200 */
    const char *before;            /* a message id of this session, or NULL */
    bool include_content;          /* already decided: owner and asked for it */
    const unsigned char *hash_key; /* content_key, 32 bytes */
};

/* One page of a session's messages, oldest first: the last `limit` before
 * `before` (or the newest ones) as [{id, role, timestamp, toolCallId,
 * hasToolCalls, contentHash, status, content?}] (caller owns *out);
 * *has_more says whether older ones exist. MEAO_E_NOT_FOUND when `before`
 * is not a message of this session. */
enum meao_err meao_messages_page(struct meao_db *db, int64_t session_id,
                                 const struct meao_page_query *q, json_t **out, bool *has_more);

#endif
