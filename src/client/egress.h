/*
 * egress.h — the agent's way out through an HTTP proxy ([client]
 * egress_proxy), private to src/client/.
 *
 * A link whose network allows only HTTP egress resolves and connects to the
 * proxy instead of the gateway (agent.c), then hands the socket here: we
 * send "CONNECT gateway-host:port" (with Basic credentials when the URL has
 * them, http_connect.h), read the answer's heads under the handshake
 * deadline, and give the socket back for TLS to the gateway. The answer is
 * read with MSG_PEEK and only its heads are taken off the socket, so any
 * byte the proxy relays after them stays queued for TLS: nothing is dropped
 * and nothing is copied across.
 *
 * Every failure is logged here at WARN with the gateway, the replica and
 * the proxy's host:port (never its credentials); the link then retries with
 * its backoff.
 */
#ifndef ANYPROXY_EGRESS_H
#define ANYPROXY_EGRESS_H

#include <stdint.h>

#include "anyproxy/config.h"
#include "anyproxy/ring.h"

struct egress_dial;

/* The exchange is over. Success: fd is the tunnel's socket (the caller owns
 * it now), error NULL. Failure: fd is -1 (closed), error says why, for the
 * reconnect line; it lives only during the call. */
typedef void (*egress_done_fn)(void *owner, int fd, const char *error);

/* What the exchange needs; every string is copied or used only during
 * egress_dial_start. */
struct egress_target {
	const char *authority;    /* the gateway as host:port or [v6]:port */
	const char *gateway_name; /* gateway= of log lines */
	unsigned replica;
	const struct config_egress_proxy *proxy; /* host:port and credentials */
	uint32_t timeout_ms;                     /* for the whole exchange */
};

/*
 * Start the exchange on fd, a socket connected to the proxy; fd belongs to
 * the exchange until done is called (exactly once, never from inside this
 * call). Cancelling every operation on fd (ring_cancel_fd, as a stopping
 * agent does) ends it with done(owner, -1, "cancelled"). Returns 0, or
 * -ENOMEM / -EINVAL (fd closed, done not called).
 */
int egress_dial_start(struct ring *r, int fd, const struct egress_target *target,
		      egress_done_fn done, void *owner);

/* "host:port" of the proxy for log lines, or "none". */
void egress_proxy_name(const struct config_egress_proxy *proxy, char *buf, size_t len);

#endif
