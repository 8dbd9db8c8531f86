/* The orchestrator's turn engine driven by the echo provider, without a
 * socket: frames are captured in order, and approvals are answered (or not)
 * the moment their approval_request is emitted. Covers the echo provider's
 * streaming and script, the frame order, approve / deny / timeout /
 * disconnect / cancel / shutdown, trustSession, `always` never trusted, tool
 * errors, the round limit and request validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "http/app.h"
#include "orchestrator/approvals.h"
#include "orchestrator/provider.h"
#include "orchestrator/turn.h"
#include "proto/orch.h"

enum act { ANSWER, NONE, DROP, CANCEL, SHUTDOWN };

struct step {
    enum act act;
    bool approved, trust;
};

struct fixture {
    char root[PATH_MAX];
    char work[PATH_MAX + 8];
    struct meao_config cfg;
    struct meao_provider *provider;
    struct meao_approvals *approvals;
    struct meao_engine eng;
    /* the current turn */
    struct meao_turn *turn;
    json_t *frames;
    struct step steps[8];
    size_t nsteps, next;
    json_t *policies; /* the next turns' toolPolicies, or NULL */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char tmpl[] = "/tmp/meao-turn-XXXXXX", err[256];
    assert_non_null(mkdtemp(tmpl));
    assert_non_null(realpath(tmpl, f->root));
    snprintf(f->work, sizeof f->work, "%s/s1", f->root);
    assert_int_equal(mkdir(f->work, 0755), 0);
    meao_config_defaults(&f->cfg);
    assert_int_equal(meao_config_set(&f->cfg, "workspace_root", f->root, err, sizeof err), 0);
    assert_int_equal(meao_config_set(&f->cfg, "approval_timeout_ms", "100", err, sizeof err), 0);
    assert_int_equal(meao_provider_create(&f->cfg, &f->provider, err, sizeof err), MEAO_OK);
    assert_string_equal(f->provider->ops->name, "echo");
    f->approvals = meao_approvals_new(meao_clock_system(), f->cfg.approval_timeout_ms);
    assert_int_equal(meao_engine_init(&f->eng, &f->cfg, meao_clock_system(), f->provider,
                                      f->approvals, err, sizeof err),
                     MEAO_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[PATH_MAX + 16];
    meao_engine_fini(&f->eng);
    assert_int_equal(meao_approvals_pending_count(f->approvals), 0);
    meao_approvals_free(f->approvals);
    meao_provider_destroy(f->provider);
    meao_config_free(&f->cfg);
    json_decref(f->frames);
    json_decref(f->policies);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static const char *type_of(const json_t *frame)
{
    return json_string_value(json_object_get(frame, "type"));
}

static bool capture(void *ctx, const json_t *frame)
{
    struct fixture *f = ctx;
    json_array_append_new(f->frames, json_deep_copy(frame));
    if (strcmp(type_of(frame), "approval_request") == 0) {
        struct step s = f->next < f->nsteps ? f->steps[f->next++] : (struct step){NONE, 0, 0};
        const char *id = json_string_value(json_object_get(frame, "approvalId"));
        switch (s.act) {
        case ANSWER:
            assert_int_equal(meao_approvals_answer(f->approvals, id, "u1", s.approved, s.trust),
                             MEAO_OK);
            break;
        case NONE: break;
        case DROP: meao_turn_stop(f->turn, MEAO_TURN_DISCONNECTED); break;
        case CANCEL: meao_turn_stop(f->turn, MEAO_TURN_CANCELLED); break;
        case SHUTDOWN: meao_turn_stop(f->turn, MEAO_TURN_SHUTDOWN); break;
        }
    }
    return true;
}

/* Run one turn; returns the engine's result. Frames land in f->frames. */
static enum meao_err run(struct fixture *f, const char *content, json_t *trusted, json_t *history)
{
    struct meao_turn_out out = {.ctx = f, .emit = capture};
    json_t *req;
    char why[200];
    enum meao_err e;

    req =
        meao_orch_turn_request("t1", "s1", "u1", "rest", f->work, trusted, history, content, NULL);
    if (f->policies)
        json_object_set(req, "toolPolicies", f->policies);
    json_decref(f->frames);
    f->frames = json_array();
    f->next = 0;
    assert_int_equal(meao_turn_new(&f->eng, req, &out, &f->turn, why, sizeof why), MEAO_OK);
    e = meao_turn_run(f->turn);
    meao_turn_free(f->turn);
    f->turn = NULL;
    json_decref(req);
    json_decref(trusted);
    json_decref(history);
    return e;
}

/* "a,b,c" of the frame types, text deltas folded into one "text". */
static const char *types(struct fixture *f)
{
    static char buf[1024];
    size_t i, at = 0;
    json_t *fr;
    const char *prev = "";
    buf[0] = '\0';
    json_array_foreach(f->frames, i, fr)
    {
        const char *t = strcmp(type_of(fr), "text_delta") == 0 ? "text" : type_of(fr);
        if (strcmp(t, "text") == 0 && strcmp(prev, "text") == 0)
            continue;
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%s", at ? "," : "", t);
        prev = t;
    }
    return buf;
}

static json_t *nth(struct fixture *f, const char *type, size_t n)
{
    size_t i;
    json_t *fr;
    json_array_foreach(f->frames, i, fr)
    {
        if (strcmp(type_of(fr), type) == 0 && n-- == 0)
            return fr;
    }
    fail_msg("no %s frame #%zu in %s", type, n, types(f));
    return NULL;
}

static const char *str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static bool exists(struct fixture *f, const char *name)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", f->work, name);
    return access(path, F_OK) == 0;
}

/* --- the echo provider --------------------------------------------------- */

static void echo_streams_the_message_in_deltas(void **state)
{
    struct fixture *f = *state;
    struct meao_buf all = {0};
    size_t i, deltas = 0;
    json_t *fr, *done;

    assert_int_equal(run(f, "hello world, in pieces", NULL, NULL), MEAO_OK);
    assert_string_equal(types(f), "text,message_complete");
    json_array_foreach(f->frames, i, fr)
    {
        if (strcmp(type_of(fr), "text_delta") != 0)
            continue;
        deltas++;
        assert_string_equal(str(fr, "requestId"), "t1");
        meao_buf_puts(&all, str(fr, "delta"));
    }
    assert_int_equal(deltas, 4);
    assert_string_equal(all.p, "hello world, in pieces");
    done = nth(f, "message_complete", 0);
    assert_string_equal(str(done, "requestId"), "t1");
    assert_string_equal(str(done, "content"), "hello world, in pieces");
    assert_int_equal(json_array_size(json_object_get(done, "toolCalls")), 0);
    assert_int_equal(json_array_size(json_object_get(done, "trustedTools")), 0);
    assert_true(
        json_integer_value(json_object_get(json_object_get(done, "usage"), "outputTokens")) > 0);
    meao_buf_free(&all);
}

static void echo_never_splits_a_character(void **state)
{
    struct fixture *f = *state;
    const char *text = "\xC3\xA9\xE2\x9C\x93\xF0\x9F\x98\x80\xC3\xA9"; /* é ✓ 😀 é */
    struct meao_buf all = {0};
    size_t i;
    json_t *fr;

    assert_int_equal(run(f, text, NULL, NULL), MEAO_OK);
    json_array_foreach(f->frames, i, fr)
    {
        if (strcmp(type_of(fr), "text_delta") == 0)
            meao_buf_puts(&all, str(fr, "delta"));
    }
    assert_string_equal(all.p, text); /* no U+FFFD crept in */
    meao_buf_free(&all);
}

static void echo_answers_the_last_user_message(void **state)
{
    struct fixture *f = *state;
    json_t *history = json_pack("[{s:s,s:s},{s:s,s:s}]", "role", "user", "content", "old", "role",
                                "assistant", "content", "older answer");
    assert_int_equal(run(f, "new", NULL, history), MEAO_OK);
    assert_string_equal(str(nth(f, "message_complete", 0), "content"), "new");
}

static void echo_scripted_failure_is_provider_error(void **state)
{
    struct fixture *f = *state;
    json_t *err;
    assert_int_equal(run(f, "/fail", NULL, NULL), MEAO_E_PROVIDER);
    assert_string_equal(types(f), "error");
    err = nth(f, "error", 0);
    assert_string_equal(str(err, "code"), "PROVIDER_ERROR");
    assert_string_equal(str(err, "message"), "echo: scripted failure");
    assert_string_equal(str(err, "requestId"), "t1");
    assert_int_equal(run(f, "/tool bash {not json", NULL, NULL), MEAO_E_PROVIDER);
    assert_string_equal(str(nth(f, "error", 0), "code"), "PROVIDER_ERROR");
}

/* --- tools and approvals ----------------------------------------------------- */

static void approve_runs_the_tool(void **state)
{
    struct fixture *f = *state;
    json_t *req, *res, *resolved, *done, *call;

    f->steps[0] = (struct step){ANSWER, true, false};
    f->nsteps = 1;
    assert_int_equal(run(f, "/tool bash {\"command\":\"echo hi\"}", NULL, NULL), MEAO_OK);
    assert_string_equal(types(f), "tool_call_start,approval_request,approval_resolved,"
                                  "tool_call_result,text,message_complete");
    assert_string_equal(str(nth(f, "tool_call_start", 0), "toolName"), "bash");
    assert_string_equal(str(nth(f, "tool_call_start", 0), "summary"), "$ echo hi");
    req = nth(f, "approval_request", 0);
    assert_string_equal(str(req, "correlationId"), "t1");
    assert_string_equal(str(req, "requestId"), str(req, "approvalId"));
    assert_int_equal(strncmp(str(req, "approvalId"), "apr_", 4), 0);
    assert_string_equal(str(req, "toolCallId"), str(nth(f, "tool_call_start", 0), "toolCallId"));
    assert_int_equal(json_integer_value(json_object_get(req, "timeout")), 1);
    assert_true(json_is_true(json_object_get(json_object_get(req, "request"), "isDangerous")));
    resolved = nth(f, "approval_resolved", 0);
    assert_string_equal(str(resolved, "reason"), "approved");
    assert_string_equal(str(resolved, "requestId"), "t1");
    assert_true(json_is_true(json_object_get(resolved, "approved")));
    res = nth(f, "tool_call_result", 0);
    assert_true(json_is_true(json_object_get(res, "success")));
    assert_string_equal(str(res, "output"), "hi");
    done = nth(f, "message_complete", 0);
    assert_string_equal(str(done, "content"), "[bash] hi");
    call = json_array_get(json_object_get(done, "toolCalls"), 0);
    assert_string_equal(str(call, "name"), "bash");
    assert_string_equal(str(json_object_get(call, "input"), "command"), "echo hi");
    assert_true(json_is_true(json_object_get(call, "success")));
    assert_true(json_is_true(json_object_get(call, "approved")));
}

static void deny_never_runs_the_tool(void **state)
{
    struct fixture *f = *state;
    json_t *res, *call;
    f->steps[0] = (struct step){ANSWER, false, true};
    f->nsteps = 1;
    assert_int_equal(run(f, "/tool bash {\"command\":\"touch marker\"}", NULL, NULL), MEAO_OK);
    assert_false(exists(f, "marker"));
    assert_string_equal(str(nth(f, "approval_resolved", 0), "reason"), "denied");
    assert_false(json_is_true(json_object_get(nth(f, "approval_resolved", 0), "trustSession")));
    res = nth(f, "tool_call_result", 0);
    assert_false(json_is_true(json_object_get(res, "success")));
    assert_string_equal(str(res, "output"), "denied by user");
    assert_string_equal(str(nth(f, "message_complete", 0), "content"),
                        "[bash failed] denied by user");
    call = json_array_get(json_object_get(nth(f, "message_complete", 0), "toolCalls"), 0);
    assert_false(json_is_true(json_object_get(call, "approved")));
}

static void unanswered_times_out_as_denied(void **state)
{
    struct fixture *f = *state;
    f->steps[0] = (struct step){NONE, false, false};
    f->nsteps = 1;
    assert_int_equal(run(f, "/tool bash {\"command\":\"touch marker\"}", NULL, NULL), MEAO_OK);
    assert_false(exists(f, "marker"));
    assert_string_equal(str(nth(f, "approval_resolved", 0), "reason"), "timeout");
    assert_string_equal(str(nth(f, "tool_call_result", 0), "output"),
                        "denied: the approval timed out");
}

static void disconnect_denies_and_writes_nothing_more(void **state)
{
    struct fixture *f = *state;
    f->steps[0] = (struct step){DROP, false, false};
    f->nsteps = 1;
    assert_int_equal(run(f, "/tool bash {\"command\":\"touch marker\"}", NULL, NULL),
                     MEAO_E_UNAVAILABLE);
    assert_false(exists(f, "marker"));
    assert_string_equal(types(f), "tool_call_start,approval_request");
}

static void cancel_denies_and_ends_with_cancelled(void **state)
{
    struct fixture *f = *state;
    f->steps[0] = (struct step){CANCEL, false, false};
    f->nsteps = 1;
    assert_int_equal(run(f, "/tool bash {\"command\":\"touch marker\"}", NULL, NULL),
                     MEAO_E_CANCELLED);
    assert_false(exists(f, "marker"));
    assert_string_equal(types(f), "tool_call_start,approval_request,approval_resolved,error");
    assert_string_equal(str(nth(f, "approval_resolved", 0), "reason"), "denied");
    assert_string_equal(str(nth(f, "error", 0), "code"), "CANCELLED");
    assert_string_equal(str(nth(f, "error", 0), "requestId"), "t1");
}

static void shutdown_ends_with_shutting_down(void **state)
{
    struct fixture *f = *state;
    f->steps[0] = (struct step){SHUTDOWN, false, false};
    f->nsteps = 1;
    assert_int_equal(run(f, "/tool bash {\"command\":\"touch marker\"}", NULL, NULL),
                     MEAO_E_UNAVAILABLE);
    assert_false(exists(f, "marker"));
    assert_string_equal(str(nth(f, "approval_resolved", 0), "reason"), "disconnect");
    assert_string_equal(str(nth(f, "error", 0), "code"), "SHUTTING_DOWN");
}

static void trust_session_skips_the_second_approval(void **state)
{
    struct fixture *f = *state;
    json_t *done, *trusted;
    f->steps[0] = (struct step){ANSWER, true, true};
    f->nsteps = 1;
    assert_int_equal(run(f,
                         "/tool write_file {\"path\":\"a.txt\",\"content\":\"A\"}\n"
                         "/tool write_file {\"path\":\"b.txt\",\"content\":\"B\"}",
                         NULL, NULL),
                     MEAO_OK);
    assert_string_equal(types(f), "tool_call_start,approval_request,approval_resolved,"
                                  "tool_call_result,tool_call_start,approval_resolved,"
                                  "tool_call_result,text,message_complete");
    assert_true(json_is_true(json_object_get(nth(f, "approval_resolved", 0), "trustSession")));
    assert_string_equal(str(nth(f, "approval_resolved", 1), "reason"), "trusted");
    assert_true(json_is_true(json_object_get(nth(f, "approval_resolved", 1), "approved")));
    assert_true(exists(f, "a.txt"));
    assert_true(exists(f, "b.txt"));
    done = nth(f, "message_complete", 0);
    trusted = json_object_get(done, "trustedTools");
    assert_int_equal(json_array_size(trusted), 1);
    assert_string_equal(json_string_value(json_array_get(trusted, 0)), "write_file");
}

static void always_is_never_trusted(void **state)
{
    struct fixture *f = *state;
    f->steps[0] = (struct step){ANSWER, true, true};
    f->steps[1] = (struct step){ANSWER, true, true};
    f->nsteps = 2;
    assert_int_equal(run(f,
                         "/tool bash {\"command\":\"echo 1\"}\n"
                         "/tool bash {\"command\":\"echo 2\"}",
                         json_pack("[s]", "bash"), NULL),
                     MEAO_OK);
    assert_string_equal(types(f), "tool_call_start,approval_request,approval_resolved,"
                                  "tool_call_result,tool_call_start,approval_request,"
                                  "approval_resolved,tool_call_result,text,message_complete");
    assert_false(json_is_true(json_object_get(nth(f, "approval_resolved", 0), "trustSession")));
    assert_false(json_is_true(json_object_get(nth(f, "approval_resolved", 1), "trustSession")));
    assert_int_equal(
        json_array_size(json_object_get(nth(f, "message_complete", 0), "trustedTools")), 0);
}

static void incoming_trusted_tools_are_filtered(void **state)
{
    struct fixture *f = *state;
    json_t *trusted;
    f->steps[0] = (struct step){ANSWER, true, false};
    f->nsteps = 1;
    assert_int_equal(run(f,
                         "/tool write_file {\"path\":\"a.txt\",\"content\":\"A\"}\n"
                         "/tool bash {\"command\":\"echo 2\"}",
                         json_pack("[s,s,s]", "bash", "write_file", "nope"), NULL),
                     MEAO_OK);
    assert_string_equal(types(f), "tool_call_start,approval_resolved,tool_call_result,"
                                  "tool_call_start,approval_request,approval_resolved,"
                                  "tool_call_result,text,message_complete");
    assert_string_equal(str(nth(f, "approval_resolved", 0), "reason"), "trusted");
    trusted = json_object_get(nth(f, "message_complete", 0), "trustedTools");
    assert_int_equal(json_array_size(trusted), 1);
    assert_string_equal(json_string_value(json_array_get(trusted, 0)), "write_file");
}

static void auto_tool_needs_no_approval(void **state)
{
    struct fixture *f = *state;
    FILE *fp;
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/notes.txt", f->work);
    fp = fopen(path, "w");
    fputs("my notes", fp);
    fclose(fp);
    assert_int_equal(run(f, "/tool read_file {\"path\":\"notes.txt\"}", NULL, NULL), MEAO_OK);
    assert_string_equal(types(f), "tool_call_start,tool_call_result,text,message_complete");
    assert_string_equal(str(nth(f, "tool_call_result", 0), "output"), "my notes");
    assert_string_equal(str(nth(f, "message_complete", 0), "content"), "[read_file] my notes");
}

static void unknown_tool_and_bad_arguments_fail_without_asking(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(run(f, "/tool nope {}\n/tool bash {\"cmd\":\"ls\"}", NULL, NULL), MEAO_OK);
    assert_string_equal(types(f), "tool_call_start,tool_call_result,tool_call_start,"
                                  "tool_call_result,text,message_complete");
    assert_string_equal(str(nth(f, "tool_call_result", 0), "output"), "unknown tool: nope");
    assert_int_equal(
        strncmp(str(nth(f, "tool_call_result", 1), "output"), "invalid arguments:", 18), 0);
}

static void tool_rounds_are_limited(void **state)
{
    struct fixture *f = *state;
    char err[64];
    assert_int_equal(meao_config_set(&f->cfg, "max_tool_iterations", "1", err, sizeof err), 0);
    assert_int_equal(run(f,
                         "/tool read_file {\"path\":\"a\"}\n/tool read_file {\"path\":\"b\"}\n"
                         "/tool read_file {\"path\":\"c\"}",
                         NULL, NULL),
                     MEAO_OK);
    assert_string_equal(types(f), "tool_call_start,tool_call_result,message_complete");
}

static void result_frame_output_is_capped_at_4k(void **state)
{
    struct fixture *f = *state;
    json_t *res, *done;
    f->steps[0] = (struct step){ANSWER, true, false};
    f->nsteps = 1;
    assert_int_equal(
        run(f, "/tool bash {\"command\":\"head -c 10000 /dev/zero | tr '\\\\0' x\"}", NULL, NULL),
        MEAO_OK);
    res = nth(f, "tool_call_result", 0);
    assert_int_equal(strlen(str(res, "output")), 4096);
    /* the model got all of it */
    done = nth(f, "message_complete", 0);
    assert_int_equal(strlen(str(done, "content")), strlen("[bash] ") + 10000);
}

static void work_dir_must_be_inside_the_root(void **state)
{
    struct fixture *f = *state;
    struct meao_turn_out out = {.ctx = f, .emit = capture};
    const char *bad[] = {"/tmp", "relative/dir", "/nonexistent/meao", NULL};
    char why[200], link[PATH_MAX * 2];
    struct meao_turn *t;

    snprintf(link, sizeof link, "%s/escape", f->root);
    assert_int_equal(symlink("/etc", link), 0);
    for (int i = 0; i <= 3; i++) {
        const char *wd = bad[i] ? bad[i] : link;
        json_t *req = meao_orch_turn_request("t1", "s1", "u1", "rest", wd, NULL, NULL, "x", NULL);
        assert_int_equal(meao_turn_new(&f->eng, req, &out, &t, why, sizeof why),
                         MEAO_E_INVALID_PARAMETER);
        assert_null(t);
        assert_non_null(strstr(why, "workDir"));
        json_decref(req);
    }
}

static void tool_policies_override_the_configuration(void **state)
{
    struct fixture *f = *state;
    f->policies =
        json_pack("{s:s, s:s, s:s}", "bash", "auto", "read_file", "always", "nope", "ask");
    f->steps[0] = (struct step){ANSWER, true, true};
    f->nsteps = 1;
    assert_int_equal(run(f,
                         "/tool bash {\"command\":\"echo free\"}\n"
                         "/tool read_file {\"path\":\"missing\"}",
                         NULL, NULL),
                     MEAO_OK);
    /* bash ran without asking; read_file asked, and `always` was not trusted */
    assert_string_equal(types(f), "tool_call_start,tool_call_result,tool_call_start,"
                                  "approval_request,approval_resolved,tool_call_result,text,"
                                  "message_complete");
    assert_string_equal(str(nth(f, "tool_call_result", 0), "output"), "free");
    assert_false(json_is_true(json_object_get(nth(f, "approval_resolved", 0), "trustSession")));
    assert_int_equal(
        json_array_size(json_object_get(nth(f, "message_complete", 0), "trustedTools")), 0);
}

static void tool_policies_ask_lets_bash_be_trusted(void **state)
{
    struct fixture *f = *state;
    json_t *trusted;
    f->policies = json_pack("{s:s}", "bash", "ask");
    assert_int_equal(run(f, "/tool bash {\"command\":\"echo t\"}", json_pack("[s]", "bash"), NULL),
                     MEAO_OK);
    assert_string_equal(types(f), "tool_call_start,approval_resolved,tool_call_result,text,"
                                  "message_complete");
    assert_string_equal(str(nth(f, "approval_resolved", 0), "reason"), "trusted");
    trusted = json_object_get(nth(f, "message_complete", 0), "trustedTools");
    assert_string_equal(json_string_value(json_array_get(trusted, 0)), "bash");
}

static void tool_policies_must_be_policy_names(void **state)
{
    struct fixture *f = *state;
    struct meao_turn_out out = {.ctx = f, .emit = capture};
    json_t *bad[] = {json_pack("{s:s}", "bash", "never"), json_pack("{s:i}", "bash", 1),
                     json_pack("[s]", "bash")};
    char why[200];
    struct meao_turn *t;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *req =
            meao_orch_turn_request("t1", "s1", "u1", "rest", f->work, NULL, NULL, "x", NULL);
        json_object_set_new(req, "toolPolicies", bad[i]);
        assert_int_equal(meao_turn_new(&f->eng, req, &out, &t, why, sizeof why),
                         MEAO_E_INVALID_PARAMETER);
        assert_null(t);
        assert_non_null(strstr(why, "toolPolicies"));
        json_decref(req);
    }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(echo_streams_the_message_in_deltas),
        T(echo_never_splits_a_character),
        T(echo_answers_the_last_user_message),
        T(echo_scripted_failure_is_provider_error),
        T(approve_runs_the_tool),
        T(deny_never_runs_the_tool),
        T(unanswered_times_out_as_denied),
        T(disconnect_denies_and_writes_nothing_more),
        T(cancel_denies_and_ends_with_cancelled),
        T(shutdown_ends_with_shutting_down),
        T(trust_session_skips_the_second_approval),
        T(always_is_never_trusted),
        T(incoming_trusted_tools_are_filtered),
        T(auto_tool_needs_no_approval),
        T(unknown_tool_and_bad_arguments_fail_without_asking),
        T(tool_rounds_are_limited),
        T(result_frame_output_is_capped_at_4k),
        T(work_dir_must_be_inside_the_root),
        T(tool_policies_override_the_configuration),
        T(tool_policies_ask_lets_bash_be_trusted),
        T(tool_policies_must_be_policy_names),
    };
#undef T
    meao_lib_init();
    meao_log_init("test", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
