/* stats.c — the agent's counters and its metrics (agent.h; the series are
 * listed in docs/operations.md "Metrics"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#include "ap-build.h"
#include "anyproxy/common.h"
#include "anyproxy/tls.h"
#include "agent.h"

void agent_stats_denied(struct agent_stats *st, enum acl_verdict verdict, const char *rule,
			uint64_t count)
{
	struct agent_denial *d;

	if (!rule)
		rule = "";
	LL_FOREACH (st->denials, d)
		if (d->verdict == verdict && !strcmp(d->rule, rule)) {
			d->count += count;
			return;
		}
	if (st->ndenials >= AGENT_STATS_MAX_DENIAL_RULES || !(d = calloc(1, sizeof(*d))) ||
	    !(d->rule = strdup(rule))) {
		free(d);
		st->denials_other += count;
		return;
	}
	d->verdict = verdict;
	d->count = count;
	LL_PREPEND(st->denials, d);
	st->ndenials++;
}

void agent_worker_denied(struct agent_worker *w, enum acl_verdict verdict, const char *rule)
{
	pthread_mutex_lock(&w->stats_lock);
	agent_stats_denied(&w->stats, verdict, rule, 1);
	pthread_mutex_unlock(&w->stats_lock);
}

void agent_worker_dns(struct agent_worker *w, uint64_t us)
{
	pthread_mutex_lock(&w->stats_lock);
	metrics_observe_us(&w->stats.dns, us);
	pthread_mutex_unlock(&w->stats_lock);
}

void agent_stats_free(struct agent_stats *st)
{
	struct agent_denial *d, *tmp;

	LL_FOREACH_SAFE (st->denials, d, tmp) {
		free(d->rule);
		free(d);
	}
	st->denials = NULL;
	st->ndenials = 0;
}

static const char *verdict_label(enum acl_verdict v)
{
	return v == ACL_DENY_FORBIDDEN ? "forbidden" : "not_allowed";
}

/* Tunnels by gateway and state, and each gateway's connects and failures
 * (docs/operations.md "Metrics"). */
static void write_tunnels(struct metrics_writer *w, const struct agent *a)
{
	unsigned g, i, replicas = a->cfg->client.replicas;

	metrics_family(w, "anyproxy_agent_tunnels", METRICS_GAUGE,
		       "Tunnels to each gateway (replicas per gateway), by state.");
	for (g = 0; g < a->ngateways; g++) {
		const struct agent_gateway *gw = &a->gateways[g];
		uint64_t count[LINK_DONE + 1] = { 0 };
		enum link_state st;

		for (i = gw->first_link; i < gw->first_link + replicas; i++)
			count[AGENT_READ(a->links[i].state)]++;
		for (st = LINK_WAIT; st <= LINK_DONE; st++) {
			struct metrics_label l[] = { { "gateway", gw->name },
						     { "state", agent_link_state_name(st) } };

			metrics_sample(w, "anyproxy_agent_tunnels", l, 2, count[st]);
		}
	}
	metrics_family(w, "anyproxy_agent_gateway_connects_total", METRICS_COUNTER,
		       "Tunnels that reached HELLO_OK, per gateway.");
	for (g = 0; g < a->ngateways; g++) {
		struct metrics_label l[] = { { "gateway", a->gateways[g].name } };

		metrics_sample(w, "anyproxy_agent_gateway_connects_total", l, 1,
			       AGENT_READ(a->gateways[g].connects));
	}
	metrics_family(w, "anyproxy_agent_gateway_failures_total", METRICS_COUNTER,
		       "Failed attempts and closed tunnels, per gateway.");
	for (g = 0; g < a->ngateways; g++) {
		struct metrics_label l[] = { { "gateway", a->gateways[g].name } };

		metrics_sample(w, "anyproxy_agent_gateway_failures_total", l, 1,
			       AGENT_READ(a->gateways[g].failures));
	}
}

static void write_denials(struct metrics_writer *w, const struct agent_stats *st)
{
	const struct agent_denial *d;

	metrics_family(w, "anyproxy_agent_host_denials_total", METRICS_COUNTER,
		       "Targets refused by the host rules, by verdict (forbidden, not_allowed) and "
		       "the rule that refused them (\"\" when no allowed rule matched; \"(other)\" "
		       "past the distinct-rule bound).");
	LL_FOREACH (st->denials, d) {
		struct metrics_label l[] = { { "verdict", verdict_label(d->verdict) },
					     { "rule", d->rule } };

		metrics_sample(w, "anyproxy_agent_host_denials_total", l, 2, d->count);
	}
	if (st->denials_other) {
		struct metrics_label l[] = { { "verdict", "forbidden" }, { "rule", "(other)" } };

		metrics_sample(w, "anyproxy_agent_host_denials_total", l, 2, st->denials_other);
	}
}

/*
 * The workers' counters added up into *sum (its denials list is built
 * here: agent_stats_free it), and their streams open into *streams. The
 * scalars are read with relaxed loads while the workers count on; the
 * histogram and the denials under each worker's stats_lock.
 */
static void sum_workers(const struct agent *a, struct agent_stats *sum, uint64_t *streams)
{
	unsigned i;
	size_t r;

	memset(sum, 0, sizeof(*sum));
	*streams = 0;
	for (i = 0; i < a->nworkers; i++) {
		struct agent_worker *wk = &a->workers[i];
		const struct agent_denial *d;

		*streams += AGENT_READ(wk->ntargets);
		sum->reconnects += AGENT_READ(wk->stats.reconnects);
		sum->streams_total += AGENT_READ(wk->stats.streams_total);
		for (r = 0; r < FRAME_NRESULTS; r++)
			sum->opens[r] += AGENT_READ(wk->stats.opens[r]);
		pthread_mutex_lock(&wk->stats_lock);
		for (r = 0; r <= METRICS_LATENCY_NBUCKETS; r++)
			sum->dns.buckets[r] += wk->stats.dns.buckets[r];
		sum->dns.sum_us += wk->stats.dns.sum_us;
		sum->dns.count += wk->stats.dns.count;
		LL_FOREACH (wk->stats.denials, d)
			agent_stats_denied(sum, d->verdict, d->rule, d->count);
		sum->denials_other += wk->stats.denials_other;
		pthread_mutex_unlock(&wk->stats_lock);
	}
}

/* Each worker's share of the streams, so a test (or an operator) sees
 * every worker carry load. */
static void write_workers(struct metrics_writer *w, const struct agent *a)
{
	metrics_write_per_worker(w, "anyproxy_agent_worker_streams_total",
				 "OPENs taken by each worker thread (its tunnels: tunnel i runs on "
				 "worker i % workers).",
				 &a->workers[0].stats.streams_total, sizeof(a->workers[0]),
				 a->nworkers);
}

void agent_stats_collect(struct metrics_writer *w, void *arg)
{
	const struct agent *a = arg;
	struct agent_stats sum;
	const struct agent_stats *st = &sum;
	uint64_t streams;
	size_t r;

	sum_workers(a, &sum, &streams);
	metrics_write_build_info(w, "anyproxy-client", AP_VERSION, tls_library_version(),
				 AP_WOLFSSL_AESNI);
	metrics_write_process(w);
	write_tunnels(w, a);
	metrics_write_value(w, "anyproxy_agent_reconnects_total", METRICS_COUNTER,
			    "Reconnection attempts scheduled after a tunnel failed or ended.",
			    st->reconnects);
	metrics_write_value(w, "anyproxy_agent_streams", METRICS_GAUGE,
			    "Streams open (target connections, connecting or relaying).", streams);
	metrics_write_value(w, "anyproxy_agent_streams_total", METRICS_COUNTER,
			    "OPENs taken from the gateway.", st->streams_total);
	write_workers(w, a);
	metrics_family(w, "anyproxy_agent_opens_total", METRICS_COUNTER,
		       "OPENs answered, by outcome (ok, refused, dns, timeout, denied, "
		       "unreachable, limit, error).");
	for (r = 0; r < FRAME_NRESULTS; r++) {
		struct metrics_label l[] = { { "result", frame_open_result_name(r) } };

		if (r == FRAME_RESULT_NO_AGENT)
			continue; /* the gateway's outcome only */
		metrics_sample(w, "anyproxy_agent_opens_total", l, 1, st->opens[r]);
	}
	write_denials(w, st);
	metrics_family(w, "anyproxy_agent_dns_duration_seconds", METRICS_HISTOGRAM,
		       "Target name lookups on the resolver pool, answered or failed.");
	metrics_write_histogram(w, "anyproxy_agent_dns_duration_seconds", NULL, 0, &st->dns);
	agent_stats_free(&sum);
}
