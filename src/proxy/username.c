/*
 * username.c — split "username.group-id" (see username.h). Pure.
 */
#include "anyproxy/username.h"

#include <string.h>

#define GROUP_SEPARATOR '.'

void username_split(const char *full, size_t len, struct username_parts *out)
{
	const char *dot = memchr(full, GROUP_SEPARATOR, len);

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
