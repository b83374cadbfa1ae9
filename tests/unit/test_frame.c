/*
 * test_frame.c — tunnel frame codec (src/tunnel/frame.c).
 *
 * Every decode runs on bytes placed right before an inaccessible page, so a
 * read past the end of the input faults even without ASan; every encode with
 * a short capacity writes against that page too.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/frame.h"
#include "guard.h"

/* ---- fixtures ---------------------------------------------------------- */

/* Distinct, non-trivial bytes that string and DATA fields are cut from. */
static uint8_t pattern[FRAME_MAX_PAYLOAD + 1];

static int setup(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 131 + 17);
	return guard_setup(FRAME_MAX_SIZE);
}

static int teardown(void **state)
{
	return guard_teardown();
}

static const uint8_t *place(const void *bytes, size_t n)
{
	return guard_place(bytes, n);
}

/* n bytes of the pattern from offset off (off + n <= sizeof(pattern)). */
static struct frame_str span(size_t off, size_t n)
{
	return (struct frame_str){ pattern + off, n };
}

static struct frame_str text(const char *s)
{
	return (struct frame_str){ (const uint8_t *)s, strlen(s) };
}

static void check_str(const char *name, const char *field, struct frame_str want,
		      struct frame_str got)
{
	if (want.len != got.len)
		fail_msg("%s: %s length %zu, want %zu", name, field, got.len, want.len);
	if (want.len && memcmp(want.ptr, got.ptr, want.len) != 0)
		fail_msg("%s: %s bytes differ", name, field);
}

#define CHECK_FIELD(name, want, got, field)                                 \
	do {                                                                \
		if ((want)->field != (got)->field)                          \
			fail_msg("%s: " #field " is %llu, want %llu", name, \
				 (unsigned long long)(got)->field,          \
				 (unsigned long long)(want)->field);        \
	} while (0)
#define CHECK_STR(name, want, got, field) check_str(name, #field, (want)->field, (got)->field)

/* Field-by-field equality of the members that `want->type` defines. */
static void check_frame(const char *name, const struct frame *want, const struct frame *got)
{
	CHECK_FIELD(name, want, got, type);
	CHECK_FIELD(name, want, got, stream_id);
	switch (want->type) {
	case FRAME_HELLO:
		CHECK_FIELD(name, want, got, hello.version);
		CHECK_FIELD(name, want, got, hello.replica);
		CHECK_FIELD(name, want, got, hello.capabilities);
		CHECK_FIELD(name, want, got, hello.instance);
		CHECK_STR(name, want, got, hello.client_id);
		CHECK_STR(name, want, got, hello.group_id);
		CHECK_STR(name, want, got, hello.username);
		CHECK_STR(name, want, got, hello.password);
		break;
	case FRAME_HELLO_OK:
		CHECK_FIELD(name, want, got, hello_ok.version);
		CHECK_FIELD(name, want, got, hello_ok.capabilities);
		CHECK_FIELD(name, want, got, hello_ok.ping_interval_ms);
		CHECK_FIELD(name, want, got, hello_ok.stream_window);
		break;
	case FRAME_ERROR:
	case FRAME_GOAWAY:
		CHECK_FIELD(name, want, got, error.code);
		CHECK_STR(name, want, got, error.message);
		break;
	case FRAME_OPEN:
		CHECK_FIELD(name, want, got, open.window);
		CHECK_FIELD(name, want, got, open.addr_type);
		if (want->open.addr_type == FRAME_ADDR_DOMAIN)
			CHECK_STR(name, want, got, open.domain);
		else if (memcmp(want->open.addr, got->open.addr,
				want->open.addr_type == FRAME_ADDR_IPV4 ? 4 : 16) != 0)
			fail_msg("%s: open.addr differs", name);
		CHECK_FIELD(name, want, got, open.port);
		CHECK_STR(name, want, got, open.user);
		CHECK_STR(name, want, got, open.group);
		break;
	case FRAME_OPEN_OK:
		CHECK_FIELD(name, want, got, open_ok.window);
		break;
	case FRAME_OPEN_FAIL:
		CHECK_FIELD(name, want, got, open_fail.reason);
		CHECK_STR(name, want, got, open_fail.message);
		break;
	case FRAME_DATA:
		check_str(name, "data", (struct frame_str){ want->data.ptr, want->data.len },
			  (struct frame_str){ got->data.ptr, got->data.len });
		break;
	case FRAME_WINDOW:
		CHECK_FIELD(name, want, got, window.increment);
		break;
	case FRAME_FIN:
		break;
	case FRAME_RST:
		CHECK_FIELD(name, want, got, rst.reason);
		break;
	case FRAME_PING:
	case FRAME_PONG:
		if (memcmp(want->ping.opaque, got->ping.opaque, sizeof(want->ping.opaque)) != 0)
			fail_msg("%s: ping.opaque differs", name);
		break;
	case FRAME_DGRAM_OPEN:
		CHECK_STR(name, want, got, dgram_open.user);
		CHECK_STR(name, want, got, dgram_open.group);
		break;
	case FRAME_DGRAM:
		CHECK_FIELD(name, want, got, dgram.addr_type);
		if (want->dgram.addr_type == FRAME_ADDR_DOMAIN)
			CHECK_STR(name, want, got, dgram.domain);
		else if (memcmp(want->dgram.addr, got->dgram.addr,
				want->dgram.addr_type == FRAME_ADDR_IPV4 ? 4 : 16) != 0)
			fail_msg("%s: dgram.addr differs", name);
		CHECK_FIELD(name, want, got, dgram.port);
		CHECK_STR(name, want, got, dgram.data);
		break;
	case FRAME_DGRAM_CLOSE:
		CHECK_FIELD(name, want, got, dgram_close.reason);
		break;
	default:
		fail_msg("%s: no comparison for type 0x%02x", name, want->type);
	}
}

/* ---- valid frames with edge values --------------------------------------- */

struct valid_case {
	const char *name;
	struct frame f;
	size_t size; /* whole frame on the wire */
};

/* Payload sizes spelled out per the layouts in docs/protocol.md. */
#define HELLO_MAX_WIRE (FRAME_HEADER_SIZE + 16 + 2 * (1 + FRAME_MAX_ID_LEN) + 2 * (1 + 255))
#define OPEN_MAX_WIRE \
	(FRAME_HEADER_SIZE + 4 + 1 + (1 + 255) + 2 + (1 + 255) + (1 + FRAME_MAX_ID_LEN))

/* Built at run time: the string fields point into `pattern`. */
static size_t valid_cases(struct valid_case *c, size_t cap)
{
	size_t n = 0;

#define ADD(label, wire_size, ...)                                    \
	do {                                                          \
		assert_true(n < cap);                                 \
		c[n++] = (struct valid_case){ .name = label,          \
					      .size = wire_size,      \
					      .f = { __VA_ARGS__ } }; \
	} while (0)

	ADD("HELLO max", HELLO_MAX_WIRE, .type = FRAME_HELLO, .stream_id = 0,
	    .hello = { .version = FRAME_VERSION,
		       .replica = UINT16_MAX,
		       .capabilities = UINT32_MAX,
		       .instance = UINT64_MAX,
		       .client_id = span(0, FRAME_MAX_ID_LEN),
		       .group_id = span(100, FRAME_MAX_ID_LEN),
		       .username = span(200, 255),
		       .password = span(500, 255) });
	ADD("HELLO min, empty group", FRAME_HEADER_SIZE + 21, .type = FRAME_HELLO,
	    .hello = { .version = 0, .client_id = text("a") });
	ADD("HELLO typical", FRAME_HEADER_SIZE + 16 + 7 + 8 + 6 + 7, .type = FRAME_HELLO,
	    .hello = { .version = FRAME_VERSION,
		       .replica = 3,
		       .instance = 0x1122334455667788,
		       .client_id = text("edge-1"),
		       .group_id = text("prod.eu"),
		       .username = text("agent"),
		       .password = text("s3cret") });
	ADD("HELLO_OK", FRAME_HEADER_SIZE + 16, .type = FRAME_HELLO_OK,
	    .hello_ok = { .version = FRAME_VERSION,
			  .capabilities = 0x80000001,
			  .ping_interval_ms = 15000,
			  .stream_window = 256 * 1024 });
	ADD("HELLO_OK max", FRAME_HEADER_SIZE + 16, .type = FRAME_HELLO_OK,
	    .hello_ok = { .version = UINT8_MAX,
			  .capabilities = UINT32_MAX,
			  .ping_interval_ms = UINT32_MAX,
			  .stream_window = UINT32_MAX });
	ADD("ERROR empty message", FRAME_HEADER_SIZE + 3, .type = FRAME_ERROR,
	    .error = { .code = FRAME_ERR_AUTH });
	ADD("ERROR max message", FRAME_HEADER_SIZE + 3 + 255, .type = FRAME_ERROR,
	    .error = { .code = UINT16_MAX, .message = span(7, 255) });
	ADD("GOAWAY", FRAME_HEADER_SIZE + 3 + 8, .type = FRAME_GOAWAY,
	    .error = { .code = FRAME_ERR_SHUTDOWN, .message = text("stopping") });
	ADD("OPEN IPv4 port 1", FRAME_HEADER_SIZE + 4 + 1 + 4 + 2 + 1 + 1, .type = FRAME_OPEN,
	    .stream_id = 1,
	    .open = { .window = 0,
		      .addr_type = FRAME_ADDR_IPV4,
		      .addr = { 192, 0, 2, 1 },
		      .port = 1 });
	ADD("OPEN IPv6 port 65535", FRAME_HEADER_SIZE + 4 + 1 + 16 + 2 + 6 + 3, .type = FRAME_OPEN,
	    .stream_id = UINT32_MAX,
	    .open = { .window = UINT32_MAX,
		      .addr_type = FRAME_ADDR_IPV6,
		      .addr = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
		      .port = UINT16_MAX,
		      .user = text("alice"),
		      .group = text("eu") });
	ADD("OPEN domain min", FRAME_HEADER_SIZE + 4 + 1 + 2 + 2 + 1 + 1, .type = FRAME_OPEN,
	    .stream_id = 2,
	    .open = { .window = 256 * 1024,
		      .addr_type = FRAME_ADDR_DOMAIN,
		      .domain = text("x"),
		      .port = 80 });
	ADD("OPEN max", OPEN_MAX_WIRE, .type = FRAME_OPEN, .stream_id = 3,
	    .open = { .window = 1,
		      .addr_type = FRAME_ADDR_DOMAIN,
		      .domain = span(11, 255),
		      .port = 443,
		      .user = span(300, 255),
		      .group = span(600, FRAME_MAX_ID_LEN) });
	ADD("OPEN_OK", FRAME_HEADER_SIZE + 4, .type = FRAME_OPEN_OK, .stream_id = 5,
	    .open_ok = { .window = 65536 });
	ADD("OPEN_FAIL empty message", FRAME_HEADER_SIZE + 2, .type = FRAME_OPEN_FAIL,
	    .stream_id = 7, .open_fail = { .reason = FRAME_OPEN_REFUSED });
	ADD("OPEN_FAIL max message", FRAME_HEADER_SIZE + 2 + 255, .type = FRAME_OPEN_FAIL,
	    .stream_id = 7, .open_fail = { .reason = UINT8_MAX, .message = span(40, 255) });
	ADD("DATA 1 byte", FRAME_HEADER_SIZE + 1, .type = FRAME_DATA, .stream_id = 9,
	    .data = { pattern, 1 });
	ADD("DATA max", FRAME_MAX_SIZE, .type = FRAME_DATA, .stream_id = 9,
	    .data = { pattern, FRAME_MAX_PAYLOAD });
	ADD("WINDOW stream", FRAME_HEADER_SIZE + 4, .type = FRAME_WINDOW, .stream_id = 11,
	    .window = { .increment = 1 });
	ADD("WINDOW tunnel", FRAME_HEADER_SIZE + 4, .type = FRAME_WINDOW, .stream_id = 0,
	    .window = { .increment = UINT32_MAX });
	ADD("FIN", FRAME_HEADER_SIZE, .type = FRAME_FIN, .stream_id = 13);
	ADD("RST", FRAME_HEADER_SIZE + 1, .type = FRAME_RST, .stream_id = 15,
	    .rst = { .reason = FRAME_OPEN_GENERAL });
	ADD("PING", FRAME_HEADER_SIZE + 8, .type = FRAME_PING,
	    .ping = { .opaque = { 1, 2, 3, 4, 5, 6, 7, 8 } });
	ADD("PONG", FRAME_HEADER_SIZE + 8, .type = FRAME_PONG,
	    .ping = { .opaque = { 0xff, 0, 0xff, 0, 0xff, 0, 0xff, 0 } });
	ADD("DGRAM_OPEN empty", FRAME_HEADER_SIZE + 2, .type = FRAME_DGRAM_OPEN, .stream_id = 1);
	ADD("DGRAM_OPEN max", FRAME_HEADER_SIZE + 1 + 255 + 1 + FRAME_MAX_ID_LEN,
	    .type = FRAME_DGRAM_OPEN, .stream_id = UINT32_MAX,
	    .dgram_open = { .user = span(3, 255), .group = span(9, FRAME_MAX_ID_LEN) });
	ADD("DGRAM IPv4 empty datagram", FRAME_HEADER_SIZE + 1 + 4 + 2, .type = FRAME_DGRAM,
	    .stream_id = 2,
	    .dgram = { .addr_type = FRAME_ADDR_IPV4, .addr = { 127, 0, 0, 1 }, .port = 53 });
	ADD("DGRAM IPv6", FRAME_HEADER_SIZE + 1 + 16 + 2 + 100, .type = FRAME_DGRAM, .stream_id = 3,
	    .dgram = { .addr_type = FRAME_ADDR_IPV6,
		       .addr = { [15] = 1 },
		       .port = UINT16_MAX,
		       .data = span(0, 100) });
	ADD("DGRAM domain, largest datagram", FRAME_MAX_SIZE, .type = FRAME_DGRAM, .stream_id = 4,
	    .dgram = { .addr_type = FRAME_ADDR_DOMAIN,
		       .domain = span(1, 255),
		       .port = 1,
		       .data = span(0, FRAME_DGRAM_MAX_DATA) });
	ADD("DGRAM_CLOSE", FRAME_HEADER_SIZE + 1, .type = FRAME_DGRAM_CLOSE, .stream_id = 5,
	    .dgram_close = { .reason = FRAME_OPEN_LIMIT });
#undef ADD
	return n;
}

#define MAX_VALID_CASES 40

static void test_round_trip(void **state)
{
	struct valid_case cases[MAX_VALID_CASES];
	size_t count = valid_cases(cases, ARRAY_SIZE(cases));
	uint8_t buf[FRAME_MAX_SIZE + 16];
	const char *why;
	struct frame got;
	size_t i;

	for (i = 0; i < count; i++) {
		const struct valid_case *c = &cases[i];
		ssize_t n = frame_encode(buf, sizeof(buf), &c->f);
		ssize_t d;

		if (n != (ssize_t)c->size)
			fail_msg("%s: encoded %zd bytes, want %zu", c->name, n, c->size);
		assert_int_equal(buf[0], c->f.type);
		assert_int_equal(buf[1], 0);
		assert_int_equal(get_be16(buf + 2), c->size - FRAME_HEADER_SIZE);
		assert_int_equal(get_be32(buf + 4), c->f.stream_id);

		why = NULL;
		d = frame_decode(place(buf, (size_t)n), (size_t)n, &got, &why);
		if (d != n)
			fail_msg("%s: decode returned %zd (%s)", c->name, d, why ? why : "-");
		check_frame(c->name, &c->f, &got);

		/* Bytes after the frame belong to the next one. */
		memset(buf + n, 0x5a, 16);
		d = frame_decode(buf, (size_t)n + 16, &got, NULL);
		if (d != n)
			fail_msg("%s: decode with trailing input returned %zd", c->name, d);
	}
}

static void test_need_more_for_every_prefix(void **state)
{
	struct valid_case cases[MAX_VALID_CASES];
	size_t count = valid_cases(cases, ARRAY_SIZE(cases));
	uint8_t buf[FRAME_MAX_SIZE];
	struct frame got;
	size_t i, k;

	for (i = 0; i < count; i++) {
		ssize_t n = frame_encode(buf, sizeof(buf), &cases[i].f);

		assert_true(n > 0);
		for (k = 0; k < (size_t)n; k++) {
			const char *why = NULL;
			ssize_t d = frame_decode(place(buf, k), k, &got, &why);

			if (d != 0)
				fail_msg("%s: prefix of %zu/%zd bytes returned %zd (%s)",
					 cases[i].name, k, n, d, why ? why : "-");
		}
	}
}

static void test_encode_no_space(void **state)
{
	struct valid_case cases[MAX_VALID_CASES];
	size_t count = valid_cases(cases, ARRAY_SIZE(cases));
	size_t i, cap;

	for (i = 0; i < count; i++) {
		for (cap = 0; cap < cases[i].size; cap++) {
			/* Any write past cap hits the inaccessible page. */
			ssize_t n = frame_encode(guarded(cap), cap, &cases[i].f);

			if (n != -ENOSPC)
				fail_msg("%s: cap %zu returned %zd", cases[i].name, cap, n);
		}
		assert_int_equal(frame_encode(guarded(cap), cap, &cases[i].f), cases[i].size);
	}
}

/* ---- malformed input --------------------------------------------------- */

struct malformed_case {
	const char *name;
	const uint8_t *bytes;
	size_t len;
	int err;
	const char *why;
};

#define WIRE(...) (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ })

/* Cases that end right after the header prove the error needs no payload. */
static const struct malformed_case malformed_cases[] = {
	{ "flags set", WIRE(0x15, 0x01, 0, 0, 0, 0, 0, 1), -EBADMSG, "frame flags not 0" },
	{ "length one over limit", WIRE(0x13, 0, 0x3f, 0xf9, 0, 0, 0, 1), -EMSGSIZE,
	  "frame length over limit 16376" },
	{ "length 0xffff", WIRE(0x13, 0, 0xff, 0xff, 0, 0, 0, 1), -EMSGSIZE,
	  "frame length over limit 16376" },
	{ "type 0x00", WIRE(0x00, 0, 0, 0, 0, 0, 0, 0), -EPROTONOSUPPORT, "unknown frame type" },
	{ "type 0x04", WIRE(0x04, 0, 0, 4, 0, 0, 0, 0), -EPROTONOSUPPORT, "unknown frame type" },
	{ "type 0x17", WIRE(0x17, 0, 0, 0, 0, 0, 0, 1), -EPROTONOSUPPORT, "unknown frame type" },
	{ "type 0x23", WIRE(0x23, 0, 0, 0, 0, 0, 0, 0), -EPROTONOSUPPORT, "unknown frame type" },
	{ "type 0xff", WIRE(0xff, 0, 0x10, 0, 0, 0, 0, 0), -EPROTONOSUPPORT, "unknown frame type" },
	{ "type 0x33", WIRE(0x33, 0, 0, 1, 0, 0, 0, 1), -EPROTONOSUPPORT, "unknown frame type" },
	{ "DGRAM on stream 0", WIRE(0x31, 0, 0, 7, 0, 0, 0, 0), -EBADMSG, "DGRAM: stream id 0" },
	{ "DGRAM_CLOSE length 2", WIRE(0x32, 0, 0, 2, 0, 0, 0, 1), -EBADMSG,
	  "DGRAM_CLOSE: bad payload length" },
	{ "DGRAM_OPEN length 1", WIRE(0x30, 0, 0, 1, 0, 0, 0, 1), -EBADMSG,
	  "DGRAM_OPEN: bad payload length" },
	{ "DGRAM_OPEN trailing byte", WIRE(0x30, 0, 0, 3, 0, 0, 0, 1, 0, 0, 'x'), -EBADMSG,
	  "DGRAM_OPEN: trailing bytes" },
	{ "DGRAM_OPEN group truncated", WIRE(0x30, 0, 0, 3, 0, 0, 0, 1, 0, 2, 'x'), -EBADMSG,
	  "DGRAM_OPEN: group truncated" },
	{ "DGRAM port 0", WIRE(0x31, 0, 0, 7, 0, 0, 0, 1, 1, 127, 0, 0, 1, 0, 0), -EBADMSG,
	  "DGRAM: port 0" },
	{ "DGRAM addr_type 2", WIRE(0x31, 0, 0, 7, 0, 0, 0, 1, 2, 127, 0, 0, 1, 0, 53), -EBADMSG,
	  "DGRAM: unknown addr_type" },
	{ "DGRAM IPv6 address truncated", WIRE(0x31, 0, 0, 7, 0, 0, 0, 1, 4, 0, 0, 0, 0, 0, 53),
	  -EBADMSG, "DGRAM: address truncated" },
	{ "DGRAM domain empty", WIRE(0x31, 0, 0, 5, 0, 0, 0, 1, 3, 0, 'a', 0, 53), -EBADMSG,
	  "DGRAM: domain empty" },
	{ "DGRAM port truncated", WIRE(0x31, 0, 0, 5, 0, 0, 0, 1, 3, 2, 'a', 'b', 0), -EBADMSG,
	  "DGRAM: port truncated" },
	{ "HELLO on a stream", WIRE(0x01, 0, 0, 21, 0, 0, 0, 1), -EBADMSG,
	  "HELLO: stream id not 0" },
	{ "PING on a stream", WIRE(0x20, 0, 0, 8, 0x80, 0, 0, 0), -EBADMSG,
	  "PING: stream id not 0" },
	{ "GOAWAY on a stream", WIRE(0x22, 0, 0, 3, 0, 0, 0, 2), -EBADMSG,
	  "GOAWAY: stream id not 0" },
	{ "OPEN on stream 0", WIRE(0x10, 0, 0, 11, 0, 0, 0, 0), -EBADMSG, "OPEN: stream id 0" },
	{ "DATA on stream 0", WIRE(0x13, 0, 0, 1, 0, 0, 0, 0), -EBADMSG, "DATA: stream id 0" },
	{ "FIN on stream 0", WIRE(0x15, 0, 0, 0, 0, 0, 0, 0), -EBADMSG, "FIN: stream id 0" },
	{ "empty DATA", WIRE(0x13, 0, 0, 0, 0, 0, 0, 1), -EBADMSG, "DATA: bad payload length" },
	{ "FIN with payload", WIRE(0x15, 0, 0, 1, 0, 0, 0, 1), -EBADMSG,
	  "FIN: bad payload length" },
	{ "PING 7 bytes", WIRE(0x20, 0, 0, 7, 0, 0, 0, 0), -EBADMSG, "PING: bad payload length" },
	{ "HELLO_OK 17 bytes", WIRE(0x02, 0, 0, 17, 0, 0, 0, 0), -EBADMSG,
	  "HELLO_OK: bad payload length" },
	{ "WINDOW 5 bytes", WIRE(0x14, 0, 0, 5, 0, 0, 0, 1), -EBADMSG,
	  "WINDOW: bad payload length" },
	{ "HELLO below minimum", WIRE(0x01, 0, 0, 20, 0, 0, 0, 0), -EBADMSG,
	  "HELLO: bad payload length" },
	{ "HELLO above maximum", WIRE(0x01, 0, 0x02, 0x93, 0, 0, 0, 0), -EBADMSG,
	  "HELLO: bad payload length" },
	{ "OPEN below minimum", WIRE(0x10, 0, 0, 10, 0, 0, 0, 1), -EBADMSG,
	  "OPEN: bad payload length" },
	{ "ERROR without message length", WIRE(0x03, 0, 0, 2, 0, 0, 0, 0), -EBADMSG,
	  "ERROR: bad payload length" },

	{ "HELLO client_id empty",
	  WIRE(0x01, 0, 0, 21, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1,
	       'g', 0, 0),
	  -EBADMSG, "HELLO: client_id empty" },
	{ "HELLO password truncated",
	  WIRE(0x01, 0, 0, 23, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 'c',
	       0, 0, 5, 'p', 'w'),
	  -EBADMSG, "HELLO: password truncated" },
	{ "HELLO password length missing",
	  WIRE(0x01, 0, 0, 21, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 'c',
	       'd', 0, 0),
	  -EBADMSG, "HELLO: password truncated" },
	{ "HELLO trailing byte",
	  WIRE(0x01, 0, 0, 22, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 'c',
	       0, 0, 0, 0),
	  -EBADMSG, "HELLO: trailing bytes" },
	{ "ERROR message truncated", WIRE(0x03, 0, 0, 5, 0, 0, 0, 0, 0, 5, 5, 'a', 'b'), -EBADMSG,
	  "ERROR: message truncated" },
	{ "ERROR trailing byte", WIRE(0x03, 0, 0, 4, 0, 0, 0, 0, 0, 5, 0, 'x'), -EBADMSG,
	  "ERROR: trailing bytes" },
	{ "GOAWAY trailing byte", WIRE(0x22, 0, 0, 4, 0, 0, 0, 0, 0, 7, 0, 'x'), -EBADMSG,
	  "GOAWAY: trailing bytes" },
	{ "OPEN port 0", WIRE(0x10, 0, 0, 13, 0, 0, 0, 1, 0, 4, 0, 0, 1, 127, 0, 0, 1, 0, 0, 0, 0),
	  -EBADMSG, "OPEN: port 0" },
	{ "OPEN addr_type 0",
	  WIRE(0x10, 0, 0, 13, 0, 0, 0, 1, 0, 4, 0, 0, 0, 127, 0, 0, 1, 0, 80, 0, 0), -EBADMSG,
	  "OPEN: unknown addr_type" },
	{ "OPEN addr_type 2",
	  WIRE(0x10, 0, 0, 13, 0, 0, 0, 1, 0, 4, 0, 0, 2, 127, 0, 0, 1, 0, 80, 0, 0), -EBADMSG,
	  "OPEN: unknown addr_type" },
	{ "OPEN IPv6 address truncated",
	  WIRE(0x10, 0, 0, 11, 0, 0, 0, 1, 0, 4, 0, 0, 4, 0x20, 1, 0xd, 0xb8, 0, 0), -EBADMSG,
	  "OPEN: address truncated" },
	{ "OPEN domain empty", WIRE(0x10, 0, 0, 11, 0, 0, 0, 1, 0, 4, 0, 0, 3, 0, 0, 80, 1, 'u', 0),
	  -EBADMSG, "OPEN: domain empty" },
	{ "OPEN domain truncated",
	  WIRE(0x10, 0, 0, 11, 0, 0, 0, 1, 0, 4, 0, 0, 3, 9, 'a', 'b', 'c', 'd', 'e'), -EBADMSG,
	  "OPEN: domain truncated" },
	{ "OPEN port truncated",
	  WIRE(0x10, 0, 0, 12, 0, 0, 0, 1, 0, 4, 0, 0, 3, 6, 'a', 'b', 'c', 'd', 'e', 'f'),
	  -EBADMSG, "OPEN: port truncated" },
	{ "OPEN user and group missing",
	  WIRE(0x10, 0, 0, 11, 0, 0, 0, 1, 0, 4, 0, 0, 1, 127, 0, 0, 1, 0, 80), -EBADMSG,
	  "OPEN: user truncated" },
	{ "OPEN user truncated",
	  WIRE(0x10, 0, 0, 14, 0, 0, 0, 1, 0, 4, 0, 0, 1, 127, 0, 0, 1, 0, 80, 3, 'a', 'b'),
	  -EBADMSG, "OPEN: user truncated" },
	{ "OPEN trailing byte",
	  WIRE(0x10, 0, 0, 14, 0, 0, 0, 1, 0, 4, 0, 0, 1, 127, 0, 0, 1, 0, 80, 0, 0, 0), -EBADMSG,
	  "OPEN: trailing bytes" },
	{ "OPEN_FAIL message truncated", WIRE(0x12, 0, 0, 3, 0, 0, 0, 1, 5, 2, 'x'), -EBADMSG,
	  "OPEN_FAIL: message truncated" },
	{ "OPEN_FAIL trailing byte", WIRE(0x12, 0, 0, 3, 0, 0, 0, 1, 5, 0, 'x'), -EBADMSG,
	  "OPEN_FAIL: trailing bytes" },
	{ "WINDOW increment 0", WIRE(0x14, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0), -EBADMSG,
	  "WINDOW: increment 0" },
	{ "tunnel WINDOW increment 0", WIRE(0x14, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0), -EBADMSG,
	  "WINDOW: increment 0" },
};

static void check_malformed(const char *name, const uint8_t *bytes, size_t len, int err,
			    const char *want_why)
{
	struct frame got;
	const char *why = NULL;
	ssize_t d;
	size_t k;

	d = frame_decode(place(bytes, len), len, &got, &why);
	if (d != err)
		fail_msg("%s: returned %zd (%s), want %d", name, d, why ? why : "-", err);
	if (!why || strcmp(why, want_why) != 0)
		fail_msg("%s: reason \"%s\", want \"%s\"", name, why ? why : "(null)", want_why);
	/* why is optional. */
	assert_int_equal(frame_decode(bytes, len, &got, NULL), err);
	/* Until the last byte arrives a frame whose header is fine needs more;
	 * header errors are built to be exactly FRAME_HEADER_SIZE long. */
	for (k = 0; k < len; k++) {
		d = frame_decode(place(bytes, k), k, &got, &why);
		if (d != 0)
			fail_msg("%s: prefix of %zu bytes returned %zd", name, k, d);
	}
}

static void test_malformed(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(malformed_cases); i++) {
		const struct malformed_case *c = &malformed_cases[i];

		check_malformed(c->name, c->bytes, c->len, c->err, c->why);
	}
}

/* Malformed frames too long to spell out byte by byte. */
struct wire {
	uint8_t b[FRAME_MAX_SIZE];
	size_t len;
};

static void wire_header(struct wire *w, uint8_t type, uint32_t stream_id)
{
	memset(w->b, 0, FRAME_HEADER_SIZE);
	w->b[0] = type;
	put_be32(w->b + 4, stream_id);
	w->len = FRAME_HEADER_SIZE;
}

static void wire_bytes(struct wire *w, const void *p, size_t n)
{
	memcpy(w->b + w->len, p, n);
	w->len += n;
}

static void wire_str8(struct wire *w, size_t n)
{
	uint8_t len = (uint8_t)n;

	wire_bytes(w, &len, 1);
	wire_bytes(w, pattern, n);
}

static void wire_done(struct wire *w)
{
	put_be16(w->b + 2, (uint16_t)(w->len - FRAME_HEADER_SIZE));
}

static void wire_hello(struct wire *w, size_t client_id_len, size_t group_id_len)
{
	static const uint8_t fixed[16] = { FRAME_VERSION };

	wire_header(w, FRAME_HELLO, 0);
	wire_bytes(w, fixed, sizeof(fixed));
	wire_str8(w, client_id_len);
	wire_str8(w, group_id_len);
	wire_str8(w, 0);
	wire_str8(w, 0);
	wire_done(w);
}

static void wire_open_group(struct wire *w, size_t group_len)
{
	static const uint8_t fixed[] = { 0, 4, 0, 0, FRAME_ADDR_IPV4, 10, 0, 0, 1, 0, 22 };

	wire_header(w, FRAME_OPEN, 1);
	wire_bytes(w, fixed, sizeof(fixed));
	wire_str8(w, 0);
	wire_str8(w, group_len);
	wire_done(w);
}

static void test_malformed_long_fields(void **state)
{
	struct wire w;
	struct frame got;

	wire_hello(&w, FRAME_MAX_ID_LEN + 1, 0);
	check_malformed("HELLO client_id 65", w.b, w.len, -EBADMSG,
			"HELLO: client_id over 64 bytes");
	wire_hello(&w, 1, FRAME_MAX_ID_LEN + 1);
	check_malformed("HELLO group_id 65", w.b, w.len, -EBADMSG, "HELLO: group_id over 64 bytes");
	wire_open_group(&w, FRAME_MAX_ID_LEN + 1);
	check_malformed("OPEN group 65", w.b, w.len, -EBADMSG, "OPEN: group over 64 bytes");

	/* a DGRAM may not carry more than any address leaves room for */
	wire_header(&w, FRAME_DGRAM, 1);
	wire_bytes(&w, (const uint8_t[]){ FRAME_ADDR_IPV4, 10, 0, 0, 1, 0, 53 }, 7);
	wire_bytes(&w, pattern, FRAME_DGRAM_MAX_DATA + 1);
	wire_done(&w);
	check_malformed("DGRAM datagram over the limit", w.b, w.len, -EBADMSG,
			"DGRAM: datagram over FRAME_DGRAM_MAX_DATA bytes");
	w.len--;
	wire_done(&w);
	assert_int_equal(frame_decode(w.b, w.len, &got, NULL), w.len);
	assert_int_equal(got.dgram.data.len, FRAME_DGRAM_MAX_DATA);

	/* The same builders at the limit produce valid frames. */
	wire_hello(&w, FRAME_MAX_ID_LEN, FRAME_MAX_ID_LEN);
	assert_int_equal(frame_decode(w.b, w.len, &got, NULL), w.len);
	assert_int_equal(got.hello.client_id.len, FRAME_MAX_ID_LEN);
	wire_open_group(&w, FRAME_MAX_ID_LEN);
	assert_int_equal(frame_decode(w.b, w.len, &got, NULL), w.len);
	assert_int_equal(got.open.group.len, FRAME_MAX_ID_LEN);
}

static void test_short_input_needs_more(void **state)
{
	/* Fewer than FRAME_HEADER_SIZE bytes say nothing yet, even garbage. */
	static const uint8_t garbage[FRAME_HEADER_SIZE - 1] = { 0xff, 0xff, 0xff, 0xff,
								0xff, 0xff, 0xff };
	struct frame got;
	size_t k;

	for (k = 0; k <= sizeof(garbage); k++)
		assert_int_equal(frame_decode(place(garbage, k), k, &got, NULL), 0);
}

/* ---- encoder refusals -------------------------------------------------- */

static void test_encode_rejects_bad_fields(void **state)
{
	static const struct frame_str empty = { NULL, 0 };
	const struct frame hello = {
		.type = FRAME_HELLO,
		.hello = { .version = FRAME_VERSION, .client_id = text("c") },
	};
	const struct frame open = {
		.type = FRAME_OPEN,
		.stream_id = 1,
		.open = { .addr_type = FRAME_ADDR_DOMAIN,
			  .domain = text("example.com"),
			  .port = 443 },
	};
	struct {
		const char *name;
		struct frame f;
	} cases[24];
	uint8_t buf[FRAME_MAX_SIZE + 64];
	size_t n = 0, i;

#define BAD(label, base, ...)          \
	do {                           \
		cases[n].name = label; \
		cases[n].f = base;     \
		__VA_ARGS__;           \
		n++;                   \
	} while (0)
#define F cases[n].f

	assert_true(frame_encode(buf, sizeof(buf), &hello) > 0);
	assert_true(frame_encode(buf, sizeof(buf), &open) > 0);

	BAD("unknown type", hello, F.type = 0x33);
	BAD("HELLO on a stream", hello, F.stream_id = 1);
	BAD("HELLO client_id empty", hello, F.hello.client_id = empty);
	BAD("HELLO client_id 65", hello, F.hello.client_id = span(0, FRAME_MAX_ID_LEN + 1));
	BAD("HELLO group_id 65", hello, F.hello.group_id = span(0, FRAME_MAX_ID_LEN + 1));
	BAD("HELLO username 256", hello, F.hello.username = span(0, 256));
	BAD("HELLO password 256", hello, F.hello.password = span(0, 256));
	BAD("HELLO password NULL", hello, F.hello.password = (struct frame_str){ NULL, 3 });
	BAD("OPEN on stream 0", open, F.stream_id = 0);
	BAD("OPEN domain empty", open, F.open.domain = empty);
	BAD("OPEN domain 256", open, F.open.domain = span(0, 256));
	BAD("OPEN port 0", open, F.open.port = 0);
	BAD("OPEN addr_type 2", open, F.open.addr_type = 2);
	BAD("OPEN user 256", open, F.open.user = span(0, 256));
	BAD("OPEN group 65", open, F.open.group = span(0, FRAME_MAX_ID_LEN + 1));
	BAD("ERROR message 256", ((struct frame){ .type = FRAME_ERROR }),
	    F.error.message = span(0, 256));
	BAD("ERROR on a stream", ((struct frame){ .type = FRAME_ERROR }), F.stream_id = 9);
	BAD("GOAWAY message 256", ((struct frame){ .type = FRAME_GOAWAY }),
	    F.error.message = span(0, 256));
	BAD("OPEN_FAIL message 256", ((struct frame){ .type = FRAME_OPEN_FAIL, .stream_id = 1 }),
	    F.open_fail.message = span(0, 256));
	BAD("DATA empty", ((struct frame){ .type = FRAME_DATA, .stream_id = 1 }),
	    F.data.ptr = pattern);
	BAD("DATA over limit", ((struct frame){ .type = FRAME_DATA, .stream_id = 1 }),
	    (F.data.ptr = pattern, F.data.len = FRAME_MAX_PAYLOAD + 1));
	BAD("DATA NULL", ((struct frame){ .type = FRAME_DATA, .stream_id = 1 }), F.data.len = 1);
	BAD("WINDOW increment 0", ((struct frame){ .type = FRAME_WINDOW, .stream_id = 1 }),
	    (void)0);
	BAD("PING on a stream", ((struct frame){ .type = FRAME_PING }), F.stream_id = 1);
#undef F
#undef BAD
	assert_int_equal(n, ARRAY_SIZE(cases));

	for (i = 0; i < n; i++) {
		ssize_t r = frame_encode(buf, sizeof(buf), &cases[i].f);

		if (r != -EINVAL)
			fail_msg("%s: returned %zd, want -EINVAL", cases[i].name, r);
	}
}

/* ---- streams of frames ------------------------------------------------- */

static void test_concatenated_frames(void **state)
{
	const struct frame sent[] = {
		{ .type = FRAME_HELLO_OK, .hello_ok = { .version = 1, .stream_window = 4096 } },
		{ .type = FRAME_OPEN,
		  .stream_id = 1,
		  .open = { .window = 4096,
			    .addr_type = FRAME_ADDR_IPV4,
			    .addr = { 10, 1, 2, 3 },
			    .port = 8080 } },
		{ .type = FRAME_OPEN_OK, .stream_id = 1, .open_ok = { .window = 8192 } },
		{ .type = FRAME_DATA, .stream_id = 1, .data = { pattern, 1000 } },
		{ .type = FRAME_WINDOW, .stream_id = 1, .window = { .increment = 1000 } },
		{ .type = FRAME_FIN, .stream_id = 1 },
		{ .type = FRAME_PING, .ping = { .opaque = { 9, 9, 9 } } },
	};
	static uint8_t buf[2 * FRAME_MAX_SIZE];
	size_t ends[ARRAY_SIZE(sent)];
	size_t total = 0, off, i;
	struct frame got;
	ssize_t n;

	for (i = 0; i < ARRAY_SIZE(sent); i++) {
		n = frame_encode(buf + total, sizeof(buf) - total, &sent[i]);
		assert_true(n > 0);
		total += (size_t)n;
		ends[i] = total;
	}

	/* All of it in one buffer: each decode consumes exactly one frame. */
	for (off = 0, i = 0; off < total; i++) {
		n = frame_decode(buf + off, total - off, &got, NULL);
		assert_true(n > 0);
		check_frame(frame_type_name(sent[i].type), &sent[i], &got);
		off += (size_t)n;
		assert_int_equal(off, ends[i]);
	}
	assert_int_equal(i, ARRAY_SIZE(sent));

	/* Cut one byte short: every frame but the last decodes, then need-more. */
	total--;
	for (off = 0, i = 0; (n = frame_decode(buf + off, total - off, &got, NULL)) > 0; i++)
		off += (size_t)n;
	assert_int_equal(n, 0);
	assert_int_equal(i, ARRAY_SIZE(sent) - 1);
	assert_int_equal(off, ends[ARRAY_SIZE(sent) - 2]);

	/* A bad frame in the middle stops the stream at that frame. */
	buf[ends[2] + 1] = 0x80; /* flags of the DATA frame */
	for (off = 0, i = 0; (n = frame_decode(buf + off, total - off, &got, NULL)) > 0; i++)
		off += (size_t)n;
	assert_int_equal(n, -EBADMSG);
	assert_int_equal(off, ends[2]);
}

/* ---- golden bytes: the wire format, pinned ----------------------------- */

static const uint8_t golden_hello[] = {
	0x01, 0x00, 0x00, 0x22, 0x00, 0x00, 0x00, 0x00, /* HELLO, 34 bytes, stream 0 */
	0x01, 0x00, 0x00, 0x02,                         /* version 1, reserved, replica 2 */
	0x00, 0x00, 0x00, 0x00,                         /* capabilities */
	0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* instance */
	0x06, 'e',  'd',  'g',  'e',  '-',  '1',        /* client_id */
	0x04, 'p',  'r',  'o',  'd',                    /* group_id */
	0x02, 'g',  'w',                                /* username */
	0x02, 'p',  'w',                                /* password */
};

static const uint8_t golden_data[] = {
	0x13, 0x00, 0x00, 0x02, 0x01, 0x02, 0x03, 0x04, /* DATA, 2 bytes, stream 0x01020304 */
	'h',  'i',
};

static const uint8_t golden_open[] = {
	0x10, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x01, /* OPEN, 28 bytes, stream 1 */
	0x00, 0x04, 0x00, 0x00,                         /* window 256 KiB */
	0x03, 0x0b, 'e',  'x',  'a',  'm',  'p',  'l',
	'e',  '.',  'c',  'o',  'm',  0x01, 0xbb, /* port 443 */
	0x05, 'a',  'l',  'i',  'c',  'e',        /* user */
	0x02, 'e',  'u',                          /* group */
};

static const uint8_t golden_dgram[] = {
	0x31, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x07, /* DGRAM, 9 bytes, association 7 */
	0x01, 0x7f, 0x00, 0x00, 0x01,                   /* IPv4 127.0.0.1 */
	0x00, 0x35,                                     /* port 53 */
	'h',  'i',                                      /* the datagram */
};

static void check_golden(const char *name, const struct frame *f, const uint8_t *wire, size_t len)
{
	uint8_t buf[64];
	struct frame got;

	assert_true(len <= sizeof(buf));
	if (frame_encode(buf, sizeof(buf), f) != (ssize_t)len || memcmp(buf, wire, len) != 0)
		fail_msg("%s: encoding differs from the golden bytes", name);
	assert_int_equal(frame_decode(place(wire, len), len, &got, NULL), len);
	check_frame(name, f, &got);
}

static void test_golden_vectors(void **state)
{
	const struct frame hello = {
		.type = FRAME_HELLO,
		.hello = { .version = 1,
			   .replica = 2,
			   .instance = 0x0102030405060708,
			   .client_id = text("edge-1"),
			   .group_id = text("prod"),
			   .username = text("gw"),
			   .password = text("pw") },
	};
	const struct frame data = {
		.type = FRAME_DATA,
		.stream_id = 0x01020304,
		.data = { (const uint8_t *)"hi", 2 },
	};
	const struct frame dgram = {
		.type = FRAME_DGRAM,
		.stream_id = 7,
		.dgram = { .addr_type = FRAME_ADDR_IPV4,
			   .addr = { 127, 0, 0, 1 },
			   .port = 53,
			   .data = text("hi") },
	};
	const struct frame open = {
		.type = FRAME_OPEN,
		.stream_id = 1,
		.open = { .window = 256 * 1024,
			  .addr_type = FRAME_ADDR_DOMAIN,
			  .domain = text("example.com"),
			  .port = 443,
			  .user = text("alice"),
			  .group = text("eu") },
	};

	check_golden("HELLO", &hello, golden_hello, sizeof(golden_hello));
	check_golden("DATA", &data, golden_data, sizeof(golden_data));
	check_golden("OPEN", &open, golden_open, sizeof(golden_open));
	check_golden("DGRAM", &dgram, golden_dgram, sizeof(golden_dgram));
}

/* Reserved bytes are sent as 0 and ignored on receipt (docs/protocol.md). */
static void test_reserved_bytes_ignored(void **state)
{
	uint8_t hello[sizeof(golden_hello)];
	uint8_t hello_ok[FRAME_HEADER_SIZE + 16] = { FRAME_HELLO_OK, 0, 0, 16 };
	struct frame a, b;

	memcpy(hello, golden_hello, sizeof(hello));
	assert_int_equal(frame_decode(hello, sizeof(hello), &a, NULL), sizeof(hello));
	hello[FRAME_HEADER_SIZE + 1] = 0xee;
	assert_int_equal(frame_decode(hello, sizeof(hello), &b, NULL), sizeof(hello));
	check_frame("HELLO reserved", &a, &b);

	hello_ok[FRAME_HEADER_SIZE] = FRAME_VERSION;
	assert_int_equal(frame_decode(hello_ok, sizeof(hello_ok), &a, NULL), sizeof(hello_ok));
	memset(hello_ok + FRAME_HEADER_SIZE + 1, 0xee, 3);
	assert_int_equal(frame_decode(hello_ok, sizeof(hello_ok), &b, NULL), sizeof(hello_ok));
	check_frame("HELLO_OK reserved", &a, &b);
}

/* ---- helpers for the relay path and logs ------------------------------- */

static void test_put_data_header(void **state)
{
	static const uint16_t lens[] = { 1, 1400, FRAME_MAX_PAYLOAD };
	uint8_t want[FRAME_MAX_SIZE], got[FRAME_HEADER_SIZE];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(lens); i++) {
		const struct frame f = { .type = FRAME_DATA,
					 .stream_id = 0xdeadbeef,
					 .data = { pattern, lens[i] } };

		assert_int_equal(frame_encode(want, sizeof(want), &f), FRAME_HEADER_SIZE + lens[i]);
		memset(got, 0xaa, sizeof(got));
		frame_put_data_header(got, f.stream_id, lens[i]);
		assert_memory_equal(got, want, FRAME_HEADER_SIZE);
	}
}

static void test_names(void **state)
{
	static const struct {
		uint8_t type;
		const char *name;
	} types[] = {
		{ FRAME_HELLO, "HELLO" },     { FRAME_HELLO_OK, "HELLO_OK" },
		{ FRAME_ERROR, "ERROR" },     { FRAME_OPEN, "OPEN" },
		{ FRAME_OPEN_OK, "OPEN_OK" }, { FRAME_OPEN_FAIL, "OPEN_FAIL" },
		{ FRAME_DATA, "DATA" },       { FRAME_WINDOW, "WINDOW" },
		{ FRAME_FIN, "FIN" },         { FRAME_RST, "RST" },
		{ FRAME_PING, "PING" },       { FRAME_PONG, "PONG" },
		{ FRAME_GOAWAY, "GOAWAY" },   { FRAME_DGRAM_OPEN, "DGRAM_OPEN" },
		{ FRAME_DGRAM, "DGRAM" },     { FRAME_DGRAM_CLOSE, "DGRAM_CLOSE" },
		{ 0x00, "UNKNOWN" },          { 0x04, "UNKNOWN" },
		{ 0xff, "UNKNOWN" },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(types); i++)
		assert_string_equal(frame_type_name(types[i].type), types[i].name);

	assert_string_equal(frame_error_name(FRAME_ERR_NONE), "NONE");
	assert_string_equal(frame_error_name(FRAME_ERR_AUTH), "AUTH");
	assert_string_equal(frame_error_name(FRAME_ERR_VERSION), "VERSION");
	assert_string_equal(frame_error_name(FRAME_ERR_BAD_HELLO), "BAD_HELLO");
	assert_string_equal(frame_error_name(FRAME_ERR_REPLACED), "REPLACED");
	assert_string_equal(frame_error_name(FRAME_ERR_PROTOCOL), "PROTOCOL");
	assert_string_equal(frame_error_name(FRAME_ERR_LIMIT), "LIMIT");
	assert_string_equal(frame_error_name(FRAME_ERR_SHUTDOWN), "SHUTDOWN");
	assert_string_equal(frame_error_name(FRAME_ERR_TIMEOUT), "TIMEOUT");
	assert_string_equal(frame_error_name(FRAME_ERR_ID_IN_USE), "ID_IN_USE");
	assert_string_equal(frame_error_name(10), "UNKNOWN");
	assert_string_equal(frame_error_name(UINT16_MAX), "UNKNOWN");

	assert_string_equal(frame_open_reason_name(0), "UNKNOWN");
	assert_string_equal(frame_open_reason_name(FRAME_OPEN_GENERAL), "GENERAL");
	assert_string_equal(frame_open_reason_name(FRAME_OPEN_NOT_ALLOWED), "NOT_ALLOWED");
	assert_string_equal(frame_open_reason_name(FRAME_OPEN_NET_UNREACHABLE), "NET_UNREACHABLE");
	assert_string_equal(frame_open_reason_name(FRAME_OPEN_HOST_UNREACHABLE),
			    "HOST_UNREACHABLE");
	assert_string_equal(frame_open_reason_name(FRAME_OPEN_REFUSED), "REFUSED");
	assert_string_equal(frame_open_reason_name(FRAME_OPEN_TIMEOUT), "TIMEOUT");
	assert_string_equal(frame_open_reason_name(7), "UNKNOWN");
	assert_string_equal(frame_open_reason_name(FRAME_OPEN_ADDR_UNSUPPORTED),
			    "ADDR_UNSUPPORTED");
	assert_string_equal(frame_open_reason_name(FRAME_OPEN_DNS_FAILED), "DNS_FAILED");
	assert_string_equal(frame_open_reason_name(UINT8_MAX), "UNKNOWN");
}

/* The outcomes the metrics count: every reason lands in one, unknown ones
 * in "error". */
static void test_open_results(void **state)
{
	static const struct {
		uint8_t reason;
		const char *name;
	} cases[] = {
		{ 0, "ok" },
		{ FRAME_OPEN_REFUSED, "refused" },
		{ FRAME_OPEN_DNS_FAILED, "dns" },
		{ FRAME_OPEN_TIMEOUT, "timeout" },
		{ FRAME_OPEN_NOT_ALLOWED, "denied" },
		{ FRAME_OPEN_NET_UNREACHABLE, "no_agent" },
		{ FRAME_OPEN_HOST_UNREACHABLE, "unreachable" },
		{ FRAME_OPEN_LIMIT, "limit" },
		{ FRAME_OPEN_GENERAL, "error" },
		{ FRAME_OPEN_ADDR_UNSUPPORTED, "error" },
		{ 7, "error" },
		{ UINT8_MAX, "error" },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++)
		assert_string_equal(frame_open_result_name(frame_open_result(cases[i].reason)),
				    cases[i].name);
	for (i = 0; i < FRAME_NRESULTS; i++)
		assert_non_null(frame_open_result_name(i));
	assert_string_equal(frame_open_result_name(FRAME_NRESULTS), "error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_open_results),
		cmocka_unit_test(test_need_more_for_every_prefix),
		cmocka_unit_test(test_encode_no_space),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_malformed_long_fields),
		cmocka_unit_test(test_short_input_needs_more),
		cmocka_unit_test(test_encode_rejects_bad_fields),
		cmocka_unit_test(test_concatenated_frames),
		cmocka_unit_test(test_golden_vectors),
		cmocka_unit_test(test_reserved_bytes_ignored),
		cmocka_unit_test(test_put_data_header),
		cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
