/*
 * front_forward.c — port forwarding (forward.h): the front end of the
 * [forward.NAME] listeners. There is no handshake: a connection from an
 * allowed source opens a stream to the forward's target in its group at
 * once, under the synthetic identity "forward:NAME" (the user of log lines
 * and of the OPEN frame). Nothing is read from the user before the agent
 * has connected to the target, so the pump sees every byte and the user's
 * FIN (half-close) travels like any other. A failure closes the connection
 * cleanly: the user's protocol is the target's, and it has no error reply.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <utlist.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "forward.h"
#include "front.h"
#include "proxy.h"

/* The user name of a forward's connections: "forward:" NAME. */
#define FORWARD_USER_PREFIX "forward:"
_Static_assert(sizeof(FORWARD_USER_PREFIX) - 1 + ID_MAX_BYTES <= USERNAME_BASE_MAX, "a forward's "
										    "synthetic "
										    "user name "
										    "fits the OPEN "
										    "frame's user "
										    "field");

static struct gw_forward *forward_of(struct user_conn *uc)
{
	return container_of(uc->listener_cfg, struct gw_forward, no_credentials);
}

/* The forward's target as an OPEN target: an address literal travels as
 * an address, anything else as a name the agent resolves. */
static void forward_target(const struct config_forward *f, struct stream_target *t)
{
	memset(t, 0, sizeof(*t));
	t->port = f->target.port;
	if (inet_pton(AF_INET, f->target.host, t->addr) == 1) {
		t->addr_type = FRAME_ADDR_IPV4;
	} else if (inet_pton(AF_INET6, f->target.host, t->addr) == 1) {
		t->addr_type = FRAME_ADDR_IPV6;
	} else {
		t->addr_type = FRAME_ADDR_DOMAIN;
		t->domain = f->target.host;
	}
}

/* The synthetic identity of the forward's connections and clients. */
static void forward_identity(const struct gw_forward *fw, struct username_identity *id)
{
	memset(id, 0, sizeof(*id));
	id->base_len = (size_t)snprintf(id->base, sizeof(id->base), FORWARD_USER_PREFIX "%s",
					fw->cfg->name);
	memcpy(id->full, id->base, id->base_len + 1);
	id->full_len = id->base_len;
	id->group_len = (size_t)snprintf(id->group, sizeof(id->group), "%s", fw->cfg->group);
}

/* allowed_sources for a source address (ss NULL: unknown, refused). */
static bool source_admitted(struct gw_forward *fw, const struct sockaddr *ss)
{
	char peer[64];

	if (!fw->cfg->nsources)
		return true;
	if (ss && config_forward_source_allowed(fw->cfg, ss))
		return true;
	fw->refused++;
	/* a scan of the port must not become a flood of log lines */
	if (log_rate_allow(&fw->refusal_rate, now_ms())) {
		if (ss)
			net_format_sockaddr(ss, peer, sizeof(peer));
		else
			snprintf(peer, sizeof(peer), "(unknown)");
		log_warn("Forward refused a source not in allowed_sources",
			 LF_S("forward", fw->cfg->name), LF_S("remote_addr", peer),
			 LF_U("refused_total", fw->refused));
	}
	return false;
}

/* allowed_sources, checked before anything is opened. */
static bool source_allowed(struct user_conn *uc, struct gw_forward *fw)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	bool known;

	if (!fw->cfg->nsources)
		return true;
	known = getpeername(uc->relay.fd, (struct sockaddr *)&ss, &len) == 0;
	return source_admitted(fw, known ? (struct sockaddr *)&ss : NULL);
}

static int forward_session_start(struct user_conn *uc)
{
	struct gw_forward *fw = forward_of(uc);
	struct username_identity id;
	struct stream_target target;

	uc->proto = fw; /* not owned: the forward outlives its connections */
	GW_ADD(&fw->active, 1);
	fw->total++;
	if (!source_allowed(uc, fw)) {
		relay_close_after_send(&uc->relay, "source not in allowed_sources");
		return 1;
	}
	forward_identity(fw, &id);
	forward_target(fw->cfg, &target);
	log_debug("Forward connection accepted", LF_S("forward", fw->cfg->name));
	/* the answer may come at once (no agent): nothing is read before it */
	proxy_open(uc, &id, &target);
	return 1;
}

static void forward_open_result(struct user_conn *uc, uint8_t reason, const char *message)
{
	struct gw_forward *fw = uc->proto;

	if (!reason) {
		proxy_start_pump(uc, NULL, 0);
		return;
	}
	if (log_rate_allow(&fw->failure_rate, now_ms()))
		log_warn("Forward target not reached, connection closed",
			 LF_S("forward", fw->cfg->name), LF_S("group", fw->cfg->group),
			 LF_S("reason", frame_open_reason_name(reason)), LF_S("error", message));
	relay_close_after_send(&uc->relay, message);
}

/* Never called: the session reads nothing in owner mode. */
static void forward_socket_data(struct user_conn *uc, const uint8_t *p, size_t n)
{
}

static void forward_closed(struct user_conn *uc)
{
	struct gw_forward *fw = uc->proto;

	GW_SUB(&fw->active, 1);
	uc->proto = NULL;
}

/* Over max_connections: the target's protocol has no refusal of ours. */
static ssize_t forward_encode_refusal(uint8_t *buf, size_t size)
{
	return 0;
}

const struct proxy_frontend forward_frontend = {
	.name = "forward",
	.failed_line = "Forward request failed",
	.session_start = forward_session_start,
	.encode_refusal = forward_encode_refusal,
	.on_open_result = forward_open_result,
	.on_socket_data = forward_socket_data,
	.on_closed = forward_closed,
};

/* ---- UDP forwards ---- */

/* A UDP forward's association was refused (reason, msg): the datagram is
 * dropped, said at a bounded rate (fw->failure_rate, shared by every
 * worker: under gateway.lock). */
static void udp_unreached(struct gw_forward *fw, uint8_t reason, const char *msg)
{
	gw_lock(fw->gw);
	if (log_rate_allow(&fw->failure_rate, now_ms()))
		log_warn("Forward target not reached, datagram dropped",
			 LF_S("forward", fw->cfg->name), LF_S("group", fw->cfg->group),
			 LF_S("reason", frame_open_reason_name(reason)), LF_S("error", msg));
	gw_unlock(fw->gw);
}

static void switch_put(struct forward_udp_switch *sw);

static void udp_client_free(struct forward_udp_client *c)
{
	struct gw_forward *fw = c->fw;

	timer_disarm(&gw_main(fw->gw)->ring, &c->idle);
	HASH_DEL(fw->clients, c);
	switch_put(c->sw);
	if (!c->remote) {
		GW_SUB(&fw->nclients, 1);
		GW_SUB(&fw->active, 1);
	}
	free(c);
}

/* The idle watch of a client of fw, from its timer t: armed again while
 * the client is active ([gateway] udp_idle_timeout_ms); true once it is
 * idle, and then logged when log is set (a placeholder for a client served
 * on another worker is not: that worker's watch logs). */
static bool forward_client_idle(struct ring *r, struct timer *t, uint64_t last_active_ms,
				const struct gw_forward *fw, bool log)
{
	uint64_t quiet;

	if (timer_rearm_unless_idle(r, t, last_active_ms, fw->gw->cfg->gateway.udp_idle_timeout_ms,
				    &quiet))
		return false;
	if (log)
		log_debug("Forward client idle, association ended", LF_S("forward", fw->cfg->name),
			  LF_U("idle_ms", quiet));
	return true;
}

static void udp_client_idle(struct ring *r, struct timer *t)
{
	struct forward_udp_client *c = container_of(t, struct forward_udp_client, idle);

	if (!forward_client_idle(r, &c->idle, c->last_active_ms, c->fw, !c->remote))
		return;
	if (!c->remote)
		gw_assoc_close(&c->assoc);
	udp_client_free(c);
}

/* A reply from the target: back to the client it belongs to. */
static void udp_client_reply(struct gw_assoc *as, const struct frame *f)
{
	struct forward_udp_client *c = container_of(as, struct forward_udp_client, assoc);

	c->last_active_ms = now_ms();
	if (udp_socket_send(&c->fw->udp, (const struct sockaddr *)&c->from, c->fromlen,
			    f->dgram.data.ptr, f->dgram.data.len) < 0)
		as->dropped++;
}

static void udp_client_ended(struct gw_assoc *as, uint8_t reason, const char *why)
{
	struct forward_udp_client *c = container_of(as, struct forward_udp_client, assoc);

	log_info("Forward association ended by the agent", LF_S("forward", c->fw->cfg->name),
		 LF_S("reason", frame_open_reason_name(reason)), LF_S("why", why));
	udp_client_free(c);
}

static const struct gw_assoc_ops udp_client_ops = {
	.on_datagram = udp_client_reply,
	.on_closed = udp_client_ended,
};

/* ---- UDP clients served on another worker ---- */

static void switch_put(struct forward_udp_switch *sw)
{
	if (sw && __atomic_sub_fetch(&sw->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(sw);
}

static void remote_free(struct forward_udp_remote *r)
{
	struct gw_worker *w = r->w;

	DL_DELETE(w->udp_remotes, r);
	w->nremotes--;
	__atomic_store_n(&r->sw->ended, 1, __ATOMIC_RELAXED);
	switch_put(r->sw);
	GW_SUB(&r->fw->nclients, 1);
	GW_SUB(&r->fw->active, 1);
	if (r->holds_place)
		proxy_fd_give(w->gw);
	free(r->first);
	free(r);
	w->gw->on_user_closed(w);
}

static void remote_end(struct forward_udp_remote *r)
{
	timer_disarm(&r->w->ring, &r->idle);
	if (r->assoc_open) {
		r->assoc_open = false;
		gw_assoc_close(&r->assoc);
	}
	udp_socket_close(&r->udp); /* remote_closed frees r */
}

static void remote_datagram(struct udp_socket *u, const struct sockaddr *from, socklen_t fromlen,
			    const uint8_t *p, size_t n)
{
	struct forward_udp_remote *r = container_of(u, struct forward_udp_remote, udp);
	struct stream_target target;

	if (!r->assoc_open)
		return;
	r->last_active_ms = now_ms();
	forward_target(r->fw->cfg, &target);
	gw_assoc_send(r->fw->gw, &r->assoc, &target, p, n);
}

static void remote_closed(struct udp_socket *u)
{
	remote_free(container_of(u, struct forward_udp_remote, udp));
}

static const struct udp_socket_ops remote_udp_ops = {
	.on_datagram = remote_datagram,
	.on_closed = remote_closed,
};

static void remote_reply(struct gw_assoc *as, const struct frame *f)
{
	struct forward_udp_remote *r = container_of(as, struct forward_udp_remote, assoc);

	r->last_active_ms = now_ms();
	if (udp_socket_send(&r->udp, NULL, 0, f->dgram.data.ptr, f->dgram.data.len) < 0)
		as->dropped++;
}

static void remote_ended(struct gw_assoc *as, uint8_t reason, const char *why)
{
	struct forward_udp_remote *r = container_of(as, struct forward_udp_remote, assoc);

	log_info("Forward association ended by the agent", LF_S("forward", r->fw->cfg->name),
		 LF_S("reason", frame_open_reason_name(reason)), LF_S("why", why));
	r->assoc_open = false;
	remote_end(r);
}

static const struct gw_assoc_ops remote_assoc_ops = {
	.on_datagram = remote_reply,
	.on_closed = remote_ended,
};

static void remote_idle(struct ring *ring, struct timer *t)
{
	struct forward_udp_remote *r = container_of(t, struct forward_udp_remote, idle);

	if (forward_client_idle(ring, &r->idle, r->last_active_ms, r->fw, true))
		remote_end(r);
}

/* On its new worker: bind, connect, associate, send the first datagram.
 * False when r is gone already. */
static bool remote_start(struct gw_worker *w, struct forward_udp_remote *r)
{
	struct gw_forward *fw = r->fw;
	struct username_identity id;
	struct stream_target target;
	char err[256], msg[160];
	uint8_t reason;
	int fd;

	r->w = w;
	DL_APPEND(w->udp_remotes, r);
	w->nremotes++;
	timer_init(&r->idle, remote_idle);
	/* its socket counts as a connection would (max_connections) */
	r->holds_place = proxy_fd_take(w->gw, forward_frontend.name);
	if (!r->holds_place) {
		remote_free(r);
		return false;
	}
	fd = net_bind_udp(&fw->cfg->listen_addr, err, sizeof(err));
	if (fd >= 0 && connect(fd, (struct sockaddr *)&r->from, r->fromlen) < 0) {
		snprintf(err, sizeof(err), "connect: %s", strerror(errno));
		close(fd);
		fd = -1;
	}
	if (fd < 0 ||
	    udp_socket_open(&r->udp, &w->ring, fd, FRAME_DGRAM_MAX_DATA + 1, &remote_udp_ops) < 0) {
		log_warn("Forward client socket failed, datagram dropped",
			 LF_S("forward", fw->cfg->name), LF_S("error", fd < 0 ? err : "memory"));
		remote_free(r);
		return false;
	}
	forward_identity(fw, &id);
	reason = gw_assoc_open(fw->gw, w->index, &r->assoc, &id, forward_frontend.name,
			       &remote_assoc_ops, r, msg, sizeof(msg));
	if (reason) {
		udp_unreached(fw, reason, msg);
		udp_socket_close(&r->udp);
		return true;
	}
	r->assoc_open = true;
	r->last_active_ms = now_ms();
	timer_arm(&w->ring, &r->idle, fw->gw->cfg->gateway.udp_idle_timeout_ms);
	forward_target(fw->cfg, &target);
	gw_assoc_send(fw->gw, &r->assoc, &target, r->first, r->nfirst);
	free(r->first);
	r->first = NULL;
	return true;
}

void forward_take_remotes(struct gw_worker *w)
{
	struct forward_udp_remote *list, *r, *tmp;

	gw_lock(w->gw);
	list = w->udp_inbox;
	w->udp_inbox = NULL;
	gw_unlock(w->gw);
	DL_FOREACH_SAFE (list, r, tmp) {
		DL_DELETE(list, r);
		if (remote_start(w, r) && w->stopping && !r->udp.closing)
			remote_end(r); /* came too late */
	}
}

void forward_close_remotes(struct gw_worker *w)
{
	struct forward_udp_remote *r, *tmp;

	/* remote_end frees nothing synchronously (remote_closed does) */
	DL_FOREACH_SAFE (w->udp_remotes, r, tmp)
		if (!r->udp.closing)
			remote_end(r);
}

/* On worker 0, a new client: when the tunnel its association would use
 * is another worker's, hand the client (its first datagram with it) to
 * that worker and keep c as a placeholder. True when handed over. */
static bool udp_hand_over(struct gw_forward *fw, struct forward_udp_client *c,
			  const struct sockaddr_storage *key, socklen_t fromlen, const uint8_t *p,
			  size_t n)
{
	struct gateway *gw = fw->gw;
	struct username_identity id;
	struct forward_udp_remote *r;
	struct gw_worker *to;
	int w;

	forward_identity(fw, &id);
	w = gw_assoc_worker(gw, GATEWAY_WORKER_MAIN, &id);
	if (w <= 0)
		return false;
	r = calloc(1, sizeof(*r));
	if (r)
		r->sw = calloc(1, sizeof(*r->sw));
	if (!r || !r->sw || !(r->first = malloc(n ? n : 1))) {
		if (r)
			free(r->sw);
		free(r);
		free(c);
		return true; /* dropped */
	}
	r->sw->refs = 2; /* r's and the placeholder's */
	c->sw = r->sw;
	memcpy(r->first, p, n);
	r->nfirst = n;
	r->fw = fw;
	r->from = *key;
	r->fromlen = fromlen;
	GW_ADD(&fw->nclients, 1);
	GW_ADD(&fw->active, 1);
	fw->total++;
	to = &gw->workers[w];
	gw_lock(gw);
	if (to->wg.exited) {
		gw_unlock(gw);
		GW_SUB(&fw->nclients, 1);
		GW_SUB(&fw->active, 1);
		free(r->first);
		free(r->sw);
		free(r);
		free(c); /* its sw went with r's */
		return true;
	}
	DL_APPEND(to->udp_inbox, r);
	gw_unlock(gw);
	wg_wake(&to->wg);
	/* the placeholder: datagrams racing the switch open nothing */
	c->remote = true;
	c->fw = fw;
	c->from = *key;
	c->fromlen = fromlen;
	c->last_active_ms = now_ms();
	timer_init(&c->idle, udp_client_idle);
	timer_arm(&gw_main(gw)->ring, &c->idle, gw->cfg->gateway.udp_idle_timeout_ms);
	HASH_ADD(hh, fw->clients, from, sizeof(c->from), c);
	return true;
}

/* The client of a source address, opened on its first datagram; NULL:
 * the datagram is dropped (refused source, limit, no agent). */
static struct forward_udp_client *udp_client_for(struct gw_forward *fw, const struct sockaddr *from,
						 socklen_t fromlen, const uint8_t *p, size_t n)
{
	struct sockaddr_storage key;
	struct forward_udp_client *c;
	struct username_identity id;
	char msg[160];
	uint8_t reason;

	memset(&key, 0, sizeof(key));
	memcpy(&key, from, MIN((size_t)fromlen, sizeof(key)));
	HASH_FIND(hh, fw->clients, &key, sizeof(key), c);
	if (c && c->remote && __atomic_load_n(&c->sw->ended, __ATOMIC_RELAXED)) {
		udp_client_free(c); /* served elsewhere no more: a new one */
		c = NULL;
	}
	if (c)
		return c;
	if (!source_admitted(fw, from) || GW_READ(&fw->nclients) >= FORWARD_UDP_MAX_CLIENTS)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	forward_identity(fw, &id);
	if (udp_hand_over(fw, c, &key, fromlen, p, n))
		return NULL;
	reason = gw_assoc_open(fw->gw, GATEWAY_WORKER_MAIN, &c->assoc, &id, forward_frontend.name,
			       &udp_client_ops, c, msg, sizeof(msg));
	if (reason) {
		udp_unreached(fw, reason, msg);
		free(c);
		return NULL;
	}
	c->fw = fw;
	c->from = key;
	c->fromlen = fromlen;
	c->last_active_ms = now_ms();
	timer_init(&c->idle, udp_client_idle);
	timer_arm(&gw_main(fw->gw)->ring, &c->idle, fw->gw->cfg->gateway.udp_idle_timeout_ms);
	HASH_ADD(hh, fw->clients, from, sizeof(c->from), c);
	GW_ADD(&fw->nclients, 1);
	GW_ADD(&fw->active, 1);
	fw->total++;
	return c;
}

static void udp_forward_datagram(struct udp_socket *u, const struct sockaddr *from,
				 socklen_t fromlen, const uint8_t *p, size_t n)
{
	struct gw_forward *fw = container_of(u, struct gw_forward, udp);
	struct forward_udp_client *c;
	struct stream_target target;

	if (GW_READ(&fw->gw->stopping))
		return;
	c = udp_client_for(fw, from, fromlen, p, n);
	if (!c || c->remote)
		return; /* dropped, handed over, or racing the switch */
	c->last_active_ms = now_ms();
	forward_target(fw->cfg, &target);
	gw_assoc_send(fw->gw, &c->assoc, &target, p, n);
}

static void udp_forward_closed(struct udp_socket *u)
{
}

static const struct udp_socket_ops udp_forward_ops = {
	.on_datagram = udp_forward_datagram,
	.on_closed = udp_forward_closed,
};

/* ---- listeners ---- */

int forward_listen_all(struct gateway *gw)
{
	const struct config *cfg = gw->cfg;
	char err[512], shown[300], target[300];

	if (!cfg->nforwards)
		return 0;
	gw->forwards = calloc(cfg->nforwards, sizeof(*gw->forwards));
	if (!gw->forwards)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->nforwards; i++) {
		gw->forwards[i].listener.fd = -1;
		gw->forwards[i].udp.fd = -1;
	}
	gw->nforwards = cfg->nforwards;
	for (size_t i = 0; i < cfg->nforwards; i++) {
		struct gw_forward *fw = &gw->forwards[i];
		const struct config_forward *f = &cfg->forwards[i];
		bool udp = f->protocol == CONFIG_FORWARD_UDP;
		int fd = udp ? net_bind_udp(&f->listen_addr, err, sizeof(err))
			     : net_listen_tcp(&f->listen_addr, GATEWAY_LISTEN_BACKLOG, err,
					      sizeof(err));

		if (fd < 0) {
			log_error("Cannot open a forward listener", LF_S("forward", f->name),
				  LF_S("error", err));
			return fd;
		}
		fw->gw = gw;
		fw->cfg = f;
		if (udp) {
			/* one byte more than a DGRAM carries: a longer one shows as cut */
			if (udp_socket_open(&fw->udp, &gw_main(gw)->ring, fd,
					    FRAME_DGRAM_MAX_DATA + 1, &udp_forward_ops) < 0)
				return -ENOMEM;
		} else {
			fw->listener = (struct listener){ .fd = fd,
							  .name = f->name,
							  .on_accept = proxy_accept,
							  .owner = gw_main(gw),
							  .frontend = &forward_frontend,
							  .proxy = GW_PROXY_FORWARD,
							  .proxy_cfg = &fw->no_credentials };
		}
		config_addr_format(&f->listen_addr, shown, sizeof(shown));
		config_addr_format(&f->target, target, sizeof(target));
		log_info("Forward listening", LF_S("forward", f->name), LF_S("addr", shown),
			 LF_S("group", f->group), LF_S("target", target),
			 LF_S("protocol", udp ? "udp" : "tcp"),
			 LF_U("allowed_sources", f->nsources));
	}
	return 0;
}

void forward_start_all(struct gateway *gw)
{
	for (size_t i = 0; i < gw->nforwards; i++)
		if (gw->forwards[i].listener.fd >= 0)
			listener_start(&gw_main(gw)->ring, &gw->forwards[i].listener);
}

void forward_stop_all(struct gateway *gw)
{
	for (size_t i = 0; i < gw->nforwards; i++) {
		listener_stop(&gw_main(gw)->ring, &gw->forwards[i].listener);
		udp_socket_close(&gw->forwards[i].udp);
	}
}

void forward_free_all(struct gateway *gw)
{
	for (size_t i = 0; i < gw->nforwards; i++) {
		struct gw_forward *fw = &gw->forwards[i];
		struct forward_udp_client *c, *tmp;

		/* the ring is gone: what its completions would have freed */
		if (fw->udp.fd >= 0)
			close(fw->udp.fd);
		free(fw->udp.buf);
		HASH_ITER (hh, fw->clients, c, tmp) {
			HASH_DEL(fw->clients, c);
			switch_put(c->sw);
			free(c);
		}
	}
	free(gw->forwards);
	gw->forwards = NULL;
	gw->nforwards = 0;
}
