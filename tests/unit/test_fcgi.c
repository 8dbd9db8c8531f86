/* FastCGI codec: record round trips, split feeds, padding, keep-conn, the
 * management records, aborts, and hostile PARAMS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "proto/fcgi.h"

/* Everything a parser produced for one input stream. */
struct seen {
    int types[64];
    size_t ntypes;
    struct meao_buf params; /* copy of the last EV_PARAMS block */
    struct meao_buf stdin_data;
    struct meao_buf replies;
    bool keep_conn;
    bool close_after;
    uint16_t ids[64];
    const char *error;
};

static void seen_free(struct seen *s)
{
    meao_buf_free(&s->params);
    meao_buf_free(&s->stdin_data);
    meao_buf_free(&s->replies);
}

/* Feed in[0..len) in chunks of `chunk` bytes (0 = all at once). */
static void drive(struct meao_fcgi_parser *p, const void *in, size_t len, size_t chunk,
                  struct seen *s)
{
    const uint8_t *b = in;
    size_t off = 0;
    if (chunk == 0)
        chunk = len;
    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk;
        size_t used = 0;
        for (;;) {
            struct meao_fcgi_event ev;
            size_t k = meao_fcgi_feed(p, b + off + used, n - used, &ev);
            used += k;
            assert_true(used <= n);
            if (ev.type == MEAO_FCGI_EV_NONE) {
                assert_int_equal(used, n);
                break;
            }
            /* consecutive STDIN pieces count as one event */
            if (ev.type != MEAO_FCGI_EV_STDIN || s->ntypes == 0 ||
                s->types[s->ntypes - 1] != MEAO_FCGI_EV_STDIN) {
                assert_true(s->ntypes < 64);
                s->ids[s->ntypes] = ev.request_id;
                s->types[s->ntypes++] = ev.type;
            }
            switch (ev.type) {
            case MEAO_FCGI_EV_BEGIN: s->keep_conn = ev.keep_conn; break;
            case MEAO_FCGI_EV_PARAMS:
                meao_buf_reset(&s->params);
                assert_true(meao_buf_append(&s->params, ev.data, ev.len));
                break;
            case MEAO_FCGI_EV_STDIN:
                assert_true(ev.len > 0);
                assert_true(meao_buf_append(&s->stdin_data, ev.data, ev.len));
                break;
            case MEAO_FCGI_EV_REPLY:
                s->close_after = ev.close_after;
                assert_true(meao_buf_append(&s->replies, ev.data, ev.len));
                break;
            case MEAO_FCGI_EV_ERROR:
                s->error = ev.error;
                assert_non_null(ev.error);
                return;
            default: break;
            }
        }
        off += n;
    }
}

/* A web server's side of one request. */
static void build_request(struct meao_buf *out, uint16_t id, uint8_t flags, const char *body,
                          size_t body_len, bool pad)
{
    struct meao_buf pv = {0};
    assert_true(meao_fcgi_encode_begin(out, id, MEAO_FCGI_RESPONDER, flags));
    assert_true(meao_fcgi_encode_pair(&pv, "REQUEST_METHOD", 14, "POST", 4));
    assert_true(meao_fcgi_encode_pair(&pv, "REQUEST_URI", 11, "/api/v1/x?y=1", 13));
    assert_true(meao_fcgi_encode_pair(&pv, "EMPTY", 5, "", 0));
    assert_true(meao_fcgi_encode_stream(out, MEAO_FCGI_PARAMS, id, pv.p, pv.len, pad));
    assert_true(meao_fcgi_encode_stream_end(out, MEAO_FCGI_PARAMS, id));
    assert_true(meao_fcgi_encode_stream(out, MEAO_FCGI_STDIN, id, body, body_len, pad));
    assert_true(meao_fcgi_encode_stream_end(out, MEAO_FCGI_STDIN, id));
    meao_buf_free(&pv);
}

static void check_params(const struct seen *s)
{
    size_t off = 0;
    struct meao_fcgi_pair pr;
    const uint8_t *b = (const uint8_t *)s->params.p;
    assert_int_equal(meao_fcgi_params_next(b, s->params.len, &off, &pr), 1);
    assert_int_equal(pr.name_len, 14);
    assert_memory_equal(pr.name, "REQUEST_METHOD", 14);
    assert_memory_equal(pr.value, "POST", 4);
    assert_int_equal(meao_fcgi_params_next(b, s->params.len, &off, &pr), 1);
    assert_memory_equal(pr.value, "/api/v1/x?y=1", 13);
    assert_int_equal(meao_fcgi_params_next(b, s->params.len, &off, &pr), 1);
    assert_int_equal(pr.value_len, 0);
    assert_int_equal(meao_fcgi_params_next(b, s->params.len, &off, &pr), 0);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct meao_buf in = {0};
    struct meao_fcgi_parser p;
    struct seen s = {0};
    const uint8_t *blk;
    size_t blen;

    build_request(&in, 1, MEAO_FCGI_KEEP_CONN, "{\"a\":1}", 7, false);
    meao_fcgi_parser_init(&p, 0);
    drive(&p, in.p, in.len, 0, &s);
    assert_null(s.error);
    assert_int_equal(s.ntypes, 4);
    assert_int_equal(s.types[0], MEAO_FCGI_EV_BEGIN);
    assert_int_equal(s.types[1], MEAO_FCGI_EV_PARAMS);
    assert_int_equal(s.types[2], MEAO_FCGI_EV_STDIN);
    assert_int_equal(s.types[3], MEAO_FCGI_EV_STDIN_END);
    assert_int_equal(s.ids[3], 1);
    assert_true(s.keep_conn);
    check_params(&s);
    assert_int_equal(s.stdin_data.len, 7);
    assert_memory_equal(s.stdin_data.p, "{\"a\":1}", 7);
    assert_int_equal(p.phase, MEAO_FCGI_RUNNING);
    /* the block stays readable until the request ends */
    blk = meao_fcgi_params_block(&p, &blen);
    assert_non_null(blk);
    assert_int_equal(blen, s.params.len);
    assert_true(meao_fcgi_parser_end_request(&p));
    assert_null(meao_fcgi_params_block(&p, &blen));
    meao_fcgi_parser_free(&p);
    meao_buf_free(&in);
    seen_free(&s);
}

static void test_split_feeds(void **state)
{
    (void)state;
    static const size_t chunks[] = {1, 2, 3, 5, 7, 8, 9, 13, 64};
    char body[3000];
    struct meao_buf in = {0};
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (char)('a' + i % 26);
    build_request(&in, 7, 0, body, sizeof body, true);
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        struct meao_fcgi_parser p;
        struct seen s = {0};
        meao_fcgi_parser_init(&p, 0);
        drive(&p, in.p, in.len, chunks[c], &s);
        assert_null(s.error);
        assert_int_equal(s.types[0], MEAO_FCGI_EV_BEGIN);
        assert_int_equal(s.types[1], MEAO_FCGI_EV_PARAMS);
        assert_int_equal(s.types[s.ntypes - 1], MEAO_FCGI_EV_STDIN_END);
        assert_false(s.keep_conn);
        check_params(&s);
        assert_int_equal(s.stdin_data.len, sizeof body);
        assert_memory_equal(s.stdin_data.p, body, sizeof body);
        assert_false(meao_fcgi_parser_end_request(&p));
        meao_fcgi_parser_free(&p);
        seen_free(&s);
    }
    meao_buf_free(&in);
}

static void test_padding(void **state)
{
    (void)state;
    /* hand-made records with odd and maximal padding */
    uint8_t in[512];
    size_t n = 0;
    struct meao_fcgi_parser p;
    struct seen s = {0};
    static const uint8_t begin_body[8] = {0, 1, 1, 0, 0, 0, 0, 0};
    static const uint8_t pair[] = {1, 1, 'A', 'b'};

    meao_fcgi_header_encode(in + n, MEAO_FCGI_BEGIN_REQUEST, 3, 8, 5);
    memcpy(in + n + 8, begin_body, 8);
    memset(in + n + 16, 0xEE, 5);
    n += 21;
    meao_fcgi_header_encode(in + n, MEAO_FCGI_PARAMS, 3, sizeof pair, 255);
    memcpy(in + n + 8, pair, sizeof pair);
    memset(in + n + 8 + sizeof pair, 0xEE, 255);
    n += 8 + sizeof pair + 255;
    meao_fcgi_header_encode(in + n, MEAO_FCGI_PARAMS, 3, 0, 3);
    memset(in + n + 8, 0, 3);
    n += 11;
    meao_fcgi_header_encode(in + n, MEAO_FCGI_STDIN, 3, 3, 1);
    memcpy(in + n + 8, "xyz", 3);
    in[n + 11] = 0;
    n += 12;
    meao_fcgi_header_encode(in + n, MEAO_FCGI_STDIN, 3, 0, 7);
    memset(in + n + 8, 0, 7);
    n += 15;
    assert_true(n <= sizeof in);

    for (size_t chunk = 0; chunk < 4; chunk++) {
        meao_fcgi_parser_init(&p, 0);
        memset(&s, 0, sizeof s);
        drive(&p, in, n, chunk, &s);
        assert_null(s.error);
        assert_int_equal(s.types[s.ntypes - 1], MEAO_FCGI_EV_STDIN_END);
        assert_true(s.keep_conn);
        assert_int_equal(s.params.len, sizeof pair);
        assert_int_equal(s.stdin_data.len, 3);
        assert_memory_equal(s.stdin_data.p, "xyz", 3);
        meao_fcgi_parser_free(&p);
        seen_free(&s);
    }
}

static void test_keep_conn_two_requests(void **state)
{
    (void)state;
    struct meao_buf in = {0};
    struct meao_fcgi_parser p;
    struct seen s = {0};
    build_request(&in, 1, MEAO_FCGI_KEEP_CONN, "", 0, false);
    meao_fcgi_parser_init(&p, 0);
    drive(&p, in.p, in.len, 0, &s);
    assert_int_equal(s.ntypes, 3); /* no STDIN event for an empty body */
    assert_int_equal(s.types[2], MEAO_FCGI_EV_STDIN_END);
    assert_true(meao_fcgi_parser_end_request(&p));

    /* the next request on the same connection, same id */
    memset(&s.types, 0, sizeof s.types);
    s.ntypes = 0;
    drive(&p, in.p, in.len, 1, &s);
    assert_null(s.error);
    assert_int_equal(s.ntypes, 3);
    assert_int_equal(s.types[0], MEAO_FCGI_EV_BEGIN);
    assert_int_equal(s.types[2], MEAO_FCGI_EV_STDIN_END);
    assert_true(meao_fcgi_parser_end_request(&p));
    meao_fcgi_parser_free(&p);
    meao_buf_free(&in);
    seen_free(&s);
}

/* Walk the records of a reply stream. */
static size_t next_record(const struct meao_buf *b, size_t *off, struct meao_fcgi_header *h,
                          const uint8_t **content)
{
    if (*off + 8 > b->len)
        return 0;
    meao_fcgi_header_decode((const uint8_t *)b->p + *off, h);
    assert_true(*off + 8 + h->content_length + h->padding_length <= b->len);
    *content = (const uint8_t *)b->p + *off + 8;
    *off += 8 + h->content_length + h->padding_length;
    return 1;
}

static void test_get_values(void **state)
{
    (void)state;
    struct meao_buf q = {0}, in = {0};
    struct meao_fcgi_parser p;
    struct seen s = {0};
    struct meao_fcgi_header h;
    const uint8_t *c;
    size_t off = 0, poff = 0;
    struct meao_fcgi_pair pr;
    int found = 0;

    assert_true(meao_fcgi_encode_pair(&q, "FCGI_MAX_CONNS", 14, "", 0));
    assert_true(meao_fcgi_encode_pair(&q, "FCGI_MAX_REQS", 13, "", 0));
    assert_true(meao_fcgi_encode_pair(&q, "FCGI_MPXS_CONNS", 15, "", 0));
    assert_true(meao_fcgi_encode_pair(&q, "FCGI_MPXS_CONNS", 15, "", 0)); /* asked twice */
    assert_true(meao_fcgi_encode_pair(&q, "SOMETHING_ELSE", 14, "", 0));
    assert_true(meao_fcgi_encode_stream(&in, MEAO_FCGI_GET_VALUES, 0, q.p, q.len, false));

    meao_fcgi_parser_init(&p, 0);
    meao_fcgi_parser_set_limits(&p, 100, 200);
    drive(&p, in.p, in.len, 1, &s);
    assert_int_equal(s.ntypes, 1);
    assert_int_equal(s.types[0], MEAO_FCGI_EV_REPLY);
    assert_true(next_record(&s.replies, &off, &h, &c));
    assert_int_equal(h.type, MEAO_FCGI_GET_VALUES_RESULT);
    assert_int_equal(h.request_id, 0);
    assert_int_equal((8 + h.content_length + h.padding_length) % 8, 0);
    while (meao_fcgi_params_next(c, h.content_length, &poff, &pr) == 1) {
        if (pr.name_len == 14 && !memcmp(pr.name, "FCGI_MAX_CONNS", 14)) {
            assert_memory_equal(pr.value, "100", 3);
            found |= 1;
        } else if (pr.name_len == 13 && !memcmp(pr.name, "FCGI_MAX_REQS", 13)) {
            assert_memory_equal(pr.value, "200", 3);
            found |= 2;
        } else if (pr.name_len == 15 && !memcmp(pr.name, "FCGI_MPXS_CONNS", 15)) {
            assert_int_equal(pr.value_len, 1);
            assert_memory_equal(pr.value, "0", 1);
            assert_int_equal(found & 4, 0); /* once only */
            found |= 4;
        } else {
            fail_msg("unexpected variable in GET_VALUES_RESULT");
        }
    }
    assert_int_equal(found, 7);
    assert_int_equal(p.phase, MEAO_FCGI_IDLE);
    meao_fcgi_parser_free(&p);
    meao_buf_free(&q);
    meao_buf_free(&in);
    seen_free(&s);
}

static void test_abort(void **state)
{
    (void)state;
    struct meao_buf in = {0};
    struct meao_fcgi_parser p;
    struct seen s = {0};
    uint8_t rec[8];

    assert_true(meao_fcgi_encode_begin(&in, 5, MEAO_FCGI_RESPONDER, MEAO_FCGI_KEEP_CONN));
    assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_PARAMS, 5));
    assert_true(meao_fcgi_encode_stream(&in, MEAO_FCGI_STDIN, 5, "part", 4, false));
    meao_fcgi_header_encode(rec, MEAO_FCGI_ABORT_REQUEST, 9, 0, 0); /* not ours: ignored */
    assert_true(meao_buf_append(&in, rec, 8));
    meao_fcgi_header_encode(rec, MEAO_FCGI_ABORT_REQUEST, 5, 0, 0);
    assert_true(meao_buf_append(&in, rec, 8));
    /* stragglers for the aborted id are ignored */
    assert_true(meao_fcgi_encode_stream(&in, MEAO_FCGI_STDIN, 5, "more", 4, false));
    assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_STDIN, 5));

    meao_fcgi_parser_init(&p, 0);
    drive(&p, in.p, in.len, 3, &s);
    assert_null(s.error);
    assert_int_equal(s.ntypes, 4);
    assert_int_equal(s.types[0], MEAO_FCGI_EV_BEGIN);
    assert_int_equal(s.types[1], MEAO_FCGI_EV_PARAMS);
    assert_int_equal(s.types[2], MEAO_FCGI_EV_STDIN);
    assert_int_equal(s.types[3], MEAO_FCGI_EV_ABORT);
    assert_int_equal(s.ids[3], 5);
    assert_int_equal(s.stdin_data.len, 4);
    assert_true(meao_fcgi_parser_end_request(&p));
    assert_int_equal(p.phase, MEAO_FCGI_IDLE);
    meao_fcgi_parser_free(&p);
    meao_buf_free(&in);
    seen_free(&s);
}

static void expect_error(const void *in, size_t len, size_t params_max)
{
    for (size_t chunk = 0; chunk < 3; chunk++) {
        struct meao_fcgi_parser p;
        struct seen s = {0};
        struct meao_fcgi_event ev;
        meao_fcgi_parser_init(&p, params_max);
        drive(&p, in, len, chunk, &s);
        assert_non_null(s.error);
        assert_int_equal(s.types[s.ntypes - 1], MEAO_FCGI_EV_ERROR);
        /* sticky: nothing more is consumed */
        assert_int_equal(meao_fcgi_feed(&p, (const uint8_t *)"x", 1, &ev), 0);
        assert_int_equal(ev.type, MEAO_FCGI_EV_ERROR);
        meao_fcgi_parser_free(&p);
        seen_free(&s);
    }
}

static void test_lying_param_lengths(void **state)
{
    (void)state;
    static const uint8_t lies[][12] = {
        {5, 1, 'A', 'B'},                                      /* name longer than the data */
        {1, 0x80 | 0x7f, 0xff, 0xff, 0xff, 'A'},               /* value 2^31-1 */
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'A'}, /* both huge: no overflow */
        {0x80, 0, 0},                                          /* truncated 4-byte length */
        {1},                                                   /* value length missing */
        {2, 2, 'A', 'B', 'C'},                                 /* value cut short */
    };
    static const size_t lens[] = {4, 6, 9, 3, 1, 5};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        struct meao_buf in = {0};
        size_t off = 0;
        struct meao_fcgi_pair pr;
        assert_int_equal(meao_fcgi_params_next(lies[i], lens[i], &off, &pr), -1);
        assert_false(meao_fcgi_params_valid(lies[i], lens[i]));
        assert_true(meao_fcgi_encode_begin(&in, 1, MEAO_FCGI_RESPONDER, 0));
        assert_true(meao_fcgi_encode_stream(&in, MEAO_FCGI_PARAMS, 1, lies[i], lens[i], false));
        assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_PARAMS, 1));
        assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_STDIN, 1));
        expect_error(in.p, in.len, 0);
        meao_buf_free(&in);
    }
    /* a pair split across two PARAMS records is fine (it is one stream) */
    {
        struct meao_buf in = {0};
        struct meao_fcgi_parser p;
        struct seen s = {0};
        assert_true(meao_fcgi_encode_begin(&in, 1, MEAO_FCGI_RESPONDER, 0));
        assert_true(meao_fcgi_encode_stream(&in, MEAO_FCGI_PARAMS, 1,
                                            "\x02\x02"
                                            "A",
                                            3, 0));
        assert_true(meao_fcgi_encode_stream(&in, MEAO_FCGI_PARAMS, 1, "Bcd", 3, 0));
        assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_PARAMS, 1));
        meao_fcgi_parser_init(&p, 0);
        drive(&p, in.p, in.len, 0, &s);
        assert_null(s.error);
        assert_int_equal(s.types[1], MEAO_FCGI_EV_PARAMS);
        assert_int_equal(s.params.len, 6);
        meao_fcgi_parser_free(&p);
        meao_buf_free(&in);
        seen_free(&s);
    }
}

static void test_four_byte_lengths(void **state)
{
    (void)state;
    char name[200], value[70000];
    struct meao_buf pv = {0}, in = {0};
    struct meao_fcgi_parser p;
    struct seen s = {0};
    struct meao_fcgi_pair pr;
    size_t off = 0;
    memset(name, 'N', sizeof name);
    memset(value, 'v', sizeof value);
    assert_true(meao_fcgi_encode_pair(&pv, name, sizeof name, value, 300));
    assert_int_equal((uint8_t)pv.p[0], 0x80);
    assert_true(meao_fcgi_encode_pair(&pv, "X", 1, value, sizeof value));
    /* spans two PARAMS records (content is at most 65535 per record) */
    assert_true(meao_fcgi_encode_begin(&in, 1, MEAO_FCGI_RESPONDER, 0));
    assert_true(meao_fcgi_encode_stream(&in, MEAO_FCGI_PARAMS, 1, pv.p, pv.len, true));
    assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_PARAMS, 1));
    meao_fcgi_parser_init(&p, 128 * 1024);
    drive(&p, in.p, in.len, 4096, &s);
    assert_null(s.error);
    assert_int_equal(s.types[1], MEAO_FCGI_EV_PARAMS);
    assert_int_equal(meao_fcgi_params_next((uint8_t *)s.params.p, s.params.len, &off, &pr), 1);
    assert_int_equal(pr.name_len, 200);
    assert_int_equal(pr.value_len, 300);
    assert_int_equal(meao_fcgi_params_next((uint8_t *)s.params.p, s.params.len, &off, &pr), 1);
    assert_int_equal(pr.value_len, sizeof value);
    assert_memory_equal(pr.value, value, sizeof value);
    assert_int_equal(meao_fcgi_params_next((uint8_t *)s.params.p, s.params.len, &off, &pr), 0);
    meao_fcgi_parser_free(&p);
    /* the same block is too big for the default 64 KiB limit */
    expect_error(in.p, in.len, 0);
    meao_buf_free(&pv);
    meao_buf_free(&in);
    seen_free(&s);
}

static void test_oversize_params(void **state)
{
    (void)state;
    struct meao_buf in = {0}, pv = {0};
    char v[100];
    memset(v, 'x', sizeof v);
    for (int i = 0; i < 20; i++)
        assert_true(meao_fcgi_encode_pair(&pv, "HTTP_COOKIE", 11, v, sizeof v));
    assert_true(meao_fcgi_encode_begin(&in, 1, MEAO_FCGI_RESPONDER, 0));
    /* many small records add up past the limit */
    for (size_t off = 0; off < pv.len; off += 100) {
        size_t n = pv.len - off < 100 ? pv.len - off : 100;
        assert_true(meao_fcgi_encode_stream(&in, MEAO_FCGI_PARAMS, 1, pv.p + off, n, false));
    }
    assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_PARAMS, 1));
    expect_error(in.p, in.len, 1024);
    meao_buf_free(&in);
    meao_buf_free(&pv);
}

static void test_second_request_id(void **state)
{
    (void)state;
    struct meao_buf in = {0};
    struct meao_fcgi_parser p;
    struct seen s = {0};
    struct meao_fcgi_header h;
    const uint8_t *c;
    size_t off = 0;

    assert_true(meao_fcgi_encode_begin(&in, 1, MEAO_FCGI_RESPONDER, MEAO_FCGI_KEEP_CONN));
    assert_true(meao_fcgi_encode_begin(&in, 2, MEAO_FCGI_RESPONDER, MEAO_FCGI_KEEP_CONN));
    assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_PARAMS, 2)); /* ignored */
    assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_STDIN, 2));  /* ignored */
    assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_PARAMS, 1));
    assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_STDIN, 1));

    meao_fcgi_parser_init(&p, 0);
    drive(&p, in.p, in.len, 0, &s);
    assert_null(s.error);
    assert_int_equal(s.ntypes, 4);
    assert_int_equal(s.types[0], MEAO_FCGI_EV_BEGIN);
    assert_int_equal(s.types[1], MEAO_FCGI_EV_REPLY);
    assert_int_equal(s.ids[1], 2);
    assert_false(s.close_after);
    assert_int_equal(s.types[2], MEAO_FCGI_EV_PARAMS);
    assert_int_equal(s.types[3], MEAO_FCGI_EV_STDIN_END);
    assert_int_equal(s.ids[3], 1);
    assert_true(next_record(&s.replies, &off, &h, &c));
    assert_int_equal(h.type, MEAO_FCGI_END_REQUEST);
    assert_int_equal(h.request_id, 2);
    assert_int_equal(h.content_length, 8);
    assert_int_equal(c[4], MEAO_FCGI_CANT_MPX_CONN);
    meao_fcgi_parser_free(&p);
    meao_buf_free(&in);
    seen_free(&s);
}

static void test_unknown_role(void **state)
{
    (void)state;
    for (int keep = 0; keep < 2; keep++) {
        struct meao_buf in = {0};
        struct meao_fcgi_parser p;
        struct seen s = {0};
        struct meao_fcgi_header h;
        const uint8_t *c;
        size_t off = 0;
        assert_true(
            meao_fcgi_encode_begin(&in, 4, MEAO_FCGI_AUTHORIZER, keep ? MEAO_FCGI_KEEP_CONN : 0));
        assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_PARAMS, 4));
        assert_true(meao_fcgi_encode_stream_end(&in, MEAO_FCGI_STDIN, 4));
        meao_fcgi_parser_init(&p, 0);
        drive(&p, in.p, in.len, 1, &s);
        assert_null(s.error);
        assert_int_equal(s.ntypes, 1);
        assert_int_equal(s.types[0], MEAO_FCGI_EV_REPLY);
        assert_int_equal(s.close_after, !keep);
        assert_true(next_record(&s.replies, &off, &h, &c));
        assert_int_equal(h.type, MEAO_FCGI_END_REQUEST);
        assert_int_equal(c[4], MEAO_FCGI_UNKNOWN_ROLE);
        assert_int_equal(p.phase, MEAO_FCGI_IDLE);
        meao_fcgi_parser_free(&p);
        meao_buf_free(&in);
        seen_free(&s);
    }
}

static void test_unknown_type(void **state)
{
    (void)state;
    uint8_t in[64];
    struct meao_fcgi_parser p;
    struct seen s = {0};
    struct meao_fcgi_header h;
    const uint8_t *c;
    size_t off = 0;
    meao_fcgi_header_encode(in, 42, 0, 3, 5); /* management: answered */
    memset(in + 8, 'z', 8);
    meao_fcgi_header_encode(in + 16, 43, 7, 2, 0); /* application: skipped */
    memset(in + 24, 'z', 2);
    meao_fcgi_header_encode(in + 26, MEAO_FCGI_DATA, 7, 1, 0); /* DATA: skipped */
    in[34] = 'd';
    meao_fcgi_parser_init(&p, 0);
    drive(&p, in, 35, 1, &s);
    assert_null(s.error);
    assert_int_equal(s.ntypes, 1);
    assert_int_equal(s.types[0], MEAO_FCGI_EV_REPLY);
    assert_true(next_record(&s.replies, &off, &h, &c));
    assert_int_equal(h.type, MEAO_FCGI_UNKNOWN_TYPE);
    assert_int_equal(h.content_length, 8);
    assert_int_equal(c[0], 42);
    meao_fcgi_parser_free(&p);
    seen_free(&s);
}

static void test_protocol_errors(void **state)
{
    (void)state;
    uint8_t in[32];
    struct meao_buf b = {0};
    /* wrong version */
    meao_fcgi_header_encode(in, MEAO_FCGI_BEGIN_REQUEST, 1, 8, 0);
    in[0] = 2;
    memset(in + 8, 0, 8);
    expect_error(in, 16, 0);
    /* BEGIN_REQUEST on the management id */
    meao_fcgi_header_encode(in, MEAO_FCGI_BEGIN_REQUEST, 0, 8, 0);
    expect_error(in, 16, 0);
    /* BEGIN_REQUEST with a short body */
    meao_fcgi_header_encode(in, MEAO_FCGI_BEGIN_REQUEST, 1, 4, 0);
    expect_error(in, 12, 0);
    /* STDIN before the PARAMS stream ended */
    assert_true(meao_fcgi_encode_begin(&b, 1, MEAO_FCGI_RESPONDER, 0));
    assert_true(meao_fcgi_encode_stream(&b, MEAO_FCGI_STDIN, 1, "x", 1, false));
    expect_error(b.p, b.len, 0);
    meao_buf_free(&b);
}

static void test_encode_response(void **state)
{
    (void)state;
    static char big[140000];
    struct meao_buf out = {0};
    struct meao_fcgi_header h;
    const uint8_t *c;
    size_t off = 0, got = 0, nrec = 0;
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7);
    assert_true(meao_fcgi_encode_response(&out, 300, big, sizeof big, 0, true));
    while (next_record(&out, &off, &h, &c)) {
        nrec++;
        assert_int_equal(h.version, 1);
        assert_int_equal(h.request_id, 300);
        assert_int_equal((h.content_length + h.padding_length) % 8, 0);
        if (h.type == MEAO_FCGI_STDOUT && h.content_length) {
            assert_memory_equal(c, big + got, h.content_length);
            got += h.content_length;
        } else if (h.type == MEAO_FCGI_STDOUT) {
            assert_int_equal(got, sizeof big);
        } else {
            assert_int_equal(h.type, MEAO_FCGI_END_REQUEST);
            assert_int_equal(c[4], MEAO_FCGI_REQUEST_COMPLETE);
            assert_int_equal(off, out.len);
        }
    }
    assert_int_equal(nrec, 3 + 2); /* 65535 + 65535 + 8930, terminator, END_REQUEST */
    meao_buf_free(&out);
}

static void test_free_null(void **state)
{
    (void)state;
    meao_fcgi_parser_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_split_feeds),
        cmocka_unit_test(test_padding),
        cmocka_unit_test(test_keep_conn_two_requests),
        cmocka_unit_test(test_get_values),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_lying_param_lengths),
        cmocka_unit_test(test_four_byte_lengths),
        cmocka_unit_test(test_oversize_params),
        cmocka_unit_test(test_second_request_id),
        cmocka_unit_test(test_unknown_role),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_encode_response),
        cmocka_unit_test(test_free_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
