/*
 * server/hello.c — the built-in C handler: 200 "Hello, world!" on the I/O thread.
 *
 * The native ceiling of the server (benchmarked against nginx `return 200`): the response
 * head is formatted into the request's arena and goes out with the static body in one
 * writev; no malloc, no cross-thread hop.  Keep-alive, pipelining, HEAD and unread request
 * bodies are handled by the common response path.
 */
#include "server_internal.h"

static void hello_on_request(sh_handler *h, sh_request *r) {
  (void)h;
  static const char body[] = "Hello, world!";
  sh_req *req = (sh_req *)r;
  sh_http_respond_fixed(req, 200, "text/plain", body, sizeof body - 1);
  sh_request_release(r);
}

static sh_handler hello = {
    .data = NULL,
    .on_request = hello_on_request,
};

sh_handler *sh_hello_handler(void) {
  return &hello;
}
