/* Pairing codes: 6 characters from an alphabet without look-alikes, drawn
 * uniformly; user input is normalised (case, spaces, dashes) before it is
 * hashed and compared. Pure functions; the flows live in store/pairing.c. */
#ifndef MEAO_AUTH_PAIRING_H
#define MEAO_AUTH_PAIRING_H

#include <stdbool.h>
#include <stdint.h>

#include "auth/secrets.h"

#define MEAO_PAIR_CODE_LEN      6
#define MEAO_PAIR_HASH_BYTES    32
#define MEAO_PAIR_TTL_MS        (5 * 60 * 1000)
#define MEAO_PAIR_MAX_FAILURES  5
#define MEAO_PAIR_POLL_INTERVAL 5 /* seconds */

extern const char meao_pair_alphabet[]; /* "ABCDEFGHJKMNPQRSTVWXYZ23456789" */

/* A fresh code, uniform over the alphabet (randombytes_uniform: no modulo bias). */
void meao_pair_code_new(char out[MEAO_PAIR_CODE_LEN + 1]);

/* Normalise user input ("abc-d2 3" → "ABCD23"): ASCII letters upper-cased,
 * spaces and dashes dropped. False when the result is not exactly 6
 * characters of the alphabet (any other byte, non-ASCII included). */
bool meao_pair_code_normalise(const char *in, char out[MEAO_PAIR_CODE_LEN + 1]);

/* Keyed hash of a normalised code. */
void meao_pair_code_hash(const struct meao_secrets *keys, const char *code,
                         unsigned char out[MEAO_PAIR_HASH_BYTES]);

#endif
