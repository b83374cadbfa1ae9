/* tls.c — wolfSSL over memory I/O callbacks (see tls.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <stdlib.h>
#include <strings.h>
#include <sys/types.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
/* wolfcrypt's asn.h brings its own MIN/MAX; ours (common.h) are the ones used */
#undef MIN
#undef MAX

#include "ap-build.h"
#include "anyproxy/common.h"
#include "anyproxy/tls.h"

#if AP_AESGCM_WIDE
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/cryptocb.h>

#include "anyproxy/aesgcm.h"

/* The crypto device every context names: wolfSSL offers it each AES-GCM
 * record (and each other operation, which it declines). */
#define GCM_DEVICE 0x41504743 /* "APGC" */
static bool gcm_device_on;
static bool tls_initialised; /* tls_global_init ran: gcm_device_on says it all */

/* The key schedule aesgcm.c takes for a record of sz bytes, or NULL when
 * wolfSSL's own code is the better (or the only) choice. */
static const uint8_t *gcm_schedule(const Aes *aes, word32 sz, word32 iv_sz, word32 tag_sz)
{
	if (sz < AESGCM_WIDE_MIN || iv_sz != AESGCM_IV_BYTES || tag_sz != AESGCM_TAG_BYTES ||
	    !aes->use_aesni || (aes->rounds != 10 && aes->rounds != 12 && aes->rounds != 14))
		return NULL;
	return (const uint8_t *)aes->key;
}

static int gcm_device(int dev_id, wc_CryptoInfo *info, void *ctx)
{
	const uint8_t *ks;

	if (info->algo_type != WC_ALGO_TYPE_CIPHER || info->cipher.type != WC_CIPHER_AES_GCM)
		return CRYPTOCB_UNAVAILABLE;
	if (info->cipher.enc) {
		const __typeof__(info->cipher.aesgcm_enc) *e = &info->cipher.aesgcm_enc;

		ks = gcm_schedule(e->aes, e->sz, e->ivSz, e->authTagSz);
		if (!ks)
			return CRYPTOCB_UNAVAILABLE;
		aesgcm_wide_seal(ks, e->aes->rounds, e->iv, e->authIn, e->authInSz, e->in, e->out,
				 e->sz, e->authTag);
		return 0;
	}
	const __typeof__(info->cipher.aesgcm_dec) *d = &info->cipher.aesgcm_dec;

	ks = gcm_schedule(d->aes, d->sz, d->ivSz, d->authTagSz);
	if (!ks)
		return CRYPTOCB_UNAVAILABLE;
	return aesgcm_wide_open(ks, d->aes->rounds, d->iv, d->authIn, d->authInSz, d->in, d->out,
				d->sz, d->authTag) < 0
		       ? AES_GCM_AUTH_E
		       : 0;
}
#endif

static int io_recv(WOLFSSL *ssl, char *dst, int sz, void *ctx)
{
	struct tls_conn *c = ctx;
	size_t n = buf_used(&c->in);

	if (n == 0)
		return c->peer_closed ? WOLFSSL_CBIO_ERR_CONN_CLOSE : WOLFSSL_CBIO_ERR_WANT_READ;
	if (n > (size_t)sz)
		n = (size_t)sz;
	memcpy(dst, buf_head(&c->in), n);
	buf_consume(&c->in, n);
	return (int)n;
}

static int io_send(WOLFSSL *ssl, char *src, int sz, void *ctx)
{
	struct tls_conn *c = ctx;

	if (buf_append(&c->out, src, (size_t)sz) < 0)
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	return sz;
}

int tls_global_init(void)
{
	if (wolfSSL_Init() != WOLFSSL_SUCCESS)
		return -EPROTO;
#if AP_AESGCM_WIDE
	gcm_device_on = aesgcm_wide_available() &&
			wc_CryptoCb_RegisterDevice(GCM_DEVICE, gcm_device, NULL) == 0;
	tls_initialised = true;
#endif
	return 0;
}

void tls_global_exit(void)
{
#if AP_AESGCM_WIDE
	if (gcm_device_on)
		wc_CryptoCb_UnRegisterDevice(GCM_DEVICE);
	gcm_device_on = false;
	tls_initialised = false;
#endif
	wolfSSL_Cleanup();
}

const char *tls_library_version(void)
{
#if AP_AESGCM_WIDE
	/* once initialised, what is in use; before (--version), what would be */
	if (tls_initialised ? gcm_device_on : aesgcm_wide_available())
		return "wolfSSL " LIBWOLFSSL_VERSION_STRING " (AES-NI, AES-GCM on VAES-512)";
#endif
	return "wolfSSL " LIBWOLFSSL_VERSION_STRING
#if AP_WOLFSSL_AESNI
	       " (AES-NI)";
#else
	       " (no AES-NI)";
#endif
}

static void set_err(char *err, size_t errlen, const char *what, const char *path, int code)
{
	char msg[WOLFSSL_MAX_ERROR_SZ];

	wolfSSL_ERR_error_string_n((unsigned long)code, msg, sizeof(msg));
	snprintf(err, errlen, "%s %s: %s", what, path, msg);
}

static WOLFSSL_CTX *ctx_with_method(WOLFSSL_METHOD *method)
{
	WOLFSSL_CTX *ctx = method ? wolfSSL_CTX_new(method) : NULL;

	if (!ctx)
		return NULL;
	wolfSSL_CTX_SetIORecv(ctx, io_recv);
	wolfSSL_CTX_SetIOSend(ctx, io_send);
#if AP_AESGCM_WIDE
	if (gcm_device_on)
		wolfSSL_CTX_SetDevId(ctx, GCM_DEVICE);
#endif
	return ctx;
}

static WOLFSSL_CTX *ctx_new(bool server)
{
	return ctx_with_method(server ? wolfTLSv1_3_server_method() : wolfTLSv1_3_client_method());
}

/* The certificate chain and its key into ctx. 0, or -EINVAL with err set. */
static int load_identity(WOLFSSL_CTX *ctx, const char *cert, const char *key, char *err,
			 size_t errlen)
{
	int ret = wolfSSL_CTX_use_certificate_chain_file(ctx, cert);

	if (ret != WOLFSSL_SUCCESS) {
		set_err(err, errlen, "cannot load certificate", cert, ret);
		return -EINVAL;
	}
	ret = wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM);
	if (ret != WOLFSSL_SUCCESS) {
		set_err(err, errlen, "cannot load private key", key, ret);
		return -EINVAL;
	}
	if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "private key %s does not match certificate %s", key, cert);
		return -EINVAL;
	}
	return 0;
}

/* ---- agent certificate bindings ---- */

/* The "anyproxy:" URI SANs of cert, each NUL-terminated, copied into out
 * unless out is NULL. Returns the bytes they take, or -EINVAL when one
 * holds a NUL byte: kept as a string it would read as two bindings, the
 * second one never vetted by whoever signed the first. */
static ssize_t collect_bindings(const struct DecodedCert *cert, char *out)
{
	const size_t scheme_len = strlen(TLS_BINDING_SCHEME);
	const DNS_entry *e;
	size_t used = 0;

	for (e = cert->altNames; e; e = e->next) {
		if (e->type != ASN_URI_TYPE || e->len < 0 || (size_t)e->len < scheme_len ||
		    strncasecmp(e->name, TLS_BINDING_SCHEME, scheme_len) != 0)
			continue;
		if (memchr(e->name, '\0', (size_t)e->len))
			return -EINVAL;
		if (out) {
			memcpy(out + used, e->name, (size_t)e->len);
			out[used + (size_t)e->len] = '\0';
		}
		used += (size_t)e->len + 1;
	}
	return (ssize_t)used;
}

/* Replace c's bindings with those of the DER certificate. 0, or the
 * reason it cannot be admitted (c->peer_cert_problem). */
static int keep_bindings(struct tls_conn *c, const unsigned char *der, unsigned len)
{
	struct DecodedCert cert;
	ssize_t need;
	int ret = 0;

	free(c->peer_bindings);
	c->peer_bindings = NULL;
	c->peer_bindings_len = 0;
	wc_InitDecodedCert(&cert, der, len, NULL);
	if (wc_ParseCert(&cert, CERT_TYPE, NO_VERIFY, NULL) != 0) {
		c->peer_cert_problem = "the client certificate cannot be parsed";
		ret = -EINVAL;
	} else if ((need = collect_bindings(&cert, NULL)) < 0) {
		c->peer_cert_problem =
			"the client certificate has an anyproxy: URI with a NUL byte";
		ret = -EINVAL;
	} else if (need > 0) {
		c->peer_bindings = malloc((size_t)need);
		if (c->peer_bindings) {
			collect_bindings(&cert, c->peer_bindings);
			c->peer_bindings_len = (size_t)need;
		} else {
			c->peer_cert_problem =
				"out of memory for the client certificate's bindings";
			ret = -ENOMEM;
		}
	}
	wc_FreeDecodedCert(&cert);
	return ret;
}

/*
 * wolfSSL calls this after it verified the peer's certificate chain (built
 * with WOLFSSL_ALWAYS_VERIFY_CB it also calls it when the chain passed;
 * tools/setup.sh builds it so). Depth 0 is the peer's own certificate,
 * certs[0] its DER. Failing here fails the handshake: a certificate whose
 * bindings cannot be kept is refused, never admitted unbound.
 */
static int verify_peer(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
	struct tls_conn *c = store->userCtx;

	if (!preverify || !c || store->error_depth != 0)
		return preverify;
	if (store->totalCerts < 1 || !store->certs ||
	    keep_bindings(c, store->certs[0].buffer, store->certs[0].length) < 0)
		return 0;
	c->peer_cert_verified = true;
	return 1;
}

int tls_peer_binding(const struct tls_conn *c, const char *group, const char *client)
{
	const size_t prefix_len = strlen(TLS_BINDING_PREFIX);
	const size_t group_len = strlen(group), client_len = strlen(client);
	size_t off;

	if (!c->peer_cert_verified)
		return -ENOKEY;
	if (!c->peer_bindings)
		return 0;
	for (off = 0; off < c->peer_bindings_len; off += strlen(c->peer_bindings + off) + 1) {
		const char *uri = c->peer_bindings + off;

		if (strlen(uri) == prefix_len + group_len + 1 + client_len &&
		    strncasecmp(uri, TLS_BINDING_PREFIX, prefix_len) == 0 &&
		    memcmp(uri + prefix_len, group, group_len) == 0 &&
		    uri[prefix_len + group_len] == '/' &&
		    memcmp(uri + prefix_len + group_len + 1, client, client_len) == 0)
			return 1;
	}
	return -EACCES;
}

struct WOLFSSL_CTX *tls_ctx_server(const char *cert, const char *key, const char *client_ca,
				   char *err, size_t errlen)
{
	WOLFSSL_CTX *ctx = ctx_new(true);
	int ret;

	if (!ctx) {
		snprintf(err, errlen, "cannot create TLS context");
		return NULL;
	}
	if (load_identity(ctx, cert, key, err, errlen) < 0)
		goto fail;
	if (client_ca && *client_ca) {
		ret = wolfSSL_CTX_load_verify_locations(ctx, client_ca, NULL);
		if (ret != WOLFSSL_SUCCESS) {
			set_err(err, errlen, "cannot load client CA", client_ca, ret);
			goto fail;
		}
#ifndef WOLFSSL_ALWAYS_VERIFY_CB
		/* without it wolfSSL never shows us a certificate that passed, so
		 * bindings could not be enforced: refuse rather than ignore them */
		snprintf(err, errlen,
			 "client_ca: this wolfSSL build cannot report client "
			 "certificates (it lacks WOLFSSL_ALWAYS_VERIFY_CB); build with "
			 "tools/setup.sh");
		goto fail;
#endif
		wolfSSL_CTX_set_verify(ctx,
				       WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT,
				       verify_peer);
		/* a resumed session presents no certificate: full handshakes only */
		if (wolfSSL_CTX_no_ticket_TLSv13(ctx) != 0) {
			snprintf(err, errlen, "cannot turn off TLS session tickets");
			goto fail;
		}
	} else {
		wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
	}
	return ctx;
fail:
	wolfSSL_CTX_free(ctx);
	return NULL;
}

struct WOLFSSL_CTX *tls_ctx_server_users(const char *cert, const char *key, char *err,
					 size_t errlen)
{
	/* the flexible method negotiates the highest version both support;
	 * the floor keeps it at 1.2 (this build has nothing older anyway) */
	WOLFSSL_CTX *ctx = ctx_with_method(wolfSSLv23_server_method());

	if (!ctx) {
		snprintf(err, errlen, "cannot create TLS context");
		return NULL;
	}
	if (wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
		snprintf(err, errlen, "cannot set the lowest TLS version to 1.2");
		goto fail;
	}
	if (load_identity(ctx, cert, key, err, errlen) < 0)
		goto fail;
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
	return ctx;
fail:
	wolfSSL_CTX_free(ctx);
	return NULL;
}

struct WOLFSSL_CTX *tls_ctx_client(const char *ca, const char *cert, const char *key, char *err,
				   size_t errlen)
{
	WOLFSSL_CTX *ctx = ctx_new(false);
	int ret;

	if (!ctx) {
		snprintf(err, errlen, "cannot create TLS context");
		return NULL;
	}
	ret = wolfSSL_CTX_load_verify_locations(ctx, ca, NULL);
	if (ret != WOLFSSL_SUCCESS) {
		set_err(err, errlen, "cannot load gateway CA/certificate", ca, ret);
		goto fail;
	}
	/* wolfSSL's OpenSSL-compatible default is "no verification": never. */
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
	if (cert && *cert) {
		ret = wolfSSL_CTX_use_certificate_chain_file(ctx, cert);
		if (ret != WOLFSSL_SUCCESS) {
			set_err(err, errlen, "cannot load client certificate", cert, ret);
			goto fail;
		}
		ret = wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM);
		if (ret != WOLFSSL_SUCCESS) {
			set_err(err, errlen, "cannot load client key", key, ret);
			goto fail;
		}
	}
	return ctx;
fail:
	wolfSSL_CTX_free(ctx);
	return NULL;
}

void tls_ctx_free(struct WOLFSSL_CTX *ctx)
{
	if (ctx)
		wolfSSL_CTX_free(ctx);
}

static bool is_ip_literal(const char *s)
{
	unsigned char tmp[16];

	return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

int tls_conn_prepare(struct tls_conn *c, struct WOLFSSL_CTX *ctx)
{
	memset(c, 0, sizeof(*c));
	buf_init(&c->in, TLS_IN_MAX);
	buf_init(&c->out, TLS_OUT_MAX);
	/* the context may be replaced (reload) before the session exists */
	if (wolfSSL_CTX_up_ref(ctx) != WOLFSSL_SUCCESS)
		return -ENOMEM;
	c->ctx = ctx;
	return 0;
}

bool tls_first_record_in(const struct tls_conn *c)
{
	const uint8_t *h = buf_head(&c->in);
	size_t len;

	if (buf_used(&c->in) < TLS_RECORD_HEADER_BYTES)
		return false;
	/* not a handshake record, or longer than TLS allows: wolfSSL says why */
	len = ((size_t)h[3] << 8) | h[4];
	if (h[0] != TLS_RECORD_HANDSHAKE || len > TLS_PLAINTEXT_MAX_BYTES)
		return true;
	return buf_used(&c->in) >= TLS_RECORD_HEADER_BYTES + len;
}

int tls_conn_init(struct tls_conn *c, struct WOLFSSL_CTX *ctx, bool server, const char *server_name)
{
	int ret = tls_conn_prepare(c, ctx);

	return ret < 0 ? ret : tls_conn_start(c, server, server_name);
}

int tls_conn_start(struct tls_conn *c, bool server, const char *server_name)
{
	c->ssl = wolfSSL_new(c->ctx);
	wolfSSL_CTX_free(c->ctx); /* the session holds its own reference */
	c->ctx = NULL;
	if (!c->ssl)
		return -ENOMEM;
	wolfSSL_SetIOReadCtx(c->ssl, c);
	wolfSSL_SetIOWriteCtx(c->ssl, c);
	if (server) {
		wolfSSL_SetCertCbCtx(c->ssl, c); /* verify_peer() fills c */
		return 0;
	}
	if (wolfSSL_UseKeyShare(c->ssl, WOLFSSL_ECC_X25519) != WOLFSSL_SUCCESS)
		return -EINVAL;
	if (server_name && *server_name) {
		if (!is_ip_literal(server_name) &&
		    wolfSSL_UseSNI(c->ssl, WOLFSSL_SNI_HOST_NAME, server_name,
				   (unsigned short)strlen(server_name)) != WOLFSSL_SUCCESS)
			return -EINVAL;
		/* checked against the DNS names (and IP SANs) of the peer's cert */
		if (wolfSSL_check_domain_name(c->ssl, server_name) != WOLFSSL_SUCCESS)
			return -EINVAL;
	}
	return 0;
}

int tls_conn_set_alpn(struct tls_conn *c, const char *protocol)
{
	char list[WOLFSSL_MAX_ALPN_PROTO_NAME_LEN + 1];
	size_t len = strlen(protocol);
	int ret;

	if (!c->ssl || !len || len >= sizeof(list))
		return -EINVAL;
	memcpy(list, protocol, len + 1); /* wolfSSL takes a writable list */
	ret = wolfSSL_UseALPN(c->ssl, list, (unsigned)len, WOLFSSL_ALPN_CONTINUE_ON_MISMATCH);
	if (ret == MEMORY_E)
		return -ENOMEM;
	return ret == WOLFSSL_SUCCESS ? 0 : -EINVAL;
}

const char *tls_conn_alpn(const struct tls_conn *c)
{
	char *name = NULL;
	unsigned short len = 0;

	/* the name is NUL-terminated inside the session (wolfSSL's TLSX) */
	if (!c->ssl || wolfSSL_ALPN_GetProtocol(c->ssl, &name, &len) != WOLFSSL_SUCCESS || !name)
		return "";
	return name;
}

void tls_conn_free(struct tls_conn *c)
{
	if (c->ssl)
		wolfSSL_free(c->ssl);
	c->ssl = NULL;
	free(c->peer_bindings);
	c->peer_bindings = NULL;
	c->peer_bindings_len = 0;
	if (c->ctx)
		wolfSSL_CTX_free(c->ctx);
	c->ctx = NULL;
	buf_release(&c->in);
	buf_release(&c->out);
}

/* Words for the failures an operator can fix. */
static const char *hint(int code)
{
	switch (code) {
	case DOMAIN_NAME_MISMATCH:
	case IPADDR_MISMATCH:
		return " (the certificate does not name this host: check gateway_server_name)";
	case ASN_NO_SIGNER_E:
	case ASN_SELF_SIGNED_E:
	case ASN_SIG_CONFIRM_E:
		return " (the certificate is not signed by gateway_tls_cert)";
	case ASN_AFTER_DATE_E:
	case ASN_BEFORE_DATE_E:
		return " (the certificate is expired or not yet valid)";
	case VERSION_ERROR:
	case UNKNOWN_RECORD_TYPE:
		return " (the peer does not speak TLS 1.3: is it an anyproxy endpoint?)";
	default:
		return "";
	}
}

static int tls_error(struct tls_conn *c, int ret, char *err, size_t errlen)
{
	int code = wolfSSL_get_error(c->ssl, ret);
	char msg[WOLFSSL_MAX_ERROR_SZ];

	if (code == WOLFSSL_ERROR_WANT_READ || code == WOLFSSL_ERROR_WANT_WRITE)
		return 0;
	/* the peer's end: a close_notify, or the transport's EOF (which
	 * wolfSSL reports either way, depending on where it noticed it) */
	if (code == WOLFSSL_ERROR_ZERO_RETURN ||
	    (c->peer_closed && (code == SOCKET_ERROR_E || code == SOCKET_PEER_CLOSED_E))) {
		if (err)
			snprintf(err, errlen, "connection closed by peer");
		return -EPIPE;
	}
	if (err && c->peer_cert_problem) {
		snprintf(err, errlen, "%s", c->peer_cert_problem);
	} else if (err) {
		wolfSSL_ERR_error_string_n((unsigned long)code, msg, sizeof(msg));
		snprintf(err, errlen, "%s%s", msg, hint(code));
	}
	return -EPROTO;
}

int tls_handshake(struct tls_conn *c, char *err, size_t errlen)
{
	int ret;

	if (c->handshake_done)
		return 1;
	ret = wolfSSL_negotiate(c->ssl);
	if (ret == WOLFSSL_SUCCESS) {
		c->handshake_done = true;
		return 1;
	}
	ret = tls_error(c, ret, err, errlen);
	if (ret == -EPIPE) {
		snprintf(err, errlen, "connection closed during the TLS handshake");
		return -EPROTO;
	}
	return ret;
}

int tls_read(struct tls_conn *c, void *dst, size_t len, char *err, size_t errlen)
{
	int ret = wolfSSL_read(c->ssl, dst, (int)MIN(len, (size_t)0x40000000));

	if (ret > 0)
		return ret;
	return tls_error(c, ret, err, errlen);
}

size_t tls_pending(struct tls_conn *c)
{
	int n = c->ssl ? wolfSSL_pending(c->ssl) : 0;

	return n > 0 ? (size_t)n : 0;
}

int tls_write(struct tls_conn *c, const void *src, size_t len)
{
	int ret = wolfSSL_write(c->ssl, src, (int)len);

	if (ret == (int)len)
		return ret;
	ret = wolfSSL_get_error(c->ssl, ret);
	return ret == WOLFSSL_ERROR_WANT_WRITE ? -ENOBUFS : -EPROTO;
}

void tls_shutdown(struct tls_conn *c)
{
	if (c->ssl && c->handshake_done)
		wolfSSL_shutdown(c->ssl);
}

const char *tls_conn_version(const struct tls_conn *c)
{
	return wolfSSL_get_version(c->ssl);
}

const char *tls_conn_cipher(const struct tls_conn *c)
{
	return wolfSSL_get_cipher_name(c->ssl);
}
