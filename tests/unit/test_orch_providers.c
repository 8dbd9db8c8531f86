/* The anthropic and openai providers against tests/fakes/fake-llm.mjs, a
 * loopback server speaking both real streaming wire formats: streamed text,
 * tool calls assembled from JSON split at awkward places, usage, the request
 * each provider sends (headers, body, tool results), HTTP errors, stalls,
 * cut streams, invalid events, cancellation, concurrency; and the base URL
 * rules and error-line scrubbing. Every behaviour runs for both providers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "orchestrator/provider.h"
#include "orchestrator/provider_http.h"

#ifndef MEAO_SOURCE_DIR
#define MEAO_SOURCE_DIR "."
#endif

#define KEY "sk-ant-test-SECRET0123456789abcdef"

/* --- the fake server, one per test run ---------------------------------- */

static pid_t fake_pid = -1;
static int fake_stdin = -1;
static int fake_port;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int start_fake(void **state)
{
    int out[2], in[2];
    char line[256];
    size_t n = 0;
    int64_t deadline = now_ms() + 15000;
    json_t *v;
    (void)state;

    if (pipe(out) != 0 || pipe(in) != 0)
        return -1;
    fake_pid = fork();
    if (fake_pid < 0)
        return -1;
    if (fake_pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execlp("node", "node", MEAO_SOURCE_DIR "/tests/fakes/fake-llm.mjs", "--watch-stdin",
               (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    fake_stdin = in[1];
    /* {"port":N}\n, within the deadline */
    while (n < sizeof line - 1 && memchr(line, '\n', n) == NULL) {
        struct pollfd pfd = {.fd = out[0], .events = POLLIN};
        int64_t left = deadline - now_ms();
        ssize_t r;
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        r = read(out[0], line + n, sizeof line - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(out[0]);
    line[n] = '\0';
    v = json_loads(line, JSON_DISABLE_EOF_CHECK, NULL);
    fake_port = (int)json_integer_value(json_object_get(v, "port"));
    json_decref(v);
    if (fake_port <= 0) {
        fprintf(stderr, "fake-llm did not start (got \"%s\")\n", line);
        return -1;
    }
    return 0;
}

static int stop_fake(void **state)
{
    int status;
    (void)state;
    if (fake_stdin >= 0)
        close(fake_stdin);
    if (fake_pid > 0) {
        kill(fake_pid, SIGTERM);
        for (int i = 0; i < 100 && waitpid(fake_pid, &status, WNOHANG) == 0; i++)
            usleep(20000);
        if (waitpid(fake_pid, &status, WNOHANG) == 0) {
            kill(fake_pid, SIGKILL);
            waitpid(fake_pid, &status, 0);
        }
    }
    return 0;
}

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
    assert_true(meao_buf_append(ud, p, size * n));
    return size * n;
}

/* The last request the fake received: {mode, method, path, headers, body, json}. */
static json_t *last_request(void)
{
    char url[128];
    struct meao_buf b = {0};
    CURL *h = curl_easy_init();
    json_t *v;
    long code = 0;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/__last", fake_port);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    assert_int_equal(curl_easy_perform(h), CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    assert_int_equal(code, 200);
    curl_easy_cleanup(h);
    v = json_loadb(b.p, b.len, 0, NULL);
    assert_non_null(v);
    meao_buf_free(&b);
    return v;
}

/* --- providers under test ----------------------------------------------- */

struct pdef {
    const char *name;
    const char *path; /* base URL path on the fake */
    enum meao_err (*create)(const struct meao_config *, struct meao_provider **, char *, size_t);
    const char *tool_id_a, *tool_id_b;
};

static const struct pdef anthropic = {"anthropic", "", meao_provider_anthropic_create, "toolu_01A",
                                      "toolu_01B"};
static const struct pdef openai = {"openai", "/v1", meao_provider_openai_create, "call_01A",
                                   "call_01B"};

struct fixture {
    struct meao_config cfg;
    struct meao_provider *p;
};

static void set(struct meao_config *cfg, const char *k, const char *v)
{
    char err[256];
    if (meao_config_set(cfg, k, v, err, sizeof err) != 0)
        fail_msg("%s", err);
}

static void fx_config(struct fixture *fx, const struct pdef *d, int64_t timeout_ms, const char *key)
{
    char url[128], num[32];
    meao_config_defaults(&fx->cfg);
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", fake_port, d->path);
    snprintf(num, sizeof num, "%lld", (long long)timeout_ms);
    set(&fx->cfg, "provider", d->name);
    set(&fx->cfg, "provider_base_url", url);
    set(&fx->cfg, "provider_model", "fake-model-1");
    set(&fx->cfg, "provider_api_key", key);
    set(&fx->cfg, "provider_timeout_ms", num);
    set(&fx->cfg, "provider_max_tokens", "321");
}

static void fx_open(struct fixture *fx, const struct pdef *d, int64_t timeout_ms, const char *key)
{
    char err[256] = "";
    fx_config(fx, d, timeout_ms, key);
    if (d->create(&fx->cfg, &fx->p, err, sizeof err) != MEAO_OK)
        fail_msg("create: %s", err);
    assert_string_equal(fx->p->ops->name, d->name);
}

static void fx_close(struct fixture *fx)
{
    fx->p->ops->destroy(fx->p);
    meao_config_free(&fx->cfg);
}

/* What the sink saw. */
struct rec {
    struct meao_buf text;
    int ntext;
    json_t *calls; /* [{id, name, input}] */
    int64_t in, out;
    int nusage;
    int64_t cancel_at;               /* cancelled() is true from this monotonic ms on (0: never) */
    int64_t cancel_after_first_text; /* set cancel_at this long after the first text */
    bool text_says_stop;             /* the text callback returns false */
};

static bool on_text(void *ctx, const char *delta, size_t len)
{
    struct rec *r = ctx;
    assert_true(len > 0);
    assert_true(meao_buf_append(&r->text, delta, len));
    if (r->ntext++ == 0 && r->cancel_after_first_text > 0)
        r->cancel_at = now_ms() + r->cancel_after_first_text;
    return !r->text_says_stop;
}

static bool on_tool(void *ctx, const char *id, const char *name, json_t *input)
{
    struct rec *r = ctx;
    assert_true(json_is_object(input));
    assert_int_equal(json_array_append_new(r->calls, json_pack("{s:s,s:s,s:O}", "id", id, "name",
                                                               name, "input", input)),
                     0);
    return true;
}

static void on_usage(void *ctx, int64_t in, int64_t out)
{
    struct rec *r = ctx;
    r->in = in;
    r->out = out;
    r->nusage++;
}

static bool on_cancelled(void *ctx)
{
    struct rec *r = ctx;
    return r->cancel_at > 0 && now_ms() >= r->cancel_at;
}

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof *r);
    r->calls = json_array();
}

static void rec_free(struct rec *r)
{
    meao_buf_free(&r->text);
    json_decref(r->calls);
}

static const char *rec_text(struct rec *r)
{
    assert_true(meao_buf_puts(&r->text, ""));
    return r->text.p;
}

/* One call with a single user message. */
static enum meao_err run_msgs(struct fixture *fx, struct rec *r, json_t *msgs, json_t *tools,
                              const char *system, char *err, size_t errlen)
{
    struct meao_llm_sink sink = {r, on_text, on_tool, on_usage, on_cancelled};
    struct meao_llm_request req = {msgs, tools, system};
    enum meao_err e = fx->p->ops->complete(fx->p, &req, &sink, err, errlen);
    json_decref(msgs);
    json_decref(tools);
    /* every error is one line without the key */
    if (e != MEAO_OK) {
        assert_true(err[0] != '\0');
        assert_null(strchr(err, '\n'));
        assert_null(strchr(err, '\r'));
        assert_null(strstr(err, KEY));
        assert_null(strstr(err, "SECRET0123456789"));
    }
    return e;
}

static enum meao_err run(struct fixture *fx, struct rec *r, const char *user, char *err,
                         size_t errlen)
{
    return run_msgs(fx, r, json_pack("[{s:s,s:s}]", "role", "user", "content", user), NULL, NULL,
                    err, errlen);
}

/* Run one scenario that must fail with want; returns how long it took. */
static int64_t expect_error(const struct pdef *d, int64_t timeout_ms, const char *scenario,
                            enum meao_err want, const char *needle)
{
    struct fixture fx;
    struct rec r;
    char err[512] = "";
    int64_t t0;
    enum meao_err e;

    fx_open(&fx, d, timeout_ms, KEY);
    rec_init(&r);
    t0 = now_ms();
    e = run(&fx, &r, scenario, err, sizeof err);
    t0 = now_ms() - t0;
    if (e != want)
        fail_msg("%s %s: got %s (%s), want %s", d->name, scenario, meao_strerror(e), err,
                 meao_strerror(want));
    if (strncmp(err, d->name, strlen(d->name)) != 0 || (needle && strstr(err, needle) == NULL))
        fail_msg("%s %s: error line \"%s\" lacks \"%s\"", d->name, scenario, err,
                 needle ? needle : d->name);
    assert_int_equal(json_array_size(r.calls), 0);
    rec_free(&r);
    fx_close(&fx);
    return t0;
}

#define BOTH(fn)                                                                                   \
    static void fn##_anthropic(void **state)                                                       \
    {                                                                                              \
        (void)state;                                                                               \
        fn(&anthropic);                                                                            \
    }                                                                                              \
    static void fn##_openai(void **state)                                                          \
    {                                                                                              \
        (void)state;                                                                               \
        fn(&openai);                                                                               \
    }

/* --- streaming ---------------------------------------------------------- */

static void text_streams_in_order(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";

    fx_open(&fx, d, 10000, KEY);
    rec_init(&r);
    assert_int_equal(run(&fx, &r, "scenario:text", err, sizeof err), MEAO_OK);
    assert_string_equal(rec_text(&r), "Hello, world \xE2\x80\x94 \xC3\xBCn\xC3\xAF"
                                      "c\xC3\xB8"
                                      "d\xC3\xA9 \xE2\x9C\x93");
    assert_int_equal(r.ntext, 6); /* one callback per delta: nothing buffered */
    assert_int_equal(json_array_size(r.calls), 0);
    assert_true(r.nusage >= 1);
    assert_int_equal(r.in, 25);
    assert_int_equal(r.out, 7);
    rec_free(&r);
    fx_close(&fx);
}
BOTH(text_streams_in_order)

static void echo_default(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";

    fx_open(&fx, d, 10000, KEY);
    rec_init(&r);
    assert_int_equal(run(&fx, &r, "hi there", err, sizeof err), MEAO_OK);
    assert_string_equal(rec_text(&r), "You said: hi there");
    assert_int_equal(r.in, 12);
    assert_int_equal(r.out, 5);
    rec_free(&r);
    fx_close(&fx);
}
BOTH(echo_default)

static void tool_calls_assembled_from_split_json(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";
    json_t *want_a, *want_b, *c;

    fx_open(&fx, d, 10000, KEY);
    rec_init(&r);
    assert_int_equal(run(&fx, &r, "scenario:tool", err, sizeof err), MEAO_OK);
    assert_string_equal(rec_text(&r), "Let me check.");
    assert_int_equal(json_array_size(r.calls), 2);
    want_a = json_loads("{\"command\":\"echo \\\"hi\\\" \\u00e9 \\\\ done\",\"n\":125,"
                        "\"f\":-1.5e3,\"list\":[1,2,{\"a\":null,\"b\":true}],\"s\":\"tab\\there\"}",
                        0, NULL);
    want_b = json_pack("{s:s}", "path", "notes.txt");
    assert_non_null(want_a);
    c = json_array_get(r.calls, 0);
    assert_string_equal(json_string_value(json_object_get(c, "id")), d->tool_id_a);
    assert_string_equal(json_string_value(json_object_get(c, "name")), "bash");
    assert_true(json_equal(json_object_get(c, "input"), want_a));
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "input"), "command")),
                        "echo \"hi\" \xC3\xA9 \\ done");
    c = json_array_get(r.calls, 1);
    assert_string_equal(json_string_value(json_object_get(c, "id")), d->tool_id_b);
    assert_string_equal(json_string_value(json_object_get(c, "name")), "read_file");
    assert_true(json_equal(json_object_get(c, "input"), want_b));
    assert_int_equal(r.in, 30);
    assert_int_equal(r.out, 42);
    json_decref(want_a);
    json_decref(want_b);
    rec_free(&r);
    fx_close(&fx);
}
BOTH(tool_calls_assembled_from_split_json)

static void tool_call_without_input_gets_empty_object(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";
    json_t *c;

    fx_open(&fx, d, 10000, KEY);
    rec_init(&r);
    assert_int_equal(run(&fx, &r, "scenario:tool_empty", err, sizeof err), MEAO_OK);
    assert_int_equal(json_array_size(r.calls), 1);
    c = json_array_get(r.calls, 0);
    assert_string_equal(json_string_value(json_object_get(c, "name")), "list_files");
    assert_int_equal(json_object_size(json_object_get(c, "input")), 0);
    rec_free(&r);
    fx_close(&fx);
}
BOTH(tool_call_without_input_gets_empty_object)

static void crlf_bom_comments_multiline_data(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";

    fx_open(&fx, d, 10000, KEY);
    rec_init(&r);
    assert_int_equal(run(&fx, &r, "scenario:crlf", err, sizeof err), MEAO_OK);
    assert_string_equal(rec_text(&r), "Hello");
    assert_int_equal(r.in, 4);
    assert_int_equal(r.out, 2);
    rec_free(&r);
    fx_close(&fx);
}
BOTH(crlf_bom_comments_multiline_data)

/* --- the request -------------------------------------------------------- */

static json_t *sample_tools(void)
{
    return json_pack("[{s:s,s:s,s:{s:s,s:{s:{s:s}},s:[s]}}]", "name", "bash", "description",
                     "Run a shell command", "inputSchema", "type", "object", "properties",
                     "command", "type", "string", "required", "command");
}

static void request_has_model_tokens_stream_tools_and_key_in_header_only(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";
    json_t *req, *h, *body, *t;
    const char *raw;

    fx_open(&fx, d, 10000, KEY);
    rec_init(&r);
    assert_int_equal(run_msgs(&fx, &r,
                              json_pack("[{s:s,s:s}]", "role", "user", "content", "scenario:text"),
                              sample_tools(), "Be brief.", err, sizeof err),
                     MEAO_OK);
    req = last_request();
    h = json_object_get(req, "headers");
    body = json_object_get(req, "json");
    raw = json_string_value(json_object_get(req, "body"));
    assert_string_equal(json_string_value(json_object_get(req, "mode")), d->name);
    assert_string_equal(json_string_value(json_object_get(req, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")), "application/json");
    assert_null(strstr(raw, "SECRET"));
    assert_null(strstr(json_string_value(json_object_get(req, "path")), "SECRET"));
    assert_string_equal(json_string_value(json_object_get(body, "model")), "fake-model-1");
    assert_true(json_is_true(json_object_get(body, "stream")));
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 321);
    if (d == &anthropic) {
        assert_string_equal(json_string_value(json_object_get(req, "path")), "/v1/messages");
        assert_string_equal(json_string_value(json_object_get(h, "x-api-key")), KEY);
        assert_string_equal(json_string_value(json_object_get(h, "anthropic-version")),
                            "2023-06-01");
        assert_null(json_object_get(h, "authorization"));
        assert_string_equal(json_string_value(json_object_get(body, "system")), "Be brief.");
        t = json_pack("[{s:s,s:[{s:s,s:s}]}]", "role", "user", "content", "type", "text", "text",
                      "scenario:text");
        assert_true(json_equal(json_object_get(body, "messages"), t));
        json_decref(t);
        t = json_array_get(json_object_get(body, "tools"), 0);
        assert_string_equal(json_string_value(json_object_get(t, "name")), "bash");
        assert_string_equal(json_string_value(json_object_get(t, "description")),
                            "Run a shell command");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(t, "input_schema"), "type")),
            "object");
    } else {
        assert_string_equal(json_string_value(json_object_get(req, "path")),
                            "/v1/chat/completions");
        assert_string_equal(json_string_value(json_object_get(h, "authorization")), "Bearer " KEY);
        assert_null(json_object_get(h, "x-api-key"));
        assert_true(json_is_true(
            json_object_get(json_object_get(body, "stream_options"), "include_usage")));
        t = json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "system", "content", "Be brief.", "role",
                      "user", "content", "scenario:text");
        assert_true(json_equal(json_object_get(body, "messages"), t));
        json_decref(t);
        t = json_array_get(json_object_get(body, "tools"), 0);
        assert_string_equal(json_string_value(json_object_get(t, "type")), "function");
        t = json_object_get(t, "function");
        assert_string_equal(json_string_value(json_object_get(t, "name")), "bash");
        assert_string_equal(json_string_value(json_object_get(t, "description")),
                            "Run a shell command");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(t, "parameters"), "type")), "object");
    }
    json_decref(req);
    rec_free(&r);
    fx_close(&fx);
}
BOTH(request_has_model_tokens_stream_tools_and_key_in_header_only)

/* The second call of a tool round: history with the assistant's tool calls
 * and both results (one an error) in the provider's format. */
static void tool_results_in_second_call(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";
    json_t *msgs, *req, *sent, *m, *b, *args;

    msgs = json_pack("[{s:s,s:s},"
                     "{s:s,s:s,s:[{s:s,s:s,s:{s:s}},{s:s,s:s,s:{s:s}}]},"
                     "{s:s,s:s,s:s,s:s,s:b},{s:s,s:s,s:s,s:s,s:b}]",
                     "role", "user", "content", "scenario:tool",                   /* 0 */
                     "role", "assistant", "content", "Let me check.", "toolCalls", /* 1 */
                     "id", d->tool_id_a, "name", "bash", "input", "command", "echo hi", "id",
                     d->tool_id_b, "name", "read_file", "input", "path", "notes.txt", "role",
                     "tool", "toolCallId", d->tool_id_a, "name", "bash", "content", "hi", /* 2 */
                     "isError", 0, "role", "tool", "toolCallId", d->tool_id_b, "name",    /* 3 */
                     "read_file", "content", "no such file", "isError", 1);
    assert_non_null(msgs);
    fx_open(&fx, d, 10000, KEY);
    rec_init(&r);
    assert_int_equal(run_msgs(&fx, &r, msgs, sample_tools(), NULL, err, sizeof err), MEAO_OK);
    req = last_request();
    sent = json_object_get(json_object_get(req, "json"), "messages");
    if (d == &anthropic) {
        assert_string_equal(rec_text(&r), "Tool said: hi | no such file");
        assert_int_equal(json_array_size(sent), 3); /* the two results share one user message */
        m = json_array_get(sent, 1);
        assert_string_equal(json_string_value(json_object_get(m, "role")), "assistant");
        b = json_pack("[{s:s,s:s},{s:s,s:s,s:s,s:{s:s}},{s:s,s:s,s:s,s:{s:s}}]", "type", "text",
                      "text", "Let me check.", "type", "tool_use", "id", d->tool_id_a, "name",
                      "bash", "input", "command", "echo hi", "type", "tool_use", "id", d->tool_id_b,
                      "name", "read_file", "input", "path", "notes.txt");
        assert_true(json_equal(json_object_get(m, "content"), b));
        json_decref(b);
        m = json_array_get(sent, 2);
        assert_string_equal(json_string_value(json_object_get(m, "role")), "user");
        b = json_pack("[{s:s,s:s,s:s,s:b},{s:s,s:s,s:s,s:b}]", "type", "tool_result", "tool_use_id",
                      d->tool_id_a, "content", "hi", "is_error", 0, "type", "tool_result",
                      "tool_use_id", d->tool_id_b, "content", "no such file", "is_error", 1);
        assert_true(json_equal(json_object_get(m, "content"), b));
        json_decref(b);
    } else {
        assert_string_equal(rec_text(&r), "Tool said: hi | Error: no such file");
        assert_int_equal(json_array_size(sent), 4);
        m = json_array_get(sent, 1);
        assert_string_equal(json_string_value(json_object_get(m, "role")), "assistant");
        assert_string_equal(json_string_value(json_object_get(m, "content")), "Let me check.");
        b = json_array_get(json_object_get(m, "tool_calls"), 0);
        assert_string_equal(json_string_value(json_object_get(b, "id")), d->tool_id_a);
        assert_string_equal(json_string_value(json_object_get(b, "type")), "function");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(b, "function"), "name")), "bash");
        args = json_loads(
            json_string_value(json_object_get(json_object_get(b, "function"), "arguments")), 0,
            NULL);
        assert_non_null(args);
        assert_string_equal(json_string_value(json_object_get(args, "command")), "echo hi");
        json_decref(args);
        assert_int_equal(json_array_size(json_object_get(m, "tool_calls")), 2);
        b = json_pack("{s:s,s:s,s:s}", "role", "tool", "tool_call_id", d->tool_id_a, "content",
                      "hi");
        assert_true(json_equal(json_array_get(sent, 2), b));
        json_decref(b);
        b = json_pack("{s:s,s:s,s:s}", "role", "tool", "tool_call_id", d->tool_id_b, "content",
                      "Error: no such file");
        assert_true(json_equal(json_array_get(sent, 3), b));
        json_decref(b);
    }
    json_decref(req);
    rec_free(&r);
    fx_close(&fx);
}
BOTH(tool_results_in_second_call)

static void malformed_history_is_refused_before_sending(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";

    fx_open(&fx, d, 10000, KEY);
    rec_init(&r);
    assert_int_equal(run_msgs(&fx, &r,
                              json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "user", "content", "a",
                                        "role", "wizard", "content", "b"),
                              NULL, NULL, err, sizeof err),
                     MEAO_E_PROVIDER);
    assert_non_null(strstr(err, "message 1"));
    assert_int_equal(run_msgs(&fx, &r, json_array(), NULL, NULL, err, sizeof err), MEAO_E_PROVIDER);
    assert_int_equal(run_msgs(&fx, &r,
                              json_pack("[{s:s,s:s}]", "role", "tool", "content", "orphan"), NULL,
                              NULL, err, sizeof err),
                     MEAO_E_PROVIDER);
    assert_non_null(strstr(err, "toolCallId"));
    rec_free(&r);
    fx_close(&fx);
}
BOTH(malformed_history_is_refused_before_sending)

/* --- errors ------------------------------------------------------------- */

static void http_429_is_one_safe_line(const struct pdef *d)
{
    expect_error(d, 10000, "scenario:http429", MEAO_E_PROVIDER, "HTTP 429");
    expect_error(d, 10000, "scenario:http429", MEAO_E_PROVIDER,
                 d == &anthropic ? "rate_limit_error: Number of request tokens"
                                 : "rate_limit_exceeded: Number of request tokens");
    expect_error(d, 10000, "scenario:http429", MEAO_E_PROVIDER, "(retry after 7 s)");
}
BOTH(http_429_is_one_safe_line)

static void http_500_and_529(const struct pdef *d)
{
    expect_error(d, 10000, "scenario:http500", MEAO_E_PROVIDER, "HTTP 500");
    expect_error(d, 10000, "scenario:http529", MEAO_E_PROVIDER, "HTTP 529 overloaded_error");
}
BOTH(http_500_and_529)

static void error_quoting_the_key_is_redacted(const struct pdef *d)
{
    static const char *const keys[] = {KEY, "plainkey-0123456789abcdef"};
    for (size_t i = 0; i < 2; i++) {
        struct fixture fx;
        struct rec r;
        char err[512] = "";
        fx_open(&fx, d, 10000, keys[i]);
        rec_init(&r);
        assert_int_equal(run(&fx, &r, "scenario:http401echo", err, sizeof err), MEAO_E_PROVIDER);
        assert_non_null(strstr(err, "HTTP 401"));
        assert_non_null(strstr(err, "[redacted]"));
        assert_null(strstr(err, keys[i]));
        assert_null(strstr(err, "0123456789abcdef"));
        assert_null(strchr(err, '\n'));
        assert_non_null(strstr(err, "See the docs.")); /* the newline became a space */
        rec_free(&r);
        fx_close(&fx);
    }
}
BOTH(error_quoting_the_key_is_redacted)

static void stalled_stream_times_out(const struct pdef *d)
{
    int64_t took = expect_error(d, 500, "scenario:stall", MEAO_E_TIMEOUT, "500 ms");
    assert_true(took >= 450);
    assert_true(took < 1500);
    took = expect_error(d, 500, "scenario:stall_headers", MEAO_E_TIMEOUT, NULL);
    assert_true(took >= 450);
    assert_true(took < 1500);
}
BOTH(stalled_stream_times_out)

static void cut_stream_is_a_provider_error(const struct pdef *d)
{
    expect_error(d, 10000, "scenario:cut", MEAO_E_PROVIDER, NULL);
    expect_error(d, 10000, "scenario:noend", MEAO_E_PROVIDER, "ended before");
}
BOTH(cut_stream_is_a_provider_error)

static void invalid_events_are_provider_errors(const struct pdef *d)
{
    expect_error(d, 10000, "scenario:badjson", MEAO_E_PROVIDER, "invalid JSON");
    expect_error(d, 10000, "scenario:badtool", MEAO_E_PROVIDER, "not a valid JSON object");
    expect_error(d, 10000, "scenario:bigevent", MEAO_E_PROVIDER, "exceeds");
    expect_error(d, 10000, "scenario:error_event", MEAO_E_PROVIDER, "overloaded");
    expect_error(d, 10000, "scenario:notsse", MEAO_E_PROVIDER, "is not an event stream");
}
BOTH(invalid_events_are_provider_errors)

static void unreachable_provider(const struct pdef *d)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    struct fixture fx;
    struct rec r;
    char err[512] = "", url[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char cerr[256];

    /* a port that was free a moment ago: nothing listens there */
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    fx_config(&fx, d, 5000, KEY);
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", ntohs(sa.sin_port), d->path);
    assert_int_equal(meao_config_set(&fx.cfg, "provider_base_url", url, cerr, sizeof cerr), 0);
    assert_int_equal(d->create(&fx.cfg, &fx.p, err, sizeof err), MEAO_OK);
    rec_init(&r);
    assert_int_equal(run(&fx, &r, "hello", err, sizeof err), MEAO_E_PROVIDER);
    assert_non_null(strstr(err, "cannot reach"));
    rec_free(&r);
    fx_close(&fx);
}
BOTH(unreachable_provider)

static enum meao_err count_event(void *ctx, const struct meao_sse_event *ev, bool *finished,
                                 char *err, size_t errlen)
{
    int *n = ctx;
    (void)ev;
    (void)finished;
    (void)err;
    (void)errlen;
    (*n)++;
    return MEAO_OK;
}

/* The stall limit, below the whole-call timeout: silence after the stream
 * began ends the call, precisely; the wait for the first byte does not. */
static void http_stall_limit_mid_stream(void **state)
{
    static const char *const headers[] = {"x-api-key: k", "anthropic-version: 2023-06-01", NULL};
    struct meao_llm_sink sink = {0};
    char url[96], body[256], err[256] = "";
    int events = 0;
    long status = 0;
    int64_t t0, took;
    struct meao_provider_http_call c = {
        .provider = "anthropic",
        .url = url,
        .headers = headers,
        .body = body,
        .timeout_ms = 5000,
        .stall_ms = 300,
        .sink = &sink,
        .on_event = count_event,
        .ctx = &events,
    };
    (void)state;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/messages", fake_port);
    snprintf(body, sizeof body,
             "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
             "\"content\":\"scenario:%s\"}]}",
             "stall");
    c.body_len = strlen(body);
    t0 = now_ms();
    assert_int_equal(meao_provider_http_post_sse(&c, &status, err, sizeof err), MEAO_E_TIMEOUT);
    took = now_ms() - t0;
    assert_non_null(strstr(err, "stalled"));
    assert_int_equal(status, 200);
    assert_int_equal(events, 1);
    assert_true(took >= 300);
    assert_true(took < 1200);

    /* no response at all: only the whole-call timeout applies */
    snprintf(body, sizeof body,
             "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
             "\"content\":\"scenario:%s\"}]}",
             "stall_headers");
    c.body_len = strlen(body);
    c.timeout_ms = 800;
    t0 = now_ms();
    assert_int_equal(meao_provider_http_post_sse(&c, &status, err, sizeof err), MEAO_E_TIMEOUT);
    took = now_ms() - t0;
    assert_non_null(strstr(err, "within 800 ms"));
    assert_int_equal(status, 0);
    assert_true(took >= 750);
}

/* --- cancellation ------------------------------------------------------- */

static void cancel_mid_stream_is_prompt(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";
    int64_t late;

    fx_open(&fx, d, 20000, KEY);
    rec_init(&r);
    r.cancel_after_first_text = 300;
    assert_int_equal(run(&fx, &r, "scenario:slow", err, sizeof err), MEAO_E_CANCELLED);
    late = now_ms() - r.cancel_at;
    assert_true(r.ntext >= 2); /* text kept flowing until the cancel */
    assert_true(r.ntext < 100);
    if (late > 200)
        fail_msg("cancel took %lld ms", (long long)late);
    rec_free(&r);
    fx_close(&fx);
}
BOTH(cancel_mid_stream_is_prompt)

static void cancel_while_no_byte_flows(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";
    int64_t late;

    fx_open(&fx, d, 20000, KEY);
    rec_init(&r);
    r.cancel_at = now_ms() + 400;
    assert_int_equal(run(&fx, &r, "scenario:stall", err, sizeof err), MEAO_E_CANCELLED);
    late = now_ms() - r.cancel_at;
    assert_true(late >= 0);
    if (late > 200)
        fail_msg("cancel took %lld ms", (long long)late);
    rec_free(&r);
    fx_close(&fx);
}
BOTH(cancel_while_no_byte_flows)

static void sink_refusing_text_cancels(const struct pdef *d)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";

    fx_open(&fx, d, 10000, KEY);
    rec_init(&r);
    r.text_says_stop = true;
    assert_int_equal(run(&fx, &r, "scenario:text", err, sizeof err), MEAO_E_CANCELLED);
    assert_int_equal(r.ntext, 1);
    rec_free(&r);
    fx_close(&fx);
}
BOTH(sink_refusing_text_cancels)

/* --- concurrency -------------------------------------------------------- */

struct worker {
    struct fixture *fx;
    int ok;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 3; i++) {
        struct rec r;
        char err[256] = "";
        rec_init(&r);
        if (run(w->fx, &r, i % 2 ? "scenario:tool" : "scenario:text", err, sizeof err) == MEAO_OK &&
            json_array_size(r.calls) == (i % 2 ? 2u : 0u))
            w->ok++;
        rec_free(&r);
    }
    return NULL;
}

static void concurrent_calls_share_one_provider(const struct pdef *d)
{
    struct fixture fx;
    pthread_t th[8];
    struct worker w[8];

    fx_open(&fx, d, 20000, KEY);
    for (int i = 0; i < 8; i++) {
        w[i] = (struct worker){&fx, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].ok, 3);
    }
    fx_close(&fx);
}
BOTH(concurrent_calls_share_one_provider)

/* --- configuration ------------------------------------------------------ */

static void base_url_rules(const struct pdef *d)
{
    static const struct {
        const char *url;
        bool ok;
    } cases[] = {
        {"https://api.example.com", true},       {"https://api.example.com/v1/", true},
        {"http://127.0.0.1:8080/v1", true},      {"http://127.9.9.9", true},
        {"http://localhost:11434/v1", true},     {"http://[::1]:8000/v1", true},
        {"http://example.com/v1", false}, /* a key in clear text over the network */
        {"http://10.0.0.5:8080", false},         {"http://[::2]:80", false},
        {"http://127.0.0.1.example.com", false}, {"ftp://127.0.0.1/", false},
        {"file:///etc/passwd", false},           {"https://user:pw@api.example.com", false},
        {"https://api.example.com/?x=1", false}, {"not a url", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fixture fx;
        char err[256] = "", cerr[256];
        enum meao_err e;
        fx_config(&fx, d, 1000, KEY);
        assert_int_equal(
            meao_config_set(&fx.cfg, "provider_base_url", cases[i].url, cerr, sizeof cerr), 0);
        e = d->create(&fx.cfg, &fx.p, err, sizeof err);
        if ((e == MEAO_OK) != cases[i].ok)
            fail_msg("%s %s: %s", d->name, cases[i].url, err);
        if (e == MEAO_OK) {
            fx.p->ops->destroy(fx.p);
        } else {
            assert_null(fx.p);
            assert_non_null(strstr(err, "provider_base_url"));
        }
        meao_config_free(&fx.cfg);
    }
}
BOTH(base_url_rules)

static void model_and_key_checks(const struct pdef *d)
{
    struct fixture fx;
    char err[256] = "", cerr[256];

    /* no model */
    fx_config(&fx, d, 1000, KEY);
    assert_int_equal(meao_config_set(&fx.cfg, "provider_model", "", cerr, sizeof cerr), 0);
    assert_int_equal(d->create(&fx.cfg, &fx.p, err, sizeof err), MEAO_E_INVALID_PARAMETER);
    assert_non_null(strstr(err, "provider_model"));
    meao_config_free(&fx.cfg);
    /* the public API needs a key */
    fx_config(&fx, d, 1000, "");
    assert_int_equal(meao_config_set(&fx.cfg, "provider_base_url", "", cerr, sizeof cerr), 0);
    assert_int_equal(d->create(&fx.cfg, &fx.p, err, sizeof err), MEAO_E_INVALID_PARAMETER);
    assert_non_null(strstr(err, "provider_api_key"));
    meao_config_free(&fx.cfg);
    /* ... and gets one: the default URL is https */
    fx_config(&fx, d, 1000, KEY);
    assert_int_equal(meao_config_set(&fx.cfg, "provider_base_url", "", cerr, sizeof cerr), 0);
    assert_int_equal(d->create(&fx.cfg, &fx.p, err, sizeof err), MEAO_OK);
    fx.p->ops->destroy(fx.p);
    meao_config_free(&fx.cfg);
    /* a local server may need none */
    fx_config(&fx, d, 1000, "");
    assert_int_equal(d->create(&fx.cfg, &fx.p, err, sizeof err), MEAO_OK);
    fx.p->ops->destroy(fx.p);
    meao_config_free(&fx.cfg);
    /* a key that would split its header line */
    fx_config(&fx, d, 1000, "abc\r\nX-Evil: 1");
    assert_int_equal(d->create(&fx.cfg, &fx.p, err, sizeof err), MEAO_E_INVALID_PARAMETER);
    assert_null(strstr(err, "Evil"));
    meao_config_free(&fx.cfg);
}
BOTH(model_and_key_checks)

static void openai_without_key_sends_no_authorization(void **state)
{
    struct fixture fx;
    struct rec r;
    char err[256] = "";
    json_t *req;
    (void)state;

    fx_open(&fx, &openai, 10000, "");
    rec_init(&r);
    assert_int_equal(run(&fx, &r, "hello", err, sizeof err), MEAO_OK);
    req = last_request();
    assert_null(json_object_get(json_object_get(req, "headers"), "authorization"));
    json_decref(req);
    rec_free(&r);
    fx_close(&fx);
}

static void scrub_makes_one_safe_line(void **state)
{
    char out[64];
    (void)state;
    meao_provider_http_scrub("  a\r\nb\t\tc\x01 ", 11, NULL, 100, out, sizeof out);
    assert_string_equal(out, "a b c");
    meao_provider_http_scrub("bad \xC3\x28 utf8 \xFF", 13, NULL, 100, out, sizeof out);
    assert_string_equal(out, "bad ?( utf8 ?");
    meao_provider_http_scrub("key=hunter2hunter2!", 19, "hunter2hunter2", 100, out, sizeof out);
    assert_string_equal(out, "key=[redacted]!");
    meao_provider_http_scrub("Incorrect key sk-proj-abc***xyz.", 32, NULL, 100, out, sizeof out);
    assert_string_equal(out, "Incorrect key [redacted].");
    meao_provider_http_scrub("task-force ok", 13, NULL, 100, out, sizeof out);
    assert_string_equal(out, "task-force ok");
    /* cut on a character boundary, marked */
    meao_provider_http_scrub("\xC3\xA9\xC3\xA9\xC3\xA9", 6, NULL, 3, out, sizeof out);
    assert_string_equal(out, "\xC3\xA9...");
    meao_provider_http_scrub("abcdefghij", 10, NULL, 100, out, 6);
    assert_string_equal(out, "abcde");
    meao_provider_http_scrub("ab\xC3\xA9", 4, NULL, 100, out, 4);
    assert_string_equal(out, "ab");
}

int main(void)
{
#define T(fn) cmocka_unit_test(fn##_anthropic), cmocka_unit_test(fn##_openai)
    const struct CMUnitTest tests[] = {
        T(text_streams_in_order),
        T(echo_default),
        T(tool_calls_assembled_from_split_json),
        T(tool_call_without_input_gets_empty_object),
        T(crlf_bom_comments_multiline_data),
        T(request_has_model_tokens_stream_tools_and_key_in_header_only),
        T(tool_results_in_second_call),
        T(malformed_history_is_refused_before_sending),
        T(http_429_is_one_safe_line),
        T(http_500_and_529),
        T(error_quoting_the_key_is_redacted),
        T(stalled_stream_times_out),
        T(cut_stream_is_a_provider_error),
        T(invalid_events_are_provider_errors),
        T(unreachable_provider),
        T(cancel_mid_stream_is_prompt),
        T(cancel_while_no_byte_flows),
        T(sink_refusing_text_cancels),
        T(concurrent_calls_share_one_provider),
        T(base_url_rules),
        T(model_and_key_checks),
        cmocka_unit_test(openai_without_key_sends_no_authorization),
        cmocka_unit_test(http_stall_limit_mid_stream),
        cmocka_unit_test(scrub_makes_one_safe_line),
    };
#undef T
    signal(SIGPIPE, SIG_IGN);
    meao_log_init("test_orch_providers", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, start_fake, stop_fake);
}
