/*
 * http.h - the strict HTTP/1.1 request-head parser of hedged's API (api.c)
 * and the query-string helpers. Pure functions over a buffer, so that
 * fuzz/fuzz_http.c can drive them without a socket.
 */
#ifndef HEDGE_HTTP_H
#define HEDGE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"

#define HD_HTTP_MAX_HEADER (16 * 1024)
#define HD_HTTP_MAX_BODY (1024 * 1024)

struct hd_http_request {
    char method[16];
    char *target; /* points into the parsed buffer */
    size_t content_length;
    bool expect_continue;
};

/*
 * Parse the request line and headers in buf[0, header_len), where header_len
 * includes the closing "\r\n\r\n", the range holds no NUL and buf is
 * NUL-terminated at or after header_len. buf is modified (NULs are written
 * into it). Returns 0, or -1 with *status (400, 411, 413, 505) and err set.
 */
int hd_http_parse_head(char *buf, size_t header_len, size_t max_body, struct hd_http_request *req, int *status,
                       hd_error_t *err);
/* Percent-decode in place ('+' is a space); false on a malformed escape or %00. */
bool hd_http_url_decode(char *s);
/* The decoded value of key in "a=1&b=2" (a bare "key" is "1"); NULL when absent or malformed. */
char *hd_http_query_get(const char *query, const char *key);

#endif
