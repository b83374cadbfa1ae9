/*
 * fuzz_username.c — libFuzzer target for username_parse (username.h): the
 * one identity the gateway derives from a proxy user name.
 *
 * The input is the raw user name (any bytes, any length). Aborts when a
 * promise breaks:
 *   - the result is 0, -EINVAL or -ENAMETOOLONG; a refusal names its rule
 *     and leaves the identity zeroed;
 *   - a parsed identity is an uncut copy: full is the input, and base,
 *     '.', group put back together are the input too (or base alone when
 *     the group is empty and the input has no '.'), each NUL-terminated at
 *     its length with no NUL inside;
 *   - the base has no '.', NUL or control byte and fits USERNAME_BASE_MAX;
 *     the group has only A-Z a-z 0-9 . _ : - and fits USERNAME_GROUP_MAX;
 *   - refusal happens exactly when one of those rules would be broken
 *     (checked against username_split, the independent splitter);
 *   - parsing a parsed name's full text again gives the same identity.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/username.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool id_byte(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '-';
}

/* Does the split name break a rule? The model the parser is checked by. */
static bool should_refuse(const struct username_parts *p)
{
	size_t i;

	if (p->group_len > USERNAME_GROUP_MAX || p->base_len > USERNAME_BASE_MAX)
		return true;
	for (i = 0; i < p->group_len; i++)
		if (!id_byte((uint8_t)p->group[i]))
			return true;
	for (i = 0; i < p->base_len; i++)
		if ((uint8_t)p->base[i] < 0x20 || (uint8_t)p->base[i] == 0x7f)
			return true;
	return false;
}

static void check_text(const char *s, size_t len, size_t max)
{
	if (len > max || s[len] != '\0' || strlen(s) != len)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct username_identity zero;
	static struct username_identity id, again;
	const char *full = (const char *)data;
	struct username_parts parts;
	const char *why = NULL;
	int r = username_parse(full, size, &id, &why);

	username_split(full, size, &parts);
	if (r != 0 && r != -EINVAL && r != -ENAMETOOLONG)
		abort();
	if ((r != 0) != should_refuse(&parts))
		abort();
	if (r != 0) {
		if (!why || !why[0] || memcmp(&id, &zero, sizeof(id)) != 0)
			abort();
		return 0;
	}
	check_text(id.full, id.full_len, USERNAME_FULL_MAX);
	check_text(id.base, id.base_len, USERNAME_BASE_MAX);
	check_text(id.group, id.group_len, USERNAME_GROUP_MAX);
	if (id.full_len != size || memcmp(id.full, full, size) != 0)
		abort();
	if (memchr(id.base, USERNAME_SEPARATOR, id.base_len))
		abort();
	if (id.base_len == size) {
		if (id.group_len != 0)
			abort();
	} else if (id.base_len + 1 + id.group_len != size ||
		   memcmp(id.base, full, id.base_len) != 0 ||
		   full[id.base_len] != USERNAME_SEPARATOR ||
		   memcmp(id.group, full + id.base_len + 1, id.group_len) != 0) {
		abort();
	}
	if (username_parse(id.full, id.full_len, &again, NULL) != 0 ||
	    strcmp(id.full, again.full) != 0 || again.full_len != id.full_len ||
	    strcmp(id.base, again.base) != 0 || again.base_len != id.base_len ||
	    strcmp(id.group, again.group) != 0 || again.group_len != id.group_len)
		abort();
	return 0;
}
