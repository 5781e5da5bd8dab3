/* test_http.c - hedged's HTTP request-head parser and query helpers (src/daemon/http.c). */
#include "../../src/daemon/http.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Parse a head given as a C string (it must end in "\r\n\r\n"); returns the status, 0 when accepted. */
static int parse(const char *text, struct hd_http_request *req)
{
    char *buf = strdup(text);
    hd_error_t err = NULL;
    int status = 0;
    int r = hd_http_parse_head(buf, strlen(buf), HD_HTTP_MAX_BODY, req, &status, &err);
    hd_error_free(&err);
    static char keep[256];
    if (r == 0) {
        snprintf(keep, sizeof(keep), "%s", req->target);
        req->target = keep;
    }
    free(buf);
    return r == 0 ? 0 : status;
}

int main(void)
{
    struct hd_http_request req;
    CHECK(parse("GET /v1/workloads HTTP/1.1\r\nHost: x\r\n\r\n", &req) == 0);
    CHECK_STR(req.method, "GET");
    CHECK_STR(req.target, "/v1/workloads");
    CHECK(req.content_length == 0 && !req.expect_continue);

    CHECK(parse("POST /v1/workloads HTTP/1.0\r\ncontent-length: 42\r\nExpect: 100-continue\r\n\r\n", &req) == 0);
    CHECK(req.content_length == 42 && req.expect_continue);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length:7\r\n\r\n", &req) == 0 && req.content_length == 7);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n", &req) == 0);

    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n", &req) == 400);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &req) == 400);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", &req) == 400);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", &req) == 400);
    CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", &req) == 413);
    CHECK(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &req) == 411);
    CHECK(parse("GET / HTTP/2.0\r\n\r\n", &req) == 505);
    CHECK(parse("GET /\r\n\r\n", &req) == 400);
    CHECK(parse("GET  / HTTP/1.1\r\n\r\n", &req) == 400);
    CHECK(parse("GET x HTTP/1.1\r\n\r\n", &req) == 400);
    CHECK(parse("AVERYLONGMETHODNAME / HTTP/1.1\r\n\r\n", &req) == 400);
    CHECK(parse("GET / HTTP/1.1\r\nNo colon here\r\n\r\n", &req) == 400);
    CHECK(parse("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", &req) == 400);
    CHECK(parse("GET / HTTP/1.1\r\n: empty name\r\n\r\n", &req) == 400);

    char *v = hd_http_query_get("origin=a%20b.json&health_wait=2&follow", "origin");
    CHECK_STR(v, "a b.json");
    free(v);
    v = hd_http_query_get("origin=a%20b.json&health_wait=2&follow", "follow");
    CHECK_STR(v, "1");
    free(v);
    CHECK(hd_http_query_get("origin=x", "orig") == NULL);
    CHECK(hd_http_query_get("x=%zz", "x") == NULL);
    CHECK(hd_http_query_get("x=%00", "x") == NULL);
    CHECK(hd_http_query_get(NULL, "x") == NULL);
    char path[] = "/v1/workloads/a%2Fb+c";
    CHECK(hd_http_url_decode(path));
    CHECK_STR(path, "/v1/workloads/a/b c");
    char bad[] = "/x%4";
    CHECK(!hd_http_url_decode(bad));
    CHECK_DONE();
}
