/* Unit tests: AES-GCM on 512-bit vectors (aesgcm.h) against the test
 * cases of the GCM specification (McGrew and Viega, "The Galois/Counter
 * Mode of Operation", appendix B) and against wolfSSL's own AES-GCM on
 * random keys, nonces, additional data and every length that matters. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/cryptocb.h>

#include "anyproxy/aesgcm.h"
#include "anyproxy/tls.h"

#define MAX_LEN (17 * 1024 + 100)

/* wolfSSL with no crypto device: its AES-NI schedule and its own code */
struct ref {
	Aes aes;
};

static void ref_init(struct ref *r, const uint8_t *key, size_t key_len)
{
	assert_int_equal(wc_AesInit(&r->aes, NULL, INVALID_DEVID), 0);
	assert_int_equal(wc_AesGcmSetKey(&r->aes, key, (word32)key_len), 0);
	assert_true(r->aes.use_aesni);
}

static const uint8_t *schedule(const struct ref *r)
{
	return (const uint8_t *)r->aes.key;
}

static size_t unhex(const char *hex, uint8_t *out)
{
	size_t n = 0;

	for (; hex[0] && hex[1]; hex += 2) {
		unsigned v;

		assert_int_equal(sscanf(hex, "%2x", &v), 1);
		out[n++] = (uint8_t)v;
	}
	return n;
}

struct kat {
	const char *key, *iv, *pt, *aad, *ct, *tag;
};

/* appendix B, test cases 1 to 4, 13 to 16 (the 96-bit nonces) */
static const struct kat kats[] = {
	{ "00000000000000000000000000000000", "000000000000000000000000", "", "", "",
	  "58e2fccefa7e3061367f1d57a4e7455a" },
	{ "00000000000000000000000000000000", "000000000000000000000000",
	  "00000000000000000000000000000000", "", "0388dace60b6a392f328c2b971b2fe78",
	  "ab6e47d42cec13bdf53a67b21257bddf" },
	{ "feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
	  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	  "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
	  "",
	  "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
	  "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
	  "4d5c2af327cd64a62cf35abd2ba6fab4" },
	{ "feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
	  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	  "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
	  "feedfacedeadbeeffeedfacedeadbeefabaddad2",
	  "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
	  "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
	  "5bc94fbc3221a5db94fae95ae7121a47" },
	{ "0000000000000000000000000000000000000000000000000000000000000000",
	  "000000000000000000000000", "", "", "", "530f8afbc74536b9a963b4f1c4cb738b" },
	{ "0000000000000000000000000000000000000000000000000000000000000000",
	  "000000000000000000000000", "00000000000000000000000000000000", "",
	  "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919" },
	{ "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
	  "cafebabefacedbaddecaf888",
	  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	  "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
	  "",
	  "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
	  "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
	  "b094dac5d93471bdec1a502270e3cc6c" },
	{ "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
	  "cafebabefacedbaddecaf888",
	  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	  "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
	  "feedfacedeadbeeffeedfacedeadbeefabaddad2",
	  "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
	  "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
	  "76fc6ece0f4e1768cddf8853bb2d551b" },
};

static void test_specification_cases(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(kats) / sizeof(kats[0]); i++) {
		uint8_t key[32], iv[12], pt[64], aad[20], ct[64], tag[16], out[64], got[16];
		size_t key_len = unhex(kats[i].key, key), pt_len = unhex(kats[i].pt, pt);
		size_t aad_len = unhex(kats[i].aad, aad);
		struct ref r;

		assert_int_equal(unhex(kats[i].iv, iv), 12);
		assert_int_equal(unhex(kats[i].ct, ct), pt_len);
		assert_int_equal(unhex(kats[i].tag, tag), 16);
		ref_init(&r, key, key_len);
		aesgcm_wide_seal(schedule(&r), r.aes.rounds, iv, aad, aad_len, pt, out, pt_len,
				 got);
		assert_memory_equal(out, ct, pt_len);
		assert_memory_equal(got, tag, 16);
		assert_int_equal(aesgcm_wide_open(schedule(&r), r.aes.rounds, iv, aad, aad_len, ct,
						  out, pt_len, tag),
				 0);
		assert_memory_equal(out, pt, pt_len);
		wc_AesFree(&r.aes);
	}
}

static void fill(uint8_t *p, size_t n)
{
	while (n--)
		*p++ = (uint8_t)random();
}

/* Seal and open len bytes both ways, in place and not, against wolfSSL. */
static void compare_once(size_t key_len, size_t len, size_t aad_len)
{
	static uint8_t in[MAX_LEN], ours[MAX_LEN], theirs[MAX_LEN], back[MAX_LEN];
	uint8_t key[32], iv[12], aad[64], tag_ours[16], tag_theirs[16];
	struct ref r;

	fill(key, key_len);
	fill(iv, sizeof(iv));
	fill(aad, aad_len);
	fill(in, len);
	ref_init(&r, key, key_len);
	assert_int_equal(wc_AesGcmEncrypt(&r.aes, theirs, in, (word32)len, iv, sizeof(iv),
					  tag_theirs, 16, aad, (word32)aad_len),
			 0);
	aesgcm_wide_seal(schedule(&r), r.aes.rounds, iv, aad, aad_len, in, ours, len, tag_ours);
	assert_memory_equal(ours, theirs, len);
	assert_memory_equal(tag_ours, tag_theirs, 16);

	memcpy(back, in, len); /* in place */
	aesgcm_wide_seal(schedule(&r), r.aes.rounds, iv, aad, aad_len, back, back, len, tag_ours);
	assert_memory_equal(back, theirs, len);
	assert_memory_equal(tag_ours, tag_theirs, 16);
	assert_int_equal(aesgcm_wide_open(schedule(&r), r.aes.rounds, iv, aad, aad_len, back, back,
					  len, tag_theirs),
			 0);
	assert_memory_equal(back, in, len);

	assert_int_equal(aesgcm_wide_open(schedule(&r), r.aes.rounds, iv, aad, aad_len, theirs,
					  back, len, tag_theirs),
			 0);
	assert_memory_equal(back, in, len);
	/* and wolfSSL opens ours */
	assert_int_equal(wc_AesGcmDecrypt(&r.aes, back, ours, (word32)len, iv, sizeof(iv), tag_ours,
					  16, aad, (word32)aad_len),
			 0);
	assert_memory_equal(back, in, len);
	wc_AesFree(&r.aes);
}

static void test_same_as_wolfssl(void **state)
{
	static const size_t keys[] = { 16, 24, 32 };
	size_t len, k, i;

	srandom(12345);
	/* every length through four 256-byte chunks and the tail after them */
	for (len = 0; len <= 1100; len++)
		compare_once(keys[len % 3], len, len % 41);
	/* records as TLS makes them, and random ones */
	for (k = 0; k < 3; k++) {
		compare_once(keys[k], 16384, 5);
		compare_once(keys[k], 16384 + 1, 5);
		compare_once(keys[k], MAX_LEN, 13);
	}
	for (i = 0; i < 300; i++)
		compare_once(keys[i % 3], (size_t)random() % MAX_LEN, (size_t)random() % 64);
}

/* Any changed bit in ciphertext, tag or additional data: -EBADMSG and no
 * plaintext. */
static void test_tampering_refused(void **state)
{
	static uint8_t in[4096], ct[4096], out[4096], zeros[4096];
	uint8_t key[16], iv[12], aad[13], tag[16], bad[16];
	struct ref r;
	size_t i;

	srandom(777);
	fill(key, sizeof(key));
	fill(iv, sizeof(iv));
	fill(aad, sizeof(aad));
	fill(in, sizeof(in));
	ref_init(&r, key, sizeof(key));
	aesgcm_wide_seal(schedule(&r), r.aes.rounds, iv, aad, sizeof(aad), in, ct, sizeof(in), tag);
	for (i = 0; i < 200; i++) {
		size_t at = (size_t)random() % sizeof(ct);
		uint8_t bit = (uint8_t)(1u << (random() % 8));

		ct[at] ^= bit;
		memset(out, 0xa5, sizeof(out));
		assert_int_equal(aesgcm_wide_open(schedule(&r), r.aes.rounds, iv, aad, sizeof(aad),
						  ct, out, sizeof(ct), tag),
				 -EBADMSG);
		assert_memory_equal(out, zeros, sizeof(out));
		ct[at] ^= bit;
	}
	for (i = 0; i < 16 * 8; i++) {
		memcpy(bad, tag, sizeof(bad));
		bad[i / 8] ^= (uint8_t)(1u << (i % 8));
		assert_int_equal(aesgcm_wide_open(schedule(&r), r.aes.rounds, iv, aad, sizeof(aad),
						  ct, out, sizeof(ct), bad),
				 -EBADMSG);
	}
	aad[0] ^= 1;
	assert_int_equal(aesgcm_wide_open(schedule(&r), r.aes.rounds, iv, aad, sizeof(aad), ct, out,
					  sizeof(ct), tag),
			 -EBADMSG);
	aad[0] ^= 1;
	iv[11] ^= 1;
	assert_int_equal(aesgcm_wide_open(schedule(&r), r.aes.rounds, iv, aad, sizeof(aad), ct, out,
					  sizeof(ct), tag),
			 -EBADMSG);
	iv[11] ^= 1;
	assert_int_equal(aesgcm_wide_open(schedule(&r), r.aes.rounds, iv, aad, sizeof(aad), ct, out,
					  sizeof(ct), tag),
			 0);
	assert_memory_equal(out, in, sizeof(in));
	wc_AesFree(&r.aes);
}

static int no_device(int id, wc_CryptoInfo *info, void *ctx)
{
	return CRYPTOCB_UNAVAILABLE;
}

/* tls_library_version() names the wide AES-GCM only where tls.c's crypto
 * device is registered: with wolfSSL's device table full it says AES-NI. */
static void test_version_names_the_device_in_use(void **state)
{
	int n = 0;

	/* --version, before tls_global_init: what this CPU would use */
	assert_non_null(strstr(tls_library_version(), "VAES-512"));
	assert_int_equal(tls_global_init(), 0);
	assert_non_null(strstr(tls_library_version(), "VAES-512"));
	tls_global_exit();

	/* wolfCrypt stays initialised, so that tls_global_init keeps the table */
	assert_int_equal(wolfSSL_Init(), WOLFSSL_SUCCESS);
	while (n < 64 && wc_CryptoCb_RegisterDevice(n + 1, no_device, NULL) == 0)
		n++;
	assert_in_range(n, 1, 63);
	assert_int_equal(tls_global_init(), 0);
	assert_null(strstr(tls_library_version(), "VAES"));
	assert_non_null(strstr(tls_library_version(), "(AES-NI)"));
	tls_global_exit();
	while (n > 0)
		wc_CryptoCb_UnRegisterDevice(n--);
	wolfSSL_Cleanup();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_specification_cases),
		cmocka_unit_test(test_same_as_wolfssl),
		cmocka_unit_test(test_tampering_refused),
		cmocka_unit_test(test_version_names_the_device_in_use),
	};

	if (!aesgcm_wide_available()) {
		printf("# skipped: this CPU has no VAES/VPCLMULQDQ/AVX-512\n");
		return 77; /* meson: skipped */
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
