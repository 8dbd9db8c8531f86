/* /api/v1/sessions/:id/messages: post a message (one blocking orchestrator
 * turn) and read the history.
 *
 * A POST runs on the responder's slow-request pool (MEAO_ROUTE_SLOW). Its
 * way: check ownership and input → take the session's lease and store the
 * user's message as pending (one transaction) → send the turn with the
 * session's recent history and trusted tools → read frames until
 * message_complete or error, answering nothing itself (approvals are
 * answered through /api/v1/approvals from any of the user's clients) →
 * store the reply and release the lease (one transaction). Every way out
 * after the lease was taken settles the user's message (ok or failed) and
 * releases the lease; if even that fails (database gone), the lease expires
 * on its own after MEAO_TURN_LEASE_MS. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "api/routes.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "orch/client.h"
#include "store/sessions.h"
#include "store/workdir.h"

#define MAX_ATTACHMENTS      8
#define ATTACH_NAME_MAX      255
#define ATTACH_URL_MAX       2048
#define ATTACH_DECODED_MAX   (512 * 1024) /* one attachment's data, decoded */
#define ATTACH_TOTAL_MAX     (768 * 1024) /* all of a message's attachments, decoded */
#define CONTENT_PARTS_MAX    32
#define MEAO_TURN_LEASE_MS   60000 /* a crashed turn frees its session after at most this */
#define LEASE_RENEW_EVERY_MS 15000
#define POLL_SLICE_MS        200 /* how often a waiting turn looks at its client */
#define SEND_TIMEOUT_MS      5000

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

/* ---- the turn ---- */

struct turn {
    struct meao_app *app;
    struct meao_req *req;
    struct meao_resp *resp;
    struct meao_db *db;
    struct meao_session s;
    struct meao_msg_ref user_msg;
    char lease[MEAO_LEASE_TOKEN_MAX];
    bool leased;
};

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

/* Settle a failed turn: the user's message is kept as failed, the lease goes.
 * Returns e with the client's message recorded. */
static enum meao_err turn_failed(struct turn *t, enum meao_err e, const char *msg)
{
    const char *code = meao_err_info(e)->code;
    enum meao_err se;
    if (t->leased) {
        se = meao_turn_fail(t->db, t->s.id, t->lease, &t->user_msg, code, t->req->request_id,
                            t->req->who.user_id, meao_now_ms(t->app->clock));
        if (se != MEAO_OK) /* the lease expires by itself; the message stays pending */
            meao_log(MEAO_LOG_ERROR, NULL, "turn_settle", "cannot mark the message failed: %s",
                     meao_strerror(se));
        t->leased = false;
    }
    meao_log(MEAO_LOG_WARN, NULL, "turn_failed", "session %s: %s (%s)", t->s.public_id, code, msg);
    return meao_fail(t->resp, e, "%s", msg);
}

/* message_complete: store the reply and answer the client. */
static enum meao_err turn_completed(struct turn *t, const json_t *frame)
{
    const char *content = meao_json_str(frame, "content");
    const json_t *calls = json_object_get(frame, "toolCalls");
    const json_t *usage = json_object_get(frame, "usage");
    const json_t *trusted = json_object_get(frame, "trustedTools");
    json_t *trusted_ok = NULL, *v;
    struct meao_msg_ref reply;
    struct meao_turn_result r;
    int64_t now = meao_now_ms(t->app->clock);
    char ts[32];
    size_t i;
    enum meao_err e;

    if (!json_is_array(calls))
        calls = NULL;
    /* only well-formed tool names are kept as trusted */
    if (json_is_array(trusted)) {
        trusted_ok = json_array();
        if (trusted_ok == NULL)
            return turn_failed(t, MEAO_E_NOMEM, "Out of memory");
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
        .request_id = t->req->request_id,
        .user_id = t->req->who.user_id,
    };
    e = meao_turn_complete(t->db, t->s.id, t->lease, &t->user_msg, &r, now, &reply);
    json_decref(trusted_ok);
    if (e != MEAO_OK)
        return turn_failed(t, MEAO_E_DB, "Database unavailable; the reply was not stored");
    t->leased = false;
    return meao_resp_ok(t->resp, t->req, 200,
                        json_pack("{s:s, s:s, s:s, s:O, s:{s:I, s:I}, s:s}", "id", reply.public_id,
                                  "messageId", t->user_msg.public_id, "content", content,
                                  "toolCalls", calls ? (json_t *)calls : json_array(), "usage",
                                  "inputTokens", (json_int_t)r.input_tokens, "outputTokens",
                                  (json_int_t)r.output_tokens, "timestamp",
                                  meao_iso8601(now, ts, sizeof ts)),
                        now);
}

/* An `error` frame ends the turn. */
static enum meao_err turn_error_frame(struct turn *t, const json_t *frame)
{
    const char *code = meao_json_str(frame, "code");
    enum meao_err e = meao_orch_error_code_to_err(code);
    char line[181];

    switch (e) {
    case MEAO_E_PROVIDER:
        meao_api_safe_line(meao_json_str(frame, "message"), line, sizeof line);
        return turn_failed(t, e, line[0] ? line : "Model provider error");
    case MEAO_E_TIMEOUT: return turn_failed(t, e, "The turn timed out in the orchestrator");
    case MEAO_E_CANCELLED: return turn_failed(t, e, "The turn was cancelled");
    case MEAO_E_UNAVAILABLE:
        return turn_failed(t, e,
                           code && strcmp(code, "BUSY") == 0 ? "Orchestrator busy; retry later"
                                                             : "Orchestrator is shutting down");
    case MEAO_E_INVALID_REQUEST:
        meao_api_safe_line(meao_json_str(frame, "message"), line, sizeof line);
        return turn_failed(t, e, line[0] ? line : "The orchestrator refused the turn");
    default: return turn_failed(t, MEAO_E_INTERNAL, "Orchestrator error");
    }
}

/* Read frames until the turn ends; see the file comment. */
static enum meao_err run_turn(struct turn *t, struct meao_orch_client *c)
{
    const struct meao_config *cfg = t->app->cfg;
    const struct meao_clock *clk = t->app->clock;
    int64_t start = meao_mono_ms(clk);
    int64_t deadline = start + cfg->turn_deadline_s * 1000;
    int64_t last_frame = start, next_renew = start + LEASE_RENEW_EVERY_MS;

    for (;;) {
        int64_t now = meao_mono_ms(clk), slice = now + POLL_SLICE_MS;
        enum meao_orch_type type;
        json_t *frame = NULL;
        enum meao_err e;

        if (slice > deadline)
            slice = deadline;
        e = meao_orch_next(c, slice, -1, &frame, &type, NULL);
        now = meao_mono_ms(clk);
        if (e == MEAO_E_TIMEOUT) {
            if (now >= deadline)
                return turn_failed(t, MEAO_E_TIMEOUT, "The turn did not finish in time");
            if (now - last_frame >= cfg->orchestrator_idle_timeout_ms)
                return turn_failed(t, MEAO_E_TIMEOUT, "The orchestrator went silent");
            if (meao_req_client_gone(t->req)) {
                /* nobody waits for the answer: stop the turn (its approvals are denied) */
                json_t *cancel = json_pack("{s:s}", "type", "cancel");
                if (cancel)
                    (void)meao_orch_send(c, cancel, 100);
                json_decref(cancel);
                return turn_failed(t, MEAO_E_CANCELLED, "The client went away");
            }
            if (now >= next_renew) {
                e = meao_turn_renew(t->db, t->s.id, t->lease, meao_now_ms(clk), MEAO_TURN_LEASE_MS);
                if (e != MEAO_OK)
                    meao_log(MEAO_LOG_WARN, NULL, "lease_renew", "session %s: %s", t->s.public_id,
                             meao_strerror(e));
                next_renew = now + LEASE_RENEW_EVERY_MS;
            }
            continue;
        }
        if (e == MEAO_E_UNAVAILABLE || e == MEAO_E_IO)
            return turn_failed(t, MEAO_E_UNAVAILABLE, "Orchestrator connection lost mid-turn");
        if (e != MEAO_OK)
            return turn_failed(t, MEAO_E_PROVIDER, "Orchestrator sent an invalid frame");
        last_frame = now;
        if (type == MEAO_ORCH_MESSAGE_COMPLETE) {
            if (!meao_json_str(frame, "requestId") ||
                strcmp(meao_json_str(frame, "requestId"), t->req->request_id) != 0)
                e = turn_failed(t, MEAO_E_PROVIDER, "Orchestrator answered another turn");
            else
                e = turn_completed(t, frame);
            json_decref(frame);
            return e;
        }
        if (type == MEAO_ORCH_ERROR) {
            e = turn_error_frame(t, frame);
            json_decref(frame);
            return e;
        }
        if (type == MEAO_ORCH_APPROVAL_REQUEST)
            meao_log(MEAO_LOG_INFO, NULL, "approval_wait", "session %s waits on approval %s",
                     t->s.public_id, meao_json_str(frame, "approvalId"));
        /* text deltas, tool events, approval_resolved: the REST client gets the end result */
        json_decref(frame);
    }
}

enum meao_err meao_api_messages_post(struct meao_app *app, struct meao_req *req,
                                     struct meao_resp *resp)
{
    struct turn t = {.app = app, .req = req, .resp = resp};
    json_t *for_turn = NULL, *stored = NULL, *trusted = NULL, *history = NULL, *msg = NULL;
    json_t *policies = NULL;
    char *content = NULL, *stored_text = NULL, uid[24];
    struct meao_orch_client *c = NULL;
    enum meao_turn_refusal why;
    size_t base;
    enum meao_err e;

    e = meao_api_own_session(app, req, resp, &t.db, &t.s);
    if (e != MEAO_OK)
        return e;
    e = parse_content(json_object_get(req->json, "content"), resp, &content);
    if (e == MEAO_OK)
        e = parse_attachments(json_object_get(req->json, "attachments"), resp, &for_turn, &stored);
    if (e != MEAO_OK)
        goto out;
    if (t.s.ended) {
        e = meao_fail(resp, MEAO_E_CONFLICT, "Session has ended");
        goto out;
    }
    e = meao_session_trusted_tools(t.db, t.s.id, &trusted);
    if (e != MEAO_OK)
        goto out;

    /* the whole turn must fit one protocol line: measure it without history */
    meao_api_user_id(req, uid);
    msg = meao_orch_turn_request(req->request_id, t.s.public_id, uid, t.s.channel, t.s.work_dir,
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
    if (meao_workdir_ensure(app->cfg->workspace_root, t.s.work_dir) != MEAO_OK) {
        e = meao_fail(resp, MEAO_E_UNAVAILABLE, "The session's work directory is unavailable");
        goto out;
    }

    /* one turn at a time: take the lease and keep the message (pending) */
    meao_uuid4(t.lease);
    e = meao_turn_begin(t.db, &t.s,
                        &(struct meao_turn_start){.lease_token = t.lease,
                                                  .request_id = req->request_id,
                                                  .user_id = req->who.user_id,
                                                  .content = content,
                                                  .attachments = stored_text,
                                                  .lease_ms = MEAO_TURN_LEASE_MS},
                        meao_now_ms(app->clock), &t.user_msg, &why);
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
    t.leased = true;

    /* from here on every way out settles the message */
    e = meao_history_window(t.db, t.s.id, t.user_msg.id, MEAO_HISTORY_MAX_N, &history);
    if (e != MEAO_OK) {
        e = turn_failed(&t, MEAO_E_DB, "Database unavailable");
        goto out;
    }
    meao_orch_fit_history(history, MEAO_ORCH_MAX_LINE - 64 - base);
    json_object_set(msg, "history", history);

    e = meao_orch_connect(app->cfg->orchestrator_socket, app->clock,
                          app->cfg->orchestrator_connect_timeout_ms,
                          app->cfg->orchestrator_idle_timeout_ms, &c);
    if (e != MEAO_OK) {
        e = turn_failed(&t, MEAO_E_UNAVAILABLE, "Orchestrator unavailable");
        goto out;
    }
    e = meao_orch_send(c, msg, SEND_TIMEOUT_MS);
    if (e != MEAO_OK) {
        e = turn_failed(&t, MEAO_E_UNAVAILABLE, "Orchestrator unavailable");
        goto out;
    }
    e = run_turn(&t, c);
out:
    if (t.leased) /* not reached in practice: every path above settles */
        e = turn_failed(&t, e != MEAO_OK ? e : MEAO_E_INTERNAL, "Turn aborted");
    meao_orch_close(c);
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

/* ---- history ---- */

enum meao_err meao_api_messages_list(struct meao_app *app, struct meao_req *req,
                                     struct meao_resp *resp)
{
    char before[MEAO_PUBLIC_ID_LEN + 2], inc[8];
    struct meao_session s;
    struct meao_db *db;
    const struct meao_secrets *keys;
    bool include = false, more;
    int limit, rb, ri;
    json_t *list;
    enum meao_err e;

    e = meao_api_own_session(app, req, resp, &db, &s);
    if (e != MEAO_OK)
        return e;
    e = meao_api_limit(req, resp, 50, &limit);
    if (e != MEAO_OK)
        return e;
    rb = meao_api_query(req, "before", before, sizeof before);
    if (rb < 0 || (rb > 0 && !meao_public_id_valid(before, "msg_")))
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "before must be a message id");
    ri = meao_api_query(req, "includeContent", inc, sizeof inc);
    if (ri < 0 || (ri > 0 && strcmp(inc, "true") != 0 && strcmp(inc, "false") != 0))
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "includeContent must be true or false");
    /* content only for an owner who asks for it (a user asking gets no content) */
    include = ri > 0 && strcmp(inc, "true") == 0 && req->who.role == MEAO_ROLE_OWNER;
    keys = meao_app_secrets(app);
    if (keys == NULL)
        return meao_fail(resp, MEAO_E_UNAVAILABLE, "Server secrets unavailable");
    e = meao_messages_page(db, s.id,
                           &(struct meao_page_query){.limit = limit,
                                                     .before = rb > 0 ? before : NULL,
                                                     .include_content = include,
                                                     .hash_key = keys->content_key},
                           &list, &more);
    if (e == MEAO_E_NOT_FOUND)
        return meao_fail(resp, MEAO_E_INVALID_PARAMETER, "before is not a message of this session");
    if (e != MEAO_OK)
        return e;
    return meao_resp_ok(resp, req, 200,
                        json_pack("{s:o, s:b}", "messages", list, "hasMore", more ? 1 : 0),
                        meao_now_ms(app->clock));
}
