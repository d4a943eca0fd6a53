/*
 * pagewire.h: the parts of Wasm plugin ABI v1 (sdk/ABI.md) every C shim in
 * plugins/ shares: exports that do not depend on the codec, error codes,
 * and the host's cooperative watchdog, pagewire.check.
 *
 * A shim defines PW_FLAG and PW_NAME before including this file.
 */
#ifndef PAGEWIRE_H
#define PAGEWIRE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PW_EXPORT(name) __attribute__((export_name(name)))

enum {
	PW_CORRUPT = -1,
	PW_ARGUMENT = -2,
	PW_MEMORY = -3,
	PW_OTHER = -4,
};

enum { PW_SEND = 1, PW_RECV = 2 };

/* How much work a shim does between two calls to pagewire_check. */
#define PW_CHECK_EVERY (64 << 10)

/*
 * pagewire_check returns if the current call is still within its deadline
 * and does not return at all otherwise: the host aborts the call there and
 * discards the instance. A module that imports it and nothing from WASI
 * runs in the host's fast tier, without per-loop checks, so this is the
 * only place it can be stopped.
 */
__attribute__((import_module("pagewire"), import_name("check"))) void pagewire_check(void);

static uint64_t pw_ptr_len(const void *p, uint32_t n) {
	return ((uint64_t)(uintptr_t)p << 32) | n;
}

/* info: le32 flag, u8 raw, u8 name length, name */
static const struct {
	uint8_t head[6];
	char name[sizeof PW_NAME - 1];
} pw_info = {{PW_FLAG & 0xff, 0, 0, 0, 0, sizeof PW_NAME - 1}, PW_NAME};

static char pw_msg[256];

static int32_t pw_fail(int32_t code, const char *msg, const char *detail) {
	if (detail == 0)
		detail = "";
	size_t n = strlen(msg), m = strlen(detail);
	if (n > sizeof pw_msg - 1)
		n = sizeof pw_msg - 1;
	memcpy(pw_msg, msg, n);
	if (m > sizeof pw_msg - 1 - n)
		m = sizeof pw_msg - 1 - n;
	memcpy(pw_msg + n, detail, m);
	pw_msg[n + m] = 0;
	return code;
}

/* The channel's geometry, set by pw_setup. */
static int32_t role, page_size, packet_pages;

/* pw_setup checks and keeps what pagewire_setup gets for every method. */
static int32_t pw_setup(int32_t r, int32_t ps, int32_t pp) {
	if ((r != PW_SEND && r != PW_RECV) || ps <= 0 || pp <= 0 || (int64_t)ps * pp > (1 << 30))
		return pw_fail(PW_ARGUMENT, "setup: bad role, page size or packet size", 0);
	role = r;
	page_size = ps;
	packet_pages = pp;
	return 0;
}

PW_EXPORT("pagewire_abi_version") int32_t pw_abi_version(void) { return 1; }

PW_EXPORT("pagewire_info") uint64_t pw_method_info(void) { return pw_ptr_len(&pw_info, sizeof pw_info); }

PW_EXPORT("pagewire_last_error") uint64_t pw_last_error(void) {
	return pw_ptr_len(pw_msg, (uint32_t)strlen(pw_msg));
}

PW_EXPORT("pagewire_alloc") uint32_t pw_alloc(int32_t size) {
	return size > 0 ? (uint32_t)(uintptr_t)malloc((size_t)size) : 0;
}

#endif
