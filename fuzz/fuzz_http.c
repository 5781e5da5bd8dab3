/*
 * fuzz_http.c - libFuzzer target for hedged's HTTP request-head parser
 * (hd_http_parse_head) and query helpers (hd_http_query_get,
 * hd_http_url_decode), fed the way api.c feeds them: the input up to the
 * first "\r\n\r\n" is the head (NUL-free, at most 16 KiB); the request
 * target's query part, when the head parses, goes through the query helpers.
 * Build and run with scripts/fuzz-daemon.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/http.h"
#include "base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = hd_xmalloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *end = memmem(buf, size, "\r\n\r\n", 4);
    size_t header_len = end ? (size_t)(end - buf) + 4 : 0;
    if (end && header_len <= HD_HTTP_MAX_HEADER && memchr(buf, '\0', header_len) == NULL) {
        struct hd_http_request req;
        hd_error_t err = NULL;
        int status = 0;
        if (hd_http_parse_head(buf, header_len, HD_HTTP_MAX_BODY, &req, &status, &err) == 0) {
            if (req.target < buf || req.target >= buf + header_len || req.target[0] != '/' ||
                req.content_length > HD_HTTP_MAX_BODY || req.method[0] == '\0')
                abort();
            char *query = strchr(req.target, '?');
            if (query) {
                *query++ = '\0';
                free(hd_http_query_get(query, "health_wait"));
                free(hd_http_query_get(query, "tail"));
            }
            hd_http_url_decode(req.target);
        } else if (err == NULL || (status != 400 && status != 411 && status != 413 && status != 505)) {
            abort();
        }
        hd_error_free(&err);
    }
    free(buf);
    return 0;
}
