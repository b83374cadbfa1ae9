/*
 * acl.h — host access control for the agent: `allowed_hosts` and
 * `forbidden_hosts` (docs/acl.md has the pattern language and examples).
 *
 * Pure apart from malloc and PCRE2 (compiling `~REGEX` rules, once per
 * configuration load or reload) and two log lines: DEBUG once when PCRE2's
 * JIT cannot be used, WARN once per rule when a regex reaches its match
 * limits. Canonicalising and matching do no other I/O; matching a regex
 * reuses memory the list holds (PCRE2 may grow it, up to its heap limit).
 * A compiled list does not change: threads may share it (a match running
 * while another thread matches the same list allocates its own match
 * data), and a reload compiles a new list rather than changing the old one.
 *
 * How the agent uses it, for OPEN(target, port):
 *
 *   1. A domain target goes through acl_canonical_host(). Refuse the target
 *      if it fails. If the result is an address (`127.1`, `[::1]`, ...),
 *      never resolve it: go to step 3 with that one address and
 *      name_allowed = false. A target that arrived as an IPv4/IPv6 address
 *      does the same.
 *   2. acl_check_name() on the canonical name; deny at once unless it says
 *      ACL_ALLOW. It also says whether the name itself is allowed.
 *   3. Resolve the canonical name (once), run acl_check_addr() on every
 *      address, and dial only the addresses that got ACL_ALLOW, in the
 *      resolver's order, never resolving again. If none did, deny, naming
 *      the first denial's verdict and rule.
 *
 * Semantics: a forbidden rule matching the name or an address denies.
 * Then, when the allowed list is non-empty, each address dialled must be
 * admitted: its name matched an allowed rule (so an allowed name admits
 * whatever it resolves to, unless forbidden), or the address itself did.
 * Name rules never match an address and address rules never match a name;
 * a target given as an address is checked only as an address.
 *
 * Named host sets (`@loopback`, `@private`, `@local`) are address rules
 * over fixed ranges, except `@local`: the agent host's own addresses, which
 * the caller reads (getifaddrs) and hands to acl_compile, so a list holds a
 * snapshot and a reload compiles a fresh one.
 *
 * Functions follow common.h: 0 or a negative errno value.
 */
#ifndef ANYPROXY_ACL_H
#define ANYPROXY_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "anyproxy/grammar.h"

#define ACL_NAME_MAX GRAMMAR_HOST_MAX   /* bytes of a canonical host name, no trailing dot */
#define ACL_LABEL_MAX GRAMMAR_LABEL_MAX /* bytes of one label of a host name */
#define ACL_PATTERN_MAX 1024            /* bytes of one pattern (a configuration line's worth) */
#define ACL_ADDR_BYTES 16               /* room for an IPv6 address; IPv4 uses the first 4 */

struct acl;      /* a compiled list of rules */
struct acl_rule; /* one rule of a list; lives as long as its list */

/* An address: family AF_INET (bytes[0..3], the rest zero) or AF_INET6. */
struct acl_addr {
	int family;
	uint8_t bytes[ACL_ADDR_BYTES];
};

enum acl_host_kind {
	ACL_HOST_NAME = 1, /* resolve `name`, then check every address */
	ACL_HOST_ADDR,     /* dial `addr` directly; never resolve */
};

struct acl_host {
	enum acl_host_kind kind;
	char name[ACL_NAME_MAX + 1]; /* ACL_HOST_NAME: canonical, NUL-terminated; else "" */
	struct acl_addr addr;        /* ACL_HOST_ADDR: the address the text means */
};

/*
 * Canonicalise a target host from the wire (len bytes at name, any bytes,
 * not NUL-terminated; nothing past len is read). A name is lower-cased and
 * loses one trailing dot; it must then be 1..ACL_NAME_MAX bytes of
 * [a-z0-9-_.] in labels of 1..ACL_LABEL_MAX bytes (grammar_host_name), so
 * percent-encoding, backslash escapes, NUL, spaces and non-ASCII bytes are refused. Every
 * IPv4 spelling that inet_aton() accepts (`127.1`, `2130706433`,
 * `0x7f.0.0.1`, `0177.0.0.1`) and every IPv6 literal, bare or in brackets,
 * becomes the address it means (ACL_HOST_ADDR). A name whose last label
 * looks numeric (digits, or 0x and hex digits) but is not an IPv4 spelling
 * is refused: resolvers disagree about such names.
 *
 * Returns 0 and fills *out, or -EINVAL with *why (if not NULL) pointing to
 * a static one-line reason; *out is written only on success. The reason
 * never quotes the input, which is hostile.
 */
int acl_canonical_host(const uint8_t *name, size_t len, struct acl_host *out, const char **why);

/* The agent host's own addresses: what `@local` stands for. */
struct acl_local {
	const struct acl_addr *addrs; /* count addresses; may be NULL when count is 0 */
	size_t count;
};

/*
 * Compile n patterns into a list. patterns may be NULL when n is 0; an
 * empty list matches nothing. `@local` rules take a copy of local's
 * addresses; with local NULL they match nothing, which is only fit for
 * checking the syntax of a configuration. On success returns 0 and stores the list in
 * *out (free it with acl_free). On failure returns -EINVAL (a bad pattern)
 * or -ENOMEM, stores the index of the failing pattern in *bad_index (if not
 * NULL), writes "'<pattern>': <why>" to err, and leaves *out unchanged.
 * The caller prefixes the file, line and key.
 */
int acl_compile(const char *const *patterns, size_t n, const struct acl_local *local,
		struct acl **out, size_t *bad_index, char *err, size_t errlen);
void acl_free(struct acl *acl);

/*
 * The syntax of one pattern, as the configuration checks each list item
 * (the agent registers it: config_register_check, CONFIG_CHECK_HOST_PATTERN).
 * `@local` needs no interface addresses here; the agent compiles its lists
 * again with them. 0, or -EINVAL with err as acl_compile writes it.
 */
int acl_check_pattern(const char *pattern, char *err, size_t errlen);

/* Rules in the list; a NULL list is empty. */
size_t acl_rule_count(const struct acl *acl);

/*
 * What a list does, which decides how it reads a regex rule that could not
 * decide (its match reached PCRE2's match, depth or heap limit, or found no
 * memory): a forbidding list reads it as a match, an admitting one as no
 * match, so an undecided rule never lets a target through.
 */
enum acl_role {
	ACL_FORBIDS, /* forbidden_hosts */
	ACL_ADMITS,  /* allowed_hosts */
};

/*
 * The first rule, in list order, that matches a canonical host name (from
 * acl_canonical_host) and port, or NULL; an undecided regex rule reads as
 * role says. Name, domain, regex and any-host rules take part; address
 * rules never match a name. A rule without a port matches every port,
 * including 0. acl may be NULL (empty).
 */
const struct acl_rule *acl_match_name(const struct acl *acl, const char *name, uint16_t port,
				      enum acl_role role);

/*
 * The first rule that matches an address (4 bytes at addr for AF_INET, 16
 * for AF_INET6) and port, or NULL; any other family matches nothing. Only
 * address, CIDR, host set and any-host rules take part. The address is
 * matched as the destination a connect() to it reaches: IPv4-mapped
 * (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d, except :: and ::1)
 * addresses as the IPv4 address they embed, 0.0.0.0 as 127.0.0.1 and :: as
 * ::1 (Linux connects an unspecified destination to loopback). A NAT64
 * address (64:ff9b::a.b.c.d, RFC 6052) matches a rule that matches it
 * either as itself or as the IPv4 address it embeds (read the same way).
 * 6to4 and Teredo addresses are matched as the IPv6 addresses they are.
 */
const struct acl_rule *acl_match_addr(const struct acl *acl, int family, const uint8_t *addr,
				      uint16_t port);

/* The pattern a rule was compiled from, exactly as written (for logs). */
const char *acl_rule_text(const struct acl_rule *rule);

enum acl_verdict {
	ACL_ALLOW,            /* go on (name step) / dial this address */
	ACL_DENY_FORBIDDEN,   /* a forbidden rule matched; *rule names it */
	ACL_DENY_NOT_ALLOWED, /* the allowed list is non-empty and admits nothing */
};

/* "allowed", "forbidden", "not allowed" */
const char *acl_verdict_name(enum acl_verdict verdict);

/*
 * Step 2 for a canonical name, reading the forbidden list as ACL_FORBIDS
 * and the allowed one as ACL_ADMITS. ACL_DENY_FORBIDDEN when a forbidden
 * rule matches the name. ACL_DENY_NOT_ALLOWED when the allowed list is
 * non-empty, no allowed rule matches the name and none could match an
 * address at this port either (so nothing is resolved in vain). Otherwise ACL_ALLOW, with
 * *name_allowed telling whether the name itself is allowed (an allowed rule
 * matched it, or the allowed list is empty); when it is false the resolved
 * addresses must earn their own admission in acl_check_addr.
 * *rule is the forbidden or allowed rule that decided, or NULL.
 * Either list may be NULL (empty).
 */
enum acl_verdict acl_check_name(const struct acl *forbidden, const struct acl *allowed,
				const char *name, uint16_t port, bool *name_allowed,
				const struct acl_rule **rule);

/*
 * Step 3 for one address (as acl_match_addr reads it). ACL_DENY_FORBIDDEN
 * when a forbidden rule matches it; else ACL_ALLOW when name_allowed (the
 * value acl_check_name gave; false for a target given as an address), when
 * the allowed list is empty, or when an allowed rule matches the address;
 * else ACL_DENY_NOT_ALLOWED, which is also the verdict for an address of
 * any other family. *rule is the rule that decided, or NULL.
 */
enum acl_verdict acl_check_addr(const struct acl *forbidden, const struct acl *allowed, int family,
				const uint8_t *addr, uint16_t port, bool name_allowed,
				const struct acl_rule **rule);

#endif
