/* speed.c — AES-128-GCM seal and open, wolfSSL's own code against
 * src/tls/aesgcm.c, nanoseconds per call by record size (run.sh builds
 * and runs it). Each size is timed three times, alternating the two;
 * opening takes the record sealed just before, so its tag matches. */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>

#include "anyproxy/aesgcm.h"

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* seconds per call of expr, over n calls, into dst */
#define TIMED(dst, expr)                 \
	do {                             \
		double t0_ = now();      \
		for (j = 0; j < n; j++)  \
			expr;            \
		dst = (now() - t0_) / n; \
	} while (0)

int main(void)
{
	static const size_t sizes[] = { 256, 512, 1024, 1536, 2048, 4096, 16384 };
	static uint8_t in[16384], ct[16384], out[16384];
	uint8_t key[16] = { 1 }, iv[12] = { 2 }, aad[5] = { 3 }, tag[16];
	const uint8_t *ks;
	double t[4];
	size_t i;
	int rep, j, n;
	Aes aes;

	if (!aesgcm_wide_available()) {
		printf("this CPU has no VAES/VPCLMULQDQ/AVX-512\n");
		return 1;
	}
	if (wc_AesInit(&aes, NULL, INVALID_DEVID) || wc_AesGcmSetKey(&aes, key, sizeof(key)))
		return 1;
	ks = (const uint8_t *)aes.key;
	printf("bytes\twolfssl_seal_ns\tours_seal_ns\twolfssl_open_ns\tours_open_ns\n");
	for (rep = 0; rep < 3; rep++) {
		for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			size_t s = sizes[i];

			n = s > 4096 ? 40000 : 300000;
			TIMED(t[0],
			      wc_AesGcmEncrypt(&aes, ct, in, (word32)s, iv, 12, tag, 16, aad, 5));
			TIMED(t[1], aesgcm_wide_seal(ks, aes.rounds, iv, aad, 5, in, ct, s, tag));
			/* ct and tag are a valid record now: both open it whole */
			TIMED(t[2],
			      wc_AesGcmDecrypt(&aes, out, ct, (word32)s, iv, 12, tag, 16, aad, 5));
			TIMED(t[3], aesgcm_wide_open(ks, aes.rounds, iv, aad, 5, ct, out, s, tag));
			printf("%zu\t%.0f\t%.0f\t%.0f\t%.0f\n", s, t[0] * 1e9, t[1] * 1e9,
			       t[2] * 1e9, t[3] * 1e9);
		}
	}
	wc_AesFree(&aes);
	return 0;
}
