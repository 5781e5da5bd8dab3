/*
 * http.c - parse what hedged's API accepts of HTTP/1.1, and nothing more:
 * "METHOD /target HTTP/1.x", header lines "Name: value", a Content-Length
 * body. Chunked bodies (411), oversized bodies (413), other HTTP versions
 * (505) and anything malformed (400) are refused with a message naming the
 * part. Duplicate Content-Length headers that disagree are malformed (the
 * classic request-smuggling ambiguity). Fuzzed by fuzz/fuzz_http.c.
 */
#include "daemon/http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"

int hd_http_parse_head(char *buf, size_t header_len, size_t max_body, struct hd_http_request *req, int *status,
                       hd_error_t *err)
{
    memset(req, 0, sizeof(*req));
    *status = 400;
    char *end_of_head = buf + header_len - 2; /* the empty line's CRLF */
    char *line_end = strstr(buf, "\r\n");
    if (line_end == NULL || line_end >= end_of_head + 2)
        return hd_error_set(err, 0, "request line: malformed");
    *line_end = '\0';
    char *sp1 = strchr(buf, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || strchr(sp2 + 1, ' ') || sp1 == buf || (size_t)(sp1 - buf) >= sizeof(req->method))
        return hd_error_set(err, 0, "request line: malformed");
    if (strcmp(sp2 + 1, "HTTP/1.1") != 0 && strcmp(sp2 + 1, "HTTP/1.0") != 0) {
        *status = 505;
        return hd_error_set(err, 0, "request line: only HTTP/1.0 and HTTP/1.1 are spoken here");
    }
    memcpy(req->method, buf, (size_t)(sp1 - buf));
    req->method[sp1 - buf] = '\0';
    *sp2 = '\0';
    req->target = sp1 + 1;
    if (req->target[0] != '/')
        return hd_error_set(err, 0, "request target: must start with /");
    bool have_length = false;
    for (char *line = line_end + 2; line < end_of_head;) {
        char *end = strstr(line, "\r\n");
        if (end == NULL || end > end_of_head)
            return hd_error_set(err, 0, "header: malformed line");
        *end = '\0';
        char *colon = strchr(line, ':');
        char *blank = strpbrk(line, " \t");
        if (colon == NULL || colon == line || (blank && blank < colon)) /* no space in a name */
            return hd_error_set(err, 0, "header: malformed line");
        *colon = '\0';
        char *value = colon + 1;
        while (*value == ' ' || *value == '\t')
            value++;
        if (strcasecmp(line, "Content-Length") == 0) {
            char *e;
            errno = 0;
            unsigned long long n = strtoull(value, &e, 10);
            while (*e == ' ' || *e == '\t')
                e++;
            if (value[0] < '0' || value[0] > '9' || *e || errno)
                return hd_error_set(err, 0, "Content-Length: \"%s\" is not a length", value);
            if (have_length && n != req->content_length)
                return hd_error_set(err, 0, "Content-Length: given twice with different values");
            if (n > max_body) {
                *status = 413;
                return hd_error_set(err, 0, "request body: %llu bytes is more than %zu", n, max_body);
            }
            req->content_length = (size_t)n;
            have_length = true;
        } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
            *status = 411;
            return hd_error_set(err, 0, "Transfer-Encoding: not supported; send a Content-Length");
        } else if (strcasecmp(line, "Expect") == 0 && strcasecmp(value, "100-continue") == 0)
            req->expect_continue = true;
        line = end + 2;
    }
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decode in place; false on a malformed escape or a NUL. */
bool hd_http_url_decode(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '%') {
            int hi = hexval(r[1]), lo = hi >= 0 ? hexval(r[2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return false;
            *w++ = (char)(hi * 16 + lo);
            r += 2;
        } else
            *w++ = *r == '+' ? ' ' : *r;
    }
    *w = '\0';
    return true;
}

/* Value of key in "a=1&b=2" (decoded copy), or NULL. */
char *hd_http_query_get(const char *query, const char *key)
{
    if (query == NULL)
        return NULL;
    size_t klen = strlen(key);
    for (const char *p = query; *p;) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            char *v = strndup(p + klen + 1, len - klen - 1);
            if (v == NULL)
                abort();
            if (!hd_http_url_decode(v)) {
                free(v);
                return NULL;
            }
            return v;
        }
        if (len == klen && strncmp(p, key, klen) == 0)
            return hd_xstrdup("1");
        p += len + (end ? 1 : 0);
    }
    return NULL;
}
