/* Shared between the FastCGI responder (meao-fcgi), its plain-CGI mode and the
 * replay tool: turning CGI/1.1 parameters and a body into a struct meao_req,
 * and the process pieces of meao-fcgi (master, worker). Nothing in here knows
 * HTTP routes; everything below is the library's. */
#ifndef MEAO_CGI_CGI_H
#define MEAO_CGI_CGI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "http/app.h"
#include "http/http.h"

#define MEAO_FCGI_PROGRAM "meao-fcgi"

/* A request body being collected, bounded by max. Once the declared or
 * received length passes max nothing more is kept (too_large), but the
 * request still runs so the router can answer 413. */
struct cgi_body {
    char *p; /* owned until cgi_body_finish() */
    size_t len;
    size_t cap;
    size_t max;
    bool too_large;
};

/* Start collecting. declared is CONTENT_LENGTH (-1 when absent); when it is
 * within max the whole buffer is allocated once, up front. */
void cgi_body_begin(struct cgi_body *b, long long declared, size_t max);

/* Append a piece; past max the body is dropped and too_large set. False only
 * on allocation failure (the body is then dropped too). */
bool cgi_body_add(struct cgi_body *b, const void *data, size_t n);

/* Hand the body (NUL-terminated) or the too_large flag to req; b is empty
 * afterwards. */
void cgi_body_finish(struct cgi_body *b, struct meao_req *req);

/* Drop whatever was collected. Accepts a zeroed body. */
void cgi_body_free(struct cgi_body *b);

/* CONTENT_LENGTH the way meao_req_set_param() reads it: -1 when absent or
 * empty, a huge value when it is not a plain decimal number. */
long long cgi_parse_content_length(const char *v, size_t n);

/* Pass every pair of a validated FastCGI PARAMS block to the request (the
 * library ignores names it does not know). False on allocation failure. */
bool cgi_req_from_fcgi_params(struct meao_req *req, const uint8_t *blk, size_t len);

/* CONTENT_LENGTH from a validated PARAMS block (-1 when absent). */
long long cgi_fcgi_content_length(const uint8_t *blk, size_t len);

/* Run req through app and write the CGI response to out. 0, or -1 when the
 * response could not be produced or written. */
int cgi_run_to_file(struct meao_app *app, struct meao_req *req, FILE *out);

/* Plain CGI: one request from the environment (envp) and CONTENT_LENGTH
 * bytes of in_fd, answered on out. Returns a process exit status. */
int cgi_main(const struct meao_config *cfg, char **envp, int in_fd, FILE *out);

/* Run the database migrations for cfg->db_path (what every starter of
 * request-serving processes does once), waiting at most busy_timeout_ms for
 * the write lock. 0 or -1 (logged). */
int cgi_migrate(const struct meao_config *cfg, int busy_timeout_ms);

/* ---- meao-fcgi processes ---- */

/* The master: listening socket, pid file, workers, signals. config_path (may be
 * NULL) is re-read on SIGUSR2. cfg is the caller's; its contents are replaced
 * on reload (the caller still frees it). inherited_fd >= 0 is a listening
 * socket handed over by a spawner (used as is and never unlinked). With
 * migrate_pending the start-up migration failed: the master retries it in the
 * background until it succeeds. Returns the process exit status. */
int fcgi_master_run(struct meao_config *cfg, const char *config_path, int inherited_fd,
                    bool migrate_pending);

/* One worker: an epoll loop on listen_fd until told to stop. Returns the
 * process exit status. cfg is borrowed for the worker's lifetime. */
int fcgi_worker_run(const struct meao_config *cfg, int listen_fd, unsigned worker_index,
                    unsigned nworkers);

#endif
