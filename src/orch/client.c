#include "orch/client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"

enum meao_err meao_orch_connect(const char *path, const struct meao_clock *clock,
                                int64_t timeout_ms, int64_t idle_ms, struct meao_orch_client **out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct meao_orch_client *c;
    int64_t deadline = meao_mono_ms(clock) + timeout_ms;
    int fd;

    *out = NULL;
    if (strlen(path) >= sizeof sa.sun_path)
        return MEAO_E_UNAVAILABLE;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return MEAO_E_IO;
    /* a unix connect either completes at once or fails with EAGAIN when the
     * listener's backlog is full: retry briefly within the deadline */
    while (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EAGAIN && errno != EINTR) {
            close(fd);
            return MEAO_E_UNAVAILABLE;
        }
        if (meao_mono_ms(clock) >= deadline) {
            close(fd);
            return MEAO_E_UNAVAILABLE;
        }
        poll(NULL, 0, 5);
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        return MEAO_E_NOMEM;
    }
    c->fd = fd;
    c->clock = clock;
    c->idle_ms = idle_ms > 0 ? idle_ms : 120000;
    meao_lines_init(&c->in, MEAO_ORCH_MAX_LINE);
    *out = c;
    return MEAO_OK;
}

void meao_orch_close(struct meao_orch_client *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    meao_lines_free(&c->in);
    free(c);
}

enum meao_err meao_orch_send(struct meao_orch_client *c, const json_t *msg, int64_t timeout_ms)
{
    struct meao_buf b = {0};
    int64_t deadline = meao_mono_ms(c->clock) + timeout_ms;
    size_t off = 0;
    enum meao_err e = MEAO_OK;

    if (!meao_orch_encode(msg, &b)) {
        meao_buf_free(&b);
        return MEAO_E_NOMEM;
    }
    while (off < b.len) {
        ssize_t n = send(c->fd, b.p + off, b.len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            int64_t left = deadline - meao_mono_ms(c->clock);
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            if (left <= 0) {
                e = MEAO_E_TIMEOUT;
                break;
            }
            poll(&p, 1, (int)left);
            continue;
        }
        e = MEAO_E_UNAVAILABLE;
        break;
    }
    meao_buf_free(&b);
    return e;
}

enum meao_err meao_orch_next(struct meao_orch_client *c, int64_t deadline_mono_ms, int extra_fd,
                             json_t **frame, enum meao_orch_type *type, bool *extra_ready)
{
    int64_t idle_deadline = meao_mono_ms(c->clock) + c->idle_ms;

    *frame = NULL;
    *type = MEAO_ORCH_UNKNOWN;
    if (extra_ready)
        *extra_ready = false;
    for (;;) {
        const char *line;
        size_t len;
        enum meao_line_status st = meao_lines_next(&c->in, &line, &len);
        struct pollfd p[2];
        int64_t now, until, nfds = 1;
        int r;

        if (st == MEAO_LINE_OK) {
            const char *code;
            char why[200];
            if (len == 0)
                continue;
            if (meao_orch_decode(line, len, frame, type, &code, why, sizeof why) != MEAO_OK) {
                meao_log(MEAO_LOG_ERROR, NULL, "orch_frame", "invalid frame from orchestrator: %s",
                         why);
                return MEAO_E_INTERNAL;
            }
            return MEAO_OK;
        }
        if (st == MEAO_LINE_TOO_LONG) {
            meao_log(MEAO_LOG_ERROR, NULL, "orch_frame", "orchestrator frame over %d bytes",
                     MEAO_ORCH_MAX_LINE);
            return MEAO_E_INTERNAL;
        }
        if (st == MEAO_LINE_EOF)
            return MEAO_E_UNAVAILABLE;

        now = meao_mono_ms(c->clock);
        until = idle_deadline;
        if (deadline_mono_ms > 0 && deadline_mono_ms < until)
            until = deadline_mono_ms;
        if (now >= until)
            return MEAO_E_TIMEOUT;
        p[0].fd = c->fd;
        p[0].events = POLLIN;
        p[0].revents = 0;
        if (extra_fd >= 0) {
            p[1].fd = extra_fd;
            p[1].events = POLLIN;
            p[1].revents = 0;
            nfds = 2;
        }
        r = poll(p, (nfds_t)nfds, (int)(until - now));
        if (r < 0 && errno != EINTR)
            return MEAO_E_IO;
        if (r <= 0)
            continue;
        if (nfds == 2 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (extra_ready)
                *extra_ready = true;
            return MEAO_OK;
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = meao_lines_fill(&c->in, c->fd);
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                return MEAO_E_UNAVAILABLE;
            if (n > 0)
                idle_deadline = meao_mono_ms(c->clock) + c->idle_ms;
        }
    }
}

enum meao_err meao_orch_call(const char *path, const struct meao_clock *clock, const json_t *req,
                             int64_t timeout_ms, json_t **resp, enum meao_orch_type *type)
{
    struct meao_orch_client *c;
    int64_t deadline = meao_mono_ms(clock) + timeout_ms;
    enum meao_err e = meao_orch_connect(path, clock, timeout_ms, timeout_ms, &c);

    *resp = NULL;
    if (e != MEAO_OK)
        return e;
    e = meao_orch_send(c, req, timeout_ms);
    if (e == MEAO_OK)
        e = meao_orch_next(c, deadline, -1, resp, type, NULL);
    meao_orch_close(c);
    return e;
}

enum meao_err meao_orch_ping(const char *path, const struct meao_clock *clock, int64_t timeout_ms)
{
    json_t *req = json_pack("{s:s, s:i}", "type", "ping", "v", MEAO_ORCH_VERSION);
    json_t *resp = NULL;
    enum meao_orch_type type;
    enum meao_err e;
    if (req == NULL)
        return MEAO_E_NOMEM;
    e = meao_orch_call(path, clock, req, timeout_ms, &resp, &type);
    json_decref(req);
    if (e == MEAO_OK && type != MEAO_ORCH_PONG)
        e = MEAO_E_UNAVAILABLE;
    json_decref(resp);
    return e;
}
