/* Address lists: "127.0.0.1 ::1 10.0.0.0/8 fd00::/8" (spaces or commas),
 * each entry an IPv4 or IPv6 address with an optional prefix length. Used by
 * the metrics_allow configuration key. */
#ifndef MEAO_CORE_NETMATCH_H
#define MEAO_CORE_NETMATCH_H

#include <stdbool.h>
#include <stddef.h>

/* Is list well formed (an empty list is: it matches nothing)? On false, why
 * (may be NULL) names the first bad entry in one line. */
bool meao_net_list_valid(const char *list, char *why, size_t whylen);

/* Does the textual address ip fall in one of list's entries? An IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d) is compared as IPv4. A malformed ip or list
 * matches nothing. */
bool meao_net_list_match(const char *list, const char *ip);

#endif
