#include "auth/pairing.h"

#include <sodium.h>
#include <string.h>

const char meao_pair_alphabet[] = "ABCDEFGHJKMNPQRSTVWXYZ23456789";

void meao_pair_code_new(char out[MEAO_PAIR_CODE_LEN + 1])
{
    uint32_t n = (uint32_t)(sizeof meao_pair_alphabet - 1);
    for (int i = 0; i < MEAO_PAIR_CODE_LEN; i++)
        out[i] = meao_pair_alphabet[randombytes_uniform(n)];
    out[MEAO_PAIR_CODE_LEN] = '\0';
}

bool meao_pair_code_normalise(const char *in, char out[MEAO_PAIR_CODE_LEN + 1])
{
    size_t j = 0;
    if (in == NULL)
        return false;
    for (size_t i = 0; in[i]; i++) {
        char c = in[i];
        if (c == ' ' || c == '-' || c == '\t')
            continue;
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (j >= MEAO_PAIR_CODE_LEN || strchr(meao_pair_alphabet, c) == NULL || c == '\0')
            return false;
        out[j++] = c;
    }
    out[j] = '\0';
    return j == MEAO_PAIR_CODE_LEN;
}

void meao_pair_code_hash(const struct meao_secrets *keys, const char *code,
                         unsigned char out[MEAO_PAIR_HASH_BYTES])
{
    crypto_generichash(out, MEAO_PAIR_HASH_BYTES, (const unsigned char *)code, strlen(code),
                       keys->pairing_key, sizeof keys->pairing_key);
}
