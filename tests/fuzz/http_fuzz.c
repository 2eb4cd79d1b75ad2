/*
 * http_fuzz.c: libFuzzer target for the HTTP server (built with -DTG_FUZZ=ON and clang).
 *
 * One server runs on a loop for the whole process. Each input is sent over a fresh loopback
 * connection, followed by a half-close; the loop then turns until the server has closed the
 * connection, so the parser, the limits, pipelining, the error answers and the lingering
 * close all run on fuzzer bytes. Small limits make the 431 and 413 paths reachable.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/server.h"

static uv_loop_t loop;
static struct tg_http_server *server;
static int port;

static void
on_request(struct tg_http_req *req, void *ctx)
{
    const char *q = tg_http_req_query(req, "a");
    const char *all[4];
    tg_http_req_query_all(req, "b", all, 4);
    tg_http_req_header(req, "content-type");
    if (req->body.len % 2 == 0) {
        tg_http_respond(req, 200, "text/plain", NULL, 0, q != NULL ? q : "", q ? strlen(q) : 0);
        return;
    }
    tg_http_stream_begin(req, 200, "text/event-stream", NULL, 0);
    tg_http_stream_write(req, req->body.data, req->body.len);
    tg_http_stream_end(req);
}

static void
setup(void)
{
    uv_loop_init(&loop);
    struct tg_http_limits l;
    tg_http_limits_default(&l);
    l.max_header_bytes = 512;
    l.max_headers = 8;
    l.max_body_bytes = 256;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    socklen_t len = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    port = ntohs(sa.sin_port);
    if (tg_http_server_new(&loop, "127.0.0.1", port, &l, on_request, NULL, &server) != 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (server == NULL) {
        setup();
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* a loopback connect completes from the backlog, before the loop accepts */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        abort();
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    size_t sent = 0;
    bool is_shut = false;
    bool is_eof = false;
    /* bounded: the server closes within its linger time at worst */
    for (int turns = 0; turns < 100000 && !is_eof; turns++) {
        if (sent < size) {
            ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            sent += n > 0 ? (size_t)n : 0;
        } else if (!is_shut) {
            shutdown(fd, SHUT_WR);
            is_shut = true;
        }
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        is_eof = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    close(fd);
    while (tg_http_server_connections(server) > 0) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    return 0;
}
