/* SQLite's memory in its own region, for processes that must stay small
 * while idle (see meao_db_low_memory in db.h).
 *
 * SQLite's allocations interleave with the program's own in glibc's heap;
 * once SQLite frees them the pages stay dirty, pinned by the program's small
 * live allocations in between (measured: ~64 kB per meao-ws process after
 * one token check). Here SQLite allocates from a private mapping instead:
 * power-of-two size classes (32 B .. 64 KiB) carved from one reserved
 * region, a free list per class, larger blocks mapped one by one. When
 * SQLite holds nothing at all — every connection closed and the library
 * shut down — the whole region goes back to the kernel at once
 * (meao_dbmem_release). Reserved address space is not memory: only touched
 * pages count. */
#include "store/dbmem.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define REGION_SIZE ((size_t)256 << 20) /* address space reserved, not memory */
#define MIN_SHIFT   5                   /* 32-byte blocks, header included */
#define MAX_SHIFT   16                  /* 64 KiB; larger blocks get their own mapping */
#define NCLASS      (MAX_SHIFT - MIN_SHIFT + 1)
#define HDR         16 /* keeps 16-byte alignment */
#define BIG         0xffu

struct hdr {
    uint64_t size; /* bytes asked for */
    uint64_t cls;  /* class index, or BIG */
};

struct free_block {
    struct free_block *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char *region; /* NULL until the first allocation */
static size_t used;  /* bytes handed out from the region's start */
static size_t live;  /* blocks not freed */
static struct free_block *free_list[NCLASS];

static size_t class_size(unsigned cls)
{
    return (size_t)1 << (cls + MIN_SHIFT);
}

static unsigned class_of(size_t total)
{
    unsigned cls = 0;
    while (class_size(cls) < total)
        cls++;
    return cls;
}

/* Anonymous private memory, or NULL. */
static void *map_anon(size_t len, int flags)
{
    /* cppcheck-suppress invalidFunctionArg ; fd -1 is what MAP_ANONYMOUS wants */
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
    /* cppcheck-suppress memleak ; the caller owns the mapping */
    return p == MAP_FAILED ? NULL : p;
}

static size_t big_size(size_t n)
{
    size_t page = 4096;
    return (n + HDR + page - 1) / page * page;
}

static void *mem_malloc(int n_in)
{
    size_t n = n_in > 0 ? (size_t)n_in : 1;
    struct hdr *h;

    if (n + HDR > class_size(NCLASS - 1)) {
        h = map_anon(big_size(n), 0);
        if (h == NULL)
            return NULL;
        h->cls = BIG;
    } else {
        unsigned cls = class_of(n + HDR);
        pthread_mutex_lock(&mu);
        if (free_list[cls]) {
            struct free_block *b = free_list[cls];
            free_list[cls] = b->next;
            h = (struct hdr *)(void *)b;
        } else {
            if (region == NULL)
                region = map_anon(REGION_SIZE, MAP_NORESERVE);
            if (region == NULL || used + class_size(cls) > REGION_SIZE) {
                pthread_mutex_unlock(&mu);
                return NULL;
            }
            h = (struct hdr *)(region + used);
            used += class_size(cls);
        }
        live++;
        pthread_mutex_unlock(&mu);
        h->cls = cls;
    }
    h->size = n;
    return (char *)h + HDR;
}

static void mem_free(void *p)
{
    struct hdr *h;
    if (p == NULL)
        return;
    h = (struct hdr *)((char *)p - HDR);
    if (h->cls == BIG) {
        munmap(h, big_size(h->size));
        return;
    }
    pthread_mutex_lock(&mu);
    {
        struct free_block *b = (struct free_block *)(void *)h;
        unsigned cls = (unsigned)h->cls;
        b->next = free_list[cls];
        free_list[cls] = b;
    }
    live--;
    pthread_mutex_unlock(&mu);
}

static int mem_size(void *p)
{
    return p ? (int)((struct hdr *)((char *)p - HDR))->size : 0;
}

static void *mem_realloc(void *p, int n)
{
    struct hdr *h = (struct hdr *)((char *)p - HDR);
    void *q;
    if (n > 0 && h->cls != BIG && (size_t)n + HDR <= class_size((unsigned)h->cls)) {
        h->size = (size_t)n; /* still fits its block */
        return p;
    }
    q = mem_malloc(n);
    if (q == NULL)
        return NULL;
    memcpy(q, p, h->size < (size_t)n ? h->size : (size_t)n);
    mem_free(p);
    return q;
}

static int mem_roundup(int n)
{
    size_t total = (size_t)(n > 0 ? n : 1) + HDR;
    if (total > class_size(NCLASS - 1))
        return (int)(big_size((size_t)n) - HDR);
    return (int)(class_size(class_of(total)) - HDR);
}

static int mem_init(void *arg)
{
    (void)arg;
    return SQLITE_OK;
}

static void mem_shutdown(void *arg)
{
    (void)arg;
}

static const sqlite3_mem_methods methods = {
    mem_malloc, mem_free, mem_realloc, mem_size, mem_roundup, mem_init, mem_shutdown, NULL,
};

bool meao_dbmem_install(void)
{
    return sqlite3_config(SQLITE_CONFIG_MALLOC, &methods) == SQLITE_OK;
}

bool meao_dbmem_release(void)
{
    bool released = false;
    pthread_mutex_lock(&mu);
    if (live == 0 && region != NULL && used > 0) {
        madvise(region, used, MADV_DONTNEED); /* the pages read back as zero */
        used = 0;
        memset(free_list, 0, sizeof free_list);
        released = true;
    }
    pthread_mutex_unlock(&mu);
    return released;
}

size_t meao_dbmem_live(void)
{
    size_t n;
    pthread_mutex_lock(&mu);
    n = live;
    pthread_mutex_unlock(&mu);
    return n;
}
