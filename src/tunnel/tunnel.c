/* tunnel.c — TLS + framing + liveness over the ring (see tunnel.h). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "anyproxy/tunnel.h"

static void tunnel_flush(struct tunnel *t);
static void tunnel_flush_later(struct tunnel *t);
static int seal_record(struct tunnel *t);
static void tunnel_arm_recv(struct tunnel *t);

/* Until HELLO is answered, a gateway tunnel receives like a user connection:
 * into a buffer of the shared ring, taken only while bytes arrive, keeping
 * just what wolfSSL has not consumed, in an allocation of exactly that size;
 * and it has no TLS session before a whole first record is in. A peer that
 * connects and stalls costs the tunnel object and nothing else. */
static bool preauth(const struct tunnel *t)
{
	return t->preauth_bufs && t->state == TUNNEL_HANDSHAKE;
}

/* Called at the end of every completion: frees the tunnel once closing and
 * no operation is left in flight. */
static void tunnel_release(struct tunnel *t)
{
	if (t->state != TUNNEL_CLOSING || t->inflight)
		return;
	ring_undefer(t->ring, &t->flush_later);
	t->ops->on_closed(t, t->close_reason);
	close(t->fd);
	tls_conn_free(&t->tls);
	buf_release(&t->plain);
	buf_release(&t->record);
	buf_release(&t->sending);
	stream_table_free(&t->streams);
	free(t);
}

static void close_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct tunnel *t = container_of(op, struct tunnel, close_op);

	t->inflight--;
	tunnel_release(t);
}

void tunnel_close(struct tunnel *t, const char *reason)
{
	struct io_uring_sqe *sqe;

	if (t->state == TUNNEL_CLOSING)
		return;
	t->state = TUNNEL_CLOSING;
	/* A drain we began ends with its own reason, even when the peer,
	 * told by our GOAWAY, closes the connection before we do. */
	if (reason != t->close_reason && !t->close_when_idle)
		snprintf(t->close_reason, sizeof(t->close_reason), "%s", reason);
	stream_tunnel_closed(t, t->close_reason);
	timer_disarm(t->ring, &t->deadline);
	timer_disarm(t->ring, &t->ping_timer);
	shutdown(t->fd, SHUT_RDWR);
	if (t->recv_armed || t->send_armed)
		ring_cancel_fd(t->ring, t->fd);
	/* The free always happens in a completion, never under the caller. */
	sqe = ring_get_sqe(t->ring);
	io_uring_prep_nop(sqe);
	t->close_op.cb = close_done;
	ring_sqe_set_op(sqe, &t->close_op);
	t->inflight++;
}

void tunnel_close_after(struct tunnel *t, const struct frame *f, const char *reason)
{
	if (t->state == TUNNEL_CLOSING)
		return;
	if (f)
		tunnel_send(t, f);
	seal_record(t); /* the frames go before close_notify */
	tls_shutdown(&t->tls);
	/* drains pass close_reason itself: copying it onto itself is undefined
	 * (glibc left it empty) */
	if (reason != t->close_reason)
		snprintf(t->close_reason, sizeof(t->close_reason), "%s", reason);
	t->close_when_flushed = true;
	tunnel_flush(t);
}

void tunnel_drain(struct tunnel *t, uint16_t code, const char *message)
{
	struct frame f = { .type = FRAME_GOAWAY };

	if (t->state == TUNNEL_CLOSING || t->close_when_idle)
		return;
	if (t->state != TUNNEL_OPEN) {
		tunnel_close(t, message);
		return;
	}
	f.error.code = code;
	f.error.message.ptr = (const uint8_t *)message;
	f.error.message.len = MIN(strlen(message), (size_t)FRAME_MAX_TEXT_LEN);
	tunnel_send(t, &f);
	snprintf(t->close_reason, sizeof(t->close_reason), "%s", message);
	t->close_when_idle = true;
	if (!t->streams.count)
		tunnel_close_after(t, NULL, t->close_reason);
}

void tunnel_send_error(struct tunnel *t, uint8_t type, uint16_t code, const char *message)
{
	struct frame f = { .type = type };

	f.error.code = code;
	f.error.message.ptr = (const uint8_t *)message;
	f.error.message.len = strlen(message);
	if (f.error.message.len > FRAME_MAX_TEXT_LEN)
		f.error.message.len = FRAME_MAX_TEXT_LEN;
	tunnel_close_after(t, &f, message);
}

/* ---- output ---- */

/* Encrypt the frames gathered in t->record as one TLS record. 0, or
 * -ENOBUFS (TLS output over its bound: they stay, the next flush after a
 * send retries) or -EPROTO. */
static int seal_record(struct tunnel *t)
{
	int ret;

	if (!buf_used(&t->record))
		return 0;
	ret = tls_write(&t->tls, buf_head(&t->record), buf_used(&t->record));
	if (ret < 0)
		return ret;
	buf_consume(&t->record, buf_used(&t->record));
	if (preauth(t))
		buf_release(&t->record);
	return 0;
}

static void send_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct tunnel *t = container_of(op, struct tunnel, send_op);

	t->inflight--;
	t->send_armed = false;
	if (res < 0) {
		if (t->state != TUNNEL_CLOSING) {
			char why[96];

			snprintf(why, sizeof(why), "send failed: %s", strerror(-res));
			tunnel_close(t, why);
		}
	} else if (t->state != TUNNEL_CLOSING) {
		buf_consume(&t->sending, (size_t)res);
		tunnel_flush_later(t);
		if (t->waiters && tunnel_queued(t) < TUNNEL_OUT_BUDGET / 2)
			stream_tunnel_writable(t);
	}
	tunnel_release(t);
}

static void tunnel_flush(struct tunnel *t)
{
	if (t->send_armed || t->state == TUNNEL_CLOSING)
		return;
	if (seal_record(t) == -EPROTO) {
		tunnel_close(t, "TLS encryption failed");
		return;
	}
	if (!buf_used(&t->sending) && buf_used(&t->tls.out)) {
		/* swap: wolfSSL keeps appending to the other buffer while the
		 * kernel owns this one */
		struct buf tmp = t->sending;

		t->sending = t->tls.out;
		t->tls.out = tmp;
	}
	if (!buf_used(&t->sending)) {
		if (t->sending.cap > TUNNEL_RECV_CHUNK || preauth(t))
			buf_release(&t->sending);
		if (t->close_when_flushed)
			tunnel_close(t, t->close_reason);
		return;
	}
	t->send_op.cb = send_done;
	ring_prep_send(t->ring, &t->send_op, t->fd, buf_head(&t->sending), buf_used(&t->sending));
	t->send_armed = true;
	t->inflight++;
}

static void flush_later_run(struct ring *r, struct ring_deferred *d)
{
	tunnel_flush(container_of(d, struct tunnel, flush_later));
}

/* Output made while the loop handles completions leaves in one send, once
 * they are all handled (a stream's 64 KiB of DATA in one send instead of
 * its first record alone, the OPENs and FINs of many streams together). */
static void tunnel_flush_later(struct tunnel *t)
{
	if (!t->send_armed && t->state != TUNNEL_CLOSING)
		ring_defer(t->ring, &t->flush_later);
}

size_t tunnel_queued(const struct tunnel *t)
{
	return buf_used(&t->record) + buf_used(&t->tls.out) + buf_used(&t->sending);
}

int tunnel_send(struct tunnel *t, const struct frame *f)
{
	ssize_t n;
	int ret;

	if (t->state == TUNNEL_CLOSING || t->close_when_flushed)
		return -EPIPE;
	/* t->record holds whole frames from its start (it is only ever
	 * emptied whole), so it has room up to FRAME_MAX_SIZE */
	for (;;) {
		long room = buf_reserve(&t->record, FRAME_MAX_SIZE - buf_used(&t->record));

		if (room < 0)
			return (int)room;
		n = frame_encode(t->record.data + t->record.len, (size_t)room, f);
		if (n != -ENOSPC || !buf_used(&t->record))
			break;
		ret = seal_record(t); /* full: encrypt it, start the next */
		if (ret < 0)
			return ret;
	}
	if (n < 0)
		return (int)n;
	t->record.len += (size_t)n;
	t->bytes_out += (uint64_t)n;
	tunnel_flush_later(t);
	return 0;
}

int tunnel_send_data(struct tunnel *t, uint32_t stream_id, uint8_t *p, size_t len)
{
	uint8_t *frame = p - FRAME_HEADER_SIZE;
	size_t n = FRAME_HEADER_SIZE + len;
	int ret;

	if (len <= TUNNEL_GATHER_MAX) {
		struct frame f = { .type = FRAME_DATA, .stream_id = stream_id };

		f.data.ptr = p;
		f.data.len = len;
		return tunnel_send(t, &f);
	}
	if (t->state == TUNNEL_CLOSING || t->close_when_flushed)
		return -EPIPE;
	ret = seal_record(t); /* the frames before it go first */
	if (ret < 0)
		return ret;
	frame_put_data_header(frame, stream_id, (uint16_t)len);
	ret = tls_write(&t->tls, frame, n);
	if (ret < 0)
		return ret;
	t->bytes_out += (uint64_t)n;
	tunnel_flush_later(t);
	return 0;
}

/* ---- liveness ---- */

void tunnel_suspect(struct tunnel *t, const char *why)
{
	if (t->state != TUNNEL_OPEN || t->suspect)
		return;
	t->suspect = true;
	t->suspect_since_ms = now_ms();
	if (t->ops->on_suspect)
		t->ops->on_suspect(t, true, why);
}

/* Any frame from the peer: it answers. */
static void suspect_clear(struct tunnel *t)
{
	if (!t->suspect || t->state != TUNNEL_OPEN)
		return;
	t->suspect = false;
	if (t->ops->on_suspect)
		t->ops->on_suspect(t, false, NULL);
}

static void ping_fire(struct ring *r, struct timer *tm)
{
	struct tunnel *t = container_of(tm, struct tunnel, ping_timer);
	struct frame f = { .type = FRAME_PING };
	uint64_t now = now_ms();

	/* nothing at all came in since our last PING, a whole interval ago */
	if (t->ping_sent_ms && t->last_rx_ms < t->ping_sent_ms)
		tunnel_suspect(t, "no PONG within ping_interval_ms");
	t->ping_sent_ms = now;
	put_be64(f.ping.opaque, now);
	tunnel_send(t, &f);
	timer_arm(r, &t->ping_timer, t->ping_interval_ms);
}

static void deadline_fire(struct ring *r, struct timer *tm)
{
	struct tunnel *t = container_of(tm, struct tunnel, deadline);
	uint64_t silent;
	char why[96];

	if (t->state == TUNNEL_HANDSHAKE) {
		tunnel_close(t, "handshake deadline passed");
		return;
	}
	if (timer_rearm_unless_idle(r, &t->deadline, t->last_rx_ms, t->ping_timeout_ms, &silent))
		return;
	snprintf(why, sizeof(why), "no frame from peer for %llu ms (liveness deadline)",
		 (unsigned long long)silent);
	tunnel_close(t, why);
}

void tunnel_established(struct tunnel *t, uint32_t ping_interval_ms, uint32_t ping_timeout_ms)
{
	if (t->state != TUNNEL_HANDSHAKE)
		return;
	t->state = TUNNEL_OPEN;
	t->ping_interval_ms = ping_interval_ms;
	t->ping_timeout_ms = ping_timeout_ms;
	t->last_rx_ms = now_ms();
	timer_init(&t->ping_timer, ping_fire);
	timer_arm(t->ring, &t->ping_timer, ping_interval_ms);
	timer_arm(t->ring, &t->deadline, ping_timeout_ms);
}

/* ---- input ---- */

static int handle_frame(struct tunnel *t, const struct frame *f, const char **why)
{
	struct frame pong;

	if ((f->type == FRAME_PING || f->type == FRAME_PONG) && t->state != TUNNEL_OPEN) {
		*why = "PING before HELLO"; /* nothing answers an unauthenticated peer */
		return -EPROTO;
	}
	switch (f->type) {
	case FRAME_PING:
		pong = (struct frame){ .type = FRAME_PONG };
		memcpy(pong.ping.opaque, f->ping.opaque, sizeof(pong.ping.opaque));
		tunnel_send(t, &pong);
		return 0;
	case FRAME_PONG:
		return 0;
	case FRAME_OPEN_OK:
	case FRAME_OPEN_FAIL:
	case FRAME_DATA:
	case FRAME_WINDOW:
	case FRAME_FIN:
	case FRAME_RST:
		if (t->state != TUNNEL_OPEN) {
			*why = "stream frame before HELLO";
			return -EPROTO;
		}
		return stream_handle_frame(t, f, why);
	default:
		return t->ops->on_frame(t, f, why);
	}
}

/* Decode and dispatch every whole frame in plain. */
/* Once the tunnel is closing or only flushing its last words (ERROR,
 * GOAWAY), nothing it receives matters any more. */
static bool input_done(const struct tunnel *t)
{
	return t->state == TUNNEL_CLOSING || t->close_when_flushed;
}

static void drain_frames(struct tunnel *t)
{
	while (!input_done(t) && buf_used(&t->plain)) {
		struct frame f;
		const char *why = NULL;
		ssize_t n = frame_decode(buf_head(&t->plain), buf_used(&t->plain), &f, &why);

		if (n == 0)
			break;
		if (n < 0 || handle_frame(t, &f, &why) < 0) {
			char msg[160];

			snprintf(msg, sizeof(msg), "protocol error: %s", why ? why : "bad frame");
			if (t->state != TUNNEL_CLOSING)
				tunnel_send_error(t, FRAME_ERROR, FRAME_ERR_PROTOCOL, msg);
			return;
		}
		t->bytes_in += (uint64_t)n;
		t->last_rx_ms = now_ms();
		buf_consume(&t->plain, (size_t)n);
		suspect_clear(t);
	}
	if (!buf_used(&t->plain) && t->plain.cap > TUNNEL_RECV_CHUNK)
		buf_release(&t->plain);
}

/* Right after a frame header was read into the empty plain: if it starts a
 * DATA frame whose payload is all in the record wolfSSL just decrypted and
 * whose stream can take it (stream_data_buffer), decrypt the payload
 * straight into the stream owner's buffer, skipping plain and the copy out
 * of it. 1 (delivered, or the frame takes the usual way: drain_frames sees
 * it), or -EPROTO / -EPIPE as tls_read. */
static int data_direct(struct tunnel *t, char *err, size_t errlen)
{
	const uint8_t *h = buf_head(&t->plain);
	struct stream *s = NULL;
	uint8_t *dst;
	size_t len;
	int ret;

	if (buf_used(&t->plain) != FRAME_HEADER_SIZE || h[0] != FRAME_DATA || h[1] != 0)
		return 1;
	len = get_be16(h + 2);
	if (!len || len > FRAME_MAX_PAYLOAD || tls_pending(&t->tls) < len)
		return 1;
	dst = stream_data_buffer(t, get_be32(h + 4), len, &s);
	if (!dst)
		return 1;
	ret = tls_read(&t->tls, dst, len, err, errlen);
	if (ret != (int)len) {
		/* cannot be: the bytes were decrypted already */
		if (ret >= 0)
			snprintf(err, errlen, "decrypted record shorter than announced");
		return ret < 0 ? ret : -EPROTO;
	}
	buf_consume(&t->plain, FRAME_HEADER_SIZE);
	t->bytes_in += FRAME_HEADER_SIZE + len;
	t->last_rx_ms = now_ms();
	suspect_clear(t);
	stream_data_written(s, len);
	return 1;
}

static void process_input(struct tunnel *t)
{
	char err[200];
	int ret;

	if (!t->tls.handshake_done) {
		ret = tls_handshake(&t->tls, err, sizeof(err));
		if (ret < 0) {
			char why[240];

			snprintf(why, sizeof(why), "TLS handshake failed: %s", err);
			tunnel_flush(t); /* let the alert reach the peer */
			tunnel_close(t, why);
			return;
		}
		tunnel_flush(t);
		if (ret == 0)
			return;
		log_info("TLS established", LF_S("peer", t->peer),
			 LF_S("version", tls_conn_version(&t->tls)),
			 LF_S("cipher", tls_conn_cipher(&t->tls)));
		t->ops->on_secure(t);
		if (t->state == TUNNEL_CLOSING)
			return;
	}
	for (;;) {
		long room = buf_reserve(&t->plain, FRAME_MAX_SIZE);
		bool boundary = !buf_used(&t->plain) && t->state == TUNNEL_OPEN;

		if (room < 0) {
			tunnel_close(t, "frame buffer full");
			return;
		}
		/* at a frame boundary, the header alone: a DATA frame's payload
		 * may then go straight to its owner (data_direct) */
		ret = tls_read(&t->tls, t->plain.data + t->plain.len,
			       boundary ? FRAME_HEADER_SIZE : (size_t)room, err, sizeof(err));
		if (ret > 0) {
			t->plain.len += (size_t)ret;
			if (boundary)
				ret = data_direct(t, err, sizeof(err));
		}
		if (ret == 0)
			break;
		if (ret < 0) {
			char why[240];

			snprintf(why, sizeof(why), "%s", ret == -EPIPE ? "closed by peer" : err);
			tunnel_close(t, why);
			return;
		}
		drain_frames(t);
		if (input_done(t)) {
			tunnel_flush(t);
			return;
		}
	}
	if (preauth(t) && !buf_used(&t->plain))
		buf_release(&t->plain);
	tunnel_flush(t);
}

static void close_on_recv_error(struct tunnel *t, int res)
{
	char why[96];

	if (res == 0)
		snprintf(why, sizeof(why), "connection closed by peer");
	else
		snprintf(why, sizeof(why), "recv failed: %s", strerror(-res));
	tunnel_close(t, why);
}

static void recv_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct tunnel *t = container_of(op, struct tunnel, recv_op);

	t->inflight--;
	t->recv_armed = false;
	if (t->state == TUNNEL_CLOSING) {
		tunnel_release(t);
		return;
	}
	if (res <= 0) {
		close_on_recv_error(t, res);
		tunnel_release(t);
		return;
	}
	t->tls.in.len += (size_t)res;
	process_input(t);
	if (!input_done(t))
		tunnel_arm_recv(t);
	tunnel_release(t);
}

/* A receive into a ring buffer (see preauth()): the bytes are appended to
 * tls.in and the buffer goes back to the ring at once. */
static void preauth_recv_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct tunnel *t = container_of(op, struct tunnel, recv_op);
	int bid = bufring_cqe_bid(flags);
	int ret = 0;

	t->inflight--;
	t->recv_armed = false;
	if (bid >= 0) {
		uint8_t *data = bufring_addr(t->preauth_bufs, (uint16_t)bid);

		if (res > 0 && t->state != TUNNEL_CLOSING)
			ret = buf_append_exact(&t->tls.in, data, (size_t)res);
		bufring_recycle(t->preauth_bufs, (uint16_t)bid);
	}
	if (t->state == TUNNEL_CLOSING) {
		tunnel_release(t);
		return;
	}
	if (res == -ENOBUFS) {
		tunnel_arm_recv(t); /* every ring buffer is taken this instant */
	} else if (res <= 0) {
		close_on_recv_error(t, res);
	} else if (ret < 0) {
		tunnel_close(t, "TLS input buffer full");
	} else if (!t->tls.ssl && !tls_first_record_in(&t->tls)) {
		tunnel_arm_recv(t);
	} else if (!t->tls.ssl && tls_conn_start(&t->tls, t->server, NULL) < 0) {
		tunnel_close(t, "out of memory for a TLS session");
	} else {
		process_input(t);
		if (!buf_used(&t->tls.in))
			buf_release(&t->tls.in);
		if (!input_done(t))
			tunnel_arm_recv(t);
	}
	tunnel_release(t);
}

static void tunnel_arm_recv(struct tunnel *t)
{
	long room;

	if (t->recv_armed || t->state == TUNNEL_CLOSING)
		return;
	if (preauth(t)) {
		t->recv_op.cb = preauth_recv_done;
		bufring_prep_recv(t->preauth_bufs, t->ring, &t->recv_op, t->fd, BUFRING_BUF_SIZE,
				  false);
		t->recv_armed = true;
		t->inflight++;
		return;
	}
	room = buf_reserve(&t->tls.in, TUNNEL_RECV_CHUNK);
	if (room < 0) {
		tunnel_close(t, "TLS input buffer full");
		return;
	}
	t->recv_op.cb = recv_done;
	ring_prep_recv(t->ring, &t->recv_op, t->fd, t->tls.in.data + t->tls.in.len, (size_t)room);
	t->recv_armed = true;
	t->inflight++;
}

struct tunnel *tunnel_new(struct ring *r, int fd, struct WOLFSSL_CTX *ctx, bool server,
			  const char *server_name, const struct tunnel_ops *ops, void *owner,
			  uint32_t handshake_timeout_ms, struct bufring *preauth_bufs)
{
	struct tunnel *t = calloc(1, sizeof(*t));
	int one = 1, ret;

	if (!t) {
		close(fd);
		return NULL;
	}
	t->ring = r;
	t->fd = fd;
	t->ops = ops;
	t->owner = owner;
	t->server = server;
	t->preauth_bufs = server ? preauth_bufs : NULL;
	t->state = TUNNEL_HANDSHAKE;
	t->next_stream_id = 1;
	buf_init(&t->plain, TUNNEL_PLAIN_MAX);
	buf_init(&t->record, FRAME_MAX_SIZE);
	buf_init(&t->sending, TLS_OUT_MAX);
	timer_init(&t->deadline, deadline_fire);
	timer_init(&t->ping_timer, ping_fire);
	ring_deferred_init(&t->flush_later, flush_later_run);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	net_format_peer(fd, t->peer, sizeof(t->peer));
	if (t->preauth_bufs)
		ret = tls_conn_prepare(&t->tls, ctx);
	else
		ret = tls_conn_init(&t->tls, ctx, server, server_name);
	if (ret < 0) {
		tls_conn_free(&t->tls);
		close(fd);
		free(t);
		return NULL;
	}
	timer_arm(r, &t->deadline, handshake_timeout_ms);
	if (!server)
		process_input(t); /* ClientHello */
	tunnel_arm_recv(t);
	return t;
}
