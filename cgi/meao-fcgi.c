/* meao-fcgi: the gateway's FastCGI responder (master + epoll workers), and a
 * plain CGI program when a web server runs it as one (GATEWAY_INTERFACE set
 * and no listening socket on stdin). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cgi.h"
#include "core/daemon.h"
#include "core/log.h"

extern char **environ;

static void usage(FILE *out)
{
    fprintf(out, "usage: meao-fcgi [-c|--config FILE] [--check-config] [--version] [-h|--help]\n"
                 "\n"
                 "FastCGI responder of the meao gateway. Listens on fcgi_socket (a unix socket)\n"
                 "with fcgi_workers worker processes (0 = one per CPU) and serves nginx's\n"
                 "FastCGI requests. Settings come from FILE, then MEAO_<KEY> environment\n"
                 "variables (e.g. MEAO_FCGI_SOCKET, MEAO_DB_PATH).\n"
                 "\n"
                 "  -c, --config FILE  configuration file (key = value lines)\n"
                 "      --check-config load the configuration, print \"config ok\" and exit\n"
                 "      --version      print the version and exit\n"
                 "  -h, --help         this text\n"
                 "\n"
                 "Signals: TERM/INT stop gracefully, HUP reopens the log file, USR2 re-reads\n"
                 "the configuration and replaces the workers without dropping requests.\n"
                 "Run by a web server as a CGI program (GATEWAY_INTERFACE set), it answers\n"
                 "the one request in its environment and exits.\n");
}

/* spawn-fcgi / socket activation hand the listening socket over as fd 0. */
static bool stdin_is_listening_socket(void)
{
    int v = 0;
    socklen_t len = sizeof v;
    return getsockopt(STDIN_FILENO, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v;
}

int main(int argc, char **argv)
{
    bool inherited, cgi_mode;
    struct meao_config cfg;
    const char *config_path;
    int rc = meao_daemon_start(argc, argv, MEAO_FCGI_PROGRAM, usage, &cfg, &config_path);

    if (rc >= 0)
        return rc;
    inherited = stdin_is_listening_socket();
    cgi_mode = !inherited && getenv("GATEWAY_INTERFACE") != NULL;
    if (cgi_mode)
        meao_log_init("meao-cgi", cfg.log_level);
    if (meao_lib_init() < 0) {
        meao_log(MEAO_LOG_ERROR, NULL, "init", "library initialisation failed");
        meao_config_free(&cfg);
        return 1;
    }
    if (cgi_mode) {
        /* one request per process: the schema is the master's or meaoctl's job */
        rc = cgi_main(&cfg, environ, STDIN_FILENO, stdout);
    } else {
        /* A database that cannot be migrated must not keep the responder
         * down: /health still answers, /ready reports the database, and the
         * master retries the migration in the background. */
        bool pending = cgi_migrate(&cfg, (int)cfg.db_busy_timeout_ms) < 0;
        if (pending)
            meao_log(MEAO_LOG_WARN, NULL, "migrate",
                     "starting without the migrations; retrying in the background");
        rc = fcgi_master_run(&cfg, config_path, inherited ? STDIN_FILENO : -1, pending);
    }
    meao_config_free(&cfg);
    return rc;
}
