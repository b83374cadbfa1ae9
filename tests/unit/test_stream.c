/* Unit tests: a tunnel's writable wait list (stream_tunnel_writable), its
 * stream id table, and the growth of a stream's receive window.
 *
 * The tunnel is a zeroed struct tunnel in state OPEN with nothing queued:
 * every open stream with credit has room, and nothing here sends a frame,
 * so no ring, socket or TLS session is needed. The callbacks do what real
 * owners may do while being woken: detach another stream, re-queue
 * themselves or another, close the tunnel. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "anyproxy/common.h"
#include "anyproxy/stream.h"
#include "anyproxy/tunnel.h"

#define WAITERS_MAX 64

enum wake_action {
	WAKE_NOTHING,
	WAKE_REQUEUE_SELF,
	WAKE_DETACH_OTHER,
	WAKE_REQUEUE_OTHER,
	WAKE_REQUEUE_SELF_DETACH_OTHER,
	WAKE_ACTIONS
};

struct waiter {
	struct stream s;
	unsigned woken, reset;
	enum wake_action action;
	struct waiter *other;
};

static int on_data(struct stream *s, const uint8_t *p, size_t n)
{
	return 0;
}

static void on_fin(struct stream *s)
{
}

static void on_reset(struct stream *s, uint8_t reason, const char *why)
{
	((struct waiter *)s->owner)->reset++;
}

static void on_writable(struct stream *s)
{
	struct waiter *w = s->owner;

	w->woken++;
	switch (w->action) {
	case WAKE_REQUEUE_SELF:
		stream_want_writable(s);
		break;
	case WAKE_DETACH_OTHER:
		stream_detach(&w->other->s);
		break;
	case WAKE_REQUEUE_OTHER:
		stream_want_writable(&w->other->s);
		break;
	case WAKE_REQUEUE_SELF_DETACH_OTHER:
		stream_want_writable(s);
		stream_detach(&w->other->s);
		break;
	case WAKE_NOTHING:
	case WAKE_ACTIONS:
		break;
	}
}

static const struct stream_ops ops = {
	.on_data = on_data,
	.on_fin = on_fin,
	.on_reset = on_reset,
	.on_writable = on_writable,
};

struct fixture {
	struct tunnel t;
	struct waiter w[WAITERS_MAX];
	unsigned n;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->t.state = TUNNEL_OPEN;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	for (unsigned i = 0; i < f->n; i++)
		stream_detach(&f->w[i].s);
	stream_table_free(&f->t.streams);
	free(f);
	return 0;
}

/* n open streams with credit, all waiting for room in index order. */
static void add_waiters(struct fixture *f, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct waiter *w = &f->w[i];

		assert_int_equal(stream_accept(&w->s, &f->t, i + 1, STREAM_WINDOW_BYTES, &ops, w),
				 0);
		w->s.open = true;
		assert_true(stream_send_room(&w->s) > 0);
		stream_want_writable(&w->s);
	}
	f->n = n;
}

/* The wait list is a well-formed utlist DL list (each entry's wait_prev is
 * the one before it, the head's is the tail) of attached streams of this
 * tunnel, and it holds exactly the streams that say they wait. Returns its
 * length. */
static unsigned check_wait_list(struct fixture *f)
{
	struct stream *head = f->t.waiters, *prev = NULL;
	unsigned len = 0, flagged = 0;

	for (struct stream *s = head; s; s = s->wait_next) {
		if (prev)
			assert_ptr_equal(s->wait_prev, prev);
		assert_ptr_equal(s->tunnel, &f->t);
		assert_true(s->waiting_writable);
		prev = s;
		assert_true(++len <= f->n);
	}
	if (head)
		assert_ptr_equal(head->wait_prev, prev);
	for (unsigned i = 0; i < f->n; i++)
		flagged += f->w[i].s.waiting_writable;
	assert_int_equal(flagged, len);
	return len;
}

/* The original bug: waking A, whose callback detaches B (the next in line),
 * left C waiting forever — the walk followed B's cleared link and stopped. */
static void test_waking_one_detaches_the_next(void **state)
{
	struct fixture *f = *state;

	add_waiters(f, 3);
	f->w[0].action = WAKE_DETACH_OTHER;
	f->w[0].other = &f->w[1];
	stream_tunnel_writable(&f->t);
	assert_int_equal(f->w[0].woken, 1);
	assert_int_equal(f->w[1].woken, 0);
	assert_null(f->w[1].s.tunnel);
	assert_int_equal(f->w[2].woken, 1);
	assert_int_equal(check_wait_list(f), 0);
}

/* A re-queues itself, then detaches B: the fresh list must stay [A] and
 * C must still be woken (stale links once spliced C behind A and lost it). */
static void test_requeue_self_then_detach_next(void **state)
{
	struct fixture *f = *state;

	add_waiters(f, 3);
	f->w[0].action = WAKE_REQUEUE_SELF_DETACH_OTHER;
	f->w[0].other = &f->w[1];
	stream_tunnel_writable(&f->t);
	assert_int_equal(f->w[0].woken, 1);
	assert_int_equal(f->w[1].woken, 0);
	assert_int_equal(f->w[2].woken, 1);
	assert_int_equal(check_wait_list(f), 1);
	assert_ptr_equal(f->t.waiters, &f->w[0].s);
}

/* A stream detaching a waiter that was already woken and re-queued (behind
 * it in the fresh list) must not splice the old list into the new one. */
static void test_detach_a_requeued_waiter(void **state)
{
	struct fixture *f = *state;

	add_waiters(f, 4);
	f->w[0].action = WAKE_REQUEUE_SELF;
	f->w[1].action = WAKE_DETACH_OTHER;
	f->w[1].other = &f->w[0];
	stream_tunnel_writable(&f->t);
	assert_int_equal(f->w[0].woken, 1);
	assert_int_equal(f->w[1].woken, 1);
	assert_int_equal(f->w[2].woken, 1);
	assert_int_equal(f->w[3].woken, 1);
	assert_null(f->w[0].s.tunnel);
	assert_int_equal(check_wait_list(f), 0);
}

/* stream_move: the stream keeps its id, table entry and place among the
 * waiters (re-queued at the end), its frames and wake-ups reach the new
 * owner, and the old struct is left detached. */
static void test_move_a_waiting_stream(void **state)
{
	struct fixture *f = *state;

	add_waiters(f, 3);
	f->n = 4;
	f->w[1].s.send_credit = 1234;
	stream_move(&f->w[3].s, &f->w[1].s, &ops, &f->w[3]);
	assert_null(f->w[1].s.tunnel);
	assert_false(f->w[1].s.waiting_writable);
	assert_ptr_equal(f->w[3].s.tunnel, &f->t);
	assert_int_equal(f->w[3].s.id, 2);
	assert_int_equal(f->w[3].s.send_credit, 1234);
	assert_ptr_equal(f->w[3].s.owner, &f->w[3]);
	assert_int_equal(f->t.streams.count, 3);
	assert_ptr_equal(stream_find(&f->t, 2), &f->w[3].s);
	assert_int_equal(check_wait_list(f), 3);
	stream_tunnel_writable(&f->t);
	assert_int_equal(f->w[0].woken, 1);
	assert_int_equal(f->w[1].woken, 0);
	assert_int_equal(f->w[2].woken, 1);
	assert_int_equal(f->w[3].woken, 1);
	assert_int_equal(check_wait_list(f), 0);

	/* a detached stream moves as it is, with nothing to relink */
	stream_move(&f->w[1].s, &f->w[3].s, &ops, &f->w[1]);
	stream_detach(&f->w[1].s);
	stream_move(&f->w[3].s, &f->w[1].s, &ops, &f->w[3]);
	assert_null(f->w[3].s.tunnel);
	assert_int_equal(f->t.streams.count, 2);
}

/* Every callback re-queues itself: each is woken once, the loop ends, and
 * the list comes back whole in the original order. */
static void test_everyone_requeues(void **state)
{
	struct fixture *f = *state;
	unsigned i = 0;

	add_waiters(f, 8);
	for (unsigned k = 0; k < 8; k++)
		f->w[k].action = WAKE_REQUEUE_SELF;
	stream_tunnel_writable(&f->t);
	for (unsigned k = 0; k < 8; k++)
		assert_int_equal(f->w[k].woken, 1);
	assert_int_equal(check_wait_list(f), 8);
	for (struct stream *s = f->t.waiters; s; s = s->wait_next)
		assert_ptr_equal(s, &f->w[i++].s);
}

/* Many streams, each callback doing something to itself or another chosen
 * at random: after each round the list is well formed, no stream was woken
 * twice or after its detach, and no attached stream was lost (each either
 * woken or still waiting). */
static void test_random_actions_keep_the_list_whole(void **state)
{
	struct fixture *f = *state;
	uint32_t seed = 7;

	add_waiters(f, WAITERS_MAX);
	for (unsigned round = 0; round < 20 && f->t.waiters; round++) {
		bool attached_before[WAITERS_MAX];
		bool waiting_before[WAITERS_MAX];

		for (unsigned i = 0; i < f->n; i++) {
			seed = seed * 1103515245u + 12345u;
			f->w[i].action = (enum wake_action)((seed >> 16) % WAKE_ACTIONS);
			f->w[i].other = &f->w[(seed >> 4) % f->n];
			/* detach rarely, so that many rounds run */
			if (f->w[i].action == WAKE_DETACH_OTHER && (seed >> 24) % 4)
				f->w[i].action = WAKE_NOTHING;
			if (f->w[i].action == WAKE_REQUEUE_SELF_DETACH_OTHER && (seed >> 24) % 4)
				f->w[i].action = WAKE_REQUEUE_SELF;
			f->w[i].woken = 0;
			attached_before[i] = f->w[i].s.tunnel != NULL;
			waiting_before[i] = f->w[i].s.waiting_writable;
		}
		stream_tunnel_writable(&f->t);
		check_wait_list(f);
		for (unsigned i = 0; i < f->n; i++) {
			struct waiter *w = &f->w[i];

			assert_true(w->woken <= 1);
			if (!attached_before[i])
				assert_int_equal(w->woken, 0);
			if (waiting_before[i] && w->s.tunnel)
				assert_true(w->woken > 0 || w->s.waiting_writable);
		}
	}
}

/* A callback that kills the tunnel: the rest are reset, none is woken
 * afterwards and the list is empty. */
static void on_writable_close_tunnel(struct stream *s)
{
	struct waiter *w = s->owner;
	struct tunnel *t = s->tunnel;

	w->woken++;
	t->state = TUNNEL_CLOSING;
	stream_tunnel_closed(t, "test");
}

static void test_tunnel_closed_by_a_callback(void **state)
{
	static const struct stream_ops closing_ops = {
		.on_data = on_data,
		.on_fin = on_fin,
		.on_reset = on_reset,
		.on_writable = on_writable_close_tunnel,
	};
	struct fixture *f = *state;

	add_waiters(f, 4);
	f->w[1].s.ops = &closing_ops;
	stream_tunnel_writable(&f->t);
	assert_int_equal(f->w[0].woken, 1);
	assert_int_equal(f->w[1].woken, 1);
	assert_int_equal(f->w[2].woken, 0);
	assert_int_equal(f->w[3].woken, 0);
	for (unsigned i = 0; i < 4; i++) {
		assert_null(f->w[i].s.tunnel);
		assert_int_equal(f->w[i].reset, 1);
	}
	assert_int_equal(f->t.streams.count, 0);
	assert_int_equal(check_wait_list(f), 0);
}

/* The id table (stream.h struct stream_table) under many streams: ids in
 * sequence, ids that share their low bits, and ids the peer picks at random;
 * every live id is found, every detached one is gone, and the table gives
 * memory back once most streams ended. */
#define TABLE_STREAMS 4096

static void check_table(struct tunnel *t, struct waiter *w, const bool *live, unsigned n)
{
	unsigned count = 0;

	for (unsigned i = 0; i < n; i++) {
		struct stream *found = stream_find(t, w[i].s.id);

		if (live[i]) {
			assert_ptr_equal(found, &w[i].s);
			count++;
		} else {
			assert_true(found != &w[i].s);
		}
	}
	assert_int_equal(t->streams.count, count);
	assert_true((uint64_t)t->streams.count * 2 <= t->streams.mask + 1);
}

static void test_id_table(void **state)
{
	struct waiter *w = calloc(TABLE_STREAMS, sizeof(*w));
	bool *live = calloc(TABLE_STREAMS, sizeof(*live));
	struct tunnel t = { .state = TUNNEL_OPEN };
	uint32_t x = 12345;

	assert_non_null(w);
	assert_non_null(live);
	for (unsigned i = 0; i < TABLE_STREAMS; i++) {
		uint32_t id;

		if (i % 3 == 0)
			id = i + 1; /* in sequence */
		else if (i % 3 == 1)
			id = (i + 1) << 16; /* the same low bits */
		else
			id = 0x80000000u | (x = x * 1103515245u + 12345u) >> 1; /* "random" */
		if (stream_find(&t, id)) {
			live[i] = false;
			w[i].s.id = 0;
			continue;
		}
		assert_int_equal(stream_accept(&w[i].s, &t, id, STREAM_WINDOW_BYTES, &ops, &w[i]),
				 0);
		assert_int_equal(stream_accept(&w[i].s, &t, id, STREAM_WINDOW_BYTES, &ops, &w[i]),
				 -EEXIST);
		live[i] = true;
	}
	check_table(&t, w, live, TABLE_STREAMS);
	/* end 15 of every 16, in an order unlike the insertion's */
	for (unsigned k = 0; k < TABLE_STREAMS; k++) {
		unsigned i = (k * 2654435761u) % TABLE_STREAMS;

		if (live[i] && i % 16) {
			stream_detach(&w[i].s);
			live[i] = false;
		}
		if (k % 512 == 0)
			check_table(&t, w, live, TABLE_STREAMS);
	}
	check_table(&t, w, live, TABLE_STREAMS);
	assert_true(t.streams.mask + 1 <= 4 * 8 * TABLE_STREAMS / 16);
	for (unsigned i = 0; i < TABLE_STREAMS; i++)
		if (live[i])
			stream_detach(&w[i].s);
	assert_int_equal(t.streams.count, 0);
	stream_table_free(&t.streams);
	free(live);
	free(w);
}

/* ---- window growth (stream_credit_due) ---- */

static uint8_t payload[FRAME_MAX_PAYLOAD];

/* n bytes of DATA for s from the peer, in frames of at most
 * FRAME_MAX_PAYLOAD. */
static void receive(struct tunnel *t, struct stream *s, size_t n)
{
	const char *why = NULL;

	while (n) {
		struct frame f = { .type = FRAME_DATA, .stream_id = s->id };

		f.data.ptr = payload;
		f.data.len = MIN(n, sizeof(payload));
		assert_int_equal(stream_handle_frame(t, &f, &why), 0);
		n -= f.data.len;
	}
}

/* The credit a sender holds (what it may still send), as the receiver
 * sees it once every increment it returned has arrived. */
static uint32_t credit(const struct stream *s)
{
	return s->recv_window - s->recv_unreturned;
}

/* One round: the sender spends all its credit, the receiver hands it on
 * `after` microseconds later (in one piece); returns the increment sent. */
static uint32_t round_trip(struct tunnel *t, struct stream *s, uint32_t after)
{
	uint32_t sent = credit(s), inc;

	receive(t, s, sent);
	inc = stream_credit_due(s, sent, (uint32_t)now_us() + after);
	assert_true(inc >= sent);
	stream_credit_returned(s, inc);
	assert_int_equal(s->recv_unreturned, 0);
	return inc;
}

static void test_window_grows_when_the_reader_keeps_up(void **state)
{
	struct tunnel t = { .state = TUNNEL_OPEN };
	struct waiter w = { 0 };

	assert_int_equal(stream_accept(&w.s, &t, 7, STREAM_WINDOW_BYTES, &ops, &w), 0);
	w.s.open = true;
	/* the sender ran dry and the bytes left at once: the window doubles */
	assert_int_equal(round_trip(&t, &w.s, 0), 2 * STREAM_WINDOW_BYTES);
	assert_int_equal(w.s.recv_window, 2 * STREAM_WINDOW_BYTES);
	assert_int_equal(credit(&w.s), 2 * STREAM_WINDOW_BYTES);
	/* and doubles again, up to STREAM_WINDOW_MAX and no further */
	for (int i = 0; i < 8; i++)
		round_trip(&t, &w.s, 0);
	assert_int_equal(w.s.recv_window, STREAM_WINDOW_MAX);
	assert_int_equal(round_trip(&t, &w.s, 0), STREAM_WINDOW_MAX);
	/* a received DATA beyond the window is still refused */
	{
		const char *why = NULL;
		struct frame f = { .type = FRAME_DATA, .stream_id = 7 };

		receive(&t, &w.s, STREAM_WINDOW_MAX);
		f.data.ptr = payload;
		f.data.len = 1;
		assert_int_equal(stream_handle_frame(&t, &f, &why), -EPROTO);
	}
	stream_detach(&w.s);
	stream_table_free(&t.streams);
}

static void test_window_stays_for_a_slow_reader(void **state)
{
	struct tunnel t = { .state = TUNNEL_OPEN };
	struct waiter w = { 0 };
	uint32_t inc;

	assert_int_equal(stream_accept(&w.s, &t, 9, STREAM_WINDOW_BYTES, &ops, &w), 0);
	w.s.open = true;
	/* the bytes left only after STREAM_WINDOW_GROW_US: no growth */
	assert_int_equal(round_trip(&t, &w.s, STREAM_WINDOW_GROW_US + 1000), STREAM_WINDOW_BYTES);
	assert_int_equal(w.s.recv_window, STREAM_WINDOW_BYTES);
	/* a reader that takes a quarter at a time while the rest waits: the
	 * credit comes back as consumed, the window never grows */
	for (int i = 0; i < 16; i++) {
		receive(&t, &w.s, credit(&w.s));
		inc = stream_credit_due(&w.s, STREAM_WINDOW_BYTES / 4, (uint32_t)now_us());
		assert_int_equal(inc, STREAM_WINDOW_BYTES / 4);
		stream_credit_returned(&w.s, inc);
	}
	assert_int_equal(w.s.recv_window, STREAM_WINDOW_BYTES);
	/* less than a quarter consumed: nothing due yet */
	assert_int_equal(stream_credit_due(&w.s, 100, (uint32_t)now_us()), 0);
	stream_detach(&w.s);
	stream_table_free(&t.streams);
}

static void test_window_stays_when_credit_suffices(void **state)
{
	struct tunnel t = { .state = TUNNEL_OPEN };
	struct waiter w = { 0 };
	uint32_t inc;

	assert_int_equal(stream_accept(&w.s, &t, 11, STREAM_WINDOW_BYTES, &ops, &w), 0);
	w.s.open = true;
	/* the sender never comes near the end of its credit: however fast the
	 * bytes leave, the window stays */
	for (int i = 0; i < 16; i++) {
		receive(&t, &w.s, STREAM_WINDOW_BYTES / 2);
		inc = stream_credit_due(&w.s, STREAM_WINDOW_BYTES / 2, (uint32_t)now_us());
		assert_int_equal(inc, STREAM_WINDOW_BYTES / 2);
		stream_credit_returned(&w.s, inc);
	}
	assert_int_equal(w.s.recv_window, STREAM_WINDOW_BYTES);
	stream_detach(&w.s);
	stream_table_free(&t.streams);
}

/* stream_tunnel_closed with callbacks that detach other streams (as a
 * closing user connection may end the streams it keeps): each stream is
 * either reset once or was detached by another's callback, and none is
 * left in the table. */
static struct waiter *close_all;
static unsigned close_detached;

static void on_reset_detach_next(struct stream *s, uint8_t reason, const char *why)
{
	struct waiter *w = s->owner;

	w->reset++;
	for (struct waiter *o = w + 1; o < close_all + TABLE_STREAMS && o <= w + 3; o++) {
		if (o->s.tunnel) {
			stream_detach(&o->s);
			close_detached++;
			break;
		}
	}
}

static void test_tunnel_closed_reaches_every_stream(void **state)
{
	static const struct stream_ops detaching_ops = {
		.on_data = on_data,
		.on_fin = on_fin,
		.on_reset = on_reset_detach_next,
		.on_writable = on_writable,
	};
	struct tunnel t = { .state = TUNNEL_OPEN };
	unsigned resets = 0;

	close_all = calloc(TABLE_STREAMS, sizeof(*close_all));
	close_detached = 0;
	assert_non_null(close_all);
	for (unsigned i = 0; i < TABLE_STREAMS; i++) {
		assert_int_equal(stream_accept(&close_all[i].s, &t, (i + 1) * 7919u,
					       STREAM_WINDOW_BYTES, &detaching_ops, &close_all[i]),
				 0);
		close_all[i].s.open = true;
	}
	t.state = TUNNEL_CLOSING;
	stream_tunnel_closed(&t, "test");
	for (unsigned i = 0; i < TABLE_STREAMS; i++) {
		assert_null(close_all[i].s.tunnel);
		assert_true(close_all[i].reset <= 1);
		resets += close_all[i].reset;
	}
	assert_int_equal(resets + close_detached, TABLE_STREAMS);
	assert_true(close_detached > 0);
	assert_int_equal(t.streams.count, 0);
	stream_table_free(&t.streams);
	free(close_all);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_waking_one_detaches_the_next, setup, teardown),
		cmocka_unit_test_setup_teardown(test_requeue_self_then_detach_next, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_detach_a_requeued_waiter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_everyone_requeues, setup, teardown),
		cmocka_unit_test_setup_teardown(test_move_a_waiting_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_actions_keep_the_list_whole, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tunnel_closed_by_a_callback, setup, teardown),
		cmocka_unit_test(test_id_table),
		cmocka_unit_test(test_tunnel_closed_reaches_every_stream),
		cmocka_unit_test(test_window_grows_when_the_reader_keeps_up),
		cmocka_unit_test(test_window_stays_for_a_slow_reader),
		cmocka_unit_test(test_window_stays_when_credit_suffices),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
