/* workgroup.c — worker threads with a ring each (see workgroup.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/workgroup.h"

unsigned wg_count(unsigned configured, long online_cpus, unsigned cap)
{
	unsigned n = configured;

	if (!n)
		n = online_cpus > 0 ? (unsigned)online_cpus : 1;
	if (n > cap)
		n = cap;
	return n ? n : 1;
}

int wg_init(struct workgroup *wg, pthread_mutex_t *lock, unsigned n)
{
	memset(wg, 0, sizeof(*wg));
	wg->lock = lock;
	pthread_cond_init(&wg->cond, NULL);
	wg->members = calloc(n, sizeof(*wg->members));
	if (!wg->members)
		return -ENOMEM;
	wg->n = n;
	return 0;
}

void wg_set(struct workgroup *wg, unsigned index, struct wg_member *m, struct ring *r)
{
	m->wg = wg;
	m->index = index;
	m->ring = r;
	m->wake_fd = -1;
	wg->members[index] = m;
}

int wg_open_wake(struct wg_member *m)
{
	m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->wake_fd >= 0)
		return 0;
	log_error("Cannot create the worker's eventfd", LF_U("worker", m->index),
		  LF_S("error", strerror(errno)));
	return -errno;
}

static void arm(struct wg_member *m);

static void woken(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct wg_member *m = container_of(op, struct wg_member, wake_op);

	m->wake_armed = false;
	if (res == -ECANCELED)
		return;
	m->on_wake(m);
	arm(m);
}

static void arm(struct wg_member *m)
{
	if (m->wake_armed)
		return;
	m->wake_op.cb = woken;
	ring_prep_read(m->ring, &m->wake_op, m->wake_fd, &m->wake_value, sizeof(m->wake_value));
	m->wake_armed = true;
}

void wg_arm(struct wg_member *m, struct ring *r, void (*on_wake)(struct wg_member *m))
{
	m->ring = r;
	m->on_wake = on_wake;
	arm(m);
}

void wg_wake(struct wg_member *m)
{
	uint64_t one = 1;

	if (m->wake_fd >= 0 && write(m->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_error("Cannot wake a worker", LF_U("worker", m->index),
			  LF_S("error", strerror(errno)));
}

void wg_wake_all_but(struct workgroup *wg, unsigned except)
{
	unsigned i;

	for (i = 0; i < wg->n; i++)
		if (i != except)
			wg_wake(wg->members[i]);
}

int wg_start(struct workgroup *wg, void *(*fn)(void *))
{
	unsigned i, started = 0;
	int ret = 0;

	for (i = 1; i < wg->n; i++) {
		struct wg_member *m = wg->members[i];

		ret = -pthread_create(&m->thread, NULL, fn, m);
		if (ret < 0) {
			log_error("Cannot start a worker thread", LF_U("worker", i),
				  LF_S("error", strerror(-ret)));
			break;
		}
		m->thread_started = true;
		started++;
	}
	pthread_mutex_lock(wg->lock);
	while (wg->initialised < started)
		pthread_cond_wait(&wg->cond, wg->lock);
	for (i = 1; i < wg->n && !ret; i++)
		ret = wg->members[i]->init_error;
	wg->start = ret < 0 ? -1 : 1;
	pthread_cond_broadcast(&wg->cond);
	pthread_mutex_unlock(wg->lock);
	return ret;
}

int wg_ready(struct wg_member *m, int err)
{
	struct workgroup *wg = m->wg;
	int start;

	pthread_mutex_lock(wg->lock);
	m->init_error = err;
	wg->initialised++;
	pthread_cond_broadcast(&wg->cond);
	while (!wg->start)
		pthread_cond_wait(&wg->cond, wg->lock);
	start = wg->start;
	pthread_mutex_unlock(wg->lock);
	return start;
}

void wg_end(struct workgroup *wg)
{
	pthread_mutex_lock(wg->lock);
	if (!wg->start)
		wg->start = -1;
	pthread_cond_broadcast(&wg->cond);
	pthread_mutex_unlock(wg->lock);
}

void wg_exited_locked(struct wg_member *m)
{
	if (m->exited)
		return;
	m->exited = true;
	m->wg->exited++;
	pthread_cond_broadcast(&m->wg->cond);
}

void wg_exited(struct wg_member *m)
{
	pthread_mutex_lock(m->wg->lock);
	wg_exited_locked(m);
	pthread_mutex_unlock(m->wg->lock);
}

void wg_join(struct workgroup *wg)
{
	unsigned i;

	for (i = 1; i < wg->n; i++)
		if (wg->members[i]->thread_started) {
			pthread_join(wg->members[i]->thread, NULL);
			wg->members[i]->thread_started = false;
		}
}

void wg_destroy(struct workgroup *wg)
{
	unsigned i;

	/* each eventfd lives until here: another worker may write to it
	 * until the end, and a closed number could be reused */
	for (i = 0; i < wg->n; i++)
		if (wg->members[i] && wg->members[i]->wake_fd >= 0)
			close(wg->members[i]->wake_fd);
	free(wg->members);
	wg->members = NULL;
	wg->n = 0;
	pthread_cond_destroy(&wg->cond);
}

void wg_pause(struct workgroup *wg)
{
	pthread_mutex_lock(wg->lock);
	wg->park_gen++;
	wg->parked = 0;
	wg->done = 0;
	pthread_mutex_unlock(wg->lock);
	wg_wake_all_but(wg, 0);
	pthread_mutex_lock(wg->lock);
	while (wg->parked + wg->exited < wg->n - 1)
		pthread_cond_wait(&wg->cond, wg->lock);
	pthread_mutex_unlock(wg->lock);
}

bool wg_pause_point(struct wg_member *m, void **handed)
{
	struct workgroup *wg = m->wg;
	bool paused = false;

	pthread_mutex_lock(wg->lock);
	if (m->park_seen != wg->park_gen) {
		m->park_seen = wg->park_gen;
		wg->parked++;
		pthread_cond_broadcast(&wg->cond);
		while (wg->park_released != m->park_seen)
			pthread_cond_wait(&wg->cond, wg->lock);
		*handed = wg->handed;
		paused = true;
	}
	pthread_mutex_unlock(wg->lock);
	return paused;
}

void wg_done(struct wg_member *m)
{
	pthread_mutex_lock(m->wg->lock);
	m->wg->done++;
	pthread_cond_broadcast(&m->wg->cond);
	pthread_mutex_unlock(m->wg->lock);
}

void wg_resume(struct workgroup *wg, void *handed)
{
	pthread_mutex_lock(wg->lock);
	wg->handed = handed;
	wg->park_released = wg->park_gen;
	pthread_cond_broadcast(&wg->cond);
	while (handed && wg->done + wg->exited < wg->parked)
		pthread_cond_wait(&wg->cond, wg->lock);
	wg->handed = NULL;
	pthread_mutex_unlock(wg->lock);
}
