/* meao-ws: the program websocketd runs for each /ws connection. It also
 * works typed at by hand: `MEAO_CONFIG=... meao-ws -c FILE`, then type
 * {"type":"auth","token":"meao_at_..."} and {"type":"message","content":"hi"}. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/daemon.h"
#include "core/log.h"
#include "store/db.h"
#include "ws/ws.h"

static volatile int stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: meao-ws [-c|--config FILE] [--check-config] [--version] [-h|--help]\n"
                 "\n"
                 "The meao gateway's WebSocket program: websocketd runs it once per /ws\n"
                 "connection, with the client's frames on stdin (one JSON object per line)\n"
                 "and writes its frames to stdout. It authenticates from HTTP_AUTHORIZATION\n"
                 "or a first {\"type\":\"auth\",\"token\"} frame and relays turns to the\n"
                 "orchestrator. Settings come from FILE, then MEAO_<KEY> environment\n"
                 "variables; log lines go to log_file (stderr when empty).\n"
                 "\n"
                 "  -c, --config FILE  configuration file (key = value lines)\n"
                 "      --check-config load the configuration, print \"config ok\" and exit\n"
                 "      --version      print the version and exit\n"
                 "  -h, --help         this text\n");
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    struct meao_config cfg;
    struct meao_app app;
    struct meao_ws_env env;
    int rc = meao_daemon_start(argc, argv, "meao-ws", usage, &cfg, NULL);

    if (rc >= 0)
        return rc;
    /* websocketd closes stdin first, then sends INT, TERM and KILL: a signal
     * only interrupts the wait, the loop ends and the slot is given back */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    meao_db_low_memory(); /* one process per connection: keep each small */
    if (meao_lib_init() < 0 ||
        meao_app_init(&app, &cfg, meao_clock_system(), "meao-ws") != MEAO_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "init", "initialisation failed");
        meao_config_free(&cfg);
        return 1;
    }
    env = (struct meao_ws_env){
        .authorization = getenv("HTTP_AUTHORIZATION"),
        .request_id = getenv("HTTP_X_REQUEST_ID"),
        .real_ip = getenv("HTTP_X_REAL_IP") ? getenv("HTTP_X_REAL_IP") : getenv("REMOTE_ADDR"),
        .query = getenv("QUERY_STRING"),
    };
    rc = meao_ws_run(&app, &env, STDIN_FILENO, STDOUT_FILENO, &stop_flag);
    meao_app_fini(&app);
    meao_config_free(&cfg);
    return rc;
}
