/* FastCGI record codec (FastCGI 1.0 specification), responder side.
 *
 * Pure and transport-free: no I/O, no clocks, no globals. The parser is fed
 * the bytes a connection delivers, in pieces of any size (one byte at a time
 * works), and yields one event per call: a request starts, its parameters are
 * complete, a piece of its body, its body ended, an abort, a reply the codec
 * generated itself (GET_VALUES_RESULT, UNKNOWN_TYPE, END_REQUEST for a role or
 * a multiplexed id it refuses), or a protocol error. Nothing in the input can
 * make it allocate more than its configured parameter limit: it keeps a record
 * header, a BEGIN_REQUEST body and a bounded GET_VALUES query inline, streams
 * STDIN through without copying, and buffers only the PARAMS stream.
 *
 * One parser per connection, one request at a time (FCGI_MPXS_CONNS=0). The
 * encoders append the records a responder writes (STDOUT, the empty STDOUT
 * that ends the stream, END_REQUEST), plus BEGIN_REQUEST/PARAMS/STDIN for
 * tests and clients. */
#ifndef MEAO_PROTO_FCGI_H
#define MEAO_PROTO_FCGI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define MEAO_FCGI_VERSION         1
#define MEAO_FCGI_HEADER_LEN      8
#define MEAO_FCGI_MAX_CONTENT     65535u
#define MEAO_FCGI_NULL_REQUEST_ID 0

/* Record types. */
enum meao_fcgi_type {
    MEAO_FCGI_BEGIN_REQUEST = 1,
    MEAO_FCGI_ABORT_REQUEST = 2,
    MEAO_FCGI_END_REQUEST = 3,
    MEAO_FCGI_PARAMS = 4,
    MEAO_FCGI_STDIN = 5,
    MEAO_FCGI_STDOUT = 6,
    MEAO_FCGI_STDERR = 7,
    MEAO_FCGI_DATA = 8,
    MEAO_FCGI_GET_VALUES = 9,
    MEAO_FCGI_GET_VALUES_RESULT = 10,
    MEAO_FCGI_UNKNOWN_TYPE = 11,
};

/* BEGIN_REQUEST roles and flags. */
enum meao_fcgi_role {
    MEAO_FCGI_RESPONDER = 1,
    MEAO_FCGI_AUTHORIZER = 2,
    MEAO_FCGI_FILTER = 3,
};
#define MEAO_FCGI_KEEP_CONN 1u

/* END_REQUEST protocol status. */
enum meao_fcgi_proto_status {
    MEAO_FCGI_REQUEST_COMPLETE = 0,
    MEAO_FCGI_CANT_MPX_CONN = 1,
    MEAO_FCGI_OVERLOADED = 2,
    MEAO_FCGI_UNKNOWN_ROLE = 3,
};

/* Default bound on the PARAMS stream of one request (all records together). */
#define MEAO_FCGI_PARAMS_MAX_DEFAULT (64u * 1024u)
/* A GET_VALUES query longer than this is answered from its first bytes only. */
#define MEAO_FCGI_QUERY_MAX 256
/* Big enough for any reply the codec generates itself. */
#define MEAO_FCGI_REPLY_MAX 128

/* A decoded record header. */
struct meao_fcgi_header {
    uint8_t version;
    uint8_t type;
    uint16_t request_id;
    uint16_t content_length;
    uint8_t padding_length;
};

/* One name-value pair; both point into the block being iterated (borrowed). */
struct meao_fcgi_pair {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
};

enum meao_fcgi_ev_type {
    MEAO_FCGI_EV_NONE = 0,  /* all input consumed; feed more */
    MEAO_FCGI_EV_BEGIN,     /* a responder request started: request_id, keep_conn */
    MEAO_FCGI_EV_PARAMS,    /* the PARAMS stream ended: data/len is the whole, validated
                             * block; walk it with meao_fcgi_params_next() */
    MEAO_FCGI_EV_STDIN,     /* a piece of the request body: data/len (may be split anywhere) */
    MEAO_FCGI_EV_STDIN_END, /* the body ended: the request is complete, run it */
    MEAO_FCGI_EV_ABORT,     /* the web server aborted the active request */
    MEAO_FCGI_EV_REPLY,     /* write data/len to the peer verbatim; if close_after, close
                             * the connection once it is written */
    MEAO_FCGI_EV_ERROR,     /* protocol violation (error says which): close the connection.
                             * The parser stays in this state. */
};

/* What one meao_fcgi_feed() call yields. data points either into the caller's
 * input (STDIN) or into the parser (PARAMS, REPLY); it is borrowed and valid
 * until the next call on the parser (PARAMS: see meao_fcgi_params_block()). */
struct meao_fcgi_event {
    enum meao_fcgi_ev_type type;
    struct meao_fcgi_header hdr; /* the record the event came from */
    uint16_t request_id;
    bool keep_conn;   /* BEGIN: FCGI_KEEP_CONN was set */
    bool close_after; /* REPLY: close the connection after writing it */
    const uint8_t *data;
    size_t len;
    const char *error; /* ERROR: static one-line reason */
};

enum meao_fcgi_phase {
    MEAO_FCGI_IDLE = 0,  /* no active request */
    MEAO_FCGI_IN_PARAMS, /* BEGIN seen, reading PARAMS */
    MEAO_FCGI_IN_STDIN,  /* PARAMS ended, reading STDIN */
    MEAO_FCGI_RUNNING,   /* STDIN ended; waiting for meao_fcgi_parser_end_request() */
};

/* Parser state. Treat as opaque; it is public so it can be embedded. */
struct meao_fcgi_parser {
    size_t params_max;
    int rstate; /* record state: header, content, padding, error */
    int disp;   /* what the current record's content is for */
    uint8_t hbuf[MEAO_FCGI_HEADER_LEN];
    size_t hlen;
    struct meao_fcgi_header cur;
    size_t content_left;
    size_t pad_left;
    uint8_t small[MEAO_FCGI_QUERY_MAX]; /* BEGIN_REQUEST body or GET_VALUES query */
    size_t small_len;
    const char *error;

    enum meao_fcgi_phase phase;
    uint16_t req_id; /* the active request; 0 when idle */
    bool keep_conn;

    uint8_t *params; /* the PARAMS stream of the active request (owned) */
    size_t params_len;
    size_t params_cap;

    unsigned max_conns; /* answered to GET_VALUES */
    unsigned max_reqs;

    uint8_t reply[MEAO_FCGI_REPLY_MAX];
};

/* Initialise a parser. params_max bounds the PARAMS stream of one request
 * (0 means MEAO_FCGI_PARAMS_MAX_DEFAULT). Never fails; allocates nothing yet. */
void meao_fcgi_parser_init(struct meao_fcgi_parser *p, size_t params_max);

/* Values answered to a GET_VALUES query for FCGI_MAX_CONNS and FCGI_MAX_REQS
 * (default 1 and 1; FCGI_MPXS_CONNS is always 0). */
void meao_fcgi_parser_set_limits(struct meao_fcgi_parser *p, unsigned max_conns, unsigned max_reqs);

/* Release what the parser owns (the params buffer). Accepts NULL. The parser
 * may be reused after meao_fcgi_parser_init(). */
void meao_fcgi_parser_free(struct meao_fcgi_parser *p);

/* Consume up to len bytes of in and produce at most one event in *ev. Returns
 * how many bytes were consumed; call again with the rest until it returns
 * MEAO_FCGI_EV_NONE (then all of in was consumed). On EV_ERROR nothing more
 * is consumed, ever. in is borrowed for the duration of the call only, except
 * that an EV_STDIN event points into it. */
size_t meao_fcgi_feed(struct meao_fcgi_parser *p, const uint8_t *in, size_t len,
                      struct meao_fcgi_event *ev);

/* The active request has been answered (END_REQUEST written or queued). Frees
 * the parser for the next BEGIN_REQUEST. Returns the request's keep_conn flag:
 * false means the responder must close the connection after its response. */
bool meao_fcgi_parser_end_request(struct meao_fcgi_parser *p);

/* The PARAMS block of the active request (borrowed; valid from EV_PARAMS until
 * meao_fcgi_parser_end_request() or the next BEGIN_REQUEST), or NULL/0. Lets a
 * responder build its request only once STDIN has ended. */
const uint8_t *meao_fcgi_params_block(const struct meao_fcgi_parser *p, size_t *len);

/* Walk a name-value block: *off starts at 0. Returns 1 with *out filled (pointing
 * into buf), 0 at the end, -1 when a length is truncated or lies (exceeds the
 * bytes that remain). Never reads outside buf[0..len). */
int meao_fcgi_params_next(const uint8_t *buf, size_t len, size_t *off, struct meao_fcgi_pair *out);

/* True when buf[0..len) is a well-formed sequence of name-value pairs. */
bool meao_fcgi_params_valid(const uint8_t *buf, size_t len);

/* Decode an 8-byte header. */
void meao_fcgi_header_decode(const uint8_t in[MEAO_FCGI_HEADER_LEN], struct meao_fcgi_header *h);

/* Encode a version-1 header. */
void meao_fcgi_header_encode(uint8_t out[MEAO_FCGI_HEADER_LEN], uint8_t type, uint16_t request_id,
                             uint16_t content_length, uint8_t padding_length);

/* Append a stream's data as records of the given type (STDOUT, STDERR, STDIN,
 * PARAMS), at most 65535 content bytes each, padded to a multiple of 8 when pad
 * is set. len 0 appends nothing (use meao_fcgi_encode_stream_end() for the
 * terminator). Returns false on allocation failure (out may hold a prefix). */
bool meao_fcgi_encode_stream(struct meao_buf *out, uint8_t type, uint16_t request_id,
                             const void *data, size_t len, bool pad);

/* Append the empty record that ends a stream of the given type. */
bool meao_fcgi_encode_stream_end(struct meao_buf *out, uint8_t type, uint16_t request_id);

/* Write an END_REQUEST record (16 bytes) into out. */
void meao_fcgi_end_request_record(uint8_t out[16], uint16_t request_id, uint32_t app_status,
                                  uint8_t protocol_status);

/* Append a complete response: data as STDOUT records, the empty STDOUT and
 * END_REQUEST(app_status, REQUEST_COMPLETE). False on allocation failure. */
bool meao_fcgi_encode_response(struct meao_buf *out, uint16_t request_id, const void *data,
                               size_t len, uint32_t app_status, bool pad);

/* Append BEGIN_REQUEST (web-server side; for tests and clients). */
bool meao_fcgi_encode_begin(struct meao_buf *out, uint16_t request_id, uint16_t role,
                            uint8_t flags);

/* Append one name-value pair (no record header) using 1-byte lengths below 128
 * and 4-byte lengths otherwise. False when a length exceeds 2^31-1 or on
 * allocation failure. */
bool meao_fcgi_encode_pair(struct meao_buf *out, const void *name, size_t name_len,
                           const void *value, size_t value_len);

#endif
