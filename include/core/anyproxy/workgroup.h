/*
 * workgroup.h — worker threads with one io_uring ring each, as both daemons
 * run them ([gateway] workers, [client] workers).
 *
 * Worker 0 is the main thread; wg_start runs workers 1.. and waits until
 * each reported its set-up (wg_ready), then tells them all to run or, when
 * one failed, to end. Every worker has an eventfd whose read stays armed on
 * its ring: wg_wake from any thread runs the worker's on_wake on its own
 * loop. Worker 0 pauses the others at the end of their loop iteration to
 * replace what they share (wg_pause, then wg_resume, which may hand them a
 * value to act on before they count themselves done). A worker whose loop
 * ended says so (wg_exited): nobody waits for it any more.
 *
 * Every count is under wg->lock, a mutex the daemon gives (the gateway's
 * shared lock, the agent's own), with wg->cond for the waits.
 */
#ifndef ANYPROXY_WORKGROUP_H
#define ANYPROXY_WORKGROUP_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "anyproxy/ring.h"

struct workgroup;

/* One worker's part, inside the daemon's worker structure. */
struct wg_member {
	struct workgroup *wg;
	unsigned index;
	pthread_t thread; /* workers 1..: joined by wg_join */
	bool thread_started;
	int init_error;     /* its set-up: 0 or -errno (wg_ready) */
	bool exited;        /* its loop ended (wg_exited) */
	unsigned park_seen; /* the last pause it took part in */
	/* the wake-up: an eventfd read armed on its ring (wg_arm) */
	int wake_fd;
	struct ring *ring;
	struct ring_op wake_op;
	uint64_t wake_value;
	bool wake_armed;
	void (*on_wake)(struct wg_member *m);
};

struct workgroup {
	pthread_mutex_t *lock;
	pthread_cond_t cond;
	struct wg_member **members; /* n; members[0] is the main thread */
	unsigned n;
	unsigned initialised; /* workers 1.. that reported their set-up */
	unsigned exited;      /* workers whose loop ended */
	int start;            /* 0: wait; 1: run; -1: end at once */
	unsigned park_gen, park_released, parked, done;
	void *handed; /* what wg_resume gives the workers it releases */
};

/* The number of workers to run: configured (0: online_cpus, itself taken
 * as 1 when unknown, i.e. not positive), at most cap, at least 1. */
unsigned wg_count(unsigned configured, long online_cpus, unsigned cap);

/* n workers under lock. 0 or -ENOMEM. Then wg_set each member, with the
 * ring its thread will run (made there, later). */
int wg_init(struct workgroup *wg, pthread_mutex_t *lock, unsigned n);
void wg_set(struct workgroup *wg, unsigned index, struct wg_member *m, struct ring *r);
/* The member's eventfd. 0 or -errno (logged). */
int wg_open_wake(struct wg_member *m);
/* Arm the member's wake-up read on r (its own ring, on its own thread):
 * each wg_wake runs on_wake there. Re-armed after every wake-up. */
void wg_arm(struct wg_member *m, struct ring *r, void (*on_wake)(struct wg_member *m));
/* Run m's on_wake on its loop soon (any thread). */
void wg_wake(struct wg_member *m);
/* wg_wake for every worker but `except` (WG_NONE: every worker). */
#define WG_NONE UINT_MAX
void wg_wake_all_but(struct workgroup *wg, unsigned except);

/* Worker 0: start workers 1.. on fn (its argument: the struct wg_member)
 * and wait for their set-up. 0, or -errno when one failed (then every
 * started one is told to end; wg_join waits for them). */
int wg_start(struct workgroup *wg, void *(*fn)(void *));
/* A worker thread: its set-up ended with err. Returns once worker 0 has
 * decided: > 0 run, < 0 end at once. */
int wg_ready(struct wg_member *m, int err);
/* Workers 1.. that have not been told yet are told to end (a failed start,
 * or a teardown). */
void wg_end(struct workgroup *wg);
/* The member's loop ended (counted once); the _locked form with wg->lock
 * held. */
void wg_exited(struct wg_member *m);
void wg_exited_locked(struct wg_member *m);
/* Worker 0, after the others were told to stop: join the started ones. */
void wg_join(struct workgroup *wg);
/* After wg_join: close the eventfds, free what wg_init made. */
void wg_destroy(struct workgroup *wg);

/* Worker 0: return once every other worker is paused or has ended. */
void wg_pause(struct workgroup *wg);
/* A worker's on_wake, first: if a pause is asked for, take part in it and
 * return true once released, with *handed what wg_resume gave (may be
 * NULL); false when there is no pause. */
bool wg_pause_point(struct wg_member *m, void **handed);
/* A released worker has acted on a non-NULL handed value. */
void wg_done(struct wg_member *m);
/* Worker 0: release the paused workers; with handed non-NULL, return only
 * once each of them called wg_done (or ended), so handed may be freed. */
void wg_resume(struct workgroup *wg, void *handed);

#endif
