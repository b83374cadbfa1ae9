/*
 * tunnel.h — one TLS connection between an agent and the gateway, carrying
 * frames (frame.h). Shared by both programs; the role-specific parts (HELLO
 * on the agent, authentication and routing on the gateway) live with their
 * owners and see the tunnel through tunnel_ops.
 *
 * Data path: ring recv -> tls.in -> wolfSSL -> plain -> frame_decode ->
 * ops->on_frame (the gateway receives into provided ring buffers until
 * HELLO is answered, see tunnel_new); a DATA payload whole in its record
 * is decrypted straight into its stream owner's buffer instead
 * (stream_ops.data_buffer). tunnel_send -> frame_encode into the next
 * record's plaintext (t->record) -> wolfSSL -> tls.out -> ring send, once
 * per loop iteration (ring_defer); bulk DATA is encrypted in place from the
 * relay's receive buffer (tunnel_send_data). PING/PONG and the deadlines
 * are handled here.
 *
 * Life cycle: tunnel_new() starts the TLS handshake under a deadline that
 * also covers the HELLO exchange; the owner calls tunnel_established() once
 * HELLO_OK went out or came in, which turns the deadline into the liveness
 * check (a tunnel that receives no frame for ping_timeout_ms is dead).
 * tunnel_close() shuts the socket and cancels I/O; once every operation has
 * completed, ops->on_closed() runs and the tunnel is freed — the owner must
 * drop its pointer there and never use it after.
 */
#ifndef ANYPROXY_TUNNEL_H
#define ANYPROXY_TUNNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "anyproxy/buf.h"
#include "anyproxy/bufring.h"
#include "anyproxy/frame.h"
#include "anyproxy/ring.h"
#include "anyproxy/stream.h"
#include "anyproxy/tls.h"

struct tunnel;

struct tunnel_ops {
	/* TLS is up (version and cipher already logged). The agent sends HELLO. */
	void (*on_secure)(struct tunnel *t);
	/* Every frame except PING/PONG. Return 0, or a negative value to close
	 * the tunnel with ERROR(PROTOCOL, why). May call tunnel_close(). */
	int (*on_frame)(struct tunnel *t, const struct frame *f, const char **why);
	/* All I/O is over; the tunnel is freed right after this returns. */
	void (*on_closed)(struct tunnel *t, const char *reason);
	/* Optional: the tunnel became suspect (why says which deadline it
	 * missed), or it is no longer (why NULL: a frame came in). */
	void (*on_suspect)(struct tunnel *t, bool suspect, const char *why);
};

enum tunnel_state { TUNNEL_HANDSHAKE, TUNNEL_OPEN, TUNNEL_CLOSING };

#define TUNNEL_PLAIN_MAX (2 * FRAME_MAX_SIZE + 16 * 1024)
/* Streams stop writing DATA while this much ciphertext waits for the socket;
 * control frames may still use the rest of TLS_OUT_MAX. At 256 KiB the
 * sixteen 64 KiB receives of bulk-16 took turns, and the tunnel sent twice
 * as often, in pieces half the size (docs/benchmarks.md, "Larger batches
 * for bulk streams"). */
#define TUNNEL_OUT_BUDGET (1024 * 1024)
/* A datagram is dropped rather than queued behind more ciphertext than
 * this: to the protocols over UDP a late datagram is worth less than a
 * lost one, so they keep the bound streams had before theirs grew. */
#define TUNNEL_DGRAM_BUDGET (256 * 1024)
/* One receive on a tunnel: big batches mean fewer system calls and wakeups. */
#define TUNNEL_RECV_CHUNK (256 * 1024)

struct tunnel {
	struct ring *ring;
	const struct tunnel_ops *ops;
	void *owner;
	int fd;
	enum tunnel_state state;
	bool server;
	struct bufring *preauth_bufs; /* see tunnel_new() */
	bool close_when_flushed;
	bool close_when_idle; /* draining: close once the last stream is gone */
	bool recv_armed, send_armed;
	unsigned inflight;
	struct tls_conn tls;
	struct buf plain; /* decrypted bytes not yet decoded */
	/* frames encoded straight into the plaintext of the next TLS record,
	 * sealed (encrypted) when full or when the output is flushed */
	struct buf record;
	struct buf sending; /* ciphertext owned by the kernel until the send completes */
	struct ring_op recv_op, send_op, close_op;
	/* frames queued in this loop iteration go out in one send at its end */
	struct ring_deferred flush_later;
	struct timer deadline; /* handshake deadline, then liveness check */
	struct timer ping_timer;
	uint32_t ping_interval_ms, ping_timeout_ms;
	uint64_t last_rx_ms;
	uint64_t ping_sent_ms; /* our last PING; 0: none yet */
	/* missed a deadline (a PONG within ping_interval_ms, or the owner's:
	 * tunnel_suspect); cleared by the next frame received */
	bool suspect;
	uint64_t suspect_since_ms;
	uint64_t bytes_in, bytes_out; /* plaintext frame bytes */
	struct stream_table streams;  /* by id (stream.h) */
	uint32_t next_stream_id;
	struct stream *waiters; /* want output room, oldest first (utlist DL) */
	char peer[64];          /* "ip:port" of the other end */
	char close_reason[160];
};

/* Take ownership of connected socket fd. server_name: agent side only.
 * preauth_bufs (server side; NULL: none): until tunnel_established(), receive
 * into buffers of this ring and create the TLS session only once the first
 * record is in, so that a connection still in its handshake holds no
 * receive buffer of its own; then switch to the tunnel's own large receive.
 * Returns NULL (fd closed) on allocation failure. */
struct tunnel *tunnel_new(struct ring *r, int fd, struct WOLFSSL_CTX *ctx, bool server,
			  const char *server_name, const struct tunnel_ops *ops, void *owner,
			  uint32_t handshake_timeout_ms, struct bufring *preauth_bufs);

/* Encode f and queue it; frames sent in one loop iteration share TLS
 * records (encrypted at the latest before the iteration ends). 0, -ENOBUFS
 * (output over its bound: the caller holds back), -EINVAL (bad frame) or
 * -EPIPE (closing). */
int tunnel_send(struct tunnel *t, const struct frame *f);
/* DATA frames of at most this payload are gathered with other frames into
 * one record; larger ones are encrypted in place (tunnel_send_data). */
#define TUNNEL_GATHER_MAX 2048
/* DATA of len (1..FRAME_MAX_PAYLOAD) bytes at p, for a buffer the caller
 * gives up: FRAME_HEADER_SIZE writable bytes precede p, where the header is
 * written so that the frame is encrypted straight from the caller's buffer
 * as one record, without a copy. Returns as tunnel_send. */
int tunnel_send_data(struct tunnel *t, uint32_t stream_id, uint8_t *p, size_t len);

/* HELLO exchange done: start PING every interval, drop after timeout of
 * silence. */
void tunnel_established(struct tunnel *t, uint32_t ping_interval_ms, uint32_t ping_timeout_ms);

/* The peer missed a deadline of the owner's (an OPEN not answered in time):
 * mark the tunnel suspect until its next frame (ops->on_suspect). The tunnel
 * marks itself when a PING is not answered before the next one is due. */
void tunnel_suspect(struct tunnel *t, const char *why);

/* Close now (pending output is dropped). reason is logged by the owner. */
void tunnel_close(struct tunnel *t, const char *reason);
/* Send ERROR/GOAWAY-style frame f (may be NULL), flush, then close. */
void tunnel_close_after(struct tunnel *t, const struct frame *f, const char *reason);

/* Ciphertext queued for the socket (streams compare it to TUNNEL_OUT_BUDGET,
 * datagrams to TUNNEL_DGRAM_BUDGET). */
size_t tunnel_queued(const struct tunnel *t);

/* Drain: send GOAWAY (code, message) now; close the tunnel once its last
 * stream has ended (at once if it has none). */
void tunnel_drain(struct tunnel *t, uint16_t code, const char *message);

/* Helpers for frames that carry a code and a message. */
void tunnel_send_error(struct tunnel *t, uint8_t type, uint16_t code, const char *message);

#endif
