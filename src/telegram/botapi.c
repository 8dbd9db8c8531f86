#include "telegram/botapi.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"

#define MAX_ANSWER    (4 * 1024 * 1024) /* a Bot API answer larger than this is refused */
#define MAX_TRIES     6
#define FIRST_BACKOFF 500

struct meao_tg_bot {
    CURL *h;
    char *base;
    char *token;
    int64_t timeout_ms;
    int64_t retry_max_ms;
    const int *stop;
    const struct meao_clock *clock;
    int64_t not_before_mono; /* a 429 asked us to wait until then */
};

struct meao_tg_bot *meao_tg_bot_new(const struct meao_tg_bot_opts *o)
{
    struct meao_tg_bot *b;
    size_t n;

    if (o->token == NULL || o->token[0] == '\0') {
        meao_log(MEAO_LOG_ERROR, NULL, "telegram_config", "telegram_bot_token is not set");
        return NULL;
    }
    b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->base = strdup(o->base);
    b->token = strdup(o->token);
    b->h = curl_easy_init();
    if (b->base == NULL || b->token == NULL || b->h == NULL) {
        meao_tg_bot_free(b);
        return NULL;
    }
    n = strlen(b->base);
    while (n > 0 && b->base[n - 1] == '/') /* "BASE/" and "BASE" are the same */
        b->base[--n] = '\0';
    b->timeout_ms = o->timeout_ms;
    b->retry_max_ms = o->retry_max_ms;
    b->stop = o->stop;
    b->clock = o->clock ? o->clock : meao_clock_system();
    return b;
}

void meao_tg_bot_free(struct meao_tg_bot *b)
{
    if (b == NULL)
        return;
    if (b->h)
        curl_easy_cleanup(b->h);
    if (b->token) {
        sodium_memzero(b->token, strlen(b->token));
        free(b->token);
    }
    free(b->base);
    free(b);
}

void meao_tg_bot_redact(const struct meao_tg_bot *b, char *s)
{
    static const char mark[] = "<token>";
    size_t tl;
    char *p;
    if (b == NULL || s == NULL || b->token == NULL || (tl = strlen(b->token)) == 0)
        return;
    while ((p = strstr(s, b->token)) != NULL) {
        /* the mark is never longer than a real token (Bot API tokens are ~46
         * characters); for a shorter one, blank it instead */
        if (tl >= sizeof mark - 1) {
            memcpy(p, mark, sizeof mark - 1);
            memmove(p + sizeof mark - 1, p + tl, strlen(p + tl) + 1);
        } else {
            memset(p, '*', tl);
        }
    }
}

static size_t on_body(char *data, size_t size, size_t n, void *ctx)
{
    struct meao_buf *buf = ctx;
    size_t len = size * n;
    if (buf->len + len > MAX_ANSWER || !meao_buf_append(buf, data, len))
        return 0; /* aborts the transfer */
    return len;
}

/* Sleep ms unless stop is set; false when stopped. */
static bool nap(const struct meao_tg_bot *b, int64_t ms)
{
    int64_t end = meao_mono_ms(b->clock) + ms;
    for (;;) {
        int64_t left = end - meao_mono_ms(b->clock);
        struct timespec ts;
        if (b->stop && __atomic_load_n(b->stop, __ATOMIC_ACQUIRE))
            return false;
        if (left <= 0)
            return true;
        if (left > 100)
            left = 100;
        ts.tv_sec = 0;
        ts.tv_nsec = (long)left * 1000000L;
        nanosleep(&ts, NULL);
    }
}

/* One HTTP exchange. *status 0 when there was no HTTP answer. */
static enum meao_err exchange(struct meao_tg_bot *b, const char *method, const char *body,
                              struct meao_buf *answer, long *status, char *why, size_t whylen)
{
    char url[2400], curlerr[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    CURLcode rc;

    *status = 0;
    if (hdrs == NULL)
        return MEAO_E_NOMEM;
    snprintf(url, sizeof url, "%s/bot%s/%s", b->base, b->token, method);
    curl_easy_reset(b->h);
    curl_easy_setopt(b->h, CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(b->h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(b->h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(b->h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(b->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(b->h, CURLOPT_POST, 1L);
    curl_easy_setopt(b->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(b->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(b->h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(b->h, CURLOPT_USERAGENT, "meao-telegram/" MEAO_VERSION);
    curl_easy_setopt(b->h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(b->h, CURLOPT_WRITEDATA, answer);
    curl_easy_setopt(b->h, CURLOPT_TIMEOUT_MS, (long)b->timeout_ms);
    curl_easy_setopt(b->h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(b->timeout_ms < 5000 ? b->timeout_ms : 5000));
    curl_easy_setopt(b->h, CURLOPT_ERRORBUFFER, curlerr);
    rc = curl_easy_perform(b->h);
    sodium_memzero(url, sizeof url);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        /* curl's message may quote the URL: redact before it goes anywhere */
        meao_tg_bot_redact(b, curlerr);
        snprintf(why, whylen, "%s: %s", method, curlerr[0] ? curlerr : curl_easy_strerror(rc));
        meao_tg_bot_redact(b, why);
        return MEAO_E_UNAVAILABLE;
    }
    curl_easy_getinfo(b->h, CURLINFO_RESPONSE_CODE, status);
    return MEAO_OK;
}

enum meao_err meao_tg_bot_call(struct meao_tg_bot *b, const char *method, const json_t *params,
                               enum meao_tg_retry retry, json_t **result, int *status, char *why,
                               size_t whylen)
{
    char local[256], *body = params ? meao_json_dump(params) : strdup("{}");
    int64_t backoff = FIRST_BACKOFF;
    enum meao_err e = MEAO_E_UNAVAILABLE;
    struct meao_buf answer = {0};

    if (why == NULL || whylen == 0) {
        why = local;
        whylen = sizeof local;
    }
    why[0] = '\0';
    if (result)
        *result = NULL;
    if (status)
        *status = 0;
    if (body == NULL)
        return MEAO_E_NOMEM;
    for (int attempt = 1;; attempt++) {
        long st = 0;
        json_t *doc = NULL;
        int64_t wait = -1, hold = b->not_before_mono - meao_mono_ms(b->clock);

        if (hold > 0) { /* Telegram's retry_after still runs */
            if (retry == MEAO_TG_ONCE || hold > b->retry_max_ms) {
                snprintf(why, whylen, "%s: rate limited by Telegram for %lld ms more", method,
                         (long long)hold);
                e = MEAO_E_RATE_LIMITED;
                break;
            }
            if (!nap(b, hold)) {
                e = MEAO_E_CANCELLED;
                break;
            }
        }
        meao_buf_reset(&answer);
        e = exchange(b, method, body, &answer, &st, why, whylen);
        if (status)
            *status = (int)st;
        if (e == MEAO_OK) {
            const json_t *params_v;
            doc = json_loadb(answer.p ? answer.p : "", answer.len, 0, NULL);
            params_v = json_object_get(doc, "parameters");
            if (st == 200 && json_is_true(json_object_get(doc, "ok"))) {
                if (result)
                    *result = json_incref(json_object_get(doc, "result"));
                json_decref(doc);
                break;
            }
            snprintf(why, whylen, "%s: HTTP %ld: %.160s", method, st,
                     meao_json_str(doc, "description") ? meao_json_str(doc, "description")
                                                       : "no description");
            meao_tg_bot_redact(b, why);
            if (st == 429) {
                json_int_t ra = json_integer_value(json_object_get(params_v, "retry_after"));
                wait = (ra > 0 ? ra : 1) * 1000;
                e = MEAO_E_RATE_LIMITED;
                b->not_before_mono = meao_mono_ms(b->clock) + wait;
                if (wait > b->retry_max_ms)
                    wait = -1; /* longer than we may wait: give up now */
            } else if (st >= 500 || st == 0) {
                e = MEAO_E_UNAVAILABLE;
                wait = backoff;
            } else {
                e = MEAO_E_INVALID_REQUEST; /* 4xx: this request will never work */
            }
            json_decref(doc);
        } else if (e == MEAO_E_UNAVAILABLE) {
            wait = backoff;
        }
        if (retry == MEAO_TG_ONCE || wait < 0 || attempt >= MAX_TRIES)
            break;
        meao_log(MEAO_LOG_WARN, NULL, "telegram_retry", "%s; retrying in %lld ms", why,
                 (long long)wait);
        if (e != MEAO_E_RATE_LIMITED && !nap(b, wait)) { /* a 429's wait is the hold above */
            e = MEAO_E_CANCELLED;
            break;
        }
        if (e != MEAO_E_RATE_LIMITED) {
            backoff *= 2;
            if (backoff > b->retry_max_ms)
                backoff = b->retry_max_ms;
        }
    }
    if (e != MEAO_OK)
        meao_log(MEAO_LOG_WARN, NULL, "telegram_call", "%s", why);
    meao_buf_free(&answer);
    free(body);
    return e;
}

enum meao_err meao_tg_send(struct meao_tg_bot *b, int64_t chat_id, const char *text,
                           const json_t *markup, int64_t *message_id)
{
    return meao_tg_send_ex(b, chat_id, text, markup, MEAO_TG_RETRY, message_id);
}

enum meao_err meao_tg_send_ex(struct meao_tg_bot *b, int64_t chat_id, const char *text,
                              const json_t *markup, enum meao_tg_retry retry, int64_t *message_id)
{
    json_t *p = json_pack("{s:I, s:s}", "chat_id", (json_int_t)chat_id, "text", text), *r = NULL;
    enum meao_err e;
    if (message_id)
        *message_id = 0;
    if (p == NULL)
        return MEAO_E_NOMEM;
    if (markup)
        json_object_set(p, "reply_markup", (json_t *)markup);
    e = meao_tg_bot_call(b, "sendMessage", p, retry, &r, NULL, NULL, 0);
    if (e == MEAO_OK && message_id)
        *message_id = (int64_t)json_integer_value(json_object_get(r, "message_id"));
    json_decref(r);
    json_decref(p);
    return e;
}

enum meao_err meao_tg_edit(struct meao_tg_bot *b, int64_t chat_id, int64_t message_id,
                           const char *text, const json_t *markup, enum meao_tg_retry retry)
{
    json_t *p = json_pack("{s:I, s:I, s:s}", "chat_id", (json_int_t)chat_id, "message_id",
                          (json_int_t)message_id, "text", text);
    char why[256];
    enum meao_err e;
    if (p == NULL)
        return MEAO_E_NOMEM;
    if (markup)
        json_object_set(p, "reply_markup", (json_t *)markup);
    e = meao_tg_bot_call(b, "editMessageText", p, retry, NULL, NULL, why, sizeof why);
    json_decref(p);
    /* the same text again (a resumed turn, a repeated final edit) is no failure */
    if (e == MEAO_E_INVALID_REQUEST && strstr(why, "message is not modified"))
        e = MEAO_OK;
    return e;
}

enum meao_err meao_tg_answer_callback(struct meao_tg_bot *b, const char *callback_id,
                                      const char *text, bool alert)
{
    json_t *p = json_pack("{s:s}", "callback_query_id", callback_id);
    enum meao_err e;
    if (p == NULL)
        return MEAO_E_NOMEM;
    if (text) {
        json_object_set_new(p, "text", json_string(text));
        if (alert)
            json_object_set_new(p, "show_alert", json_true());
    }
    e = meao_tg_bot_call(b, "answerCallbackQuery", p, MEAO_TG_RETRY, NULL, NULL, NULL, 0);
    json_decref(p);
    return e;
}
