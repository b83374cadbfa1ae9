/*
 * socks5.c — SOCKS5 wire codec (see socks5.h for the layouts and contracts).
 *
 * Pure: no I/O, no allocation, no state besides the const table below. Each
 * parser checks a field as soon as its bytes are present and touches the
 * output only once the whole message has been validated, so a refused or
 * incomplete message never leaves half a password behind in the caller's
 * struct.
 */
#include "anyproxy/socks5.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "anyproxy/common.h"
#include "anyproxy/grammar.h"
#include "anyproxy/frame.h"

/* Fixed parts of the messages, in bytes. */
#define GREETING_HEADER_SIZE 2 /* VER, NMETHODS */
#define AUTH_HEADER_SIZE 2     /* VER, ULEN */
#define AUTH_PLEN_SIZE 1
#define REQUEST_HEADER_SIZE 4 /* VER, CMD, RSV, ATYP */
#define DOMAIN_LEN_SIZE 1
#define PORT_SIZE 2
#define IPV4_ADDR_SIZE 4
#define IPV6_ADDR_SIZE 16
#define MIN_USERNAME_LEN 1
#define MIN_DOMAIN_LEN 1
#define METHOD_REPLY_SIZE 2
#define AUTH_STATUS_SIZE 2

/* Offsets inside a request. */
#define REQUEST_CMD_OFFSET 1
#define REQUEST_ATYP_OFFSET 3
#define ATYP_SIZE 1
/* Offsets inside a UDP request header (RFC 1928 section 7). */
#define UDP_FRAG_OFFSET 2
#define UDP_ATYP_OFFSET 3

/* ATYP values travel in OPEN unchanged (int casts: the enums differ). */
_Static_assert((int)SOCKS5_ADDR_IPV4 == (int)FRAME_ADDR_IPV4, "IPv4 ATYP");
_Static_assert((int)SOCKS5_ADDR_DOMAIN == (int)FRAME_ADDR_DOMAIN, "domain ATYP");
_Static_assert((int)SOCKS5_ADDR_IPV6 == (int)FRAME_ADDR_IPV6, "IPv6 ATYP");
_Static_assert(SOCKS5_NAME_MAX <= FRAME_MAX_TEXT_LEN, "a SOCKS5 domain fits OPEN");
_Static_assert(IPV6_ADDR_SIZE == sizeof(((struct socks5_request *)0)->addr), "addr holds IPv6");
_Static_assert(SOCKS5_GREETING_MAX == 257, "RFC 1928 greeting size");
_Static_assert(SOCKS5_AUTH_MAX == 513, "RFC 1929 request size");
_Static_assert(SOCKS5_REQUEST_MAX ==
		       REQUEST_HEADER_SIZE + DOMAIN_LEN_SIZE + SOCKS5_NAME_MAX + PORT_SIZE,
	       "largest request carries the longest domain");
_Static_assert(SOCKS5_REPLY_MAX == REQUEST_HEADER_SIZE + IPV6_ADDR_SIZE + PORT_SIZE,
	       "largest reply carries IPv6");

int socks5_parse_greeting(const uint8_t *buf, size_t len, struct socks5_greeting *g)
{
	const uint8_t *methods;
	size_t nmethods, size;

	if (len < 1)
		return 0;
	if (buf[0] != SOCKS5_VERSION)
		return -EPROTO;
	if (len < GREETING_HEADER_SIZE)
		return 0;
	nmethods = buf[1];
	if (nmethods == 0)
		return -ENOPROTOOPT;
	size = GREETING_HEADER_SIZE + nmethods;
	if (len < size)
		return 0;

	methods = buf + GREETING_HEADER_SIZE;
	g->no_auth = memchr(methods, SOCKS5_METHOD_NO_AUTH, nmethods) != NULL;
	g->userpass = memchr(methods, SOCKS5_METHOD_USERPASS, nmethods) != NULL;
	return (int)size;
}

/* Copy n bytes that hold no NUL into a C string. */
static void copy_name(char *dst, const uint8_t *src, size_t n)
{
	memcpy(dst, src, n);
	dst[n] = '\0';
}

int socks5_parse_auth(const uint8_t *buf, size_t len, struct socks5_auth *a)
{
	const uint8_t *username, *password;
	size_t ulen, plen, size;

	if (len < 1)
		return 0;
	if (buf[0] != SOCKS5_USERPASS_VERSION)
		return -EPROTO;
	if (len < AUTH_HEADER_SIZE)
		return 0;
	ulen = buf[1];
	if (ulen < MIN_USERNAME_LEN)
		return -EPROTO;
	if (len < AUTH_HEADER_SIZE + ulen + AUTH_PLEN_SIZE)
		return 0;
	username = buf + AUTH_HEADER_SIZE;
	plen = username[ulen];
	password = username + ulen + AUTH_PLEN_SIZE;
	size = AUTH_HEADER_SIZE + ulen + AUTH_PLEN_SIZE + plen;
	if (len < size)
		return 0;
	/* A NUL inside would make the C string differ from what was sent:
	 * "admin\0x" must not authenticate as "admin". */
	if (memchr(username, '\0', ulen) || memchr(password, '\0', plen))
		return -EPROTO;

	a->username_len = ulen;
	copy_name(a->username, username, ulen);
	a->password_len = plen;
	copy_name(a->password, password, plen);
	return (int)size;
}

/* Can byte c appear in a host name or an IPv6 literal, in any spelling the
 * agent might accept? Everything else proves the name bad at once. */
static bool host_byte(uint8_t c)
{
	return grammar_host_byte(c) || c == '.' || c == ':' || c == '[' || c == ']';
}

/* Where an address's parts go (a request's, a UDP header's). */
struct address_out {
	uint8_t *addr_type;
	uint16_t *port;
	uint8_t *addr; /* 16 bytes */
	size_t *domain_len;
	char *domain; /* SOCKS5_NAME_MAX + 1 bytes */
};

/*
 * ATYP | DST.ADDR | DST.PORT at p[0..len) (len >= 1): their size, 0 when
 * len cuts them short, -EAFNOSUPPORT or -EINVAL as socks5_parse_request
 * says (each as soon as the bytes proving it are present). out is written
 * only for a complete address.
 */
static int parse_address(const uint8_t *p, size_t len, const struct address_out *out)
{
	const uint8_t *addr = p + 1;
	uint8_t addr_type = p[0];
	size_t addr_size, size, i;

	switch (addr_type) {
	case SOCKS5_ADDR_IPV4:
		addr_size = IPV4_ADDR_SIZE;
		break;
	case SOCKS5_ADDR_IPV6:
		addr_size = IPV6_ADDR_SIZE;
		break;
	case SOCKS5_ADDR_DOMAIN:
		if (len < ATYP_SIZE + DOMAIN_LEN_SIZE)
			return 0;
		if (addr[0] < MIN_DOMAIN_LEN)
			return -EINVAL;
		addr_size = DOMAIN_LEN_SIZE + addr[0];
		/* The name resolved must be the name that was sent: a NUL would
		 * cut it short (also in log lines), and control bytes, spaces or
		 * escapes have no place in a host name. Checked on the bytes
		 * present so far, so the verdict never waits for the rest. */
		for (i = DOMAIN_LEN_SIZE; i < addr_size && ATYP_SIZE + i < len; i++)
			if (!host_byte(addr[i]))
				return -EINVAL;
		break;
	default:
		return -EAFNOSUPPORT;
	}
	size = ATYP_SIZE + addr_size + PORT_SIZE;
	if (len < size)
		return 0;

	*out->addr_type = addr_type;
	*out->port = get_be16(addr + addr_size);
	memset(out->addr, 0, IPV6_ADDR_SIZE);
	if (addr_type == SOCKS5_ADDR_DOMAIN) {
		*out->domain_len = addr_size - DOMAIN_LEN_SIZE;
		copy_name(out->domain, addr + DOMAIN_LEN_SIZE, *out->domain_len);
	} else {
		memcpy(out->addr, addr, addr_size);
		*out->domain_len = 0;
		out->domain[0] = '\0';
	}
	return (int)size;
}

int socks5_parse_request(const uint8_t *buf, size_t len, struct socks5_request *r)
{
	const struct address_out out = { &r->addr_type, &r->port, r->addr, &r->domain_len,
					 r->domain };
	int ret;

	if (len < 1)
		return 0;
	if (buf[0] != SOCKS5_VERSION)
		return -EPROTO;
	if (len < REQUEST_HEADER_SIZE)
		return 0;
	ret = parse_address(buf + REQUEST_ATYP_OFFSET, len - REQUEST_ATYP_OFFSET, &out);
	if (ret <= 0)
		return ret;
	r->command = buf[REQUEST_CMD_OFFSET];
	return REQUEST_ATYP_OFFSET + ret;
}

int socks5_parse_udp_header(const uint8_t *buf, size_t len, struct socks5_udp_header *h)
{
	const struct address_out out = { &h->addr_type, &h->port, h->addr, &h->domain_len,
					 h->domain };
	int ret;

	/* a datagram is whole: a header it cuts short is malformed */
	if (len <= UDP_ATYP_OFFSET)
		return -EBADMSG;
	ret = parse_address(buf + UDP_ATYP_OFFSET, len - UDP_ATYP_OFFSET, &out);
	if (ret == 0)
		return -EBADMSG;
	if (ret < 0)
		return ret;
	h->frag = buf[UDP_FRAG_OFFSET];
	return UDP_ATYP_OFFSET + ret;
}

size_t socks5_encode_udp_header(uint8_t *out, const struct sockaddr *from)
{
	/* the reply's REP byte position is RSV's second byte and CMD's FRAG's:
	 * the same layout as a reply, with RSV RSV FRAG=0 in front */
	size_t n = socks5_encode_reply(out, 0, from);

	out[0] = 0; /* RSV */
	out[1] = 0; /* RSV */
	out[2] = 0; /* FRAG */
	return n;
}

size_t socks5_encode_method(uint8_t out[2], uint8_t method)
{
	out[0] = SOCKS5_VERSION;
	out[1] = method;
	return METHOD_REPLY_SIZE;
}

size_t socks5_encode_auth_status(uint8_t out[2], bool ok)
{
	out[0] = SOCKS5_USERPASS_VERSION;
	out[1] = ok ? SOCKS5_AUTH_SUCCESS : SOCKS5_AUTH_FAILURE;
	return AUTH_STATUS_SIZE;
}

size_t socks5_encode_reply(uint8_t *out, uint8_t rep, const struct sockaddr *bound)
{
	uint8_t *addr = out + REQUEST_HEADER_SIZE;
	int family = bound ? bound->sa_family : AF_UNSPEC;

	out[0] = SOCKS5_VERSION;
	out[1] = rep;
	out[2] = 0; /* RSV */
	/* sin_addr, sin6_addr and the ports are already in network order. */
	if (family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)bound;

		out[3] = SOCKS5_ADDR_IPV6;
		memcpy(addr, &sin6->sin6_addr, IPV6_ADDR_SIZE);
		memcpy(addr + IPV6_ADDR_SIZE, &sin6->sin6_port, PORT_SIZE);
		return REQUEST_HEADER_SIZE + IPV6_ADDR_SIZE + PORT_SIZE;
	}
	out[3] = SOCKS5_ADDR_IPV4;
	if (family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)bound;

		memcpy(addr, &sin->sin_addr, IPV4_ADDR_SIZE);
		memcpy(addr + IPV4_ADDR_SIZE, &sin->sin_port, PORT_SIZE);
	} else {
		memset(addr, 0, IPV4_ADDR_SIZE + PORT_SIZE);
	}
	return REQUEST_HEADER_SIZE + IPV4_ADDR_SIZE + PORT_SIZE;
}

uint8_t socks5_reply_for_request_error(int err)
{
	switch (err) {
	case -EAFNOSUPPORT:
		return SOCKS5_REP_ADDRESS_TYPE_NOT_SUPPORTED;
	case -EINVAL:
		return SOCKS5_REP_HOST_UNREACHABLE;
	default:
		return SOCKS5_REP_GENERAL_FAILURE;
	}
}

uint8_t socks5_reply_for_open_reason(uint8_t reason)
{
	switch (reason) {
	case FRAME_OPEN_NOT_ALLOWED:
		return SOCKS5_REP_NOT_ALLOWED;
	case FRAME_OPEN_NET_UNREACHABLE:
		return SOCKS5_REP_NETWORK_UNREACHABLE;
	case FRAME_OPEN_HOST_UNREACHABLE:
	case FRAME_OPEN_DNS_FAILED:
		return SOCKS5_REP_HOST_UNREACHABLE;
	case FRAME_OPEN_REFUSED:
		return SOCKS5_REP_CONNECTION_REFUSED;
	case FRAME_OPEN_TIMEOUT:
		return SOCKS5_REP_TTL_EXPIRED;
	case FRAME_OPEN_ADDR_UNSUPPORTED:
		return SOCKS5_REP_ADDRESS_TYPE_NOT_SUPPORTED;
	default:
		return SOCKS5_REP_GENERAL_FAILURE;
	}
}

static const char *const reply_names[] = {
	[SOCKS5_REP_SUCCEEDED] = "succeeded",
	[SOCKS5_REP_GENERAL_FAILURE] = "general SOCKS server failure",
	[SOCKS5_REP_NOT_ALLOWED] = "connection not allowed by ruleset",
	[SOCKS5_REP_NETWORK_UNREACHABLE] = "network unreachable",
	[SOCKS5_REP_HOST_UNREACHABLE] = "host unreachable",
	[SOCKS5_REP_CONNECTION_REFUSED] = "connection refused",
	[SOCKS5_REP_TTL_EXPIRED] = "TTL expired",
	[SOCKS5_REP_COMMAND_NOT_SUPPORTED] = "command not supported",
	[SOCKS5_REP_ADDRESS_TYPE_NOT_SUPPORTED] = "address type not supported",
};

const char *socks5_reply_name(uint8_t rep)
{
	if (rep >= ARRAY_SIZE(reply_names))
		return "unassigned";
	return reply_names[rep];
}
