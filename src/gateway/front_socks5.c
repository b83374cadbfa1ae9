/*
 * front_socks5.c — the gateway's SOCKS5 front end (RFC 1928, RFC 1929 auth).
 *
 * A resumable state machine over bytes the relay delivers in owner mode;
 * nothing assumes one receive is one message. The success reply goes out
 * only once the agent has connected to the target (OPEN_OK); a failure
 * maps to its REP code. Once the greeting has shown a SOCKS5 client, every
 * refusal is answered before the close, in the terms of the message
 * refused: a greeting offering no method gets METHOD 0xff, a malformed
 * RFC 1929 message STATUS 0x01, a malformed request the REP code
 * socks5_reply_for_request_error picks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/socks5.h"
#include "anyproxy/username.h"
#include "front.h"
#include "proxy.h"

enum s5_state { S5_GREETING, S5_AUTH, S5_REQUEST, S5_WAIT_OPEN, S5_RELAY, S5_FAILED };

static const char *const s5_state_names[] = {
	[S5_GREETING] = "greeting", [S5_AUTH] = "auth",   [S5_REQUEST] = "request",
	[S5_WAIT_OPEN] = "wait-open", [S5_RELAY] = "relay", [S5_FAILED] = "failed",
};

/* Room for the largest auth and request messages plus early data. */
#define S5_BUF_BYTES (SOCKS5_AUTH_MAX + SOCKS5_REQUEST_MAX + 256)
_Static_assert(S5_BUF_BYTES > SOCKS5_GREETING_MAX && S5_BUF_BYTES > SOCKS5_AUTH_MAX &&
		       S5_BUF_BYTES > SOCKS5_REQUEST_MAX,
	       "a full buffer always holds a whole message: parsing makes room");

struct s5_session {
	enum s5_state state;
	size_t len;
	uint8_t buf[S5_BUF_BYTES];
	struct username_identity id; /* what on_auth admitted (zero: no auth) */
};

static void set_state(struct user_conn *uc, struct s5_session *s, enum s5_state next)
{
	log_debug("SOCKS5 state", LF_S("from", s5_state_names[s->state]),
		  LF_S("to", s5_state_names[next]));
	s->state = next;
}

static void reply_and_close(struct user_conn *uc, const uint8_t *msg, size_t n, const char *why)
{
	struct s5_session *s = uc->proto;

	set_state(uc, s, S5_FAILED);
	relay_read(&uc->relay, false);
	relay_write(&uc->relay, msg, n, 0);
	relay_close_after_send(&uc->relay, why);
}

static void fail_request(struct user_conn *uc, uint8_t rep, const char *why)
{
	uint8_t msg[SOCKS5_REPLY_MAX];

	reply_and_close(uc, msg, socks5_encode_reply(msg, rep, NULL), why);
}

static int on_greeting(struct user_conn *uc, struct s5_session *s, const uint8_t *p, size_t n)
{
	struct socks5_greeting g;
	uint8_t msg[2];
	int ret = socks5_parse_greeting(p, n, &g);

	if (ret == -ENOPROTOOPT) {
		log_info("SOCKS5 client offers no method", LF_S("proxy", "socks5"));
		reply_and_close(uc, msg, socks5_encode_method(msg, SOCKS5_METHOD_NO_ACCEPTABLE),
				"no authentication method offered");
		return -EPERM;
	}
	if (ret <= 0)
		return ret;
	/* Without credentials configured, 0x02 is still preferred when offered:
	 * the user name selects the group. */
	if (g.userpass) {
		relay_write(&uc->relay, msg, socks5_encode_method(msg, SOCKS5_METHOD_USERPASS), 0);
		set_state(uc, s, S5_AUTH);
	} else if (g.no_auth && !proxy_needs_credentials(uc)) {
		username_anonymous(&s->id); /* the default group */
		relay_write(&uc->relay, msg, socks5_encode_method(msg, SOCKS5_METHOD_NO_AUTH), 0);
		set_state(uc, s, S5_REQUEST);
	} else {
		log_info("SOCKS5 client offers no acceptable method", LF_S("proxy", "socks5"));
		reply_and_close(uc, msg, socks5_encode_method(msg, SOCKS5_METHOD_NO_ACCEPTABLE),
				"no acceptable authentication method");
		return -EPERM;
	}
	return ret;
}

static int on_auth(struct user_conn *uc, struct s5_session *s, const uint8_t *p, size_t n)
{
	struct socks5_auth a;
	uint8_t msg[2];
	int ret = socks5_parse_auth(p, n, &a);
	bool ok;

	if (ret == -EPROTO) {
		/* a user name or password the codec cannot take (a NUL byte, an
		 * empty name) is bad credentials too: say so, like RFC 1929 does */
		proxy_credentials_refused(uc, "malformed SOCKS5 user/password message");
		reply_and_close(uc, msg, socks5_encode_auth_status(msg, false),
				"authentication failed");
		return -EPERM;
	}
	if (ret <= 0)
		return ret;
	ok = proxy_authenticate(uc, a.username, a.username_len, a.password, a.password_len,
				&s->id);
	explicit_bzero(&a, sizeof(a));
	if (!ok) {
		reply_and_close(uc, msg, socks5_encode_auth_status(msg, false),
				"authentication failed");
		return -EPERM;
	}
	log_info("SOCKS5 extracted user info", LF_S("username", s->id.full),
		 LF_S("group_id", s->id.group));
	relay_write(&uc->relay, msg, socks5_encode_auth_status(msg, true), 0);
	set_state(uc, s, S5_REQUEST);
	return ret;
}

static int on_request(struct user_conn *uc, struct s5_session *s, const uint8_t *p, size_t n)
{
	struct socks5_request rq;
	struct stream_target target;
	int ret = socks5_parse_request(p, n, &rq);

	if (ret < 0) {
		uint8_t rep = socks5_reply_for_request_error(ret);

		log_info("Malformed SOCKS5 request", LF_S("proxy", "socks5"),
			 LF_S("reply", socks5_reply_name(rep)));
		fail_request(uc, rep, "malformed SOCKS5 request");
		return -EPERM;
	}
	if (ret == 0)
		return 0;
	if (rq.command != SOCKS5_CMD_CONNECT) {
		fail_request(uc, SOCKS5_REP_COMMAND_NOT_SUPPORTED, "command not supported");
		return -EPERM;
	}
	if (rq.port == 0) {
		fail_request(uc, SOCKS5_REP_HOST_UNREACHABLE, "port 0");
		return -EPERM;
	}
	memset(&target, 0, sizeof(target));
	target.addr_type = rq.addr_type; /* SOCKS5 ATYP values are the frame's */
	memcpy(target.addr, rq.addr, sizeof(target.addr));
	target.domain = rq.domain;
	target.port = rq.port;
	set_state(uc, s, S5_WAIT_OPEN);
	relay_read(&uc->relay, false); /* early data waits in buf until the reply */
	/* the request is consumed before proxy_open: its answer may come at once */
	s->len -= (size_t)ret;
	memmove(s->buf, s->buf + ret, s->len);
	proxy_open(uc, &s->id, &target);
	return 0;
}

/* A message the parser refused and its handler did not answer (a greeting
 * that is not SOCKS5): closed without a word. on_auth and on_request
 * answer their own malformed messages. */
static void refuse_malformed(struct user_conn *uc, struct s5_session *s)
{
	log_info("Malformed SOCKS5 message", LF_S("state", s5_state_names[s->state]));
	set_state(uc, s, S5_FAILED);
	relay_close(&uc->relay, "malformed SOCKS5 message");
}

/* Parse the messages in s->buf. Returns 0 once it needs more bytes or
 * the request is out (WAIT_OPEN), -EPERM once the connection is refused. */
static int parse_messages(struct user_conn *uc, struct s5_session *s)
{
	int ret = 1;

	while (ret > 0 && s->len && s->state < S5_WAIT_OPEN) {
		switch (s->state) {
		case S5_GREETING:
			ret = on_greeting(uc, s, s->buf, s->len);
			break;
		case S5_AUTH:
			ret = on_auth(uc, s, s->buf, s->len);
			break;
		default:
			ret = on_request(uc, s, s->buf, s->len);
			break;
		}
		if (ret < 0 && ret != -EPERM) {
			refuse_malformed(uc, s);
			return -EPERM;
		}
		if (ret > 0) {
			/* the auth message holds the password: wipe it, not just skip it */
			explicit_bzero(s->buf, (size_t)ret);
			s->len -= (size_t)ret;
			memmove(s->buf, s->buf + ret, s->len);
		}
	}
	return ret < 0 ? -EPERM : 0;
}

static void socks5_socket_data(struct user_conn *uc, const uint8_t *p, size_t n)
{
	struct s5_session *s = uc->proto;

	if (s->state >= S5_RELAY)
		return; /* S5_FAILED: the refusal is on its way, then the close */
	if (n == 0) {
		relay_close(&uc->relay, "client closed during the handshake");
		return;
	}
	/* In pieces that fit: the buffer holds more than the largest message,
	 * so parsing always makes room, until the request is out and what
	 * follows is early data waiting for the agent's answer. */
	while (n && s->state <= S5_WAIT_OPEN) {
		size_t take = MIN(n, sizeof(s->buf) - s->len);

		if (!take) {
			fail_request(uc, SOCKS5_REP_GENERAL_FAILURE,
				     "too much data before the SOCKS5 reply");
			return;
		}
		memcpy(s->buf + s->len, p, take);
		s->len += take;
		p += take;
		n -= take;
		if (s->state == S5_WAIT_OPEN)
			continue; /* early data */
		if (parse_messages(uc, s) < 0 || uc->proto != s)
			return; /* refused, or the OPEN was answered at once */
	}
}

static void socks5_open_result(struct user_conn *uc, uint8_t reason, const char *message)
{
	struct s5_session *s = uc->proto;
	uint8_t msg[SOCKS5_REPLY_MAX];

	if (reason) {
		fail_request(uc, socks5_reply_for_open_reason(reason), message);
		return;
	}
	set_state(uc, s, S5_RELAY);
	relay_write(&uc->relay, msg, socks5_encode_reply(msg, SOCKS5_REP_SUCCEEDED, NULL), 0);
	/* early data the client sent after its request goes first */
	proxy_start_pump(uc, s->buf, s->len);
	free(uc->proto);
	uc->proto = NULL;
}

static void socks5_closed(struct user_conn *uc)
{
	free(uc->proto);
	uc->proto = NULL;
}

static int socks5_session_start(struct user_conn *uc)
{
	uc->proto = calloc(1, sizeof(struct s5_session));
	return uc->proto ? 0 : -ENOMEM;
}

/* Over the connection limit no greeting has been read yet: the refusal is
 * the method selection no client can use. */
static ssize_t socks5_encode_refusal(uint8_t *buf, size_t size)
{
	if (size < 2)
		return -ENOSPC;
	return (ssize_t)socks5_encode_method(buf, SOCKS5_METHOD_NO_ACCEPTABLE);
}

const struct proxy_frontend socks5_frontend = {
	.name = "socks5",
	.failed_line = "SOCKS5 request failed",
	.session_start = socks5_session_start,
	.encode_refusal = socks5_encode_refusal,
	.on_open_result = socks5_open_result,
	.on_socket_data = socks5_socket_data,
	.on_closed = socks5_closed,
};
