/*
 * stream.h — one multiplexed stream inside a tunnel: ids, credit-based flow
 * control, half-close and reset. This is the tunnel-facing half; the socket
 * it is paired with is driven by relay.h.
 *
 * Flow control (docs/protocol.md): each side grants the other a window of
 * bytes per stream. DATA consumes the sender's credit; the receiver returns
 * credit with WINDOW once the bytes have left its buffers (stream_consumed).
 * A sender never sends beyond its credit, so a receiver never buffers more
 * than the window it granted: a slow reader stalls only its own stream.
 * The tunnel's output queue has its own budget (TUNNEL_OUT_BUDGET); a stream
 * that finds it full waits on the tunnel's writable list.
 *
 * A struct stream is embedded in its owner (the gateway's user connection,
 * the agent's target connection). It is linked into its tunnel's table from
 * stream_open/stream_accept until stream_detach, an RST or OPEN_FAIL from the
 * peer, or the death of the tunnel; after that s->tunnel is NULL and every
 * send is a no-op returning -EPIPE.
 */
#ifndef ANYPROXY_STREAM_H
#define ANYPROXY_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "anyproxy/frame.h"

struct tunnel;
struct stream;

/* The receive window a stream starts with (OPEN, OPEN_OK) and the most it
 * may grow to (stream_consumed): a stream whose sender came to the end of
 * its credit, and whose bytes then left the receiver within
 * STREAM_WINDOW_GROW_US, doubles its window, so a fast stream is not held
 * to 256 KiB per credit round trip (the tunnel's latency, or the loops');
 * a stream whose reader is slow does not grow. */
#define STREAM_WINDOW_BYTES (256 * 1024)
#define STREAM_WINDOW_MAX (1024 * 1024)
#define STREAM_WINDOW_GROW_US 5000
#define STREAM_CLOCK_UNIT_US 256 /* of stream.starved_at */
/* Live totals a stream adds its DATA payload to (struct stream count_*). */
#define STREAM_COUNTS 2

struct stream_ops {
	/* DATA: the owner takes all n bytes (within the window it granted) and
	 * calls stream_consumed() as they leave its buffers. Non-zero return
	 * resets the stream. */
	int (*on_data)(struct stream *s, const uint8_t *p, size_t n);
	/* Optional, both or neither: DATA decrypted straight into the owner's
	 * buffer. data_buffer returns room for n bytes (valid until the next
	 * call into the stream), or NULL to take them through on_data;
	 * data_written says that n bytes were put there, as on_data would. */
	uint8_t *(*data_buffer)(struct stream *s, size_t n);
	int (*data_written)(struct stream *s, size_t n);
	/* The peer half-closed: no more DATA will come. */
	void (*on_fin)(struct stream *s);
	/* The stream is gone (RST from the peer, or the tunnel died); s is
	 * already detached. why is for logs. */
	void (*on_reset)(struct stream *s, uint8_t reason, const char *why);
	/* Credit arrived or the tunnel's output drained after stream_want_writable(). */
	void (*on_writable)(struct stream *s);
	/* Gateway side: OPEN_OK (reason 0) or OPEN_FAIL (reason, message). On
	 * failure s is already detached. */
	void (*on_open_result)(struct stream *s, uint8_t reason, const char *message);
};

/* A tunnel's streams by id: open addressing with linear probing over
 * pointers, at most half full, deletion by backward shift (no tombstones).
 * 8 bytes a slot instead of a 56-byte hash handle in every stream, which
 * every open connection carries twice (gateway and agent). */
struct stream_table {
	struct stream **slots; /* NULL while empty */
	uint32_t mask;         /* slots - 1; a power of two minus one */
	uint32_t count;
	uint8_t shift;  /* 32 - log2(slots): a Fibonacci hash's top bits index */
	bool no_shrink; /* stream_tunnel_closed is walking the slots */
};

/* Free a table's slots (its streams are not touched). */
void stream_table_free(struct stream_table *st);
/* The stream of t with this id, or NULL. */
struct stream *stream_find(struct tunnel *t, uint32_t id);

struct stream {
	struct tunnel *tunnel;
	const struct stream_ops *ops;
	void *owner;
	uint32_t id;
	uint32_t send_credit;     /* bytes we may still send */
	uint32_t recv_window;     /* the window we granted */
	uint32_t recv_unreturned; /* received, credit not yet returned */
	uint32_t recv_consumed;   /* delivered onwards, not yet announced */
	/* flags as one-bit fields: every open connection carries two streams'
	 * worth (gateway and agent), so their bytes count (docs/benchmarks.md) */
	bool open : 1; /* OPEN_OK sent (agent) or received (gateway) */
	bool fin_sent : 1, fin_received : 1;
	bool waiting_writable : 1;
	bool wake_pending : 1; /* on the list when stream_tunnel_writable began */
	bool starved : 1;      /* the sender came near the end of its credit */
	bool grow : 1;         /* ... and its bytes left fast: grow the window */
	/* when starved was set, in STREAM_CLOCK_UNIT_US, truncated to 16 bits
	 * so that it fits beside the flags: only a difference of under
	 * STREAM_WINDOW_GROW_US is looked for, so a wrap (every 16.7 s) can at
	 * worst grow a window once */
	uint16_t starved_at;
	/* tunnel.waiters, a utlist DL list: the head's wait_prev is the tail,
	 * not NULL, so only the DL_*2 macros touch these */
	struct stream *wait_prev, *wait_next;
	uint64_t bytes_sent, bytes_received; /* DATA payload */
	/* optional live totals to add to (the gateway: its client's and its
	 * group's) */
	uint64_t *count_sent[STREAM_COUNTS], *count_received[STREAM_COUNTS];
};

/* Target of an OPEN. */
struct stream_target {
	uint8_t addr_type; /* FRAME_ADDR_* */
	uint8_t addr[16];
	const char *domain; /* FRAME_ADDR_DOMAIN, NUL-terminated */
	uint16_t port;
	const char *user, *group; /* for the agent's logs */
};

/* Gateway: allocate an id, link s into t and send OPEN. 0 or -EPIPE
 * (tunnel closing), -ENOBUFS (tunnel output full), -EINVAL. */
int stream_open(struct stream *s, struct tunnel *t, const struct stream_target *target,
		const struct stream_ops *ops, void *owner);

/* Agent: link s for an OPEN received with id and the peer's window. Frames
 * for it (RST) are delivered from now on, before stream_open_ok(). */
int stream_accept(struct stream *s, struct tunnel *t, uint32_t id, uint32_t peer_window,
		  const struct stream_ops *ops, void *owner);
/* Agent: the target is connected. */
int stream_open_ok(struct stream *s);
/* Agent: the target failed; sends OPEN_FAIL and detaches. */
void stream_open_fail(struct stream *s, uint8_t reason, const char *message);

/* How many bytes stream_write would accept now (credit and tunnel budget). */
size_t stream_send_room(const struct stream *s);
/* Send n <= stream_send_room() bytes as DATA. 0 or -EPIPE / -ENOBUFS. */
int stream_write(struct stream *s, const uint8_t *p, size_t n);
/* The same for a buffer the caller gives up (a receive buffer about to be
 * recycled): FRAME_HEADER_SIZE writable bytes precede p and the bytes of p
 * are overwritten, because each DATA frame is built and encrypted in place
 * (tunnel_send_data) instead of being copied first. */
int stream_write_in_place(struct stream *s, uint8_t *p, size_t n);
/* n received bytes left the owner's buffers: return credit when worth it. */
void stream_consumed(struct stream *s, size_t n);
/* stream_consumed's bookkeeping, apart for tests: the WINDOW increment due
 * after n more bytes left at now (now_us(), truncated), 0 while less than a
 * quarter window is due; more than the consumed bytes when the window
 * grows. stream_credit_returned records an increment that was sent. */
uint32_t stream_credit_due(struct stream *s, size_t n, uint32_t now);
void stream_credit_returned(struct stream *s, uint32_t increment);
/* Call on_writable once room appears. */
void stream_want_writable(struct stream *s);

/* Half-close our direction. */
int stream_send_fin(struct stream *s);
/* Abort both directions: send RST and detach. */
void stream_reset(struct stream *s, uint8_t reason);
/* Unlink without sending anything (both FINs done, or the owner is gone). */
void stream_detach(struct stream *s);
/* Move the live stream src into dst (another owner's struct), with its id,
 * credit and state; from now on its frames reach dst through ops and
 * owner. src is left detached (tunnel NULL). The peer sees nothing. */
void stream_move(struct stream *dst, struct stream *src, const struct stream_ops *ops, void *owner);

/* Called by the tunnel. */
int stream_handle_frame(struct tunnel *t, const struct frame *f, const char **why);
/* A DATA frame of n payload bytes for stream id is next: the buffer to
 * decrypt its payload into (*sp its stream), or NULL when it must go
 * through stream_handle_frame (no such stream, not open, beyond the window,
 * or an owner without data_buffer). */
uint8_t *stream_data_buffer(struct tunnel *t, uint32_t id, size_t n, struct stream **sp);
/* ... and the n bytes are in it. */
void stream_data_written(struct stream *s, size_t n);
void stream_tunnel_closed(struct tunnel *t, const char *why);
void stream_tunnel_writable(struct tunnel *t);

#endif
