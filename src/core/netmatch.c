#include "core/netmatch.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An address as 16 bytes (IPv4 in the IPv4-mapped IPv6 form) and the number
 * of leading bits that matter. */
struct net {
    unsigned char a[16];
    int bits;
};

static const unsigned char v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool parse_addr(const char *s, unsigned char out[16], bool *v4)
{
    struct in_addr a4;
    if (inet_pton(AF_INET, s, &a4) == 1) {
        memcpy(out, v4_prefix, 12);
        memcpy(out + 12, &a4, 4);
        *v4 = true;
        return true;
    }
    *v4 = false;
    return inet_pton(AF_INET6, s, out) == 1;
}

/* One entry: ADDR or ADDR/BITS (BITS counted in the address's own family). */
static bool parse_net(const char *entry, struct net *n)
{
    char buf[64];
    char *slash, *end;
    bool v4;
    long bits;

    if (strlen(entry) >= sizeof buf)
        return false;
    strcpy(buf, entry);
    slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    if (!parse_addr(buf, n->a, &v4))
        return false;
    n->bits = 128;
    if (slash) {
        if (slash[1] < '0' || slash[1] > '9')
            return false;
        bits = strtol(slash + 1, &end, 10);
        if (*end || bits < 0 || bits > (v4 ? 32 : 128))
            return false;
        n->bits = (int)bits + (v4 ? 96 : 0);
    }
    return true;
}

static bool in_net(const unsigned char a[16], const struct net *n)
{
    int full = n->bits / 8, rest = n->bits % 8;
    if (memcmp(a, n->a, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == (n->a[full] & mask);
}

/* Call fn on each entry of list; stops at the first true answer. */
static bool each_entry(const char *list, bool (*fn)(const char *entry, void *arg), void *arg)
{
    char entry[64];
    const char *p = list;
    while (*p) {
        size_t n;
        p += strspn(p, " ,\t");
        n = strcspn(p, " ,\t");
        if (n == 0)
            break;
        if (n >= sizeof entry) {
            memcpy(entry, p, sizeof entry - 1);
            entry[sizeof entry - 1] = '\0';
        } else {
            memcpy(entry, p, n);
            entry[n] = '\0';
        }
        if (fn(n >= sizeof entry ? "" : entry, arg))
            return true;
        p += n;
    }
    return false;
}

struct why {
    char *out;
    size_t len;
};

static bool find_bad(const char *entry, void *arg)
{
    struct net n;
    struct why *w = arg;
    if (parse_net(entry, &n))
        return false;
    if (w->out && w->len)
        snprintf(w->out, w->len, "not an address or address/prefix: \"%.60s\"",
                 entry[0] ? entry : "(too long)");
    return true;
}

bool meao_net_list_valid(const char *list, char *why, size_t whylen)
{
    struct why w = {why, whylen};
    return !each_entry(list, find_bad, &w);
}

static bool matches(const char *entry, void *arg)
{
    struct net n;
    return parse_net(entry, &n) && in_net(arg, &n);
}

bool meao_net_list_match(const char *list, const char *ip)
{
    unsigned char a[16];
    bool v4;
    if (ip == NULL || !parse_addr(ip, a, &v4))
        return false;
    return each_entry(list, matches, a);
}
