#include "auth/authn.h"

#include <sodium.h>
#include <string.h>

#include "auth/token.h"
#include "store/identity.h"

/* A well-formed access token → *who. */
static enum meao_err lookup(struct meao_app *app, const char *token, struct meao_principal *who)
{
    const struct meao_secrets *keys = meao_app_secrets(app);
    struct meao_db *db = meao_app_db(app);
    if (keys == NULL || db == NULL)
        return MEAO_E_UNAVAILABLE;
    return meao_token_authenticate(db, keys, token, meao_now_ms(app->clock), who);
}

enum meao_err meao_token_check(struct meao_app *app, const char *token, struct meao_principal *who)
{
    /* a garbled token (wrong shape, length or checksum) never reaches the database */
    if (token == NULL || !meao_token_wellformed(token, MEAO_TOKEN_ACCESS))
        return MEAO_E_AUTH_INVALID_TOKEN;
    return lookup(app, token, who);
}

enum meao_err meao_authenticate(struct meao_app *app, struct meao_req *req, struct meao_resp *resp,
                                enum meao_auth_level level)
{
    char token[MEAO_TOKEN_LEN + 1];
    enum meao_err e;

    if (req->authorization == NULL || req->authorization[0] == '\0')
        return meao_fail(resp, MEAO_E_AUTH_REQUIRED, "Authentication required");
    if (!meao_token_from_authorization(req->authorization, token) ||
        !meao_token_wellformed(token, MEAO_TOKEN_ACCESS))
        return meao_fail(resp, MEAO_E_AUTH_INVALID_TOKEN, "Malformed access token");
    e = lookup(app, token, &req->who);
    sodium_memzero(token, sizeof token);
    if (e == MEAO_E_AUTH_INVALID_TOKEN)
        return meao_fail(resp, e, "Invalid, expired or revoked token");
    if (e == MEAO_E_UNAVAILABLE)
        return meao_fail(resp, e, "Authentication is unavailable right now");
    if (e != MEAO_OK)
        return e;
    if (level == MEAO_AUTH_OWNER && req->who.role != MEAO_ROLE_OWNER)
        return meao_fail(resp, MEAO_E_AUTH_INSUFFICIENT_SCOPE, "This operation needs an owner");
    return MEAO_OK;
}
