/*
 * fuzz_aesgcm.c — libFuzzer target for aesgcm.h: AES-GCM on 512-bit
 * vectors, against wolfSSL's own AES-GCM.
 *
 * Input: one byte choosing the key size (16, 24 or 32 bytes), the key (32
 * bytes, the first 16/24/32 used), the nonce (12), one byte giving the
 * length of the additional data, that data, and the plaintext (the rest).
 * Aborts when a promise breaks:
 *   - sealing gives wolfSSL's ciphertext and tag, in place or not;
 *   - opening that gives the plaintext back, and wolfSSL opens ours;
 *   - with one bit of the ciphertext, the tag or the additional data
 *     changed, opening fails with -EBADMSG and leaves no plaintext.
 * On a CPU without VAES/VPCLMULQDQ/AVX-512 the target checks nothing.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>

#include "anyproxy/aesgcm.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAD (1 + 32 + AESGCM_IV_BYTES + 1)

static bool all_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int available = -1;
	const uint8_t *key, *iv, *aad, *pt;
	size_t key_len, aad_len, len;
	uint8_t tag[16], ref_tag[16], bad_tag[16];
	uint8_t *ct, *ref, *out;
	Aes aes;

	if (available < 0)
		available = aesgcm_wide_available();
	if (!available || size < HEAD)
		return 0;
	key_len = 16 + 8 * (data[0] % 3);
	key = data + 1;
	iv = key + 32;
	aad_len = iv[AESGCM_IV_BYTES];
	aad = iv + AESGCM_IV_BYTES + 1;
	if (size - HEAD < aad_len)
		return 0;
	pt = aad + aad_len;
	len = size - HEAD - aad_len;

	ct = malloc(len + 1);
	ref = malloc(len + 1);
	out = malloc(len + 1);
	CHECK(ct && ref && out);
	CHECK(wc_AesInit(&aes, NULL, INVALID_DEVID) == 0);
	CHECK(wc_AesGcmSetKey(&aes, key, (word32)key_len) == 0);
	CHECK(aes.use_aesni);
	CHECK(wc_AesGcmEncrypt(&aes, ref, pt, (word32)len, iv, AESGCM_IV_BYTES, ref_tag, 16, aad,
			       (word32)aad_len) == 0);
	aesgcm_wide_seal((const uint8_t *)aes.key, aes.rounds, iv, aad, aad_len, pt, ct, len, tag);
	CHECK(memcmp(ct, ref, len) == 0 && memcmp(tag, ref_tag, 16) == 0);
	memcpy(out, pt, len);
	aesgcm_wide_seal((const uint8_t *)aes.key, aes.rounds, iv, aad, aad_len, out, out, len,
			 tag);
	CHECK(memcmp(out, ref, len) == 0 && memcmp(tag, ref_tag, 16) == 0);

	CHECK(aesgcm_wide_open((const uint8_t *)aes.key, aes.rounds, iv, aad, aad_len, ct, out, len,
			       tag) == 0);
	CHECK(memcmp(out, pt, len) == 0);
	CHECK(wc_AesGcmDecrypt(&aes, out, ct, (word32)len, iv, AESGCM_IV_BYTES, tag, 16, aad,
			       (word32)aad_len) == 0);
	CHECK(memcmp(out, pt, len) == 0);

	memcpy(bad_tag, tag, 16);
	bad_tag[data[0] % 16] ^= (uint8_t)(1u << (data[0] % 8));
	CHECK(aesgcm_wide_open((const uint8_t *)aes.key, aes.rounds, iv, aad, aad_len, ct, out, len,
			       bad_tag) == -EBADMSG);
	CHECK(all_zero(out, len));
	if (len) {
		size_t at = (size_t)data[1] * 251 % len;

		ct[at] ^= 0x80;
		CHECK(aesgcm_wide_open((const uint8_t *)aes.key, aes.rounds, iv, aad, aad_len, ct,
				       out, len, tag) == -EBADMSG);
		CHECK(all_zero(out, len));
	}
	wc_AesFree(&aes);
	free(ct);
	free(ref);
	free(out);
	return 0;
}
