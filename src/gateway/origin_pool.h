/*
 * origin_pool.h — idle streams to origins, parked between HTTP user
 * connections (docs/operations.md, "HTTP origin connections").
 *
 * A stream that HTTP forwarding kept after a complete response (the agent
 * still holds its TCP connection to the origin) may outlive its user
 * connection here, parked under a key naming the identity (group and user
 * name) and the target, so that a later request of the same user to the
 * same origin, on any user connection, takes it instead of opening a new
 * one. Bounded per agent and per key, closed after [proxy.http]
 * origin_pool_idle_ms unused (0: no pool), on anything the origin sends or
 * closes, when the agent is drained or goes away, and at shutdown. Keys
 * never mix groups or users: a stream is only ever taken under the key it
 * was parked with.
 */
#ifndef ANYPROXY_GATEWAY_ORIGIN_POOL_H
#define ANYPROXY_GATEWAY_ORIGIN_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "anyproxy/registry.h"
#include "anyproxy/stream.h"

struct gateway;
struct gw_worker;

/* How long a parked stream waits unused: [proxy.http] origin_pool_idle_ms,
 * 0 (the default) for no pool. A few seconds is best: under the idle
 * timeouts common origins use (nginx 75 s; Node.js 5 s is the short end,
 * and that race is covered by sending an idempotent request again). */
/* Parked streams per agent (client_id), all its origins together. */
#define ORIGIN_POOL_PER_AGENT_MAX 512
/* Parked streams per key (one user of one group to one origin). */
#define ORIGIN_POOL_PER_KEY_MAX 64
/* The longest key: group, user name and target, with separators. */
#define ORIGIN_POOL_KEY_MAX 1024

/* Is the pool on ([proxy.http] origin_pool_idle_ms)? */
bool origin_pool_enabled(const struct gateway *gw);

/* Park *s (a live, idle stream of client's agent) under key: the stream
 * moves into the pool (s is left detached) and holds its own reference to
 * client. owed_credit: bytes received on it that its owner has not
 * returned credit for yet (returned now). 0, or -ENOSPC (a bound reached),
 * -EOPNOTSUPP (no pool) or -ENOMEM, and then s is untouched. */
int origin_pool_put(struct gw_worker *w, const char *key, size_t key_len, struct stream *s,
		    struct reg_client *client, size_t owed_credit);

/* Take the most recently parked stream under key whose agent is still
 * usable for group (gw_agent_usable), moving it into *s with ops and
 * owner. Returns its agent, referenced for the caller, or NULL (nothing
 * parked, or only streams of unusable agents: those are reset). */
struct reg_client *origin_pool_take(struct gw_worker *w, const char *key, size_t key_len,
				    const char *group, struct stream *s,
				    const struct stream_ops *ops, void *owner);

/* Reset the parked streams of agents drained with apctl (drained_only),
 * on tunnel t (NULL: any), of group's agents (NULL: any group's); false
 * and NULLs: all of them. */
void origin_pool_release(struct gw_worker *w, bool drained_only, const struct tunnel *t,
			 const char *group);

/* Parked streams now (for tests and stats). */
unsigned origin_pool_count(const struct gw_worker *w);
/* Another worker holding a stream parked under key (its index), or -1. */
int origin_pool_elsewhere(struct gw_worker *w, const char *key, size_t key_len);
/* Free the directory of parked keys (shutdown). */
void origin_pool_dir_free(struct gateway *gw);

#endif
