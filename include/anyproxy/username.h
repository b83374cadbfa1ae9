/*
 * username.h — the proxy username carries the group: "username.group-id".
 * Shared by the SOCKS5 and HTTP proxies so both read it the same way.
 * Pure: no I/O, no allocation.
 *
 * The base username is the text before the first '.', the group the text
 * after it (the group may itself contain dots). Authentication checks only
 * the base; routing uses the group, where "" is the default group:
 *
 *   full                 base      group
 *   "user.production"    "user"    "production"
 *   "user.prod-uuid-123" "user"    "prod-uuid-123"
 *   "admin.test-env-456" "admin"   "test-env-456"
 *   "user.prod.eu"       "user"    "prod.eu"
 *   "user"               "user"    ""  (plain username: default group)
 *   "user."              "user"    ""  (empty group: default group)
 *   ".grp"               ""        "grp"
 */
#ifndef ANYPROXY_USERNAME_H
#define ANYPROXY_USERNAME_H

#include <stddef.h>

/* Both parts point into the string that was split and live as long as it
 * does. They are not NUL-terminated: use the lengths. */
struct username_parts {
	const char *base;  /* == full */
	size_t base_len;   /* never contains a '.' */
	const char *group; /* after the first '.', or full + len when there is none */
	size_t group_len;  /* 0: the default group */
};

/* Split the len bytes at full (a valid pointer even when len is 0; a NUL
 * byte is an ordinary byte here). Never reads outside full[0..len). */
void username_split(const char *full, size_t len, struct username_parts *out);

#endif
