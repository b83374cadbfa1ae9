/*
 * http_connect.h — the client side of HTTP CONNECT (RFC 9110 §9.3.6): what
 * an agent says to an HTTP proxy to reach its gateway through it ([client]
 * egress_proxy), and how it reads the answer. Pure like http.h: no I/O, no
 * allocation, unit-tested and fuzzed on plain buffers.
 *
 *   http_connect_request  "CONNECT host:port HTTP/1.1", Host, and
 *                         Proxy-Authorization: Basic when credentials are
 *                         given; refuses what would break the head (CR, LF,
 *                         control bytes) instead of writing it
 *   http_connect_reply    the proxy's answer: interim 1xx heads are skipped,
 *                         the final head's status and reason are returned
 *                         with the length of all heads read
 *
 * The answer's heads are parsed with http_parse_response (the same strict
 * grammar as every response the gateway reads), bounded by
 * HTTP_CONNECT_REPLY_MAX_BYTES in all. Bytes after the final head are not
 * the reply's: after a 2xx they are the tunnel's (its first TLS bytes) and
 * a caller must hand them on, never drop them. A 2xx answer has no body,
 * whatever Content-Length or Transfer-Encoding it names (RFC 9110 §9.3.6:
 * the client ignores them); after any other status the proxy closes or
 * sends a body the caller does not read, since it closes the connection.
 */
#ifndef ANYPROXY_HTTP_CONNECT_H
#define ANYPROXY_HTTP_CONNECT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "anyproxy/http.h"

/* Every head of a proxy's answer to CONNECT together (interim ones
 * included): a real one is a status line and a few fields. */
#define HTTP_CONNECT_REPLY_MAX_BYTES 8192
/* An authority "host:port" or "[v6]:port": a host name and a port. */
#define HTTP_CONNECT_AUTHORITY_MAX_BYTES (HTTP_MAX_HOST_BYTES + sizeof("[]:65535") - 1)
/* The longest request http_connect_request writes: the line, Host, the
 * Basic credentials (base64 of user ':' password) and the blank line. */
#define HTTP_CONNECT_REQUEST_MAX_BYTES          \
	(2 * HTTP_CONNECT_AUTHORITY_MAX_BYTES + \
	 (HTTP_MAX_USERNAME_BYTES + 1 + HTTP_MAX_PASSWORD_BYTES + 2) / 3 * 4 + 128)

/* The final answer. reason points into the parsed buffer. */
struct http_connect_reply {
	int status;             /* 200..599; 2xx: the tunnel is open */
	struct http_str reason; /* reason phrase as received, may be empty */
	int minor_version;      /* HTTP/1.<minor_version> */
};

/*
 * Write the CONNECT request for authority (host:port, printable ASCII
 * without spaces, at most HTTP_CONNECT_AUTHORITY_MAX_BYTES) into out.
 * username and password: both NULL (no Proxy-Authorization) or both set;
 * neither may hold a control byte, the user name no ':', and each at most
 * HTTP_MAX_USERNAME_BYTES / HTTP_MAX_PASSWORD_BYTES (RFC 7617). Returns
 * the length written, -EINVAL for a refused input or -ENOSPC when cap is
 * too small (out holds no usable request then). A buffer of
 * HTTP_CONNECT_REQUEST_MAX_BYTES always fits. out holds the credentials
 * in base64: the caller wipes it once sent.
 */
ssize_t http_connect_request(uint8_t *out, size_t cap, const char *authority, const char *username,
			     const char *password);

/*
 * Parse the proxy's answer at the start of buf: interim heads (1xx other
 * than 101) are skipped, the final head fills *reply. Returns the length of
 * every head read up to the end of the final one's blank line (> 0; the
 * bytes after it are not the reply's), 0 when buf is a valid prefix shorter
 * than HTTP_CONNECT_REPLY_MAX_BYTES, or a negative errno with *why (may be
 * NULL) set to a static reason that quotes no input:
 *   -EBADMSG          malformed, or 101 Switching Protocols (nothing was
 *                     asked to switch)
 *   -EMSGSIZE         no final head within HTTP_CONNECT_REPLY_MAX_BYTES, or
 *                     more than HTTP_MAX_HEADERS fields in one head
 *   -EPROTONOSUPPORT  an HTTP version other than 1.0 and 1.1
 * The result for a prefix of buf is 0 or the same as for buf, so a caller
 * may parse again from the start as bytes arrive.
 */
ssize_t http_connect_reply(const uint8_t *buf, size_t len, struct http_connect_reply *reply,
			   const char **why);

#endif
