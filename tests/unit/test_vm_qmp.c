/*
 * test_vm_qmp.c - QMP's framing (runtime/vm/qmp.c): one JSON object per
 * CRLF-terminated line, reassembled across reads, several in one read, blank
 * lines skipped; a line that is not a JSON object, or a line that never ends,
 * is an error; messages are told apart (greeting, return, error, event).
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "runtime/vm/qmp.h"

static void test_split_and_batched(void)
{
    struct hd_qmp_reader r = {0};
    hd_error_t err = NULL;
    json_t *msg = NULL;
    const char *greeting = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, "
                           "\"capabilities\": [\"oob\"]}}\r\n";
    hd_qmp_reader_feed(&r, greeting, 20);
    CHECK(hd_qmp_reader_next(&r, &msg, &err) == 0); /* half a line: nothing yet */
    hd_qmp_reader_feed(&r, greeting + 20, strlen(greeting) - 20);
    CHECK(hd_qmp_reader_next(&r, &msg, &err) == 1);
    CHECK(hd_qmp_kind(msg) == HD_QMP_GREETING);
    json_decref(msg);
    CHECK(hd_qmp_reader_next(&r, &msg, &err) == 0);
    const char *batch = "{\"return\": {}, \"id\": 1}\r\n\r\n"
                        "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n"
                        "{\"id\": 2, \"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\r\n";
    hd_qmp_reader_feed(&r, batch, strlen(batch));
    enum hd_qmp_kind want[] = {HD_QMP_RETURN, HD_QMP_EVENT, HD_QMP_ERROR};
    for (size_t i = 0; i < 3; i++) {
        CHECK(hd_qmp_reader_next(&r, &msg, &err) == 1);
        CHECK(hd_qmp_kind(msg) == want[i]);
        json_decref(msg);
    }
    CHECK(hd_qmp_reader_next(&r, &msg, &err) == 0);
    CHECK(r.len == 0);
    /* a return value that is not an object ("return": []) is still a return */
    const char *list = "{\"return\": [], \"id\": 3}\n";
    hd_qmp_reader_feed(&r, list, strlen(list));
    CHECK(hd_qmp_reader_next(&r, &msg, &err) == 1);
    CHECK(hd_qmp_kind(msg) == HD_QMP_RETURN);
    json_decref(msg);
    CHECK(err == NULL);
    hd_qmp_reader_free(&r);
}

static void test_malformed(void)
{
    struct hd_qmp_reader r = {0};
    hd_error_t err = NULL;
    json_t *msg = NULL;
    const char *bad = "{\"return\": \r\n{\"return\": {}}\r\n";
    hd_qmp_reader_feed(&r, bad, strlen(bad));
    CHECK(hd_qmp_reader_next(&r, &msg, &err) == -1);
    CHECK(err && strstr(hd_error_text(err), "qmp: malformed message") != NULL);
    hd_error_free(&err);
    CHECK(hd_qmp_reader_next(&r, &msg, &err) == 1); /* the bad line is gone, the next one reads */
    json_decref(msg);
    hd_qmp_reader_feed(&r, "[1, 2]\r\n", strlen("[1, 2]\r\n"));
    CHECK(hd_qmp_reader_next(&r, &msg, &err) == -1);
    CHECK(err && strstr(hd_error_text(err), "not a JSON object") != NULL);
    hd_error_free(&err);
    /* a line that never ends: an error once it passes the bound, not unbounded memory */
    size_t big = HD_QMP_LINE_MAX + 16;
    char *junk = malloc(big);
    memset(junk, 'x', big);
    hd_qmp_reader_feed(&r, junk, big);
    free(junk);
    CHECK(hd_qmp_reader_next(&r, &msg, &err) == -1);
    CHECK(err && strstr(hd_error_text(err), "longer than") != NULL);
    hd_error_free(&err);
    hd_qmp_reader_free(&r);
    json_t *unknown = json_pack("{s:i}", "what", 1);
    CHECK(hd_qmp_kind(unknown) == HD_QMP_UNKNOWN);
    json_decref(unknown);
}

int main(void)
{
    test_split_and_batched();
    test_malformed();
    CHECK_DONE();
    return 0;
}
