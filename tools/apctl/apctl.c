/*
 * apctl — the operator's view of a running anyproxy-gateway. It sends one
 * request line to the gateway's control socket, reads the reply to EOF and
 * prints the table aligned, as key-value lines or as JSON (print.h). The
 * protocol, its commands and its codec live in anyproxy/table.h; the usage
 * page is docs/apctl.md.
 *
 * apctl is a short-lived command, not an event-loop program, so it uses
 * plain blocking calls; one deadline bounds the whole exchange so that a
 * stuck gateway cannot hang it.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "ap-build.h"
#include "anyproxy/common.h"
#include "anyproxy/table.h"
#include "apctl.h"
#include "print.h"

#define APCTL_SOCKET_ENV "APCTL_SOCKET"
/* The reply buffer's first size; it doubles up to TABLE_REPLY_MAX_BYTES. */
#define REPLY_INITIAL_BYTES 65536
#define ERR_BYTES 512

static void print_help(FILE *out)
{
	size_t width = 0, i;

	for (i = 0; i < ARRAY_SIZE(table_commands); i++) {
		const struct table_command *c = &table_commands[i];

		width = MAX(width, strlen(c->name) + (c->arg ? strlen(c->arg) + 1 : 0));
	}
	fprintf(out,
		"usage: apctl [-s SOCKET] [--json] COMMAND [ARG]\n"
		"       apctl [-s SOCKET] [--json] [-i SECONDS] [-n N] " APCTL_WATCH_COMMAND "\n"
		"       apctl --help | --version\n"
		"\n"
		"Inspect a running anyproxy-gateway, or drain its agents, through its\n"
		"control socket.\n"
		"\n"
		"commands:\n");
	for (i = 0; i < ARRAY_SIZE(table_commands); i++) {
		const struct table_command *c = &table_commands[i];
		int len = (int)strlen(c->name);

		if (c->arg)
			fprintf(out, "  %s %-*s  %s\n", c->name, (int)width - len - 1, c->arg,
				c->help);
		else
			fprintf(out, "  %-*s  %s\n", (int)width, c->name, c->help);
	}
	fprintf(out, "  %-*s  %s\n", (int)width, APCTL_WATCH_COMMAND, APCTL_WATCH_HELP);
	fprintf(out,
		"\n"
		"options:\n"
		"  -s, --socket PATH  the gateway's control socket (default: $" APCTL_SOCKET_ENV
		",\n"
		"                     else " TABLE_DEFAULT_SOCKET ")\n"
		"  -j, --json         print JSON instead of aligned text\n"
		"  -i, --interval S   watch: seconds between refreshes (default 1,\n"
		"                     0.1 to 3600)\n"
		"  -n, --count N      watch: stop after N refreshes (default: until\n"
		"                     Ctrl-C)\n"
		"  -h, --help         show this help\n"
		"  -V, --version      show apctl's version\n"
		"\n"
		"An ARG that starts with '-' goes after \"--\".\n"
		"\n"
		"exit status:\n"
		"  0  done\n"
		"  1  the gateway is unreachable, silent, sent a bad reply or\n"
		"     replied with an error (drain/undrain: an unknown client, or\n"
		"     permission denied)\n"
		"  2  usage error\n");
}

int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("apctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'apctl --help'.\n", stderr);
	return APCTL_EXIT_USAGE;
}

/*
 * Connects to the gateway. A Unix stream connect to a full backlog waits
 * for the socket's send timeout, so SO_SNDTIMEO bounds the connect as well
 * as the request's send. Returns the fd or -errno.
 */
static int gateway_connect(const char *path)
{
	struct timeval timeout = {
		.tv_sec = APCTL_TIMEOUT_MS / 1000,
		.tv_usec = (APCTL_TIMEOUT_MS % 1000) * 1000,
	};
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd, err;

	memcpy(addr.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) ||
	    connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		err = errno == EAGAIN ? ETIMEDOUT : errno;
		close(fd);
		return -err;
	}
	return fd;
}

static int send_request(int fd, const char *line, size_t len)
{
	while (len) {
		ssize_t n = send(fd, line, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		line += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Room for one more read; capacity stops one byte past the limit so that
 * an oversized reply shows itself. */
static int reply_grow(struct reply *r)
{
	size_t cap;
	char *buf;

	if (r->len < r->cap)
		return 0;
	if (r->cap > TABLE_REPLY_MAX_BYTES)
		return -EFBIG;
	cap = r->cap ? MIN(r->cap * 2, TABLE_REPLY_MAX_BYTES + 1) : REPLY_INITIAL_BYTES;
	buf = realloc(r->buf, cap);
	if (!buf)
		return -ENOMEM;
	r->buf = buf;
	r->cap = cap;
	return 0;
}

/*
 * Reads until EOF or the deadline (now_ms() clock). Returns 0, -ETIMEDOUT,
 * -EFBIG past TABLE_REPLY_MAX_BYTES, -ENOMEM or the read's -errno.
 */
static int read_reply(int fd, uint64_t deadline_ms, struct reply *r)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	for (;;) {
		uint64_t now = now_ms();
		ssize_t n;
		int ret;

		if (now >= deadline_ms)
			return -ETIMEDOUT;
		ret = poll(&pfd, 1, (int)(deadline_ms - now));
		if (ret == 0)
			return -ETIMEDOUT;
		if (ret < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		ret = reply_grow(r);
		if (ret)
			return ret;
		n = read(fd, r->buf + r->len, r->cap - r->len);
		if (n == 0)
			return r->len > TABLE_REPLY_MAX_BYTES ? -EFBIG : 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		r->len += (size_t)n;
	}
}

int apctl_exchange(const char *path, const char *request, struct reply *r)
{
	uint64_t deadline_ms = now_ms() + APCTL_TIMEOUT_MS;
	int fd, ret;

	fd = gateway_connect(path);
	if (fd < 0) {
		fprintf(stderr,
			"apctl: cannot reach the gateway at %s: %s "
			"(is anyproxy-gateway running? use -s)\n",
			path, strerror(-fd));
		return APCTL_EXIT_FAILED;
	}
	ret = send_request(fd, request, strlen(request));
	if (ret) {
		fprintf(stderr, "apctl: cannot send to the gateway at %s: %s\n", path,
			strerror(-ret));
		close(fd);
		return APCTL_EXIT_FAILED;
	}
	ret = read_reply(fd, deadline_ms, r);
	close(fd);
	if (ret == -ETIMEDOUT)
		fprintf(stderr, "apctl: no complete reply from the gateway at %s within %d ms\n",
			path, APCTL_TIMEOUT_MS);
	else if (ret == -EFBIG)
		fprintf(stderr,
			"apctl: the reply from the gateway at %s is larger "
			"than %zu MiB; giving up\n",
			path, TABLE_REPLY_MAX_BYTES >> 20);
	else if (ret)
		fprintf(stderr, "apctl: cannot read from the gateway at %s: %s\n", path,
			strerror(-ret));
	return ret ? APCTL_EXIT_FAILED : APCTL_EXIT_OK;
}

int apctl_parse_reply(const struct table_command *cmd, const struct reply *r, struct table *t)
{
	char err[ERR_BYTES];
	int ret;

	ret = table_parse(r->buf, r->len, t, err, sizeof(err));
	if (ret == -EREMOTEIO || ret == -EPROTO) {
		/* The gateway's own words: shown so they cannot drive the
		 * terminal. */
		fputs(ret == -EPROTO ? "apctl: bad reply from the gateway: " : "apctl: ", stderr);
		apctl_print_value(stderr, err);
		fputc('\n', stderr);
		return APCTL_EXIT_FAILED;
	}
	if (ret) {
		fprintf(stderr, "apctl: cannot read the reply: %s\n", strerror(-ret));
		return APCTL_EXIT_FAILED;
	}
	if (cmd->one_row && t->nrows != 1) {
		fprintf(stderr,
			"apctl: bad reply from the gateway: %zu rows for %s, "
			"expected 1\n",
			t->nrows, cmd->name);
		table_free(t);
		return APCTL_EXIT_FAILED;
	}
	return APCTL_EXIT_OK;
}

/* Parses and prints the reply; returns the exit code. */
static int show_reply(const struct table_command *cmd, const struct reply *r, bool json)
{
	struct table t;
	int ret = apctl_parse_reply(cmd, r, &t);

	if (ret != APCTL_EXIT_OK)
		return ret;
	if (json)
		apctl_print_json(stdout, &t, cmd->one_row);
	else if (cmd->one_row)
		apctl_print_kv(stdout, &t);
	else
		apctl_print_aligned(stdout, &t);
	table_free(&t);
	return APCTL_EXIT_OK;
}

int main(int argc, char **argv)
{
	static const struct option long_options[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "interval", required_argument, NULL, 'i' },
		{ "count", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const struct table_command *cmd;
	const char *path = NULL, *arg = NULL;
	char request[TABLE_REQUEST_MAX_BYTES];
	struct sockaddr_un addr_for_size;
	struct reply reply = { 0 };
	const char *interval = NULL, *count = NULL;
	bool json = false;
	int opt, nargs, ret;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":s:ji:n:hV", long_options, NULL)) != -1) {
		switch (opt) {
		case 's':
			if (!*optarg)
				return usage_error("-s needs a socket path");
			path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'i':
			interval = optarg;
			break;
		case 'n':
			count = optarg;
			break;
		case 'h':
			print_help(stdout);
			return APCTL_EXIT_OK;
		case 'V':
			printf("apctl %s\n", AP_VERSION);
			return APCTL_EXIT_OK;
		case ':':
			return usage_error("%s needs an argument", argv[optind - 1]);
		default:
			if (optopt)
				return usage_error("unknown option -%c", optopt);
			return usage_error("unknown option %s", argv[optind - 1]);
		}
	}
	if (optind == argc)
		return usage_error("no command given");
	if (!path)
		path = getenv(APCTL_SOCKET_ENV);
	if (!path || !*path)
		path = TABLE_DEFAULT_SOCKET;
	if (strlen(path) >= sizeof(addr_for_size.sun_path))
		return usage_error("socket path too long: %s", path);
	if (!strcmp(argv[optind], APCTL_WATCH_COMMAND)) {
		if (optind + 1 < argc)
			return usage_error("too many arguments for %s", APCTL_WATCH_COMMAND);
		return apctl_watch(path, json, interval, count);
	}
	if (interval || count)
		return usage_error("--interval and --count go with %s", APCTL_WATCH_COMMAND);
	cmd = table_command_find(argv[optind]);
	if (!cmd)
		return usage_error("unknown command '%s'", argv[optind]);
	nargs = argc - optind - 1;
	if (nargs < (cmd->arg ? 1 : 0))
		return usage_error("%s needs %s", cmd->name, cmd->arg);
	if (nargs > (cmd->arg ? 1 : 0))
		return usage_error("too many arguments for %s", cmd->name);
	if (cmd->arg) {
		arg = argv[optind + 1];
		if (!*arg)
			return usage_error("%s must not be empty", cmd->arg);
	}
	if (table_request_format(request, sizeof(request), cmd->name, arg) < 0)
		return usage_error("%s is too long", cmd->arg);

	ret = apctl_exchange(path, request, &reply);
	if (ret == APCTL_EXIT_OK)
		ret = show_reply(cmd, &reply, json);
	free(reply.buf);
	if (fflush(stdout) || ferror(stdout)) {
		fprintf(stderr, "apctl: cannot write the output: %s\n", strerror(errno));
		return APCTL_EXIT_FAILED;
	}
	return ret;
}
