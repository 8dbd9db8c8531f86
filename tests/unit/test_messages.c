/* The sessions, messages, approvals, tools and config routes through the
 * whole request pipeline (meao_app_handle), against a real SQLite file and a
 * fake orchestrator: a thread speaking PROTOCOL.md on a unix socket, told
 * per test how to behave, that records what it was sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "auth/secrets.h"
#include "auth/token.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "http/app.h"
#include "store/identity.h"
#include "store/sessions.h"

/* ---- the fake orchestrator ---- */

enum fo_mode {
    FO_COMPLETE, /* text_delta, then message_complete echoing the content */
    FO_ERROR,    /* error PROVIDER_ERROR */
    FO_DROP,     /* read the turn, close */
    FO_SILENT,   /* read the turn, then only read (records a cancel) until EOF */
    FO_CANNED,   /* answer any first line with `canned` */
};

struct fake_orch {
    char path[108];
    int lfd;
    pthread_t th;
    pthread_mutex_t mu;
    enum fo_mode mode;
    json_t *canned; /* for FO_CANNED */
    json_t *last;   /* the last first line received */
    int conns;
    bool saw_cancel;
    bool stop;
};

static ssize_t read_line(int fd, char *buf, size_t cap, size_t *have)
{
    for (;;) {
        char *nl = memchr(buf, '\n', *have);
        ssize_t n;
        if (nl) {
            size_t len = (size_t)(nl - buf);
            return (ssize_t)len;
        }
        if (*have >= cap)
            return -1;
        n = read(fd, buf + *have, cap - *have);
        if (n <= 0)
            return -1;
        *have += (size_t)n;
    }
}

static void send_json(int fd, json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    size_t n = strlen(s);
    if (write(fd, s, n) != (ssize_t)n || write(fd, "\n", 1) != 1)
        fprintf(stderr, "fake orchestrator: short write\n");
    free(s);
    json_decref(v);
}

static void serve(struct fake_orch *fo, int fd)
{
    size_t cap = 2u << 20, have = 0;
    char *buf = malloc(cap);
    ssize_t len = read_line(fd, buf, cap, &have);
    json_t *msg;
    enum fo_mode mode;
    const char *rid;

    if (len < 0) {
        free(buf);
        return;
    }
    msg = json_loadb(buf, (size_t)len, 0, NULL);
    pthread_mutex_lock(&fo->mu);
    json_decref(fo->last);
    fo->last = json_incref(msg);
    fo->conns++;
    mode = fo->mode;
    pthread_mutex_unlock(&fo->mu);
    rid = json_string_value(json_object_get(msg, "requestId"));

    switch (mode) {
    case FO_COMPLETE: {
        char reply[512];
        snprintf(reply, sizeof reply, "echo: %.400s",
                 json_string_value(json_object_get(msg, "content")));
        send_json(fd, json_pack("{s:s, s:s, s:s}", "type", "text_delta", "requestId", rid, "delta",
                                "echo"));
        send_json(fd, json_pack("{s:s, s:s, s:s, s:[{s:s, s:s, s:{}, s:b, s:b}], s:{s:i, s:i},"
                                " s:[s]}",
                                "type", "message_complete", "requestId", rid, "content", reply,
                                "toolCalls", "id", "tc_1", "name", "read_file", "input", "success",
                                1, "approved", 1, "usage", "inputTokens", 5, "outputTokens", 7,
                                "trustedTools", "read_file"));
        break;
    }
    case FO_ERROR:
        send_json(fd, json_pack("{s:s, s:s, s:s, s:s}", "type", "error", "requestId", rid, "code",
                                "PROVIDER_ERROR", "message", "anthropic: HTTP 529 overloaded"));
        break;
    case FO_DROP: break;
    case FO_SILENT:
        for (;;) {
            size_t used;
            len = read_line(fd, buf, cap, &have);
            if (len < 0)
                break;
            buf[len] = '\0'; /* the newline's place */
            if (strstr(buf, "\"cancel\"")) {
                pthread_mutex_lock(&fo->mu);
                fo->saw_cancel = true;
                pthread_mutex_unlock(&fo->mu);
            }
            used = (size_t)len + 1;
            memmove(buf, buf + used, have - used);
            have -= used;
        }
        break;
    case FO_CANNED:
        pthread_mutex_lock(&fo->mu);
        send_json(fd, json_incref(fo->canned));
        pthread_mutex_unlock(&fo->mu);
        break;
    }
    json_decref(msg);
    free(buf);
}

static void *fo_run(void *arg)
{
    struct fake_orch *fo = arg;
    for (;;) {
        struct pollfd p = {.fd = fo->lfd, .events = POLLIN};
        bool stop;
        int fd;
        pthread_mutex_lock(&fo->mu);
        stop = fo->stop;
        pthread_mutex_unlock(&fo->mu);
        if (stop)
            break;
        if (poll(&p, 1, 20) <= 0)
            continue;
        fd = accept(fo->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        serve(fo, fd);
        close(fd);
    }
    return NULL;
}

static void fo_start(struct fake_orch *fo, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memset(fo, 0, sizeof *fo);
    snprintf(fo->path, sizeof fo->path, "%s", path);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    pthread_mutex_init(&fo->mu, NULL);
    fo->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fo->lfd >= 0);
    assert_int_equal(bind(fo->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fo->lfd, 16), 0);
    assert_int_equal(pthread_create(&fo->th, NULL, fo_run, fo), 0);
}

static void fo_stop(struct fake_orch *fo)
{
    if (fo->lfd <= 0)
        return;
    pthread_mutex_lock(&fo->mu);
    fo->stop = true;
    pthread_mutex_unlock(&fo->mu);
    pthread_join(fo->th, NULL);
    close(fo->lfd);
    unlink(fo->path);
    json_decref(fo->last);
    json_decref(fo->canned);
    pthread_mutex_destroy(&fo->mu);
    fo->lfd = 0;
}

static void fo_mode(struct fake_orch *fo, enum fo_mode m, json_t *canned)
{
    pthread_mutex_lock(&fo->mu);
    fo->mode = m;
    json_decref(fo->canned);
    fo->canned = canned;
    fo->saw_cancel = false;
    pthread_mutex_unlock(&fo->mu);
}

static json_t *fo_last(struct fake_orch *fo)
{
    json_t *v;
    pthread_mutex_lock(&fo->mu);
    v = json_incref(fo->last);
    pthread_mutex_unlock(&fo->mu);
    return v;
}

/* ---- fixture ---- */

struct fx {
    char dir[64], sock[100];
    struct meao_config cfg;
    struct meao_app app;
    struct fake_orch fo;
    char owner[MEAO_TOKEN_LEN + 1], user[MEAO_TOKEN_LEN + 1];
    int64_t owner_id, user_id;
};

static void enroll(struct fx *f, const char *name, enum meao_role role, int64_t *id, char *token)
{
    struct meao_token_pair p;
    struct meao_token_ttl ttl = {86400000LL, 86400000LL};
    struct meao_db *db = meao_app_db(&f->app);
    int64_t now = meao_now_ms(f->app.clock);
    assert_non_null(db);
    assert_int_equal(meao_user_create(db, name, role, now, id), MEAO_OK);
    assert_int_equal(meao_device_enroll(db, meao_app_secrets(&f->app), *id, "dev", now, &ttl, &p),
                     MEAO_OK);
    memcpy(token, p.access, MEAO_TOKEN_LEN + 1);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    char err[256], path[160];
    FILE *sf;
    snprintf(f->dir, sizeof f->dir, "/tmp/meao-msg-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->sock, sizeof f->sock, "%s/o.sock", f->dir);
    meao_config_defaults(&f->cfg);
    snprintf(path, sizeof path, "%s/t.db", f->dir);
    meao_config_set(&f->cfg, "db_path", path, err, sizeof err);
    snprintf(path, sizeof path, "%s/secret.key", f->dir);
    meao_config_set(&f->cfg, "secret_file", path, err, sizeof err);
    sf = fopen(path, "w");
    fprintf(sf, "%s\n", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    fclose(sf);
    chmod(path, 0600);
    snprintf(path, sizeof path, "%s/ws", f->dir);
    meao_config_set(&f->cfg, "workspace_root", path, err, sizeof err);
    meao_config_set(&f->cfg, "orchestrator_socket", f->sock, err, sizeof err);
    meao_config_set(&f->cfg, "ratelimit_enabled", "false", err, sizeof err);
    meao_config_set(&f->cfg, "turn_deadline_s", "2", err, sizeof err);
    meao_config_set(&f->cfg, "provider_api_key", "sk-very-secret-key", err, sizeof err);
    assert_int_equal(meao_store_migrate_path(f->cfg.db_path, 1000, err, sizeof err), MEAO_OK);
    meao_app_init(&f->app, &f->cfg, meao_clock_system(), "test");
    enroll(f, "alice", MEAO_ROLE_OWNER, &f->owner_id, f->owner);
    enroll(f, "bob", MEAO_ROLE_USER, &f->user_id, f->user);
    fo_start(&f->fo, f->sock);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    fo_stop(&f->fo);
    meao_app_fini(&f->app);
    meao_config_free(&f->cfg);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

struct result {
    int status;
    json_t *body;
    int64_t ms;
};

struct gone_after {
    struct meao_req *req;
    int ms;
};

static void *mark_gone(void *arg)
{
    struct gone_after *g = arg;
    struct timespec ts = {g->ms / 1000, (g->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    meao_req_mark_client_gone(g->req);
    return NULL;
}

static struct result run_ex(struct fx *f, const char *method, const char *uri, const char *token,
                            const char *body, int gone_after_ms)
{
    struct meao_req req;
    struct meao_resp resp;
    struct result r = {0};
    char auth[128];
    int64_t t0;
    pthread_t th;
    struct gone_after g = {&req, gone_after_ms};

    meao_req_init(&req);
    meao_resp_init(&resp);
    meao_req_set_param(&req, "REQUEST_METHOD", 14, method, strlen(method));
    meao_req_set_param(&req, "REQUEST_URI", 11, uri, strlen(uri));
    if (strchr(uri, '?'))
        meao_req_set_param(&req, "QUERY_STRING", 12, strchr(uri, '?') + 1,
                           strlen(strchr(uri, '?') + 1));
    if (token) {
        snprintf(auth, sizeof auth, "Bearer %s", token);
        meao_req_set_param(&req, "HTTP_AUTHORIZATION", 18, auth, strlen(auth));
    }
    if (body) {
        char len[24];
        snprintf(len, sizeof len, "%zu", strlen(body));
        meao_req_set_param(&req, "CONTENT_TYPE", 12, "application/json", 16);
        meao_req_set_param(&req, "CONTENT_LENGTH", 14, len, strlen(len));
        meao_req_take_body(&req, strdup(body), strlen(body));
    }
    if (gone_after_ms >= 0)
        assert_int_equal(pthread_create(&th, NULL, mark_gone, &g), 0);
    t0 = meao_mono_ms(meao_clock_system());
    meao_app_handle(&f->app, &req, &resp);
    r.ms = meao_mono_ms(meao_clock_system()) - t0;
    if (gone_after_ms >= 0)
        pthread_join(th, NULL);
    r.status = resp.status;
    if (resp.body.len)
        r.body = json_loadb(resp.body.p, resp.body.len, 0, NULL);
    meao_req_free(&req);
    meao_resp_free(&resp);
    return r;
}

static struct result run(struct fx *f, const char *method, const char *uri, const char *token,
                         const char *body)
{
    return run_ex(f, method, uri, token, body, -1);
}

static const char *data_str(const struct result *r, const char *key)
{
    return json_string_value(json_object_get(json_object_get(r->body, "data"), key));
}

static const char *err_code(const struct result *r)
{
    return json_string_value(json_object_get(json_object_get(r->body, "error"), "code"));
}

/* Create a session for token; the id goes into id. */
static void make_session(struct fx *f, const char *token, char *id)
{
    struct result r = run(f, "POST", "/api/v1/sessions", token, "{\"channel\":\"rest\"}");
    assert_int_equal(r.status, 201);
    snprintf(id, MEAO_PUBLIC_ID_LEN + 1, "%s", data_str(&r, "id"));
    json_decref(r.body);
}

static json_t *history(struct fx *f, const char *token, const char *sid, const char *query)
{
    char uri[160];
    struct result r;
    json_t *msgs;
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages%s", sid, query ? query : "");
    r = run(f, "GET", uri, token, NULL);
    assert_int_equal(r.status, 200);
    msgs = json_incref(json_object_get(json_object_get(r.body, "data"), "messages"));
    json_decref(r.body);
    return msgs;
}

static int64_t scalar(struct fx *f, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    sqlite3 *h = meao_db_handle(meao_app_db(&f->app));
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* ---- tests ---- */

static void full_flow_create_post_history_delete(void **state)
{
    struct fx *f = *state;
    char sid[32], uri[128];
    struct result r;
    json_t *turn, *msgs;
    struct stat st;

    make_session(f, f->user, sid);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    fo_mode(&f->fo, FO_COMPLETE, NULL);
    r = run(f, "POST", uri, f->user, "{\"content\":\"hello\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(data_str(&r, "content"), "echo: hello");
    assert_true(meao_public_id_valid(data_str(&r, "id"), "msg_"));
    assert_true(meao_public_id_valid(data_str(&r, "messageId"), "msg_"));
    assert_int_equal(json_array_size(json_object_get(json_object_get(r.body, "data"), "toolCalls")),
                     1);
    assert_int_equal(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(r.body, "data"), "usage"), "outputTokens")),
        7);
    json_decref(r.body);

    /* what the orchestrator got: the session, the user, an existing workDir, no history */
    turn = fo_last(&f->fo);
    assert_string_equal(json_string_value(json_object_get(json_object_get(turn, "session"), "id")),
                        sid);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(turn, "session"), "userId")), "2");
    assert_int_equal(
        stat(json_string_value(json_object_get(json_object_get(turn, "session"), "workDir")), &st),
        0);
    assert_int_equal(json_array_size(json_object_get(turn, "history")), 0);
    assert_null(json_object_get(turn, "toolPolicies"));
    json_decref(turn);

    /* the second turn carries the first as history, and the trusted tools */
    r = run(
        f, "POST", uri, f->user,
        "{\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}");
    assert_int_equal(r.status, 200);
    assert_string_equal(data_str(&r, "content"), "echo: a\nb");
    json_decref(r.body);
    turn = fo_last(&f->fo);
    assert_int_equal(json_array_size(json_object_get(turn, "history")), 2);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(turn, "history"), 1), "content")),
                        "echo: hello");
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(json_object_get(turn, "session"), "trustedTools"), 0)),
                        "read_file");
    json_decref(turn);

    msgs = history(f, f->user, sid, NULL);
    assert_int_equal(json_array_size(msgs), 4);
    assert_true(json_is_true(json_object_get(json_array_get(msgs, 1), "hasToolCalls")));
    assert_null(json_object_get(json_array_get(msgs, 0), "content"));
    json_decref(msgs);

    snprintf(uri, sizeof uri, "/api/v1/sessions/%s", sid);
    r = run(f, "GET", uri, f->user, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(r.body, "data"), "messageCount")), 4);
    assert_string_equal(data_str(&r, "status"), "active");
    json_decref(r.body);
    r = run(f, "DELETE", uri, f->user, NULL);
    assert_int_equal(r.status, 204);
    r = run(f, "GET", uri, f->user, NULL);
    assert_string_equal(data_str(&r, "status"), "ended");
    json_decref(r.body);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    r = run(f, "POST", uri, f->user, "{\"content\":\"late\"}");
    assert_int_equal(r.status, 409);
    json_decref(r.body);
    assert_int_equal(scalar(f, "SELECT count(*) FROM audit WHERE action IN ('session.create',"
                               " 'session.end', 'message.create', 'turn.complete')"),
                     6);
}

static void orchestrator_down_is_fast_503_and_message_failed(void **state)
{
    struct fx *f = *state;
    char sid[32], uri[128];
    struct result r;
    json_t *msgs;
    make_session(f, f->user, sid);
    fo_stop(&f->fo);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    r = run(f, "POST", uri, f->user, "{\"content\":\"anyone?\"}");
    assert_int_equal(r.status, 503);
    assert_string_equal(err_code(&r), "SERVICE_UNAVAILABLE");
    assert_true(r.ms < 1000);
    json_decref(r.body);
    msgs = history(f, f->user, sid, NULL);
    assert_int_equal(json_array_size(msgs), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "status")),
                        "failed");
    json_decref(msgs);
    assert_int_equal(scalar(f, "SELECT count(*) FROM sessions WHERE lease_token IS NULL"), 1);
}

static void dropped_and_failing_turns_release_the_session(void **state)
{
    struct fx *f = *state;
    char sid[32], uri[128];
    struct result r;
    make_session(f, f->user, sid);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);

    fo_mode(&f->fo, FO_DROP, NULL);
    r = run(f, "POST", uri, f->user, "{\"content\":\"x\"}");
    assert_int_equal(r.status, 503);
    json_decref(r.body);

    fo_mode(&f->fo, FO_ERROR, NULL);
    r = run(f, "POST", uri, f->user, "{\"content\":\"x\"}");
    assert_int_equal(r.status, 502);
    assert_string_equal(err_code(&r), "PROVIDER_ERROR");
    assert_non_null(
        strstr(json_string_value(json_object_get(json_object_get(r.body, "error"), "message")),
               "overloaded"));
    json_decref(r.body);

    fo_mode(&f->fo, FO_COMPLETE, NULL);
    r = run(f, "POST", uri, f->user, "{\"content\":\"x\"}");
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    assert_int_equal(scalar(f, "SELECT count(*) FROM messages WHERE status = 'failed'"), 2);
    assert_int_equal(scalar(f, "SELECT count(*) FROM messages WHERE status = 'pending'"), 0);
}

static void turn_deadline_is_504(void **state)
{
    struct fx *f = *state;
    char sid[32], uri[128];
    struct result r;
    make_session(f, f->user, sid);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    fo_mode(&f->fo, FO_SILENT, NULL);
    r = run(f, "POST", uri, f->user, "{\"content\":\"slow\"}");
    assert_int_equal(r.status, 504);
    assert_string_equal(err_code(&r), "GATEWAY_TIMEOUT");
    assert_true(r.ms >= 1900 && r.ms < 4000);
    json_decref(r.body);
    assert_int_equal(scalar(f, "SELECT count(*) FROM messages WHERE status = 'failed' AND"
                               " error_code = 'GATEWAY_TIMEOUT'"),
                     1);
    assert_int_equal(scalar(f, "SELECT count(*) FROM sessions WHERE lease_token IS NULL"), 1);
}

static void client_gone_cancels_the_turn(void **state)
{
    struct fx *f = *state;
    char sid[32], uri[128];
    struct result r;
    bool cancel;
    make_session(f, f->user, sid);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    fo_mode(&f->fo, FO_SILENT, NULL);
    r = run_ex(f, "POST", uri, f->user, "{\"content\":\"bye\"}", 300);
    assert_true(r.ms < 1500);
    json_decref(r.body);
    assert_int_equal(scalar(f, "SELECT count(*) FROM messages WHERE status = 'failed' AND"
                               " error_code = 'CANCELLED'"),
                     1);
    assert_int_equal(scalar(f, "SELECT count(*) FROM sessions WHERE lease_token IS NULL"), 1);
    usleep(100000);
    pthread_mutex_lock(&f->fo.mu);
    cancel = f->fo.saw_cancel;
    pthread_mutex_unlock(&f->fo.mu);
    assert_true(cancel);
}

static void busy_session_is_409(void **state)
{
    struct fx *f = *state;
    char sid[32], uri[128];
    struct result r;
    struct meao_session s;
    struct meao_msg_ref m;
    enum meao_turn_refusal why;
    struct meao_db *db = meao_app_db(&f->app);
    make_session(f, f->user, sid);
    assert_int_equal(meao_session_get(db, f->user_id, sid, meao_now_ms(f->app.clock), &s), MEAO_OK);
    assert_int_equal(meao_turn_begin(db, &s,
                                     &(struct meao_turn_start){.lease_token = "other",
                                                               .request_id = "r",
                                                               .user_id = f->user_id,
                                                               .content = "running",
                                                               .lease_ms = 60000},
                                     meao_now_ms(f->app.clock), &m, &why),
                     MEAO_OK);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    r = run(f, "POST", uri, f->user, "{\"content\":\"me too\"}");
    assert_int_equal(r.status, 409);
    assert_string_equal(err_code(&r), "CONFLICT");
    assert_non_null(
        strstr(json_string_value(json_object_get(json_object_get(r.body, "error"), "message")),
               "already running"));
    json_decref(r.body);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s", sid);
    r = run(f, "GET", uri, f->user, NULL);
    assert_true(json_is_true(json_object_get(json_object_get(r.body, "data"), "busy")));
    json_decref(r.body);
}

static void another_users_session_is_404_everywhere(void **state)
{
    struct fx *f = *state;
    char sid[32], uri[128];
    struct result r;
    static const char *const suffix[] = {"", "/messages"};
    make_session(f, f->user, sid);
    for (int i = 0; i < 2; i++) {
        snprintf(uri, sizeof uri, "/api/v1/sessions/%s%s", sid, suffix[i]);
        r = run(f, "GET", uri, f->owner, NULL);
        assert_int_equal(r.status, 404);
        json_decref(r.body);
    }
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    r = run(f, "POST", uri, f->owner, "{\"content\":\"mine now\"}");
    assert_int_equal(r.status, 404);
    json_decref(r.body);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s", sid);
    r = run(f, "DELETE", uri, f->owner, NULL);
    assert_int_equal(r.status, 404);
    json_decref(r.body);
    assert_int_equal(scalar(f, "SELECT count(*) FROM messages"), 0);
    assert_int_equal(scalar(f, "SELECT count(*) FROM sessions WHERE status = 'active'"), 1);
    /* malformed ids are just as unknown */
    r = run(f, "GET", "/api/v1/sessions/..%2f..%2fetc", f->user, NULL);
    assert_int_equal(r.status, 404);
    json_decref(r.body);
}

static void bad_input_is_4xx(void **state)
{
    struct fx *f = *state;
    char sid[32], uri[256];
    struct result r;
    static const struct {
        const char *body;
        int status;
    } posts[] = {
        {"{}", 400},
        {"{\"content\":5}", 400},
        {"{\"content\":\"\"}", 400},
        {"{\"content\":null}", 400},
        {"{\"content\":[]}", 400},
        {"{\"content\":[{\"type\":\"image\",\"text\":\"x\"}]}", 400},
        {"{\"content\":[{\"type\":\"text\",\"text\":\"x\",\"extra\":1}]}", 400},
        {"{\"content\":[\"x\"]}", 400},
        {"{\"content\":\"x\",\"other\":1}", 400},
        {"{\"content\":\"x\",\"attachments\":{}}", 400},
        {"{\"content\":\"x\",\"attachments\":[1]}", 400},
        {"{\"content\":\"x\",\"attachments\":[{\"type\":\"pdf\",\"name\":\"a\"}]}", 400},
        {"{\"content\":\"x\",\"attachments\":[{\"type\":\"file\"}]}", 400},
        {"{\"content\":\"x\",\"attachments\":[{\"type\":\"file\",\"name\":\"a\\u0001\"}]}", 400},
        {"{\"content\":\"x\",\"attachments\":[{\"type\":\"file\",\"name\":\"a\","
         "\"url\":\"http://x.org/a\"}]}",
         400},
        {"{\"content\":\"x\",\"attachments\":[{\"type\":\"file\",\"name\":\"a\","
         "\"url\":\"https://\"}]}",
         400},
        {"{\"content\":\"x\",\"attachments\":[{\"type\":\"file\",\"name\":\"a\",\"data\":\"***\"}]"
         "}",
         400},
        {"{\"content\":\"x\",\"attachments\":[{\"type\":\"file\",\"name\":\"a\",\"data\":5}]}",
         400},
        {"{\"content\":\"x\",\"attachments\":[{\"type\":\"file\",\"name\":\"a\",\"x\":1}]}", 400},
        {"{\"content\":\"x\",\"attachments\":[{},{},{},{},{},{},{},{},{}]}", 400},
        {"{\"content\":\"x\\u0000\"}", 400},
        {"[1]", 400},
    };
    static const char *const queries[] = {
        "?limit=0",
        "?limit=-1",
        "?limit=NaN",
        "?limit=1000000000",
        "?limit=201",
        "?limit=",
        "?limit=1e2",
        "?before=nope",
        "?before=msg_00000000000000000000",
        "?includeContent=yes",
        "?limit=%zz",
    };
    make_session(f, f->user, sid);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    for (size_t i = 0; i < sizeof posts / sizeof posts[0]; i++) {
        r = run(f, "POST", uri, f->user, posts[i].body);
        if (r.status != posts[i].status)
            fprintf(stderr, "body %s → %d\n", posts[i].body, r.status);
        assert_int_equal(r.status, posts[i].status);
        json_decref(r.body);
    }
    assert_int_equal(scalar(f, "SELECT count(*) FROM messages"), 0);
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages%s", sid, queries[i]);
        r = run(f, "GET", uri, f->user, NULL);
        if (r.status != 400)
            fprintf(stderr, "query %s → %d\n", queries[i], r.status);
        assert_int_equal(r.status, 400);
        assert_string_equal(err_code(&r), "INVALID_PARAMETER");
        json_decref(r.body);
    }
    static const char *const creates[] = {
        "{}",
        "{\"channel\":\"\"}",
        "{\"channel\":5}",
        "{\"channel\":\"a b\"}",
        "{\"channel\":\"rest\",\"channelId\":\"ws\"}",
        "{\"channel\":\"rest\",\"workDir\":\"../x\"}",
        "{\"channel\":\"rest\",\"workDir\":\"/etc\"}",
        "{\"channel\":\"rest\",\"workDir\":7}",
        "{\"channel\":\"rest\",\"x\":1}",
    };
    for (size_t i = 0; i < sizeof creates / sizeof creates[0]; i++) {
        r = run(f, "POST", "/api/v1/sessions", f->user, creates[i]);
        if (r.status != 400)
            fprintf(stderr, "create %s → %d\n", creates[i], r.status);
        assert_int_equal(r.status, 400);
        json_decref(r.body);
    }
    r = run(f, "POST", "/api/v1/sessions", f->user, "{\"channelId\":\"ws\"}");
    assert_int_equal(r.status, 201);
    assert_string_equal(data_str(&r, "channel"), "ws");
    json_decref(r.body);
    r = run(f, "GET", "/api/v1/sessions?status=open", f->user, NULL);
    assert_int_equal(r.status, 400);
    json_decref(r.body);
    r = run(f, "GET", "/api/v1/sessions?limit=0", f->user, NULL);
    assert_int_equal(r.status, 400);
    json_decref(r.body);
    r = run(f, "GET", "/api/v1/sessions?status=active&limit=200", f->user, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(json_object_get(r.body, "data"), "sessions")),
                     2);
    json_decref(r.body);
}

static void attachments_are_validated_and_passed(void **state)
{
    struct fx *f = *state;
    char sid[32], uri[128];
    struct result r;
    json_t *turn, *att;
    make_session(f, f->user, sid);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    fo_mode(&f->fo, FO_COMPLETE, NULL);
    r = run(f, "POST", uri, f->user,
            "{\"content\":\"see\",\"attachments\":[{\"type\":\"file\",\"name\":\"a.txt\","
            "\"data\":\"aGk=\"},{\"type\":\"image\",\"name\":\"b.png\","
            "\"url\":\"https://example.org/b.png\"}]}");
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    turn = fo_last(&f->fo);
    att = json_object_get(turn, "attachments");
    assert_int_equal(json_array_size(att), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(att, 0), "size")), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(att, 0), "data")), "aGk=");
    json_decref(turn);
    /* the database keeps metadata only */
    assert_int_equal(scalar(f, "SELECT count(*) FROM messages WHERE attachments LIKE '%aGk=%'"), 0);
    assert_int_equal(scalar(f, "SELECT count(*) FROM messages WHERE attachments LIKE '%a.txt%'"),
                     1);
}

static void content_only_for_an_owner_who_asks(void **state)
{
    struct fx *f = *state;
    char sid[32], usid[32], uri[128];
    struct result r;
    json_t *msgs;
    make_session(f, f->owner, sid);
    make_session(f, f->user, usid);
    fo_mode(&f->fo, FO_COMPLETE, NULL);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    r = run(f, "POST", uri, f->owner, "{\"content\":\"secret plan\"}");
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", usid);
    r = run(f, "POST", uri, f->user, "{\"content\":\"secret plan\"}");
    assert_int_equal(r.status, 200);
    json_decref(r.body);

    msgs = history(f, f->owner, sid, NULL);
    assert_null(json_object_get(json_array_get(msgs, 0), "content"));
    json_decref(msgs);
    msgs = history(f, f->owner, sid, "?includeContent=true&limit=1");
    assert_int_equal(json_array_size(msgs), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(msgs, 0), "content")),
                        "echo: secret plan");
    json_decref(msgs);
    msgs = history(f, f->user, usid, "?includeContent=true");
    assert_int_equal(json_array_size(msgs), 2);
    assert_null(json_object_get(json_array_get(msgs, 0), "content"));
    assert_int_equal(
        strlen(json_string_value(json_object_get(json_array_get(msgs, 0), "contentHash"))), 16);
    json_decref(msgs);
}

static void approvals_are_relayed_with_the_callers_user(void **state)
{
    struct fx *f = *state;
    struct result r;
    json_t *call;

    fo_mode(&f->fo, FO_CANNED,
            json_pack("{s:s, s:[{s:s, s:s}]}", "type", "approvals", "approvals", "approvalId",
                      "apr_1", "toolName", "write_file"));
    r = run(f, "GET", "/api/v1/approvals", f->user, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(json_object_get(r.body, "data"), "approvals")),
                     1);
    json_decref(r.body);
    call = fo_last(&f->fo);
    assert_string_equal(json_string_value(json_object_get(call, "type")), "list_approvals");
    assert_string_equal(json_string_value(json_object_get(call, "userId")), "2");
    json_decref(call);

    fo_mode(&f->fo, FO_CANNED,
            json_pack("{s:s, s:s, s:b}", "type", "ack", "approvalId", "apr_1", "approved", 1));
    r = run(f, "POST", "/api/v1/approvals/apr_1", f->user,
            "{\"approved\":true,\"trustSession\":true}");
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    call = fo_last(&f->fo);
    assert_string_equal(json_string_value(json_object_get(call, "type")), "approval_response");
    assert_string_equal(json_string_value(json_object_get(call, "approvalId")), "apr_1");
    assert_string_equal(json_string_value(json_object_get(call, "userId")), "2");
    assert_true(json_is_true(json_object_get(call, "trustSession")));
    json_decref(call);
    assert_int_equal(scalar(f, "SELECT count(*) FROM audit WHERE action = 'approval.answer' AND"
                               " detail = 'approved,trustSession'"),
                     1);

    fo_mode(&f->fo, FO_CANNED,
            json_pack("{s:s, s:s, s:s}", "type", "error", "code", "FORBIDDEN", "message", "no"));
    r = run(f, "POST", "/api/v1/approvals/apr_1", f->owner, "{\"approved\":true}");
    assert_int_equal(r.status, 404);
    json_decref(r.body);
    fo_mode(&f->fo, FO_CANNED,
            json_pack("{s:s, s:s, s:s}", "type", "error", "code", "APPROVAL_NOT_FOUND", "message",
                      "no"));
    r = run(f, "POST", "/api/v1/approvals/apr_2", f->user, "{\"approved\":false}");
    assert_int_equal(r.status, 404);
    json_decref(r.body);
    fo_mode(&f->fo, FO_CANNED,
            json_pack("{s:s, s:s, s:s}", "type", "error", "code", "APPROVAL_EXPIRED", "message",
                      "late"));
    r = run(f, "POST", "/api/v1/approvals/apr_1", f->user, "{\"approved\":true}");
    assert_int_equal(r.status, 409);
    json_decref(r.body);
    r = run(f, "POST", "/api/v1/approvals/apr_1", f->user, "{\"approved\":\"yes\"}");
    assert_int_equal(r.status, 400);
    json_decref(r.body);
    r = run(f, "POST", "/api/v1/approvals/apr_1", f->user, "{}");
    assert_int_equal(r.status, 400);
    json_decref(r.body);
    r = run(f, "POST", "/api/v1/approvals/a%20b", f->user, "{\"approved\":true}");
    assert_int_equal(r.status, 404);
    json_decref(r.body);

    fo_stop(&f->fo);
    r = run(f, "GET", "/api/v1/approvals", f->user, NULL);
    assert_int_equal(r.status, 503);
    json_decref(r.body);
    r = run(f, "GET", "/api/v1/tools", f->user, NULL);
    assert_int_equal(r.status, 503);
    json_decref(r.body);
}

static void config_is_safe_and_patch_applies(void **state)
{
    struct fx *f = *state;
    struct result r;
    char sid[32], uri[128], *text;
    json_t *turn;

    r = run(f, "GET", "/api/v1/config", f->user, NULL);
    assert_int_equal(r.status, 200);
    text = json_dumps(r.body, 0);
    assert_null(strstr(text, "sk-very-secret"));
    assert_null(strstr(text, f->dir)); /* no paths */
    assert_non_null(strstr(text, "\"provider\""));
    free(text);
    json_decref(r.body);

    r = run(f, "PATCH", "/api/v1/config", f->user, "{\"logLevel\":\"debug\"}");
    assert_int_equal(r.status, 403);
    json_decref(r.body);
    static const char *const bad[] = {
        "{}",
        "{\"logLevel\":\"loud\"}",
        "{\"logLevel\":5}",
        "{\"limits\":{\"restPerMinute\":0}}",
        "{\"limits\":{\"restPerMinute\":\"60\"}}",
        "{\"limits\":{\"maxBodyBytes\":10}}",
        "{\"limits\":5}",
        "{\"tools\":{\"policies\":{\"bash\":\"never\"}}}",
        "{\"tools\":{\"policies\":{\"rm\":\"auto\"}}}",
        "{\"provider\":{\"name\":\"openai\"}}",
        "{\"version\":\"9\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = run(f, "PATCH", "/api/v1/config", f->owner, bad[i]);
        if (r.status != 400)
            fprintf(stderr, "patch %s → %d\n", bad[i], r.status);
        assert_int_equal(r.status, 400);
        json_decref(r.body);
    }
    assert_int_equal(scalar(f, "SELECT count(*) FROM settings"), 0);

    r = run(f, "PATCH", "/api/v1/config", f->owner,
            "{\"limits\":{\"messagesPerMinute\":3},\"tools\":{\"policies\":{\"bash\":\"ask\"}}}");
    assert_int_equal(r.status, 200);
    assert_int_equal(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(r.body, "data"), "limits"), "messagesPerMinute")),
        3);
    json_decref(r.body);
    assert_int_equal(f->app.cfg->rate_messages_per_min, 3);
    assert_int_equal(scalar(f, "SELECT count(*) FROM audit WHERE action = 'config.update'"), 1);

    /* the changed policy travels with the next turn */
    make_session(f, f->user, sid);
    snprintf(uri, sizeof uri, "/api/v1/sessions/%s/messages", sid);
    fo_mode(&f->fo, FO_COMPLETE, NULL);
    r = run(f, "POST", uri, f->user, "{\"content\":\"x\"}");
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    turn = fo_last(&f->fo);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(turn, "toolPolicies"), "bash")), "ask");
    assert_int_equal(json_object_size(json_object_get(turn, "toolPolicies")), 1);
    json_decref(turn);

    /* and shows in the tool list */
    fo_mode(&f->fo, FO_CANNED,
            json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "type", "tools", "tools", "name", "bash",
                      "policy", "always", "name", "read_file", "policy", "auto"));
    r = run(f, "GET", "/api/v1/tools/bash", f->user, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(data_str(&r, "policy"), "ask");
    json_decref(r.body);
    r = run(f, "GET", "/api/v1/tools/nope", f->user, NULL);
    assert_int_equal(r.status, 404);
    json_decref(r.body);

    r = run(f, "PATCH", "/api/v1/config", f->owner,
            "{\"limits\":{\"messagesPerMinute\":null},\"tools\":{\"policies\":{\"bash\":null}}}");
    assert_int_equal(r.status, 200);
    json_decref(r.body);
    assert_ptr_equal(f->app.cfg, &f->cfg);
}

/* Regression: the slow-request pool moves a request by value; its path
 * params pointed into the old struct (a reused buffer) and the turn looked up
 * the wrong session. */
static void moved_request_keeps_its_path_params(void **state)
{
    struct meao_req a, b;
    const char *uri = "/api/v1/sessions/ses_abcdefghijABCDEFGHIJ/messages";
    (void)state;
    meao_req_init(&a);
    meao_req_set_param(&a, "REQUEST_METHOD", 14, "POST", 4);
    meao_req_set_param(&a, "REQUEST_URI", 11, uri, strlen(uri));
    meao_app_route(&a);
    assert_string_equal(meao_req_param(&a, 0), "ses_abcdefghijABCDEFGHIJ");
    meao_req_move(&b, &a);
    memset(a.path_buf, 'X', sizeof a.path_buf); /* the old place is reused */
    assert_string_equal(meao_req_param(&b, 0), "ses_abcdefghijABCDEFGHIJ");
    assert_null(a.method);
    meao_req_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(moved_request_keeps_its_path_params),
        cmocka_unit_test_setup_teardown(full_flow_create_post_history_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(orchestrator_down_is_fast_503_and_message_failed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(dropped_and_failing_turns_release_the_session, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(turn_deadline_is_504, setup, teardown),
        cmocka_unit_test_setup_teardown(client_gone_cancels_the_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(busy_session_is_409, setup, teardown),
        cmocka_unit_test_setup_teardown(another_users_session_is_404_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_input_is_4xx, setup, teardown),
        cmocka_unit_test_setup_teardown(attachments_are_validated_and_passed, setup, teardown),
        cmocka_unit_test_setup_teardown(content_only_for_an_owner_who_asks, setup, teardown),
        cmocka_unit_test_setup_teardown(approvals_are_relayed_with_the_callers_user, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(config_is_safe_and_patch_applies, setup, teardown),
    };
    meao_log_init("test_messages", MEAO_LOG_ERROR);
    if (meao_lib_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
