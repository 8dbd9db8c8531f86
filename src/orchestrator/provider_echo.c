/* The echo provider: offline and deterministic, the default. It streams the
 * user's last message back in up to four deltas (cut on character
 * boundaries). A message whose first line is a script command is a script,
 * so approvals and tools can be driven end to end without a model:
 *
 *   /tool NAME {json args}   one tool call per model round, in order: round k
 *                            (k = assistant tool-call messages since the user
 *                            message) calls the k-th /tool line; after the
 *                            last one the answer lists every tool result as
 *                            "[NAME] OUTPUT" or "[NAME failed] OUTPUT"
 *   /sleep MS                wait MS milliseconds before the first round
 *                            (cancellable: the turn's cancel aborts it)
 *   /fail                    fail with PROVIDER_ERROR
 *   any other line           echoed as the answer of a script without tools
 *
 * Usage is reported as bytes / 4, rounded up, of all input and of the
 * output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/json.h"
#include "orchestrator/provider.h"

#define PIECES      4
#define MAX_TOOLS   32
#define SLEEP_SLICE 5 /* ms between cancel checks while sleeping */

struct script {
    bool is_script;
    bool fail;
    int64_t sleep_ms;
    size_t ntools;
    struct {
        const char *line; /* "NAME {json}" (not NUL-terminated at the line end) */
        size_t len;
    } tools[MAX_TOOLS];
    struct meao_buf rest; /* the other lines */
};

static bool starts(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len >= n && memcmp(s, word, n) == 0 &&
           (len == n || s[n] == ' ' || s[n] == '\t' || s[n] == '\r');
}

static bool parse_script(const char *text, struct script *sc)
{
    const char *p = text;
    memset(sc, 0, sizeof *sc);
    sc->is_script = starts(p, strcspn(p, "\n"), "/tool") || starts(p, strcspn(p, "\n"), "/sleep") ||
                    starts(p, strcspn(p, "\n"), "/fail");
    if (!sc->is_script)
        return true;
    while (*p) {
        size_t len = strcspn(p, "\n");
        if (starts(p, len, "/tool")) {
            if (sc->ntools < MAX_TOOLS) {
                sc->tools[sc->ntools].line = p + 5;
                sc->tools[sc->ntools].len = len - 5;
                sc->ntools++;
            }
        } else if (starts(p, len, "/sleep")) {
            sc->sleep_ms += strtoll(p + 6, NULL, 10);
        } else if (starts(p, len, "/fail")) {
            sc->fail = true;
        } else if (len > 0) {
            if ((sc->rest.len && !meao_buf_append(&sc->rest, "\n", 1)) ||
                !meao_buf_append(&sc->rest, p, len))
                return false;
        }
        p += len;
        if (*p == '\n')
            p++;
    }
    return true;
}

/* Call tool k of the script: "NAME {json}" with optional whitespace. */
static enum meao_err call_tool(const struct script *sc, size_t k, const struct meao_llm_sink *sink,
                               char *err, size_t errlen)
{
    const char *s = sc->tools[k].line, *end = s + sc->tools[k].len;
    char name[129], id[32];
    size_t n = 0;
    json_t *args = NULL;
    enum meao_err e = MEAO_OK;

    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    while (s < end && *s != ' ' && *s != '\t' && *s != '\r' && n < sizeof name - 1)
        name[n++] = *s++;
    name[n] = '\0';
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        end--;
    if (n == 0) {
        snprintf(err, errlen, "echo: /tool needs a tool name");
        return MEAO_E_PROVIDER;
    }
    if (s == end)
        args = json_object();
    else if (meao_json_parse(s, (size_t)(end - s), 1u << 20, 32, &args, NULL, 0) != MEAO_OK ||
             !json_is_object(args)) {
        snprintf(err, errlen, "echo: /tool %s arguments are not a JSON object", name);
        e = MEAO_E_PROVIDER;
        goto out;
    }
    if (args == NULL) {
        e = MEAO_E_NOMEM;
        goto out;
    }
    snprintf(id, sizeof id, "echo_call_%zu", k + 1);
    if (!sink->tool_call(sink->ctx, id, name, args))
        e = MEAO_E_CANCELLED;
out:
    json_decref(args);
    return e;
}

/* Stream text in up to PIECES deltas, never splitting a UTF-8 sequence. */
static enum meao_err stream(const char *text, size_t len, const struct meao_llm_sink *sink)
{
    size_t size = (len + PIECES - 1) / PIECES, at = 0;
    while (at < len) {
        size_t end = at + size < len ? at + size : len;
        while (end < len && ((unsigned char)text[end] & 0xC0) == 0x80)
            end++;
        if (!sink->text(sink->ctx, text + at, end - at))
            return MEAO_E_CANCELLED;
        at = end;
    }
    return MEAO_OK;
}

static bool sleep_cancellable(int64_t ms, const struct meao_llm_sink *sink)
{
    struct timespec ts = {0, SLEEP_SLICE * 1000000L};
    for (int64_t slept = 0; slept < ms; slept += SLEEP_SLICE) {
        if (sink->cancelled && sink->cancelled(sink->ctx))
            return false;
        nanosleep(&ts, NULL);
    }
    return !(sink->cancelled && sink->cancelled(sink->ctx));
}

/* "[NAME] OUTPUT" per tool result after the user message, one per line. */
static bool tool_report(const json_t *msgs, size_t from, struct meao_buf *out)
{
    for (size_t i = from; i < json_array_size(msgs); i++) {
        const json_t *m = json_array_get(msgs, i);
        const char *role = meao_json_str(m, "role");
        if (role == NULL || strcmp(role, "tool") != 0)
            continue;
        if ((out->len && !meao_buf_append(out, "\n", 1)) ||
            !meao_buf_printf(out, "[%s%s] ",
                             meao_json_str(m, "name") ? meao_json_str(m, "name") : "tool",
                             json_is_true(json_object_get(m, "isError")) ? " failed" : "") ||
            !meao_buf_puts(out, meao_json_str(m, "content") ? meao_json_str(m, "content") : ""))
            return false;
    }
    return true;
}

static enum meao_err echo_complete(struct meao_provider *p, const struct meao_llm_request *req,
                                   const struct meao_llm_sink *sink, char *err, size_t errlen)
{
    const json_t *msgs = req->messages;
    size_t n = json_array_size(msgs), user = n, rounds = 0, in_bytes = 0;
    const char *content = "";
    struct script sc;
    struct meao_buf answer = {0};
    const char *text;
    size_t text_len;
    enum meao_err e = MEAO_OK;

    (void)p;
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(msgs, i);
        const char *role = meao_json_str(m, "role");
        in_bytes += json_string_length(json_object_get(m, "content"));
        if (role && strcmp(role, "user") == 0) {
            user = i;
            rounds = 0;
        } else if (role && strcmp(role, "assistant") == 0 && user < n &&
                   json_array_size(json_object_get(m, "toolCalls")) > 0) {
            rounds++;
        }
    }
    if (user < n)
        content = meao_json_str(json_array_get(msgs, user), "content");
    if (content == NULL)
        content = "";
    if (!parse_script(content, &sc)) {
        e = MEAO_E_NOMEM;
        goto out;
    }
    if (sc.fail) {
        snprintf(err, errlen, "echo: scripted failure");
        e = MEAO_E_PROVIDER;
        goto out;
    }
    if (sc.sleep_ms > 0 && rounds == 0 && !sleep_cancellable(sc.sleep_ms, sink)) {
        e = MEAO_E_CANCELLED;
        goto out;
    }
    if (rounds < sc.ntools) {
        e = call_tool(&sc, rounds, sink, err, errlen);
        if (e == MEAO_OK)
            sink->usage(sink->ctx, (int64_t)((in_bytes + 3) / 4), 1);
        goto out;
    }
    if (sc.ntools > 0) {
        if (!tool_report(msgs, user + 1, &answer)) {
            e = MEAO_E_NOMEM;
            goto out;
        }
        text = answer.p ? answer.p : "";
        text_len = answer.len;
    } else if (sc.is_script) {
        text = sc.rest.len ? sc.rest.p : "ok";
        text_len = sc.rest.len ? sc.rest.len : 2;
    } else {
        text = content;
        text_len = strlen(content);
    }
    e = stream(text, text_len, sink);
    if (e != MEAO_OK)
        goto out;
    sink->usage(sink->ctx, (int64_t)((in_bytes + 3) / 4), (int64_t)((text_len + 3) / 4));
out:
    meao_buf_free(&sc.rest);
    meao_buf_free(&answer);
    return e;
}

static void echo_destroy(struct meao_provider *p)
{
    free(p);
}

static const struct meao_provider_ops echo_ops = {
    .name = "echo",
    .complete = echo_complete,
    .destroy = echo_destroy,
};

enum meao_err meao_provider_echo_create(const struct meao_config *cfg, struct meao_provider **out,
                                        char *err, size_t errlen)
{
    struct meao_provider *p = calloc(1, sizeof *p);
    *out = NULL;
    if (p == NULL) {
        snprintf(err, errlen, "echo: out of memory");
        return MEAO_E_NOMEM;
    }
    p->ops = &echo_ops;
    p->cfg = cfg;
    *out = p;
    return MEAO_OK;
}
