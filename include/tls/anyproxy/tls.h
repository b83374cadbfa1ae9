/*
 * tls.h — wolfSSL over memory buffers. wolfSSL never touches a socket: the
 * ring receives ciphertext into tls_conn.in and sends what wolfSSL leaves
 * in tls_conn.out. TLS 1.3 only between our own programs (tunnels), X25519
 * key share; TLS 1.2 and 1.3 where users' clients connect (the HTTPS proxy,
 * tls_ctx_server_users).
 */
#ifndef ANYPROXY_TLS_H
#define ANYPROXY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "anyproxy/buf.h"

struct WOLFSSL_CTX;
struct WOLFSSL;

/* Ciphertext received but not yet taken by wolfSSL: one receive (see
 * TUNNEL_RECV_CHUNK) plus what a partial record may leave behind. */
#define TLS_IN_MAX (512 * 1024)
/* Ciphertext waiting for the socket. A safety net only: streams stop at
 * TUNNEL_OUT_BUDGET and everything else is a few small control frames. */
#define TLS_OUT_MAX (4 * 1024 * 1024)
/* Record layer (RFC 8446 5.1): a 5-byte header (type, version, length),
 * then at most 2^14 bytes of a plaintext record such as a ClientHello. */
#define TLS_RECORD_HEADER_BYTES 5
#define TLS_RECORD_HANDSHAKE 22
#define TLS_PLAINTEXT_MAX_BYTES 16384

struct tls_conn {
	struct WOLFSSL *ssl;
	struct WOLFSSL_CTX *ctx; /* referenced between prepare and start only */
	struct buf in;           /* received ciphertext not yet consumed by wolfSSL */
	struct buf out;          /* ciphertext produced by wolfSSL, not yet handed to a send */
	bool handshake_done;
	bool peer_closed; /* close_notify or EOF seen */
	/* server side with a client CA: set while verifying the peer's
	 * certificate (see tls_peer_binding()) */
	bool peer_cert_verified;
	char *peer_bindings; /* its binding URIs, each NUL-terminated; NULL: none */
	size_t peer_bindings_len;
	/* why the peer's certificate was refused after its chain verified
	 * (the handshake's error then says this); NULL: it was not */
	const char *peer_cert_problem;
};

/*
 * Binding an agent certificate to groups and client ids (docs/operations.md
 * "Binding agent certificates"): every URI SAN of the scheme "anyproxy" is a
 * binding, and a certificate with at least one joins only as one of them.
 * The one form that matches is TLS_BINDING_PREFIX GROUP "/" CLIENT, e.g.
 * anyproxy://agent/production/prod-client-001, or anyproxy://agent//edge-1
 * for the default group; ids never contain '/', so the split is unambiguous.
 * Ids compare byte for byte (no case folding, no percent-decoding), so any
 * other "anyproxy:" URI is a binding that matches nothing; one that holds a
 * NUL byte refuses the certificate.
 */
#define TLS_BINDING_SCHEME "anyproxy:"
#define TLS_BINDING_PREFIX "anyproxy://agent/"

int tls_global_init(void);
void tls_global_exit(void);
/* "wolfSSL 5.5.4 (AES-NI)", or "... (AES-NI, AES-GCM on VAES-512)" where
 * the tunnel's records go to aesgcm.h */
const char *tls_library_version(void);

/* Gateway side: certificate chain + key; client_ca (may be NULL) turns on
 * mutual TLS (and keeps each peer certificate's bindings; session tickets
 * are off then, so every handshake presents a certificate). Returns NULL
 * with err set. */
struct WOLFSSL_CTX *tls_ctx_server(const char *cert, const char *key, const char *client_ca,
				   char *err, size_t errlen);
/* Users' side ([proxy.https]): TLS 1.3 or 1.2 (browsers, curl, language
 * runtimes), no client certificates, session resumption as the library
 * offers it. Returns NULL with err set. */
struct WOLFSSL_CTX *tls_ctx_server_users(const char *cert, const char *key, char *err,
					 size_t errlen);
/* Agent side: peers are verified against ca (a CA bundle or the gateway's
 * self-signed certificate); cert/key (both or neither) for mutual TLS. */
struct WOLFSSL_CTX *tls_ctx_client(const char *ca, const char *cert, const char *key, char *err,
				   size_t errlen);
void tls_ctx_free(struct WOLFSSL_CTX *ctx);

/* server_name: client side only — sent as SNI (unless an IP literal) and
 * checked against the certificate (DNS or IP SAN). 0 or -ENOMEM/-EINVAL.
 * Same as tls_conn_prepare() then tls_conn_start(). */
int tls_conn_init(struct tls_conn *c, struct WOLFSSL_CTX *ctx, bool server,
		  const char *server_name);

/* In two steps, for a server that must not pay for a wolfSSL session (about
 * 40 KiB with this build's static record buffers) before the peer has sent
 * a whole first record. prepare() holds a reference to ctx (a reload may
 * replace it meanwhile) but no session: 0 or -ENOMEM, and tls_conn_free()
 * undoes it either way. The caller appends received ciphertext to c->in
 * until tls_first_record_in(); start() then creates the session, which
 * reads what c->in holds (0 or -ENOMEM/-EINVAL as tls_conn_init). */
int tls_conn_prepare(struct tls_conn *c, struct WOLFSSL_CTX *ctx);
int tls_conn_start(struct tls_conn *c, bool server, const char *server_name);
/* c->in holds the first record whole, or enough of it to see that it is no
 * TLS handshake record (starting the session then reports the error). */
bool tls_first_record_in(const struct tls_conn *c);
/* Server side, after start: the one ALPN protocol this connection speaks
 * (e.g. "http/1.1"). A client offering it gets it; a client offering only
 * others (h2) gets no ALPN at all rather than a failed handshake, and a
 * client offering none is unaffected. 0 or -ENOMEM/-EINVAL. */
int tls_conn_set_alpn(struct tls_conn *c, const char *protocol);
/* The ALPN protocol agreed in the handshake, or "" when none was. */
const char *tls_conn_alpn(const struct tls_conn *c);
void tls_conn_free(struct tls_conn *c);

/* Advance the handshake with what is in c->in. 1 done, 0 needs more
 * input (and maybe output was produced), -EPROTO failure (err says why in
 * words an operator can act on). */
int tls_handshake(struct tls_conn *c, char *err, size_t errlen);

/* Decrypt into buf. >0 bytes, 0 needs more input, -EPIPE peer closed
 * cleanly, -EPROTO on a TLS error (err set). */
int tls_read(struct tls_conn *c, void *buf, size_t len, char *err, size_t errlen);

/* Decrypted bytes of the current record not yet read: a tls_read of up to
 * this many returns them all without needing more input. */
size_t tls_pending(struct tls_conn *c);

/* Encrypt all of buf into c->out. Returns len, or -ENOBUFS if out is over
 * its bound (nothing is lost: the caller retries after sending), -EPROTO. */
int tls_write(struct tls_conn *c, const void *buf, size_t len);

/* Queue a close_notify alert into out. */
void tls_shutdown(struct tls_conn *c);

/* May the peer certificate register as client in group? 1: it is bound
 * to exactly that pair; 0: it carries no binding; -EACCES: it is bound to
 * other pairs only; -ENOKEY: no certificate was verified in this handshake
 * (none was asked for, or the library cannot tell: see tls.c). */
int tls_peer_binding(const struct tls_conn *c, const char *group, const char *client);

const char *tls_conn_version(const struct tls_conn *c);
const char *tls_conn_cipher(const struct tls_conn *c);

#endif
