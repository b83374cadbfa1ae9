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
 *
 * Links are spread over [client] workers threads (struct agent_worker):
 * link i and everything it carries run on worker i % nworkers only. What
 * the workers share (cfg, TLS context, hosts, host rules) is read-only for
 * them and replaced by worker 0 while the others are paused (agent_reload).
 */
#ifndef ANYPROXY_AGENT_H
#define ANYPROXY_AGENT_H

#include <pthread.h>
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
#include "anyproxy/workgroup.h"
#include "anyproxy/workers.h"

#define AGENT_MAX_GATEWAY_ADDRS 8
/* Resolver threads of each worker's pool; AGENT_RESOLVER_MAX_PENDING
 * lookups in flight for the whole agent, shared evenly by the workers
 * (agent_worker_share). */
#define AGENT_RESOLVER_THREADS 2
#define AGENT_RESOLVER_MAX_PENDING 1024
/* Submission queue entries of each worker's ring. */
#define AGENT_RING_ENTRIES 1024
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
struct agent_worker;

/*
 * A counter one worker writes and worker 0 reads (metrics, STATUS=, log
 * lines counting tunnels): relaxed atomic stores and loads keep the reads
 * free of data races without ordering anything. AGENT_ADD is for counters
 * more than one worker writes (a gateway's, whose links are spread).
 */
#define AGENT_INC(var) __atomic_store_n(&(var), (var) + 1, __ATOMIC_RELAXED)
#define AGENT_DEC(var) __atomic_store_n(&(var), (var)-1, __ATOMIC_RELAXED)
#define AGENT_ADD(var) __atomic_fetch_add(&(var), 1, __ATOMIC_RELAXED)
#define AGENT_READ(var) __atomic_load_n(&(var), __ATOMIC_RELAXED)

/* One entry of gateway_addr: its links are a->links[first_link ..
 * first_link + a->cfg->client.replicas). */
struct agent_gateway {
	struct config_addr addr;             /* a copy: gateway_addr needs a restart to change */
	char name[AGENT_GATEWAY_NAME_BYTES]; /* as configured; gateway= of every log line */
	unsigned first_link;
	/* written by the workers of its links (AGENT_ADD), read with AGENT_READ */
	uint64_t connects; /* tunnels that reached HELLO_OK, since start */
	uint64_t failures; /* attempts that failed and tunnels that closed, since start */
};

/* Denials by one host rule (stats.c). */
struct agent_denial {
	enum acl_verdict verdict;
	char *rule; /* the rule's text; "" when no rule matched (not allowed) */
	uint64_t count;
	struct agent_denial *next; /* utlist LL_, newest first */
};

/* A worker's counters, exposed by the metrics endpoint (stats.c), summed
 * over the workers. The scalars change with AGENT_INC; dns and the denials
 * only under the worker's stats_lock. */
struct agent_stats {
	uint64_t reconnects;            /* tunnel attempts that failed or ended */
	uint64_t streams_total;         /* OPENs taken */
	uint64_t opens[FRAME_NRESULTS]; /* by enum frame_open_result */
	struct metrics_histogram dns;   /* target name lookups on the resolver pool */
	struct agent_denial *denials;   /* utlist LL_ */
	unsigned ndenials;
	uint64_t denials_other; /* past AGENT_STATS_MAX_DENIAL_RULES */
};

struct agent_link {
	struct agent *agent;
	struct agent_worker *worker; /* its ring runs everything of this link */
	struct agent_gateway *gateway;
	unsigned replica;      /* 0 .. replicas-1, per gateway */
	enum link_state state; /* set with link_set_state: other workers read it */
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

/*
 * One thread with its own ring (docs/scaling.md "Agent workers"): link i
 * belongs to worker i % nworkers, with its tunnel, streams, target
 * connections, datagram associations and all their timers. Worker 0 is the
 * main thread and also keeps signals, reloads, metrics and notify.
 */
struct agent_worker {
	struct agent *agent;
	unsigned index;
	struct ring ring;
	struct bufring bufs;
	struct resolver *resolver;
	/* its thread, start-up, pauses and wake-ups (reload pause, stop,
	 * READY=1 for worker 0): in agent.workgroup */
	struct wg_member wg;
	bool ring_ready, bufs_ready;
	bool stopping; /* this worker drains its links */
	struct timer shutdown_timer;
	/* counters read by worker 0 (AGENT_INC / AGENT_READ) */
	unsigned ntargets; /* target connections alive (target.c) */
	unsigned nassocs;  /* datagram associations not yet freed (dgram.c) */
	uint64_t dgrams_denied;
	struct log_rate dgram_denied_rate; /* their WARN: one per LOG_FLOOD_PERIOD_MS */
	struct agent_stats stats;
	pthread_mutex_t stats_lock; /* stats.dns and stats.denials */
};

struct agent {
	struct config *cfg;
	const struct cli_program *program; /* for reloading the same file */
	/* read by every worker; replaced only while the others are paused
	 * (agent_reload), so no worker ever sees a half-made swap */
	struct WOLFSSL_CTX *tls;
	struct hosts_table hosts;        /* [client] hosts_file */
	struct acl *allowed, *forbidden; /* compiled host rules, swapped on reload */
	uint64_t instance;
	struct agent_gateway *gateways; /* one per gateway_addr entry, in its order */
	unsigned ngateways;
	struct agent_link *links; /* ngateways * replicas, grouped by gateway */
	unsigned nlinks;
	struct agent_worker *workers; /* nworkers; workers[0] runs on the main thread */
	unsigned nworkers;
	struct metrics_server metrics; /* [metrics] listen_addr; ring NULL: off */
	bool stopping;                 /* worker 0: SIGTERM or SIGINT taken */
	bool run_failed;               /* worker 0's loop failed */
	bool stop_requested;           /* atomic: the other workers drain too */
	bool ready_requested;          /* atomic: a worker asked for READY=1 */
	struct notify notify;          /* the service manager (systemd Type=notify) */
	/* the workers' start-up, pauses (agent_reload) and exits, under
	 * wg_lock */
	pthread_mutex_t wg_lock;
	struct workgroup workgroup;
};

static inline void link_set_state(struct agent_link *l, enum link_state state)
{
	__atomic_store_n(&l->state, state, __ATOMIC_RELAXED);
}

struct cli_program;
int agent_init(struct agent *a, const struct cli_program *program, struct config *cfg);
/* Stop w's loop once it drains, every link of it is done and no target
 * connection or association of it is left. */
void agent_worker_maybe_exit(struct agent_worker *w);
/* READY=1 for the service manager, from any worker. */
void agent_ready(struct agent_worker *w);
struct dgram_assoc;
/* target.c: an OPEN arrived on l's tunnel. 0, or -EPROTO with *why set. */
int target_open(struct agent_link *l, const struct frame *f, const char **why);
int agent_run(struct agent *a);

/* stats.c: count a host-rule denial; the metrics' collect callback (arg:
 * the agent); free the counters. */
void agent_stats_denied(struct agent_stats *st, enum acl_verdict verdict, const char *rule,
			uint64_t count);
void agent_stats_collect(struct metrics_writer *w, void *arg);
/* A host-rule denial, and a name lookup's duration, on worker w (under its
 * stats_lock: the metrics read them from worker 0). */
void agent_worker_denied(struct agent_worker *w, enum acl_verdict verdict, const char *rule);
void agent_worker_dns(struct agent_worker *w, uint64_t us);
void agent_stats_free(struct agent_stats *st);
void agent_destroy(struct agent *a);

/*
 * Per-gateway tunnel state, for status output and metrics (any thread:
 * the link states are read with relaxed atomic loads). Counts are of the gateway's `replicas` links now;
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
