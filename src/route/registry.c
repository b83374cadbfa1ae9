/* registry.c — groups -> clients -> tunnels (see registry.h). */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/common.h"
#include "anyproxy/idhash.h"
#include "anyproxy/registry.h"

void registry_init(struct registry *reg, registry_evict_cb on_evict, void *ctx)
{
	memset(reg, 0, sizeof(*reg));
	reg->on_evict = on_evict;
	reg->ctx = ctx;
}

static int grow(void *arrp, unsigned *cap, unsigned need)
{
	void **arr = arrp;
	unsigned ncap;
	void *p;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 4;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*arr, ncap * sizeof(void *));
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

static void group_remove_client(struct registry *reg, struct reg_group *g, struct reg_client *c)
{
	unsigned i;

	for (i = 0; i < g->nclients; i++) {
		if (g->clients[i] == c) {
			g->clients[i] = g->clients[--g->nclients];
			break;
		}
	}
	if (g->nclients == 0) {
		HASH_DEL(reg->groups, g);
		free(g->clients);
		free(g);
	}
}

/* t joins or leaves its client's list: its group's count and its tally
 * follow (delta +1 or -1). */
static void count_tunnel(struct reg_client *c, struct reg_tunnel *t, int delta)
{
	c->group->ntunnels += (unsigned)delta;
	if (t->tally)
		*t->tally += (unsigned)delta;
}

static void client_free(struct registry *reg, struct reg_client *c)
{
	unsigned i;

	HASH_DEL(reg->clients, c);
	for (i = 0; i < c->ntunnels; i++) /* registry_destroy: they are still listed */
		count_tunnel(c, c->tunnels[i], -1);
	c->group->streams_active -= c->streams_active;
	group_remove_client(reg, c->group, c);
	c->group = NULL;
	free(c->tunnels);
	c->tunnels = NULL;
	c->ntunnels = c->tunnels_cap = 0;
	if (c->refs) {
		c->detached = true; /* freed by the last registry_client_put() */
		return;
	}
	free(c);
}

void registry_client_get(struct reg_client *c)
{
	c->refs++;
}

void registry_client_put(struct reg_client *c)
{
	if (--c->refs == 0 && c->detached)
		free(c);
}

bool registry_leave(struct registry *reg, struct reg_tunnel *t)
{
	struct reg_client *c = t->client;
	unsigned i;

	if (!c)
		return false;
	t->client = NULL;
	for (i = 0; i < c->ntunnels; i++) {
		if (c->tunnels[i] == t) {
			c->tunnels[i] = c->tunnels[--c->ntunnels];
			count_tunnel(c, t, -1);
			break;
		}
	}
	if (c->ntunnels)
		return false;
	client_free(reg, c);
	return true;
}

static void evict(struct registry *reg, struct reg_tunnel *t, uint16_t code)
{
	registry_leave(reg, t);
	if (reg->on_evict)
		reg->on_evict(t, code, reg->ctx);
}

static struct reg_group *group_get(struct registry *reg, const char *group_id)
{
	struct reg_group *g;

	IDHASH_GET(reg->groups, group_id, g);
	return g;
}

int registry_join(struct registry *reg, struct reg_tunnel *t, const char *client_id,
		  const char *group_id, uint64_t instance, uint16_t replica,
		  const char *remote_addr)
{
	struct reg_client *c = registry_find_client(reg, client_id);
	struct reg_group *g;
	int created = 0;
	unsigned i;

	/* an id is owned by its group and credential: no one else takes it over */
	if (c && (strcmp(c->group->id, group_id) != 0 || c->credential != t->credential))
		return -EADDRINUSE;
	if (c && c->instance != instance) {
		/* another process (or a restarted one) claims this id: newest wins */
		while (c->ntunnels) {
			struct reg_tunnel *old = c->tunnels[0];
			bool gone = registry_leave(reg, old);

			if (reg->on_evict)
				reg->on_evict(old, FRAME_ERR_REPLACED, reg->ctx);
			if (gone)
				break;
		}
		c = NULL;
	}
	if (c) {
		for (i = 0; i < c->ntunnels; i++) {
			if (c->tunnels[i]->replica == replica) {
				struct reg_tunnel *stale = c->tunnels[i];

				if (c->ntunnels == 1) {
					/* keep the client record: swap the tunnel in place */
					stale->client = NULL;
					count_tunnel(c, stale, -1);
					c->tunnels[0] = t;
					count_tunnel(c, t, +1);
					t->client = c;
					t->replica = replica;
					t->draining = false;
					snprintf(c->remote_addr, sizeof(c->remote_addr), "%s",
						 remote_addr);
					if (reg->on_evict)
						reg->on_evict(stale, FRAME_ERR_REPLACED, reg->ctx);
					return 0;
				}
				evict(reg, stale, FRAME_ERR_REPLACED);
				break;
			}
		}
	}
	if (!c) {
		g = group_get(reg, group_id);
		if (!g)
			return -ENOMEM;
		c = calloc(1, sizeof(*c));
		if (!c || grow(&g->clients, &g->clients_cap, g->nclients + 1) < 0) {
			free(c);
			if (g->nclients == 0) {
				HASH_DEL(reg->groups, g);
				free(g->clients);
				free(g);
			}
			return -ENOMEM;
		}
		snprintf(c->id, sizeof(c->id), "%s", client_id);
		c->group = g;
		c->instance = instance;
		c->credential = t->credential;
		c->connected_since = time(NULL);
		c->drained = registry_is_drained(reg, client_id);
		g->clients[g->nclients++] = c;
		HASH_ADD_STR(reg->clients, id, c);
		created = REGISTRY_NEW_CLIENT;
	}
	if (grow(&c->tunnels, &c->tunnels_cap, c->ntunnels + 1) < 0) {
		if (created)
			client_free(reg, c);
		return -ENOMEM;
	}
	c->tunnels[c->ntunnels++] = t;
	count_tunnel(c, t, +1);
	t->client = c;
	t->replica = replica;
	t->draining = false;
	snprintf(c->remote_addr, sizeof(c->remote_addr), "%s", remote_addr);
	return created;
}

bool registry_join_adds(const struct registry *reg, const char *client_id, uint64_t instance,
			uint16_t replica)
{
	const struct reg_client *c = registry_find_client(reg, client_id);
	unsigned i;

	if (!c)
		return true;
	if (c->instance != instance)
		return false;
	for (i = 0; i < c->ntunnels; i++)
		if (c->tunnels[i]->replica == replica)
			return false;
	return true;
}

static bool skipped(const struct reg_client *c, struct reg_client *const *skip, unsigned nskip)
{
	unsigned i;

	for (i = 0; i < nskip; i++)
		if (skip[i] == c)
			return true;
	return false;
}

/* May t take the stream in this pass? (*full: it was only too busy.) */
static bool candidate(struct registry *reg, const struct reg_client *c, const struct reg_tunnel *t,
		      bool allow_suspect, bool *full)
{
	if (c->drained || t->draining || (t->suspect && !allow_suspect))
		return false;
	if (reg->usable && !reg->usable(t, reg->ctx)) {
		*full = true;
		return false;
	}
	return true;
}

/*
 * Round-robin over the group's tunnels, not its clients, so that a client
 * with three replicas carries three times the streams of a client with one.
 * The cursor (g->rr: client index, g->rr_tunnel: tunnel index in it) moves
 * past the tunnel picked when advance says so (not for a retry's pick:
 * else the agent after a failing one would always be retried, and the
 * failing one always picked first; nor for a look at where the next pick
 * goes); one walk visits every tunnel once. Suspect tunnels
 * are taken only when allow_suspect says so (the caller's second pass).
 * The walk decides the client; among that client's candidates a tunnel of
 * worker `worker` is taken instead of the one the cursor stands on
 * (registry.h), which leaves every client's share as it was.
 */
static struct reg_tunnel *group_walk(struct registry *reg, struct reg_group *g, unsigned worker,
				     struct reg_client *const *skip, unsigned nskip, bool advance,
				     bool allow_suspect, bool *full)
{
	unsigned total = g->ntunnels, ci = g->rr % g->nclients, ti = g->rr_tunnel;
	unsigned k, j;

	for (k = 0; k < total; k++) {
		struct reg_client *c = g->clients[ci];
		struct reg_tunnel *t;

		if (ti >= c->ntunnels) {
			ci = (ci + 1) % g->nclients;
			ti = 0;
			c = g->clients[ci];
		}
		t = c->tunnels[ti++];
		if (skipped(c, skip, nskip) || !candidate(reg, c, t, allow_suspect, full))
			continue;
		if (advance) {
			g->rr = ci;
			g->rr_tunnel = ti;
		}
		if (t->worker == worker)
			return t;
		for (j = 0; j < c->ntunnels; j++) {
			struct reg_tunnel *o = c->tunnels[j];

			if (o != t && o->worker == worker && !(o->suspect && !t->suspect) &&
			    candidate(reg, c, o, allow_suspect, full))
				return o;
		}
		return t;
	}
	return NULL;
}

static struct reg_tunnel *group_pick(struct registry *reg, struct reg_group *g, unsigned worker,
				     struct reg_client *const *skip, unsigned nskip, bool advance,
				     bool *full)
{
	struct reg_tunnel *t;

	*full = false;
	if (!g)
		return NULL;
	t = group_walk(reg, g, worker, skip, nskip, advance, false, full);
	/* every candidate is suspect: try one anyway rather than fail (it may
	 * only have been slow; a hung one costs one more open deadline) */
	return t ? t : group_walk(reg, g, worker, skip, nskip, advance, true, full);
}

static struct reg_tunnel *pick(struct registry *reg, unsigned worker, const char *group_id,
			       bool may_fall_back, bool advance, bool *fell_back, bool *full)
{
	struct reg_tunnel *t =
		group_pick(reg, registry_find_group(reg, group_id), worker, NULL, 0, advance, full);

	*fell_back = false;
	if (t || *full || !may_fall_back || group_id[0] == '\0')
		return t;
	t = group_pick(reg, registry_find_group(reg, ""), worker, NULL, 0, advance, full);
	*fell_back = t != NULL;
	return t;
}

struct reg_tunnel *registry_pick(struct registry *reg, unsigned worker, const char *group_id,
				 bool may_fall_back, bool *fell_back, bool *full)
{
	return pick(reg, worker, group_id, may_fall_back, true, fell_back, full);
}

struct reg_tunnel *registry_peek(struct registry *reg, unsigned worker, const char *group_id,
				 bool may_fall_back)
{
	bool fell_back, full;

	return pick(reg, worker, group_id, may_fall_back, false, &fell_back, &full);
}

struct reg_tunnel *registry_pick_other(struct registry *reg, unsigned worker, const char *group_id,
				       struct reg_client *const *skip, unsigned nskip, bool *full)
{
	return group_pick(reg, registry_find_group(reg, group_id), worker, skip, nskip, false,
			  full);
}

struct reg_client *registry_find_client(const struct registry *reg, const char *client_id)
{
	struct reg_client *c;

	HASH_FIND_STR(reg->clients, client_id, c);
	return c;
}

bool registry_is_drained(const struct registry *reg, const char *client_id)
{
	struct reg_drain *d;

	HASH_FIND_STR(reg->drained, client_id, d);
	return d != NULL;
}

int registry_set_drained(struct registry *reg, const char *client_id, bool drain)
{
	struct reg_client *c = registry_find_client(reg, client_id);
	struct reg_drain *d;

	HASH_FIND_STR(reg->drained, client_id, d);
	if (!c && !d)
		return -ENOENT;
	if (drain && !d) {
		d = calloc(1, sizeof(*d));
		if (!d)
			return -ENOMEM;
		snprintf(d->id, sizeof(d->id), "%s", client_id);
		HASH_ADD_STR(reg->drained, id, d);
	} else if (!drain && d) {
		HASH_DEL(reg->drained, d);
		free(d);
	}
	if (c)
		c->drained = drain;
	return 0;
}

unsigned registry_client_count(const struct registry *reg)
{
	return HASH_COUNT(reg->clients);
}

struct reg_group *registry_find_group(const struct registry *reg, const char *group_id)
{
	struct reg_group *g;

	HASH_FIND_STR(reg->groups, group_id, g);
	return g;
}

/* The replica indices of c's suspect tunnels, "0,2" (malloc'd); NULL when
 * none is suspect or out of memory (the count says how many are). */
static char *suspect_replicas(const struct reg_client *c)
{
	/* replica indices are 16-bit: at most 6 bytes each with the comma */
	size_t len = (size_t)c->ntunnels * 6 + 1, used = 0;
	char *out = malloc(len);
	unsigned i;

	if (!out)
		return NULL;
	for (i = 0; i < c->ntunnels; i++)
		if (c->tunnels[i]->suspect)
			used += (size_t)snprintf(out + used, len - used, "%s%u", used ? "," : "",
						 (unsigned)c->tunnels[i]->replica);
	return out;
}

static int copy_client(const struct reg_client *c, struct reg_client_row *r)
{
	unsigned i;

	memset(r, 0, sizeof(*r));
	memcpy(r->id, c->id, sizeof(r->id));
	memcpy(r->group, c->group->id, sizeof(r->group));
	memcpy(r->remote_addr, c->remote_addr, sizeof(r->remote_addr));
	r->connected_since = c->connected_since;
	r->tunnels = c->ntunnels;
	for (i = 0; i < c->ntunnels; i++)
		r->suspect += c->tunnels[i]->suspect;
	r->streams_active = c->streams_active;
	r->streams_total = c->streams_total;
	/* the workers count bytes without the owner's lock */
	r->bytes_in = __atomic_load_n(&c->bytes_in, __ATOMIC_RELAXED);
	r->bytes_out = __atomic_load_n(&c->bytes_out, __ATOMIC_RELAXED);
	r->drained = c->drained;
	if (r->suspect && !(r->suspect_replicas = suspect_replicas(c)))
		return -ENOMEM;
	return 0;
}

int registry_copy_clients(const struct registry *reg, const char *only,
			  struct reg_client_row **rows, size_t *count)
{
	const struct reg_client *c, *tmp;
	size_t n = 0;

	if (only) {
		c = registry_find_client(reg, only);
		*count = c ? 1 : 0;
	} else {
		*count = HASH_COUNT(reg->clients);
	}
	*rows = calloc(*count ? *count : 1, sizeof(**rows));
	if (!*rows)
		return -ENOMEM;
	if (only) {
		if (c && copy_client(c, *rows) < 0)
			goto oom;
		return 0;
	}
	HASH_ITER (hh, reg->clients, c, tmp)
		if (copy_client(c, &(*rows)[n++]) < 0)
			goto oom;
	return 0;
oom:
	registry_free_client_rows(*rows, *count);
	*rows = NULL;
	return -ENOMEM;
}

void registry_free_client_rows(struct reg_client_row *rows, size_t count)
{
	size_t i;

	for (i = 0; rows && i < count; i++)
		free(rows[i].suspect_replicas);
	free(rows);
}

int registry_copy_groups(const struct registry *reg, struct reg_group_row **rows, size_t *count)
{
	const struct reg_group *g, *tmp;
	size_t n = 0;
	unsigned i;

	*count = HASH_COUNT(reg->groups);
	*rows = calloc(*count ? *count : 1, sizeof(**rows));
	if (!*rows)
		return -ENOMEM;
	HASH_ITER (hh, reg->groups, g, tmp) {
		struct reg_group_row *r = &(*rows)[n++];

		memcpy(r->id, g->id, sizeof(r->id));
		r->clients = g->nclients;
		r->tunnels = g->ntunnels;
		r->streams_active = g->streams_active;
		for (i = 0; i < g->nclients; i++)
			r->drained += g->clients[i]->drained;
	}
	return 0;
}

_Static_assert(offsetof(struct reg_client_row, id) == 0, "a client row starts with its id");
_Static_assert(offsetof(struct reg_group_row, id) == 0, "a group row starts with its id");

static int cmp_row_id(const void *a, const void *b)
{
	return strcmp(a, b); /* each row starts with its id */
}

void registry_sort_rows(void *rows, size_t count, size_t size)
{
	if (count > 1) /* rows may be NULL when there are none */
		qsort(rows, count, size, cmp_row_id);
}

void registry_stream_opened(struct reg_client *c)
{
	c->streams_active++;
	if (c->group)
		c->group->streams_active++;
}

void registry_stream_closed(struct reg_client *c)
{
	c->streams_active--;
	if (c->group) /* a detached client's streams left its group with it */
		c->group->streams_active--;
}

void registry_destroy(struct registry *reg)
{
	struct reg_client *c, *tmp;
	struct reg_drain *d, *dtmp;

	HASH_ITER (hh, reg->drained, d, dtmp) {
		HASH_DEL(reg->drained, d);
		free(d);
	}

	HASH_ITER (hh, reg->clients, c, tmp) {
		unsigned i;

		for (i = 0; i < c->ntunnels; i++)
			c->tunnels[i]->client = NULL;
		client_free(reg, c);
	}
}
