/* egress.c — CONNECT through the agent's egress proxy (see egress.h). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/http_connect.h"
#include "anyproxy/log.h"
#include "egress.h"

/* How much of a proxy's reason phrase a log line repeats. */
#define EGRESS_REASON_LOG_BYTES 128
/* The error handed to the link for its reconnect line (which names the
 * gateway; the WARN before it names the proxy). */
#define EGRESS_ERROR_BYTES 256
/* What the socket did: an errno text and what was going on. */
#define EGRESS_IO_TEXT_BYTES 128
/* "host:port" or "[v6]:port" of the proxy. */
#define EGRESS_PROXY_NAME_BYTES (sizeof(((struct config_addr *)0)->host) + sizeof("[]:65535"))
#define EGRESS_GATEWAY_NAME_BYTES EGRESS_PROXY_NAME_BYTES

enum egress_phase { EGRESS_SEND, EGRESS_PEEK };

struct egress_dial {
	struct ring *ring;
	int fd;
	enum egress_phase phase;
	struct ring_op op; /* the one operation in flight: a send or a peek */
	struct timer deadline;
	bool timed_out;
	egress_done_fn done;
	void *owner;
	unsigned replica;
	char gateway[EGRESS_GATEWAY_NAME_BYTES];
	char proxy[EGRESS_PROXY_NAME_BYTES];
	size_t request_len, sent;
	size_t taken; /* bytes of the answer's heads already taken off the socket */
	uint8_t request[HTTP_CONNECT_REQUEST_MAX_BYTES]; /* holds the credentials: wiped */
	uint8_t reply[HTTP_CONNECT_REPLY_MAX_BYTES];
};

void egress_proxy_name(const struct config_egress_proxy *proxy, char *buf, size_t len)
{
	if (proxy->addr.set)
		config_addr_format(&proxy->addr, buf, len);
	else
		snprintf(buf, len, "none");
}

/* End the exchange: fd goes to the owner (ok) or is closed. */
static void finish(struct egress_dial *d, bool ok, const char *error)
{
	char copy[EGRESS_ERROR_BYTES];
	egress_done_fn done = d->done;
	void *owner = d->owner;
	int fd = d->fd;

	timer_disarm(d->ring, &d->deadline);
	if (!ok) {
		snprintf(copy, sizeof(copy), "%s", error);
		close(fd);
		fd = -1;
	}
	explicit_bzero(d->request, sizeof(d->request));
	free(d);
	done(owner, fd, ok ? NULL : copy);
}

/* The socket failed (res < 0), or the proxy closed it (res 0); what says
 * when ("while sending CONNECT", "before answering CONNECT"). Or the
 * deadline passed (what and res unused). */
static void fail_io(struct egress_dial *d, const char *what, int res)
{
	char text[EGRESS_IO_TEXT_BYTES], error[EGRESS_ERROR_BYTES];

	if (d->timed_out) {
		log_warn("Egress proxy did not answer CONNECT in time", LF_S("gateway", d->gateway),
			 LF_U("replica", d->replica), LF_S("proxy", d->proxy));
		snprintf(error, sizeof(error), "egress proxy: no answer to CONNECT in time");
	} else if (res == -ECANCELED) {
		snprintf(error, sizeof(error), "cancelled"); /* the agent is stopping */
	} else {
		snprintf(text, sizeof(text), "%s %s",
			 res ? strerror(-res) : "closed the connection", what);
		log_warn("Egress proxy connection failed", LF_S("gateway", d->gateway),
			 LF_U("replica", d->replica), LF_S("proxy", d->proxy), LF_S("error", text));
		snprintf(error, sizeof(error), "egress proxy: %s", text);
	}
	finish(d, false, error);
}

/* Shut the socket rather than cancel by fd: the operation in flight
 * completes at once (0 or -EPIPE) and no cancellation is left pending for a
 * descriptor number that may be reused after we close it. */
static void deadline_expired(struct ring *r, struct timer *t)
{
	struct egress_dial *d = container_of(t, struct egress_dial, deadline);

	d->timed_out = true;
	shutdown(d->fd, SHUT_RDWR);
}

static void arm_peek(struct egress_dial *d)
{
	struct io_uring_sqe *sqe = ring_get_sqe(d->ring);

	/* peek: only the heads are taken off the socket (take_heads), so what
	 * follows them stays queued for TLS */
	io_uring_prep_recv(sqe, d->fd, d->reply + d->taken, sizeof(d->reply) - d->taken, MSG_PEEK);
	ring_sqe_set_op(sqe, &d->op);
	d->phase = EGRESS_PEEK;
}

/* Take n peeked bytes off the socket: they are queued, so this never waits. */
static int take(struct egress_dial *d, size_t n)
{
	ssize_t got = recv(d->fd, d->reply + d->taken, n, MSG_DONTWAIT);

	if (got < 0)
		return -errno;
	if ((size_t)got != n)
		return -EIO;
	d->taken += n;
	return 0;
}

static void answered(struct egress_dial *d, const struct http_connect_reply *reply)
{
	char reason[EGRESS_REASON_LOG_BYTES + 4], error[EGRESS_ERROR_BYTES];
	size_t n = MIN(reply->reason.len, (size_t)EGRESS_REASON_LOG_BYTES);

	if (reply->status >= 200 && reply->status < 300) {
		log_debug("Egress proxy opened the way to the gateway", LF_S("gateway", d->gateway),
			  LF_U("replica", d->replica), LF_S("proxy", d->proxy),
			  LF_U("status", (unsigned)reply->status));
		finish(d, true, NULL);
		return;
	}
	memcpy(reason, reply->reason.ptr, n);
	memcpy(reason + n, n < reply->reason.len ? "..." : "", n < reply->reason.len ? 4 : 1);
	log_warn("Egress proxy refused CONNECT", LF_S("gateway", d->gateway),
		 LF_U("replica", d->replica), LF_S("proxy", d->proxy),
		 LF_U("status", (unsigned)reply->status), LF_S("reason", reason));
	snprintf(error, sizeof(error), "egress proxy refused CONNECT: %d %s", reply->status,
		 reason);
	finish(d, false, error);
}

static void peeked(struct egress_dial *d, int res)
{
	struct http_connect_reply reply;
	char error[EGRESS_ERROR_BYTES];
	const char *why = NULL;
	size_t have;
	ssize_t heads;
	int err;

	if (res <= 0) {
		fail_io(d, "before answering CONNECT", res);
		return;
	}
	have = d->taken + (size_t)res;
	heads = http_connect_reply(d->reply, have, &reply, &why);
	if (heads > 0) {
		err = take(d, (size_t)heads - d->taken);
		if (err) {
			fail_io(d, "while reading the answer to CONNECT", err);
			return;
		}
		answered(d, &reply);
		return;
	}
	if (heads < 0) { /* at the bound the parser refuses: a peek never has 0 room */
		log_warn("Egress proxy sent a malformed answer to CONNECT",
			 LF_S("gateway", d->gateway), LF_U("replica", d->replica),
			 LF_S("proxy", d->proxy), LF_S("error", why));
		snprintf(error, sizeof(error), "egress proxy: malformed answer to CONNECT: %s",
			 why);
		finish(d, false, error);
		return;
	}
	/* every peeked byte belongs to the heads: take them and wait for more */
	err = take(d, (size_t)res);
	if (err) {
		fail_io(d, "while reading the answer to CONNECT", err);
		return;
	}
	arm_peek(d);
}

static void sent(struct egress_dial *d, int res)
{
	if (res <= 0) {
		fail_io(d, "while sending CONNECT", res ? res : -EPIPE);
		return;
	}
	d->sent += (size_t)res;
	explicit_bzero(d->request, MIN(d->sent, d->request_len));
	if (d->sent < d->request_len) {
		ring_prep_send(d->ring, &d->op, d->fd, d->request + d->sent,
			       d->request_len - d->sent);
		return;
	}
	arm_peek(d);
}

static void op_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct egress_dial *d = container_of(op, struct egress_dial, op);

	if (d->timed_out) /* whatever completed, the deadline has passed */
		fail_io(d, "", 0);
	else if (d->phase == EGRESS_SEND)
		sent(d, res);
	else
		peeked(d, res);
}

int egress_dial_start(struct ring *r, int fd, const struct egress_target *target,
		      egress_done_fn done, void *owner)
{
	const struct config_egress_proxy *proxy = target->proxy;
	struct egress_dial *d = calloc(1, sizeof(*d));
	ssize_t n;

	if (!d) {
		close(fd);
		return -ENOMEM;
	}
	n = http_connect_request(d->request, sizeof(d->request), target->authority, proxy->username,
				 proxy->password);
	if (n < 0) {
		/* the config and gateway_addr were validated: a bug if it happens */
		explicit_bzero(d->request, sizeof(d->request));
		free(d);
		close(fd);
		return -EINVAL;
	}
	d->ring = r;
	d->fd = fd;
	d->done = done;
	d->owner = owner;
	d->replica = target->replica;
	d->request_len = (size_t)n;
	snprintf(d->gateway, sizeof(d->gateway), "%s", target->gateway_name);
	egress_proxy_name(proxy, d->proxy, sizeof(d->proxy));
	d->op.cb = op_done;
	d->phase = EGRESS_SEND;
	timer_init(&d->deadline, deadline_expired);
	timer_arm(r, &d->deadline, target->timeout_ms);
	ring_prep_send(r, &d->op, fd, d->request, d->request_len);
	return 0;
}
