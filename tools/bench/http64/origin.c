/*
 * origin.c - keep-alive HTTP/1.1 origin for the http-64 benchmark
 * (epoll, non-blocking, single thread, loopback only).
 *
 * Every request head ("... \r\n\r\n", origin-form or absolute URI) gets a
 * fixed small response with Content-Length. The connection stays open for
 * the next request unless the request said "Connection: close" (or was
 * HTTP/1.0 without "Connection: keep-alive"); then the response says
 * "Connection: close" and the server closes after sending it. Pipelined
 * requests are answered in order. A request with Content-Length has that
 * many body bytes skipped; a chunked request body is refused (400, close).
 *
 * Counters (accepted connections, requests, errors) go to --stats-file on
 * SIGUSR1 and at exit, and to stderr at exit. Stops on SIGTERM/SIGINT or
 * after --max-seconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_MAX 8192   /* request bytes buffered per connection */
#define OUT_MAX 4096  /* responses queued per connection */
#define MAX_FDS 65536 /* descriptors this server tracks */

static const char body[] = "ok";

struct conn {
	int fd;
	int ilen;
	int olen, ooff;
	uint64_t skip; /* request body bytes still to drop */
	int closing;   /* close once out is sent */
	char in[IN_MAX];
	char out[OUT_MAX];
};

static struct conn *conns[MAX_FDS];
static int epfd;
static volatile sig_atomic_t stop_flag, dump_flag;
static const char *stats_file;
static uint64_t n_accepted, n_requests, n_closed, n_err_proto, n_err_io;
static int n_open;

static void on_stop(int s)
{
	(void)s;
	stop_flag = 1;
}

static void on_usr1(int s)
{
	(void)s;
	dump_flag = 1;
}

static void dump(FILE *f)
{
	fprintf(f, "accepted=%llu requests=%llu closed=%llu open=%d err_proto=%llu err_io=%llu\n",
		(unsigned long long)n_accepted, (unsigned long long)n_requests,
		(unsigned long long)n_closed, n_open, (unsigned long long)n_err_proto,
		(unsigned long long)n_err_io);
}

static void dump_stats(void)
{
	char tmp[4096];
	FILE *f;

	if (!stats_file)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", stats_file);
	f = fopen(tmp, "w");
	if (!f)
		return;
	dump(f);
	fclose(f);
	rename(tmp, stats_file);
}

static void conn_close(struct conn *c)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	conns[c->fd] = NULL;
	free(c);
	n_closed++;
	n_open--;
}

/* header value of NAME in the head [h, h+len) contains token TOK (case-insensitive) */
static int header_has(const char *h, int len, const char *name, const char *tok)
{
	size_t nl = strlen(name);
	const char *p = h, *end = h + len;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));

		if (!eol)
			break;
		if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
			char v[256];
			size_t vl = (size_t)(eol - (p + nl + 1));

			if (vl >= sizeof(v))
				vl = sizeof(v) - 1;
			memcpy(v, p + nl + 1, vl);
			v[vl] = 0;
			if (strcasestr(v, tok))
				return 1;
		}
		p = eol + 1;
	}
	return 0;
}

static long long header_num(const char *h, int len, const char *name)
{
	size_t nl = strlen(name);
	const char *p = h, *end = h + len;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));

		if (!eol)
			break;
		if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':')
			return strtoll(p + nl + 1, NULL, 10);
		p = eol + 1;
	}
	return -1;
}

static int flush_out(struct conn *c)
{
	while (c->ooff < c->olen) {
		ssize_t n =
			send(c->fd, c->out + c->ooff, (size_t)(c->olen - c->ooff), MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			n_err_io++;
			conn_close(c);
			return -1;
		}
		c->ooff += (int)n;
	}
	if (c->ooff == c->olen) {
		c->ooff = c->olen = 0;
		if (c->closing) {
			conn_close(c);
			return -1;
		}
	}
	struct epoll_event e = {
		.events = EPOLLIN | (c->olen ? EPOLLOUT : 0),
		.data.ptr = c,
	};
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
	return 0;
}

static void respond(struct conn *c, int status, int close_after)
{
	int n;

	if (c->olen + 256 > OUT_MAX) { /* the peer pipelines without reading */
		n_err_proto++;
		c->closing = 1;
		return;
	}
	if (status == 200)
		n = snprintf(
			c->out + c->olen, OUT_MAX - c->olen,
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
			"%s\r\n%s",
			sizeof(body) - 1, close_after ? "Connection: close\r\n" : "", body);
	else
		n = snprintf(c->out + c->olen, OUT_MAX - c->olen,
			     "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
			     "Connection: close\r\n\r\n");
	c->olen += n;
	if (close_after)
		c->closing = 1;
}

/* handle buffered requests; -1 if the connection is gone */
static int process(struct conn *c)
{
	while (!c->closing) {
		if (c->skip) {
			uint64_t take = (uint64_t)c->ilen < c->skip ? (uint64_t)c->ilen : c->skip;

			memmove(c->in, c->in + take, (size_t)c->ilen - take);
			c->ilen -= (int)take;
			c->skip -= take;
			if (c->skip)
				break;
		}
		char *e = memmem(c->in, (size_t)c->ilen, "\r\n\r\n", 4);

		if (!e) {
			if (c->ilen >= IN_MAX) {
				n_err_proto++;
				respond(c, 400, 1);
			}
			break;
		}
		int hl = (int)(e - c->in) + 4;
		int http10 = hl > 10 && memmem(c->in, (size_t)hl, "HTTP/1.0\r\n", 10) != NULL;
		int close_after = header_has(c->in, hl, "Connection", "close") ||
				  (http10 && !header_has(c->in, hl, "Connection", "keep-alive"));
		long long cl = header_num(c->in, hl, "Content-Length");

		if (header_has(c->in, hl, "Transfer-Encoding", "chunked") || cl < -1) {
			n_err_proto++;
			respond(c, 400, 1);
			break;
		}
		n_requests++;
		respond(c, 200, close_after);
		memmove(c->in, c->in + hl, (size_t)(c->ilen - hl));
		c->ilen -= hl;
		if (cl > 0)
			c->skip = (uint64_t)cl;
	}
	return flush_out(c);
}

static void on_readable(struct conn *c)
{
	for (int i = 0; i < 8; i++) {
		if (c->ilen >= IN_MAX) {
			if (process(c) < 0)
				return;
			if (c->ilen >= IN_MAX)
				return;
		}
		ssize_t n = recv(c->fd, c->in + c->ilen, (size_t)(IN_MAX - c->ilen), 0);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR)
				continue;
			if (errno != ECONNRESET)
				n_err_io++;
			conn_close(c);
			return;
		}
		if (n == 0) {
			conn_close(c);
			return;
		}
		c->ilen += (int)n;
		if (process(c) < 0)
			return;
	}
}

static void accept_all(int lfd)
{
	for (int i = 0; i < 256; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return;
		if (fd >= MAX_FDS) {
			close(fd);
			continue;
		}
		struct conn *c = calloc(1, sizeof(*c));

		if (!c) {
			close(fd);
			continue;
		}
		int one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->fd = fd;
		conns[fd] = c;
		n_accepted++;
		n_open++;
		struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };

		epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: origin --port P [--bind 127.0.0.1] [--stats-file F] "
			"[--max-seconds S]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *bind_addr = "127.0.0.1";
	int port = 0;
	double max_seconds = 7200;
	static int listen_tag;

	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			usage();
		if (!strcmp(argv[i], "--port"))
			port = atoi(v);
		else if (!strcmp(argv[i], "--bind"))
			bind_addr = v;
		else if (!strcmp(argv[i], "--stats-file"))
			stats_file = v;
		else if (!strcmp(argv[i], "--max-seconds"))
			max_seconds = atof(v);
		else
			usage();
		i++;
	}
	if (port <= 0 || port > 65535)
		usage();

	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_stop };

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);

	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (inet_pton(AF_INET, bind_addr, &a.sin_addr) != 1 ||
	    bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 4096) < 0) {
		perror("origin: listen");
		return 1;
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event le = { .events = EPOLLIN, .data.ptr = &listen_tag };

	epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &le);
	dump_stats();

	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	double t_end = ts.tv_sec + ts.tv_nsec / 1e9 + max_seconds;
	struct epoll_event evs[512];

	while (!stop_flag) {
		int n = epoll_wait(epfd, evs, 512, 200);

		if (dump_flag) {
			dump_flag = 0;
			dump_stats();
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (ts.tv_sec + ts.tv_nsec / 1e9 >= t_end)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("origin: epoll_wait");
			break;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == &listen_tag) {
				accept_all(lfd);
				continue;
			}
			struct conn *c = evs[i].data.ptr;

			if (evs[i].events & EPOLLOUT) {
				if (flush_out(c) < 0)
					continue;
			}
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				on_readable(c);
		}
	}
	dump_stats();
	fprintf(stderr, "origin: ");
	dump(stderr);
	return 0;
}
