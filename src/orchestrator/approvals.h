/* The approvals registry (PROTOCOL.md "Approvals"): one per daemon, shared by
 * every turn and every short connection, thread-safe.
 *
 * A turn opens an approval for a tool call and blocks in
 * meao_approvals_wait() until a decision: an answer from the approval's user
 * (on any connection), its deadline (approval_timeout_ms on the injected
 * monotonic clock), or a denial of everything its turn is waiting on (the
 * turn's connection dropped, a cancel, shutdown). Decided ids stay known for
 * ten minutes, so a late or repeated answer is told APPROVAL_EXPIRED rather
 * than APPROVAL_NOT_FOUND. */
#ifndef MEAO_ORCHESTRATOR_APPROVALS_H
#define MEAO_ORCHESTRATOR_APPROVALS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/clock.h"
#include "core/err.h"

#define MEAO_APPROVAL_ID_LEN       24 /* "apr_" + 20 base62 */
#define MEAO_APPROVAL_TOMBSTONE_MS (10 * 60 * 1000)

enum meao_approval_reason {
    MEAO_APPROVAL_PENDING = 0,
    MEAO_APPROVAL_APPROVED,
    MEAO_APPROVAL_DENIED,
    MEAO_APPROVAL_TIMEOUT,
    MEAO_APPROVAL_DISCONNECT,
};

/* What a turn asks for. Everything is borrowed for the call and copied. */
struct meao_approval_spec {
    const void *owner; /* the turn: meao_approvals_deny_owner() finds its approvals by it */
    const char *user_id;
    const char *correlation_id; /* the turn's requestId */
    const char *session_id;
    const char *tool_call_id;
    const char *tool_name;
    const char *args_summary;
    const json_t *request; /* the approval_request's "request" object */
};

struct meao_approval_decision {
    enum meao_approval_reason reason;
    bool approved;
    bool trust_session; /* the answer asked to trust the tool for the session */
};

struct meao_approvals;
struct meao_approval; /* one open approval, as its turn holds it */

/* A registry whose approvals wait timeout_ms on clock (borrowed for the
 * registry's life). NULL on allocation failure. */
struct meao_approvals *meao_approvals_new(const struct meao_clock *clock, int64_t timeout_ms);

/* Free the registry; accepts NULL. No turn may still hold an approval. */
void meao_approvals_free(struct meao_approvals *r);

/* Wire name of a reason: "approved", "denied", "timeout", "disconnect". */
const char *meao_approvals_reason_name(enum meao_approval_reason reason);

/* Write a fresh id ("apr_" + 20 base62 characters, uniform) into out. */
void meao_approvals_mint_id(char out[MEAO_APPROVAL_ID_LEN + 1]);

/* Open a pending approval. On success *out is borrowed by the caller until it
 * passes it to meao_approvals_wait() (exactly once), its id is in id and its
 * wall-clock deadline in *expires_at_ms (may be NULL). MEAO_E_NOMEM. */
enum meao_err meao_approvals_open(struct meao_approvals *r, const struct meao_approval_spec *spec,
                                  struct meao_approval **out, char id[MEAO_APPROVAL_ID_LEN + 1],
                                  int64_t *expires_at_ms);

/* Block until a is decided (an answer, its deadline, a denial) and give the
 * decision. Hands a back: it must not be used afterwards. */
void meao_approvals_wait(struct meao_approvals *r, struct meao_approval *a,
                         struct meao_approval_decision *out);

/* Answer approval id for user_id. MEAO_OK: decided as asked.
 * MEAO_E_NOT_FOUND: no such id (APPROVAL_NOT_FOUND); MEAO_E_FORBIDDEN: the
 * approval is another user's; MEAO_E_CONFLICT: already decided or timed out
 * (APPROVAL_EXPIRED). Only MEAO_OK changes anything. */
enum meao_err meao_approvals_answer(struct meao_approvals *r, const char *id, const char *user_id,
                                    bool approved, bool trust_session);

/* Deny every pending approval of owner with reason, at once. Returns how
 * many were pending. */
size_t meao_approvals_deny_owner(struct meao_approvals *r, const void *owner,
                                 enum meao_approval_reason reason);

/* Deny every pending approval (shutdown). Returns how many. */
size_t meao_approvals_deny_all(struct meao_approvals *r, enum meao_approval_reason reason);

/* user_id's pending approvals as the `approvals` frame lists them:
 * [{"approvalId","correlationId","sessionId","toolCallId","toolName",
 *   "argsSummary","request","expiresAt"}]. New reference; NULL on ENOMEM. */
json_t *meao_approvals_list(struct meao_approvals *r, const char *user_id);

/* Apply deadlines that passed on the clock, wake their waiters and forget
 * tombstones older than ten minutes. Waiters also check by themselves; this
 * is for fake clocks and housekeeping. */
void meao_approvals_tick(struct meao_approvals *r);

/* Counts, for tests and logs: pending approvals, remembered ids. */
size_t meao_approvals_pending_count(struct meao_approvals *r);
size_t meao_approvals_known_count(struct meao_approvals *r);

#endif
