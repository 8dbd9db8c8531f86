/* meao-replay: run one raw request through the gateway's router without nginx.
 *
 *   meao-replay [-c CONFIG] FILE|-
 *
 * FILE holds CGI parameters, one NAME=value per line (REQUEST_METHOD,
 * REQUEST_URI, CONTENT_TYPE, HTTP_AUTHORIZATION, HTTP_X_REQUEST_ID, ...), a
 * blank line, then the body bytes verbatim. CONTENT_LENGTH is set from the
 * body when absent; QUERY_STRING from REQUEST_URI when absent. Lines starting
 * with '#' are comments. The CGI response goes to stdout. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgi.h"
#include "core/log.h"

#define MAX_HEADER_BYTES (64u * 1024u) /* the FastCGI responder's params limit */

static void usage(FILE *out)
{
    fprintf(out, "usage: meao-replay [-c CONFIG] FILE\n"
                 "\n"
                 "Runs one request through the gateway's router and prints the CGI response.\n"
                 "FILE (- for stdin): NAME=value parameter lines, a blank line, the body.\n"
                 "\n"
                 "  -c, --config FILE  configuration file (db_path, limits, ...)\n"
                 "  -h, --help         this text\n");
}

/* Read all of f, up to max bytes (more is an error). Caller frees *out. */
static int slurp(FILE *f, size_t max, char **out, size_t *len)
{
    size_t cap = 8192, n = 0;
    char *p = malloc(cap + 1);
    if (p == NULL)
        return -1;
    for (;;) {
        size_t r;
        if (n == cap) {
            char *np;
            if (cap >= max) {
                free(p);
                errno = EFBIG;
                return -1;
            }
            cap = cap * 2 > max ? max : cap * 2;
            np = realloc(p, cap + 1);
            if (np == NULL) {
                free(p);
                return -1;
            }
            p = np;
        }
        r = fread(p + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                free(p);
                return -1;
            }
            break;
        }
    }
    p[n] = '\0';
    *out = p;
    *len = n;
    return 0;
}

/* Apply the parameter lines of buf; returns the offset of the body. */
static long parse_params(struct meao_req *req, const char *buf, size_t len, bool *has_cl,
                         bool *has_qs)
{
    size_t off = 0;
    int lineno = 0;
    while (off < len) {
        const char *nl = memchr(buf + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - buf) : len;
        size_t ll = end - off;
        const char *line = buf + off, *eq;
        lineno++;
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        off = nl ? end + 1 : len;
        if (ll == 0)
            return (long)off; /* the blank line: the body follows */
        if (line[0] == '#')
            continue;
        eq = memchr(line, '=', ll);
        if (eq == NULL || eq == line || off > MAX_HEADER_BYTES) {
            fprintf(stderr, "meao-replay: line %d: expected NAME=value\n", lineno);
            return -1;
        }
        if ((size_t)(eq - line) == 14 && memcmp(line, "CONTENT_LENGTH", 14) == 0)
            *has_cl = true;
        if ((size_t)(eq - line) == 12 && memcmp(line, "QUERY_STRING", 12) == 0)
            *has_qs = true;
        if (!meao_req_set_param(req, line, (size_t)(eq - line), eq + 1,
                                ll - (size_t)(eq - line) - 1))
            return -1;
    }
    return (long)len; /* no blank line: no body */
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *file;
    struct meao_config cfg;
    struct meao_app app;
    struct meao_req req;
    struct cgi_body body;
    char err[256], *buf = NULL;
    size_t len, blen;
    bool has_cl = false, has_qs = false;
    long boff;
    int c, rc = 1;
    FILE *f;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    file = argv[optind];
    if (meao_config_load(&cfg, config_path, err, sizeof err) < 0) {
        fprintf(stderr, "meao-replay: %s\n", err);
        meao_config_free(&cfg);
        return 2;
    }
    meao_log_init("meao-replay", cfg.log_level);
    meao_req_init(&req);
    f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
    if (f == NULL) {
        fprintf(stderr, "meao-replay: %s: %s\n", file, strerror(errno));
        goto out;
    }
    /* a body over the limit is still read, so the router can answer 413 */
    if (slurp(f, MAX_HEADER_BYTES + (size_t)cfg.max_body_bytes + 1, &buf, &len) < 0) {
        fprintf(stderr, "meao-replay: %s: %s\n", file, strerror(errno));
        if (f != stdin)
            fclose(f);
        goto out;
    }
    if (f != stdin)
        fclose(f);
    boff = parse_params(&req, buf, len, &has_cl, &has_qs);
    if (boff < 0)
        goto out;
    blen = len - (size_t)boff;
    if (!has_cl && blen > 0) {
        char cl[24];
        int n = snprintf(cl, sizeof cl, "%zu", blen);
        meao_req_set_param(&req, "CONTENT_LENGTH", 14, cl, (size_t)n);
    }
    if (!has_qs && req.uri && strchr(req.uri, '?')) {
        const char *q = strchr(req.uri, '?') + 1;
        meao_req_set_param(&req, "QUERY_STRING", 12, q, strcspn(q, "#"));
    }
    /* the body is what the file holds, cut to a smaller CONTENT_LENGTH */
    if (req.content_length >= 0 && (unsigned long long)req.content_length < blen)
        blen = (size_t)req.content_length;
    cgi_body_begin(&body, req.content_length, (size_t)cfg.max_body_bytes);
    cgi_body_add(&body, buf + boff, blen);
    cgi_body_finish(&body, &req);

    if (meao_lib_init() < 0) {
        fprintf(stderr, "meao-replay: library initialisation failed\n");
        goto out;
    }
    if (cgi_migrate(&cfg, (int)cfg.db_busy_timeout_ms) < 0)
        fprintf(stderr, "meao-replay: continuing without migrations (see the log line)\n");
    meao_app_init(&app, &cfg, meao_clock_system(), "meao-replay");
    rc = cgi_run_to_file(&app, &req, stdout) == 0 ? 0 : 1;
    meao_app_fini(&app);
out:
    free(buf);
    meao_req_free(&req);
    meao_config_free(&cfg);
    return rc;
}
