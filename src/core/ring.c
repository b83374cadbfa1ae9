/* ring.c — io_uring event loop, timers and signals (see ring.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/ring.h"

#include "anyproxy/uring-compat.h"

#define RING_CQE_BATCH 256

int ring_init(struct ring *r, unsigned entries)
{
	struct io_uring_params p;
	int ret;

	memset(r, 0, sizeof(*r));
	r->signal_fd = -1;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL;
	ret = io_uring_queue_init_params(entries, &r->uring, &p);
	if (ret == -EINVAL) {
		/* older kernel: plain ring */
		memset(&p, 0, sizeof(p));
		ret = io_uring_queue_init_params(entries, &r->uring, &p);
	}
	r->initialised = ret == 0;
	return ret;
}

void ring_exit(struct ring *r)
{
	if (!r->initialised)
		return;
	r->initialised = false;
	if (r->signal_fd >= 0)
		close(r->signal_fd);
	io_uring_queue_exit(&r->uring);
	free(r->heap);
	r->heap = NULL;
}

struct io_uring_sqe *ring_get_sqe(struct ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);

	while (!sqe) {
		int ret = io_uring_submit(&r->uring);

		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			return NULL;
		sqe = io_uring_get_sqe(&r->uring);
	}
	return sqe;
}

/* ---- timers: a binary min-heap keyed by expires_ms ---- */

static void heap_set(struct ring *r, size_t i, struct timer *t)
{
	r->heap[i] = t;
	t->heap_index = i + 1;
}

static void heap_up(struct ring *r, size_t i)
{
	struct timer *t = r->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (r->heap[parent]->expires_ms <= t->expires_ms)
			break;
		heap_set(r, i, r->heap[parent]);
		i = parent;
	}
	heap_set(r, i, t);
}

static void heap_down(struct ring *r, size_t i)
{
	struct timer *t = r->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= r->heap_len)
			break;
		if (c + 1 < r->heap_len && r->heap[c + 1]->expires_ms < r->heap[c]->expires_ms)
			c++;
		if (t->expires_ms <= r->heap[c]->expires_ms)
			break;
		heap_set(r, i, r->heap[c]);
		i = c;
	}
	heap_set(r, i, t);
}

void timer_init(struct timer *t, timer_cb cb)
{
	t->expires_ms = 0;
	t->heap_index = 0;
	t->cb = cb;
}

void timer_disarm(struct ring *r, struct timer *t)
{
	size_t i;
	struct timer *last;

	if (!t->heap_index)
		return;
	i = t->heap_index - 1;
	t->heap_index = 0;
	last = r->heap[--r->heap_len];
	if (last == t)
		return;
	heap_set(r, i, last);
	heap_up(r, i);
	heap_down(r, last->heap_index - 1);
}

int timer_arm(struct ring *r, struct timer *t, uint64_t after_ms)
{
	timer_disarm(r, t);
	if (r->heap_len == r->heap_cap) {
		size_t ncap = r->heap_cap ? r->heap_cap * 2 : 64;
		struct timer **h = realloc(r->heap, ncap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		r->heap = h;
		r->heap_cap = ncap;
	}
	t->expires_ms = now_ms() + after_ms;
	r->heap[r->heap_len] = t;
	t->heap_index = ++r->heap_len;
	heap_up(r, r->heap_len - 1);
	return 0;
}

/* Fire due timers. A callback that re-arms with a zero delay waits for the
 * next turn of the loop: at most the timers present at entry fire. */
static void timers_run(struct ring *r)
{
	uint64_t now = now_ms();
	size_t budget = r->heap_len;

	while (budget-- && r->heap_len && r->heap[0]->expires_ms <= now) {
		struct timer *t = r->heap[0];

		timer_disarm(r, t);
		t->cb(r, t);
	}
}

/* ms until the earliest timer, or -1 if none. */
static long timers_next(const struct ring *r)
{
	uint64_t now = now_ms();

	if (!r->heap_len)
		return -1;
	return r->heap[0]->expires_ms > now ? (long)(r->heap[0]->expires_ms - now) : 0;
}

/* ---- signals ---- */

static void signal_arm(struct ring *r);

static void signal_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	if (res == (int)sizeof(r->signal_info) && r->on_signal)
		r->on_signal(r, (int)r->signal_info.ssi_signo);
	if (res < 0 && res != -EINTR && res != -ECANCELED)
		log_error("signalfd read failed", LF_S("error", strerror(-res)));
	if (res != -ECANCELED)
		signal_arm(r);
}

static void signal_arm(struct ring *r)
{
	r->signal_op.cb = signal_done;
	ring_prep_read(r, &r->signal_op, r->signal_fd, &r->signal_info, sizeof(r->signal_info));
}

int ring_watch_signals(struct ring *r, const int *signals, int count, ring_signal_cb cb)
{
	sigset_t set;
	int i;

	sigemptyset(&set);
	for (i = 0; i < count; i++)
		sigaddset(&set, signals[i]);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL))
		return -errno;
	r->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (r->signal_fd < 0)
		return -errno;
	r->on_signal = cb;
	signal_arm(r);
	return 0;
}

/* ---- the loop ---- */

int ring_run(struct ring *r)
{
	while (!r->stop) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts;
		unsigned head, seen = 0;
		long wait_ms = timers_next(r);
		int ret;

		if (wait_ms >= 0) {
			ts.tv_sec = wait_ms / 1000;
			ts.tv_nsec = (wait_ms % 1000) * 1000000L;
		}
		/* cqe must not be NULL: liburing 2.3 crashes on it */
		ret = io_uring_submit_and_wait_timeout(&r->uring, &cqe, 1, wait_ms >= 0 ? &ts : NULL,
						       NULL);
		if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
			return ret;
		io_uring_for_each_cqe(&r->uring, head, cqe) {
			struct ring_op *op = io_uring_cqe_get_data(cqe);

			seen++;
			if (op)
				op->cb(r, op, cqe->res, cqe->flags);
			if (seen == RING_CQE_BATCH)
				break;
		}
		io_uring_cq_advance(&r->uring, seen);
		/* Timers run after the completions that arrived with them, so a
		 * process resumed after a stall sees the peer's data before any
		 * deadline judges the peer silent. */
		if (!r->stop)
			timers_run(r);
	}
	return 0;
}

/* ---- preparers ---- */

void ring_prep_recv(struct ring *r, struct ring_op *op, int fd, void *buf, size_t len)
{
	struct io_uring_sqe *sqe = ring_get_sqe(r);

	io_uring_prep_recv(sqe, fd, buf, len, 0);
	ring_sqe_set_op(sqe, op);
}

void ring_prep_send(struct ring *r, struct ring_op *op, int fd, const void *buf, size_t len)
{
	struct io_uring_sqe *sqe = ring_get_sqe(r);

	io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
	ring_sqe_set_op(sqe, op);
}

void ring_prep_accept_multishot(struct ring *r, struct ring_op *op, int fd)
{
	struct io_uring_sqe *sqe = ring_get_sqe(r);

	io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	ring_sqe_set_op(sqe, op);
}

void ring_prep_connect(struct ring *r, struct ring_op *op, int fd, const struct sockaddr *sa,
		       socklen_t len)
{
	struct io_uring_sqe *sqe = ring_get_sqe(r);

	io_uring_prep_connect(sqe, fd, sa, len);
	ring_sqe_set_op(sqe, op);
}

void ring_prep_read(struct ring *r, struct ring_op *op, int fd, void *buf, size_t len)
{
	struct io_uring_sqe *sqe = ring_get_sqe(r);

	io_uring_prep_read(sqe, fd, buf, (unsigned)len, (uint64_t)-1);
	ring_sqe_set_op(sqe, op);
}

void ring_cancel_fd(struct ring *r, int fd)
{
	struct io_uring_sqe *sqe = ring_get_sqe(r);

	io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
	ring_sqe_set_op(sqe, NULL);
}
