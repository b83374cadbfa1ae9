/* anyproxy-gateway: the public side. Agents connect to it over TLS; users
 * connect to its proxy listeners; apctl asks it who is connected. */
#include <stdlib.h>

#include "anyproxy/cli.h"
#include "anyproxy/log.h"
#include "anyproxy/tls.h"
#include "gateway.h"

static const struct cli_program gateway_program = {
	.name = "anyproxy-gateway",
	.config = CONFIG_GATEWAY,
	.default_config = "/etc/anyproxy/gateway.ini",
	.summary = "Accepts anyproxy-client agents over TLS and routes users' proxy "
		   "connections through them by group.",
	.library_version = tls_library_version,
};

int main(int argc, char **argv)
{
	struct config cfg;
	struct gateway gw;
	int ret = cli_start(&gateway_program, argc, argv, &cfg);

	if (ret >= 0)
		return ret;
	if (tls_global_init() < 0) {
		log_error("Cannot initialise wolfSSL", LF_S("tls", tls_library_version()));
		return CLI_EXIT_FAILURE;
	}
	ret = gateway_init(&gw, &gateway_program, &cfg);
	if (ret == 0)
		ret = gateway_run(&gw);
	gateway_destroy(&gw);
	tls_global_exit();
	config_free(&cfg);
	log_close();
	return ret == 0 ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}
