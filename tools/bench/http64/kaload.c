/*
 * kaload.c - keep-alive HTTP load generator for the http-64 benchmark
 * (epoll, single thread, loopback only).
 *
 * C connections, each a loop: send "GET http://TARGET/rr HTTP/1.1" (with
 * Host, and Proxy-Authorization: Basic when --user is given) to the HTTP
 * proxy (or "GET /rr" straight to the target with --direct), read the
 * whole response (Content-Length framing, or until EOF when it has none),
 * and send the next request on the same connection (--close: every request
 * says "Connection: close", one request per connection). When the response said
 * "Connection: close" (or the server closed the idle connection) the loop
 * reconnects; "connects" in the result counts every TCP connection opened.
 * Latency: from writing the request (from connect() when a new connection
 * was needed) to the last byte of the response, in microseconds.
 *
 * Bounded: stops issuing after --duration seconds or --count requests,
 * gives up after --max-time seconds or --max-errors errors. Errors are
 * counted by class; the first five are printed. The last stdout line is
 * "RESULT key=value ..."; the exit status is non-zero on any error.
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

#define IBUF 4096 /* response bytes buffered per connection */
#define OBUF 1024 /* one request */

enum { ST_FREE, ST_CONNECTING, ST_SEND, ST_HEAD, ST_BODY };
enum { E_CONNECT, E_IO, E_SHORT, E_TIMEOUT, E_HTTP, E_RESOURCE, E_N };
static const char *ename[E_N] = { "err_connect", "err_io",   "err_short",
				  "err_timeout", "err_http", "err_resource" };

struct conn {
	int fd;
	int st;
	uint32_t events;
	int ilen;
	int ooff;
	int fresh; /* connection opened for the current request */
	int reqs;  /* requests answered on this connection */
	int close_after;
	uint64_t body_need; /* UINT64_MAX: until EOF */
	uint64_t body_got;
	double t_start, t_last;
	char ibuf[IBUF];
};

static int direct;
static struct sockaddr_in proxy_addr, target_addr;
static const char *user, *pass, *label = "-";
static int nconns = 64;
static double duration = 5, max_time, io_timeout = 15;
static uint64_t max_count, max_errors = 1000;
static int verbose_errors = 5;
static int close_each; /* --close: one request per connection */

static char req[OBUF];
static int req_len;
static struct conn *conns;
static int epfd;
static volatile sig_atomic_t stop_flag;
static uint64_t errs[E_N], err_total;
static uint64_t issued, completed, connects, reconnects_idle;
static uint32_t *lat;
static size_t nlat, caplat;
static int issuing = 1;
static double t_stop_issue, t_last_done;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_sig(int s)
{
	(void)s;
	stop_flag = 1;
}

static int parse_hostport(const char *s, struct sockaddr_in *a)
{
	char host[256];
	const char *c = strrchr(s, ':');
	int port;

	if (!c || (size_t)(c - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(c - s));
	host[c - s] = 0;
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	port = atoi(c + 1);
	if (port <= 0 || port > 65535)
		return -1;
	a->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static void b64(const char *in, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = strlen(in), o = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)(uint8_t)in[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)(uint8_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= (uint8_t)in[i + 2];
		out[o++] = t[(v >> 18) & 63];
		out[o++] = t[(v >> 12) & 63];
		out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? t[v & 63] : '=';
	}
	out[o] = 0;
}

static void build_request(void)
{
	char tgt[64], auth[400] = "";

	snprintf(tgt, sizeof(tgt), "%s:%d", inet_ntoa(target_addr.sin_addr),
		 ntohs(target_addr.sin_port));
	if (user && !direct) {
		char up[260], enc[360];

		snprintf(up, sizeof(up), "%s:%s", user, pass ? pass : "");
		b64(up, enc);
		snprintf(auth, sizeof(auth), "Proxy-Authorization: Basic %s\r\n", enc);
	}
	if (close_each)
		strncat(auth, "Connection: close\r\n", sizeof(auth) - strlen(auth) - 1);
	if (direct)
		req_len = snprintf(req, sizeof(req), "GET /rr HTTP/1.1\r\nHost: %s\r\n%s\r\n", tgt,
				   close_each ? "Connection: close\r\n" : "");
	else
		req_len = snprintf(req, sizeof(req),
				   "GET http://%s/rr HTTP/1.1\r\nHost: %s\r\n%s\r\n", tgt, tgt,
				   auth);
}

static void set_events(struct conn *c, uint32_t ev)
{
	if (c->events == ev)
		return;
	struct epoll_event e = { .events = ev, .data.ptr = c };

	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
	c->events = ev;
}

static void count_err(int cls, const char *what)
{
	errs[cls]++;
	err_total++;
	if (verbose_errors > 0) {
		verbose_errors--;
		fprintf(stderr, "kaload: %s (%s)%s\n", ename[cls], what,
			verbose_errors == 0 ? " [further error messages suppressed]" : "");
	}
}

static void conn_close(struct conn *c)
{
	if (c->st == ST_FREE)
		return;
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->st = ST_FREE;
}

static int may_issue(void)
{
	if (!issuing || stop_flag)
		return 0;
	if (max_count && issued >= max_count) {
		issuing = 0;
		return 0;
	}
	if (err_total >= max_errors)
		return 0;
	if (now_s() >= t_stop_issue) {
		issuing = 0;
		return 0;
	}
	return 1;
}

static void conn_open(struct conn *c);

static void send_request(struct conn *c)
{
	c->st = ST_SEND;
	c->ooff = 0;
	c->ilen = 0;
	c->close_after = 0;
	while (c->ooff < req_len) {
		ssize_t n = send(c->fd, req + c->ooff, (size_t)(req_len - c->ooff), MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			if (!c->fresh && (errno == EPIPE || errno == ECONNRESET)) {
				/* the idle connection was closed under us: reconnect */
				reconnects_idle++;
				conn_close(c);
				conn_open(c);
				return;
			}
			count_err(E_IO, strerror(errno));
			conn_close(c);
			return;
		}
		c->ooff += (int)n;
	}
	if (c->ooff == req_len)
		c->st = ST_HEAD;
	set_events(c, c->ooff < req_len ? (EPOLLIN | EPOLLOUT) : EPOLLIN);
}

/* start the next request on c (keep-alive) or a new connection */
static void next(struct conn *c)
{
	if (!may_issue()) {
		conn_close(c);
		return;
	}
	issued++;
	if (c->st == ST_FREE || c->close_after) {
		conn_close(c);
		conn_open(c);
		return;
	}
	c->fresh = 0;
	c->t_start = c->t_last = now_s();
	send_request(c);
}

static void conn_open(struct conn *c)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in *dst = direct ? &target_addr : &proxy_addr;

	if (fd < 0) {
		count_err(E_RESOURCE, strerror(errno));
		return;
	}
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	connects++;
	c->fd = fd;
	c->st = ST_CONNECTING;
	c->fresh = 1;
	c->reqs = 0;
	c->ilen = 0;
	c->t_start = c->t_last = now_s();
	c->events = EPOLLOUT;
	struct epoll_event e = { .events = EPOLLOUT, .data.ptr = c };

	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
		count_err(E_RESOURCE, strerror(errno));
		close(fd);
		c->fd = -1;
		c->st = ST_FREE;
		return;
	}
	if (connect(fd, (struct sockaddr *)dst, sizeof(*dst)) < 0 && errno != EINPROGRESS) {
		count_err(E_CONNECT, strerror(errno));
		conn_close(c);
	}
}

static void response_done(struct conn *c)
{
	double t = now_s();
	uint64_t us = (uint64_t)((t - c->t_start) * 1e6);

	if (nlat == caplat) {
		caplat = caplat ? caplat * 2 : 65536;
		lat = realloc(lat, caplat * sizeof(*lat));
		if (!lat) {
			fprintf(stderr, "kaload: out of memory\n");
			exit(1);
		}
	}
	lat[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	completed++;
	c->reqs++;
	t_last_done = t;
	if (c->ilen) {
		count_err(E_HTTP, "bytes after the response");
		conn_close(c);
	}
	next(c);
}

static int http_status(const char *h)
{
	if (strncmp(h, "HTTP/1.", 7) != 0)
		return -1;
	const char *s = strchr(h, ' ');

	return s ? atoi(s + 1) : -1;
}

/* -1 when c is gone or moved on */
static int parse(struct conn *c)
{
	if (c->st == ST_HEAD) {
		char *e = memmem(c->ibuf, (size_t)c->ilen, "\r\n\r\n", 4);

		if (!e) {
			if (c->ilen >= IBUF - 1) {
				count_err(E_HTTP, "response head too long");
				conn_close(c);
				next(c);
				return -1;
			}
			return 0;
		}
		int hl = (int)(e - c->ibuf) + 4;
		char save = c->ibuf[hl - 1];

		c->ibuf[hl - 1] = 0;
		int code = http_status(c->ibuf);

		if (code != 200) {
			char m[64];

			snprintf(m, sizeof(m), "HTTP status %d", code);
			count_err(E_HTTP, m);
			conn_close(c);
			next(c);
			return -1;
		}
		char *cl = strcasestr(c->ibuf, "\ncontent-length:");
		char *conn = strcasestr(c->ibuf, "\nconnection:");
		int http10 = !strncmp(c->ibuf, "HTTP/1.0", 8);

		c->body_need = cl ? strtoull(cl + 16, NULL, 10) : UINT64_MAX;
		c->close_after = http10;
		if (conn) {
			char *eol = strchr(conn + 1, '\n');
			size_t vl = eol ? (size_t)(eol - conn) : strlen(conn);
			char v[128];

			if (vl >= sizeof(v))
				vl = sizeof(v) - 1;
			memcpy(v, conn, vl);
			v[vl] = 0;
			if (strcasestr(v, "close"))
				c->close_after = 1;
			else if (strcasestr(v, "keep-alive"))
				c->close_after = 0;
		}
		if (strcasestr(c->ibuf, "\ntransfer-encoding:")) {
			count_err(E_HTTP, "chunked response (not supported here)");
			conn_close(c);
			next(c);
			return -1;
		}
		if (c->body_need == UINT64_MAX)
			c->close_after = 1;
		c->ibuf[hl - 1] = save;
		memmove(c->ibuf, c->ibuf + hl, (size_t)(c->ilen - hl));
		c->ilen -= hl;
		c->body_got = 0;
		c->st = ST_BODY;
	}
	if (c->st == ST_BODY) {
		uint64_t take = (uint64_t)c->ilen;

		if (c->body_need != UINT64_MAX && take > c->body_need - c->body_got)
			take = c->body_need - c->body_got;
		c->body_got += take;
		memmove(c->ibuf, c->ibuf + take, (size_t)((uint64_t)c->ilen - take));
		c->ilen -= (int)take;
		if (c->body_got == c->body_need) {
			response_done(c);
			return -1;
		}
	}
	return 0;
}

static void on_eof(struct conn *c)
{
	if (c->st == ST_BODY && c->body_need == UINT64_MAX) {
		conn_close(c);
		c->close_after = 1;
		response_done(c);
		return;
	}
	if ((c->st == ST_HEAD || c->st == ST_SEND) && c->ilen == 0 && !c->fresh) {
		/* a kept connection closed before any byte of the response: the
		 * server's idle close raced our request; retry on a new one */
		reconnects_idle++;
		conn_close(c);
		conn_open(c);
		return;
	}
	count_err(E_SHORT, "EOF before the whole response");
	conn_close(c);
	next(c);
}

static void on_event(struct conn *c, uint32_t ev)
{
	if (c->st == ST_FREE)
		return;
	c->t_last = now_s();
	if (c->st == ST_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			count_err(E_CONNECT, strerror(err));
			conn_close(c);
			next(c);
			return;
		}
		send_request(c);
		return;
	}
	if (c->st == ST_SEND && (ev & EPOLLOUT)) {
		while (c->ooff < req_len) {
			ssize_t n = send(c->fd, req + c->ooff, (size_t)(req_len - c->ooff),
					 MSG_NOSIGNAL);

			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return;
				if (errno == EINTR)
					continue;
				count_err(E_IO, strerror(errno));
				conn_close(c);
				next(c);
				return;
			}
			c->ooff += (int)n;
		}
		c->st = ST_HEAD;
		set_events(c, EPOLLIN);
	}
	if (!(ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	for (int i = 0; i < 8 && c->st != ST_FREE; i++) {
		if (c->ilen >= IBUF - 1) {
			count_err(E_HTTP, "input buffer overflow");
			conn_close(c);
			next(c);
			return;
		}
		ssize_t n = recv(c->fd, c->ibuf + c->ilen, (size_t)(IBUF - 1 - c->ilen), 0);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR)
				continue;
			if (errno == ECONNRESET && c->ilen == 0 && !c->fresh &&
			    (c->st == ST_HEAD || c->st == ST_SEND)) {
				on_eof(c);
				return;
			}
			count_err(E_IO, strerror(errno));
			conn_close(c);
			next(c);
			return;
		}
		if (n == 0) {
			on_eof(c);
			return;
		}
		if (c->st != ST_HEAD && c->st != ST_BODY) {
			count_err(E_HTTP, "unsolicited bytes");
			conn_close(c);
			next(c);
			return;
		}
		c->ilen += (int)n;
		if (parse(c) < 0)
			return;
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static uint32_t pct(double p)
{
	if (!nlat)
		return 0;
	return lat[(size_t)(p * (double)(nlat - 1) + 0.5)];
}

static void usage(void)
{
	fprintf(stderr,
		"usage: kaload --target H:P (--direct | --proxy H:P) [--user U --pass P]\n"
		"         [--conns N] [--duration D] [--count K] [--max-time T]\n"
		"         [--io-timeout T] [--max-errors E] [--label L] [--quiet-errors]\n"
		"         [--close]  (\"Connection: close\": one request per connection)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int have_target = 0, have_proxy = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--direct")) {
			direct = 1;
			continue;
		}
		if (!strcmp(a, "--quiet-errors")) {
			verbose_errors = 0;
			continue;
		}
		if (!strcmp(a, "--close")) {
			close_each = 1;
			continue;
		}
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--proxy")) {
			if (parse_hostport(v, &proxy_addr) < 0)
				usage();
			have_proxy = 1;
		} else if (!strcmp(a, "--target")) {
			if (parse_hostport(v, &target_addr) < 0)
				usage();
			have_target = 1;
		} else if (!strcmp(a, "--user"))
			user = v;
		else if (!strcmp(a, "--pass"))
			pass = v;
		else if (!strcmp(a, "--conns"))
			nconns = atoi(v);
		else if (!strcmp(a, "--duration"))
			duration = atof(v);
		else if (!strcmp(a, "--count"))
			max_count = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--max-time"))
			max_time = atof(v);
		else if (!strcmp(a, "--io-timeout"))
			io_timeout = atof(v);
		else if (!strcmp(a, "--max-errors"))
			max_errors = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--label"))
			label = v;
		else
			usage();
	}
	if (!have_target || direct == have_proxy || nconns <= 0 || (duration <= 0 && !max_count))
		usage();
	if (max_time <= 0)
		max_time = (duration > 0 ? duration : 60) + 60;

	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = { .sa_handler = on_sig };

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	build_request();
	conns = calloc((size_t)nconns, sizeof(*conns));
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!conns || epfd < 0) {
		perror("kaload: init");
		return 1;
	}
	double t0 = now_s(), t_deadline = t0 + max_time, t_next_scan = t0 + 0.2;
	int aborted = 0;
	const char *abort_reason = "";

	t_stop_issue = duration > 0 ? t0 + duration : 1e300;
	for (int i = 0; i < nconns; i++) {
		conns[i].fd = -1;
		if (may_issue()) {
			issued++;
			conn_open(&conns[i]);
		}
	}
	struct epoll_event evs[256];

	for (;;) {
		double t = now_s();

		if (stop_flag) {
			aborted = 1;
			abort_reason = "signal";
			break;
		}
		if (t >= t_deadline) {
			aborted = 1;
			abort_reason = "max-time";
			break;
		}
		if (err_total >= max_errors) {
			aborted = 1;
			abort_reason = "max-errors";
			break;
		}
		if (t >= t_next_scan) {
			t_next_scan = t + 0.2;
			for (int i = 0; i < nconns; i++) {
				struct conn *c = &conns[i];

				if (c->st != ST_FREE && t - c->t_last > io_timeout) {
					count_err(E_TIMEOUT, "no progress within io-timeout");
					conn_close(c);
					next(c);
				}
			}
		}
		int active = 0;

		for (int i = 0; i < nconns && !active; i++)
			active = conns[i].st != ST_FREE;
		if (!active)
			break;
		int n = epoll_wait(epfd, evs, 256, 50);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("kaload: epoll_wait");
			aborted = 1;
			abort_reason = "epoll";
			break;
		}
		for (int i = 0; i < n; i++)
			on_event(evs[i].data.ptr, evs[i].events);
	}
	double t_end = now_s();
	uint64_t unfinished = 0;

	for (int i = 0; i < nconns; i++) {
		if (conns[i].st == ST_FREE)
			continue;
		unfinished++;
		conn_close(&conns[i]);
	}
	if (unfinished && !aborted) {
		aborted = 1;
		abort_reason = "unfinished";
	}
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	double el = (t_last_done ? t_last_done : t_end) - t0;
	char errstr[512];
	int o = 0;

	for (int i = 0; i < E_N; i++)
		o += snprintf(errstr + o, sizeof(errstr) - (size_t)o, " %s=%llu", ename[i],
			      (unsigned long long)errs[i]);
	qsort(lat, nlat, sizeof(*lat), cmp_u32);
	printf("RESULT mode=ka proxy=%s label=%s conc=%d duration_s=%.1f completed=%llu "
	       "elapsed_s=%.3f rps=%.1f lat_us_p50=%u lat_us_p90=%u lat_us_p99=%u lat_us_max=%u "
	       "connects=%llu idle_reconnects=%llu unfinished=%llu errors=%llu%s aborted=%d%s%s "
	       "cpu_user_s=%.3f cpu_sys_s=%.3f\n",
	       direct ? "direct" : "http-get", label, nconns, duration,
	       (unsigned long long)completed, el, el > 0 ? (double)completed / el : 0.0, pct(0.50),
	       pct(0.90), pct(0.99), nlat ? lat[nlat - 1] : 0, (unsigned long long)connects,
	       (unsigned long long)reconnects_idle, (unsigned long long)unfinished,
	       (unsigned long long)err_total, errstr, aborted, aborted ? " abort_reason=" : "",
	       abort_reason, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	fflush(stdout);
	return (err_total == 0 && !aborted) ? 0 : 1;
}
