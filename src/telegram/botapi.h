/* A Telegram Bot API client on libcurl (https://core.telegram.org/bots/api).
 *
 * Every call is POST BASE/bot<token>/METHOD with a JSON body; the answer is
 * {"ok":true,"result":...} or {"ok":false,"error_code","description",
 * "parameters":{"retry_after"}}. Retries: a 429 waits retry_after seconds
 * (when that fits the retry budget), a 5xx or a network failure backs off
 * (0.5 s, 1 s, 2 s, ... capped), a 4xx is never retried. After a 429 the
 * handle remembers until when Telegram asked it to wait: later calls wait
 * that long first (MEAO_TG_ONCE calls fail at once instead), so a streaming
 * edit that got a 429 also delays the final reply. The URL carries the
 * bot token: it is never logged, and every text this module logs or returns
 * has the token redacted.
 *
 * One handle per thread (it owns one curl easy handle). */
#ifndef MEAO_TELEGRAM_BOTAPI_H
#define MEAO_TELEGRAM_BOTAPI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/clock.h"
#include "core/err.h"

struct meao_tg_bot;

struct meao_tg_bot_opts {
    const char *base;     /* e.g. https://api.telegram.org (borrowed for the call) */
    const char *token;    /* the bot token (copied; wiped at free) */
    int64_t timeout_ms;   /* one HTTP exchange */
    int64_t retry_max_ms; /* longest single wait; a longer retry_after gives up */
    const int *stop;      /* optional: non-zero stops waiting between retries */
    const struct meao_clock *clock;
};

/* A new client, or NULL (out of memory, or an empty token: logged). The
 * caller owns it (meao_tg_bot_free). */
struct meao_tg_bot *meao_tg_bot_new(const struct meao_tg_bot_opts *o);

/* Free; accepts NULL. */
void meao_tg_bot_free(struct meao_tg_bot *b);

/* How hard a call tries. */
enum meao_tg_retry {
    MEAO_TG_RETRY = 0, /* 429 and 5xx retried as described above */
    MEAO_TG_ONCE,      /* one try (a streaming edit that the next one replaces) */
};

/* Call method with params (borrowed; NULL = {}). On success *result (may be
 * NULL) gets a new reference to "result". Errors: MEAO_E_INVALID_REQUEST
 * (a 4xx other than 429: the request is wrong, never retried),
 * MEAO_E_RATE_LIMITED (429 beyond the budget), MEAO_E_UNAVAILABLE (network
 * or 5xx after the retries), MEAO_E_CANCELLED (stop was set). why (may be
 * NULL) gets the Bot API's description or the failure, token redacted.
 * *status (may be NULL) gets the last HTTP status (0: no answer). */
enum meao_err meao_tg_bot_call(struct meao_tg_bot *b, const char *method, const json_t *params,
                               enum meao_tg_retry retry, json_t **result, int *status, char *why,
                               size_t whylen);

/* Replace every occurrence of the bot token in s (in place) with "<token>". */
void meao_tg_bot_redact(const struct meao_tg_bot *b, char *s);

/* sendMessage: text (at most 4096 characters) to chat_id, with an optional
 * reply_markup (borrowed), retried as meao_tg_bot_call does.
 * *message_id (may be NULL) gets the new message's id. */
enum meao_err meao_tg_send(struct meao_tg_bot *b, int64_t chat_id, const char *text,
                           const json_t *markup, int64_t *message_id);

/* The same with the retry policy chosen (MEAO_TG_ONCE for a streaming
 * update that a later one replaces). */
enum meao_err meao_tg_send_ex(struct meao_tg_bot *b, int64_t chat_id, const char *text,
                              const json_t *markup, enum meao_tg_retry retry, int64_t *message_id);

/* editMessageText; markup NULL removes the inline keyboard. "message is not
 * modified" counts as success. */
enum meao_err meao_tg_edit(struct meao_tg_bot *b, int64_t chat_id, int64_t message_id,
                           const char *text, const json_t *markup, enum meao_tg_retry retry);

/* answerCallbackQuery with an optional text (NULL) shown as a toast, or as an
 * alert when alert is true. */
enum meao_err meao_tg_answer_callback(struct meao_tg_bot *b, const char *callback_id,
                                      const char *text, bool alert);

#endif
