/*
 * front_http.c — the gateway's HTTP proxy front end.
 *
 * CONNECT: after the agent reached the target, "200 Connection established"
 * and a plain relay. Absolute-URI requests (any method): one stream per
 * request; the head is rewritten (origin-form, hop-by-hop fields dropped,
 * "Connection: close" upstream), the body is forwarded verbatim as far as
 * its framing says, the response head is rewritten and its body streamed
 * back; when the response ends and both sides allow it, the connection
 * waits for the next request, which may go to another host and group.
 * Requests are handled one at a time (a pipelined request waits in the
 * input buffer until the previous response is complete).
 *
 * Origin connection reuse: a forwarded request goes to the origin with
 * "Connection: keep-alive" when its user connection may carry another
 * request or the origin pool is on ([proxy.http] origin_pool_idle_ms).
 * When its response ended exactly where its framing says, the origin
 * allowed keep-alive and nothing followed, the stream (and with it the
 * agent's TCP connection to the origin) stays open, idle: kept for the
 * next request on this user connection when that one has the same
 * identity (user name and group, authenticated again for every request)
 * and the same target; parked in the origin pool, when it is on
 * (origin_pool.c), under that identity and target once the user
 * connection ends or its next request goes elsewhere, and taken from
 * there by a request of the same identity to the same target on any user
 * connection. Never shared between users or groups. Bytes from the origin
 * while no request is outstanding, bytes after a response's end, and the
 * origin closing the idle connection end the stream. A request sent on a
 * kept or parked stream that the origin had closed meanwhile (FIN or reset
 * before any byte of the response) is sent again on a new stream when it
 * is idempotent and has no body; otherwise the user gets the 502 as
 * before. (Bytes the origin sends unasked that arrive only after the next
 * request went out cannot be told from its response; they come from the
 * origin that user asked, for that user, and reach no one else.)
 *
 * A response that ends before its request body was forwarded in full (a
 * 413 to an upload) ends the connection: the rest of that body must never
 * be read as a request (request smuggling), so it is drained and dropped
 * (see start_linger). A 407 keeps the connection for the retry with
 * credentials when the refused request's body is small enough to drop
 * first (see reply_auth_required).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/common.h"
#include "anyproxy/grammar.h"
#include "anyproxy/http.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "anyproxy/bufring.h"
#include "front.h"
#include "origin_pool.h"
#include "proxy.h"

enum h_state { H_HEAD, H_DISCARD, H_WAIT_OPEN, H_FORWARD, H_LINGER, H_DONE };

static const char *const h_state_names[] = {
	[H_HEAD] = "head",       [H_DISCARD] = "discard", [H_WAIT_OPEN] = "wait-open",
	[H_FORWARD] = "forward", [H_LINGER] = "linger",   [H_DONE] = "done",
};

/* The user's bytes not yet handled: one head plus one receive. */
#define H_IN_MAX (HTTP_MAX_HEAD_BYTES + BUFRING_BUF_SIZE)
/* The origin's response head being collected. */
#define H_RESP_MAX (HTTP_MAX_HEAD_BYTES + FRAME_MAX_PAYLOAD)
/* Our own error replies. */
#define H_ERROR_MAX 1024
/* Lingering close (RFC 9112 §9.6): how long a connection whose request body
 * was cut short keeps reading and dropping the user's bytes after the
 * response, so that closing with unread bytes (a TCP reset) cannot destroy
 * the response before the user has read it. */
#define H_LINGER_MS 2000
/* A request refused with 407 keeps its connection for the retry with
 * credentials when its body, if any, can be read and dropped first: a
 * Content-Length up to this many bytes (a login form, a small API call).
 * A larger or chunked body ends the connection instead (lingering close):
 * reading it all to answer 407 would take uploads from unauthenticated
 * users. */
#define H_AUTH_DISCARD_MAX_BYTES 65536
/* 407s one connection gets: a browser re-asking its user for the password
 * needs a few; the last one says "Connection: close". */
#define H_AUTH_REFUSALS_MAX 10

/* Where the stream of the request leads and for whom: a kept stream serves
 * only a request with the same identity and target; a request retried on a
 * new stream is opened with these. Allocated with the first forwarded
 * request. */
struct h_origin {
	struct username_identity id;
	unsigned admitted_by;        /* proxy_authenticate(): who vouched for id */
	struct stream_target target; /* domain points to .domain; user, group unused */
	char domain[HTTP_MAX_HOST_BYTES + 1];
};

struct h_session {
	enum h_state state;
	bool connect; /* CONNECT, not forwarding */
	bool client_keep_alive;
	bool user_eof;
	enum http_method method;
	struct buf in;     /* user -> gateway, not yet handled */
	uint8_t *head_out; /* rewritten request head, until OPEN_OK */
	size_t head_out_len;
	struct http_body_state req_body; /* also the refused body H_DISCARD drops */
	bool req_done;
	unsigned int auth_refusals; /* 407s sent on this connection */
	bool between_requests;      /* kept alive, no byte of the next request yet */
	struct buf resp;            /* origin's response head being collected */
	bool resp_head_done;
	bool resp_keep_alive;
	struct http_body_state resp_body;
	/* origin connection reuse (see the top of this file) */
	struct h_origin *origin;  /* NULL until a request was forwarded */
	bool upstream_keep_alive; /* the request asked the origin to keep the connection */
	bool origin_keep_alive;   /* the response lets the connection carry another request */
	bool resp_started;        /* a byte of the response came from the origin */
	bool resp_extra;          /* bytes came after the response's end */
	bool awaiting_response;   /* a request went out on the stream; its response is not over */
	bool stream_kept;         /* the stream is open and idle for the next request */
	bool reused;              /* the request in flight went out on a kept stream */
	bool retryable;           /* idempotent without a body: may be sent again */
};

static void set_state(struct h_session *s, enum h_state next)
{
	log_debug("HTTP state", LF_S("from", h_state_names[s->state]),
		  LF_S("to", h_state_names[next]));
	s->state = next;
}

static void start_linger(struct user_conn *uc);
static void process_input(struct user_conn *uc);

/* Done with this request's stream: reset it if it is still open (the agent
 * stops sending) and stop counting it in its client's statistics. */
static void end_stream(struct user_conn *uc)
{
	if (uc->relay.stream.tunnel)
		stream_reset(&uc->relay.stream, FRAME_OPEN_GENERAL);
	proxy_stream_done(uc);
}

/* The origin pool's key of o: who admitted the user, group, user name and
 * target, one per line (none of them can hold a line feed), so that a
 * connection is shared only by users admitted with the same credentials.
 * Its length, 0 if it does not fit. */
static size_t origin_key(const struct h_origin *o, char *out, size_t cap)
{
	char shown[GRAMMAR_TARGET_MAX];
	int n;

	if (proxy_show_target(&o->target, shown) < 0)
		return 0;
	n = snprintf(out, cap, "%u\n%s\n%s\n%s", o->admitted_by, o->id.group, o->id.full, shown);
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Move the stream, idle after a complete response to the request s->origin
 * describes, into the origin pool for a later user connection of the same
 * identity (s->origin must still be that request's). True when it went. */
static bool park_stream(struct user_conn *uc)
{
	struct h_session *s = uc->proto;
	char key[ORIGIN_POOL_KEY_MAX];
	size_t len;

	if (!s->origin || !uc->relay.stream.tunnel || !origin_pool_enabled(proxy_gateway_of(uc)) ||
	    !proxy_stream_reusable(uc, s->origin->id.group))
		return false;
	len = origin_key(s->origin, key, sizeof(key));
	if (!len || origin_pool_put(uc->w, key, len, &uc->relay.stream, uc->client,
				    uc->relay.out_stream_debt) < 0)
		return false;
	log_debug("Origin connection parked", LF_S("client_id", uc->client_id));
	proxy_stream_done(uc); /* the stream is the pool's now */
	return true;
}

/* The kept stream is of no further use here (why: for the debug line):
 * parked when park and the pool takes it, else reset. */
static void drop_kept_stream(struct user_conn *uc, const char *why, bool park)
{
	struct h_session *s = uc->proto;

	if (!s->stream_kept)
		return;
	s->stream_kept = false;
	uc->stream_idle = false;
	if (park && park_stream(uc))
		return;
	log_debug("Kept origin connection dropped", LF_S("client_id", uc->client_id),
		  LF_S("reason", why));
	end_stream(uc);
}

/* May the user still be sending the body of the request being answered?
 * (A head was taken, its body is not complete, the user has not closed.) */
static bool body_still_coming(const struct h_session *s)
{
	return !s->user_eof && !s->connect && (s->state == H_WAIT_OPEN || s->state == H_FORWARD) &&
	       s->req_body.kind != HTTP_BODY_NONE && !s->req_done;
}

/* Answer with our own error and end the connection ("Connection: close").
 * When the user may still be sending the request's body, the end is a
 * lingering close like after a response that came early: closing with
 * its bytes unread would reset the connection, and a user still sending
 * would see the reset instead of the answer. */
static void reply_error(struct user_conn *uc, int status, const char *text, const char *extra)
{
	struct h_session *s = uc->proto;
	uint8_t out[H_ERROR_MAX];
	ssize_t n = http_write_error(out, sizeof(out), status, text, extra, false);
	bool linger = body_still_coming(s);

	set_state(s, H_DONE);
	relay_read(&uc->relay, false);
	if (n > 0)
		relay_write(&uc->relay, out, (size_t)n, 0);
	if (!linger) {
		relay_close_after_send(&uc->relay, text);
		return;
	}
	end_stream(uc);
	start_linger(uc);
}

/*
 * 407 with the challenge. Browsers and curl --proxy-anyauth retry with
 * credentials on the same connection, so it stays open when the request
 * allows keep-alive and its body can be dropped first (H_DISCARD): none, or
 * a Content-Length up to H_AUTH_DISCARD_MAX_BYTES without "Expect:
 * 100-continue" (a client waiting for 100 may skip the body, and then its
 * next request would be dropped as body). Not after HEAD, whose reply
 * must not carry the body text on a kept connection. Otherwise the 407
 * says "Connection: close", after a lingering close when a body may be on
 * its way, so that it is never parsed as a request (request smuggling).
 */
static void reply_auth_required(struct user_conn *uc, const struct http_head *head, size_t head_len)
{
	struct h_session *s = uc->proto;
	struct http_body_state body = { 0 };
	uint8_t out[H_ERROR_MAX];
	bool framed = true, keep;
	ssize_t n;

	s->auth_refusals++;
	if (head->method_kind != HTTP_METHOD_CONNECT)
		framed = http_request_body(head, &body, NULL) == 0;
	keep = framed && !s->user_eof && http_request_keep_alive(head) &&
	       head->method_kind != HTTP_METHOD_HEAD && s->auth_refusals < H_AUTH_REFUSALS_MAX &&
	       (body.kind == HTTP_BODY_NONE ||
		(body.kind == HTTP_BODY_LENGTH && body.remaining <= H_AUTH_DISCARD_MAX_BYTES &&
		 !http_header_has_token(head, "Expect", "100-continue")));
	n = http_write_error(out, sizeof(out), 407, "proxy authentication required",
			     HTTP_PROXY_AUTH_CHALLENGE, keep);
	if (n > 0)
		relay_write(&uc->relay, out, (size_t)n, 0);
	if (!keep && framed && body.kind == HTTP_BODY_NONE) {
		set_state(s, H_DONE);
		relay_read(&uc->relay, false);
		relay_close_after_send(&uc->relay, "proxy authentication required");
		return;
	}
	if (!keep) {
		start_linger(uc);
		return;
	}
	buf_consume(&s->in, head_len);
	s->req_body = body;
	if (body.kind != HTTP_BODY_NONE)
		set_state(s, H_DISCARD);
	/* still the user's handshake: the retry has the handshake deadline */
	proxy_await_request(uc);
	relay_read(&uc->relay, true);
	process_input(uc); /* the retry may be in the buffer already */
}

static int status_for_reason(uint8_t reason)
{
	switch (reason) {
	case FRAME_OPEN_NOT_ALLOWED:
		return 403;
	case FRAME_OPEN_NET_UNREACHABLE:
	case FRAME_OPEN_LIMIT:
		return 503;
	case FRAME_OPEN_TIMEOUT:
		return 504;
	default:
		return 502;
	}
}

/* ---- response: origin -> user ---- */

/*
 * The response is over but the user may still be sending the request's
 * body: drop those bytes (they are body, never a request), half-close once
 * the response is out, and close when the user closes its side or after
 * H_LINGER_MS. The response head already said "Connection: close".
 */
static void start_linger(struct user_conn *uc)
{
	struct h_session *s = uc->proto;

	set_state(s, H_LINGER);
	buf_release(&s->in);
	relay_shutdown_write(&uc->relay);
	proxy_deadline(uc, H_LINGER_MS, "lingering close");
	relay_read(&uc->relay, true);
}

static void next_request(struct user_conn *uc)
{
	struct h_session *s = uc->proto;
	/* the origin's connection may carry another request of this user:
	 * the next one on this connection, or one on another (parked) */
	bool reusable = s->req_done && s->upstream_keep_alive && s->origin_keep_alive &&
			!s->resp_extra && !uc->relay.stream.fin_received &&
			proxy_stream_reusable(uc, s->origin->id.group);

	s->awaiting_response = false;
	s->reused = false;
	free(s->head_out);
	s->head_out = NULL;
	if (reusable && s->resp_keep_alive && !s->user_eof)
		s->stream_kept = uc->stream_idle = true;
	else if (!reusable || !park_stream(uc))
		end_stream(uc);
	buf_release(&s->resp);
	if (!s->req_done) {
		start_linger(uc);
		return;
	}
	if (!s->resp_keep_alive || s->user_eof) {
		set_state(s, H_DONE);
		relay_close_after_send(&uc->relay, "response complete");
		return;
	}
	set_state(s, H_HEAD);
	s->resp_head_done = false;
	s->req_done = false;
	/* Idle between requests: [proxy.http] keepalive_timeout_ms. Once the
	 * next request has begun, its head has the handshake deadline, like
	 * the first (http_socket_data). */
	if (buf_used(&s->in)) {
		proxy_await_request(uc);
	} else {
		s->between_requests = true;
		proxy_deadline(uc, uc->listener_cfg->keepalive_timeout_ms, "keep-alive");
	}
	relay_read(&uc->relay, true);
	process_input(uc); /* a pipelined request may be waiting */
}

static int forward_response_body(struct user_conn *uc, const uint8_t *p, size_t n)
{
	struct h_session *s = uc->proto;
	bool done = false;
	ssize_t k = http_body_scan(&s->resp_body, p, n, &done);

	if (k < 0) {
		relay_close(&uc->relay, "malformed response body from the origin");
		return -EBADMSG;
	}
	if (k && relay_write(&uc->relay, p, (size_t)k, (size_t)k) < 0) {
		relay_close(&uc->relay, "user connection gone");
		return -EPIPE;
	}
	if ((size_t)k < n) {
		/* bytes after the end: never the next response (the stream is
		 * not kept), dropped */
		s->resp_extra = true;
		if (uc->relay.stream.tunnel)
			stream_consumed(&uc->relay.stream, n - (size_t)k);
	}
	if (done)
		next_request(uc);
	return 0;
}

/* Parse heads in s->resp; forward interim (1xx) heads, then the final one. */
static int handle_response_head(struct user_conn *uc)
{
	struct h_session *s = uc->proto;
	struct http_head head;
	uint8_t out[HTTP_MAX_HEAD_BYTES + HTTP_REWRITE_GROWTH_BYTES];
	const char *why = NULL;

	for (;;) {
		ssize_t len =
			http_parse_response(buf_head(&s->resp), buf_used(&s->resp), &head, &why);
		ssize_t n;

		if (len == 0)
			return 0;
		if (len < 0) {
			log_info("Bad response from the origin",
				 LF_S("error", why ? why : "malformed"));
			reply_error(uc, 502, "bad response from the origin", NULL);
			return -EBADMSG;
		}
		if (head.status >= 100 && head.status < 200 && head.status != 101) {
			n = http_write_response_head(out, sizeof(out), &head, true);
			if (n < 0) {
				reply_error(uc, 502, "interim response head too large", NULL);
				return -EMSGSIZE;
			}
			if (relay_write(&uc->relay, out, (size_t)n, (size_t)len) < 0) {
				relay_close(&uc->relay, "user connection gone");
				return -EPIPE;
			}
			buf_consume(&s->resp, (size_t)len);
			continue;
		}
		if (http_response_body(&head, s->method, &s->resp_body, &why) < 0 ||
		    s->resp_body.kind == HTTP_BODY_TUNNEL) {
			reply_error(uc, 502, "bad response framing from the origin", NULL);
			return -EBADMSG;
		}
		s->origin_keep_alive = http_response_keep_alive(&head) &&
				       s->resp_body.kind != HTTP_BODY_UNTIL_CLOSE;
		/* Keep-alive only once the request body has been forwarded in
		 * full. A final response that starts earlier (a 413 to an upload)
		 * leaves body bytes on the connection that nothing may parse as a
		 * request, so the connection ends after this response, and the
		 * head says so: RFC 9110 §10.1.1 (a server answering before it
		 * read the whole content SHOULD say whether it closes) and
		 * RFC 9112 §9.6 (a server that will close SHOULD send "close").
		 * Reading the rest of the body to stay persistent (RFC 9112 §9.3
		 * allows it: the body's length is known) would mean accepting up
		 * to HTTP_MAX_BODY_BYTES the origin refused. Decided here, not when
		 * the response ends, so the head never promises what the end
		 * does not keep even if the body completes meanwhile. */
		s->resp_keep_alive = s->client_keep_alive && s->req_done &&
				     s->resp_body.kind != HTTP_BODY_UNTIL_CLOSE;
		n = http_write_response_head(out, sizeof(out), &head, s->resp_keep_alive);
		if (n < 0) {
			reply_error(uc, 502, "response head too large", NULL);
			return -EMSGSIZE;
		}
		if (relay_write(&uc->relay, out, (size_t)n, (size_t)len) < 0) {
			relay_close(&uc->relay, "user connection gone");
			return -EPIPE;
		}
		buf_consume(&s->resp, (size_t)len);
		s->resp_head_done = true;
		return 1;
	}
}

static void forward_response(struct user_conn *uc, const uint8_t *p, size_t n)
{
	struct h_session *s = uc->proto;

	if (!s->awaiting_response) {
		/* a kept stream: nothing was asked, so this is no response */
		drop_kept_stream(uc, "the origin sent bytes while idle", false);
		return;
	}
	if (n)
		s->resp_started = true;
	if (s->resp_head_done) {
		forward_response_body(uc, p, n);
		return;
	}
	if (buf_append(&s->resp, p, n) < 0) {
		reply_error(uc, 502, "response head too large", NULL);
		return;
	}
	if (handle_response_head(uc) <= 0)
		return;
	{
		/* body bytes that came with the head (their credit is returned
		 * through the relay as they are sent), or none: a response
		 * without a body (HEAD, 204, 304) is complete right here. They
		 * leave s->resp first: the end of the body starts the next
		 * request, which starts with an empty one. */
		struct buf rest = s->resp;

		buf_init(&s->resp, rest.max);
		forward_response_body(uc, buf_head(&rest), buf_used(&rest));
		buf_release(&rest);
	}
}

/* The head and the body bytes that came with it leave in one send. */
static int fwd_on_data(struct stream *st, const uint8_t *p, size_t n)
{
	struct user_conn *uc = st->owner;

	relay_cork(&uc->relay);
	forward_response(uc, p, n);
	relay_uncork(&uc->relay);
	return 0;
}

/* proxy_open() for the request again, on a fresh stream. */
static void open_request(struct user_conn *uc)
{
	struct h_session *s = uc->proto;

	set_state(s, H_WAIT_OPEN);
	relay_read(&uc->relay, false);
	proxy_open(uc, &s->origin->id, &s->origin->target);
}

/*
 * A request went out on a kept stream and the stream ended before any byte
 * of the response: the origin had closed the idle connection (or the
 * tunnel went away) while the request was on its way. Sent again on a new
 * stream, once, when that cannot repeat an effect the user did not ask
 * for (idempotent, no body) and nothing of the response reached the user.
 * True when it was.
 */
static bool retry_on_new_stream(struct user_conn *uc, const char *why)
{
	struct h_session *s = uc->proto;

	if (!s->reused || !s->retryable || s->resp_started || !s->head_out || !s->origin)
		return false;
	log_debug("Kept origin connection was gone, request sent again",
		  LF_S("client_id", uc->client_id), LF_S("reason", why));
	end_stream(uc);
	s->reused = false;
	s->awaiting_response = false;
	s->req_done = false;
	open_request(uc);
	return true;
}

static void fwd_on_fin(struct stream *st)
{
	struct user_conn *uc = st->owner;
	struct h_session *s = uc->proto;

	if (!s->awaiting_response) {
		drop_kept_stream(uc, "the origin closed the idle connection", false);
		return;
	}
	if (!s->resp_head_done) {
		if (retry_on_new_stream(uc, "the origin closed"))
			return;
		reply_error(uc, 502, "the origin closed without a response", NULL);
		return;
	}
	if (s->resp_body.kind == HTTP_BODY_UNTIL_CLOSE) {
		s->resp_keep_alive = false;
		next_request(uc);
		return;
	}
	/* a framed body cut short: the user must see the truncation */
	relay_close(&uc->relay, "the origin closed in the middle of the response");
}

static void fwd_on_reset(struct stream *st, uint8_t reason, const char *why)
{
	struct user_conn *uc = st->owner;
	struct h_session *s = uc->proto;

	if (!s->awaiting_response) {
		drop_kept_stream(uc, why, false);
		return;
	}
	if (!s->resp_head_done) {
		if (retry_on_new_stream(uc, why))
			return;
		reply_error(uc, 502, "the connection to the origin failed", NULL);
	} else {
		relay_close(&uc->relay, why);
	}
}

static void forward_request_body(struct user_conn *uc);

static void fwd_on_writable(struct stream *st)
{
	forward_request_body(st->owner);
}

static const struct stream_ops forward_stream_ops = {
	.on_data = fwd_on_data,
	.on_fin = fwd_on_fin,
	.on_reset = fwd_on_reset,
	.on_writable = fwd_on_writable,
};

/* ---- request: user -> origin ---- */

static void forward_request_body(struct user_conn *uc)
{
	struct h_session *s = uc->proto;

	while (!s->req_done && s->state == H_FORWARD) {
		bool done = false;
		size_t room = stream_send_room(&uc->relay.stream);
		size_t avail = MIN(buf_used(&s->in), room);
		ssize_t n;

		if (!room && (buf_used(&s->in) || s->req_body.kind != HTTP_BODY_NONE)) {
			/* the scanner is stateful: scan only what can be sent now */
			relay_read(&uc->relay, false);
			stream_want_writable(&uc->relay.stream);
			return;
		}
		n = http_body_scan(&s->req_body, buf_head(&s->in), avail, &done);
		if (n < 0) {
			reply_error(uc, 400, "malformed request body", NULL);
			return;
		}
		if (n && stream_write(&uc->relay.stream, buf_head(&s->in), (size_t)n) < 0) {
			relay_close(&uc->relay, "stream gone");
			return;
		}
		buf_consume(&s->in, (size_t)n);
		if (done) {
			s->req_done = true;
			break;
		}
		if (buf_used(&s->in) && n > 0)
			continue; /* more waits than fitted: loop sees the room left */
		/* the body needs bytes the user has not sent yet */
		if (s->user_eof) {
			relay_close(&uc->relay, "client closed in the middle of the request");
			return;
		}
		relay_read(&uc->relay, true);
		return;
	}
	/* one request at a time: the next waits until this response is over */
	relay_read(&uc->relay, false);
}

/* RFC 9110 §9.2.2: sending these twice has the effect of sending them once. */
static bool method_idempotent(const struct http_head *head)
{
	static const char *const methods[] = { "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE" };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(methods); i++)
		if (head->method.len == strlen(methods[i]) &&
		    !memcmp(head->method.ptr, methods[i], head->method.len))
			return true;
	return false;
}

static bool same_origin(const struct h_origin *o, const struct username_identity *id,
			unsigned admitted_by, const struct stream_target *t)
{
	if (o->admitted_by != admitted_by || o->id.full_len != id->full_len ||
	    memcmp(o->id.full, id->full, id->full_len) || strcmp(o->id.group, id->group) ||
	    o->target.addr_type != t->addr_type || o->target.port != t->port)
		return false;
	if (t->addr_type == FRAME_ADDR_DOMAIN)
		return !strcmp(o->target.domain, t->domain);
	return !memcmp(o->target.addr, t->addr, sizeof(t->addr));
}

/* Remember where this request goes and for whom (struct h_origin). */
static int save_origin(struct h_session *s, const struct username_identity *id,
		       unsigned admitted_by, const struct stream_target *t)
{
	if (!s->origin)
		s->origin = malloc(sizeof(*s->origin));
	if (!s->origin)
		return -ENOMEM;
	s->origin->id = *id;
	s->origin->admitted_by = admitted_by;
	s->origin->target = *t;
	s->origin->target.user = NULL;
	s->origin->target.group = NULL;
	if (t->addr_type == FRAME_ADDR_DOMAIN) {
		snprintf(s->origin->domain, sizeof(s->origin->domain), "%s", t->domain);
		s->origin->target.domain = s->origin->domain;
	}
	return 0;
}

/* The request goes out on the kept stream (how: "kept" from this user
 * connection's last request, "pooled" from the origin pool): no OPEN, the
 * agent's connection to the origin is already there. Logged like
 * proxy_open()'s requests. */
static void reuse_kept_stream(struct user_conn *uc, const struct username_identity *id,
			      const struct stream_target *t, const char *how)
{
	struct h_session *s = uc->proto;
	char shown[GRAMMAR_TARGET_MAX];

	if (log_enabled(LOG_INFO)) { /* the target is formatted for the log only */
		proxy_show_target(t, shown);
		log_info("Gateway received request", LF_S("user", id->full),
			 LF_S("group", id->group), LF_S("proxy", uc->fe->name),
			 LF_S("target", shown), LF_S("client_id", uc->client_id),
			 LF_S("origin_connection", how));
	}
	s->stream_kept = false;
	uc->stream_idle = false;
	s->reused = true;
	proxy_count_reused(uc);
	uc->fe->on_open_result(uc, 0, "");
}

/* A stream parked in the origin pool under key (origin_key of s->origin,
 * this request's identity and target), moved into this connection, and
 * the request sent on it. True when there was one. */
static bool take_parked_stream(struct user_conn *uc, const struct username_identity *id,
			       const struct stream_target *target, const char *key, size_t len)
{
	struct reg_client *client = origin_pool_take(uc->w, key, len, id->group, &uc->relay.stream,
						     &forward_stream_ops, uc);

	if (!client)
		return false;
	proxy_adopt_stream(uc, client);
	reuse_kept_stream(uc, id, target, "pooled");
	return true;
}

/* The request on a stream parked for it: on this worker (answered on it),
 * or on another, where the connection moves (once per request; http_moved
 * takes it there). True when it went either way. */
static bool use_parked_stream(struct user_conn *uc, const struct username_identity *id,
			      const struct stream_target *target)
{
	struct h_session *s = uc->proto;
	char key[ORIGIN_POOL_KEY_MAX];
	size_t len = origin_key(s->origin, key, sizeof(key));
	int w;

	if (!len || uc->relay.stream.tunnel || uc->client)
		return false; /* a stream of its own still: not expected here */
	if (take_parked_stream(uc, id, target, key, len))
		return true;
	w = origin_pool_elsewhere(uc->w, key, len);
	if (w < 0)
		return false;
	uc->moves = 0;
	proxy_move_to(uc, (unsigned)w);
	return true;
}

static void handle_request(struct user_conn *uc, const struct http_head *head, size_t head_len)
{
	struct h_session *s = uc->proto;
	struct http_credentials cred;
	struct username_identity id;
	struct http_target t;
	struct stream_target target;
	char host[HTTP_MAX_HOST_BYTES + 1];
	const char *why = NULL;
	unsigned admitted_by;
	bool ok, reuse;
	int ret;

	ret = http_proxy_credentials(head, &cred, &why);
	if (ret == 0)
		ok = proxy_authenticate(uc, cred.username, cred.username_len, cred.password,
					cred.password_len, &id, &admitted_by);
	else if (ret == -ENOENT)
		ok = proxy_authenticate(uc, NULL, 0, NULL, 0, &id, /* the default group */
					&admitted_by);
	else
		/* credentials we cannot read are never taken for none: their
		 * user name may have named a group */
		ok = proxy_credentials_refused(uc, why ? why : "unreadable Proxy-Authorization");
	explicit_bzero(&cred, sizeof(cred));
	if (!ok) {
		reply_auth_required(uc, head, head_len);
		return;
	}
	if (http_parse_target(head, &t, &why) < 0) {
		reply_error(uc, 400, why ? why : "bad request target", NULL);
		return;
	}
	memset(&target, 0, sizeof(target));
	target.port = t.port;
	if (t.host_type == HTTP_HOST_IPV4 || t.host_type == HTTP_HOST_IPV6) {
		target.addr_type = t.host_type == HTTP_HOST_IPV4 ? FRAME_ADDR_IPV4
								 : FRAME_ADDR_IPV6;
		memcpy(target.addr, t.addr, sizeof(target.addr));
	} else {
		target.addr_type = FRAME_ADDR_DOMAIN;
		memcpy(host, t.host.ptr, t.host.len);
		host[t.host.len] = '\0';
		target.domain = host;
	}
	s->method = head->method_kind;
	s->connect = head->method_kind == HTTP_METHOD_CONNECT;
	/* decided before save_origin() records this request's origin: a kept
	 * stream of another origin or identity is parked under its own */
	reuse = s->stream_kept && !s->connect &&
		same_origin(s->origin, &id, admitted_by, &target) &&
		proxy_stream_reusable(uc, id.group);
	if (!reuse)
		drop_kept_stream(uc, "the next request goes elsewhere", true);
	if (!s->connect) {
		ssize_t n;

		if (http_request_body(head, &s->req_body, &why) < 0) {
			reply_error(uc, 400, why ? why : "bad request framing", NULL);
			return;
		}
		s->client_keep_alive = http_request_keep_alive(head);
		/* the origin keeps its connection only for a user that may
		 * send another request, and only one we can tell apart */
		/* keep-alive upstream when this user connection may carry
		 * another request, and with the origin pool even when it
		 * closes after this one */
		s->upstream_keep_alive =
			(s->client_keep_alive || origin_pool_enabled(proxy_gateway_of(uc))) &&
			save_origin(s, &id, admitted_by, &target) == 0;
		s->retryable = s->req_body.kind == HTTP_BODY_NONE && method_idempotent(head);
		s->resp_started = false;
		s->resp_extra = false;
		s->origin_keep_alive = false;
		free(s->head_out);
		s->head_out = malloc(head_len + HTTP_REWRITE_GROWTH_BYTES);
		if (!s->head_out) {
			relay_close(&uc->relay, "out of memory");
			return;
		}
		n = http_write_request_head(s->head_out, head_len + HTTP_REWRITE_GROWTH_BYTES, head,
					    &t, s->upstream_keep_alive);
		if (n < 0) {
			reply_error(uc, 431, "request head too large", NULL);
			return;
		}
		s->head_out_len = (size_t)n;
	}
	buf_consume(&s->in, head_len);
	set_state(s, H_WAIT_OPEN);
	relay_read(&uc->relay, false);
	if (reuse) {
		reuse_kept_stream(uc, &id, &target, "kept");
		return;
	}
	if (!s->connect && s->upstream_keep_alive && use_parked_stream(uc, &id, &target))
		return;
	proxy_open(uc, &id, &target);
}

/* The request moved to the worker holding a stream parked for it
 * (use_parked_stream): take that stream there, or open one as usual. */
static void http_moved(struct user_conn *uc)
{
	struct h_session *s = uc->proto;
	char key[ORIGIN_POOL_KEY_MAX];
	size_t len = origin_key(s->origin, key, sizeof(key));

	/* it moved with no stream linked (proxy_move_to), for a key it had */
	if (len && take_parked_stream(uc, &s->origin->id, &s->origin->target, key, len))
		return;
	proxy_open(uc, &s->origin->id, &s->origin->target);
}

/* Drop the body of a request refused with 407 (reply_auth_required).
 * True once it is gone and the next request head may follow. */
static bool discard_refused_body(struct user_conn *uc)
{
	struct h_session *s = uc->proto;
	bool done = false;
	ssize_t n = http_body_scan(&s->req_body, buf_head(&s->in), buf_used(&s->in), &done);

	if (n < 0) {
		relay_close(&uc->relay, "malformed request body");
		return false;
	}
	buf_consume(&s->in, (size_t)n);
	if (!done) {
		if (s->user_eof)
			relay_close(&uc->relay, "client closed in the middle of the request");
		return false;
	}
	memset(&s->req_body, 0, sizeof(s->req_body));
	set_state(s, H_HEAD);
	return true;
}

static void process_input(struct user_conn *uc)
{
	struct h_session *s = uc->proto;
	struct http_head head;
	const char *why = NULL;
	ssize_t len;

	if (s->state == H_FORWARD) {
		forward_request_body(uc);
		return;
	}
	if (s->state == H_DISCARD && !discard_refused_body(uc))
		return;
	if (s->state != H_HEAD || !buf_used(&s->in))
		return;
	len = http_parse_request(buf_head(&s->in), buf_used(&s->in), &head, &why);
	if (len == 0) {
		if (s->user_eof)
			relay_close(&uc->relay, "client closed in the middle of a request head");
		return;
	}
	if (len < 0) {
		int status = http_error_status((int)len);

		log_info("Bad request from user", LF_S("proxy", uc->fe->name),
			 LF_S("error", why ? why : "malformed"));
		reply_error(uc, status, why ? why : http_status_reason(status), NULL);
		return;
	}
	proxy_deadline(uc, 0, NULL);
	handle_request(uc, &head, (size_t)len);
}

static void http_socket_data(struct user_conn *uc, const uint8_t *p, size_t n)
{
	struct h_session *s = uc->proto;

	if (s->state == H_DONE)
		return;
	if (s->state == H_LINGER) {
		/* the rest of a body the origin did not wait for: dropped */
		if (n == 0)
			relay_close_after_send(&uc->relay,
					       "response complete, request body dropped");
		return;
	}
	if (n == 0) {
		s->user_eof = true;
		if (s->state == H_HEAD && !buf_used(&s->in)) {
			drop_kept_stream(uc, "client closed", true);
			relay_close_after_send(&uc->relay, "client closed");
		} else {
			process_input(uc);
		}
		return;
	}
	if (s->between_requests) {
		s->between_requests = false;
		proxy_await_request(uc);
	}
	if (buf_append(&s->in, p, n) < 0) {
		reply_error(uc, 431, "request head too large", NULL);
		return;
	}
	/* A head ends with a line feed: without a new one, parsing again from
	 * the start would only repeat work (quadratic for a slow sender). The
	 * first bytes are always parsed (garbage is refused at once), and so
	 * is a head over the size limit. */
	if (s->state == H_HEAD && !memchr(p, '\n', n) && buf_used(&s->in) > n &&
	    buf_used(&s->in) <= HTTP_MAX_HEAD_BYTES)
		return;
	process_input(uc);
}

static void http_open_result(struct user_conn *uc, uint8_t reason, const char *message)
{
	struct h_session *s = uc->proto;

	if (reason) {
		reply_error(uc, status_for_reason(reason),
			    message[0] ? message : frame_open_reason_name(reason), NULL);
		return;
	}
	if (s->connect) {
		size_t early = buf_used(&s->in);

		set_state(s, H_DONE);
		relay_write(&uc->relay, HTTP_CONNECT_ESTABLISHED, strlen(HTTP_CONNECT_ESTABLISHED),
			    0);
		proxy_start_pump(uc, buf_head(&s->in), early);
		buf_release(&s->in);
		return;
	}
	proxy_watch_idle(uc);
	uc->relay.stream.ops = &forward_stream_ops;
	s->awaiting_response = true;
	if (stream_write(&uc->relay.stream, s->head_out, s->head_out_len) < 0) {
		relay_close(&uc->relay, "stream gone");
		return;
	}
	if (!s->reused || !s->retryable) {
		/* kept for a retry on a new stream only (retry_on_new_stream) */
		free(s->head_out);
		s->head_out = NULL;
	}
	set_state(s, H_FORWARD);
	forward_request_body(uc);
}

static void http_closed(struct user_conn *uc)
{
	struct h_session *s = uc->proto;

	if (!s)
		return;
	buf_release(&s->in);
	buf_release(&s->resp);
	free(s->head_out);
	free(s->origin);
	free(s);
	uc->proto = NULL;
}

static int http_session_start(struct user_conn *uc)
{
	struct h_session *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	buf_init(&s->in, H_IN_MAX);
	buf_init(&s->resp, H_RESP_MAX);
	uc->proto = s;
	return 0;
}

static ssize_t http_encode_refusal(uint8_t *buf, size_t size)
{
	return http_write_error(buf, size, 503, "the proxy's connection limit is reached", NULL,
				false);
}

/* No session exists yet, so no TLS either: a user of the HTTPS proxy
 * refused at accept sees the connection close. */
static ssize_t https_encode_refusal(uint8_t *buf, size_t size)
{
	return 0;
}

/* [proxy.https]: the same front end, over the relay's TLS (proxy_accept). */
/* The session operations both HTTP front ends share. */
#define HTTP_SESSION_OPS                                                         \
	.session_start = http_session_start, .on_open_result = http_open_result, \
	.on_socket_data = http_socket_data, .on_closed = http_closed, .on_moved = http_moved

const struct proxy_frontend https_frontend = {
	.name = "https",
	.failed_line = "HTTPS request failed",
	.tls_alpn = "http/1.1",
	.encode_refusal = https_encode_refusal,
	HTTP_SESSION_OPS,
};

const struct proxy_frontend http_frontend = {
	.name = "http",
	.failed_line = "HTTP request failed",
	.encode_refusal = http_encode_refusal,
	HTTP_SESSION_OPS,
};
