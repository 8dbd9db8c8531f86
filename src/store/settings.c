#include "store/settings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "store/identity.h"

enum skind { S_INT, S_LEVEL, S_POLICY };

struct skey {
    const char *name;
    enum skind kind;
    size_t off;
};

#define OFF(f) offsetof(struct meao_config, f)

/* What may change without a restart. Everything else (paths, sockets,
 * secrets, the turn deadline that nginx's timeout must match) stays in the
 * configuration file. */
static const struct skey keys[] = {
    {"log_level", S_LEVEL, OFF(log_level)},
    {"rate_rest_per_min", S_INT, OFF(rate_rest_per_min)},
    {"rate_rest_per_hour", S_INT, OFF(rate_rest_per_hour)},
    {"rate_messages_per_min", S_INT, OFF(rate_messages_per_min)},
    {"rate_pairing_per_15min", S_INT, OFF(rate_pairing_per_15min)},
    {"rate_ws_messages_per_min", S_INT, OFF(rate_ws_messages_per_min)},
    {"ws_max_connections_per_user", S_INT, OFF(ws_max_connections_per_user)},
    {"tool_policy_bash", S_POLICY, OFF(tool_policy_bash)},
    {"tool_policy_read_file", S_POLICY, OFF(tool_policy_read_file)},
    {"tool_policy_write_file", S_POLICY, OFF(tool_policy_write_file)},
};

#define NKEYS (sizeof keys / sizeof keys[0])

static const struct skey *find(const char *name)
{
    for (size_t i = 0; name && i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

bool meao_settings_key_known(const char *key)
{
    return find(key) != NULL;
}

enum meao_err meao_settings_validate(const char *key, const char *value, char *why, size_t whylen)
{
    struct meao_config tmp;
    char err[256];
    int rc;
    if (find(key) == NULL) {
        snprintf(why, whylen, "%.60s cannot be changed at run time", key ? key : "?");
        return MEAO_E_INVALID_PARAMETER;
    }
    /* the file parser's own rules and bounds, on a scratch configuration */
    meao_config_defaults(&tmp);
    rc = meao_config_set(&tmp, key, value, err, sizeof err);
    meao_config_free(&tmp);
    if (rc != 0) {
        snprintf(why, whylen, "%s", strncmp(err, "config: ", 8) == 0 ? err + 8 : err);
        return MEAO_E_INVALID_PARAMETER;
    }
    return MEAO_OK;
}

enum meao_err meao_settings_version(struct meao_db *db, int64_t *out)
{
    static const char sql[] = "SELECT CAST(value AS INTEGER) FROM meta"
                              " WHERE key = 'settings_version'";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? MEAO_OK : meao_db_err(rc);
}

enum meao_err meao_settings_load(struct meao_db *db, json_t **out, int64_t *version)
{
    static const char sql[] = "SELECT key, value FROM settings ORDER BY key";
    sqlite3_stmt *st;
    json_t *obj = NULL;
    enum meao_err e;
    int rc;
    bool mine;

    *out = NULL;
    /* one read transaction: the version and the rows belong together */
    if (meao_db_begin_read(db, &mine) != MEAO_OK)
        return MEAO_E_DB;
    e = meao_settings_version(db, version);
    if (e != MEAO_OK)
        goto out;
    st = meao_db_stmt(db, sql);
    obj = json_object();
    if (st == NULL || obj == NULL) {
        e = st ? MEAO_E_NOMEM : MEAO_E_INTERNAL;
        goto out;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        const char *v = (const char *)sqlite3_column_text(st, 1);
        if (k && v && json_object_set_new(obj, k, json_string(v)) != 0) {
            e = MEAO_E_NOMEM;
            break;
        }
    }
    if (e == MEAO_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        e = meao_db_err(rc);
    sqlite3_reset(st);
out:
    meao_db_end_read(db, mine);
    if (e != MEAO_OK)
        json_decref(obj);
    else
        *out = obj;
    return e;
}

enum meao_err meao_settings_update(struct meao_db *db, const json_t *changes, int64_t user_id,
                                   const char *request_id, int64_t now_ms, char *why, size_t whylen)
{
    static const char put_sql[] =
        "INSERT INTO settings(key, value, updated_ms, updated_by) VALUES (?1, ?2, ?3, ?4)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
        " updated_ms = excluded.updated_ms, updated_by = excluded.updated_by";
    static const char del_sql[] = "DELETE FROM settings WHERE key = ?1";
    static const char bump_sql[] =
        "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
        " WHERE key = 'settings_version'";
    char detail[512];
    size_t dl = 0;
    const char *key;
    json_t *v;
    enum meao_err e;

    why[0] = detail[0] = '\0';
    json_object_foreach((json_t *)changes, key, v)
    {
        if (!json_is_null(v) && !json_is_string(v)) {
            snprintf(why, whylen, "%.60s: value must be text or null", key);
            return MEAO_E_INVALID_PARAMETER;
        }
        e = json_is_null(v) ? (find(key) ? MEAO_OK : MEAO_E_INVALID_PARAMETER)
                            : meao_settings_validate(key, json_string_value(v), why, whylen);
        if (e != MEAO_OK) {
            if (!why[0])
                snprintf(why, whylen, "%.60s cannot be changed at run time", key);
            return e;
        }
    }
    e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    json_object_foreach((json_t *)changes, key, v)
    {
        sqlite3_stmt *st = meao_db_stmt(db, json_is_null(v) ? del_sql : put_sql);
        if (st == NULL) {
            e = MEAO_E_INTERNAL;
            goto fail;
        }
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (!json_is_null(v)) {
            sqlite3_bind_text(st, 2, json_string_value(v), -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 3, now_ms);
            sqlite3_bind_int64(st, 4, user_id);
        }
        e = sqlite3_step(st) == SQLITE_DONE ? MEAO_OK : MEAO_E_DB;
        sqlite3_reset(st);
        if (e != MEAO_OK)
            goto fail;
        /* the audit row names the keys (and whether they were reset), never more */
        dl += (size_t)snprintf(detail + dl, dl < sizeof detail ? sizeof detail - dl : 0, "%s%s%s",
                               dl ? "," : "", key, json_is_null(v) ? "=default" : "");
        if (dl >= sizeof detail)
            dl = sizeof detail - 1;
    }
    {
        sqlite3_stmt *st = meao_db_stmt(db, bump_sql);
        if (st == NULL) {
            e = MEAO_E_INTERNAL;
            goto fail;
        }
        e = sqlite3_step(st) == SQLITE_DONE ? MEAO_OK : MEAO_E_DB;
        sqlite3_reset(st);
        if (e != MEAO_OK)
            goto fail;
    }
    e = meao_audit(db, now_ms, request_id, user_id, "config.update", "settings", detail);
    if (e != MEAO_OK)
        goto fail;
    return meao_db_commit(db);
fail:
    meao_db_rollback(db);
    return e;
}

/* The static spelling of a tool policy, so live configurations own nothing. */
static const char *policy_literal(const char *v)
{
    static const char *const lits[] = {"auto", "ask", "always"};
    for (size_t i = 0; v && i < 3; i++)
        if (strcmp(v, lits[i]) == 0)
            return lits[i];
    return NULL;
}

void meao_settings_overlay(const struct meao_config *base, const json_t *overrides,
                           struct meao_config *live)
{
    const char *key;
    json_t *v;
    *live = *base;
    json_object_foreach((json_t *)overrides, key, v)
    {
        const struct skey *k = find(key);
        const char *text = json_string_value(v);
        char why[200];
        if (k == NULL || text == NULL || meao_settings_validate(key, text, why, sizeof why)) {
            meao_log(MEAO_LOG_WARN, NULL, "settings", "ignoring stored override of %.60s", key);
            continue;
        }
        switch (k->kind) {
        case S_INT: *(int64_t *)((char *)live + k->off) = strtoll(text, NULL, 10); break;
        case S_LEVEL:
            meao_log_parse_level(text, (enum meao_log_level *)((char *)live + k->off));
            break;
        case S_POLICY: *(const char **)((char *)live + k->off) = policy_literal(text); break;
        }
    }
}
