/* Bounded JSON on jansson. Request bodies go through meao_json_parse(), which
 * enforces the size limit, a nesting limit, valid UTF-8, no NUL bytes (raw or
 * \u0000) and no duplicate keys before anything else sees them. */
#ifndef MEAO_CORE_JSON_H
#define MEAO_CORE_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "core/err.h"

#define MEAO_JSON_DEFAULT_DEPTH 32

/* Parse buf[0..len). On success *out is a new reference (caller owns).
 * Errors: MEAO_E_PAYLOAD_TOO_LARGE when len > max_len, MEAO_E_INVALID_REQUEST
 * otherwise; why (may be NULL) gets a one-line reason safe to show a client. */
enum meao_err meao_json_parse(const char *buf, size_t len, size_t max_len, int max_depth,
                              json_t **out, char *why, size_t whylen);

/* Nesting depth of the JSON text (arrays/objects), scanning strings correctly;
 * stops counting once above limit. Exposed for tests and the fuzzer. */
int meao_json_depth(const char *buf, size_t len, int limit);

/* Compact dump; caller frees with free(). NULL on allocation failure. */
char *meao_json_dump(const json_t *v);

/* Borrowed string member or NULL when absent / not a string. */
const char *meao_json_str(const json_t *obj, const char *key);

#endif
