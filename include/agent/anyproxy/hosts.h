/*
 * hosts.h — an extra hosts file for the agent ([client] hosts_file), read
 * at start-up and on reload, consulted before the system resolver.
 *
 * Format as /etc/hosts: "ADDRESS NAME [ALIAS...]" per line, '#' starts a
 * comment. Names are host names by grammar.h's rule (the rule of targets
 * and host rules: labels of 1..63 bytes, at most 253 bytes) and are matched
 * case-insensitively, without a trailing dot. A line that breaks a rule
 * refuses the whole file, with an error naming the line.
 * A name listed on several lines resolves to every address, in file order.
 * Parsing is pure (text in, table out); lookups allocate nothing.
 */
#ifndef ANYPROXY_HOSTS_H
#define ANYPROXY_HOSTS_H

#include <stddef.h>
#include <stdint.h>

#define HOSTS_MAX_ENTRIES 4096
#define HOSTS_MAX_ADDRS_PER_NAME 8
#define HOSTS_MAX_LINE_BYTES 1024

struct hosts_entry {
	char *name; /* lower case, no trailing dot */
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
};

struct hosts_table {
	struct hosts_entry *entries;
	size_t count;
};

/* Parse text (len bytes). 0, or -EINVAL with err naming the line, -ENOMEM. */
int hosts_parse(const char *text, size_t len, struct hosts_table *t, char *err, size_t errlen);
/* Read and parse a file. 0 or -errno with err set. */
int hosts_load(const char *path, struct hosts_table *t, char *err, size_t errlen);
void hosts_free(struct hosts_table *t);

/* Up to max addresses of name (already canonical: lower case, no trailing
 * dot), in file order. Returns how many were found (0: not listed). */
size_t hosts_lookup(const struct hosts_table *t, const char *name, int *families,
		    uint8_t (*addrs)[16], size_t max);

#endif
