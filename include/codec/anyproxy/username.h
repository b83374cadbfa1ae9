/*
 * username.h — the proxy username carries the group: "username.group-id".
 * Shared by the SOCKS5 and HTTP proxies so both read it the same way.
 * Pure: no I/O, no allocation.
 *
 * The base username is the text before the first '.', the group the text
 * after it (the group may itself contain dots). Authentication checks the
 * base; routing uses the group, where "" is the default group:
 *
 *   full                 base      group
 *   "user.production"    "user"    "production"
 *   "user.prod-uuid-123" "user"    "prod-uuid-123"
 *   "admin.test-env-456" "admin"   "test-env-456"
 *   "user.prod.eu"       "user"    "prod.eu"
 *   "user"               "user"    ""  (plain username: default group)
 *   "user."              "user"    ""  (empty group: default group)
 *   ".grp"               ""        "grp"
 *
 * One identity, parsed once (username_parse): a front end turns the raw
 * user name bytes into a struct username_identity right after it read the
 * credentials, and authentication ([group.NAME] lookup), routing, the OPEN
 * frame's user and group fields and every log line use that value only. A
 * name that does not fit is refused, never cut, and the proxies answer it
 * as bad credentials (SOCKS5 auth status 0x01, HTTP 407) whether or not the
 * listener has credentials:
 *   - the group: at most USERNAME_GROUP_MAX bytes, each one of
 *     A-Z a-z 0-9 . _ : - (what agents may give as group_id; compared
 *     exactly, case-sensitive, everywhere);
 *   - the base: at most USERNAME_BASE_MAX bytes (what an OPEN frame
 *     carries), no NUL or other control byte (0x00-0x1f, 0x7f).
 */
#ifndef ANYPROXY_USERNAME_H
#define ANYPROXY_USERNAME_H

#include <stddef.h>

#include "anyproxy/frame.h"

#define USERNAME_SEPARATOR '.'
#define USERNAME_BASE_MAX FRAME_MAX_TEXT_LEN /* OPEN's user field */
#define USERNAME_GROUP_MAX FRAME_MAX_ID_LEN  /* OPEN's group field, agents' group_id */
/* base '.' group */
#define USERNAME_FULL_MAX (USERNAME_BASE_MAX + 1 + USERNAME_GROUP_MAX)

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

/* A validated user name: NUL-terminated copies, no byte of them cut. */
struct username_identity {
	char full[USERNAME_FULL_MAX + 1]; /* as given: "base" or "base.group" */
	size_t full_len;
	char base[USERNAME_BASE_MAX + 1];
	size_t base_len;
	char group[USERNAME_GROUP_MAX + 1]; /* "": the default group */
	size_t group_len;
};

/*
 * Split and validate the len bytes at full (any bytes; a valid pointer even
 * when len is 0) into *out. Returns 0, or -ENAMETOOLONG (base or group over
 * its limit) / -EINVAL (a byte the part may not hold); then *why (if why is
 * not NULL) names the rule that was broken and *out is left zeroed, so no
 * caller can use half a name. Never reads outside full[0..len).
 */
int username_parse(const char *full, size_t len, struct username_identity *out, const char **why);

/* The identity of a user who gave no user name at all: the default group. */
void username_anonymous(struct username_identity *out);

#endif
