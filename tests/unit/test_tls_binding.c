/* Unit tests: matching HELLO's group and client id against the binding URI
 * SANs kept from an agent certificate (tls_peer_binding, tls.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "anyproxy/tls.h"

/* A verified peer whose certificate carried the NUL-separated URIs. */
static struct tls_conn peer(const char *uris, size_t len)
{
	struct tls_conn c;

	memset(&c, 0, sizeof(c));
	c.peer_cert_verified = true;
	c.peer_bindings = len ? (char *)uris : NULL;
	c.peer_bindings_len = len;
	return c;
}

#define URIS(s) peer(s, sizeof(s) - 1)

static void test_no_certificate(void **state)
{
	struct tls_conn c;

	memset(&c, 0, sizeof(c));
	assert_int_equal(tls_peer_binding(&c, "g", "c"), -ENOKEY);
}

static void test_unbound_certificate(void **state)
{
	struct tls_conn c = peer(NULL, 0);

	assert_int_equal(tls_peer_binding(&c, "production", "anything"), 0);
	assert_int_equal(tls_peer_binding(&c, "", "x"), 0);
}

static void test_exact_pairs_only(void **state)
{
	struct tls_conn c = URIS("anyproxy://agent/production/prod-client-001\0"
				 "anyproxy://agent//edge-1\0"
				 "ANYPROXY://Agent/eu.west:2/a.b_c-d:e\0");

	assert_int_equal(tls_peer_binding(&c, "production", "prod-client-001"), 1);
	assert_int_equal(tls_peer_binding(&c, "", "edge-1"), 1);
	/* scheme and host fold case, ids do not */
	assert_int_equal(tls_peer_binding(&c, "eu.west:2", "a.b_c-d:e"), 1);
	assert_int_equal(tls_peer_binding(&c, "Production", "prod-client-001"), -EACCES);
	assert_int_equal(tls_peer_binding(&c, "production", "prod-client-002"), -EACCES);
	assert_int_equal(tls_peer_binding(&c, "production", "prod-client-00"), -EACCES);
	assert_int_equal(tls_peer_binding(&c, "production", "prod-client-0011"), -EACCES);
	assert_int_equal(tls_peer_binding(&c, "", "prod-client-001"), -EACCES);
	assert_int_equal(tls_peer_binding(&c, "edge-1", ""), -EACCES);
	assert_int_equal(tls_peer_binding(&c, "production/prod-client-001", ""), -EACCES);
	/* the caller's ids never hold '/' (HELLO validation), so the split of
	 * a URI that does is not this function's to judge: lengths decide */
	c = URIS("anyproxy://agent/a/b/c\0");
	assert_int_equal(tls_peer_binding(&c, "a", "b/c"), 1);
	assert_int_equal(tls_peer_binding(&c, "a/b", "c"), 1);
	assert_int_equal(tls_peer_binding(&c, "a", "b"), -EACCES);
}

/* Any other "anyproxy:" URI binds the certificate to nothing. */
static void test_malformed_binding_matches_nothing(void **state)
{
	struct tls_conn c = URIS("anyproxy://agnt/production/prod-1\0");

	assert_int_equal(tls_peer_binding(&c, "production", "prod-1"), -EACCES);
	c = URIS("anyproxy://agent/production\0");
	assert_int_equal(tls_peer_binding(&c, "production", ""), -EACCES);
	assert_int_equal(tls_peer_binding(&c, "", "production"), -EACCES);
	c = URIS("anyproxy://agent/production/prod%2D1\0");
	assert_int_equal(tls_peer_binding(&c, "production", "prod-1"), -EACCES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_certificate),
		cmocka_unit_test(test_unbound_certificate),
		cmocka_unit_test(test_exact_pairs_only),
		cmocka_unit_test(test_malformed_binding_matches_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
