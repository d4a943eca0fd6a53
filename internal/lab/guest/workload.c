//go:build ignore

// (The constraint above keeps the go tool from taking this file for cgo
// source: it is compiled by BuildWorkload, with gcc -static.)

/*
 * workload: the migration lab's guest workload. The initramfs's /init runs
 * it (parameters from the kernel command line, see guest.go); the tests
 * also run it on the host. It fills memory, prints PAGEWIRE-READY, then
 * dirties that memory at a set rate and prints its own progress every
 * second, so a harness can see what the guest achieved while it was being
 * migrated.
 *
 *   --work idle|records|records-random|pages   (default records)
 *   --mem MiB       memory to allocate and fill (default 512)
 *   --rate N        updates per second (default 20000; idle: ignored).
 *                   pages too: 20000 random pages of 512 MiB a second
 *                   dirty as many pages as 20000 record updates (~18600
 *                   distinct pages), only their content differs; in TCG
 *                   that is ~7% of what a vCPU can do (~300000 pages/s)
 *   --record BYTES  record size (default 64)
 *   --update BYTES  bytes rewritten per update (default 8, <= --record)
 *   --cache MiB     idle only: MiB of files written to --cache-dir, i.e.
 *                   page cache on the initramfs's tmpfs/ramfs (default 64)
 *   --cache-dir DIR (default /pw-cache)
 *   --seed N        PRNG seed (default: from the clock and the pid)
 *   --dump FILE     fill, write the filled memory to FILE and exit (tests)
 *
 * Fill (mmap'd with MAP_POPULATE, every page touched, every byte written):
 * idle and records fill with 64-byte table rows (zstd: ~4.6x on the whole,
 * ~3.4x page by page); records-random and pages with xoshiro256** bytes
 * (incompressible). A 512 MiB fill takes ~1.3-2 s in a TCG guest.
 * Updates: records and records-random overwrite --update random bytes at a
 * random offset of a random record; pages rewrites one random 4 KiB page
 * with random bytes; idle rewrites nothing.
 *
 * Pacing: every ~1 ms the updates due since the last batch are done (at
 * most 2 ms of them per batch), then it sleeps (clock_nanosleep) to the
 * next millisecond. At most 50 ms of updates are owed: after a stop
 * (migration downtime) it does not burst to catch up, and when the CPU
 * cannot keep up the achieved rate is what it can do.
 *
 * Output (stdout, flushed per line):
 *   PW-WORKLOAD work=... mem=... rate=... record=... update=... seed=...
 *   PW-FILL secs=<fill time>            (PW-CACHE mib=... secs=... for idle)
 *   PAGEWIRE-READY
 *   PW-PROGRESS t=<s since ready, 3 decimals> updates=<total> rate=<per s>
 * every second of the monotonic clock after READY; rate is the updates
 * since the previous line divided by the seconds since it (so exactly the
 * updates of the last second, except after a gap: missed seconds are not
 * printed, a gap in t shows the guest was stopped).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define NSEC 1000000000LL

enum kind { IDLE, RECORDS, RECORDS_RANDOM, PAGES };
static const char *const kinds[] = {"idle", "records", "records-random", "pages"};

/* xoshiro256** seeded with splitmix64. */
static uint64_t rs[4];

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t rnd(void)
{
	uint64_t r = rotl(rs[1] * 5, 7) * 9, t = rs[1] << 17;
	rs[2] ^= rs[0];
	rs[3] ^= rs[1];
	rs[1] ^= rs[2];
	rs[0] ^= rs[3];
	rs[2] ^= t;
	rs[3] = rotl(rs[3], 45);
	return r;
}

/* rnd_below returns a random number in [0, n). */
static inline uint64_t rnd_below(uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rnd() * n) >> 64);
}

static void rnd_bytes(unsigned char *p, size_t n)
{
	for (; n >= 8; p += 8, n -= 8) {
		uint64_t r = rnd();
		memcpy(p, &r, 8);
	}
	if (n > 0) {
		uint64_t r = rnd();
		memcpy(p, &r, n);
	}
}

static int64_t mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * NSEC + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
	struct timespec ts = {.tv_sec = t / NSEC, .tv_nsec = t % NSEC};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
	}
}

static void die(const char *msg)
{
	fprintf(stderr, "workload: %s\n", msg);
	exit(2);
}

static void die_errno(const char *what)
{
	fprintf(stderr, "workload: %s: %s\n", what, strerror(errno));
	exit(2);
}

/*
 * Table rows: a 64-byte row is
 *   0  u64 id          sequential
 *   8  u32 counter     random < 1024
 *   12 u16 status      1-4
 *   14 u16 column      which 64-byte row of the record (records > 64 bytes)
 *   16 u64 timestamp   increasing, in ms
 *   24 char name[16]   "First Last" from small lists, NUL-padded
 *   40 char city[12]   NUL-padded
 *   52 char cur[4]     currency code
 *   56 8 zero bytes    padding
 * A record of --record bytes is its rows end to end (the last one cut).
 */
static const char *const first[32] = {
    "Anna", "Ben", "Carla", "David", "Emma", "Felix", "Greta", "Hugo",
    "Ida", "Jonas", "Klara", "Lukas", "Mia", "Noah", "Olga", "Paul",
    "Rosa", "Simon", "Tina", "Uwe", "Vera", "Walter", "Xenia", "Yusuf",
    "Zoe", "Arne", "Berit", "Chen", "Dana", "Erik", "Fatma", "Gil",
};
static const char *const last[16] = {
    "Meyer", "Smith", "Garcia", "Rossi", "Novak", "Kim", "Dubois", "Silva",
    "Jensen", "Kowal", "Haddad", "Sato", "Olsen", "Brown", "Weber", "Costa",
};
static const char *const cities[16] = {
    "Berlin", "Paris", "Madrid", "Rome", "Vienna", "Prague", "Oslo", "Lisbon",
    "Dublin", "Athens", "Warsaw", "Zurich", "Helsinki", "Riga", "Sofia", "Porto",
};
static const char *const currencies[4] = {"EUR", "USD", "GBP", "CHF"};

static char names[32 * 16][16];

static void init_tables(void)
{
	for (int i = 0; i < 32; i++)
		for (int j = 0; j < 16; j++) {
			char *n = names[i * 16 + j];
			memset(n, 0, 16);
			snprintf(n, 16, "%s %s", first[i], last[j]);
		}
}

static void make_row(unsigned char row[64], uint64_t id, uint16_t column, uint64_t *ts)
{
	uint64_t r = rnd();
	uint32_t counter = (uint32_t)(r & 1023);
	uint16_t status = (uint16_t)(1 + ((r >> 10) & 3));
	*ts += (r >> 12) & 15;
	const char *name = names[(r >> 16) & 511];
	const char *city = cities[(r >> 25) & 15];
	const char *cur = currencies[(r >> 29) & 3];
	memset(row, 0, 64);
	memcpy(row + 0, &id, 8);
	memcpy(row + 8, &counter, 4);
	memcpy(row + 12, &status, 2);
	memcpy(row + 14, &column, 2);
	memcpy(row + 16, ts, 8);
	memcpy(row + 24, name, 16);
	memcpy(row + 40, city, strlen(city)); /* at most 11 bytes */
	memcpy(row + 52, cur, 4);
}

static void fill_records(unsigned char *mem, size_t size, size_t record)
{
	uint64_t ts = 1700000000000ULL, id = 1;
	unsigned char row[64];
	for (size_t off = 0; off < size; off += record, id++) {
		size_t end = off + record < size ? off + record : size;
		uint16_t column = 0;
		for (size_t o = off; o < end; o += 64, column++) {
			make_row(row, id, column, &ts);
			memcpy(mem + o, row, end - o < 64 ? end - o : 64);
		}
	}
}

static void print_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void print_line(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

static long long parse_num(const char *opt, const char *s, long long lo, long long hi)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "workload: --%s %s: want a whole number in [%lld, %lld]\n", opt, s, lo, hi);
		exit(2);
	}
	return v;
}

/* write_cache writes mib MiB of files to dir (page cache on a tmpfs),
 * 4 MiB each, their content cycled from mem. */
static void write_cache(const char *dir, long long mib, const unsigned char *mem, size_t size)
{
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		die_errno(dir);
	const size_t chunk = 4 << 20;
	size_t left = (size_t)mib << 20, src = 0;
	for (int i = 0; left > 0; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/cache-%03d", dir, i);
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			die_errno(path);
		size_t n = left < chunk ? left : chunk;
		left -= n;
		while (n > 0) {
			if (src >= size)
				src = 0;
			size_t w = size - src < n ? size - src : n;
			if (w > 1 << 20)
				w = 1 << 20;
			ssize_t k = write(fd, mem + src, w);
			if (k < 0) {
				if (errno == EINTR)
					continue;
				die_errno(path);
			}
			src += (size_t)k;
			n -= (size_t)k;
		}
		if (close(fd) != 0)
			die_errno(path);
	}
}

int main(int argc, char **argv)
{
	enum kind work = RECORDS;
	long long mem_mib = 512, rate = -1, record = 64, update = 8, cache_mib = 64;
	const char *cache_dir = "/pw-cache", *dump = NULL;
	uint64_t seed = 0;
	int have_seed = 0;

	static const struct option opts[] = {
	    {"work", required_argument, 0, 'w'},
	    {"mem", required_argument, 0, 'm'},
	    {"rate", required_argument, 0, 'r'},
	    {"record", required_argument, 0, 'R'},
	    {"update", required_argument, 0, 'u'},
	    {"cache", required_argument, 0, 'c'},
	    {"cache-dir", required_argument, 0, 'C'},
	    {"seed", required_argument, 0, 's'},
	    {"dump", required_argument, 0, 'd'},
	    {0, 0, 0, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'w': {
			int found = 0;
			for (int i = 0; i < 4; i++)
				if (strcmp(optarg, kinds[i]) == 0) {
					work = (enum kind)i;
					found = 1;
				}
			if (!found) {
				fprintf(stderr, "workload: --work %s: want idle, records, records-random or pages\n", optarg);
				return 2;
			}
			break;
		}
		case 'm':
			mem_mib = parse_num("mem", optarg, 1, 1 << 20);
			break;
		case 'r':
			rate = parse_num("rate", optarg, 0, 1000000000);
			break;
		case 'R':
			record = parse_num("record", optarg, 1, 1 << 30);
			break;
		case 'u':
			update = parse_num("update", optarg, 1, 1 << 30);
			break;
		case 'c':
			cache_mib = parse_num("cache", optarg, 0, 1 << 20);
			break;
		case 'C':
			cache_dir = optarg;
			break;
		case 's':
			seed = (uint64_t)parse_num("seed", optarg, 0, INT64_MAX);
			have_seed = 1;
			break;
		case 'd':
			dump = optarg;
			break;
		default:
			fprintf(stderr, "usage: workload [--work idle|records|records-random|pages] [--mem MiB] [--rate N] "
			                "[--record BYTES] [--update BYTES] [--cache MiB] [--cache-dir DIR] [--seed N] [--dump FILE]\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "workload: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	if (rate < 0)
		rate = 20000;
	if (work == IDLE)
		rate = 0;
	size_t size = (size_t)mem_mib << 20;
	if ((size_t)record > size)
		die("--record is larger than --mem");
	if (update > record)
		die("--update is larger than --record");
	if (!have_seed)
		seed = (uint64_t)mono() ^ ((uint64_t)getpid() << 32);
	uint64_t sm = seed;
	for (int i = 0; i < 4; i++)
		rs[i] = splitmix64(&sm);
	init_tables();
	print_line("PW-WORKLOAD work=%s mem=%lld rate=%lld record=%lld update=%lld seed=%" PRIu64 "\n",
	           kinds[work], mem_mib, rate, record, update, seed);

	int64_t t = mono();
	unsigned char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (mem == MAP_FAILED)
		die_errno("mmap");
	for (size_t o = 0; o < size; o += PAGE) /* touch every page */
		mem[o] = 1;
	if (work == IDLE || work == RECORDS)
		fill_records(mem, size, (size_t)record);
	else
		rnd_bytes(mem, size);
	print_line("PW-FILL secs=%.3f\n", (double)(mono() - t) / NSEC);

	if (dump != NULL) {
		FILE *f = fopen(dump, "wb");
		if (f == NULL || fwrite(mem, 1, size, f) != size || fclose(f) != 0)
			die_errno(dump);
		return 0;
	}
	if (work == IDLE && cache_mib > 0) {
		t = mono();
		write_cache(cache_dir, cache_mib, mem, size);
		print_line("PW-CACHE mib=%lld secs=%.3f\n", cache_mib, (double)(mono() - t) / NSEC);
	}

	print_line("PAGEWIRE-READY\n");
	const int64_t t0 = mono();
	const size_t nrec = size / (size_t)record, npages = size / PAGE;
	const double per_ns = (double)rate / NSEC, max_owed = (double)rate * 0.05 + 1;
	const uint64_t batch_max = (uint64_t)rate / 500 + 1;
	double owed = 0;
	uint64_t total = 0, reported = 0;
	int64_t last = t0, next_tick = t0, next_report = t0 + NSEC, last_report = t0;
	for (;;) {
		int64_t now = mono();
		if (work != IDLE && rate > 0) {
			owed += (double)(now - last) * per_ns;
			if (owed > max_owed)
				owed = max_owed;
			last = now;
			/* at most 2 ms of updates per batch, so that the clock is
			 * read often even when the CPU cannot keep up */
			uint64_t n = (uint64_t)owed;
			if (n > batch_max)
				n = batch_max;
			owed -= (double)n;
			if (work == PAGES) {
				for (uint64_t i = 0; i < n; i++)
					rnd_bytes(mem + rnd_below(npages) * PAGE, PAGE);
			} else {
				for (uint64_t i = 0; i < n; i++) {
					size_t off = rnd_below(nrec) * (size_t)record + rnd_below((uint64_t)(record - update + 1));
					rnd_bytes(mem + off, (size_t)update);
				}
			}
			total += n;
			now = mono();
		}
		if (now >= next_report) {
			double secs = (double)(now - last_report) / NSEC;
			print_line("PW-PROGRESS t=%.3f updates=%" PRIu64 " rate=%.0f\n", (double)(now - t0) / NSEC, total,
			           (double)(total - reported) / secs);
			reported = total;
			last_report = now;
			next_report += NSEC;
			if (next_report <= now) /* stopped for a while: skip the missed seconds */
				next_report = now - (now - t0) % NSEC + NSEC;
		}
		if (work == IDLE || rate == 0) {
			sleep_until(next_report);
			continue;
		}
		next_tick += NSEC / 1000;
		if (next_tick < now - NSEC / 1000) /* behind: owed is capped, do not race to catch up */
			next_tick = now;
		if (next_tick > now)
			sleep_until(next_tick < next_report ? next_tick : next_report);
	}
}
