/*
 * proxy.h — users' connections on the gateway: accept, routing by group,
 * opening the stream, statistics. A front end (a proxy protocol: SOCKS5 in
 * front_socks5.c, HTTP in front_http.c) plugs in through its struct
 * proxy_frontend, which the listener carries; this module calls only
 * through that table and never names a front end. Front ends include this
 * header, never the reverse.
 *
 *   accept -> fe->session_start
 *          -> protocol handshake (owner mode of the relay, under a deadline)
 *          -> proxy_authenticate(): the user name is parsed once into a
 *             struct username_identity and checked; that value is all the
 *             later steps (and their log lines) know of the user
 *          -> proxy_open(): pick a tunnel of the identity's group (or, for
 *             a group without a [group.NAME] section while [gateway]
 *             fallback_to_default is on, the default group), send OPEN
 *          -> the agent answers OPEN_OK / OPEN_FAIL -> protocol's reply
 *          -> relay (pump mode, or HTTP forwarding)
 */
#ifndef ANYPROXY_GATEWAY_PROXY_H
#define ANYPROXY_GATEWAY_PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "anyproxy/config.h"
#include "anyproxy/frame.h"
#include "anyproxy/grammar.h"
#include "anyproxy/registry.h"
#include "anyproxy/relay.h"
#include "anyproxy/stream.h"
#include "anyproxy/username.h"
#include "handshake.h"

struct gateway;
struct gw_worker;
struct listener;

/* The longest refusal a front end's encode_refusal may write. */
#define PROXY_REFUSAL_MAX_BYTES 512

struct user_conn;
struct proxy_open_state;

/*
 * A front end's operations, every entry point in one table (as HAProxy's
 * mux_ops): the user-connection module calls nothing else of a front end.
 * The table is constant and lives as long as the program; its listener
 * carries it (struct listener.frontend).
 */
struct proxy_frontend {
	const char *name; /* "socks5", "http", "https": the "proxy" field of log lines */
	/* the INFO line of a failed request ("HTTP request failed"); proxy.c
	 * writes it with the request's user, group, target and client_id */
	const char *failed_line;
	/* the ALPN protocol agreed with clients that offer ALPN when its
	 * listener serves TLS ("http/1.1"); NULL: none */
	const char *tls_alpn;
	/* Constructor: set up uc->proto for a fresh connection before its
	 * first byte is read. 0 (read the handshake), 1 (read nothing in
	 * owner mode: the session has no handshake, it opened or closed
	 * already), or -ENOMEM (the connection is closed). */
	int (*session_start)(struct user_conn *uc);
	/* [gateway] max_connections is reached: encode, in the protocol's
	 * terms, the few bytes sent to a user refused at accept (no session
	 * exists). The length written, or -ENOSPC when size is too small. */
	ssize_t (*encode_refusal)(uint8_t *buf, size_t size);
	/* reason 0: the target is connected; otherwise the FRAME_OPEN_* reason
	 * (FRAME_OPEN_NET_UNREACHABLE: no agent in the group, nor in the
	 * default group when it may fall back there). */
	void (*on_open_result)(struct user_conn *uc, uint8_t reason, const char *message);
	/* socket bytes in owner mode (handshake, HTTP forwarding) */
	void (*on_socket_data)(struct user_conn *uc, const uint8_t *p, size_t n);
	/* the relay finished; free protocol state (not uc itself) */
	void (*on_closed)(struct user_conn *uc);
	/* the connection moved to another worker at its own request
	 * (proxy_move_to) and runs there now; NULL: it never asks */
	void (*on_moved)(struct user_conn *uc);
};

struct user_conn {
	struct relay relay;
	/* the worker it runs on (proxy_accept, or a handover); the gateway is
	 * w->gw (no pointer of its own: one per open connection) */
	struct gw_worker *w;
	const struct proxy_frontend *fe;
	const struct config_listener *listener_cfg;
	struct timer deadline; /* handshake, waiting for the agent, or idle watch */
	const char *phase;     /* what the deadline waits for, for its log line */
	/* the request's OPEN while no agent accepted it (proxy.c): what a retry
	 * with the next agent of the group needs; NULL otherwise */
	struct proxy_open_state *open;
	struct reg_client *client;            /* referenced while counted in its statistics */
	struct gw_group_stats *group_stats;   /* its group's, while a stream is counted */
	struct hs_slot *handshake;            /* user_budget until the first proxy_open */
	uint64_t open_started_us;             /* OPEN sent, answer pending (0: none) */
	void *proto;                          /* front end's state (handshake buffer, HTTP state) */
	char client_id[FRAME_MAX_ID_LEN + 1]; /* the agent of the request, "" before one */
	/* the small fields fill the padding after client_id (one user_conn
	 * per open connection: docs/benchmarks.md, idle memory) */
	bool idle_watch; /* deadline is the idle timeout */
	/* the stream is only kept for a next request (HTTP forwarding): no
	 * request on it; shutdown and drains may end it (proxy_release_idle) */
	bool stream_idle;
	uint8_t proxy; /* enum gw_proxy: the listener's, for statistics */
	/* handover (proxy.c): waiting to move to worker move_to, the times
	 * this request moved, and the deadline's polls while waiting */
	bool moving;
	bool move_front; /* proxy_move_to: fe->on_moved resumes it */
	uint8_t moves;
	uint16_t move_to;
	uint16_t move_polls;
	/* gw_worker.users (or, moving, its inbox): a utlist DL list (the head's prev
	 * is the tail, not NULL: only the DL_* macros touch these) */
	struct user_conn *prev, *next;
};

/* The target for logs, "host:port" (grammar_format_target). Every target
 * the front ends build fits (domains are at most GRAMMAR_TARGET_DOMAIN_MAX
 * bytes, C strings hold no NUL); one that does not shows as
 * "(invalid target):PORT" and the call returns < 0. */
int proxy_show_target(const struct stream_target *t, char shown[GRAMMAR_TARGET_MAX]);

/* The gateway uc belongs to (for files that do not see struct gw_worker). */
struct gateway *proxy_gateway_of(const struct user_conn *uc);

/* A request fell back from its group to the default group: count it and
 * log the spec's WARN. */
void proxy_log_fallback(struct gateway *gw, const char *group);
/* Group g is at [gateway] max_connections_per_group (its agents' streams
 * and datagram associations): logs the refusal of user and returns true. */
bool proxy_group_full(struct gateway *gw, const struct reg_group *g, const char *user);

/* Close every user connection (shutdown deadline). */
void proxy_close_all(struct gw_worker *w, const char *why);
/* Close the user connections that have no stream yet (shutdown). */
void proxy_close_handshaking(struct gw_worker *w, const char *why);

/* The relay callbacks every front end installs. */
extern const struct relay_ops proxy_relay_ops;

/* The accept callback of a proxy listener: l->frontend speaks to the user,
 * l->proxy_cfg is its section ([proxy.socks5], [proxy.http], [proxy.https]);
 * with l->tls the relay speaks TLS under it (the handshake falls under the
 * handshake deadline and max_handshakes like the proxy protocol's). */
void proxy_accept(struct listener *l, int fd);

/* Route the user to a tunnel of id's group and send OPEN for target. The
 * result arrives through fe->on_open_result (also for "no agent", at once).
 * A group that has a [group.NAME] section never falls back to the default
 * group; other groups do while [gateway] fallback_to_default is on. id is
 * what proxy_authenticate() admitted (copied: it need not outlive the call).
 * An agent that answers OPEN_FAIL, or nothing within [gateway]
 * open_timeout_ms (its tunnel is then marked suspect), is not the end:
 * the next agent of the same group gets the OPEN, each agent at most once,
 * and fe->on_open_result hears only the success or, once every agent
 * failed, the most specific failure (proxy.c failure_rank). Nothing reaches
 * the user or the target before OPEN_OK, so a retry is always safe. The
 * call ends the user's handshake for [gateway] max_handshakes, whatever its
 * outcome. */
void proxy_open(struct user_conn *uc, const struct username_identity *id,
		const struct stream_target *target);

/* Why id's group may not fall back to the default group ("the group has a
 * [group.NAME] section", "fallback_to_default is off"), or NULL when it may:
 * the one rule for streams and datagram associations alike. */
const char *proxy_no_fallback(const struct gateway *gw, const struct username_identity *id);

/* The handshake ended without a stream (a SOCKS5 UDP ASSOCIATE): stop
 * counting it against max_handshakes and stop its deadline; the front end
 * bounds what follows itself. */
void proxy_handshake_over(struct user_conn *uc);
/* gateway.user_budget.evict: close a user's connection whose handshake
 * went stale while the proxy side is full (listener.c). */
void proxy_close_stale(void *owner);

/* The stream of this request is over (HTTP forwarding moves on to the
 * next request): stop counting it in its client's statistics. */
void proxy_stream_done(struct user_conn *uc);

/* May the request of a user of group take this connection's stream, kept
 * from the request before (HTTP forwarding)? Only while its agent would be
 * picked for a new stream of that very group: registered, not drained, its
 * tunnel open, not draining (GOAWAY) nor suspect, the gateway not stopping,
 * and the agent of the group itself (a stream that fell back to the default
 * group is not kept for the group). */
bool proxy_stream_reusable(const struct user_conn *uc, const char *group);

/* uc->relay.stream was moved in from the origin pool: count it as an open
 * stream of client's agent (client: a reference the caller hands over),
 * as proxy_open() does for a new one, without counting a new stream. */
void proxy_adopt_stream(struct user_conn *uc, struct reg_client *client);

/* End the streams only kept for a next request (stream_idle) of agents
 * drained with apctl (drained_only), or on tunnel t (NULL: any), and those
 * parked in the origin pool: an agent drained or going away (GOAWAY) is
 * not held by idle HTTP connections. */
void proxy_release_idle(struct gw_worker *w, bool drained_only, const struct tunnel *t);

/* Move the connection to worker `worker` (its request is authenticated,
 * nothing of a stream is linked, reading is off): from the next loop
 * iteration on it waits until nothing of it is in flight, then continues
 * on that worker with fe->on_moved (or on this one, if that worker is
 * stopping). */
void proxy_move_to(struct user_conn *uc, unsigned worker);

/* A request answered on a stream it did not open (HTTP forwarding reusing
 * the origin connection): it ends the user's handshake like proxy_open()
 * and is counted with the requests answered, as an OPEN that succeeded. */
void proxy_count_reused(struct user_conn *uc);

/* The OPEN was answered with success: start pumping (SOCKS5, CONNECT). */
void proxy_start_pump(struct user_conn *uc, const uint8_t *first, size_t n);

/* (Re)arm the handshake deadline ([gateway] handshake_timeout_ms): a new
 * connection, or the next request on a kept-alive one. */
void proxy_await_request(struct user_conn *uc);

/* Arm (ms > 0) or stop the deadline of a phase: on expiry the connection
 * closes and the log names phase ("handshake", "waiting for the agent",
 * ...; a string that outlives the deadline). */
void proxy_deadline(struct user_conn *uc, uint32_t ms, const char *phase);
/* From now on, close the connection after [gateway] idle_timeout_ms with no
 * byte in either direction. */
void proxy_watch_idle(struct user_conn *uc);

/*
 * The one place a user name is read: parse the user_len bytes at user (any
 * bytes; username.h) into *id, then authenticate it with the password in
 * constant time: against the [group.NAME] section of id's group when there
 * is one, else against the listener's credentials (a listener without
 * credentials admits everyone to groups without a section). user NULL: the
 * user gave no credentials (SOCKS5 method 0x00, HTTP without
 * Proxy-Authorization): the default group, if the listener needs none.
 * Returns true with *id set, and *admitted_by (unless NULL) saying who
 * vouched for it: 0, its group's [group.NAME] section (the same password on
 * every listener), or 1 + the listener's proxy (its own credentials, or
 * none at all); users of one name admitted otherwise hold other
 * credentials and share nothing. False (logged as WARN "Proxy authentication
 * failed") for a name the parser refuses and for wrong credentials alike:
 * the front end answers both as bad credentials, and *id is not to be used.
 * No credentials where some are needed is false too, but logged at INFO
 * ("Proxy credentials required, challenge sent"): that is how clients ask
 * for the challenge before they send credentials.
 */
bool proxy_authenticate(const struct user_conn *uc, const char *user, size_t user_len,
			const char *password, size_t password_len, struct username_identity *id,
			unsigned *admitted_by);
/* A socket a user holds besides its connection (a SOCKS5 UDP relay
 * socket, a UDP forward client's socket) takes a place of max_connections
 * as a connection does, so that the descriptors kept for agents and apctl
 * stay theirs. false: the limit is reached (counted and logged like a
 * refused connection; proxy names the listener). proxy_fd_give when the
 * socket is closed. */
bool proxy_fd_take(struct gateway *gw, const char *proxy);
void proxy_fd_give(struct gateway *gw);

/* Credentials the front end could not even read (why says how): logged
 * like any refusal. Returns false, for the caller to answer as bad
 * credentials. */
bool proxy_credentials_refused(const struct user_conn *uc, const char *why);
/* Does this user connection need credentials at all? */
bool proxy_needs_credentials(const struct user_conn *uc);

#endif
