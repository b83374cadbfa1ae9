/*
 * table.h — the control protocol between apctl and the gateway: its command
 * table and a pure codec (no I/O) for the request line and the tabular
 * reply. Both ends use it: the gateway's control_server.c answers, apctl
 * asks (and prints a reply with tools/apctl/print.h). The usage page is
 * docs/apctl.md.
 *
 * Wire protocol, over the gateway's Unix stream socket ([control] socket,
 * default TABLE_DEFAULT_SOCKET):
 *
 *   request   COMMAND [SP ARG] LF          one line, then the client only reads
 *   reply     "OK" LF header LF *(row LF)  or   "ERR" [SP message] LF
 *             then the gateway closes: the reply ends at EOF.
 *
 *   header    name ":" type *(TAB name ":" type)
 *             name  [A-Za-z0-9_]{1,TABLE_MAX_NAME_LEN}, unique in the header
 *             type  "s" (string), "n" (unsigned 64-bit decimal, no sign,
 *                   no leading zero) or "b" (boolean: "true" or "false")
 *   row       value *(TAB value), exactly one value per header column
 *
 * Values, the ERR message and ARG are escaped so that a line is always one
 * record: backslash -> "\\", TAB -> "\t", LF -> "\n", CR -> "\r". No other
 * escape exists; every other byte except NUL travels as itself (values may be
 * any bytes, not necessarily UTF-8). COMMAND is [a-z0-9_-]+; ARG is the rest
 * of the line after the first space.
 *
 * Commands (table_commands, with their help text) and their columns (the
 * column lists below are the single source):
 *   clients      one row per connected client        table_client_columns
 *   groups       one row per group                   table_group_columns
 *   client ID    exactly one row, or "ERR no such client: ID"
 *                                                    table_client_columns
 *   version      one row                             table_version_columns
 *   stats        one row of global counters; its columns are the gateway's
 *                (src/gateway/stats.c), all of type n
 *
 *   drain ID     mark a client drained: no new streams, open ones go on;
 *                exactly one row, or "ERR no such client: ID"
 *                                                    table_drain_columns
 *   undrain ID   clear the mark; the same reply       table_drain_columns
 *   forwards     one row per [forward.NAME] section   table_forward_columns
 *
 * Commands with `changes_state` (drain, undrain) are answered only for a
 * privileged peer; the gateway replies "ERR permission denied: ..." to
 * anyone else (docs/apctl.md "Permissions").
 *
 * Error convention (common.h): 0 or a positive count, or -errno.
 */
#ifndef ANYPROXY_TABLE_H
#define ANYPROXY_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "anyproxy/common.h"

#define TABLE_DEFAULT_SOCKET "/run/anyproxy/gateway.sock"

/* The largest reply apctl accepts; the gateway gives its writer this max. */
#define TABLE_REPLY_MAX_BYTES ((size_t)64 << 20)
#define TABLE_MAX_COLUMNS 32
#define TABLE_MAX_NAME_LEN 32
/* One request line, LF included; bounds the gateway's request buffer. */
#define TABLE_REQUEST_MAX_BYTES 512
#define TABLE_COMMAND_MAX_LEN 32

enum table_type {
	TABLE_STRING = 's',
	TABLE_UINT = 'n',
	TABLE_BOOL = 'b',
};

#define TABLE_CLIENT_NCOLUMNS 11
#define TABLE_GROUP_NCOLUMNS 5
#define TABLE_VERSION_NCOLUMNS 4
#define TABLE_DRAIN_NCOLUMNS 4
#define TABLE_FORWARD_NCOLUMNS 8
/* "name:type" strings, ready for table_write_header(). */
extern const char *const table_client_columns[TABLE_CLIENT_NCOLUMNS];
extern const char *const table_group_columns[TABLE_GROUP_NCOLUMNS];
extern const char *const table_version_columns[TABLE_VERSION_NCOLUMNS];
extern const char *const table_drain_columns[TABLE_DRAIN_NCOLUMNS];
extern const char *const table_forward_columns[TABLE_FORWARD_NCOLUMNS];

/* ---- commands ------------------------------------------------------------ */

/* Every command of the protocol: table_commands is indexed by these. */
enum table_command_id {
	TABLE_CMD_CLIENTS,
	TABLE_CMD_GROUPS,
	TABLE_CMD_CLIENT,
	TABLE_CMD_VERSION,
	TABLE_CMD_DRAIN,
	TABLE_CMD_UNDRAIN,
	TABLE_CMD_STATS,
	TABLE_CMD_FORWARDS,
	TABLE_NCOMMANDS
};

struct table_command {
	const char *name;   /* COMMAND on the wire */
	const char *arg;    /* the argument's name ("ID"); NULL: takes none */
	const char *help;   /* one line for apctl --help */
	bool one_row;       /* an OK reply has exactly one row */
	bool changes_state; /* only privileged peers may send it */
};

/* The one command table: the gateway answers these, apctl offers them. */
extern const struct table_command table_commands[TABLE_NCOMMANDS];

/* The command called name (NUL-terminated), or NULL. */
const struct table_command *table_command_find(const char *name);

/* ---- request line ------------------------------------------------------ */

struct table_request {
	char command[TABLE_COMMAND_MAX_LEN + 1];
	char arg[TABLE_REQUEST_MAX_BYTES]; /* unescaped; "" when absent */
	bool has_arg;
};

/*
 * Format the request line "COMMAND[ SP escaped-ARG] LF" into buf (NUL-
 * terminated). arg may be NULL. Returns the line length, -EINVAL for a bad
 * command, or -ENOSPC when it does not fit size or TABLE_REQUEST_MAX_BYTES.
 */
int table_request_format(char *buf, size_t size, const char *command, const char *arg);

/*
 * Parse one request line from the first len bytes of buf. Returns the bytes
 * consumed (LF included), 0 when no LF has arrived yet and more may come, or
 * -EPROTO with a reason in err (line longer than TABLE_REQUEST_MAX_BYTES,
 * bad command, bad escape, NUL byte). Never allocates.
 */
int table_request_parse(const char *buf, size_t len, struct table_request *req, char *err,
			size_t errlen);

/* ---- reply writer (gateway side) --------------------------------------- */

/*
 * A growable reply buffer that never grows past max_bytes. Use:
 *
 *   table_writer_init(&w, TABLE_REPLY_MAX_BYTES);
 *   table_write_header(&w, table_group_columns, TABLE_GROUP_NCOLUMNS);
 *   for each group:
 *     table_write_row_begin(&w);
 *     table_write_str(&w, id); table_write_uint(&w, clients); ...
 *     table_write_row_end(&w);
 *   on any error: table_write_error(&w, "reply too large") (or another text)
 *   send w.buf[0 .. w.len), close, table_writer_free(&w).
 *
 * Each call either appends its whole piece or appends nothing. Misuse (a call
 * out of order, a value of the wrong type for its column, a row with too few
 * values) returns -EINVAL; the buffer limit returns -ENOSPC; allocation
 * failure -ENOMEM. After an error the reply is incomplete: replace it with
 * table_write_error(). The writer owns buf until table_writer_free().
 */
struct table_writer {
	char *buf;
	size_t len;
	size_t cap;
	size_t max_bytes;
	size_t ncols;                  /* 0 until the header is written */
	char types[TABLE_MAX_COLUMNS]; /* enum table_type per column */
	size_t col;                    /* next value's column in a row */
	bool in_row;
};

void table_writer_init(struct table_writer *w, size_t max_bytes);
void table_writer_free(struct table_writer *w);

/* Writes "OK" LF and the header line. cols are "name:type" strings; the
 * writer must be empty. */
int table_write_header(struct table_writer *w, const char *const cols[], size_t ncols);
int table_write_row_begin(struct table_writer *w);
/* One value of a TABLE_STRING column, escaped on the way. */
int table_write_str(struct table_writer *w, const char *value);
/* One value of a TABLE_UINT column. */
int table_write_uint(struct table_writer *w, uint64_t value);
/* One value of a TABLE_BOOL column. */
int table_write_bool(struct table_writer *w, bool value);
/* Fails with -EINVAL unless the row has exactly one value per column. */
int table_write_row_end(struct table_writer *w);
/* Discards whatever was written and writes "ERR <escaped message>" LF. */
int table_write_error(struct table_writer *w, const char *message);

/* ---- reply parser (apctl side) ----------------------------------------- */

struct table_column {
	const char *name;
	enum table_type type;
};

/*
 * A parsed OK reply. Every string is unescaped, NUL-terminated and points
 * into storage; a TABLE_UINT value is its canonical decimal text, a
 * TABLE_BOOL value "true" or "false". Memory is
 * a small multiple of the reply's size: its text plus a pointer per value.
 */
struct table {
	size_t ncols;
	size_t nrows;
	struct table_column *cols;
	const char **cells; /* row-major: cells[row * ncols + col] */
	char *storage;
};

static inline const char *table_cell(const struct table *t, size_t row, size_t col)
{
	return t->cells[row * t->ncols + col];
}

/*
 * Parse a whole reply, buf[0 .. len) up to EOF. Returns 0 for an OK reply
 * (t filled; release with table_free()), -EREMOTEIO for an ERR reply (err
 * holds the gateway's unescaped message), -EPROTO for a malformed reply (err
 * says which line and why: no LF at the end, missing header, unknown type,
 * wrong field count, bad escape, non-numeric value in an n column, a b
 * value other than true or false, NUL
 * byte), -ENOMEM. On any failure t is left empty and needs no table_free().
 */
int table_parse(const char *buf, size_t len, struct table *t, char *err, size_t errlen);
void table_free(struct table *t);

/* The letter of c's two-byte wire escape ("\\", "\t", "\n", "\r"), or 0
 * when c travels as itself. (apctl's human output shows these bytes the
 * same way.) */
char table_escape_letter(char c);

#endif
