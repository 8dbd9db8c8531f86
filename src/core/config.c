#include "core/config.h"
#include "core/netmatch.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* K_ENUM: a string from the '|'-separated list in choices. K_SECRET: a
 * string never printed by meao_config_dump(). K_NETS: a list of addresses
 * and address/prefix entries (core/netmatch.h). */
enum ktype { K_STR, K_INT, K_OCTAL, K_BOOL, K_LEVEL, K_ENUM, K_SECRET, K_NETS };

struct key {
    const char *name;
    enum ktype type;
    size_t off;
    const char *def;
    int64_t min, max;
    const char *choices;
};

#define OFF(f) offsetof(struct meao_config, f)

/* The single list of keys: name, type, where it lives, default, bounds. */
static const struct key keys[] = {
    {"db_path", K_STR, OFF(db_path), "/var/lib/meao/meao.db", 1, 4096, NULL},
    {"db_busy_timeout_ms", K_INT, OFF(db_busy_timeout_ms), "5000", 0, 600000, NULL},
    {"secret_file", K_STR, OFF(secret_file), "/var/lib/meao/secret.key", 1, 4096, NULL},
    {"fcgi_socket", K_STR, OFF(fcgi_socket), "/run/meao/fcgi.sock", 1, 107, NULL},
    {"fcgi_socket_mode", K_OCTAL, OFF(fcgi_socket_mode), "0660", 0, 0777, NULL},
    {"fcgi_socket_group", K_STR, OFF(fcgi_socket_group), "", 0, 255, NULL},
    {"fcgi_workers", K_INT, OFF(fcgi_workers), "0", 0, 256, NULL},
    {"fcgi_backlog", K_INT, OFF(fcgi_backlog), "1024", 1, 65535, NULL},
    {"pid_file", K_STR, OFF(pid_file), "", 0, 4096, NULL},
    {"max_body_bytes", K_INT, OFF(max_body_bytes), "1048576", 1024, 67108864, NULL},
    {"max_json_depth", K_INT, OFF(max_json_depth), "32", 1, 256, NULL},
    {"trust_forwarded_for", K_BOOL, OFF(trust_forwarded_for), "false", 0, 1, NULL},
    {"debug_routes", K_BOOL, OFF(debug_routes), "false", 0, 1, NULL},
    {"metrics_allow", K_NETS, OFF(metrics_allow), "127.0.0.1 ::1", 0, 1024, NULL},
    {"audit_retention_days", K_INT, OFF(audit_retention_days), "365", 0, 36500, NULL},
    {"ratelimit_enabled", K_BOOL, OFF(ratelimit_enabled), "true", 0, 1, NULL},
    {"ratelimit_shm", K_STR, OFF(ratelimit_shm), "/run/meao/ratelimit.shm", 1, 4096, NULL},
    {"rate_rest_per_min", K_INT, OFF(rate_rest_per_min), "60", 1, 1000000, NULL},
    {"rate_rest_per_hour", K_INT, OFF(rate_rest_per_hour), "1000", 1, 100000000, NULL},
    {"rate_messages_per_min", K_INT, OFF(rate_messages_per_min), "10", 1, 1000000, NULL},
    {"rate_pairing_per_15min", K_INT, OFF(rate_pairing_per_15min), "10", 1, 1000000, NULL},
    {"rate_ws_messages_per_min", K_INT, OFF(rate_ws_messages_per_min), "30", 1, 1000000, NULL},
    {"ws_max_connections_per_user", K_INT, OFF(ws_max_connections_per_user), "5", 1, 10000, NULL},
    {"ws_auth_timeout_ms", K_INT, OFF(ws_auth_timeout_ms), "10000", 100, 600000, NULL},
    {"ws_idle_timeout_s", K_INT, OFF(ws_idle_timeout_s), "300", 1, 86400, NULL},
    {"ws_auth_recheck_ms", K_INT, OFF(ws_auth_recheck_ms), "60000", 100, 3600000, NULL},
    {"access_token_ttl_s", K_INT, OFF(access_token_ttl_s), "86400", 60, 31536000, NULL},
    {"refresh_token_ttl_s", K_INT, OFF(refresh_token_ttl_s), "2592000", 60, 315360000, NULL},
    {"log_level", K_LEVEL, OFF(log_level), "info", 0, 3, NULL},
    {"log_file", K_STR, OFF(log_file), "", 0, 4096, NULL},
    {"orchestrator_socket", K_STR, OFF(orchestrator_socket), "/run/meao/orchestrator.sock", 1, 107,
     NULL},
    {"orchestrator_connect_timeout_ms", K_INT, OFF(orchestrator_connect_timeout_ms), "1000", 1,
     60000, NULL},
    {"orchestrator_idle_timeout_ms", K_INT, OFF(orchestrator_idle_timeout_ms), "120000", 1000,
     3600000, NULL},
    {"turn_deadline_s", K_INT, OFF(turn_deadline_s), "300", 1, 86400, NULL},
    {"orchestrator_socket_mode", K_OCTAL, OFF(orchestrator_socket_mode), "0660", 0, 0777, NULL},
    {"orchestrator_socket_group", K_STR, OFF(orchestrator_socket_group), "", 0, 255, NULL},
    {"orchestrator_max_turns", K_INT, OFF(orchestrator_max_turns), "256", 1, 65536, NULL},
    {"provider", K_ENUM, OFF(provider), "echo", 0, 0, "echo|anthropic|openai"},
    {"provider_base_url", K_STR, OFF(provider_base_url), "", 0, 2048, NULL},
    {"provider_model", K_STR, OFF(provider_model), "", 0, 256, NULL},
    {"provider_api_key", K_SECRET, OFF(provider_api_key), "", 0, 4096, NULL},
    {"provider_timeout_ms", K_INT, OFF(provider_timeout_ms), "120000", 100, 3600000, NULL},
    {"provider_max_tokens", K_INT, OFF(provider_max_tokens), "4096", 1, 1000000, NULL},
    {"max_tool_iterations", K_INT, OFF(max_tool_iterations), "8", 1, 100, NULL},
    {"approval_timeout_ms", K_INT, OFF(approval_timeout_ms), "30000", 10, 3600000, NULL},
    {"workspace_root", K_STR, OFF(workspace_root), "/var/lib/meao/workspace", 1, 4096, NULL},
    {"tool_timeout_ms", K_INT, OFF(tool_timeout_ms), "10000", 10, 3600000, NULL},
    {"tool_output_max_bytes", K_INT, OFF(tool_output_max_bytes), "65536", 64, 16777216, NULL},
    {"tool_policy_bash", K_ENUM, OFF(tool_policy_bash), "always", 0, 0, "auto|ask|always"},
    {"tool_policy_read_file", K_ENUM, OFF(tool_policy_read_file), "auto", 0, 0, "auto|ask|always"},
    {"tool_policy_write_file", K_ENUM, OFF(tool_policy_write_file), "ask", 0, 0, "auto|ask|always"},
    {"telegram_bot_token", K_SECRET, OFF(telegram_bot_token), "", 0, 256, NULL},
    {"telegram_api_base", K_STR, OFF(telegram_api_base), "https://api.telegram.org", 1, 2048, NULL},
    {"telegram_dm_policy", K_ENUM, OFF(telegram_dm_policy), "owner_only", 0, 0,
     "owner_only|allowlist|pairing|open"},
    {"telegram_inbox_sync", K_ENUM, OFF(telegram_inbox_sync), "full", 0, 0, "full|normal"},
    {"telegram_poll_ms", K_INT, OFF(telegram_poll_ms), "200", 10, 60000, NULL},
    {"telegram_max_chats", K_INT, OFF(telegram_max_chats), "8", 1, 256, NULL},
    {"telegram_edit_interval_ms", K_INT, OFF(telegram_edit_interval_ms), "1000", 1000, 60000, NULL},
    {"telegram_stranger_replies_per_hour", K_INT, OFF(telegram_stranger_replies_per_hour), "3", 1,
     1000, NULL},
    {"telegram_api_timeout_ms", K_INT, OFF(telegram_api_timeout_ms), "10000", 100, 600000, NULL},
    {"telegram_retry_max_ms", K_INT, OFF(telegram_retry_max_ms), "60000", 100, 3600000, NULL},
    {"telegram_max_attempts", K_INT, OFF(telegram_max_attempts), "20", 1, 10000, NULL},
};

#define NKEYS (sizeof keys / sizeof keys[0])

static const struct key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static int store_str(char **field, const char *name, const char *value, char *err, size_t errlen)
{
    char *dup = strdup(value);
    if (dup == NULL) {
        snprintf(err, errlen, "config: %s: out of memory", name);
        return -1;
    }
    free(*field);
    *field = dup;
    return 0;
}

static int apply(struct meao_config *cfg, const struct key *k, const char *value, char *err,
                 size_t errlen)
{
    char *field = (char *)cfg + k->off;
    switch (k->type) {
    case K_ENUM: {
        size_t n = strlen(value);
        for (const char *c = k->choices; c && *c;) {
            size_t cl = strcspn(c, "|");
            if (cl == n && strncmp(c, value, n) == 0)
                return store_str((char **)field, k->name, value, err, errlen);
            c += cl + (c[cl] == '|');
        }
        snprintf(err, errlen, "config: %s: expected one of %s, got \"%.40s\"", k->name, k->choices,
                 value);
        return -1;
    }
    case K_NETS: {
        char why[128];
        if (strlen(value) > (size_t)k->max || !meao_net_list_valid(value, why, sizeof why)) {
            snprintf(err, errlen, "config: %s: %s", k->name,
                     strlen(value) > (size_t)k->max ? "list too long" : why);
            return -1;
        }
        return store_str((char **)field, k->name, value, err, errlen);
    }
    case K_SECRET:
    case K_STR: {
        size_t n = strlen(value);
        if ((int64_t)n < k->min || (int64_t)n > k->max) {
            snprintf(err, errlen, "config: %s: length must be %lld..%lld", k->name,
                     (long long)k->min, (long long)k->max);
            return -1;
        }
        return store_str((char **)field, k->name, value, err, errlen);
    }
    case K_INT:
    case K_OCTAL: {
        char *end;
        long long v;
        errno = 0;
        v = strtoll(value, &end, k->type == K_OCTAL ? 8 : 10);
        while (*end && isspace((unsigned char)*end))
            end++;
        if (errno || end == value || *end || v < k->min || v > k->max) {
            if (k->type == K_OCTAL)
                snprintf(err, errlen,
                         "config: %s: expected an octal mode 0%llo..0%llo, got \"%.40s\"", k->name,
                         (long long)k->min, (long long)k->max, value);
            else
                snprintf(err, errlen, "config: %s: expected an integer %lld..%lld, got \"%.40s\"",
                         k->name, (long long)k->min, (long long)k->max, value);
            return -1;
        }
        *(int64_t *)field = v;
        return 0;
    }
    case K_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "yes") || !strcmp(value, "on") ||
            !strcmp(value, "1")) {
            *(bool *)field = true;
        } else if (!strcmp(value, "false") || !strcmp(value, "no") || !strcmp(value, "off") ||
                   !strcmp(value, "0")) {
            *(bool *)field = false;
        } else {
            snprintf(err, errlen, "config: %s: expected true or false, got \"%.40s\"", k->name,
                     value);
            return -1;
        }
        return 0;
    case K_LEVEL:
        if (!meao_log_parse_level(value, (enum meao_log_level *)field)) {
            snprintf(err, errlen, "config: %s: expected debug, info, warn or error, got \"%.40s\"",
                     k->name, value);
            return -1;
        }
        return 0;
    }
    return -1;
}

int meao_config_set(struct meao_config *cfg, const char *key, const char *value, char *err,
                    size_t errlen)
{
    const struct key *k = find_key(key);
    if (k == NULL) {
        snprintf(err, errlen, "config: unknown key \"%.60s\"", key);
        return -1;
    }
    return apply(cfg, k, value, err, errlen);
}

void meao_config_defaults(struct meao_config *cfg)
{
    char err[256];
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NKEYS; i++)
        (void)apply(cfg, &keys[i], keys[i].def, err, sizeof err);
}

static char *trim(char *s)
{
    char *e;
    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int load_file(struct meao_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char line[4352];
    int lineno = 0, rc = 0;

    if (f == NULL) {
        snprintf(err, errlen, "config: cannot open %.200s: %s", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        char *s, *eq, *key, *val;
        size_t vl;
        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            snprintf(err, errlen, "config: %.200s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        s = trim(line);
        if (*s == '\0' || *s == '#' || *s == ';')
            continue;
        eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "config: %.200s:%d: expected key = value", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        key = trim(s);
        val = trim(eq + 1);
        vl = strlen(val);
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
            val[vl - 1] = '\0';
            val++;
        }
        if (meao_config_set(cfg, key, val, err, errlen) != 0) {
            char tmp[256];
            snprintf(tmp, sizeof tmp, "%s (%.120s:%d)", err, path, lineno);
            snprintf(err, errlen, "%s", tmp);
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

int meao_config_load(struct meao_config *cfg, const char *path, char *err, size_t errlen)
{
    meao_config_defaults(cfg);
    if (path != NULL && load_file(cfg, path, err, errlen) != 0) {
        meao_config_free(cfg);
        return -1;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        char env[96];
        const char *v;
        size_t j = 0;
        j += (size_t)snprintf(env, sizeof env, "MEAO_");
        for (const char *p = keys[i].name; *p && j + 1 < sizeof env; p++)
            env[j++] = (char)toupper((unsigned char)*p);
        env[j] = '\0';
        v = getenv(env);
        if (v != NULL && apply(cfg, &keys[i], v, err, errlen) != 0) {
            char tmp[256];
            snprintf(tmp, sizeof tmp, "%s (environment %s)", err, env);
            snprintf(err, errlen, "%s", tmp);
            meao_config_free(cfg);
            return -1;
        }
    }
    return 0;
}

void meao_config_free(struct meao_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].type == K_STR || keys[i].type == K_ENUM || keys[i].type == K_SECRET ||
            keys[i].type == K_NETS) {
            char **f = (char **)((char *)cfg + keys[i].off);
            free(*f);
            *f = NULL;
        }
    }
}

void meao_config_dump(const struct meao_config *cfg, FILE *out)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const char *field = (const char *)cfg + keys[i].off;
        switch (keys[i].type) {
        case K_STR:
        case K_NETS:
        case K_ENUM: fprintf(out, "%s = %s\n", keys[i].name, *(char *const *)field); break;
        case K_SECRET:
            fprintf(out, "%s = %s\n", keys[i].name,
                    (*(char *const *)field)[0] ? "(set, not shown)" : "");
            break;
        case K_INT:
            fprintf(out, "%s = %lld\n", keys[i].name, (long long)*(const int64_t *)field);
            break;
        case K_OCTAL:
            fprintf(out, "%s = 0%llo\n", keys[i].name, (long long)*(const int64_t *)field);
            break;
        case K_BOOL:
            fprintf(out, "%s = %s\n", keys[i].name, *(const bool *)field ? "true" : "false");
            break;
        case K_LEVEL:
            fprintf(out, "%s = %s\n", keys[i].name,
                    meao_log_level_name(*(const enum meao_log_level *)field));
            break;
        }
    }
}

size_t meao_config_key_count(void)
{
    return NKEYS;
}

const char *meao_config_key_name(size_t i)
{
    return i < NKEYS ? keys[i].name : NULL;
}

const char *meao_config_key_default(size_t i)
{
    return i < NKEYS ? keys[i].def : NULL;
}
