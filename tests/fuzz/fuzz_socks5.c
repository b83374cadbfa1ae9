/*
 * fuzz_socks5.c — libFuzzer target for the SOCKS5 codec and username_split.
 *
 * The input is read two ways: as the first bytes of an auth message and of
 * a request, each parser on its own; and as a client's handshake stream —
 * greeting, then auth if user/pass was offered, then request — each parse
 * starting where the previous one stopped, the way the state machine feeds
 * them. Every parse is checked against the codec's promises (socks5.h), and
 * any broken one aborts:
 *   - the result is a size within the input and the message maximum, 0, or
 *     one of the documented errors; need-more only below the maximum;
 *   - every shorter prefix of a parsed message needs more; an error, once
 *     reported for a prefix, stays the same error for every longer one;
 *   - the output is written only on success, and then its strings are
 *     NUL-terminated, NUL-free copies of the input with consistent lengths,
 *     a domain holding only host-name bytes;
 *   - an IPv4/IPv6 request re-encodes through socks5_encode_reply to the
 *     same bytes (RSV aside);
 *   - username_split returns a base without '.' and a group that is the
 *     tail of its input, for both the raw input and a parsed username.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/common.h"
#include "anyproxy/socks5.h"
#include "anyproxy/username.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum message_kind { GREETING, AUTH, REQUEST };

static const size_t message_max[] = {
	[GREETING] = SOCKS5_GREETING_MAX,
	[AUTH] = SOCKS5_AUTH_MAX,
	[REQUEST] = SOCKS5_REQUEST_MAX,
};

union parse_output {
	struct socks5_greeting greeting;
	struct socks5_auth auth;
	struct socks5_request request;
};

#define CANARY 0xa5
#define REQUEST_RSV_OFFSET 2

/* One parse; aborts if a parse that consumed nothing wrote its output. */
static int parse(enum message_kind kind, const uint8_t *p, size_t n, union parse_output *out)
{
	union parse_output before;
	int r = 0;

	memset(out, CANARY, sizeof(*out));
	memcpy(&before, out, sizeof(before));
	switch (kind) {
	case GREETING:
		r = socks5_parse_greeting(p, n, &out->greeting);
		break;
	case AUTH:
		r = socks5_parse_auth(p, n, &out->auth);
		break;
	case REQUEST:
		r = socks5_parse_request(p, n, &out->request);
		break;
	}
	if (r <= 0 && memcmp(&before, out, sizeof(before)) != 0)
		abort();
	return r;
}

static void check_split(const char *full, size_t len)
{
	struct username_parts u;

	username_split(full, len, &u);
	if (u.base != full || u.base_len > len || memchr(u.base, '.', u.base_len))
		abort();
	if (u.group + u.group_len != full + len)
		abort();
	if (u.base_len == len ? u.group_len != 0
			      : (full[u.base_len] != '.' || u.group != full + u.base_len + 1))
		abort();
}

/* A C string copied from n input bytes at src. */
static void check_name(const char *name, size_t len, const uint8_t *src)
{
	if (len > SOCKS5_NAME_MAX || name[len] != '\0' || strlen(name) != len ||
	    memcmp(name, src, len) != 0)
		abort();
}

static bool all_zero(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void check_greeting(const uint8_t *p, int r, const struct socks5_greeting *g)
{
	size_t nmethods = p[1];

	if ((size_t)r != 2 + nmethods || nmethods == 0)
		abort();
	if (g->no_auth != (memchr(p + 2, SOCKS5_METHOD_NO_AUTH, nmethods) != NULL) ||
	    g->userpass != (memchr(p + 2, SOCKS5_METHOD_USERPASS, nmethods) != NULL))
		abort();
}

static void check_auth(const uint8_t *p, int r, const struct socks5_auth *a)
{
	if (a->username_len == 0 || (size_t)r != 3 + a->username_len + a->password_len)
		abort();
	check_name(a->username, a->username_len, p + 2);
	check_name(a->password, a->password_len, p + 3 + a->username_len);
	check_split(a->username, a->username_len);
}

static void check_request(const uint8_t *p, int r, const struct socks5_request *q)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	uint8_t reply[SOCKS5_REPLY_MAX], original[SOCKS5_REPLY_MAX];
	size_t addr_size;

	if (q->command != p[1] || q->addr_type != p[3] || q->port != get_be16(p + r - 2))
		abort();
	memset(&ss, 0, sizeof(ss));
	switch (q->addr_type) {
	case SOCKS5_ADDR_DOMAIN:
		if (q->domain_len == 0 || (size_t)r != 4 + 1 + q->domain_len + 2 ||
		    !all_zero(q->addr, sizeof(q->addr)))
			abort();
		check_name(q->domain, q->domain_len, p + 5);
		if (strspn(q->domain, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				      "0123456789-_.:[]") != q->domain_len)
			abort(); /* only bytes a host name or IPv6 literal holds */
		return;
	case SOCKS5_ADDR_IPV4:
		addr_size = 4;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, q->addr, addr_size);
		sin->sin_port = htons(q->port);
		break;
	case SOCKS5_ADDR_IPV6:
		addr_size = 16;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, q->addr, addr_size);
		sin6->sin6_port = htons(q->port);
		break;
	default:
		abort();
	}
	if ((size_t)r != 4 + addr_size + 2 || q->domain_len != 0 || q->domain[0] != '\0' ||
	    memcmp(q->addr, p + 4, addr_size) != 0 ||
	    !all_zero(q->addr + addr_size, sizeof(q->addr) - addr_size))
		abort();

	/* A reply carries the same layout, with REP where CMD was. */
	if (socks5_encode_reply(reply, p[1], (const struct sockaddr *)&ss) != (size_t)r)
		abort();
	memcpy(original, p, (size_t)r);
	original[REQUEST_RSV_OFFSET] = 0;
	if (memcmp(reply, original, (size_t)r) != 0)
		abort();
}

/* Parse one message at p and check every promise; returns the result. */
static int check_parse(enum message_kind kind, const uint8_t *p, size_t n, union parse_output *out)
{
	const size_t max = message_max[kind];
	union parse_output scratch;
	bool failed = false;
	size_t limit, k;
	int r = parse(kind, p, n, out);

	if (r > 0 && ((size_t)r > n || (size_t)r > max))
		abort();
	if (r == 0 && n >= max)
		abort();
	if (r < 0 && r != -EPROTO && !(kind == GREETING && r == -ENOPROTOOPT) &&
	    !(kind == REQUEST && (r == -EAFNOSUPPORT || r == -EINVAL)))
		abort();

	/* Beyond a parsed message's end nothing is read, so its size bounds the
	 * prefixes worth trying; an error must show within the maximum. */
	limit = r > 0 ? (size_t)r : MIN(n, max);
	for (k = 0; k < limit; k++) {
		int q = parse(kind, p, k, &scratch);

		if (r > 0 ? q != 0 : q != 0 && q != r)
			abort();
		if (q != 0)
			failed = true;
		else if (failed)
			abort();
	}
	if (r < 0 && !failed && limit < n && parse(kind, p, limit, &scratch) != r)
		abort();
	if (r <= 0)
		return r;

	switch (kind) {
	case GREETING:
		check_greeting(p, r, &out->greeting);
		break;
	case AUTH:
		check_auth(p, r, &out->auth);
		break;
	case REQUEST:
		check_request(p, r, &out->request);
		break;
	}
	return r;
}

static void check_handshake(const uint8_t *data, size_t size)
{
	union parse_output out;
	size_t off = 0;
	int r;

	r = check_parse(GREETING, data, size, &out);
	if (r <= 0)
		return;
	off += (size_t)r;
	if (out.greeting.userpass) {
		r = check_parse(AUTH, data + off, size - off, &out);
		if (r <= 0)
			return;
		off += (size_t)r;
	} else if (!out.greeting.no_auth) {
		return; /* the server answers SOCKS5_METHOD_NO_ACCEPTABLE */
	}
	check_parse(REQUEST, data + off, size - off, &out);
}

/* The input as one UDP ASSOCIATE datagram: a header within the input and
 * SOCKS5_UDP_HEADER_MAX, output written only on success, a domain of
 * host-name bytes, and an IP header that re-encodes to the same bytes
 * (RSV and FRAG aside). */
static void check_udp_header(const uint8_t *data, size_t size)
{
	struct socks5_udp_header h, before;
	uint8_t again[SOCKS5_UDP_REPLY_HEADER_MAX];
	struct sockaddr_storage ss;
	int r;

	memset(&h, CANARY, sizeof(h));
	memcpy(&before, &h, sizeof(h));
	r = socks5_parse_udp_header(data, size, &h);
	if (r <= 0) {
		if ((r != -EBADMSG && r != -EAFNOSUPPORT && r != -EINVAL) ||
		    memcmp(&before, &h, sizeof(h)) != 0)
			abort();
		return;
	}
	if ((size_t)r > size || r > SOCKS5_UDP_HEADER_MAX || h.frag != data[2])
		abort();
	if (h.addr_type == SOCKS5_ADDR_DOMAIN) {
		if (!h.domain_len || strlen(h.domain) != h.domain_len)
			abort();
		return;
	}
	memset(&ss, 0, sizeof(ss));
	if (h.addr_type == SOCKS5_ADDR_IPV4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, h.addr, 4);
		sin->sin_port = htons(h.port);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, h.addr, 16);
		sin6->sin6_port = htons(h.port);
	}
	if (socks5_encode_udp_header(again, (struct sockaddr *)&ss) != (size_t)r ||
	    memcmp(again + 3, data + 3, (size_t)r - 3) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	union parse_output out;

	check_udp_header(data, size);
	check_parse(AUTH, data, size, &out);
	check_parse(REQUEST, data, size, &out);
	check_handshake(data, size);
	check_split((const char *)data, size);
	if (size) {
		uint8_t rep = socks5_reply_for_open_reason(data[0]);

		if (rep == SOCKS5_REP_SUCCEEDED || rep > SOCKS5_REP_ADDRESS_TYPE_NOT_SUPPORTED ||
		    !socks5_reply_name(data[0]))
			abort();
	}
	return 0;
}
