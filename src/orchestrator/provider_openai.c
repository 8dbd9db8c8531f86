/* The openai provider: Chat Completions (POST {base}/chat/completions) with
 * "stream": true, as served by OpenAI and by llama.cpp server, Ollama and
 * vLLM at their own base URLs (e.g. http://127.0.0.1:8080/v1).
 *
 * Request: {model, stream, stream_options:{include_usage:true}, max_tokens
 * (max_completion_tokens towards api.openai.com, whose reasoning models
 * refuse the older name), messages, tools?}. The system prompt is the first
 * message (role system); user text → {role:user, content}; assistant text
 * and toolCalls → {role:assistant, content (null when only tools),
 * tool_calls:[{id, type:function, function:{name, arguments: the input as a
 * JSON string}}]}; a tool result → {role:tool, tool_call_id, content}, its
 * content prefixed "Error: " when isError (the format has no error flag).
 * Tools become {type:function, function:{name, description, parameters}}.
 * The key goes in "Authorization: Bearer …" only, and only when set (local
 * servers need none).
 *
 * Stream: `data:` chunks {choices:[{delta:{content, tool_calls:[{index, id,
 * function:{name, arguments}}]}, finish_reason}], usage?}, ended by
 * `data: [DONE]`. Content → sink->text at once; tool call pieces are
 * assembled per index and each call goes to sink->tool_call when the choice
 * finishes (any finish_reason: some servers say "stop" after tool calls) or
 * at [DONE]; usage {prompt_tokens, completion_tokens} (the include_usage
 * chunk, or any chunk carrying it) → sink->usage; a chunk carrying "error"
 * → PROVIDER. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "orchestrator/provider.h"
#include "orchestrator/provider_http.h"

#define OPENAI_DEFAULT_BASE "https://api.openai.com/v1"

struct openai {
    char *url; /* {base}/chat/completions */
    char *model;
    char *key;         /* may be empty (local servers); wiped on destroy */
    char *auth_header; /* "Authorization: Bearer <key>", NULL without a key */
    const char *max_tokens_field;
    int64_t max_tokens;
    int64_t timeout_ms;
};

/* --- the request -------------------------------------------------------- */

static bool put(json_t *o, const char *k, json_t *v)
{
    return json_object_set_new(o, k, v) == 0;
}

static bool push(json_t *a, json_t *v)
{
    return json_array_append_new(a, v) == 0;
}

/* {"id", "type":"function", "function":{"name", "arguments"}}; NULL with
 * *why set when tc is malformed, NULL alone when memory ran out. */
static json_t *convert_tool_call(const json_t *tc, const char **why)
{
    const char *id = meao_json_str(tc, "id"), *name = meao_json_str(tc, "name");
    const json_t *input = json_object_get(tc, "input");
    json_t *o = NULL, *fn = NULL;
    char *args = NULL;

    if (id == NULL || name == NULL || (input && !json_is_object(input))) {
        *why = "has a tool call without id, name or object input";
        return NULL;
    }
    args = input ? json_dumps(input, JSON_COMPACT) : strdup("{}");
    o = json_object();
    fn = json_object();
    if (args == NULL || o == NULL || fn == NULL || !put(fn, "name", json_string(name)) ||
        !put(fn, "arguments", json_string(args)) || !put(o, "id", json_string(id)) ||
        !put(o, "type", json_string("function")))
        goto fail;
    if (!put(o, "function", fn)) {
        fn = NULL;
        goto fail;
    }
    free(args);
    return o;
fail:
    free(args);
    json_decref(fn);
    json_decref(o);
    return NULL;
}

/* One neutral message → one Chat Completions message; NULL with *why set
 * when malformed, NULL alone when memory ran out. */
static json_t *convert(const json_t *m, const char **why)
{
    const char *role = meao_json_str(m, "role");
    const json_t *content = json_object_get(m, "content"), *tcs, *tc;
    const char *text = json_is_string(content) ? json_string_value(content) : "";
    json_t *o = json_object(), *arr = NULL;
    char *errtext = NULL;
    size_t i;

    *why = NULL;
    if (o == NULL)
        return NULL;
    if (role == NULL || (content && !json_is_string(content) && !json_is_null(content))) {
        *why = "needs a role and text content";
        goto fail;
    }
    if (strcmp(role, "user") == 0) {
        if (!put(o, "role", json_string("user")) || !put(o, "content", json_string(text)))
            goto fail;
    } else if (strcmp(role, "assistant") == 0) {
        tcs = json_object_get(m, "toolCalls");
        if (!put(o, "role", json_string("assistant")) ||
            !put(o, "content",
                 text[0] || json_array_size(tcs) == 0 ? json_string(text) : json_null()))
            goto fail;
        if (json_array_size(tcs) > 0) {
            if ((arr = json_array()) == NULL)
                goto fail;
            json_array_foreach(tcs, i, tc)
            {
                json_t *c = convert_tool_call(tc, why);
                if (c == NULL || !push(arr, c))
                    goto fail;
            }
            if (!put(o, "tool_calls", arr)) {
                arr = NULL;
                goto fail;
            }
            arr = NULL;
        }
    } else if (strcmp(role, "tool") == 0) {
        const char *id = meao_json_str(m, "toolCallId");
        if (id == NULL) {
            *why = "is a tool result without toolCallId";
            goto fail;
        }
        if (json_is_true(json_object_get(m, "isError"))) {
            size_t n = strlen("Error: ") + strlen(text) + 1;
            if ((errtext = malloc(n)) == NULL)
                goto fail;
            snprintf(errtext, n, "Error: %s", text);
            text = errtext;
        }
        if (!put(o, "role", json_string("tool")) || !put(o, "tool_call_id", json_string(id)) ||
            !put(o, "content", json_string(text)))
            goto fail;
    } else {
        *why = "has an unknown role";
        goto fail;
    }
    free(errtext);
    return o;
fail:
    free(errtext);
    json_decref(arr);
    json_decref(o);
    return NULL;
}

static json_t *convert_tool(const json_t *t)
{
    const char *name = meao_json_str(t, "name"), *desc = meao_json_str(t, "description");
    const json_t *schema = json_object_get(t, "inputSchema");
    json_t *o = NULL, *fn = NULL;

    if (name == NULL || (schema && !json_is_object(schema)))
        return NULL;
    o = json_object();
    fn = json_object();
    if (o == NULL || fn == NULL || !put(fn, "name", json_string(name)) ||
        (desc && !put(fn, "description", json_string(desc))) ||
        !put(fn, "parameters",
             schema ? json_deep_copy(schema)
                    : json_pack("{s:s,s:{}}", "type", "object", "properties")) ||
        !put(o, "type", json_string("function")))
        goto fail;
    if (!put(o, "function", fn)) {
        fn = NULL;
        goto fail;
    }
    return o;
fail:
    json_decref(fn);
    json_decref(o);
    return NULL;
}

/* The request body, compact JSON; caller frees *out. */
static enum meao_err build_body(const struct openai *a, const struct meao_llm_request *req,
                                char **out, char *err, size_t errlen)
{
    json_t *root = json_object(), *msgs = json_array(), *tools = NULL, *sys;
    const json_t *m, *t;
    const char *why = NULL;
    enum meao_err e = MEAO_E_NOMEM;
    size_t i;

    *out = NULL;
    if (root == NULL || msgs == NULL)
        goto out;
    if (!json_is_array(req->messages) || json_array_size(req->messages) == 0) {
        e = MEAO_E_PROVIDER;
        snprintf(err, errlen, "openai: cannot encode the request: no messages");
        goto out;
    }
    if (req->system && req->system[0]) {
        sys = json_pack("{s:s,s:s}", "role", "system", "content", req->system);
        if (sys == NULL) {
            e = MEAO_E_PROVIDER;
            snprintf(err, errlen, "openai: cannot encode the request: system prompt is not UTF-8");
            goto out;
        }
        if (!push(msgs, sys))
            goto out;
    }
    json_array_foreach(req->messages, i, m)
    {
        json_t *c = json_is_object(m) ? convert(m, &why) : NULL;
        if (c == NULL && (why || !json_is_object(m))) {
            e = MEAO_E_PROVIDER;
            snprintf(err, errlen, "openai: cannot encode the request: message %zu %s", i,
                     why ? why : "is not an object");
            goto out;
        }
        if (c == NULL || !push(msgs, c))
            goto out;
    }
    if (json_array_size(req->tools) > 0) {
        if ((tools = json_array()) == NULL)
            goto out;
        json_array_foreach(req->tools, i, t)
        {
            json_t *o = convert_tool(t);
            if (o == NULL) {
                e = MEAO_E_PROVIDER;
                snprintf(err, errlen,
                         "openai: cannot encode the request: tool %zu needs a name "
                         "and an object inputSchema",
                         i);
                goto out;
            }
            if (!push(tools, o))
                goto out;
        }
    }
    if (!put(root, "model", json_string(a->model)) || !put(root, "stream", json_true()) ||
        !put(root, "stream_options", json_pack("{s:b}", "include_usage", 1)) ||
        !put(root, a->max_tokens_field, json_integer(a->max_tokens)))
        goto out;
    e = put(root, "messages", msgs) ? MEAO_OK : MEAO_E_NOMEM;
    msgs = NULL;
    if (e == MEAO_OK && tools) {
        e = put(root, "tools", tools) ? MEAO_OK : MEAO_E_NOMEM;
        tools = NULL;
    }
    if (e != MEAO_OK)
        goto out;
    *out = json_dumps(root, JSON_COMPACT);
    e = *out ? MEAO_OK : MEAO_E_NOMEM;
out:
    if (e == MEAO_E_NOMEM)
        snprintf(err, errlen, "openai: out of memory");
    json_decref(msgs);
    json_decref(tools);
    json_decref(root);
    return e;
}

/* --- the stream --------------------------------------------------------- */

struct call {
    bool used, delivered;
    char *id, *name;
    struct meao_buf args;
};

struct stream {
    const struct meao_llm_sink *sink;
    struct call *calls; /* MEAO_PROVIDER_MAX_TOOL_CALLS slots, by index; allocated on demand */
    int64_t in_tokens, out_tokens;
    bool done; /* [DONE] seen */
};

static void stream_free(struct stream *st)
{
    if (st->calls == NULL)
        return;
    for (size_t i = 0; i < MEAO_PROVIDER_MAX_TOOL_CALLS; i++) {
        free(st->calls[i].id);
        free(st->calls[i].name);
        meao_buf_free(&st->calls[i].args);
    }
    free(st->calls);
}

/* Hand every assembled, undelivered tool call to the sink, in index order. */
static enum meao_err deliver(struct stream *st, char *err, size_t errlen)
{
    enum meao_err e = MEAO_OK;
    json_t *input = NULL;
    char idbuf[32];

    for (size_t i = 0; st->calls && i < MEAO_PROVIDER_MAX_TOOL_CALLS && e == MEAO_OK; i++) {
        struct call *c = &st->calls[i];
        const char *id = c->id;
        if (!c->used || c->delivered)
            continue;
        c->delivered = true;
        if (c->name == NULL) {
            snprintf(err, errlen, "openai: tool call %zu has no function name", i);
            e = MEAO_E_PROVIDER;
            break;
        }
        if (c->args.len == 0) {
            input = json_object();
        } else if (meao_json_parse(c->args.p, c->args.len, MEAO_PROVIDER_MAX_TOOL_INPUT,
                                   MEAO_PROVIDER_JSON_DEPTH, &input, NULL, 0) != MEAO_OK ||
                   !json_is_object(input)) {
            snprintf(err, errlen, "openai: tool call %s: its arguments are not a valid JSON object",
                     c->name);
            e = MEAO_E_PROVIDER;
            break;
        }
        if (input == NULL) {
            snprintf(err, errlen, "openai: out of memory");
            e = MEAO_E_NOMEM;
            break;
        }
        if (id == NULL) {
            /* some local servers leave the id out: make one up */
            snprintf(idbuf, sizeof idbuf, "call_%zu", i);
            id = idbuf;
        }
        if (st->sink->tool_call && !st->sink->tool_call(st->sink->ctx, id, c->name, input)) {
            snprintf(err, errlen, "openai: cancelled");
            e = MEAO_E_CANCELLED;
        }
        json_decref(input);
        input = NULL;
        meao_buf_free(&c->args);
    }
    json_decref(input);
    return e;
}

static enum meao_err tool_piece(struct stream *st, const json_t *tc, size_t pos, char *err,
                                size_t errlen)
{
    const json_t *idx = json_object_get(tc, "index"), *fn = json_object_get(tc, "function"), *args;
    json_int_t i = json_is_integer(idx) ? json_integer_value(idx) : (json_int_t)pos;
    const char *id = meao_json_str(tc, "id"), *name = meao_json_str(fn, "name");
    const char *piece = NULL;
    char *dumped = NULL;
    size_t plen = 0;
    struct call *c;
    enum meao_err e = MEAO_E_NOMEM;

    if (i < 0 || i >= MEAO_PROVIDER_MAX_TOOL_CALLS) {
        snprintf(err, errlen, "openai: tool call index %lld out of range", (long long)i);
        return MEAO_E_PROVIDER;
    }
    if (st->calls == NULL &&
        (st->calls = calloc(MEAO_PROVIDER_MAX_TOOL_CALLS, sizeof *st->calls)) == NULL)
        goto out;
    c = &st->calls[i];
    if (c->delivered) {
        e = MEAO_E_PROVIDER;
        snprintf(err, errlen, "openai: tool call %lld continued after the choice finished",
                 (long long)i);
        goto out;
    }
    c->used = true;
    if (id && id[0] && c->id == NULL && (c->id = strdup(id)) == NULL)
        goto out;
    if (name && name[0] && c->name == NULL && (c->name = strdup(name)) == NULL)
        goto out;
    args = json_object_get(fn, "arguments");
    if (json_is_string(args)) {
        piece = json_string_value(args);
        plen = json_string_length(args);
    } else if (json_is_object(args)) {
        /* a whole object instead of a string: a few servers do that */
        if ((dumped = json_dumps(args, JSON_COMPACT)) == NULL)
            goto out;
        piece = dumped;
        plen = strlen(dumped);
    }
    if (c->args.len + plen > MEAO_PROVIDER_MAX_TOOL_INPUT) {
        e = MEAO_E_PROVIDER;
        snprintf(err, errlen, "openai: tool call arguments exceed %d bytes",
                 MEAO_PROVIDER_MAX_TOOL_INPUT);
        goto out;
    }
    if (plen > 0 && !meao_buf_append(&c->args, piece, plen))
        goto out;
    e = MEAO_OK;
out:
    if (e == MEAO_E_NOMEM)
        snprintf(err, errlen, "openai: out of memory");
    free(dumped);
    return e;
}

static enum meao_err on_choice(struct stream *st, const json_t *ch, char *err, size_t errlen)
{
    const json_t *idx = json_object_get(ch, "index"), *delta = json_object_get(ch, "delta"), *tc;
    const json_t *content = json_object_get(delta, "content");
    enum meao_err e;
    size_t i;

    if (json_is_integer(idx) && json_integer_value(idx) != 0)
        return MEAO_OK; /* we ask for one choice */
    if (json_is_string(content) && json_string_length(content) > 0 && st->sink->text &&
        !st->sink->text(st->sink->ctx, json_string_value(content), json_string_length(content))) {
        snprintf(err, errlen, "openai: cancelled");
        return MEAO_E_CANCELLED;
    }
    json_array_foreach(json_object_get(delta, "tool_calls"), i, tc)
    {
        if ((e = tool_piece(st, tc, i, err, errlen)) != MEAO_OK)
            return e;
    }
    if (json_is_string(json_object_get(ch, "finish_reason")))
        return deliver(st, err, errlen);
    return MEAO_OK;
}

static bool is_done(const struct meao_sse_event *ev)
{
    const char *p = ev->data, *end = ev->data + ev->data_len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return end - p == 6 && memcmp(p, "[DONE]", 6) == 0;
}

static enum meao_err on_event(void *ctx, const struct meao_sse_event *ev, bool *finished, char *err,
                              size_t errlen)
{
    struct stream *st = ctx;
    json_t *v = NULL, *u, *x;
    const json_t *ch;
    enum meao_err e = MEAO_OK;
    size_t i;

    if (is_done(ev)) {
        e = deliver(st, err, errlen);
        st->done = true;
        *finished = true;
        return e;
    }
    if (meao_json_parse(ev->data, ev->data_len, MEAO_PROVIDER_HTTP_MAX_EVENT,
                        MEAO_PROVIDER_JSON_DEPTH, &v, NULL, 0) != MEAO_OK ||
        !json_is_object(v)) {
        snprintf(err, errlen, "openai: the stream sent invalid JSON");
        e = MEAO_E_PROVIDER;
        goto out;
    }
    if ((x = json_object_get(v, "error")) != NULL && !json_is_null(x)) {
        const char *label = meao_json_str(x, "code"), *msg = meao_json_str(x, "message");
        char l[64] = "", m[MEAO_PROVIDER_HTTP_MAX_DETAIL + 8] = "";
        if (label == NULL)
            label = meao_json_str(x, "type");
        if (json_is_string(x))
            msg = json_string_value(x);
        if (label)
            meao_provider_http_scrub(label, strlen(label), NULL, 48, l, sizeof l);
        if (msg)
            meao_provider_http_scrub(msg, strlen(msg), NULL, MEAO_PROVIDER_HTTP_MAX_DETAIL, m,
                                     sizeof m);
        snprintf(err, errlen, "openai: stream error%s%s%s%s", l[0] ? " " : "", l, m[0] ? ": " : "",
                 m);
        e = MEAO_E_PROVIDER;
        goto out;
    }
    json_array_foreach(json_object_get(v, "choices"), i, ch)
    {
        if ((e = on_choice(st, ch, err, errlen)) != MEAO_OK)
            goto out;
    }
    u = json_object_get(v, "usage");
    if (json_is_object(u)) {
        bool any = false;
        if (json_is_integer(x = json_object_get(u, "prompt_tokens"))) {
            st->in_tokens = json_integer_value(x);
            any = true;
        }
        if (json_is_integer(x = json_object_get(u, "completion_tokens"))) {
            st->out_tokens = json_integer_value(x);
            any = true;
        }
        if (any && st->sink->usage)
            st->sink->usage(st->sink->ctx, st->in_tokens, st->out_tokens);
    }
out:
    json_decref(v);
    return e;
}

/* --- the provider ------------------------------------------------------- */

static enum meao_err complete(struct meao_provider *p, const struct meao_llm_request *req,
                              const struct meao_llm_sink *sink, char *err, size_t errlen)
{
    const struct openai *a = p->state;
    struct stream st = {.sink = sink};
    struct meao_provider_http_call call;
    const char *headers[2] = {NULL, NULL};
    char *body = NULL;
    char local[8];
    enum meao_err e;

    if (err == NULL || errlen == 0) {
        err = local;
        errlen = sizeof local;
    }
    err[0] = '\0';
    e = build_body(a, req, &body, err, errlen);
    if (e != MEAO_OK)
        goto out;
    headers[0] = a->auth_header;
    call = (struct meao_provider_http_call){
        .provider = "openai",
        .url = a->url,
        .headers = headers,
        .secret = a->key,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = a->timeout_ms,
        .stall_ms = MEAO_PROVIDER_HTTP_STALL_MS,
        .sink = sink,
        .on_event = on_event,
        .ctx = &st,
    };
    e = meao_provider_http_post_sse(&call, NULL, err, errlen);
    if (e == MEAO_OK && !st.done) {
        e = MEAO_E_PROVIDER;
        snprintf(err, errlen, "openai: the stream ended before [DONE]");
    }
out:
    if (e != MEAO_OK && e != MEAO_E_CANCELLED)
        meao_log(MEAO_LOG_WARN, NULL, __func__, "%s", err);
    stream_free(&st);
    free(body);
    return e;
}

static void wipe_free(char *s)
{
    if (s == NULL)
        return;
    sodium_memzero(s, strlen(s));
    free(s);
}

/* Frees the state and p itself (the constructor allocated both). */
static void destroy(struct meao_provider *p)
{
    struct openai *a;
    if (p == NULL)
        return;
    a = p->state;
    if (a) {
        free(a->url);
        free(a->model);
        wipe_free(a->key);
        wipe_free(a->auth_header);
        free(a);
    }
    free(p);
}

static const struct meao_provider_ops openai_ops = {
    .name = "openai",
    .complete = complete,
    .destroy = destroy,
};

enum meao_err meao_provider_openai_create(const struct meao_config *cfg, struct meao_provider **out,
                                          char *err, size_t errlen)
{
    const char *base = cfg->provider_base_url && cfg->provider_base_url[0] ? cfg->provider_base_url
                                                                           : OPENAI_DEFAULT_BASE;
    const char *key = cfg->provider_api_key ? cfg->provider_api_key : "";
    bool public_api =
        strncmp(base, "https://api.openai.com/", strlen("https://api.openai.com/")) == 0 ||
        strcmp(base, "https://api.openai.com") == 0;
    struct meao_provider *p = NULL;
    struct openai *a = NULL;
    enum meao_err e;
    char local[8];

    *out = NULL;
    if (err == NULL || errlen == 0) {
        err = local;
        errlen = sizeof local;
    }
    e = meao_provider_http_check_base_url("openai", base, err, errlen);
    if (e != MEAO_OK)
        goto fail;
    e = MEAO_E_INVALID_PARAMETER;
    if (cfg->provider_model == NULL || cfg->provider_model[0] == '\0') {
        snprintf(err, errlen, "openai: provider_model is empty (name the model to use)");
        goto fail;
    }
    if (key[0] == '\0' && public_api) {
        snprintf(err, errlen,
                 "openai: provider_api_key is empty (set it, or MEAO_PROVIDER_API_KEY)");
        goto fail;
    }
    for (const char *k = key; *k; k++) {
        if ((unsigned char)*k < 0x21 || *k == 0x7F) {
            snprintf(err, errlen, "openai: provider_api_key contains a space or control character");
            goto fail;
        }
    }
    e = MEAO_E_NOMEM;
    p = calloc(1, sizeof *p);
    a = calloc(1, sizeof *a);
    if (p == NULL || a == NULL)
        goto nomem;
    p->ops = &openai_ops;
    p->cfg = cfg;
    p->state = a;
    a->max_tokens = cfg->provider_max_tokens;
    a->timeout_ms = cfg->provider_timeout_ms;
    a->max_tokens_field = public_api ? "max_completion_tokens" : "max_tokens";
    a->url = meao_provider_http_join(base, "/chat/completions");
    a->model = strdup(cfg->provider_model);
    a->key = strdup(key);
    if (a->url == NULL || a->model == NULL || a->key == NULL)
        goto nomem;
    if (key[0]) {
        size_t n = strlen("Authorization: Bearer ") + strlen(key) + 1;
        if ((a->auth_header = malloc(n)) == NULL)
            goto nomem;
        snprintf(a->auth_header, n, "Authorization: Bearer %s", key);
    }
    *out = p;
    return MEAO_OK;
nomem:
    snprintf(err, errlen, "openai: out of memory");
    if (p == NULL)
        free(a);
    destroy(p);
fail:
    return e;
}
