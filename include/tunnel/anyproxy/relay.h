/*
 * relay.h — a socket paired with a stream: the user's connection on the
 * gateway, the target's connection on the agent.
 *
 * Two modes:
 * - owner mode (handshakes, HTTP forwarding): bytes from the socket go to
 *   ops->on_socket_data; the owner writes to the socket with relay_write and
 *   handles the stream's events itself;
 * - pump mode (after relay_pump): socket bytes become DATA as the stream's
 *   credit allows, DATA goes to the socket, FIN and EOF are carried across
 *   as half-closes, and the relay closes itself when both directions are
 *   done or either side fails.
 *
 * Receives use the shared provided-buffer ring, so an idle relay holds no
 * receive buffer; its send queue is allocated only while data waits for the
 * socket and is bounded by the stream window it granted.
 *
 * Transport: the socket carries the bytes as they are, or (after
 * relay_tls_start, before the first read) TLS: ciphertext received goes
 * through wolfSSL, and only plaintext reaches the owner or the stream;
 * everything written is encrypted before it is queued. The owner and the
 * stream see the same relay either way; the plain path pays one pointer test
 * per receive and per write for it.
 *
 * relay_close (or the end of the pump) shuts the socket, detaches the
 * stream, waits for the operations in flight and then calls ops->on_closed,
 * after which the owner frees the memory holding the relay.
 */
#ifndef ANYPROXY_RELAY_H
#define ANYPROXY_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "anyproxy/buf.h"
#include "anyproxy/bufring.h"
#include "anyproxy/ring.h"
#include "anyproxy/stream.h"
#include "anyproxy/tls.h"

struct relay;
struct WOLFSSL_CTX;

struct relay_ops {
	/* Owner mode: n bytes from the socket (n == 0: the peer closed its
	 * side). p is valid only during the call. */
	void (*on_socket_data)(struct relay *r, const uint8_t *p, size_t n);
	/* The relay is finished; free it now. why is for logs. */
	void (*on_closed)(struct relay *r, const char *why);
};

/* Data from the socket not yet accepted by the stream: at most one receive,
 * after room for a frame header (relay.c, pending_keep). */
#define RELAY_PENDING_MAX (BUFRING_BUF_SIZE + FRAME_HEADER_SIZE)
/* Bytes queued for the socket beyond the stream's window (handshake
 * replies, rewritten HTTP heads): the queue holds at most the window the
 * stream granted (at least STREAM_WINDOW_BYTES) plus this, RELAY_OUT_MAX
 * with the largest window. */
#define RELAY_OUT_SLACK (64 * 1024)
#define RELAY_OUT_MAX (STREAM_WINDOW_MAX + RELAY_OUT_SLACK)
/* TLS: ciphertext queued for the socket may exceed RELAY_OUT_MAX by the
 * records' own bytes (header, tag: 22 to 29 per record of up to 16 KiB)
 * and a handshake flight (the certificate chain). */
#define RELAY_TLS_OUT_SLACK (32 * 1024)

/*
 * The TLS transport of a relay (relay_tls_start). Until a whole first
 * record has arrived the relay holds no wolfSSL session, only the
 * received bytes in an allocation of their size (as the tunnel does); the
 * session (tens of KiB) is created once a ClientHello is in.
 * Ciphertext is read from the socket only while the plaintext before it
 * has been taken (by the owner while it reads, by the stream while it has
 * room), so what waits inside is at most one receive plus one record.
 * Queued output lives in conn.out (the relay's `out` stays empty).
 */
struct relay_tls {
	struct tls_conn conn;
	const char *alpn;       /* the one ALPN protocol offered; NULL: none */
	struct ring_op kick_op; /* deferred delivery (relay_read turning on) */
	struct relay *kick_owner;
	bool kick_armed;
	bool notify_sent; /* close_notify queued: nothing more is written */
	bool secure;      /* handshake complete */
};

/* The longest close reason kept (longer ones are cut, for the log only). */
#define RELAY_WHY_MAX 128

struct relay {
	struct ring *ring;
	struct bufring *bufs;
	const struct relay_ops *ops;
	struct stream stream;
	int fd;
	unsigned inflight;
	/* one-bit flags, as in struct stream: a relay per open connection */
	bool pumping : 1;
	bool reading : 1; /* owner mode: deliver socket data */
	bool recv_armed : 1, send_armed : 1;
	bool sock_eof : 1;         /* the socket's peer closed its side */
	bool shut_wr : 1;          /* we closed our side of the socket */
	bool shut_after_send : 1;  /* owner mode: close our side once out is sent */
	bool close_after_send : 1; /* owner mode: finish once out is sent */
	bool closing : 1;
	bool recv_cancelled : 1; /* relay_cancel_recv sent its cancel */
	bool corked : 1;         /* relay_cork: writes queue, no send yet */
	bool read_dry : 1;       /* the last receive did not fill its buffer */
	struct buf out;          /* to the socket, queued */
	struct buf sending;      /* to the socket, owned by the kernel until sent */
	size_t out_stream_debt;  /* stream bytes inside out, credit to return */
	struct buf pending;      /* from the socket, waiting for stream room */
	struct ring_op recv_op, send_op, close_op;
	struct relay_tls *tls;   /* NULL: plain socket (relay_tls_start) */
	uint64_t last_active_ms; /* last byte received or sent on the socket */
	uint64_t bytes_up;       /* socket -> stream */
	uint64_t bytes_down;     /* stream -> socket */
	/* why it closes, for on_closed and its log line: allocated when the
	 * close begins, not carried by every open connection */
	char *why;
};

/* Set up everything but r->stream, which stream_open/stream_accept own
 * (and which may already be linked). */
void relay_init(struct relay *r, struct ring *ring, struct bufring *bufs, int fd,
		const struct relay_ops *ops);
/* Speak TLS as the server on this socket, with a session from ctx (it is
 * referenced: a reload may free the caller's pointer meanwhile). alpn: the
 * one protocol to agree on with clients that offer ALPN (tls.h
 * tls_conn_set_alpn), or NULL. Before the first relay_read. 0 or -ENOMEM. */
int relay_tls_start(struct relay *r, struct WOLFSSL_CTX *ctx, const char *alpn);
/* Owner mode: start or stop delivering socket data. */
void relay_read(struct relay *r, bool on);
/* Queue n bytes for the socket; stream_bytes of them count as stream data
 * whose credit returns once sent. 0 or -ENOBUFS / -EPIPE. */
int relay_write(struct relay *r, const void *p, size_t n, size_t stream_bytes);
/* Hold the writes that follow in the queue until relay_uncork, so that
 * what an owner writes in pieces in one callback (an HTTP head, then the
 * body bytes that came with it) leaves in one send. */
void relay_cork(struct relay *r);
void relay_uncork(struct relay *r);
/* Owner mode: half-close the socket once everything queued is sent. */
void relay_shutdown_write(struct relay *r);
/* Owner mode: finish cleanly once everything queued is sent (an error
 * reply, then close). */
void relay_close_after_send(struct relay *r, const char *why);
/* Switch to pump mode; the stream must be open. first/n: bytes the owner
 * already read from the socket that belong to the stream. */
void relay_pump(struct relay *r, const uint8_t *first, size_t n);
/* Owner mode, not reading: cancel the receive in flight (the connection
 * moves to another thread's ring once r->inflight is 0). Data it received
 * first is still delivered. */
void relay_cancel_recv(struct relay *r);
/* Abort: reset the stream (if linked), close the socket. */
void relay_close(struct relay *r, const char *why);

/* The stream_ops pump mode installs (owners in owner mode use their own). */
extern const struct stream_ops relay_pump_ops;

#endif
