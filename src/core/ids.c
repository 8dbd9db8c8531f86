#include "core/ids.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

bool meao_request_id_valid(const char *s)
{
    size_t n = 0;
    if (s == NULL)
        return false;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= MEAO_REQUEST_ID_MAX)
            return false;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return n > 0;
}

/* Random bytes for ids come from a small per-thread pool refilled from the
 * OS CSPRNG, so minting an id is not a system call per request. A forked
 * child drops the pool it inherited (else parent and child would mint the
 * same ids). */
static _Thread_local unsigned char pool[1024];
static _Thread_local size_t pool_left;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void drop_pool(void)
{
    pool_left = 0;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, drop_pool);
}

static void pool_take(unsigned char *b, size_t n)
{
    pthread_once(&atfork_once, register_atfork);
    if (pool_left < n) {
        randombytes_buf(pool, sizeof pool);
        pool_left = sizeof pool;
    }
    memcpy(b, pool + sizeof pool - pool_left, n);
    sodium_memzero(pool + sizeof pool - pool_left, n);
    pool_left -= n;
}

void meao_uuid4(char out[37])
{
    unsigned char b[16];
    pool_take(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

void meao_request_id_pick(const char *incoming, char out[MEAO_REQUEST_ID_MAX + 1])
{
    if (meao_request_id_valid(incoming)) {
        memcpy(out, incoming, strlen(incoming) + 1);
        return;
    }
    meao_uuid4(out);
}
