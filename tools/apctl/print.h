/*
 * print.h — apctl's output: a parsed control reply (anyproxy/table.h) as an
 * aligned table, as key-value lines or as JSON. Only apctl links this; the
 * gateway builds replies and never prints them.
 *
 * Human output keeps each value on one line and passes no control byte to
 * the terminal: backslash, TAB, LF and CR show as their wire escapes, other
 * control bytes and bytes that are not valid UTF-8 as \xHH. Widths count
 * code points, so East Asian wide characters misalign (no locale is used).
 * The functions only write to the FILE they are given.
 */
#ifndef ANYPROXY_APCTL_PRINT_H
#define ANYPROXY_APCTL_PRINT_H

#include <stdbool.h>
#include <stdio.h>

#include "anyproxy/table.h"

/* Human output shows an empty value of this column as this label. */
#define APCTL_GROUP_COLUMN "group_id"
#define APCTL_DEFAULT_GROUP_LABEL "(default)"
/* ... and an empty value of this one (no suspect tunnel) as "-". */
#define APCTL_SUSPECT_COLUMN "suspect"
#define APCTL_NONE_LABEL "-"

/* Writes one value in its human form (e.g. an ERR message). */
void apctl_print_value(FILE *out, const char *value);

/* Columns two spaces apart, upper-case header, TABLE_UINT columns right-
 * aligned, an empty APCTL_GROUP_COLUMN value shown as the default label. */
void apctl_print_aligned(FILE *out, const struct table *t);

/* Each row vertically, one "key: value" line per column with the values
 * aligned; rows are separated by an empty line. */
void apctl_print_kv(FILE *out, const struct table *t);

/*
 * RFC 8259 JSON: an array of objects, one per row, or with single the first
 * row's object alone ("null" when there is no row). Numbers and booleans
 * are unquoted; strings escape '"', '\\' and control bytes, and a byte that
 * is not part of valid UTF-8 becomes \u00XX (its Latin-1 reading), so the
 * output is always valid UTF-8. Values are never replaced by labels.
 */
void apctl_print_json(FILE *out, const struct table *t, bool single);

/* The rows as one JSON array on one line, without a line end (for a
 * document that holds several tables, as apctl watch --json prints). */
void apctl_print_json_line(FILE *out, const struct table *t);

#endif
