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
_Static_assert(sizeof(FORWARD_USER_PREFIX) - 1 + ID_MAX_BYTES <= USERNAME_BASE_MAX,
	       "a forward's synthetic user name fits the OPEN frame's user field");

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

/* allowed_sources, checked before anything is opened. */
static bool source_allowed(struct user_conn *uc, struct gw_forward *fw)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char peer[64];

	if (!fw->cfg->nsources)
		return true;
	if (getpeername(uc->relay.fd, (struct sockaddr *)&ss, &len) == 0 &&
	    config_forward_source_allowed(fw->cfg, (struct sockaddr *)&ss))
		return true;
	fw->refused++;
	/* a scan of the port must not become a flood of log lines */
	if (log_rate_allow(&fw->refusal_rate, now_ms())) {
		net_format_sockaddr((struct sockaddr *)&ss, peer, sizeof(peer));
		log_warn("Forward refused a source not in allowed_sources",
			 LF_S("forward", fw->cfg->name), LF_S("remote_addr", peer),
			 LF_U("refused_total", fw->refused));
	}
	return false;
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
	memset(&id, 0, sizeof(id));
	id.base_len = (size_t)snprintf(id.base, sizeof(id.base), FORWARD_USER_PREFIX "%s",
				       fw->cfg->name);
	memcpy(id.full, id.base, id.base_len + 1);
	id.full_len = id.base_len;
	id.group_len = (size_t)snprintf(id.group, sizeof(id.group), "%s", fw->cfg->group);
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
	.session_start = forward_session_start,
	.encode_refusal = forward_encode_refusal,
	.on_open_result = forward_open_result,
	.on_socket_data = forward_socket_data,
	.on_closed = forward_closed,
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
	for (size_t i = 0; i < cfg->nforwards; i++)
		gw->forwards[i].listener.fd = -1;
	gw->nforwards = cfg->nforwards;
	for (size_t i = 0; i < cfg->nforwards; i++) {
		struct gw_forward *fw = &gw->forwards[i];
		const struct config_forward *f = &cfg->forwards[i];
		int fd = net_listen_tcp(&f->listen_addr, GATEWAY_LISTEN_BACKLOG, err, sizeof(err));

		if (fd < 0) {
			log_error("Cannot open a forward listener", LF_S("forward", f->name),
				  LF_S("error", err));
			return fd;
		}
		fw->gw = gw;
		fw->cfg = f;
		fw->listener = (struct listener){ .fd = fd, .name = f->name,
						  .on_accept = proxy_accept, .owner = gw,
						  .frontend = &forward_frontend,
						  .proxy_cfg = &fw->no_credentials };
		config_addr_format(&f->listen_addr, shown, sizeof(shown));
		config_addr_format(&f->target, target, sizeof(target));
		log_info("Forward listening", LF_S("forward", f->name), LF_S("addr", shown),
			 LF_S("group", f->group), LF_S("target", target), LF_S("protocol", "tcp"),
			 LF_U("allowed_sources", f->nsources));
	}
	return 0;
}

void forward_start_all(struct gateway *gw)
{
	for (size_t i = 0; i < gw->nforwards; i++)
		listener_start(&gw->ring, &gw->forwards[i].listener);
}

void forward_stop_all(struct gateway *gw)
{
	for (size_t i = 0; i < gw->nforwards; i++)
		listener_stop(&gw->ring, &gw->forwards[i].listener);
}

void forward_free_all(struct gateway *gw)
{
	forward_stop_all(gw);
	free(gw->forwards);
	gw->forwards = NULL;
	gw->nforwards = 0;
}
