/* udp.c — a UDP socket read through the ring (see udp.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/udp.h"

static void udp_arm(struct udp_socket *u);

static void udp_done(struct ring *r, struct ring_op *op, int res, uint32_t flags)
{
	struct udp_socket *u = container_of(op, struct udp_socket, op);

	u->armed = false;
	if (u->closing) {
		close(u->fd);
		u->fd = -1;
		free(u->buf);
		u->buf = NULL;
		u->ops->on_closed(u);
		return;
	}
	if (res >= 0) {
		if (u->msg.msg_flags & MSG_TRUNC)
			u->truncated++;
		else
			u->ops->on_datagram(u, (const struct sockaddr *)&u->from,
					    u->msg.msg_namelen, u->buf, (size_t)res);
	}
	/* errors of a UDP socket (an ICMP unreachable of an earlier send)
	 * concern one datagram, not the socket: receive on */
	udp_arm(u);
}

static void udp_arm(struct udp_socket *u)
{
	struct io_uring_sqe *sqe;

	if (u->armed || u->closing)
		return;
	memset(&u->msg, 0, sizeof(u->msg));
	u->iov = (struct iovec){ u->buf, u->cap };
	u->msg.msg_name = &u->from;
	u->msg.msg_namelen = sizeof(u->from);
	u->msg.msg_iov = &u->iov;
	u->msg.msg_iovlen = 1;
	sqe = ring_get_sqe(u->ring);
	io_uring_prep_recvmsg(sqe, u->fd, &u->msg, 0);
	u->op.cb = udp_done;
	ring_sqe_set_op(sqe, &u->op);
	u->armed = true;
}

int udp_socket_open(struct udp_socket *u, struct ring *r, int fd, size_t cap,
		    const struct udp_socket_ops *ops)
{
	memset(u, 0, sizeof(*u));
	u->buf = malloc(cap);
	if (!u->buf) {
		close(fd);
		u->fd = -1;
		return -ENOMEM;
	}
	u->ring = r;
	u->ops = ops;
	u->fd = fd;
	u->cap = cap;
	udp_arm(u);
	return 0;
}

void udp_socket_close(struct udp_socket *u)
{
	struct io_uring_sqe *sqe;

	if (u->closing || u->fd < 0)
		return;
	u->closing = true;
	if (u->armed) {
		ring_cancel_fd(u->ring, u->fd); /* udp_done finishes */
		return;
	}
	/* nothing in flight: finish from a completion, never under the caller */
	sqe = ring_get_sqe(u->ring);
	io_uring_prep_nop(sqe);
	u->op.cb = udp_done;
	ring_sqe_set_op(sqe, &u->op);
	u->armed = true;
}

int udp_socket_send(struct udp_socket *u, const struct sockaddr *sa, socklen_t salen, const void *p,
		    size_t n)
{
	if (u->closing)
		return -EPIPE;
	if (sendto(u->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL, sa, salen) < 0)
		return -errno;
	return 0;
}
