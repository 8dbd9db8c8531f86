/* Telegram Bot API shapes, pure (no I/O): what kind an Update is and who and
 * which chat it is about, how a reply is cut to Telegram's 4096-character
 * message limit, and the callback data of the approval buttons. Shared by the
 * webhook (validation), the worker and the tests. */
#ifndef MEAO_PROTO_TELEGRAM_H
#define MEAO_PROTO_TELEGRAM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define MEAO_TG_TEXT_MAX     4096 /* characters (UTF-16 code units, see below) per message */
#define MEAO_TG_CALLBACK_MAX 64   /* bytes of callback_data */
#define MEAO_TG_KIND_LEN     32

/* The update kinds the worker acts on; everything else is acknowledged,
 * stored and marked ignored. */
enum meao_tg_kind { MEAO_TG_OTHER = 0, MEAO_TG_MESSAGE, MEAO_TG_CALLBACK };

struct meao_tg_update {
    int64_t update_id;
    enum meao_tg_kind kind;
    char kind_name[MEAO_TG_KIND_LEN + 1]; /* the Update's field, e.g. "edited_message" */
    int64_t chat_id;                      /* 0 when none */
    int64_t from_id;                      /* 0 when none */
    bool private_chat;                    /* chat.type == "private" */
    const char *text;                     /* message.text, borrowed from the JSON; NULL */
    const char *callback_id;              /* callback_query.id, borrowed; NULL */
    const char *callback_data;            /* callback_query.data, borrowed; NULL */
    int64_t callback_message_id;          /* the message the button belongs to; 0 */
    const char *from_name;                /* from.first_name or username, borrowed; NULL */
};

/* Classify a parsed Update. It must be an object with an integer update_id
 * >= 0; a message (message, edited_message, channel_post, ...) must carry
 * chat.id as an integer, a callback_query an id and from.id. On failure
 * MEAO_E_INVALID_REQUEST with a client-safe reason in why. Strings in out
 * are borrowed from update. */
enum meao_err meao_tg_update_parse(const json_t *update, struct meao_tg_update *out, char *why,
                                   size_t whylen);

/* Length of s in Telegram's units: UTF-16 code units (a character outside
 * the BMP counts 2), which is what the 4096 limit counts. s is valid UTF-8. */
size_t meao_tg_text_units(const char *s, size_t len);

/* Byte length of the longest prefix of s[0..len) that holds at most
 * max_units UTF-16 code units and ends on a character boundary; prefers to
 * cut after the last newline (else space) in the second half of that prefix,
 * so a long reply splits between lines. Always > 0 when len > 0 and
 * max_units >= 2. */
size_t meao_tg_split_point(const char *s, size_t len, size_t max_units);

/* Approval buttons: callback_data is "<action>:<approvalId>", action one of
 * 'a' (allow), 'd' (deny), 'i' (details). Returns false when data is not one
 * of ours; *action and the id (copied into id, idlen bytes) otherwise. */
bool meao_tg_callback_parse(const char *data, char *action, char *id, size_t idlen);

#endif
