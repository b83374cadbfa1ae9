/* handshake.h — a connection's place in the gateway's handshake budgets
 * ([gateway] max_handshakes, listener.c), embedded in the tunnels
 * (gateway.h) and the users' connections (proxy.h). */
#ifndef ANYPROXY_GATEWAY_HANDSHAKE_H
#define ANYPROXY_GATEWAY_HANDSHAKE_H

#include <stdbool.h>
#include <stdint.h>

/* Counted in its side's budget once, and listed on its worker, oldest
 * first, so that a full side can close its stale handshakes ([gateway]
 * handshake_stale_ms). */
struct hs_slot {
	struct hs_slot *prev, *next; /* gw_worker.handshakes[side], a utlist DL list */
	uint64_t since_us;           /* counted since (now_us()): also the handshake's duration */
	bool counted;
};

#endif
