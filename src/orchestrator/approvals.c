#include "orchestrator/approvals.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBUCKETS      1024 /* ids are random: an even spread over a power of two */
#define WAIT_SLICE_MS 250  /* a waiter re-reads the (possibly fake) clock this often */

struct meao_approval {
    char id[MEAO_APPROVAL_ID_LEN + 1];
    char *user_id;
    char *correlation_id;
    char *session_id;
    char *tool_call_id;
    char *tool_name;
    char *args_summary;
    json_t *request;
    const void *owner;
    int64_t deadline_ms;   /* monotonic */
    int64_t expires_at_ms; /* wall clock, for list_approvals */
    int64_t forget_at_ms;  /* monotonic: end of the tombstone */
    struct meao_approval_decision decision;
    int refs; /* the registry's (until forgotten) + the waiter's (until it has the decision) */
    pthread_cond_t cv;
    struct meao_approval *hnext;       /* hash chain */
    struct meao_approval *prev, *next; /* pending list; the tombstone queue uses next only */
};

struct meao_approvals {
    pthread_mutex_t mu;
    const struct meao_clock *clock;
    int64_t timeout_ms;
    struct meao_approval *buckets[NBUCKETS];
    struct meao_approval *pending;               /* doubly linked, newest first */
    struct meao_approval *tomb_head, *tomb_tail; /* decided, oldest first */
    size_t npending, nknown;
};

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const char *meao_approvals_reason_name(enum meao_approval_reason reason)
{
    switch (reason) {
    case MEAO_APPROVAL_APPROVED: return "approved";
    case MEAO_APPROVAL_DENIED: return "denied";
    case MEAO_APPROVAL_TIMEOUT: return "timeout";
    case MEAO_APPROVAL_DISCONNECT: return "disconnect";
    case MEAO_APPROVAL_PENDING: break;
    }
    return "pending";
}

void meao_approvals_mint_id(char out[MEAO_APPROVAL_ID_LEN + 1])
{
    memcpy(out, "apr_", 4);
    for (size_t i = 4; i < MEAO_APPROVAL_ID_LEN; i++)
        out[i] = b62[randombytes_uniform(62)]; /* unbiased */
    out[MEAO_APPROVAL_ID_LEN] = '\0';
}

static size_t bucket_of(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h & (NBUCKETS - 1);
}

static struct meao_approval *find(struct meao_approvals *r, const char *id)
{
    struct meao_approval *a = r->buckets[bucket_of(id)];
    while (a != NULL && strcmp(a->id, id) != 0)
        a = a->hnext;
    return a;
}

/* The heavy parts are only needed while pending: a tombstone keeps its id
 * and user (for FORBIDDEN) and nothing else. */
static void drop_details(struct meao_approval *a)
{
    free(a->correlation_id);
    free(a->session_id);
    free(a->tool_call_id);
    free(a->tool_name);
    free(a->args_summary);
    json_decref(a->request);
    a->correlation_id = a->session_id = a->tool_call_id = a->tool_name = a->args_summary = NULL;
    a->request = NULL;
}

static void unref(struct meao_approval *a)
{
    if (--a->refs > 0)
        return;
    drop_details(a);
    free(a->user_id);
    pthread_cond_destroy(&a->cv);
    free(a);
}

static void unlink_hash(struct meao_approvals *r, struct meao_approval *a)
{
    struct meao_approval **pp = &r->buckets[bucket_of(a->id)];
    while (*pp != NULL && *pp != a)
        pp = &(*pp)->hnext;
    if (*pp == a)
        *pp = a->hnext;
    a->hnext = NULL;
}

/* Decide a pending approval: off the pending list, onto the tombstone queue,
 * and wake its waiter. Called with the lock held. */
static void decide(struct meao_approvals *r, struct meao_approval *a,
                   enum meao_approval_reason reason, bool approved, bool trust)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        r->pending = a->next;
    if (a->next)
        a->next->prev = a->prev;
    r->npending--;
    a->prev = a->next = NULL;
    a->decision.reason = reason;
    a->decision.approved = approved;
    a->decision.trust_session = approved && trust;
    a->forget_at_ms = meao_mono_ms(r->clock) + MEAO_APPROVAL_TOMBSTONE_MS;
    if (r->tomb_tail)
        r->tomb_tail->next = a;
    else
        r->tomb_head = a;
    r->tomb_tail = a;
    pthread_cond_signal(&a->cv);
}

/* Forget tombstones past their ten minutes. Lock held. */
static void prune(struct meao_approvals *r, int64_t now)
{
    while (r->tomb_head != NULL && r->tomb_head->forget_at_ms <= now) {
        struct meao_approval *a = r->tomb_head;
        r->tomb_head = a->next;
        if (r->tomb_head == NULL)
            r->tomb_tail = NULL;
        a->next = NULL;
        unlink_hash(r, a);
        r->nknown--;
        unref(a);
    }
}

/* Time out pending approvals whose deadline passed. Lock held. */
static void expire(struct meao_approvals *r, int64_t now)
{
    struct meao_approval *a = r->pending, *next;
    for (; a != NULL; a = next) {
        next = a->next;
        if (now >= a->deadline_ms)
            decide(r, a, MEAO_APPROVAL_TIMEOUT, false, false);
    }
}

struct meao_approvals *meao_approvals_new(const struct meao_clock *clock, int64_t timeout_ms)
{
    struct meao_approvals *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    r->clock = clock;
    r->timeout_ms = timeout_ms;
    return r;
}

void meao_approvals_free(struct meao_approvals *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct meao_approval *a = r->buckets[i], *next;
        for (; a != NULL; a = next) {
            next = a->hnext;
            a->refs = 1;
            unref(a);
        }
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

enum meao_err meao_approvals_open(struct meao_approvals *r, const struct meao_approval_spec *spec,
                                  struct meao_approval **out, char id[MEAO_APPROVAL_ID_LEN + 1],
                                  int64_t *expires_at_ms)
{
    struct meao_approval *a = calloc(1, sizeof *a);
    pthread_condattr_t ca;
    int64_t now;
    size_t b;

    *out = NULL;
    if (a == NULL)
        return MEAO_E_NOMEM;
    a->user_id = dup_or_empty(spec->user_id);
    a->correlation_id = dup_or_empty(spec->correlation_id);
    a->session_id = dup_or_empty(spec->session_id);
    a->tool_call_id = dup_or_empty(spec->tool_call_id);
    a->tool_name = dup_or_empty(spec->tool_name);
    a->args_summary = dup_or_empty(spec->args_summary);
    a->request = spec->request ? json_deep_copy(spec->request) : json_object();
    if (!a->user_id || !a->correlation_id || !a->session_id || !a->tool_call_id || !a->tool_name ||
        !a->args_summary || !a->request)
        goto fail;
    /* waits are measured on the monotonic clock, never the wall clock */
    if (pthread_condattr_init(&ca) != 0)
        goto fail;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&a->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        goto fail;
    }
    pthread_condattr_destroy(&ca);
    a->owner = spec->owner;
    a->refs = 2;
    a->decision.reason = MEAO_APPROVAL_PENDING;

    pthread_mutex_lock(&r->mu);
    now = meao_mono_ms(r->clock);
    prune(r, now);
    do
        meao_approvals_mint_id(a->id);
    while (find(r, a->id) != NULL);
    a->deadline_ms = now + r->timeout_ms;
    a->expires_at_ms = meao_now_ms(r->clock) + r->timeout_ms;
    b = bucket_of(a->id);
    a->hnext = r->buckets[b];
    r->buckets[b] = a;
    a->next = r->pending;
    if (r->pending)
        r->pending->prev = a;
    r->pending = a;
    r->npending++;
    r->nknown++;
    pthread_mutex_unlock(&r->mu);

    memcpy(id, a->id, sizeof a->id);
    if (expires_at_ms)
        *expires_at_ms = a->expires_at_ms;
    *out = a;
    return MEAO_OK;
fail:
    drop_details(a);
    free(a->user_id);
    free(a);
    return MEAO_E_NOMEM;
}

void meao_approvals_wait(struct meao_approvals *r, struct meao_approval *a,
                         struct meao_approval_decision *out)
{
    pthread_mutex_lock(&r->mu);
    while (a->decision.reason == MEAO_APPROVAL_PENDING) {
        int64_t left = a->deadline_ms - meao_mono_ms(r->clock);
        struct timespec ts;
        if (left <= 0) {
            decide(r, a, MEAO_APPROVAL_TIMEOUT, false, false);
            break;
        }
        if (left > WAIT_SLICE_MS)
            left = WAIT_SLICE_MS;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (long)(left % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&a->cv, &r->mu, &ts);
    }
    *out = a->decision;
    unref(a);
    pthread_mutex_unlock(&r->mu);
}

enum meao_err meao_approvals_answer(struct meao_approvals *r, const char *id, const char *user_id,
                                    bool approved, bool trust_session)
{
    struct meao_approval *a;
    enum meao_err e = MEAO_OK;
    int64_t now;

    pthread_mutex_lock(&r->mu);
    now = meao_mono_ms(r->clock);
    prune(r, now);
    a = find(r, id);
    if (a == NULL) {
        e = MEAO_E_NOT_FOUND;
        goto out;
    }
    /* the user check comes first: another user learns nothing about the state */
    if (user_id == NULL || strcmp(a->user_id, user_id) != 0) {
        e = MEAO_E_FORBIDDEN;
        goto out;
    }
    if (a->decision.reason != MEAO_APPROVAL_PENDING) {
        e = MEAO_E_CONFLICT;
        goto out;
    }
    if (now >= a->deadline_ms) {
        decide(r, a, MEAO_APPROVAL_TIMEOUT, false, false);
        e = MEAO_E_CONFLICT;
        goto out;
    }
    decide(r, a, approved ? MEAO_APPROVAL_APPROVED : MEAO_APPROVAL_DENIED, approved, trust_session);
out:
    pthread_mutex_unlock(&r->mu);
    return e;
}

size_t meao_approvals_deny_owner(struct meao_approvals *r, const void *owner,
                                 enum meao_approval_reason reason)
{
    struct meao_approval *a, *next;
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    for (a = r->pending; a != NULL; a = next) {
        next = a->next;
        if (owner == NULL || a->owner == owner) {
            decide(r, a, reason, false, false);
            n++;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

size_t meao_approvals_deny_all(struct meao_approvals *r, enum meao_approval_reason reason)
{
    return meao_approvals_deny_owner(r, NULL, reason);
}

json_t *meao_approvals_list(struct meao_approvals *r, const char *user_id)
{
    json_t *list = json_array();
    struct meao_approval *a;
    int64_t now;

    if (list == NULL)
        return NULL;
    pthread_mutex_lock(&r->mu);
    now = meao_mono_ms(r->clock);
    expire(r, now);
    for (a = r->pending; a != NULL; a = a->next) {
        char when[32];
        json_t *item;
        if (strcmp(a->user_id, user_id) != 0)
            continue;
        meao_iso8601(a->expires_at_ms, when, sizeof when);
        /* a deep copy: the caller may change its list, never the registry */
        item = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s}", "approvalId", a->id,
                         "correlationId", a->correlation_id, "sessionId", a->session_id,
                         "toolCallId", a->tool_call_id, "toolName", a->tool_name, "argsSummary",
                         a->args_summary, "request", json_deep_copy(a->request), "expiresAt", when);
        if (item == NULL || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return list;
}

void meao_approvals_tick(struct meao_approvals *r)
{
    int64_t now;
    pthread_mutex_lock(&r->mu);
    now = meao_mono_ms(r->clock);
    expire(r, now);
    prune(r, now);
    pthread_mutex_unlock(&r->mu);
}

size_t meao_approvals_pending_count(struct meao_approvals *r)
{
    size_t n;
    pthread_mutex_lock(&r->mu);
    n = r->npending;
    pthread_mutex_unlock(&r->mu);
    return n;
}

size_t meao_approvals_known_count(struct meao_approvals *r)
{
    size_t n;
    pthread_mutex_lock(&r->mu);
    n = r->nknown;
    pthread_mutex_unlock(&r->mu);
    return n;
}
