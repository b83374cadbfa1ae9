/* agent.c — keeps the tunnels to every gateway up (see agent.h). */
#include <errno.h>
#include <ifaddrs.h>
#include <pthread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "anyproxy/cli.h"
#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "anyproxy/tls.h"
#include "agent.h"
#include "dgram.h"
#include "egress.h"

static void link_connect_next(struct agent_link *l);
static void link_start(struct agent_link *l);

static const char *const link_state_names[] = {
	[LINK_WAIT] = "wait",           [LINK_RESOLVE] = "resolve", [LINK_CONNECT] = "connect",
	[LINK_HANDSHAKE] = "handshake", [LINK_UP] = "up",           [LINK_DONE] = "done",
};

const char *agent_link_state_name(enum link_state state)
{
	return (unsigned)state < ARRAY_SIZE(link_state_names) ? link_state_names[state] : "?";
}

unsigned agent_gateway_count(const struct agent *a)
{
	return a->ngateways;
}

int agent_gateway_state(const struct agent *a, unsigned index, struct agent_gateway_state *out)
{
	const struct agent_gateway *gw;
	unsigned i, replicas = a->cfg->client.replicas;

	if (index >= a->ngateways)
		return -ENOENT;
	gw = &a->gateways[index];
	memset(out, 0, sizeof(*out));
	out->name = gw->name;
	out->replicas = replicas;
	out->connects = AGENT_READ(gw->connects);
	out->failures = AGENT_READ(gw->failures);
	for (i = gw->first_link; i < gw->first_link + replicas; i++) {
		switch (AGENT_READ(a->links[i].state)) {
		case LINK_UP:
			out->up++;
			break;
		case LINK_HANDSHAKE:
			out->handshake++;
			break;
		case LINK_RESOLVE:
		case LINK_CONNECT:
			out->connecting++;
			break;
		case LINK_WAIT:
			out->waiting++;
			break;
		case LINK_DONE:
			break;
		}
	}
	return 0;
}

/* Tunnels of l's gateway that are up, for the up/down log lines. */
static unsigned gateway_tunnels_up(const struct agent_link *l)
{
	struct agent_gateway_state st;

	agent_gateway_state(l->agent, (unsigned)(l->gateway - l->agent->gateways), &st);
	return st.up;
}

/* Is every link of w done? Worker w owns links w->index, w->index +
 * nworkers, ... (agent_link_worker, workers.h); the loops over a worker's
 * links below step the same way. */
static bool worker_links_done(const struct agent_worker *w)
{
	unsigned i;

	for (i = w->index; i < w->agent->nlinks; i += w->agent->nworkers)
		if (w->agent->links[i].state != LINK_DONE)
			return false;
	return true;
}

void agent_worker_maybe_exit(struct agent_worker *w)
{
	if (w->stopping && !w->ntargets && !w->nassocs && worker_links_done(w))
		ring_stop(&w->ring);
}

void agent_ready(struct agent_worker *w)
{
	struct agent *a = w->agent;

	if (!w->index)
		notify_ready(&a->notify);
	else if (!__atomic_exchange_n(&a->ready_requested, true, __ATOMIC_RELAXED))
		wg_wake(&a->workers[0].wg); /* READY=1 is worker 0's to send */
}

static void link_finish(struct agent_link *l)
{
	link_set_state(l, LINK_DONE);
	timer_disarm(&l->worker->ring, &l->timer);
	agent_worker_maybe_exit(l->worker);
}

/* Something failed: wait, then start over. */
static void link_retry(struct agent_link *l, const char *why)
{
	struct agent_worker *w = l->worker;
	uint32_t ceiling, delay;

	if (w->stopping) {
		link_finish(l);
		return;
	}
	if (l->stay_away) {
		/* replaced by another process with our client_id, or refused
		 * because another group's agent holds it: wait the whole cap, so
		 * two such processes alternate at most once per cap */
		backoff_saturate(&l->backoff);
		l->stay_away = false;
		ceiling = delay = backoff_ceiling(&l->backoff);
	} else {
		delay = backoff_next(&l->backoff, &ceiling);
	}
	agent_ready(w); /* the first attempt is over, even if it failed */
	link_set_state(l, LINK_WAIT);
	l->failures++;
	AGENT_ADD(l->gateway->failures);
	AGENT_INC(w->stats.reconnects);
	log_warn("Reconnecting to gateway", LF_S("gateway", l->gateway->name),
		 LF_U("replica", l->replica), LF_S("reason", why), LF_U("attempt", l->failures),
		 LF_U("delay_ms", delay), LF_U("max_delay_ms", ceiling));
	timer_arm(&w->ring, &l->timer, delay);
}

/* ---- tunnel callbacks ---- */

static void link_on_secure(struct tunnel *t)
{
	struct agent_link *l = t->owner;
	const struct config *cfg = l->agent->cfg;
	struct frame f = { .type = FRAME_HELLO };

	f.hello.version = FRAME_VERSION;
	f.hello.replica = (uint16_t)l->replica;
	f.hello.instance = l->agent->instance;
	f.hello.capabilities = FRAME_CAP_DATAGRAM;
	f.hello.client_id = (struct frame_str){ (const uint8_t *)cfg->client.client_id,
						strlen(cfg->client.client_id) };
	f.hello.group_id = (struct frame_str){ (const uint8_t *)cfg->client.group_id,
					       strlen(cfg->client.group_id) };
	f.hello.username = (struct frame_str){ (const uint8_t *)cfg->client.auth_username,
					       strlen(cfg->client.auth_username) };
	f.hello.password = (struct frame_str){ (const uint8_t *)cfg->client.auth_password,
					       strlen(cfg->client.auth_password) };
	if (tunnel_send(t, &f) < 0)
		tunnel_close(t, "cannot send HELLO");
}

static int link_on_frame(struct tunnel *t, const struct frame *f, const char **why)
{
	struct agent_link *l = t->owner;
	const struct config *cfg = l->agent->cfg;
	char msg[FRAME_MAX_TEXT_LEN + 1];
	size_t n;

	switch (f->type) {
	case FRAME_HELLO_OK:
		if (l->state != LINK_HANDSHAKE) {
			*why = "unexpected HELLO_OK";
			return -EPROTO;
		}
		link_set_state(l, LINK_UP);
		l->datagrams = (f->hello_ok.capabilities & FRAME_CAP_DATAGRAM) != 0;
		backoff_reset(&l->backoff);
		l->failures = 0;
		AGENT_ADD(l->gateway->connects);
		tunnel_established(t, cfg->client.ping_interval_ms, cfg->client.ping_timeout_ms);
		log_info("Connected to gateway", LF_S("gateway", l->gateway->name),
			 LF_S("address", t->peer), LF_S("client_id", cfg->client.client_id),
			 LF_S("group_id", cfg->client.group_id), LF_U("replica", l->replica),
			 LF_U("tunnels_up", gateway_tunnels_up(l)),
			 LF_U("replicas", cfg->client.replicas), LF_U("worker", l->worker->index));
		agent_ready(l->worker);
		return 0;
	case FRAME_ERROR:
	case FRAME_GOAWAY:
		n = MIN(f->error.message.len, sizeof(msg) - 1);
		memcpy(msg, f->error.message.ptr, n);
		msg[n] = '\0';
		if (f->type == FRAME_GOAWAY) {
			log_info("Gateway is going away", LF_S("gateway", l->gateway->name),
				 LF_U("replica", l->replica), LF_S("reason", msg));
			return 0;
		}
		switch (f->error.code) {
		case FRAME_ERR_AUTH:
			log_error("Gateway rejected our credentials: check auth_username and "
				  "auth_password in [client] (a group with its own agent "
				  "credential takes only that one)",
				  LF_S("gateway", l->gateway->name),
				  LF_S("client_id", cfg->client.client_id),
				  LF_S("group_id", cfg->client.group_id));
			break;
		case FRAME_ERR_ID_IN_USE:
			log_error("Gateway refused our client_id: an agent of another group or "
				  "credential holds it; give every agent its own client_id",
				  LF_S("gateway", l->gateway->name),
				  LF_S("client_id", cfg->client.client_id),
				  LF_S("group_id", cfg->client.group_id),
				  LF_U("replica", l->replica));
			/* the holder stays: asking again soon would only be refused */
			l->stay_away = true;
			break;
		case FRAME_ERR_REPLACED:
			log_error("Gateway replaced this tunnel: another agent process uses the "
				  "same client_id (or this one restarted)",
				  LF_S("gateway", l->gateway->name),
				  LF_S("client_id", cfg->client.client_id),
				  LF_U("replica", l->replica));
			l->stay_away = true;
			break;
		default:
			log_error("Gateway reported an error", LF_S("gateway", l->gateway->name),
				  LF_S("code", frame_error_name(f->error.code)),
				  LF_S("message", msg));
		}
		snprintf(l->last_error, sizeof(l->last_error), "gateway error: %s",
			 frame_error_name(f->error.code));
		tunnel_close(t, l->last_error);
		return 0;
	case FRAME_OPEN:
		if (l->state != LINK_UP) {
			*why = "OPEN before HELLO_OK";
			return -EPROTO;
		}
		return target_open(l, f, why);
	case FRAME_DGRAM_OPEN:
	case FRAME_DGRAM:
	case FRAME_DGRAM_CLOSE:
		return dgram_on_frame(l, f, why);
	default:
		*why = "unexpected frame from gateway";
		return -EPROTO;
	}
}

static void link_on_closed(struct tunnel *t, const char *reason)
{
	struct agent_link *l = t->owner;
	bool was_up = l->state == LINK_UP;

	dgram_close_all(l, "tunnel closed");
	l->tunnel = NULL;
	link_set_state(l, LINK_WAIT); /* not up any more, for tunnels_up below */
	if (was_up && l->worker->stopping)
		log_info("Disconnected from gateway", LF_S("gateway", l->gateway->name),
			 LF_U("replica", l->replica), LF_S("reason", reason),
			 LF_U("tunnels_up", gateway_tunnels_up(l)));
	else if (was_up)
		log_warn("Disconnected from gateway", LF_S("gateway", l->gateway->name),
			 LF_U("replica", l->replica), LF_S("reason", reason),
			 LF_U("tunnels_up", gateway_tunnels_up(l)));
	else if (!l->worker->stopping)
		log_error("Gateway connection failed", LF_S("gateway", l->gateway->name),
			  LF_S("address", t->peer), LF_U("replica", l->replica),
			  LF_S("reason", reason));
	link_retry(l, reason);
}

static const struct tunnel_ops link_tunnel_ops = {
	.on_secure = link_on_secure,
	.on_frame = link_on_frame,
	.on_closed = link_on_closed,
};

/* ---- connect ---- */

/* The name the gateway's certificate must carry: gateway_server_name for
 * every gateway when set (it reloads: the next handshake uses it), else
 * this gateway's own host part. */
static const char *link_server_name(const struct agent_link *l)
{
	const char *name = l->agent->cfg->client.gateway_server_name;

	return name ? name : l->gateway->addr.host;
}

/* fd is connected to the gateway (directly or through the egress proxy):
 * TLS and HELLO next. */
static void link_begin_tls(struct agent_link *l, int fd)
{
	struct agent *a = l->agent;

	link_set_state(l, LINK_HANDSHAKE);
	l->tunnel = tunnel_new(&l->worker->ring, fd, a->tls, false, link_server_name(l),
			       &link_tunnel_ops, l, a->cfg->client.handshake_timeout_ms, NULL);
	if (!l->tunnel)
		link_retry(l, "out of memory");
}

/* The egress proxy's CONNECT exchange is over (egress.h). */
static void egress_done(void *owner, int fd, const char *error)
{
	struct agent_link *l = owner;

	l->connect_fd = -1;
	if (l->worker->stopping) {
		if (fd >= 0)
			close(fd);
		link_finish(l);
	} else if (fd < 0) {
		snprintf(l->last_error, sizeof(l->last_error), "%s", error);
		link_retry(l, l->last_error);
	} else {
		link_begin_tls(l, fd);
	}
}

/* fd is connected to the egress proxy: ask it for the gateway. */
static void link_egress(struct agent_link *l, int fd)
{
	struct agent *a = l->agent;
	const struct egress_target target = {
		.authority = l->gateway->name,
		.gateway_name = l->gateway->name,
		.replica = l->replica,
		.proxy = &a->cfg->client.egress_proxy,
		.timeout_ms = a->cfg->client.handshake_timeout_ms,
	};

	l->connect_fd = fd; /* for agent_stop's cancel */
	if (egress_dial_start(&l->worker->ring, fd, &target, egress_done, l) < 0) {
		l->connect_fd = -1;
		link_retry(l, "cannot start the CONNECT exchange with the egress proxy");
	}
}

static void connect_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct agent_link *l = container_of(op, struct agent_link, connect_op);
	struct agent_worker *w = l->worker;
	char where[128];
	int fd = l->connect_fd;

	l->connect_armed = false;
	l->connect_fd = -1;
	timer_disarm(r, &l->timer);
	net_format_sockaddr((struct sockaddr *)&l->addrs[l->addr_index], where, sizeof(where));
	if (res < 0 || w->stopping) {
		close(fd);
		if (w->stopping) {
			link_finish(l);
			return;
		}
		snprintf(l->last_error, sizeof(l->last_error), "%sconnect to %s: %s",
			 l->proxy.set ? "egress proxy: " : "", where,
			 res == -ECANCELED ? "timed out" : strerror(-res));
		log_debug("Gateway address failed", LF_S("gateway", l->gateway->name),
			  LF_U("replica", l->replica), LF_S("error", l->last_error));
		l->addr_index++;
		link_connect_next(l);
		return;
	}
	if (l->proxy.set)
		link_egress(l, fd);
	else
		link_begin_tls(l, fd);
}

static void connect_deadline(struct ring *r, struct timer *t)
{
	struct agent_link *l = container_of(t, struct agent_link, timer);

	if (l->state == LINK_CONNECT && l->connect_armed)
		ring_cancel_fd(r, l->connect_fd); /* completes with -ECANCELED */
	else if (l->state == LINK_WAIT)
		link_start(l);
}

static void link_connect_next(struct agent_link *l)
{
	struct agent *a = l->agent;
	struct sockaddr_storage *ss;
	int fd;

	if (l->addr_index >= l->naddrs) {
		link_retry(l, l->last_error[0] ? l->last_error : "no usable gateway address");
		return;
	}
	ss = &l->addrs[l->addr_index];
	fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(l->last_error, sizeof(l->last_error), "socket: %s", strerror(errno));
		l->addr_index++;
		link_connect_next(l);
		return;
	}
	link_set_state(l, LINK_CONNECT);
	l->connect_fd = fd;
	l->connect_op.cb = connect_done;
	ring_prep_connect(&l->worker->ring, &l->connect_op, fd, (struct sockaddr *)ss,
			  l->addr_lens[l->addr_index]);
	l->connect_armed = true;
	timer_arm(&l->worker->ring, &l->timer, a->cfg->client.handshake_timeout_ms);
}

static void resolved(void *ctx, int gai_error, const struct addrinfo *res)
{
	struct agent_link *l = ctx;
	const struct addrinfo *ai;

	l->resolving = NULL;
	if (gai_error) {
		snprintf(l->last_error, sizeof(l->last_error), "%scannot resolve %.200s: %s",
			 l->proxy.set ? "egress proxy: " : "",
			 l->proxy.set ? l->proxy.host : l->gateway->addr.host,
			 gai_strerror(gai_error));
		link_retry(l, l->last_error);
		return;
	}
	l->naddrs = 0;
	for (ai = res; ai && l->naddrs < AGENT_MAX_GATEWAY_ADDRS; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		memcpy(&l->addrs[l->naddrs], ai->ai_addr, ai->ai_addrlen);
		l->addr_lens[l->naddrs++] = ai->ai_addrlen;
	}
	l->addr_index = 0;
	link_connect_next(l);
}

static void link_start(struct agent_link *l)
{
	struct agent *a = l->agent;
	const struct config_addr *ga = &l->gateway->addr;

	if (l->worker->stopping) {
		link_finish(l);
		return;
	}
	/* through the egress proxy (as configured now: it reloads), if any */
	l->proxy = a->cfg->client.egress_proxy.addr;
	if (l->proxy.set)
		ga = &l->proxy;
	l->last_error[0] = '\0';
	l->addr_index = 0;
	if (net_parse_numeric(ga->host, ga->port, &l->addrs[0], &l->addr_lens[0]) == 0) {
		l->naddrs = 1;
		link_connect_next(l);
		return;
	}
	link_set_state(l, LINK_RESOLVE);
	l->resolving = resolver_lookup(l->worker->resolver, ga->host, ga->port, resolved, l);
	if (!l->resolving)
		link_retry(l, "resolver busy");
}

/* ---- wake-ups between workers ---- */

static void worker_stop(struct agent_worker *w);

/*
 * A wake-up on a worker's loop (workgroup.h). Workers 1..: a reload's
 * pause (agent_reload swaps what they share while they wait, so none sees
 * a half-made swap or freed rules), or a stop. Worker 0: READY=1 asked for
 * by another worker.
 */
static void worker_woken(struct wg_member *m)
{
	struct agent_worker *w = container_of(m, struct agent_worker, wg);
	struct agent *a = w->agent;
	void *handed;

	if (w->index) {
		wg_pause_point(m, &handed);
		if (__atomic_load_n(&a->stop_requested, __ATOMIC_ACQUIRE) && !w->stopping)
			worker_stop(w);
	} else if (__atomic_load_n(&a->ready_requested, __ATOMIC_RELAXED)) {
		notify_ready(&a->notify); /* sent once; later calls do nothing */
	}
}

static void shutdown_expired(struct ring *r, struct timer *t)
{
	struct agent_worker *w = container_of(t, struct agent_worker, shutdown_timer);
	unsigned i;

	for (i = w->index; i < w->agent->nlinks; i += w->agent->nworkers)
		if (w->agent->links[i].tunnel)
			tunnel_close(w->agent->links[i].tunnel, "agent shutdown");
}

/* On w's own thread: drain its links (GOAWAY), end its loop when done. */
static void worker_stop(struct agent_worker *w)
{
	struct agent *a = w->agent;
	unsigned i;

	w->stopping = true;
	for (i = w->index; i < a->nlinks; i += a->nworkers) {
		struct agent_link *l = &a->links[i];

		switch (l->state) {
		case LINK_WAIT:
			link_finish(l);
			break;
		case LINK_RESOLVE:
			resolver_cancel(l->resolving);
			l->resolving = NULL;
			link_finish(l);
			break;
		case LINK_CONNECT:
			ring_cancel_fd(&w->ring, l->connect_fd);
			break;
		case LINK_HANDSHAKE:
			tunnel_close(l->tunnel, "agent shutdown");
			break;
		case LINK_UP:
			/* the gateway sends no new streams; open ones may finish */
			tunnel_drain(l->tunnel, FRAME_ERR_SHUTDOWN, "agent shutting down");
			break;
		case LINK_DONE:
			break;
		}
	}
	timer_init(&w->shutdown_timer, shutdown_expired);
	timer_arm(&w->ring, &w->shutdown_timer, a->cfg->client.shutdown_timeout_ms);
	agent_worker_maybe_exit(w);
}

/* Streams open on every worker (relaxed loads: a count for logs and status). */
static unsigned agent_streams(const struct agent *a)
{
	unsigned i, n = 0;

	for (i = 0; i < a->nworkers; i++)
		n += AGENT_READ(a->workers[i].ntargets);
	return n;
}

/* The other workers end their loops too (worker 0 stops, or its loop failed). */
static void agent_stop_others(struct agent *a)
{
	__atomic_store_n(&a->stop_requested, true, __ATOMIC_RELEASE);
	wg_wake_all_but(&a->workgroup, 0);
}

static void agent_stop(void *owner, int signo)
{
	struct agent *a = owner;

	if (a->stopping)
		return;
	a->stopping = true;
	notify_stopping(&a->notify);
	metrics_server_close(&a->metrics);
	log_info("Agent stopping", LF_S("signal", strsignal(signo)),
		 LF_U("streams", agent_streams(a)),
		 LF_U("shutdown_timeout_ms", a->cfg->client.shutdown_timeout_ms));
	agent_stop_others(a);
	worker_stop(&a->workers[0]);
}

/* What a configuration needs built before it can take over: everything
 * that can fail is made here, so a bad file changes nothing. */
struct agent_rules_set {
	struct WOLFSSL_CTX *tls;
	struct hosts_table hosts;
	struct acl *allowed, *forbidden;
};

static void free_rules(struct agent_rules_set *set)
{
	tls_ctx_free(set->tls); /* tunnels keep the old context until they close */
	hosts_free(&set->hosts);
	acl_free(set->allowed);
	acl_free(set->forbidden);
}

/*
 * The addresses of this host's interfaces, up or down, which `@local`
 * stands for. Read when rules are built (start and SIGHUP, synchronously:
 * one netlink dump), never per target. *addrs is malloc'd; free it.
 */
static int read_local_addrs(struct acl_addr **addrs, size_t *count, char *err, size_t errlen)
{
	struct ifaddrs *list, *ifa;
	struct acl_addr *out;
	size_t n = 0;
	int ret;

	if (getifaddrs(&list) < 0) {
		ret = -errno;
		snprintf(err, errlen, "[client] cannot read the interface addresses for @local: %s",
			 strerror(-ret));
		return ret;
	}
	for (ifa = list; ifa; ifa = ifa->ifa_next)
		if (ifa->ifa_addr &&
		    (ifa->ifa_addr->sa_family == AF_INET || ifa->ifa_addr->sa_family == AF_INET6))
			n++;
	out = calloc(n ? n : 1, sizeof(*out));
	if (!out) {
		freeifaddrs(list);
		snprintf(err, errlen, "[client] out of memory reading the interface addresses");
		return -ENOMEM;
	}
	n = 0;
	for (ifa = list; ifa; ifa = ifa->ifa_next) {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)ifa->ifa_addr;
		const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ifa->ifa_addr;

		if (!ifa->ifa_addr)
			continue;
		if (ifa->ifa_addr->sa_family == AF_INET) {
			out[n].family = AF_INET;
			memcpy(out[n++].bytes, &v4->sin_addr, sizeof(v4->sin_addr));
		} else if (ifa->ifa_addr->sa_family == AF_INET6) {
			out[n].family = AF_INET6;
			memcpy(out[n++].bytes, &v6->sin6_addr, sizeof(v6->sin6_addr));
		}
	}
	freeifaddrs(list);
	*addrs = out;
	*count = n;
	return 0;
}

static int compile_hosts(const struct config_list *list, const char *key,
			 const struct acl_local *local, struct acl **out, char *err, size_t errlen)
{
	char why[256];
	size_t bad;

	if (acl_compile((const char *const *)list->items, list->count, local, out, &bad, why,
			sizeof(why)) == 0)
		return 0;
	snprintf(err, errlen, "[client] %s: %s", key, why);
	return -EINVAL;
}

static int build_rules(const struct config *cfg, struct agent_rules_set *out, char *err,
		       size_t errlen)
{
	struct acl_addr *addrs = NULL;
	struct acl_local local = { NULL, 0 };
	int ret = -EINVAL;

	memset(out, 0, sizeof(*out));
	out->tls = tls_ctx_client(cfg->client.gateway_tls_cert, cfg->client.tls_cert,
				  cfg->client.tls_key, err, errlen);
	if (out->tls && read_local_addrs(&addrs, &local.count, err, errlen) == 0) {
		local.addrs = addrs;
		log_debug("Interface addresses read for @local", LF_U("count", local.count));
		if ((!cfg->client.hosts_file ||
		     hosts_load(cfg->client.hosts_file, &out->hosts, err, errlen) == 0) &&
		    compile_hosts(&cfg->client.allowed_hosts, "allowed_hosts", &local,
				  &out->allowed, err, errlen) == 0 &&
		    compile_hosts(&cfg->client.forbidden_hosts, "forbidden_hosts", &local,
				  &out->forbidden, err, errlen) == 0)
			ret = 0;
	}
	free(addrs);
	if (ret < 0)
		free_rules(out);
	return ret;
}

static void swap_rules(struct agent *a, struct agent_rules_set *set)
{
	struct agent_rules_set old = { a->tls, a->hosts, a->allowed, a->forbidden };

	a->tls = set->tls;
	a->hosts = set->hosts;
	a->allowed = set->allowed;
	a->forbidden = set->forbidden;
	*set = old;
}

/* [client] egress_proxy in force, at start and after a reload (no line
 * without one); never its credentials, only whether there are some. */
static void log_egress_proxy(const struct config *cfg, const char *msg)
{
	const struct config_egress_proxy *proxy = &cfg->client.egress_proxy;
	char name[AGENT_GATEWAY_NAME_BYTES];

	if (!proxy->addr.set)
		return;
	egress_proxy_name(proxy, name, sizeof(name));
	log_info(msg, LF_S("proxy", name),
		 LF_S("authentication", proxy->username ? "basic" : "none"));
}

/* SIGHUP: credentials, certificates, host rules, deadlines and the log
 * change for what comes next; tunnels and streams go on untouched. The
 * other workers are paused while the running configuration and the rules
 * are swapped (wg_pause), and the old ones freed after they resume. */
static void agent_reload(void *owner)
{
	struct agent *a = owner;
	struct agent_rules_set set;
	struct config fresh;
	char err[512], restart[512];
	int kept, log_ret;

	log_info("SIGHUP received", LF_S("action", "reloading the configuration"));
	if (a->stopping) {
		log_warn("Configuration reload skipped", LF_S("reason", "the agent is stopping"));
		return;
	}
	if (cli_reload(a->program, &fresh, err, sizeof(err)) < 0) {
		log_error("Configuration reload failed; the running configuration stays",
			  LF_S("error", err));
		return;
	}
	if (build_rules(&fresh, &set, err, sizeof(err)) < 0) {
		log_error("Configuration reload failed; the running configuration stays",
			  LF_S("error", err));
		config_free(&fresh);
		return;
	}
	wg_pause(&a->workgroup);
	kept = config_reload(a->cfg, &fresh, restart, sizeof(restart));
	swap_rules(a, &set);
	log_ret = cli_apply_log(a->cfg);
	wg_resume(&a->workgroup, NULL);
	if (kept)
		log_warn("Some changes need a restart and were not applied", LF_S("keys", restart));
	config_free(&fresh);
	free_rules(&set);
	if (log_ret < 0)
		log_error("Cannot reopen the log output", LF_S("output", a->cfg->log.output));
	log_egress_proxy(a->cfg, "The next dials go through the egress proxy");
	log_info("Configuration reloaded", LF_U("targets", agent_streams(a)),
		 LF_U("allowed_hosts", acl_rule_count(a->allowed)),
		 LF_U("forbidden_hosts", acl_rule_count(a->forbidden)),
		 LF_U("workers", a->nworkers));
}

/* ---- set-up ---- */

/* STATUS= for the service manager (systemctl status). */
static void agent_status(void *arg, char *buf, size_t len)
{
	const struct agent *a = arg;
	unsigned i, up = 0;

	for (i = 0; i < a->nlinks; i++)
		up += AGENT_READ(a->links[i].state) == LINK_UP;
	snprintf(buf, len, "%stunnels up %u/%u, streams %u", a->stopping ? "stopping: " : "", up,
		 a->nlinks, agent_streams(a));
}

/* What a worker needs besides its ring, made on its own thread (the ring
 * takes submissions from the thread that made it): the receive buffers,
 * the resolver pool, the wake-up eventfd. 0 or -errno (logged). */
static int worker_setup(struct agent_worker *w)
{
	struct agent *a = w->agent;
	int ret;

	ret = bufring_init_worker(&w->bufs, &w->ring, w->index);
	if (ret < 0)
		return ret;
	w->bufs_ready = true;
	w->resolver = resolver_new(&w->ring, AGENT_RESOLVER_THREADS,
				   agent_worker_share(AGENT_RESOLVER_MAX_PENDING, a->nworkers));
	if (!w->resolver) {
		ret = -errno;
		log_error("Cannot start the resolver", LF_U("worker", w->index),
			  LF_S("error", strerror(errno)));
		return ret < 0 ? ret : -ENOMEM;
	}
	ret = wg_open_wake(&w->wg);
	if (ret < 0)
		return ret;
	wg_arm(&w->wg, &w->ring, worker_woken);
	return 0;
}

/* The ring-bound part of a worker, freed on the thread that runs it. */
static void worker_teardown(struct agent_worker *w)
{
	resolver_free(w->resolver);
	w->resolver = NULL;
	if (w->bufs_ready)
		bufring_exit(&w->bufs, &w->ring);
	w->bufs_ready = false;
	if (w->ring_ready)
		ring_exit(&w->ring);
	w->ring_ready = false;
	/* its eventfd stays open until wg_destroy (agent_destroy) */
}

static void worker_start_links(struct agent_worker *w)
{
	unsigned i;

	for (i = w->index; i < w->agent->nlinks; i += w->agent->nworkers)
		link_start(&w->agent->links[i]);
}

/* Workers 1..: set up, wait for the others, run the links, tear down
 * (cli_workers_start). */
static int agent_thread_setup(struct wg_member *m)
{
	struct agent_worker *w = container_of(m, struct agent_worker, wg);

	w->ring_ready = true;
	return worker_setup(w);
}

static void agent_thread_start(struct wg_member *m)
{
	worker_start_links(container_of(m, struct agent_worker, wg));
}

static void agent_thread_teardown(struct wg_member *m)
{
	worker_teardown(container_of(m, struct agent_worker, wg));
}

static const struct cli_worker_ops agent_threads = {
	.ring_entries = AGENT_RING_ENTRIES,
	.setup = agent_thread_setup,
	.start = agent_thread_start,
	.teardown = agent_thread_teardown,
};

int agent_init(struct agent *a, const struct cli_program *program, struct config *cfg)
{
	struct agent_worker *w0;
	char err[512];
	uint64_t seed;
	unsigned g, i, nworkers;
	int ret;

	memset(a, 0, sizeof(*a));
	a->cfg = cfg;
	a->program = program;
	pthread_mutex_init(&a->wg_lock, NULL);
	/* the config bounds both: at most CONFIG_GATEWAYS_MAX * CONFIG_REPLICAS_MAX */
	a->ngateways = (unsigned)cfg->client.gateway_addr.count;
	a->nlinks = a->ngateways * cfg->client.replicas;
	nworkers = wg_count(cfg->client.workers, sysconf(_SC_NPROCESSORS_ONLN), a->nlinks);
	a->gateways = calloc(a->ngateways, sizeof(*a->gateways));
	a->links = calloc(a->nlinks, sizeof(*a->links));
	a->workers = calloc(nworkers, sizeof(*a->workers));
	if (!a->gateways || !a->links || !a->workers ||
	    wg_init(&a->workgroup, &a->wg_lock, nworkers) < 0)
		return -ENOMEM;
	a->nworkers = nworkers; /* agent_destroy walks them from here on */
	for (i = 0; i < a->nworkers; i++) {
		struct agent_worker *w = &a->workers[i];

		w->agent = a;
		w->index = i;
		wg_set(&a->workgroup, i, &w->wg, &w->ring);
		pthread_mutex_init(&w->stats_lock, NULL);
	}
	w0 = &a->workers[0];
	ret = cli_loop_init(&w0->ring, AGENT_RING_ENTRIES,
			    &(struct cli_daemon){ .owner = a,
						  .notify = &a->notify,
						  .reload = agent_reload,
						  .stop = agent_stop });
	if (ret < 0)
		return ret;
	w0->ring_ready = true;
	notify_init(&a->notify, &w0->ring);
	{
		struct agent_rules_set set;

		if (build_rules(cfg, &set, err, sizeof(err)) < 0) {
			log_error("Cannot set up TLS and host rules", LF_S("error", err));
			return -EINVAL;
		}
		swap_rules(a, &set);
	}
	ret = worker_setup(w0);
	if (ret < 0)
		return ret;
	if (getrandom(&a->instance, sizeof(a->instance), 0) != sizeof(a->instance))
		a->instance = now_ms() ^ ((uint64_t)getpid() << 32);
	ret = metrics_server_open(&a->metrics, &w0->ring, &cfg->metrics.listen_addr,
				  agent_stats_collect, a);
	if (ret < 0)
		return ret;
	log_info("Agent started", LF_U("gateways", a->ngateways),
		 LF_S("client_id", cfg->client.client_id), LF_S("group_id", cfg->client.group_id),
		 LF_U("replicas", cfg->client.replicas), LF_S("tls", tls_library_version()));
	log_info("Agent workers", LF_U("workers", a->nworkers),
		 LF_U("configured", cfg->client.workers), LF_U("tunnels", a->nlinks));
	for (g = 0; g < a->ngateways; g++) {
		struct agent_gateway *gw = &a->gateways[g];

		gw->addr = cfg->client.gateway_addr.items[g];
		config_addr_format(&gw->addr, gw->name, sizeof(gw->name));
		gw->first_link = g * cfg->client.replicas;
		for (i = gw->first_link; i < gw->first_link + cfg->client.replicas; i++) {
			struct agent_link *l = &a->links[i];

			if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
				seed = a->instance + i;
			l->agent = a;
			l->worker = &a->workers[agent_link_worker(i, a->nworkers)];
			l->gateway = gw;
			l->replica = i - gw->first_link;
			l->connect_fd = -1;
			backoff_init(&l->backoff, cfg->client.reconnect_initial_delay_ms,
				     cfg->client.reconnect_max_delay_ms, seed);
			timer_init(&l->timer, connect_deadline);
		}
	}
	/* READY=1 waits for the first tunnel, or the first failed attempt */
	notify_set_status(&a->notify, agent_status, a);
	log_egress_proxy(cfg, "Dialling the gateways through the egress proxy");
	for (g = 0; g < a->ngateways; g++)
		log_info("Dialling gateway", LF_S("gateway", a->gateways[g].name),
			 LF_U("replicas", cfg->client.replicas),
			 LF_S("server_name",
			      link_server_name(&a->links[a->gateways[g].first_link])));
	/* the other threads start their links once every worker is set up
	 * (a failure may log tunnels_up, which reads every link) */
	ret = cli_workers_start(&a->workgroup, &agent_threads);
	if (ret < 0)
		return ret;
	worker_start_links(w0);
	return 0;
}

int agent_run(struct agent *a)
{
	int ret = cli_loop_run(&a->workers[0].ring);

	if (ret < 0) {
		log_error("Event loop failed", LF_S("error", strerror(-ret)));
		agent_stop_others(a);
		a->run_failed = true; /* no "Agent stopped" line */
	}
	return ret;
}

void agent_destroy(struct agent *a)
{
	unsigned i;

	/* the other workers end once they have drained (agent_stop) */
	wg_join(&a->workgroup);
	if (a->workers && a->workgroup.start > 0 && !a->run_failed)
		log_info("Agent stopped", LF_S("client_id", a->cfg->client.client_id));
	metrics_server_destroy(&a->metrics);
	notify_exit(&a->notify);
	if (a->workers)
		worker_teardown(&a->workers[0]);
	wg_destroy(&a->workgroup);
	for (i = 0; i < a->nworkers; i++) {
		agent_stats_free(&a->workers[i].stats);
		pthread_mutex_destroy(&a->workers[i].stats_lock);
	}
	free(a->workers);
	free(a->links);
	free(a->gateways);
	{
		struct agent_rules_set set = { a->tls, a->hosts, a->allowed, a->forbidden };

		free_rules(&set);
	}
	pthread_mutex_destroy(&a->wg_lock);
}
