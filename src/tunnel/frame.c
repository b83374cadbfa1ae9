/*
 * frame.c — tunnel protocol v1 codec (see frame.h and docs/protocol.md).
 *
 * Pure: no I/O, no allocation, no state besides the const tables below, so
 * it is unit-tested and fuzzed on plain buffers. The decoder trusts nothing
 * in its input; the encoder refuses (-EINVAL) anything the decoder would
 * reject, so every frame it writes decodes back to the same values.
 */
#include "anyproxy/common.h"
#include "anyproxy/frame.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#define STRINGIFY(x) #x
#define EXPAND_STRINGIFY(x) STRINGIFY(x)

/* Wire sizes of the payload fields, in bytes. */
#define STR8_SIZE(n) (1 + (n)) /* u8 length, then n bytes */
#define IPV4_ADDR_SIZE 4
#define IPV6_ADDR_SIZE 16
#define MIN_DOMAIN_LEN 1
#define MIN_CLIENT_ID_LEN 1
#define MAX_STR8_LEN 255 /* what a u8 length can say */

/* HELLO: version, reserved, replica, capabilities, instance; then 4 str8. */
#define HELLO_FIXED_SIZE (1 + 1 + 2 + 4 + 8)
#define HELLO_MIN_SIZE (HELLO_FIXED_SIZE + STR8_SIZE(MIN_CLIENT_ID_LEN) + 3 * STR8_SIZE(0))
#define HELLO_MAX_SIZE \
	(HELLO_FIXED_SIZE + 2 * STR8_SIZE(FRAME_MAX_ID_LEN) + 2 * STR8_SIZE(FRAME_MAX_TEXT_LEN))
/* HELLO_OK: version, reserved, reserved16, capabilities, ping interval, window. */
#define HELLO_OK_SIZE (1 + 1 + 2 + 4 + 4 + 4)
/* ERROR, GOAWAY: code, message. */
#define ERROR_FIXED_SIZE 2
#define ERROR_MIN_SIZE (ERROR_FIXED_SIZE + STR8_SIZE(0))
#define ERROR_MAX_SIZE (ERROR_FIXED_SIZE + STR8_SIZE(FRAME_MAX_TEXT_LEN))
/* OPEN: window, addr_type, address, port, user, group. */
#define OPEN_WINDOW_SIZE 4
#define OPEN_FIXED_SIZE (OPEN_WINDOW_SIZE + 1)
#define OPEN_PORT_SIZE 2
#define OPEN_MIN_SIZE \
	(OPEN_FIXED_SIZE + STR8_SIZE(MIN_DOMAIN_LEN) + OPEN_PORT_SIZE + 2 * STR8_SIZE(0))
#define OPEN_MAX_SIZE                                                       \
	(OPEN_FIXED_SIZE + STR8_SIZE(FRAME_MAX_TEXT_LEN) + OPEN_PORT_SIZE + \
	 STR8_SIZE(FRAME_MAX_TEXT_LEN) + STR8_SIZE(FRAME_MAX_ID_LEN))
#define OPEN_OK_SIZE 4
/* OPEN_FAIL: reason, message. */
#define OPEN_FAIL_FIXED_SIZE 1
#define OPEN_FAIL_MIN_SIZE (OPEN_FAIL_FIXED_SIZE + STR8_SIZE(0))
#define OPEN_FAIL_MAX_SIZE (OPEN_FAIL_FIXED_SIZE + STR8_SIZE(FRAME_MAX_TEXT_LEN))
#define DATA_MIN_SIZE 1
#define WINDOW_SIZE 4
#define FIN_SIZE 0
#define RST_SIZE 1
#define PING_SIZE 8
/* DGRAM_OPEN: user, group. */
#define DGRAM_OPEN_MIN_SIZE (2 * STR8_SIZE(0))
#define DGRAM_OPEN_MAX_SIZE (STR8_SIZE(FRAME_MAX_TEXT_LEN) + STR8_SIZE(FRAME_MAX_ID_LEN))
/* DGRAM: addr_type, address, port, then the datagram (maybe empty). */
#define DGRAM_MIN_SIZE (1 + STR8_SIZE(MIN_DOMAIN_LEN) + OPEN_PORT_SIZE)
#define DGRAM_CLOSE_SIZE 1

_Static_assert(FRAME_MAX_TEXT_LEN <= MAX_STR8_LEN, "text fields are str8");
_Static_assert(FRAME_MAX_ID_LEN <= MAX_STR8_LEN, "id fields are str8");
_Static_assert(IPV6_ADDR_SIZE == sizeof(((struct frame *)0)->open.addr), "open.addr holds IPv6");
_Static_assert(PING_SIZE == sizeof(((struct frame *)0)->ping.opaque), "ping.opaque size");
_Static_assert(HELLO_MAX_SIZE <= FRAME_MAX_PAYLOAD, "HELLO fits one frame");
_Static_assert(OPEN_MAX_SIZE <= FRAME_MAX_PAYLOAD, "OPEN fits one frame");
_Static_assert(FRAME_MAX_PAYLOAD <= UINT16_MAX, "length is a BE16");
_Static_assert(FRAME_DGRAM_ADDR_MAX == 1 + STR8_SIZE(FRAME_MAX_TEXT_LEN) + OPEN_PORT_SIZE,
	       "the longest DGRAM address part");

/* FRAME_MAX_PAYLOAD is an expression, so its value is spelled for messages. */
#define MAX_PAYLOAD_TEXT "16376"
_Static_assert(FRAME_MAX_PAYLOAD == 16376, "update MAX_PAYLOAD_TEXT");

/* Which stream ids a frame type may carry. */
enum stream_class {
	ON_TUNNEL, /* stream id 0 only */
	ON_STREAM, /* non-zero stream id only */
	ON_EITHER, /* WINDOW: 0 credits the whole tunnel, else one stream */
};

/* Everything the header alone tells about a type: its name, where it may
 * appear, and the payload length range (checked before the payload arrives,
 * so a peer cannot make us wait for bytes a valid frame would never have). */
struct frame_kind {
	const char *name;
	enum stream_class where;
	uint16_t min_len, max_len;
	const char *why_stream;   /* stream id of the wrong class */
	const char *why_length;   /* length outside min_len..max_len */
	const char *why_trailing; /* bytes left after the last field */
};

#define KIND(type, label, cls, min, max, stream_reason)     \
	[type] = {                                          \
		.name = label,                              \
		.where = cls,                               \
		.min_len = min,                             \
		.max_len = max,                             \
		.why_stream = stream_reason,                \
		.why_length = label ": bad payload length", \
		.why_trailing = label ": trailing bytes",   \
	}
#define TUNNEL_KIND(type, label, min, max) \
	KIND(type, label, ON_TUNNEL, min, max, label ": stream id not 0")
#define STREAM_KIND(type, label, min, max) \
	KIND(type, label, ON_STREAM, min, max, label ": stream id 0")

static const struct frame_kind frame_kinds[FRAME_TYPE_MAX + 1] = {
	TUNNEL_KIND(FRAME_HELLO, "HELLO", HELLO_MIN_SIZE, HELLO_MAX_SIZE),
	TUNNEL_KIND(FRAME_HELLO_OK, "HELLO_OK", HELLO_OK_SIZE, HELLO_OK_SIZE),
	TUNNEL_KIND(FRAME_ERROR, "ERROR", ERROR_MIN_SIZE, ERROR_MAX_SIZE),
	STREAM_KIND(FRAME_OPEN, "OPEN", OPEN_MIN_SIZE, OPEN_MAX_SIZE),
	STREAM_KIND(FRAME_OPEN_OK, "OPEN_OK", OPEN_OK_SIZE, OPEN_OK_SIZE),
	STREAM_KIND(FRAME_OPEN_FAIL, "OPEN_FAIL", OPEN_FAIL_MIN_SIZE, OPEN_FAIL_MAX_SIZE),
	STREAM_KIND(FRAME_DATA, "DATA", DATA_MIN_SIZE, FRAME_MAX_PAYLOAD),
	KIND(FRAME_WINDOW, "WINDOW", ON_EITHER, WINDOW_SIZE, WINDOW_SIZE, NULL),
	STREAM_KIND(FRAME_FIN, "FIN", FIN_SIZE, FIN_SIZE),
	STREAM_KIND(FRAME_RST, "RST", RST_SIZE, RST_SIZE),
	TUNNEL_KIND(FRAME_PING, "PING", PING_SIZE, PING_SIZE),
	TUNNEL_KIND(FRAME_PONG, "PONG", PING_SIZE, PING_SIZE),
	TUNNEL_KIND(FRAME_GOAWAY, "GOAWAY", ERROR_MIN_SIZE, ERROR_MAX_SIZE),
	STREAM_KIND(FRAME_DGRAM_OPEN, "DGRAM_OPEN", DGRAM_OPEN_MIN_SIZE, DGRAM_OPEN_MAX_SIZE),
	STREAM_KIND(FRAME_DGRAM, "DGRAM", DGRAM_MIN_SIZE, FRAME_MAX_PAYLOAD),
	STREAM_KIND(FRAME_DGRAM_CLOSE, "DGRAM_CLOSE", DGRAM_CLOSE_SIZE, DGRAM_CLOSE_SIZE),
};
#undef STREAM_KIND
#undef TUNNEL_KIND
#undef KIND

static const struct frame_kind *frame_kind(uint8_t type)
{
	if (type >= ARRAY_SIZE(frame_kinds) || !frame_kinds[type].name)
		return NULL;
	return &frame_kinds[type];
}

static bool stream_id_allowed(const struct frame_kind *kind, uint32_t stream_id)
{
	switch (kind->where) {
	case ON_TUNNEL:
		return stream_id == 0;
	case ON_STREAM:
		return stream_id != 0;
	case ON_EITHER:
		return true;
	}
	return false;
}

/* Limits of one str8 field, shared by the decoder and the encoder, and the
 * reasons the decoder gives when a peer breaks them. */
struct str_rule {
	uint8_t min_len, max_len;
	const char *why_truncated, *why_short, *why_long;
};

#define STR_RULE(frame, field, min, max)                                                        \
	{                                                                                       \
		.min_len = min, .max_len = max, .why_truncated = frame ": " field " truncated", \
		.why_short = frame ": " field " empty",                                         \
		.why_long = frame ": " field " over " EXPAND_STRINGIFY(max) " bytes",           \
	}

static const struct str_rule hello_client_id_rule =
	STR_RULE("HELLO", "client_id", MIN_CLIENT_ID_LEN, FRAME_MAX_ID_LEN);
static const struct str_rule hello_group_id_rule =
	STR_RULE("HELLO", "group_id", 0, FRAME_MAX_ID_LEN);
static const struct str_rule hello_username_rule =
	STR_RULE("HELLO", "username", 0, FRAME_MAX_TEXT_LEN);
static const struct str_rule hello_password_rule =
	STR_RULE("HELLO", "password", 0, FRAME_MAX_TEXT_LEN);
static const struct str_rule error_message_rule =
	STR_RULE("ERROR", "message", 0, FRAME_MAX_TEXT_LEN);
static const struct str_rule goaway_message_rule =
	STR_RULE("GOAWAY", "message", 0, FRAME_MAX_TEXT_LEN);
static const struct str_rule open_domain_rule =
	STR_RULE("OPEN", "domain", MIN_DOMAIN_LEN, FRAME_MAX_TEXT_LEN);
static const struct str_rule open_user_rule = STR_RULE("OPEN", "user", 0, FRAME_MAX_TEXT_LEN);
static const struct str_rule open_group_rule = STR_RULE("OPEN", "group", 0, FRAME_MAX_ID_LEN);
static const struct str_rule open_fail_message_rule =
	STR_RULE("OPEN_FAIL", "message", 0, FRAME_MAX_TEXT_LEN);
static const struct str_rule dgram_open_user_rule =
	STR_RULE("DGRAM_OPEN", "user", 0, FRAME_MAX_TEXT_LEN);
static const struct str_rule dgram_open_group_rule =
	STR_RULE("DGRAM_OPEN", "group", 0, FRAME_MAX_ID_LEN);
static const struct str_rule dgram_domain_rule =
	STR_RULE("DGRAM", "domain", MIN_DOMAIN_LEN, FRAME_MAX_TEXT_LEN);
#undef STR_RULE

static const struct str_rule *message_rule(uint8_t type)
{
	return type == FRAME_GOAWAY ? &goaway_message_rule : &error_message_rule;
}

/* ---- decoding ---------------------------------------------------------- */

/* The unread rest of one frame's payload. */
struct reader {
	const uint8_t *pos;
	const uint8_t *end;
};

static int read_str8(struct reader *r, const struct str_rule *rule, struct frame_str *s,
		     const char **why)
{
	size_t n;

	if (r->pos == r->end) {
		*why = rule->why_truncated;
		return -EBADMSG;
	}
	n = *r->pos++;
	if (n < rule->min_len) {
		*why = rule->why_short;
		return -EBADMSG;
	}
	if (n > rule->max_len) {
		*why = rule->why_long;
		return -EBADMSG;
	}
	if ((size_t)(r->end - r->pos) < n) {
		*why = rule->why_truncated;
		return -EBADMSG;
	}
	s->ptr = r->pos;
	s->len = n;
	r->pos += n;
	return 0;
}

/* Takes the next n bytes, or reports why_truncated when fewer are left. */
static const uint8_t *read_bytes(struct reader *r, size_t n, const char *why_truncated,
				 const char **why)
{
	const uint8_t *p = r->pos;

	if ((size_t)(r->end - r->pos) < n) {
		*why = why_truncated;
		return NULL;
	}
	r->pos += n;
	return p;
}

static int expect_end(const struct reader *r, uint8_t type, const char **why)
{
	if (r->pos != r->end) {
		*why = frame_kinds[type].why_trailing;
		return -EBADMSG;
	}
	return 0;
}

/* Payload decoders: `p` holds exactly `len` bytes, and len is already within
 * the type's min_len..max_len, so the fixed leading fields are present. */

static int decode_hello(const uint8_t *p, size_t len, struct frame *f, const char **why)
{
	struct reader r = { p + HELLO_FIXED_SIZE, p + len };
	int err;

	/* Reserved bytes are ignored on receipt so a later version may use them. */
	f->hello.version = p[0];
	f->hello.replica = get_be16(p + 2);
	f->hello.capabilities = get_be32(p + 4);
	f->hello.instance = get_be64(p + 8);
	if ((err = read_str8(&r, &hello_client_id_rule, &f->hello.client_id, why)) ||
	    (err = read_str8(&r, &hello_group_id_rule, &f->hello.group_id, why)) ||
	    (err = read_str8(&r, &hello_username_rule, &f->hello.username, why)) ||
	    (err = read_str8(&r, &hello_password_rule, &f->hello.password, why)))
		return err;
	return expect_end(&r, f->type, why);
}

static void decode_hello_ok(const uint8_t *p, struct frame *f)
{
	f->hello_ok.version = p[0];
	f->hello_ok.capabilities = get_be32(p + 4);
	f->hello_ok.ping_interval_ms = get_be32(p + 8);
	f->hello_ok.stream_window = get_be32(p + 12);
}

static int decode_error(const uint8_t *p, size_t len, struct frame *f, const char **why)
{
	struct reader r = { p + ERROR_FIXED_SIZE, p + len };
	int err;

	f->error.code = get_be16(p);
	err = read_str8(&r, message_rule(f->type), &f->error.message, why);
	if (err)
		return err;
	return expect_end(&r, f->type, why);
}

/* An address as OPEN and DGRAM carry it (addr_type, address, port) and
 * the reasons a frame gives when it breaks the rules. */
struct addr_rule {
	const struct str_rule *domain;
	const char *why_type, *why_truncated, *why_port_truncated, *why_port0;
};

static const struct addr_rule open_addr_rule = {
	&open_domain_rule,
	"OPEN: unknown addr_type",
	"OPEN: address truncated",
	"OPEN: port truncated",
	"OPEN: port 0",
};
static const struct addr_rule dgram_addr_rule = {
	&dgram_domain_rule,
	"DGRAM: unknown addr_type",
	"DGRAM: address truncated",
	"DGRAM: port truncated",
	"DGRAM: port 0",
};

/* The address fields of one frame, wherever they live in struct frame. */
struct addr_fields {
	uint8_t *type;
	uint8_t *addr; /* 16 bytes */
	struct frame_str *domain;
	uint16_t *port;
};

static int read_addr(struct reader *r, const struct addr_rule *rule, struct addr_fields a,
		     const char **why)
{
	const uint8_t *q;
	size_t addr_len = 0;
	int err;

	q = read_bytes(r, 1, rule->why_truncated, why);
	if (!q)
		return -EBADMSG;
	*a.type = *q;
	switch (*a.type) {
	case FRAME_ADDR_IPV4:
		addr_len = IPV4_ADDR_SIZE;
		break;
	case FRAME_ADDR_IPV6:
		addr_len = IPV6_ADDR_SIZE;
		break;
	case FRAME_ADDR_DOMAIN:
		err = read_str8(r, rule->domain, a.domain, why);
		if (err)
			return err;
		break;
	default:
		*why = rule->why_type;
		return -EBADMSG;
	}
	if (addr_len) {
		q = read_bytes(r, addr_len, rule->why_truncated, why);
		if (!q)
			return -EBADMSG;
		memcpy(a.addr, q, addr_len);
	}
	q = read_bytes(r, OPEN_PORT_SIZE, rule->why_port_truncated, why);
	if (!q)
		return -EBADMSG;
	*a.port = get_be16(q);
	if (*a.port == 0) {
		*why = rule->why_port0;
		return -EBADMSG;
	}
	return 0;
}

static int decode_open(const uint8_t *p, size_t len, struct frame *f, const char **why)
{
	struct reader r = { p + OPEN_WINDOW_SIZE, p + len };
	int err;

	f->open.window = get_be32(p);
	err = read_addr(&r, &open_addr_rule,
			(struct addr_fields){ &f->open.addr_type, f->open.addr, &f->open.domain,
					      &f->open.port },
			why);
	if (err)
		return err;
	if ((err = read_str8(&r, &open_user_rule, &f->open.user, why)) ||
	    (err = read_str8(&r, &open_group_rule, &f->open.group, why)))
		return err;
	return expect_end(&r, f->type, why);
}

static int decode_open_fail(const uint8_t *p, size_t len, struct frame *f, const char **why)
{
	struct reader r = { p + OPEN_FAIL_FIXED_SIZE, p + len };
	int err;

	f->open_fail.reason = p[0];
	err = read_str8(&r, &open_fail_message_rule, &f->open_fail.message, why);
	if (err)
		return err;
	return expect_end(&r, f->type, why);
}

static int decode_dgram_open(const uint8_t *p, size_t len, struct frame *f, const char **why)
{
	struct reader r = { p, p + len };
	int err;

	if ((err = read_str8(&r, &dgram_open_user_rule, &f->dgram_open.user, why)) ||
	    (err = read_str8(&r, &dgram_open_group_rule, &f->dgram_open.group, why)))
		return err;
	return expect_end(&r, f->type, why);
}

/* The datagram is the rest of the payload: every length is valid, up to
 * FRAME_DGRAM_MAX_DATA (what the encoder writes, whatever the address). */
static int decode_dgram(const uint8_t *p, size_t len, struct frame *f, const char **why)
{
	struct reader r = { p, p + len };
	int err = read_addr(&r, &dgram_addr_rule,
			    (struct addr_fields){ &f->dgram.addr_type, f->dgram.addr,
						  &f->dgram.domain, &f->dgram.port },
			    why);

	if (err)
		return err;
	f->dgram.data.ptr = r.pos;
	f->dgram.data.len = (size_t)(r.end - r.pos);
	if (f->dgram.data.len > FRAME_DGRAM_MAX_DATA) {
		*why = "DGRAM: datagram over FRAME_DGRAM_MAX_DATA bytes";
		return -EBADMSG;
	}
	return 0;
}

static int decode_payload(const uint8_t *p, size_t len, struct frame *f, const char **why)
{
	switch (f->type) {
	case FRAME_HELLO:
		return decode_hello(p, len, f, why);
	case FRAME_HELLO_OK:
		decode_hello_ok(p, f);
		return 0;
	case FRAME_ERROR:
	case FRAME_GOAWAY:
		return decode_error(p, len, f, why);
	case FRAME_OPEN:
		return decode_open(p, len, f, why);
	case FRAME_OPEN_OK:
		f->open_ok.window = get_be32(p);
		return 0;
	case FRAME_OPEN_FAIL:
		return decode_open_fail(p, len, f, why);
	case FRAME_DATA:
		f->data.ptr = p;
		f->data.len = len;
		return 0;
	case FRAME_WINDOW:
		f->window.increment = get_be32(p);
		if (f->window.increment == 0) {
			*why = "WINDOW: increment 0";
			return -EBADMSG;
		}
		return 0;
	case FRAME_FIN:
		return 0;
	case FRAME_RST:
		f->rst.reason = p[0];
		return 0;
	case FRAME_PING:
	case FRAME_PONG:
		memcpy(f->ping.opaque, p, PING_SIZE);
		return 0;
	case FRAME_DGRAM_OPEN:
		return decode_dgram_open(p, len, f, why);
	case FRAME_DGRAM:
		return decode_dgram(p, len, f, why);
	case FRAME_DGRAM_CLOSE:
		f->dgram_close.reason = p[0];
		return 0;
	}
	/* Not reached: check_header() admits only the types handled above. */
	*why = "unknown frame type";
	return -EPROTONOSUPPORT;
}

/* Everything that can be judged from the 8 header bytes alone. */
static int check_header(const uint8_t *hdr, const char **why)
{
	const struct frame_kind *kind;
	uint16_t length = get_be16(hdr + 2);
	uint32_t stream_id = get_be32(hdr + 4);

	if (length > FRAME_MAX_PAYLOAD) {
		*why = "frame length over limit " MAX_PAYLOAD_TEXT;
		return -EMSGSIZE;
	}
	kind = frame_kind(hdr[0]);
	if (!kind) {
		*why = "unknown frame type";
		return -EPROTONOSUPPORT;
	}
	if (hdr[1] != 0) {
		*why = "frame flags not 0";
		return -EBADMSG;
	}
	if (!stream_id_allowed(kind, stream_id)) {
		*why = kind->why_stream;
		return -EBADMSG;
	}
	if (length < kind->min_len || length > kind->max_len) {
		*why = kind->why_length;
		return -EBADMSG;
	}
	return 0;
}

ssize_t frame_decode(const uint8_t *buf, size_t len, struct frame *f, const char **why)
{
	const char *reason = NULL;
	size_t payload_len;
	int err;

	if (len < FRAME_HEADER_SIZE)
		return 0;
	err = check_header(buf, &reason);
	if (err)
		goto fail;
	payload_len = get_be16(buf + 2);
	if (len - FRAME_HEADER_SIZE < payload_len)
		return 0;

	/* Zero first: unused union bytes (IPv4 tail of open.addr, the domain
	 * of an IP target) then compare equal between two decodes. */
	memset(f, 0, sizeof(*f));
	f->type = buf[0];
	f->stream_id = get_be32(buf + 4);
	err = decode_payload(buf + FRAME_HEADER_SIZE, payload_len, f, &reason);
	if (err)
		goto fail;
	return (ssize_t)(FRAME_HEADER_SIZE + payload_len);
fail:
	if (why)
		*why = reason;
	return err;
}

/* ---- encoding ---------------------------------------------------------- */

/*
 * Output cursor. Writes that would pass cap are skipped but still counted,
 * so `len` ends as the size the frame needs and the caller can tell -ENOSPC
 * from a complete frame with one comparison. Field lengths are checked
 * before they are put, so `len` stays far below SIZE_MAX.
 */
struct writer {
	uint8_t *buf;
	size_t cap;
	size_t len;
};

static void put_bytes(struct writer *w, const void *src, size_t n)
{
	if (n && w->len <= w->cap && n <= w->cap - w->len)
		memcpy(w->buf + w->len, src, n);
	w->len += n;
}

static void put_u8(struct writer *w, uint8_t v)
{
	put_bytes(w, &v, 1);
}

static void put_u16(struct writer *w, uint16_t v)
{
	uint8_t b[2];

	put_be16(b, v);
	put_bytes(w, b, sizeof(b));
}

static void put_u32(struct writer *w, uint32_t v)
{
	uint8_t b[4];

	put_be32(b, v);
	put_bytes(w, b, sizeof(b));
}

static void put_u64(struct writer *w, uint64_t v)
{
	uint8_t b[8];

	put_be64(b, v);
	put_bytes(w, b, sizeof(b));
}

static int put_str8(struct writer *w, const struct str_rule *rule, struct frame_str s)
{
	if (s.len < rule->min_len || s.len > rule->max_len || (s.len && !s.ptr))
		return -EINVAL;
	put_u8(w, (uint8_t)s.len);
	put_bytes(w, s.ptr, s.len);
	return 0;
}

static int encode_hello(struct writer *w, const struct frame *f)
{
	int err;

	put_u8(w, f->hello.version);
	put_u8(w, 0);
	put_u16(w, f->hello.replica);
	put_u32(w, f->hello.capabilities);
	put_u64(w, f->hello.instance);
	if ((err = put_str8(w, &hello_client_id_rule, f->hello.client_id)) ||
	    (err = put_str8(w, &hello_group_id_rule, f->hello.group_id)) ||
	    (err = put_str8(w, &hello_username_rule, f->hello.username)) ||
	    (err = put_str8(w, &hello_password_rule, f->hello.password)))
		return err;
	return 0;
}

static void encode_hello_ok(struct writer *w, const struct frame *f)
{
	put_u8(w, f->hello_ok.version);
	put_u8(w, 0);
	put_u16(w, 0);
	put_u32(w, f->hello_ok.capabilities);
	put_u32(w, f->hello_ok.ping_interval_ms);
	put_u32(w, f->hello_ok.stream_window);
}

static int put_addr(struct writer *w, const struct addr_rule *rule, uint8_t type,
		    const uint8_t *addr, struct frame_str domain, uint16_t port)
{
	int err;

	put_u8(w, type);
	switch (type) {
	case FRAME_ADDR_IPV4:
		put_bytes(w, addr, IPV4_ADDR_SIZE);
		break;
	case FRAME_ADDR_IPV6:
		put_bytes(w, addr, IPV6_ADDR_SIZE);
		break;
	case FRAME_ADDR_DOMAIN:
		err = put_str8(w, rule->domain, domain);
		if (err)
			return err;
		break;
	default:
		return -EINVAL;
	}
	if (port == 0)
		return -EINVAL;
	put_u16(w, port);
	return 0;
}

static int encode_open(struct writer *w, const struct frame *f)
{
	int err;

	put_u32(w, f->open.window);
	err = put_addr(w, &open_addr_rule, f->open.addr_type, f->open.addr, f->open.domain,
		       f->open.port);
	if (err)
		return err;
	if ((err = put_str8(w, &open_user_rule, f->open.user)) ||
	    (err = put_str8(w, &open_group_rule, f->open.group)))
		return err;
	return 0;
}

static int encode_dgram(struct writer *w, const struct frame *f)
{
	int err = put_addr(w, &dgram_addr_rule, f->dgram.addr_type, f->dgram.addr, f->dgram.domain,
			   f->dgram.port);

	if (err)
		return err;
	if (f->dgram.data.len > FRAME_DGRAM_MAX_DATA || (f->dgram.data.len && !f->dgram.data.ptr))
		return -EINVAL;
	put_bytes(w, f->dgram.data.ptr, f->dgram.data.len);
	return 0;
}

static int encode_payload(struct writer *w, const struct frame *f)
{
	switch (f->type) {
	case FRAME_HELLO:
		return encode_hello(w, f);
	case FRAME_HELLO_OK:
		encode_hello_ok(w, f);
		return 0;
	case FRAME_ERROR:
	case FRAME_GOAWAY:
		put_u16(w, f->error.code);
		return put_str8(w, message_rule(f->type), f->error.message);
	case FRAME_OPEN:
		return encode_open(w, f);
	case FRAME_OPEN_OK:
		put_u32(w, f->open_ok.window);
		return 0;
	case FRAME_OPEN_FAIL:
		put_u8(w, f->open_fail.reason);
		return put_str8(w, &open_fail_message_rule, f->open_fail.message);
	case FRAME_DATA:
		if (f->data.len < DATA_MIN_SIZE || f->data.len > FRAME_MAX_PAYLOAD || !f->data.ptr)
			return -EINVAL;
		put_bytes(w, f->data.ptr, f->data.len);
		return 0;
	case FRAME_WINDOW:
		if (f->window.increment == 0)
			return -EINVAL;
		put_u32(w, f->window.increment);
		return 0;
	case FRAME_FIN:
		return 0;
	case FRAME_RST:
		put_u8(w, f->rst.reason);
		return 0;
	case FRAME_PING:
	case FRAME_PONG:
		put_bytes(w, f->ping.opaque, PING_SIZE);
		return 0;
	case FRAME_DGRAM_OPEN:
		if (put_str8(w, &dgram_open_user_rule, f->dgram_open.user) ||
		    put_str8(w, &dgram_open_group_rule, f->dgram_open.group))
			return -EINVAL;
		return 0;
	case FRAME_DGRAM:
		return encode_dgram(w, f);
	case FRAME_DGRAM_CLOSE:
		put_u8(w, f->dgram_close.reason);
		return 0;
	}
	return -EINVAL;
}

ssize_t frame_encode(uint8_t *buf, size_t cap, const struct frame *f)
{
	const struct frame_kind *kind = frame_kind(f->type);
	struct writer w = { buf, cap, 0 };
	uint8_t header[FRAME_HEADER_SIZE] = { f->type, 0 };
	int err;

	if (!kind || !stream_id_allowed(kind, f->stream_id))
		return -EINVAL;
	/* The length is patched in once the payload size is known. */
	put_be32(header + 4, f->stream_id);
	put_bytes(&w, header, sizeof(header));
	err = encode_payload(&w, f);
	if (err)
		return err;
	if (w.len > cap)
		return -ENOSPC;
	put_be16(buf + 2, (uint16_t)(w.len - FRAME_HEADER_SIZE));
	return (ssize_t)w.len;
}

void frame_put_data_header(uint8_t *buf, uint32_t stream_id, uint16_t len)
{
	assert(stream_id != 0 && len >= DATA_MIN_SIZE && len <= FRAME_MAX_PAYLOAD);
	buf[0] = FRAME_DATA;
	buf[1] = 0;
	put_be16(buf + 2, len);
	put_be32(buf + 4, stream_id);
}

/* ---- names for logs ---------------------------------------------------- */

#define UNKNOWN_NAME "UNKNOWN"

static const char *const error_names[] = {
	[FRAME_ERR_NONE] = "NONE",         [FRAME_ERR_AUTH] = "AUTH",
	[FRAME_ERR_VERSION] = "VERSION",   [FRAME_ERR_BAD_HELLO] = "BAD_HELLO",
	[FRAME_ERR_REPLACED] = "REPLACED", [FRAME_ERR_PROTOCOL] = "PROTOCOL",
	[FRAME_ERR_LIMIT] = "LIMIT",       [FRAME_ERR_SHUTDOWN] = "SHUTDOWN",
	[FRAME_ERR_TIMEOUT] = "TIMEOUT",   [FRAME_ERR_ID_IN_USE] = "ID_IN_USE",
};

static const char *const open_reason_names[] = {
	[FRAME_OPEN_GENERAL] = "GENERAL",
	[FRAME_OPEN_NOT_ALLOWED] = "NOT_ALLOWED",
	[FRAME_OPEN_NET_UNREACHABLE] = "NET_UNREACHABLE",
	[FRAME_OPEN_HOST_UNREACHABLE] = "HOST_UNREACHABLE",
	[FRAME_OPEN_REFUSED] = "REFUSED",
	[FRAME_OPEN_TIMEOUT] = "TIMEOUT",
	[FRAME_OPEN_ADDR_UNSUPPORTED] = "ADDR_UNSUPPORTED",
	[FRAME_OPEN_DNS_FAILED] = "DNS_FAILED",
	[FRAME_OPEN_LIMIT] = "LIMIT",
};

/* Codes and reasons from a newer peer are logged, not rejected. */
static const char *table_name(const char *const *names, size_t count, unsigned int value)
{
	if (value >= count || !names[value])
		return UNKNOWN_NAME;
	return names[value];
}

const char *frame_type_name(uint8_t type)
{
	const struct frame_kind *kind = frame_kind(type);

	return kind ? kind->name : UNKNOWN_NAME;
}

const char *frame_error_name(uint16_t code)
{
	return table_name(error_names, ARRAY_SIZE(error_names), code);
}

const char *frame_open_reason_name(uint8_t reason)
{
	return table_name(open_reason_names, ARRAY_SIZE(open_reason_names), reason);
}

enum frame_open_result frame_open_result(uint8_t reason)
{
	switch (reason) {
	case 0:
		return FRAME_RESULT_OK;
	case FRAME_OPEN_REFUSED:
		return FRAME_RESULT_REFUSED;
	case FRAME_OPEN_DNS_FAILED:
		return FRAME_RESULT_DNS;
	case FRAME_OPEN_TIMEOUT:
		return FRAME_RESULT_TIMEOUT;
	case FRAME_OPEN_NOT_ALLOWED:
		return FRAME_RESULT_DENIED;
	case FRAME_OPEN_NET_UNREACHABLE:
		return FRAME_RESULT_NO_AGENT;
	case FRAME_OPEN_HOST_UNREACHABLE:
		return FRAME_RESULT_UNREACHABLE;
	case FRAME_OPEN_LIMIT:
		return FRAME_RESULT_LIMIT;
	default:
		return FRAME_RESULT_ERROR;
	}
}

const char *frame_open_result_name(enum frame_open_result result)
{
	static const char *const names[FRAME_NRESULTS] = {
		[FRAME_RESULT_OK] = "ok",
		[FRAME_RESULT_REFUSED] = "refused",
		[FRAME_RESULT_DNS] = "dns",
		[FRAME_RESULT_TIMEOUT] = "timeout",
		[FRAME_RESULT_DENIED] = "denied",
		[FRAME_RESULT_NO_AGENT] = "no_agent",
		[FRAME_RESULT_UNREACHABLE] = "unreachable",
		[FRAME_RESULT_LIMIT] = "limit",
		[FRAME_RESULT_ERROR] = "error",
	};

	return (unsigned)result < FRAME_NRESULTS ? names[result] : "error";
}
