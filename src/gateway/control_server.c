/*
 * control_server.c — the gateway side of apctl's Unix socket: read one
 * request line, answer with a table (table.h), close. Each connection has
 * one operation in flight at a time and a deadline, so a stuck apctl costs
 * one small object for at most CONTROL_DEADLINE_MS.
 *
 * Permissions (docs/apctl.md "Permissions"): the socket file's mode and
 * group ([control] socket_mode, socket_group) decide who may connect, and
 * every connected peer may run the read-only commands. A command that
 * changes state (table_command.changes_state) is answered only when the
 * peer (SO_PEERCRED, SO_PEERGROUPS) is root, the gateway's own user, or a
 * member of the socket's group.
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ap-build.h"
#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/net.h"
#include "anyproxy/table.h"
#include "anyproxy/tls.h"
#include "forward.h"
#include "gateway.h"
#include "proxy.h"

#define CONTROL_DEADLINE_MS 5000
#define CONTROL_LISTEN_BACKLOG 64
/* Supplementary groups read at once with SO_PEERGROUPS; a peer in more is
 * read again into a buffer of its size. */
#define CONTROL_PEER_GROUPS_INLINE 64
/* getgrnam_r's buffer at start-up; it doubles up to the max. */
#define CONTROL_GROUP_BUF_BYTES 1024
#define CONTROL_GROUP_BUF_MAX_BYTES (1024 * 1024)

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
	timer_disarm(&gw_main(c->gw)->ring, &c->deadline);
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

static int write_client_row(struct table_writer *w, const struct reg_client_row *c)
{
	char since[32];
	int ret = 0;

	format_time(c->connected_since, since, sizeof(since));
	ret |= table_write_row_begin(w);
	ret |= table_write_str(w, c->id);
	ret |= table_write_str(w, c->group);
	ret |= table_write_uint(w, c->tunnels);
	ret |= table_write_str(w, c->remote_addr);
	ret |= table_write_str(w, since);
	ret |= table_write_uint(w, c->streams_active);
	ret |= table_write_uint(w, c->streams_total);
	ret |= table_write_uint(w, c->bytes_in);
	ret |= table_write_uint(w, c->bytes_out);
	ret |= table_write_bool(w, c->drained);
	ret |= table_write_str(w, c->suspect_replicas ? c->suspect_replicas : "");
	ret |= table_write_row_end(w);
	return ret ? -ENOSPC : 0;
}

/* Every client's row, or only that client's: from a copy (stats.h
 * gw_snapshot), written without gateway.lock. */
static int write_clients(struct gateway *gw, struct table_writer *w, const char *only)
{
	char msg[TABLE_REQUEST_MAX_BYTES + 32];
	struct gw_snapshot s;
	size_t i;
	int ret = gw_snapshot_take(gw, &s, GW_SNAP_CLIENTS, only);

	if (ret < 0)
		return ret;
	if (only && !s.nclients) {
		snprintf(msg, sizeof(msg), "no such client: %s", only);
		ret = table_write_error(w, msg);
	} else {
		ret = table_write_header(w, table_client_columns, TABLE_CLIENT_NCOLUMNS);
	}
	for (i = 0; i < s.nclients && ret == 0; i++)
		ret = write_client_row(w, &s.clients[i]);
	gw_snapshot_free(&s);
	return ret;
}

static int answer_clients(struct gateway *gw, struct table_writer *w, const char *arg)
{
	return write_clients(gw, w, NULL);
}

static int answer_client(struct gateway *gw, struct table_writer *w, const char *id)
{
	return write_clients(gw, w, id);
}

static int answer_groups(struct gateway *gw, struct table_writer *w, const char *arg)
{
	struct gw_snapshot s;
	size_t i;
	int ret = gw_snapshot_take(gw, &s, GW_SNAP_GROUPS, NULL);

	if (ret < 0)
		return ret;
	ret = table_write_header(w, table_group_columns, TABLE_GROUP_NCOLUMNS);
	for (i = 0; i < s.ngroups && ret == 0; i++) {
		const struct reg_group_row *g = &s.groups[i];

		ret |= table_write_row_begin(w);
		ret |= table_write_str(w, g->id);
		ret |= table_write_uint(w, g->clients);
		ret |= table_write_uint(w, g->tunnels);
		ret |= table_write_uint(w, g->streams_active);
		ret |= table_write_uint(w, g->drained);
		ret |= table_write_row_end(w);
	}
	gw_snapshot_free(&s);
	return ret ? -ENOSPC : 0;
}

static int answer_forwards(struct gateway *gw, struct table_writer *w, const char *arg)
{
	char addr[300];
	int ret = table_write_header(w, table_forward_columns, TABLE_FORWARD_NCOLUMNS);

	gw_lock(gw); /* the workers count into the forwards; one per [forward.NAME] */
	for (size_t i = 0; i < gw->nforwards && ret == 0; i++) {
		const struct gw_forward *fw = &gw->forwards[i];

		ret |= table_write_row_begin(w);
		ret |= table_write_str(w, fw->cfg->name);
		config_addr_format(&fw->cfg->listen_addr, addr, sizeof(addr));
		ret |= table_write_str(w, addr);
		ret |= table_write_str(w, fw->cfg->group);
		config_addr_format(&fw->cfg->target, addr, sizeof(addr));
		ret |= table_write_str(w, addr);
		ret |= table_write_str(w, fw->cfg->protocol == CONFIG_FORWARD_UDP ? "udp" : "tcp");
		ret |= table_write_uint(w, GW_READ(&fw->active));
		ret |= table_write_uint(w, fw->total);
		ret |= table_write_uint(w, fw->refused);
		ret |= table_write_row_end(w);
	}
	gw_unlock(gw);
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

/* drain and undrain: mark or clear, log who asked, reply with the state. */
static int answer_set_drained(struct gateway *gw, struct table_writer *w, const char *id,
			      bool drain, const struct ucred *peer)
{
	char msg[TABLE_REQUEST_MAX_BYTES + 32];
	struct reg_client *c;
	int ret;

	gw_lock(gw);
	ret = registry_set_drained(&gw->registry, id, drain);
	if (ret < 0)
		gw_unlock(gw);
	if (ret == -ENOENT) {
		snprintf(msg, sizeof(msg), "no such client: %s", id);
		return table_write_error(w, msg);
	}
	if (ret < 0)
		return table_write_error(w, "out of memory");
	c = registry_find_client(&gw->registry, id);
	if (drain && c) {
		/* every worker lets go of the agent's idle streams */
		__atomic_fetch_add(&gw->release_gen, 1, __ATOMIC_RELAXED);
		wg_wake_all_but(&gw->workgroup, WG_NONE);
	}
	log_info(drain ? "Client drained: no new streams" : "Client undrained",
		 LF_S("client_id", id), LF_S("group_id", c ? c->group->id : ""),
		 LF_S("connected", c ? "yes" : "no"),
		 LF_U("streams_active", c ? c->streams_active : 0), LF_I("peer_uid", peer->uid),
		 LF_I("peer_pid", peer->pid));
	ret = table_write_header(w, table_drain_columns, TABLE_DRAIN_NCOLUMNS);
	ret |= table_write_row_begin(w);
	ret |= table_write_str(w, id);
	ret |= table_write_bool(w, c != NULL);
	ret |= table_write_bool(w, drain);
	ret |= table_write_uint(w, c ? c->streams_active : 0);
	ret |= table_write_row_end(w);
	gw_unlock(gw);
	return ret ? -ENOSPC : 0;
}

static int answer_stats(struct gateway *gw, struct table_writer *w, const char *arg)
{
	return gw_stats_write_table(gw, w);
}

/* How the gateway answers each read-only command of the protocol's table
 * (table.h); the names, arguments and help live there, once. */
static int (*const answers[TABLE_NCOMMANDS])(struct gateway *gw, struct table_writer *w,
					     const char *arg) = {
	[TABLE_CMD_CLIENTS] = answer_clients, [TABLE_CMD_GROUPS] = answer_groups,
	[TABLE_CMD_CLIENT] = answer_client,   [TABLE_CMD_VERSION] = answer_version,
	[TABLE_CMD_STATS] = answer_stats,     [TABLE_CMD_FORWARDS] = answer_forwards,
};

/* Is gid among the peer's supplementary groups? Errors count as no. */
static bool peer_in_group(int fd, gid_t gid)
{
	gid_t inline_groups[CONTROL_PEER_GROUPS_INLINE], *groups = inline_groups;
	socklen_t len = sizeof(inline_groups);
	bool found = false;
	size_t i;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
		if (errno != ERANGE || !(groups = malloc(len)))
			return false;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
			len = 0;
	}
	for (i = 0; i < len / sizeof(gid_t) && !found; i++)
		found = groups[i] == gid;
	if (groups != inline_groups)
		free(groups);
	return found;
}

/* May this peer change the gateway's state? Root, the gateway's own user,
 * and members of the socket's group (primary or supplementary) may. */
static bool peer_may_change_state(const struct gateway *gw, int fd, const struct ucred *peer)
{
	return peer->uid == 0 || peer->uid == geteuid() || peer->gid == gw->control_gid ||
	       peer_in_group(fd, gw->control_gid);
}

static int dispatch(struct gateway *gw, int fd, struct table_writer *w,
		    const struct table_request *req)
{
	const struct table_command *cmd = table_command_find(req->command);
	struct ucred peer;
	socklen_t len = sizeof(peer);
	bool allowed;

	if (!cmd)
		return table_write_error(w, "unknown command");
	if ((cmd->arg != NULL) != req->has_arg)
		return table_write_error(w, cmd->arg ? "this command needs an argument"
						     : "this command takes no argument");
	/* each answer takes gateway.lock for what it reads of the workers' */
	if (!cmd->changes_state)
		return answers[cmd - table_commands](gw, w, req->arg);
	/* a peer whose credentials cannot be read may not */
	allowed = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0;
	if (!allowed)
		peer = (struct ucred){ .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	else
		allowed = peer_may_change_state(gw, fd, &peer);
	if (!allowed) {
		log_warn("Control command refused: peer may not change state",
			 LF_S("command", cmd->name), LF_I("peer_uid", (long long)peer.uid),
			 LF_I("peer_pid", peer.pid));
		return table_write_error(w, "permission denied: changing state needs root, "
					    "the gateway's user or the control socket's group");
	}
	return answer_set_drained(gw, w, req->arg, cmd == &table_commands[TABLE_CMD_DRAIN], &peer);
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
	ring_prep_send(&gw_main(c->gw)->ring, &c->op, c->fd, c->reply.buf + c->sent,
		       c->reply.len - c->sent);
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
		if (dispatch(c->gw, c->fd, &c->reply, &req) < 0)
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
	timer_arm(&gw_main(gw)->ring, &c->deadline, CONTROL_DEADLINE_MS);
	c->op.cb = recv_done;
	ring_prep_recv(&gw_main(gw)->ring, &c->op, fd, c->request, sizeof(c->request));
}

/* The group the socket file gets: [control] socket_group by name or number,
 * else the gateway's own. Start-up only (getgrnam_r may block). */
static int resolve_group(const char *name, gid_t *gid, char *err, size_t errlen)
{
	size_t size = CONTROL_GROUP_BUF_BYTES;
	struct group grp, *found = NULL;
	char *buf = NULL, *end;
	unsigned long number;
	int ret;

	if (!name) {
		*gid = getegid();
		return 0;
	}
	for (;;) {
		char *bigger = realloc(buf, size);

		if (!bigger) {
			free(buf);
			return -ENOMEM;
		}
		buf = bigger;
		ret = getgrnam_r(name, &grp, buf, size, &found);
		if (ret != ERANGE || size >= CONTROL_GROUP_BUF_MAX_BYTES)
			break;
		size *= 2;
	}
	if (found)
		*gid = grp.gr_gid;
	free(buf);
	if (found)
		return 0;
	errno = 0;
	number = strtoul(name, &end, 10);
	if (name[0] >= '0' && name[0] <= '9' && !*end && errno == 0 &&
	    number < (unsigned long)(gid_t)-1) {
		*gid = (gid_t)number;
		return 0;
	}
	snprintf(err, errlen, "[control] socket_group: no such group: %s", name);
	return -ENOENT;
}

int control_listen(struct gateway *gw, char *err, size_t errlen)
{
	const char *path = gw->cfg->control.socket;
	int fd, ret;

	ret = resolve_group(gw->cfg->control.socket_group, &gw->control_gid, err, errlen);
	if (ret < 0)
		return ret;
	fd = net_listen_unix(path, CONTROL_LISTEN_BACKLOG, err, errlen);
	if (fd < 0)
		return fd;
	gw->control_bound = true;
	/* born 0600 (net_listen_unix), widened only once its group is right */
	if (chown(path, (uid_t)-1, gw->control_gid) < 0 ||
	    chmod(path, (mode_t)gw->cfg->control.socket_mode) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot set the mode or group of %s: %s", path,
			 strerror(errno));
		close(fd);
		return ret;
	}
	gw->control_listener = (struct listener){
		.fd = fd, .name = "control", .on_accept = control_accept, .owner = gw
	};
	return 0;
}
