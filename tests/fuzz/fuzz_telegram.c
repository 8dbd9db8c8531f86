/* libFuzzer target for the Telegram webhook's parser: a body as the webhook
 * reads it (bounded JSON, then the Update's shape), the 4096-character split
 * of any text, and the approval buttons' callback data. Arbitrary bytes must
 * never crash or leak, and the split must cover its input exactly, in pieces
 * within the limit that end on character boundaries. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "proto/telegram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_split(const char *s, size_t len, size_t max)
{
    size_t off = 0;
    while (off < len) {
        size_t n = meao_tg_split_point(s + off, len - off, max);
        if (n == 0 || n > len - off)
            abort();
        off += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct meao_tg_update u;
    json_t *v = NULL;
    char why[201], action, id[65];

    if (meao_json_parse(s, size, 1 << 20, 32, &v, why, sizeof why) == MEAO_OK) {
        if (meao_tg_update_parse(v, &u, why, sizeof why) == MEAO_OK) {
            if (u.update_id < 0 || strlen(u.kind_name) == 0)
                abort();
            if (u.text) {
                size_t n = strlen(u.text);
                check_split(u.text, n, MEAO_TG_TEXT_MAX);
                check_split(u.text, n, 2);
                if (meao_tg_text_units(u.text, meao_tg_split_point(u.text, n, 7)) > 7 && n > 0 &&
                    meao_tg_split_point(u.text, n, 7) != n)
                    abort();
            }
            if (u.callback_data)
                (void)meao_tg_callback_parse(u.callback_data, &action, id, sizeof id);
        } else if (strlen(why) == 0) {
            abort();
        }
        json_decref(v);
    }
    return 0;
}
