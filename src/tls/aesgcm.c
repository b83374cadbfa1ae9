/* aesgcm.c — AES-GCM on 512-bit vectors (see aesgcm.h).
 *
 * GHASH works on byte-reversed blocks, so that the field element's x^0
 * coefficient is the integer's top bit: a carry-less product of two such
 * values is the reflected product shifted right by one bit, which
 * reduce4() shifts back before reducing modulo x^128 + x^7 + x^2 + x + 1
 * (the method of Gueron and Kounavis, "Intel Carry-Less Multiplication
 * Instruction and its Usage for Computing the GCM Mode", algorithm 5).
 * Sixteen blocks are hashed at once as
 *   Y' = (Y + C1)·H^16 + C2·H^15 + ... + C16·H,
 * their products summed unreduced and reduced once. Encryption hashes a
 * chunk's ciphertext while the next chunk's counters run through AES. */
#include <cpuid.h>
#include <errno.h>
#include <immintrin.h>
#include <string.h>

#include "anyproxy/aesgcm.h"

#define WIDE                                                                          \
	__attribute__((target("aes,pclmul,ssse3,avx2,avx512f,avx512bw,avx512vl,vaes," \
			      "vpclmulqdq")))
#define INLINE_WIDE WIDE static inline __attribute__((always_inline))

#define ROUNDS_MAX 14
#define CHUNK_BYTES 256 /* sixteen blocks, four vectors */

struct key {
	__m512i rk[ROUNDS_MAX + 1]; /* each round key in all four lanes */
	__m128i h;                  /* H = E(K, 0), byte-reversed */
	/* H^16..H^13, H^12..H^9, H^8..H^5, H^4..H^1: lane 0 multiplies the
	 * first block of its vector */
	__m512i hpow[4];
};

INLINE_WIDE __m128i rev(__m128i x)
{
	return _mm_shuffle_epi8(x,
				_mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

INLINE_WIDE __m512i rev4(__m512i x)
{
	return _mm512_shuffle_epi8(x,
				   _mm512_broadcast_i32x4(_mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
								       10, 11, 12, 13, 14, 15)));
}

/* In each of the four lanes: [hi:lo], the carry-less product of two
 * reflected values, shifted left a bit and reduced, which is the reflected
 * field product. */
INLINE_WIDE __m512i reduce4(__m512i lo, __m512i hi)
{
	__m512i a, b, c;

	a = _mm512_srli_epi32(lo, 31);
	b = _mm512_srli_epi32(hi, 31);
	lo = _mm512_slli_epi32(lo, 1);
	hi = _mm512_slli_epi32(hi, 1);
	c = _mm512_bsrli_epi128(a, 12);
	b = _mm512_bslli_epi128(b, 4);
	a = _mm512_bslli_epi128(a, 4);
	lo = _mm512_or_si512(lo, a);
	hi = _mm512_or_si512(hi, _mm512_or_si512(b, c));

	a = _mm512_ternarylogic_epi64(_mm512_slli_epi32(lo, 31), _mm512_slli_epi32(lo, 30),
				      _mm512_slli_epi32(lo, 25), 0x96);
	b = _mm512_bsrli_epi128(a, 4);
	lo = _mm512_xor_si512(lo, _mm512_bslli_epi128(a, 12));
	c = _mm512_ternarylogic_epi64(_mm512_srli_epi32(lo, 1), _mm512_srli_epi32(lo, 2),
				      _mm512_srli_epi32(lo, 7), 0x96);
	return _mm512_ternarylogic_epi64(hi, lo, _mm512_xor_si512(c, b), 0x96);
}

INLINE_WIDE __m512i gfmul4(__m512i a, __m512i b)
{
	__m512i lo = _mm512_clmulepi64_epi128(a, b, 0x00);
	__m512i hi = _mm512_clmulepi64_epi128(a, b, 0x11);
	__m512i mid = _mm512_xor_si512(_mm512_clmulepi64_epi128(a, b, 0x01),
				       _mm512_clmulepi64_epi128(a, b, 0x10));

	return reduce4(_mm512_xor_si512(lo, _mm512_bslli_epi128(mid, 8)),
		       _mm512_xor_si512(hi, _mm512_bsrli_epi128(mid, 8)));
}

INLINE_WIDE __m128i gfmul(__m128i a, __m128i b)
{
	return _mm512_castsi512_si128(gfmul4(_mm512_zextsi128_si512(a), _mm512_zextsi128_si512(b)));
}

/* the four lanes xor-ed into one */
INLINE_WIDE __m128i fold4(__m512i v)
{
	__m256i x = _mm256_xor_si256(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));

	return _mm_xor_si128(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
}

INLINE_WIDE __m128i aes_block(const struct key *k, unsigned rounds, __m128i b)
{
	unsigned i;

	b = _mm_xor_si128(b, _mm512_castsi512_si128(k->rk[0]));
	for (i = 1; i < rounds; i++)
		b = _mm_aesenc_si128(b, _mm512_castsi512_si128(k->rk[i]));
	return _mm_aesenclast_si128(b, _mm512_castsi512_si128(k->rk[rounds]));
}

WIDE static void key_setup(struct key *k, const uint8_t *schedule, unsigned rounds)
{
	__m128i h2, h3, h4;
	__m512i v, b4;
	unsigned i;

	for (i = 0; i <= rounds; i++)
		k->rk[i] = _mm512_broadcast_i32x4(
			_mm_loadu_si128((const __m128i *)(const void *)(schedule + 16 * i)));
	k->h = rev(aes_block(k, rounds, _mm_setzero_si128()));
	h2 = gfmul(k->h, k->h);
	h3 = gfmul(h2, k->h);
	h4 = gfmul(h2, h2);
	v = _mm512_castsi128_si512(h4);
	v = _mm512_inserti32x4(v, h3, 1);
	v = _mm512_inserti32x4(v, h2, 2);
	k->hpow[3] = _mm512_inserti32x4(v, k->h, 3);
	b4 = _mm512_broadcast_i32x4(h4);
	k->hpow[2] = gfmul4(k->hpow[3], b4);
	k->hpow[1] = gfmul4(k->hpow[2], b4);
	k->hpow[0] = gfmul4(k->hpow[1], b4);
}

/* Y' for the sixteen blocks c0..c3 (as they lie in memory) */
INLINE_WIDE __m128i ghash_chunk(const struct key *k, __m128i y, __m512i c0, __m512i c1, __m512i c2,
				__m512i c3)
{
	__m512i r[4] = { _mm512_xor_si512(rev4(c0), _mm512_zextsi128_si512(y)), rev4(c1), rev4(c2),
			 rev4(c3) };
	__m512i lo = _mm512_setzero_si512(), hi = lo, mid = lo;
	__m128i l, h, m;
	int j;

	for (j = 0; j < 4; j++) {
		lo = _mm512_xor_si512(lo, _mm512_clmulepi64_epi128(r[j], k->hpow[j], 0x00));
		hi = _mm512_xor_si512(hi, _mm512_clmulepi64_epi128(r[j], k->hpow[j], 0x11));
		mid = _mm512_ternarylogic_epi64(mid,
						_mm512_clmulepi64_epi128(r[j], k->hpow[j], 0x01),
						_mm512_clmulepi64_epi128(r[j], k->hpow[j], 0x10),
						0x96);
	}
	l = fold4(lo);
	h = fold4(hi);
	m = fold4(mid);
	return _mm512_castsi512_si128(
		reduce4(_mm512_zextsi128_si512(_mm_xor_si128(l, _mm_slli_si128(m, 8))),
			_mm512_zextsi128_si512(_mm_xor_si128(h, _mm_srli_si128(m, 8)))));
}

/* Y' for len bytes, the last block padded with zeros */
WIDE static __m128i ghash_bytes(const struct key *k, __m128i y, const uint8_t *p, size_t len)
{
	uint8_t last[16];

	for (; len >= 16; p += 16, len -= 16)
		y = gfmul(_mm_xor_si128(y, rev(_mm_loadu_si128((const __m128i *)(const void *)p))),
			  k->h);
	if (len) {
		memset(last, 0, sizeof(last));
		memcpy(last, p, len);
		y = gfmul(_mm_xor_si128(y, rev(_mm_loadu_si128((const __m128i *)(void *)last))),
			  k->h);
	}
	return y;
}

/* The counter mode over in, and GHASH over the ciphertext (out when seal,
 * in otherwise) on top of y. rounds is a constant in each caller below, so
 * that the round loop unrolls. */
INLINE_WIDE __m128i ctr_ghash(const struct key *k, const unsigned rounds, const bool seal,
			      const uint8_t iv[AESGCM_IV_BYTES], const uint8_t *in, uint8_t *out,
			      size_t len, __m128i y)
{
	uint8_t j0[16];
	__m512i ctr, step = _mm512_broadcast_i32x4(_mm_set_epi32(0, 0, 0, 4));
	__m512i p0 = _mm512_setzero_si512(), p1 = p0, p2 = p0, p3 = p0;
	__m128i c1;
	bool pending = false;
	size_t off = 0;

	/* counter blocks IV || n, n from 2 (1 makes the tag's mask), kept
	 * byte-reversed so that n is lane dword 0 and adds as an integer,
	 * modulo 2^32 as the standard's inc32 */
	memcpy(j0, iv, AESGCM_IV_BYTES);
	memcpy(j0 + AESGCM_IV_BYTES, "\0\0\0\1", 4);
	ctr = _mm512_add_epi32(
		_mm512_broadcast_i32x4(rev(_mm_loadu_si128((const __m128i *)(void *)j0))),
		_mm512_set_epi32(0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1));
	for (; len - off >= CHUNK_BYTES; off += CHUNK_BYTES) {
		__m512i d0, d1, d2, d3, x0, x1, x2, x3, rk;
		unsigned r;

		d0 = _mm512_xor_si512(rev4(ctr), k->rk[0]);
		ctr = _mm512_add_epi32(ctr, step);
		d1 = _mm512_xor_si512(rev4(ctr), k->rk[0]);
		ctr = _mm512_add_epi32(ctr, step);
		d2 = _mm512_xor_si512(rev4(ctr), k->rk[0]);
		ctr = _mm512_add_epi32(ctr, step);
		d3 = _mm512_xor_si512(rev4(ctr), k->rk[0]);
		ctr = _mm512_add_epi32(ctr, step);
#pragma GCC unroll 14
		for (r = 1; r < rounds; r++) {
			rk = k->rk[r];
			d0 = _mm512_aesenc_epi128(d0, rk);
			d1 = _mm512_aesenc_epi128(d1, rk);
			d2 = _mm512_aesenc_epi128(d2, rk);
			d3 = _mm512_aesenc_epi128(d3, rk);
		}
		rk = k->rk[rounds];
		x0 = _mm512_loadu_si512(in + off);
		x1 = _mm512_loadu_si512(in + off + 64);
		x2 = _mm512_loadu_si512(in + off + 128);
		x3 = _mm512_loadu_si512(in + off + 192);
		d0 = _mm512_xor_si512(_mm512_aesenclast_epi128(d0, rk), x0);
		d1 = _mm512_xor_si512(_mm512_aesenclast_epi128(d1, rk), x1);
		d2 = _mm512_xor_si512(_mm512_aesenclast_epi128(d2, rk), x2);
		d3 = _mm512_xor_si512(_mm512_aesenclast_epi128(d3, rk), x3);
		_mm512_storeu_si512(out + off, d0);
		_mm512_storeu_si512(out + off + 64, d1);
		_mm512_storeu_si512(out + off + 128, d2);
		_mm512_storeu_si512(out + off + 192, d3);
		if (!seal) {
			y = ghash_chunk(k, y, x0, x1, x2, x3);
			continue;
		}
		/* the previous chunk's, while this one's AES was in flight */
		if (pending)
			y = ghash_chunk(k, y, p0, p1, p2, p3);
		p0 = d0, p1 = d1, p2 = d2, p3 = d3;
		pending = true;
	}
	if (pending)
		y = ghash_chunk(k, y, p0, p1, p2, p3);
	/* fewer than sixteen blocks left: one at a time */
	c1 = _mm512_castsi512_si128(ctr);
	for (; off < len; off += 16) {
		size_t n = len - off < 16 ? len - off : 16;
		uint8_t blk[16] = { 0 }, res[16];
		__m128i ks = aes_block(k, rounds, rev(c1)), x, c;

		c1 = _mm_add_epi32(c1, _mm_set_epi32(0, 0, 0, 1));
		memcpy(blk, in + off, n);
		x = _mm_loadu_si128((const __m128i *)(void *)blk);
		_mm_storeu_si128((__m128i *)(void *)res, _mm_xor_si128(x, ks));
		memcpy(out + off, res, n);
		if (seal) {
			memset(res + n, 0, sizeof(res) - n);
			c = _mm_loadu_si128((const __m128i *)(void *)res);
		} else {
			c = x;
		}
		y = gfmul(_mm_xor_si128(y, rev(c)), k->h);
	}
	return y;
}

WIDE static __m128i ctr_ghash_any(const struct key *k, unsigned rounds, bool seal,
				  const uint8_t iv[AESGCM_IV_BYTES], const uint8_t *in,
				  uint8_t *out, size_t len, __m128i y)
{
	if (rounds == 10)
		return ctr_ghash(k, 10, seal, iv, in, out, len, y);
	if (rounds == 12)
		return ctr_ghash(k, 12, seal, iv, in, out, len, y);
	return ctr_ghash(k, 14, seal, iv, in, out, len, y);
}

/* The tag for GHASH state y over aad_len and len bytes. */
WIDE static void make_tag(const struct key *k, unsigned rounds, __m128i y,
			  const uint8_t iv[AESGCM_IV_BYTES], size_t aad_len, size_t len,
			  uint8_t tag[AESGCM_TAG_BYTES])
{
	uint8_t j0[16];

	/* the block len(A) || len(C) in bits, each 64-bit big-endian,
	 * byte-reversed: len(C) is the low qword, len(A) the high one */
	y = gfmul(_mm_xor_si128(y, _mm_set_epi64x((long long)(aad_len * 8), (long long)(len * 8))),
		  k->h);
	memcpy(j0, iv, AESGCM_IV_BYTES);
	memcpy(j0 + AESGCM_IV_BYTES, "\0\0\0\1", 4);
	_mm_storeu_si128(
		(__m128i *)(void *)tag,
		_mm_xor_si128(rev(y),
			      aes_block(k, rounds, _mm_loadu_si128((const __m128i *)(void *)j0))));
}

bool aesgcm_wide_available(void)
{
	unsigned a, b, c, d, lo, hi;

	/* leaf 1: AES-NI, PCLMULQDQ, and the OS saves vector state (OSXSAVE) */
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_AES) || !(c & bit_PCLMUL) ||
	    !(c & bit_OSXSAVE))
		return false;
	/* XCR0: the OS saves SSE, AVX and all of the AVX-512 state */
	__asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	if ((lo & 0xe6) != 0xe6)
		return false;
	/* leaf 7: AVX-512 F, BW and VL, VAES, VPCLMULQDQ */
	return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX512F) && (b & bit_AVX512BW) &&
	       (b & bit_AVX512VL) && (c & bit_VAES) && (c & bit_VPCLMULQDQ);
}

/* out from in by the counter mode, and the tag over aad and the
 * ciphertext (out when seal, in otherwise) */
WIDE static void seal_or_open(const uint8_t *schedule, unsigned rounds, bool seal,
			      const uint8_t iv[AESGCM_IV_BYTES], const uint8_t *aad, size_t aad_len,
			      const uint8_t *in, uint8_t *out, size_t len,
			      uint8_t tag[AESGCM_TAG_BYTES])
{
	struct key k;
	__m128i y;

	key_setup(&k, schedule, rounds);
	y = ghash_bytes(&k, _mm_setzero_si128(), aad, aad_len);
	y = ctr_ghash_any(&k, rounds, seal, iv, in, out, len, y);
	make_tag(&k, rounds, y, iv, aad_len, len, tag);
	explicit_bzero(&k, sizeof(k));
}

void aesgcm_wide_seal(const uint8_t *schedule, unsigned rounds, const uint8_t iv[AESGCM_IV_BYTES],
		      const uint8_t *aad, size_t aad_len, const uint8_t *in, uint8_t *out,
		      size_t len, uint8_t tag[AESGCM_TAG_BYTES])
{
	seal_or_open(schedule, rounds, true, iv, aad, aad_len, in, out, len, tag);
}

int aesgcm_wide_open(const uint8_t *schedule, unsigned rounds, const uint8_t iv[AESGCM_IV_BYTES],
		     const uint8_t *aad, size_t aad_len, const uint8_t *in, uint8_t *out,
		     size_t len, const uint8_t tag[AESGCM_TAG_BYTES])
{
	uint8_t mine[AESGCM_TAG_BYTES], diff = 0;
	size_t i;

	seal_or_open(schedule, rounds, false, iv, aad, aad_len, in, out, len, mine);
	for (i = 0; i < AESGCM_TAG_BYTES; i++) /* in constant time */
		diff |= mine[i] ^ tag[i];
	if (!diff)
		return 0;
	explicit_bzero(out, len);
	return -EBADMSG;
}
