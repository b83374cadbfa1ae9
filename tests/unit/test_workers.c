/* Unit tests: how the agent's links are spread over worker threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "anyproxy/workers.h"
#include "anyproxy/workgroup.h"

static void test_count_default_is_cpus(void **state)
{
	assert_int_equal(wg_count(0, 4, 16), 4);
	assert_int_equal(wg_count(0, 1, 16), 1);
	/* sysconf failed: one worker, never zero */
	assert_int_equal(wg_count(0, -1, 16), 1);
	assert_int_equal(wg_count(0, 0, 16), 1);
}

static void test_count_bounded_by_links(void **state)
{
	assert_int_equal(wg_count(8, 2, 4), 4);
	assert_int_equal(wg_count(0, 64, 3), 3);
	assert_int_equal(wg_count(2, 64, 4), 2);
	assert_int_equal(wg_count(5, 1, 1), 1);
	/* no links at all cannot happen (the config needs a gateway); still 1 */
	assert_int_equal(wg_count(3, 2, 0), 1);
}

static void test_links_round_robin(void **state)
{
	unsigned per[3] = { 0 };

	for (unsigned i = 0; i < 9; i++)
		per[agent_link_worker(i, 3)]++;
	assert_int_equal(per[0], 3);
	assert_int_equal(per[1], 3);
	assert_int_equal(per[2], 3);
	/* the replicas of one gateway go to different workers */
	assert_int_not_equal(agent_link_worker(0, 2), agent_link_worker(1, 2));
	assert_int_equal(agent_link_worker(7, 1), 0);
	assert_int_equal(agent_link_worker(7, 0), 0);
}

static void test_share(void **state)
{
	assert_int_equal(agent_worker_share(1024, 1), 1024);
	assert_int_equal(agent_worker_share(1024, 2), 512);
	assert_int_equal(agent_worker_share(1024, 3), 341);
	assert_int_equal(agent_worker_share(2, 4), 1);
	assert_int_equal(agent_worker_share(10, 0), 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_count_default_is_cpus),
		cmocka_unit_test(test_count_bounded_by_links),
		cmocka_unit_test(test_links_round_robin),
		cmocka_unit_test(test_share),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
