/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What uffdgate's forging test subjects (exeforge, recycle) share: headers, raw
 * syscalls for the code that runs once the program's own executable is
 * unmapped, and the values prctl(PR_SET_MM_MAP) needs. Include first, after
 * _GNU_SOURCE; the includer defines die().
 */
#ifndef UFFDGATE_FORGE_H
#define UFFDGATE_FORGE_H

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/prctl.h>

#define MAX_RANGES 32
#define USERFAULTFD_IOC_NEW 0xAA00

static void die(const char *what);

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

/* stat_fields reads /proc/self/stat fields 26-28 and 45-51 (proc(5)) into map. */
static void stat_fields(struct prctl_mm_map *map)
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
	map->start_code = v[26];
	map->end_code = v[27];
	map->start_stack = v[28];
	map->start_data = v[45];
	map->end_data = v[46];
	map->start_brk = v[47];
	map->arg_start = v[48];
	map->arg_end = v[49];
	map->env_start = v[50];
	map->env_end = v[51];
	map->brk = (unsigned long)sbrk(0);
	map->auxv = NULL;
	map->auxv_size = 0;
}

/* self_ranges lists the mappings of this program's own executable (at most
 * MAX_RANGES) in start[] and len[], and their number in *n. */
static void self_ranges(long *n, unsigned long *start, unsigned long *len)
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
		if (ino == self.st_ino && makedev(maj, min) == self.st_dev && *n < MAX_RANGES) {
			start[*n] = lo;
			len[*n] = hi - lo;
			(*n)++;
		}
	}
	fclose(m);
	if (*n == 0)
		die("finding this program's own mappings");
}

#endif
