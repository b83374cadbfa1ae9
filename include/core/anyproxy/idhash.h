/*
 * idhash.h — a uthash table of entries named by an id: get the entry of an
 * id, making it on first use. The gateway's registry (groups) and its
 * statistics (per-group counters) keep such tables, each of its own.
 */
#ifndef ANYPROXY_IDHASH_H
#define ANYPROXY_IDHASH_H

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

/*
 * out = the entry of head whose id is key (a NUL-terminated string), or a
 * new zeroed one with that id, added to head. Entries are structs with a
 * `char id[N]` array and a `UT_hash_handle hh`. out is NULL when no memory
 * is left, or when key does not fit id (never truncated; the callers take
 * ids the grammar already bounded).
 */
#define IDHASH_GET(head, key, out)                                       \
	do {                                                             \
		const char *idhash_key_ = (key);                         \
		size_t idhash_len_ = strlen(idhash_key_);                \
                                                                         \
		HASH_FIND_STR((head), idhash_key_, (out));               \
		if (!(out) && idhash_len_ < sizeof((out)->id) &&         \
		    ((out) = calloc(1, sizeof(*(out))))) {               \
			memcpy((out)->id, idhash_key_, idhash_len_ + 1); \
			HASH_ADD_STR((head), id, (out));                 \
		}                                                        \
	} while (0)

#endif
