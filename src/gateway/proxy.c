/* proxy.c — users' connections: accept, route by group, open, account
 * (see proxy.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utlist.h>

#include "anyproxy/common.h"
#include "anyproxy/grammar.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "anyproxy/username.h"
#include "gateway.h"
#include "origin_pool.h"
#include "proxy.h"

/* ---- life cycle ---- */

/* The user's handshake is over: its first request is parsed and
 * authenticated (proxy_open), or the connection ended first. From then on
 * it no longer counts against [gateway] max_handshakes; waiting for the
 * agent is bounded by [gateway] open_timeout_ms per agent tried and the
 * connection limits.
 * Counted from proxy_accept; handshake_end counts it once. */
static void user_handshake_over(struct user_conn *uc)
{
	handshake_end(uc->w, &uc->w->gw->user_budget, &uc->handshake);
}

void proxy_close_stale(void *owner)
{
	struct user_conn *uc = owner;

	relay_close(&uc->relay, "stale handshake closed at max_handshakes");
}

void proxy_handshake_over(struct user_conn *uc)
{
	user_handshake_over(uc);
	proxy_deadline(uc, 0, "handshake");
}

static void user_socket_data(struct relay *r, const uint8_t *p, size_t n)
{
	struct user_conn *uc = container_of(r, struct user_conn, relay);

	uc->fe->on_socket_data(uc, p, n);
}

static void open_state_free(struct user_conn *uc);
static void open_timed_out(struct user_conn *uc);
static void count_open_result(struct user_conn *uc, uint8_t reason);

static void user_closed(struct relay *r, const char *why)
{
	struct user_conn *uc = container_of(r, struct user_conn, relay);
	struct gateway *gw = uc->w->gw;
	struct gw_worker *w = uc->w;

	timer_disarm(&w->ring, &uc->deadline);
	open_state_free(uc);
	proxy_stream_done(uc);
	user_handshake_over(uc);
	log_debug("User connection closed", LF_S("proxy", uc->fe->name),
		  LF_S("client_id", uc->client_id), LF_U("bytes_up", r->bytes_up),
		  LF_U("bytes_down", r->bytes_down), LF_S("reason", why));
	uc->fe->on_closed(uc);
	GW_SUB(&gw->stats.proxy[uc->proxy].connections, 1);
	DL_DELETE(w->users, uc);
	free(uc);
	w->nusers--;
	GW_SUB(&gw->nusers, 1);
	gw->on_user_closed(w);
}

const struct relay_ops proxy_relay_ops = {
	.on_socket_data = user_socket_data,
	.on_closed = user_closed,
};

static void handover_try(struct user_conn *uc);

static void deadline_fire(struct ring *r, struct timer *t)
{
	struct user_conn *uc = container_of(t, struct user_conn, deadline);
	uint32_t idle_ms = uc->w->gw->cfg->gateway.idle_timeout_ms;

	if (uc->moving) {
		handover_try(uc);
		return;
	}
	if (uc->idle_watch) {
		/* lazy: activity only stamps the relay; the timer checks here */
		uint64_t quiet;

		if (!idle_ms)
			return; /* switched off by a reload */
		if (timer_rearm_unless_idle(r, &uc->deadline, uc->relay.last_active_ms, idle_ms,
					    &quiet))
			return;
		log_info("User connection idle, closing", LF_S("proxy", uc->fe->name),
			 LF_S("client_id", uc->client_id), LF_U("idle_ms", quiet));
		relay_close(&uc->relay, "idle timeout");
		return;
	}
	if (uc->open) {
		open_timed_out(uc);
		return;
	}
	log_info("User connection timed out", LF_S("proxy", uc->fe->name),
		 LF_S("phase", uc->phase));
	relay_close(&uc->relay, "deadline passed");
}

void proxy_deadline(struct user_conn *uc, uint32_t ms, const char *phase)
{
	uc->idle_watch = false;
	uc->phase = phase;
	if (ms)
		timer_arm(&uc->w->ring, &uc->deadline, ms);
	else
		timer_disarm(&uc->w->ring, &uc->deadline);
}

void proxy_await_request(struct user_conn *uc)
{
	proxy_deadline(uc, uc->w->gw->cfg->gateway.handshake_timeout_ms, "handshake");
}

void proxy_watch_idle(struct user_conn *uc)
{
	uint32_t idle_ms = uc->w->gw->cfg->gateway.idle_timeout_ms;

	uc->idle_watch = idle_ms != 0;
	uc->relay.last_active_ms = now_ms();
	if (idle_ms)
		timer_arm(&uc->w->ring, &uc->deadline, idle_ms);
	else
		timer_disarm(&uc->w->ring, &uc->deadline);
}

/* A user (or a user's socket) refused at max_connections: counted, and
 * said at most once a second (a flood of users must not become a flood of
 * log lines). */
static void count_over_limit(struct gateway *gw, const char *proxy)
{
	gw_lock(gw);
	gw->refused_over_limit++;
	if (log_rate_allow(&gw->refusal_rate, now_ms()))
		log_warn("Connection limit reached, user refused", LF_S("proxy", proxy),
			 LF_U("max_connections", gw->max_users),
			 LF_U("refused_total", gw->refused_over_limit));
	gw_unlock(gw);
}

/* [gateway] max_connections: say so in the user's protocol and close. A
 * plain send: a fresh socket's buffer always takes these few bytes. */
static void refuse_over_limit(struct gateway *gw, int fd, const struct proxy_frontend *fe)
{
	uint8_t msg[PROXY_REFUSAL_MAX_BYTES];
	ssize_t n = fe->encode_refusal(msg, sizeof(msg));

	if (n > 0 && send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("Refusal not sent", LF_S("error", strerror(errno)));
	close(fd);
	count_over_limit(gw, fe->name);
}

/* One place of max_connections for a connection (counter: nusers) or
 * another socket of a user (nuser_fds), which share the limit (other: the
 * other counter). Counted first, then compared: two workers cannot both
 * take the last place. */
static bool take_place(struct gateway *gw, unsigned *counter, const unsigned *other)
{
	if (GW_ADD(counter, 1) + GW_READ(other) >= GW_READ(&gw->max_users)) {
		GW_SUB(counter, 1);
		return false;
	}
	return true;
}

bool proxy_fd_take(struct gateway *gw, const char *proxy)
{
	if (take_place(gw, &gw->nuser_fds, &gw->nusers))
		return true;
	count_over_limit(gw, proxy);
	return false;
}

void proxy_fd_give(struct gateway *gw)
{
	GW_SUB(&gw->nuser_fds, 1);
}

void proxy_accept(struct listener *l, int fd)
{
	struct gw_worker *w = l->owner;
	struct gateway *gw = w->gw;
	const struct proxy_frontend *fe = l->frontend;
	struct user_conn *uc;
	int ret;

	if (GW_READ(&gw->stopping)) {
		close(fd);
		return;
	}
	if (!take_place(gw, &gw->nusers, &gw->nuser_fds)) {
		refuse_over_limit(gw, fd, fe);
		return;
	}
	uc = calloc(1, sizeof(*uc));
	if (!uc) {
		GW_SUB(&gw->nusers, 1);
		close(fd);
		return;
	}
	/* TCP_NODELAY comes from the listening socket (net_listen_tcp):
	 * Nagle would hold a small write back until the previous one is
	 * acknowledged */
	uc->w = w;
	uc->fe = fe;
	uc->listener_cfg = l->proxy_cfg;
	uc->proxy = l->proxy;
	GW_ADD(&gw->stats.proxy[uc->proxy].connections, 1);
	GW_ADD(&gw->stats.proxy[uc->proxy].connections_total, 1);
	DL_PREPEND(w->users, uc);
	w->nusers++;
	timer_init(&uc->deadline, deadline_fire);
	relay_init(&uc->relay, &w->ring, &w->bufs, fd, &proxy_relay_ops);
	proxy_await_request(uc);
	/* max_handshakes needs no check here: at the bound the proxy ports'
	 * listeners are paused (listener.c) */
	ret = handshake_begin(w, &gw->user_budget, &uc->handshake, uc);
	if (ret == 0)
		ret = l->tls ? relay_tls_start(&uc->relay, l->tls, fe->tls_alpn) : 0;
	if (ret == 0)
		ret = fe->session_start(uc);
	if (ret < 0) {
		relay_close(&uc->relay, "out of memory");
		return;
	}
	if (ret == 0)
		relay_read(&uc->relay, true);
}

void proxy_close_all(struct gw_worker *w, const char *why)
{
	struct user_conn *uc, *tmp;

	/* relay_close frees nothing synchronously (user_closed unlinks and
	 * frees in a later completion), so no entry leaves the list during
	 * the walk; _SAFE still survives losing the current one */
	DL_FOREACH_SAFE (w->users, uc, tmp)
		relay_close(&uc->relay, why);
}

void proxy_close_handshaking(struct gw_worker *w, const char *why)
{
	struct user_conn *uc, *tmp;

	/* as in proxy_close_all: relay_close frees nothing synchronously; an
	 * HTTP connection between requests holds no request, even when it
	 * keeps its stream for the next one */
	DL_FOREACH_SAFE (w->users, uc, tmp)
		if ((!uc->relay.stream.tunnel || uc->stream_idle) && !uc->relay.pumping)
			relay_close(&uc->relay, why);
	origin_pool_release(w, false, NULL, NULL); /* parked streams hold no request */
}

bool proxy_stream_reusable(const struct user_conn *uc, const char *group)
{
	return gw_agent_usable(uc->w->gw, uc->client, uc->relay.stream.tunnel, group);
}

void proxy_adopt_stream(struct user_conn *uc, struct reg_client *client)
{
	gw_lock(uc->w->gw);
	uc->client = client;
	snprintf(uc->client_id, sizeof(uc->client_id), "%s", client->id);
	registry_stream_opened(client);
	uc->relay.stream.count_sent[0] = &client->bytes_out;
	uc->relay.stream.count_received[0] = &client->bytes_in;
	uc->group_stats = gw_stats_group(&uc->w->gw->stats, client->group->id);
	if (uc->group_stats) {
		uc->group_stats->streams_active[uc->proxy]++;
		uc->relay.stream.count_sent[1] = &uc->group_stats->bytes_out;
		uc->relay.stream.count_received[1] = &uc->group_stats->bytes_in;
	}
	gw_unlock(uc->w->gw);
}

/* Is the agent of client drained with apctl? (read under the lock) */
static bool client_drained(struct gateway *gw, const struct reg_client *client)
{
	bool drained;

	if (!client)
		return false;
	gw_lock(gw);
	drained = client->drained;
	gw_unlock(gw);
	return drained;
}

void proxy_release_idle(struct gw_worker *w, bool drained_only, const struct tunnel *t)
{
	struct user_conn *uc;

	/* resets only: no user connection leaves the list during the walk */
	DL_FOREACH (w->users, uc) {
		if (!uc->stream_idle || !uc->relay.stream.tunnel ||
		    (t && uc->relay.stream.tunnel != t) ||
		    (drained_only && !client_drained(w->gw, uc->client)))
			continue;
		uc->stream_idle = false;
		stream_reset(&uc->relay.stream, FRAME_OPEN_GENERAL);
		proxy_stream_done(uc);
	}
	origin_pool_release(w, drained_only, t, NULL);
}

/* ---- authentication ---- */

static bool secret_matches(const char *given, size_t len, const char *expected)
{
	return secret_equal(given, len, expected ? expected : "", expected ? strlen(expected) : 0);
}

bool proxy_needs_credentials(const struct user_conn *uc)
{
	return uc->listener_cfg->auth_username || uc->listener_cfg->auth_password;
}

/* Authenticate a parsed identity and its password, in constant time:
 * against the [group.NAME] section of its group when there is one (looked
 * up by the exact group that routing uses), else against the listener's
 * credentials. A listener without credentials admits everyone to groups
 * that have no section of their own. *admitted_by: which of them decided
 * (proxy_authenticate). */
static bool check_credentials(const struct user_conn *uc, const struct username_identity *id,
			      const char *password, size_t password_len, unsigned *admitted_by)
{
	const struct config_listener *l = uc->listener_cfg;
	const struct config_group_auth *g;
	const char *want_user, *want_password;
	int user_ok, pass_ok;

	/* a group with its own section admits only its own password */
	g = config_group_auth(uc->w->gw->cfg, id->group, id->group_len);
	*admitted_by = g ? 0 : 1u + uc->proxy;
	if (g) {
		want_user = g->auth_username ? g->auth_username : l->auth_username;
		want_password = g->auth_password;
	} else if (l->auth_username || l->auth_password) {
		want_user = l->auth_username;
		want_password = l->auth_password;
	} else {
		return true;
	}
	/* both comparisons always run */
	user_ok = !want_user || secret_matches(id->base, id->base_len, want_user);
	pass_ok = secret_matches(password, password_len, want_password);
	return user_ok & pass_ok;
}

bool proxy_credentials_refused(const struct user_conn *uc, const char *why)
{
	char peer[64];

	gw_lock(uc->w->gw);
	uc->w->gw->stats.proxy[uc->proxy].auth_failures++;
	gw_unlock(uc->w->gw);
	net_format_peer(uc->relay.fd, peer, sizeof(peer));
	log_warn("Proxy authentication failed", LF_S("proxy", uc->fe->name), LF_S("reason", why),
		 LF_S("remote_addr", peer));
	return false;
}

bool proxy_authenticate(const struct user_conn *uc, const char *user, size_t user_len,
			const char *password, size_t password_len, struct username_identity *id,
			unsigned *admitted_by)
{
	const char *why = NULL;
	unsigned by;
	char peer[64];

	if (!admitted_by)
		admitted_by = &by;
	if (!user) {
		username_anonymous(id);
		*admitted_by = 1u + uc->proxy; /* the default group has no section */
		if (!proxy_needs_credentials(uc))
			return true;
		/* Not a failure: browsers and curl --proxy-anyauth ask without
		 * credentials first and expect the challenge. Wrong ones are
		 * still a WARN below. */
		net_format_peer(uc->relay.fd, peer, sizeof(peer));
		log_info("Proxy credentials required, challenge sent", LF_S("proxy", uc->fe->name),
			 LF_S("reason", "no credentials"), LF_S("remote_addr", peer));
		return false;
	}
	/* a refused name is no identity: only why it was refused is logged
	 * (it may hold NUL bytes a log field cannot carry) */
	if (username_parse(user, user_len, id, &why) < 0)
		return proxy_credentials_refused(uc, why);
	if (check_credentials(uc, id, password, password_len, admitted_by))
		return true;
	gw_lock(uc->w->gw);
	uc->w->gw->stats.proxy[uc->proxy].auth_failures++;
	gw_unlock(uc->w->gw);
	net_format_peer(uc->relay.fd, peer, sizeof(peer));
	log_warn("Proxy authentication failed", LF_S("proxy", uc->fe->name), LF_S("user", id->full),
		 LF_S("group", id->group), LF_S("reason", "wrong user name or password"),
		 LF_S("remote_addr", peer));
	return false;
}

/* ---- routing ---- */

int proxy_show_target(const struct stream_target *t, char shown[GRAMMAR_TARGET_MAX])
{
	bool name = t->addr_type == FRAME_ADDR_DOMAIN;
	size_t len = name ? strlen(t->domain) : t->addr_type == FRAME_ADDR_IPV4 ? 4 : 16;
	int ret = grammar_format_target(shown, GRAMMAR_TARGET_MAX, t->addr_type,
					name ? (const void *)t->domain : t->addr, len, t->port);

	if (ret < 0)
		snprintf(shown, GRAMMAR_TARGET_MAX, "(invalid target):%u", t->port);
	return ret;
}

static void user_open_result(struct stream *s, uint8_t reason, const char *message);

/* Every answer to a request is counted here, once, by outcome; the time
 * from the first OPEN to the answer too (retries included). */
static void count_open_result(struct user_conn *uc, uint8_t reason)
{
	struct gw_stats *st = &uc->w->gw->stats;

	gw_lock(uc->w->gw);
	st->proxy[uc->proxy].opens[frame_open_result(reason)]++;
	if (uc->open_started_us)
		metrics_observe_us(&st->open_latency, now_us() - uc->open_started_us);
	gw_unlock(uc->w->gw);
	uc->open_started_us = 0;
}

/* The request's answer: counted, then the front end tells the user. */
static void open_result(struct user_conn *uc, uint8_t reason, const char *message)
{
	count_open_result(uc, reason);
	uc->fe->on_open_result(uc, reason, message);
}

/* A request failed with FRAME_OPEN_* reason (message: what the user is
 * told): its front end's INFO line, with the request's user, group, target
 * and the agent tried last ("-" when none took it). The request's names
 * are passed in from where they are at hand, not kept in every user_conn. */
static void log_request_failed(const struct user_conn *uc, const char *user, const char *group,
			       const char *target, uint8_t reason, const char *message)
{
	log_info(uc->fe->failed_line, LF_S("user", user), LF_S("group", group),
		 LF_S("target", target), LF_S("client_id", uc->client_id[0] ? uc->client_id : "-"),
		 LF_S("reason", frame_open_reason_name(reason)), LF_S("error", message));
}

static int user_stream_data(struct stream *s, const uint8_t *p, size_t n)
{
	struct user_conn *uc = s->owner;

	return relay_write(&uc->relay, p, n, n);
}

static void user_stream_fin(struct stream *s)
{
}

static void user_stream_reset(struct stream *s, uint8_t reason, const char *why)
{
	struct user_conn *uc = s->owner;

	if (uc->open_started_us)
		count_open_result(uc, reason); /* reset before the agent answered */
	relay_close(&uc->relay, why);
}

static void user_stream_writable(struct stream *s)
{
}

/* Until the front end starts the pump, the stream's events come here. */
static const struct stream_ops user_stream_ops = {
	.on_data = user_stream_data,
	.on_fin = user_stream_fin,
	.on_reset = user_stream_reset,
	.on_writable = user_stream_writable,
	.on_open_result = user_open_result,
};

/* The user-visible text for "no agent": the spec's words, naming the
 * default group only when it was tried too; a user of the default group
 * itself is told that, not "group '' or default group". */
static void no_agent_text(char *buf, size_t len, const char *group, bool default_tried)
{
	if (!group[0])
		snprintf(buf, len, "no clients available in the default group");
	else
		snprintf(buf, len, "no clients available in group '%s'%s", group,
			 default_tried ? " or default group" : "");
}

const char *proxy_no_fallback(const struct gateway *gw, const struct username_identity *id)
{
	/* a tenant's traffic never crosses into the default group's agents */
	if (id->group_len && config_group_auth(gw->cfg, id->group, id->group_len))
		return "the group has a [group.NAME] section";
	if (id->group_len && !gw->cfg->gateway.fallback_to_default)
		return "fallback_to_default is off";
	return NULL;
}

/* ---- opening, with a retry inside the group ---- */

/* A request's OPEN while no agent accepted it: a copy of what the front end
 * passed (its buffers may be gone by the time of a retry), the agents tried
 * and the most specific failure so far. */
struct proxy_open_state {
	struct username_identity id;
	struct stream_target target; /* domain, user and group point below */
	char domain[FRAME_MAX_TEXT_LEN + 1];
	char shown[GRAMMAR_TARGET_MAX];   /* the target for logs */
	char group[FRAME_MAX_ID_LEN + 1]; /* whose agents are tried (after a fallback: "") */
	struct reg_client **tried;        /* referenced, so no address is reused */
	unsigned ntried, tried_cap;
	/* the agent whose tunnel on another worker the request moves to
	 * (referenced): it is taken there if it still can (open_resume) */
	struct reg_client *moving_to;
	/* moved to a worker whose origin pool holds the streams that fill the
	 * group's tunnels: they give way there first (open_resume) */
	bool reopen;
	uint8_t reason; /* the most specific failure so far (0: none yet) */
	char message[FRAME_MAX_TEXT_LEN + 1];
};

static void open_state_free(struct user_conn *uc)
{
	struct proxy_open_state *st = uc->open;
	unsigned i;

	if (!st)
		return;
	gw_lock(uc->w->gw);
	for (i = 0; i < st->ntried; i++)
		registry_client_put(st->tried[i]);
	if (st->moving_to)
		registry_client_put(st->moving_to);
	gw_unlock(uc->w->gw);
	free(st->tried);
	free(st);
	uc->open = NULL;
}

/*
 * How specific a failure is; when every agent of the group failed, the user
 * sees the most specific one (the first of equals), in this order:
 * denied by the agent's host rules > the target's or the network's answer
 * (refused, unreachable, no such name, address family) > timed out (the
 * agent's connect, or the agent not answering within open_timeout_ms) >
 * the agent's own limit > the tunnel failed. "No agent in the group" is
 * below all of them: it is answered only when no agent was tried at all.
 * docs/operations.md "Retry inside the group".
 */
static int failure_rank(uint8_t reason)
{
	switch (reason) {
	case FRAME_OPEN_NOT_ALLOWED:
		return 5;
	case FRAME_OPEN_REFUSED:
	case FRAME_OPEN_HOST_UNREACHABLE:
	case FRAME_OPEN_NET_UNREACHABLE:
	case FRAME_OPEN_DNS_FAILED:
	case FRAME_OPEN_ADDR_UNSUPPORTED:
		return 4;
	case FRAME_OPEN_TIMEOUT:
		return 3;
	case FRAME_OPEN_LIMIT:
		return 2;
	default:
		return 1;
	}
}

static void open_note_failure(struct proxy_open_state *st, uint8_t reason, const char *message)
{
	if (st->reason && failure_rank(reason) <= failure_rank(st->reason))
		return;
	st->reason = reason;
	snprintf(st->message, sizeof(st->message), "%s", message);
}

static void handover_begin(struct user_conn *uc, struct reg_tunnel *rt);

/* Send the OPEN to rt's agent. 0, or -errno when the tunnel cannot take it
 * (the agent counts as tried either way), or PROXY_MOVING: rt belongs to
 * another worker, the user connection moves there first and picks again
 * (proxy_take_inbox). Under gateway.lock (rt is valid while it is held). */
#define PROXY_MOVING 1
static int open_send(struct user_conn *uc, struct reg_tunnel *rt)
{
	struct proxy_open_state *st = uc->open;
	struct gw_tunnel *gt = rt->owner;
	bool exhausted = uc->moves >= GATEWAY_HANDOVERS_MAX;
	int ret;

	if (rt->worker != uc->w->index && !exhausted) {
		handover_begin(uc, rt);
		return PROXY_MOVING;
	}
	if (st->ntried == st->tried_cap) {
		unsigned cap = st->tried_cap ? st->tried_cap * 2 : 4;
		struct reg_client **p = realloc(st->tried, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		st->tried = p;
		st->tried_cap = cap;
	}
	st->tried[st->ntried++] = rt->client;
	registry_client_get(rt->client);
	snprintf(uc->client_id, sizeof(uc->client_id), "%s", rt->client->id);
	if (rt->worker != uc->w->index) /* moved too often: taken as failed */
		return -EAGAIN;
	ret = stream_open(&uc->relay.stream, gt->tunnel, &st->target, &user_stream_ops, uc);
	if (ret < 0)
		return ret;
	uc->client = rt->client;
	registry_client_get(uc->client);
	registry_stream_opened(uc->client);
	uc->client->streams_total++;
	GW_ADD(&uc->w->streams_total, 1);
	uc->relay.stream.count_sent[0] = &uc->client->bytes_out;
	uc->relay.stream.count_received[0] = &uc->client->bytes_in;
	uc->group_stats = gw_stats_group(&uc->w->gw->stats, rt->client->group->id);
	if (uc->group_stats) {
		uc->group_stats->streams_active[uc->proxy]++;
		uc->group_stats->streams_total[uc->proxy]++;
		uc->relay.stream.count_sent[1] = &uc->group_stats->bytes_out;
		uc->relay.stream.count_received[1] = &uc->group_stats->bytes_in;
	}
	proxy_deadline(uc, uc->w->gw->cfg->gateway.open_timeout_ms, "waiting for the agent");
	return 0;
}

/* The agent tried last failed the request (reason, message): send it to
 * the next agent of the group not tried yet, or, when none is left, answer
 * the user with the most specific failure of all. */
static void open_failed(struct user_conn *uc, uint8_t reason, const char *message)
{
	struct proxy_open_state *st = uc->open;
	struct gateway *gw = uc->w->gw;
	char failed[FRAME_MAX_ID_LEN + 1], msg[FRAME_MAX_TEXT_LEN + 1];
	struct reg_tunnel *rt;
	bool full;
	int ret;

	proxy_stream_done(uc);
	open_note_failure(st, reason, message);
	snprintf(failed, sizeof(failed), "%s", uc->client_id);
	gw_lock(gw);
	while (!GW_READ(&gw->stopping) &&
	       (rt = registry_pick_other(&gw->registry, uc->w->index, st->group, st->tried,
					 st->ntried, &full))) {
		gw->open_retries++;
		log_info("Retrying the request with another agent of the group",
			 LF_S("group", st->group), LF_S("user", st->id.full),
			 LF_S("target", st->shown), LF_S("failed_client_id", failed),
			 LF_S("reason", frame_open_reason_name(reason)),
			 LF_S("client_id", rt->client->id), LF_U("attempt", st->ntried + 1),
			 LF_U("retries_total", gw->open_retries));
		ret = open_send(uc, rt);
		if (ret >= 0) {
			gw_unlock(gw);
			return;
		}
		if (ret == -ENOMEM) { /* rt was not recorded as tried: stop here */
			open_note_failure(st, FRAME_OPEN_GENERAL, "out of memory");
			break;
		}
		snprintf(failed, sizeof(failed), "%s", rt->client->id);
		reason = FRAME_OPEN_GENERAL;
		open_note_failure(st, reason, "tunnel busy or closing");
	}
	gw_unlock(gw);
	if (st->ntried > 1)
		log_info("Every agent of the group failed the request", LF_S("group", st->group),
			 LF_S("user", st->id.full), LF_S("target", st->shown),
			 LF_U("agents_tried", st->ntried),
			 LF_S("reason", frame_open_reason_name(st->reason)));
	/* the answer outlives st, which goes before the front end answers */
	reason = st->reason;
	snprintf(msg, sizeof(msg), "%s", st->message);
	log_request_failed(uc, st->id.full, st->id.group, st->shown, reason, msg);
	open_state_free(uc);
	open_result(uc, reason, msg);
}

static void user_open_result(struct stream *s, uint8_t reason, const char *message)
{
	struct user_conn *uc = s->owner;

	if (!reason || !uc->open) {
		if (reason) /* not expected: an answer after the request gave up */
			log_request_failed(uc, "-", "-", "-", reason, message);
		open_state_free(uc);
		open_result(uc, reason, message);
		return;
	}
	log_info("Agent could not open the target", LF_S("client_id", uc->client_id),
		 LF_S("target", uc->open->shown), LF_S("reason", frame_open_reason_name(reason)),
		 LF_S("error", message));
	open_failed(uc, reason, message);
}

/* No answer to the OPEN within open_timeout_ms: the agent's tunnel is
 * suspect (no new streams until it answers), the stream is reset, and the
 * request goes on to the next agent. */
static void open_timed_out(struct user_conn *uc)
{
	struct tunnel *t = uc->relay.stream.tunnel;

	log_warn("Agent did not answer the OPEN in time", LF_S("client_id", uc->client_id),
		 LF_S("target", uc->open->shown),
		 LF_U("open_timeout_ms", uc->w->gw->cfg->gateway.open_timeout_ms));
	if (t) {
		tunnel_suspect(t, "OPEN not answered within open_timeout_ms");
		stream_reset(&uc->relay.stream, FRAME_OPEN_TIMEOUT);
	}
	open_failed(uc, FRAME_OPEN_TIMEOUT, "the agent did not answer within open_timeout_ms");
}

struct gateway *proxy_gateway_of(const struct user_conn *uc)
{
	return uc->w->gw;
}

void proxy_log_fallback(struct gateway *gw, const char *group)
{
	char msg[128];

	gw_lock(gw);
	gw->stats.fallbacks++;
	gw_unlock(gw);
	/* the spec's words, the group inside them, so that its greps find the
	 * line (a group is A-Z a-z 0-9 . _ : - only) */
	snprintf(msg, sizeof(msg),
		 "No clients available in group group=%s, falling back to default", group);
	log_warn(msg, LF_S("group", group));
}

bool proxy_group_full(struct gateway *gw, const struct reg_group *g, const char *user)
{
	uint32_t max = gw->cfg->gateway.max_connections_per_group;

	if (!max || g->streams_active < max)
		return false;
	log_warn("Group connection limit reached, user refused", LF_S("group", g->id),
		 LF_S("user", user), LF_U("max_connections_per_group", max));
	return true;
}

static struct proxy_open_state *open_state_new(const struct username_identity *id,
					       const struct stream_target *target,
					       const char *shown);
static void handover_start(struct user_conn *uc, unsigned worker);

/* The group's tunnels are full and this worker parks none of their
 * streams: another worker's origin pool may (the streams live on their
 * tunnel's worker). The request moves there, where the pool gives way.
 * True when it moves. */
static bool open_where_parked(struct user_conn *uc, const struct username_identity *id,
			      const struct stream_target *target, const char *shown)
{
	struct gateway *gw = uc->w->gw;
	struct proxy_open_state *st;
	unsigned i;

	if (uc->moves >= GATEWAY_HANDOVERS_MAX)
		return false;
	for (i = 0; i < gw->nworkers; i++)
		if (i != uc->w->index && GW_READ(&gw->workers[i].parked))
			break;
	if (i == gw->nworkers)
		return false;
	st = open_state_new(id, target, shown);
	if (!st)
		return false;
	snprintf(st->group, sizeof(st->group), "%s", id->group);
	st->reopen = true;
	uc->open = st;
	uc->open_started_us = now_us();
	handover_start(uc, i);
	return true;
}

void proxy_open(struct user_conn *uc, const struct username_identity *id,
		const struct stream_target *target)
{
	struct gateway *gw = uc->w->gw;
	char shown[GRAMMAR_TARGET_MAX];
	struct proxy_open_state *st;
	struct reg_tunnel *rt;
	const char *no_fallback = NULL;
	bool fell_back, full, handshake = uc->handshake != NULL;
	uint64_t handshake_us = handshake ? now_us() - uc->handshake->since_us : 0;
	int ret;

	user_handshake_over(uc);
	open_state_free(uc);
	uc->moves = 0;
	proxy_show_target(target, shown);
	/* a kept-alive HTTP connection's earlier request is not this one */
	uc->client_id[0] = '\0';
	log_info("Gateway received request", LF_S("user", id->full), LF_S("group", id->group),
		 LF_S("proxy", uc->fe->name), LF_S("target", shown));
	no_fallback = proxy_no_fallback(gw, id);
	gw_lock(gw);
	if (handshake) /* under the lock the pick takes anyway */
		metrics_observe_us(&gw->stats.proxy[uc->proxy].handshake, handshake_us);
	rt = registry_pick(&gw->registry, uc->w->index, id->group, !no_fallback, &fell_back, &full);
	if (!rt && full && origin_pool_count(uc->w)) {
		/* idle parked streams count on their tunnels: never at the
		 * cost of a request (only the group's: others' tunnels are
		 * not the full ones) */
		gw_unlock(gw);
		origin_pool_release(uc->w, false, NULL, id->group);
		gw_lock(gw);
		rt = registry_pick(&gw->registry, uc->w->index, id->group, !no_fallback, &fell_back,
				   &full);
	}
	if (!rt)
		gw_unlock(gw);
	if (!rt && full && open_where_parked(uc, id, target, shown))
		return;
	if (!rt && full) {
		char msg[160];

		snprintf(msg, sizeof(msg),
			 "stream limit of group '%s' reached (every tunnel at "
			 "max_streams_per_tunnel)",
			 id->group);
		log_warn("Group's tunnels are full, user refused", LF_S("group", id->group),
			 LF_S("user", id->full),
			 LF_U("max_streams_per_tunnel", gw->cfg->gateway.max_streams_per_tunnel));
		log_request_failed(uc, id->full, id->group, shown, FRAME_OPEN_LIMIT, msg);
		open_result(uc, FRAME_OPEN_LIMIT, msg);
		return;
	}
	if (!rt) {
		char msg[160];

		no_agent_text(msg, sizeof(msg), id->group, !no_fallback);
		if (no_fallback)
			log_error(msg, LF_S("user", id->full), LF_S("group", id->group),
				  LF_S("target", shown), LF_S("no_fallback", no_fallback));
		else
			log_error(msg, LF_S("user", id->full), LF_S("group", id->group),
				  LF_S("target", shown));
		log_request_failed(uc, id->full, id->group, shown, FRAME_OPEN_NET_UNREACHABLE, msg);
		open_result(uc, FRAME_OPEN_NET_UNREACHABLE, msg);
		return;
	}
	if (fell_back) {
		proxy_log_fallback(gw, id->group);
		log_info("Selected client from default group", LF_S("client_id", rt->client->id));
	} else {
		log_info("Selected client from group", LF_S("group", id->group),
			 LF_S("client_id", rt->client->id));
	}
	if (proxy_group_full(gw, rt->client->group, id->full)) {
		char msg[160];

		snprintf(msg, sizeof(msg), "connection limit of group '%s' reached",
			 rt->client->group->id);
		gw_unlock(gw);
		log_request_failed(uc, id->full, id->group, shown, FRAME_OPEN_LIMIT, msg);
		open_result(uc, FRAME_OPEN_LIMIT, msg);
		return;
	}
	st = open_state_new(id, target, shown);
	if (!st) {
		gw_unlock(gw);
		log_request_failed(uc, id->full, id->group, shown, FRAME_OPEN_GENERAL,
				   "out of memory");
		open_result(uc, FRAME_OPEN_GENERAL, "out of memory");
		return;
	}
	/* retries stay in the group that serves the request */
	snprintf(st->group, sizeof(st->group), "%s", rt->client->group->id);
	uc->open = st;
	uc->open_started_us = now_us();
	ret = open_send(uc, rt);
	gw_unlock(gw);
	if (ret >= 0)
		return;
	log_debug("OPEN not sent", LF_S("client_id", uc->client_id), LF_S("error", strerror(-ret)));
	open_failed(uc, FRAME_OPEN_GENERAL,
		    ret == -ENOMEM ? "out of memory" : "tunnel busy or closing");
}

void proxy_count_reused(struct user_conn *uc)
{
	/* like proxy_open(): the request ends the user's handshake */
	gw_lock(uc->w->gw);
	if (uc->handshake)
		metrics_observe_us(&uc->w->gw->stats.proxy[uc->proxy].handshake,
				   now_us() - uc->handshake->since_us);
	uc->w->gw->stats.proxy[uc->proxy].opens[frame_open_result(0)]++;
	gw_unlock(uc->w->gw);
	user_handshake_over(uc);
}

void proxy_stream_done(struct user_conn *uc)
{
	/* credit owed to the old stream must not flow to the next one */
	uc->relay.out_stream_debt = 0;
	memset(uc->relay.stream.count_sent, 0, sizeof(uc->relay.stream.count_sent));
	memset(uc->relay.stream.count_received, 0, sizeof(uc->relay.stream.count_received));
	if (!uc->group_stats && !uc->client)
		return;
	gw_lock(uc->w->gw);
	if (uc->group_stats)
		gw_stats_stream_done(uc->w->gw, uc->group_stats, uc->proxy);
	uc->group_stats = NULL;
	if (uc->client) {
		registry_stream_closed(uc->client);
		registry_client_put(uc->client);
		uc->client = NULL;
	}
	gw_unlock(uc->w->gw);
}

void proxy_start_pump(struct user_conn *uc, const uint8_t *first, size_t n)
{
	proxy_watch_idle(uc);
	relay_pump(&uc->relay, first, n);
}

/* ---- handover to the worker of the tunnel ---- */

/* Polls of GATEWAY_HANDOVER_RETRY_MS for the operations in flight to end
 * (a send to a user who does not read); then the connection closes. */
#define PROXY_HANDOVER_POLLS_MAX 5000

/* Under gateway.lock (open_send): the request's tunnel is on another
 * worker. From the next loop iteration on (never under the relay's own
 * callbacks), handover_try waits until nothing of the connection is in
 * flight on this ring, then queues it for that worker. */
static void handover_begin(struct user_conn *uc, struct reg_tunnel *rt)
{
	struct proxy_open_state *st = uc->open;

	if (st->moving_to)
		registry_client_put(st->moving_to);
	st->moving_to = rt->client;
	registry_client_get(rt->client);
	handover_start(uc, rt->worker);
}

static void handover_try(struct user_conn *uc)
{
	struct relay *r = &uc->relay;
	struct gw_worker *w = uc->w, *to;
	struct gateway *gw = uc->w->gw;

	if (r->closing)
		return;
	if (r->stream.tunnel) { /* not expected: the stream is done before a pick */
		relay_close(r, "a stream still open at a handover");
		return;
	}
	if (r->recv_armed)
		relay_cancel_recv(r);
	if (r->inflight) {
		if (++uc->move_polls > PROXY_HANDOVER_POLLS_MAX) {
			relay_close(r, "handover to another worker stalled");
			return;
		}
		timer_arm(&w->ring, &uc->deadline, GATEWAY_HANDOVER_RETRY_MS);
		return;
	}
	gw_lock(gw);
	to = &gw->workers[uc->move_to];
	if (to->wg.exited || GW_READ(&gw->stopping)) {
		gw_unlock(gw);
		uc->moving = false;
		if (uc->move_front)
			uc->fe->on_moved(uc); /* goes on here */
		else
			open_failed(uc, FRAME_OPEN_GENERAL, "the gateway is stopping");
		return;
	}
	handshake_unlist(w, &gw->user_budget, uc->handshake);
	DL_DELETE(w->users, uc);
	w->nusers--;
	DL_APPEND(to->inbox, uc);
	gw_unlock(gw);
	/* uc is the other worker's from here on */
	GW_ADD(&gw->handovers, 1);
	wg_wake(&to->wg);
	gw->on_user_closed(w);
}

/* Under gateway.lock: a tunnel of agent c on worker w that can take a
 * stream now (a sound one before a suspect one), or NULL. */
static struct reg_tunnel *agent_tunnel_on(struct gateway *gw, struct reg_client *c, unsigned w)
{
	struct reg_tunnel *found = NULL;
	unsigned i;

	if (c->detached || c->drained)
		return NULL;
	for (i = 0; i < c->ntunnels; i++) {
		struct reg_tunnel *t = c->tunnels[i];

		if (t->worker != w || t->draining ||
		    (gw->registry.usable && !gw->registry.usable(t, gw->registry.ctx)))
			continue;
		if (!t->suspect)
			return t;
		if (!found)
			found = t;
	}
	return found;
}

/* On the new worker: the agent the request moved for takes it if it still
 * can (its tunnel here may have closed meanwhile); otherwise the request
 * picks again, preferring this worker's tunnels. */
static void open_resume(struct user_conn *uc)
{
	struct gateway *gw = uc->w->gw;
	struct proxy_open_state *st = uc->open;
	struct reg_tunnel *rt = NULL;
	bool full = false;
	int ret;

	if (!st) {
		relay_close(&uc->relay, "moved without a request");
		return;
	}
	if (st->reopen) { /* the group's parked streams here give way first */
		st->reopen = false;
		origin_pool_release(uc->w, false, NULL, st->group);
	}
	gw_lock(gw);
	if (st->moving_to) {
		if (!GW_READ(&gw->stopping))
			rt = agent_tunnel_on(gw, st->moving_to, uc->w->index);
		registry_client_put(st->moving_to);
		st->moving_to = NULL;
	}
	if (!rt && !GW_READ(&gw->stopping))
		rt = registry_pick_other(&gw->registry, uc->w->index, st->group, st->tried,
					 st->ntried, &full);
	/* the group's count may have grown while the request moved: the limit
	 * proxy_open checked holds here too */
	if (rt && proxy_group_full(gw, rt->client->group, st->id.full)) {
		char msg[160];

		snprintf(msg, sizeof(msg), "connection limit of group '%s' reached",
			 rt->client->group->id);
		gw_unlock(gw);
		log_request_failed(uc, st->id.full, st->id.group, st->shown, FRAME_OPEN_LIMIT, msg);
		open_state_free(uc);
		open_result(uc, FRAME_OPEN_LIMIT, msg);
		return;
	}
	if (rt) {
		ret = open_send(uc, rt);
		gw_unlock(gw);
		if (ret >= 0)
			return;
		log_debug("OPEN not sent after a handover", LF_S("client_id", uc->client_id),
			  LF_S("error", strerror(-ret)));
		open_failed(uc, FRAME_OPEN_GENERAL,
			    ret == -ENOMEM ? "out of memory" : "tunnel busy or closing");
		return;
	}
	gw_unlock(gw);
	open_failed(uc, full ? FRAME_OPEN_LIMIT : FRAME_OPEN_NET_UNREACHABLE,
		    full ? "every tunnel of the group is full" : "no agent of the group is left");
}

void proxy_take_inbox(struct gw_worker *w)
{
	struct gateway *gw = w->gw;
	struct user_conn *list, *uc, *tmp;

	gw_lock(gw);
	list = w->inbox;
	w->inbox = NULL;
	gw_unlock(gw);
	DL_FOREACH_SAFE (list, uc, tmp) {
		DL_DELETE(list, uc);
		uc->w = w;
		uc->relay.ring = &w->ring;
		uc->relay.bufs = &w->bufs;
		uc->moving = false;
		DL_PREPEND(w->users, uc);
		w->nusers++;
		GW_ADD(&w->handovers_in, 1);
		if (uc->move_front)
			uc->fe->on_moved(uc);
		else
			open_resume(uc);
	}
}

static struct proxy_open_state *open_state_new(const struct username_identity *id,
					       const struct stream_target *target,
					       const char *shown)
{
	struct proxy_open_state *st = calloc(1, sizeof(*st));

	if (!st)
		return NULL;
	st->id = *id;
	st->target = *target;
	if (target->addr_type == FRAME_ADDR_DOMAIN) {
		snprintf(st->domain, sizeof(st->domain), "%s", target->domain);
		st->target.domain = st->domain;
	}
	st->target.user = st->id.base;
	st->target.group = st->id.group;
	snprintf(st->shown, sizeof(st->shown), "%s", shown);
	return st;
}

/* Move to worker `worker` and resume the request there (open_resume). */
static void handover_start(struct user_conn *uc, unsigned worker)
{
	uc->moving = true;
	uc->move_front = false;
	uc->move_to = (uint16_t)worker;
	uc->moves++;
	uc->move_polls = 0;
	uc->idle_watch = false;
	uc->phase = "moving to another worker";
	timer_arm(&uc->w->ring, &uc->deadline, 0);
}

void proxy_move_to(struct user_conn *uc, unsigned worker)
{
	handover_start(uc, worker);
	uc->move_front = true;
}
