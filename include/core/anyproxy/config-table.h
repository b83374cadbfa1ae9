/*
 * config-table.h — the configuration key table and its value types, shared
 * by the modules that read it: the loader (src/core/config_load.c), reload
 * (config_reload.c) and the docs generator (tools/configdoc). The programs
 * use config.h only.
 *
 *   config.c        the table: sections, keys, per-key checks, cross-key rules
 *                   in words (config_rules[], for the docs)
 *   config_types.c  one descriptor per value type: parse, is_set, differs,
 *                   free, validate, and how the docs name it
 *   config_load.c   defaults, the file (inih through our line reader),
 *                   [group.NAME] sections, the environment, validation
 *   config_reload.c SIGHUP: live keys swap, restart keys are reported
 *   tools/configdoc/configdoc_gen.c  docs/config.md and the reference INIs
 *
 * Adding a key is one row in config.c and one field in struct config;
 * adding a value type is one descriptor in config_types.c.
 */
#ifndef ANYPROXY_CONFIG_TABLE_H
#define ANYPROXY_CONFIG_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anyproxy/config.h"
#include "anyproxy/grammar.h"

/* Longest line of a configuration file, without its line end. inih would
 * silently cut long lines; we refuse them instead. */
#define CONFIG_LINE_MAX_BYTES 1024
/* Items of one list key, all sources together. */
#define CONFIG_LIST_MAX_ITEMS 1024
/* client_id, group_id and [group.NAME]: they travel in the tunnel HELLO
 * and in log lines. */
#define CONFIG_ID_MAX_BYTES ID_MAX_BYTES
/* Rows of the key table (config.c asserts it holds them). */
#define CONFIG_KEYS_MAX 128
/* How much of a bad value an error message repeats. */
#define CONFIG_SHOWN_VALUE_MAX_BYTES 200
#define CONFIG_SHOWN_BYTES (CONFIG_SHOWN_VALUE_MAX_BYTES + 4) /* "..." and NUL */
/* Environment variable names derived from section and key. */
#define CONFIG_ENV_NAME_BYTES 64
/* What a type's parse may write to why: the longest is a list item's
 * registered check (a shown value and its reason). */
#define CONFIG_WHY_BYTES (CONFIG_SHOWN_VALUE_MAX_BYTES + 128)

/* A numeric constant as text, for fixed messages: CONFIG_XSTR(CONFIG_PORT_MAX). */
#define CONFIG_STR(x) #x
#define CONFIG_XSTR(x) CONFIG_STR(x)
/* limits spelled for messages and help texts */
#define CONFIG_ID_MAX_TEXT CONFIG_XSTR(CONFIG_ID_MAX_BYTES)
#define CONFIG_LINE_MAX_TEXT CONFIG_XSTR(CONFIG_LINE_MAX_BYTES)

#define CONFIG_GROUP_HELP                                                                          \
	"Per-group credentials: a [group.NAME] section gives the group NAME its own users' "       \
	"password (and optionally user name), and optionally its own agent credential. Users "     \
	"asking for that group (user name user.NAME) must give auth_username/auth_password "       \
	"instead of the listener's, so one tenant cannot pick another tenant's agents. With "      \
	"agent_password, only agents presenting agent_username/agent_password join NAME (and own " \
	"its client_ids); the shared [gateway] credential no longer can. Groups without a "        \
	"section use the listener's credentials for users and the shared [gateway] credential "    \
	"for agents (unless [gateway] require_group_section is on). Sections may repeat for any "  \
	"number of groups; they reload on SIGHUP (agents whose credential was removed or changed " \
	"are then closed); they have no environment overrides."

#define CONFIG_FORWARD_HELP                                                                        \
	"Port forwarding: a [forward.NAME] section opens listen_addr on the gateway, and each "    \
	"connection to it goes, with no handshake, to target through an agent of group (SSH or a " \
	"web application in a private network, on a gateway port). The agent resolves target and " \
	"applies its allowed_hosts/forbidden_hosts to it as to every proxied target; a group "     \
	"with a [group.NAME] section never falls back to the default group, other groups do "      \
	"while [gateway] fallback_to_default is on. Sections may repeat; NAME is an id (A-Z a-z "  \
	"0-9 . _ : -) that logs and apctl forwards show. The set of forwards and all their keys "  \
	"need a restart (a SIGHUP that changes them is logged and not applied); they have no "     \
	"environment overrides."

struct config_key;

/*
 * A value type (nginx's setters, one place per type). Every function gets
 * the key's field inside struct config.
 *   parse:    value (a file line, a default or the environment) into field,
 *             replacing it (a repeatable type appends). 0; -EINVAL with the
 *             reason in why (CONFIG_WHY_BYTES, without the value if the type
 *             is secret); or -ENOMEM.
 *   is_set:   the key holds a value (for required keys and pairs); NULL: always.
 *   differs:  two fields differ (reload); NULL: a plain value (number, bool,
 *             enum) whose size bytes compare.
 *   free:     release what parse allocated and leave the field empty; NULL:
 *             nothing to free.
 *   validate: checked after the cross-key rules, against the world (a file
 *             exists); NULL: nothing. 0 or -EINVAL with why.
 *   describe: the type as docs/config.md shows it, when doc_name (a fixed
 *             text) cannot say it; NULL: doc_name.
 */
struct config_type {
	size_t size;     /* of the field: reload swaps this many bytes */
	bool secret;     /* never shown in errors, docs or examples; must not be empty */
	bool repeatable; /* may repeat in a file (appends); the environment replaces it */
	int (*parse)(const struct config_key *key, void *field, const char *value, char *why,
		     size_t whylen);
	bool (*is_set)(const void *field);
	bool (*differs)(const void *a, const void *b);
	void (*free)(const struct config_key *key, void *field);
	int (*validate)(const void *field, char *why, size_t whylen);
	void (*describe)(const struct config_key *key, char *buf, size_t len);
	const char *doc_name;
};

extern const struct config_type config_type_string, config_type_secret, config_type_bool,
	config_type_uint32, config_type_addr, config_type_file, config_type_list,
	config_type_log_level, config_type_log_format, config_type_file_mode,
	config_type_egress_proxy;

/* A per-key check run after all sources are applied: 0, or -EINVAL with a
 * reason written to why (without the value if the key is secret). */
typedef int (*config_key_check_fn)(const void *field, char *why, size_t whylen);

struct config_key {
	const char *section;
	const char *name;
	const struct config_type *type;
	unsigned programs;         /* enum config_program bits */
	size_t offset;             /* of the field in struct config */
	const char *default_value; /* parsed like a file value; NULL: none */
	bool required;
	uint32_t min, max;         /* uint32, file_mode: range; addr_list: max items */
	config_key_check_fn check; /* NULL: the type's parsing is enough */
	const char *example;       /* reference-INI value when there is no default */
	const char *help;
	bool restart; /* SIGHUP cannot change it: needs a restart */
	/* list items: checked as each is read (so errors name its line) by
	 * the function registered for this check (config_register_check) */
	enum config_check item_check;
	/* a file key holding a private key: warned about at start when group
	 * or others may read it (config_warn_exposed_files) */
	bool private_file;
};

struct config_section {
	const char *name;
	unsigned programs;
	const char *help;
};

extern const struct config_section config_sections[];
extern const size_t config_nsections;
extern const struct config_key config_keys[];
extern const size_t config_nkeys;
/* The type of a list of addresses ([client] gateway_addr): its key's max
 * is the most addresses it takes. */
extern const struct config_type config_type_addr_list;

/* The cross-key checks of the loader, in words, for docs/config.md. */
extern const char *const config_rules[];
extern const size_t config_nrules;

/* "anyproxy-gateway" or "anyproxy-client". */
const char *config_program_name(enum config_program program);

/* The row that fills the field at offset (aborts on a miss: a bug). */
const struct config_key *config_key_by_offset(size_t offset);
#define CONFIG_KEY_OF(field) config_key_by_offset(offsetof(struct config, field))

static inline void *config_key_field(struct config *cfg, const struct config_key *key)
{
	return (char *)cfg + key->offset;
}

/* The one rule for which keys are secrets: every key whose name ends in
 * "password", in the table (whose type must then be secret, checked at
 * every load) and in [group.NAME] sections alike. */
bool config_secret_key_name(const char *name);
#define CONFIG_EMPTY_SECRET_WHY                                               \
	"empty secret: an empty password is refused (give a value, or leave " \
	"the key out where it is optional)"

/* SECTION_KEY in upper case, '.' turned into '_': PROXY_HTTP_LISTEN_ADDR. */
void config_env_name(const struct config_key *key, char out[CONFIG_ENV_NAME_BYTES]);

/* A copy of untrusted text fit for an error line: printable ASCII only,
 * cut to CONFIG_SHOWN_VALUE_MAX_BYTES with "...". Returns out. */
const char *config_shown(const char *s, char out[CONFIG_SHOWN_BYTES]);

/* A DNS name of [A-Za-z0-9._-] labels or a dotted IPv4 address / an IPv6
 * literal without brackets: NULL, or the reason it is not. */
const char *config_hostname_problem(const char *host, size_t len);
const char *config_ipv6_problem(const char *host, size_t len);

/* Free a string field, zeroing it first when it holds a secret. */
void config_free_string(char **s, bool secret);

/* Credentials: at most 255 bytes (the SOCKS5 limit, used for all); a proxy
 * username also has no '.' (users send username.group-id), an HTTP one no
 * ':' either (Basic authentication). field points to a char *. */
int config_check_credential(const void *field, char *why, size_t whylen);
int config_check_socks5_username(const void *field, char *why, size_t whylen);
int config_check_http_username(const void *field, char *why, size_t whylen);

/* Two listening addresses that would share a port: the same port on the
 * same host, or on any host when either listens on all addresses. */
bool config_addrs_collide(const struct config_addr *a, const struct config_addr *b);

/* [forward.NAME] sections (config_forward.c), for the loader and reload.
 * open: a section header (name[0..len) after the prefix); pair: one of its
 * keys, into the last section opened; check: after the file, required keys
 * and listening ports (*line: the section's); each 0, -EINVAL with the
 * reason in why, or -ENOMEM. */
int config_forward_open(struct config *cfg, const char *name, size_t len, int line, char *why,
			size_t whylen);
int config_forward_pair(struct config *cfg, const char *key, const char *value, char *why,
			size_t whylen);
int config_forwards_check(const struct config *cfg, int *line, char *why, size_t whylen);
void config_forwards_free(struct config *cfg);
/* Do the two configurations' forwards differ in anything? */
bool config_forwards_differ(const struct config *a, const struct config *b);

/* The function registered for a check, or NULL. */
config_item_check_fn config_registered_check(enum config_check which);

#endif
