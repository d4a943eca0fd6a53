/*
 * deaf.c: a plugin that imports nothing at all, not even pagewire.check,
 * whose calls loop forever: prepare answers its first packet (a payload
 * of one byte) and spins from the second on; recv spins at once. It could
 * not be stopped without wazero's per-loop checks, so the host must run
 * it in the checked tier, where a deadline or a signal stops it anywhere
 * (issue 16, fault 5: a fast-tier prepare that looped made the process
 * deaf to SIGTERM and SIGINT).
 */
#define PW_FLAG 0x30
#define PW_NAME "deaf"
#include "pagewire.h"

static volatile uint64_t sink;
static int32_t packets;

static int32_t spin(void) {
	for (uint64_t i = 0;; i++)
		sink += i;
	return 0;
}

PW_EXPORT("pagewire_setup")
int32_t setup(int32_t r, int32_t channel, int32_t level, int32_t ps, int32_t pp) {
	(void)channel, (void)level;
	return pw_setup(r, ps, pp);
}

PW_EXPORT("pagewire_prepare")
int32_t prepare(const uint8_t *pages, int32_t npages, uint8_t *out, int32_t cap) {
	(void)pages, (void)npages;
	if (packets++ > 0)
		return spin();
	if (cap < 1)
		return pw_fail(PW_OTHER, "deaf: no room for one byte", 0);
	out[0] = 0;
	return 1;
}

PW_EXPORT("pagewire_recv")
int32_t recv(const uint8_t *payload, int32_t len, uint8_t *pages, int32_t npages) {
	(void)payload, (void)len, (void)pages, (void)npages;
	return spin();
}

PW_EXPORT("pagewire_cleanup") int32_t cleanup(void) { return 0; }
