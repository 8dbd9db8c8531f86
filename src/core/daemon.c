#include "core/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"

int meao_group_resolve(const char *name, gid_t *out)
{
    char *end;
    long v = strtol(name, &end, 10);
    struct group grp, *gr = NULL;
    char buf[4096];
    if (*name && *end == '\0' && v >= 0) {
        *out = (gid_t)v;
        return 0;
    }
    if (getgrnam_r(name, &grp, buf, sizeof buf, &gr) != 0 || gr == NULL)
        return -1;
    *out = gr->gr_gid;
    return 0;
}

/* Remove a leftover socket file at sa, unless a live peer answers on it. */
static int clear_stale(const struct sockaddr_un *sa, const char *path)
{
    struct stat st;
    int probe;
    if (lstat(path, &st) != 0)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "%s exists and is not a socket", path);
        return -1;
    }
    probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return -1;
    if (connect(probe, (const struct sockaddr *)sa, sizeof *sa) == 0) {
        close(probe);
        meao_log(MEAO_LOG_ERROR, NULL, __func__,
                 "another daemon is listening on %s; refusing to start", path);
        return -1;
    }
    if (errno != ECONNREFUSED) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "probing %s: %s", path, strerror(errno));
        close(probe);
        return -1;
    }
    close(probe);
    meao_log(MEAO_LOG_INFO, NULL, __func__, "removing stale socket %s", path);
    if (unlink(path) < 0 && errno != ENOENT) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "unlink %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int meao_listener_open(struct meao_listener *l, const char *path, const char *key, mode_t mode,
                       const char *group, int backlog)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    mode_t old;
    int fd;

    memset(l, 0, sizeof *l);
    if (strlen(path) >= sizeof sa.sun_path) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "%s path too long: %s", key, path);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    memcpy(l->path, path, strlen(path) + 1);
    if (clear_stale(&sa, path) < 0)
        return -1;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "socket: %s", strerror(errno));
        return -1;
    }
    /* born owner-only, then opened up to exactly the configured mode */
    old = umask(0177);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        umask(old);
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "bind %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    umask(old);
    l->own = true;
    if (stat(path, &st) == 0) {
        l->dev = st.st_dev;
        l->ino = st.st_ino;
    }
    if (chmod(path, mode) < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "chmod %s: %s", path, strerror(errno));
        goto fail;
    }
    if (group && group[0]) {
        gid_t gid;
        if (meao_group_resolve(group, &gid) < 0) {
            meao_log(MEAO_LOG_ERROR, NULL, __func__, "%s_group: no group %s", key, group);
            goto fail;
        }
        if (chown(path, (uid_t)-1, gid) < 0) {
            meao_log(MEAO_LOG_ERROR, NULL, __func__, "chown %s: %s", path, strerror(errno));
            goto fail;
        }
    }
    if (listen(fd, backlog) < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "listen: %s", strerror(errno));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    meao_listener_unlink(l);
    return -1;
}

void meao_listener_unlink(struct meao_listener *l)
{
    struct stat st;
    if (l->own && lstat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
        unlink(l->path);
    l->own = false;
}

int meao_pid_file_write(const char *path, bool *wrote)
{
    char line[32];
    int fd, n;
    *wrote = false;
    if (path == NULL || path[0] == '\0')
        return 0;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "%s: %s", path, strerror(errno));
        return -1;
    }
    n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    if (write(fd, line, (size_t)n) != n) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "%s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    close(fd);
    *wrote = true;
    return 0;
}

void meao_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int meao_daemon_start(int argc, char **argv, const char *program, void (*usage)(FILE *),
                      struct meao_config *cfg, const char **config_path_out)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    bool check_only = false;
    char err[256];
    int c;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'C': check_only = true; break;
        case 'V': printf("%s %s\n", program, MEAO_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (config_path_out)
        *config_path_out = config_path;
    if (meao_config_load(cfg, config_path, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", program, err);
        return 2;
    }
    if (check_only) {
        printf("config ok\n");
        meao_config_free(cfg);
        return 0;
    }
    meao_log_init(program, cfg->log_level);
    if (meao_log_reopen(cfg->log_file) < 0) {
        fprintf(stderr, "%s: log_file %s: %s\n", program, cfg->log_file, strerror(errno));
        meao_config_free(cfg);
        return 1;
    }
    return -1;
}
