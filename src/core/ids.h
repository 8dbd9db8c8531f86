/* Request ids: keep a valid incoming X-Request-ID, otherwise mint a UUIDv4. */
#ifndef MEAO_CORE_IDS_H
#define MEAO_CORE_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define MEAO_REQUEST_ID_MAX 64

/* True when s is 1..64 characters of [A-Za-z0-9._:-] (API.md Conventions). */
bool meao_request_id_valid(const char *s);

/* Write a random UUIDv4 (36 chars + NUL) into out (at least 37 bytes). */
void meao_uuid4(char out[37]);

/* Copy incoming into out when valid, else generate a UUIDv4 into out.
 * out must hold MEAO_REQUEST_ID_MAX + 1 bytes; incoming may be NULL. */
void meao_request_id_pick(const char *incoming, char out[MEAO_REQUEST_ID_MAX + 1]);

#endif
