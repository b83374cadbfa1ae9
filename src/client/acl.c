/*
 * acl.c — host access control: pattern compiler, target canonicaliser and
 * matcher (see acl.h for the contract and docs/acl.md for the language).
 *
 * Targets come from a hostile user, so canonicalisation accepts a small
 * alphabet and turns every numeric spelling into the address the resolver
 * would have made of it; rules are normalised the same way when compiled,
 * so a rule and a target that mean the same destination compare equal.
 * Matching is a linear scan in list order (lists are short, and the first
 * matching rule is what the log line names).
 */
#include "anyproxy/acl.h"
#include "anyproxy/common.h"
#include "anyproxy/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8 /* names and patterns are bytes */
#include <pcre2.h>

#define IPV4_BYTES 4
#define IPV6_BYTES 16
#define IPV4_BITS 32
#define IPV6_BITS 128
#define MAPPED_PREFIX_BITS 96   /* ::ffff:0:0/96 and ::/96 embed IPv4 in the last 32 bits */
#define MAPPED_MARKER_OFFSET 10 /* the 0xffff of ::ffff:a.b.c.d */
#define EMBEDDED_IPV4_OFFSET 12
#define IPV6_TEXT_MAX (INET6_ADDRSTRLEN - 1)
#define PORT_DIGITS_MAX 5   /* 65535 */
#define PREFIX_DIGITS_MAX 3 /* 128 */
#define PORT_ANY 0
#define ERR_QUOTE_MAX 64    /* bytes of a pattern quoted in an error */
#define REGEX_ERROR_MAX 128 /* bytes of a PCRE2 error message */
/* Whole-name matching (see compile_regex); case-insensitive, as glibc's
 * REG_ICASE was, so `~DB\.corp` still matches the lower-cased name; bytes,
 * never UTF-8 or Unicode properties (a canonical name is ASCII). */
#define REGEX_OPTIONS                                                                              \
	(PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_CASELESS | PCRE2_NEVER_UTF | PCRE2_NEVER_UCP | \
	 PCRE2_NEVER_BACKSLASH_C)
/* Bounds on one match (docs/acl.md "Limits"). A name is at most 253 bytes:
 * a sensible regex needs at most a few hundred backtracking steps on the
 * longest, and a match that reaches the limit costs about 0.3 ms (JIT) or
 * 2 ms (interpreter) instead of seconds (measured: `(a+)+[0-9]` on 63 a's).
 * Four `.*` can need 200 000 (JIT) to 1 000 000 (interpreter) steps on a
 * 253-byte name that almost matches, and so reach it: such a regex denies
 * there (docs/acl.md says to match labels with [^.]+ instead). */
#define REGEX_MATCH_LIMIT 100000
#define REGEX_DEPTH_LIMIT 10000   /* nested backtracking points (interpreter) */
#define REGEX_HEAP_LIMIT_KIB 4096 /* the interpreter's backtracking memory, in KiB */
#define REGEX_NEST_MAX 64         /* nested parentheses, when compiling */
#define LOOPBACK_IPV4 0x7f000001u
/* RFC 6052's well-known NAT64 prefix, 64:ff9b::/96: the last 32 bits are
 * the IPv4 destination a translator connects to. */
#define NAT64_PREFIX_BYTES 12
static const uint8_t nat64_prefix[NAT64_PREFIX_BYTES] = { 0x00, 0x64, 0xff, 0x9b };
#define DESTINATIONS_MAX 2 /* an address, and the IPv4 inside a NAT64 one */
#define HOST_SET_PREFIX '@'

enum rule_kind {
	RULE_ANY_HOST,   /* `*`, `.*`, `*:PORT` */
	RULE_NAME,       /* example.com */
	RULE_SUBDOMAINS, /* *.example.com: proper subdomains only */
	RULE_DOMAIN,     /* .example.com: the domain and its subdomains */
	RULE_REGEX,      /* ~REGEX on the whole canonical name */
	RULE_NET,        /* an address or CIDR, normalised like a destination */
	RULE_SET,        /* @loopback, @private, @local: a named list of networks */
};

struct net {
	int family;
	uint8_t bytes[ACL_ADDR_BYTES];
	unsigned prefix_bits;
};

struct acl_rule {
	enum rule_kind kind;
	uint16_t port; /* PORT_ANY: every port */
	char *text;    /* the pattern as written */
	union {
		struct {
			char text[ACL_NAME_MAX + 1];
			size_t len;
		} name; /* RULE_NAME, RULE_SUBDOMAINS, RULE_DOMAIN: canonical */
		struct regex *regex;
		struct net net;
		struct {
			const struct net *nets; /* a static table, or owned */
			size_t count;
			struct net *owned; /* @local's copy of the addresses; freed with the rule */
		} set;
	};
};

struct acl {
	size_t count;
	struct regex_scratch *scratch; /* NULL when no rule is a regex */
	struct acl_rule rules[];
};

/* ---- canonicalisation ----------------------------------------------- */

/* Locale-free character classes: the input is bytes, not text. */
static bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static uint8_t to_lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c - 'A' + 'a') : c;
}

static bool is_alnum(uint8_t c)
{
	return is_digit(c) || (to_lower(c) >= 'a' && to_lower(c) <= 'z');
}

/* An IPv6 literal without brackets or zone: n bytes of hex digits, ':'
 * and '.', which inet_pton must accept whole. */
static bool parse_ipv6_text(const uint8_t *p, size_t n, uint8_t out[IPV6_BYTES])
{
	char text[IPV6_TEXT_MAX + 1];
	size_t i;

	if (n == 0 || n > IPV6_TEXT_MAX)
		return false;
	for (i = 0; i < n; i++)
		if (grammar_hex_value(p[i]) < 0 && p[i] != ':' && p[i] != '.')
			return false;
	memcpy(text, p, n);
	text[n] = '\0';
	return inet_pton(AF_INET6, text, out) == 1;
}

/* Check the name (grammar_host_name), drop one trailing dot and
 * lower-case it. out has room for ACL_NAME_MAX + 1 bytes. */
static int canonical_name(const uint8_t *in, size_t len, char *out, const char **why)
{
	int n = grammar_host_name((const char *)in, len, why);

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++)
		out[i] = (char)to_lower(in[i]);
	out[n] = '\0';
	return 0;
}

/* Digits, or 0x and hex digits: what a part of an IPv4 spelling looks like
 * (a lower-cased label). */
static bool label_looks_numeric(const char *label)
{
	bool hex = label[0] == '0' && label[1] == 'x';
	const char *p = hex ? label + 2 : label;

	for (; *p; p++)
		if (!(hex ? grammar_hex_value((uint8_t)*p) >= 0 : is_digit((uint8_t)*p)))
			return false;
	return true;
}

int acl_canonical_host(const uint8_t *name, size_t len, struct acl_host *out, const char **why)
{
	const char *ignored;
	struct acl_host host;
	const char *last_label;
	struct in_addr v4;

	if (!why)
		why = &ignored;
	memset(&host, 0, sizeof(host));
	if (len && name[0] == '[') {
		if (len < 2 || name[len - 1] != ']' ||
		    !parse_ipv6_text(name + 1, len - 2, host.addr.bytes)) {
			*why = "brackets must hold exactly an IPv6 address";
			return -EINVAL;
		}
		host.kind = ACL_HOST_ADDR;
		host.addr.family = AF_INET6;
	} else if (len && memchr(name, ':', len)) {
		if (!parse_ipv6_text(name, len, host.addr.bytes)) {
			*why = "':' in a host name that is not an IPv6 address";
			return -EINVAL;
		}
		host.kind = ACL_HOST_ADDR;
		host.addr.family = AF_INET6;
	} else {
		if (canonical_name(name, len, host.name, why) < 0)
			return -EINVAL;
		last_label = strrchr(host.name, '.');
		last_label = last_label ? last_label + 1 : host.name;
		if (label_looks_numeric(last_label)) {
			/* What getaddrinfo would take for an address, it is one. */
			if (!inet_aton(host.name, &v4)) {
				*why = "numeric last label, but not an IPv4 address";
				return -EINVAL;
			}
			host.kind = ACL_HOST_ADDR;
			host.addr.family = AF_INET;
			memcpy(host.addr.bytes, &v4, IPV4_BYTES);
			host.name[0] = '\0';
		} else {
			host.kind = ACL_HOST_NAME;
		}
	}
	*out = host;
	return 0;
}

/* ---- addresses ------------------------------------------------------- */

static bool is_zero(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static bool is_mapped(const uint8_t *v6)
{
	return is_zero(v6, MAPPED_MARKER_OFFSET) && v6[MAPPED_MARKER_OFFSET] == 0xff &&
	       v6[MAPPED_MARKER_OFFSET + 1] == 0xff;
}

/* ::a.b.c.d, not counting :: and ::1, which are IPv6 addresses of their own. */
static bool is_compatible(const uint8_t *v6)
{
	return is_zero(v6, EMBEDDED_IPV4_OFFSET) && get_be32(v6 + EMBEDDED_IPV4_OFFSET) > 1;
}

static bool is_nat64(const uint8_t *v6)
{
	return memcmp(v6, nat64_prefix, NAT64_PREFIX_BYTES) == 0;
}

/*
 * The destination a connect() to this address reaches, which is what
 * rules are about: embedded IPv4 as IPv4, and the unspecified addresses
 * as loopback (Linux connects 0.0.0.0 to 127.0.0.1 and :: to ::1).
 * Returns false for a family that is neither IPv4 nor IPv6.
 */
static bool destination(int family, const uint8_t *addr, struct acl_addr *out)
{
	memset(out, 0, sizeof(*out));
	if (family == AF_INET6 && !is_mapped(addr) && !is_compatible(addr)) {
		out->family = AF_INET6;
		memcpy(out->bytes, addr, IPV6_BYTES);
		if (is_zero(addr, IPV6_BYTES))
			out->bytes[IPV6_BYTES - 1] = 1; /* ::1 */
		return true;
	}
	if (family == AF_INET6)
		addr += EMBEDDED_IPV4_OFFSET;
	else if (family != AF_INET)
		return false;
	out->family = AF_INET;
	if (is_zero(addr, IPV4_BYTES))
		put_be32(out->bytes, LOOPBACK_IPV4);
	else
		memcpy(out->bytes, addr, IPV4_BYTES);
	return true;
}

/*
 * Every destination an address stands for (see destination()): one, or for
 * a NAT64 address also the IPv4 address a translator turns it into, so an
 * IPv4 rule cannot be walked around through 64:ff9b::/96. Returns how many
 * were written to out (0 for another family).
 */
static size_t destinations(int family, const uint8_t *addr, struct acl_addr out[DESTINATIONS_MAX])
{
	if (!destination(family, addr, &out[0]))
		return 0;
	if (out[0].family != AF_INET6 || !is_nat64(out[0].bytes))
		return 1;
	destination(AF_INET, out[0].bytes + EMBEDDED_IPV4_OFFSET, &out[1]);
	return 2;
}

static bool net_contains(const struct net *net, const struct acl_addr *a)
{
	unsigned whole = net->prefix_bits / 8, rest = net->prefix_bits % 8;
	uint8_t mask;

	if (net->family != a->family || memcmp(net->bytes, a->bytes, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	mask = (uint8_t)(0xff << (8 - rest));
	return ((net->bytes[whole] ^ a->bytes[whole]) & mask) == 0;
}

/* Clear the bits after prefix_bits; returns true if any was set. */
static bool clear_host_bits(uint8_t *bytes, size_t size, unsigned prefix_bits)
{
	bool was_set = false;
	size_t i;

	for (i = 0; i < size; i++) {
		unsigned first_bit = (unsigned)i * 8;
		uint8_t keep;

		if (prefix_bits >= first_bit + 8)
			keep = 0xff;
		else if (prefix_bits <= first_bit)
			keep = 0;
		else
			keep = (uint8_t)(0xff << (8 - (prefix_bits - first_bit)));
		if (bytes[i] & (uint8_t)~keep)
			was_set = true;
		bytes[i] &= keep;
	}
	return was_set;
}

/* ---- pattern compiler ------------------------------------------------ */

/* Writes "'<pattern>': <message>" to err and returns -EINVAL. Control and
 * non-ASCII bytes of the pattern show as '?', and a long one is cut. */
static int pattern_error(char *err, size_t errlen, const char *pattern, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int pattern_error(char *err, size_t errlen, const char *pattern, const char *fmt, ...)
{
	char quoted[ERR_QUOTE_MAX + 1];
	size_t i, n = strlen(pattern);
	va_list ap;
	int used;

	if (!err || errlen == 0)
		return -EINVAL;
	for (i = 0; i < n && i < ERR_QUOTE_MAX; i++) {
		uint8_t c = (uint8_t)pattern[i];

		quoted[i] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
	}
	quoted[i] = '\0';
	used = snprintf(err, errlen, "'%s%s': ", quoted, n > ERR_QUOTE_MAX ? "..." : "");
	if (used >= 0 && (size_t)used < errlen) {
		va_start(ap, fmt);
		vsnprintf(err + used, errlen - (size_t)used, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* 1..max_digits decimal digits (all of s..s+n) whose value is at most max. */
static bool parse_decimal(const char *s, size_t n, size_t max_digits, unsigned max, unsigned *out)
{
	unsigned v = 0;
	size_t i;

	if (n == 0 || n > max_digits)
		return false;
	for (i = 0; i < n; i++) {
		if (!is_digit((uint8_t)s[i]))
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return false;
	*out = v;
	return true;
}

static int parse_port(const char *pattern, const char *s, uint16_t *port, char *err, size_t errlen)
{
	unsigned v;

	if (strcmp(s, "*") == 0) {
		*port = PORT_ANY;
		return 0;
	}
	if (*s == '\0')
		return pattern_error(err, errlen, pattern, "missing port after ':'");
	if (!parse_decimal(s, strlen(s), PORT_DIGITS_MAX, UINT16_MAX, &v) || v == 0)
		return pattern_error(err, errlen, pattern,
				     "bad port '%s' (1 to 65535, or * for every port)", s);
	*port = (uint16_t)v;
	return 0;
}

/* How an address rule was written, to echo the same style in errors. */
struct net_spelling {
	bool bracketed;
	const char *port_suffix; /* ":443", or "" */
};

/*
 * Normalise a compiled network like a destination (see destination()),
 * refusing what would silently mean something else.
 */
static int normalise_net(const char *pattern, struct net *net, char *err, size_t errlen)
{
	if (net->family == AF_INET6 && net->prefix_bits >= MAPPED_PREFIX_BITS) {
		if (is_mapped(net->bytes)) {
			net->family = AF_INET;
			memmove(net->bytes, net->bytes + EMBEDDED_IPV4_OFFSET, IPV4_BYTES);
			memset(net->bytes + IPV4_BYTES, 0, IPV6_BYTES - IPV4_BYTES);
			net->prefix_bits -= MAPPED_PREFIX_BITS;
		} else if (is_compatible(net->bytes)) {
			/* Also the likely reading of the typo ::1:443 for [::1]:443. */
			return pattern_error(err, errlen, pattern,
					     "IPv4-compatible IPv6 address (deprecated); write the "
					     "IPv4 address, and [IPv6]:PORT for a port");
		}
	}
	if (net->prefix_bits == (net->family == AF_INET ? IPV4_BITS : IPV6_BITS) &&
	    is_zero(net->bytes, net->family == AF_INET ? IPV4_BYTES : IPV6_BYTES))
		return pattern_error(err, errlen, pattern,
				     "the unspecified address is not a destination (a connection "
				     "to it reaches loopback); write %s",
				     net->family == AF_INET ? "127.0.0.1" : "::1");
	return 0;
}

/* An address or CIDR (text is NUL-terminated, without brackets or port). */
static int parse_net(const char *pattern, const char *text, int family,
		     const struct net_spelling *spelling, struct net *net, char *err, size_t errlen)
{
	char addr_text[ACL_PATTERN_MAX + 1];
	const unsigned max_bits = family == AF_INET ? IPV4_BITS : IPV6_BITS;
	const size_t size = family == AF_INET ? IPV4_BYTES : IPV6_BYTES;
	const char *slash = strchr(text, '/');
	size_t addr_len = slash ? (size_t)(slash - text) : strlen(text);
	char masked[INET6_ADDRSTRLEN];

	memset(net, 0, sizeof(*net));
	net->family = family;
	net->prefix_bits = max_bits;
	memcpy(addr_text, text, addr_len);
	addr_text[addr_len] = '\0';
	if (inet_pton(family, addr_text, net->bytes) != 1)
		return pattern_error(err, errlen, pattern, "bad %s address '%s'",
				     family == AF_INET ? "IPv4" : "IPv6", addr_text);
	if (slash && !parse_decimal(slash + 1, strlen(slash + 1), PREFIX_DIGITS_MAX, max_bits,
				    &net->prefix_bits))
		return pattern_error(err, errlen, pattern, "bad prefix length '%s' (0 to %u)",
				     slash + 1, max_bits);
	if (clear_host_bits(net->bytes, size, net->prefix_bits)) {
		inet_ntop(family, net->bytes, masked, sizeof(masked));
		return pattern_error(err, errlen, pattern,
				     "host bits set; did you mean %s%s/%u%s%s?",
				     spelling->bracketed ? "[" : "", masked, net->prefix_bits,
				     spelling->bracketed ? "]" : "", spelling->port_suffix);
	}
	return normalise_net(pattern, net, err, errlen);
}

/* ---- regular expressions --------------------------------------------- */

/*
 * A `~REGEX` is PCRE2 syntax, compiled once per load and matched by PCRE2's
 * JIT where it can run (by its interpreter otherwise). Backtracking can
 * take exponential time, so every match runs under the limits of
 * regex_limits(): a match that reaches one is undecided, and an undecided
 * rule denies (enum acl_role in acl.h). Threads may share a list, so the
 * match data a match writes is borrowed from the list, by one match at a
 * time, and only a concurrent match allocates its own.
 */
struct regex {
	pcre2_code *code;
	atomic_flag limit_logged; /* the first undecided match is logged, per rule */
};

struct regex_scratch {
	pcre2_match_context *limits; /* read only once built */
	pcre2_match_data *data;      /* for the thread that holds `busy` */
	atomic_flag busy;
};

/* Logged once per process when JIT cannot be used (not built in, or no
 * executable memory): matching is then slower, not different. */
static atomic_flag jit_fallback_logged = ATOMIC_FLAG_INIT;

/* The byte after the character class that starts at p ('['), or the end
 * of the string when it is unterminated (pcre2_compile then says so). As
 * PCRE2 reads a class: '^' may open it, a ']' right after that is a
 * member, a backslash escapes the next byte, and "[:name:]" is a POSIX
 * class inside it. */
static const char *skip_class(const char *p)
{
	const char *close;

	p++;
	if (*p == '^')
		p++;
	if (*p == ']')
		p++;
	while (*p && *p != ']') {
		close = p[0] == '[' && p[1] == ':' ? strchr(p + 2, ']') : NULL;
		if (close && close > p + 2 && close[-1] == ':')
			p = close + 1;
		else
			p += p[0] == '\\' && p[1] ? 2 : 1;
	}
	return *p ? p + 1 : p;
}

/* The byte after the syntax of a group opener at p ("(?" or "(*"): the
 * option letters or verb name and the ':' that may end them, as in
 * "(?i:", "(?:" and "(*MARK:"; a comment "(?#...)" as a whole. */
static const char *skip_group_syntax(const char *p)
{
	const char *close;

	if (p[1] == '?' && p[2] == '#') {
		close = strchr(p, ')');
		return close ? close + 1 : p + strlen(p);
	}
	for (p += 2; *p && (is_alnum((uint8_t)*p) || *p == '_' || *p == '-' || *p == '^'); p++)
		;
	return *p == ':' ? p + 1 : p;
}

/* Whether p ('{') starts a repetition PCRE2 reads as one: {n}, {n,},
 * {n,m}. Anything else is literal text to PCRE2 10.42. */
static bool is_repetition(const char *p)
{
	const char *q = p + 1;

	if (!is_digit((uint8_t)*q))
		return false;
	while (is_digit((uint8_t)*q))
		q++;
	if (*q == ',')
		for (q++; is_digit((uint8_t)*q); q++)
			;
	return *q == '}';
}

/*
 * What a host-name regex never means and what would hide a mistake. A ':'
 * outside a class and outside group syntax: never in a canonical name, and
 * `~re:443` would be a regex that silently never matches, not a port. A
 * '{' that starts no repetition: glibc's regcomp read "{,n}" as {0,n} and
 * refused "a{2", PCRE2 reads both as literal text, which no name holds.
 * GNU's \< \> \` \' anchors: PCRE2 reads them as literal bytes no name
 * holds. NULL when clean.
 */
static const char *regex_refusal(const char *p)
{
	static const char *const port =
		"a regex takes no port, and ':' never occurs in a host name";
	const char *end;

	while (*p) {
		if (p[0] == '\\' && p[1] == 'Q') { /* literal up to \E */
			end = strstr(p + 2, "\\E");
			end = end ? end : p + strlen(p);
			if (memchr(p + 2, ':', (size_t)(end - (p + 2))))
				return port;
			p = *end ? end + 2 : end;
		} else if (*p == '\\') {
			if (p[1] == ':')
				return port;
			if (p[1] && strchr("<>`'", p[1]))
				return "\\<, \\>, \\` and \\' are GNU regex anchors, which PCRE2 "
				       "reads as "
				       "literal bytes: use \\b, ^ or $";
			p += p[1] ? 2 : 1;
			if (p[-1] != '\\' && strchr("gkxopP", p[-1]) && *p == '{') {
				/* \g{-1}, \x{41}, \p{L}...: the braces are the escape's */
				end = strchr(p, '}');
				p = end ? end + 1 : p + strlen(p);
			}
		} else if (*p == '[') {
			p = skip_class(p);
		} else if (p[0] == '(' && (p[1] == '?' || p[1] == '*')) {
			p = skip_group_syntax(p);
		} else if (*p == ':') {
			return port;
		} else if (*p == '{' && !is_repetition(p)) {
			return "bad regular expression: a '{' that starts no repetition {n}, {n,} "
			       "or {n,m} is literal text in PCRE2 (write {0,n} for {,n})";
		} else {
			p++;
		}
	}
	return NULL;
}

/* The limits every match runs under (docs/acl.md "Regular expressions"). */
static pcre2_match_context *regex_limits(void)
{
	pcre2_match_context *limits = pcre2_match_context_create(NULL);

	if (!limits)
		return NULL;
	pcre2_set_match_limit(limits, REGEX_MATCH_LIMIT);
	pcre2_set_depth_limit(limits, REGEX_DEPTH_LIMIT);
	pcre2_set_heap_limit(limits, REGEX_HEAP_LIMIT_KIB);
	return limits;
}

static void free_scratch(struct regex_scratch *s)
{
	if (!s)
		return;
	pcre2_match_data_free(s->data);
	pcre2_match_context_free(s->limits);
	free(s);
}

/* What a list with regex rules needs to match them; NULL without memory. */
static struct regex_scratch *new_scratch(void)
{
	struct regex_scratch *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	atomic_flag_clear(&s->busy);
	s->limits = regex_limits();
	/* one pair: whether it matched is all a rule asks */
	s->data = pcre2_match_data_create(1, NULL);
	if (!s->limits || !s->data) {
		free_scratch(s);
		return NULL;
	}
	return s;
}

static void free_regex(struct regex *re)
{
	if (!re)
		return;
	pcre2_code_free(re->code);
	free(re);
}

/*
 * Compile the regex text (the pattern after its '~'). The anchoring is
 * PCRE2's own (PCRE2_ANCHORED | PCRE2_ENDANCHORED): a match starts at the
 * name's first byte and must end at its last, or PCRE2 backtracks into the
 * other ways through the expression, so "the regex matches" means "some
 * way through it spans the whole name" as POSIX's longest match did, for
 * every alternative, and without rewriting the text (where a stray ')'
 * could reopen it). Compiling is bounded by the pattern length, the
 * nesting limit and PCRE2's compiled-size limit; JIT is optional.
 */
static int compile_regex(const char *pattern, const char *text, struct regex **out, char *err,
			 size_t errlen)
{
	PCRE2_UCHAR why[REGEX_ERROR_MAX];
	pcre2_compile_context *context;
	const char *refusal;
	struct regex *re;
	PCRE2_SIZE offset;
	uint32_t backrefs = 0;
	int code, rc;

	if (*text == '\0')
		return pattern_error(err, errlen, pattern, "empty regular expression after '~'");
	refusal = regex_refusal(text);
	if (refusal)
		return pattern_error(err, errlen, pattern, "%s", refusal);
	re = calloc(1, sizeof(*re));
	context = pcre2_compile_context_create(NULL);
	if (!re || !context) {
		free(re);
		pcre2_compile_context_free(context);
		return -ENOMEM;
	}
	atomic_flag_clear(&re->limit_logged);
	pcre2_set_max_pattern_length(context, ACL_PATTERN_MAX);
	pcre2_set_parens_nest_limit(context, REGEX_NEST_MAX);
	re->code = pcre2_compile((PCRE2_SPTR)text, strlen(text), REGEX_OPTIONS, &code, &offset,
				 context);
	pcre2_compile_context_free(context);
	if (!re->code) {
		free(re);
		if (code == PCRE2_ERROR_HEAP_FAILED)
			return -ENOMEM;
		pcre2_get_error_message(code, why, sizeof(why));
		/* the offset counts from the '~', as the quoted pattern reads */
		return pattern_error(err, errlen, pattern,
				     "bad regular expression at offset %zu: %s", (size_t)offset + 1,
				     (const char *)why);
	}
	pcre2_pattern_info(re->code, PCRE2_INFO_BACKREFMAX, &backrefs);
	if (backrefs) {
		free_regex(re);
		return pattern_error(err, errlen, pattern, "back-references are not supported");
	}
	rc = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
	if (rc != 0 && !atomic_flag_test_and_set(&jit_fallback_logged)) {
		pcre2_get_error_message(rc, why, sizeof(why));
		log_debug("Host regexes run without JIT", LF_S("error", (const char *)why));
	}
	*out = re;
	return 0;
}

/* ---- named host sets ------------------------------------------------ */

/* docs/acl.md lists these ranges; keep the two in step. */
static const struct net loopback_nets[] = {
	{ AF_INET, { 127 }, 8 }, { AF_INET6, { [IPV6_BYTES - 1] = 1 }, IPV6_BITS }, /* ::1 */
};

static const struct net private_nets[] = {
	{ AF_INET, { 10 }, 8 },           /* RFC 1918 */
	{ AF_INET, { 172, 16 }, 12 },     /* RFC 1918 */
	{ AF_INET, { 192, 168 }, 16 },    /* RFC 1918 */
	{ AF_INET, { 169, 254 }, 16 },    /* link-local, cloud metadata */
	{ AF_INET, { 100, 64 }, 10 },     /* RFC 6598 shared (CGNAT) */
	{ AF_INET6, { 0xfc }, 7 },        /* unique local */
	{ AF_INET6, { 0xfe, 0x80 }, 10 }, /* link-local */
	{ AF_INET6, { 0xfe, 0xc0 }, 10 }, /* site-local (deprecated, still routed) */
	{ AF_INET6, { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 }, 48 }, /* RFC 8215 local NAT64 */
};

struct host_set {
	const char *name;       /* after the '@' */
	const struct net *nets; /* NULL: the addresses handed to acl_compile */
	size_t count;
};

#define HOST_SET_NAMES "@loopback, @private, @local"
static const struct host_set host_sets[] = {
	{ "loopback", loopback_nets, ARRAY_SIZE(loopback_nets) },
	{ "private", private_nets, ARRAY_SIZE(private_nets) },
	{ "local", NULL, 0 },
};

/* `@NAME` (text is NUL-terminated, without the port). @local copies the
 * local addresses, as the destinations they are, into the rule. */
static int parse_set(const char *pattern, const char *text, const struct acl_local *local,
		     struct acl_rule *rule, char *err, size_t errlen)
{
	const struct host_set *set = NULL;
	struct acl_addr dest;
	size_t i, n = 0;

	for (i = 0; i < ARRAY_SIZE(host_sets); i++)
		if (strcmp(text + 1, host_sets[i].name) == 0)
			set = &host_sets[i];
	if (!set)
		return pattern_error(err, errlen, pattern,
				     "unknown host set (the sets are " HOST_SET_NAMES ")");
	rule->kind = RULE_SET;
	if (set->nets) {
		rule->set.nets = set->nets;
		rule->set.count = set->count;
		return 0;
	}
	if (!local || local->count == 0)
		return 0;
	rule->set.owned = calloc(local->count, sizeof(*rule->set.owned));
	if (!rule->set.owned)
		return -ENOMEM;
	for (i = 0; i < local->count; i++) {
		if (!destination(local->addrs[i].family, local->addrs[i].bytes, &dest))
			continue;
		rule->set.owned[n].family = dest.family;
		memcpy(rule->set.owned[n].bytes, dest.bytes, sizeof(dest.bytes));
		rule->set.owned[n].prefix_bits = dest.family == AF_INET ? IPV4_BITS : IPV6_BITS;
		n++;
	}
	rule->set.nets = rule->set.owned;
	rule->set.count = n;
	return 0;
}

/* A host name or domain suffix; numeric forms must be address rules. */
static int parse_name(const char *pattern, const char *text, bool is_suffix, struct acl_rule *rule,
		      char *err, size_t errlen)
{
	struct acl_host host;
	const char *why;

	if (acl_canonical_host((const uint8_t *)text, strlen(text), &host, &why) < 0)
		return pattern_error(err, errlen, pattern, "%s", why);
	if (host.kind != ACL_HOST_NAME && is_suffix)
		return pattern_error(err, errlen, pattern,
				     "a domain pattern needs a name, not an address");
	if (host.kind != ACL_HOST_NAME)
		return pattern_error(err, errlen, pattern,
				     "unusual IPv4 spelling; write the address as a.b.c.d");
	memcpy(rule->name.text, host.name, sizeof(host.name));
	rule->name.len = strlen(host.name);
	return 0;
}

/* The host part of a pattern without brackets (NUL-terminated). */
static int parse_host(const char *pattern, const char *host, const struct acl_local *local,
		      struct acl_rule *rule, const struct net_spelling *spelling, char *err,
		      size_t errlen)
{
	struct in_addr v4;

	if (*host == '\0')
		return pattern_error(err, errlen, pattern,
				     "missing host before ':' (*:PORT for any host)");
	if (host[0] == HOST_SET_PREFIX)
		return parse_set(pattern, host, local, rule, err, errlen);
	if (strcmp(host, "*") == 0 || strcmp(host, ".*") == 0) {
		rule->kind = RULE_ANY_HOST;
		return 0;
	}
	if (strchr(host, '/')) {
		rule->kind = RULE_NET;
		return parse_net(pattern, host, AF_INET, spelling, &rule->net, err, errlen);
	}
	if (strncmp(host, "*.", 2) == 0) {
		rule->kind = RULE_SUBDOMAINS;
		return parse_name(pattern, host + 2, true, rule, err, errlen);
	}
	if (strchr(host, '*'))
		return pattern_error(err, errlen, pattern,
				     "'*' may only stand alone or start a '*.' pattern");
	if (host[0] == '.') {
		rule->kind = RULE_DOMAIN;
		return parse_name(pattern, host + 1, true, rule, err, errlen);
	}
	if (inet_pton(AF_INET, host, &v4) == 1) {
		rule->kind = RULE_NET;
		return parse_net(pattern, host, AF_INET, spelling, &rule->net, err, errlen);
	}
	rule->kind = RULE_NAME;
	return parse_name(pattern, host, false, rule, err, errlen);
}

/* Parse one pattern into rule (its text excepted); on failure nothing
 * needs freeing. */
static int parse_pattern(const char *pattern, const struct acl_local *local, struct acl_rule *rule,
			 char *err, size_t errlen)
{
	char host[ACL_PATTERN_MAX + 1];
	struct net_spelling spelling = { .bracketed = false, .port_suffix = "" };
	size_t len = strlen(pattern), i, colons = 0;
	const char *colon, *close;
	int rc;

	memset(rule, 0, sizeof(*rule));
	rule->port = PORT_ANY;
	if (len == 0)
		return pattern_error(err, errlen, pattern, "empty pattern");
	if (len > ACL_PATTERN_MAX)
		return pattern_error(err, errlen, pattern, "pattern longer than %d bytes",
				     ACL_PATTERN_MAX);
	for (i = 0; i < len; i++) {
		uint8_t c = (uint8_t)pattern[i];

		if (c <= ' ' || c >= 0x7f)
			return pattern_error(err, errlen, pattern,
					     "space, control or non-ASCII byte in pattern");
		colons += c == ':';
	}

	if (pattern[0] == '~') {
		rule->kind = RULE_REGEX;
		return compile_regex(pattern, pattern + 1, &rule->regex, err, errlen);
	}

	if (pattern[0] == '[') {
		close = strchr(pattern, ']');
		if (!close)
			return pattern_error(err, errlen, pattern, "missing ']'");
		if (close[1] != '\0' && close[1] != ':')
			return pattern_error(err, errlen, pattern, "only ':PORT' may follow ']'");
		if (close[1] == ':') {
			rc = parse_port(pattern, close + 2, &rule->port, err, errlen);
			if (rc < 0)
				return rc;
			spelling.port_suffix = close + 1;
		}
		spelling.bracketed = true;
		memcpy(host, pattern + 1, (size_t)(close - pattern - 1));
		host[close - pattern - 1] = '\0';
		rule->kind = RULE_NET;
		return parse_net(pattern, host, AF_INET6, &spelling, &rule->net, err, errlen);
	}
	if (colons > 1) { /* a bare IPv6 address or network: no port */
		rule->kind = RULE_NET;
		return parse_net(pattern, pattern, AF_INET6, &spelling, &rule->net, err, errlen);
	}

	colon = strchr(pattern, ':');
	len = colon ? (size_t)(colon - pattern) : len;
	if (colon) {
		rc = parse_port(pattern, colon + 1, &rule->port, err, errlen);
		if (rc < 0)
			return rc;
		spelling.port_suffix = colon;
	}
	memcpy(host, pattern, len);
	host[len] = '\0';
	return parse_host(pattern, host, local, rule, &spelling, err, errlen);
}

static void free_rule(struct acl_rule *rule)
{
	if (rule->kind == RULE_REGEX)
		free_regex(rule->regex);
	else if (rule->kind == RULE_SET)
		free(rule->set.owned);
	free(rule->text);
}

void acl_free(struct acl *acl)
{
	size_t i;

	if (!acl)
		return;
	for (i = 0; i < acl->count; i++)
		free_rule(&acl->rules[i]);
	free_scratch(acl->scratch);
	free(acl);
}

int acl_compile(const char *const *patterns, size_t n, const struct acl_local *local,
		struct acl **out, size_t *bad_index, char *err, size_t errlen)
{
	struct acl *acl;
	size_t i;
	int rc;

	if (!patterns)
		n = 0;
	if (n > (SIZE_MAX - sizeof(*acl)) / sizeof(acl->rules[0])) {
		rc = -ENOMEM;
		i = 0;
		goto fail;
	}
	acl = malloc(sizeof(*acl) + n * sizeof(acl->rules[0]));
	if (!acl) {
		rc = -ENOMEM;
		i = 0;
		goto fail;
	}
	acl->count = 0;
	acl->scratch = NULL;
	for (i = 0; i < n; i++) {
		struct acl_rule *rule = &acl->rules[i];

		if (!patterns[i]) {
			rc = pattern_error(err, errlen, "", "missing pattern");
			goto fail_free;
		}
		rc = parse_pattern(patterns[i], local, rule, err, errlen);
		if (rc < 0)
			goto fail_free;
		if (rule->kind == RULE_REGEX && !acl->scratch)
			acl->scratch = new_scratch();
		rule->text = strdup(patterns[i]);
		if (!rule->text || (rule->kind == RULE_REGEX && !acl->scratch)) {
			free_rule(rule);
			rc = -ENOMEM;
			goto fail_free;
		}
		acl->count++;
	}
	*out = acl;
	return 0;

fail_free:
	acl_free(acl);
fail:
	if (rc == -ENOMEM && err && errlen)
		snprintf(err, errlen, "out of memory compiling host patterns");
	if (bad_index)
		*bad_index = i;
	return rc;
}

int acl_check_pattern(const char *pattern, char *err, size_t errlen)
{
	const char *const one[] = { pattern };
	struct acl *acl;

	if (acl_compile(one, 1, NULL, &acl, NULL, err, errlen) < 0)
		return -EINVAL;
	acl_free(acl);
	return 0;
}

size_t acl_rule_count(const struct acl *acl)
{
	return acl ? acl->count : 0;
}

const char *acl_rule_text(const struct acl_rule *rule)
{
	return rule->text;
}

/* ---- matching -------------------------------------------------------- */

static bool port_matches(const struct acl_rule *rule, uint16_t port)
{
	return rule->port == PORT_ANY || rule->port == port;
}

/* name ends with "." + suffix (so it is a proper subdomain of suffix). */
static bool is_subdomain(const char *name, size_t name_len, const struct acl_rule *rule)
{
	size_t suffix_len = rule->name.len;

	return name_len > suffix_len + 1 && name[name_len - suffix_len - 1] == '.' &&
	       memcmp(name + name_len - suffix_len, rule->name.text, suffix_len) == 0;
}

/* What a rule says about a target. */
enum answer {
	ANSWER_NO,
	ANSWER_YES,
	ANSWER_UNDECIDED, /* a regex reached a limit; see acl_role */
};

/* The first undecided match of a rule is logged: the operator learns which
 * regex is too costly (a hostile user can make every match of it reach the
 * limit, so not every time). */
static void log_undecided(const struct acl_rule *rule, int rc)
{
	PCRE2_UCHAR why[REGEX_ERROR_MAX];

	if (atomic_flag_test_and_set(&rule->regex->limit_logged))
		return;
	pcre2_get_error_message(rc, why, sizeof(why));
	log_warn("Host regex could not decide; it denies", LF_S("rule", rule->text),
		 LF_S("error", (const char *)why));
}

/* The regex against the whole name (compile_regex anchors it), under the
 * list's limits, in the list's match data unless another thread holds it. */
static enum answer regex_matches(const struct acl *acl, const struct acl_rule *rule,
				 const char *name, size_t name_len)
{
	struct regex_scratch *s = acl->scratch;
	bool borrowed = !atomic_flag_test_and_set_explicit(&s->busy, memory_order_acquire);
	pcre2_match_data *data = borrowed ? s->data : pcre2_match_data_create(1, NULL);
	int rc = PCRE2_ERROR_NOMEMORY;

	if (data)
		rc = pcre2_match(rule->regex->code, (PCRE2_SPTR)name, name_len, 0, 0, data,
				 s->limits);
	if (borrowed)
		atomic_flag_clear_explicit(&s->busy, memory_order_release);
	else
		pcre2_match_data_free(data);
	if (rc >= 0) /* 0: matched, with more groups than the one pair asked for */
		return ANSWER_YES;
	if (rc == PCRE2_ERROR_NOMATCH)
		return ANSWER_NO;
	log_undecided(rule, rc);
	return ANSWER_UNDECIDED;
}

static enum answer rule_matches_name(const struct acl *acl, const struct acl_rule *rule,
				     const char *name, size_t name_len)
{
	bool yes = false;

	switch (rule->kind) {
	case RULE_ANY_HOST:
		yes = true;
		break;
	case RULE_NAME:
		yes = strcmp(name, rule->name.text) == 0;
		break;
	case RULE_DOMAIN:
		yes = strcmp(name, rule->name.text) == 0 || is_subdomain(name, name_len, rule);
		break;
	case RULE_SUBDOMAINS:
		yes = is_subdomain(name, name_len, rule);
		break;
	case RULE_REGEX:
		return regex_matches(acl, rule, name, name_len);
	case RULE_NET:
	case RULE_SET:
		break;
	}
	return yes ? ANSWER_YES : ANSWER_NO;
}

const struct acl_rule *acl_match_name(const struct acl *acl, const char *name, uint16_t port,
				      enum acl_role role)
{
	size_t i, name_len = strlen(name);

	for (i = 0; i < acl_rule_count(acl); i++) {
		const struct acl_rule *rule = &acl->rules[i];
		enum answer answer;

		if (!port_matches(rule, port))
			continue;
		answer = rule_matches_name(acl, rule, name, name_len);
		if (answer == ANSWER_YES || (answer == ANSWER_UNDECIDED && role == ACL_FORBIDS))
			return rule;
	}
	return NULL;
}

/* One of the destinations is in one of the networks. */
static bool nets_contain(const struct net *nets, size_t count, const struct acl_addr *dests,
			 size_t ndests)
{
	size_t i, j;

	for (i = 0; i < count; i++)
		for (j = 0; j < ndests; j++)
			if (net_contains(&nets[i], &dests[j]))
				return true;
	return false;
}

static bool rule_matches_addr(const struct acl_rule *rule, const struct acl_addr *dests,
			      size_t ndests)
{
	switch (rule->kind) {
	case RULE_ANY_HOST:
		return true;
	case RULE_NET:
		return nets_contain(&rule->net, 1, dests, ndests);
	case RULE_SET:
		return nets_contain(rule->set.nets, rule->set.count, dests, ndests);
	case RULE_NAME:
	case RULE_SUBDOMAINS:
	case RULE_DOMAIN:
	case RULE_REGEX:
		return false;
	}
	return false;
}

const struct acl_rule *acl_match_addr(const struct acl *acl, int family, const uint8_t *addr,
				      uint16_t port)
{
	struct acl_addr dests[DESTINATIONS_MAX];
	size_t i, ndests = destinations(family, addr, dests);

	if (ndests == 0)
		return NULL;
	for (i = 0; i < acl_rule_count(acl); i++) {
		const struct acl_rule *rule = &acl->rules[i];

		if (port_matches(rule, port) && rule_matches_addr(rule, dests, ndests))
			return rule;
	}
	return NULL;
}

/* Whether some address could still be admitted at this port. */
static bool has_addr_rule(const struct acl *acl, uint16_t port)
{
	size_t i;

	for (i = 0; i < acl_rule_count(acl); i++)
		if ((acl->rules[i].kind == RULE_NET || acl->rules[i].kind == RULE_SET) &&
		    port_matches(&acl->rules[i], port))
			return true;
	return false;
}

const char *acl_verdict_name(enum acl_verdict verdict)
{
	switch (verdict) {
	case ACL_ALLOW:
		return "allowed";
	case ACL_DENY_FORBIDDEN:
		return "forbidden";
	case ACL_DENY_NOT_ALLOWED:
		return "not allowed";
	}
	return "unknown";
}

enum acl_verdict acl_check_name(const struct acl *forbidden, const struct acl *allowed,
				const char *name, uint16_t port, bool *name_allowed,
				const struct acl_rule **rule)
{
	const struct acl_rule *decided = acl_match_name(forbidden, name, port, ACL_FORBIDS);
	enum acl_verdict verdict = ACL_ALLOW;
	bool admitted = false;

	if (decided) {
		verdict = ACL_DENY_FORBIDDEN;
	} else if (acl_rule_count(allowed) == 0) {
		admitted = true;
	} else {
		decided = acl_match_name(allowed, name, port, ACL_ADMITS);
		admitted = decided != NULL;
		if (!admitted && !has_addr_rule(allowed, port))
			verdict = ACL_DENY_NOT_ALLOWED;
	}
	if (name_allowed)
		*name_allowed = admitted;
	if (rule)
		*rule = decided;
	return verdict;
}

enum acl_verdict acl_check_addr(const struct acl *forbidden, const struct acl *allowed, int family,
				const uint8_t *addr, uint16_t port, bool name_allowed,
				const struct acl_rule **rule)
{
	const struct acl_rule *decided = NULL;
	enum acl_verdict verdict = ACL_ALLOW;

	if (family != AF_INET && family != AF_INET6) {
		verdict = ACL_DENY_NOT_ALLOWED;
	} else {
		decided = acl_match_addr(forbidden, family, addr, port);
		if (decided) {
			verdict = ACL_DENY_FORBIDDEN;
		} else if (!name_allowed && acl_rule_count(allowed) != 0) {
			decided = acl_match_addr(allowed, family, addr, port);
			if (!decided)
				verdict = ACL_DENY_NOT_ALLOWED;
		}
	}
	if (rule)
		*rule = decided;
	return verdict;
}
