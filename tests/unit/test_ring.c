/* Unit tests: the ring's timers, operations and signal delivery. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "anyproxy/bufring.h"
#include "anyproxy/common.h"
#include "anyproxy/ring.h"

struct probe {
	struct timer t;
	int id;
	int *order;
	int *n;
	bool stop;
};

static void probe_fire(struct ring *r, struct timer *t)
{
	struct probe *p = container_of(t, struct probe, t);

	p->order[(*p->n)++] = p->id;
	if (p->stop)
		ring_stop(r);
}

static void test_timers_fire_in_order_and_disarm(void **state)
{
	struct ring r;
	struct probe p[5];
	int order[5], n = 0;
	const unsigned delay[5] = { 40, 10, 30, 20, 50 };

	assert_int_equal(ring_init(&r, 64), 0);
	for (int i = 0; i < 5; i++) {
		p[i] = (struct probe){ .id = i, .order = order, .n = &n, .stop = i == 4 };
		timer_init(&p[i].t, probe_fire);
		timer_arm(&r, &p[i].t, delay[i]);
	}
	timer_disarm(&r, &p[2].t); /* the 30 ms one never fires */
	timer_disarm(&r, &p[2].t); /* idempotent */
	assert_false(timer_armed(&p[2].t));
	assert_int_equal(ring_run(&r), 0);
	assert_int_equal(n, 4);
	assert_int_equal(order[0], 1);
	assert_int_equal(order[1], 3);
	assert_int_equal(order[2], 0);
	assert_int_equal(order[3], 4);
	ring_exit(&r);
}

static void test_rearm_moves_deadline(void **state)
{
	struct ring r;
	struct probe a, b;
	int order[2], n = 0;
	uint64_t start = now_ms();

	assert_int_equal(ring_init(&r, 64), 0);
	a = (struct probe){ .id = 1, .order = order, .n = &n };
	b = (struct probe){ .id = 2, .order = order, .n = &n, .stop = true };
	timer_init(&a.t, probe_fire);
	timer_init(&b.t, probe_fire);
	timer_arm(&r, &a.t, 10);
	timer_arm(&r, &b.t, 30);
	timer_arm(&r, &a.t, 60); /* re-arming replaces the first deadline */
	assert_int_equal(ring_run(&r), 0);
	assert_int_equal(n, 1);
	assert_int_equal(order[0], 2);
	assert_true(now_ms() - start >= 30);
	ring_exit(&r);
}

/* The lazy idle watch: armed again for what is left while there was
 * activity within idle_ms, left disarmed once quiet that long. */
static void test_rearm_unless_idle(void **state)
{
	struct ring r;
	struct probe p = { .id = 1 };
	uint64_t quiet = 0, before, after, last;

	assert_int_equal(ring_init(&r, 64), 0);
	timer_init(&p.t, probe_fire);

	before = now_ms();
	last = before - 300; /* active 300 ms ago, idle after 1000 */
	assert_true(timer_rearm_unless_idle(&r, &p.t, last, 1000, &quiet));
	after = now_ms();
	assert_true(timer_armed(&p.t));
	assert_in_range(quiet, 300, after - last);
	/* due when the last activity is idle_ms old, not idle_ms from now */
	assert_in_range(p.t.expires_ms, last + 1000, last + 1000 + (after - before));
	timer_disarm(&r, &p.t);

	last = now_ms() - 2000; /* quiet for longer than idle_ms */
	assert_false(timer_rearm_unless_idle(&r, &p.t, last, 1000, &quiet));
	assert_false(timer_armed(&p.t));
	assert_true(quiet >= 2000);
	/* quiet_ms may be NULL */
	assert_false(timer_rearm_unless_idle(&r, &p.t, last, 1000, NULL));
	assert_true(timer_rearm_unless_idle(&r, &p.t, now_ms(), 1000, NULL));
	assert_true(timer_armed(&p.t));
	timer_disarm(&r, &p.t);
	/* activity stamped later than our now (another thread's loop read
	 * the clock after ours): not idle, quiet 0, not a wrapped difference */
	assert_true(timer_rearm_unless_idle(&r, &p.t, now_ms() + 50, 1000, &quiet));
	assert_int_equal(quiet, 0);
	assert_true(timer_armed(&p.t));
	timer_disarm(&r, &p.t);
	ring_exit(&r);
}

struct clock_probe {
	struct timer t;
	uint64_t first, second;
};

static void clock_probe_fire(struct ring *r, struct timer *t)
{
	struct clock_probe *p = container_of(t, struct clock_probe, t);

	p->first = now_ms();
	usleep(5000);
	p->second = now_ms();
	ring_stop(r);
}

/* Inside the loop now_ms is the time the iteration woke, read once; outside
 * it is the clock. */
static void test_now_ms_is_read_once_per_iteration(void **state)
{
	struct ring r;
	struct clock_probe p;
	uint64_t before, after;

	assert_int_equal(ring_init(&r, 64), 0);
	timer_init(&p.t, clock_probe_fire);
	timer_arm(&r, &p.t, 1);
	before = now_ms();
	assert_int_equal(ring_run(&r), 0);
	assert_int_equal(p.first, p.second);
	assert_true(p.first >= before);
	after = now_ms();
	usleep(5000);
	assert_true(now_ms() >= after + 5); /* the loop returned: the clock again */
	assert_true(after >= p.second + 5);
	ring_exit(&r);
}

/* A daemon worker's receive buffers: the daemons' sizes, group 0. */
static void test_bufring_init_worker(void **state)
{
	struct ring r;
	struct bufring b;

	assert_int_equal(ring_init(&r, 64), 0);
	assert_int_equal(bufring_init_worker(&b, &r, 1), 0);
	assert_int_equal(b.entries, BUFRING_ENTRIES);
	assert_int_equal(b.buf_size, BUFRING_BUF_SIZE);
	assert_int_equal(b.group, 0);
	bufring_exit(&b, &r);
	ring_exit(&r);
}

struct recv_probe {
	struct ring_op op;
	int res;
	char buf[16];
};

static void recv_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct recv_probe *p = container_of(op, struct recv_probe, op);

	p->res = res;
	ring_stop(r);
}

static void test_recv_completion_reaches_its_op(void **state)
{
	struct ring r;
	struct recv_probe p = { .op.cb = recv_done, .res = -1 };
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(ring_init(&r, 64), 0);
	ring_prep_recv(&r, &p.op, sv[0], p.buf, sizeof(p.buf));
	assert_int_equal(write(sv[1], "hello", 5), 5);
	assert_int_equal(ring_run(&r), 0);
	assert_int_equal(p.res, 5);
	assert_memory_equal(p.buf, "hello", 5);
	ring_exit(&r);
	close(sv[0]);
	close(sv[1]);
}

struct bufrecv_probe {
	struct ring_op op;
	int res;
	uint32_t flags;
};

static void bufrecv_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct bufrecv_probe *p = container_of(op, struct bufrecv_probe, op);

	p->res = res;
	p->flags = flags;
	ring_stop(r);
}

/* A receive that polls first (the socket was read dry) is in the kernel
 * before any data, and completes with the bytes that come later. */
static void test_bufring_recv_poll_first_waits_for_data(void **state)
{
	struct ring r;
	struct bufring b;
	struct bufrecv_probe p = { .op.cb = bufrecv_done, .res = -1 };
	const struct io_uring_sqe *sqe;
	int sv[2], bid;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(ring_init(&r, 64), 0);
	assert_int_equal(bufring_init_worker(&b, &r, 1), 0);
	bufring_prep_recv(&b, &r, &p.op, sv[0], 64, true);
	sqe = &r.uring.sq.sqes[(r.uring.sq.sqe_tail - 1) & *r.uring.sq.kring_mask];
	assert_true(sqe->ioprio & IORING_RECVSEND_POLL_FIRST);
	assert_true(sqe->flags & IOSQE_BUFFER_SELECT);
	ring_submit_now(&r);
	assert_int_equal(write(sv[1], "later", 5), 5);
	assert_int_equal(ring_run(&r), 0);
	assert_int_equal(p.res, 5);
	bid = bufring_cqe_bid(p.flags);
	assert_true(bid >= 0);
	assert_memory_equal(bufring_addr(&b, (uint16_t)bid), "later", 5);
	bufring_recycle(&b, (uint16_t)bid);
	/* without the hint, the same receive tries at once */
	bufring_prep_recv(&b, &r, &p.op, sv[0], 64, false);
	sqe = &r.uring.sq.sqes[(r.uring.sq.sqe_tail - 1) & *r.uring.sq.kring_mask];
	assert_false(sqe->ioprio & IORING_RECVSEND_POLL_FIRST);
	ring_cancel_op(&r, &p.op);
	bufring_exit(&b, &r);
	ring_exit(&r);
	close(sv[0]);
	close(sv[1]);
}

/* Far more operations than the SQ has slots, queued without returning to
 * the loop: ring_get_sqe flushes the full SQ instead of failing, and every
 * operation completes exactly once. */
#define NOP_SQ_ENTRIES 8
#define NOP_COUNT 5000

struct nop_probe {
	struct ring_op op;
	unsigned *done;
	unsigned hits;
};

static void nop_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct nop_probe *p = container_of(op, struct nop_probe, op);

	assert_int_equal(res, 0);
	p->hits++;
	if (++*p->done == NOP_COUNT)
		ring_stop(r);
}

static void test_get_sqe_beyond_sq_size_submits_every_op(void **state)
{
	static struct nop_probe probes[NOP_COUNT];
	struct ring r;
	unsigned done = 0;

	assert_int_equal(ring_init(&r, NOP_SQ_ENTRIES), 0);
	for (unsigned i = 0; i < NOP_COUNT; i++) {
		struct io_uring_sqe *sqe = ring_get_sqe(&r);

		assert_non_null(sqe);
		probes[i] = (struct nop_probe){ .op.cb = nop_done, .done = &done };
		io_uring_prep_nop(sqe);
		ring_sqe_set_op(sqe, &probes[i].op);
	}
	assert_int_equal(ring_run(&r), 0);
	assert_int_equal(done, NOP_COUNT);
	for (unsigned i = 0; i < NOP_COUNT; i++)
		assert_int_equal(probes[i].hits, 1);
	ring_exit(&r);
}

/* Thousands of timers armed, re-armed and disarmed in a scrambled order:
 * the ones left armed all fire, in deadline order, and no disarmed one does. */
#define MANY_TIMERS 4000
#define MANY_TIMERS_SPREAD_MS 40

struct many_probe {
	struct timer t;
	bool fired, disarmed;
};

static struct {
	uint64_t last_expiry;
	unsigned fired, expected;
	bool out_of_order;
} many;

static void many_fire(struct ring *r, struct timer *t)
{
	struct many_probe *p = container_of(t, struct many_probe, t);

	if (t->expires_ms < many.last_expiry)
		many.out_of_order = true;
	many.last_expiry = t->expires_ms;
	assert_false(p->fired);
	p->fired = true;
	if (++many.fired == many.expected)
		ring_stop(r);
}

static void test_thousands_of_timers(void **state)
{
	static struct many_probe p[MANY_TIMERS];
	struct ring r;
	uint32_t seed = 12345;

	assert_int_equal(ring_init(&r, 64), 0);
	for (unsigned i = 0; i < MANY_TIMERS; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (struct many_probe){ 0 };
		timer_init(&p[i].t, many_fire);
		timer_arm(&r, &p[i].t, (seed >> 16) % MANY_TIMERS_SPREAD_MS);
	}
	assert_int_equal(r.timers_armed, MANY_TIMERS);
	for (unsigned i = 0; i < MANY_TIMERS; i++) {
		seed = seed * 1103515245u + 12345u;
		switch ((seed >> 16) % 4) {
		case 0: /* disarm, some of them twice */
			timer_disarm(&r, &p[i].t);
			timer_disarm(&r, &p[i].t);
			p[i].disarmed = true;
			break;
		case 1: /* re-arm, earlier or later */
			timer_arm(&r, &p[i].t, (seed >> 8) % MANY_TIMERS_SPREAD_MS);
			break;
		default:
			break;
		}
	}
	many.expected = 0;
	for (unsigned i = 0; i < MANY_TIMERS; i++) {
		assert_int_equal(timer_armed(&p[i].t), !p[i].disarmed);
		many.expected += !p[i].disarmed;
	}
	assert_int_equal(r.timers_armed, many.expected);
	assert_int_equal(ring_run(&r), 0);
	assert_int_equal(many.fired, many.expected);
	assert_false(many.out_of_order);
	for (unsigned i = 0; i < MANY_TIMERS; i++) {
		assert_int_equal(p[i].fired, !p[i].disarmed);
		assert_false(timer_armed(&p[i].t));
	}
	assert_null(r.timers);
	assert_int_equal(r.timers_armed, 0);
	ring_exit(&r);
}

static int got_signal;

static void on_signal(struct ring *r, int signo)
{
	got_signal = signo;
	ring_stop(r);
}

static void test_signal_through_signalfd(void **state)
{
	static const int sigs[] = { SIGUSR1 };
	struct ring r;

	assert_int_equal(ring_init(&r, 64), 0);
	assert_int_equal(ring_watch_signals(&r, sigs, 1, on_signal), 0);
	assert_int_equal(kill(getpid(), SIGUSR1), 0);
	assert_int_equal(ring_run(&r), 0);
	assert_int_equal(got_signal, SIGUSR1);
	ring_exit(&r);
}

/* ---- the before-wait hook ---- */

struct hook_probe {
	int calls;   /* hook runs so far */
	int seen[3]; /* hook runs when timer i fired */
	struct timer t[3];
	struct timer late; /* armed by the hook itself */
	struct timer guard;
	bool late_fired, guard_fired;
};

static struct hook_probe hp;

static void hook_count(struct ring *r, void *arg)
{
	struct hook_probe *p = arg;

	p->calls++;
}

static void hook_timer_fire(struct ring *r, struct timer *t)
{
	int i = (int)(t - hp.t);

	hp.seen[i] = hp.calls;
	if (i == 2)
		ring_stop(r);
	else /* due at once, yet fires in the next iteration (timers_run) */
		timer_arm(r, &hp.t[i + 1], 0);
}

/* One run of the hook per iteration: before each wait, after the previous
 * iteration's timers, and none after the loop stops. */
static void test_before_wait_runs_once_per_iteration(void **state)
{
	struct ring r;

	memset(&hp, 0, sizeof(hp));
	assert_int_equal(ring_init(&r, 64), 0);
	ring_set_before_wait(&r, hook_count, &hp);
	for (int i = 0; i < 3; i++)
		timer_init(&hp.t[i], hook_timer_fire);
	timer_arm(&r, &hp.t[0], 1); /* then each timer arms the next */
	assert_int_equal(ring_run(&r), 0);
	assert_int_equal(hp.seen[0], 1);
	assert_int_equal(hp.seen[1], 2);
	assert_int_equal(hp.seen[2], 3);
	assert_int_equal(hp.calls, 3);
	ring_exit(&r);
}

static void late_fire(struct ring *r, struct timer *t)
{
	hp.late_fired = true;
	ring_stop(r);
}

static void guard_fire(struct ring *r, struct timer *t)
{
	hp.guard_fired = true;
	ring_stop(r);
}

static void hook_arms_timer(struct ring *r, void *arg)
{
	struct hook_probe *p = arg;

	if (p->calls++ == 0)
		timer_arm(r, &p->late, 0);
}

/* The hook runs before the wait is computed: a timer it arms bounds the
 * wait that follows (else only the guard would end the loop). */
static void test_before_wait_work_counts_for_the_wait(void **state)
{
	struct ring r;

	memset(&hp, 0, sizeof(hp));
	assert_int_equal(ring_init(&r, 64), 0);
	ring_set_before_wait(&r, hook_arms_timer, &hp);
	timer_init(&hp.late, late_fire);
	timer_init(&hp.guard, guard_fire);
	timer_arm(&r, &hp.guard, 5000);
	assert_int_equal(ring_run(&r), 0);
	assert_true(hp.late_fired);
	assert_false(hp.guard_fired);
	timer_disarm(&r, &hp.guard);
	ring_exit(&r);
}

/* ---- deferred work (ring_defer) ---- */

static struct {
	struct ring_deferred d[3];
	int order[8];
	int n;
	int seen_by_hook; /* how many had run when the hook first saw any */
	int hook_calls, seen_at_call;
	struct timer queue, stop, guard;
} dp;

static void deferred_note(struct ring *r, struct ring_deferred *d)
{
	int i = (int)(d - dp.d);

	if (dp.n < 8)
		dp.order[dp.n++] = i;
	if (i == 0)
		ring_defer(r, &dp.d[2]); /* queued by a callback: same pass */
}

static void deferred_queue(struct ring *r, struct timer *t)
{
	ring_defer(r, &dp.d[0]);
	ring_defer(r, &dp.d[1]);
	ring_defer(r, &dp.d[0]); /* queued already: nothing */
	ring_undefer(r, &dp.d[1]);
	ring_undefer(r, &dp.d[1]); /* not queued: nothing */
}

static void deferred_stop(struct ring *r, struct timer *t)
{
	ring_stop(r);
}

static void deferred_hook(struct ring *r, void *arg)
{
	dp.hook_calls++;
	if (dp.n && !dp.seen_by_hook) {
		dp.seen_by_hook = dp.n;
		dp.seen_at_call = dp.hook_calls;
		timer_arm(r, &dp.stop, 0);
	}
}

/* Queued work runs once, in queue order, in the iteration after it was
 * queued and before the before_wait hook; what a callback queues runs in
 * the same pass; an item taken off never runs. */
static void test_deferred_work_runs_once_before_the_hook(void **state)
{
	struct ring r;

	memset(&dp, 0, sizeof(dp));
	assert_int_equal(ring_init(&r, 64), 0);
	for (int i = 0; i < 3; i++)
		ring_deferred_init(&dp.d[i], deferred_note);
	ring_set_before_wait(&r, deferred_hook, NULL);
	timer_init(&dp.queue, deferred_queue);
	timer_init(&dp.stop, deferred_stop);
	timer_init(&dp.guard, deferred_stop); /* ends the loop should they never run */
	timer_arm(&r, &dp.queue, 1);
	timer_arm(&r, &dp.guard, 2000);
	assert_int_equal(ring_run(&r), 0);
	timer_disarm(&r, &dp.guard);
	/* queued in the first iteration (by the timer), run in the second
	 * before its hook */
	assert_int_equal(dp.seen_at_call, 2);
	assert_int_equal(dp.n, 2);
	assert_int_equal(dp.order[0], 0);
	assert_int_equal(dp.order[1], 2);
	assert_int_equal(dp.seen_by_hook, 2);
	assert_null(r.deferred);
	for (int i = 0; i < 3; i++)
		assert_null(dp.d[i].prev);
	ring_exit(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timers_fire_in_order_and_disarm),
		cmocka_unit_test(test_rearm_moves_deadline),
		cmocka_unit_test(test_rearm_unless_idle),
		cmocka_unit_test(test_now_ms_is_read_once_per_iteration),
		cmocka_unit_test(test_bufring_init_worker),
		cmocka_unit_test(test_bufring_recv_poll_first_waits_for_data),
		cmocka_unit_test(test_recv_completion_reaches_its_op),
		cmocka_unit_test(test_get_sqe_beyond_sq_size_submits_every_op),
		cmocka_unit_test(test_thousands_of_timers),
		cmocka_unit_test(test_signal_through_signalfd),
		cmocka_unit_test(test_before_wait_runs_once_per_iteration),
		cmocka_unit_test(test_before_wait_work_counts_for_the_wait),
		cmocka_unit_test(test_deferred_work_runs_once_before_the_hook),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
