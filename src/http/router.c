#include "http/router.h"

#include <stdio.h>
#include <string.h>

/* Match one pattern against path; fills params (pointing into buf, a
 * writable copy of path) on success. */
static bool match_one(const char *pattern, const char *path, char *buf, size_t buflen,
                      const char **params, size_t *nparams)
{
    const char *p = pattern;
    size_t n = 0;
    size_t bi = 0;

    while (*p && *path) {
        if (*p == ':') {
            const char *seg_end = strchr(path, '/');
            size_t sl = seg_end ? (size_t)(seg_end - path) : strlen(path);
            if (sl == 0 || n >= MEAO_MAX_PATH_PARAMS || bi + sl + 1 > buflen)
                return false;
            memcpy(buf + bi, path, sl);
            buf[bi + sl] = '\0';
            params[n++] = buf + bi;
            bi += sl + 1;
            path += sl;
            while (*p && *p != '/')
                p++;
            continue;
        }
        if (*p != *path)
            return false;
        p++;
        path++;
    }
    if (*p != '\0' || *path != '\0')
        return false;
    *nparams = n;
    return true;
}

const struct meao_route *meao_router_match(const struct meao_route *table, size_t n,
                                           struct meao_req *req, enum meao_err *err, char *allow,
                                           size_t allowlen)
{
    bool path_seen = false;
    size_t al = 0;
    const char *method = req->method ? req->method : "";

    if (allowlen)
        allow[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *params[MEAO_MAX_PATH_PARAMS];
        size_t np = 0;
        if (!match_one(table[i].pattern, req->path, req->path_buf, sizeof req->path_buf, params,
                       &np))
            continue;
        if (strcmp(table[i].method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(table[i].method, "GET") == 0)) {
            memcpy(req->params, params, sizeof params);
            req->nparams = np;
            req->route = &table[i];
            *err = MEAO_OK;
            return &table[i];
        }
        path_seen = true;
        if (al < allowlen && !strstr(allow, table[i].method)) {
            int w = snprintf(allow + al, allowlen - al, "%s%s", al ? ", " : "", table[i].method);
            if (w > 0)
                al += (size_t)w;
            if (al >= allowlen)
                al = allowlen - 1;
        }
    }
    *err = path_seen ? MEAO_E_METHOD_NOT_ALLOWED : MEAO_E_NOT_FOUND;
    return NULL;
}

static const char *type_name(enum meao_ftype t)
{
    switch (t) {
    case MEAO_F_STRING: return "a string";
    case MEAO_F_INT: return "an integer";
    case MEAO_F_BOOL: return "a boolean";
    case MEAO_F_ARRAY: return "an array";
    case MEAO_F_OBJECT: return "an object";
    default: return "a value";
    }
}

static bool type_ok(enum meao_ftype t, const json_t *v)
{
    switch (t) {
    case MEAO_F_STRING: return json_is_string(v);
    case MEAO_F_INT: return json_is_integer(v);
    case MEAO_F_BOOL: return json_is_boolean(v);
    case MEAO_F_ARRAY: return json_is_array(v);
    case MEAO_F_OBJECT: return json_is_object(v);
    default: return true;
    }
}

enum meao_err meao_schema_check(const struct meao_schema *schema, const json_t *obj, char *why,
                                size_t whylen)
{
    const char *key;
    json_t *v;

    if (!json_is_object(obj)) {
        snprintf(why, whylen, "Request body must be a JSON object");
        return MEAO_E_INVALID_REQUEST;
    }
    if (!schema->allow_unknown) {
        json_object_foreach((json_t *)obj, key, v)
        {
            bool known = false;
            for (size_t i = 0; i < schema->nfields && !known; i++)
                known = strcmp(schema->fields[i].name, key) == 0;
            if (!known) {
                snprintf(why, whylen, "Unknown field \"%.40s\"", key);
                return MEAO_E_INVALID_REQUEST;
            }
        }
    }
    for (size_t i = 0; i < schema->nfields; i++) {
        const struct meao_field *f = &schema->fields[i];
        v = json_object_get(obj, f->name);
        if (v == NULL || json_is_null(v)) {
            if (f->required) {
                snprintf(why, whylen, "Missing required field \"%s\"", f->name);
                return MEAO_E_INVALID_PARAMETER;
            }
            continue;
        }
        if (!type_ok(f->type, v)) {
            snprintf(why, whylen, "Field \"%s\" must be %s", f->name, type_name(f->type));
            return MEAO_E_INVALID_PARAMETER;
        }
        if (f->type == MEAO_F_STRING && (f->min || f->max)) {
            long long len = (long long)json_string_length(v);
            if (len < f->min || (f->max && len > f->max)) {
                snprintf(why, whylen, "Field \"%s\" must be %lld..%lld bytes long", f->name, f->min,
                         f->max);
                return MEAO_E_INVALID_PARAMETER;
            }
        } else if (f->type == MEAO_F_INT && (f->min || f->max)) {
            long long x = (long long)json_integer_value(v);
            if (x < f->min || x > f->max) {
                snprintf(why, whylen, "Field \"%s\" must be between %lld and %lld", f->name, f->min,
                         f->max);
                return MEAO_E_INVALID_PARAMETER;
            }
        } else if (f->type == MEAO_F_ARRAY && f->max) {
            if ((long long)json_array_size(v) > f->max) {
                snprintf(why, whylen, "Field \"%s\" has more than %lld items", f->name, f->max);
                return MEAO_E_INVALID_PARAMETER;
            }
        }
    }
    return MEAO_OK;
}
