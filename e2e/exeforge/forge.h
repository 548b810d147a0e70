/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What uffdgate's forging test subjects (exeforge, recycle) share: raw syscalls
 * for the code that runs once the program's own executable is unmapped, and the
 * values prctl(PR_SET_MM_MAP) needs. Include after defining
 * `static void die(const char *what)`; the includer's struct forge has nranges,
 * start[], len[] and map.
 */
#ifndef UFFDGATE_FORGE_H
#define UFFDGATE_FORGE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/prctl.h>

static inline __attribute__((always_inline)) long sys3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return ret;
}

static inline __attribute__((always_inline)) long sys5(long nr, long a, long b, long c, long d, long e)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;

	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8) : "rcx", "r11", "memory");
	return ret;
}

extern char __start_forge_text[], __stop_forge_text[];

/* stat_fields reads /proc/self/stat fields 26-28 and 45-51 (proc(5)) into f->map. */
static void stat_fields(struct forge *f)
{
	char buf[4096], *p, *save = NULL;
	unsigned long v[52] = { 0 };
	FILE *s = fopen("/proc/self/stat", "r");
	int i = 3;

	if (!s || !fgets(buf, sizeof(buf), s))
		die("reading /proc/self/stat");
	fclose(s);
	p = strrchr(buf, ')'); /* comm (field 2) may hold spaces */
	if (!p)
		die("parsing /proc/self/stat");
	for (char *tok = strtok_r(p + 1, " \n", &save); tok && i <= 51; tok = strtok_r(NULL, " \n", &save), i++)
		v[i] = strtoul(tok, NULL, 10); /* field 3, the state letter, reads as 0 */
	if (i <= 51)
		die("parsing /proc/self/stat: too few fields");
	f->map.start_code = v[26];
	f->map.end_code = v[27];
	f->map.start_stack = v[28];
	f->map.start_data = v[45];
	f->map.end_data = v[46];
	f->map.start_brk = v[47];
	f->map.arg_start = v[48];
	f->map.arg_end = v[49];
	f->map.env_start = v[50];
	f->map.env_end = v[51];
	f->map.brk = (unsigned long)sbrk(0);
	f->map.auxv = NULL;
	f->map.auxv_size = 0;
}

/* self_ranges lists the mappings of this program's own executable. */
static void self_ranges(struct forge *f)
{
	struct stat self;
	char line[512];
	FILE *m;

	if (stat("/proc/self/exe", &self))
		die("stat /proc/self/exe");
	m = fopen("/proc/self/maps", "r");
	if (!m)
		die("opening /proc/self/maps");
	while (fgets(line, sizeof(line), m)) {
		unsigned long lo, hi, ino, maj, min;

		if (sscanf(line, "%lx-%lx %*s %*s %lx:%lx %lu", &lo, &hi, &maj, &min, &ino) != 5)
			continue;
		if (ino == self.st_ino && makedev(maj, min) == self.st_dev && f->nranges < MAX_RANGES) {
			f->start[f->nranges] = lo;
			f->len[f->nranges] = hi - lo;
			f->nranges++;
		}
	}
	fclose(m);
	if (f->nranges == 0)
		die("finding this program's own mappings");
}

#endif
