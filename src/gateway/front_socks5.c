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
 *
 * UDP ASSOCIATE (RFC 1928 section 7): the reply names a UDP socket bound
 * on the address the TCP connection arrived at; datagrams to it from the
 * client (the TCP peer's address, and the port it declared, or else the
 * port of its first datagram) go to the group's agent as DGRAM frames,
 * the agent's replies come back to that address only. Fragments (FRAG not
 * 0) are dropped. The association ends with the TCP connection, after
 * [gateway] udp_idle_timeout_ms without a datagram, or when the agent
 * ends it (the TCP connection is then closed).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/socks5.h"
#include "anyproxy/udp.h"
#include "anyproxy/username.h"
#include "dgram.h"
#include "front.h"
#include "gateway.h"
#include "proxy.h"

enum s5_state { S5_GREETING, S5_AUTH, S5_REQUEST, S5_WAIT_OPEN, S5_RELAY, S5_UDP, S5_FAILED };

static const char *const s5_state_names[] = {
	[S5_GREETING] = "greeting",   [S5_AUTH] = "auth",   [S5_REQUEST] = "request",
	[S5_WAIT_OPEN] = "wait-open", [S5_RELAY] = "relay", [S5_UDP] = "udp",
	[S5_FAILED] = "failed",
};

/* The largest datagram a client may send: its header and what one DGRAM
 * carries (one byte more shows a longer one as cut, and it is dropped). */
#define S5_UDP_DATAGRAM_MAX (SOCKS5_UDP_HEADER_MAX + FRAME_DGRAM_MAX_DATA + 1)

/* A UDP ASSOCIATE: its relay socket and its association. It outlives the
 * TCP connection until its socket's close completes (udp.h). */
struct s5_udp {
	struct user_conn *uc; /* NULL once the TCP connection is gone */
	struct gateway *gw;   /* its relay socket holds a place (proxy_fd_take) */
	struct udp_socket udp;
	struct gw_assoc assoc;
	struct sockaddr_storage client; /* the TCP peer; its port once known */
	bool client_port_known;
	struct timer idle; /* [gateway] udp_idle_timeout_ms */
	uint64_t last_active_ms;
	uint64_t dropped; /* from strangers, fragments, malformed, too long */
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
	struct s5_udp *udp;          /* S5_UDP */
	/* UDP ASSOCIATE moved to the worker of a datagram tunnel (its
	 * associations live there): the request's port, kept for s5_moved */
	bool udp_moved;
	uint16_t udp_port;
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
	ok = proxy_authenticate(uc, a.username, a.username_len, a.password, a.password_len, &s->id,
				NULL);
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

/* ---- UDP ASSOCIATE ---- */

/* An IPv4-mapped IPv6 address (a dual-stack listener's IPv4 peer) as the
 * IPv4 address it is, so the UDP socket and comparisons use one form. */
static void unmap(struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in sin = { .sin_family = AF_INET };

	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
		return;
	sin.sin_port = sin6->sin6_port;
	memcpy(&sin.sin_addr, sin6->sin6_addr.s6_addr + 12, 4);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &sin, sizeof(sin));
}

static bool same_ip(const struct sockaddr_storage *a, const struct sockaddr *b)
{
	if (a->ss_family != b->sa_family)
		return false;
	if (a->ss_family == AF_INET)
		return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
			      &((const struct sockaddr_in *)(const void *)b)->sin_addr, 4) == 0;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		      &((const struct sockaddr_in6 *)(const void *)b)->sin6_addr, 16) == 0;
}

static uint16_t port_of(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET
		       ? ((const struct sockaddr_in *)(const void *)sa)->sin_port
		       : ((const struct sockaddr_in6 *)(const void *)sa)->sin6_port;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port_be)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = port_be;
	else
		((struct sockaddr_in6 *)ss)->sin6_port = port_be;
}

/* The association is over for the TCP connection: close it (once). */
static void udp_end(struct s5_udp *u, const char *why)
{
	if (u->uc)
		relay_close(&u->uc->relay, why);
}

static void udp_idle_fire(struct ring *r, struct timer *t)
{
	struct s5_udp *u = container_of(t, struct s5_udp, idle);
	uint64_t quiet;

	if (timer_rearm_unless_idle(r, &u->idle, u->last_active_ms,
				    u->uc->w->gw->cfg->gateway.udp_idle_timeout_ms, &quiet))
		return;
	log_info("SOCKS5 UDP association idle, closing", LF_S("client_id", u->assoc.client_id),
		 LF_U("idle_ms", quiet));
	udp_end(u, "UDP association idle");
}

/* A datagram from the client: checked, stripped of its header, sent on. */
static void udp_from_client(struct udp_socket *us, const struct sockaddr *from, socklen_t fromlen,
			    const uint8_t *p, size_t n)
{
	struct s5_udp *u = container_of(us, struct s5_udp, udp);
	struct sockaddr_storage src;
	struct socks5_udp_header h;
	struct stream_target target;
	int hl;

	if (!u->uc)
		return;
	memset(&src, 0, sizeof(src));
	memcpy(&src, from, MIN((size_t)fromlen, sizeof(src)));
	unmap(&src);
	/* only the client may use the relay: its address, and its port */
	if (!same_ip(&u->client, (struct sockaddr *)&src) ||
	    (u->client_port_known &&
	     port_of((struct sockaddr *)&src) != port_of((struct sockaddr *)&u->client))) {
		u->dropped++;
		return;
	}
	hl = socks5_parse_udp_header(p, n, &h);
	if (hl < 0 || h.frag != 0) {
		/* fragments: RFC 1928 lets a relay without reassembly drop them */
		u->dropped++;
		log_debug("SOCKS5 UDP datagram dropped",
			  LF_S("reason", hl < 0 ? "malformed header" : "fragment (FRAG not 0)"));
		return;
	}
	if (!u->client_port_known) {
		set_port(&u->client, port_of((struct sockaddr *)&src));
		u->client_port_known = true;
	}
	if (h.port == 0) {
		u->dropped++;
		return;
	}
	memset(&target, 0, sizeof(target));
	target.addr_type = h.addr_type; /* SOCKS5 ATYP values are the frame's */
	memcpy(target.addr, h.addr, sizeof(target.addr));
	target.domain = h.domain;
	target.port = h.port;
	u->last_active_ms = now_ms();
	gw_assoc_send(u->uc->w->gw, &u->assoc, &target, p + hl, n - (size_t)hl);
}

/* Free u, giving back the place its relay socket held (if it took one). */
static void udp_free(struct s5_udp *u)
{
	if (u->gw)
		proxy_fd_give(u->gw);
	free(u);
}

static void udp_closed(struct udp_socket *us)
{
	udp_free(container_of(us, struct s5_udp, udp));
}

static const struct udp_socket_ops s5_udp_ops = {
	.on_datagram = udp_from_client,
	.on_closed = udp_closed,
};

/* A reply of the agent: to the client, with the source in its header. */
static void udp_to_client(struct gw_assoc *as, const struct frame *f)
{
	struct s5_udp *u = container_of(as, struct s5_udp, assoc);
	uint8_t out[SOCKS5_UDP_REPLY_HEADER_MAX + FRAME_DGRAM_MAX_DATA];
	struct sockaddr_storage src;
	size_t hl;

	if (!u->client_port_known) {
		u->dropped++; /* nowhere to send it yet */
		return;
	}
	memset(&src, 0, sizeof(src));
	if (f->dgram.addr_type == FRAME_ADDR_IPV4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&src;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, f->dgram.addr, 4);
		sin->sin_port = htons(f->dgram.port);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&src;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, f->dgram.addr, 16);
		sin6->sin6_port = htons(f->dgram.port);
	}
	hl = socks5_encode_udp_header(out, (struct sockaddr *)&src);
	memcpy(out + hl, f->dgram.data.ptr, f->dgram.data.len);
	u->last_active_ms = now_ms();
	if (udp_socket_send(&u->udp, (struct sockaddr *)&u->client,
			    u->client.ss_family == AF_INET ? sizeof(struct sockaddr_in)
							   : sizeof(struct sockaddr_in6),
			    out, hl + f->dgram.data.len) < 0)
		u->dropped++;
}

static void udp_assoc_ended(struct gw_assoc *as, uint8_t reason, const char *why)
{
	struct s5_udp *u = container_of(as, struct s5_udp, assoc);

	log_info("SOCKS5 UDP association ended by the agent", LF_S("client_id", as->client_id),
		 LF_S("reason", frame_open_reason_name(reason)), LF_S("why", why));
	udp_end(u, "UDP association ended by the agent");
}

static const struct gw_assoc_ops s5_assoc_ops = {
	.on_datagram = udp_to_client,
	.on_closed = udp_assoc_ended,
};

/* The UDP socket of an association: on the address the TCP connection
 * arrived at, any port. fd or -errno. */
static int udp_bind_local(int tcp_fd, struct sockaddr_storage *bound)
{
	socklen_t len = sizeof(*bound);
	int fd, err;

	if (getsockname(tcp_fd, (struct sockaddr *)bound, &len) < 0)
		return -errno;
	unmap(bound);
	set_port(bound, 0);
	fd = socket(bound->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	len = bound->ss_family == AF_INET ? sizeof(struct sockaddr_in)
					  : sizeof(struct sockaddr_in6);
	if (bind(fd, (struct sockaddr *)bound, len) < 0 ||
	    getsockname(fd, (struct sockaddr *)bound, &len) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

static void udp_associate(struct user_conn *uc, struct s5_session *s,
			  const struct socks5_request *rq)
{
	struct sockaddr_storage bound;
	socklen_t len = sizeof(struct sockaddr_storage);
	uint8_t msg[SOCKS5_REPLY_MAX];
	char why[160];
	struct s5_udp *u;
	uint8_t reason;
	int fd;

	proxy_handshake_over(uc);
	if (!s->udp_moved) {
		int w;

		log_info("Gateway received request", LF_S("user", s->id.full),
			 LF_S("group", s->id.group), LF_S("proxy", "socks5"),
			 LF_S("command", "UDP ASSOCIATE"));
		/* the association lives on a datagram tunnel's worker */
		w = gw_assoc_worker(uc->w->gw, uc->w->index, &s->id);
		if (w >= 0 && (unsigned)w != uc->w->index) {
			s->udp_moved = true;
			s->udp_port = rq->port;
			set_state(uc, s, S5_WAIT_OPEN);
			relay_read(&uc->relay, false);
			proxy_move_to(uc, (unsigned)w);
			return;
		}
	}
	u = calloc(1, sizeof(*u));
	if (!u) {
		fail_request(uc, SOCKS5_REP_GENERAL_FAILURE, "out of memory");
		return;
	}
	if (getpeername(uc->relay.fd, (struct sockaddr *)&u->client, &len) < 0) {
		udp_free(u);
		fail_request(uc, SOCKS5_REP_GENERAL_FAILURE, "no peer address");
		return;
	}
	unmap(&u->client);
	/* the port the client says it will send from; 0: its first datagram's */
	set_port(&u->client, htons(rq->port));
	u->client_port_known = rq->port != 0;
	/* the relay socket counts as a connection would (max_connections) */
	if (!proxy_fd_take(uc->w->gw, "socks5")) {
		udp_free(u);
		fail_request(uc, SOCKS5_REP_GENERAL_FAILURE, "connection limit reached");
		return;
	}
	u->gw = uc->w->gw; /* udp_free gives the place back */
	fd = udp_bind_local(uc->relay.fd, &bound);
	if (fd < 0) {
		udp_free(u);
		log_warn("SOCKS5 UDP relay socket failed", LF_S("error", strerror(-fd)));
		fail_request(uc, SOCKS5_REP_GENERAL_FAILURE, "no UDP relay socket");
		return;
	}
	reason = gw_assoc_open(uc->w->gw, uc->w->index, &u->assoc, &s->id, "socks5", &s5_assoc_ops,
			       u, why, sizeof(why));
	if (reason) {
		close(fd);
		udp_free(u);
		log_info("SOCKS5 request failed", LF_S("reason", frame_open_reason_name(reason)),
			 LF_S("error", why));
		fail_request(uc, socks5_reply_for_open_reason(reason), why);
		return;
	}
	if (udp_socket_open(&u->udp, &uc->w->ring, fd, S5_UDP_DATAGRAM_MAX, &s5_udp_ops) < 0) {
		gw_assoc_close(&u->assoc);
		udp_free(u);
		fail_request(uc, SOCKS5_REP_GENERAL_FAILURE, "out of memory");
		return;
	}
	u->uc = uc;
	u->last_active_ms = now_ms();
	timer_init(&u->idle, udp_idle_fire);
	timer_arm(&uc->w->ring, &u->idle, uc->w->gw->cfg->gateway.udp_idle_timeout_ms);
	s->udp = u;
	set_state(uc, s, S5_UDP);
	relay_write(&uc->relay, msg,
		    socks5_encode_reply(msg, SOCKS5_REP_SUCCEEDED, (struct sockaddr *)&bound), 0);
	/* the TCP connection stays open: its end is the association's end */
	relay_read(&uc->relay, true);
}

/* The TCP connection is gone: so is the association (its socket frees
 * the struct once its close completes). */
static void udp_teardown(struct user_conn *uc, struct s5_udp *u)
{
	timer_disarm(&uc->w->ring, &u->idle);
	gw_assoc_close(&u->assoc);
	u->uc = NULL;
	udp_socket_close(&u->udp);
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
	if (rq.command == SOCKS5_CMD_UDP_ASSOCIATE) {
		udp_associate(uc, s, &rq);
		return -EPERM; /* nothing more is parsed: the state is S5_UDP or S5_FAILED */
	}
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

	if (s->state == S5_UDP) {
		/* nothing is expected on the TCP connection; its end ends the
		 * association */
		if (n == 0)
			relay_close(&uc->relay, "client closed the UDP association");
		return;
	}

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
	struct s5_session *s = uc->proto;

	if (s && s->udp)
		udp_teardown(uc, s->udp);
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

/* UDP ASSOCIATE continues on the worker it moved to. */
static void s5_moved(struct user_conn *uc)
{
	struct s5_session *s = uc->proto;
	struct socks5_request rq;

	memset(&rq, 0, sizeof(rq));
	rq.port = s->udp_port;
	udp_associate(uc, s, &rq);
}

const struct proxy_frontend socks5_frontend = {
	.name = "socks5",
	.failed_line = "SOCKS5 request failed",
	.session_start = socks5_session_start,
	.encode_refusal = socks5_encode_refusal,
	.on_open_result = socks5_open_result,
	.on_socket_data = socks5_socket_data,
	.on_closed = socks5_closed,
	.on_moved = s5_moved,
};
