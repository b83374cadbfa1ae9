/*
 * grammar.h — the lexical rules every layer shares, written once.
 *
 * Ids: a client_id or a group id is 0..ID_MAX_BYTES bytes of
 * A-Z a-z 0-9 . _ : -   The config checks agents' own ids with it, the
 * gateway checks HELLO with it, and the proxies check the group of a user
 * name with it, so every group an agent can join is a group a user can
 * name, and nothing longer or stranger is ever routed.
 *
 * Host names: DNS names of letters, digits, '-' and '_' in labels of
 * 1..GRAMMAR_LABEL_MAX bytes, at most GRAMMAR_HOST_MAX bytes without one
 * optional trailing dot (RFC 1035 2.3.4: 255 octets on the wire). The
 * HTTP proxy's targets and the agent's access rules take the same names.
 *
 * UTF-8: well-formed per Unicode table 3-7 (no overlong forms, no
 * surrogates, nothing past U+10FFFF), the rule of log.c's output and of
 * apctl's terminal and JSON printers.
 *
 * JSON strings: the escaping of the log's JSON lines and apctl's JSON
 * output, one character (one unit) at a time so the log can cut a value at
 * a unit boundary and apctl can stream it.
 *
 * Targets: "1.2.3.4:80", "[::1]:80" or "name:80", the one spelling of a
 * proxied target in every log line of the gateway and the agent.
 *
 * Pure: no I/O, no allocation.
 */
#ifndef ANYPROXY_GRAMMAR_H
#define ANYPROXY_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ID_MAX_BYTES 64

/* Tunnels one agent keeps to one gateway: [client] replicas is at most
 * this, and a gateway refuses a HELLO whose replica index is not below
 * it, so that one client_id holds at most this many tunnels. */
#define REPLICAS_MAX 64

#define GRAMMAR_HOST_MAX 253 /* bytes of a host name without its trailing dot */
#define GRAMMAR_LABEL_MAX 63 /* bytes of one label */

/* The longest UTF-8 character. */
#define GRAMMAR_UTF8_MAX_BYTES 4

/* The longest JSON form of one character: \u00XX. */
#define GRAMMAR_JSON_UNIT_MAX 6

/* How a JSON string spells LF, CR and TAB: \u000a \u000d \u0009 like
 * every other control byte (the log) or \n \r \t (apctl's output). */
enum grammar_json_ws {
	GRAMMAR_JSON_WS_HEX,
	GRAMMAR_JSON_WS_SHORT,
};

/* Address types of a target: the SOCKS5 ATYP values, which the tunnel's
 * OPEN frame uses too (frame.h's FRAME_ADDR_* are these). */
enum grammar_addr {
	GRAMMAR_ADDR_IPV4 = 1,   /* 4 bytes, network order */
	GRAMMAR_ADDR_DOMAIN = 3, /* 1..GRAMMAR_TARGET_DOMAIN_MAX bytes, no NUL */
	GRAMMAR_ADDR_IPV6 = 4,   /* 16 bytes, network order */
};

/* The longest domain a target carries: a SOCKS5 / OPEN length byte. */
#define GRAMMAR_TARGET_DOMAIN_MAX 255
/* A buffer this size holds every target grammar_format_target writes:
 * the longest domain, ':', five port digits and the NUL ("[IPv6]:port"
 * is at most 1 + 45 + 2 + 5 + 1 = 54 bytes). */
#define GRAMMAR_TARGET_MAX (GRAMMAR_TARGET_DOMAIN_MAX + 1 + 5 + 1)

/* Is c allowed in an id? */
bool grammar_id_byte(uint8_t c);

/* How many leading bytes of s[0..len) are id bytes (len when all are). */
size_t grammar_id_span(const char *s, size_t len);

/* s[0..len) is an id of min_len..ID_MAX_BYTES bytes. */
bool grammar_id_valid(const char *s, size_t len, size_t min_len);

/* Is c allowed in a label of a host name? A-Z a-z 0-9 - _ */
bool grammar_host_byte(uint8_t c);

/* The value of hexadecimal digit c (0-9 a-f A-F): 0..15, or -1. */
int grammar_hex_value(uint8_t c);

/* Is s[0..len) a host name (any bytes; nothing past len is read)? Returns
 * the length of the name without its one optional trailing dot
 * (1..GRAMMAR_HOST_MAX), or -EINVAL with *why pointing to a static
 * one-line reason that never quotes the input. */
int grammar_host_name(const char *s, size_t len, const char **why);

/* Length (1..GRAMMAR_UTF8_MAX_BYTES) of the well-formed UTF-8 character
 * at the start of s[0..len), or 0 when the bytes there are not one (a
 * stray continuation byte, an overlong form, a surrogate, a code point
 * past U+10FFFF, a sequence cut by len). len >= 1. For a NUL-terminated
 * string pass strnlen(s, GRAMMAR_UTF8_MAX_BYTES): a NUL is never a
 * continuation byte. */
size_t grammar_utf8_len(const char *s, size_t len);

/* The JSON string form of the character at the start of s[0..len)
 * (len >= 1, bounded as for grammar_utf8_len): a well-formed UTF-8
 * character as it is, '"' and '\\' after a backslash, LF CR TAB as ws
 * says, and every other control byte, DEL and each byte of invalid UTF-8
 * as \u00XX (lower-case hex; an invalid byte reads as U+00XX). Writes
 * 1..GRAMMAR_JSON_UNIT_MAX bytes to unit and returns how many; *consumed
 * is how many bytes of s they stand for (1..GRAMMAR_UTF8_MAX_BYTES).
 * The output never holds a raw byte below 0x20, DEL or an unescaped quote. */
size_t grammar_json_unit(const char *s, size_t len, enum grammar_json_ws ws,
			 char unit[GRAMMAR_JSON_UNIT_MAX], size_t *consumed);

/* Write the target host:port into buf[0..size), NUL-terminated. host is
 * 4 bytes (IPv4), 16 bytes (IPv6) or the domain's host_len bytes, copied
 * as they are (a log line escapes them). Returns the length written
 * without the NUL, -EINVAL for an unknown type, a wrong host_len or a
 * NUL in the domain, -ENOSPC when buf is too small (then buf holds no
 * usable text; nothing is cut: size >= GRAMMAR_TARGET_MAX always fits). */
int grammar_format_target(char *buf, size_t size, uint8_t addr_type, const void *host,
			  size_t host_len, uint16_t port);

#endif
