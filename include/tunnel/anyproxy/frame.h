/*
 * frame.h — tunnel protocol v1: a pure codec (no I/O, no allocation).
 * The byte layout is written down in docs/protocol.md.
 *
 * Every frame is an 8-byte header followed by `length` payload bytes:
 *
 *   0       1       2       3       4       5       6       7
 *   +-------+-------+-------+-------+-------+-------+-------+-------+
 *   | type  | flags | length (BE16) |        stream id (BE32)       |
 *   +-------+-------+-------+-------+-------+-------+-------+-------+
 *
 * A whole frame never exceeds FRAME_MAX_SIZE (one TLS record's plaintext),
 * so a DATA frame maps to one record. Flags are reserved and must be 0.
 * Connection-level frames (HELLO, HELLO_OK, ERROR, PING, PONG, GOAWAY) carry
 * stream id 0; stream frames carry a non-zero id.
 */
#ifndef ANYPROXY_FRAME_H
#define ANYPROXY_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "anyproxy/grammar.h"

#define FRAME_VERSION 1
#define FRAME_HEADER_SIZE 8
#define FRAME_MAX_SIZE 16384
#define FRAME_MAX_PAYLOAD (FRAME_MAX_SIZE - FRAME_HEADER_SIZE)
#define FRAME_MAX_ID_LEN ID_MAX_BYTES /* client_id, group_id */
#define FRAME_MAX_TEXT_LEN 255        /* user names, passwords, messages, domains */

enum frame_type {
	FRAME_HELLO = 0x01,
	FRAME_HELLO_OK = 0x02,
	FRAME_ERROR = 0x03,
	FRAME_OPEN = 0x10,
	FRAME_OPEN_OK = 0x11,
	FRAME_OPEN_FAIL = 0x12,
	FRAME_DATA = 0x13,
	FRAME_WINDOW = 0x14,
	FRAME_FIN = 0x15,
	FRAME_RST = 0x16,
	FRAME_PING = 0x20,
	FRAME_PONG = 0x21,
	FRAME_GOAWAY = 0x22,
	/* datagrams (UDP forwards, SOCKS5 UDP ASSOCIATE): only on a tunnel
	 * where both HELLO and HELLO_OK set FRAME_CAP_DATAGRAM */
	FRAME_DGRAM_OPEN = 0x30,
	FRAME_DGRAM = 0x31,
	FRAME_DGRAM_CLOSE = 0x32,
};
#define FRAME_TYPE_MAX FRAME_DGRAM_CLOSE

/* Capability bits of HELLO and HELLO_OK: in use on a tunnel only when both
 * set them. */
#define FRAME_CAP_DATAGRAM (1u << 0) /* DGRAM_OPEN, DGRAM, DGRAM_CLOSE */

/* The longest address part of a DGRAM (atyp, a str8 domain, port), and so
 * the most datagram bytes every DGRAM can carry whatever its address. A
 * longer datagram is not sent (dropped and counted by its sender). */
#define FRAME_DGRAM_ADDR_MAX (1 + 1 + FRAME_MAX_TEXT_LEN + 2)
#define FRAME_DGRAM_MAX_DATA (FRAME_MAX_PAYLOAD - FRAME_DGRAM_ADDR_MAX)

/* ERROR and GOAWAY codes */
enum frame_error_code {
	FRAME_ERR_NONE = 0,
	FRAME_ERR_AUTH = 1,      /* wrong gateway credentials */
	FRAME_ERR_VERSION = 2,   /* unsupported protocol version */
	FRAME_ERR_BAD_HELLO = 3, /* HELLO fields invalid */
	FRAME_ERR_REPLACED = 4,  /* another process took this client_id */
	FRAME_ERR_PROTOCOL = 5,  /* malformed or unexpected frame */
	FRAME_ERR_LIMIT = 6,     /* a configured limit was reached */
	FRAME_ERR_SHUTDOWN = 7,  /* peer is stopping (GOAWAY) */
	FRAME_ERR_TIMEOUT = 8,   /* handshake or liveness deadline */
	FRAME_ERR_ID_IN_USE = 9, /* client_id held by another group or credential */
};

/* OPEN_FAIL and RST reasons; values follow SOCKS5 REP codes where one exists. */
enum frame_open_reason {
	FRAME_OPEN_GENERAL = 1,
	FRAME_OPEN_NOT_ALLOWED = 2,
	FRAME_OPEN_NET_UNREACHABLE = 3,
	FRAME_OPEN_HOST_UNREACHABLE = 4,
	FRAME_OPEN_REFUSED = 5,
	FRAME_OPEN_TIMEOUT = 6,
	FRAME_OPEN_ADDR_UNSUPPORTED = 8,
	FRAME_OPEN_DNS_FAILED = 9,
	FRAME_OPEN_LIMIT = 10, /* a configured limit was reached (gateway or agent) */
};

/* Target address kinds in OPEN (SOCKS5 ATYP values). */
enum frame_addr_type {
	FRAME_ADDR_IPV4 = GRAMMAR_ADDR_IPV4,
	FRAME_ADDR_DOMAIN = GRAMMAR_ADDR_DOMAIN,
	FRAME_ADDR_IPV6 = GRAMMAR_ADDR_IPV6,
};

/* A length-delimited byte string inside the decoded buffer (not NUL-terminated). */
struct frame_str {
	const uint8_t *ptr;
	size_t len;
};

struct frame {
	uint8_t type;
	uint32_t stream_id;
	union {
		struct {
			uint8_t version;
			uint16_t replica;
			uint32_t capabilities;
			uint64_t instance; /* random per agent process */
			struct frame_str client_id, group_id, username, password;
		} hello;
		struct {
			uint8_t version;
			uint32_t capabilities;
			uint32_t ping_interval_ms;
			uint32_t stream_window; /* initial per-stream credit, bytes */
		} hello_ok;
		struct {
			uint16_t code;
			struct frame_str message;
		} error; /* ERROR and GOAWAY */
		struct {
			uint32_t window; /* sender's receive window for this stream */
			uint8_t addr_type;
			uint8_t addr[16];        /* IPv4 (4) or IPv6 (16) bytes */
			struct frame_str domain; /* FRAME_ADDR_DOMAIN */
			uint16_t port;
			struct frame_str user, group; /* for the agent's logs */
		} open;
		struct {
			uint32_t window;
		} open_ok;
		struct {
			uint8_t reason;
			struct frame_str message;
		} open_fail;
		struct {
			const uint8_t *ptr;
			size_t len;
		} data;
		struct {
			uint32_t increment;
		} window;
		struct {
			uint8_t reason;
		} rst;
		struct {
			uint8_t opaque[8];
		} ping; /* PING and PONG */
		struct {
			struct frame_str user, group; /* for the agent's logs */
		} dgram_open;
		struct {
			/* gateway -> agent: the destination; agent -> gateway:
			 * the source of the reply */
			uint8_t addr_type;
			uint8_t addr[16];
			struct frame_str domain; /* FRAME_ADDR_DOMAIN */
			uint16_t port;           /* 1..65535 */
			struct frame_str data;   /* 0..FRAME_DGRAM_MAX_DATA bytes */
		} dgram;
		struct {
			uint8_t reason; /* enum frame_open_reason */
		} dgram_close;
	};
};

/*
 * Decode one frame from buf. Returns the bytes consumed (> 0), 0 when buf
 * does not yet hold a whole frame, or -EBADMSG (malformed), -EMSGSIZE (length
 * over FRAME_MAX_PAYLOAD) or -EPROTONOSUPPORT (unknown type). On error *why
 * (if not NULL) points to a static one-line reason. Pointers in f point
 * into buf and live as long as buf does.
 */
ssize_t frame_decode(const uint8_t *buf, size_t len, struct frame *f, const char **why);

/*
 * Encode f into buf (capacity cap). For DATA, f->data.ptr/len are copied
 * after the header. Returns the total frame size or -ENOSPC / -EINVAL
 * (a field over its limit). Never writes past cap.
 */
ssize_t frame_encode(uint8_t *buf, size_t cap, const struct frame *f);

/* Write only a DATA header for `len` payload bytes that the caller places
 * right after it (zero-copy relay). len must be 1..FRAME_MAX_PAYLOAD. */
void frame_put_data_header(uint8_t *buf, uint32_t stream_id, uint16_t len);

const char *frame_type_name(uint8_t type);
const char *frame_error_name(uint16_t code);
const char *frame_open_reason_name(uint8_t reason);

/* How an OPEN ended, as the metrics count it (both programs): a few
 * outcomes an operator tells apart, each OPEN_FAIL reason falling in one. */
enum frame_open_result {
	FRAME_RESULT_OK,          /* reason 0: connected */
	FRAME_RESULT_REFUSED,     /* FRAME_OPEN_REFUSED */
	FRAME_RESULT_DNS,         /* FRAME_OPEN_DNS_FAILED */
	FRAME_RESULT_TIMEOUT,     /* FRAME_OPEN_TIMEOUT */
	FRAME_RESULT_DENIED,      /* FRAME_OPEN_NOT_ALLOWED: the agent's host rules */
	FRAME_RESULT_NO_AGENT,    /* FRAME_OPEN_NET_UNREACHABLE: no agent for the group */
	FRAME_RESULT_UNREACHABLE, /* FRAME_OPEN_HOST_UNREACHABLE */
	FRAME_RESULT_LIMIT,       /* FRAME_OPEN_LIMIT */
	FRAME_RESULT_ERROR,       /* every other reason */
	FRAME_NRESULTS
};
enum frame_open_result frame_open_result(uint8_t reason);
/* "ok", "refused", "dns", "timeout", "denied", "no_agent", "unreachable",
 * "limit", "error": the metrics' result label. */
const char *frame_open_result_name(enum frame_open_result result);

#endif
