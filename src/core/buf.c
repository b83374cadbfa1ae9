/* buf.c — bounded growable byte buffer (see buf.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/buf.h"

long buf_reserve(struct buf *b, size_t want)
{
	size_t used = buf_used(b);
	size_t ncap;
	uint8_t *p;

	if (b->cap - b->len >= want)
		return (long)(b->cap - b->len);
	if (b->off && b->cap - used >= want) {
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
		return (long)(b->cap - b->len);
	}
	if (used + want > b->max)
		return -ENOBUFS;
	ncap = b->cap ? b->cap : 4096;
	while (ncap < used + want)
		ncap *= 2;
	if (ncap > b->max)
		ncap = b->max;
	if (b->off) {
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
	}
	p = realloc(b->data, ncap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = ncap;
	return (long)(b->cap - b->len);
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	long r = buf_reserve(b, n);

	if (r < 0)
		return (int)r;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int buf_append_exact(struct buf *b, const void *p, size_t n)
{
	size_t used = buf_used(b);
	uint8_t *q;

	if (b->cap - b->len >= n)
		return buf_append(b, p, n);
	if (used + n > b->max)
		return -ENOBUFS;
	if (b->off) {
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
	}
	q = realloc(b->data, used + n);
	if (!q)
		return -ENOMEM;
	b->data = q;
	b->cap = used + n;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off >= b->len)
		b->off = b->len = 0;
}

void buf_release(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}
