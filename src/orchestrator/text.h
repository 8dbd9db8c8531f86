/* Text hygiene for what the orchestrator puts on the wire: tool output and
 * model text may hold any bytes, but a frame must be valid UTF-8 JSON without
 * NUL (the gateway's bounded parser refuses \u0000), and cut texts must not
 * split a character. */
#ifndef MEAO_ORCHESTRATOR_TEXT_H
#define MEAO_ORCHESTRATOR_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* Append s[0..len) to out with every NUL byte and every invalid or overlong
 * UTF-8 sequence replaced by U+FFFD. false on allocation failure (out keeps
 * what was appended before). */
bool meao_text_clean(const char *s, size_t len, struct meao_buf *out);

/* The length of the longest prefix of s[0..len) that is at most max bytes
 * and does not end inside a UTF-8 sequence (s is assumed valid UTF-8). */
size_t meao_text_cut(const char *s, size_t len, size_t max);

#endif
