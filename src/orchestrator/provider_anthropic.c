/* The anthropic provider: the Messages API (POST {base}/v1/messages) with
 * "stream": true.
 *
 * Request: {model, max_tokens, stream, system?, messages, tools?}. Neutral
 * messages become content-block arrays: user text → a text block; assistant
 * text and toolCalls → text and tool_use {id, name, input} blocks; a tool
 * result → a tool_result {tool_use_id, content, is_error} block in a user
 * message. Consecutive messages of one role (several tool results, or tool
 * results then user text) merge into one message, as the API wants. Tools
 * become {name, description, input_schema}. Headers: x-api-key and
 * anthropic-version; the key travels in that header only.
 *
 * Stream: message_start (usage.input_tokens, plus cache reads/writes),
 * content_block_start (text, or tool_use with id and name),
 * content_block_delta (text_delta → sink->text at once; input_json_delta →
 * appended to that block's input), content_block_stop (a tool_use block's
 * input is parsed and handed to sink->tool_call), message_delta
 * (usage.output_tokens), message_stop (the end), ping, error (→ PROVIDER).
 * Unknown events and block types are ignored, as the API's versioning
 * policy asks. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "orchestrator/provider.h"
#include "orchestrator/provider_http.h"

#define ANTHROPIC_DEFAULT_BASE "https://api.anthropic.com"
#define ANTHROPIC_VERSION      "anthropic-version: 2023-06-01"

struct anthropic {
    char *url; /* {base}/v1/messages */
    char *model;
    char *key;        /* may be empty (a local proxy); wiped on destroy */
    char *key_header; /* "x-api-key: <key>", NULL without a key */
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

static json_t *text_block(const char *text)
{
    json_t *b = json_object();
    if (b && put(b, "type", json_string("text")) && put(b, "text", json_string(text)))
        return b;
    json_decref(b);
    return NULL;
}

/* Append blocks (stolen) as a message of role, merging into the previous
 * message when it has the same role. */
static bool add_message(json_t *msgs, const char *role, json_t *blocks)
{
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1), *m;
    bool ok;
    if (last && strcmp(meao_json_str(last, "role"), role) == 0) {
        ok = json_array_extend(json_object_get(last, "content"), blocks) == 0;
        json_decref(blocks);
        return ok;
    }
    /* put() and push() steal their value even when they fail */
    m = json_object();
    if (m == NULL || !put(m, "role", json_string(role))) {
        json_decref(m);
        json_decref(blocks);
        return false;
    }
    if (!put(m, "content", blocks)) {
        json_decref(m);
        return false;
    }
    return push(msgs, m);
}

/* One neutral message → content blocks (a new reference) and the role to
 * send them as. NULL with *why set when the message is malformed, NULL
 * alone when memory ran out. */
static json_t *convert(const json_t *m, const char **role_out, const char **why)
{
    const char *role = meao_json_str(m, "role");
    const json_t *content = json_object_get(m, "content");
    const char *text = json_is_string(content) ? json_string_value(content) : "";
    json_t *blocks = json_array(), *b = NULL;
    size_t i;
    const json_t *tc;

    *why = NULL;
    if (blocks == NULL)
        return NULL;
    if (role == NULL || (content && !json_is_string(content) && !json_is_null(content))) {
        *why = "needs a role and text content";
        goto fail;
    }
    if (strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0) {
        *role_out = role;
        if (text[0] && !push(blocks, text_block(text)))
            goto fail;
        if (strcmp(role, "user") == 0)
            return blocks;
        json_array_foreach(json_object_get(m, "toolCalls"), i, tc)
        {
            const char *id = meao_json_str(tc, "id"), *name = meao_json_str(tc, "name");
            const json_t *input = json_object_get(tc, "input");
            if (id == NULL || name == NULL || (input && !json_is_object(input))) {
                *why = "has a tool call without id, name or object input";
                goto fail;
            }
            b = json_object();
            if (b == NULL || !put(b, "type", json_string("tool_use")) ||
                !put(b, "id", json_string(id)) || !put(b, "name", json_string(name)) ||
                !put(b, "input", input ? json_deep_copy(input) : json_object())) {
                json_decref(b);
                goto fail;
            }
            if (!push(blocks, b)) /* steals b, even when it fails */
                goto fail;
        }
        return blocks;
    }
    if (strcmp(role, "tool") == 0) {
        const char *id = meao_json_str(m, "toolCallId");
        *role_out = "user";
        if (id == NULL) {
            *why = "is a tool result without toolCallId";
            goto fail;
        }
        /* content is optional; an empty one is left out rather than sent */
        b = json_object();
        if (b == NULL || !put(b, "type", json_string("tool_result")) ||
            !put(b, "tool_use_id", json_string(id)) ||
            (text[0] && !put(b, "content", json_string(text))) ||
            !put(b, "is_error", json_boolean(json_is_true(json_object_get(m, "isError"))))) {
            json_decref(b);
            goto fail;
        }
        if (!push(blocks, b))
            goto fail;
        return blocks;
    }
    *why = "has an unknown role";
    goto fail;
fail:
    json_decref(blocks);
    return NULL;
}

static json_t *convert_tool(const json_t *t)
{
    const char *name = meao_json_str(t, "name"), *desc = meao_json_str(t, "description");
    const json_t *schema = json_object_get(t, "inputSchema");
    json_t *o;

    if (name == NULL || (schema && !json_is_object(schema)))
        return NULL;
    o = json_object();
    if (o == NULL || !put(o, "name", json_string(name)) ||
        (desc && !put(o, "description", json_string(desc))) ||
        !put(o, "input_schema",
             schema ? json_deep_copy(schema)
                    : json_pack("{s:s,s:{}}", "type", "object", "properties"))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The request body, compact JSON; caller frees *out. */
static enum meao_err build_body(const struct anthropic *a, const struct meao_llm_request *req,
                                char **out, char *err, size_t errlen)
{
    json_t *root = json_object(), *msgs = json_array(), *tools = NULL, *blocks;
    const json_t *m, *t;
    const char *role = NULL, *why = NULL;
    enum meao_err e = MEAO_E_NOMEM;
    size_t i;

    *out = NULL;
    if (root == NULL || msgs == NULL)
        goto out;
    if (!json_is_array(req->messages) || json_array_size(req->messages) == 0) {
        e = MEAO_E_PROVIDER;
        snprintf(err, errlen, "anthropic: cannot encode the request: no messages");
        goto out;
    }
    json_array_foreach(req->messages, i, m)
    {
        blocks = json_is_object(m) ? convert(m, &role, &why) : NULL;
        if (blocks == NULL && (why || !json_is_object(m))) {
            e = MEAO_E_PROVIDER;
            snprintf(err, errlen, "anthropic: cannot encode the request: message %zu %s", i,
                     why ? why : "is not an object");
            goto out;
        }
        if (blocks == NULL)
            goto out;
        if (json_array_size(blocks) == 0) {
            json_decref(blocks); /* an empty message: nothing to say */
            continue;
        }
        if (!add_message(msgs, role, blocks))
            goto out;
    }
    if (json_array_size(req->tools) > 0) {
        tools = json_array();
        if (tools == NULL)
            goto out;
        json_array_foreach(req->tools, i, t)
        {
            json_t *o = convert_tool(t);
            if (o == NULL) {
                e = MEAO_E_PROVIDER;
                snprintf(err, errlen,
                         "anthropic: cannot encode the request: tool %zu needs a "
                         "name and an object inputSchema",
                         i);
                goto out;
            }
            if (!push(tools, o))
                goto out;
        }
    }
    if (!put(root, "model", json_string(a->model)) ||
        !put(root, "max_tokens", json_integer(a->max_tokens)) || !put(root, "stream", json_true()))
        goto out;
    if (req->system && req->system[0] && !put(root, "system", json_string(req->system))) {
        e = MEAO_E_PROVIDER;
        snprintf(err, errlen, "anthropic: cannot encode the request: system prompt is not UTF-8");
        goto out;
    }
    if (!put(root, "messages", msgs)) {
        msgs = NULL;
        goto out;
    }
    msgs = NULL;
    if (tools) {
        e = put(root, "tools", tools) ? MEAO_OK : MEAO_E_NOMEM;
        tools = NULL;
        if (e != MEAO_OK)
            goto out;
    }
    *out = json_dumps(root, JSON_COMPACT);
    e = *out ? MEAO_OK : MEAO_E_NOMEM;
out:
    if (e == MEAO_E_NOMEM)
        snprintf(err, errlen, "anthropic: out of memory");
    json_decref(msgs);
    json_decref(tools);
    json_decref(root);
    return e;
}

/* --- the stream --------------------------------------------------------- */

enum block_kind { BLOCK_TEXT, BLOCK_TOOL, BLOCK_OTHER };

struct block {
    json_int_t index;
    enum block_kind kind;
    bool open;
    char *id, *name;
    json_t *initial;       /* a tool_use block's input as started, used when no delta came */
    struct meao_buf input; /* input_json_delta pieces */
};

struct stream {
    const struct meao_llm_sink *sink;
    struct block *blocks;
    size_t nblocks;
    int64_t in_tokens, out_tokens;
    bool stopped; /* message_stop seen */
};

static void stream_free(struct stream *st)
{
    for (size_t i = 0; i < st->nblocks; i++) {
        free(st->blocks[i].id);
        free(st->blocks[i].name);
        json_decref(st->blocks[i].initial);
        meao_buf_free(&st->blocks[i].input);
    }
    free(st->blocks);
}

static struct block *find_block(struct stream *st, json_int_t index)
{
    for (size_t i = 0; i < st->nblocks; i++)
        if (st->blocks[i].index == index)
            return &st->blocks[i];
    return NULL;
}

static void take_usage(struct stream *st, const json_t *u)
{
    static const char *const in_keys[] = {"input_tokens", "cache_creation_input_tokens",
                                          "cache_read_input_tokens"};
    int64_t in = 0;
    bool any_in = false, any = false;
    json_t *v;

    if (!json_is_object(u))
        return;
    for (size_t i = 0; i < sizeof in_keys / sizeof in_keys[0]; i++) {
        if (json_is_integer(v = json_object_get(u, in_keys[i]))) {
            in += json_integer_value(v);
            any_in = true;
        }
    }
    if (any_in) {
        st->in_tokens = in;
        any = true;
    }
    if (json_is_integer(v = json_object_get(u, "output_tokens"))) {
        st->out_tokens = json_integer_value(v);
        any = true;
    }
    if (any && st->sink->usage)
        st->sink->usage(st->sink->ctx, st->in_tokens, st->out_tokens);
}

static enum meao_err block_start(struct stream *st, const json_t *v, char *err, size_t errlen)
{
    const json_t *cb = json_object_get(v, "content_block"), *idx = json_object_get(v, "index");
    const char *type = meao_json_str(cb, "type");
    struct block *b, *nb;
    enum meao_err e = MEAO_E_PROVIDER;

    if (!json_is_integer(idx) || type == NULL) {
        snprintf(err, errlen, "anthropic: content_block_start without index or type");
        goto out;
    }
    if (find_block(st, json_integer_value(idx)) != NULL) {
        snprintf(err, errlen, "anthropic: content block %lld started twice",
                 (long long)json_integer_value(idx));
        goto out;
    }
    if (st->nblocks >= MEAO_PROVIDER_MAX_TOOL_CALLS) {
        snprintf(err, errlen, "anthropic: more than %d content blocks",
                 MEAO_PROVIDER_MAX_TOOL_CALLS);
        goto out;
    }
    e = MEAO_E_NOMEM;
    nb = realloc(st->blocks, (st->nblocks + 1) * sizeof *nb);
    if (nb == NULL)
        goto out;
    st->blocks = nb;
    b = &st->blocks[st->nblocks++];
    memset(b, 0, sizeof *b);
    b->index = json_integer_value(idx);
    b->open = true;
    if (strcmp(type, "text") == 0) {
        const char *text = meao_json_str(cb, "text");
        b->kind = BLOCK_TEXT;
        if (text && text[0] && st->sink->text &&
            !st->sink->text(st->sink->ctx, text, strlen(text))) {
            e = MEAO_E_CANCELLED;
            snprintf(err, errlen, "anthropic: cancelled");
            goto out;
        }
    } else if (strcmp(type, "tool_use") == 0) {
        const char *id = meao_json_str(cb, "id"), *name = meao_json_str(cb, "name");
        const json_t *input = json_object_get(cb, "input");
        b->kind = BLOCK_TOOL;
        if (id == NULL || name == NULL || id[0] == '\0' || name[0] == '\0') {
            e = MEAO_E_PROVIDER;
            snprintf(err, errlen, "anthropic: tool_use block without id or name");
            goto out;
        }
        if ((b->id = strdup(id)) == NULL || (b->name = strdup(name)) == NULL)
            goto out;
        if (json_is_object(input) && json_object_size(input) > 0 &&
            (b->initial = json_deep_copy(input)) == NULL)
            goto out;
    } else {
        b->kind = BLOCK_OTHER; /* thinking, server tools…: not ours to show */
    }
    e = MEAO_OK;
out:
    if (e == MEAO_E_NOMEM)
        snprintf(err, errlen, "anthropic: out of memory");
    return e;
}

static enum meao_err block_delta(struct stream *st, const json_t *v, char *err, size_t errlen)
{
    const json_t *d = json_object_get(v, "delta"), *idx = json_object_get(v, "index");
    const char *type = meao_json_str(d, "type");
    struct block *b = json_is_integer(idx) ? find_block(st, json_integer_value(idx)) : NULL;

    if (b == NULL || !b->open || type == NULL) {
        snprintf(err, errlen, "anthropic: content_block_delta for no open block");
        return MEAO_E_PROVIDER;
    }
    if (strcmp(type, "text_delta") == 0) {
        const json_t *t = json_object_get(d, "text");
        if (!json_is_string(t) || b->kind != BLOCK_TEXT) {
            snprintf(err, errlen, "anthropic: malformed text_delta");
            return MEAO_E_PROVIDER;
        }
        if (json_string_length(t) > 0 && st->sink->text &&
            !st->sink->text(st->sink->ctx, json_string_value(t), json_string_length(t))) {
            snprintf(err, errlen, "anthropic: cancelled");
            return MEAO_E_CANCELLED;
        }
    } else if (strcmp(type, "input_json_delta") == 0) {
        const json_t *pj = json_object_get(d, "partial_json");
        if (!json_is_string(pj) || b->kind != BLOCK_TOOL) {
            snprintf(err, errlen, "anthropic: malformed input_json_delta");
            return MEAO_E_PROVIDER;
        }
        if (b->input.len + json_string_length(pj) > MEAO_PROVIDER_MAX_TOOL_INPUT) {
            snprintf(err, errlen, "anthropic: tool call input exceeds %d bytes",
                     MEAO_PROVIDER_MAX_TOOL_INPUT);
            return MEAO_E_PROVIDER;
        }
        if (!meao_buf_append(&b->input, json_string_value(pj), json_string_length(pj))) {
            snprintf(err, errlen, "anthropic: out of memory");
            return MEAO_E_NOMEM;
        }
    }
    /* thinking_delta, signature_delta, citations_delta: ignored */
    return MEAO_OK;
}

static enum meao_err block_stop(struct stream *st, const json_t *v, char *err, size_t errlen)
{
    const json_t *idx = json_object_get(v, "index");
    struct block *b = json_is_integer(idx) ? find_block(st, json_integer_value(idx)) : NULL;
    json_t *input = NULL;
    enum meao_err e = MEAO_OK;
    bool go_on;

    if (b == NULL || !b->open) {
        snprintf(err, errlen, "anthropic: content_block_stop for no open block");
        return MEAO_E_PROVIDER;
    }
    b->open = false;
    if (b->kind != BLOCK_TOOL)
        return MEAO_OK;
    if (b->input.len > 0) {
        if (meao_json_parse(b->input.p, b->input.len, MEAO_PROVIDER_MAX_TOOL_INPUT,
                            MEAO_PROVIDER_JSON_DEPTH, &input, NULL, 0) != MEAO_OK ||
            !json_is_object(input)) {
            e = MEAO_E_PROVIDER;
            snprintf(err, errlen, "anthropic: tool call %s: its input is not a valid JSON object",
                     b->name);
            goto out;
        }
    } else {
        input = b->initial ? json_incref(b->initial) : json_object();
        if (input == NULL) {
            e = MEAO_E_NOMEM;
            snprintf(err, errlen, "anthropic: out of memory");
            goto out;
        }
    }
    go_on =
        st->sink->tool_call == NULL || st->sink->tool_call(st->sink->ctx, b->id, b->name, input);
    if (!go_on) {
        e = MEAO_E_CANCELLED;
        snprintf(err, errlen, "anthropic: cancelled");
    }
out:
    json_decref(input);
    meao_buf_free(&b->input);
    return e;
}

static enum meao_err on_event(void *ctx, const struct meao_sse_event *ev, bool *finished, char *err,
                              size_t errlen)
{
    struct stream *st = ctx;
    json_t *v = NULL;
    const char *type;
    enum meao_err e = MEAO_OK;

    if (meao_json_parse(ev->data, ev->data_len, MEAO_PROVIDER_HTTP_MAX_EVENT,
                        MEAO_PROVIDER_JSON_DEPTH, &v, NULL, 0) != MEAO_OK ||
        !json_is_object(v)) {
        char name[48];
        meao_provider_http_scrub(ev->type, ev->type_len, NULL, 32, name, sizeof name);
        snprintf(err, errlen, "anthropic: the stream sent invalid JSON (event %s)", name);
        e = MEAO_E_PROVIDER;
        goto out;
    }
    type = meao_json_str(v, "type");
    if (type == NULL)
        type = ev->type;
    if (strcmp(type, "message_start") == 0) {
        take_usage(st, json_object_get(json_object_get(v, "message"), "usage"));
    } else if (strcmp(type, "content_block_start") == 0) {
        e = block_start(st, v, err, errlen);
    } else if (strcmp(type, "content_block_delta") == 0) {
        e = block_delta(st, v, err, errlen);
    } else if (strcmp(type, "content_block_stop") == 0) {
        e = block_stop(st, v, err, errlen);
    } else if (strcmp(type, "message_delta") == 0) {
        take_usage(st, json_object_get(v, "usage"));
    } else if (strcmp(type, "message_stop") == 0) {
        for (size_t i = 0; i < st->nblocks; i++) {
            if (st->blocks[i].open && st->blocks[i].kind == BLOCK_TOOL) {
                snprintf(err, errlen, "anthropic: message_stop inside an unfinished tool call");
                e = MEAO_E_PROVIDER;
                goto out;
            }
        }
        st->stopped = true;
        *finished = true;
    } else if (strcmp(type, "error") == 0) {
        const json_t *eo = json_object_get(v, "error");
        const char *et = meao_json_str(eo, "type"), *em = meao_json_str(eo, "message");
        char t[64] = "", m[MEAO_PROVIDER_HTTP_MAX_DETAIL + 8] = "";
        if (et)
            meao_provider_http_scrub(et, strlen(et), NULL, 48, t, sizeof t);
        if (em)
            meao_provider_http_scrub(em, strlen(em), NULL, MEAO_PROVIDER_HTTP_MAX_DETAIL, m,
                                     sizeof m);
        snprintf(err, errlen, "anthropic: stream error %s%s%s", t[0] ? t : "(untyped)",
                 m[0] ? ": " : "", m);
        e = MEAO_E_PROVIDER;
    }
    /* ping and unknown events: nothing to do */
out:
    json_decref(v);
    return e;
}

/* --- the provider ------------------------------------------------------- */

static enum meao_err complete(struct meao_provider *p, const struct meao_llm_request *req,
                              const struct meao_llm_sink *sink, char *err, size_t errlen)
{
    const struct anthropic *a = p->state;
    struct stream st = {.sink = sink};
    struct meao_provider_http_call call;
    const char *headers[3] = {ANTHROPIC_VERSION, NULL, NULL};
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
    headers[1] = a->key_header;
    call = (struct meao_provider_http_call){
        .provider = "anthropic",
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
    if (e == MEAO_OK && !st.stopped) {
        e = MEAO_E_PROVIDER;
        snprintf(err, errlen, "anthropic: the stream ended before message_stop");
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
    struct anthropic *a;
    if (p == NULL)
        return;
    a = p->state;
    if (a) {
        free(a->url);
        free(a->model);
        wipe_free(a->key);
        wipe_free(a->key_header);
        free(a);
    }
    free(p);
}

static const struct meao_provider_ops anthropic_ops = {
    .name = "anthropic",
    .complete = complete,
    .destroy = destroy,
};

enum meao_err meao_provider_anthropic_create(const struct meao_config *cfg,
                                             struct meao_provider **out, char *err, size_t errlen)
{
    const char *base = cfg->provider_base_url && cfg->provider_base_url[0] ? cfg->provider_base_url
                                                                           : ANTHROPIC_DEFAULT_BASE;
    const char *key = cfg->provider_api_key ? cfg->provider_api_key : "";
    struct meao_provider *p = NULL;
    struct anthropic *a = NULL;
    enum meao_err e;
    char local[8];

    *out = NULL;
    if (err == NULL || errlen == 0) {
        err = local;
        errlen = sizeof local;
    }
    e = meao_provider_http_check_base_url("anthropic", base, err, errlen);
    if (e != MEAO_OK)
        goto fail;
    e = MEAO_E_INVALID_PARAMETER;
    if (cfg->provider_model == NULL || cfg->provider_model[0] == '\0') {
        snprintf(err, errlen, "anthropic: provider_model is empty (name a Claude model)");
        goto fail;
    }
    if (key[0] == '\0' && strcmp(base, ANTHROPIC_DEFAULT_BASE) == 0) {
        snprintf(err, errlen,
                 "anthropic: provider_api_key is empty (set it, or MEAO_PROVIDER_API_KEY)");
        goto fail;
    }
    for (const char *k = key; *k; k++) {
        if ((unsigned char)*k < 0x21 || *k == 0x7F) {
            snprintf(err, errlen,
                     "anthropic: provider_api_key contains a space or control "
                     "character");
            goto fail;
        }
    }
    e = MEAO_E_NOMEM;
    p = calloc(1, sizeof *p);
    a = calloc(1, sizeof *a);
    if (p == NULL || a == NULL)
        goto nomem;
    p->ops = &anthropic_ops;
    p->cfg = cfg;
    p->state = a;
    a->max_tokens = cfg->provider_max_tokens;
    a->timeout_ms = cfg->provider_timeout_ms;
    a->url = meao_provider_http_join(base, "/v1/messages");
    a->model = strdup(cfg->provider_model);
    a->key = strdup(key);
    if (a->url == NULL || a->model == NULL || a->key == NULL)
        goto nomem;
    if (key[0]) {
        size_t n = strlen("x-api-key: ") + strlen(key) + 1;
        if ((a->key_header = malloc(n)) == NULL)
            goto nomem;
        snprintf(a->key_header, n, "x-api-key: %s", key);
    }
    *out = p;
    return MEAO_OK;
nomem:
    snprintf(err, errlen, "anthropic: out of memory");
    if (p == NULL)
        free(a);
    destroy(p);
fail:
    return e;
}
