/*
 * metrics_server.c — the scrape endpoint on the ring (metrics.h): accept,
 * read one request head under a deadline, answer, close. Each connection
 * has one operation in flight at a time; it is freed from that operation's
 * completion, so a deadline or a shutdown only shuts the socket down and
 * cancels, and the completion that follows frees.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <utlist.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/metrics.h"
#include "anyproxy/net.h"

/* The status line and headers of a reply, at most. */
#define METRICS_REPLY_HEAD_MAX_BYTES 256

struct metrics_conn {
	struct metrics_server *s;
	int fd;
	bool closing;
	struct ring_op op;
	struct timer deadline;
	char request[METRICS_REQUEST_MAX_BYTES];
	size_t request_len;
	struct buf reply;
	struct metrics_conn *prev, *next;
};

static void server_arm(struct metrics_server *s);

static void conn_free(struct metrics_conn *c)
{
	struct metrics_server *s = c->s;

	timer_disarm(s->ring, &c->deadline);
	close(c->fd);
	buf_release(&c->reply);
	DL_DELETE(s->conns, c);
	free(c);
	s->nconns--;
	server_arm(s); /* a slot is free again */
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 431:
		return "Request Header Fields Too Large";
	default:
		return "Internal Server Error";
	}
}

/* The whole reply into c->reply: the head, then (unless HEAD) the body. */
static int build_reply(struct metrics_conn *c, int status, bool head_only)
{
	struct metrics_server *s = c->s;
	char head[METRICS_REPLY_HEAD_MAX_BYTES];
	struct metrics_writer w;
	const char *type = "text/plain; charset=utf-8";
	const void *body;
	size_t body_len;
	char text[64];
	int n, ret;

	metrics_writer_init(&w, METRICS_BODY_MAX_BYTES);
	if (status == 200) {
		s->collect(&w, s->arg);
		ret = metrics_writer_status(&w);
		if (ret < 0) {
			log_error("Metrics scrape failed", LF_S("error", strerror(-ret)));
			status = 500;
		} else {
			s->scrapes++;
			type = METRICS_CONTENT_TYPE;
		}
	}
	if (status == 200) {
		body = buf_head(&w.out);
		body_len = buf_used(&w.out);
	} else {
		n = snprintf(text, sizeof(text), "%d %s\n", status, reason_phrase(status));
		body = text;
		body_len = (size_t)n;
	}
	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
		     "Connection: close\r\n\r\n",
		     status, reason_phrase(status), type, body_len,
		     status == 405 ? "Allow: GET, HEAD\r\n" : "");
	buf_init(&c->reply, METRICS_REPLY_HEAD_MAX_BYTES + METRICS_BODY_MAX_BYTES);
	ret = buf_append(&c->reply, head, (size_t)n);
	if (ret == 0 && !head_only && body_len)
		ret = buf_append(&c->reply, body, body_len);
	metrics_writer_free(&w);
	return ret;
}

static void send_more(struct metrics_conn *c);

static void send_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct metrics_conn *c = container_of(op, struct metrics_conn, op);

	if (res <= 0 || c->closing) {
		conn_free(c);
		return;
	}
	buf_consume(&c->reply, (size_t)res);
	if (!buf_used(&c->reply)) {
		conn_free(c);
		return;
	}
	send_more(c);
}

static void send_more(struct metrics_conn *c)
{
	c->op.cb = send_done;
	ring_prep_send(c->s->ring, &c->op, c->fd, buf_head(&c->reply), buf_used(&c->reply));
}

static void recv_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct metrics_conn *c = container_of(op, struct metrics_conn, op);
	bool head_only;
	int status, n;

	if (res <= 0 || c->closing) {
		conn_free(c);
		return;
	}
	c->request_len += (size_t)res;
	n = metrics_parse_request(c->request, c->request_len, &status, &head_only);
	if (n == 0) {
		ring_prep_recv(r, &c->op, c->fd, c->request + c->request_len,
			       sizeof(c->request) - c->request_len);
		return;
	}
	if (build_reply(c, status, head_only) < 0) {
		conn_free(c);
		return;
	}
	/* nothing more is read: the client reads the reply to EOF */
	shutdown(c->fd, SHUT_RD);
	send_more(c);
}

static void conn_deadline(struct ring *r, struct timer *t)
{
	struct metrics_conn *c = container_of(t, struct metrics_conn, deadline);

	/* the operation in flight completes with an error and frees c */
	c->closing = true;
	shutdown(c->fd, SHUT_RDWR);
	ring_cancel_fd(r, c->fd);
}

static void conn_start(struct metrics_server *s, int fd)
{
	struct metrics_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return;
	}
	c->s = s;
	c->fd = fd;
	DL_APPEND(s->conns, c);
	s->nconns++;
	timer_init(&c->deadline, conn_deadline);
	timer_arm(s->ring, &c->deadline, METRICS_DEADLINE_MS);
	c->op.cb = recv_done;
	ring_prep_recv(s->ring, &c->op, fd, c->request, sizeof(c->request));
}

static void server_retry(struct ring *r, struct timer *t)
{
	struct metrics_server *s = container_of(t, struct metrics_server, retry);

	server_arm(s);
}

static void accept_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct metrics_server *s = container_of(op, struct metrics_server, accept_op);

	s->accept_armed = false;
	if (res >= 0) {
		if (s->fd < 0)
			close(res); /* closed meanwhile */
		else
			conn_start(s, res);
	} else if (s->fd >= 0 &&
		   (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM)) {
		timer_arm(r, &s->retry, METRICS_ACCEPT_RETRY_MS);
		return;
	}
	server_arm(s);
}

/* One accept in flight while the server is open, below its connection
 * bound and not backing off. */
static void server_arm(struct metrics_server *s)
{
	if (s->accept_armed || s->fd < 0 || s->nconns >= METRICS_MAX_CONNECTIONS ||
	    timer_armed(&s->retry))
		return;
	s->accept_op.cb = accept_done;
	ring_prep_accept(s->ring, &s->accept_op, s->fd);
	s->accept_armed = true;
}

int metrics_server_open(struct metrics_server *s, struct ring *r, const struct config_addr *addr,
			metrics_collect_cb collect, void *arg)
{
	char err[512], shown[300];
	int fd;

	*s = (struct metrics_server){ .fd = -1 };
	if (!addr->set)
		return 0;
	fd = net_listen_tcp(addr, METRICS_LISTEN_BACKLOG, err, sizeof(err));
	if (fd < 0) {
		log_error("Cannot open the metrics listener", LF_S("error", err));
		return fd;
	}
	*s = (struct metrics_server){ .ring = r, .fd = fd, .collect = collect, .arg = arg };
	timer_init(&s->retry, server_retry);
	server_arm(s);
	config_addr_format(addr, shown, sizeof(shown));
	log_info("Metrics listening", LF_S("addr", shown), LF_S("path", METRICS_PATH));
	return 0;
}

void metrics_server_close(struct metrics_server *s)
{
	struct metrics_conn *c;

	if (!s->ring || s->fd < 0)
		return;
	timer_disarm(s->ring, &s->retry);
	shutdown(s->fd, SHUT_RDWR);
	ring_cancel_fd_now(s->ring, s->fd);
	close(s->fd);
	s->fd = -1;
	/* each connection's operation in flight completes and frees it */
	DL_FOREACH (s->conns, c) {
		c->closing = true;
		shutdown(c->fd, SHUT_RDWR);
		ring_cancel_fd(s->ring, c->fd);
	}
}

void metrics_server_destroy(struct metrics_server *s)
{
	struct metrics_conn *c, *tmp;

	if (!s->ring)
		return;
	metrics_server_close(s);
	DL_FOREACH_SAFE (s->conns, c, tmp) {
		timer_disarm(s->ring, &c->deadline);
		close(c->fd);
		buf_release(&c->reply);
		DL_DELETE(s->conns, c);
		free(c);
	}
	s->nconns = 0;
}
