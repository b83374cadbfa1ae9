/*
 * fuzz_check.h — the fuzz targets' assertion: a broken promise aborts, so
 * libFuzzer reports the input that broke it.
 */
#ifndef ANYPROXY_FUZZ_CHECK_H
#define ANYPROXY_FUZZ_CHECK_H

#include <stdlib.h>

#define CHECK(cond)              \
	do {                     \
		if (!(cond))     \
			abort(); \
	} while (0)

#endif
