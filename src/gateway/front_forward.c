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
	fw->active++;
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

	fw->active--;
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

static void udp_client_free(struct forward_udp_client *c)
{
	struct gw_forward *fw = c->fw;

	timer_disarm(&gw_main(fw->gw)->ring, &c->idle);
	HASH_DEL(fw->clients, c);
	fw->nclients--;
	fw->active--;
	free(c);
}

static void udp_client_idle(struct ring *r, struct timer *t)
{
	struct forward_udp_client *c = container_of(t, struct forward_udp_client, idle);
	uint32_t idle_ms = c->fw->gw->cfg->gateway.udp_idle_timeout_ms;
	uint64_t quiet = now_ms() - c->last_active_ms;

	if (quiet < idle_ms) {
		timer_arm(r, &c->idle, idle_ms - quiet);
		return;
	}
	log_debug("Forward client idle, association ended", LF_S("forward", c->fw->cfg->name),
		  LF_U("idle_ms", quiet));
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

/* The client of a source address, opened on its first datagram; NULL:
 * the datagram is dropped (refused source, limit, no agent). */
static struct forward_udp_client *udp_client_for(struct gw_forward *fw, const struct sockaddr *from,
						 socklen_t fromlen)
{
	struct sockaddr_storage key;
	struct forward_udp_client *c;
	struct username_identity id;
	char msg[160];
	uint8_t reason;

	memset(&key, 0, sizeof(key));
	memcpy(&key, from, MIN((size_t)fromlen, sizeof(key)));
	HASH_FIND(hh, fw->clients, &key, sizeof(key), c);
	if (c)
		return c;
	if (!source_admitted(fw, from) || fw->nclients >= FORWARD_UDP_MAX_CLIENTS)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	forward_identity(fw, &id);
	reason = gw_assoc_open(fw->gw, &c->assoc, &id, forward_frontend.name, &udp_client_ops, c,
			       msg, sizeof(msg));
	if (reason) {
		if (log_rate_allow(&fw->failure_rate, now_ms()))
			log_warn("Forward target not reached, datagram dropped",
				 LF_S("forward", fw->cfg->name), LF_S("group", fw->cfg->group),
				 LF_S("reason", frame_open_reason_name(reason)),
				 LF_S("error", msg));
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
	fw->nclients++;
	fw->active++;
	fw->total++;
	return c;
}

static void udp_forward_datagram(struct udp_socket *u, const struct sockaddr *from,
				 socklen_t fromlen, const uint8_t *p, size_t n)
{
	struct gw_forward *fw = container_of(u, struct gw_forward, udp);
	struct forward_udp_client *c;
	struct stream_target target;

	if (fw->gw->stopping)
		return;
	c = udp_client_for(fw, from, fromlen);
	if (!c)
		return;
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
			free(c);
		}
	}
	free(gw->forwards);
	gw->forwards = NULL;
	gw->nforwards = 0;
}
