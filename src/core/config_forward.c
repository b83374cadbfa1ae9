/*
 * config_forward.c — the gateway's [forward.NAME] sections (config.h):
 * parsed once into struct config_forward, checked once, compared on reload
 * (the set needs a restart), and the allowed_sources match the gateway runs
 * at accept. The loader (config_load.c) calls these for the section's lines
 * and reports their errors with the file and line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "anyproxy/common.h"
#include "anyproxy/config-table.h"
#include "anyproxy/config.h"
#include "anyproxy/grammar.h"

/* Bits of config_forward.seen: each key at most once per section. */
enum {
	SEEN_LISTEN_ADDR = 1 << 0,
	SEEN_GROUP = 1 << 1,
	SEEN_TARGET = 1 << 2,
	SEEN_PROTOCOL = 1 << 3,
};

/* The longest text of one CIDR: an IPv6 address, '/', three digits. */
#define CIDR_TEXT_MAX (INET6_ADDRSTRLEN + 4)

static struct config_forward *find_forward(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->nforwards; i++)
		if (strcmp(cfg->forwards[i].name, name) == 0)
			return &cfg->forwards[i];
	return NULL;
}

int config_forward_open(struct config *cfg, const char *name, size_t len, int line, char *why,
			size_t whylen)
{
	struct config_forward *f;
	char id[ID_MAX_BYTES + 1];

	if (len > ID_MAX_BYTES) {
		snprintf(why, whylen, "[forward.%.16s...]: forward name longer than %d bytes", name,
			 ID_MAX_BYTES);
		return -EINVAL;
	}
	memcpy(id, name, len);
	id[len] = '\0';
	if (!grammar_id_valid(id, len, 1)) {
		snprintf(why, whylen, "[forward.%s]: a forward name has only A-Z a-z 0-9 . _ : -",
			 id);
		return -EINVAL;
	}
	if (find_forward(cfg, id)) {
		snprintf(why, whylen, "[forward.%s]: section appears twice", id);
		return -EINVAL;
	}
	if (cfg->nforwards == CONFIG_FORWARDS_MAX) {
		snprintf(why, whylen, "too many [forward.NAME] sections (max %d)",
			 CONFIG_FORWARDS_MAX);
		return -EINVAL;
	}
	f = realloc(cfg->forwards, (cfg->nforwards + 1) * sizeof(*f));
	if (!f)
		return -ENOMEM;
	cfg->forwards = f;
	f = &cfg->forwards[cfg->nforwards];
	memset(f, 0, sizeof(*f));
	f->name = strdup(id);
	f->group = strdup("");
	if (!f->name || !f->group) {
		free(f->name);
		free(f->group);
		return -ENOMEM;
	}
	f->line = line;
	cfg->nforwards++;
	return 0;
}

/* "a.b.c.d", "a.b.c.d/n", "v6" or "v6/n" into *c; bits past the prefix
 * must be 0 (a typo in the prefix would otherwise widen the rule). */
static int parse_cidr(const char *item, struct config_cidr *c, char *why, size_t whylen)
{
	char text[CIDR_TEXT_MAX + 1], show[CONFIG_SHOWN_BYTES];
	const char *slash = strchr(item, '/');
	size_t addr_len = slash ? (size_t)(slash - item) : strlen(item);
	unsigned long prefix, max;
	char *end;

	memset(c, 0, sizeof(*c));
	if (addr_len == 0 || addr_len >= sizeof(text))
		goto bad;
	memcpy(text, item, addr_len);
	text[addr_len] = '\0';
	if (inet_pton(AF_INET, text, c->addr) == 1) {
		c->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, text, c->addr) == 1) {
		c->family = AF_INET6;
		max = 128;
	} else {
		goto bad;
	}
	prefix = max;
	if (slash) {
		if (slash[1] < '0' || slash[1] > '9')
			goto bad;
		prefix = strtoul(slash + 1, &end, 10);
		if (*end || prefix > max || end - (slash + 1) > 3)
			goto bad;
	}
	c->prefix = (uint8_t)prefix;
	for (unsigned bit = (unsigned)prefix; bit < max; bit++) {
		if (c->addr[bit / 8] & (0x80u >> (bit % 8))) {
			snprintf(why, whylen, "'%s': address bits set past the /%lu prefix",
				 config_shown(item, show), prefix);
			return -EINVAL;
		}
	}
	return 0;
bad:
	snprintf(why, whylen, "'%s' is not an address or a CIDR (192.0.2.0/24, 2001:db8::/32)",
		 config_shown(item, show));
	return -EINVAL;
}

/* allowed_sources: comma-separated CIDRs, the key may repeat (appends). */
static int add_sources(struct config_forward *f, const char *value, char *why, size_t whylen)
{
	const char *p = value;

	while (*p) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		char item[CIDR_TEXT_MAX + 1];
		struct config_cidr *grown;
		size_t start = 0;

		while (start < n && (p[start] == ' ' || p[start] == '\t'))
			start++;
		while (n > start && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n - start > CIDR_TEXT_MAX) {
			snprintf(why, whylen, "'%.32s...' is not an address or a CIDR", p + start);
			return -EINVAL;
		}
		memcpy(item, p + start, n - start);
		item[n - start] = '\0';
		if (f->nsources == CONFIG_LIST_MAX_ITEMS) {
			snprintf(why, whylen, "more than %d items", CONFIG_LIST_MAX_ITEMS);
			return -EINVAL;
		}
		grown = realloc(f->sources, (f->nsources + 1) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		f->sources = grown;
		if (parse_cidr(item, &f->sources[f->nsources], why, whylen) < 0)
			return -EINVAL;
		f->nsources++;
		p = comma ? comma + 1 : p + strlen(p);
	}
	if (!f->nsources) {
		snprintf(why, whylen, "empty list (leave the key out to admit every source)");
		return -EINVAL;
	}
	return 0;
}

static int parse_target(struct config_forward *f, const char *value, char *why, size_t whylen)
{
	if (config_parse_addr(value, &f->target, why, whylen) < 0)
		return -EINVAL;
	if (!f->target.set || !f->target.host[0]) {
		snprintf(why, whylen,
			 "needs a host and a port as the agent sees them "
			 "(host:port or [v6]:port)");
		return -EINVAL;
	}
	return 0;
}

int config_forward_pair(struct config *cfg, const char *key, const char *value, char *why,
			size_t whylen)
{
	struct config_forward *f = &cfg->forwards[cfg->nforwards - 1];
	char detail[CONFIG_WHY_BYTES];
	unsigned bit = 0;
	int ret = 0;

	if (strcmp(key, "listen_addr") == 0)
		bit = SEEN_LISTEN_ADDR;
	else if (strcmp(key, "group") == 0)
		bit = SEEN_GROUP;
	else if (strcmp(key, "target") == 0)
		bit = SEEN_TARGET;
	else if (strcmp(key, "protocol") == 0)
		bit = SEEN_PROTOCOL;
	else if (strcmp(key, "allowed_sources") != 0) {
		snprintf(why, whylen,
			 "[forward.%s] %.64s: unknown key (listen_addr, group, target, "
			 "protocol, allowed_sources)",
			 f->name, key);
		return -EINVAL;
	}
	if (bit & f->seen) {
		snprintf(why, whylen, "[forward.%s] %s: duplicate key", f->name, key);
		return -EINVAL;
	}
	f->seen |= bit;
	detail[0] = '\0';
	switch (bit) {
	case SEEN_LISTEN_ADDR:
		ret = config_parse_addr(value, &f->listen_addr, detail, sizeof(detail));
		if (!ret && !f->listen_addr.set)
			ret = -EINVAL, snprintf(detail, sizeof(detail), "must not be empty");
		break;
	case SEEN_GROUP:
		/* the ids agents join and users name (grammar.h) */
		if (!grammar_id_valid(value, strlen(value), 0)) {
			snprintf(detail, sizeof(detail),
				 "not a group id: at most %d bytes of "
				 "A-Z a-z 0-9 . _ : -",
				 ID_MAX_BYTES);
			ret = -EINVAL;
			break;
		}
		free(f->group);
		f->group = strdup(value);
		ret = f->group ? 0 : -ENOMEM;
		break;
	case SEEN_TARGET:
		ret = parse_target(f, value, detail, sizeof(detail));
		break;
	case SEEN_PROTOCOL:
		if (strcmp(value, "tcp") == 0) {
			f->protocol = CONFIG_FORWARD_TCP;
		} else if (strcmp(value, "udp") == 0) {
			f->protocol = CONFIG_FORWARD_UDP;
		} else {
			snprintf(detail, sizeof(detail), "expected tcp or udp");
			ret = -EINVAL;
		}
		break;
	default:
		ret = add_sources(f, value, detail, sizeof(detail));
		break;
	}
	if (ret == -EINVAL)
		snprintf(why, whylen, "[forward.%s] %s: %s", f->name, key, detail);
	return ret;
}

int config_forwards_check(const struct config *cfg, int *line, char *why, size_t whylen)
{
	const struct {
		const char *section;
		const struct config_addr *addr;
	} fixed[] = {
		{ "gateway", &cfg->gateway.listen_addr },
		{ "proxy.http", &cfg->http.listen_addr },
		{ "proxy.socks5", &cfg->socks5.listen_addr },
	};

	for (size_t i = 0; i < cfg->nforwards; i++) {
		const struct config_forward *f = &cfg->forwards[i];

		*line = f->line;
		if (!(f->seen & SEEN_LISTEN_ADDR) || !(f->seen & SEEN_TARGET)) {
			snprintf(why, whylen, "[forward.%s] %s: required key is missing", f->name,
				 f->seen & SEEN_TARGET ? "listen_addr" : "target");
			return -EINVAL;
		}
		/* listeners use SO_REUSEPORT: two of ours on one port would
		 * silently share its connections (TCP and UDP ports are apart) */
		for (size_t j = 0; j < ARRAY_SIZE(fixed) && f->protocol == CONFIG_FORWARD_TCP;
		     j++) {
			if (config_addrs_collide(&f->listen_addr, fixed[j].addr)) {
				snprintf(why, whylen,
					 "[forward.%s] listen_addr: same port as [%s] "
					 "listen_addr; two listeners cannot share a port",
					 f->name, fixed[j].section);
				return -EINVAL;
			}
		}
		for (size_t j = 0; j < i; j++) {
			if (f->protocol == cfg->forwards[j].protocol &&
			    config_addrs_collide(&f->listen_addr, &cfg->forwards[j].listen_addr)) {
				snprintf(why, whylen,
					 "[forward.%s] listen_addr: same port as "
					 "[forward.%s] listen_addr; two listeners cannot share a "
					 "port",
					 f->name, cfg->forwards[j].name);
				return -EINVAL;
			}
		}
	}
	return 0;
}

void config_forwards_free(struct config *cfg)
{
	for (size_t i = 0; i < cfg->nforwards; i++) {
		free(cfg->forwards[i].name);
		free(cfg->forwards[i].group);
		free(cfg->forwards[i].sources);
	}
	free(cfg->forwards);
	cfg->forwards = NULL;
	cfg->nforwards = 0;
}

static bool forward_equal(const struct config_forward *a, const struct config_forward *b)
{
	return strcmp(a->name, b->name) == 0 && strcmp(a->group, b->group) == 0 &&
	       memcmp(&a->listen_addr, &b->listen_addr, sizeof(a->listen_addr)) == 0 &&
	       memcmp(&a->target, &b->target, sizeof(a->target)) == 0 &&
	       a->protocol == b->protocol && a->nsources == b->nsources &&
	       (!a->nsources ||
		memcmp(a->sources, b->sources, a->nsources * sizeof(*a->sources)) == 0);
}

bool config_forwards_differ(const struct config *a, const struct config *b)
{
	if (a->nforwards != b->nforwards)
		return true;
	for (size_t i = 0; i < a->nforwards; i++)
		if (!forward_equal(&a->forwards[i], &b->forwards[i]))
			return true;
	return false;
}

static bool prefix_matches(const uint8_t *addr, const struct config_cidr *c)
{
	unsigned full = c->prefix / 8, rest = c->prefix % 8;

	if (memcmp(addr, c->addr, full) != 0)
		return false;
	return !rest || ((addr[full] ^ c->addr[full]) & (uint8_t)(0xffu << (8 - rest))) == 0;
}

bool config_forward_source_allowed(const struct config_forward *f, const struct sockaddr *sa)
{
	const uint8_t *addr;
	int family = sa->sa_family;

	if (!f->nsources)
		return true;
	if (family == AF_INET) {
		addr = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	} else if (family == AF_INET6) {
		const struct in6_addr *a6 =
			&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;

		addr = a6->s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			family = AF_INET;
			addr += 12;
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < f->nsources; i++)
		if (f->sources[i].family == family && prefix_matches(addr, &f->sources[i]))
			return true;
	return false;
}
