/*
 * log.c — levelled, structured log lines (see log.h for the contract).
 *
 * A line is built in a stack buffer and handed to the kernel with one
 * write(2), so lines from several threads or processes sharing the sink do
 * not interleave. Nothing here allocates.
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
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "anyproxy/config.h"
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
/* Longest escape of one input byte: "\u00XX". */
#define LOG_ESCAPE_UNIT_MAX_BYTES 6
/* Longest decimal of a 64-bit integer, sign and NUL included. */
#define LOG_NUMBER_BYTES 21
/* A JSON key longer than this (after escaping) is cut. */
#define LOG_JSON_KEY_MAX_BYTES 128

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

static bool utf8_continuation(unsigned char c)
{
	return (c & 0xc0) == 0x80;
}

/*
 * Length of the well-formed UTF-8 character at p (Unicode table 3-7: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0 if the bytes
 * there are not one. Never reads past a NUL: continuation bytes are never 0.
 */
static size_t utf8_char_len(const unsigned char *p)
{
	unsigned char c = p[0];
	unsigned char low = 0x80, high = 0xbf; /* allowed range of the 2nd byte */
	size_t n;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			low = 0xa0;
		else if (c == 0xed)
			high = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			low = 0x90;
		else if (c == 0xf4)
			high = 0x8f;
	} else {
		return 0;
	}
	if (p[1] < low || p[1] > high)
		return 0;
	for (size_t i = 2; i < n; i++) {
		if (!utf8_continuation(p[i]))
			return 0;
	}
	return n;
}

/* The JSON escape of one byte that does not start a multi-byte character. */
static size_t json_escape_byte(unsigned char c, char unit[LOG_ESCAPE_UNIT_MAX_BYTES])
{
	if (c == '"' || c == '\\') {
		unit[0] = '\\';
		unit[1] = (char)c;
		return 2;
	}
	if (c < ' ' || c >= 0x7f) {
		/* Control bytes, DEL, and bytes of invalid UTF-8 (read as U+00XX). */
		memcpy(unit, "\\u00", 4);
		unit[4] = hex_digits[c >> 4];
		unit[5] = hex_digits[c & 0xf];
		return 6;
	}
	unit[0] = (char)c;
	return 1;
}

static void json_escape_body(struct escape_out *o, const char *value)
{
	const unsigned char *p = (const unsigned char *)value;
	char unit[LOG_ESCAPE_UNIT_MAX_BYTES];

	while (*p) {
		size_t n = utf8_char_len(p);
		bool ok;

		if (n > 1) {
			ok = escape_out_unit(o, (const char *)p, n);
			p += n;
		} else {
			ok = escape_out_unit(o, unit, json_escape_byte(*p, unit));
			p++;
		}
		if (!ok)
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

/* One write(2) per line; a short write (rare: a full pipe or disk) is
 * finished rather than left as a partial line. Errors are dropped: there is
 * nowhere left to report them. */
static void write_line(const char *buf, size_t n)
{
	int fd = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE);

	while (n > 0) {
		ssize_t written = write(fd, buf, n);

		if (written < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += written;
		n -= (size_t)written;
	}
}

void log_emit(enum log_level level, const char *msg, const struct log_field *fields,
	      size_t nfields)
{
	char timestamp[LOG_TIMESTAMP_BYTES];
	struct line l;
	int saved_errno = errno; /* callers log in error paths, then read errno */

	if (!log_enabled(level))
		return;
	l.pos = 0;
	l.cap = sizeof(l.buf) - LOG_TAIL_RESERVE_BYTES;
	l.fields_dropped = false;
	format_timestamp(timestamp);
	if (__atomic_load_n(&log_format, __ATOMIC_RELAXED) == LOG_FORMAT_JSON)
		build_json_line(&l, timestamp, level, msg, fields, nfields);
	else
		build_text_line(&l, timestamp, level, msg, fields, nfields);
	write_line(l.buf, l.pos);
	errno = saved_errno;
}

/* A new descriptor for a file sink, or -errno. */
static int open_log_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, LOG_FILE_MODE);

	return fd < 0 ? -errno : fd;
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
	log_min_level = level;
	__atomic_store_n(&log_format, format, __ATOMIC_RELAXED);
	return 0;
}

void log_close(void)
{
	int fd = log_fd;

	__atomic_store_n(&log_fd, STDERR_FILENO, __ATOMIC_RELEASE);
	if (log_fd_owned)
		close(fd);
	log_fd_owned = false;
}
