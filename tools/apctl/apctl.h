/*
 * apctl.h — what apctl's main (apctl.c) shares with its watch command
 * (watch.c): one request/reply exchange with the gateway and the reply's
 * parsing. Both print their own errors to stderr and return an exit code.
 */
#ifndef ANYPROXY_APCTL_H
#define ANYPROXY_APCTL_H

#include <stdbool.h>
#include <stddef.h>

#include "anyproxy/table.h"

/* Connect, send and the whole reply must finish within this time. */
#define APCTL_TIMEOUT_MS 5000

/* apctl's own command (not in table_commands: it asks the gateway
 * "groups" and "clients" again and again). */
#define APCTL_WATCH_COMMAND "watch"
#define APCTL_WATCH_HELP "refresh groups and clients every --interval seconds"

enum apctl_exit {
	APCTL_EXIT_OK = 0,
	APCTL_EXIT_FAILED = 1, /* no gateway, a bad reply, or an ERR reply */
	APCTL_EXIT_USAGE = 2,
};

/* A reply read to EOF; the caller frees buf. */
struct reply {
	char *buf;
	size_t len;
	size_t cap;
};

/* Runs one request line against the gateway and fills r (empty on entry). */
int apctl_exchange(const char *path, const char *request, struct reply *r);

/* Parses r as cmd's reply into t (release with table_free() after
 * APCTL_EXIT_OK). */
int apctl_parse_reply(const struct table_command *cmd, const struct reply *r, struct table *t);

/* Prints "apctl: MESSAGE" and the --help hint; returns APCTL_EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* apctl watch: interval and count are the options' text (NULL: absent). */
int apctl_watch(const char *path, bool json, const char *interval, const char *count);

#endif
