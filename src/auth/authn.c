#include "auth/authn.h"

#include <string.h>

enum meao_err meao_authenticate(struct meao_app *app, struct meao_req *req, struct meao_resp *resp,
                                enum meao_auth_level level)
{
    (void)app;
    (void)level;
    if (req->authorization == NULL || req->authorization[0] == '\0')
        return meao_fail(resp, MEAO_E_AUTH_REQUIRED, "Authentication required");
    /* No token store yet (identity issue): every presented token is invalid. */
    return meao_fail(resp, MEAO_E_AUTH_INVALID_TOKEN, "Invalid or expired token");
}
