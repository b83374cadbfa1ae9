/*
 * aesgcm.h — AES-GCM (NIST SP 800-38D) sixteen blocks at a time on 512-bit
 * vectors: VAES for the counter mode, VPCLMULQDQ for GHASH, one reduction
 * per 256 bytes. About 1.7 times the speed of wolfSSL's AVX2 code on 16 KiB
 * records, level at 1 KiB and slower below (each call works out the hash
 * key's powers again): tls.c hands it records of AESGCM_WIDE_MIN bytes and
 * more and leaves the rest, and every other cipher, to wolfSSL.
 * docs/benchmarks.md has the figures.
 *
 * Pure functions: no allocation, no state between calls. The key comes as
 * its AES encryption schedule, (rounds + 1) round keys of 16 bytes in the
 * byte order AES-NI uses, as wolfSSL keeps it with AES-NI on.
 */
#ifndef ANYPROXY_AESGCM_H
#define ANYPROXY_AESGCM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AESGCM_IV_BYTES 12
#define AESGCM_TAG_BYTES 16
/* Where the two are level on this project's machines (docs/benchmarks.md) */
#define AESGCM_WIDE_MIN 1024

/* Does this CPU (and kernel) run the functions below? */
bool aesgcm_wide_available(void);

/* rounds: 10, 12 or 14 (AES-128, -192, -256). out may be in. */
void aesgcm_wide_seal(const uint8_t *schedule, unsigned rounds, const uint8_t iv[AESGCM_IV_BYTES],
		      const uint8_t *aad, size_t aad_len, const uint8_t *in, uint8_t *out,
		      size_t len, uint8_t tag[AESGCM_TAG_BYTES]);

/* 0, or -EBADMSG when tag does not match (out is then all zeros). */
int aesgcm_wide_open(const uint8_t *schedule, unsigned rounds, const uint8_t iv[AESGCM_IV_BYTES],
		     const uint8_t *aad, size_t aad_len, const uint8_t *in, uint8_t *out,
		     size_t len, const uint8_t tag[AESGCM_TAG_BYTES]);

#endif
