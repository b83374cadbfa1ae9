/*
 * username.c — split and validate "username.group-id" (see username.h). Pure.
 */
#include "anyproxy/username.h"
#include "anyproxy/grammar.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define STRINGIFY(x) #x
#define XSTRINGIFY(x) STRINGIFY(x) /* the value of a macro, as text */

void username_split(const char *full, size_t len, struct username_parts *out)
{
	const char *dot = memchr(full, USERNAME_SEPARATOR, len);

	out->base = full;
	if (!dot) {
		out->base_len = len;
		out->group = full + len;
		out->group_len = 0;
		return;
	}
	out->base_len = (size_t)(dot - full);
	out->group = dot + 1;
	out->group_len = len - out->base_len - 1;
}

/* NUL and the other C0 controls and DEL: they would end or break a C
 * string, a log line or a protocol field downstream. */
static bool control_byte(uint8_t c)
{
	return c < 0x20 || c == 0x7f;
}

static int refuse(struct username_identity *out, const char **why, int err, const char *rule)
{
	memset(out, 0, sizeof(*out));
	if (why)
		*why = rule;
	return err;
}

int username_parse(const char *full, size_t len, struct username_identity *out, const char **why)
{
	struct username_parts parts;
	size_t i;

	username_split(full, len, &parts);
	if (parts.group_len > USERNAME_GROUP_MAX)
		return refuse(out, why, -ENAMETOOLONG,
			      "group longer than " XSTRINGIFY(USERNAME_GROUP_MAX) " bytes");
	/* the alphabet agents' group_id is admitted with (grammar.h) */
	if (grammar_id_span(parts.group, parts.group_len) != parts.group_len)
		return refuse(out, why, -EINVAL, "group holds a byte outside A-Z a-z 0-9 . _ : -");
	if (parts.base_len > USERNAME_BASE_MAX)
		return refuse(out, why, -ENAMETOOLONG,
			      "user name longer than " XSTRINGIFY(USERNAME_BASE_MAX) " bytes");
	for (i = 0; i < parts.base_len; i++)
		if (control_byte((uint8_t)parts.base[i]))
			return refuse(out, why, -EINVAL, "user name holds a NUL or control byte");
	/* len <= USERNAME_FULL_MAX follows from the two limits */
	memcpy(out->full, full, len);
	out->full[len] = '\0';
	out->full_len = len;
	memcpy(out->base, parts.base, parts.base_len);
	out->base[parts.base_len] = '\0';
	out->base_len = parts.base_len;
	memcpy(out->group, parts.group, parts.group_len);
	out->group[parts.group_len] = '\0';
	out->group_len = parts.group_len;
	return 0;
}

void username_anonymous(struct username_identity *out)
{
	memset(out, 0, sizeof(*out));
}
