/* The provider factory: cfg->provider names the implementation. */
#include "orchestrator/provider.h"

#include <stdio.h>
#include <string.h>

enum meao_err meao_provider_create(const struct meao_config *cfg, struct meao_provider **out,
                                   char *err, size_t errlen)
{
    const char *name = cfg->provider && cfg->provider[0] ? cfg->provider : "echo";
    enum meao_err e;

    *out = NULL;
    if (strcmp(name, "echo") == 0)
        e = meao_provider_echo_create(cfg, out, err, errlen);
    else if (strcmp(name, "anthropic") == 0)
        e = meao_provider_anthropic_create(cfg, out, err, errlen);
    else if (strcmp(name, "openai") == 0)
        e = meao_provider_openai_create(cfg, out, err, errlen);
    else {
        snprintf(err, errlen, "provider: unknown provider \"%.40s\" (echo|anthropic|openai)", name);
        return MEAO_E_INVALID_PARAMETER;
    }
    if (e != MEAO_OK) {
        if (err[0] == '\0')
            snprintf(err, errlen, "provider %s: %s", name, meao_strerror(e));
        *out = NULL;
    }
    return e;
}

void meao_provider_destroy(struct meao_provider *p)
{
    if (p != NULL && p->ops != NULL && p->ops->destroy != NULL)
        p->ops->destroy(p);
}
