/* One chat turn shared by the REST route and the WebSocket program; see
 * chat.h. */
#include "api/chat.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "store/db.h"
#include "store/identity.h"
#include "store/workdir.h"

#define MAX_ATTACHMENTS    8
#define ATTACH_NAME_MAX    255
#define ATTACH_URL_MAX     2048
#define ATTACH_DECODED_MAX (512 * 1024) /* one attachment's data, decoded */
#define ATTACH_TOTAL_MAX   (768 * 1024) /* all of a message's attachments, decoded */
#define CONTENT_PARTS_MAX  32
#define SEND_TIMEOUT_MS    5000

/* ---- input ---- */

/* The message text: a string, or [{"type":"text","text"}] joined with "\n".
 * On success *out is malloc'd (caller frees). */
static enum meao_err parse_content(const json_t *c, struct meao_resp *resp, char **out)
{
    size_t total = 0, i;
    json_t *part;
    char *buf;

    *out = NULL;
    if (json_is_string(c)) {
        size_t n = json_string_length(c);
        if (n == 0 || n > MEAO_ORCH_MAX_CONTENT)
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "content must be 1..%d bytes",
                             MEAO_ORCH_MAX_CONTENT);
        *out = strdup(json_string_value(c));
        return *out ? MEAO_OK : MEAO_E_NOMEM;
    }
    if (!json_is_array(c) || json_array_size(c) == 0 || json_array_size(c) > CONTENT_PARTS_MAX)
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                         "content must be a string or 1..%d {\"type\":\"text\",\"text\"} parts",
                         CONTENT_PARTS_MAX);
    json_array_foreach(c, i, part)
    {
        const char *type = meao_json_str(part, "type");
        const json_t *text = json_object_get(part, "text");
        if (!json_is_object(part) || json_object_size(part) != 2 || type == NULL ||
            strcmp(type, "text") != 0 || !json_is_string(text))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                             "content[%zu] must be {\"type\":\"text\",\"text\":string}", i);
        total += json_string_length(text) + (i ? 1 : 0);
    }
    if (total == 0 || total > MEAO_ORCH_MAX_CONTENT)
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "content must be 1..%d bytes",
                         MEAO_ORCH_MAX_CONTENT);
    buf = malloc(total + 1);
    if (buf == NULL)
        return MEAO_E_NOMEM;
    total = 0;
    json_array_foreach(c, i, part)
    {
        const json_t *text = json_object_get(part, "text");
        size_t n = json_string_length(text);
        if (i)
            buf[total++] = '\n';
        memcpy(buf + total, json_string_value(text), n);
        total += n;
    }
    buf[total] = '\0';
    *out = buf;
    return MEAO_OK;
}

static bool printable_line(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* An https URL without whitespace or control characters, with a host. */
static bool https_url(const char *u)
{
    const char *host;
    if (strncasecmp(u, "https://", 8) != 0 || strlen(u) > ATTACH_URL_MAX)
        return false;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return false;
    host = u + 8;
    return *host != '\0' && *host != '/' && *host != '?' && *host != '#' && *host != '@';
}

/* Decoded size of standard base64 (padded or not); false when it is not
 * base64 or decodes to more than max bytes. */
static bool base64_size(const char *s, size_t len, size_t max, size_t *out)
{
    size_t cap = len / 4 * 3 + 3;
    unsigned char *bin;
    size_t bin_len = 0;
    const char *end = NULL;
    int rc;
    if (len / 4 * 3 > max + 3) /* surely too large: do not even decode it */
        return false;
    bin = malloc(cap ? cap : 1);
    if (bin == NULL)
        return false;
    rc = sodium_base642bin(bin, cap, s, len, NULL, &bin_len, &end, sodium_base64_VARIANT_ORIGINAL);
    if (rc != 0 || end != s + len)
        rc = sodium_base642bin(bin, cap, s, len, NULL, &bin_len, &end,
                               sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    free(bin);
    if (rc != 0 || end != s + len || bin_len > max)
        return false;
    *out = bin_len;
    return true;
}

/* Validate the attachments (seed form: type file|image, name, url?, data?).
 * *for_turn gets what the orchestrator is sent (with data and size),
 * *stored what the database keeps (no data). Both NULL when none. */
static enum meao_err parse_attachments(const json_t *a, struct meao_resp *resp, json_t **for_turn,
                                       json_t **stored)
{
    size_t i, total = 0;
    json_t *item;

    *for_turn = *stored = NULL;
    if (a == NULL || json_is_null(a) || json_array_size(a) == 0)
        return MEAO_OK;
    *for_turn = json_array();
    *stored = json_array();
    if (*for_turn == NULL || *stored == NULL)
        goto nomem;
    json_array_foreach(a, i, item)
    {
        const char *key, *type = meao_json_str(item, "type"), *name = meao_json_str(item, "name");
        const char *url = meao_json_str(item, "url");
        const json_t *data = json_object_get(item, "data");
        json_t *v, *t, *s;
        size_t size = 0;

        if (!json_is_object(item))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "attachments[%zu] must be an object",
                             i);
        json_object_foreach((json_t *)item, key, v)
        {
            if (strcmp(key, "type") && strcmp(key, "name") && strcmp(key, "url") &&
                strcmp(key, "data") && strcmp(key, "mimeType"))
                return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                                 "attachments[%zu]: unknown field \"%.40s\"", i, key);
        }
        if (type == NULL || (strcmp(type, "file") != 0 && strcmp(type, "image") != 0))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                             "attachments[%zu].type must be file or image", i);
        if (name == NULL || name[0] == '\0' || strlen(name) > ATTACH_NAME_MAX ||
            !printable_line(name))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                             "attachments[%zu].name must be 1..%d bytes without control "
                             "characters",
                             i, ATTACH_NAME_MAX);
        if (json_object_get(item, "url") && (url == NULL || !https_url(url)))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                             "attachments[%zu].url must be an https URL of at most %d bytes", i,
                             ATTACH_URL_MAX);
        if (json_object_get(item, "mimeType") &&
            (!json_is_string(json_object_get(item, "mimeType")) ||
             json_string_length(json_object_get(item, "mimeType")) > 127 ||
             !printable_line(meao_json_str(item, "mimeType"))))
            return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                             "attachments[%zu].mimeType must be a string of at most 127 bytes", i);
        if (data != NULL) {
            if (!json_is_string(data) ||
                !base64_size(json_string_value(data), json_string_length(data), ATTACH_DECODED_MAX,
                             &size))
                return meao_fail(resp, MEAO_E_INVALID_PARAMETER,
                                 "attachments[%zu].data must be base64 of at most %d bytes", i,
                                 ATTACH_DECODED_MAX);
            total += size;
            if (total > ATTACH_TOTAL_MAX)
                return meao_fail(resp, MEAO_E_PAYLOAD_TOO_LARGE,
                                 "Attachments exceed %d bytes in total", ATTACH_TOTAL_MAX);
        }
        t = json_pack("{s:s, s:s}", "type", type, "name", name);
        s = json_pack("{s:s, s:s}", "type", type, "name", name);
        if (t == NULL || s == NULL || json_array_append_new(*for_turn, t) != 0 ||
            json_array_append_new(*stored, s) != 0)
            goto nomem;
        if (url) {
            json_object_set_new(t, "url", json_string(url));
            json_object_set_new(s, "url", json_string(url));
        }
        if (json_object_get(item, "mimeType")) {
            json_object_set(t, "mimeType", json_object_get(item, "mimeType"));
            json_object_set(s, "mimeType", json_object_get(item, "mimeType"));
        }
        if (data) {
            json_object_set(t, "data", (json_t *)data);
            json_object_set_new(t, "size", json_integer((json_int_t)size));
            json_object_set_new(s, "size", json_integer((json_int_t)size));
        }
    }
    return MEAO_OK;
nomem:
    return MEAO_E_NOMEM;
}

/* ---- the turn line ---- */

/* Tools whose policy was changed with PATCH /api/v1/config (declared in
 * api.h; the Telegram worker sends them too). */
json_t *meao_api_tool_policies(const struct meao_config *c, const struct meao_config *b)
{
    json_t *o;
    if (c == b)
        return NULL;
    o = json_object();
    if (o == NULL)
        return NULL;
    if (strcmp(c->tool_policy_bash, b->tool_policy_bash) != 0)
        json_object_set_new(o, "bash", json_string(c->tool_policy_bash));
    if (strcmp(c->tool_policy_read_file, b->tool_policy_read_file) != 0)
        json_object_set_new(o, "read_file", json_string(c->tool_policy_read_file));
    if (strcmp(c->tool_policy_write_file, b->tool_policy_write_file) != 0)
        json_object_set_new(o, "write_file", json_string(c->tool_policy_write_file));
    if (json_object_size(o) == 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- settling ---- */

enum meao_err meao_chat_fail(struct meao_chat *ch, struct meao_resp *resp, enum meao_err e,
                             const char *msg)
{
    const char *code = meao_err_info(e)->code;
    enum meao_err se;
    meao_metrics_orch_error(e);
    if (ch->leased) {
        se = meao_turn_fail(ch->db, ch->s.id, ch->lease, &ch->user_msg, code, ch->request_id,
                            ch->user_id, meao_now_ms(ch->app->clock));
        if (se != MEAO_OK) /* the lease expires by itself; the message stays pending */
            meao_log(MEAO_LOG_ERROR, NULL, "turn_settle", "cannot mark the message failed: %s",
                     meao_strerror(se));
        ch->leased = false;
        meao_log(MEAO_LOG_WARN, NULL, "turn_failed", "session %s: %s (%s)", ch->s.public_id, code,
                 msg);
    }
    return meao_fail(resp, e, "%s", msg);
}

enum meao_err meao_chat_complete(struct meao_chat *ch, const json_t *frame, struct meao_resp *resp,
                                 json_t **answer)
{
    const char *content = meao_json_str(frame, "content");
    const char *rid = meao_json_str(frame, "requestId");
    const json_t *calls = json_object_get(frame, "toolCalls");
    const json_t *usage = json_object_get(frame, "usage");
    const json_t *trusted = json_object_get(frame, "trustedTools");
    json_t *trusted_ok = NULL, *v;
    struct meao_msg_ref reply;
    struct meao_turn_result r;
    int64_t now = meao_now_ms(ch->app->clock);
    char ts[32];
    size_t i;
    enum meao_err e;

    *answer = NULL;
    if (rid == NULL || strcmp(rid, ch->request_id) != 0)
        return meao_chat_fail(ch, resp, MEAO_E_PROVIDER, "Orchestrator answered another turn");
    if (content == NULL)
        content = "";
    if (!json_is_array(calls))
        calls = NULL;
    /* only well-formed tool names are kept as trusted */
    if (json_is_array(trusted)) {
        trusted_ok = json_array();
        if (trusted_ok == NULL)
            return meao_chat_fail(ch, resp, MEAO_E_NOMEM, "Out of memory");
        json_array_foreach(trusted, i, v)
        {
            if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) <= 128 &&
                json_array_size(trusted_ok) < 64)
                json_array_append(trusted_ok, v);
        }
    }
    r = (struct meao_turn_result){
        .content = content,
        .tool_calls = calls,
        .input_tokens = json_integer_value(json_object_get(usage, "inputTokens")),
        .output_tokens = json_integer_value(json_object_get(usage, "outputTokens")),
        .trusted_tools = trusted_ok,
        .request_id = ch->request_id,
        .user_id = ch->user_id,
    };
    e = meao_turn_complete(ch->db, ch->s.id, ch->lease, &ch->user_msg, &r, now, &reply);
    json_decref(trusted_ok);
    if (e != MEAO_OK)
        return meao_chat_fail(ch, resp, MEAO_E_DB,
                              "Database unavailable; the reply was not stored");
    ch->leased = false;
    *answer = json_pack("{s:s, s:s, s:s, s:O, s:{s:I, s:I}, s:s}", "id", reply.public_id,
                        "messageId", ch->user_msg.public_id, "content", content, "toolCalls",
                        calls ? (json_t *)calls : json_array(), "usage", "inputTokens",
                        (json_int_t)r.input_tokens, "outputTokens", (json_int_t)r.output_tokens,
                        "timestamp", meao_iso8601(now, ts, sizeof ts));
    return *answer ? MEAO_OK : MEAO_E_NOMEM;
}

enum meao_err meao_chat_error_frame(struct meao_chat *ch, const json_t *frame,
                                    struct meao_resp *resp)
{
    const char *code = meao_json_str(frame, "code");
    enum meao_err e = meao_orch_error_code_to_err(code);
    char line[181];

    switch (e) {
    case MEAO_E_PROVIDER:
        meao_api_safe_line(meao_json_str(frame, "message"), line, sizeof line);
        return meao_chat_fail(ch, resp, e, line[0] ? line : "Model provider error");
    case MEAO_E_TIMEOUT:
        return meao_chat_fail(ch, resp, e, "The turn timed out in the orchestrator");
    case MEAO_E_CANCELLED: return meao_chat_fail(ch, resp, e, "The turn was cancelled");
    case MEAO_E_UNAVAILABLE:
        return meao_chat_fail(ch, resp, e,
                              code && strcmp(code, "BUSY") == 0 ? "Orchestrator busy; retry later"
                                                                : "Orchestrator is shutting down");
    case MEAO_E_INVALID_REQUEST:
        meao_api_safe_line(meao_json_str(frame, "message"), line, sizeof line);
        return meao_chat_fail(ch, resp, e, line[0] ? line : "The orchestrator refused the turn");
    default: return meao_chat_fail(ch, resp, MEAO_E_INTERNAL, "Orchestrator error");
    }
}

void meao_chat_renew(struct meao_chat *ch)
{
    int64_t now = meao_mono_ms(ch->app->clock);
    enum meao_err e;
    if (!ch->leased || now < ch->next_renew_mono_ms)
        return;
    e = meao_turn_renew(ch->db, ch->s.id, ch->lease, meao_now_ms(ch->app->clock),
                        MEAO_CHAT_LEASE_MS);
    if (e != MEAO_OK)
        meao_log(MEAO_LOG_WARN, NULL, "lease_renew", "session %s: %s", ch->s.public_id,
                 meao_strerror(e));
    ch->next_renew_mono_ms = now + MEAO_CHAT_RENEW_EVERY_MS;
}

void meao_chat_cancel(struct meao_chat *ch)
{
    json_t *cancel = json_pack("{s:s}", "type", "cancel");
    if (cancel && ch->orch)
        (void)meao_orch_send(ch->orch, cancel, 100);
    json_decref(cancel);
}

void meao_chat_end(struct meao_chat *ch)
{
    meao_orch_close(ch->orch);
    ch->orch = NULL;
    if (ch->leased) {
        struct meao_resp scratch;
        meao_resp_init(&scratch);
        (void)meao_chat_fail(ch, &scratch, MEAO_E_INTERNAL, "Turn aborted");
        meao_resp_free(&scratch);
    }
}

/* ---- starting ---- */

enum meao_err meao_chat_start(struct meao_chat *ch, struct meao_app *app, struct meao_db *db,
                              const struct meao_session *s, int64_t user_id, const char *request_id,
                              const json_t *content_in, const json_t *attachments,
                              struct meao_resp *resp)
{
    json_t *for_turn = NULL, *stored = NULL, *trusted = NULL, *history = NULL, *msg = NULL;
    json_t *policies = NULL;
    char *content = NULL, *stored_text = NULL, uid[24];
    enum meao_turn_refusal why;
    size_t base;
    enum meao_err e;

    *ch = (struct meao_chat){
        .app = app, .db = db, .s = *s, .user_id = user_id, .request_id = request_id};
    e = parse_content(content_in, resp, &content);
    if (e == MEAO_OK)
        e = parse_attachments(attachments, resp, &for_turn, &stored);
    if (e != MEAO_OK)
        goto out;
    if (ch->s.ended) {
        e = meao_fail(resp, MEAO_E_CONFLICT, "Session has ended");
        goto out;
    }
    e = meao_session_trusted_tools(db, ch->s.id, &trusted);
    if (e != MEAO_OK)
        goto out;

    /* the whole turn must fit one protocol line: measure it without history */
    snprintf(uid, sizeof uid, "%lld", (long long)user_id);
    msg = meao_orch_turn_request(request_id, ch->s.public_id, uid, ch->s.channel, ch->s.work_dir,
                                 trusted, NULL, content, for_turn);
    if (msg == NULL) {
        e = MEAO_E_NOMEM;
        goto out;
    }
    policies = meao_api_tool_policies(app->cfg, app->base_cfg);
    if (policies)
        json_object_set(msg, "toolPolicies", policies);
    base = meao_orch_line_size(msg);
    if (base == 0 || base + 64 > MEAO_ORCH_MAX_LINE) {
        e = meao_fail(resp, MEAO_E_PAYLOAD_TOO_LARGE,
                      "Message and attachments exceed what one turn can carry");
        goto out;
    }
    if (stored && (stored_text = json_dumps(stored, JSON_COMPACT)) == NULL) {
        e = MEAO_E_NOMEM;
        goto out;
    }

    /* the default directory is made here, at the first turn (store/workdir.h) */
    if (meao_workdir_ensure(app->cfg->workspace_root, ch->s.work_dir) != MEAO_OK) {
        e = meao_fail(resp, MEAO_E_UNAVAILABLE, "The session's work directory is unavailable");
        goto out;
    }

    /* one turn at a time: take the lease and keep the message (pending) */
    meao_lease_token_new(ch->lease);
    e = meao_turn_begin(db, &ch->s,
                        &(struct meao_turn_start){.lease_token = ch->lease,
                                                  .request_id = request_id,
                                                  .user_id = user_id,
                                                  .content = content,
                                                  .attachments = stored_text,
                                                  .lease_ms = MEAO_CHAT_LEASE_MS},
                        meao_now_ms(app->clock), &ch->user_msg, &why);
    if (e == MEAO_E_CONFLICT) {
        e = meao_fail(resp, e,
                      why == MEAO_TURN_ENDED
                          ? "Session has ended"
                          : "A turn is already running in this session; retry when it completes");
        goto out;
    }
    if (e == MEAO_E_NOT_FOUND) {
        e = meao_fail(resp, e, "Session not found");
        goto out;
    }
    if (e != MEAO_OK)
        goto out;
    ch->leased = true;
    ch->next_renew_mono_ms = meao_mono_ms(app->clock) + MEAO_CHAT_RENEW_EVERY_MS;

    /* from here on every way out settles the message */
    e = meao_history_window(db, ch->s.id, ch->user_msg.id, MEAO_HISTORY_MAX_N, &history);
    if (e != MEAO_OK) {
        e = meao_chat_fail(ch, resp, MEAO_E_DB, "Database unavailable");
        goto out;
    }
    meao_orch_fit_history(history, MEAO_ORCH_MAX_LINE - 64 - base);
    json_object_set(msg, "history", history);

    e = meao_orch_connect(app->cfg->orchestrator_socket, app->clock,
                          app->cfg->orchestrator_connect_timeout_ms,
                          app->cfg->orchestrator_idle_timeout_ms, &ch->orch);
    if (e == MEAO_OK)
        e = meao_orch_send(ch->orch, msg, SEND_TIMEOUT_MS);
    if (e != MEAO_OK) {
        meao_orch_close(ch->orch);
        ch->orch = NULL;
        e = meao_chat_fail(ch, resp, MEAO_E_UNAVAILABLE, "Orchestrator unavailable");
    }
out:
    json_decref(msg);
    json_decref(policies);
    json_decref(history);
    json_decref(trusted);
    json_decref(for_turn);
    json_decref(stored);
    free(stored_text);
    free(content);
    return e;
}

enum meao_err meao_chat_default_session(struct meao_app *app, struct meao_db *db, int64_t user_id,
                                        const char *channel, const char *request_id,
                                        struct meao_session *out)
{
    char id[MEAO_PUBLIC_ID_LEN + 1], dir[MEAO_WORKDIR_MAX + 1], why[200];
    int64_t now = meao_now_ms(app->clock);
    enum meao_err e;

    e = meao_session_latest(db, user_id, channel, now, out);
    if (e != MEAO_E_NOT_FOUND)
        return e;
    meao_public_id_new("ses_", id);
    e = meao_workdir_resolve(&(struct meao_workdir_req){.root = app->cfg->workspace_root,
                                                        .user_id = user_id,
                                                        .requested = NULL,
                                                        .default_leaf = id},
                             dir, sizeof dir, why, sizeof why);
    if (e != MEAO_OK)
        return MEAO_E_UNAVAILABLE;
    e = meao_db_begin_relaxed(db);
    if (e != MEAO_OK)
        return e;
    e = meao_session_create(db, id, user_id, channel, dir, now, out);
    if (e == MEAO_OK)
        e = meao_audit(db, now, request_id, user_id, "session.create", id, channel);
    if (e == MEAO_OK)
        e = meao_db_commit(db);
    else
        meao_db_rollback(db);
    return e;
}
