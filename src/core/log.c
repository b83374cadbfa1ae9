/*
 * log.c — levelled, structured log lines (see log.h for the contract).
 *
 * A line is built in a stack buffer at the call site (so its timestamp is
 * the time of the event). Outside a loop it is handed to the kernel at once
 * with one write(2), so lines from several threads or processes sharing the
 * sink do not interleave. A thread that runs a loop batches instead
 * (log_batch_begin): its lines queue in a bounded buffer that the loop's
 * before-wait hook writes without blocking (log_flush), once per iteration.
 * Nothing here allocates except that one buffer per batching thread.
 *
 * Escaping is the security boundary of this file: field values often carry
 * user-controlled bytes (host names, usernames, peer error strings). In text
 * a value that could be misread (spaces, quotes, '=', '\', control or
 * non-ASCII bytes, or empty) is double-quoted and escaped, so it can neither
 * end the line nor fake another field. In JSON every string is valid UTF-8
 * JSON whatever the input bytes are.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/config.h"
#include "anyproxy/grammar.h"
#include "anyproxy/log.h"

/* One log line, newline included, never exceeds this. */
#define LOG_LINE_MAX_BYTES 4096
/* One escaped value (or message) never takes more than this much of a line,
 * so that a huge value cannot push every later field off the line. */
#define LOG_VALUE_MAX_BYTES 1024
/* Room kept at the end of the line for the truncation note and the line end. */
#define LOG_TAIL_RESERVE_BYTES 32
/* The smallest room worth starting a field in; below it the field is dropped. */
#define LOG_FIELD_MIN_BYTES 16
/* Appended where a value was cut to fit. */
#define LOG_TRUNCATION_MARK "..."
#define LOG_TRUNCATION_MARK_LEN (sizeof(LOG_TRUNCATION_MARK) - 1)
/* "2026-11-25T17:46:18.123Z" plus its NUL. */
#define LOG_TIMESTAMP_BYTES 25
/* Permissions of a log file we create. */
#define LOG_FILE_MODE 0640
/* Longest logfmt escape of one input byte: "\xHH". */
#define LOG_ESCAPE_UNIT_MAX_BYTES 4
/* Longest decimal of a 64-bit integer, sign and NUL included. */
#define LOG_NUMBER_BYTES 21
/* A JSON key longer than this (after escaping) is cut. */
#define LOG_JSON_KEY_MAX_BYTES 128
/* A batching thread's queue of lines not yet written: what a loop iteration
 * may log while the sink keeps up, and what a stalled sink may hold back
 * before lines are dropped (and counted). */
#define LOG_BATCH_BYTES (256 * 1024)
/* Room kept at the end of the batch so the "Log lines dropped" note always
 * fits where the loss began: an ordinary line must leave this much free. */
#define LOG_BATCH_NOTE_RESERVE_BYTES LOG_LINE_MAX_BYTES
/* A write to a pipe or socket carries whole lines and at most this much, so
 * it is atomic (POSIX: pipe writes up to PIPE_BUF are never interleaved with
 * other writers' and never partial). */
#define LOG_ATOMIC_WRITE_BYTES PIPE_BUF

enum log_level log_min_level = LOG_INFO;

/*
 * The sink. Before log_setup() it is stderr. The first time a file is chosen
 * we open it and own that descriptor for the life of the process: a later
 * log_setup() points the same descriptor number at the new target with
 * dup3(), so a thread that loaded the number just before a reload writes to
 * the old or the new file, never to a closed or reused descriptor.
 */
static int log_fd = STDERR_FILENO;
static bool log_fd_owned;
static int log_format = LOG_FORMAT_TEXT;

/*
 * How a batch is written without blocking the loop depends on what the sink
 * is. stderr and stdout are often shared with other processes (a service
 * manager's pipe or socket, a terminal), so O_NONBLOCK, which belongs to the
 * shared file description, is never set; every write asks for non-blocking
 * behaviour by itself instead:
 * - a regular file: a plain write. It never waits for a reader (only for
 *   the disk, briefly), and regular files refuse RWF_NOWAIT on appends.
 * - a path we opened that is not a regular file (a FIFO): the description
 *   is ours alone, so it is made O_NONBLOCK (writes at once then wait in
 *   poll(2) for POLLOUT instead).
 * - a socket (systemd's journal stream): send(MSG_DONTWAIT).
 * - a pipe: pwritev2(RWF_NOWAIT).
 * - anything else (a terminal, a FIFO we inherited, /dev/null) or a kernel
 *   that refuses RWF_NOWAIT: a plain write, which may block on a terminal
 *   held by flow control (interactive use only).
 * Set with the sink (log_setup) by the thread that configures logging and
 * read by batching threads only; relaxed atomics keep that race-free.
 */
enum log_sink_kind { SINK_FILE, SINK_OWN_NONBLOCK, SINK_SOCKET, SINK_NOWAIT, SINK_BLOCKING };
static int log_sink_kind = SINK_BLOCKING;

/* Lines dropped since start because a batch was full. */
static uint64_t log_dropped_total;

/*
 * A batching thread's queue: bytes [0, len) wait to be written, whole lines
 * except perhaps the first, whose start an earlier partial send already
 * took. `lost` counts lines dropped since the last note; while it is not
 * zero no line is queued, so the loss is one gap, and the note goes where
 * it began.
 */
struct log_batch {
	size_t len;
	uint64_t lost;
	char buf[LOG_BATCH_BYTES];
};

/* Only the thread that created it touches its batch: no locking. */
static _Thread_local struct log_batch *log_batch;

static const char *const level_names[] = {
	[LOG_DEBUG] = "debug",
	[LOG_INFO] = "info",
	[LOG_WARN] = "warn",
	[LOG_ERROR] = "error",
};

static const char *const level_names_upper[] = {
	[LOG_DEBUG] = "DEBUG",
	[LOG_INFO] = "INFO",
	[LOG_WARN] = "WARN",
	[LOG_ERROR] = "ERROR",
};

static bool level_valid(enum log_level level)
{
	return (unsigned)level < ARRAY_SIZE(level_names);
}

int log_level_parse(const char *s)
{
	for (size_t i = 0; i < ARRAY_SIZE(level_names); i++) {
		if (strcasecmp(s, level_names[i]) == 0)
			return (int)i;
	}
	return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
	return level_valid(level) ? level_names[level] : "unknown";
}

/*
 * Escaped output with truncation at unit boundaries. `cap` is the room for
 * the escaped body; the caller keeps room after it for a closing quote and
 * the NUL. When a unit does not fit, the output is cut back to the last
 * boundary that leaves room for LOG_TRUNCATION_MARK, and the mark is added.
 * A unit (one escape sequence, or one whole UTF-8 character) is never split.
 */
struct escape_out {
	char *buf;
	size_t cap;
	size_t pos;
	size_t mark_pos; /* last unit boundary with room for the mark after it */
	bool truncated;
};

static void escape_out_init(struct escape_out *o, char *buf, size_t cap)
{
	o->buf = buf;
	o->cap = cap;
	o->pos = 0;
	o->mark_pos = 0;
	o->truncated = false;
}

/* Returns false once the output is full (and truncated). */
static bool escape_out_unit(struct escape_out *o, const char *unit, size_t n)
{
	if (o->truncated)
		return false;
	if (o->pos + n > o->cap) {
		o->pos = o->mark_pos;
		if (o->pos + LOG_TRUNCATION_MARK_LEN <= o->cap) {
			memcpy(o->buf + o->pos, LOG_TRUNCATION_MARK, LOG_TRUNCATION_MARK_LEN);
			o->pos += LOG_TRUNCATION_MARK_LEN;
		}
		o->truncated = true;
		return false;
	}
	memcpy(o->buf + o->pos, unit, n);
	o->pos += n;
	if (o->pos + LOG_TRUNCATION_MARK_LEN <= o->cap)
		o->mark_pos = o->pos;
	return true;
}

static const char hex_digits[] = "0123456789abcdef";

/* Byte that a logfmt value may carry as itself, outside quotes. */
static bool logfmt_plain_byte(unsigned char c)
{
	return c > ' ' && c < 0x7f && c != '"' && c != '=' && c != '\\';
}

/* The logfmt escape of one byte into unit; returns its length. Spaces and
 * '=' need no escape inside quotes. */
static size_t logfmt_escape_byte(unsigned char c, char unit[LOG_ESCAPE_UNIT_MAX_BYTES])
{
	switch (c) {
	case '"':
		memcpy(unit, "\\\"", 2);
		return 2;
	case '\\':
		memcpy(unit, "\\\\", 2);
		return 2;
	case '\n':
		memcpy(unit, "\\n", 2);
		return 2;
	case '\t':
		memcpy(unit, "\\t", 2);
		return 2;
	default:
		break;
	}
	if (c < ' ' || c >= 0x7f) {
		unit[0] = '\\';
		unit[1] = 'x';
		unit[2] = hex_digits[c >> 4];
		unit[3] = hex_digits[c & 0xf];
		return 4;
	}
	unit[0] = (char)c;
	return 1;
}

/* Escape every byte of value into o (no quotes added). */
static void logfmt_escape_body(struct escape_out *o, const char *value)
{
	char unit[LOG_ESCAPE_UNIT_MAX_BYTES];

	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (!escape_out_unit(o, unit, logfmt_escape_byte(*p, unit)))
			return;
	}
}

size_t log_escape_logfmt(char *buf, size_t len, const char *value)
{
	bool quote = value[0] == '\0';
	struct escape_out o;

	for (const unsigned char *p = (const unsigned char *)value; *p && !quote; p++)
		quote = !logfmt_plain_byte(*p);

	if (!quote) {
		if (len == 0)
			return 0;
		escape_out_init(&o, buf, len - 1);
		logfmt_escape_body(&o, value);
		buf[o.pos] = '\0';
		return o.pos;
	}
	/* Opening quote, body, closing quote, NUL. */
	if (len < 3) {
		if (len > 0)
			buf[0] = '\0';
		return 0;
	}
	buf[0] = '"';
	escape_out_init(&o, buf + 1, len - 3);
	logfmt_escape_body(&o, value);
	buf[1 + o.pos] = '"';
	buf[2 + o.pos] = '\0';
	return 2 + o.pos;
}

static void json_escape_body(struct escape_out *o, const char *value)
{
	char unit[GRAMMAR_JSON_UNIT_MAX];
	size_t used;

	for (; *value; value += used) {
		size_t n = grammar_json_unit(value, strnlen(value, GRAMMAR_UTF8_MAX_BYTES),
					     GRAMMAR_JSON_WS_HEX, unit, &used);

		if (!escape_out_unit(o, unit, n))
			return;
	}
}

size_t log_escape_json(char *buf, size_t len, const char *value)
{
	struct escape_out o;

	if (len == 0)
		return 0;
	escape_out_init(&o, buf, len - 1);
	json_escape_body(&o, value);
	buf[o.pos] = '\0';
	return o.pos;
}

/*
 * A line under construction. `cap` excludes LOG_TAIL_RESERVE_BYTES, kept for
 * the truncation note and the line end, which are appended with the reserve.
 */
struct line {
	char buf[LOG_LINE_MAX_BYTES];
	size_t pos;
	size_t cap;
	bool fields_dropped;
};

static size_t line_room(const struct line *l)
{
	return l->cap - l->pos;
}

/* Append n bytes if they fit; returns false (and appends nothing) if not. */
static bool line_put(struct line *l, const char *s, size_t n)
{
	if (n > line_room(l))
		return false;
	memcpy(l->buf + l->pos, s, n);
	l->pos += n;
	return true;
}

static bool line_puts(struct line *l, const char *s)
{
	return line_put(l, s, strlen(s));
}

/* Room to give one value: what is left, capped, plus 1 for the NUL the
 * escape functions write (overwritten by whatever follows). */
static size_t line_value_room(const struct line *l, size_t after)
{
	size_t room = line_room(l);

	room = room > after ? room - after : 0;
	return MIN(room, LOG_VALUE_MAX_BYTES) + 1;
}

/* Append s as a JSON string. Needs at least 2 bytes of room (the quotes);
 * `after` is room to leave free behind it. */
static void line_put_json_string(struct line *l, const char *s, size_t after)
{
	l->buf[l->pos++] = '"';
	l->pos += log_escape_json(l->buf + l->pos, line_value_room(l, after + 1), s);
	l->buf[l->pos++] = '"';
}

static void format_timestamp(char out[LOG_TIMESTAMP_BYTES])
{
	struct timespec now;
	struct tm tm;

	size_t n;
	long ms;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	/* "YYYY-MM-DDTHH:MM:SS" then ".mmmZ"; strftime returns 0 only for a
	 * year past 9999, which the fixed-size buffer cannot show. */
	n = strftime(out, LOG_TIMESTAMP_BYTES, "%Y-%m-%dT%H:%M:%S", &tm);
	ms = now.tv_nsec / 1000000;
	if (n + sizeof(".mmmZ") > LOG_TIMESTAMP_BYTES)
		n = 0;
	out[n++] = '.';
	out[n++] = (char)('0' + ms / 100);
	out[n++] = (char)('0' + ms / 10 % 10);
	out[n++] = (char)('0' + ms % 10);
	out[n++] = 'Z';
	out[n] = '\0';
}

/* Text keys are developer-chosen; still, keep them to a safe alphabet so a
 * mistaken key cannot break the line's syntax. */
static bool text_key_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

/* A number, or "null"/"(null)" for a NULL string, is written as-is;
 * returns NULL for a string field, which needs escaping. */
static const char *field_literal(const struct log_field *f, const char *null_text,
				 char number[LOG_NUMBER_BYTES])
{
	switch (f->type) {
	case LOG_FIELD_INT:
		snprintf(number, LOG_NUMBER_BYTES, "%lld", f->i);
		return number;
	case LOG_FIELD_UINT:
		snprintf(number, LOG_NUMBER_BYTES, "%llu", f->u);
		return number;
	case LOG_FIELD_STR:
		break;
	}
	return f->s ? NULL : null_text;
}

/* A field goes in whole (key intact, value possibly cut with "...") or not
 * at all; returns false if it did not fit. */
static bool line_put_text_field(struct line *l, const struct log_field *f)
{
	char number[LOG_NUMBER_BYTES];
	const char *literal = field_literal(f, "(null)", number);
	size_t key_len = strlen(f->key);

	if (line_room(l) < key_len + 2 + (literal ? strlen(literal) : LOG_FIELD_MIN_BYTES))
		return false;
	l->buf[l->pos++] = ' ';
	for (size_t i = 0; i < key_len; i++)
		l->buf[l->pos++] = text_key_byte((unsigned char)f->key[i]) ? f->key[i] : '_';
	l->buf[l->pos++] = '=';
	if (literal)
		return line_puts(l, literal);
	l->pos += log_escape_logfmt(l->buf + l->pos, line_value_room(l, 0), f->s);
	return true;
}

static bool line_put_json_field(struct line *l, const struct log_field *f)
{
	char number[LOG_NUMBER_BYTES];
	char key[LOG_JSON_KEY_MAX_BYTES];
	const char *literal = field_literal(f, "null", number);
	size_t key_len = log_escape_json(key, sizeof(key), f->key);

	/* ,"key":  then the value */
	if (line_room(l) < key_len + 4 + (literal ? strlen(literal) : LOG_FIELD_MIN_BYTES))
		return false;
	line_put(l, ",\"", 2);
	line_put(l, key, key_len);
	line_put(l, "\":", 2);
	if (literal)
		return line_puts(l, literal);
	line_put_json_string(l, f->s, 0);
	return true;
}

static void build_text_line(struct line *l, const char *timestamp, enum log_level level,
			    const char *msg, const struct log_field *fields, size_t nfields)
{
	struct escape_out o;

	line_puts(l, timestamp);
	line_puts(l, " ");
	line_puts(l, level_valid(level) ? level_names_upper[level] : "UNKNOWN");
	line_puts(l, " ");
	/* The message is not quoted; escaping control bytes keeps it on one line. */
	escape_out_init(&o, l->buf + l->pos, MIN(line_room(l), LOG_VALUE_MAX_BYTES));
	logfmt_escape_body(&o, msg);
	l->pos += o.pos;

	for (size_t i = 0; i < nfields; i++) {
		size_t saved = l->pos;

		if (!line_put_text_field(l, &fields[i])) {
			l->pos = saved;
			l->fields_dropped = true;
			break;
		}
	}
	l->cap = sizeof(l->buf);
	if (l->fields_dropped)
		line_puts(l, " log_truncated=true");
	line_puts(l, "\n");
}

static void build_json_line(struct line *l, const char *timestamp, enum log_level level,
			    const char *msg, const struct log_field *fields, size_t nfields)
{
	line_puts(l, "{\"time\":\"");
	line_puts(l, timestamp);
	line_puts(l, "\",\"level\":\"");
	line_puts(l, log_level_name(level));
	line_puts(l, "\",\"msg\":");
	line_put_json_string(l, msg, 0);

	for (size_t i = 0; i < nfields; i++) {
		size_t saved = l->pos;

		if (!line_put_json_field(l, &fields[i])) {
			l->pos = saved;
			l->fields_dropped = true;
			break;
		}
	}
	l->cap = sizeof(l->buf);
	if (l->fields_dropped)
		line_puts(l, ",\"log_truncated\":true");
	line_puts(l, "}\n");
}

/* Write the whole of buf, waiting as long as the sink needs (a short
 * write, rare: a full pipe or disk, is finished rather than left as a
 * partial line). Returns 0, or -errno if the sink refused: there is
 * nowhere left to report that. */
static int write_all(const char *buf, size_t n)
{
	int fd = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE);

	while (n > 0) {
		ssize_t written = write(fd, buf, n);

		if (written < 0) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };

			if (errno == EINTR)
				continue;
			/* SINK_OWN_NONBLOCK: wait here, as a blocking write would. */
			if (errno == EAGAIN && (poll(&p, 1, -1) >= 0 || errno == EINTR))
				continue;
			return -errno;
		}
		buf += written;
		n -= (size_t)written;
	}
	return 0;
}

/* One attempt to hand n bytes to the sink without waiting: the count taken
 * (possibly short), or -errno (-EAGAIN: the sink is full). */
static ssize_t write_nowait(const char *buf, size_t n)
{
	int fd = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE);
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = n };
	ssize_t written;

	switch (__atomic_load_n(&log_sink_kind, __ATOMIC_RELAXED)) {
	case SINK_SOCKET:
		written = send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		break;
	case SINK_NOWAIT:
		written = pwritev2(fd, &iov, 1, -1, RWF_NOWAIT);
		if (written < 0 && errno == EOPNOTSUPP) {
			/* This kernel cannot: write plainly from now on. */
			__atomic_store_n(&log_sink_kind, SINK_BLOCKING, __ATOMIC_RELAXED);
			written = write(fd, buf, n);
		}
		break;
	default:
		written = write(fd, buf, n);
		break;
	}
	return written < 0 ? -errno : written;
}

/* The bytes of b to hand over in one write: everything for a regular file
 * (an O_APPEND write is placed whole), else whole lines up to
 * LOG_ATOMIC_WRITE_BYTES, so no other writer's line lands inside one. */
static size_t batch_chunk(const struct log_batch *b)
{
	const char *end;

	if (__atomic_load_n(&log_sink_kind, __ATOMIC_RELAXED) == SINK_FILE ||
	    b->len <= LOG_ATOMIC_WRITE_BYTES)
		return b->len;
	end = memrchr(b->buf, '\n', LOG_ATOMIC_WRITE_BYTES);
	/* Lines are shorter than LOG_ATOMIC_WRITE_BYTES, so one ends in it. */
	return end ? (size_t)(end - b->buf) + 1 : LOG_ATOMIC_WRITE_BYTES;
}

static void batch_consume(struct log_batch *b, size_t n)
{
	memmove(b->buf, b->buf + n, b->len - n);
	b->len -= n;
}

static void build_line(struct line *l, enum log_level level, const char *msg,
		       const struct log_field *fields, size_t nfields)
{
	char timestamp[LOG_TIMESTAMP_BYTES];

	l->pos = 0;
	l->cap = sizeof(l->buf) - LOG_TAIL_RESERVE_BYTES;
	l->fields_dropped = false;
	format_timestamp(timestamp);
	if (__atomic_load_n(&log_format, __ATOMIC_RELAXED) == LOG_FORMAT_JSON)
		build_json_line(l, timestamp, level, msg, fields, nfields);
	else
		build_text_line(l, timestamp, level, msg, fields, nfields);
}

/* Queue the note for lines lost since the last one, if it fits; the reserve
 * makes it fit right after the loss unless the sink has stalled. */
static void batch_note_losses(struct log_batch *b)
{
	struct line l;
	const struct log_field f[] = {
		LF_U("lines", b->lost),
		LF_S("reason", "log output slower than the lines logged"),
	};

	if (!b->lost || b->len + LOG_BATCH_NOTE_RESERVE_BYTES > sizeof(b->buf))
		return;
	build_line(&l, LOG_WARN, "Log lines dropped", f, ARRAY_SIZE(f));
	memcpy(b->buf + b->len, l.buf, l.pos);
	b->len += l.pos;
	b->lost = 0;
}

static void batch_queue(struct log_batch *b, const struct line *l)
{
	if (b->lost || b->len + l->pos > sizeof(b->buf) - LOG_BATCH_NOTE_RESERVE_BYTES) {
		b->lost++;
		__atomic_add_fetch(&log_dropped_total, 1, __ATOMIC_RELAXED);
		return;
	}
	memcpy(b->buf + b->len, l->buf, l->pos);
	b->len += l->pos;
}

size_t log_flush(void)
{
	struct log_batch *b = log_batch;
	int saved_errno = errno;

	if (!b)
		return 0;
	batch_note_losses(b);
	while (b->len > 0) {
		ssize_t n = write_nowait(b->buf, batch_chunk(b));

		if (n == -EINTR)
			continue;
		if (n <= 0)
			break; /* full (EAGAIN) or failing: kept for the next turn */
		batch_consume(b, (size_t)n);
		batch_note_losses(b); /* room may have come free */
	}
	errno = saved_errno;
	return b->len;
}

void log_flush_wait(void)
{
	struct log_batch *b = log_batch;
	int saved_errno = errno;

	if (!b)
		return;
	/* Twice: the second writes a note that found no room the first time.
	 * A sink that refuses for good loses what is left, as a direct write
	 * would have. */
	for (int i = 0; i < 2; i++) {
		batch_note_losses(b);
		write_all(b->buf, b->len);
		b->len = 0;
	}
	errno = saved_errno;
}

/* exit() runs this in the thread that called it: a loop thread that exits
 * from a callback loses nothing it queued. */
static void flush_at_exit(void)
{
	log_flush_wait();
}

int log_batch_begin(void)
{
	static bool exit_hook;

	if (log_batch)
		return -EBUSY;
	log_batch = malloc(sizeof(*log_batch));
	if (!log_batch)
		return -ENOMEM;
	log_batch->len = 0;
	log_batch->lost = 0;
	if (!__atomic_exchange_n(&exit_hook, true, __ATOMIC_RELAXED))
		atexit(flush_at_exit);
	return 0;
}

void log_batch_end(void)
{
	log_flush_wait();
	free(log_batch);
	log_batch = NULL;
}

uint64_t log_dropped_lines(void)
{
	return __atomic_load_n(&log_dropped_total, __ATOMIC_RELAXED);
}

void log_emit(enum log_level level, const char *msg, const struct log_field *fields, size_t nfields)
{
	struct line l;
	int saved_errno = errno; /* callers log in error paths, then read errno */

	if (!log_enabled(level))
		return;
	build_line(&l, level, msg, fields, nfields);
	if (!log_batch) {
		write_all(l.buf, l.pos);
	} else {
		batch_queue(log_batch, &l);
		/* An error goes out now: it may be the last thing the process
		 * says, and errors are rare enough to cost nothing. */
		if (level >= LOG_ERROR)
			log_flush();
	}
	errno = saved_errno;
}

/* A new descriptor for a file sink, or -errno. */
static int open_log_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, LOG_FILE_MODE);

	return fd < 0 ? -errno : fd;
}

/* How to write to fd without waiting (see enum log_sink_kind); own: fd
 * is a description we just opened (never a standard stream's, even when
 * duplicated onto our descriptor number), so ours to make non-blocking. */
static int sink_kind(int fd, bool own)
{
	struct stat st;
	int flags;

	if (fstat(fd, &st) < 0)
		return SINK_BLOCKING;
	if (S_ISREG(st.st_mode))
		return SINK_FILE;
	if (own) {
		flags = fcntl(fd, F_GETFL);
		if (flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0)
			return SINK_OWN_NONBLOCK;
		return SINK_BLOCKING;
	}
	if (S_ISSOCK(st.st_mode))
		return SINK_SOCKET;
	if (S_ISFIFO(st.st_mode))
		return SINK_NOWAIT;
	return SINK_BLOCKING;
}

/* Point the sink at target_fd (a standard stream or a fresh file
 * descriptor that this function takes over). */
static int switch_sink(int target_fd, bool target_is_new)
{
	if (!log_fd_owned) {
		/* Nothing to close: the old sink is a standard stream. */
		__atomic_store_n(&log_fd, target_fd, __ATOMIC_RELEASE);
		log_fd_owned = target_is_new;
		return 0;
	}
	if (target_fd != log_fd && dup3(target_fd, log_fd, O_CLOEXEC) < 0) {
		int err = -errno;

		if (target_is_new)
			close(target_fd);
		return err;
	}
	if (target_is_new && target_fd != log_fd)
		close(target_fd);
	return 0;
}

int log_setup(enum log_level level, int format, const char *output)
{
	int fd, err;
	bool is_new = false;

	if (!level_valid(level) || (format != LOG_FORMAT_TEXT && format != LOG_FORMAT_JSON) ||
	    !output || !output[0])
		return -EINVAL;
	/* Lines queued before a reload belong to the old sink (a rotated
	 * file); what it cannot take now goes to the new one. */
	log_flush();
	if (strcmp(output, "stderr") == 0) {
		fd = STDERR_FILENO;
	} else if (strcmp(output, "stdout") == 0) {
		fd = STDOUT_FILENO;
	} else {
		fd = open_log_file(output);
		if (fd < 0)
			return fd;
		is_new = true;
	}
	err = switch_sink(fd, is_new);
	if (err < 0)
		return err;
	__atomic_store_n(&log_sink_kind, sink_kind(log_fd, is_new), __ATOMIC_RELAXED);
	log_min_level = level;
	__atomic_store_n(&log_format, format, __ATOMIC_RELAXED);
	return 0;
}

void log_close(void)
{
	int fd = log_fd;

	log_flush_wait();
	__atomic_store_n(&log_fd, STDERR_FILENO, __ATOMIC_RELEASE);
	__atomic_store_n(&log_sink_kind, sink_kind(STDERR_FILENO, false), __ATOMIC_RELAXED);
	if (log_fd_owned)
		close(fd);
	log_fd_owned = false;
}

bool log_rate_allow(struct log_rate *rate, uint64_t now_ms)
{
	if (rate->used && ms_since(now_ms, rate->last_ms) < LOG_FLOOD_PERIOD_MS)
		return false;
	rate->used = true;
	rate->last_ms = now_ms;
	return true;
}
