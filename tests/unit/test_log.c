/* test_log.c - the log (src/base/log.c): the level filter, the program and component prefix
 * (the program's own component left out), level names, and the "last message repeated" limit. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "check.h"

static int fds[2];

/* Everything logged since the last call. */
static const char *drain(void)
{
    static char buf[8192];
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

int main(void)
{
    CHECK(pipe(fds) == 0);
    /* a pipe read end that never blocks the test when empty */
    CHECK(write(fds[1], "", 0) == 0);
    hd_log_set_fd(fds[1]);
    hd_log_init("hedged", "supervisor");

    hd_log(HD_LOG_INFO, "broker", "listening on %s", "127.0.0.1:1883");
    CHECK_STR(drain(), "hedged: broker: listening on 127.0.0.1:1883\n");
    hd_log(HD_LOG_ERROR, "supervisor", "web: restart");
    hd_log(HD_LOG_WARN, NULL, "plain");
    CHECK_STR(drain(), "hedged: web: restart\nhedged: plain\n");

    /* levels: info is the default; debug lines only at debug */
    CHECK(hd_log_get_level() == HD_LOG_INFO);
    hd_log(HD_LOG_DEBUG, "uplink", "hidden");
    hd_log(HD_LOG_INFO, "uplink", "shown");
    CHECK_STR(drain(), "hedged: uplink: shown\n");
    enum hd_log_level level;
    hd_error_t err = NULL;
    CHECK(hd_log_parse_level("warn", &level, &err) == 0 && level == HD_LOG_WARN);
    CHECK(hd_log_parse_level("warning", &level, &err) == 0 && level == HD_LOG_WARN);
    CHECK(hd_log_parse_level("debug", &level, &err) == 0 && level == HD_LOG_DEBUG);
    CHECK(hd_log_parse_level("loud", &level, &err) < 0);
    CHECK(err && strstr(hd_error_text(err), "\"loud\"") != NULL);
    hd_error_free(&err);
    hd_log_set_level(HD_LOG_WARN);
    CHECK(!hd_log_enabled(HD_LOG_INFO) && hd_log_enabled(HD_LOG_ERROR));
    hd_log(HD_LOG_INFO, "uplink", "dropped");
    hd_log(HD_LOG_WARN, "uplink", "kept");
    CHECK_STR(drain(), "hedged: uplink: kept\n");
    hd_log_set_level(HD_LOG_DEBUG);
    hd_log(HD_LOG_DEBUG, "uplink", "debug now");
    CHECK_STR(drain(), "hedged: uplink: debug now\n");

    /* identical lines: written once, then counted; the next different line reports the count */
    for (int i = 0; i < 5; i++)
        hd_log(HD_LOG_ERROR, "broker", "store commit: disk I/O error");
    CHECK_STR(drain(), "hedged: broker: store commit: disk I/O error\n");
    hd_log(HD_LOG_ERROR, "broker", "something else");
    CHECK_STR(drain(), "hedged: last message repeated 4 times\nhedged: broker: something else\n");
    /* the same text from another component or at another level is a different line */
    hd_log(HD_LOG_ERROR, "uplink", "something else");
    hd_log(HD_LOG_WARN, "uplink", "something else");
    CHECK_STR(drain(), "hedged: uplink: something else\nhedged: uplink: something else\n");
    hd_log(HD_LOG_WARN, "uplink", "something else");
    hd_log_flush();
    CHECK_STR(drain(), "hedged: last message repeated 1 time\n");
    hd_log_flush(); /* nothing pending: nothing written */
    hd_log(HD_LOG_INFO, NULL, "after");
    CHECK_STR(drain(), "hedged: after\n");

    /* a standalone program: its own component is left out, others are named */
    hd_log_init("hedge-broker", "broker");
    hd_log(HD_LOG_ERROR, "broker", "store: locked");
    hd_log(HD_LOG_INFO, "tls", "ready");
    CHECK_STR(drain(), "hedge-broker: store: locked\nhedge-broker: tls: ready\n");

    /* a log file: timestamped lines appended */
    char path[] = "/tmp/hedge-test-log-XXXXXX";
    int tmp = mkstemp(path);
    CHECK(tmp >= 0);
    close(tmp);
    CHECK(hd_log_open(path, &err) == 0);
    hd_log(HD_LOG_INFO, "uplink", "to the file");
    CHECK(hd_log_open(NULL, &err) == 0);
    FILE *f = fopen(path, "r");
    char line[256] = "";
    CHECK(f && fgets(line, sizeof(line), f));
    if (f)
        fclose(f);
    unlink(path);
    CHECK(strlen(line) > 25 && line[4] == '-' && line[10] == 'T');
    CHECK(strstr(line, "Z hedge-broker: uplink: to the file\n") != NULL);
    CHECK(hd_log_open("/nonexistent-dir/x.log", &err) < 0);
    CHECK(err && strstr(hd_error_text(err), "/nonexistent-dir/x.log") != NULL);
    hd_error_free(&err);
    hd_log_set_fd(-1);
    CHECK_DONE();
}
