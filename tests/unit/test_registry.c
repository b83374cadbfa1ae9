/* Unit tests: the gateway registry (groups -> clients -> tunnels). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "anyproxy/registry.h"

struct evictions {
	struct reg_tunnel *list[16];
	uint16_t codes[16];
	int n;
};

static void on_evict(struct reg_tunnel *t, uint16_t code, void *ctx)
{
	struct evictions *e = ctx;

	e->list[e->n] = t;
	e->codes[e->n++] = code;
}

struct fixture {
	struct registry reg;
	struct evictions ev;
	struct reg_tunnel t[16];
};

static int setup(void **state)
{
	static struct fixture f;

	memset(&f, 0, sizeof(f));
	registry_init(&f.reg, on_evict, &f.ev);
	*state = &f;
	return 0;
}

/* Each group's tunnel and stream counts, kept as they change for the pick
 * and the group limit, are the sums over its clients. */
static void assert_group_counts(const struct registry *reg)
{
	const struct reg_group *g, *tmp;
	uint64_t streams;
	unsigned i, n;

	HASH_ITER (hh, reg->groups, g, tmp) {
		for (i = 0, n = 0, streams = 0; i < g->nclients; i++) {
			n += g->clients[i]->ntunnels;
			streams += g->clients[i]->streams_active;
		}
		assert_int_equal(g->ntunnels, n);
		assert_int_equal(g->streams_active, streams);
	}
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	assert_group_counts(&f->reg); /* after whatever each test did */
	registry_destroy(&f->reg);
	return 0;
}

static void test_groups_appear_and_vanish(void **state)
{
	struct fixture *f = *state;
	struct reg_group *g;

	assert_null(registry_find_group(&f->reg, "production"));
	assert_int_equal(registry_join(&f->reg, &f->t[0], "p1", "production", 1, 0, "a"),
			 REGISTRY_NEW_CLIENT);
	assert_int_equal(registry_join(&f->reg, &f->t[1], "p1", "production", 1, 1, "a"), 0);
	assert_int_equal(registry_join(&f->reg, &f->t[2], "p2", "production", 2, 0, "b"),
			 REGISTRY_NEW_CLIENT);
	g = registry_find_group(&f->reg, "production");
	assert_non_null(g);
	assert_int_equal(g->nclients, 2);
	assert_int_equal(g->ntunnels, 3);
	assert_false(registry_leave(&f->reg, &f->t[0]));
	assert_int_equal(g->ntunnels, 2);
	assert_true(registry_leave(&f->reg, &f->t[1])); /* p1's last tunnel */
	assert_null(registry_find_client(&f->reg, "p1"));
	assert_non_null(registry_find_group(&f->reg, "production"));
	assert_true(registry_leave(&f->reg, &f->t[2]));
	assert_null(registry_find_group(&f->reg, "production"));
	/* leaving twice is harmless */
	assert_false(registry_leave(&f->reg, &f->t[2]));
	assert_int_equal(f->ev.n, 0);
}

static void test_round_robin_and_fallback(void **state)
{
	struct fixture *f = *state;
	struct reg_tunnel *a, *b, *c;
	bool fell_back, full;

	registry_join(&f->reg, &f->t[0], "p1", "production", 1, 0, "a");
	registry_join(&f->reg, &f->t[1], "p2", "production", 2, 0, "b");
	registry_join(&f->reg, &f->t[2], "d1", "", 3, 0, "c");
	a = registry_pick(&f->reg, 0, "production", true, &fell_back, &full);
	assert_false(fell_back);
	b = registry_pick(&f->reg, 0, "production", true, &fell_back, &full);
	c = registry_pick(&f->reg, 0, "production", true, &fell_back, &full);
	assert_ptr_not_equal(a, b);
	assert_ptr_equal(a, c);
	/* unknown group: the default group serves, flagged as a fallback */
	assert_ptr_equal(registry_pick(&f->reg, 0, "nonexistent", true, &fell_back, &full),
			 &f->t[2]);
	assert_true(fell_back);
	/* default group itself is not a fallback */
	assert_ptr_equal(registry_pick(&f->reg, 0, "", true, &fell_back, &full), &f->t[2]);
	assert_false(fell_back);
	/* the caller forbids the fallback: nothing, however often asked */
	for (int i = 0; i < 3; i++) {
		fell_back = true;
		assert_null(registry_pick(&f->reg, 0, "nonexistent", false, &fell_back, &full));
		assert_false(fell_back);
		assert_false(full);
	}
	/* ... which changes nothing for a group with an agent, nor for the
	 * default group itself */
	assert_ptr_equal(registry_pick(&f->reg, 0, "", false, &fell_back, &full), &f->t[2]);
	assert_false(fell_back);
	a = registry_pick(&f->reg, 0, "production", false, &fell_back, &full);
	assert_true(a == &f->t[0] || a == &f->t[1]);
	assert_false(fell_back);
	/* no default client: nothing */
	registry_leave(&f->reg, &f->t[2]);
	assert_null(registry_pick(&f->reg, 0, "nonexistent", true, &fell_back, &full));
	assert_false(fell_back);
}

static void test_tunnels_spread_and_draining_skipped(void **state)
{
	struct fixture *f = *state;
	bool fb, full;

	registry_join(&f->reg, &f->t[0], "p1", "g", 1, 0, "a");
	registry_join(&f->reg, &f->t[1], "p1", "g", 1, 1, "a");
	assert_ptr_not_equal(registry_pick(&f->reg, 0, "g", true, &fb, &full),
			     registry_pick(&f->reg, 0, "g", true, &fb, &full));
	f->t[0].draining = true;
	for (int i = 0; i < 4; i++)
		assert_ptr_equal(registry_pick(&f->reg, 0, "g", true, &fb, &full), &f->t[1]);
	f->t[1].draining = true;
	assert_null(registry_pick(&f->reg, 0, "g", true, &fb, &full));
}

/* Streams are spread over tunnels: a client with three replicas gets three
 * picks for every one of a client with one. */
static void test_replicas_weigh(void **state)
{
	struct fixture *f = *state;
	int heavy = 0, light = 0;
	bool fb, full;

	registry_join(&f->reg, &f->t[0], "big", "g", 1, 0, "a");
	registry_join(&f->reg, &f->t[1], "big", "g", 1, 1, "a");
	registry_join(&f->reg, &f->t[2], "big", "g", 1, 2, "a");
	registry_join(&f->reg, &f->t[3], "small", "g", 2, 0, "b");
	for (int i = 0; i < 40; i++) {
		struct reg_tunnel *t = registry_pick(&f->reg, 0, "g", false, &fb, &full);

		assert_non_null(t);
		if (t == &f->t[3])
			light++;
		else
			heavy++;
	}
	assert_int_equal(heavy, 30);
	assert_int_equal(light, 10);
	/* one replica leaves: 2 to 1 */
	registry_leave(&f->reg, &f->t[0]);
	heavy = light = 0;
	for (int i = 0; i < 30; i++) {
		if (registry_pick(&f->reg, 0, "g", false, &fb, &full) == &f->t[3])
			light++;
		else
			heavy++;
	}
	assert_int_equal(heavy, 20);
	assert_int_equal(light, 10);
}

/* A suspect tunnel gets no stream while another can take it; when all are
 * suspect they are tried anyway. */
static void test_suspect_skipped_unless_all_are(void **state)
{
	struct fixture *f = *state;
	bool fb, full;

	registry_join(&f->reg, &f->t[0], "a", "g", 1, 0, "a");
	registry_join(&f->reg, &f->t[1], "b", "g", 2, 0, "b");
	f->t[0].suspect = true;
	for (int i = 0; i < 4; i++)
		assert_ptr_equal(registry_pick(&f->reg, 0, "g", false, &fb, &full), &f->t[1]);
	f->t[1].suspect = true;
	assert_non_null(registry_pick(&f->reg, 0, "g", false, &fb, &full));
	assert_false(full);
	/* answered again: back in the rotation */
	f->t[0].suspect = f->t[1].suspect = false;
	assert_ptr_not_equal(registry_pick(&f->reg, 0, "g", false, &fb, &full),
			     registry_pick(&f->reg, 0, "g", false, &fb, &full));
}

/* The retry pick skips the clients already tried, all their tunnels, and
 * never leaves the group. */
static void test_pick_other_skips_tried_clients(void **state)
{
	struct fixture *f = *state;
	struct reg_client *tried[2];
	bool fb, full;

	registry_join(&f->reg, &f->t[0], "a", "g", 1, 0, "a");
	registry_join(&f->reg, &f->t[1], "a", "g", 1, 1, "a");
	registry_join(&f->reg, &f->t[2], "b", "g", 2, 0, "b");
	registry_join(&f->reg, &f->t[3], "d", "", 3, 0, "d");
	tried[0] = registry_find_client(&f->reg, "a");
	for (int i = 0; i < 3; i++)
		assert_ptr_equal(registry_pick_other(&f->reg, 0, "g", tried, 1, &full), &f->t[2]);
	tried[1] = registry_find_client(&f->reg, "b");
	assert_null(registry_pick_other(&f->reg, 0, "g", tried, 2, &full));
	assert_false(full);
	/* a suspect untried tunnel is still tried: it is the last chance */
	f->t[2].suspect = true;
	assert_ptr_equal(registry_pick_other(&f->reg, 0, "g", tried, 1, &full), &f->t[2]);
	(void)fb;
}

/* A retry's pick leaves the round-robin where the first pick put it: with
 * one agent that always fails, it is picked first only in its turn. */
static void test_retry_does_not_move_the_cursor(void **state)
{
	struct fixture *f = *state;
	struct reg_client *tried[1];
	unsigned first_bad = 0;
	bool fb, full;

	registry_join(&f->reg, &f->t[0], "bad", "g", 1, 0, "a");
	registry_join(&f->reg, &f->t[1], "ok1", "g", 2, 0, "a");
	registry_join(&f->reg, &f->t[2], "ok2", "g", 3, 0, "a");
	for (int i = 0; i < 30; i++) {
		struct reg_tunnel *t = registry_pick(&f->reg, 0, "g", false, &fb, &full);

		assert_non_null(t);
		if (t != &f->t[0])
			continue;
		first_bad++;
		tried[0] = registry_find_client(&f->reg, "bad");
		t = registry_pick_other(&f->reg, 0, "g", tried, 1, &full);
		assert_true(t == &f->t[1] || t == &f->t[2]);
	}
	assert_int_equal(first_bad, 10);
}

/* A peek shows where the next pick goes and leaves the round-robin: the
 * pick that follows takes the same tunnel. */
static void test_peek_does_not_move_the_cursor(void **state)
{
	struct fixture *f = *state;
	struct reg_tunnel *last = NULL;
	bool fb, full;

	registry_join(&f->reg, &f->t[0], "a", "g", 1, 0, "a");
	registry_join(&f->reg, &f->t[1], "b", "g", 2, 0, "b");

	for (int i = 0; i < 4; i++) {
		struct reg_tunnel *t = registry_peek(&f->reg, 0, "g", false);

		assert_non_null(t);
		assert_ptr_equal(registry_peek(&f->reg, 0, "g", false), t);
		assert_ptr_equal(registry_pick(&f->reg, 0, "g", false, &fb, &full), t);
		assert_ptr_not_equal(t, last); /* the two agents take turns */
		last = t;
	}
}

static const struct reg_tunnel *full_tunnel;

static bool usable_unless_full(const struct reg_tunnel *t, void *ctx)
{
	return t != full_tunnel;
}

static void test_full_group_does_not_fall_back(void **state)
{
	struct fixture *f = *state;
	bool fb, full;

	f->reg.usable = usable_unless_full;
	registry_join(&f->reg, &f->t[0], "g1", "g", 1, 0, "a");
	registry_join(&f->reg, &f->t[1], "g1", "g", 1, 1, "a");
	registry_join(&f->reg, &f->t[2], "d1", "", 2, 0, "b");
	full_tunnel = &f->t[0];
	/* one tunnel full: the other one of the same agent takes the stream */
	for (int i = 0; i < 3; i++)
		assert_ptr_equal(registry_pick(&f->reg, 0, "g", true, &fb, &full), &f->t[1]);
	/* both full: refused as busy, never sent to the default group */
	registry_leave(&f->reg, &f->t[1]);
	assert_null(registry_pick(&f->reg, 0, "g", true, &fb, &full));
	assert_true(full);
	assert_false(fb);
	/* a draining group is not busy: it falls back */
	full_tunnel = NULL;
	f->t[0].draining = true;
	assert_ptr_equal(registry_pick(&f->reg, 0, "g", true, &fb, &full), &f->t[2]);
	assert_true(fb);
	assert_false(full);
	f->reg.usable = NULL;
}

static void test_same_replica_replaces_stale_tunnel(void **state)
{
	struct fixture *f = *state;
	struct reg_client *c;

	registry_join(&f->reg, &f->t[0], "p1", "g", 9, 0, "old");
	registry_join(&f->reg, &f->t[1], "p1", "g", 9, 1, "old");
	/* replica 0 reconnects before the gateway noticed the old one died */
	assert_int_equal(registry_join(&f->reg, &f->t[2], "p1", "g", 9, 0, "new"), 0);
	assert_int_equal(f->ev.n, 1);
	assert_ptr_equal(f->ev.list[0], &f->t[0]);
	assert_int_equal(f->ev.codes[0], FRAME_ERR_REPLACED);
	assert_null(f->t[0].client);
	c = registry_find_client(&f->reg, "p1");
	assert_int_equal(c->ntunnels, 2);
	/* the evicted tunnel's later close is a no-op */
	assert_false(registry_leave(&f->reg, &f->t[0]));
	assert_int_equal(c->ntunnels, 2);
	assert_int_equal(c->group->ntunnels, 2);
}

static void test_single_tunnel_swap_keeps_client(void **state)
{
	struct fixture *f = *state;
	struct reg_client *c;
	time_t since;

	registry_join(&f->reg, &f->t[0], "p1", "g", 9, 0, "old");
	c = registry_find_client(&f->reg, "p1");
	since = c->connected_since;
	assert_int_equal(registry_join(&f->reg, &f->t[1], "p1", "g", 9, 0, "new"), 0);
	assert_int_equal(f->ev.n, 1);
	c = registry_find_client(&f->reg, "p1");
	assert_int_equal(c->ntunnels, 1);
	assert_ptr_equal(c->tunnels[0], &f->t[1]);
	assert_string_equal(c->remote_addr, "new");
	assert_true(c->connected_since == since);
}

static void test_new_instance_takes_over(void **state)
{
	struct fixture *f = *state;
	struct reg_client *c;

	registry_join(&f->reg, &f->t[0], "p1", "g", 1, 0, "first");
	registry_join(&f->reg, &f->t[1], "p1", "g", 1, 1, "first");
	/* another process with the same client_id: newest wins */
	assert_int_equal(registry_join(&f->reg, &f->t[2], "p1", "g", 2, 0, "second"),
			 REGISTRY_NEW_CLIENT);
	assert_int_equal(f->ev.n, 2);
	assert_int_equal(f->ev.codes[0], FRAME_ERR_REPLACED);
	assert_int_equal(f->ev.codes[1], FRAME_ERR_REPLACED);
	c = registry_find_client(&f->reg, "p1");
	assert_int_equal(c->ntunnels, 1);
	assert_true(c->instance == 2);
	assert_string_equal(c->remote_addr, "second");
	assert_int_equal(registry_find_group(&f->reg, "g")->nclients, 1);
	assert_int_equal(registry_find_group(&f->reg, "g")->ntunnels, 1);
}

/* An id belongs to its group: another group's agent (the default group's
 * included) is refused, whatever its instance, and the holder is untouched. */
static void test_other_group_cannot_take_id(void **state)
{
	struct fixture *f = *state;
	struct reg_client *c;

	f->t[0].credential = f->t[1].credential = 7;
	registry_join(&f->reg, &f->t[0], "prod-client-001", "production", 1, 0, "prod");
	registry_join(&f->reg, &f->t[1], "prod-client-001", "production", 1, 1, "prod");
	f->t[2].credential = f->t[3].credential = 7;
	assert_int_equal(registry_join(&f->reg, &f->t[2], "prod-client-001", "", 2, 0, "evil"),
			 -EADDRINUSE);
	assert_int_equal(registry_join(&f->reg, &f->t[3], "prod-client-001", "staging", 1, 0,
				       "evil"),
			 -EADDRINUSE);
	assert_int_equal(f->ev.n, 0);
	assert_null(f->t[2].client);
	assert_null(f->t[3].client);
	assert_null(registry_find_group(&f->reg, ""));
	assert_null(registry_find_group(&f->reg, "staging"));
	c = registry_find_client(&f->reg, "prod-client-001");
	assert_ptr_equal(c->group, registry_find_group(&f->reg, "production"));
	assert_int_equal(c->ntunnels, 2);
	assert_true(c->instance == 1);
	assert_string_equal(c->remote_addr, "prod");
	/* refused tunnels were never registered: leaving is a no-op */
	assert_false(registry_leave(&f->reg, &f->t[2]));
	assert_int_equal(registry_client_count(&f->reg), 1);
}

/* Same group, another credential: refused too, for a new instance and for
 * the holder's own instance and replica. Same credential: newest wins. */
static void test_other_credential_cannot_take_id(void **state)
{
	struct fixture *f = *state;
	struct reg_client *c;

	f->t[0].credential = 2;
	registry_join(&f->reg, &f->t[0], "p1", "g", 1, 0, "owner");
	f->t[1].credential = 1;
	assert_int_equal(registry_join(&f->reg, &f->t[1], "p1", "g", 2, 0, "other"), -EADDRINUSE);
	f->t[2].credential = 1;
	assert_int_equal(registry_join(&f->reg, &f->t[2], "p1", "g", 1, 0, "other"), -EADDRINUSE);
	assert_int_equal(f->ev.n, 0);
	c = registry_find_client(&f->reg, "p1");
	assert_ptr_equal(c->tunnels[0], &f->t[0]);
	assert_true(c->credential == 2);

	f->t[3].credential = 2; /* the owner restarted */
	assert_int_equal(registry_join(&f->reg, &f->t[3], "p1", "g", 3, 0, "restarted"),
			 REGISTRY_NEW_CLIENT);
	assert_int_equal(f->ev.n, 1);
	assert_ptr_equal(f->ev.list[0], &f->t[0]);
	assert_int_equal(f->ev.codes[0], FRAME_ERR_REPLACED);
	c = registry_find_client(&f->reg, "p1");
	assert_string_equal(c->remote_addr, "restarted");
	assert_true(c->credential == 2);
}

/* Listings are copies: sorted by id, true to what the registry held, and
 * still whole after every client left (under ASan a row pointing into the
 * registry would be a use after free). */
static void test_copies_sorted_and_independent(void **state)
{
	struct fixture *f = *state;
	struct reg_client_row *clients, *one;
	struct reg_group_row *groups;
	size_t nc, ng, n, i;

	registry_join(&f->reg, &f->t[0], "zeta", "b", 1, 0, "192.0.2.1");
	registry_join(&f->reg, &f->t[3], "zeta", "b", 1, 1, "192.0.2.1");
	registry_join(&f->reg, &f->t[1], "alpha", "a", 2, 0, "a");
	registry_join(&f->reg, &f->t[2], "mid", "", 3, 0, "a");
	f->t[3].suspect = true;
	assert_int_equal(registry_set_drained(&f->reg, "alpha", true), 0);
	assert_int_equal(registry_copy_clients(&f->reg, NULL, &clients, &nc), 0);
	assert_int_equal(registry_copy_groups(&f->reg, &groups, &ng), 0);
	assert_int_equal(registry_copy_clients(&f->reg, "mid", &one, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(one[0].id, "mid");
	registry_free_client_rows(one, n);
	assert_int_equal(registry_copy_clients(&f->reg, "nobody", &one, &n), 0);
	assert_int_equal(n, 0);
	registry_free_client_rows(one, n);
	for (i = 0; i < 4; i++)
		registry_leave(&f->reg, &f->t[i]);
	assert_null(registry_find_group(&f->reg, "b"));

	registry_sort_rows(clients, nc, sizeof(*clients));
	assert_int_equal(nc, 3);
	assert_string_equal(clients[0].id, "alpha");
	assert_true(clients[0].drained);
	assert_string_equal(clients[0].group, "a");
	assert_string_equal(clients[1].id, "mid");
	assert_string_equal(clients[1].group, "");
	assert_null(clients[1].suspect_replicas);
	assert_string_equal(clients[2].id, "zeta");
	assert_int_equal(clients[2].tunnels, 2);
	assert_int_equal(clients[2].suspect, 1);
	assert_string_equal(clients[2].suspect_replicas, "1");
	assert_string_equal(clients[2].remote_addr, "192.0.2.1");
	registry_free_client_rows(clients, nc);

	registry_sort_rows(groups, ng, sizeof(*groups));
	assert_int_equal(ng, 3);
	assert_string_equal(groups[0].id, "");
	assert_string_equal(groups[1].id, "a");
	assert_int_equal(groups[1].drained, 1);
	assert_string_equal(groups[2].id, "b");
	assert_int_equal(groups[2].clients, 1);
	assert_int_equal(groups[2].tunnels, 2);
	free(groups);
}

/* A group counts its clients' open streams; a client that leaves with
 * streams open takes them out of the count, and their later ends (the
 * client kept alive by their references) leave the group alone. */
static void test_group_counts_streams(void **state)
{
	struct fixture *f = *state;
	struct reg_client *a, *b;
	struct reg_group *g;

	registry_join(&f->reg, &f->t[0], "a", "g", 1, 0, "x");
	registry_join(&f->reg, &f->t[1], "b", "g", 2, 0, "x");
	a = registry_find_client(&f->reg, "a");
	b = registry_find_client(&f->reg, "b");
	g = registry_find_group(&f->reg, "g");
	registry_client_get(a);
	registry_stream_opened(a);
	registry_stream_opened(a);
	registry_stream_opened(b);
	assert_int_equal(g->streams_active, 3);
	assert_true(registry_leave(&f->reg, &f->t[0])); /* a leaves, 2 streams open */
	assert_true(a->detached);
	assert_int_equal(g->streams_active, 1);
	registry_stream_closed(a);
	registry_stream_closed(a);
	assert_int_equal(a->streams_active, 0);
	assert_int_equal(g->streams_active, 1);
	registry_client_put(a); /* frees it */
	registry_stream_closed(b);
	assert_int_equal(g->streams_active, 0);
}

/* A group's tunnel count; 0 for a group that is not there. */
static unsigned tunnels_of(const struct registry *reg, const char *group_id)
{
	const struct reg_group *g = registry_find_group(reg, group_id);

	return g ? g->ntunnels : 0;
}

/* What the gateway's max_tunnels_per_group asks before a join: does it
 * add to the group's count? A new client or a new replica does; its own
 * replica again, or a newer instance taking every tunnel over, does not. */
static void test_join_adds(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(tunnels_of(&f->reg, "g"), 0);
	assert_true(registry_join_adds(&f->reg, "a", 1, 0));
	registry_join(&f->reg, &f->t[0], "a", "g", 1, 0, "x");
	registry_join(&f->reg, &f->t[1], "a", "g", 1, 1, "x");
	assert_int_equal(tunnels_of(&f->reg, "g"), 2);
	assert_false(registry_join_adds(&f->reg, "a", 1, 1)); /* replaces its stale self */
	assert_true(registry_join_adds(&f->reg, "a", 1, 2));
	assert_false(registry_join_adds(&f->reg, "a", 2, 5)); /* a newer instance: 2 go, 1 comes */
	assert_true(registry_join_adds(&f->reg, "b", 1, 0));
	registry_join(&f->reg, &f->t[2], "a", "g", 1, 1, "y");
	assert_int_equal(tunnels_of(&f->reg, "g"), 2);
	assert_int_equal(tunnels_of(&f->reg, "other"), 0);
}

/* A tunnel's tally counts it while it is registered, over any groups:
 * joined, swapped in place of its stale self, evicted by a newer
 * instance, left. */
static void test_tally_follows_tunnels(void **state)
{
	struct fixture *f = *state;
	unsigned tally = 0;
	int i;

	for (i = 0; i < 5; i++)
		f->t[i].tally = &tally;
	registry_join(&f->reg, &f->t[0], "a", "x", 1, 0, "r");
	registry_join(&f->reg, &f->t[1], "b", "y", 1, 0, "r");
	registry_join(&f->reg, &f->t[2], "b", "y", 1, 1, "r");
	assert_int_equal(tally, 3);
	registry_join(&f->reg, &f->t[3], "a", "x", 1, 0, "r"); /* a's one tunnel, swapped */
	assert_int_equal(tally, 3);
	registry_join(&f->reg, &f->t[4], "b", "y", 2, 0, "r"); /* b's new instance: 2 go */
	assert_int_equal(tally, 2);
	registry_leave(&f->reg, &f->t[3]);
	registry_leave(&f->reg, &f->t[3]); /* twice: no-op */
	assert_int_equal(tally, 1);
	registry_leave(&f->reg, &f->t[4]);
	assert_int_equal(tally, 0);
}

/* A drained client takes no new stream; the mark outlives its tunnels and
 * holds when the id comes back, until it is cleared. */
static void test_drained_client_skipped_and_remembered(void **state)
{
	struct fixture *f = *state;
	struct reg_group *g;
	bool fell_back, full;
	int i;

	assert_int_equal(registry_set_drained(&f->reg, "a", true), -ENOENT);
	assert_false(registry_is_drained(&f->reg, "a"));
	registry_join(&f->reg, &f->t[0], "a", "g", 1, 0, "x");
	registry_join(&f->reg, &f->t[1], "b", "g", 2, 0, "x");
	assert_int_equal(registry_set_drained(&f->reg, "a", true), 0);
	assert_int_equal(registry_set_drained(&f->reg, "a", true), 0); /* idempotent */
	g = registry_find_group(&f->reg, "g");
	assert_non_null(g);
	for (i = 0; i < 4; i++)
		assert_ptr_equal(registry_pick(&f->reg, 0, "g", false, &fell_back, &full),
				 &f->t[1]);
	/* the only other client gone: nothing to pick, and it is not "full" */
	registry_leave(&f->reg, &f->t[1]);
	assert_null(registry_pick(&f->reg, 0, "g", false, &fell_back, &full));
	assert_false(full);
	/* the mark holds for the id across a reconnect */
	registry_leave(&f->reg, &f->t[0]);
	assert_true(registry_is_drained(&f->reg, "a"));
	assert_int_equal(registry_set_drained(&f->reg, "a", true), 0);
	registry_join(&f->reg, &f->t[2], "a", "g", 3, 0, "x");
	assert_true(registry_find_client(&f->reg, "a")->drained);
	assert_null(registry_pick(&f->reg, 0, "g", false, &fell_back, &full));
	assert_int_equal(registry_set_drained(&f->reg, "a", false), 0);
	assert_false(registry_find_client(&f->reg, "a")->drained);
	assert_ptr_equal(registry_pick(&f->reg, 0, "g", false, &fell_back, &full), &f->t[2]);
	/* clearing a mark on a gone client works once, then the id is unknown */
	assert_int_equal(registry_set_drained(&f->reg, "a", true), 0);
	registry_leave(&f->reg, &f->t[2]);
	assert_int_equal(registry_set_drained(&f->reg, "a", false), 0);
	assert_int_equal(registry_set_drained(&f->reg, "a", false), -ENOENT);
	/* a mark left at destroy is freed (ASan would see a leak) */
	registry_join(&f->reg, &f->t[3], "c", "g", 4, 0, "x");
	assert_int_equal(registry_set_drained(&f->reg, "c", true), 0);
}

/* The round-robin decides the agent; among its tunnels one of the caller's
 * worker is taken, never a suspect one instead of a sound one. Each agent
 * keeps the share its tunnels weigh. */
static void test_pick_prefers_own_worker(void **state)
{
	struct fixture *f = *state;
	struct reg_client *tried[1];
	int seen[5] = { 0 };
	bool fb, full;

	f->t[0].worker = 0; /* a */
	f->t[1].worker = 1;
	f->t[2].worker = 0; /* b */
	f->t[3].worker = 1;
	f->t[4].worker = 0; /* c: one tunnel */
	registry_join(&f->reg, &f->t[0], "a", "g", 1, 0, "a");
	registry_join(&f->reg, &f->t[1], "a", "g", 1, 1, "a");
	registry_join(&f->reg, &f->t[2], "b", "g", 2, 0, "b");
	registry_join(&f->reg, &f->t[3], "b", "g", 2, 1, "b");
	registry_join(&f->reg, &f->t[4], "c", "g", 3, 0, "c");
	for (int i = 0; i < 10; i++)
		seen[registry_pick(&f->reg, 1, "g", false, &fb, &full) - f->t]++;
	/* worker 1's tunnels of a and b, c's only one; shares 2:2:1 */
	assert_int_equal(seen[0], 0);
	assert_int_equal(seen[1], 4);
	assert_int_equal(seen[2], 0);
	assert_int_equal(seen[3], 4);
	assert_int_equal(seen[4], 2);
	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < 10; i++)
		seen[registry_pick(&f->reg, 0, "g", false, &fb, &full) - f->t]++;
	assert_int_equal(seen[0], 4);
	assert_int_equal(seen[2], 4);
	assert_int_equal(seen[4], 2);
	/* a's tunnel on worker 1 drains: worker 1 gets a's other one (a's
	 * share is then one tunnel's, as without workers) */
	f->t[1].draining = true;
	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < 10; i++)
		seen[registry_pick(&f->reg, 1, "g", false, &fb, &full) - f->t]++;
	assert_true(seen[0] > 0);
	assert_int_equal(seen[1], 0);
	/* b's tunnel on worker 1 is suspect: never taken for the sound one */
	f->t[1].draining = false;
	f->t[3].suspect = true;
	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < 10; i++)
		seen[registry_pick(&f->reg, 1, "g", false, &fb, &full) - f->t]++;
	assert_int_equal(seen[3], 0);
	assert_true(seen[2] > 0);
	/* every tunnel suspect: tried anyway, the caller's preferred */
	for (int i = 0; i < 5; i++)
		f->t[i].suspect = true;
	for (int i = 0; i < 4; i++)
		assert_int_not_equal(registry_pick(&f->reg, 1, "g", false, &fb, &full), &f->t[0]);
	for (int i = 0; i < 5; i++)
		f->t[i].suspect = false;
	/* a retry skips the failed client's tunnels whatever their worker */
	tried[0] = f->t[1].client;
	for (int i = 0; i < 6; i++) {
		struct reg_tunnel *t = registry_pick_other(&f->reg, 1, "g", tried, 1, &full);

		assert_true(t == &f->t[3] || t == &f->t[4]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_groups_appear_and_vanish, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_robin_and_fallback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tunnels_spread_and_draining_skipped, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_full_group_does_not_fall_back, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_replicas_weigh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_suspect_skipped_unless_all_are, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_pick_other_skips_tried_clients, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_retry_does_not_move_the_cursor, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_peek_does_not_move_the_cursor, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_pick_prefers_own_worker, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_replica_replaces_stale_tunnel, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_single_tunnel_swap_keeps_client, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_new_instance_takes_over, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_group_cannot_take_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_credential_cannot_take_id, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_group_counts_streams, setup, teardown),
		cmocka_unit_test_setup_teardown(test_join_adds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tally_follows_tunnels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copies_sorted_and_independent, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_drained_client_skipped_and_remembered, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
