#include "store/pairing.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"

/* Rows are kept a while after expiry so a polling device hears "expired". */
#define KEEP_EXPIRED_MS (10 * 60 * 1000LL)

static enum meao_err purge_old(struct meao_db *db, int64_t now_ms)
{
    static const char sql[] = "DELETE FROM pairings WHERE expires_ms <= ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, now_ms - KEEP_EXPIRED_MS);
    e = meao_db_step(db, st);
    sqlite3_reset(st);
    return e;
}

/* Insert a new pending pairing with a fresh unique code. */
static enum meao_err insert_pairing(struct meao_db *db, const struct meao_secrets *keys,
                                    const char *direction, int64_t user_id, const char *device_name,
                                    const char *client_ip, int64_t now_ms,
                                    struct meao_pair_created *out)
{
    static const char sql[] =
        "INSERT INTO pairings(code_hash, device_code_hash, direction, user_id, device_name,"
        " status, created_ms, expires_ms, client_ip) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6,"
        " ?7, ?8)";
    unsigned char ch[MEAO_PAIR_HASH_BYTES], dh[MEAO_TOKEN_HASH_BYTES];
    bool device = strcmp(direction, "device") == 0;
    enum meao_err e = MEAO_E_CONFLICT;

    e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    e = purge_old(db, now_ms);
    /* codes are unique among stored rows; a collision (rare: 30^6 codes) draws again */
    for (int attempt = 0; e == MEAO_OK && attempt < 8; attempt++) {
        sqlite3_stmt *st = meao_db_stmt(db, sql);
        int rc;
        if (st == NULL) {
            e = MEAO_E_INTERNAL;
            break;
        }
        meao_pair_code_new(out->code);
        meao_pair_code_hash(keys, out->code, ch);
        sqlite3_bind_blob(st, 1, ch, sizeof ch, SQLITE_TRANSIENT);
        if (device) {
            meao_token_mint(MEAO_TOKEN_DEVICE, out->device_code);
            meao_token_hash(keys, out->device_code, dh);
            sqlite3_bind_blob(st, 2, dh, sizeof dh, SQLITE_TRANSIENT);
        } else {
            out->device_code[0] = '\0';
        }
        sqlite3_bind_text(st, 3, direction, -1, SQLITE_STATIC);
        if (user_id)
            sqlite3_bind_int64(st, 4, user_id);
        sqlite3_bind_text(st, 5, device_name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, now_ms);
        out->expires_ms = now_ms + MEAO_PAIR_TTL_MS;
        sqlite3_bind_int64(st, 7, out->expires_ms);
        if (client_ip)
            sqlite3_bind_text(st, 8, client_ip, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc == SQLITE_DONE) {
            e = meao_audit(db, now_ms, NULL, user_id,
                           device ? "pairing.request" : "pairing.code_created", device_name, NULL);
            if (e == MEAO_OK)
                e = meao_db_commit(db);
            else
                meao_db_rollback(db);
            return e;
        }
        if ((rc & 0xff) != SQLITE_CONSTRAINT)
            e = meao_db_err(rc);
    }
    meao_db_rollback(db);
    sodium_memzero(out, sizeof *out);
    return e == MEAO_OK ? MEAO_E_CONFLICT : e;
}

enum meao_err meao_pair_create_for_owner(struct meao_db *db, const struct meao_secrets *keys,
                                         int64_t owner_user_id, const char *device_name,
                                         int64_t now_ms, struct meao_pair_created *out)
{
    return insert_pairing(db, keys, "owner", owner_user_id, device_name, NULL, now_ms, out);
}

enum meao_err meao_pair_request(struct meao_db *db, const struct meao_secrets *keys,
                                const char *device_name, const char *client_ip, int64_t now_ms,
                                struct meao_pair_created *out)
{
    return insert_pairing(db, keys, "device", 0, device_name, client_ip, now_ms, out);
}

/* A guess that named no open code: count it against every code that was open
 * for this direction at that moment, and kill those that reached the limit. */
static enum meao_err count_failure(struct meao_db *db, const char *direction, int64_t now_ms)
{
    static const char inc_sql[] =
        "UPDATE pairings SET failures = failures + 1,"
        " status = CASE WHEN failures + 1 >= ?3 THEN 'dead' ELSE status END"
        " WHERE direction = ?1 AND status = 'pending' AND expires_ms > ?2";
    sqlite3_stmt *st = meao_db_stmt(db, inc_sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_text(st, 1, direction, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_int(st, 3, MEAO_PAIR_MAX_FAILURES);
    e = meao_db_step(db, st);
    sqlite3_reset(st);
    return e;
}

struct open_row {
    int64_t id;
    int64_t user_id;
    char device_name[MEAO_NAME_MAX + 1];
};

/* Find the open (pending, unexpired) pairing of direction with this code. */
static enum meao_err find_open(struct meao_db *db, const struct meao_secrets *keys,
                               const char *direction, const char *code, int64_t now_ms,
                               struct open_row *row)
{
    static const char sql[] =
        "SELECT id, coalesce(user_id, 0), device_name, code_hash FROM pairings"
        " WHERE code_hash = ?1 AND direction = ?2 AND status = 'pending' AND expires_ms > ?3"
        " AND failures < ?4";
    unsigned char h[MEAO_PAIR_HASH_BYTES];
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e = MEAO_E_PAIR_INVALID_CODE;
    int rc;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    meao_pair_code_hash(keys, code, h);
    sqlite3_bind_blob(st, 1, h, sizeof h, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, direction, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms);
    sqlite3_bind_int(st, 4, MEAO_PAIR_MAX_FAILURES);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 3) == MEAO_PAIR_HASH_BYTES &&
        sodium_memcmp(sqlite3_column_blob(st, 3), h, sizeof h) == 0) {
        row->id = sqlite3_column_int64(st, 0);
        row->user_id = sqlite3_column_int64(st, 1);
        snprintf(row->device_name, sizeof row->device_name, "%s",
                 (const char *)sqlite3_column_text(st, 2));
        e = MEAO_OK;
    } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        e = meao_db_err(rc);
    }
    sqlite3_reset(st);
    return e;
}

static enum meao_err set_status(struct meao_db *db, int64_t id, const char *status, int64_t user_id)
{
    static const char sql[] =
        "UPDATE pairings SET status = ?2, user_id = coalesce(?3, user_id) WHERE id = ?1";
    sqlite3_stmt *st = meao_db_stmt(db, sql);
    enum meao_err e;
    if (st == NULL)
        return MEAO_E_INTERNAL;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    if (user_id)
        sqlite3_bind_int64(st, 3, user_id);
    e = meao_db_step(db, st);
    sqlite3_reset(st);
    return e;
}

/* Commit a wrong guess (its failure count must survive) and answer INVALID_CODE. */
static enum meao_err wrong_guess(struct meao_db *db, const char *direction, int64_t now_ms)
{
    enum meao_err e = count_failure(db, direction, now_ms);
    if (e == MEAO_OK)
        e = meao_audit(db, now_ms, NULL, 0, "pairing.wrong_code", direction, NULL);
    if (e == MEAO_OK)
        e = meao_db_commit(db);
    else
        meao_db_rollback(db);
    return e == MEAO_OK ? MEAO_E_PAIR_INVALID_CODE : e;
}

enum meao_err meao_pair_decide(struct meao_db *db, const struct meao_secrets *keys,
                               int64_t approver_user_id, const char *code, bool approve,
                               int64_t now_ms, char device_name_out[MEAO_NAME_MAX + 1])
{
    struct open_row row;
    enum meao_err e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    e = find_open(db, keys, "device", code, now_ms, &row);
    if (e == MEAO_E_PAIR_INVALID_CODE)
        return wrong_guess(db, "device", now_ms);
    if (e != MEAO_OK)
        goto fail;
    e = set_status(db, row.id, approve ? "approved" : "denied", approver_user_id);
    if (e == MEAO_OK)
        e = meao_audit(db, now_ms, NULL, approver_user_id,
                       approve ? "pairing.approved" : "pairing.denied", row.device_name, NULL);
    if (e != MEAO_OK)
        goto fail;
    if (device_name_out)
        memcpy(device_name_out, row.device_name, sizeof row.device_name);
    return meao_db_commit(db);
fail:
    meao_db_rollback(db);
    return e;
}

enum meao_err meao_pair_complete_code(struct meao_db *db, const struct meao_secrets *keys,
                                      const char *code, const char *device_name, int64_t now_ms,
                                      const struct meao_token_ttl *ttl, struct meao_token_pair *out,
                                      int64_t *user_id_out)
{
    struct open_row row;
    enum meao_err e = meao_db_begin_immediate(db);
    memset(out, 0, sizeof *out);
    if (e != MEAO_OK)
        return e;
    e = find_open(db, keys, "owner", code, now_ms, &row);
    if (e == MEAO_E_PAIR_INVALID_CODE)
        return wrong_guess(db, "owner", now_ms);
    if (e != MEAO_OK)
        goto fail;
    e = set_status(db, row.id, "completed", 0);
    if (e == MEAO_OK)
        e = meao_device_enroll(db, keys, row.user_id, device_name ? device_name : row.device_name,
                               now_ms, ttl, out);
    if (e == MEAO_OK)
        e = meao_audit(db, now_ms, NULL, row.user_id, "pairing.completed", out->device_id, NULL);
    if (e != MEAO_OK)
        goto fail;
    e = meao_db_commit(db);
    if (e != MEAO_OK) {
        sodium_memzero(out, sizeof *out);
        return e;
    }
    if (user_id_out)
        *user_id_out = row.user_id;
    return MEAO_OK;
fail:
    meao_db_rollback(db);
    sodium_memzero(out, sizeof *out);
    return e;
}

enum meao_err meao_pair_poll(struct meao_db *db, const struct meao_secrets *keys,
                             const char *device_code, int64_t now_ms,
                             const struct meao_token_ttl *ttl, struct meao_token_pair *out,
                             int64_t *user_id_out)
{
    static const char find_sql[] =
        "SELECT id, status, expires_ms, last_poll_ms, coalesce(user_id, 0), device_name,"
        " device_code_hash FROM pairings WHERE device_code_hash = ?1";
    static const char poll_sql[] = "UPDATE pairings SET last_poll_ms = ?2 WHERE id = ?1";
    unsigned char h[MEAO_TOKEN_HASH_BYTES];
    sqlite3_stmt *st;
    enum meao_err e;
    int rc;
    int64_t id, expires, last_poll, user_id;
    char status[16], name[MEAO_NAME_MAX + 1];
    bool too_fast;

    memset(out, 0, sizeof *out);
    e = meao_db_begin_immediate(db);
    if (e != MEAO_OK)
        return e;
    st = meao_db_stmt(db, find_sql);
    if (st == NULL) {
        e = MEAO_E_INTERNAL;
        goto fail;
    }
    meao_token_hash(keys, device_code, h);
    sqlite3_bind_blob(st, 1, h, sizeof h, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW || sqlite3_column_bytes(st, 6) != MEAO_TOKEN_HASH_BYTES ||
        sodium_memcmp(sqlite3_column_blob(st, 6), h, sizeof h) != 0) {
        sqlite3_reset(st);
        /* unknown (or long purged) device code: nothing to wait for */
        e = rc == SQLITE_ROW || rc == SQLITE_DONE ? MEAO_E_PAIR_EXPIRED : meao_db_err(rc);
        goto fail;
    }
    id = sqlite3_column_int64(st, 0);
    snprintf(status, sizeof status, "%s", (const char *)sqlite3_column_text(st, 1));
    expires = sqlite3_column_int64(st, 2);
    last_poll = sqlite3_column_type(st, 3) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 3);
    user_id = sqlite3_column_int64(st, 4);
    snprintf(name, sizeof name, "%s", (const char *)sqlite3_column_text(st, 5));
    sqlite3_reset(st);

    too_fast = last_poll && now_ms - last_poll < MEAO_PAIR_POLL_INTERVAL * 1000LL;
    st = meao_db_stmt(db, poll_sql);
    if (st == NULL) {
        e = MEAO_E_INTERNAL;
        goto fail;
    }
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms);
    e = meao_db_step(db, st);
    sqlite3_reset(st);
    if (e != MEAO_OK)
        goto fail;

    if (strcmp(status, "completed") == 0 || strcmp(status, "dead") == 0 || now_ms >= expires) {
        e = MEAO_E_PAIR_EXPIRED; /* a token pair is issued exactly once */
    } else if (too_fast) {
        e = MEAO_E_PAIR_SLOW_DOWN;
    } else if (strcmp(status, "denied") == 0) {
        e = MEAO_E_PAIR_DENIED;
    } else if (strcmp(status, "pending") == 0) {
        e = MEAO_E_PAIR_PENDING;
    } else { /* approved: issue to this device, which proved it holds the device code */
        e = set_status(db, id, "completed", 0);
        if (e == MEAO_OK)
            e = meao_device_enroll(db, keys, user_id, name, now_ms, ttl, out);
        if (e == MEAO_OK)
            e = meao_audit(db, now_ms, NULL, user_id, "pairing.completed", out->device_id, NULL);
        if (e != MEAO_OK)
            goto fail;
        e = meao_db_commit(db);
        if (e != MEAO_OK)
            sodium_memzero(out, sizeof *out);
        else if (user_id_out)
            *user_id_out = user_id;
        return e;
    }
    /* keep last_poll_ms so slow_down works across requests */
    {
        enum meao_err c = meao_db_commit(db);
        return c == MEAO_OK ? e : c;
    }
fail:
    meao_db_rollback(db);
    sodium_memzero(out, sizeof *out);
    return e;
}
