#include "orchestrator/text.h"

#include <stdint.h>

static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is invalid:
 * bad lead byte, truncated, overlong, a surrogate or above U+10FFFF. */
static size_t seq_len(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;

    if (c < 0x80)
        return c == 0 ? 0 : 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

bool meao_text_clean(const char *s, size_t len, struct meao_buf *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0; /* valid bytes not yet copied start at i - run */

    if (!meao_buf_reserve(out, len + 1))
        return false;
    while (i < len) {
        size_t n = seq_len(p + i, len - i);
        if (n > 0) {
            i += n;
            run += n;
            continue;
        }
        if (!meao_buf_append(out, s + i - run, run) ||
            !meao_buf_append(out, replacement, sizeof replacement - 1))
            return false;
        run = 0;
        i++;
    }
    return meao_buf_append(out, s + len - run, run);
}

size_t meao_text_cut(const char *s, size_t len, size_t max)
{
    size_t n;
    if (len <= max)
        return len;
    n = max;
    /* step back over continuation bytes to the start of the cut character */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}
