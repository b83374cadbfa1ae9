/* grammar.c — lexical rules shared by every layer (see grammar.h). */
#include "anyproxy/grammar.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

bool grammar_id_byte(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '-';
}

size_t grammar_id_span(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len && grammar_id_byte((uint8_t)s[i]))
		i++;
	return i;
}

bool grammar_id_valid(const char *s, size_t len, size_t min_len)
{
	return len >= min_len && len <= ID_MAX_BYTES && grammar_id_span(s, len) == len;
}

bool grammar_host_byte(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

int grammar_hex_value(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int grammar_host_name(const char *s, size_t len, const char **why)
{
	size_t label_len = 0;

	if (len && s[len - 1] == '.')
		len--;
	if (len == 0) {
		*why = "empty host name";
		return -EINVAL;
	}
	if (len > GRAMMAR_HOST_MAX) {
		*why = "host name longer than 253 bytes";
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (label_len == 0) {
				*why = "empty label in host name";
				return -EINVAL;
			}
			label_len = 0;
		} else if (!grammar_host_byte((uint8_t)s[i])) {
			*why = "byte not allowed in a host name (only letters, digits, '-', '_', "
			       "'.')";
			return -EINVAL;
		} else if (++label_len > GRAMMAR_LABEL_MAX) {
			*why = "label longer than 63 bytes in host name";
			return -EINVAL;
		}
	}
	if (label_len == 0) {
		*why = "empty label in host name";
		return -EINVAL;
	}
	return (int)len;
}

size_t grammar_utf8_len(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned char low = 0x80, high = 0xbf; /* allowed range of the 2nd byte */
	size_t n;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		if (p[0] == 0xe0)
			low = 0xa0;
		else if (p[0] == 0xed)
			high = 0x9f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		if (p[0] == 0xf0)
			low = 0x90;
		else if (p[0] == 0xf4)
			high = 0x8f;
	} else {
		return 0;
	}
	if (len < n || p[1] < low || p[1] > high)
		return 0;
	for (size_t i = 2; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	}
	return n;
}

size_t grammar_json_unit(const char *s, size_t len, enum grammar_json_ws ws,
			 char unit[GRAMMAR_JSON_UNIT_MAX], size_t *consumed)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char c = (unsigned char)s[0];
	size_t n = grammar_utf8_len(s, len);

	*consumed = 1;
	if (c == '"' || c == '\\') {
		unit[0] = '\\';
		unit[1] = (char)c;
		return 2;
	}
	if (ws == GRAMMAR_JSON_WS_SHORT && (c == '\n' || c == '\r' || c == '\t')) {
		unit[0] = '\\';
		unit[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
		return 2;
	}
	if (c < 0x20 || c == 0x7f || n == 0) {
		memcpy(unit, "\\u00", 4);
		unit[4] = hex[c >> 4];
		unit[5] = hex[c & 0xf];
		return 6;
	}
	memcpy(unit, s, n);
	*consumed = n;
	return n;
}

int grammar_format_target(char *buf, size_t size, uint8_t addr_type, const void *host,
			  size_t host_len, uint16_t port)
{
	char addr[INET6_ADDRSTRLEN];
	int n;

	switch (addr_type) {
	case GRAMMAR_ADDR_IPV4:
		if (host_len != 4 || !inet_ntop(AF_INET, host, addr, sizeof(addr)))
			return -EINVAL;
		n = snprintf(buf, size, "%s:%u", addr, port);
		break;
	case GRAMMAR_ADDR_IPV6:
		if (host_len != 16 || !inet_ntop(AF_INET6, host, addr, sizeof(addr)))
			return -EINVAL;
		n = snprintf(buf, size, "[%s]:%u", addr, port);
		break;
	case GRAMMAR_ADDR_DOMAIN:
		if (host_len == 0 || host_len > GRAMMAR_TARGET_DOMAIN_MAX ||
		    memchr(host, '\0', host_len))
			return -EINVAL;
		n = snprintf(buf, size, "%.*s:%u", (int)host_len, (const char *)host, port);
		break;
	default:
		return -EINVAL;
	}
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= size)
		return -ENOSPC;
	return n;
}
