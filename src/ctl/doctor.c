/* meaoctl doctor: checks an installation and says what to fix. Each check
 * prints one line: "ok", "warn" or "FAIL", what was checked and, when not ok,
 * the command or setting that fixes it. Exit 0 when nothing failed, 1
 * otherwise (warnings do not fail). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/daemon.h"
#include "ctl/ctl.h"
#include "orch/client.h"
#include "store/backup.h"
#include "store/db.h"

struct doctor {
    int fails, warns;
};

static void report(struct doctor *d, int level, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* level: 0 ok, 1 warn, 2 FAIL; fmt (may be "") says what to do */
static void report(struct doctor *d, int level, const char *what, const char *fmt, ...)
{
    static const char *const tag[] = {"ok  ", "warn", "FAIL"};
    va_list ap;
    printf("%s  %s", tag[level], what);
    if (fmt[0]) {
        fputs(" — ", stdout);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
    }
    putchar('\n');
    if (level == 1)
        d->warns++;
    else if (level == 2)
        d->fails++;
}

static void pass(struct doctor *d, const char *what)
{
    (void)d;
    printf("ok    %s\n", what);
}

/* A private file: no access for others, none for the group unless allowed. */
static void check_private(struct doctor *d, const char *label, const char *path, mode_t allowed,
                          bool required)
{
    char what[512];
    struct stat st;
    snprintf(what, sizeof what, "%s %s", label, path);
    if (stat(path, &st) != 0) {
        if (required)
            report(d, 2, what, "missing (%s)", strerror(errno));
        else
            report(d, 1, what, "missing (%s)", strerror(errno));
        return;
    }
    if ((st.st_mode & 0777 & ~allowed) != 0)
        report(d, 2, what, "mode 0%o is too open: chmod 0%o %s", (unsigned)(st.st_mode & 0777),
               (unsigned)(st.st_mode & allowed), path);
    else
        pass(d, what);
}

static bool connects(const char *path)
{
    struct sockaddr_un sa;
    int fd, rc;
    if (strlen(path) >= sizeof sa.sun_path)
        return false;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    close(fd);
    return rc == 0;
}

static void check_socket(struct doctor *d, const char *label, const char *path, int64_t mode,
                         const char *group, const char *unit)
{
    char what[512];
    struct stat st;
    gid_t gid;
    snprintf(what, sizeof what, "%s %s", label, path);
    if (stat(path, &st) != 0 || !S_ISSOCK(st.st_mode)) {
        report(d, 2, what, "no socket: is %s running? (systemctl start %s; journalctl -u %s)", unit,
               unit, unit);
        return;
    }
    if ((int64_t)(st.st_mode & 0777) != mode)
        report(d, 2, what, "mode 0%o, configured 0%llo: restart %s", (unsigned)(st.st_mode & 0777),
               (long long)mode, unit);
    else if (group && group[0] && meao_group_resolve(group, &gid) == 0 && st.st_gid != gid)
        report(d, 2, what, "group %u, configured %s: restart %s (its user must be in group %s)",
               (unsigned)st.st_gid, group, unit, group);
    else if (!connects(path))
        report(d, 2, what, "nothing answers: systemctl restart %s", unit);
    else
        pass(d, what);
}

/* Run nginx -T (optionally -c conf) and look for the two meao snippets. */
static void check_nginx(struct doctor *d, const char *conf)
{
    int pfd[2];
    pid_t pid;
    char buf[8192], tail[64] = "";
    bool upstream = false, locations = false;
    ssize_t n;
    int status;

    if (pipe(pfd) != 0) {
        report(d, 1, "nginx configuration", "cannot run nginx -T: %s", strerror(errno));
        return;
    }
    pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(pfd[1], 1);
        if (null >= 0)
            dup2(null, 2);
        if (conf)
            execlp("nginx", "nginx", "-T", "-c", conf, (char *)NULL);
        else
            execlp("nginx", "nginx", "-T", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    if (pid < 0) {
        close(pfd[0]);
        report(d, 1, "nginx configuration", "cannot run nginx -T: %s", strerror(errno));
        return;
    }
    /* scan the dump; a needle may straddle two reads, so keep a tail */
    while ((n = read(pfd[0], buf, sizeof buf - 1)) > 0 || (n < 0 && errno == EINTR)) {
        char joined[sizeof tail + sizeof buf];
        if (n < 0)
            continue;
        buf[n] = '\0';
        snprintf(joined, sizeof joined, "%s%s", tail, buf);
        upstream = upstream || strstr(joined, "upstream meao_fcgi") != NULL;
        locations = locations || strstr(joined, "fastcgi_pass meao_fcgi") != NULL;
        {
            size_t keep = n >= 40 ? 40 : (size_t)n;
            memcpy(tail, buf + n - (ssize_t)keep, keep);
            tail[keep] = '\0';
        }
    }
    close(pfd[0]);
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 127)
        report(d, 1, "nginx configuration", "nginx not found: cannot check the snippets");
    else if (WEXITSTATUS(status) != 0)
        report(d, 2, "nginx configuration", "nginx -T fails: run nginx -t and fix what it says");
    else if (!upstream)
        report(d, 2, "nginx snippet meao-upstream.conf",
               "not included: add `include .../share/meao/nginx/meao-upstream.conf;` in http { }");
    else if (!locations)
        report(d, 2, "nginx snippet meao.conf",
               "not included: add `include .../share/meao/nginx/meao.conf;` in your server { }");
    else
        pass(d, "nginx includes meao-upstream.conf and meao.conf");
}

int meaoctl_doctor(const struct meao_config *cfg, const char *config_path, int argc, char **argv)
{
    static const struct option opts[] = {{"nginx-conf", required_argument, NULL, 'n'},
                                         {"no-nginx", no_argument, NULL, 'N'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct doctor d = {0, 0};
    const char *nginx_conf = NULL;
    bool nginx = true;
    char err[512], what[512];
    int opt, version = 0;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'n': nginx_conf = optarg; break;
        case 'N': nginx = false; break;
        case 'h':
            puts("usage: meaoctl doctor [--nginx-conf FILE | --no-nginx]\n"
                 "Checks the configuration, file and socket permissions, the database\n"
                 "(integrity, schema), the responder and orchestrator sockets, and that nginx\n"
                 "includes the meao snippets (nginx -T). Prints ok / warn / FAIL per check with\n"
                 "what to fix; exits 1 when a check failed.");
            return CTL_EX_OK;
        default: return CTL_EX_USAGE;
        }
    }
    if (optind != argc)
        return meaoctl_fail(CTL_EX_USAGE, "doctor takes no argument \"%s\"", argv[optind]);

    /* configuration: it parsed, or meaoctl would have stopped already */
    if (config_path) {
        snprintf(what, sizeof what, "configuration %s", config_path);
        pass(&d, what);
        check_private(&d, "configuration file", config_path, 0640, true);
    } else {
        report(&d, 1, "configuration",
               "no file (defaults and MEAO_* only): pass -c FILE or "
               "create /etc/meao/meao.conf");
    }
    if (cfg->debug_routes)
        report(&d, 2, "debug_routes", "is on: set debug_routes = false outside tests");
    if (cfg->fcgi_socket_group[0] == '\0')
        report(&d, 1, "fcgi_socket_group",
               "empty: set it to nginx's group (www-data) so only nginx can connect");

    /* secrets and data */
    check_private(&d, "secret file", cfg->secret_file, 0600, true);
    check_private(&d, "database", cfg->db_path, 0660, true);
    {
        char dir[4096];
        const char *slash = strrchr(cfg->db_path, '/');
        if (slash && slash != cfg->db_path && (size_t)(slash - cfg->db_path) < sizeof dir) {
            memcpy(dir, cfg->db_path, (size_t)(slash - cfg->db_path));
            dir[slash - cfg->db_path] = '\0';
            check_private(&d, "data directory", dir, 0750, true);
        }
    }
    check_private(&d, "workspace root", cfg->workspace_root, 0750, false);
    check_private(&d, "rate-limit table", cfg->ratelimit_shm, 0660, false);
    if (meao_db_verify(cfg->db_path, &version, err, sizeof err) != MEAO_OK) {
        report(&d, 2, "database integrity", "%s: restore a backup (meaoctl restore)", err);
    } else {
        pass(&d, "database integrity_check");
        if (version < meao_db_schema_latest())
            report(&d, 2, "database schema", "version %d, this release needs %d: meaoctl migrate",
                   version, meao_db_schema_latest());
        else if (version > meao_db_schema_latest())
            report(&d, 2, "database schema",
                   "version %d is newer than this release (%d): "
                   "upgrade the binaries",
                   version, meao_db_schema_latest());
        else
            pass(&d, "database schema");
    }

    /* the running services */
    check_socket(&d, "responder socket", cfg->fcgi_socket, cfg->fcgi_socket_mode,
                 cfg->fcgi_socket_group, "meao-fcgi");
    check_socket(&d, "orchestrator socket", cfg->orchestrator_socket, cfg->orchestrator_socket_mode,
                 cfg->orchestrator_socket_group, "meao-orchestrator");
    if (meao_orch_ping(cfg->orchestrator_socket, meao_clock_system(), 1000) != MEAO_OK)
        report(&d, 2, "orchestrator ping", "no answer: systemctl restart meao-orchestrator");
    else
        pass(&d, "orchestrator answers a ping");
    if (nginx)
        check_nginx(&d, nginx_conf);

    printf("%d failed, %d warning(s)\n", d.fails, d.warns);
    return d.fails ? CTL_EX_FAIL : CTL_EX_OK;
}
