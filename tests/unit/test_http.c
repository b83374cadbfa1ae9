/*
 * test_http.c — HTTP/1.x proxy codec (src/proxy/http.c).
 *
 * Parser inputs are placed right before an inaccessible page, so a read
 * past the end of the input faults even without ASan; writers with a short
 * capacity write against that page too.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guard.h"
#include "anyproxy/common.h"
#include "anyproxy/http.h"

/* ---- fixtures ---------------------------------------------------------- */

/* Room for the largest input: a head just over HTTP_MAX_HEAD_BYTES, or a
 * trailer section just over HTTP_MAX_TRAILER_BYTES. */
#define GUARD_AREA_MIN (2 * HTTP_MAX_HEAD_BYTES)

static int setup(void **state)
{
	return guard_setup(GUARD_AREA_MIN);
}

static int teardown(void **state)
{
	return guard_teardown();
}

static const uint8_t *place(const void *bytes, size_t n)
{
	return guard_place(bytes, n);
}

static bool str_equals(struct http_str s, const char *want)
{
	return s.len == strlen(want) && (s.len == 0 || memcmp(s.ptr, want, s.len) == 0);
}

#define CHECK_STR(name, field, got, want)                                                        \
	do {                                                                                     \
		if (!str_equals(got, want))                                                      \
			fail_msg("%s: %s is \"%.*s\", want \"%s\"", name, field, (int)(got).len, \
				 (const char *)(got).ptr, want);                                 \
	} while (0)

/* A scratch text buffer for inputs built at run time. */
#define BUILD_MAX (2 * HTTP_MAX_HEAD_BYTES)
static char build_buf[BUILD_MAX];
static size_t build_len;

static void build_reset(void)
{
	build_len = 0;
	build_buf[0] = '\0';
}

__attribute__((format(printf, 1, 2))) static void build(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(build_buf + build_len, sizeof(build_buf) - build_len, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(build_buf) - build_len);
	build_len += (size_t)n;
}

static void build_repeat(char c, size_t n)
{
	assert_true(build_len + n < sizeof(build_buf));
	memset(build_buf + build_len, c, n);
	build_len += n;
	build_buf[build_len] = '\0';
}

/* ---- request heads ------------------------------------------------------- */

struct valid_request {
	const char *name;
	const char *text;
	const char *method;
	enum http_method kind;
	const char *target;
	int minor;
	size_t fields;
	size_t skipped; /* leading empty-line bytes */
	/* one field to check: index, name, value (NULL: none) */
	size_t check_index;
	const char *check_name, *check_value;
};

static const struct valid_request valid_requests[] = {
	{ "curl GET absolute",
	  "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
	  "User-Agent: curl/7.88.1\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n",
	  "GET", HTTP_METHOD_OTHER, "http://example.com/", 1, 4, 0, 3, "Proxy-Connection",
	  "Keep-Alive" },
	{ "curl CONNECT",
	  "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
	  "User-Agent: curl/7.88.1\r\nProxy-Connection: Keep-Alive\r\n\r\n",
	  "CONNECT", HTTP_METHOD_CONNECT, "example.com:443", 1, 3, 0, 0, "Host",
	  "example.com:443" },
	{ "HEAD", "HEAD http://a/ HTTP/1.1\r\n\r\n", "HEAD", HTTP_METHOD_HEAD, "http://a/", 1, 0, 0,
	  0, NULL, NULL },
	{ "methods are case-sensitive", "connect a:1 HTTP/1.1\r\n\r\n", "connect",
	  HTTP_METHOD_OTHER, "a:1", 1, 0, 0, 0, NULL, NULL },
	{ "extension method", "M-SEARCH* http://a/ HTTP/1.0\r\n\r\n", "M-SEARCH*",
	  HTTP_METHOD_OTHER, "http://a/", 0, 0, 0, 0, NULL, NULL },
	{ "HTTP/1.0 bare LF", "GET http://a/ HTTP/1.0\nHost: a\nX: y\n\n", "GET", HTTP_METHOD_OTHER,
	  "http://a/", 0, 2, 0, 1, "X", "y" },
	{ "mixed line ends", "GET http://a/ HTTP/1.1\nHost: a\r\n\n", "GET", HTTP_METHOD_OTHER,
	  "http://a/", 1, 1, 0, 0, "Host", "a" },
	{ "leading empty lines", "\r\n\n\r\nPOST http://a/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
	  "POST", HTTP_METHOD_OTHER, "http://a/", 1, 1, 5, 0, "Content-Length", "0" },
	{ "value whitespace trimmed", "GET http://a/ HTTP/1.1\r\nX:  \t v a l \t \r\n\r\n", "GET",
	  HTTP_METHOD_OTHER, "http://a/", 1, 1, 0, 0, "X", "v a l" },
	{ "empty value", "GET http://a/ HTTP/1.1\r\nX-Empty:\r\nY:   \r\n\r\n", "GET",
	  HTTP_METHOD_OTHER, "http://a/", 1, 2, 0, 1, "Y", "" },
	{ "obs-text in value and target",
	  "GET http://a/\xc3\xa9 HTTP/1.1\r\nX-Name: caf\xc3\xa9\x80\xff\r\n\r\n", "GET",
	  HTTP_METHOD_OTHER, "http://a/\xc3\xa9", 1, 1, 0, 0, "X-Name", "caf\xc3\xa9\x80\xff" },
	{ "token punctuation in name", "GET http://a/ HTTP/1.1\r\n!#$%&'*+-.^_`|~09aZ: v\r\n\r\n",
	  "GET", HTTP_METHOD_OTHER, "http://a/", 1, 1, 0, 0, "!#$%&'*+-.^_`|~09aZ", "v" },
	{ "value with colons and quotes",
	  "GET http://a/ HTTP/1.1\r\nCookie: a=\"b:c\"; d=e\r\n\r\n", "GET", HTTP_METHOD_OTHER,
	  "http://a/", 1, 1, 0, 0, "Cookie", "a=\"b:c\"; d=e" },
};

static void check_valid_request(const struct valid_request *c)
{
	size_t len = strlen(c->text), k;
	const char *why = NULL;
	struct http_head h;
	ssize_t n;

	n = http_parse_request(place(c->text, len), len, &h, &why);
	if (n != (ssize_t)len)
		fail_msg("%s: returned %zd (%s), want %zu", c->name, n, why ? why : "-", len);
	CHECK_STR(c->name, "method", h.method, c->method);
	CHECK_STR(c->name, "target", h.target, c->target);
	if (h.method_kind != c->kind || h.minor_version != c->minor ||
	    h.header_count != c->fields || h.status != 0 || h.reason.len != 0)
		fail_msg("%s: kind %d minor %d fields %zu status %d", c->name, h.method_kind,
			 h.minor_version, h.header_count, h.status);
	if (h.method.ptr != guarded(len) + c->skipped)
		fail_msg("%s: method does not start after the empty lines", c->name);
	if (c->check_name) {
		CHECK_STR(c->name, "field name", h.headers[c->check_index].name, c->check_name);
		CHECK_STR(c->name, "field value", h.headers[c->check_index].value, c->check_value);
	}
	for (k = 0; k < len; k++) {
		why = NULL;
		n = http_parse_request(place(c->text, k), k, &h, &why);
		if (n != 0)
			fail_msg("%s: prefix of %zu/%zu bytes returned %zd (%s)", c->name, k, len,
				 n, why ? why : "-");
	}
}

static void test_request_valid(void **state)
{
	char pipelined[512];
	struct http_head h;
	size_t i, len;

	for (i = 0; i < ARRAY_SIZE(valid_requests); i++)
		check_valid_request(&valid_requests[i]);

	/* Bytes after the head are the body or the next request. */
	len = (size_t)snprintf(pipelined, sizeof(pipelined), "%sGET http://b/ HTTP/1.1\r\n\r\n",
			       valid_requests[0].text);
	assert_int_equal(http_parse_request(place(pipelined, len), len, &h, NULL),
			 strlen(valid_requests[0].text));
	/* why is optional. */
	assert_int_equal(http_parse_request((const uint8_t *)"x\r\n", 3, &h, NULL), -EBADMSG);
}

struct malformed {
	const char *name;
	const char *text;
	size_t len; /* 0: strlen(text) */
	int err;
	const char *why;
};

#define NUL_IN_VALUE "GET http://a/ HTTP/1.1\r\nX: a\0b\r\n\r\n"
#define CLIENT_HELLO "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"

static const struct malformed malformed_requests[] = {
	{ "bare CR ends a field", "GET http://a/ HTTP/1.1\r\nX: a\rY: b\r\n\r\n", 0, -EBADMSG,
	  "bare CR in head" },
	{ "bare CR in request line", "GET http://a/\r HTTP/1.1\r\n\r\n", 0, -EBADMSG,
	  "bare CR in head" },
	{ "CR CR LF", "GET http://a/ HTTP/1.1\r\r\n\r\n", 0, -EBADMSG, "bare CR in head" },
	{ "bare CR among empty lines", "\r\rGET http://a/ HTTP/1.1\r\n\r\n", 0, -EBADMSG,
	  "bare CR in head" },
	{ "bare CR as end of head", "GET http://a/ HTTP/1.1\r\nX: a\r\n\r\r\n", 0, -EBADMSG,
	  "bare CR in head" },
	{ "space before colon", "GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n", 0, -EBADMSG,
	  "whitespace before colon in field line" },
	{ "tab before colon", "POST http://a/ HTTP/1.1\r\nTransfer-Encoding\t: chunked\r\n\r\n", 0,
	  -EBADMSG, "whitespace before colon in field line" },
	{ "obs-fold space", "GET http://a/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 0, -EBADMSG,
	  "obs-fold (line folding) in head" },
	{ "obs-fold tab", "GET http://a/ HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 0, -EBADMSG,
	  "obs-fold (line folding) in head" },
	{ "whitespace line after request line", "GET http://a/ HTTP/1.1\r\n Host: a\r\n\r\n", 0,
	  -EBADMSG, "obs-fold (line folding) in head" },
	{ "NUL in value", NUL_IN_VALUE, sizeof(NUL_IN_VALUE) - 1, -EBADMSG,
	  "control byte in field value" },
	{ "DEL in value", "GET http://a/ HTTP/1.1\r\nX: a\x7f\r\n\r\n", 0, -EBADMSG,
	  "control byte in field value" },
	{ "SOH in value", "GET http://a/ HTTP/1.1\r\nX: \x01\r\n\r\n", 0, -EBADMSG,
	  "control byte in field value" },
	{ "name not a token", "GET http://a/ HTTP/1.1\r\nHo(st: a\r\n\r\n", 0, -EBADMSG,
	  "field name is not a token" },
	{ "empty name", "GET http://a/ HTTP/1.1\r\n: a\r\n\r\n", 0, -EBADMSG,
	  "field name is not a token" },
	{ "obs-text in name", "GET http://a/ HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n", 0, -EBADMSG,
	  "field name is not a token" },
	{ "no colon", "GET http://a/ HTTP/1.1\r\nHost\r\n\r\n", 0, -EBADMSG,
	  "field line without colon" },
	{ "method not a token", "G(ET http://a/ HTTP/1.1\r\n\r\n", 0, -EBADMSG,
	  "method is not a token" },
	{ "empty method", " GET http://a/ HTTP/1.1\r\n\r\n", 0, -EBADMSG, "method is not a token" },
	{ "tab after method", "GET\thttp://a/ HTTP/1.1\r\n\r\n", 0, -EBADMSG,
	  "method is not a token" },
	{ "TLS ClientHello", CLIENT_HELLO, sizeof(CLIENT_HELLO) - 1, -EBADMSG,
	  "method is not a token" },
	{ "no target", "GET\r\n\r\n", 0, -EBADMSG, "malformed request line" },
	{ "two spaces", "GET  http://a/ HTTP/1.1\r\n\r\n", 0, -EBADMSG,
	  "malformed request target" },
	{ "HTTP/0.9 request", "GET http://a/\r\n\r\n", 0, -EBADMSG, "malformed request target" },
	{ "control byte in target", "GET http://a/\x01 HTTP/1.1\r\n\r\n", 0, -EBADMSG,
	  "malformed request target" },
	{ "tab in target", "GET http://a/\tx HTTP/1.1\r\n\r\n", 0, -EBADMSG,
	  "malformed request target" },
	{ "space after version", "GET http://a/ HTTP/1.1 \r\n\r\n", 0, -EBADMSG,
	  "malformed HTTP version" },
	{ "lowercase version", "GET http://a/ http/1.1\r\n\r\n", 0, -EBADMSG,
	  "malformed HTTP version" },
	{ "version 1.10", "GET http://a/ HTTP/1.10\r\n\r\n", 0, -EBADMSG,
	  "malformed HTTP version" },
	{ "version HTTP/2", "GET http://a/ HTTP/2\r\n\r\n", 0, -EBADMSG, "malformed HTTP version" },
	{ "version 1.2", "GET http://a/ HTTP/1.2\r\n\r\n", 0, -EPROTONOSUPPORT,
	  "HTTP version not supported" },
	{ "version 2.0 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, -EPROTONOSUPPORT,
	  "HTTP version not supported" },
	{ "version 0.9", "GET http://a/ HTTP/0.9\r\n\r\n", 0, -EPROTONOSUPPORT,
	  "HTTP version not supported" },
	{ "junk after empty lines", "\r\n\r\n(", 0, -EBADMSG, "method is not a token" },
};

static void check_malformed(const struct malformed *c, bool request)
{
	size_t len = c->len ? c->len : strlen(c->text), k;
	const char *why = NULL;
	struct http_head h;
	ssize_t n;

	n = request ? http_parse_request(place(c->text, len), len, &h, &why)
		    : http_parse_response(place(c->text, len), len, &h, &why);
	if (n != c->err)
		fail_msg("%s: returned %zd (%s), want %d", c->name, n, why ? why : "-", c->err);
	if (!why || strcmp(why, c->why) != 0)
		fail_msg("%s: reason \"%s\", want \"%s\"", c->name, why ? why : "(null)", c->why);
	/* A prefix says "need more" or already fails the same way. */
	for (k = 0; k < len; k++) {
		n = request ? http_parse_request(place(c->text, k), k, &h, NULL)
			    : http_parse_response(place(c->text, k), k, &h, NULL);
		if (n != 0 && n != c->err)
			fail_msg("%s: prefix of %zu bytes returned %zd", c->name, k, n);
	}
}

static void test_request_malformed(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(malformed_requests); i++)
		check_malformed(&malformed_requests[i], true);
}

static void test_error_status(void **state)
{
	assert_int_equal(http_error_status(-EBADMSG), 400);
	assert_int_equal(http_error_status(-EMSGSIZE), 431);
	assert_int_equal(http_error_status(-EPROTONOSUPPORT), 505);
	assert_int_equal(http_error_status(-EINVAL), 400);

	assert_string_equal(http_status_reason(400), "Bad Request");
	assert_string_equal(http_status_reason(403), "Forbidden");
	assert_string_equal(http_status_reason(407), "Proxy Authentication Required");
	assert_string_equal(http_status_reason(408), "Request Timeout");
	assert_string_equal(http_status_reason(431), "Request Header Fields Too Large");
	assert_string_equal(http_status_reason(500), "Internal Server Error");
	assert_string_equal(http_status_reason(502), "Bad Gateway");
	assert_string_equal(http_status_reason(503), "Service Unavailable");
	assert_string_equal(http_status_reason(504), "Gateway Timeout");
	assert_string_equal(http_status_reason(505), "HTTP Version Not Supported");
	assert_null(http_status_reason(200));
	assert_null(http_status_reason(418));
}

/* ---- limits ------------------------------------------------------------ */

static void build_fields_request(size_t fields)
{
	size_t i;

	build_reset();
	build("GET http://a/ HTTP/1.1\r\n");
	for (i = 0; i < fields; i++)
		build("X-%zu: %zu\r\n", i, i);
	build("\r\n");
}

/* A head of exactly `size` bytes: one field padded to fit. */
static void build_sized_request(size_t size)
{
	static const char start[] = "GET http://a/ HTTP/1.1\r\nX-Pad: ";
	static const char end[] = "\r\n\r\n";

	build_reset();
	build("%s", start);
	build_repeat('p', size - (sizeof(start) - 1) - (sizeof(end) - 1));
	build("%s", end);
	assert_int_equal(build_len, size);
}

static void test_limits(void **state)
{
	const char *why = NULL;
	struct http_head h;
	ssize_t n;

	build_fields_request(HTTP_MAX_HEADERS);
	n = http_parse_request(place(build_buf, build_len), build_len, &h, &why);
	assert_int_equal(n, build_len);
	assert_int_equal(h.header_count, HTTP_MAX_HEADERS);
	assert_true(str_equals(h.headers[HTTP_MAX_HEADERS - 1].name, "X-99"));

	build_fields_request(HTTP_MAX_HEADERS + 1);
	n = http_parse_request(place(build_buf, build_len), build_len, &h, &why);
	assert_int_equal(n, -EMSGSIZE);
	assert_string_equal(why, "more than 100 header fields");
	assert_int_equal(http_error_status((int)n), 431);

	/* A head of exactly the limit is fine, one byte more is not. */
	build_sized_request(HTTP_MAX_HEAD_BYTES);
	n = http_parse_request(place(build_buf, build_len), build_len, &h, NULL);
	assert_int_equal(n, HTTP_MAX_HEAD_BYTES);
	assert_int_equal(
		http_parse_request(place(build_buf, build_len - 1), build_len - 1, &h, NULL), 0);

	build_sized_request(HTTP_MAX_HEAD_BYTES + 1);
	/* Need more while the limit is not reached ... */
	assert_int_equal(http_parse_request(place(build_buf, HTTP_MAX_HEAD_BYTES - 1),
					    HTTP_MAX_HEAD_BYTES - 1, &h, NULL),
			 0);
	/* ... too large as soon as it is, without waiting for the end. */
	why = NULL;
	n = http_parse_request(place(build_buf, HTTP_MAX_HEAD_BYTES), HTTP_MAX_HEAD_BYTES, &h,
			       &why);
	assert_int_equal(n, -EMSGSIZE);
	assert_string_equal(why, "head over 32768 bytes");
	assert_int_equal(http_parse_request(place(build_buf, build_len), build_len, &h, NULL),
			 -EMSGSIZE);

	/* The limit counts leading empty lines too. */
	build_reset();
	build_repeat('\n', HTTP_MAX_HEAD_BYTES);
	assert_int_equal(http_parse_request(place(build_buf, build_len), build_len, &h, NULL),
			 -EMSGSIZE);
	assert_int_equal(
		http_parse_request(place(build_buf, build_len - 1), build_len - 1, &h, NULL), 0);

	/* Responses have the same limits. */
	build_reset();
	build("HTTP/1.1 200 OK\r\nX-Pad: ");
	build_repeat('p', HTTP_MAX_HEAD_BYTES);
	assert_int_equal(http_parse_response(place(build_buf, build_len), build_len, &h, NULL),
			 -EMSGSIZE);
	build_reset();
	build("HTTP/1.1 200 OK\r\n");
	for (n = 0; n <= HTTP_MAX_HEADERS; n++)
		build("Set-Cookie: c%zd=1\r\n", n);
	build("\r\n");
	assert_int_equal(http_parse_response(place(build_buf, build_len), build_len, &h, NULL),
			 -EMSGSIZE);
}

/* ---- response heads ---------------------------------------------------- */

struct valid_response {
	const char *name;
	const char *text;
	int status;
	const char *reason;
	int minor;
	size_t fields;
};

static const struct valid_response valid_responses[] = {
	{ "200 OK", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: x\r\n\r\n", 200, "OK", 1, 2 },
	{ "HTTP/1.0 404", "HTTP/1.0 404 Not Found\r\n\r\n", 404, "Not Found", 0, 0 },
	{ "no reason, no space", "HTTP/1.1 204\r\nDate: x\r\n\r\n", 204, "", 1, 1 },
	{ "empty reason", "HTTP/1.1 304 \r\n\r\n", 304, "", 1, 0 },
	{ "reason with tabs and obs-text", "HTTP/1.1 200 \tOK \xc3\xa9\tdone\r\n\r\n", 200,
	  "\tOK \xc3\xa9\tdone", 1, 0 },
	{ "100 Continue", "HTTP/1.1 100 Continue\r\n\r\n", 100, "Continue", 1, 0 },
	{ "599", "HTTP/1.1 599 Whatever\n\n", 599, "Whatever", 1, 0 },
};

static void test_response_valid(void **state)
{
	size_t i, k;

	for (i = 0; i < ARRAY_SIZE(valid_responses); i++) {
		const struct valid_response *c = &valid_responses[i];
		size_t len = strlen(c->text);
		const char *why = NULL;
		struct http_head h;
		ssize_t n = http_parse_response(place(c->text, len), len, &h, &why);

		if (n != (ssize_t)len)
			fail_msg("%s: returned %zd (%s)", c->name, n, why ? why : "-");
		if (h.status != c->status || h.minor_version != c->minor ||
		    h.header_count != c->fields || h.method.len || h.target.len)
			fail_msg("%s: status %d minor %d fields %zu", c->name, h.status,
				 h.minor_version, h.header_count);
		CHECK_STR(c->name, "reason", h.reason, c->reason);
		for (k = 0; k < len; k++)
			if (http_parse_response(place(c->text, k), k, &h, NULL) != 0)
				fail_msg("%s: prefix of %zu bytes not need-more", c->name, k);
	}
}

static const struct malformed malformed_responses[] = {
	{ "two-digit status", "HTTP/1.1 20 OK\r\n\r\n", 0, -EBADMSG, "malformed status line" },
	{ "status 099", "HTTP/1.1 099 X\r\n\r\n", 0, -EBADMSG, "status code out of range" },
	{ "status 600", "HTTP/1.1 600 X\r\n\r\n", 0, -EBADMSG, "status code out of range" },
	{ "four-digit status", "HTTP/1.1 2000 X\r\n\r\n", 0, -EBADMSG, "malformed status line" },
	{ "no space before status", "HTTP/1.1  200 OK\r\n\r\n", 0, -EBADMSG,
	  "malformed status line" },
	{ "HTTP/2", "HTTP/2 200 OK\r\n\r\n", 0, -EBADMSG, "malformed HTTP version" },
	{ "HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", 0, -EPROTONOSUPPORT,
	  "HTTP version not supported" },
	{ "short line", "HTTP/1.1\r\n\r\n", 0, -EBADMSG, "malformed status line" },
	{ "control byte in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", 0, -EBADMSG,
	  "control byte in reason phrase" },
	{ "empty lines are not skipped", "\r\nHTTP/1.1 200 OK\r\n\r\n", 0, -EBADMSG,
	  "malformed status line" },
	{ "space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n", 0, -EBADMSG,
	  "whitespace before colon in field line" },
	{ "obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 0, -EBADMSG,
	  "obs-fold (line folding) in head" },
	{ "bare CR", "HTTP/1.1 200 OK\rX: a\r\n\r\n", 0, -EBADMSG, "bare CR in head" },
	{ "not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n", 0, -EBADMSG, "malformed HTTP version" },
};

static void test_response_malformed(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(malformed_responses); i++)
		check_malformed(&malformed_responses[i], false);
}

/* ---- targets ----------------------------------------------------------- */

struct target_case {
	const char *name;
	const char *method;
	const char *target;
	const char *why; /* NULL: valid */
	enum http_host_type type;
	const char *host;
	uint16_t port;
	const char *authority;
	const char *path, *query;
	const uint8_t *addr; /* IPv4 and IPv6 hosts */
};

#define BAD_HOST_BYTE "byte not allowed in a host name (only letters, digits, '-', '_', '.')"
#define BARE_IPV6 "IPv6 address in target without brackets (write [v6]:port)"
#define NOT_IPV4 "numeric host is not an IPv4 address"
#define TARGET_BAD(label, meth, tgt, reason)                                \
	{                                                                   \
		.name = label, .method = meth, .target = tgt, .why = reason \
	}
#define TARGET(label, meth, tgt, host_type, host_text, port_number, auth, path_text, query_text) \
	{                                                                                        \
		.name = label, .method = meth, .target = tgt, .type = host_type,                 \
		.host = host_text, .port = port_number, .authority = auth, .path = path_text,    \
		.query = query_text                                                              \
	}
#define TARGET_IP(label, meth, tgt, host_type, host_text, port_number, auth, path_text,       \
		  query_text, ...)                                                            \
	{                                                                                     \
		.name = label, .method = meth, .target = tgt, .type = host_type,              \
		.host = host_text, .port = port_number, .authority = auth, .path = path_text, \
		.query = query_text, .addr = (const uint8_t[])                                \
		{                                                                             \
			__VA_ARGS__                                                           \
		}                                                                             \
	}

static const struct target_case target_cases[] = {
	/* CONNECT: authority-form, port required */
	TARGET("name", "CONNECT", "example.com:443", HTTP_HOST_NAME, "example.com", 443,
	       "example.com:443", "", ""),
	TARGET_IP("IPv4", "CONNECT", "192.0.2.1:8443", HTTP_HOST_IPV4, "192.0.2.1", 8443,
		  "192.0.2.1:8443", "", "", 192, 0, 2, 1),
	TARGET_IP("IPv6", "CONNECT", "[2001:db8::1]:443", HTTP_HOST_IPV6, "2001:db8::1", 443,
		  "[2001:db8::1]:443", "", "", 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		  0, 1),
	TARGET_IP("IPv6 with IPv4 tail", "CONNECT", "[::ffff:192.0.2.1]:1", HTTP_HOST_IPV6,
		  "::ffff:192.0.2.1", 1, "[::ffff:192.0.2.1]:1", "", "", 0, 0, 0, 0, 0, 0, 0, 0, 0,
		  0, 0xff, 0xff, 192, 0, 2, 1),
	TARGET("port 65535", "CONNECT", "a:65535", HTTP_HOST_NAME, "a", 65535, "a:65535", "", ""),
	TARGET("leading zeros in port", "CONNECT", "a:00443", HTTP_HOST_NAME, "a", 443, "a:00443",
	       "", ""),
	TARGET("FQDN with dot", "CONNECT", "example.com.:443", HTTP_HOST_NAME, "example.com.", 443,
	       "example.com.:443", "", ""),
	TARGET("underscore and digits", "CONNECT", "_srv.3com-x.example:22", HTTP_HOST_NAME,
	       "_srv.3com-x.example", 22, "_srv.3com-x.example:22", "", ""),
	TARGET_BAD("no port", "CONNECT", "example.com", "port missing in target"),
	TARGET_BAD("empty port", "CONNECT", "example.com:", "port missing in target"),
	TARGET_BAD("IPv6 no port", "CONNECT", "[::1]", "port missing in target"),
	TARGET_BAD("IPv6 empty port", "CONNECT", "[::1]:", "port missing in target"),
	TARGET_BAD("port 0", "CONNECT", "a:0", "port out of range"),
	TARGET_BAD("port 65536", "CONNECT", "a:65536", "port out of range"),
	TARGET_BAD("port 6 digits", "CONNECT", "a:000443", "port out of range"),
	TARGET_BAD("port not a number", "CONNECT", "a:44a", "port is not a number"),
	TARGET_BAD("port sign", "CONNECT", "a:+443", "port is not a number"),
	TARGET_BAD("two colons", "CONNECT", "a:1:2", "port is not a number"),
	TARGET_BAD("IPv6 without brackets", "CONNECT", "::1:443", BARE_IPV6),
	TARGET_BAD("full IPv6 without brackets", "CONNECT", "2001:db8::1:443", BARE_IPV6),
	TARGET_BAD("v4-mapped IPv6 without brackets", "CONNECT", "::ffff:10.0.0.1:443", BARE_IPV6),
	TARGET_BAD("two ports", "CONNECT", "example.com:443:443", "port is not a number"),
	TARGET_BAD("full IPv6 written out without brackets", "CONNECT", "1:2:3:4:5:6:7:8:443",
		   BARE_IPV6),
	TARGET_BAD("IPv6 zone id", "CONNECT", "[fe80::1%25eth0]:443", "bad IPv6 literal"),
	TARGET_BAD("IPvFuture", "CONNECT", "[v1.x]:443", "bad IPv6 literal"),
	TARGET_BAD("bad IPv6", "CONNECT", "[1:2:3:4:5:6:7:8:9]:443", "bad IPv6 literal"),
	TARGET_BAD("empty IPv6", "CONNECT", "[]:443", "bad IPv6 literal"),
	TARGET_BAD("unterminated IPv6", "CONNECT", "[::1:443", "bad IPv6 literal"),
	TARGET_BAD("junk after IPv6", "CONNECT", "[::1]x:443", "bad IPv6 literal"),
	TARGET_BAD("userinfo in authority", "CONNECT", "u@a:443", BAD_HOST_BYTE),
	TARGET_BAD("percent in host", "CONNECT", "ex%61mple.com:443", BAD_HOST_BYTE),
	TARGET_BAD("empty host", "CONNECT", ":443", "empty host name"),
	TARGET_BAD("empty label", "CONNECT", "a..b:443", "empty label in host name"),
	TARGET_BAD("leading dot", "CONNECT", ".a:443", "empty label in host name"),
	TARGET_BAD("only a dot", "CONNECT", ".:443", "empty host name"),
	TARGET_BAD("two final dots", "CONNECT", "a..:443", "empty label in host name"),
	TARGET_BAD("short IPv4", "CONNECT", "1.2.3:443", NOT_IPV4),
	TARGET_BAD("integer IPv4", "CONNECT", "3232235521:443", NOT_IPV4),
	TARGET_BAD("hex IPv4 part", "CONNECT", "10.0.0.0x1:443", NOT_IPV4),
	TARGET_BAD("hex label alone", "CONNECT", "0x7f000001:443", NOT_IPV4),
	TARGET_BAD("octal IPv4", "CONNECT", "010.0.0.1:443", NOT_IPV4),
	TARGET_BAD("IPv4 over 255", "CONNECT", "256.1.1.1:443", NOT_IPV4),
	TARGET_BAD("IPv4 trailing dot", "CONNECT", "1.2.3.4.:443", NOT_IPV4),
	TARGET_BAD("numeric last label", "CONNECT", "example.123:443", NOT_IPV4),
	TARGET_BAD("long numeric host", "CONNECT", "1111111111111111:443", NOT_IPV4),
	TARGET_BAD("absolute URI to CONNECT", "CONNECT", "http://a:443/", "port is not a number"),

	/* absolute-form */
	TARGET("bare host", "GET", "http://example.com", HTTP_HOST_NAME, "example.com", 80,
	       "example.com", "/", ""),
	TARGET("root", "GET", "http://example.com/", HTTP_HOST_NAME, "example.com", 80,
	       "example.com", "/", ""),
	TARGET("port, path, query", "POST", "http://example.com:8080/a/b?x=1&y=2", HTTP_HOST_NAME,
	       "example.com", 8080, "example.com:8080", "/a/b", "?x=1&y=2"),
	TARGET("query without path", "GET", "http://example.com?x=1", HTTP_HOST_NAME, "example.com",
	       80, "example.com", "/", "?x=1"),
	TARGET("empty query", "GET", "http://a/p?", HTTP_HOST_NAME, "a", 80, "a", "/p", "?"),
	TARGET("scheme case", "GET", "HTTP://Example.COM/X", HTTP_HOST_NAME, "Example.COM", 80,
	       "Example.COM", "/X", ""),
	TARGET("empty port", "GET", "http://a:/x", HTTP_HOST_NAME, "a", 80, "a:", "/x", ""),
	TARGET("hex-looking label", "GET", "http://0x.example/", HTTP_HOST_NAME, "0x.example", 80,
	       "0x.example", "/", ""),
	TARGET("hex-looking last label", "GET", "http://a.0xfg/", HTTP_HOST_NAME, "a.0xfg", 80,
	       "a.0xfg", "/", ""),
	TARGET_IP("IPv6 absolute", "GET", "http://[::1]:8080/x", HTTP_HOST_IPV6, "::1", 8080,
		  "[::1]:8080", "/x", "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1),
	TARGET_IP("IPv6 default port", "GET", "http://[::1]/", HTTP_HOST_IPV6, "::1", 80, "[::1]",
		  "/", "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1),
	TARGET_IP("IPv4 absolute", "GET", "http://127.0.0.1:3128/", HTTP_HOST_IPV4, "127.0.0.1",
		  3128, "127.0.0.1:3128", "/", "", 127, 0, 0, 1),
	TARGET("at-sign in path", "GET", "http://a/u@b", HTTP_HOST_NAME, "a", 80, "a", "/u@b", ""),
	TARGET("colon in query", "GET", "http://a?b:c", HTTP_HOST_NAME, "a", 80, "a", "/", "?b:c"),
	TARGET_BAD("userinfo", "GET", "http://user:pass@example.com/",
		   "userinfo in request target"),
	TARGET_BAD("user only", "GET", "http://user@example.com/", "userinfo in request target"),
	TARGET_BAD("https", "GET", "https://example.com/", "https:// target needs CONNECT"),
	TARGET_BAD("HTTPS", "GET", "HTTPS://example.com/", "https:// target needs CONNECT"),
	TARGET_BAD("ftp", "GET", "ftp://example.com/", "target is not an http:// URI"),
	TARGET_BAD("scheme only", "GET", "http:", "target is not an http:// URI"),
	TARGET_BAD("authority-form to GET", "GET", "example.com:80",
		   "target is not an http:// URI"),
	TARGET_BAD("origin-form", "GET", "/index.html", "origin-form target in a proxy request"),
	TARGET_BAD("asterisk", "OPTIONS", "*", "origin-form target in a proxy request"),
	TARGET_BAD("empty host", "GET", "http:///x", "empty host name"),
	TARGET_BAD("IPv6 without brackets", "GET", "http://::1:8080/", BARE_IPV6),
	TARGET_BAD("IPv6 without brackets or port", "GET", "http://fe80::1/x", BARE_IPV6),
	TARGET_BAD("fragment", "GET", "http://a/#f", "fragment in request target"),
	TARGET_BAD("port 0", "GET", "http://a:0/", "port out of range"),
	TARGET_BAD("bad host char", "GET", "http://a!b/", BAD_HOST_BYTE),
};

static void test_targets(void **state)
{
	char line[HTTP_MAX_HOST_BYTES + 64];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(target_cases); i++) {
		const struct target_case *c = &target_cases[i];
		size_t len = (size_t)snprintf(line, sizeof(line), "%s %s HTTP/1.1\r\n\r\n",
					      c->method, c->target);
		const char *why = NULL;
		struct http_target t;
		struct http_head h;
		int err;

		if (http_parse_request(place(line, len), len, &h, NULL) != (ssize_t)len)
			fail_msg("%s: request does not parse", c->name);
		err = http_parse_target(&h, &t, &why);
		if (c->why) {
			if (err != -EBADMSG || !why || strcmp(why, c->why) != 0)
				fail_msg("%s: returned %d (%s), want \"%s\"", c->name, err,
					 why ? why : "-", c->why);
			continue;
		}
		if (err)
			fail_msg("%s: returned %d (%s)", c->name, err, why ? why : "-");
		if (t.host_type != c->type || t.port != c->port)
			fail_msg("%s: type %d port %u", c->name, t.host_type, t.port);
		CHECK_STR(c->name, "host", t.host, c->host);
		CHECK_STR(c->name, "authority", t.authority, c->authority);
		CHECK_STR(c->name, "path", t.path, c->path);
		CHECK_STR(c->name, "query", t.query, c->query);
		if (c->type != HTTP_HOST_NAME &&
		    memcmp(t.addr, c->addr, c->type == HTTP_HOST_IPV4 ? 4 : 16) != 0)
			fail_msg("%s: address bytes differ", c->name);
	}

	/* The host name rule (grammar_host_name): 253 bytes are fine, 254
	 * are not, one final dot more is fine; a 63-byte label is fine, a
	 * 64-byte one is not. */
	{
		static const struct {
			size_t full_labels; /* 63-byte labels and their dots first */
			size_t last_label;
			bool final_dot;
			const char *why;
		} lengths[] = {
			{ 3, 253 - 3 * 64, false, NULL },
			{ 3, 253 - 3 * 64, true, NULL },
			{ 3, 254 - 3 * 64, false, "host name longer than 253 bytes" },
			{ 3, 254 - 3 * 64, true, "host name longer than 253 bytes" },
			{ 0, 63, false, NULL },
			{ 0, 64, false, "label longer than 63 bytes in host name" },
		};

		for (i = 0; i < ARRAY_SIZE(lengths); i++) {
			size_t want_len = lengths[i].full_labels * 64 + lengths[i].last_label;
			struct http_target t;
			struct http_head h;
			const char *why = NULL;
			size_t len;
			int err;

			build_reset();
			build("CONNECT ");
			for (size_t l = 0; l < lengths[i].full_labels; l++) {
				build_repeat((char)('a' + l), 63);
				build(".");
			}
			build_repeat('d', lengths[i].last_label);
			if (lengths[i].final_dot)
				build(".");
			build(":443 HTTP/1.1\r\n\r\n");
			len = build_len;
			assert_int_equal(http_parse_request(place(build_buf, len), len, &h, NULL),
					 len);
			err = http_parse_target(&h, &t, &why);
			if (!lengths[i].why) {
				assert_int_equal(err, 0);
				assert_int_equal(t.host.len, want_len + lengths[i].final_dot);
				assert_true(t.host.len <= HTTP_MAX_HOST_BYTES);
			} else {
				assert_int_equal(err, -EBADMSG);
				assert_string_equal(why, lengths[i].why);
			}
		}
	}
}

/* ---- fields, hop-by-hop, keep-alive -------------------------------------- */

static void parse_or_fail(const char *s, struct http_head *h)
{
	size_t len = strlen(s);
	const char *why = NULL;
	ssize_t n = http_parse_request(place(s, len), len, h, &why);

	if (n != (ssize_t)len)
		fail_msg("head does not parse: %zd (%s)\n%s", n, why ? why : "-", s);
}

static void parse_response_or_fail(const char *s, struct http_head *h)
{
	size_t len = strlen(s);
	const char *why = NULL;
	ssize_t n = http_parse_response(place(s, len), len, h, &why);

	if (n != (ssize_t)len)
		fail_msg("response does not parse: %zd (%s)\n%s", n, why ? why : "-", s);
}

static void test_header_lookup(void **state)
{
	const struct http_header *f;
	struct http_head h;

	parse_or_fail("GET http://a/ HTTP/1.1\r\nAccept: a\r\nhost: h\r\nACCEPT: b\r\n"
		      "Connection: keep-alive , Upgrade,,x-Foo\r\nConnection: TE\r\n\r\n",
		      &h);
	f = http_header_next(&h, "Accept", NULL);
	assert_ptr_equal(f, &h.headers[0]);
	f = http_header_next(&h, "accept", f);
	assert_ptr_equal(f, &h.headers[2]);
	assert_null(http_header_next(&h, "Accept", f));
	assert_ptr_equal(http_header_next(&h, "HOST", NULL), &h.headers[1]);
	assert_null(http_header_next(&h, "Hos", NULL));
	assert_null(http_header_next(&h, "Hostx", NULL));

	assert_true(http_header_has_token(&h, "Connection", "keep-alive"));
	assert_true(http_header_has_token(&h, "connection", "UPGRADE"));
	assert_true(http_header_has_token(&h, "Connection", "X-FOO"));
	assert_true(http_header_has_token(&h, "Connection", "te"));
	assert_false(http_header_has_token(&h, "Connection", "close"));
	assert_false(http_header_has_token(&h, "Connection", "keep"));
	assert_false(http_header_has_token(&h, "Connection", "keep-alive , Upgrade"));
	assert_false(http_header_has_token(&h, "Upgrade", "h2c"));
}

struct hop_case {
	const char *field;
	bool hop;
};

static void test_hop_by_hop(void **state)
{
	static const char head[] = "GET http://a/ HTTP/1.1\r\n"
				   "Host: a\r\n"
				   "Connection: keep-alive, X-Named, content-length\r\n"
				   "connection: Transfer-Encoding,x-other , host\r\n"
				   "Proxy-Connection: Keep-Alive\r\n"
				   "Keep-Alive: timeout=5\r\n"
				   "Proxy-Authorization: Basic dTpw\r\n"
				   "Proxy-Authenticate: Basic\r\n"
				   "te: trailers\r\n"
				   "Trailer: X-Sum\r\n"
				   "Upgrade: websocket\r\n"
				   "X-Named: 1\r\n"
				   "x-named: 2\r\n"
				   "X-Other: 3\r\n"
				   "X-Not-Named: 4\r\n"
				   "Content-Length: 0\r\n"
				   "Transfer-Encoding: chunked\r\n"
				   "Accept: */*\r\n"
				   "\r\n";
	static const struct hop_case want[] = {
		{ "Host", true }, /* named by a Connection field */
		{ "Connection", true },
		{ "connection", true },
		{ "Proxy-Connection", true },
		{ "Keep-Alive", true },
		{ "Proxy-Authorization", true },
		{ "Proxy-Authenticate", true },
		{ "te", true },
		{ "Trailer", true },
		{ "Upgrade", true },
		{ "X-Named", true },
		{ "x-named", true },
		{ "X-Other", true },
		{ "X-Not-Named", false },
		{ "Content-Length", false },    /* framing: never stripped */
		{ "Transfer-Encoding", false }, /* forwarded with the chunked body */
		{ "Accept", false },
	};
	struct http_head h;
	size_t i;

	parse_or_fail(head, &h);
	assert_int_equal(h.header_count, ARRAY_SIZE(want));
	for (i = 0; i < ARRAY_SIZE(want); i++) {
		CHECK_STR(want[i].field, "name", h.headers[i].name, want[i].field);
		if (http_is_hop_by_hop(&h, &h.headers[i]) != want[i].hop)
			fail_msg("%s: hop-by-hop should be %d", want[i].field, want[i].hop);
	}
	/* Unnamed, Host is an end-to-end field (the request writer replaces it). */
	parse_or_fail("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", &h);
	assert_false(http_is_hop_by_hop(&h, &h.headers[0]));
}

struct keep_alive_case {
	const char *head;
	bool keep_alive;
};

static const struct keep_alive_case keep_alive_cases[] = {
	{ "GET http://a/ HTTP/1.1\r\n\r\n", true },
	{ "GET http://a/ HTTP/1.1\r\nConnection: close\r\n\r\n", false },
	{ "GET http://a/ HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", false },
	{ "GET http://a/ HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false },
	{ "GET http://a/ HTTP/1.1\r\nProxy-Connection: close\r\n\r\n", true },
	{ "GET http://a/ HTTP/1.0\r\n\r\n", false },
	{ "GET http://a/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true },
	{ "GET http://a/ HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true },
	{ "GET http://a/ HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false },
	{ "GET http://a/ HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n", false },
};

static void test_keep_alive(void **state)
{
	struct http_head h;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(keep_alive_cases); i++) {
		parse_or_fail(keep_alive_cases[i].head, &h);
		if (http_request_keep_alive(&h) != keep_alive_cases[i].keep_alive)
			fail_msg("case %zu: keep-alive should be %d", i,
				 keep_alive_cases[i].keep_alive);
	}
}

static const struct keep_alive_case response_keep_alive_cases[] = {
	{ "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true },
	{ "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false },
	{ "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\n\r\n", false },
	{ "HTTP/1.1 204 No Content\r\nConnection: x, close\r\n\r\n", false },
	{ "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\n\r\n", true },
	{ "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false },
	{ "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", true },
	{ "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false },
	{ "HTTP/1.0 200 OK\r\nProxy-Connection: keep-alive\r\n\r\n", false },
};

static void test_response_keep_alive(void **state)
{
	struct http_head h;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(response_keep_alive_cases); i++) {
		const char *in = response_keep_alive_cases[i].head;

		assert_int_equal(http_parse_response((const uint8_t *)in, strlen(in), &h, NULL),
				 strlen(in));
		if (http_response_keep_alive(&h) != response_keep_alive_cases[i].keep_alive)
			fail_msg("case %zu: keep-alive should be %d", i,
				 response_keep_alive_cases[i].keep_alive);
	}
}

/* ---- Basic credentials ------------------------------------------------- */

static size_t base64_encode(const uint8_t *in, size_t n, char *out)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i, o = 0;

	for (i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = alphabet[v >> 18 & 63];
		out[o++] = alphabet[v >> 12 & 63];
		out[o++] = i + 1 < n ? alphabet[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? alphabet[v & 63] : '=';
	}
	out[o] = '\0';
	return o;
}

struct basic_case {
	const char *name;
	const char *value;
	int err;
	const char *why_or_user; /* error reason, or the user when err == 0 */
	const char *password;
};

static const struct basic_case basic_cases[] = {
	{ "good", "Basic dXNlcjpwYXNz", 0, "user", "pass" },
	{ "scheme case", "bAsIc dXNlcjpwYXNz", 0, "user", "pass" },
	{ "several spaces", "Basic   dXNlcjpwYXNz", 0, "user", "pass" },
	{ "empty password", "Basic dXNlcjo=", 0, "user", "" },
	{ "empty user", "Basic OnBhc3M=", 0, "", "pass" },
	{ "both empty", "Basic Og==", 0, "", "" },
	{ "colon in password", "Basic dXNlcjpwYTpzcw==", 0, "user", "pa:ss" },
	{ "group in user", "Basic YWxpY2UucHJvZC5ldTpzM2NyM3Q=", 0, "alice.prod.eu", "s3cr3t" },
	{ "UTF-8", "Basic w6k6w6k=", 0, "\xc3\xa9", "\xc3\xa9" },
	{ "base64 + and /", "Basic dTp+fn4/Pg==", 0, "u", "~~~?>" },
	{ "high bytes", "Basic +/86/g==", 0, "\xfb\xff", "\xfe" },
	{ "no colon", "Basic dXNlcg==", -EBADMSG, "credentials without ':'", NULL },
	{ "no credentials", "Basic", -EBADMSG, "credentials are not padded base64", NULL },
	{ "only spaces", "Basic  ", -EBADMSG, "credentials are not padded base64", NULL },
	{ "unpadded", "Basic dXNlcjpwYXM", -EBADMSG, "credentials are not padded base64", NULL },
	{ "extra padding", "Basic dXNlcjpwYXNz==", -EBADMSG, "credentials are not padded base64",
	  NULL },
	{ "bad character", "Basic dXNl*jpwYXNz", -EBADMSG, "credentials are not padded base64",
	  NULL },
	{ "URL-safe alphabet", "Basic dXNlcjpw-_-_", -EBADMSG, "credentials are not padded base64",
	  NULL },
	{ "all padding", "Basic ====", -EBADMSG, "credentials are not padded base64", NULL },
	{ "three pads", "Basic d===", -EBADMSG, "credentials are not padded base64", NULL },
	{ "pad in the middle", "Basic dX=z", -EBADMSG, "credentials are not padded base64", NULL },
	{ "padded quantum then more", "Basic dTo=dTo=", -EBADMSG,
	  "credentials are not padded base64", NULL },
	{ "stray bits, one pad", "Basic dTp=", -EBADMSG, "credentials are not canonical base64",
	  NULL },
	{ "stray bits, two pads", "Basic dR==", -EBADMSG, "credentials are not canonical base64",
	  NULL },
	{ "NUL in user", "Basic dQA6cA==", -EBADMSG, "NUL in credentials", NULL },
	{ "NUL in password", "Basic dTpwAA==", -EBADMSG, "NUL in credentials", NULL },
	{ "tab after scheme", "Basic\tdXNlcjpwYXNz", -EBADMSG, "malformed Proxy-Authorization",
	  NULL },
	{ "empty value", "", -EBADMSG, "malformed Proxy-Authorization", NULL },
	{ "no scheme", " dXNlcjpwYXNz", -EBADMSG, "malformed Proxy-Authorization", NULL },
	{ "Bearer", "Bearer abc.def", -EOPNOTSUPP, "Proxy-Authorization scheme is not Basic",
	  NULL },
	{ "Digest", "Digest username=\"u\"", -EOPNOTSUPP, "Proxy-Authorization scheme is not Basic",
	  NULL },
	{ "Basicx", "Basicx dXNlcjpwYXNz", -EOPNOTSUPP, "Proxy-Authorization scheme is not Basic",
	  NULL },
};

static void check_basic(const char *name, const char *value, size_t len, int want_err,
			const char *want_why_or_user, const char *want_password)
{
	struct http_credentials c;
	const char *why = NULL;
	int err;

	memset(&c, 0x5a, sizeof(c));
	err = http_basic_decode(place(value, len), len, &c, &why);
	if (err != want_err)
		fail_msg("%s: returned %d (%s), want %d", name, err, why ? why : "-", want_err);
	if (err) {
		struct http_credentials zero;

		memset(&zero, 0, sizeof(zero));
		if (!why || strcmp(why, want_why_or_user) != 0)
			fail_msg("%s: reason \"%s\", want \"%s\"", name, why ? why : "(null)",
				 want_why_or_user);
		if (memcmp(&c, &zero, sizeof(c)) != 0)
			fail_msg("%s: credentials not wiped on failure", name);
		return;
	}
	if (c.username_len != strlen(want_why_or_user) ||
	    strcmp(c.username, want_why_or_user) != 0 || c.password_len != strlen(want_password) ||
	    strcmp(c.password, want_password) != 0)
		fail_msg("%s: got \"%s\":\"%s\"", name, c.username, c.password);
}

static void test_basic_decode(void **state)
{
	uint8_t plain[HTTP_MAX_USERNAME_BYTES + 1 + HTTP_MAX_PASSWORD_BYTES + 2];
	char value[sizeof(plain) * 2 + 16];
	size_t i, user_len, pass_len, n;

	for (i = 0; i < ARRAY_SIZE(basic_cases); i++) {
		const struct basic_case *c = &basic_cases[i];

		check_basic(c->name, c->value, strlen(c->value), c->err, c->why_or_user,
			    c->password);
	}

	/* Lengths at and over the limits. */
	for (user_len = HTTP_MAX_USERNAME_BYTES; user_len <= HTTP_MAX_USERNAME_BYTES + 1;
	     user_len++) {
		for (pass_len = HTTP_MAX_PASSWORD_BYTES; pass_len <= HTTP_MAX_PASSWORD_BYTES + 1;
		     pass_len++) {
			char user[HTTP_MAX_USERNAME_BYTES + 2], pass[HTTP_MAX_PASSWORD_BYTES + 2];

			memset(user, 'u', user_len);
			user[user_len] = '\0';
			memset(pass, 'p', pass_len);
			pass[pass_len] = '\0';
			memcpy(plain, user, user_len);
			plain[user_len] = ':';
			memcpy(plain + user_len + 1, pass, pass_len);
			n = (size_t)snprintf(value, sizeof(value), "Basic ");
			n += base64_encode(plain, user_len + 1 + pass_len, value + n);
			if (user_len > HTTP_MAX_USERNAME_BYTES)
				check_basic("long user", value, n, -EBADMSG,
					    "username over 255 bytes", NULL);
			else if (pass_len > HTTP_MAX_PASSWORD_BYTES)
				check_basic("long password", value, n, -EBADMSG,
					    "password over 255 bytes", NULL);
			else
				check_basic("longest", value, n, 0, user, pass);
		}
	}
}

static void test_proxy_credentials(void **state)
{
	struct http_credentials c;
	const char *why = NULL;
	struct http_head h;

	parse_or_fail("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", &h);
	assert_int_equal(http_proxy_credentials(&h, &c, &why), -ENOENT);
	assert_string_equal(why, "no Proxy-Authorization");

	parse_or_fail("GET http://a/ HTTP/1.1\r\nproxy-authorization:  Basic dXNlcjpwYXNz \r\n\r\n",
		      &h);
	assert_int_equal(http_proxy_credentials(&h, &c, NULL), 0);
	assert_string_equal(c.username, "user");
	assert_string_equal(c.password, "pass");

	parse_or_fail("GET http://a/ HTTP/1.1\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n"
		      "Proxy-Authorization: Basic dTpw\r\n\r\n",
		      &h);
	assert_int_equal(http_proxy_credentials(&h, &c, &why), -EBADMSG);
	assert_string_equal(why, "several Proxy-Authorization fields");

	parse_or_fail("GET http://a/ HTTP/1.1\r\nProxy-Authorization: Bearer x\r\n\r\n", &h);
	assert_int_equal(http_proxy_credentials(&h, &c, &why), -EOPNOTSUPP);
}

/* ---- body framing ------------------------------------------------------ */

struct framing_case {
	const char *name;
	const char *head;
	int err;         /* 0: valid */
	const char *why; /* error reason */
	enum http_body_kind kind;
	uint64_t length;
};

#define FRAMING_OK(label, text, body_kind, body_length)                               \
	{                                                                             \
		.name = label, .head = text, .kind = body_kind, .length = body_length \
	}
#define FRAMING_BAD(label, text, reason)                                    \
	{                                                                   \
		.name = label, .head = text, .err = -EBADMSG, .why = reason \
	}

#define NOT_FINAL "chunked is not the final transfer coding"
#define BOTH "both Transfer-Encoding and Content-Length"
#define REQ11 "POST http://a/ HTTP/1.1\r\n"
#define REQ10 "POST http://a/ HTTP/1.0\r\n"

static const struct framing_case request_framing[] = {
	FRAMING_OK("no body", REQ11 "\r\n", HTTP_BODY_NONE, 0),
	FRAMING_OK("CL", REQ11 "Content-Length: 5\r\n\r\n", HTTP_BODY_LENGTH, 5),
	FRAMING_OK("CL 0", REQ11 "Content-Length: 0\r\n\r\n", HTTP_BODY_LENGTH, 0),
	FRAMING_OK("CL leading zeros", REQ11 "Content-Length: 007\r\n\r\n", HTTP_BODY_LENGTH, 7),
	FRAMING_OK("CL in HTTP/1.0", REQ10 "Content-Length: 3\r\n\r\n", HTTP_BODY_LENGTH, 3),
	FRAMING_OK("CL list identical", REQ11 "Content-Length: 5, 5\r\n\r\n", HTTP_BODY_LENGTH, 5),
	FRAMING_OK("CL repeated identical", REQ11 "Content-Length: 5\r\ncontent-length: 5\r\n\r\n",
		   HTTP_BODY_LENGTH, 5),
	FRAMING_OK("CL max", REQ11 "Content-Length: 9223372036854775807\r\n\r\n", HTTP_BODY_LENGTH,
		   9223372036854775807ULL),
	FRAMING_BAD("CL over max", REQ11 "Content-Length: 9223372036854775808\r\n\r\n",
		    "Content-Length over limit"),
	FRAMING_BAD("CL over 64 bits", REQ11 "Content-Length: 99999999999999999999\r\n\r\n",
		    "Content-Length over limit"),
	FRAMING_BAD("CL differing fields", REQ11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n",
		    "differing Content-Length values"),
	FRAMING_BAD("CL differing list", REQ11 "Content-Length: 5, 6\r\n\r\n",
		    "differing Content-Length values"),
	FRAMING_BAD("CL same value, other digits",
		    REQ11 "Content-Length: 5\r\nContent-Length: 05\r\n\r\n",
		    "differing Content-Length values"),
	FRAMING_BAD("CL empty", REQ11 "Content-Length:\r\n\r\n", "malformed Content-Length"),
	FRAMING_BAD("CL empty element", REQ11 "Content-Length: 5,\r\n\r\n",
		    "malformed Content-Length"),
	FRAMING_BAD("CL negative", REQ11 "Content-Length: -1\r\n\r\n", "malformed Content-Length"),
	FRAMING_BAD("CL plus", REQ11 "Content-Length: +5\r\n\r\n", "malformed Content-Length"),
	FRAMING_BAD("CL hex", REQ11 "Content-Length: 0x5\r\n\r\n", "malformed Content-Length"),
	FRAMING_BAD("CL inner space", REQ11 "Content-Length: 1 2\r\n\r\n",
		    "malformed Content-Length"),
	FRAMING_OK("TE chunked", REQ11 "Transfer-Encoding: chunked\r\n\r\n", HTTP_BODY_CHUNKED, 0),
	FRAMING_OK("TE case", REQ11 "transfer-encoding: ChUnKeD\r\n\r\n", HTTP_BODY_CHUNKED, 0),
	FRAMING_OK("TE gzip, chunked", REQ11 "Transfer-Encoding: gzip , chunked\r\n\r\n",
		   HTTP_BODY_CHUNKED, 0),
	FRAMING_OK("TE over two fields",
		   REQ11 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
		   HTTP_BODY_CHUNKED, 0),
	FRAMING_BAD("TE chunked, identity", REQ11 "Transfer-Encoding: chunked, identity\r\n\r\n",
		    NOT_FINAL),
	FRAMING_BAD("TE identity", REQ11 "Transfer-Encoding: identity\r\n\r\n", NOT_FINAL),
	FRAMING_BAD("TE lookalike", REQ11 "Transfer-Encoding: xchunked\r\n\r\n", NOT_FINAL),
	FRAMING_BAD("TE chunked then gzip field",
		    REQ11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
		    NOT_FINAL),
	FRAMING_BAD("TE chunked twice", REQ11 "Transfer-Encoding: chunked, chunked\r\n\r\n",
		    "chunked applied twice"),
	FRAMING_BAD("TE chunked in two fields",
		    REQ11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		    "chunked applied twice"),
	FRAMING_BAD("TE parameter", REQ11 "Transfer-Encoding: chunked;q=1\r\n\r\n",
		    "malformed Transfer-Encoding"),
	FRAMING_BAD("TE empty element", REQ11 "Transfer-Encoding: chunked,\r\n\r\n",
		    "malformed Transfer-Encoding"),
	FRAMING_BAD("TE empty", REQ11 "Transfer-Encoding:\r\n\r\n", "malformed Transfer-Encoding"),
	FRAMING_BAD("TE quoted", REQ11 "Transfer-Encoding: \"chunked\"\r\n\r\n",
		    "malformed Transfer-Encoding"),
	FRAMING_BAD("CL and TE", REQ11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		    BOTH),
	FRAMING_BAD("TE and CL", REQ11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
		    BOTH),
	FRAMING_BAD("TE and bad CL",
		    REQ11 "Transfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n", BOTH),
	FRAMING_BAD("TE in HTTP/1.0", REQ10 "Transfer-Encoding: chunked\r\n\r\n",
		    "Transfer-Encoding in HTTP/1.0"),
	FRAMING_BAD("TE and CL in HTTP/1.0",
		    REQ10 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
		    "Transfer-Encoding in HTTP/1.0"),
};

static void check_framing(const struct framing_case *c, int err, const char *why,
			  const struct http_body_state *b)
{
	if (err != c->err)
		fail_msg("%s: returned %d (%s), want %d", c->name, err, why ? why : "-", c->err);
	if (err) {
		if (!why || strcmp(why, c->why) != 0)
			fail_msg("%s: reason \"%s\", want \"%s\"", c->name, why ? why : "(null)",
				 c->why);
		assert_int_equal(http_error_status(err), 400);
		return;
	}
	if (b->kind != c->kind)
		fail_msg("%s: kind %d, want %d", c->name, b->kind, c->kind);
	if (b->kind == HTTP_BODY_LENGTH && b->remaining != c->length)
		fail_msg("%s: length %llu", c->name, (unsigned long long)b->remaining);
	if (b->done != (b->kind == HTTP_BODY_NONE || (b->kind == HTTP_BODY_LENGTH && !c->length)))
		fail_msg("%s: done is %d", c->name, b->done);
}

static void test_request_framing(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(request_framing); i++) {
		const struct framing_case *c = &request_framing[i];
		struct http_body_state b;
		const char *why = NULL;
		struct http_head h;
		int err;

		parse_or_fail(c->head, &h);
		err = http_request_body(&h, &b, &why);
		check_framing(c, err, why, &b);
	}
}

struct response_framing_case {
	struct framing_case f;
	enum http_method method;
};

#define RESP11 "HTTP/1.1 200 OK\r\n"

static const struct response_framing_case response_framing[] = {
	{ FRAMING_OK("200 CL", RESP11 "Content-Length: 10\r\n\r\n", HTTP_BODY_LENGTH, 10),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("200 CL 0", RESP11 "Content-Length: 0\r\n\r\n", HTTP_BODY_LENGTH, 0),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("200 chunked", RESP11 "Transfer-Encoding: chunked\r\n\r\n", HTTP_BODY_CHUNKED,
		     0),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("200 gzip, chunked", RESP11 "Transfer-Encoding: gzip, chunked\r\n\r\n",
		     HTTP_BODY_CHUNKED, 0),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("200 close", RESP11 "\r\n", HTTP_BODY_UNTIL_CLOSE, 0), HTTP_METHOD_OTHER },
	{ FRAMING_OK("HTTP/1.0 close", "HTTP/1.0 200 OK\r\nServer: old\r\n\r\n",
		     HTTP_BODY_UNTIL_CLOSE, 0),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("200 gzip only", RESP11 "Transfer-Encoding: gzip\r\n\r\n",
		     HTTP_BODY_UNTIL_CLOSE, 0),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("200 chunked, gzip", RESP11 "Transfer-Encoding: chunked, gzip\r\n\r\n",
		     HTTP_BODY_UNTIL_CLOSE, 0),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("HEAD with CL", RESP11 "Content-Length: 100\r\n\r\n", HTTP_BODY_NONE, 0),
	  HTTP_METHOD_HEAD },
	{ FRAMING_OK("HEAD with chunked", RESP11 "Transfer-Encoding: chunked\r\n\r\n",
		     HTTP_BODY_NONE, 0),
	  HTTP_METHOD_HEAD },
	{ FRAMING_OK("HEAD 404", "HTTP/1.1 404 Not Found\r\n\r\n", HTTP_BODY_NONE, 0),
	  HTTP_METHOD_HEAD },
	{ FRAMING_OK("204 with CL", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
		     HTTP_BODY_NONE, 0),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("304", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
		     HTTP_BODY_NONE, 0),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("100 Continue", "HTTP/1.1 100 Continue\r\n\r\n", HTTP_BODY_NONE, 0),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("103 Early Hints", "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
		     HTTP_BODY_NONE, 0),
	  HTTP_METHOD_OTHER },
	{ FRAMING_OK("CONNECT 200", RESP11 "Content-Length: 5\r\n\r\n", HTTP_BODY_TUNNEL, 0),
	  HTTP_METHOD_CONNECT },
	{ FRAMING_OK("CONNECT 407", "HTTP/1.1 407 Auth\r\nContent-Length: 5\r\n\r\n",
		     HTTP_BODY_LENGTH, 5),
	  HTTP_METHOD_CONNECT },
	{ FRAMING_BAD("101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
		      "101 Switching Protocols without Upgrade"),
	  HTTP_METHOD_OTHER },
	{ FRAMING_BAD("TE and CL", RESP11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
		      BOTH),
	  HTTP_METHOD_OTHER },
	{ FRAMING_BAD("TE in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		      "Transfer-Encoding in HTTP/1.0"),
	  HTTP_METHOD_OTHER },
	{ FRAMING_BAD("differing CL", RESP11 "Content-Length: 5\r\nContent-Length: 50\r\n\r\n",
		      "differing Content-Length values"),
	  HTTP_METHOD_OTHER },
	{ FRAMING_BAD("bad CL on 204", "HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n",
		      "malformed Content-Length"),
	  HTTP_METHOD_OTHER },
	{ FRAMING_BAD("bad CL to HEAD", RESP11 "Content-Length: -1\r\n\r\n",
		      "malformed Content-Length"),
	  HTTP_METHOD_HEAD },
	{ FRAMING_BAD("bad TE", RESP11 "Transfer-Encoding: chunked;x=y\r\n\r\n",
		      "malformed Transfer-Encoding"),
	  HTTP_METHOD_OTHER },
};

static void test_response_framing(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(response_framing); i++) {
		const struct response_framing_case *c = &response_framing[i];
		struct http_body_state b;
		const char *why = NULL;
		struct http_head h;
		int err;

		parse_response_or_fail(c->f.head, &h);
		err = http_response_body(&h, c->method, &b, &why);
		if (err != c->f.err)
			fail_msg("%s: returned %d (%s)", c->f.name, err, why ? why : "-");
		if (err) {
			if (!why || strcmp(why, c->f.why) != 0)
				fail_msg("%s: reason \"%s\"", c->f.name, why ? why : "(null)");
			continue;
		}
		if (b.kind != c->f.kind)
			fail_msg("%s: kind %d, want %d", c->f.name, b.kind, c->f.kind);
		if (b.kind == HTTP_BODY_LENGTH && b.remaining != c->f.length)
			fail_msg("%s: length %llu", c->f.name, (unsigned long long)b.remaining);
	}
}

/* ---- chunked scanner --------------------------------------------------- */

struct chunked_case {
	const char *name;
	const char *bytes;
	size_t len;      /* 0: strlen(bytes) */
	size_t consumed; /* valid: where the body ends (bytes after it follow) */
	const char *why; /* NULL: valid and complete */
};

/* Bytes that follow a complete body in every valid case. */
#define NEXT_MESSAGE "GET http://next/ HTTP/1.1\r\n"
#define VALID(label, body)                                                                      \
	{                                                                                       \
		label, body NEXT_MESSAGE, sizeof(body NEXT_MESSAGE) - 1, sizeof(body) - 1, NULL \
	}
#define BAD(label, body, reason)                         \
	{                                                \
		label, body, sizeof(body) - 1, 0, reason \
	}

static const struct chunked_case chunked_cases[] = {
	VALID("empty body", "0\r\n\r\n"),
	VALID("one chunk", "5\r\nhello\r\n0\r\n\r\n"),
	VALID("two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
	VALID("hex upper and lower", "A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"),
	VALID("leading zeros", "0005\r\nhello\r\n000\r\n\r\n"),
	VALID("data holds CRLF", "4\r\n\r\n\r\n\r\n0\r\n\r\n"),
	VALID("data holds a last-chunk", "5\r\n0\r\n\r\n\r\n0\r\n\r\n"),
	VALID("extension name", "5;name\r\nhello\r\n0\r\n\r\n"),
	VALID("extension value", "5;name=value\r\nhello\r\n0\r\n\r\n"),
	VALID("extensions with BWS", "5 \t; a = b ;c\t;\td=e\r\nhello\r\n0\r\n\r\n"),
	VALID("BWS runs", "5  ;  a  =  b  ;  c  ;d\r\nhello\r\n0\r\n\r\n"),
	VALID("quoted extension", "5;a=\"q \\\" \\\\ ;=\t\xc3\xa9\"\r\nhello\r\n0\r\n\r\n"),
	VALID("quoted then more", "5;a=\"x\" ;b=\"\";c\r\nhello\r\n0\r\n\r\n"),
	VALID("extension on last chunk", "0;done=yes\r\n\r\n"),
	VALID("trailers", "5\r\nhello\r\n0\r\nExpires: x\r\nX-Sum:abc\r\n\r\n"),
	VALID("empty trailer value", "0\r\nX-Empty:\r\n\r\n"),
	VALID("trailer value obs-text", "0\r\nX: \xc3\xa9\t\x80 v\r\n\r\n"),

	BAD("empty size", "\r\n", "chunk size is not hex"),
	BAD("not hex", "g\r\n", "chunk size is not hex"),
	BAD("negative", "-5\r\nhello\r\n", "chunk size is not hex"),
	BAD("0x prefix", "0x5\r\nhello\r\n", "chunk size is not hex"),
	BAD("leading space", " 5\r\nhello\r\n", "chunk size is not hex"),
	BAD("hex then junk", "5g\r\nhello\r\n", "chunk size is not hex"),
	BAD("bare LF after size", "5\nhello\r\n0\r\n\r\n", "chunk size line not ended by CRLF"),
	BAD("bare CR after size", "5\rhello\r\n", "chunk size line not ended by CRLF"),
	BAD("trailing whitespace", "5 \r\nhello\r\n", "bad chunk extension"),
	BAD("empty extension", "5;\r\nhello\r\n", "bad chunk extension"),
	BAD("empty value", "5;a=\r\nhello\r\n", "bad chunk extension"),
	BAD("space in name", "5;a b\r\nhello\r\n", "bad chunk extension"),
	BAD("whitespace after value", "5;a=b \r\nhello\r\n", "bad chunk extension"),
	BAD("LF in extension", "5;a\nb\r\nhello\r\n", "chunk size line not ended by CRLF"),
	BAD("CR in extension", "5;a\rb\r\nhello\r\n", "chunk size line not ended by CRLF"),
	BAD("NUL in extension", "5;a\0b\r\n", "bad chunk extension"),
	BAD("unterminated quote", "5;a=\"x\r\nhello\r\n", "bad chunk extension"),
	BAD("junk after quote", "5;a=\"x\"y\r\nhello\r\n", "bad chunk extension"),
	BAD("control in quote", "5;a=\"\x01\"\r\n", "bad chunk extension"),
	BAD("CR in quoted pair", "5;a=\"\\\r\"\r\n", "bad chunk extension"),
	BAD("data then LF", "5\r\nhello\n0\r\n\r\n", "chunk data not followed by CRLF"),
	BAD("data too long", "5\r\nhelloX\r\n0\r\n\r\n", "chunk data not followed by CRLF"),
	BAD("data then CR X", "5\r\nhello\rX", "chunk data not followed by CRLF"),
	BAD("missing final CRLF", "0\r\n" NEXT_MESSAGE, "bad trailer field"),
	BAD("LF as end", "0\r\n\n", "bad trailer field"),
	BAD("CR CR as end", "0\r\n\r\r", "trailer line not ended by CRLF"),
	BAD("trailer without colon", "0\r\nX\r\n\r\n", "bad trailer field"),
	BAD("trailer space before colon", "0\r\nX : y\r\n\r\n", "bad trailer field"),
	BAD("trailer obs-fold", "0\r\nX: y\r\n z\r\n\r\n", "bad trailer field"),
	BAD("trailer bare LF", "0\r\nX: y\n\r\n", "bad trailer field"),
	BAD("trailer bare CR", "0\r\nX: y\rZ\r\n", "trailer line not ended by CRLF"),
	BAD("trailer NUL", "0\r\nX: \0\r\n\r\n", "bad trailer field"),
	BAD("size over limit", "8000000000000000\r\n", "chunk size over limit"),
	BAD("size over 64 bits", "10000000000000000\r\n", "chunk size over limit"),
};

/* Run the scanner over bytes in slices whose lengths come from a seeded
 * generator (seed 0: all at once; seed 1: one byte at a time). Returns the
 * total consumed or the error; *done as reported. */
static ssize_t scan_in_slices(const uint8_t *bytes, size_t len, unsigned seed, bool *done,
			      const char **why)
{
	struct http_chunked c;
	uint32_t rng = seed * 2654435761u + 1;
	size_t off = 0;

	http_chunked_init(&c);
	*done = false;
	for (;;) {
		size_t step = len - off;
		ssize_t n;

		if (seed == 1)
			step = MIN(step, 1);
		else if (seed > 1) {
			rng = rng * 1103515245u + 12345u;
			step = MIN(step, (size_t)(rng >> 16) % 9);
		}
		n = http_chunked_scan(&c, place(bytes + off, step), step, done);
		if (n < 0) {
			*why = c.why;
			/* Errors are sticky. */
			assert_int_equal(http_chunked_scan(&c, (const uint8_t *)"0\r\n\r\n", 5,
							   done),
					 -EBADMSG);
			return n;
		}
		assert_true((size_t)n <= step);
		off += (size_t)n;
		if (*done) {
			/* Later calls take nothing more. */
			assert_int_equal(http_chunked_scan(&c, bytes + off, len - off, done), 0);
			assert_true(*done);
			return (ssize_t)off;
		}
		if ((size_t)n < step)
			fail_msg("scanner stopped early at %zu without done or error", off);
		if (off == len)
			return (ssize_t)off;
	}
}

#define SPLIT_SEEDS 8

static void check_chunked(const struct chunked_case *c)
{
	const uint8_t *bytes = (const uint8_t *)c->bytes;
	size_t len = c->len ? c->len : strlen(c->bytes);
	unsigned seed;

	for (seed = 0; seed < SPLIT_SEEDS; seed++) {
		const char *why = NULL;
		bool done;
		ssize_t n = scan_in_slices(bytes, len, seed, &done, &why);

		if (c->why) {
			if (n != -EBADMSG || !why || strcmp(why, c->why) != 0)
				fail_msg("%s (seed %u): returned %zd (%s), want \"%s\"", c->name,
					 seed, n, why ? why : "-", c->why);
		} else if (n != (ssize_t)c->consumed || !done) {
			fail_msg("%s (seed %u): returned %zd done %d (%s), want %zu", c->name, seed,
				 n, done, why ? why : "-", c->consumed);
		}
	}
}

static void test_chunked(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(chunked_cases); i++)
		check_chunked(&chunked_cases[i]);
}

/* Inputs at and just over the scanner's limits: before, pad_len times the
 * pad byte, after. */
struct padded_chunked_case {
	const char *name;
	const char *before;
	char pad;
	size_t pad_len;
	const char *after;
	const char *why; /* NULL: valid, the body ends with the input */
};

#define LINE_OVER "chunk size line over 4096 bytes"
#define TRAILERS_OVER "trailer section over 32768 bytes"

static const struct padded_chunked_case padded_chunked_cases[] = {
	/* a size line of exactly HTTP_MAX_CHUNK_LINE_BYTES before its CRLF */
	{ "longest size line", "1;", 'e', HTTP_MAX_CHUNK_LINE_BYTES - 2, "\r\nx\r\n0\r\n\r\n",
	  NULL },
	{ "size line over limit", "1;", 'e', HTTP_MAX_CHUNK_LINE_BYTES - 1, "\r\nx\r\n0\r\n\r\n",
	  LINE_OVER },
	/* leading zeros count too: they cannot go on forever */
	{ "endless zeros", "", '0', HTTP_MAX_CHUNK_LINE_BYTES + 1, "", LINE_OVER },
	/* a trailer section of exactly HTTP_MAX_TRAILER_BYTES, then one more */
	{ "largest trailers", "0\r\nX: ", 't', HTTP_MAX_TRAILER_BYTES - 7, "\r\n\r\n", NULL },
	{ "trailers over limit", "0\r\nX: ", 't', HTTP_MAX_TRAILER_BYTES - 6, "\r\n\r\n",
	  TRAILERS_OVER },
};

static void test_chunked_limits(void **state)
{
	struct http_chunked ch;
	bool done;
	ssize_t n;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(padded_chunked_cases); i++) {
		const struct padded_chunked_case *p = &padded_chunked_cases[i];
		struct chunked_case c;

		build_reset();
		build("%s", p->before);
		build_repeat(p->pad, p->pad_len);
		build("%s", p->after);
		c = (struct chunked_case){ p->name, build_buf, build_len, p->why ? 0 : build_len,
					   p->why };
		check_chunked(&c);
	}

	/* The largest chunk size is accepted and its data counted down. */
	http_chunked_init(&ch);
	n = http_chunked_scan(&ch, (const uint8_t *)"7fffffffffffffff\r\n", 18, &done);
	assert_int_equal(n, 18);
	assert_false(done);
	n = http_chunked_scan(&ch, (const uint8_t *)"abc", 3, &done);
	assert_int_equal(n, 3);
	assert_int_equal(ch.size, 0x7fffffffffffffffULL - 3);
	assert_false(done);
}

/* ---- unified body scan --------------------------------------------------- */

static void test_body_scan(void **state)
{
	static const char chunked[] = "3\r\nabc\r\n0\r\n\r\nNEXT";
	struct http_body_state b;
	struct http_head h;
	size_t off;
	bool done;
	ssize_t n;

	/* NONE: done at once, takes nothing. */
	parse_or_fail("GET http://a/ HTTP/1.1\r\n\r\n", &h);
	assert_int_equal(http_request_body(&h, &b, NULL), 0);
	assert_int_equal(http_body_scan(&b, (const uint8_t *)"GET", 3, &done), 0);
	assert_true(done);

	/* LENGTH: exactly the length, in any slices. */
	parse_or_fail("PUT http://a/ HTTP/1.1\r\nContent-Length: 10\r\n\r\n", &h);
	assert_int_equal(http_request_body(&h, &b, NULL), 0);
	assert_int_equal(http_body_scan(&b, place("", 0), 0, &done), 0);
	assert_false(done);
	assert_int_equal(http_body_scan(&b, place("0123", 4), 4, &done), 4);
	assert_false(done);
	assert_int_equal(http_body_scan(&b, place("456789NEXT", 10), 10, &done), 6);
	assert_true(done);
	assert_int_equal(http_body_scan(&b, place("NEXT", 4), 4, &done), 0);
	assert_true(done);

	/* LENGTH 0 is done from the start. */
	parse_or_fail("PUT http://a/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &h);
	assert_int_equal(http_request_body(&h, &b, NULL), 0);
	assert_int_equal(http_body_scan(&b, place("NEXT", 4), 4, &done), 0);
	assert_true(done);

	/* CHUNKED: byte by byte. */
	parse_or_fail("PUT http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &h);
	assert_int_equal(http_request_body(&h, &b, NULL), 0);
	done = false;
	for (off = 0; !done; off++) {
		n = http_body_scan(&b, place(chunked + off, 1), 1, &done);
		assert_int_equal(n, 1);
	}
	assert_int_equal(off, sizeof(chunked) - 1 - 4);
	assert_int_equal(http_body_scan(&b, place("N", 1), 1, &done), 0);

	/* CHUNKED error. */
	assert_int_equal(http_request_body(&h, &b, NULL), 0);
	assert_int_equal(http_body_scan(&b, place("zz", 2), 2, &done), -EBADMSG);
	assert_false(done);
	assert_string_equal(b.chunked.why, "chunk size is not hex");

	/* UNTIL_CLOSE and TUNNEL take everything, never done. */
	parse_response_or_fail("HTTP/1.1 200 OK\r\n\r\n", &h);
	assert_int_equal(http_response_body(&h, HTTP_METHOD_OTHER, &b, NULL), 0);
	assert_int_equal(http_body_scan(&b, place("0\r\n\r\n", 5), 5, &done), 5);
	assert_false(done);
	assert_int_equal(http_response_body(&h, HTTP_METHOD_CONNECT, &b, NULL), 0);
	assert_int_equal(b.kind, HTTP_BODY_TUNNEL);
	assert_int_equal(http_body_scan(&b, place("\x16\x03", 2), 2, &done), 2);
	assert_false(done);
}

/* ---- head writers ------------------------------------------------------ */

/* Every capacity below the size is -ENOSPC with no write past it, the
 * exact size works, and the result is what the caller compares. */
typedef ssize_t (*write_fn)(uint8_t *out, size_t cap, const void *arg);

static void check_writer(const char *name, write_fn fn, const void *arg, const char *want)
{
	size_t want_len = strlen(want), cap;
	ssize_t n;

	for (cap = 0; cap < want_len; cap++) {
		n = fn(guarded(cap), cap, arg);
		if (n != -ENOSPC)
			fail_msg("%s: cap %zu returned %zd", name, cap, n);
	}
	n = fn(guarded(want_len), want_len, arg);
	if (n != (ssize_t)want_len || memcmp(guarded(want_len), want, want_len) != 0)
		fail_msg("%s: wrote %zd bytes:\n%.*s\nwant:\n%s", name, n, n > 0 ? (int)n : 0,
			 (const char *)guarded(want_len), want);
}

/* Heads for the writer tests live outside the guard area, which the
 * writers write against. */
static uint8_t writer_input[1024];

static void parse_request_copy(const char *s, struct http_head *h)
{
	size_t len = strlen(s);

	assert_true(len <= sizeof(writer_input));
	memcpy(writer_input, s, len);
	assert_int_equal(http_parse_request(writer_input, len, h, NULL), len);
}

static void parse_response_copy(const char *s, struct http_head *h)
{
	size_t len = strlen(s);

	assert_true(len <= sizeof(writer_input));
	memcpy(writer_input, s, len);
	assert_int_equal(http_parse_response(writer_input, len, h, NULL), len);
}

struct request_write {
	const struct http_head *req;
	const struct http_target *t;
};

static ssize_t write_request(uint8_t *out, size_t cap, const void *arg)
{
	const struct request_write *w = arg;

	return http_write_request_head(out, cap, w->req, w->t, false);
}

struct request_writer_case {
	const char *name;
	const char *in;
	const char *out;
	size_t out_fields; /* fields in the output, Host and Connection included */
};

static const struct request_writer_case request_writer_cases[] = {
	{ "curl GET",
	  "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\n"
	  "Accept: */*\r\nProxy-Connection: Keep-Alive\r\n"
	  "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n",
	  "GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n"
	  "Connection: close\r\n\r\n",
	  4 },
	{ "no Host, port, query",
	  "POST http://example.com:8080/api/v1?x=1&y HTTP/1.1\r\nContent-Length: 3\r\n"
	  "content-type: text/plain\r\n\r\n",
	  "POST /api/v1?x=1&y HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 3\r\n"
	  "content-type: text/plain\r\nConnection: close\r\n\r\n",
	  4 },
	{ "Host replaced by the target's",
	  "GET http://real.example/ HTTP/1.1\r\nHost: other.example\r\nhost: third\r\n\r\n",
	  "GET / HTTP/1.1\r\nHost: real.example\r\nConnection: close\r\n\r\n", 2 },
	{ "hop-by-hop and named fields removed",
	  "PUT http://[::1]:81/x HTTP/1.1\r\nConnection: keep-alive, X-Hop\r\n"
	  "Keep-Alive: 300\r\nX-Hop: 1\r\nTE: trailers\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\n"
	  "Transfer-Encoding: chunked\r\nX-Keep:  v  \r\n\r\n",
	  "PUT /x HTTP/1.1\r\nHost: [::1]:81\r\nTransfer-Encoding: chunked\r\nX-Keep: v\r\n"
	  "Connection: close\r\n\r\n",
	  4 },
	{ "Content-Length fields collapse",
	  "POST http://a/ HTTP/1.1\r\ncontent-length: 5, 5\r\nX: 1\r\nContent-Length: 5\r\n\r\n",
	  "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nX: 1\r\nConnection: close\r\n\r\n",
	  4 },
	{ "HTTP/1.0 keeps its version, bare LF normalised",
	  "GET http://a?q HTTP/1.0\nUser-Agent: old\nX-Empty:\n\n",
	  "GET /?q HTTP/1.0\r\nHost: a\r\nUser-Agent: old\r\nX-Empty: \r\nConnection: "
	  "close\r\n\r\n",
	  4 },
	{ "framing named by Connection is kept",
	  "POST http://a/ HTTP/1.1\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\n",
	  "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n", 3 },
};

static void test_write_request_head(void **state)
{
	struct http_target t;
	struct http_head h, again;
	struct request_write w = { &h, &t };
	uint8_t out[1024];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(request_writer_cases); i++) {
		const struct request_writer_case *c = &request_writer_cases[i];
		struct http_body_state b;
		ssize_t n;

		parse_request_copy(c->in, &h);
		assert_int_equal(http_parse_target(&h, &t, NULL), 0);
		assert_int_equal(http_request_body(&h, &b, NULL), 0);
		check_writer(c->name, write_request, &w, c->out);

		/* What we write parses back. */
		n = http_write_request_head(out, sizeof(out), &h, &t, false);
		assert_int_equal(http_parse_request(out, (size_t)n, &again, NULL), n);
		assert_int_equal(again.header_count, c->out_fields);
		assert_false(http_request_keep_alive(&again));

		/* Kept alive: the same head but the last field, which asks the
		 * origin to keep the connection, whatever the version. */
		n = http_write_request_head(out, sizeof(out), &h, &t, true);
		assert_int_equal(http_parse_request(out, (size_t)n, &again, NULL), n);
		assert_int_equal(again.header_count, c->out_fields);
		assert_true(http_request_keep_alive(&again));
		assert_int_equal((size_t)n,
				 strlen(c->out) - strlen("close") + strlen("keep-alive"));
		assert_memory_equal(out, c->out, strlen(c->out) - strlen("close\r\n\r\n"));
		assert_memory_equal(out + n - strlen("keep-alive\r\n\r\n"), "keep-alive\r\n\r\n",
				    strlen("keep-alive\r\n\r\n"));
	}

	/* A head that did not pass http_request_body is refused. */
	parse_request_copy("POST http://a/ HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", &h);
	assert_int_equal(http_parse_target(&h, &t, NULL), 0);
	assert_int_equal(http_write_request_head(out, sizeof(out), &h, &t, false), -EINVAL);

	/* CONNECT has no origin-form. */
	parse_request_copy("CONNECT a:443 HTTP/1.1\r\n\r\n", &h);
	assert_int_equal(http_parse_target(&h, &t, NULL), 0);
	assert_int_equal(http_write_request_head(out, sizeof(out), &h, &t, false), -EINVAL);
}

struct response_write {
	const struct http_head *resp;
	bool keep_alive;
};

static ssize_t write_response(uint8_t *out, size_t cap, const void *arg)
{
	const struct response_write *w = arg;

	return http_write_response_head(out, cap, w->resp, w->keep_alive);
}

static void test_write_response_head(void **state)
{
	uint8_t out[256];
	struct http_head h;
	struct response_write w = { &h, true };

	parse_response_copy("HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
			    "Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nServer:  x \r\n"
			    "Set-Cookie: a=b\r\nSet-Cookie: c=d\r\n\r\n",
			    &h);
	check_writer("keep-alive", write_response, &w,
		     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nServer: x\r\nSet-Cookie: a=b\r\n"
		     "Set-Cookie: c=d\r\nConnection: keep-alive\r\n\r\n");
	w.keep_alive = false;
	check_writer("close", write_response, &w,
		     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nServer: x\r\nSet-Cookie: a=b\r\n"
		     "Set-Cookie: c=d\r\nConnection: close\r\n\r\n");

	parse_response_copy("HTTP/1.1 204\r\n\r\n", &h);
	check_writer("no reason", write_response, &w, "HTTP/1.1 204 \r\nConnection: close\r\n\r\n");

	parse_response_copy("HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n"
			    "Trailer: X\r\nConnection: X-A\r\nX-A: 1\r\n\r\n",
			    &h);
	w.keep_alive = true;
	check_writer("chunked", write_response, &w,
		     "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n"
		     "Connection: keep-alive\r\n\r\n");

	parse_response_copy("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
			    &h);
	check_writer("Content-Length collapse", write_response, &w,
		     "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: keep-alive\r\n\r\n");

	/* A request head is not a response head. */
	parse_or_fail("GET http://a/ HTTP/1.1\r\n\r\n", &h);
	assert_int_equal(http_write_response_head(out, sizeof(out), &h, true), -EINVAL);

	/* A head that did not pass http_response_body is refused. */
	parse_response_copy("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", &h);
	assert_int_equal(http_write_response_head(out, sizeof(out), &h, true), -EINVAL);
}

struct error_write {
	int status;
	const char *body;
	const char *extra;
	bool keep_alive;
};

static ssize_t write_error(uint8_t *out, size_t cap, const void *arg)
{
	const struct error_write *w = arg;

	return http_write_error(out, cap, w->status, w->body, w->extra, w->keep_alive);
}

static void test_write_error(void **state)
{
	static const struct {
		struct error_write e;
		const char *want;
	} cases[] = {
		{ { 407, "proxy authentication required", HTTP_PROXY_AUTH_CHALLENGE, true },
		  "HTTP/1.1 407 Proxy Authentication Required\r\n"
		  "Proxy-Authenticate: Basic realm=\"anyproxy\"\r\n"
		  "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 30\r\n"
		  "Connection: keep-alive\r\n\r\nproxy authentication required\n" },
		{ { 503, "no clients available in group 'x' or default group", NULL, false },
		  "HTTP/1.1 503 Service Unavailable\r\n"
		  "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 51\r\n"
		  "Connection: close\r\n\r\nno clients available in group 'x' or default group\n" },
		{ { 400, NULL, NULL, false },
		  "HTTP/1.1 400 Bad Request\r\n"
		  "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n"
		  "Connection: close\r\n\r\nBad Request\n" },
		{ { 431, "", NULL, false },
		  "HTTP/1.1 431 Request Header Fields Too Large\r\n"
		  "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 1\r\n"
		  "Connection: close\r\n\r\n\n" },
	};
	static const int statuses[] = { 400, 403, 407, 408, 431, 500, 502, 503, 504, 505 };
	uint8_t out[512];
	struct http_head h;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++)
		check_writer(cases[i].want, write_error, &cases[i].e, cases[i].want);

	/* Every status the gateway sends is a response that parses and frames. */
	for (i = 0; i < ARRAY_SIZE(statuses); i++) {
		struct http_body_state b;
		ssize_t n = http_write_error(out, sizeof(out), statuses[i], "text", NULL, true);
		ssize_t head;

		assert_true(n > 0);
		head = http_parse_response(out, (size_t)n, &h, NULL);
		assert_true(head > 0);
		assert_int_equal(h.status, statuses[i]);
		assert_int_equal(http_response_body(&h, HTTP_METHOD_OTHER, &b, NULL), 0);
		assert_int_equal(b.kind, HTTP_BODY_LENGTH);
		assert_int_equal(b.remaining, (uint64_t)(n - head));
	}

	assert_int_equal(http_write_error(out, sizeof(out), 418, "x", NULL, false), -EINVAL);
	assert_int_equal(http_write_error(out, sizeof(out), 200, "x", NULL, false), -EINVAL);
	assert_int_equal(http_write_error(out, sizeof(out), 407, "x", "A: b\r\nC: d", false),
			 -EINVAL);
	assert_int_equal(http_write_error(out, sizeof(out), 407, "x", "A: b\n", false), -EINVAL);
	assert_int_equal(sizeof(HTTP_CONNECT_ESTABLISHED) - 1,
			 http_parse_response((const uint8_t *)HTTP_CONNECT_ESTABLISHED,
					     sizeof(HTTP_CONNECT_ESTABLISHED) - 1, &h, NULL));
	assert_int_equal(h.status, 200);
}

/* The worst growth: minimal fields ("a:" and a bare LF each), a bare-LF
 * request line without a path, a status line without a reason. */
static void test_rewrite_growth(void **state)
{
	static uint8_t out[HTTP_MAX_HEAD_BYTES + HTTP_REWRITE_GROWTH_BYTES];
	struct http_body_state b;
	struct http_target t;
	struct http_head h;
	ssize_t in_len, n;
	size_t i;

	build_reset();
	build("GET http://a HTTP/1.1\n");
	for (i = 0; i < HTTP_MAX_HEADERS; i++)
		build("a:\n");
	build("\n");
	in_len = http_parse_request((const uint8_t *)build_buf, build_len, &h, NULL);
	assert_int_equal(in_len, build_len);
	assert_int_equal(http_parse_target(&h, &t, NULL), 0);
	assert_int_equal(http_request_body(&h, &b, NULL), 0);
	n = http_write_request_head(out, sizeof(out), &h, &t, true);
	assert_true(n > in_len && n <= in_len + HTTP_REWRITE_GROWTH_BYTES);

	build_reset();
	build("HTTP/1.1 200\n");
	for (i = 0; i < HTTP_MAX_HEADERS; i++)
		build("a:\n");
	build("\n");
	in_len = http_parse_response((const uint8_t *)build_buf, build_len, &h, NULL);
	assert_int_equal(in_len, build_len);
	assert_int_equal(http_response_body(&h, HTTP_METHOD_OTHER, &b, NULL), 0);
	n = http_write_response_head(out, sizeof(out), &h, true);
	assert_true(n > in_len && n <= in_len + HTTP_REWRITE_GROWTH_BYTES);
	/* the bound is tight to within the slack of its round number */
	assert_true(n + 8 > in_len + HTTP_REWRITE_GROWTH_BYTES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_valid),
		cmocka_unit_test(test_request_malformed),
		cmocka_unit_test(test_error_status),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_response_valid),
		cmocka_unit_test(test_response_malformed),
		cmocka_unit_test(test_targets),
		cmocka_unit_test(test_header_lookup),
		cmocka_unit_test(test_hop_by_hop),
		cmocka_unit_test(test_keep_alive),
		cmocka_unit_test(test_response_keep_alive),
		cmocka_unit_test(test_basic_decode),
		cmocka_unit_test(test_proxy_credentials),
		cmocka_unit_test(test_request_framing),
		cmocka_unit_test(test_response_framing),
		cmocka_unit_test(test_chunked),
		cmocka_unit_test(test_chunked_limits),
		cmocka_unit_test(test_body_scan),
		cmocka_unit_test(test_write_request_head),
		cmocka_unit_test(test_write_response_head),
		cmocka_unit_test(test_write_error),
		cmocka_unit_test(test_rewrite_growth),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
