/* Live configuration overrides: what PATCH /api/v1/config changes.
 *
 * The overrides live in the `settings` table (key = a config key name, value
 * = its text, as a config file would hold it), so they survive restarts and
 * every process sees them. Each change bumps meta.settings_version in the
 * same transaction; a process compares that number with the one it applied
 * (a one-row read, done at most every MEAO_SETTINGS_CHECK_MS per
 * application instance) and re-applies the table when it moved. An override
 * wins over the configuration file and the environment until it is reset
 * (PATCH with null). Only the keys listed in settings.c can be overridden:
 * the log level, the rate limits and the tool policies. */
#ifndef MEAO_STORE_SETTINGS_H
#define MEAO_STORE_SETTINGS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/err.h"
#include "store/db.h"

#define MEAO_SETTINGS_CHECK_MS 500

/* True when key (a config key name) may be overridden at run time. */
bool meao_settings_key_known(const char *key);

/* Check value for key with the configuration parser's own rules and bounds.
 * MEAO_E_INVALID_PARAMETER with a reason in why. */
enum meao_err meao_settings_validate(const char *key, const char *value, char *why, size_t whylen);

/* The current settings version (0 before the first change). */
enum meao_err meao_settings_version(struct meao_db *db, int64_t *out);

/* Every override as {key: value-text} and the version it belongs to, read in
 * one transaction (caller owns *out). */
enum meao_err meao_settings_load(struct meao_db *db, json_t **out, int64_t *version);

/* Apply changes {key: "value" | null (remove the override)} in one
 * BEGIN IMMEDIATE transaction: validate every key and value first (nothing is
 * written when one is bad: MEAO_E_INVALID_PARAMETER, reason in why), then
 * write them, bump the version and write the audit row (keys only). */
enum meao_err meao_settings_update(struct meao_db *db, const json_t *changes, int64_t user_id,
                                   const char *request_id, int64_t now_ms, char *why,
                                   size_t whylen);

/* live = base with the overrides applied. A shallow copy: its strings are
 * base's or static, so live must never be passed to meao_config_free().
 * Values that no longer validate are skipped (logged). */
void meao_settings_overlay(const struct meao_config *base, const json_t *overrides,
                           struct meao_config *live);

#endif
