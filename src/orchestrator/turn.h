/* The turn engine (PROTOCOL.md "A turn"): a validated turn request in, the
 * frames of the turn out, in the order the protocol fixes: text deltas,
 * tool_call_start / approval_request / approval_resolved / tool_call_result
 * per tool call, the model called again with the results (at most
 * max_tool_iterations rounds), and exactly one final frame, message_complete
 * or error.
 *
 * A turn runs on one thread (meao_turn_run). Any other thread may stop it
 * (meao_turn_stop: the client cancelled, its connection dropped, the daemon
 * is shutting down): the first reason wins, the turn's pending approvals are
 * denied at once, its wake fd becomes readable (a running tool's process
 * group is killed), the provider sees sink->cancelled() and aborts, and
 * nothing of the turn runs afterwards. */
#ifndef MEAO_ORCHESTRATOR_TURN_H
#define MEAO_ORCHESTRATOR_TURN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"
#include "orchestrator/approvals.h"
#include "orchestrator/provider.h"

/* What every turn shares; read-only while turns run. */
struct meao_engine {
    const struct meao_config *cfg;    /* borrowed */
    const struct meao_clock *clock;   /* borrowed */
    struct meao_provider *provider;   /* borrowed */
    struct meao_approvals *approvals; /* borrowed */
    char *workspace_root;             /* resolved; owned */
    json_t *tools;                    /* tool descriptions for the model; owned */
    json_t *no_tools;                 /* [] for the last round; owned */
};

/* Fill eng; cfg, clock, provider and approvals are borrowed for its life.
 * Fails (err gets one line naming workspace_root) when the workspace root
 * does not resolve to a directory. */
enum meao_err meao_engine_init(struct meao_engine *eng, const struct meao_config *cfg,
                               const struct meao_clock *clock, struct meao_provider *provider,
                               struct meao_approvals *approvals, char *err, size_t errlen);
void meao_engine_fini(struct meao_engine *eng);

enum meao_turn_stop {
    MEAO_TURN_RUNNING = 0,
    MEAO_TURN_CANCELLED,    /* the client sent cancel: ends with error CANCELLED */
    MEAO_TURN_DISCONNECTED, /* the client is gone: nothing more is written */
    MEAO_TURN_SHUTDOWN,     /* SIGTERM: ends with error SHUTTING_DOWN */
};

/* Where a turn's frames go. emit writes one frame (borrowed) and returns
 * false when the peer is gone; it is called from the turn's thread only. */
struct meao_turn_out {
    void *ctx;
    bool (*emit)(void *ctx, const json_t *frame);
};

struct meao_turn;

/* A turn for a request decoded by meao_orch_decode() (borrowed; the turn
 * keeps its own reference). *out is owned by the caller (meao_turn_free).
 * Errors: MEAO_E_INVALID_PARAMETER with why (workDir missing, not a
 * directory or outside workspace_root), MEAO_E_NOMEM, MEAO_E_IO. */
enum meao_err meao_turn_new(const struct meao_engine *eng, json_t *request,
                            const struct meao_turn_out *out, struct meao_turn **turn, char *why,
                            size_t whylen);

/* Run the turn to its end, emitting every frame including the final one
 * (unless the peer is gone). MEAO_OK when it completed with message_complete,
 * else the error that ended it. */
enum meao_err meao_turn_run(struct meao_turn *t);

/* Stop the turn for why (thread-safe, async-signal-unsafe). The first stop
 * wins; returns false when the turn was already stopped. */
bool meao_turn_stop(struct meao_turn *t, enum meao_turn_stop why);

/* The reason the turn was stopped, or MEAO_TURN_RUNNING. */
enum meao_turn_stop meao_turn_stopped(const struct meao_turn *t);

/* Borrowed strings of the request, valid until meao_turn_free. */
const char *meao_turn_request_id(const struct meao_turn *t);
const char *meao_turn_user_id(const struct meao_turn *t);

void meao_turn_free(struct meao_turn *t);

#endif
