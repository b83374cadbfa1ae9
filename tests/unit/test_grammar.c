/*
 * test_grammar.c — the shared lexical rules (src/core/grammar.c): every
 * byte value against the id alphabet, lengths at and past the limit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "anyproxy/grammar.h"

static void test_id_bytes(void **state)
{
	const char *allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-";

	for (unsigned c = 0; c < 256; c++) {
		bool want = c != 0 && strchr(allowed, (int)c) != NULL;

		assert_int_equal(grammar_id_byte((uint8_t)c), want);
	}
}

static void test_id_span(void **state)
{
	assert_int_equal(grammar_id_span("prod-eu.1", 9), 9);
	assert_int_equal(grammar_id_span("prod eu", 7), 4);
	assert_int_equal(grammar_id_span("a\0b", 3), 1);
	assert_int_equal(grammar_id_span("", 0), 0);
	assert_int_equal(grammar_id_span("x/y", 3), 1);
}

static void test_id_lengths(void **state)
{
	char id[ID_MAX_BYTES + 2];

	memset(id, 'a', sizeof(id));
	assert_true(grammar_id_valid(id, ID_MAX_BYTES, 1));
	assert_false(grammar_id_valid(id, ID_MAX_BYTES + 1, 1)); /* refused, never cut */
	assert_true(grammar_id_valid(id, 0, 0));                 /* the default group */
	assert_false(grammar_id_valid(id, 0, 1));                /* a client_id is not empty */
	id[10] = '%';
	assert_false(grammar_id_valid(id, 20, 1));
}

static void test_target_format(void **state)
{
	static const uint8_t v4[4] = {192, 0, 2, 1};
	static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
	static const uint8_t v6max[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
	char buf[GRAMMAR_TARGET_MAX];

	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_IPV4, v4, 4, 80), 12);
	assert_string_equal(buf, "192.0.2.1:80");
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_IPV6, v6, 16, 443),
			 17);
	assert_string_equal(buf, "[2001:db8::1]:443");
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_DOMAIN, "example.com",
					       11, 65535), 17);
	assert_string_equal(buf, "example.com:65535");
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_IPV6, v6max, 16, 0),
			 43);
	assert_string_equal(buf, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:0");
	/* wrong lengths, unknown types, a NUL that would cut the name short */
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_IPV4, v4, 16, 1),
			 -EINVAL);
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_IPV6, v6, 4, 1),
			 -EINVAL);
	assert_int_equal(grammar_format_target(buf, sizeof(buf), 2, v4, 4, 1), -EINVAL);
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_DOMAIN, "", 0, 1),
			 -EINVAL);
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_DOMAIN, "a\0b", 3, 1),
			 -EINVAL);
}

/* The buffer constant fits the longest target; one byte less is refused. */
static void test_target_longest(void **state)
{
	char name[GRAMMAR_TARGET_DOMAIN_MAX + 1];
	char buf[GRAMMAR_TARGET_MAX + 1];

	memset(name, 'x', sizeof(name));
	assert_int_equal(grammar_format_target(buf, GRAMMAR_TARGET_MAX, GRAMMAR_ADDR_DOMAIN, name,
					       GRAMMAR_TARGET_DOMAIN_MAX, 65535),
			 GRAMMAR_TARGET_MAX - 1);
	assert_int_equal(buf[GRAMMAR_TARGET_MAX - 1], '\0');
	assert_int_equal(grammar_format_target(buf, GRAMMAR_TARGET_MAX - 1, GRAMMAR_ADDR_DOMAIN,
					       name, GRAMMAR_TARGET_DOMAIN_MAX, 65535),
			 -ENOSPC);
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_DOMAIN, name,
					       GRAMMAR_TARGET_DOMAIN_MAX + 1, 1),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_id_bytes),
		cmocka_unit_test(test_id_span),
		cmocka_unit_test(test_id_lengths),
		cmocka_unit_test(test_target_format),
		cmocka_unit_test(test_target_longest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
