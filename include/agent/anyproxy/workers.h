/*
 * workers.h — how the agent spreads its links over worker threads (pure
 * helpers; the threads themselves are src/client/agent.c).
 *
 * [client] workers asks for a number of threads, 0 meaning one per online
 * CPU; a worker without a link would only idle, so the agent runs
 * min(workers, links) (wg_count, workgroup.h). Link i belongs to worker i % workers: the replicas
 * of one gateway land on different workers.
 */
#ifndef ANYPROXY_WORKERS_H
#define ANYPROXY_WORKERS_H

/* The worker that owns link `link` of nworkers (nworkers >= 1). */
unsigned agent_link_worker(unsigned link, unsigned nworkers);
/* One worker's part of a bound for the whole agent: total / nworkers,
 * at least 1. */
unsigned agent_worker_share(unsigned total, unsigned nworkers);

#endif
