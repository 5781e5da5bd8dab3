/*
 * client.h - the small HTTP client the daemon verbs share: one request per
 * connection to hedged's unix socket (--socket, $HEDGE_SOCKET, or
 * /run/hedge/hedged.sock), JSON in and out.
 */
#ifndef HEDGE_CLIENT_H
#define HEDGE_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

struct hd_client_response {
    int status;
    char *body; /* NUL-terminated */
    size_t len;
};

const char *hd_client_socket(void);
/* Percent-encode one path segment or query value; caller frees. */
char *hd_client_escape(const char *s);
int hd_client_request(const char *method, const char *path, const char *body, size_t len,
                      struct hd_client_response *resp, hd_error_t *err);
void hd_client_response_free(struct hd_client_response *resp);
/* GET path and copy the response body to out_fd as it arrives (logs -f). */
int hd_client_stream(const char *path, int out_fd, hd_error_t *err);
/* Parse the body as JSON; NULL (err set) when it is not. */
json_t *hd_client_json(const struct hd_client_response *resp, hd_error_t *err);
/*
 * For a response with status >= 300: print "hedge: <error>" and return the
 * exit code (the workload's "exit_code" when the body has one, else 125).
 */
int hd_client_fail(const char *verb, const struct hd_client_response *resp);
/* Send and handle the common case: request, error or JSON body. Returns NULL and sets *code on failure. */
json_t *hd_client_call(const char *verb, const char *method, const char *path, const char *body, size_t len, int *code);
/* "1h2m", "35s": a short human duration. */
void hd_client_duration(double seconds, char *buf, size_t size);
/* "12.3M": a short human size. */
void hd_client_size(double bytes, char *buf, size_t size);

/*
 * The shape of stop, start and rm: `hedge VERB [--json] NAME...`, one request
 * per name (method + /v1/workloads/NAME + suffix); prints "NAME: <state>".
 */
int hd_client_workload_verb(int argc, char **argv, const char *method, const char *suffix, const char *usage);
#endif
