/* libFuzzer target for the FastCGI codec: arbitrary bytes, fed in pieces
 * whose sizes come from the input itself, must never crash, read out of
 * bounds, allocate past the limit or violate the event contract. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/fcgi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

static void walk_pairs(const uint8_t *b, size_t len)
{
    size_t off = 0;
    struct meao_fcgi_pair pr;
    int r;
    while ((r = meao_fcgi_params_next(b, len, &off, &pr)) == 1) {
        CHECK(pr.name >= b && pr.name + pr.name_len <= b + len);
        CHECK(pr.value >= b && pr.value + pr.value_len <= b + len);
        CHECK(off <= len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meao_fcgi_parser p;
    size_t off, chunk;
    bool stop = false;

    if (size < 2)
        return 0;
    /* first byte: piece size (0 = everything at once); second: params limit */
    chunk = data[0] ? data[0] : size;
    meao_fcgi_parser_init(&p, data[1] < 16 ? 0 : (size_t)data[1] * 64);
    data += 2;
    size -= 2;
    walk_pairs(data, size);

    off = 0;
    while (off < size && !stop) {
        size_t n = size - off < chunk ? size - off : chunk;
        size_t used = 0;
        for (;;) {
            struct meao_fcgi_event ev;
            size_t k = meao_fcgi_feed(&p, data + off + used, n - used, &ev);
            CHECK(k <= n - used);
            used += k;
            if (ev.type == MEAO_FCGI_EV_NONE) {
                CHECK(used == n);
                break;
            }
            switch (ev.type) {
            case MEAO_FCGI_EV_PARAMS:
                CHECK(ev.len <= p.params_max);
                CHECK(meao_fcgi_params_valid(ev.data, ev.len));
                walk_pairs(ev.data, ev.len);
                break;
            case MEAO_FCGI_EV_STDIN:
                CHECK(ev.len > 0 && ev.data >= data && ev.data + ev.len <= data + size);
                break;
            case MEAO_FCGI_EV_STDIN_END:
            case MEAO_FCGI_EV_ABORT:
                /* what a responder does once it has answered */
                (void)meao_fcgi_parser_end_request(&p);
                break;
            case MEAO_FCGI_EV_REPLY:
                CHECK(ev.len >= MEAO_FCGI_HEADER_LEN && ev.len <= MEAO_FCGI_REPLY_MAX);
                CHECK(ev.data[0] == MEAO_FCGI_VERSION);
                break;
            case MEAO_FCGI_EV_ERROR:
                CHECK(ev.error != NULL);
                stop = true;
                break;
            default: break;
            }
            if (stop)
                break;
        }
        off += n;
    }
    CHECK(p.params_cap <= p.params_max);
    meao_fcgi_parser_free(&p);
    return 0;
}
