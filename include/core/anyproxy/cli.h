/*
 * cli.h — what both daemons share at start-up: the command line
 * (-c FILE, --check-config, --version, --help), loading the configuration,
 * setting up the log. Core sits below TLS, so the program passes in the
 * function that names its TLS library (cli_program.library_version).
 */
#ifndef ANYPROXY_CLI_H
#define ANYPROXY_CLI_H

#include <stdbool.h>

#include "anyproxy/config.h"
#include "anyproxy/ring.h"

struct notify;
struct wg_member;
struct workgroup;

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILURE 1 /* runtime failure */
#define CLI_EXIT_CONFIG 2  /* bad command line or configuration */

#define CLI_MALLOC_TRIM_BYTES (64 * 1024 * 1024)
#define CLI_MALLOC_MMAP_BYTES (8 * 1024 * 1024)

struct cli_program {
	const char *name;           /* "anyproxy-gateway" */
	enum config_program config; /* which sections it reads */
	const char *default_config; /* used without -c */
	const char *summary;        /* one line for --help */
	/* names the TLS library for --version, e.g. tls_library_version */
	const char *(*library_version)(void);
};

/*
 * Parse argv, load and validate the configuration, open the log. Returns
 * -1 when the program should run, or an exit code (--help, --version,
 * --check-config, errors: the message was already printed).
 */
int cli_start(const struct cli_program *prog, int argc, char **argv, struct config *cfg);

/* SIGHUP: load the same file again into fresh (validated; nothing applied).
 * 0, or -errno with err naming file, line and key. */
int cli_reload(const struct cli_program *prog, struct config *fresh, char *err, size_t errlen);

/* (Re)open the log as cfg says. 0 or -errno. */
int cli_apply_log(const struct config *cfg);

/* What a daemon does on its signals (cli_loop_init): SIGHUP reloads
 * between the service manager's RELOADING=1 and READY=1 (notify.h), SIGTERM
 * and SIGINT stop. owner is the daemon (struct gateway, struct agent). */
struct cli_daemon {
	void *owner;
	struct notify *notify;
	void (*reload)(void *owner);
	void (*stop)(void *owner, int signo);
};

/* A daemon's event loop: the ring, SIGPIPE ignored, SIGTERM, SIGINT and
 * SIGHUP delivered through the ring to daemon's callbacks (copied: one
 * daemon per process, as signals are), and log lines written once per
 * iteration by the ring's before-wait hook. 0 or -errno (logged). */
int cli_loop_init(struct ring *r, unsigned entries, const struct cli_daemon *daemon);
/* Another loop thread of the same daemon (created in that thread): its
 * ring and the same per-iteration log flush, without signals (they stay
 * with the main loop; block them before starting the thread). 0 or
 * -errno (logged). */
int cli_worker_loop_init(struct ring *r, unsigned entries);

/* What a daemon's worker threads (workers 1.., workgroup.h) do at each
 * step, given the worker's workgroup member. */
struct cli_worker_ops {
	unsigned ring_entries; /* the size of each worker's ring */
	/* the ring exists (cli_worker_loop_init): set up the rest. 0 or -errno */
	int (*setup)(struct wg_member *m);
	/* every worker is ready (wg_ready): begin the work, then the loop runs */
	void (*start)(struct wg_member *m);
	/* the loop ended, or the set-up failed or was told to end: always */
	void (*teardown)(struct wg_member *m);
};

/* Start workers 1.. of wg (wg_start; ops is kept: one workgroup per
 * process). Each, on its thread: makes its loop on the ring wg_set gave
 * it, sets up, reports to worker 0 and waits for its word (wg_ready), runs
 * the loop when told to (a failure is logged), tears down and says so
 * (wg_exited). wg_start's result. */
int cli_workers_start(struct workgroup *wg, const struct cli_worker_ops *ops);

/* ring_run with the loop thread's log lines batched (log.h) while it runs;
 * everything queued is written before it returns. Each loop thread has its
 * own batch and retry timer. */
int cli_loop_run(struct ring *r);

/* "anyproxy-gateway 0.1.0 (wolfSSL 5.5.4 (AES-NI), liburing 2.3)" */
void cli_print_version(const struct cli_program *prog);

#endif
