/*
 * udp.h — a UDP socket read through the ring: one recvmsg at a time into a
 * buffer of its own, re-armed after each datagram is delivered. Used by the
 * gateway (UDP forwards, SOCKS5 UDP relays) and the agent (the sockets of
 * its datagram associations).
 *
 * A datagram longer than the buffer is dropped, never cut (MSG_TRUNC), and
 * counted. Sending is a non-blocking sendto: a datagram the kernel cannot
 * take now is dropped, as the network would (nothing blocks the loop).
 *
 * Life cycle: udp_socket_open takes the fd; udp_socket_close cancels the
 * receive and calls on_closed from a later completion, once nothing is in
 * flight: the owner frees the memory holding the struct there, never
 * before (on_datagram may call udp_socket_close).
 */
#ifndef ANYPROXY_UDP_H
#define ANYPROXY_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "anyproxy/ring.h"

struct udp_socket;

struct udp_socket_ops {
	/* One datagram from `from` (p valid during the call only). */
	void (*on_datagram)(struct udp_socket *u, const struct sockaddr *from, socklen_t fromlen,
			    const uint8_t *p, size_t n);
	/* Closed: the fd is closed and no operation is left; free now. */
	void (*on_closed)(struct udp_socket *u);
};

struct udp_socket {
	struct ring *ring;
	const struct udp_socket_ops *ops;
	int fd;
	bool armed; /* a recvmsg (or the closing NOP) is in flight */
	bool closing;
	struct ring_op op;
	struct msghdr msg;
	struct iovec iov;
	struct sockaddr_storage from;
	uint8_t *buf; /* cap bytes: the largest datagram taken */
	size_t cap;
	uint64_t truncated; /* datagrams dropped: longer than cap */
};

/* Take fd (a bound or unbound UDP socket, non-blocking) and start
 * receiving datagrams of up to cap bytes. 0, or -ENOMEM (fd closed). */
int udp_socket_open(struct udp_socket *u, struct ring *r, int fd, size_t cap,
		    const struct udp_socket_ops *ops);
/* Stop; ops->on_closed follows from a completion. Idempotent. */
void udp_socket_close(struct udp_socket *u);
/* Send one datagram to sa. 0, or -errno (EAGAIN: the socket buffer is
 * full, the datagram is dropped). */
int udp_socket_send(struct udp_socket *u, const struct sockaddr *sa, socklen_t salen, const void *p,
		    size_t n);

#endif
