#define _GNU_SOURCE /* accept4() */
#include "orchestrator/server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/lines.h"
#include "core/daemon.h"
#include "core/log.h"
#include "orchestrator/approvals.h"
#include "orchestrator/provider.h"
#include "orchestrator/tools.h"
#include "orchestrator/turn.h"
#include "proto/orch.h"

#define BACKLOG         512
#define EXTRA_CONNS     64    /* short calls and not-yet-known connections above max turns */
#define FIRST_LINE_MS   10000 /* a connection that names no request by then is closed */
#define SEND_TIMEOUT_MS 30000 /* a peer that does not read its frames is dropped */
#define CLOSE_FLUSH_MS  5000  /* output still owed to a closing connection */
#define STOP_WAIT_MS    10000 /* graceful stop: then exit regardless */
#define HOUSEKEEPING_MS 1000
#define ACCEPT_PAUSE_MS 100
#define MAX_PENDING     (4u << 20) /* unread output the loop queues before it gives up */
#define MAX_EVENTS      64
#define STACK_SIZE      (1u << 20)
#define IDLE_THREAD_MS  2000 /* an idle turn thread above the warm ones exits after this */
#define WARM_THREADS    2    /* idle turn threads kept for the next turns */

enum kind { K_LISTEN = 1, K_SIGNAL, K_DONE, K_CONN };

enum state {
    C_FIRST,   /* reading lines until the first request */
    C_TURN,    /* a turn runs on its own thread; the loop watches the socket */
    C_CLOSING, /* flushing what is owed, then closed */
};

struct server;

/* A connection. The loop thread owns it; while a turn runs, the turn's
 * thread shares it only through emit (out/wbuf under the locks below) and
 * hands it back through the done list. */
struct conn {
    enum kind kind; /* K_CONN; first, so an epoll pointer can be told apart */
    struct server *srv;
    int fd;
    enum state state;
    uint32_t events;     /* registered with epoll */
    bool registered;     /* in the epoll set (not while nothing is wanted) */
    int64_t deadline_ms; /* C_FIRST: the first line; C_CLOSING: the last flush */
    struct meao_lines in;
    bool reading;           /* false after EOF or a read error */
    struct meao_turn *turn; /* C_TURN */
    pthread_mutex_t qlock;  /* out, dead */
    pthread_mutex_t wlock;  /* whoever writes the socket: wbuf, woff */
    struct meao_buf out;    /* frames queued, not yet taken by a writer */
    struct meao_buf wbuf;   /* the writer's current bytes, sent from woff */
    size_t woff;
    bool dead;                /* a write failed: the peer is gone */
    struct conn *prev, *next; /* every connection */
    struct conn *link;        /* the list c is on: turn queue, done list, graveyard */
};

/* Turn threads: a turn is handed to an idle thread when there is one (a
 * wake-up, not a clone on the turn's critical path), else to a new one.
 * Threads idle for IDLE_THREAD_MS exit, but WARM_THREADS stay. */
struct pool {
    pthread_mutex_t mu;
    pthread_cond_t work;  /* a turn is queued, or stop */
    pthread_cond_t ended; /* a thread exited */
    struct conn *head, *tail;
    unsigned queued, idle, threads;
    bool stopping;
};

struct server {
    const struct meao_config *cfg;
    const struct meao_clock *clock;
    struct meao_provider *provider;
    struct meao_approvals *approvals;
    struct meao_engine eng;
    bool have_engine;
    int ep, lfd, sfd, done_fd;
    enum kind listen_tag, signal_tag, done_tag;
    struct meao_listener listener;
    bool wrote_pid;
    pthread_attr_t attr; /* detached turn threads */
    struct conn *conns;
    unsigned nconns, nturns, max_conns;
    bool stopping, accepting;
    int64_t accept_resume_ms;
    struct pool pool;
    pthread_mutex_t done_mu; /* done list */
    struct conn *done;
    struct conn *graveyard; /* closed in this epoll batch, freed after it */
};

/* --- output ------------------------------------------------------------------- */

enum flush { FLUSH_DONE, FLUSH_PENDING, FLUSH_DEAD };

/* Queue a frame (borrowed) as one line. false when the peer is gone or
 * owes too much already. */
static bool enqueue(struct conn *c, const json_t *frame, size_t limit)
{
    char *s = json_dumps(frame, JSON_COMPACT);
    size_t n;
    bool ok;

    if (s == NULL) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "out of memory encoding a frame");
        return false;
    }
    n = strlen(s);
    s[n] = '\n'; /* json_dumps leaves room only for the NUL: reuse it as the newline */
    pthread_mutex_lock(&c->qlock);
    ok = !c->dead && c->out.len + n < limit && meao_buf_append(&c->out, s, n + 1);
    pthread_mutex_unlock(&c->qlock);
    free(s);
    return ok;
}

/* Write what is queued; the caller holds wlock. Blocking: until everything
 * is written or SEND_TIMEOUT_MS pass; otherwise as much as the socket takes. */
static enum flush flush(struct conn *c, bool block)
{
    int64_t deadline = block ? meao_mono_ms(c->srv->clock) + SEND_TIMEOUT_MS : 0;
    for (;;) {
        ssize_t n;
        if (c->woff == c->wbuf.len) {
            struct meao_buf tmp;
            bool dead;
            pthread_mutex_lock(&c->qlock);
            meao_buf_reset(&c->wbuf);
            tmp = c->wbuf;
            c->wbuf = c->out;
            c->out = tmp;
            dead = c->dead;
            pthread_mutex_unlock(&c->qlock);
            c->woff = 0;
            if (dead)
                return FLUSH_DEAD;
            if (c->wbuf.len == 0)
                return FLUSH_DONE;
        }
        n = send(c->fd, c->wbuf.p + c->woff, c->wbuf.len - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            int64_t left = deadline - meao_mono_ms(c->srv->clock);
            if (!block)
                return FLUSH_PENDING;
            if (left > 0) {
                poll(&p, 1, (int)left);
                continue;
            }
        }
        pthread_mutex_lock(&c->qlock);
        c->dead = true;
        pthread_mutex_unlock(&c->qlock);
        return FLUSH_DEAD;
    }
}

static bool queue_empty(struct conn *c)
{
    bool empty;
    pthread_mutex_lock(&c->qlock);
    empty = c->out.len == 0;
    pthread_mutex_unlock(&c->qlock);
    return empty;
}

/* The turn thread's writer: queue the frame and write until the queue is
 * empty. The loop may queue (a pong) meanwhile; it never blocks on wlock,
 * so whoever holds it looks at the queue again after letting go. */
static bool emit_cb(void *ctx, const json_t *frame)
{
    struct conn *c = ctx;
    if (!enqueue(c, frame, (size_t)-1 / 4))
        return false;
    do {
        enum flush r;
        pthread_mutex_lock(&c->wlock);
        r = flush(c, true);
        pthread_mutex_unlock(&c->wlock);
        if (r != FLUSH_DONE)
            return false;
    } while (!queue_empty(c));
    return true;
}

/* Watch c for events; none at all takes it out of the epoll set, since
 * EPOLLHUP would be reported (level-triggered, again and again) even for an
 * empty mask while a stopped turn winds down. */
static void conn_want(struct conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (c->registered && c->events == events)
        return;
    if (events == 0) {
        if (c->registered && epoll_ctl(c->srv->ep, EPOLL_CTL_DEL, c->fd, NULL) == 0)
            c->registered = false;
    } else if (epoll_ctl(c->srv->ep, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) ==
               0) {
        c->registered = true;
    }
    c->events = events;
}

static void conn_close(struct conn *c);

/* The peer is gone (end of stream, a failed read or write): a running turn
 * is stopped at once, anything else is closed. */
static void gone(struct conn *c)
{
    c->reading = false;
    if (c->state != C_TURN) {
        conn_close(c);
        return;
    }
    meao_log_set_context(meao_turn_request_id(c->turn));
    if (meao_turn_stop(c->turn, MEAO_TURN_DISCONNECTED))
        meao_log(MEAO_LOG_INFO, NULL, "turn_disconnect", "the client went away: turn stopped");
    meao_log_set_context(NULL);
    conn_want(c, 0);
}

/* The loop's writer: never blocks. Returns false when the peer is gone. */
static bool loop_flush(struct conn *c)
{
    enum flush r = FLUSH_DONE;
    if (c->fd < 0)
        return false;
    if (pthread_mutex_trylock(&c->wlock) == 0) {
        r = flush(c, false);
        pthread_mutex_unlock(&c->wlock);
    } /* else the turn thread is writing and takes our bytes along */
    if (r == FLUSH_DEAD) {
        gone(c);
        return false;
    }
    conn_want(c, (c->reading ? EPOLLIN : 0) | (r == FLUSH_PENDING ? EPOLLOUT : 0));
    return true;
}

/* Everything the loop sends goes through here: queue, then write what the
 * socket takes. A peer that lets MAX_PENDING pile up (pings it never reads
 * the answers of) counts as gone. */
static bool loop_send(struct conn *c, const json_t *frame)
{
    if (c->fd < 0)
        return false;
    if (!enqueue(c, frame, MAX_PENDING)) {
        gone(c);
        return false;
    }
    return loop_flush(c);
}

static void send_error(struct conn *c, const char *request_id, const char *code,
                       const char *message, const char *approval_id)
{
    json_t *f = meao_orch_error_frame(request_id, code, message);
    if (f && approval_id)
        json_object_set_new(f, "approvalId", json_string(approval_id));
    if (f)
        loop_send(c, f);
    json_decref(f);
}

static void send_pong(struct conn *c)
{
    char when[32];
    json_t *f;
    meao_iso8601(meao_now_ms(c->srv->clock), when, sizeof when);
    f = json_pack("{s:s, s:s}", "type", "pong", "serverTime", when);
    if (f)
        loop_send(c, f);
    json_decref(f);
}

static bool nothing_owed(struct conn *c)
{
    return c->wbuf.len == c->woff && queue_empty(c);
}

/* Stop reading and close once what is owed has been written. */
static void finish(struct conn *c)
{
    c->state = C_CLOSING;
    c->reading = false;
    c->deadline_ms = meao_mono_ms(c->srv->clock) + CLOSE_FLUSH_MS;
    if (loop_flush(c) && nothing_owed(c))
        conn_close(c);
}

/* --- approvals ----------------------------------------------------------------- */

static const char *answer_code(enum meao_err e)
{
    switch (e) {
    case MEAO_E_NOT_FOUND: return "APPROVAL_NOT_FOUND";
    case MEAO_E_FORBIDDEN: return "FORBIDDEN";
    case MEAO_E_CONFLICT: return "APPROVAL_EXPIRED";
    default: return "INTERNAL_ERROR";
    }
}

static const char *answer_message(enum meao_err e)
{
    switch (e) {
    case MEAO_E_NOT_FOUND: return "no such approval";
    case MEAO_E_FORBIDDEN: return "the approval belongs to another user";
    case MEAO_E_CONFLICT: return "the approval was already decided or timed out";
    default: return "internal error";
    }
}

/* Answer an approval for user: an ack frame when ack, an error frame when
 * the answer was refused. */
static void answer(struct conn *c, const json_t *msg, const char *user, bool ack)
{
    const char *id = meao_json_str(msg, "approvalId");
    bool approved = json_is_true(json_object_get(msg, "approved"));
    bool trust = json_is_true(json_object_get(msg, "trustSession"));
    enum meao_err e = meao_approvals_answer(c->srv->approvals, id, user, approved, trust);

    meao_log(e == MEAO_OK ? MEAO_LOG_INFO : MEAO_LOG_WARN, NULL, "approval_answer",
             "approval %.64s: %s", id,
             e == MEAO_OK ? (approved ? "approved" : "denied") : answer_code(e));
    if (e != MEAO_OK) {
        send_error(c, NULL, answer_code(e), answer_message(e), id);
    } else if (ack) {
        json_t *f =
            json_pack("{s:s, s:s, s:b}", "type", "ack", "approvalId", id, "approved", approved);
        if (f)
            loop_send(c, f);
        json_decref(f);
    }
}

/* --- turns ------------------------------------------------------------------------- */

/* Run c's turn, then hand the connection back to the loop. */
static void run_turn(struct conn *c)
{
    struct server *srv = c->srv;
    uint64_t one = 1;

    meao_log_set_context(meao_turn_request_id(c->turn));
    meao_turn_run(c->turn);
    meao_log_set_context(NULL);
    /* c is the loop's from here on */
    pthread_mutex_lock(&srv->done_mu);
    c->link = srv->done;
    srv->done = c;
    pthread_mutex_unlock(&srv->done_mu);
    if (write(srv->done_fd, &one, sizeof one) < 0)
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "eventfd: %s", strerror(errno));
}

static void *pool_thread(void *arg)
{
    struct server *srv = arg;
    struct pool *p = &srv->pool;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct timespec ts;
        int r;
        if (p->head != NULL) {
            struct conn *c = p->head;
            p->head = c->link;
            if (p->head == NULL)
                p->tail = NULL;
            p->queued--;
            pthread_mutex_unlock(&p->mu);
            run_turn(c);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (p->stopping)
            break;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += IDLE_THREAD_MS / 1000;
        ts.tv_nsec += (long)(IDLE_THREAD_MS % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        p->idle++;
        r = pthread_cond_timedwait(&p->work, &p->mu, &ts);
        p->idle--;
        if (r == ETIMEDOUT && p->head == NULL && p->threads > WARM_THREADS)
            break;
    }
    p->threads--;
    pthread_cond_broadcast(&p->ended);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Queue c's turn for a thread. false when no thread could take it. */
static bool pool_submit(struct server *srv, struct conn *c)
{
    struct pool *p = &srv->pool;
    bool ok = true;

    pthread_mutex_lock(&p->mu);
    c->link = NULL;
    if (p->tail)
        p->tail->link = c;
    else
        p->head = c;
    p->tail = c;
    p->queued++;
    /* every queued turn needs a thread of its own: turns block for long */
    if (p->queued > p->idle) {
        pthread_t th;
        if (pthread_create(&th, &srv->attr, pool_thread, srv) == 0) {
            p->threads++;
        } else {
            /* take it back: c is the last one queued */
            struct conn **pp = &p->head;
            while (*pp != c)
                pp = &(*pp)->link;
            *pp = NULL;
            p->tail = NULL;
            for (struct conn *x = p->head; x != NULL; x = x->link)
                p->tail = x;
            p->queued--;
            ok = false;
        }
    }
    if (ok)
        pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
    return ok;
}

static bool pool_init(struct pool *p)
{
    pthread_condattr_t ca;
    memset(p, 0, sizeof *p);
    if (pthread_condattr_init(&ca) != 0)
        return false;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        goto fail_attr;
    if (pthread_cond_init(&p->work, &ca) != 0)
        goto fail_mu;
    if (pthread_cond_init(&p->ended, NULL) != 0)
        goto fail_work;
    pthread_condattr_destroy(&ca);
    return true;
fail_work:
    pthread_cond_destroy(&p->work);
fail_mu:
    pthread_mutex_destroy(&p->mu);
fail_attr:
    pthread_condattr_destroy(&ca);
    return false;
}

static void pool_fini(struct pool *p)
{
    pthread_cond_destroy(&p->ended);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
}

/* Stop the pool: idle threads leave; the caller made sure no turn runs. */
static void pool_stop(struct server *srv)
{
    struct pool *p = &srv->pool;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->work);
    while (p->threads > 0)
        pthread_cond_wait(&p->ended, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* A turn request on c: validate it and start its thread. false when it was
 * refused as invalid before it started: the connection then stays usable,
 * as after any malformed line. */
static bool start_turn(struct conn *c, json_t *msg)
{
    struct server *srv = c->srv;
    const char *rid = meao_json_str(msg, "requestId");
    struct meao_turn_out out = {.ctx = c, .emit = emit_cb};
    struct meao_turn *t = NULL;
    char why[200];
    enum meao_err e;

    if (srv->stopping) {
        send_error(c, rid, "SHUTTING_DOWN", "the orchestrator is shutting down", NULL);
        return true;
    }
    if (srv->nturns >= (unsigned)srv->cfg->orchestrator_max_turns) {
        meao_log(MEAO_LOG_WARN, rid, "turn_busy", "%u turns running: refused", srv->nturns);
        send_error(c, rid, "BUSY", "too many concurrent turns", NULL);
        return true;
    }
    e = meao_turn_new(&srv->eng, msg, &out, &t, why, sizeof why);
    if (e != MEAO_OK) {
        send_error(c, rid, e == MEAO_E_INVALID_PARAMETER ? "INVALID_REQUEST" : "INTERNAL_ERROR",
                   e == MEAO_E_INVALID_PARAMETER ? why : "internal error", NULL);
        return e != MEAO_E_INVALID_PARAMETER;
    }
    c->turn = t;
    c->state = C_TURN;
    if (!pool_submit(srv, c)) {
        meao_log(MEAO_LOG_ERROR, rid, __func__, "cannot start a turn thread");
        c->turn = NULL;
        c->state = C_FIRST;
        meao_turn_free(t);
        send_error(c, rid, "BUSY", "out of threads", NULL);
        return true;
    }
    srv->nturns++;
    return true;
}

/* A turn is over: its thread has let go of the connection. */
static void turn_done(struct conn *c)
{
    c->srv->nturns--;
    meao_turn_free(c->turn);
    c->turn = NULL;
    finish(c);
}

static void take_done(struct server *srv)
{
    uint64_t n;
    struct conn *c;
    if (read(srv->done_fd, &n, sizeof n) < 0 && errno != EAGAIN)
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "eventfd: %s", strerror(errno));
    pthread_mutex_lock(&srv->done_mu);
    c = srv->done;
    srv->done = NULL;
    pthread_mutex_unlock(&srv->done_mu);
    while (c != NULL) {
        struct conn *next = c->link;
        turn_done(c);
        c = next;
    }
}

/* --- lines ---------------------------------------------------------------------------- */

/* One line from the client while its turn runs. */
static void turn_line(struct conn *c, const char *line, size_t len)
{
    struct meao_turn *t = c->turn;
    enum meao_orch_type type;
    const char *code, *target, *uid;
    char why[200];
    json_t *msg;

    if (meao_orch_decode(line, len, &msg, &type, &code, why, sizeof why) != MEAO_OK) {
        send_error(c, NULL, code, why, NULL);
        return;
    }
    switch (type) {
    case MEAO_ORCH_APPROVAL_RESPONSE:
        /* the connection acts for its turn's user, and only for that user */
        uid = meao_json_str(msg, "userId");
        if (uid != NULL && strcmp(uid, meao_turn_user_id(t)) != 0)
            send_error(c, NULL, "FORBIDDEN", answer_message(MEAO_E_FORBIDDEN),
                       meao_json_str(msg, "approvalId"));
        else
            answer(c, msg, meao_turn_user_id(t), false);
        break;
    case MEAO_ORCH_CANCEL:
        target = meao_json_str(msg, "targetRequestId");
        if (target != NULL && strcmp(target, meao_turn_request_id(t)) != 0) {
            send_error(c, NULL, "INVALID_REQUEST", "targetRequestId does not name this turn", NULL);
            break;
        }
        if (meao_turn_stop(t, MEAO_TURN_CANCELLED))
            meao_log(MEAO_LOG_INFO, NULL, "turn_cancel", "the client cancelled the turn");
        break;
    case MEAO_ORCH_PING: send_pong(c); break;
    case MEAO_ORCH_TURN:
        send_error(c, NULL, "INVALID_REQUEST", "a turn is already running on this connection",
                   NULL);
        break;
    default: send_error(c, NULL, "INVALID_REQUEST", "not a request", NULL); break;
    }
    json_decref(msg);
}

/* The first request of a connection. true: the connection is done with
 * (answered, or its turn started). */
static bool first_line(struct conn *c, const char *line, size_t len)
{
    struct server *srv = c->srv;
    enum meao_orch_type type;
    const char *code;
    char why[200];
    json_t *msg, *f = NULL;
    bool done = true;

    if (meao_orch_decode(line, len, &msg, &type, &code, why, sizeof why) != MEAO_OK) {
        f = meao_orch_error_frame(NULL, code, why);
        if (f && strcmp(code, "UNSUPPORTED_VERSION") == 0)
            json_object_set_new(f, "supported", json_pack("[i]", MEAO_ORCH_VERSION));
        else
            done = false; /* the connection stays usable */
        if (f)
            loop_send(c, f);
        json_decref(f);
        return done;
    }
    switch (type) {
    case MEAO_ORCH_TURN:
        meao_log_set_context(meao_json_str(msg, "requestId"));
        done = start_turn(c, msg);
        meao_log_set_context(NULL);
        break;
    case MEAO_ORCH_PING: send_pong(c); break;
    case MEAO_ORCH_LIST_TOOLS:
        f = json_pack("{s:s, s:o}", "type", "tools", "tools", meao_tools_describe(srv->cfg));
        if (f)
            loop_send(c, f);
        break;
    case MEAO_ORCH_LIST_APPROVALS:
        f = json_pack("{s:s, s:o}", "type", "approvals", "approvals",
                      meao_approvals_list(srv->approvals, meao_json_str(msg, "userId")));
        if (f)
            loop_send(c, f);
        break;
    case MEAO_ORCH_APPROVAL_RESPONSE:
        if (meao_json_str(msg, "userId") == NULL) {
            send_error(c, NULL, "INVALID_REQUEST",
                       "Missing required field \"userId\" (needed outside a turn)", NULL);
            done = false;
            break;
        }
        answer(c, msg, meao_json_str(msg, "userId"), true);
        break;
    case MEAO_ORCH_CANCEL:
        send_error(c, NULL, "INVALID_REQUEST", "no turn runs on this connection", NULL);
        done = false;
        break;
    default:
        send_error(c, NULL, "INVALID_REQUEST", "not a request", NULL);
        done = false;
        break;
    }
    json_decref(f);
    json_decref(msg);
    return done;
}

/* Read what the client sent and act on every complete line. */
static void conn_read(struct conn *c)
{
    ssize_t n = meao_lines_fill(&c->in, c->fd);
    int err = errno;

    for (;;) {
        const char *line;
        size_t len;
        enum meao_line_status st;

        if (c->fd < 0 || c->state == C_CLOSING || !c->reading)
            return;
        st = meao_lines_next(&c->in, &line, &len);
        if (st == MEAO_LINE_NONE)
            break;
        if (st == MEAO_LINE_EOF)
            goto eof;
        if (st == MEAO_LINE_TOO_LONG) {
            send_error(c, NULL, "LINE_TOO_LONG", "line over 1 MiB", NULL);
            continue;
        }
        if (len == 0)
            continue;
        if (c->state == C_TURN) {
            meao_log_set_context(meao_turn_request_id(c->turn));
            turn_line(c, line, len);
            meao_log_set_context(NULL);
        } else if (first_line(c, line, len) && c->state == C_FIRST) {
            finish(c); /* answered: nothing more on this connection */
            return;
        }
    }
    if (n >= 0 || err == EAGAIN || err == EINTR)
        return;
eof:
    gone(c); /* the client's end closed (or failed) */
}

/* --- connections ------------------------------------------------------------------------- */

/* Close and unlink c. It is freed after the current epoll batch, which may
 * still hold events pointing at it (they see fd -1). */
static void conn_close(struct conn *c)
{
    struct server *srv = c->srv;
    if (c->fd < 0)
        return;
    c->state = C_CLOSING;
    c->reading = false;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    if (c->registered)
        epoll_ctl(srv->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->link = srv->graveyard;
    srv->graveyard = c;
}

static void conn_free(struct conn *c)
{
    meao_lines_free(&c->in);
    meao_buf_free(&c->out);
    meao_buf_free(&c->wbuf);
    pthread_mutex_destroy(&c->qlock);
    pthread_mutex_destroy(&c->wlock);
    free(c);
}

static void conn_event(struct conn *c, uint32_t events)
{
    if ((events & EPOLLOUT) && !loop_flush(c))
        return;
    if (c->state == C_CLOSING) {
        if ((events & (EPOLLHUP | EPOLLERR)) || nothing_owed(c))
            conn_close(c); /* delivered, or nobody left to deliver to */
        return;
    }
    if (c->reading && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        conn_read(c);
}

/* --- listening -------------------------------------------------------------------- */

/* A best-effort BUSY line to a connection that will not be served. */
static void refuse(int fd)
{
    static const char busy[] =
        "{\"type\":\"error\",\"code\":\"BUSY\",\"message\":\"too many connections\"}\n";
    ssize_t n = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
    close(fd);
}

static void accept_pause(struct server *srv, int64_t ms)
{
    if (srv->accepting && epoll_ctl(srv->ep, EPOLL_CTL_DEL, srv->lfd, NULL) == 0)
        srv->accepting = false;
    srv->accept_resume_ms = meao_mono_ms(srv->clock) + ms;
}

static void accept_resume(struct server *srv)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srv->listen_tag};
    if (!srv->accepting && !srv->stopping && srv->lfd >= 0 &&
        epoll_ctl(srv->ep, EPOLL_CTL_ADD, srv->lfd, &ev) == 0)
        srv->accepting = true;
}

static void accept_all(struct server *srv)
{
    for (int i = 0; i < 64; i++) {
        struct epoll_event ev = {.events = EPOLLIN};
        struct conn *c;
        int fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
                meao_log(MEAO_LOG_ERROR, NULL, "accept", "%s: pausing", strerror(errno));
                accept_pause(srv, ACCEPT_PAUSE_MS);
            }
            return; /* EAGAIN, EINTR, ECONNABORTED... */
        }
        if (srv->nconns >= srv->max_conns) {
            refuse(fd);
            continue;
        }
        c = calloc(1, sizeof *c);
        if (c == NULL) {
            refuse(fd);
            continue;
        }
        if (pthread_mutex_init(&c->qlock, NULL) != 0) {
            free(c);
            refuse(fd);
            continue;
        }
        if (pthread_mutex_init(&c->wlock, NULL) != 0) {
            pthread_mutex_destroy(&c->qlock);
            free(c);
            refuse(fd);
            continue;
        }
        c->kind = K_CONN;
        c->srv = srv;
        c->fd = fd;
        c->state = C_FIRST;
        c->reading = true;
        c->events = EPOLLIN;
        c->registered = true;
        c->deadline_ms = meao_mono_ms(srv->clock) + FIRST_LINE_MS;
        meao_lines_init(&c->in, MEAO_ORCH_MAX_LINE);
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
        ev.data.ptr = c;
        if (epoll_ctl(srv->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            meao_log(MEAO_LOG_ERROR, NULL, "accept", "epoll: %s", strerror(errno));
            conn_close(c);
        }
    }
}

/* Connections past their deadline: no first line in time, or output that
 * could not be delivered while closing. */
static void expire_conns(struct server *srv, int64_t now)
{
    struct conn *c = srv->conns, *next;
    for (; c != NULL; c = next) {
        next = c->next;
        if (c->state != C_TURN && now >= c->deadline_ms)
            conn_close(c);
    }
}

/* SIGTERM: no new connections; every running turn is stopped (it ends with
 * SHUTTING_DOWN from its own thread, its approvals denied); every other
 * connection is closed. */
static void begin_stop(struct server *srv, int sig)
{
    struct conn *c, *next;
    meao_log(MEAO_LOG_INFO, NULL, "stopping", "signal %d: stopping %u running turn(s)", sig,
             srv->nturns);
    srv->stopping = true;
    if (srv->accepting)
        epoll_ctl(srv->ep, EPOLL_CTL_DEL, srv->lfd, NULL);
    srv->accepting = false;
    /* refuse at once rather than queue connections nobody will accept */
    close(srv->lfd);
    srv->lfd = -1;
    meao_listener_unlink(&srv->listener);
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        if (c->state == C_TURN)
            meao_turn_stop(c->turn, MEAO_TURN_SHUTDOWN);
        else
            conn_close(c);
    }
    meao_approvals_deny_all(srv->approvals, MEAO_APPROVAL_DISCONNECT);
}

static void on_signal(struct server *srv)
{
    struct signalfd_siginfo si;
    while (read(srv->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            if (meao_log_reopen(srv->cfg->log_file) < 0)
                meao_log(MEAO_LOG_ERROR, NULL, "log_reopen", "%s: %s", srv->cfg->log_file,
                         strerror(errno));
            else
                meao_log(MEAO_LOG_INFO, NULL, "log_reopen", "log file reopened");
        } else if (!srv->stopping) {
            begin_stop(srv, (int)si.ssi_signo);
        }
    }
}

/* The event loop: until stopped and every connection is gone. Returns
 * false when the stop deadline passed with turns still running. */
static bool serve(struct server *srv)
{
    int64_t next_tick = meao_mono_ms(srv->clock) + HOUSEKEEPING_MS, stop_deadline = 0;
    struct epoll_event evs[MAX_EVENTS];

    for (;;) {
        int64_t now = meao_mono_ms(srv->clock), wait;
        int n;

        if (srv->stopping) {
            if (stop_deadline == 0)
                stop_deadline = now + STOP_WAIT_MS;
            if (srv->nconns == 0)
                return true;
            if (now >= stop_deadline)
                return false;
        }
        if (now >= next_tick) {
            meao_approvals_tick(srv->approvals);
            expire_conns(srv, now);
            next_tick = now + HOUSEKEEPING_MS;
        }
        if (!srv->accepting && !srv->stopping && now >= srv->accept_resume_ms)
            accept_resume(srv);
        wait = next_tick - now;
        if (!srv->accepting && !srv->stopping && srv->accept_resume_ms - now < wait)
            wait = srv->accept_resume_ms - now;
        n = epoll_wait(srv->ep, evs, MAX_EVENTS, (int)(wait > 0 ? wait : 1));
        if (n < 0 && errno != EINTR) {
            meao_log(MEAO_LOG_ERROR, NULL, "epoll_wait", "%s", strerror(errno));
            return false;
        }
        /* the done list first: a finished turn's connection is not watched
         * any more, and it might appear again in this batch */
        for (int i = 0; i < n; i++)
            if (*(enum kind *)evs[i].data.ptr == K_DONE)
                take_done(srv);
        for (int i = 0; i < n; i++) {
            enum kind k = *(enum kind *)evs[i].data.ptr;
            if (k == K_SIGNAL)
                on_signal(srv);
            else if (k == K_LISTEN && srv->accepting)
                accept_all(srv);
        }
        for (int i = 0; i < n; i++) {
            struct conn *c;
            if (*(enum kind *)evs[i].data.ptr != K_CONN)
                continue;
            c = evs[i].data.ptr;
            if (c->fd >= 0) /* not closed earlier in this batch */
                conn_event(c, evs[i].events);
        }
        while (srv->graveyard != NULL) {
            struct conn *c = srv->graveyard;
            srv->graveyard = c->link;
            conn_free(c);
        }
    }
}

int meao_server_run(const struct meao_config *cfg)
{
    struct server *srv = calloc(1, sizeof *srv);
    struct epoll_event ev = {.events = EPOLLIN};
    sigset_t sigs;
    char err[256] = "";
    int rc = 1;
    bool attr_ok = false, mu_ok = false, pool_ok = false;

    if (srv == NULL)
        return 1;
    srv->cfg = cfg;
    srv->clock = meao_clock_system();
    srv->ep = srv->lfd = srv->sfd = srv->done_fd = -1;
    srv->listen_tag = K_LISTEN;
    srv->signal_tag = K_SIGNAL;
    srv->done_tag = K_DONE;
    srv->max_conns = (unsigned)cfg->orchestrator_max_turns + EXTRA_CONNS;
    meao_raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    /* blocked before any thread exists, so every thread inherits it and
     * only the signalfd sees them; tools get a clean mask (tools.c) */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    srv->sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    srv->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    srv->ep = epoll_create1(EPOLL_CLOEXEC);
    mu_ok = pthread_mutex_init(&srv->done_mu, NULL) == 0;
    attr_ok = pthread_attr_init(&srv->attr) == 0;
    pool_ok = pool_init(&srv->pool);
    if (srv->sfd < 0 || srv->done_fd < 0 || srv->ep < 0 || !mu_ok || !attr_ok || !pool_ok) {
        meao_log(MEAO_LOG_ERROR, NULL, "start", "cannot set up signals, epoll or threads");
        goto out;
    }
    pthread_attr_setdetachstate(&srv->attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&srv->attr, STACK_SIZE);

    srv->approvals = meao_approvals_new(srv->clock, cfg->approval_timeout_ms);
    if (srv->approvals == NULL) {
        meao_log(MEAO_LOG_ERROR, NULL, "start", "out of memory");
        goto out;
    }
    if (meao_provider_create(cfg, &srv->provider, err, sizeof err) != MEAO_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "start", "%s", err);
        goto out;
    }
    if (meao_engine_init(&srv->eng, cfg, srv->clock, srv->provider, srv->approvals, err,
                         sizeof err) != MEAO_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "start", "%s", err);
        goto out;
    }
    srv->have_engine = true;
    srv->lfd = meao_listener_open(&srv->listener, cfg->orchestrator_socket, "orchestrator_socket",
                                  (mode_t)cfg->orchestrator_socket_mode,
                                  cfg->orchestrator_socket_group, BACKLOG);
    if (srv->lfd < 0 || meao_pid_file_write(cfg->pid_file, &srv->wrote_pid) < 0)
        goto out;
    ev.data.ptr = &srv->signal_tag;
    if (epoll_ctl(srv->ep, EPOLL_CTL_ADD, srv->sfd, &ev) < 0)
        goto out;
    ev.data.ptr = &srv->done_tag;
    if (epoll_ctl(srv->ep, EPOLL_CTL_ADD, srv->done_fd, &ev) < 0)
        goto out;
    accept_resume(srv);
    meao_log(MEAO_LOG_INFO, NULL, "start", "listening on %s: provider %s, up to %lld turns",
             cfg->orchestrator_socket, srv->provider->ops->name,
             (long long)cfg->orchestrator_max_turns);

    if (!serve(srv)) {
        /* turn threads still hold the engine: leave everything to exit() */
        meao_log(MEAO_LOG_WARN, NULL, "stopped", "%u turn(s) did not end in %d ms", srv->nturns,
                 STOP_WAIT_MS);
        meao_listener_unlink(&srv->listener);
        if (srv->wrote_pid)
            unlink(cfg->pid_file);
        return 1;
    }
    meao_log(MEAO_LOG_INFO, NULL, "stopped", "all connections ended");
    rc = 0;
out:
    if (pool_ok) {
        pool_stop(srv);
        pool_fini(&srv->pool);
    }
    while (srv->conns != NULL) /* start-up failures only: serve() ends with none */
        conn_close(srv->conns);
    while (srv->graveyard != NULL) {
        struct conn *c = srv->graveyard;
        srv->graveyard = c->link;
        conn_free(c);
    }
    if (srv->lfd >= 0)
        close(srv->lfd);
    meao_listener_unlink(&srv->listener);
    if (srv->wrote_pid)
        unlink(cfg->pid_file);
    if (srv->have_engine)
        meao_engine_fini(&srv->eng);
    meao_provider_destroy(srv->provider);
    meao_approvals_free(srv->approvals);
    if (srv->sfd >= 0)
        close(srv->sfd);
    if (srv->done_fd >= 0)
        close(srv->done_fd);
    if (srv->ep >= 0)
        close(srv->ep);
    if (attr_ok)
        pthread_attr_destroy(&srv->attr);
    if (mu_ok)
        pthread_mutex_destroy(&srv->done_mu);
    free(srv);
    return rc;
}
