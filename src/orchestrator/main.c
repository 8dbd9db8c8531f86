/* meao-orchestrator: the reference orchestrator daemon (src/orch/PROTOCOL.md).
 * A thin adapter: options and configuration, logs, then the server. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "http/app.h"
#include "orchestrator/server.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: meao-orchestrator [-c|--config FILE] [--check-config] [--version] [-h|--help]\n"
            "\n"
            "The meao orchestrator: serves turns to the gateway over the unix socket\n"
            "orchestrator_socket (JSON lines, src/orch/PROTOCOL.md), calls the model\n"
            "provider (provider = echo | anthropic | openai) and runs approval-gated tools\n"
            "(bash, read_file, write_file) inside each session's work directory under\n"
            "workspace_root. Settings come from FILE, then MEAO_<KEY> environment variables\n"
            "(e.g. MEAO_ORCHESTRATOR_SOCKET, MEAO_PROVIDER_API_KEY).\n"
            "\n"
            "  -c, --config FILE  configuration file (key = value lines)\n"
            "      --check-config load the configuration, print \"config ok\" and exit\n"
            "      --version      print the version and exit\n"
            "  -h, --help         this text\n"
            "\n"
            "Signals: TERM/INT stop gracefully (running turns get error SHUTTING_DOWN),\n"
            "HUP reopens the log file.\n");
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
    bool check_only = false;
    struct meao_config cfg;
    char err[256];
    int c, rc;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'C': check_only = true; break;
        case 'V': printf("meao-orchestrator %s\n", MEAO_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (meao_config_load(&cfg, config_path, err, sizeof err) < 0) {
        fprintf(stderr, "meao-orchestrator: %s\n", err);
        meao_config_free(&cfg);
        return 2;
    }
    if (check_only) {
        printf("config ok\n");
        meao_config_free(&cfg);
        return 0;
    }
    meao_log_init("meao-orchestrator", cfg.log_level);
    if (meao_log_reopen(cfg.log_file) < 0) {
        fprintf(stderr, "meao-orchestrator: log_file %s: %s\n", cfg.log_file, strerror(errno));
        meao_config_free(&cfg);
        return 1;
    }
    /* both before any thread: libsodium (ids) and libcurl (providers) */
    if (meao_lib_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "init", "library initialisation failed");
        meao_config_free(&cfg);
        return 1;
    }
    rc = meao_server_run(&cfg);
    curl_global_cleanup();
    meao_config_free(&cfg);
    return rc;
}
