/*
 * resolve.h — name resolution that never blocks the ring.
 *
 * getaddrinfo() runs on a small pool of resolver threads (it honours
 * /etc/hosts, nsswitch and resolv.conf exactly like the rest of the system,
 * which c-ares would not); finished lookups are queued and the ring is woken
 * through an eventfd it reads, so callbacks run on the loop thread.
 * The number of queued and running lookups is bounded.
 */
#ifndef ANYPROXY_RESOLVE_H
#define ANYPROXY_RESOLVE_H

#include <netdb.h>
#include <stdint.h>

#include "anyproxy/ring.h"

struct resolver;
struct resolve_req;

/* gai_error: 0, or a getaddrinfo EAI_* code (use gai_strerror). res is
 * freed after the callback returns. */
typedef void (*resolve_cb)(void *ctx, int gai_error, const struct addrinfo *res);

/* threads: worker count; max_pending: bound on queued+running lookups. */
struct resolver *resolver_new(struct ring *r, unsigned threads, unsigned max_pending);
/* Stops the workers (waits for running lookups) and frees everything;
 * callbacks of unfinished lookups are not called. */
void resolver_free(struct resolver *res);

/* Start a lookup of host:port (TCP). NULL with errno = EAGAIN when the
 * bound is reached, ENOMEM, or EINVAL for an over-long host. */
struct resolve_req *resolver_lookup(struct resolver *res, const char *host, uint16_t port,
				    resolve_cb cb, void *ctx);
/* The callback of req will not be called; the request is freed when its
 * worker is done with it. */
void resolver_cancel(struct resolve_req *req);

#endif
