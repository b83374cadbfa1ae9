/*
 * test_username.c — "username.group-id" splitting (src/proxy/username.c).
 *
 * Every input is placed without a terminating NUL right before an
 * inaccessible page, so reading past `len` (a strlen, say) faults.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guard.h"
#include "anyproxy/common.h"
#include "anyproxy/username.h"

/* Longer than any username a proxy protocol carries (SOCKS5: 255). */
#define LONGEST_USERNAME 1024

static int setup(void **state)
{
	return guard_setup(LONGEST_USERNAME);
}

static int teardown(void **state)
{
	return guard_teardown();
}

static const char *place(const char *bytes, size_t n)
{
	return (const char *)guard_place(bytes, n);
}

struct split_case {
	const char *full;
	size_t len;
	const char *base;
	size_t base_len;
	const char *group;
	size_t group_len;
};

/* Text with a known length, NUL bytes included. */
#define T(s) s, sizeof(s) - 1

static const struct split_case split_cases[] = {
	/* The spec's examples. */
	{ T("user.production"), T("user"), T("production") },
	{ T("user.testing"), T("user"), T("testing") },
	{ T("user.prod-uuid-123"), T("user"), T("prod-uuid-123") },
	{ T("admin.test-env-456"), T("admin"), T("test-env-456") },
	{ T("user.us-east"), T("user"), T("us-east") },
	/* Only the first '.' separates. */
	{ T("user.prod.eu"), T("user"), T("prod.eu") },
	{ T("a..b"), T("a"), T(".b") },
	{ T(".."), T(""), T(".") },
	/* Default group: no '.', or nothing after it. */
	{ T("user"), T("user"), T("") },
	{ T("user."), T("user"), T("") },
	{ T(""), T(""), T("") },
	{ T("."), T(""), T("") },
	/* Empty base. */
	{ T(".grp"), T(""), T("grp") },
	/* A NUL byte is an ordinary byte; the length decides. */
	{ T("us\0er.g\0x"), T("us\0er"), T("g\0x") },
	/* Bytes past len are not looked at. */
	{ "user.prod", 4, T("user"), T("") },
	{ "user.prod", 5, T("user"), T("") },
	{ "user.prod", 6, T("user"), T("p") },
};

static void check_split(const char *name, const char *full, size_t len,
			const char *base, size_t base_len, const char *group, size_t group_len)
{
	struct username_parts parts;

	memset(&parts, 0xa5, sizeof(parts));
	username_split(full, len, &parts);
	if (parts.base != full)
		fail_msg("%s: base does not point at the input", name);
	if (parts.base_len != base_len || memcmp(parts.base, base, base_len) != 0)
		fail_msg("%s: base length %zu, want %zu", name, parts.base_len, base_len);
	if (parts.group_len != group_len || memcmp(parts.group, group, group_len) != 0)
		fail_msg("%s: group length %zu, want %zu", name, parts.group_len, group_len);
	/* The group is the tail of the input: after the '.' or, without one,
	 * the empty string at its end. */
	if (parts.group + parts.group_len != full + len)
		fail_msg("%s: group does not end where the input ends", name);
	if (memchr(parts.base, '.', parts.base_len))
		fail_msg("%s: base holds a '.'", name);
}

static void test_split_cases(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(split_cases); i++) {
		const struct split_case *c = &split_cases[i];

		check_split(c->full, place(c->full, c->len), c->len, c->base, c->base_len,
			    c->group, c->group_len);
	}
}

/* Long names, with the '.' at every interesting place. */
static void test_split_long(void **state)
{
	static char name[LONGEST_USERNAME];
	size_t dot;

	memset(name, 'u', sizeof(name));
	check_split("no dot", place(name, sizeof(name)), sizeof(name), name, sizeof(name),
		    "", 0);
	for (dot = 0; dot < sizeof(name); dot += sizeof(name) / 8 - 1) {
		memset(name, 'u', sizeof(name));
		name[dot] = '.';
		name[dot + (sizeof(name) - dot) / 2] = '.'; /* a later '.' is the group's */
		check_split("dot", place(name, sizeof(name)), sizeof(name), name, dot,
			    name + dot + 1, sizeof(name) - dot - 1);
	}
	memset(name, 'u', sizeof(name));
	name[sizeof(name) - 1] = '.';
	check_split("dot last", place(name, sizeof(name)), sizeof(name), name,
		    sizeof(name) - 1, "", 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_cases),
		cmocka_unit_test(test_split_long),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
