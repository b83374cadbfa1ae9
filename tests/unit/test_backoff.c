/* Unit tests: reconnect backoff (exponential ceiling, full jitter). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "anyproxy/backoff.h"

static void test_ceiling_doubles_to_cap(void **state)
{
	struct backoff b;
	uint32_t ceiling, expect[] = { 100, 200, 400, 800, 1000, 1000, 1000 };

	backoff_init(&b, 100, 1000, 42);
	for (unsigned i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
		uint32_t d = backoff_next(&b, &ceiling);

		assert_int_equal(ceiling, expect[i]);
		assert_true(d <= ceiling);
	}
}

static void test_jitter_spreads(void **state)
{
	struct backoff b;
	uint32_t min = UINT32_MAX, max = 0, ceiling;

	backoff_init(&b, 30000, 30000, 7);
	for (int i = 0; i < 1000; i++) {
		uint32_t d = backoff_next(&b, &ceiling);

		min = d < min ? d : min;
		max = d > max ? d : max;
	}
	/* full jitter: the whole [0, cap] range is used */
	assert_true(min < 3000);
	assert_true(max > 27000);
	assert_true(max <= 30000);
}

static void test_reset_and_saturate(void **state)
{
	struct backoff b;

	backoff_init(&b, 500, 30000, 1);
	backoff_next(&b, NULL);
	backoff_next(&b, NULL);
	assert_int_equal(backoff_ceiling(&b), 2000);
	backoff_reset(&b);
	assert_int_equal(backoff_ceiling(&b), 500);
	backoff_saturate(&b);
	assert_int_equal(backoff_ceiling(&b), 30000);
	for (int i = 0; i < 100; i++) /* never overflows past the cap */
		backoff_next(&b, NULL);
	assert_int_equal(backoff_ceiling(&b), 30000);
}

static void test_bad_limits_are_sane(void **state)
{
	struct backoff b;

	backoff_init(&b, 0, 0, 0);
	assert_int_equal(backoff_ceiling(&b), 1);
	backoff_init(&b, 5000, 10, 3); /* cap below start: cap = start */
	assert_int_equal(backoff_ceiling(&b), 5000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ceiling_doubles_to_cap),
		cmocka_unit_test(test_jitter_spreads),
		cmocka_unit_test(test_reset_and_saturate),
		cmocka_unit_test(test_bad_limits_are_sane),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
