/* The SSE parser: fields, line endings, comments, multi-line data, ids,
 * retry, BOM; the same events whatever the chunk boundaries; bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "orchestrator/sse.h"

/* Every event, written unambiguously: type_len:type|id_len:id|data_len:data; */
static bool record(void *ctx, const struct meao_sse_event *ev)
{
    struct meao_buf *b = ctx;
    assert_int_equal(ev->type[ev->type_len], '\0');
    assert_int_equal(ev->data[ev->data_len], '\0');
    assert_int_equal(ev->id[ev->id_len], '\0');
    assert_true(meao_buf_printf(b, "%zu:", ev->type_len));
    assert_true(meao_buf_append(b, ev->type, ev->type_len));
    assert_true(meao_buf_printf(b, "|%zu:", ev->id_len));
    assert_true(meao_buf_append(b, ev->id, ev->id_len));
    assert_true(meao_buf_printf(b, "|%zu:", ev->data_len));
    assert_true(meao_buf_append(b, ev->data, ev->data_len));
    assert_true(meao_buf_puts(b, ";"));
    return true;
}

/* Parse text in one piece; returns the record (caller frees). */
static char *parse_whole(const char *text, size_t len, size_t max, enum meao_sse_status want)
{
    struct meao_sse s;
    struct meao_buf b = {0};
    meao_sse_init(&s, max);
    assert_int_equal(meao_sse_feed(&s, text, len, record, &b), want);
    meao_sse_free(&s);
    assert_true(meao_buf_puts(&b, ""));
    return b.p;
}

static void expect(const char *text, const char *want)
{
    char *got = parse_whole(text, strlen(text), 0, MEAO_SSE_OK);
    assert_string_equal(got, want);
    free(got);
}

static void sse_basic_event(void **state)
{
    (void)state;
    expect("event: message_start\ndata: {\"a\":1}\n\n", "13:message_start|0:|7:{\"a\":1};");
    /* no event: field → "message"; no space after the colon is fine */
    expect("data:x\n\n", "7:message|0:|1:x;");
    /* only one leading space is removed */
    expect("data:  two\n\n", "7:message|0:|4: two;");
    /* an event without its blank line is not dispatched (yet) */
    expect("data: pending\n", "");
}

static void sse_multiline_data(void **state)
{
    (void)state;
    expect("data: a\ndata: b\n\n", "7:message|0:|3:a\nb;");
    /* "data" alone is a data line with an empty value */
    expect("data: a\ndata\n\n", "7:message|0:|2:a\n;");
    expect("data\n\n", "7:message|0:|0:;");
}

static void sse_comments_and_unknown_fields(void **state)
{
    (void)state;
    expect(": keep-alive\n\n", "");
    expect(":\n: x\ndata: y\n: z\n\n", "7:message|0:|1:y;");
    expect("foo: bar\nbaz\ndata: y\n\n", "7:message|0:|1:y;");
    /* a field name is matched exactly */
    expect("Data: no\ndata : no\ndata: yes\n\n", "7:message|0:|3:yes;");
}

static void sse_line_endings(void **state)
{
    (void)state;
    expect("data: a\r\n\r\ndata: b\r\rdata: c\n\n",
           "7:message|0:|1:a;7:message|0:|1:b;7:message|0:|1:c;");
    /* CR CR is two line ends, not one */
    expect("data: a\r\rdata: b\r\n\r\n", "7:message|0:|1:a;7:message|0:|1:b;");
    /* LF CR: the CR is a second line end */
    expect("data: a\n\rdata: b\n\n", "7:message|0:|1:a;7:message|0:|1:b;");
}

static void sse_type_and_id(void **state)
{
    (void)state;
    /* the type belongs to one event; an event without data is dropped with it */
    expect("event: x\n\ndata: y\n\n", "7:message|0:|1:y;");
    expect("event: x\ndata: 1\n\ndata: 2\n\n", "1:x|0:|1:1;7:message|0:|1:2;");
    /* the last event id persists across events */
    expect("id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
           "7:message|1:7|1:a;7:message|1:7|1:b;7:message|0:|1:c;");
}

static void sse_id_with_nul_is_ignored(void **state)
{
    static const char text[] = "id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n";
    char *got;
    (void)state;
    got = parse_whole(text, sizeof text - 1, 0, MEAO_SSE_OK);
    assert_string_equal(got, "7:message|1:1|1:a;7:message|1:1|1:b;");
    free(got);
}

static void sse_nul_in_data_is_kept(void **state)
{
    static const char text[] = "data: a\0b\n\n";
    char *got;
    (void)state;
    got = parse_whole(text, sizeof text - 1, 0, MEAO_SSE_OK);
    assert_memory_equal(got, "7:message|0:|3:a\0b;", 20);
    free(got);
}

static void sse_retry(void **state)
{
    struct meao_sse s;
    struct meao_buf b = {0};
    (void)state;
    meao_sse_init(&s, 0);
    assert_int_equal(s.retry_ms, -1);
    assert_int_equal(meao_sse_feed(&s, "retry: 1500\n", 12, record, &b), MEAO_SSE_OK);
    assert_int_equal(s.retry_ms, 1500);
    assert_int_equal(meao_sse_feed(&s, "retry: 15x\nretry:\n", 18, record, &b), MEAO_SSE_OK);
    assert_int_equal(s.retry_ms, 1500);
    assert_int_equal(meao_sse_feed(&s, "retry:99999999999999999999999\n", 30, record, &b),
                     MEAO_SSE_OK);
    assert_true(s.retry_ms > 0);
    assert_int_equal(b.len, 0);
    meao_sse_free(&s);
    meao_buf_free(&b);
}

static void sse_bom(void **state)
{
    struct meao_sse s;
    struct meao_buf b = {0};
    (void)state;
    expect("\xEF\xBB\xBF"
           "data: a\n\n",
           "7:message|0:|1:a;");
    /* only one, at the very start */
    expect("\xEF\xBB\xBF\xEF\xBB\xBF"
           "data: a\n\n",
           "");
    /* a BOM split across chunks */
    meao_sse_init(&s, 0);
    assert_int_equal(meao_sse_feed(&s, "\xEF", 1, record, &b), MEAO_SSE_OK);
    assert_int_equal(meao_sse_feed(&s, "\xBB", 1, record, &b), MEAO_SSE_OK);
    assert_int_equal(meao_sse_feed(&s,
                                   "\xBF"
                                   "data: a\n\n",
                                   10, record, &b),
                     MEAO_SSE_OK);
    assert_true(meao_buf_puts(&b, ""));
    assert_string_equal(b.p, "7:message|0:|1:a;");
    meao_sse_free(&s);
    meao_buf_free(&b);
    /* a partial BOM is ordinary text: the line is an unknown field */
    expect("\xEF\xBB"
           "data: a\n\ndata: b\n\n",
           "7:message|0:|1:b;");
}

/* A stream with every feature; splitting it anywhere must not matter. */
static const char corpus[] =
    "\xEF\xBB\xBF: opening comment\r\n\r\n"
    "event: message_start\r\n"
    "data: {\"type\":\"message_start\",\"x\":\"\xC3\xBC\xE2\x9C\x93\"}\r\n\r\n"
    "id: 42\n"
    "retry: 3000\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\n"
    "data:  \"delta\":{\"partial_json\":\"{\\\"a\\\": \\\"b\"}}\n\n"
    ":ping\r"
    "event:ping\r"
    "data:{}\r\r"
    "data\n"
    "data\n\n"
    "event: dropped\n\n"
    "unknown: x\n"
    "data: [DONE]\r\n\r\n"
    "data: trailing, never dispatched";

static void sse_split_anywhere(void **state)
{
    const size_t len = sizeof corpus - 1;
    char *whole = parse_whole(corpus, len, 0, MEAO_SSE_OK);
    (void)state;
    assert_string_equal(
        whole, "13:message_start|0:|36:{\"type\":\"message_start\",\"x\":\"\xC3\xBC\xE2\x9C\x93\"};"
               "19:content_block_delta|2:42|71:{\"type\":\"content_block_delta\",\n"
               " \"delta\":{\"partial_json\":\"{\\\"a\\\": \\\"b\"}};"
               "4:ping|2:42|2:{};"
               "7:message|2:42|1:\n;"
               "7:message|2:42|6:[DONE];");

    /* byte by byte */
    {
        struct meao_sse s;
        struct meao_buf b = {0};
        meao_sse_init(&s, 0);
        for (size_t i = 0; i < len; i++)
            assert_int_equal(meao_sse_feed(&s, corpus + i, 1, record, &b), MEAO_SSE_OK);
        assert_true(meao_sse_pending(&s));
        assert_true(meao_buf_puts(&b, ""));
        assert_string_equal(b.p, whole);
        meao_sse_free(&s);
        meao_buf_free(&b);
    }
    /* every two-piece split */
    for (size_t cut = 0; cut <= len; cut++) {
        struct meao_sse s;
        struct meao_buf b = {0};
        meao_sse_init(&s, 0);
        assert_int_equal(meao_sse_feed(&s, corpus, cut, record, &b), MEAO_SSE_OK);
        assert_int_equal(meao_sse_feed(&s, corpus + cut, len - cut, record, &b), MEAO_SSE_OK);
        assert_true(meao_buf_puts(&b, ""));
        assert_string_equal(b.p, whole);
        meao_sse_free(&s);
        meao_buf_free(&b);
    }
    /* random splits, including empty chunks */
    srand(12345);
    for (int round = 0; round < 500; round++) {
        struct meao_sse s;
        struct meao_buf b = {0};
        size_t off = 0;
        meao_sse_init(&s, 0);
        while (off < len) {
            size_t n = (size_t)rand() % 9;
            if (n > len - off)
                n = len - off;
            assert_int_equal(meao_sse_feed(&s, corpus + off, n, record, &b), MEAO_SSE_OK);
            off += n;
        }
        assert_true(meao_buf_puts(&b, ""));
        assert_string_equal(b.p, whole);
        meao_sse_free(&s);
        meao_buf_free(&b);
    }
    free(whole);
}

static void sse_oversize_event_is_refused(void **state)
{
    char big[200];
    struct meao_sse s;
    struct meao_buf b = {0};
    char *got;
    (void)state;

    /* an event of exactly the limit passes: "data: " + 58 bytes = 64-byte line */
    memset(big, 'x', sizeof big);
    memcpy(big, "data: ", 6);
    big[64] = '\n';
    big[65] = '\n';
    got = parse_whole(big, 66, 64, MEAO_SSE_OK);
    assert_true(strlen(got) > 58);
    free(got);

    /* data accumulated over many lines counts too */
    meao_sse_init(&s, 64);
    for (int i = 0; i < 20; i++) {
        enum meao_sse_status st = meao_sse_feed(&s, "data: 0123456789\n", 17, record, &b);
        if (st == MEAO_SSE_TOO_LARGE)
            break;
        assert_int_equal(st, MEAO_SSE_OK);
        assert_true(i < 6);
    }
    /* sticky: nothing more is parsed */
    assert_int_equal(meao_sse_feed(&s, "\n\ndata: a\n\n", 11, record, &b), MEAO_SSE_TOO_LARGE);
    assert_int_equal(b.len, 0);
    meao_sse_free(&s);

    /* a line that never ends is refused before it outgrows the bound */
    meao_sse_init(&s, 64);
    memset(big, 'y', sizeof big);
    assert_int_equal(meao_sse_feed(&s, big, 60, record, &b), MEAO_SSE_OK);
    assert_int_equal(meao_sse_feed(&s, big, 60, record, &b), MEAO_SSE_TOO_LARGE);
    assert_true(s.line.cap <= 256);
    meao_sse_free(&s);
    meao_buf_free(&b);
}

static bool stop_after_one(void *ctx, const struct meao_sse_event *ev)
{
    int *n = ctx;
    (void)ev;
    (*n)++;
    return false;
}

static void sse_callback_can_stop(void **state)
{
    struct meao_sse s;
    int n = 0;
    (void)state;
    meao_sse_init(&s, 0);
    assert_int_equal(meao_sse_feed(&s, "data: a\n\ndata: b\n\n", 18, stop_after_one, &n),
                     MEAO_SSE_STOPPED);
    assert_int_equal(n, 1);
    meao_sse_free(&s);
}

static void sse_pending(void **state)
{
    struct meao_sse s;
    struct meao_buf b = {0};
    (void)state;
    meao_sse_init(&s, 0);
    assert_false(meao_sse_pending(&s));
    assert_int_equal(meao_sse_feed(&s, "da", 2, record, &b), MEAO_SSE_OK);
    assert_true(meao_sse_pending(&s));
    assert_int_equal(meao_sse_feed(&s, "ta: x\n", 6, record, &b), MEAO_SSE_OK);
    assert_true(meao_sse_pending(&s));
    assert_int_equal(meao_sse_feed(&s, "\n", 1, record, &b), MEAO_SSE_OK);
    assert_false(meao_sse_pending(&s));
    assert_int_equal(meao_sse_feed(&s, "event: x\n", 9, record, &b), MEAO_SSE_OK);
    assert_true(meao_sse_pending(&s));
    assert_int_equal(meao_sse_feed(&s, ": comment\n\n", 11, record, &b), MEAO_SSE_OK);
    assert_false(meao_sse_pending(&s));
    meao_sse_free(&s);
    meao_sse_free(NULL);
    meao_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sse_basic_event),
        cmocka_unit_test(sse_multiline_data),
        cmocka_unit_test(sse_comments_and_unknown_fields),
        cmocka_unit_test(sse_line_endings),
        cmocka_unit_test(sse_type_and_id),
        cmocka_unit_test(sse_id_with_nul_is_ignored),
        cmocka_unit_test(sse_nul_in_data_is_kept),
        cmocka_unit_test(sse_retry),
        cmocka_unit_test(sse_bom),
        cmocka_unit_test(sse_split_anywhere),
        cmocka_unit_test(sse_oversize_event_is_refused),
        cmocka_unit_test(sse_callback_can_stop),
        cmocka_unit_test(sse_pending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
