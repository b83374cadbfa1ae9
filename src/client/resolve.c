/* resolve.c — getaddrinfo on worker threads, results on the ring (see resolve.h). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <utlist.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/resolve.h"

struct resolve_req {
	struct resolve_req *prev, *next; /* on todo, then on done (utlist DL) */
	char host[256];
	char port[8];
	resolve_cb cb;
	void *ctx;
	atomic_bool cancelled;
	int gai_error;
	struct addrinfo *result;
};

struct resolver {
	struct ring *ring;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct resolve_req *todo; /* FIFO: appended, taken from the head */
	struct resolve_req *done; /* in the order the lookups finished */
	unsigned pending, max_pending;
	bool stopping;
	pthread_t *threads;
	unsigned nthreads;
	int event_fd;
	uint64_t event_value;
	struct ring_op event_op;
	bool event_armed;
};

static void *worker(void *arg)
{
	struct resolver *res = arg;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV };

	pthread_mutex_lock(&res->lock);
	for (;;) {
		struct resolve_req *req;
		uint64_t one = 1;

		while (!res->todo && !res->stopping)
			pthread_cond_wait(&res->wake, &res->lock);
		if (res->stopping)
			break;
		req = res->todo;
		DL_DELETE(res->todo, req);
		pthread_mutex_unlock(&res->lock);

		if (!atomic_load(&req->cancelled))
			req->gai_error = getaddrinfo(req->host, req->port, &hints, &req->result);

		pthread_mutex_lock(&res->lock);
		DL_APPEND(res->done, req);
		if (write(res->event_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_error("resolver wake-up failed", LF_S("error", strerror(errno)));
	}
	pthread_mutex_unlock(&res->lock);
	return NULL;
}

static void event_arm(struct resolver *res);

static void event_done(struct ring *r, struct ring_op *op, int ret, uint32_t flags)
{
	struct resolver *res = container_of(op, struct resolver, event_op);
	struct resolve_req *list, *req, *tmp;

	res->event_armed = false;
	pthread_mutex_lock(&res->lock);
	list = res->done;
	res->done = NULL;
	pthread_mutex_unlock(&res->lock);
	DL_FOREACH_SAFE (list, req, tmp) { /* the list is ours now: freed as walked */
		if (!atomic_load(&req->cancelled))
			req->cb(req->ctx, req->gai_error, req->gai_error ? NULL : req->result);
		if (req->result)
			freeaddrinfo(req->result);
		free(req);
		res->pending--;
	}
	if (ret != -ECANCELED)
		event_arm(res);
}

static void event_arm(struct resolver *res)
{
	if (res->event_armed)
		return;
	res->event_op.cb = event_done;
	ring_prep_read(res->ring, &res->event_op, res->event_fd, &res->event_value,
		       sizeof(res->event_value));
	res->event_armed = true;
}

struct resolver *resolver_new(struct ring *r, unsigned threads, unsigned max_pending)
{
	struct resolver *res = calloc(1, sizeof(*res));
	unsigned i;

	if (!res)
		return NULL;
	res->ring = r;
	res->max_pending = max_pending;
	res->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	res->threads = calloc(threads, sizeof(*res->threads));
	if (res->event_fd < 0 || !res->threads)
		goto fail;
	pthread_mutex_init(&res->lock, NULL);
	pthread_cond_init(&res->wake, NULL);
	for (i = 0; i < threads; i++) {
		if (pthread_create(&res->threads[i], NULL, worker, res))
			break;
		res->nthreads++;
	}
	if (!res->nthreads)
		goto fail;
	event_arm(res);
	return res;
fail:
	if (res->event_fd >= 0)
		close(res->event_fd);
	free(res->threads);
	free(res);
	return NULL;
}

void resolver_free(struct resolver *res)
{
	struct resolve_req *req, *tmp;
	unsigned i;

	if (!res)
		return;
	pthread_mutex_lock(&res->lock);
	res->stopping = true;
	pthread_cond_broadcast(&res->wake);
	pthread_mutex_unlock(&res->lock);
	for (i = 0; i < res->nthreads; i++)
		pthread_join(res->threads[i], NULL);
	DL_FOREACH_SAFE (res->todo, req, tmp)
		free(req);
	DL_FOREACH_SAFE (res->done, req, tmp) {
		if (req->result)
			freeaddrinfo(req->result);
		free(req);
	}
	/* the event read may still be armed: the ring is torn down after us
	 * and never delivers it, so the op memory must outlive nothing */
	close(res->event_fd);
	pthread_mutex_destroy(&res->lock);
	pthread_cond_destroy(&res->wake);
	free(res->threads);
	free(res);
}

struct resolve_req *resolver_lookup(struct resolver *res, const char *host, uint16_t port,
				    resolve_cb cb, void *ctx)
{
	struct resolve_req *req;

	if (res->pending >= res->max_pending) {
		errno = EAGAIN;
		return NULL;
	}
	if (strlen(host) >= sizeof(req->host)) {
		errno = EINVAL;
		return NULL;
	}
	req = calloc(1, sizeof(*req));
	if (!req) {
		errno = ENOMEM;
		return NULL;
	}
	strcpy(req->host, host);
	snprintf(req->port, sizeof(req->port), "%u", port);
	req->cb = cb;
	req->ctx = ctx;
	atomic_init(&req->cancelled, false);
	res->pending++;
	pthread_mutex_lock(&res->lock);
	DL_APPEND(res->todo, req);
	pthread_cond_signal(&res->wake);
	pthread_mutex_unlock(&res->lock);
	return req;
}

void resolver_cancel(struct resolve_req *req)
{
	atomic_store(&req->cancelled, true);
}
