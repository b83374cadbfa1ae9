/*
 * config.h — INI configuration for both programs.
 *
 * One declarative table in src/core/config.c declares every key (section,
 * name, type, default, limits, help). That table drives parsing, validation,
 * environment overrides, docs/config.md and the reference configs/NAME.reference.ini, so
 * adding a key means adding one table row and one struct field here
 * (config-table.h describes the table and its modules).
 *
 * Environment overrides: SECTION_KEY in upper case with '.' turned into '_'
 * (CLIENT_GROUP_ID, PROXY_HTTP_LISTEN_ADDR) replace the file's value.
 */
#ifndef ANYPROXY_CONFIG_H
#define ANYPROXY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum config_program {
	CONFIG_GATEWAY = 1 << 0, /* anyproxy-gateway */
	CONFIG_CLIENT = 1 << 1,  /* anyproxy-client */
};

/* "host:port", "[v6]:port" or ":port". host is "" for all addresses. */
struct config_addr {
	char host[256];
	uint16_t port;
	bool set; /* false: key absent or empty (listener disabled) */
};

struct config_list {
	char **items;
	size_t count;
};

/* Most gateways one agent dials ([client] gateway_addr). */
#define CONFIG_GATEWAYS_MAX 16
/* [client] workers: threads asked for (the agent runs at most one per link) */
#define CONFIG_CLIENT_WORKERS_MAX 1024
/* [gateway] workers: threads (each with its ring and listeners) */
#define CONFIG_GATEWAY_WORKERS_MAX 256

/* A list of addresses, in the order given; no two are the same host
 * (compared without case) and port. */
struct config_addr_list {
	struct config_addr *items;
	size_t count;
};

/*
 * [client] egress_proxy: an HTTP proxy the agent reaches its gateways
 * through with CONNECT, parsed once from http://[user:password@]host:port
 * (a trailing '/' is allowed). The credentials are percent-decoded and
 * NUL-terminated; the password is a secret: never shown in an error or a
 * log line, zeroed when freed.
 */
struct config_egress_proxy {
	struct config_addr addr; /* addr.set false: none, the agent dials directly */
	char *username;          /* NULL: no Proxy-Authorization */
	char *password;          /* set exactly when username is */
};

enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

struct config_listener {
	struct config_addr listen_addr;
	char *auth_username;
	char *auth_password;
	uint32_t keepalive_timeout_ms; /* [proxy.http] only */
	uint32_t origin_pool_idle_ms;  /* [proxy.http] only, for the whole gateway */
	char *tls_cert;                /* [proxy.https] only: TLS to the proxy */
	char *tls_key;
};

/* [group.NAME] sections of the gateway: the credentials of one group, for
 * its users (auth_*) and for its agents (agent_*). */
struct config_group_auth {
	char *group;          /* NAME */
	char *auth_username;  /* NULL: the listener's */
	char *auth_password;  /* required */
	char *agent_username; /* NULL: [gateway] auth_username */
	char *agent_password; /* NULL: agents join with the shared [gateway] credential */
	int line;             /* of the section header, for errors */
};

#define CONFIG_GROUP_SECTION_PREFIX "group."
#define CONFIG_GROUPS_MAX 1024

/* [forward.NAME] sections of the gateway: a port on the gateway whose
 * connections go, without any handshake, to one target through one group's
 * agents (config_forward.c). */
enum config_forward_protocol {
	CONFIG_FORWARD_TCP,
	CONFIG_FORWARD_UDP,
};

/* One allowed_sources entry: an address and the length of its prefix. */
struct config_cidr {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network order; bits past prefix are 0 */
	uint8_t prefix;   /* 0..32 or 0..128 */
};

struct config_forward {
	char *name;                     /* NAME: an id (grammar.h), 1..ID_MAX_BYTES */
	struct config_addr listen_addr; /* required */
	char *group;                    /* "" (the default group) when absent */
	struct config_addr target;      /* required: a host name or an address, and a port */
	enum config_forward_protocol protocol;
	struct config_cidr *sources; /* allowed_sources; none: every source */
	size_t nsources;
	int line;      /* of the section header, for errors */
	unsigned seen; /* keys given, for duplicates (config_forward.c) */
};

#define CONFIG_FORWARD_SECTION_PREFIX "forward."
#define CONFIG_FORWARDS_MAX 256

struct config {
	enum config_program program;
	/* per-group proxy credentials; when a group has a section, only its
	 * password admits user.NAME (one tenant cannot pick another's exit) */
	struct config_group_auth *groups;
	size_t ngroups;
	/* [forward.NAME] sections, in file order; restart-only as a whole */
	struct config_forward *forwards;
	size_t nforwards;

	struct {
		struct config_addr listen_addr;
		char *tls_cert;
		char *tls_key;
		char *client_ca;     /* mutual TLS: agents must present a cert from it */
		char *auth_username; /* the shared agent credential */
		char *auth_password;
		bool require_group_section; /* agents only for groups with a section */
		uint32_t handshake_timeout_ms;
		uint32_t ping_interval_ms;
		uint32_t ping_timeout_ms;
		uint32_t open_timeout_ms;     /* an agent's answer to OPEN */
		uint32_t idle_timeout_ms;     /* 0: off */
		uint32_t udp_idle_timeout_ms; /* datagram associations */
		uint32_t shutdown_timeout_ms;
		uint32_t max_connections;                   /* 0: derived from RLIMIT_NOFILE */
		uint32_t max_handshakes;                    /* per side: tunnel port, proxy ports */
		uint32_t workers;                           /* 0: one per online CPU (gateway.c) */
		uint32_t max_tunnel_handshakes_per_address; /* tunnel port, per source */
		uint32_t handshake_stale_ms;                /* at max_handshakes (0: never) */
		uint32_t max_connections_per_group;         /* limits: 0 = none */
		uint32_t max_streams_per_tunnel;
		uint32_t max_clients;
		uint32_t max_tunnels_per_group;
		bool fallback_to_default; /* groups without a section only */
	} gateway;

	struct config_listener http;   /* [proxy.http] */
	struct config_listener socks5; /* [proxy.socks5] */
	struct config_listener https;  /* [proxy.https] */

	struct {
		struct config_addr_list gateway_addr; /* 1 to CONFIG_GATEWAYS_MAX */
		char *gateway_tls_cert;
		char *gateway_server_name;               /* NULL: each gateway's own host part */
		struct config_egress_proxy egress_proxy; /* the gateways through a proxy */
		char *tls_cert;                          /* optional client certificate (mTLS) */
		char *tls_key;
		char *client_id;
		char *group_id;
		uint32_t replicas;
		uint32_t workers; /* 0: one per online CPU (src/client/workers.c) */
		char *auth_username;
		char *auth_password;
		struct config_list allowed_hosts;
		struct config_list forbidden_hosts;
		char *hosts_file; /* extra hosts file for target names */
		uint32_t handshake_timeout_ms;
		uint32_t ping_interval_ms;
		uint32_t ping_timeout_ms;
		uint32_t reconnect_initial_delay_ms;
		uint32_t reconnect_max_delay_ms;
		uint32_t connect_timeout_ms;
		uint32_t shutdown_timeout_ms;
	} client;

	struct {
		int level; /* enum log_level */
		enum log_format format;
		char *output; /* "stderr", "stdout" or a file path */
	} log;

	struct {
		char *socket;
		uint32_t socket_mode; /* permission bits, at most 0777 */
		char *socket_group;   /* NULL: the gateway's own group */
	} control;

	struct {
		struct config_addr listen_addr; /* unset: no metrics endpoint */
	} metrics;
};

/*
 * Checks of list items that belong to a layer above config: config names
 * them, the layer that owns the rule registers the function (the agent
 * registers its ACL's pattern check), so core never includes it. A check
 * gets one item and returns 0, or -EINVAL with the reason in why (the
 * loader prefixes the file, line and key).
 */
enum config_check {
	CONFIG_CHECK_NONE,
	CONFIG_CHECK_HOST_PATTERN, /* one allowed_hosts / forbidden_hosts pattern */
	CONFIG_CHECKS
};
typedef int (*config_item_check_fn)(const char *item, char *why, size_t whylen);

/*
 * Register fn for which, process-wide, before the first config_load of a
 * program whose keys use it (the client's allowed_hosts and forbidden_hosts
 * use CONFIG_CHECK_HOST_PATTERN; the gateway's keys use none). Loading such
 * a program without it fails with an internal error rather than accepting
 * items unchecked. 0, or -EINVAL for an unknown check.
 */
int config_register_check(enum config_check which, config_item_check_fn fn);

/*
 * Load PATH for PROGRAM: defaults, then the file, then the environment, then
 * validation (required keys, cross-key checks, readable certificate files).
 * On failure returns -EINVAL (or -errno for I/O) and writes one line to err,
 * naming the file, the line and the key: "gw.ini:12: [gateway] tls_cert: ...".
 * On success the config owns its strings until config_free().
 * A secret key (named *password, [group.NAME] ones included) given with an
 * empty value is an error, unless the environment then gives it a value.
 * A string key that is absent, or set to an empty value, is NULL unless the
 * table gives it a default (group_id defaults to "", log.output to
 * "stderr"); client.gateway_server_name stays NULL when unset (each
 * gateway is then checked against its own host part). On failure
 * everything is already freed and *cfg is zeroed (calling config_free() on
 * it again is harmless).
 */
int config_load(struct config *cfg, enum config_program program, const char *path, char *err,
		size_t errlen);
void config_free(struct config *cfg);

/*
 * Start-up check of the files that hold secrets: the configuration file at
 * path (it usually carries passwords) and every private key file (the
 * tls_key keys). Each one that group or others may read is logged at WARN
 * with its path and mode; it is not an error, since the operator may rely
 * on a group on purpose. Returns how many were warned about.
 */
int config_warn_exposed_files(const struct config *cfg, const char *path);

/*
 * SIGHUP: fresh is a configuration just loaded (and validated) from the same
 * file. Every key that may change at run time takes fresh's value (the old
 * values move to fresh, which the caller then frees); keys that need a
 * restart keep their running value and are listed in restart ("[client]
 * group_id, ..."). Returns how many such keys changed.
 */
int config_reload(struct config *live, struct config *fresh, char *restart, size_t len);

/* The [group.NAME] credentials for group, or NULL. */
const struct config_group_auth *config_group_auth(const struct config *cfg, const char *group,
						  size_t group_len);

/* Does the forward admit a connection from sa (AF_INET or AF_INET6; an
 * IPv4-mapped IPv6 address counts as the IPv4 one)? A forward without
 * allowed_sources admits every source. */
struct sockaddr;
bool config_forward_source_allowed(const struct config_forward *f, const struct sockaddr *sa);

/* Format "host:port" ("[v6]:port" for IPv6 literals) into buf. */
void config_addr_format(const struct config_addr *a, char *buf, size_t len);
/* Parse an address value as config_load does; 0 or -EINVAL with err set. */
int config_parse_addr(const char *s, struct config_addr *out, char *err, size_t errlen);
/* Parse an egress_proxy value as config_load does into *out (replacing
 * nothing: free it with config_egress_proxy_free). An empty value leaves it
 * unset. 0, -ENOMEM, or -EINVAL with the reason in why, which never quotes
 * the value (it may hold a password). */
int config_parse_egress_proxy(const char *s, struct config_egress_proxy *out, char *why,
			      size_t whylen);
void config_egress_proxy_free(struct config_egress_proxy *p);
/* Parse a boolean value as config_load does: true/yes/on/1 or
 * false/no/off/0, any case. 0, or -EINVAL if it is none of them. */
int config_parse_bool(const char *s, bool *out);

#endif
