/* Unit tests: the agent's extra hosts file. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "anyproxy/grammar.h"
#include "anyproxy/hosts.h"

static size_t lookup(const struct hosts_table *t, const char *name, int *fam, uint8_t (*a)[16])
{
	return hosts_lookup(t, name, fam, a, HOSTS_MAX_ADDRS_PER_NAME);
}

static void test_names_aliases_and_order(void **state)
{
	static const char text[] = "# comment line\n"
				   "\n"
				   "10.1.2.3   app.internal  App.Alias.   # trailing comment\n"
				   "::1\tv6.internal\n"
				   "10.1.2.4 app.internal\r\n";
	struct hosts_table t;
	char err[128];
	int fam[8];
	uint8_t a[8][16], want[16];

	assert_int_equal(hosts_parse(text, strlen(text), &t, err, sizeof(err)), 0);
	assert_int_equal(lookup(&t, "app.internal", fam, a), 2);
	inet_pton(AF_INET, "10.1.2.3", want);
	assert_int_equal(fam[0], AF_INET);
	assert_memory_equal(a[0], want, 4);
	inet_pton(AF_INET, "10.1.2.4", want);
	assert_memory_equal(a[1], want, 4);
	/* aliases are lower-cased and lose their trailing dot */
	assert_int_equal(lookup(&t, "app.alias", fam, a), 1);
	assert_int_equal(lookup(&t, "v6.internal", fam, a), 1);
	assert_int_equal(fam[0], AF_INET6);
	inet_pton(AF_INET6, "::1", want);
	assert_memory_equal(a[0], want, 16);
	assert_int_equal(lookup(&t, "other", fam, a), 0);
	hosts_free(&t);
}

static void test_errors_name_the_line(void **state)
{
	static const struct {
		const char *text;
		const char *expect;
	} cases[] = {
		{ "10.0.0.1 ok\nnot-an-address name\n", "line 2: not an IPv4 or IPv6 address" },
		{ "10.0.0.1\n", "line 1: address without a name" },
		{ "10.0.0.1 bad/name\n",
		  "line 1: byte not allowed in a host name (only letters, digits, '-', '_', '.')" },
		{ "10.0.0.1 .\n", "line 1: empty host name" },
		{ "10.0.0.1 a..b\n", "line 1: empty label in host name" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hosts_table t;
		char err[128];

		assert_int_equal(hosts_parse(cases[i].text, strlen(cases[i].text), &t, err,
					     sizeof(err)),
				 -EINVAL);
		assert_string_equal(err, cases[i].expect);
		assert_null(t.entries);
	}
}

/* Names follow grammar_host_name, the rule of targets and host rules:
 * labels of at most 63 bytes, at most 253 bytes without the trailing dot. */
static void test_name_length_limits(void **state)
{
	char text[512], label[GRAMMAR_LABEL_MAX + 2], name[GRAMMAR_HOST_MAX + 2];
	struct hosts_table t;
	char err[128];
	int fam[1];
	uint8_t a[1][16];

	/* A 63-byte label and a 253-byte name (with a trailing dot) pass. */
	memset(label, 'l', GRAMMAR_LABEL_MAX);
	label[GRAMMAR_LABEL_MAX] = '\0';
	memset(name, 'n', GRAMMAR_HOST_MAX);
	for (size_t i = 63; i < GRAMMAR_HOST_MAX; i += 64)
		name[i] = '.';
	name[GRAMMAR_HOST_MAX] = '\0';
	snprintf(text, sizeof(text), "10.0.0.1 %s.test %s.\n", label, name);
	assert_int_equal(hosts_parse(text, strlen(text), &t, err, sizeof(err)), 0);
	assert_int_equal(t.count, 2);
	assert_int_equal(strlen(t.entries[1].name), GRAMMAR_HOST_MAX);
	assert_int_equal(lookup(&t, name, fam, a), 1);
	hosts_free(&t);

	/* A 64-byte label is refused, and the whole file with it. */
	memset(label, 'l', GRAMMAR_LABEL_MAX + 1);
	label[GRAMMAR_LABEL_MAX + 1] = '\0';
	snprintf(text, sizeof(text), "10.0.0.1 ok\n10.0.0.2 %s.test\n", label);
	assert_int_equal(hosts_parse(text, strlen(text), &t, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "line 2: label longer than 63 bytes in host name");
	assert_null(t.entries);

	/* A 254-byte name is refused, with or without a trailing dot. */
	memset(name, 'n', GRAMMAR_HOST_MAX + 1);
	for (size_t i = 63; i < GRAMMAR_HOST_MAX + 1; i += 64)
		name[i] = '.';
	name[GRAMMAR_HOST_MAX + 1] = '\0';
	snprintf(text, sizeof(text), "10.0.0.1 %s\n", name);
	assert_int_equal(hosts_parse(text, strlen(text), &t, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "line 1: host name longer than 253 bytes");
	snprintf(text, sizeof(text), "10.0.0.1 %s.\n", name);
	assert_int_equal(hosts_parse(text, strlen(text), &t, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "line 1: host name longer than 253 bytes");
}

static void test_nul_and_long_lines_rejected(void **state)
{
	struct hosts_table t;
	char err[128], text[HOSTS_MAX_LINE_BYTES + 20];

	assert_int_equal(hosts_parse("10.0.0.1 a\0b\n", 13, &t, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "line 1: NUL byte");
	memset(text, 'a', sizeof(text));
	memcpy(text, "10.0.0.1 ", 9);
	assert_int_equal(hosts_parse(text, sizeof(text), &t, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "line 1: line too long");
}

static void test_lookup_respects_max(void **state)
{
	static const char text[] = "10.0.0.1 n\n10.0.0.2 n\n10.0.0.3 n\n";
	struct hosts_table t;
	char err[64];
	int fam[2];
	uint8_t a[2][16];

	assert_int_equal(hosts_parse(text, strlen(text), &t, err, sizeof(err)), 0);
	assert_int_equal(hosts_lookup(&t, "n", fam, a, 2), 2);
	hosts_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_aliases_and_order),
		cmocka_unit_test(test_errors_name_the_line),
		cmocka_unit_test(test_name_length_limits),
		cmocka_unit_test(test_nul_and_long_lines_rejected),
		cmocka_unit_test(test_lookup_respects_max),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
