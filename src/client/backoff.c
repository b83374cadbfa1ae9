/* backoff.c — exponential backoff with full jitter (see backoff.h). */
#include "anyproxy/backoff.h"

#define BACKOFF_MAX_SHIFT 31

void backoff_init(struct backoff *b, uint32_t initial_ms, uint32_t max_ms, uint64_t seed)
{
	b->initial_ms = initial_ms ? initial_ms : 1;
	b->max_ms = max_ms < b->initial_ms ? b->initial_ms : max_ms;
	b->attempt = 0;
	b->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

uint32_t backoff_ceiling(const struct backoff *b)
{
	uint64_t c;

	if (b->attempt >= BACKOFF_MAX_SHIFT)
		return b->max_ms;
	c = (uint64_t)b->initial_ms << b->attempt;
	return c > b->max_ms ? b->max_ms : (uint32_t)c;
}

static uint64_t next_random(struct backoff *b)
{
	b->rng ^= b->rng >> 12;
	b->rng ^= b->rng << 25;
	b->rng ^= b->rng >> 27;
	return b->rng * 0x2545F4914F6CDD1DULL;
}

uint32_t backoff_next(struct backoff *b, uint32_t *ceiling)
{
	uint32_t c = backoff_ceiling(b);

	if (ceiling)
		*ceiling = c;
	if (b->attempt < BACKOFF_MAX_SHIFT)
		b->attempt++;
	return (uint32_t)(next_random(b) % ((uint64_t)c + 1));
}

void backoff_saturate(struct backoff *b)
{
	b->attempt = BACKOFF_MAX_SHIFT;
}

void backoff_reset(struct backoff *b)
{
	b->attempt = 0;
}
