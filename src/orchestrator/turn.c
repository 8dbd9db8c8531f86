#include "orchestrator/turn.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "proto/orch.h"
#include "orchestrator/text.h"
#include "orchestrator/tools.h"

#define RESULT_FRAME_MAX 4096 /* output bytes in a tool_call_result frame */
#define TOOL_ID_MAX      128
#define SUMMARY_LEN      256
#define ERROR_MSG_MAX    200

static const char system_prompt[] =
    "You are meao, a personal assistant. Tools run in the session's work directory; "
    "some of them need the user's approval, and a denied tool did not run.";

struct meao_turn {
    const struct meao_engine *eng;
    json_t *req;
    const char *rid, *user_id, *session_id;
    const json_t *policies; /* the request's toolPolicies (borrowed from req), or NULL */
    char work_dir[PATH_MAX];
    struct meao_turn_out out;
    atomic_int stop;
    int wake_fd; /* readable once stopped: tools poll it */
    int64_t started_ms;
    json_t *trusted;    /* the session's trusted tools */
    json_t *messages;   /* the conversation, provider-neutral */
    json_t *tool_calls; /* message_complete.toolCalls */
    struct meao_buf content;
    int64_t in_tokens, out_tokens;
    /* one model call */
    struct meao_buf call_text;
    json_t *call_tools;
    int64_t call_in, call_out;
    unsigned next_call_id;
};

/* --- engine ---------------------------------------------------------------- */

enum meao_err meao_engine_init(struct meao_engine *eng, const struct meao_config *cfg,
                               const struct meao_clock *clock, struct meao_provider *provider,
                               struct meao_approvals *approvals, char *err, size_t errlen)
{
    char root[PATH_MAX];
    struct stat st;

    memset(eng, 0, sizeof *eng);
    errno = 0;
    if (realpath(cfg->workspace_root, root) == NULL || stat(root, &st) != 0 ||
        !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "workspace_root %s: %s", cfg->workspace_root,
                 errno ? strerror(errno) : "not a directory");
        return MEAO_E_INVALID_PARAMETER;
    }
    eng->cfg = cfg;
    eng->clock = clock;
    eng->provider = provider;
    eng->approvals = approvals;
    eng->workspace_root = strdup(root);
    eng->tools = meao_tools_describe(NULL);
    eng->no_tools = json_array();
    if (eng->workspace_root == NULL || eng->tools == NULL || eng->no_tools == NULL) {
        meao_engine_fini(eng);
        snprintf(err, errlen, "out of memory");
        return MEAO_E_NOMEM;
    }
    return MEAO_OK;
}

void meao_engine_fini(struct meao_engine *eng)
{
    if (eng == NULL)
        return;
    free(eng->workspace_root);
    json_decref(eng->tools);
    json_decref(eng->no_tools);
    memset(eng, 0, sizeof *eng);
}

/* --- turn set-up ------------------------------------------------------------- */

static bool is_trusted(const struct meao_turn *t, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(t->trusted, i, v)
    {
        if (strcmp(json_string_value(v), name) == 0)
            return true;
    }
    return false;
}

/* A tool's policy in this turn: the request's toolPolicies, then the
 * configuration. */
static enum meao_tool_policy policy_of(const struct meao_turn *t, const char *name)
{
    return meao_tools_policy_for(t->eng->cfg, t->policies, name);
}

/* Trust only what can be trusted: known tools whose policy is not `always`. */
static bool trust(struct meao_turn *t, const char *name)
{
    if (!meao_tools_known(name) || policy_of(t, name) == MEAO_TOOL_ALWAYS || is_trusted(t, name))
        return true;
    return json_array_append_new(t->trusted, json_string(name)) == 0;
}

/* The user's message as the model sees it: the text, then a line per
 * attachment (name, type, size; never its data, never fetched). */
static json_t *user_message(const json_t *req)
{
    struct meao_buf b = {0};
    const json_t *atts = json_object_get(req, "attachments");
    json_t *msg = NULL, *a;
    size_t i;

    if (!meao_buf_puts(&b, meao_json_str(req, "content")))
        goto out;
    json_array_foreach(atts, i, a)
    {
        const char *name = meao_json_str(a, "name"), *type = meao_json_str(a, "type");
        const json_t *data = json_object_get(a, "data");
        if (!meao_buf_printf(&b, "%s[attachment: %.200s (%.20s", i == 0 ? "\n\n" : "\n",
                             name ? name : "unnamed", type ? type : "file"))
            goto out;
        if (json_is_string(data) &&
            !meao_buf_printf(&b, ", %zu bytes", json_string_length(data) / 4 * 3))
            goto out;
        if (!meao_buf_puts(&b, ")]"))
            goto out;
    }
    msg = json_pack("{s:s, s:s%}", "role", "user", "content", b.p, b.len);
out:
    meao_buf_free(&b);
    return msg;
}

enum meao_err meao_turn_new(const struct meao_engine *eng, json_t *request,
                            const struct meao_turn_out *out, struct meao_turn **turn, char *why,
                            size_t whylen)
{
    struct meao_turn *t = calloc(1, sizeof *t);
    const json_t *session = json_object_get(request, "session");
    const char *wd = meao_json_str(session, "workDir");
    size_t rootlen = strlen(eng->workspace_root), i;
    json_t *v;
    struct stat st;
    enum meao_err e = MEAO_E_NOMEM;

    *turn = NULL;
    if (t == NULL)
        return MEAO_E_NOMEM;
    t->wake_fd = -1;
    t->eng = eng;
    t->req = json_incref(request);
    t->out = *out;
    t->rid = meao_json_str(request, "requestId");
    t->user_id = meao_json_str(session, "userId");
    t->session_id = meao_json_str(session, "id");
    t->started_ms = meao_mono_ms(eng->clock);
    atomic_init(&t->stop, MEAO_TURN_RUNNING);

    /* the work directory must exist inside the workspace root: the gateway
     * checks this too, but tools trust only what they resolve themselves */
    if (wd == NULL || wd[0] != '/' || realpath(wd, t->work_dir) == NULL ||
        stat(t->work_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(why, whylen, "session.workDir must be an existing absolute directory");
        e = MEAO_E_INVALID_PARAMETER;
        goto fail;
    }
    if (strcmp(eng->workspace_root, "/") != 0 &&
        (strncmp(t->work_dir, eng->workspace_root, rootlen) != 0 ||
         (t->work_dir[rootlen] != '\0' && t->work_dir[rootlen] != '/'))) {
        snprintf(why, whylen, "session.workDir must be inside the workspace root");
        e = MEAO_E_INVALID_PARAMETER;
        goto fail;
    }
    t->policies = json_object_get(request, "toolPolicies");
    e = meao_tools_check_policies(t->policies, why, whylen);
    if (e != MEAO_OK)
        goto fail;
    e = MEAO_E_NOMEM;
    t->trusted = json_array();
    t->messages = json_array();
    t->tool_calls = json_array();
    if (!t->trusted || !t->messages || !t->tool_calls)
        goto fail;
    json_array_foreach(json_object_get(session, "trustedTools"), i, v)
    {
        if (!trust(t, json_string_value(v)))
            goto fail;
    }
    json_array_foreach(json_object_get(request, "history"), i, v)
    {
        json_t *m = json_pack("{s:O, s:O}", "role", json_object_get(v, "role"), "content",
                              json_object_get(v, "content"));
        if (m == NULL || json_array_append_new(t->messages, m) != 0)
            goto fail;
    }
    v = user_message(request);
    if (v == NULL || json_array_append_new(t->messages, v) != 0)
        goto fail;
    t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (t->wake_fd < 0) {
        snprintf(why, whylen, "out of file descriptors");
        e = MEAO_E_IO;
        goto fail;
    }
    *turn = t;
    return MEAO_OK;
fail:
    meao_turn_free(t);
    return e;
}

void meao_turn_free(struct meao_turn *t)
{
    if (t == NULL)
        return;
    if (t->wake_fd >= 0)
        close(t->wake_fd);
    json_decref(t->req);
    json_decref(t->trusted);
    json_decref(t->messages);
    json_decref(t->tool_calls);
    json_decref(t->call_tools);
    meao_buf_free(&t->content);
    meao_buf_free(&t->call_text);
    free(t);
}

const char *meao_turn_request_id(const struct meao_turn *t)
{
    return t->rid;
}

const char *meao_turn_user_id(const struct meao_turn *t)
{
    return t->user_id;
}

enum meao_turn_stop meao_turn_stopped(const struct meao_turn *t)
{
    return (enum meao_turn_stop)atomic_load(&((struct meao_turn *)t)->stop);
}

bool meao_turn_stop(struct meao_turn *t, enum meao_turn_stop why)
{
    int expected = MEAO_TURN_RUNNING;
    uint64_t one = 1;
    ssize_t n;

    if (why == MEAO_TURN_RUNNING || !atomic_compare_exchange_strong(&t->stop, &expected, why))
        return false;
    /* level-triggered and never read: every poller sees it from now on */
    n = write(t->wake_fd, &one, sizeof one);
    (void)n;
    meao_approvals_deny_owner(t->eng->approvals, t,
                              why == MEAO_TURN_CANCELLED ? MEAO_APPROVAL_DENIED
                                                         : MEAO_APPROVAL_DISCONNECT);
    return true;
}

static bool stopped(const struct meao_turn *t)
{
    return meao_turn_stopped(t) != MEAO_TURN_RUNNING;
}

/* --- frames ------------------------------------------------------------------- */

/* Write a frame (stolen). A failed write means the peer is gone. */
static bool emit(struct meao_turn *t, json_t *frame)
{
    bool ok;
    if (frame == NULL) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "out of memory building a frame");
        meao_turn_stop(t, MEAO_TURN_DISCONNECTED);
        return false;
    }
    ok = meao_turn_stopped(t) != MEAO_TURN_DISCONNECTED && t->out.emit(t->out.ctx, frame);
    json_decref(frame);
    if (!ok)
        meao_turn_stop(t, MEAO_TURN_DISCONNECTED);
    return ok;
}

static void emit_error(struct meao_turn *t, const char *code, const char *message)
{
    emit(t, meao_orch_error_frame(t->rid, code, message));
}

/* message_complete; shrunk when it would not fit one protocol line */
static void emit_complete(struct meao_turn *t)
{
    json_t *f =
        json_pack("{s:s, s:s, s:s%, s:O, s:{s:I, s:I}, s:O}", "type", "message_complete",
                  "requestId", t->rid, "content", t->content.p ? t->content.p : "", t->content.len,
                  "toolCalls", t->tool_calls, "usage", "inputTokens", (json_int_t)t->in_tokens,
                  "outputTokens", (json_int_t)t->out_tokens, "trustedTools", t->trusted);
    if (f && json_dumpb(f, NULL, 0, JSON_COMPACT) >= MEAO_ORCH_MAX_LINE) {
        size_t i, keep = meao_text_cut(t->content.p, t->content.len, MEAO_ORCH_MAX_CONTENT);
        json_t *c, *calls = json_array();
        json_array_foreach(t->tool_calls, i, c)
        {
            json_t *copy = json_copy(c);
            json_object_set_new(copy, "input", json_object());
            json_array_append_new(calls, copy);
        }
        json_object_set_new(f, "toolCalls", calls);
        json_object_set_new(f, "content", json_stringn(t->content.p, keep));
        json_object_set_new(f, "truncated", json_true());
        meao_log(MEAO_LOG_WARN, NULL, __func__, "reply over %d bytes: content and inputs cut",
                 MEAO_ORCH_MAX_LINE);
    }
    emit(t, f);
}

/* One line, at most ERROR_MSG_MAX bytes, no control characters. */
static void one_line(char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20)
            s[n] = ' ';
    s[meao_text_cut(s, n, ERROR_MSG_MAX)] = '\0';
}

/* --- the model sink ------------------------------------------------------------ */

static bool sink_text(void *ctx, const char *delta, size_t len)
{
    struct meao_turn *t = ctx;
    struct meao_buf clean = {0};
    bool ok = false;

    if (stopped(t))
        return false;
    if (len == 0)
        return true;
    if (!meao_text_clean(delta, len, &clean) || !meao_buf_append(&t->content, clean.p, clean.len) ||
        !meao_buf_append(&t->call_text, clean.p, clean.len))
        goto out;
    ok = emit(t, json_pack("{s:s, s:s, s:s%}", "type", "text_delta", "requestId", t->rid, "delta",
                           clean.p, clean.len));
out:
    meao_buf_free(&clean);
    return ok && !stopped(t);
}

/* Ids and names from a model go into frames and logs: only 1..128 of
 * [A-Za-z0-9_.:-] pass (what the real providers use). */
static bool safe_ident(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= TOOL_ID_MAX ||
            !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':'))
            return false;
    }
    return n > 0;
}

static bool sink_tool_call(void *ctx, const char *id, const char *name, json_t *input)
{
    struct meao_turn *t = ctx;
    char gen[32];
    json_t *call;

    if (stopped(t))
        return false;
    t->next_call_id++;
    if (!safe_ident(id)) {
        snprintf(gen, sizeof gen, "call_%u", t->next_call_id);
        id = gen;
    }
    /* an odd name is kept out of frames; the call then fails as unknown */
    call = json_pack("{s:s, s:s, s:o}", "id", id, "name", safe_ident(name) ? name : "invalid",
                     "input", json_is_object(input) ? json_deep_copy(input) : json_object());
    return call != NULL && json_array_append_new(t->call_tools, call) == 0;
}

static void sink_usage(void *ctx, int64_t input_tokens, int64_t output_tokens)
{
    struct meao_turn *t = ctx;
    if (input_tokens >= 0)
        t->call_in = input_tokens;
    if (output_tokens >= 0)
        t->call_out = output_tokens;
}

static bool sink_cancelled(void *ctx)
{
    return stopped(ctx);
}

/* --- tools --------------------------------------------------------------------- */

/* Ask the user; emits approval_request then approval_resolved. */
static void ask(struct meao_turn *t, const char *call_id, const char *name, const char *summary,
                enum meao_tool_policy policy, struct meao_approval_decision *d)
{
    char id[MEAO_APPROVAL_ID_LEN + 1], reason[96];
    json_t *request = meao_tools_approval_request(name, summary);
    struct meao_approval *a = NULL;
    struct meao_approval_spec spec = {
        .owner = t,
        .user_id = t->user_id,
        .correlation_id = t->rid,
        .session_id = t->session_id,
        .tool_call_id = call_id,
        .tool_name = name,
        .args_summary = summary,
        .request = request,
    };
    int64_t timeout_s = (t->eng->cfg->approval_timeout_ms + 999) / 1000;

    d->reason = MEAO_APPROVAL_DENIED;
    d->approved = d->trust_session = false;
    if (request == NULL || meao_approvals_open(t->eng->approvals, &spec, &a, id, NULL) != MEAO_OK) {
        json_decref(request);
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "out of memory opening an approval");
        return;
    }
    /* a stop that came before the approval existed did not deny it */
    if (stopped(t))
        meao_approvals_deny_owner(t->eng->approvals, t,
                                  meao_turn_stopped(t) == MEAO_TURN_CANCELLED
                                      ? MEAO_APPROVAL_DENIED
                                      : MEAO_APPROVAL_DISCONNECT);
    snprintf(reason, sizeof reason,
             policy == MEAO_TOOL_ALWAYS ? "%s always needs an approval" : "%s needs an approval",
             name);
    emit(t, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:s, s:s, s:I}", "type",
                      "approval_request", "requestId", id, "approvalId", id, "correlationId",
                      t->rid, "toolCallId", call_id, "toolName", name, "request", request, "reason",
                      reason, "argsSummary", summary, "timeout", (json_int_t)timeout_s));
    json_decref(request);
    meao_log(MEAO_LOG_INFO, NULL, "approval_open", "approval %s for tool %s", id, name);
    meao_approvals_wait(t->eng->approvals, a, d);
    meao_log(MEAO_LOG_INFO, NULL, "approval_decided", "approval %s: %s", id,
             meao_approvals_reason_name(d->reason));
    /* always-policy tools are never trusted, whatever the answer asked */
    if (policy == MEAO_TOOL_ALWAYS)
        d->trust_session = false;
    emit(t, json_pack("{s:s, s:s, s:s, s:b, s:s, s:b}", "type", "approval_resolved", "requestId",
                      t->rid, "approvalId", id, "approved", d->approved, "reason",
                      meao_approvals_reason_name(d->reason), "trustSession", d->trust_session));
}

/* Handle one tool call of the model: frames, approval, run, the result for
 * the model. */
static void tool_call(struct meao_turn *t, const json_t *call)
{
    const char *id = meao_json_str(call, "id"), *name = meao_json_str(call, "name");
    const json_t *input = json_object_get(call, "input");
    char summary[SUMMARY_LEN], why[200], msg[256];
    struct meao_tool_result res = {0};
    enum meao_tool_policy policy = policy_of(t, name);
    bool approved = true, ran = false;
    const char *output;
    json_t *record;
    size_t cut;
    int64_t t0;

    meao_tools_summary(name, input, summary, sizeof summary);
    if (!emit(t, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "type", "tool_call_start",
                           "requestId", t->rid, "id", id, "toolCallId", id, "name", name,
                           "toolName", name, "summary", summary)))
        return;
    record = json_pack("{s:s, s:s, s:O, s:b, s:b}", "id", id, "name", name, "input", input,
                       "success", 0, "approved", 0);
    if (record == NULL || json_array_append_new(t->tool_calls, record) != 0) {
        meao_turn_stop(t, MEAO_TURN_DISCONNECTED);
        return;
    }

    if (!meao_tools_known(name)) {
        snprintf(msg, sizeof msg, "unknown tool: %.100s", name);
        output = msg;
        approved = false;
    } else if (meao_tools_validate(name, input, why, sizeof why) != MEAO_OK) {
        snprintf(msg, sizeof msg, "invalid arguments: %s", why);
        output = msg;
        approved = false;
    } else if (policy == MEAO_TOOL_ALWAYS || (policy == MEAO_TOOL_ASK && !is_trusted(t, name))) {
        struct meao_approval_decision d;
        ask(t, id, name, summary, policy, &d);
        if (stopped(t))
            return;
        approved = d.approved;
        if (approved && d.trust_session && !trust(t, name)) {
            meao_turn_stop(t, MEAO_TURN_DISCONNECTED);
            return;
        }
        output =
            d.reason == MEAO_APPROVAL_TIMEOUT ? "denied: the approval timed out" : "denied by user";
    } else {
        output = "";
        if (policy == MEAO_TOOL_ASK) {
            char aid[MEAO_APPROVAL_ID_LEN + 1];
            meao_approvals_mint_id(aid);
            if (!emit(t, json_pack("{s:s, s:s, s:s, s:b, s:s, s:b}", "type", "approval_resolved",
                                   "requestId", t->rid, "approvalId", aid, "approved", 1, "reason",
                                   "trusted", "trustSession", 1)))
                return;
        }
    }
    json_object_set_new(record, "approved", json_boolean(approved && meao_tools_known(name)));

    if (approved && meao_tools_known(name)) {
        struct meao_tool_env env = {
            .work_dir = t->work_dir,
            .clock = t->eng->clock,
            .timeout_ms = t->eng->cfg->tool_timeout_ms,
            .max_output = (size_t)t->eng->cfg->tool_output_max_bytes,
            .cancel_fd = t->wake_fd,
        };
        enum meao_err e;
        if (stopped(t))
            return;
        t0 = meao_mono_ms(t->eng->clock);
        e = meao_tools_run(name, input, &env, &res);
        if (e == MEAO_E_CANCELLED || stopped(t)) {
            meao_tools_result_free(&res);
            return;
        }
        if (e != MEAO_OK) {
            output = "the tool could not run: out of memory";
        } else {
            output = res.output;
            ran = true;
        }
        meao_log(MEAO_LOG_INFO, NULL, "tool_run", "tool %s: %s in %lld ms", name,
                 ran && res.success ? "ok" : "failed",
                 (long long)(meao_mono_ms(t->eng->clock) - t0));
    }
    json_object_set_new(record, "success", json_boolean(ran && res.success));
    cut = meao_text_cut(output, strlen(output), RESULT_FRAME_MAX);
    if (emit(t, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:s%}", "type", "tool_call_result",
                          "requestId", t->rid, "id", id, "toolCallId", id, "name", name, "toolName",
                          name, "success", ran && res.success, "output", output, cut))) {
        json_t *m = json_pack("{s:s, s:s, s:s, s:s, s:b}", "role", "tool", "toolCallId", id, "name",
                              name, "content", output, "isError", !(ran && res.success));
        if (m == NULL || json_array_append_new(t->messages, m) != 0)
            meao_turn_stop(t, MEAO_TURN_DISCONNECTED);
    }
    meao_tools_result_free(&res);
}

/* --- the turn ------------------------------------------------------------------- */

static void provider_failed(struct meao_turn *t, enum meao_err e, char *err)
{
    char msg[ERROR_MSG_MAX + 8];
    switch (e) {
    case MEAO_E_PROVIDER:
        snprintf(msg, sizeof msg, "%s", err[0] ? err : "the model provider failed");
        one_line(msg);
        emit_error(t, "PROVIDER_ERROR", msg);
        break;
    case MEAO_E_TIMEOUT: emit_error(t, "GATEWAY_TIMEOUT", "the model provider timed out"); break;
    case MEAO_E_UNAVAILABLE:
        snprintf(msg, sizeof msg, "%s", err[0] ? err : "the model provider is unavailable");
        one_line(msg);
        emit_error(t, "PROVIDER_ERROR", msg);
        break;
    default: emit_error(t, "INTERNAL_ERROR", "internal error"); break;
    }
}

enum meao_err meao_turn_run(struct meao_turn *t)
{
    const struct meao_engine *eng = t->eng;
    struct meao_llm_sink sink = {
        .ctx = t,
        .text = sink_text,
        .tool_call = sink_tool_call,
        .usage = sink_usage,
        .cancelled = sink_cancelled,
    };
    int64_t max_rounds = eng->cfg->max_tool_iterations;
    enum meao_err e = MEAO_OK;
    char err[256];

    meao_log(MEAO_LOG_INFO, NULL, "turn_start", "session %s, user %s, %zu history entries",
             t->session_id, t->user_id, json_array_size(t->messages) - 1);
    for (int64_t round = 0;; round++) {
        bool last = round >= max_rounds;
        struct meao_llm_request lr = {
            .messages = t->messages,
            .tools = last ? eng->no_tools : eng->tools,
            .system = system_prompt,
        };
        json_t *assistant;
        size_t i;
        json_t *call;

        meao_buf_reset(&t->call_text);
        json_decref(t->call_tools);
        t->call_tools = json_array();
        t->call_in = t->call_out = 0;
        err[0] = '\0';
        if (t->call_tools == NULL) {
            e = MEAO_E_NOMEM;
            emit_error(t, "INTERNAL_ERROR", "internal error");
            goto out;
        }
        e = eng->provider->ops->complete(eng->provider, &lr, &sink, err, sizeof err);
        t->in_tokens += t->call_in;
        t->out_tokens += t->call_out;
        if (stopped(t))
            break;
        if (e != MEAO_OK) {
            meao_log(MEAO_LOG_WARN, NULL, "provider_error", "%s: %s", meao_strerror(e),
                     err[0] ? err : "-");
            provider_failed(t, e, err);
            goto out;
        }
        assistant = json_pack("{s:s, s:s%}", "role", "assistant", "content",
                              t->call_text.p ? t->call_text.p : "", t->call_text.len);
        if (assistant && json_array_size(t->call_tools) > 0)
            json_object_set(assistant, "toolCalls", t->call_tools);
        if (assistant == NULL || json_array_append_new(t->messages, assistant) != 0) {
            e = MEAO_E_NOMEM;
            emit_error(t, "INTERNAL_ERROR", "internal error");
            goto out;
        }
        if (json_array_size(t->call_tools) == 0)
            break;
        if (last) {
            meao_log(MEAO_LOG_WARN, NULL, "tool_rounds",
                     "the model still asked for tools after %lld rounds; ending the turn",
                     (long long)max_rounds);
            break;
        }
        json_array_foreach(t->call_tools, i, call)
        {
            tool_call(t, call);
            if (stopped(t))
                break;
        }
        if (stopped(t))
            break;
    }

    switch (meao_turn_stopped(t)) {
    case MEAO_TURN_RUNNING:
        emit_complete(t);
        e = meao_turn_stopped(t) == MEAO_TURN_RUNNING ? MEAO_OK : MEAO_E_UNAVAILABLE;
        break;
    case MEAO_TURN_CANCELLED:
        emit_error(t, "CANCELLED", "the turn was cancelled");
        e = MEAO_E_CANCELLED;
        break;
    case MEAO_TURN_SHUTDOWN:
        emit_error(t, "SHUTTING_DOWN", "the orchestrator is shutting down");
        e = MEAO_E_UNAVAILABLE;
        break;
    case MEAO_TURN_DISCONNECTED: e = MEAO_E_UNAVAILABLE; break;
    }
out:
    meao_log(MEAO_LOG_INFO, NULL, "turn_end",
             "%s after %lld ms: %zu tool call(s), %lld+%lld tokens",
             e == MEAO_OK ? "completed" : meao_strerror(e),
             (long long)(meao_mono_ms(eng->clock) - t->started_ms), json_array_size(t->tool_calls),
             (long long)t->in_tokens, (long long)t->out_tokens);
    return e;
}
