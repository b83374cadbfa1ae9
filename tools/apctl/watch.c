/*
 * watch.c — apctl watch: ask the gateway for its groups and clients every
 * --interval seconds and redraw them, until Ctrl-C or --count refreshes.
 *
 * It is a client like any other apctl run: one short connection per table
 * per refresh, the same deadline, nothing held open between refreshes, so
 * it never holds up the gateway. On a terminal each refresh clears the
 * screen first (two ANSI sequences; no terminal mode is changed, so an
 * interrupted watch leaves the terminal as it was); into a pipe or a file
 * the frames follow one another. With --json each refresh is one JSON
 * document on one line: {"time":...,"groups":[...],"clients":[...]}.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "apctl.h"
#include "print.h"

#define WATCH_DEFAULT_INTERVAL_MS 1000
#define WATCH_MIN_INTERVAL_MS 100
#define WATCH_MAX_INTERVAL_MS 3600000
#define WATCH_MAX_COUNT 1000000000u
/* Digits after the decimal point in --interval: milliseconds. */
#define WATCH_INTERVAL_FRACTION_DIGITS 3
/* Cursor home, then erase the whole screen. */
#define WATCH_CLEAR_SCREEN "\033[H\033[2J"

static volatile sig_atomic_t watch_stop;

static void on_stop_signal(int sig)
{
	(void)sig;
	watch_stop = 1;
}

/*
 * "SECONDS[.FRACTION]" with at most WATCH_INTERVAL_FRACTION_DIGITS after
 * the point, into milliseconds within the limits. -EINVAL otherwise (a
 * value is never rounded).
 */
static int parse_interval_ms(const char *s, uint32_t *out)
{
	uint64_t ms = 0;
	unsigned fraction = 0;
	bool point = false, digit = false;

	for (; *s; s++) {
		if (*s == '.' && !point) {
			point = true;
			continue;
		}
		if (*s < '0' || *s > '9')
			return -EINVAL;
		digit = true;
		if (point && ++fraction > WATCH_INTERVAL_FRACTION_DIGITS)
			return -EINVAL;
		ms = ms * 10 + (uint64_t)(*s - '0');
		if (ms > (uint64_t)WATCH_MAX_INTERVAL_MS * 1000)
			return -EINVAL;
	}
	for (; fraction < WATCH_INTERVAL_FRACTION_DIGITS; fraction++)
		ms *= 10;
	if (!digit || ms < WATCH_MIN_INTERVAL_MS || ms > WATCH_MAX_INTERVAL_MS)
		return -EINVAL;
	*out = (uint32_t)ms;
	return 0;
}

static int parse_count(const char *s, uint32_t *out)
{
	uint64_t n = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		n = n * 10 + (uint64_t)(*s - '0');
		if (n > WATCH_MAX_COUNT)
			return -EINVAL;
	}
	if (n == 0)
		return -EINVAL;
	*out = (uint32_t)n;
	return 0;
}

/* Asks one table of the gateway; APCTL_EXIT_OK fills t. */
static int fetch(const char *path, enum table_command_id id, struct table *t)
{
	const struct table_command *cmd = &table_commands[id];
	char request[TABLE_REQUEST_MAX_BYTES];
	struct reply reply = { 0 };
	int ret;

	if (table_request_format(request, sizeof(request), cmd->name, NULL) < 0)
		return APCTL_EXIT_FAILED;
	ret = apctl_exchange(path, request, &reply);
	if (ret == APCTL_EXIT_OK)
		ret = apctl_parse_reply(cmd, &reply, t);
	free(reply.buf);
	return ret;
}

/* One refresh: both tables, then the frame. Returns the exit code of the
 * refresh (a failure is also shown in the frame). */
static int refresh(const char *path, bool json, bool tty, bool first, uint32_t interval_ms)
{
	struct table groups, clients;
	char now[32];
	struct tm tm;
	time_t t = time(NULL);
	int ret;

	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
	ret = fetch(path, TABLE_CMD_GROUPS, &groups);
	if (ret == APCTL_EXIT_OK) {
		ret = fetch(path, TABLE_CMD_CLIENTS, &clients);
		if (ret != APCTL_EXIT_OK)
			table_free(&groups);
	}
	if (json) {
		printf("{\"time\":\"%s\"", now);
		if (ret == APCTL_EXIT_OK) {
			fputs(",\"groups\":", stdout);
			apctl_print_json_line(stdout, &groups);
			fputs(",\"clients\":", stdout);
			apctl_print_json_line(stdout, &clients);
		} else {
			fputs(",\"error\":\"no reply from the gateway (see stderr)\"", stdout);
		}
		fputs("}\n", stdout);
	} else {
		if (tty)
			fputs(WATCH_CLEAR_SCREEN, stdout);
		else if (!first)
			putchar('\n');
		printf("apctl watch  %s  %s  every %u.%03u s\n\n", path, now, interval_ms / 1000,
		       interval_ms % 1000);
		if (ret == APCTL_EXIT_OK) {
			apctl_print_aligned(stdout, &groups);
			putchar('\n');
			apctl_print_aligned(stdout, &clients);
		} else {
			fputs("(no reply from the gateway)\n", stdout);
		}
	}
	if (ret == APCTL_EXIT_OK) {
		table_free(&groups);
		table_free(&clients);
	}
	return ret;
}

/* Sleeps ms unless a stop signal comes first. */
static void wait_ms(uint32_t ms)
{
	uint64_t end = now_ms() + ms;

	while (!watch_stop) {
		uint64_t now = now_ms();

		if (now >= end)
			return;
		poll(NULL, 0, (int)MIN(end - now, (uint64_t)INT32_MAX));
	}
}

int apctl_watch(const char *path, bool json, const char *interval, const char *count)
{
	uint32_t interval_ms = WATCH_DEFAULT_INTERVAL_MS, limit = 0, done;
	struct sigaction sa = { .sa_handler = on_stop_signal };
	bool tty = isatty(STDOUT_FILENO);
	int ret = APCTL_EXIT_OK;

	if (interval && parse_interval_ms(interval, &interval_ms) < 0)
		return usage_error("bad --interval '%s': seconds from 0.1 to 3600, at most "
				   "3 decimals",
				   interval);
	if (count && parse_count(count, &limit) < 0)
		return usage_error("bad --count '%s': a whole number from 1 to %u", count,
				   WATCH_MAX_COUNT);
	/* no SA_RESTART: Ctrl-C cuts the wait short */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	for (done = 0; !watch_stop && (!limit || done < limit); done++) {
		if (done)
			wait_ms(interval_ms);
		if (watch_stop)
			break;
		if (refresh(path, json, tty, done == 0, interval_ms) != APCTL_EXIT_OK)
			ret = APCTL_EXIT_FAILED;
		if (fflush(stdout) || ferror(stdout)) {
			fprintf(stderr, "apctl: cannot write the output: %s\n", strerror(errno));
			return APCTL_EXIT_FAILED;
		}
	}
	return ret;
}
