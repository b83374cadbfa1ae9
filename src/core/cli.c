/* cli.c — command line and start-up shared by both daemons (see cli.h). */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "ap-build.h"
#include "anyproxy/cli.h"
#include "anyproxy/log.h"
#include "anyproxy/notify.h"
#include "anyproxy/workgroup.h"

/* The file cli_start loaded, for cli_reload. */
static const char *loaded_path;

/* While the log sink will not take more, the loop wakes this often to try
 * again, even if nothing else happens. */
#define CLI_LOG_RETRY_MS 10

/* Wakes the loop so the before-wait hook flushes again; nothing to do in
 * the callback itself. One loop per daemon, so one timer. */
/* per thread: each loop thread flushes its own batch on its own ring */
static _Thread_local struct timer log_retry;

void cli_print_version(const struct cli_program *prog)
{
	printf("%s %s (%s, liburing %s)\n", prog->name, AP_VERSION, prog->library_version(),
	       AP_LIBURING_VERSION);
}

static void usage(const struct cli_program *prog, FILE *out)
{
	fprintf(out,
		"Usage: %s [-c FILE] [--check-config]\n"
		"%s\n\n"
		"  -c, --config FILE   configuration file (default %s)\n"
		"      --check-config  validate the configuration and exit (0 valid, 2 not)\n"
		"  -V, --version       print the version and the TLS library, then exit\n"
		"  -h, --help          this text\n\n"
		"Every key can be overridden by the environment variable SECTION_KEY,\n"
		"e.g. CLIENT_GROUP_ID=production. See docs/config.md.\n",
		prog->name, prog->summary, prog->default_config);
}

/* A proxy holds two descriptors per relayed connection, and the soft limit
 * that shells and most service managers hand down is 1024: raise it to the
 * hard limit (as Go's runtime does for every program since 1.19). Nothing
 * here uses select(), whose FD_SETSIZE is why the soft limit stays low. */
static void raise_nofile(void)
{
	struct rlimit rl;
	rlim_t was;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	was = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_warn("Open files limit not raised", LF_S("error", strerror(errno)),
			 LF_U("soft", was), LF_U("hard", rl.rlim_max));
		return;
	}
	if (rl.rlim_max == RLIM_INFINITY)
		log_info("Open files limit raised", LF_U("from", was), LF_S("to", "unlimited"));
	else
		log_info("Open files limit raised", LF_U("from", was), LF_U("to", rl.rlim_max));
}

int cli_start(const struct cli_program *prog, int argc, char **argv, struct config *cfg)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = prog->default_config;
	bool check_only = false;
	char err[512];
	int c, ret;

	while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'C':
			check_only = true;
			break;
		case 'V':
			cli_print_version(prog);
			return CLI_EXIT_OK;
		case 'h':
			usage(prog, stdout);
			return CLI_EXIT_OK;
		default:
			usage(prog, stderr);
			return CLI_EXIT_CONFIG;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog->name, argv[optind]);
		usage(prog, stderr);
		return CLI_EXIT_CONFIG;
	}
	loaded_path = path;
	ret = config_load(cfg, prog->config, path, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "%s: configuration error: %s\n", prog->name, err);
		return CLI_EXIT_CONFIG;
	}
	if (check_only) {
		printf("%s: configuration %s is valid\n", prog->name, path);
		config_free(cfg);
		return CLI_EXIT_OK;
	}
	/* Relay buffers are allocated while data flows and freed when idle.
	 * Without this, glibc hands the heap top back to the kernel after a
	 * burst (brk shrink + TLB shootdown on every core), measured at half
	 * the gateway's CPU in a bulk transfer; and buffers over 128 KiB would
	 * each be a fresh mmap. Memory freed stays in the heap for reuse. */
	mallopt(M_TRIM_THRESHOLD, CLI_MALLOC_TRIM_BYTES);
	mallopt(M_MMAP_THRESHOLD, CLI_MALLOC_MMAP_BYTES);
	ret = cli_apply_log(cfg);
	if (ret < 0) {
		fprintf(stderr, "%s: cannot open log output %s: %s\n", prog->name, cfg->log.output,
			strerror(-ret));
		config_free(cfg);
		return CLI_EXIT_CONFIG;
	}
	config_warn_exposed_files(cfg, path);
	raise_nofile();
	return -1;
}

int cli_reload(const struct cli_program *prog, struct config *fresh, char *err, size_t errlen)
{
	return config_load(fresh, prog->config, loaded_path, err, errlen);
}

int cli_apply_log(const struct config *cfg)
{
	return log_setup((enum log_level)cfg->log.level, (int)cfg->log.format, cfg->log.output);
}

static void log_retry_due(struct ring *r, struct timer *t)
{
}

static void flush_log_before_wait(struct ring *r, void *arg)
{
	if (log_flush() > 0 && !timer_armed(&log_retry))
		timer_arm(r, &log_retry, CLI_LOG_RETRY_MS);
}

int cli_worker_loop_init(struct ring *r, unsigned entries)
{
	int ret = ring_init(r, entries);

	if (ret < 0) {
		log_error("Cannot create io_uring", LF_S("error", strerror(-ret)));
		return ret;
	}
	ring_set_before_wait(r, flush_log_before_wait, NULL);
	return 0;
}

/* The daemon's worker steps (cli_workers_start). */
static const struct cli_worker_ops *worker_ops;

static void *worker_thread(void *arg)
{
	const struct cli_worker_ops *ops = worker_ops;
	struct wg_member *m = arg;
	int ret = cli_worker_loop_init(m->ring, ops->ring_entries);

	if (ret == 0)
		ret = ops->setup(m);
	if (wg_ready(m, ret) > 0) {
		ops->start(m);
		ret = cli_loop_run(m->ring);
		if (ret < 0)
			log_error("Event loop failed", LF_U("worker", m->index),
				  LF_S("error", strerror(-ret)));
	}
	ops->teardown(m);
	wg_exited(m);
	return NULL;
}

int cli_workers_start(struct workgroup *wg, const struct cli_worker_ops *ops)
{
	worker_ops = ops;
	return wg_start(wg, worker_thread);
}

int cli_loop_run(struct ring *r)
{
	int batching = log_batch_begin();
	int ret;

	if (batching < 0)
		log_warn("Log lines are written one by one", LF_S("error", strerror(-batching)));
	timer_init(&log_retry, log_retry_due);
	ret = ring_run(r);
	timer_disarm(r, &log_retry);
	if (batching == 0)
		log_batch_end();
	return ret;
}

/* The daemon whose loop watches the signals (cli_loop_init). */
static struct cli_daemon signal_daemon;

static void on_signal(struct ring *r, int signo)
{
	const struct cli_daemon *d = &signal_daemon;

	if (signo == SIGHUP) {
		notify_reloading(d->notify);
		d->reload(d->owner);
		notify_reloaded(d->notify);
		return;
	}
	d->stop(d->owner, signo);
}

int cli_loop_init(struct ring *r, unsigned entries, const struct cli_daemon *daemon)
{
	static const int signals[] = { SIGTERM, SIGINT, SIGHUP };
	int ret = ring_init(r, entries);

	if (ret < 0) {
		log_error("Cannot create io_uring", LF_S("error", strerror(-ret)));
		return ret;
	}
	signal(SIGPIPE, SIG_IGN); /* sends use MSG_NOSIGNAL; this covers the rest */
	ring_set_before_wait(r, flush_log_before_wait, NULL);
	signal_daemon = *daemon;
	ret = ring_watch_signals(r, signals, (int)ARRAY_SIZE(signals), on_signal);
	if (ret < 0)
		log_error("Cannot watch signals", LF_S("error", strerror(-ret)));
	return ret;
}
