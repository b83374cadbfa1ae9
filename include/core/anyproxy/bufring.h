/*
 * bufring.h — a provided-buffer ring: receive buffers the kernel picks only
 * when data arrives. A socket with a recv armed on it holds no buffer while
 * it is idle, which is what keeps an idle proxied connection small.
 *
 * The memory is allocated and faulted in once at start-up (a fixed cost,
 * independent of the number of connections). A receiver owns the buffer a
 * completion names until it calls bufring_recycle().
 */
#ifndef ANYPROXY_BUFRING_H
#define ANYPROXY_BUFRING_H

#include <stdint.h>

#include "anyproxy/ring.h"

/* 4 MiB per worker. 128 KiB receives rather than 64 KiB halve a bulk
 * stream's receives. 32 buffers cover nearly all completions of 64 busy
 * connections; a receive that finds none (-ENOBUFS: 0.7 to 1.9% of the
 * completions in http-64) is armed again for the next submission, and 64
 * buffers, 8 MiB, measured no better (docs/benchmarks.md, "Larger
 * batches for bulk streams"). */
#define BUFRING_ENTRIES 32
#define BUFRING_BUF_SIZE (128 * 1024)
/* Bytes in front of every buffer that its receiver may write: a header put
 * before the received data lets them leave as one piece without a copy (the
 * tunnel's DATA frames). A multiple of 64, so the data stays cache-aligned. */
#define BUFRING_HEADROOM 64

struct bufring {
	struct io_uring_buf_ring *br;
	uint8_t *mem;
	unsigned entries;
	unsigned buf_size;
	uint16_t group;
	unsigned mask;
};

/* Register a ring of `entries` (power of two) buffers of buf_size bytes as
 * buffer group `group`. 0 or -errno. */
int bufring_init(struct bufring *b, struct ring *r, uint16_t group, unsigned entries,
		 unsigned buf_size);
void bufring_exit(struct bufring *b, struct ring *r);
/* A daemon worker's receive buffers: group 0, BUFRING_ENTRIES of
 * BUFRING_BUF_SIZE bytes, a failure logged for worker `worker`. 0 or
 * -errno. */
int bufring_init_worker(struct bufring *b, struct ring *r, unsigned worker);

/* The first byte of buffer bid; BUFRING_HEADROOM bytes before it are the
 * owner's too. */
static inline uint8_t *bufring_addr(const struct bufring *b, uint16_t bid)
{
	return b->mem + (size_t)bid * (b->buf_size + BUFRING_HEADROOM) + BUFRING_HEADROOM;
}

/* Give buffer bid back to the kernel. */
void bufring_recycle(struct bufring *b, uint16_t bid);

/* The buffer id a completion carries, or -1 if it carries none. */
static inline int bufring_cqe_bid(uint32_t cqe_flags)
{
	if (!(cqe_flags & IORING_CQE_F_BUFFER))
		return -1;
	return (int)(cqe_flags >> IORING_CQE_BUFFER_SHIFT);
}

/* Prepare a recv of at most len bytes into a buffer of this ring.
 * poll_first: the socket was just read dry, so the kernel waits for data
 * before it tries (IORING_RECVSEND_POLL_FIRST) instead of failing a
 * receive first. */
void bufring_prep_recv(struct bufring *b, struct ring *r, struct ring_op *op, int fd, size_t len,
		       bool poll_first);

#endif
