/* gateway.c — tunnel listener, agent authentication, registry, shutdown. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <utlist.h>

#include "anyproxy/cli.h"
#include "anyproxy/common.h"
#include "anyproxy/grammar.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "anyproxy/tls.h"
#include "dgram.h"
#include "forward.h"
#include "front.h"
#include "gateway.h"
#include "proxy.h"

static void handshake_over(struct gw_tunnel *gt)
{
	handshake_source_drop(&gt->w->tunnel_budget, &gt->source);
	handshake_end(gt->w, &gt->w->tunnel_budget, &gt->in_handshake);
}

/* ---- agent tunnels ---- */

static bool valid_id(const struct frame_str *s, size_t min)
{
	return grammar_id_valid((const char *)s->ptr, s->len, min);
}

static void copy_str(char *dst, size_t cap, const struct frame_str *s)
{
	size_t n = MIN(s->len, cap - 1);

	memcpy(dst, s->ptr, n);
	dst[n] = '\0';
}

static void reject(struct gw_tunnel *gt, uint16_t code, const char *message, const char *why)
{
	log_warn("Client rejected", LF_S("remote_addr", gt->tunnel->peer),
		 LF_S("client_id", gt->client_id), LF_S("reason", why));
	tunnel_send_error(gt->tunnel, FRAME_ERROR, code, message);
}

/*
 * Which credential admits agents to a group (docs/operations.md "Agent
 * credentials"); the one place that rule lives. A group whose [group.NAME]
 * section has agent_password takes only that credential; a group without
 * a section is refused when require_group_section is on (the default group
 * "" never has one); every other group takes the shared [gateway] one.
 */
static struct gw_admission admission_for(const struct config *cfg, const char *group_id)
{
	const struct config_group_auth *g = config_group_auth(cfg, group_id, strlen(group_id));

	if (g && g->agent_password)
		return (struct gw_admission){
			GW_CRED_GROUP,
			g->agent_username ? g->agent_username : cfg->gateway.auth_username,
			g->agent_password,
		};
	if (!g && cfg->gateway.require_group_section)
		return (struct gw_admission){ GW_CRED_REFUSED, NULL, NULL };
	return (struct gw_admission){ GW_CRED_SHARED, cfg->gateway.auth_username,
				      cfg->gateway.auth_password };
}

static bool credential_is(const struct frame *f, const char *username, const char *password)
{
	/* both comparisons always run: no early exit tells which one failed */
	int user_ok = secret_equal(f->hello.username.ptr, f->hello.username.len, username,
				   strlen(username));
	int pass_ok = secret_equal(f->hello.password.ptr, f->hello.password.len, password,
				   strlen(password));

	return user_ok & pass_ok;
}

/* Does HELLO carry the credential that admits agents to group_id? On a
 * refusal, *why says which rule refused it, in words for the log. The same
 * two comparisons run whatever the group and the outcome: the group's own
 * credential (the shared one for a group without), and the shared one, so
 * that the log can say when an agent used it for a group that has its own. */
static bool admitted(const struct config *cfg, const struct frame *f, const char *group_id,
		     struct gw_admission *adm, const char **why)
{
	bool shared_ok = credential_is(f, cfg->gateway.auth_username, cfg->gateway.auth_password);
	bool own_ok;

	*adm = admission_for(cfg, group_id);
	own_ok = credential_is(f, adm->username ? adm->username : cfg->gateway.auth_username,
			       adm->password ? adm->password : cfg->gateway.auth_password);
	switch (adm->kind) {
	case GW_CRED_REFUSED:
		*why = "the group has no [group.NAME] section and require_group_section is on";
		return false;
	case GW_CRED_GROUP:
		*why = shared_ok ? "the shared [gateway] credential cannot join a group that has "
				   "its own agent_password"
				 : "wrong agent username or password for the group "
				   "([group.NAME] agent_username, agent_password)";
		return own_ok;
	case GW_CRED_SHARED:
		break;
	}
	*why = "wrong gateway username or password";
	return own_ok;
}

/* Not admitted: ERROR(AUTH) whatever the reason, which only the log says. */
static void reject_auth(struct gw_tunnel *gt, const char *group_id, const char *why)
{
	log_warn("Client rejected", LF_S("remote_addr", gt->tunnel->peer),
		 LF_S("client_id", gt->client_id), LF_S("group_id", group_id), LF_S("reason", why));
	tunnel_send_error(gt->tunnel, FRAME_ERROR, FRAME_ERR_AUTH, "authentication failed");
}

/* The client_id is registered for another group or with another credential:
 * the holder keeps it and its tunnels. */
static void reject_id_in_use(struct gw_tunnel *gt, const char *group_id)
{
	const struct reg_client *holder = registry_find_client(&gt->gw->registry, gt->client_id);

	log_warn("Client rejected", LF_S("remote_addr", gt->tunnel->peer),
		 LF_S("client_id", gt->client_id), LF_S("group_id", group_id),
		 LF_S("reason", "client_id in use by an agent of another group or credential"),
		 LF_S("holder_remote_addr", holder->remote_addr),
		 LF_S("holder_group_id", holder->group->id));
	tunnel_send_error(gt->tunnel, FRAME_ERROR, FRAME_ERR_ID_IN_USE,
			  "client_id is in use by another agent");
}

static int handle_hello(struct gw_tunnel *gt, const struct frame *f)
{
	struct gateway *gw = gt->gw;
	const struct config *cfg = gw->cfg;
	struct frame ok = { .type = FRAME_HELLO_OK };
	char group_id[FRAME_MAX_ID_LEN + 1];
	struct gw_admission adm;
	const char *why;
	int ret, bound;

	copy_str(gt->client_id, sizeof(gt->client_id), &f->hello.client_id);
	if (f->hello.version != FRAME_VERSION) {
		reject(gt, FRAME_ERR_VERSION, "unsupported protocol version",
		       "unsupported version");
		return 0;
	}
	if (!valid_id(&f->hello.client_id, 1) || !valid_id(&f->hello.group_id, 0)) {
		reject(gt, FRAME_ERR_BAD_HELLO, "client_id or group_id has invalid characters",
		       "invalid client_id or group_id");
		return 0;
	}
	copy_str(group_id, sizeof(group_id), &f->hello.group_id); /* valid_id: it fits */
	if (!admitted(cfg, f, group_id, &adm, &why)) {
		reject_auth(gt, group_id, why);
		return 0;
	}
	/* a certificate bound to groups and ids (URI SANs) joins only as one */
	bound = tls_peer_binding(&gt->tunnel->tls, group_id, gt->client_id);
	if (bound == -EACCES) {
		reject_auth(gt, group_id,
			    "the client certificate is bound to other groups or "
			    "client ids");
		return 0;
	}
	if (bound == -ENOKEY && cfg->gateway.client_ca) {
		reject_auth(gt, group_id, "no client certificate was verified in this handshake");
		return 0;
	}
	if (gw->stopping) {
		reject(gt, FRAME_ERR_SHUTDOWN, "gateway is shutting down", "gateway is stopping");
		return 0;
	}
	if (cfg->gateway.max_clients && !registry_find_client(&gw->registry, gt->client_id) &&
	    registry_client_count(&gw->registry) >= cfg->gateway.max_clients) {
		reject(gt, FRAME_ERR_LIMIT, "the gateway's agent limit is reached",
		       "max_clients reached");
		return 0;
	}
	gt->reg.owner = gt;
	gt->reg.worker = (uint16_t)gt->w->index;
	gt->reg.credential = adm.kind | (bound == 1 ? GW_CRED_CERT_BOUND : 0);
	ret = registry_join(&gw->registry, &gt->reg, gt->client_id, group_id, f->hello.instance,
			    f->hello.replica, gt->tunnel->peer);
	if (ret == -EADDRINUSE) {
		reject_id_in_use(gt, group_id);
		return 0;
	}
	if (ret < 0) {
		reject(gt, FRAME_ERR_LIMIT, "gateway out of memory", "out of memory");
		return 0;
	}
	gt->authenticated = true;
	ok.hello_ok.version = FRAME_VERSION;
	/* the capabilities both sides have: an older agent gets no datagram */
	ok.hello_ok.capabilities = f->hello.capabilities & FRAME_CAP_DATAGRAM;
	gt->datagrams = (ok.hello_ok.capabilities & FRAME_CAP_DATAGRAM) != 0;
	gt->next_assoc_id = 1;
	ok.hello_ok.ping_interval_ms = cfg->gateway.ping_interval_ms;
	ok.hello_ok.stream_window = GATEWAY_STREAM_WINDOW;
	tunnel_send(gt->tunnel, &ok);
	tunnel_established(gt->tunnel, cfg->gateway.ping_interval_ms, cfg->gateway.ping_timeout_ms);
	if (ret == REGISTRY_NEW_CLIENT)
		log_info("Client connected", LF_S("client_id", gt->client_id),
			 LF_S("group_id", group_id), LF_S("remote_addr", gt->tunnel->peer));
	log_debug("Tunnel registered", LF_S("client_id", gt->client_id),
		  LF_U("replica", f->hello.replica), LF_S("remote_addr", gt->tunnel->peer));
	return 0;
}

static void gw_on_secure(struct tunnel *t)
{
}

static int gw_on_frame(struct tunnel *t, const struct frame *f, const char **why)
{
	struct gw_tunnel *gt = t->owner;

	if (!gt->authenticated) {
		int ret;

		if (f->type != FRAME_HELLO) {
			*why = "expected HELLO";
			return -EPROTO;
		}
		ret = handle_hello(gt, f);
		if (gt->authenticated) {
			metrics_observe_us(&gt->gw->stats.tunnel_handshake,
					   now_us() - gt->accepted_us);
			handshake_over(gt);
		}
		return ret;
	}
	switch (f->type) {
	case FRAME_GOAWAY:
		gt->reg.draining = true;
		log_info("Client draining", LF_S("client_id", gt->client_id),
			 LF_U("replica", gt->reg.replica),
			 LF_S("reason", frame_error_name(f->error.code)));
		proxy_release_idle(gt->w, NULL, t);
		return 0;
	case FRAME_DGRAM_OPEN:
	case FRAME_DGRAM:
	case FRAME_DGRAM_CLOSE:
		return gw_assoc_on_frame(gt, f, why);
	case FRAME_ERROR:
		log_warn("Client reported an error", LF_S("client_id", gt->client_id),
			 LF_S("code", frame_error_name(f->error.code)));
		tunnel_close(t, "client reported an error");
		return 0;
	default:
		*why = "unexpected frame from client";
		return -EPROTO;
	}
}

/* Stop a worker's loop once stopping and nothing is left open on it. */
static void worker_maybe_exit(struct gw_worker *w)
{
	if (w->gw->stopping && w->ntunnels == 0 && w->nusers == 0)
		ring_stop(&w->ring);
}

static void gw_on_closed(struct tunnel *t, const char *reason)
{
	struct gw_tunnel *gt = t->owner;
	struct gateway *gw = gt->gw;
	struct gw_worker *w = gt->w;
	char client_id[FRAME_MAX_ID_LEN + 1];

	snprintf(client_id, sizeof(client_id), "%s", gt->client_id);
	gw_assoc_tunnel_closed(gt);
	if (gt->reg.client) {
		if (registry_leave(&gw->registry, &gt->reg))
			log_info("Client disconnected", LF_S("client_id", client_id),
				 LF_S("reason", reason));
		else
			log_debug("Tunnel closed", LF_S("client_id", client_id),
				  LF_S("reason", reason));
	} else if (!gt->authenticated) {
		log_info("Tunnel closed before authentication", LF_S("remote_addr", t->peer),
			 LF_S("reason", reason));
	}
	DL_DELETE(w->tunnels, gt);
	w->ntunnels--;
	handshake_over(gt);
	if (gt->authenticated)
		gw_stats_prune(gw); /* its group may be gone */
	free(gt);
	worker_maybe_exit(w);
}

/* A tunnel missed a deadline (no PONG, or an OPEN not answered within
 * open_timeout_ms): it gets no new streams while the group has another
 * tunnel, until any frame from it arrives (docs/operations.md). */
static void gw_on_suspect(struct tunnel *t, bool suspect, const char *why)
{
	struct gw_tunnel *gt = t->owner;
	struct gateway *gw = gt->gw;
	uint64_t now = now_ms();

	gt->reg.suspect = suspect;
	if (suspect) {
		gw->tunnels_suspected++;
		if (log_rate_allow(&gw->suspect_rate, now))
			log_warn("Tunnel suspect, no new streams until it answers",
				 LF_S("client_id", gt->client_id), LF_U("replica", gt->reg.replica),
				 LF_S("remote_addr", t->peer), LF_S("reason", why),
				 LF_U("suspected_total", gw->tunnels_suspected));
		return;
	}
	if (log_rate_allow(&gw->answer_rate, now))
		log_info("Tunnel answers again", LF_S("client_id", gt->client_id),
			 LF_U("replica", gt->reg.replica),
			 LF_U("suspect_ms", now - t->suspect_since_ms));
}

static const struct tunnel_ops gw_tunnel_ops = {
	.on_secure = gw_on_secure,
	.on_frame = gw_on_frame,
	.on_closed = gw_on_closed,
	.on_suspect = gw_on_suspect,
};

/* [gateway] max_streams_per_tunnel: a full tunnel takes no new stream. */
static bool gw_tunnel_usable(const struct reg_tunnel *rt, void *ctx)
{
	const struct gateway *gw = ctx;
	const struct gw_tunnel *gt = rt->owner;
	uint32_t max = gw->cfg->gateway.max_streams_per_tunnel;

	if (gw->picking_datagrams)
		return gt->datagrams; /* an association is no stream */
	return !max || gt->tunnel->streams.count < max;
}

/* The registry replaced this tunnel (same client id, newer agent). */
static void gw_on_evict(struct reg_tunnel *rt, uint16_t code, void *ctx)
{
	struct gw_tunnel *gt = rt->owner;

	log_warn("Client tunnel replaced", LF_S("client_id", gt->client_id),
		 LF_U("replica", rt->replica), LF_S("old_remote_addr", gt->tunnel->peer),
		 LF_S("reason", frame_error_name(code)));
	tunnel_send_error(gt->tunnel, FRAME_ERROR, code,
			  "replaced by a newer connection with the same client_id");
}

static void tunnel_accept(struct listener *l, int fd)
{
	struct gw_worker *w = l->owner;
	struct gateway *gw = w->gw;
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);
	struct hs_source *source = NULL;
	struct gw_tunnel *gt;

	if (gw->stopping) {
		close(fd);
		return;
	}
	if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0 &&
	    handshake_source_take(&w->tunnel_budget,
				  gw->cfg->gateway.max_tunnel_handshakes_per_address,
				  (struct sockaddr *)&peer, &source) < 0) {
		close(fd);
		return;
	}
	gt = calloc(1, sizeof(*gt));
	if (!gt) {
		handshake_source_drop(&w->tunnel_budget, &source);
		close(fd);
		return;
	}
	gt->source = source;
	gt->gw = gw;
	gt->w = w;
	gt->accepted_us = now_us();
	gt->tunnel = tunnel_new(&w->ring, fd, gw->tls, true, NULL, &gw_tunnel_ops, gt,
				gw->cfg->gateway.handshake_timeout_ms, &w->bufs);
	if (!gt->tunnel) {
		handshake_source_drop(&w->tunnel_budget, &gt->source);
		free(gt);
		return;
	}
	DL_PREPEND(w->tunnels, gt);
	w->ntunnels++;
	handshake_begin(w, &w->tunnel_budget, &gt->in_handshake);
	log_debug("Tunnel accepted", LF_S("remote_addr", gt->tunnel->peer));
}

/* ---- limits ---- */

/* [gateway] max_connections in force: the configured number, or (0) the
 * soft open-file limit minus a reserve for everything that is not a user
 * (GATEWAY_FD_RESERVE_FIXED), so that idle users cannot take the
 * descriptors agents and apctl need. */
static void apply_limits(struct gateway *gw)
{
	const struct config *cfg = gw->cfg;
	struct rlimit rl;
	uint64_t nofile, reserve;

	if (cfg->gateway.max_connections) {
		gw->max_users = cfg->gateway.max_connections;
		log_info("Connection limit", LF_U("max_connections", gw->max_users),
			 LF_S("source", "configured"),
			 LF_U("max_handshakes", cfg->gateway.max_handshakes));
		return;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		rl.rlim_cur = (rlim_t)GATEWAY_DERIVED_NOFILE_MAX;
	nofile = MIN((uint64_t)rl.rlim_cur, (uint64_t)GATEWAY_DERIVED_NOFILE_MAX);
	reserve = GATEWAY_FD_RESERVE_FIXED + cfg->gateway.max_handshakes +
		  nofile / GATEWAY_FD_TUNNEL_SHARE;
	reserve = MIN(reserve, nofile / 2);
	gw->max_users = (uint32_t)MAX(nofile - reserve, (uint64_t)1);
	log_info("Connection limit", LF_U("max_connections", gw->max_users),
		 LF_S("source", "derived from RLIMIT_NOFILE"), LF_U("rlimit_nofile", nofile),
		 LF_U("reserved_fds", reserve),
		 LF_U("max_handshakes", cfg->gateway.max_handshakes));
}

/* ---- signals and shutdown ---- */

static void shutdown_expired(struct ring *r, struct timer *t)
{
	struct gw_worker *w = container_of(t, struct gw_worker, shutdown_timer);
	struct gw_tunnel *gt, *tmp;

	log_warn("Shutdown timeout: closing what is left", LF_U("worker", w->index),
		 LF_U("tunnels", w->ntunnels), LF_U("users", w->nusers));
	/* tunnel_close frees nothing synchronously (gw_on_closed unlinks and
	 * frees in a later completion), so the walk loses no entry; _SAFE
	 * still survives losing the current one */
	DL_FOREACH_SAFE (w->tunnels, gt, tmp)
		tunnel_close(gt->tunnel, "gateway shutdown");
	proxy_close_all(w, "gateway shutdown");
}

/* Tunnels alive on every worker. */
static unsigned gateway_tunnels(const struct gateway *gw)
{
	unsigned i, n = 0;

	for (i = 0; i < gw->nworkers; i++)
		n += gw->workers[i].ntunnels;
	return n;
}

/* One worker's part of a shutdown, on its own thread: stop accepting,
 * close the users in their handshake, drain the tunnels (GOAWAY), and
 * bound the rest by shutdown_timeout_ms. */
static void worker_stop(struct gw_worker *w)
{
	struct gw_tunnel *gt, *tmp;

	listener_stop(&w->ring, &w->tunnel_listener);
	listener_stop(&w->ring, &w->socks5_listener);
	listener_stop(&w->ring, &w->http_listener);
	listener_stop(&w->ring, &w->https_listener);
	/* users still in their handshake have nothing to finish */
	proxy_close_handshaking(w, "gateway shutdown");
	/* open streams may finish; each tunnel closes after its last one */
	DL_FOREACH_SAFE (w->tunnels, gt, tmp) /* closes, as shutdown_expired */
		tunnel_drain(gt->tunnel, FRAME_ERR_SHUTDOWN, "gateway shutting down");
	timer_init(&w->shutdown_timer, shutdown_expired);
	timer_arm(&w->ring, &w->shutdown_timer, w->gw->cfg->gateway.shutdown_timeout_ms);
	worker_maybe_exit(w);
}

static void gateway_stop(struct gateway *gw, int signo)
{
	if (gw->stopping)
		return;
	gw->stopping = true;
	notify_stopping(&gw->notify);
	log_info("Gateway stopping", LF_S("signal", strsignal(signo)),
		 LF_U("tunnels", gateway_tunnels(gw)), LF_U("users", gw->nusers),
		 LF_U("shutdown_timeout_ms", gw->cfg->gateway.shutdown_timeout_ms));
	listener_stop(&gw_main(gw)->ring, &gw->control_listener);
	metrics_server_close(&gw->metrics);
	forward_stop_all(gw);
	worker_stop(gw_main(gw));
}

static struct gateway *signal_owner;

static bool same_text(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* Why a group's agent credential under old differs from the one under now,
 * or NULL when it is the same. */
static const char *admission_change(const struct gw_admission *old, const struct gw_admission *now)
{
	if (now->kind == GW_CRED_REFUSED)
		return "require_group_section refuses the group now";
	if (old->kind == GW_CRED_SHARED && now->kind == GW_CRED_GROUP)
		return "the group has its own agent_password now";
	if (old->kind == GW_CRED_GROUP && now->kind == GW_CRED_SHARED)
		return "the group's agent_password was removed";
	if (old->kind != now->kind || !same_text(old->username, now->username) ||
	    !same_text(old->password, now->password))
		return "the credential was changed";
	return NULL;
}

/* After a reload: new rules apply to new HELLOs, and an admitted agent whose
 * group no longer takes the credential it was admitted with is closed with
 * ERROR(AUTH). old is the configuration before the reload: every registered
 * tunnel was admitted under it (the previous reload closed the others). */
static void recheck_agents(struct gateway *gw, const struct config *old)
{
	struct gw_tunnel *gt, *tmp;

	/* closes tunnels, as shutdown_expired: none leaves the list here */
	DL_FOREACH_SAFE (gw_main(gw)->tunnels, gt, tmp) {
		char group_id[FRAME_MAX_ID_LEN + 1];
		struct gw_admission before, now;
		const char *why;

		if (!gt->reg.client) /* not (or no longer) registered */
			continue;
		snprintf(group_id, sizeof(group_id), "%s", gt->reg.client->group->id);
		before = admission_for(old, group_id);
		now = admission_for(gw->cfg, group_id);
		why = admission_change(&before, &now);
		if (!why && (gt->reg.credential & GW_CRED_KIND_MASK) == (uint32_t)now.kind)
			continue;
		log_warn("Client credential revoked", LF_S("client_id", gt->client_id),
			 LF_S("group_id", group_id), LF_U("replica", gt->reg.replica),
			 LF_S("remote_addr", gt->tunnel->peer),
			 LF_S("reason", why ? why : "the credential was changed"));
		/* out of the registry at once: no new stream, and the agent's
		 * next HELLO is judged by the new rules alone */
		registry_leave(&gw->registry, &gt->reg);
		tunnel_send_error(gt->tunnel, FRAME_ERROR, FRAME_ERR_AUTH,
				  "the gateway no longer admits this agent's credential");
	}
}

/* SIGHUP: certificates, credentials, deadlines and the log change for what
 * comes next; open tunnels and streams go on untouched. A bad file leaves
 * everything as it was. */
static void gateway_reload(struct gateway *gw)
{
	struct config fresh;
	struct WOLFSSL_CTX *tls, *https_tls = NULL;
	char err[512], restart[512];
	int ret;

	log_info("SIGHUP received", LF_S("action", "reloading the configuration"));
	ret = cli_reload(gw->program, &fresh, err, sizeof(err));
	if (ret < 0) {
		log_error("Configuration reload failed; the running configuration stays",
			  LF_S("error", err));
		return;
	}
	tls = tls_ctx_server(fresh.gateway.tls_cert, fresh.gateway.tls_key, fresh.gateway.client_ca,
			     err, sizeof(err));
	if (!tls) {
		log_error("Configuration reload failed; the running configuration stays",
			  LF_S("error", err));
		config_free(&fresh);
		return;
	}
	/* [proxy.https]: a new certificate for new connections (a listener
	 * that the file no longer configures runs on with the one it has) */
	if (gw_main(gw)->https_listener.fd >= 0 && fresh.https.tls_cert && fresh.https.tls_key) {
		https_tls = tls_ctx_server_users(fresh.https.tls_cert, fresh.https.tls_key, err,
						 sizeof(err));
		if (!https_tls) {
			log_error("Configuration reload failed; the running configuration stays",
				  LF_S("proxy", "https"), LF_S("error", err));
			tls_ctx_free(tls);
			config_free(&fresh);
			return;
		}
	}
	if (config_reload(gw->cfg, &fresh, restart, sizeof(restart)))
		log_warn("Some changes need a restart and were not applied", LF_S("keys", restart));
	recheck_agents(gw, &fresh); /* fresh holds the values before the reload now */
	config_free(&fresh);
	tls_ctx_free(gw->tls); /* tunnels keep the old context until they close */
	gw->tls = tls;
	if (https_tls) {
		tls_ctx_free(gw_main(gw)->https_listener.tls); /* users keep theirs */
		gw_main(gw)->https_listener.tls = https_tls;
	}
	if (cli_apply_log(gw->cfg) < 0)
		log_error("Cannot reopen the log output", LF_S("output", gw->cfg->log.output));
	apply_limits(gw);
	/* a new max_handshakes pauses or resumes a side at once */
	handshake_limit_changed(gw_main(gw));
	log_info("Configuration reloaded", LF_U("tunnels", gateway_tunnels(gw)),
		 LF_U("users", gw->nusers));
}

static void on_signal(struct ring *r, int signo)
{
	struct gateway *gw = signal_owner;

	if (signo == SIGHUP) {
		notify_reloading(&gw->notify);
		gateway_reload(gw);
		notify_reloaded(&gw->notify);
		return;
	}
	gateway_stop(gw, signo);
}

/* ---- set-up ---- */

/* STATUS= for the service manager (systemctl status). */
static void gateway_status(void *arg, char *buf, size_t len)
{
	const struct gateway *gw = arg;

	snprintf(buf, len, "%sagents %u, tunnels %u, users %u", gw->stopping ? "stopping: " : "",
		 registry_client_count(&gw->registry), gateway_tunnels(gw), gw->nusers);
}

/* Open a proxy listener if its listen_addr is set: its connections speak
 * to front end fe. 0 or -errno. */
static int proxy_listen(struct gw_worker *w, struct listener *l, const struct config_listener *cfg,
			const struct proxy_frontend *fe, enum gw_proxy proxy)
{
	const char *name = fe->name;
	char err[512], shown[300];
	struct WOLFSSL_CTX *tls = NULL;
	int fd;

	if (!cfg->listen_addr.set)
		return 0;
	if (cfg->tls_cert) { /* [proxy.https]: the loader made sure tls_key is there */
		tls = tls_ctx_server_users(cfg->tls_cert, cfg->tls_key, err, sizeof(err));
		if (!tls) {
			log_error("Cannot set up TLS", LF_S("proxy", name), LF_S("error", err));
			return -EINVAL;
		}
	}
	fd = net_listen_tcp(&cfg->listen_addr, GATEWAY_LISTEN_BACKLOG, err, sizeof(err));
	if (fd < 0) {
		log_error("Cannot open a proxy listener", LF_S("proxy", name), LF_S("error", err));
		tls_ctx_free(tls);
		return fd;
	}
	*l = (struct listener){ .fd = fd,
				.name = name,
				.on_accept = proxy_accept,
				.owner = w,
				.frontend = fe,
				.proxy_cfg = cfg,
				.proxy = proxy,
				.tls = tls };
	config_addr_format(&cfg->listen_addr, shown, sizeof(shown));
	log_info("Proxy listening", LF_S("proxy", name), LF_S("addr", shown),
		 LF_S("auth", cfg->auth_username || cfg->auth_password ? "password" : "none"),
		 LF_S("tls", tls ? "on" : "off"));
	return 0;
}

/* Worker w's listeners (SO_REUSEPORT: every worker binds the same
 * ports) and receive buffers, on its ring. 0 or -errno (logged). */
static int worker_open(struct gw_worker *w)
{
	struct gateway *gw = w->gw;
	const struct config *cfg = gw->cfg;
	char err[512];
	int ret, fd;

	ret = bufring_init(&w->bufs, &w->ring, 0, BUFRING_ENTRIES, BUFRING_BUF_SIZE);
	if (ret < 0) {
		log_error("Cannot register receive buffers", LF_U("worker", w->index),
			  LF_S("error", strerror(-ret)));
		return ret;
	}
	ret = proxy_listen(w, &w->socks5_listener, &cfg->socks5, &socks5_frontend, GW_PROXY_SOCKS5);
	if (ret == 0)
		ret = proxy_listen(w, &w->http_listener, &cfg->http, &http_frontend, GW_PROXY_HTTP);
	if (ret == 0)
		ret = proxy_listen(w, &w->https_listener, &cfg->https, &https_frontend,
				   GW_PROXY_HTTPS);
	if (ret < 0)
		return ret;
	fd = net_listen_tcp(&cfg->gateway.listen_addr, GATEWAY_LISTEN_BACKLOG, err, sizeof(err));
	if (fd < 0) {
		log_error("Cannot open the tunnel listener", LF_S("error", err));
		return fd;
	}
	w->tunnel_listener = (struct listener){
		.fd = fd, .name = "tunnel", .on_accept = tunnel_accept, .owner = w
	};
	w->tunnel_budget =
		(struct handshake_budget){ .name = "tunnel", .listeners = { &w->tunnel_listener } };
	w->user_budget = (struct handshake_budget){
		.name = "proxy",
		.listeners = { &w->socks5_listener, &w->http_listener, &w->https_listener }
	};
	return 0;
}

/* Arm the accepts of w's listeners. */
static void worker_start(struct gw_worker *w)
{
	listener_start(&w->ring, &w->tunnel_listener);
	if (w->socks5_listener.fd >= 0)
		listener_start(&w->ring, &w->socks5_listener);
	if (w->http_listener.fd >= 0)
		listener_start(&w->ring, &w->http_listener);
	if (w->https_listener.fd >= 0)
		listener_start(&w->ring, &w->https_listener);
}

static void worker_init(struct gateway *gw, unsigned index)
{
	struct gw_worker *w = &gw->workers[index];

	w->gw = gw;
	w->index = index;
	w->tunnel_listener.fd = -1;
	w->socks5_listener.fd = -1;
	w->http_listener.fd = -1;
	w->https_listener.fd = -1;
}

int gateway_init(struct gateway *gw, const struct cli_program *program, struct config *cfg)
{
	char err[512], shown[300];
	int ret;

	memset(gw, 0, sizeof(*gw));
	gw->cfg = cfg;
	gw->program = program;
	gw->started = time(NULL);
	gw->nworkers = 1;
	worker_init(gw, 0);
	gw->control_listener.fd = -1;
	registry_init(&gw->registry, gw_on_evict, gw);
	gw->registry.usable = gw_tunnel_usable;
	signal_owner = gw;
	ret = cli_loop_init(&gw_main(gw)->ring, 4096, on_signal);
	if (ret < 0)
		return ret;
	notify_init(&gw->notify, &gw_main(gw)->ring);
	gw->tls = tls_ctx_server(cfg->gateway.tls_cert, cfg->gateway.tls_key,
				 cfg->gateway.client_ca, err, sizeof(err));
	if (!gw->tls) {
		log_error("Cannot set up TLS", LF_S("error", err));
		return -EINVAL;
	}
	ret = worker_open(gw_main(gw));
	if (ret == 0)
		ret = forward_listen_all(gw);
	if (ret < 0)
		return ret;
	ret = control_listen(gw, err, sizeof(err));
	if (ret < 0) {
		log_error("Cannot open the control socket", LF_S("error", err));
		return ret;
	}
	/* the control socket has no budget: it is never paused */
	gw->on_user_closed = worker_maybe_exit;
	worker_start(gw_main(gw));
	listener_start(&gw_main(gw)->ring, &gw->control_listener);
	ret = metrics_server_open(&gw->metrics, &gw_main(gw)->ring, &cfg->metrics.listen_addr,
				  gw_stats_collect, gw);
	if (ret < 0)
		return ret;
	forward_start_all(gw);
	apply_limits(gw);
	config_addr_format(&cfg->gateway.listen_addr, shown, sizeof(shown));
	log_info("Gateway started", LF_S("tunnel_addr", shown),
		 LF_S("control_socket", cfg->control.socket), LF_S("tls", tls_library_version()),
		 LF_U("workers", gw->nworkers));
	/* every listener is bound: connections are accepted from now on */
	notify_set_status(&gw->notify, gateway_status, gw);
	notify_ready(&gw->notify);
	return 0;
}

int gateway_run(struct gateway *gw)
{
	int ret = cli_loop_run(&gw_main(gw)->ring);

	if (ret < 0)
		log_error("Event loop failed", LF_S("error", strerror(-ret)));
	else
		log_info("Gateway stopped", LF_S("reason", "signal"));
	return ret;
}

static void worker_close(struct gw_worker *w)
{
	listener_stop(&w->ring, &w->tunnel_listener);
	listener_stop(&w->ring, &w->socks5_listener);
	listener_stop(&w->ring, &w->http_listener);
	listener_stop(&w->ring, &w->https_listener);
	tls_ctx_free(w->https_listener.tls);
	handshake_sources_free(&w->tunnel_budget);
	bufring_exit(&w->bufs, &w->ring);
}

void gateway_destroy(struct gateway *gw)
{
	if (gw->control_bound)
		unlink(gw->cfg->control.socket);
	listener_stop(&gw_main(gw)->ring, &gw->control_listener);
	metrics_server_destroy(&gw->metrics);
	forward_stop_all(gw);
	worker_close(gw_main(gw));
	registry_destroy(&gw->registry);
	gw_stats_free(&gw->stats);
	tls_ctx_free(gw->tls);
	notify_exit(&gw->notify);
	ring_exit(&gw_main(gw)->ring);
	/* after the ring: no operation of theirs is left in the kernel */
	forward_free_all(gw);
}
