/*
 * front.h — the proxy front ends the gateway offers. Each is a struct
 * proxy_frontend (proxy.h) defined in its own file; gateway.c hands each
 * to the listener of its section and tells the statistics their names
 * (struct gw_proxy_stats.name), and nothing else names them (but
 * front_forward.c its own).
 */
#ifndef ANYPROXY_GATEWAY_FRONT_H
#define ANYPROXY_GATEWAY_FRONT_H

#include "proxy.h"

extern const struct proxy_frontend socks5_frontend;  /* front_socks5.c, [socks5] */
extern const struct proxy_frontend http_frontend;    /* front_http.c, [http] */
extern const struct proxy_frontend https_frontend;   /* front_http.c, [proxy.https] */
extern const struct proxy_frontend forward_frontend; /* front_forward.c, [forward.NAME] */

#endif
