/* meao-fcgi: the gateway's FastCGI responder (master + epoll workers), and a
 * plain CGI program when a web server runs it as one (GATEWAY_INTERFACE set
 * and no listening socket on stdin). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cgi.h"
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
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    bool check_only = false, inherited, cgi_mode;
    struct meao_config cfg;
    char err[256];
    int c, rc;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'C': check_only = true; break;
        case 'V': printf("meao-fcgi %s\n", MEAO_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (meao_config_load(&cfg, config_path, err, sizeof err) < 0) {
        fprintf(stderr, "meao-fcgi: %s\n", err);
        meao_config_free(&cfg);
        return 2;
    }
    if (check_only) {
        printf("config ok\n");
        meao_config_free(&cfg);
        return 0;
    }

    inherited = stdin_is_listening_socket();
    cgi_mode = !inherited && getenv("GATEWAY_INTERFACE") != NULL;
    meao_log_init(cgi_mode ? "meao-cgi" : MEAO_FCGI_PROGRAM, cfg.log_level);
    if (meao_log_reopen(cfg.log_file) < 0) {
        fprintf(stderr, "meao-fcgi: log_file %s: %s\n", cfg.log_file, strerror(errno));
        meao_config_free(&cfg);
        return 1;
    }
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
