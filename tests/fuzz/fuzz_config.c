/*
 * fuzz_config.c — libFuzzer target for the configuration loader: the input
 * is an INI file, loaded as both programs. Exercises inih through our line
 * reader (long lines, NUL bytes, odd section headers), every value parser
 * and the validation, and, under ASan, proves that every failure path frees
 * what it allocated.
 *
 * The input reaches config_load through a memfd, so the fuzzer touches no
 * files. Paths named in the input are only opened for reading and closed.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "anyproxy/acl.h"
#include "anyproxy/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One error line of config_load. */
#define FUZZ_ERR_BYTES 512

static void load_as(enum config_program program, const char *path)
{
	struct config cfg;
	char err[FUZZ_ERR_BYTES];

	if (config_load(&cfg, program, path, err, sizeof(err)) == 0)
		config_free(&cfg);
}

/* As the agent does, so host patterns are checked (and fuzzed) too. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	config_register_check(CONFIG_CHECK_HOST_PATTERN, acl_check_pattern);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64];
	int fd = memfd_create("fuzz-config", MFD_CLOEXEC);

	if (fd < 0)
		abort();
	if (size && write(fd, data, size) != (ssize_t)size)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	load_as(CONFIG_GATEWAY, path);
	load_as(CONFIG_CLIENT, path);
	close(fd);
	return 0;
}
