/* bufring.c — provided-buffer ring set up by hand (liburing 2.3 has no
 * io_uring_setup_buf_ring). See bufring.h. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "anyproxy/bufring.h"
#include "anyproxy/log.h"

int bufring_init(struct bufring *b, struct ring *r, uint16_t group, unsigned entries,
		 unsigned buf_size)
{
	struct io_uring_buf_reg reg;
	size_t ring_bytes = entries * sizeof(struct io_uring_buf);
	size_t mem_bytes = (size_t)entries * (buf_size + BUFRING_HEADROOM);
	unsigned i;
	int ret;

	memset(b, 0, sizeof(*b));
	if (entries == 0 || (entries & (entries - 1)) || entries > 32768)
		return -EINVAL;
	b->br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE,
		     MAP_ANONYMOUS | MAP_PRIVATE | MAP_POPULATE, -1, 0);
	if (b->br == MAP_FAILED) {
		b->br = NULL;
		return -errno;
	}
	/* faulted in now: a fixed cost at start-up, not one per connection */
	b->mem = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE,
		      MAP_ANONYMOUS | MAP_PRIVATE | MAP_POPULATE, -1, 0);
	if (b->mem == MAP_FAILED) {
		ret = -errno;
		munmap(b->br, ring_bytes);
		b->br = NULL;
		b->mem = NULL;
		return ret;
	}
	b->entries = entries;
	b->buf_size = buf_size;
	b->group = group;
	b->mask = (unsigned)io_uring_buf_ring_mask(entries);
	io_uring_buf_ring_init(b->br);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)(uintptr_t)b->br;
	reg.ring_entries = entries;
	reg.bgid = group;
	ret = io_uring_register_buf_ring(&r->uring, &reg, 0);
	if (ret < 0) {
		munmap(b->mem, mem_bytes);
		munmap(b->br, ring_bytes);
		memset(b, 0, sizeof(*b));
		return ret;
	}
	for (i = 0; i < entries; i++)
		io_uring_buf_ring_add(b->br, bufring_addr(b, (uint16_t)i), buf_size, (uint16_t)i,
				      (int)b->mask, (int)i);
	io_uring_buf_ring_advance(b->br, (int)entries);
	return 0;
}

int bufring_init_worker(struct bufring *b, struct ring *r, unsigned worker)
{
	int ret = bufring_init(b, r, 0, BUFRING_ENTRIES, BUFRING_BUF_SIZE);

	if (ret < 0)
		log_error("Cannot register receive buffers", LF_U("worker", worker),
			  LF_S("error", strerror(-ret)));
	return ret;
}

void bufring_exit(struct bufring *b, struct ring *r)
{
	if (!b->br)
		return;
	io_uring_unregister_buf_ring(&r->uring, b->group);
	munmap(b->mem, (size_t)b->entries * (b->buf_size + BUFRING_HEADROOM));
	munmap(b->br, b->entries * sizeof(struct io_uring_buf));
	memset(b, 0, sizeof(*b));
}

void bufring_recycle(struct bufring *b, uint16_t bid)
{
	io_uring_buf_ring_add(b->br, bufring_addr(b, bid), b->buf_size, bid, (int)b->mask, 0);
	io_uring_buf_ring_advance(b->br, 1);
}

void bufring_prep_recv(struct bufring *b, struct ring *r, struct ring_op *op, int fd, size_t len,
		       bool poll_first)
{
	struct io_uring_sqe *sqe = ring_get_sqe(r);

	if (len > b->buf_size)
		len = b->buf_size;
	io_uring_prep_recv(sqe, fd, NULL, len, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = b->group;
	if (poll_first)
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	ring_sqe_set_op(sqe, op);
}
