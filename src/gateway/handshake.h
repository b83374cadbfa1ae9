/* handshake.h — a connection's place in the gateway's handshake budgets
 * ([gateway] max_handshakes, listener.c), held by the tunnels (gateway.h)
 * and the users' connections (proxy.h) while their handshake lasts. */
#ifndef ANYPROXY_GATEWAY_HANDSHAKE_H
#define ANYPROXY_GATEWAY_HANDSHAKE_H

#include <stdint.h>

/* Counted in its side's budget while it exists, and listed on its worker,
 * oldest first, so that a full side can close its stale handshakes
 * ([gateway] handshake_stale_ms). Allocated by handshake_begin and freed
 * by handshake_end: an established connection carries none (one
 * user_conn per open connection: docs/benchmarks.md, idle memory). */
struct hs_slot {
	struct hs_slot *prev, *next; /* gw_worker.handshakes[side], a utlist DL list */
	void *owner;                 /* the gw_tunnel or user_conn, for its budget's evict */
	uint64_t since_us;           /* counted since (now_us()): also the handshake's duration */
};

#endif
