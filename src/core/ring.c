/* ring.c — io_uring event loop, timers and signals (see ring.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utlist.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/ring.h"

#include "anyproxy/uring-compat.h"

#define RING_CQE_BATCH 256
/* Submissions refused for a moment (interrupted, kernel short of memory,
 * busy) before ring_get_sqe gives up on the process. */
#define RING_SUBMIT_RETRIES 1000

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
}

struct io_uring_sqe *ring_get_sqe(struct ring *r)
{
	unsigned refused = 0;

	for (;;) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);
		int ret;

		if (sqe)
			return sqe;
		/* The SQ is full: hand it to the kernel, which frees its slots
		 * as it takes the entries (SUBMIT_ALL: all or an error). */
		ret = io_uring_submit(&r->uring);
		if (ret > 0)
			continue;
		/* EBUSY: old kernels hold submissions back while completions
		 * overflow the CQ; kernels we run on (5.19+) no longer do. */
		if ((ret == -EINTR || ret == -EAGAIN || ret == -EBUSY) &&
		    ++refused < RING_SUBMIT_RETRIES)
			continue;
		/* Nothing was taken and no slot can come free: every caller
		 * would have to drop an operation its object counts on. */
		log_error("io_uring refuses submissions: bug in SQ handling or kernel failure",
			  LF_S("error", ret < 0 ? strerror(-ret) : "nothing submitted"),
			  LF_U("attempts", refused + 1));
		log_flush_wait();
		abort();
	}
}

void ring_submit_now(struct ring *r)
{
	/* a refusal leaves the entries queued: the loop submits them at the
	 * end of the iteration as always */
	(void)io_uring_submit(&r->uring);
}

/* ---- timers: an intrusive pairing heap keyed by expires_ms ----
 *
 * Every armed timer is a node; the root fires first. A node's children hang
 * off t->child as a sibling list (next / prev, the first child's prev being
 * its parent). Melding two heaps makes the later root the first child of
 * the earlier; removing a node melds its children back in pairs. No memory
 * is ever allocated, so arming cannot fail. */

/* a and b are roots (no siblings) or NULL; returns the root of both. */
static struct timer *timer_meld(struct timer *a, struct timer *b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	if (b->expires_ms < a->expires_ms) {
		struct timer *tmp = a;

		a = b;
		b = tmp;
	}
	b->prev = a;
	b->next = a->child;
	if (a->child)
		a->child->prev = b;
	a->child = b;
	return a;
}

/* One heap from a sibling list: meld neighbours in pairs left to right, then
 * the pairs right to left (the classic two passes, without recursion, so
 * a list of any length costs no stack). */
static struct timer *timer_merge_siblings(struct timer *first)
{
	struct timer *pairs = NULL, *root = NULL;

	while (first) {
		struct timer *a = first, *b = a->next;

		first = b ? b->next : NULL;
		a->next = a->prev = NULL;
		if (b)
			b->next = b->prev = NULL;
		a = timer_meld(a, b);
		a->next = pairs; /* pairs lists the melded pairs last first */
		pairs = a;
	}
	while (pairs) {
		struct timer *a = pairs;

		pairs = a->next;
		a->next = NULL;
		root = timer_meld(root, a);
	}
	return root;
}

void timer_init(struct timer *t, timer_cb cb)
{
	memset(t, 0, sizeof(*t));
	t->cb = cb;
}

void timer_disarm(struct ring *r, struct timer *t)
{
	struct timer *children;

	if (!t->armed)
		return;
	children = timer_merge_siblings(t->child);
	if (t == r->timers) {
		r->timers = children;
	} else {
		if (t->prev->child == t)
			t->prev->child = t->next; /* t was its parent's first child */
		else
			t->prev->next = t->next;
		if (t->next)
			t->next->prev = t->prev;
		r->timers = timer_meld(r->timers, children);
	}
	t->child = t->next = t->prev = NULL;
	t->armed = false;
	r->timers_armed--;
}

void timer_arm(struct ring *r, struct timer *t, uint64_t after_ms)
{
	timer_disarm(r, t);
	t->expires_ms = now_ms() + after_ms;
	t->armed = true;
	r->timers_armed++;
	r->timers = timer_meld(r->timers, t);
}

bool timer_rearm_unless_idle(struct ring *r, struct timer *t, uint64_t last_active_ms,
			     uint64_t idle_ms, uint64_t *quiet_ms)
{
	uint64_t quiet = ms_since(now_ms(), last_active_ms);

	if (quiet_ms)
		*quiet_ms = quiet;
	if (quiet < idle_ms) {
		timer_arm(r, t, idle_ms - quiet);
		return true;
	}
	return false;
}

/* Fire due timers. A callback that re-arms with a zero delay waits for the
 * next turn of the loop: at most the timers present at entry fire. */
static void timers_run(struct ring *r)
{
	uint64_t now = now_ms();
	size_t budget = r->timers_armed;

	while (budget-- && r->timers && r->timers->expires_ms <= now) {
		struct timer *t = r->timers;

		timer_disarm(r, t);
		t->cb(r, t);
	}
}

/* ms until the earliest timer, or -1 if none. */
static long timers_next(const struct ring *r)
{
	uint64_t now = now_ms();

	if (!r->timers)
		return -1;
	return r->timers->expires_ms > now ? (long)(r->timers->expires_ms - now) : 0;
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

void ring_set_before_wait(struct ring *r, ring_hook_cb cb, void *arg)
{
	r->before_wait = cb;
	r->before_wait_arg = arg;
}

void ring_defer(struct ring *r, struct ring_deferred *d)
{
	if (d->prev)
		return;
	DL_APPEND(r->deferred, d);
}

void ring_undefer(struct ring *r, struct ring_deferred *d)
{
	if (!d->prev)
		return;
	DL_DELETE(r->deferred, d);
	d->prev = d->next = NULL;
}

static void deferred_run(struct ring *r)
{
	struct ring_deferred *d;

	while ((d = r->deferred)) {
		ring_undefer(r, d);
		d->cb(r, d);
	}
}

int ring_run(struct ring *r)
{
	while (!r->stop) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts;
		unsigned head, seen = 0;
		long wait_ms;
		int ret;

		deferred_run(r);
		if (r->before_wait)
			r->before_wait(r, r->before_wait_arg);
		now_ms_cache(true); /* the wait is measured from now */
		wait_ms = timers_next(r);

		if (wait_ms >= 0) {
			ts.tv_sec = wait_ms / 1000;
			ts.tv_nsec = (wait_ms % 1000) * 1000000L;
		}
		/* cqe must not be NULL: liburing 2.3 crashes on it */
		ret = io_uring_submit_and_wait_timeout(&r->uring, &cqe, 1,
						       wait_ms >= 0 ? &ts : NULL, NULL);
		if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN) {
			now_ms_cache(false);
			return ret;
		}
		now_ms_cache(true); /* what woke the loop happened now */
		io_uring_for_each_cqe(&r->uring, head, cqe)
		{
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
	now_ms_cache(false);
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

void ring_prep_accept(struct ring *r, struct ring_op *op, int fd)
{
	struct io_uring_sqe *sqe = ring_get_sqe(r);

	io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
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

void ring_cancel_fd_now(struct ring *r, int fd)
{
	ring_cancel_fd(r, fd);
	ring_submit_now(r);
}

void ring_cancel_op(struct ring *r, struct ring_op *op)
{
	struct io_uring_sqe *sqe = ring_get_sqe(r);

	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
	ring_sqe_set_op(sqe, NULL);
}
