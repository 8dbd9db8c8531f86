/* One chat turn, shared by every channel that talks to the orchestrator:
 * POST /api/v1/sessions/:id/messages and the WebSocket program.
 *
 * meao_chat_start() validates the message (content in the seed's string
 * form or as [{"type":"text","text"}], attachments with their limits), takes
 * the session's lease and stores the user's message as pending (one
 * transaction), then sends the turn with the session's recent history and
 * trusted tools. The caller reads the orchestrator's frames from ch->orch
 * (its own loop: the REST route blocks, the WebSocket program relays) and
 * settles the turn with meao_chat_complete(), meao_chat_error_frame() or
 * meao_chat_fail(). Every way out after the lease was taken settles the
 * user's message (ok or failed) and releases the lease; if even that fails
 * (database gone) the lease expires on its own after MEAO_CHAT_LEASE_MS.
 *
 * Errors are reported like a handler's: the return value is the error and
 * resp->error_message (meao_fail) the client-safe one-line message, so the
 * REST route answers resp as it is and the WebSocket program turns the two
 * into an `error` frame. */
#ifndef MEAO_API_CHAT_H
#define MEAO_API_CHAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "http/app.h"
#include "orch/client.h"
#include "store/sessions.h"

#define MEAO_CHAT_LEASE_MS       60000 /* a crashed turn frees its session after at most this */
#define MEAO_CHAT_RENEW_EVERY_MS 15000

struct meao_chat {
    struct meao_app *app;   /* borrowed */
    struct meao_db *db;     /* borrowed (the app's connection) */
    struct meao_session s;  /* the session of the turn */
    int64_t user_id;        /* the actor */
    const char *request_id; /* borrowed: the turn's correlation id */
    char lease[MEAO_LEASE_TOKEN_MAX];
    struct meao_msg_ref user_msg;  /* the user's message, once stored */
    bool leased;                   /* the turn still has to be settled */
    struct meao_orch_client *orch; /* the turn's connection, after a successful start */
    int64_t next_renew_mono_ms;
};

/* Start a turn in session s (copied) for user_id: see the file comment.
 * content and attachments are the client's JSON values (borrowed;
 * attachments may be NULL). On success the turn is running on ch->orch. On
 * error nothing is left to settle (a message stored already is marked
 * failed) and ch->orch is NULL; INVALID_PARAMETER, PAYLOAD_TOO_LARGE,
 * CONFLICT (ended, or another turn holds the lease), SERVICE_UNAVAILABLE
 * (orchestrator or workspace), DB. */
enum meao_err meao_chat_start(struct meao_chat *ch, struct meao_app *app, struct meao_db *db,
                              const struct meao_session *s, int64_t user_id, const char *request_id,
                              const json_t *content, const json_t *attachments,
                              struct meao_resp *resp);

/* The orchestrator's message_complete (borrowed) for this turn: store the
 * reply, release the lease. On success *answer (caller owns) is
 * {"id" (the assistant's message), "messageId" (the user's), "content",
 * "toolCalls", "usage":{"inputTokens","outputTokens"}, "timestamp"}. A frame
 * for another turn, or a store failure, settles the turn as failed. */
enum meao_err meao_chat_complete(struct meao_chat *ch, const json_t *frame, struct meao_resp *resp,
                                 json_t **answer);

/* The orchestrator's final `error` frame (borrowed): settle the turn as
 * failed with the matching error (PROVIDER_ERROR, GATEWAY_TIMEOUT,
 * CANCELLED, SERVICE_UNAVAILABLE, INVALID_REQUEST, INTERNAL_ERROR). */
enum meao_err meao_chat_error_frame(struct meao_chat *ch, const json_t *frame,
                                    struct meao_resp *resp);

/* Settle the turn as failed with e and a client-safe message; returns e.
 * Idempotent: after the first settlement it only records the message. */
enum meao_err meao_chat_fail(struct meao_chat *ch, struct meao_resp *resp, enum meao_err e,
                             const char *msg);

/* Renew the lease when it is due (call while waiting for frames). */
void meao_chat_renew(struct meao_chat *ch);

/* Ask the orchestrator to cancel the turn (best effort, 100 ms). */
void meao_chat_cancel(struct meao_chat *ch);

/* Close the orchestrator connection (which denies the turn's pending
 * approvals and cancels it there) and settle the turn as failed with
 * INTERNAL if nobody did. Accepts a chat that never started. */
void meao_chat_end(struct meao_chat *ch);

/* The user's session on channel `channel` for a client that names none: the
 * most recently updated active session of that channel, or a new one (with
 * the default work directory, audited). *out is filled. */
enum meao_err meao_chat_default_session(struct meao_app *app, struct meao_db *db, int64_t user_id,
                                        const char *channel, const char *request_id,
                                        struct meao_session *out);

#endif
