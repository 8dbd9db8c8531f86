/* Orchestrator protocol: the line reader, the codec (every message both
 * ways, malformed input) and the client's deadlines against an in-process
 * peer on a real unix socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/lines.h"
#include "core/log.h"
#include "http/app.h"
#include "orch/client.h"
#include "proto/orch.h"

/* --- line reader ------------------------------------------------------- */

static void lines_split_anywhere(void **state)
{
    static const char text[] = "{\"a\":1}\r\n\n{\"b\":2}\nlast";
    struct meao_lines lr;
    const char *l;
    size_t n;
    (void)state;
    meao_lines_init(&lr, 100);
    for (size_t i = 0; i < sizeof text - 1; i++)
        assert_true(meao_lines_feed(&lr, text + i, 1));
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_OK);
    assert_int_equal(n, 7);
    assert_memory_equal(l, "{\"a\":1}", 7);
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_OK);
    assert_memory_equal(l, "{\"b\":2}", 7);
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_NONE);
    lr.eof = true;
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_OK);
    assert_memory_equal(l, "last", 4);
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_EOF);
    meao_lines_free(&lr);
}

static void lines_over_long_is_skipped_once(void **state)
{
    struct meao_lines lr;
    const char *l;
    size_t n;
    char big[64];
    (void)state;
    memset(big, 'x', sizeof big);
    meao_lines_init(&lr, 16);
    meao_lines_feed(&lr, big, sizeof big); /* no newline yet: already too long */
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_TOO_LONG);
    meao_lines_feed(&lr, big, sizeof big);
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_NONE);
    meao_lines_feed(&lr, "xx\nok\n", 6);
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_OK);
    assert_int_equal(n, 2);
    assert_memory_equal(l, "ok", 2);
    /* a long line that arrives with its newline in one piece */
    meao_lines_feed(&lr, big, 20);
    meao_lines_feed(&lr, "\nfine\n", 6);
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_TOO_LONG);
    assert_int_equal(meao_lines_next(&lr, &l, &n), MEAO_LINE_OK);
    assert_memory_equal(l, "fine", 4);
    meao_lines_free(&lr);
}

/* --- codec --------------------------------------------------------------- */

static enum meao_err dec(const char *s, enum meao_orch_type *t, const char **code)
{
    json_t *m;
    char why[200];
    enum meao_err e = meao_orch_decode(s, strlen(s), &m, t, code, why, sizeof why);
    json_decref(m);
    return e;
}

static void every_message_round_trips(void **state)
{
    json_t *hist = json_pack("[{s:s,s:s}]", "role", "user", "content", "hi");
    json_t *turn =
        meao_orch_turn_request("rid-1", "s1", "42", "websocket", "/tmp", NULL, hist, "hello", NULL);
    json_t *frames[] = {
        turn,
        json_pack("{s:s,s:s,s:b,s:b,s:s}", "type", "approval_response", "approvalId", "apr_1",
                  "approved", 1, "trustSession", 0, "userId", "42"),
        json_pack("{s:s,s:s}", "type", "cancel", "targetRequestId", "rid-1"),
        json_pack("{s:s}", "type", "ping"),
        json_pack("{s:s,s:s}", "type", "list_approvals", "userId", "42"),
        json_pack("{s:s}", "type", "list_tools"),
        json_pack("{s:s,s:s,s:s}", "type", "text_delta", "requestId", "rid-1", "delta", "he"),
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "type", "tool_call_start", "requestId", "rid-1",
                  "id", "t1", "toolCallId", "t1", "name", "bash", "toolName", "bash"),
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:{},s:i}", "type", "approval_request", "requestId",
                  "apr_1", "approvalId", "apr_1", "correlationId", "rid-1", "toolCallId", "t1",
                  "toolName", "bash", "request", "timeout", 30),
        json_pack("{s:s,s:s,s:s,s:b}", "type", "approval_resolved", "requestId", "rid-1",
                  "approvalId", "apr_1", "approved", 1),
        json_pack("{s:s,s:s,s:s,s:s,s:b,s:s}", "type", "tool_call_result", "requestId", "rid-1",
                  "toolCallId", "t1", "toolName", "bash", "success", 1, "output", "hi"),
        json_pack("{s:s,s:s,s:s,s:[],s:{s:i,s:i},s:[]}", "type", "message_complete", "requestId",
                  "rid-1", "content", "hello", "toolCalls", "usage", "inputTokens", 1,
                  "outputTokens", 2, "trustedTools"),
        meao_orch_error_frame("rid-1", "PROVIDER_ERROR", "boom"),
        json_pack("{s:s,s:s}", "type", "pong", "serverTime", "2026-01-01T00:00:00Z"),
        json_pack("{s:s,s:s,s:b}", "type", "ack", "approvalId", "apr_1", "approved", 1),
        json_pack("{s:s,s:[]}", "type", "approvals", "approvals"),
        json_pack("{s:s,s:[]}", "type", "tools", "tools"),
    };
    (void)state;
    json_decref(hist);
    assert_int_equal(sizeof frames / sizeof frames[0], MEAO_ORCH_TYPE_COUNT_ - 1);
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        struct meao_buf b = {0};
        json_t *back;
        enum meao_orch_type t;
        const char *code;
        char why[200];
        assert_non_null(frames[i]);
        assert_true(meao_orch_encode(frames[i], &b));
        assert_int_equal(b.p[b.len - 1], '\n');
        assert_null(memchr(b.p, '\n', b.len - 1)); /* exactly one line */
        assert_int_equal(meao_orch_decode(b.p, b.len - 1, &back, &t, &code, why, sizeof why),
                         MEAO_OK);
        assert_int_equal(t, (enum meao_orch_type)(i + 1));
        assert_true(json_equal(back, frames[i]));
        json_decref(back);
        json_decref(frames[i]);
        meao_buf_free(&b);
    }
}

static void malformed_lines_are_invalid_request(void **state)
{
    enum meao_orch_type t;
    const char *code;
    char big[128];
    (void)state;
    assert_int_equal(dec("{not json", &t, &code), MEAO_E_INVALID_REQUEST);
    assert_string_equal(code, "INVALID_REQUEST");
    assert_int_not_equal(dec("[1,2]", &t, &code), MEAO_OK);
    assert_int_not_equal(dec("{\"type\":\"warp\"}", &t, &code), MEAO_OK);
    assert_int_equal(t, MEAO_ORCH_UNKNOWN);
    assert_int_not_equal(dec("{\"type\":5}", &t, &code), MEAO_OK);
    /* missing fields */
    assert_int_not_equal(dec("{\"type\":\"turn\",\"requestId\":\"r\"}", &t, &code), MEAO_OK);
    assert_int_equal(t, MEAO_ORCH_TURN); /* recognised, so the answer can be routed */
    assert_int_not_equal(dec("{\"type\":\"approval_response\",\"approvalId\":\"a\"}", &t, &code),
                         MEAO_OK);
    assert_int_not_equal(dec("{\"type\":\"list_approvals\"}", &t, &code), MEAO_OK);
    /* bad request id and roles */
    assert_int_not_equal(
        dec("{\"type\":\"turn\",\"requestId\":\"bad id\",\"content\":\"x\",\"session\":{\"id\":"
            "\"s\",\"userId\":\"u\",\"channel\":\"c\",\"workDir\":\"/\"}}",
            &t, &code),
        MEAO_OK);
    assert_int_not_equal(
        dec("{\"type\":\"turn\",\"requestId\":\"r\",\"content\":\"x\",\"session\":{\"id\":\"s\","
            "\"userId\":\"u\",\"channel\":\"c\",\"workDir\":\"/\"},\"history\":[{\"role\":"
            "\"system\",\"content\":\"x\"}]}",
            &t, &code),
        MEAO_OK);
    /* version */
    assert_int_not_equal(dec("{\"type\":\"ping\",\"v\":2}", &t, &code), MEAO_OK);
    assert_string_equal(code, "UNSUPPORTED_VERSION");
    assert_int_equal(dec("{\"type\":\"ping\",\"v\":1,\"future\":true}", &t, &code), MEAO_OK);
    /* the seed's alias for approval ids */
    assert_int_equal(
        dec("{\"type\":\"approval_response\",\"requestId\":\"apr_1\",\"approved\":false}", &t,
            &code),
        MEAO_OK);
    /* nesting and NUL */
    memset(big, '[', sizeof big);
    big[sizeof big - 1] = '\0';
    assert_int_not_equal(dec(big, &t, &code), MEAO_OK);
    assert_int_not_equal(dec("{\"type\":\"ping\",\"x\":\"\\u0000\"}", &t, &code), MEAO_OK);
    assert_int_equal(meao_orch_error_code_to_err("PROVIDER_ERROR"), MEAO_E_PROVIDER);
    assert_int_equal(meao_orch_error_code_to_err("GATEWAY_TIMEOUT"), MEAO_E_TIMEOUT);
    assert_int_equal(meao_orch_error_code_to_err("nonsense"), MEAO_E_INTERNAL);
}

/* --- client against an in-process peer ----------------------------------- */

struct peer {
    int lfd;
    char path[108];
    const char *script; /* what to send after reading one line; "" = say nothing */
    int close_after;    /* 1: close after sending */
};

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    char buf[4096];
    int fd = accept(p->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    if (read(fd, buf, sizeof buf) > 0 && p->script[0])
        (void)!write(fd, p->script, strlen(p->script));
    if (p->close_after) {
        close(fd);
        return NULL;
    }
    usleep(800 * 1000);
    close(fd);
    return NULL;
}

static void peer_start(struct peer *p, pthread_t *th)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(p->path, sizeof p->path, "/tmp/meao-orch-test-%d.sock", (int)getpid());
    unlink(p->path);
    strcpy(sa.sun_path, p->path);
    p->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(p->lfd, 4), 0);
    pthread_create(th, NULL, peer_main, p);
}

static void peer_stop(struct peer *p, pthread_t th)
{
    pthread_join(th, NULL);
    close(p->lfd);
    unlink(p->path);
}

static void client_connect_fails_fast_without_listener(void **state)
{
    struct meao_orch_client *c;
    int64_t t0 = meao_mono_ms(meao_clock_system());
    (void)state;
    assert_int_equal(
        meao_orch_connect("/tmp/meao-no-such.sock", meao_clock_system(), 1000, 1000, &c),
        MEAO_E_UNAVAILABLE);
    assert_null(c);
    assert_true(meao_mono_ms(meao_clock_system()) - t0 < 500);
    assert_int_equal(meao_orch_ping("/tmp/meao-no-such.sock", meao_clock_system(), 1000),
                     MEAO_E_UNAVAILABLE);
}

static void client_call_and_ping(void **state)
{
    struct peer p = {.script = "{\"type\":\"pong\",\"serverTime\":\"x\"}\n", .close_after = 1};
    pthread_t th;
    (void)state;
    peer_start(&p, &th);
    assert_int_equal(meao_orch_ping(p.path, meao_clock_system(), 1000), MEAO_OK);
    peer_stop(&p, th);
}

static void client_idle_timeout_and_eof(void **state)
{
    struct peer p = {.script = "", .close_after = 0};
    struct meao_orch_client *c;
    json_t *req = json_pack("{s:s}", "type", "ping"), *f;
    enum meao_orch_type t;
    pthread_t th;
    int64_t t0;
    (void)state;
    peer_start(&p, &th);
    assert_int_equal(meao_orch_connect(p.path, meao_clock_system(), 1000, 150, &c), MEAO_OK);
    assert_int_equal(meao_orch_send(c, req, 1000), MEAO_OK);
    t0 = meao_mono_ms(meao_clock_system());
    assert_int_equal(meao_orch_next(c, 0, -1, &f, &t, NULL), MEAO_E_TIMEOUT); /* idle */
    assert_true(meao_mono_ms(meao_clock_system()) - t0 >= 140);
    /* the peer closes after 800 ms: EOF is UNAVAILABLE, not a hang */
    c->idle_ms = 5000;
    assert_int_equal(meao_orch_next(c, 0, -1, &f, &t, NULL), MEAO_E_UNAVAILABLE);
    meao_orch_close(c);
    peer_stop(&p, th);
    json_decref(req);
}

static void client_invalid_frame_and_extra_fd(void **state)
{
    struct peer p = {.script = "{\"type\":\"text_delta\"}\n", .close_after = 0};
    struct meao_orch_client *c;
    json_t *req = json_pack("{s:s}", "type", "ping"), *f;
    enum meao_orch_type t;
    bool extra;
    int pipefd[2];
    pthread_t th;
    (void)state;
    assert_int_equal(pipe(pipefd), 0);
    peer_start(&p, &th);
    assert_int_equal(meao_orch_connect(p.path, meao_clock_system(), 1000, 2000, &c), MEAO_OK);
    /* before anything arrives, the extra fd wakes the caller */
    assert_int_equal(write(pipefd[1], "x", 1), 1);
    assert_int_equal(meao_orch_next(c, 0, pipefd[0], &f, &t, &extra), MEAO_OK);
    assert_true(extra);
    assert_null(f);
    assert_int_equal(meao_orch_send(c, req, 1000), MEAO_OK);
    /* a frame missing its fields is refused */
    assert_int_equal(meao_orch_next(c, 0, -1, &f, &t, NULL), MEAO_E_INTERNAL);
    meao_orch_close(c);
    peer_stop(&p, th);
    close(pipefd[0]);
    close(pipefd[1]);
    json_decref(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lines_split_anywhere),
        cmocka_unit_test(lines_over_long_is_skipped_once),
        cmocka_unit_test(every_message_round_trips),
        cmocka_unit_test(malformed_lines_are_invalid_request),
        cmocka_unit_test(client_connect_fails_fast_without_listener),
        cmocka_unit_test(client_call_and_ping),
        cmocka_unit_test(client_idle_timeout_and_eof),
        cmocka_unit_test(client_invalid_frame_and_extra_fd),
    };
    meao_lib_init();
    meao_log_init("test", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
