/*
 * log.h — levelled, structured logging: logfmt-style text (default) or JSON,
 * to stderr, stdout or a file.
 *
 *   log_info("Client connected", LF_S("client_id", id), LF_S("group_id", g));
 * text: 2026-11-25T17:46:18.123Z INFO Client connected client_id=a group_id=b
 * json: {"time":"...","level":"info","msg":"Client connected","client_id":"a",...}
 *
 * Every call carries at least one field (what the program was doing). Values
 * are escaped: a value with spaces, quotes, '=' or control bytes is quoted in
 * text and escaped in JSON, so user-controlled strings cannot forge lines.
 * Never pass a password, a key or a token as a field.
 *
 * Writing never blocks a loop. A line is formatted at the call (its time is
 * the time of the event), then:
 * - in a thread that batches (log_batch_begin: a daemon's loop thread while
 *   ring_run runs), it joins the thread's queue (LOG_BATCH_BYTES in log.c),
 *   which the loop's before-wait hook hands to the sink once per iteration
 *   (log_flush), without waiting for a slow reader: what the sink does not
 *   take stays queued for the next turn. A line that finds the queue full is
 *   dropped and counted (log_dropped_lines); once the queue has room again a
 *   WARN line "Log lines dropped lines=N" marks the gap where it happened.
 *   An ERROR line is flushed at once (still without waiting), as it may be
 *   the last the process says; before abort() call log_flush_wait().
 * - anywhere else (start-up, shut-down, helper threads such as the
 *   resolver's) it is written at once with one write(2), blocking, atomic
 *   for a pipe since lines stay under PIPE_BUF.
 * Nothing queued is lost at exit: log_batch_end, log_close and exit() write
 * what is left. A crash (a signal that kills) loses at most the lines of the
 * iteration it interrupts. Batch writes carry whole lines; to a pipe or a
 * socket at most PIPE_BUF bytes each, so other writers' lines never land
 * inside ours.
 */
#ifndef ANYPROXY_LOG_H
#define ANYPROXY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anyproxy/common.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

enum log_field_type { LOG_FIELD_STR, LOG_FIELD_INT, LOG_FIELD_UINT };

struct log_field {
	const char *key;
	enum log_field_type type;
	union {
		const char *s;
		long long i;
		unsigned long long u;
	};
};

#define LF_S(k, v) ((struct log_field){ .key = (k), .type = LOG_FIELD_STR, .s = (v) })
#define LF_I(k, v) ((struct log_field){ .key = (k), .type = LOG_FIELD_INT, .i = (long long)(v) })
#define LF_U(k, v) \
	((struct log_field){ .key = (k), .type = LOG_FIELD_UINT, .u = (unsigned long long)(v) })

extern enum log_level log_min_level;

static inline bool log_enabled(enum log_level level)
{
	return level >= log_min_level;
}

void log_emit(enum log_level level, const char *msg, const struct log_field *fields,
	      size_t nfields);

#define log_at(level, msg, ...)                                            \
	do {                                                               \
		if (log_enabled(level)) {                                  \
			const struct log_field log_f_[] = { __VA_ARGS__ }; \
			log_emit(level, msg, log_f_, ARRAY_SIZE(log_f_));  \
		}                                                          \
	} while (0)

#define log_debug(msg, ...) log_at(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...) log_at(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_at(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_at(LOG_ERROR, msg, __VA_ARGS__)

/*
 * Configure the sink. output: "stderr", "stdout" or a file path (opened for
 * append, created 0640). May be called again (SIGHUP reload): the old file is
 * closed only after the new one opened. Lines the calling thread queued
 * go to the old sink if it takes them now, else to the new one. Returns 0
 * or -errno.
 */
int log_setup(enum log_level level, int format /* enum log_format */, const char *output);
/* Write what the calling thread queued, then go back to stderr. */
void log_close(void);

/*
 * Batching, for the thread that runs a loop. begin: from now on the calling
 * thread's lines queue (0, -EBUSY if it already batches, -ENOMEM). flush:
 * write what the calling thread queued without waiting for the sink; returns
 * the bytes still queued (0: all written; else the sink is full and a later
 * flush must follow). flush_wait: write all of it, waiting as long as the
 * sink needs (exit and abort paths). end: flush_wait, then write at once
 * again. All three do nothing in a thread that does not batch.
 */
int log_batch_begin(void);
size_t log_flush(void);
void log_flush_wait(void);
void log_batch_end(void);
/* Lines dropped since start because a queue was full (any thread). */
uint64_t log_dropped_lines(void);

/*
 * A line that a flood would repeat once per connection (a refusal at a
 * limit) is written at most once per LOG_FLOOD_PERIOD_MS: log_rate_allow()
 * says whether this occurrence gets its line. The caller's line carries its
 * running total, so the occurrences without a line are still counted. A
 * zeroed struct log_rate allows the first occurrence.
 */
#define LOG_FLOOD_PERIOD_MS 1000

struct log_rate {
	uint64_t last_ms; /* when the last allowed line was written */
	bool used;        /* a line was allowed before */
};

bool log_rate_allow(struct log_rate *rate, uint64_t now_ms);

/* "debug"/"info"/"warn"/"error" <-> level; parse returns -EINVAL if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level level);

/* Escape helpers, exposed for tests and for apctl's JSON output:
 * write value into buf as a logfmt value / JSON string body; always
 * NUL-terminates; returns the length written (truncated to fit). */
size_t log_escape_logfmt(char *buf, size_t len, const char *value);
size_t log_escape_json(char *buf, size_t len, const char *value);

#endif
