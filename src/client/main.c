/* anyproxy-client: the agent. Dials out to the gateway over TLS, joins its
 * group and carries users' connections to their targets. */
#include "anyproxy/acl.h"
#include "anyproxy/cli.h"
#include "anyproxy/log.h"
#include "anyproxy/tls.h"
#include "agent.h"

static const struct cli_program client_program = {
	.name = "anyproxy-client",
	.config = CONFIG_CLIENT,
	.default_config = "/etc/anyproxy/client.ini",
	.summary = "Connects out to an anyproxy-gateway over TLS, joins a group and "
		   "carries users' connections to their targets.",
	.library_version = tls_library_version,
};

int main(int argc, char **argv)
{
	struct config cfg;
	struct agent a;
	int ret;

	/* config checks each allowed_hosts / forbidden_hosts item with the
	 * ACL's own parser, so --check-config refuses what the agent would */
	config_register_check(CONFIG_CHECK_HOST_PATTERN, acl_check_pattern);
	ret = cli_start(&client_program, argc, argv, &cfg);

	if (ret >= 0)
		return ret;
	if (tls_global_init() < 0) {
		log_error("Cannot initialise wolfSSL", LF_S("tls", tls_library_version()));
		return CLI_EXIT_FAILURE;
	}
	ret = agent_init(&a, &client_program, &cfg);
	if (ret == 0)
		ret = agent_run(&a);
	agent_destroy(&a);
	tls_global_exit();
	config_free(&cfg);
	log_close();
	return ret == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}
