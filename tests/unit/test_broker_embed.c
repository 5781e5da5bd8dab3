/* test_broker_embed.c - the broker as hedged embeds it: hd_broker_new on an
 * ephemeral port, attached to a host loop (hd_broker_attach) that the test turns,
 * and run-time workload credentials (hd_broker_set_user / hd_broker_allow). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/loop.h"
#include "broker/broker.h"
#include "check.h"
#include "base/util.h"

static struct hd_broker *b;
static struct hd_loop *loop;

/* Send req and return the first reply packet's length in resp (0 = none in time, -1 = closed). */
static int xfer(int fd, const char *req, size_t len, unsigned char *resp, size_t cap)
{
    if (len && send(fd, req, len, 0) != (ssize_t)len)
        return -1;
    size_t got = 0;
    for (int i = 0; i < 40; i++) {
        hd_loop_run_once(loop, 50, NULL);
        ssize_t n = recv(fd, resp + got, cap - got, MSG_DONTWAIT);
        if (n == 0)
            return -1;
        if (n > 0)
            got += (size_t)n;
        if (got >= 2 && got >= 2u + resp[1])
            return (int)got;
    }
    return 0;
}

static int client(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)hd_broker_port(b, 0))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    return fd;
}

#define CONNECT_WL(pw) \
    "\x10\x19\x00\x04MQTT\x04\xc2\x00\x3c\x00\x01" \
    "c\x00\x02wl\x00\x06" pw

int main(void)
{
    struct hd_broker_config cfg;
    hd_broker_config_init(&cfg);
    hd_strv_push(&cfg.listen, "127.0.0.1:0");
    cfg.sys_interval = 0;
    hd_error_t err = NULL;
    CHECK(hd_broker_new(&cfg, &b, &err) == 0);
    loop = hd_loop_new(&err);
    CHECK(loop != NULL);
    CHECK(b == NULL || hd_broker_attach(b, loop, &err) == 0);
    CHECK(b == NULL || hd_broker_attach(b, loop, &err) < 0); /* once only */
    hd_error_free(&err);
    hd_broker_config_free(&cfg);
    if (!b) {
        fprintf(stderr, "%s\n", hd_error_text(err));
        return 1;
    }
    CHECK(hd_broker_port(b, 0) > 0);
    CHECK(hd_broker_set_user(b, "wl", "secret", &err) == 0);
    CHECK(hd_broker_set_user(b, "device", "other", &err) == 0);
    CHECK(hd_broker_allow(b, "wl", "readwrite", "apps/%u/#", &err) == 0);
    CHECK(hd_broker_allow(b, "wl", "sometimes", "x", &err) < 0);
    hd_error_free(&err);

    unsigned char r[64];
    int fd = client();
    CHECK(xfer(fd, CONNECT_WL("wrong!"), 27, r, sizeof(r)) == 4 && memcmp(r, "\x20\x02\x00\x04", 4) == 0);
    close(fd);
    fd = client(); /* anonymous: refused once a user exists */
    CHECK(xfer(fd,
               "\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01"
               "a",
               15, r, sizeof(r)) == 4 &&
          r[3] == 5);
    close(fd);
    fd = client();
    CHECK(xfer(fd, CONNECT_WL("secret"), 27, r, sizeof(r)) == 4 && memcmp(r, "\x20\x02\x00\x00", 4) == 0);
    /* SUBSCRIBE apps/wl/# (allowed) and other/# (denied) */
    CHECK(xfer(fd,
               "\x82\x18\x00\x07\x00\x09"
               "apps/wl/#\x01\x00\x07other/#\x00",
               26, r, sizeof(r)) == 6 &&
          memcmp(r, "\x90\x04\x00\x07\x01\x80", 6) == 0);
    close(fd);

    hd_broker_remove_user(b, "wl");
    fd = client();
    CHECK(xfer(fd, CONNECT_WL("secret"), 27, r, sizeof(r)) == 4 && r[3] == 4);
    close(fd);

    struct hd_broker_stats st;
    hd_broker_get_stats(b, &st);
    CHECK(st.clients_total == 1 && st.clients_connected == 0);
    hd_broker_free(b);
    hd_loop_free(loop);
    CHECK_DONE();
}
