/* Model providers behind one interface, so the turn engine never knows which
 * wire format it talks: echo (offline, deterministic), anthropic (Messages API
 * with SSE streaming and tool use), openai (Chat Completions with streaming
 * and tool calls: OpenAI, llama.cpp server, Ollama, vLLM). */
#ifndef MEAO_ORCHESTRATOR_PROVIDER_H
#define MEAO_ORCHESTRATOR_PROVIDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/err.h"

/* Where a provider streams what the model says. Callbacks run on the
 * caller's thread, in order. A callback returning false aborts the call
 * (the provider then returns MEAO_E_CANCELLED promptly). */
struct meao_llm_sink {
    void *ctx;
    /* a piece of assistant text (UTF-8, not NUL-terminated) */
    bool (*text)(void *ctx, const char *delta, size_t len);
    /* a complete tool call: id and name borrowed; input (an object) borrowed */
    bool (*tool_call)(void *ctx, const char *id, const char *name, json_t *input);
    /* token usage of this call (may be called more than once; last wins per field) */
    void (*usage)(void *ctx, int64_t input_tokens, int64_t output_tokens);
    /* polled while waiting for the network: true = abort now (cancel, disconnect,
     * shutdown, turn deadline) */
    bool (*cancelled)(void *ctx);
};

/* One model call, in a provider-neutral form:
 * messages: [{"role":"user","content":"…"},
 *            {"role":"assistant","content":"…","toolCalls":[{"id","name","input"}]},
 *            {"role":"tool","toolCallId":"…","name":"…","content":"…","isError":bool}, …]
 * tools:    [{"name","description","inputSchema":{JSON Schema}}]   (may be empty)
 * system:   system prompt (may be NULL). All borrowed. */
struct meao_llm_request {
    const json_t *messages;
    const json_t *tools;
    const char *system;
};

struct meao_provider;

struct meao_provider_ops {
    const char *name;
    /* Run one model call to its end (the model stopped, or asked for tools:
     * every tool call has then been delivered through sink->tool_call).
     * Errors: MEAO_E_PROVIDER (HTTP error, bad stream; err gets one line with
     * no secrets), MEAO_E_TIMEOUT (provider_timeout_ms, or a stalled stream),
     * MEAO_E_CANCELLED (sink said so), MEAO_E_NOMEM. Thread-safe: many turns
     * call the same provider concurrently. */
    enum meao_err (*complete)(struct meao_provider *p, const struct meao_llm_request *req,
                              const struct meao_llm_sink *sink, char *err, size_t errlen);
    void (*destroy)(struct meao_provider *p);
};

struct meao_provider {
    const struct meao_provider_ops *ops;
    const struct meao_config *cfg; /* borrowed for the provider's life */
    void *state;
};

/* Create the provider named by cfg->provider. On error *out is NULL and err
 * gets one line. */
enum meao_err meao_provider_create(const struct meao_config *cfg, struct meao_provider **out,
                                   char *err, size_t errlen);
void meao_provider_destroy(struct meao_provider *p);

/* Constructors of the individual providers (provider_*.c). */
enum meao_err meao_provider_echo_create(const struct meao_config *cfg, struct meao_provider **out,
                                        char *err, size_t errlen);
enum meao_err meao_provider_anthropic_create(const struct meao_config *cfg,
                                             struct meao_provider **out, char *err, size_t errlen);
enum meao_err meao_provider_openai_create(const struct meao_config *cfg, struct meao_provider **out,
                                          char *err, size_t errlen);

#endif
