/* workers.c — spreading links over worker threads (see workers.h). */
#include "anyproxy/workers.h"

unsigned agent_workers_count(unsigned configured, long online_cpus, unsigned nlinks)
{
	unsigned n = configured;

	if (!n)
		n = online_cpus > 0 ? (unsigned)online_cpus : 1;
	if (n > nlinks)
		n = nlinks;
	return n ? n : 1;
}

unsigned agent_link_worker(unsigned link, unsigned nworkers)
{
	return nworkers ? link % nworkers : 0;
}

unsigned agent_worker_share(unsigned total, unsigned nworkers)
{
	unsigned n = nworkers ? total / nworkers : total;

	return n ? n : 1;
}
