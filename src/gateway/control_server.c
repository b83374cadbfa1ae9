/*
 * control_server.c — the gateway side of apctl's Unix socket: read one
 * request line, answer with a table (table.h), close. Each connection has
 * one operation in flight at a time and a deadline, so a stuck apctl costs
 * one small object for at most CONTROL_DEADLINE_MS.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ap-build.h"
#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/table.h"
#include "anyproxy/tls.h"
#include "gateway.h"

#define CONTROL_DEADLINE_MS 5000

struct control_conn {
	struct gateway *gw;
	int fd;
	bool closing;
	struct ring_op op;
	struct timer deadline;
	char request[TABLE_REQUEST_MAX_BYTES];
	size_t request_len;
	struct table_writer reply;
	size_t sent;
};

static void control_free(struct control_conn *c)
{
	timer_disarm(&c->gw->ring, &c->deadline);
	close(c->fd);
	table_writer_free(&c->reply);
	free(c);
}

static void format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int write_client_row(struct table_writer *w, const struct reg_client *c)
{
	char since[32];
	int ret = 0;

	format_time(c->connected_since, since, sizeof(since));
	ret |= table_write_row_begin(w);
	ret |= table_write_str(w, c->id);
	ret |= table_write_str(w, c->group->id);
	ret |= table_write_uint(w, c->ntunnels);
	ret |= table_write_str(w, c->remote_addr);
	ret |= table_write_str(w, since);
	ret |= table_write_uint(w, c->streams_active);
	ret |= table_write_uint(w, c->streams_total);
	ret |= table_write_uint(w, c->bytes_in);
	ret |= table_write_uint(w, c->bytes_out);
	ret |= table_write_row_end(w);
	return ret ? -ENOSPC : 0;
}

static int answer_clients(struct gateway *gw, struct table_writer *w, const char *arg)
{
	struct reg_client **list;
	size_t n, i;
	int ret = registry_list_clients(&gw->registry, &list, &n);

	if (ret < 0)
		return ret;
	ret = table_write_header(w, table_client_columns, TABLE_CLIENT_NCOLUMNS);
	for (i = 0; i < n && ret == 0; i++)
		ret = write_client_row(w, list[i]);
	free(list);
	return ret;
}

static int answer_client(struct gateway *gw, struct table_writer *w, const char *id)
{
	struct reg_client *c = registry_find_client(&gw->registry, id);
	char msg[TABLE_REQUEST_MAX_BYTES + 32];
	int ret;

	if (!c) {
		snprintf(msg, sizeof(msg), "no such client: %s", id);
		return table_write_error(w, msg);
	}
	ret = table_write_header(w, table_client_columns, TABLE_CLIENT_NCOLUMNS);
	return ret ? ret : write_client_row(w, c);
}

static int answer_groups(struct gateway *gw, struct table_writer *w, const char *arg)
{
	struct reg_group **list;
	size_t n, i;
	int ret = registry_list_groups(&gw->registry, &list, &n);

	if (ret < 0)
		return ret;
	ret = table_write_header(w, table_group_columns, TABLE_GROUP_NCOLUMNS);
	for (i = 0; i < n && ret == 0; i++) {
		ret |= table_write_row_begin(w);
		ret |= table_write_str(w, list[i]->id);
		ret |= table_write_uint(w, list[i]->nclients);
		ret |= table_write_uint(w, registry_group_tunnels(list[i]));
		ret |= table_write_uint(w, registry_group_streams_active(list[i]));
		ret |= table_write_row_end(w);
	}
	free(list);
	return ret ? -ENOSPC : 0;
}

static int answer_version(struct gateway *gw, struct table_writer *w, const char *arg)
{
	int ret = table_write_header(w, table_version_columns, TABLE_VERSION_NCOLUMNS);

	ret |= table_write_row_begin(w);
	ret |= table_write_str(w, AP_VERSION);
	ret |= table_write_str(w, tls_library_version());
	ret |= table_write_str(w, AP_WOLFSSL_AESNI ? "on" : "off");
	ret |= table_write_uint(w, (uint64_t)(time(NULL) - gw->started));
	ret |= table_write_row_end(w);
	return ret ? -ENOSPC : 0;
}

static int answer_stats(struct gateway *gw, struct table_writer *w, const char *arg)
{
	return gw_stats_write_table(gw, w);
}

/* How the gateway answers each command of the protocol's table (table.h);
 * the names, arguments and help live there, once. */
static int (*const answers[TABLE_NCOMMANDS])(struct gateway *gw, struct table_writer *w,
					       const char *arg) = {
	[TABLE_CMD_CLIENTS] = answer_clients,
	[TABLE_CMD_GROUPS] = answer_groups,
	[TABLE_CMD_CLIENT] = answer_client,
	[TABLE_CMD_VERSION] = answer_version,
	[TABLE_CMD_STATS] = answer_stats,
};

static int dispatch(struct gateway *gw, struct table_writer *w, const struct table_request *req)
{
	const struct table_command *cmd = table_command_find(req->command);

	if (!cmd)
		return table_write_error(w, "unknown command");
	if ((cmd->arg != NULL) != req->has_arg)
		return table_write_error(w, cmd->arg ? "this command needs an argument"
						     : "this command takes no argument");
	return answers[cmd - table_commands](gw, w, req->arg);
}

static void control_send_more(struct control_conn *c);

static void send_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct control_conn *c = container_of(op, struct control_conn, op);

	if (res <= 0 || c->closing) {
		control_free(c);
		return;
	}
	c->sent += (size_t)res;
	if (c->sent >= c->reply.len) {
		control_free(c);
		return;
	}
	control_send_more(c);
}

static void control_send_more(struct control_conn *c)
{
	c->op.cb = send_done;
	ring_prep_send(&c->gw->ring, &c->op, c->fd, c->reply.buf + c->sent, c->reply.len - c->sent);
}

static void recv_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct control_conn *c = container_of(op, struct control_conn, op);
	struct table_request req;
	char err[128];
	int n;

	if (res <= 0 || c->closing) {
		control_free(c);
		return;
	}
	c->request_len += (size_t)res;
	n = table_request_parse(c->request, c->request_len, &req, err, sizeof(err));
	if (n == 0 && c->request_len < sizeof(c->request)) {
		ring_prep_recv(r, &c->op, c->fd, c->request + c->request_len,
			       sizeof(c->request) - c->request_len);
		return;
	}
	if (n <= 0) {
		table_write_error(&c->reply, n == 0 ? "request line too long" : err);
	} else {
		log_debug("Control request", LF_S("command", req.command));
		if (dispatch(c->gw, &c->reply, &req) < 0)
			table_write_error(&c->reply, "reply too large or out of memory");
	}
	control_send_more(c);
}

static void control_deadline(struct ring *r, struct timer *t)
{
	struct control_conn *c = container_of(t, struct control_conn, deadline);

	/* the operation in flight completes with an error and frees c */
	c->closing = true;
	shutdown(c->fd, SHUT_RDWR);
	ring_cancel_fd(r, c->fd);
}

void control_accept(struct listener *l, int fd)
{
	struct gateway *gw = l->owner;
	struct control_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return;
	}
	c->gw = gw;
	c->fd = fd;
	table_writer_init(&c->reply, TABLE_REPLY_MAX_BYTES);
	timer_init(&c->deadline, control_deadline);
	timer_arm(&gw->ring, &c->deadline, CONTROL_DEADLINE_MS);
	c->op.cb = recv_done;
	ring_prep_recv(&gw->ring, &c->op, fd, c->request, sizeof(c->request));
}
