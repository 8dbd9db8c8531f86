/* The meao-fcgi master (PHP-FPM style): it owns the listening socket and the
 * pid file, retries a failed start-up migration, forks the workers, restarts any that die (backing
 * off when they die young, so a crash loop does not spin), forwards SIGHUP, stops them gracefully
 * on SIGTERM/SIGINT and replaces them all on SIGUSR2. It never serves a request itself. Signals are
 * handled synchronously with sigtimedwait(): no async handlers, no races with fork(). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api/routes.h"
#include "cgi.h"
#include "core/daemon.h"
#include "core/log.h"
#include "core/metrics.h"

#define MAX_WORKERS     256
#define MAX_RETIRING    (2 * MAX_WORKERS)
#define STOP_WAIT_MS    30000 /* then SIGKILL */
#define YOUNG_MS        10000 /* a worker dying younger than this counts towards back-off */
#define BACKOFF_MIN_MS  250
#define BACKOFF_MAX_MS  30000
#define MIGRATE_BUSY_MS 1000 /* retries must not keep signals waiting long */

struct slot {
    pid_t pid; /* 0: not running */
    int64_t started_ms;
    int64_t restart_at_ms; /* when pid == 0 */
    unsigned fails;        /* consecutive young deaths */
};

struct master {
    struct meao_config *cfg;
    const char *config_path;
    const struct meao_clock *clock;
    pid_t self;
    int lfd;
    struct meao_listener listener; /* the socket file, unless it was inherited */
    bool wrote_pid;
    struct slot slots[MAX_WORKERS];
    unsigned nslots;
    pid_t retiring[MAX_RETIRING]; /* old generation after a reload: never restarted */
    unsigned nretiring;
    bool stopping;
    bool killed;
    int64_t deadline_ms;
    bool migrate_pending;
    int64_t migrate_at_ms;
    int64_t migrate_delay_ms;
    sigset_t sigs;
};

static unsigned worker_count(const struct meao_config *cfg)
{
    long n = cfg->fcgi_workers;
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
}

static void spawn(struct master *m, unsigned idx)
{
    struct slot *s = &m->slots[idx];
    pid_t pid = fork();
    if (pid < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, __func__, "fork: %s", strerror(errno));
        s->restart_at_ms = meao_mono_ms(m->clock) + BACKOFF_MIN_MS;
        return;
    }
    if (pid == 0) {
        int rc;
        /* a worker outliving its master would serve a socket nobody manages */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != m->self)
            _exit(0);
        rc = fcgi_worker_run(m->cfg, m->lfd, idx, m->nslots);
        meao_config_free(m->cfg);
        exit(rc);
    }
    s->pid = pid;
    s->started_ms = meao_mono_ms(m->clock);
    s->restart_at_ms = 0;
}

static void describe(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "status 0x%x", (unsigned)status);
}

static void reap(struct master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        char how[64];
        bool found = false;
        int64_t now = meao_mono_ms(m->clock);
        describe(status, how, sizeof how);
        for (unsigned i = 0; i < m->nretiring; i++) {
            if (m->retiring[i] == pid) {
                m->retiring[i] = m->retiring[--m->nretiring];
                meao_log(MEAO_LOG_INFO, NULL, "worker_retired", "old worker %ld: %s", (long)pid,
                         how);
                found = true;
                break;
            }
        }
        for (unsigned i = 0; !found && i < m->nslots; i++) {
            struct slot *s = &m->slots[i];
            int64_t delay;
            if (s->pid != pid)
                continue;
            found = true;
            s->pid = 0;
            if (m->stopping) {
                meao_log(MEAO_LOG_INFO, NULL, "worker_exit", "worker %u (%ld): %s", i, (long)pid,
                         how);
                break;
            }
            /* back off only while workers keep dying young: 0, 250 ms, 500 ms, ... 30 s */
            s->fails = now - s->started_ms < YOUNG_MS ? s->fails + 1 : 1;
            delay =
                s->fails <= 1 ? 0 : (int64_t)BACKOFF_MIN_MS << (s->fails < 9 ? s->fails - 2 : 7);
            if (delay > BACKOFF_MAX_MS)
                delay = BACKOFF_MAX_MS;
            s->restart_at_ms = now + delay;
            meao_log(MEAO_LOG_ERROR, NULL, "worker_died",
                     "worker %u (%ld) died: %s; restarting in %lld ms", i, (long)pid, how,
                     (long long)delay);
        }
    }
}

static void restart_due(struct master *m)
{
    int64_t now = meao_mono_ms(m->clock);
    for (unsigned i = 0; i < m->nslots; i++)
        if (m->slots[i].pid == 0 && now >= m->slots[i].restart_at_ms)
            spawn(m, i);
}

static void signal_all(struct master *m, int sig)
{
    for (unsigned i = 0; i < m->nslots; i++)
        if (m->slots[i].pid > 0)
            kill(m->slots[i].pid, sig);
    for (unsigned i = 0; i < m->nretiring; i++)
        kill(m->retiring[i], sig);
}

static unsigned live_children(const struct master *m)
{
    unsigned n = m->nretiring;
    for (unsigned i = 0; i < m->nslots; i++)
        n += m->slots[i].pid > 0;
    return n;
}

static void begin_stop(struct master *m, int sig)
{
    if (m->stopping)
        return;
    meao_log(MEAO_LOG_INFO, NULL, "master_stopping", "signal %d: stopping %u worker(s)", sig,
             live_children(m));
    m->stopping = true;
    m->deadline_ms = meao_mono_ms(m->clock) + STOP_WAIT_MS;
    /* with no listener left, new connections are refused at once instead of
     * waiting in a backlog nobody accepts from */
    close(m->lfd);
    m->lfd = -1;
    signal_all(m, SIGTERM);
}

/* SIGUSR2: re-read the configuration, start a fresh set of workers on the
 * same socket, then let the old ones finish what they are doing and exit. */
static void reload(struct master *m)
{
    struct meao_config fresh;
    char err[256];
    unsigned n;

    if (meao_config_load(&fresh, m->config_path, err, sizeof err) < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, "reload", "keeping the running configuration: %s", err);
        meao_config_free(&fresh);
        return;
    }
    if (strcmp(fresh.fcgi_socket, m->cfg->fcgi_socket) != 0 ||
        fresh.fcgi_socket_mode != m->cfg->fcgi_socket_mode ||
        strcmp(fresh.fcgi_socket_group, m->cfg->fcgi_socket_group) != 0 ||
        fresh.fcgi_backlog != m->cfg->fcgi_backlog || strcmp(fresh.pid_file, m->cfg->pid_file) != 0)
        meao_log(MEAO_LOG_WARN, NULL, "reload",
                 "socket and pid file settings change only on a restart");
    /* the socket and pid file stay what they are: keep their settings */
    free(fresh.fcgi_socket);
    fresh.fcgi_socket = m->cfg->fcgi_socket;
    m->cfg->fcgi_socket = NULL;
    free(fresh.pid_file);
    fresh.pid_file = m->cfg->pid_file;
    m->cfg->pid_file = NULL;
    if (strcmp(fresh.log_file, m->cfg->log_file) != 0 && meao_log_reopen(fresh.log_file) < 0)
        meao_log(MEAO_LOG_ERROR, NULL, "reload", "log_file %s: %s", fresh.log_file,
                 strerror(errno));
    meao_log_set_level(fresh.log_level);

    for (unsigned i = 0; i < m->nslots; i++)
        if (m->slots[i].pid > 0 && m->nretiring < MAX_RETIRING)
            m->retiring[m->nretiring++] = m->slots[i].pid;
    meao_config_free(m->cfg);
    *m->cfg = fresh;
    n = worker_count(m->cfg);
    memset(m->slots, 0, sizeof m->slots);
    m->nslots = n;
    for (unsigned i = 0; i < n; i++)
        spawn(m, i);
    for (unsigned i = 0; i < m->nretiring; i++)
        kill(m->retiring[i], SIGTERM);
    meao_log(MEAO_LOG_INFO, NULL, "reload", "%u new worker(s); %u old one(s) finishing", n,
             m->nretiring);
}

/* The start-up migration failed (e.g. the database was unwritable or locked):
 * try again now and then, so it recovers without a restart. Workers reopen
 * their connections by themselves once the schema is there. */
static void retry_migration(struct master *m)
{
    int64_t now = meao_mono_ms(m->clock);
    if (!m->migrate_pending || now < m->migrate_at_ms)
        return;
    if (cgi_migrate(m->cfg, MIGRATE_BUSY_MS) == 0) {
        meao_log(MEAO_LOG_INFO, NULL, "migrate", "database migrated after all");
        m->migrate_pending = false;
        return;
    }
    m->migrate_delay_ms = m->migrate_delay_ms ? m->migrate_delay_ms * 2 : 1000;
    if (m->migrate_delay_ms > BACKOFF_MAX_MS)
        m->migrate_delay_ms = BACKOFF_MAX_MS;
    m->migrate_at_ms = meao_mono_ms(m->clock) + m->migrate_delay_ms;
}

int fcgi_master_run(struct meao_config *cfg, const char *config_path, int inherited_fd,
                    bool migrate_pending)
{
    struct master *m = calloc(1, sizeof *m);
    int rc = 1;

    if (m == NULL)
        return 1;
    m->cfg = cfg;
    m->config_path = config_path;
    m->clock = meao_clock_system();
    m->self = getpid();
    m->migrate_pending = migrate_pending;
    m->migrate_delay_ms = 1000;
    m->migrate_at_ms = meao_mono_ms(m->clock) + m->migrate_delay_ms;
    meao_raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&m->sigs);
    sigaddset(&m->sigs, SIGTERM);
    sigaddset(&m->sigs, SIGINT);
    sigaddset(&m->sigs, SIGHUP);
    sigaddset(&m->sigs, SIGCHLD);
    sigaddset(&m->sigs, SIGUSR2);
    /* blocked before the first fork, so workers inherit it and read their
     * own signals from a signalfd */
    sigprocmask(SIG_BLOCK, &m->sigs, NULL);

    if (inherited_fd >= 0) {
        m->lfd = inherited_fd;
        fcntl(m->lfd, F_SETFL, fcntl(m->lfd, F_GETFL) | O_NONBLOCK);
    } else {
        m->lfd = meao_listener_open(&m->listener, cfg->fcgi_socket, "fcgi_socket",
                                    (mode_t)cfg->fcgi_socket_mode, cfg->fcgi_socket_group,
                                    (int)cfg->fcgi_backlog);
    }
    if (m->lfd < 0 || meao_pid_file_write(cfg->pid_file, &m->wrote_pid) < 0)
        goto out;

    /* GET /metrics: one counter block shared by every worker forked from here */
    meao_metrics_init(meao_routes_count + 1, meao_now_ms(m->clock));
    m->nslots = worker_count(cfg);
    meao_log(MEAO_LOG_INFO, NULL, "master_start", "listening on %s with %u worker(s)",
             inherited_fd >= 0 ? "an inherited socket" : cfg->fcgi_socket, m->nslots);
    for (unsigned i = 0; i < m->nslots; i++)
        spawn(m, i);

    for (;;) {
        int64_t now, wait_ms = 1000;
        struct timespec ts;
        siginfo_t si;
        int sig;

        reap(m);
        if (m->stopping && live_children(m) == 0)
            break;
        now = meao_mono_ms(m->clock);
        if (m->stopping) {
            if (now >= m->deadline_ms && !m->killed) {
                meao_log(MEAO_LOG_WARN, NULL, "master_kill", "%u worker(s) still running: SIGKILL",
                         live_children(m));
                signal_all(m, SIGKILL);
                m->killed = true;
            }
            if (!m->killed && m->deadline_ms - now < wait_ms)
                wait_ms = m->deadline_ms - now;
        } else {
            restart_due(m);
            retry_migration(m);
            now = meao_mono_ms(m->clock);
            for (unsigned i = 0; i < m->nslots; i++)
                if (m->slots[i].pid == 0 && m->slots[i].restart_at_ms - now < wait_ms)
                    wait_ms = m->slots[i].restart_at_ms - now;
            if (m->migrate_pending && m->migrate_at_ms - now < wait_ms)
                wait_ms = m->migrate_at_ms - now;
        }
        if (wait_ms < 1)
            wait_ms = 1;
        ts.tv_sec = wait_ms / 1000;
        ts.tv_nsec = (long)(wait_ms % 1000) * 1000000L;
        sig = sigtimedwait(&m->sigs, &si, &ts);
        switch (sig) {
        case SIGTERM:
        case SIGINT: begin_stop(m, sig); break;
        case SIGHUP:
            if (meao_log_reopen(cfg->log_file) < 0)
                meao_log(MEAO_LOG_ERROR, NULL, "log_reopen", "%s: %s", cfg->log_file,
                         strerror(errno));
            signal_all(m, SIGHUP);
            break;
        case SIGUSR2:
            if (!m->stopping)
                reload(m);
            break;
        default: /* SIGCHLD (reaped above), timeout or EINTR */ break;
        }
    }
    meao_log(MEAO_LOG_INFO, NULL, "master_exit", "all workers stopped");
    rc = 0;
out:
    if (m->lfd >= 0)
        close(m->lfd);
    meao_listener_unlink(&m->listener); /* an inherited socket was never ours */
    if (m->wrote_pid)
        unlink(cfg->pid_file);
    free(m);
    return rc;
}
