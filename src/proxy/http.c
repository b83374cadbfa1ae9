/*
 * http.c — HTTP/1.x proxy codec (see http.h for the contracts).
 *
 * Pure: no I/O, no allocation, no state besides the const tables below.
 * Written for this project rather than taken from libhttp-parser (DESIGN,
 * "Libraries before hand-written code"): we forward bodies verbatim and
 * must decide ourselves, byte for byte, where a message ends and which
 * ambiguous inputs to refuse; a small parser that is fuzzed does that with
 * less to audit than a general one configured into strictness.
 *
 * Grammar references are to RFC 9110 (semantics) and RFC 9112 (HTTP/1.1).
 */
#include "anyproxy/http.h"
#include "anyproxy/common.h"
#include "anyproxy/grammar.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

/* "HTTP/d.d" (RFC 9112 §2.3) and "SSS" (§4). */
#define VERSION_LEN 8
#define STATUS_LEN 3
#define STATUS_MIN 100
#define STATUS_MAX 599
#define STATUS_LINE_MIN_LEN (VERSION_LEN + 1 + STATUS_LEN)
#define PORT_MAX_DIGITS 5
#define PORT_MAX 65535
#define IPV4_TEXT_MAX (INET_ADDRSTRLEN - 1) /* "255.255.255.255" */
#define IPV6_TEXT_MAX (INET6_ADDRSTRLEN - 1)
#define BASE64_QUANTUM_CHARS 4
#define BASE64_QUANTUM_BYTES 3
#define BASE64_BITS_PER_CHAR 6
#define DECIMAL_MAX_DIGITS 20 /* UINT64_MAX */
#define HEX_BITS 4

_Static_assert(HTTP_MAX_HOST_BYTES >= IPV6_TEXT_MAX, "an IPv6 literal fits the host limit");
_Static_assert(sizeof(((struct http_target *)0)->addr) == 16, "addr holds IPv6");

static int fail(const char **why, int err, const char *reason)
{
	if (why)
		*why = reason;
	return err;
}

/* ---- characters (RFC 9110 §5.6.2, §5.5) -------------------------------- */

static bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_tchar(uint8_t c)
{
	if (is_digit(c) || is_alpha(c))
		return true;
	switch (c) {
	/* clang-format off */
	case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
	case '+': case '-': case '.': case '^': case '_': case '`': case '|':
	case '~':
		/* clang-format on */
		return true;
	default:
		return false;
	}
}

static bool is_ows(uint8_t c)
{
	return c == ' ' || c == '\t';
}

/* field-vchar, SP, HTAB and obs-text: every byte except the controls. */
static bool is_field_char(uint8_t c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* request-target bytes: visible ASCII and obs-text, no space. */
static bool is_target_char(uint8_t c)
{
	return c > 0x20 && c != 0x7f;
}

static uint8_t ascii_lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* ---- slices ------------------------------------------------------------ */

static bool equal_nocase(const uint8_t *a, const uint8_t *b, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (ascii_lower(a[i]) != ascii_lower(b[i]))
			return false;
	return true;
}

/* s is lit, ignoring case. Inlined, so a literal's length is known when
 * compiled; callers looping over one name take its length once
 * (STR_LIT, str_equal_nocase). */
static inline bool str_is(struct http_str s, const char *lit)
{
	size_t n = strlen(lit);

	return s.len == n && equal_nocase(s.ptr, (const uint8_t *)lit, n);
}

static bool str_starts_with(struct http_str s, const char *lit)
{
	size_t n = strlen(lit);

	return s.len >= n && equal_nocase(s.ptr, (const uint8_t *)lit, n);
}

#define STR_LIT(lit)                                                  \
	{                                                             \
		.ptr = (const uint8_t *)(lit), .len = sizeof(lit) - 1 \
	}

static bool str_equal_nocase(struct http_str a, struct http_str b)
{
	return a.len == b.len && equal_nocase(a.ptr, b.ptr, a.len);
}

static size_t token_span(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n && is_tchar(p[i]))
		i++;
	return i;
}

static struct http_str trim_ows(struct http_str s)
{
	while (s.len && is_ows(s.ptr[0])) {
		s.ptr++;
		s.len--;
	}
	while (s.len && is_ows(s.ptr[s.len - 1]))
		s.len--;
	return s;
}

/*
 * Take the next element off a comma-separated list (RFC 9110 §5.6.1),
 * without its surrounding whitespace. Empty elements are returned too, so
 * strict callers can refuse them. *rest becomes {NULL, 0} after the last.
 */
static bool list_next(struct http_str *rest, struct http_str *element)
{
	const uint8_t *comma;
	size_t n;

	if (!rest->ptr)
		return false;
	comma = memchr(rest->ptr, ',', rest->len);
	n = comma ? (size_t)(comma - rest->ptr) : rest->len;
	*element = trim_ows((struct http_str){ rest->ptr, n });
	if (comma)
		*rest = (struct http_str){ comma + 1, rest->len - n - 1 };
	else
		*rest = (struct http_str){ NULL, 0 };
	return true;
}

/* ---- heads ------------------------------------------------------------- */

/*
 * The line starting at *pos, if its LF lies before end: its content without
 * the CRLF or LF goes to *line and *pos moves past the line. Returns 1, 0
 * when the line is incomplete, or -EBADMSG for a CR not followed by LF.
 */
static int next_line(const uint8_t *buf, size_t end, size_t *pos, struct http_str *line,
		     const char **why)
{
	const uint8_t *start = buf + *pos;
	const uint8_t *lf = memchr(start, '\n', end - *pos);
	size_t n;

	if (!lf)
		return 0;
	n = (size_t)(lf - start);
	*pos += n + 1;
	if (n && start[n - 1] == '\r')
		n--;
	if (memchr(start, '\r', n))
		return fail(why, -EBADMSG, "bare CR in head");
	*line = (struct http_str){ start, n };
	return 1;
}

static int parse_version(struct http_str v, int *minor, const char **why)
{
	const uint8_t *p = v.ptr;

	if (v.len != VERSION_LEN || memcmp(p, "HTTP/", 5) != 0 || !is_digit(p[5]) || p[6] != '.' ||
	    !is_digit(p[7]))
		return fail(why, -EBADMSG, "malformed HTTP version");
	if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
		return fail(why, -EPROTONOSUPPORT, "HTTP version not supported");
	*minor = p[7] - '0';
	return 0;
}

/* The method must be a token followed by SP. Also used on an incomplete
 * request line, where it fails only when no further byte can help. */
static int check_method(const uint8_t *p, size_t n, const char **why)
{
	size_t i = token_span(p, n);

	if (i < n && (i == 0 || p[i] != ' '))
		return fail(why, -EBADMSG, "method is not a token");
	return 0;
}

/* request-line = method SP request-target SP HTTP-version (RFC 9112 §3) */
static int parse_request_line(struct http_str line, struct http_head *h, const char **why)
{
	const uint8_t *p = line.ptr;
	size_t m = token_span(p, line.len), t;
	int err = check_method(p, line.len, why);

	if (err)
		return err;
	if (m == line.len)
		return fail(why, -EBADMSG, "malformed request line");
	h->method = (struct http_str){ p, m };
	t = m + 1;
	while (t < line.len && is_target_char(p[t]))
		t++;
	if (t == m + 1 || t == line.len || p[t] != ' ')
		return fail(why, -EBADMSG, "malformed request target");
	h->target = (struct http_str){ p + m + 1, t - m - 1 };
	err = parse_version((struct http_str){ p + t + 1, line.len - t - 1 }, &h->minor_version,
			    why);
	if (err)
		return err;
	if (m == 4 && memcmp(p, "HEAD", 4) == 0)
		h->method_kind = HTTP_METHOD_HEAD;
	else if (m == 7 && memcmp(p, "CONNECT", 7) == 0)
		h->method_kind = HTTP_METHOD_CONNECT;
	return 0;
}

/* status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112
 * §4); a missing SP before an empty reason is tolerated, as clients do. */
static int parse_status_line(struct http_str line, struct http_head *h, const char **why)
{
	const uint8_t *p = line.ptr;
	size_t i;
	int err;

	if (line.len < STATUS_LINE_MIN_LEN)
		return fail(why, -EBADMSG, "malformed status line");
	err = parse_version((struct http_str){ p, VERSION_LEN }, &h->minor_version, why);
	if (err)
		return err;
	if (p[VERSION_LEN] != ' ' || !is_digit(p[9]) || !is_digit(p[10]) || !is_digit(p[11]))
		return fail(why, -EBADMSG, "malformed status line");
	h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	if (h->status < STATUS_MIN || h->status > STATUS_MAX)
		return fail(why, -EBADMSG, "status code out of range");
	if (line.len == STATUS_LINE_MIN_LEN)
		return 0;
	if (p[STATUS_LINE_MIN_LEN] != ' ')
		return fail(why, -EBADMSG, "malformed status line");
	for (i = STATUS_LINE_MIN_LEN + 1; i < line.len; i++)
		if (!is_field_char(p[i]))
			return fail(why, -EBADMSG, "control byte in reason phrase");
	h->reason = (struct http_str){ p + STATUS_LINE_MIN_LEN + 1,
				       line.len - STATUS_LINE_MIN_LEN - 1 };
	return 0;
}

/* field-line = field-name ":" OWS field-value OWS (RFC 9112 §5) */
static int parse_field_line(struct http_str line, struct http_header *f, const char **why)
{
	const uint8_t *p = line.ptr;
	size_t n = token_span(p, line.len), i;

	if (n == line.len)
		return fail(why, -EBADMSG, "field line without colon");
	if (is_ows(p[n]))
		return fail(why, -EBADMSG, "whitespace before colon in field line");
	if (n == 0 || p[n] != ':')
		return fail(why, -EBADMSG, "field name is not a token");
	f->name = (struct http_str){ p, n };
	f->value = trim_ows((struct http_str){ p + n + 1, line.len - n - 1 });
	for (i = 0; i < f->value.len; i++)
		if (!is_field_char(f->value.ptr[i]))
			return fail(why, -EBADMSG, "control byte in field value");
	return 0;
}

/*
 * Only the first HTTP_MAX_HEAD_BYTES of buf are looked at, and lines only
 * once complete (bar the method check), so the result of a prefix is 0 or
 * the result of the whole.
 */
static ssize_t parse_head(const uint8_t *buf, size_t len, struct http_head *h, bool request,
			  const char **why)
{
	size_t end = MIN(len, (size_t)HTTP_MAX_HEAD_BYTES), pos = 0;
	struct http_str line;
	int r;

	h->method = h->target = h->reason = (struct http_str){ NULL, 0 };
	h->method_kind = HTTP_METHOD_OTHER;
	h->status = 0;
	h->minor_version = 0;
	h->header_count = 0;

	while (request && pos < end && (buf[pos] == '\r' || buf[pos] == '\n')) {
		if (buf[pos] == '\n') {
			pos++;
		} else if (pos + 1 == end) {
			goto incomplete;
		} else if (buf[pos + 1] != '\n') {
			return fail(why, -EBADMSG, "bare CR in head");
		} else {
			pos += 2;
		}
	}
	r = next_line(buf, end, &pos, &line, why);
	if (r == 0) {
		r = request ? check_method(buf + pos, end - pos, why) : 0;
		if (r)
			return r;
		goto incomplete;
	}
	if (r < 0)
		return r;
	r = request ? parse_request_line(line, h, why) : parse_status_line(line, h, why);
	if (r)
		return r;
	for (;;) {
		r = next_line(buf, end, &pos, &line, why);
		if (r == 0)
			goto incomplete;
		if (r < 0)
			return r;
		if (line.len == 0)
			return (ssize_t)pos;
		if (is_ows(line.ptr[0]))
			return fail(why, -EBADMSG, "obs-fold (line folding) in head");
		if (h->header_count == HTTP_MAX_HEADERS)
			return fail(why, -EMSGSIZE, "more than 100 header fields");
		r = parse_field_line(line, &h->headers[h->header_count], why);
		if (r)
			return r;
		h->header_count++;
	}
incomplete:
	if (len >= HTTP_MAX_HEAD_BYTES)
		return fail(why, -EMSGSIZE, "head over 32768 bytes");
	return 0;
}
_Static_assert(HTTP_MAX_HEADERS == 100 && HTTP_MAX_HEAD_BYTES == 32768,
	       "update the limit messages in parse_head");

ssize_t http_parse_request(const uint8_t *buf, size_t len, struct http_head *h, const char **why)
{
	return parse_head(buf, len, h, true, why);
}

ssize_t http_parse_response(const uint8_t *buf, size_t len, struct http_head *h, const char **why)
{
	return parse_head(buf, len, h, false, why);
}

int http_error_status(int err)
{
	switch (err) {
	case -EMSGSIZE:
		return 431;
	case -EPROTONOSUPPORT:
		return 505;
	default:
		return 400;
	}
}

static const struct {
	int status;
	const char *reason;
} status_reasons[] = {
	{ 400, "Bad Request" },
	{ 403, "Forbidden" },
	{ 407, "Proxy Authentication Required" },
	{ 408, "Request Timeout" },
	{ 431, "Request Header Fields Too Large" },
	{ 500, "Internal Server Error" },
	{ 502, "Bad Gateway" },
	{ 503, "Service Unavailable" },
	{ 504, "Gateway Timeout" },
	{ 505, "HTTP Version Not Supported" },
};

const char *http_status_reason(int status)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(status_reasons); i++)
		if (status_reasons[i].status == status)
			return status_reasons[i].reason;
	return NULL;
}

/* ---- targets ----------------------------------------------------------- */

static const uint8_t root_path[] = "/";

/* Port digits after the ':' (RFC 3986 §3.2.3); empty means the default. */
static int parse_port(struct http_str s, bool required, uint16_t *port, const char **why)
{
	unsigned long v = 0;
	size_t i;

	if (s.len == 0) {
		if (required)
			return fail(why, -EBADMSG, "port missing in target");
		*port = HTTP_DEFAULT_PORT;
		return 0;
	}
	for (i = 0; i < s.len; i++) {
		if (!is_digit(s.ptr[i]))
			return fail(why, -EBADMSG, "port is not a number");
		if (i < PORT_MAX_DIGITS)
			v = v * 10 + (s.ptr[i] - '0');
	}
	if (v == 0 || v > PORT_MAX || s.len > PORT_MAX_DIGITS)
		return fail(why, -EBADMSG, "port out of range");
	*port = (uint16_t)v;
	return 0;
}

static int parse_ipv6(struct http_str host, struct http_target *t, const char **why)
{
	char text[IPV6_TEXT_MAX + 1];
	size_t i;

	if (host.len == 0 || host.len > IPV6_TEXT_MAX)
		return fail(why, -EBADMSG, "bad IPv6 literal");
	/* Hex, colons and an embedded IPv4 tail only: no zone id, no IPvFuture. */
	for (i = 0; i < host.len; i++)
		if (grammar_hex_value(host.ptr[i]) < 0 && host.ptr[i] != ':' && host.ptr[i] != '.')
			return fail(why, -EBADMSG, "bad IPv6 literal");
	memcpy(text, host.ptr, host.len);
	text[host.len] = '\0';
	if (inet_pton(AF_INET6, text, t->addr) != 1)
		return fail(why, -EBADMSG, "bad IPv6 literal");
	t->host_type = HTTP_HOST_IPV6;
	t->host = host;
	return 0;
}

/* Whether a label reads as a number to an address parser (inet_aton and
 * the URL standard's host parser): all digits, or 0x and hex digits. */
static bool label_is_numeric(const uint8_t *p, size_t n)
{
	size_t i = 0;

	if (n >= 2 && p[0] == '0' && ascii_lower(p[1]) == 'x') {
		for (i = 2; i < n; i++)
			if (grammar_hex_value(p[i]) < 0)
				return false;
		return true;
	}
	for (; i < n; i++)
		if (!is_digit(p[i]))
			return false;
	return n > 0;
}

/* A host name (grammar_host_name: the agent's rules take the same names)
 * or a dotted-quad IPv4 address. */
static int parse_name(struct http_str host, struct http_target *t, const char **why)
{
	size_t label_start, name_len;
	char text[IPV4_TEXT_MAX + 1];
	const char *reason;
	const uint8_t *dot;
	int n;

	n = grammar_host_name((const char *)host.ptr, host.len, &reason);
	if (n < 0)
		return fail(why, -EBADMSG, reason);
	name_len = (size_t)n;
	dot = memrchr(host.ptr, '.', name_len);
	label_start = dot ? (size_t)(dot - host.ptr) + 1 : 0;
	t->host = host;
	if (!label_is_numeric(host.ptr + label_start, name_len - label_start)) {
		t->host_type = HTTP_HOST_NAME;
		return 0;
	}
	if (host.len > IPV4_TEXT_MAX)
		return fail(why, -EBADMSG, "numeric host is not an IPv4 address");
	memcpy(text, host.ptr, host.len);
	text[host.len] = '\0';
	if (inet_pton(AF_INET, text, t->addr) != 1)
		return fail(why, -EBADMSG, "numeric host is not an IPv4 address");
	t->host_type = HTTP_HOST_IPV4;
	return 0;
}

/* An IPv6 address written without its brackets ("::1:8080", which some
 * clients send): only bytes an address holds, and a "::" or the six colons
 * and more of an address written out in full. Refused, never guessed at:
 * where its port would start is ambiguous. */
static bool bare_ipv6(struct http_str a)
{
	size_t colons = 0;

	for (size_t i = 0; i < a.len; i++) {
		if (a.ptr[i] == ':')
			colons++;
		else if (grammar_hex_value(a.ptr[i]) < 0 && a.ptr[i] != '.')
			return false;
	}
	return colons >= 6 || memmem(a.ptr, a.len, "::", 2);
}

/* authority = host [ ":" port ], host = "[" IPv6 "]" / IPv4 / reg-name */
static int parse_authority(struct http_str a, struct http_target *t, bool port_required,
			   const char **why)
{
	struct http_str host, port = { NULL, 0 };
	int err;

	t->authority = a;
	if (a.len && a.ptr[0] == '[') {
		const uint8_t *close = memchr(a.ptr, ']', a.len);
		size_t after;

		if (!close)
			return fail(why, -EBADMSG, "bad IPv6 literal");
		host = (struct http_str){ a.ptr + 1, (size_t)(close - a.ptr) - 1 };
		after = (size_t)(close - a.ptr) + 1;
		if (after < a.len && a.ptr[after] != ':')
			return fail(why, -EBADMSG, "bad IPv6 literal");
		if (after < a.len)
			port = (struct http_str){ a.ptr + after + 1, a.len - after - 1 };
		else if (port_required)
			return fail(why, -EBADMSG, "port missing in target");
		err = parse_ipv6(host, t, why);
	} else {
		const uint8_t *colon = memchr(a.ptr, ':', a.len);

		if (bare_ipv6(a))
			return fail(why, -EBADMSG,
				    "IPv6 address in target without brackets (write [v6]:port)");
		if (colon) {
			host = (struct http_str){ a.ptr, (size_t)(colon - a.ptr) };
			port = (struct http_str){ colon + 1, a.len - host.len - 1 };
		} else if (port_required) {
			return fail(why, -EBADMSG, "port missing in target");
		} else {
			host = a;
		}
		err = parse_name(host, t, why);
	}
	if (err)
		return err;
	return parse_port(port, port_required, &t->port, why);
}

/* absolute-URI with the http scheme (RFC 9112 §3.2.2, RFC 9110 §4.2.1) */
static int parse_absolute(struct http_str s, struct http_target *t, const char **why)
{
	static const char http_scheme[] = "http://";
	struct http_str rest;
	size_t k = 0, q;
	int err;

	if (!str_starts_with(s, http_scheme)) {
		if (str_starts_with(s, "https://"))
			return fail(why, -EBADMSG, "https:// target needs CONNECT");
		if (s.len && (s.ptr[0] == '/' || s.ptr[0] == '*'))
			return fail(why, -EBADMSG, "origin-form target in a proxy request");
		return fail(why, -EBADMSG, "target is not an http:// URI");
	}
	rest = (struct http_str){ s.ptr + sizeof(http_scheme) - 1,
				  s.len - (sizeof(http_scheme) - 1) };
	if (memchr(rest.ptr, '#', rest.len))
		return fail(why, -EBADMSG, "fragment in request target");
	while (k < rest.len && rest.ptr[k] != '/' && rest.ptr[k] != '?')
		k++;
	if (memchr(rest.ptr, '@', k))
		return fail(why, -EBADMSG, "userinfo in request target");
	err = parse_authority((struct http_str){ rest.ptr, k }, t, false, why);
	if (err)
		return err;
	q = k;
	while (q < rest.len && rest.ptr[q] != '?')
		q++;
	if (q > k)
		t->path = (struct http_str){ rest.ptr + k, q - k };
	else
		t->path = (struct http_str){ root_path, 1 };
	t->query = (struct http_str){ rest.ptr + q, rest.len - q };
	return 0;
}

int http_parse_target(const struct http_head *req, struct http_target *t, const char **why)
{
	memset(t, 0, sizeof(*t));
	if (req->method_kind == HTTP_METHOD_CONNECT)
		return parse_authority(req->target, t, true, why);
	return parse_absolute(req->target, t, why);
}

/* ---- fields ------------------------------------------------------------ */

const struct http_header *http_header_next(const struct http_head *h, const char *name,
					   const struct http_header *prev)
{
	size_t i = prev ? (size_t)(prev - h->headers) + 1 : 0;
	struct http_str want = { .ptr = (const uint8_t *)name, .len = strlen(name) };

	for (; i < h->header_count; i++)
		if (str_equal_nocase(h->headers[i].name, want))
			return &h->headers[i];
	return NULL;
}

bool http_header_has_token(const struct http_head *h, const char *name, const char *token)
{
	const struct http_header *f = NULL;
	struct http_str want = { .ptr = (const uint8_t *)token, .len = strlen(token) };

	while ((f = http_header_next(h, name, f))) {
		struct http_str rest = f->value, element;

		while (list_next(&rest, &element))
			if (str_equal_nocase(element, want))
				return true;
	}
	return false;
}

static const struct http_str hop_by_hop_fields[] = {
	STR_LIT("Connection"),
	STR_LIT("Proxy-Connection"),
	STR_LIT("Keep-Alive"),
	STR_LIT("Proxy-Authorization"),
	STR_LIT("Proxy-Authenticate"),
	STR_LIT("TE"),
	STR_LIT("Trailer"),
	STR_LIT("Upgrade"),
};

bool http_is_hop_by_hop(const struct http_head *h, const struct http_header *field)
{
	const struct http_header *c = NULL;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(hop_by_hop_fields); i++)
		if (str_equal_nocase(field->name, hop_by_hop_fields[i]))
			return true;
	if (str_is(field->name, "Content-Length") || str_is(field->name, "Transfer-Encoding"))
		return false;
	while ((c = http_header_next(h, "Connection", c))) {
		struct http_str rest = c->value, element;

		while (list_next(&rest, &element))
			if (str_equal_nocase(element, field->name))
				return true;
	}
	return false;
}

bool http_request_keep_alive(const struct http_head *req)
{
	if (http_header_has_token(req, "Connection", "close"))
		return false;
	return req->minor_version == 1 || http_header_has_token(req, "Connection", "keep-alive");
}

bool http_response_keep_alive(const struct http_head *resp)
{
	/* RFC 9112 §9.3: the same persistence rule both ways */
	return http_request_keep_alive(resp);
}

/* ---- Basic proxy credentials (RFC 7617) -------------------------------- */

static int base64_value(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (is_digit(c))
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Append one decoded byte of "user:pass" where it belongs. */
static int credentials_put(struct http_credentials *c, bool *in_password, uint8_t byte,
			   const char **why)
{
	if (byte == '\0')
		return fail(why, -EBADMSG, "NUL in credentials");
	if (!*in_password && byte == ':') {
		*in_password = true;
		return 0;
	}
	if (!*in_password) {
		if (c->username_len == HTTP_MAX_USERNAME_BYTES)
			return fail(why, -EBADMSG, "username over 255 bytes");
		c->username[c->username_len++] = (char)byte;
	} else {
		if (c->password_len == HTTP_MAX_PASSWORD_BYTES)
			return fail(why, -EBADMSG, "password over 255 bytes");
		c->password[c->password_len++] = (char)byte;
	}
	return 0;
}
_Static_assert(HTTP_MAX_USERNAME_BYTES == 255 && HTTP_MAX_PASSWORD_BYTES == 255,
	       "update the messages in credentials_put");

/* Strict padded base64 (RFC 4648 §4): whole quanta, '=' only to pad the
 * last one, and the bits a pad leaves over must be zero. */
static int decode_base64_credentials(const uint8_t *p, size_t n, struct http_credentials *c,
				     const char **why)
{
	bool in_password = false;
	size_t q, i;
	int err;

	if (n == 0 || n % BASE64_QUANTUM_CHARS)
		return fail(why, -EBADMSG, "credentials are not padded base64");
	for (q = 0; q < n; q += BASE64_QUANTUM_CHARS) {
		bool last = q + BASE64_QUANTUM_CHARS == n;
		size_t pad = 0, out;
		uint32_t bits = 0;
		uint8_t bytes[BASE64_QUANTUM_BYTES];

		if (last && p[q + 3] == '=')
			pad = p[q + 2] == '=' ? 2 : 1;
		for (i = 0; i < BASE64_QUANTUM_CHARS - pad; i++) {
			int v = base64_value(p[q + i]);

			if (v < 0)
				return fail(why, -EBADMSG, "credentials are not padded base64");
			bits = bits << BASE64_BITS_PER_CHAR | (uint32_t)v;
		}
		bits <<= BASE64_BITS_PER_CHAR * pad;
		if ((pad == 1 && (bits & 0xff)) || (pad == 2 && (bits & 0xffff)))
			return fail(why, -EBADMSG, "credentials are not canonical base64");
		bytes[0] = (uint8_t)(bits >> 16);
		bytes[1] = (uint8_t)(bits >> 8);
		bytes[2] = (uint8_t)bits;
		out = BASE64_QUANTUM_BYTES - pad;
		for (i = 0; i < out; i++) {
			err = credentials_put(c, &in_password, bytes[i], why);
			if (err)
				return err;
		}
	}
	if (!in_password)
		return fail(why, -EBADMSG, "credentials without ':'");
	return 0;
}

int http_basic_decode(const uint8_t *value, size_t len, struct http_credentials *c,
		      const char **why)
{
	size_t scheme = token_span(value, len), i;
	int err;

	memset(c, 0, sizeof(*c));
	if (scheme == 0 || (scheme < len && value[scheme] != ' '))
		return fail(why, -EBADMSG, "malformed Proxy-Authorization");
	if (!str_is((struct http_str){ value, scheme }, "Basic"))
		return fail(why, -EOPNOTSUPP, "Proxy-Authorization scheme is not Basic");
	for (i = scheme; i < len && value[i] == ' '; i++)
		;
	err = decode_base64_credentials(value + i, len - i, c, why);
	if (err)
		memset(c, 0, sizeof(*c));
	return err;
}

int http_proxy_credentials(const struct http_head *req, struct http_credentials *c,
			   const char **why)
{
	const struct http_header *f = http_header_next(req, "Proxy-Authorization", NULL);

	if (!f) {
		memset(c, 0, sizeof(*c));
		return fail(why, -ENOENT, "no Proxy-Authorization");
	}
	if (http_header_next(req, "Proxy-Authorization", f)) {
		memset(c, 0, sizeof(*c));
		return fail(why, -EBADMSG, "several Proxy-Authorization fields");
	}
	return http_basic_decode(f->value.ptr, f->value.len, c, why);
}

/* ---- body framing ------------------------------------------------------ */

/*
 * Content-Length (RFC 9112 §6.3 item 5): every value of every field must be
 * the same digit string. Returns 1 with *length and *digits, 0 when there
 * is no such field, or -EBADMSG.
 */
static int content_length(const struct http_head *h, uint64_t *length, struct http_str *digits,
			  const char **why)
{
	const struct http_header *f = NULL;
	struct http_str first = { NULL, 0 };
	uint64_t v = 0;
	size_t i;

	while ((f = http_header_next(h, "Content-Length", f))) {
		struct http_str rest = f->value, element;

		while (list_next(&rest, &element)) {
			if (element.len == 0)
				return fail(why, -EBADMSG, "malformed Content-Length");
			if (first.ptr) {
				if (element.len != first.len ||
				    memcmp(element.ptr, first.ptr, first.len) != 0)
					return fail(why, -EBADMSG,
						    "differing Content-Length values");
				continue;
			}
			for (i = 0; i < element.len; i++) {
				uint64_t d;

				if (!is_digit(element.ptr[i]))
					return fail(why, -EBADMSG, "malformed Content-Length");
				d = (uint64_t)(element.ptr[i] - '0');
				if (v > ((uint64_t)HTTP_MAX_BODY_BYTES - d) / 10)
					return fail(why, -EBADMSG, "Content-Length over limit");
				v = v * 10 + d;
			}
			first = element;
		}
	}
	if (!first.ptr)
		return 0;
	*length = v;
	*digits = first;
	return 1;
}

enum transfer_coding {
	TE_ABSENT,
	TE_CHUNKED,     /* chunked is the final coding */
	TE_NOT_CHUNKED, /* codings, chunked not final */
};

/* Transfer-Encoding (RFC 9112 §6.1): a list of codings over every field,
 * chunked at most once. Empty elements and parameters are refused. */
static int transfer_encoding(const struct http_head *h, const char **why)
{
	const struct http_header *f = NULL;
	bool present = false, chunked_last = false, chunked_seen = false;

	while ((f = http_header_next(h, "Transfer-Encoding", f))) {
		struct http_str rest = f->value, element;

		while (list_next(&rest, &element)) {
			if (element.len == 0 || token_span(element.ptr, element.len) != element.len)
				return fail(why, -EBADMSG, "malformed Transfer-Encoding");
			present = true;
			chunked_last = str_is(element, "chunked");
			if (chunked_last && chunked_seen)
				return fail(why, -EBADMSG, "chunked applied twice");
			chunked_seen |= chunked_last;
		}
	}
	if (!present)
		return TE_ABSENT;
	return chunked_last ? TE_CHUNKED : TE_NOT_CHUNKED;
}

static void body_init(struct http_body_state *b, enum http_body_kind kind, uint64_t length)
{
	memset(b, 0, sizeof(*b));
	b->kind = kind;
	b->remaining = length;
	http_chunked_init(&b->chunked);
	b->done = kind == HTTP_BODY_NONE || (kind == HTTP_BODY_LENGTH && length == 0);
}

/* The framing fields of any message: 1 for a Content-Length (in *length),
 * 0 without, or -EBADMSG; *te gets the Transfer-Encoding verdict. */
static int framing_fields(const struct http_head *h, int *te, uint64_t *length, const char **why)
{
	struct http_str digits;

	*te = transfer_encoding(h, why);
	if (*te < 0)
		return *te;
	if (*te != TE_ABSENT) {
		if (h->minor_version == 0)
			return fail(why, -EBADMSG, "Transfer-Encoding in HTTP/1.0");
		if (http_header_next(h, "Content-Length", NULL))
			return fail(why, -EBADMSG, "both Transfer-Encoding and Content-Length");
		return 0;
	}
	return content_length(h, length, &digits, why);
}

int http_request_body(const struct http_head *req, struct http_body_state *b, const char **why)
{
	uint64_t length = 0;
	int te, cl = framing_fields(req, &te, &length, why);

	if (cl < 0)
		return cl;
	if (te == TE_NOT_CHUNKED)
		return fail(why, -EBADMSG, "chunked is not the final transfer coding");
	if (te == TE_CHUNKED)
		body_init(b, HTTP_BODY_CHUNKED, 0);
	else
		body_init(b, cl ? HTTP_BODY_LENGTH : HTTP_BODY_NONE, length);
	return 0;
}

int http_response_body(const struct http_head *resp, enum http_method request_method,
		       struct http_body_state *b, const char **why)
{
	uint64_t length = 0;
	int te, cl;

	if (resp->status == 101)
		return fail(why, -EBADMSG, "101 Switching Protocols without Upgrade");
	cl = framing_fields(resp, &te, &length, why);
	if (cl < 0)
		return cl;
	if (resp->status < 200 || resp->status == 204 || resp->status == 304 ||
	    request_method == HTTP_METHOD_HEAD)
		body_init(b, HTTP_BODY_NONE, 0);
	else if (request_method == HTTP_METHOD_CONNECT && resp->status < 300)
		body_init(b, HTTP_BODY_TUNNEL, 0);
	else if (te == TE_CHUNKED)
		body_init(b, HTTP_BODY_CHUNKED, 0);
	else if (te == TE_NOT_CHUNKED)
		body_init(b, HTTP_BODY_UNTIL_CLOSE, 0);
	else
		body_init(b, cl ? HTTP_BODY_LENGTH : HTTP_BODY_UNTIL_CLOSE, length);
	return 0;
}

/* ---- chunked framing (RFC 9112 §7.1) ----------------------------------- */

/*
 * chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 * chunk-ext  = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
 * last-chunk = 1*("0") [ chunk-ext ] CRLF, then *( field-line CRLF ) CRLF
 * One state per position in that grammar; line ends are exactly CRLF.
 */
enum chunked_state {
	CH_SIZE_START = 0, /* first hex digit of a chunk size */
	CH_SIZE,           /* more hex digits, ';', BWS or CR */
	CH_BWS,            /* whitespace that must lead to ';' */
	CH_EXT_NAME_START, /* BWS, then the first tchar of a name */
	CH_EXT_NAME,
	CH_EXT_NAME_BWS, /* whitespace after a name: '=' or ';' next */
	CH_EXT_VALUE_START,
	CH_EXT_VALUE,  /* token value */
	CH_EXT_QUOTED, /* inside a quoted-string value */
	CH_EXT_QUOTED_PAIR,
	CH_EXT_QUOTED_END,
	CH_SIZE_LF,
	CH_DATA,
	CH_DATA_CR,
	CH_DATA_LF,
	CH_TRAILER_START, /* a field line or the final CRLF */
	CH_TRAILER_NAME,
	CH_TRAILER_VALUE,
	CH_TRAILER_LF,
	CH_FINAL_LF,
	CH_DONE,
	CH_ERROR,
};

static int chunked_fail(struct http_chunked *c, const char *reason)
{
	c->state = CH_ERROR;
	c->why = reason;
	return -EBADMSG;
}

void http_chunked_init(struct http_chunked *c)
{
	*c = (struct http_chunked){ .state = CH_SIZE_START };
}

static bool in_size_line(uint8_t state)
{
	return state <= CH_EXT_QUOTED_END;
}

static bool in_trailer(uint8_t state)
{
	return state >= CH_TRAILER_START && state <= CH_FINAL_LF;
}

/* qdtext (RFC 9110 §5.6.4); after a backslash any field byte may follow */
static bool is_qdtext(uint8_t c)
{
	return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
	       (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

/* One byte of everything but chunk data. */
static int chunked_step(struct http_chunked *c, uint8_t ch)
{
	int d;

	if (in_size_line(c->state) && ch != '\r' && ++c->line_bytes > HTTP_MAX_CHUNK_LINE_BYTES)
		return chunked_fail(c, "chunk size line over 4096 bytes");
	if (in_trailer(c->state) && ++c->line_bytes > HTTP_MAX_TRAILER_BYTES)
		return chunked_fail(c, "trailer section over 32768 bytes");

	switch (c->state) {
	case CH_SIZE_START:
	case CH_SIZE:
		d = grammar_hex_value(ch);
		if (d >= 0) {
			if (c->size > ((uint64_t)HTTP_MAX_BODY_BYTES - (uint64_t)d) >> HEX_BITS)
				return chunked_fail(c, "chunk size over limit");
			c->size = c->size << HEX_BITS | (uint64_t)d;
			c->state = CH_SIZE;
			return 0;
		}
		if (c->state == CH_SIZE_START)
			return chunked_fail(c, "chunk size is not hex");
		break;
	case CH_BWS:
		if (is_ows(ch))
			return 0;
		if (ch == ';')
			break;
		return chunked_fail(c, "bad chunk extension");
	case CH_EXT_NAME_START:
		if (is_ows(ch))
			return 0;
		if (!is_tchar(ch))
			return chunked_fail(c, "bad chunk extension");
		c->state = CH_EXT_NAME;
		return 0;
	case CH_EXT_NAME:
		if (is_tchar(ch))
			return 0;
		if (is_ows(ch)) {
			c->state = CH_EXT_NAME_BWS;
			return 0;
		}
		if (ch == '=') {
			c->state = CH_EXT_VALUE_START;
			return 0;
		}
		break;
	case CH_EXT_NAME_BWS:
		if (is_ows(ch))
			return 0;
		if (ch == '=') {
			c->state = CH_EXT_VALUE_START;
			return 0;
		}
		if (ch == ';')
			break;
		return chunked_fail(c, "bad chunk extension");
	case CH_EXT_VALUE_START:
		if (is_ows(ch))
			return 0;
		if (ch == '"')
			c->state = CH_EXT_QUOTED;
		else if (is_tchar(ch))
			c->state = CH_EXT_VALUE;
		else
			return chunked_fail(c, "bad chunk extension");
		return 0;
	case CH_EXT_VALUE:
		if (is_tchar(ch))
			return 0;
		break;
	case CH_EXT_QUOTED:
		if (ch == '"')
			c->state = CH_EXT_QUOTED_END;
		else if (ch == '\\')
			c->state = CH_EXT_QUOTED_PAIR;
		else if (!is_qdtext(ch))
			return chunked_fail(c, "bad chunk extension");
		return 0;
	case CH_EXT_QUOTED_PAIR:
		if (!is_field_char(ch))
			return chunked_fail(c, "bad chunk extension");
		c->state = CH_EXT_QUOTED;
		return 0;
	case CH_EXT_QUOTED_END:
		break;
	case CH_SIZE_LF:
		if (ch != '\n')
			return chunked_fail(c, "chunk size line not ended by CRLF");
		c->line_bytes = 0;
		c->state = c->size ? CH_DATA : CH_TRAILER_START;
		return 0;
	case CH_DATA_CR:
		if (ch != '\r')
			return chunked_fail(c, "chunk data not followed by CRLF");
		c->state = CH_DATA_LF;
		return 0;
	case CH_DATA_LF:
		if (ch != '\n')
			return chunked_fail(c, "chunk data not followed by CRLF");
		c->state = CH_SIZE_START;
		return 0;
	case CH_TRAILER_START:
		if (ch == '\r')
			c->state = CH_FINAL_LF;
		else if (is_tchar(ch))
			c->state = CH_TRAILER_NAME;
		else
			return chunked_fail(c, "bad trailer field");
		return 0;
	case CH_TRAILER_NAME:
		if (ch == ':')
			c->state = CH_TRAILER_VALUE;
		else if (!is_tchar(ch))
			return chunked_fail(c, "bad trailer field");
		return 0;
	case CH_TRAILER_VALUE:
		if (ch == '\r')
			c->state = CH_TRAILER_LF;
		else if (!is_field_char(ch))
			return chunked_fail(c, "bad trailer field");
		return 0;
	case CH_TRAILER_LF:
	case CH_FINAL_LF:
		if (ch != '\n')
			return chunked_fail(c, "trailer line not ended by CRLF");
		c->state = c->state == CH_FINAL_LF ? CH_DONE : CH_TRAILER_START;
		return 0;
	default: /* CH_DATA, CH_DONE and CH_ERROR are not stepped */
		return chunked_fail(c, "chunked scanner misused");
	}

	/* What may follow a size, a name or a value: the next extension, the
	 * whitespace before it, or the end of the line. */
	if (ch == ';') {
		c->state = CH_EXT_NAME_START;
		return 0;
	}
	if (c->state != CH_BWS && is_ows(ch)) {
		c->state = CH_BWS;
		return 0;
	}
	if (c->state != CH_BWS && ch == '\r') {
		c->state = CH_SIZE_LF;
		return 0;
	}
	if (ch == '\n')
		return chunked_fail(c, "chunk size line not ended by CRLF");
	if (c->state == CH_SIZE)
		return chunked_fail(c, "chunk size is not hex");
	return chunked_fail(c, "bad chunk extension");
}
_Static_assert(HTTP_MAX_CHUNK_LINE_BYTES == 4096 && HTTP_MAX_TRAILER_BYTES == 32768,
	       "update the limit messages in chunked_step");

ssize_t http_chunked_scan(struct http_chunked *c, const uint8_t *buf, size_t len, bool *done)
{
	size_t i = 0;

	if (c->state == CH_ERROR) {
		*done = false;
		return -EBADMSG;
	}
	while (i < len && c->state != CH_DONE) {
		if (c->state == CH_DATA) {
			size_t n = (size_t)MIN((uint64_t)(len - i), c->size);

			i += n;
			c->size -= n;
			if (c->size == 0)
				c->state = CH_DATA_CR;
			continue;
		}
		if (chunked_step(c, buf[i]) < 0) {
			*done = false;
			return -EBADMSG;
		}
		i++;
	}
	*done = c->state == CH_DONE;
	return (ssize_t)i;
}

ssize_t http_body_scan(struct http_body_state *b, const uint8_t *buf, size_t len, bool *done)
{
	ssize_t n;

	*done = b->done;
	if (b->done)
		return 0;
	switch (b->kind) {
	case HTTP_BODY_CHUNKED:
		n = http_chunked_scan(&b->chunked, buf, len, &b->done);
		break;
	case HTTP_BODY_UNTIL_CLOSE:
	case HTTP_BODY_TUNNEL:
		n = (ssize_t)len;
		break;
	default: /* LENGTH, and NONE with nothing remaining */
		n = (ssize_t)MIN((uint64_t)len, b->remaining);
		b->remaining -= (uint64_t)n;
		b->done = b->remaining == 0;
		break;
	}
	*done = b->done;
	return n;
}

/* ---- head writers ------------------------------------------------------ */

/* Appends into out[0..cap); once something does not fit, nothing more is
 * written and the result is -ENOSPC. */
struct writer {
	uint8_t *out;
	size_t cap, len;
	bool full;
};

static void put(struct writer *w, const void *bytes, size_t n)
{
	if (w->full || n == 0)
		return;
	if (n > w->cap - w->len) {
		w->full = true;
		return;
	}
	memcpy(w->out + w->len, bytes, n);
	w->len += n;
}

static void put_text(struct writer *w, const char *s)
{
	put(w, s, strlen(s));
}

static void put_str(struct writer *w, struct http_str s)
{
	put(w, s.ptr, s.len);
}

static void put_decimal(struct writer *w, uint64_t v)
{
	char digits[DECIMAL_MAX_DIGITS];
	size_t i = sizeof(digits);

	do {
		digits[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put(w, digits + i, sizeof(digits) - i);
}

static ssize_t writer_result(const struct writer *w)
{
	return w->full ? -ENOSPC : (ssize_t)w->len;
}

/* The fields that go on: not hop-by-hop, no Host when the writer sets its
 * own, and one Content-Length for all of them. */
static int put_fields(struct writer *w, const struct http_head *h, bool drop_host)
{
	struct http_str digits = { NULL, 0 };
	bool length_written = false;
	uint64_t length;
	size_t i;

	if (content_length(h, &length, &digits, NULL) < 0)
		return -EINVAL;
	for (i = 0; i < h->header_count; i++) {
		const struct http_header *f = &h->headers[i];
		struct http_str value = f->value;

		if (http_is_hop_by_hop(h, f) || (drop_host && str_is(f->name, "Host")))
			continue;
		if (str_is(f->name, "Content-Length")) {
			if (length_written)
				continue;
			length_written = true;
			value = digits;
		}
		put_str(w, f->name);
		put_text(w, ": ");
		put_str(w, value);
		put_text(w, "\r\n");
	}
	return 0;
}

ssize_t http_write_request_head(uint8_t *out, size_t cap, const struct http_head *req,
				const struct http_target *t, bool keep_alive)
{
	struct writer w = { .out = out, .cap = cap };

	if (t->path.len == 0)
		return -EINVAL;
	put_str(&w, req->method);
	put_text(&w, " ");
	put_str(&w, t->path);
	put_str(&w, t->query);
	put_text(&w, req->minor_version ? " HTTP/1.1\r\nHost: " : " HTTP/1.0\r\nHost: ");
	put_str(&w, t->authority);
	put_text(&w, "\r\n");
	if (put_fields(&w, req, true))
		return -EINVAL;
	put_text(&w, keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
	return writer_result(&w);
}

ssize_t http_write_response_head(uint8_t *out, size_t cap, const struct http_head *resp,
				 bool keep_alive)
{
	struct writer w = { .out = out, .cap = cap };

	if (resp->status < STATUS_MIN || resp->status > STATUS_MAX)
		return -EINVAL;
	put_text(&w, "HTTP/1.1 ");
	put_decimal(&w, (uint64_t)resp->status);
	put_text(&w, " ");
	put_str(&w, resp->reason);
	put_text(&w, "\r\n");
	if (put_fields(&w, resp, false))
		return -EINVAL;
	put_text(&w, keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
	return writer_result(&w);
}

ssize_t http_write_error(uint8_t *out, size_t cap, int status, const char *body_text,
			 const char *extra_field, bool keep_alive)
{
	const char *reason = http_status_reason(status);
	struct writer w = { .out = out, .cap = cap };

	if (!reason || (extra_field && strpbrk(extra_field, "\r\n")))
		return -EINVAL;
	if (!body_text)
		body_text = reason;
	put_text(&w, "HTTP/1.1 ");
	put_decimal(&w, (uint64_t)status);
	put_text(&w, " ");
	put_text(&w, reason);
	put_text(&w, "\r\n");
	if (extra_field) {
		put_text(&w, extra_field);
		put_text(&w, "\r\n");
	}
	put_text(&w, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
	put_decimal(&w, strlen(body_text) + 1);
	put_text(&w, keep_alive ? "\r\nConnection: keep-alive\r\n\r\n"
				: "\r\nConnection: close\r\n\r\n");
	put_text(&w, body_text);
	put_text(&w, "\n");
	return writer_result(&w);
}
