/*
 * metrics.h — Prometheus metrics: latency histograms, the text exposition
 * writer (format 0.0.4), the scrape request parser, and the scrape endpoint
 * served by the ring (metrics_server).
 *
 * The programs keep their counters in their own structs (the gateway's
 * src/gateway/stats.c, the agent's struct agent_stats); at scrape time
 * they walk them and write each family through a struct metrics_writer.
 * Nothing here knows a metric of either program.
 *
 * Exposition (https://prometheus.io/docs/instrumenting/exposition_formats/):
 *
 *   # HELP name text          text: backslash -> "\\", LF -> "\n"
 *   # TYPE name counter|gauge|histogram
 *   name{label="value",...} 123
 *
 * Metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]*; a label value escapes backslash, double quote and
 * LF. A name that does not match is a bug in the caller: the writer refuses
 * it with -EINVAL (sticky) so a test sees it, rather than sending a body a
 * scraper rejects. A histogram is written as NAME_bucket{le="..."} with
 * cumulative counts ending at le="+Inf", then NAME_sum (seconds) and
 * NAME_count.
 *
 * The writer's errors are sticky: after the first failure (body past its
 * maximum, no memory, an invalid name) every call is a no-op and
 * metrics_writer_status() says what went wrong; the endpoint then answers
 * 500 rather than a truncated body.
 */
#ifndef ANYPROXY_METRICS_H
#define ANYPROXY_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anyproxy/buf.h"
#include "anyproxy/config.h"
#include "anyproxy/ring.h"

/* The largest body a scrape may produce; past it the scrape fails (500).
 * Series are bounded by the registry's limits, so this is far away. */
#define METRICS_BODY_MAX_BYTES ((size_t)16 << 20)
/* A scrape request (request line and headers) larger than this is refused
 * with 431 and the connection closed. */
#define METRICS_REQUEST_MAX_BYTES 4096
/* Scrape connections served at once; more wait in the listen backlog. */
#define METRICS_MAX_CONNECTIONS 8
#define METRICS_LISTEN_BACKLOG 16
/* A scrape connection must send its request and take the reply within this. */
#define METRICS_DEADLINE_MS 10000
#define METRICS_ACCEPT_RETRY_MS 100

/* The path served; any other answers 404. */
#define METRICS_PATH "/metrics"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum metrics_type {
	METRICS_COUNTER,
	METRICS_GAUGE,
	METRICS_HISTOGRAM,
};

struct metrics_label {
	const char *name;
	const char *value; /* any bytes but NUL; escaped on output */
};

/* ---- histograms --------------------------------------------------------- */

/* Latency buckets, upper bounds in microseconds (exposed in seconds):
 * 0.5 ms .. 10 s, roughly 1-2.5-5 per decade. */
#define METRICS_LATENCY_NBUCKETS 14
extern const uint64_t metrics_latency_bounds_us[METRICS_LATENCY_NBUCKETS];

/* Counts per bucket (not cumulative; the last one is above every bound),
 * the sum of the observations and their number. Zeroed = empty. */
struct metrics_histogram {
	uint64_t buckets[METRICS_LATENCY_NBUCKETS + 1];
	uint64_t sum_us;
	uint64_t count;
};

void metrics_observe_us(struct metrics_histogram *h, uint64_t us);

/* ---- exposition writer -------------------------------------------------- */

struct metrics_writer {
	struct buf out;
	int error; /* 0 or the first -errno; sticky */
	/* the name metrics_family checked last: its samples, which pass the
	 * same pointer, are not checked again (thousands with many agents) */
	const char *family;
};

void metrics_writer_init(struct metrics_writer *w, size_t max_bytes);
void metrics_writer_free(struct metrics_writer *w);
/* 0, or the first error: -ENOBUFS (past max_bytes), -ENOMEM, -EINVAL (a
 * name that is not a metric or label name). */
int metrics_writer_status(const struct metrics_writer *w);

/* "# HELP" and "# TYPE" lines of a family: once, before its samples. */
void metrics_family(struct metrics_writer *w, const char *name, enum metrics_type type,
		    const char *help);
/* One sample of a counter or gauge. */
void metrics_sample(struct metrics_writer *w, const char *name, const struct metrics_label *labels,
		    size_t nlabels, uint64_t value);
/* A family of one series without labels: its HELP and TYPE lines and the
 * sample. */
void metrics_write_value(struct metrics_writer *w, const char *name, enum metrics_type type,
			 const char *help, uint64_t value);
/* A counter family with one sample per worker, {worker="0"} up: n values,
 * the first at first, each next one stride bytes further (a field of an
 * array of worker structs), read relaxed (workers update them). */
void metrics_write_per_worker(struct metrics_writer *w, const char *name, const char *help,
			      const uint64_t *first, size_t stride, unsigned n);
/* The series of one histogram (NAME_bucket with le, NAME_sum, NAME_count);
 * labels must not contain "le". */
void metrics_write_histogram(struct metrics_writer *w, const char *name,
			     const struct metrics_label *labels, size_t nlabels,
			     const struct metrics_histogram *h);

/* Families every program exposes: anyproxy_build_info{program, version,
 * tls, aesni} 1, and the process's open descriptors, descriptor limit and
 * resident memory (process_open_fds, process_max_fds,
 * process_resident_memory_bytes), read from /proc at scrape time (memory-
 * backed files: no disk I/O). A /proc read that fails leaves its family out. */
void metrics_write_build_info(struct metrics_writer *w, const char *program, const char *version,
			      const char *tls, bool aesni);
void metrics_write_process(struct metrics_writer *w);

bool metrics_name_valid(const char *name);
bool metrics_label_name_valid(const char *name);

/* ---- scrape request ----------------------------------------------------- */

/*
 * Parse an HTTP/1.x request head from buf[0 .. len): the request line and
 * headers up to the empty line (CRLF or LF line ends). Returns the bytes of
 * the head, 0 when it is not complete yet (and len is below
 * METRICS_REQUEST_MAX_BYTES), or -EPROTO. *status is the HTTP status to
 * answer: 200 for GET or HEAD of METRICS_PATH (a query string is ignored),
 * 404 for another path, 405 for another method, 400 for a malformed
 * request line, 431 for a head past METRICS_REQUEST_MAX_BYTES (with
 * -EPROTO); *head_only is set for HEAD. Pure: no I/O, no allocation.
 */
int metrics_parse_request(const char *buf, size_t len, int *status, bool *head_only);

/* ---- scrape endpoint (on the ring) -------------------------------------- */

/* Write the program's families into w. The return value is ignored: the
 * writer's status decides between 200 and 500. */
typedef void (*metrics_collect_cb)(struct metrics_writer *w, void *arg);

struct metrics_conn;

/*
 * A tiny HTTP listener on the program's ring: one accept at a time, at most
 * METRICS_MAX_CONNECTIONS connections (accepting stops at the bound and
 * resumes as one ends), each reading one request within
 * METRICS_DEADLINE_MS, answering it and closing. The body is built in
 * memory when the request is complete and sent by the ring; nothing
 * blocks. Scrapes answered are counted in `scrapes`.
 */
struct metrics_server {
	struct ring *ring;
	int fd;
	struct ring_op accept_op;
	bool accept_armed;
	struct timer retry;
	unsigned nconns;
	struct metrics_conn *conns; /* a utlist DL list */
	metrics_collect_cb collect;
	void *arg;
	uint64_t scrapes;
};

/* Listen on addr ([metrics] listen_addr) and start accepting; logs "Metrics
 * listening" or, on failure, an ERROR naming why. An unset addr leaves the
 * server off (zeroed) and returns 0. 0 or -errno. */
int metrics_server_open(struct metrics_server *s, struct ring *r, const struct config_addr *addr,
			metrics_collect_cb collect, void *arg);
/* Stop listening and end the open connections (shutdown); safe on a
 * server never opened (zeroed, fd -1) and when called twice. */
void metrics_server_close(struct metrics_server *s);
/* After the ring has stopped: free the connections whose completions will
 * never come. */
void metrics_server_destroy(struct metrics_server *s);

#endif
