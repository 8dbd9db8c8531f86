/* meaoctl: the administrator's command line. Every subcommand works on the
 * same database and secret file as the daemons (config file, MEAO_* env, or
 * --db/--secret), prints results on stdout and one-line errors on stderr.
 *
 * Exit codes: 0 success, 1 the operation failed (not found, conflict,
 * invalid code), 2 usage error, 3 database or secrets unavailable. */
#include <errno.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/pairing.h"
#include "auth/secrets.h"
#include "auth/token.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/json.h"
#include "core/log.h"
#include "ctl/ctl.h"
#include "http/app.h"
#include "store/pairing.h"
#include "store/telegram.h"
#include "telegram/botapi.h"

#include <curl/curl.h>

enum { EX_OK = 0, EX_FAIL = 1, EX_USAGE_ = 2, EX_UNAVAIL = 3 };

struct ctl {
    struct meao_config cfg;
    struct meao_db *db;
    struct meao_secrets keys;
    bool json;
    const struct meao_clock *clock;
};

static const char usage_text[] =
    "usage: meaoctl [-c CONFIG] [--db PATH] [--secret PATH] [--json] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  init                              create the secret file and the database\n"
    "  migrate                           apply pending database migrations\n"
    "  user add [--role owner|user] [--device NAME] [--token-file PATH] [--if-no-owner] NAME\n"
    "                                    create a user and print its first access token once\n"
    "  user list                         list users\n"
    "  token list                        list tokens (metadata only, never values)\n"
    "  token revoke ID|TOKEN             revoke one token by id or by value\n"
    "  device list                       list devices\n"
    "  device revoke DEVICE_ID           revoke a device and all its tokens\n"
    "  pair code --device NAME [--owner NAME]\n"
    "                                    owner-initiated pairing: print a code for a new device\n"
    "  pair approve|deny CODE [--owner NAME]\n"
    "                                    decide a device-initiated pairing request\n"
    "  telegram set-webhook --url URL [--drop-pending]\n"
    "                                    point the bot's webhook here, with a new secret token\n"
    "  telegram delete-webhook | status  remove the webhook / show webhook, inbox, identities\n"
    "  telegram link TELEGRAM_USER_ID USER | allow TELEGRAM_USER_ID | unlink TELEGRAM_USER_ID\n"
    "  telegram list | approve CODE      Telegram identities; approve a stranger's pairing code\n"
    "  backup PATH                       consistent online copy of the database (0600)\n"
    "  restore PATH                      replace the database with a backup (gateway stopped)\n"
    "  audit export --since TIME [--until TIME] [--format jsonl] [--output PATH]\n"
    "                                    the audit trail as JSON lines\n"
    "  audit prune [--days N]            delete audit rows older than audit_retention_days\n"
    "  doctor [--nginx-conf FILE | --no-nginx]\n"
    "                                    check the installation and print what to fix\n"
    "\n"
    "Configuration comes from -c FILE (default /etc/meao/meao.conf when it exists) and\n"
    "MEAO_* environment variables. Run `meaoctl COMMAND --help` for details.\n"
    "Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 database/secrets unavailable.\n";

static int usage(FILE *out, int code)
{
    fputs(usage_text, out);
    return code;
}

static int64_t now_ms(const struct ctl *c)
{
    return meao_now_ms(c->clock);
}

/* One line on stderr, "meaoctl: ..." (ctl/common.c). */
#define fail meaoctl_fail

static int err_exit(enum meao_err e)
{
    return e == MEAO_E_DB || e == MEAO_E_UNAVAILABLE || e == MEAO_E_IO ? EX_UNAVAIL : EX_FAIL;
}

static int open_store(struct ctl *c, bool need_keys)
{
    char err[256];
    /* revocations made here close open WebSockets at once (http/app.h) */
    meao_app_revocation_hook_install(c->cfg.ratelimit_shm);
    if (meao_db_open(c->cfg.db_path, (int)c->cfg.db_busy_timeout_ms, MEAO_DB_MIGRATE, &c->db, err,
                     sizeof err) != MEAO_OK)
        return fail(EX_UNAVAIL, "%s", err);
    if (need_keys && meao_secrets_load(c->cfg.secret_file, &c->keys, err, sizeof err) != MEAO_OK)
        return fail(EX_UNAVAIL, "%s", err);
    return EX_OK;
}

static void print_json(json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2));
    if (s)
        puts(s);
    free(s);
}

static int cmd_init(struct ctl *c)
{
    char err[256];
    enum meao_err e = meao_secrets_create(c->cfg.secret_file, err, sizeof err);
    if (e == MEAO_OK)
        fprintf(stderr, "meaoctl: created secret file %s (mode 0600)\n", c->cfg.secret_file);
    else if (e == MEAO_E_CONFLICT)
        fprintf(stderr, "meaoctl: secret file %s already exists; kept\n", c->cfg.secret_file);
    else
        return fail(EX_UNAVAIL, "%s", err);
    if (open_store(c, true) != EX_OK)
        return EX_UNAVAIL;
    fprintf(stderr, "meaoctl: database %s ready (schema %d)\n", c->cfg.db_path,
            meao_db_schema_latest());
    return EX_OK;
}

static int write_token_file(const char *path, const char *token)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t n = strlen(token);
    if (fd < 0)
        return fail(EX_FAIL, "cannot write %s: %s", path, strerror(errno));
    if (fchmod(fd, 0600) != 0 || write(fd, token, n) != (ssize_t)n || write(fd, "\n", 1) != 1) {
        close(fd);
        return fail(EX_FAIL, "cannot write %s", path);
    }
    close(fd);
    return EX_OK;
}

static int cmd_user(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = {{"role", required_argument, NULL, 'r'},
                                         {"device", required_argument, NULL, 'd'},
                                         {"token-file", required_argument, NULL, 't'},
                                         {"if-no-owner", no_argument, NULL, 'n'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    enum meao_role role = MEAO_ROLE_USER;
    const char *device = "cli", *token_file = NULL;
    bool if_no_owner = false;
    struct meao_token_pair pair;
    struct meao_token_ttl ttl = {c->cfg.access_token_ttl_s * 1000,
                                 c->cfg.refresh_token_ttl_s * 1000};
    int64_t uid, owners = 0;
    enum meao_err e;
    int opt, rc;

    if (argc < 2 || strcmp(argv[1], "--help") == 0)
        return usage(argc < 2 ? stderr : stdout, argc < 2 ? EX_USAGE_ : EX_OK);
    if (strcmp(argv[1], "list") == 0) {
        sqlite3_stmt *st;
        json_t *arr = json_array();
        if ((rc = open_store(c, false)) != EX_OK)
            return rc;
        if (sqlite3_prepare_v2(meao_db_handle(c->db),
                               "SELECT id, name, role, created_ms FROM users ORDER BY id", -1, &st,
                               NULL) != SQLITE_OK)
            return fail(EX_UNAVAIL, "cannot list users");
        while (sqlite3_step(st) == SQLITE_ROW) {
            char ts[32];
            if (c->json)
                json_array_append_new(
                    arr,
                    json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t)sqlite3_column_int64(st, 0),
                              "name", sqlite3_column_text(st, 1), "role",
                              sqlite3_column_text(st, 2), "createdAt",
                              meao_iso8601(sqlite3_column_int64(st, 3), ts, sizeof ts)));
            else
                printf("%lld\t%s\t%s\n", (long long)sqlite3_column_int64(st, 0),
                       sqlite3_column_text(st, 1), sqlite3_column_text(st, 2));
        }
        sqlite3_finalize(st);
        if (c->json)
            print_json(arr);
        json_decref(arr);
        return EX_OK;
    }
    if (strcmp(argv[1], "add") != 0)
        return fail(EX_USAGE_, "unknown user subcommand \"%s\" (add, list)", argv[1]);
    argc--;
    argv++;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'r':
            if (!meao_role_parse(optarg, &role))
                return fail(EX_USAGE_, "--role must be owner or user");
            break;
        case 'd': device = optarg; break;
        case 't': token_file = optarg; break;
        case 'n': if_no_owner = true; break;
        case 'h':
            puts("usage: meaoctl user add [--role owner|user] [--device NAME] [--token-file PATH]"
                 " [--if-no-owner] NAME\n"
                 "Creates NAME and a device for it, and prints the device's access token once\n"
                 "on stdout (with --json also the refresh token). --token-file also stores it\n"
                 "(mode 0600). --if-no-owner does nothing when an owner already exists.");
            return EX_OK;
        default: return EX_USAGE_;
        }
    }
    if (optind != argc - 1)
        return fail(EX_USAGE_, "user add needs exactly one NAME");
    if (!meao_user_name_valid(argv[optind]))
        return fail(EX_USAGE_, "NAME must be 1..64 characters of A-Z a-z 0-9 . _ -");
    if (!meao_device_name_valid(device))
        return fail(EX_USAGE_, "--device must be 1..64 bytes without control characters");
    if ((rc = open_store(c, true)) != EX_OK)
        return rc;
    if (if_no_owner) {
        if (meao_user_count_owners(c->db, &owners) != MEAO_OK)
            return fail(EX_UNAVAIL, "cannot count owners");
        if (owners > 0)
            return EX_OK;
    }
    e = meao_db_begin_immediate(c->db);
    if (e == MEAO_OK)
        e = meao_user_create(c->db, argv[optind], role, now_ms(c), &uid);
    if (e == MEAO_OK)
        e = meao_device_enroll(c->db, &c->keys, uid, device, now_ms(c), &ttl, &pair);
    if (e == MEAO_OK)
        e = meao_audit(c->db, now_ms(c), NULL, 0, "user.create", argv[optind],
                       meao_role_name(role));
    if (e == MEAO_OK)
        e = meao_db_commit(c->db);
    else
        meao_db_rollback(c->db);
    if (e == MEAO_E_CONFLICT)
        return fail(EX_FAIL, "user \"%s\" already exists", argv[optind]);
    if (e != MEAO_OK)
        return fail(err_exit(e), "cannot create user: %s", meao_strerror(e));
    rc = token_file ? write_token_file(token_file, pair.access) : EX_OK;
    if (c->json) {
        json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "userId", (json_int_t)uid, "role",
                              meao_role_name(role), "deviceId", pair.device_id, "token",
                              pair.access, "refreshToken", pair.refresh, "tokenType", "Bearer");
        print_json(o);
        json_decref(o);
    } else {
        puts(pair.access);
        fprintf(stderr,
                "meaoctl: created %s \"%s\" (id %lld, device %s); the token above is shown once\n",
                meao_role_name(role), argv[optind], (long long)uid, pair.device_id);
    }
    sodium_memzero(&pair, sizeof pair);
    return rc;
}

static int cmd_token(struct ctl *c, int argc, char **argv)
{
    int rc;
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        puts("usage: meaoctl token list | meaoctl token revoke ID|TOKEN");
        return argc < 2 ? EX_USAGE_ : EX_OK;
    }
    if (strcmp(argv[1], "list") == 0) {
        json_t *arr;
        size_t i;
        json_t *t;
        if ((rc = open_store(c, false)) != EX_OK)
            return rc;
        if (meao_tokens_list(c->db, now_ms(c), &arr) != MEAO_OK)
            return fail(EX_UNAVAIL, "cannot list tokens");
        if (c->json) {
            print_json(arr);
        } else {
            printf("ID\tKIND\tUSER\tDEVICE\tSTATE\tEXPIRES\n");
            json_array_foreach(arr, i, t)
            {
                printf("%lld\t%s\t%s\t%s\t%s\t%s\n",
                       (long long)json_integer_value(json_object_get(t, "id")),
                       meao_json_str(t, "kind"), meao_json_str(t, "userName"),
                       meao_json_str(t, "deviceId"), meao_json_str(t, "state"),
                       meao_json_str(t, "expiresAt"));
            }
        }
        json_decref(arr);
        return EX_OK;
    }
    if (strcmp(argv[1], "revoke") == 0) {
        int64_t n = 0;
        enum meao_err e;
        if (argc != 3)
            return fail(EX_USAGE_, "token revoke needs one ID or TOKEN");
        if ((rc = open_store(c, true)) != EX_OK)
            return rc;
        if (meao_token_wellformed(argv[2], MEAO_TOKEN_ACCESS) ||
            meao_token_wellformed(argv[2], MEAO_TOKEN_REFRESH)) {
            e = meao_revoke_token(c->db, &c->keys, NULL, argv[2], now_ms(c), &n);
        } else {
            char *end;
            long long id = strtoll(argv[2], &end, 10);
            if (*end || id <= 0)
                return fail(EX_USAGE_, "not a token id or a well-formed token");
            e = meao_revoke_token_id(c->db, id, now_ms(c), &n);
        }
        if (e == MEAO_E_NOT_FOUND)
            return fail(EX_FAIL, "no such active token");
        if (e != MEAO_OK)
            return fail(err_exit(e), "revoke failed: %s", meao_strerror(e));
        (void)meao_audit(c->db, now_ms(c), NULL, 0, "token.revoke", "cli", NULL);
        fprintf(stderr, "meaoctl: revoked %lld token(s)\n", (long long)n);
        return EX_OK;
    }
    return fail(EX_USAGE_, "unknown token subcommand \"%s\" (list, revoke)", argv[1]);
}

static int cmd_device(struct ctl *c, int argc, char **argv)
{
    int rc;
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        puts("usage: meaoctl device list | meaoctl device revoke DEVICE_ID");
        return argc < 2 ? EX_USAGE_ : EX_OK;
    }
    if (strcmp(argv[1], "list") == 0) {
        json_t *arr, *d;
        size_t i;
        if ((rc = open_store(c, false)) != EX_OK)
            return rc;
        if (meao_devices_list(c->db, NULL, &arr) != MEAO_OK)
            return fail(EX_UNAVAIL, "cannot list devices");
        if (c->json) {
            print_json(arr);
        } else {
            printf("DEVICE\tUSER\tNAME\tSTATE\tCREATED\n");
            json_array_foreach(arr, i, d)
            {
                printf("%s\t%s\t%s\t%s\t%s\n", meao_json_str(d, "deviceId"),
                       meao_json_str(d, "userName"), meao_json_str(d, "name"),
                       json_is_true(json_object_get(d, "revoked")) ? "revoked" : "active",
                       meao_json_str(d, "createdAt"));
            }
        }
        json_decref(arr);
        return EX_OK;
    }
    if (strcmp(argv[1], "revoke") == 0) {
        int64_t n = 0;
        enum meao_err e;
        if (argc != 3)
            return fail(EX_USAGE_, "device revoke needs one DEVICE_ID");
        if ((rc = open_store(c, false)) != EX_OK)
            return rc;
        e = meao_revoke_device(c->db, NULL, argv[2], now_ms(c), &n);
        if (e == MEAO_E_NOT_FOUND)
            return fail(EX_FAIL, "no such device");
        if (e != MEAO_OK)
            return fail(err_exit(e), "revoke failed: %s", meao_strerror(e));
        (void)meao_audit(c->db, now_ms(c), NULL, 0, "device.revoke", argv[2], "cli");
        fprintf(stderr, "meaoctl: revoked device %s (%lld token(s))\n", argv[2], (long long)n);
        return EX_OK;
    }
    return fail(EX_USAGE_, "unknown device subcommand \"%s\" (list, revoke)", argv[1]);
}

/* The owner the CLI acts as: --owner NAME, or the only owner there is. */
static int pick_owner(struct ctl *c, const char *name, int64_t *out)
{
    struct meao_user u;
    int64_t owners = 0;
    if (name) {
        if (meao_user_get_by_name(c->db, name, &u) != MEAO_OK || u.role != MEAO_ROLE_OWNER)
            return fail(EX_FAIL, "no owner named \"%s\"", name);
        *out = u.id;
        return EX_OK;
    }
    if (meao_user_count_owners(c->db, &owners) != MEAO_OK)
        return fail(EX_UNAVAIL, "cannot read users");
    if (owners != 1)
        return fail(EX_USAGE_, owners ? "several owners exist: pass --owner NAME"
                                      : "no owner yet: run meaoctl user add --role owner NAME");
    {
        sqlite3_stmt *st;
        int rc = EX_FAIL;
        if (sqlite3_prepare_v2(meao_db_handle(c->db), "SELECT id FROM users WHERE role = 'owner'",
                               -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = EX_OK;
        }
        sqlite3_finalize(st);
        return rc;
    }
}

static int cmd_pair(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = {{"device", required_argument, NULL, 'd'},
                                         {"owner", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *device = NULL, *owner_name = NULL, *sub;
    int64_t owner;
    int opt, rc;
    enum meao_err e;

    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        puts("usage: meaoctl pair code --device NAME [--owner NAME]\n"
             "       meaoctl pair approve CODE [--owner NAME]\n"
             "       meaoctl pair deny CODE [--owner NAME]");
        return argc < 2 ? EX_USAGE_ : EX_OK;
    }
    sub = argv[1];
    argc--;
    argv++;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'd': device = optarg; break;
        case 'o': owner_name = optarg; break;
        case 'h':
            puts("usage: meaoctl pair code --device NAME | pair approve|deny CODE [--owner NAME]");
            return EX_OK;
        default: return EX_USAGE_;
        }
    }
    if (strcmp(sub, "code") == 0) {
        struct meao_pair_created pc;
        if (device == NULL || optind != argc)
            return fail(EX_USAGE_, "pair code needs --device NAME and nothing else");
        if (!meao_device_name_valid(device))
            return fail(EX_USAGE_, "--device must be 1..64 bytes without control characters");
        if ((rc = open_store(c, true)) != EX_OK || (rc = pick_owner(c, owner_name, &owner)))
            return rc;
        e = meao_pair_create_for_owner(c->db, &c->keys, owner, device, now_ms(c), &pc);
        if (e != MEAO_OK)
            return fail(err_exit(e), "cannot create a pairing code: %s", meao_strerror(e));
        puts(pc.code);
        fprintf(stderr, "meaoctl: pairing code for \"%s\", valid %d minutes, single use\n", device,
                MEAO_PAIR_TTL_MS / 60000);
        return EX_OK;
    }
    if (strcmp(sub, "approve") == 0 || strcmp(sub, "deny") == 0) {
        char code[MEAO_PAIR_CODE_LEN + 1], name[MEAO_NAME_MAX + 1];
        bool approve = strcmp(sub, "approve") == 0;
        if (optind != argc - 1)
            return fail(EX_USAGE_, "pair %s needs one CODE", sub);
        if (!meao_pair_code_normalise(argv[optind], code))
            return fail(EX_USAGE_, "CODE must be 6 characters from %s", meao_pair_alphabet);
        if ((rc = open_store(c, true)) != EX_OK || (rc = pick_owner(c, owner_name, &owner)))
            return rc;
        e = meao_pair_decide(c->db, &c->keys, owner, code, approve, now_ms(c), name);
        if (e == MEAO_E_PAIR_INVALID_CODE)
            return fail(EX_FAIL, "no open pairing request with that code");
        if (e != MEAO_OK)
            return fail(err_exit(e), "pairing failed: %s", meao_strerror(e));
        fprintf(stderr, "meaoctl: %s pairing of \"%s\"\n", approve ? "approved" : "denied", name);
        return EX_OK;
    }
    return fail(EX_USAGE_, "unknown pair subcommand \"%s\" (code, approve, deny)", sub);
}

/* ---- telegram ---- */

static const char telegram_usage[] =
    "usage: meaoctl telegram set-webhook --url URL [--drop-pending]\n"
    "       meaoctl telegram delete-webhook\n"
    "       meaoctl telegram status\n"
    "       meaoctl telegram link TELEGRAM_USER_ID USER\n"
    "       meaoctl telegram allow TELEGRAM_USER_ID\n"
    "       meaoctl telegram unlink TELEGRAM_USER_ID\n"
    "       meaoctl telegram list\n"
    "       meaoctl telegram approve CODE\n"
    "\n"
    "set-webhook draws a new secret token, calls the Bot API's setWebhook with it\n"
    "(allowed_updates: message, callback_query) and stores only its keyed hash; the\n"
    "webhook then refuses every delivery without it. URL must be https (plain http\n"
    "only to a loopback host, for tests). link maps a Telegram user id to an existing\n"
    "meao user; allow maps it to the user \"tg<id>\" (created, role user); approve\n"
    "accepts a pairing code a stranger got under telegram_dm_policy = pairing.\n"
    "The bot token comes from telegram_bot_token (MEAO_TELEGRAM_BOT_TOKEN).\n";

static struct meao_tg_bot *ctl_bot(struct ctl *c)
{
    struct meao_tg_bot *b;
    if (c->cfg.telegram_bot_token == NULL || c->cfg.telegram_bot_token[0] == '\0') {
        fail(EX_USAGE_, "telegram_bot_token is not set (MEAO_TELEGRAM_BOT_TOKEN)");
        return NULL;
    }
    b = meao_tg_bot_new(&(struct meao_tg_bot_opts){.base = c->cfg.telegram_api_base,
                                                   .token = c->cfg.telegram_bot_token,
                                                   .timeout_ms = c->cfg.telegram_api_timeout_ms,
                                                   .retry_max_ms = 5000,
                                                   .clock = c->clock});
    if (b == NULL)
        fail(EX_FAIL, "cannot create the Bot API client");
    return b;
}

/* https, or http to a loopback host (tests, a local Bot API server). */
static bool webhook_url_ok(const char *u)
{
    static const char *const loopback[] = {"http://127.0.0.1", "http://localhost", "http://[::1]"};
    if (strlen(u) > 2000 || strncmp(u, "https://", 8) == 0)
        return strlen(u) > 8 && strlen(u) <= 2000;
    for (size_t i = 0; i < sizeof loopback / sizeof loopback[0]; i++) {
        size_t n = strlen(loopback[i]);
        if (strncmp(u, loopback[i], n) == 0 && (u[n] == ':' || u[n] == '/' || u[n] == '\0'))
            return true;
    }
    return false;
}

static bool parse_tg_id(const char *s, int64_t *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v <= 0)
        return false;
    *out = v;
    return true;
}

static int tg_set_webhook(struct ctl *c, const char *url, bool drop)
{
    unsigned char raw[32];
    char secret[64], hash[MEAO_TG_SECRET_HEX + 1], why[256];
    struct meao_tg_bot *b;
    json_t *p;
    enum meao_err e;
    int rc;

    if (!webhook_url_ok(url))
        return fail(EX_USAGE_, "--url must be an https URL (http only to a loopback host)");
    if ((rc = open_store(c, true)) != EX_OK)
        return rc;
    if ((b = ctl_bot(c)) == NULL)
        return EX_FAIL;
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(secret, sizeof secret, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    p = json_pack("{s:s, s:s, s:[s, s], s:b}", "url", url, "secret_token", secret,
                  "allowed_updates", "message", "callback_query", "drop_pending_updates", drop);
    /* Telegram first: until it has the new secret, the old one stays valid here */
    e = p ? meao_tg_bot_call(b, "setWebhook", p, MEAO_TG_RETRY, NULL, NULL, why, sizeof why)
          : MEAO_E_NOMEM;
    json_decref(p);
    meao_tg_bot_free(b);
    if (e != MEAO_OK) {
        sodium_memzero(secret, sizeof secret);
        return fail(EX_FAIL, "setWebhook failed: %s", why);
    }
    meao_tg_secret_hash(&c->keys, secret, strlen(secret), hash);
    sodium_memzero(secret, sizeof secret);
    e = meao_tg_state_set(c->db, "webhook_secret_hash", hash, now_ms(c));
    if (e == MEAO_OK)
        e = meao_tg_state_set(c->db, "webhook_url", url, now_ms(c));
    if (e == MEAO_OK)
        e = meao_audit(c->db, now_ms(c), NULL, 0, "telegram.set_webhook", url, NULL);
    if (e != MEAO_OK)
        return fail(err_exit(e),
                    "the webhook is set but its secret could not be stored: %s; "
                    "run set-webhook again",
                    meao_strerror(e));
    fprintf(stderr, "meaoctl: webhook set to %s (new secret token stored as a keyed hash)\n", url);
    return EX_OK;
}

static int tg_delete_webhook(struct ctl *c)
{
    struct meao_tg_bot *b;
    char why[256];
    enum meao_err e;
    int rc;
    if ((rc = open_store(c, false)) != EX_OK)
        return rc;
    if ((b = ctl_bot(c)) == NULL)
        return EX_FAIL;
    e = meao_tg_bot_call(b, "deleteWebhook", NULL, MEAO_TG_RETRY, NULL, NULL, why, sizeof why);
    meao_tg_bot_free(b);
    if (e != MEAO_OK)
        return fail(EX_FAIL, "deleteWebhook failed: %s", why);
    e = meao_tg_state_set(c->db, "webhook_secret_hash", NULL, now_ms(c));
    if (e == MEAO_OK)
        e = meao_tg_state_set(c->db, "webhook_url", NULL, now_ms(c));
    if (e == MEAO_OK)
        e = meao_audit(c->db, now_ms(c), NULL, 0, "telegram.delete_webhook", NULL, NULL);
    if (e != MEAO_OK)
        return fail(err_exit(e), "cannot clear the stored webhook: %s", meao_strerror(e));
    fprintf(stderr, "meaoctl: webhook deleted; deliveries are refused from now on\n");
    return EX_OK;
}

static int tg_status(struct ctl *c)
{
    char url[MEAO_TG_STATE_VALUE_MAX], hash[MEAO_TG_SECRET_HEX + 1];
    json_t *o, *counts = NULL, *ids = NULL, *info = NULL;
    enum meao_err e;
    int rc;

    if ((rc = open_store(c, false)) != EX_OK)
        return rc;
    e = meao_tg_inbox_counts(c->db, &counts);
    if (e == MEAO_OK)
        e = meao_tg_identities_list(c->db, &ids);
    if (e != MEAO_OK) {
        json_decref(counts);
        return fail(err_exit(e), "cannot read the Telegram tables: %s", meao_strerror(e));
    }
    o = json_pack("{s:s, s:b, s:o, s:I}", "policy", c->cfg.telegram_dm_policy, "tokenSet",
                  c->cfg.telegram_bot_token[0] != '\0', "inbox", counts, "identities",
                  (json_int_t)json_array_size(ids));
    if (meao_tg_state_get(c->db, "webhook_url", url, sizeof url) == MEAO_OK)
        json_object_set_new(o, "webhookUrl", json_string(url));
    json_object_set_new(o, "secretSet",
                        json_boolean(meao_tg_state_get(c->db, "webhook_secret_hash", hash,
                                                       sizeof hash) == MEAO_OK));
    if (c->cfg.telegram_bot_token[0]) {
        struct meao_tg_bot *b = ctl_bot(c);
        char why[256];
        if (b && meao_tg_bot_call(b, "getWebhookInfo", NULL, MEAO_TG_ONCE, &info, NULL, why,
                                  sizeof why) == MEAO_OK)
            json_object_set_new(o, "telegram", info);
        else
            json_object_set_new(o, "telegramError", json_string(b ? why : "no client"));
        meao_tg_bot_free(b);
    }
    if (c->json) {
        print_json(o);
    } else {
        const json_t *tg = json_object_get(o, "telegram");
        printf("policy\t%s\nwebhook\t%s\nsecret\t%s\nidentities\t%zu\n", c->cfg.telegram_dm_policy,
               meao_json_str(o, "webhookUrl") ? meao_json_str(o, "webhookUrl") : "(none)",
               json_is_true(json_object_get(o, "secretSet")) ? "set" : "not set",
               json_array_size(ids));
        printf("inbox\tnew %lld, working %lld, done %lld, ignored %lld, failed %lld\n",
               (long long)json_integer_value(json_object_get(counts, "new")),
               (long long)json_integer_value(json_object_get(counts, "working")),
               (long long)json_integer_value(json_object_get(counts, "done")),
               (long long)json_integer_value(json_object_get(counts, "ignored")),
               (long long)json_integer_value(json_object_get(counts, "failed")));
        if (tg)
            printf("telegram\tpending %lld%s%s\n",
                   (long long)json_integer_value(json_object_get(tg, "pending_update_count")),
                   meao_json_str(tg, "last_error_message") ? ", last error: " : "",
                   meao_json_str(tg, "last_error_message") ? meao_json_str(tg, "last_error_message")
                                                           : "");
        else if (meao_json_str(o, "telegramError"))
            printf("telegram\t%s\n", meao_json_str(o, "telegramError"));
    }
    json_decref(ids);
    json_decref(o);
    return EX_OK;
}

static int tg_identities(struct ctl *c)
{
    json_t *ids = NULL, *v;
    size_t i;
    int rc;
    enum meao_err e;
    if ((rc = open_store(c, false)) != EX_OK)
        return rc;
    e = meao_tg_identities_list(c->db, &ids);
    if (e != MEAO_OK)
        return fail(err_exit(e), "cannot list identities: %s", meao_strerror(e));
    if (c->json) {
        print_json(ids);
    } else {
        printf("TELEGRAM_ID\tSTATUS\tUSER\tROLE\n");
        json_array_foreach(ids, i, v)
        {
            printf("%lld\t%s\t%s\t%s\n",
                   (long long)json_integer_value(json_object_get(v, "telegramUserId")),
                   meao_json_str(v, "status"),
                   meao_json_str(v, "user") ? meao_json_str(v, "user") : "-",
                   meao_json_str(v, "role") ? meao_json_str(v, "role") : "-");
        }
    }
    json_decref(ids);
    return EX_OK;
}

static int cmd_telegram(struct ctl *c, int argc, char **argv)
{
    const char *sub;
    int64_t tg;
    int rc;
    enum meao_err e;

    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs(telegram_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EX_USAGE_ : EX_OK;
    }
    sub = argv[1];
    if (strcmp(sub, "set-webhook") == 0) {
        const char *url = NULL;
        bool drop = false;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
                url = argv[++i];
            else if (strcmp(argv[i], "--drop-pending") == 0)
                drop = true;
            else
                return fail(EX_USAGE_, "telegram set-webhook: unexpected \"%s\"", argv[i]);
        }
        if (url == NULL)
            return fail(EX_USAGE_, "telegram set-webhook needs --url URL");
        return tg_set_webhook(c, url, drop);
    }
    if (strcmp(sub, "delete-webhook") == 0 && argc == 2)
        return tg_delete_webhook(c);
    if (strcmp(sub, "status") == 0 && argc == 2)
        return tg_status(c);
    if (strcmp(sub, "list") == 0 && argc == 2)
        return tg_identities(c);
    if ((strcmp(sub, "allow") == 0 || strcmp(sub, "unlink") == 0) && argc == 3) {
        if (!parse_tg_id(argv[2], &tg))
            return fail(EX_USAGE_, "TELEGRAM_USER_ID must be a positive integer");
        if ((rc = open_store(c, false)) != EX_OK)
            return rc;
        if (strcmp(sub, "allow") == 0) {
            struct meao_user u;
            e = meao_tg_allow(c->db, tg, 0, now_ms(c), &u);
            if (e == MEAO_OK)
                fprintf(stderr, "meaoctl: Telegram user %lld may talk to the assistant as \"%s\"\n",
                        (long long)tg, u.name);
        } else {
            e = meao_tg_unlink(c->db, tg, now_ms(c));
            if (e == MEAO_OK)
                fprintf(stderr, "meaoctl: Telegram user %lld unlinked\n", (long long)tg);
        }
        if (e == MEAO_E_NOT_FOUND)
            return fail(EX_FAIL, "Telegram user %lld is not known", (long long)tg);
        return e == MEAO_OK ? EX_OK : fail(err_exit(e), "%s failed: %s", sub, meao_strerror(e));
    }
    if (strcmp(sub, "link") == 0 && argc == 4) {
        struct meao_user u;
        if (!parse_tg_id(argv[2], &tg))
            return fail(EX_USAGE_, "TELEGRAM_USER_ID must be a positive integer");
        if ((rc = open_store(c, false)) != EX_OK)
            return rc;
        e = meao_user_get_by_name(c->db, argv[3], &u);
        if (e == MEAO_E_NOT_FOUND)
            return fail(EX_FAIL, "no user named \"%s\"", argv[3]);
        if (e == MEAO_OK)
            e = meao_tg_link(c->db, tg, u.id, 0, now_ms(c));
        if (e != MEAO_OK)
            return fail(err_exit(e), "link failed: %s", meao_strerror(e));
        fprintf(stderr, "meaoctl: Telegram user %lld linked to \"%s\" (%s)\n", (long long)tg,
                u.name, meao_role_name(u.role));
        return EX_OK;
    }
    if (strcmp(sub, "approve") == 0 && argc == 3) {
        int64_t owner;
        if ((rc = open_store(c, true)) != EX_OK || (rc = pick_owner(c, NULL, &owner)))
            return rc;
        e = meao_tg_pair_approve(c->db, &c->keys, argv[2], owner, now_ms(c), &tg);
        if (e == MEAO_E_NOT_FOUND)
            return fail(EX_FAIL, "no open Telegram pairing with that code");
        if (e != MEAO_OK)
            return fail(err_exit(e), "approve failed: %s", meao_strerror(e));
        fprintf(stderr, "meaoctl: Telegram user %lld approved\n", (long long)tg);
        return EX_OK;
    }
    return fail(EX_USAGE_,
                "unknown or incomplete telegram subcommand \"%s\"; see meaoctl "
                "telegram --help",
                sub);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"db", required_argument, NULL, 'D'},
                                         {"secret", required_argument, NULL, 'S'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    struct ctl c;
    const char *config = NULL, *db = NULL, *secret = NULL;
    char err[256];
    int opt, rc;

    umask(027); /* database and token files: owner and the service group only */
    memset(&c, 0, sizeof c);
    c.clock = meao_clock_system();
    if (meao_lib_init() != 0)
        return fail(EX_UNAVAIL, "libsodium failed to initialise");
    meao_log_init("meaoctl", MEAO_LOG_WARN);
    while ((opt = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'D': db = optarg; break;
        case 'S': secret = optarg; break;
        case 'j': c.json = true; break;
        case 'h': return usage(stdout, EX_OK);
        case 'V': puts("meaoctl " MEAO_VERSION); return EX_OK;
        default: return usage(stderr, EX_USAGE_);
        }
    }
    if (optind >= argc)
        return usage(stderr, EX_USAGE_);
    if (config == NULL && access("/etc/meao/meao.conf", R_OK) == 0)
        config = "/etc/meao/meao.conf";
    if (meao_config_load(&c.cfg, config, err, sizeof err) != 0)
        return fail(EX_USAGE_, "%s", err);
    if ((db && meao_config_set(&c.cfg, "db_path", db, err, sizeof err) != 0) ||
        (secret && meao_config_set(&c.cfg, "secret_file", secret, err, sizeof err) != 0))
        return fail(EX_USAGE_, "%s", err);
    argc -= optind;
    argv += optind;
    if (strcmp(argv[0], "init") == 0)
        rc = cmd_init(&c);
    else if (strcmp(argv[0], "migrate") == 0)
        rc = open_store(&c, false);
    else if (strcmp(argv[0], "user") == 0)
        rc = cmd_user(&c, argc, argv);
    else if (strcmp(argv[0], "token") == 0)
        rc = cmd_token(&c, argc, argv);
    else if (strcmp(argv[0], "device") == 0)
        rc = cmd_device(&c, argc, argv);
    else if (strcmp(argv[0], "pair") == 0)
        rc = cmd_pair(&c, argc, argv);
    else if (strcmp(argv[0], "telegram") == 0) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return fail(EX_UNAVAIL, "libcurl failed to initialise");
        rc = cmd_telegram(&c, argc, argv);
        curl_global_cleanup();
    } else if (strcmp(argv[0], "backup") == 0)
        rc = meaoctl_backup(&c.cfg, argc, argv);
    else if (strcmp(argv[0], "restore") == 0)
        rc = meaoctl_restore(&c.cfg, argc, argv);
    else if (strcmp(argv[0], "audit") == 0)
        rc = meaoctl_audit(&c.cfg, argc, argv);
    else if (strcmp(argv[0], "doctor") == 0)
        rc = meaoctl_doctor(&c.cfg, config, argc, argv);
    else
        rc = fail(EX_USAGE_, "unknown command \"%s\"; see meaoctl --help", argv[0]);
    meao_db_close(c.db);
    meao_secrets_wipe(&c.keys);
    meao_config_free(&c.cfg);
    return rc;
}
