/*
 * test_socks5.c — SOCKS5 codec (src/proxy/socks5.c).
 *
 * Every parse runs on bytes placed right before an inaccessible page, so a
 * read past the end of the input faults even without ASan, and every
 * encoder writes against that page too. Every parse also checks the
 * header's promise that the output struct is untouched unless the message
 * was complete and valid.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include "guard.h"
#include "anyproxy/common.h"
#include "anyproxy/frame.h"
#include "anyproxy/socks5.h"

/* ---- fixtures ---------------------------------------------------------- */

/* Writable bytes, at least the largest message plus trailing input, then one
 * PROT_NONE page. */
#define GUARDED_BYTES (2 * SOCKS5_AUTH_MAX)

/* Longest messages, built in setup(): credentials from bytes 0x01..0xff (no
 * NUL), the domain from every byte a host name may hold. */
static uint8_t greeting_all_methods[SOCKS5_GREETING_MAX];
static uint8_t greeting_unknown_methods[SOCKS5_GREETING_MAX];
static uint8_t auth_longest[SOCKS5_AUTH_MAX];
static char longest_username[SOCKS5_NAME_MAX + 1];
static char longest_password[SOCKS5_NAME_MAX + 1];
static uint8_t request_longest[SOCKS5_REQUEST_MAX];
static char longest_domain[SOCKS5_NAME_MAX + 1];

static void fill_name(char *name, unsigned int seed)
{
	size_t i;

	for (i = 0; i < SOCKS5_NAME_MAX; i++)
		name[i] = (char)(1 + (i * seed) % UINT8_MAX); /* 1..255 */
	name[SOCKS5_NAME_MAX] = '\0';
}

/* The bytes socks5.h allows in a domain. */
static const char host_alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				    "0123456789-_.:[]";

static void fill_host(char *name)
{
	size_t i;

	for (i = 0; i < SOCKS5_NAME_MAX; i++)
		name[i] = host_alphabet[i % (sizeof(host_alphabet) - 1)];
	name[SOCKS5_NAME_MAX] = '\0';
}

static void build_longest_messages(void)
{
	size_t i;
	uint8_t *p;

	greeting_all_methods[0] = greeting_unknown_methods[0] = SOCKS5_VERSION;
	greeting_all_methods[1] = greeting_unknown_methods[1] = SOCKS5_METHODS_MAX;
	for (i = 0; i < SOCKS5_METHODS_MAX; i++) {
		greeting_all_methods[2 + i] = (uint8_t)(SOCKS5_METHODS_MAX - 1 - i); /* 254..0 */
		greeting_unknown_methods[2 + i] = (uint8_t)(0x80 + i % 0x80);
	}

	fill_name(longest_username, 7);
	fill_name(longest_password, 13);
	p = auth_longest;
	*p++ = SOCKS5_USERPASS_VERSION;
	*p++ = SOCKS5_NAME_MAX;
	memcpy(p, longest_username, SOCKS5_NAME_MAX);
	p += SOCKS5_NAME_MAX;
	*p++ = SOCKS5_NAME_MAX;
	memcpy(p, longest_password, SOCKS5_NAME_MAX);

	fill_host(longest_domain);
	p = request_longest;
	*p++ = SOCKS5_VERSION;
	*p++ = SOCKS5_CMD_CONNECT;
	*p++ = 0;
	*p++ = SOCKS5_ADDR_DOMAIN;
	*p++ = SOCKS5_NAME_MAX;
	memcpy(p, longest_domain, SOCKS5_NAME_MAX);
	p += SOCKS5_NAME_MAX;
	put_be16(p, 443);
}

static int setup(void **state)
{
	build_longest_messages();
	return guard_setup(GUARDED_BYTES);
}

static int teardown(void **state)
{
	return guard_teardown();
}

static const uint8_t *place(const void *bytes, size_t n)
{
	return guard_place(bytes, n);
}

/* Numeric bytes, or text with escapes; both give (pointer, length). */
#define WIRE(...) (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ })
#define TEXT_WIRE(s) (const uint8_t *)(s), sizeof(s) - 1

/* ---- one entry point for the three parsers ------------------------------ */

enum message_kind { GREETING, AUTH, REQUEST };

static const char *const kind_names[] = {
	[GREETING] = "greeting",
	[AUTH] = "auth",
	[REQUEST] = "request",
};

union parse_output {
	struct socks5_greeting greeting;
	struct socks5_auth auth;
	struct socks5_request request;
};

/* Fills *out with a canary first and fails the test if a parse that did not
 * consume a message wrote to it. */
#define CANARY 0xa5

static int parse(enum message_kind kind, const uint8_t *buf, size_t len, union parse_output *out)
{
	union parse_output before;
	int n = 0;

	memset(out, CANARY, sizeof(*out));
	memcpy(&before, out, sizeof(before));
	switch (kind) {
	case GREETING:
		n = socks5_parse_greeting(buf, len, &out->greeting);
		break;
	case AUTH:
		n = socks5_parse_auth(buf, len, &out->auth);
		break;
	case REQUEST:
		n = socks5_parse_request(buf, len, &out->request);
		break;
	}
	if (n <= 0 && memcmp(&before, out, sizeof(before)) != 0)
		fail_msg("%s parse returned %d but wrote its output", kind_names[kind], n);
	return n;
}

/* The whole message parses to exactly its size, alone against the guard
 * page and followed by bytes of a next message; every prefix needs more. */
static void check_framing(enum message_kind kind, const char *name, const uint8_t *bytes,
			  size_t len, union parse_output *out)
{
	static const uint8_t next_message[] = { SOCKS5_VERSION, SOCKS5_CMD_CONNECT, 0 };
	uint8_t *p;
	size_t k;
	int n;

	for (k = 0; k < len; k++) {
		n = parse(kind, place(bytes, k), k, out);
		if (n != 0)
			fail_msg("%s: prefix of %zu/%zu bytes returned %d", name, k, len, n);
	}
	p = guarded(len + sizeof(next_message));
	memcpy(p, bytes, len);
	memcpy(p + len, next_message, sizeof(next_message));
	n = parse(kind, p, len + sizeof(next_message), out);
	if (n != (int)len)
		fail_msg("%s: with trailing bytes returned %d, want %zu", name, n, len);
	n = parse(kind, place(bytes, len), len, out);
	if (n != (int)len)
		fail_msg("%s: returned %d, want %zu", name, n, len);
}

/* ---- greeting ---------------------------------------------------------- */

struct greeting_case {
	const char *name;
	const uint8_t *bytes;
	size_t len;
	bool no_auth, userpass;
};

static const struct greeting_case greeting_cases[] = {
	{ "curl with credentials: no-auth, user/pass", WIRE(0x05, 0x02, 0x00, 0x02), true, true },
	{ "curl without credentials: no-auth", WIRE(0x05, 0x01, 0x00), true, false },
	{ "user/pass only", WIRE(0x05, 0x01, 0x02), false, true },
	{ "GSSAPI only", WIRE(0x05, 0x01, 0x01), false, false },
	{ "user/pass first, then GSSAPI and no-auth", WIRE(0x05, 0x03, 0x02, 0x01, 0x00), true,
	  true },
	{ "duplicates and unknown methods", WIRE(0x05, 0x05, 0x80, 0x02, 0xff, 0x02, 0x01), false,
	  true },
	{ "255 methods, every value but 0xff", greeting_all_methods, sizeof(greeting_all_methods),
	  true, true },
	{ "255 methods, none known", greeting_unknown_methods, sizeof(greeting_unknown_methods),
	  false, false },
};

static void test_greeting_valid(void **state)
{
	union parse_output out;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(greeting_cases); i++) {
		const struct greeting_case *c = &greeting_cases[i];

		check_framing(GREETING, c->name, c->bytes, c->len, &out);
		if (out.greeting.no_auth != c->no_auth || out.greeting.userpass != c->userpass)
			fail_msg("%s: no_auth %d userpass %d, want %d %d", c->name,
				 out.greeting.no_auth, out.greeting.userpass, c->no_auth,
				 c->userpass);
	}
}

/* ---- auth -------------------------------------------------------------- */

struct auth_case {
	const char *name;
	const uint8_t *bytes;
	size_t len;
	const char *username, *password;
};

/* clang-format off */
static const struct auth_case auth_cases[] = {
	{ "RFC 1929: alice / s3cret", TEXT_WIRE("\x01\x05" "alice" "\x06" "s3cret"), "alice",
	  "s3cret" },
	{ "group username", TEXT_WIRE("\x01\x0c" "user.prod.eu" "\x04" "pass"), "user.prod.eu",
	  "pass" },
	{ "one byte each", TEXT_WIRE("\x01\x01" "u" "\x01" "p"), "u", "p" },
	{ "empty password", TEXT_WIRE("\x01\x01" "u" "\x00"), "u", "" },
	{ "UTF-8 and punctuation",
	  TEXT_WIRE("\x01\x07" "j\xc3\xbcrg.x" "\x05" "a:b@c"), "j\xc3\xbcrg.x", "a:b@c" },
	{ "255 / 255 bytes", auth_longest, sizeof(auth_longest), longest_username,
	  longest_password },
};
/* clang-format on */

static void test_auth_valid(void **state)
{
	union parse_output out;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(auth_cases); i++) {
		const struct auth_case *c = &auth_cases[i];
		const struct socks5_auth *a = &out.auth;

		check_framing(AUTH, c->name, c->bytes, c->len, &out);
		if (a->username_len != strlen(c->username) ||
		    memcmp(a->username, c->username, a->username_len + 1) != 0)
			fail_msg("%s: username differs (length %zu)", c->name, a->username_len);
		if (a->password_len != strlen(c->password) ||
		    memcmp(a->password, c->password, a->password_len + 1) != 0)
			fail_msg("%s: password differs (length %zu)", c->name, a->password_len);
	}
}

/* ---- request ----------------------------------------------------------- */

struct request_case {
	const char *name;
	const uint8_t *bytes;
	size_t len;
	uint8_t command, addr_type;
	uint8_t addr[16];
	const char *domain;
	uint16_t port;
};

/* clang-format off */
static const struct request_case request_cases[] = {
	{ "CONNECT 93.184.216.34:443", WIRE(0x05, 0x01, 0x00, 0x01, 93, 184, 216, 34, 0x01, 0xbb),
	  SOCKS5_CMD_CONNECT, SOCKS5_ADDR_IPV4, { 93, 184, 216, 34 }, "", 443 },
	{ "CONNECT [2001:db8::1]:8080",
	  WIRE(0x05, 0x01, 0x00, 0x04, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	       0x01, 0x1f, 0x90),
	  SOCKS5_CMD_CONNECT, SOCKS5_ADDR_IPV6,
	  { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01 }, "", 8080 },
	{ "CONNECT [::1]:65535",
	  WIRE(0x05, 0x01, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff,
	       0xff),
	  SOCKS5_CMD_CONNECT, SOCKS5_ADDR_IPV6, { [15] = 1 }, "", 65535 },
	{ "CONNECT example.com:80", TEXT_WIRE("\x05\x01\x00\x03\x0b" "example.com" "\x00\x50"),
	  SOCKS5_CMD_CONNECT, SOCKS5_ADDR_DOMAIN, { 0 }, "example.com", 80 },
	{ "CONNECT one-letter domain", TEXT_WIRE("\x05\x01\x00\x03\x01" "x" "\x01\x00"),
	  SOCKS5_CMD_CONNECT, SOCKS5_ADDR_DOMAIN, { 0 }, "x", 256 },
	{ "CONNECT longest domain", request_longest, sizeof(request_longest),
	  SOCKS5_CMD_CONNECT, SOCKS5_ADDR_DOMAIN, { 0 }, longest_domain, 443 },
	{ "CONNECT IPv6 literal as a domain", TEXT_WIRE("\x05\x01\x00\x03\x05" "[::1]" "\x00\x50"),
	  SOCKS5_CMD_CONNECT, SOCKS5_ADDR_DOMAIN, { 0 }, "[::1]", 80 },
	{ "CONNECT bare IPv4-mapped literal",
	  TEXT_WIRE("\x05\x01\x00\x03\x10" "::ffff:127.0.0.1" "\x00\x50"), SOCKS5_CMD_CONNECT,
	  SOCKS5_ADDR_DOMAIN, { 0 }, "::ffff:127.0.0.1", 80 },
	{ "CONNECT mixed case, '_' and a final dot",
	  TEXT_WIRE("\x05\x01\x00\x03\x0f" "My_Host-1.Corp." "\x00\x50"), SOCKS5_CMD_CONNECT,
	  SOCKS5_ADDR_DOMAIN, { 0 }, "My_Host-1.Corp.", 80 },
	{ "port 0 passed through", WIRE(0x05, 0x01, 0x00, 0x01, 10, 0, 0, 1, 0x00, 0x00),
	  SOCKS5_CMD_CONNECT, SOCKS5_ADDR_IPV4, { 10, 0, 0, 1 }, "", 0 },
	{ "BIND passed through", WIRE(0x05, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0x00, 0x15),
	  SOCKS5_CMD_BIND, SOCKS5_ADDR_IPV4, { 0 }, "", 21 },
	{ "UDP ASSOCIATE passed through",
	  TEXT_WIRE("\x05\x03\x00\x03\x09" "localhost" "\x00\x35"), SOCKS5_CMD_UDP_ASSOCIATE,
	  SOCKS5_ADDR_DOMAIN, { 0 }, "localhost", 53 },
	{ "unknown command passed through", WIRE(0x05, 0xff, 0x00, 0x01, 1, 2, 3, 4, 0, 1),
	  0xff, SOCKS5_ADDR_IPV4, { 1, 2, 3, 4 }, "", 1 },
	{ "RSV not zero accepted", WIRE(0x05, 0x01, 0xff, 0x01, 255, 255, 255, 255, 0x12, 0x34),
	  SOCKS5_CMD_CONNECT, SOCKS5_ADDR_IPV4, { 255, 255, 255, 255 }, "", 0x1234 },
};
/* clang-format on */

static void test_request_valid(void **state)
{
	union parse_output out;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(request_cases); i++) {
		const struct request_case *c = &request_cases[i];
		const struct socks5_request *r = &out.request;

		check_framing(REQUEST, c->name, c->bytes, c->len, &out);
		if (r->command != c->command || r->addr_type != c->addr_type || r->port != c->port)
			fail_msg("%s: command %u addr_type %u port %u, want %u %u %u", c->name,
				 r->command, r->addr_type, r->port, c->command, c->addr_type,
				 c->port);
		/* Unused address bytes are zero, so a whole-array compare is exact. */
		if (memcmp(r->addr, c->addr, sizeof(r->addr)) != 0)
			fail_msg("%s: addr differs", c->name);
		if (r->domain_len != strlen(c->domain) ||
		    memcmp(r->domain, c->domain, r->domain_len + 1) != 0)
			fail_msg("%s: domain \"%s\" (length %zu), want \"%s\"", c->name, r->domain,
				 r->domain_len, c->domain);
	}
}

/* ---- malformed input --------------------------------------------------- */

struct malformed_case {
	const char *name;
	enum message_kind kind;
	const uint8_t *bytes;
	size_t len;
	int err;
};

/* Each case ends at the byte that proves the error: every shorter prefix
 * needs more, and whatever follows does not change the answer. */
/* clang-format off */
static const struct malformed_case malformed_cases[] = {
	{ "greeting: SOCKS4", GREETING, WIRE(0x04), -EPROTO },
	{ "greeting: version 0", GREETING, WIRE(0x00), -EPROTO },
	{ "greeting: HTTP", GREETING, TEXT_WIRE("C"), -EPROTO },
	{ "greeting: TLS ClientHello", GREETING, WIRE(0x16), -EPROTO },
	{ "greeting: NMETHODS 0", GREETING, WIRE(0x05, 0x00), -ENOPROTOOPT },

	{ "auth: SOCKS5 version", AUTH, WIRE(0x05), -EPROTO },
	{ "auth: version 0", AUTH, WIRE(0x00), -EPROTO },
	{ "auth: ULEN 0", AUTH, WIRE(0x01, 0x00), -EPROTO },
	{ "auth: NUL inside username", AUTH, TEXT_WIRE("\x01\x03" "a\0b" "\x01" "p"), -EPROTO },
	{ "auth: NUL ends username", AUTH, TEXT_WIRE("\x01\x06" "admin\0" "\x01" "p"), -EPROTO },
	{ "auth: username only NUL", AUTH, TEXT_WIRE("\x01\x01" "\0" "\x00"), -EPROTO },
	{ "auth: NUL inside password", AUTH, TEXT_WIRE("\x01\x01" "u" "\x03" "p\0w"), -EPROTO },
	{ "auth: password only NUL", AUTH, TEXT_WIRE("\x01\x01" "u" "\x01" "\0"), -EPROTO },

	{ "request: SOCKS4", REQUEST, WIRE(0x04), -EPROTO },
	{ "request: version 0", REQUEST, WIRE(0x00), -EPROTO },
	{ "request: ATYP 0", REQUEST, WIRE(0x05, 0x01, 0x00, 0x00), -EAFNOSUPPORT },
	{ "request: ATYP 2", REQUEST, WIRE(0x05, 0x01, 0x00, 0x02), -EAFNOSUPPORT },
	{ "request: ATYP 5", REQUEST, WIRE(0x05, 0x01, 0x00, 0x05), -EAFNOSUPPORT },
	{ "request: ATYP 0xff", REQUEST, WIRE(0x05, 0x01, 0x00, 0xff), -EAFNOSUPPORT },
	{ "request: ATYP 6, unknown command", REQUEST, WIRE(0x05, 0x09, 0x00, 0x06),
	  -EAFNOSUPPORT },
	{ "request: domain length 0", REQUEST, WIRE(0x05, 0x01, 0x00, 0x03, 0x00), -EINVAL },
	/* a bad byte in the domain proves the error before the rest arrives */
	{ "request: NUL inside domain", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x0c" "evil\0"),
	  -EINVAL },
	{ "request: NUL ends domain", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x02" "a\0"), -EINVAL },
	{ "request: domain only NUL", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x01" "\0"), -EINVAL },
	{ "request: space in domain", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x07" "a "), -EINVAL },
	{ "request: control byte in domain", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x03" "\x01"),
	  -EINVAL },
	{ "request: line feed in domain", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x09" "evil\n"),
	  -EINVAL },
	{ "request: DEL in domain", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x02" "a\x7f"), -EINVAL },
	{ "request: zone id", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x09" "fe80::1%"), -EINVAL },
	{ "request: slash", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x09" "a.com/"), -EINVAL },
	{ "request: userinfo", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x09" "user@"), -EINVAL },
	{ "request: backslash", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x09" "a\\"), -EINVAL },
	{ "request: non-ASCII", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x08" "caf\xc3"), -EINVAL },
	{ "request: 0xff", REQUEST, TEXT_WIRE("\x05\x01\x00\x03\x02" "\xff"), -EINVAL },
};
/* clang-format on */

static void test_malformed(void **state)
{
	union parse_output out;
	uint8_t *p;
	size_t i, k;
	int n;

	for (i = 0; i < ARRAY_SIZE(malformed_cases); i++) {
		const struct malformed_case *c = &malformed_cases[i];

		for (k = 0; k < c->len; k++) {
			n = parse(c->kind, place(c->bytes, k), k, &out);
			if (n != 0)
				fail_msg("%s: prefix of %zu/%zu bytes returned %d", c->name, k,
					 c->len, n);
		}
		n = parse(c->kind, place(c->bytes, c->len), c->len, &out);
		if (n != c->err)
			fail_msg("%s: returned %d, want %d", c->name, n, c->err);

		/* Any continuation, here the longest a message can be. */
		p = guarded(SOCKS5_AUTH_MAX);
		memset(p, 0x41, SOCKS5_AUTH_MAX);
		memcpy(p, c->bytes, c->len);
		n = parse(c->kind, p, SOCKS5_AUTH_MAX, &out);
		if (n != c->err)
			fail_msg("%s: with more bytes returned %d, want %d", c->name, n, c->err);
	}
}

/* Every byte value in a domain: refused exactly when socks5.h says. */
static void test_domain_bytes(void **state)
{
	union parse_output out;
	unsigned int c;

	for (c = 0; c <= UINT8_MAX; c++) {
		const uint8_t msg[] = {
			0x05, 0x01, 0x00, 0x03, 3, 'a', (uint8_t)c, 'b', 0x00, 0x50
		};
		bool allowed = c != 0 && strchr(host_alphabet, (int)c) != NULL;
		int n = parse(REQUEST, place(msg, sizeof(msg)), sizeof(msg), &out);

		if (n != (allowed ? (int)sizeof(msg) : -EINVAL))
			fail_msg("byte 0x%02x in a domain: returned %d", c, n);
	}
}

static void test_reply_for_request_error(void **state)
{
	assert_int_equal(socks5_reply_for_request_error(-EPROTO), SOCKS5_REP_GENERAL_FAILURE);
	assert_int_equal(socks5_reply_for_request_error(-EAFNOSUPPORT),
			 SOCKS5_REP_ADDRESS_TYPE_NOT_SUPPORTED);
	assert_int_equal(socks5_reply_for_request_error(-EINVAL), SOCKS5_REP_HOST_UNREACHABLE);
	assert_int_equal(socks5_reply_for_request_error(-ENOMEM), SOCKS5_REP_GENERAL_FAILURE);
}

/* ---- a handshake in one buffer ------------------------------------------ */

static void test_pipelined_handshake(void **state)
{
	static const uint8_t stream[] = "\x05\x02\x00\x02"
					"\x01\x0a"
					"user.green"
					"\x02"
					"pw"
					"\x05\x01\x00\x03\x07"
					"a.b.com"
					"\x01\xbb";
	const size_t len = sizeof(stream) - 1;
	const uint8_t *p = place(stream, len);
	union parse_output out;
	size_t off = 0;
	int n;

	n = parse(GREETING, p + off, len - off, &out);
	assert_int_equal(n, 4);
	assert_true(out.greeting.userpass);
	off += (size_t)n;

	n = parse(AUTH, p + off, len - off, &out);
	assert_int_equal(n, 2 + 10 + 1 + 2);
	assert_string_equal(out.auth.username, "user.green");
	assert_string_equal(out.auth.password, "pw");
	off += (size_t)n;

	n = parse(REQUEST, p + off, len - off, &out);
	assert_int_equal(n, 5 + 7 + 2);
	assert_string_equal(out.request.domain, "a.b.com");
	assert_int_equal(out.request.port, 443);
	off += (size_t)n;
	assert_int_equal(off, len);
}

/* ---- encoders ---------------------------------------------------------- */

static void test_encode_method_and_status(void **state)
{
	static const struct {
		uint8_t method;
		uint8_t want[2];
	} methods[] = {
		{ SOCKS5_METHOD_NO_AUTH, { 0x05, 0x00 } },
		{ SOCKS5_METHOD_USERPASS, { 0x05, 0x02 } },
		{ SOCKS5_METHOD_NO_ACCEPTABLE, { 0x05, 0xff } },
	};
	uint8_t *out = guarded(2);
	size_t i;

	for (i = 0; i < ARRAY_SIZE(methods); i++) {
		assert_int_equal(socks5_encode_method(out, methods[i].method), 2);
		assert_memory_equal(out, methods[i].want, 2);
	}
	assert_int_equal(socks5_encode_auth_status(out, true), 2);
	assert_memory_equal(out, ((const uint8_t[]){ 0x01, 0x00 }), 2);
	assert_int_equal(socks5_encode_auth_status(out, false), 2);
	assert_memory_equal(out, ((const uint8_t[]){ 0x01, 0x01 }), 2);
}

enum bound_kind { BOUND_NULL, BOUND_IPV4, BOUND_IPV6, BOUND_UNIX };

struct reply_case {
	const char *name;
	uint8_t rep;
	enum bound_kind bound;
	const char *addr; /* text form for BOUND_IPV4 / BOUND_IPV6 */
	uint16_t port;
	const uint8_t *want;
	size_t want_len;
};

static const struct reply_case reply_cases[] = {
	{ "success, IPv4 192.0.2.1:1080", SOCKS5_REP_SUCCEEDED, BOUND_IPV4, "192.0.2.1", 1080,
	  WIRE(0x05, 0x00, 0x00, 0x01, 192, 0, 2, 1, 0x04, 0x38) },
	{ "success, IPv4 255.255.255.255:65535", SOCKS5_REP_SUCCEEDED, BOUND_IPV4,
	  "255.255.255.255", 65535, WIRE(0x05, 0x00, 0x00, 0x01, 255, 255, 255, 255, 0xff, 0xff) },
	{ "success, IPv6 [2001:db8::2]:443", SOCKS5_REP_SUCCEEDED, BOUND_IPV6, "2001:db8::2", 443,
	  WIRE(0x05, 0x00, 0x00, 0x04, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	       0x02, 0x01, 0xbb) },
	{ "success, IPv4-mapped IPv6 stays IPv6", SOCKS5_REP_SUCCEEDED, BOUND_IPV6,
	  "::ffff:10.0.0.1", 1,
	  WIRE(0x05, 0x00, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1, 0x00,
	       0x01) },
	{ "failure, no address", SOCKS5_REP_GENERAL_FAILURE, BOUND_NULL, NULL, 0,
	  WIRE(0x05, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 0) },
	{ "network unreachable, no address", SOCKS5_REP_NETWORK_UNREACHABLE, BOUND_NULL, NULL, 0,
	  WIRE(0x05, 0x03, 0x00, 0x01, 0, 0, 0, 0, 0, 0) },
	{ "address type not supported", SOCKS5_REP_ADDRESS_TYPE_NOT_SUPPORTED, BOUND_NULL, NULL, 0,
	  WIRE(0x05, 0x08, 0x00, 0x01, 0, 0, 0, 0, 0, 0) },
	{ "AF_UNIX address sent as none", SOCKS5_REP_SUCCEEDED, BOUND_UNIX, NULL, 0,
	  WIRE(0x05, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0) },
};

static void test_encode_reply(void **state)
{
	/* Bytes the encoder must leave alone past the reply it wrote. */
	static const uint8_t untouched = 0xee;
	size_t i, k;

	for (i = 0; i < ARRAY_SIZE(reply_cases); i++) {
		const struct reply_case *c = &reply_cases[i];
		struct sockaddr_storage ss;
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		struct sockaddr_un *sun_addr = (struct sockaddr_un *)&ss;
		const struct sockaddr *bound = (const struct sockaddr *)&ss;
		uint8_t *out = guarded(SOCKS5_REPLY_MAX);
		size_t n;

		memset(&ss, 0x77, sizeof(ss));
		switch (c->bound) {
		case BOUND_NULL:
			bound = NULL;
			break;
		case BOUND_IPV4:
			sin->sin_family = AF_INET;
			sin->sin_port = htons(c->port);
			assert_int_equal(inet_pton(AF_INET, c->addr, &sin->sin_addr), 1);
			break;
		case BOUND_IPV6:
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons(c->port);
			assert_int_equal(inet_pton(AF_INET6, c->addr, &sin6->sin6_addr), 1);
			break;
		case BOUND_UNIX:
			sun_addr->sun_family = AF_UNIX;
			strcpy(sun_addr->sun_path, "/run/x");
			break;
		}
		memset(out, untouched, SOCKS5_REPLY_MAX);
		n = socks5_encode_reply(out, c->rep, bound);
		if (n != c->want_len || memcmp(out, c->want, n) != 0)
			fail_msg("%s: wrong bytes (%zu, want %zu)", c->name, n, c->want_len);
		for (k = n; k < SOCKS5_REPLY_MAX; k++)
			if (out[k] != untouched)
				fail_msg("%s: wrote byte %zu past the reply", c->name, k);
	}
}

/* RFC 1928 section 7: the header before every datagram of a UDP ASSOCIATE. */
static void test_udp_header(void **state)
{
	static const uint8_t v4[] = { 0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 'q', 'r' };
	static const uint8_t v6[] = { 0xff, 0xff, 0, 4, 0, 0, 0, 0, 0, 0,    0,
				      0,    0,    0, 0, 0, 0, 0, 0, 1, 0x1f, 0x90 };
	static const uint8_t name[] = { 0,   0,   7,   3,   9,   'l', 'o', 'c', 'a',
					'l', 'h', 'o', 's', 't', 0,   7,   'x' };
	struct socks5_udp_header h;
	struct sockaddr_in6 from6 = { .sin6_family = AF_INET6, .sin6_port = htons(8080) };
	uint8_t out[SOCKS5_UDP_REPLY_HEADER_MAX];
	size_t k;

	assert_int_equal(socks5_parse_udp_header(place(v4, sizeof(v4)), sizeof(v4), &h), 10);
	assert_int_equal(h.frag, 0);
	assert_int_equal(h.addr_type, SOCKS5_ADDR_IPV4);
	assert_memory_equal(h.addr, ((const uint8_t[]){ 127, 0, 0, 1 }), 4);
	assert_int_equal(h.port, 53);
	/* RSV is not checked; the data may be empty */
	assert_int_equal(socks5_parse_udp_header(place(v6, sizeof(v6)), sizeof(v6), &h), 22);
	assert_int_equal(h.addr_type, SOCKS5_ADDR_IPV6);
	assert_int_equal(h.addr[15], 1);
	assert_int_equal(h.port, 8080);
	/* FRAG is reported, for the caller to drop */
	assert_int_equal(socks5_parse_udp_header(place(name, sizeof(name)), sizeof(name), &h), 16);
	assert_int_equal(h.frag, 7);
	assert_string_equal(h.domain, "localhost");
	assert_int_equal(h.port, 7);
	/* a datagram shorter than its header is malformed, at every length */
	for (k = 0; k < 10; k++)
		assert_int_equal(socks5_parse_udp_header(place(v4, k), k, &h), -EBADMSG);
	for (k = 4; k < 16; k++)
		assert_int_equal(socks5_parse_udp_header(place(name, k), k, &h), -EBADMSG);
	assert_int_equal(socks5_parse_udp_header(place((const uint8_t[]){ 0, 0, 0, 2, 1 }, 5), 5,
						 &h),
			 -EAFNOSUPPORT);
	assert_int_equal(socks5_parse_udp_header(
				 place((const uint8_t[]){ 0, 0, 0, 3, 1, '/', 0, 1 }, 8), 8, &h),
			 -EINVAL);
	/* a reply's header: RSV 0, FRAG 0, the source address */
	assert_int_equal(inet_pton(AF_INET6, "::1", &from6.sin6_addr), 1);
	assert_int_equal(socks5_encode_udp_header(out, (struct sockaddr *)&from6), 22);
	assert_memory_equal(out, ((const uint8_t[]){ 0, 0, 0, 4 }), 4);
	assert_memory_equal(out + 4, v6 + 4, 18);
}

/* The reply sent to the user parses as a request would, byte for byte in
 * the fields they share: proves the two layouts agree. */
static void test_reply_parses_back(void **state)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(8443) };
	union parse_output out;
	uint8_t buf[SOCKS5_REPLY_MAX];
	size_t n;

	assert_int_equal(inet_pton(AF_INET6, "fe80::1:2", &sin6.sin6_addr), 1);
	n = socks5_encode_reply(buf, SOCKS5_REP_SUCCEEDED, (const struct sockaddr *)&sin6);
	assert_int_equal(parse(REQUEST, place(buf, n), n, &out), (int)n);
	assert_int_equal(out.request.addr_type, SOCKS5_ADDR_IPV6);
	assert_int_equal(out.request.port, 8443);
	assert_memory_equal(out.request.addr, &sin6.sin6_addr, 16);
}

/* ---- reply codes ------------------------------------------------------- */

static const struct {
	uint8_t reason;
	uint8_t rep;
} reason_replies[] = {
	{ FRAME_OPEN_GENERAL, SOCKS5_REP_GENERAL_FAILURE },
	{ FRAME_OPEN_NOT_ALLOWED, SOCKS5_REP_NOT_ALLOWED },
	{ FRAME_OPEN_NET_UNREACHABLE, SOCKS5_REP_NETWORK_UNREACHABLE },
	{ FRAME_OPEN_HOST_UNREACHABLE, SOCKS5_REP_HOST_UNREACHABLE },
	{ FRAME_OPEN_DNS_FAILED, SOCKS5_REP_HOST_UNREACHABLE },
	{ FRAME_OPEN_REFUSED, SOCKS5_REP_CONNECTION_REFUSED },
	{ FRAME_OPEN_TIMEOUT, SOCKS5_REP_TTL_EXPIRED },
	{ FRAME_OPEN_ADDR_UNSUPPORTED, SOCKS5_REP_ADDRESS_TYPE_NOT_SUPPORTED },
	{ FRAME_OPEN_LIMIT, SOCKS5_REP_GENERAL_FAILURE },
};

/* frame.c names every reason it defines and calls the rest "UNKNOWN"
 * (test_frame checks that): a reason added there without a row here fails. */
static void test_reply_for_open_reason(void **state)
{
	unsigned int reason;
	size_t i;

	for (reason = 0; reason <= UINT8_MAX; reason++) {
		uint8_t want = SOCKS5_REP_GENERAL_FAILURE;
		bool listed = false;

		for (i = 0; i < ARRAY_SIZE(reason_replies); i++) {
			if (reason_replies[i].reason == reason) {
				want = reason_replies[i].rep;
				listed = true;
			}
		}
		if (!listed && strcmp(frame_open_reason_name((uint8_t)reason), "UNKNOWN") != 0)
			fail_msg("reason %u (%s) has no expected reply", reason,
				 frame_open_reason_name((uint8_t)reason));
		if (socks5_reply_for_open_reason((uint8_t)reason) != want)
			fail_msg("reason %u maps to 0x%02x, want 0x%02x", reason,
				 socks5_reply_for_open_reason((uint8_t)reason), want);
	}
}

static void test_reply_names(void **state)
{
	static const char *const names[] = {
		"succeeded",
		"general SOCKS server failure",
		"connection not allowed by ruleset",
		"network unreachable",
		"host unreachable",
		"connection refused",
		"TTL expired",
		"command not supported",
		"address type not supported",
	};
	unsigned int rep;

	for (rep = 0; rep <= UINT8_MAX; rep++) {
		const char *want = rep < ARRAY_SIZE(names) ? names[rep] : "unassigned";

		assert_string_equal(socks5_reply_name((uint8_t)rep), want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_valid),
		cmocka_unit_test(test_auth_valid),
		cmocka_unit_test(test_request_valid),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_domain_bytes),
		cmocka_unit_test(test_reply_for_request_error),
		cmocka_unit_test(test_pipelined_handshake),
		cmocka_unit_test(test_encode_method_and_status),
		cmocka_unit_test(test_encode_reply),
		cmocka_unit_test(test_reply_parses_back),
		cmocka_unit_test(test_reply_for_open_reason),
		cmocka_unit_test(test_reply_names),
		cmocka_unit_test(test_udp_header),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
