/* Unit tests: service manager notifications (notify.c) against a socket
 * the test owns, as systemd would hold it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "anyproxy/common.h"
#include "anyproxy/notify.h"
#include "anyproxy/ring.h"

/* ---- the pure parsers ---- */

static void test_parse_socket(void **state)
{
	struct sockaddr_un a;
	socklen_t len;
	char longest[sizeof(a.sun_path) + 2];

	assert_int_equal(notify_parse_socket("/run/systemd/notify", &a, &len), 0);
	assert_int_equal(a.sun_family, AF_UNIX);
	assert_string_equal(a.sun_path, "/run/systemd/notify");
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) +
				      strlen("/run/systemd/notify") + 1);

	/* abstract: a leading NUL, no terminating one */
	assert_int_equal(notify_parse_socket("@sd-notify", &a, &len), 0);
	assert_int_equal(a.sun_path[0], '\0');
	assert_memory_equal(a.sun_path + 1, "sd-notify", 9);
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 10);

	assert_int_equal(notify_parse_socket("", &a, &len), -EINVAL);
	assert_int_equal(notify_parse_socket("@", &a, &len), -EINVAL);
	assert_int_equal(notify_parse_socket("/", &a, &len), -EINVAL);
	assert_int_equal(notify_parse_socket("relative/notify", &a, &len), -EINVAL);
	assert_int_equal(notify_parse_socket(NULL, &a, &len), -EINVAL);

	/* a path fills sun_path with its NUL; an abstract name without one */
	memset(longest, 'x', sizeof(longest));
	longest[0] = '/';
	longest[sizeof(a.sun_path) - 1] = '\0';
	assert_int_equal(notify_parse_socket(longest, &a, &len), 0);
	longest[sizeof(a.sun_path) - 1] = 'x';
	longest[sizeof(a.sun_path)] = '\0';
	assert_int_equal(notify_parse_socket(longest, &a, &len), -ENAMETOOLONG);
	longest[0] = '@';
	assert_int_equal(notify_parse_socket(longest, &a, &len), 0);
	assert_int_equal(len, sizeof(a));
	longest[sizeof(a.sun_path)] = 'x';
	longest[sizeof(a.sun_path) + 1] = '\0';
	assert_int_equal(notify_parse_socket(longest, &a, &len), -ENAMETOOLONG);
}

static void test_parse_watchdog(void **state)
{
	assert_int_equal(notify_parse_watchdog(NULL, NULL, 42), 0);
	assert_int_equal(notify_parse_watchdog("", NULL, 42), 0);
	assert_int_equal(notify_parse_watchdog("30000000", NULL, 42), 15000);
	assert_int_equal(notify_parse_watchdog("30000000", "42", 42), 15000);
	assert_int_equal(notify_parse_watchdog("30000000", "", 42), 15000);
	/* meant for another process: no watchdog here */
	assert_int_equal(notify_parse_watchdog("30000000", "41", 42), 0);
	assert_int_equal(notify_parse_watchdog("0", NULL, 42), 0);
	/* below a millisecond per ping: the floor */
	assert_int_equal(notify_parse_watchdog("1000", NULL, 42), NOTIFY_WATCHDOG_MIN_MS);
	assert_int_equal(notify_parse_watchdog("12x", NULL, 42), -EINVAL);
	assert_int_equal(notify_parse_watchdog("-5", NULL, 42), -EINVAL);
	assert_int_equal(notify_parse_watchdog("30000000", "pid", 42), -EINVAL);
	assert_int_equal(notify_parse_watchdog("99999999999999999999999", NULL, 42), -EINVAL);
}

/* ---- against a socket the test owns ---- */

/* A datagram socket bound to an abstract name (nothing to clean up);
 * NOTIFY_SOCKET names it. */
static int manager_socket(const char *tag)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char name[80];
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(name, sizeof(name), "@anyproxy-test-notify-%d-%s", (int)getpid(), tag);
	memcpy(a.sun_path + 1, name + 1, strlen(name) - 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&a,
			      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name))),
			 0);
	setenv("NOTIFY_SOCKET", name, 1);
	return fd;
}

/* The next datagram as a string, or "" when none is waiting. */
static const char *next_message(int fd)
{
	static char buf[512];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		n = 0;
	}
	buf[n] = '\0';
	return buf;
}

static const char *status_text = "tunnels 0/1";

static void status_now(void *arg, char *buf, size_t len)
{
	int *calls = arg;

	(*calls)++;
	snprintf(buf, len, "%s", status_text);
}

static void stop_ring(struct ring *r, struct timer *t)
{
	ring_stop(r);
}

static void test_inactive_without_env(void **state)
{
	struct notify n;
	struct ring r;

	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(ring_init(&r, 16), 0);
	assert_int_equal(notify_init(&n, &r), 0);
	assert_false(n.active);
	assert_int_equal(notify_send(&n, "READY=1"), -ENOTCONN);
	notify_ready(&n);
	notify_stopping(&n);
	assert_int_equal(n.sent + n.failed, 0);
	notify_exit(&n);
	ring_exit(&r);

	setenv("NOTIFY_SOCKET", "not/absolute", 1);
	assert_int_equal(ring_init(&r, 16), 0);
	assert_int_equal(notify_init(&n, &r), -EINVAL);
	assert_false(n.active);
	notify_exit(&n);
	ring_exit(&r);
	unsetenv("NOTIFY_SOCKET");
}

static void test_lifecycle_messages(void **state)
{
	int fd = manager_socket("life");
	unsigned long long usec;
	struct notify n;
	struct ring r;
	int calls = 0;
	const char *m;

	unsetenv("WATCHDOG_USEC");
	assert_int_equal(ring_init(&r, 16), 0);
	assert_int_equal(notify_init(&n, &r), 1);
	notify_set_status(&n, status_now, &calls);

	/* nothing to announce before the daemon is ready */
	notify_reloading(&n);
	notify_reloaded(&n);
	assert_string_equal(next_message(fd), "");

	notify_ready(&n);
	assert_string_equal(next_message(fd), "READY=1\nSTATUS=tunnels 0/1");
	notify_ready(&n); /* once */
	assert_string_equal(next_message(fd), "");

	notify_reloading(&n);
	m = next_message(fd);
	assert_int_equal(strncmp(m, "RELOADING=1\nMONOTONIC_USEC=", 27), 0);
	assert_int_equal(sscanf(m + 27, "%llu", &usec), 1);
	assert_true(usec > 0);
	status_text = "tunnels 1/1";
	notify_reloaded(&n);
	assert_string_equal(next_message(fd), "READY=1\nSTATUS=tunnels 1/1");

	notify_stopping(&n);
	assert_string_equal(next_message(fd), "STOPPING=1\nSTATUS=tunnels 1/1");
	assert_int_equal(n.sent, 4);
	assert_int_equal(n.failed, 0);

	notify_exit(&n);
	notify_exit(&n); /* idempotent */
	ring_exit(&r);
	close(fd);
	unsetenv("NOTIFY_SOCKET");
	status_text = "tunnels 0/1";
}

/* STATUS= goes out from the poll when, and only when, the text changed. */
static void test_status_sent_on_change(void **state)
{
	int fd = manager_socket("status");
	struct timer stop;
	struct notify n;
	struct ring r;
	int calls = 0;

	unsetenv("WATCHDOG_USEC");
	assert_int_equal(ring_init(&r, 16), 0);
	assert_int_equal(notify_init(&n, &r), 1);
	notify_set_status(&n, status_now, &calls);
	notify_ready(&n);
	assert_string_equal(next_message(fd), "READY=1\nSTATUS=tunnels 0/1");

	timer_init(&stop, stop_ring);
	timer_arm(&r, &stop, NOTIFY_STATUS_POLL_MS + NOTIFY_STATUS_POLL_MS / 2);
	assert_int_equal(ring_run(&r), 0);
	assert_true(calls >= 2);                   /* it was polled ... */
	assert_string_equal(next_message(fd), ""); /* ... and had nothing new */

	status_text = "tunnels 1/1";
	r.stop = false;
	timer_arm(&r, &stop, NOTIFY_STATUS_POLL_MS + NOTIFY_STATUS_POLL_MS / 2);
	assert_int_equal(ring_run(&r), 0);
	assert_string_equal(next_message(fd), "STATUS=tunnels 1/1");
	assert_string_equal(next_message(fd), "");

	notify_exit(&n);
	ring_exit(&r);
	close(fd);
	unsetenv("NOTIFY_SOCKET");
	status_text = "tunnels 0/1";
}

struct watch {
	struct timer check;
	struct notify *n;
};

static void check_pings(struct ring *r, struct timer *t)
{
	struct watch *w = container_of(t, struct watch, check);

	if (w->n->sent >= 4)
		ring_stop(r);
	else
		timer_arm(r, t, 5);
}

/* WATCHDOG_USEC set: WATCHDOG=1 at once, then from the loop's timer. */
static void test_watchdog_pings_from_the_loop(void **state)
{
	int fd = manager_socket("watchdog");
	struct timer stop;
	struct watch w;
	struct notify n;
	struct ring r;
	char pid[32];
	int pings = 0;

	setenv("WATCHDOG_USEC", "20000", 1); /* a ping every 10 ms */
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	assert_int_equal(ring_init(&r, 16), 0);
	assert_int_equal(notify_init(&n, &r), 1);
	assert_int_equal(n.watchdog_ms, 10);
	w.n = &n;
	timer_init(&w.check, check_pings);
	timer_arm(&r, &w.check, 5);
	timer_init(&stop, stop_ring); /* a bound, not a measurement */
	timer_arm(&r, &stop, 10000);
	assert_int_equal(ring_run(&r), 0);
	assert_true(n.sent >= 4);
	while (strcmp(next_message(fd), "WATCHDOG=1") == 0)
		pings++;
	assert_int_equal(pings, n.sent);
	notify_exit(&n);
	ring_exit(&r);

	/* for another process: no pings from this one */
	setenv("WATCHDOG_PID", "1", 1);
	assert_int_equal(ring_init(&r, 16), 0);
	assert_int_equal(notify_init(&n, &r), 1);
	assert_int_equal(n.watchdog_ms, 0);
	assert_false(timer_armed(&n.watchdog));
	assert_string_equal(next_message(fd), "");
	notify_exit(&n);
	ring_exit(&r);
	close(fd);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	unsetenv("NOTIFY_SOCKET");
}

/* A manager that is gone or does not read never blocks the sender. */
static void test_failed_sends_do_not_block(void **state)
{
	int fd = manager_socket("full");
	int size = 4096, i, again = 0;
	struct notify n;
	struct ring r;

	unsetenv("WATCHDOG_USEC");
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)), 0);
	assert_int_equal(ring_init(&r, 16), 0);
	assert_int_equal(notify_init(&n, &r), 1);
	/* the manager never reads: its queue fills and sends fail at once */
	for (i = 0; i < 100000 && !again; i++)
		again = notify_send(&n, "STATUS=filling the queue") == -EAGAIN;
	assert_true(again);
	assert_true(n.failed >= 1);
	notify_exit(&n);
	ring_exit(&r);
	close(fd);

	setenv("NOTIFY_SOCKET", "/nonexistent-anyproxy-dir/notify", 1);
	assert_int_equal(ring_init(&r, 16), 0);
	assert_int_equal(notify_init(&n, &r), 1);
	assert_int_equal(notify_send(&n, "READY=1"), -ENOENT);
	notify_ready(&n); /* ignored failure */
	assert_int_equal(n.failed, 2);
	assert_int_equal(n.sent, 0);
	notify_exit(&n);
	ring_exit(&r);
	unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_socket),
		cmocka_unit_test(test_parse_watchdog),
		cmocka_unit_test(test_inactive_without_env),
		cmocka_unit_test(test_lifecycle_messages),
		cmocka_unit_test(test_status_sent_on_change),
		cmocka_unit_test(test_watchdog_pings_from_the_loop),
		cmocka_unit_test(test_failed_sends_do_not_block),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
