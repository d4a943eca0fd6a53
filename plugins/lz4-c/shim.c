/*
 * lz4-c: pagewire's lz4 method (plugins/lz4) on the reference liblz4, as a
 * Wasm plugin (sdk/ABI.md), with the built-in method's wire format:
 *
 *   for every page, in order, a big-endian u32 header and the page's
 *   bytes. Bit 31 set: the page is stored as is (it did not compress) and
 *   the low bits equal the page size; clear: the low bits are the length
 *   of an LZ4 block that decodes to exactly one page.
 *
 * Level 0 is LZ4_compress_fast (acceleration 1), 1..9 are LZ4HC levels.
 * A page is stored when its block would not be shorter than the page, as
 * the built-in method decides. The compressed bytes need not equal the
 * built-in's (another match finder; on wasm32 liblz4 hashes 4 bytes), the
 * format is the same. Pages are processed in steps of 64 KiB with a call
 * to pagewire_check between steps.
 */
#define PW_FLAG 0x3c
#define PW_NAME "lz4"
#include "pagewire.h"

#define LZ4_HC_STATIC_LINKING_ONLY /* the _fastReset variants */
#include "lz4.h"
#include "lz4hc.h"

#define STORED 0x80000000u

static int32_t level;
static void *state; /* LZ4 or LZ4HC compression state, per channel */

PW_EXPORT("pagewire_setup")
int32_t setup(int32_t r, int32_t channel, int32_t lvl, int32_t ps, int32_t pp) {
	(void)channel;
	int32_t bad = pw_setup(r, ps, pp);
	if (bad != 0)
		return bad;
	if (r == PW_SEND) {
		if (lvl < 0 || lvl > 9)
			return pw_fail(PW_ARGUMENT, "setup: lz4 level outside 0 (fast) and 1..9", 0);
		level = lvl;
		/* Initialised once: the _fastReset calls below reset only what a
		   page needs, not the whole 16 KiB table per page. */
		if (level == 0) {
			state = malloc(sizeof(LZ4_stream_t));
			if (state != 0)
				LZ4_initStream(state, sizeof(LZ4_stream_t));
		} else {
			state = malloc(sizeof(LZ4_streamHC_t));
			if (state != 0)
				LZ4_initStreamHC(state, sizeof(LZ4_streamHC_t));
		}
		if (state == 0)
			return pw_fail(PW_MEMORY, "setup: no memory for the lz4 state", 0);
	}
	return 0;
}

static void put_be32(uint8_t *p, uint32_t v) {
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p) {
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

PW_EXPORT("pagewire_prepare")
int32_t prepare(const char *pages, int32_t npages, uint8_t *out, int32_t cap) {
	if (role != PW_SEND || npages <= 0 || npages > packet_pages || cap < 0)
		return pw_fail(PW_ARGUMENT, "prepare: bad arguments", 0);
	size_t o = 0, since = 0;
	for (int32_t i = 0; i < npages; i++) {
		const char *pg = pages + (size_t)i * (size_t)page_size;
		if ((size_t)cap - o < 4 + (size_t)page_size)
			return pw_fail(PW_MEMORY, "prepare: payload does not fit out_cap", 0);
		char *dst = (char *)out + o + 4;
		/* Room for one byte less than the page: a block that does not
		   fit is no shorter than the page, and the page is stored. */
		int n = level == 0 ? LZ4_compress_fast_extState_fastReset(state, pg, dst, page_size, page_size - 1, 1)
		                   : LZ4_compress_HC_extStateHC_fastReset(state, pg, dst, page_size, page_size - 1, level);
		if (n <= 0) {
			put_be32(out + o, STORED | (uint32_t)page_size);
			memcpy(dst, pg, (size_t)page_size);
			n = page_size;
		} else {
			put_be32(out + o, (uint32_t)n);
		}
		o += 4 + (size_t)n;
		since += (size_t)page_size;
		if (since >= PW_CHECK_EVERY) {
			pagewire_check();
			since = 0;
		}
	}
	return (int32_t)o;
}

PW_EXPORT("pagewire_recv")
int32_t recv(const uint8_t *payload, int32_t len, char *pages, int32_t npages) {
	if (role != PW_RECV || npages <= 0 || npages > packet_pages || len < 0)
		return pw_fail(PW_ARGUMENT, "recv: bad arguments", 0);
	size_t left = (size_t)len, since = 0;
	const uint8_t *p = payload;
	for (int32_t i = 0; i < npages; i++) {
		char *pg = pages + (size_t)i * (size_t)page_size;
		if (left < 4)
			return pw_fail(PW_CORRUPT, "payload ends before the packet's pages are complete", 0);
		uint32_t h = get_be32(p);
		uint32_t n = h & ~STORED;
		p += 4;
		left -= 4;
		if (n > left)
			return pw_fail(PW_CORRUPT, "a page's block runs past the payload", 0);
		if (h & STORED) {
			if (n != (uint32_t)page_size)
				return pw_fail(PW_CORRUPT, "a stored page is not one page long", 0);
			memcpy(pg, p, n);
		} else if (LZ4_decompress_safe((const char *)p, pg, (int)n, page_size) != page_size) {
			return pw_fail(PW_CORRUPT, "an lz4 block does not decode to exactly one page", 0);
		}
		p += n;
		left -= n;
		since += (size_t)page_size;
		if (since >= PW_CHECK_EVERY) {
			pagewire_check();
			since = 0;
		}
	}
	if (left != 0)
		return pw_fail(PW_CORRUPT, "bytes after the last page", 0);
	return 0;
}

PW_EXPORT("pagewire_cleanup") int32_t cleanup(void) {
	free(state);
	state = 0;
	return 0;
}
