/* Configuration: built-in defaults, then a `key = value` file, then
 * MEAO_<KEY> environment variables. Every key is documented in
 * deploy/meao.conf.example and has a default; a bad value stops start-up with
 * one line naming the key. */
#ifndef MEAO_CORE_CONFIG_H
#define MEAO_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/log.h"

struct meao_config {
    /* storage */
    char *db_path;
    int64_t db_busy_timeout_ms;
    char *secret_file;
    /* FastCGI responder */
    char *fcgi_socket;
    int64_t fcgi_socket_mode;
    char *fcgi_socket_group;
    int64_t fcgi_workers;
    int64_t fcgi_backlog;
    char *pid_file;
    /* requests */
    int64_t max_body_bytes;
    int64_t max_json_depth;
    bool trust_forwarded_for;
    bool debug_routes; /* test-only endpoints under /__debug/ */
    /* addresses that may read GET /metrics without a token (core/netmatch.h) */
    char *metrics_allow;
    /* meaoctl audit prune deletes audit rows older than this; 0 keeps them */
    int64_t audit_retention_days;
    /* rate limits (API.md "Rate limiting") */
    bool ratelimit_enabled;
    char *ratelimit_shm;
    int64_t rate_rest_per_min;
    int64_t rate_rest_per_hour;
    int64_t rate_messages_per_min;
    int64_t rate_pairing_per_15min;
    int64_t rate_ws_messages_per_min;
    int64_t ws_max_connections_per_user;
    int64_t ws_auth_timeout_ms; /* an unauthenticated WebSocket is closed after this */
    int64_t ws_idle_timeout_s;  /* ... and any WebSocket silent for this long */
    int64_t ws_auth_recheck_ms; /* an open WebSocket re-checks its token at least this often */
    /* tokens */
    int64_t access_token_ttl_s;
    int64_t refresh_token_ttl_s;
    /* logs */
    enum meao_log_level log_level;
    char *log_file;
    /* orchestrator */
    char *orchestrator_socket;
    int64_t orchestrator_connect_timeout_ms;
    int64_t orchestrator_idle_timeout_ms;
    int64_t turn_deadline_s;
    /* the orchestrator daemon */
    int64_t orchestrator_socket_mode;
    char *orchestrator_socket_group;
    int64_t orchestrator_max_turns;
    char *provider;          /* echo | anthropic | openai */
    char *provider_base_url; /* empty: the provider's public default */
    char *provider_model;
    char *provider_api_key; /* a secret: never logged; prefer MEAO_PROVIDER_API_KEY */
    int64_t provider_timeout_ms;
    int64_t provider_max_tokens;
    int64_t max_tool_iterations;
    int64_t approval_timeout_ms;
    char *workspace_root;
    int64_t tool_timeout_ms;
    int64_t tool_output_max_bytes;
    char *tool_policy_bash;       /* auto | ask | always */
    char *tool_policy_read_file;  /* auto | ask | always */
    char *tool_policy_write_file; /* auto | ask | always */
    /* Telegram (the meao-telegram worker and meaoctl telegram) */
    char *telegram_bot_token;  /* a secret: never logged; prefer MEAO_TELEGRAM_BOT_TOKEN */
    char *telegram_api_base;   /* Bot API base URL, without the /bot<token> part */
    char *telegram_dm_policy;  /* owner_only | allowlist | pairing | open */
    char *telegram_inbox_sync; /* full | normal: the webhook's commit (see store/telegram.h) */
    int64_t telegram_poll_ms;
    int64_t telegram_max_chats;
    int64_t telegram_edit_interval_ms;
    int64_t telegram_stranger_replies_per_hour;
    int64_t telegram_api_timeout_ms;
    int64_t telegram_retry_max_ms;
    int64_t telegram_max_attempts;
};

/* cfg must be uninitialised (or freed): it is overwritten. On failure
 * nothing is left to free.
 * Fill cfg with defaults, then apply path (NULL: none; a missing file is an
 * error only when path was given explicitly), then the environment.
 * On error returns -1 and writes one line naming the key into err. */
int meao_config_load(struct meao_config *cfg, const char *path, char *err, size_t errlen);

/* Set one key from text (file/env/CLI share this). -1 + err on a bad value. */
int meao_config_set(struct meao_config *cfg, const char *key, const char *value, char *err,
                    size_t errlen);

/* Defaults only (no file, no environment). */
void meao_config_defaults(struct meao_config *cfg);

void meao_config_free(struct meao_config *cfg);

/* The known keys, for documentation checks: names 0..count-1. */
size_t meao_config_key_count(void);
const char *meao_config_key_name(size_t i);
/* The default of key i, as text. */
const char *meao_config_key_default(size_t i);

/* Print every key with its current value, as a config file would hold it. */
void meao_config_dump(const struct meao_config *cfg, FILE *out);

#endif
