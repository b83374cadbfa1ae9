/*
 * socks5.h — SOCKS5 wire codec: RFC 1928 (greeting, request, reply) and
 * RFC 1929 (username/password sub-negotiation). Pure: no I/O, no
 * allocation, no state, so the handshake state machine can feed it whatever
 * bytes have arrived so far and it is unit-tested and fuzzed on plain buffers.
 *
 * Parsers follow common.h: they return the bytes consumed (> 0) for one
 * complete message, 0 when buf holds only a prefix of one ("collect more
 * and call again"), or a negative errno value. An error is reported as soon
 * as the bytes that prove it have arrived, and never depends on bytes not
 * yet received, so a client cannot make us wait for the rest of a message
 * we will refuse anyway. Bytes after the message are not read: they belong
 * to the next message. The output struct is written only when the return
 * value is positive.
 *
 * Wire layouts (sizes in bytes):
 *
 *   greeting   VER=5 (1) | NMETHODS (1) | METHODS (NMETHODS)
 *   method     VER=5 (1) | METHOD (1)
 *   auth       VER=1 (1) | ULEN (1) | UNAME (ULEN) | PLEN (1) | PASSWD (PLEN)
 *   status     VER=1 (1) | STATUS (1)
 *   request    VER=5 (1) | CMD (1) | RSV (1) | ATYP (1) | DST.ADDR | DST.PORT (2)
 *   reply      VER=5 (1) | REP (1) | RSV=0 (1) | ATYP (1) | BND.ADDR | BND.PORT (2)
 *   UDP header RSV (2) | FRAG (1) | ATYP (1) | DST.ADDR | DST.PORT (2), then DATA:
 *              before every datagram relayed for a UDP ASSOCIATE (section 7)
 *
 * DST.ADDR / BND.ADDR: ATYP 1 = 4-byte IPv4, ATYP 4 = 16-byte IPv6, ATYP 3 =
 * one length byte then that many bytes of domain name. Ports are big-endian.
 */
#ifndef ANYPROXY_SOCKS5_H
#define ANYPROXY_SOCKS5_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SOCKS5_VERSION 0x05
#define SOCKS5_USERPASS_VERSION 0x01 /* RFC 1929 sub-negotiation version */

/* Longest username, password or domain name a one-byte length can carry. */
#define SOCKS5_NAME_MAX 255
/* Most methods a greeting can offer (NMETHODS is one byte). */
#define SOCKS5_METHODS_MAX 255

/* Largest message of each kind, in bytes: a caller that has collected this
 * many bytes without a complete message has a bug, never a slow client. */
#define SOCKS5_GREETING_MAX (2 + SOCKS5_METHODS_MAX)                    /* 257 */
#define SOCKS5_AUTH_MAX (1 + 1 + SOCKS5_NAME_MAX + 1 + SOCKS5_NAME_MAX) /* 513 */
#define SOCKS5_REQUEST_MAX (4 + 1 + SOCKS5_NAME_MAX + 2)                /* 262 */
#define SOCKS5_REPLY_MAX (4 + 16 + 2)                                   /* 22 */
#define SOCKS5_UDP_HEADER_MAX SOCKS5_REQUEST_MAX                        /* 262 */
#define SOCKS5_UDP_REPLY_HEADER_MAX SOCKS5_REPLY_MAX                    /* 22 */

/* Authentication methods (RFC 1928 section 3). */
enum socks5_method {
	SOCKS5_METHOD_NO_AUTH = 0x00,
	SOCKS5_METHOD_GSSAPI = 0x01,
	SOCKS5_METHOD_USERPASS = 0x02,
	SOCKS5_METHOD_NO_ACCEPTABLE = 0xff,
};

/* RFC 1929 STATUS: 0 is success, any other value is failure. */
enum socks5_auth_status {
	SOCKS5_AUTH_SUCCESS = 0x00,
	SOCKS5_AUTH_FAILURE = 0x01,
};

/* Request commands (RFC 1928 section 4). */
enum socks5_command {
	SOCKS5_CMD_CONNECT = 0x01,
	SOCKS5_CMD_BIND = 0x02,
	SOCKS5_CMD_UDP_ASSOCIATE = 0x03,
};

/* Address types; the same values as enum frame_addr_type. */
enum socks5_addr_type {
	SOCKS5_ADDR_IPV4 = 0x01,
	SOCKS5_ADDR_DOMAIN = 0x03,
	SOCKS5_ADDR_IPV6 = 0x04,
};

/* Reply codes (RFC 1928 section 6); 0x09..0xff are unassigned. */
enum socks5_reply {
	SOCKS5_REP_SUCCEEDED = 0x00,
	SOCKS5_REP_GENERAL_FAILURE = 0x01,
	SOCKS5_REP_NOT_ALLOWED = 0x02,
	SOCKS5_REP_NETWORK_UNREACHABLE = 0x03,
	SOCKS5_REP_HOST_UNREACHABLE = 0x04,
	SOCKS5_REP_CONNECTION_REFUSED = 0x05,
	SOCKS5_REP_TTL_EXPIRED = 0x06,
	SOCKS5_REP_COMMAND_NOT_SUPPORTED = 0x07,
	SOCKS5_REP_ADDRESS_TYPE_NOT_SUPPORTED = 0x08,
};

/* Which of the methods we support the client offered. */
struct socks5_greeting {
	bool no_auth;  /* SOCKS5_METHOD_NO_AUTH */
	bool userpass; /* SOCKS5_METHOD_USERPASS */
};

/*
 * Credentials copied out of the input, NUL-terminated, neither containing a
 * NUL byte, so they can be compared and logged as C strings. The password
 * is a secret: the caller owns this struct and wipes it (explicit_bzero)
 * as soon as the check is done, and never logs the password.
 */
struct socks5_auth {
	size_t username_len; /* 1..SOCKS5_NAME_MAX */
	size_t password_len; /* 0..SOCKS5_NAME_MAX */
	char username[SOCKS5_NAME_MAX + 1];
	char password[SOCKS5_NAME_MAX + 1];
};

struct socks5_request {
	uint8_t command;   /* any value; the caller refuses what it does not do */
	uint8_t addr_type; /* enum socks5_addr_type */
	uint16_t port;     /* host byte order; 0 is passed through */
	uint8_t addr[16];  /* IPv4 in the first 4 bytes, or IPv6; zero for a domain */
	size_t domain_len; /* SOCKS5_ADDR_DOMAIN: 1..SOCKS5_NAME_MAX, else 0 */
	char domain[SOCKS5_NAME_MAX + 1]; /* NUL-terminated, host-name bytes only; "" if none */
};

/* The header of one datagram of a UDP ASSOCIATE (destination, or the
 * source of a reply). */
struct socks5_udp_header {
	uint8_t frag;      /* 0: a whole datagram; others are fragments */
	uint8_t addr_type; /* enum socks5_addr_type */
	uint16_t port;     /* host byte order; 0 is passed through */
	uint8_t addr[16];
	size_t domain_len;
	char domain[SOCKS5_NAME_MAX + 1]; /* as in struct socks5_request */
};

/*
 * Method selection. -EPROTO: VER is not 5 (not a SOCKS5 client: there is no
 * reply it would understand). -ENOPROTOOPT: NMETHODS is 0, a SOCKS5 client
 * offering no method (answer SOCKS5_METHOD_NO_ACCEPTABLE). Methods other
 * than no-auth and username/password are ignored; duplicates are harmless.
 */
int socks5_parse_greeting(const uint8_t *buf, size_t len, struct socks5_greeting *g);

/*
 * RFC 1929 credentials. -EPROTO: VER is not 1, ULEN is 0, or the username
 * or password contains a NUL byte. An empty password (PLEN 0) is accepted
 * although the RFC says 1..255: some clients send one, and the password
 * check refuses it anyway unless one is configured empty.
 */
int socks5_parse_auth(const uint8_t *buf, size_t len, struct socks5_auth *a);

/*
 * CONNECT / BIND / UDP ASSOCIATE request. Errors, each answered with its own
 * reply code (socks5_reply_for_request_error):
 *   -EPROTO        VER is not 5;
 *   -EAFNOSUPPORT  ATYP is none of 1, 3, 4 — reported as soon as the ATYP
 *                  byte arrives (the rest of such a message has no known
 *                  length);
 *   -EINVAL        the domain is no host name: length 0, or a byte no host
 *                  name or IPv6 literal holds (anything but letters, digits,
 *                  '-', '_', '.', ':', '[' and ']'; so no NUL, control byte,
 *                  space, '%', '/', '@' or non-ASCII byte) — reported as soon
 *                  as that byte arrives. The agent's canonicalisation
 *                  (docs/acl.md) still judges the names that pass.
 * RSV is not checked: the RFC only calls it reserved and refusing it would
 * gain nothing. CMD and port are passed through for the caller to judge.
 */
int socks5_parse_request(const uint8_t *buf, size_t len, struct socks5_request *r);

/*
 * The REP code for a socks5_parse_request error: SOCKS5_REP_ADDRESS_TYPE_
 * NOT_SUPPORTED for -EAFNOSUPPORT, SOCKS5_REP_HOST_UNREACHABLE for -EINVAL
 * (what the agent answers for a name that does not canonicalise, so a user
 * gets the same code wherever the name is refused), otherwise
 * SOCKS5_REP_GENERAL_FAILURE.
 */
uint8_t socks5_reply_for_request_error(int err);

/*
 * The UDP request header at the start of one datagram buf[0..len) (a
 * datagram is always whole). Returns the header's size (the data follows
 * it, maybe empty), -EBADMSG when the datagram is shorter than its header,
 * or -EAFNOSUPPORT / -EINVAL for the address as socks5_parse_request.
 * RSV is not checked; FRAG is returned for the caller to judge (we drop
 * fragments: RFC 1928 lets a server without reassembly do so).
 */
int socks5_parse_udp_header(const uint8_t *buf, size_t len, struct socks5_udp_header *h);
/* The header of a reply from `from` (AF_INET or AF_INET6) into out (room
 * for SOCKS5_UDP_REPLY_HEADER_MAX bytes): RSV 0, FRAG 0, the address.
 * Returns 10 (IPv4) or 22 (IPv6). */
size_t socks5_encode_udp_header(uint8_t *out, const struct sockaddr *from);

/* Method selection reply: VER 5, METHOD. Returns 2. */
size_t socks5_encode_method(uint8_t out[2], uint8_t method);

/* RFC 1929 status reply: VER 1, STATUS 0 (ok) or 1. Returns 2. */
size_t socks5_encode_auth_status(uint8_t out[2], bool ok);

/*
 * Request reply into out (room for SOCKS5_REPLY_MAX bytes). bound is the
 * address the agent's socket got (AF_INET or AF_INET6); NULL, or any other
 * family, is sent as IPv4 0.0.0.0 port 0, what a reply that carries no
 * address (every failure, and a success whose address we do not know) uses.
 * Returns the reply size: 10 for IPv4, 22 for IPv6.
 */
size_t socks5_encode_reply(uint8_t *out, uint8_t rep, const struct sockaddr *bound);

/*
 * The reply code for a tunnel OPEN_FAIL / RST reason (enum
 * frame_open_reason). DNS failure is "host unreachable", the closest code
 * SOCKS5 has; unknown reasons are a general failure. Never returns
 * SOCKS5_REP_SUCCEEDED.
 */
uint8_t socks5_reply_for_open_reason(uint8_t reason);

/* RFC 1928's text for a reply code, "unassigned" for 0x09..0xff. */
const char *socks5_reply_name(uint8_t rep);

#endif
