/*
 * fuzz_frame.c — libFuzzer target for the tunnel frame codec.
 *
 * The input is read as a tunnel byte stream: frames are decoded one after
 * another until need-more or an error. For each decoded frame it checks the
 * codec's promises and aborts on any broken one:
 *   - an error comes with a reason and one of the three documented codes;
 *   - need-more only while the header is incomplete or the payload missing;
 *   - every shorter prefix of a decoded frame is need-more;
 *   - a decoded frame re-encodes to the same size, byte for byte except the
 *     reserved fields, and decodes again to the same values;
 *   - encoding into one byte less than needed is -ENOSPC.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "anyproxy/common.h"
#include "anyproxy/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool str_equal(struct frame_str a, struct frame_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static bool frames_equal(const struct frame *a, const struct frame *b)
{
	if (a->type != b->type || a->stream_id != b->stream_id)
		return false;
	switch (a->type) {
	case FRAME_HELLO:
		return a->hello.version == b->hello.version &&
		       a->hello.replica == b->hello.replica &&
		       a->hello.capabilities == b->hello.capabilities &&
		       a->hello.instance == b->hello.instance &&
		       str_equal(a->hello.client_id, b->hello.client_id) &&
		       str_equal(a->hello.group_id, b->hello.group_id) &&
		       str_equal(a->hello.username, b->hello.username) &&
		       str_equal(a->hello.password, b->hello.password);
	case FRAME_HELLO_OK:
		return a->hello_ok.version == b->hello_ok.version &&
		       a->hello_ok.capabilities == b->hello_ok.capabilities &&
		       a->hello_ok.ping_interval_ms == b->hello_ok.ping_interval_ms &&
		       a->hello_ok.stream_window == b->hello_ok.stream_window;
	case FRAME_ERROR:
	case FRAME_GOAWAY:
		return a->error.code == b->error.code &&
		       str_equal(a->error.message, b->error.message);
	case FRAME_OPEN:
		/* The decoder zeroes the frame first, so unused addr bytes agree. */
		return a->open.window == b->open.window && a->open.addr_type == b->open.addr_type &&
		       memcmp(a->open.addr, b->open.addr, sizeof(a->open.addr)) == 0 &&
		       str_equal(a->open.domain, b->open.domain) && a->open.port == b->open.port &&
		       str_equal(a->open.user, b->open.user) &&
		       str_equal(a->open.group, b->open.group);
	case FRAME_OPEN_OK:
		return a->open_ok.window == b->open_ok.window;
	case FRAME_OPEN_FAIL:
		return a->open_fail.reason == b->open_fail.reason &&
		       str_equal(a->open_fail.message, b->open_fail.message);
	case FRAME_DATA:
		return a->data.len == b->data.len &&
		       memcmp(a->data.ptr, b->data.ptr, a->data.len) == 0;
	case FRAME_WINDOW:
		return a->window.increment == b->window.increment;
	case FRAME_FIN:
		return true;
	case FRAME_RST:
		return a->rst.reason == b->rst.reason;
	case FRAME_PING:
	case FRAME_PONG:
		return memcmp(a->ping.opaque, b->ping.opaque, sizeof(a->ping.opaque)) == 0;
	case FRAME_DGRAM_OPEN:
		return str_equal(a->dgram_open.user, b->dgram_open.user) &&
		       str_equal(a->dgram_open.group, b->dgram_open.group);
	case FRAME_DGRAM:
		return a->dgram.addr_type == b->dgram.addr_type &&
		       memcmp(a->dgram.addr, b->dgram.addr, sizeof(a->dgram.addr)) == 0 &&
		       str_equal(a->dgram.domain, b->dgram.domain) &&
		       a->dgram.port == b->dgram.port && str_equal(a->dgram.data, b->dgram.data);
	case FRAME_DGRAM_CLOSE:
		return a->dgram_close.reason == b->dgram_close.reason;
	}
	return false; /* the decoder returned a type it does not define */
}

/* Payload offsets of the reserved bytes, which decode ignores and encode
 * writes as 0: the only bytes a re-encoding may change. */
#define HELLO_RESERVED_OFFSET 1
#define HELLO_RESERVED_LEN 1
#define HELLO_OK_RESERVED_OFFSET 1
#define HELLO_OK_RESERVED_LEN 3

static void clear_reserved(uint8_t *frame)
{
	uint8_t *payload = frame + FRAME_HEADER_SIZE;

	if (frame[0] == FRAME_HELLO)
		memset(payload + HELLO_RESERVED_OFFSET, 0, HELLO_RESERVED_LEN);
	else if (frame[0] == FRAME_HELLO_OK)
		memset(payload + HELLO_OK_RESERVED_OFFSET, 0, HELLO_OK_RESERVED_LEN);
}

static void check_frame(const uint8_t *in, size_t n, const struct frame *f)
{
	static uint8_t original[FRAME_MAX_SIZE], encoded[FRAME_MAX_SIZE];
	struct frame again;

	if (n > FRAME_MAX_SIZE || frame_decode(in, n - 1, &again, NULL) != 0)
		abort();
	if (frame_encode(encoded, sizeof(encoded), f) != (ssize_t)n)
		abort();
	memcpy(original, in, n);
	clear_reserved(original);
	if (memcmp(original, encoded, n) != 0)
		abort();
	if (frame_decode(encoded, n, &again, NULL) != (ssize_t)n || !frames_equal(f, &again))
		abort();
	if (frame_encode(encoded, n - 1, f) != -ENOSPC)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	while (off < size) {
		const uint8_t *p = data + off;
		size_t left = size - off;
		const char *why = NULL;
		struct frame f;
		ssize_t n = frame_decode(p, left, &f, &why);

		if (n < 0) {
			if (!why || (n != -EBADMSG && n != -EMSGSIZE && n != -EPROTONOSUPPORT))
				abort();
			break;
		}
		if (n == 0) {
			if (left >= FRAME_HEADER_SIZE &&
			    left >= FRAME_HEADER_SIZE + (size_t)get_be16(p + 2))
				abort();
			break;
		}
		check_frame(p, (size_t)n, &f);
		off += (size_t)n;
	}
	return 0;
}
