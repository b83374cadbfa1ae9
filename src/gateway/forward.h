/*
 * forward.h — port forwarding ([forward.NAME] sections, docs/usage.md "Port
 * forwarding"): a listener per section whose connections open a stream to
 * the section's target in its group at once, with no handshake with the
 * user. The front end is forward_frontend (front_forward.c); proxy.c routes
 * and retries as for every front end, so the group rules are the users'.
 */
#ifndef ANYPROXY_GATEWAY_FORWARD_H
#define ANYPROXY_GATEWAY_FORWARD_H

#include <stdint.h>
#include <sys/socket.h>
#include <uthash.h>

#include "anyproxy/config.h"
#include "anyproxy/log.h"
#include "anyproxy/udp.h"
#include "dgram.h"
#include "gateway.h"

/* Clients (source addresses) one UDP forward serves at once; datagrams of
 * a new one beyond this are dropped. */
#define FORWARD_UDP_MAX_CLIENTS 1024

struct gw_forward;

/* One client of a UDP forward: its source address and its association. */
struct forward_udp_client {
	UT_hash_handle hh;            /* in gw_forward.clients, by from */
	struct sockaddr_storage from; /* zeroed past the address: a hash key */
	socklen_t fromlen;
	struct gw_forward *fw;
	struct gw_assoc assoc;
	struct timer idle; /* [gateway] udp_idle_timeout_ms */
	uint64_t last_active_ms;
	bool remote;                   /* a placeholder: the client is served on another worker */
	struct forward_udp_switch *sw; /* the placeholder's, with the remote */
};

/*
 * A client whose association lives on another worker's tunnel (the
 * association must be on its tunnel's ring): on that worker the forward's
 * address is bound again (SO_REUSEPORT) and connected to the client, and
 * the kernel hands the client's datagrams to that connected socket from
 * then on. Worker 0 keeps a placeholder (forward_udp_client.remote) for an
 * idle timeout, so that datagrams racing the switch open nothing twice.
 */
/* What a remote client and worker 0's placeholder share (two references,
 * relaxed atomics): whether the remote one has ended, so that the
 * client's next datagram on the shared socket opens a new one. */
struct forward_udp_switch {
	unsigned ended;
	unsigned refs;
};

struct forward_udp_remote {
	struct gw_forward *fw;
	struct forward_udp_switch *sw;
	struct gw_worker *w;
	struct udp_socket udp;
	struct gw_assoc assoc;
	struct timer idle;
	uint64_t last_active_ms;
	struct sockaddr_storage from;
	socklen_t fromlen;
	uint8_t *first; /* the datagram that opened it, until sent */
	size_t nfirst;
	bool assoc_open;
	bool holds_place;                       /* its socket took a place of max_connections */
	struct forward_udp_remote *prev, *next; /* the worker's inbox, then its list */
};

/* On worker w (woken): set up the remote clients handed to it. */
void forward_take_remotes(struct gw_worker *w);
/* On worker w (stopping): end its remote clients. */
void forward_close_remotes(struct gw_worker *w);

/* One forward at run time. Its section lives as long as the gateway (the
 * set of forwards needs a restart, config_reload keeps it). */
struct gw_forward {
	struct gateway *gw;
	const struct config_forward *cfg;
	struct listener listener;
	/* the listener's proxy section: forwards take no credentials, and
	 * front_forward.c finds its gw_forward from the user connection's
	 * listener_cfg, which points here */
	struct config_listener no_credentials;
	uint64_t active;              /* connections open now */
	uint64_t total;               /* connections accepted since start */
	uint64_t refused;             /* refused by allowed_sources */
	struct log_rate refusal_rate; /* their WARN: one per LOG_FLOOD_PERIOD_MS */
	struct log_rate failure_rate; /* "Forward target not reached" WARNs */
	/* protocol = udp: the forward's socket and its clients */
	struct udp_socket udp;
	struct forward_udp_client *clients;
	unsigned nclients; /* atomic: remote clients count on their worker */
};

/* Open a listener for every [forward.NAME] section (gw->forwards). 0, or
 * -errno (logged) when one cannot listen. */
int forward_listen_all(struct gateway *gw);
/* Start accepting on them (after the other listeners are set up). */
void forward_start_all(struct gateway *gw);
/* Stop accepting (shutdown); forward_free_all releases them once the ring
 * is gone (gateway_destroy). */
void forward_stop_all(struct gateway *gw);
void forward_free_all(struct gateway *gw);

#endif
