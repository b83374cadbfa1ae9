/*
 * backoff.h — reconnect delays: exponential growth with full jitter.
 * The n-th retry waits a uniform random time in [0, min(max, initial * 2^n)],
 * so a fleet of agents that lost the gateway together does not come back
 * in lock-step. Pure apart from the random seed.
 */
#ifndef ANYPROXY_BACKOFF_H
#define ANYPROXY_BACKOFF_H

#include <stdint.h>

struct backoff {
	uint32_t initial_ms;
	uint32_t max_ms;
	unsigned attempt;
	uint64_t rng; /* xorshift64* state, never 0 */
};

void backoff_init(struct backoff *b, uint32_t initial_ms, uint32_t max_ms, uint64_t seed);
/* The bound the next delay is drawn under. */
uint32_t backoff_ceiling(const struct backoff *b);
/* Draw the next delay and count the attempt; *ceiling gets the bound used. */
uint32_t backoff_next(struct backoff *b, uint32_t *ceiling);
/* Jump straight to the cap (the gateway said to stay away). */
void backoff_saturate(struct backoff *b);
void backoff_reset(struct backoff *b);

#endif
