/*
 * config.c — the INI configuration of both programs (see config.h).
 *
 * Everything about a key lives in one row of config_keys[]: where it is
 * allowed, its type and limits, its default, whether it is required, the
 * struct field it fills and its help text. Parsing, environment overrides,
 * validation, docs/config.md and configs/<program>.reference.ini are all
 * driven by that table. Code that knows particular keys is limited to the
 * check functions named in the table and the cross-key checks of
 * validate_gateway() / validate_client(), each described in config_rules[].
 *
 * Loading order: table defaults, then the file (through inih), then the
 * environment, then validation. The first error stops the load and is
 * reported as one line naming where the value came from:
 *   gw.ini:12: [gateway] tls_cert: cannot read '/x.crt': No such file or directory
 *   gw.ini: [gateway] tls_key: required key is missing
 *   environment CLIENT_GROUP_ID: ...
 * Error messages never contain the value of a secret key.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/config.h"
#include "anyproxy/grammar.h"
#include "anyproxy/log.h"

/* Longest line of a configuration file, without its line end. inih would
 * silently cut long lines; we refuse them instead. */
#define CONFIG_LINE_MAX_BYTES 1024
/* What inih's line buffer must hold: a longest line, "\r\n" and the NUL. */
#define CONFIG_INIH_LINE_BYTES (CONFIG_LINE_MAX_BYTES + 3)
/* Items of one list key, all sources together. */
#define CONFIG_LIST_MAX_ITEMS 1024
/* client_id and group_id travel in the tunnel HELLO and in log lines. */
#define CONFIG_ID_MAX_BYTES ID_MAX_BYTES
/* A DNS name (RFC 1035) and one label of it. */
#define CONFIG_HOST_MAX_BYTES 253
#define CONFIG_LABEL_MAX_BYTES 63
/* Usernames and passwords: the SOCKS5 limit (RFC 1929), used for all. */
#define CONFIG_CREDENTIAL_MAX_BYTES 255
/* How much of a bad value an error message repeats. */
#define CONFIG_SHOWN_VALUE_MAX_BYTES 200
#define CONFIG_GROUP_HELP "Per-group credentials: a [group.NAME] section gives the group NAME its own users' password (and optionally user name), and optionally its own agent credential. Users asking for that group (user name user.NAME) must give auth_username/auth_password instead of the listener's, so one tenant cannot pick another tenant's agents. With agent_password, only agents presenting agent_username/agent_password join NAME (and own its client_ids); the shared [gateway] credential no longer can. Groups without a section use the listener's credentials for users and the shared [gateway] credential for agents (unless [gateway] require_group_section is on). Sections may repeat for any number of groups; they reload on SIGHUP (agents whose credential was removed or changed are then closed); they have no environment overrides."

/* A list item starting with this is not split at commas (host regexes). */
#define CONFIG_LIST_RAW_PREFIX '~'
#define SHOWN_BYTES (CONFIG_SHOWN_VALUE_MAX_BYTES + 4) /* "..." and NUL */
/* Environment variable names derived from section and key. */
#define CONFIG_ENV_NAME_BYTES 64
/* One port number. */
#define CONFIG_PORT_MAX 65535
/* Width of the help comments in the reference INI files. */
#define CONFIG_EXAMPLE_WIDTH 78

/* Limits of the timing keys, in milliseconds. */
#define CONFIG_TIMEOUT_MIN_MS 100
#define CONFIG_TIMEOUT_MAX_MS 600000      /* 10 minutes */
#define CONFIG_PING_MAX_MS 3600000        /* 1 hour */
#define CONFIG_IDLE_MAX_MS 86400000       /* 1 day */
#define CONFIG_LIMIT_MAX 1000000          /* connection and stream counts */
#define CONFIG_RECONNECT_MIN_MS 10
#define CONFIG_RECONNECT_MAX_MS 3600000   /* 1 hour */
#define CONFIG_REPLICAS_MAX 64

/* A numeric constant above as text, for fixed messages: XSTR(CONFIG_PORT_MAX). */
#define STR(x) #x
#define XSTR(x) STR(x)

#define GATEWAY CONFIG_GATEWAY
#define CLIENT CONFIG_CLIENT
#define BOTH (CONFIG_GATEWAY | CONFIG_CLIENT)

enum key_type {
	KEY_STRING,
	KEY_SECRET,     /* a string never shown in errors, docs or examples */
	KEY_BOOL,
	KEY_UINT32,     /* within [min, max] */
	KEY_ADDR,       /* struct config_addr */
	KEY_FILE,       /* a path that must name a readable file */
	KEY_LIST,       /* struct config_list */
	KEY_LOG_LEVEL,  /* int holding enum log_level */
	KEY_LOG_FORMAT, /* enum log_format */
};

/* A per-key check run after all sources are applied: 0, or -EINVAL with a
 * reason written to why (without the value if the key is secret). */
typedef int (*key_check_fn)(const void *field, char *why, size_t whylen);

struct config_key {
	const char *section;
	const char *name;
	enum key_type type;
	unsigned programs;         /* enum config_program bits */
	size_t offset;             /* of the field in struct config */
	const char *default_value; /* parsed like a file value; NULL: none */
	bool required;
	uint32_t min, max;         /* KEY_UINT32 only */
	key_check_fn check;        /* NULL: the type's parsing is enough */
	const char *example;       /* reference-INI value when there is no default */
	const char *help;
	bool restart;              /* SIGHUP cannot change it: needs a restart */
	/* KEY_LIST: checks each item as it is read (so errors name its line)
	 * with the function registered for this check (config_register_check) */
	enum config_check item_check;
	/* KEY_FILE holding a private key: warned about at start when group or
	 * others may read it (config_warn_exposed_files) */
	bool private_file;
};

struct config_section {
	const char *name;
	unsigned programs;
	const char *help;
};

static int check_client_id(const void *field, char *why, size_t whylen);
static int check_group_id(const void *field, char *why, size_t whylen);
static int check_credential(const void *field, char *why, size_t whylen);
static int check_http_username(const void *field, char *why, size_t whylen);
static int check_socks5_username(const void *field, char *why, size_t whylen);
static int check_socket_path(const void *field, char *why, size_t whylen);
static int check_listen_addr(const void *field, char *why, size_t whylen);
static int check_dial_addr(const void *field, char *why, size_t whylen);
static int check_server_name(const void *field, char *why, size_t whylen);
static int check_not_empty(const void *field, char *why, size_t whylen);
struct load_ctx;
static int open_group_section(struct load_ctx *ctx, const char *name, size_t len);

static const struct config_section config_sections[] = {
	{ "gateway", GATEWAY, "The tunnel listener that client agents connect to over TLS." },
	{ "proxy.http", GATEWAY,
	  "The HTTP proxy listener (plain HTTP and CONNECT). Disabled while listen_addr is empty." },
	{ "proxy.socks5", GATEWAY, "The SOCKS5 proxy listener. Disabled while listen_addr is empty." },
	{ "client", CLIENT, "The agent: which gateway it dials, who it is, what it may reach." },
	{ "log", BOTH, "Where and how both programs write their log." },
	{ "control", GATEWAY, "The local control socket that apctl talks to." },
};

#define KEY(sec, key, key_type, progs, field)                             \
	.section = (sec), .name = (key), .type = (key_type), .programs = (progs), \
	.offset = offsetof(struct config, field)
#define RANGE(lo, hi) .min = (lo), .max = (hi)

#define LISTENER_KEYS(sec, field, example_addr, username_check)                        \
	{ KEY(sec, "listen_addr", KEY_ADDR, GATEWAY, field.listen_addr),               \
	  .example = (example_addr), .restart = true,                                  \
	  .help = "Address to listen on: host:port, [v6]:port or :port for all "       \
		  "addresses. Empty: this listener is off." },                         \
	{ KEY(sec, "auth_username", KEY_STRING, GATEWAY, field.auth_username),         \
	  .check = (username_check), .example = "proxy_user",                          \
	  .help = "Username users must give. A user selects a group by sending "       \
		  "username.group-id; only the part before the first '.' is checked, " \
		  "so this name cannot contain '.'. Empty: no authentication." },      \
	{ KEY(sec, "auth_password", KEY_SECRET, GATEWAY, field.auth_password),         \
	  .check = check_credential,                                                   \
	  .help = "Password users must give with auth_username. For no authentication "  \
		  "leave both keys out: an empty password is refused." }

static const struct config_key config_keys[] = {
	{ KEY("gateway", "listen_addr", KEY_ADDR, GATEWAY, gateway.listen_addr),
	  .default_value = ":8443", .check = check_listen_addr, .restart = true,
	  .help = "Address of the tunnel listener that agents connect to: host:port, "
		  "[v6]:port or :port for all addresses." },
	{ KEY("gateway", "tls_cert", KEY_FILE, GATEWAY, gateway.tls_cert), .required = true,
	  .example = "/etc/anyproxy/server.crt",
	  .help = "TLS certificate chain (PEM) the gateway presents to agents." },
	{ KEY("gateway", "tls_key", KEY_FILE, GATEWAY, gateway.tls_key), .required = true,
	  .example = "/etc/anyproxy/server.key", .private_file = true,
	  .help = "Private key (PEM) of tls_cert. Keep it readable by its owner only "
		  "(mode 0600 or 0400): the gateway warns at start otherwise." },
	{ KEY("gateway", "client_ca", KEY_FILE, GATEWAY, gateway.client_ca),
	  .example = "/etc/anyproxy/agents-ca.crt",
	  .help = "CA certificate (PEM) for mutual TLS: when set, every agent must present "
		  "a certificate signed by it (as well as its password). A certificate with "
		  "URI SANs anyproxy://agent/GROUP/CLIENT joins only as one of those "
		  "pairs. Empty: agents authenticate with their password only." },
	{ KEY("gateway", "auth_username", KEY_STRING, GATEWAY, gateway.auth_username),
	  .required = true, .check = check_credential, .example = "gateway_user",
	  .help = "Username agents must present when they connect (the agents' "
		  "[client] auth_username)." },
	{ KEY("gateway", "auth_password", KEY_SECRET, GATEWAY, gateway.auth_password),
	  .required = true, .check = check_credential,
	  .help = "Password agents must present with auth_username. This shared credential "
		  "joins only groups that have no agent_password of their own ([group.NAME])." },
	{ KEY("gateway", "require_group_section", KEY_BOOL, GATEWAY,
	      gateway.require_group_section),
	  .default_value = "false",
	  .help = "true: agents may join only groups that have a [group.NAME] section; an "
		  "agent asking for any other group, the default group \"\" included (it "
		  "cannot have a section), is refused with ERROR auth. false: any group "
		  "without agent_password takes agents with the shared credential." },
	{ KEY("gateway", "handshake_timeout_ms", KEY_UINT32, GATEWAY, gateway.handshake_timeout_ms),
	  .default_value = "10000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_TIMEOUT_MAX_MS),
	  .help = "Time allowed for a TLS, SOCKS5 or HTTP handshake before the connection "
		  "is closed." },
	{ KEY("gateway", "ping_interval_ms", KEY_UINT32, GATEWAY, gateway.ping_interval_ms),
	  .default_value = "10000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_PING_MAX_MS),
	  .help = "How often the gateway pings each tunnel." },
	{ KEY("gateway", "ping_timeout_ms", KEY_UINT32, GATEWAY, gateway.ping_timeout_ms),
	  .default_value = "30000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_PING_MAX_MS),
	  .help = "A tunnel silent for this long is declared dead and its streams are "
		  "reset. Must be greater than ping_interval_ms." },
	{ KEY("gateway", "idle_timeout_ms", KEY_UINT32, GATEWAY, gateway.idle_timeout_ms),
	  .default_value = "300000", RANGE(0, CONFIG_IDLE_MAX_MS),
	  .help = "A proxied connection with no data in either direction for this long is "
		  "closed (a connection busy in one direction only is not idle). 0: never." },
	{ KEY("gateway", "shutdown_timeout_ms", KEY_UINT32, GATEWAY, gateway.shutdown_timeout_ms),
	  .default_value = "30000", RANGE(0, CONFIG_TIMEOUT_MAX_MS),
	  .help = "On SIGTERM, how long open connections may go on before they are cut." },
	{ KEY("gateway", "max_connections", KEY_UINT32, GATEWAY, gateway.max_connections),
	  .default_value = "0", RANGE(0, CONFIG_LIMIT_MAX),
	  .help = "Users' connections the gateway serves at once; more are refused (SOCKS5 "
		  "05 FF, HTTP 503). 0: derived from the open-file limit, keeping a reserve "
		  "for agents' tunnels, their handshakes and apctl: soft RLIMIT_NOFILE minus "
		  "(64 + max_handshakes + RLIMIT_NOFILE/16), but at least half of "
		  "RLIMIT_NOFILE. The value in force is logged at start and on reload." },
	{ KEY("gateway", "max_handshakes", KEY_UINT32, GATEWAY, gateway.max_handshakes),
	  .default_value = "1024", RANGE(1, CONFIG_LIMIT_MAX),
	  .help = "Connections in their handshake at once, counted separately on the tunnel "
		  "port (TLS + HELLO) and on the proxy ports together (SOCKS5 or HTTP until the "
		  "user's request is authenticated), so a flood of one cannot lock out the other. "
		  "At the bound that side stops accepting: newcomers wait in the kernel's listen "
		  "backlog, unanswered, and are served once a slot frees (a burst is slowed, "
		  "never refused). A handshake takes a round trip or two, so 1024 at once is far "
		  "above what real agents and users need, while 1024 TLS sessions in progress "
		  "cost the gateway at most about 50 MiB." },
	{ KEY("gateway", "max_connections_per_group", KEY_UINT32, GATEWAY,
	      gateway.max_connections_per_group),
	  .default_value = "0", RANGE(0, CONFIG_LIMIT_MAX),
	  .help = "Users' streams one group carries at once; more are refused (SOCKS5 0x01, "
		  "HTTP 503). 0: no limit." },
	{ KEY("gateway", "max_streams_per_tunnel", KEY_UINT32, GATEWAY,
	      gateway.max_streams_per_tunnel),
	  .default_value = "0", RANGE(0, CONFIG_LIMIT_MAX),
	  .help = "Streams one tunnel carries at once; a full tunnel gets no new stream "
		  "(another tunnel of the group does, if any). 0: no limit." },
	{ KEY("gateway", "max_clients", KEY_UINT32, GATEWAY, gateway.max_clients),
	  .default_value = "0", RANGE(0, CONFIG_LIMIT_MAX),
	  .help = "Agents (client_ids) registered at once; a new one beyond it is refused "
		  "with ERROR limit. 0: no limit." },
	{ KEY("gateway", "fallback_to_default", KEY_BOOL, GATEWAY, gateway.fallback_to_default),
	  .default_value = "true",
	  .help = "A user whose group has no agent connected goes out through an agent of "
		  "the default group instead (the group-routing spec's fallback; a group whose "
		  "agents are all busy never does). A group with a [group.NAME] section never "
		  "falls back, whatever this says. false: no group falls back; its users get "
		  "SOCKS5 REP 0x03 / HTTP 503 \"no clients available in group 'NAME'\"." },

	LISTENER_KEYS("proxy.http", http, ":8080", check_http_username),
	LISTENER_KEYS("proxy.socks5", socks5, ":1080", check_socks5_username),

	{ KEY("client", "gateway_addr", KEY_ADDR, CLIENT, client.gateway_addr), .required = true,
	  .check = check_dial_addr, .example = "gateway.example.com:8443",
	  .help = "The gateway's tunnel address: host:port or [v6]:port." },
	{ KEY("client", "gateway_tls_cert", KEY_FILE, CLIENT, client.gateway_tls_cert),
	  .required = true, .example = "/etc/anyproxy/gateway.crt",
	  .help = "Certificate (PEM) that the gateway's certificate must chain to: a CA, "
		  "or the gateway's self-signed certificate itself." },
	{ KEY("client", "gateway_server_name", KEY_STRING, CLIENT, client.gateway_server_name),
	  .check = check_server_name, .example = "gateway.example.com",
	  .help = "Name the gateway's certificate must carry (SNI and host name check). "
		  "Empty: the host part of gateway_addr." },
	{ KEY("client", "tls_cert", KEY_FILE, CLIENT, client.tls_cert),
	  .example = "/etc/anyproxy/agent.crt",
	  .help = "Client certificate (PEM) for mutual TLS; set together with tls_key." },
	{ KEY("client", "tls_key", KEY_FILE, CLIENT, client.tls_key),
	  .example = "/etc/anyproxy/agent.key", .private_file = true,
	  .help = "Private key (PEM) of tls_cert. Keep it readable by its owner only "
		  "(mode 0600 or 0400): the agent warns at start otherwise." },
	{ KEY("client", "client_id", KEY_STRING, CLIENT, client.client_id), .required = true,
	  .check = check_client_id, .example = "prod-client-001", .restart = true,
	  .help = "Name of this agent at the gateway: 1 to " XSTR(CONFIG_ID_MAX_BYTES)
		  " of A-Z a-z 0-9 . _ : -" },
	{ KEY("client", "group_id", KEY_STRING, CLIENT, client.group_id), .default_value = "",
	  .check = check_group_id, .example = "production", .restart = true,
	  .help = "Group this agent serves; users pick it with the proxy username "
		  "user.group-id. Empty: the default group. Up to " XSTR(CONFIG_ID_MAX_BYTES) " of "
		  "A-Z a-z 0-9 . _ : -" },
	{ KEY("client", "replicas", KEY_UINT32, CLIENT, client.replicas), .default_value = "1",
	  RANGE(1, CONFIG_REPLICAS_MAX), .restart = true,
	  .help = "Number of parallel tunnels this agent keeps open to the gateway." },
	{ KEY("client", "auth_username", KEY_STRING, CLIENT, client.auth_username),
	  .required = true, .check = check_credential, .example = "gateway_user",
	  .help = "Username presented to the gateway (its [gateway] auth_username)." },
	{ KEY("client", "auth_password", KEY_SECRET, CLIENT, client.auth_password),
	  .required = true, .check = check_credential,
	  .help = "Password presented to the gateway." },
	{ KEY("client", "allowed_hosts", KEY_LIST, CLIENT, client.allowed_hosts),
	  .example = "api.example.com, 10.1.0.0/16", .item_check = CONFIG_CHECK_HOST_PATTERN,
	  .help = "Targets this agent may connect to. Empty: every target that "
		  "forbidden_hosts does not forbid." },
	{ KEY("client", "forbidden_hosts", KEY_LIST, CLIENT, client.forbidden_hosts),
	  .example = "@loopback, @private, @local", .item_check = CONFIG_CHECK_HOST_PATTERN,
	  .help = "Targets this agent must never connect to; checked on the name and on "
		  "every address it resolves to, and wins over allowed_hosts. Production: "
		  "@loopback, @private, @local (docs/acl.md)." },
	{ KEY("client", "hosts_file", KEY_FILE, CLIENT, client.hosts_file),
	  .example = "/etc/anyproxy/hosts",
	  .help = "Extra hosts file (/etc/hosts format) consulted before the system "
		  "resolver for target names; re-read on SIGHUP." },
	{ KEY("client", "handshake_timeout_ms", KEY_UINT32, CLIENT, client.handshake_timeout_ms),
	  .default_value = "10000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_TIMEOUT_MAX_MS),
	  .help = "Time allowed for the TLS handshake and HELLO exchange with the gateway." },
	{ KEY("client", "ping_interval_ms", KEY_UINT32, CLIENT, client.ping_interval_ms),
	  .default_value = "10000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_PING_MAX_MS),
	  .help = "How often the agent pings each tunnel." },
	{ KEY("client", "ping_timeout_ms", KEY_UINT32, CLIENT, client.ping_timeout_ms),
	  .default_value = "30000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_PING_MAX_MS),
	  .help = "A tunnel silent for this long is closed and dialled again. Must be "
		  "greater than ping_interval_ms." },
	{ KEY("client", "reconnect_initial_delay_ms", KEY_UINT32, CLIENT,
	      client.reconnect_initial_delay_ms),
	  .default_value = "500", RANGE(CONFIG_RECONNECT_MIN_MS, CONFIG_RECONNECT_MAX_MS),
	  .help = "First wait before dialling the gateway again; it doubles (with jitter) "
		  "after each failure." },
	{ KEY("client", "reconnect_max_delay_ms", KEY_UINT32, CLIENT,
	      client.reconnect_max_delay_ms),
	  .default_value = "30000", RANGE(CONFIG_RECONNECT_MIN_MS, CONFIG_RECONNECT_MAX_MS),
	  .help = "Longest wait between two dials; at least reconnect_initial_delay_ms." },
	{ KEY("client", "shutdown_timeout_ms", KEY_UINT32, CLIENT, client.shutdown_timeout_ms),
	  .default_value = "30000", RANGE(0, CONFIG_TIMEOUT_MAX_MS),
	  .help = "On SIGTERM, how long open streams may go on before they are cut." },
	{ KEY("client", "connect_timeout_ms", KEY_UINT32, CLIENT, client.connect_timeout_ms),
	  .default_value = "10000", RANGE(CONFIG_TIMEOUT_MIN_MS, CONFIG_TIMEOUT_MAX_MS),
	  .help = "Time allowed to connect to a target (DNS included) before the user is "
		  "told it timed out." },

	{ KEY("log", "level", KEY_LOG_LEVEL, BOTH, log.level), .default_value = "info",
	  .help = "Lowest level written: debug, info, warn or error." },
	{ KEY("log", "format", KEY_LOG_FORMAT, BOTH, log.format), .default_value = "text",
	  .help = "text (key=value lines) or json (one object per line)." },
	{ KEY("log", "output", KEY_STRING, BOTH, log.output), .default_value = "stderr",
	  .check = check_not_empty,
	  .help = "stderr, stdout, or the path of a file to append to (created with "
		  "mode 0640)." },

	{ KEY("control", "socket", KEY_STRING, GATEWAY, control.socket), .restart = true,
	  .default_value = "/run/anyproxy/gateway.sock", .check = check_socket_path,
	  .help = "Path of the unix socket apctl connects to." },
};

#undef KEY
#undef RANGE
#undef LISTENER_KEYS

/* The cross-key checks of validate_gateway() and validate_client(), in
 * words, for docs/config.md. Keep the two in step. */
static const char *const config_rules[] = {
	"`ping_timeout_ms` must be greater than `ping_interval_ms` (both programs).",
	"`[proxy.http]` and `[proxy.socks5]`: `auth_username` and `auth_password` are set "
	"together or not at all.",
	"The gateway's listeners (`[gateway]`, `[proxy.http]`, `[proxy.socks5]`) must not "
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

static const char *program_name(enum config_program program)
{
	return program == CONFIG_GATEWAY ? "anyproxy-gateway" : "anyproxy-client";
}

static void *key_field(struct config *cfg, const struct config_key *key)
{
	return (char *)cfg + key->offset;
}

static size_t key_index(const struct config_key *key)
{
	return (size_t)(key - config_keys);
}

/* The row that fills the field at offset; every caller names a field that
 * has a row, so a miss is a bug in this file. */
static const struct config_key *key_by_offset(size_t offset)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		if (config_keys[i].offset == offset)
			return &config_keys[i];
	}
	abort();
}

#define KEY_OF(field) key_by_offset(offsetof(struct config, field))

/* The one rule for which keys are secrets: every key whose name ends in
 * "password", in the table (where the type must then be KEY_SECRET, checked
 * at every load) and in [group.NAME] sections alike. A secret is never
 * shown in messages and must not be empty where it is given. */
#define CONFIG_SECRET_NAME_SUFFIX "password"
#define CONFIG_EMPTY_SECRET_WHY                                             \
	"empty secret: an empty password is refused (give a value, or leave " \
	"the key out where it is optional)"

static bool secret_key_name(const char *name)
{
	size_t len = strlen(name), suffix = strlen(CONFIG_SECRET_NAME_SUFFIX);

	return len >= suffix && strcmp(name + len - suffix, CONFIG_SECRET_NAME_SUFFIX) == 0;
}

/* SECTION_KEY in upper case, '.' turned into '_': PROXY_HTTP_LISTEN_ADDR. */
static void env_name(const struct config_key *key, char out[CONFIG_ENV_NAME_BYTES])
{
	size_t n = 0;
	const char *parts[] = { key->section, "_", key->name };

	for (size_t p = 0; p < ARRAY_SIZE(parts); p++) {
		for (const char *c = parts[p]; *c && n + 1 < CONFIG_ENV_NAME_BYTES; c++)
			out[n++] = *c == '.' ? '_' : (char)toupper((unsigned char)*c);
	}
	out[n] = '\0';
}

/* A copy of untrusted text fit for an error line: printable ASCII only,
 * cut to CONFIG_SHOWN_VALUE_MAX_BYTES with "...". */
static const char *shown(const char *s, char out[SHOWN_BYTES])
{
	size_t n = 0;

	for (; *s && n < CONFIG_SHOWN_VALUE_MAX_BYTES; s++)
		out[n++] = (*s >= ' ' && *s < 0x7f) ? *s : '?';
	if (*s) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
	return out;
}

/* ---- value parsers: pure, no allocation, no location in messages ---- */

int config_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

/* Decimal digits only (no sign, no spaces); -EINVAL if not a number,
 * -ERANGE if outside [min, max] (overflow included). */
static int parse_uint32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
	}
	for (const char *p = s; *p; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > UINT32_MAX)
			return -ERANGE;
	}
	if (v < min || v > max)
		return -ERANGE;
	*out = (uint32_t)v;
	return 0;
}

static bool host_byte(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '-' || c == '_';
}

/* A DNS name of [A-Za-z0-9._-] labels, or a dotted IPv4 address; NULL or
 * the reason it is neither. */
static const char *hostname_problem(const char *host, size_t len)
{
	size_t label = 0;
	bool digits_and_dots = true;

	if (len > CONFIG_HOST_MAX_BYTES)
		return "host name longer than " XSTR(CONFIG_HOST_MAX_BYTES) " bytes";
	for (size_t i = 0; i < len; i++) {
		char c = host[i];

		if (!host_byte(c))
			return "host names may contain only A-Z a-z 0-9 . - _";
		if (c != '.' && (c < '0' || c > '9'))
			digits_and_dots = false;
		if (c == '.') {
			if (label == 0)
				return "empty label in host name";
			label = 0;
		} else if (++label > CONFIG_LABEL_MAX_BYTES) {
			return "host name label longer than " XSTR(CONFIG_LABEL_MAX_BYTES) " bytes";
		}
	}
	if (label == 0)
		return "empty label in host name";
	if (digits_and_dots) {
		char v4[INET_ADDRSTRLEN];
		struct in_addr addr;

		if (len >= sizeof(v4))
			return "not a valid IPv4 address";
		memcpy(v4, host, len);
		v4[len] = '\0';
		if (inet_pton(AF_INET, v4, &addr) != 1)
			return "not a valid IPv4 address";
	}
	return NULL;
}

static const char *ipv6_problem(const char *host, size_t len)
{
	char v6[INET6_ADDRSTRLEN];
	struct in6_addr addr;

	if (len == 0 || len >= sizeof(v6))
		return "not a valid IPv6 address";
	memcpy(v6, host, len);
	v6[len] = '\0';
	return inet_pton(AF_INET6, v6, &addr) == 1 ? NULL : "not a valid IPv6 address";
}

static const char *port_problem(const char *s, uint16_t *port)
{
	uint32_t v;

	if (*s == '\0')
		return "missing port after ':'";
	if (parse_uint32(s, 1, CONFIG_PORT_MAX, &v) < 0)
		return "port must be a number from 1 to " XSTR(CONFIG_PORT_MAX);
	*port = (uint16_t)v;
	return NULL;
}

static const char *addr_problem(const char *s, struct config_addr *out)
{
	const char *host, *port, *problem;
	size_t host_len;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return "missing ']' after the IPv6 address";
		host = s + 1;
		host_len = (size_t)(close - host);
		if (close[1] != ':')
			return "expected ':port' after ']'";
		port = close + 2;
		problem = ipv6_problem(host, host_len);
	} else {
		const char *colon = strrchr(s, ':');

		if (!colon)
			return "missing ':port' (expected host:port, [v6]:port or :port)";
		host = s;
		host_len = (size_t)(colon - s);
		if (memchr(s, ':', host_len))
			return "IPv6 addresses must be in brackets, like [::1]:8080";
		port = colon + 1;
		problem = host_len ? hostname_problem(host, host_len) : NULL;
	}
	if (problem)
		return problem;
	problem = port_problem(port, &out->port);
	if (problem)
		return problem;
	memcpy(out->host, host, host_len);
	out->host[host_len] = '\0';
	out->set = true;
	return NULL;
}

int config_parse_addr(const char *s, struct config_addr *out, char *err, size_t errlen)
{
	char show[SHOWN_BYTES];
	const char *problem;

	memset(out, 0, sizeof(*out));
	if (*s == '\0')
		return 0;
	problem = addr_problem(s, out);
	if (!problem)
		return 0;
	memset(out, 0, sizeof(*out));
	if (errlen)
		snprintf(err, errlen, "bad address '%s': %s", shown(s, show), problem);
	return -EINVAL;
}

void config_addr_format(const struct config_addr *a, char *buf, size_t len)
{
	if (!len)
		return;
	if (!a->set)
		buf[0] = '\0';
	else if (strchr(a->host, ':'))
		snprintf(buf, len, "[%s]:%u", a->host, a->port);
	else
		snprintf(buf, len, "%s:%u", a->host, a->port);
}

static int parse_log_format(const char *s)
{
	if (strcasecmp(s, "text") == 0)
		return LOG_FORMAT_TEXT;
	if (strcasecmp(s, "json") == 0)
		return LOG_FORMAT_JSON;
	return -EINVAL;
}

/* ---- per-key checks (key_check_fn) ---- */

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
			snprintf(why, whylen, "may contain only A-Z a-z 0-9 . _ : - (found '%c')", *p);
		else
			snprintf(why, whylen, "may contain only A-Z a-z 0-9 . _ : - (found byte 0x%02x)",
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

static int check_credential(const void *field, char *why, size_t whylen)
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
static int check_socks5_username(const void *field, char *why, size_t whylen)
{
	const char *s = *(char *const *)field;

	if (s && strchr(s, '.')) {
		snprintf(why, whylen,
			 "must not contain '.': users send username.group-id and only the "
			 "part before the first '.' is the username");
		return -EINVAL;
	}
	return check_credential(field, why, whylen);
}

/* HTTP Basic credentials are "user:password": the user part has no ':'. */
static int check_http_username(const void *field, char *why, size_t whylen)
{
	const char *s = *(char *const *)field;

	if (s && strchr(s, ':')) {
		snprintf(why, whylen, "must not contain ':' (HTTP Basic authentication "
				      "separates username and password with it)");
		return -EINVAL;
	}
	return check_socks5_username(field, why, whylen);
}

static int check_listen_addr(const void *field, char *why, size_t whylen)
{
	if (!((const struct config_addr *)field)->set) {
		snprintf(why, whylen, "must not be empty: agents connect to this address");
		return -EINVAL;
	}
	return 0;
}

static int check_dial_addr(const void *field, char *why, size_t whylen)
{
	if (!((const struct config_addr *)field)->host[0]) {
		snprintf(why, whylen, "needs a host: the agent dials it (host:port or [v6]:port)");
		return -EINVAL;
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
	problem = strchr(s, ':') ? ipv6_problem(s, strlen(s)) : hostname_problem(s, strlen(s));
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

/* ---- checks registered by the layers above ---- */

/* Set at start-up, before any load, and only read afterwards. */
static config_item_check_fn registered_checks[CONFIG_CHECKS];

int config_register_check(enum config_check which, config_item_check_fn fn)
{
	if (which <= CONFIG_CHECK_NONE || which >= CONFIG_CHECKS)
		return -EINVAL;
	registered_checks[which] = fn;
	return 0;
}

static config_item_check_fn registered_check(enum config_check which)
{
	return which > CONFIG_CHECK_NONE && which < CONFIG_CHECKS ? registered_checks[which] : NULL;
}

/* ---- loading ---- */

enum origin_kind { ORIGIN_DEFAULT, ORIGIN_FILE, ORIGIN_ENV };

/* Where a key's current value came from: errors point there. */
struct key_origin {
	enum origin_kind kind;
	int line; /* ORIGIN_FILE only */
};

struct load_ctx {
	struct config *cfg;
	enum config_program program;
	const char *path;
	char *err;
	size_t errlen;
	bool failed;
	FILE *file;
	int line;       /* of the line inih is parsing */
	int read_errno; /* reading the file failed with this */
	const char *section; /* the section the lines belong to, for errors */
	struct config_group_auth *group; /* inside a [group.NAME] section */
	struct key_origin origins[ARRAY_SIZE(config_keys)];
};

/*
 * Record the load's error (only the first one counts): "PATH:LINE: " for a
 * file line, "PATH: " for a key left at its default, "environment VAR: "
 * for an override; then "[section] key: " when a key is known, then the
 * message. Always returns -EINVAL, for `return fail(...)`.
 */
__attribute__((format(printf, 4, 5))) static int fail(struct load_ctx *ctx,
						      const struct key_origin *where,
						      const struct config_key *key,
						      const char *fmt, ...)
{
	char var[CONFIG_ENV_NAME_BYTES];
	size_t n = 0;
	va_list ap;
	int written;

	if (ctx->failed)
		return -EINVAL;
	ctx->failed = true;
	if (!ctx->errlen)
		return -EINVAL;
	if (where->kind == ORIGIN_ENV) {
		env_name(key, var);
		written = snprintf(ctx->err, ctx->errlen, "environment %s: ", var);
	} else if (where->kind == ORIGIN_FILE) {
		written = snprintf(ctx->err, ctx->errlen, "%s:%d: ", ctx->path, where->line);
	} else {
		written = snprintf(ctx->err, ctx->errlen, "%s: ", ctx->path);
	}
	n = MIN((size_t)written, ctx->errlen - 1);
	if (key && where->kind != ORIGIN_ENV) {
		written = snprintf(ctx->err + n, ctx->errlen - n, "[%s] %s: ", key->section,
				   key->name);
		n = MIN(n + (size_t)written, ctx->errlen - 1);
	}
	va_start(ap, fmt);
	vsnprintf(ctx->err + n, ctx->errlen - n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int fail_key(struct load_ctx *ctx, const struct config_key *key, const char *why)
{
	return fail(ctx, &ctx->origins[key_index(key)], key, "%s", why);
}

static int fail_line(struct load_ctx *ctx, const char *why)
{
	struct key_origin here = { ORIGIN_FILE, ctx->line };

	return fail(ctx, &here, NULL, "%s", why);
}

static void free_string(char **s, bool secret)
{
	if (*s && secret)
		explicit_bzero(*s, strlen(*s));
	free(*s);
	*s = NULL;
}

static void free_list(struct config_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

/* Append the comma-separated items of value; items are trimmed and empty
 * ones skipped. */
static int list_append(struct load_ctx *ctx, const struct config_key *key,
		       struct config_list *list, const char *value)
{
	config_item_check_fn check = registered_check(key->item_check);
	const char *p = value;

	/* config_load refuses to load a program whose check is missing */
	if (key->item_check != CONFIG_CHECK_NONE && !check)
		abort();

	while (*p) {
		const char *start = p, *end;
		char **grown;
		char *item;

		while (*p && isspace((unsigned char)*p))
			p++;
		start = p;
		/* a host regex may contain commas: it runs to the end of the value */
		while (*p && (*p != ',' || *start == CONFIG_LIST_RAW_PREFIX))
			p++;
		end = p;
		if (*p == ',')
			p++;
		while (start < end && isspace((unsigned char)*start))
			start++;
		while (end > start && isspace((unsigned char)end[-1]))
			end--;
		if (start == end)
			continue;
		if (list->count == CONFIG_LIST_MAX_ITEMS) {
			char why[64];

			snprintf(why, sizeof(why), "more than %d items", CONFIG_LIST_MAX_ITEMS);
			return fail_key(ctx, key, why);
		}
		item = strndup(start, (size_t)(end - start));
		if (item && check) {
			char why[CONFIG_SHOWN_VALUE_MAX_BYTES + 128];

			if (check(item, why, sizeof(why)) < 0) {
				free(item);
				return fail_key(ctx, key, why);
			}
		}
		grown = item ? realloc(list->items, (list->count + 1) * sizeof(*grown)) : NULL;
		if (!grown) {
			free(item);
			return -ENOMEM;
		}
		grown[list->count++] = item;
		list->items = grown;
	}
	return 0;
}

/* An empty value leaves a string key without a default unset (NULL). */
static int set_string(const struct config_key *key, char **field, const char *value)
{
	char *copy = NULL;

	if (value[0] || key->default_value) {
		copy = strdup(value);
		if (!copy)
			return -ENOMEM;
	}
	free_string(field, key->type == KEY_SECRET);
	*field = copy;
	return 0;
}

static int set_uint32(struct load_ctx *ctx, const struct config_key *key, uint32_t *field,
		      const char *value)
{
	char show[SHOWN_BYTES], why[160];
	int err = parse_uint32(value, key->min, key->max, field);

	if (err == -EINVAL)
		snprintf(why, sizeof(why), "bad number '%s': expected a whole number from %u to %u",
			 shown(value, show), key->min, key->max);
	else if (err == -ERANGE)
		snprintf(why, sizeof(why), "%s is out of range (%u to %u)", shown(value, show),
			 key->min, key->max);
	return err ? fail_key(ctx, key, why) : 0;
}

/* Parse value into the key's field, replacing (or, for lists, extending)
 * what is there. Returns 0, -EINVAL with the error recorded, or -ENOMEM. */
static int set_value(struct load_ctx *ctx, const struct config_key *key, const char *value)
{
	void *field = key_field(ctx->cfg, key);
	char show[SHOWN_BYTES], why[200];
	int parsed;

	switch (key->type) {
	case KEY_STRING:
	case KEY_SECRET:
	case KEY_FILE:
		return set_string(key, field, value);
	case KEY_LIST:
		return list_append(ctx, key, field, value);
	case KEY_UINT32:
		return set_uint32(ctx, key, field, value);
	case KEY_ADDR:
		if (config_parse_addr(value, field, why, sizeof(why)) < 0)
			return fail_key(ctx, key, why);
		return 0;
	case KEY_BOOL:
		if (config_parse_bool(value, field) == 0)
			return 0;
		snprintf(why, sizeof(why), "bad boolean '%s': expected true or false "
			 "(also yes/no, on/off, 1/0)", shown(value, show));
		return fail_key(ctx, key, why);
	case KEY_LOG_LEVEL:
		parsed = log_level_parse(value);
		if (parsed >= 0) {
			*(int *)field = parsed;
			return 0;
		}
		snprintf(why, sizeof(why), "bad log level '%s': expected debug, info, warn or error",
			 shown(value, show));
		return fail_key(ctx, key, why);
	case KEY_LOG_FORMAT:
		parsed = parse_log_format(value);
		if (parsed >= 0) {
			*(enum log_format *)field = (enum log_format)parsed;
			return 0;
		}
		snprintf(why, sizeof(why), "bad log format '%s': expected text or json",
			 shown(value, show));
		return fail_key(ctx, key, why);
	}
	abort();
}

static void apply_defaults(struct load_ctx *ctx)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];

		ctx->origins[i].kind = ORIGIN_DEFAULT;
		/* The table must follow the secret name rule; the unit tests load. */
		if ((key->type == KEY_SECRET) != secret_key_name(key->name))
			abort();
		if (!(key->programs & ctx->program) || !key->default_value)
			continue;
		/* Defaults are constants of this file; the unit tests load them. */
		if (set_value(ctx, key, key->default_value) < 0)
			abort();
	}
}

/* A program whose keys need a check that nobody registered would accept
 * their items unchecked: refuse to load it instead (a bug in the program). */
static int check_registrations(struct load_ctx *ctx)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];

		if ((key->programs & ctx->program) && key->item_check != CONFIG_CHECK_NONE &&
		    !registered_check(key->item_check))
			return fail_key(ctx, key, "internal error: no check registered for its items");
	}
	return 0;
}

static const struct config_section *find_section(const char *name, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_sections); i++) {
		if (strlen(config_sections[i].name) == len &&
		    memcmp(config_sections[i].name, name, len) == 0)
			return &config_sections[i];
	}
	return NULL;
}

/*
 * inih only hands us key = value pairs, so a section header is checked here
 * when its line is read: an unknown section is an error even if empty.
 * inih's own rule for the name: from '[' to the first ']'. A header without
 * ']' is left to inih, which reports it as a syntax error.
 */
static int check_section_header(struct load_ctx *ctx, const char *line)
{
	const struct config_section *section;
	const char *name, *close;
	char show[SHOWN_BYTES], name_copy[SHOWN_BYTES], why[SHOWN_BYTES + 256];
	size_t len;

	while (isspace((unsigned char)*line))
		line++;
	if (*line != '[')
		return 0;
	name = line + 1;
	close = strchr(name, ']');
	if (!close)
		return 0;
	len = (size_t)(close - name);
	for (const char *p = close + 1; *p; p++) {
		if (!isspace((unsigned char)*p))
			return fail_line(ctx, "unexpected text after ']' of a section header");
	}
	section = find_section(name, len);
	ctx->group = NULL;
	if (section && (section->programs & ctx->program)) {
		ctx->section = section->name;
		return 0;
	}
	if (ctx->program == CONFIG_GATEWAY && len > strlen(CONFIG_GROUP_SECTION_PREFIX) &&
	    strncmp(name, CONFIG_GROUP_SECTION_PREFIX, strlen(CONFIG_GROUP_SECTION_PREFIX)) == 0)
		return open_group_section(ctx, name + strlen(CONFIG_GROUP_SECTION_PREFIX),
					  len - strlen(CONFIG_GROUP_SECTION_PREFIX));

	snprintf(name_copy, sizeof(name_copy), "%.*s", (int)MIN(len, sizeof(name_copy) - 1),
		 name);
	shown(name_copy, show);
	if (section) {
		/* Shared sections always match, so this one has a single owner. */
		snprintf(why, sizeof(why), "[%s]: section belongs to %s, not %s", show,
			 program_name((enum config_program)section->programs),
			 program_name(ctx->program));
	} else {
		size_t n = (size_t)snprintf(why, sizeof(why), "[%s]: unknown section (%s accepts",
					    show, program_name(ctx->program));

		for (size_t i = 0; i < ARRAY_SIZE(config_sections) && n < sizeof(why); i++) {
			if (config_sections[i].programs & ctx->program)
				n += (size_t)snprintf(why + n, sizeof(why) - n, " [%s]",
						      config_sections[i].name);
		}
		if (n < sizeof(why))
			snprintf(why + n, sizeof(why) - n, ")");
	}
	return fail_line(ctx, why);
}

/* [group.NAME]: per-group proxy credentials (gateway only). */
static int open_group_section(struct load_ctx *ctx, const char *name, size_t len)
{
	struct config *cfg = ctx->cfg;
	struct config_group_auth *g;
	char id[CONFIG_ID_MAX_BYTES + 1], why[CONFIG_ID_MAX_BYTES + 128];

	if (len > CONFIG_ID_MAX_BYTES) {
		snprintf(why, sizeof(why), "[group.%.*s...]: group name longer than %d bytes",
			 16, name, CONFIG_ID_MAX_BYTES);
		return fail_line(ctx, why);
	}
	memcpy(id, name, len);
	id[len] = '\0';
	for (size_t i = 0; i < len; i++) {
		if (!isalnum((unsigned char)id[i]) && !strchr("._:-", id[i])) {
			snprintf(why, sizeof(why), "[group.%s]: a group name has only "
				 "A-Z a-z 0-9 . _ : -", id);
			return fail_line(ctx, why);
		}
	}
	if (config_group_auth(cfg, id, len)) {
		snprintf(why, sizeof(why), "[group.%s]: section appears twice", id);
		return fail_line(ctx, why);
	}
	if (cfg->ngroups == CONFIG_GROUPS_MAX)
		return fail_line(ctx, "too many [group.NAME] sections");
	g = realloc(cfg->groups, (cfg->ngroups + 1) * sizeof(*g));
	if (!g)
		return -ENOMEM;
	cfg->groups = g;
	g = &cfg->groups[cfg->ngroups];
	memset(g, 0, sizeof(*g));
	g->group = strdup(id);
	if (!g->group)
		return -ENOMEM;
	g->line = ctx->line;
	cfg->ngroups++;
	ctx->group = g;
	ctx->section = CONFIG_GROUP_SECTION_PREFIX "NAME";
	return 0;
}

/* A key inside [group.NAME]: auth_username, auth_password (its users),
 * agent_username or agent_password (its agents). */
static int group_pair(struct load_ctx *ctx, const char *name, const char *value)
{
	struct config_group_auth *g = ctx->group;
	char why[CONFIG_SHOWN_VALUE_MAX_BYTES + 128];
	char **field;
	bool secret = secret_key_name(name), agent = false;

	if (strcmp(name, "auth_username") == 0) {
		field = &g->auth_username;
	} else if (strcmp(name, "auth_password") == 0) {
		field = &g->auth_password;
	} else if (strcmp(name, "agent_username") == 0) {
		field = &g->agent_username;
		agent = true;
	} else if (strcmp(name, "agent_password") == 0) {
		field = &g->agent_password;
		agent = true;
	} else {
		snprintf(why, sizeof(why), "[group.%s] %.64s: unknown key (auth_username, "
			 "auth_password, agent_username, agent_password)", g->group, name);
		return fail_line(ctx, why);
	}
	if (*field) {
		snprintf(why, sizeof(why), "[group.%s] %s: duplicate key", g->group, name);
		return fail_line(ctx, why);
	}
	if (secret && !value[0]) {
		snprintf(why, sizeof(why), "[group.%s] %s: %s", g->group, name,
			 CONFIG_EMPTY_SECRET_WHY);
		return fail_line(ctx, why);
	}
	/* an empty agent user name would admit agents that present none */
	if (agent && !value[0]) {
		snprintf(why, sizeof(why), "[group.%s] %s: must not be empty", g->group, name);
		return fail_line(ctx, why);
	}
	/* agent user names travel in HELLO, not in a proxy user name: any
	 * byte is fine there, as for [gateway] auth_username */
	if (check_credential(&value, why, sizeof(why)) < 0 ||
	    (!secret && !agent && check_socks5_username(&value, why, sizeof(why)) < 0) ||
	    (!secret && !agent && check_http_username(&value, why, sizeof(why)) < 0)) {
		char msg[sizeof(why) + 96];

		snprintf(msg, sizeof(msg), "[group.%s] %s: %s", g->group, name,
			 secret ? "invalid password" : why);
		return fail_line(ctx, msg);
	}
	*field = strdup(value);
	return *field ? 0 : -ENOMEM;
}

const struct config_group_auth *config_group_auth(const struct config *cfg, const char *group,
						  size_t group_len)
{
	for (size_t i = 0; i < cfg->ngroups; i++)
		if (strlen(cfg->groups[i].group) == group_len &&
		    memcmp(cfg->groups[i].group, group, group_len) == 0)
			return &cfg->groups[i];
	return NULL;
}

static void free_groups(struct config *cfg)
{
	for (size_t i = 0; i < cfg->ngroups; i++) {
		free(cfg->groups[i].group);
		free_string(&cfg->groups[i].auth_username, false);
		free_string(&cfg->groups[i].auth_password, true);
		free_string(&cfg->groups[i].agent_username, false);
		free_string(&cfg->groups[i].agent_password, true);
	}
	free(cfg->groups);
	cfg->groups = NULL;
	cfg->ngroups = 0;
}

/* Every [group.NAME] needs its users' password: a section is a tenant
 * boundary for users too (a section without one must not let the
 * listener's password in). agent_username alone would change nothing. */
static int check_groups(struct load_ctx *ctx)
{
	for (size_t i = 0; i < ctx->cfg->ngroups; i++) {
		const struct config_group_auth *g = &ctx->cfg->groups[i];
		struct key_origin where = { ORIGIN_FILE, g->line };

		if (!g->auth_password)
			return fail(ctx, &where, NULL, "[group.%s] auth_password: required key is "
				    "missing", g->group);
		if (g->agent_username && !g->agent_password)
			return fail(ctx, &where, NULL, "[group.%s] agent_username: set without "
				    "agent_password (set both, or agent_password alone)", g->group);
	}
	return 0;
}

/*
 * The ini_reader given to inih. It reads one whole line itself, so that it
 * knows the line number (inih does not tell its handler) and can refuse what
 * inih would silently mangle: over-long lines (inih cuts them) and NUL bytes
 * (inih stops the line there). str has room for CONFIG_INIH_LINE_BYTES
 * because config_load sets ini_max_line to that. Returns NULL at the end of
 * the file and on any error (recorded in ctx), which ends inih's loop.
 */
#define LINE_TOO_LONG "line too long (max " XSTR(CONFIG_LINE_MAX_BYTES) " bytes)"

/* An over-long line: name its key when the line starts like "key = ". */
static void fail_long_line(struct load_ctx *ctx, const char *start, size_t n)
{
	struct key_origin here = { ORIGIN_FILE, ctx->line };
	size_t i = 0, key_len;
	char key[SHOWN_BYTES];

	while (i < n && isspace((unsigned char)start[i]))
		i++;
	key_len = 0;
	while (i + key_len < n && (isalnum((unsigned char)start[i + key_len]) ||
				   start[i + key_len] == '_') &&
	       key_len < sizeof(key) - 1)
		key_len++;
	if (key_len && ctx->section && memchr(start + i + key_len, '=', n - i - key_len)) {
		memcpy(key, start + i, key_len);
		key[key_len] = '\0';
		fail(ctx, &here, NULL, "[%s] %s: %s", ctx->section, key, LINE_TOO_LONG);
		return;
	}
	fail_line(ctx, LINE_TOO_LONG);
}

static char *read_config_line(char *str, int num, void *stream)
{
	struct load_ctx *ctx = stream;
	size_t n = 0, content_len;
	bool has_nul = false;
	int c;

	if (ctx->failed)
		return NULL;
	if (num < CONFIG_INIH_LINE_BYTES) { /* someone changed ini_max_line under us */
		fail_line(ctx, "internal error: inih line buffer too small");
		return NULL;
	}
	c = getc(ctx->file);
	if (c == EOF) {
		if (ferror(ctx->file))
			ctx->read_errno = errno ? errno : EIO;
		return NULL;
	}
	ctx->line++;
	for (; c != EOF && c != '\n'; c = getc(ctx->file)) {
		if (n > CONFIG_LINE_MAX_BYTES) { /* room for a '\r' beyond the limit */
			fail_long_line(ctx, str, n);
			return NULL;
		}
		has_nul |= c == '\0';
		str[n++] = (char)c;
	}
	if (c == EOF && ferror(ctx->file)) {
		ctx->read_errno = errno ? errno : EIO;
		return NULL;
	}
	content_len = n > 0 && str[n - 1] == '\r' ? n - 1 : n;
	if (content_len > CONFIG_LINE_MAX_BYTES) {
		fail_long_line(ctx, str, content_len);
		return NULL;
	}
	if (has_nul) {
		fail_line(ctx, "NUL byte in line");
		return NULL;
	}
	/* A UTF-8 byte order mark is allowed at the start of the file. */
	if (ctx->line == 1 && n >= 3 && memcmp(str, "\xef\xbb\xbf", 3) == 0) {
		memmove(str, str + 3, n - 3);
		n -= 3;
	}
	str[n] = '\0';
	if (check_section_header(ctx, str) < 0)
		return NULL;
	str[n++] = '\n';
	str[n] = '\0';
	return str;
}

static const struct config_key *find_key(enum config_program program, const char *section,
					 const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];

		if ((key->programs & program) && strcmp(key->section, section) == 0 &&
		    strcmp(key->name, name) == 0)
			return key;
	}
	return NULL;
}

static int fail_unknown_key(struct load_ctx *ctx, const char *section, const char *name)
{
	struct key_origin here = { ORIGIN_FILE, ctx->line };
	char show_section[SHOWN_BYTES], show_name[SHOWN_BYTES];

	shown(section, show_section);
	shown(name, show_name);
	/* Point to the right section when the key exists elsewhere. */
	for (size_t i = 0; i < ARRAY_SIZE(config_sections); i++) {
		const char *other = config_sections[i].name;

		if (find_key(ctx->program, other, name))
			return fail(ctx, &here, NULL, "[%s] %s: unknown key (it belongs in [%s])",
				    show_section, show_name, other);
	}
	return fail(ctx, &here, NULL, "[%s] %s: unknown key", show_section, show_name);
}

/* The ini_handler: one key = value pair of the file. */
static int on_ini_pair(void *user, const char *section, const char *name, const char *value)
{
	struct load_ctx *ctx = user;
	const struct config_key *key;
	struct key_origin *origin;

	if (section[0] == '\0') {
		fail_line(ctx, "key outside of a section: start the file with a [section] header");
		return 0;
	}
	if (name[0] == '\0') {
		fail_line(ctx, "missing key name before '='");
		return 0;
	}
	if (ctx->group) {
		if (group_pair(ctx, name, value) == -ENOMEM)
			fail_line(ctx, strerror(ENOMEM));
		return !ctx->failed;
	}
	key = find_key(ctx->program, section, name);
	if (!key) {
		fail_unknown_key(ctx, section, name);
		return 0;
	}
	origin = &ctx->origins[key_index(key)];
	if (origin->kind == ORIGIN_FILE && key->type != KEY_LIST) {
		struct key_origin here = { ORIGIN_FILE, ctx->line };

		fail(ctx, &here, key, "duplicate key (first set on line %d)", origin->line);
		return 0;
	}
	origin->kind = ORIGIN_FILE;
	origin->line = ctx->line;
	if (set_value(ctx, key, value) == -ENOMEM)
		fail_line(ctx, strerror(ENOMEM));
	return !ctx->failed;
}

/* inih's behaviour is process-wide state; set all of it, every load. */
static void configure_inih(void)
{
	ini_max_line = CONFIG_INIH_LINE_BYTES;
	ini_use_stack = true;
	ini_allow_multiline = false;   /* an indented line is not a continuation */
	ini_allow_bom = false;         /* read_config_line strips it */
	ini_allow_inline_comments = false; /* "pass ;word" keeps its ';' */
	ini_allow_no_value = false;
	ini_stop_on_first_error = true;
}

static int parse_file(struct load_ctx *ctx)
{
	int line;

	ctx->file = fopen(ctx->path, "re");
	if (!ctx->file) {
		int err = errno;

		if (ctx->errlen)
			snprintf(ctx->err, ctx->errlen, "%s: cannot open: %s", ctx->path,
				 strerror(err));
		ctx->failed = true;
		return -err;
	}
	configure_inih();
	line = ini_parse_stream(read_config_line, ctx, on_ini_pair, ctx);
	fclose(ctx->file);
	ctx->file = NULL;
	if (ctx->failed)
		return -EINVAL;
	if (ctx->read_errno) {
		if (ctx->errlen)
			snprintf(ctx->err, ctx->errlen, "%s: cannot read: %s", ctx->path,
				 strerror(ctx->read_errno));
		ctx->failed = true;
		return -ctx->read_errno;
	}
	if (line < 0) /* inih could not allocate (its heap mode) */
		return -ENOMEM;
	if (line > 0) {
		ctx->line = line;
		return fail_line(ctx, "syntax error: expected '[section]' or 'key = value'");
	}
	return 0;
}

static int apply_environment(struct load_ctx *ctx)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];
		char var[CONFIG_ENV_NAME_BYTES];
		const char *value;
		int err;

		if (!(key->programs & ctx->program))
			continue;
		env_name(key, var);
		value = getenv(var);
		if (!value)
			continue;
		ctx->origins[i].kind = ORIGIN_ENV;
		if (strlen(value) > CONFIG_LINE_MAX_BYTES)
			return fail_key(ctx, key, "value too long (max " XSTR(CONFIG_LINE_MAX_BYTES) " bytes)");
		if (key->type == KEY_LIST)
			free_list(key_field(ctx->cfg, key));
		err = set_value(ctx, key, value);
		if (err < 0)
			return err;
	}
	return 0;
}

static bool key_is_set(struct config *cfg, const struct config_key *key)
{
	const void *field = key_field(cfg, key);

	switch (key->type) {
	case KEY_ADDR:
		return ((const struct config_addr *)field)->set;
	case KEY_STRING:
	case KEY_SECRET:
	case KEY_FILE:
		return *(char *const *)field != NULL;
	case KEY_LIST:
		return ((const struct config_list *)field)->count > 0;
	case KEY_BOOL:
	case KEY_UINT32:
	case KEY_LOG_LEVEL:
	case KEY_LOG_FORMAT:
		break;
	}
	return true;
}

/* A secret given (file or environment, whichever came last) with an empty
 * value: set_string left it NULL, its origin says where it was given. */
static int check_empty_secrets(struct load_ctx *ctx)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];

		if ((key->programs & ctx->program) && key->type == KEY_SECRET &&
		    ctx->origins[i].kind != ORIGIN_DEFAULT && !key_is_set(ctx->cfg, key))
			return fail_key(ctx, key, CONFIG_EMPTY_SECRET_WHY);
	}
	return 0;
}

static int check_required(struct load_ctx *ctx)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];

		if (!(key->programs & ctx->program) || !key->required || key_is_set(ctx->cfg, key))
			continue;
		char var[CONFIG_ENV_NAME_BYTES], why[160];

		env_name(key, var);
		snprintf(why, sizeof(why), "required key is %s (set it here or in %s)",
			 ctx->origins[i].kind == ORIGIN_DEFAULT ? "missing" : "empty", var);
		return fail_key(ctx, key, why);
	}
	return 0;
}

static int run_key_checks(struct load_ctx *ctx)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];
		char why[200];

		if (!(key->programs & ctx->program) || !key->check)
			continue;
		if (key->check(key_field(ctx->cfg, key), why, sizeof(why)) < 0)
			return fail_key(ctx, key, why);
	}
	return 0;
}

/* Open (without blocking on a FIFO) to prove the file is readable now; the
 * TLS layer reads it later. */
static int check_readable_file(struct load_ctx *ctx, const struct config_key *key,
			       const char *path)
{
	char show[SHOWN_BYTES], why[200];
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	int err = fd < 0 ? errno : 0;

	if (fd >= 0) {
		if (fstat(fd, &st) < 0)
			err = errno;
		else if (S_ISDIR(st.st_mode))
			err = EISDIR;
		close(fd);
	}
	if (!err)
		return 0;
	snprintf(why, sizeof(why), "cannot read '%s': %s", shown(path, show), strerror(err));
	return fail_key(ctx, key, why);
}

static int check_files(struct load_ctx *ctx)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];
		const char *path;

		if (!(key->programs & ctx->program) || key->type != KEY_FILE)
			continue;
		path = *(char *const *)key_field(ctx->cfg, key);
		if (path && check_readable_file(ctx, key, path) < 0)
			return -EINVAL;
	}
	return 0;
}

/* Of two keys in one rule, the one to name in the error: the one the user
 * set (the later one if both were), since a default is not their mistake. */
static const struct config_key *blame(struct load_ctx *ctx, const struct config_key *a,
				      const struct config_key *b)
{
	const struct key_origin *oa = &ctx->origins[key_index(a)];
	const struct key_origin *ob = &ctx->origins[key_index(b)];

	if (ob->kind == ORIGIN_DEFAULT)
		return a;
	if (oa->kind == ORIGIN_ENV && ob->kind == ORIGIN_FILE)
		return a;
	if (oa->kind == ORIGIN_FILE && ob->kind == ORIGIN_FILE && oa->line > ob->line)
		return a;
	return b;
}

static int check_ping(struct load_ctx *ctx, const struct config_key *interval_key,
		      const struct config_key *timeout_key)
{
	uint32_t interval = *(uint32_t *)key_field(ctx->cfg, interval_key);
	uint32_t timeout = *(uint32_t *)key_field(ctx->cfg, timeout_key);
	char why[160];

	if (timeout > interval)
		return 0;
	snprintf(why, sizeof(why), "ping_timeout_ms (%u) must be greater than ping_interval_ms (%u)",
		 timeout, interval);
	return fail_key(ctx, blame(ctx, interval_key, timeout_key), why);
}

/* Two keys that make sense only together. */
static int check_pair(struct load_ctx *ctx, const struct config_key *a, const struct config_key *b)
{
	bool a_set = key_is_set(ctx->cfg, a), b_set = key_is_set(ctx->cfg, b);
	char why[160];

	if (a_set == b_set)
		return 0;
	snprintf(why, sizeof(why), "set without %s (set both or neither)",
		 a_set ? b->name : a->name);
	return fail_key(ctx, a_set ? a : b, why);
}

static bool addrs_collide(const struct config_addr *a, const struct config_addr *b)
{
	return a->set && b->set && a->port == b->port &&
	       (!a->host[0] || !b->host[0] || strcmp(a->host, b->host) == 0);
}

/* Listeners use SO_REUSEPORT, so two of ours on one port would both bind
 * and silently share the connections: refuse that here. */
static int check_listener_ports(struct load_ctx *ctx)
{
	const struct config_key *listeners[] = {
		KEY_OF(gateway.listen_addr),
		KEY_OF(http.listen_addr),
		KEY_OF(socks5.listen_addr),
	};

	for (size_t i = 0; i < ARRAY_SIZE(listeners); i++) {
		for (size_t j = i + 1; j < ARRAY_SIZE(listeners); j++) {
			const struct config_key *a = listeners[i], *b = listeners[j];
			const struct config_key *blamed, *other;
			char why[160];

			if (!addrs_collide(key_field(ctx->cfg, a), key_field(ctx->cfg, b)))
				continue;
			blamed = blame(ctx, a, b);
			other = blamed == a ? b : a;
			snprintf(why, sizeof(why),
				 "same port as [%s] listen_addr; two listeners cannot share a port",
				 other->section);
			return fail_key(ctx, blamed, why);
		}
	}
	return 0;
}

static int validate_gateway(struct load_ctx *ctx)
{
	int err = check_ping(ctx, KEY_OF(gateway.ping_interval_ms), KEY_OF(gateway.ping_timeout_ms));

	if (!err)
		err = check_pair(ctx, KEY_OF(http.auth_username), KEY_OF(http.auth_password));
	if (!err)
		err = check_pair(ctx, KEY_OF(socks5.auth_username), KEY_OF(socks5.auth_password));
	if (!err)
		err = check_listener_ports(ctx);
	if (!err)
		err = check_groups(ctx);
	return err;
}

static int validate_client(struct load_ctx *ctx)
{
	struct config *cfg = ctx->cfg;
	const struct config_key *initial = KEY_OF(client.reconnect_initial_delay_ms);
	const struct config_key *max = KEY_OF(client.reconnect_max_delay_ms);
	int err = check_ping(ctx, KEY_OF(client.ping_interval_ms), KEY_OF(client.ping_timeout_ms));

	if (err)
		return err;
	if (cfg->client.reconnect_max_delay_ms < cfg->client.reconnect_initial_delay_ms) {
		char why[160];

		snprintf(why, sizeof(why),
			 "reconnect_max_delay_ms (%u) must be at least reconnect_initial_delay_ms (%u)",
			 cfg->client.reconnect_max_delay_ms, cfg->client.reconnect_initial_delay_ms);
		return fail_key(ctx, blame(ctx, initial, max), why);
	}
	err = check_pair(ctx, KEY_OF(client.tls_cert), KEY_OF(client.tls_key));
	if (err)
		return err;
	if (!cfg->client.gateway_server_name) {
		cfg->client.gateway_server_name = strdup(cfg->client.gateway_addr.host);
		if (!cfg->client.gateway_server_name)
			return -ENOMEM;
	}
	return 0;
}

static int validate(struct load_ctx *ctx)
{
	int err = check_empty_secrets(ctx);

	if (!err)
		err = check_required(ctx);
	if (!err)
		err = run_key_checks(ctx);
	if (!err)
		err = ctx->program == CONFIG_GATEWAY ? validate_gateway(ctx) : validate_client(ctx);
	if (!err)
		err = check_files(ctx);
	return err;
}

int config_load(struct config *cfg, enum config_program program, const char *path,
		char *err, size_t errlen)
{
	struct load_ctx ctx = {
		.cfg = cfg, .program = program, .path = path, .err = err, .errlen = errlen,
	};
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	if (errlen)
		err[0] = '\0';
	if (program != CONFIG_GATEWAY && program != CONFIG_CLIENT) {
		if (errlen)
			snprintf(err, errlen, "%s: unknown program %d", path, (int)program);
		return -EINVAL;
	}
	cfg->program = program;
	apply_defaults(&ctx);
	rc = check_registrations(&ctx);
	if (!rc)
		rc = parse_file(&ctx);
	if (!rc)
		rc = apply_environment(&ctx);
	if (!rc)
		rc = validate(&ctx);
	if (rc == -ENOMEM && !ctx.failed && errlen)
		snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
	if (rc < 0)
		config_free(cfg);
	return rc;
}

void config_free(struct config *cfg)
{
	free_groups(cfg);
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];
		void *field = key_field(cfg, key);

		switch (key->type) {
		case KEY_STRING:
		case KEY_SECRET:
		case KEY_FILE:
			free_string(field, key->type == KEY_SECRET);
			break;
		case KEY_LIST:
			free_list(field);
			break;
		case KEY_BOOL:
		case KEY_UINT32:
		case KEY_ADDR:
		case KEY_LOG_LEVEL:
		case KEY_LOG_FORMAT:
			break;
		}
	}
	memset(cfg, 0, sizeof(*cfg));
}

/* ---- files that hold secrets ---- */

/* WARN when group or others may read path; returns 1 if so, else 0. */
static int warn_if_exposed(const char *path, const char *what)
{
	char mode[8];
	struct stat st;

	if (stat(path, &st) < 0 || !(st.st_mode & (S_IRGRP | S_IROTH)))
		return 0;
	snprintf(mode, sizeof(mode), "%04o", (unsigned)(st.st_mode & 07777));
	log_warn("File with secrets is readable by group or others: chmod 600 it",
		 LF_S("file", path), LF_S("holds", what), LF_S("mode", mode));
	return 1;
}

int config_warn_exposed_files(const struct config *cfg, const char *path)
{
	int exposed = warn_if_exposed(path, "configuration");

	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];
		const char *file;

		if (!(key->programs & cfg->program) || !key->private_file)
			continue;
		file = *(char *const *)((const char *)cfg + key->offset);
		if (file)
			exposed += warn_if_exposed(file, "private key");
	}
	return exposed;
}

/* ---- reload ---- */

static bool strings_differ(const char *a, const char *b)
{
	return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

static bool field_differs(const struct config_key *key, const void *a, const void *b)
{
	switch (key->type) {
	case KEY_STRING:
	case KEY_SECRET:
	case KEY_FILE:
		return strings_differ(*(char *const *)a, *(char *const *)b);
	case KEY_LIST: {
		const struct config_list *x = a, *y = b;

		if (x->count != y->count)
			return true;
		for (size_t i = 0; i < x->count; i++)
			if (strcmp(x->items[i], y->items[i]) != 0)
				return true;
		return false;
	}
	case KEY_ADDR: {
		const struct config_addr *x = a, *y = b;

		return x->set != y->set || x->port != y->port || strcmp(x->host, y->host) != 0;
	}
	case KEY_BOOL:
		return *(const bool *)a != *(const bool *)b;
	case KEY_UINT32:
		return *(const uint32_t *)a != *(const uint32_t *)b;
	case KEY_LOG_LEVEL:
	case KEY_LOG_FORMAT:
		return *(const int *)a != *(const int *)b;
	}
	return false;
}

static size_t key_size(const struct config_key *key)
{
	switch (key->type) {
	case KEY_STRING:
	case KEY_SECRET:
	case KEY_FILE:
		return sizeof(char *);
	case KEY_LIST:
		return sizeof(struct config_list);
	case KEY_ADDR:
		return sizeof(struct config_addr);
	case KEY_BOOL:
		return sizeof(bool);
	case KEY_UINT32:
		return sizeof(uint32_t);
	case KEY_LOG_LEVEL:
	case KEY_LOG_FORMAT:
		return sizeof(int);
	}
	return 0;
}

int config_reload(struct config *live, struct config *fresh, char *restart, size_t len)
{
	int kept = 0;
	size_t used = 0;

	if (len)
		restart[0] = '\0';
	{
		/* group credentials reload as a whole */
		struct config_group_auth *groups = live->groups;
		size_t ngroups = live->ngroups;

		live->groups = fresh->groups;
		live->ngroups = fresh->ngroups;
		fresh->groups = groups;
		fresh->ngroups = ngroups;
	}
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		const struct config_key *key = &config_keys[i];
		uint8_t tmp[sizeof(struct config_addr)];
		void *a, *b;
		size_t n;

		if (!(key->programs & live->program))
			continue;
		a = key_field(live, key);
		b = key_field(fresh, key);
		if (!field_differs(key, a, b))
			continue;
		if (key->restart) {
			kept++;
			if (used < len)
				used += (size_t)snprintf(restart + used, len - used, "%s[%s] %s",
							 used ? ", " : "", key->section, key->name);
			continue;
		}
		/* swap: fresh now owns the old value and frees it */
		n = key_size(key);
		memcpy(tmp, a, n);
		memcpy(a, b, n);
		memcpy(b, tmp, n);
	}
	return kept;
}

/* ---- generated documentation ---- */

static void type_text(const struct config_key *key, char *buf, size_t len)
{
	switch (key->type) {
	case KEY_STRING:
		snprintf(buf, len, "string");
		return;
	case KEY_SECRET:
		snprintf(buf, len, "string (secret)");
		return;
	case KEY_BOOL:
		snprintf(buf, len, "boolean");
		return;
	case KEY_UINT32:
		snprintf(buf, len, "integer %u..%u", key->min, key->max);
		return;
	case KEY_ADDR:
		snprintf(buf, len, "address");
		return;
	case KEY_FILE:
		snprintf(buf, len, "path of a readable file");
		return;
	case KEY_LIST:
		snprintf(buf, len, "list");
		return;
	case KEY_LOG_LEVEL:
		snprintf(buf, len, "debug, info, warn, error");
		return;
	case KEY_LOG_FORMAT:
		snprintf(buf, len, "text, json");
		return;
	}
}

static void program_list(unsigned programs, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s", programs & CONFIG_GATEWAY ? "anyproxy-gateway" : "",
		 programs == BOTH ? " and " : "", programs & CONFIG_CLIENT ? "anyproxy-client" : "");
}

/* Markdown table cells must not contain '|'. */
static void markdown_cell(FILE *out, const char *text)
{
	for (; *text; text++) {
		if (*text == '|')
			fputc('\\', out);
		fputc(*text, out);
	}
}

void config_write_markdown(FILE *out)
{
	fputs("# Configuration reference\n"
	      "\n"
	      "<!-- Generated by ap-configdoc from the key table in src/core/config.c.\n"
	      "     Do not edit: run `meson compile -C build regen-config-docs`. -->\n"
	      "\n"
	      "`anyproxy-gateway` and `anyproxy-client` each read one INI file. Reference\n"
	      "files listing every key with its default are `configs/gateway.reference.ini`\n"
	      "and `configs/client.reference.ini`.\n"
	      "\n"
	      "## File format\n"
	      "\n"
	      "- `[section]` headers and `key = value` lines; spaces around keys and values are\n"
	      "  ignored.\n"
	      "- Comments are whole lines starting with `;` or `#`. A `;` after a value is part\n"
	      "  of the value, so passwords may contain it.\n"
	      "- Values are taken literally: no quotes, no escapes (`\"x\"` keeps its quotes).\n"
	      "- A line may be at most " XSTR(CONFIG_LINE_MAX_BYTES) " bytes; a longer line is an error, never cut.\n"
	      "- A key may appear once per file, except list keys.\n"
	      "- Lists are comma-separated: `forbidden_hosts = localhost, 127.0.0.1`. Spaces\n"
	      "  around items are ignored and empty items skipped. Repeating a list key\n"
	      "  appends to the list.\n"
	      "- An empty value (`key =`) leaves a key unset when it has no default; for an\n"
	      "  address it turns the listener off.\n"
	      "- Relative file paths are relative to the program's working directory.\n"
	      "- Unknown sections and keys are errors, so a typo never goes unnoticed.\n"
	      "\n"
	      "## Environment overrides\n"
	      "\n"
	      "Every key can be set from the environment as `SECTION_KEY` in upper case,\n"
	      "with `.` turned into `_`: `CLIENT_GROUP_ID=production`,\n"
	      "`PROXY_HTTP_LISTEN_ADDR=:8080`, `GATEWAY_AUTH_PASSWORD=...`. An environment\n"
	      "value replaces the file's value (a list is replaced whole) and is checked like\n"
	      "it. The environment is applied after the file and before the checks, so a\n"
	      "required key may come from the environment alone. Prefer it for passwords.\n"
	      "\n"
	      "## Errors\n"
	      "\n"
	      "Loading stops at the first error, printed as one line that names where the\n"
	      "value came from, and the program exits with status 2:\n"
	      "\n"
	      "```\n"
	      "gateway.ini:12: [gateway] tls_cert: cannot read 'certs/server.crt': No such file or directory\n"
	      "gateway.ini: [gateway] auth_password: required key is missing\n"
	      "environment CLIENT_REPLICAS: 0 is out of range (1 to 64)\n"
	      "```\n"
	      "\n"
	      "`--check-config` loads and checks the file, then exits (0 when valid).\n"
	      "Error messages never show the value of a secret key.\n",
	      out);

	for (size_t s = 0; s < ARRAY_SIZE(config_sections); s++) {
		const struct config_section *section = &config_sections[s];
		char programs[64];

		program_list(section->programs, programs, sizeof(programs));
		fprintf(out, "\n## [%s]\n\n%s Read by %s.\n\n", section->name, section->help,
			programs);
		fputs("| Key | Type | Default | Required | Environment | On SIGHUP | Description |\n"
		      "|---|---|---|---|---|---|---|\n",
		      out);
		for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
			const struct config_key *key = &config_keys[i];
			char type[64], var[CONFIG_ENV_NAME_BYTES];

			if (strcmp(key->section, section->name) != 0)
				continue;
			type_text(key, type, sizeof(type));
			env_name(key, var);
			fprintf(out, "| `%s` | ", key->name);
			markdown_cell(out, type);
			fputs(" | ", out);
			if (key->default_value && !key->default_value[0])
				fputs("`\"\"` (empty)", out);
			else if (key->default_value)
				fprintf(out, "`%s`", key->default_value);
			fprintf(out, " | %s | `%s` | %s | ", key->required ? "yes" : "no", var,
				key->restart ? "restart needed" : "reloaded");
			markdown_cell(out, key->help);
			fputs(" |\n", out);
		}
	}

	fputs("\n## [group.NAME]\n\n" CONFIG_GROUP_HELP " Read by anyproxy-gateway.\n\n"
	      "| Key | Type | Default | Required | Description |\n|---|---|---|---|---|\n"
	      "| `auth_username` | string | the listener's | no | User name (the part before "
	      "the first '.') users of this group must give. |\n"
	      "| `auth_password` | string (secret) |  | yes | Password users of this group "
	      "must give. |\n"
	      "| `agent_username` | string | `[gateway] auth_username` | no | User name agents "
	      "joining this group must present (their [client] auth_username); needs "
	      "agent_password. |\n"
	      "| `agent_password` | string (secret) |  | no | Password agents joining this group "
	      "must present. When set, the shared [gateway] credential cannot join this group. "
	      "Must not be empty. |\n",
	      out);

	fputs("\n## Checks across keys\n\n", out);
	for (size_t i = 0; i < ARRAY_SIZE(config_rules); i++)
		fprintf(out, "- %s\n", config_rules[i]);
}

/* text as "; "-prefixed comment lines of at most CONFIG_EXAMPLE_WIDTH. */
static void write_comment(FILE *out, const char *text)
{
	const size_t width = CONFIG_EXAMPLE_WIDTH - 2;

	while (*text) {
		size_t len = strlen(text), cut = len;

		if (len > width) {
			cut = width;
			while (cut > 0 && text[cut] != ' ')
				cut--;
			if (cut == 0)
				cut = width;
		}
		fprintf(out, "; %.*s\n", (int)cut, text);
		text += cut;
		while (*text == ' ')
			text++;
	}
}

static void write_example_key(FILE *out, const struct config_key *key)
{
	char var[CONFIG_ENV_NAME_BYTES], note[160];

	env_name(key, var);
	fputc('\n', out);
	write_comment(out, key->help);
	if (key->type == KEY_SECRET)
		snprintf(note, sizeof(note), "%s Keep it out of this file if you can: set %s instead.",
			 key->required ? "Required." : "Optional.", var);
	else if (key->required || key->default_value)
		snprintf(note, sizeof(note), "%s Environment: %s.",
			 key->required ? "Required." : "Optional.", var);
	else
		snprintf(note, sizeof(note), "Optional, unset by default (the value below is an "
			 "example). Environment: %s.", var);
	write_comment(out, note);

	if (key->type == KEY_SECRET)
		fprintf(out, "%s%s =\n", key->required ? "" : "; ", key->name);
	else if (key->default_value)
		fprintf(out, "; %s = %s\n", key->name, key->default_value);
	else if (key->required)
		fprintf(out, "%s = %s\n", key->name, key->example);
	else
		fprintf(out, "; %s = %s\n", key->name, key->example);
}

void config_write_example(FILE *out, enum config_program program)
{
	fprintf(out,
		"; %s reference configuration: every key, with its default.\n"
		"; Generated by ap-configdoc from src/core/config.c; docs/config.md has the\n"
		"; full rules. Lines starting with ';' are comments: uncomment a key to change\n"
		"; it. Keys without ';' are required. Any key may instead come from the\n"
		"; environment, as SECTION_KEY (see each key).\n",
		program_name(program));

	for (size_t s = 0; s < ARRAY_SIZE(config_sections); s++) {
		const struct config_section *section = &config_sections[s];

		if (!(section->programs & program))
			continue;
		fprintf(out, "\n[%s]\n", section->name);
		write_comment(out, section->help);
		for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
			if (strcmp(config_keys[i].section, section->name) == 0)
				write_example_key(out, &config_keys[i]);
		}
	}
	if (program == CONFIG_GATEWAY) {
		fputs("\n; [group.production]\n", out);
		write_comment(out, CONFIG_GROUP_HELP);
		fputs("; auth_username = user\n; auth_password = production-only-password\n"
		      "; agent_username = production_agent\n"
		      "; agent_password = production-agents-only-password\n", out);
	}
}
