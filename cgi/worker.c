/* A meao-fcgi worker: one thread, one epoll loop over the shared listening
 * socket and every connection nginx opens to this process.
 *
 * Why not libfcgi: its blocking thread-per-connection model pins a thread to
 * every kept connection, so kept connections stall under bursts (STACK-NOTES
 * "keep_conn trap"). Here an idle kept connection is a few hundred bytes and
 * an epoll registration; requests are read with one recv() into a per-worker
 * buffer, parsed by the transport-free codec (src/proto/fcgi.c), run inline,
 * and answered with one send() whenever the socket takes it.
 *
 * Routes flagged MEAO_ROUTE_SLOW (orchestrator turns) would block the loop,
 * so dispatch() hands them to a small thread pool (pool.c) whose threads have
 * their own struct meao_app; the loop picks the answer up through an eventfd.
 *
 * Group commit: the requests of one epoll batch run as one batch of the app
 * (meao_app_batch_begin): their write transactions join one SQLite
 * transaction, committed after the batch (or after GROUP_MAX_PARTS writes).
 * An answer produced while that transaction is open is held in its
 * connection's output buffer, unsent, and goes out only once the commit
 * succeeded — an acknowledged write is always a committed one; if the commit
 * fails, every held answer is replaced by a 503. One commit per batch instead
 * of one per request is what lets durable inserts keep up with nginx. */
#define _GNU_SOURCE /* accept4() */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "pool.h"
#include "proto/fcgi.h"

#define MAX_CONNS       4096
#define RBUF_SIZE       65536
#define OUT_HIGH_WATER  (1u << 20) /* stop reading a peer that does not read its answers */
#define OUT_KEEP_CAP    65536      /* larger output buffers are released once drained */
#define DRAIN_MS        25000      /* the master waits 30 s before SIGKILL */
#define ACCEPT_BATCH    64
#define ACCEPT_PAUSE_MS 100
#define FREE_KEEP       256  /* connection structs kept for reuse */
#define HOUSEKEEPING_MS 1000 /* periodic work (rate-limit write-behind) */
#define GROUP_MAX_PARTS 64   /* writes per group commit, at most: bounds the wait */

enum tag_kind { T_LISTEN = 1, T_SIGNAL, T_POOL, T_CONN };

struct conn {
    enum tag_kind kind; /* T_CONN; first, so an epoll pointer can be told apart */
    int fd;
    uint32_t events; /* what is registered with epoll */
    bool closing;    /* close once the output is written */
    bool in_request; /* BEGIN_REQUEST seen, END_REQUEST not yet queued */
    bool in_pool;    /* the request runs on the pool */
    bool aborted;    /* ABORT_REQUEST arrived while it ran there */
    bool zombie;     /* fd closed while in_pool; released when the job returns */
    bool held;       /* the answer is in out, waiting for the group commit */
    uint16_t req_id;
    char held_rid[MEAO_REQUEST_ID_MAX + 1]; /* for an error answer if the commit fails */
    struct meao_fcgi_parser parser;
    struct cgi_body body;
    struct meao_buf out; /* unsent output, from out_off */
    size_t out_off;
    struct conn *prev, *next;
};

struct worker {
    const struct meao_config *cfg;
    const struct meao_clock *clock;
    int ep, lfd, sfd;
    enum tag_kind listen_tag, signal_tag, pool_tag;
    bool accepting;
    int64_t accept_resume_ms;
    bool stopping;
    int64_t deadline_ms;
    unsigned nconns, max_conns, get_values_conns;
    struct conn *live;      /* doubly linked */
    struct conn *free_list; /* singly linked through next */
    unsigned nfree;
    struct meao_app app;
    struct meao_req req;
    struct meao_resp resp;
    struct meao_buf wbuf;  /* one response, framed */
    struct meao_buf wbuf2; /* reframing of responses over 64 KiB */
    struct cgi_pool *pool; /* NULL when threads could not be started */
    struct conn **held;    /* connections with a held answer (may repeat; see settle) */
    size_t nheld, held_cap;
    uint8_t rbuf[RBUF_SIZE];
};

static int ep_set(struct worker *w, int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    return epoll_ctl(w->ep, op, fd, op == EPOLL_CTL_DEL ? NULL : &ev);
}

static void conn_want(struct worker *w, struct conn *c, uint32_t events)
{
    if (c->fd < 0 || c->events == events)
        return;
    if (ep_set(w, EPOLL_CTL_MOD, c->fd, events, c) == 0)
        c->events = events;
}

static void accept_pause(struct worker *w, int64_t for_ms)
{
    if (w->accepting) {
        ep_set(w, EPOLL_CTL_DEL, w->lfd, 0, NULL);
        w->accepting = false;
    }
    w->accept_resume_ms = meao_mono_ms(w->clock) + for_ms;
}

static void accept_resume(struct worker *w)
{
    /* EPOLLEXCLUSIVE: only one of the workers blocked in epoll_wait() is woken
     * per connection, not all of them. It cannot be MODified, hence DEL/ADD. */
    if (!w->accepting && !w->stopping && w->lfd >= 0 &&
        ep_set(w, EPOLL_CTL_ADD, w->lfd, EPOLLIN | EPOLLEXCLUSIVE, &w->listen_tag) == 0)
        w->accepting = true;
}

/* Give the struct back to the free list (the fd is already closed). */
static void conn_release(struct worker *w, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        w->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    c->held = false; /* a held answer to a peer that is gone is dropped */
    cgi_body_free(&c->body);
    if (c->out.cap > OUT_KEEP_CAP)
        meao_buf_free(&c->out);
    meao_buf_reset(&c->out);
    meao_fcgi_parser_free(&c->parser);
    /* never free() here: a later event of the same epoll batch may still
     * point at c; trim_free_list() runs between batches */
    c->next = w->free_list;
    w->free_list = c;
    w->nfree++;
    if (!w->accepting && w->nconns < w->max_conns)
        w->accept_resume_ms = 0;
}

static void conn_close(struct worker *w, struct conn *c)
{
    if (c->fd >= 0) {
        ep_set(w, EPOLL_CTL_DEL, c->fd, 0, NULL);
        close(c->fd);
        c->fd = -1;
    }
    if (c->in_pool) {
        c->zombie = true;             /* the pool still points at it */
        cgi_pool_abandon(w->pool, c); /* nobody waits for the answer: let it stop early */
        return;
    }
    conn_release(w, c);
}

/* Keep a few structs for reuse, free the rest (only between epoll batches). */
static void trim_free_list(struct worker *w)
{
    while (w->nfree > FREE_KEEP) {
        struct conn *c = w->free_list;
        w->free_list = c->next;
        w->nfree--;
        meao_buf_free(&c->out);
        free(c);
    }
}

static struct conn *conn_new(struct worker *w, int fd)
{
    struct conn *c = w->free_list;
    struct meao_buf keep = {0};
    if (c != NULL) {
        w->free_list = c->next;
        w->nfree--;
        keep = c->out;
    } else {
        c = malloc(sizeof *c);
        if (c == NULL)
            return NULL;
    }
    memset(c, 0, sizeof *c);
    c->kind = T_CONN;
    c->fd = fd;
    c->out = keep;
    meao_fcgi_parser_init(&c->parser, 0);
    meao_fcgi_parser_set_limits(&c->parser, w->get_values_conns, w->get_values_conns);
    c->events = EPOLLIN;
    if (ep_set(w, EPOLL_CTL_ADD, fd, c->events, c) < 0) {
        meao_buf_free(&c->out);
        free(c);
        return NULL;
    }
    c->next = w->live;
    if (w->live)
        w->live->prev = c;
    w->live = c;
    w->nconns++;
    return c;
}

/* Write what is pending. Returns false when the connection was closed. */
static bool conn_flush(struct worker *w, struct conn *c)
{
    if (c->held)
        return true; /* not before the group commit */
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_want(w, c, EPOLLOUT | (c->out.len - c->out_off < OUT_HIGH_WATER ? EPOLLIN : 0));
            return true;
        }
        if (n <= 0) {
            conn_close(w, c);
            return false;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = 0;
    meao_buf_reset(&c->out);
    if (c->closing && !c->in_request) {
        conn_close(w, c);
        return false;
    }
    conn_want(w, c, EPOLLIN);
    return true;
}

/* Queue bytes and try to write them at once: nearly always the whole answer
 * goes out in one send() and nothing is copied into the connection. */
static bool conn_send(struct worker *w, struct conn *c, const void *data, size_t len)
{
    if (c->out.len == 0) {
        ssize_t n;
        do {
            n = send(c->fd, data, len, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            conn_close(w, c);
            return false;
        }
        if (n > 0) {
            data = (const char *)data + n;
            len -= (size_t)n;
        }
        if (len == 0)
            return true;
    }
    if (!meao_buf_append(&c->out, data, len)) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "out of memory queueing output");
        conn_close(w, c);
        return false;
    }
    return conn_flush(w, c);
}

/* The request is answered: ready the connection for the next one, or close
 * it when the web server did not ask to keep it (or we are stopping). */
static bool finish_request(struct worker *w, struct conn *c)
{
    bool keep = meao_fcgi_parser_end_request(&c->parser);
    c->in_request = false;
    c->aborted = false;
    cgi_body_free(&c->body);
    if (!keep || w->stopping)
        c->closing = true;
    if (c->closing && c->out.len == 0) {
        conn_close(w, c);
        return false;
    }
    return true;
}

static bool send_end_only(struct worker *w, struct conn *c)
{
    uint8_t end[16];
    meao_fcgi_end_request_record(end, c->req_id, 0, MEAO_FCGI_REQUEST_COMPLETE);
    return conn_send(w, c, end, sizeof end) && finish_request(w, c);
}

/* Frame a CGI response as FastCGI STDOUT + END_REQUEST records; NULL when out
 * of memory. The result is one of the worker's buffers, valid until the next
 * call. */
static struct meao_buf *frame_response(struct worker *w, struct conn *c,
                                       const struct meao_resp *resp, const char *request_id)
{
    struct meao_buf *b = &w->wbuf;
    uint8_t tail[24];
    size_t clen;

    /* serialise behind an 8-byte hole for the STDOUT header: no copy */
    meao_buf_reset(b);
    if (!meao_buf_append(b, "\0\0\0\0\0\0\0\0", 8) || !meao_resp_serialize_cgi(resp, request_id, b))
        return NULL;
    clen = b->len - MEAO_FCGI_HEADER_LEN;
    if (clen <= MEAO_FCGI_MAX_CONTENT) {
        meao_fcgi_header_encode((uint8_t *)b->p, MEAO_FCGI_STDOUT, c->req_id, (uint16_t)clen, 0);
        meao_fcgi_header_encode(tail, MEAO_FCGI_STDOUT, c->req_id, 0, 0);
        meao_fcgi_end_request_record(tail + 8, c->req_id, 0, MEAO_FCGI_REQUEST_COMPLETE);
        if (!meao_buf_append(b, tail, sizeof tail))
            return NULL;
        return b;
    }
    meao_buf_reset(&w->wbuf2);
    if (!meao_fcgi_encode_response(&w->wbuf2, c->req_id, b->p + MEAO_FCGI_HEADER_LEN, clen, 0,
                                   false))
        return NULL;
    return &w->wbuf2;
}

/* Put c on the list of held answers. */
static bool hold(struct worker *w, struct conn *c, const char *request_id)
{
    if (w->nheld == w->held_cap) {
        size_t cap = w->held_cap ? w->held_cap * 2 : 64;
        struct conn **n = realloc(w->held, cap * sizeof *n);
        if (n == NULL)
            return false;
        w->held = n;
        w->held_cap = cap;
    }
    w->held[w->nheld++] = c;
    c->held = true;
    snprintf(c->held_rid, sizeof c->held_rid, "%s", request_id);
    return true;
}

/* Answer a request. held: the answer depends on the open group commit, so
 * it is queued in the connection but not sent before settle(). */
static bool send_response(struct worker *w, struct conn *c, const struct meao_resp *resp,
                          const char *request_id, bool held)
{
    struct meao_buf *b = frame_response(w, c, resp, request_id);
    if (b == NULL)
        goto nomem;
    if (held) {
        if (!hold(w, c, request_id) || !meao_buf_append(&c->out, b->p, b->len)) {
            c->held = false;
            goto nomem;
        }
        return finish_request(w, c);
    }
    return conn_send(w, c, b->p, b->len) && finish_request(w, c);
nomem:
    meao_log(MEAO_LOG_ERROR, request_id, __func__, "out of memory framing the response");
    conn_close(w, c);
    return false;
}

/* Commit the open group and release the answers that waited for it: as they
 * are when the commit succeeded, else replaced by a 503. */
static void settle(struct worker *w)
{
    enum meao_err e = meao_app_batch_end(&w->app);
    struct meao_req tmp;
    size_t n = w->nheld;

    if (e != MEAO_OK && n > 0)
        meao_log(MEAO_LOG_ERROR, NULL, "group_commit",
                 "commit failed (%s): %zu answer(s) replaced by 503", meao_strerror(e), n);
    w->nheld = 0;
    for (size_t i = 0; i < n; i++) {
        struct conn *c = w->held[i];
        /* a connection closed meanwhile (and maybe reused) has held = false */
        if (!c->held)
            continue;
        c->held = false;
        if (e != MEAO_OK) {
            struct meao_buf *b;
            meao_req_init(&tmp);
            snprintf(tmp.request_id, sizeof tmp.request_id, "%s", c->held_rid);
            meao_resp_reset(&w->resp);
            meao_resp_error(&w->resp, &tmp, MEAO_E_DB, "Database unavailable", NULL, 0,
                            meao_now_ms(w->clock));
            b = frame_response(w, c, &w->resp, c->held_rid);
            meao_req_free(&tmp);
            meao_buf_reset(&c->out);
            c->out_off = 0;
            if (b == NULL || !meao_buf_append(&c->out, b->p, b->len)) {
                conn_close(w, c);
                continue;
            }
        }
        conn_flush(w, c);
    }
}

/* Build the request from the PARAMS block and the collected body, then run it
 * here or, for a slow route, on the pool. Returns false when c was closed. */
static bool dispatch(struct worker *w, struct conn *c)
{
    size_t blen;
    const uint8_t *blk = meao_fcgi_params_block(&c->parser, &blen);
    struct meao_req *req = &w->req;
    bool ok, slow;

    meao_req_init(req);
    if (!cgi_req_from_fcgi_params(req, blk, blen)) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "out of memory copying params");
        meao_req_free(req);
        conn_close(w, c);
        return false;
    }
    cgi_body_finish(&c->body, req);

    slow = meao_app_route_is_slow(req);
    if (w->pool != NULL && slow) {
        switch (cgi_pool_submit(w->pool, c, req)) {
        case CGI_POOL_QUEUED:
            c->in_pool = true; /* req now belongs to the job */
            return true;
        case CGI_POOL_FULL:
            /* answer at once rather than queue without bound */
            meao_resp_reset(&w->resp);
            meao_resp_error(&w->resp, req, MEAO_E_UNAVAILABLE, "Too many slow requests running",
                            NULL, 1, meao_now_ms(w->clock));
            meao_log(MEAO_LOG_WARN, req->request_id, __func__, "slow-request pool is full");
            ok = send_response(w, c, &w->resp, req->request_id, false);
            meao_req_free(req);
            return ok;
        case CGI_POOL_ERROR: break; /* run it here after all */
        }
    }
    /* a turn run here (no pool) must not keep the batch's write lock for
     * its whole length: commit the batch first and run it outside one */
    if (slow)
        settle(w);
    meao_resp_reset(&w->resp);
    meao_app_handle(&w->app, req, &w->resp);
    ok = send_response(w, c, &w->resp, req->request_id, meao_app_batch_pending(&w->app));
    meao_req_free(req);
    if (slow)
        meao_app_batch_begin(&w->app);
    return ok;
}

/* One codec event. Returns false when the connection is gone or must not be
 * fed any more. */
static bool on_event(struct worker *w, struct conn *c, const struct meao_fcgi_event *ev)
{
    switch (ev->type) {
    case MEAO_FCGI_EV_BEGIN:
        c->in_request = true;
        c->req_id = ev->request_id;
        return true;
    case MEAO_FCGI_EV_PARAMS:
        cgi_body_begin(&c->body, cgi_fcgi_content_length(ev->data, ev->len),
                       (size_t)w->cfg->max_body_bytes);
        return true;
    case MEAO_FCGI_EV_STDIN:
        if (!cgi_body_add(&c->body, ev->data, ev->len))
            meao_log(MEAO_LOG_ERROR, NULL, __func__, "out of memory for a request body");
        return true;
    case MEAO_FCGI_EV_STDIN_END: return dispatch(w, c) && !c->closing;
    case MEAO_FCGI_EV_ABORT:
        if (c->in_pool) {
            c->aborted = true; /* its answer is dropped when it comes back */
            cgi_pool_abandon(w->pool, c);
            return true;
        }
        return send_end_only(w, c) && !c->closing;
    case MEAO_FCGI_EV_REPLY:
        /* GET_VALUES_RESULT, UNKNOWN_TYPE, or END_REQUEST refusing a request */
        if (ev->close_after)
            c->closing = true;
        if (!conn_send(w, c, ev->data, ev->len))
            return false;
        if (c->closing && c->out.len == 0 && !c->in_request) {
            conn_close(w, c);
            return false;
        }
        return !c->closing;
    case MEAO_FCGI_EV_ERROR:
        meao_log(MEAO_LOG_WARN, NULL, "fcgi_protocol", "closing connection: %s", ev->error);
        conn_close(w, c);
        return false;
    case MEAO_FCGI_EV_NONE: break;
    }
    return true;
}

static void on_readable(struct worker *w, struct conn *c)
{
    size_t off = 0, len;
    ssize_t n;

    do {
        n = recv(c->fd, w->rbuf, sizeof w->rbuf, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) {
        /* nginx dropped the connection (idle, or it gave up on the request) */
        conn_close(w, c);
        return;
    }
    len = (size_t)n;
    while (off < len) {
        struct meao_fcgi_event ev;
        off += meao_fcgi_feed(&c->parser, w->rbuf + off, len - off, &ev);
        if (ev.type == MEAO_FCGI_EV_NONE)
            break;
        if (!on_event(w, c, &ev))
            return;
    }
}

static void on_accept(struct worker *w)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd;
        if (w->nconns >= w->max_conns) {
            accept_pause(w, 1000); /* resumed as soon as a connection closes */
            return;
        }
        fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM: back off instead of spinning */
            meao_log(MEAO_LOG_WARN, NULL, __func__, "accept: %s", strerror(errno));
            accept_pause(w, ACCEPT_PAUSE_MS);
            return;
        }
        if (conn_new(w, fd) == NULL) {
            meao_log(MEAO_LOG_ERROR, NULL, __func__, "cannot track a new connection");
            close(fd);
        }
    }
}

/* Stop accepting, close what is idle, and let in-flight requests finish. */
static void begin_stop(struct worker *w)
{
    struct conn *c, *next;
    if (w->stopping)
        return;
    w->stopping = true;
    w->deadline_ms = meao_mono_ms(w->clock) + DRAIN_MS;
    if (w->accepting)
        ep_set(w, EPOLL_CTL_DEL, w->lfd, 0, NULL);
    w->accepting = false;
    close(w->lfd);
    w->lfd = -1;
    for (c = w->live; c != NULL; c = next) {
        next = c->next;
        c->closing = true;
        if (!c->in_request && c->out.len == 0)
            conn_close(w, c);
    }
    meao_log(MEAO_LOG_INFO, NULL, "worker_stopping", "%u connection(s) still busy", w->nconns);
}

static void on_signal(struct worker *w)
{
    struct signalfd_siginfo si;
    while (read(w->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            begin_stop(w);
        } else if (si.ssi_signo == SIGHUP) {
            if (meao_log_reopen(w->cfg->log_file) < 0)
                meao_log(MEAO_LOG_ERROR, NULL, "log_reopen", "%s: %s", w->cfg->log_file,
                         strerror(errno));
        }
    }
}

/* A slow request came back from the pool. */
static void on_pool_done(void *ctx, void *conn, struct meao_req *req, struct meao_resp *resp)
{
    struct worker *w = ctx;
    struct conn *c = conn;
    c->in_pool = false;
    if (c->zombie) {
        conn_release(w, c);
        return;
    }
    if (c->aborted)
        send_end_only(w, c);
    else
        send_response(w, c, resp, req->request_id, false);
    /* the connection may have more input waiting (level-triggered epoll) */
}

static int setup(struct worker *w, const struct meao_config *cfg, int listen_fd, unsigned nworkers)
{
    sigset_t set;
    struct rlimit rl;

    w->cfg = cfg;
    w->clock = meao_clock_system();
    w->lfd = listen_fd;
    w->ep = w->sfd = -1;
    w->listen_tag = T_LISTEN;
    w->signal_tag = T_SIGNAL;
    w->pool_tag = T_POOL;
    w->max_conns = MAX_CONNS;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)MAX_CONNS + 64)
        w->max_conns = rl.rlim_cur > 128 ? (unsigned)rl.rlim_cur - 64 : 64;
    w->get_values_conns = w->max_conns * (nworkers ? nworkers : 1);
    meao_req_init(&w->req);
    meao_resp_init(&w->resp);
    meao_app_init(&w->app, cfg, w->clock, MEAO_FCGI_PROGRAM);

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    w->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->sfd < 0 || w->ep < 0 || ep_set(w, EPOLL_CTL_ADD, w->sfd, EPOLLIN, &w->signal_tag) < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "epoll/signalfd: %s", strerror(errno));
        return -1;
    }
    accept_resume(w);
    if (!w->accepting) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "epoll on the listening socket: %s",
                 strerror(errno));
        return -1;
    }
    w->pool = cgi_pool_start(cfg, on_pool_done, w);
    if (w->pool != NULL &&
        ep_set(w, EPOLL_CTL_ADD, cgi_pool_fd(w->pool), EPOLLIN, &w->pool_tag) < 0) {
        cgi_pool_stop(w->pool);
        w->pool = NULL;
    }
    if (w->pool == NULL)
        meao_log(MEAO_LOG_WARN, NULL, __func__, "no slow-request pool: slow routes run inline");
    return 0;
}

/* Free everything. No pool job may be running (nothing is in flight). */
static void teardown(struct worker *w)
{
    while (w->live != NULL) {
        struct conn *c = w->live;
        c->in_pool = false; /* the pool is gone or going; nobody else holds it */
        conn_close(w, c);
    }
    while (w->free_list != NULL) {
        struct conn *c = w->free_list;
        w->free_list = c->next;
        meao_buf_free(&c->out);
        free(c);
    }
    if (w->pool)
        cgi_pool_stop(w->pool);
    if (w->lfd >= 0)
        close(w->lfd);
    if (w->sfd >= 0)
        close(w->sfd);
    if (w->ep >= 0)
        close(w->ep);
    meao_req_free(&w->req);
    meao_resp_free(&w->resp);
    meao_buf_free(&w->wbuf);
    meao_buf_free(&w->wbuf2);
    free(w->held);
    meao_app_fini(&w->app);
}

int fcgi_worker_run(const struct meao_config *cfg, int listen_fd, unsigned worker_index,
                    unsigned nworkers)
{
    struct worker *w = calloc(1, sizeof *w);
    struct epoll_event evs[256];
    bool clean = true;
    int64_t next_housekeeping = 0;

    if (w == NULL)
        return 1;
    if (setup(w, cfg, listen_fd, nworkers) < 0) {
        teardown(w);
        free(w);
        return 1;
    }
    meao_log(MEAO_LOG_INFO, NULL, "worker_start", "worker %u accepting, up to %u connections",
             worker_index, w->max_conns);

    while (!(w->stopping && w->nconns == 0)) {
        int64_t now = meao_mono_ms(w->clock);
        int timeout = HOUSEKEEPING_MS, n;
        if (now >= next_housekeeping) {
            /* the rate-limit table's write-behind, by whichever worker finds it due */
            (void)meao_app_housekeeping(&w->app);
            next_housekeeping = now + HOUSEKEEPING_MS;
        }
        if (w->stopping) {
            if (now >= w->deadline_ms) {
                meao_log(MEAO_LOG_WARN, NULL, "worker_drain_timeout",
                         "giving up on %u busy connection(s)", w->nconns);
                clean = false;
                break;
            }
            timeout = (int)(w->deadline_ms - now < HOUSEKEEPING_MS ? w->deadline_ms - now
                                                                   : HOUSEKEEPING_MS);
        } else if (!w->accepting) {
            if (w->nconns < w->max_conns && now >= w->accept_resume_ms)
                accept_resume(w);
            else
                timeout = ACCEPT_PAUSE_MS;
        }
        n = epoll_wait(w->ep, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
        if (n < 0 && errno != EINTR) {
            meao_log(MEAO_LOG_ERROR, NULL, "epoll_wait", "%s", strerror(errno));
            clean = false;
            break;
        }
        meao_app_batch_begin(&w->app);
        for (int i = 0; i < n; i++) {
            enum tag_kind *tag = evs[i].data.ptr;
            if (*tag == T_LISTEN) {
                if (w->accepting)
                    on_accept(w);
            } else if (*tag == T_SIGNAL) {
                on_signal(w);
            } else if (*tag == T_POOL) {
                cgi_pool_collect(w->pool);
            } else {
                struct conn *c = (struct conn *)tag;
                /* a connection closed earlier in this batch is already back
                 * on the free list: its fd is -1 and it is skipped */
                if (c->fd < 0)
                    continue;
                if ((evs[i].events & EPOLLOUT) && !conn_flush(w, c))
                    continue;
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    on_readable(w, c);
                if (meao_app_batch_joined(&w->app) >= GROUP_MAX_PARTS) {
                    settle(w);
                    meao_app_batch_begin(&w->app);
                }
            }
        }
        settle(w); /* before trim_free_list: held[] may point at released structs */
        trim_free_list(w);
    }
    if (!clean) {
        /* a pool thread may still be inside a request using cfg and the
         * library: leave without freeing anything under its feet */
        meao_log(MEAO_LOG_WARN, NULL, "worker_exit", "worker %u exiting uncleanly", worker_index);
        _exit(3);
    }
    meao_log(MEAO_LOG_INFO, NULL, "worker_exit", "worker %u exiting", worker_index);
    teardown(w);
    free(w);
    return 0;
}
