/*
 * fuzz_acl.c — libFuzzer target for the host access control (acl.h).
 *
 * Input: two bytes of port (big-endian), then lines separated by '\n'; every
 * line but the last is a pattern (cut at its first NUL, as a C string would
 * be), the last line is a target name from the wire (any bytes, NUL
 * included). The patterns are compiled as one list and one by one, the
 * target is canonicalised and matched, and every promise of acl.h is
 * checked; a broken one aborts:
 *   - compiling never crashes; it fails exactly when some pattern fails
 *     alone, naming the first such one, with a quoted, NUL-terminated
 *     message, and never hands out a list then;
 *   - the list's first match is the first pattern that matches alone,
 *     reading an undecided regex (one that reached PCRE2's limits) either
 *     way (acl_role); a forbidding reading never matches less;
 *   - a regex run by PCRE2's interpreter ("~(*NO_JIT)...") answers as its
 *     JIT does whenever both decide;
 *   - a canonical name re-canonicalises to itself, has the canonical
 *     alphabet and lengths, and comes out the same for the upper-cased and
 *     the dotted spelling of the target;
 *   - an address target given as text (inet_ntop, bare and in brackets)
 *     canonicalises to the same address and matches the same rules as its
 *     binary form, and so do its IPv4-mapped and -compatible forms; its
 *     NAT64 form (64:ff9b::a.b.c.d) matches whatever the IPv4 form matches;
 *   - a rule matching an address also matching a name is an any-host rule;
 *     an exact-name rule matches only its own name;
 *   - the verdict helpers agree with the match functions.
 * `@local` stands for a fixed set of addresses (fuzz_local below).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/acl.h"
#include "anyproxy/common.h"
#include "anyproxy/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PORT_BYTES 2
#define MAX_PATTERNS 8
#define ERR_BYTES 256
#define ERR_CANARY 0x5a
#define PROBE_NAME "probe.example"
#define IPV4_BYTES 4
#define IPV6_BYTES 16
#define EMBEDDED_IPV4_OFFSET 12
#define MAPPED_MARKER_OFFSET 10
#define TARGET_MAX (ACL_NAME_MAX + 8) /* room to add a byte or two */

/* What `@local` means here: an agent's usual interface addresses. */
static const struct acl_addr fuzz_local_addrs[] = {
	{ AF_INET, { 127, 0, 0, 1 } },
	{ AF_INET, { 10, 200, 0, 1 } },
	{ AF_INET, { 198, 51, 100, 7 } },
	{ AF_INET6, { [15] = 1 } },
	{ AF_INET6, { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x07 } },
	{ AF_INET6, { 0xfe, 0x80, [15] = 0x01 } },
};
static const struct acl_local fuzz_local = { fuzz_local_addrs, ARRAY_SIZE(fuzz_local_addrs) };
static const uint8_t nat64_prefix[EMBEDDED_IPV4_OFFSET] = { 0x00, 0x64, 0xff, 0x9b };

struct pattern_set {
	char *text[MAX_PATTERNS];
	size_t count;
	struct acl *one[MAX_PATTERNS]; /* each pattern compiled alone, or NULL */
	struct acl *all;               /* the whole list, or NULL */
};

static void check(bool ok)
{
	if (!ok)
		abort();
}

/* The message buffer holds a NUL-terminated "'pattern': why" and nothing
 * was written past it. */
static void check_message(const char *err)
{
	const char *end = memchr(err, '\0', ERR_BYTES);

	check(end && end > err && err[0] == '\'' && strstr(err, "': "));
}

static void compile_patterns(struct pattern_set *set)
{
	char err[ERR_BYTES + 1];
	size_t i, bad = SIZE_MAX, first_bad = SIZE_MAX;
	struct acl *acl;
	int rc;

	for (i = 0; i < set->count; i++) {
		set->one[i] = NULL;
		memset(err, ERR_CANARY, sizeof(err));
		rc = acl_compile((const char *const *)&set->text[i], 1, &fuzz_local, &set->one[i],
				 &bad, err, ERR_BYTES);
		check(err[ERR_BYTES] == ERR_CANARY);
		if (rc == 0) {
			check(set->one[i] && acl_rule_count(set->one[i]) == 1);
			continue;
		}
		check(rc == -EINVAL && set->one[i] == NULL && bad == 0);
		check_message(err);
		if (first_bad == SIZE_MAX)
			first_bad = i;
	}

	acl = NULL;
	memset(err, ERR_CANARY, sizeof(err));
	rc = acl_compile((const char *const *)set->text, set->count, &fuzz_local, &acl, &bad, err,
			 ERR_BYTES);
	check(err[ERR_BYTES] == ERR_CANARY);
	if (first_bad == SIZE_MAX) {
		check(rc == 0 && acl && acl_rule_count(acl) == set->count);
	} else {
		check(rc == -EINVAL && acl == NULL && bad == first_bad);
		check_message(err);
	}
	set->all = acl;
}

/* The list's first match (got) is the first pattern that matches on its own. */
static void check_first_match(const struct pattern_set *set, const struct acl_rule *got,
			      const struct acl_rule *const *alone)
{
	size_t i;

	for (i = 0; i < set->count; i++)
		if (alone[i])
			break;
	if (i == set->count)
		check(got == NULL);
	else
		check(got && strcmp(acl_rule_text(got), set->text[i]) == 0);
}

static bool is_any_host_pattern(const char *p)
{
	if (p[0] == '.')
		p++;
	return p[0] == '*' && (p[1] == '\0' || p[1] == ':');
}

/* A pattern that can only be an exact host name: it names one host. */
static bool is_exact_name_pattern(const char *p)
{
	return p[0] != '.' && p[0] != '~' && !strpbrk(p, "*[:/");
}

static void check_verdicts_name(const struct acl *acl, const char *name, uint16_t port)
{
	const struct acl_rule *forbids = acl_match_name(acl, name, port, ACL_FORBIDS), *rule;
	const struct acl_rule *match = acl_match_name(acl, name, port, ACL_ADMITS);
	enum acl_verdict v;
	bool name_allowed;

	check(!match || forbids);
	v = acl_check_name(acl, NULL, name, port, &name_allowed, &rule);
	check(forbids ? v == ACL_DENY_FORBIDDEN && rule == forbids
		      : v == ACL_ALLOW && name_allowed && !rule);
	v = acl_check_name(NULL, acl, name, port, &name_allowed, &rule);
	if (match)
		check(v == ACL_ALLOW && name_allowed && rule == match);
	else if (acl_rule_count(acl) == 0)
		check(v == ACL_ALLOW && name_allowed && !rule);
	else
		check(!name_allowed && !rule && v != ACL_DENY_FORBIDDEN);
}

static void check_verdicts_addr(const struct acl *acl, const struct acl_addr *a, uint16_t port)
{
	const struct acl_rule *match = acl_match_addr(acl, a->family, a->bytes, port), *rule;
	enum acl_verdict v;

	v = acl_check_addr(acl, NULL, a->family, a->bytes, port, false, &rule);
	check(match ? v == ACL_DENY_FORBIDDEN && rule == match : v == ACL_ALLOW && !rule);
	v = acl_check_addr(NULL, acl, a->family, a->bytes, port, false, &rule);
	if (acl_rule_count(acl) == 0)
		check(v == ACL_ALLOW && !rule);
	else
		check(match ? v == ACL_ALLOW && rule == match : v == ACL_DENY_NOT_ALLOWED && !rule);
	v = acl_check_addr(NULL, acl, a->family, a->bytes, port, true, &rule);
	check(v == ACL_ALLOW);
}

/* The answer of a one-rule list: 0 no match, 1 match, -1 undecided. */
static int answer(const struct acl *one, const char *name, uint16_t port)
{
	bool forbids = acl_match_name(one, name, port, ACL_FORBIDS) != NULL;
	bool admits = acl_match_name(one, name, port, ACL_ADMITS) != NULL;

	return forbids == admits ? admits : -1;
}

/* A regex pattern run by PCRE2's interpreter answers as its JIT does,
 * whenever both decide (they count steps differently, so one may reach a
 * limit the other does not). */
static void check_interpreter(const char *pattern, const struct acl *jit, const char *name,
			      uint16_t port)
{
	static const char no_jit[] = "~(*NO_JIT)";
	char text[ACL_PATTERN_MAX + sizeof(no_jit)];
	const char *one[] = { text };
	struct acl *slow = NULL;
	int a, b;

	if (pattern[0] != '~')
		return;
	snprintf(text, sizeof(text), "%s%s", no_jit, pattern + 1);
	if (acl_compile(one, 1, &fuzz_local, &slow, NULL, NULL, 0) != 0)
		return; /* too long with the prefix */
	a = answer(jit, name, port);
	b = answer(slow, name, port);
	check(a < 0 || b < 0 || a == b);
	acl_free(slow);
}

static void check_name_target(const struct pattern_set *set, const char *name, uint16_t port)
{
	const struct acl_rule *alone[MAX_PATTERNS] = { NULL };
	const struct acl_rule *alone_forbids[MAX_PATTERNS] = { NULL };
	char prefixed[TARGET_MAX];
	struct acl_host host;
	size_t i, len = strlen(name);
	struct acl_addr loopback = { .family = AF_INET, .bytes = { 127, 0, 0, 1 } };

	for (i = 0; i < set->count; i++) {
		if (!set->one[i])
			continue;
		alone[i] = acl_match_name(set->one[i], name, port, ACL_ADMITS);
		alone_forbids[i] = acl_match_name(set->one[i], name, port, ACL_FORBIDS);
		check_verdicts_name(set->one[i], name, port);
		check_interpreter(set->text[i], set->one[i], name, port);
		if (!alone[i])
			continue;
		/* Only any-host rules match both kinds of target. */
		if (acl_match_addr(set->one[i], loopback.family, loopback.bytes, port))
			check(is_any_host_pattern(set->text[i]));
		/* An exact name is anchored at both ends. */
		if (is_exact_name_pattern(set->text[i])) {
			size_t n = strlen(set->text[i]);

			check(acl_canonical_host((const uint8_t *)set->text[i], n, &host, NULL) ==
				      0 &&
			      host.kind == ACL_HOST_NAME && strcmp(host.name, name) == 0);
			if (len < ACL_NAME_MAX) {
				prefixed[0] = name[0] == 'x' ? 'y' : 'x';
				memcpy(prefixed + 1, name, len + 1);
				check(!acl_match_name(set->one[i], prefixed, port, ACL_FORBIDS));
			}
		}
	}
	if (set->all) {
		check_first_match(set, acl_match_name(set->all, name, port, ACL_ADMITS), alone);
		check_first_match(set, acl_match_name(set->all, name, port, ACL_FORBIDS),
				  alone_forbids);
		check_verdicts_name(set->all, name, port);
	}
}

static void check_addr_target(const struct pattern_set *set, const struct acl_addr *a,
			      uint16_t port)
{
	const struct acl_rule *alone[MAX_PATTERNS] = { NULL };
	size_t i;

	for (i = 0; i < set->count; i++) {
		if (!set->one[i])
			continue;
		alone[i] = acl_match_addr(set->one[i], a->family, a->bytes, port);
		check_verdicts_addr(set->one[i], a, port);
		if (alone[i] && acl_match_name(set->one[i], PROBE_NAME, port, ACL_FORBIDS))
			check(is_any_host_pattern(set->text[i]));
	}
	if (set->all) {
		check_first_match(set, acl_match_addr(set->all, a->family, a->bytes, port), alone);
		check_verdicts_addr(set->all, a, port);
	}
}

/* The same address as another spelling or another family's form must
 * match the same rule of the list. */
static void check_same_rule(const struct acl *acl, const struct acl_addr *a, int family,
			    const uint8_t *bytes, uint16_t port)
{
	check(acl_match_addr(acl, a->family, a->bytes, port) ==
	      acl_match_addr(acl, family, bytes, port));
}

static void check_addr_forms(const struct pattern_set *set, const struct acl_addr *a, uint16_t port)
{
	char text[INET6_ADDRSTRLEN + 2];
	uint8_t v6[IPV6_BYTES] = { 0 };
	struct acl_host host;
	size_t n;

	check(a->family == AF_INET || a->family == AF_INET6);
	check(inet_ntop(a->family, a->bytes, text + 1, INET6_ADDRSTRLEN));
	n = strlen(text + 1);
	check(acl_canonical_host((const uint8_t *)text + 1, n, &host, NULL) == 0 &&
	      host.kind == ACL_HOST_ADDR && host.addr.family == a->family &&
	      memcmp(host.addr.bytes, a->bytes, sizeof(a->bytes)) == 0);
	if (a->family == AF_INET6) {
		text[0] = '[';
		text[n + 1] = ']';
		check(acl_canonical_host((const uint8_t *)text, n + 2, &host, NULL) == 0 &&
		      host.kind == ACL_HOST_ADDR &&
		      memcmp(host.addr.bytes, a->bytes, sizeof(a->bytes)) == 0);
	}
	if (!set->all)
		return;
	check_same_rule(set->all, a, host.addr.family, host.addr.bytes, port);
	if (a->family != AF_INET)
		return;
	memcpy(v6 + EMBEDDED_IPV4_OFFSET, a->bytes, IPV4_BYTES);
	if (get_be32(a->bytes) > 1) /* :: and ::1 are not IPv4-compatible */
		check_same_rule(set->all, a, AF_INET6, v6, port);
	v6[MAPPED_MARKER_OFFSET] = 0xff;
	v6[MAPPED_MARKER_OFFSET + 1] = 0xff;
	check_same_rule(set->all, a, AF_INET6, v6, port);
	/* NAT64 reaches the IPv4 address too: never less caught than it. */
	memcpy(v6, nat64_prefix, sizeof(nat64_prefix));
	if (acl_match_addr(set->all, a->family, a->bytes, port))
		check(acl_match_addr(set->all, AF_INET6, v6, port) != NULL);
}

static bool is_canonical_byte(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

static void check_canonical_name(const char *name)
{
	size_t i, len = strlen(name), label = 0;
	struct acl_host again;

	check(len >= 1 && len <= ACL_NAME_MAX && name[0] != '.' && name[len - 1] != '.');
	for (i = 0; i < len; i++) {
		check(is_canonical_byte(name[i]));
		label = name[i] == '.' ? 0 : label + 1;
		check(label <= ACL_LABEL_MAX && !(name[i] == '.' && name[i + 1] == '.'));
	}
	check(acl_canonical_host((const uint8_t *)name, len, &again, NULL) == 0 &&
	      again.kind == ACL_HOST_NAME && strcmp(again.name, name) == 0);
}

static bool same_host(const struct acl_host *a, const struct acl_host *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == ACL_HOST_NAME)
		return strcmp(a->name, b->name) == 0;
	return a->addr.family == b->addr.family &&
	       memcmp(a->addr.bytes, b->addr.bytes, sizeof(a->addr.bytes)) == 0;
}

/* Case and one trailing dot never change what a target means. */
static void check_spellings(const uint8_t *target, size_t len, const struct acl_host *host)
{
	uint8_t other[TARGET_MAX];
	struct acl_host again;
	size_t i;

	if (len + 1 > sizeof(other))
		return;
	for (i = 0; i < len; i++)
		other[i] = target[i] >= 'a' && target[i] <= 'z' ? (uint8_t)(target[i] - 'a' + 'A')
								: target[i];
	check(acl_canonical_host(other, len, &again, NULL) == 0 && same_host(host, &again));
	if (host->kind == ACL_HOST_NAME && target[len - 1] != '.') {
		memcpy(other, target, len);
		other[len] = '.';
		check(acl_canonical_host(other, len + 1, &again, NULL) == 0 &&
		      same_host(host, &again));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pattern_set set = { .count = 0 };
	const uint8_t *p, *end = data + size, *nl;
	struct acl_host host, untouched;
	const char *why = NULL;
	uint16_t port;
	size_t i;
	int rc;

	/* an undecided regex logs a WARN per rule, and fuzzing makes thousands */
	log_min_level = LOG_ERROR;
	if (size < PORT_BYTES)
		return 0;
	port = get_be16(data);
	p = data + PORT_BYTES;
	while ((nl = memchr(p, '\n', (size_t)(end - p))) && set.count < MAX_PATTERNS) {
		set.text[set.count] = strndup((const char *)p, (size_t)(nl - p));
		if (!set.text[set.count])
			abort();
		set.count++;
		p = nl + 1;
	}
	compile_patterns(&set);

	memset(&host, 0x3c, sizeof(host));
	untouched = host;
	rc = acl_canonical_host(p, (size_t)(end - p), &host, &why);
	if (rc != 0) {
		check(rc == -EINVAL && why && memcmp(&host, &untouched, sizeof(host)) == 0);
	} else if (host.kind == ACL_HOST_NAME) {
		check_canonical_name(host.name);
		check_spellings(p, (size_t)(end - p), &host);
		check_name_target(&set, host.name, port);
	} else {
		check(host.kind == ACL_HOST_ADDR && host.name[0] == '\0');
		check_spellings(p, (size_t)(end - p), &host);
		check_addr_forms(&set, &host.addr, port);
		check_addr_target(&set, &host.addr, port);
	}

	for (i = 0; i < set.count; i++) {
		acl_free(set.one[i]);
		free(set.text[i]);
	}
	acl_free(set.all);
	return 0;
}
