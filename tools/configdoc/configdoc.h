/*
 * configdoc.h — the documents generated from the configuration key table
 * (include/core/anyproxy/config-table.h), for ap-configdoc and the unit tests.
 */
#ifndef ANYPROXY_CONFIGDOC_H
#define ANYPROXY_CONFIGDOC_H

#include <stdio.h>

#include "anyproxy/config.h"

/* Markdown reference of every key (docs/config.md is this output). */
void config_write_markdown(FILE *out);
/* A complete commented example INI for one program (configs/<prog>.reference.ini). */
void config_write_example(FILE *out, enum config_program program);

#endif
