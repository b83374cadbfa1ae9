/*
 * notify.h — telling a service manager (systemd, Type=notify) how the
 * daemon is doing, without libsystemd.
 *
 * The protocol is one datagram per message to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or '@' for the abstract namespace), holding
 * newline-separated KEY=VALUE lines: READY=1, RELOADING=1 (with
 * MONOTONIC_USEC=, which systemd 253 and later want for Type=notify-reload;
 * Type=notify ignores it), STOPPING=1, STATUS=text, WATCHDOG=1.
 *
 * Every send is non-blocking and its failure is ignored (counted): a
 * service manager that is gone or slow never stalls the loop. Without
 * $NOTIFY_SOCKET every call is a no-op, so the daemons call these
 * unconditionally.
 *
 * The watchdog ($WATCHDOG_USEC, for this process when $WATCHDOG_PID is
 * unset or names it) pings from a ring timer at half the interval: from
 * the loop itself, so a loop that is stuck stops pinging and the manager
 * restarts the daemon. The status line is polled from the program every
 * NOTIFY_STATUS_POLL_MS and sent only when its text changed, so a busy
 * daemon sends at most one STATUS= per poll.
 */
#ifndef ANYPROXY_NOTIFY_H
#define ANYPROXY_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "anyproxy/ring.h"

/* How often the program's status text is read (and sent if it changed). */
#define NOTIFY_STATUS_POLL_MS 1000
/* Longest STATUS= text, without the key; a longer one is cut at a UTF-8
 * boundary by the program's formatter (it writes into this many bytes). */
#define NOTIFY_STATUS_MAX 200
/* Shortest watchdog ping interval: a WATCHDOG_USEC below twice this pings
 * this often rather than spinning. */
#define NOTIFY_WATCHDOG_MIN_MS 1

/* Writes the current status text (NUL-terminated, at most len - 1 bytes). */
typedef void (*notify_status_fn)(void *arg, char *buf, size_t len);

struct notify {
	bool active; /* $NOTIFY_SOCKET was usable: fd and addr are set */
	bool ready;  /* READY=1 was sent once: reloads may be announced */
	int fd;
	struct sockaddr_un addr;
	socklen_t addr_len;
	struct ring *ring;
	uint64_t watchdog_ms; /* ping period (half of WATCHDOG_USEC); 0: none */
	struct timer watchdog;
	struct timer status_poll;
	notify_status_fn status_fn;
	void *status_arg;
	char status[NOTIFY_STATUS_MAX + 1]; /* the last text sent */
	uint64_t sent, failed;              /* datagrams, for tests and debugging */
};

/*
 * Pure helpers (unit-tested). notify_parse_socket: $NOTIFY_SOCKET's value
 * into an address: an absolute path, or '@name' for the abstract
 * namespace. 0, or -EINVAL (empty, relative) / -ENAMETOOLONG.
 * notify_parse_watchdog: $WATCHDOG_USEC and $WATCHDOG_PID (either may be
 * NULL) into the ping period in ms for process self: 0 when there is no
 * watchdog for it, or -EINVAL when a value is not a number.
 */
int notify_parse_socket(const char *value, struct sockaddr_un *addr, socklen_t *len);
int64_t notify_parse_watchdog(const char *usec, const char *pid, pid_t self);

/*
 * Read the environment and, under a service manager, open the socket and
 * start the watchdog on ring r. 1 when active, 0 when there is no
 * $NOTIFY_SOCKET, -errno when it is set but unusable (logged; the daemon
 * goes on without). n needs no preparation; notify_exit is safe on any
 * struct notify that was zeroed or passed through here.
 */
int notify_init(struct notify *n, struct ring *r);
void notify_exit(struct notify *n);

/* Send one message (KEY=VALUE lines) now. 0, or -errno (ignored by every
 * caller below; -ENOTCONN when not active). */
int notify_send(struct notify *n, const char *message);

/* READY=1 with the current status, once; later calls do nothing. */
void notify_ready(struct notify *n);
/* RELOADING=1 + MONOTONIC_USEC= before a reload, READY=1 after it (with the
 * status), whatever its outcome. Nothing before the first notify_ready. */
void notify_reloading(struct notify *n);
void notify_reloaded(struct notify *n);
/* STOPPING=1: the daemon drains and will exit. */
void notify_stopping(struct notify *n);

/* Where the status text comes from; polled while active (fn NULL stops
 * the polling). */
void notify_set_status(struct notify *n, notify_status_fn fn, void *arg);

#endif
