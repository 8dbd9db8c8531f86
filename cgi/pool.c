#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/log.h"

/* Slow requests wait on the orchestrator, not the CPU: threads are cheap, but
 * they are only started when a job would otherwise wait. */
#define POOL_MAX_THREADS 16
#define POOL_QUEUE_MAX   64 /* waiting (not yet running) jobs */

struct job {
    void *conn;
    struct meao_req req;
    struct meao_resp resp;
    struct job *next;
    struct job *running_next; /* in pool->running while a thread runs it */
};

struct cgi_pool {
    const struct meao_config *cfg;
    cgi_pool_done_fn done_fn;
    void *ctx;
    int efd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *head, *tail; /* waiting, FIFO */
    unsigned nwaiting;
    struct job *done;    /* finished, any order */
    struct job *running; /* being run by a thread */
    bool quit;
    unsigned idle; /* threads waiting for a job */
    pthread_t th[POOL_MAX_THREADS];
    unsigned nthreads; /* changed by the loop thread only */
};

static void job_free(struct job *j)
{
    meao_req_free(&j->req);
    meao_resp_free(&j->resp);
    free(j);
}

static void *run(void *arg)
{
    struct cgi_pool *pool = arg;
    struct meao_app app;
    meao_app_init(&app, pool->cfg, meao_clock_system(), MEAO_FCGI_PROGRAM);
    for (;;) {
        struct job *j;
        uint64_t one = 1;
        pthread_mutex_lock(&pool->mu);
        pool->idle++;
        while (!pool->quit && pool->head == NULL)
            pthread_cond_wait(&pool->cv, &pool->mu);
        pool->idle--;
        if (pool->quit) {
            pthread_mutex_unlock(&pool->mu);
            break;
        }
        j = pool->head;
        pool->head = j->next;
        if (pool->head == NULL)
            pool->tail = NULL;
        pool->nwaiting--;
        j->running_next = pool->running;
        pool->running = j;
        pthread_mutex_unlock(&pool->mu);

        meao_resp_init(&j->resp);
        meao_app_handle(&app, &j->req, &j->resp);

        pthread_mutex_lock(&pool->mu);
        for (struct job **p = &pool->running; *p; p = &(*p)->running_next) {
            if (*p == j) {
                *p = j->running_next;
                break;
            }
        }
        j->next = pool->done;
        pool->done = j;
        pthread_mutex_unlock(&pool->mu);
        if (write(pool->efd, &one, sizeof one) < 0 && errno != EAGAIN)
            meao_log(MEAO_LOG_ERROR, j->req.request_id, "pool", "eventfd: %s", strerror(errno));
    }
    meao_app_fini(&app);
    return NULL;
}

struct cgi_pool *cgi_pool_start(const struct meao_config *cfg, cgi_pool_done_fn done, void *ctx)
{
    struct cgi_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return NULL;
    pool->cfg = cfg;
    pool->done_fn = done;
    pool->ctx = ctx;
    pool->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (pool->efd < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "eventfd: %s", strerror(errno));
        free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    return pool;
}

int cgi_pool_fd(const struct cgi_pool *pool)
{
    return pool->efd;
}

enum cgi_pool_rc cgi_pool_submit(struct cgi_pool *pool, void *conn, struct meao_req *req)
{
    struct job *j = calloc(1, sizeof *j);
    bool need_thread;
    if (j == NULL)
        return CGI_POOL_ERROR;
    pthread_mutex_lock(&pool->mu);
    if (pool->nwaiting >= POOL_QUEUE_MAX) {
        pthread_mutex_unlock(&pool->mu);
        free(j);
        return CGI_POOL_FULL;
    }
    need_thread = pool->idle <= pool->nwaiting && pool->nthreads < POOL_MAX_THREADS;
    pthread_mutex_unlock(&pool->mu);
    if (need_thread) {
        int e = pthread_create(&pool->th[pool->nthreads], NULL, run, pool);
        if (e == 0) {
            pool->nthreads++;
        } else {
            meao_log(MEAO_LOG_ERROR, NULL, __func__, "pthread_create: %s", strerror(e));
            if (pool->nthreads == 0) {
                free(j);
                return CGI_POOL_ERROR; /* nobody would ever run it */
            }
        }
    }
    j->conn = conn;
    meao_req_move(&j->req, req); /* the strings and the body now belong to the job */
    pthread_mutex_lock(&pool->mu);
    if (pool->tail)
        pool->tail->next = j;
    else
        pool->head = j;
    pool->tail = j;
    pool->nwaiting++;
    pthread_cond_signal(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    return CGI_POOL_QUEUED;
}

void cgi_pool_abandon(struct cgi_pool *pool, void *conn)
{
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->mu);
    for (struct job *j = pool->running; j; j = j->running_next)
        if (j->conn == conn)
            meao_req_mark_client_gone(&j->req);
    for (struct job *j = pool->head; j; j = j->next)
        if (j->conn == conn)
            meao_req_mark_client_gone(&j->req);
    pthread_mutex_unlock(&pool->mu);
}

void cgi_pool_collect(struct cgi_pool *pool)
{
    uint64_t n;
    struct job *list;
    if (read(pool->efd, &n, sizeof n) < 0 && errno != EAGAIN)
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "eventfd: %s", strerror(errno));
    pthread_mutex_lock(&pool->mu);
    list = pool->done;
    pool->done = NULL;
    pthread_mutex_unlock(&pool->mu);
    while (list != NULL) {
        struct job *j = list;
        list = j->next;
        pool->done_fn(pool->ctx, j->conn, &j->req, &j->resp);
        job_free(j);
    }
}

void cgi_pool_stop(struct cgi_pool *pool)
{
    struct job *j;
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->quit = true;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (unsigned i = 0; i < pool->nthreads; i++)
        pthread_join(pool->th[i], NULL);
    while ((j = pool->head) != NULL) {
        pool->head = j->next;
        job_free(j);
    }
    while ((j = pool->done) != NULL) {
        pool->done = j->next;
        job_free(j);
    }
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    close(pool->efd);
    free(pool);
}
