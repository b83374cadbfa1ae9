/*
 * http.h — HTTP/1.x proxy codec: a pure codec (no I/O, no allocation, no
 * state besides const tables), unit-tested and fuzzed on plain buffers.
 *
 * What the gateway's HTTP proxy does with it, one request at a time:
 *
 *   http_parse_request    the head from the user (limits, strict syntax)
 *   http_parse_target     CONNECT host:port, or http://host[:port]/path?query
 *   http_proxy_credentials  Proxy-Authorization: Basic
 *   http_request_body     how the request body ends (smuggling defences)
 *   http_write_request_head  the head for the origin (origin-form, hop-by-hop
 *                         fields removed, Host from the target)
 *   http_body_scan        which received bytes belong to the body, so they
 *                         are forwarded verbatim and the next message starts
 *                         where this one ends
 *   http_parse_response, http_response_body, http_write_response_head
 *                         the same for the origin's answer
 *   http_response_keep_alive  whether the origin keeps the connection
 *   http_write_error      the gateway's own replies (400, 407, 502, ...)
 *
 * Return values follow common.h: parsers return the bytes consumed (> 0), 0
 * for "need more bytes", or a negative errno value:
 *   -EBADMSG          malformed (a request: 400; a response: 502)
 *   -EMSGSIZE         head over HTTP_MAX_HEAD_BYTES or over HTTP_MAX_HEADERS
 *                     fields (a request: 431)
 *   -EPROTONOSUPPORT  an HTTP version other than 1.0 and 1.1 (a request: 505)
 * http_error_status() maps them. Where a function takes `const char **why`
 * (may be NULL), an error also points it at a static one-line reason fit
 * for a log line; no reason ever quotes input bytes, so none carries a
 * secret.
 *
 * Strictness, and why: a proxy that reads a message differently from the
 * origin behind it is how request smuggling works, so anything two parsers
 * could read two ways is refused: bare CR, whitespace between a field name
 * and its colon, obs-fold, control bytes in values, Content-Length together
 * with Transfer-Encoding, differing Content-Lengths, Transfer-Encoding whose
 * final coding is not chunked (requests) or in HTTP/1.0, and chunked framing
 * that is not exactly the RFC 9112 grammar. Heads tolerate a bare LF line
 * end (RFC 9112 §2.2 lets a recipient) because heads are re-written with
 * CRLF, never forwarded as received; chunked framing, which IS forwarded
 * verbatim, requires CRLF.
 *
 * Slices (struct http_str) point into the caller's buffer and live as long
 * as it does; nothing here is NUL-terminated except struct http_credentials.
 */
#ifndef ANYPROXY_HTTP_H
#define ANYPROXY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP_MAX_HEAD_BYTES 32768   /* request or status line + fields + blank line */
#define HTTP_MAX_HEADERS 100        /* field lines in one head */
#define HTTP_MAX_HOST_BYTES 254     /* host in a target: GRAMMAR_HOST_MAX and a final dot */
#define HTTP_MAX_USERNAME_BYTES 255 /* Basic credentials, decoded */
#define HTTP_MAX_PASSWORD_BYTES 255
#define HTTP_MAX_CHUNK_LINE_BYTES 4096             /* chunk size + extensions, before CRLF */
#define HTTP_MAX_TRAILER_BYTES HTTP_MAX_HEAD_BYTES /* whole trailer section */
/* The largest Content-Length or chunk size accepted: every peer, including
 * those that parse into a signed 64-bit integer, reads it the same way. */
#define HTTP_MAX_BODY_BYTES INT64_MAX

#define HTTP_DEFAULT_PORT 80

/* A head the writers re-write is at most this many bytes longer than the
 * head parsed (each field may gain ": " and a CR; the status line a space
 * and a CR; the Connection field is added). Size output buffers with it. */
#define HTTP_REWRITE_GROWTH_BYTES (2 * HTTP_MAX_HEADERS + 32)

/* The challenge sent with 407 (pass it as http_write_error's extra field). */
#define HTTP_PROXY_AUTH_CHALLENGE "Proxy-Authenticate: Basic realm=\"anyproxy\""
/* The whole reply to a CONNECT once the agent has connected to the target. */
#define HTTP_CONNECT_ESTABLISHED "HTTP/1.1 200 Connection established\r\n\r\n"

/* A byte string inside the parsed buffer (not NUL-terminated). */
struct http_str {
	const uint8_t *ptr;
	size_t len;
};

/* A field line: name as received, value without the surrounding
 * whitespace (possibly empty). */
struct http_header {
	struct http_str name;
	struct http_str value;
};

/* The methods whose responses are framed differently (RFC 9112 §6.3). */
enum http_method {
	HTTP_METHOD_OTHER = 0,
	HTTP_METHOD_HEAD,
	HTTP_METHOD_CONNECT,
};

/* A parsed request or response head. Request fields are empty in a
 * response and response fields zero in a request. */
struct http_head {
	struct http_str method;       /* request: a token, case-sensitive */
	enum http_method method_kind; /* request: HEAD and CONNECT recognised */
	struct http_str target;       /* request: as received, see http_parse_target */
	int status;                   /* response: 100..599 */
	struct http_str reason;       /* response: reason phrase, may be empty */
	int minor_version;            /* HTTP/1.<minor_version>: 0 or 1 */
	size_t header_count;
	struct http_header headers[HTTP_MAX_HEADERS];
};

/*
 * Parse a request head at the start of buf. Empty lines before the request
 * line are skipped (RFC 9112 §2.2: clients may send a CRLF after a body)
 * and counted in the result. Returns the head length including the blank
 * line (> 0), 0 when buf holds a valid prefix of a head not longer than
 * HTTP_MAX_HEAD_BYTES, or -EBADMSG / -EMSGSIZE / -EPROTONOSUPPORT. The
 * result for a prefix of buf is 0 or the same as for buf, so a caller may
 * parse again from the start as bytes arrive. A request line whose method
 * cannot be a token fails at once (e.g. TLS sent to the plain port), without
 * waiting for its end. h is written even on failure; use it only after a
 * positive return.
 */
ssize_t http_parse_request(const uint8_t *buf, size_t len, struct http_head *h, const char **why);

/* The same for a response head: "HTTP/1.x SSS reason". No empty lines are
 * skipped. A 1xx head is interim: forward it and parse the next head. */
ssize_t http_parse_response(const uint8_t *buf, size_t len, struct http_head *h, const char **why);

/* The status a request-side error is answered with: -EMSGSIZE 431,
 * -EPROTONOSUPPORT 505, anything else 400. (Response-side errors are the
 * origin's fault: answer them 502.) */
int http_error_status(int err);

/* Standard reason phrase of a status the gateway sends, NULL for others. */
const char *http_status_reason(int status);

/* ---- targets ----------------------------------------------------------- */

enum http_host_type {
	HTTP_HOST_NAME = 1, /* a DNS name, resolved by the agent */
	HTTP_HOST_IPV4,
	HTTP_HOST_IPV6,
};

/* Where a proxy request goes. */
struct http_target {
	enum http_host_type host_type;
	struct http_str host; /* name or address text, no brackets */
	uint8_t addr[16];     /* IPV4: addr[0..3]; IPV6: all 16 bytes */
	uint16_t port;
	struct http_str authority; /* host[:port] as received, brackets kept */
	/* Absolute-form only (empty for CONNECT); the origin-form target is
	 * path followed by query. path points to a static "/" when the URI
	 * has none. */
	struct http_str path;
	struct http_str query; /* "?..." or empty */
};

/*
 * Parse req->target as a proxy must see it: CONNECT takes authority-form
 * `host:port` or `[v6]:port` (port required, 1..65535); every other method
 * takes absolute-form `http://host[:port][/path][?query]` (scheme
 * case-insensitive, port default HTTP_DEFAULT_PORT, an empty port too).
 * Refused (-EBADMSG, answer 400): https:// and other schemes (https goes
 * through CONNECT), origin-form and asterisk-form targets, userinfo,
 * fragments, and hosts that are neither an IP literal nor a host name
 * (grammar_host_name: [A-Za-z0-9_-] labels of at most 63 bytes, at most
 * 253 bytes without one final dot). A name ending in a
 * numeric label (`1.2.3`, `10.0.0.0x1`) must be a dotted-quad IPv4 address:
 * resolvers would read the other forms as addresses too.
 */
int http_parse_target(const struct http_head *req, struct http_target *t, const char **why);

/* ---- fields ------------------------------------------------------------ */

/* The next field named `name` (case-insensitive) after prev (NULL: from the
 * first field), or NULL. */
const struct http_header *http_header_next(const struct http_head *h, const char *name,
					   const struct http_header *prev);

/* Whether any field named `name` holds `token` as an element of its
 * comma-separated list (case-insensitive, surrounding whitespace ignored),
 * e.g. ("Connection", "close"). */
bool http_header_has_token(const struct http_head *h, const char *name, const char *token);

/*
 * Whether a field of h is hop-by-hop, i.e. must not be forwarded (RFC 9110
 * §7.6.1): Connection, Proxy-Connection, Keep-Alive, Proxy-Authorization,
 * Proxy-Authenticate, TE, Trailer, Upgrade, and any field a Connection
 * field names. Transfer-Encoding is hop-by-hop in the RFC but is KEPT: we
 * forward the body verbatim, still chunked, so its framing field must go
 * with it. Content-Length and Transfer-Encoding are kept even when a
 * Connection field names them, or a client could strip the framing we
 * forward the body by and smuggle the rest as a second request.
 */
bool http_is_hop_by_hop(const struct http_head *h, const struct http_header *field);

/* Whether the user connection may carry another request after this one:
 * HTTP/1.1 unless "Connection: close", HTTP/1.0 only with
 * "Connection: keep-alive". */
bool http_request_keep_alive(const struct http_head *req);

/* The same rule for a response head: whether the origin keeps its
 * connection for another request once this response has ended (its body
 * must also be framed: one that runs until close never allows it). */
bool http_response_keep_alive(const struct http_head *resp);

/* ---- Basic proxy credentials ------------------------------------------- */

/* Decoded and NUL-terminated. Secrets: wipe with explicit_bzero after use. */
struct http_credentials {
	char username[HTTP_MAX_USERNAME_BYTES + 1];
	char password[HTTP_MAX_PASSWORD_BYTES + 1];
	size_t username_len, password_len;
};

/*
 * Decode a Proxy-Authorization value "Basic <base64(user:pass)>" (scheme
 * case-insensitive; padded base64 only, no stray bits). The user ends at
 * the first ':'; either part may be empty; NUL bytes and parts over the
 * limits are refused. Returns 0, -EOPNOTSUPP (another scheme) or -EBADMSG.
 * Decodes straight into c, no copy elsewhere; c is zeroed on failure.
 */
int http_basic_decode(const uint8_t *value, size_t len, struct http_credentials *c,
		      const char **why);

/* Find and decode req's Proxy-Authorization: 0, -ENOENT (absent), or an
 * error of http_basic_decode (several such fields: -EBADMSG). Answer every
 * failure with 407 and HTTP_PROXY_AUTH_CHALLENGE. */
int http_proxy_credentials(const struct http_head *req, struct http_credentials *c,
			   const char **why);

/* ---- body framing (RFC 9112 §6, §7.1) ---------------------------------- */

enum http_body_kind {
	HTTP_BODY_NONE = 0,
	HTTP_BODY_LENGTH,      /* Content-Length bytes */
	HTTP_BODY_CHUNKED,     /* chunked, ends after the trailer section */
	HTTP_BODY_UNTIL_CLOSE, /* response only: ends when the origin closes */
	HTTP_BODY_TUNNEL,      /* 2xx to CONNECT: raw bytes both ways from here */
};

/* Chunked framing scanner; opaque to callers, zero-initialised by
 * http_chunked_init. */
struct http_chunked {
	uint8_t state;
	uint64_t size;     /* chunk size being read, then data bytes left */
	size_t line_bytes; /* bytes of the current size line / trailer section */
	const char *why;   /* reason of the (sticky) error */
};

void http_chunked_init(struct http_chunked *c);

/*
 * Feed the next len raw bytes of a chunked body (any split, one byte at a
 * time included). Returns how many of them belong to the body (<= len), to
 * be forwarded verbatim; sets *done once the last-chunk and the trailer
 * section have ended, and then the bytes after the returned count belong to
 * the next message (later calls return 0 with *done set). Returns -EBADMSG
 * on malformed framing (a size that is not hex or over HTTP_MAX_BODY_BYTES,
 * a bad extension, a size line over HTTP_MAX_CHUNK_LINE_BYTES, data not
 * followed by CRLF, a bad trailer field, trailers over
 * HTTP_MAX_TRAILER_BYTES); c->why says which, and every later call fails
 * the same way. Slicing never changes the outcome.
 */
ssize_t http_chunked_scan(struct http_chunked *c, const uint8_t *buf, size_t len, bool *done);

/* One code path for every kind of body. */
struct http_body_state {
	enum http_body_kind kind;
	uint64_t remaining; /* LENGTH: bytes still to come */
	struct http_chunked chunked;
	bool done;
};

/*
 * Framing of a request body: Transfer-Encoding (one or more fields) must be
 * a list of tokens whose final element, and only that one, is "chunked";
 * it is refused in HTTP/1.0 and together with Content-Length. Every
 * Content-Length value (repeated fields, comma lists) must be the same
 * digit string, at most HTTP_MAX_BODY_BYTES. Otherwise there is no body.
 * Transfer-coding parameters are refused (no client sends them). Returns
 * 0 with b initialised, or -EBADMSG (answer 400). Not meant for CONNECT,
 * whose bytes after the head are tunnel data.
 */
int http_request_body(const struct http_head *req, struct http_body_state *b, const char **why);

/*
 * Framing of a response body, given the method of the request it answers:
 * HEAD, 1xx, 204 and 304 have none; 2xx to CONNECT is a tunnel; then
 * Transfer-Encoding with chunked final is chunked, other codings run until
 * close; Content-Length gives a length; else until close. Refused
 * (-EBADMSG, answer 502): 101 (we never forward Upgrade, so an origin
 * switching protocols broke the exchange), Transfer-Encoding with
 * Content-Length or in HTTP/1.0, malformed Transfer-Encoding, and a
 * Content-Length http_request_body would refuse — whatever the status, so
 * the head writer always finds one valid length.
 */
int http_response_body(const struct http_head *resp, enum http_method request_method,
		       struct http_body_state *b, const char **why);

/*
 * Feed the next len bytes after the head (or after earlier calls). Returns
 * how many belong to the body (<= len), forwarded as they are; *done is set
 * once the body is complete, and the remaining bytes start the next
 * message. NONE is done at once (returns 0); UNTIL_CLOSE and TUNNEL take
 * everything and end only at EOF. -EBADMSG for malformed chunked framing
 * (b->chunked.why).
 */
ssize_t http_body_scan(struct http_body_state *b, const uint8_t *buf, size_t len, bool *done);

/* ---- head writers ------------------------------------------------------ */

/*
 * The request head for the origin: "METHOD path?query HTTP/1.x", then
 * "Host: <authority>" from the target (RFC 9112 §3.2.2: a proxy replaces
 * the received Host with the target's), then every other field that is not
 * hop-by-hop, "Connection: keep-alive" when keep_alive (the gateway may
 * send the next request of the same user to the same origin on this
 * connection) or "Connection: close", and the blank line. The version is the client's: we forward bodies without
 * re-coding them, so an HTTP/1.0 client must not get a chunked answer.
 * Fields are written "name: value\r\n" with name and value bytes as
 * received; Content-Length fields collapse into one (RFC 9112 §6.3).
 * req must have passed http_request_body and t must be absolute-form.
 * Returns the length, at most the parsed head's + HTTP_REWRITE_GROWTH_BYTES,
 * -ENOSPC (never writes past cap) or -EINVAL.
 */
ssize_t http_write_request_head(uint8_t *out, size_t cap, const struct http_head *req,
				const struct http_target *t, bool keep_alive);

/*
 * The response head for the user: "HTTP/1.1 <status> <reason>" as received,
 * every field that is not hop-by-hop (as above), "Connection: keep-alive"
 * or "Connection: close", the blank line. keep_alive must be false when
 * the body runs until close. resp must have passed http_response_body.
 * Returns the length (bounded as above), -ENOSPC or -EINVAL.
 */
ssize_t http_write_response_head(uint8_t *out, size_t cap, const struct http_head *resp,
				 bool keep_alive);

/*
 * One of the gateway's own replies: status line with the standard reason
 * (http_status_reason, else -EINVAL), extra_field if not NULL (one
 * "Name: value" without line end, e.g. HTTP_PROXY_AUTH_CHALLENGE; CR or LF
 * in it is -EINVAL), Content-Type text/plain, Content-Length, Connection,
 * then body_text (NULL: the reason phrase) plus a newline as the body.
 * Returns the length or -ENOSPC.
 */
ssize_t http_write_error(uint8_t *out, size_t cap, int status, const char *body_text,
			 const char *extra_field, bool keep_alive);

#endif
