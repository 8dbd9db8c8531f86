/* The slow-request pool of a meao-fcgi worker: up to 16 threads, each with its
 * own struct meao_app (and so its own database connection), that run the
 * requests whose route is flagged MEAO_ROUTE_SLOW, so the worker's event loop
 * never blocks on an orchestrator turn. Results come back to the loop thread
 * through an eventfd: only the loop thread touches connections. */
#ifndef MEAO_CGI_POOL_H
#define MEAO_CGI_POOL_H

#include "cgi.h"

struct cgi_pool;

enum cgi_pool_rc {
    CGI_POOL_QUEUED, /* the job owns the request now */
    CGI_POOL_FULL,   /* too many slow requests: the caller should refuse this one */
    CGI_POOL_ERROR,  /* out of memory: the caller may run it itself */
};

/* Called on the loop thread by cgi_pool_collect() for each finished job; req
 * and resp are borrowed for the call. conn is what was given to submit. */
typedef void (*cgi_pool_done_fn)(void *ctx, void *conn, struct meao_req *req,
                                 struct meao_resp *resp);

/* Set the pool up; threads start on demand, when a job would otherwise wait.
 * cfg is borrowed for the pool's lifetime. NULL on failure (logged). */
struct cgi_pool *cgi_pool_start(const struct meao_config *cfg, cgi_pool_done_fn done, void *ctx);

/* The eventfd to watch for EPOLLIN; then call cgi_pool_collect(). */
int cgi_pool_fd(const struct cgi_pool *pool);

/* Queue a request. On CGI_POOL_QUEUED the request's contents were moved into
 * the job and *req is left initialised (empty); otherwise *req is untouched. */
enum cgi_pool_rc cgi_pool_submit(struct cgi_pool *pool, void *conn, struct meao_req *req);

/* The client of conn's queued or running job went away: flag its request
 * (meao_req_client_gone()) so the handler can stop early. Loop thread only;
 * a conn with no job is ignored. */
void cgi_pool_abandon(struct cgi_pool *pool, void *conn);

/* Deliver finished jobs to the done callback. Loop thread only. */
void cgi_pool_collect(struct cgi_pool *pool);

/* Stop the threads, join them and free everything. A thread inside a request
 * finishes it first: call this only when no job is in flight. Accepts NULL. */
void cgi_pool_stop(struct cgi_pool *pool);

#endif
