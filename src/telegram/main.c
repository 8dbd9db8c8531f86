/* meao-telegram: the Telegram worker (src/telegram/worker.h). A thin adapter:
 * options and configuration, logs, signals, then the worker loop. */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/daemon.h"
#include "core/log.h"
#include "http/app.h"
#include "telegram/worker.h"

static int stop_flag;
static int reopen_flag;

static void on_stop(int sig)
{
    (void)sig;
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELEASE);
}

static void on_hup(int sig)
{
    (void)sig;
    __atomic_store_n(&reopen_flag, 1, __ATOMIC_RELEASE);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: meao-telegram [-c|--config FILE] [--check-config] [--version] [-h|--help]\n"
            "\n"
            "The meao Telegram worker: serves the updates the webhook (POST /telegram/webhook)\n"
            "stored in the database, runs their turns on the orchestrator and answers through\n"
            "the Bot API (telegram_api_base). Needs telegram_bot_token (prefer the\n"
            "MEAO_TELEGRAM_BOT_TOKEN environment variable). Settings come from FILE, then\n"
            "MEAO_<KEY> environment variables. Set the webhook up with\n"
            "`meaoctl telegram set-webhook --url URL`.\n"
            "\n"
            "  -c, --config FILE  configuration file (key = value lines)\n"
            "      --check-config load the configuration, print \"config ok\" and exit\n"
            "      --version      print the version and exit\n"
            "  -h, --help         this text\n"
            "\n"
            "Signals: TERM/INT stop (running turns are cancelled and their updates kept for\n"
            "the next start), HUP reopens the log file.\n");
}

int main(int argc, char **argv)
{
    struct meao_config cfg;
    struct sigaction sa;
    int rc = meao_daemon_start(argc, argv, "meao-telegram", usage, &cfg, NULL);

    if (rc >= 0)
        return rc;
    if (meao_lib_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        meao_log(MEAO_LOG_ERROR, NULL, "init", "library initialisation failed");
        meao_config_free(&cfg);
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    rc = meao_tg_worker_run(&cfg, &stop_flag, &reopen_flag);
    curl_global_cleanup();
    meao_config_free(&cfg);
    return rc;
}
