/* Opaque bearer credentials: a fixed prefix (so secret scanners find leaked
 * ones), 43 base62 characters drawn uniformly (> 256 random bits), and a
 * 6-character checksum, so a mistyped or garbled token is rejected before any
 * database look-up. Only a keyed BLAKE2b-256 hash of a token is ever stored. */
#ifndef MEAO_AUTH_TOKEN_H
#define MEAO_AUTH_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/secrets.h"

#define MEAO_TOKEN_PREFIX_LEN 8
#define MEAO_TOKEN_BODY_LEN   43
#define MEAO_TOKEN_CHECK_LEN  6
#define MEAO_TOKEN_LEN        (MEAO_TOKEN_PREFIX_LEN + MEAO_TOKEN_BODY_LEN + MEAO_TOKEN_CHECK_LEN)
#define MEAO_TOKEN_HASH_BYTES 32

enum meao_token_kind {
    MEAO_TOKEN_ACCESS = 0, /* meao_at_ */
    MEAO_TOKEN_REFRESH,    /* meao_rt_ */
    MEAO_TOKEN_DEVICE,     /* meao_dc_: the secret device code of a pairing request */
};

/* Mint a new token of kind into out (MEAO_TOKEN_LEN + 1 bytes). */
void meao_token_mint(enum meao_token_kind kind, char out[MEAO_TOKEN_LEN + 1]);

/* True when s is exactly a well-formed token of kind with a valid checksum.
 * Pure string work: cheap, constant in what it reveals, no database. */
bool meao_token_wellformed(const char *s, enum meao_token_kind kind);

/* Keyed BLAKE2b-256 of a token (the only form that is stored). */
void meao_token_hash(const struct meao_secrets *keys, const char *token,
                     unsigned char out[MEAO_TOKEN_HASH_BYTES]);

/* Extract the token from an "Authorization: Bearer <token>" value into out
 * (MEAO_TOKEN_LEN + 1 bytes); false when the header is not a Bearer
 * credential of plausible length (it is then never looked up). */
bool meao_token_from_authorization(const char *header, char out[MEAO_TOKEN_LEN + 1]);

#endif
