/* dgram.c — the gateway's datagram associations (see dgram.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "dgram.h"
#include "proxy.h"

/* A free association id of gt: non-zero, not live (docs/protocol.md). */
static uint32_t next_id(struct gw_tunnel *gt)
{
	struct gw_assoc *found;
	uint32_t id;

	do {
		id = gt->next_assoc_id++;
		if (!id)
			id = gt->next_assoc_id++;
		HASH_FIND(hh, gt->assocs, &id, sizeof(id), found);
	} while (found);
	return id;
}

uint8_t gw_assoc_open(struct gateway *gw, unsigned worker, struct gw_assoc *as,
		      const struct username_identity *id, const char *proxy,
		      const struct gw_assoc_ops *ops, void *owner, char *msg, size_t msglen)
{
	const char *no_fallback = proxy_no_fallback(gw, id);
	struct frame f = { .type = FRAME_DGRAM_OPEN };
	struct reg_tunnel *rt;
	struct gw_tunnel *gt;
	bool fell_back, full;

	memset(as, 0, sizeof(*as));
	/* only tunnels whose agent speaks datagrams (gw_tunnel_usable) */
	gw_lock(gw);
	gw->picking_datagrams = true;
	gw->picking_worker = worker;
	rt = registry_pick(&gw->registry, worker, id->group, !no_fallback, &fell_back, &full);
	gw->picking_datagrams = false;
	if (!rt) {
		gw_unlock(gw);
		snprintf(msg, msglen, "no clients carrying datagrams available in group '%s'%s",
			 id->group, no_fallback ? "" : " or default group");
		if (no_fallback)
			log_error(msg, LF_S("user", id->full), LF_S("group", id->group),
				  LF_S("proxy", proxy), LF_S("no_fallback", no_fallback));
		else
			log_error(msg, LF_S("user", id->full), LF_S("group", id->group),
				  LF_S("proxy", proxy));
		return FRAME_OPEN_NET_UNREACHABLE;
	}
	if (fell_back)
		proxy_log_fallback(gw, id->group);
	if (proxy_group_full(gw, rt->client->group, id->full)) {
		snprintf(msg, msglen, "connection limit of group '%s' reached",
			 rt->client->group->id);
		gw_unlock(gw);
		return FRAME_OPEN_LIMIT;
	}
	gt = rt->owner;
	as->gt = gt;
	as->id = next_id(gt);
	as->ops = ops;
	as->owner = owner;
	snprintf(as->client_id, sizeof(as->client_id), "%s", gt->client_id);
	f.stream_id = as->id;
	f.dgram_open.user = (struct frame_str){ (const uint8_t *)id->base, id->base_len };
	f.dgram_open.group = (struct frame_str){ (const uint8_t *)id->group, id->group_len };
	if (tunnel_send(gt->tunnel, &f) < 0) {
		gw_unlock(gw);
		as->gt = NULL;
		snprintf(msg, msglen, "tunnel busy or closing");
		return FRAME_OPEN_GENERAL;
	}
	HASH_ADD(hh, gt->assocs, id, sizeof(as->id), as);
	as->client = rt->client;
	registry_client_get(as->client);
	registry_stream_opened(as->client);
	as->client->streams_total++;
	gw_unlock(gw);
	log_info("Datagram association opened", LF_S("user", id->full), LF_S("group", id->group),
		 LF_S("proxy", proxy), LF_S("client_id", as->client_id),
		 LF_U("association", as->id));
	return 0;
}

int gw_assoc_send(struct gateway *gw, struct gw_assoc *as, const struct stream_target *dst,
		  const uint8_t *p, size_t n)
{
	struct frame f = { .type = FRAME_DGRAM, .stream_id = as->id };
	int ret;

	if (!as->gt)
		return -EPIPE;
	/* datagrams are lossy: never queue one behind a full tunnel */
	if (n > FRAME_DGRAM_MAX_DATA || tunnel_queued(as->gt->tunnel) > TUNNEL_DGRAM_BUDGET) {
		as->dropped++;
		GW_ADD(&gw->dgrams_dropped, 1);
		return -ENOBUFS;
	}
	f.dgram.addr_type = dst->addr_type;
	memcpy(f.dgram.addr, dst->addr, sizeof(f.dgram.addr));
	if (dst->addr_type == FRAME_ADDR_DOMAIN)
		f.dgram.domain =
			(struct frame_str){ (const uint8_t *)dst->domain, strlen(dst->domain) };
	f.dgram.port = dst->port;
	f.dgram.data = (struct frame_str){ p, n };
	ret = tunnel_send(as->gt->tunnel, &f);
	if (ret < 0) {
		as->dropped++;
		GW_ADD(&gw->dgrams_dropped, 1);
		return ret;
	}
	as->sent++;
	return 0;
}

/* The association no longer counts as a stream of its agent. */
static void uncount(struct gw_assoc *as)
{
	struct gateway *gw;

	if (!as->client)
		return;
	gw = as->gt ? as->gt->gw : NULL;
	if (gw)
		gw_lock(gw);
	registry_stream_closed(as->client);
	registry_client_put(as->client);
	as->client = NULL;
	if (gw)
		gw_unlock(gw);
}

void gw_assoc_close(struct gw_assoc *as)
{
	struct frame f = { .type = FRAME_DGRAM_CLOSE, .stream_id = as->id };

	if (!as->gt)
		return;
	f.dgram_close.reason = FRAME_OPEN_GENERAL;
	tunnel_send(as->gt->tunnel, &f);
	HASH_DEL(as->gt->assocs, as);
	log_debug("Datagram association closed", LF_S("client_id", as->client_id),
		  LF_U("association", as->id), LF_U("sent", as->sent),
		  LF_U("received", as->received), LF_U("dropped", as->dropped));
	uncount(as); /* while as->gt still names the gateway */
	as->gt = NULL;
}

static void ended(struct gw_assoc *as, uint8_t reason, const char *why)
{
	HASH_DEL(as->gt->assocs, as);
	uncount(as);
	as->gt = NULL;
	log_debug("Datagram association ended", LF_S("client_id", as->client_id),
		  LF_U("association", as->id), LF_S("reason", frame_open_reason_name(reason)),
		  LF_S("why", why));
	as->ops->on_closed(as, reason, why);
}

int gw_assoc_on_frame(struct gw_tunnel *gt, const struct frame *f, const char **why)
{
	struct gw_assoc *as;

	if (!gt->datagrams || f->type == FRAME_DGRAM_OPEN) {
		*why = f->type == FRAME_DGRAM_OPEN ? "DGRAM_OPEN from a client"
						   : "datagram frame without the DATAGRAM "
						     "capability";
		return -EPROTO;
	}
	HASH_FIND(hh, gt->assocs, &f->stream_id, sizeof(f->stream_id), as);
	if (!as)
		return 0; /* crossed our DGRAM_CLOSE on the wire */
	if (f->type == FRAME_DGRAM_CLOSE) {
		ended(as, f->dgram_close.reason, "closed by the agent");
		return 0;
	}
	/* the agent answers from addresses only: a name is a broken agent */
	if (f->dgram.addr_type == FRAME_ADDR_DOMAIN) {
		*why = "DGRAM from a client with a domain address";
		return -EPROTO;
	}
	as->received++;
	as->ops->on_datagram(as, f);
	return 0;
}

void gw_assoc_tunnel_closed(struct gw_tunnel *gt)
{
	struct gw_assoc *as, *tmp;

	HASH_ITER (hh, gt->assocs, as, tmp)
		ended(as, FRAME_OPEN_GENERAL, "tunnel closed");
}

int gw_assoc_worker(struct gateway *gw, unsigned worker, const struct username_identity *id)
{
	const char *no_fallback = proxy_no_fallback(gw, id);
	struct reg_tunnel *rt;
	int w = -1;

	gw_lock(gw);
	gw->picking_datagrams = true;
	gw->picking_worker = GW_ANY_WORKER;
	/* gw_assoc_open picks on that worker: only look here */
	rt = registry_peek(&gw->registry, worker, id->group, !no_fallback);
	if (rt)
		w = rt->worker;
	gw->picking_datagrams = false;
	gw_unlock(gw);
	return w;
}
