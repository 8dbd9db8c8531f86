/* CGI/1.1 parameters and bodies into struct meao_req, for every adapter. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgi.h"
#include "core/log.h"
#include "proto/fcgi.h"
#include "store/db.h"

void cgi_body_begin(struct cgi_body *b, long long declared, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max;
    if (declared > 0 && (unsigned long long)declared > max) {
        b->too_large = true; /* do not buffer what will be refused anyway */
        return;
    }
    if (declared > 0) {
        b->p = malloc((size_t)declared + 1);
        if (b->p != NULL)
            b->cap = (size_t)declared + 1;
    }
}

bool cgi_body_add(struct cgi_body *b, const void *data, size_t n)
{
    if (b->too_large || n == 0)
        return true;
    if (n > b->max - b->len) {
        cgi_body_free(b);
        b->too_large = true;
        return true;
    }
    if (b->len + n + 1 > b->cap) {
        /* no (or a lying) CONTENT_LENGTH: grow geometrically, never past max + 1 */
        size_t cap = b->cap ? b->cap * 2 : 4096;
        char *np;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > b->max + 1)
            cap = b->max + 1;
        np = realloc(b->p, cap);
        if (np == NULL) {
            cgi_body_free(b);
            b->too_large = true;
            return false;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return true;
}

void cgi_body_finish(struct cgi_body *b, struct meao_req *req)
{
    if (b->too_large) {
        req->body_too_large = true;
    } else if (b->p != NULL && b->len > 0) {
        b->p[b->len] = '\0';
        meao_req_take_body(req, b->p, b->len);
        b->p = NULL;
    }
    cgi_body_free(b);
}

void cgi_body_free(struct cgi_body *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

long long cgi_parse_content_length(const char *v, size_t n)
{
    long long x = 0;
    if (v == NULL || n == 0)
        return -1;
    if (n > 18)
        return (long long)1 << 62;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return (long long)1 << 62;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

bool cgi_req_from_fcgi_params(struct meao_req *req, const uint8_t *blk, size_t len)
{
    size_t off = 0;
    struct meao_fcgi_pair pr;
    while (meao_fcgi_params_next(blk, len, &off, &pr) == 1) {
        if (!meao_req_set_param(req, (const char *)pr.name, pr.name_len, (const char *)pr.value,
                                pr.value_len))
            return false;
    }
    return true;
}

long long cgi_fcgi_content_length(const uint8_t *blk, size_t len)
{
    size_t off = 0;
    struct meao_fcgi_pair pr;
    while (meao_fcgi_params_next(blk, len, &off, &pr) == 1) {
        if (pr.name_len == 14 && memcmp(pr.name, "CONTENT_LENGTH", 14) == 0)
            return cgi_parse_content_length((const char *)pr.value, pr.value_len);
    }
    return -1;
}

int cgi_run_to_file(struct meao_app *app, struct meao_req *req, FILE *out)
{
    struct meao_resp resp;
    struct meao_buf buf = {0};
    int rc = -1;

    meao_resp_init(&resp);
    meao_app_handle(app, req, &resp);
    if (!meao_resp_serialize_cgi(&resp, req->request_id, &buf)) {
        meao_log(MEAO_LOG_ERROR, req->request_id, __func__, "out of memory serialising response");
        goto out;
    }
    if (fwrite(buf.p, 1, buf.len, out) != buf.len || fflush(out) != 0) {
        meao_log(MEAO_LOG_ERROR, req->request_id, __func__, "writing the response: %s",
                 strerror(errno));
        goto out;
    }
    rc = 0;
out:
    meao_buf_free(&buf);
    meao_resp_free(&resp);
    return rc;
}

int cgi_main(const struct meao_config *cfg, char **envp, int in_fd, FILE *out)
{
    struct meao_app app;
    struct meao_req req;
    struct cgi_body body;
    int rc = 1;

    meao_req_init(&req);
    for (char **e = envp; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL || eq == *e)
            continue;
        if (!meao_req_set_param(&req, *e, (size_t)(eq - *e), eq + 1, strlen(eq + 1)))
            goto out_req;
    }
    /* CGI/1.1: the body is exactly CONTENT_LENGTH bytes; without it, none */
    cgi_body_begin(&body, req.content_length, (size_t)cfg->max_body_bytes);
    if (!body.too_large && req.content_length > 0) {
        char chunk[16384];
        size_t left = (size_t)req.content_length;
        while (left > 0) {
            ssize_t n = read(in_fd, chunk, left < sizeof chunk ? left : sizeof chunk);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break; /* short body: the router sees what arrived */
            cgi_body_add(&body, chunk, (size_t)n);
            left -= (size_t)n;
        }
    }
    cgi_body_finish(&body, &req);

    meao_app_init(&app, cfg, meao_clock_system(), "meao-cgi");
    rc = cgi_run_to_file(&app, &req, out) == 0 ? 0 : 1;
    meao_app_fini(&app);
out_req:
    meao_req_free(&req);
    return rc;
}

int cgi_migrate(const struct meao_config *cfg, int busy_timeout_ms)
{
    char err[256] = "";
    if (meao_store_migrate_path(cfg->db_path, busy_timeout_ms, err, sizeof err) != MEAO_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "migrate", "%s: %s", cfg->db_path, err);
        return -1;
    }
    return 0;
}
