/*
 * http_connect.c — the client side of HTTP CONNECT (see http_connect.h).
 *
 * Pure: no I/O, no allocation. The answer is read with http.c's response
 * parser, so the agent's proxy answers meet the same grammar as every
 * response the gateway reads; only the framing of CONNECT's answer (interim
 * heads, no body after a 2xx) and the smaller bound live here.
 */
#include "anyproxy/http_connect.h"
#include "anyproxy/common.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#define BASE64_QUANTUM_BYTES 3
#define BASE64_QUANTUM_CHARS 4
#define BASE64_BITS_PER_CHAR 6
#define BASE64_CHAR_MASK 0x3f
#define STATUS_SWITCHING_PROTOCOLS 101
#define STATUS_FINAL_MIN 200

static const char base64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int fail(const char **why, int err, const char *reason)
{
	if (why)
		*why = reason;
	return err;
}

/* Append the text s at *p. */
static uint8_t *put_str(uint8_t *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n);
	return p + n;
}

/* Padded base64 (RFC 4648 §4) of the bytes of user ':' password at p,
 * one quantum at a time so the plain credentials are never copied. */
static uint8_t *put_basic(uint8_t *p, const char *user, const char *password)
{
	size_t ulen = strlen(user), plen = strlen(password), total = ulen + 1 + plen, i, k;
	uint8_t in[BASE64_QUANTUM_BYTES];

	for (i = 0; i < total; i += BASE64_QUANTUM_BYTES) {
		size_t n = MIN((size_t)BASE64_QUANTUM_BYTES, total - i);
		uint32_t bits = 0;

		for (k = 0; k < BASE64_QUANTUM_BYTES; k++) {
			size_t at = i + k;

			if (k >= n)
				in[k] = 0;
			else if (at < ulen)
				in[k] = (uint8_t)user[at];
			else if (at == ulen)
				in[k] = ':';
			else
				in[k] = (uint8_t)password[at - ulen - 1];
			bits = bits << 8 | in[k];
		}
		for (k = 0; k < BASE64_QUANTUM_CHARS; k++) {
			unsigned shift =
				(unsigned)(BASE64_QUANTUM_CHARS - 1 - k) * BASE64_BITS_PER_CHAR;

			*p++ = k <= n ? (uint8_t)base64_alphabet[(bits >> shift) & BASE64_CHAR_MASK]
				      : (uint8_t)'=';
		}
	}
	explicit_bzero(in, sizeof(in));
	return p;
}

/* Base64 characters for n bytes. */
static size_t base64_len(size_t n)
{
	return (n + BASE64_QUANTUM_BYTES - 1) / BASE64_QUANTUM_BYTES * BASE64_QUANTUM_CHARS;
}

/* No byte that could end or split a field: no control byte, no DEL. */
static bool clean_text(const char *s, size_t max, bool colon_allowed)
{
	size_t n = strlen(s), i;

	if (n > max)
		return false;
	for (i = 0; i < n; i++) {
		uint8_t c = (uint8_t)s[i];

		if (c < 0x20 || c == 0x7f || (c == ':' && !colon_allowed))
			return false;
	}
	return true;
}

static bool authority_ok(const char *a)
{
	size_t n = strlen(a), i;

	if (n == 0 || n > HTTP_CONNECT_AUTHORITY_MAX_BYTES)
		return false;
	for (i = 0; i < n; i++)
		if ((uint8_t)a[i] <= ' ' || (uint8_t)a[i] >= 0x7f)
			return false;
	return true;
}

ssize_t http_connect_request(uint8_t *out, size_t cap, const char *authority, const char *username,
			     const char *password)
{
	static const char line_end[] = " HTTP/1.1\r\nHost: ",
			  basic[] = "Proxy-Authorization: Basic ";
	size_t alen = strlen(authority), need;
	uint8_t *p = out;

	if (!authority_ok(authority) || (username == NULL) != (password == NULL))
		return -EINVAL;
	if (username && (!clean_text(username, HTTP_MAX_USERNAME_BYTES, false) ||
			 !clean_text(password, HTTP_MAX_PASSWORD_BYTES, true)))
		return -EINVAL;
	/* "CONNECT " authority line_end authority CRLF [basic b64 CRLF] CRLF */
	need = strlen("CONNECT ") + alen + strlen(line_end) + alen + 2 + 2;
	if (username)
		need += strlen(basic) + base64_len(strlen(username) + 1 + strlen(password)) + 2;
	if (need > cap)
		return -ENOSPC;
	p = put_str(p, "CONNECT ");
	p = put_str(p, authority);
	p = put_str(p, line_end);
	p = put_str(p, authority);
	p = put_str(p, "\r\n");
	if (username) {
		p = put_str(p, basic);
		p = put_basic(p, username, password);
		p = put_str(p, "\r\n");
	}
	p = put_str(p, "\r\n");
	return (ssize_t)(p - out);
}

ssize_t http_connect_reply(const uint8_t *buf, size_t len, struct http_connect_reply *reply,
			   const char **why)
{
	size_t end = MIN(len, (size_t)HTTP_CONNECT_REPLY_MAX_BYTES), pos = 0;
	struct http_head h;

	memset(reply, 0, sizeof(*reply));
	for (;;) {
		ssize_t n = http_parse_response(buf + pos, end - pos, &h, why);

		if (n < 0)
			return n;
		if (n == 0)
			break;
		pos += (size_t)n;
		if (h.status == STATUS_SWITCHING_PROTOCOLS)
			return fail(why, -EBADMSG, "101 Switching Protocols in answer to CONNECT");
		if (h.status >= STATUS_FINAL_MIN) {
			reply->status = h.status;
			reply->reason = h.reason;
			reply->minor_version = h.minor_version;
			return (ssize_t)pos;
		}
	}
	if (len >= HTTP_CONNECT_REPLY_MAX_BYTES)
		return fail(why, -EMSGSIZE, "answer to CONNECT over 8192 bytes");
	return 0;
}
_Static_assert(HTTP_CONNECT_REPLY_MAX_BYTES == 8192, "update the limit message");
_Static_assert(HTTP_CONNECT_REPLY_MAX_BYTES <= HTTP_MAX_HEAD_BYTES,
	       "http_parse_response must not refuse a head within the bound first");
