/*
 * grammar.h — the lexical rules every layer shares, written once.
 *
 * Ids: a client_id or a group id is 0..ID_MAX_BYTES bytes of
 * A-Z a-z 0-9 . _ : -   The config checks agents' own ids with it, the
 * gateway checks HELLO with it, and the proxies check the group of a user
 * name with it, so every group an agent can join is a group a user can
 * name, and nothing longer or stranger is ever routed.
 *
 * Pure: no I/O, no allocation.
 */
#ifndef ANYPROXY_GRAMMAR_H
#define ANYPROXY_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ID_MAX_BYTES 64

/* Is c allowed in an id? */
bool grammar_id_byte(uint8_t c);

/* How many leading bytes of s[0..len) are id bytes (len when all are). */
size_t grammar_id_span(const char *s, size_t len);

/* s[0..len) is an id of min_len..ID_MAX_BYTES bytes. */
bool grammar_id_valid(const char *s, size_t len, size_t min_len);

#endif
