/* notify.c — service manager notifications over $NOTIFY_SOCKET (see notify.h). */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/notify.h"

int notify_parse_socket(const char *value, struct sockaddr_un *addr, socklen_t *len)
{
	size_t n;

	if (!value || (value[0] != '/' && value[0] != '@') || !value[1])
		return -EINVAL;
	n = strlen(value);
	/* a path needs its terminating NUL; an abstract name has none but
	 * takes its leading NUL in place of the '@' */
	if (n > sizeof(addr->sun_path) - (value[0] == '/'))
		return -ENAMETOOLONG;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	memcpy(addr->sun_path, value, n);
	if (value[0] == '@')
		addr->sun_path[0] = '\0';
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (value[0] == '/'));
	return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

int64_t notify_parse_watchdog(const char *usec, const char *pid, pid_t self)
{
	uint64_t us, p, ms;

	if (!usec || !*usec)
		return 0;
	if (parse_u64(usec, &us) < 0)
		return -EINVAL;
	if (pid && *pid) {
		if (parse_u64(pid, &p) < 0)
			return -EINVAL;
		if (p != (uint64_t)self)
			return 0; /* meant for another process (our parent) */
	}
	if (us == 0)
		return 0;
	ms = us / 2000; /* half the interval, in ms */
	return (int64_t)MIN(MAX(ms, (uint64_t)NOTIFY_WATCHDOG_MIN_MS), (uint64_t)INT64_MAX);
}

int notify_send(struct notify *n, const char *message)
{
	ssize_t ret;

	if (!n->active)
		return -ENOTCONN;
	ret = sendto(n->fd, message, strlen(message), MSG_DONTWAIT | MSG_NOSIGNAL,
		     (const struct sockaddr *)&n->addr, n->addr_len);
	if (ret < 0) {
		int err = -errno;

		if (n->failed++ == 0) /* once: the manager may well be gone for good */
			log_debug("Service manager notification failed",
				  LF_S("error", strerror(-err)));
		return err;
	}
	n->sent++;
	return 0;
}

/* message + "\nSTATUS=" + the current text, remembered as sent. */
static void send_with_status(struct notify *n, const char *message)
{
	char buf[64 + NOTIFY_STATUS_MAX];

	if (n->status_fn) {
		n->status_fn(n->status_arg, n->status, sizeof(n->status));
		snprintf(buf, sizeof(buf), "%s\nSTATUS=%s", message, n->status);
		notify_send(n, buf);
	} else {
		notify_send(n, message);
	}
}

static void watchdog_due(struct ring *r, struct timer *t)
{
	struct notify *n = container_of(t, struct notify, watchdog);

	notify_send(n, "WATCHDOG=1");
	timer_arm(r, t, n->watchdog_ms);
}

static void status_due(struct ring *r, struct timer *t)
{
	struct notify *n = container_of(t, struct notify, status_poll);
	char now[sizeof(n->status)], buf[sizeof("STATUS=") + NOTIFY_STATUS_MAX];

	if (!n->status_fn) /* taken away: stop polling */
		return;
	n->status_fn(n->status_arg, now, sizeof(now));
	if (strcmp(now, n->status) != 0) {
		memcpy(n->status, now, sizeof(now));
		snprintf(buf, sizeof(buf), "STATUS=%s", now);
		notify_send(n, buf);
	}
	timer_arm(r, t, NOTIFY_STATUS_POLL_MS);
}

int notify_init(struct notify *n, struct ring *r)
{
	const char *path = getenv("NOTIFY_SOCKET");
	int64_t wd;
	int ret;

	memset(n, 0, sizeof(*n));
	n->fd = -1;
	n->ring = r;
	timer_init(&n->watchdog, watchdog_due);
	timer_init(&n->status_poll, status_due);
	if (!path || !*path)
		return 0;
	ret = notify_parse_socket(path, &n->addr, &n->addr_len);
	if (ret < 0) {
		log_warn("NOTIFY_SOCKET is unusable; no service manager notifications",
			 LF_S("notify_socket", path), LF_S("error", strerror(-ret)));
		return ret;
	}
	n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (n->fd < 0) {
		ret = -errno;
		log_warn("Cannot open the service manager socket", LF_S("error", strerror(-ret)));
		return ret;
	}
	n->active = true;
	wd = notify_parse_watchdog(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), getpid());
	if (wd < 0)
		log_warn("WATCHDOG_USEC or WATCHDOG_PID is not a number; no watchdog pings",
			 LF_S("watchdog_usec", getenv("WATCHDOG_USEC")),
			 LF_S("watchdog_pid", getenv("WATCHDOG_PID")));
	else if (wd > 0)
		n->watchdog_ms = (uint64_t)wd;
	log_debug("Service manager notifications on", LF_S("notify_socket", path),
		  LF_U("watchdog_ping_ms", n->watchdog_ms));
	if (n->watchdog_ms) {
		notify_send(n, "WATCHDOG=1");
		timer_arm(r, &n->watchdog, n->watchdog_ms);
	}
	return 1;
}

void notify_exit(struct notify *n)
{
	if (!n->active)
		return;
	timer_disarm(n->ring, &n->watchdog);
	timer_disarm(n->ring, &n->status_poll);
	close(n->fd);
	n->fd = -1;
	n->active = false;
}

void notify_set_status(struct notify *n, notify_status_fn fn, void *arg)
{
	n->status_fn = fn;
	n->status_arg = arg;
	if (n->active && fn && !timer_armed(&n->status_poll))
		timer_arm(n->ring, &n->status_poll, NOTIFY_STATUS_POLL_MS);
}

void notify_ready(struct notify *n)
{
	if (n->ready)
		return;
	n->ready = true;
	send_with_status(n, "READY=1");
}

void notify_reloading(struct notify *n)
{
	struct timespec ts;
	char buf[64];

	if (!n->ready)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
		 (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000);
	notify_send(n, buf);
}

void notify_reloaded(struct notify *n)
{
	if (n->ready)
		send_with_status(n, "READY=1");
}

void notify_stopping(struct notify *n)
{
	send_with_status(n, "STOPPING=1");
}
