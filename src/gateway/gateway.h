/*
 * gateway.h — anyproxy-gateway's state, private to src/gateway/.
 *
 * [gateway] workers threads (struct gw_worker), each with its ring, its
 * listeners, its tunnels and the user connections running on it; what
 * they share (struct gateway: the registry, the statistics, the budgets)
 * is under gateway.lock (docs/scaling.md "Gateway workers").
 */
#ifndef ANYPROXY_GATEWAY_H
#define ANYPROXY_GATEWAY_H

#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "anyproxy/bufring.h"
#include "anyproxy/config.h"
#include "anyproxy/log.h"
#include "anyproxy/notify.h"
#include "anyproxy/metrics.h"
#include "anyproxy/registry.h"
#include "anyproxy/ring.h"
#include "anyproxy/tunnel.h"
#include "anyproxy/workgroup.h"
#include "handshake.h"
#include "stats.h"

/* Connections the kernel completes and holds for a listener that is not
 * accepting (a side at max_handshakes): they wait there, costing the
 * gateway nothing, until a slot frees. The kernel caps it at
 * net.core.somaxconn (4096 by default since Linux 5.4; 128 before). */
#define GATEWAY_LISTEN_BACKLOG 4096
#define GATEWAY_STREAM_WINDOW (256 * 1024)
#define GATEWAY_ACCEPT_RETRY_MS 100
/* max_connections = 0: descriptors kept back from users for everything
 * else. A fixed part (standard streams, the ring, the signalfd, listeners,
 * the log, apctl connections), max_handshakes for tunnels in their
 * handshake, and RLIMIT_NOFILE / GATEWAY_FD_TUNNEL_SHARE for agents'
 * tunnels; users always get at least half of the limit. One group's agents
 * get at most half of that share (max_tunnels_per_group = 0). */
#define GATEWAY_FD_RESERVE_FIXED 64
#define GATEWAY_FD_TUNNEL_SHARE 16
/* An unlimited (or huge) RLIMIT_NOFILE counts as this many: the largest
 * max_connections a file may set. */
#define GATEWAY_DERIVED_NOFILE_MAX 1000000
/* After a wave of at least this many connections in their handshake at
 * once, freed memory is given back to the system when the last one ends
 * (cli.c keeps freed memory in the heap for the relays' sake). */
#define GATEWAY_TRIM_AFTER_HANDSHAKES 256
/* ... this long after the wave's last handshake: the other workers free
 * what their last connections held meanwhile. */
#define GATEWAY_TRIM_DELAY_MS 200
/* Worker 0: the main thread (signals, control socket, metrics, notify,
 * forwards, the UDP side of [forward.NAME]). */
#define GATEWAY_WORKER_MAIN 0
/* gateway.picking_worker: a datagram tunnel of any worker */
#define GW_ANY_WORKER ((unsigned)-1)
/* A request moves between workers at most this many times (its tunnel
 * may close while it moves: it then picks again, maybe elsewhere). */
#define GATEWAY_HANDOVERS_MAX 4
/* A connection waiting to move checks this often that nothing of it is
 * left in flight on its ring. */
#define GATEWAY_HANDOVER_RETRY_MS 1
#define GATEWAY_RING_ENTRIES 4096

struct handshake_budget;
struct proxy_frontend;
struct gw_forward;

/* A listening socket served by one accept at a time, re-armed from its
 * completion unless paused. */
struct listener {
	int fd;
	struct ring_op op;
	struct timer retry; /* re-arm after EMFILE/ENFILE */
	/* its "Accept paused" WARN: at most one a second, with the count */
	struct log_rate paused_rate;
	uint64_t accept_pauses;
	bool armed;  /* an accept is in flight (its completion is still to come) */
	bool paused; /* its side is at max_handshakes: no accept is armed */
	const char *name;
	void (*on_accept)(struct listener *l, int fd);
	void *owner;
	/* a proxy listener's front end and section (proxy_accept); NULL for
	 * the tunnel and control listeners */
	const struct proxy_frontend *frontend;
	const struct config_listener *proxy_cfg;
	enum gw_proxy proxy; /* a proxy listener's index in the statistics */
	/* [proxy.https]: users speak TLS with a session from this context
	 * (replaced on SIGHUP; connections keep the one they started with);
	 * NULL: plain */
	struct WOLFSSL_CTX *tls;
};

/* [gateway] max_handshakes for one side: the tunnel port, or the proxy
 * ports together, over every worker (shared, under gateway.lock). At the
 * bound every worker's listeners of the side stop accepting, and new
 * connections wait in the kernel's backlog; below it they accept again
 * (listener.c "handshakes"). */
struct handshake_budget {
	const char *name;           /* "tunnel" or "proxy", for the log */
	unsigned side;              /* GW_SIDE_* */
	unsigned count;             /* connections in their handshake */
	bool paused;                /* count reached max_handshakes */
	unsigned pause_acks;        /* workers whose listeners paused since */
	bool pause_logged;          /* this pause had its WARN: resuming is INFO */
	uint64_t pauses;            /* times the side paused since start */
	uint64_t paused_at_ms;      /* when the current pause began */
	struct log_rate pause_rate; /* pause WARNs: one per LOG_FLOOD_PERIOD_MS */
	/* handshakes per source address (the tunnel side: [gateway]
	 * max_tunnel_handshakes_per_address), uthash by key; entries live
	 * while their count is above 0 */
	struct hs_source *sources;
	uint64_t refused_per_address; /* connections closed over that bound */
	struct log_rate refuse_rate;  /* their WARN: one per LOG_FLOOD_PERIOD_MS */
	/* at the bound: close one of the side's connections in their handshake
	 * (gateway.c, proxy.c), the stale one a worker's stale_timer picked */
	void (*evict)(void *owner);
	uint64_t stale_closed;      /* connections closed so, since start */
	struct log_rate stale_rate; /* their WARN: one per LOG_FLOOD_PERIOD_MS */
};

/* The credential that admitted an agent tunnel (its reg_tunnel.credential):
 * an id registered with one is never taken over with another. */
enum gw_credential {
	GW_CRED_REFUSED = 0, /* nothing admits agents to the group */
	GW_CRED_SHARED = 1,  /* [gateway] auth_username / auth_password */
	GW_CRED_GROUP = 2,   /* [group.NAME] agent_username / agent_password */
};

/* Or'ed into reg_tunnel.credential: the agent's certificate is bound to its
 * group and client_id (only another such agent may replace it). */
#define GW_CRED_CERT_BOUND 0x100u
#define GW_CRED_KIND_MASK 0xffu /* the enum gw_credential part */

/* The credential a group takes under one configuration (no copies: the
 * strings belong to that configuration). */
struct gw_admission {
	enum gw_credential kind;
	const char *username, *password; /* NULL when GW_CRED_REFUSED */
};

/* One agent tunnel as the gateway sees it. */
struct gw_tunnel {
	struct gateway *gw;
	/* replaced by another tunnel's HELLO (registry on_evict, under
	 * gateway.lock): the owner worker sends the ERROR (its evictions) */
	struct gw_tunnel *evict_next;
	uint16_t evict_code;
	bool evict_queued;
	struct tunnel *tunnel;
	struct reg_tunnel reg;
	bool authenticated;
	struct hs_slot *handshake; /* in gateway.tunnel_budget until HELLO_OK, then NULL */
	struct hs_source *source;  /* its address's count there; NULL: not counted */
	bool datagrams;            /* HELLO and HELLO_OK set FRAME_CAP_DATAGRAM */
	struct gw_assoc *assocs;   /* datagram associations on it, by id (dgram.c, uthash) */
	uint32_t next_assoc_id;
	char client_id[FRAME_MAX_ID_LEN + 1];
	/* gw_worker.tunnels, for shutdown and reload: a utlist DL list (the
	 * head's prev is the tail, not NULL: only the DL_* macros touch these) */
	struct gw_tunnel *prev, *next;
	struct gw_worker *w; /* the worker that owns it (its ring runs the tunnel) */
};

/*
 * One worker: a thread with its own ring, receive buffers and listening
 * sockets (SO_REUSEPORT: the kernel spreads connections over the workers'
 * listeners). It owns, for their whole life, the tunnels it accepted and
 * the user connections that run on it. Worker 0 is the main thread; it
 * also runs what exists once per process (struct gateway).
 */
struct gw_worker {
	struct gateway *gw;
	unsigned index;
	struct ring ring;
	struct bufring bufs; /* receive buffers for users' sockets */
	struct listener tunnel_listener;
	struct listener socks5_listener;
	struct listener http_listener;
	struct listener https_listener;
	struct gw_tunnel *tunnels; /* newest first, a utlist DL list (gateway.c) */
	unsigned ntunnels;
	unsigned nusers;                 /* users' connections alive on this worker (proxy.c) */
	struct user_conn *users;         /* newest first, a utlist DL list (proxy.c) */
	struct origin_pool *origin_pool; /* parked HTTP origin streams (origin_pool.c) */
	struct timer shutdown_timer;
	bool side_paused[2];     /* its listeners of each side are paused (GW_SIDE_*) */
	struct timer trim_timer; /* malloc_trim after a wave (listener.c) */
	/* its connections in their handshake, by side, oldest first, and the
	 * timer that closes the stale ones while their side is full
	 * (listener.c) */
	struct hs_slot *handshakes[2];
	struct timer stale_timer;
	uint64_t pause_acked[2]; /* the last pause of each side it counted in for */
	bool stopping;           /* worker_stop ran on it */
	/* its thread, start-up, pauses and wake-ups (workgroup.h): in
	 * gateway.workgroup, under gateway.lock; exited there means its loop
	 * ended and nothing more is handed to it */
	struct wg_member wg;
	bool ring_ready, bufs_ready;
	unsigned release_seen; /* the last gateway.release_gen it acted on */
	/* under gateway.lock: users handed over to it, not yet taken (a
	 * utlist DL list through user_conn prev/next), and how many are on
	 * their way; tunnels of its to be told they were replaced */
	struct user_conn *inbox;
	unsigned in_transit;
	struct gw_tunnel *evictions;
	/* UDP forward clients handed to it (inbox, under lock), and those it
	 * serves (its own) */
	struct forward_udp_remote *udp_inbox, *udp_remotes;
	unsigned nremotes;
	/* relaxed atomics, read by the metrics */
	uint64_t streams_total; /* streams opened by this worker's users */
	uint64_t handovers_in;  /* users handed over to this worker */
	unsigned parked;        /* streams in its origin pool (relaxed) */
};

/* The two sides of max_handshakes. */
enum { GW_SIDE_PROXY = 0, GW_SIDE_TUNNEL = 1 };

struct gateway {
	struct config *cfg;
	const struct cli_program *program; /* for reloading the same file */
	struct WOLFSSL_CTX *tls;
	struct listener control_listener;
	struct gw_forward *forwards; /* [forward.NAME] listeners (forward.h), on worker 0 */
	size_t nforwards;
	struct gw_worker *workers; /* nworkers of them; [0] is the main thread */
	unsigned nworkers;
	/* everything shared by the workers: the registry, the statistics and
	 * every reg_client, the handshake budgets, the counters below, the
	 * workers' inboxes; short critical sections, never across I/O */
	pthread_mutex_t lock;
	struct workgroup workgroup; /* start-up, pauses (reload), exits; with lock */
	unsigned release_gen;       /* bumped by apctl drain: idle streams are checked */
	bool stop_requested;        /* atomic: workers 1.. stop */
	uint64_t handovers;         /* atomic: users moved between workers */
	struct handshake_budget tunnel_budget, user_budget; /* under lock */
	/* which workers hold parked origin streams of a key (origin_pool.c,
	 * under lock): a request finds one parked on another worker */
	struct pool_dir *pool_dir;
	unsigned handshake_peak; /* most at once since memory was last trimmed (lock) */
	struct registry registry;
	unsigned nusers; /* users' connections alive, every worker (atomic) */
	/* the other sockets users hold, counted against max_connections with
	 * their connections (proxy_fd_take): SOCKS5 UDP relay sockets, UDP
	 * forward clients' sockets (atomic) */
	unsigned nuser_fds;
	uint64_t refused_over_limit;  /* users refused by max_connections */
	struct log_rate refusal_rate; /* their WARN: one per LOG_FLOOD_PERIOD_MS */
	uint32_t max_users;           /* max_connections in force (0 in the file: derived) */
	uint32_t max_group_tunnels;   /* max_tunnels_per_group in force (likewise) */
	unsigned shared_tunnels;      /* registered with the shared credential (reg.tally) */
	bool picking_datagrams;       /* registry_pick for an association: DATAGRAM tunnels only */
	unsigned picking_worker;      /* ... of this worker (the association lives there) */
	uint64_t dgrams_dropped;      /* datagrams toward agents not sent (tunnel full, too long) */
	/* issue 11: suspect tunnels and retries inside a group */
	uint64_t tunnels_suspected;   /* times a tunnel became suspect */
	uint64_t open_retries;        /* OPENs sent again to another agent (proxy.c) */
	struct log_rate suspect_rate; /* "Tunnel suspect" WARNs */
	struct log_rate answer_rate;  /* "Tunnel answers again" INFOs */
	/* set by gateway.c, called by proxy.c once a user connection is freed:
	 * a stopping gateway exits after the last one (proxy.c never calls
	 * into gateway.c) */
	void (*on_user_closed)(struct gw_worker *w);
	struct gw_stats stats;         /* metrics and apctl stats (stats.h) */
	struct metrics_server metrics; /* [metrics] listen_addr; ring NULL: off */
	time_t started;
	bool stopping;
	bool control_bound;   /* we created the socket file */
	gid_t control_gid;    /* the socket file's group: may change state */
	struct notify notify; /* the service manager (systemd Type=notify) */
};

/* Worker 0: the main thread's, which also runs the once-per-process parts
 * (signals, control socket, metrics, notify, forwards). */
static inline struct gw_worker *gw_main(struct gateway *gw)
{
	return &gw->workers[0];
}

static inline void gw_lock(struct gateway *gw)
{
	pthread_mutex_lock(&gw->lock);
}

static inline void gw_unlock(struct gateway *gw)
{
	pthread_mutex_unlock(&gw->lock);
}

/* Relaxed atomics for counters other threads read. */
#define GW_ADD(p, n) __atomic_fetch_add((p), (n), __ATOMIC_RELAXED)
#define GW_SUB(p, n) __atomic_fetch_sub((p), (n), __ATOMIC_RELAXED)
#define GW_READ(p) __atomic_load_n((p), __ATOMIC_RELAXED)

/* Would client's agent, on its tunnel t, be picked for a new stream of
 * group? Registered, not drained, t open and neither draining (GOAWAY) nor
 * suspect, the gateway not stopping, and the agent of group itself (not a
 * default-group fallback). The test of a stream kept for a next request
 * (proxy_stream_reusable) and of a parked one (origin_pool_take); here,
 * below both, so neither calls the other. Takes gateway.lock. */
static inline bool gw_agent_usable(const struct gateway *gw, const struct reg_client *client,
				   const struct tunnel *t, const char *group)
{
	const struct gw_tunnel *gt;
	bool ok;

	if (!t || t->state != TUNNEL_OPEN || !client || GW_READ(&gw->stopping))
		return false;
	gt = t->owner;
	gw_lock((struct gateway *)gw);
	ok = !client->drained && !client->detached && !strcmp(client->group->id, group) &&
	     gt->reg.client == client && !gt->reg.draining && !gt->reg.suspect;
	gw_unlock((struct gateway *)gw);
	return ok;
}

/* wg_wake(&w->wg) (workgroup.h) makes worker w look at its inbox, its
 * evictions, pauses and stop requests (gateway.c worker_woken). */
/* proxy.c: take the users handed over to w (on w's thread). */
void proxy_take_inbox(struct gw_worker *w);
/* listener.c: pause or resume w's listeners to match the shared budgets
 * (on w's thread). */
void handshake_sync(struct gw_worker *w);

struct cli_program;
int gateway_init(struct gateway *gw, const struct cli_program *program, struct config *cfg);
int gateway_run(struct gateway *gw);
void gateway_destroy(struct gateway *gw);

/* listener.c: a connection (owner) enters its handshake on side b, *slot
 * then its place there (-ENOMEM: not counted, the caller closes it), and
 * leaves it: *slot is freed and NULL, so that leaving counts once however
 * many paths end the handshake. The side pauses its listeners on reaching
 * max_handshakes and resumes below it; while it is paused, each worker
 * closes its oldest connection in their handshake once that one is
 * [gateway] handshake_stale_ms old (b->evict), one at a time, so that a
 * connection waiting in the backlog takes its place. The heap is trimmed
 * after a large wave (GATEWAY_TRIM_AFTER_HANDSHAKES). */
int handshake_begin(struct gw_worker *w, struct handshake_budget *b, struct hs_slot **slot,
		    void *owner);
void handshake_end(struct gw_worker *w, struct handshake_budget *b, struct hs_slot **slot);
/* The connection stays counted but leaves w's list: it moves to another
 * worker (an HTTP request taking a stream parked there), where its
 * handshake ends on arrival; it cannot be closed as stale meanwhile.
 * slot may be NULL (the handshake is over): nothing to do. */
void handshake_unlist(struct gw_worker *w, struct handshake_budget *b, struct hs_slot *slot);
/* Count a connection from peer against side b's bound per source address
 * (max; 0: none, *src stays NULL). 0, or -EBUSY over the bound (then the
 * caller closes the connection: the refusal is counted and logged here). */
int handshake_source_take(struct handshake_budget *b, uint32_t max, const struct sockaddr *peer,
			  struct hs_source **src);
/* The connection's handshake ended (or it closed): uncount it, once. */
void handshake_source_drop(struct handshake_budget *b, struct hs_source **src);
/* Free what is left of b's per-address counts (shutdown). */
void handshake_sources_free(struct handshake_budget *b);
/* max_handshakes or handshake_stale_ms was reloaded (on w's thread): pause
 * or resume each side to match, and time w's stale handshakes anew */
void handshake_limit_changed(struct gw_worker *w);
/* The proxy side's listeners of w, or its tunnel listener (side). */
struct listener *side_listener(struct gw_worker *w, unsigned side, size_t i);

/* start (arm an accept) and stop every kind of listener (listener.c) */
void listener_start(struct ring *r, struct listener *l);
void listener_stop(struct ring *r, struct listener *l);

/* control_server.c */
void control_accept(struct listener *l, int fd);
/* Opens [control] socket with its mode and group and fills
 * gw->control_listener. 0 or -errno with the reason in err. */
int control_listen(struct gateway *gw, char *err, size_t errlen);

#endif
