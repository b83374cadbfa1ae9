/*
 * test_config.c — configuration loading: defaults, the spec's examples, every
 * error a person can make (each must name the file, the line and the key),
 * environment overrides, lists, line length limits and IPv6 addresses.
 *
 * Each test runs in a fresh temporary directory under /tmp holding stand-in
 * certificate files (config_load only checks that they are readable), so the
 * configurations below use relative paths like "server.crt".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "anyproxy/acl.h"
#include "anyproxy/config.h"
#include "anyproxy/log.h"
#include "configdoc.h"

#define ERR_BYTES 512
#define TEXT_BYTES 8192
#define LONG_LINE_SLOTS 4
#define LONG_LINE_MAX_BYTES 2048

/* Every environment variable config_load reads; cleared before each test so
 * the caller's environment cannot change the results. */
static const char *const config_env_vars[] = {
	"GATEWAY_LISTEN_ADDR",
	"GATEWAY_TLS_CERT",
	"GATEWAY_TLS_KEY",
	"GATEWAY_CLIENT_CA",
	"GATEWAY_AUTH_USERNAME",
	"GATEWAY_AUTH_PASSWORD",
	"GATEWAY_HANDSHAKE_TIMEOUT_MS",
	"GATEWAY_PING_INTERVAL_MS",
	"GATEWAY_PING_TIMEOUT_MS",
	"PROXY_HTTP_LISTEN_ADDR",
	"PROXY_HTTP_AUTH_USERNAME",
	"PROXY_HTTP_AUTH_PASSWORD",
	"PROXY_SOCKS5_LISTEN_ADDR",
	"PROXY_SOCKS5_AUTH_USERNAME",
	"PROXY_SOCKS5_AUTH_PASSWORD",
	"CLIENT_GATEWAY_ADDR",
	"CLIENT_GATEWAY_TLS_CERT",
	"CLIENT_GATEWAY_SERVER_NAME",
	"CLIENT_TLS_CERT",
	"CLIENT_TLS_KEY",
	"CLIENT_CLIENT_ID",
	"CLIENT_GROUP_ID",
	"CLIENT_REPLICAS",
	"CLIENT_AUTH_USERNAME",
	"CLIENT_AUTH_PASSWORD",
	"CLIENT_ALLOWED_HOSTS",
	"CLIENT_FORBIDDEN_HOSTS",
	"CLIENT_HANDSHAKE_TIMEOUT_MS",
	"CLIENT_PING_INTERVAL_MS",
	"CLIENT_PING_TIMEOUT_MS",
	"CLIENT_RECONNECT_INITIAL_DELAY_MS",
	"CLIENT_RECONNECT_MAX_DELAY_MS",
	"CLIENT_CONNECT_TIMEOUT_MS",
	"LOG_LEVEL",
	"LOG_FORMAT",
	"LOG_OUTPUT",
	"CONTROL_SOCKET",
};

static const char *const cert_files[] = {
	"server.crt", "server.key", "ca.crt", "agent.crt", "agent.key",
};

static char test_dir[sizeof("/tmp/ap-test-config.XXXXXX")];
static char saved_cwd[PATH_MAX];
static char config_path[PATH_MAX]; /* the file of the last load_text() */
static char err[ERR_BYTES];

#define GATEWAY_MIN                      \
	"[gateway]\n"                    \
	"tls_cert = server.crt\n"        \
	"tls_key = server.key\n"         \
	"auth_username = gateway_user\n" \
	"auth_password = gateway_password\n"

#define CLIENT_MIN                                  \
	"[client]\n"                                \
	"gateway_addr = gateway.example.com:8443\n" \
	"gateway_tls_cert = server.crt\n"           \
	"client_id = prod-client-001\n"             \
	"auth_username = gateway_user\n"            \
	"auth_password = gateway_password\n"

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
	/* as the agent does before loading: host patterns are checked */
	assert_int_equal(config_register_check(CONFIG_CHECK_HOST_PATTERN, acl_check_pattern), 0);
	for (size_t i = 0; i < ARRAY_SIZE(config_env_vars); i++)
		unsetenv(config_env_vars[i]);
	assert_non_null(getcwd(saved_cwd, sizeof(saved_cwd)));
	strcpy(test_dir, "/tmp/ap-test-config.XXXXXX");
	assert_non_null(mkdtemp(test_dir));
	assert_int_equal(chdir(test_dir), 0);
	for (size_t i = 0; i < ARRAY_SIZE(cert_files); i++)
		write_file(cert_files[i], "-----BEGIN STAND-IN-----\n", 25);
	return 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	for (size_t i = 0; i < ARRAY_SIZE(config_env_vars); i++)
		unsetenv(config_env_vars[i]);
	assert_int_equal(chdir(saved_cwd), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* Write len bytes of data to a new file (mkstemp) and load it. */
static int load_bytes(struct config *cfg, enum config_program program, const char *data, size_t len)
{
	int fd;

	snprintf(config_path, sizeof(config_path), "%s/anyproxy.XXXXXX", test_dir);
	fd = mkstemp(config_path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	return config_load(cfg, program, config_path, err, sizeof(err));
}

static int load_text(struct config *cfg, enum config_program program, const char *text)
{
	return load_bytes(cfg, program, text, strlen(text));
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

static void assert_not_contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle))
		fail_msg("did not expect \"%s\" in \"%s\"", needle, haystack);
}

/*
 * Load text, expect -EINVAL and an error naming the file, the line (0: an
 * error with no line, "FILE: ...") and the "[section] key" (NULL: none),
 * plus a message fragment. The config must come back zeroed.
 */
static void expect_error(enum config_program program, const char *text, int line,
			 const char *section_key, const char *fragment)
{
	struct config cfg;
	char where[PATH_MAX + 32];

	assert_int_equal(load_text(&cfg, program, text), -EINVAL);
	if (line > 0)
		snprintf(where, sizeof(where), "%s:%d: ", config_path, line);
	else
		snprintf(where, sizeof(where), "%s: ", config_path);
	if (strncmp(err, where, strlen(where)) != 0)
		fail_msg("expected the error to start with \"%s\": \"%s\"", where, err);
	if (section_key)
		assert_contains(err, section_key);
	assert_contains(err, fragment);
	assert_null(cfg.gateway.tls_cert);
	assert_null(cfg.client.group_id);
	assert_int_equal(cfg.program, 0);
}

static void expect_env_error(enum config_program program, const char *text, const char *var,
			     const char *fragment)
{
	struct config cfg;
	char where[64];

	assert_int_equal(load_text(&cfg, program, text), -EINVAL);
	snprintf(where, sizeof(where), "environment %s: ", var);
	if (strncmp(err, where, strlen(where)) != 0)
		fail_msg("expected the error to start with \"%s\": \"%s\"", where, err);
	assert_contains(err, fragment);
}

static void load_ok(struct config *cfg, enum config_program program, const char *text)
{
	int rc = load_text(cfg, program, text);

	if (rc != 0)
		fail_msg("config_load failed (%d): %s", rc, err);
	assert_string_equal(err, "");
}

/* ---- successful loads ---- */

static void test_gateway_defaults(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN);
	assert_int_equal(cfg.program, CONFIG_GATEWAY);
	assert_true(cfg.gateway.listen_addr.set);
	assert_string_equal(cfg.gateway.listen_addr.host, "");
	assert_int_equal(cfg.gateway.listen_addr.port, 8443);
	assert_string_equal(cfg.gateway.tls_cert, "server.crt");
	assert_string_equal(cfg.gateway.tls_key, "server.key");
	assert_null(cfg.gateway.client_ca);
	assert_string_equal(cfg.gateway.auth_username, "gateway_user");
	assert_string_equal(cfg.gateway.auth_password, "gateway_password");
	assert_int_equal(cfg.gateway.handshake_timeout_ms, 10000);
	assert_int_equal(cfg.gateway.ping_interval_ms, 10000);
	assert_int_equal(cfg.gateway.ping_timeout_ms, 30000);
	assert_false(cfg.http.listen_addr.set);
	assert_null(cfg.http.auth_username);
	assert_null(cfg.http.auth_password);
	assert_false(cfg.socks5.listen_addr.set);
	assert_int_equal(cfg.log.level, LOG_INFO);
	assert_int_equal(cfg.log.format, LOG_FORMAT_TEXT);
	assert_string_equal(cfg.log.output, "stderr");
	assert_string_equal(cfg.control.socket, "/run/anyproxy/gateway.sock");
	/* Keys of the other program stay zero. */
	assert_null(cfg.client.client_id);
	assert_int_equal(cfg.client.replicas, 0);
	config_free(&cfg);
	assert_null(cfg.gateway.tls_cert);
}

static void test_client_defaults(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN);
	assert_int_equal(cfg.program, CONFIG_CLIENT);
	assert_int_equal(cfg.client.gateway_addr.count, 1);
	assert_string_equal(cfg.client.gateway_addr.items[0].host, "gateway.example.com");
	assert_int_equal(cfg.client.gateway_addr.items[0].port, 8443);
	/* unset: each gateway is checked against its own host part */
	assert_null(cfg.client.gateway_server_name);
	assert_null(cfg.client.tls_cert);
	assert_null(cfg.client.tls_key);
	assert_string_equal(cfg.client.client_id, "prod-client-001");
	assert_string_equal(cfg.client.group_id, "");
	assert_int_equal(cfg.client.replicas, 1);
	assert_int_equal(cfg.client.allowed_hosts.count, 0);
	assert_int_equal(cfg.client.forbidden_hosts.count, 0);
	assert_int_equal(cfg.client.handshake_timeout_ms, 10000);
	assert_int_equal(cfg.client.ping_interval_ms, 10000);
	assert_int_equal(cfg.client.ping_timeout_ms, 30000);
	assert_int_equal(cfg.client.reconnect_initial_delay_ms, 500);
	assert_int_equal(cfg.client.reconnect_max_delay_ms, 30000);
	assert_int_equal(cfg.client.connect_timeout_ms, 10000);
	assert_int_equal(cfg.log.level, LOG_INFO);
	assert_string_equal(cfg.log.output, "stderr");
	assert_null(cfg.control.socket); /* a gateway key */
	assert_null(cfg.gateway.tls_cert);
	config_free(&cfg);
}

/* The spec's YAML examples ("Configuration" section), written as INI. */
static void test_spec_gateway_example(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_GATEWAY,
		"[gateway]\n"
		"listen_addr = :8443\n"
		"tls_cert = server.crt\n"
		"tls_key = server.key\n"
		"auth_username = gateway_user\n"
		"auth_password = gateway_password\n"
		"\n"
		"[proxy.http]\n"
		"listen_addr = :8080\n"
		"auth_username = proxy_user  \n"
		"auth_password = proxy_pass\n"
		"\n"
		"[proxy.socks5]\n"
		"listen_addr = :1080\n"
		"auth_username = proxy_user\n"
		"auth_password = proxy_pass\n");
	assert_int_equal(cfg.gateway.listen_addr.port, 8443);
	assert_true(cfg.http.listen_addr.set);
	assert_int_equal(cfg.http.listen_addr.port, 8080);
	assert_string_equal(cfg.http.auth_username, "proxy_user");
	assert_string_equal(cfg.http.auth_password, "proxy_pass");
	assert_int_equal(cfg.socks5.listen_addr.port, 1080);
	assert_string_equal(cfg.socks5.auth_username, "proxy_user");
	config_free(&cfg);
}

static void test_spec_client_example(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_CLIENT,
		"; client joins the production group\n"
		"[client]\n"
		"gateway_addr = gateway.example.com:8443\n"
		"gateway_tls_cert = server.crt\n"
		"client_id = prod-client-001\n"
		"# Specify the group this client belongs to\n"
		"group_id = production\n"
		"replicas = 1\n"
		"auth_username = gateway_user\n"
		"auth_password = gateway_password\n");
	assert_string_equal(cfg.client.group_id, "production");
	assert_int_equal(cfg.client.replicas, 1);
	config_free(&cfg);
}

/* The spec's deployment scenarios: production, testing, development. */
static void test_spec_deployment_examples(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_CLIENT,
		CLIENT_MIN "group_id = production\n"
			   "replicas = 3\n"
			   "forbidden_hosts = localhost, 127.0.0.1, 192.168.0.0/16\n");
	assert_int_equal(cfg.client.replicas, 3);
	assert_int_equal(cfg.client.forbidden_hosts.count, 3);
	assert_string_equal(cfg.client.forbidden_hosts.items[2], "192.168.0.0/16");
	config_free(&cfg);

	load_ok(&cfg, CONFIG_CLIENT,
		CLIENT_MIN "group_id = testing\n"
			   "replicas = 2\n"
			   "forbidden_hosts = localhost\n"
			   "forbidden_hosts = 127.0.0.1\n");
	assert_int_equal(cfg.client.forbidden_hosts.count, 2);
	config_free(&cfg);

	load_ok(&cfg, CONFIG_CLIENT,
		CLIENT_MIN "group_id = development\n"
			   "allowed_hosts = .*\n");
	assert_int_equal(cfg.client.allowed_hosts.count, 1);
	assert_string_equal(cfg.client.allowed_hosts.items[0], ".*");
	config_free(&cfg);

	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "group_id = asia-pacific\n");
	assert_string_equal(cfg.client.group_id, "asia-pacific");
	config_free(&cfg);
}

static void test_log_section(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_CLIENT,
		CLIENT_MIN "[log]\n"
			   "level = debug\n"
			   "format = json\n"
			   "output = /var/log/anyproxy/client.log\n");
	assert_int_equal(cfg.log.level, LOG_DEBUG);
	assert_int_equal(cfg.log.format, LOG_FORMAT_JSON);
	assert_string_equal(cfg.log.output, "/var/log/anyproxy/client.log");
	config_free(&cfg);
}

/* CRLF line ends, a UTF-8 byte order mark, comments, blank lines, and a
 * ';' inside a value (no inline comments: it is part of a password). */
static void test_file_format_details(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_GATEWAY,
		"\xef\xbb\xbf[gateway]\r\n"
		"tls_cert = server.crt\r\n"
		"   # indented comment\r\n"
		"\r\n"
		"tls_key=server.key\r\n"
		"auth_username = gateway_user\r\n"
		"auth_password = pa ss;word=1\r\n");
	assert_string_equal(cfg.gateway.tls_key, "server.key");
	assert_string_equal(cfg.gateway.auth_password, "pa ss;word=1");
	config_free(&cfg);
}

static void test_lists(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_CLIENT,
		CLIENT_MIN "allowed_hosts = a.example.com,b.example.com\n"
			   "allowed_hosts =  c.example.com , , d.example.com,\n"
			   "allowed_hosts =\n"
			   "forbidden_hosts = ,\n");
	assert_int_equal(cfg.client.allowed_hosts.count, 4);
	assert_string_equal(cfg.client.allowed_hosts.items[0], "a.example.com");
	assert_string_equal(cfg.client.allowed_hosts.items[1], "b.example.com");
	assert_string_equal(cfg.client.allowed_hosts.items[2], "c.example.com");
	assert_string_equal(cfg.client.allowed_hosts.items[3], "d.example.com");
	assert_int_equal(cfg.client.forbidden_hosts.count, 0);
	config_free(&cfg);
}

static void test_list_item_limit(void **state)
{
	struct config cfg;
	char *text = malloc(TEXT_BYTES * 4);
	size_t n;

	assert_non_null(text);
	n = (size_t)snprintf(text, TEXT_BYTES, "%s", CLIENT_MIN);
	/* 1025 items, 5 per line. */
	for (int i = 0; i < 205; i++)
		n += (size_t)sprintf(text + n, "allowed_hosts = a,b,c,d,e\n");
	assert_int_equal(load_text(&cfg, CONFIG_CLIENT, text), -EINVAL);
	assert_contains(err, "[client] allowed_hosts: more than 1024 items");
	free(text);
}

/* prefix padded with 'u' to len bytes. The result lives until
 * LONG_LINE_SLOTS more calls, so a test can hold a few at once. */
static const char *long_line(const char *prefix, size_t len)
{
	static char slots[LONG_LINE_SLOTS][LONG_LINE_MAX_BYTES];
	static unsigned next;
	char *line = slots[next++ % LONG_LINE_SLOTS];
	size_t plen = strlen(prefix);

	assert_true(len < LONG_LINE_MAX_BYTES && plen <= len);
	memcpy(line, prefix, plen);
	memset(line + plen, 'u', len - plen);
	line[len] = '\0';
	return line;
}

static void test_line_of_1000_bytes_works(void **state)
{
	char text[TEXT_BYTES];
	struct config cfg;

	/* A host regex list item, since most strings have shorter limits. */
	snprintf(text, sizeof(text), CLIENT_MIN "%s\n", long_line("forbidden_hosts = ~", 1000));
	load_ok(&cfg, CONFIG_CLIENT, text);
	assert_int_equal(cfg.client.forbidden_hosts.count, 1);
	assert_int_equal(strlen(cfg.client.forbidden_hosts.items[0]), 1000 - 18);
	config_free(&cfg);
}

static void test_line_limit_is_1024_bytes(void **state)
{
	char text[TEXT_BYTES];
	const char *line = long_line("forbidden_hosts = ~", 1024);
	struct config cfg;

	/* The line end does not count, "\r\n" included. */
	snprintf(text, sizeof(text), CLIENT_MIN "%s\r\n", line);
	load_ok(&cfg, CONFIG_CLIENT, text);
	assert_int_equal(strlen(cfg.client.forbidden_hosts.items[0]), 1024 - 18);
	config_free(&cfg);

	line = long_line("forbidden_hosts = ~", 1025);
	snprintf(text, sizeof(text), CLIENT_MIN "%s\n", line);
	expect_error(CONFIG_CLIENT, text, 7, NULL, "line too long (max 1024 bytes)");
	/* The same line at the end of the file, without a newline. */
	snprintf(text, sizeof(text), CLIENT_MIN "%s", line);
	expect_error(CONFIG_CLIENT, text, 7, NULL, "line too long (max 1024 bytes)");
}

static void test_host_patterns_checked_per_line(void **state)
{
	struct config cfg;

	/* the bad pattern's own line is named, not the first line of the key */
	expect_error(CONFIG_CLIENT,
		     CLIENT_MIN "forbidden_hosts = localhost, 10.0.0.0/8\n"
				"forbidden_hosts = 10.0.0.1/8\n",
		     8, "[client] forbidden_hosts", "10.0.0.1/8");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "allowed_hosts = ~(unclosed\n", 7,
		     "[client] allowed_hosts", "bad regular expression");
	/* a host regex may contain commas: it is not split */
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "allowed_hosts = api.example.com, ~a{1,3}\\.com\n");
	assert_int_equal(cfg.client.allowed_hosts.count, 2);
	assert_string_equal(cfg.client.allowed_hosts.items[1], "~a{1,3}\\.com");
	config_free(&cfg);
}

/* The pattern check belongs to the agent's ACL and is registered by it: a
 * client configuration that nobody can check refuses to load rather than
 * pass its patterns unchecked; the gateway has no such keys. */
static void test_host_pattern_check_is_registered(void **state)
{
	struct config cfg;

	assert_int_equal(config_register_check(CONFIG_CHECK_NONE, acl_check_pattern), -EINVAL);
	assert_int_equal(config_register_check(CONFIG_CHECKS, acl_check_pattern), -EINVAL);
	assert_int_equal(config_register_check(CONFIG_CHECK_HOST_PATTERN, NULL), 0);
	expect_error(CONFIG_CLIENT, CLIENT_MIN, 0, "[client] allowed_hosts",
		     "internal error: no check registered for its items");
	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN);
	config_free(&cfg);
	assert_int_equal(config_register_check(CONFIG_CHECK_HOST_PATTERN, acl_check_pattern), 0);
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "allowed_hosts = api.example.com\n");
	config_free(&cfg);
}

static void test_reload_swaps_live_keys_only(void **state)
{
	struct config live, fresh;
	char restart[256];

	load_ok(&live, CONFIG_CLIENT, CLIENT_MIN "group_id = blue\nforbidden_hosts = localhost\n");
	load_ok(&fresh, CONFIG_CLIENT,
		CLIENT_MIN "group_id = green\nforbidden_hosts = 10.0.0.0/8, localhost\n"
			   "connect_timeout_ms = 2500\n");
	assert_int_equal(config_reload(&live, &fresh, restart, sizeof(restart)), 1);
	assert_string_equal(restart, "[client] group_id");
	/* reloadable keys took the new values ... */
	assert_int_equal(live.client.forbidden_hosts.count, 2);
	assert_int_equal(live.client.connect_timeout_ms, 2500);
	/* ... the restart-only key kept the running one */
	assert_string_equal(live.client.group_id, "blue");
	/* fresh now holds the old values and frees them */
	assert_int_equal(fresh.client.forbidden_hosts.count, 1);
	config_free(&fresh);
	config_free(&live);
}

/* CLIENT_MIN without its gateway_addr line (line 2), for the list tests. */
#define CLIENT_NO_GATEWAY                 \
	"[client]\n"                      \
	"gateway_tls_cert = server.crt\n" \
	"client_id = prod-client-001\n"   \
	"auth_username = gateway_user\n"  \
	"auth_password = gateway_password\n"

/* [client] gateway_addr is a list: comma-separated and repeated lines
 * append, each entry is an address checked once, duplicates and more than
 * CONFIG_GATEWAYS_MAX are refused, the environment replaces the list. */
static void test_gateway_addr_list(void **state)
{
	char text[TEXT_BYTES], one[64], too_many[64];
	struct config cfg, fresh;
	char restart[256];
	size_t used;

	load_ok(&cfg, CONFIG_CLIENT,
		CLIENT_NO_GATEWAY "gateway_addr = gw1.example.com:8443 , 10.0.0.2:9443,,\n"
				  "gateway_addr = [2001:db8::1]:8443\n"
				  "gateway_addr = GW1.example.com:8444\n");
	assert_int_equal(cfg.client.gateway_addr.count, 4);
	assert_string_equal(cfg.client.gateway_addr.items[0].host, "gw1.example.com");
	assert_int_equal(cfg.client.gateway_addr.items[0].port, 8443);
	assert_string_equal(cfg.client.gateway_addr.items[1].host, "10.0.0.2");
	assert_int_equal(cfg.client.gateway_addr.items[1].port, 9443);
	assert_string_equal(cfg.client.gateway_addr.items[2].host, "2001:db8::1");
	/* the same host on another port is another gateway */
	assert_int_equal(cfg.client.gateway_addr.items[3].port, 8444);
	assert_null(cfg.client.gateway_server_name);

	/* the list needs a restart: a reload reports it and keeps the running one */
	load_ok(&fresh, CONFIG_CLIENT, CLIENT_MIN);
	assert_int_equal(config_reload(&cfg, &fresh, restart, sizeof(restart)), 1);
	assert_string_equal(restart, "[client] gateway_addr");
	assert_int_equal(cfg.client.gateway_addr.count, 4);
	config_free(&fresh);
	config_free(&cfg);

	/* duplicates, host names compared without case, across lines too */
	expect_error(CONFIG_CLIENT, CLIENT_NO_GATEWAY "gateway_addr = gw:1, GW:1\n", 6,
		     "[client] gateway_addr", "'GW:1' is listed twice");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "gateway_addr = gateway.example.com:8443\n", 7,
		     "[client] gateway_addr", "listed twice");
	/* each entry is an address to dial */
	expect_error(CONFIG_CLIENT, CLIENT_NO_GATEWAY "gateway_addr = gw:1, gw2\n", 6,
		     "[client] gateway_addr", "missing ':port'");
	expect_error(CONFIG_CLIENT, CLIENT_NO_GATEWAY "gateway_addr = gw:1, :8443\n", 6,
		     "[client] gateway_addr", "needs a host");
	expect_error(CONFIG_CLIENT, CLIENT_NO_GATEWAY "gateway_addr = gw:1, gw:99999\n", 6,
		     "[client] gateway_addr", "port must be a number");
	expect_error(CONFIG_CLIENT, CLIENT_NO_GATEWAY "gateway_addr = , ,\n", 6,
		     "[client] gateway_addr", "required key is empty");

	/* CONFIG_GATEWAYS_MAX entries load; one more is refused */
	used = (size_t)snprintf(text, sizeof(text), "%sgateway_addr = gw0:1", CLIENT_NO_GATEWAY);
	for (unsigned i = 1; i < CONFIG_GATEWAYS_MAX; i++) {
		snprintf(one, sizeof(one), ", gw%u:1", i);
		assert_true(used + strlen(one) + 2 < sizeof(text));
		strcpy(text + used, one);
		used += strlen(one);
	}
	strcpy(text + used, "\n");
	load_ok(&cfg, CONFIG_CLIENT, text);
	assert_int_equal(cfg.client.gateway_addr.count, CONFIG_GATEWAYS_MAX);
	config_free(&cfg);
	strcpy(text + used, "\ngateway_addr = one-too-many:1\n");
	snprintf(too_many, sizeof(too_many), "more than %d addresses", CONFIG_GATEWAYS_MAX);
	expect_error(CONFIG_CLIENT, text, 7, "[client] gateway_addr", too_many);

	/* the environment replaces the file's list */
	setenv("CLIENT_GATEWAY_ADDR", "a.example:1,b.example:2", 1);
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN);
	assert_int_equal(cfg.client.gateway_addr.count, 2);
	assert_string_equal(cfg.client.gateway_addr.items[0].host, "a.example");
	assert_string_equal(cfg.client.gateway_addr.items[1].host, "b.example");
	config_free(&cfg);
	unsetenv("CLIENT_GATEWAY_ADDR");
}

/* [gateway] fallback_to_default: on by default (the spec), reloadable. */
static void test_fallback_to_default(void **state)
{
	struct config live, fresh;
	char restart[256];

	load_ok(&live, CONFIG_GATEWAY, GATEWAY_MIN);
	assert_true(live.gateway.fallback_to_default);
	load_ok(&fresh, CONFIG_GATEWAY, GATEWAY_MIN "fallback_to_default = false\n");
	assert_false(fresh.gateway.fallback_to_default);
	assert_int_equal(config_reload(&live, &fresh, restart, sizeof(restart)), 0);
	assert_false(live.gateway.fallback_to_default);
	config_free(&fresh);
	config_free(&live);
}

static void test_group_sections(void **state)
{
	struct config cfg;
	const struct config_group_auth *g;

	load_ok(&cfg, CONFIG_GATEWAY,
		GATEWAY_MIN "[group.production]\nauth_password = prod-secret\n"
			    "[group.eu.west]\nauth_username = eu\nauth_password = eu-secret\n");
	assert_int_equal(cfg.ngroups, 2);
	g = config_group_auth(&cfg, "production", 10);
	assert_non_null(g);
	assert_null(g->auth_username);
	assert_string_equal(g->auth_password, "prod-secret");
	g = config_group_auth(&cfg, "eu.west", 7);
	assert_string_equal(g->auth_username, "eu");
	assert_null(config_group_auth(&cfg, "testing", 7));
	assert_null(config_group_auth(&cfg, "production", 4)); /* no prefix match */
	config_free(&cfg);

	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[group.production]\nauth_username = u\n", 6,
		     "[group.production] auth_password", "required key is missing");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[group.a]\nauth_password = x\n[group.a]\nauth_password = y\n", 8,
		     NULL, "section appears twice");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[group.bad/name]\nauth_password = x\n", 6, NULL,
		     "a group name has only");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[group.a]\nauth_password = x\nport = 1\n", 8,
		     "[group.a] port", "unknown key");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[group.a]\nauth_username = a.b\nauth_password = x\n", 7,
		     "[group.a] auth_username", "'.'");
	/* the agent has no group sections */
	expect_error(CONFIG_CLIENT, CLIENT_MIN "[group.a]\nauth_password = x\n", 7, NULL,
		     "unknown section");
}

/* [forward.NAME]: parsed once, every key checked, restart-only on reload. */
static void test_forward_sections(void **state)
{
	struct config cfg, fresh;
	const struct config_forward *f;
	struct sockaddr_in in4 = { .sin_family = AF_INET };
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
	char restart[256];

	load_ok(&cfg, CONFIG_GATEWAY,
		GATEWAY_MIN
		"[forward.ssh]\nlisten_addr = 127.0.0.1:2222\ntarget = db.internal:22\n"
		"group = prod.eu\nallowed_sources = 127.0.0.2/32, 10.0.0.0/8\n"
		"allowed_sources = 2001:db8::/32\n"
		"[forward.web]\nlisten_addr = :8088\ntarget = [::1]:80\nprotocol = tcp\n");
	assert_int_equal(cfg.nforwards, 2);
	f = &cfg.forwards[0];
	assert_string_equal(f->name, "ssh");
	assert_string_equal(f->group, "prod.eu");
	assert_string_equal(f->target.host, "db.internal");
	assert_int_equal(f->target.port, 22);
	assert_int_equal(f->listen_addr.port, 2222);
	assert_int_equal(f->nsources, 3);
	inet_pton(AF_INET, "127.0.0.2", &in4.sin_addr);
	assert_true(config_forward_source_allowed(f, (struct sockaddr *)&in4));
	inet_pton(AF_INET, "127.0.0.1", &in4.sin_addr);
	assert_false(config_forward_source_allowed(f, (struct sockaddr *)&in4));
	inet_pton(AF_INET, "10.200.3.4", &in4.sin_addr);
	assert_true(config_forward_source_allowed(f, (struct sockaddr *)&in4));
	inet_pton(AF_INET6, "::ffff:10.1.2.3", &in6.sin6_addr); /* a dual-stack socket's IPv4 */
	assert_true(config_forward_source_allowed(f, (struct sockaddr *)&in6));
	inet_pton(AF_INET6, "2001:db8:ffff::1", &in6.sin6_addr);
	assert_true(config_forward_source_allowed(f, (struct sockaddr *)&in6));
	inet_pton(AF_INET6, "2001:db9::1", &in6.sin6_addr);
	assert_false(config_forward_source_allowed(f, (struct sockaddr *)&in6));
	f = &cfg.forwards[1];
	assert_string_equal(f->group, "");
	assert_string_equal(f->target.host, "::1");
	assert_int_equal(f->nsources, 0);
	assert_true(config_forward_source_allowed(f, (struct sockaddr *)&in4));

	/* the same forwards reload quietly; a changed one needs a restart */
	load_ok(&fresh, CONFIG_GATEWAY,
		GATEWAY_MIN "[forward.ssh]\nlisten_addr = 127.0.0.1:2222\ntarget = db.internal:22\n"
			    "group = prod.eu\nallowed_sources = 127.0.0.2/32, 10.0.0.0/8\n"
			    "allowed_sources = 2001:db8::/32\n"
			    "[forward.web]\nlisten_addr = :8088\ntarget = [::1]:80\n");
	assert_int_equal(config_reload(&cfg, &fresh, restart, sizeof(restart)), 0);
	config_free(&fresh);
	load_ok(&fresh, CONFIG_GATEWAY,
		GATEWAY_MIN
		"[forward.ssh]\nlisten_addr = 127.0.0.1:2222\ntarget = db.internal:22\n");
	assert_int_equal(config_reload(&cfg, &fresh, restart, sizeof(restart)), 1);
	assert_non_null(strstr(restart, "[forward.NAME]"));
	assert_int_equal(cfg.nforwards, 2); /* kept */
	config_free(&fresh);
	config_free(&cfg);

#define FWD(body) GATEWAY_MIN "[forward.f]\n" body
	expect_error(CONFIG_GATEWAY, FWD("target = h:1\n"), 6, NULL,
		     "[forward.f] listen_addr: required key is missing");
	expect_error(CONFIG_GATEWAY, FWD("listen_addr = :9000\n"), 6, NULL,
		     "[forward.f] target: required key is missing");
	expect_error(CONFIG_GATEWAY, FWD("listen_addr = :9000\ntarget = :22\n"), 8, NULL,
		     "needs a host");
	expect_error(CONFIG_GATEWAY, FWD("listen_addr = :9000\ntarget = h:0\n"), 8, NULL, "port");
	expect_error(CONFIG_GATEWAY, FWD("listen_addr = :9000\ntarget = h:1\ngroup = a/b\n"), 9,
		     NULL, "not a group id");
	expect_error(CONFIG_GATEWAY, FWD("listen_addr = :9000\ntarget = h:1\nprotocol = sctp\n"), 9,
		     NULL, "expected tcp or udp");
	expect_error(CONFIG_GATEWAY,
		     FWD("listen_addr = :9000\ntarget = h:1\nallowed_sources = 10.0.0.1/8\n"), 9,
		     NULL, "bits set past the /8 prefix");
	expect_error(CONFIG_GATEWAY,
		     FWD("listen_addr = :9000\ntarget = h:1\nallowed_sources = 10.0.0.0/33\n"), 9,
		     NULL, "not an address or a CIDR");
	expect_error(CONFIG_GATEWAY,
		     FWD("listen_addr = :9000\ntarget = h:1\nallowed_sources = host.example\n"), 9,
		     NULL, "not an address or a CIDR");
	expect_error(CONFIG_GATEWAY, FWD("listen_addr = :9000\nlisten_addr = :9001\n"), 8, NULL,
		     "duplicate key");
	expect_error(CONFIG_GATEWAY, FWD("listen_addr = :9000\nport = 1\n"), 8, NULL,
		     "[forward.f] port: unknown key");
	expect_error(CONFIG_GATEWAY, FWD("listen_addr = :8443\ntarget = h:1\n"), 6, NULL,
		     "same port as [gateway] listen_addr");
	expect_error(CONFIG_GATEWAY,
		     FWD("listen_addr = :9000\ntarget = h:1\n[forward.g]\nlisten_addr = "
			 "127.0.0.1:9000\ntarget = h:2\n"),
		     9, NULL, "same port as [forward.f] listen_addr");
	expect_error(CONFIG_GATEWAY, FWD("listen_addr = :9000\ntarget = h:1\n[forward.f]\n"), 9,
		     NULL, "section appears twice");
	/* TCP and UDP ports are apart: DNS on both is fine */
	load_ok(&cfg, CONFIG_GATEWAY,
		FWD("listen_addr = :53\ntarget = ns:53\n[forward.g]\nlisten_addr = :53\n"
		    "target = ns:53\nprotocol = udp\n[forward.h]\nlisten_addr = :8443\n"
		    "target = h:1\nprotocol = udp\n"));
	assert_int_equal(cfg.forwards[1].protocol, CONFIG_FORWARD_UDP);
	config_free(&cfg);
	expect_error(CONFIG_GATEWAY,
		     FWD("listen_addr = :53\ntarget = ns:53\nprotocol = udp\n[forward.g]\n"
			 "listen_addr = 127.0.0.1:53\ntarget = ns:53\nprotocol = udp\n"),
		     10, NULL, "same port as [forward.f] listen_addr");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[forward.a b]\n", 6, NULL,
		     "a forward name has only");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "[forward.f]\nlisten_addr = :9000\n", 7, NULL,
		     "unknown section");
#undef FWD
}

/* [group.NAME] agent_username / agent_password: the group's own agent
 * credential (docs/operations.md "Agent credentials"). */
static void test_group_agent_credentials(void **state)
{
	char text[TEXT_BYTES];
	struct config cfg;
	const struct config_group_auth *g;

	load_ok(&cfg, CONFIG_GATEWAY,
		GATEWAY_MIN
		"[group.production]\nauth_password = prod-users\n"
		"agent_password = prod-agents\n"
		"[group.eu.west]\nauth_password = eu-users\nagent_username = eu.agent:1\n"
		"agent_password = eu-agents\n"
		"[group.staging]\nauth_password = staging-users\n");
	g = config_group_auth(&cfg, "production", 10);
	assert_null(g->agent_username); /* the gateway's auth_username */
	assert_string_equal(g->agent_password, "prod-agents");
	g = config_group_auth(&cfg, "eu.west", 7);
	/* agent names travel in HELLO only: '.' and ':' are fine */
	assert_string_equal(g->agent_username, "eu.agent:1");
	assert_string_equal(g->agent_password, "eu-agents");
	g = config_group_auth(&cfg, "staging", 7);
	assert_null(g->agent_username);
	assert_null(g->agent_password);
	assert_false(cfg.gateway.require_group_section);
	config_free(&cfg);

	/* a section is a tenant boundary for users too: auth_password stays required */
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[group.production]\nagent_password = a\n", 6,
		     "[group.production] auth_password", "required key is missing");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[group.p]\nauth_password = u\nagent_username = agent\n", 6,
		     "[group.p] agent_username", "set without agent_password");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[group.p]\nauth_password = u\nagent_password =\n",
		     8, "[group.p] agent_password", "empty secret");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[group.p]\nauth_password = u\nagent_username =\n"
				 "agent_password = a\n",
		     8, "[group.p] agent_username", "must not be empty");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[group.p]\nauth_password = u\nagent_password = a\n"
				 "agent_password = b\n",
		     9, "[group.p] agent_password", "duplicate key");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[group.p]\nauth_password = u\nagent_pasword = a\n", 8,
		     "[group.p] agent_pasword",
		     "unknown key (auth_username, auth_password, "
		     "agent_username, agent_password)");
	/* a password that is refused is never repeated in the error */
	snprintf(text, sizeof(text),
		 GATEWAY_MIN "[group.p]\nauth_password = u\nagent_password = %s\n",
		 long_line("agent-secret-", 300));
	expect_error(CONFIG_GATEWAY, text, 8, "[group.p] agent_password", "invalid password");
	assert_null(strstr(err, "agent-secret-"));
}

static void test_require_group_section(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN "require_group_section = true\n");
	assert_true(cfg.gateway.require_group_section);
	config_free(&cfg);
	setenv("GATEWAY_REQUIRE_GROUP_SECTION", "yes", 1);
	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN);
	unsetenv("GATEWAY_REQUIRE_GROUP_SECTION");
	assert_true(cfg.gateway.require_group_section);
	config_free(&cfg);
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "require_group_section = maybe\n", 6,
		     "[gateway] require_group_section", "bad boolean");
}

static void test_line_of_1500_bytes_fails(void **state)
{
	char text[TEXT_BYTES];

	snprintf(text, sizeof(text), "[gateway]\n%s\n" GATEWAY_MIN,
		 long_line("; a comment ", 1500));
	expect_error(CONFIG_GATEWAY, text, 2, NULL, "line too long (max 1024 bytes)");
}

static void test_nul_byte(void **state)
{
	static const char text[] = GATEWAY_MIN "[log]\nlevel = info\0 junk\n";
	struct config cfg;

	assert_int_equal(load_bytes(&cfg, CONFIG_GATEWAY, text, sizeof(text) - 1), -EINVAL);
	assert_contains(err, ":7: NUL byte in line");
}

static void test_ipv6_addresses(void **state)
{
	static const struct {
		const char *text, *host, *formatted;
		uint16_t port;
	} good[] = {
		{ "[::1]:8080", "::1", "[::1]:8080", 8080 },
		{ "[2001:db8::10]:443", "2001:db8::10", "[2001:db8::10]:443", 443 },
		{ "[::]:1", "::", "[::]:1", 1 },
		{ "[::ffff:192.0.2.1]:65535", "::ffff:192.0.2.1", "[::ffff:192.0.2.1]:65535",
		  65535 },
		{ "127.0.0.1:1080", "127.0.0.1", "127.0.0.1:1080", 1080 },
		{ "gw-1.example_x.com:8443", "gw-1.example_x.com", "gw-1.example_x.com:8443",
		  8443 },
		{ ":8080", "", ":8080", 8080 },
	};
	struct config_addr addr;
	char buf[300];

	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		assert_int_equal(config_parse_addr(good[i].text, &addr, err, sizeof(err)), 0);
		assert_true(addr.set);
		assert_string_equal(addr.host, good[i].host);
		assert_int_equal(addr.port, good[i].port);
		config_addr_format(&addr, buf, sizeof(buf));
		assert_string_equal(buf, good[i].formatted);
	}
	assert_int_equal(config_parse_addr("", &addr, err, sizeof(err)), 0);
	assert_false(addr.set);
}

static void test_ipv6_in_config(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_CLIENT,
		"[client]\n"
		"gateway_addr = [2001:db8::1]:8443\n"
		"gateway_tls_cert = server.crt\n"
		"client_id = c1\n"
		"auth_username = u\n"
		"auth_password = p\n");
	assert_string_equal(cfg.client.gateway_addr.items[0].host, "2001:db8::1");
	/* The agent checks the bare literal (the certificate's IP address). */
	assert_null(cfg.client.gateway_server_name);
	config_free(&cfg);

	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN "[proxy.socks5]\nlisten_addr = [::1]:1080\n");
	assert_string_equal(cfg.socks5.listen_addr.host, "::1");
	config_free(&cfg);
}

/* ---- errors: every one names the file, the line and the key ---- */

static void test_unknown_key(void **state)
{
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "listen_adr = :8443\n", 6, "[gateway] listen_adr",
		     "unknown key");
}

static void test_unknown_key_points_to_its_section(void **state)
{
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[proxy.http]\ntls_cert = server.crt\n", 7,
		     "[proxy.http] tls_cert", "unknown key (it belongs in [gateway])");
}

static void test_key_of_other_program(void **state)
{
	/* [log] is shared, but client keys are not gateway keys. */
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "group_id = x\n", 6, "[gateway] group_id",
		     "unknown key");
}

static void test_unknown_section(void **state)
{
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[metrix]\nlisten_addr = :9100\n", 6, "[metrix]",
		     "unknown section (anyproxy-gateway accepts [gateway] [proxy.http] "
		     "[proxy.socks5] [proxy.https] [log] [control] [metrics])");
	/* Even an empty one. */
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[proxy]\n", 6, "[proxy]", "unknown section");
	expect_error(CONFIG_CLIENT, "[ client ]\n", 1, "[ client ]", "unknown section");
}

static void test_section_of_other_program(void **state)
{
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[client]\n", 6, "[client]",
		     "section belongs to anyproxy-client, not anyproxy-gateway");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "\n[control]\nsocket = /tmp/x.sock\n", 8,
		     "[control]", "section belongs to anyproxy-gateway, not anyproxy-client");
}

static void test_text_after_section_header(void **state)
{
	expect_error(CONFIG_GATEWAY, "[gateway] extra\n", 1, NULL,
		     "unexpected text after ']' of a section header");
}

static void test_key_outside_section(void **state)
{
	expect_error(CONFIG_GATEWAY, "tls_cert = server.crt\n" GATEWAY_MIN, 1, NULL,
		     "key outside of a section");
}

static void test_syntax_error(void **state)
{
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "just some words\n", 6, NULL,
		     "syntax error: expected '[section]' or 'key = value'");
	expect_error(CONFIG_GATEWAY, "[gateway\n", 1, NULL, "syntax error");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "= value\n", 6, NULL,
		     "missing key name before '='");
}

static void test_duplicate_key(void **state)
{
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "\ntls_cert = other.crt\n", 7,
		     "[gateway] tls_cert", "duplicate key (first set on line 2)");
}

static void test_missing_required_key(void **state)
{
	expect_error(CONFIG_GATEWAY,
		     "[gateway]\ntls_cert = server.crt\ntls_key = server.key\n"
		     "auth_username = u\n",
		     0, "[gateway] auth_password",
		     "required key is missing (set it here or in GATEWAY_AUTH_PASSWORD)");
	expect_error(CONFIG_CLIENT, "[client]\n", 0, "[client] gateway_addr",
		     "required key is missing");
	expect_error(CONFIG_GATEWAY, "", 0, "[gateway] tls_cert", "required key is missing");
}

static void test_empty_required_key(void **state)
{
	expect_error(CONFIG_CLIENT,
		     "[client]\ngateway_addr = gw:1\ngateway_tls_cert = server.crt\n"
		     "client_id = \nauth_username = u\nauth_password = p\n",
		     4, "[client] client_id", "required key is empty");
}

static void test_bad_addresses(void **state)
{
	static const struct {
		const char *value, *fragment;
	} bad[] = {
		{ "8080", "missing ':port'" },
		{ "host:", "missing port after ':'" },
		{ "host:0", "port must be a number from 1 to 65535" },
		{ "host:65536", "port must be a number from 1 to 65535" },
		{ "host:99999999999999999999", "port must be a number from 1 to 65535" },
		{ "host:-1", "port must be a number from 1 to 65535" },
		{ "host:http", "port must be a number from 1 to 65535" },
		{ "::1:8080", "IPv6 addresses must be in brackets" },
		{ "[::1]8080", "expected ':port' after ']'" },
		{ "[::1:8080", "missing ']'" },
		{ "[]:8080", "not a valid IPv6 address" },
		{ "[zz::1]:8080", "not a valid IPv6 address" },
		{ "[127.0.0.1]:8080", "not a valid IPv6 address" },
		{ "ho st:80", "byte not allowed in a host name" },
		{ "host/x:80", "byte not allowed in a host name" },
		{ "a..b:80", "empty label" },
		{ ".a:80", "empty label" },
		{ "256.1.1.1:80", "not a valid IPv4 address" },
		{ "1.2.3:80", "not a valid IPv4 address" },
	};
	char text[TEXT_BYTES];

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		snprintf(text, sizeof(text), GATEWAY_MIN "[proxy.http]\nlisten_addr = %s\n",
			 bad[i].value);
		expect_error(CONFIG_GATEWAY, text, 7, "[proxy.http] listen_addr", "bad address '");
		assert_contains(err, bad[i].fragment);
	}
}

static void test_long_host_names(void **state)
{
	struct config_addr addr;
	char value[400];

	/* 63-byte labels are fine, 64 bytes are not; 253 bytes in all at most. */
	snprintf(value, sizeof(value), "%s.com:1", long_line("", 63));
	assert_int_equal(config_parse_addr(value, &addr, err, sizeof(err)), 0);
	snprintf(value, sizeof(value), "%s.com:1", long_line("", 64));
	assert_int_equal(config_parse_addr(value, &addr, err, sizeof(err)), -EINVAL);
	assert_contains(err, "label longer than 63 bytes");
	snprintf(value, sizeof(value), "%s.%s.%s.%s:1", long_line("", 63), long_line("", 63),
		 long_line("", 63), long_line("", 62));
	assert_int_equal(config_parse_addr(value, &addr, err, sizeof(err)), -EINVAL);
	assert_contains(err, "longer than 253 bytes");
	/* The error repeats at most 200 bytes of the value, cut with "...". */
	assert_true(strlen(err) < 300);
	assert_contains(err, "...");
}

static void test_client_addr_needs_host(void **state)
{
	expect_error(CONFIG_CLIENT,
		     "[client]\ngateway_addr = :8443\ngateway_tls_cert = server.crt\n"
		     "client_id = c\nauth_username = u\nauth_password = p\n",
		     2, "[client] gateway_addr", "needs a host");
}

static void test_gateway_listen_addr_not_empty(void **state)
{
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "listen_addr =\n", 6, "[gateway] listen_addr",
		     "must not be empty");
}

static void test_bad_number_not_digits(void **state)
{
	expect_error(CONFIG_CLIENT, CLIENT_MIN "replicas = three\n", 7, "[client] replicas",
		     "bad number 'three': expected a whole number from 1 to 64");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "replicas = -1\n", 7, "[client] replicas",
		     "bad number '-1'");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "replicas = 2.5\n", 7, "[client] replicas",
		     "bad number '2.5'");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "replicas =\n", 7, "[client] replicas",
		     "bad number ''");
}

static void test_bad_number_overflow(void **state)
{
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "ping_interval_ms = 99999999999999999999999\n", 6,
		     "[gateway] ping_interval_ms", "is out of range (100 to 3600000)");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "ping_interval_ms = 4294967296\n", 6,
		     "[gateway] ping_interval_ms", "4294967296 is out of range");
}

static void test_bad_number_out_of_range(void **state)
{
	struct config cfg;

	expect_error(CONFIG_CLIENT, CLIENT_MIN "replicas = 0\n", 7, "[client] replicas",
		     "0 is out of range (1 to 64)");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "replicas = 65\n", 7, "[client] replicas",
		     "65 is out of range (1 to 64)");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "handshake_timeout_ms = 99\n", 6,
		     "[gateway] handshake_timeout_ms", "99 is out of range (100 to 600000)");
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "replicas = 64\n");
	assert_int_equal(cfg.client.replicas, 64);
	config_free(&cfg);
}

/* [control] socket_mode is octal and keeps the owner's read and write;
 * socket_group is a name a group file can hold. */
static void test_control_socket_keys(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN);
	assert_int_equal(cfg.control.socket_mode, 0660);
	assert_null(cfg.control.socket_group);
	config_free(&cfg);
	load_ok(&cfg, CONFIG_GATEWAY,
		GATEWAY_MIN "[control]\nsocket_mode = 666\nsocket_group = anyproxy-admin\n");
	assert_int_equal(cfg.control.socket_mode, 0666);
	assert_string_equal(cfg.control.socket_group, "anyproxy-admin");
	config_free(&cfg);
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[control]\nsocket_mode = 0680\n", 7,
		     "[control] socket_mode", "bad file mode '0680': expected octal digits");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[control]\nsocket_mode = 00660\n", 7,
		     "[control] socket_mode", "bad file mode");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[control]\nsocket_mode = 0440\n", 7,
		     "[control] socket_mode", "0440 is out of range (0600 to 0777)");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[control]\nsocket_mode = 4770\n", 7,
		     "[control] socket_mode", "4770 is out of range");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[control]\nsocket_group = a:b\n", 7,
		     "[control] socket_group", "not a group name");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[control]\nsocket_group = a b\n", 7,
		     "[control] socket_group", "not a group name");
}

static void test_parse_bool(void **state)
{
	static const char *const yes[] = { "true", "TRUE", "yes", "On", "1" };
	static const char *const no[] = { "false", "No", "off", "0" };
	static const char *const bad[] = { "", "2", "truth", "y", " true" };
	bool value;

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		value = false;
		assert_int_equal(config_parse_bool(yes[i], &value), 0);
		assert_true(value);
	}
	for (size_t i = 0; i < ARRAY_SIZE(no); i++) {
		value = true;
		assert_int_equal(config_parse_bool(no[i], &value), 0);
		assert_false(value);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_int_equal(config_parse_bool(bad[i], &value), -EINVAL);
}

static void test_bad_log_enums(void **state)
{
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[log]\nlevel = verbose\n", 7, "[log] level",
		     "bad log level 'verbose': expected debug, info, warn or error");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[log]\nformat = xml\n", 7, "[log] format",
		     "bad log format 'xml': expected text or json");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[log]\noutput =\n", 7, "[log] output",
		     "must not be empty");
}

static void test_missing_cert_file(void **state)
{
	expect_error(CONFIG_GATEWAY,
		     "[gateway]\ntls_cert = server.crt\ntls_key = missing.key\n"
		     "auth_username = u\nauth_password = p\n",
		     3, "[gateway] tls_key",
		     "cannot read 'missing.key': No such file or directory");
	expect_error(CONFIG_CLIENT,
		     "[client]\ngateway_addr = gw:1\ngateway_tls_cert = /nonexistent/ca.crt\n"
		     "client_id = c\nauth_username = u\nauth_password = p\n",
		     3, "[client] gateway_tls_cert", "No such file or directory");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "client_ca = nope.crt\n", 6, "[gateway] client_ca",
		     "cannot read 'nope.crt'");
}

static void test_unreadable_cert_file(void **state)
{
	assert_int_equal(mkdir("certdir", 0700), 0);
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "client_ca = certdir\n", 6, "[gateway] client_ca",
		     "cannot read 'certdir': Is a directory");
	/* Permission bits do not stop root, who runs CI; check them otherwise. */
	if (geteuid() != 0) {
		write_file("locked.crt", "x", 1);
		assert_int_equal(chmod("locked.crt", 0), 0);
		expect_error(CONFIG_GATEWAY, GATEWAY_MIN "client_ca = locked.crt\n", 6,
			     "[gateway] client_ca", "Permission denied");
	}
}

static void test_ping_timeout_must_exceed_interval(void **state)
{
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "ping_interval_ms = 30000\n", 6,
		     "[gateway] ping_interval_ms",
		     "ping_timeout_ms (30000) must be greater than ping_interval_ms (30000)");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "ping_timeout_ms = 5000\n", 7,
		     "[client] ping_timeout_ms", "must be greater than ping_interval_ms (10000)");
	/* Both set: the later line is named. */
	expect_error(CONFIG_CLIENT, CLIENT_MIN "ping_timeout_ms = 5000\nping_interval_ms = 6000\n",
		     8, "[client] ping_interval_ms", "must be greater than");
}

static void test_reconnect_max_below_initial(void **state)
{
	expect_error(
		CONFIG_CLIENT, CLIENT_MIN "reconnect_max_delay_ms = 400\n", 7,
		"[client] reconnect_max_delay_ms",
		"reconnect_max_delay_ms (400) must be at least reconnect_initial_delay_ms (500)");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "reconnect_initial_delay_ms = 40000\n", 7,
		     "[client] reconnect_initial_delay_ms", "must be at least");
}

static void test_client_tls_pair(void **state)
{
	struct config cfg;

	expect_error(CONFIG_CLIENT, CLIENT_MIN "tls_cert = agent.crt\n", 7, "[client] tls_cert",
		     "set without tls_key (set both or neither)");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "tls_key = agent.key\n", 7, "[client] tls_key",
		     "set without tls_cert");
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "tls_cert = agent.crt\ntls_key = agent.key\n");
	assert_string_equal(cfg.client.tls_key, "agent.key");
	config_free(&cfg);
}

static void test_listener_auth_pair(void **state)
{
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.http]\nlisten_addr = :8080\nauth_username = proxy_user\n",
		     8, "[proxy.http] auth_username", "set without auth_password");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.socks5]\nlisten_addr = :1080\nauth_password = s3cret\n", 8,
		     "[proxy.socks5] auth_password", "set without auth_username");
	assert_not_contains(err, "s3cret");
}

/* [proxy.https]: the HTTP proxy over TLS needs its certificate and key,
 * and takes the same credential pair as the other listeners. */
static void test_https_listener(void **state)
{
	struct config cfg;

	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[proxy.https]\nlisten_addr = :8444\n", 7,
		     "[proxy.https] listen_addr", "set without tls_cert");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.https]\nlisten_addr = :8444\ntls_cert = server.crt\n", 7,
		     "[proxy.https] listen_addr", "set without tls_key");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.https]\nlisten_addr = :8444\ntls_cert = server.crt\n"
				 "tls_key = server.key\nauth_username = proxy_user\n",
		     10, "[proxy.https] auth_username", "set without auth_password");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.https]\nlisten_addr = :8443\ntls_cert = server.crt\n"
				 "tls_key = server.key\n",
		     7, "[proxy.https] listen_addr", "same port as [gateway] listen_addr");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.https]\nlisten_addr = :8444\ntls_cert = server.crt\n"
				 "tls_key = server.key\nauth_username = a.b\nauth_password = x\n",
		     10, "[proxy.https] auth_username", "");
	/* off without listen_addr, whatever else the section says */
	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN "[proxy.https]\ntls_cert = server.crt\n");
	assert_false(cfg.https.listen_addr.set);
	config_free(&cfg);
	load_ok(&cfg, CONFIG_GATEWAY,
		GATEWAY_MIN "[proxy.https]\nlisten_addr = 127.0.0.1:8444\ntls_cert = server.crt\n"
			    "tls_key = server.key\nauth_username = proxy_user\n"
			    "auth_password = proxy_pass\n");
	assert_true(cfg.https.listen_addr.set);
	assert_int_equal(cfg.https.listen_addr.port, 8444);
	assert_string_equal(cfg.https.tls_cert, "server.crt");
	assert_string_equal(cfg.https.tls_key, "server.key");
	assert_string_equal(cfg.https.auth_username, "proxy_user");
	config_free(&cfg);
}

static void test_listener_port_collision(void **state)
{
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.http]\nlisten_addr = :8080\n"
				 "[proxy.socks5]\nlisten_addr = 127.0.0.1:8080\n",
		     9, "[proxy.socks5] listen_addr", "same port as [proxy.http] listen_addr");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[proxy.http]\nlisten_addr = :8443\n", 7,
		     "[proxy.http] listen_addr", "same port as [gateway] listen_addr");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[metrics]\nlisten_addr = 127.0.0.1:8443\n", 7,
		     "[metrics] listen_addr", "same port as [gateway] listen_addr");
}

/* [metrics] is off unless listen_addr is set, in both programs. */
static void test_metrics_section(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN);
	assert_false(cfg.metrics.listen_addr.set);
	config_free(&cfg);
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "[metrics]\nlisten_addr = 127.0.0.1:9465\n");
	assert_true(cfg.metrics.listen_addr.set);
	assert_int_equal(cfg.metrics.listen_addr.port, 9465);
	config_free(&cfg);
}

static void test_listener_ports_may_differ_by_host(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_GATEWAY,
		GATEWAY_MIN "[proxy.http]\nlisten_addr = 127.0.0.1:8080\n"
			    "[proxy.socks5]\nlisten_addr = 127.0.0.2:8080\n");
	config_free(&cfg);
}

static void test_proxy_username_rules(void **state)
{
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.socks5]\nauth_username = user.prod\nauth_password = p\n",
		     7, "[proxy.socks5] auth_username", "must not contain '.'");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.http]\nauth_username = us:er\nauth_password = p\n", 7,
		     "[proxy.http] auth_username", "must not contain ':'");
}

static void test_client_id_rules(void **state)
{
	char text[TEXT_BYTES];
	struct config cfg;

	snprintf(text, sizeof(text),
		 "[client]\ngateway_addr = gw:1\ngateway_tls_cert = server.crt\n"
		 "auth_username = u\nauth_password = p\nclient_id = %s\n",
		 "bad id");
	expect_error(CONFIG_CLIENT, text, 6, "[client] client_id",
		     "may contain only A-Z a-z 0-9 . _ : - (found ' ')");
	snprintf(text, sizeof(text),
		 "[client]\ngateway_addr = gw:1\ngateway_tls_cert = server.crt\n"
		 "auth_username = u\nauth_password = p\nclient_id = %s\n",
		 long_line("", 65));
	expect_error(CONFIG_CLIENT, text, 6, "[client] client_id",
		     "must be 1 to 64 characters long (is 65)");
	snprintf(text, sizeof(text),
		 "[client]\ngateway_addr = gw:1\ngateway_tls_cert = server.crt\n"
		 "auth_username = u\nauth_password = p\nclient_id = %s\n",
		 long_line("eu.west_1:a-", 64));
	load_ok(&cfg, CONFIG_CLIENT, text);
	config_free(&cfg);
}

static void test_group_id_rules(void **state)
{
	struct config cfg;

	/* Users write user.prod.eu for group prod.eu: dots are allowed. */
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "group_id = prod.eu\n");
	assert_string_equal(cfg.client.group_id, "prod.eu");
	config_free(&cfg);
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "group_id =\n");
	assert_string_equal(cfg.client.group_id, "");
	config_free(&cfg);
	expect_error(CONFIG_CLIENT, CLIENT_MIN "group_id = prod/eu\n", 7, "[client] group_id",
		     "may contain only");
	expect_error(CONFIG_CLIENT, CLIENT_MIN "group_id = \"production\"\n", 7,
		     "[client] group_id", "(found '\"')");
}

static void test_server_name(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "gateway_server_name = gw.internal\n");
	assert_string_equal(cfg.client.gateway_server_name, "gw.internal");
	config_free(&cfg);
	expect_error(CONFIG_CLIENT, CLIENT_MIN "gateway_server_name = gw internal\n", 7,
		     "[client] gateway_server_name", "byte not allowed in a host name");
}

/* [client] egress_proxy: parsed once into host, port and decoded credentials. */
static void test_egress_proxy(void **state)
{
	struct config_egress_proxy p;
	struct config cfg;
	char why[256];

	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN);
	assert_false(cfg.client.egress_proxy.addr.set);
	config_free(&cfg);

	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "egress_proxy = http://proxy.corp:3128\n");
	assert_true(cfg.client.egress_proxy.addr.set);
	assert_string_equal(cfg.client.egress_proxy.addr.host, "proxy.corp");
	assert_int_equal(cfg.client.egress_proxy.addr.port, 3128);
	assert_null(cfg.client.egress_proxy.username);
	assert_null(cfg.client.egress_proxy.password);
	config_free(&cfg);

	/* scheme in any case, a trailing '/', IPv6, percent-decoded credentials
	 * (the password keeps raw ':' and sub-delims) */
	assert_int_equal(config_parse_egress_proxy("HTTP://us%40er:p%3Ass:w!%25@[::1]:8080/", &p,
						   why, sizeof(why)),
			 0);
	assert_string_equal(p.addr.host, "::1");
	assert_int_equal(p.addr.port, 8080);
	assert_string_equal(p.username, "us@er");
	assert_string_equal(p.password, "p:ss:w!%");
	config_egress_proxy_free(&p);
	assert_null(p.username);
	assert_null(p.password);
	assert_false(p.addr.set);

	assert_int_equal(config_parse_egress_proxy("", &p, why, sizeof(why)), 0);
	assert_false(p.addr.set);

	/* the environment overrides it like every key */
	setenv("CLIENT_EGRESS_PROXY", "http://agent:s3cret@10.0.0.1:3128", 1);
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "egress_proxy = http://proxy.corp:3128\n");
	assert_string_equal(cfg.client.egress_proxy.addr.host, "10.0.0.1");
	assert_string_equal(cfg.client.egress_proxy.username, "agent");
	assert_string_equal(cfg.client.egress_proxy.password, "s3cret");
	config_free(&cfg);
	unsetenv("CLIENT_EGRESS_PROXY");
}

/* Every refusal names the key and the rule, and never repeats the value:
 * it may hold a password (hunter2 below). */
static void test_egress_proxy_errors(void **state)
{
	static const struct {
		const char *value, *fragment;
	} bad[] = {
		{ "proxy.corp:3128", "the scheme must be http" },
		{ "socks5://u:hunter2@proxy.corp:1080", "the scheme must be http" },
		{ "https://u:hunter2@proxy.corp:3128", "https:// proxy (TLS to the proxy) is not" },
		{ "http://u:hunter2@proxy.corp", "bad proxy address: missing ':port'" },
		{ "http://u:hunter2@:3128", "missing host before ':port'" },
		{ "http://u:hunter2@", "missing host:port" },
		{ "http://u:hunter2@proxy.corp:0", "port must be a number from 1 to 65535" },
		{ "http://u:hunter2@proxy.corp:3128/path", "no path, query or fragment" },
		{ "http://u:hun/ter2@proxy.corp:3128", "no path, query or fragment" },
		{ "http://u:hunter2@@proxy.corp:3128", "more than one '@'" },
		{ "http://u@hunter2@proxy.corp:3128", "more than one '@'" },
		{ "http://hunter2@proxy.corp:3128", "a user name needs its password" },
		{ "http://:hunter2@proxy.corp:3128", "empty user name" },
		{ "http://u:@proxy.corp:3128", "empty password" },
		{ "http://u:hunter2%4@proxy.corp:3128", "bad percent-encoding in the password" },
		{ "http://u:hunter2%zz@proxy.corp:3128", "bad percent-encoding in the password" },
		{ "http://u:hunter2%0a@proxy.corp:3128", "password holds a control character" },
		{ "http://u%3Ax:hunter2@proxy.corp:3128", "user name must not contain ':'" },
		{ "http://u:hunter 2@proxy.corp:3128", "password holds a character that must be" },
		{ "http://u\"x:hunter2@proxy.corp:3128",
		  "user name holds a character that must be" },
		{ "http://u:hunter2@proxy corp:3128", "bad proxy address: byte not allowed" },
	};
	char text[TEXT_BYTES], why[256];
	struct config_egress_proxy p;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		snprintf(text, sizeof(text), CLIENT_MIN "egress_proxy = %s\n", bad[i].value);
		expect_error(CONFIG_CLIENT, text, 7, "[client] egress_proxy", bad[i].fragment);
		assert_not_contains(err, "hunter");
		assert_int_equal(config_parse_egress_proxy(bad[i].value, &p, why, sizeof(why)),
				 -EINVAL);
		assert_null(p.username);
		assert_null(p.password);
		assert_false(p.addr.set);
	}
	/* 255 bytes decoded is the most; %41 is one byte */
	strcpy(text, "http://u:");
	for (size_t i = 0; i < 255; i++)
		strcat(text, "%41");
	strcat(text, "@proxy.corp:3128");
	assert_int_equal(config_parse_egress_proxy(text, &p, why, sizeof(why)), 0);
	assert_int_equal(strlen(p.password), 255);
	config_egress_proxy_free(&p);
	snprintf(text, sizeof(text), "http://u:%s@proxy.corp:3128", long_line("hunter2", 256));
	assert_int_equal(config_parse_egress_proxy(text, &p, why, sizeof(why)), -EINVAL);
	assert_contains(why, "the password is longer than 255 bytes");
	assert_not_contains(why, "hunter");
	/* from the environment too */
	setenv("CLIENT_EGRESS_PROXY", "http://u:hunter2@proxy.corp", 1);
	expect_env_error(CONFIG_CLIENT, CLIENT_MIN, "CLIENT_EGRESS_PROXY", "missing ':port'");
	assert_not_contains(err, "hunter");
	unsetenv("CLIENT_EGRESS_PROXY");
}

/* Reloadable: the next dial uses the new proxy and credentials. */
static void test_egress_proxy_reloads(void **state)
{
	struct config live, fresh;
	char restart[256];

	load_ok(&live, CONFIG_CLIENT, CLIENT_MIN "egress_proxy = http://u:wrong@proxy.corp:3128\n");
	load_ok(&fresh, CONFIG_CLIENT,
		CLIENT_MIN "egress_proxy = http://u:right@proxy.corp:3128\n");
	assert_int_equal(config_reload(&live, &fresh, restart, sizeof(restart)), 0);
	assert_string_equal(restart, "");
	assert_string_equal(live.client.egress_proxy.password, "right");
	assert_string_equal(fresh.client.egress_proxy.password, "wrong");
	config_free(&fresh);
	config_free(&live);
}

static void test_socket_path_limit(void **state)
{
	char text[TEXT_BYTES];

	snprintf(text, sizeof(text), GATEWAY_MIN "[control]\nsocket = /%s\n", long_line("", 108));
	expect_error(CONFIG_GATEWAY, text, 7, "[control] socket",
		     "longer than 107 bytes, the limit of a unix socket path");
}

/* A password must never be repeated in an error, whatever the error. */
static void test_secrets_never_in_errors(void **state)
{
	char text[TEXT_BYTES];

	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "auth_password = hunter2\n", 6,
		     "[gateway] auth_password", "duplicate key");
	assert_not_contains(err, "hunter2");
	assert_not_contains(err, "gateway_password");

	snprintf(text, sizeof(text),
		 "[gateway]\ntls_cert = server.crt\ntls_key = server.key\nauth_username = u\n"
		 "auth_password = %s\n",
		 long_line("hunter2", 300));
	expect_error(CONFIG_GATEWAY, text, 5, "[gateway] auth_password", "longer than 255 bytes");
	assert_not_contains(err, "hunter2");

	/* A line mistyped without '=' holds the password: not shown either. */
	expect_error(CONFIG_GATEWAY, "[gateway]\nauth_password hunter2\n", 2, NULL, "syntax error");
	assert_not_contains(err, "hunter2");

	setenv("GATEWAY_AUTH_PASSWORD", long_line("hunter2", 300), 1);
	expect_env_error(CONFIG_GATEWAY, GATEWAY_MIN, "GATEWAY_AUTH_PASSWORD",
			 "longer than 255 bytes");
	assert_not_contains(err, "hunter2");
}

static void test_open_failure(void **state)
{
	struct config cfg;

	assert_int_equal(config_load(&cfg, CONFIG_GATEWAY, "/nonexistent/gw.ini", err, sizeof(err)),
			 -ENOENT);
	assert_string_equal(err, "/nonexistent/gw.ini: cannot open: No such file or directory");
	assert_int_equal(mkdir("conf.d", 0700), 0);
	assert_int_equal(config_load(&cfg, CONFIG_GATEWAY, "conf.d", err, sizeof(err)), -EISDIR);
	assert_string_equal(err, "conf.d: cannot read: Is a directory");
	config_free(&cfg); /* harmless after a failure */
}

/* ---- environment overrides ---- */

static void test_env_overrides(void **state)
{
	struct config cfg;

	setenv("CLIENT_GROUP_ID", "production", 1);
	setenv("CLIENT_REPLICAS", "3", 1);
	setenv("LOG_FORMAT", "json", 1);
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "group_id = testing\n");
	assert_string_equal(cfg.client.group_id, "production");
	assert_int_equal(cfg.client.replicas, 3);
	assert_int_equal(cfg.log.format, LOG_FORMAT_JSON);
	config_free(&cfg);

	/* Gateway keys are not read by the client, and the reverse. */
	setenv("PROXY_HTTP_LISTEN_ADDR", ":8080", 1);
	setenv("GATEWAY_AUTH_PASSWORD", "from-env", 1);
	setenv("CLIENT_CLIENT_ID", "not-for-the-gateway", 1);
	load_ok(&cfg, CONFIG_GATEWAY,
		"[gateway]\ntls_cert = server.crt\ntls_key = server.key\nauth_username = u\n");
	assert_true(cfg.http.listen_addr.set);
	assert_int_equal(cfg.http.listen_addr.port, 8080);
	assert_string_equal(cfg.gateway.auth_password, "from-env");
	assert_null(cfg.client.client_id);
	config_free(&cfg);

	/* An empty value from the environment turns a listener off. */
	setenv("PROXY_HTTP_LISTEN_ADDR", "", 1);
	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN "[proxy.http]\nlisten_addr = :8080\n");
	assert_false(cfg.http.listen_addr.set);
	config_free(&cfg);
}

static void test_env_replaces_list(void **state)
{
	struct config cfg;

	setenv("CLIENT_FORBIDDEN_HOSTS", "10.0.0.0/8 , metadata.internal", 1);
	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "forbidden_hosts = a\nforbidden_hosts = b, c\n");
	assert_int_equal(cfg.client.forbidden_hosts.count, 2);
	assert_string_equal(cfg.client.forbidden_hosts.items[0], "10.0.0.0/8");
	assert_string_equal(cfg.client.forbidden_hosts.items[1], "metadata.internal");
	config_free(&cfg);
}

static void test_env_bad_values(void **state)
{
	setenv("CLIENT_REPLICAS", "0", 1);
	expect_env_error(CONFIG_CLIENT, CLIENT_MIN, "CLIENT_REPLICAS",
			 "0 is out of range (1 to 64)");
	unsetenv("CLIENT_REPLICAS");

	setenv("CLIENT_GATEWAY_ADDR", "gw", 1);
	expect_env_error(CONFIG_CLIENT, CLIENT_MIN, "CLIENT_GATEWAY_ADDR", "bad address 'gw'");
	unsetenv("CLIENT_GATEWAY_ADDR");

	setenv("CLIENT_GROUP_ID", "a b", 1);
	expect_env_error(CONFIG_CLIENT, CLIENT_MIN, "CLIENT_GROUP_ID", "may contain only");
	unsetenv("CLIENT_GROUP_ID");

	setenv("CLIENT_PING_INTERVAL_MS", "60000", 1);
	expect_env_error(CONFIG_CLIENT, CLIENT_MIN, "CLIENT_PING_INTERVAL_MS",
			 "must be greater than ping_interval_ms (60000)");
	unsetenv("CLIENT_PING_INTERVAL_MS");

	setenv("CLIENT_ALLOWED_HOSTS", long_line("", 1025), 1);
	expect_env_error(CONFIG_CLIENT, CLIENT_MIN, "CLIENT_ALLOWED_HOSTS",
			 "value too long (max 1024 bytes)");
}

/* An empty secret is refused wherever it is given, naming file, line,
 * section and key (or the environment variable); optional secrets are left
 * unset by leaving them out. */
static void test_empty_secrets_refused(void **state)
{
	struct config cfg;

	expect_error(CONFIG_GATEWAY,
		     "[gateway]\ntls_cert = server.crt\ntls_key = server.key\n"
		     "auth_username = u\nauth_password =\n",
		     5, "[gateway] auth_password", "empty secret");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.http]\nlisten_addr = :8080\nauth_username = u\n"
				 "auth_password =\n",
		     9, "[proxy.http] auth_password", "empty secret");
	/* without a username too: an empty password never means "no auth" */
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.http]\nlisten_addr = :8080\nauth_password = \n", 8,
		     "[proxy.http] auth_password", "empty secret");
	expect_error(CONFIG_GATEWAY,
		     GATEWAY_MIN "[proxy.socks5]\nlisten_addr = :1080\nauth_password =\n", 8,
		     "[proxy.socks5] auth_password", "empty secret");
	expect_error(CONFIG_CLIENT,
		     "[client]\ngateway_addr = gw.example.com:8443\ngateway_tls_cert = server.crt\n"
		     "client_id = c1\nauth_username = u\nauth_password =\n",
		     6, "[client] auth_password", "empty secret");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[group.x]\nauth_password =\n", 7,
		     "[group.x] auth_password", "empty secret");
	expect_error(CONFIG_GATEWAY, GATEWAY_MIN "[group.x]\nauth_username = a\nauth_password =\n",
		     8, "[group.x] auth_password", "empty secret");

	/* the environment: an empty override is refused ... */
	setenv("PROXY_SOCKS5_AUTH_PASSWORD", "", 1);
	expect_env_error(CONFIG_GATEWAY, GATEWAY_MIN, "PROXY_SOCKS5_AUTH_PASSWORD", "empty secret");
	unsetenv("PROXY_SOCKS5_AUTH_PASSWORD");
	setenv("GATEWAY_AUTH_PASSWORD", "", 1);
	expect_env_error(CONFIG_GATEWAY, GATEWAY_MIN, "GATEWAY_AUTH_PASSWORD", "empty secret");
	setenv("CLIENT_AUTH_PASSWORD", "", 1);
	expect_env_error(CONFIG_CLIENT, CLIENT_MIN, "CLIENT_AUTH_PASSWORD", "empty secret");
	unsetenv("CLIENT_AUTH_PASSWORD");

	/* ... while a value from the environment fills a blank line of the file */
	setenv("GATEWAY_AUTH_PASSWORD", "from-env", 1);
	load_ok(&cfg, CONFIG_GATEWAY,
		"[gateway]\ntls_cert = server.crt\ntls_key = server.key\n"
		"auth_username = u\nauth_password =\n");
	assert_string_equal(cfg.gateway.auth_password, "from-env");
	config_free(&cfg);
	unsetenv("GATEWAY_AUTH_PASSWORD");

	/* a listener without authentication leaves both keys out */
	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN "[proxy.http]\nlisten_addr = :8080\n");
	assert_null(cfg.http.auth_password);
	config_free(&cfg);
}

/* The configuration file and the private keys: a WARN for each one that
 * group or others can read, none when only the owner can. */
static void test_exposed_secret_files(void **state)
{
	struct config cfg;

	load_ok(&cfg, CONFIG_GATEWAY, GATEWAY_MIN);
	assert_int_equal(chmod(config_path, 0600), 0);
	assert_int_equal(chmod("server.key", 0600), 0);
	assert_int_equal(chmod("server.crt", 0644), 0); /* a certificate is public */
	assert_int_equal(config_warn_exposed_files(&cfg, config_path), 0);
	assert_int_equal(chmod("server.key", 0640), 0);
	assert_int_equal(config_warn_exposed_files(&cfg, config_path), 1);
	assert_int_equal(chmod(config_path, 0604), 0);
	assert_int_equal(config_warn_exposed_files(&cfg, config_path), 2);
	assert_int_equal(chmod("server.key", 0400), 0);
	assert_int_equal(chmod(config_path, 0400), 0);
	assert_int_equal(config_warn_exposed_files(&cfg, config_path), 0);
	config_free(&cfg);

	load_ok(&cfg, CONFIG_CLIENT, CLIENT_MIN "tls_cert = agent.crt\ntls_key = agent.key\n");
	assert_int_equal(chmod(config_path, 0600), 0);
	assert_int_equal(chmod("agent.key", 0644), 0);
	assert_int_equal(config_warn_exposed_files(&cfg, config_path), 1);
	assert_int_equal(chmod("agent.key", 0600), 0);
	assert_int_equal(config_warn_exposed_files(&cfg, config_path), 0);
	config_free(&cfg);
}

/* Files are checked after the environment: an override can fix a path. */
static void test_env_fixes_cert_path(void **state)
{
	struct config cfg;

	setenv("GATEWAY_TLS_CERT", "server.crt", 1);
	load_ok(&cfg, CONFIG_GATEWAY,
		"[gateway]\ntls_cert = /nonexistent.crt\ntls_key = server.key\n"
		"auth_username = u\nauth_password = p\n");
	assert_string_equal(cfg.gateway.tls_cert, "server.crt");
	config_free(&cfg);

	setenv("GATEWAY_TLS_CERT", "gone.crt", 1);
	expect_env_error(CONFIG_GATEWAY, GATEWAY_MIN, "GATEWAY_TLS_CERT",
			 "cannot read 'gone.crt': No such file or directory");
}

/* ---- generated documentation ---- */

static char *generate(void (*writer)(FILE *, enum config_program), enum config_program program)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	writer(f, program);
	assert_int_equal(fclose(f), 0);
	return buf;
}

/* The reference INI files load once the placeholders are made real (the
 * certificates) and the secrets, deliberately left blank, are supplied. */
static void test_reference_examples_load(void **state)
{
	struct config cfg;
	char *text;

	text = generate(config_write_example, CONFIG_GATEWAY);
	setenv("GATEWAY_TLS_CERT", "server.crt", 1);
	setenv("GATEWAY_TLS_KEY", "server.key", 1);
	assert_int_equal(load_text(&cfg, CONFIG_GATEWAY, text), -EINVAL);
	assert_contains(err, "[gateway] auth_password: empty secret");
	setenv("GATEWAY_AUTH_PASSWORD", "p", 1);
	load_ok(&cfg, CONFIG_GATEWAY, text);
	assert_int_equal(cfg.gateway.listen_addr.port, 8443);
	assert_false(cfg.http.listen_addr.set);
	assert_string_equal(cfg.gateway.auth_username, "gateway_user");
	config_free(&cfg);
	free(text);

	text = generate(config_write_example, CONFIG_CLIENT);
	setenv("CLIENT_GATEWAY_TLS_CERT", "server.crt", 1);
	setenv("CLIENT_AUTH_PASSWORD", "p", 1);
	load_ok(&cfg, CONFIG_CLIENT, text);
	assert_string_equal(cfg.client.client_id, "prod-client-001");
	assert_int_equal(cfg.client.replicas, 1);
	config_free(&cfg);
	free(text);
}

static void write_markdown(FILE *f, enum config_program unused)
{
	config_write_markdown(f);
}

static void test_markdown_lists_every_key(void **state)
{
	char *text = generate(write_markdown, CONFIG_GATEWAY);

	for (size_t i = 0; i < ARRAY_SIZE(config_env_vars); i++) {
		char cell[80];

		snprintf(cell, sizeof(cell), "| `%s` |", config_env_vars[i]);
		assert_contains(text, cell);
	}
	assert_contains(text, "## [proxy.socks5]");
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_gateway_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spec_gateway_example, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spec_client_example, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spec_deployment_examples, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_section, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_format_details, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_item_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_of_1000_bytes_works, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_limit_is_1024_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_of_1500_bytes_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_patterns_checked_per_line, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_host_pattern_check_is_registered, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_group_sections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forward_sections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_swaps_live_keys_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gateway_addr_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_agent_credentials, setup, teardown),
		cmocka_unit_test_setup_teardown(test_require_group_section, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fallback_to_default, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nul_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ipv6_addresses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ipv6_in_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_key_points_to_its_section, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_key_of_other_program, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_section, setup, teardown),
		cmocka_unit_test_setup_teardown(test_section_of_other_program, setup, teardown),
		cmocka_unit_test_setup_teardown(test_text_after_section_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_outside_section, setup, teardown),
		cmocka_unit_test_setup_teardown(test_syntax_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_required_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_required_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_addresses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_host_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_addr_needs_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gateway_listen_addr_not_empty, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bad_number_not_digits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_number_overflow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_number_out_of_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_control_socket_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_bool, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_log_enums, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_cert_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreadable_cert_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_timeout_must_exceed_interval, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_reconnect_max_below_initial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_tls_pair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listener_auth_pair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_https_listener, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listener_port_collision, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metrics_section, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listener_ports_may_differ_by_host, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_proxy_username_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_id_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_id_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_egress_proxy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_egress_proxy_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_egress_proxy_reloads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_socket_path_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secrets_never_in_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_env_overrides, setup, teardown),
		cmocka_unit_test_setup_teardown(test_env_replaces_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_env_bad_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_env_fixes_cert_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reference_examples_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_secrets_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exposed_secret_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_markdown_lists_every_key, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
