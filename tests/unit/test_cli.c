/* Unit tests: the daemons' signal handling (cli_loop_init): SIGHUP reloads
 * between RELOADING=1 and READY=1, SIGTERM and SIGINT stop; their worker
 * threads (cli_workers_start). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "anyproxy/cli.h"
#include "anyproxy/common.h"
#include "anyproxy/notify.h"
#include "anyproxy/ring.h"
#include "anyproxy/workgroup.h"

struct daemon_probe {
	struct ring ring;
	int manager;      /* the service manager's end of the notify socket */
	int reloads;      /* reload calls */
	int stop_signo;   /* the signal stop was called with; 0: not called */
	char before[512]; /* what the manager had heard when reload ran */
};

/* The next datagram the manager holds, or "" when none is waiting. */
static void next_message(int fd, char *buf, size_t size)
{
	ssize_t n = recv(fd, buf, size - 1, MSG_DONTWAIT);

	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		n = 0;
	}
	buf[n] = '\0';
}

static void probe_reload(void *owner)
{
	struct daemon_probe *p = owner;

	p->reloads++;
	next_message(p->manager, p->before, sizeof(p->before));
	ring_stop(&p->ring);
}

static void probe_stop(void *owner, int signo)
{
	struct daemon_probe *p = owner;

	p->stop_signo = signo;
	ring_stop(&p->ring);
}

static void test_signals_reach_the_daemon(void **state)
{
	struct daemon_probe p = { .reloads = 0 };
	/* a manager that heard READY=1 already (reloads are announced only
	 * then), reached over a connected pair instead of $NOTIFY_SOCKET */
	struct notify n = { .active = true, .ready = true };
	int sv[2];
	char after[512];

	assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
	n.fd = sv[0];
	p.manager = sv[1];
	assert_int_equal(cli_loop_init(&p.ring, 64,
				       &(struct cli_daemon){ .owner = &p,
							     .notify = &n,
							     .reload = probe_reload,
							     .stop = probe_stop }),
			 0);

	/* SIGHUP: the reload, announced before and after */
	assert_int_equal(kill(getpid(), SIGHUP), 0);
	assert_int_equal(ring_run(&p.ring), 0);
	assert_int_equal(p.reloads, 1);
	assert_int_equal(p.stop_signo, 0);
	assert_int_equal(strncmp(p.before, "RELOADING=1\nMONOTONIC_USEC=", 27), 0);
	next_message(p.manager, after, sizeof(after));
	assert_string_equal(after, "READY=1");

	/* SIGTERM and SIGINT: stop, with the signal, and nothing announced
	 * (each run ends with ring_stop: the flag is cleared to run again) */
	p.ring.stop = false;
	assert_int_equal(kill(getpid(), SIGTERM), 0);
	assert_int_equal(ring_run(&p.ring), 0);
	assert_int_equal(p.stop_signo, SIGTERM);
	p.ring.stop = false;
	assert_int_equal(kill(getpid(), SIGINT), 0);
	assert_int_equal(ring_run(&p.ring), 0);
	assert_int_equal(p.stop_signo, SIGINT);
	assert_int_equal(p.reloads, 1);
	next_message(p.manager, after, sizeof(after));
	assert_string_equal(after, "");

	ring_exit(&p.ring);
	close(sv[0]);
	close(sv[1]);
}

/* ---- worker threads (cli_workers_start) ---- */

#define TEST_WORKERS 3

struct test_worker {
	struct wg_member wg;
	struct ring ring;
	bool ring_made;
	int setups, starts, teardowns;
};

static int failing_worker; /* its setup fails; 0: none does */

static int worker_setup(struct wg_member *m)
{
	struct test_worker *w = container_of(m, struct test_worker, wg);

	w->ring_made = true; /* setup runs only once the ring exists */
	w->setups++;
	return (int)m->index == failing_worker ? -EIO : 0;
}

static void worker_start(struct wg_member *m)
{
	struct test_worker *w = container_of(m, struct test_worker, wg);

	w->starts++;
	ring_stop(m->ring); /* the loop runs once and ends */
}

static void worker_teardown(struct wg_member *m)
{
	struct test_worker *w = container_of(m, struct test_worker, wg);

	w->teardowns++;
	if (w->ring_made)
		ring_exit(&w->ring);
}

static const struct cli_worker_ops test_worker_ops = {
	.ring_entries = 8,
	.setup = worker_setup,
	.start = worker_start,
	.teardown = worker_teardown,
};

/* Workers 1.. set up on their ring, run only when every one is ready, and
 * always tear down; worker 0 (this thread) runs none of it. */
static void run_workers(int fail, int want_start)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct test_worker w[TEST_WORKERS] = { 0 };
	struct workgroup wg;
	unsigned i;
	int ret;

	failing_worker = fail;
	assert_int_equal(wg_init(&wg, &lock, TEST_WORKERS), 0);
	for (i = 0; i < TEST_WORKERS; i++)
		wg_set(&wg, i, &w[i].wg, &w[i].ring);
	ret = cli_workers_start(&wg, &test_worker_ops);
	assert_int_equal(ret, fail ? -EIO : 0);
	wg_join(&wg);
	wg_destroy(&wg);
	assert_int_equal(w[0].setups + w[0].starts + w[0].teardowns, 0);
	for (i = 1; i < TEST_WORKERS; i++) {
		assert_int_equal(w[i].setups, 1);
		assert_int_equal(w[i].starts, want_start);
		assert_int_equal(w[i].teardowns, 1);
	}
}

static void test_workers_run_their_steps(void **state)
{
	run_workers(0, 1);
}

static void test_failed_setup_starts_no_worker(void **state)
{
	run_workers(2, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signals_reach_the_daemon),
		cmocka_unit_test(test_workers_run_their_steps),
		cmocka_unit_test(test_failed_setup_starts_no_worker),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
