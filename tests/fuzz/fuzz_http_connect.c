/*
 * fuzz_http_connect.c — libFuzzer target for the client side of HTTP
 * CONNECT (http_connect.h): the egress proxy's answer, and the request the
 * agent writes.
 *
 * The input is a proxy's answer (any bytes). Aborts when a promise breaks:
 *   - the result is > 0, 0, -EBADMSG, -EMSGSIZE or -EPROTONOSUPPORT; a
 *     refusal has a reason; 0 only for an input under the bound;
 *   - an answer ends within the input and the bound, has a final status
 *     (200..599) and a reason inside the heads;
 *   - the heads alone parse to the same answer, and every shorter prefix
 *     of them gives 0 (checked at a few cut points) — so parsing again as
 *     bytes arrive is safe, and no byte after the heads is read as theirs.
 * The input is also split at its first two NULs into an authority, a user
 * name and a password for http_connect_request: a request it writes must
 * fit the bound, parse as one CONNECT head of exactly its length, name the
 * authority, and carry the credentials http_basic_decode reads back.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/http.h"
#include "anyproxy/http_connect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Prefix cut points tried per answer (the first, the last, some between). */
#define FUZZ_PREFIX_CUTS 8

static void check_reply(const uint8_t *data, size_t size)
{
	struct http_connect_reply r, again;
	const char *why = NULL;
	ssize_t n = http_connect_reply(data, size, &r, &why);

	if (n < 0) {
		if ((n != -EBADMSG && n != -EMSGSIZE && n != -EPROTONOSUPPORT) || !why || !why[0])
			abort();
		return;
	}
	if (n == 0) {
		if (size >= HTTP_CONNECT_REPLY_MAX_BYTES)
			abort();
		return;
	}
	if ((size_t)n > size || n > HTTP_CONNECT_REPLY_MAX_BYTES || r.status < 200 ||
	    r.status > 599 ||
	    (r.reason.len && (r.reason.ptr < data || r.reason.ptr + r.reason.len > data + n)))
		abort();
	if (http_connect_reply(data, (size_t)n, &again, NULL) != n || again.status != r.status ||
	    again.reason.len != r.reason.len || again.reason.ptr != r.reason.ptr)
		abort();
	for (size_t k = 0; k < FUZZ_PREFIX_CUTS; k++) {
		size_t cut = (size_t)n - 1 - k * ((size_t)n - 1) / (FUZZ_PREFIX_CUTS - 1);

		if (http_connect_reply(data, cut, &again, NULL) != 0)
			abort();
	}
}

/* Split data at its first two NULs; false if it has fewer. */
static bool split3(const uint8_t *data, size_t size, char *buf, const char **a, const char **u,
		   const char **p)
{
	const uint8_t *z1 = memchr(data, '\0', size), *z2;

	if (!z1)
		return false;
	z2 = memchr(z1 + 1, '\0', size - (size_t)(z1 + 1 - data));
	if (!z2)
		return false;
	memcpy(buf, data, size);
	buf[size] = '\0';
	*a = buf;
	*u = buf + (z1 + 1 - data);
	*p = buf + (z2 + 1 - data);
	return true;
}

static void check_request(const uint8_t *data, size_t size)
{
	static uint8_t out[HTTP_CONNECT_REQUEST_MAX_BYTES];
	static struct http_head h;
	static struct http_credentials c;
	char *buf = malloc(size + 1);
	const char *authority, *user, *password;
	const struct http_header *auth;
	ssize_t n;

	if (!buf)
		abort();
	if (!split3(data, size, buf, &authority, &user, &password)) {
		free(buf);
		return;
	}
	if (!user[0]) /* an empty user name stands for "no credentials" here */
		user = password = NULL;
	n = http_connect_request(out, sizeof(out), authority, user, password);
	if (n == -EINVAL) {
		free(buf);
		return;
	}
	if (n <= 0 || http_parse_request(out, (size_t)n, &h, NULL) != n ||
	    h.method_kind != HTTP_METHOD_CONNECT || h.target.len != strlen(authority) ||
	    memcmp(h.target.ptr, authority, h.target.len) != 0)
		abort();
	auth = http_header_next(&h, "Proxy-Authorization", NULL);
	if ((auth != NULL) != (user != NULL))
		abort();
	if (auth && (http_basic_decode(auth->value.ptr, auth->value.len, &c, NULL) != 0 ||
		     strcmp(c.username, user) != 0 || strcmp(c.password, password) != 0))
		abort();
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_reply(data, size);
	check_request(data, size);
	return 0;
}
