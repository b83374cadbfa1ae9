/*
 * fuzz_grammar.c — libFuzzer target for the shared lexical rules
 * (grammar.h). The input is any bytes; every rule is run on it and aborts
 * when a promise breaks:
 *   - grammar_utf8_len agrees, at every offset and every cut length, with
 *     a reference decoder that works from the code point (shortest form,
 *     no surrogates, at most U+10FFFF) instead of byte ranges;
 *   - grammar_json_unit, in both whitespace styles, consumes the input
 *     exactly and writes valid JSON string content: no raw byte below 0x20,
 *     no DEL, no bare '"', only the escapes \" \\ \n \r \t \u00XX, valid
 *     UTF-8 throughout; and undoing the escapes gives the input back;
 *   - grammar_format_target with the input's bytes as an IPv4 address, an
 *     IPv6 address or a domain round-trips through inet_pton (the domain:
 *     its bytes), refuses exactly a NUL, an empty or an over-long domain,
 *     always fits GRAMMAR_TARGET_MAX and says -ENOSPC, never cuts, when
 *     a smaller buffer is too short;
 *   - grammar_host_name accepts exactly what a split at the dots says is a
 *     host name (labels of 1..63 letters, digits, '-', '_'; at most 253
 *     bytes without one final dot) and returns that length;
 *   - grammar_id_span stops at the first byte grammar_id_byte refuses, and
 *     grammar_id_valid is exactly span == length within the limits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/grammar.h"
#include "../utf8_reference.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Longest output of one input byte: \u00XX. */
#define JSON_OUT_MAX(n) ((n)*GRAMMAR_JSON_UNIT_MAX)
/* The longest input checked whole (longer inputs: their prefix). */
#define FUZZ_MAX_INPUT 4096

static void check_utf8(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i < size; i++) {
		for (size_t len = 1; len <= GRAMMAR_UTF8_MAX_BYTES && i + len <= size; len++)
			CHECK(grammar_utf8_len((const char *)data + i, len) ==
			      utf8_reference(data + i, len));
	}
}

static int hex_value(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Check out[0..n) is JSON string content and undo its escapes into back. */
static size_t json_unescape(const uint8_t *out, size_t n, enum grammar_json_ws ws, uint8_t *back)
{
	size_t i = 0, m = 0;

	while (i < n) {
		if (out[i] != '\\') {
			size_t u = utf8_reference(out + i, n - i);

			CHECK(u > 0 && out[i] >= 0x20 && out[i] != 0x7f && out[i] != '"');
			memcpy(back + m, out + i, u);
			m += u;
			i += u;
			continue;
		}
		CHECK(i + 1 < n);
		switch (out[i + 1]) {
		case '"':
		case '\\':
			back[m++] = out[i + 1];
			i += 2;
			break;
		case 'n':
		case 'r':
		case 't':
			CHECK(ws == GRAMMAR_JSON_WS_SHORT);
			back[m++] = out[i + 1] == 'n' ? '\n' : out[i + 1] == 'r' ? '\r' : '\t';
			i += 2;
			break;
		case 'u':
			CHECK(i + 6 <= n && out[i + 2] == '0' && out[i + 3] == '0');
			CHECK(hex_value(out[i + 4]) >= 0 && hex_value(out[i + 5]) >= 0);
			back[m++] = (uint8_t)(hex_value(out[i + 4]) << 4 | hex_value(out[i + 5]));
			/* a short escape is used when ws asks for one */
			CHECK(ws == GRAMMAR_JSON_WS_HEX ||
			      (back[m - 1] != '\n' && back[m - 1] != '\r' && back[m - 1] != '\t'));
			i += 6;
			break;
		default:
			CHECK(false);
		}
	}
	return m;
}

static void check_json(const uint8_t *data, size_t size, enum grammar_json_ws ws)
{
	static uint8_t out[JSON_OUT_MAX(FUZZ_MAX_INPUT)], back[JSON_OUT_MAX(FUZZ_MAX_INPUT)];
	size_t pos = 0, used;

	for (size_t i = 0; i < size; i += used) {
		size_t left = size - i;
		size_t n = grammar_json_unit((const char *)data + i,
					     left < GRAMMAR_UTF8_MAX_BYTES ? left
									   : GRAMMAR_UTF8_MAX_BYTES,
					     ws, (char *)out + pos, &used);

		CHECK(n >= 1 && n <= GRAMMAR_JSON_UNIT_MAX);
		CHECK(used >= 1 && used <= left && used <= GRAMMAR_UTF8_MAX_BYTES);
		pos += n;
	}
	CHECK(json_unescape(out, pos, ws, back) == size);
	CHECK(size == 0 || memcmp(back, data, size) == 0);
}

/* Split "host:port" (host maybe in brackets) and check both halves. */
static void check_target_text(const char *text, int n, const char *host, size_t host_len,
			      bool brackets, uint16_t port)
{
	size_t off = brackets ? 1 : 0;
	char portbuf[8];
	int port_len = snprintf(portbuf, sizeof(portbuf), "%u", port);

	CHECK(n >= 0 && (size_t)n == strlen(text));
	CHECK((size_t)n == 2 * off + host_len + 1 + (size_t)port_len);
	CHECK(!brackets || (text[0] == '[' && text[1 + host_len] == ']'));
	CHECK(memcmp(text + off, host, host_len) == 0);
	CHECK(text[off + host_len + off] == ':');
	CHECK(strcmp(text + off + host_len + off + 1, portbuf) == 0);
}

static void check_target(const uint8_t *data, size_t size)
{
	char buf[GRAMMAR_TARGET_MAX + 1], host[GRAMMAR_TARGET_MAX];
	uint8_t addr[16];
	uint16_t port;
	size_t small;
	int n;

	if (size < 3)
		return;
	port = (uint16_t)(data[0] << 8 | data[1]);
	small = data[2] % (GRAMMAR_TARGET_MAX + 1);
	data += 3;
	size -= 3;

	if (size >= 4) {
		n = grammar_format_target(buf, GRAMMAR_TARGET_MAX, GRAMMAR_ADDR_IPV4, data, 4,
					  port);
		CHECK(n > 0);
		memcpy(host, buf, (size_t)(strchr(buf, ':') - buf));
		host[strchr(buf, ':') - buf] = '\0';
		CHECK(inet_pton(AF_INET, host, addr) == 1 && memcmp(addr, data, 4) == 0);
		check_target_text(buf, n, host, strlen(host), false, port);
		CHECK(grammar_format_target(buf, GRAMMAR_TARGET_MAX, GRAMMAR_ADDR_IPV4, data, 5,
					    port) == -EINVAL);
	}
	if (size >= 16) {
		char *end;

		n = grammar_format_target(buf, GRAMMAR_TARGET_MAX, GRAMMAR_ADDR_IPV6, data, 16,
					  port);
		CHECK(n > 0 && buf[0] == '[');
		end = strchr(buf, ']');
		CHECK(end != NULL);
		memcpy(host, buf + 1, (size_t)(end - buf - 1));
		host[end - buf - 1] = '\0';
		CHECK(inet_pton(AF_INET6, host, addr) == 1 && memcmp(addr, data, 16) == 0);
		check_target_text(buf, n, host, strlen(host), true, port);
	}
	{
		size_t len = size > GRAMMAR_TARGET_DOMAIN_MAX + 1 ? GRAMMAR_TARGET_DOMAIN_MAX + 1
								  : size;
		bool valid = len >= 1 && len <= GRAMMAR_TARGET_DOMAIN_MAX && !memchr(data, 0, len);
		int m;

		n = grammar_format_target(buf, GRAMMAR_TARGET_MAX, GRAMMAR_ADDR_DOMAIN, data, len,
					  port);
		CHECK(valid ? n > 0 : n == -EINVAL);
		if (!valid)
			return;
		check_target_text(buf, n, (const char *)data, len, false, port);
		/* a smaller buffer: the whole text or -ENOSPC, never a part */
		memset(host, 'Z', sizeof(host));
		m = grammar_format_target(host, small, GRAMMAR_ADDR_DOMAIN, data, len, port);
		if ((size_t)n < small)
			CHECK(m == n && memcmp(host, buf, (size_t)n + 1) == 0);
		else
			CHECK(m == -ENOSPC);
	}
}

/* The model: drop one final dot, split at the dots, check each label. */
static int host_reference(const uint8_t *s, size_t len)
{
	size_t label = 0;

	if (len && s[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return -EINVAL;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || s[i] == '.') {
			if (label == 0 || label > 63)
				return -EINVAL;
			label = 0;
			continue;
		}
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
			return -EINVAL;
		label++;
	}
	return (int)len;
}

static void check_host(const uint8_t *data, size_t size)
{
	const char *why = NULL;
	int n = grammar_host_name((const char *)data, size, &why);

	CHECK(n == host_reference(data, size));
	CHECK(n > 0 || (why != NULL && why[0] != '\0'));
}

static void check_id(const uint8_t *data, size_t size)
{
	size_t span = grammar_id_span((const char *)data, size);

	CHECK(span <= size);
	for (size_t i = 0; i < span; i++)
		CHECK(grammar_id_byte(data[i]));
	CHECK(span == size || !grammar_id_byte(data[span]));
	for (size_t min = 0; min <= 1; min++)
		CHECK(grammar_id_valid((const char *)data, size, min) ==
		      (span == size && size >= min && size <= ID_MAX_BYTES));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > FUZZ_MAX_INPUT)
		size = FUZZ_MAX_INPUT;
	check_utf8(data, size);
	check_json(data, size, GRAMMAR_JSON_WS_HEX);
	check_json(data, size, GRAMMAR_JSON_WS_SHORT);
	check_target(data, size);
	check_host(data, size);
	check_id(data, size);
	return 0;
}
