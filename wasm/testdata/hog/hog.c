/*
 * hog.c: a fast-tier plugin whose setup grows its memory to about
 * 200 MiB in 1 MiB steps and touches all of it, as a method with a
 * large state may: the host must hold about that much per instance, not
 * twice it while the memory grows.
 */
#define PW_FLAG 0x32
#define PW_NAME "hog"
#include "pagewire.h"
#include <string.h>

PW_EXPORT("pagewire_setup")
int32_t setup(int32_t r, int32_t channel, int32_t level, int32_t ps, int32_t pp) {
	(void)channel, (void)level;
	for (int i = 0; i < 200; i++) {
		int32_t old = __builtin_wasm_memory_grow(0, 16);
		if (old < 0) break;
		memset((void *)((uintptr_t)old * 65536), 1, 16 * 65536);
	}
	return pw_setup(r, ps, pp);
}
PW_EXPORT("pagewire_prepare")
int32_t prepare(const uint8_t *pages, int32_t npages, uint8_t *out, int32_t cap) {
	(void)pages, (void)npages, (void)out, (void)cap;
	return 0;
}
PW_EXPORT("pagewire_recv")
int32_t recv(const uint8_t *payload, int32_t len, uint8_t *pages, int32_t npages) {
	(void)payload, (void)len, (void)pages, (void)npages;
	return 0;
}
PW_EXPORT("pagewire_cleanup") int32_t cleanup(void) { return 0; }
