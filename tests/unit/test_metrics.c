/* Unit tests: the metrics exposition writer, histograms and the scrape
 * request parser (metrics.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "anyproxy/common.h"
#include "anyproxy/metrics.h"

/* The writer's output as a NUL-terminated string (static, for asserts). */
static const char *text(struct metrics_writer *w)
{
	static char out[8192];
	size_t n = buf_used(&w->out);

	assert_true(n < sizeof(out));
	memcpy(out, buf_head(&w->out), n);
	out[n] = '\0';
	return out;
}

static void test_counter_and_labels(void **state)
{
	struct metrics_writer w;
	const struct metrics_label l[] = { { "proxy", "socks5" }, { "group", "a\"b\\c\nd" } };

	metrics_writer_init(&w, 4096);
	metrics_family(&w, "x_total", METRICS_COUNTER, "Help with \\ and\nnewline.");
	metrics_sample(&w, "x_total", l, 2, 42);
	metrics_sample(&w, "x_total", NULL, 0, UINT64_MAX);
	assert_int_equal(metrics_writer_status(&w), 0);
	assert_string_equal(text(&w), "# HELP x_total Help with \\\\ and\\nnewline.\n"
				      "# TYPE x_total counter\n"
				      "x_total{proxy=\"socks5\",group=\"a\\\"b\\\\c\\nd\"} 42\n"
				      "x_total 18446744073709551615\n");
	metrics_writer_free(&w);
}

/* A label value made only of characters to escape doubles in length:
 * the line is written whole, in room reserved for that worst case. */
static void test_escaped_worst_case(void **state)
{
	struct metrics_writer w;
	char value[65], want[256];
	const struct metrics_label l[] = { { "v", value } };

	memset(value, '"', 64);
	value[64] = '\0';
	metrics_writer_init(&w, 4096);
	metrics_family(&w, "q", METRICS_GAUGE, "h");
	metrics_sample(&w, "q", l, 1, 7);
	assert_int_equal(metrics_writer_status(&w), 0);
	strcpy(want, "# HELP q h\n# TYPE q gauge\nq{v=\"");
	for (int i = 0; i < 64; i++)
		strcat(want, "\\\"");
	strcat(want, "\"} 7\n");
	assert_string_equal(text(&w), want);
	metrics_writer_free(&w);
}

/* One sample per worker, from a field of an array of worker structs. */
static void test_per_worker(void **state)
{
	struct worker {
		char pad[24];
		uint64_t streams;
	} workers[3] = { { .streams = 5 }, { .streams = 0 }, { .streams = 7 } };
	struct metrics_writer w;

	metrics_writer_init(&w, 4096);
	metrics_write_per_worker(&w, "s_total", "Streams.", &workers[0].streams, sizeof(workers[0]),
				 3);
	assert_int_equal(metrics_writer_status(&w), 0);
	assert_string_equal(text(&w), "# HELP s_total Streams.\n"
				      "# TYPE s_total counter\n"
				      "s_total{worker=\"0\"} 5\n"
				      "s_total{worker=\"1\"} 0\n"
				      "s_total{worker=\"2\"} 7\n");
	metrics_writer_free(&w);
}

static void test_histogram(void **state)
{
	struct metrics_histogram h = { 0 };
	struct metrics_writer w;
	const struct metrics_label l[] = { { "side", "tunnel" } };
	const char *t;

	metrics_observe_us(&h, 0);        /* le 0.0005 */
	metrics_observe_us(&h, 500);      /* le 0.0005: bounds are inclusive */
	metrics_observe_us(&h, 501);      /* le 0.001 */
	metrics_observe_us(&h, 2500000);  /* le 2.5 */
	metrics_observe_us(&h, 99000000); /* +Inf only */
	assert_int_equal(h.count, 5);
	assert_int_equal(h.buckets[0], 2);
	assert_int_equal(h.buckets[1], 1);
	assert_int_equal(h.buckets[METRICS_LATENCY_NBUCKETS], 1);
	metrics_writer_init(&w, 8192);
	metrics_family(&w, "d_seconds", METRICS_HISTOGRAM, "A duration.");
	metrics_write_histogram(&w, "d_seconds", l, 1, &h);
	assert_int_equal(metrics_writer_status(&w), 0);
	t = text(&w);
	assert_non_null(strstr(t, "# TYPE d_seconds histogram\n"));
	assert_non_null(strstr(t, "d_seconds_bucket{side=\"tunnel\",le=\"0.0005\"} 2\n"));
	assert_non_null(strstr(t, "d_seconds_bucket{side=\"tunnel\",le=\"0.001\"} 3\n"));
	assert_non_null(strstr(t, "d_seconds_bucket{side=\"tunnel\",le=\"2.5\"} 4\n"));
	assert_non_null(strstr(t, "d_seconds_bucket{side=\"tunnel\",le=\"10\"} 4\n"));
	assert_non_null(strstr(t, "d_seconds_bucket{side=\"tunnel\",le=\"+Inf\"} 5\n"));
	assert_non_null(strstr(t, "d_seconds_sum{side=\"tunnel\"} 101.501001\n"));
	assert_non_null(strstr(t, "d_seconds_count{side=\"tunnel\"} 5\n"));
	metrics_writer_free(&w);
	/* no labels: le alone */
	metrics_writer_init(&w, 8192);
	metrics_write_histogram(&w, "e_seconds", NULL, 0, &(struct metrics_histogram){ 0 });
	assert_non_null(strstr(text(&w), "e_seconds_bucket{le=\"1\"} 0\n"));
	assert_non_null(strstr(text(&w), "e_seconds_sum 0\n"));
	metrics_writer_free(&w);
}

static void test_bad_names_are_sticky(void **state)
{
	struct metrics_writer w;
	const struct metrics_label bad[] = { { "9x", "v" } };
	const struct metrics_label le[] = { { "le", "v" } };

	assert_true(metrics_name_valid("a:b_c9"));
	assert_false(metrics_name_valid("9a"));
	assert_false(metrics_name_valid("a-b"));
	assert_false(metrics_name_valid(""));
	assert_true(metrics_label_name_valid("group"));
	assert_false(metrics_label_name_valid("a:b"));
	assert_false(metrics_label_name_valid("__reserved"));
	metrics_writer_init(&w, 4096);
	metrics_sample(&w, "bad-name", NULL, 0, 1);
	assert_int_equal(metrics_writer_status(&w), -EINVAL);
	metrics_sample(&w, "good", NULL, 0, 1); /* sticky: nothing more */
	assert_int_equal(buf_used(&w.out), 0);
	metrics_writer_free(&w);
	metrics_writer_init(&w, 4096);
	metrics_sample(&w, "good", bad, 1, 1);
	assert_int_equal(metrics_writer_status(&w), -EINVAL);
	metrics_writer_free(&w);
	metrics_writer_init(&w, 4096);
	metrics_write_histogram(&w, "h", le, 1, &(struct metrics_histogram){ 0 });
	assert_int_equal(metrics_writer_status(&w), -EINVAL);
	metrics_writer_free(&w);
}

static void test_body_limit(void **state)
{
	struct metrics_writer w;
	int i;

	metrics_writer_init(&w, 64);
	for (i = 0; i < 10; i++)
		metrics_sample(&w, "some_metric_name", NULL, 0, 1234567);
	assert_int_equal(metrics_writer_status(&w), -ENOBUFS);
	assert_true(buf_used(&w.out) <= 64);
	metrics_writer_free(&w);
}

static void test_process_and_build_info(void **state)
{
	struct metrics_writer w;
	const char *t;

	metrics_writer_init(&w, 8192);
	metrics_write_build_info(&w, "anyproxy-test", "1.2.3", "wolfSSL 5", true);
	metrics_write_process(&w);
	assert_int_equal(metrics_writer_status(&w), 0);
	t = text(&w);
	assert_non_null(strstr(t, "anyproxy_build_info{program=\"anyproxy-test\",version=\"1.2.3\","
				  "tls=\"wolfSSL 5\",aesni=\"on\"} 1\n"));
	assert_non_null(strstr(t, "\nprocess_open_fds "));
	assert_non_null(strstr(t, "\nprocess_resident_memory_bytes "));
	metrics_writer_free(&w);
}

/* process_open_fds as a scrape shows it now */
static long open_fds_shown(void)
{
	struct metrics_writer w;
	const char *line;
	long n;

	metrics_writer_init(&w, 8192);
	metrics_write_process(&w);
	line = strstr(text(&w), "\nprocess_open_fds ");
	assert_non_null(line);
	n = strtol(line + strlen("\nprocess_open_fds "), NULL, 10);
	metrics_writer_free(&w);
	return n;
}

/* Exactly the descriptors open: 100 more, then the same again. */
static void test_open_fds_exact(void **state)
{
	int fds[100];
	long before = open_fds_shown();
	size_t i;

	assert_true(before >= 3);
	for (i = 0; i < ARRAY_SIZE(fds); i++) {
		fds[i] = dup(2);
		assert_true(fds[i] >= 0);
	}
	assert_int_equal(open_fds_shown(), before + 100);
	for (i = 0; i < ARRAY_SIZE(fds); i++)
		close(fds[i]);
	assert_int_equal(open_fds_shown(), before);
}

static int parse(const char *req, int *status, bool *head)
{
	return metrics_parse_request(req, strlen(req), status, head);
}

static void test_parse_request(void **state)
{
	int status;
	bool head;
	char big[METRICS_REQUEST_MAX_BYTES + 16];

	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &status, &head), 34);
	assert_int_equal(status, 200);
	assert_false(head);
	assert_int_equal(parse("GET /metrics?x=1 HTTP/1.0\n\n", &status, &head), 27);
	assert_int_equal(status, 200);
	assert_true(parse("HEAD /metrics HTTP/1.1\r\n\r\n", &status, &head) > 0);
	assert_int_equal(status, 200);
	assert_true(head);
	assert_true(parse("GET / HTTP/1.1\r\n\r\n", &status, &head) > 0);
	assert_int_equal(status, 404);
	assert_true(parse("GET /metricsx HTTP/1.1\r\n\r\n", &status, &head) > 0);
	assert_int_equal(status, 404);
	assert_true(parse("POST /metrics HTTP/1.1\r\n\r\n", &status, &head) > 0);
	assert_int_equal(status, 405);
	assert_false(head); /* a 405 has its body, whatever the method's length */
	/* not complete yet */
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n", &status, &head), 0);
	assert_int_equal(parse("GET /met", &status, &head), 0);
	/* malformed request lines */
	assert_int_equal(parse("GET  /metrics HTTP/1.1\r\n\r\n", &status, &head), -EPROTO);
	assert_int_equal(status, 400);
	assert_int_equal(parse("GET /metrics HTTP/2.0\r\n\r\n", &status, &head), -EPROTO);
	assert_int_equal(parse("GET /metrics\r\n\r\n", &status, &head), -EPROTO);
	assert_int_equal(parse("\r\n\r\n", &status, &head), -EPROTO);
	/* too large without an end */
	memset(big, 'a', sizeof(big));
	assert_int_equal(metrics_parse_request(big, METRICS_REQUEST_MAX_BYTES, &status, &head),
			 -EPROTO);
	assert_int_equal(status, 431);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counter_and_labels),
		cmocka_unit_test(test_escaped_worst_case),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_per_worker),
		cmocka_unit_test(test_bad_names_are_sticky),
		cmocka_unit_test(test_body_limit),
		cmocka_unit_test(test_process_and_build_info),
		cmocka_unit_test(test_open_fds_exact),
		cmocka_unit_test(test_parse_request),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
