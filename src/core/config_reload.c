/*
 * config_reload.c — SIGHUP (config.h): a freshly loaded configuration
 * replaces the running one key by key. Keys marked restart in the table
 * keep their running value and are reported; every other key swaps, so the
 * fresh configuration ends up owning the old values and frees them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/config-table.h"
#include "anyproxy/config.h"

/* The largest field a type has (the egress proxy: an address and its
 * credentials); swaps go through it. */
#define CONFIG_FIELD_MAX_BYTES sizeof(struct config_egress_proxy)

int config_reload(struct config *live, struct config *fresh, char *restart, size_t len)
{
	int kept = 0;
	size_t used = 0;

	if (len)
		restart[0] = '\0';
	{
		/* group credentials reload as a whole */
		struct config_group_auth *groups = live->groups;
		size_t ngroups = live->ngroups;

		live->groups = fresh->groups;
		live->ngroups = fresh->ngroups;
		fresh->groups = groups;
		fresh->ngroups = ngroups;
	}
	/* forwards own listening sockets and their listeners point into the
	 * live sections: the set stays as it started */
	if (config_forwards_differ(live, fresh)) {
		kept++;
		if (used < len)
			used += (size_t)snprintf(restart, len, "[forward.NAME] sections");
	}
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];
		uint8_t tmp[CONFIG_FIELD_MAX_BYTES];
		void *a, *b;
		size_t n;

		if (!(key->programs & live->program))
			continue;
		a = config_key_field(live, key);
		b = config_key_field(fresh, key);
		n = key->type->size;
		if (key->type->differs ? !key->type->differs(a, b) : memcmp(a, b, n) == 0)
			continue;
		if (key->restart) {
			kept++;
			if (used < len)
				used += (size_t)snprintf(restart + used, len - used, "%s[%s] %s",
							 used ? ", " : "", key->section, key->name);
			continue;
		}
		/* swap: fresh now owns the old value and frees it */
		if (n > sizeof(tmp)) /* a new type larger than an address: raise the bound */
			abort();
		memcpy(tmp, a, n);
		memcpy(a, b, n);
		memcpy(b, tmp, n);
	}
	return kept;
}
