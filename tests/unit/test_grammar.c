/*
 * test_grammar.c — the shared lexical rules (src/core/grammar.c): every
 * byte value against the id alphabet, lengths at and past the limit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <ctype.h>
#include <string.h>

#include "anyproxy/grammar.h"
#include "../utf8_reference.h"

static void test_id_bytes(void **state)
{
	const char *allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-";

	for (unsigned c = 0; c < 256; c++) {
		bool want = c != 0 && strchr(allowed, (int)c) != NULL;

		assert_int_equal(grammar_id_byte((uint8_t)c), want);
	}
}

static void test_id_span(void **state)
{
	assert_int_equal(grammar_id_span("prod-eu.1", 9), 9);
	assert_int_equal(grammar_id_span("prod eu", 7), 4);
	assert_int_equal(grammar_id_span("a\0b", 3), 1);
	assert_int_equal(grammar_id_span("", 0), 0);
	assert_int_equal(grammar_id_span("x/y", 3), 1);
}

static void test_id_lengths(void **state)
{
	char id[ID_MAX_BYTES + 2];

	memset(id, 'a', sizeof(id));
	assert_true(grammar_id_valid(id, ID_MAX_BYTES, 1));
	assert_false(grammar_id_valid(id, ID_MAX_BYTES + 1, 1)); /* refused, never cut */
	assert_true(grammar_id_valid(id, 0, 0));                 /* the default group */
	assert_false(grammar_id_valid(id, 0, 1));                /* a client_id is not empty */
	id[10] = '%';
	assert_false(grammar_id_valid(id, 20, 1));
}

static void test_host_bytes(void **state)
{
	const char *allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";

	for (unsigned c = 0; c < 256; c++) {
		bool want = c != 0 && strchr(allowed, (int)c) != NULL;
		char name[3] = { 'a', (char)c, 'b' };
		const char *why = NULL;

		assert_int_equal(grammar_host_byte((uint8_t)c), want);
		/* in a name, every byte but the label bytes and '.' is refused */
		assert_int_equal(grammar_host_name(name, 3, &why), want || c == '.' ? 3 : -EINVAL);
	}
}

static void test_hex_values(void **state)
{
	const char *digits = "0123456789abcdef";

	for (unsigned c = 0; c < 256; c++) {
		const char *at = c ? strchr(digits, tolower((int)c)) : NULL;

		assert_int_equal(grammar_hex_value((uint8_t)c), at ? (int)(at - digits) : -1);
	}
}

static void test_host_names(void **state)
{
	char name[GRAMMAR_HOST_MAX + 2];
	const char *why = NULL;

	assert_int_equal(grammar_host_name("Example.COM", 11, &why), 11);
	assert_int_equal(grammar_host_name("example.com.", 12, &why), 11); /* fully qualified */
	assert_int_equal(grammar_host_name("_srv-1.x", 8, &why), 8);
	assert_int_equal(grammar_host_name("", 0, &why), -EINVAL);
	assert_string_equal(why, "empty host name");
	assert_int_equal(grammar_host_name(".", 1, &why), -EINVAL);
	assert_string_equal(why, "empty host name");
	assert_int_equal(grammar_host_name("a..b", 4, &why), -EINVAL);
	assert_string_equal(why, "empty label in host name");
	assert_int_equal(grammar_host_name(".a", 2, &why), -EINVAL);
	assert_int_equal(grammar_host_name("a..", 3, &why), -EINVAL);
	assert_string_equal(why, "empty label in host name");
	assert_int_equal(grammar_host_name("a\0b", 3, &why), -EINVAL);
	assert_int_equal(grammar_host_name("a:80", 4, &why), -EINVAL);

	/* labels: 63 bytes fine, 64 not */
	memset(name, 'a', sizeof(name));
	assert_int_equal(grammar_host_name(name, GRAMMAR_LABEL_MAX, &why), GRAMMAR_LABEL_MAX);
	assert_int_equal(grammar_host_name(name, GRAMMAR_LABEL_MAX + 1, &why), -EINVAL);
	assert_string_equal(why, "label longer than 63 bytes in host name");

	/* names: 253 bytes fine (with or without a final dot), 254 not */
	for (size_t i = GRAMMAR_LABEL_MAX; i < sizeof(name); i += GRAMMAR_LABEL_MAX + 1)
		name[i] = '.';
	name[GRAMMAR_HOST_MAX - 1] = 'z'; /* not a dot at the end */
	name[GRAMMAR_HOST_MAX] = '.';
	assert_int_equal(grammar_host_name(name, GRAMMAR_HOST_MAX, &why), GRAMMAR_HOST_MAX);
	assert_int_equal(grammar_host_name(name, GRAMMAR_HOST_MAX + 1, &why), GRAMMAR_HOST_MAX);
	name[GRAMMAR_HOST_MAX] = 'z';
	assert_int_equal(grammar_host_name(name, GRAMMAR_HOST_MAX + 1, &why), -EINVAL);
	assert_string_equal(why, "host name longer than 253 bytes");
}

/* Every lead byte with every second byte, followed by continuation bytes
 * at both ends of their range, and every cut length. */
static void test_utf8_all_pairs(void **state)
{
	static const uint8_t tails[] = { 0x80, 0xbf, 0x00, 0x41, 0xc0 };

	for (unsigned a = 0; a < 256; a++) {
		for (unsigned b = 0; b < 256; b++) {
			for (size_t t = 0; t < sizeof(tails); t++) {
				uint8_t s[4] = { (uint8_t)a, (uint8_t)b, tails[t], tails[t] };

				for (size_t len = 1; len <= 4; len++)
					assert_int_equal(grammar_utf8_len((const char *)s, len),
							 utf8_reference(s, len));
			}
		}
	}
}

static void test_utf8_boundaries(void **state)
{
	assert_int_equal(grammar_utf8_len("\x7f", 1), 1);
	assert_int_equal(grammar_utf8_len("\xc2\x80", 2), 2);         /* U+0080 */
	assert_int_equal(grammar_utf8_len("\xc1\xbf", 2), 0);         /* overlong U+007F */
	assert_int_equal(grammar_utf8_len("\xe0\xa0\x80", 3), 3);     /* U+0800 */
	assert_int_equal(grammar_utf8_len("\xe0\x9f\xbf", 3), 0);     /* overlong U+07FF */
	assert_int_equal(grammar_utf8_len("\xed\x9f\xbf", 3), 3);     /* U+D7FF */
	assert_int_equal(grammar_utf8_len("\xed\xa0\x80", 3), 0);     /* U+D800 */
	assert_int_equal(grammar_utf8_len("\xed\xbf\xbf", 3), 0);     /* U+DFFF */
	assert_int_equal(grammar_utf8_len("\xee\x80\x80", 3), 3);     /* U+E000 */
	assert_int_equal(grammar_utf8_len("\xf0\x90\x80\x80", 4), 4); /* U+10000 */
	assert_int_equal(grammar_utf8_len("\xf0\x8f\xbf\xbf", 4), 0); /* overlong */
	assert_int_equal(grammar_utf8_len("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF */
	assert_int_equal(grammar_utf8_len("\xf4\x90\x80\x80", 4), 0); /* U+110000 */
	assert_int_equal(grammar_utf8_len("\xf0\x9f\x98\x80", 3), 0); /* cut by len */
	assert_int_equal(grammar_utf8_len("\xe2\x82", 2), 0);
	assert_int_equal(grammar_utf8_len("\xe2\x82\0", 3), 0); /* cut by a NUL */
}

/* A whole string through grammar_json_unit, for the tests below. */
static const char *json(const char *s, size_t len, enum grammar_json_ws ws)
{
	static char out[512];
	size_t pos = 0, used;

	for (size_t i = 0; i < len; i += used) {
		size_t left = len - i;

		pos += grammar_json_unit(s + i, left < 4 ? left : 4, ws, out + pos, &used);
		assert_true(used >= 1 && used <= left);
	}
	out[pos] = '\0';
	return out;
}

static void test_json_escapes(void **state)
{
	assert_string_equal(json("a\"b\\c/", 6, GRAMMAR_JSON_WS_HEX), "a\\\"b\\\\c/");
	assert_string_equal(json("\n\r\t", 3, GRAMMAR_JSON_WS_HEX), "\\u000a\\u000d\\u0009");
	assert_string_equal(json("\n\r\t", 3, GRAMMAR_JSON_WS_SHORT), "\\n\\r\\t");
	assert_string_equal(json("\0\x01\x1f\x7f", 4, GRAMMAR_JSON_WS_SHORT),
			    "\\u0000\\u0001\\u001f\\u007f");
	assert_string_equal(json("caf\xc3\xa9 \xf0\x9f\x98\x80", 10, GRAMMAR_JSON_WS_HEX),
			    "caf\xc3\xa9 \xf0\x9f\x98\x80");
	/* each byte of invalid UTF-8 reads as U+00XX */
	assert_string_equal(json("\xff\xc3(\xed\xa0\x80", 6, GRAMMAR_JSON_WS_HEX),
			    "\\u00ff\\u00c3(\\u00ed\\u00a0\\u0080");
	assert_string_equal(json("\xe2\x82", 2, GRAMMAR_JSON_WS_SHORT), "\\u00e2\\u0082");
}

/* Every byte alone: printable ASCII but '"' and '\\' is itself, the rest an
 * escape of the documented length; nothing raw below 0x20 or DEL. */
static void test_json_every_byte(void **state)
{
	char unit[GRAMMAR_JSON_UNIT_MAX];
	size_t used;

	for (unsigned c = 0; c < 256; c++) {
		char in = (char)c;

		for (int ws = GRAMMAR_JSON_WS_HEX; ws <= GRAMMAR_JSON_WS_SHORT; ws++) {
			size_t n = grammar_json_unit(&in, 1, ws, unit, &used);

			assert_int_equal(used, 1);
			if (c == '"' || c == '\\')
				assert_true(n == 2 && unit[0] == '\\' && unit[1] == in);
			else if (ws == GRAMMAR_JSON_WS_SHORT &&
				 (c == '\n' || c == '\r' || c == '\t'))
				assert_true(n == 2 && unit[0] == '\\');
			else if (c >= 0x20 && c < 0x7f)
				assert_true(n == 1 && unit[0] == in);
			else
				assert_true(n == 6 && memcmp(unit, "\\u00", 4) == 0);
		}
	}
}

static void test_target_format(void **state)
{
	static const uint8_t v4[4] = { 192, 0, 2, 1 };
	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
	static const uint8_t v6max[16] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe };
	char buf[GRAMMAR_TARGET_MAX];

	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_IPV4, v4, 4, 80), 12);
	assert_string_equal(buf, "192.0.2.1:80");
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_IPV6, v6, 16, 443),
			 17);
	assert_string_equal(buf, "[2001:db8::1]:443");
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_DOMAIN, "example.com",
					       11, 65535),
			 17);
	assert_string_equal(buf, "example.com:65535");
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_IPV6, v6max, 16, 0),
			 43);
	assert_string_equal(buf, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:0");
	/* wrong lengths, unknown types, a NUL that would cut the name short */
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_IPV4, v4, 16, 1),
			 -EINVAL);
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_IPV6, v6, 4, 1),
			 -EINVAL);
	assert_int_equal(grammar_format_target(buf, sizeof(buf), 2, v4, 4, 1), -EINVAL);
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_DOMAIN, "", 0, 1),
			 -EINVAL);
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_DOMAIN, "a\0b", 3, 1),
			 -EINVAL);
}

/* The buffer constant fits the longest target; one byte less is refused. */
static void test_target_longest(void **state)
{
	char name[GRAMMAR_TARGET_DOMAIN_MAX + 1];
	char buf[GRAMMAR_TARGET_MAX + 1];

	memset(name, 'x', sizeof(name));
	assert_int_equal(grammar_format_target(buf, GRAMMAR_TARGET_MAX, GRAMMAR_ADDR_DOMAIN, name,
					       GRAMMAR_TARGET_DOMAIN_MAX, 65535),
			 GRAMMAR_TARGET_MAX - 1);
	assert_int_equal(buf[GRAMMAR_TARGET_MAX - 1], '\0');
	assert_int_equal(grammar_format_target(buf, GRAMMAR_TARGET_MAX - 1, GRAMMAR_ADDR_DOMAIN,
					       name, GRAMMAR_TARGET_DOMAIN_MAX, 65535),
			 -ENOSPC);
	assert_int_equal(grammar_format_target(buf, sizeof(buf), GRAMMAR_ADDR_DOMAIN, name,
					       GRAMMAR_TARGET_DOMAIN_MAX + 1, 1),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_id_bytes),       cmocka_unit_test(test_id_span),
		cmocka_unit_test(test_id_lengths),     cmocka_unit_test(test_host_bytes),
		cmocka_unit_test(test_hex_values),     cmocka_unit_test(test_host_names),
		cmocka_unit_test(test_utf8_all_pairs), cmocka_unit_test(test_utf8_boundaries),
		cmocka_unit_test(test_json_escapes),   cmocka_unit_test(test_json_every_byte),
		cmocka_unit_test(test_target_format),  cmocka_unit_test(test_target_longest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
