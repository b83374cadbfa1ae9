/*
 * ap-configdoc — print the documentation generated from the configuration
 * key table, so docs/config.md and configs/PROGRAM.reference.ini never drift from
 * the code. check.sh compares, and regenerates, the checked-in copies.
 *
 *   ap-configdoc markdown
 *   ap-configdoc example gateway|client
 *
 * Exit status: 0 on success, 2 on a usage error, 1 if stdout failed.
 */
#include <stdio.h>
#include <string.h>

#include "configdoc.h"

#define EXIT_USAGE 2

static int usage(void)
{
	fputs("usage: ap-configdoc markdown\n"
	      "       ap-configdoc example gateway|client\n",
	      stderr);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "markdown") == 0)
		config_write_markdown(stdout);
	else if (argc == 3 && strcmp(argv[1], "example") == 0 && strcmp(argv[2], "gateway") == 0)
		config_write_example(stdout, CONFIG_GATEWAY);
	else if (argc == 3 && strcmp(argv[1], "example") == 0 && strcmp(argv[2], "client") == 0)
		config_write_example(stdout, CONFIG_CLIENT);
	else
		return usage();
	/* A full disk or closed pipe must not pass for fresh docs. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		perror("ap-configdoc: stdout");
		return 1;
	}
	return 0;
}
