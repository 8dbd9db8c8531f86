#include "proto/fcgi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Record states. */
enum { R_HEADER = 0, R_CONTENT, R_PADDING, R_ERROR };

/* What to do with the content bytes of the current record. */
enum { D_SKIP = 0, D_SMALL, D_PARAMS, D_STDIN };

/* Grown params buffers above this are released when a request ends, so an
 * idle kept connection does not hold on to a big one. */
#define PARAMS_KEEP_CAP 4096

static void set_rstate(struct meao_fcgi_parser *p, int rstate, int disp)
{
    p->rstate = rstate;
    p->disp = disp;
}

void meao_fcgi_parser_init(struct meao_fcgi_parser *p, size_t params_max)
{
    memset(p, 0, sizeof *p);
    p->params_max = params_max ? params_max : MEAO_FCGI_PARAMS_MAX_DEFAULT;
    p->max_conns = 1;
    p->max_reqs = 1;
    set_rstate(p, R_HEADER, D_SKIP);
}

void meao_fcgi_parser_set_limits(struct meao_fcgi_parser *p, unsigned max_conns, unsigned max_reqs)
{
    p->max_conns = max_conns;
    p->max_reqs = max_reqs;
}

void meao_fcgi_parser_free(struct meao_fcgi_parser *p)
{
    if (p == NULL)
        return;
    free(p->params);
    p->params = NULL;
    p->params_len = p->params_cap = 0;
}

void meao_fcgi_header_decode(const uint8_t in[MEAO_FCGI_HEADER_LEN], struct meao_fcgi_header *h)
{
    h->version = in[0];
    h->type = in[1];
    h->request_id = (uint16_t)((in[2] << 8) | in[3]);
    h->content_length = (uint16_t)((in[4] << 8) | in[5]);
    h->padding_length = in[6];
}

void meao_fcgi_header_encode(uint8_t out[MEAO_FCGI_HEADER_LEN], uint8_t type, uint16_t request_id,
                             uint16_t content_length, uint8_t padding_length)
{
    out[0] = MEAO_FCGI_VERSION;
    out[1] = type;
    out[2] = (uint8_t)(request_id >> 8);
    out[3] = (uint8_t)request_id;
    out[4] = (uint8_t)(content_length >> 8);
    out[5] = (uint8_t)content_length;
    out[6] = padding_length;
    out[7] = 0;
}

/* Read one length (1 byte below 128, else 4 bytes with the top bit set). */
static int get_len(const uint8_t *buf, size_t len, size_t *off, size_t *out)
{
    if (*off >= len)
        return -1;
    if ((buf[*off] & 0x80) == 0) {
        *out = buf[*off];
        *off += 1;
        return 0;
    }
    if (len - *off < 4)
        return -1;
    *out = ((size_t)(buf[*off] & 0x7f) << 24) | ((size_t)buf[*off + 1] << 16) |
           ((size_t)buf[*off + 2] << 8) | (size_t)buf[*off + 3];
    *off += 4;
    return 0;
}

int meao_fcgi_params_next(const uint8_t *buf, size_t len, size_t *off, struct meao_fcgi_pair *out)
{
    size_t o = *off, nlen, vlen;
    if (o >= len)
        return 0;
    if (get_len(buf, len, &o, &nlen) < 0 || get_len(buf, len, &o, &vlen) < 0)
        return -1;
    /* compare against what remains, one length at a time: no overflow */
    if (nlen > len - o || vlen > len - o - nlen)
        return -1;
    out->name = buf + o;
    out->name_len = nlen;
    out->value = buf + o + nlen;
    out->value_len = vlen;
    *off = o + nlen + vlen;
    return 1;
}

bool meao_fcgi_params_valid(const uint8_t *buf, size_t len)
{
    size_t off = 0;
    struct meao_fcgi_pair pair;
    int r;
    while ((r = meao_fcgi_params_next(buf, len, &off, &pair)) == 1)
        ;
    return r == 0;
}

const uint8_t *meao_fcgi_params_block(const struct meao_fcgi_parser *p, size_t *len)
{
    if (p->phase == MEAO_FCGI_IDLE || p->phase == MEAO_FCGI_IN_PARAMS || p->params == NULL) {
        *len = 0;
        return NULL;
    }
    *len = p->params_len;
    return p->params;
}

bool meao_fcgi_parser_end_request(struct meao_fcgi_parser *p)
{
    bool keep = p->keep_conn;
    p->phase = MEAO_FCGI_IDLE;
    p->req_id = 0;
    p->keep_conn = false;
    p->params_len = 0;
    if (p->params_cap > PARAMS_KEEP_CAP) {
        free(p->params);
        p->params = NULL;
        p->params_cap = 0;
    }
    return keep;
}

static size_t fail(struct meao_fcgi_parser *p, struct meao_fcgi_event *ev, const char *why,
                   size_t consumed)
{
    set_rstate(p, R_ERROR, D_SKIP);
    p->error = why;
    ev->type = MEAO_FCGI_EV_ERROR;
    ev->error = why;
    return consumed;
}

static void reply_end_request(struct meao_fcgi_parser *p, struct meao_fcgi_event *ev, uint16_t id,
                              uint8_t status, bool close_after)
{
    meao_fcgi_end_request_record(p->reply, id, 0, status);
    ev->type = MEAO_FCGI_EV_REPLY;
    ev->request_id = id;
    ev->data = p->reply;
    ev->len = 16;
    ev->close_after = close_after;
}

static size_t put_pair(uint8_t *out, const char *name, unsigned value)
{
    char v[16];
    size_t nlen = strlen(name);
    int vlen = snprintf(v, sizeof v, "%u", value);
    out[0] = (uint8_t)nlen;
    out[1] = (uint8_t)vlen;
    memcpy(out + 2, name, nlen);
    memcpy(out + 2 + nlen, v, (size_t)vlen);
    return 2 + nlen + (size_t)vlen;
}

/* Answer the variables of a GET_VALUES query we know, each at most once. The
 * query may have been cut at MEAO_FCGI_QUERY_MAX: pairs after a cut are lost. */
static void reply_get_values(struct meao_fcgi_parser *p, struct meao_fcgi_event *ev)
{
    static const char *const names[] = {"FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"};
    unsigned values[3] = {p->max_conns, p->max_reqs, 0};
    unsigned seen = 0;
    size_t off = 0, clen = 0, plen;
    struct meao_fcgi_pair pair;

    while (meao_fcgi_params_next(p->small, p->small_len, &off, &pair) == 1) {
        for (unsigned i = 0; i < 3; i++) {
            if (!(seen & (1u << i)) && pair.name_len == strlen(names[i]) &&
                memcmp(pair.name, names[i], pair.name_len) == 0) {
                seen |= 1u << i;
                clen += put_pair(p->reply + MEAO_FCGI_HEADER_LEN + clen, names[i], values[i]);
            }
        }
    }
    plen = (8 - clen % 8) % 8;
    memset(p->reply + MEAO_FCGI_HEADER_LEN + clen, 0, plen);
    meao_fcgi_header_encode(p->reply, MEAO_FCGI_GET_VALUES_RESULT, 0, (uint16_t)clen,
                            (uint8_t)plen);
    ev->type = MEAO_FCGI_EV_REPLY;
    ev->request_id = 0;
    ev->data = p->reply;
    ev->len = MEAO_FCGI_HEADER_LEN + clen + plen;
    ev->close_after = false;
}

static void reply_unknown_type(struct meao_fcgi_parser *p, struct meao_fcgi_event *ev)
{
    meao_fcgi_header_encode(p->reply, MEAO_FCGI_UNKNOWN_TYPE, 0, 8, 0);
    memset(p->reply + MEAO_FCGI_HEADER_LEN, 0, 8);
    p->reply[MEAO_FCGI_HEADER_LEN] = p->cur.type;
    ev->type = MEAO_FCGI_EV_REPLY;
    ev->request_id = 0;
    ev->data = p->reply;
    ev->len = 16;
    ev->close_after = false;
}

static bool is_active(const struct meao_fcgi_parser *p, uint16_t id)
{
    return p->phase != MEAO_FCGI_IDLE && id == p->req_id;
}

/* A complete header arrived. Decide what its content is for; records without
 * content may produce their event right away. Returns false on a protocol error
 * (ev filled by fail()). */
static bool record_start(struct meao_fcgi_parser *p, struct meao_fcgi_event *ev, int *disp)
{
    const struct meao_fcgi_header *h = &p->cur;
    *disp = D_SKIP;
    p->small_len = 0;

    if (h->version != MEAO_FCGI_VERSION) {
        fail(p, ev, "unsupported FastCGI version", 0);
        return false;
    }
    switch (h->type) {
    case MEAO_FCGI_BEGIN_REQUEST:
        if (h->request_id == MEAO_FCGI_NULL_REQUEST_ID) {
            fail(p, ev, "BEGIN_REQUEST with request id 0", 0);
            return false;
        }
        if (h->content_length != 8) {
            fail(p, ev, "BEGIN_REQUEST body is not 8 bytes", 0);
            return false;
        }
        *disp = D_SMALL;
        return true;
    case MEAO_FCGI_PARAMS:
        if (!is_active(p, h->request_id) || p->phase != MEAO_FCGI_IN_PARAMS)
            return true; /* another id, or a stray record after the stream ended */
        if (h->content_length == 0) {
            if (!meao_fcgi_params_valid(p->params, p->params_len)) {
                fail(p, ev, "malformed PARAMS name-value pair", 0);
                return false;
            }
            p->phase = MEAO_FCGI_IN_STDIN;
            ev->type = MEAO_FCGI_EV_PARAMS;
            ev->request_id = h->request_id;
            ev->data = p->params;
            ev->len = p->params_len;
            return true;
        }
        if (h->content_length > p->params_max - p->params_len) {
            fail(p, ev, "PARAMS larger than the limit", 0);
            return false;
        }
        if (p->params_len + h->content_length > p->params_cap) {
            size_t cap = p->params_cap ? p->params_cap * 2 : 1024;
            uint8_t *np;
            while (cap < p->params_len + h->content_length)
                cap *= 2;
            if (cap > p->params_max)
                cap = p->params_max;
            np = realloc(p->params, cap);
            if (np == NULL) {
                fail(p, ev, "out of memory for PARAMS", 0);
                return false;
            }
            p->params = np;
            p->params_cap = cap;
        }
        *disp = D_PARAMS;
        return true;
    case MEAO_FCGI_STDIN:
        if (!is_active(p, h->request_id))
            return true;
        if (p->phase == MEAO_FCGI_IN_PARAMS) {
            fail(p, ev, "STDIN before the end of PARAMS", 0);
            return false;
        }
        if (p->phase != MEAO_FCGI_IN_STDIN)
            return true;
        if (h->content_length == 0) {
            p->phase = MEAO_FCGI_RUNNING;
            ev->type = MEAO_FCGI_EV_STDIN_END;
            ev->request_id = h->request_id;
            return true;
        }
        *disp = D_STDIN;
        return true;
    case MEAO_FCGI_ABORT_REQUEST:
    case MEAO_FCGI_GET_VALUES:
        /* content (if any) is read first; the event comes at the end */
        *disp = h->type == MEAO_FCGI_GET_VALUES ? D_SMALL : D_SKIP;
        return true;
    case MEAO_FCGI_DATA:        /* FILTER role only */
    case MEAO_FCGI_END_REQUEST: /* the rest only ever flow the other way */
    case MEAO_FCGI_STDOUT:
    case MEAO_FCGI_STDERR:
    case MEAO_FCGI_GET_VALUES_RESULT:
    case MEAO_FCGI_UNKNOWN_TYPE:
    default: return true;
    }
}

/* The current record's content has been read in full. */
static void record_end(struct meao_fcgi_parser *p, struct meao_fcgi_event *ev)
{
    const struct meao_fcgi_header *h = &p->cur;
    switch (h->type) {
    case MEAO_FCGI_BEGIN_REQUEST: {
        uint16_t role = (uint16_t)((p->small[0] << 8) | p->small[1]);
        bool keep = (p->small[2] & MEAO_FCGI_KEEP_CONN) != 0;
        if (p->phase != MEAO_FCGI_IDLE) {
            /* the spec says to ignore a BEGIN for the active id */
            if (h->request_id != p->req_id)
                reply_end_request(p, ev, h->request_id, MEAO_FCGI_CANT_MPX_CONN, false);
            return;
        }
        if (role != MEAO_FCGI_RESPONDER) {
            reply_end_request(p, ev, h->request_id, MEAO_FCGI_UNKNOWN_ROLE, !keep);
            return;
        }
        p->phase = MEAO_FCGI_IN_PARAMS;
        p->req_id = h->request_id;
        p->keep_conn = keep;
        p->params_len = 0;
        ev->type = MEAO_FCGI_EV_BEGIN;
        ev->request_id = h->request_id;
        ev->keep_conn = keep;
        return;
    }
    case MEAO_FCGI_ABORT_REQUEST:
        if (is_active(p, h->request_id)) {
            /* later records of this id are ignored until end_request() */
            p->phase = MEAO_FCGI_RUNNING;
            ev->type = MEAO_FCGI_EV_ABORT;
            ev->request_id = h->request_id;
        }
        return;
    case MEAO_FCGI_GET_VALUES:
        if (h->request_id == MEAO_FCGI_NULL_REQUEST_ID)
            reply_get_values(p, ev);
        return;
    case MEAO_FCGI_PARAMS:
    case MEAO_FCGI_STDIN:
    case MEAO_FCGI_DATA:
    case MEAO_FCGI_END_REQUEST:
    case MEAO_FCGI_STDOUT:
    case MEAO_FCGI_STDERR:
    case MEAO_FCGI_GET_VALUES_RESULT:
    case MEAO_FCGI_UNKNOWN_TYPE: return;
    default:
        /* unknown management record: say so; unknown application records
         * are skipped (the spec defines UNKNOWN_TYPE for management only) */
        if (h->request_id == MEAO_FCGI_NULL_REQUEST_ID)
            reply_unknown_type(p, ev);
        return;
    }
}

static void after_content(struct meao_fcgi_parser *p)
{
    p->pad_left = p->cur.padding_length;
    set_rstate(p, p->pad_left ? R_PADDING : R_HEADER, D_SKIP);
}

size_t meao_fcgi_feed(struct meao_fcgi_parser *p, const uint8_t *in, size_t len,
                      struct meao_fcgi_event *ev)
{
    size_t off = 0;
    memset(ev, 0, sizeof *ev);

    for (;;) {
        switch (p->rstate) {
        case R_ERROR:
            ev->type = MEAO_FCGI_EV_ERROR;
            ev->error = p->error;
            return off;
        case R_HEADER: {
            size_t n;
            int disp;
            if (off == len)
                return off;
            n = MEAO_FCGI_HEADER_LEN - p->hlen;
            if (n > len - off)
                n = len - off;
            memcpy(p->hbuf + p->hlen, in + off, n);
            p->hlen += n;
            off += n;
            if (p->hlen < MEAO_FCGI_HEADER_LEN)
                return off;
            p->hlen = 0;
            meao_fcgi_header_decode(p->hbuf, &p->cur);
            ev->hdr = p->cur;
            if (!record_start(p, ev, &disp))
                return off;
            p->content_left = p->cur.content_length;
            if (p->content_left) {
                set_rstate(p, R_CONTENT, disp);
            } else {
                record_end(p, ev);
                after_content(p);
            }
            if (ev->type != MEAO_FCGI_EV_NONE)
                return off;
            break;
        }
        case R_CONTENT: {
            size_t n = p->content_left;
            int disp = p->disp;
            if (off == len)
                return off;
            if (n > len - off)
                n = len - off;
            ev->hdr = p->cur;
            if (disp == D_STDIN) {
                ev->type = MEAO_FCGI_EV_STDIN;
                ev->request_id = p->cur.request_id;
                ev->data = in + off;
                ev->len = n;
            } else if (disp == D_PARAMS) {
                /* capacity was reserved for the whole record in record_start() */
                memcpy(p->params + p->params_len, in + off, n);
                p->params_len += n;
            } else if (disp == D_SMALL && p->small_len < sizeof p->small) {
                size_t room = sizeof p->small - p->small_len;
                memcpy(p->small + p->small_len, in + off, n < room ? n : room);
                p->small_len += n < room ? n : room;
            }
            off += n;
            p->content_left -= n;
            if (p->content_left == 0) {
                if (ev->type == MEAO_FCGI_EV_NONE)
                    record_end(p, ev);
                after_content(p);
            }
            if (ev->type != MEAO_FCGI_EV_NONE)
                return off;
            break;
        }
        case R_PADDING: {
            size_t n = p->pad_left;
            if (off == len)
                return off;
            if (n > len - off)
                n = len - off;
            off += n;
            p->pad_left -= n;
            if (p->pad_left == 0)
                set_rstate(p, R_HEADER, D_SKIP);
            break;
        }
        default: return fail(p, ev, "corrupt parser state", off);
        }
    }
}

/* ---- encoders ---- */

static bool put_record(struct meao_buf *out, uint8_t type, uint16_t id, const void *data,
                       size_t len, bool pad)
{
    size_t plen = pad ? (8 - len % 8) % 8 : 0;
    uint8_t *w;
    if (!meao_buf_reserve(out, MEAO_FCGI_HEADER_LEN + len + plen))
        return false;
    w = (uint8_t *)out->p + out->len;
    meao_fcgi_header_encode(w, type, id, (uint16_t)len, (uint8_t)plen);
    if (len)
        memcpy(w + MEAO_FCGI_HEADER_LEN, data, len);
    if (plen)
        memset(w + MEAO_FCGI_HEADER_LEN + len, 0, plen);
    out->len += MEAO_FCGI_HEADER_LEN + len + plen;
    return true;
}

bool meao_fcgi_encode_stream(struct meao_buf *out, uint8_t type, uint16_t request_id,
                             const void *data, size_t len, bool pad)
{
    const uint8_t *d = data;
    size_t nrec = (len + MEAO_FCGI_MAX_CONTENT - 1) / MEAO_FCGI_MAX_CONTENT;
    /* one reservation for the whole stream */
    if (!meao_buf_reserve(out, len + nrec * (MEAO_FCGI_HEADER_LEN + 7)))
        return false;
    while (len > 0) {
        size_t n = len > MEAO_FCGI_MAX_CONTENT ? MEAO_FCGI_MAX_CONTENT : len;
        if (!put_record(out, type, request_id, d, n, pad))
            return false;
        d += n;
        len -= n;
    }
    return true;
}

bool meao_fcgi_encode_stream_end(struct meao_buf *out, uint8_t type, uint16_t request_id)
{
    return put_record(out, type, request_id, NULL, 0, false);
}

void meao_fcgi_end_request_record(uint8_t out[16], uint16_t request_id, uint32_t app_status,
                                  uint8_t protocol_status)
{
    meao_fcgi_header_encode(out, MEAO_FCGI_END_REQUEST, request_id, 8, 0);
    out[8] = (uint8_t)(app_status >> 24);
    out[9] = (uint8_t)(app_status >> 16);
    out[10] = (uint8_t)(app_status >> 8);
    out[11] = (uint8_t)app_status;
    out[12] = protocol_status;
    out[13] = out[14] = out[15] = 0;
}

bool meao_fcgi_encode_response(struct meao_buf *out, uint16_t request_id, const void *data,
                               size_t len, uint32_t app_status, bool pad)
{
    uint8_t end[16];
    if (!meao_buf_reserve(out, len + 64))
        return false;
    if (!meao_fcgi_encode_stream(out, MEAO_FCGI_STDOUT, request_id, data, len, pad) ||
        !meao_fcgi_encode_stream_end(out, MEAO_FCGI_STDOUT, request_id))
        return false;
    meao_fcgi_end_request_record(end, request_id, app_status, MEAO_FCGI_REQUEST_COMPLETE);
    return meao_buf_append(out, end, sizeof end);
}

bool meao_fcgi_encode_begin(struct meao_buf *out, uint16_t request_id, uint16_t role, uint8_t flags)
{
    uint8_t body[8] = {(uint8_t)(role >> 8), (uint8_t)role, flags, 0, 0, 0, 0, 0};
    return put_record(out, MEAO_FCGI_BEGIN_REQUEST, request_id, body, sizeof body, false);
}

static void put_len(uint8_t **w, size_t n)
{
    if (n < 128) {
        *(*w)++ = (uint8_t)n;
    } else {
        *(*w)++ = (uint8_t)((n >> 24) | 0x80);
        *(*w)++ = (uint8_t)(n >> 16);
        *(*w)++ = (uint8_t)(n >> 8);
        *(*w)++ = (uint8_t)n;
    }
}

bool meao_fcgi_encode_pair(struct meao_buf *out, const void *name, size_t name_len,
                           const void *value, size_t value_len)
{
    uint8_t *w;
    if (name_len > 0x7fffffffu || value_len > 0x7fffffffu)
        return false;
    if (!meao_buf_reserve(out, 8 + name_len + value_len))
        return false;
    w = (uint8_t *)out->p + out->len;
    put_len(&w, name_len);
    put_len(&w, value_len);
    if (name_len)
        memcpy(w, name, name_len);
    w += name_len;
    if (value_len)
        memcpy(w, value, value_len);
    w += value_len;
    out->len = (size_t)((char *)w - out->p);
    return true;
}
