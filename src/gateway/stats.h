/*
 * stats.h — the gateway's counters: one set, read by the metrics endpoint
 * ([metrics] listen_addr, Prometheus text) and by `apctl stats` (global
 * totals). proxy.c and gateway.c only increment; this module writes both
 * views (docs/operations.md "Metrics" lists every series).
 *
 * Label sets stay bounded: proxy is socks5 or http; result is one of
 * FRAME_NRESULTS; a group's series exist while the registry has the group
 * or one of its streams is open (a group is only counted once an agent
 * serves it, so users cannot invent groups); a client's series exist
 * while the client is registered. A group or client that comes back
 * starts its counters from zero (Prometheus sees a counter reset). The
 * global totals of `apctl stats` keep what the dropped series held.
 */
#ifndef ANYPROXY_GATEWAY_STATS_H
#define ANYPROXY_GATEWAY_STATS_H

#include <stdint.h>
#include <uthash.h>

#include "anyproxy/frame.h"
#include "anyproxy/metrics.h"
#include "anyproxy/registry.h"

struct gateway;
struct table_writer;

/* The proxy listeners, for per-proxy series (struct listener.proxy). */
enum gw_proxy {
	GW_PROXY_SOCKS5,
	GW_PROXY_HTTP,
	GW_PROXY_HTTPS,
	GW_PROXY_FORWARD, /* [forward.NAME] TCP forwards, together */
	GW_NPROXIES
};
/* user_conn.proxy (proxy.h) holds one in a byte */
_Static_assert(GW_NPROXIES <= UINT8_MAX, "enum gw_proxy fits in a uint8_t");

/* Counters of one group that an agent serves. */
struct gw_group_stats {
	char id[FRAME_MAX_ID_LEN + 1];
	uint64_t streams_active[GW_NPROXIES];
	uint64_t streams_total[GW_NPROXIES];
	uint64_t bytes_in, bytes_out; /* stream payload, user -> target = out */
	UT_hash_handle hh;
};

struct gw_proxy_stats {
	/* the "proxy" label of its series: its front end's name, which
	 * gateway.c (the one file that names the front ends) sets at start */
	const char *name;
	uint64_t connections; /* alive */
	uint64_t connections_total;
	uint64_t opens[FRAME_NRESULTS]; /* requests answered, by enum frame_open_result */
	uint64_t auth_failures;
	struct metrics_histogram handshake; /* accept -> first request authenticated */
};

struct gw_stats {
	struct gw_proxy_stats proxy[GW_NPROXIES];
	uint64_t fallbacks;                        /* streams sent to the default group instead */
	struct metrics_histogram tunnel_handshake; /* accept -> HELLO_OK */
	struct metrics_histogram open_latency;     /* OPEN sent -> OPEN_OK / OPEN_FAIL */
	struct gw_group_stats *groups;             /* by id */
	/* what the dropped groups had counted, for the totals */
	uint64_t retired_streams_total, retired_bytes_in, retired_bytes_out;
};

/* The counters of group_id (registered in the registry), created on first
 * use; NULL when out of memory (the stream is then not counted by group). */
struct gw_group_stats *gw_stats_group(struct gw_stats *st, const char *group_id);
/* A stream of group g through proxy ended; g is dropped if it was its
 * group's last stream and the group has left the registry. */
void gw_stats_stream_done(struct gateway *gw, struct gw_group_stats *g, unsigned proxy);
/* Drop the counters of every group that left the registry and has no
 * stream open (after an agent's tunnel closed; scrapes do it too), so they
 * stay bounded whether or not anyone scrapes. */
void gw_stats_prune(struct gateway *gw);
void gw_stats_free(struct gw_stats *st);

/*
 * What the metrics and apctl list per agent and per group: copied under
 * gateway.lock, then sorted by id without it (gw_snapshot_take). Writing
 * them out takes no lock, so the workers go on picking tunnels and
 * opening streams meanwhile: formatted under the lock, 3,000 agents held
 * it 13 ms per scrape and 8 ms per `apctl clients`.
 */
struct gw_snapshot {
	struct reg_client_row *clients;  /* by id */
	struct reg_group_row *groups;    /* by id */
	struct gw_group_stats *counters; /* copies (hh unused), in the hash's order */
	size_t nclients, ngroups, ncounters;
};

enum { GW_SNAP_CLIENTS = 1, GW_SNAP_GROUPS = 2, GW_SNAP_COUNTERS = 4 };

/* Take what (GW_SNAP_* ORed) into s; only_client != NULL: that client
 * alone, if registered. Takes gateway.lock itself: the caller must not
 * hold it. 0 or -ENOMEM (s then holds nothing). */
int gw_snapshot_take(struct gateway *gw, struct gw_snapshot *s, unsigned what,
		     const char *only_client);
void gw_snapshot_free(struct gw_snapshot *s);

/* The metrics endpoint's collect callback (arg: the gateway). */
void gw_stats_collect(struct metrics_writer *w, void *arg);
/* `apctl stats`: one row of global totals. 0 or -errno. */
int gw_stats_write_table(struct gateway *gw, struct table_writer *w);

#endif
