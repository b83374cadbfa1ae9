/* hosts.c — the agent's extra hosts file (see hosts.h). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/common.h"
#include "anyproxy/grammar.h"
#include "anyproxy/hosts.h"

#define HOSTS_FILE_MAX_BYTES (4 * 1024 * 1024)

void hosts_free(struct hosts_table *t)
{
	for (size_t i = 0; i < t->count; i++)
		free(t->entries[i].name);
	free(t->entries);
	t->entries = NULL;
	t->count = 0;
}

/* Add (name, address); name is a host name (grammar_host_name) of len
 * bytes without its trailing dot, and is stored lower-cased. */
static int add_entry(struct hosts_table *t, const char *name, size_t len, int family,
		     const uint8_t *addr, size_t *cap)
{
	struct hosts_entry *e;

	if (t->count == HOSTS_MAX_ENTRIES)
		return -E2BIG;
	if (t->count == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		struct hosts_entry *p = realloc(t->entries, ncap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		t->entries = p;
		*cap = ncap;
	}
	e = &t->entries[t->count];
	e->name = malloc(len + 1);
	if (!e->name)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++)
		e->name[i] = (char)tolower((unsigned char)name[i]);
	e->name[len] = '\0';
	e->family = family;
	memset(e->addr, 0, sizeof(e->addr));
	memcpy(e->addr, addr, family == AF_INET ? 4 : 16);
	t->count++;
	return 0;
}

static int parse_line(struct hosts_table *t, char *line, size_t *cap, const char **why)
{
	char *save = NULL, *tok, *hash = strchr(line, '#');
	uint8_t addr[16];
	int family, ret;

	if (hash)
		*hash = '\0';
	tok = strtok_r(line, " \t\r", &save);
	if (!tok)
		return 0; /* blank or comment */
	if (inet_pton(AF_INET, tok, addr) == 1) {
		family = AF_INET;
	} else if (inet_pton(AF_INET6, tok, addr) == 1) {
		family = AF_INET6;
	} else {
		*why = "not an IPv4 or IPv6 address";
		return -EINVAL;
	}
	tok = strtok_r(NULL, " \t\r", &save);
	if (!tok) {
		*why = "address without a name";
		return -EINVAL;
	}
	for (; tok; tok = strtok_r(NULL, " \t\r", &save)) {
		/* The rule of every other host name (targets, host rules): a
		 * name the agent could never be asked for is a mistake. */
		ret = grammar_host_name(tok, strlen(tok), why);
		if (ret < 0)
			return ret;
		ret = add_entry(t, tok, (size_t)ret, family, addr, cap);
		if (ret == -E2BIG) {
			*why = "too many entries";
			return -EINVAL;
		}
		if (ret < 0)
			return ret;
	}
	return 0;
}

int hosts_parse(const char *text, size_t len, struct hosts_table *t, char *err, size_t errlen)
{
	char line[HOSTS_MAX_LINE_BYTES + 1];
	size_t pos = 0, cap = 0;
	unsigned lineno = 0;

	memset(t, 0, sizeof(*t));
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
		const char *why = NULL;
		int ret;

		lineno++;
		if (n > HOSTS_MAX_LINE_BYTES || memchr(text + pos, '\0', n)) {
			snprintf(err, errlen, "line %u: %s", lineno,
				 n > HOSTS_MAX_LINE_BYTES ? "line too long" : "NUL byte");
			hosts_free(t);
			return -EINVAL;
		}
		memcpy(line, text + pos, n);
		line[n] = '\0';
		ret = parse_line(t, line, &cap, &why);
		if (ret < 0) {
			snprintf(err, errlen, "line %u: %s", lineno, why ? why : strerror(-ret));
			hosts_free(t);
			return ret;
		}
		pos += n + (nl ? 1 : 0);
	}
	return 0;
}

int hosts_load(const char *path, struct hosts_table *t, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *text;
	size_t n;
	int ret;

	memset(t, 0, sizeof(*t));
	if (!f) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return ret;
	}
	text = malloc(HOSTS_FILE_MAX_BYTES + 1);
	if (!text) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(text, 1, HOSTS_FILE_MAX_BYTES + 1, f);
	fclose(f);
	if (n > HOSTS_FILE_MAX_BYTES) {
		snprintf(err, errlen, "%s: larger than %d bytes", path, HOSTS_FILE_MAX_BYTES);
		free(text);
		return -EFBIG;
	}
	ret = hosts_parse(text, n, t, err, errlen);
	if (ret < 0) {
		char inner[256];

		snprintf(inner, sizeof(inner), "%s", err);
		snprintf(err, errlen, "%s: %s", path, inner);
	}
	free(text);
	return ret;
}

size_t hosts_lookup(const struct hosts_table *t, const char *name, int *families,
		    uint8_t (*addrs)[16], size_t max)
{
	size_t found = 0;

	for (size_t i = 0; i < t->count && found < max; i++) {
		if (strcmp(t->entries[i].name, name) != 0)
			continue;
		families[found] = t->entries[i].family;
		memcpy(addrs[found], t->entries[i].addr, 16);
		found++;
	}
	return found;
}
