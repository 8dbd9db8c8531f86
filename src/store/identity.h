/* Users, devices and tokens. Every function takes an open connection; none
 * keeps state between calls, so a revocation committed by another process
 * (the CLI) is seen by the very next look-up. */
#ifndef MEAO_STORE_IDENTITY_H
#define MEAO_STORE_IDENTITY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth/secrets.h"
#include "auth/token.h"
#include "http/http.h"
#include "store/db.h"

#define MEAO_NAME_MAX      64
#define MEAO_DEVICE_ID_LEN 24 /* "dev_" + 20 base62 */

struct meao_user {
    int64_t id;
    char name[MEAO_NAME_MAX + 1];
    enum meao_role role;
};

/* A freshly issued access + refresh pair. The clear tokens exist only here,
 * to be shown once; callers wipe the struct after use. */
struct meao_token_pair {
    char access[MEAO_TOKEN_LEN + 1];
    char refresh[MEAO_TOKEN_LEN + 1];
    char device_id[MEAO_DEVICE_ID_LEN + 1];
    int64_t access_expires_ms;
    int64_t refresh_expires_ms;
};

struct meao_token_ttl {
    int64_t access_ms;
    int64_t refresh_ms;
};

/* Names of users: 1..64 of [A-Za-z0-9._-]. Device names: 1..64 bytes of
 * valid UTF-8 without control characters. */
bool meao_user_name_valid(const char *s);
bool meao_device_name_valid(const char *s);

const char *meao_role_name(enum meao_role r);
bool meao_role_parse(const char *s, enum meao_role *out);

/* Create a user; MEAO_E_CONFLICT when the name is taken. */
enum meao_err meao_user_create(struct meao_db *db, const char *name, enum meao_role role,
                               int64_t now_ms, int64_t *id_out);
enum meao_err meao_user_get(struct meao_db *db, int64_t id, struct meao_user *out);
enum meao_err meao_user_get_by_name(struct meao_db *db, const char *name, struct meao_user *out);
/* Number of users with role owner (first-run detection). */
enum meao_err meao_user_count_owners(struct meao_db *db, int64_t *out);

/* Create a device for user_id and issue its first token pair (must run inside
 * the caller's transaction when it is part of a larger change). */
enum meao_err meao_device_enroll(struct meao_db *db, const struct meao_secrets *keys,
                                 int64_t user_id, const char *device_name, int64_t now_ms,
                                 const struct meao_token_ttl *ttl, struct meao_token_pair *out);

/* Resolve an access token (already well-formed) into who. AUTH_INVALID_TOKEN
 * for unknown, expired or revoked tokens or devices. */
enum meao_err meao_token_authenticate(struct meao_db *db, const struct meao_secrets *keys,
                                      const char *token, int64_t now_ms,
                                      struct meao_principal *who);

/* Rotate a refresh token: the old one dies, the device's access tokens are
 * revoked, a new pair is issued. Reusing an already-rotated refresh token
 * revokes the whole device (token theft) and answers AUTH_INVALID_TOKEN. */
enum meao_err meao_token_refresh(struct meao_db *db, const struct meao_secrets *keys,
                                 const char *refresh_token, int64_t now_ms,
                                 const struct meao_token_ttl *ttl, struct meao_token_pair *out,
                                 int64_t *user_id_out);

/* Revocations by the caller `who` (an owner may revoke anyone's). Each sets
 * *count to the number of tokens revoked; NOT_FOUND when nothing matched
 * that the caller may touch. who NULL = administrator (CLI). */
enum meao_err meao_revoke_token(struct meao_db *db, const struct meao_secrets *keys,
                                const struct meao_principal *who, const char *token, int64_t now_ms,
                                int64_t *count);
enum meao_err meao_revoke_device(struct meao_db *db, const struct meao_principal *who,
                                 const char *device_public_id, int64_t now_ms, int64_t *count);
enum meao_err meao_revoke_user_all(struct meao_db *db, int64_t user_id, int64_t now_ms,
                                   int64_t *count);

/* Devices visible to who (owner: all; NULL: all) as a JSON array:
 * [{"deviceId","name","userId","userName","createdAt","lastSeenAt","revoked","current"}]. */
enum meao_err meao_devices_list(struct meao_db *db, const struct meao_principal *who, json_t **out);

/* Tokens (metadata only, never values) for the CLI:
 * [{"id","kind","userId","userName","deviceId","createdAt","expiresAt","state"}]. */
enum meao_err meao_tokens_list(struct meao_db *db, int64_t now_ms, json_t **out);

/* Revoke a token by its numeric row id (CLI). */
enum meao_err meao_revoke_token_id(struct meao_db *db, int64_t token_id, int64_t now_ms,
                                   int64_t *count);

/* Append an audit row (never content or secrets). actor 0 = system/CLI. */
enum meao_err meao_audit(struct meao_db *db, int64_t now_ms, const char *request_id,
                         int64_t actor_user_id, const char *action, const char *target,
                         const char *detail);

#endif
