#include "orchestrator/provider_http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* --- scrubbing ---------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t need;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        need = 2;
        cp = s[0] & 0x1F;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        need = 3;
        cp = s[0] & 0x0F;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        need = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((need == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return need;
}

static bool keyish(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '*' || c >= 0x80;
}

/* Replace every occurrence of needle in b with "[redacted]". */
static bool redact_all(struct meao_buf *b, const char *needle, size_t nlen)
{
    struct meao_buf o = {0};
    size_t i = 0;
    bool ok = true;
    if (nlen == 0 || b->len < nlen)
        return true;
    while (ok && i < b->len) {
        if (b->len - i >= nlen && memcmp(b->p + i, needle, nlen) == 0) {
            ok = meao_buf_puts(&o, "[redacted]");
            i += nlen;
        } else {
            ok = meao_buf_append(&o, b->p + i, 1);
            i++;
        }
    }
    if (ok) {
        meao_buf_free(b);
        *b = o;
    } else {
        meao_buf_free(&o);
    }
    return ok;
}

/* Replace words that look like provider API keys ("sk-…", "sk-ant-…",
 * "sk-proj-…", even partly masked) with "[redacted]". */
static bool redact_keyish(struct meao_buf *b)
{
    struct meao_buf o = {0};
    size_t i = 0;
    bool ok = true;
    while (ok && i < b->len) {
        bool start = i == 0 || !keyish((unsigned char)b->p[i - 1]);
        if (start && b->len - i >= 3 && memcmp(b->p + i, "sk-", 3) == 0) {
            while (i < b->len && keyish((unsigned char)b->p[i]))
                i++;
            ok = meao_buf_puts(&o, "[redacted]");
        } else {
            ok = meao_buf_append(&o, b->p + i, 1);
            i++;
        }
    }
    if (ok) {
        meao_buf_free(b);
        *b = o;
    } else {
        meao_buf_free(&o);
    }
    return ok;
}

void meao_provider_http_scrub(const char *s, size_t len, const char *secret, size_t max, char *out,
                              size_t outlen)
{
    struct meao_buf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, keep;
    bool space = true; /* drops leading spaces */

    if (outlen == 0)
        return;
    out[0] = '\0';
    if (len > MEAO_PROVIDER_HTTP_MAX_ERROR)
        len = MEAO_PROVIDER_HTTP_MAX_ERROR;
    while (i < len) {
        size_t n = utf8_len(u + i, len - i);
        bool ok;
        if (n == 1 && (u[i] < 0x20 || u[i] == 0x7F || u[i] == ' ')) {
            ok = space || meao_buf_append(&b, " ", 1);
            space = true;
        } else if (n == 0) {
            ok = meao_buf_append(&b, "?", 1);
            space = false;
            n = 1;
        } else {
            ok = meao_buf_append(&b, s + i, n);
            space = false;
        }
        if (!ok)
            goto out;
        i += n ? n : 1;
    }
    while (b.len > 0 && b.p[b.len - 1] == ' ')
        b.len--;
    if (b.p)
        b.p[b.len] = '\0';
    if (secret && !redact_all(&b, secret, strlen(secret)))
        goto out;
    if (!redact_keyish(&b) || b.p == NULL)
        goto out;
    meao_log_redact(b.p);
    b.len = strlen(b.p);
    keep = b.len;
    if (keep > max) {
        keep = max;
        while (keep > 0 && ((unsigned char)b.p[keep] & 0xC0) == 0x80)
            keep--;
    }
    snprintf(out, outlen, "%.*s%s", (int)keep, b.p, keep < b.len ? "..." : "");
    /* snprintf may itself have cut inside a UTF-8 sequence */
    for (size_t n = strlen(out); n > 0 && ((unsigned char)out[n - 1] & 0x80);) {
        size_t start = n - 1;
        while (start > 0 && ((unsigned char)out[start] & 0xC0) == 0x80)
            start--;
        if (utf8_len((const unsigned char *)out + start, n - start) == n - start)
            break;
        out[start] = '\0';
        n = start;
    }
out:
    meao_buf_free(&b);
}

/* --- URLs --------------------------------------------------------------- */

static bool loopback_host(const char *host)
{
    char h[64];
    unsigned char a[16];
    size_t n = strlen(host);

    if (strcasecmp(host, "localhost") == 0)
        return true;
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        if (n - 2 >= sizeof h)
            return false;
        memcpy(h, host + 1, n - 2);
        h[n - 2] = '\0';
        if (inet_pton(AF_INET6, h, a) != 1)
            return false;
        /* ::1, or ::ffff:127.x.y.z */
        static const unsigned char lo6[16] = {[15] = 1};
        static const unsigned char mapped[12] = {[10] = 0xFF, [11] = 0xFF};
        return memcmp(a, lo6, 16) == 0 || (memcmp(a, mapped, 12) == 0 && a[12] == 127);
    }
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127;
    return false;
}

enum meao_err meao_provider_http_check_base_url(const char *provider, const char *url, char *err,
                                                size_t errlen)
{
    enum meao_err e = MEAO_E_INVALID_PARAMETER;
    CURLU *u = NULL;
    char *scheme = NULL, *host = NULL, *user = NULL, *query = NULL, *frag = NULL;
    const char *why = NULL;

    pthread_once(&curl_once, curl_init);
    u = curl_url();
    if (u == NULL) {
        e = MEAO_E_NOMEM;
        why = "out of memory";
        goto out;
    }
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        why = "not a valid absolute URL";
        goto out;
    }
    if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0) {
        why = "only http and https are supported";
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
        why = "must not carry user info (put the key in provider_api_key)";
        goto out;
    }
    if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_OK) {
        why = "must not have a query or fragment";
        goto out;
    }
    if (strcmp(scheme, "http") == 0 && !loopback_host(host)) {
        why = "plain http is allowed only to a loopback host; use https";
        goto out;
    }
    e = MEAO_OK;
out:
    if (e != MEAO_OK && err && errlen)
        snprintf(err, errlen, "%s: provider_base_url %s", provider, why);
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(query);
    curl_free(frag);
    curl_url_cleanup(u);
    return e;
}

char *meao_provider_http_join(const char *base, const char *path)
{
    size_t n = strlen(base), m = strlen(path);
    char *s;
    while (n > 0 && base[n - 1] == '/')
        n--;
    s = malloc(n + m + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, base, n);
    memcpy(s + n, path, m + 1);
    return s;
}

/* --- one streamed call -------------------------------------------------- */

struct xfer {
    const struct meao_provider_http_call *c;
    CURL *h;
    struct meao_sse sse;
    long status;
    struct meao_buf errbody; /* non-2xx body, bounded */
    char retry_after[32];    /* Retry-After header, when sent */
    char content_type[64];   /* Content-Type header, when sent */
    bool not_sse;            /* a 2xx answer that is not an event stream */
    enum meao_err result;    /* set by a callback that stopped the transfer */
    bool finished;           /* on_event saw the end marker */
    bool body_started;       /* a body byte arrived */
    int64_t last_byte_ms;    /* monotonic time of the last body byte */
    char msg[512];           /* the line that goes with result */
};

static bool on_sse(void *ud, const struct meao_sse_event *ev)
{
    struct xfer *x = ud;
    enum meao_err e = x->c->on_event(x->c->ctx, ev, &x->finished, x->msg, sizeof x->msg);
    if (e != MEAO_OK) {
        x->result = e;
        return false;
    }
    return !x->finished;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * nmemb;
    enum meao_sse_status st;

    x->body_started = true;
    x->last_byte_ms = meao_mono_ms(meao_clock_system());
    if (x->status == 0) {
        curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
        /* a server that ignored "stream": true (or a proxy's page) answers
         * with something else; no Content-Type at all is given the benefit
         * of the doubt */
        x->not_sse =
            x->content_type[0] && strncasecmp(x->content_type, "text/event-stream", 17) != 0;
    }
    if (x->status < 200 || x->status >= 300 || x->not_sse) {
        size_t room = MEAO_PROVIDER_HTTP_MAX_ERROR - x->errbody.len;
        if (!meao_buf_append(&x->errbody, p, len < room ? len : room)) {
            x->result = MEAO_E_NOMEM;
            return 0;
        }
        return len;
    }
    st = meao_sse_feed(&x->sse, p, len, on_sse, x);
    switch (st) {
    case MEAO_SSE_OK: return len;
    case MEAO_SSE_STOPPED: return 0; /* x->result or x->finished says why */
    case MEAO_SSE_TOO_LARGE:
        x->result = MEAO_E_PROVIDER;
        snprintf(x->msg, sizeof x->msg, "%s: a stream event exceeds %d bytes", x->c->provider,
                 MEAO_PROVIDER_HTTP_MAX_EVENT);
        return 0;
    case MEAO_SSE_NOMEM: break;
    }
    x->result = MEAO_E_NOMEM;
    return 0;
}

/* Copy the value of header line p (name: value) into out, keeping only
 * characters safe to quote, trimmed. */
static void header_value(const char *p, size_t len, size_t name_len, char *out, size_t outlen)
{
    size_t j = 0, i = name_len;
    while (i < len && p[i] == ' ')
        i++;
    for (; i < len && j < outlen - 1; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch >= 0x20 && ch < 0x7F)
            out[j++] = (char)ch;
    }
    while (j > 0 && out[j - 1] == ' ')
        j--;
    out[j] = '\0';
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * nmemb;

    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* a new response (after a 1xx): forget the previous one's headers */
        x->retry_after[0] = x->content_type[0] = '\0';
    } else if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
        header_value(p, len, 12, x->retry_after, sizeof x->retry_after);
    } else if (len > 13 && strncasecmp(p, "content-type:", 13) == 0) {
        header_value(p, len, 13, x->content_type, sizeof x->content_type);
    }
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct xfer *x = ud;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    if (x->c->sink->cancelled && x->c->sink->cancelled(x->c->sink->ctx)) {
        x->result = MEAO_E_CANCELLED;
        snprintf(x->msg, sizeof x->msg, "%s: cancelled", x->c->provider);
        return 1;
    }
    return 0;
}

/* "HTTP 429 rate_limit_error: <message> (retry after 7 s)" from the body. */
static void describe_http_error(struct xfer *x, char *err, size_t errlen)
{
    const struct meao_provider_http_call *c = x->c;
    json_t *v = NULL, *e;
    const char *label = NULL, *message = NULL;
    char lab[64] = "", text[MEAO_PROVIDER_HTTP_MAX_DETAIL * 2 + 64] = "", retry[64] = "";

    if (x->errbody.len > 0)
        v = json_loadb(x->errbody.p, x->errbody.len, 0, NULL);
    if (json_is_object(v)) {
        e = json_object_get(v, "error");
        if (json_is_object(e)) {
            label = meao_json_str(e, "code");
            if (label == NULL)
                label = meao_json_str(e, "type");
            message = meao_json_str(e, "message");
        } else if (json_is_string(e)) {
            message = json_string_value(e);
        } else {
            message = meao_json_str(v, "message");
        }
    }
    if (label)
        meao_provider_http_scrub(label, strlen(label), c->secret, 48, lab, sizeof lab);
    if (message) {
        meao_provider_http_scrub(message, strlen(message), c->secret, MEAO_PROVIDER_HTTP_MAX_DETAIL,
                                 text, sizeof text);
    } else if (v == NULL && x->errbody.len > 0 && x->errbody.p[0] != '<') {
        /* a plain-text body (a proxy's or a local server's); HTML is noise */
        meao_provider_http_scrub(x->errbody.p, x->errbody.len, c->secret,
                                 MEAO_PROVIDER_HTTP_MAX_DETAIL, text, sizeof text);
    }
    if (x->retry_after[0])
        snprintf(retry, sizeof retry, " (retry after %s%s)", x->retry_after,
                 strspn(x->retry_after, "0123456789") == strlen(x->retry_after) ? " s" : "");
    if (x->status >= 300 && x->status < 400)
        snprintf(err, errlen, "%s: HTTP %ld (redirects are not followed; check provider_base_url)",
                 c->provider, x->status);
    else if (x->not_sse && x->status >= 200 && x->status < 300)
        snprintf(err, errlen, "%s: HTTP %ld is not an event stream (content-type %s)%s%s",
                 c->provider, x->status, x->content_type, text[0] ? ": " : "", text);
    else
        snprintf(err, errlen, "%s: HTTP %ld%s%s%s%s%s", c->provider, x->status, lab[0] ? " " : "",
                 lab, text[0] ? ": " : "", text, retry);
    json_decref(v);
}

/* after the provider's own; "Expect:" turns off 100-continue */
static const char *const our_headers[] = {"Content-Type: application/json",
                                          "Accept: text/event-stream", "Expect:", NULL};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

enum meao_err meao_provider_http_post_sse(const struct meao_provider_http_call *c,
                                          long *http_status, char *err, size_t errlen)
{
    struct xfer x = {.c = c, .result = MEAO_OK};
    struct curl_slist *hdrs = NULL, *t;
    CURLM *m = NULL;
    CURLcode res = CURLE_OK;
    CURLMcode mc;
    enum meao_err e = MEAO_E_NOMEM;
    char curlerr[CURL_ERROR_SIZE] = "";
    int64_t start = meao_mono_ms(meao_clock_system()), elapsed;
    curl_off_t connected = 0;
    bool added = false, done = false;
    int running = 1;

    meao_sse_init(&x.sse, MEAO_PROVIDER_HTTP_MAX_EVENT);
    if (http_status)
        *http_status = 0;
    pthread_once(&curl_once, curl_init);
    if (curl_init_result != CURLE_OK) {
        e = MEAO_E_INTERNAL;
        set_err(err, errlen, "%s: libcurl failed to initialise", c->provider);
        goto out;
    }
    x.h = curl_easy_init();
    m = curl_multi_init();
    if (x.h == NULL || m == NULL)
        goto nomem;
    for (const char *const *h = c->headers; h && *h; h++) {
        if ((t = curl_slist_append(hdrs, *h)) == NULL)
            goto nomem;
        hdrs = t;
    }
    for (const char *const *h = our_headers; *h; h++) {
        if ((t = curl_slist_append(hdrs, *h)) == NULL)
            goto nomem;
        hdrs = t;
    }
    curl_easy_setopt(x.h, CURLOPT_URL, c->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(x.h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(x.h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(x.h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(x.h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x.h, CURLOPT_POST, 1L);
    curl_easy_setopt(x.h, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(x.h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
    curl_easy_setopt(x.h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(x.h, CURLOPT_USERAGENT, "meao-orchestrator/" MEAO_VERSION);
    curl_easy_setopt(x.h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(x.h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(x.h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(x.h, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(x.h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(x.h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(x.h, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(x.h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(x.h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(c->timeout_ms < 10000 ? c->timeout_ms : 10000));
    curl_easy_setopt(x.h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(x.h, CURLOPT_ERRORBUFFER, curlerr);
    if (curl_multi_add_handle(m, x.h) != CURLM_OK)
        goto nomem;
    added = true;

    /* drive the transfer ourselves so cancellation is noticed within
     * MEAO_PROVIDER_HTTP_POLL_MS even while no byte arrives */
    for (;;) {
        CURLMsg *msg;
        int left;
        mc = curl_multi_perform(m, &running);
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == x.h) {
                res = msg->data.result;
                done = true;
            }
        }
        if (mc != CURLM_OK) {
            e = MEAO_E_PROVIDER;
            set_err(err, errlen, "%s: transport error: %s", c->provider, curl_multi_strerror(mc));
            goto out;
        }
        if (done || running == 0 || x.result != MEAO_OK)
            break;
        if (c->sink->cancelled && c->sink->cancelled(c->sink->ctx)) {
            x.result = MEAO_E_CANCELLED;
            snprintf(x.msg, sizeof x.msg, "%s: cancelled", c->provider);
            break;
        }
        if (c->stall_ms > 0 && x.body_started &&
            meao_mono_ms(meao_clock_system()) - x.last_byte_ms > c->stall_ms) {
            x.result = MEAO_E_TIMEOUT;
            snprintf(x.msg, sizeof x.msg, "%s: the stream stalled (no data for %lld ms)",
                     c->provider, (long long)c->stall_ms);
            break;
        }
        mc = curl_multi_poll(m, NULL, 0, MEAO_PROVIDER_HTTP_POLL_MS, NULL);
        if (mc != CURLM_OK) {
            e = MEAO_E_PROVIDER;
            set_err(err, errlen, "%s: transport error: %s", c->provider, curl_multi_strerror(mc));
            goto out;
        }
    }
    if (x.status == 0)
        curl_easy_getinfo(x.h, CURLINFO_RESPONSE_CODE, &x.status);
    if (http_status)
        *http_status = x.status;
    elapsed = meao_mono_ms(meao_clock_system()) - start;

    if (x.result != MEAO_OK) {
        e = x.result;
        if (e == MEAO_E_NOMEM)
            set_err(err, errlen, "%s: out of memory", c->provider);
        else
            set_err(err, errlen, "%s", x.msg);
        goto out;
    }
    if (x.finished) {
        e = MEAO_OK;
        goto out;
    }
    if (res == CURLE_OPERATION_TIMEDOUT) {
        e = MEAO_E_TIMEOUT;
        curl_easy_getinfo(x.h, CURLINFO_CONNECT_TIME_T, &connected);
        if (connected == 0 && elapsed + MEAO_PROVIDER_HTTP_POLL_MS < c->timeout_ms)
            set_err(err, errlen, "%s: cannot connect within %lld ms", c->provider,
                    (long long)elapsed);
        else
            set_err(err, errlen, "%s: no complete answer within %lld ms (provider_timeout_ms)",
                    c->provider, (long long)c->timeout_ms);
        goto out;
    }
    if (res == CURLE_ABORTED_BY_CALLBACK) {
        e = MEAO_E_CANCELLED;
        set_err(err, errlen, "%s: cancelled", c->provider);
        goto out;
    }
    if (x.status >= 300 || (x.status > 0 && x.status < 200) || x.not_sse) {
        e = MEAO_E_PROVIDER;
        if (err && errlen)
            describe_http_error(&x, err, errlen);
        goto out;
    }
    if (res != CURLE_OK) {
        char detail[MEAO_PROVIDER_HTTP_MAX_DETAIL + 8];
        const char *what = curlerr[0] ? curlerr : curl_easy_strerror(res);
        meao_provider_http_scrub(what, strlen(what), c->secret, MEAO_PROVIDER_HTTP_MAX_DETAIL,
                                 detail, sizeof detail);
        e = MEAO_E_PROVIDER;
        set_err(err, errlen,
                x.status ? "%s: the stream was cut: %s" : "%s: cannot reach the provider: %s",
                c->provider, detail);
        goto out;
    }
    e = MEAO_OK;
    goto out;
nomem:
    e = MEAO_E_NOMEM;
    set_err(err, errlen, "%s: out of memory", c->provider);
out:
    if (added)
        curl_multi_remove_handle(m, x.h);
    curl_multi_cleanup(m);
    curl_easy_cleanup(x.h);
    curl_slist_free_all(hdrs);
    meao_sse_free(&x.sse);
    meao_buf_free(&x.errbody);
    return e;
}
