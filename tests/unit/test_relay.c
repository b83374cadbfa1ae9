/* Unit tests: a relay in owner mode writing to a real socket (one end of a
 * SOCK_SEQPACKET pair, where every send is one message the other end can
 * count). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "anyproxy/common.h"
#include "anyproxy/relay.h"
#include "anyproxy/ring.h"

struct fixture {
	struct ring ring;
	struct relay relay;
	struct timer stop;
	int peer;
	bool closed;
};

static void on_socket_data(struct relay *r, const uint8_t *p, size_t n)
{
}

static void on_closed(struct relay *r, const char *why)
{
	struct fixture *f = container_of(r, struct fixture, relay);

	f->closed = true;
}

static const struct relay_ops ops = { .on_socket_data = on_socket_data, .on_closed = on_closed };

static void stop_fire(struct ring *r, struct timer *t)
{
	ring_stop(r);
}

/* Run the loop long enough for the sends and closes queued to complete. */
static void run_a_while(struct fixture *f)
{
	f->ring.stop = false; /* ring_stop ends a run for good */
	timer_arm(&f->ring, &f->stop, 50);
	assert_int_equal(ring_run(&f->ring), 0);
}

static int setup(void **state)
{
	static struct fixture f;
	int sv[2];

	memset(&f, 0, sizeof(f));
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(ring_init(&f.ring, 64), 0);
	relay_init(&f.relay, &f.ring, NULL, sv[0], &ops);
	timer_init(&f.stop, stop_fire);
	f.peer = sv[1];
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	relay_close(&f->relay, "test over");
	run_a_while(f);
	assert_true(f->closed);
	close(f->peer); /* the relay closed its end */
	ring_exit(&f->ring);
	return 0;
}

/* The next message the peer received, NUL-terminated; "" when none. */
static const char *next_message(struct fixture *f)
{
	static char msg[64];
	ssize_t n = recv(f->peer, msg, sizeof(msg) - 1, MSG_DONTWAIT);

	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		n = 0;
	}
	msg[n] = '\0';
	return msg;
}

static void test_uncorked_writes_leave_as_they_come(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(relay_write(&f->relay, "head|", 5, 0), 0);
	assert_int_equal(relay_write(&f->relay, "body", 4, 0), 0);
	run_a_while(f);
	/* the first write went out alone; the second waited for it */
	assert_string_equal(next_message(f), "head|");
	assert_string_equal(next_message(f), "body");
	assert_string_equal(next_message(f), "");
}

static void test_corked_writes_leave_in_one_send(void **state)
{
	struct fixture *f = *state;

	relay_cork(&f->relay);
	assert_int_equal(relay_write(&f->relay, "head|", 5, 0), 0);
	assert_int_equal(relay_write(&f->relay, "body", 4, 0), 0);
	run_a_while(f);
	assert_string_equal(next_message(f), ""); /* held while corked */
	relay_uncork(&f->relay);
	run_a_while(f);
	assert_string_equal(next_message(f), "head|body");
	assert_string_equal(next_message(f), "");
	/* uncorked again: a write goes out by itself */
	assert_int_equal(relay_write(&f->relay, "next", 4, 0), 0);
	run_a_while(f);
	assert_string_equal(next_message(f), "next");
}

static void test_uncork_with_nothing_queued_sends_nothing(void **state)
{
	struct fixture *f = *state;

	relay_cork(&f->relay);
	relay_uncork(&f->relay);
	run_a_while(f);
	assert_string_equal(next_message(f), "");
	assert_false(f->relay.send_armed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_uncorked_writes_leave_as_they_come, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_corked_writes_leave_in_one_send, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_uncork_with_nothing_queued_sends_nothing,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
