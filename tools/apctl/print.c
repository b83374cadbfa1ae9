/*
 * print.c — apctl's aligned, key-value and JSON output of a parsed control
 * reply (print.h).
 */
#include <string.h>

#include "anyproxy/common.h"
#include "anyproxy/grammar.h"
#include "print.h"

/* The longest display escape, "\xHH", plus its NUL. */
#define DISPLAY_ESCAPE_MAX 5
/* Spaces between two columns of aligned output. */
#define ALIGNED_GAP 2

/* ---- human output --------------------------------------------------------- */

/* One piece of a value's human form: the bytes to print and how many bytes
 * of the value they stand for. */
struct display_unit {
	const char *bytes;
	size_t nbytes;
	size_t consumed;
	char escape[DISPLAY_ESCAPE_MAX];
};

static void display_next(const char *s, struct display_unit *u)
{
	unsigned char c = (unsigned char)*s;
	char letter = table_escape_letter(*s);
	size_t n;

	u->consumed = 1;
	u->bytes = u->escape;
	if (letter) {
		u->escape[0] = '\\';
		u->escape[1] = letter;
		u->nbytes = 2;
	} else if (c < 0x20 || c == 0x7f ||
		   !(n = grammar_utf8_len(s, strnlen(s, GRAMMAR_UTF8_MAX_BYTES)))) {
		snprintf(u->escape, sizeof(u->escape), "\\x%02x", c);
		u->nbytes = 4;
	} else {
		u->bytes = s;
		u->nbytes = n;
		u->consumed = n;
	}
}

/* Terminal columns of a value's human form: an escape is as wide as its
 * text, a character is one column. */
static size_t display_width(const char *s)
{
	struct display_unit u;
	size_t width = 0;

	for (; *s; s += u.consumed) {
		display_next(s, &u);
		width += u.bytes == u.escape ? u.nbytes : 1;
	}
	return width;
}

void apctl_print_value(FILE *out, const char *value)
{
	struct display_unit u;

	for (; *value; value += u.consumed) {
		display_next(value, &u);
		fwrite(u.bytes, 1, u.nbytes, out);
	}
}

/* The value human output shows for a cell. */
static const char *shown_value(const struct table *t, size_t row, size_t col)
{
	const char *value = table_cell(t, row, col);

	if (!*value && !strcmp(t->cols[col].name, APCTL_GROUP_COLUMN))
		return APCTL_DEFAULT_GROUP_LABEL;
	if (!*value && !strcmp(t->cols[col].name, APCTL_SUSPECT_COLUMN))
		return APCTL_NONE_LABEL;
	return value;
}

static void put_spaces(FILE *out, size_t n)
{
	while (n--)
		putc(' ', out);
}

static void put_upper(FILE *out, const char *name)
{
	for (; *name; name++)
		putc(*name >= 'a' && *name <= 'z' ? *name - 'a' + 'A' : *name, out);
}

/* Pad a cell `width` columns wide to its column's width: numbers are padded
 * before, text after, and the last column gets no trailing blanks. */
static void pad_before(FILE *out, const struct table *t, size_t col, size_t width, size_t col_width)
{
	if (t->cols[col].type == TABLE_UINT)
		put_spaces(out, col_width - width);
}

static void pad_after(FILE *out, const struct table *t, size_t col, size_t width, size_t col_width)
{
	if (col + 1 == t->ncols)
		return;
	if (t->cols[col].type != TABLE_UINT)
		put_spaces(out, col_width - width);
	put_spaces(out, ALIGNED_GAP);
}

void apctl_print_aligned(FILE *out, const struct table *t)
{
	size_t col_width[TABLE_MAX_COLUMNS];
	size_t row, col;

	for (col = 0; col < t->ncols; col++) {
		col_width[col] = strlen(t->cols[col].name);
		for (row = 0; row < t->nrows; row++)
			col_width[col] =
				MAX(col_width[col], display_width(shown_value(t, row, col)));
	}
	for (col = 0; col < t->ncols; col++) {
		size_t width = strlen(t->cols[col].name);

		pad_before(out, t, col, width, col_width[col]);
		put_upper(out, t->cols[col].name);
		pad_after(out, t, col, width, col_width[col]);
	}
	putc('\n', out);
	for (row = 0; row < t->nrows; row++) {
		for (col = 0; col < t->ncols; col++) {
			const char *value = shown_value(t, row, col);
			size_t width = display_width(value);

			pad_before(out, t, col, width, col_width[col]);
			apctl_print_value(out, value);
			pad_after(out, t, col, width, col_width[col]);
		}
		putc('\n', out);
	}
}

void apctl_print_kv(FILE *out, const struct table *t)
{
	size_t key_width = 0, row, col;

	for (col = 0; col < t->ncols; col++)
		key_width = MAX(key_width, strlen(t->cols[col].name));
	for (row = 0; row < t->nrows; row++) {
		if (row)
			putc('\n', out);
		for (col = 0; col < t->ncols; col++) {
			fprintf(out, "%s:", t->cols[col].name);
			put_spaces(out, key_width - strlen(t->cols[col].name) + 1);
			apctl_print_value(out, shown_value(t, row, col));
			putc('\n', out);
		}
	}
}

/* ---- JSON output ------------------------------------------------------------ */

static void json_put_string(FILE *out, const char *s)
{
	char unit[GRAMMAR_JSON_UNIT_MAX];
	size_t used;

	putc('"', out);
	for (; *s; s += used)
		fwrite(unit, 1,
		       grammar_json_unit(s, strnlen(s, GRAMMAR_UTF8_MAX_BYTES),
					 GRAMMAR_JSON_WS_SHORT, unit, &used),
		       out);
	putc('"', out);
}

static void json_put_row(FILE *out, const struct table *t, size_t row)
{
	size_t col;

	putc('{', out);
	for (col = 0; col < t->ncols; col++) {
		if (col)
			putc(',', out);
		json_put_string(out, t->cols[col].name);
		putc(':', out);
		/* n and b values are valid JSON as they are (table_parse) */
		if (t->cols[col].type == TABLE_UINT || t->cols[col].type == TABLE_BOOL)
			fputs(table_cell(t, row, col), out);
		else
			json_put_string(out, table_cell(t, row, col));
	}
	putc('}', out);
}

void apctl_print_json_line(FILE *out, const struct table *t)
{
	size_t row;

	putc('[', out);
	for (row = 0; row < t->nrows; row++) {
		if (row)
			putc(',', out);
		json_put_row(out, t, row);
	}
	putc(']', out);
}

void apctl_print_json(FILE *out, const struct table *t, bool single)
{
	size_t row;

	if (single) {
		if (t->nrows)
			json_put_row(out, t, 0);
		else
			fputs("null", out);
		putc('\n', out);
		return;
	}
	if (!t->nrows) {
		fputs("[]\n", out);
		return;
	}
	fputs("[\n", out);
	for (row = 0; row < t->nrows; row++) {
		fputs("  ", out);
		json_put_row(out, t, row);
		fputs(row + 1 < t->nrows ? ",\n" : "\n", out);
	}
	fputs("]\n", out);
}
