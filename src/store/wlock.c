#define _GNU_SOURCE /* pthread_mutex_clocklock */
#include "store/wlock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define WLOCK_MAGIC   0x6d776c6bu /* "mwlk" */
#define WLOCK_VERSION 2u
#define HANDOFF_US    250 /* longest a releaser waits for the waiter it let go first */
#define WLOCK_SIZE    4096u
#define BOOT_ID_LEN   40

struct shared {
    uint32_t magic; /* written last, with release: the rest is initialised */
    uint32_t version;
    uint32_t size; /* sizeof(struct shared) of the builder */
    char boot_id[BOOT_ID_LEN];
    _Alignas(64) pthread_mutex_t mu;
    /* fair hand-off (see meao_wlock_release) */
    _Alignas(64) uint32_t gen; /* bumped by every acquisition; a futex word */
    uint64_t handoff;          /* id of the handle that released to a waiter, or 0 */
};

_Static_assert(sizeof(struct shared) <= WLOCK_SIZE, "the lock fits its page");

struct meao_wlock {
    struct shared *s;
    uint64_t id; /* unique among the handles of this boot: pid and a counter */
};

static uint32_t next_handle;

static long futex(uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
    /* shared (not FUTEX_PRIVATE_FLAG): the word lives in a file mapping */
    return syscall(SYS_futex, word, op, val, ts, NULL, 0);
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

/* Make s a fresh unlocked mutex of this boot. Called with the file's flock
 * held, and only when s is not a valid lock of this boot, so nobody can be
 * holding or waiting on it. */
static int init_shared(struct shared *s, const char *boot_id)
{
    pthread_mutexattr_t attr;
    int rc;
    memset(s, 0, sizeof *s);
    if (pthread_mutexattr_init(&attr) != 0)
        return -1;
    rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(&s->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0)
        return -1;
    s->version = WLOCK_VERSION;
    s->size = (uint32_t)sizeof *s;
    memcpy(s->boot_id, boot_id, BOOT_ID_LEN);
    __atomic_store_n(&s->magic, WLOCK_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

enum meao_err meao_wlock_open(const char *path, struct meao_wlock **out)
{
    struct meao_wlock *l = NULL;
    struct shared *s = MAP_FAILED;
    char boot_id[BOOT_ID_LEN];
    struct stat st;
    enum meao_err e = MEAO_E_IO;
    int fd, rc;

    *out = NULL;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        meao_log(MEAO_LOG_WARN, NULL, "wlock", "%s: %s", path, strerror(errno));
        return MEAO_E_IO;
    }
    while ((rc = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
        ;
    if (rc != 0 || fstat(fd, &st) != 0)
        goto out;
    if (st.st_size < (off_t)WLOCK_SIZE) {
        /* reserve the block: a sparse page on a full disk would SIGBUS on first touch */
        rc = posix_fallocate(fd, 0, WLOCK_SIZE);
        if (rc == EOPNOTSUPP || rc == EINVAL)
            rc = ftruncate(fd, WLOCK_SIZE) == 0 ? 0 : errno;
        if (rc != 0) {
            meao_log(MEAO_LOG_WARN, NULL, "wlock", "%s: allocate: %s", path, strerror(rc));
            goto out;
        }
    }
    s = mmap(NULL, WLOCK_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s == MAP_FAILED) {
        meao_log(MEAO_LOG_WARN, NULL, "wlock", "%s: mmap: %s", path, strerror(errno));
        goto out;
    }
    read_boot_id(boot_id);
    if (__atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) != WLOCK_MAGIC ||
        s->version != WLOCK_VERSION || s->size != (uint32_t)sizeof *s ||
        memcmp(s->boot_id, boot_id, BOOT_ID_LEN) != 0) {
        if (init_shared(s, boot_id) < 0) {
            meao_log(MEAO_LOG_WARN, NULL, "wlock", "%s: cannot initialise the mutex", path);
            e = MEAO_E_INTERNAL;
            goto out;
        }
    }
    l = malloc(sizeof *l);
    if (l == NULL) {
        e = MEAO_E_NOMEM;
        goto out;
    }
    l->s = s;
    l->id = ((uint64_t)(uint32_t)getpid() << 32) |
            (__atomic_add_fetch(&next_handle, 1, __ATOMIC_RELAXED) & 0xffffffffu);
    s = MAP_FAILED;
    *out = l;
    e = MEAO_OK;
out:
    if (s != MAP_FAILED)
        munmap(s, WLOCK_SIZE);
    flock(fd, LOCK_UN);
    close(fd); /* the mapping keeps what it needs */
    return e;
}

void meao_wlock_close(struct meao_wlock *l)
{
    if (l == NULL)
        return;
    munmap(l->s, WLOCK_SIZE);
    free(l);
}

/* The pthread mutex is not fair: a holder that unlocks and locks again at
 * once (the epoll worker does, batch after batch) usually wins against the
 * waiter it just woke, which in a VM takes tens of microseconds to run, and
 * that waiter's whole event loop starves (measured p99 50-70 ms). So a
 * releaser that saw waiters lets one of them have the lock first: its next
 * acquire waits until someone else has taken it (or HANDOFF_US passed, in
 * case the woken waiter died). */
static void let_waiter_go_first(struct meao_wlock *l)
{
    struct shared *s = l->s;
    uint32_t g = __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&s->handoff, __ATOMIC_ACQUIRE) == l->id) {
        struct timespec ts = {0, HANDOFF_US * 1000L};
        futex(&s->gen, FUTEX_WAIT, g, &ts); /* returns at once if gen moved */
    }
}

enum meao_err meao_wlock_acquire(struct meao_wlock *l, int timeout_ms, bool *recovered)
{
    int rc;
    if (recovered)
        *recovered = false;
    if (__atomic_load_n(&l->s->handoff, __ATOMIC_RELAXED) == l->id)
        let_waiter_go_first(l);
    rc = pthread_mutex_trylock(&l->s->mu);
    if (rc == EBUSY) {
        if (timeout_ms < 0) {
            rc = pthread_mutex_lock(&l->s->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += timeout_ms / 1000;
            ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            rc = pthread_mutex_clocklock(&l->s->mu, CLOCK_MONOTONIC, &ts);
        }
    }
    if (rc == EOWNERDEAD) {
        meao_log(MEAO_LOG_WARN, NULL, "wlock", "a process died holding the writer lock; recovered");
        rc = pthread_mutex_consistent(&l->s->mu);
        if (rc == 0 && recovered)
            *recovered = true;
    }
    if (rc == 0) {
        __atomic_add_fetch(&l->s->gen, 1, __ATOMIC_RELEASE);
        if (__atomic_exchange_n(&l->s->handoff, 0, __ATOMIC_ACQ_REL) != 0)
            futex(&l->s->gen, FUTEX_WAKE, INT_MAX, NULL); /* the releaser that stepped aside */
        return MEAO_OK;
    }
    if (rc != ETIMEDOUT)
        meao_log(MEAO_LOG_ERROR, NULL, "wlock", "writer lock: %s", strerror(rc));
    return MEAO_E_DB;
}

void meao_wlock_release(struct meao_wlock *l)
{
    /* glibc keeps FUTEX_WAITERS in the lock word while someone sleeps on it */
    bool waiters =
        (__atomic_load_n(&l->s->mu.__data.__lock, __ATOMIC_RELAXED) & (int)FUTEX_WAITERS) != 0;
    __atomic_store_n(&l->s->handoff, waiters ? l->id : 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&l->s->mu);
}
