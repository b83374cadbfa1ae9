/*
 * test_log.c — log escaping (the part that keeps user-controlled bytes from
 * forging lines or fields), level names, whole lines as written to a file
 * sink in both formats, and the loop thread's batching: lines wait for the
 * flush, keep their order, overflow drops and counts them, and nothing
 * queued is lost at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "anyproxy/config.h"
#include "anyproxy/log.h"

#define LINE_MAX_BYTES 4096 /* log.c's LOG_LINE_MAX_BYTES */
#define READ_BYTES 65536
#define BATCH_BYTES (256 * 1024) /* log.c's LOG_BATCH_BYTES */
/* A value that makes a line of about 1 KiB. */
#define BULK_VALUE_BYTES 1000

static char sink_path[sizeof("/tmp/ap-test-log.XXXXXX")];

static int setup(void **state)
{
	int fd;

	strcpy(sink_path, "/tmp/ap-test-log.XXXXXX");
	fd = mkstemp(sink_path);
	assert_true(fd >= 0);
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	log_batch_end(); /* in case a batching test failed half-way */
	log_close();
	log_min_level = LOG_INFO;
	unlink(sink_path);
	return 0;
}

/* Everything written to the sink file so far. */
static char *read_sink(void)
{
	static char buf[READ_BYTES];
	int fd = open(sink_path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
	return buf;
}

static size_t count_char(const char *s, char c)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == c;
	return n;
}

static void assert_matches(const char *text, const char *pattern)
{
	regex_t re;

	assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
	if (regexec(&re, text, 0, NULL, 0) != 0) {
		regfree(&re);
		fail_msg("\"%s\" does not match /%s/", text, pattern);
	}
	regfree(&re);
}

static void check_logfmt(const char *value, const char *expected)
{
	char buf[256];
	size_t n = log_escape_logfmt(buf, sizeof(buf), value);

	assert_string_equal(buf, expected);
	assert_int_equal(n, strlen(expected));
}

static void check_json(const char *value, const char *expected)
{
	char buf[256];
	size_t n = log_escape_json(buf, sizeof(buf), value);

	assert_string_equal(buf, expected);
	assert_int_equal(n, strlen(expected));
}

static void test_logfmt_plain_values(void **state)
{
	check_logfmt("prod-client-001", "prod-client-001");
	check_logfmt("user.production", "user.production");
	check_logfmt("[::1]:8080", "[::1]:8080");
}

static void test_logfmt_quoting(void **state)
{
	check_logfmt("", "\"\"");
	check_logfmt("two words", "\"two words\"");
	check_logfmt("a=b", "\"a=b\"");
	check_logfmt("say \"hi\"", "\"say \\\"hi\\\"\"");
	check_logfmt("C:\\path", "\"C:\\\\path\"");
	check_logfmt("tab\there", "\"tab\\there\"");
	check_logfmt("bell\a", "\"bell\\x07\"");
	check_logfmt("del\x7f", "\"del\\x7f\"");
	check_logfmt("caf\xc3\xa9", "\"caf\\xc3\\xa9\"");
	check_logfmt("\x1b[31mred", "\"\\x1b[31mred\"");
}

/* A value can neither end the line nor pose as another field. */
static void test_logfmt_injection(void **state)
{
	check_logfmt("evil\n2026-01-01T00:00:00.000Z ERROR forged",
		     "\"evil\\n2026-01-01T00:00:00.000Z ERROR forged\"");
	check_logfmt("x group_id=admin", "\"x group_id=admin\"");
	check_logfmt("\r\nINFO", "\"\\x0d\\nINFO\"");
	check_logfmt("\" admin=1 x=\"", "\"\\\" admin=1 x=\\\"\"");
}

static void test_logfmt_truncation(void **state)
{
	char buf[12];
	size_t n;

	/* Plain: 11 bytes of room, cut with "..." and NUL-terminated. */
	n = log_escape_logfmt(buf, sizeof(buf), "abcdefghijklmnopqrstuvwxyz");
	assert_string_equal(buf, "abcdefgh...");
	assert_int_equal(n, 11);
	/* Quoted: the closing quote survives the cut. */
	n = log_escape_logfmt(buf, sizeof(buf), "a b c d e f g h i j");
	assert_string_equal(buf, "\"a b c ...\"");
	assert_int_equal(n, 11);
	/* An escape sequence is never split. */
	n = log_escape_logfmt(buf, sizeof(buf), "abcd\x01\x02\x03");
	assert_string_equal(buf, "\"abcd...\"");
	/* Values that fit exactly are not cut. */
	n = log_escape_logfmt(buf, sizeof(buf), "abcdefghijk");
	assert_string_equal(buf, "abcdefghijk");
	/* Tiny buffers stay terminated. */
	assert_int_equal(log_escape_logfmt(buf, 2, "a b"), 0);
	assert_string_equal(buf, "");
	assert_int_equal(log_escape_logfmt(buf, 1, "ab"), 0);
	assert_string_equal(buf, "");
	assert_int_equal(log_escape_logfmt(buf, 0, "ab"), 0);
}

static void test_json_escaping(void **state)
{
	check_json("plain", "plain");
	check_json("", "");
	check_json("say \"hi\" \\ ok", "say \\\"hi\\\" \\\\ ok");
	check_json("line\nbreak\ttab\r", "line\\u000abreak\\u0009tab\\u000d");
	check_json("\x01\x1f\x7f", "\\u0001\\u001f\\u007f");
	check_json("evil\",\"level\":\"error", "evil\\\",\\\"level\\\":\\\"error");
}

static void test_json_utf8(void **state)
{
	/* Well-formed UTF-8 passes through: é, €, U+10FFFF, an emoji. */
	check_json("caf\xc3\xa9", "caf\xc3\xa9");
	check_json("\xe2\x82\xac", "\xe2\x82\xac");
	check_json("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf");
	check_json("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80");
	/* Anything else is escaped byte by byte, so the output is valid JSON. */
	check_json("\xff", "\\u00ff");
	check_json("\xc3", "\\u00c3");                                  /* truncated sequence */
	check_json("\xc3(", "\\u00c3(");                                /* bad continuation */
	check_json("\xc0\xaf", "\\u00c0\\u00af");                       /* overlong '/' */
	check_json("\xe0\x80\xaf", "\\u00e0\\u0080\\u00af");            /* overlong */
	check_json("\xed\xa0\x80", "\\u00ed\\u00a0\\u0080");            /* surrogate */
	check_json("\xf4\x90\x80\x80", "\\u00f4\\u0090\\u0080\\u0080"); /* > U+10FFFF */
	check_json("\x80", "\\u0080");                                  /* lone continuation */
}

static void test_json_truncation(void **state)
{
	char buf[10];

	/* 9 bytes of room: "abcdef..." */
	log_escape_json(buf, sizeof(buf), "abcdefghijklmnop");
	assert_string_equal(buf, "abcdef...");
	/* A multi-byte character is not split. */
	log_escape_json(buf, sizeof(buf), "abcde\xe2\x82\xac\xe2\x82\xac");
	assert_string_equal(buf, "abcde...");
	/* Nor is an escape. */
	log_escape_json(buf, sizeof(buf), "ab\n\n\n");
	assert_string_equal(buf, "ab...");
	assert_int_equal(log_escape_json(buf, 0, "x"), 0);
}

static void test_level_names(void **state)
{
	assert_int_equal(log_level_parse("debug"), LOG_DEBUG);
	assert_int_equal(log_level_parse("info"), LOG_INFO);
	assert_int_equal(log_level_parse("warn"), LOG_WARN);
	assert_int_equal(log_level_parse("error"), LOG_ERROR);
	assert_int_equal(log_level_parse("ERROR"), LOG_ERROR);
	assert_int_equal(log_level_parse("warning"), -EINVAL);
	assert_int_equal(log_level_parse(""), -EINVAL);
	assert_int_equal(log_level_parse("info "), -EINVAL);
	assert_string_equal(log_level_name(LOG_DEBUG), "debug");
	assert_string_equal(log_level_name(LOG_WARN), "warn");
	assert_string_equal(log_level_name((enum log_level)42), "unknown");
}

#define TIMESTAMP_RE "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

static void test_text_line(void **state)
{
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	log_info("Client connected", LF_S("client_id", "prod-client-001"),
		 LF_S("group_id", "production"));
	log_warn("No clients available in group", LF_S("group", "a b"), LF_I("streams", -3),
		 LF_U("bytes", 18446744073709551615ULL));
	assert_matches(read_sink(),
		       "^" TIMESTAMP_RE " INFO Client connected client_id=prod-client-001 "
		       "group_id=production\n" TIMESTAMP_RE " WARN No clients available in group "
		       "group=\"a b\" streams=-3 bytes=18446744073709551615\n$");
}

static void test_json_line(void **state)
{
	assert_int_equal(log_setup(LOG_DEBUG, LOG_FORMAT_JSON, sink_path), 0);
	log_debug("Selected client", LF_S("client_id", "c\"1"), LF_I("replica", -1),
		  LF_U("streams", 7), LF_S("note", NULL));
	assert_matches(read_sink(),
		       "^\\{\"time\":\"" TIMESTAMP_RE "\",\"level\":\"debug\",\"msg\":\"Selected "
		       "client\",\"client_id\":\"c\\\\\"1\",\"replica\":-1,\"streams\":7,"
		       "\"note\":null\\}\n$");
}

static void test_levels_below_minimum_are_dropped(void **state)
{
	assert_int_equal(log_setup(LOG_WARN, LOG_FORMAT_TEXT, sink_path), 0);
	log_debug("hidden", LF_S("k", "v"));
	log_info("hidden", LF_S("k", "v"));
	log_error("shown", LF_S("k", "v"));
	/* log_emit filters too, for callers that skip the macros. */
	log_emit(LOG_INFO, "hidden", NULL, 0);
	assert_matches(read_sink(), "^" TIMESTAMP_RE " ERROR shown k=v\n$");
}

static void test_injection_stays_on_one_line(void **state)
{
	const char *hostile = "x\n2026-01-01T00:00:00.000Z ERROR forged=1\r\n";
	char *out;

	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	log_info("Gateway received request", LF_S("user", hostile), LF_S("group", "g"));
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_JSON, sink_path), 0);
	log_info("Gateway received request", LF_S("user", hostile), LF_S("group", "\xff"));
	out = read_sink();
	assert_int_equal(count_char(out, '\n'), 2);
	assert_non_null(strstr(out, " user=\"x\\n2026-01-01T00:00:00.000Z ERROR forged=1\\x0d\\n\""
				    " group=g\n"));
	assert_non_null(strstr(out, "\"user\":\"x\\u000a2026-01-01T00:00:00.000Z ERROR "
				    "forged=1\\u000d\\u000a\",\"group\":\"\\u00ff\"}\n"));
}

/* Over-long lines stay within one buffer, one line, and valid syntax. */
static void test_long_lines_are_cut(void **state)
{
	static char big[3000];
	struct log_field fields[8];
	char *out, *second;

	memset(big, 'v', sizeof(big) - 1);
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
		fields[i] = LF_S("k", big);

	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	log_emit(LOG_INFO, "big", fields, ARRAY_SIZE(fields));
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_JSON, sink_path), 0);
	log_emit(LOG_INFO, "big", fields, ARRAY_SIZE(fields));

	out = read_sink();
	assert_int_equal(count_char(out, '\n'), 2);
	second = strchr(out, '\n') + 1;
	assert_true((size_t)(second - out) <= LINE_MAX_BYTES);
	assert_true(strlen(second) <= LINE_MAX_BYTES);
	/* Each value is cut at 1 KiB, so three fit and the rest are dropped. */
	assert_non_null(strstr(out, "vvv... k=vvv"));
	assert_non_null(strstr(out, "... log_truncated=true\n"));
	assert_non_null(strstr(second, "vvv...\",\"k\":\"vvv"));
	assert_non_null(strstr(second, "...\",\"log_truncated\":true}\n"));
}

static void test_reload_switches_file(void **state)
{
	char second_path[] = "/tmp/ap-test-log2.XXXXXX";
	int fd = mkstemp(second_path);
	char buf[512];
	ssize_t n;

	assert_true(fd >= 0);
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	log_info("first", LF_S("k", "1"));
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, second_path), 0);
	log_info("second", LF_S("k", "2"));

	assert_matches(read_sink(), "^" TIMESTAMP_RE " INFO first k=1\n$");
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_matches(buf, "^" TIMESTAMP_RE " INFO second k=2\n$");
	close(fd);
	unlink(second_path);
}

static void test_failed_setup_keeps_sink(void **state)
{
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	assert_int_equal(log_setup(LOG_DEBUG, LOG_FORMAT_JSON, "/nonexistent/dir/x.log"), -ENOENT);
	assert_int_equal(log_setup((enum log_level)9, LOG_FORMAT_TEXT, "stderr"), -EINVAL);
	assert_int_equal(log_setup(LOG_INFO, 7, "stderr"), -EINVAL);
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, ""), -EINVAL);
	/* Level and format are unchanged too. */
	log_debug("hidden", LF_S("k", "v"));
	log_info("kept", LF_S("k", "v"));
	assert_matches(read_sink(), "^" TIMESTAMP_RE " INFO kept k=v\n$");
}

static void test_logging_preserves_errno(void **state)
{
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	errno = ECONNRESET;
	log_info("peer reset", LF_S("k", "v"));
	assert_int_equal(errno, ECONNRESET);
}

/* The whole sink file (it may exceed read_sink's buffer); free() it. */
static char *read_sink_all(void)
{
	int fd = open(sink_path, O_RDONLY);
	struct stat st;
	char *buf;
	ssize_t n;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	n = read(fd, buf, (size_t)st.st_size);
	assert_int_equal(n, st.st_size);
	buf[n] = '\0';
	close(fd);
	return buf;
}

static const char *bulk_value(void)
{
	static char v[BULK_VALUE_BYTES + 1];

	memset(v, 'v', BULK_VALUE_BYTES);
	return v;
}

static void test_batch_waits_for_flush_in_order(void **state)
{
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	assert_int_equal(log_batch_begin(), 0);
	assert_int_equal(log_batch_begin(), -EBUSY);
	log_info("one", LF_U("n", 1));
	log_warn("two", LF_U("n", 2));
	log_info("three", LF_U("n", 3));
	assert_string_equal(read_sink(), "");
	assert_int_equal(log_flush(), 0);
	assert_matches(read_sink(), "^" TIMESTAMP_RE " INFO one n=1\n" TIMESTAMP_RE
				    " WARN two n=2\n" TIMESTAMP_RE " INFO three n=3\n$");
	log_info("four", LF_U("n", 4));
	log_batch_end();                /* writes what is queued ... */
	log_info("five", LF_U("n", 5)); /* ... and later lines go out at once */
	assert_matches(read_sink(), "three n=3\n" TIMESTAMP_RE " INFO four n=4\n" TIMESTAMP_RE
				    " INFO five n=5\n$");
}

static void test_error_is_flushed_at_once(void **state)
{
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	assert_int_equal(log_batch_begin(), 0);
	log_info("before", LF_S("k", "v"));
	log_error("failed", LF_S("k", "v"));
	log_info("after", LF_S("k", "v"));
	assert_matches(read_sink(),
		       "^" TIMESTAMP_RE " INFO before k=v\n" TIMESTAMP_RE " ERROR failed k=v\n$");
	log_batch_end();
	assert_matches(read_sink(), "ERROR failed k=v\n" TIMESTAMP_RE " INFO after k=v\n$");
}

/* A full queue drops lines, counts them, and the next flush marks the gap
 * where it was, after the lines kept and before the later ones. */
static void test_full_batch_drops_and_counts(void **state)
{
	const unsigned total = 2 * BATCH_BYTES / BULK_VALUE_BYTES;
	uint64_t dropped_before = log_dropped_lines(), dropped;
	unsigned kept = 0;
	char expect[64], *out, *p, *note;

	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	assert_int_equal(log_batch_begin(), 0);
	for (unsigned i = 0; i < total; i++)
		log_info("bulk", LF_U("n", i), LF_S("v", bulk_value()));
	dropped = log_dropped_lines() - dropped_before;
	assert_true(dropped > 0 && dropped < total);
	assert_string_equal(read_sink(), "");
	assert_int_equal(log_flush(), 0);
	log_info("later", LF_S("k", "v"));
	assert_int_equal(log_flush(), 0);

	out = read_sink_all();
	/* The lines kept are the first ones, whole and in order. */
	for (p = out; strncmp(p + 24, " INFO bulk ", 11) == 0; p = strchr(p, '\n') + 1) {
		snprintf(expect, sizeof(expect), " INFO bulk n=%u v=", kept);
		assert_memory_equal(p + 24, expect, strlen(expect));
		kept++;
	}
	assert_int_equal(kept + dropped, total);
	assert_true(kept * (BULK_VALUE_BYTES + 40) <= BATCH_BYTES);
	note = p;
	snprintf(expect, sizeof(expect),
		 " WARN Log lines dropped lines=%llu reason=", (unsigned long long)dropped);
	assert_memory_equal(note + 24, expect, strlen(expect));
	assert_matches(strchr(note, '\n') + 1, "^" TIMESTAMP_RE " INFO later k=v\n$");
	free(out);
}

static void *log_from_thread(void *arg)
{
	log_info("from a helper thread", LF_S("k", "v"));
	return NULL;
}

/* Threads that do not batch (the resolver's) write at once, even while the
 * loop thread holds lines back. */
static void test_other_threads_write_at_once(void **state)
{
	pthread_t t;

	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	assert_int_equal(log_batch_begin(), 0);
	log_info("queued", LF_S("k", "v"));
	assert_int_equal(pthread_create(&t, NULL, log_from_thread, NULL), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_matches(read_sink(), "^" TIMESTAMP_RE " INFO from a helper thread k=v\n$");
	log_batch_end();
	assert_matches(read_sink(), "helper thread k=v\n" TIMESTAMP_RE " INFO queued k=v\n$");
}

/* exit() from a loop thread loses nothing it queued. */
static void test_exit_writes_the_batch(void **state)
{
	int status;
	pid_t pid;

	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	fflush(NULL); /* the child must not repeat buffered test output */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (log_batch_begin() < 0)
			_exit(2);
		log_info("last words", LF_S("k", "v"));
		exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_matches(read_sink(), "^" TIMESTAMP_RE " INFO last words k=v\n$");
}

/* A pipe nobody reads: the flush returns instead of waiting, keeps what the
 * pipe did not take, and what the reader gets is whole lines in order. The
 * sink is set up already; rfd reads it. */
static void check_full_pipe_does_not_block(int rfd)
{
	const unsigned total = 128; /* about 128 KiB: twice a pipe's default size */
	static char got[256 * 1024];
	size_t have = 0, left;
	unsigned next = 0;

	got[0] = '\0';
	assert_int_equal(log_batch_begin(), 0);
	for (unsigned i = 0; i < total; i++)
		log_info("bulk", LF_U("n", i), LF_S("v", bulk_value()));
	left = log_flush();
	assert_true(left > 0);
	/* Read and flush by turns until every line came through (bounded:
	 * each turn moves at least one pipe-full). */
	for (int turn = 0; left > 0 || count_char(got, '\n') < total; turn++) {
		ssize_t n = read(rfd, got + have, sizeof(got) - 1 - have);

		assert_true(turn < 1000);
		assert_true(n > 0 || (n < 0 && errno == EAGAIN));
		if (n > 0)
			have += (size_t)n;
		got[have] = '\0';
		left = log_flush();
	}
	assert_int_equal(count_char(got, '\n'), total);
	for (char *p = got; *p; p = strchr(p, '\n') + 1) {
		char expect[32];

		snprintf(expect, sizeof(expect), " INFO bulk n=%u v=v", next++);
		assert_memory_equal(p + 24, expect, strlen(expect));
	}
	log_batch_end();
	log_close();
}

/* A FIFO named as the log output: we opened it, so it is made non-blocking. */
static void test_full_fifo_does_not_block(void **state)
{
	int rfd;

	unlink(sink_path);
	assert_int_equal(mkfifo(sink_path, 0600), 0);
	rfd = open(sink_path, O_RDONLY | O_NONBLOCK);
	assert_true(rfd >= 0);
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, sink_path), 0);
	check_full_pipe_does_not_block(rfd);
	close(rfd);
}

/* stderr on a pipe (a service manager's): its description is shared, so it
 * stays blocking and each write asks not to wait instead. */
static void test_full_stderr_pipe_does_not_block(void **state)
{
	int p[2], saved = dup(STDERR_FILENO);

	assert_true(saved >= 0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
	assert_true(dup2(p[1], STDERR_FILENO) == STDERR_FILENO);
	assert_int_equal(log_setup(LOG_INFO, LOG_FORMAT_TEXT, "stderr"), 0);
	check_full_pipe_does_not_block(p[0]);
	/* The shared description was left blocking. */
	assert_int_equal(fcntl(STDERR_FILENO, F_GETFL) & O_NONBLOCK, 0);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(p[0]);
	close(p[1]);
}

/* One line per LOG_FLOOD_PERIOD_MS for what a flood repeats: the first
 * occurrence, then the first one a whole period after the last line. */
static void test_rate_allows_one_line_per_period(void **state)
{
	struct log_rate rate = { 0 };
	uint64_t t = 5000;

	assert_true(log_rate_allow(&rate, t));
	assert_false(log_rate_allow(&rate, t));
	assert_false(log_rate_allow(&rate, t + LOG_FLOOD_PERIOD_MS - 1));
	assert_true(log_rate_allow(&rate, t + LOG_FLOOD_PERIOD_MS));
	assert_false(log_rate_allow(&rate, t + LOG_FLOOD_PERIOD_MS + 1));
	/* the period counts from the last line, not from the first */
	assert_true(log_rate_allow(&rate, t + 3 * LOG_FLOOD_PERIOD_MS));
	/* a time before the last line's (another thread's older now_ms) is
	 * within the period, not a wrapped difference */
	assert_false(log_rate_allow(&rate, t + 3 * LOG_FLOOD_PERIOD_MS - 5));
	/* a zeroed rate allows at once, even at time 0 */
	rate = (struct log_rate){ 0 };
	assert_true(log_rate_allow(&rate, 0));
	assert_false(log_rate_allow(&rate, 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_logfmt_plain_values),
		cmocka_unit_test(test_rate_allows_one_line_per_period),
		cmocka_unit_test(test_logfmt_quoting),
		cmocka_unit_test(test_logfmt_injection),
		cmocka_unit_test(test_logfmt_truncation),
		cmocka_unit_test(test_json_escaping),
		cmocka_unit_test(test_json_utf8),
		cmocka_unit_test(test_json_truncation),
		cmocka_unit_test(test_level_names),
		cmocka_unit_test_setup_teardown(test_text_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_levels_below_minimum_are_dropped, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_injection_stays_on_one_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_lines_are_cut, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_switches_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_setup_keeps_sink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_logging_preserves_errno, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_waits_for_flush_in_order, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_error_is_flushed_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_batch_drops_and_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_threads_write_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exit_writes_the_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_fifo_does_not_block, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_stderr_pipe_does_not_block, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
