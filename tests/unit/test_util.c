/* Unit tests: common.h helpers and the bounded buffer. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "anyproxy/buf.h"
#include "anyproxy/common.h"
#include "anyproxy/idhash.h"
#include "anyproxy/net.h"

static void test_secret_equal(void **state)
{
	assert_true(secret_equal("secret", 6, "secret", 6));
	assert_false(secret_equal("secreT", 6, "secret", 6));
	assert_false(secret_equal("secret", 6, "secre", 5));
	assert_false(secret_equal("secre", 5, "secret", 6));
	assert_false(secret_equal("", 0, "x", 1));
	assert_true(secret_equal("", 0, "", 0));
	assert_false(secret_equal("x", 1, "", 0));
}

static void test_be_roundtrip(void **state)
{
	uint8_t b[8];

	put_be16(b, 0xabcd);
	assert_int_equal(get_be16(b), 0xabcd);
	assert_int_equal(b[0], 0xab);
	put_be32(b, 0x01020304);
	assert_int_equal(get_be32(b), 0x01020304);
	assert_int_equal(b[3], 0x04);
	put_be64(b, 0x1122334455667788ULL);
	assert_true(get_be64(b) == 0x1122334455667788ULL);
}

static void test_buf_bounded(void **state)
{
	struct buf b;
	uint8_t chunk[1000];

	memset(chunk, 'a', sizeof(chunk));
	buf_init(&b, 4096);
	assert_int_equal(buf_used(&b), 0);
	assert_null(b.data); /* nothing allocated while empty */
	for (int i = 0; i < 4; i++)
		assert_int_equal(buf_append(&b, chunk, sizeof(chunk)), 0);
	assert_int_equal(buf_used(&b), 4000);
	assert_int_equal(buf_append(&b, chunk, sizeof(chunk)), -ENOBUFS);
	assert_int_equal(buf_used(&b), 4000); /* failed append adds nothing */
	buf_consume(&b, 3500);
	/* consuming makes room again: compaction, not growth */
	assert_int_equal(buf_append(&b, chunk, sizeof(chunk)), 0);
	assert_int_equal(buf_used(&b), 1500);
	assert_true(b.cap <= 4096);
	assert_int_equal(buf_head(&b)[0], 'a');
	buf_consume(&b, 1500);
	assert_int_equal(buf_used(&b), 0);
	buf_release(&b);
	assert_null(b.data);
}

static void test_buf_reserve(void **state)
{
	struct buf b;

	buf_init(&b, 1 << 20);
	assert_true(buf_reserve(&b, 10) >= 10);
	assert_true(buf_reserve(&b, 100000) >= 100000);
	assert_int_equal(buf_reserve(&b, (1 << 20) + 1), -ENOBUFS);
	buf_release(&b);
}

/* Pre-authentication buffers hold exactly their bytes (no 4 KiB page each),
 * keep the data across growth and a consumed head, and stay bounded. */
static void test_buf_append_exact(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 16);
	assert_int_equal(buf_append_exact(&b, "\x16\x03\x01\x02\x00", 5), 0);
	assert_int_equal(b.cap, 5);
	assert_int_equal(buf_append_exact(&b, "abc", 3), 0);
	assert_int_equal(b.cap, 8);
	buf_consume(&b, 6);
	assert_int_equal(buf_append_exact(&b, "defg", 4), 0);
	assert_int_equal(b.cap, 6); /* the consumed head was dropped, not kept */
	assert_memory_equal(buf_head(&b), "bcdefg", 6);
	assert_int_equal(buf_append_exact(&b, "0123456789a", 11), -ENOBUFS);
	assert_int_equal(buf_used(&b), 6); /* a failed append adds nothing */
	buf_release(&b);
}

/* net_source_key: IPv4 and IPv4-mapped IPv6 give the same key, an IPv6
 * address counts by its /64, and no IPv6 key equals an IPv4 one. */
static void key_of(const char *text, uint8_t key[NET_SOURCE_KEY_BYTES])
{
	struct sockaddr_storage ss;
	socklen_t len;

	assert_int_equal(net_parse_numeric(text, 80, &ss, &len), 0);
	assert_int_equal(net_source_key((struct sockaddr *)&ss, key), 0);
}

static void test_source_key(void **state)
{
	uint8_t a[NET_SOURCE_KEY_BYTES], b[NET_SOURCE_KEY_BYTES];
	struct sockaddr_un un = { .sun_family = AF_UNIX };

	key_of("192.0.2.7", a);
	key_of("::ffff:192.0.2.7", b);
	assert_memory_equal(a, b, sizeof(a));
	key_of("192.0.2.8", b);
	assert_memory_not_equal(a, b, sizeof(a));
	key_of("2001:db8:1:2::1", a);
	key_of("2001:db8:1:2:ffff:ffff:ffff:ffff", b);
	assert_memory_equal(a, b, sizeof(a));
	key_of("2001:db8:1:3::1", b);
	assert_memory_not_equal(a, b, sizeof(a));
	/* ::c000:207 has the IPv4 key's bytes in its last 32 bits, 0.0.0.0 its
	 * zero first 64: neither may meet an IPv4 key */
	key_of("::", a);
	key_of("0.0.0.0", b);
	assert_memory_not_equal(a, b, sizeof(a));
	assert_int_equal(net_source_key((struct sockaddr *)&un, a), -EAFNOSUPPORT);
}

struct named {
	char id[8];
	int value;
	UT_hash_handle hh;
};

/* IDHASH_GET: made zeroed on first use, the same entry after; an id that
 * does not fit is refused, never cut. */
static void test_idhash_get(void **state)
{
	struct named *table = NULL, *a, *b, *again, *e, *tmp;

	IDHASH_GET(table, "alpha", a);
	assert_non_null(a);
	assert_string_equal(a->id, "alpha");
	assert_int_equal(a->value, 0);
	a->value = 7;
	IDHASH_GET(table, "", b); /* the default group's id */
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	IDHASH_GET(table, "alpha", again);
	assert_ptr_equal(again, a);
	assert_int_equal(again->value, 7);
	IDHASH_GET(table, "1234567", e); /* 7 bytes + NUL: fits */
	assert_non_null(e);
	IDHASH_GET(table, "12345678", e); /* 8 bytes: does not */
	assert_null(e);
	assert_int_equal(HASH_COUNT(table), 3);
	HASH_ITER (hh, table, e, tmp) {
		HASH_DEL(table, e);
		free(e);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secret_equal),     cmocka_unit_test(test_be_roundtrip),
		cmocka_unit_test(test_buf_bounded),      cmocka_unit_test(test_buf_reserve),
		cmocka_unit_test(test_buf_append_exact), cmocka_unit_test(test_source_key),
		cmocka_unit_test(test_idhash_get),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
