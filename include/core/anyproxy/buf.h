/*
 * buf.h — a growable byte buffer with a hard maximum.
 *
 * Data lives in data[off .. len). Appends grow the allocation up to max and
 * fail with -ENOBUFS beyond it, so no buffer in the program grows without
 * bound. An empty buffer may hold no allocation at all (buf_release), which
 * keeps idle connections small.
 */
#ifndef ANYPROXY_BUF_H
#define ANYPROXY_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *data;
	size_t off; /* first unread byte */
	size_t len; /* end of data */
	size_t cap; /* allocation size */
	size_t max; /* allocation never grows past this */
};

static inline void buf_init(struct buf *b, size_t max)
{
	*b = (struct buf){ .max = max };
}

static inline size_t buf_used(const struct buf *b)
{
	return b->len - b->off;
}

static inline uint8_t *buf_head(const struct buf *b)
{
	return b->data + b->off;
}

/* Make room for at least `want` more bytes after len (compacting or
 * growing); returns the writable space (>= want) or -ENOBUFS / -ENOMEM. */
long buf_reserve(struct buf *b, size_t want);
/* Append n bytes; 0 or -ENOBUFS / -ENOMEM (nothing appended then). */
int buf_append(struct buf *b, const void *p, size_t n);
/* Append n bytes, growing the allocation to exactly what is held: for the
 * many small buffers of connections not yet authenticated, which must not
 * cost a page each. 0 or -ENOBUFS / -ENOMEM (nothing appended then). */
int buf_append_exact(struct buf *b, const void *p, size_t n);
/* Drop n bytes from the head. */
void buf_consume(struct buf *b, size_t n);
/* Free the allocation (the buffer must be empty or the data unwanted). */
void buf_release(struct buf *b);

#endif
