/* Device pairing flows (API.md "Device pairing"), all state in SQLite so a
 * restart of every process in the middle of a pairing loses nothing. Each
 * state change is one BEGIN IMMEDIATE transaction, so two devices completing
 * the same code at once get exactly one token pair. */
#ifndef MEAO_STORE_PAIRING_H
#define MEAO_STORE_PAIRING_H

#include "auth/pairing.h"
#include "store/identity.h"

struct meao_pair_created {
    char code[MEAO_PAIR_CODE_LEN + 1];
    char device_code[MEAO_TOKEN_LEN + 1]; /* device-initiated only */
    int64_t expires_ms;
};

/* Owner-initiated: owner_user_id makes a code a new device will complete. */
enum meao_err meao_pair_create_for_owner(struct meao_db *db, const struct meao_secrets *keys,
                                         int64_t owner_user_id, const char *device_name,
                                         int64_t now_ms, struct meao_pair_created *out);

/* Device-initiated: an unauthenticated device asks; gets a code to show and a
 * secret device code to poll with. */
enum meao_err meao_pair_request(struct meao_db *db, const struct meao_secrets *keys,
                                const char *device_name, const char *client_ip, int64_t now_ms,
                                struct meao_pair_created *out);

/* An owner approves (approve=true) or denies a device-initiated code. The
 * approver comes from its token, never from the request body. A code that
 * matches nothing counts as a wrong guess against every open device code.
 * device_name_out (may be NULL) gets the requesting device's name. */
enum meao_err meao_pair_decide(struct meao_db *db, const struct meao_secrets *keys,
                               int64_t approver_user_id, const char *code, bool approve,
                               int64_t now_ms, char device_name_out[MEAO_NAME_MAX + 1]);

/* Owner-initiated completion with the code. A wrong code counts against every
 * open owner code; five wrong guesses kill them. device_name NULL keeps the
 * name the owner gave. */
enum meao_err meao_pair_complete_code(struct meao_db *db, const struct meao_secrets *keys,
                                      const char *code, const char *device_name, int64_t now_ms,
                                      const struct meao_token_ttl *ttl, struct meao_token_pair *out,
                                      int64_t *user_id_out);

/* Device-initiated polling with the secret device code: PAIR_PENDING,
 * PAIR_SLOW_DOWN (polled faster than the interval), PAIR_EXPIRED, PAIR_DENIED,
 * or the token pair — exactly once. */
enum meao_err meao_pair_poll(struct meao_db *db, const struct meao_secrets *keys,
                             const char *device_code, int64_t now_ms,
                             const struct meao_token_ttl *ttl, struct meao_token_pair *out,
                             int64_t *user_id_out);

#endif
