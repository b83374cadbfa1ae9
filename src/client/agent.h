/*
 * agent.h — anyproxy-client's state, private to src/client/.
 *
 * The agent keeps `replicas` tunnels to every gateway of [client]
 * gateway_addr (gateways share nothing, so each must reach every agent:
 * docs/scaling.md). Each tunnel is a link with its own state machine,
 * backoff and liveness; a failure, a GOAWAY or an ERROR on one link touches
 * no other link, of its gateway or another:
 *
 *   WAIT --timer--> RESOLVE --> CONNECT --> TLS+HELLO --> UP
 *     ^                 |           |            |         |
 *     +-----------------+-----------+------------+---------+  (any failure)
 *
 * Through [client] egress_proxy, RESOLVE and CONNECT reach the proxy, and
 * CONNECT also covers asking it for the gateway (egress.h).
 *
 * Links never give up; every failure schedules the next attempt after an
 * exponential, fully jittered delay capped at reconnect_max_delay_ms.
 */
#ifndef ANYPROXY_AGENT_H
#define ANYPROXY_AGENT_H

#include <stdbool.h>
#include <sys/socket.h>

#include "anyproxy/acl.h"
#include "anyproxy/backoff.h"
#include "anyproxy/bufring.h"
#include "anyproxy/config.h"
#include "anyproxy/hosts.h"
#include "anyproxy/log.h"
#include "anyproxy/metrics.h"
#include "anyproxy/notify.h"
#include "anyproxy/relay.h"
#include "anyproxy/resolve.h"
#include "anyproxy/ring.h"
#include "anyproxy/tunnel.h"
#include "anyproxy/udp.h"

#define AGENT_MAX_GATEWAY_ADDRS 8
#define AGENT_RESOLVER_THREADS 2
#define AGENT_RESOLVER_MAX_PENDING 1024
/* Host-rule denials are counted per (verdict, rule) for this many distinct
 * rules; denials by further rules are counted under rule "(other)". */
#define AGENT_STATS_MAX_DENIAL_RULES 256

/* "host:port" or "[v6]:port" of a config_addr, NUL included. */
#define AGENT_GATEWAY_NAME_BYTES (sizeof(((struct config_addr *)0)->host) + sizeof("[]:65535"))

enum link_state {
	LINK_WAIT,      /* backoff timer running (or not yet started) */
	LINK_RESOLVE,   /* resolving gateway_addr (or egress_proxy) */
	LINK_CONNECT,   /* TCP connect in flight (and the proxy's CONNECT) */
	LINK_HANDSHAKE, /* TLS + HELLO */
	LINK_UP,        /* HELLO_OK received */
	LINK_DONE,      /* stopped */
};

struct agent;

/* One entry of gateway_addr: its links are a->links[first_link ..
 * first_link + a->cfg->client.replicas). */
struct agent_gateway {
	struct config_addr addr;             /* a copy: gateway_addr needs a restart to change */
	char name[AGENT_GATEWAY_NAME_BYTES]; /* as configured; gateway= of every log line */
	unsigned first_link;
	uint64_t connects; /* tunnels that reached HELLO_OK, since start */
	uint64_t failures; /* attempts that failed and tunnels that closed, since start */
};

/* Denials by one host rule (stats.c). */
struct agent_denial {
	enum acl_verdict verdict;
	char *rule; /* the rule's text; "" when no rule matched (not allowed) */
	uint64_t count;
	struct agent_denial *next;
};

/* The agent's counters, exposed by the metrics endpoint (stats.c). */
struct agent_stats {
	uint64_t reconnects;            /* tunnel attempts that failed or ended */
	uint64_t streams_total;         /* OPENs taken */
	uint64_t opens[FRAME_NRESULTS]; /* by enum frame_open_result */
	struct metrics_histogram dns;   /* target name lookups on the resolver pool */
	struct agent_denial *denials;
	unsigned ndenials;
	uint64_t denials_other; /* past AGENT_STATS_MAX_DENIAL_RULES */
};

struct agent_link {
	struct agent *agent;
	struct agent_gateway *gateway;
	unsigned replica; /* 0 .. replicas-1, per gateway */
	enum link_state state;
	struct backoff backoff;
	struct timer timer; /* backoff wait, or connect deadline */
	struct resolve_req *resolving;
	struct sockaddr_storage addrs[AGENT_MAX_GATEWAY_ADDRS];
	socklen_t addr_lens[AGENT_MAX_GATEWAY_ADDRS];
	unsigned naddrs, addr_index;
	/* [client] egress_proxy when this attempt started (set false: the
	 * gateway directly): RESOLVE and CONNECT reach it, and CONNECT also
	 * covers the proxy's CONNECT exchange (egress.c) */
	struct config_addr proxy;
	int connect_fd;
	struct ring_op connect_op;
	bool connect_armed;
	struct tunnel *tunnel;
	bool stay_away; /* the gateway said: replaced, or id in use; wait the full cap */
	bool datagrams; /* HELLO_OK set FRAME_CAP_DATAGRAM too */
	struct dgram_assoc *assocs; /* datagram associations by id (dgram.c, uthash) */
	unsigned failures;          /* consecutive failed attempts, for logs */
	char last_error[256];
};

struct agent {
	struct ring ring;
	struct config *cfg;
	const struct cli_program *program; /* for reloading the same file */
	struct WOLFSSL_CTX *tls;
	struct hosts_table hosts;        /* [client] hosts_file */
	struct acl *allowed, *forbidden; /* compiled host rules, swapped on reload */
	struct resolver *resolver;
	struct bufring bufs;
	uint64_t instance;
	struct agent_gateway *gateways; /* one per gateway_addr entry, in its order */
	unsigned ngateways;
	struct agent_link *links; /* ngateways * replicas, grouped by gateway */
	unsigned nlinks;
	unsigned ntargets; /* target connections alive (target.c) */
	struct agent_stats stats;
	struct metrics_server metrics;     /* [metrics] listen_addr; ring NULL: off */
	unsigned nassocs;                  /* datagram associations not yet freed (dgram.c) */
	uint64_t dgrams_denied;            /* datagrams the host rules refused */
	struct log_rate dgram_denied_rate; /* their WARN: one per LOG_FLOOD_PERIOD_MS */
	bool stopping;
	struct timer shutdown_timer;
	struct notify notify; /* the service manager (systemd Type=notify) */
};

struct cli_program;
int agent_init(struct agent *a, const struct cli_program *program, struct config *cfg);
/* Stop the loop once every link is done and no target connection is left. */
void agent_maybe_exit(struct agent *a);
struct dgram_assoc;
/* target.c: an OPEN arrived on l's tunnel. 0, or -EPROTO with *why set. */
int target_open(struct agent_link *l, const struct frame *f, const char **why);
int agent_run(struct agent *a);

/* stats.c: count a host-rule denial; the metrics' collect callback (arg:
 * the agent); free the counters. */
void agent_stats_denied(struct agent_stats *st, enum acl_verdict verdict, const char *rule);
void agent_stats_collect(struct metrics_writer *w, void *arg);
void agent_stats_free(struct agent_stats *st);
void agent_destroy(struct agent *a);

/*
 * Per-gateway tunnel state, for status output and metrics (read on the
 * agent's loop thread). Counts are of the gateway's `replicas` links now;
 * connects and failures count since start.
 */
struct agent_gateway_state {
	const char *name; /* "host:port" as configured; valid while the agent lives */
	unsigned replicas;
	unsigned up;         /* LINK_UP: HELLO_OK received, carrying streams */
	unsigned handshake;  /* LINK_HANDSHAKE: TLS + HELLO */
	unsigned connecting; /* LINK_RESOLVE or LINK_CONNECT */
	unsigned waiting;    /* LINK_WAIT: backoff before the next attempt */
	uint64_t connects;
	uint64_t failures;
};

/* The number of gateways (entries of gateway_addr). */
unsigned agent_gateway_count(const struct agent *a);
/* Fill *out for gateway index (0 .. agent_gateway_count() - 1, the order of
 * gateway_addr). 0, or -ENOENT for an index past the end. */
int agent_gateway_state(const struct agent *a, unsigned index, struct agent_gateway_state *out);
/* "wait", "resolve", "connect", "handshake", "up", "done". */
const char *agent_link_state_name(enum link_state state);

#endif
