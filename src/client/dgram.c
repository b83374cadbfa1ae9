/*
 * dgram.c — the agent's side of datagram associations (docs/protocol.md
 * "Datagrams"): DGRAM_OPEN from the gateway creates one, each DGRAM is a
 * UDP datagram to send, and the replies of the addresses it sent to go
 * back as DGRAM frames.
 *
 *   DGRAM -> address, or name: canonical + host rules -> hosts file /
 *   resolver (cached per association) -> every address checked -> sendto
 *   from the association's socket of that family
 *   socket -> a datagram from an address we sent to -> DGRAM to the gateway
 *
 * Every destination passes allowed_hosts / forbidden_hosts as an OPEN's
 * target does (acl_check_name, then acl_check_addr on the address it is
 * sent to); a denied datagram is dropped and logged, the association goes
 * on. Nothing here blocks: names resolve on the pool, sends never wait.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uthash.h>
#include <utlist.h>

#include "anyproxy/common.h"
#include "anyproxy/grammar.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "agent.h"
#include "dgram.h"

/* Names resolved per association, reused for DGRAM_NAME_TTL_MS. */
#define DGRAM_NAMES_MAX 8
#define DGRAM_NAME_TTL_MS 30000
/* Addresses of one resolved name looked at for an allowed one. */
#define DGRAM_ADDRS_MAX 8
/* Addresses (and ports) an association sent to: only they may answer. */
#define DGRAM_PEERS_MAX 64
/* Datagrams waiting for a name to resolve, per association. */
#define DGRAM_QUEUE_MAX 16
/* An association that carried nothing this long is closed: longer than
 * the largest [gateway] udp_idle_timeout_ms (10 minutes), so the gateway
 * decides, and this only frees what a lost DGRAM_CLOSE would leave. */
#define DGRAM_IDLE_MS 660000
/* DGRAM_OPEN beyond this many associations on one tunnel: DGRAM_CLOSE(LIMIT). */
#define DGRAM_MAX_PER_TUNNEL 1024

struct dgram_name {
	char name[ACL_NAME_MAX + 1]; /* canonical; "" when the slot is free */
	uint16_t port;
	uint64_t expires_ms;
	bool usable;             /* addr is an address the rules allow */
	enum acl_verdict denied; /* !usable: ACL_ALLOW means "did not resolve" */
	const char *denied_by;
	struct acl_addr addr;
};

struct dgram_peer {
	int family;
	uint8_t addr[16];
	uint16_t port;
};

/* A datagram waiting behind a name lookup, in as->queue (utlist DL_: the
 * head's prev is the tail, so appending stays O(1)). */
struct dgram_queued {
	struct dgram_queued *prev, *next;
	uint16_t port;
	char name[ACL_NAME_MAX + 1];
	size_t len;
	uint8_t data[]; /* len bytes */
};

struct dgram_sock {
	struct udp_socket udp;
	struct dgram_assoc *assoc;
	bool open;
};

struct dgram_assoc {
	UT_hash_handle hh; /* in link->assocs, by id */
	struct agent_link *link;
	uint32_t id;
	char user[FRAME_MAX_TEXT_LEN + 1];
	struct dgram_sock s4, s6;
	unsigned open_socks; /* sockets not yet closed (on_closed pending) */
	bool closing;
	struct timer idle;
	uint64_t last_active_ms;
	struct dgram_name names[DGRAM_NAMES_MAX];
	unsigned next_name;
	struct dgram_peer peers[DGRAM_PEERS_MAX];
	unsigned npeers, next_peer;
	struct dgram_queued *queue; /* utlist DL_, in arrival order */
	unsigned nqueued;
	struct resolve_req *resolving;
	char resolving_name[ACL_NAME_MAX + 1];
	uint16_t resolving_port;
	uint64_t sent, received, dropped;
};

static void assoc_release(struct dgram_assoc *as)
{
	struct agent_worker *w = as->link->worker;

	if (as->open_socks)
		return;
	free(as);
	AGENT_DEC(w->nassocs);
	agent_worker_maybe_exit(w);
}

static void sock_closed(struct udp_socket *u)
{
	struct dgram_sock *s = container_of(u, struct dgram_sock, udp);
	struct dgram_assoc *as = s->assoc;

	s->open = false;
	as->open_socks--;
	if (as->closing)
		assoc_release(as);
}

/* End the association: unlink it, stop its sockets, free it once they are
 * closed. send_close: tell the gateway (DGRAM_CLOSE reason). */
static void assoc_close(struct dgram_assoc *as, bool send_close, uint8_t reason, const char *why)
{
	struct agent_worker *w = as->link->worker;
	struct dgram_queued *q, *tmp;

	if (as->closing)
		return;
	as->closing = true;
	HASH_DEL(as->link->assocs, as);
	if (send_close && as->link->tunnel) {
		struct frame f = { .type = FRAME_DGRAM_CLOSE, .stream_id = as->id };

		f.dgram_close.reason = reason;
		tunnel_send(as->link->tunnel, &f);
	}
	log_debug("Datagram association closed", LF_U("association", as->id),
		  LF_S("user", as->user), LF_U("sent", as->sent), LF_U("received", as->received),
		  LF_U("dropped", as->dropped), LF_S("reason", why));
	timer_disarm(&w->ring, &as->idle);
	if (as->resolving)
		resolver_cancel(as->resolving);
	as->resolving = NULL;
	DL_FOREACH_SAFE (as->queue, q, tmp)
		free(q);
	as->queue = NULL;
	if (as->s4.open)
		udp_socket_close(&as->s4.udp);
	if (as->s6.open)
		udp_socket_close(&as->s6.udp);
	assoc_release(as);
}

static void idle_fire(struct ring *r, struct timer *t)
{
	struct dgram_assoc *as = container_of(t, struct dgram_assoc, idle);

	if (timer_rearm_unless_idle(r, &as->idle, as->last_active_ms, DGRAM_IDLE_MS, NULL))
		return;
	assoc_close(as, true, FRAME_OPEN_GENERAL, "idle");
}

/* ---- replies ---- */

static bool peer_known(const struct dgram_assoc *as, int family, const uint8_t *addr, uint16_t port)
{
	size_t len = family == AF_INET ? 4 : 16;

	for (unsigned i = 0; i < as->npeers; i++)
		if (as->peers[i].family == family && as->peers[i].port == port &&
		    memcmp(as->peers[i].addr, addr, len) == 0)
			return true;
	return false;
}

static void peer_remember(struct dgram_assoc *as, int family, const uint8_t *addr, uint16_t port)
{
	struct dgram_peer *p;

	if (peer_known(as, family, addr, port))
		return;
	/* the oldest gives way: a bounded set, most recent destinations kept */
	p = &as->peers[as->next_peer];
	as->next_peer = (as->next_peer + 1) % DGRAM_PEERS_MAX;
	as->npeers = MIN(as->npeers + 1, DGRAM_PEERS_MAX);
	memset(p, 0, sizeof(*p));
	p->family = family;
	memcpy(p->addr, addr, family == AF_INET ? 4 : 16);
	p->port = port;
}

static void sock_datagram(struct udp_socket *u, const struct sockaddr *from, socklen_t fromlen,
			  const uint8_t *p, size_t n)
{
	struct dgram_sock *s = container_of(u, struct dgram_sock, udp);
	struct dgram_assoc *as = s->assoc;
	struct frame f = { .type = FRAME_DGRAM, .stream_id = as->id };
	struct tunnel *t = as->link->tunnel;
	const uint8_t *addr;
	uint16_t port;
	int family = from->sa_family;

	if (family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)from;

		addr = (const uint8_t *)&sin->sin_addr;
		port = ntohs(sin->sin_port);
		f.dgram.addr_type = FRAME_ADDR_IPV4;
	} else {
		const struct sockaddr_in6 *sin6 = (const void *)from;

		addr = sin6->sin6_addr.s6_addr;
		port = ntohs(sin6->sin6_port);
		f.dgram.addr_type = FRAME_ADDR_IPV6;
	}
	/* only the destinations the user chose may answer */
	if (!peer_known(as, family, addr, port) || n > FRAME_DGRAM_MAX_DATA || !t ||
	    tunnel_queued(t) > TUNNEL_DGRAM_BUDGET) {
		as->dropped++;
		return;
	}
	memcpy(f.dgram.addr, addr, family == AF_INET ? 4 : 16);
	f.dgram.port = port;
	f.dgram.data = (struct frame_str){ p, n };
	if (tunnel_send(t, &f) < 0) {
		as->dropped++;
		return;
	}
	as->received++;
	as->last_active_ms = now_ms();
}

static const struct udp_socket_ops sock_ops = {
	.on_datagram = sock_datagram,
	.on_closed = sock_closed,
};

/* ---- sending ---- */

static struct dgram_sock *sock_for(struct dgram_assoc *as, int family)
{
	struct dgram_sock *s = family == AF_INET ? &as->s4 : &as->s6;
	int fd;

	if (s->open)
		return s;
	fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	s->assoc = as;
	/* one byte more than a DGRAM carries: a longer reply shows as cut */
	if (udp_socket_open(&s->udp, &as->link->worker->ring, fd, FRAME_DGRAM_MAX_DATA + 1,
			    &sock_ops) < 0)
		return NULL;
	s->open = true;
	as->open_socks++;
	return s;
}

/* A destination the host rules admitted: send. */
static void send_to(struct dgram_assoc *as, const struct acl_addr *dst, uint16_t port,
		    const uint8_t *p, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char text[INET6_ADDRSTRLEN];
	struct dgram_sock *s = sock_for(as, dst->family);

	inet_ntop(dst->family, dst->bytes, text, sizeof(text));
	if (!s || net_parse_numeric(text, port, &ss, &sl) < 0 ||
	    udp_socket_send(&s->udp, (struct sockaddr *)&ss, sl, p, n) < 0) {
		as->dropped++;
		return;
	}
	peer_remember(as, dst->family, dst->bytes, port);
	as->sent++;
	as->last_active_ms = now_ms();
}

static void log_denied(struct dgram_assoc *as, const char *target, enum acl_verdict v,
		       const char *rule)
{
	struct agent *a = as->link->agent;
	struct agent_worker *w = as->link->worker;

	as->dropped++;
	AGENT_INC(w->dgrams_denied);
	agent_worker_denied(w, v, rule); /* anyproxy_agent_host_denials_total */
	if (log_rate_allow(&w->dgram_denied_rate, now_ms()))
		log_warn("Datagram denied by host rules",
			 LF_S("client_id", a->cfg->client.client_id), LF_S("target", target),
			 LF_S("user", as->user), LF_S("verdict", acl_verdict_name(v)),
			 LF_S("rule", rule ? rule : "-"), LF_U("denied_total", w->dgrams_denied));
}

static void send_checked_addr(struct dgram_assoc *as, const struct acl_addr *dst, uint16_t port,
			      bool name_allowed, const char *target, const uint8_t *p, size_t n)
{
	struct agent *a = as->link->agent;
	const struct acl_rule *rule = NULL;
	enum acl_verdict v = acl_check_addr(a->forbidden, a->allowed, dst->family, dst->bytes, port,
					    name_allowed, &rule);

	if (v != ACL_ALLOW) {
		log_denied(as, target, v, rule ? acl_rule_text(rule) : NULL);
		return;
	}
	send_to(as, dst, port, p, n);
}

static struct dgram_name *name_cached(struct dgram_assoc *as, const char *name, uint16_t port)
{
	uint64_t now = now_ms();

	for (unsigned i = 0; i < DGRAM_NAMES_MAX; i++) {
		struct dgram_name *e = &as->names[i];

		if (e->name[0] && e->port == port && e->expires_ms > now &&
		    strcmp(e->name, name) == 0)
			return e;
	}
	return NULL;
}

/* A resolved (or listed) name: the first address the rules allow. */
static void name_store(struct dgram_assoc *as, const char *name, uint16_t port, bool name_allowed,
		       const int *families, uint8_t (*addrs)[16], size_t count)
{
	struct agent *a = as->link->agent;
	struct dgram_name *e = &as->names[as->next_name];

	as->next_name = (as->next_name + 1) % DGRAM_NAMES_MAX;
	memset(e, 0, sizeof(*e));
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->port = port;
	e->expires_ms = now_ms() + DGRAM_NAME_TTL_MS;
	e->denied = ACL_ALLOW;
	for (size_t i = 0; i < count && !e->usable; i++) {
		const struct acl_rule *rule = NULL;
		enum acl_verdict v = acl_check_addr(a->forbidden, a->allowed, families[i], addrs[i],
						    port, name_allowed, &rule);

		if (v == ACL_ALLOW) {
			e->usable = true;
			e->addr.family = families[i];
			memcpy(e->addr.bytes, addrs[i], families[i] == AF_INET ? 4 : 16);
		} else if (e->denied == ACL_ALLOW) {
			e->denied = v;
			e->denied_by = rule ? acl_rule_text(rule) : NULL;
		}
	}
}

static void send_named(struct dgram_assoc *as, const struct dgram_name *e, const uint8_t *p,
		       size_t n)
{
	char target[GRAMMAR_TARGET_MAX];

	if (e->usable) {
		send_to(as, &e->addr, e->port, p, n);
		return;
	}
	snprintf(target, sizeof(target), "%s:%u", e->name, e->port);
	if (e->denied != ACL_ALLOW)
		log_denied(as, target, e->denied, e->denied_by);
	else
		as->dropped++; /* the name did not resolve */
}

static void resolved(void *ctx, int gai_error, const struct addrinfo *res);

/* Send what waits at the head of the queue whose names are known; start
 * resolving the first that is not. */
static void queue_run(struct dgram_assoc *as)
{
	struct agent_worker *w = as->link->worker;
	struct dgram_queued *q;

	while ((q = as->queue) && !as->resolving) {
		const struct dgram_name *e = name_cached(as, q->name, q->port);

		if (!e) {
			as->resolving =
				resolver_lookup(w->resolver, q->name, q->port, resolved, as);
			if (as->resolving) {
				snprintf(as->resolving_name, sizeof(as->resolving_name), "%s",
					 q->name);
				as->resolving_port = q->port;
				return;
			}
			as->dropped++; /* resolver busy: this one is lost */
		} else {
			send_named(as, e, q->data, q->len);
		}
		DL_DELETE(as->queue, q);
		as->nqueued--;
		free(q);
	}
}

static void resolved(void *ctx, int gai_error, const struct addrinfo *res)
{
	struct dgram_assoc *as = ctx;
	int families[DGRAM_ADDRS_MAX];
	uint8_t addrs[DGRAM_ADDRS_MAX][16];
	size_t count = 0;
	bool name_allowed = false;
	const struct acl_rule *rule = NULL;
	struct agent *a = as->link->agent;

	as->resolving = NULL;
	for (const struct addrinfo *ai = gai_error ? NULL : res; ai && count < DGRAM_ADDRS_MAX;
	     ai = ai->ai_next) {
		if (ai->ai_family == AF_INET)
			memcpy(addrs[count], &((const struct sockaddr_in *)ai->ai_addr)->sin_addr,
			       4);
		else if (ai->ai_family == AF_INET6)
			memcpy(addrs[count], &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
			       16);
		else
			continue;
		families[count++] = ai->ai_family;
	}
	/* the name passed acl_check_name before it was queued; its verdict on
	 * name_allowed is asked again (the rules may have been reloaded) */
	if (acl_check_name(a->forbidden, a->allowed, as->resolving_name, as->resolving_port,
			   &name_allowed, &rule) != ACL_ALLOW)
		count = 0;
	name_store(as, as->resolving_name, as->resolving_port, name_allowed, families, addrs,
		   count);
	queue_run(as);
}

static void dgram_send(struct dgram_assoc *as, const struct frame *f)
{
	struct agent *a = as->link->agent;
	const struct acl_rule *rule = NULL;
	char target[GRAMMAR_TARGET_MAX];
	const char *why_name = NULL;
	struct acl_host host;
	bool name_allowed = false;
	bool name = f->dgram.addr_type == FRAME_ADDR_DOMAIN;
	size_t len = name ? f->dgram.domain.len : f->dgram.addr_type == FRAME_ADDR_IPV4 ? 4 : 16;
	const struct dgram_name *e;
	struct dgram_queued *q;
	enum acl_verdict v;

	as->last_active_ms = now_ms();
	if (grammar_format_target(target, sizeof(target), f->dgram.addr_type,
				  name ? (const void *)f->dgram.domain.ptr : f->dgram.addr, len,
				  f->dgram.port) < 0)
		snprintf(target, sizeof(target), "(invalid target):%u", f->dgram.port);
	if (!name) {
		struct acl_addr dst = { .family = f->dgram.addr_type == FRAME_ADDR_IPV4
							  ? AF_INET
							  : AF_INET6 };

		memcpy(dst.bytes, f->dgram.addr, len);
		send_checked_addr(as, &dst, f->dgram.port, false, target, f->dgram.data.ptr,
				  f->dgram.data.len);
		return;
	}
	if (acl_canonical_host(f->dgram.domain.ptr, f->dgram.domain.len, &host, &why_name) < 0) {
		as->dropped++;
		return;
	}
	if (host.kind == ACL_HOST_ADDR) {
		send_checked_addr(as, &host.addr, f->dgram.port, false, target, f->dgram.data.ptr,
				  f->dgram.data.len);
		return;
	}
	v = acl_check_name(a->forbidden, a->allowed, host.name, f->dgram.port, &name_allowed,
			   &rule);
	if (v != ACL_ALLOW) {
		log_denied(as, target, v, rule ? acl_rule_text(rule) : NULL);
		return;
	}
	e = name_cached(as, host.name, f->dgram.port);
	if (!e && a->hosts.count) {
		int families[HOSTS_MAX_ADDRS_PER_NAME];
		uint8_t addrs[HOSTS_MAX_ADDRS_PER_NAME][16];
		size_t found = hosts_lookup(&a->hosts, host.name, families, addrs,
					    HOSTS_MAX_ADDRS_PER_NAME);

		if (found) {
			name_store(as, host.name, f->dgram.port, name_allowed, families, addrs,
				   found);
			e = name_cached(as, host.name, f->dgram.port);
		}
	}
	if (e && !as->queue) {
		send_named(as, e, f->dgram.data.ptr, f->dgram.data.len);
		return;
	}
	/* keep the order of the user's datagrams behind a pending lookup */
	if (as->nqueued == DGRAM_QUEUE_MAX) {
		as->dropped++;
		return;
	}
	q = malloc(sizeof(*q) + f->dgram.data.len);
	if (!q) {
		as->dropped++;
		return;
	}
	q->port = f->dgram.port;
	snprintf(q->name, sizeof(q->name), "%s", host.name);
	q->len = f->dgram.data.len;
	if (q->len)
		memcpy(q->data, f->dgram.data.ptr, q->len);
	DL_APPEND(as->queue, q);
	as->nqueued++;
	queue_run(as);
}

/* ---- frames from the gateway ---- */

static int dgram_open(struct agent_link *l, const struct frame *f, const char **why)
{
	struct agent_worker *w = l->worker;
	struct dgram_assoc *as;
	size_t n;

	HASH_FIND(hh, l->assocs, &f->stream_id, sizeof(f->stream_id), as);
	if (as) {
		*why = "DGRAM_OPEN for an association id in use";
		return -EPROTO;
	}
	if (w->stopping || HASH_COUNT(l->assocs) >= DGRAM_MAX_PER_TUNNEL ||
	    !(as = calloc(1, sizeof(*as)))) {
		struct frame c = { .type = FRAME_DGRAM_CLOSE, .stream_id = f->stream_id };

		c.dgram_close.reason = w->stopping ? FRAME_OPEN_GENERAL : FRAME_OPEN_LIMIT;
		tunnel_send(l->tunnel, &c);
		log_warn("Datagram association refused", LF_U("association", f->stream_id),
			 LF_S("reason", w->stopping ? "agent is stopping"
						    : "too many associations on the tunnel"));
		return 0;
	}
	as->link = l;
	as->id = f->stream_id;
	n = MIN(f->dgram_open.user.len, sizeof(as->user) - 1);
	memcpy(as->user, f->dgram_open.user.ptr, n);
	as->last_active_ms = now_ms();
	timer_init(&as->idle, idle_fire);
	timer_arm(&w->ring, &as->idle, DGRAM_IDLE_MS);
	HASH_ADD(hh, l->assocs, id, sizeof(as->id), as);
	AGENT_INC(w->nassocs);
	log_debug("Datagram association opened", LF_U("association", as->id),
		  LF_S("user", as->user));
	return 0;
}

int dgram_on_frame(struct agent_link *l, const struct frame *f, const char **why)
{
	struct dgram_assoc *as;

	if (l->state != LINK_UP || !l->datagrams) {
		*why = "datagram frame without the DATAGRAM capability";
		return -EPROTO;
	}
	if (f->type == FRAME_DGRAM_OPEN)
		return dgram_open(l, f, why);
	HASH_FIND(hh, l->assocs, &f->stream_id, sizeof(f->stream_id), as);
	if (!as)
		return 0; /* crossed a DGRAM_CLOSE on the wire */
	if (f->type == FRAME_DGRAM)
		dgram_send(as, f);
	else
		assoc_close(as, false, f->dgram_close.reason, "closed by the gateway");
	return 0;
}

void dgram_close_all(struct agent_link *l, const char *why)
{
	struct dgram_assoc *as, *tmp;

	HASH_ITER (hh, l->assocs, as, tmp)
		assoc_close(as, false, FRAME_OPEN_GENERAL, why);
}
