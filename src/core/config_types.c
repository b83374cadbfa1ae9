/*
 * config_types.c — the value types of configuration keys (config-table.h):
 * one descriptor per type with its parser, its printer for the docs, its
 * reload comparison and its free, so adding a type touches this file only.
 * The parsers are pure (no I/O, no location in messages); the loader adds
 * the file, line and key to their reasons. The file type's validate is the
 * one check against the world: the file must be readable now.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/config-table.h"
#include "anyproxy/config.h"
#include "anyproxy/grammar.h"
#include "anyproxy/log.h"

/* A DNS name (RFC 1035) and one label of it. */
/* One port number. */
#define CONFIG_PORT_MAX 65535
/* A list item starting with this is not split at commas (host regexes). */
#define CONFIG_LIST_RAW_PREFIX '~'
/* How long each type's reasons may grow before they are cut; they are
 * part of the error messages, which stay byte-for-byte stable. */
#define CONFIG_NUMBER_WHY_BYTES 160
#define CONFIG_VALUE_WHY_BYTES 200

const char *config_shown(const char *s, char out[CONFIG_SHOWN_BYTES])
{
	size_t n = 0;

	for (; *s && n < CONFIG_SHOWN_VALUE_MAX_BYTES; s++)
		out[n++] = (*s >= ' ' && *s < 0x7f) ? *s : '?';
	if (*s) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
	return out;
}

/* ---- value grammars ---- */

int config_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

/* Decimal digits only (no sign, no spaces); -EINVAL if not a number,
 * -ERANGE if outside [min, max] (overflow included). */
static int parse_uint32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
	}
	for (const char *p = s; *p; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > UINT32_MAX)
			return -ERANGE;
	}
	if (v < min || v > max)
		return -ERANGE;
	*out = (uint32_t)v;
	return 0;
}

const char *config_hostname_problem(const char *host, size_t len)
{
	const char *why;
	bool digits_and_dots = true;

	/* an address in the configuration names a host: a trailing dot (the
	 * DNS root) is refused here, unlike in a user's request */
	if (len && host[len - 1] == '.')
		return "empty label in host name";
	if (grammar_host_name(host, len, &why) < 0)
		return why;
	for (size_t i = 0; i < len; i++)
		if (host[i] != '.' && (host[i] < '0' || host[i] > '9'))
			digits_and_dots = false;
	if (digits_and_dots) {
		char v4[INET_ADDRSTRLEN];
		struct in_addr addr;

		if (len >= sizeof(v4))
			return "not a valid IPv4 address";
		memcpy(v4, host, len);
		v4[len] = '\0';
		if (inet_pton(AF_INET, v4, &addr) != 1)
			return "not a valid IPv4 address";
	}
	return NULL;
}

const char *config_ipv6_problem(const char *host, size_t len)
{
	char v6[INET6_ADDRSTRLEN];
	struct in6_addr addr;

	if (len == 0 || len >= sizeof(v6))
		return "not a valid IPv6 address";
	memcpy(v6, host, len);
	v6[len] = '\0';
	return inet_pton(AF_INET6, v6, &addr) == 1 ? NULL : "not a valid IPv6 address";
}

static const char *port_problem(const char *s, uint16_t *port)
{
	uint32_t v;

	if (*s == '\0')
		return "missing port after ':'";
	if (parse_uint32(s, 1, CONFIG_PORT_MAX, &v) < 0)
		return "port must be a number from 1 to " CONFIG_XSTR(CONFIG_PORT_MAX);
	*port = (uint16_t)v;
	return NULL;
}

static const char *addr_problem(const char *s, struct config_addr *out)
{
	const char *host, *port, *problem;
	size_t host_len;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return "missing ']' after the IPv6 address";
		host = s + 1;
		host_len = (size_t)(close - host);
		if (close[1] != ':')
			return "expected ':port' after ']'";
		port = close + 2;
		problem = config_ipv6_problem(host, host_len);
	} else {
		const char *colon = strrchr(s, ':');

		if (!colon)
			return "missing ':port' (expected host:port, [v6]:port or :port)";
		host = s;
		host_len = (size_t)(colon - s);
		if (memchr(s, ':', host_len))
			return "IPv6 addresses must be in brackets, like [::1]:8080";
		port = colon + 1;
		problem = host_len ? config_hostname_problem(host, host_len) : NULL;
	}
	if (problem)
		return problem;
	problem = port_problem(port, &out->port);
	if (problem)
		return problem;
	memcpy(out->host, host, host_len);
	out->host[host_len] = '\0';
	out->set = true;
	return NULL;
}

int config_parse_addr(const char *s, struct config_addr *out, char *err, size_t errlen)
{
	char show[CONFIG_SHOWN_BYTES];
	const char *problem;

	memset(out, 0, sizeof(*out));
	if (*s == '\0')
		return 0;
	problem = addr_problem(s, out);
	if (!problem)
		return 0;
	memset(out, 0, sizeof(*out));
	if (errlen)
		snprintf(err, errlen, "bad address '%s': %s", config_shown(s, show), problem);
	return -EINVAL;
}

bool config_addrs_collide(const struct config_addr *a, const struct config_addr *b)
{
	return a->set && b->set && a->port == b->port &&
	       (!a->host[0] || !b->host[0] || strcmp(a->host, b->host) == 0);
}

void config_addr_format(const struct config_addr *a, char *buf, size_t len)
{
	if (!len)
		return;
	if (!a->set)
		buf[0] = '\0';
	else if (strchr(a->host, ':'))
		snprintf(buf, len, "[%s]:%u", a->host, a->port);
	else
		snprintf(buf, len, "%s:%u", a->host, a->port);
}

static int parse_log_format(const char *s)
{
	if (strcasecmp(s, "text") == 0)
		return LOG_FORMAT_TEXT;
	if (strcasecmp(s, "json") == 0)
		return LOG_FORMAT_JSON;
	return -EINVAL;
}

/* ---- strings, secrets and files ---- */

void config_free_string(char **s, bool secret)
{
	if (*s && secret)
		explicit_bzero(*s, strlen(*s));
	free(*s);
	*s = NULL;
}

/* An empty value leaves a string key without a default unset (NULL). */
static int parse_string(const struct config_key *key, void *field, const char *value, char *why,
			size_t whylen)
{
	char **s = field, *copy = NULL;

	if (value[0] || key->default_value) {
		copy = strdup(value);
		if (!copy)
			return -ENOMEM;
	}
	config_free_string(s, key->type->secret);
	*s = copy;
	return 0;
}

static bool string_is_set(const void *field)
{
	return *(char *const *)field != NULL;
}

static bool strings_differ(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;

	return (x == NULL) != (y == NULL) || (x && strcmp(x, y) != 0);
}

static void free_string_field(const struct config_key *key, void *field)
{
	config_free_string(field, key->type->secret);
}

/* Open (without blocking on a FIFO) to prove the file is readable now; the
 * TLS layer reads it later. */
static int validate_readable_file(const void *field, char *why, size_t whylen)
{
	const char *path = *(char *const *)field;
	char show[CONFIG_SHOWN_BYTES];
	struct stat st;
	int fd, err;

	if (!path)
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	err = fd < 0 ? errno : 0;
	if (fd >= 0) {
		if (fstat(fd, &st) < 0)
			err = errno;
		else if (S_ISDIR(st.st_mode))
			err = EISDIR;
		close(fd);
	}
	if (!err)
		return 0;
	snprintf(why, MIN(whylen, CONFIG_VALUE_WHY_BYTES), "cannot read '%s': %s",
		 config_shown(path, show), strerror(err));
	return -EINVAL;
}

const struct config_type config_type_string = {
	.size = sizeof(char *),
	.parse = parse_string,
	.is_set = string_is_set,
	.differs = strings_differ,
	.free = free_string_field,
	.doc_name = "string",
};

const struct config_type config_type_secret = {
	.size = sizeof(char *),
	.secret = true,
	.parse = parse_string,
	.is_set = string_is_set,
	.differs = strings_differ,
	.free = free_string_field,
	.doc_name = "string (secret)",
};

const struct config_type config_type_file = {
	.size = sizeof(char *),
	.parse = parse_string,
	.is_set = string_is_set,
	.differs = strings_differ,
	.free = free_string_field,
	.validate = validate_readable_file,
	.doc_name = "path of a readable file",
};

/* ---- lists ---- */

static void free_list(const struct config_key *key, void *field)
{
	struct config_list *list = field;

	for (size_t i = 0; i < list->count; i++)
		free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

/* The next comma-separated item of a list value at *p, trimmed, as
 * [*start, *end) (empty for an empty item); *p moves past its comma. An
 * item that starts with raw (if not NUL) runs to the end of the value. */
static void next_list_item(const char **p, char raw, const char **start, const char **end)
{
	const char *s = *p;

	while (*s && isspace((unsigned char)*s))
		s++;
	*start = s;
	while (*s && (*s != ',' || (raw && **start == raw)))
		s++;
	*end = s;
	if (*s == ',')
		s++;
	*p = s;
	while (*end > *start && isspace((unsigned char)(*end)[-1]))
		(*end)--;
}

/* Append the comma-separated items of value; items are trimmed and empty
 * ones skipped. Each item passes the key's registered check first. */
static int parse_list(const struct config_key *key, void *field, const char *value, char *why,
		      size_t whylen)
{
	struct config_list *list = field;
	config_item_check_fn check = config_registered_check(key->item_check);
	const char *p = value;

	/* the loader refuses to load a program whose check is missing */
	if (key->item_check != CONFIG_CHECK_NONE && !check)
		abort();
	while (*p) {
		const char *start, *end;
		char **grown;
		char *item;

		/* a host regex may contain commas: it runs to the end of the value */
		next_list_item(&p, CONFIG_LIST_RAW_PREFIX, &start, &end);
		if (start == end)
			continue;
		if (list->count == CONFIG_LIST_MAX_ITEMS) {
			snprintf(why, whylen, "more than %d items", CONFIG_LIST_MAX_ITEMS);
			return -EINVAL;
		}
		item = strndup(start, (size_t)(end - start));
		if (item && check && check(item, why, whylen) < 0) {
			free(item);
			return -EINVAL;
		}
		grown = item ? realloc(list->items, (list->count + 1) * sizeof(*grown)) : NULL;
		if (!grown) {
			free(item);
			return -ENOMEM;
		}
		grown[list->count++] = item;
		list->items = grown;
	}
	return 0;
}

static bool list_is_set(const void *field)
{
	return ((const struct config_list *)field)->count > 0;
}

static bool lists_differ(const void *a, const void *b)
{
	const struct config_list *x = a, *y = b;

	if (x->count != y->count)
		return true;
	for (size_t i = 0; i < x->count; i++)
		if (strcmp(x->items[i], y->items[i]) != 0)
			return true;
	return false;
}

const struct config_type config_type_list = {
	.size = sizeof(struct config_list),
	.repeatable = true,
	.parse = parse_list,
	.is_set = list_is_set,
	.differs = lists_differ,
	.free = free_list,
	.doc_name = "list",
};

/* ---- booleans and numbers ---- */

static int parse_bool_field(const struct config_key *key, void *field, const char *value, char *why,
			    size_t whylen)
{
	char show[CONFIG_SHOWN_BYTES];

	if (config_parse_bool(value, field) == 0)
		return 0;
	snprintf(why, MIN(whylen, CONFIG_VALUE_WHY_BYTES),
		 "bad boolean '%s': expected true or "
		 "false (also yes/no, on/off, 1/0)",
		 config_shown(value, show));
	return -EINVAL;
}

const struct config_type config_type_bool = {
	.size = sizeof(bool),
	.parse = parse_bool_field,
	.doc_name = "boolean",
};

static int parse_uint32_field(const struct config_key *key, void *field, const char *value,
			      char *why, size_t whylen)
{
	char show[CONFIG_SHOWN_BYTES];
	int err = parse_uint32(value, key->min, key->max, field);

	whylen = MIN(whylen, CONFIG_NUMBER_WHY_BYTES);
	if (err == -EINVAL)
		snprintf(why, whylen, "bad number '%s': expected a whole number from %u to %u",
			 config_shown(value, show), key->min, key->max);
	else if (err == -ERANGE)
		snprintf(why, whylen, "%s is out of range (%u to %u)", config_shown(value, show),
			 key->min, key->max);
	return err ? -EINVAL : 0;
}

static void describe_uint32(const struct config_key *key, char *buf, size_t len)
{
	snprintf(buf, len, "integer %u..%u", key->min, key->max);
}

const struct config_type config_type_uint32 = {
	.size = sizeof(uint32_t),
	.parse = parse_uint32_field,
	.describe = describe_uint32,
};

/* ---- file modes ---- */

/* Octal permission bits, as chmod(1) takes them: 1 to 4 octal digits, at
 * most key->max (no setuid, setgid or sticky bit when max is 0777). */
static int parse_file_mode_field(const struct config_key *key, void *field, const char *value,
				 char *why, size_t whylen)
{
	char show[CONFIG_SHOWN_BYTES];
	size_t len = strlen(value), i;
	uint32_t mode = 0;

	whylen = MIN(whylen, CONFIG_NUMBER_WHY_BYTES);
	for (i = 0; i < len && len <= 4; i++) {
		if (value[i] < '0' || value[i] > '7')
			break;
		mode = mode * 8 + (uint32_t)(value[i] - '0');
	}
	if (len == 0 || len > 4 || i < len) {
		snprintf(why, whylen, "bad file mode '%s': expected octal digits such as 0660",
			 config_shown(value, show));
		return -EINVAL;
	}
	if (mode < key->min || mode > key->max) {
		snprintf(why, whylen, "file mode %s is out of range (%04o to %04o)",
			 config_shown(value, show), key->min, key->max);
		return -EINVAL;
	}
	*(uint32_t *)field = mode;
	return 0;
}

static void describe_file_mode(const struct config_key *key, char *buf, size_t len)
{
	snprintf(buf, len, "octal file mode %04o..%04o", key->min, key->max);
}

const struct config_type config_type_file_mode = {
	.size = sizeof(uint32_t),
	.parse = parse_file_mode_field,
	.describe = describe_file_mode,
};

/* ---- addresses ---- */

static int parse_addr_field(const struct config_key *key, void *field, const char *value, char *why,
			    size_t whylen)
{
	return config_parse_addr(value, field, why, MIN(whylen, CONFIG_VALUE_WHY_BYTES));
}

static bool addr_is_set(const void *field)
{
	return ((const struct config_addr *)field)->set;
}

static bool addrs_differ(const void *a, const void *b)
{
	const struct config_addr *x = a, *y = b;

	return x->set != y->set || x->port != y->port || strcmp(x->host, y->host) != 0;
}

const struct config_type config_type_addr = {
	.size = sizeof(struct config_addr),
	.parse = parse_addr_field,
	.is_set = addr_is_set,
	.differs = addrs_differ,
	.doc_name = "address",
};

/* ---- the egress proxy ---- */

/* A user name or password of egress_proxy, decoded: the bound of every
 * credential (config.c). */
#define CONFIG_EGRESS_CREDENTIAL_MAX_BYTES 255
#define CONFIG_EGRESS_SCHEME "http://"
#define CONFIG_EGRESS_FORM "http://[user:password@]host:port"

/* RFC 3986 userinfo characters that may stand for themselves: unreserved
 * and sub-delims (':' is the separator; '%' starts a triplet). */
static bool userinfo_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("-._~!$&'()*+,;=", c));
}

/*
 * Percent-decode the user name (user) or the password [s, s + n) into a
 * new string. Refused: a byte that must be encoded, a bad %XX, a decoded
 * control byte, a ':' in the user name (Basic separates the two with it),
 * empty, or longer than CONFIG_EGRESS_CREDENTIAL_MAX_BYTES. Reasons never
 * quote the text.
 */
static int decode_credential(const char *s, size_t n, bool user, char **out, char *why,
			     size_t whylen)
{
	const char *what = user ? "user name" : "password";
	char *d = malloc(n + 1);
	size_t len = 0;

	if (!d)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '%') {
			int hi = i + 2 < n ? grammar_hex_value((uint8_t)s[i + 1]) : -1;
			int lo = i + 2 < n ? grammar_hex_value((uint8_t)s[i + 2]) : -1;

			if (hi < 0 || lo < 0) {
				snprintf(why, whylen,
					 "bad percent-encoding in the %s: expected %%XX "
					 "with two hex digits",
					 what);
				goto refuse;
			}
			c = (char)(hi * 16 + lo);
			i += 2;
		} else if (!userinfo_char(c) && (user || c != ':')) {
			snprintf(why, whylen,
				 "the %s holds a character that must be "
				 "percent-encoded (as %%XX; '@' is %%40, ':' in a user name %%3A)",
				 what);
			goto refuse;
		}
		if ((unsigned char)c < 0x20 || c == 0x7f) {
			snprintf(why, whylen, "the %s holds a control character", what);
			goto refuse;
		}
		if (user && c == ':') {
			snprintf(why, whylen,
				 "the user name must not contain ':' (Basic "
				 "authentication separates user name and password with it)");
			goto refuse;
		}
		d[len++] = c;
	}
	if (len == 0 || len > CONFIG_EGRESS_CREDENTIAL_MAX_BYTES) {
		snprintf(why, whylen, len ? "the %s is longer than %d bytes" : "empty %s", what,
			 CONFIG_EGRESS_CREDENTIAL_MAX_BYTES);
		goto refuse;
	}
	d[len] = '\0';
	*out = d;
	return 0;
refuse:
	explicit_bzero(d, n + 1);
	free(d);
	return -EINVAL;
}

void config_egress_proxy_free(struct config_egress_proxy *p)
{
	config_free_string(&p->username, false);
	config_free_string(&p->password, true);
	memset(&p->addr, 0, sizeof(p->addr));
}

/* Scheme, then userinfo up to the one '@', then host:port as an address
 * key takes it (a host is required). No reason quotes the value. */
int config_parse_egress_proxy(const char *s, struct config_egress_proxy *out, char *why,
			      size_t whylen)
{
	const size_t scheme_len = strlen(CONFIG_EGRESS_SCHEME);
	char hostport[CONFIG_LINE_MAX_BYTES + 1];
	const char *rest, *end, *at, *problem;
	int err;

	memset(out, 0, sizeof(*out));
	if (*s == '\0')
		return 0;
	if (strncasecmp(s, CONFIG_EGRESS_SCHEME, scheme_len) != 0) {
		if (strncasecmp(s, "https://", strlen("https://")) == 0)
			snprintf(why, whylen,
				 "an https:// proxy (TLS to the proxy) is not "
				 "supported: expected " CONFIG_EGRESS_FORM);
		else
			snprintf(why, whylen,
				 "the scheme must be http: expected " CONFIG_EGRESS_FORM);
		return -EINVAL;
	}
	rest = s + scheme_len;
	end = rest + strlen(rest);
	if (end > rest && end[-1] == '/')
		end--;
	if (memchr(rest, '/', (size_t)(end - rest)) || memchr(rest, '?', (size_t)(end - rest)) ||
	    memchr(rest, '#', (size_t)(end - rest))) {
		snprintf(why, whylen,
			 "no path, query or fragment may follow host:port "
			 "(expected " CONFIG_EGRESS_FORM
			 "; percent-encode '/', '?' and '#' in a user name "
			 "or password)");
		return -EINVAL;
	}
	at = memrchr(rest, '@', (size_t)(end - rest));
	if (at) {
		const char *colon = memchr(rest, ':', (size_t)(at - rest));

		if (memchr(rest, '@', (size_t)(at - rest))) {
			snprintf(why, whylen,
				 "more than one '@': percent-encode '@' in the user "
				 "name or password as %%40");
			return -EINVAL;
		}
		if (!colon) {
			snprintf(why, whylen,
				 "a user name needs its password: expected "
				 "http://user:password@host:port");
			return -EINVAL;
		}
		err = decode_credential(rest, (size_t)(colon - rest), true, &out->username, why,
					whylen);
		if (!err)
			err = decode_credential(colon + 1, (size_t)(at - colon - 1), false,
						&out->password, why, whylen);
		if (err)
			goto fail;
		rest = at + 1;
	}
	if ((size_t)(end - rest) >= sizeof(hostport)) {
		snprintf(why, whylen, "host:port longer than %d bytes", CONFIG_LINE_MAX_BYTES);
		err = -EINVAL;
		goto fail;
	}
	memcpy(hostport, rest, (size_t)(end - rest));
	hostport[end - rest] = '\0';
	problem = hostport[0] ? addr_problem(hostport, &out->addr) : "missing host:port";
	if (!problem && !out->addr.host[0])
		problem = "missing host before ':port'";
	if (problem) {
		snprintf(why, whylen, "bad proxy address: %s (expected " CONFIG_EGRESS_FORM ")",
			 problem);
		err = -EINVAL;
		goto fail;
	}
	return 0;
fail:
	config_egress_proxy_free(out);
	return err;
}

static int parse_egress_proxy_field(const struct config_key *key, void *field, const char *value,
				    char *why, size_t whylen)
{
	struct config_egress_proxy fresh;
	int err =
		config_parse_egress_proxy(value, &fresh, why, MIN(whylen, CONFIG_VALUE_WHY_BYTES));

	if (err)
		return err;
	config_egress_proxy_free(field);
	memcpy(field, &fresh, sizeof(fresh));
	return 0;
}

static bool egress_proxy_is_set(const void *field)
{
	return ((const struct config_egress_proxy *)field)->addr.set;
}

static bool egress_proxies_differ(const void *a, const void *b)
{
	const struct config_egress_proxy *x = a, *y = b;

	return addrs_differ(&x->addr, &y->addr) || strings_differ(&x->username, &y->username) ||
	       strings_differ(&x->password, &y->password);
}

static void free_egress_proxy(const struct config_key *key, void *field)
{
	config_egress_proxy_free(field);
}

/* Not config_type_secret (that is for keys named *password), but the value
 * may carry one: the parser's reasons never quote it, free zeroes it. */
const struct config_type config_type_egress_proxy = {
	.size = sizeof(struct config_egress_proxy),
	.parse = parse_egress_proxy_field,
	.is_set = egress_proxy_is_set,
	.differs = egress_proxies_differ,
	.free = free_egress_proxy,
	.doc_name = CONFIG_EGRESS_FORM,
};

/* ---- lists of addresses ---- */

static void free_addr_list(const struct config_key *key, void *field)
{
	struct config_addr_list *list = field;

	free(list->items);
	list->items = NULL;
	list->count = 0;
}

static bool same_addr(const struct config_addr *a, const struct config_addr *b)
{
	return a->port == b->port && strcasecmp(a->host, b->host) == 0;
}

/* Append the comma-separated addresses of value (trimmed, empty items
 * skipped); each is parsed as an address key's value, and one already in
 * the list, or one beyond key->max items, is refused. */
static int parse_addr_list(const struct config_key *key, void *field, const char *value, char *why,
			   size_t whylen)
{
	struct config_addr_list *list = field;
	const char *p = value;

	whylen = MIN(whylen, CONFIG_VALUE_WHY_BYTES);
	while (*p) {
		char item[CONFIG_LINE_MAX_BYTES + 1], show[CONFIG_SHOWN_BYTES];
		const char *start, *end;
		struct config_addr addr, *grown;
		size_t n;

		next_list_item(&p, '\0', &start, &end);
		if (start == end)
			continue;
		n = (size_t)(end - start);
		if (n >= sizeof(item)) {
			snprintf(why, whylen, "address longer than %d bytes",
				 CONFIG_LINE_MAX_BYTES);
			return -EINVAL;
		}
		memcpy(item, start, n);
		item[n] = '\0';
		if (config_parse_addr(item, &addr, why, whylen) < 0)
			return -EINVAL;
		for (size_t i = 0; i < list->count; i++) {
			if (same_addr(&list->items[i], &addr)) {
				snprintf(why, whylen, "'%s' is listed twice",
					 config_shown(item, show));
				return -EINVAL;
			}
		}
		if (list->count >= key->max) {
			snprintf(why, whylen, "more than %u addresses", key->max);
			return -EINVAL;
		}
		grown = realloc(list->items, (list->count + 1) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		grown[list->count++] = addr;
		list->items = grown;
	}
	return 0;
}

static bool addr_list_is_set(const void *field)
{
	return ((const struct config_addr_list *)field)->count > 0;
}

static bool addr_lists_differ(const void *a, const void *b)
{
	const struct config_addr_list *x = a, *y = b;

	if (x->count != y->count)
		return true;
	for (size_t i = 0; i < x->count; i++)
		if (addrs_differ(&x->items[i], &y->items[i]))
			return true;
	return false;
}

static void describe_addr_list(const struct config_key *key, char *buf, size_t len)
{
	snprintf(buf, len, "list of 1..%u addresses", key->max);
}

const struct config_type config_type_addr_list = {
	.size = sizeof(struct config_addr_list),
	.repeatable = true,
	.parse = parse_addr_list,
	.is_set = addr_list_is_set,
	.differs = addr_lists_differ,
	.free = free_addr_list,
	.describe = describe_addr_list,
};

/* ---- log level and format ---- */

static int parse_log_level_field(const struct config_key *key, void *field, const char *value,
				 char *why, size_t whylen)
{
	char show[CONFIG_SHOWN_BYTES];
	int parsed = log_level_parse(value);

	if (parsed >= 0) {
		*(int *)field = parsed;
		return 0;
	}
	snprintf(why, MIN(whylen, CONFIG_VALUE_WHY_BYTES),
		 "bad log level '%s': expected debug, info, warn or error",
		 config_shown(value, show));
	return -EINVAL;
}

const struct config_type config_type_log_level = {
	.size = sizeof(int),
	.parse = parse_log_level_field,
	.doc_name = "debug, info, warn, error",
};

static int parse_log_format_field(const struct config_key *key, void *field, const char *value,
				  char *why, size_t whylen)
{
	char show[CONFIG_SHOWN_BYTES];
	int parsed = parse_log_format(value);

	if (parsed >= 0) {
		*(enum log_format *)field = (enum log_format)parsed;
		return 0;
	}
	snprintf(why, MIN(whylen, CONFIG_VALUE_WHY_BYTES),
		 "bad log format '%s': expected text or json", config_shown(value, show));
	return -EINVAL;
}

const struct config_type config_type_log_format = {
	.size = sizeof(enum log_format),
	.parse = parse_log_format_field,
	.doc_name = "text, json",
};
