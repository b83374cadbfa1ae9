/*
 * table.c — the control protocol: its command table and the codec for the
 * request line, the reply writer and the reply parser. The format is
 * described in include/control/anyproxy/table.h. Pure: nothing here does I/O.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "anyproxy/table.h"

const char *const table_client_columns[TABLE_CLIENT_NCOLUMNS] = {
	"client_id:s",       "group_id:s",       "tunnels:n",       "remote_addr:s",
	"connected_since:s", "streams_active:n", "streams_total:n", "bytes_in:n",
	"bytes_out:n",       "drained:b",        "suspect:s",
};

const char *const table_group_columns[TABLE_GROUP_NCOLUMNS] = {
	"group_id:s", "clients:n", "tunnels:n", "streams_active:n", "drained:n",
};

const char *const table_version_columns[TABLE_VERSION_NCOLUMNS] = {
	"version:s",
	"wolfssl:s",
	"aesni:s",
	"uptime_s:n",
};

const char *const table_drain_columns[TABLE_DRAIN_NCOLUMNS] = {
	"client_id:s",
	"connected:b",
	"drained:b",
	"streams_active:n",
};

const char *const table_forward_columns[TABLE_FORWARD_NCOLUMNS] = {
	"name:s",     "listen_addr:s",        "group_id:s",          "target:s",
	"protocol:s", "connections_active:n", "connections_total:n", "refused_sources:n",
};

const struct table_command table_commands[TABLE_NCOMMANDS] = {
	[TABLE_CMD_CLIENTS] = { "clients", NULL, "list connected clients, one row each", false,
				false },
	[TABLE_CMD_GROUPS] = { "groups", NULL,
			       "list groups with their clients, tunnels and active streams", false,
			       false },
	[TABLE_CMD_CLIENT] = { "client", "ID", "show one client", true, false },
	[TABLE_CMD_VERSION] = { "version", NULL,
				"show the gateway's version, wolfSSL, AES-NI and uptime", true,
				false },
	[TABLE_CMD_DRAIN] = { "drain", "ID",
			      "send no new streams to a client; its open streams go on", true,
			      true },
	[TABLE_CMD_UNDRAIN] = { "undrain", "ID", "let a drained client take new streams again",
				true, true },
	[TABLE_CMD_STATS] = { "stats", NULL,
			      "show the gateway's global counters (the metrics' totals)", true,
			      false },
	[TABLE_CMD_FORWARDS] = { "forwards", NULL,
				 "list port forwards with their group, target and connections",
				 false, false },
};

/* The writer's first allocation; it doubles from there up to its max. */
#define WRITER_INITIAL_BYTES 4096
/* Digits of UINT64_MAX, the longest value of an n column. */
#define UINT64_MAX_DIGITS 20
#define UINT64_MAX_TEXT "18446744073709551615"
/* The parser's first row capacity; it doubles from there. */
#define PARSER_INITIAL_ROWS 16

/* ---- escapes ------------------------------------------------------------ */

char table_escape_letter(char c)
{
	switch (c) {
	case '\\':
		return '\\';
	case '\t':
		return 't';
	case '\n':
		return 'n';
	case '\r':
		return 'r';
	default:
		return 0;
	}
}

/* The byte an escape letter stands for, or -1 when it is no escape. */
static int unescape_letter(char letter)
{
	switch (letter) {
	case '\\':
		return '\\';
	case 't':
		return '\t';
	case 'n':
		return '\n';
	case 'r':
		return '\r';
	default:
		return -1;
	}
}

static size_t escaped_length(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += table_escape_letter(*s) ? 2 : 1;
	return n;
}

/* Writes s escaped at dst (escaped_length(s) bytes, no NUL); returns the
 * end. */
static char *escape_into(char *dst, const char *s)
{
	for (; *s; s++) {
		char letter = table_escape_letter(*s);

		if (letter) {
			*dst++ = '\\';
			*dst++ = letter;
		} else {
			*dst++ = *s;
		}
	}
	return dst;
}

/*
 * Unescapes src[0 .. len) into dst, which has room for len bytes (a value
 * never grows when unescaped). Returns the length written, or -EPROTO at a
 * bad or unfinished escape.
 */
static ssize_t unescape(const char *src, size_t len, char *dst)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		int c;

		if (src[i] != '\\') {
			dst[n++] = src[i];
			continue;
		}
		if (++i == len)
			return -EPROTO;
		c = unescape_letter(src[i]);
		if (c < 0)
			return -EPROTO;
		dst[n++] = (char)c;
	}
	return (ssize_t)n;
}

/* ---- names, types, numbers ---------------------------------------------- */

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_';
}

/*
 * Checks one header field "name:type" (spec[0 .. len), not NUL-terminated).
 * On success stores the name's length and the type and returns 0.
 */
static int column_spec_parse(const char *spec, size_t len, size_t *name_len, enum table_type *type)
{
	const char *colon = memchr(spec, ':', len);
	size_t i, n;

	if (!colon)
		return -EINVAL;
	n = (size_t)(colon - spec);
	if (n == 0 || n > TABLE_MAX_NAME_LEN || len != n + 2)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!name_char(spec[i]))
			return -EINVAL;
	if (colon[1] != TABLE_STRING && colon[1] != TABLE_UINT && colon[1] != TABLE_BOOL)
		return -EINVAL;
	*name_len = n;
	*type = (enum table_type)colon[1];
	return 0;
}

static bool command_valid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > TABLE_COMMAND_MAX_LEN)
		return false;
	for (i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
		      s[i] == '-'))
			return false;
	return true;
}

/* Canonical unsigned decimal that fits 64 bits: the only n-column form, so
 * JSON output can print it unquoted as a number. */
static bool uint_text_valid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > UINT64_MAX_DIGITS || (s[0] == '0' && len > 1))
		return false;
	for (i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return len < UINT64_MAX_DIGITS || memcmp(s, UINT64_MAX_TEXT, len) <= 0;
}

/* The two b-column forms, so JSON output can print them unquoted. */
static bool bool_text_valid(const char *s, size_t len)
{
	return (len == 4 && !memcmp(s, "true", 4)) || (len == 5 && !memcmp(s, "false", 5));
}

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Writes one line of explanation to err and returns code. */
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* ---- commands ------------------------------------------------------------- */

const struct table_command *table_command_find(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(table_commands); i++)
		if (!strcmp(table_commands[i].name, name))
			return &table_commands[i];
	return NULL;
}

/* ---- request line --------------------------------------------------------- */

int table_request_format(char *buf, size_t size, const char *command, const char *arg)
{
	size_t command_len = strlen(command), need;
	char *p;

	if (!command_valid(command, command_len))
		return -EINVAL;
	need = command_len + (arg ? 1 + escaped_length(arg) : 0) + 1;
	if (need > TABLE_REQUEST_MAX_BYTES || need >= size)
		return -ENOSPC;
	p = buf;
	memcpy(p, command, command_len);
	p += command_len;
	if (arg) {
		*p++ = ' ';
		p = escape_into(p, arg);
	}
	*p++ = '\n';
	*p = '\0';
	return (int)need;
}

int table_request_parse(const char *buf, size_t len, struct table_request *req, char *err,
			size_t errlen)
{
	const char *lf = memchr(buf, '\n', MIN(len, TABLE_REQUEST_MAX_BYTES));
	const char *space;
	size_t line_len, command_len;
	ssize_t arg_len;

	if (!lf) {
		if (len >= TABLE_REQUEST_MAX_BYTES)
			return fail(err, errlen, -EPROTO, "request line longer than %d bytes",
				    TABLE_REQUEST_MAX_BYTES);
		return 0;
	}
	line_len = (size_t)(lf - buf);
	if (memchr(buf, '\0', line_len))
		return fail(err, errlen, -EPROTO, "NUL byte in request");
	space = memchr(buf, ' ', line_len);
	command_len = space ? (size_t)(space - buf) : line_len;
	if (!command_valid(buf, command_len))
		return fail(err, errlen, -EPROTO, "bad command");
	memcpy(req->command, buf, command_len);
	req->command[command_len] = '\0';
	req->has_arg = space != NULL;
	arg_len = 0;
	if (space) {
		arg_len = unescape(space + 1, (size_t)(lf - space - 1), req->arg);
		if (arg_len < 0)
			return fail(err, errlen, -EPROTO, "bad escape in argument");
	}
	req->arg[arg_len] = '\0';
	return (int)(line_len + 1);
}

/* ---- reply writer ----------------------------------------------------------- */

void table_writer_init(struct table_writer *w, size_t max_bytes)
{
	memset(w, 0, sizeof(*w));
	w->max_bytes = max_bytes;
}

void table_writer_free(struct table_writer *w)
{
	free(w->buf);
	table_writer_init(w, w->max_bytes);
}

/* Makes room for more bytes within max_bytes; the invariant len <= max_bytes
 * keeps the subtraction safe. */
static int writer_reserve(struct table_writer *w, size_t more)
{
	size_t need, cap;
	char *buf;

	if (more > w->max_bytes - w->len)
		return -ENOSPC;
	need = w->len + more;
	if (need <= w->cap)
		return 0;
	cap = w->cap ? w->cap : MIN((size_t)WRITER_INITIAL_BYTES, w->max_bytes);
	while (cap < need)
		cap = cap > w->max_bytes / 2 ? w->max_bytes : cap * 2;
	buf = realloc(w->buf, cap);
	if (!buf)
		return -ENOMEM;
	w->buf = buf;
	w->cap = cap;
	return 0;
}

static void writer_put(struct table_writer *w, const char *s, size_t n)
{
	memcpy(w->buf + w->len, s, n);
	w->len += n;
}

int table_write_header(struct table_writer *w, const char *const cols[], size_t ncols)
{
	size_t name_len[TABLE_MAX_COLUMNS];
	enum table_type type[TABLE_MAX_COLUMNS];
	size_t i, j, need = sizeof("OK\n") - 1;
	int ret;

	if (w->len || ncols == 0 || ncols > TABLE_MAX_COLUMNS)
		return -EINVAL;
	for (i = 0; i < ncols; i++) {
		if (column_spec_parse(cols[i], strlen(cols[i]), &name_len[i], &type[i]))
			return -EINVAL;
		for (j = 0; j < i; j++)
			if (name_len[j] == name_len[i] && !memcmp(cols[j], cols[i], name_len[i]))
				return -EINVAL;
		need += strlen(cols[i]) + 1; /* TAB or the final LF */
	}
	ret = writer_reserve(w, need);
	if (ret)
		return ret;
	writer_put(w, "OK\n", 3);
	for (i = 0; i < ncols; i++) {
		writer_put(w, cols[i], strlen(cols[i]));
		writer_put(w, i + 1 < ncols ? "\t" : "\n", 1);
		w->types[i] = (char)type[i];
	}
	w->ncols = ncols;
	return 0;
}

int table_write_row_begin(struct table_writer *w)
{
	if (!w->ncols || w->in_row)
		return -EINVAL;
	w->in_row = true;
	w->col = 0;
	return 0;
}

/* Reserves room for the next value of a column of this type and writes the
 * TAB before it; the caller then writes `bytes` bytes and counts the column. */
static int writer_begin_value(struct table_writer *w, enum table_type type, size_t bytes)
{
	int ret;

	if (!w->in_row || w->col >= w->ncols || w->types[w->col] != (char)type)
		return -EINVAL;
	ret = writer_reserve(w, bytes + (w->col ? 1 : 0));
	if (ret)
		return ret;
	if (w->col)
		writer_put(w, "\t", 1);
	w->col++;
	return 0;
}

int table_write_str(struct table_writer *w, const char *value)
{
	int ret = writer_begin_value(w, TABLE_STRING, escaped_length(value));

	if (ret)
		return ret;
	w->len = (size_t)(escape_into(w->buf + w->len, value) - w->buf);
	return 0;
}

int table_write_uint(struct table_writer *w, uint64_t value)
{
	char text[UINT64_MAX_DIGITS + 1];
	int n = snprintf(text, sizeof(text), "%" PRIu64, value);
	int ret = writer_begin_value(w, TABLE_UINT, (size_t)n);

	if (ret)
		return ret;
	writer_put(w, text, (size_t)n);
	return 0;
}

int table_write_bool(struct table_writer *w, bool value)
{
	const char *text = value ? "true" : "false";
	int ret = writer_begin_value(w, TABLE_BOOL, strlen(text));

	if (ret)
		return ret;
	writer_put(w, text, strlen(text));
	return 0;
}

int table_write_row_end(struct table_writer *w)
{
	int ret;

	if (!w->in_row || w->col != w->ncols)
		return -EINVAL;
	ret = writer_reserve(w, 1);
	if (ret)
		return ret;
	writer_put(w, "\n", 1);
	w->in_row = false;
	return 0;
}

int table_write_error(struct table_writer *w, const char *message)
{
	size_t message_len = escaped_length(message);
	int ret;

	w->len = 0;
	w->ncols = 0;
	w->in_row = false;
	ret = writer_reserve(w, sizeof("ERR\n") - 1 + (message_len ? 1 + message_len : 0));
	if (ret)
		return ret;
	writer_put(w, "ERR", 3);
	if (message_len) {
		writer_put(w, " ", 1);
		w->len = (size_t)(escape_into(w->buf + w->len, message) - w->buf);
	}
	writer_put(w, "\n", 1);
	return 0;
}

/* ---- reply parser ----------------------------------------------------------- */

/* Where the parser is: the next unread byte and the line it starts. */
struct parse_cursor {
	const char *pos;
	const char *end;
	size_t line_no;
};

/* Returns the next line (without its LF) and steps past it. The caller has
 * checked that the buffer ends with LF, so every line has one. */
static const char *next_line(struct parse_cursor *c, size_t *len)
{
	const char *line = c->pos;
	const char *lf = memchr(line, '\n', (size_t)(c->end - line));

	*len = (size_t)(lf - line);
	c->pos = lf + 1;
	c->line_no++;
	return line;
}

static size_t count_fields(const char *line, size_t len)
{
	size_t n = 1;
	const char *tab;

	while ((tab = memchr(line, '\t', len))) {
		len -= (size_t)(tab + 1 - line);
		line = tab + 1;
		n++;
	}
	return n;
}

/* Length of the field starting at line (up to the next TAB or len). */
static size_t field_length(const char *line, size_t len)
{
	const char *tab = memchr(line, '\t', len);

	return tab ? (size_t)(tab - line) : len;
}

static int parse_error_reply(const char *line, size_t len, bool last, char *storage, char *err,
			     size_t errlen)
{
	ssize_t n = 0;

	if (len > 3) {
		n = unescape(line + 4, len - 4, storage);
		if (n < 0)
			return fail(err, errlen, -EPROTO, "line 1: bad escape in the ERR message");
	}
	if (!last)
		return fail(err, errlen, -EPROTO, "line 2: data after ERR");
	storage[n] = '\0';
	return fail(err, errlen, -EREMOTEIO, "%s",
		    n ? storage : "the gateway reported an unspecified error");
}

static int parse_header(struct parse_cursor *c, struct table *t, char **storage, char *err,
			size_t errlen)
{
	size_t len, i, j, name_len;
	const char *line;

	if (c->pos == c->end)
		return fail(err, errlen, -EPROTO, "line 2: missing header line");
	line = next_line(c, &len);
	t->ncols = count_fields(line, len);
	if (t->ncols > TABLE_MAX_COLUMNS)
		return fail(err, errlen, -EPROTO, "line 2: %zu columns, at most %d allowed",
			    t->ncols, TABLE_MAX_COLUMNS);
	t->cols = calloc(t->ncols, sizeof(*t->cols));
	if (!t->cols)
		return -ENOMEM;
	for (i = 0; i < t->ncols; i++) {
		size_t field_len = field_length(line, len);

		if (column_spec_parse(line, field_len, &name_len, &t->cols[i].type))
			return fail(err, errlen, -EPROTO,
				    "line 2, column %zu: expected name:s, name:n "
				    "or name:b with a name of [A-Za-z0-9_]",
				    i + 1);
		memcpy(*storage, line, name_len);
		(*storage)[name_len] = '\0';
		t->cols[i].name = *storage;
		*storage += name_len + 1;
		for (j = 0; j < i; j++)
			if (!strcmp(t->cols[j].name, t->cols[i].name))
				return fail(err, errlen, -EPROTO, "line 2: column %s appears twice",
					    t->cols[i].name);
		line += field_len + 1;
		len -= MIN(len, field_len + 1);
	}
	return 0;
}

/* Makes room for one more row in t->cells. */
static int grow_rows(struct table *t, size_t *cap_rows)
{
	size_t cap = *cap_rows ? *cap_rows * 2 : PARSER_INITIAL_ROWS;
	const char **cells;

	if (t->nrows < *cap_rows)
		return 0;
	if (cap > SIZE_MAX / sizeof(*cells) / t->ncols)
		return -ENOMEM;
	cells = realloc(t->cells, cap * t->ncols * sizeof(*cells));
	if (!cells)
		return -ENOMEM;
	t->cells = cells;
	*cap_rows = cap;
	return 0;
}

static int parse_row(struct parse_cursor *c, struct table *t, char **storage, char *err,
		     size_t errlen)
{
	const char **cells = t->cells + t->nrows * t->ncols;
	size_t len, i, nfields;
	const char *line = next_line(c, &len);

	nfields = count_fields(line, len);
	if (nfields != t->ncols)
		return fail(err, errlen, -EPROTO, "line %zu: %zu fields, the header has %zu",
			    c->line_no, nfields, t->ncols);
	for (i = 0; i < t->ncols; i++) {
		size_t field_len = field_length(line, len);
		ssize_t n = unescape(line, field_len, *storage);

		if (n < 0)
			return fail(err, errlen, -EPROTO, "line %zu, column %s: bad escape",
				    c->line_no, t->cols[i].name);
		if (t->cols[i].type == TABLE_UINT && !uint_text_valid(*storage, (size_t)n))
			return fail(err, errlen, -EPROTO,
				    "line %zu, column %s: not an unsigned "
				    "64-bit decimal number",
				    c->line_no, t->cols[i].name);
		if (t->cols[i].type == TABLE_BOOL && !bool_text_valid(*storage, (size_t)n))
			return fail(err, errlen, -EPROTO, "line %zu, column %s: not true or false",
				    c->line_no, t->cols[i].name);
		(*storage)[n] = '\0';
		cells[i] = *storage;
		*storage += n + 1;
		line += field_len + 1;
		len -= MIN(len, field_len + 1);
	}
	t->nrows++;
	return 0;
}

/*
 * Storage needs at most len bytes: every name and value shrinks or keeps its
 * length when unescaped, and its NUL takes the place of the TAB or LF that
 * followed it on the wire.
 */
int table_parse(const char *buf, size_t len, struct table *t, char *err, size_t errlen)
{
	struct parse_cursor c = { .pos = buf, .end = buf + len };
	size_t first_len, cap_rows = 0;
	const char *first;
	char *storage;
	int ret;

	memset(t, 0, sizeof(*t));
	if (len == 0)
		return fail(err, errlen, -EPROTO,
			    "empty reply (the gateway closed without answering)");
	if (buf[len - 1] != '\n')
		return fail(err, errlen, -EPROTO,
			    "reply truncated: its last line has no line feed");
	if (memchr(buf, '\0', len))
		return fail(err, errlen, -EPROTO, "NUL byte in reply");
	t->storage = malloc(len);
	if (!t->storage)
		return -ENOMEM;
	storage = t->storage;
	first = next_line(&c, &first_len);
	if (first_len >= 3 && !memcmp(first, "ERR", 3) && (first_len == 3 || first[3] == ' ')) {
		ret = parse_error_reply(first, first_len, c.pos == c.end, storage, err, errlen);
		goto out_free;
	}
	if (first_len != 2 || memcmp(first, "OK", 2)) {
		ret = fail(err, errlen, -EPROTO, "line 1: expected OK or ERR");
		goto out_free;
	}
	ret = parse_header(&c, t, &storage, err, errlen);
	while (!ret && c.pos < c.end) {
		ret = grow_rows(t, &cap_rows);
		if (!ret)
			ret = parse_row(&c, t, &storage, err, errlen);
	}
	if (!ret)
		return 0;
out_free:
	table_free(t);
	return ret;
}

void table_free(struct table *t)
{
	free(t->cols);
	free(t->cells);
	free(t->storage);
	memset(t, 0, sizeof(*t));
}
