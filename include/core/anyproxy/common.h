/*
 * common.h — conventions shared by every module.
 *
 * Error convention (one for the whole tree): a function returns 0 or a
 * positive count on success and a negative errno value (-EINVAL, -ENOMEM,
 * -EPROTO, ...) on failure. Pure codecs add one more outcome: 0 means
 * "need more bytes" and a positive value is the number of bytes consumed.
 * Functions that can fail for a reason worth telling a person take a
 * caller-supplied `char *err, size_t errlen` and write one line there.
 */
#ifndef ANYPROXY_COMMON_H
#define ANYPROXY_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Big-endian loads and stores for wire formats. */
static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}
static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}
static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

/* Monotonic clock in milliseconds. In a thread inside ring_run it is the
 * time the loop read at the start of its iteration or when it woke (two
 * clock reads per iteration instead of one per completion: timers, idle
 * deadlines and activity stamps need no finer); elsewhere the clock. */
uint64_t now_ms(void);
/* ring_run: read the clock for this thread's now_ms (on), or stop caching
 * it when the loop returns (off). */
void now_ms_cache(bool on);
/* Milliseconds from then to now; 0 when then is later. A loop's now_ms
 * can be older than a stamp another thread made during the same
 * iteration, so a difference of times from two threads must not wrap. */
static inline uint64_t ms_since(uint64_t now, uint64_t then)
{
	return now > then ? now - then : 0;
}
/* Monotonic clock in microseconds, read each time (latencies). */
uint64_t now_us(void);

/* Constant-time comparison of two byte strings; the time depends only on
 * the lengths, never on where they differ. Returns 1 when equal. */
int secret_equal(const void *a, size_t alen, const void *b, size_t blen);

#endif
