/* stats.c — the gateway's counters, exposed as metrics and as `apctl stats`
 * (stats.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ap-build.h"
#include "anyproxy/common.h"
#include "anyproxy/idhash.h"
#include "anyproxy/table.h"
#include "anyproxy/tls.h"
#include "gateway.h"
#include "forward.h"
#include "stats.h"

struct gw_group_stats *gw_stats_group(struct gw_stats *st, const char *group_id)
{
	struct gw_group_stats *g;

	IDHASH_GET(st->groups, group_id, g);
	return g;
}

void gw_stats_free(struct gw_stats *st)
{
	struct gw_group_stats *g, *tmp;

	HASH_ITER (hh, st->groups, g, tmp) {
		HASH_DEL(st->groups, g);
		free(g);
	}
}

static uint64_t group_streams(const struct gw_group_stats *g, const uint64_t *per_proxy)
{
	uint64_t n = 0;
	size_t p;

	for (p = 0; p < GW_NPROXIES; p++)
		n += per_proxy[p];
	return n;
}

/* Drop g if its group left the registry and has no stream open, keeping
 * what it counted in the totals: the group series stay bounded by the
 * registry's groups. */
static void maybe_retire(struct gateway *gw, struct gw_group_stats *g)
{
	struct gw_stats *st = &gw->stats;

	if (group_streams(g, g->streams_active) || registry_find_group(&gw->registry, g->id))
		return;
	st->retired_streams_total += group_streams(g, g->streams_total);
	st->retired_bytes_in += GW_READ(&g->bytes_in);
	st->retired_bytes_out += GW_READ(&g->bytes_out);
	HASH_DEL(st->groups, g);
	free(g);
}

void gw_stats_stream_done(struct gateway *gw, struct gw_group_stats *g, unsigned proxy)
{
	g->streams_active[proxy]--;
	maybe_retire(gw, g);
}

void gw_stats_prune(struct gateway *gw)
{
	struct gw_group_stats *g, *tmp;

	HASH_ITER (hh, gw->stats.groups, g, tmp)
		maybe_retire(gw, g);
}

/* ---- copies for listings ---- */

static int copy_counters(const struct gw_stats *st, struct gw_snapshot *s)
{
	const struct gw_group_stats *g, *tmp;
	size_t n = 0;

	s->counters =
		calloc(HASH_COUNT(st->groups) ? HASH_COUNT(st->groups) : 1, sizeof(*s->counters));
	if (!s->counters)
		return -ENOMEM;
	HASH_ITER (hh, st->groups, g, tmp) {
		struct gw_group_stats *c = &s->counters[n++]; /* calloc'd: in no hash */

		/* field by field: the workers add to the byte counts without
		 * the lock, so they are read atomically, never copied whole */
		memcpy(c->id, g->id, sizeof(c->id));
		memcpy(c->streams_active, g->streams_active, sizeof(c->streams_active));
		memcpy(c->streams_total, g->streams_total, sizeof(c->streams_total));
		c->bytes_in = GW_READ(&g->bytes_in);
		c->bytes_out = GW_READ(&g->bytes_out);
	}
	s->ncounters = n;
	return 0;
}

int gw_snapshot_take(struct gateway *gw, struct gw_snapshot *s, unsigned what,
		     const char *only_client)
{
	int ret = 0;

	memset(s, 0, sizeof(*s));
	gw_lock(gw);
	if (what & GW_SNAP_CLIENTS)
		ret = registry_copy_clients(&gw->registry, only_client, &s->clients, &s->nclients);
	if (!ret && (what & GW_SNAP_GROUPS))
		ret = registry_copy_groups(&gw->registry, &s->groups, &s->ngroups);
	if (!ret && (what & GW_SNAP_COUNTERS))
		ret = copy_counters(&gw->stats, s);
	gw_unlock(gw);
	if (ret < 0) {
		gw_snapshot_free(s);
		return ret;
	}
	registry_sort_rows(s->clients, s->nclients, sizeof(*s->clients));
	registry_sort_rows(s->groups, s->ngroups, sizeof(*s->groups));
	return 0;
}

void gw_snapshot_free(struct gw_snapshot *s)
{
	registry_free_client_rows(s->clients, s->nclients);
	free(s->groups);
	free(s->counters);
	memset(s, 0, sizeof(*s));
}

/* ---- global totals (apctl stats) ---- */

struct gw_totals {
	uint64_t user_connections, user_connections_total, user_refused_total;
	uint64_t streams, streams_total, bytes_in, bytes_out;
	uint64_t opens[FRAME_NRESULTS];
	uint64_t auth_failures, fallbacks;
	uint64_t groups, agents, tunnels, handshakes_proxy, handshakes_tunnel;
};

static void totals(struct gateway *gw, struct gw_totals *t)
{
	const struct gw_stats *st = &gw->stats;
	const struct gw_group_stats *g, *tmp;
	struct reg_group *rg, *rtmp;
	size_t p, r;

	memset(t, 0, sizeof(*t));
	for (p = 0; p < GW_NPROXIES; p++) {
		t->user_connections += GW_READ(&st->proxy[p].connections);
		t->user_connections_total += GW_READ(&st->proxy[p].connections_total);
		t->auth_failures += st->proxy[p].auth_failures;
		for (r = 0; r < FRAME_NRESULTS; r++)
			t->opens[r] += st->proxy[p].opens[r];
	}
	t->user_refused_total = gw->refused_over_limit;
	t->streams_total = st->retired_streams_total;
	t->bytes_in = st->retired_bytes_in;
	t->bytes_out = st->retired_bytes_out;
	HASH_ITER (hh, st->groups, g, tmp) {
		t->streams += group_streams(g, g->streams_active);
		t->streams_total += group_streams(g, g->streams_total);
		t->bytes_in += GW_READ(&g->bytes_in);
		t->bytes_out += GW_READ(&g->bytes_out);
	}
	t->fallbacks = st->fallbacks;
	HASH_ITER (hh, gw->registry.groups, rg, rtmp) {
		t->groups++;
		t->agents += rg->nclients;
		t->tunnels += rg->ntunnels;
	}
	t->handshakes_proxy = gw->user_budget.count;
	t->handshakes_tunnel = gw->tunnel_budget.count;
}

#define TOTAL(name)                                     \
	{                                               \
#name, offsetof(struct gw_totals, name) \
	}

/* The columns of `apctl stats`, in order; opens_RESULT columns follow
 * streams_total, one per enum frame_open_result. */
static const struct {
	const char *name;
	size_t offset;
} total_columns[] = {
	TOTAL(user_connections),
	TOTAL(user_connections_total),
	TOTAL(user_refused_total),
	TOTAL(streams),
	TOTAL(streams_total),
	TOTAL(bytes_in),
	TOTAL(bytes_out),
	TOTAL(auth_failures),
	TOTAL(fallbacks),
	TOTAL(groups),
	TOTAL(agents),
	TOTAL(tunnels),
	TOTAL(handshakes_proxy),
	TOTAL(handshakes_tunnel),
};

#define STATS_NCOLUMNS (ARRAY_SIZE(total_columns) + FRAME_NRESULTS)
_Static_assert(STATS_NCOLUMNS <= TABLE_MAX_COLUMNS, "apctl stats has too many columns");

int gw_stats_write_table(struct gateway *gw, struct table_writer *w)
{
	char names[STATS_NCOLUMNS][TABLE_MAX_NAME_LEN + 3];
	const char *cols[STATS_NCOLUMNS];
	struct gw_totals t;
	size_t i, n = 0;
	int ret;

	gw_lock(gw);
	gw_stats_prune(gw);
	totals(gw, &t);
	gw_unlock(gw);
	for (i = 0; i < ARRAY_SIZE(total_columns); i++)
		snprintf(names[n++], sizeof(names[0]), "%s:n", total_columns[i].name);
	for (i = 0; i < FRAME_NRESULTS; i++)
		snprintf(names[n++], sizeof(names[0]), "opens_%s:n", frame_open_result_name(i));
	for (i = 0; i < n; i++)
		cols[i] = names[i];
	ret = table_write_header(w, cols, n);
	ret |= table_write_row_begin(w);
	for (i = 0; i < ARRAY_SIZE(total_columns); i++)
		ret |= table_write_uint(
			w, *(const uint64_t *)((const char *)&t + total_columns[i].offset));
	for (i = 0; i < FRAME_NRESULTS; i++)
		ret |= table_write_uint(w, t.opens[i]);
	ret |= table_write_row_end(w);
	return ret ? -ENOSPC : 0;
}

/* ---- metrics ---- */

#define L(n, v)          \
	{                \
		(n), (v) \
	}

static void write_proxies(struct metrics_writer *w, const struct gw_stats *st)
{
	size_t p, r;

	metrics_family(w, "anyproxy_gateway_user_connections", METRICS_GAUGE,
		       "Users' connections open, by proxy listener.");
	for (p = 0; p < GW_NPROXIES; p++) {
		struct metrics_label l[] = { L("proxy", st->proxy[p].name) };

		metrics_sample(w, "anyproxy_gateway_user_connections", l, 1,
			       GW_READ(&st->proxy[p].connections));
	}
	metrics_family(w, "anyproxy_gateway_user_connections_total", METRICS_COUNTER,
		       "Users' connections accepted, by proxy listener.");
	for (p = 0; p < GW_NPROXIES; p++) {
		struct metrics_label l[] = { L("proxy", st->proxy[p].name) };

		metrics_sample(w, "anyproxy_gateway_user_connections_total", l, 1,
			       GW_READ(&st->proxy[p].connections_total));
	}
	metrics_family(w, "anyproxy_gateway_auth_failures_total", METRICS_COUNTER,
		       "Users refused for their credentials, by proxy listener.");
	for (p = 0; p < GW_NPROXIES; p++) {
		struct metrics_label l[] = { L("proxy", st->proxy[p].name) };

		metrics_sample(w, "anyproxy_gateway_auth_failures_total", l, 1,
			       st->proxy[p].auth_failures);
	}
	metrics_family(w, "anyproxy_gateway_opens_total", METRICS_COUNTER,
		       "Users' requests for a target, by proxy listener and outcome (ok, refused, "
		       "dns, timeout, denied, no_agent, unreachable, limit, error).");
	for (p = 0; p < GW_NPROXIES; p++)
		for (r = 0; r < FRAME_NRESULTS; r++) {
			struct metrics_label l[] = { L("proxy", st->proxy[p].name),
						     L("result", frame_open_result_name(r)) };

			metrics_sample(w, "anyproxy_gateway_opens_total", l, 2,
				       st->proxy[p].opens[r]);
		}
}

static void write_groups(struct metrics_writer *w, const struct gw_stats *st,
			 const struct gw_snapshot *s)
{
	size_t i, p;

	metrics_family(w, "anyproxy_gateway_streams", METRICS_GAUGE,
		       "Streams open, by proxy listener and the group of the agent serving them.");
	for (i = 0; i < s->ncounters; i++)
		for (p = 0; p < GW_NPROXIES; p++) {
			struct metrics_label l[] = { L("proxy", st->proxy[p].name),
						     L("group", s->counters[i].id) };

			metrics_sample(w, "anyproxy_gateway_streams", l, 2,
				       s->counters[i].streams_active[p]);
		}
	metrics_family(w, "anyproxy_gateway_streams_total", METRICS_COUNTER,
		       "Streams opened to agents, by proxy listener and group.");
	for (i = 0; i < s->ncounters; i++)
		for (p = 0; p < GW_NPROXIES; p++) {
			struct metrics_label l[] = { L("proxy", st->proxy[p].name),
						     L("group", s->counters[i].id) };

			metrics_sample(w, "anyproxy_gateway_streams_total", l, 2,
				       s->counters[i].streams_total[p]);
		}
	metrics_family(w, "anyproxy_gateway_bytes_total", METRICS_COUNTER,
		       "Stream payload by group; direction out is user -> target.");
	for (i = 0; i < s->ncounters; i++) {
		const struct gw_group_stats *g = &s->counters[i];
		struct metrics_label in[] = { L("group", g->id), L("direction", "in") };
		struct metrics_label out[] = { L("group", g->id), L("direction", "out") };

		metrics_sample(w, "anyproxy_gateway_bytes_total", in, 2, g->bytes_in);
		metrics_sample(w, "anyproxy_gateway_bytes_total", out, 2, g->bytes_out);
	}
	metrics_write_value(w, "anyproxy_gateway_groups", METRICS_GAUGE,
			    "Groups with at least one agent.", s->ngroups);
	metrics_family(w, "anyproxy_gateway_agents", METRICS_GAUGE,
		       "Agents (client ids) connected, by group.");
	for (i = 0; i < s->ngroups; i++) {
		struct metrics_label l[] = { L("group", s->groups[i].id) };

		metrics_sample(w, "anyproxy_gateway_agents", l, 1, s->groups[i].clients);
	}
	metrics_family(w, "anyproxy_gateway_tunnels", METRICS_GAUGE,
		       "Agents' tunnels registered, by group.");
	for (i = 0; i < s->ngroups; i++) {
		struct metrics_label l[] = { L("group", s->groups[i].id) };

		metrics_sample(w, "anyproxy_gateway_tunnels", l, 1, s->groups[i].tunnels);
	}
}

static void write_clients(struct metrics_writer *w, const struct gw_snapshot *s)
{
	size_t i;

	metrics_family(w, "anyproxy_gateway_client_bytes_total", METRICS_COUNTER,
		       "Stream payload by connected agent; direction out is user -> target.");
	for (i = 0; i < s->nclients; i++) {
		const struct reg_client_row *c = &s->clients[i];
		struct metrics_label in[] = { L("group", c->group), L("client", c->id),
					      L("direction", "in") };
		struct metrics_label out[] = { L("group", c->group), L("client", c->id),
					       L("direction", "out") };

		metrics_sample(w, "anyproxy_gateway_client_bytes_total", in, 3, c->bytes_in);
		metrics_sample(w, "anyproxy_gateway_client_bytes_total", out, 3, c->bytes_out);
	}
	metrics_family(w, "anyproxy_gateway_client_tunnels", METRICS_GAUGE,
		       "Tunnels by connected agent; suspect ones (a missed PONG or OPEN deadline) "
		       "take no new streams until they answer.");
	for (i = 0; i < s->nclients; i++) {
		const struct reg_client_row *c = &s->clients[i];
		struct metrics_label ok[] = { L("group", c->group), L("client", c->id),
					      L("state", "ok") };
		struct metrics_label sus[] = { L("group", c->group), L("client", c->id),
					       L("state", "suspect") };

		metrics_sample(w, "anyproxy_gateway_client_tunnels", ok, 3,
			       c->tunnels - c->suspect);
		metrics_sample(w, "anyproxy_gateway_client_tunnels", sus, 3, c->suspect);
	}
}

/* [forward.NAME]: connections (TCP) or clients (UDP) by forward, and the
 * sources allowed_sources refused (datagrams, for a UDP forward). */
static void write_forwards(struct metrics_writer *w, struct gateway *gw)
{
	size_t i;

	metrics_family(w, "anyproxy_gateway_forward_connections", METRICS_GAUGE,
		       "Connections open now through each port forward (UDP: clients with an "
		       "association).");
	for (i = 0; i < gw->nforwards; i++) {
		const struct gw_forward *fw = &gw->forwards[i];
		struct metrics_label l[] = { L("forward", fw->cfg->name) };

		metrics_sample(w, "anyproxy_gateway_forward_connections", l, 1,
			       fw->cfg->protocol == CONFIG_FORWARD_UDP ? GW_READ(&fw->nclients)
								       : GW_READ(&fw->active));
	}
	metrics_family(w, "anyproxy_gateway_forward_connections_total", METRICS_COUNTER,
		       "Connections accepted by each TCP port forward (UDP: clients seen).");
	for (i = 0; i < gw->nforwards; i++) {
		const struct gw_forward *fw = &gw->forwards[i];
		struct metrics_label l[] = { L("forward", fw->cfg->name) };

		metrics_sample(w, "anyproxy_gateway_forward_connections_total", l, 1, fw->total);
	}
	metrics_family(w, "anyproxy_gateway_forward_refused_total", METRICS_COUNTER,
		       "Connections (UDP: datagrams) refused by a forward's allowed_sources.");
	for (i = 0; i < gw->nforwards; i++) {
		const struct gw_forward *fw = &gw->forwards[i];
		struct metrics_label l[] = { L("forward", fw->cfg->name) };

		metrics_sample(w, "anyproxy_gateway_forward_refused_total", l, 1, fw->refused);
	}
	metrics_write_value(w, "anyproxy_gateway_datagrams_dropped_total", METRICS_COUNTER,
			    "Datagrams toward agents not sent (tunnel full, too long).",
			    GW_READ(&gw->dgrams_dropped));
}

/* One family with a sample per handshake budget, labelled by its side. */
static void side_family(struct metrics_writer *w, const struct handshake_budget *const sides[2],
			const char *name, enum metrics_type type, const char *help,
			const uint64_t values[2])
{
	size_t i;

	metrics_family(w, name, type, help);
	for (i = 0; i < 2; i++) {
		struct metrics_label l[] = { L("side", sides[i]->name) };

		metrics_sample(w, name, l, 1, values[i]);
	}
}

/* Each side's handshake budget, its name the label (caller holds the lock). */
static void write_handshakes(struct metrics_writer *w, struct gateway *gw)
{
	const struct handshake_budget *const sides[] = { &gw->user_budget, &gw->tunnel_budget };
	size_t p;

	side_family(w, sides, "anyproxy_gateway_handshakes", METRICS_GAUGE,
		    "Connections in their handshake (not yet authenticated), by side: proxy "
		    "(both proxy ports) or tunnel.",
		    (const uint64_t[]){ sides[0]->count, sides[1]->count });
	side_family(w, sides, "anyproxy_gateway_handshake_pauses_total", METRICS_COUNTER,
		    "Times a side reached max_handshakes and stopped accepting.",
		    (const uint64_t[]){ sides[0]->pauses, sides[1]->pauses });
	side_family(
		w, sides, "anyproxy_gateway_handshakes_refused_per_address_total", METRICS_COUNTER,
		"Connections closed because their source address was at "
		"max_tunnel_handshakes_per_address (side tunnel).",
		(const uint64_t[]){ sides[0]->refused_per_address, sides[1]->refused_per_address });
	side_family(w, sides, "anyproxy_gateway_handshakes_stale_closed_total", METRICS_COUNTER,
		    "Connections closed in their handshake, at max_handshakes, for one "
		    "waiting in the listen backlog (handshake_stale_ms).",
		    (const uint64_t[]){ sides[0]->stale_closed, sides[1]->stale_closed });
	metrics_family(w, "anyproxy_gateway_handshake_duration_seconds", METRICS_HISTOGRAM,
		       "From accept to an authenticated first request (listener socks5, http) "
		       "or to HELLO_OK (listener tunnel).");
	for (p = 0; p < GW_NPROXIES; p++) {
		struct metrics_label l[] = { L("listener", gw->stats.proxy[p].name) };

		metrics_write_histogram(w, "anyproxy_gateway_handshake_duration_seconds", l, 1,
					&gw->stats.proxy[p].handshake);
	}
	{
		struct metrics_label l[] = { L("listener", "tunnel") };

		metrics_write_histogram(w, "anyproxy_gateway_handshake_duration_seconds", l, 1,
					&gw->stats.tunnel_handshake);
	}
}

/* Per worker: streams opened there and users handed over to it; the
 * handovers in all (relaxed reads). */
static void write_workers(struct metrics_writer *w, struct gateway *gw)
{
	metrics_write_value(w, "anyproxy_gateway_workers", METRICS_GAUGE,
			    "Worker threads ([gateway] workers in force).", gw->nworkers);
	metrics_write_value(w, "anyproxy_gateway_handovers_total", METRICS_COUNTER,
			    "User connections moved to the worker that owns the tunnel their "
			    "request picked.",
			    GW_READ(&gw->handovers));
	metrics_write_per_worker(w, "anyproxy_gateway_worker_streams_total",
				 "Streams opened to agents, by the worker that carries them.",
				 &gw->workers[0].streams_total, sizeof(gw->workers[0]),
				 gw->nworkers);
	metrics_write_per_worker(w, "anyproxy_gateway_worker_handovers_total",
				 "User connections handed over to each worker.",
				 &gw->workers[0].handovers_in, sizeof(gw->workers[0]),
				 gw->nworkers);
}

void gw_stats_collect(struct metrics_writer *w, void *arg)
{
	struct gateway *gw = arg;
	const struct gw_stats *st = &gw->stats;
	struct gw_snapshot snap;

	/* the process's own numbers need no lock: the workers go on */
	metrics_write_build_info(w, "anyproxy-gateway", AP_VERSION, tls_library_version(),
				 AP_WOLFSSL_AESNI);
	metrics_write_process(w);
	gw_lock(gw);
	gw_stats_prune(gw);
	write_proxies(w, st);
	metrics_write_value(w, "anyproxy_gateway_user_refused_total", METRICS_COUNTER,
			    "Users refused at accept because max_connections was reached.",
			    gw->refused_over_limit);
	metrics_write_value(w, "anyproxy_gateway_fallbacks_total", METRICS_COUNTER,
			    "Requests for a group without a serving agent sent to the default "
			    "group.",
			    st->fallbacks);
	metrics_write_value(w, "anyproxy_gateway_open_retries_total", METRICS_COUNTER,
			    "OPENs sent again to another agent of the group after a failure or no "
			    "answer.",
			    gw->open_retries);
	metrics_write_value(w, "anyproxy_gateway_tunnels_suspected_total", METRICS_COUNTER,
			    "Times a tunnel became suspect.", gw->tunnels_suspected);
	gw_unlock(gw);
	/* the series per group and per agent, as many as there are agents,
	 * are written from copies: the lock is held only to copy them */
	if (gw_snapshot_take(gw, &snap, GW_SNAP_CLIENTS | GW_SNAP_GROUPS | GW_SNAP_COUNTERS, NULL) <
	    0) {
		w->error = w->error ? w->error : -ENOMEM;
		return;
	}
	write_groups(w, st, &snap);
	write_clients(w, &snap);
	gw_snapshot_free(&snap);
	gw_lock(gw);
	write_forwards(w, gw);
	write_handshakes(w, gw);
	metrics_family(w, "anyproxy_gateway_open_duration_seconds", METRICS_HISTOGRAM,
		       "From OPEN sent to the agent's OPEN_OK or OPEN_FAIL (or the gateway's "
		       "own timeout).");
	metrics_write_histogram(w, "anyproxy_gateway_open_duration_seconds", NULL, 0,
				&st->open_latency);
	gw_unlock(gw);
	write_workers(w, gw);
}
