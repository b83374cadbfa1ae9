/* workers.c — spreading links over worker threads (see workers.h). */
#include "anyproxy/workers.h"

unsigned agent_link_worker(unsigned link, unsigned nworkers)
{
	return nworkers ? link % nworkers : 0;
}

unsigned agent_worker_share(unsigned total, unsigned nworkers)
{
	unsigned n = nworkers ? total / nworkers : total;

	return n ? n : 1;
}
