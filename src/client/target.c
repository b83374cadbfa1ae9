/*
 * target.c — the agent's side of a stream: an OPEN from the gateway becomes
 * a connection to the target, then a relay.
 *
 *   OPEN -> [resolve on the resolver pool] -> connect (each address in
 *   order, one deadline for all) -> OPEN_OK + pump, or OPEN_FAIL(reason)
 *
 * Domain names are resolved here, never on the gateway. The gateway may
 * reset the stream at any point; the target connection then stops where
 * it is and frees itself once its operations have completed.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/grammar.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "agent.h"

#define TARGET_MAX_ADDRS 8

enum target_state { TARGET_RESOLVE, TARGET_CONNECT, TARGET_RELAY };

struct target_conn {
	struct relay relay; /* relay.stream is the tunnel stream */
	struct agent_link *link;
	struct resolve_req *resolving;
	struct ring_op connect_op;
	struct target_dial *dial; /* until connected: freed when the relay starts */
	/* the small fields last, sharing one word (one target_conn per open
	 * connection: docs/benchmarks.md, idle memory) */
	enum target_state state;
	int fd;       /* socket being connected */
	bool aborted; /* the gateway reset the stream before we connected */
	bool connect_armed;
};

/* What only the connect phase needs; an established (maybe idle) stream
 * does not carry it, which keeps an idle proxied connection small. */
struct target_dial {
	struct target_conn *tc;
	struct timer deadline; /* connect_timeout_ms: resolving and connecting */
	struct sockaddr_storage addrs[TARGET_MAX_ADDRS];
	socklen_t addr_lens[TARGET_MAX_ADDRS];
	unsigned naddrs, addr_index;
	int last_error; /* errno of the last failed connect */
	uint16_t port;
	bool name_allowed;             /* the name matched allowed_hosts: its addresses may pass */
	const char *denied_by;         /* rule text of the first address refused, for the log */
	char name[GRAMMAR_TARGET_MAX]; /* "host:port" for logs */
	char user[FRAME_MAX_TEXT_LEN + 1];
	uint64_t resolve_started_us; /* for the DNS duration histogram */
};

static void target_free(struct target_conn *tc)
{
	struct agent_worker *w = tc->link->worker;

	if (tc->dial)
		timer_disarm(&w->ring, &tc->dial->deadline);
	if (tc->fd >= 0)
		close(tc->fd);
	free(tc->dial);
	free(tc);
	AGENT_DEC(w->ntargets);
	agent_worker_maybe_exit(w);
}

static uint8_t reason_for_errno(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return FRAME_OPEN_REFUSED;
	case ETIMEDOUT:
	case ECANCELED:
		return FRAME_OPEN_TIMEOUT;
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EHOSTDOWN:
	case ENETDOWN:
	case EADDRNOTAVAIL:
		return FRAME_OPEN_HOST_UNREACHABLE;
	case EACCES:
	case EPERM:
		return FRAME_OPEN_NOT_ALLOWED;
	default:
		return FRAME_OPEN_GENERAL;
	}
}

/* Failure before the relay started: tell the gateway, log, free. */
static void target_fail(struct target_conn *tc, uint8_t reason, const char *message)
{
	if (!tc->aborted) {
		AGENT_INC(tc->link->worker->stats.opens[frame_open_result(reason)]);
		stream_open_fail(&tc->relay.stream, reason, message);
	}
	log_info("Target connection failed", LF_S("target", tc->dial->name),
		 LF_S("user", tc->dial->user), LF_S("reason", frame_open_reason_name(reason)),
		 LF_S("error", message));
	target_free(tc);
}

/* The host rules refused the target: REP 0x02 / HTTP 403 for the user, a
 * log line naming the rule for the operator. */
static void target_deny(struct target_conn *tc, enum acl_verdict verdict, const char *rule)
{
	struct agent *a = tc->link->agent;
	struct agent_worker *w = tc->link->worker;

	log_warn("Target denied by host rules", LF_S("client_id", a->cfg->client.client_id),
		 LF_S("target", tc->dial->name), LF_S("user", tc->dial->user),
		 LF_S("verdict", acl_verdict_name(verdict)), LF_S("rule", rule ? rule : "-"));
	agent_worker_denied(w, verdict, rule);
	if (!tc->aborted) {
		AGENT_INC(w->stats.opens[FRAME_RESULT_DENIED]);
		stream_open_fail(&tc->relay.stream, FRAME_OPEN_NOT_ALLOWED,
				 verdict == ACL_DENY_FORBIDDEN ? "target forbidden by the agent"
							       : "target not allowed by the agent");
	}
	target_free(tc);
}

/* Keep an address only if the host rules let it through; it is then dialled
 * as it is, never looked up again. Returns false when the rules refused it. */
static bool add_address(struct target_conn *tc, int family, const uint8_t *addr,
			enum acl_verdict *verdict)
{
	struct agent *a = tc->link->agent;
	const struct acl_rule *rule = NULL;
	char text[INET6_ADDRSTRLEN];

	*verdict = acl_check_addr(a->forbidden, a->allowed, family, addr, tc->dial->port,
				  tc->dial->name_allowed, &rule);
	if (*verdict != ACL_ALLOW) {
		if (!tc->dial->denied_by)
			tc->dial->denied_by = rule ? acl_rule_text(rule) : NULL;
		return false;
	}
	if (tc->dial->naddrs == TARGET_MAX_ADDRS)
		return true;
	inet_ntop(family, addr, text, sizeof(text));
	net_parse_numeric(text, tc->dial->port, &tc->dial->addrs[tc->dial->naddrs],
			  &tc->dial->addr_lens[tc->dial->naddrs]);
	tc->dial->naddrs++;
	return true;
}

/* ---- relay phase ---- */

static void target_relay_closed(struct relay *r, const char *why)
{
	struct target_conn *tc = container_of(r, struct target_conn, relay);

	log_debug("Stream closed", LF_U("stream", r->stream.id), LF_U("bytes_up", r->bytes_down),
		  LF_U("bytes_down", r->bytes_up), LF_S("reason", why));
	tc->fd = -1; /* the relay closed it */
	target_free(tc);
}

static void target_socket_data(struct relay *r, const uint8_t *p, size_t n)
{
	/* owner mode is never used on the agent: the pump starts at once */
}

static const struct relay_ops target_relay_ops = {
	.on_socket_data = target_socket_data,
	.on_closed = target_relay_closed,
};

/* ---- connect phase ---- */

static void target_connect_next(struct target_conn *tc);

static void connected(struct target_conn *tc)
{
	struct agent_worker *w = tc->link->worker;
	int fd = tc->fd;

	timer_disarm(&w->ring, &tc->dial->deadline);
	tc->fd = -1;
	tc->state = TARGET_RELAY;
	relay_init(&tc->relay, &w->ring, &w->bufs, fd, &target_relay_ops);
	if (stream_open_ok(&tc->relay.stream) < 0) {
		relay_close(&tc->relay, "tunnel gone");
		return;
	}
	AGENT_INC(w->stats.opens[FRAME_RESULT_OK]);
	log_debug("Target connected", LF_S("target", tc->dial->name),
		  LF_U("stream", tc->relay.stream.id));
	free(tc->dial);
	tc->dial = NULL;
	relay_pump(&tc->relay, NULL, 0);
}

static void connect_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct target_conn *tc = container_of(op, struct target_conn, connect_op);

	tc->connect_armed = false;
	if (tc->aborted) {
		target_free(tc);
		return;
	}
	if (res == 0) {
		connected(tc);
		return;
	}
	tc->dial->last_error = -res;
	close(tc->fd);
	tc->fd = -1;
	if (res == -ECANCELED) { /* our deadline */
		target_fail(tc, FRAME_OPEN_TIMEOUT, "connect timed out");
		return;
	}
	tc->dial->addr_index++;
	target_connect_next(tc);
}

static void target_connect_next(struct target_conn *tc)
{
	struct agent_worker *w = tc->link->worker;
	struct sockaddr_storage *ss;

	if (tc->dial->addr_index >= tc->dial->naddrs) {
		target_fail(tc, reason_for_errno(tc->dial->last_error),
			    strerror(tc->dial->last_error));
		return;
	}
	ss = &tc->dial->addrs[tc->dial->addr_index];
	tc->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (tc->fd < 0) {
		tc->dial->last_error = errno;
		tc->dial->addr_index++;
		target_connect_next(tc);
		return;
	}
	/* relayed bytes go out as they come (see the gateway's user sockets) */
	setsockopt(tc->fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	tc->state = TARGET_CONNECT;
	tc->connect_op.cb = connect_done;
	ring_prep_connect(&w->ring, &tc->connect_op, tc->fd, (struct sockaddr *)ss,
			  tc->dial->addr_lens[tc->dial->addr_index]);
	tc->connect_armed = true;
}

static void deadline_fire(struct ring *r, struct timer *t)
{
	struct target_conn *tc = container_of(t, struct target_dial, deadline)->tc;

	if (tc->state == TARGET_CONNECT && tc->connect_armed) {
		ring_cancel_fd(r, tc->fd); /* completes with -ECANCELED */
	} else if (tc->state == TARGET_RESOLVE) {
		agent_worker_dns(tc->link->worker, now_us() - tc->dial->resolve_started_us);
		resolver_cancel(tc->resolving);
		tc->resolving = NULL;
		target_fail(tc, FRAME_OPEN_TIMEOUT, "name resolution timed out");
	}
}

/* Addresses found (resolver or hosts file) and filtered: dial or deny. */
static void addresses_done(struct target_conn *tc, enum acl_verdict last_refusal)
{
	if (!tc->dial->naddrs) {
		if (last_refusal != ACL_ALLOW)
			target_deny(tc, last_refusal, tc->dial->denied_by);
		else
			target_fail(tc, FRAME_OPEN_DNS_FAILED, "no IPv4 or IPv6 address");
		return;
	}
	tc->dial->last_error = EHOSTUNREACH;
	target_connect_next(tc);
}

static void resolved(void *ctx, int gai_error, const struct addrinfo *res)
{
	struct target_conn *tc = ctx;
	enum acl_verdict refusal = ACL_ALLOW, v;
	const struct addrinfo *ai;

	tc->resolving = NULL;
	agent_worker_dns(tc->link->worker, now_us() - tc->dial->resolve_started_us);
	if (gai_error) {
		target_fail(tc, FRAME_OPEN_DNS_FAILED, gai_strerror(gai_error));
		return;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		const uint8_t *addr;

		if (ai->ai_family == AF_INET)
			addr = (const uint8_t *)&((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
		else if (ai->ai_family == AF_INET6)
			addr = (const uint8_t *)&((const struct sockaddr_in6 *)ai->ai_addr)
				       ->sin6_addr;
		else
			continue;
		if (!add_address(tc, ai->ai_family, addr, &v))
			refusal = v;
	}
	addresses_done(tc, refusal);
}

/* ---- the stream's events before the relay takes over ---- */

static int early_on_data(struct stream *s, const uint8_t *p, size_t n)
{
	return -EPROTO; /* cannot happen: DATA before OPEN_OK is refused by stream.c */
}

static void early_on_fin(struct stream *s)
{
}

static void early_on_reset(struct stream *s, uint8_t reason, const char *why)
{
	struct target_conn *tc = s->owner;
	struct agent_worker *w = tc->link->worker;

	tc->aborted = true;
	log_debug("Stream reset before connect", LF_S("target", tc->dial->name),
		  LF_S("reason", why));
	if (tc->state == TARGET_RESOLVE) {
		resolver_cancel(tc->resolving);
		target_free(tc);
	} else if (tc->connect_armed) {
		timer_disarm(&w->ring, &tc->dial->deadline);
		ring_cancel_fd(&w->ring, tc->fd); /* connect_done frees */
	}
}

static void early_on_writable(struct stream *s)
{
}

static const struct stream_ops target_early_ops = {
	.on_data = early_on_data,
	.on_fin = early_on_fin,
	.on_reset = early_on_reset,
	.on_writable = early_on_writable,
};

/* The target for logs. A domain with a NUL byte or past the limit is not
 * printed (a prefix would name another host); it is refused right after. */
static void format_target(struct target_conn *tc, const struct frame *f)
{
	bool name = f->open.addr_type == FRAME_ADDR_DOMAIN;
	size_t len = name ? f->open.domain.len : f->open.addr_type == FRAME_ADDR_IPV4 ? 4 : 16;

	if (grammar_format_target(tc->dial->name, sizeof(tc->dial->name), f->open.addr_type,
				  name ? (const void *)f->open.domain.ptr : f->open.addr, len,
				  f->open.port) < 0)
		snprintf(tc->dial->name, sizeof(tc->dial->name), "(invalid target):%u",
			 f->open.port);
}

/* The target as a canonical name or an address: check the rules, then
 * dial (an address), look it up in the hosts file, or resolve it. */
static int target_start(struct target_conn *tc, const struct acl_host *host)
{
	struct agent *a = tc->link->agent;
	struct agent_worker *w = tc->link->worker;
	const struct acl_rule *rule = NULL;
	enum acl_verdict v;

	if (host->kind == ACL_HOST_ADDR) {
		if (!add_address(tc, host->addr.family, host->addr.bytes, &v)) {
			target_deny(tc, v, tc->dial->denied_by);
			return 0;
		}
		target_connect_next(tc);
		return 0;
	}
	v = acl_check_name(a->forbidden, a->allowed, host->name, tc->dial->port,
			   &tc->dial->name_allowed, &rule);
	if (v != ACL_ALLOW) {
		target_deny(tc, v, rule ? acl_rule_text(rule) : NULL);
		return 0;
	}
	if (a->hosts.count) {
		int families[HOSTS_MAX_ADDRS_PER_NAME];
		uint8_t addrs[HOSTS_MAX_ADDRS_PER_NAME][16];
		size_t found = hosts_lookup(&a->hosts, host->name, families, addrs,
					    HOSTS_MAX_ADDRS_PER_NAME);
		enum acl_verdict refusal = ACL_ALLOW;

		if (found) {
			for (size_t i = 0; i < found; i++)
				if (!add_address(tc, families[i], addrs[i], &v))
					refusal = v;
			addresses_done(tc, refusal);
			return 0;
		}
	}
	tc->state = TARGET_RESOLVE;
	tc->dial->resolve_started_us = now_us();
	tc->resolving = resolver_lookup(w->resolver, host->name, tc->dial->port, resolved, tc);
	if (!tc->resolving)
		target_fail(tc, FRAME_OPEN_GENERAL, "resolver busy");
	return 0;
}

int target_open(struct agent_link *l, const struct frame *f, const char **why)
{
	struct agent *a = l->agent;
	struct agent_worker *w = l->worker;
	struct target_conn *tc;
	struct acl_host host;
	const char *why_name = NULL;
	size_t n;

	if (w->stopping) {
		struct stream tmp;

		/* refuse without keeping anything: a draining agent opens nothing */
		if (stream_accept(&tmp, l->tunnel, f->stream_id, 0, &target_early_ops, NULL) == 0)
			stream_open_fail(&tmp, FRAME_OPEN_GENERAL, "agent is stopping");
		return 0;
	}
	tc = calloc(1, sizeof(*tc));
	if (tc)
		tc->dial = calloc(1, sizeof(*tc->dial));
	if (!tc || !tc->dial) {
		free(tc);
		return -ENOMEM;
	}
	tc->link = l;
	tc->fd = -1;
	AGENT_INC(w->ntargets);
	tc->dial->tc = tc;
	timer_init(&tc->dial->deadline, deadline_fire);
	format_target(tc, f);
	n = MIN(f->open.user.len, sizeof(tc->dial->user) - 1);
	memcpy(tc->dial->user, f->open.user.ptr, n);
	if (stream_accept(&tc->relay.stream, l->tunnel, f->stream_id, f->open.window,
			  &target_early_ops, tc) < 0) {
		free(tc->dial);
		free(tc);
		AGENT_DEC(w->ntargets);
		*why = "OPEN for a stream id in use";
		return -EPROTO;
	}
	AGENT_INC(w->stats.streams_total);
	log_debug("Stream open requested", LF_S("target", tc->dial->name),
		  LF_S("user", tc->dial->user), LF_U("stream", f->stream_id));
	tc->dial->port = f->open.port;
	timer_arm(&w->ring, &tc->dial->deadline, a->cfg->client.connect_timeout_ms);
	switch (f->open.addr_type) {
	case FRAME_ADDR_IPV4:
		host.kind = ACL_HOST_ADDR;
		host.addr.family = AF_INET;
		memcpy(host.addr.bytes, f->open.addr, 4);
		break;
	case FRAME_ADDR_IPV6:
		host.kind = ACL_HOST_ADDR;
		host.addr.family = AF_INET6;
		memcpy(host.addr.bytes, f->open.addr, 16);
		break;
	default:
		/* case, trailing dot, escapes, every numeric IPv4 spelling */
		if (acl_canonical_host(f->open.domain.ptr, f->open.domain.len, &host, &why_name) <
		    0) {
			target_fail(tc, FRAME_OPEN_HOST_UNREACHABLE,
				    why_name ? why_name : "invalid host name");
			return 0;
		}
	}
	return target_start(tc, &host);
}
