// SPDX-License-Identifier: GPL-2.0
/*
 * recycle: a test subject of uffdgate's VM tests (from an attack on the exec
 * records). It gets an exec record whose (dev, ino) names a file that no longer
 * exists, so that a file created later with the same numbers (an allowed binary
 * on a file system mounted later) could be taken for what this process exec'd;
 * the inode generation in the record must keep that from happening.
 *
 *   recycle UID DIR [BURN]     (run as root; drops to UID at once)
 *
 * Stage 1: as UID, in a new user + mount namespace, mount a tmpfs on DIR (it
 * gets the lowest free anonymous dev number), burn BURN inode numbers, copy
 * this program there and exec it. The exec tracker records (tmpfs dev, ino).
 * Stage 2 (running from the tmpfs): copy the code that follows to anonymous
 * memory, unmap the executable, repoint mm->exe_file at /uffdtry (dropping the
 * last reference to the tmpfs file), umount the tmpfs: its dev number is free
 * again. Print "ready" on stderr, wait for a line on stdin, then ask for a
 * kernel-fault context through /dev/userfaultfd and print
 * "forged=N umount=N uffd=N" (raw syscall results; uffd >= 0 is a new context).
 */
#define _GNU_SOURCE
#include "../exeforge/forge.h"
#include <sys/mount.h>

struct forge {
	long nranges;
	unsigned long start[MAX_RANGES], len[MAX_RANGES];
	struct prctl_mm_map map;
	long devfd, exefd;
	long forged, umounted, uffd;
	long flood; /* > 0: make this many requests (flood mode), no umount, no wait */
	char dir[256];
	char ready[8];
	char buf[8];
	char out[128];
};

static void die(const char *what)
{
	fprintf(stderr, "error: %s: %s\n", what, strerror(errno));
	exit(1);
}

static inline __attribute__((always_inline)) volatile char *put_num(volatile char *p, long v)
{
	char tmp[24];
	int n = 0;

	if (v < 0) {
		*p++ = '-';
		v = -v;
	}
	do {
		tmp[n++] = '0' + v % 10;
		v /= 10;
	} while (v && n < 23);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}

__attribute__((noinline, used, section("forge_text"))) void forge_run(struct forge *f)
{
	volatile char *p; /* volatile: no constant pools in .rodata, which is unmapped by then */

	for (long i = 0; i < f->nranges; i++)
		sys3(SYS_munmap, f->start[i], f->len[i], 0);
	f->forged = sys5(SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, (long)&f->map, sizeof(f->map), 0);
	sys3(SYS_close, f->exefd, 0, 0);
	if (f->flood > 0) {
		f->umounted = 0;
		for (long i = 0; i < f->flood; i++) {
			f->uffd = sys3(SYS_ioctl, f->devfd, USERFAULTFD_IOC_NEW, O_CLOEXEC);
			if (f->uffd >= 0)
				sys3(SYS_close, f->uffd, 0, 0);
		}
	} else {
		f->umounted = sys3(SYS_umount2, (long)f->dir, MNT_DETACH, 0);
		sys3(SYS_write, 2, (long)f->ready, 6);
		sys3(SYS_read, 0, (long)f->buf, 1);
		f->uffd = sys3(SYS_ioctl, f->devfd, USERFAULTFD_IOC_NEW, O_CLOEXEC);
	}
	p = f->out;
	*p++ = 'f'; *p++ = 'o'; *p++ = 'r'; *p++ = 'g'; *p++ = 'e'; *p++ = 'd'; *p++ = '=';
	p = put_num(p, f->forged);
	*p++ = ' '; *p++ = 'u'; *p++ = 'm'; *p++ = 'o'; *p++ = 'u'; *p++ = 'n'; *p++ = 't'; *p++ = '=';
	p = put_num(p, f->umounted);
	*p++ = ' '; *p++ = 'u'; *p++ = 'f'; *p++ = 'f'; *p++ = 'd'; *p++ = '=';
	p = put_num(p, f->uffd);
	*p++ = '\n';
	sys3(SYS_write, 1, (long)f->out, (long)(p - (volatile char *)f->out));
	sys3(SYS_exit_group, 0, 0, 0);
}

static void write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);

	if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		die(path);
	close(fd);
}

static int stage1(int uid, const char *dir, int burn)
{
	char path[512], map[64];
	struct stat st;
	int in, out;
	ssize_t n;
	char buf[65536];

	if (setgroups(0, NULL) || setgid(uid) || setuid(uid))
		die("dropping privileges");
	prctl(PR_SET_DUMPABLE, 1); /* /proc/self/{setgroups,uid_map} are ours again */
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS))
		die("unshare");
	write_file("/proc/self/setgroups", "deny");
	snprintf(map, sizeof(map), "0 %d 1", uid);
	write_file("/proc/self/uid_map", map);
	write_file("/proc/self/gid_map", map);
	mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL);
	if (mount("tmpfs", dir, "tmpfs", 0, NULL))
		die("mount tmpfs");
	for (int i = 0; i < burn; i++) {
		snprintf(path, sizeof(path), "%s/burn", dir);
		int fd = open(path, O_CREAT | O_WRONLY, 0600);
		if (fd < 0)
			die("burn");
		close(fd);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/payload", dir);
	in = open("/proc/self/exe", O_RDONLY);
	out = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0755);
	if (in < 0 || out < 0)
		die("copying myself");
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, n) != n)
			die("write");
	close(in);
	close(out);
	if (stat(path, &st))
		die("stat payload");
	fprintf(stderr, "staged dev=%u:%u ino=%lu\n", major(st.st_dev), minor(st.st_dev), (unsigned long)st.st_ino);
	if (chdir("/"))
		die("chdir");
	execl(path, "payload", "stage2", dir, (char *)NULL);
	die("exec payload");
	return 1;
}

/* forge_alloc maps the shared state and an anonymous copy of forge_run. */
static struct forge *forge_alloc(void **code)
{
	size_t code_len = __stop_forge_text - __start_forge_text;
	struct forge *f = mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	*code = mmap(NULL, code_len, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (f == MAP_FAILED || *code == MAP_FAILED)
		die("mmap");
	memcpy(*code, __start_forge_text, code_len);
	return f;
}

static int stage2(const char *dir)
{
	void *code;
	struct forge *f = forge_alloc(&code);

	f->devfd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (f->devfd < 0)
		die("open /dev/userfaultfd");
	f->exefd = open("/uffdtry", O_RDONLY | O_CLOEXEC);
	if (f->exefd < 0)
		die("open /uffdtry");
	snprintf(f->dir, sizeof(f->dir), "%s", dir);
	memcpy(f->ready, "ready\n", 6);
	self_ranges(&f->nranges, f->start, f->len);
	stat_fields(&f->map);
	f->map.exe_fd = f->exefd;
	fflush(NULL);
	((void (*)(struct forge *))code)(f);
	return 3;
}

/* flood UID TARGET COUNT: pose as TARGET (exe link) and make COUNT refused
 * requests (another user's budget must stay untouched). */
static int flood(int uid, const char *target, long count)
{
	void *code;
	struct forge *f = forge_alloc(&code);

	if (setgroups(0, NULL) || setgid(uid) || setuid(uid))
		die("dropping privileges");
	f->devfd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	f->exefd = open(target, O_RDONLY | O_CLOEXEC);
	if (f->devfd < 0 || f->exefd < 0)
		die("open");
	if (unshare(CLONE_NEWUSER))
		die("unshare");
	f->flood = count;
	self_ranges(&f->nranges, f->start, f->len);
	stat_fields(&f->map);
	f->map.exe_fd = f->exefd;
	fprintf(stderr, "flooding pid=%d\n", getpid());
	fflush(NULL);
	((void (*)(struct forge *))code)(f);
	return 3;
}

/* fs UID mkdir|symlink|rename A [B]: a file operation as UID. */
static int fsop(int uid, const char *op, const char *a, const char *b)
{
	int r = -1;

	if (setgroups(0, NULL) || setgid(uid) || setuid(uid))
		die("dropping privileges");
	if (strcmp(op, "mkdir") == 0)
		r = mkdir(a, 0755);
	else if (strcmp(op, "symlink") == 0 && b)
		r = symlink(a, b);
	else if (strcmp(op, "rename") == 0 && b)
		r = rename(a, b);
	if (r)
		die(op);
	return 0;
}

int main(int argc, char **argv)
{
	if ((argc == 5 || argc == 6) && strcmp(argv[1], "fs") == 0)
		return fsop(atoi(argv[2]), argv[3], argv[4], argc == 6 ? argv[5] : NULL);
	if (argc == 5 && strcmp(argv[1], "flood") == 0)
		return flood(atoi(argv[2]), argv[3], atol(argv[4]));
	if (argc == 3 && strcmp(argv[1], "stage2") == 0)
		return stage2(argv[2]);
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: recycle UID DIR [BURN]\n");
		return 2;
	}
	return stage1(atoi(argv[1]), argv[2], argc == 4 ? atoi(argv[3]) : 0);
}
