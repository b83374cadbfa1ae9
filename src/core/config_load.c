/*
 * config_load.c — loading the INI configuration (config.h): the table's
 * defaults, then the file (through inih, fed by our own line reader so that
 * errors carry line numbers and nothing is silently cut), then the
 * environment, then validation: empty secrets, required keys, the table's
 * per-key checks, the cross-key rules (described in config_rules[], keep
 * the two in step) and the types' checks against the world. [group.NAME]
 * sections of the gateway are parsed here too.
 *
 * The first error stops the load and is reported as one line naming where
 * the value came from:
 *   gw.ini:12: [gateway] tls_cert: cannot read '/x.crt': No such file or directory
 *   gw.ini: [gateway] tls_key: required key is missing
 *   environment CLIENT_GROUP_ID: ...
 * Error messages never contain the value of a secret key.
 */
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "anyproxy/common.h"
#include "anyproxy/config-table.h"
#include "anyproxy/config.h"
#include "anyproxy/grammar.h"
#include "anyproxy/log.h"

/* What inih's line buffer must hold: a longest line, "\r\n" and the NUL. */
#define CONFIG_INIH_LINE_BYTES (CONFIG_LINE_MAX_BYTES + 3)

/* ---- checks registered by the layers above ---- */

/* Set at start-up, before any load, and only read afterwards. */
static config_item_check_fn registered_checks[CONFIG_CHECKS];

int config_register_check(enum config_check which, config_item_check_fn fn)
{
	if (which <= CONFIG_CHECK_NONE || which >= CONFIG_CHECKS)
		return -EINVAL;
	registered_checks[which] = fn;
	return 0;
}

config_item_check_fn config_registered_check(enum config_check which)
{
	return which > CONFIG_CHECK_NONE && which < CONFIG_CHECKS ? registered_checks[which] : NULL;
}

static size_t key_index(const struct config_key *key)
{
	return (size_t)(key - config_keys);
}

struct load_ctx;
static int open_group_section(struct load_ctx *ctx, const char *name, size_t len);
static int open_forward_section(struct load_ctx *ctx, const char *name, size_t len);

/* ---- loading ---- */

enum origin_kind { ORIGIN_DEFAULT, ORIGIN_FILE, ORIGIN_ENV };

/* Where a key's current value came from: errors point there. */
struct key_origin {
	enum origin_kind kind;
	int line; /* ORIGIN_FILE only */
};

struct load_ctx {
	struct config *cfg;
	enum config_program program;
	const char *path;
	char *err;
	size_t errlen;
	bool failed;
	FILE *file;
	int line;                        /* of the line inih is parsing */
	int read_errno;                  /* reading the file failed with this */
	const char *section;             /* the section the lines belong to, for errors */
	struct config_group_auth *group; /* inside a [group.NAME] section */
	bool in_forward;                 /* inside a [forward.NAME] section (the last) */
	struct key_origin origins[CONFIG_KEYS_MAX];
};

/*
 * Record the load's error (only the first one counts): "PATH:LINE: " for a
 * file line, "PATH: " for a key left at its default, "environment VAR: "
 * for an override; then "[section] key: " when a key is known, then the
 * message. Always returns -EINVAL, for `return fail(...)`.
 */
__attribute__((format(printf, 4, 5))) static int fail(struct load_ctx *ctx,
						      const struct key_origin *where,
						      const struct config_key *key, const char *fmt,
						      ...)
{
	char var[CONFIG_ENV_NAME_BYTES];
	size_t n = 0;
	va_list ap;
	int written;

	if (ctx->failed)
		return -EINVAL;
	ctx->failed = true;
	if (!ctx->errlen)
		return -EINVAL;
	if (where->kind == ORIGIN_ENV) {
		config_env_name(key, var);
		written = snprintf(ctx->err, ctx->errlen, "environment %s: ", var);
	} else if (where->kind == ORIGIN_FILE) {
		written = snprintf(ctx->err, ctx->errlen, "%s:%d: ", ctx->path, where->line);
	} else {
		written = snprintf(ctx->err, ctx->errlen, "%s: ", ctx->path);
	}
	n = MIN((size_t)written, ctx->errlen - 1);
	if (key && where->kind != ORIGIN_ENV) {
		written = snprintf(ctx->err + n, ctx->errlen - n, "[%s] %s: ", key->section,
				   key->name);
		n = MIN(n + (size_t)written, ctx->errlen - 1);
	}
	va_start(ap, fmt);
	vsnprintf(ctx->err + n, ctx->errlen - n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int fail_key(struct load_ctx *ctx, const struct config_key *key, const char *why)
{
	return fail(ctx, &ctx->origins[key_index(key)], key, "%s", why);
}

static int fail_line(struct load_ctx *ctx, const char *why)
{
	struct key_origin here = { ORIGIN_FILE, ctx->line };

	return fail(ctx, &here, NULL, "%s", why);
}

/* Parse value into the key's field, replacing (or, for repeatable types,
 * extending) what is there. Returns 0, -EINVAL with the error recorded, or
 * -ENOMEM. */
static int set_value(struct load_ctx *ctx, const struct config_key *key, const char *value)
{
	char why[CONFIG_WHY_BYTES];
	int err = key->type->parse(key, config_key_field(ctx->cfg, key), value, why, sizeof(why));

	return err == -EINVAL ? fail_key(ctx, key, why) : err;
}

static void apply_defaults(struct load_ctx *ctx)
{
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];

		ctx->origins[i].kind = ORIGIN_DEFAULT;
		/* The table must follow the secret name rule; the unit tests load. */
		if (key->type->secret != config_secret_key_name(key->name))
			abort();
		if (!(key->programs & ctx->program) || !key->default_value)
			continue;
		/* Defaults are constants of the table (config.c); the unit tests load them. */
		if (set_value(ctx, key, key->default_value) < 0)
			abort();
	}
}

/* A program whose keys need a check that nobody registered would accept
 * their items unchecked: refuse to load it instead (a bug in the program). */
static int check_registrations(struct load_ctx *ctx)
{
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];

		if ((key->programs & ctx->program) && key->item_check != CONFIG_CHECK_NONE &&
		    !config_registered_check(key->item_check))
			return fail_key(ctx, key,
					"internal error: no check registered for its items");
	}
	return 0;
}

static const struct config_section *find_section(const char *name, size_t len)
{
	for (size_t i = 0; i < config_nsections; i++) {
		if (strlen(config_sections[i].name) == len &&
		    memcmp(config_sections[i].name, name, len) == 0)
			return &config_sections[i];
	}
	return NULL;
}

/*
 * inih only hands us key = value pairs, so a section header is checked here
 * when its line is read: an unknown section is an error even if empty.
 * inih's own rule for the name: from '[' to the first ']'. A header without
 * ']' is left to inih, which reports it as a syntax error.
 */
static int check_section_header(struct load_ctx *ctx, const char *line)
{
	const struct config_section *section;
	const char *name, *close;
	char show[CONFIG_SHOWN_BYTES], name_copy[CONFIG_SHOWN_BYTES], why[CONFIG_SHOWN_BYTES + 256];
	size_t len;

	while (isspace((unsigned char)*line))
		line++;
	if (*line != '[')
		return 0;
	name = line + 1;
	close = strchr(name, ']');
	if (!close)
		return 0;
	len = (size_t)(close - name);
	for (const char *p = close + 1; *p; p++) {
		if (!isspace((unsigned char)*p))
			return fail_line(ctx, "unexpected text after ']' of a section header");
	}
	section = find_section(name, len);
	ctx->group = NULL;
	ctx->in_forward = false;
	if (section && (section->programs & ctx->program)) {
		ctx->section = section->name;
		return 0;
	}
	if (ctx->program == CONFIG_GATEWAY && len > strlen(CONFIG_GROUP_SECTION_PREFIX) &&
	    strncmp(name, CONFIG_GROUP_SECTION_PREFIX, strlen(CONFIG_GROUP_SECTION_PREFIX)) == 0)
		return open_group_section(ctx, name + strlen(CONFIG_GROUP_SECTION_PREFIX),
					  len - strlen(CONFIG_GROUP_SECTION_PREFIX));
	if (ctx->program == CONFIG_GATEWAY && len > strlen(CONFIG_FORWARD_SECTION_PREFIX) &&
	    strncmp(name, CONFIG_FORWARD_SECTION_PREFIX, strlen(CONFIG_FORWARD_SECTION_PREFIX)) ==
		    0)
		return open_forward_section(ctx, name + strlen(CONFIG_FORWARD_SECTION_PREFIX),
					    len - strlen(CONFIG_FORWARD_SECTION_PREFIX));

	snprintf(name_copy, sizeof(name_copy), "%.*s", (int)MIN(len, sizeof(name_copy) - 1), name);
	config_shown(name_copy, show);
	if (section) {
		/* Shared sections always match, so this one has a single owner. */
		snprintf(why, sizeof(why), "[%s]: section belongs to %s, not %s", show,
			 config_program_name((enum config_program)section->programs),
			 config_program_name(ctx->program));
	} else {
		size_t n = (size_t)snprintf(why, sizeof(why), "[%s]: unknown section (%s accepts",
					    show, config_program_name(ctx->program));

		for (size_t i = 0; i < config_nsections && n < sizeof(why); i++) {
			if (config_sections[i].programs & ctx->program)
				n += (size_t)snprintf(why + n, sizeof(why) - n, " [%s]",
						      config_sections[i].name);
		}
		if (n < sizeof(why))
			snprintf(why + n, sizeof(why) - n, ")");
	}
	return fail_line(ctx, why);
}

/* [group.NAME]: per-group proxy credentials (gateway only). */
static int open_group_section(struct load_ctx *ctx, const char *name, size_t len)
{
	struct config *cfg = ctx->cfg;
	struct config_group_auth *g;
	char id[CONFIG_ID_MAX_BYTES + 1], why[CONFIG_ID_MAX_BYTES + 128];

	if (len > CONFIG_ID_MAX_BYTES) {
		snprintf(why, sizeof(why), "[group.%.*s...]: group name longer than %d bytes", 16,
			 name, CONFIG_ID_MAX_BYTES);
		return fail_line(ctx, why);
	}
	memcpy(id, name, len);
	id[len] = '\0';
	/* the ids agents join with and users name (grammar.h) */
	if (grammar_id_span(id, len) != len) {
		snprintf(why, sizeof(why),
			 "[group.%s]: a group name has only "
			 "A-Z a-z 0-9 . _ : -",
			 id);
		return fail_line(ctx, why);
	}
	if (config_group_auth(cfg, id, len)) {
		snprintf(why, sizeof(why), "[group.%s]: section appears twice", id);
		return fail_line(ctx, why);
	}
	if (cfg->ngroups == CONFIG_GROUPS_MAX)
		return fail_line(ctx, "too many [group.NAME] sections");
	g = realloc(cfg->groups, (cfg->ngroups + 1) * sizeof(*g));
	if (!g)
		return -ENOMEM;
	cfg->groups = g;
	g = &cfg->groups[cfg->ngroups];
	memset(g, 0, sizeof(*g));
	g->group = strdup(id);
	if (!g->group)
		return -ENOMEM;
	g->line = ctx->line;
	cfg->ngroups++;
	ctx->group = g;
	ctx->section = CONFIG_GROUP_SECTION_PREFIX "NAME";
	return 0;
}

/* [forward.NAME]: a port forwarded through a group (gateway only). */
static int open_forward_section(struct load_ctx *ctx, const char *name, size_t len)
{
	char why[CONFIG_WHY_BYTES];
	int ret = config_forward_open(ctx->cfg, name, len, ctx->line, why, sizeof(why));

	if (ret == -EINVAL)
		return fail_line(ctx, why);
	if (ret < 0)
		return fail_line(ctx, strerror(-ret));
	ctx->in_forward = true;
	ctx->section = CONFIG_FORWARD_SECTION_PREFIX "NAME";
	return 0;
}

/* A key inside [group.NAME]: auth_username, auth_password (its users),
 * agent_username or agent_password (its agents). */
static int group_pair(struct load_ctx *ctx, const char *name, const char *value)
{
	struct config_group_auth *g = ctx->group;
	char why[CONFIG_SHOWN_VALUE_MAX_BYTES + 128];
	char **field;
	bool secret = config_secret_key_name(name), agent = false;

	if (strcmp(name, "auth_username") == 0) {
		field = &g->auth_username;
	} else if (strcmp(name, "auth_password") == 0) {
		field = &g->auth_password;
	} else if (strcmp(name, "agent_username") == 0) {
		field = &g->agent_username;
		agent = true;
	} else if (strcmp(name, "agent_password") == 0) {
		field = &g->agent_password;
		agent = true;
	} else {
		snprintf(why, sizeof(why),
			 "[group.%s] %.64s: unknown key (auth_username, "
			 "auth_password, agent_username, agent_password)",
			 g->group, name);
		return fail_line(ctx, why);
	}
	if (*field) {
		snprintf(why, sizeof(why), "[group.%s] %s: duplicate key", g->group, name);
		return fail_line(ctx, why);
	}
	if (secret && !value[0]) {
		snprintf(why, sizeof(why), "[group.%s] %s: %s", g->group, name,
			 CONFIG_EMPTY_SECRET_WHY);
		return fail_line(ctx, why);
	}
	/* an empty agent user name would admit agents that present none */
	if (agent && !value[0]) {
		snprintf(why, sizeof(why), "[group.%s] %s: must not be empty", g->group, name);
		return fail_line(ctx, why);
	}
	/* agent user names travel in HELLO, not in a proxy user name: any
	 * byte is fine there, as for [gateway] auth_username */
	if (config_check_credential(&value, why, sizeof(why)) < 0 ||
	    (!secret && !agent && config_check_socks5_username(&value, why, sizeof(why)) < 0) ||
	    (!secret && !agent && config_check_http_username(&value, why, sizeof(why)) < 0)) {
		char msg[sizeof(why) + 96];

		snprintf(msg, sizeof(msg), "[group.%s] %s: %s", g->group, name,
			 secret ? "invalid password" : why);
		return fail_line(ctx, msg);
	}
	*field = strdup(value);
	return *field ? 0 : -ENOMEM;
}

const struct config_group_auth *config_group_auth(const struct config *cfg, const char *group,
						  size_t group_len)
{
	for (size_t i = 0; i < cfg->ngroups; i++)
		if (strlen(cfg->groups[i].group) == group_len &&
		    memcmp(cfg->groups[i].group, group, group_len) == 0)
			return &cfg->groups[i];
	return NULL;
}

static void free_groups(struct config *cfg)
{
	for (size_t i = 0; i < cfg->ngroups; i++) {
		free(cfg->groups[i].group);
		config_free_string(&cfg->groups[i].auth_username, false);
		config_free_string(&cfg->groups[i].auth_password, true);
		config_free_string(&cfg->groups[i].agent_username, false);
		config_free_string(&cfg->groups[i].agent_password, true);
	}
	free(cfg->groups);
	cfg->groups = NULL;
	cfg->ngroups = 0;
}

/* Every [group.NAME] needs its users' password: a section is a tenant
 * boundary for users too (a section without one must not let the
 * listener's password in). agent_username alone would change nothing. */
static int check_groups(struct load_ctx *ctx)
{
	for (size_t i = 0; i < ctx->cfg->ngroups; i++) {
		const struct config_group_auth *g = &ctx->cfg->groups[i];
		struct key_origin where = { ORIGIN_FILE, g->line };

		if (!g->auth_password)
			return fail(ctx, &where, NULL,
				    "[group.%s] auth_password: required key is "
				    "missing",
				    g->group);
		if (g->agent_username && !g->agent_password)
			return fail(ctx, &where, NULL,
				    "[group.%s] agent_username: set without "
				    "agent_password (set both, or agent_password alone)",
				    g->group);
	}
	return 0;
}

/*
 * The ini_reader given to inih. It reads one whole line itself, so that it
 * knows the line number (inih does not tell its handler) and can refuse what
 * inih would silently mangle: over-long lines (inih cuts them) and NUL bytes
 * (inih stops the line there). str has room for CONFIG_INIH_LINE_BYTES
 * because config_load sets ini_max_line to that. Returns NULL at the end of
 * the file and on any error (recorded in ctx), which ends inih's loop.
 */
#define LINE_TOO_LONG "line too long (max " CONFIG_LINE_MAX_TEXT " bytes)"

/* An over-long line: name its key when the line starts like "key = ". */
static void fail_long_line(struct load_ctx *ctx, const char *start, size_t n)
{
	struct key_origin here = { ORIGIN_FILE, ctx->line };
	size_t i = 0, key_len;
	char key[CONFIG_SHOWN_BYTES];

	while (i < n && isspace((unsigned char)start[i]))
		i++;
	key_len = 0;
	while (i + key_len < n &&
	       (isalnum((unsigned char)start[i + key_len]) || start[i + key_len] == '_') &&
	       key_len < sizeof(key) - 1)
		key_len++;
	if (key_len && ctx->section && memchr(start + i + key_len, '=', n - i - key_len)) {
		memcpy(key, start + i, key_len);
		key[key_len] = '\0';
		fail(ctx, &here, NULL, "[%s] %s: %s", ctx->section, key, LINE_TOO_LONG);
		return;
	}
	fail_line(ctx, LINE_TOO_LONG);
}

static char *read_config_line(char *str, int num, void *stream)
{
	struct load_ctx *ctx = stream;
	size_t n = 0, content_len;
	bool has_nul = false;
	int c;

	if (ctx->failed)
		return NULL;
	if (num < CONFIG_INIH_LINE_BYTES) { /* someone changed ini_max_line under us */
		fail_line(ctx, "internal error: inih line buffer too small");
		return NULL;
	}
	c = getc(ctx->file);
	if (c == EOF) {
		if (ferror(ctx->file))
			ctx->read_errno = errno ? errno : EIO;
		return NULL;
	}
	ctx->line++;
	for (; c != EOF && c != '\n'; c = getc(ctx->file)) {
		if (n > CONFIG_LINE_MAX_BYTES) { /* room for a '\r' beyond the limit */
			fail_long_line(ctx, str, n);
			return NULL;
		}
		has_nul |= c == '\0';
		str[n++] = (char)c;
	}
	if (c == EOF && ferror(ctx->file)) {
		ctx->read_errno = errno ? errno : EIO;
		return NULL;
	}
	content_len = n > 0 && str[n - 1] == '\r' ? n - 1 : n;
	if (content_len > CONFIG_LINE_MAX_BYTES) {
		fail_long_line(ctx, str, content_len);
		return NULL;
	}
	if (has_nul) {
		fail_line(ctx, "NUL byte in line");
		return NULL;
	}
	/* A UTF-8 byte order mark is allowed at the start of the file. */
	if (ctx->line == 1 && n >= 3 && memcmp(str, "\xef\xbb\xbf", 3) == 0) {
		memmove(str, str + 3, n - 3);
		n -= 3;
	}
	str[n] = '\0';
	if (check_section_header(ctx, str) < 0)
		return NULL;
	str[n++] = '\n';
	str[n] = '\0';
	return str;
}

static const struct config_key *find_key(enum config_program program, const char *section,
					 const char *name)
{
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];

		if ((key->programs & program) && strcmp(key->section, section) == 0 &&
		    strcmp(key->name, name) == 0)
			return key;
	}
	return NULL;
}

static int fail_unknown_key(struct load_ctx *ctx, const char *section, const char *name)
{
	struct key_origin here = { ORIGIN_FILE, ctx->line };
	char show_section[CONFIG_SHOWN_BYTES], show_name[CONFIG_SHOWN_BYTES];

	config_shown(section, show_section);
	config_shown(name, show_name);
	/* Point to the right section when the key exists elsewhere. */
	for (size_t i = 0; i < config_nsections; i++) {
		const char *other = config_sections[i].name;

		if (find_key(ctx->program, other, name))
			return fail(ctx, &here, NULL, "[%s] %s: unknown key (it belongs in [%s])",
				    show_section, show_name, other);
	}
	return fail(ctx, &here, NULL, "[%s] %s: unknown key", show_section, show_name);
}

/* The ini_handler: one key = value pair of the file. */
static int on_ini_pair(void *user, const char *section, const char *name, const char *value)
{
	struct load_ctx *ctx = user;
	const struct config_key *key;
	struct key_origin *origin;

	if (section[0] == '\0') {
		fail_line(ctx, "key outside of a section: start the file with a [section] header");
		return 0;
	}
	if (name[0] == '\0') {
		fail_line(ctx, "missing key name before '='");
		return 0;
	}
	if (ctx->group) {
		if (group_pair(ctx, name, value) == -ENOMEM)
			fail_line(ctx, strerror(ENOMEM));
		return !ctx->failed;
	}
	if (ctx->in_forward) {
		char why[CONFIG_WHY_BYTES + 128];
		int ret = config_forward_pair(ctx->cfg, name, value, why, sizeof(why));

		if (ret < 0)
			fail_line(ctx, ret == -EINVAL ? why : strerror(-ret));
		return !ctx->failed;
	}
	key = find_key(ctx->program, section, name);
	if (!key) {
		fail_unknown_key(ctx, section, name);
		return 0;
	}
	origin = &ctx->origins[key_index(key)];
	if (origin->kind == ORIGIN_FILE && !key->type->repeatable) {
		struct key_origin here = { ORIGIN_FILE, ctx->line };

		fail(ctx, &here, key, "duplicate key (first set on line %d)", origin->line);
		return 0;
	}
	origin->kind = ORIGIN_FILE;
	origin->line = ctx->line;
	if (set_value(ctx, key, value) == -ENOMEM)
		fail_line(ctx, strerror(ENOMEM));
	return !ctx->failed;
}

/* inih's behaviour is process-wide state; set all of it, every load. */
static void configure_inih(void)
{
	ini_max_line = CONFIG_INIH_LINE_BYTES;
	ini_use_stack = true;
	ini_allow_multiline = false;       /* an indented line is not a continuation */
	ini_allow_bom = false;             /* read_config_line strips it */
	ini_allow_inline_comments = false; /* "pass ;word" keeps its ';' */
	ini_allow_no_value = false;
	ini_stop_on_first_error = true;
}

static int parse_file(struct load_ctx *ctx)
{
	int line;

	ctx->file = fopen(ctx->path, "re");
	if (!ctx->file) {
		int err = errno;

		if (ctx->errlen)
			snprintf(ctx->err, ctx->errlen, "%s: cannot open: %s", ctx->path,
				 strerror(err));
		ctx->failed = true;
		return -err;
	}
	configure_inih();
	line = ini_parse_stream(read_config_line, ctx, on_ini_pair, ctx);
	fclose(ctx->file);
	ctx->file = NULL;
	if (ctx->failed)
		return -EINVAL;
	if (ctx->read_errno) {
		if (ctx->errlen)
			snprintf(ctx->err, ctx->errlen, "%s: cannot read: %s", ctx->path,
				 strerror(ctx->read_errno));
		ctx->failed = true;
		return -ctx->read_errno;
	}
	if (line < 0) /* inih could not allocate (its heap mode) */
		return -ENOMEM;
	if (line > 0) {
		ctx->line = line;
		return fail_line(ctx, "syntax error: expected '[section]' or 'key = value'");
	}
	return 0;
}

static int apply_environment(struct load_ctx *ctx)
{
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];
		char var[CONFIG_ENV_NAME_BYTES];
		const char *value;
		int err;

		if (!(key->programs & ctx->program))
			continue;
		config_env_name(key, var);
		value = getenv(var);
		if (!value)
			continue;
		ctx->origins[i].kind = ORIGIN_ENV;
		if (strlen(value) > CONFIG_LINE_MAX_BYTES)
			return fail_key(ctx, key,
					"value too long (max " CONFIG_LINE_MAX_TEXT " bytes)");
		if (key->type->repeatable && key->type->free)
			key->type->free(key, config_key_field(ctx->cfg, key));
		err = set_value(ctx, key, value);
		if (err < 0)
			return err;
	}
	return 0;
}

static bool key_is_set(struct config *cfg, const struct config_key *key)
{
	return !key->type->is_set || key->type->is_set(config_key_field(cfg, key));
}

/* A secret given (file or environment, whichever came last) with an empty
 * value: the string type left it NULL, its origin says where it was given. */
static int check_empty_secrets(struct load_ctx *ctx)
{
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];

		if ((key->programs & ctx->program) && key->type->secret &&
		    ctx->origins[i].kind != ORIGIN_DEFAULT && !key_is_set(ctx->cfg, key))
			return fail_key(ctx, key, CONFIG_EMPTY_SECRET_WHY);
	}
	return 0;
}

static int check_required(struct load_ctx *ctx)
{
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];

		if (!(key->programs & ctx->program) || !key->required || key_is_set(ctx->cfg, key))
			continue;
		char var[CONFIG_ENV_NAME_BYTES], why[160];

		config_env_name(key, var);
		snprintf(why, sizeof(why), "required key is %s (set it here or in %s)",
			 ctx->origins[i].kind == ORIGIN_DEFAULT ? "missing" : "empty", var);
		return fail_key(ctx, key, why);
	}
	return 0;
}

static int run_key_checks(struct load_ctx *ctx)
{
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];
		char why[200];

		if (!(key->programs & ctx->program) || !key->check)
			continue;
		if (key->check(config_key_field(ctx->cfg, key), why, sizeof(why)) < 0)
			return fail_key(ctx, key, why);
	}
	return 0;
}

/* The types' checks against the world (a file key's file is readable). */
static int validate_types(struct load_ctx *ctx)
{
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];
		char why[CONFIG_WHY_BYTES];

		if (!(key->programs & ctx->program) || !key->type->validate)
			continue;
		if (key->type->validate(config_key_field(ctx->cfg, key), why, sizeof(why)) < 0)
			return fail_key(ctx, key, why);
	}
	return 0;
}

/* Of two keys in one rule, the one to name in the error: the one the user
 * set (the later one if both were), since a default is not their mistake. */
static const struct config_key *blame(struct load_ctx *ctx, const struct config_key *a,
				      const struct config_key *b)
{
	const struct key_origin *oa = &ctx->origins[key_index(a)];
	const struct key_origin *ob = &ctx->origins[key_index(b)];

	if (ob->kind == ORIGIN_DEFAULT)
		return a;
	if (oa->kind == ORIGIN_ENV && ob->kind == ORIGIN_FILE)
		return a;
	if (oa->kind == ORIGIN_FILE && ob->kind == ORIGIN_FILE && oa->line > ob->line)
		return a;
	return b;
}

static int check_ping(struct load_ctx *ctx, const struct config_key *interval_key,
		      const struct config_key *timeout_key)
{
	uint32_t interval = *(uint32_t *)config_key_field(ctx->cfg, interval_key);
	uint32_t timeout = *(uint32_t *)config_key_field(ctx->cfg, timeout_key);
	char why[160];

	if (timeout > interval)
		return 0;
	snprintf(why, sizeof(why),
		 "ping_timeout_ms (%u) must be greater than ping_interval_ms (%u)", timeout,
		 interval);
	return fail_key(ctx, blame(ctx, interval_key, timeout_key), why);
}

/* Two keys that make sense only together. */
static int check_pair(struct load_ctx *ctx, const struct config_key *a, const struct config_key *b)
{
	bool a_set = key_is_set(ctx->cfg, a), b_set = key_is_set(ctx->cfg, b);
	char why[160];

	if (a_set == b_set)
		return 0;
	snprintf(why, sizeof(why), "set without %s (set both or neither)",
		 a_set ? b->name : a->name);
	return fail_key(ctx, a_set ? a : b, why);
}

/* Listeners use SO_REUSEPORT, so two of ours on one port would both bind
 * and silently share the connections: refuse that here ([metrics] too). */
static int check_listener_ports(struct load_ctx *ctx)
{
	const struct config_key *listeners[] = {
		CONFIG_KEY_OF(gateway.listen_addr), CONFIG_KEY_OF(http.listen_addr),
		CONFIG_KEY_OF(socks5.listen_addr),  CONFIG_KEY_OF(metrics.listen_addr),
		CONFIG_KEY_OF(https.listen_addr),
	};

	for (size_t i = 0; i < ARRAY_SIZE(listeners); i++) {
		for (size_t j = i + 1; j < ARRAY_SIZE(listeners); j++) {
			const struct config_key *a = listeners[i], *b = listeners[j];
			const struct config_key *blamed, *other;
			char why[160];

			if (!config_addrs_collide(config_key_field(ctx->cfg, a),
						  config_key_field(ctx->cfg, b)))
				continue;
			blamed = blame(ctx, a, b);
			other = blamed == a ? b : a;
			snprintf(why, sizeof(why),
				 "same port as [%s] listen_addr; two listeners cannot share a port",
				 other->section);
			return fail_key(ctx, blamed, why);
		}
	}
	return 0;
}

/* [proxy.https] serves TLS: a listener without its certificate is an error,
 * not a plain one. */
static int check_https_files(struct load_ctx *ctx)
{
	const struct config_key *addr = CONFIG_KEY_OF(https.listen_addr);
	const struct config_key *files[] = { CONFIG_KEY_OF(https.tls_cert),
					     CONFIG_KEY_OF(https.tls_key) };

	if (!key_is_set(ctx->cfg, addr))
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		char why[160];

		if (key_is_set(ctx->cfg, files[i]))
			continue;
		snprintf(why, sizeof(why),
			 "set without %s (a TLS listener needs tls_cert "
			 "and tls_key)",
			 files[i]->name);
		return fail_key(ctx, addr, why);
	}
	return 0;
}

static int validate_gateway(struct load_ctx *ctx)
{
	int err = check_ping(ctx, CONFIG_KEY_OF(gateway.ping_interval_ms),
			     CONFIG_KEY_OF(gateway.ping_timeout_ms));

	if (!err)
		err = check_pair(ctx, CONFIG_KEY_OF(http.auth_username),
				 CONFIG_KEY_OF(http.auth_password));
	if (!err)
		err = check_pair(ctx, CONFIG_KEY_OF(socks5.auth_username),
				 CONFIG_KEY_OF(socks5.auth_password));
	if (!err)
		err = check_pair(ctx, CONFIG_KEY_OF(https.auth_username),
				 CONFIG_KEY_OF(https.auth_password));
	if (!err)
		err = check_https_files(ctx);
	if (!err)
		err = check_listener_ports(ctx);
	if (!err)
		err = check_groups(ctx);
	if (!err) {
		char why[CONFIG_WHY_BYTES];
		struct key_origin where = { ORIGIN_FILE, 0 };

		if (config_forwards_check(ctx->cfg, &where.line, why, sizeof(why)) < 0)
			err = fail(ctx, &where, NULL, "%s", why);
	}
	return err;
}

static int validate_client(struct load_ctx *ctx)
{
	struct config *cfg = ctx->cfg;
	const struct config_key *initial = CONFIG_KEY_OF(client.reconnect_initial_delay_ms);
	const struct config_key *max = CONFIG_KEY_OF(client.reconnect_max_delay_ms);
	int err = check_ping(ctx, CONFIG_KEY_OF(client.ping_interval_ms),
			     CONFIG_KEY_OF(client.ping_timeout_ms));

	if (err)
		return err;
	if (cfg->client.reconnect_max_delay_ms < cfg->client.reconnect_initial_delay_ms) {
		char why[160];

		snprintf(why, sizeof(why),
			 "reconnect_max_delay_ms (%u) must be at least reconnect_initial_delay_ms "
			 "(%u)",
			 cfg->client.reconnect_max_delay_ms,
			 cfg->client.reconnect_initial_delay_ms);
		return fail_key(ctx, blame(ctx, initial, max), why);
	}
	return check_pair(ctx, CONFIG_KEY_OF(client.tls_cert), CONFIG_KEY_OF(client.tls_key));
}

static int validate(struct load_ctx *ctx)
{
	int err = check_empty_secrets(ctx);

	if (!err)
		err = check_required(ctx);
	if (!err)
		err = run_key_checks(ctx);
	if (!err)
		err = ctx->program == CONFIG_GATEWAY ? validate_gateway(ctx) : validate_client(ctx);
	if (!err)
		err = validate_types(ctx);
	return err;
}

int config_load(struct config *cfg, enum config_program program, const char *path, char *err,
		size_t errlen)
{
	struct load_ctx ctx = {
		.cfg = cfg,
		.program = program,
		.path = path,
		.err = err,
		.errlen = errlen,
	};
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	if (errlen)
		err[0] = '\0';
	if (program != CONFIG_GATEWAY && program != CONFIG_CLIENT) {
		if (errlen)
			snprintf(err, errlen, "%s: unknown program %d", path, (int)program);
		return -EINVAL;
	}
	cfg->program = program;
	apply_defaults(&ctx);
	rc = check_registrations(&ctx);
	if (!rc)
		rc = parse_file(&ctx);
	if (!rc)
		rc = apply_environment(&ctx);
	if (!rc)
		rc = validate(&ctx);
	if (rc == -ENOMEM && !ctx.failed && errlen)
		snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
	if (rc < 0)
		config_free(cfg);
	return rc;
}

void config_free(struct config *cfg)
{
	free_groups(cfg);
	config_forwards_free(cfg);
	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];

		if (key->type->free)
			key->type->free(key, config_key_field(cfg, key));
	}
	memset(cfg, 0, sizeof(*cfg));
}

/* ---- files that hold secrets ---- */

/* WARN when group or others may read path; returns 1 if so, else 0. */
static int warn_if_exposed(const char *path, const char *what)
{
	char mode[8];
	struct stat st;

	if (stat(path, &st) < 0 || !(st.st_mode & (S_IRGRP | S_IROTH)))
		return 0;
	snprintf(mode, sizeof(mode), "%04o", (unsigned)(st.st_mode & 07777));
	log_warn("File with secrets is readable by group or others: chmod 600 it",
		 LF_S("file", path), LF_S("holds", what), LF_S("mode", mode));
	return 1;
}

int config_warn_exposed_files(const struct config *cfg, const char *path)
{
	int exposed = warn_if_exposed(path, "configuration");

	for (size_t i = 0; i < config_nkeys; i++) {
		const struct config_key *key = &config_keys[i];
		const char *file;

		if (!(key->programs & cfg->program) || !key->private_file)
			continue;
		file = *(char *const *)((const char *)cfg + key->offset);
		if (file)
			exposed += warn_if_exposed(file, "private key");
	}
	return exposed;
}
