/*
 * test_table.c — the control protocol: writer -> parser round trips with
 * hostile values, parser rejections, writer limits and misuse, the request
 * line and the command table. (apctl's printers: test_apctl_print.c.)
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

#define ERR_BYTES 256

/* Values a gateway might have to carry: separators, escapes, nothing, bytes
 * that are not UTF-8, a terminal escape sequence. */
static const char *const hostile[] = {
	"tab\there",        "line\nbreak\r\n",
	"back\\slash\\",    "",
	"\\t is not a tab", "\xff\xfe not utf-8 \xc0\xaf",
	"\x1b[31mred",      "caf\xc3\xa9 \xe2\x82\xac",
};

static const char *const mixed_columns[] = { "name:s", "count:n", "group_id:s" };

/* The reply the writer builds, as a NUL-terminated copy for comparisons. */
static char *writer_text(const struct table_writer *w)
{
	char *s = malloc(w->len + 1);

	assert_non_null(s);
	memcpy(s, w->buf, w->len);
	s[w->len] = '\0';
	return s;
}

static void write_mixed_row(struct table_writer *w, const char *name, uint64_t count,
			    const char *group)
{
	assert_int_equal(table_write_row_begin(w), 0);
	assert_int_equal(table_write_str(w, name), 0);
	assert_int_equal(table_write_uint(w, count), 0);
	assert_int_equal(table_write_str(w, group), 0);
	assert_int_equal(table_write_row_end(w), 0);
}

static void parse_ok(const char *reply, struct table *t)
{
	char err[ERR_BYTES] = "";

	assert_int_equal(table_parse(reply, strlen(reply), t, err, sizeof(err)), 0);
}

/* Asserts that reply is rejected with code and that err contains needle. */
static void parse_fails(const char *reply, size_t len, int code, const char *needle)
{
	char err[ERR_BYTES] = "";
	struct table t;

	assert_int_equal(table_parse(reply, len, &t, err, sizeof(err)), code);
	if (!strstr(err, needle))
		fail_msg("error \"%s\" lacks \"%s\"", err, needle);
	assert_int_equal(t.nrows, 0);
	assert_null(t.storage);
}

static void reject(const char *reply, const char *needle)
{
	parse_fails(reply, strlen(reply), -EPROTO, needle);
}

/* ---- round trip ------------------------------------------------------------ */

static void test_round_trip_hostile_values(void **state)
{
	struct table_writer w;
	struct table t;
	size_t i;

	table_writer_init(&w, TABLE_REPLY_MAX_BYTES);
	assert_int_equal(table_write_header(&w, mixed_columns, ARRAY_SIZE(mixed_columns)), 0);
	for (i = 0; i < ARRAY_SIZE(hostile); i++)
		write_mixed_row(&w, hostile[i], i, hostile[ARRAY_SIZE(hostile) - 1 - i]);
	write_mixed_row(&w, "max", UINT64_MAX, "");

	/* Every record stays on its own line. */
	{
		size_t lines = 0;

		for (i = 0; i < w.len; i++)
			lines += w.buf[i] == '\n';
		assert_int_equal(lines, 2 + ARRAY_SIZE(hostile) + 1);
	}

	assert_int_equal(table_parse(w.buf, w.len, &t, NULL, 0), 0);
	assert_int_equal(t.ncols, 3);
	assert_string_equal(t.cols[0].name, "name");
	assert_int_equal(t.cols[0].type, TABLE_STRING);
	assert_string_equal(t.cols[1].name, "count");
	assert_int_equal(t.cols[1].type, TABLE_UINT);
	assert_int_equal(t.nrows, ARRAY_SIZE(hostile) + 1);
	for (i = 0; i < ARRAY_SIZE(hostile); i++) {
		char count[32];

		snprintf(count, sizeof(count), "%zu", i);
		assert_string_equal(table_cell(&t, i, 0), hostile[i]);
		assert_string_equal(table_cell(&t, i, 1), count);
		assert_string_equal(table_cell(&t, i, 2), hostile[ARRAY_SIZE(hostile) - 1 - i]);
	}
	assert_string_equal(table_cell(&t, i, 1), "18446744073709551615");
	assert_string_equal(table_cell(&t, i, 2), "");
	table_free(&t);
	table_writer_free(&w);
}

static void test_round_trip_wire_form(void **state)
{
	static const char *const one[] = { "v:s" };
	struct table_writer w;
	char *text;

	table_writer_init(&w, TABLE_REPLY_MAX_BYTES);
	assert_int_equal(table_write_header(&w, one, 1), 0);
	assert_int_equal(table_write_row_begin(&w), 0);
	assert_int_equal(table_write_str(&w, "a\\b\tc\nd\re"), 0);
	assert_int_equal(table_write_row_end(&w), 0);
	assert_int_equal(table_write_row_begin(&w), 0);
	assert_int_equal(table_write_str(&w, ""), 0);
	assert_int_equal(table_write_row_end(&w), 0);
	text = writer_text(&w);
	assert_string_equal(text, "OK\nv:s\na\\\\b\\tc\\nd\\re\n\n");
	free(text);
	table_writer_free(&w);
}

static void test_empty_table(void **state)
{
	struct table_writer w;
	struct table t;

	table_writer_init(&w, TABLE_REPLY_MAX_BYTES);
	assert_int_equal(table_write_header(&w, table_group_columns, TABLE_GROUP_NCOLUMNS), 0);
	assert_int_equal(table_parse(w.buf, w.len, &t, NULL, 0), 0);
	assert_int_equal(t.ncols, TABLE_GROUP_NCOLUMNS);
	assert_int_equal(t.nrows, 0);
	table_free(&t);
	table_writer_free(&w);
}

/* ---- parser rejections ---------------------------------------------------- */

static void test_parse_rejects_field_count(void **state)
{
	reject("OK\na:s\tb:n\nx\n", "line 3: 1 fields, the header has 2");
	reject("OK\na:s\tb:n\nx\t1\ty\n", "line 3: 3 fields");
	reject("OK\na:s\tb:n\nx\t1\nx\n", "line 4: 1 fields");
}

static void test_parse_rejects_bad_escape(void **state)
{
	reject("OK\na:s\nx\\q\n", "line 3, column a: bad escape");
	reject("OK\na:s\nx\\\n", "bad escape");
	reject("OK\na:s\tb:s\nx\\\ty\n", "bad escape");
	reject("ERR oops\\\n", "bad escape in the ERR message");
}

static void test_parse_rejects_bad_header(void **state)
{
	reject("OK\na:x\n", "line 2, column 1: expected name:s, name:n or name:b");
	reject("OK\na:s\tb\n", "line 2, column 2");
	reject("OK\na:ss\n", "column 1");
	reject("OK\n:s\n", "column 1");
	reject("OK\nsp ace:s\n", "column 1");
	reject("OK\n\n", "column 1");
	reject("OK\na:s\ta:n\n", "column a appears twice");
	reject("OK\n", "line 2: missing header line");
}

static void test_parse_rejects_bad_numbers(void **state)
{
	static const char *const bad[] = {
		"12a",
		"-1",
		"+1",
		"01",
		"",
		" 1",
		"1.5",
		"0x10",
		"18446744073709551616",
		"99999999999999999999",
		"100000000000000000000",
		"1\\n",
	};
	char reply[128];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		snprintf(reply, sizeof(reply), "OK\nn:n\n%s\n", bad[i]);
		reject(reply, "line 3, column n: not an unsigned");
	}
}

static void test_parse_accepts_number_edges(void **state)
{
	struct table t;

	parse_ok("OK\nn:n\n0\n18446744073709551615\n10000000000000000000\n", &t);
	assert_int_equal(t.nrows, 3);
	assert_string_equal(table_cell(&t, 0, 0), "0");
	assert_string_equal(table_cell(&t, 1, 0), "18446744073709551615");
	table_free(&t);
}

/* b columns: exactly "true" or "false", both ways. */
static void test_bool_round_trip_and_rejects(void **state)
{
	static const char *const bad[] = { "",    "True",  "TRUE", "1",     "0",
					   "yes", "truee", "fals", " true", "false\\n" };
	static const char *const cols[] = { "on:b", "n:n" };
	struct table_writer w;
	char reply[64], *text;
	struct table t;
	size_t i;

	table_writer_init(&w, TABLE_REPLY_MAX_BYTES);
	assert_int_equal(table_write_header(&w, cols, ARRAY_SIZE(cols)), 0);
	assert_int_equal(table_write_row_begin(&w), 0);
	/* a value of the wrong type for its column */
	assert_int_equal(table_write_uint(&w, 1), -EINVAL);
	assert_int_equal(table_write_str(&w, "true"), -EINVAL);
	assert_int_equal(table_write_bool(&w, true), 0);
	assert_int_equal(table_write_bool(&w, false), -EINVAL);
	assert_int_equal(table_write_uint(&w, 7), 0);
	assert_int_equal(table_write_row_end(&w), 0);
	assert_int_equal(table_write_row_begin(&w), 0);
	assert_int_equal(table_write_bool(&w, false), 0);
	assert_int_equal(table_write_uint(&w, 0), 0);
	assert_int_equal(table_write_row_end(&w), 0);
	text = writer_text(&w);
	assert_string_equal(text, "OK\non:b\tn:n\ntrue\t7\nfalse\t0\n");
	free(text);
	assert_int_equal(table_parse(w.buf, w.len, &t, NULL, 0), 0);
	assert_int_equal(t.cols[0].type, TABLE_BOOL);
	assert_string_equal(table_cell(&t, 0, 0), "true");
	assert_string_equal(table_cell(&t, 1, 0), "false");
	table_free(&t);
	table_writer_free(&w);

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		snprintf(reply, sizeof(reply), "OK\nb:b\n%s\n", bad[i]);
		reject(reply, "line 3, column b: not true or false");
	}
}

static void test_parse_rejects_framing(void **state)
{
	reject("", "empty reply");
	reject("OK\na:s\nx", "truncated");
	reject("OK", "truncated");
	reject("HELLO\n", "line 1: expected OK or ERR");
	reject("ok\na:s\n", "line 1: expected OK or ERR");
	reject("ERRx\n", "line 1: expected OK or ERR");
	reject("ERR bad\nmore\n", "data after ERR");
	parse_fails("OK\na:s\nx\0y\n", 11, -EPROTO, "NUL byte");
}

static void test_parse_err_reply(void **state)
{
	static const char *const unspecified[] = { "ERR\n", "ERR \n" };
	const char *reply = "ERR no such client: a\\tb\\\\c\n";
	size_t i;

	parse_fails(reply, strlen(reply), -EREMOTEIO, "no such client: a\tb\\c");
	for (i = 0; i < ARRAY_SIZE(unspecified); i++)
		parse_fails(unspecified[i], strlen(unspecified[i]), -EREMOTEIO,
			    "unspecified error");
}

static void test_parse_err_truncates_to_errlen(void **state)
{
	const char *reply = "ERR a long message\n";
	char err[7];
	struct table t;

	assert_int_equal(table_parse(reply, strlen(reply), &t, err, sizeof(err)), -EREMOTEIO);
	assert_string_equal(err, "a long");
}

/* ---- writer limits and misuse --------------------------------------------- */

static void test_writer_enforces_max(void **state)
{
	static const char *const one[] = { "v:s" };
	const char *header = "OK\nv:s\n";
	struct table_writer w;
	char *text;

	table_writer_init(&w, strlen(header) + 4);
	assert_int_equal(table_write_header(&w, one, 1), 0);
	assert_int_equal(table_write_row_begin(&w), 0);
	/* "abcd" plus the LF would be 5 bytes: the value fits, the row not. */
	assert_int_equal(table_write_str(&w, "abcd"), 0);
	assert_int_equal(table_write_row_end(&w), -ENOSPC);
	assert_int_equal(w.len, strlen(header) + 4);
	table_writer_free(&w);

	table_writer_init(&w, strlen(header) + 4);
	assert_int_equal(table_write_header(&w, one, 1), 0);
	assert_int_equal(table_write_row_begin(&w), 0);
	/* Four bytes would fit, but escaped they are five: nothing is
	 * appended. */
	assert_int_equal(table_write_str(&w, "a\tbc"), -ENOSPC);
	assert_int_equal(w.len, strlen(header));
	assert_true(w.len <= w.max_bytes && w.cap <= w.max_bytes);

	/* The reply is replaced by an ERR line that does fit. */
	assert_int_equal(table_write_error(&w, "full"), 0);
	text = writer_text(&w);
	assert_string_equal(text, "ERR full\n");
	free(text);
	assert_int_equal(table_write_error(&w, "much too long"), -ENOSPC);
	table_writer_free(&w);

	table_writer_init(&w, 2);
	assert_int_equal(table_write_header(&w, one, 1), -ENOSPC);
	assert_int_equal(w.len, 0);
	table_writer_free(&w);
}

static void test_writer_grows_past_initial_buffer(void **state)
{
	static const char *const one[] = { "v:n" };
	struct table_writer w;
	struct table t;
	uint64_t i;

	table_writer_init(&w, TABLE_REPLY_MAX_BYTES);
	assert_int_equal(table_write_header(&w, one, 1), 0);
	for (i = 0; i < 10000; i++) {
		assert_int_equal(table_write_row_begin(&w), 0);
		assert_int_equal(table_write_uint(&w, i * 1000003), 0);
		assert_int_equal(table_write_row_end(&w), 0);
	}
	assert_int_equal(table_parse(w.buf, w.len, &t, NULL, 0), 0);
	assert_int_equal(t.nrows, 10000);
	assert_string_equal(table_cell(&t, 9999, 0), "9999029997");
	table_free(&t);
	table_writer_free(&w);
}

static void test_writer_rejects_misuse(void **state)
{
	static const char *const bad_type[] = { "a:x" };
	static const char *const bad_name[] = { "a-b:s" };
	static const char *const twice[] = { "a:s", "b:n", "a:n" };
	struct table_writer w;

	table_writer_init(&w, TABLE_REPLY_MAX_BYTES);
	assert_int_equal(table_write_row_begin(&w), -EINVAL);
	assert_int_equal(table_write_str(&w, "x"), -EINVAL);
	assert_int_equal(table_write_header(&w, bad_type, 1), -EINVAL);
	assert_int_equal(table_write_header(&w, bad_name, 1), -EINVAL);
	assert_int_equal(table_write_header(&w, twice, 3), -EINVAL);
	assert_int_equal(table_write_header(&w, mixed_columns, 0), -EINVAL);
	assert_int_equal(w.len, 0);

	assert_int_equal(table_write_header(&w, mixed_columns, 3), 0);
	assert_int_equal(table_write_header(&w, mixed_columns, 3), -EINVAL);
	assert_int_equal(table_write_str(&w, "outside a row"), -EINVAL);
	assert_int_equal(table_write_row_end(&w), -EINVAL);
	assert_int_equal(table_write_row_begin(&w), 0);
	assert_int_equal(table_write_row_begin(&w), -EINVAL);
	assert_int_equal(table_write_uint(&w, 1), -EINVAL); /* column is s */
	assert_int_equal(table_write_str(&w, "a"), 0);
	assert_int_equal(table_write_str(&w, "1"), -EINVAL); /* column is n */
	assert_int_equal(table_write_row_end(&w), -EINVAL);  /* too few */
	assert_int_equal(table_write_uint(&w, 1), 0);
	assert_int_equal(table_write_str(&w, "g"), 0);
	assert_int_equal(table_write_str(&w, "extra"), -EINVAL);
	assert_int_equal(table_write_row_end(&w), 0);
	table_writer_free(&w);
}

static void test_column_lists_are_valid(void **state)
{
	struct table_writer w;

	table_writer_init(&w, TABLE_REPLY_MAX_BYTES);
	assert_int_equal(table_write_header(&w, table_client_columns, TABLE_CLIENT_NCOLUMNS), 0);
	table_writer_free(&w);
	assert_int_equal(table_write_header(&w, table_group_columns, TABLE_GROUP_NCOLUMNS), 0);
	table_writer_free(&w);
	assert_int_equal(table_write_header(&w, table_version_columns, TABLE_VERSION_NCOLUMNS), 0);
	table_writer_free(&w);
	assert_int_equal(table_write_header(&w, table_drain_columns, TABLE_DRAIN_NCOLUMNS), 0);
	table_writer_free(&w);
}

/* ---- request line ----------------------------------------------------------- */

static void test_request_round_trip(void **state)
{
	char line[TABLE_REQUEST_MAX_BYTES];
	struct table_request req;
	char err[ERR_BYTES];
	int n;

	n = table_request_format(line, sizeof(line), "clients", NULL);
	assert_int_equal(n, 8);
	assert_string_equal(line, "clients\n");
	assert_int_equal(table_request_parse(line, (size_t)n, &req, err, sizeof(err)), n);
	assert_string_equal(req.command, "clients");
	assert_false(req.has_arg);
	assert_string_equal(req.arg, "");

	n = table_request_format(line, sizeof(line), "client", "id with\ttab\\");
	assert_string_equal(line, "client id with\\ttab\\\\\n");
	assert_int_equal(table_request_parse(line, (size_t)n, &req, err, sizeof(err)), n);
	assert_string_equal(req.command, "client");
	assert_true(req.has_arg);
	assert_string_equal(req.arg, "id with\ttab\\");
}

static void test_request_parse_edges(void **state)
{
	char line[TABLE_REQUEST_MAX_BYTES + 1];
	struct table_request req;
	char err[ERR_BYTES] = "";

	/* Need more: no LF yet. */
	assert_int_equal(table_request_parse("clie", 4, &req, err, sizeof(err)), 0);
	/* Only the first line is consumed. */
	assert_int_equal(table_request_parse("groups\nrest", 11, &req, err, sizeof(err)), 7);
	assert_string_equal(req.command, "groups");

	memset(line, 'a', sizeof(line));
	assert_int_equal(table_request_parse(line, sizeof(line), &req, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "longer than"));
	/* A line of exactly the limit is not too long: its 511-letter
	 * command is what fails. */
	line[TABLE_REQUEST_MAX_BYTES - 1] = '\n';
	assert_int_equal(table_request_parse(line, TABLE_REQUEST_MAX_BYTES, &req, err, sizeof(err)),
			 -EPROTO);
	assert_string_equal(err, "bad command");

	assert_int_equal(table_request_parse("\n", 1, &req, err, sizeof(err)), -EPROTO);
	assert_int_equal(table_request_parse("Clients\n", 8, &req, err, sizeof(err)), -EPROTO);
	assert_int_equal(table_request_parse("clients\r\n", 9, &req, err, sizeof(err)), -EPROTO);
	assert_int_equal(table_request_parse("client a\\x\n", 11, &req, err, sizeof(err)), -EPROTO);
	assert_string_equal(err, "bad escape in argument");
	assert_int_equal(table_request_parse("client a\0b\n", 11, &req, err, sizeof(err)), -EPROTO);
	assert_string_equal(err, "NUL byte in request");
}

static void test_request_format_limits(void **state)
{
	char line[TABLE_REQUEST_MAX_BYTES * 2];
	char arg[TABLE_REQUEST_MAX_BYTES];

	assert_int_equal(table_request_format(line, sizeof(line), "bad cmd", NULL), -EINVAL);
	assert_int_equal(table_request_format(line, sizeof(line), "", NULL), -EINVAL);
	assert_int_equal(table_request_format(line, 8, "clients", NULL), -ENOSPC);
	assert_int_equal(table_request_format(line, 9, "clients", NULL), 8);
	/* "client " + arg + LF must stay within the request limit. */
	memset(arg, 'x', sizeof(arg) - 1);
	arg[sizeof(arg) - 1] = '\0';
	assert_int_equal(table_request_format(line, sizeof(line), "client", arg), -ENOSPC);
	arg[TABLE_REQUEST_MAX_BYTES - 8] = '\0';
	assert_int_equal(table_request_format(line, sizeof(line), "client", arg),
			 TABLE_REQUEST_MAX_BYTES);
}

/* ---- commands -------------------------------------------------------------- */

static void test_commands(void **state)
{
	char line[TABLE_REQUEST_MAX_BYTES];
	size_t i;

	/* indexed by their id, each a valid request with or without ARG */
	assert_ptr_equal(table_command_find("clients"), &table_commands[TABLE_CMD_CLIENTS]);
	assert_ptr_equal(table_command_find("groups"), &table_commands[TABLE_CMD_GROUPS]);
	assert_ptr_equal(table_command_find("client"), &table_commands[TABLE_CMD_CLIENT]);
	assert_ptr_equal(table_command_find("version"), &table_commands[TABLE_CMD_VERSION]);
	assert_null(table_command_find("client "));
	assert_null(table_command_find(""));
	assert_null(table_command_find("CLIENTS"));
	for (i = 0; i < ARRAY_SIZE(table_commands); i++) {
		const struct table_command *c = &table_commands[i];

		assert_non_null(c->name);
		assert_non_null(c->help);
		assert_true(table_request_format(line, sizeof(line), c->name, c->arg ? "x" : NULL) >
			    0);
	}
	/* the protocol's contract (table.h): client ID and version are one row */
	assert_string_equal(table_commands[TABLE_CMD_CLIENT].arg, "ID");
	assert_true(table_commands[TABLE_CMD_CLIENT].one_row);
	assert_true(table_commands[TABLE_CMD_VERSION].one_row);
	assert_false(table_commands[TABLE_CMD_CLIENTS].one_row);
	assert_false(table_commands[TABLE_CMD_GROUPS].one_row);
	/* forwards: a list, no argument, read-only */
	assert_ptr_equal(table_command_find("forwards"), &table_commands[TABLE_CMD_FORWARDS]);
	assert_false(table_commands[TABLE_CMD_FORWARDS].one_row);
	assert_null(table_commands[TABLE_CMD_FORWARDS].arg);
	/* drain and undrain take an ID, reply one row and need privilege;
	 * nothing else changes state */
	assert_ptr_equal(table_command_find("drain"), &table_commands[TABLE_CMD_DRAIN]);
	assert_ptr_equal(table_command_find("undrain"), &table_commands[TABLE_CMD_UNDRAIN]);
	for (i = 0; i < ARRAY_SIZE(table_commands); i++) {
		bool changes = i == TABLE_CMD_DRAIN || i == TABLE_CMD_UNDRAIN;

		assert_int_equal(table_commands[i].changes_state, changes);
		if (changes) {
			assert_string_equal(table_commands[i].arg, "ID");
			assert_true(table_commands[i].one_row);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_hostile_values),
		cmocka_unit_test(test_round_trip_wire_form),
		cmocka_unit_test(test_empty_table),
		cmocka_unit_test(test_parse_rejects_field_count),
		cmocka_unit_test(test_parse_rejects_bad_escape),
		cmocka_unit_test(test_parse_rejects_bad_header),
		cmocka_unit_test(test_parse_rejects_bad_numbers),
		cmocka_unit_test(test_parse_accepts_number_edges),
		cmocka_unit_test(test_bool_round_trip_and_rejects),
		cmocka_unit_test(test_parse_rejects_framing),
		cmocka_unit_test(test_parse_err_reply),
		cmocka_unit_test(test_parse_err_truncates_to_errlen),
		cmocka_unit_test(test_writer_enforces_max),
		cmocka_unit_test(test_writer_grows_past_initial_buffer),
		cmocka_unit_test(test_writer_rejects_misuse),
		cmocka_unit_test(test_column_lists_are_valid),
		cmocka_unit_test(test_request_round_trip),
		cmocka_unit_test(test_request_parse_edges),
		cmocka_unit_test(test_request_format_limits),
		cmocka_unit_test(test_commands),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
