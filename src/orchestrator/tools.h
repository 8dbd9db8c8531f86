/* The orchestrator's tools (PROTOCOL.md "Tools"): bash, read_file and
 * write_file, each with an approval policy from the configuration.
 *
 * Confinement: every path is resolved beneath the turn's work directory with
 * openat2(RESOLVE_BENEATH) (absolute paths, `..` and symlinks that leave it
 * are refused by the kernel, race-free); on kernels without openat2 a
 * lexical walk that refuses every symlink takes its place. bash runs
 * `/bin/sh -c` in its own process group with a scrubbed environment; the
 * group is killed at the timeout, at the output cap, on cancel, and when the
 * shell exits (background jobs do not outlive their command). */
#ifndef MEAO_ORCHESTRATOR_TOOLS_H
#define MEAO_ORCHESTRATOR_TOOLS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/err.h"

enum meao_tool_policy { MEAO_TOOL_AUTO = 0, MEAO_TOOL_ASK, MEAO_TOOL_ALWAYS };

/* Where and how long a tool may run. All borrowed. */
struct meao_tool_env {
    const char *work_dir; /* absolute and resolved (realpath): the confinement root */
    const struct meao_clock *clock;
    int64_t timeout_ms; /* bash: then its process group is killed */
    size_t max_output;  /* bytes of output kept (stdout+stderr, or the file read) */
    int cancel_fd;      /* readable = stop now (a turn's wake fd); -1: none */
};

struct meao_tool_result {
    bool success;
    char *output; /* valid UTF-8 without NUL, NUL-terminated; caller owns */
    size_t len;
};

/* "auto", "ask", "always". */
const char *meao_tools_policy_name(enum meao_tool_policy p);

/* The configured policy of a tool (tool_policy_*); ALWAYS for an unknown name. */
enum meao_tool_policy meao_tools_policy(const struct meao_config *cfg, const char *name);

/* A policy name ("auto", "ask", "always") into *out; false when s is none. */
bool meao_tools_policy_parse(const char *s, enum meao_tool_policy *out);

/* The policy of a tool for one turn: the turn request's `toolPolicies`
 * (overrides, borrowed, may be NULL: name -> policy name, already checked
 * with meao_tools_check_policies) before the configuration. */
enum meao_tool_policy meao_tools_policy_for(const struct meao_config *cfg, const json_t *overrides,
                                            const char *name);

/* Check a turn's `toolPolicies`: an object whose values are policy names
 * (names of tools this daemon does not have are ignored). MEAO_OK or
 * MEAO_E_INVALID_PARAMETER with a one-line reason. */
enum meao_err meao_tools_check_policies(const json_t *overrides, char *why, size_t whylen);

/* True when name is one of the tools. */
bool meao_tools_known(const char *name);

/* The tools as JSON: [{"name","description","inputSchema"}] for a model, or
 * with cfg non-NULL also "policy" and "enabled" (the list_tools frame). New
 * reference; NULL on allocation failure. */
json_t *meao_tools_describe(const struct meao_config *cfg);

/* Check a tool call's input against the tool's argument schema. MEAO_OK or
 * MEAO_E_INVALID_PARAMETER/MEAO_E_INVALID_REQUEST with a one-line reason. */
enum meao_err meao_tools_validate(const char *name, const json_t *input, char *why, size_t whylen);

/* A short, single-line, display-safe summary of a call ("$ ls -la",
 * "read notes.txt"), cut to fit buf. */
void meao_tools_summary(const char *name, const json_t *input, char *buf, size_t len);

/* The approval_request "request" object of a call:
 * {"tool","action","summary","risks":[...],"isDangerous"}. New reference. */
json_t *meao_tools_approval_request(const char *name, const char *summary);

/* Run a validated call. On MEAO_OK or MEAO_E_CANCELLED (cancel_fd fired) res
 * holds the outcome and output (the caller frees it with
 * meao_tools_result_free); MEAO_E_NOMEM otherwise, with res empty. */
enum meao_err meao_tools_run(const char *name, const json_t *input, const struct meao_tool_env *env,
                             struct meao_tool_result *res);

/* The tools one by one (meao_tools_run dispatches to them); same contract. */
enum meao_err meao_tools_bash(const char *command, const struct meao_tool_env *env,
                              struct meao_tool_result *res);
enum meao_err meao_tools_read_file(const char *path, const struct meao_tool_env *env,
                                   struct meao_tool_result *res);
enum meao_err meao_tools_write_file(const char *path, const char *content, size_t len,
                                    const struct meao_tool_env *env, struct meao_tool_result *res);

/* Release res->output; accepts an empty result. */
void meao_tools_result_free(struct meao_tool_result *res);

/* Tests only: false makes path resolution use the fallback walk that the
 * daemon takes on kernels without openat2. */
void meao_tools_use_openat2(bool on);

#endif
