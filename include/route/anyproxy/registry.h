/*
 * registry.h — the gateway's map of groups -> clients -> tunnels.
 *
 * Pure bookkeeping: no I/O, no logging. The gateway embeds a struct
 * reg_tunnel in each authenticated tunnel and joins it here; routing asks
 * registry_pick() for a tunnel of a group.
 *
 * Identity rules (docs/operations.md "Client identity"):
 * - a client is (client_id, instance): instance is a random number an agent
 *   process draws at start, shared by its replica tunnels;
 * - a client_id belongs to the group and the credential that registered
 *   it: a tunnel claiming it for another group, or admitted by another
 *   credential, is refused (-EADDRINUSE) and the registered client keeps
 *   its tunnels;
 * - a tunnel of the same instance and replica index as a registered one
 *   replaces it (the agent reconnected before the gateway saw the old
 *   tunnel die);
 * - a tunnel of another instance with the same client_id, group and
 *   credential replaces every tunnel of the old instance (newest wins: a
 *   restarted agent is back at once; two live processes sharing an id are
 *   told FRAME_ERR_REPLACED).
 * Replaced tunnels are detached at once, then handed to on_evict so the
 * owner closes them; a later registry_leave() on them is a no-op.
 *
 * Groups appear with their first client and vanish with their last.
 *
 * Drain (apctl drain): a drained client_id takes no new streams; its open
 * streams go on. The mark belongs to the id, not to one connection: it
 * outlives the client's tunnels (an agent that reconnects with the same id
 * is still drained) and lasts until registry_set_drained(false) or the
 * gateway exits. Only a connected client can be marked, so the set of
 * marks grows only by operators' commands.
 */
#ifndef ANYPROXY_REGISTRY_H
#define ANYPROXY_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uthash.h>

#include "anyproxy/frame.h"

struct reg_client;

struct reg_tunnel {
	struct reg_client *client; /* NULL when not registered */
	uint16_t replica;
	bool draining; /* sent GOAWAY: no new streams */
	/* missed an OPEN or pong deadline: no new streams while another tunnel
	 * of the group can take them (the owner sets and clears it) */
	bool suspect;
	/* what admitted this tunnel, set by the owner before registry_join():
	 * opaque to the registry, which only compares it for equality */
	uint32_t credential;
	void *owner;
	/* the worker thread whose ring runs the tunnel (set by the owner
	 * before registry_join(); a pick prefers the caller's: see below) */
	uint16_t worker;
	/* counts the tunnel while it is registered, as its group's count does
	 * (set by the owner before registry_join(); NULL: nothing): for a
	 * total over several groups, such as all a credential admits */
	unsigned *tally;
};

struct reg_group;

struct reg_client {
	char id[FRAME_MAX_ID_LEN + 1];
	struct reg_group *group;
	uint64_t instance;
	uint32_t credential; /* of the tunnel that registered it */
	struct reg_tunnel **tunnels;
	unsigned ntunnels, tunnels_cap;
	char remote_addr[64];
	time_t connected_since;
	uint64_t streams_active, streams_total;
	uint64_t bytes_in, bytes_out; /* stream payload, user -> target = out */
	bool drained;                 /* its id is in registry.drained: no new streams */
	unsigned refs;                /* holders of a pointer besides the registry */
	bool detached;                /* gone from the registry, kept alive by refs */
	UT_hash_handle hh;
};

struct reg_group {
	char id[FRAME_MAX_ID_LEN + 1]; /* "" is the default group */
	struct reg_client **clients;
	unsigned nclients, clients_cap;
	/* sums over its clients, kept as they change: a pick and the
	 * max_connections_per_group check need them in O(1) */
	unsigned ntunnels;
	uint64_t streams_active;
	/* the pick cursor: clients[rr]->tunnels[rr_tunnel] is the next tunnel
	 * to try (either index may be stale: the walk wraps) */
	unsigned rr, rr_tunnel;
	UT_hash_handle hh;
};

typedef void (*registry_evict_cb)(struct reg_tunnel *t, uint16_t code, void *ctx);
/* May t take one more stream (its owner's limits)? NULL: always. */
typedef bool (*registry_usable_cb)(const struct reg_tunnel *t, void *ctx);

/* One drained client_id (registry.drained). */
struct reg_drain {
	char id[FRAME_MAX_ID_LEN + 1];
	UT_hash_handle hh;
};

struct registry {
	struct reg_group *groups;   /* by id */
	struct reg_drain *drained;  /* by id: client_ids that take no new streams */
	struct reg_client *clients; /* by id */
	registry_evict_cb on_evict;
	registry_usable_cb usable;
	void *ctx;
};

#define REGISTRY_NEW_CLIENT 1

void registry_init(struct registry *reg, registry_evict_cb on_evict, void *ctx);
/* Frees the bookkeeping; tunnels still registered are just detached. */
void registry_destroy(struct registry *reg);

/* Register t (its owner sets t->credential first). Returns
 * REGISTRY_NEW_CLIENT when the client appeared with this tunnel, 0 when it
 * joined an existing client, -EADDRINUSE when client_id is registered for
 * another group or with another credential (nothing changed:
 * registry_find_client() shows the holder), -ENOMEM. */
int registry_join(struct registry *reg, struct reg_tunnel *t, const char *client_id,
		  const char *group_id, uint64_t instance, uint16_t replica,
		  const char *remote_addr);

/* Would registry_join(client_id, instance, replica) add a tunnel to its
 * group's count? Not when it takes the place of its own stale replica, or
 * of every tunnel of an older instance (when it may join at all). */
bool registry_join_adds(const struct registry *reg, const char *client_id, uint64_t instance,
			uint16_t replica);

/* Unregister t. Returns true when its client left with it (last tunnel). */
bool registry_leave(struct registry *reg, struct reg_tunnel *t);

/*
 * A tunnel for a new stream of group_id: round-robin over the group's
 * tunnels (so a client's share grows with its replicas), skipping drained
 * clients (apctl drain), draining tunnels (GOAWAY) and full ones (as the
 * usable callback says). Suspect tunnels are skipped while another can
 * take the stream, and tried when every candidate is suspect.
 * The round-robin decides the agent (client); among that agent's tunnels
 * that can take the stream, one of worker `worker` (the caller's thread)
 * is taken before the one the cursor stands on, never a suspect one
 * instead of a sound one: the stream then needs no handover between
 * threads, and every agent's share of the group stays what its tunnels
 * weigh.
 * A group without a serving agent falls back to the default group ("")
 * when may_fall_back says so (sets *fell_back); the caller decides (the
 * registry knows nothing of tenants or config). A group whose agents are
 * all full never does: it is there, just busy (sets *full). NULL when no
 * tunnel can take the stream.
 */
struct reg_tunnel *registry_pick(struct registry *reg, unsigned worker, const char *group_id,
				 bool may_fall_back, bool *fell_back, bool *full);
/* Where registry_pick would go now, without moving the round-robin: for
 * a caller that picks again where the tunnel is (a datagram association
 * moving to the tunnel's worker). */
struct reg_tunnel *registry_peek(struct registry *reg, unsigned worker, const char *group_id,
				 bool may_fall_back);
/* The same within group_id only (no fallback), never picking a tunnel of
 * the nskip clients in skip: the next agent after skip failed a request
 * (the caller's worker preferred likewise). */
struct reg_tunnel *registry_pick_other(struct registry *reg, unsigned worker, const char *group_id,
				       struct reg_client *const *skip, unsigned nskip, bool *full);

struct reg_client *registry_find_client(const struct registry *reg, const char *client_id);

/*
 * Mark client_id drained (drain true) or clear the mark. Either needs a
 * connected client or an existing mark; both are idempotent. Returns 0,
 * -ENOENT (no such client, nothing changed) or -ENOMEM.
 */
int registry_set_drained(struct registry *reg, const char *client_id, bool drain);
bool registry_is_drained(const struct registry *reg, const char *client_id);
/* Registered clients. */
unsigned registry_client_count(const struct registry *reg);

/* Keep c's memory (and its counters) valid after the client leaves: user
 * connections hold a reference while they count bytes into it. */
void registry_client_get(struct reg_client *c);
void registry_client_put(struct reg_client *c);
struct reg_group *registry_find_group(const struct registry *reg, const char *group_id);

/*
 * Copies for listings (apctl, metrics): what a client or a group was when
 * copied, owing nothing to the registry, so that its owner can take them
 * under its lock and write them out after letting go of it. Each row
 * starts with its id: registry_sort_rows orders either kind by it.
 */
struct reg_client_row {
	char id[FRAME_MAX_ID_LEN + 1];
	char group[FRAME_MAX_ID_LEN + 1];
	char remote_addr[64];
	time_t connected_since;
	unsigned tunnels, suspect;
	char *suspect_replicas; /* the suspect tunnels' replicas, "0,2"; NULL when none */
	uint64_t streams_active, streams_total, bytes_in, bytes_out;
	bool drained;
};

struct reg_group_row {
	char id[FRAME_MAX_ID_LEN + 1];
	unsigned clients, tunnels, drained; /* drained: its clients that are */
	uint64_t streams_active;
};

/* Every client (only != NULL: the client of that id, if registered), in
 * no order: *rows (free with registry_free_client_rows), *count. 0 or
 * -ENOMEM (nothing to free). */
int registry_copy_clients(const struct registry *reg, const char *only,
			  struct reg_client_row **rows, size_t *count);
void registry_free_client_rows(struct reg_client_row *rows, size_t count);
/* Every group, in no order: *rows (free()), *count. 0 or -ENOMEM. */
int registry_copy_groups(const struct registry *reg, struct reg_group_row **rows, size_t *count);
/* Order count rows of size bytes, either kind above, by id. */
void registry_sort_rows(void *rows, size_t count, size_t size);

/* A stream (or datagram association) through c opened or ended: counts
 * it in c->streams_active and, while c is registered, in its group's. */
void registry_stream_opened(struct reg_client *c);
void registry_stream_closed(struct reg_client *c);

#endif
