/*
 * ring.h — the event loop: one io_uring per worker thread, completion-driven.
 *
 * Every in-flight operation carries a struct ring_op pointer in user_data;
 * the op is normally embedded in the object that owns it and its callback
 * finds the owner with container_of(). user_data 0 marks fire-and-forget
 * operations (cancels) whose completion is ignored.
 *
 * Ownership rule (the classic io_uring use-after-free): an object with
 * operations in flight counts them; it is freed only when the count is zero.
 * Callers cancel or shut down the fd, wait for the completions to drain the
 * count, then close and free.
 *
 * Timers are an intrusive pairing heap of deadlines in the ring (the links
 * live in struct timer, so arming never allocates and cannot fail); the loop
 * waits for completions with a timeout that ends at the earliest deadline,
 * so timers cost no submissions at all.
 *
 * Nothing here blocks except the wait for completions.
 */
#ifndef ANYPROXY_RING_H
#define ANYPROXY_RING_H

#include <liburing.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/signalfd.h>

struct ring;
struct ring_op;

/* res: the CQE result (>= 0 or -errno); flags: CQE flags (IORING_CQE_F_MORE
 * says a multishot op stays armed). */
typedef void (*ring_cb)(struct ring *r, struct ring_op *op, int res, uint32_t flags);

struct ring_op {
	ring_cb cb;
};

struct timer;
typedef void (*timer_cb)(struct ring *r, struct timer *t);

struct timer {
	uint64_t expires_ms;
	/* Pairing-heap links, owned by the ring while armed: the first child,
	 * the next sibling, and the previous sibling (the parent for a first
	 * child, NULL for the root). */
	struct timer *child, *next, *prev;
	bool armed;
	timer_cb cb;
};

typedef void (*ring_signal_cb)(struct ring *r, int signo);
typedef void (*ring_hook_cb)(struct ring *r, void *arg);

struct ring_deferred;
typedef void (*ring_deferred_cb)(struct ring *r, struct ring_deferred *d);

/* Work put off to the end of the loop iteration (ring_defer), embedded in
 * its owner like a ring_op. prev is NULL while it is not queued. */
struct ring_deferred {
	struct ring_deferred *prev, *next;
	ring_deferred_cb cb;
};

struct ring {
	struct io_uring uring;
	bool initialised;
	bool stop;
	struct timer *timers; /* root of the pairing heap: the earliest deadline */
	size_t timers_armed;
	/* signals delivered through a signalfd read by the ring */
	int signal_fd;
	struct ring_op signal_op;
	struct signalfd_siginfo signal_info;
	ring_signal_cb on_signal;
	/* queued with ring_defer, run before the hook (utlist DL list) */
	struct ring_deferred *deferred;
	/* run once per iteration before the wait (ring_set_before_wait) */
	ring_hook_cb before_wait;
	void *before_wait_arg;
};

/* Create the ring in the calling thread (SINGLE_ISSUER + DEFER_TASKRUN when
 * the kernel has them). 0 or -errno. */
int ring_init(struct ring *r, unsigned entries);
void ring_exit(struct ring *r);

/* A free SQE; never NULL. When the SQ is full it submits the pending ones
 * and takes a slot they freed. A kernel that keeps refusing the submission
 * (interrupted, short of memory or busy, RING_SUBMIT_RETRIES times in ring.c) or
 * refuses it for any other reason leaves the loop unable to go on: the
 * process logs why and aborts (a bug, not a condition callers could
 * handle). */
struct io_uring_sqe *ring_get_sqe(struct ring *r);
/* Hand the queued entries to the kernel now instead of at the end of the
 * iteration: for a rare operation (a cancel) that must have taken effect
 * before anything the iteration does next is seen outside (a log line). */
void ring_submit_now(struct ring *r);

static inline void ring_sqe_set_op(struct io_uring_sqe *sqe, struct ring_op *op)
{
	io_uring_sqe_set_data(sqe, op);
}

/*
 * Register the one hook ring_run calls in every iteration, after the
 * completions and timers of the previous one and before it submits and
 * waits (redis's beforesleep): work batched during an iteration (log lines)
 * is done there, so nothing is left pending while the loop sleeps. The hook
 * may queue operations and arm timers; they count for the wait that
 * follows. cb NULL removes it.
 */
void ring_set_before_wait(struct ring *r, ring_hook_cb cb, void *arg);

/*
 * Run d->cb once, after the completions and timers of this iteration and
 * before the submission that ends it (before the before_wait hook): an
 * owner that produces output in many steps of one iteration (a tunnel
 * encrypting the frames of many streams) hands it to the kernel in one
 * operation. Queueing a queued item does nothing. Items queued by a
 * callback run in the same pass. The owner must ring_undefer() before it
 * frees the memory holding d.
 */
static inline void ring_deferred_init(struct ring_deferred *d, ring_deferred_cb cb)
{
	d->prev = d->next = NULL;
	d->cb = cb;
}
void ring_defer(struct ring *r, struct ring_deferred *d);
void ring_undefer(struct ring *r, struct ring_deferred *d);

/* Run until ring_stop(). Returns 0, or -errno if the ring itself failed. */
int ring_run(struct ring *r);
static inline void ring_stop(struct ring *r)
{
	r->stop = true;
}

/* Block the given signals for the thread and deliver them to cb through a
 * signalfd read on the ring. 0 or -errno. */
int ring_watch_signals(struct ring *r, const int *signals, int count, ring_signal_cb cb);

/* Timers: (re)arm to fire after ms milliseconds (never fails: the timer
 * carries its own links); disarm is idempotent. */
void timer_init(struct timer *t, timer_cb cb);
void timer_arm(struct ring *r, struct timer *t, uint64_t after_ms);
void timer_disarm(struct ring *r, struct timer *t);
static inline bool timer_armed(const struct timer *t)
{
	return t->armed;
}

/* A lazy idle watch, from t's callback: activity only stamps
 * last_active_ms (now_ms()), and the timer, armed for idle_ms, checks here.
 * When the last activity is less than idle_ms ago, t is armed again for
 * what is left and this returns true (not idle yet); otherwise false: idle
 * for *quiet_ms (may be NULL) milliseconds, t stays disarmed. */
bool timer_rearm_unless_idle(struct ring *r, struct timer *t, uint64_t last_active_ms,
			     uint64_t idle_ms, uint64_t *quiet_ms);

/* Convenience preparers: each gets an SQE, fills it and tags it with op. */
void ring_prep_recv(struct ring *r, struct ring_op *op, int fd, void *buf, size_t len);
void ring_prep_send(struct ring *r, struct ring_op *op, int fd, const void *buf, size_t len);
/* One connection (single-shot on purpose: a multishot accept takes every
 * connection waiting in the backlog at once, so its owner could not stop
 * accepting at a bound). */
void ring_prep_accept(struct ring *r, struct ring_op *op, int fd);
void ring_prep_connect(struct ring *r, struct ring_op *op, int fd, const struct sockaddr *sa,
		       socklen_t len);
void ring_prep_read(struct ring *r, struct ring_op *op, int fd, void *buf, size_t len);
/* Cancel every operation on fd; the completion is ignored. */
void ring_cancel_fd(struct ring *r, int fd);
/* The same, submitted at once (ring_submit_now): for a caller about to
 * close fd, whose cancel submitted after the close would find no file (or
 * another one under the reused number), and for one whose next step must
 * not be seen outside before the cancel took effect (a pause's log line). */
void ring_cancel_fd_now(struct ring *r, int fd);
/* Cancel the one operation op (its completion comes with -ECANCELED, or
 * its result if it finished first). */
void ring_cancel_op(struct ring *r, struct ring_op *op);

#endif
