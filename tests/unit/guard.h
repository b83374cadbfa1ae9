/*
 * guard.h — the unit tests' over-read detector: a writable area followed by
 * one PROT_NONE page. Input placed with guard_place() ends exactly at the
 * inaccessible page, so a parser that reads one byte too far faults even
 * without ASan. One area per test program (static state in this header).
 */
#ifndef ANYPROXY_TEST_GUARD_H
#define ANYPROXY_TEST_GUARD_H

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint8_t *guard_area;
static size_t guard_area_size;
static size_t guard_page_size;

/* Map at least min_bytes writable bytes plus the guard page. 0 or -1. */
static inline int guard_setup(size_t min_bytes)
{
	guard_page_size = (size_t)sysconf(_SC_PAGESIZE);
	guard_area_size = (min_bytes + guard_page_size - 1) / guard_page_size * guard_page_size;
	guard_area = mmap(NULL, guard_area_size + guard_page_size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (guard_area == MAP_FAILED)
		return -1;
	return mprotect(guard_area + guard_area_size, guard_page_size, PROT_NONE);
}

static inline int guard_teardown(void)
{
	return munmap(guard_area, guard_area_size + guard_page_size);
}

/* Where n bytes must start so that they end at the inaccessible page. */
static inline uint8_t *guarded(size_t n)
{
	assert_true(n <= guard_area_size);
	return guard_area + guard_area_size - n;
}

/* Copy n bytes (which may overlap the area) so that they end at the page. */
static inline uint8_t *guard_place(const void *bytes, size_t n)
{
	uint8_t *p = guarded(n);

	memmove(p, bytes, n);
	return p;
}

#endif
