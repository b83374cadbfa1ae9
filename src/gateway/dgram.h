/*
 * dgram.h — the gateway's datagram associations (docs/protocol.md
 * "Datagrams"): one per SOCKS5 UDP ASSOCIATE and per client of a UDP
 * forward. An association lives on one agent tunnel that negotiated the
 * DATAGRAM capability, chosen by the group rules of streams
 * (proxy_no_fallback, registry_pick). Its owner (a front end) embeds the
 * struct gw_assoc and hears replies and the end through its ops.
 */
#ifndef ANYPROXY_GATEWAY_DGRAM_H
#define ANYPROXY_GATEWAY_DGRAM_H

#include <stddef.h>
#include <stdint.h>
#include <uthash.h>

#include "anyproxy/frame.h"
#include "anyproxy/stream.h"
#include "anyproxy/username.h"
#include "gateway.h"

struct gw_assoc;

struct gw_assoc_ops {
	/* A reply from f->dgram's address (always an address, never a name). */
	void (*on_datagram)(struct gw_assoc *as, const struct frame *f);
	/* The agent or its tunnel ended the association (reason: a
	 * FRAME_OPEN_* value); it is unlinked, the owner may free it. */
	void (*on_closed)(struct gw_assoc *as, uint8_t reason, const char *why);
};

struct gw_assoc {
	UT_hash_handle hh;    /* in gt->assocs, by id */
	struct gw_tunnel *gt; /* NULL: not open */
	uint32_t id;
	const struct gw_assoc_ops *ops;
	void *owner;
	char client_id[FRAME_MAX_ID_LEN + 1]; /* the agent that carries it, for logs */
	/* the agent, referenced while open: an association counts as one of
	 * its streams (apctl clients, [gateway] max_connections_per_group) */
	struct reg_client *client;
	uint64_t sent, received, dropped;
};

/* Pick an agent of id's group that carries datagrams (the default group
 * where the group may fall back) and send DGRAM_OPEN. proxy names the
 * front end for the log. The association counts as a stream of the agent
 * and its group until it ends. Returns 0, or the FRAME_OPEN_* reason with
 * a message for the log (NET_UNREACHABLE: no such agent; LIMIT: the
 * group is at max_connections_per_group). */
/* The worker an association of id would live on (the worker of a tunnel
 * that speaks datagrams, this one's preferred), or -1 when none. */
int gw_assoc_worker(struct gateway *gw, unsigned worker, const struct username_identity *id);
uint8_t gw_assoc_open(struct gateway *gw, unsigned worker, struct gw_assoc *as,
		      const struct username_identity *id, const char *proxy,
		      const struct gw_assoc_ops *ops, void *owner, char *msg, size_t msglen);
/* One datagram of n (<= FRAME_DGRAM_MAX_DATA) bytes to dst. 0, or -errno
 * when it was dropped (the tunnel's output is over its budget, too long). */
int gw_assoc_send(struct gateway *gw, struct gw_assoc *as, const struct stream_target *dst,
		  const uint8_t *p, size_t n);
/* The owner ends it: DGRAM_CLOSE(GENERAL), unlinked, no callback. */
void gw_assoc_close(struct gw_assoc *as);

/* gateway.c: a DGRAM or DGRAM_CLOSE from gt's agent. 0 or -EPROTO. */
int gw_assoc_on_frame(struct gw_tunnel *gt, const struct frame *f, const char **why);
/* gateway.c: gt is closing: every association on it ends (on_closed). */
void gw_assoc_tunnel_closed(struct gw_tunnel *gt);

#endif
