/*
 * test_grammar.c — the shared lexical rules (src/core/grammar.c): every
 * byte value against the id alphabet, lengths at and past the limit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_id_bytes),
		cmocka_unit_test(test_id_span),
		cmocka_unit_test(test_id_lengths),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
