/*
 * utf8_reference.h — a second UTF-8 decoder, for the tests of
 * grammar_utf8_len (tests/unit/test_grammar.c, tests/fuzz/fuzz_grammar.c).
 * It works from the code point the bytes spell by their bit pattern, then
 * applies the rules (shortest form, no surrogates, at most U+10FFFF),
 * where grammar.c checks byte ranges: two ways to the same answer.
 */
#ifndef ANYPROXY_UTF8_REFERENCE_H
#define ANYPROXY_UTF8_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

/* Length of the character at the start of s[0..len) (len >= 1), 0 if none. */
static inline size_t utf8_reference(const uint8_t *s, size_t len)
{
	static const uint32_t min_cp[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	size_t n;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

#endif
