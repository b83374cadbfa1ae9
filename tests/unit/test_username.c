/*
 * test_username.c — "username.group-id" splitting and the one identity
 * parsed from it (src/proxy/username.c).
 *
 * Every input is placed without a terminating NUL right before an
 * inaccessible page, so reading past `len` (a strlen, say) faults.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
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

static void check_split(const char *name, const char *full, size_t len, const char *base,
			size_t base_len, const char *group, size_t group_len)
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

		check_split(c->full, place(c->full, c->len), c->len, c->base, c->base_len, c->group,
			    c->group_len);
	}
}

/* Long names, with the '.' at every interesting place. */
static void test_split_long(void **state)
{
	static char name[LONGEST_USERNAME];
	size_t dot;

	memset(name, 'u', sizeof(name));
	check_split("no dot", place(name, sizeof(name)), sizeof(name), name, sizeof(name), "", 0);
	for (dot = 0; dot < sizeof(name); dot += sizeof(name) / 8 - 1) {
		memset(name, 'u', sizeof(name));
		name[dot] = '.';
		name[dot + (sizeof(name) - dot) / 2] = '.'; /* a later '.' is the group's */
		check_split("dot", place(name, sizeof(name)), sizeof(name), name, dot,
			    name + dot + 1, sizeof(name) - dot - 1);
	}
	memset(name, 'u', sizeof(name));
	name[sizeof(name) - 1] = '.';
	check_split("dot last", place(name, sizeof(name)), sizeof(name), name, sizeof(name) - 1, "",
		    0);
}

/* ---- username_parse ---- */

/* A parse that must succeed: every part a NUL-terminated, uncut copy. */
static void check_parsed(const char *name, const char *full, size_t len, const char *base,
			 size_t base_len, const char *group, size_t group_len)
{
	struct username_identity id;
	const char *why = "untouched";
	int ret;

	memset(&id, 0xa5, sizeof(id));
	ret = username_parse(place(full, len), len, &id, &why);
	if (ret != 0)
		fail_msg("%s: refused (%d, %s)", name, ret, why);
	if (strcmp(why, "untouched") != 0)
		fail_msg("%s: why set on success", name);
	if (id.full_len != len || memcmp(id.full, full, len) != 0 || id.full[len] != '\0')
		fail_msg("%s: full is not the input", name);
	if (id.base_len != base_len || memcmp(id.base, base, base_len) != 0 ||
	    id.base[base_len] != '\0')
		fail_msg("%s: base length %zu, want %zu", name, id.base_len, base_len);
	if (id.group_len != group_len || memcmp(id.group, group, group_len) != 0 ||
	    id.group[group_len] != '\0')
		fail_msg("%s: group length %zu, want %zu", name, id.group_len, group_len);
	if (strlen(id.group) != id.group_len || strlen(id.base) != id.base_len)
		fail_msg("%s: a part holds a NUL byte", name);
}

/* A parse that must fail with err, leaving nothing usable behind. */
static void check_refused(const char *name, const char *full, size_t len, int err)
{
	static const struct username_identity zero;
	struct username_identity id;
	const char *why = NULL;
	int ret;

	memset(&id, 0xa5, sizeof(id));
	ret = username_parse(place(full, len), len, &id, &why);
	if (ret != err)
		fail_msg("%s: result %d, want %d", name, ret, err);
	if (!why || !why[0])
		fail_msg("%s: refused without a reason", name);
	if (memcmp(&id, &zero, sizeof(id)) != 0)
		fail_msg("%s: a refused name left an identity behind", name);
	/* why is optional */
	if (username_parse(place(full, len), len, &id, NULL) != err)
		fail_msg("%s: result differs without why", name);
}

struct parse_case {
	const char *full;
	size_t len;
	int err; /* 0: parsed as split_cases would split it */
};

static const struct parse_case parse_cases[] = {
	{ T("user.production"), 0 },
	{ T("user.prod.eu"), 0 },
	{ T("user"), 0 },
	{ T("user."), 0 },
	{ T(""), 0 },
	{ T("."), 0 },
	{ T(".grp"), 0 },
	{ T("a..b"), 0 },
	{ T("user.Production"), 0 }, /* case is kept, not folded */
	{ T("user.a:b_c-d.e"), 0 },  /* the whole id alphabet */
	{ T("us:er.g"), 0 },         /* ':' is fine in a base (SOCKS5) */
	{ T("\xc3\xbc"
	    "ser.g"),
	  0 },                   /* non-ASCII base bytes are fine */
	{ T("user name.g"), 0 }, /* so is a space */
	/* group bytes outside A-Z a-z 0-9 . _ : - */
	{ T("user.prod uction"), -EINVAL },
	{ T("user.prod\0x"), -EINVAL },
	{ T("user.prod\x01"), -EINVAL },
	{ T("user.prod\n"), -EINVAL },
	{ T("user.prod\x7f"), -EINVAL },
	{ T("user.pr\xc3\xb6"
	    "d"),
	  -EINVAL },
	{ T("user.prod/eu"), -EINVAL },
	{ T("user.prod@x"), -EINVAL },
	{ T("user.a+b"), -EINVAL },
	{ T("user.*"), -EINVAL },
	/* base bytes that are NUL or control */
	{ T("us\0er.g"), -EINVAL },
	{ T("\0"), -EINVAL },
	{ T("user\x1f"), -EINVAL },
	{ T("user\r\n.g"), -EINVAL },
	{ T("us\ter"), -EINVAL },
	{ T("user\x7f.g"), -EINVAL },
};

static void test_parse_cases(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct username_parts parts;

		if (c->err) {
			check_refused(c->full, c->full, c->len, c->err);
			continue;
		}
		username_split(c->full, c->len, &parts);
		check_parsed(c->full, c->full, c->len, parts.base, parts.base_len, parts.group,
			     parts.group_len);
	}
}

/* The limits: exactly at them parses, one byte over is refused, never cut. */
static void test_parse_limits(void **state)
{
	static char name[LONGEST_USERNAME];
	static char group[USERNAME_GROUP_MAX + 16];
	size_t n;

	memset(group, 'g', sizeof(group));
	/* the group: USERNAME_GROUP_MAX bytes and no more */
	for (n = USERNAME_GROUP_MAX - 1; n <= USERNAME_GROUP_MAX + 2; n++) {
		memcpy(name, "user.", 5);
		memset(name + 5, 'g', n);
		if (n <= USERNAME_GROUP_MAX)
			check_parsed("group at the limit", name, 5 + n, "user", 4, group, n);
		else
			check_refused("group over the limit", name, 5 + n, -ENAMETOOLONG);
	}
	/* the attack: a 64-byte group, then one more byte or a '.' and
	 * more; both would route to the 64-byte group if they were cut */
	memcpy(name, "user.", 5);
	memset(name + 5, 'g', USERNAME_GROUP_MAX);
	memcpy(name + 5 + USERNAME_GROUP_MAX, "X", 1);
	check_refused("64-byte group + X", name, 5 + USERNAME_GROUP_MAX + 1, -ENAMETOOLONG);
	memcpy(name + 5 + USERNAME_GROUP_MAX, ".anything", 9);
	check_refused("64-byte group + .anything", name, 5 + USERNAME_GROUP_MAX + 9, -ENAMETOOLONG);
	/* the base: USERNAME_BASE_MAX bytes and no more, with or without group */
	memset(name, 'u', sizeof(name));
	check_parsed("base at the limit", name, USERNAME_BASE_MAX, name, USERNAME_BASE_MAX, "", 0);
	check_refused("base over the limit", name, USERNAME_BASE_MAX + 1, -ENAMETOOLONG);
	name[USERNAME_BASE_MAX] = '.';
	memset(name + USERNAME_BASE_MAX + 1, 'g', USERNAME_GROUP_MAX);
	check_parsed("both at the limit", name, USERNAME_FULL_MAX, name, USERNAME_BASE_MAX, group,
		     USERNAME_GROUP_MAX);
	memset(name, 'u', sizeof(name));
	name[USERNAME_BASE_MAX + 1] = '.';
	check_refused("base over the limit, short group", name, USERNAME_BASE_MAX + 4,
		      -ENAMETOOLONG);
	/* far too long: still refused, not read past */
	memset(name, 'u', sizeof(name));
	check_refused("1 KiB base", name, sizeof(name), -ENAMETOOLONG);
	name[4] = '.';
	check_refused("1 KiB group", name, sizeof(name), -ENAMETOOLONG);
}

/* Every byte value, alone in the group and in the base. */
static void test_parse_every_byte(void **state)
{
	char in[8];
	int c;

	for (c = 0; c < 256; c++) {
		bool id_char = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
			       c == '-';
		bool control = c < 0x20 || c == 0x7f;
		char group[3] = { 'g', (char)c, '\0' };

		memcpy(in, "u.g", 3);
		in[3] = (char)c;
		if (id_char)
			check_parsed("group byte", in, 4, "u", 1, group, 2);
		else
			check_refused("group byte", in, 4, -EINVAL);
		in[0] = (char)c;
		memcpy(in + 1, ".g", 2);
		if (c == '.')
			check_parsed("base byte '.'", in, 3, "", 0, ".g", 2);
		else if (control)
			check_refused("base byte", in, 3, -EINVAL);
		else
			check_parsed("base byte", in, 3, in, 1, "g", 1);
	}
}

static void test_anonymous(void **state)
{
	struct username_identity id;

	memset(&id, 0xa5, sizeof(id));
	username_anonymous(&id);
	assert_int_equal(id.full_len, 0);
	assert_int_equal(id.base_len, 0);
	assert_int_equal(id.group_len, 0);
	assert_string_equal(id.full, "");
	assert_string_equal(id.base, "");
	assert_string_equal(id.group, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_cases),      cmocka_unit_test(test_split_long),
		cmocka_unit_test(test_parse_cases),      cmocka_unit_test(test_parse_limits),
		cmocka_unit_test(test_parse_every_byte), cmocka_unit_test(test_anonymous),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
