#include "proto/telegram.h"

#include <stdio.h>
#include <string.h>

#include "core/json.h"

/* The Update fields that carry a Message (Bot API "Update"). */
static const char *const message_fields[] = {
    "message", "edited_message", "channel_post", "edited_channel_post", "business_message",
};

static bool int_field(const json_t *o, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

static bool kind_name_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > MEAO_TG_KIND_LEN)
        return false;
    for (; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || *k == '_'))
            return false;
    return true;
}

static enum meao_err fail(char *why, size_t whylen, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    return MEAO_E_INVALID_REQUEST;
}

static const char *sender_name(const json_t *from)
{
    const char *n = meao_json_str(from, "username");
    return n ? n : meao_json_str(from, "first_name");
}

enum meao_err meao_tg_update_parse(const json_t *update, struct meao_tg_update *out, char *why,
                                   size_t whylen)
{
    const char *key;
    json_t *v;

    memset(out, 0, sizeof *out);
    if (!json_is_object(update))
        return fail(why, whylen, "An Update must be a JSON object");
    if (!int_field(update, "update_id", &out->update_id) || out->update_id < 0)
        return fail(why, whylen, "update_id must be a non-negative integer");
    /* the kind is the Update's one optional field besides update_id */
    json_object_foreach((json_t *)update, key, v)
    {
        if (strcmp(key, "update_id") == 0)
            continue;
        if (!json_is_object(v))
            return fail(why, whylen, "Update fields other than update_id must be objects");
        if (out->kind_name[0] == '\0')
            snprintf(out->kind_name, sizeof out->kind_name, "%s",
                     kind_name_ok(key) ? key : "unknown");
    }
    if (out->kind_name[0] == '\0')
        snprintf(out->kind_name, sizeof out->kind_name, "empty");

    for (size_t i = 0; i < sizeof message_fields / sizeof message_fields[0]; i++) {
        const json_t *m = json_object_get(update, message_fields[i]);
        const json_t *chat, *text;
        if (m == NULL)
            continue;
        chat = json_object_get(m, "chat");
        if (!int_field(chat, "id", &out->chat_id))
            return fail(why, whylen, "A message must carry chat.id as an integer");
        if (json_object_get(m, "from") &&
            !int_field(json_object_get(m, "from"), "id", &out->from_id))
            return fail(why, whylen, "message.from.id must be an integer");
        text = json_object_get(m, "text");
        if (text && !json_is_string(text))
            return fail(why, whylen, "message.text must be a string");
        out->private_chat =
            meao_json_str(chat, "type") && strcmp(meao_json_str(chat, "type"), "private") == 0;
        out->from_name = sender_name(json_object_get(m, "from"));
        /* only new messages are acted on; edits and channel posts are kept, ignored */
        if (strcmp(message_fields[i], "message") == 0) {
            out->kind = MEAO_TG_MESSAGE;
            out->text = json_string_value(text);
        }
        return MEAO_OK;
    }
    v = json_object_get(update, "callback_query");
    if (v) {
        const json_t *msg = json_object_get(v, "message");
        const json_t *data = json_object_get(v, "data");
        out->callback_id = meao_json_str(v, "id");
        if (out->callback_id == NULL || out->callback_id[0] == '\0')
            return fail(why, whylen, "callback_query.id must be a non-empty string");
        if (!int_field(json_object_get(v, "from"), "id", &out->from_id))
            return fail(why, whylen, "callback_query.from.id must be an integer");
        if (data && !json_is_string(data))
            return fail(why, whylen, "callback_query.data must be a string");
        out->callback_data = json_string_value(data);
        if (msg) {
            (void)int_field(json_object_get(msg, "chat"), "id", &out->chat_id);
            (void)int_field(msg, "message_id", &out->callback_message_id);
        }
        out->from_name = sender_name(json_object_get(v, "from"));
        out->kind = MEAO_TG_CALLBACK;
    }
    return MEAO_OK;
}

/* Bytes of the UTF-8 sequence starting with lead byte c (1 for a stray byte). */
static size_t seq_len(unsigned char c)
{
    if (c >= 0xf0)
        return 4;
    if (c >= 0xe0)
        return 3;
    if (c >= 0xc0)
        return 2;
    return 1;
}

size_t meao_tg_text_units(const char *s, size_t len)
{
    size_t units = 0, i = 0;
    while (i < len) {
        size_t n = seq_len((unsigned char)s[i]);
        units += n == 4 ? 2 : 1;
        i += n;
    }
    return units;
}

size_t meao_tg_split_point(const char *s, size_t len, size_t max_units)
{
    size_t units = 0, i = 0, cut, nl = 0, sp = 0;
    while (i < len) {
        size_t n = seq_len((unsigned char)s[i]);
        size_t u = n == 4 ? 2 : 1;
        if (i + n > len) /* a cut-off sequence at the end: take it whole */
            n = len - i;
        if (units + u > max_units)
            break;
        units += u;
        i += n;
        if (s[i - 1] == '\n')
            nl = i;
        else if (s[i - 1] == ' ')
            sp = i;
    }
    cut = i;
    if (cut == len)
        return len;
    /* a line (else word) boundary in the second half reads better */
    if (nl > cut / 2)
        return nl;
    if (sp > cut / 2)
        return sp;
    return cut;
}

bool meao_tg_callback_parse(const char *data, char *action, char *id, size_t idlen)
{
    size_t n;
    if (data == NULL || strlen(data) > MEAO_TG_CALLBACK_MAX || data[0] == '\0' || data[1] != ':')
        return false;
    if (data[0] != 'a' && data[0] != 'd' && data[0] != 'i')
        return false;
    n = strlen(data + 2);
    if (n == 0 || n >= idlen)
        return false;
    for (const char *p = data + 2; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.' || *p == ':'))
            return false;
    *action = data[0];
    memcpy(id, data + 2, n + 1);
    return true;
}
