/* stream.c — streams inside a tunnel: ids, credit, FIN, RST (see stream.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#include "anyproxy/common.h"
#include "anyproxy/log.h"
#include "anyproxy/stream.h"
#include "anyproxy/tunnel.h"

/* Return credit once a quarter of the window was consumed: few WINDOW
 * frames, and the sender never runs dry on a fast path. */
#define STREAM_WINDOW_UPDATE_DIVISOR 4
/* the sender is starved with less than this part of the window left */
#define STREAM_WINDOW_STARVED_DIVISOR 8

/* ---- the table of a tunnel's streams (stream.h struct stream_table) ---- */

#define TABLE_MIN_SLOTS 8u
/* never shrunk below this: a tunnel going between a few streams and none
 * would otherwise resize on every crossing (512 bytes of slots) */
#define TABLE_SHRINK_FLOOR 64u
#define TABLE_MAX_SLOTS (1u << 31)

static uint32_t home(const struct stream_table *st, uint32_t id)
{
	/* Fibonacci hashing: sequential ids spread evenly, and ids chosen by
	 * the peer do not simply pile up on one slot */
	return (uint32_t)(id * 2654435769u) >> st->shift;
}

static uint32_t slot_of(const struct stream_table *st, uint32_t id)
{
	uint32_t i = home(st, id);

	while (st->slots[i] && st->slots[i]->id != id)
		i = (i + 1) & st->mask;
	return i;
}

struct stream *stream_find(struct tunnel *t, uint32_t id)
{
	const struct stream_table *st = &t->streams;

	return st->slots ? st->slots[slot_of(st, id)] : NULL;
}

static int table_resize(struct stream_table *st, uint32_t nslots)
{
	struct stream **old = st->slots;
	uint32_t oldn = st->slots ? st->mask + 1 : 0;
	struct stream **slots = calloc(nslots, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	st->slots = slots;
	st->mask = nslots - 1;
	st->shift = (uint8_t)(32 - __builtin_ctz(nslots));
	for (uint32_t i = 0; i < oldn; i++)
		if (old[i])
			slots[slot_of(st, old[i]->id)] = old[i];
	free(old);
	return 0;
}

/* Room for one more stream: 0 or -ENOMEM (then nothing changed). */
static int table_reserve(struct stream_table *st)
{
	uint32_t n = st->slots ? st->mask + 1 : 0;

	if (n && (uint64_t)(st->count + 1) * 2 <= n)
		return 0;
	if (n >= TABLE_MAX_SLOTS)
		return -ENOMEM;
	return table_resize(st, n ? n * 2 : TABLE_MIN_SLOTS);
}

/* After table_reserve. */
static void table_insert(struct stream_table *st, struct stream *s)
{
	st->slots[slot_of(st, s->id)] = s;
	/* a relaxed store: a gateway worker reads other threads' counts */
	__atomic_store_n(&st->count, st->count + 1, __ATOMIC_RELAXED);
}

static void table_delete(struct stream_table *st, uint32_t id)
{
	uint32_t i = slot_of(st, id), j = i;

	st->slots[i] = NULL;
	__atomic_store_n(&st->count, st->count - 1, __ATOMIC_RELAXED);
	/* backward shift: pull later members of the run into the hole unless
	 * their home lies cyclically in (hole, their slot] */
	for (;;) {
		j = (j + 1) & st->mask;
		if (!st->slots[j])
			break;
		uint32_t k = home(st, st->slots[j]->id);
		bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
		if (stays)
			continue;
		st->slots[i] = st->slots[j];
		st->slots[j] = NULL;
		i = j;
	}
	/* give memory back after a wave; a failed shrink keeps the larger table */
	if (!st->no_shrink && st->mask + 1 > TABLE_SHRINK_FLOOR &&
	    (uint64_t)st->count * 8 < st->mask + 1)
		(void)table_resize(st, (st->mask + 1) / 2);
}

void stream_table_free(struct stream_table *st)
{
	free(st->slots);
	memset(st, 0, sizeof(*st));
}

/* After table_reserve. */
static void link_stream(struct tunnel *t, struct stream *s)
{
	table_insert(&t->streams, s);
	s->tunnel = t;
}

static void unwait(struct stream *s)
{
	struct tunnel *t = s->tunnel;

	if (!s->waiting_writable)
		return;
	DL_DELETE2(t->waiters, s, wait_prev, wait_next);
	s->wait_prev = s->wait_next = NULL;
	s->waiting_writable = false;
	s->wake_pending = false;
}

void stream_detach(struct stream *s)
{
	struct tunnel *t = s->tunnel;

	if (!t)
		return;
	unwait(s);
	table_delete(&t->streams, s->id);
	s->tunnel = NULL;
	if (t->close_when_idle && !t->streams.count)
		tunnel_close_after(t, NULL, t->close_reason);
}

void stream_move(struct stream *dst, struct stream *src, const struct stream_ops *ops, void *owner)
{
	struct tunnel *t = src->tunnel;
	bool waiting = src->waiting_writable;

	if (t)
		unwait(src);
	*dst = *src;
	dst->ops = ops;
	dst->owner = owner;
	if (t) {
		t->streams.slots[slot_of(&t->streams, dst->id)] = dst;
		if (waiting)
			stream_want_writable(dst);
	}
	memset(src, 0, sizeof(*src));
}

static int send_simple(struct stream *s, uint8_t type)
{
	struct frame f = { .type = type, .stream_id = s->id };

	return tunnel_send(s->tunnel, &f);
}

int stream_open(struct stream *s, struct tunnel *t, const struct stream_target *target,
		const struct stream_ops *ops, void *owner)
{
	struct frame f = { .type = FRAME_OPEN };
	uint32_t id;
	int ret;

	if (t->state != TUNNEL_OPEN)
		return -EPIPE;
	ret = table_reserve(&t->streams);
	if (ret < 0)
		return ret;
	memset(s, 0, sizeof(*s));
	/* ids wrap and skip live ones, so a late frame never hits a new stream */
	do {
		id = t->next_stream_id++;
		if (t->next_stream_id == 0)
			t->next_stream_id = 1;
	} while (id == 0 || stream_find(t, id));
	s->id = id;
	s->ops = ops;
	s->owner = owner;
	s->recv_window = STREAM_WINDOW_BYTES;
	f.stream_id = id;
	f.open.window = s->recv_window;
	f.open.addr_type = target->addr_type;
	memcpy(f.open.addr, target->addr, sizeof(f.open.addr));
	if (target->addr_type == FRAME_ADDR_DOMAIN)
		f.open.domain = (struct frame_str){ (const uint8_t *)target->domain,
						    strlen(target->domain) };
	f.open.port = target->port;
	f.open.user = (struct frame_str){ (const uint8_t *)target->user, strlen(target->user) };
	f.open.group = (struct frame_str){ (const uint8_t *)target->group, strlen(target->group) };
	ret = tunnel_send(t, &f);
	if (ret < 0)
		return ret;
	link_stream(t, s);
	return 0;
}

int stream_accept(struct stream *s, struct tunnel *t, uint32_t id, uint32_t peer_window,
		  const struct stream_ops *ops, void *owner)
{
	int ret;

	if (stream_find(t, id))
		return -EEXIST;
	ret = table_reserve(&t->streams);
	if (ret < 0)
		return ret;
	memset(s, 0, sizeof(*s));
	s->id = id;
	s->ops = ops;
	s->owner = owner;
	s->send_credit = peer_window;
	s->recv_window = STREAM_WINDOW_BYTES;
	link_stream(t, s);
	return 0;
}

int stream_open_ok(struct stream *s)
{
	struct frame f = { .type = FRAME_OPEN_OK, .stream_id = s->id };

	if (!s->tunnel)
		return -EPIPE;
	f.open_ok.window = s->recv_window;
	s->open = true;
	return tunnel_send(s->tunnel, &f);
}

void stream_open_fail(struct stream *s, uint8_t reason, const char *message)
{
	struct frame f = { .type = FRAME_OPEN_FAIL, .stream_id = s->id };

	if (!s->tunnel)
		return;
	f.open_fail.reason = reason;
	f.open_fail.message =
		(struct frame_str){ (const uint8_t *)message,
				    MIN(strlen(message), (size_t)FRAME_MAX_TEXT_LEN) };
	tunnel_send(s->tunnel, &f);
	stream_detach(s);
}

size_t stream_send_room(const struct stream *s)
{
	size_t queued;

	if (!s->tunnel || !s->open || s->fin_sent)
		return 0;
	queued = tunnel_queued(s->tunnel);
	if (queued >= TUNNEL_OUT_BUDGET)
		return 0;
	return MIN((size_t)s->send_credit, TUNNEL_OUT_BUDGET - queued);
}

/* in_place: p is the caller's to overwrite, with FRAME_HEADER_SIZE bytes
 * before it (stream_write_in_place). */
static int write_data(struct stream *s, uint8_t *wp, const uint8_t *p, size_t n)
{
	struct frame f = { .type = FRAME_DATA };
	int ret;

	if (!s->tunnel || s->fin_sent)
		return -EPIPE;
	if (n > s->send_credit)
		return -ENOBUFS;
	f.stream_id = s->id;
	while (n) {
		size_t chunk = MIN(n, (size_t)FRAME_MAX_PAYLOAD);

		/* in place, each header overwrites the end of the chunk before
		 * it, which is encrypted already */
		if (wp) {
			ret = tunnel_send_data(s->tunnel, s->id, wp, chunk);
			wp += chunk;
		} else {
			f.data.ptr = p;
			f.data.len = chunk;
			ret = tunnel_send(s->tunnel, &f);
		}
		if (ret < 0)
			return ret;
		s->send_credit -= (uint32_t)chunk;
		s->bytes_sent += chunk;
		for (size_t i = 0; i < STREAM_COUNTS; i++)
			if (s->count_sent[i]) /* shared by threads (gateway workers) */
				__atomic_fetch_add(s->count_sent[i], chunk, __ATOMIC_RELAXED);
		p += chunk;
		n -= chunk;
	}
	return 0;
}

int stream_write(struct stream *s, const uint8_t *p, size_t n)
{
	return write_data(s, NULL, p, n);
}

int stream_write_in_place(struct stream *s, uint8_t *p, size_t n)
{
	return write_data(s, p, p, n);
}

/* now (now_us(), truncated) in the units of stream.starved_at */
static uint16_t stream_clock(uint32_t now)
{
	return (uint16_t)(now / STREAM_CLOCK_UNIT_US);
}

uint32_t stream_credit_due(struct stream *s, size_t n, uint32_t now)
{
	s->recv_consumed += (uint32_t)n;
	/* after the sender ran dry, the bytes it sent left us within
	 * STREAM_WINDOW_GROW_US: the window, not our reader, held it back */
	if (s->starved && s->recv_unreturned - s->recv_consumed <=
				  s->recv_window / STREAM_WINDOW_UPDATE_DIVISOR) {
		s->grow = (uint16_t)(stream_clock(now) - s->starved_at) <=
				  STREAM_WINDOW_GROW_US / STREAM_CLOCK_UNIT_US &&
			  s->recv_window < STREAM_WINDOW_MAX;
		s->starved = false;
	}
	if (s->recv_consumed < s->recv_window / STREAM_WINDOW_UPDATE_DIVISOR)
		return 0;
	return s->recv_consumed +
	       (s->grow ? MIN(s->recv_window, STREAM_WINDOW_MAX - s->recv_window) : 0);
}

void stream_credit_returned(struct stream *s, uint32_t increment)
{
	s->recv_window += increment - s->recv_consumed;
	s->recv_unreturned -= s->recv_consumed;
	s->recv_consumed = 0;
	s->grow = false;
}

void stream_consumed(struct stream *s, size_t n)
{
	struct frame f = { .type = FRAME_WINDOW };
	/* the clock only matters, and is only read, while the sender is starved */
	uint32_t increment = stream_credit_due(s, n, s->starved ? (uint32_t)now_us() : 0);

	if (!increment || !s->tunnel || s->fin_received)
		return;
	f.stream_id = s->id;
	f.window.increment = increment;
	if (tunnel_send(s->tunnel, &f) == 0)
		stream_credit_returned(s, increment);
}

void stream_want_writable(struct stream *s)
{
	struct tunnel *t = s->tunnel;

	if (!t || s->waiting_writable)
		return;
	s->waiting_writable = true;
	DL_APPEND2(t->waiters, s, wait_prev, wait_next);
}

int stream_send_fin(struct stream *s)
{
	int ret;

	if (!s->tunnel)
		return -EPIPE;
	if (s->fin_sent)
		return 0;
	ret = send_simple(s, FRAME_FIN);
	if (ret == 0)
		s->fin_sent = true;
	return ret;
}

void stream_reset(struct stream *s, uint8_t reason)
{
	struct frame f = { .type = FRAME_RST };

	if (!s->tunnel)
		return;
	f.stream_id = s->id;
	f.rst.reason = reason;
	tunnel_send(s->tunnel, &f);
	stream_detach(s);
}

/* ---- frames from the peer ---- */

static void message_copy(char *dst, size_t cap, const struct frame_str *m)
{
	size_t n = MIN(m->len, cap - 1);

	memcpy(dst, m->ptr, n);
	dst[n] = '\0';
}

static void count_received(struct stream *s, size_t n)
{
	s->recv_unreturned += (uint32_t)n;
	if (!s->starved &&
	    s->recv_window - s->recv_unreturned < s->recv_window / STREAM_WINDOW_STARVED_DIVISOR) {
		s->starved = true;
		s->starved_at = stream_clock((uint32_t)now_us());
	}
	s->bytes_received += n;
	for (size_t i = 0; i < STREAM_COUNTS; i++)
		if (s->count_received[i])
			__atomic_fetch_add(s->count_received[i], n, __ATOMIC_RELAXED);
}

uint8_t *stream_data_buffer(struct tunnel *t, uint32_t id, size_t n, struct stream **sp)
{
	struct stream *s = id ? stream_find(t, id) : NULL;

	/* what stream_handle_frame accepts for DATA, and nothing else */
	if (!s || !s->ops->data_buffer || !s->open || s->fin_received ||
	    n > s->recv_window - s->recv_unreturned)
		return NULL;
	*sp = s;
	return s->ops->data_buffer(s, n);
}

void stream_data_written(struct stream *s, size_t n)
{
	count_received(s, n);
	if (s->ops->data_written(s, n) < 0)
		stream_reset(s, FRAME_OPEN_GENERAL);
}

int stream_handle_frame(struct tunnel *t, const struct frame *f, const char **why)
{
	struct stream *s;
	char msg[FRAME_MAX_TEXT_LEN + 1];

	if (f->stream_id == 0)
		return 0; /* tunnel-level WINDOW: no meaning in v1 */
	s = stream_find(t, f->stream_id);
	if (!s)
		return 0; /* raced with our RST or OPEN_FAIL: drop */
	switch (f->type) {
	case FRAME_OPEN_OK:
		if (s->open || !s->ops->on_open_result) {
			*why = "unexpected OPEN_OK";
			return -EPROTO;
		}
		s->open = true;
		s->send_credit = f->open_ok.window;
		s->ops->on_open_result(s, 0, "");
		return 0;
	case FRAME_OPEN_FAIL:
		if (s->open || !s->ops->on_open_result) {
			*why = "unexpected OPEN_FAIL";
			return -EPROTO;
		}
		message_copy(msg, sizeof(msg), &f->open_fail.message);
		stream_detach(s);
		s->ops->on_open_result(
			s, f->open_fail.reason ? f->open_fail.reason : FRAME_OPEN_GENERAL, msg);
		return 0;
	case FRAME_DATA:
		if (!s->open || s->fin_received) {
			*why = s->fin_received ? "DATA after FIN" : "DATA before OPEN_OK";
			return -EPROTO;
		}
		if (f->data.len > s->recv_window - s->recv_unreturned) {
			*why = "DATA beyond the granted window";
			return -EPROTO;
		}
		count_received(s, f->data.len);
		if (s->ops->on_data(s, f->data.ptr, f->data.len) < 0)
			stream_reset(s, FRAME_OPEN_GENERAL);
		return 0;
	case FRAME_WINDOW:
		if ((uint64_t)s->send_credit + f->window.increment > UINT32_MAX) {
			*why = "WINDOW overflows the credit";
			return -EPROTO;
		}
		s->send_credit += f->window.increment;
		if (s->waiting_writable && stream_send_room(s)) {
			unwait(s);
			s->ops->on_writable(s);
		}
		return 0;
	case FRAME_FIN:
		if (!s->open || s->fin_received) {
			*why = s->fin_received ? "second FIN" : "FIN before OPEN_OK";
			return -EPROTO;
		}
		s->fin_received = true;
		s->ops->on_fin(s);
		return 0;
	case FRAME_RST:
		stream_detach(s);
		s->ops->on_reset(s, f->rst.reason, "reset by peer");
		return 0;
	default:
		*why = "not a stream frame";
		return -EPROTO;
	}
}

void stream_tunnel_closed(struct tunnel *t, const char *why)
{
	struct stream_table *st = &t->streams;
	struct stream *s;

	/* A callback may detach (and free) any stream, but no stream joins a
	 * closing tunnel and the table does not shrink meanwhile: the slots
	 * before i stay empty and a backward shift never moves a stream into
	 * them, so one pass reaches every stream. */
	st->no_shrink = true;
	for (uint32_t i = 0; st->count && i <= st->mask; i++) {
		while (st->count && (s = st->slots[i])) {
			stream_detach(s);
			if (!s->open && s->ops->on_open_result)
				s->ops->on_open_result(s, FRAME_OPEN_GENERAL, why);
			else
				s->ops->on_reset(s, FRAME_OPEN_GENERAL, why);
		}
	}
	st->no_shrink = false;
}

void stream_tunnel_writable(struct tunnel *t)
{
	struct stream *s;

	/* Wake the streams waiting now, in order, each taken off the tunnel's
	 * own list just before its callback: a callback may detach, reset or
	 * re-queue any stream (itself or another) and the list stays whole.
	 * The list is always [marked at entry ...][queued since ...], because
	 * queueing appends and taking off clears the mark, so the round ends
	 * at the first unmarked head: a stream that queues itself again (or
	 * still lacks room) is not revisited here. */
	DL_FOREACH2(t->waiters, s, wait_next)
	s->wake_pending = true;
	while ((s = t->waiters) && s->wake_pending) {
		unwait(s);
		if (!stream_send_room(s)) {
			stream_want_writable(s);
			continue;
		}
		s->ops->on_writable(s);
		if (t->state == TUNNEL_CLOSING)
			return; /* the rest were reset by stream_tunnel_closed() */
	}
}
