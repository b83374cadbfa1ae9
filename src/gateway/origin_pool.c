/* origin_pool.c — idle streams to origins between HTTP user connections
 * (origin_pool.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <utlist.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "gateway.h"
#include "origin_pool.h"

struct pool_key;

struct pooled {
	struct stream st; /* ops: pooled_ops, owner: this */
	struct gw_worker *w;
	struct pool_key *key;
	struct reg_client *client; /* referenced */
	struct timer idle;
	struct pooled *prev, *next; /* the key's list, oldest first (utlist DL) */
};

/* Streams parked under one key. */
struct pool_key {
	UT_hash_handle hh;
	struct pooled *entries;
	unsigned n;
	size_t len;
	char text[];
};

/* gateway.pool_dir: which workers hold streams parked under a key (only
 * with more than one worker: it tells a worker where to send a request). */
struct pool_dir {
	UT_hash_handle hh;
	unsigned *count; /* [gateway.nworkers]: 1 while the worker holds the key */
	size_t len;
	char text[];
};

/* w begins to hold key (delta +1: its first stream parked under it) or
 * stops (-1: its last one left). */
static void dir_count(struct gw_worker *w, const char *key, size_t len, int delta)
{
	struct gateway *gw = w->gw;
	struct pool_dir *d;
	unsigned i;

	if (gw->nworkers == 1)
		return;
	gw_lock(gw);
	HASH_FIND(hh, gw->pool_dir, key, len, d);
	if (!d && delta > 0) {
		d = calloc(1, sizeof(*d) + len);
		if (d)
			d->count = calloc(gw->nworkers, sizeof(*d->count));
		if (!d || !d->count) {
			free(d);
			gw_unlock(gw);
			return; /* not found elsewhere: only a missed reuse */
		}
		memcpy(d->text, key, len);
		d->len = len;
		HASH_ADD_KEYPTR(hh, gw->pool_dir, d->text, d->len, d);
	}
	if (!d) {
		gw_unlock(gw);
		return;
	}
	if (delta > 0)
		d->count[w->index]++;
	else if (d->count[w->index])
		d->count[w->index]--;
	for (i = 0; i < gw->nworkers && !d->count[i]; i++)
		;
	if (i == gw->nworkers) {
		HASH_DEL(gw->pool_dir, d);
		free(d->count);
		free(d);
	}
	gw_unlock(gw);
}

int origin_pool_elsewhere(struct gw_worker *w, const char *key, size_t key_len)
{
	struct gateway *gw = w->gw;
	struct pool_dir *d;
	int found = -1;
	unsigned i;

	if (gw->nworkers == 1)
		return -1;
	gw_lock(gw);
	HASH_FIND(hh, gw->pool_dir, key, key_len, d);
	for (i = 0; d && i < gw->nworkers && found < 0; i++)
		if (i != w->index && d->count[i])
			found = (int)i;
	gw_unlock(gw);
	return found;
}

void origin_pool_dir_free(struct gateway *gw)
{
	struct pool_dir *d, *tmp;

	HASH_ITER (hh, gw->pool_dir, d, tmp) {
		HASH_DEL(gw->pool_dir, d);
		free(d->count);
		free(d);
	}
}

/* Parked streams of one agent, for ORIGIN_POOL_PER_AGENT_MAX. */
struct pool_agent {
	UT_hash_handle hh;
	const struct reg_client *client;
	unsigned n;
};

struct origin_pool {
	struct pool_key *keys;
	struct pool_agent *agents;
	unsigned n;
};

static struct origin_pool *pool_of(struct gw_worker *w)
{
	if (!w->origin_pool)
		w->origin_pool = calloc(1, sizeof(struct origin_pool));
	return w->origin_pool;
}

static struct pool_agent *agent_of(struct origin_pool *op, const struct reg_client *client)
{
	struct pool_agent *a;

	HASH_FIND_PTR(op->agents, &client, a);
	return a;
}

/* Take p out of the pool and free it; reset its stream when reset. */
static void pooled_remove(struct pooled *p, bool reset)
{
	struct gw_worker *w = p->w;
	struct origin_pool *op = w->origin_pool;
	struct pool_key *k = p->key;
	struct pool_agent *a = agent_of(op, p->client);

	timer_disarm(&w->ring, &p->idle);
	DL_DELETE(k->entries, p);
	if (--k->n == 0) {
		dir_count(w, k->text, k->len, -1);
		HASH_DEL(op->keys, k);
		free(k);
	}
	if (a && --a->n == 0) {
		HASH_DEL(op->agents, a);
		free(a);
	}
	__atomic_store_n(&w->parked, op->n - 1, __ATOMIC_RELAXED);
	if (--op->n == 0) { /* both tables are empty too */
		free(op);
		w->origin_pool = NULL;
	}
	gw_lock(w->gw);
	registry_client_put(p->client);
	gw_unlock(w->gw);
	if (reset && p->st.tunnel)
		stream_reset(&p->st, FRAME_OPEN_GENERAL);
	free(p);
}

static int pooled_data(struct stream *s, const uint8_t *data, size_t n)
{
	/* nothing was asked: the connection is no longer what it was */
	log_debug("Parked origin connection dropped", LF_S("reason", "the origin sent bytes"));
	pooled_remove(s->owner, true);
	return 0;
}

static void pooled_fin(struct stream *s)
{
	log_debug("Parked origin connection dropped", LF_S("reason", "the origin closed it"));
	pooled_remove(s->owner, true);
}

static void pooled_reset(struct stream *s, uint8_t reason, const char *why)
{
	log_debug("Parked origin connection dropped", LF_S("reason", why));
	pooled_remove(s->owner, false);
}

static void pooled_writable(struct stream *s)
{
}

static const struct stream_ops pooled_ops = {
	.on_data = pooled_data,
	.on_fin = pooled_fin,
	.on_reset = pooled_reset,
	.on_writable = pooled_writable,
};

static void pooled_expired(struct ring *r, struct timer *t)
{
	struct pooled *p = container_of(t, struct pooled, idle);

	log_debug("Parked origin connection dropped", LF_S("reason", "unused"));
	pooled_remove(p, true);
}

bool origin_pool_enabled(const struct gateway *gw)
{
	return gw->cfg->http.origin_pool_idle_ms != 0;
}

int origin_pool_put(struct gw_worker *w, const char *key, size_t key_len, struct stream *s,
		    struct reg_client *client, size_t owed_credit)
{
	uint32_t idle_ms = w->gw->cfg->http.origin_pool_idle_ms;
	struct origin_pool *op;
	struct pool_agent *a;
	struct pool_key *k;
	struct pooled *p;

	if (!idle_ms)
		return -EOPNOTSUPP;
	op = pool_of(w);
	if (!op)
		return -ENOMEM;
	if (key_len > ORIGIN_POOL_KEY_MAX || !s->tunnel)
		return -EINVAL;
	a = agent_of(op, client);
	HASH_FIND(hh, op->keys, key, key_len, k);
	if ((a && a->n >= ORIGIN_POOL_PER_AGENT_MAX) || (k && k->n >= ORIGIN_POOL_PER_KEY_MAX))
		return -ENOSPC;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	if (!a) {
		a = calloc(1, sizeof(*a));
		if (!a) {
			free(p);
			return -ENOMEM;
		}
		a->client = client;
		HASH_ADD_PTR(op->agents, client, a);
	}
	if (!k) {
		k = calloc(1, sizeof(*k) + key_len);
		if (!k) {
			if (!a->n) {
				HASH_DEL(op->agents, a);
				free(a);
			}
			free(p);
			return -ENOMEM;
		}
		memcpy(k->text, key, key_len);
		k->len = key_len;
		HASH_ADD_KEYPTR(hh, op->keys, k->text, k->len, k);
	}
	p->w = w;
	p->key = k;
	p->client = client;
	gw_lock(w->gw);
	registry_client_get(client);
	gw_unlock(w->gw);
	stream_move(&p->st, s, &pooled_ops, p);
	memset(p->st.count_sent, 0, sizeof(p->st.count_sent));
	memset(p->st.count_received, 0, sizeof(p->st.count_received));
	if (owed_credit)
		stream_consumed(&p->st, owed_credit);
	DL_APPEND(k->entries, p);
	if (k->n++ == 0)
		dir_count(w, k->text, k->len, +1);
	a->n++;
	op->n++;
	__atomic_store_n(&w->parked, op->n, __ATOMIC_RELAXED);
	timer_init(&p->idle, pooled_expired);
	timer_arm(&w->ring, &p->idle, idle_ms);
	return 0;
}

struct reg_client *origin_pool_take(struct gw_worker *w, const char *key, size_t key_len,
				    const char *group, struct stream *s,
				    const struct stream_ops *ops, void *owner)
{
	struct origin_pool *op;
	struct reg_client *client;
	struct pool_key *k;
	struct pooled *p;

	for (;;) {
		op = w->origin_pool; /* a removal may have freed it */
		if (!op)
			return NULL;
		HASH_FIND(hh, op->keys, key, key_len, k);
		if (!k)
			return NULL;
		p = k->entries->prev; /* the newest: the least likely to be stale */
		if (p->st.tunnel && gw_agent_usable(w->gw, p->client, p->st.tunnel, group))
			break;
		pooled_remove(p, true); /* k may be gone: look it up again */
	}
	client = p->client;
	gw_lock(w->gw);
	registry_client_get(client);
	gw_unlock(w->gw);
	stream_move(s, &p->st, ops, owner);
	pooled_remove(p, false);
	return client;
}

void origin_pool_release(struct gw_worker *w, bool drained_only, const struct tunnel *t,
			 const char *group)
{
	bool locked = drained_only || group; /* client->drained, client->group */
	struct origin_pool *op;
	struct pool_key *k, *ktmp;
	struct pooled *p, *found;

	/* a reset may end a tunnel and with it other parked streams, which
	 * leave the lists (and maybe the pool) under us: start over after
	 * each removal */
	while ((op = w->origin_pool)) {
		found = NULL;
		if (locked)
			gw_lock(w->gw);
		HASH_ITER (hh, op->keys, k, ktmp) {
			DL_FOREACH (k->entries, p) {
				if ((t && p->st.tunnel != t) ||
				    (drained_only && !p->client->drained) ||
				    (group && (!p->client->group ||
					       strcmp(p->client->group->id, group) != 0)))
					continue;
				found = p;
				break;
			}
			if (found)
				break;
		}
		if (locked)
			gw_unlock(w->gw);
		if (!found)
			return;
		pooled_remove(found, true);
	}
}

unsigned origin_pool_count(const struct gw_worker *w)
{
	return w->origin_pool ? w->origin_pool->n : 0;
}
