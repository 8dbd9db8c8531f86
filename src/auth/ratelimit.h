/* Rate limiting (API.md "Rate limiting"): GCRA buckets shared by every process.
 *
 * The live state is a table in a shared memory file (cfg ratelimit_shm) that
 * every FastCGI worker and every ws program maps with MAP_SHARED; a bucket is
 * read and advanced under one of 256 process-shared robust mutexes ("stripes"),
 * so no process ever admits more than the limit, and a check costs a hash and an
 * uncontended lock instead of a SQLite write. SQLite (table rate_buckets) holds
 * a write-behind copy: meao_rl_save() every few seconds, restored when the table
 * is (re)created.
 *
 * Time: callers pass wall-clock milliseconds (never read here). Inside, times
 * are microseconds: a limit of L per window W gets emission interval
 * T = floor(W_us / L) and capacity C = L * T, so a burst is always exactly L and
 * the sustained rate is off from L/W by under 1 us per request — integer ms
 * would drift by up to 1 ms per request (7/min: 8571.43 ms).
 *
 * GCRA: a bucket is one "theoretical arrival time" (TAT) per limit. A request at
 * now is admitted iff max(TAT, now) + T - now <= C; then TAT' = max(TAT, now) + T.
 * A class has one or two limits (REST: 60/min and 1000/h); a request is
 * admitted only if every limit admits it, and only then do all TATs advance.
 */
#ifndef MEAO_AUTH_RATELIMIT_H
#define MEAO_AUTH_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/config.h"
#include "core/err.h"
#include "http/router.h"

struct meao_db;
struct meao_resp;

#define MEAO_RL_MAX_LIMITS 2

/* limit requests per window_ms; limit >= 1 and window_ms * 1000 >= limit. */
struct meao_rl_limit {
    int64_t limit;
    int64_t window_ms;
};

/* A rate class. name is mixed into the bucket key, so the same subject has
 * separate buckets per class; it must stay stable across releases (it is
 * persisted). Borrowed: a string with static storage. */
struct meao_rl_class {
    const char *name;
    struct meao_rl_limit limits[MEAO_RL_MAX_LIMITS];
    size_t nlimits; /* 0: not limited (check always admits, no headers) */
};

/* The outcome of one check, reported for the binding limit: when admitted the
 * limit with the fewest remaining requests (tie: the later reset), when denied
 * the limit that stays denying longest. Times are relative to now, rounded up
 * (never earlier than the truth). */
struct meao_rl_result {
    bool allowed;
    int64_t limit;          /* the binding limit's L (0 when the class has no limits) */
    int64_t window_ms;      /* and its window */
    int64_t remaining;      /* requests admissible right now after this one */
    int64_t reset_ms;       /* until the binding bucket is full again (remaining == L) */
    int64_t retry_after_ms; /* denied: until one request would be admitted; else 0 */
};

/* One limit's GCRA step, pure: the decision and values, in microseconds. */
struct meao_gcra_out {
    bool allowed;
    int64_t tat_us;         /* TAT to store: advanced when allowed; when denied the
                               input, capped at now + C (see meao_gcra) */
    int64_t remaining;      /* allowed: further requests admissible now; denied: 0 */
    int64_t reset_us;       /* until the bucket is full again */
    int64_t retry_after_us; /* denied: until a request would be admitted; allowed: 0 */
};

/* GCRA for one limit at now_us against a bucket whose TAT is tat_us (<= now
 * means empty; 0 is "never used"). A TAT more than C ahead of now (clock moved
 * back, or the limit was tightened) counts as a full bucket, so a clock step
 * never locks a client out for longer than one window. lim must be valid
 * (meao_rl_class_valid). Returns out->allowed. */
bool meao_gcra(int64_t tat_us, int64_t now_us, const struct meao_rl_limit *lim,
               struct meao_gcra_out *out);

/* The whole class, pure: evaluate every limit on tat_us[0..nlimits-1]; when all
 * admit, advance them all (tat_us is updated in place), otherwise advance none
 * (only a TAT beyond now + C is capped, as meao_gcra counts it). Fills out
 * (binding limit, see above). Returns out->allowed. */
bool meao_rl_decide(const struct meao_rl_class *cls, int64_t tat_us[MEAO_RL_MAX_LIMITS],
                    int64_t now_ms, struct meao_rl_result *out);

/* Is cls usable: a name, nlimits <= 2, each limit >= 1 with an emission
 * interval of at least 1 us. */
bool meao_rl_class_valid(const struct meao_rl_class *cls);

/* The class of a route's rate class, from config: REST "rest" (per minute and
 * per hour), MESSAGES "msg" (per minute), PAIRING "pair" (per 15 minutes),
 * NONE no limits. cfg is only read. */
void meao_rl_class_from_config(const struct meao_config *cfg, enum meao_rate_class rc,
                               struct meao_rl_class *out);

/* The ws program's per-message class "ws" (rate_ws_messages_per_min per minute);
 * kept here so router.h needs no class the HTTP router never uses. */
void meao_rl_class_ws_messages(const struct meao_config *cfg, struct meao_rl_class *out);

/* Bucket key of (class name, subject): the first 8 bytes of BLAKE2b-128 over
 * name "\0" key, little-endian; never 0 (0 marks an empty slot). Exposed for
 * tests and tooling; rate_buckets.key_hash holds it as a signed integer. */
uint64_t meao_rl_key_hash(const char *class_name, const char *key);

struct meao_rl;

/* Attach to (or create) the shared table at path. nslots 0 means "whatever
 * the file has, or 65536 when creating"; non-zero asks for that geometry and
 * replaces a file built for another. Creation and repair are serialised by
 * flock on the file: a missing, short, corrupt, other-version, other-boot
 * (its mutexes may be held by processes that no longer exist) or
 * other-geometry table is rebuilt under a temporary name, filled from db's
 * rate_buckets when db is non-NULL (rows still live at now_ms), and renamed
 * into place, so no process ever maps a half-built table and no mapped file
 * ever shrinks; processes attached to a replaced table move over on their next
 * check. A table written by a newer binary is left alone (MEAO_E_UNAVAILABLE).
 * db is borrowed for the call only. On success the caller owns *out
 * (meao_rl_close); on error *out is NULL. */
enum meao_err meao_rl_open(const char *path, size_t nslots, struct meao_db *db, int64_t now_ms,
                           struct meao_rl **out);

/* Unmap and free; accepts NULL. Buckets live on in the file. */
void meao_rl_close(struct meao_rl *rl);

/* Count one request by subject key (e.g. "u:42", "ip:192.0.2.7"; borrowed) in
 * class cls at now_ms and fill out. Thread-safe and process-safe. Admitted or
 * not is out->allowed; the return value is MEAO_OK, MEAO_E_INTERNAL for an
 * invalid class, or MEAO_E_UNAVAILABLE when the bucket's lock could not be
 * taken within a second (a process stopped while holding it) — out then
 * admits, and the caller decides whether to fail open. */
enum meao_err meao_rl_check(struct meao_rl *rl, const char *key, const struct meao_rl_class *cls,
                            int64_t now_ms, struct meao_rl_result *out);

/* Write-behind to SQLite, one BEGIN IMMEDIATE transaction: upsert every bucket
 * changed since the last save (all live buckets on this handle's first save or
 * after a failed one) that is still live at now_ms, and delete rows that have
 * expired. TATs are stored in ms rounded up, so a restore is never looser. */
enum meao_err meao_rl_save(struct meao_rl *rl, struct meao_db *db, int64_t now_ms);

/* Should this process save now? At most one caller across all processes gets
 * true per interval_ms (a compare-and-swap on a deadline in the shared table),
 * so any worker may call it after answering a request. */
bool meao_rl_save_due(struct meao_rl *rl, int64_t now_ms, int64_t interval_ms);

/* Merge db's live rate_buckets rows into the table (a TAT only ever moves
 * later). meao_rl_open already does this when it builds a table; exposed for
 * tools and tests. */
enum meao_err meao_rl_load(struct meao_rl *rl, struct meao_db *db, int64_t now_ms);

/* Buckets forced out of a full probe window since the table was built: each
 * one reset a live bucket early (failed open for that subject). Also logged. */
uint64_t meao_rl_evictions(const struct meao_rl *rl);

/* Add X-RateLimit-Limit/-Remaining/-Reset and RateLimit-Policy/RateLimit for
 * result r of class cls. Reset values are whole seconds until the bucket is
 * full again, rounded up. Nothing when the class has no limits. */
void meao_rl_headers(struct meao_resp *resp, const struct meao_rl_class *cls,
                     const struct meao_rl_result *r);

/* Retry-After seconds for a denied result (rounded up, >= 1), 0 when admitted:
 * pass it to meao_resp_error(). */
int64_t meao_rl_retry_after_s(const struct meao_rl_result *r);

/* Open WebSocket connections per subject, counted by process: acquire adds pid
 * under key when fewer than max live entries exist (entries whose process is
 * gone — kill(pid, 0) fails with ESRCH — are dropped first, so a crashed ws
 * program never holds a slot for ever) and returns MEAO_OK, or
 * MEAO_E_RATE_LIMITED when the subject is at max (or the table is full).
 * *count (may be NULL) gets the live count including this one. Acquiring the
 * same (key, pid) twice counts once. */
enum meao_err meao_rl_conn_acquire(struct meao_rl *rl, const char *key, int64_t max, pid_t pid,
                                   int64_t *count);

/* Drop (key, pid); a no-op when absent. */
void meao_rl_conn_release(struct meao_rl *rl, const char *key, pid_t pid);

/* Live entries of the whole connection table (entries whose process is gone
 * are not counted), for GET /metrics. Takes no lock: a value that may be off
 * by the connections opening or closing meanwhile. */
int64_t meao_rl_conn_count(struct meao_rl *rl);

/* A counter of token revocations shared by every process (a reserved word of
 * the table's header): whoever revokes bumps it (meao_db's revocation hook),
 * and a program that keeps a connection open on a token (meao-ws) re-checks
 * its token when the value it last saw changes. A replaced table reads as a
 * change too. Cheap: one atomic load. */
uint64_t meao_rl_revocations(struct meao_rl *rl);
void meao_rl_revocations_bump(struct meao_rl *rl);

/* Tests only: take the stripe lock of (class name, key) and never release it,
 * to simulate a process dying inside a check. */
void meao_rl_debug_hold_lock(struct meao_rl *rl, const char *class_name, const char *key);

#endif
