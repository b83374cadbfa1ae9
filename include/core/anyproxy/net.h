/*
 * net.h — socket set-up helpers used at start-up and by the ring owners.
 * Every fd is created non-blocking and close-on-exec.
 */
#ifndef ANYPROXY_NET_H
#define ANYPROXY_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "anyproxy/config.h"

/* "1.2.3.4:80" / "[::1]:80" (grammar_format_target) or "unix" into buf;
 * "?" for another family or a buffer too small for the whole text (an
 * address needs at most 54 bytes). */
void net_format_sockaddr(const struct sockaddr *sa, char *buf, size_t len);
/* The peer address of a connected socket, formatted as above. */
void net_format_peer(int fd, char *buf, size_t len);

/* What a per-address limit counts a peer by: an IPv4 address (an
 * IPv4-mapped IPv6 one too) or an IPv6 /64, the block one subscriber gets,
 * as 16 bytes with the rest zero. -EAFNOSUPPORT for other families. */
#define NET_SOURCE_KEY_BYTES 16
int net_source_key(const struct sockaddr *sa, uint8_t key[NET_SOURCE_KEY_BYTES]);

/* Bind and listen on a numeric address ("" host = all addresses, IPv6
 * dual-stack when available). SO_REUSEADDR; SO_REUSEPORT so that several
 * workers can each own a listener. Returns the fd or -errno with err set. */
int net_listen_tcp(const struct config_addr *addr, int backlog, char *err, size_t errlen);

/* The same for a UDP socket (no listen): the fd or -errno with err set. */
int net_bind_udp(const struct config_addr *addr, char *err, size_t errlen);

/* Unix stream listener at path, mode 0600, creating the parent folder
 * (0755) if missing and replacing a stale socket file. fd or -errno. */
int net_listen_unix(const char *path, int backlog, char *err, size_t errlen);

/* Fill ss from a numeric host and port; -EINVAL if host is not an IP
 * literal (callers resolve names elsewhere, never on the loop). */
int net_parse_numeric(const char *host, unsigned port, struct sockaddr_storage *ss, socklen_t *len);

#endif
