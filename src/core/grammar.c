/* grammar.c — lexical rules shared by every layer (see grammar.h). */
#include "anyproxy/grammar.h"

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
