/*
 * spin.c: a fast-tier plugin (no WASI imports) whose prepare never returns
 * but calls pagewire.check as it spins, the way the C codecs do every
 * 64 KiB: the host's watchdog must stop it at its deadline.
 */
#define PW_FLAG 0x30
#define PW_NAME "spin"
#include "pagewire.h"

static volatile uint64_t sink;

PW_EXPORT("pagewire_setup")
int32_t setup(int32_t r, int32_t channel, int32_t level, int32_t ps, int32_t pp) {
	(void)channel, (void)level;
	return pw_setup(r, ps, pp);
}

PW_EXPORT("pagewire_prepare")
int32_t prepare(const uint8_t *pages, int32_t npages, uint8_t *out, int32_t cap) {
	(void)pages, (void)npages, (void)out, (void)cap;
	for (uint64_t i = 0;; i++) {
		sink += i;
		if (i % 4096 == 0)
			pagewire_check();
	}
}

PW_EXPORT("pagewire_recv")
int32_t recv(const uint8_t *payload, int32_t len, uint8_t *pages, int32_t npages) {
	(void)payload, (void)len, (void)pages, (void)npages;
	return pw_fail(PW_OTHER, "spin never sends anything to receive", 0);
}

PW_EXPORT("pagewire_cleanup") int32_t cleanup(void) { return 0; }
