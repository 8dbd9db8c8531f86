#include "core/json.h"

#include <stdio.h>
#include <string.h>

int meao_json_depth(const char *buf, size_t len, int limit)
{
    int depth = 0, max = 0;
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max) {
                max = depth;
                if (max > limit)
                    return max;
            }
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return max;
}

static void set_why(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", msg);
}

enum meao_err meao_json_parse(const char *buf, size_t len, size_t max_len, int max_depth,
                              json_t **out, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *v;

    *out = NULL;
    if (len > max_len) {
        set_why(why, whylen, "Request body too large");
        return MEAO_E_PAYLOAD_TOO_LARGE;
    }
    if (len == 0) {
        set_why(why, whylen, "Request body is empty; a JSON object is required");
        return MEAO_E_INVALID_REQUEST;
    }
    if (memchr(buf, '\0', len) != NULL) {
        set_why(why, whylen, "Request body contains a NUL byte");
        return MEAO_E_INVALID_REQUEST;
    }
    if (meao_json_depth(buf, len, max_depth) > max_depth) {
        char m[64];
        snprintf(m, sizeof m, "JSON nesting deeper than %d", max_depth);
        set_why(why, whylen, m);
        return MEAO_E_INVALID_REQUEST;
    }
    /* Without JSON_ALLOW_NUL jansson rejects \u0000; JSON_REJECT_DUPLICATES
     * closes the "which duplicate wins" ambiguity; invalid UTF-8 is rejected. */
    v = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (v == NULL) {
        char m[200];
        char *near = strstr(jerr.text, " near ");
        if (near)
            *near = '\0'; /* never echo the client's bytes back */
        snprintf(m, sizeof m, "Invalid JSON at line %d column %d: %.120s", jerr.line, jerr.column,
                 jerr.text);
        for (char *p = m; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
                *p = '?';
        set_why(why, whylen, m);
        return MEAO_E_INVALID_REQUEST;
    }
    *out = v;
    return MEAO_OK;
}

char *meao_json_dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

const char *meao_json_str(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}
