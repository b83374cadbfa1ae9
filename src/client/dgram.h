/*
 * dgram.h — the agent's datagram associations (dgram.c; docs/protocol.md
 * "Datagrams"), private to src/client/.
 */
#ifndef ANYPROXY_CLIENT_DGRAM_H
#define ANYPROXY_CLIENT_DGRAM_H

#include "agent.h"

/* DGRAM_OPEN, DGRAM or DGRAM_CLOSE arrived on l's tunnel. 0, or -EPROTO
 * with *why set (no DATAGRAM capability, an id in use). */
int dgram_on_frame(struct agent_link *l, const struct frame *f, const char **why);
/* l's tunnel is gone: end its associations (nothing is sent). */
void dgram_close_all(struct agent_link *l, const char *why);

#endif
