#include "store/identity.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"

#define LAST_SEEN_EVERY_MS (3600 * 1000LL)

bool meao_user_name_valid(const char *s)
{
    size_t n = 0;
    if (s == NULL)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= MEAO_NAME_MAX)
            return false;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return n > 0;
}

bool meao_device_name_valid(const char *s)
{
    size_t n;
    if (s == NULL)
        return false;
    n = strlen(s);
    if (n == 0 || n > MEAO_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    /* JSON input is valid UTF-8 already; the CLI path needs the check */
    {
        json_t *j = json_string(s);
        bool ok = j != NULL;
        json_decref(j);
        return ok;
    }
}

const char *meao_role_name(enum meao_role r)
{
    return r == MEAO_ROLE_OWNER ? "owner" : r == MEAO_ROLE_USER ? "user" : "none";
}

bool meao_role_parse(const char *s, enum meao_role *out)
{
    if (s && strcmp(s, "owner") == 0)
        *out = MEAO_ROLE_OWNER;
    else if (s && strcmp(s, "user") == 0)
        *out = MEAO_ROLE_USER;
    else
        return false;
    return true;
}

enum meao_err meao_user_create(struct meao_db *db, const char *name, enum meao_role role,
                               int64_t now_ms, int64_t *id_out)
{
    static const char sql[] = "INSERT INTO users(name, role, created_ms) VALUES (?1, ?2, ?3)";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, meao_role_name(role), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms);
    e = meao_db_step(db, st);
    if (e == MEAO_OK && id_out)
        *id_out = sqlite3_last_insert_rowid(meao_db_handle(db));
    sqlite3_reset(st);
    return e;
}

static enum meao_err read_user(sqlite3_stmt *st, struct meao_user *out)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return MEAO_E_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return meao_db_err(rc);
    out->id = sqlite3_column_int64(st, 0);
    snprintf(out->name, sizeof out->name, "%s", (const char *)sqlite3_column_text(st, 1));
    meao_role_parse((const char *)sqlite3_column_text(st, 2), &out->role);
    return MEAO_OK;
}

enum meao_err meao_user_get(struct meao_db *db, int64_t id, struct meao_user *out)
{
    static const char sql[] = "SELECT id, name, role FROM users WHERE id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, id);
    e = read_user(st, out);
    sqlite3_reset(st);
    return e;
}

enum meao_err meao_user_get_by_name(struct meao_db *db, const char *name, struct meao_user *out)
{
    static const char sql[] = "SELECT id, name, role FROM users WHERE name = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    e = read_user(st, out);
    sqlite3_reset(st);
    return e;
}

enum meao_err meao_user_count_owners(struct meao_db *db, int64_t *out)
{
    static const char sql[] = "SELECT count(*) FROM users WHERE role = 'owner'";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int rc;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? MEAO_OK : meao_db_err(rc);
}

static enum meao_err insert_token(struct meao_db *db, const struct meao_secrets *keys,
                                  const char *token, const char *kind, int64_t user_id,
                                  int64_t device_id, int64_t now_ms, int64_t expires_ms)
{
    static const char sql[] = "INSERT INTO tokens(hash, kind, user_id, device_id, created_ms,"
                              " expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    unsigned char h[MEAO_TOKEN_HASH_BYTES];
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    meao_token_hash(keys, token, h);
    sqlite3_bind_blob(st, 1, h, sizeof h, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, user_id);
    sqlite3_bind_int64(st, 4, device_id);
    sqlite3_bind_int64(st, 5, now_ms);
    sqlite3_bind_int64(st, 6, expires_ms);
    e = meao_db_step(db, st);
    sqlite3_reset(st);
    return e;
}

/* Issue a fresh access + refresh pair for an existing device. */
static enum meao_err issue_pair(struct meao_db *db, const struct meao_secrets *keys,
                                int64_t user_id, int64_t device_id, int64_t now_ms,
                                const struct meao_token_ttl *ttl, struct meao_token_pair *out)
{
    enum meao_err e;
    meao_token_mint(MEAO_TOKEN_ACCESS, out->access);
    meao_token_mint(MEAO_TOKEN_REFRESH, out->refresh);
    out->access_expires_ms = now_ms + ttl->access_ms;
    out->refresh_expires_ms = now_ms + ttl->refresh_ms;
    e = insert_token(db, keys, out->access, "access", user_id, device_id, now_ms,
                     out->access_expires_ms);
    if (e == MEAO_OK)
        e = insert_token(db, keys, out->refresh, "refresh", user_id, device_id, now_ms,
                         out->refresh_expires_ms);
    return e;
}

enum meao_err meao_device_enroll(struct meao_db *db, const struct meao_secrets *keys,
                                 int64_t user_id, const char *device_name, int64_t now_ms,
                                 const struct meao_token_ttl *ttl, struct meao_token_pair *out)
{
    static const char sql[] =
        "INSERT INTO devices(public_id, user_id, name, created_ms) VALUES (?1, ?2, ?3, ?4)";
    static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    int64_t device_id;

    if (st == NULL)
        return MEAO_E_INTERNAL;
    memset(out, 0, sizeof *out);
    memcpy(out->device_id, "dev_", 4);
    for (int i = 4; i < MEAO_DEVICE_ID_LEN; i++)
        out->device_id[i] = b62[randombytes_uniform(62)];
    out->device_id[MEAO_DEVICE_ID_LEN] = '\0';
    sqlite3_bind_text(st, 1, out->device_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_text(st, 3, device_name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms);
    e = meao_db_step(db, st);
    sqlite3_reset(st);
    if (e != MEAO_OK)
        return e;
    device_id = sqlite3_last_insert_rowid(meao_db_handle(db));
    return issue_pair(db, keys, user_id, device_id, now_ms, ttl, out);
}

_Static_assert(sizeof(((struct meao_principal *)0)->name) == MEAO_NAME_MAX + 1,
               "a principal holds any user name");

enum meao_err meao_token_authenticate(struct meao_db *db, const struct meao_secrets *keys,
                                      const char *token, int64_t now_ms, struct meao_principal *who)
{
    static const char sql[] =
        "SELECT t.id, t.user_id, t.device_id, u.role, t.hash, d.last_seen_ms, u.name"
        " FROM tokens t JOIN users u ON u.id = t.user_id JOIN devices d ON d.id = t.device_id"
        " WHERE t.hash = ?1 AND t.kind = 'access' AND t.revoked_ms IS NULL"
        " AND d.revoked_ms IS NULL AND t.expires_ms > ?2";
    static const char seen_sql[] = "UPDATE devices SET last_seen_ms = ?2 WHERE id = ?1";
    unsigned char h[MEAO_TOKEN_HASH_BYTES];
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e = MEAO_E_AUTH_INVALID_TOKEN;
    int rc;
    int64_t last_seen;

    if (st == NULL)
        return MEAO_E_INTERNAL;
    meao_token_hash(keys, token, h);
    sqlite3_bind_blob(st, 1, h, sizeof h, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const void *stored = sqlite3_column_blob(st, 4);
        /* the index found the row; compare the full hash in constant time anyway */
        if (stored && sqlite3_column_bytes(st, 4) == MEAO_TOKEN_HASH_BYTES &&
            sodium_memcmp(stored, h, MEAO_TOKEN_HASH_BYTES) == 0) {
            who->token_id = sqlite3_column_int64(st, 0);
            who->user_id = sqlite3_column_int64(st, 1);
            who->device_id = sqlite3_column_int64(st, 2);
            meao_role_parse((const char *)sqlite3_column_text(st, 3), &who->role);
            snprintf(who->name, sizeof who->name, "%s",
                     sqlite3_column_text(st, 6) ? (const char *)sqlite3_column_text(st, 6) : "");
            e = MEAO_OK;
        }
    } else if (rc != SQLITE_DONE) {
        e = meao_db_err(rc);
    }
    last_seen = sqlite3_column_type(st, 5) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 5);
    sqlite3_reset(st);
    sodium_memzero(h, sizeof h);
    if (e == MEAO_OK && now_ms - last_seen > LAST_SEEN_EVERY_MS) {
        /* coarse, so an authenticated GET is not a write per request */
        sqlite3_stmt *up = meao_db_stmt(db, seen_sql);
        if (up) {
            sqlite3_bind_int64(up, 1, who->device_id);
            sqlite3_bind_int64(up, 2, now_ms);
            (void)meao_db_step(db, up);
            sqlite3_reset(up);
        }
    }
    return e;
}

static enum meao_err exec_count(struct meao_db *db, sqlite3_stmt *st, int64_t *count)
{
    enum meao_err e = meao_db_step(db, st);
    if (count)
        *count += e == MEAO_OK ? sqlite3_changes(meao_db_handle(db)) : 0;
    sqlite3_reset(st);
    return e;
}

/* Revoke a device and every live token of it. */
static enum meao_err revoke_device_id(struct meao_db *db, int64_t device_id, int64_t now_ms,
                                      int64_t *count)
{
    static const char tok_sql[] = "UPDATE tokens SET revoked_ms = ?2"
                                  " WHERE device_id = ?1 AND revoked_ms IS NULL";
    static const char dev_sql[] = "UPDATE devices SET revoked_ms = ?2"
                                  " WHERE id = ?1 AND revoked_ms IS NULL";
    sqlite3_stmt *st = meao_db_stmt(db, tok_sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, device_id);
    sqlite3_bind_int64(st, 2, now_ms);
    e = exec_count(db, st, count);
    if (e != MEAO_OK)
        return e;
    meao_db_note_revocation(db);
    st = meao_db_stmt(db, dev_sql);
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, device_id);
    sqlite3_bind_int64(st, 2, now_ms);
    return exec_count(db, st, NULL);
}

enum meao_err meao_token_refresh(struct meao_db *db, const struct meao_secrets *keys,
                                 const char *refresh_token, int64_t now_ms,
                                 const struct meao_token_ttl *ttl, struct meao_token_pair *out,
                                 int64_t *user_id_out)
{
    static const char find_sql[] =
        "SELECT t.id, t.user_id, t.device_id, t.rotated_ms, d.public_id"
        " FROM tokens t JOIN devices d ON d.id = t.device_id"
        " WHERE t.hash = ?1 AND t.kind = 'refresh' AND t.revoked_ms IS NULL"
        " AND d.revoked_ms IS NULL AND t.expires_ms > ?2";
    static const char rotate_sql[] = "UPDATE tokens SET rotated_ms = ?2 WHERE id = ?1";
    unsigned char h[MEAO_TOKEN_HASH_BYTES];
    sqlite3_stmt *st;
    enum meao_err e;
    int64_t token_id, user_id, device_id;
    bool reused;
    int rc;

    memset(out, 0, sizeof *out);
    e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    st = meao_db_stmt(db, find_sql);
    if (st == NULL) {
        e = MEAO_E_INTERNAL;
        goto fail;
    }
    meao_token_hash(keys, refresh_token, h);
    sqlite3_bind_blob(st, 1, h, sizeof h, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, now_ms);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        e = rc == SQLITE_DONE ? MEAO_E_AUTH_INVALID_TOKEN : meao_db_err(rc);
        goto fail;
    }
    token_id = sqlite3_column_int64(st, 0);
    user_id = sqlite3_column_int64(st, 1);
    device_id = sqlite3_column_int64(st, 2);
    reused = sqlite3_column_type(st, 3) != SQLITE_NULL;
    snprintf(out->device_id, sizeof out->device_id, "%s", (const char *)sqlite3_column_text(st, 4));
    sqlite3_reset(st);

    if (reused) {
        /* a rotated refresh token came back: someone holds a copy. Kill the device. */
        e = revoke_device_id(db, device_id, now_ms, NULL);
        if (e == MEAO_OK)
            e = meao_audit(db, now_ms, NULL, user_id, "token.refresh_reuse", out->device_id,
                           "device revoked");
        if (e == MEAO_OK)
            e = meao_db_commit(db);
        memset(out, 0, sizeof *out);
        return e == MEAO_OK ? MEAO_E_AUTH_INVALID_TOKEN : e;
    }
    st = meao_db_stmt(db, rotate_sql);
    if (st == NULL) {
        e = MEAO_E_INTERNAL;
        goto fail;
    }
    sqlite3_bind_int64(st, 1, token_id);
    sqlite3_bind_int64(st, 2, now_ms);
    e = exec_count(db, st, NULL);
    if (e == MEAO_OK) {
        /* the old access token dies with its refresh token; the rotated
         * refresh row stays (rotated, not revoked) so its reuse is detected */
        static const char access_sql[] = "UPDATE tokens SET revoked_ms = ?2 WHERE device_id = ?1"
                                         " AND kind = 'access' AND revoked_ms IS NULL";
        st = meao_db_stmt(db, access_sql);
        if (st == NULL) {
            e = MEAO_E_INTERNAL;
            goto fail;
        }
        sqlite3_bind_int64(st, 1, device_id);
        sqlite3_bind_int64(st, 2, now_ms);
        e = exec_count(db, st, NULL);
        if (e == MEAO_OK)
            meao_db_note_revocation(db);
    }
    if (e == MEAO_OK) {
        char public_id[MEAO_DEVICE_ID_LEN + 1];
        memcpy(public_id, out->device_id, sizeof public_id);
        e = issue_pair(db, keys, user_id, device_id, now_ms, ttl, out);
        memcpy(out->device_id, public_id, sizeof public_id);
    }
    if (e != MEAO_OK)
        goto fail;
    e = meao_db_commit(db);
    if (e != MEAO_OK) {
        sodium_memzero(out, sizeof *out);
        return e;
    }
    if (user_id_out)
        *user_id_out = user_id;
    return MEAO_OK;
fail:
    meao_db_rollback(db);
    sodium_memzero(out, sizeof *out);
    return e;
}

enum meao_err meao_revoke_token(struct meao_db *db, const struct meao_secrets *keys,
                                const struct meao_principal *who, const char *token, int64_t now_ms,
                                int64_t *count)
{
    static const char sql[] = "UPDATE tokens SET revoked_ms = ?3 WHERE hash = ?1"
                              " AND revoked_ms IS NULL AND (?2 = 0 OR user_id = ?2)";
    unsigned char h[MEAO_TOKEN_HASH_BYTES];
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    int64_t n = 0;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    meao_token_hash(keys, token, h);
    sqlite3_bind_blob(st, 1, h, sizeof h, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, who == NULL || who->role == MEAO_ROLE_OWNER ? 0 : who->user_id);
    sqlite3_bind_int64(st, 3, now_ms);
    e = exec_count(db, st, &n);
    if (e == MEAO_OK && n > 0)
        meao_db_note_revocation(db);
    if (count)
        *count = n;
    return e == MEAO_OK && n == 0 ? MEAO_E_NOT_FOUND : e;
}

enum meao_err meao_revoke_device(struct meao_db *db, const struct meao_principal *who,
                                 const char *device_public_id, int64_t now_ms, int64_t *count)
{
    static const char sql[] = "SELECT id FROM devices WHERE public_id = ?1"
                              " AND (?2 = 0 OR user_id = ?2)";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int64_t device_id;
    int rc;
    enum meao_err e;

    if (count)
        *count = 0;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, device_public_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, who == NULL || who->role == MEAO_ROLE_OWNER ? 0 : who->user_id);
    rc = sqlite3_step(st);
    device_id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? MEAO_E_NOT_FOUND : meao_db_err(rc);
    e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    e = revoke_device_id(db, device_id, now_ms, count);
    if (e != MEAO_OK) {
        meao_db_rollback(db);
        return e;
    }
    return meao_db_commit(db);
}

enum meao_err meao_revoke_user_all(struct meao_db *db, int64_t user_id, int64_t now_ms,
                                   int64_t *count)
{
    static const char tok_sql[] = "UPDATE tokens SET revoked_ms = ?2"
                                  " WHERE user_id = ?1 AND revoked_ms IS NULL";
    static const char dev_sql[] = "UPDATE devices SET revoked_ms = ?2"
                                  " WHERE user_id = ?1 AND revoked_ms IS NULL";
    sqlite3_stmt *st;
    enum meao_err e = meao_db_begin_immediate(db);
    int64_t n = 0;
    if (e != MEAO_OK)
        return e;
    st = meao_db_stmt(db, tok_sql);
    if (st == NULL) {
        e = MEAO_E_INTERNAL;
        goto fail;
    }
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_int64(st, 2, now_ms);
    e = exec_count(db, st, &n);
    if (e != MEAO_OK)
        goto fail;
    meao_db_note_revocation(db);
    st = meao_db_stmt(db, dev_sql);
    if (st == NULL) {
        e = MEAO_E_INTERNAL;
        goto fail;
    }
    sqlite3_bind_int64(st, 1, user_id);
    sqlite3_bind_int64(st, 2, now_ms);
    e = exec_count(db, st, NULL);
    if (e != MEAO_OK)
        goto fail;
    if (count)
        *count = n;
    return meao_db_commit(db);
fail:
    meao_db_rollback(db);
    return e;
}

enum meao_err meao_revoke_token_id(struct meao_db *db, int64_t token_id, int64_t now_ms,
                                   int64_t *count)
{
    static const char sql[] =
        "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    int64_t n = 0;
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, token_id);
    sqlite3_bind_int64(st, 2, now_ms);
    e = exec_count(db, st, &n);
    if (e == MEAO_OK && n > 0)
        meao_db_note_revocation(db);
    if (count)
        *count = n;
    return e == MEAO_OK && n == 0 ? MEAO_E_NOT_FOUND : e;
}

static json_t *iso_or_null(sqlite3_stmt *st, int col)
{
    char ts[32];
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return json_null();
    return json_string(meao_iso8601(sqlite3_column_int64(st, col), ts, sizeof ts));
}

enum meao_err meao_devices_list(struct meao_db *db, const struct meao_principal *who, json_t **out)
{
    static const char sql[] =
        "SELECT d.public_id, d.name, d.user_id, u.name, d.created_ms, d.last_seen_ms,"
        " d.revoked_ms, d.id FROM devices d JOIN users u ON u.id = d.user_id"
        " WHERE (?1 = 0 OR d.user_id = ?1) ORDER BY d.id";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    json_t *arr = json_array();
    int rc;
    if (st == NULL || arr == NULL) {
        json_decref(arr);
        return MEAO_E_INTERNAL;
    }
    sqlite3_bind_int64(st, 1, who == NULL || who->role == MEAO_ROLE_OWNER ? 0 : who->user_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *d = json_pack("{s:s, s:s, s:I, s:s, s:o, s:o, s:b, s:b}", "deviceId",
                              (const char *)sqlite3_column_text(st, 0), "name",
                              (const char *)sqlite3_column_text(st, 1), "userId",
                              (json_int_t)sqlite3_column_int64(st, 2), "userName",
                              (const char *)sqlite3_column_text(st, 3), "createdAt",
                              iso_or_null(st, 4), "lastSeenAt", iso_or_null(st, 5), "revoked",
                              sqlite3_column_type(st, 6) != SQLITE_NULL, "current",
                              who != NULL && who->device_id == sqlite3_column_int64(st, 7));
        json_array_append_new(arr, d);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return meao_db_err(rc);
    }
    *out = arr;
    return MEAO_OK;
}

enum meao_err meao_tokens_list(struct meao_db *db, int64_t now_ms, json_t **out)
{
    static const char sql[] =
        "SELECT t.id, t.kind, t.user_id, u.name, d.public_id, t.created_ms, t.expires_ms,"
        " t.revoked_ms, t.rotated_ms FROM tokens t JOIN users u ON u.id = t.user_id"
        " JOIN devices d ON d.id = t.device_id ORDER BY t.id";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    json_t *arr = json_array();
    int rc;
    if (st == NULL || arr == NULL) {
        json_decref(arr);
        return MEAO_E_INTERNAL;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *state = sqlite3_column_type(st, 7) != SQLITE_NULL   ? "revoked"
                            : sqlite3_column_type(st, 8) != SQLITE_NULL ? "rotated"
                            : sqlite3_column_int64(st, 6) <= now_ms     ? "expired"
                                                                        : "active";
        json_array_append_new(arr, json_pack("{s:I, s:s, s:I, s:s, s:s, s:o, s:o, s:s}", "id",
                                             (json_int_t)sqlite3_column_int64(st, 0), "kind",
                                             (const char *)sqlite3_column_text(st, 1), "userId",
                                             (json_int_t)sqlite3_column_int64(st, 2), "userName",
                                             (const char *)sqlite3_column_text(st, 3), "deviceId",
                                             (const char *)sqlite3_column_text(st, 4), "createdAt",
                                             iso_or_null(st, 5), "expiresAt", iso_or_null(st, 6),
                                             "state", state));
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return meao_db_err(rc);
    }
    *out = arr;
    return MEAO_OK;
}

enum meao_err meao_audit(struct meao_db *db, int64_t now_ms, const char *request_id,
                         int64_t actor_user_id, const char *action, const char *target,
                         const char *detail)
{
    static const char sql[] = "INSERT INTO audit(at_ms, request_id, actor_user_id, action,"
                              " target, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, now_ms);
    if (request_id == NULL)
        request_id = meao_log_context();
    if (request_id)
        sqlite3_bind_text(st, 2, request_id, -1, SQLITE_STATIC);
    if (actor_user_id)
        sqlite3_bind_int64(st, 3, actor_user_id);
    sqlite3_bind_text(st, 4, action, -1, SQLITE_STATIC);
    if (target)
        sqlite3_bind_text(st, 5, target, -1, SQLITE_STATIC);
    if (detail)
        sqlite3_bind_text(st, 6, detail, -1, SQLITE_STATIC);
    e = meao_db_step(db, st);
    sqlite3_reset(st);
    return e;
}
