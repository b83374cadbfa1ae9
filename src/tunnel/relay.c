/* relay.c — a socket paired with a stream (see relay.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/relay.h"

static void relay_arm_recv(struct relay *r);

_Static_assert(BUFRING_HEADROOM >= FRAME_HEADER_SIZE, "no room for a frame header");
static void relay_arm_send(struct relay *r);
static void tls_received(struct relay *r, const uint8_t *p, size_t n);
static void tls_peer_closed(struct relay *r);
static void tls_deliver(struct relay *r);
static void tls_kick(struct relay *r);
static bool tls_notify(struct relay *r);

/* Where bytes for the socket wait: wolfSSL's output when the socket speaks
 * TLS (relay_write encrypts into it), else the relay's own queue. */
static inline struct buf *out_queue(struct relay *r)
{
	return r->tls ? &r->tls->conn.out : &r->out;
}

/* ---- teardown ---- */

/* Keep why as the close reason (a copy: the caller's text may be on its
 * stack). Without memory the previous reason, or none, stays. */
static void set_why(struct relay *r, const char *why)
{
	char *copy;

	if (!why || why == r->why)
		return;
	copy = strndup(why, RELAY_WHY_MAX - 1);
	if (!copy)
		return;
	free(r->why);
	r->why = copy;
}

static void relay_release(struct relay *r)
{
	char *why;

	if (!r->closing || r->inflight)
		return;
	close(r->fd);
	r->fd = -1;
	buf_release(&r->out);
	buf_release(&r->sending);
	buf_release(&r->pending);
	if (r->tls) {
		tls_conn_free(&r->tls->conn);
		free(r->tls);
		r->tls = NULL;
	}
	why = r->why;
	r->why = NULL;
	r->ops->on_closed(r, why ? why : "closed"); /* may free r */
	free(why);
}

static void close_done(struct ring *ring, struct ring_op *op, int res, uint32_t flags)
{
	struct relay *r = container_of(op, struct relay, close_op);

	r->inflight--;
	relay_release(r);
}

static void relay_finish(struct relay *r, const char *why, bool abort)
{
	struct io_uring_sqe *sqe;

	if (r->closing)
		return;
	r->closing = true;
	set_why(r, why);
	if (r->stream.tunnel) {
		if (abort)
			stream_reset(&r->stream, FRAME_OPEN_GENERAL);
		else
			stream_detach(&r->stream);
	}
	if (abort) {
		/* the user or target sees a reset, not a clean end */
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(r->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	/* ends the operations in flight; a clean end with none (both sides
	 * closed, all sent: the usual one) leaves the FIN to close() and
	 * saves the call, which would fail with ENOTCONN there anyway */
	if (abort || r->recv_armed || r->send_armed)
		shutdown(r->fd, SHUT_RDWR);
	if (r->recv_armed || r->send_armed)
		ring_cancel_fd(r->ring, r->fd);
	/* free in a completion, never under the caller */
	sqe = ring_get_sqe(r->ring);
	io_uring_prep_nop(sqe);
	r->close_op.cb = close_done;
	ring_sqe_set_op(sqe, &r->close_op);
	r->inflight++;
}

void relay_close(struct relay *r, const char *why)
{
	relay_finish(r, why, true);
}

/* Pump mode: both directions are done. */
static void relay_check_done(struct relay *r)
{
	if (!r->pumping || r->closing)
		return;
	if (r->sock_eof && r->stream.fin_sent && r->stream.fin_received && r->shut_wr &&
	    !buf_used(&r->out) && !buf_used(&r->sending))
		relay_finish(r, "closed by both sides", false);
}

/* ---- socket -> stream ---- */

/* Keep socket bytes the stream has no room for yet. An empty pending
 * buffer starts FRAME_HEADER_SIZE bytes in, so that its bytes can later
 * go out in place (send_pending) like a receive buffer's. */
static int pending_keep(struct relay *r, const uint8_t *p, size_t n)
{
	if (!buf_used(&r->pending)) {
		long room = buf_reserve(&r->pending, FRAME_HEADER_SIZE + n);

		if (room < 0)
			return (int)room;
		r->pending.off = r->pending.len = FRAME_HEADER_SIZE;
	}
	return buf_append(&r->pending, p, n);
}

static int send_pending(struct relay *r, size_t n)
{
	/* pending_keep left header room in front; once the bytes were moved
	 * (appended to while not empty: rare) the copying write does */
	if (r->pending.off >= FRAME_HEADER_SIZE)
		return stream_write_in_place(&r->stream, buf_head(&r->pending), n);
	return stream_write(&r->stream, buf_head(&r->pending), n);
}

/* Move pending socket bytes into the stream as far as room allows. */
static int pump_pending(struct relay *r)
{
	size_t n = buf_used(&r->pending);
	size_t room;

	if (!n)
		return 0;
	room = stream_send_room(&r->stream);
	if (room < n) {
		if (room && send_pending(r, room) < 0)
			return -EPIPE;
		buf_consume(&r->pending, room);
		stream_want_writable(&r->stream);
		return 1;
	}
	if (send_pending(r, n) < 0)
		return -EPIPE;
	buf_consume(&r->pending, n);
	buf_release(&r->pending);
	return 0;
}

static void socket_eof(struct relay *r)
{
	r->sock_eof = true;
	if (!r->pumping) {
		r->ops->on_socket_data(r, NULL, 0);
		return;
	}
	if (buf_used(&r->pending))
		return; /* FIN goes after the pending bytes */
	stream_send_fin(&r->stream);
	relay_check_done(r);
}

static void recv_done(struct ring *ring, struct ring_op *op, int res, uint32_t flags)
{
	struct relay *r = container_of(op, struct relay, recv_op);
	int bid = bufring_cqe_bid(flags);

	r->inflight--;
	r->recv_armed = false;
	r->recv_cancelled = false;
	if (res == -ECANCELED && !r->closing && !r->pumping && !r->reading)
		return; /* relay_cancel_recv: nothing came, nothing to do */
	if (r->closing || res < 0 || res == 0) {
		if (bid >= 0)
			bufring_recycle(r->bufs, (uint16_t)bid);
		if (r->closing) {
			relay_release(r);
		} else if (res == -ENOBUFS) {
			/* every buffer is taken this instant: try again */
			relay_arm_recv(r);
		} else if (res == 0) {
			if (r->tls)
				tls_peer_closed(r);
			else
				socket_eof(r);
		} else {
			char why[96];

			snprintf(why, sizeof(why), "socket receive failed: %s", strerror(-res));
			relay_close(r, why);
		}
		return;
	}
	r->bytes_up += (uint64_t)res;
	r->last_active_ms = now_ms();
	r->read_dry = (size_t)res < BUFRING_BUF_SIZE;
	if (r->tls) {
		/* ciphertext: only what it decrypts to reaches owner or stream */
		tls_received(r, bufring_addr(r->bufs, (uint16_t)bid), (size_t)res);
		bufring_recycle(r->bufs, (uint16_t)bid);
		return;
	}
	if (!r->pumping) {
		r->ops->on_socket_data(r, bufring_addr(r->bufs, (uint16_t)bid), (size_t)res);
		bufring_recycle(r->bufs, (uint16_t)bid);
	} else {
		uint8_t *p = bufring_addr(r->bufs, (uint16_t)bid);
		size_t now = buf_used(&r->pending) ? 0
						   : MIN(stream_send_room(&r->stream), (size_t)res);
		int ret = 0;

		/* what the stream takes now goes straight from the receive
		 * buffer into the tunnel, each DATA frame's header written in
		 * the buffer's headroom or over bytes already encrypted; only
		 * the rest is kept */
		if (now)
			ret = stream_write_in_place(&r->stream, p, now);
		if (ret == 0 && now < (size_t)res) {
			ret = pending_keep(r, p + now, (size_t)res - now);
			if (ret == 0 && pump_pending(r) < 0)
				ret = -EPIPE;
		}
		bufring_recycle(r->bufs, (uint16_t)bid);
		if (ret < 0) {
			relay_close(r, "stream gone");
			return;
		}
	}
	relay_arm_recv(r);
}

static void relay_arm_recv(struct relay *r)
{
	size_t len = BUFRING_BUF_SIZE;

	if (r->recv_armed || r->closing || r->sock_eof)
		return;
	if (r->tls && r->tls->conn.peer_closed)
		return;
	if (r->pumping) {
		if (buf_used(&r->pending))
			return; /* waiting for room */
		len = stream_send_room(&r->stream);
		if (!len) {
			stream_want_writable(&r->stream);
			return;
		}
		/* records do not fit a small room: take a whole receive, the
		 * plaintext leaves wolfSSL only as room allows (tls_deliver) */
		if (r->tls)
			len = BUFRING_BUF_SIZE;
	} else if (!r->reading) {
		return;
	}
	r->recv_op.cb = recv_done;
	bufring_prep_recv(r->bufs, r->ring, &r->recv_op, r->fd, len, r->read_dry);
	r->recv_armed = true;
	r->inflight++;
}

void relay_cancel_recv(struct relay *r)
{
	if (!r->recv_armed || r->recv_cancelled)
		return;
	r->recv_cancelled = true;
	ring_cancel_op(r->ring, &r->recv_op);
}

void relay_read(struct relay *r, bool on)
{
	r->reading = on;
	if (on && r->tls)
		tls_kick(r); /* plaintext may be waiting inside wolfSSL already */
	else if (on)
		relay_arm_recv(r);
	/* turning it off lets an armed receive complete; its data is still
	 * delivered (the owner buffers at most one receive) */
}

/* ---- stream -> socket ---- */

static size_t queued_out(struct relay *r)
{
	return buf_used(out_queue(r)) + buf_used(&r->sending);
}

/* Is there room in the queue for n more bytes? Its bound follows the
 * window the stream granted, so bytes the owner rewrites longer (HTTP
 * heads) overflow it as they did before the window grew. */
static bool out_room(struct relay *r, size_t n)
{
	return queued_out(r) + n <=
	       MAX(r->stream.recv_window, (uint32_t)STREAM_WINDOW_BYTES) + RELAY_OUT_SLACK;
}

/* sent bytes left the queue: return the stream credit they carried. */
static void return_credit(struct relay *r, size_t sent)
{
	size_t left = queued_out(r);
	size_t c = MIN(sent, r->out_stream_debt);

	/* TLS: the queue is ciphertext, larger than the plaintext it carries
	 * by every record's own bytes. Byte for byte, credit would run ahead
	 * of the plaintext sent by that much each time, and the queue would
	 * grow as long as it never empties; the debt's share of what was sent
	 * keeps credit and plaintext together. */
	if (r->tls && left)
		c = (size_t)((uint64_t)r->out_stream_debt * sent / (left + sent));
	if (!left)
		c = r->out_stream_debt; /* drained: whatever rewriting did, all is out */
	r->out_stream_debt -= c;
	if (c && r->stream.tunnel)
		stream_consumed(&r->stream, c);
}

static void after_send_drained(struct relay *r)
{
	bool shut = r->pumping ? r->stream.fin_received : r->shut_after_send;

	if (r->close_after_send && !queued_out(r)) {
		if (tls_notify(r))
			return; /* finish once the close_notify is out */
		relay_finish(r, r->why, false);
		return;
	}
	if (queued_out(r) || r->shut_wr || !shut)
		return;
	if (tls_notify(r))
		return;
	shutdown(r->fd, SHUT_WR);
	r->shut_wr = true;
	relay_check_done(r);
}

static void send_done(struct ring *ring, struct ring_op *op, int res, uint32_t flags)
{
	struct relay *r = container_of(op, struct relay, send_op);

	r->inflight--;
	r->send_armed = false;
	if (r->closing) {
		relay_release(r);
		return;
	}
	if (res < 0) {
		char why[96];

		snprintf(why, sizeof(why), "socket send failed: %s", strerror(-res));
		relay_close(r, why);
		return;
	}
	buf_consume(&r->sending, (size_t)res);
	r->bytes_down += (uint64_t)res;
	r->last_active_ms = now_ms();
	return_credit(r, (size_t)res);
	if (queued_out(r)) {
		relay_arm_send(r);
		return;
	}
	buf_release(&r->sending);
	buf_release(out_queue(r));
	after_send_drained(r);
}

static void relay_arm_send(struct relay *r)
{
	if (r->send_armed || r->closing || r->corked)
		return;
	if (!buf_used(&r->sending) && buf_used(out_queue(r))) {
		/* the kernel owns `sending` until the completion; new bytes go
		 * to the queue meanwhile */
		struct buf *q = out_queue(r);
		struct buf tmp = r->sending;

		r->sending = *q;
		*q = tmp;
	}
	if (!buf_used(&r->sending))
		return;
	r->send_op.cb = send_done;
	ring_prep_send(r->ring, &r->send_op, r->fd, buf_head(&r->sending), buf_used(&r->sending));
	r->send_armed = true;
	r->inflight++;
}

int relay_write(struct relay *r, const void *p, size_t n, size_t stream_bytes)
{
	int ret;

	if (r->closing || r->shut_wr)
		return -EPIPE;
	if (r->tls && (r->tls->notify_sent || !r->tls->secure))
		return -EPIPE;
	/* over TLS the bound is the plain queue's: the slack is the records' own */
	if (!out_room(r, n))
		return -ENOBUFS;
	if (r->tls) {
		ret = tls_write(&r->tls->conn, p, n);
		if (ret < 0)
			return ret == -ENOBUFS ? ret : -EPIPE;
	} else {
		ret = buf_append(&r->out, p, n);
		if (ret < 0)
			return ret;
	}
	r->out_stream_debt += stream_bytes;
	relay_arm_send(r);
	return 0;
}

void relay_cork(struct relay *r)
{
	r->corked = true;
}

void relay_uncork(struct relay *r)
{
	r->corked = false;
	relay_arm_send(r);
}

void relay_close_after_send(struct relay *r, const char *why)
{
	if (r->closing)
		return;
	set_why(r, why);
	r->close_after_send = true;
	r->reading = false;
	if (r->stream.tunnel)
		stream_reset(&r->stream, FRAME_OPEN_GENERAL);
	after_send_drained(r);
}

void relay_shutdown_write(struct relay *r)
{
	r->shut_after_send = true;
	after_send_drained(r);
}

/* ---- pump mode: the stream's events ---- */

static int pump_on_data(struct stream *s, const uint8_t *p, size_t n)
{
	struct relay *r = s->owner;

	return relay_write(r, p, n, n);
}

/* relay_write without the copy: the tunnel decrypts into our queue. Not
 * over TLS: there the queue holds ciphertext, and the plaintext must go
 * through tls_write (on_data). */
static uint8_t *pump_data_buffer(struct stream *s, size_t n)
{
	struct relay *r = s->owner;

	if (r->tls || r->closing || r->shut_wr || !out_room(r, n) || buf_reserve(&r->out, n) < 0)
		return NULL; /* on_data encrypts, or says why not */
	return r->out.data + r->out.len;
}

static int pump_data_written(struct stream *s, size_t n)
{
	struct relay *r = s->owner;

	r->out.len += n;
	r->out_stream_debt += n;
	relay_arm_send(r);
	return 0;
}

static void pump_on_fin(struct stream *s)
{
	struct relay *r = s->owner;

	after_send_drained(r);
	relay_check_done(r);
}

static void pump_on_reset(struct stream *s, uint8_t reason, const char *why)
{
	struct relay *r = s->owner;

	relay_close(r, why);
}

static void pump_on_writable(struct stream *s)
{
	struct relay *r = s->owner;
	int ret = pump_pending(r);

	if (ret < 0) {
		relay_close(r, "stream gone");
		return;
	}
	if (ret == 0 && r->sock_eof && !r->stream.fin_sent) {
		stream_send_fin(&r->stream);
		relay_check_done(r);
		return;
	}
	if (r->tls)
		tls_deliver(r); /* decrypted as room allows, then receives */
	else
		relay_arm_recv(r);
}

const struct stream_ops relay_pump_ops = {
	.on_data = pump_on_data,
	.data_buffer = pump_data_buffer,
	.data_written = pump_data_written,
	.on_fin = pump_on_fin,
	.on_reset = pump_on_reset,
	.on_writable = pump_on_writable,
};

void relay_pump(struct relay *r, const uint8_t *first, size_t n)
{
	r->pumping = true;
	r->stream.ops = &relay_pump_ops;
	r->stream.owner = r;
	if (n && pending_keep(r, first, n) < 0) {
		relay_close(r, "out of memory");
		return;
	}
	pump_on_writable(&r->stream);
	after_send_drained(r);
}

void relay_init(struct relay *r, struct ring *ring, struct bufring *bufs, int fd,
		const struct relay_ops *ops)
{
	struct stream keep = r->stream;

	/* the stream may already be linked (the agent accepts it before the
	 * target is connected): everything else starts from zero */
	memset(r, 0, sizeof(*r));
	r->stream = keep;
	r->ring = ring;
	r->bufs = bufs;
	r->fd = fd;
	r->ops = ops;
	buf_init(&r->out, RELAY_OUT_MAX);
	buf_init(&r->sending, RELAY_OUT_MAX);
	buf_init(&r->pending, RELAY_PENDING_MAX);
}

/* ---- TLS transport (relay_tls_start) ---- */

/* Words in the log for "TLS", kept short: a reason is at most RELAY_WHY_MAX. */
static void tls_failed(struct relay *r, const char *what, const char *err)
{
	char why[RELAY_WHY_MAX];

	snprintf(why, sizeof(why), "%.24s: %.100s", what, err);
	relay_arm_send(r); /* an alert wolfSSL queued goes out first */
	relay_close_after_send(r, why);
}

/* The handshake, then the plaintext to whoever takes it. */
static void tls_process(struct relay *r)
{
	struct relay_tls *t = r->tls;
	char err[100];
	int ret;

	if (r->closing || t->secure) {
		tls_deliver(r);
		return;
	}
	if (!t->conn.ssl) {
		const uint8_t *h = buf_head(&t->conn.in);

		/* no session (tens of KiB) for what is not a ClientHello: a
		 * plain-HTTP client or a scanner costs the bytes it sent */
		if (buf_used(&t->conn.in) && h[0] != TLS_RECORD_HANDSHAKE) {
			tls_failed(r, "TLS handshake failed",
				   "not TLS (plain text to a TLS port?)");
			return;
		}
		if (!tls_first_record_in(&t->conn)) {
			if (t->conn.peer_closed)
				relay_close_after_send(r, "closed before the TLS handshake");
			else
				relay_arm_recv(r);
			return;
		}
		if (tls_conn_start(&t->conn, true, NULL) < 0 ||
		    (t->alpn && tls_conn_set_alpn(&t->conn, t->alpn) < 0)) {
			relay_close(r, "out of memory for a TLS session");
			return;
		}
	}
	ret = tls_handshake(&t->conn, err, sizeof(err));
	if (ret < 0) {
		tls_failed(r, "TLS handshake failed", err);
		return;
	}
	relay_arm_send(r);
	if (ret == 0) {
		if (!buf_used(&t->conn.in))
			buf_release(&t->conn.in);
		if (t->conn.peer_closed)
			relay_close_after_send(r, "closed during the TLS handshake");
		else
			relay_arm_recv(r);
		return;
	}
	t->secure = true;
	log_debug("User TLS established", LF_S("version", tls_conn_version(&t->conn)),
		  LF_S("cipher", tls_conn_cipher(&t->conn)), LF_S("alpn", tls_conn_alpn(&t->conn)));
	tls_deliver(r);
}

/* Decrypt while the taker takes: the owner while it reads, the stream
 * while it has room (its credit counts plaintext). Receives again only
 * once wolfSSL needs more ciphertext, so that nothing piles up inside. */
static void tls_deliver(struct relay *r)
{
	uint8_t plain[TLS_PLAINTEXT_MAX_BYTES];
	struct relay_tls *t = r->tls;
	char err[100];

	for (;;) {
		size_t want = sizeof(plain);
		int n;

		if (r->closing || r->sock_eof || !t->secure)
			return;
		if (r->pumping) {
			int ret = pump_pending(r);

			if (ret < 0) {
				relay_close(r, "stream gone");
				return;
			}
			if (ret > 0)
				return; /* on_writable brings us back */
			want = MIN(want, stream_send_room(&r->stream));
			if (!want) {
				stream_want_writable(&r->stream);
				return;
			}
		} else if (!r->reading) {
			return; /* relay_read(true) kicks us again */
		}
		n = tls_read(&t->conn, plain, want, err, sizeof(err));
		relay_arm_send(r); /* what reading made wolfSSL write */
		if (n == 0 && !t->conn.peer_closed) {
			if (!buf_used(&t->conn.in))
				buf_release(&t->conn.in);
			relay_arm_recv(r);
			return;
		}
		if (n == 0 || n == -EPIPE) {
			socket_eof(r); /* close_notify, or EOF after the last record */
			return;
		}
		if (n < 0) {
			char why[RELAY_WHY_MAX];

			snprintf(why, sizeof(why), "TLS error: %s", err);
			relay_close(r, why);
			return;
		}
		if (!r->pumping)
			r->ops->on_socket_data(r, plain, (size_t)n);
		else if (stream_write(&r->stream, plain, (size_t)n) < 0) {
			relay_close(r, "stream gone");
			return;
		}
	}
}

static void tls_received(struct relay *r, const uint8_t *p, size_t n)
{
	struct relay_tls *t = r->tls;
	/* before the session, an allocation of exactly what came (as the
	 * tunnel's pre-authentication receive) */
	int ret = t->conn.ssl ? buf_append(&t->conn.in, p, n) : buf_append_exact(&t->conn.in, p, n);

	if (ret < 0) {
		relay_close(r, "TLS input buffer full");
		return;
	}
	tls_process(r);
}

static void tls_peer_closed(struct relay *r)
{
	r->tls->conn.peer_closed = true;
	tls_process(r);
}

static void kick_done(struct ring *ring, struct ring_op *op, int res, uint32_t flags)
{
	struct relay_tls *t = container_of(op, struct relay_tls, kick_op);
	struct relay *r = t->kick_owner;

	r->inflight--;
	t->kick_armed = false;
	if (r->closing) {
		relay_release(r);
		return;
	}
	tls_process(r);
}

/* Deliver from a completion, never under relay_read's caller (an owner
 * that turns reading on mid-callback must not be re-entered). */
static void tls_kick(struct relay *r)
{
	struct relay_tls *t = r->tls;
	struct io_uring_sqe *sqe;

	if (t->kick_armed || r->closing)
		return;
	sqe = ring_get_sqe(r->ring);
	io_uring_prep_nop(sqe);
	t->kick_op.cb = kick_done;
	ring_sqe_set_op(sqe, &t->kick_op);
	t->kick_armed = true;
	r->inflight++;
}

/* Before our side of the socket closes: a close_notify, so that the peer
 * can tell the end from a truncation. True when one was queued (the caller
 * goes on once it is sent). */
static bool tls_notify(struct relay *r)
{
	struct relay_tls *t = r->tls;

	if (!t || !t->secure || t->notify_sent)
		return false;
	t->notify_sent = true;
	tls_shutdown(&t->conn);
	if (!queued_out(r))
		return false;
	relay_arm_send(r);
	return true;
}

int relay_tls_start(struct relay *r, struct WOLFSSL_CTX *ctx, const char *alpn)
{
	struct relay_tls *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	if (tls_conn_prepare(&t->conn, ctx) < 0) {
		tls_conn_free(&t->conn);
		free(t);
		return -ENOMEM;
	}
	/* the queue swaps with `sending`: both take a full queue plus the
	 * records' overhead, so wolfSSL never meets a full buffer */
	buf_init(&t->conn.out, RELAY_OUT_MAX + RELAY_TLS_OUT_SLACK);
	buf_init(&r->sending, RELAY_OUT_MAX + RELAY_TLS_OUT_SLACK);
	t->alpn = alpn;
	t->kick_owner = r;
	r->tls = t;
	return 0;
}
