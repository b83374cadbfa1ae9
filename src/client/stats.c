/* stats.c — the agent's counters and its metrics (agent.h; the series are
 * listed in docs/operations.md "Metrics"). */
#include <stdlib.h>
#include <string.h>

#include "ap-build.h"
#include "anyproxy/common.h"
#include "anyproxy/tls.h"
#include "agent.h"

void agent_stats_denied(struct agent_stats *st, enum acl_verdict verdict, const char *rule)
{
	struct agent_denial *d;

	if (!rule)
		rule = "";
	for (d = st->denials; d; d = d->next)
		if (d->verdict == verdict && !strcmp(d->rule, rule)) {
			d->count++;
			return;
		}
	if (st->ndenials >= AGENT_STATS_MAX_DENIAL_RULES || !(d = calloc(1, sizeof(*d))) ||
	    !(d->rule = strdup(rule))) {
		free(d);
		st->denials_other++;
		return;
	}
	d->verdict = verdict;
	d->count = 1;
	d->next = st->denials;
	st->denials = d;
	st->ndenials++;
}

void agent_stats_free(struct agent_stats *st)
{
	struct agent_denial *d, *next;

	for (d = st->denials; d; d = next) {
		next = d->next;
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
			count[a->links[i].state]++;
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
			       a->gateways[g].connects);
	}
	metrics_family(w, "anyproxy_agent_gateway_failures_total", METRICS_COUNTER,
		       "Failed attempts and closed tunnels, per gateway.");
	for (g = 0; g < a->ngateways; g++) {
		struct metrics_label l[] = { { "gateway", a->gateways[g].name } };

		metrics_sample(w, "anyproxy_agent_gateway_failures_total", l, 1,
			       a->gateways[g].failures);
	}
}

static void write_denials(struct metrics_writer *w, const struct agent_stats *st)
{
	const struct agent_denial *d;

	metrics_family(w, "anyproxy_agent_host_denials_total", METRICS_COUNTER,
		       "Targets refused by the host rules, by verdict (forbidden, not_allowed) and "
		       "the rule that refused them (\"\" when no allowed rule matched; \"(other)\" "
		       "past the distinct-rule bound).");
	for (d = st->denials; d; d = d->next) {
		struct metrics_label l[] = { { "verdict", verdict_label(d->verdict) },
					     { "rule", d->rule } };

		metrics_sample(w, "anyproxy_agent_host_denials_total", l, 2, d->count);
	}
	if (st->denials_other) {
		struct metrics_label l[] = { { "verdict", "forbidden" }, { "rule", "(other)" } };

		metrics_sample(w, "anyproxy_agent_host_denials_total", l, 2, st->denials_other);
	}
}

void agent_stats_collect(struct metrics_writer *w, void *arg)
{
	const struct agent *a = arg;
	const struct agent_stats *st = &a->stats;
	size_t r;

	metrics_write_build_info(w, "anyproxy-client", AP_VERSION, tls_library_version(),
				 AP_WOLFSSL_AESNI);
	metrics_write_process(w);
	write_tunnels(w, a);
	metrics_write_value(w, "anyproxy_agent_reconnects_total", METRICS_COUNTER,
			    "Reconnection attempts scheduled after a tunnel failed or ended.",
			    st->reconnects);
	metrics_write_value(w, "anyproxy_agent_streams", METRICS_GAUGE,
			    "Streams open (target connections, connecting or relaying).",
			    a->ntargets);
	metrics_write_value(w, "anyproxy_agent_streams_total", METRICS_COUNTER,
			    "OPENs taken from the gateway.", st->streams_total);
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
}
