#include "store/workdir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "store/sessions.h"

#define MAX_COMPONENTS 32
#define COMPONENT_MAX  255

/* Split path into its components (in place: buf is a writable copy), dropping
 * empty ones and ".". Refuses "..", control characters, overlong components
 * and too deep paths. */
static enum meao_err split(char *buf, char **comps, size_t *n, char *why, size_t whylen)
{
    char *save = NULL;
    *n = 0;
    for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        size_t len = strlen(c);
        if (strcmp(c, ".") == 0)
            continue;
        if (strcmp(c, "..") == 0) {
            snprintf(why, whylen, "workDir must not contain \"..\"");
            return MEAO_E_INVALID_PARAMETER;
        }
        if (len > COMPONENT_MAX) {
            snprintf(why, whylen, "workDir has a component over %d bytes", COMPONENT_MAX);
            return MEAO_E_INVALID_PARAMETER;
        }
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)c[i] < 0x20 || c[i] == 0x7f) {
                snprintf(why, whylen, "workDir must not contain control characters");
                return MEAO_E_INVALID_PARAMETER;
            }
        }
        if (*n >= MAX_COMPONENTS) {
            snprintf(why, whylen, "workDir is nested deeper than %d directories", MAX_COMPONENTS);
            return MEAO_E_INVALID_PARAMETER;
        }
        comps[(*n)++] = c;
    }
    return MEAO_OK;
}

/* mkdir -p for the configured root itself (a trusted path), mode 0700. */
static int make_root(const char *root)
{
    char p[PATH_MAX];
    size_t n = strlen(root);
    if (n == 0 || n >= sizeof p)
        return -1;
    memcpy(p, root, n + 1);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(p, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

/* realpath() of the root costs a readlink() per path component on every
 * call — a quarter of the system calls of a session creation — and the root
 * is configuration, so each thread keeps the answer for up to a second. A
 * root replaced meanwhile is noticed by the walks, which open it again with
 * O_NOFOLLOW and never follow a symlink below it. */
#define ROOT_CACHE_MS 1000

static _Thread_local struct {
    char root[PATH_MAX];
    char real[PATH_MAX];
    int64_t until_ms;
} root_cache;

static int64_t coarse_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The canonical path of the workspace root (created when missing). */
static int real_root_of(const char *root, char out[PATH_MAX])
{
    int64_t now = coarse_ms();
    if (now < root_cache.until_ms && strcmp(root_cache.root, root) == 0) {
        memcpy(out, root_cache.real, PATH_MAX);
        return 0;
    }
    if (realpath(root, out) == NULL &&
        (errno != ENOENT || make_root(root) < 0 || realpath(root, out) == NULL)) {
        meao_log(MEAO_LOG_ERROR, NULL, "workspace", "workspace_root %s: %s", root, strerror(errno));
        return -1;
    }
    if (strlen(root) < sizeof root_cache.root) {
        memcpy(root_cache.root, root, strlen(root) + 1);
        memcpy(root_cache.real, out, PATH_MAX);
        root_cache.until_ms = now + ROOT_CACHE_MS;
    }
    return 0;
}

/* Walk comps[0..n) below the directory open as fd (which this closes),
 * creating what is missing (0700) and never following a symlink. */
static enum meao_err walk(int fd, char **comps, size_t n, char *why, size_t whylen)
{
    enum meao_err e = MEAO_OK;
    for (size_t i = 0; i < n; i++) {
        int next;
        if (mkdirat(fd, comps[i], 0700) < 0 && errno != EEXIST) {
            int err = errno;
            meao_log(MEAO_LOG_WARN, NULL, "workspace", "mkdir in the workspace: %s", strerror(err));
            snprintf(why, whylen, "workDir cannot be created");
            e = err == EACCES || err == EROFS || err == ENOSPC || err == EDQUOT
                    ? MEAO_E_IO
                    : MEAO_E_INVALID_PARAMETER;
            break;
        }
        next = openat(fd, comps[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            if (errno == ELOOP || errno == ENOTDIR) {
                snprintf(why, whylen, "workDir must not pass through a symlink or a file");
                e = MEAO_E_INVALID_PARAMETER;
            } else {
                meao_log(MEAO_LOG_WARN, NULL, "workspace", "open in the workspace: %s",
                         strerror(errno));
                e = MEAO_E_IO;
            }
            break;
        }
        close(fd);
        fd = next;
    }
    close(fd);
    return e;
}

/* If path starts with prefix followed by '/' or its end, the rest (after
 * the slash), else NULL. */
static const char *strip_prefix(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    while (n > 1 && prefix[n - 1] == '/')
        n--;
    if (strncmp(path, prefix, n) != 0 || (path[n] != '/' && path[n] != '\0'))
        return NULL;
    return path + n + (path[n] == '/');
}

enum meao_err meao_workdir_resolve(const struct meao_workdir_req *r, char *out, size_t outlen,
                                   char *why, size_t whylen)
{
    char real_root[PATH_MAX], uid[24], buf[MEAO_WORKDIR_REQUEST_MAX + 1];
    char norm[MEAO_WORKDIR_REQUEST_MAX + 2];
    char *comps[MAX_COMPONENTS + 2];
    size_t n = 0, len;
    int fd;
    enum meao_err e;

    why[0] = '\0';
    if (outlen)
        out[0] = '\0';
    snprintf(uid, sizeof uid, "%lld", (long long)r->user_id);
    if (real_root_of(r->root, real_root) < 0)
        return MEAO_E_IO;

    if (r->requested == NULL) {
        /* only named here; made at the first turn (meao_workdir_ensure) */
        int w = snprintf(out, outlen, "%s/%s/%s", real_root, uid, r->default_leaf);
        if (w < 0 || (size_t)w >= outlen || w > MEAO_WORKDIR_MAX) {
            snprintf(why, whylen, "workDir is too long");
            out[0] = '\0';
            return MEAO_E_INVALID_PARAMETER;
        }
        return MEAO_OK;
    }

    len = strlen(r->requested);
    if (len == 0 || len > MEAO_WORKDIR_REQUEST_MAX) {
        snprintf(why, whylen, "workDir must be 1..%d bytes", MEAO_WORKDIR_REQUEST_MAX);
        return MEAO_E_INVALID_PARAMETER;
    }
    if (r->requested[0] != '/') {
        memcpy(buf, r->requested, len + 1);
        comps[n++] = uid;
    } else {
        /* normalise "//" and "/./" first, so the prefix test is lexical and exact */
        char tmp[MEAO_WORKDIR_REQUEST_MAX + 1], *parts[MAX_COMPONENTS];
        const char *rest;
        size_t np, w = 0;
        memcpy(tmp, r->requested, len + 1);
        e = split(tmp, parts, &np, why, whylen);
        if (e != MEAO_OK)
            return e;
        norm[0] = '\0';
        for (size_t i = 0; i < np; i++) {
            size_t pl = strlen(parts[i]);
            norm[w++] = '/';
            memcpy(norm + w, parts[i], pl);
            w += pl;
        }
        norm[w] = '\0';
        rest = strip_prefix(norm, real_root);
        if (rest == NULL)
            rest = strip_prefix(norm, r->root);
        if (rest == NULL || w == 0) {
            snprintf(why, whylen, "workDir must be inside the workspace");
            return MEAO_E_INVALID_PARAMETER;
        }
        snprintf(buf, sizeof buf, "%s", rest);
    }
    e = split(buf, comps + n, &len, why, whylen);
    if (e != MEAO_OK)
        return e;
    n += len;
    if (r->requested[0] == '/' && !r->may_use_whole_root &&
        (n == 0 || strcmp(comps[0], uid) != 0)) {
        snprintf(why, whylen, "workDir must be inside your workspace directory");
        return MEAO_E_INVALID_PARAMETER;
    }
    if (n == 0) {
        snprintf(why, whylen, "workDir must be a directory inside the workspace");
        return MEAO_E_INVALID_PARAMETER;
    }

    len = (size_t)snprintf(out, outlen, "%s", real_root);
    for (size_t i = 0; i < n; i++) {
        size_t cl = strlen(comps[i]);
        if (len + 1 + cl >= outlen || len + 1 + cl > MEAO_WORKDIR_MAX) {
            snprintf(why, whylen, "workDir is too long");
            out[0] = '\0';
            return MEAO_E_INVALID_PARAMETER;
        }
        out[len++] = '/';
        memcpy(out + len, comps[i], cl + 1);
        len += cl;
    }
    /* walk from the root, creating what is missing; never follow a symlink */
    fd = open(real_root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "open %s: %s", real_root, strerror(errno));
        out[0] = '\0';
        return MEAO_E_IO;
    }
    e = walk(fd, comps, n, why, whylen);
    if (e != MEAO_OK)
        out[0] = '\0';
    return e;
}

enum meao_err meao_workdir_ensure(const char *root, const char *dir)
{
    char real_root[PATH_MAX], buf[MEAO_WORKDIR_MAX + 1], why[200];
    char *comps[MAX_COMPONENTS + 2];
    const char *rest;
    size_t n;
    int fd;

    /* walked every time, not just stat()ed: a symlink swapped in since the
     * session was made (by a tool of another session of the same user) is
     * refused, not followed */
    if (real_root_of(root, real_root) < 0)
        return MEAO_E_IO;
    rest = strip_prefix(dir, real_root);
    if (rest == NULL || strlen(rest) >= sizeof buf) {
        meao_log(MEAO_LOG_WARN, NULL, "workspace", "a session directory is outside workspace_root");
        return MEAO_E_IO;
    }
    memcpy(buf, rest, strlen(rest) + 1);
    if (split(buf, comps, &n, why, sizeof why) != MEAO_OK || n == 0)
        return MEAO_E_IO;
    fd = open(real_root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return MEAO_E_IO;
    if (walk(fd, comps, n, why, sizeof why) != MEAO_OK) {
        meao_log(MEAO_LOG_WARN, NULL, "workspace", "cannot make a session directory: %s", why);
        return MEAO_E_IO;
    }
    return MEAO_OK;
}
