/*
 * test_acl.c — host access control (src/client/acl.c).
 *
 * Table-driven: canonicalisation of hostile target names, the pattern
 * compiler's refusals and messages, matching of every pattern form, and the
 * agent's whole decision (name step, resolution, per-address filter) as
 * acl.h describes it. Every canonicalisation input sits right before an
 * inaccessible page, so a read past its end faults even without ASan.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "anyproxy/acl.h"
#include "anyproxy/common.h"
#include "guard.h"

#define MAX_PATTERNS 6
#define MAX_RESOLVED 6
#define ERR_BYTES 256
#define SHOWN_BYTES 64 /* of an input echoed in a failure message */
#define DIALLED_BYTES 256
#define GUARD_AREA_BYTES 4096 /* more than any target or pattern placed */

/* ---- fixtures ---------------------------------------------------------- */

static int setup(void **state)
{
	return guard_setup(GUARD_AREA_BYTES);
}

static int teardown(void **state)
{
	return guard_teardown();
}

/* Printable rendering of hostile bytes for failure messages. */
static const char *show(const char *bytes, size_t n)
{
	static char out[SHOWN_BYTES * 4 + 4];
	size_t i, o = 0;

	for (i = 0; i < n && i < SHOWN_BYTES; i++) {
		uint8_t c = (uint8_t)bytes[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)sprintf(out + o, "\\x%02x", c);
	}
	strcpy(out + o, n > SHOWN_BYTES ? "..." : "");
	return out;
}

static void addr_to_text(const struct acl_addr *a, char *out, size_t cap)
{
	assert_non_null(inet_ntop(a->family, a->bytes, out, (socklen_t)cap));
}

/* "1.2.3.4" or "::1" (no brackets) into family + bytes. */
static void text_to_addr(const char *text, struct acl_addr *a)
{
	memset(a, 0, sizeof(*a));
	a->family = strchr(text, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(a->family, text, a->bytes) != 1)
		fail_msg("test table: bad address '%s'", text);
}

static size_t count_patterns(const char *const *patterns)
{
	size_t n = 0;

	while (n < MAX_PATTERNS && patterns[n])
		n++;
	return n;
}

/* What `@local` stands for in these tests: a host with a LAN address, a
 * public-looking address, loopback and link-local. */
static const struct acl_addr test_local_addrs[] = {
	{ AF_INET, { 127, 0, 0, 1 } },
	{ AF_INET, { 10, 200, 0, 1 } },
	{ AF_INET, { 198, 51, 100, 7 } },
	{ AF_INET6, { [15] = 1 } },
	{ AF_INET6, { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x07 } },
	{ AF_INET6, { 0xfe, 0x80, [15] = 0x01 } },
	{ AF_INET6, { [10] = 0xff, [11] = 0xff, 10, 9, 9, 9 } }, /* read as 10.9.9.9 */
};
static const struct acl_local test_local = { test_local_addrs, ARRAY_SIZE(test_local_addrs) };

/* Compile a NULL-terminated table list (with test_local for `@local`); the
 * test fails if it is refused. */
static struct acl *compile_or_fail(const char *label, const char *const *patterns)
{
	char err[ERR_BYTES] = "";
	struct acl *acl = NULL;
	size_t bad = 0;
	int rc = acl_compile(patterns, count_patterns(patterns), &test_local, &acl, &bad, err,
			     sizeof(err));

	if (rc != 0)
		fail_msg("%s: pattern %zu refused: %s", label, bad, err);
	return acl;
}

static struct acl_host canonical_or_fail(const char *label, const char *target)
{
	struct acl_host host;
	const char *why = NULL;
	size_t n = strlen(target);

	if (acl_canonical_host(guard_place(target, n), n, &host, &why) != 0)
		fail_msg("%s: target '%s' refused: %s", label, target, why);
	return host;
}

/* ---- canonicalisation -------------------------------------------------- */

struct canon_case {
	const char *input;
	size_t len;
	int want_kind;    /* ACL_HOST_NAME, ACL_HOST_ADDR, or 0: refused */
	const char *want; /* the canonical name, the address as inet_ntop writes
			   * it, or a part of the refusal's reason */
};

#define BYTES(s) s, sizeof(s) - 1
/* clang-format off */
#define NAME(in, out) { BYTES(in), ACL_HOST_NAME, out }
#define ADDR(in, out) { BYTES(in), ACL_HOST_ADDR, out }
#define REFUSED(in, why) { BYTES(in), 0, why }
/* clang-format on */

#define L10 "abcdefghij"
#define LABEL_61 L10 L10 L10 L10 L10 L10 "k"
#define LABEL_63 L10 L10 L10 L10 L10 L10 "klm"
#define NAME_253 LABEL_63 "." LABEL_63 "." LABEL_63 "." LABEL_61

static const struct canon_case canon_cases[] = {
	NAME("example.com", "example.com"),
	NAME("Example.COM", "example.com"),
	NAME("example.com.", "example.com"),
	NAME("LOCALHOST.", "localhost"),
	NAME("localhost", "localhost"),
	NAME("_sip._tcp.Example.com", "_sip._tcp.example.com"),
	NAME("xn--bcher-kva.example", "xn--bcher-kva.example"),
	NAME("-leading-hyphen.example", "-leading-hyphen.example"),
	NAME("1.2.3.example", "1.2.3.example"),
	NAME("example.0x1g", "example.0x1g"), /* not a number: a name */
	NAME("a", "a"),
	NAME(LABEL_63 ".com", LABEL_63 ".com"),
	NAME(NAME_253, NAME_253),
	NAME(NAME_253 ".", NAME_253),
	REFUSED("", "empty host name"),
	REFUSED(".", "empty host name"),
	REFUSED("a..b", "empty label"),
	REFUSED(".example.com", "empty label"),
	REFUSED("example.com..", "empty label"),
	REFUSED(LABEL_63 "n.com", "label longer than 63"),
	REFUSED(NAME_253 "x", "longer than 253"),
	REFUSED(NAME_253 "x.", "longer than 253"),
	REFUSED("example%2ecom", "byte not allowed"),
	REFUSED("localhost%2e", "byte not allowed"),
	REFUSED("example\\.com", "byte not allowed"),
	REFUSED("local\0host", "byte not allowed"),
	REFUSED("localhost\0", "byte not allowed"),
	REFUSED("exa mple.com", "byte not allowed"),
	REFUSED(" localhost", "byte not allowed"),
	REFUSED("localhost\t", "byte not allowed"),
	REFUSED("ex\xc3\xa4mple.com", "byte not allowed"),
	REFUSED("\xef\xbc\x8e", "byte not allowed"), /* fullwidth full stop */
	REFUSED("user@example.com", "byte not allowed"),
	REFUSED("example.com/path", "byte not allowed"),
	REFUSED("example.com:443", "':'"),
	REFUSED("[::1]:443", "brackets"),
	/* Every IPv4 spelling a resolver takes is the address it means. */
	ADDR("127.0.0.1", "127.0.0.1"),
	ADDR("127.1", "127.0.0.1"),
	ADDR("127.0.1", "127.0.0.1"),
	ADDR("2130706433", "127.0.0.1"),
	ADDR("0x7f.0.0.1", "127.0.0.1"),
	ADDR("0X7F.0.0.1", "127.0.0.1"),
	ADDR("0x7f000001", "127.0.0.1"),
	ADDR("0177.0.0.1", "127.0.0.1"),
	ADDR("0177.0.0.01", "127.0.0.1"),
	ADDR("127.0.0.1.", "127.0.0.1"),
	ADDR("0", "0.0.0.0"),
	ADDR("192.168.0.1", "192.168.0.1"),
	ADDR("0xc0a80001", "192.168.0.1"),
	ADDR("3232235521", "192.168.0.1"),
	REFUSED("1.2.3.4.5", "numeric last label"),
	REFUSED("256.0.0.1", "numeric last label"),
	REFUSED("4294967296", "numeric last label"),
	REFUSED("08.0.0.1", "numeric last label"), /* 8 is not an octal digit */
	REFUSED("example.123", "numeric last label"),
	REFUSED("example.0x1f", "numeric last label"),
	REFUSED("0x", "numeric last label"),
	REFUSED("127.0.0.1..", "empty label"),
	REFUSED("127.0.0.1 ", "byte not allowed"),
	/* IPv6 literals, bare or bracketed. */
	ADDR("::1", "::1"),
	ADDR("[::1]", "::1"),
	ADDR("[::]", "::"),
	ADDR("[FD00::AbC]", "fd00::abc"),
	ADDR("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
	ADDR("::ffff:7f00:1", "::ffff:127.0.0.1"),
	ADDR("[0:0:0:0:0:0:0:1]", "::1"),
	REFUSED("[::1", "brackets"),
	REFUSED("[]", "brackets"),
	REFUSED("[", "brackets"),
	REFUSED("[127.0.0.1]", "brackets"),
	REFUSED("[example.com]", "brackets"),
	REFUSED("[fe80::1%eth0]", "brackets"),
	REFUSED("[fe80::1%25eth0]", "brackets"),
	REFUSED("[::1\0]", "brackets"),
	REFUSED("::1\0", "':'"),
	REFUSED(":::1", "':'"),
	REFUSED("::ffff:127.1", "':'"),
};

static void check_canon_case(const struct canon_case *c)
{
	const char *shown = show(c->input, c->len);
	struct acl_host host, again;
	const char *why = NULL;
	char text[INET6_ADDRSTRLEN];
	size_t n;
	int rc;

	memset(&host, 0xa5, sizeof(host));
	rc = acl_canonical_host(guard_place(c->input, c->len), c->len, &host, &why);
	if (c->want_kind == 0) {
		if (rc != -EINVAL)
			fail_msg("'%s': accepted, want refused (%s)", shown, c->want);
		if (!why || !strstr(why, c->want))
			fail_msg("'%s': reason '%s', want '%s'", shown, why ? why : "(null)",
				 c->want);
		if (host.kind != (enum acl_host_kind)0xa5a5a5a5)
			fail_msg("'%s': output written on failure", shown);
		return;
	}
	if (rc != 0)
		fail_msg("'%s': refused (%s), want %s", shown, why, c->want);
	if ((int)host.kind != c->want_kind)
		fail_msg("'%s': kind %d, want %d", shown, host.kind, c->want_kind);
	if (host.kind == ACL_HOST_NAME) {
		if (strcmp(host.name, c->want) != 0)
			fail_msg("'%s': canonical '%s', want '%s'", shown, host.name, c->want);
		/* Canonical names are a fixed point. */
		n = strlen(host.name);
		rc = acl_canonical_host(guard_place(host.name, n), n, &again, &why);
		if (rc != 0 || again.kind != ACL_HOST_NAME || strcmp(again.name, host.name) != 0)
			fail_msg("'%s': canonical form does not re-canonicalise to itself", shown);
		return;
	}
	addr_to_text(&host.addr, text, sizeof(text));
	if (strcmp(text, c->want) != 0 || host.name[0] != '\0')
		fail_msg("'%s': address %s, want %s", shown, text, c->want);
}

static void test_canonical_host(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(canon_cases); i++)
		check_canon_case(&canon_cases[i]);
}

/* The reason pointer may be NULL, and so may the name when its length is 0. */
static void test_canonical_host_null_why(void **state)
{
	struct acl_host host;

	assert_int_equal(acl_canonical_host(guard_place("a..b", 4), 4, &host, NULL), -EINVAL);
	assert_int_equal(acl_canonical_host(NULL, 0, &host, NULL), -EINVAL);
}

/* ---- the pattern compiler ---------------------------------------------- */

/* Every documented form compiles, and rules keep their text as written. */
static void test_compile_every_form(void **state)
{
	/* clang-format off */
	static const char *const patterns[] = {
		"example.com", "Example.COM.", "*.example.com", ".example.com", "127.0.0.1",
		"::1", "[::1]", "192.168.0.0/16", "fd00::/8", "[fd00::/8]", "example.com:443",
		"example.com:*", "[::1]:443", "[fd00::/8]:22", "10.0.0.0/8:22", "*:22", "*",
		".*", ".*:80", "*:*", "~ex.*\\.com", "0.0.0.0/0", "::/0", "::ffff:10.0.0.0/104",
		"10.1.2.3/32", "[2001:db8::1/128]:65535", "_dmarc.example.com", "~[]a-z]+",
		"~[[:alpha:]]+\\.(com|net)", "~a{1,63}", "~(a+)+b", "~x{0,16}", "~a{2048}",
		"~(ab?){256}", "~(^a)+", "~(a|b)+", "~a*b+", "~([a-z0-9-]+\\.)*(corp|internal)",
		"~a{0,}b{3,}", "~[[:digit:]:]+", "~[\\1]", "~([a-z0-9-]{1,63}\\.)+corp",
		"~a{0,253}", "~(a|b|)c", "~(|a)b", "~(?:db|web)[0-9]+\\.corp", "~(?i:DB)\\.corp",
		"~(?#no:port)a", "~[:]?a", "~\\Qa.b\\E", "~(*NO_JIT)a+", "@loopback", "@private", "@local",
		"@private:443", "@local:*", "@loopback:22",
	};
	/* clang-format on */
	char err[ERR_BYTES];
	struct acl *acl = NULL;
	size_t i;

	if (acl_compile(patterns, ARRAY_SIZE(patterns), NULL, &acl, NULL, err, sizeof(err)) != 0)
		fail_msg("refused: %s", err);
	assert_int_equal(acl_rule_count(acl), ARRAY_SIZE(patterns));
	for (i = 0; i < ARRAY_SIZE(patterns); i++) {
		struct acl *one = NULL;

		if (acl_compile(&patterns[i], 1, NULL, &one, NULL, err, sizeof(err)) != 0)
			fail_msg("'%s' alone refused: %s", patterns[i], err);
		assert_int_equal(acl_rule_count(one), 1);
		acl_free(one);
	}
	acl_free(acl);
}

static void test_compile_empty(void **state)
{
	struct acl *acl = NULL;
	uint8_t v4[4] = { 10, 0, 0, 1 };

	assert_int_equal(acl_compile(NULL, 0, NULL, &acl, NULL, NULL, 0), 0);
	assert_non_null(acl);
	assert_int_equal(acl_rule_count(acl), 0);
	assert_null(acl_match_name(acl, "example.com", 80, ACL_FORBIDS));
	assert_null(acl_match_addr(acl, AF_INET, v4, 80));
	acl_free(acl);
	/* A NULL list is an empty list. */
	assert_int_equal(acl_rule_count(NULL), 0);
	assert_null(acl_match_name(NULL, "example.com", 80, ACL_FORBIDS));
	assert_null(acl_match_addr(NULL, AF_INET, v4, 80));
	acl_free(NULL);
}

struct bad_pattern_case {
	const char *pattern;
	const char *want; /* the whole message, or a part of it */
};

static const struct bad_pattern_case bad_pattern_cases[] = {
	{ "", "'': empty pattern" },
	{ "exa mple.com", "space, control or non-ASCII" },
	{ "example.com ", "space, control or non-ASCII" },
	{ "ex\tample.com", "'ex?ample.com': space, control or non-ASCII" },
	{ "b\xc3\xbc"
	  "cher.de",
	  "'b??cher.de': space, control or non-ASCII" },
	{ "10.0.0.1/8", "'10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?" },
	{ "192.168.1.1/16:22", "host bits set; did you mean 192.168.0.0/16:22?" },
	{ "fd00::1/8", "host bits set; did you mean fd00::/8?" },
	{ "fd00::/7", "host bits set; did you mean fc00::/7?" },
	{ "[fd00::1/8]:22", "host bits set; did you mean [fd00::/8]:22?" },
	{ "10.0.0.0/33", "bad prefix length '33' (0 to 32)" },
	{ "::/129", "bad prefix length '129' (0 to 128)" },
	{ "10.0.0.0/", "bad prefix length" },
	{ "10.0.0.0/-1", "bad prefix length" },
	{ "10.0.0.0/8/8", "bad prefix length" },
	{ "10.0.0/8", "bad IPv4 address '10.0.0'" },
	{ "example.com/8", "bad IPv4 address" },
	{ "example.com:0", "bad port '0'" },
	{ "example.com:65536", "bad port '65536'" },
	{ "example.com:443x", "bad port" },
	{ "example.com:-1", "bad port" },
	{ "example.com:http", "bad port" },
	{ "example.com:", "missing port after ':'" },
	{ "[::1]:", "missing port after ':'" },
	{ ":443", "missing host before ':'" },
	{ "~", "empty regular expression" },
	{ "~(", "bad regular expression" },
	{ "~a{2", "bad regular expression" },
	{ "~a)|(b", "'~a)|(b': bad regular expression at offset 2: unmatched closing parenthesis" },
	{ "~(a)\\1", "back-references are not supported" },
	{ "~(?<n>a)\\k<n>", "back-references are not supported" },
	{ "~(a)\\g{-1}", "back-references are not supported" },
	{ "~jump[0-9]\\.corp:22", "a regex takes no port" },
	{ "~a\\:b", "a regex takes no port" },
	{ "~(?:a|b):*", "a regex takes no port" },
	{ "~[a-z]+\\Q:\\E22", "a regex takes no port" },
	{ "~(?#c)a:1", "a regex takes no port" },
	/* what glibc's regcomp read otherwise (docs/acl.md lists them) */
	{ "~[a\\](b)", "missing terminating ] for character class" },
	{ "~x{,16}", "write {0,n} for {,n}" },
	{ "~a{,}b{3,}", "starts no repetition" },
	{ "~a{x}", "starts no repetition" },
	{ "~a{2,3", "starts no repetition" },
	{ "~\\<db\\>", "GNU regex anchors" },
	{ "~a\\'", "GNU regex anchors" },
	{ "~[[=a=]]", "POSIX collating elements are not supported" },
	{ "~a**", "quantifier does not follow a repeatable item" },
	{ "~a^p*+++++", "quantifier does not follow a repeatable item" },
	{ "~a+++++++++++++++++++++++++++++++++++++++++++++++++++++++",
	  "quantifier does not follow a repeatable item" },
	/* bounds on what compiling may build */
	{ "~((a{100}){100}){100}", "regular expression is too large" },
	{ "~(a{2}){0,5000}", "regular expression is too large" },
	{ "~(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((a)))))))))))))))))"
	  ")))))))))))))))))))))))))))))))))))))))))))))))",
	  "parentheses are too deeply nested" },
	{ "~(*UTF)a", "using UTF is disabled" },
	{ "~(*UCP)a", "using UCP is disabled" },
	{ "a..b", "empty label" },
	{ "example..com:443", "empty label" },
	{ ".", "empty host name" },
	{ "*.", "empty host name" },
	{ "..example.com", "empty label" },
	{ "exa%2ecom", "byte not allowed" },
	{ "exa\\.com", "byte not allowed" },
	{ "*.*.example.com", "byte not allowed" },
	{ "www.*.com", "'*' may only stand alone" },
	{ "*example.com", "'*' may only stand alone" },
	{ "192.168.1.*", "'*' may only stand alone" },
	{ "**", "'*' may only stand alone" },
	{ "127.1", "unusual IPv4 spelling" },
	{ "0x7f.0.0.1", "unusual IPv4 spelling" },
	{ "*.127.0.0.1", "needs a name, not an address" },
	{ ".10.0.0.1", "needs a name, not an address" },
	{ "1.2.3.4.5", "numeric last label" },
	{ "example.123", "numeric last label" },
	{ "[::1", "missing ']'" },
	{ "[::1]x", "only ':PORT' may follow ']'" },
	{ "[::1]]", "only ':PORT' may follow ']'" },
	{ "[127.0.0.1]", "bad IPv6 address '127.0.0.1'" },
	{ "[example.com]:443", "bad IPv6 address" },
	{ "[]", "bad IPv6 address ''" },
	{ "fe80::1%eth0", "bad IPv6 address" },
	{ "example.com:443:1", "bad IPv6 address" },
	{ "::1:443", "IPv4-compatible" },
	{ "::10.0.0.1", "IPv4-compatible" },
	{ "0.0.0.0", "unspecified address" },
	{ "0.0.0.0/32", "write 127.0.0.1" },
	{ "::", "write ::1" },
	{ "[::]:80", "unspecified address" },
	{ "::ffff:0.0.0.0", "write 127.0.0.1" },
	{ "@lan", "'@lan': unknown host set (the sets are @loopback, @private, @local)" },
	{ "@", "unknown host set" },
	{ "@Private", "unknown host set" },
	{ "@private.example", "unknown host set" },
	{ "@private/8", "unknown host set" },
	{ "@local:0", "bad port '0'" },
	{ "@loopback:", "missing port after ':'" },
	{ "[@private]", "bad IPv6 address '@private'" },
	{ "*.@private", "byte not allowed" },
	{ ".@private", "byte not allowed" },
	{ "private@", "byte not allowed" },
};

static void test_bad_patterns(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(bad_pattern_cases); i++) {
		const struct bad_pattern_case *c = &bad_pattern_cases[i];
		const char *list[] = { "example.com", "10.0.0.0/8", c->pattern, "*" };
		char err[ERR_BYTES] = "";
		struct acl *acl = (struct acl *)&err; /* must stay untouched */
		size_t bad = SIZE_MAX;
		int rc = acl_compile(list, ARRAY_SIZE(list), NULL, &acl, &bad, err, sizeof(err));

		if (rc != -EINVAL)
			fail_msg("'%s': compile returned %d, want -EINVAL",
				 show(c->pattern, strlen(c->pattern)), rc);
		if (bad != 2)
			fail_msg("'%s': bad index %zu, want 2", c->pattern, bad);
		if (acl != (struct acl *)&err)
			fail_msg("'%s': *out written on failure", c->pattern);
		if (!strstr(err, c->want))
			fail_msg("'%s': message \"%s\", want \"%s\"", c->pattern, err, c->want);
	}
}

static void test_bad_pattern_edges(void **state)
{
	char long_pattern[ACL_PATTERN_MAX + 2];
	const char *list[] = { "a.example", NULL };
	char err[ERR_BYTES] = "";
	char tiny[8];
	struct acl *acl = NULL;
	size_t bad = SIZE_MAX;

	/* A NULL entry is an error, not a crash. */
	assert_int_equal(acl_compile(list, 2, NULL, &acl, &bad, err, sizeof(err)), -EINVAL);
	assert_int_equal(bad, 1);
	assert_non_null(strstr(err, "missing pattern"));

	/* Over-long: refused, and the message quotes only the beginning. */
	memset(long_pattern, 'a', sizeof(long_pattern) - 1);
	long_pattern[sizeof(long_pattern) - 1] = '\0';
	list[0] = long_pattern;
	assert_int_equal(acl_compile(list, 1, NULL, &acl, &bad, err, sizeof(err)), -EINVAL);
	assert_int_equal(bad, 0);
	assert_non_null(strstr(err, "...': pattern longer than 1024 bytes"));

	/* A short or absent message buffer is never overrun. */
	list[0] = "10.0.0.1/8";
	memset(tiny, 'x', sizeof(tiny));
	assert_int_equal(acl_compile(list, 1, NULL, &acl, NULL, tiny, sizeof(tiny)), -EINVAL);
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
	assert_int_equal(acl_compile(list, 1, NULL, &acl, NULL, NULL, 0), -EINVAL);
}

/* ---- matching ---------------------------------------------------------- */

struct match_case {
	const char *patterns[MAX_PATTERNS]; /* NULL-terminated */
	const char *target;                 /* through acl_canonical_host */
	uint16_t port;
	const char *want; /* the text of the rule that matches first, or NULL */
};

static const struct match_case match_cases[] = {
	/* Exact names: case, trailing dot, and no suffix or prefix games. */
	{ { "example.com" }, "example.com", 80, "example.com" },
	{ { "example.com" }, "EXAMPLE.com.", 80, "example.com" },
	{ { "Example.COM." }, "example.com", 80, "Example.COM." },
	{ { "example.com" }, "example.com.evil.net", 80, NULL },
	{ { "example.com" }, "evilexample.com", 80, NULL },
	{ { "example.com" }, "www.example.com", 80, NULL },
	{ { "example.com" }, "example.co", 80, NULL },
	{ { "localhost" }, "LOCALHOST.", 80, "localhost" },
	{ { "localhost" }, "localhost.localdomain", 80, NULL },
	/* *.domain: subdomains only; .domain: the domain too. */
	{ { "*.example.com" }, "www.example.com", 80, "*.example.com" },
	{ { "*.example.com" }, "a.b.example.com", 80, "*.example.com" },
	{ { "*.example.com" }, "example.com", 80, NULL },
	{ { "*.example.com" }, "evilexample.com", 80, NULL },
	{ { "*.example.com" }, "www.example.com.evil.net", 80, NULL },
	{ { ".example.com" }, "example.com", 80, ".example.com" },
	{ { ".example.com" }, "www.example.com", 80, ".example.com" },
	{ { ".example.com" }, "evilexample.com", 80, NULL },
	{ { ".example.com" }, "example.com.evil.net", 80, NULL },
	{ { ".com" }, "example.com", 80, ".com" },
	/* Regexes span the whole canonical name. */
	{ { "~ex.*\\.com" }, "example.com", 80, "~ex.*\\.com" },
	{ { "~ex.*\\.com" }, "ex.com.evil.net", 80, NULL },
	{ { "~ex.*\\.com" }, "www.example.com", 80, NULL },
	{ { "~ex.*\\.com" }, "ex.com.evil.com", 80, "~ex.*\\.com" }, /* .* spans dots */
	{ { "~example" }, "example.com", 80, NULL },
	{ { "~[a-z]+\\.corp" }, "DB.Corp", 80, "~[a-z]+\\.corp" },
	{ { "~[a-z]+\\.corp" }, "db1.corp", 80, NULL },
	{ { "~a|ab" }, "ab", 80, "~a|ab" }, /* the alternative that spans the name */
	{ { "~ab|a" }, "a", 80, "~ab|a" },
	{ { "~a|b" }, "b", 80, "~a|b" }, /* anchored as a whole, not per alternative */
	{ { "~a|b" }, "b.evil.net", 80, NULL },
	{ { "~a|b" }, "evil.a", 80, NULL },
	{ { "~a(*ACCEPT)" }, "ab", 80, NULL }, /* accepting early is no match */
	{ { "~(?=db)" }, "db", 80, NULL },     /* a lookahead consumes nothing */
	{ { "~(?:db|web)[0-9]+\\.corp" }, "web12.corp", 80, "~(?:db|web)[0-9]+\\.corp" },
	{ { "~(?:db|web)[0-9]+\\.corp" }, "web.corp", 80, NULL },
	{ { "~(?i:DB)\\.CORP" }, "db.corp", 80, "~(?i:DB)\\.CORP" },
	{ { "~\\d+\\.corp" }, "db.corp", 80, NULL }, /* \d: a digit (glibc: the letter d) */
	{ { "~[a-z]\\d\\.corp" }, "a1.corp", 80, "~[a-z]\\d\\.corp" },
	{ { "~\\bdb\\b.*" }, "db.corp", 80, "~\\bdb\\b.*" },
	{ { "~\\bdb\\b.*" }, "dba.corp", 80, NULL },
	{ { "~a++" }, "aaa", 80, "~a++" }, /* possessive in PCRE2 */
	{ { "~a++a" }, "aaa", 80, NULL },  /* ... so it gives nothing back */
	{ { "~\\Qa.b\\E" }, "a.b", 80, "~\\Qa.b\\E" },
	{ { "~\\Qa.b\\E" }, "axb", 80, NULL },
	{ { "~(a?){2}" }, "aa", 80, "~(a?){2}" }, /* once refused as costly */
	{ { "~(a|aa)+" }, "aaaaa", 80, "~(a|aa)+" },
	{ { "~[a-z]{1,3}\\.corp" }, "abc.corp", 80, "~[a-z]{1,3}\\.corp" },
	{ { "~[a-z]{1,3}\\.corp" }, "abcd.corp", 80, NULL },
	{ { "~[[:alpha:]]+\\.(com|net)" }, "Example.NET", 80, "~[[:alpha:]]+\\.(com|net)" },
	{ { "~.*" }, "anything.example", 80, "~.*" },
	{ { "~.*" }, "10.0.0.1", 80, NULL }, /* regexes never see addresses */
	/* Any host. */
	{ { "*" }, "anything.example", 1, "*" },
	{ { "*" }, "10.1.2.3", 65535, "*" },
	{ { ".*" }, "x.y", 80, ".*" },
	{ { ".*" }, "[2001:db8::1]", 80, ".*" },
	{ { "*:*" }, "x.y", 80, "*:*" },
	/* Names and addresses never cross. */
	{ { "127.0.0.1" }, "localhost", 80, NULL },
	{ { "localhost" }, "127.0.0.1", 80, NULL },
	{ { "0.0.0.0/0", "::/0" }, "example.com", 80, NULL },
	/* Ports. */
	{ { "example.com:443" }, "example.com", 443, "example.com:443" },
	{ { "example.com:443" }, "example.com", 80, NULL },
	{ { "example.com:*" }, "example.com", 8080, "example.com:*" },
	{ { "*:22" }, "git.example", 22, "*:22" },
	{ { "*:22" }, "git.example", 23, NULL },
	{ { "*:22" }, "10.0.0.1", 22, "*:22" },
	{ { ".*:80" }, "x.y", 80, ".*:80" },
	{ { "[::1]:443" }, "[::1]", 443, "[::1]:443" },
	{ { "[::1]:443" }, "::1", 80, NULL },
	{ { "[fd00::/8]:22" }, "[fd12::1]", 22, "[fd00::/8]:22" },
	{ { "[fd00::/8]:22" }, "[fd12::1]", 2222, NULL },
	{ { "10.0.0.0/8:22" }, "10.9.9.9", 22, "10.0.0.0/8:22" },
	{ { "example.com" }, "example.com", 0, "example.com" },
	{ { "example.com:1" }, "example.com", 0, NULL },
	/* Every spelling of 127.0.0.1 is caught by 127.0.0.1. */
	{ { "127.0.0.1" }, "127.0.0.1", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "127.1", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "127.0.1", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "2130706433", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "0x7f.0.0.1", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "0x7f000001", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "0177.0.0.1", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "127.0.0.1.", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "[::ffff:127.0.0.1]", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "::ffff:7f00:1", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "[::127.0.0.1]", 80, "127.0.0.1" }, /* IPv4-compatible */
	{ { "127.0.0.1" }, "0.0.0.0", 80, "127.0.0.1" },       /* reaches loopback */
	{ { "127.0.0.1" }, "0", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "[::ffff:0.0.0.0]", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "127.0.0.2", 80, NULL },
	{ { "127.0.0.1" }, "[::1]", 80, NULL },
	{ { "::1" }, "[::1]", 80, "::1" },
	{ { "::1" }, "[::]", 80, "::1" },
	{ { "::1" }, "127.0.0.1", 80, NULL },
	{ { "[::1]" }, "0:0:0:0:0:0:0:1", 80, "[::1]" },
	{ { "::ffff:127.0.0.1" }, "127.1", 80, "::ffff:127.0.0.1" },
	/* CIDR edges. */
	{ { "127.0.0.0/8" }, "[::ffff:127.9.9.9]", 80, "127.0.0.0/8" },
	{ { "192.168.0.0/16" }, "192.168.255.255", 80, "192.168.0.0/16" },
	{ { "192.168.0.0/16" }, "192.169.0.0", 80, NULL },
	{ { "192.168.0.0/16" }, "192.167.255.255", 80, NULL },
	{ { "10.0.0.0/7" }, "11.255.255.255", 80, "10.0.0.0/7" },
	{ { "10.0.0.0/7" }, "12.0.0.0", 80, NULL },
	{ { "10.0.0.0/7" }, "9.255.255.255", 80, NULL },
	{ { "10.1.2.3/32" }, "10.1.2.3", 80, "10.1.2.3/32" },
	{ { "10.1.2.3/32" }, "10.1.2.4", 80, NULL },
	{ { "0.0.0.0/0" }, "8.8.8.8", 80, "0.0.0.0/0" },
	{ { "0.0.0.0/0" }, "[2001:db8::1]", 80, NULL },
	{ { "::/0" }, "[2001:db8::1]", 80, "::/0" },
	{ { "::/0" }, "8.8.8.8", 80, NULL },
	{ { "::/0" }, "[::ffff:8.8.8.8]", 80, NULL }, /* matched as 8.8.8.8 */
	{ { "fd00::/8" }, "[fdff:ffff::1]", 80, "fd00::/8" },
	{ { "fd00::/8" }, "[fe00::1]", 80, NULL },
	{ { "fc00::/7" }, "[fd12::1]", 80, "fc00::/7" },
	{ { "fc00::/7" }, "[fe00::1]", 80, NULL },
	{ { "[2001:db8::1/128]" }, "[2001:db8::1]", 80, "[2001:db8::1/128]" },
	{ { "[2001:db8::1/128]" }, "[2001:db8::2]", 80, NULL },
	{ { "::ffff:10.0.0.0/104" }, "10.2.3.4", 80, "::ffff:10.0.0.0/104" },
	{ { "::ffff:10.0.0.0/104" }, "11.2.3.4", 80, NULL },
	/* NAT64 matches as itself and as the IPv4 address inside. */
	{ { "64:ff9b::/96" }, "[64:ff9b::7f00:1]", 80, "64:ff9b::/96" },
	{ { "127.0.0.1" }, "[64:ff9b::7f00:1]", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "64:ff9b::127.0.0.1", 80, "127.0.0.1" },
	{ { "127.0.0.1" }, "[64:ff9b::]", 80, "127.0.0.1" }, /* 0.0.0.0 inside */
	{ { "127.0.0.1" }, "[64:ff9b::7f00:2]", 80, NULL },
	{ { "127.0.0.1" }, "[64:ff9b:0:0:0:1:7f00:1]", 80, NULL }, /* not in the /96 */
	{ { "10.0.0.0/8:22" }, "[64:ff9b::a01:203]", 22, "10.0.0.0/8:22" },
	{ { "10.0.0.0/8:22" }, "[64:ff9b::a01:203]", 80, NULL },
	{ { "0.0.0.0/0" }, "[64:ff9b::808:808]", 80, "0.0.0.0/0" },
	{ { "::/0" }, "[64:ff9b::808:808]", 80, "::/0" },
	{ { "8.8.4.4", "::/0" }, "[64:ff9b::808:808]", 80, "::/0" },
	{ { "8.8.8.8", "::/0" }, "[64:ff9b::808:808]", 80, "8.8.8.8" },
	{ { "127.0.0.1" }, "[2002:7f00:1::]", 80, NULL }, /* 6to4 is not unwrapped */
	/* Host sets are address rules, with ports like the others. */
	{ { "@loopback" }, "localhost", 80, NULL },
	{ { "@private", "@local" }, "db.corp.example", 80, NULL },
	{ { "@loopback" }, "127.0.0.1", 80, "@loopback" },
	{ { "@loopback:22" }, "127.0.0.1", 22, "@loopback:22" },
	{ { "@loopback:22" }, "127.0.0.1", 80, NULL },
	{ { "@private:*" }, "10.0.0.1", 443, "@private:*" },
	{ { "@local:443" }, "10.200.0.1", 443, "@local:443" },
	{ { "@local:443" }, "10.200.0.1", 80, NULL },
	{ { "10.200.0.0/16", "@local" }, "10.200.0.1", 80, "10.200.0.0/16" },
	{ { "@private", "@local" }, "10.200.0.1", 80, "@private" },
	{ { "@local", "@private" }, "10.200.0.1", 80, "@local" },
	{ { "*:22", "@private" }, "10.0.0.1", 80, "@private" },
	/* The first matching rule, in list order, is the one reported. */
	{ { "*.example.com", ".example.com" }, "www.example.com", 80, "*.example.com" },
	{ { "*.example.com", ".example.com" }, "example.com", 80, ".example.com" },
	{ { "example.com:443", "*" }, "example.com", 80, "*" },
	{ { "10.0.0.0/8", "10.1.0.0/16" }, "10.1.2.3", 80, "10.0.0.0/8" },
	{ { "_dmarc.example.com" }, "_DMARC.example.com", 80, "_dmarc.example.com" },
};

/* The first rule of acl matching the target, reading undecided regexes as
 * role says. */
static const struct acl_rule *match_target(const struct acl *acl, const struct acl_host *host,
					   uint16_t port, enum acl_role role)
{
	if (host->kind == ACL_HOST_NAME)
		return acl_match_name(acl, host->name, port, role);
	return acl_match_addr(acl, host->addr.family, host->addr.bytes, port);
}

/* The patterns with every regex run by PCRE2's interpreter instead of its
 * JIT ("~(*NO_JIT)..."): the same list, for comparing the two engines. */
struct interpreted {
	char text[MAX_PATTERNS][ACL_PATTERN_MAX + 1];
	const char *patterns[MAX_PATTERNS + 1];
};

static void interpret(const char *const *patterns, struct interpreted *out)
{
	size_t i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < MAX_PATTERNS && patterns[i]; i++) {
		if (patterns[i][0] == '~')
			snprintf(out->text[i], sizeof(out->text[i]), "~(*NO_JIT)%s",
				 patterns[i] + 1);
		else
			snprintf(out->text[i], sizeof(out->text[i]), "%s", patterns[i]);
		out->patterns[i] = out->text[i];
	}
}

/* The position of a rule in its list, by its text (rules are unique in
 * the match cases), or -1 for none. */
static int position(const char *const *patterns, const struct acl_rule *rule)
{
	int i;

	for (i = 0; rule && i < MAX_PATTERNS && patterns[i]; i++)
		if (strcmp(patterns[i], acl_rule_text(rule)) == 0)
			return i;
	return -1;
}

static void test_match(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(match_cases); i++) {
		const struct match_case *c = &match_cases[i];
		char label[ERR_BYTES];
		struct interpreted slow;
		struct acl *acl, *slow_acl;
		struct acl_host host;
		const struct acl_rule *rule;

		snprintf(label, sizeof(label), "[%s...] vs %s:%u", c->patterns[0], c->target,
			 c->port);
		acl = compile_or_fail(label, c->patterns);
		host = canonical_or_fail(label, c->target);
		rule = match_target(acl, &host, c->port, ACL_FORBIDS);
		if (!c->want && rule)
			fail_msg("%s: matched '%s', want no match", label, acl_rule_text(rule));
		if (c->want && !rule)
			fail_msg("%s: no match, want '%s'", label, c->want);
		if (c->want && strcmp(acl_rule_text(rule), c->want) != 0)
			fail_msg("%s: matched '%s', want '%s'", label, acl_rule_text(rule),
				 c->want);
		/* every case decides: both readings of a list agree */
		if (match_target(acl, &host, c->port, ACL_ADMITS) != rule)
			fail_msg("%s: undecided", label);
		/* and PCRE2's interpreter answers as its JIT does */
		interpret(c->patterns, &slow);
		slow_acl = compile_or_fail(label, slow.patterns);
		if (position(slow.patterns, match_target(slow_acl, &host, c->port, ACL_ADMITS)) !=
		    position(c->patterns, rule))
			fail_msg("%s: the interpreter answers otherwise", label);
		acl_free(slow_acl);
		acl_free(acl);
	}
}

/* ---- regex limits ------------------------------------------------------ */

/* Exponential backtracking on a name that cannot match: it reaches
 * REGEX_MATCH_LIMIT on a 63-byte label and decides at once on a short one. */
#define BACKTRACKING "(a+)+[0-9]"

static void test_regex_limit_fails_closed(void **state)
{
	static const char *const variants[] = { "~" BACKTRACKING, "~(*NO_JIT)" BACKTRACKING };
	char name[ACL_LABEL_MAX + 1];
	size_t i;

	memset(name, 'a', ACL_LABEL_MAX);
	name[ACL_LABEL_MAX] = '\0';
	for (i = 0; i < ARRAY_SIZE(variants); i++) {
		const char *const costly[] = { variants[i], NULL };
		const char *const costly_then_plain[] = { variants[i], "~a+", NULL };
		struct acl *acl = compile_or_fail(variants[i], costly);
		struct acl *two = compile_or_fail(variants[i], costly_then_plain);
		const struct acl_rule *rule = NULL;
		bool name_allowed = true;

		/* decided: no match, whichever list it is in */
		assert_null(acl_match_name(acl, "aaaa", 80, ACL_FORBIDS));
		assert_null(acl_match_name(acl, "aaaa", 80, ACL_ADMITS));
		/* undecided: a forbidding list denies, an admitting one admits nothing */
		rule = acl_match_name(acl, name, 80, ACL_FORBIDS);
		assert_non_null(rule);
		assert_string_equal(acl_rule_text(rule), variants[i]);
		assert_null(acl_match_name(acl, name, 80, ACL_ADMITS));
		assert_int_equal(acl_check_name(acl, NULL, name, 80, &name_allowed, &rule),
				 ACL_DENY_FORBIDDEN);
		assert_false(name_allowed);
		assert_string_equal(acl_rule_text(rule), variants[i]);
		assert_int_equal(acl_check_name(NULL, acl, name, 80, &name_allowed, &rule),
				 ACL_DENY_NOT_ALLOWED);
		assert_false(name_allowed);
		assert_null(rule);
		/* a later allowed rule that decides still admits */
		assert_int_equal(acl_check_name(NULL, two, name, 80, &name_allowed, &rule),
				 ACL_ALLOW);
		assert_true(name_allowed);
		assert_string_equal(acl_rule_text(rule), "~a+");
		/* the limit is per match: the list still decides the next one */
		assert_null(acl_match_name(acl, "aaaa", 80, ACL_FORBIDS));
		acl_free(two);
		acl_free(acl);
	}
}

/* Sensible regexes decide on the longest names, by JIT and interpreter
 * alike: the limits are far above what they need. */
static void test_regex_decides_on_longest_names(void **state)
{
	static const char *const sensible[] = {
		"~(?:[a-z0-9-]{1,63}\\.)*[a-z0-9-]{1,63}",
		"~((a)|(b)|(\\.))*",
		"~([ab]+\\.?)*",
		"~(.*\\.)?(a|b)+",
		"~.*a.*b.*",
		"~(ab|a|b)*(\\.(ab|b|a)+)*",
	};
	char longest[ACL_NAME_MAX + 1];
	size_t i, j;

	for (i = 0; i < ACL_NAME_MAX; i++) /* ab.. 63 bytes .ab.. */
		longest[i] = i % (ACL_LABEL_MAX + 1) == ACL_LABEL_MAX ? '.' : "ab"[i % 2];
	longest[ACL_NAME_MAX] = '\0';
	for (i = 0; i < ARRAY_SIZE(sensible); i++) {
		const char *const one[] = { sensible[i], NULL };
		struct interpreted slow;
		struct acl *acl[2];

		interpret(one, &slow);
		acl[0] = compile_or_fail(sensible[i], one);
		acl[1] = compile_or_fail(sensible[i], slow.patterns);
		for (j = 0; j < ARRAY_SIZE(acl); j++)
			if (!acl_match_name(acl[j], longest, 80, ACL_ADMITS))
				fail_msg("%s%s: no decided match on the longest name", sensible[i],
					 j ? " (interpreter)" : "");
		acl_free(acl[0]);
		acl_free(acl[1]);
	}
}

/* What glibc's engine needed a predictor for (they were refused as "too
 * complex" or "can match nothing"): PCRE2 compiles them, and matching them
 * against hostile names returns, deciding or hitting a limit. */
static void test_costly_regexes_are_bounded(void **state)
{
	static const char *const costly[] = {
		"~((((((((((((a+)+)+)+)+)+)+)+)+)+)+)+)+",
		"~(a{2}){0,500}",
		"~a{2049}",
		"~(ab?){257}",
		"~a{0,257}",
		"~(a|b|){2}c?",
		"~(a?){2}",
		"~(a*b*c*d*){17}",
		"~(\\bp*)+",
		"~(^)*",
		"~(a|$)+",
		"~(()+)+",
		"~((a+)+)+b((((((((c+)+)+)+)+)+)+)+)+",
		"~(a|aa)+[0-9]",
		"~.*a.*b.*c.*d.*e",
		"~(.*)*x",
		"~(a*)*(b*)*[0-9]",
		"~(?:(?:a|a)+)+[0-9]",
	};
	char label[ACL_LABEL_MAX + 1], longest[ACL_NAME_MAX + 1];
	const char *names[] = { label, longest, "a", "aaaaab" };
	size_t i, j, k;

	memset(label, 'a', ACL_LABEL_MAX);
	label[ACL_LABEL_MAX] = '\0';
	for (i = 0; i < ACL_NAME_MAX; i++) /* a.. 63 bytes .a.. */
		longest[i] = i % (ACL_LABEL_MAX + 1) == ACL_LABEL_MAX ? '.' : 'a';
	longest[ACL_NAME_MAX] = '\0';
	for (i = 0; i < ARRAY_SIZE(costly); i++) {
		struct interpreted slow;
		const char *const one[] = { costly[i], NULL };
		struct acl *acl[2];

		interpret(one, &slow);
		acl[0] = compile_or_fail(costly[i], one);
		acl[1] = compile_or_fail(costly[i], slow.patterns);
		for (j = 0; j < ARRAY_SIZE(acl); j++)
			for (k = 0; k < ARRAY_SIZE(names); k++)
				/* admitted implies forbidden: undecided never admits */
				if (acl_match_name(acl[j], names[k], 80, ACL_ADMITS))
					assert_non_null(
						acl_match_name(acl[j], names[k], 80, ACL_FORBIDS));
		acl_free(acl[0]);
		acl_free(acl[1]);
	}
}

/* Threads may share a list: each match borrows the list's match data or,
 * when another thread holds it, uses its own; answers never mix. */
#define SHARING_THREADS 4
#define SHARED_MATCHES 2000

static void *match_shared(void *arg)
{
	const struct acl *acl = arg;
	uintptr_t wrong = 0;
	int i;

	for (i = 0; i < SHARED_MATCHES; i++) {
		bool want = i % 2;
		const char *name = want ? "web12.corp" : "web.corp";

		wrong += (acl_match_name(acl, name, 80, ACL_FORBIDS) != NULL) != want;
	}
	return (void *)wrong;
}

static void test_threads_share_a_list(void **state)
{
	static const char *const patterns[] = { "~(?:db|web)[0-9]+\\.corp", NULL };
	struct acl *acl = compile_or_fail("shared", patterns);
	pthread_t threads[SHARING_THREADS];
	void *wrong;
	size_t i;

	for (i = 0; i < SHARING_THREADS; i++)
		assert_int_equal(pthread_create(&threads[i], NULL, match_shared, acl), 0);
	for (i = 0; i < SHARING_THREADS; i++) {
		assert_int_equal(pthread_join(threads[i], &wrong), 0);
		assert_null(wrong);
	}
	acl_free(acl);
}

/* ---- named host sets: every range's edges ----------------------------- */

struct set_edge_case {
	const char *set;    /* the pattern */
	const char *target; /* an address spelling, through acl_canonical_host */
	bool in;
};

#define IN(set, target)           \
	{                         \
		set, target, true \
	}
#define OUT(set, target)           \
	{                          \
		set, target, false \
	}

static const struct set_edge_case set_edge_cases[] = {
	/* @loopback: 127.0.0.0/8, ::1, and what connects there */
	IN("@loopback", "127.0.0.0"),
	IN("@loopback", "127.0.0.1"),
	IN("@loopback", "127.255.255.255"),
	OUT("@loopback", "126.255.255.255"),
	OUT("@loopback", "128.0.0.0"),
	IN("@loopback", "::1"),
	OUT("@loopback", "::2"),
	IN("@loopback", "0.0.0.0"), /* Linux connects it to 127.0.0.1 */
	IN("@loopback", "::"),      /* ... and :: to ::1 */
	IN("@loopback", "127.1"),
	IN("@loopback", "2130706433"),
	IN("@loopback", "::ffff:127.0.0.0"),
	IN("@loopback", "::ffff:127.255.255.255"),
	OUT("@loopback", "::ffff:126.255.255.255"),
	OUT("@loopback", "::ffff:128.0.0.0"),
	IN("@loopback", "::127.0.0.2"),
	IN("@loopback", "::ffff:0.0.0.0"),
	IN("@loopback", "64:ff9b::7f00:0"),
	IN("@loopback", "64:ff9b::7fff:ffff"),
	OUT("@loopback", "64:ff9b::7eff:ffff"),
	OUT("@loopback", "64:ff9b::8000:0"),
	IN("@loopback", "64:ff9b::"), /* 0.0.0.0 inside */
	OUT("@loopback", "::1:0:0:1"),
	OUT("@loopback", "10.0.0.1"),
	/* @private: 10/8 */
	IN("@private", "10.0.0.0"),
	IN("@private", "10.255.255.255"),
	OUT("@private", "9.255.255.255"),
	OUT("@private", "11.0.0.0"),
	IN("@private", "::ffff:10.0.0.0"),
	IN("@private", "::ffff:10.255.255.255"),
	OUT("@private", "::ffff:9.255.255.255"),
	OUT("@private", "::ffff:11.0.0.0"),
	IN("@private", "64:ff9b::a00:0"),
	IN("@private", "64:ff9b::aff:ffff"),
	OUT("@private", "64:ff9b::9ff:ffff"),
	OUT("@private", "64:ff9b::b00:0"),
	IN("@private", "::10.1.2.3"),
	IN("@private", "167772161"), /* 10.0.0.1 */
	/* 172.16/12 */
	IN("@private", "172.16.0.0"),
	IN("@private", "172.31.255.255"),
	OUT("@private", "172.15.255.255"),
	OUT("@private", "172.32.0.0"),
	IN("@private", "::ffff:172.16.0.0"),
	OUT("@private", "::ffff:172.32.0.0"),
	IN("@private", "64:ff9b::ac10:0"),
	IN("@private", "64:ff9b::ac1f:ffff"),
	OUT("@private", "64:ff9b::ac0f:ffff"),
	OUT("@private", "64:ff9b::ac20:0"),
	/* 192.168/16 */
	IN("@private", "192.168.0.0"),
	IN("@private", "192.168.255.255"),
	OUT("@private", "192.167.255.255"),
	OUT("@private", "192.169.0.0"),
	IN("@private", "::ffff:192.168.1.1"),
	IN("@private", "64:ff9b::c0a8:0"),
	IN("@private", "64:ff9b::c0a8:ffff"),
	OUT("@private", "64:ff9b::c0a7:ffff"),
	OUT("@private", "64:ff9b::c0a9:0"),
	/* 169.254/16, cloud metadata included */
	IN("@private", "169.254.0.0"),
	IN("@private", "169.254.169.254"),
	IN("@private", "169.254.255.255"),
	OUT("@private", "169.253.255.255"),
	OUT("@private", "169.255.0.0"),
	IN("@private", "::ffff:169.254.169.254"),
	IN("@private", "64:ff9b::a9fe:a9fe"),
	OUT("@private", "64:ff9b::a9fd:ffff"),
	OUT("@private", "64:ff9b::a9ff:0"),
	/* 100.64/10 */
	IN("@private", "100.64.0.0"),
	IN("@private", "100.127.255.255"),
	OUT("@private", "100.63.255.255"),
	OUT("@private", "100.128.0.0"),
	IN("@private", "::ffff:100.64.0.1"),
	IN("@private", "64:ff9b::6440:0"),
	IN("@private", "64:ff9b::647f:ffff"),
	OUT("@private", "64:ff9b::643f:ffff"),
	OUT("@private", "64:ff9b::6480:0"),
	/* fc00::/7 */
	IN("@private", "fc00::"),
	IN("@private", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
	OUT("@private", "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
	OUT("@private", "fe00::"),
	/* fe80::/10 and fec0::/10 (so fe80:: to feff:...) */
	IN("@private", "fe80::"),
	IN("@private", "fe80::1"),
	IN("@private", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
	IN("@private", "fec0::"),
	IN("@private", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
	OUT("@private", "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
	OUT("@private", "ff00::"),
	OUT("@private", "ff02::1"),
	/* 64:ff9b:1::/48 (RFC 8215, local-use NAT64) as a whole */
	IN("@private", "64:ff9b:1::"),
	IN("@private", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff"),
	IN("@private", "64:ff9b:1::808:808"),
	OUT("@private", "64:ff9b:0:ffff:ffff:ffff:ffff:ffff"),
	OUT("@private", "64:ff9b:2::"),
	/* public addresses, loopback and the unwrapped public NAT64 */
	OUT("@private", "8.8.8.8"),
	OUT("@private", "64:ff9b::808:808"),
	OUT("@private", "64:ff9b::"),
	OUT("@private", "2001:db8::1"),
	OUT("@private", "127.0.0.1"),
	OUT("@private", "::1"),
	OUT("@private", "0.0.0.0"),
	OUT("@private", "::"),
	/* @local: exactly test_local's addresses, not their networks */
	IN("@local", "10.200.0.1"),
	OUT("@local", "10.200.0.0"),
	OUT("@local", "10.200.0.2"),
	IN("@local", "198.51.100.7"),
	OUT("@local", "198.51.100.6"),
	OUT("@local", "198.51.100.8"),
	IN("@local", "2001:db8::7"),
	OUT("@local", "2001:db8::6"),
	OUT("@local", "2001:db8::8"),
	IN("@local", "fe80::1"),
	OUT("@local", "fe80::2"),
	IN("@local", "127.0.0.1"),
	OUT("@local", "127.0.0.2"),
	IN("@local", "::1"),
	IN("@local", "0.0.0.0"), /* reaches 127.0.0.1, a local address */
	IN("@local", "::"),
	IN("@local", "::ffff:10.200.0.1"),
	IN("@local", "::10.200.0.1"),
	IN("@local", "64:ff9b::ac8:1"),
	OUT("@local", "64:ff9b::ac8:2"),
	IN("@local", "64:ff9b::c633:6407"), /* 198.51.100.7 */
	IN("@local", "10.9.9.9"),           /* listed as ::ffff:10.9.9.9 */
	IN("@local", "::ffff:10.9.9.9"),
	OUT("@local", "10.9.9.8"),
	OUT("@local", "8.8.8.8"),
};

static void test_set_edges(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(set_edge_cases); i++) {
		const struct set_edge_case *c = &set_edge_cases[i];
		const char *patterns[] = { c->set, NULL };
		char label[ERR_BYTES];
		struct acl *acl;
		struct acl_host host;
		const struct acl_rule *rule;

		snprintf(label, sizeof(label), "%s vs %s", c->set, c->target);
		acl = compile_or_fail(label, patterns);
		host = canonical_or_fail(label, c->target);
		assert_int_equal(host.kind, ACL_HOST_ADDR);
		rule = acl_match_addr(acl, host.addr.family, host.addr.bytes, 80);
		if (c->in && !rule)
			fail_msg("%s: not in the set", label);
		if (!c->in && rule)
			fail_msg("%s: in the set", label);
		/* the same, as an address the resolver returned for a name */
		if (acl_check_addr(acl, NULL, host.addr.family, host.addr.bytes, 80, true, NULL) !=
		    (c->in ? ACL_DENY_FORBIDDEN : ACL_ALLOW))
			fail_msg("%s: forbidden_hosts verdict disagrees", label);
		acl_free(acl);
	}
}

/* Without interface addresses (a syntax check), @local matches nothing. */
static void test_local_without_addresses(void **state)
{
	static const char *const patterns[] = { "@local" };
	static const struct acl_local none = { NULL, 0 };
	static const uint8_t v4[4] = { 127, 0, 0, 1 };
	static const uint8_t v6[16] = { [15] = 1 };
	struct acl *acl = NULL;

	assert_int_equal(acl_compile(patterns, 1, NULL, &acl, NULL, NULL, 0), 0);
	assert_null(acl_match_addr(acl, AF_INET, v4, 80));
	assert_null(acl_match_addr(acl, AF_INET6, v6, 80));
	acl_free(acl);
	assert_int_equal(acl_compile(patterns, 1, &none, &acl, NULL, NULL, 0), 0);
	assert_null(acl_match_addr(acl, AF_INET, v4, 80));
	acl_free(acl);
	/* the compiled list keeps its own copy of the addresses */
	{
		struct acl_addr addrs[1] = { { AF_INET, { 10, 1, 1, 1 } } };
		const struct acl_local one = { addrs, 1 };
		const uint8_t hit[4] = { 10, 1, 1, 1 };

		assert_int_equal(acl_compile(patterns, 1, &one, &acl, NULL, NULL, 0), 0);
		memset(addrs, 0, sizeof(addrs));
		assert_non_null(acl_match_addr(acl, AF_INET, hit, 80));
		acl_free(acl);
	}
}

/* An address matches the same rule whatever form it arrives in. */
static void test_mapped_forms_agree(void **state)
{
	static const char *const patterns[] = {
		"127.0.0.1", "10.0.0.0/8", "192.168.0.0/16:22", "::1", "fd00::/8", "*:25",
	};
	static const char *const v4_targets[] = {
		"127.0.0.1", "10.200.1.1", "192.168.3.4", "8.8.8.8", "0.0.0.0", "0.0.0.2",
	};
	static const uint16_t ports[] = { 22, 25, 443 };
	struct acl *acl = NULL;
	size_t i, j;

	assert_int_equal(acl_compile(patterns, ARRAY_SIZE(patterns), NULL, &acl, NULL, NULL, 0), 0);
	for (i = 0; i < ARRAY_SIZE(v4_targets); i++) {
		struct acl_addr v4;
		uint8_t mapped[16] = { [10] = 0xff, [11] = 0xff };
		uint8_t compatible[16] = { 0 };
		uint8_t nat64[16] = { 0x00, 0x64, 0xff, 0x9b };

		text_to_addr(v4_targets[i], &v4);
		memcpy(mapped + 12, v4.bytes, 4);
		memcpy(compatible + 12, v4.bytes, 4);
		memcpy(nat64 + 12, v4.bytes, 4);
		for (j = 0; j < ARRAY_SIZE(ports); j++) {
			const struct acl_rule *want;

			want = acl_match_addr(acl, AF_INET, v4.bytes, ports[j]);

			if (acl_match_addr(acl, AF_INET6, mapped, ports[j]) != want)
				fail_msg("::ffff:%s:%u differs from %s", v4_targets[i], ports[j],
					 v4_targets[i]);
			if (get_be32(v4.bytes) > 1 &&
			    acl_match_addr(acl, AF_INET6, compatible, ports[j]) != want)
				fail_msg("::%s:%u differs from %s", v4_targets[i], ports[j],
					 v4_targets[i]);
			/* no IPv6 rule here covers 64:ff9b::/96 */
			if (acl_match_addr(acl, AF_INET6, nat64, ports[j]) != want)
				fail_msg("64:ff9b::%s:%u differs from %s", v4_targets[i], ports[j],
					 v4_targets[i]);
		}
	}
	/* Another family never matches, not even an any-host rule. */
	assert_null(acl_match_addr(acl, AF_UNIX, (const uint8_t *)"\x7f\0\0\x01", 25));
	acl_free(acl);
}

/* ---- the agent's whole decision ---------------------------------------- */

struct decision_case {
	const char *label;
	const char *forbidden[MAX_PATTERNS];
	const char *allowed[MAX_PATTERNS];
	const char *target;
	uint16_t port;
	const char *resolved[MAX_RESOLVED]; /* what the resolver returns for a name */
	enum acl_verdict want_name;         /* step 2 (ACL_ALLOW for an address target) */
	const char *want_dialled;           /* addresses dialled, in order, ", "-joined */
	enum acl_verdict want_verdict;      /* ALLOW if something was dialled, else the
					     * first denial's verdict */
	const char *want_rule;              /* that denial's rule, or NULL */
};

#define PRODUCTION                                         \
	{                                                  \
		"localhost", "127.0.0.1", "192.168.0.0/16" \
	}
#define SETS                                      \
	{                                         \
		"@loopback", "@private", "@local" \
	} /* docs/acl.md's production list */
#define NONE         \
	{            \
		NULL \
	}

/* clang-format off */
static const struct decision_case decision_cases[] = {
	{ "production: localhost", PRODUCTION, NONE, "localhost", 80, { "127.0.0.1", "::1" },
	  ACL_DENY_FORBIDDEN, "", ACL_DENY_FORBIDDEN, "localhost" },
	{ "production: LOCALHOST.", PRODUCTION, NONE, "LOCALHOST.", 80, { "127.0.0.1" },
	  ACL_DENY_FORBIDDEN, "", ACL_DENY_FORBIDDEN, "localhost" },
	{ "production: 127.1", PRODUCTION, NONE, "127.1", 80, NONE, ACL_ALLOW, "",
	  ACL_DENY_FORBIDDEN, "127.0.0.1" },
	{ "production: 2130706433", PRODUCTION, NONE, "2130706433", 80, NONE, ACL_ALLOW, "",
	  ACL_DENY_FORBIDDEN, "127.0.0.1" },
	{ "production: mapped loopback", PRODUCTION, NONE, "[::ffff:127.0.0.1]", 80, NONE,
	  ACL_ALLOW, "", ACL_DENY_FORBIDDEN, "127.0.0.1" },
	{ "production: 0.0.0.0 reaches loopback", PRODUCTION, NONE, "0.0.0.0", 80, NONE,
	  ACL_ALLOW, "", ACL_DENY_FORBIDDEN, "127.0.0.1" },
	{ "production: other loopback address", PRODUCTION, NONE, "127.0.0.2", 80, NONE,
	  ACL_ALLOW, "127.0.0.2", ACL_ALLOW, NULL },
	{ "production: name resolving to loopback", PRODUCTION, NONE, "evil.example", 80,
	  { "127.0.0.1" }, ACL_ALLOW, "", ACL_DENY_FORBIDDEN, "127.0.0.1" },
	{ "production: AAAA record mapping into a forbidden network", PRODUCTION, NONE,
	  "rebind.example", 80, { "::ffff:192.168.1.1" }, ACL_ALLOW, "", ACL_DENY_FORBIDDEN,
	  "192.168.0.0/16" },
	{ "production: only the permitted addresses are dialled", PRODUCTION, NONE,
	  "mixed.example", 443, { "192.168.1.1", "127.0.0.2", "127.0.0.1", "::1" }, ACL_ALLOW,
	  "127.0.0.2, ::1", ACL_ALLOW, NULL },
	{ "production: public name", PRODUCTION, NONE, "example.com", 443,
	  { "93.184.216.34", "2606:2800:220:1::1" }, ACL_ALLOW, "93.184.216.34, 2606:2800:220:1::1",
	  ACL_ALLOW, NULL },
	{ "production: evil suffix is not localhost", PRODUCTION, NONE, "localhost.evil.net", 80,
	  { "203.0.113.9" }, ACL_ALLOW, "203.0.113.9", ACL_ALLOW, NULL },
	{ "allowed name, forbidden address", { "10.0.0.0/8" }, { "*.corp" }, "db.corp", 5432,
	  { "10.1.1.1" }, ACL_ALLOW, "", ACL_DENY_FORBIDDEN, "10.0.0.0/8" },
	{ "allowed name admits its other addresses", { "10.0.0.0/8" }, { "*.corp" }, "db.corp",
	  5432, { "10.1.1.1", "172.16.0.5" }, ACL_ALLOW, "172.16.0.5", ACL_ALLOW, NULL },
	{ "*.corp is not corp", NONE, { "*.corp" }, "corp", 80, { "172.16.0.5" },
	  ACL_DENY_NOT_ALLOWED, "", ACL_DENY_NOT_ALLOWED, NULL },
	{ "name-only allow list refuses before resolving", NONE, { "*.corp" }, "example.com", 80,
	  { "93.184.216.34" }, ACL_DENY_NOT_ALLOWED, "", ACL_DENY_NOT_ALLOWED, NULL },
	{ "name-only allow list refuses addresses", NONE, { "*.corp" }, "10.0.0.1", 80, NONE,
	  ACL_ALLOW, "", ACL_DENY_NOT_ALLOWED, NULL },
	{ "allowed network admits only its addresses", NONE, { "172.16.0.0/12" }, "app.example",
	  80, { "8.8.8.8", "172.16.1.1" }, ACL_ALLOW, "172.16.1.1", ACL_ALLOW, NULL },
	{ "allowed network at another port", NONE, { "172.16.0.0/12:443" }, "app.example", 80,
	  { "172.16.1.1" }, ACL_DENY_NOT_ALLOWED, "", ACL_DENY_NOT_ALLOWED, NULL },
	{ "allowed network, numeric target", NONE, { "172.16.0.0/12" }, "172.16.9.9", 80, NONE,
	  ACL_ALLOW, "172.16.9.9", ACL_ALLOW, NULL },
	{ "allowed network, numeric target outside", NONE, { "172.16.0.0/12" }, "172.32.0.1", 80,
	  NONE, ACL_ALLOW, "", ACL_DENY_NOT_ALLOWED, NULL },
	{ "development .* admits names", NONE, { ".*" }, "anything.example", 80, { "10.0.0.1" },
	  ACL_ALLOW, "10.0.0.1", ACL_ALLOW, NULL },
	{ "development .* admits addresses", NONE, { ".*" }, "[2001:db8::1]", 80, NONE, ACL_ALLOW,
	  "2001:db8::1", ACL_ALLOW, NULL },
	{ "forbidden wins over allowed", { "*" }, { "*" }, "example.com", 80, { "1.2.3.4" },
	  ACL_DENY_FORBIDDEN, "", ACL_DENY_FORBIDDEN, "*" },
	{ "allowed port only", NONE, { "example.com:443" }, "example.com", 80, { "1.2.3.4" },
	  ACL_DENY_NOT_ALLOWED, "", ACL_DENY_NOT_ALLOWED, NULL },
	{ "forbidden port", { "*:25" }, NONE, "mail.example", 25, { "1.2.3.4" },
	  ACL_DENY_FORBIDDEN, "", ACL_DENY_FORBIDDEN, "*:25" },
	{ "forbidden port, other port", { "*:25" }, NONE, "mail.example", 587, { "1.2.3.4" },
	  ACL_ALLOW, "1.2.3.4", ACL_ALLOW, NULL },
	{ "forbidden regex is anchored", { "~.*\\.internal" }, NONE, "db.internal.example.com", 80,
	  { "1.2.3.4" }, ACL_ALLOW, "1.2.3.4", ACL_ALLOW, NULL },
	{ "forbidden regex", { "~.*\\.internal" }, NONE, "DB.Internal.", 80, { "1.2.3.4" },
	  ACL_DENY_FORBIDDEN, "", ACL_DENY_FORBIDDEN, "~.*\\.internal" },
	{ "allowed ::1 by address only", NONE, { "::1" }, "localhost", 80, { "127.0.0.1", "::1" },
	  ACL_ALLOW, "::1", ACL_ALLOW, NULL },
	{ "no lists: everything", NONE, NONE, "example.com", 80, { "127.0.0.1" }, ACL_ALLOW,
	  "127.0.0.1", ACL_ALLOW, NULL },
	{ "mixed denials name the first", { "10.0.0.0/8" }, { "192.0.2.0/24" }, "x.example", 80,
	  { "198.51.100.1", "10.0.0.1" }, ACL_ALLOW, "", ACL_DENY_NOT_ALLOWED, NULL },
	{ "forbidden denial first", { "10.0.0.0/8" }, { "192.0.2.0/24" }, "x.example", 80,
	  { "10.0.0.1", "198.51.100.1" }, ACL_ALLOW, "", ACL_DENY_FORBIDDEN, "10.0.0.0/8" },
	{ "sets: localhost", SETS, NONE, "localhost", 80, { "127.0.0.1", "::1" }, ACL_ALLOW, "",
	  ACL_DENY_FORBIDDEN, "@loopback" },
	{ "sets: 127.0.0.2", SETS, NONE, "127.0.0.2", 80, NONE, ACL_ALLOW, "", ACL_DENY_FORBIDDEN,
	  "@loopback" },
	{ "sets: cloud metadata by name", SETS, NONE, "metadata.google.internal", 80,
	  { "169.254.169.254" }, ACL_ALLOW, "", ACL_DENY_FORBIDDEN, "@private" },
	{ "sets: NAT64 into the LAN", SETS, NONE, "[64:ff9b::c0a8:101]", 80, NONE, ACL_ALLOW, "",
	  ACL_DENY_FORBIDDEN, "@private" },
	{ "sets: NAT64 into loopback", SETS, NONE, "64:ff9b::127.0.0.1", 80, NONE, ACL_ALLOW, "",
	  ACL_DENY_FORBIDDEN, "@loopback" },
	{ "sets: the agent's own public address", SETS, NONE, "me.example", 443,
	  { "198.51.100.7" }, ACL_ALLOW, "", ACL_DENY_FORBIDDEN, "@local" },
	{ "sets: only the public addresses are dialled", SETS, NONE, "mixed.example", 443,
	  { "10.1.1.1", "93.184.216.34", "fd00::1", "198.51.100.7", "2606:2800:220:1::1" },
	  ACL_ALLOW, "93.184.216.34, 2606:2800:220:1::1", ACL_ALLOW, NULL },
	{ "sets: public NAT64 address", SETS, NONE, "[64:ff9b::5db8:d822]", 443, NONE, ACL_ALLOW,
	  "64:ff9b::5db8:d822", ACL_ALLOW, NULL },
	{ "allowed set: a name is resolved, its private address admitted", NONE, { "@private" },
	  "db.corp", 5432, { "8.8.8.8", "10.1.1.1" }, ACL_ALLOW, "10.1.1.1", ACL_ALLOW, NULL },
	{ "allowed set at another port", NONE, { "@private:443" }, "db.corp", 5432,
	  { "10.1.1.1" }, ACL_DENY_NOT_ALLOWED, "", ACL_DENY_NOT_ALLOWED, NULL },
	{ "allowed set, forbidden wins", { "10.1.0.0/16" }, { "@private" }, "10.1.2.3", 80, NONE,
	  ACL_ALLOW, "", ACL_DENY_FORBIDDEN, "10.1.0.0/16" },
};
/* clang-format on */

/* What the agent does for OPEN(target, port), per acl.h. */
static void check_decision(const struct decision_case *c)
{
	struct acl *forbidden = compile_or_fail(c->label, c->forbidden);
	struct acl *allowed = compile_or_fail(c->label, c->allowed);
	struct acl_host host = canonical_or_fail(c->label, c->target);
	enum acl_verdict name_verdict = ACL_ALLOW, verdict = ACL_DENY_NOT_ALLOWED, v;
	const struct acl_rule *rule = NULL, *first_denial = NULL;
	struct acl_addr addrs[MAX_RESOLVED];
	char dialled[DIALLED_BYTES] = "", text[INET6_ADDRSTRLEN];
	bool name_allowed = false, denied = false;
	size_t naddrs = 0, i;

	if (host.kind == ACL_HOST_ADDR) {
		addrs[naddrs++] = host.addr;
	} else {
		name_verdict = acl_check_name(forbidden, allowed, host.name, c->port, &name_allowed,
					      &rule);
		if (name_verdict != ACL_ALLOW) {
			verdict = name_verdict;
			first_denial = rule;
			denied = true;
		}
		while (!denied && naddrs < MAX_RESOLVED && c->resolved[naddrs]) {
			text_to_addr(c->resolved[naddrs], &addrs[naddrs]);
			naddrs++;
		}
	}
	if (name_verdict != c->want_name)
		fail_msg("%s: name step %s, want %s", c->label, acl_verdict_name(name_verdict),
			 acl_verdict_name(c->want_name));
	for (i = 0; i < naddrs; i++) {
		v = acl_check_addr(forbidden, allowed, addrs[i].family, addrs[i].bytes, c->port,
				   name_allowed, &rule);
		if (v == ACL_ALLOW) {
			addr_to_text(&addrs[i], text, sizeof(text));
			snprintf(dialled + strlen(dialled), sizeof(dialled) - strlen(dialled),
				 "%s%s", dialled[0] ? ", " : "", text);
			verdict = ACL_ALLOW;
		} else if (!denied) {
			verdict = v;
			first_denial = rule;
			denied = true;
		}
	}
	if (strcmp(dialled, c->want_dialled) != 0)
		fail_msg("%s: dialled '%s', want '%s'", c->label, dialled, c->want_dialled);
	if (verdict != c->want_verdict)
		fail_msg("%s: verdict %s, want %s", c->label, acl_verdict_name(verdict),
			 acl_verdict_name(c->want_verdict));
	if (verdict != ACL_ALLOW &&
	    (c->want_rule ? !first_denial || strcmp(acl_rule_text(first_denial), c->want_rule)
			  : first_denial != NULL))
		fail_msg("%s: denial names '%s', want '%s'", c->label,
			 first_denial ? acl_rule_text(first_denial) : "(none)",
			 c->want_rule ? c->want_rule : "(none)");
	acl_free(forbidden);
	acl_free(allowed);
}

static void test_decisions(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(decision_cases); i++)
		check_decision(&decision_cases[i]);
}

/* The rule a name step reports, and the out-parameters that may be NULL. */
static void test_check_outputs(void **state)
{
	static const char *const allow_list[] = { "*.corp" };
	static const uint8_t v4[4] = { 10, 0, 0, 1 };
	struct acl *allowed = NULL;
	const struct acl_rule *rule = NULL;
	bool name_allowed = false;

	assert_int_equal(acl_compile(allow_list, 1, NULL, &allowed, NULL, NULL, 0), 0);
	assert_int_equal(acl_check_name(NULL, allowed, "db.corp", 80, &name_allowed, &rule),
			 ACL_ALLOW);
	assert_true(name_allowed);
	assert_string_equal(acl_rule_text(rule), "*.corp");
	assert_int_equal(acl_check_name(NULL, allowed, "db.corp", 80, NULL, NULL), ACL_ALLOW);
	assert_int_equal(acl_check_name(NULL, NULL, "db.corp", 80, &name_allowed, &rule),
			 ACL_ALLOW);
	assert_true(name_allowed);
	assert_null(rule);
	assert_int_equal(acl_check_addr(NULL, allowed, AF_INET, v4, 80, true, NULL), ACL_ALLOW);
	assert_int_equal(acl_check_addr(NULL, allowed, AF_INET, v4, 80, false, &rule),
			 ACL_DENY_NOT_ALLOWED);
	assert_null(rule);
	/* An address of another family is never dialled. */
	assert_int_equal(acl_check_addr(NULL, NULL, AF_UNIX, v4, 80, true, &rule),
			 ACL_DENY_NOT_ALLOWED);
	acl_free(allowed);

	assert_string_equal(acl_verdict_name(ACL_ALLOW), "allowed");
	assert_string_equal(acl_verdict_name(ACL_DENY_FORBIDDEN), "forbidden");
	assert_string_equal(acl_verdict_name(ACL_DENY_NOT_ALLOWED), "not allowed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_canonical_host),
		cmocka_unit_test(test_canonical_host_null_why),
		cmocka_unit_test(test_compile_every_form),
		cmocka_unit_test(test_compile_empty),
		cmocka_unit_test(test_bad_patterns),
		cmocka_unit_test(test_bad_pattern_edges),
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_regex_limit_fails_closed),
		cmocka_unit_test(test_regex_decides_on_longest_names),
		cmocka_unit_test(test_costly_regexes_are_bounded),
		cmocka_unit_test(test_threads_share_a_list),
		cmocka_unit_test(test_mapped_forms_agree),
		cmocka_unit_test(test_set_edges),
		cmocka_unit_test(test_local_without_addresses),
		cmocka_unit_test(test_decisions),
		cmocka_unit_test(test_check_outputs),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
