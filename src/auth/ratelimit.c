/* Rate limiting: GCRA maths (pure) and the shared-memory bucket table.
 *
 * File layout (all offsets recorded in the header and checked on attach):
 *
 *   header   magic (written last), version, retired flag — these first 16
 *            bytes keep their place in every version — then sizes, geometry,
 *            offsets, boot id, shared counters, reserved words
 *   stripes  nstripes robust process-shared mutexes, one per 64-byte line
 *   slots    nstripes * slots_per_stripe buckets {key, tat[2], dirty}
 *   conns    nstripes * CONNS_PER_STRIPE open-connection entries {key, pid}
 *
 * A key belongs to stripe (h % nstripes); its buckets and connection entries
 * live only in that stripe's own slots, so one mutex covers everything a check
 * touches. Inside a stripe, open addressing with linear probing over a window of
 * at most PROBE slots that wraps within the stripe. A slot's key is never reset
 * to 0 once used, so the first never-used slot ends a search; a slot whose TATs
 * are all in the past is empty in meaning and is reused. When the window holds
 * only live buckets, the one closest to empty (smallest max TAT) is evicted: its
 * subject's bucket resets early — it fails open for that subject — which is
 * counted and logged. 65536 slots hold far more live subjects than one host
 * serves; the window only fills under a flood of distinct keys.
 *
 * A process killed while holding a stripe mutex leaves it to the next locker as
 * EOWNERDEAD; the bucket was written with single aligned stores (TATs first,
 * key last when a slot changes hands), so it is consistent enough to carry on:
 * at worst one limit of one bucket misses the last request.
 */
#include "auth/ratelimit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "http/http.h"
#include "store/db.h"

#define RL_MAGIC         UINT64_C(0x316c722d6f61656d) /* "meao-rl1" little-endian */
#define RL_VERSION       1u
#define MAX_STRIPES      256u
#define PROBE            32u
#define CONNS_PER_STRIPE 64u
#define DEFAULT_SLOTS    65536u
#define MAX_SLOTS        (1u << 24)
#define LOCK_TIMEOUT_S   1
#define EVICT_LOG_MS     10000
#define REATTACH_MS      10000
#define BOOT_ID_LEN      48
/* 366 days: keeps window_us and every TAT sum far from int64 overflow. */
#define MAX_WINDOW_MS INT64_C(31622400000)

struct shm_hdr {
    uint64_t magic;   /* RL_MAGIC once the table is complete */
    uint32_t version; /* RL_VERSION */
    uint32_t retired; /* 1: a newer table replaced this one at the path */
    uint32_t hdr_size, stripe_size, slot_size, conn_size;
    uint32_t nstripes, slots_per_stripe, probe, conns_per_stripe;
    uint64_t off_stripes, off_slots, off_conns, total_size;
    char boot_id[BOOT_ID_LEN]; /* mutexes do not survive a reboot */
    int64_t created_ms;
    uint64_t evictions;   /* atomic */
    int64_t next_save_ms; /* atomic; meao_rl_save_due */
    uint64_t revocations; /* atomic; meao_rl_revocations (was reserved: stays version 1) */
    uint64_t reserved[15];
};

struct stripe {
    _Alignas(64) pthread_mutex_t mu;
};

struct slot {
    uint64_t key; /* 0: never used */
    int64_t tat[MEAO_RL_MAX_LIMITS];
    uint32_t dirty; /* changed since the last save */
    uint32_t pad;
};

struct conn {
    uint64_t key; /* 0: free */
    int32_t pid;
    uint32_t pad;
};

/* One mapping of one table file. */
struct map {
    struct shm_hdr *hdr;
    size_t size;
    struct stripe *stripes;
    struct slot *slots;
    struct conn *conns;
    struct map *older; /* replaced mappings stay mapped until close */
};

struct meao_rl {
    char *path;
    struct map *cur;           /* atomic */
    pthread_mutex_t relock;    /* serialises moving to a replacement table */
    int64_t next_reattach_ms;  /* under relock */
    int full_save;             /* atomic: next save writes every live bucket */
    int64_t next_evict_log_ms; /* atomic */
};

struct layout {
    uint32_t nstripes, sps, probe;
    uint64_t off_stripes, off_slots, off_conns, total;
};

/* ---- GCRA (pure) ---------------------------------------------------------- */

static int64_t ceil_div(int64_t a, int64_t b)
{
    return a <= 0 ? 0 : (a + b - 1) / b;
}

bool meao_rl_class_valid(const struct meao_rl_class *cls)
{
    if (cls == NULL || cls->name == NULL || cls->nlimits > MEAO_RL_MAX_LIMITS)
        return false;
    for (size_t i = 0; i < cls->nlimits; i++) {
        const struct meao_rl_limit *l = &cls->limits[i];
        if (l->limit < 1 || l->window_ms < 1 || l->window_ms > MAX_WINDOW_MS ||
            l->limit > l->window_ms * 1000)
            return false;
    }
    return true;
}

bool meao_gcra(int64_t tat_us, int64_t now_us, const struct meao_rl_limit *lim,
               struct meao_gcra_out *out)
{
    int64_t t = lim->window_ms * 1000 / lim->limit; /* emission interval */
    int64_t c = t * lim->limit;                     /* capacity: a burst of exactly L */
    int64_t base, next;

    if (tat_us > now_us + c)
        base = now_us + c; /* clock stepped back or limit tightened: a full bucket */
    else
        base = tat_us > now_us ? tat_us : now_us;
    next = base + t;
    if (next - now_us <= c) {
        out->allowed = true;
        out->tat_us = next;
        out->remaining = (c - (next - now_us)) / t;
        out->reset_us = next - now_us;
        out->retry_after_us = 0;
    } else {
        out->allowed = false;
        out->tat_us = base; /* the input, capped at now + C */
        out->remaining = 0;
        out->reset_us = base - now_us;
        /* the first instant t' with base + T - t' <= C */
        out->retry_after_us = next - c - now_us;
    }
    return out->allowed;
}

bool meao_rl_decide(const struct meao_rl_class *cls, int64_t tat_us[MEAO_RL_MAX_LIMITS],
                    int64_t now_ms, struct meao_rl_result *out)
{
    struct meao_gcra_out g[MEAO_RL_MAX_LIMITS];
    int64_t now_us = now_ms * 1000;
    bool all = true;
    size_t b = 0;

    memset(out, 0, sizeof *out);
    out->allowed = true;
    if (cls->nlimits == 0)
        return true;
    for (size_t i = 0; i < cls->nlimits; i++)
        all &= meao_gcra(tat_us[i], now_us, &cls->limits[i], &g[i]);
    for (size_t i = 1; i < cls->nlimits; i++) {
        bool better;
        if (all)
            better = g[i].remaining < g[b].remaining ||
                     (g[i].remaining == g[b].remaining && g[i].reset_us > g[b].reset_us);
        else
            better = !g[i].allowed && (g[b].allowed || g[i].retry_after_us > g[b].retry_after_us);
        if (better)
            b = i;
    }
    /* Admitted: every TAT advances. Denied: none does; a TAT capped by meao_gcra
     * is stored capped, or retry_after would promise what the next check breaks. */
    for (size_t i = 0; i < cls->nlimits; i++)
        if (all || !g[i].allowed)
            tat_us[i] = g[i].tat_us;
    out->allowed = all;
    out->limit = cls->limits[b].limit;
    out->window_ms = cls->limits[b].window_ms;
    out->remaining = all ? g[b].remaining : 0;
    out->reset_ms = ceil_div(g[b].reset_us, 1000);
    out->retry_after_ms = all ? 0 : ceil_div(g[b].retry_after_us, 1000);
    return all;
}

void meao_rl_class_from_config(const struct meao_config *cfg, enum meao_rate_class rc,
                               struct meao_rl_class *out)
{
    memset(out, 0, sizeof *out);
    switch (rc) {
    case MEAO_RATE_REST:
        out->name = "rest";
        out->limits[0] = (struct meao_rl_limit){cfg->rate_rest_per_min, 60 * 1000};
        out->limits[1] = (struct meao_rl_limit){cfg->rate_rest_per_hour, 3600 * 1000};
        out->nlimits = 2;
        break;
    case MEAO_RATE_MESSAGES:
        out->name = "msg";
        out->limits[0] = (struct meao_rl_limit){cfg->rate_messages_per_min, 60 * 1000};
        out->nlimits = 1;
        break;
    case MEAO_RATE_PAIRING:
        out->name = "pair";
        out->limits[0] = (struct meao_rl_limit){cfg->rate_pairing_per_15min, 15 * 60 * 1000};
        out->nlimits = 1;
        break;
    case MEAO_RATE_NONE:
    default: out->name = "none"; break;
    }
}

void meao_rl_class_ws_messages(const struct meao_config *cfg, struct meao_rl_class *out)
{
    memset(out, 0, sizeof *out);
    out->name = "ws";
    out->limits[0] = (struct meao_rl_limit){cfg->rate_ws_messages_per_min, 60 * 1000};
    out->nlimits = 1;
}

uint64_t meao_rl_key_hash(const char *class_name, const char *key)
{
    unsigned char buf[256];
    unsigned char h[16];
    size_t nl = strlen(class_name), kl = strlen(key);
    uint64_t v = 0;

    if (nl + 1 + kl <= sizeof buf) {
        memcpy(buf, class_name, nl + 1);
        memcpy(buf + nl + 1, key, kl);
        crypto_generichash(h, sizeof h, buf, nl + 1 + kl, NULL, 0);
    } else {
        crypto_generichash_state st;
        crypto_generichash_init(&st, NULL, 0, sizeof h);
        crypto_generichash_update(&st, (const unsigned char *)class_name, nl + 1);
        crypto_generichash_update(&st, (const unsigned char *)key, kl);
        crypto_generichash_final(&st, h, sizeof h);
    }
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | h[i];
    return v ? v : 1;
}

/* ---- headers -------------------------------------------------------------- */

void meao_rl_headers(struct meao_resp *resp, const struct meao_rl_class *cls,
                     const struct meao_rl_result *r)
{
    char policy[160];
    size_t off = 0;
    long long reset_s;

    if (cls == NULL || cls->nlimits == 0 || r->limit <= 0)
        return;
    reset_s = (long long)ceil_div(r->reset_ms, 1000);
    policy[0] = '\0';
    for (size_t i = 0; i < cls->nlimits && off < sizeof policy; i++) {
        int n = snprintf(policy + off, sizeof policy - off, "%s%lld;w=%lld", i ? ", " : "",
                         (long long)cls->limits[i].limit,
                         (long long)ceil_div(cls->limits[i].window_ms, 1000));
        if (n < 0)
            break;
        off += (size_t)n;
    }
    meao_resp_header(resp, "X-RateLimit-Limit", "%lld", (long long)r->limit);
    meao_resp_header(resp, "X-RateLimit-Remaining", "%lld", (long long)r->remaining);
    meao_resp_header(resp, "X-RateLimit-Reset", "%lld", reset_s);
    meao_resp_header(resp, "RateLimit-Policy", "%s", policy);
    meao_resp_header(resp, "RateLimit", "limit=%lld, remaining=%lld, reset=%lld",
                     (long long)r->limit, (long long)r->remaining, reset_s);
}

int64_t meao_rl_retry_after_s(const struct meao_rl_result *r)
{
    int64_t s;
    if (r->allowed)
        return 0;
    s = ceil_div(r->retry_after_ms, 1000);
    return s < 1 ? 1 : s;
}

/* ---- the shared table: layout, locking, probing ----------------------------- */

static uint64_t align64(uint64_t v)
{
    return (v + 63) & ~(uint64_t)63;
}

static void compute_layout(uint32_t nstripes, uint32_t sps, struct layout *l)
{
    l->nstripes = nstripes;
    l->sps = sps;
    l->probe = sps < PROBE ? sps : PROBE;
    l->off_stripes = align64(sizeof(struct shm_hdr));
    l->off_slots = align64(l->off_stripes + (uint64_t)nstripes * sizeof(struct stripe));
    l->off_conns = align64(l->off_slots + (uint64_t)nstripes * sps * sizeof(struct slot));
    l->total = l->off_conns + (uint64_t)nstripes * CONNS_PER_STRIPE * sizeof(struct conn);
}

/* Geometry for a requested slot count: stripes of at least PROBE slots where
 * there are enough, at most MAX_STRIPES of them. */
static void layout_for(size_t nslots, struct layout *l)
{
    size_t ns, sps;
    if (nslots == 0)
        nslots = DEFAULT_SLOTS;
    if (nslots > MAX_SLOTS)
        nslots = MAX_SLOTS;
    ns = nslots / PROBE;
    if (ns < 1)
        ns = 1;
    if (ns > MAX_STRIPES)
        ns = MAX_STRIPES;
    sps = nslots / ns;
    compute_layout((uint32_t)ns, (uint32_t)sps, l);
}

static void read_boot_id(char out[BOOT_ID_LEN])
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    memset(out, 0, BOOT_ID_LEN);
    if (f == NULL)
        return;
    if (fgets(out, BOOT_ID_LEN, f) == NULL)
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

static void set_map_pointers(struct map *m)
{
    char *base = (char *)m->hdr;
    m->stripes = (struct stripe *)(void *)(base + m->hdr->off_stripes);
    m->slots = (struct slot *)(void *)(base + m->hdr->off_slots);
    m->conns = (struct conn *)(void *)(base + m->hdr->off_conns);
}

static void unmap(struct map *m)
{
    while (m) {
        struct map *older = m->older;
        munmap(m->hdr, m->size);
        free(m);
        m = older;
    }
}

/* Lock a stripe. An owner that died is recovered (EOWNERDEAD); an owner that is
 * alive but stuck (stopped, or a lock word left by a kernel that is gone) makes
 * us give up after LOCK_TIMEOUT_S rather than hang a worker. The deadline reads
 * the real clock: it bounds a wait, it is not rate-limit time. */
static enum meao_err lock_stripe(pthread_mutex_t *mu)
{
    int rc = pthread_mutex_trylock(mu);
    if (rc == EBUSY) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += LOCK_TIMEOUT_S;
        rc = pthread_mutex_timedlock(mu, &ts);
    }
    if (rc == EOWNERDEAD) {
        meao_log(MEAO_LOG_WARN, NULL, __func__,
                 "a process died holding a rate-limit lock; recovered");
        rc = pthread_mutex_consistent(mu);
    }
    if (rc == 0)
        return MEAO_OK;
    meao_log(MEAO_LOG_ERROR, NULL, __func__, "rate-limit lock unavailable: %s", strerror(rc));
    return MEAO_E_UNAVAILABLE;
}

static uint32_t stripe_of(const struct map *m, uint64_t h)
{
    return (uint32_t)(h % m->hdr->nstripes);
}

static int64_t max_tat(const struct slot *s)
{
    return s->tat[0] > s->tat[1] ? s->tat[0] : s->tat[1];
}

/* Under the stripe lock: the slot holding h, or NULL with *reuse the first
 * reusable slot of the window (never used or expired; NULL if none) and
 * *victim the live slot closest to empty. */
static struct slot *probe(const struct map *m, uint64_t h, int64_t now_us, struct slot **reuse,
                          struct slot **victim)
{
    uint32_t sps = m->hdr->slots_per_stripe, n = m->hdr->probe;
    struct slot *base = m->slots + (size_t)stripe_of(m, h) * sps;
    uint32_t pos = (uint32_t)((h >> 32) % sps);
    int64_t vmax = INT64_MAX;

    *reuse = NULL;
    *victim = NULL;
    for (uint32_t i = 0; i < n; i++) {
        struct slot *s = &base[(pos + i) % sps];
        int64_t mx;
        if (s->key == h)
            return s;
        if (s->key == 0) {
            if (*reuse == NULL)
                *reuse = s;
            break; /* keys are never cleared, so h is not further on */
        }
        mx = max_tat(s);
        if (mx <= now_us) {
            if (*reuse == NULL)
                *reuse = s;
        } else if (*victim == NULL || mx < vmax) {
            vmax = mx;
            *victim = s;
        }
    }
    return NULL;
}

/* Under the stripe lock: give h a slot (found by probe()), TATs before key so
 * a death in between never pairs h with another subject's TATs. Returns true
 * when a live bucket was evicted. */
static bool claim(struct slot *reuse, struct slot *victim, uint64_t h,
                  const int64_t tat[MEAO_RL_MAX_LIMITS], struct slot **out)
{
    struct slot *s = reuse ? reuse : victim;
    s->tat[0] = tat[0];
    s->tat[1] = tat[1];
    s->key = h;
    *out = s;
    return reuse == NULL;
}

static void note_eviction(struct meao_rl *rl, struct map *m, int64_t now_ms)
{
    uint64_t total = __atomic_add_fetch(&m->hdr->evictions, 1, __ATOMIC_RELAXED);
    int64_t next;
    if (rl == NULL)
        return;
    next = __atomic_load_n(&rl->next_evict_log_ms, __ATOMIC_RELAXED);
    if (now_ms < next ||
        !__atomic_compare_exchange_n(&rl->next_evict_log_ms, &next, now_ms + EVICT_LOG_MS, false,
                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return;
    meao_log(MEAO_LOG_WARN, NULL, "ratelimit_evict",
             "rate-limit table window full: %llu live buckets evicted (reset early) in total",
             (unsigned long long)total);
}

/* Merge (h, tat) into m, TATs only moving later; dirty marks it for the next save. */
static enum meao_err merge(struct map *m, uint64_t h, const int64_t tat[MEAO_RL_MAX_LIMITS],
                           int64_t now_us, bool dirty, bool *evicted)
{
    pthread_mutex_t *mu = &m->stripes[stripe_of(m, h)].mu;
    struct slot *s, *reuse, *victim;
    enum meao_err e = lock_stripe(mu);
    *evicted = false;
    if (e != MEAO_OK)
        return e;
    s = probe(m, h, now_us, &reuse, &victim);
    if (s == NULL) {
        *evicted = claim(reuse, victim, h, tat, &s);
    } else {
        for (int i = 0; i < MEAO_RL_MAX_LIMITS; i++)
            if (tat[i] > s->tat[i])
                s->tat[i] = tat[i];
    }
    if (dirty)
        s->dirty = 1;
    pthread_mutex_unlock(mu);
    return MEAO_OK;
}

/* ---- SQLite write-behind ---------------------------------------------------- */

static const char sql_load[] = "SELECT key_hash, tat0_ms, tat1_ms FROM rate_buckets"
                               " WHERE tat0_ms > ?1 OR tat1_ms > ?1";
static const char sql_upsert[] =
    "INSERT INTO rate_buckets(key_hash, tat0_ms, tat1_ms, updated_ms) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT(key_hash) DO UPDATE SET tat0_ms = excluded.tat0_ms,"
    " tat1_ms = excluded.tat1_ms, updated_ms = excluded.updated_ms";
static const char sql_expire[] = "DELETE FROM rate_buckets WHERE tat0_ms <= ?1 AND tat1_ms <= ?1";

/* Stored ms → us, bounded so a corrupt row cannot overflow the maths. */
static int64_t ms_to_us(int64_t ms)
{
    if (ms < 0)
        return 0;
    if (ms > MAX_WINDOW_MS * 1000)
        ms = MAX_WINDOW_MS * 1000;
    return ms * 1000;
}

static enum meao_err load_into(struct meao_rl *rl, struct map *m, struct meao_db *db,
                               int64_t now_ms, size_t *nrows)
{
    sqlite3_stmt *st = meao_db_stmt(db, sql_load);
    enum meao_err e = MEAO_OK;
    int rc;

    *nrows = 0;
    if (st == NULL)
        return MEAO_E_DB;
    sqlite3_bind_int64(st, 1, now_ms);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t h = (uint64_t)sqlite3_column_int64(st, 0);
        int64_t tat[MEAO_RL_MAX_LIMITS] = {ms_to_us(sqlite3_column_int64(st, 1)),
                                           ms_to_us(sqlite3_column_int64(st, 2))};
        bool evicted;
        if (h == 0)
            continue;
        e = merge(m, h, tat, now_ms * 1000, rl != NULL, &evicted);
        if (e != MEAO_OK)
            goto out;
        if (evicted)
            note_eviction(rl, m, now_ms);
        (*nrows)++;
    }
    if (rc != SQLITE_DONE) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "reading rate_buckets: %s",
                 sqlite3_errmsg(meao_db_handle(db)));
        e = meao_db_err(rc);
    }
out:
    sqlite3_reset(st);
    return e;
}

/* ---- building and attaching the file ---------------------------------------- */

enum check {
    C_OK,
    C_EMPTY,
    C_SHORT,
    C_MAGIC,
    C_OLDER,
    C_NEWER,
    C_LAYOUT,
    C_BOOT,
    C_GEOMETRY,
    C_RETIRED
};

static const char *check_name(enum check c)
{
    static const char *names[] = {"ok",
                                  "empty",
                                  "short file",
                                  "bad magic",
                                  "older version",
                                  "newer version",
                                  "bad layout",
                                  "from an earlier boot",
                                  "other geometry",
                                  "retired"};
    return names[c];
}

static enum check validate(int fd, off_t size, size_t want_slots, const char *boot_id)
{
    struct shm_hdr h;
    struct layout l, want;

    if (size == 0)
        return C_EMPTY;
    if ((size_t)size < sizeof h || pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
        return C_SHORT;
    if (h.magic != RL_MAGIC)
        return C_MAGIC;
    if (h.version < RL_VERSION)
        return C_OLDER;
    if (h.version > RL_VERSION)
        return C_NEWER;
    if (h.hdr_size != sizeof h || h.stripe_size != sizeof(struct stripe) ||
        h.slot_size != sizeof(struct slot) || h.conn_size != sizeof(struct conn) ||
        h.conns_per_stripe != CONNS_PER_STRIPE || h.nstripes < 1 || h.nstripes > MAX_STRIPES ||
        h.slots_per_stripe < 1 || (uint64_t)h.nstripes * h.slots_per_stripe > MAX_SLOTS)
        return C_LAYOUT;
    compute_layout(h.nstripes, h.slots_per_stripe, &l);
    if (h.probe != l.probe || h.off_stripes != l.off_stripes || h.off_slots != l.off_slots ||
        h.off_conns != l.off_conns || h.total_size != l.total || (uint64_t)size != l.total)
        return C_LAYOUT;
    if (strncmp(h.boot_id, boot_id, BOOT_ID_LEN) != 0)
        return C_BOOT;
    if (want_slots != 0) {
        layout_for(want_slots, &want);
        if (want.nstripes != l.nstripes || want.sps != l.sps)
            return C_GEOMETRY;
    }
    if (h.retired)
        return C_RETIRED;
    return C_OK;
}

static enum meao_err map_fd(int fd, size_t size, struct map **out)
{
    struct map *m = calloc(1, sizeof *m);
    void *p;
    *out = NULL;
    if (m == NULL)
        return MEAO_E_NOMEM;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "mmap: %s", strerror(errno));
        free(m);
        return MEAO_E_IO;
    }
    m->hdr = p;
    m->size = size;
    set_map_pointers(m);
    *out = m;
    return MEAO_OK;
}

/* Build a complete table at path ".new" and rename it over path. Called with
 * the flock of the file currently at path held, so builders never overlap. */
static enum meao_err build(const char *path, size_t nslots, const char *boot_id, struct meao_db *db,
                           int64_t now_ms, struct map **out)
{
    struct layout l;
    struct map *m = NULL;
    pthread_mutexattr_t attr;
    bool attr_ok = false;
    char tmp[4200];
    int fd = -1, rc;
    size_t nrows = 0;
    enum meao_err e = MEAO_E_IO;

    *out = NULL;
    layout_for(nslots, &l);
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.new", path) >= sizeof tmp)
        goto fail;
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    /* Reserve the blocks: a sparse file on a full disk would SIGBUS on first touch. */
    rc = posix_fallocate(fd, 0, (off_t)l.total);
    if (rc == EOPNOTSUPP || rc == EINVAL)
        rc = ftruncate(fd, (off_t)l.total) == 0 ? 0 : errno;
    if (rc != 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "%s: allocate: %s", tmp, strerror(rc));
        goto fail;
    }
    e = map_fd(fd, (size_t)l.total, &m);
    if (e != MEAO_OK)
        goto fail;
    e = MEAO_E_INTERNAL;
    memset(m->hdr, 0, (size_t)l.total);
    m->hdr->version = RL_VERSION;
    m->hdr->hdr_size = sizeof(struct shm_hdr);
    m->hdr->stripe_size = sizeof(struct stripe);
    m->hdr->slot_size = sizeof(struct slot);
    m->hdr->conn_size = sizeof(struct conn);
    m->hdr->nstripes = l.nstripes;
    m->hdr->slots_per_stripe = l.sps;
    m->hdr->probe = l.probe;
    m->hdr->conns_per_stripe = CONNS_PER_STRIPE;
    m->hdr->off_stripes = l.off_stripes;
    m->hdr->off_slots = l.off_slots;
    m->hdr->off_conns = l.off_conns;
    m->hdr->total_size = l.total;
    memcpy(m->hdr->boot_id, boot_id, BOOT_ID_LEN);
    m->hdr->created_ms = now_ms;
    set_map_pointers(m);
    if (pthread_mutexattr_init(&attr) != 0)
        goto fail;
    attr_ok = true;
    if (pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0 ||
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0)
        goto fail;
    for (uint32_t i = 0; i < l.nstripes; i++)
        if (pthread_mutex_init(&m->stripes[i].mu, &attr) != 0)
            goto fail;
    if (db != NULL) {
        /* Not published yet: nobody is admitted against an unrestored table. */
        if (load_into(NULL, m, db, now_ms, &nrows) != MEAO_OK)
            meao_log(MEAO_LOG_WARN, NULL, __func__,
                     "could not restore rate-limit buckets; starting empty");
    }
    __atomic_store_n(&m->hdr->magic, RL_MAGIC, __ATOMIC_RELEASE);
    if (rename(tmp, path) != 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "rename %s: %s", tmp, strerror(errno));
        e = MEAO_E_IO;
        goto fail;
    }
    meao_log(MEAO_LOG_INFO, NULL, "ratelimit_init",
             "built rate-limit table %s: %u slots in %u stripes, %zu buckets restored", path,
             l.nstripes * l.sps, l.nstripes, nrows);
    *out = m;
    m = NULL;
    e = MEAO_OK;
fail:
    if (attr_ok)
        pthread_mutexattr_destroy(&attr);
    if (e != MEAO_OK && fd >= 0)
        unlink(tmp);
    unmap(m);
    if (fd >= 0)
        close(fd);
    return e;
}

/* Tell processes still mapping the file we replaced to move over. The first 16
 * bytes keep their place in every version, so this works on older tables too. */
static void retire(int fd, off_t size)
{
    struct shm_hdr *h;
    if ((size_t)size < sizeof(struct shm_hdr))
        return;
    h = mmap(NULL, sizeof *h, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED)
        return;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == RL_MAGIC)
        __atomic_store_n(&h->retired, 1, __ATOMIC_RELEASE);
    munmap(h, sizeof *h);
}

static enum meao_err attach(const char *path, size_t nslots, struct meao_db *db, int64_t now_ms,
                            struct map **out)
{
    char boot_id[BOOT_ID_LEN];
    enum meao_err e = MEAO_E_IO;
    int fd = -1;

    *out = NULL;
    read_boot_id(boot_id);
    for (int attempt = 0; attempt < 8; attempt++) {
        struct stat fst, pst;
        enum check c;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
            meao_log(MEAO_LOG_ERROR, NULL, __func__, "%s: %s", path, strerror(errno));
            return MEAO_E_IO;
        }
        while (flock(fd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                meao_log(MEAO_LOG_ERROR, NULL, __func__, "flock %s: %s", path, strerror(errno));
                goto out;
            }
        }
        if (fstat(fd, &fst) != 0)
            goto out;
        if (stat(path, &pst) != 0 || pst.st_ino != fst.st_ino || pst.st_dev != fst.st_dev) {
            close(fd); /* replaced while we waited: lock the new one */
            fd = -1;
            continue;
        }
        c = validate(fd, fst.st_size, nslots, boot_id);
        if (c == C_OK) {
            e = map_fd(fd, (size_t)fst.st_size, out);
            goto out;
        }
        if (c == C_NEWER) {
            meao_log(MEAO_LOG_ERROR, NULL, __func__,
                     "%s was built by a newer release; not replacing it", path);
            e = MEAO_E_UNAVAILABLE;
            goto out;
        }
        if (c != C_EMPTY)
            meao_log(MEAO_LOG_WARN, NULL, "ratelimit_rebuild", "%s: %s; rebuilding it", path,
                     check_name(c));
        e = build(path, nslots, boot_id, db, now_ms, out);
        if (e == MEAO_OK)
            retire(fd, fst.st_size);
        goto out;
    }
    meao_log(MEAO_LOG_ERROR, NULL, __func__, "%s keeps being replaced", path);
out:
    if (fd >= 0) {
        /* explicitly: a mapping made from fd keeps its open file, and its flock, alive */
        flock(fd, LOCK_UN);
        close(fd);
    }
    return e;
}

enum meao_err meao_rl_open(const char *path, size_t nslots, struct meao_db *db, int64_t now_ms,
                           struct meao_rl **out)
{
    struct meao_rl *rl;
    enum meao_err e = MEAO_E_NOMEM;

    *out = NULL;
    if (sodium_init() < 0)
        return MEAO_E_INTERNAL;
    rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return MEAO_E_NOMEM;
    rl->path = strdup(path);
    if (rl->path == NULL)
        goto fail;
    if (pthread_mutex_init(&rl->relock, NULL) != 0) {
        free(rl->path);
        free(rl);
        return MEAO_E_INTERNAL;
    }
    rl->full_save = 1;
    e = attach(path, nslots, db, now_ms, &rl->cur);
    if (e != MEAO_OK)
        goto fail;
    *out = rl;
    return MEAO_OK;
fail:
    meao_rl_close(rl);
    return e;
}

void meao_rl_close(struct meao_rl *rl)
{
    if (rl == NULL)
        return;
    unmap(rl->cur);
    if (rl->path)
        pthread_mutex_destroy(&rl->relock);
    free(rl->path);
    free(rl);
}

/* The table to use. When ours was replaced (retired), move to the one now at
 * the path; the old mapping stays valid for threads still inside it. If that
 * fails (a newer release owns the file), keep the old one and retry later. */
static struct map *current_map(struct meao_rl *rl, int64_t now_ms)
{
    struct map *m = __atomic_load_n(&rl->cur, __ATOMIC_ACQUIRE), *nm;
    if (__atomic_load_n(&m->hdr->retired, __ATOMIC_ACQUIRE) == 0)
        return m;
    pthread_mutex_lock(&rl->relock);
    m = rl->cur;
    if (__atomic_load_n(&m->hdr->retired, __ATOMIC_ACQUIRE) != 0 &&
        now_ms >= rl->next_reattach_ms) {
        if (attach(rl->path, 0, NULL, now_ms, &nm) == MEAO_OK) {
            nm->older = m;
            __atomic_store_n(&rl->cur, nm, __ATOMIC_RELEASE);
            __atomic_store_n(&rl->full_save, 1, __ATOMIC_RELAXED);
            meao_log(MEAO_LOG_INFO, NULL, "ratelimit_reattach",
                     "rate-limit table was replaced; moved to the new one");
            m = nm;
        } else {
            rl->next_reattach_ms = now_ms + REATTACH_MS;
        }
    }
    pthread_mutex_unlock(&rl->relock);
    return m;
}

enum meao_err meao_rl_check(struct meao_rl *rl, const char *key, const struct meao_rl_class *cls,
                            int64_t now_ms, struct meao_rl_result *out)
{
    int64_t tat[MEAO_RL_MAX_LIMITS] = {0, 0};
    struct slot *s, *reuse, *victim;
    pthread_mutex_t *mu;
    struct map *m;
    uint64_t h;
    bool evicted = false;
    enum meao_err e;

    memset(out, 0, sizeof *out);
    out->allowed = true;
    if (!meao_rl_class_valid(cls))
        return MEAO_E_INTERNAL;
    if (cls->nlimits == 0)
        return MEAO_OK;
    h = meao_rl_key_hash(cls->name, key);
    m = current_map(rl, now_ms);
    mu = &m->stripes[stripe_of(m, h)].mu;
    e = lock_stripe(mu);
    if (e != MEAO_OK)
        return e;
    s = probe(m, h, now_ms * 1000, &reuse, &victim);
    if (s != NULL)
        for (size_t i = 0; i < cls->nlimits; i++)
            tat[i] = s->tat[i];
    if (meao_rl_decide(cls, tat, now_ms, out)) {
        if (s == NULL) {
            evicted = claim(reuse, victim, h, tat, &s);
        } else {
            for (size_t i = 0; i < cls->nlimits; i++)
                s->tat[i] = tat[i];
        }
        s->dirty = 1;
    } else if (s != NULL) {
        for (size_t i = 0; i < cls->nlimits; i++) {
            if (s->tat[i] != tat[i]) { /* capped (clock stepped back) */
                s->tat[i] = tat[i];
                s->dirty = 1;
            }
        }
    }
    pthread_mutex_unlock(mu);
    if (evicted)
        note_eviction(rl, m, now_ms);
    return MEAO_OK;
}

enum meao_err meao_rl_load(struct meao_rl *rl, struct meao_db *db, int64_t now_ms)
{
    size_t n;
    return load_into(rl, current_map(rl, now_ms), db, now_ms, &n);
}

uint64_t meao_rl_evictions(const struct meao_rl *rl)
{
    const struct map *m = __atomic_load_n(&rl->cur, __ATOMIC_ACQUIRE);
    return __atomic_load_n(&m->hdr->evictions, __ATOMIC_RELAXED);
}

bool meao_rl_save_due(struct meao_rl *rl, int64_t now_ms, int64_t interval_ms)
{
    struct map *m = current_map(rl, now_ms);
    int64_t next = __atomic_load_n(&m->hdr->next_save_ms, __ATOMIC_ACQUIRE);
    /* a deadline further out than one interval means the clock stepped back */
    if (now_ms < next && next - now_ms <= interval_ms)
        return false;
    return __atomic_compare_exchange_n(&m->hdr->next_save_ms, &next, now_ms + interval_ms, false,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

struct row {
    uint64_t key;
    int64_t tat[MEAO_RL_MAX_LIMITS];
};

enum meao_err meao_rl_save(struct meao_rl *rl, struct meao_db *db, int64_t now_ms)
{
    struct map *m = current_map(rl, now_ms);
    int full = __atomic_exchange_n(&rl->full_save, 0, __ATOMIC_ACQ_REL);
    uint32_t sps = m->hdr->slots_per_stripe;
    int64_t now_us = now_ms * 1000;
    struct row *rows = NULL;
    size_t n = 0, cap = 0;
    bool in_tx = false;
    sqlite3_stmt *st;
    enum meao_err e = MEAO_OK;
    int rc;

    /* Copy out under each stripe's lock, then write without holding any. */
    for (uint32_t si = 0; si < m->hdr->nstripes; si++) {
        pthread_mutex_t *mu = &m->stripes[si].mu;
        struct slot *base = m->slots + (size_t)si * sps;
        e = lock_stripe(mu);
        if (e != MEAO_OK)
            goto fail;
        for (uint32_t i = 0; i < sps; i++) {
            struct slot *s = &base[i];
            if (s->key == 0 || (!full && !s->dirty))
                continue;
            s->dirty = 0;
            if (max_tat(s) <= now_us)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 256;
                struct row *nr = realloc(rows, ncap * sizeof *nr);
                if (nr == NULL) {
                    pthread_mutex_unlock(mu);
                    e = MEAO_E_NOMEM;
                    goto fail;
                }
                rows = nr;
                cap = ncap;
            }
            rows[n].key = s->key;
            rows[n].tat[0] = s->tat[0];
            rows[n].tat[1] = s->tat[1];
            n++;
        }
        pthread_mutex_unlock(mu);
    }

    e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        goto fail;
    in_tx = true;
    for (size_t i = 0; i < n; i++) {
        st = meao_db_stmt(db, sql_upsert);
        if (st == NULL) {
            e = MEAO_E_DB;
            goto fail;
        }
        sqlite3_bind_int64(st, 1, (int64_t)rows[i].key);
        sqlite3_bind_int64(st, 2, ceil_div(rows[i].tat[0], 1000));
        sqlite3_bind_int64(st, 3, ceil_div(rows[i].tat[1], 1000));
        sqlite3_bind_int64(st, 4, now_ms);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            e = meao_db_err(rc);
            goto fail;
        }
    }
    st = meao_db_stmt(db, sql_expire);
    if (st == NULL) {
        e = MEAO_E_DB;
        goto fail;
    }
    sqlite3_bind_int64(st, 1, now_ms);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        e = meao_db_err(rc);
        goto fail;
    }
    in_tx = false;
    e = meao_db_commit(db);
    if (e != MEAO_OK)
        goto fail;
    free(rows);
    return MEAO_OK;
fail:
    if (in_tx)
        meao_db_rollback(db);
    /* the dirty marks we cleared are gone: write everything next time */
    __atomic_store_n(&rl->full_save, 1, __ATOMIC_RELAXED);
    meao_log(MEAO_LOG_WARN, NULL, __func__, "saving rate-limit buckets failed: %s",
             meao_strerror(e == MEAO_OK ? MEAO_E_DB : e));
    free(rows);
    return e == MEAO_OK ? MEAO_E_DB : e;
}

/* ---- open connections ------------------------------------------------------- */

static bool pid_alive(int32_t pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

enum meao_err meao_rl_conn_acquire(struct meao_rl *rl, const char *key, int64_t max, pid_t pid,
                                   int64_t *count)
{
    uint64_t h = meao_rl_key_hash("conn", key);
    struct map *m;
    struct conn *c, *mine = NULL, *free_c = NULL;
    pthread_mutex_t *mu;
    int64_t n = 0;
    enum meao_err e;

    if (count)
        *count = 0;
    if (pid <= 0 || max < 1)
        return MEAO_E_INTERNAL;
    m = current_map(rl, 0);
    mu = &m->stripes[stripe_of(m, h)].mu;
    c = m->conns + (size_t)stripe_of(m, h) * CONNS_PER_STRIPE;
    e = lock_stripe(mu);
    if (e != MEAO_OK)
        return e;
    for (uint32_t i = 0; i < CONNS_PER_STRIPE; i++) {
        if (c[i].key == h && c[i].pid == pid) {
            mine = &c[i];
            n++;
        } else if (c[i].key == h && !pid_alive(c[i].pid)) {
            c[i].key = 0; /* its process is gone without releasing */
        } else if (c[i].key == h) {
            n++;
        }
        if (c[i].key == 0 && free_c == NULL)
            free_c = &c[i];
    }
    if (mine != NULL) {
        e = MEAO_OK;
    } else if (n >= max) {
        e = MEAO_E_RATE_LIMITED;
    } else {
        /* Other subjects' dead entries are reaped only when we need the room. */
        for (uint32_t i = 0; free_c == NULL && i < CONNS_PER_STRIPE; i++) {
            if (c[i].key != 0 && !pid_alive(c[i].pid)) {
                c[i].key = 0;
                free_c = &c[i];
            }
        }
        if (free_c == NULL) {
            meao_log(MEAO_LOG_WARN, NULL, __func__, "open-connection table full");
            e = MEAO_E_RATE_LIMITED;
        } else {
            free_c->pid = (int32_t)pid;
            free_c->key = h;
            n++;
            e = MEAO_OK;
        }
    }
    pthread_mutex_unlock(mu);
    if (count)
        *count = n;
    return e;
}

int64_t meao_rl_conn_count(struct meao_rl *rl)
{
    struct map *m = current_map(rl, 0);
    size_t n = (size_t)m->hdr->nstripes * CONNS_PER_STRIPE;
    int64_t live = 0;
    for (size_t i = 0; i < n; i++)
        if (__atomic_load_n(&m->conns[i].key, __ATOMIC_RELAXED) != 0 &&
            pid_alive(__atomic_load_n(&m->conns[i].pid, __ATOMIC_RELAXED)))
            live++;
    return live;
}

uint64_t meao_rl_revocations(struct meao_rl *rl)
{
    struct map *m = current_map(rl, 0);
    /* the map's address makes a move to a replaced table read as a change */
    return __atomic_load_n(&m->hdr->revocations, __ATOMIC_ACQUIRE) ^ (uint64_t)(uintptr_t)m;
}

void meao_rl_revocations_bump(struct meao_rl *rl)
{
    struct map *m = current_map(rl, 0);
    __atomic_add_fetch(&m->hdr->revocations, 1, __ATOMIC_ACQ_REL);
}

void meao_rl_conn_release(struct meao_rl *rl, const char *key, pid_t pid)
{
    uint64_t h = meao_rl_key_hash("conn", key);
    struct map *m = current_map(rl, 0);
    pthread_mutex_t *mu = &m->stripes[stripe_of(m, h)].mu;
    struct conn *c = m->conns + (size_t)stripe_of(m, h) * CONNS_PER_STRIPE;

    if (lock_stripe(mu) != MEAO_OK)
        return;
    for (uint32_t i = 0; i < CONNS_PER_STRIPE; i++)
        if (c[i].key == h && c[i].pid == (int32_t)pid)
            c[i].key = 0;
    pthread_mutex_unlock(mu);
}

void meao_rl_debug_hold_lock(struct meao_rl *rl, const char *class_name, const char *key)
{
    uint64_t h = meao_rl_key_hash(class_name, key);
    struct map *m = __atomic_load_n(&rl->cur, __ATOMIC_ACQUIRE);
    (void)lock_stripe(&m->stripes[stripe_of(m, h)].mu);
}
