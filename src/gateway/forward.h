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

#include "anyproxy/config.h"
#include "anyproxy/log.h"
#include "gateway.h"

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
	uint64_t active;	      /* connections open now */
	uint64_t total;		      /* connections accepted since start */
	uint64_t refused;	      /* refused by allowed_sources */
	struct log_rate refusal_rate; /* their WARN: one per LOG_FLOOD_PERIOD_MS */
	struct log_rate failure_rate; /* "Forward target not reached" WARNs */
};

/* Open a listener for every [forward.NAME] section (gw->forwards). 0, or
 * -errno (logged) when one cannot listen. */
int forward_listen_all(struct gateway *gw);
/* Start accepting on them (after the other listeners are set up). */
void forward_start_all(struct gateway *gw);
/* Stop accepting (shutdown); forward_free_all releases them at the end. */
void forward_stop_all(struct gateway *gw);
void forward_free_all(struct gateway *gw);

#endif
