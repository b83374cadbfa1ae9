/*
 * test_apctl_print.c — apctl's output (tools/apctl/print.c): golden strings
 * for aligned, key-value and JSON output of parsed replies, hostile values
 * included.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "anyproxy/table.h"
#include "print.h"

static void parse_ok(const char *reply, struct table *t)
{
	char err[256] = "";

	assert_int_equal(table_parse(reply, strlen(reply), t, err, sizeof(err)), 0);
}

/* Runs a print function into a string. */
static char *capture(void (*print)(FILE *, const struct table *), const struct table *t)
{
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);

	assert_non_null(out);
	print(out, t);
	assert_int_equal(fclose(out), 0);
	return text;
}

static char *capture_json(const struct table *t, bool single)
{
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);

	assert_non_null(out);
	apctl_print_json(out, t, single);
	assert_int_equal(fclose(out), 0);
	return text;
}

static void assert_output(char *text, const char *expected)
{
	assert_string_equal(text, expected);
	free(text);
}

/* ---- an empty reply --------------------------------------------------------- */

static void test_empty_table(void **state)
{
	struct table t;

	parse_ok("OK\ngroup_id:s\tclients:n\ttunnels:n\tstreams_active:n\n", &t);
	assert_output(capture(apctl_print_aligned, &t),
		      "GROUP_ID  CLIENTS  TUNNELS  STREAMS_ACTIVE\n");
	assert_output(capture_json(&t, false), "[]\n");
	assert_output(capture_json(&t, true), "null\n");
	table_free(&t);
}

/* ---- human output ----------------------------------------------------------- */

static const char clients_reply[] =
	"OK\n"
	"client_id:s\tgroup_id:s\ttunnels:n\tremote_addr:s\tconnected_since:s\t"
	"streams_active:n\tstreams_total:n\tbytes_in:n\tbytes_out:n\n"
	"edge-1\tprod\t2\t10.0.0.5:41234\t2026-01-02T03:04:05Z\t3\t1234\t1048576\t0\n"
	"lab\t\t1\t[::1]:5000\t2026-01-02T03:04:06Z\t0\t7\t12\t34\n";

static void test_aligned_clients(void **state)
{
	struct table t;

	parse_ok(clients_reply, &t);
	assert_output(capture(apctl_print_aligned, &t),
		      "CLIENT_ID  GROUP_ID   TUNNELS  REMOTE_ADDR     CONNECTED_SINCE       "
		      "STREAMS_ACTIVE  STREAMS_TOTAL  BYTES_IN  BYTES_OUT\n"
		      "edge-1     prod             2  10.0.0.5:41234  2026-01-02T03:04:05Z         "
		      "      3           1234   1048576          0\n"
		      "lab        (default)        1  [::1]:5000      2026-01-02T03:04:06Z         "
		      "      0              7        12         34\n");
	table_free(&t);
}

/* An empty suspect value (no suspect tunnel) shows as "-" in human output,
 * stays "" in JSON; a list of replica indices shows as it is. */
static void test_suspect_column(void **state)
{
	static const char reply[] = "OK\nclient_id:s\tsuspect:s\n"
				    "a\t\n"
				    "b\t0,2\n";
	struct table t;

	parse_ok(reply, &t);
	assert_output(capture(apctl_print_aligned, &t), "CLIENT_ID  SUSPECT\n"
							"a          -\n"
							"b          0,2\n");
	assert_output(capture_json(&t, false), "[\n"
					       "  {\"client_id\":\"a\",\"suspect\":\"\"},\n"
					       "  {\"client_id\":\"b\",\"suspect\":\"0,2\"}\n"
					       "]\n");
	table_free(&t);
}

static void test_aligned_hostile_values(void **state)
{
	struct table t;

	/* Escapes and multi-byte characters keep the columns straight; the
	 * last column, text, gets no trailing blanks. */
	parse_ok("OK\nn:n\tname:s\tnote:s\n"
		 "7\ta\\tb\tcaf\xc3\xa9\n"
		 "12345\t\x1b[0m\t\xff\n"
		 "0\t\xe2\x82\xac\tx\\\\y\n",
		 &t);
	assert_output(capture(apctl_print_aligned, &t), "    N  NAME     NOTE\n"
							"    7  a\\tb     caf\xc3\xa9\n"
							"12345  \\x1b[0m  \\xff\n"
							"    0  \xe2\x82\xac        x\\\\y\n");
	table_free(&t);
}

static void test_kv_client(void **state)
{
	struct table t;

	parse_ok(clients_reply, &t);
	assert_output(capture(apctl_print_kv, &t), "client_id:       edge-1\n"
						   "group_id:        prod\n"
						   "tunnels:         2\n"
						   "remote_addr:     10.0.0.5:41234\n"
						   "connected_since: 2026-01-02T03:04:05Z\n"
						   "streams_active:  3\n"
						   "streams_total:   1234\n"
						   "bytes_in:        1048576\n"
						   "bytes_out:       0\n"
						   "\n"
						   "client_id:       lab\n"
						   "group_id:        (default)\n"
						   "tunnels:         1\n"
						   "remote_addr:     [::1]:5000\n"
						   "connected_since: 2026-01-02T03:04:06Z\n"
						   "streams_active:  0\n"
						   "streams_total:   7\n"
						   "bytes_in:        12\n"
						   "bytes_out:       34\n");
	table_free(&t);
}

static void test_print_value(void **state)
{
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);

	assert_non_null(out);
	apctl_print_value(out, "no such client: a\tb\x07\xe2\x82");
	assert_int_equal(fclose(out), 0);
	assert_string_equal(text, "no such client: a\\tb\\x07\\xe2\\x82");
	free(text);
}

/* ---- JSON output ------------------------------------------------------------ */

static void test_json_clients(void **state)
{
	struct table t;

	parse_ok(clients_reply, &t);
	assert_output(capture_json(&t, false),
		      "[\n"
		      "  {\"client_id\":\"edge-1\",\"group_id\":\"prod\",\"tunnels\":2,"
		      "\"remote_addr\":\"10.0.0.5:41234\","
		      "\"connected_since\":\"2026-01-02T03:04:05Z\",\"streams_active\":3,"
		      "\"streams_total\":1234,\"bytes_in\":1048576,\"bytes_out\":0},\n"
		      "  {\"client_id\":\"lab\",\"group_id\":\"\",\"tunnels\":1,"
		      "\"remote_addr\":\"[::1]:5000\","
		      "\"connected_since\":\"2026-01-02T03:04:06Z\",\"streams_active\":0,"
		      "\"streams_total\":7,\"bytes_in\":12,\"bytes_out\":34}\n"
		      "]\n");
	assert_output(capture_json(&t, true),
		      "{\"client_id\":\"edge-1\",\"group_id\":\"prod\",\"tunnels\":2,"
		      "\"remote_addr\":\"10.0.0.5:41234\","
		      "\"connected_since\":\"2026-01-02T03:04:05Z\",\"streams_active\":3,"
		      "\"streams_total\":1234,\"bytes_in\":1048576,\"bytes_out\":0}\n");
	table_free(&t);
}

static void test_json_escapes(void **state)
{
	struct table t;

	parse_ok("OK\nv:s\n"
		 "q\"b\\\\s/\\t\\n\\r\x01\x1f\x7f\n"
		 "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\n"
		 /* stray continuation, overlong, surrogate, past U+10FFFF,
		  * cut sequence */
		 "\x80|\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xe2\x82\n",
		 &t);
	assert_output(capture_json(&t, false),
		      "[\n"
		      "  {\"v\":\"q\\\"b\\\\s/\\t\\n\\r\\u0001\\u001f\\u007f\"},\n"
		      "  {\"v\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"},\n"
		      "  {\"v\":\"\\u0080|\\u00c0\\u00af|\\u00ed\\u00a0\\u0080|"
		      "\\u00f4\\u0090\\u0080\\u0080|\\u00e2\\u0082\"}\n"
		      "]\n");
	table_free(&t);
}

/* b columns: text like a string column (left-aligned), JSON unquoted; the
 * one-line array watch --json uses. */
static void test_bool_columns_and_json_line(void **state)
{
	struct table t;

	parse_ok("OK\nclient_id:s\tdrained:b\tstreams_active:n\n"
		 "a\ttrue\t12\n"
		 "bb\tfalse\t0\n",
		 &t);
	assert_output(capture(apctl_print_aligned, &t), "CLIENT_ID  DRAINED  STREAMS_ACTIVE\n"
							"a          true                 12\n"
							"bb         false                 0\n");
	assert_output(capture_json(&t, true),
		      "{\"client_id\":\"a\",\"drained\":true,\"streams_active\":12}\n");
	assert_output(capture(apctl_print_json_line, &t),
		      "[{\"client_id\":\"a\",\"drained\":true,\"streams_active\":12},"
		      "{\"client_id\":\"bb\",\"drained\":false,\"streams_active\":0}]");
	table_free(&t);
	parse_ok("OK\nclient_id:s\tdrained:b\n", &t);
	assert_output(capture(apctl_print_json_line, &t), "[]");
	table_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_table),
		cmocka_unit_test(test_aligned_clients),
		cmocka_unit_test(test_aligned_hostile_values),
		cmocka_unit_test(test_suspect_column),
		cmocka_unit_test(test_kv_client),
		cmocka_unit_test(test_print_value),
		cmocka_unit_test(test_json_clients),
		cmocka_unit_test(test_json_escapes),
		cmocka_unit_test(test_bool_columns_and_json_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
