/* Unit tests: the daemons' signal handling (cli_loop_init): SIGHUP reloads
 * between RELOADING=1 and READY=1, SIGTERM and SIGINT stop. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "anyproxy/cli.h"
#include "anyproxy/notify.h"
#include "anyproxy/ring.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signals_reach_the_daemon),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
