/* listener.c — the gateway's listening sockets (one accept in flight at a
 * time, paused and resumed) and the [gateway] max_handshakes budget that
 * pauses them. Used by gateway.c and proxy.c; calls neither. */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uthash.h>
#include <utlist.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "gateway.h"

/* ---- listeners ---- */

static void listener_arm(struct ring *r, struct listener *l);

static void listener_retry(struct ring *r, struct timer *t)
{
	struct listener *l = container_of(t, struct listener, retry);

	listener_arm(r, l);
}

/*
 * One accept completed. A connection is always taken, even when its side
 * paused meanwhile: the accept was in flight when the pause was decided
 * and its connection is already out of the backlog. So a side may exceed
 * max_handshakes by the accepts in flight at that moment: at most one per
 * other listener of the side (the proxy side has three).
 */
static void accept_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct listener *l = container_of(op, struct listener, op);

	l->armed = false;
	if (res >= 0) {
		l->on_accept(l, res);
	} else if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
		/* out of descriptors or memory: back off a little, then re-arm
		 * (said once a second: a retry every 100 ms is no news) */
		l->accept_pauses++;
		if (log_rate_allow(&l->paused_rate, now_ms()))
			log_warn("Accept paused", LF_S("listener", l->name),
				 LF_S("error", strerror(-res)),
				 LF_U("retry_ms", GATEWAY_ACCEPT_RETRY_MS),
				 LF_U("pauses_total", l->accept_pauses));
		if (l->fd >= 0)
			timer_arm(r, &l->retry, GATEWAY_ACCEPT_RETRY_MS);
		return;
	} else if (res != -ECANCELED && res != -EINTR && res != -ECONNABORTED) {
		log_warn("Accept failed", LF_S("listener", l->name), LF_S("error", strerror(-res)));
	}
	listener_arm(r, l); /* not when paused (on_accept may have paused it) */
}

/* Arm the next accept, unless one is in flight, the listener is closed or
 * paused, or it backs off after EMFILE (its timer re-arms it). */
static void listener_arm(struct ring *r, struct listener *l)
{
	if (l->armed || l->fd < 0 || l->paused || timer_armed(&l->retry))
		return;
	l->op.cb = accept_done;
	ring_prep_accept(r, &l->op, l->fd);
	l->armed = true;
}

void listener_start(struct ring *r, struct listener *l)
{
	timer_init(&l->retry, listener_retry);
	listener_arm(r, l);
}

/* Stop accepting; connections that arrive wait in the listen backlog. The
 * accept in flight is cancelled (one that completes first is taken), at
 * once: a connection made after the pause's WARN is never accepted. */
static void listener_pause(struct ring *r, struct listener *l)
{
	l->paused = true;
	if (l->armed && l->fd >= 0)
		ring_cancel_fd_now(r, l->fd);
}

/* Accept again. An accept still in flight (its cancel not yet completed)
 * re-arms from its completion. */
static void listener_resume(struct ring *r, struct listener *l)
{
	l->paused = false;
	listener_arm(r, l);
}

void listener_stop(struct ring *r, struct listener *l)
{
	if (l->fd < 0)
		return;
	timer_disarm(r, &l->retry);
	/* stop listening now: the armed accept keeps the socket alive until
	 * its cancel completes, and meanwhile the kernel would still complete
	 * handshakes; after shutdown new connections are refused at once */
	shutdown(l->fd, SHUT_RDWR);
	ring_cancel_fd_now(r, l->fd);
	close(l->fd);
	l->fd = -1;
}

/* ---- handshakes ---- */

struct listener *side_listener(struct gw_worker *w, unsigned side, size_t i)
{
	if (side == GW_SIDE_TUNNEL)
		return i == 0 ? &w->tunnel_listener : NULL;
	switch (i) {
	case 0:
		return &w->socks5_listener;
	case 1:
		return &w->http_listener;
	case 2:
		return &w->https_listener;
	default:
		return NULL;
	}
}

/* A pause or resume was logged on this thread: its log batch is written
 * before the lock is released (budget_logged: a write that never waits,
 * and rare), so that a side's transitions, logged by different workers,
 * reach the log in their order. */
static _Thread_local bool transition_logged;

static void budget_logged(void)
{
	if (transition_logged) {
		transition_logged = false;
		log_flush();
	}
}

/* Workers whose loops still run (under gateway.lock). */
static unsigned running_workers(const struct gateway *gw)
{
	return gw->nworkers - gw->workgroup.exited;
}

static void stale_due(struct ring *r, struct timer *t);

/* Arm w's stale_timer for the first of its connections in their
 * handshake to become stale on a paused side (none: left as it is; a
 * stray firing finds nothing to do). */
static void stale_arm(struct gw_worker *w)
{
	uint32_t stale_ms = w->gw->cfg->gateway.handshake_stale_ms;
	uint64_t due = UINT64_MAX, now;
	unsigned side;

	if (!stale_ms)
		return;
	for (side = 0; side < ARRAY_SIZE(w->handshakes); side++)
		if (w->side_paused[side] && w->handshakes[side])
			due = MIN(due, w->handshakes[side]->since_us / 1000 + stale_ms);
	if (due == UINT64_MAX)
		return;
	now = now_ms();
	if (!timer_armed(&w->stale_timer))
		timer_init(&w->stale_timer, stale_due);
	timer_arm(&w->ring, &w->stale_timer, due > now ? due - now : 0);
}

/*
 * A paused side frees a slot for the connections waiting in the listen
 * backlog: its oldest connection in their handshake on this worker is
 * closed once it is handshake_stale_ms old. One per side and worker at a
 * time: the slot it frees resumes the side, an accept fills it, the side
 * pauses again and the next stale one goes; with nobody waiting, the
 * side stays below the bound and the others keep their time. A flood of
 * silent connections thus holds a slot for handshake_stale_ms, not for
 * handshake_timeout_ms, while a real handshake, a round trip or two, is
 * over long before it becomes stale.
 */
static void stale_due(struct ring *r, struct timer *t)
{
	struct gw_worker *w = container_of(t, struct gw_worker, stale_timer);
	struct gateway *gw = w->gw;
	struct handshake_budget *const sides[] = { &gw->user_budget, &gw->tunnel_budget };
	uint32_t stale_ms = gw->cfg->gateway.handshake_stale_ms;
	uint64_t now = now_ms();
	size_t i;

	for (i = 0; i < ARRAY_SIZE(sides); i++) {
		struct handshake_budget *b = sides[i];
		struct hs_slot *oldest = w->handshakes[b->side];
		uint64_t age;

		if (!stale_ms || !w->side_paused[b->side] || !oldest)
			continue;
		/* since_us is read when counted, now when the loop woke */
		age = ms_since(now, oldest->since_us / 1000);
		if (age < stale_ms)
			continue;
		handshake_unlist(w, b, oldest);
		gw_lock(gw);
		b->stale_closed++;
		if (log_rate_allow(&b->stale_rate, now))
			log_warn("Handshake limit: stale handshake closed for a waiting one",
				 LF_S("side", b->name), LF_U("age_ms", age),
				 LF_U("handshake_stale_ms", stale_ms),
				 LF_U("closed_total", b->stale_closed));
		gw_unlock(gw);
		b->evict(oldest->owner); /* its handshake_end frees oldest, may resume the side */
	}
	stale_arm(w);
}

/* Pause or resume w's listeners of side b to match b->paused. Under
 * gateway.lock; the last worker to pause logs the side's WARN, so that no
 * listener accepts after it. A pause arms w's stale_timer. */
static void side_sync(struct gw_worker *w, struct handshake_budget *b)
{
	struct gateway *gw = w->gw;
	bool want = b->paused && !w->stopping;
	size_t i;

	if (w->side_paused[b->side] != want && !w->stopping) {
		w->side_paused[b->side] = want;
		for (i = 0; i < 3; i++) {
			struct listener *l = side_listener(w, b->side, i);

			if (!l || l->fd < 0)
				continue;
			if (want)
				listener_pause(&w->ring, l);
			else
				listener_resume(&w->ring, l);
		}
		if (want)
			stale_arm(w);
	}
	/* each worker counts itself in once per pause */
	if (!b->paused || w->pause_acked[b->side] == b->pauses)
		return;
	w->pause_acked[b->side] = b->pauses;
	if (++b->pause_acks < running_workers(gw))
		return;
	b->pause_logged = log_rate_allow(&b->pause_rate, b->paused_at_ms);
	transition_logged = true;
	if (!b->pause_logged) { /* every listener has paused: said at DEBUG */
		log_debug("Handshake limit reached, accepting paused", LF_S("side", b->name),
			  LF_U("in_handshake", b->count), LF_U("pauses_total", b->pauses));
		return;
	}
	log_warn("Handshake limit reached, accepting paused", LF_S("side", b->name),
		 LF_U("in_handshake", b->count),
		 LF_U("max_handshakes", gw->cfg->gateway.max_handshakes),
		 LF_U("pauses_total", b->pauses));
}

/* Decide, under gateway.lock, whether side b pauses or resumes; true when
 * the other workers must be told. */
static bool budget_update(struct gw_worker *w, struct handshake_budget *b)
{
	struct gateway *gw = w->gw;
	uint32_t max = gw->cfg->gateway.max_handshakes;
	bool full = b->count >= max;
	uint64_t now;

	if (full == b->paused || GW_READ(&gw->stopping))
		return false;
	b->paused = full;
	now = now_ms();
	if (full) {
		b->pauses++;
		b->paused_at_ms = now;
		b->pause_acks = 0;
		b->pause_logged = false;
	} else if (b->pause_logged) {
		transition_logged = true;
		log_info("Handshake limit: accepting again", LF_S("side", b->name),
			 LF_U("in_handshake", b->count), LF_U("max_handshakes", max),
			 LF_U("paused_ms", ms_since(now, b->paused_at_ms)));
	} else {
		transition_logged = true;
		log_debug("Handshake limit: accepting again", LF_S("side", b->name),
			  LF_U("in_handshake", b->count),
			  LF_U("paused_ms", ms_since(now, b->paused_at_ms)));
	}
	side_sync(w, b);
	return gw->nworkers > 1;
}

void handshake_sync(struct gw_worker *w)
{
	struct gateway *gw = w->gw;

	gw_lock(gw);
	side_sync(w, &gw->tunnel_budget);
	side_sync(w, &gw->user_budget);
	budget_logged();
	gw_unlock(gw);
}

int handshake_begin(struct gw_worker *w, struct handshake_budget *b, struct hs_slot **slot,
		    void *owner)
{
	struct gateway *gw = w->gw;
	struct hs_slot *s = calloc(1, sizeof(*s));
	bool tell;

	*slot = s;
	if (!s)
		return -ENOMEM;
	s->owner = owner;
	s->since_us = now_us();
	/* listed before the count: a pause it causes arms the stale timer */
	DL_APPEND(w->handshakes[b->side], s);
	gw_lock(gw);
	b->count++;
	tell = budget_update(w, b);
	gw->handshake_peak =
		MAX(gw->handshake_peak, gw->tunnel_budget.count + gw->user_budget.count);
	budget_logged();
	gw_unlock(gw);
	if (tell)
		wg_wake_all_but(&w->gw->workgroup, w->index);
	return 0;
}

static void trim_due(struct ring *r, struct timer *t)
{
	/* the wave is over: what its connections held is free but kept by
	 * glibc, in the middle of the heap as much as at its top (every
	 * thread's arena) */
	malloc_trim(0);
}

void handshake_unlist(struct gw_worker *w, struct handshake_budget *b, struct hs_slot *slot)
{
	if (!slot || !slot->prev) /* over, or taken off already */
		return;
	DL_DELETE(w->handshakes[b->side], slot);
	slot->prev = slot->next = NULL;
}

void handshake_end(struct gw_worker *w, struct handshake_budget *b, struct hs_slot **slot)
{
	struct gateway *gw = w->gw;
	bool tell, trim = false;

	if (!*slot)
		return;
	handshake_unlist(w, b, *slot);
	free(*slot);
	*slot = NULL;
	gw_lock(gw);
	b->count--;
	tell = budget_update(w, b);
	if (!gw->tunnel_budget.count && !gw->user_budget.count &&
	    gw->handshake_peak >= GATEWAY_TRIM_AFTER_HANDSHAKES) {
		gw->handshake_peak = 0;
		trim = true;
	}
	budget_logged();
	gw_unlock(gw);
	if (tell)
		wg_wake_all_but(&w->gw->workgroup, w->index);
	if (trim && !timer_armed(&w->trim_timer)) {
		timer_init(&w->trim_timer, trim_due);
		timer_arm(&w->ring, &w->trim_timer, GATEWAY_TRIM_DELAY_MS);
	}
}

void handshake_limit_changed(struct gw_worker *w)
{
	struct gateway *gw = w->gw;
	bool tell;

	gw_lock(gw);
	tell = budget_update(w, &gw->tunnel_budget);
	tell |= budget_update(w, &gw->user_budget);
	budget_logged();
	gw_unlock(gw);
	if (tell)
		wg_wake_all_but(&w->gw->workgroup, w->index);
	stale_arm(w); /* a new handshake_stale_ms counts for a side paused already */
}

struct hs_source {
	uint8_t key[NET_SOURCE_KEY_BYTES];
	unsigned count;
	UT_hash_handle hh;
};

int handshake_source_take(struct handshake_budget *b, uint32_t max, const struct sockaddr *peer,
			  struct hs_source **src)
{
	uint8_t key[NET_SOURCE_KEY_BYTES];
	struct hs_source *e;
	char shown[64];

	*src = NULL;
	if (!max || net_source_key(peer, key) < 0)
		return 0;
	HASH_FIND(hh, b->sources, key, sizeof(key), e);
	if (e && e->count >= max) {
		b->refused_per_address++;
		if (!log_rate_allow(&b->refuse_rate, now_ms()))
			return -EBUSY;
		net_format_sockaddr(peer, shown, sizeof(shown));
		log_warn("Handshakes from one address over the limit, connection closed",
			 LF_S("side", b->name), LF_S("remote_addr", shown),
			 LF_U("max_handshakes_per_address", max),
			 LF_U("refused_total", b->refused_per_address));
		return -EBUSY;
	}
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e)
			return 0; /* not counted: max_handshakes still bounds the side */
		memcpy(e->key, key, sizeof(key));
		HASH_ADD(hh, b->sources, key, sizeof(e->key), e);
	}
	e->count++;
	*src = e;
	return 0;
}

void handshake_source_drop(struct handshake_budget *b, struct hs_source **src)
{
	struct hs_source *e = *src;

	if (!e)
		return;
	*src = NULL;
	if (--e->count)
		return;
	HASH_DEL(b->sources, e);
	free(e);
}

void handshake_sources_free(struct handshake_budget *b)
{
	struct hs_source *e, *tmp;

	HASH_ITER (hh, b->sources, e, tmp) {
		HASH_DEL(b->sources, e);
		free(e);
	}
}
