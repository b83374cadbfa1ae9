/* gateway.c — tunnel listener, agent authentication, registry, shutdown. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <utlist.h>

#include "anyproxy/cli.h"
#include "anyproxy/common.h"
#include "anyproxy/grammar.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "anyproxy/tls.h"
#include "dgram.h"
#include "forward.h"
#include "front.h"
#include "gateway.h"
#include "origin_pool.h"
#include "proxy.h"

static void handshake_over(struct gw_tunnel *gt)
{
	struct gateway *gw = gt->gw;

	if (gt->source) {
		gw_lock(gw);
		handshake_source_drop(&gw->tunnel_budget, &gt->source);
		gw_unlock(gw);
	}
	handshake_end(gt->w, &gw->tunnel_budget, &gt->handshake);
}

static void take_evictions(struct gw_worker *w);

/* tunnel_budget.evict: a stale handshake makes room (listener.c) */
static void close_stale_tunnel(void *owner)
{
	struct gw_tunnel *gt = owner;

	tunnel_close(gt->tunnel, "stale handshake closed at max_handshakes");
}

/* ---- agent tunnels ---- */

static bool valid_id(const struct frame_str *s, size_t min)
{
	return grammar_id_valid((const char *)s->ptr, s->len, min);
}

static void copy_str(char *dst, size_t cap, const struct frame_str *s)
{
	size_t n = MIN(s->len, cap - 1);

	memcpy(dst, s->ptr, n);
	dst[n] = '\0';
}

static void reject(struct gw_tunnel *gt, uint16_t code, const char *message, const char *why)
{
	log_warn("Client rejected", LF_S("remote_addr", gt->tunnel->peer),
		 LF_S("client_id", gt->client_id), LF_S("reason", why));
	tunnel_send_error(gt->tunnel, FRAME_ERROR, code, message);
}

/*
 * Which credential admits agents to a group (docs/operations.md "Agent
 * credentials"); the one place that rule lives. A group whose [group.NAME]
 * section has agent_password takes only that credential; a group without
 * a section is refused when require_group_section is on (the default group
 * "" never has one); every other group takes the shared [gateway] one.
 */
static struct gw_admission admission_for(const struct config *cfg, const char *group_id)
{
	const struct config_group_auth *g = config_group_auth(cfg, group_id, strlen(group_id));

	if (g && g->agent_password)
		return (struct gw_admission){
			GW_CRED_GROUP,
			g->agent_username ? g->agent_username : cfg->gateway.auth_username,
			g->agent_password,
		};
	if (!g && cfg->gateway.require_group_section)
		return (struct gw_admission){ GW_CRED_REFUSED, NULL, NULL };
	return (struct gw_admission){ GW_CRED_SHARED, cfg->gateway.auth_username,
				      cfg->gateway.auth_password };
}

static bool credential_is(const struct frame *f, const char *username, const char *password)
{
	/* both comparisons always run: no early exit tells which one failed */
	int user_ok = secret_equal(f->hello.username.ptr, f->hello.username.len, username,
				   strlen(username));
	int pass_ok = secret_equal(f->hello.password.ptr, f->hello.password.len, password,
				   strlen(password));

	return user_ok & pass_ok;
}

/* Does HELLO carry the credential that admits agents to group_id? On a
 * refusal, *why says which rule refused it, in words for the log. The same
 * two comparisons run whatever the group and the outcome: the group's own
 * credential (the shared one for a group without), and the shared one, so
 * that the log can say when an agent used it for a group that has its own. */
static bool admitted(const struct config *cfg, const struct frame *f, const char *group_id,
		     struct gw_admission *adm, const char **why)
{
	bool shared_ok = credential_is(f, cfg->gateway.auth_username, cfg->gateway.auth_password);
	bool own_ok;

	*adm = admission_for(cfg, group_id);
	own_ok = credential_is(f, adm->username ? adm->username : cfg->gateway.auth_username,
			       adm->password ? adm->password : cfg->gateway.auth_password);
	switch (adm->kind) {
	case GW_CRED_REFUSED:
		*why = "the group has no [group.NAME] section and require_group_section is on";
		return false;
	case GW_CRED_GROUP:
		*why = shared_ok ? "the shared [gateway] credential cannot join a group that has "
				   "its own agent_password"
				 : "wrong agent username or password for the group "
				   "([group.NAME] agent_username, agent_password)";
		return own_ok;
	case GW_CRED_SHARED:
		break;
	}
	*why = "wrong gateway username or password";
	return own_ok;
}

/* Not admitted: ERROR(AUTH) whatever the reason, which only the log says. */
static void reject_auth(struct gw_tunnel *gt, const char *group_id, const char *why)
{
	log_warn("Client rejected", LF_S("remote_addr", gt->tunnel->peer),
		 LF_S("client_id", gt->client_id), LF_S("group_id", group_id), LF_S("reason", why));
	tunnel_send_error(gt->tunnel, FRAME_ERROR, FRAME_ERR_AUTH, "authentication failed");
}

/* The client_id is registered for another group or with another credential:
 * the holder keeps it and its tunnels. */
static void reject_id_in_use(struct gw_tunnel *gt, const char *group_id)
{
	const struct reg_client *holder = registry_find_client(&gt->gw->registry, gt->client_id);

	log_warn("Client rejected", LF_S("remote_addr", gt->tunnel->peer),
		 LF_S("client_id", gt->client_id), LF_S("group_id", group_id),
		 LF_S("reason", "client_id in use by an agent of another group or credential"),
		 LF_S("holder_remote_addr", holder->remote_addr),
		 LF_S("holder_group_id", holder->group->id));
	tunnel_send_error(gt->tunnel, FRAME_ERROR, FRAME_ERR_ID_IN_USE,
			  "client_id is in use by another agent");
}

static int handle_hello(struct gw_tunnel *gt, const struct frame *f)
{
	struct gateway *gw = gt->gw;
	const struct config *cfg = gw->cfg;
	struct frame ok = { .type = FRAME_HELLO_OK };
	char group_id[FRAME_MAX_ID_LEN + 1];
	struct gw_admission adm;
	const char *why;
	const struct reg_group *group;
	int ret, bound;
	bool shared;

	copy_str(gt->client_id, sizeof(gt->client_id), &f->hello.client_id);
	if (f->hello.version != FRAME_VERSION) {
		reject(gt, FRAME_ERR_VERSION, "unsupported protocol version",
		       "unsupported version");
		return 0;
	}
	if (!valid_id(&f->hello.client_id, 1) || !valid_id(&f->hello.group_id, 0)) {
		reject(gt, FRAME_ERR_BAD_HELLO, "client_id or group_id has invalid characters",
		       "invalid client_id or group_id");
		return 0;
	}
	if (f->hello.replica >= REPLICAS_MAX) {
		reject(gt, FRAME_ERR_BAD_HELLO, "replica index out of range",
		       "replica index not below 64");
		return 0;
	}
	copy_str(group_id, sizeof(group_id), &f->hello.group_id); /* valid_id: it fits */
	if (!admitted(cfg, f, group_id, &adm, &why)) {
		reject_auth(gt, group_id, why);
		return 0;
	}
	/* a certificate bound to groups and ids (URI SANs) joins only as one */
	bound = tls_peer_binding(&gt->tunnel->tls, group_id, gt->client_id);
	if (bound == -EACCES) {
		reject_auth(gt, group_id,
			    "the client certificate is bound to other groups or "
			    "client ids");
		return 0;
	}
	if (bound == -ENOKEY && cfg->gateway.client_ca) {
		reject_auth(gt, group_id, "no client certificate was verified in this handshake");
		return 0;
	}
	if (GW_READ(&gw->stopping)) {
		reject(gt, FRAME_ERR_SHUTDOWN, "gateway is shutting down", "gateway is stopping");
		return 0;
	}
	/* the capabilities both sides have: an older agent gets no datagram */
	ok.hello_ok.capabilities = f->hello.capabilities & FRAME_CAP_DATAGRAM;
	gt->datagrams = (ok.hello_ok.capabilities & FRAME_CAP_DATAGRAM) != 0;
	gw_lock(gw);
	if (cfg->gateway.max_clients && !registry_find_client(&gw->registry, gt->client_id) &&
	    registry_client_count(&gw->registry) >= cfg->gateway.max_clients) {
		gw_unlock(gw);
		reject(gt, FRAME_ERR_LIMIT, "the gateway's agent limit is reached",
		       "max_clients reached");
		return 0;
	}
	/* a group with its own agent credential is one tenant; the groups
	 * the shared credential admits are another, all together: else its
	 * holder would take every descriptor through many group names */
	shared = adm.kind == GW_CRED_SHARED;
	group = registry_find_group(&gw->registry, group_id);
	if (registry_join_adds(&gw->registry, gt->client_id, f->hello.instance, f->hello.replica) &&
	    (shared  ? gw->shared_tunnels
	     : group ? group->ntunnels
		     : 0) >= __atomic_load_n(&gw->max_group_tunnels, __ATOMIC_RELAXED)) {
		gw_unlock(gw);
		reject(gt, FRAME_ERR_LIMIT, "the group's tunnel limit is reached",
		       shared ? "max_tunnels_per_group reached by the groups of the shared "
				"credential"
			      : "max_tunnels_per_group reached");
		return 0;
	}
	gt->reg.tally = shared ? &gw->shared_tunnels : NULL;
	gt->reg.owner = gt;
	gt->reg.worker = (uint16_t)gt->w->index;
	gt->reg.credential = adm.kind | (bound == 1 ? GW_CRED_CERT_BOUND : 0);
	ret = registry_join(&gw->registry, &gt->reg, gt->client_id, group_id, f->hello.instance,
			    f->hello.replica, gt->tunnel->peer);
	if (ret == -EADDRINUSE) {
		reject_id_in_use(gt, group_id);
		gw_unlock(gw);
		return 0;
	}
	gw_unlock(gw);
	/* a tunnel it replaced on this worker hears it now (others: woken) */
	take_evictions(gt->w);
	if (ret < 0) {
		reject(gt, FRAME_ERR_LIMIT, "gateway out of memory", "out of memory");
		return 0;
	}
	gt->authenticated = true;
	ok.hello_ok.version = FRAME_VERSION;
	gt->next_assoc_id = 1;
	ok.hello_ok.ping_interval_ms = cfg->gateway.ping_interval_ms;
	ok.hello_ok.stream_window = GATEWAY_STREAM_WINDOW;
	tunnel_send(gt->tunnel, &ok);
	tunnel_established(gt->tunnel, cfg->gateway.ping_interval_ms, cfg->gateway.ping_timeout_ms);
	if (ret == REGISTRY_NEW_CLIENT)
		log_info("Client connected", LF_S("client_id", gt->client_id),
			 LF_S("group_id", group_id), LF_S("remote_addr", gt->tunnel->peer));
	log_debug("Tunnel registered", LF_S("client_id", gt->client_id),
		  LF_U("replica", f->hello.replica), LF_S("remote_addr", gt->tunnel->peer),
		  LF_U("worker", gt->w->index));
	return 0;
}

static void gw_on_secure(struct tunnel *t)
{
}

static int gw_on_frame(struct tunnel *t, const struct frame *f, const char **why)
{
	struct gw_tunnel *gt = t->owner;

	if (!gt->authenticated) {
		int ret;

		if (f->type != FRAME_HELLO) {
			*why = "expected HELLO";
			return -EPROTO;
		}
		ret = handle_hello(gt, f);
		if (gt->authenticated && gt->handshake) {
			gw_lock(gt->gw);
			metrics_observe_us(&gt->gw->stats.tunnel_handshake,
					   now_us() - gt->handshake->since_us);
			gw_unlock(gt->gw);
			handshake_over(gt);
		}
		return ret;
	}
	switch (f->type) {
	case FRAME_GOAWAY:
		gw_lock(gt->gw);
		gt->reg.draining = true;
		gw_unlock(gt->gw);
		log_info("Client draining", LF_S("client_id", gt->client_id),
			 LF_U("replica", gt->reg.replica),
			 LF_S("reason", frame_error_name(f->error.code)));
		proxy_release_idle(gt->w, false, t);
		return 0;
	case FRAME_DGRAM_OPEN:
	case FRAME_DGRAM:
	case FRAME_DGRAM_CLOSE:
		return gw_assoc_on_frame(gt, f, why);
	case FRAME_ERROR:
		log_warn("Client reported an error", LF_S("client_id", gt->client_id),
			 LF_S("code", frame_error_name(f->error.code)));
		tunnel_close(t, "client reported an error");
		return 0;
	default:
		*why = "unexpected frame from client";
		return -EPROTO;
	}
}

/* Stop a worker's loop once stopping and nothing is left open on it nor
 * on its way to it. */
static void worker_maybe_exit(struct gw_worker *w)
{
	struct gateway *gw = w->gw;

	if (!GW_READ(&gw->stopping) || w->ntunnels || w->nusers || w->nremotes)
		return;
	gw_lock(gw);
	if (w->inbox || w->udp_inbox || w->wg.exited) {
		gw_unlock(gw);
		return;
	}
	wg_exited_locked(&w->wg); /* nothing is handed to it from now on */
	gw_unlock(gw);
	ring_stop(&w->ring);
}

static void gw_on_closed(struct tunnel *t, const char *reason)
{
	struct gw_tunnel *gt = t->owner;
	struct gateway *gw = gt->gw;
	struct gw_worker *w = gt->w;
	char client_id[FRAME_MAX_ID_LEN + 1];

	snprintf(client_id, sizeof(client_id), "%s", gt->client_id);
	gw_assoc_tunnel_closed(gt);
	gw_lock(gw);
	if (gt->evict_queued) { /* replaced and closed before it heard so */
		struct gw_tunnel **pp = &w->evictions;

		while (*pp != gt)
			pp = &(*pp)->evict_next;
		*pp = gt->evict_next;
		gt->evict_queued = false;
	}
	if (gt->reg.client) {
		bool last = registry_leave(&gw->registry, &gt->reg);

		gw_unlock(gw);
		if (last)
			log_info("Client disconnected", LF_S("client_id", client_id),
				 LF_S("reason", reason));
		else
			log_debug("Tunnel closed", LF_S("client_id", client_id),
				  LF_S("reason", reason));
	} else {
		gw_unlock(gw);
	}
	if (!gt->authenticated) {
		log_info("Tunnel closed before authentication", LF_S("remote_addr", t->peer),
			 LF_S("reason", reason));
	}
	DL_DELETE(w->tunnels, gt);
	__atomic_store_n(&w->ntunnels, w->ntunnels - 1, __ATOMIC_RELAXED);
	handshake_over(gt);
	if (gt->authenticated) {
		gw_lock(gw);
		gw_stats_prune(gw); /* its group may be gone */
		gw_unlock(gw);
	}
	free(gt);
	worker_maybe_exit(w);
}

/* A tunnel missed a deadline (no PONG, or an OPEN not answered within
 * open_timeout_ms): it gets no new streams while the group has another
 * tunnel, until any frame from it arrives (docs/operations.md). */
static void gw_on_suspect(struct tunnel *t, bool suspect, const char *why)
{
	struct gw_tunnel *gt = t->owner;
	struct gateway *gw = gt->gw;
	uint64_t now = now_ms();

	gw_lock(gw);
	gt->reg.suspect = suspect;
	if (suspect) {
		gw->tunnels_suspected++;
		if (log_rate_allow(&gw->suspect_rate, now))
			log_warn("Tunnel suspect, no new streams until it answers",
				 LF_S("client_id", gt->client_id), LF_U("replica", gt->reg.replica),
				 LF_S("remote_addr", t->peer), LF_S("reason", why),
				 LF_U("suspected_total", gw->tunnels_suspected));
	} else if (log_rate_allow(&gw->answer_rate, now)) {
		log_info("Tunnel answers again", LF_S("client_id", gt->client_id),
			 LF_U("replica", gt->reg.replica),
			 LF_U("suspect_ms", ms_since(now, t->suspect_since_ms)));
	}
	gw_unlock(gw);
}

static const struct tunnel_ops gw_tunnel_ops = {
	.on_secure = gw_on_secure,
	.on_frame = gw_on_frame,
	.on_closed = gw_on_closed,
	.on_suspect = gw_on_suspect,
};

/* [gateway] max_streams_per_tunnel: a full tunnel takes no new stream.
 * Under gateway.lock, from any worker (the count is the owner's, read
 * relaxed). */
static bool gw_tunnel_usable(const struct reg_tunnel *rt, void *ctx)
{
	const struct gateway *gw = ctx;
	const struct gw_tunnel *gt = rt->owner;
	uint32_t max = gw->cfg->gateway.max_streams_per_tunnel;

	/* an association is no stream; it lives on the picking worker */
	if (gw->picking_datagrams)
		return gt->datagrams &&
		       (gw->picking_worker == GW_ANY_WORKER || rt->worker == gw->picking_worker);
	return !max || GW_READ(&gt->tunnel->streams.count) < max;
}

/* The registry replaced this tunnel (same client id, newer agent), under
 * gateway.lock on any worker: its owner sends the ERROR (take_evictions). */
static void gw_on_evict(struct reg_tunnel *rt, uint16_t code, void *ctx)
{
	struct gw_tunnel *gt = rt->owner;

	gt->evict_code = code;
	if (gt->evict_queued)
		return;
	gt->evict_queued = true;
	gt->evict_next = gt->w->evictions;
	gt->w->evictions = gt;
	wg_wake(&gt->w->wg);
}

/* On w's thread: tell its replaced tunnels (only w frees them). */
static void take_evictions(struct gw_worker *w)
{
	struct gw_tunnel *gt, *next;

	gw_lock(w->gw);
	gt = w->evictions;
	w->evictions = NULL;
	for (next = gt; next; next = next->evict_next)
		next->evict_queued = false;
	gw_unlock(w->gw);
	for (; gt; gt = next) {
		next = gt->evict_next;
		log_warn("Client tunnel replaced", LF_S("client_id", gt->client_id),
			 LF_U("replica", gt->reg.replica),
			 LF_S("old_remote_addr", gt->tunnel->peer),
			 LF_S("reason", frame_error_name(gt->evict_code)));
		tunnel_send_error(gt->tunnel, FRAME_ERROR, gt->evict_code,
				  "replaced by a newer connection with the same client_id");
	}
}

static void tunnel_accept(struct listener *l, int fd)
{
	struct gw_worker *w = l->owner;
	struct gateway *gw = w->gw;
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);
	struct hs_source *source = NULL;
	struct gw_tunnel *gt;

	if (GW_READ(&gw->stopping)) {
		close(fd);
		return;
	}
	if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0) {
		int ret;

		gw_lock(gw);
		ret = handshake_source_take(&gw->tunnel_budget,
					    gw->cfg->gateway.max_tunnel_handshakes_per_address,
					    (struct sockaddr *)&peer, &source);
		gw_unlock(gw);
		if (ret < 0) {
			close(fd);
			return;
		}
	}
	gt = calloc(1, sizeof(*gt));
	if (!gt) {
		gw_lock(gw);
		handshake_source_drop(&gw->tunnel_budget, &source);
		gw_unlock(gw);
		close(fd);
		return;
	}
	gt->source = source;
	gt->gw = gw;
	gt->w = w;
	gt->tunnel = tunnel_new(&w->ring, fd, gw->tls, true, NULL, &gw_tunnel_ops, gt,
				gw->cfg->gateway.handshake_timeout_ms, &w->bufs);
	if (!gt->tunnel) {
		gw_lock(gw);
		handshake_source_drop(&gw->tunnel_budget, &gt->source);
		gw_unlock(gw);
		free(gt);
		return;
	}
	DL_PREPEND(w->tunnels, gt);
	__atomic_store_n(&w->ntunnels, w->ntunnels + 1, __ATOMIC_RELAXED);
	if (handshake_begin(w, &gw->tunnel_budget, &gt->handshake, gt) < 0) {
		tunnel_close(gt->tunnel, "out of memory");
		return;
	}
	log_debug("Tunnel accepted", LF_S("remote_addr", gt->tunnel->peer));
}

/* ---- limits ---- */

/* [gateway] max_connections in force: the configured number, or (0) the
 * soft open-file limit minus a reserve for everything that is not a user
 * (GATEWAY_FD_RESERVE_FIXED), so that idle users cannot take the
 * descriptors agents and apctl need; and max_tunnels_per_group: the
 * configured number, or (0) half of the reserve's share for tunnels, so
 * that one group's agents cannot take all of it either. */
static void apply_limits(struct gateway *gw)
{
	const struct config *cfg = gw->cfg;
	struct rlimit rl;
	uint64_t nofile, reserve, group_tunnels;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		rl.rlim_cur = (rlim_t)GATEWAY_DERIVED_NOFILE_MAX;
	nofile = MIN((uint64_t)rl.rlim_cur, (uint64_t)GATEWAY_DERIVED_NOFILE_MAX);
	group_tunnels = cfg->gateway.max_tunnels_per_group
				? cfg->gateway.max_tunnels_per_group
				: MAX(nofile / GATEWAY_FD_TUNNEL_SHARE / 2, (uint64_t)REPLICAS_MAX);
	__atomic_store_n(&gw->max_group_tunnels, (uint32_t)group_tunnels, __ATOMIC_RELAXED);
	if (cfg->gateway.max_connections) {
		__atomic_store_n(&gw->max_users, cfg->gateway.max_connections, __ATOMIC_RELAXED);
		log_info("Connection limit", LF_U("max_connections", gw->max_users),
			 LF_S("source", "configured"),
			 LF_U("max_handshakes", cfg->gateway.max_handshakes),
			 LF_U("max_tunnels_per_group", group_tunnels));
		return;
	}
	reserve = GATEWAY_FD_RESERVE_FIXED + cfg->gateway.max_handshakes +
		  nofile / GATEWAY_FD_TUNNEL_SHARE;
	reserve = MIN(reserve, nofile / 2);
	__atomic_store_n(&gw->max_users, (uint32_t)MAX(nofile - reserve, (uint64_t)1),
			 __ATOMIC_RELAXED);
	log_info("Connection limit", LF_U("max_connections", gw->max_users),
		 LF_S("source", "derived from RLIMIT_NOFILE"), LF_U("rlimit_nofile", nofile),
		 LF_U("reserved_fds", reserve), LF_U("max_handshakes", cfg->gateway.max_handshakes),
		 LF_U("max_tunnels_per_group", group_tunnels));
}

/* ---- wake-ups, pauses and shutdown between workers ---- */

/* Tunnels alive on every worker (relaxed reads: for logs and status). */
static unsigned gateway_tunnels(const struct gateway *gw)
{
	unsigned i, n = 0;

	for (i = 0; i < gw->nworkers; i++)
		n += GW_READ(&gw->workers[i].ntunnels);
	return n;
}

static void shutdown_expired(struct ring *r, struct timer *t)
{
	struct gw_worker *w = container_of(t, struct gw_worker, shutdown_timer);
	struct gw_tunnel *gt, *tmp;

	log_warn("Shutdown timeout: closing what is left", LF_U("worker", w->index),
		 LF_U("tunnels", w->ntunnels), LF_U("users", w->nusers));
	/* tunnel_close frees nothing synchronously (gw_on_closed unlinks and
	 * frees in a later completion), so the walk loses no entry; _SAFE
	 * still survives losing the current one */
	DL_FOREACH_SAFE (w->tunnels, gt, tmp)
		tunnel_close(gt->tunnel, "gateway shutdown");
	proxy_close_all(w, "gateway shutdown");
}

/* One worker's part of a shutdown, on its own thread: stop accepting,
 * close the users in their handshake, drain the tunnels (GOAWAY), and
 * bound the rest by shutdown_timeout_ms. */
static void worker_stop(struct gw_worker *w)
{
	struct gw_tunnel *gt, *tmp;

	w->stopping = true;
	listener_stop(&w->ring, &w->tunnel_listener);
	listener_stop(&w->ring, &w->socks5_listener);
	listener_stop(&w->ring, &w->http_listener);
	listener_stop(&w->ring, &w->https_listener);
	/* users still in their handshake have nothing to finish */
	proxy_close_handshaking(w, "gateway shutdown");
	forward_close_remotes(w);
	/* open streams may finish; each tunnel closes after its last one */
	DL_FOREACH_SAFE (w->tunnels, gt, tmp) /* closes, as shutdown_expired */
		tunnel_drain(gt->tunnel, FRAME_ERR_SHUTDOWN, "gateway shutting down");
	timer_init(&w->shutdown_timer, shutdown_expired);
	timer_arm(&w->ring, &w->shutdown_timer, w->gw->cfg->gateway.shutdown_timeout_ms);
	worker_maybe_exit(w);
}

static void after_reload(struct gw_worker *w, const struct config *old);

/*
 * A wake-up on a worker's loop (workgroup.h). Workers 1.. first take part
 * in a reload's pause: worker 0 replaces what they share while they wait
 * (gateway_reload), hands them the configuration from before, and they
 * apply the reload to their own tunnels and listeners (after_reload)
 * before it frees that. Then whatever other workers handed it.
 */
static void worker_woken(struct wg_member *m)
{
	struct gw_worker *w = container_of(m, struct gw_worker, wg);
	struct gateway *gw = w->gw;
	void *old = NULL;
	unsigned gen;

	if (w->index && wg_pause_point(m, &old) && old) {
		after_reload(w, old);
		wg_done(m);
	}
	take_evictions(w);
	proxy_take_inbox(w);
	forward_take_remotes(w);
	handshake_sync(w);
	gen = GW_READ(&gw->release_gen);
	if (gen != w->release_seen) {
		w->release_seen = gen;
		proxy_release_idle(w, true, NULL);
	}
	if (GW_READ(&gw->stop_requested) && !w->stopping)
		worker_stop(w);
}

static void gateway_stop(void *owner, int signo)
{
	struct gateway *gw = owner;

	if (GW_READ(&gw->stopping))
		return;
	__atomic_store_n(&gw->stopping, true, __ATOMIC_RELAXED);
	notify_stopping(&gw->notify);
	log_info("Gateway stopping", LF_S("signal", strsignal(signo)),
		 LF_U("tunnels", gateway_tunnels(gw)), LF_U("users", GW_READ(&gw->nusers)),
		 LF_U("shutdown_timeout_ms", gw->cfg->gateway.shutdown_timeout_ms));
	listener_stop(&gw_main(gw)->ring, &gw->control_listener);
	metrics_server_close(&gw->metrics);
	forward_stop_all(gw);
	__atomic_store_n(&gw->stop_requested, true, __ATOMIC_RELAXED);
	wg_wake_all_but(&gw->workgroup, 0);
	worker_stop(gw_main(gw));
}

static bool same_text(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* Why a group's agent credential under old differs from the one under now,
 * or NULL when it is the same. */
static const char *admission_change(const struct gw_admission *old, const struct gw_admission *now)
{
	if (now->kind == GW_CRED_REFUSED)
		return "require_group_section refuses the group now";
	if (old->kind == GW_CRED_SHARED && now->kind == GW_CRED_GROUP)
		return "the group has its own agent_password now";
	if (old->kind == GW_CRED_GROUP && now->kind == GW_CRED_SHARED)
		return "the group's agent_password was removed";
	if (old->kind != now->kind || !same_text(old->username, now->username) ||
	    !same_text(old->password, now->password))
		return "the credential was changed";
	return NULL;
}

/* After a reload, on worker w: new rules apply to new HELLOs, and an
 * admitted agent whose group no longer takes the credential it was
 * admitted with is closed with ERROR(AUTH). old is the configuration
 * before the reload: every registered tunnel was admitted under it (the
 * previous reload closed the others). */
static void recheck_agents(struct gw_worker *w, const struct config *old)
{
	struct gateway *gw = w->gw;
	struct gw_tunnel *gt, *tmp;

	/* closes tunnels, as shutdown_expired: none leaves the list here */
	DL_FOREACH_SAFE (w->tunnels, gt, tmp) {
		char group_id[FRAME_MAX_ID_LEN + 1];
		struct gw_admission before, now;
		const char *why;

		gw_lock(gw);
		if (!gt->reg.client) { /* not (or no longer) registered */
			gw_unlock(gw);
			continue;
		}
		snprintf(group_id, sizeof(group_id), "%s", gt->reg.client->group->id);
		before = admission_for(old, group_id);
		now = admission_for(gw->cfg, group_id);
		why = admission_change(&before, &now);
		if (!why && (gt->reg.credential & GW_CRED_KIND_MASK) == (uint32_t)now.kind) {
			gw_unlock(gw);
			continue;
		}
		/* out of the registry at once: no new stream, and the agent's
		 * next HELLO is judged by the new rules alone */
		registry_leave(&gw->registry, &gt->reg);
		gw_unlock(gw);
		log_warn("Client credential revoked", LF_S("client_id", gt->client_id),
			 LF_S("group_id", group_id), LF_U("replica", gt->reg.replica),
			 LF_S("remote_addr", gt->tunnel->peer),
			 LF_S("reason", why ? why : "the credential was changed"));
		tunnel_send_error(gt->tunnel, FRAME_ERROR, FRAME_ERR_AUTH,
				  "the gateway no longer admits this agent's credential");
	}
}

/* What each worker does on its own thread after a reload. */
static void after_reload(struct gw_worker *w, const struct config *old)
{
	recheck_agents(w, old);
	/* a new max_handshakes pauses or resumes a side at once, a new
	 * handshake_stale_ms applies to a side paused already */
	handshake_limit_changed(w);
}

/* SIGHUP: certificates, credentials, deadlines and the log change for what
 * comes next; open tunnels and streams go on untouched. A bad file leaves
 * everything as it was. The other workers are paused while the running
 * configuration and the contexts are replaced. */
static void gateway_reload(void *owner)
{
	struct gateway *gw = owner;
	struct config fresh;
	struct WOLFSSL_CTX *tls, **https_tls;
	char err[512], restart[512];
	unsigned i;
	int ret;

	log_info("SIGHUP received", LF_S("action", "reloading the configuration"));
	ret = cli_reload(gw->program, &fresh, err, sizeof(err));
	if (ret < 0) {
		log_error("Configuration reload failed; the running configuration stays",
			  LF_S("error", err));
		return;
	}
	tls = tls_ctx_server(fresh.gateway.tls_cert, fresh.gateway.tls_key, fresh.gateway.client_ca,
			     err, sizeof(err));
	if (!tls) {
		log_error("Configuration reload failed; the running configuration stays",
			  LF_S("error", err));
		config_free(&fresh);
		return;
	}
	https_tls = calloc(gw->nworkers, sizeof(*https_tls));
	if (!https_tls) {
		log_error("Configuration reload failed; the running configuration stays",
			  LF_S("error", "out of memory"));
		tls_ctx_free(tls);
		config_free(&fresh);
		return;
	}
	/* [proxy.https]: a new certificate for new connections (a listener
	 * that the file no longer configures runs on with the one it has);
	 * one context per worker's listener */
	for (i = 0; i < gw->nworkers; i++) {
		if (gw->workers[i].https_listener.fd < 0 || !fresh.https.tls_cert ||
		    !fresh.https.tls_key)
			continue;
		https_tls[i] = tls_ctx_server_users(fresh.https.tls_cert, fresh.https.tls_key, err,
						    sizeof(err));
		if (!https_tls[i]) {
			log_error("Configuration reload failed; the running configuration stays",
				  LF_S("proxy", "https"), LF_S("error", err));
			while (i--)
				tls_ctx_free(https_tls[i]);
			free(https_tls);
			tls_ctx_free(tls);
			config_free(&fresh);
			return;
		}
	}
	wg_pause(&gw->workgroup);
	if (config_reload(gw->cfg, &fresh, restart, sizeof(restart)))
		log_warn("Some changes need a restart and were not applied", LF_S("keys", restart));
	tls_ctx_free(gw->tls); /* tunnels keep the old context until they close */
	gw->tls = tls;
	for (i = 0; i < gw->nworkers; i++) {
		if (!https_tls[i])
			continue;
		tls_ctx_free(gw->workers[i].https_listener.tls); /* users keep theirs */
		gw->workers[i].https_listener.tls = https_tls[i];
	}
	free(https_tls);
	if (cli_apply_log(gw->cfg) < 0)
		log_error("Cannot reopen the log output", LF_S("output", gw->cfg->log.output));
	apply_limits(gw);
	/* fresh holds the values before the reload now */
	after_reload(gw_main(gw), &fresh);
	wg_resume(&gw->workgroup, &fresh);
	config_free(&fresh);
	log_info("Configuration reloaded", LF_U("tunnels", gateway_tunnels(gw)),
		 LF_U("users", GW_READ(&gw->nusers)), LF_U("workers", gw->nworkers));
}

/* ---- set-up ---- */

/* STATUS= for the service manager (systemctl status). */
static void gateway_status(void *arg, char *buf, size_t len)
{
	struct gateway *gw = arg;
	unsigned agents;

	gw_lock(gw);
	agents = registry_client_count(&gw->registry);
	gw_unlock(gw);
	snprintf(buf, len, "%sagents %u, tunnels %u, users %u",
		 GW_READ(&gw->stopping) ? "stopping: " : "", agents, gateway_tunnels(gw),
		 GW_READ(&gw->nusers));
}

/* The front end of each proxy index of the statistics (front.h: this file
 * alone names them). */
static const struct proxy_frontend *const proxy_frontends[GW_NPROXIES] = {
	[GW_PROXY_SOCKS5] = &socks5_frontend,
	[GW_PROXY_HTTP] = &http_frontend,
	[GW_PROXY_HTTPS] = &https_frontend,
	[GW_PROXY_FORWARD] = &forward_frontend,
};

/* Open a proxy listener if its listen_addr is set: its connections speak
 * to the front end of proxy. 0 or -errno. */
static int proxy_listen(struct gw_worker *w, struct listener *l, const struct config_listener *cfg,
			enum gw_proxy proxy)
{
	const struct proxy_frontend *fe = proxy_frontends[proxy];
	const char *name = fe->name;
	char err[512], shown[300];
	struct WOLFSSL_CTX *tls = NULL;
	int fd;

	if (!cfg->listen_addr.set)
		return 0;
	if (cfg->tls_cert) { /* [proxy.https]: the loader made sure tls_key is there */
		tls = tls_ctx_server_users(cfg->tls_cert, cfg->tls_key, err, sizeof(err));
		if (!tls) {
			log_error("Cannot set up TLS", LF_S("proxy", name), LF_S("error", err));
			return -EINVAL;
		}
	}
	fd = net_listen_tcp(&cfg->listen_addr, GATEWAY_LISTEN_BACKLOG, err, sizeof(err));
	if (fd < 0) {
		log_error("Cannot open a proxy listener", LF_S("proxy", name), LF_S("error", err));
		tls_ctx_free(tls);
		return fd;
	}
	*l = (struct listener){ .fd = fd,
				.name = name,
				.on_accept = proxy_accept,
				.owner = w,
				.frontend = fe,
				.proxy_cfg = cfg,
				.proxy = proxy,
				.tls = tls };
	if (w->index) /* the same on every worker: said once */
		return 0;
	config_addr_format(&cfg->listen_addr, shown, sizeof(shown));
	log_info("Proxy listening", LF_S("proxy", name), LF_S("addr", shown),
		 LF_S("auth", cfg->auth_username || cfg->auth_password ? "password" : "none"),
		 LF_S("tls", tls ? "on" : "off"));
	return 0;
}

/* Worker w's listeners (SO_REUSEPORT: every worker binds the same
 * ports) and receive buffers, on its ring. 0 or -errno (logged). */
static int worker_open(struct gw_worker *w)
{
	struct gateway *gw = w->gw;
	const struct config *cfg = gw->cfg;
	char err[512];
	int ret, fd;

	ret = bufring_init_worker(&w->bufs, &w->ring, w->index);
	if (ret < 0)
		return ret;
	w->bufs_ready = true;
	ret = proxy_listen(w, &w->socks5_listener, &cfg->socks5, GW_PROXY_SOCKS5);
	if (ret == 0)
		ret = proxy_listen(w, &w->http_listener, &cfg->http, GW_PROXY_HTTP);
	if (ret == 0)
		ret = proxy_listen(w, &w->https_listener, &cfg->https, GW_PROXY_HTTPS);
	if (ret < 0)
		return ret;
	fd = net_listen_tcp(&cfg->gateway.listen_addr, GATEWAY_LISTEN_BACKLOG, err, sizeof(err));
	if (fd < 0) {
		log_error("Cannot open the tunnel listener", LF_S("error", err));
		return fd;
	}
	w->tunnel_listener = (struct listener){
		.fd = fd, .name = "tunnel", .on_accept = tunnel_accept, .owner = w
	};
	return 0;
}

/* Arm the accepts of w's listeners. */
static void worker_start(struct gw_worker *w)
{
	listener_start(&w->ring, &w->tunnel_listener);
	if (w->socks5_listener.fd >= 0)
		listener_start(&w->ring, &w->socks5_listener);
	if (w->http_listener.fd >= 0)
		listener_start(&w->ring, &w->http_listener);
	if (w->https_listener.fd >= 0)
		listener_start(&w->ring, &w->https_listener);
}

/* Workers 1..: set up on the thread (the ring is single-issuer: it is
 * made where it runs), wait for the others, run, tear down; the steps
 * cli_workers_start runs. */
static void worker_close(struct gw_worker *w);

static int gw_thread_setup(struct wg_member *m)
{
	struct gw_worker *w = container_of(m, struct gw_worker, wg);
	int ret;

	w->ring_ready = true;
	ret = worker_open(w);
	if (ret == 0)
		wg_arm(&w->wg, &w->ring, worker_woken);
	return ret;
}

static void gw_thread_start(struct wg_member *m)
{
	struct gw_worker *w = container_of(m, struct gw_worker, wg);

	worker_start(w);
	handshake_sync(w);
}

static void gw_thread_teardown(struct wg_member *m)
{
	worker_close(container_of(m, struct gw_worker, wg));
}

static const struct cli_worker_ops gw_threads = {
	.ring_entries = GATEWAY_RING_ENTRIES,
	.setup = gw_thread_setup,
	.start = gw_thread_start,
	.teardown = gw_thread_teardown,
};

int gateway_init(struct gateway *gw, const struct cli_program *program, struct config *cfg)
{
	pthread_mutexattr_t attr;
	char err[512], shown[300];
	unsigned i, n;
	int ret;

	memset(gw, 0, sizeof(*gw));
	gw->cfg = cfg;
	gw->program = program;
	gw->started = time(NULL);
	/* recursive: a few paths that hold it call helpers that take it */
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&gw->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	gw->control_listener.fd = -1;
	gw->tunnel_budget = (struct handshake_budget){ .name = "tunnel",
						       .side = GW_SIDE_TUNNEL,
						       .evict = close_stale_tunnel };
	gw->user_budget = (struct handshake_budget){ .name = "proxy",
						     .side = GW_SIDE_PROXY,
						     .evict = proxy_close_stale };
	for (i = 0; i < GW_NPROXIES; i++)
		gw->stats.proxy[i].name = proxy_frontends[i]->name;
	registry_init(&gw->registry, gw_on_evict, gw);
	gw->registry.usable = gw_tunnel_usable;
	/* [gateway] workers; the config bounds it by CONFIG_GATEWAY_WORKERS_MAX */
	n = wg_count(cfg->gateway.workers, sysconf(_SC_NPROCESSORS_ONLN),
		     CONFIG_GATEWAY_WORKERS_MAX);
	/* one malloc arena for every worker (their per-thread caches take the
	 * small allocations): what a wave of handshakes freed on any worker
	 * goes back to the system with malloc_trim (listener.c) */
	if (n > 1)
		mallopt(M_ARENA_MAX, 1);
	gw->workers = calloc(n, sizeof(*gw->workers));
	if (!gw->workers || wg_init(&gw->workgroup, &gw->lock, n) < 0)
		return -ENOMEM;
	gw->nworkers = n; /* gateway_destroy walks them from here on */
	for (i = 0; i < n; i++) {
		struct gw_worker *w = &gw->workers[i];

		w->gw = gw;
		w->index = i;
		w->tunnel_listener.fd = -1;
		w->socks5_listener.fd = -1;
		w->http_listener.fd = -1;
		w->https_listener.fd = -1;
		wg_set(&gw->workgroup, i, &w->wg, &w->ring);
	}
	/* every eventfd before any thread runs: workers wake each other */
	for (i = 0; i < n; i++) {
		ret = wg_open_wake(&gw->workers[i].wg);
		if (ret < 0)
			return ret;
	}
	ret = cli_loop_init(&gw_main(gw)->ring, GATEWAY_RING_ENTRIES,
			    &(struct cli_daemon){ .owner = gw,
						  .notify = &gw->notify,
						  .reload = gateway_reload,
						  .stop = gateway_stop });
	if (ret < 0)
		return ret;
	gw_main(gw)->ring_ready = true;
	notify_init(&gw->notify, &gw_main(gw)->ring);
	gw->tls = tls_ctx_server(cfg->gateway.tls_cert, cfg->gateway.tls_key,
				 cfg->gateway.client_ca, err, sizeof(err));
	if (!gw->tls) {
		log_error("Cannot set up TLS", LF_S("error", err));
		return -EINVAL;
	}
	ret = worker_open(gw_main(gw));
	if (ret == 0)
		ret = forward_listen_all(gw);
	if (ret < 0)
		return ret;
	ret = control_listen(gw, err, sizeof(err));
	if (ret < 0) {
		log_error("Cannot open the control socket", LF_S("error", err));
		return ret;
	}
	/* the control socket has no budget: it is never paused */
	gw->on_user_closed = worker_maybe_exit;
	apply_limits(gw);
	ret = cli_workers_start(&gw->workgroup, &gw_threads);
	if (ret < 0)
		return ret;
	wg_arm(&gw_main(gw)->wg, &gw_main(gw)->ring, worker_woken);
	worker_start(gw_main(gw));
	listener_start(&gw_main(gw)->ring, &gw->control_listener);
	ret = metrics_server_open(&gw->metrics, &gw_main(gw)->ring, &cfg->metrics.listen_addr,
				  gw_stats_collect, gw);
	if (ret < 0)
		return ret;
	forward_start_all(gw);
	config_addr_format(&cfg->gateway.listen_addr, shown, sizeof(shown));
	log_info("Gateway started", LF_S("tunnel_addr", shown),
		 LF_S("control_socket", cfg->control.socket), LF_S("tls", tls_library_version()),
		 LF_U("workers", gw->nworkers));
	/* every listener is bound: connections are accepted from now on */
	notify_set_status(&gw->notify, gateway_status, gw);
	notify_ready(&gw->notify);
	return 0;
}

/* Stop and join workers 1..: once worker 0's loop has ended, or its start
 * failed. Idempotent. */
static void workers_end(struct gateway *gw)
{
	if (!gw->workers)
		return;
	wg_end(&gw->workgroup);
	__atomic_store_n(&gw->stopping, true, __ATOMIC_RELAXED);
	__atomic_store_n(&gw->stop_requested, true, __ATOMIC_RELAXED);
	wg_wake_all_but(&gw->workgroup, 0);
	wg_join(&gw->workgroup);
}

int gateway_run(struct gateway *gw)
{
	int ret = cli_loop_run(&gw_main(gw)->ring);

	if (ret < 0)
		log_error("Event loop failed", LF_S("error", strerror(-ret)));
	/* each worker ends its own loop: the others' last lines (their
	 * streams' ends, a note of dropped lines) come before "stopped" */
	workers_end(gw);
	if (ret == 0)
		log_info("Gateway stopped", LF_S("reason", "signal"));
	return ret;
}

/* The ring-bound part of a worker, on the thread that runs it. */
static void worker_close(struct gw_worker *w)
{
	if (!w->ring_ready)
		return;
	listener_stop(&w->ring, &w->tunnel_listener);
	listener_stop(&w->ring, &w->socks5_listener);
	listener_stop(&w->ring, &w->http_listener);
	listener_stop(&w->ring, &w->https_listener);
	tls_ctx_free(w->https_listener.tls);
	w->https_listener.tls = NULL;
	if (w->bufs_ready)
		bufring_exit(&w->bufs, &w->ring);
	if (w->index) /* worker 0's ring also runs what gateway_destroy closes */
		ring_exit(&w->ring);
}

void gateway_destroy(struct gateway *gw)
{
	workers_end(gw); /* if gateway_run did not (a failed start) */
	if (gw->control_bound)
		unlink(gw->cfg->control.socket);
	if (gw->nworkers) {
		listener_stop(&gw_main(gw)->ring, &gw->control_listener);
		metrics_server_destroy(&gw->metrics);
		forward_stop_all(gw);
		worker_close(gw_main(gw));
	}
	registry_destroy(&gw->registry);
	origin_pool_dir_free(gw);
	handshake_sources_free(&gw->tunnel_budget);
	gw_stats_free(&gw->stats);
	tls_ctx_free(gw->tls);
	if (gw->nworkers) {
		notify_exit(&gw->notify);
		if (gw_main(gw)->ring_ready)
			ring_exit(&gw_main(gw)->ring);
	}
	/* after the ring: no operation of theirs is left in the kernel */
	forward_free_all(gw);
	wg_destroy(&gw->workgroup);
	free(gw->workers);
	pthread_mutex_destroy(&gw->lock);
}
