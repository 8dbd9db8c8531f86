#define _GNU_SOURCE /* O_PATH, pipe2, posix_spawn_file_actions_addchdir_np */
#include "orchestrator/tools.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/json.h"
#include "http/router.h"
#include "orchestrator/text.h"

#define MAX_DEPTH   64         /* path components the fallback walk follows */
#define DRAIN_MS    100        /* output still read after the shell exited */
#define SLICE_MS    20         /* polling period when pidfd_open is unavailable */
#define WRITE_MAX   (1u << 20) /* write_file content limit */
#define SUMMARY_MAX 160        /* characters of a command shown in a summary */
#define SAFE_PATH   "/usr/local/bin:/usr/bin:/bin"
#define CHUNK       16384

/* The argument schemas, declarative (router.h), and what a model is told. */
static const struct meao_field bash_f[] = {
    {"command", MEAO_F_STRING, true, 1, 65536},
};
static const struct meao_field read_f[] = {
    {"path", MEAO_F_STRING, true, 1, 4096},
};
static const struct meao_field write_f[] = {
    {"path", MEAO_F_STRING, true, 1, 4096},
    {"content", MEAO_F_STRING, true, 0, WRITE_MAX},
};

enum tool_id { T_BASH, T_READ, T_WRITE, T_COUNT };

static const struct tool {
    const char *name;
    const char *description;
    const char *input_schema; /* JSON Schema text */
    struct meao_schema args;
    const char *action;
    const char *risk;
    bool dangerous;
} tools[T_COUNT] = {
    [T_BASH] = {"bash",
                "Run a shell command (/bin/sh -c) in the session's work directory. Output "
                "(stdout and stderr) is capped and the command is killed at a timeout.",
                "{\"type\":\"object\",\"properties\":{\"command\":{\"type\":\"string\","
                "\"description\":\"the shell command to run\"}},\"required\":[\"command\"]}",
                {bash_f, 1, true},
                "execute",
                "runs an arbitrary shell command with the daemon's privileges in the work "
                "directory",
                true},
    [T_READ] = {"read_file",
                "Read a text file inside the session's work directory (paths are relative to "
                "it).",
                "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\","
                "\"description\":\"file path relative to the work directory\"}},"
                "\"required\":[\"path\"]}",
                {read_f, 1, true},
                "read",
                "reveals the file's content to the model",
                false},
    [T_WRITE] = {"write_file",
                 "Create or replace a file inside the session's work directory.",
                 "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\","
                 "\"description\":\"file path relative to the work directory\"},"
                 "\"content\":{\"type\":\"string\",\"description\":\"the new content\"}},"
                 "\"required\":[\"path\",\"content\"]}",
                 {write_f, 2, true},
                 "write",
                 "creates or overwrites a file in the work directory",
                 false},
};

static atomic_bool use_openat2 = true;

void meao_tools_use_openat2(bool on)
{
    atomic_store(&use_openat2, on);
}

static const struct tool *lookup(const char *name)
{
    for (int i = 0; name && i < T_COUNT; i++)
        if (strcmp(tools[i].name, name) == 0)
            return &tools[i];
    return NULL;
}

const char *meao_tools_policy_name(enum meao_tool_policy p)
{
    switch (p) {
    case MEAO_TOOL_AUTO: return "auto";
    case MEAO_TOOL_ASK: return "ask";
    case MEAO_TOOL_ALWAYS: break;
    }
    return "always";
}

bool meao_tools_policy_parse(const char *s, enum meao_tool_policy *out)
{
    static const enum meao_tool_policy all[] = {MEAO_TOOL_AUTO, MEAO_TOOL_ASK, MEAO_TOOL_ALWAYS};
    for (size_t i = 0; s && i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(s, meao_tools_policy_name(all[i])) == 0) {
            *out = all[i];
            return true;
        }
    }
    return false;
}

static enum meao_tool_policy parse_policy(const char *s)
{
    enum meao_tool_policy p;
    return meao_tools_policy_parse(s, &p) ? p : MEAO_TOOL_ALWAYS; /* the safe reading */
}

enum meao_tool_policy meao_tools_policy(const struct meao_config *cfg, const char *name)
{
    const struct tool *t = lookup(name);
    if (t == &tools[T_BASH])
        return parse_policy(cfg->tool_policy_bash);
    if (t == &tools[T_READ])
        return parse_policy(cfg->tool_policy_read_file);
    if (t == &tools[T_WRITE])
        return parse_policy(cfg->tool_policy_write_file);
    return MEAO_TOOL_ALWAYS;
}

enum meao_tool_policy meao_tools_policy_for(const struct meao_config *cfg, const json_t *overrides,
                                            const char *name)
{
    const char *o = meao_json_str(overrides, name ? name : "");
    if (lookup(name) != NULL && o != NULL)
        return parse_policy(o);
    return meao_tools_policy(cfg, name);
}

enum meao_err meao_tools_check_policies(const json_t *overrides, char *why, size_t whylen)
{
    const char *name;
    json_t *v;
    enum meao_tool_policy p;

    if (overrides == NULL)
        return MEAO_OK;
    if (!json_is_object(overrides)) {
        snprintf(why, whylen, "Field \"toolPolicies\" must be an object");
        return MEAO_E_INVALID_PARAMETER;
    }
    json_object_foreach((json_t *)overrides, name, v)
    {
        if (!meao_tools_policy_parse(json_string_value(v), &p)) {
            snprintf(why, whylen, "toolPolicies values must be \"auto\", \"ask\" or \"always\"");
            return MEAO_E_INVALID_PARAMETER;
        }
    }
    return MEAO_OK;
}

bool meao_tools_known(const char *name)
{
    return lookup(name) != NULL;
}

json_t *meao_tools_describe(const struct meao_config *cfg)
{
    json_t *list = json_array();
    if (list == NULL)
        return NULL;
    for (int i = 0; i < T_COUNT; i++) {
        json_t *schema = json_loads(tools[i].input_schema, 0, NULL);
        json_t *item = json_pack("{s:s, s:s, s:o}", "name", tools[i].name, "description",
                                 tools[i].description, "inputSchema", schema);
        if (item && cfg) {
            json_object_set_new(
                item, "policy",
                json_string(meao_tools_policy_name(meao_tools_policy(cfg, tools[i].name))));
            json_object_set_new(item, "enabled", json_true());
        }
        if (item == NULL || json_array_append_new(list, item) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

enum meao_err meao_tools_validate(const char *name, const json_t *input, char *why, size_t whylen)
{
    const struct tool *t = lookup(name);
    if (t == NULL) {
        snprintf(why, whylen, "unknown tool");
        return MEAO_E_INVALID_REQUEST;
    }
    return meao_schema_check(&t->args, input, why, whylen);
}

/* Append s to buf (at *at) as display-safe text: control characters become
 * spaces; more than max bytes, or more than fits, ends in "...". */
static void put_safe(char *buf, size_t len, size_t *at, const char *s, size_t max)
{
    size_t full = strlen(s), n = full, room;
    bool more = false;

    if (*at + 1 >= len)
        return;
    room = len - 1 - *at;
    if (n > max) {
        n = max;
        more = true;
    }
    if (n > room) {
        n = room;
        more = true;
    }
    if (more)
        n = n > 3 ? n - 3 : 0;
    n = meao_text_cut(s, full, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[(*at)++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    if (more && *at + 3 <= len - 1) {
        memcpy(buf + *at, "...", 3);
        *at += 3;
    }
    buf[*at] = '\0';
}

void meao_tools_summary(const char *name, const json_t *input, char *buf, size_t len)
{
    const struct tool *t = lookup(name);
    size_t at = 0;
    char head[64];

    if (len == 0)
        return;
    buf[0] = '\0';
    if (t == &tools[T_BASH]) {
        put_safe(buf, len, &at, "$ ", 2);
        put_safe(buf, len, &at,
                 meao_json_str(input, "command") ? meao_json_str(input, "command") : "",
                 SUMMARY_MAX);
    } else if (t == &tools[T_READ]) {
        put_safe(buf, len, &at, "read ", 5);
        put_safe(buf, len, &at, meao_json_str(input, "path") ? meao_json_str(input, "path") : "",
                 SUMMARY_MAX);
    } else if (t == &tools[T_WRITE]) {
        snprintf(head, sizeof head, "write %zu bytes to ",
                 json_string_length(json_object_get(input, "content")));
        put_safe(buf, len, &at, head, sizeof head);
        put_safe(buf, len, &at, meao_json_str(input, "path") ? meao_json_str(input, "path") : "",
                 SUMMARY_MAX);
    } else {
        put_safe(buf, len, &at, name ? name : "?", SUMMARY_MAX);
    }
}

json_t *meao_tools_approval_request(const char *name, const char *summary)
{
    const struct tool *t = lookup(name);
    return json_pack("{s:s, s:s, s:s, s:[s], s:b}", "tool", name, "action",
                     t ? t->action : "unknown", "summary", summary, "risks",
                     t ? t->risk : "unknown tool", "isDangerous", t ? t->dangerous : true);
}

void meao_tools_result_free(struct meao_tool_result *res)
{
    if (res == NULL)
        return;
    free(res->output);
    res->output = NULL;
    res->len = 0;
}

/* Finish a result from raw bytes plus an optional note. Steals raw. */
static enum meao_err finish(struct meao_tool_result *res, bool success, struct meao_buf *raw,
                            bool trim, const char *note)
{
    struct meao_buf out = {0};
    enum meao_err e = MEAO_E_NOMEM;

    if (!meao_buf_reserve(&out, 0) || !meao_text_clean(raw->p ? raw->p : "", raw->len, &out))
        goto out;
    while (trim && out.len > 0 && out.p[out.len - 1] == '\n')
        out.p[--out.len] = '\0';
    if (note && note[0] && !meao_buf_puts(&out, out.len ? "\n" : ""))
        goto out;
    if (note && !meao_buf_puts(&out, note))
        goto out;
    res->success = success;
    res->output = out.p;
    res->len = out.len;
    out.p = NULL;
    e = MEAO_OK;
out:
    meao_buf_free(&out);
    meao_buf_free(raw);
    return e;
}

static enum meao_err fail_msg(struct meao_tool_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A failed result whose output is the formatted message. */
static enum meao_err fail_msg(struct meao_tool_result *res, const char *fmt, ...)
{
    char msg[512];
    struct meao_buf raw = {0};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return finish(res, false, &raw, false, msg);
}

static bool cancel_fired(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

/* --- bash ---------------------------------------------------------------- */

enum meao_err meao_tools_bash(const char *command, const struct meao_tool_env *env,
                              struct meao_tool_result *res)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_ok = false, attr_ok = false;
    int pipefd[2] = {-1, -1}, pidfd = -1, status = 0, rc;
    pid_t pid = -1;
    bool eof = false, exited = false, timed_out = false, cancelled = false, truncated = false;
    int64_t deadline, drain_until = 0;
    struct meao_buf raw = {0};
    sigset_t none, all;
    char home[4200], note[160];
    char *argv[] = {"/bin/sh", "-c", (char *)command, NULL};
    char *envp[] = {"PATH=" SAFE_PATH, NULL, "LANG=C.UTF-8", NULL};
    enum meao_err e;

    memset(res, 0, sizeof *res);
    if ((size_t)snprintf(home, sizeof home, "HOME=%s", env->work_dir) >= sizeof home) {
        e = fail_msg(res, "%s", "the work directory path is too long");
        goto out;
    }
    envp[1] = home;
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        e = fail_msg(res, "cannot start the command: %s", strerror(errno));
        goto out;
    }
    /* posix_spawn is vfork-fast and safe in a threaded daemon; the child gets
     * its own process group (the unit of killing), default signal handling
     * and an empty mask, /dev/null as stdin, our pipe as stdout and stderr */
    fa_ok = posix_spawn_file_actions_init(&fa) == 0;
    attr_ok = posix_spawnattr_init(&attr) == 0;
    if (!fa_ok || !attr_ok || posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) ||
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1) ||
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2) ||
        posix_spawn_file_actions_addchdir_np(&fa, env->work_dir)) {
        e = MEAO_E_NOMEM;
        goto out;
    }
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, envp);
    close(pipefd[1]);
    pipefd[1] = -1;
    if (rc != 0) {
        pid = -1;
        e = fail_msg(res, "cannot start the command: %s", strerror(rc));
        goto out;
    }
    /* a pidfd tells us the shell ended even while a background job still
     * holds the pipe open */
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    fcntl(pipefd[0], F_SETFL, fcntl(pipefd[0], F_GETFL) | O_NONBLOCK);
    deadline = meao_mono_ms(env->clock) + env->timeout_ms;

    /* until the output ended and the shell exited (or the deadline, the
     * cap, a cancel); after the exit, output is drained only briefly */
    while (!eof || !exited) {
        struct pollfd p[3];
        nfds_t n = 0;
        int64_t now = meao_mono_ms(env->clock), wait;
        int ip = -1, iw = -1, ic = -1;
        siginfo_t si;

        if (now >= deadline) {
            timed_out = !exited;
            break;
        }
        if (exited && now >= drain_until)
            break;
        wait = (exited ? drain_until : deadline) - now;
        if (!eof) {
            ip = (int)n;
            p[n++] = (struct pollfd){.fd = pipefd[0], .events = POLLIN};
        }
        if (!exited && pidfd >= 0) {
            iw = (int)n;
            p[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        } else if (!exited && wait > SLICE_MS) {
            wait = SLICE_MS;
        }
        if (env->cancel_fd >= 0) {
            ic = (int)n;
            p[n++] = (struct pollfd){.fd = env->cancel_fd, .events = POLLIN};
        }
        if (poll(p, n, (int)wait) < 0 && errno != EINTR)
            break;
        if (ic >= 0 && (p[ic].revents & POLLIN)) {
            cancelled = true;
            break;
        }
        if (ip >= 0 && (p[ip].revents & (POLLIN | POLLHUP | POLLERR))) {
            char chunk[CHUNK];
            ssize_t got;
            while ((got = read(pipefd[0], chunk, sizeof chunk)) > 0) {
                size_t room = env->max_output > raw.len ? env->max_output - raw.len : 0;
                size_t take = (size_t)got < room ? (size_t)got : room;
                if (take && !meao_buf_append(&raw, chunk, take)) {
                    e = MEAO_E_NOMEM;
                    goto out;
                }
                if ((size_t)got > take) {
                    truncated = true;
                    break;
                }
            }
            if (truncated)
                break;
            if (got == 0)
                eof = true;
        }
        /* WNOWAIT: the shell stays a zombie, so its pid (= the group id)
         * cannot be reused before the group is killed below */
        if (!exited && (iw < 0 || (p[iw].revents & POLLIN))) {
            si.si_pid = 0;
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == pid) {
                exited = true;
                kill(-pid, SIGKILL); /* background jobs die with their command */
                drain_until = meao_mono_ms(env->clock) + DRAIN_MS;
            }
        }
    }
    /* whatever is left of the group goes; then reap the shell */
    kill(-pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    pid = -1;

    if (cancelled)
        snprintf(note, sizeof note, "[cancelled]");
    else if (timed_out)
        snprintf(note, sizeof note, "[timed out after %lld ms; the command was killed]",
                 (long long)env->timeout_ms);
    else if (truncated)
        snprintf(note, sizeof note, "[output truncated at %zu bytes; the command was killed]",
                 env->max_output);
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        snprintf(note, sizeof note, "[exit status %d]", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(note, sizeof note, "[killed by signal %d]", WTERMSIG(status));
    else
        note[0] = '\0';
    e = finish(res,
               !cancelled && !timed_out && !truncated && WIFEXITED(status) &&
                   WEXITSTATUS(status) == 0,
               &raw, true, note);
    if (e == MEAO_OK && cancelled)
        e = MEAO_E_CANCELLED;
out:
    if (pid > 0) {
        kill(-pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    if (pidfd >= 0)
        close(pidfd);
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    meao_buf_free(&raw);
    return e;
}

/* --- confinement ----------------------------------------------------------- */

/* The path relative to root, or NULL when it is absolute and outside root
 * (root is resolved and has no trailing slash, except "/" itself). */
static const char *relative_to(const char *root, const char *path)
{
    size_t n = strlen(root);
    if (path[0] != '/')
        return path;
    if (strcmp(root, "/") == 0)
        return path[1] ? path + 1 : ".";
    if (strncmp(path, root, n) != 0 || (path[n] != '\0' && path[n] != '/'))
        return NULL;
    path += n;
    while (*path == '/')
        path++;
    return *path ? path : ".";
}

/* Without openat2: resolve lexically ("." and ".." on a stack, never above
 * the root), then open component by component refusing every symlink, so
 * what is opened is exactly the lexical path beneath dfd. */
static int open_walk(int dfd, const char *rel, int flags, mode_t mode)
{
    char *copy = strdup(rel), *save = NULL, *tok;
    const char *parts[MAX_DEPTH];
    int depth = 0, cur = -1, fd = -1, err = 0;

    if (copy == NULL) {
        errno = ENOMEM;
        return -1;
    }
    for (tok = strtok_r(copy, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (strcmp(tok, ".") == 0)
            continue;
        if (strcmp(tok, "..") == 0) {
            if (depth == 0) {
                err = EXDEV;
                goto out;
            }
            depth--;
            continue;
        }
        if (depth == MAX_DEPTH) {
            err = ENAMETOOLONG;
            goto out;
        }
        parts[depth++] = tok;
    }
    cur = dup(dfd);
    if (cur < 0) {
        err = errno;
        goto out;
    }
    for (int i = 0; i + 1 < depth; i++) {
        int next = openat(cur, parts[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            err = errno == ENOTDIR ? ELOOP : errno; /* a symlink to a directory lands here too */
            goto out;
        }
        close(cur);
        cur = next;
    }
    fd = openat(cur, depth ? parts[depth - 1] : ".", flags | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        err = errno;
out:
    if (cur >= 0)
        close(cur);
    free(copy);
    errno = err;
    return err ? -1 : fd;
}

/* Open rel beneath root: symlinks and ".." may not leave it. -1 + errno
 * (EXDEV or ELOOP for an escape). */
static int open_beneath(const char *root, const char *rel, int flags, mode_t mode)
{
    int dfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC), fd, err;
    if (dfd < 0)
        return -1;
    if (atomic_load(&use_openat2)) {
        struct open_how how = {
            .flags = (uint64_t)(flags | O_CLOEXEC),
            .mode = (flags & O_CREAT) ? mode : 0,
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };
        fd = (int)syscall(SYS_openat2, dfd, rel, &how, sizeof how);
        if (fd >= 0 || errno != ENOSYS) {
            err = errno;
            close(dfd);
            errno = err;
            return fd;
        }
        atomic_store(&use_openat2, false);
    }
    fd = open_walk(dfd, rel, flags, mode);
    err = errno;
    close(dfd);
    errno = err;
    return fd;
}

static enum meao_err path_error(struct meao_tool_result *res, const char *path, int err)
{
    if (err == EXDEV || err == ELOOP)
        return fail_msg(res, "refused: %s leaves the work directory", path);
    if (err == ENOENT)
        return fail_msg(res, "no such file: %s", path);
    if (err == EISDIR)
        return fail_msg(res, "is a directory: %s", path);
    if (err == ENOTDIR)
        return fail_msg(res, "not a directory on the way to %s", path);
    if (err == EACCES || err == EPERM)
        return fail_msg(res, "permission denied: %s", path);
    return fail_msg(res, "cannot open the file: %s", strerror(err));
}

enum meao_err meao_tools_read_file(const char *path, const struct meao_tool_env *env,
                                   struct meao_tool_result *res)
{
    const char *rel = relative_to(env->work_dir, path);
    struct meao_buf raw = {0};
    struct stat st;
    bool truncated = false;
    char note[96] = "";
    int fd;

    memset(res, 0, sizeof *res);
    if (rel == NULL)
        return fail_msg(res, "refused: %s is outside the work directory", path);
    /* O_NONBLOCK: opening a FIFO must not hang the turn (it is refused below) */
    fd = open_beneath(env->work_dir, rel, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);
    if (fd < 0)
        return path_error(res, path, errno);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail_msg(res, "not a regular file: %s", path);
    }
    for (;;) {
        char chunk[CHUNK];
        size_t room = env->max_output - raw.len;
        ssize_t got = read(fd, chunk, room < sizeof chunk ? room + 1 : sizeof chunk);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int err = errno;
            close(fd);
            meao_buf_free(&raw);
            return fail_msg(res, "read failed: %s", strerror(err));
        }
        if (got == 0)
            break;
        if ((size_t)got > room) {
            truncated = true;
            got = (ssize_t)room;
        }
        if (!meao_buf_append(&raw, chunk, (size_t)got)) {
            close(fd);
            meao_buf_free(&raw);
            return MEAO_E_NOMEM;
        }
        if (truncated)
            break;
    }
    close(fd);
    if (truncated)
        snprintf(note, sizeof note, "[truncated at %zu bytes]", env->max_output);
    return finish(res, true, &raw, false, note);
}

enum meao_err meao_tools_write_file(const char *path, const char *content, size_t len,
                                    const struct meao_tool_env *env, struct meao_tool_result *res)
{
    const char *rel = relative_to(env->work_dir, path), *base;
    char *dir = NULL, tmp[64], msg[64];
    int pfd = -1, fd = -1;
    size_t off = 0;
    enum meao_err e;
    struct meao_buf raw = {0};
    static atomic_uint counter;

    memset(res, 0, sizeof *res);
    if (rel == NULL)
        return fail_msg(res, "refused: %s is outside the work directory", path);
    base = strrchr(rel, '/');
    dir = base ? strndup(rel, (size_t)(base - rel)) : strdup(".");
    base = base ? base + 1 : rel;
    if (dir == NULL)
        return MEAO_E_NOMEM;
    if (base[0] == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        e = fail_msg(res, "not a file name: %s", path);
        goto out;
    }
    pfd = open_beneath(env->work_dir, dir[0] ? dir : ".", O_PATH | O_DIRECTORY, 0);
    if (pfd < 0) {
        e = path_error(res, path, errno);
        goto out;
    }
    /* write a temporary file next to the target, then rename over it: a
     * reader never sees half a file, and a symlink at the target is replaced,
     * never followed */
    for (int tries = 0; fd < 0 && tries < 8; tries++) {
        snprintf(tmp, sizeof tmp, ".meao-write-%ld-%u", (long)getpid(),
                 atomic_fetch_add(&counter, 1));
        fd = openat(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        e = path_error(res, path, errno);
        goto out;
    }
    while (off < len) {
        ssize_t n = write(fd, content + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            unlinkat(pfd, tmp, 0);
            e = fail_msg(res, "write failed: %s", strerror(err));
            goto out;
        }
        off += (size_t)n;
    }
    if (close(fd) < 0) {
        int err = errno;
        fd = -1;
        unlinkat(pfd, tmp, 0);
        e = fail_msg(res, "write failed: %s", strerror(err));
        goto out;
    }
    fd = -1;
    if (renameat(pfd, tmp, pfd, base) < 0) {
        int err = errno;
        unlinkat(pfd, tmp, 0);
        e = path_error(res, path, err);
        goto out;
    }
    snprintf(msg, sizeof msg, "wrote %zu bytes to ", len);
    if (!meao_buf_puts(&raw, msg) || !meao_buf_puts(&raw, path)) {
        meao_buf_free(&raw);
        e = MEAO_E_NOMEM;
        goto out;
    }
    e = finish(res, true, &raw, false, NULL);
out:
    if (fd >= 0)
        close(fd);
    if (pfd >= 0)
        close(pfd);
    free(dir);
    return e;
}

enum meao_err meao_tools_run(const char *name, const json_t *input, const struct meao_tool_env *env,
                             struct meao_tool_result *res)
{
    const struct tool *t = lookup(name);
    memset(res, 0, sizeof *res);
    if (cancel_fired(env->cancel_fd)) {
        enum meao_err e = fail_msg(res, "%s", "[cancelled]");
        return e == MEAO_OK ? MEAO_E_CANCELLED : e;
    }
    if (t == &tools[T_BASH])
        return meao_tools_bash(meao_json_str(input, "command"), env, res);
    if (t == &tools[T_READ])
        return meao_tools_read_file(meao_json_str(input, "path"), env, res);
    if (t == &tools[T_WRITE]) {
        const json_t *c = json_object_get(input, "content");
        return meao_tools_write_file(meao_json_str(input, "path"), json_string_value(c),
                                     json_string_length(c), env, res);
    }
    return fail_msg(res, "unknown tool %s", name ? name : "");
}
