#include "http/http.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json.h"

void meao_req_init(struct meao_req *req)
{
    memset(req, 0, sizeof *req);
    req->content_length = -1;
}

void meao_req_free(struct meao_req *req)
{
    if (req == NULL)
        return;
    free(req->method);
    free(req->uri);
    free(req->query);
    free(req->content_type);
    if (req->authorization) {
        /* it is a credential: do not leave it in freed heap */
        memset(req->authorization, 0, strlen(req->authorization));
        free(req->authorization);
    }
    if (req->telegram_secret) {
        memset(req->telegram_secret, 0, strlen(req->telegram_secret));
        free(req->telegram_secret);
    }
    free(req->x_request_id);
    free(req->nginx_request_id);
    free(req->remote_addr);
    free(req->forwarded_for);
    free(req->user_agent);
    free(req->body);
    json_decref(req->json);
    meao_req_init(req);
}

static bool set_str(char **dst, const char *v, size_t n)
{
    char *p = malloc(n + 1);
    if (p == NULL)
        return false;
    memcpy(p, v, n);
    p[n] = '\0';
    free(*dst);
    *dst = p;
    return true;
}

struct param_slot {
    const char *name;
    size_t off;
};

#define SLOT(n, f)                                                                                 \
    {                                                                                              \
        n, offsetof(struct meao_req, f)                                                            \
    }
static const struct param_slot slots[] = {
    SLOT("REQUEST_METHOD", method),
    SLOT("REQUEST_URI", uri),
    SLOT("QUERY_STRING", query),
    SLOT("CONTENT_TYPE", content_type),
    SLOT("HTTP_AUTHORIZATION", authorization),
    SLOT("HTTP_X_REQUEST_ID", x_request_id),
    SLOT("MEAO_REQUEST_ID", nginx_request_id),
    SLOT("REMOTE_ADDR", remote_addr),
    SLOT("HTTP_X_FORWARDED_FOR", forwarded_for),
    SLOT("HTTP_USER_AGENT", user_agent),
    SLOT("HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN", telegram_secret),
};

bool meao_req_set_param(struct meao_req *req, const char *name, size_t name_len, const char *value,
                        size_t value_len)
{
    if (name_len == 14 && memcmp(name, "CONTENT_LENGTH", 14) == 0) {
        long long v = 0;
        size_t i;
        if (value_len == 0 || value_len > 18) {
            req->content_length = value_len == 0 ? -1 : (long long)1 << 62;
            return true;
        }
        for (i = 0; i < value_len; i++) {
            if (!isdigit((unsigned char)value[i])) {
                req->content_length = (long long)1 << 62; /* nonsense: treat as too large */
                return true;
            }
            v = v * 10 + (value[i] - '0');
        }
        req->content_length = v;
        return true;
    }
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
        if (strlen(slots[i].name) == name_len && memcmp(slots[i].name, name, name_len) == 0)
            return set_str((char **)((char *)req + slots[i].off), value, value_len);
    }
    return true;
}

void meao_req_take_body(struct meao_req *req, char *body, size_t len)
{
    free(req->body);
    req->body = body;
    req->body_len = len;
}

const char *meao_req_param(const struct meao_req *req, size_t i)
{
    return i < req->nparams ? req->params[i] : NULL;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode src[0..n) into out; false on malformed escapes, NUL or overflow. */
static bool pct_decode(const char *src, size_t n, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)src[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int h, l;
            if (i + 2 >= n)
                return false;
            h = hexval((unsigned char)src[i + 1]);
            l = hexval((unsigned char)src[i + 2]);
            if (h < 0 || l < 0)
                return false;
            c = h * 16 + l;
            i += 2;
        }
        if (c == 0 || j + 1 >= outlen)
            return false;
        out[j++] = (char)c;
    }
    out[j] = '\0';
    return true;
}

void meao_req_move(struct meao_req *dst, struct meao_req *src)
{
    *dst = *src;
    for (size_t i = 0; i < dst->nparams && i < MEAO_MAX_PATH_PARAMS; i++)
        if (src->params[i] >= src->path_buf &&
            src->params[i] < src->path_buf + sizeof src->path_buf)
            dst->params[i] = dst->path_buf + (src->params[i] - src->path_buf);
    meao_req_init(src);
}

void meao_req_mark_client_gone(struct meao_req *req)
{
    __atomic_store_n(&req->client_gone, 1, __ATOMIC_RELEASE);
}

bool meao_req_client_gone(const struct meao_req *req)
{
    return __atomic_load_n(&req->client_gone, __ATOMIC_ACQUIRE) != 0;
}

bool meao_req_query(const struct meao_req *req, const char *key, char *out, size_t outlen)
{
    const char *q = req->query;
    size_t kl = strlen(key);
    if (q == NULL)
        return false;
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t seg = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', seg);
        size_t namelen = eq ? (size_t)(eq - q) : seg;
        if (namelen == kl && memcmp(q, key, kl) == 0) {
            const char *v = eq ? eq + 1 : q + seg;
            size_t vl = eq ? seg - namelen - 1 : 0;
            return pct_decode(v, vl, out, outlen);
        }
        q += seg;
        if (*q == '&')
            q++;
    }
    return false;
}

void meao_resp_init(struct meao_resp *resp)
{
    memset(resp, 0, sizeof *resp);
    resp->status = 200;
}

void meao_resp_free(struct meao_resp *resp)
{
    if (resp == NULL)
        return;
    meao_buf_free(&resp->body);
    meao_resp_init(resp);
}

void meao_resp_reset(struct meao_resp *resp)
{
    struct meao_buf keep = resp->body;
    memset(resp, 0, sizeof *resp);
    resp->status = 200;
    resp->body = keep;
    meao_buf_reset(&resp->body);
}

void meao_resp_header(struct meao_resp *resp, const char *name, const char *fmt, ...)
{
    va_list ap;
    struct meao_resp_header *h;
    if (resp->nheaders >= MEAO_MAX_RESP_HEADERS)
        return;
    h = &resp->headers[resp->nheaders++];
    snprintf(h->name, sizeof h->name, "%s", name);
    va_start(ap, fmt);
    vsnprintf(h->value, sizeof h->value, fmt, ap);
    va_end(ap);
    /* headers are built by us, but never let a CR/LF split the response */
    for (char *p = h->value; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
}

enum meao_err meao_resp_json(struct meao_resp *resp, int status, json_t *v)
{
    char *s;
    if (v == NULL)
        return MEAO_E_NOMEM;
    s = meao_json_dump(v);
    json_decref(v);
    if (s == NULL)
        return MEAO_E_NOMEM;
    meao_buf_reset(&resp->body);
    if (!meao_buf_puts(&resp->body, s)) {
        free(s);
        return MEAO_E_NOMEM;
    }
    free(s);
    resp->status = status;
    resp->content_type = "application/json";
    return MEAO_OK;
}

enum meao_err meao_resp_ok(struct meao_resp *resp, const struct meao_req *req, int status,
                           json_t *data, int64_t now_ms)
{
    char ts[32];
    json_t *env;
    if (status == 204) {
        json_decref(data);
        meao_buf_reset(&resp->body);
        resp->status = 204;
        resp->content_type = NULL;
        return MEAO_OK;
    }
    if (data == NULL)
        data = json_object();
    env = json_pack("{s:s, s:s, s:b, s:o}", "requestId", req->request_id, "timestamp",
                    meao_iso8601(now_ms, ts, sizeof ts), "success", 1, "data", data);
    return meao_resp_json(resp, status, env);
}

void meao_resp_error(struct meao_resp *resp, const struct meao_req *req, enum meao_err e,
                     const char *message, json_t *details, int64_t retry_after_s, int64_t now_ms)
{
    const struct meao_err_info *info = meao_err_info(e);
    char ts[32];
    char msg[201];
    json_t *err, *env;

    snprintf(msg, sizeof msg, "%s", message ? message : info->message);
    for (char *p = msg; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    err = json_pack("{s:s, s:s}", "code", info->code, "message", msg);
    if (err && info->retryable)
        json_object_set_new(err, "retryable", json_true());
    if (err && retry_after_s > 0) {
        json_object_set_new(err, "retryAfter", json_integer(retry_after_s));
        meao_resp_header(resp, "Retry-After", "%lld", (long long)retry_after_s);
    }
    if (err && details)
        json_object_set(err, "details", details);
    json_decref(details);
    env = json_pack("{s:s, s:s, s:b, s:o*}", "requestId", req->request_id, "timestamp",
                    meao_iso8601(now_ms, ts, sizeof ts), "success", 0, "error", err);
    if (meao_resp_json(resp, info->status, env) != MEAO_OK) {
        /* out of memory: a fixed body still tells the client what happened */
        static const char fallback[] =
            "{\"success\":false,\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"Internal "
            "error\"}}";
        meao_buf_reset(&resp->body);
        (void)meao_buf_append(&resp->body, fallback, sizeof fallback - 1);
        resp->status = 500;
        resp->content_type = "application/json";
    }
}

enum meao_err meao_fail(struct meao_resp *resp, enum meao_err e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(resp->error_message, sizeof resp->error_message, fmt, ap);
    va_end(ap);
    return e;
}

bool meao_resp_serialize_cgi(const struct meao_resp *resp, const char *request_id,
                             struct meao_buf *out)
{
    bool ok =
        meao_buf_printf(out, "Status: %d %s\r\n", resp->status, meao_http_reason(resp->status));
    if (resp->status != 204 && resp->content_type)
        ok = ok && meao_buf_printf(out, "Content-Type: %s\r\n", resp->content_type);
    if (request_id && request_id[0])
        ok = ok && meao_buf_printf(out, "X-Request-ID: %s\r\n", request_id);
    if (resp->no_store)
        ok = ok && meao_buf_puts(out, "Cache-Control: no-store\r\n");
    for (size_t i = 0; i < resp->nheaders; i++)
        ok =
            ok && meao_buf_printf(out, "%s: %s\r\n", resp->headers[i].name, resp->headers[i].value);
    if (resp->status != 204) {
        ok = ok && meao_buf_printf(out, "Content-Length: %zu\r\n\r\n", resp->body.len);
        if (!resp->omit_body)
            ok = ok && meao_buf_append(out, resp->body.p ? resp->body.p : "", resp->body.len);
    } else {
        ok = ok && meao_buf_puts(out, "\r\n");
    }
    return ok;
}
