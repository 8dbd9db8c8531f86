/* Server secrets: one 256-bit master key in a file (mode 0600, created by
 * `meaoctl init`), from which purpose-specific subkeys are derived with
 * libsodium's KDF, so one leaked subkey never reveals another. */
#ifndef MEAO_AUTH_SECRETS_H
#define MEAO_AUTH_SECRETS_H

#include <stddef.h>

#include "core/err.h"

#define MEAO_KEY_BYTES 32

struct meao_secrets {
    unsigned char token_key[MEAO_KEY_BYTES];   /* keyed hash of tokens and device codes */
    unsigned char pairing_key[MEAO_KEY_BYTES]; /* keyed hash of pairing codes */
    unsigned char content_key[MEAO_KEY_BYTES]; /* contentHash of messages */
};

/* Create path with a fresh random master key (64 hex chars), mode 0600.
 * Refuses to overwrite: MEAO_E_CONFLICT when it exists. */
enum meao_err meao_secrets_create(const char *path, char *err, size_t errlen);

/* Load the master key from path and derive the subkeys into out. */
enum meao_err meao_secrets_load(const char *path, struct meao_secrets *out, char *err,
                                size_t errlen);

/* Derive subkeys from a raw master key (tests use fixed keys). */
void meao_secrets_derive(const unsigned char master[MEAO_KEY_BYTES], struct meao_secrets *out);

/* Wipe. */
void meao_secrets_wipe(struct meao_secrets *s);

#endif
