/*
 * startloop.c: a fast-tier plugin (no WASI imports; it imports
 * pagewire.check, which its prepare calls) whose start function,
 * _initialize, never returns: a constructor spins forever without calling
 * check. The host must stop it at its deadline when
 * it loads the module, and a signal must still end the process.
 */
#define PW_FLAG 0x30
#define PW_NAME "startloop"
#include "pagewire.h"

static volatile uint64_t sink;

__attribute__((constructor)) static void spin(void) {
	for (uint64_t i = 0;; i++)
		sink += i;
}

PW_EXPORT("pagewire_setup")
int32_t setup(int32_t r, int32_t channel, int32_t level, int32_t ps, int32_t pp) {
	(void)channel, (void)level;
	return pw_setup(r, ps, pp);
}

PW_EXPORT("pagewire_prepare")
int32_t prepare(const uint8_t *pages, int32_t npages, uint8_t *out, int32_t cap) {
	(void)pages, (void)npages, (void)out, (void)cap;
	pagewire_check();
	return pw_fail(PW_OTHER, "startloop never gets this far", 0);
}

PW_EXPORT("pagewire_recv")
int32_t recv(const uint8_t *payload, int32_t len, uint8_t *pages, int32_t npages) {
	(void)payload, (void)len, (void)pages, (void)npages;
	return pw_fail(PW_OTHER, "startloop never gets this far", 0);
}

PW_EXPORT("pagewire_cleanup") int32_t cleanup(void) { return 0; }
