/*
 * fuzz_http.c — libFuzzer target for the HTTP/1.x proxy codec.
 *
 * The input is read, in turn, as a request head, a response head, a
 * Proxy-Authorization value and a chunked body. For each it checks the
 * codec's promises and aborts on any broken one:
 *   - errors are one of the documented codes and come with a reason;
 *   - a prefix of the input parses to need-more or to the same result;
 *   - parsed heads hold only what the grammar allows (token names, values
 *     without control bytes, at most HTTP_MAX_HEADERS fields);
 *   - a parsed target is a valid host and port, with an origin-form path;
 *   - a request or response that frames is re-written by the head writer,
 *     at most HTTP_REWRITE_GROWTH_BYTES longer, and the result parses again to the same method, target, status and
 *     fields minus the hop-by-hop ones, with the same body framing; one
 *     byte less of room is -ENOSPC;
 *   - decoded credentials re-encode to exactly the base64 received;
 *   - the chunked scanner gives the same answer whole, byte by byte and
 *     in random slices, on the input and on what follows a parsed head.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/common.h"
#include "anyproxy/http.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Room for any re-written head, and then some: a writer that broke its
 * growth bound is caught by the check rather than by -ENOSPC. */
#define WRITE_BUF_BYTES (2 * HTTP_MAX_HEAD_BYTES)
#define PREFIX_PROBES 4

static struct http_head head, again;
static uint8_t written[WRITE_BUF_BYTES];

static bool str_same(struct http_str a, struct http_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static bool str_is_nocase(struct http_str s, const char *lit)
{
	size_t n = strlen(lit), i;

	if (s.len != n)
		return false;
	for (i = 0; i < n; i++) {
		uint8_t c = s.ptr[i];

		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c + ('a' - 'A'));
		if (c != (uint8_t)lit[i])
			return false;
	}
	return true;
}

static uint32_t mix(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352d;
	x ^= x >> 15;
	x *= 0x846ca68b;
	x ^= x >> 16;
	return x;
}

static uint32_t input_seed(const uint8_t *data, size_t size)
{
	uint32_t h = (uint32_t)size;
	size_t i;

	for (i = 0; i < size && i < 16; i++)
		h = mix(h ^ data[i]);
	return h;
}

/* ---- heads ------------------------------------------------------------- */

static bool is_tchar(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void check_parsed_head(const struct http_head *h)
{
	size_t i, k;

	CHECK(h->minor_version == 0 || h->minor_version == 1);
	CHECK(h->header_count <= HTTP_MAX_HEADERS);
	for (i = 0; i < h->header_count; i++) {
		const struct http_header *f = &h->headers[i];

		CHECK(f->name.len > 0);
		for (k = 0; k < f->name.len; k++)
			CHECK(is_tchar(f->name.ptr[k]));
		for (k = 0; k < f->value.len; k++) {
			uint8_t c = f->value.ptr[k];

			CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
		}
		if (f->value.len) {
			CHECK(f->value.ptr[0] != ' ' && f->value.ptr[0] != '\t');
			CHECK(f->value.ptr[f->value.len - 1] != ' ' &&
			      f->value.ptr[f->value.len - 1] != '\t');
		}
	}
}

static bool valid_parse_error(ssize_t n)
{
	return n == -EBADMSG || n == -EMSGSIZE || n == -EPROTONOSUPPORT;
}

typedef ssize_t (*parse_fn)(const uint8_t *buf, size_t len, struct http_head *h, const char **why);

/* The whole input's result n, then what its prefixes must give. */
static ssize_t parse_checked(parse_fn parse, const uint8_t *data, size_t size, struct http_head *h)
{
	const char *why = NULL;
	ssize_t n = parse(data, size, h, &why);
	uint32_t seed = input_seed(data, size);
	size_t probe;

	if (n < 0)
		CHECK(valid_parse_error(n) && why);
	else if (n == 0)
		CHECK(size < HTTP_MAX_HEAD_BYTES);
	else
		CHECK((size_t)n <= size && n <= HTTP_MAX_HEAD_BYTES);

	for (probe = 0; probe < PREFIX_PROBES && size; probe++) {
		size_t len = probe == 0 ? size - 1 : (seed = mix(seed + (uint32_t)probe)) % size;
		ssize_t m = parse(data, len, &again, NULL);

		if (n > 0 && len >= (size_t)n)
			CHECK(m == n);
		else
			CHECK(m == 0 || (n < 0 && m == n));
	}
	if (n > 0) {
		/* The result does not depend on what follows the head. */
		CHECK(parse(data, (size_t)n, &again, NULL) == n);
		check_parsed_head(h);
	}
	return n;
}

/* Fields the writers keep, Content-Length fields counted once. */
static size_t kept_fields(const struct http_head *h, bool drop_host)
{
	bool length_seen = false;
	size_t i, n = 0;

	for (i = 0; i < h->header_count; i++) {
		const struct http_header *f = &h->headers[i];

		if (http_is_hop_by_hop(h, f) || (drop_host && str_is_nocase(f->name, "host")))
			continue;
		if (str_is_nocase(f->name, "content-length")) {
			if (length_seen)
				continue;
			length_seen = true;
		}
		n++;
	}
	return n;
}

/* Fields of `out` from index `first` are the kept fields of `in`, in
 * order, names and values as received; the one Content-Length is compared
 * through the framing instead. */
static void check_fields_kept(const struct http_head *in, const struct http_head *out, size_t first,
			      bool drop_host)
{
	bool length_seen = false;
	size_t i, o = first;

	for (i = 0; i < in->header_count; i++) {
		const struct http_header *f = &in->headers[i];

		if (http_is_hop_by_hop(in, f) || (drop_host && str_is_nocase(f->name, "host")))
			continue;
		if (str_is_nocase(f->name, "content-length")) {
			if (length_seen)
				continue;
			length_seen = true;
		} else {
			CHECK(str_same(f->value, out->headers[o].value));
		}
		CHECK(str_same(f->name, out->headers[o].name));
		o++;
	}
}

static void check_same_framing(const struct http_body_state *a, const struct http_body_state *b)
{
	CHECK(a->kind == b->kind && a->remaining == b->remaining && a->done == b->done);
}

static void check_request_rewrite(ssize_t head_len, const struct http_target *t,
				  const struct http_body_state *b, bool keep_alive)
{
	ssize_t n = http_write_request_head(written, sizeof(written), &head, t, keep_alive);
	size_t fields = kept_fields(&head, true) + 2; /* Host, Connection */
	struct http_body_state b2;
	ssize_t m;

	CHECK(n > 0 && n <= head_len + HTTP_REWRITE_GROWTH_BYTES);
	CHECK(http_write_request_head(written, (size_t)n - 1, &head, t, keep_alive) == -ENOSPC);
	m = http_parse_request(written, (size_t)n, &again, NULL);
	if (n > HTTP_MAX_HEAD_BYTES || fields > HTTP_MAX_HEADERS) {
		CHECK(m == -EMSGSIZE);
		return;
	}
	CHECK(m == n);
	CHECK(str_same(again.method, head.method));
	CHECK(again.minor_version == head.minor_version);
	CHECK(again.target.len == t->path.len + t->query.len);
	CHECK(memcmp(again.target.ptr, t->path.ptr, t->path.len) == 0);
	CHECK(t->query.len == 0 ||
	      memcmp(again.target.ptr + t->path.len, t->query.ptr, t->query.len) == 0);
	CHECK(again.header_count == fields);
	CHECK(str_is_nocase(again.headers[0].name, "host") &&
	      str_same(again.headers[0].value, t->authority));
	CHECK(str_is_nocase(again.headers[fields - 1].name, "connection"));
	/* what the origin reads is what was asked for */
	CHECK(http_request_keep_alive(&again) == keep_alive);
	check_fields_kept(&head, &again, 1, true);
	CHECK(http_request_body(&again, &b2, NULL) == 0);
	check_same_framing(b, &b2);
}

static void check_response_rewrite(ssize_t head_len, const struct http_body_state *b,
				   bool keep_alive)
{
	ssize_t n = http_write_response_head(written, sizeof(written), &head, keep_alive);
	size_t fields = kept_fields(&head, false) + 1; /* Connection */
	struct http_body_state b2;
	ssize_t m;

	CHECK(n > 0 && n <= head_len + HTTP_REWRITE_GROWTH_BYTES);
	CHECK(http_write_response_head(written, (size_t)n - 1, &head, keep_alive) == -ENOSPC);
	m = http_parse_response(written, (size_t)n, &again, NULL);
	if (n > HTTP_MAX_HEAD_BYTES || fields > HTTP_MAX_HEADERS) {
		CHECK(m == -EMSGSIZE);
		return;
	}
	CHECK(m == n);
	CHECK(again.status == head.status && again.minor_version == 1);
	CHECK(str_same(again.reason, head.reason));
	CHECK(again.header_count == fields);
	CHECK(http_header_has_token(&again, "Connection", keep_alive ? "keep-alive" : "close"));
	CHECK(http_response_keep_alive(&again) == keep_alive);
	check_fields_kept(&head, &again, 0, false);
	CHECK(http_response_body(&again, HTTP_METHOD_OTHER, &b2, NULL) == 0);
	check_same_framing(b, &b2);
}

static void check_target(const struct http_target *t)
{
	CHECK(t->port >= 1);
	CHECK(t->host.len >= 1 && t->host.len <= HTTP_MAX_HOST_BYTES);
	CHECK(t->authority.len >= t->host.len);
	CHECK(t->host_type == HTTP_HOST_NAME || t->host_type == HTTP_HOST_IPV4 ||
	      t->host_type == HTTP_HOST_IPV6);
	if (head.method_kind == HTTP_METHOD_CONNECT) {
		CHECK(t->path.len == 0 && t->query.len == 0);
		return;
	}
	CHECK(t->path.len >= 1 && t->path.ptr[0] == '/');
	CHECK(!memchr(t->path.ptr, '?', t->path.len) && !memchr(t->path.ptr, '#', t->path.len));
	CHECK(t->query.len == 0 || t->query.ptr[0] == '?');
}

/* ---- chunked ----------------------------------------------------------- */

struct scan_result {
	ssize_t consumed;
	bool done;
	const char *why;
};

/* Feed in slices of up to max_slice bytes (0: all at once). */
static struct scan_result scan_chunked(const uint8_t *data, size_t size, size_t max_slice,
				       uint32_t seed)
{
	struct scan_result r = { 0, false, NULL };
	struct http_chunked c;
	size_t off = 0;

	http_chunked_init(&c);
	for (;;) {
		size_t step = size - off;
		ssize_t n;

		if (max_slice) {
			seed = mix(seed + 1);
			step = MIN(step, seed % (max_slice + 1));
		}
		n = http_chunked_scan(&c, data + off, step, &r.done);
		if (n < 0) {
			CHECK(n == -EBADMSG && c.why && !r.done);
			r.consumed = n;
			r.why = c.why;
			return r;
		}
		CHECK((size_t)n <= step);
		off += (size_t)n;
		if (r.done) {
			bool still_done = false;

			CHECK(http_chunked_scan(&c, data + off, size - off, &still_done) == 0);
			CHECK(still_done);
			break;
		}
		CHECK((size_t)n == step);
		if (off == size)
			break;
	}
	r.consumed = (ssize_t)off;
	return r;
}

static void check_chunked(const uint8_t *data, size_t size)
{
	uint32_t seed = input_seed(data, size);
	struct scan_result whole = scan_chunked(data, size, 0, seed);
	struct scan_result bytewise = scan_chunked(data, size, 1, seed);
	struct scan_result sliced = scan_chunked(data, size, 1 + seed % 64, seed);

	CHECK(whole.consumed == bytewise.consumed && whole.done == bytewise.done &&
	      whole.why == bytewise.why);
	CHECK(whole.consumed == sliced.consumed && whole.done == sliced.done &&
	      whole.why == sliced.why);
}

/* ---- requests, responses, credentials ------------------------------------ */

static void check_credentials(const uint8_t *value, size_t len)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint8_t plain[HTTP_MAX_USERNAME_BYTES + 1 + HTTP_MAX_PASSWORD_BYTES];
	char encoded[sizeof(plain) / 3 * 4 + 4];
	struct http_credentials c;
	const char *why = NULL;
	size_t i, n, o = 0, start;
	int err = http_basic_decode(value, len, &c, &why);

	if (err) {
		static const struct http_credentials zero;

		CHECK((err == -EBADMSG || err == -EOPNOTSUPP) && why);
		CHECK(memcmp(&c, &zero, sizeof(c)) == 0);
		return;
	}
	CHECK(c.username_len <= HTTP_MAX_USERNAME_BYTES &&
	      c.password_len <= HTTP_MAX_PASSWORD_BYTES);
	CHECK(c.username[c.username_len] == '\0' && c.password[c.password_len] == '\0');
	CHECK(strlen(c.username) == c.username_len && strlen(c.password) == c.password_len);
	CHECK(!memchr(c.username, ':', c.username_len));
	CHECK(len > 6 && str_is_nocase((struct http_str){ value, 5 }, "basic"));

	memcpy(plain, c.username, c.username_len);
	plain[c.username_len] = ':';
	memcpy(plain + c.username_len + 1, c.password, c.password_len);
	n = c.username_len + 1 + c.password_len;
	for (i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)plain[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)plain[i + 1] << 8;
		if (i + 2 < n)
			v |= plain[i + 2];
		encoded[o++] = alphabet[v >> 18 & 63];
		encoded[o++] = alphabet[v >> 12 & 63];
		encoded[o++] = i + 1 < n ? alphabet[v >> 6 & 63] : '=';
		encoded[o++] = i + 2 < n ? alphabet[v & 63] : '=';
	}
	for (start = 5; start < len && value[start] == ' '; start++)
		;
	CHECK(len - start == o && memcmp(value + start, encoded, o) == 0);
}

static void check_request(const uint8_t *data, size_t size)
{
	struct http_credentials c;
	struct http_body_state b;
	struct http_target t;
	const char *why = NULL;
	ssize_t n = parse_checked(http_parse_request, data, size, &head);
	int target_err, body_err, err;

	if (n <= 0)
		return;
	http_request_keep_alive(&head);
	err = http_proxy_credentials(&head, &c, &why);
	CHECK(err == 0 || err == -ENOENT || err == -EBADMSG || err == -EOPNOTSUPP);

	why = NULL;
	target_err = http_parse_target(&head, &t, &why);
	if (target_err)
		CHECK(target_err == -EBADMSG && why);
	else
		check_target(&t);

	why = NULL;
	body_err = http_request_body(&head, &b, &why);
	if (body_err) {
		CHECK(body_err == -EBADMSG && why);
		return;
	}
	CHECK(b.kind == HTTP_BODY_NONE || b.kind == HTTP_BODY_LENGTH ||
	      b.kind == HTTP_BODY_CHUNKED);
	if (!target_err && head.method_kind != HTTP_METHOD_CONNECT)
		check_request_rewrite(n, &t, &b, size & 1);
	check_chunked(data + n, size - (size_t)n);
}

static void check_response(const uint8_t *data, size_t size)
{
	static const enum http_method methods[] = { HTTP_METHOD_OTHER, HTTP_METHOD_HEAD,
						    HTTP_METHOD_CONNECT };
	struct http_body_state b;
	ssize_t n = parse_checked(http_parse_response, data, size, &head);
	size_t i;

	if (n <= 0)
		return;
	CHECK(head.status >= 100 && head.status <= 599);
	for (i = 0; i < ARRAY_SIZE(methods); i++) {
		const char *why = NULL;
		int err = http_response_body(&head, methods[i], &b, &why);

		if (err) {
			CHECK(err == -EBADMSG && why);
			return; /* framing errors do not depend on the method */
		}
		if (methods[i] == HTTP_METHOD_HEAD || head.status < 200 || head.status == 204 ||
		    head.status == 304)
			CHECK(b.kind == HTTP_BODY_NONE);
	}
	CHECK(http_response_body(&head, HTTP_METHOD_OTHER, &b, NULL) == 0);
	/* an explicit close is never read as persistence */
	CHECK(!http_response_keep_alive(&head) ||
	      !http_header_has_token(&head, "Connection", "close"));
	check_response_rewrite(n, &b, size & 1);
	check_chunked(data + n, size - (size_t)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_request(data, size);
	check_response(data, size);
	check_credentials(data, size);
	check_chunked(data, size);
	return 0;
}
