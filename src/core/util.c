/* util.c — small helpers declared in common.h. */
#include <time.h>

#include "anyproxy/common.h"

/* now_ms for this thread's loop; 0 outside ring_run */
static __thread uint64_t loop_now_ms;

static uint64_t clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t now_ms(void)
{
	return loop_now_ms ? loop_now_ms : clock_ms();
}

void now_ms_cache(bool on)
{
	loop_now_ms = on ? clock_ms() : 0;
}

uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int secret_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	const volatile uint8_t *x = a;
	const volatile uint8_t *y = b;
	/* Walk the attacker-supplied length (a) in full whatever b holds, so
	 * neither the position of the first difference nor b's content shows
	 * in the timing. A length mismatch still fails. */
	uint8_t diff = alen != blen;
	size_t i;

	for (i = 0; i < alen; i++)
		diff |= (uint8_t)(x[i] ^ (blen ? y[i % blen] : 0));
	return diff == 0;
}
