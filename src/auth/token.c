#include "auth/token.h"

#include <sodium.h>
#include <string.h>
#include <strings.h>

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
static const char *const prefixes[] = {"meao_at_", "meao_rt_", "meao_dc_"};

static void checksum(const char *s, size_t n, char out[MEAO_TOKEN_CHECK_LEN])
{
    unsigned char h[16];
    unsigned long long v = 0;
    crypto_generichash(h, sizeof h, (const unsigned char *)s, n, NULL, 0);
    for (int i = 0; i < 5; i++)
        v = (v << 8) | h[i]; /* 40 bits; 62^6 > 2^35, keep 35 */
    v &= (1ULL << 35) - 1;
    for (int i = MEAO_TOKEN_CHECK_LEN - 1; i >= 0; i--) {
        out[i] = b62[v % 62];
        v /= 62;
    }
}

void meao_token_mint(enum meao_token_kind kind, char out[MEAO_TOKEN_LEN + 1])
{
    memcpy(out, prefixes[kind], MEAO_TOKEN_PREFIX_LEN);
    for (int i = 0; i < MEAO_TOKEN_BODY_LEN; i++)
        out[MEAO_TOKEN_PREFIX_LEN + i] = b62[randombytes_uniform(62)]; /* unbiased */
    checksum(out, MEAO_TOKEN_PREFIX_LEN + MEAO_TOKEN_BODY_LEN,
             out + MEAO_TOKEN_PREFIX_LEN + MEAO_TOKEN_BODY_LEN);
    out[MEAO_TOKEN_LEN] = '\0';
}

static bool is_b62(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

bool meao_token_wellformed(const char *s, enum meao_token_kind kind)
{
    char want[MEAO_TOKEN_CHECK_LEN];
    if (s == NULL || (int)kind < 0 || kind > MEAO_TOKEN_DEVICE)
        return false;
    if (strnlen(s, MEAO_TOKEN_LEN + 1) != MEAO_TOKEN_LEN)
        return false;
    if (memcmp(s, prefixes[kind], MEAO_TOKEN_PREFIX_LEN) != 0)
        return false;
    for (int i = MEAO_TOKEN_PREFIX_LEN; i < MEAO_TOKEN_LEN; i++)
        if (!is_b62(s[i]))
            return false;
    checksum(s, MEAO_TOKEN_PREFIX_LEN + MEAO_TOKEN_BODY_LEN, want);
    return sodium_memcmp(want, s + MEAO_TOKEN_PREFIX_LEN + MEAO_TOKEN_BODY_LEN,
                         MEAO_TOKEN_CHECK_LEN) == 0;
}

void meao_token_hash(const struct meao_secrets *keys, const char *token,
                     unsigned char out[MEAO_TOKEN_HASH_BYTES])
{
    crypto_generichash(out, MEAO_TOKEN_HASH_BYTES, (const unsigned char *)token, strlen(token),
                       keys->token_key, sizeof keys->token_key);
}

bool meao_token_from_authorization(const char *header, char out[MEAO_TOKEN_LEN + 1])
{
    size_t n;
    if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0)
        return false;
    header += 7;
    while (*header == ' ')
        header++;
    n = strnlen(header, MEAO_TOKEN_LEN + 2);
    while (n > 0 && header[n - 1] == ' ')
        n--;
    if (n != MEAO_TOKEN_LEN)
        return false;
    memcpy(out, header, n);
    out[n] = '\0';
    return true;
}
