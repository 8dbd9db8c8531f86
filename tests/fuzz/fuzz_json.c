/* libFuzzer target for every JSON entry point: the bounded request-body
 * parser, the orchestrator line codec and the line reader that frames it.
 * Arbitrary bytes must never crash, leak or break the readers' contracts. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/lines.h"
#include "proto/orch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    json_t *v = NULL;
    char why[201];
    enum meao_orch_type type;
    const char *code;
    struct meao_lines lr;
    const char *line;
    size_t len, off = 0;

    if (meao_json_parse(s, size, 4096, 32, &v, why, sizeof why) == MEAO_OK) {
        if (!v)
            abort();
        json_decref(v);
    } else if (v != NULL || strlen(why) > 200) {
        abort();
    }
    if (meao_orch_decode(s, size, &v, &type, &code, why, sizeof why) == MEAO_OK) {
        struct meao_buf b = {0};
        if (!v || type == MEAO_ORCH_UNKNOWN || !meao_orch_encode(v, &b))
            abort();
        json_decref(v);
        meao_buf_free(&b);
    } else if (v != NULL || code == NULL) {
        abort();
    }
    /* the same bytes as a stream, in pieces whose sizes come from the input */
    meao_lines_init(&lr, 64);
    while (off < size) {
        size_t n = 1 + data[off] % 17;
        enum meao_line_status st;
        if (n > size - off)
            n = size - off;
        if (!meao_lines_feed(&lr, s + off, n))
            abort();
        off += n;
        while ((st = meao_lines_next(&lr, &line, &len)) == MEAO_LINE_OK ||
               st == MEAO_LINE_TOO_LONG) {
            if (st == MEAO_LINE_OK && (len > 64 || memchr(line, '\n', len)))
                abort();
        }
    }
    meao_lines_free(&lr);
    return 0;
}
