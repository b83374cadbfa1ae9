/*
 * test_http_connect.c — the client side of HTTP CONNECT (src/proxy/http_connect.c):
 * the request an agent sends to its egress proxy and the proxy's answer.
 *
 * Parser inputs are placed right before an inaccessible page, so a read
 * past the end of the input faults even without ASan; requests written with
 * a short capacity are written against that page too.
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
#include "anyproxy/http_connect.h"

/* Room for the largest input: an answer over HTTP_CONNECT_REPLY_MAX_BYTES. */
#define GUARD_AREA_MIN (2 * HTTP_CONNECT_REPLY_MAX_BYTES)

static int setup(void **state)
{
	return guard_setup(GUARD_AREA_MIN);
}

static int teardown(void **state)
{
	return guard_teardown();
}

static ssize_t write_request(uint8_t *out, size_t cap, const char *authority, const char *user,
			     const char *password)
{
	return http_connect_request(out, cap, authority, user, password);
}

/* ---- the request ------------------------------------------------------ */

static void expect_request(const char *authority, const char *user, const char *password,
			   const char *want)
{
	uint8_t out[HTTP_CONNECT_REQUEST_MAX_BYTES];
	ssize_t n = write_request(out, sizeof(out), authority, user, password);

	if (n != (ssize_t)strlen(want) || memcmp(out, want, strlen(want)) != 0)
		fail_msg("request for %s is \"%.*s\" (%zd), want \"%s\"", authority,
			 n > 0 ? (int)n : 0, (const char *)out, n, want);
	/* exactly the length: one byte less is -ENOSPC, written against the page */
	assert_int_equal(write_request(guarded((size_t)n), (size_t)n, authority, user, password),
			 n);
	assert_int_equal(write_request(guarded((size_t)n - 1), (size_t)n - 1, authority, user,
				       password),
			 -ENOSPC);
}

static void test_request_golden(void **state)
{
	/* RFC 7617 §2's example, every padding length, and a password with ':'
	 * and a high byte (sent as they are) */
	static const struct {
		const char *user, *password, *base64;
	} basic[] = {
		{ "Aladdin", "open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ==" },
		{ "a", "b", "YTpi" },
		{ "ab", "c", "YWI6Yw==" },
		{ "ab", "cd", "YWI6Y2Q=" },
		{ "u", "p:@\xc3\xa9", "dTpwOkDDqQ==" },
	};
	char want[HTTP_CONNECT_REQUEST_MAX_BYTES];

	expect_request("gw.example.com:8443", NULL, NULL,
		       "CONNECT gw.example.com:8443 HTTP/1.1\r\nHost: gw.example.com:8443\r\n\r\n");
	expect_request("[2001:db8::1]:443", NULL, NULL,
		       "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n");
	for (size_t i = 0; i < ARRAY_SIZE(basic); i++) {
		snprintf(want, sizeof(want),
			 "CONNECT gw:1 HTTP/1.1\r\nHost: gw:1\r\n"
			 "Proxy-Authorization: Basic %s\r\n\r\n",
			 basic[i].base64);
		expect_request("gw:1", basic[i].user, basic[i].password, want);
	}
}

/* What the gateway's own decoder reads back is what was given. */
static void test_request_round_trip(void **state)
{
	static const char *const passwords[] = { "x", "hunter2", "p:a:s:s", "~!$&'()*+,;=" };
	uint8_t out[HTTP_CONNECT_REQUEST_MAX_BYTES];
	char user[HTTP_MAX_USERNAME_BYTES + 1], password[HTTP_MAX_PASSWORD_BYTES + 1];
	struct http_credentials c;
	struct http_head h;
	const struct http_header *auth;
	ssize_t n;

	memset(user, 'u', sizeof(user) - 1);
	user[sizeof(user) - 1] = '\0';
	memset(password, 'p', sizeof(password) - 1);
	password[sizeof(password) - 1] = '\0';
	for (size_t i = 0; i <= ARRAY_SIZE(passwords); i++) {
		const char *pw = i < ARRAY_SIZE(passwords) ? passwords[i] : password;
		const char *u = i < ARRAY_SIZE(passwords) ? "agent" : user;

		n = write_request(out, sizeof(out), "gw.example.com:8443", u, pw);
		assert_true(n > 0);
		assert_int_equal(http_parse_request(out, (size_t)n, &h, NULL), n);
		assert_int_equal(h.method_kind, HTTP_METHOD_CONNECT);
		assert_int_equal(h.target.len, strlen("gw.example.com:8443"));
		auth = http_header_next(&h, "Proxy-Authorization", NULL);
		assert_non_null(auth);
		assert_int_equal(http_basic_decode(auth->value.ptr, auth->value.len, &c, NULL), 0);
		assert_string_equal(c.username, u);
		assert_string_equal(c.password, pw);
	}
}

static void test_request_refused(void **state)
{
	uint8_t out[HTTP_CONNECT_REQUEST_MAX_BYTES];
	char long_authority[HTTP_CONNECT_AUTHORITY_MAX_BYTES + 2];
	char long_password[HTTP_MAX_PASSWORD_BYTES + 2];

	assert_int_equal(write_request(out, sizeof(out), "", NULL, NULL), -EINVAL);
	assert_int_equal(write_request(out, sizeof(out), "gw:1\r\nX: y", NULL, NULL), -EINVAL);
	assert_int_equal(write_request(out, sizeof(out), "gw :1", NULL, NULL), -EINVAL);
	assert_int_equal(write_request(out, sizeof(out), "gw:1", "u", NULL), -EINVAL);
	assert_int_equal(write_request(out, sizeof(out), "gw:1", NULL, "p"), -EINVAL);
	assert_int_equal(write_request(out, sizeof(out), "gw:1", "u:v", "p"), -EINVAL);
	assert_int_equal(write_request(out, sizeof(out), "gw:1", "u", "p\r\n"), -EINVAL);
	assert_int_equal(write_request(out, sizeof(out), "gw:1", "u\x7f", "p"), -EINVAL);
	memset(long_authority, 'a', sizeof(long_authority) - 1);
	long_authority[sizeof(long_authority) - 1] = '\0';
	assert_int_equal(write_request(out, sizeof(out), long_authority, NULL, NULL), -EINVAL);
	memset(long_password, 'p', sizeof(long_password) - 1);
	long_password[sizeof(long_password) - 1] = '\0';
	assert_int_equal(write_request(out, sizeof(out), "gw:1", "u", long_password), -EINVAL);
	long_password[HTTP_MAX_PASSWORD_BYTES] = '\0';
	assert_true(write_request(out, sizeof(out), "gw:1", "u", long_password) > 0);
}

/* The bound holds the largest request there is. */
static void test_request_max(void **state)
{
	uint8_t out[HTTP_CONNECT_REQUEST_MAX_BYTES];
	char authority[HTTP_CONNECT_AUTHORITY_MAX_BYTES + 1];
	char user[HTTP_MAX_USERNAME_BYTES + 1], password[HTTP_MAX_PASSWORD_BYTES + 1];

	memset(authority, 'a', sizeof(authority) - 1);
	authority[sizeof(authority) - 1] = '\0';
	memset(user, 'u', sizeof(user) - 1);
	user[sizeof(user) - 1] = '\0';
	memset(password, 'p', sizeof(password) - 1);
	password[sizeof(password) - 1] = '\0';
	assert_true(write_request(out, sizeof(out), authority, user, password) > 0);
}

/* ---- the answer ------------------------------------------------------- */

static ssize_t parse(const char *text, size_t len, struct http_connect_reply *r, const char **why)
{
	return http_connect_reply(guard_place(text, len), len, r, why);
}

/* Parse text (of which the first head_len bytes are the answer's heads)
 * and every prefix of it. */
static void expect_reply(const char *text, size_t len, size_t head_len, int status,
			 const char *reason)
{
	struct http_connect_reply r;
	ssize_t n;

	for (size_t i = 0; i < head_len; i++) {
		n = parse(text, i, &r, NULL);
		if (n != 0)
			fail_msg("prefix of %zu bytes of \"%s\": %zd, want 0", i, text, n);
	}
	n = parse(text, len, &r, NULL);
	assert_int_equal(n, (ssize_t)head_len);
	assert_int_equal(r.status, status);
	assert_int_equal(r.reason.len, strlen(reason));
	assert_memory_equal(r.reason.ptr, reason, r.reason.len);
}

static void test_reply_valid(void **state)
{
	static const char tinyproxy[] =
		"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n";
	static const char with_tls[] = "HTTP/1.1 200 OK\r\n\r\n\x16\x03\x03\x00\x05hello";
	static const char refused[] =
		"HTTP/1.1 407 Proxy Authentication Required\r\n"
		"Proxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 5\r\n\r\nnope!";
	static const char interim[] =
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\n"
		"HTTP/1.1 200 Connection established\r\n\r\n";
	/* a 2xx has no body, whatever it says: the bytes after are the tunnel's */
	static const char framed[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n\x16\x03";
	static const char bare_lf[] = "HTTP/1.1 403 Forbidden\nVia: corp\n\n";
	static const char no_reason[] = "HTTP/1.1 502\r\n\r\n";

	expect_reply(tinyproxy, strlen(tinyproxy), strlen(tinyproxy), 200,
		     "Connection established");
	expect_reply(with_tls, sizeof(with_tls) - 1, strlen("HTTP/1.1 200 OK\r\n\r\n"), 200, "OK");
	expect_reply(refused, strlen(refused), strlen(refused) - strlen("nope!"), 407,
		     "Proxy Authentication Required");
	expect_reply(interim, strlen(interim), strlen(interim), 200, "Connection established");
	expect_reply(framed, sizeof(framed) - 1, sizeof(framed) - 1 - 2, 200, "OK");
	expect_reply(bare_lf, strlen(bare_lf), strlen(bare_lf), 403, "Forbidden");
	expect_reply(no_reason, strlen(no_reason), strlen(no_reason), 502, "");
}

static void expect_refused(const char *text, size_t len, int err, const char *why_fragment)
{
	struct http_connect_reply r;
	const char *why = NULL;

	assert_int_equal(parse(text, len, &r, &why), err);
	assert_non_null(why);
	if (!strstr(why, why_fragment))
		fail_msg("\"%s\": reason \"%s\", want \"%s\"", text, why, why_fragment);
	assert_int_equal(r.status, 0);
}

static void test_reply_malformed(void **state)
{
	static const char ssh[] = "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n";
	static const char html[] = "<html><body>blocked</body></html>\r\n\r\n";
	static const char tls[] = "\x16\x03\x01\x00\x10\r\n\r\n";
	static const char switching[] = "HTTP/1.1 101 Switching Protocols\r\n\r\n";
	static const char http2[] = "HTTP/2.0 200 OK\r\n\r\n";
	static const char bare_cr[] = "HTTP/1.1 200 OK\rX: y\r\n\r\n";
	static const char fold[] = "HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n";

	expect_refused(ssh, strlen(ssh), -EBADMSG, "malformed");
	expect_refused(html, strlen(html), -EBADMSG, "malformed");
	expect_refused(tls, sizeof(tls) - 1, -EBADMSG, "malformed");
	expect_refused(switching, strlen(switching), -EBADMSG, "101 Switching Protocols");
	expect_refused(http2, strlen(http2), -EPROTONOSUPPORT, "version");
	expect_refused(bare_cr, strlen(bare_cr), -EBADMSG, "bare CR");
	expect_refused(fold, strlen(fold), -EBADMSG, "obs-fold");
}

/* "HTTP/1.1 200 OK", one field and the blank line: head_len bytes in all. */
static size_t build_head(char *text, size_t head_len)
{
	static const char status[] = "HTTP/1.1 200 OK\r\nX: ";
	size_t n = strlen(status), value = head_len - n - 4;

	memcpy(text, status, n);
	memset(text + n, 'a', value);
	memcpy(text + n + value, "\r\n\r\n", 4);
	return head_len;
}

/* HTTP_CONNECT_REPLY_MAX_BYTES bounds every head together. */
static void test_reply_limit(void **state)
{
	static char text[2 * HTTP_CONNECT_REPLY_MAX_BYTES];
	static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
	struct http_connect_reply r;
	size_t n;

	n = build_head(text, HTTP_CONNECT_REPLY_MAX_BYTES);
	assert_int_equal(parse(text, n, &r, NULL), (ssize_t)n);
	assert_int_equal(r.status, 200);
	/* one byte more: a prefix under the bound still waits, the bound refuses */
	n = build_head(text, HTTP_CONNECT_REPLY_MAX_BYTES + 1);
	assert_int_equal(parse(text, HTTP_CONNECT_REPLY_MAX_BYTES - 1, &r, NULL), 0);
	expect_refused(text, HTTP_CONNECT_REPLY_MAX_BYTES, -EMSGSIZE, "over 8192 bytes");
	expect_refused(text, n, -EMSGSIZE, "over 8192 bytes");
	/* interim heads count too */
	for (n = 0; n + strlen(interim) <= HTTP_CONNECT_REPLY_MAX_BYTES; n += strlen(interim))
		memcpy(text + n, interim, strlen(interim));
	n += build_head(text + n, 32);
	expect_refused(text, n, -EMSGSIZE, "over 8192 bytes");
	/* and more than HTTP_MAX_HEADERS fields in one head */
	n = strlen("HTTP/1.1 200 OK\r\n");
	memcpy(text, "HTTP/1.1 200 OK\r\n", n);
	for (int i = 0; i <= HTTP_MAX_HEADERS; i++, n += 6)
		memcpy(text + n, "X: y\r\n", 6);
	memcpy(text + n, "\r\n", 2);
	expect_refused(text, n + 2, -EMSGSIZE, "more than 100 header fields");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_golden),  cmocka_unit_test(test_request_round_trip),
		cmocka_unit_test(test_request_refused), cmocka_unit_test(test_request_max),
		cmocka_unit_test(test_reply_valid),     cmocka_unit_test(test_reply_malformed),
		cmocka_unit_test(test_reply_limit),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
