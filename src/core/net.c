/* net.c — socket set-up helpers (see net.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "anyproxy/grammar.h"
#include "anyproxy/net.h"

void net_format_sockaddr(const struct sockaddr *sa, char *buf, size_t len)
{
	int n = -EAFNOSUPPORT;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;

		n = grammar_format_target(buf, len, GRAMMAR_ADDR_IPV4, &a->sin_addr, 4,
					  ntohs(a->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;

		n = grammar_format_target(buf, len, GRAMMAR_ADDR_IPV6, &a->sin6_addr, 16,
					  ntohs(a->sin6_port));
	} else if (sa->sa_family == AF_UNIX) {
		n = snprintf(buf, len, "unix");
	}
	if (n < 0 || (size_t)n >= len)
		snprintf(buf, len, "?");
}

void net_format_peer(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
		snprintf(buf, len, "?");
		return;
	}
	net_format_sockaddr((struct sockaddr *)&ss, buf, len);
}

int net_source_key(const struct sockaddr *sa, uint8_t key[NET_SOURCE_KEY_BYTES])
{
	memset(key, 0, NET_SOURCE_KEY_BYTES);
	if (sa->sa_family == AF_INET) {
		memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family != AF_INET6)
		return -EAFNOSUPPORT;
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6)) {
		memcpy(key, &a6->s6_addr[12], 4);
		return 0;
	}
	/* the /64, marked so that no IPv4 key can equal it */
	memcpy(key, a6->s6_addr, 8);
	key[15] = 6;
	return 0;
}

int net_parse_numeric(const char *host, unsigned port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*len = sizeof(*a4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*a6);
		return 0;
	}
	return -EINVAL;
}

/* Bind (and for a stream socket, listen) on a numeric address; see
 * net_listen_tcp. */
static int bind_config_addr(const struct config_addr *addr, int type, int backlog, char *err,
			    size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1, zero = 0, ret;
	char shown[300];

	config_addr_format(addr, shown, sizeof(shown));
	if (addr->host[0] == '\0') {
		net_parse_numeric("::", addr->port, &ss, &sl);
	} else if (net_parse_numeric(addr->host, addr->port, &ss, &sl) < 0) {
		snprintf(err, errlen, "listen address %s: host must be an IP address", shown);
		return -EINVAL;
	}
	fd = socket(ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 && addr->host[0] == '\0' && errno == EAFNOSUPPORT) {
		net_parse_numeric("0.0.0.0", addr->port, &ss, &sl);
		fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	}
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "socket for %s: %s", shown, strerror(errno));
		return ret;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* accepted sockets inherit it (Linux): relayed bytes go out as they
	 * come, without one call per connection */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (ss.ss_family == AF_INET6 && addr->host[0] == '\0')
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 ||
	    (type == SOCK_STREAM && listen(fd, backlog) < 0)) {
		ret = -errno;
		snprintf(err, errlen, "cannot listen on %s: %s", shown, strerror(errno));
		close(fd);
		return ret;
	}
	return fd;
}

int net_listen_tcp(const struct config_addr *addr, int backlog, char *err, size_t errlen)
{
	return bind_config_addr(addr, SOCK_STREAM, backlog, err, errlen);
}

int net_bind_udp(const struct config_addr *addr, char *err, size_t errlen)
{
	return bind_config_addr(addr, SOCK_DGRAM, 0, err, errlen);
}

int net_listen_unix(const char *path, int backlog, char *err, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char dir[sizeof(sun.sun_path)];
	char *slash;
	mode_t old_mask;
	int fd, ret;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "control socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			ret = -errno;
			snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
			return ret;
		}
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return ret;
	}
	/* A live gateway answers on the socket: refuse to steal it. */
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		snprintf(err, errlen, "control socket %s is in use by another gateway", path);
		close(fd);
		return -EADDRINUSE;
	}
	close(fd);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	old_mask = umask(0177); /* the socket file is born 0600 */
	ret = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old_mask);
	if (ret < 0 || listen(fd, backlog) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return ret;
	}
	return fd;
}
