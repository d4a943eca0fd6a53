/*
 * rle.c: the rle example method (examples/wasm-go/rle) written in C against
 * pagewire's Wasm plugin ABI v1 (sdk/ABI.md), to show the ABI needs nothing
 * from Go. Same payload format as the Go version, so the two interoperate:
 *
 *   le32 FNV-1a of the packet's raw pages, then runs: a control byte
 *   c < 128 is followed by c+1 literal bytes; c >= 128 by one byte
 *   repeated c-126 times (2..129).
 *
 * Build: make -C examples/wasm-c   (clang --target=wasm32-wasi, reactor)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT(name) __attribute__((export_name(name)))

/*
 * The host's watchdog (sdk/ABI.md, "Tiers"): returns while the call is
 * within its deadline, aborts it otherwise. This module imports nothing
 * from WASI, so it runs in the fast tier, where these calls are the only
 * points at which an overlong call can be stopped: make one every page.
 */
__attribute__((import_module("pagewire"), import_name("check"))) void check(void);

enum { CODE_CORRUPT = -1, CODE_ARGUMENT = -2, CODE_MEMORY = -3 };

static int32_t role, page_size, packet_pages;
static const char *last_error = "";

/* info: le32 flag, u8 raw, u8 name length, name */
static const uint8_t info[] = {0x3a, 0, 0, 0, 0, 3, 'r', 'l', 'e'};

static uint64_t ptr_len(const void *p, uint32_t n) {
	return ((uint64_t)(uintptr_t)p << 32) | n;
}

EXPORT("pagewire_abi_version") int32_t abi_version(void) { return 1; }

EXPORT("pagewire_info") uint64_t method_info(void) { return ptr_len(info, sizeof info); }

EXPORT("pagewire_last_error") uint64_t error_message(void) {
	return ptr_len(last_error, (uint32_t)strlen(last_error));
}

EXPORT("pagewire_alloc") uint32_t alloc(int32_t size) {
	return size > 0 ? (uint32_t)(uintptr_t)malloc((size_t)size) : 0;
}

static int32_t fail(int32_t code, const char *msg) {
	last_error = msg;
	return code;
}

EXPORT("pagewire_setup")
int32_t setup(int32_t r, int32_t channel, int32_t level, int32_t ps, int32_t pp) {
	(void)channel;
	(void)level;
	if ((r != 1 && r != 2) || ps <= 0 || pp <= 0)
		return fail(CODE_ARGUMENT, "setup: bad role, page size or packet size");
	role = r;
	page_size = ps;
	packet_pages = pp;
	return 0;
}

static uint32_t fnv1a(const uint8_t *p, size_t n) {
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 16777619u;
	}
	return h;
}

EXPORT("pagewire_prepare")
int32_t prepare(uint8_t *pages, int32_t npages, uint8_t *out, int32_t cap) {
	if (role != 1 || npages <= 0 || npages > packet_pages || cap < 4)
		return fail(CODE_ARGUMENT, "prepare: bad arguments");
	size_t total = (size_t)npages * (size_t)page_size, o = 4;
	uint32_t sum = fnv1a(pages, total);
	memcpy(out, &sum, 4); /* wasm is little-endian */
	for (int32_t pg = 0; pg < npages; pg++) {
		check();
		const uint8_t *src = pages + (size_t)pg * (size_t)page_size;
		size_t n = (size_t)page_size;
		for (size_t i = 0; i < n;) {
			size_t run = 1;
			while (i + run < n && run < 129 && src[i + run] == src[i])
				run++;
			if (run >= 2) {
				if (o + 2 > (size_t)cap)
					return fail(CODE_MEMORY, "prepare: output buffer too small");
				out[o++] = (uint8_t)(run + 126);
				out[o++] = src[i];
				i += run;
				continue;
			}
			size_t j = i + 1;
			while (j < n && j - i < 128 && !(j + 1 < n && src[j] == src[j + 1]))
				j++;
			if (o + 1 + (j - i) > (size_t)cap)
				return fail(CODE_MEMORY, "prepare: output buffer too small");
			out[o++] = (uint8_t)(j - i - 1);
			memcpy(out + o, src + i, j - i);
			o += j - i;
			i = j;
		}
	}
	return (int32_t)o;
}

EXPORT("pagewire_recv")
int32_t recv(const uint8_t *in, int32_t in_len, uint8_t *pages, int32_t npages) {
	if (role != 2 || npages <= 0 || npages > packet_pages || in_len < 0)
		return fail(CODE_ARGUMENT, "recv: bad arguments");
	if (in_len < 4)
		return fail(CODE_CORRUPT, "recv: payload too short");
	size_t total = (size_t)npages * (size_t)page_size, n = 0, i = 4;
	uint32_t sum;
	memcpy(&sum, in, 4);
	for (size_t next = 0; n < total;) {
		if (n >= next) {
			check();
			next = n + (size_t)page_size;
		}
		if (i >= (size_t)in_len)
			return fail(CODE_CORRUPT, "recv: payload ends before the pages");
		unsigned c = in[i];
		if (c < 128) {
			size_t lit = c + 1;
			if (i + 1 + lit > (size_t)in_len || n + lit > total)
				return fail(CODE_CORRUPT, "recv: literal run overflows");
			memcpy(pages + n, in + i + 1, lit);
			n += lit;
			i += 1 + lit;
		} else {
			size_t run = c - 126;
			if (i + 2 > (size_t)in_len || n + run > total)
				return fail(CODE_CORRUPT, "recv: repeat run overflows");
			memset(pages + n, in[i + 1], run);
			n += run;
			i += 2;
		}
	}
	if (i != (size_t)in_len)
		return fail(CODE_CORRUPT, "recv: bytes after the last page");
	if (fnv1a(pages, total) != sum)
		return fail(CODE_CORRUPT, "recv: checksum mismatch");
	return 0;
}

EXPORT("pagewire_cleanup") int32_t cleanup(void) { return 0; }
