/* meao-orchestrator: the reference orchestrator daemon (src/orch/PROTOCOL.md).
 * A thin adapter: options and configuration, logs, then the server. */
#include <curl/curl.h>
#include <stdio.h>

#include "core/config.h"
#include "core/daemon.h"
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
    struct meao_config cfg;
    int rc = meao_daemon_start(argc, argv, "meao-orchestrator", usage, &cfg, NULL);

    if (rc >= 0)
        return rc;
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
