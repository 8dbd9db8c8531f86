/* The orchestrator's tools: read_file / write_file confinement (`..`,
 * absolute paths, symlinks out of the work directory; with openat2 and with
 * the fallback walk), and bash's timeout, output cap, cancel, scrubbed
 * environment and process-group clean-up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "http/app.h"
#include "orchestrator/tools.h"

struct fixture {
    char top[PATH_MAX];       /* temp dir holding the work dir and an "outside" */
    char work[PATH_MAX + 16]; /* the work directory (resolved) */
    char outside[PATH_MAX + 16];
    struct meao_tool_env env;
};

static void put_file(const char *dir, const char *name, const char *content)
{
    char path[PATH_MAX * 2];
    FILE *fp;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char tmpl[] = "/tmp/meao-tools-XXXXXX", path[PATH_MAX * 2];
    assert_non_null(mkdtemp(tmpl));
    assert_non_null(realpath(tmpl, f->top));
    snprintf(f->work, sizeof f->work, "%s/work", f->top);
    snprintf(f->outside, sizeof f->outside, "%s/outside", f->top);
    assert_int_equal(mkdir(f->work, 0755), 0);
    assert_int_equal(mkdir(f->outside, 0755), 0);
    snprintf(path, sizeof path, "%s/sub", f->work);
    assert_int_equal(mkdir(path, 0755), 0);
    put_file(f->work, "notes.txt", "hello notes\n");
    put_file(f->work, "sub/inner.txt", "inner\n");
    put_file(f->top, "x", "secret next to the work dir\n");
    put_file(f->outside, "target", "outside secret\n");
    /* symlinks: out by absolute path, out by relative path, a directory
     * outside, and one that stays inside */
    snprintf(path, sizeof path, "%s/abs-link", f->work);
    assert_int_equal(symlink("/etc/passwd", path), 0);
    snprintf(path, sizeof path, "%s/rel-link", f->work);
    assert_int_equal(symlink("../outside/target", path), 0);
    snprintf(path, sizeof path, "%s/dir-link", f->work);
    assert_int_equal(symlink("../outside", path), 0);
    snprintf(path, sizeof path, "%s/in-link", f->work);
    assert_int_equal(symlink("sub/inner.txt", path), 0);
    f->env.work_dir = f->work;
    f->env.clock = meao_clock_system();
    f->env.timeout_ms = 5000;
    f->env.max_output = 65536;
    f->env.cancel_fd = -1;
    *state = f;
    meao_tools_use_openat2(true);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->top);
    assert_int_equal(system(cmd), 0);
    free(f);
    meao_tools_use_openat2(true);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read a file as an int (a pid a command wrote); -1 when absent. */
static long read_pid(const char *dir, const char *name)
{
    char path[PATH_MAX * 2];
    long pid = -1;
    FILE *fp;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fp = fopen(path, "r");
    if (fp == NULL)
        return -1;
    if (fscanf(fp, "%ld", &pid) != 1)
        pid = -1;
    fclose(fp);
    return pid;
}

/* Gone, or a zombie waiting for its (re)parent: not running either way. */
static bool process_gone(long pid)
{
    char path[64], buf[512];
    FILE *fp;
    bool gone = true;
    if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
        return true;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    fp = fopen(path, "r");
    if (fp == NULL)
        return true;
    if (fgets(buf, sizeof buf, fp)) {
        char *close_paren = strrchr(buf, ')');
        gone = close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z';
    }
    fclose(fp);
    return gone;
}

static void expect_refused(struct fixture *f, const char *path)
{
    struct meao_tool_result res;
    assert_int_equal(meao_tools_read_file(path, &f->env, &res), MEAO_OK);
    if (res.success)
        fail_msg("read_file(%s) was allowed: %s", path, res.output);
    assert_null(strstr(res.output, "secret"));
    assert_true(strstr(res.output, "refused") != NULL || strstr(res.output, "no such") != NULL);
    meao_tools_result_free(&res);
}

static void expect_read(struct fixture *f, const char *path, const char *content)
{
    struct meao_tool_result res;
    assert_int_equal(meao_tools_read_file(path, &f->env, &res), MEAO_OK);
    if (!res.success)
        fail_msg("read_file(%s) failed: %s", path, res.output);
    assert_string_equal(res.output, content);
    meao_tools_result_free(&res);
}

/* --- read_file ------------------------------------------------------------ */

static void read_file_inside(void **state)
{
    struct fixture *f = *state;
    char abs[PATH_MAX * 2];
    expect_read(f, "notes.txt", "hello notes\n");
    expect_read(f, "./sub/inner.txt", "inner\n");
    expect_read(f, "sub/../notes.txt", "hello notes\n"); /* `..` that stays inside is fine */
    snprintf(abs, sizeof abs, "%s/notes.txt", f->work);
    expect_read(f, abs, "hello notes\n"); /* an absolute path inside too */
}

static void read_file_refuses_dotdot(void **state)
{
    struct fixture *f = *state;
    expect_refused(f, "../x");
    expect_refused(f, "sub/../../x");
    expect_refused(f, "../outside/target");
    expect_refused(f, "..");
}

static void read_file_refuses_absolute_outside(void **state)
{
    struct fixture *f = *state;
    char path[PATH_MAX * 2];
    expect_refused(f, "/etc/passwd");
    snprintf(path, sizeof path, "%s/x", f->top);
    expect_refused(f, path);
    snprintf(path, sizeof path, "%sx/notes.txt", f->work); /* a prefix is not a parent */
    expect_refused(f, path);
}

static void read_file_refuses_symlinks_out(void **state)
{
    struct fixture *f = *state;
    expect_refused(f, "abs-link");
    expect_refused(f, "rel-link");
    expect_refused(f, "dir-link/target");
    expect_read(f, "in-link", "inner\n"); /* a symlink that stays inside is followed */
}

static void read_file_fallback_walk(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    meao_tools_use_openat2(false);
    expect_read(f, "notes.txt", "hello notes\n");
    expect_read(f, "sub/../sub/inner.txt", "inner\n");
    expect_refused(f, "../x");
    expect_refused(f, "/etc/passwd");
    expect_refused(f, "abs-link");
    expect_refused(f, "rel-link");
    expect_refused(f, "dir-link/target");
    /* the fallback is stricter: no symlink at all */
    assert_int_equal(meao_tools_read_file("in-link", &f->env, &res), MEAO_OK);
    assert_false(res.success);
    meao_tools_result_free(&res);
}

static void read_file_fifo_and_dir_do_not_hang(void **state)
{
    struct fixture *f = *state;
    char path[PATH_MAX * 2];
    struct meao_tool_result res;
    snprintf(path, sizeof path, "%s/fifo", f->work);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(meao_tools_read_file("fifo", &f->env, &res), MEAO_OK);
    assert_false(res.success);
    assert_non_null(strstr(res.output, "not a regular file"));
    meao_tools_result_free(&res);
    assert_int_equal(meao_tools_read_file("sub", &f->env, &res), MEAO_OK);
    assert_false(res.success);
    meao_tools_result_free(&res);
}

static void read_file_capped(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    put_file(f->work, "big.txt", big);
    f->env.max_output = 100;
    assert_int_equal(meao_tools_read_file("big.txt", &f->env, &res), MEAO_OK);
    assert_true(res.success);
    assert_int_equal(strspn(res.output, "a"), 100);
    assert_non_null(strstr(res.output, "[truncated at 100 bytes]"));
    meao_tools_result_free(&res);
}

/* --- write_file ------------------------------------------------------------- */

static void write_file_inside_and_replace(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    assert_int_equal(meao_tools_write_file("new.txt", "one", 3, &f->env, &res), MEAO_OK);
    assert_true(res.success);
    assert_string_equal(res.output, "wrote 3 bytes to new.txt");
    meao_tools_result_free(&res);
    expect_read(f, "new.txt", "one");
    assert_int_equal(meao_tools_write_file("sub/new.txt", "two", 3, &f->env, &res), MEAO_OK);
    assert_true(res.success);
    meao_tools_result_free(&res);
    expect_read(f, "sub/new.txt", "two");
    assert_int_equal(meao_tools_write_file("new.txt", "three", 5, &f->env, &res), MEAO_OK);
    meao_tools_result_free(&res);
    expect_read(f, "new.txt", "three");
}

static void write_file_refuses_escapes(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    char path[PATH_MAX * 2];
    const char *bad[] = {"../y", "/tmp/meao-escape", "dir-link/y", "sub/../../y", "..", "sub/"};

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(meao_tools_write_file(bad[i], "x", 1, &f->env, &res), MEAO_OK);
        if (res.success)
            fail_msg("write_file(%s) was allowed", bad[i]);
        meao_tools_result_free(&res);
    }
    snprintf(path, sizeof path, "%s/y", f->top);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof path, "%s/y", f->outside);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(access("/tmp/meao-escape", F_OK), -1);
}

static void write_file_replaces_a_symlink_never_follows_it(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    char path[PATH_MAX * 2];
    struct stat st;

    assert_int_equal(meao_tools_write_file("rel-link", "mine", 4, &f->env, &res), MEAO_OK);
    assert_true(res.success);
    meao_tools_result_free(&res);
    snprintf(path, sizeof path, "%s/rel-link", f->work);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    expect_read(f, "rel-link", "mine");
    /* the file it pointed at is untouched */
    snprintf(path, sizeof path, "%s/target", f->outside);
    {
        FILE *fp = fopen(path, "r");
        char buf[64] = "";
        assert_non_null(fp);
        assert_non_null(fgets(buf, sizeof buf, fp));
        fclose(fp);
        assert_string_equal(buf, "outside secret\n");
    }
}

/* --- bash ----------------------------------------------------------------------- */

static void bash_runs_in_work_dir_with_scrubbed_env(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    char expect[PATH_MAX * 3];

    setenv("MEAO_TEST_SECRET", "s3cr3t", 1);
    assert_int_equal(meao_tools_bash("echo hi", &f->env, &res), MEAO_OK);
    assert_true(res.success);
    assert_string_equal(res.output, "hi");
    meao_tools_result_free(&res);

    assert_int_equal(
        meao_tools_bash("pwd; echo \"$HOME|$LANG|$PATH\"; env | grep -c SECRET || true", &f->env,
                        &res),
        MEAO_OK);
    snprintf(expect, sizeof expect, "%s\n%s|C.UTF-8|/usr/local/bin:/usr/bin:/bin\n0", f->work,
             f->work);
    assert_string_equal(res.output, expect);
    assert_true(res.success);
    meao_tools_result_free(&res);
    unsetenv("MEAO_TEST_SECRET");
}

static void bash_exit_status_and_stderr(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    assert_int_equal(meao_tools_bash("echo out; echo err >&2; exit 3", &f->env, &res), MEAO_OK);
    assert_false(res.success);
    assert_string_equal(res.output, "out\nerr\n[exit status 3]");
    meao_tools_result_free(&res);
}

static void bash_output_is_clean_utf8(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    assert_int_equal(meao_tools_bash("printf 'a\\000b\\377c\\303\\251'", &f->env, &res), MEAO_OK);
    assert_true(res.success);
    assert_string_equal(res.output, "a\xEF\xBF\xBD"
                                    "b\xEF\xBF\xBD"
                                    "c\xC3\xA9");
    assert_int_equal(res.len, strlen(res.output));
    meao_tools_result_free(&res);
}

static void bash_cannot_escape_its_timeout(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    int64_t t0 = now_ms(), took;
    long sh, bg;

    f->env.timeout_ms = 200;
    assert_int_equal(
        meao_tools_bash("echo $$ > sh.pid; sleep 100 & echo $! > bg.pid; sleep 100", &f->env, &res),
        MEAO_OK);
    took = now_ms() - t0;
    assert_true(took < 1000);
    assert_false(res.success);
    assert_non_null(strstr(res.output, "timed out after 200 ms"));
    meao_tools_result_free(&res);
    sh = read_pid(f->work, "sh.pid");
    bg = read_pid(f->work, "bg.pid");
    assert_true(sh > 0 && bg > 0);
    /* the whole process group died; give init a moment to reap the orphan */
    for (int i = 0; i < 50 && !process_gone(bg); i++) {
        struct timespec ms10 = {0, 10000000L};
        nanosleep(&ms10, NULL);
    }
    assert_true(process_gone(sh));
    assert_true(process_gone(bg));
}

static void bash_cannot_escape_its_output_cap(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    int64_t t0 = now_ms();

    f->env.max_output = 1000;
    assert_int_equal(meao_tools_bash("yes", &f->env, &res), MEAO_OK);
    assert_true(now_ms() - t0 < 1000); /* killed at the cap, not at the timeout */
    assert_false(res.success);
    assert_true(res.len < 1000 + 100);
    assert_non_null(strstr(res.output, "[output truncated at 1000 bytes"));
    assert_int_equal(strncmp(res.output, "y\ny\ny\n", 6), 0);
    meao_tools_result_free(&res);
}

static void bash_background_jobs_do_not_outlive_the_command(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    int64_t t0 = now_ms();
    long bg;

    assert_int_equal(meao_tools_bash("sleep 100 & echo $! > bg.pid; echo done", &f->env, &res),
                     MEAO_OK);
    assert_true(now_ms() - t0 < 1000); /* did not wait for the job's copy of stdout */
    assert_true(res.success);
    assert_string_equal(res.output, "done");
    meao_tools_result_free(&res);
    bg = read_pid(f->work, "bg.pid");
    assert_true(bg > 0);
    for (int i = 0; i < 50 && !process_gone(bg); i++) {
        struct timespec ms10 = {0, 10000000L};
        nanosleep(&ms10, NULL);
    }
    assert_true(process_gone(bg));
}

static void bash_closing_stdout_is_not_the_end(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    assert_int_equal(meao_tools_bash("exec >/dev/null 2>&1; sleep 0.2; touch late", &f->env, &res),
                     MEAO_OK);
    assert_true(res.success);
    assert_int_equal(read_pid(f->work, "late"), -1); /* exists but empty: fscanf fails */
    {
        char path[PATH_MAX * 2];
        snprintf(path, sizeof path, "%s/late", f->work);
        assert_int_equal(access(path, F_OK), 0);
    }
    meao_tools_result_free(&res);
}

struct canceller {
    int fd;
    int delay_ms;
};

static void *cancel_later(void *arg)
{
    struct canceller *c = arg;
    struct timespec ts = {0, (long)c->delay_ms * 1000000L};
    uint64_t one = 1;
    nanosleep(&ts, NULL);
    assert_int_equal(write(c->fd, &one, sizeof one), (ssize_t)sizeof one);
    return NULL;
}

static void bash_cancel_kills_the_group(void **state)
{
    struct fixture *f = *state;
    struct meao_tool_result res;
    struct canceller c = {.fd = eventfd(0, EFD_CLOEXEC), .delay_ms = 100};
    pthread_t th;
    int64_t t0 = now_ms();
    long bg;

    f->env.cancel_fd = c.fd;
    assert_int_equal(pthread_create(&th, NULL, cancel_later, &c), 0);
    assert_int_equal(meao_tools_bash("sleep 100 & echo $! > bg.pid; sleep 100", &f->env, &res),
                     MEAO_E_CANCELLED);
    pthread_join(th, NULL);
    assert_true(now_ms() - t0 < 1000);
    assert_false(res.success);
    meao_tools_result_free(&res);
    bg = read_pid(f->work, "bg.pid");
    for (int i = 0; i < 50 && !process_gone(bg); i++) {
        struct timespec ms10 = {0, 10000000L};
        nanosleep(&ms10, NULL);
    }
    assert_true(process_gone(bg));
    /* a cancelled turn runs no further tool */
    assert_int_equal(meao_tools_run("read_file", NULL, &f->env, &res), MEAO_E_CANCELLED);
    meao_tools_result_free(&res);
    close(c.fd);
}

/* --- descriptions, validation, summaries ------------------------------------------------ */

static void describe_validate_summarise(void **state)
{
    struct meao_config cfg;
    json_t *list, *args;
    char why[200], sum[64];
    (void)state;

    meao_config_defaults(&cfg);
    list = meao_tools_describe(&cfg);
    assert_int_equal(json_array_size(list), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "policy")),
                        "always");
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "policy")),
                        "auto");
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 2), "policy")),
                        "ask");
    assert_true(json_is_object(json_object_get(json_array_get(list, 0), "inputSchema")));
    json_decref(list);
    list = meao_tools_describe(NULL);
    assert_null(json_object_get(json_array_get(list, 0), "policy"));
    json_decref(list);

    assert_int_equal(meao_tools_policy(&cfg, "bash"), MEAO_TOOL_ALWAYS);
    assert_int_equal(meao_tools_policy(&cfg, "nope"), MEAO_TOOL_ALWAYS);
    assert_false(meao_tools_known("nope"));

    args = json_pack("{s:i}", "command", 1);
    assert_int_not_equal(meao_tools_validate("bash", args, why, sizeof why), MEAO_OK);
    json_decref(args);
    args = json_pack("{s:s}", "path", "a");
    assert_int_not_equal(meao_tools_validate("write_file", args, why, sizeof why), MEAO_OK);
    assert_non_null(strstr(why, "content"));
    assert_int_equal(meao_tools_validate("read_file", args, why, sizeof why), MEAO_OK);
    json_decref(args);

    args =
        json_pack("{s:s}", "command",
                  "echo a\nrm -rf /\x1b[31m and a very long tail indeed, longer than the summary");
    meao_tools_summary("bash", args, sum, sizeof sum);
    assert_null(strchr(sum, '\n'));
    assert_null(strchr(sum, '\x1b'));
    assert_true(strlen(sum) < sizeof sum);
    assert_int_equal(strncmp(sum, "$ echo a rm -rf /", 17), 0);
    assert_non_null(strstr(sum, "..."));
    json_decref(args);
    meao_config_free(&cfg);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(read_file_inside),
        T(read_file_refuses_dotdot),
        T(read_file_refuses_absolute_outside),
        T(read_file_refuses_symlinks_out),
        T(read_file_fallback_walk),
        T(read_file_fifo_and_dir_do_not_hang),
        T(read_file_capped),
        T(write_file_inside_and_replace),
        T(write_file_refuses_escapes),
        T(write_file_replaces_a_symlink_never_follows_it),
        T(bash_runs_in_work_dir_with_scrubbed_env),
        T(bash_exit_status_and_stderr),
        T(bash_output_is_clean_utf8),
        T(bash_cannot_escape_its_timeout),
        T(bash_cannot_escape_its_output_cap),
        T(bash_background_jobs_do_not_outlive_the_command),
        T(bash_closing_stdout_is_not_the_end),
        T(bash_cancel_kills_the_group),
        cmocka_unit_test(describe_validate_summarise),
    };
#undef T
    meao_lib_init();
    meao_log_init("test", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
