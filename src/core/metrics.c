/* metrics.c — histograms, the exposition writer and the scrape request
 * parser (metrics.h). The endpoint on the ring is metrics_server.c. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "anyproxy/common.h"
#include "anyproxy/metrics.h"

const uint64_t metrics_latency_bounds_us[METRICS_LATENCY_NBUCKETS] = {
	500,    1000,   2500,   5000,    10000,   25000,   50000,
	100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

void metrics_observe_us(struct metrics_histogram *h, uint64_t us)
{
	size_t i = 0;

	while (i < METRICS_LATENCY_NBUCKETS && us > metrics_latency_bounds_us[i])
		i++;
	h->buckets[i]++;
	h->sum_us += us;
	h->count++;
}

/* ---- writer ---- */

void metrics_writer_init(struct metrics_writer *w, size_t max_bytes)
{
	buf_init(&w->out, max_bytes);
	w->error = 0;
	w->family = NULL;
}

void metrics_writer_free(struct metrics_writer *w)
{
	buf_release(&w->out);
}

int metrics_writer_status(const struct metrics_writer *w)
{
	return w->error;
}

/* Room for n more bytes at the end of w's body, or NULL (w->error set:
 * nothing more is written). The caller writes there and commit()s. */
static char *room(struct metrics_writer *w, size_t n)
{
	long r;

	if (w->error)
		return NULL;
	r = buf_reserve(&w->out, n);
	if (r < 0) {
		w->error = (int)r;
		return NULL;
	}
	return (char *)w->out.data + w->out.len;
}

static void commit(struct metrics_writer *w, const char *end)
{
	w->out.len = (size_t)((const uint8_t *)end - w->out.data);
}

static char *copy(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

/* v in decimal at the end of text[20] (UINT64_MAX has 20 digits); returns
 * where it starts. */
static char *u64_text(uint64_t v, char text[20])
{
	char *p = text + 20;

	do
		*--p = (char)('0' + v % 10);
	while (v /= 10);
	return p;
}

/* Microseconds as decimal seconds, exactly, without trailing zeros:
 * 500 -> "0.0005", 1000000 -> "1", 2500000 -> "2.5". */
static void format_seconds(uint64_t us, char *text, size_t size)
{
	int n = snprintf(text, size, "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);

	while (n > 0 && text[n - 1] == '0')
		text[--n] = '\0';
	if (n > 0 && text[n - 1] == '.')
		text[--n] = '\0';
}

/* s with backslash and LF escaped (HELP text), and double quote too (label
 * values): at most twice its length. */
static char *escaped(char *p, const char *s, bool quote)
{
	for (; *s; s++) {
		char c = *s;

		if (c == '\\' || c == '\n' || (quote && c == '"')) {
			*p++ = '\\';
			c = c == '\n' ? 'n' : c;
		}
		*p++ = c;
	}
	return p;
}

static bool name_valid(const char *name, bool colon)
{
	const char *p = name;

	if (!*p || (*p >= '0' && *p <= '9'))
		return false;
	for (; *p; p++) {
		char c = *p;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || (colon && c == ':')))
			return false;
	}
	return true;
}

bool metrics_name_valid(const char *name)
{
	return name_valid(name, true);
}

bool metrics_label_name_valid(const char *name)
{
	return name_valid(name, false) && strncmp(name, "__", 2) != 0;
}

static bool check_name(struct metrics_writer *w, const char *name)
{
	if (w->error)
		return false;
	if (name == w->family)
		return true;
	if (!metrics_name_valid(name)) {
		w->error = -EINVAL;
		return false;
	}
	return true;
}

void metrics_family(struct metrics_writer *w, const char *name, enum metrics_type type,
		    const char *help)
{
	static const char *const types[] = {
		[METRICS_COUNTER] = "counter",
		[METRICS_GAUGE] = "gauge",
		[METRICS_HISTOGRAM] = "histogram",
	};
	size_t name_len = strlen(name), help_len = strlen(help), type_len = strlen(types[type]);
	char *p;

	if (!check_name(w, name))
		return;
	w->family = name;
	p = room(w, 2 * name_len + 2 * help_len + type_len + sizeof("# HELP  \n# TYPE  \n"));
	if (!p)
		return;
	p = copy(p, "# HELP ", 7);
	p = copy(p, name, name_len);
	*p++ = ' ';
	p = escaped(p, help, false);
	p = copy(p, "\n# TYPE ", 8);
	p = copy(p, name, name_len);
	*p++ = ' ';
	p = copy(p, types[type], type_len);
	*p++ = '\n';
	commit(w, p);
}

/* One line, name{labels[,le="..."]} value, the suffix appended to the
 * name (its family checked by the caller), written in one piece. */
static void put_line(struct metrics_writer *w, const char *name, const char *suffix,
		     const struct metrics_label *labels, size_t nlabels, const char *le,
		     const char *value, size_t value_len)
{
	size_t name_len = strlen(name), suffix_len = strlen(suffix), i;
	size_t need =
		name_len + suffix_len + value_len + sizeof("{,le=\"\"} \n") + (le ? strlen(le) : 0);
	char *p;

	for (i = 0; i < nlabels; i++) {
		if (!metrics_label_name_valid(labels[i].name) || !strcmp(labels[i].name, "le")) {
			if (!w->error)
				w->error = -EINVAL;
			return;
		}
		need += strlen(labels[i].name) + 2 * strlen(labels[i].value) + sizeof(",=\"\"");
	}
	p = room(w, need);
	if (!p)
		return;
	p = copy(p, name, name_len);
	p = copy(p, suffix, suffix_len);
	if (nlabels || le) {
		*p++ = '{';
		for (i = 0; i < nlabels; i++) {
			if (i)
				*p++ = ',';
			p = copy(p, labels[i].name, strlen(labels[i].name));
			p = copy(p, "=\"", 2);
			p = escaped(p, labels[i].value, true);
			*p++ = '"';
		}
		if (le) {
			if (nlabels)
				*p++ = ',';
			p = copy(p, "le=\"", 4);
			p = copy(p, le, strlen(le));
			*p++ = '"';
		}
		*p++ = '}';
	}
	*p++ = ' ';
	p = copy(p, value, value_len);
	*p++ = '\n';
	commit(w, p);
}

/* The same with an integer value. */
static void put_line_u64(struct metrics_writer *w, const char *name, const char *suffix,
			 const struct metrics_label *labels, size_t nlabels, const char *le,
			 uint64_t value)
{
	char text[20], *v = u64_text(value, text);

	put_line(w, name, suffix, labels, nlabels, le, v, (size_t)(text + sizeof(text) - v));
}

void metrics_sample(struct metrics_writer *w, const char *name, const struct metrics_label *labels,
		    size_t nlabels, uint64_t value)
{
	if (!check_name(w, name))
		return;
	put_line_u64(w, name, "", labels, nlabels, NULL, value);
}

void metrics_write_value(struct metrics_writer *w, const char *name, enum metrics_type type,
			 const char *help, uint64_t value)
{
	metrics_family(w, name, type, help);
	metrics_sample(w, name, NULL, 0, value);
}

void metrics_write_per_worker(struct metrics_writer *w, const char *name, const char *help,
			      const uint64_t *first, size_t stride, unsigned n)
{
	unsigned i;

	metrics_family(w, name, METRICS_COUNTER, help);
	for (i = 0; i < n; i++) {
		const uint64_t *v = (const uint64_t *)((const char *)first + (size_t)i * stride);
		char idx[16];
		struct metrics_label l[] = { { "worker", idx } };

		snprintf(idx, sizeof(idx), "%u", i);
		metrics_sample(w, name, l, 1, __atomic_load_n(v, __ATOMIC_RELAXED));
	}
}

void metrics_write_histogram(struct metrics_writer *w, const char *name,
			     const struct metrics_label *labels, size_t nlabels,
			     const struct metrics_histogram *h)
{
	char le[32];
	uint64_t cumulative = 0;
	size_t i;

	if (!check_name(w, name))
		return;
	for (i = 0; i <= METRICS_LATENCY_NBUCKETS; i++) {
		cumulative += h->buckets[i];
		if (i < METRICS_LATENCY_NBUCKETS)
			format_seconds(metrics_latency_bounds_us[i], le, sizeof(le));
		else
			snprintf(le, sizeof(le), "+Inf");
		put_line_u64(w, name, "_bucket", labels, nlabels, le, cumulative);
	}
	format_seconds(h->sum_us, le, sizeof(le));
	put_line(w, name, "_sum", labels, nlabels, NULL, le, strlen(le));
	put_line_u64(w, name, "_count", labels, nlabels, NULL, h->count);
}

void metrics_write_build_info(struct metrics_writer *w, const char *program, const char *version,
			      const char *tls, bool aesni)
{
	const struct metrics_label labels[] = {
		{ "program", program },
		{ "version", version },
		{ "tls", tls },
		{ "aesni", aesni ? "on" : "off" },
	};

	metrics_family(w, "anyproxy_build_info", METRICS_GAUGE,
		       "Always 1; the labels name the program, its version and its TLS library.");
	metrics_sample(w, "anyproxy_build_info", labels, ARRAY_SIZE(labels), 1);
}

/* Open descriptors. Linux 6.2 and later give their number as the size of
 * /proc/self/fd: a look at the descriptor table's bitmap. Before, the
 * size is 0 and the entries are counted (the directory's own descriptor,
 * open while it is read, is not): 28 ms with 19,000 open, so a scrape of
 * a busy gateway would stall its loop that long. -errno on failure. */
static long count_fds(void)
{
	struct stat st;
	DIR *d;
	struct dirent *e;
	long n = 0;

	if (stat("/proc/self/fd", &st) == 0 && st.st_size > 0)
		return (long)st.st_size;
	d = opendir("/proc/self/fd");
	if (!d)
		return -errno;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n > 0 ? n - 1 : 0;
}

/* Resident memory from /proc/self/statm (its second field, in pages). */
static long long resident_bytes(void)
{
	unsigned long long size, resident;
	FILE *f = fopen("/proc/self/statm", "re");
	int n;

	if (!f)
		return -errno;
	n = fscanf(f, "%llu %llu", &size, &resident);
	fclose(f);
	if (n != 2)
		return -EIO;
	return (long long)(resident * (unsigned long long)sysconf(_SC_PAGESIZE));
}

void metrics_write_process(struct metrics_writer *w)
{
	long fds = count_fds();
	long long rss = resident_bytes();
	struct rlimit rl;

	if (fds >= 0) {
		metrics_write_value(w, "process_open_fds", METRICS_GAUGE, "Open file descriptors.",
				    (uint64_t)fds);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		metrics_write_value(w, "process_max_fds", METRICS_GAUGE,
				    "The soft limit of open file descriptors (RLIMIT_NOFILE).",
				    (uint64_t)rl.rlim_cur);
	}
	if (rss >= 0) {
		metrics_write_value(w, "process_resident_memory_bytes", METRICS_GAUGE,
				    "Resident memory size in bytes.", (uint64_t)rss);
	}
}

/* ---- scrape request ---- */

/* The end of the head (just past the empty line), or NULL. */
static const char *head_end(const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		if (i + 1 < len && buf[i + 1] == '\n')
			return buf + i + 2;
		if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
			return buf + i + 3;
	}
	return NULL;
}

static bool token_char(char c)
{
	return c > 0x20 && c < 0x7f;
}

int metrics_parse_request(const char *buf, size_t len, int *status, bool *head_only)
{
	const char *end = head_end(buf, len);
	const char *p = buf, *method, *target, *version;
	size_t mlen, tlen, path_len;

	*head_only = false;
	if (!end) {
		if (len < METRICS_REQUEST_MAX_BYTES)
			return 0;
		*status = 431;
		return -EPROTO;
	}
	if ((size_t)(end - buf) > METRICS_REQUEST_MAX_BYTES) {
		*status = 431;
		return -EPROTO;
	}
	*status = 400;
	method = p;
	while (p < end && token_char(*p))
		p++;
	mlen = (size_t)(p - method);
	if (!mlen || *p++ != ' ')
		return -EPROTO;
	target = p;
	while (p < end && token_char(*p))
		p++;
	tlen = (size_t)(p - target);
	if (!tlen || *p++ != ' ')
		return -EPROTO;
	version = p;
	if ((size_t)(end - version) < 9 || memcmp(version, "HTTP/1.", 7) != 0 ||
	    (version[7] != '0' && version[7] != '1') ||
	    !(version[8] == '\n' || (version[8] == '\r' && version[9] == '\n')))
		return -EPROTO;
	for (path_len = 0; path_len < tlen && target[path_len] != '?'; path_len++)
		;
	*head_only = mlen == 4 && !memcmp(method, "HEAD", 4);
	if (!(mlen == 3 && !memcmp(method, "GET", 3)) && !*head_only)
		*status = 405;
	else if (path_len != strlen(METRICS_PATH) || memcmp(target, METRICS_PATH, path_len) != 0)
		*status = 404;
	else
		*status = 200;
	return (int)(end - buf);
}
