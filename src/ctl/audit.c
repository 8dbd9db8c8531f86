/* meaoctl audit export | prune: the audit trail leaves the box only through
 * the command line (API.md: it is never exposed over HTTP). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/json.h"
#include "ctl/ctl.h"
#include "store/db.h"
#include "store/identity.h"

#define PRUNE_BATCH 10000

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int meaoctl_parse_time(const char *s, int64_t now_ms, int64_t *out_ms)
{
    struct tm tm, back;
    char unit = 0, z = 0, extra = 0;
    long long n;
    int consumed = 0;
    time_t t;

    if (sscanf(s, "%lld%c%n", &n, &unit, &consumed) == 2 && s[consumed] == '\0' && n >= 0 &&
        n <= 100000 && strchr("smhd", unit) && s[0] >= '0' && s[0] <= '9') {
        static const int64_t per[] = {1000, 60000, 3600000, 86400000};
        *out_ms = now_ms - n * per[strchr("smhd", unit) - "smhd"];
        return 0;
    }
    memset(&tm, 0, sizeof tm);
    if (sscanf(s, "%4d-%2d-%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &extra) == 3 &&
        strlen(s) == 10) {
        /* a date: its midnight, UTC */
    } else if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%c%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                      &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z, &extra) == 7 &&
               z == 'Z' && strlen(s) == 20) {
        /* a UTC time */
    } else {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    back = tm;
    t = timegm(&tm);
    /* timegm normalises 2026-02-31 into March: refuse what did not round-trip */
    if (t == (time_t)-1 || tm.tm_mday != back.tm_mday || tm.tm_mon != back.tm_mon ||
        tm.tm_hour != back.tm_hour || tm.tm_min != back.tm_min || tm.tm_sec != back.tm_sec)
        return -1;
    *out_ms = (int64_t)t * 1000;
    return 0;
}

static json_t *row_json(sqlite3_stmt *st)
{
    char ts[32];
    json_t *o = json_pack("{s:I, s:s}", "id", (json_int_t)sqlite3_column_int64(st, 0), "at",
                          meao_iso8601(sqlite3_column_int64(st, 1), ts, sizeof ts));
    static const char *const names[] = {"requestId", "actorUserId", "action", "target", "detail"};
    if (o == NULL)
        return NULL;
    for (int i = 0; i < 5; i++) {
        int col = i + 2;
        json_t *v;
        if (sqlite3_column_type(st, col) == SQLITE_NULL)
            v = json_null();
        else if (col == 3)
            v = json_integer(sqlite3_column_int64(st, col));
        else
            v = json_string((const char *)sqlite3_column_text(st, col));
        /* a non-UTF-8 detail would make json_string fail: keep the row, drop the field */
        json_object_set_new(o, names[i], v ? v : json_null());
    }
    return o;
}

static int audit_export(const struct meao_config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {{"since", required_argument, NULL, 's'},
                                         {"until", required_argument, NULL, 'u'},
                                         {"format", required_argument, NULL, 'f'},
                                         {"output", required_argument, NULL, 'o'},
                                         {NULL, 0, NULL, 0}};
    static const char sql[] = "SELECT id, at_ms, request_id, actor_user_id, action, target, detail"
                              " FROM audit WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms, id";
    const char *since = NULL, *until = NULL, *format = "jsonl", *output = NULL;
    int64_t now = wall_ms(), from = 0, to = INT64_MAX, rows = 0;
    struct meao_db *db = NULL;
    sqlite3_stmt *st;
    FILE *out = stdout;
    char err[256];
    int opt, rc, code = CTL_EX_OK;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 's': since = optarg; break;
        case 'u': until = optarg; break;
        case 'f': format = optarg; break;
        case 'o': output = optarg; break;
        default: return CTL_EX_USAGE;
        }
    }
    if (optind != argc)
        return meaoctl_fail(CTL_EX_USAGE, "audit export takes no argument \"%s\"", argv[optind]);
    if (since == NULL)
        return meaoctl_fail(CTL_EX_USAGE, "audit export needs --since (e.g. 2026-11-01, "
                                          "2026-11-01T12:00:00Z, 7d, 24h)");
    if (meaoctl_parse_time(since, now, &from) != 0)
        return meaoctl_fail(
            CTL_EX_USAGE,
            "--since: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or N[smhd], got \"%.40s\"", since);
    if (until && meaoctl_parse_time(until, now, &to) != 0)
        return meaoctl_fail(
            CTL_EX_USAGE,
            "--until: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or N[smhd], got \"%.40s\"", until);
    if (strcmp(format, "jsonl") != 0)
        return meaoctl_fail(CTL_EX_USAGE, "--format: only jsonl is supported, got \"%.20s\"",
                            format);
    if (meao_db_open(cfg->db_path, (int)cfg->db_busy_timeout_ms, 0, &db, err, sizeof err) !=
        MEAO_OK)
        return meaoctl_fail(CTL_EX_UNAVAIL, "%s", err);
    if (output) {
        /* the trail names users and actions: private, and never over another file */
        int fd = open(output, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || (out = fdopen(fd, "w")) == NULL) {
            code = meaoctl_fail(CTL_EX_FAIL, "cannot create %s: %s", output, strerror(errno));
            if (fd >= 0)
                close(fd);
            out = NULL;
            goto done;
        }
    }
    st = meao_db_stmt(db, sql);
    if (st == NULL) {
        code = meaoctl_fail(CTL_EX_UNAVAIL, "cannot read the audit table");
        goto done;
    }
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = row_json(st);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (line == NULL) {
            code = meaoctl_fail(CTL_EX_FAIL, "out of memory");
            break;
        }
        fputs(line, out);
        fputc('\n', out);
        free(line);
        rows++;
    }
    if (rc != SQLITE_DONE && code == CTL_EX_OK)
        code = meaoctl_fail(CTL_EX_UNAVAIL, "reading the audit table failed");
    sqlite3_reset(st);
    if (fflush(out) != 0 && code == CTL_EX_OK)
        code = meaoctl_fail(CTL_EX_FAIL, "write failed: %s", strerror(errno));
    if (code == CTL_EX_OK)
        fprintf(stderr, "meaoctl: exported %lld audit row(s)\n", (long long)rows);
done:
    if (out && out != stdout)
        fclose(out);
    meao_db_close(db);
    return code;
}

static int audit_prune(const struct meao_config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {{"days", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    static const char sql[] = "DELETE FROM audit WHERE id IN"
                              " (SELECT id FROM audit WHERE at_ms < ?1 LIMIT 10000)";
    int64_t days = cfg->audit_retention_days, cutoff, total = 0, now = wall_ms();
    struct meao_db *db = NULL;
    char err[256], detail[64], ts[32];
    int opt, code = CTL_EX_OK;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        switch (opt) {
        case 'd':
            days = strtoll(optarg, &end, 10);
            if (*end || end == optarg || days < 1 || days > 36500)
                return meaoctl_fail(CTL_EX_USAGE, "--days must be 1..36500");
            break;
        default: return CTL_EX_USAGE;
        }
    }
    if (optind != argc)
        return meaoctl_fail(CTL_EX_USAGE, "audit prune takes no argument \"%s\"", argv[optind]);
    if (days == 0) {
        fprintf(stderr, "meaoctl: audit_retention_days = 0: the audit trail is kept for ever\n");
        return CTL_EX_OK;
    }
    cutoff = now - days * 86400000;
    if (meao_db_open(cfg->db_path, (int)cfg->db_busy_timeout_ms, 0, &db, err, sizeof err) !=
        MEAO_OK)
        return meaoctl_fail(CTL_EX_UNAVAIL, "%s", err);
    /* small batches: the write lock is never held for long while serving */
    for (;;) {
        sqlite3_stmt *st = meao_db_stmt(db, sql);
        int n;
        if (st == NULL) {
            code = meaoctl_fail(CTL_EX_UNAVAIL, "cannot prune the audit table");
            break;
        }
        sqlite3_bind_int64(st, 1, cutoff);
        if (meao_db_step(db, st) != MEAO_OK) {
            code = meaoctl_fail(CTL_EX_UNAVAIL, "pruning the audit table failed");
            break;
        }
        n = sqlite3_changes(meao_db_handle(db));
        total += n;
        if (n < PRUNE_BATCH)
            break;
    }
    if (code == CTL_EX_OK) {
        snprintf(detail, sizeof detail, "%lld rows before %s", (long long)total,
                 meao_iso8601(cutoff, ts, sizeof ts));
        (void)meao_audit(db, now, NULL, 0, "audit.prune", NULL, detail);
        fprintf(stderr, "meaoctl: pruned %lld audit row(s) older than %lld days\n",
                (long long)total, (long long)days);
    }
    meao_db_close(db);
    return code;
}

int meaoctl_audit(const struct meao_config *cfg, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        puts("usage: meaoctl audit export --since TIME [--until TIME] [--format jsonl] "
             "[--output PATH]\n"
             "       meaoctl audit prune [--days N]\n"
             "TIME: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC), or N[smhd] ago (7d, 24h).\n"
             "export writes one JSON object per audit row, oldest first (to PATH: a new\n"
             "file, mode 0600). prune deletes rows older than audit_retention_days (or\n"
             "--days N); run it daily (the unit meao-audit-prune.timer does).");
        return argc < 2 ? CTL_EX_USAGE : CTL_EX_OK;
    }
    if (strcmp(argv[1], "export") == 0)
        return audit_export(cfg, argc - 1, argv + 1);
    if (strcmp(argv[1], "prune") == 0)
        return audit_prune(cfg, argc - 1, argv + 1);
    return meaoctl_fail(CTL_EX_USAGE, "unknown audit subcommand \"%s\" (export, prune)", argv[1]);
}
