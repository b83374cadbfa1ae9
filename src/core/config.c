/*
 * config.c — the key table of the INI configuration (see config.h and
 * config-table.h): every section and key, where it is allowed, its type and
 * limits, its default, whether it is required, the struct field it fills,
 * its help text, and the checks that know particular keys. Loading
 * (config_load.c), reload (config_reload.c), the environment overrides and
 * the generated docs (tools/configdoc) are all driven by these rows; the
 * cross-key rules live in the loader and are described in config_rules[].
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "anyproxy/common.h"
#include "anyproxy/config-table.h"
#include "anyproxy/config.h"
#include "anyproxy/grammar.h"

/* Usernames and passwords: the SOCKS5 limit (RFC 1929), used for all. */
#define CONFIG_CREDENTIAL_MAX_BYTES 255

/* A Unix group name or number ([control] socket_group). */
#define CONFIG_UNIX_GROUP_MAX_BYTES 255

/* Limits of the timing keys, in milliseconds. */
#define CONFIG_TIMEOUT_MIN_MS 100
#define CONFIG_TIMEOUT_MAX_MS 600000 /* 10 minutes */
#define CONFIG_PING_MAX_MS 3600000   /* 1 hour */
#define CONFIG_IDLE_MAX_MS 86400000  /* 1 day */
#define CONFIG_LIMIT_MAX 1000000     /* connection and stream counts */
#define CONFIG_RECONNECT_MIN_MS 10
#define CONFIG_RECONNECT_MAX_MS 3600000 /* 1 hour */

#define GATEWAY CONFIG_GATEWAY
#define CLIENT CONFIG_CLIENT
#define BOTH (CONFIG_GATEWAY | CONFIG_CLIENT)

static int check_client_id(const void *field, char *why, size_t whylen);
static int check_group_id(const void *field, char *why, size_t whylen);
static int check_socket_path(const void *field, char *why, size_t whylen);
static int check_listen_addr(const void *field, char *why, size_t whylen);
static int check_dial_addrs(const void *field, char *why, size_t whylen);
static int check_server_name(const void *field, char *why, size_t whylen);
static int check_not_empty(const void *field, char *why, size_t whylen);
static int check_unix_group(const void *field, char *why, size_t whylen);

const struct config_section config_sections[] = {
	{ "gateway", GATEWAY, "The tunnel listener that client agents connect to over TLS." },
	{ "proxy.http", GATEWAY,
	  "The HTTP proxy listener (plain HTTP and CONNECT). Disabled while listen_addr is "
	  "empty." },
	{ "proxy.socks5", GATEWAY,
	  "The SOCKS5 proxy listener. Disabled while listen_addr is empty." },
	{ "proxy.https", GATEWAY,
	  "The HTTP proxy over TLS: the same proxy as [proxy.http] (plain HTTP and CONNECT, "
	  "the same authentication and group rules), but users reach it with TLS, so their "
	  "credentials never cross the network in clear (curl --proxy https://, a browser's "
	  "HTTPS proxy). TLS 1.2 and 1.3; ALPN http/1.1. Disabled while listen_addr is empty." },
	{ "client", CLIENT, "The agent: which gateways it dials, who it is, what it may reach." },
	{ "log", BOTH, "Where and how both programs write their log." },
	{ "control", GATEWAY, "The local control socket that apctl talks to." },
	{ "metrics", BOTH,
	  "The Prometheus metrics endpoint (GET /metrics, docs/operations.md \"Metrics\"). "
	  "Off while listen_addr is empty." },
};

/* type names a descriptor of config_types.c: string, addr, uint32, ... */
#define KEY(sec, key, type_name, progs, field)                                                  \
	.section = (sec), .name = (key), .type = &config_type_##type_name, .programs = (progs), \
	.offset = offsetof(struct config, field)
#define RANGE(lo, hi) .min = (lo), .max = (hi)

#define LISTENER_KEYS(sec, field, example_addr, username_check)                                 \
	{ KEY(sec, "listen_addr", addr, GATEWAY, field.listen_addr), .example = (example_addr), \
	  .restart = true,                                                                      \
	  .help = "Address to listen on: host:port, [v6]:port or :port for all "                \
		  "addresses. Empty: this listener is off." },                                  \
		{ KEY(sec, "auth_username", string, GATEWAY, field.auth_username),              \
		  .check = (username_check), .example = "proxy_user",                           \
		  .help = "Username users must give. A user selects a group by sending "        \
			  "username.group-id; only the part before the first '.' is checked, "  \
			  "so this name cannot contain '.'. Empty: no authentication." },       \
	{                                                                                       \
		KEY(sec, "auth_password", secret, GATEWAY, field.auth_password),                \
			.check = config_check_credential,                                       \
			.help = "Password users must give with auth_username. For no "          \
				"authentication "                                               \
				"leave both keys out: an empty password is refused."            \
	}

const struct config_key config_keys[] = {
	{ KEY("gateway", "listen_addr", addr, GATEWAY, gateway.listen_addr),
	  .default_value = ":8443", .check = check_listen_addr, .restart = true,
	  .help = "Address of the tunnel listener that agents connect to: host:port, "
		  "[v6]:port or :port for all addresses." },
	{ KEY("gateway", "tls_cert", file, GATEWAY, gateway.tls_cert), .required = true,
	  .example = "/etc/anyproxy/server.crt",
	  .help = "TLS certificate chain (PEM) the gateway presents to agents." },
	{ KEY("gateway", "tls_key", file, GATEWAY, gateway.tls_key), .required = true,
	  .example = "/etc/anyproxy/server.key", .private_file = true,
	  .help = "Private key (PEM) of tls_cert. Keep it readable by its owner only "
		  "(mode 0600 or 0400): the gateway warns at start otherwise." },
	{ KEY("gateway", "client_ca", file, GATEWAY, gateway.client_ca),
	  .example = "/etc/anyproxy/agents-ca.crt",
	  .help = "CA certificate (PEM) for mutual TLS: when set, every agent must present "
		  "a certificate signed by it (as well as its password). A certificate with "
		  "URI SANs anyproxy://agent/GROUP/CLIENT joins only as one of those "
		  "pairs. Empty: agents authenticate with their password only." },
	{ KEY("gateway", "auth_username", string, GATEWAY, gateway.auth_username), .required = true,
	  .check = config_check_credential, .example = "gateway_user",
	  .help = "Username agents must present when they connect (the agents' "
		  "[client] auth_username)." },
	{ KEY("gateway", "auth_password", secret, GATEWAY, gateway.auth_password), .required = true,
	  .check = config_check_credential,
	  .help = "Password agents must present with auth_username. This shared credential "
		  "joins only groups that have no agent_password of their own ([group.NAME])." },
	{ KEY("gateway", "require_group_section", bool, GATEWAY, gateway.require_group_section),
	  .default_value = "false",
	  .help = "true: agents may join only groups that have a [group.NAME] section; an "
		  "agent asking for any other group, the default group \"\" included (it "
		  "cannot have a section), is refused with ERROR auth. false: any group "
		  "without agent_password takes agents with the shared credential." },
	{ KEY("gateway", "handshake_timeout_ms", uint32, GATEWAY, gateway.handshake_timeout_ms),
	  .default_value = "10000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_TIMEOUT_MAX_MS),
	  .help = "Time allowed for a TLS, SOCKS5 or HTTP handshake before the connection "
		  "is closed." },
	{ KEY("gateway", "ping_interval_ms", uint32, GATEWAY, gateway.ping_interval_ms),
	  .default_value = "10000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_PING_MAX_MS),
	  .help = "How often the gateway pings each tunnel." },
	{ KEY("gateway", "ping_timeout_ms", uint32, GATEWAY, gateway.ping_timeout_ms),
	  .default_value = "30000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_PING_MAX_MS),
	  .help = "A tunnel silent for this long is declared dead and its streams are "
		  "reset. Must be greater than ping_interval_ms." },
	{ KEY("gateway", "open_timeout_ms", uint32, GATEWAY, gateway.open_timeout_ms),
	  .default_value = "15000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_TIMEOUT_MAX_MS),
	  .help = "How long the gateway waits for an agent to answer an OPEN (connected or "
		  "failed). An agent that does not answer in time has its tunnel marked "
		  "suspect and the request goes to the next agent of the group. Keep it above "
		  "the agents' connect_timeout_ms, so that an agent's own verdict on a slow "
		  "target comes first. A reload applies to the OPENs sent after it." },
	{ KEY("gateway", "idle_timeout_ms", uint32, GATEWAY, gateway.idle_timeout_ms),
	  .default_value = "300000", RANGE(0, CONFIG_IDLE_MAX_MS),
	  .help = "A proxied connection with no data in either direction for this long is "
		  "closed (a connection busy in one direction only is not idle). 0: never." },
	{ KEY("gateway", "udp_idle_timeout_ms", uint32, GATEWAY, gateway.udp_idle_timeout_ms),
	  .default_value = "60000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_TIMEOUT_MAX_MS),
	  .help = "A datagram association (a SOCKS5 UDP ASSOCIATE, a client of a UDP "
		  "forward) that carried no datagram in either direction for this long is "
		  "ended; a SOCKS5 association's TCP connection is closed with it. A reload "
		  "applies to the next check of each association." },
	{ KEY("gateway", "shutdown_timeout_ms", uint32, GATEWAY, gateway.shutdown_timeout_ms),
	  .default_value = "30000", RANGE(0, CONFIG_TIMEOUT_MAX_MS),
	  .help = "On SIGTERM, how long open connections may go on before they are cut." },
	{ KEY("gateway", "max_connections", uint32, GATEWAY, gateway.max_connections),
	  .default_value = "0", RANGE(0, CONFIG_LIMIT_MAX),
	  .help = "Users' connections the gateway serves at once; more are refused (SOCKS5 "
		  "05 FF, HTTP 503). A SOCKS5 UDP association's relay socket and a UDP "
		  "forward client's socket count as one more each (a UDP ASSOCIATE over the "
		  "limit gets REP 0x01). 0: derived from the open-file limit, keeping a "
		  "reserve for agents' tunnels, their handshakes and apctl: RLIMIT_NOFILE (its "
		  "soft limit, raised to the hard one at start) minus "
		  "(64 + max_handshakes + RLIMIT_NOFILE/16), but at least half of "
		  "RLIMIT_NOFILE. The value in force is logged at start and on reload." },
	{ KEY("gateway", "workers", uint32, GATEWAY, gateway.workers), .default_value = "0",
	  RANGE(0, CONFIG_GATEWAY_WORKERS_MAX), .restart = true,
	  .help = "Threads serving agents and users, each with its own io_uring ring and its "
		  "own SO_REUSEPORT listeners on the tunnel and proxy ports (the kernel spreads "
		  "connections over them). A tunnel stays on the thread that accepted it; a "
		  "user's connection moves to the thread of the tunnel its request picked. "
		  "0: one per online CPU." },
	{ KEY("gateway", "max_handshakes", uint32, GATEWAY, gateway.max_handshakes),
	  .default_value = "1024", RANGE(1, CONFIG_LIMIT_MAX),
	  .help = "Connections in their handshake at once, counted separately on the tunnel "
		  "port (TLS + HELLO) and on the proxy ports together (SOCKS5 or HTTP until the "
		  "user's request is authenticated), so a flood of one cannot lock out the other. "
		  "At the bound that side stops accepting: newcomers wait in the kernel's listen "
		  "backlog, unanswered, and are served once a slot frees (a burst is slowed, "
		  "never refused; a stale handshake frees one: handshake_stale_ms). A handshake "
		  "takes a round trip or two, so 1024 at once is far "
		  "above what real agents and users need, while 1024 TLS sessions in progress "
		  "cost the gateway at most about 50 MiB." },
	{ KEY("gateway", "handshake_stale_ms", uint32, GATEWAY, gateway.handshake_stale_ms),
	  .default_value = "2000", RANGE(0, CONFIG_TIMEOUT_MAX_MS),
	  .help = "While a side is at max_handshakes, a connection that has been in its "
		  "handshake this long is closed to make room for one waiting in the listen "
		  "backlog: each worker closes its oldest such connection, one at a time, as "
		  "long as the side stays full. A flood of silent connections from many "
		  "addresses then holds a slot for this long instead of handshake_timeout_ms, "
		  "so agents and users still get in unless the flood opens max_handshakes "
		  "connections within it; a real handshake, a round trip or two, is over long "
		  "before. Keep it above the slowest round trips of your agents and users. "
		  "0: never (newcomers wait until a handshake ends or times out)." },
	{ KEY("gateway", "max_tunnel_handshakes_per_address", uint32, GATEWAY,
	      gateway.max_tunnel_handshakes_per_address),
	  .default_value = "64", RANGE(0, CONFIG_LIMIT_MAX),
	  .help = "Connections one source address (an IPv6 source: its /64) may have in their "
		  "handshake at once on the tunnel port; a connection over it is closed at "
		  "once. Without it one address could hold the whole max_handshakes budget of "
		  "the tunnel port with silent connections and keep every agent from "
		  "reconnecting. Agents on one host need one handshake per tunnel (replicas "
		  "per gateway), so 64 leaves room for many agents behind one address. The "
		  "proxy ports have no such bound: many users share one NAT address, and "
		  "their budget is their own. 0: no limit." },
	{ KEY("gateway", "max_connections_per_group", uint32, GATEWAY,
	      gateway.max_connections_per_group),
	  .default_value = "0", RANGE(0, CONFIG_LIMIT_MAX),
	  .help = "Users' streams one group carries at once, a SOCKS5 UDP association counting "
		  "as one; more are refused (SOCKS5 0x01, HTTP 503). 0: no limit." },
	{ KEY("gateway", "max_streams_per_tunnel", uint32, GATEWAY, gateway.max_streams_per_tunnel),
	  .default_value = "0", RANGE(0, CONFIG_LIMIT_MAX),
	  .help = "Streams one tunnel carries at once; a full tunnel gets no new stream "
		  "(another tunnel of the group does, if any). 0: no limit." },
	{ KEY("gateway", "max_clients", uint32, GATEWAY, gateway.max_clients), .default_value = "0",
	  RANGE(0, CONFIG_LIMIT_MAX),
	  .help = "Agents (client_ids) registered at once, all groups together; a new one "
		  "beyond it is refused with ERROR limit. 0: no limit (max_tunnels_per_group "
		  "still bounds each group)." },
	{ KEY("gateway", "max_tunnels_per_group", uint32, GATEWAY, gateway.max_tunnels_per_group),
	  .default_value = "0", RANGE(0, CONFIG_LIMIT_MAX),
	  .help = "Agents' tunnels one tenant may have registered at once: a group with its "
		  "own agent_password, or all the groups the shared [gateway] credential "
		  "admits, together. A tunnel beyond it (a new client_id or replica) is refused "
		  "with ERROR limit, one taking the place of its own stale replica is not. So "
		  "one tenant's agents, or a leaked agent credential, cannot take the "
		  "descriptors the others' agents need. 0: derived, half of the descriptors "
		  "kept for tunnels (RLIMIT_NOFILE / 32, at least 64: 625 with RLIMIT_NOFILE "
		  "20000)." },
	{ KEY("gateway", "fallback_to_default", bool, GATEWAY, gateway.fallback_to_default),
	  .default_value = "true",
	  .help = "A user whose group has no agent connected goes out through an agent of "
		  "the default group instead (the group-routing spec's fallback; a group whose "
		  "agents are all busy never does). A group with a [group.NAME] section never "
		  "falls back, whatever this says. false: no group falls back; its users get "
		  "SOCKS5 REP 0x03 / HTTP 503 \"no clients available in group 'NAME'\"." },

	LISTENER_KEYS("proxy.http", http, ":8080", config_check_http_username),
	/* 60 s: of the order of nginx's keepalive_timeout (75 s) and Squid's
	 * client_idle_pconn_timeout (2 min), well above the gap between a page's
	 * requests, while an idle connection holds a max_connections slot */
	{ KEY("proxy.http", "keepalive_timeout_ms", uint32, GATEWAY, http.keepalive_timeout_ms),
	  .default_value = "60000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_TIMEOUT_MAX_MS),
	  .help = "How long an HTTP connection kept alive after a response waits for the "
		  "next request before it is closed. Once the next request's first byte "
		  "arrives, the rest of its head must come within [gateway] "
		  "handshake_timeout_ms. The agent's connection to the origin kept for the "
		  "connection's next request (docs/operations.md, HTTP origin connections) "
		  "closes with it when the wait ends. A new value applies from the next "
		  "wait on." },
	/* off by default: with it, apctl's streams_total no longer counts one
	 * stream per HTTP request; 4 s is a good value (origin_pool.h) */
	{ KEY("proxy.http", "origin_pool_idle_ms", uint32, GATEWAY, http.origin_pool_idle_ms),
	  .default_value = "0", RANGE(0, CONFIG_TIMEOUT_MAX_MS),
	  .help = "HTTP forwarding (also [proxy.https]): how long the agent's connection to "
		  "an origin, idle after a user connection is done with it, is kept in the "
		  "gateway's origin pool for another connection of the same user to the "
		  "same origin (docs/operations.md, HTTP origin connections). 0: no pool, "
		  "a connection is reused only by the next request on its own user "
		  "connection. A new value applies to connections parked from then on." },
	LISTENER_KEYS("proxy.socks5", socks5, ":1080", config_check_socks5_username),
	LISTENER_KEYS("proxy.https", https, ":8443", config_check_http_username),
	{ KEY("proxy.https", "tls_cert", file, GATEWAY, https.tls_cert),
	  .example = "/etc/anyproxy/proxy.crt",
	  .help = "TLS certificate chain (PEM) the proxy presents to users; required with "
		  "listen_addr. Users' clients verify it, so it names the host they dial. "
		  "Re-read on SIGHUP: new connections get the new one." },
	{ KEY("proxy.https", "tls_key", file, GATEWAY, https.tls_key),
	  .example = "/etc/anyproxy/proxy.key", .private_file = true,
	  .help = "Private key (PEM) of tls_cert; required with listen_addr. Keep it readable "
		  "by its owner only (mode 0600 or 0400): the gateway warns at start otherwise." },

	{ KEY("client", "gateway_addr", addr_list, CLIENT, client.gateway_addr), .required = true,
	  .max = CONFIG_GATEWAYS_MAX, .check = check_dial_addrs,
	  .example = "gw1.example.com:8443, gw2.example.com:8443", .restart = true,
	  .help = "The gateways' tunnel addresses (host:port or [v6]:port), comma-separated or "
		  "on repeated lines; each listed once. The agent keeps replicas tunnels to "
		  "every one of them, each with its own reconnects and liveness, so any gateway "
		  "can route to this agent (docs/scaling.md)." },
	{ KEY("client", "gateway_tls_cert", file, CLIENT, client.gateway_tls_cert),
	  .required = true, .example = "/etc/anyproxy/gateway.crt",
	  .help = "Certificate (PEM) that the gateway's certificate must chain to: a CA, "
		  "or the gateway's self-signed certificate itself." },
	{ KEY("client", "gateway_server_name", string, CLIENT, client.gateway_server_name),
	  .check = check_server_name, .example = "gateway.example.com",
	  .help = "Name every gateway's certificate must carry (SNI and host name check); "
		  "when set it applies to all of gateway_addr. Empty: each gateway's own host "
		  "part in gateway_addr." },
	{ KEY("client", "egress_proxy", egress_proxy, CLIENT, client.egress_proxy),
	  .example = "http://proxy.example.com:3128",
	  .help = "HTTP proxy the agent must go through to reach the gateways, where the "
		  "network allows only HTTP egress: every tunnel is opened with CONNECT "
		  "gateway-host:port through it (HTTP Basic authentication when user:password "
		  "is given, percent-encoded as in a URL), then TLS to the gateway as usual; "
		  "the gateway's certificate and name are checked as without a proxy. The "
		  "password is never shown in errors or logs; keep the file mode 0600, or give "
		  "the whole value in the environment. A reload applies to the next dial; "
		  "tunnels that are up stay. Empty: the gateways are dialled directly." },
	{ KEY("client", "tls_cert", file, CLIENT, client.tls_cert),
	  .example = "/etc/anyproxy/agent.crt",
	  .help = "Client certificate (PEM) for mutual TLS; set together with tls_key." },
	{ KEY("client", "tls_key", file, CLIENT, client.tls_key),
	  .example = "/etc/anyproxy/agent.key", .private_file = true,
	  .help = "Private key (PEM) of tls_cert. Keep it readable by its owner only "
		  "(mode 0600 or 0400): the agent warns at start otherwise." },
	{ KEY("client", "client_id", string, CLIENT, client.client_id), .required = true,
	  .check = check_client_id, .example = "prod-client-001", .restart = true,
	  .help = "Name of this agent at the gateway: 1 to " CONFIG_ID_MAX_TEXT
		  " of A-Z a-z 0-9 . _ : -" },
	{ KEY("client", "group_id", string, CLIENT, client.group_id), .default_value = "",
	  .check = check_group_id, .example = "production", .restart = true,
	  .help = "Group this agent serves; users pick it with the proxy username "
		  "user.group-id. Empty: the default group. Up to " CONFIG_ID_MAX_TEXT " of "
		  "A-Z a-z 0-9 . _ : -" },
	{ KEY("client", "replicas", uint32, CLIENT, client.replicas), .default_value = "1",
	  RANGE(1, REPLICAS_MAX), .restart = true,
	  .help = "Number of parallel tunnels this agent keeps open to each gateway." },
	{ KEY("client", "workers", uint32, CLIENT, client.workers), .default_value = "0",
	  RANGE(0, CONFIG_CLIENT_WORKERS_MAX), .restart = true,
	  .help = "Threads carrying the tunnels, each with its own io_uring ring; tunnel i "
		  "(of gateways x replicas) runs on thread i % workers. 0: one per online "
		  "CPU. Never more than there are tunnels." },
	{ KEY("client", "auth_username", string, CLIENT, client.auth_username), .required = true,
	  .check = config_check_credential, .example = "gateway_user",
	  .help = "Username presented to the gateway (its [gateway] auth_username)." },
	{ KEY("client", "auth_password", secret, CLIENT, client.auth_password), .required = true,
	  .check = config_check_credential, .help = "Password presented to the gateway." },
	{ KEY("client", "allowed_hosts", list, CLIENT, client.allowed_hosts),
	  .example = "api.example.com, 10.1.0.0/16", .item_check = CONFIG_CHECK_HOST_PATTERN,
	  .help = "Targets this agent may connect to. Empty: every target that "
		  "forbidden_hosts does not forbid." },
	{ KEY("client", "forbidden_hosts", list, CLIENT, client.forbidden_hosts),
	  .example = "@loopback, @private, @local", .item_check = CONFIG_CHECK_HOST_PATTERN,
	  .help = "Targets this agent must never connect to; checked on the name and on "
		  "every address it resolves to, and wins over allowed_hosts. Production: "
		  "@loopback, @private, @local (docs/acl.md)." },
	{ KEY("client", "hosts_file", file, CLIENT, client.hosts_file),
	  .example = "/etc/anyproxy/hosts",
	  .help = "Extra hosts file (/etc/hosts format) consulted before the system "
		  "resolver for target names; re-read on SIGHUP." },
	{ KEY("client", "handshake_timeout_ms", uint32, CLIENT, client.handshake_timeout_ms),
	  .default_value = "10000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_TIMEOUT_MAX_MS),
	  .help = "Time allowed for the TLS handshake and HELLO exchange with the gateway." },
	{ KEY("client", "ping_interval_ms", uint32, CLIENT, client.ping_interval_ms),
	  .default_value = "10000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_PING_MAX_MS),
	  .help = "How often the agent pings each tunnel." },
	{ KEY("client", "ping_timeout_ms", uint32, CLIENT, client.ping_timeout_ms),
	  .default_value = "30000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_PING_MAX_MS),
	  .help = "A tunnel silent for this long is closed and dialled again. Must be "
		  "greater than ping_interval_ms." },
	{ KEY("client", "reconnect_initial_delay_ms", uint32, CLIENT,
	      client.reconnect_initial_delay_ms),
	  .default_value = "500", RANGE(CONFIG_RECONNECT_MIN_MS, CONFIG_RECONNECT_MAX_MS),
	  .help = "First wait before dialling the gateway again; it doubles (with jitter) "
		  "after each failure." },
	{ KEY("client", "reconnect_max_delay_ms", uint32, CLIENT, client.reconnect_max_delay_ms),
	  .default_value = "30000", RANGE(CONFIG_RECONNECT_MIN_MS, CONFIG_RECONNECT_MAX_MS),
	  .help = "Longest wait between two dials; at least reconnect_initial_delay_ms." },
	{ KEY("client", "shutdown_timeout_ms", uint32, CLIENT, client.shutdown_timeout_ms),
	  .default_value = "30000", RANGE(0, CONFIG_TIMEOUT_MAX_MS),
	  .help = "On SIGTERM, how long open streams may go on before they are cut." },
	{ KEY("client", "connect_timeout_ms", uint32, CLIENT, client.connect_timeout_ms),
	  .default_value = "10000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_TIMEOUT_MAX_MS),
	  .help = "Time allowed to connect to a target (DNS included) before the user is "
		  "told it timed out." },

	{ KEY("log", "level", log_level, BOTH, log.level), .default_value = "info",
	  .help = "Lowest level written: debug, info, warn or error." },
	{ KEY("log", "format", log_format, BOTH, log.format), .default_value = "text",
	  .help = "text (key=value lines) or json (one object per line)." },
	{ KEY("log", "output", string, BOTH, log.output), .default_value = "stderr",
	  .check = check_not_empty,
	  .help = "stderr, stdout, or the path of a file to append to (created with "
		  "mode 0640)." },

	{ KEY("control", "socket", string, GATEWAY, control.socket), .restart = true,
	  .default_value = "/run/anyproxy/gateway.sock", .check = check_socket_path,
	  .help = "Path of the unix socket apctl connects to." },
	{ KEY("control", "socket_mode", file_mode, GATEWAY, control.socket_mode), .restart = true,
	  .default_value = "0660", RANGE(0600, 0777),
	  .help = "Permission bits of the control socket file. Whoever may write to it may "
		  "run apctl's read-only commands (clients, groups, version); drain and "
		  "undrain also need root, the gateway's user or socket_group "
		  "(docs/apctl.md). 0666 lets every local user read." },
	{ KEY("control", "socket_group", string, GATEWAY, control.socket_group), .restart = true,
	  .check = check_unix_group, .example = "anyproxy-admin",
	  .help = "Group (name or number) the control socket file is given; its members "
		  "may connect (with socket_mode's group bits) and change state (drain, "
		  "undrain). Unset: the gateway's own group. The gateway refuses to start "
		  "when the group does not exist." },

	{ KEY("metrics", "listen_addr", addr, BOTH, metrics.listen_addr), .restart = true,
	  .example = "127.0.0.1:9464",
	  .help = "Address of the metrics endpoint: host:port, [v6]:port or :port for all "
		  "addresses. It has no authentication: bind it to a trusted address. Empty: "
		  "no endpoint." },
};

#undef KEY
#undef RANGE
#undef LISTENER_KEYS

/* The cross-key checks of validate_gateway() and validate_client()
 * (config_load.c), in words, for docs/config.md. Keep the two in step. */
const char *const config_rules[] = {
	"`ping_timeout_ms` must be greater than `ping_interval_ms` (both programs).",
	"`[proxy.http]`, `[proxy.socks5]` and `[proxy.https]`: `auth_username` and "
	"`auth_password` are set together or not at all.",
	"`[proxy.https]`: `listen_addr` needs `tls_cert` and `tls_key`.",
	"The gateway's listeners (`[gateway]`, `[proxy.http]`, `[proxy.socks5]`, "
	"`[proxy.https]`) must not "
	"share a port on overlapping addresses.",
	"`[client]` `reconnect_max_delay_ms` must be at least `reconnect_initial_delay_ms`.",
	"`[client]` `tls_cert` and `tls_key` are set together or not at all.",
	"`[group.NAME]`: `auth_password` is required; `agent_username` needs "
	"`agent_password`.",
	"Every file key that is set must name a readable file; this is checked after "
	"the environment is applied.",
	"A secret key (every key named `*password`, `[group.NAME]` ones included) must "
	"not be empty where it is given: an empty value in the file or in the environment "
	"is an error, unless the environment then gives it a value. Leave an optional "
	"secret out to leave it unset.",
	"The configuration file and every private key file (`tls_key`) should be readable "
	"by their owner only: at start, each one that group or others may read is logged "
	"at WARN with its mode (not an error).",
};

const size_t config_nsections = ARRAY_SIZE(config_sections);
const size_t config_nkeys = ARRAY_SIZE(config_keys);
_Static_assert(ARRAY_SIZE(config_keys) <= CONFIG_KEYS_MAX, "raise CONFIG_KEYS_MAX");
const size_t config_nrules = ARRAY_SIZE(config_rules);

const char *config_program_name(enum config_program program)
{
	return program == CONFIG_GATEWAY ? "anyproxy-gateway" : "anyproxy-client";
}

/* Every caller names a field that has a row, so a miss is a bug. */
const struct config_key *config_key_by_offset(size_t offset)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		if (config_keys[i].offset == offset)
			return &config_keys[i];
	}
	abort();
}

#define CONFIG_SECRET_NAME_SUFFIX "password"

bool config_secret_key_name(const char *name)
{
	size_t len = strlen(name), suffix = strlen(CONFIG_SECRET_NAME_SUFFIX);

	return len >= suffix && strcmp(name + len - suffix, CONFIG_SECRET_NAME_SUFFIX) == 0;
}

void config_env_name(const struct config_key *key, char out[CONFIG_ENV_NAME_BYTES])
{
	size_t n = 0;
	const char *parts[] = { key->section, "_", key->name };

	for (size_t p = 0; p < ARRAY_SIZE(parts); p++) {
		for (const char *c = parts[p]; *c && n + 1 < CONFIG_ENV_NAME_BYTES; c++)
			out[n++] = *c == '.' ? '_' : (char)toupper((unsigned char)*c);
	}
	out[n] = '\0';
}

/* ---- per-key checks (config_key_check_fn) ---- */

static int check_id(const char *id, size_t min_len, char *why, size_t whylen)
{
	size_t len = strlen(id);

	if (len < min_len || len > CONFIG_ID_MAX_BYTES) {
		snprintf(why, whylen, "must be %zu to %d characters long (is %zu)", min_len,
			 CONFIG_ID_MAX_BYTES, len);
		return -EINVAL;
	}
	for (const char *p = id + grammar_id_span(id, len); *p;) {
		if (*p >= ' ' && *p < 0x7f)
			snprintf(why, whylen, "may contain only A-Z a-z 0-9 . _ : - (found '%c')",
				 *p);
		else
			snprintf(why, whylen,
				 "may contain only A-Z a-z 0-9 . _ : - (found byte 0x%02x)",
				 (unsigned char)*p);
		return -EINVAL;
	}
	return 0;
}

static int check_client_id(const void *field, char *why, size_t whylen)
{
	const char *id = *(char *const *)field;

	return check_id(id ? id : "", 1, why, whylen);
}

static int check_group_id(const void *field, char *why, size_t whylen)
{
	return check_id(*(char *const *)field, 0, why, whylen);
}

int config_check_credential(const void *field, char *why, size_t whylen)
{
	const char *s = *(char *const *)field;

	if (s && strlen(s) > CONFIG_CREDENTIAL_MAX_BYTES) {
		snprintf(why, whylen, "longer than %d bytes", CONFIG_CREDENTIAL_MAX_BYTES);
		return -EINVAL;
	}
	return 0;
}

/* Proxy usernames: the text after the first '.' of what users send selects
 * the group, so a configured name with a '.' could never match. */
int config_check_socks5_username(const void *field, char *why, size_t whylen)
{
	const char *s = *(char *const *)field;

	if (s && strchr(s, '.')) {
		snprintf(why, whylen,
			 "must not contain '.': users send username.group-id and only the "
			 "part before the first '.' is the username");
		return -EINVAL;
	}
	return config_check_credential(field, why, whylen);
}

/* HTTP Basic credentials are "user:password": the user part has no ':'. */
int config_check_http_username(const void *field, char *why, size_t whylen)
{
	const char *s = *(char *const *)field;

	if (s && strchr(s, ':')) {
		snprintf(why, whylen,
			 "must not contain ':' (HTTP Basic authentication "
			 "separates username and password with it)");
		return -EINVAL;
	}
	return config_check_socks5_username(field, why, whylen);
}

static int check_listen_addr(const void *field, char *why, size_t whylen)
{
	if (!((const struct config_addr *)field)->set) {
		snprintf(why, whylen, "must not be empty: agents connect to this address");
		return -EINVAL;
	}
	return 0;
}

static int check_dial_addrs(const void *field, char *why, size_t whylen)
{
	const struct config_addr_list *list = field;

	for (size_t i = 0; i < list->count; i++) {
		if (!list->items[i].host[0]) {
			snprintf(why, whylen,
				 "needs a host: the agent dials it (host:port or "
				 "[v6]:port)");
			return -EINVAL;
		}
	}
	return 0;
}

/* A DNS name or an IP literal (without brackets); unset means "derive". */
static int check_server_name(const void *field, char *why, size_t whylen)
{
	const char *s = *(char *const *)field;
	const char *problem;

	if (!s)
		return 0;
	problem = strchr(s, ':') ? config_ipv6_problem(s, strlen(s))
				 : config_hostname_problem(s, strlen(s));
	if (problem) {
		snprintf(why, whylen, "%s", problem);
		return -EINVAL;
	}
	return 0;
}

static int check_not_empty(const void *field, char *why, size_t whylen)
{
	const char *s = *(char *const *)field;

	if (!s[0]) {
		snprintf(why, whylen, "must not be empty");
		return -EINVAL;
	}
	return 0;
}

/* The gateway resolves the name at start (no lookup here: the check also
 * runs on reload, in the event loop); this refuses what no group file can
 * hold. */
static int check_unix_group(const void *field, char *why, size_t whylen)
{
	const char *s = *(char *const *)field;

	if (!s)
		return 0;
	if (strlen(s) > CONFIG_UNIX_GROUP_MAX_BYTES) {
		snprintf(why, whylen, "longer than %d bytes", CONFIG_UNIX_GROUP_MAX_BYTES);
		return -EINVAL;
	}
	for (const char *p = s; *p; p++) {
		if ((unsigned char)*p <= ' ' || *p == ':' || *p == 0x7f) {
			snprintf(why, whylen,
				 "not a group name: it holds a space, ':' or a "
				 "control character");
			return -EINVAL;
		}
	}
	return check_not_empty(field, why, whylen);
}

static int check_socket_path(const void *field, char *why, size_t whylen)
{
	const char *s = *(char *const *)field;
	struct sockaddr_un unix_addr;

	if (strlen(s) >= sizeof(unix_addr.sun_path)) {
		snprintf(why, whylen, "longer than %zu bytes, the limit of a unix socket path",
			 sizeof(unix_addr.sun_path) - 1);
		return -EINVAL;
	}
	return check_not_empty(field, why, whylen);
}
