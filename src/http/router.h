/* The route table: method, path pattern, handler, auth level, rate class and
 * body schema in one declarative row, so nothing unvalidated reaches a
 * handler (kcgi's kvalid idea). */
#ifndef MEAO_HTTP_ROUTER_H
#define MEAO_HTTP_ROUTER_H

#include "http/http.h"

struct meao_app;

enum meao_auth_level { MEAO_AUTH_NONE = 0, MEAO_AUTH_USER, MEAO_AUTH_OWNER };

enum meao_rate_class {
    MEAO_RATE_NONE = 0, /* probes */
    MEAO_RATE_REST,     /* per user: 60/min and 1000/h */
    MEAO_RATE_MESSAGES, /* per user: 10/min on POST .../messages */
    MEAO_RATE_PAIRING,  /* per client IP: 10 per 15 min */
};

enum meao_ftype { MEAO_F_STRING, MEAO_F_INT, MEAO_F_BOOL, MEAO_F_ARRAY, MEAO_F_OBJECT, MEAO_F_ANY };

/* One body field. For strings min/max bound the length in bytes; for ints the value. */
struct meao_field {
    const char *name;
    enum meao_ftype type;
    bool required;
    long long min;
    long long max;
};

struct meao_schema {
    const struct meao_field *fields;
    size_t nfields;
    bool allow_unknown; /* false: an unknown key is INVALID_REQUEST */
};

typedef enum meao_err (*meao_handler_fn)(struct meao_app *app, struct meao_req *req,
                                         struct meao_resp *resp);

enum {
    MEAO_ROUTE_ENVELOPE = 1u << 0,      /* errors use the /api/v1 envelope */
    MEAO_ROUTE_JSON_BODY = 1u << 1,     /* a JSON object body is required */
    MEAO_ROUTE_OPTIONAL_BODY = 1u << 2, /* JSON body allowed but may be empty */
    MEAO_ROUTE_SLOW = 1u << 3,          /* may block for long (orchestrator turns) */
};

struct meao_route {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/api/v1/sessions/:id"; ":" segments become params */
    meao_handler_fn handler;
    enum meao_auth_level auth;
    enum meao_rate_class rate;
    const struct meao_schema *body;
    unsigned flags;
};

/* Validate a parsed JSON object against schema. On failure writes a
 * client-safe reason into why and returns INVALID_REQUEST/INVALID_PARAMETER. */
enum meao_err meao_schema_check(const struct meao_schema *schema, const json_t *obj, char *why,
                                size_t whylen);

/* Match method + path against the table. Returns the route, or NULL with
 * *err = NOT_FOUND, or METHOD_NOT_ALLOWED with the allowed methods in allow
 * ("GET, POST"). Path params are stored in req. */
const struct meao_route *meao_router_match(const struct meao_route *table, size_t n,
                                           struct meao_req *req, enum meao_err *err, char *allow,
                                           size_t allowlen);

#endif
