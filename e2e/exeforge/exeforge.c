// SPDX-License-Identifier: GPL-2.0
/*
 * exeforge: a test subject of uffdgate's VM tests that poses as another program.
 *
 * It switches to an unprivileged uid, creates a user namespace (which gives it
 * CAP_SYS_ADMIN there, all prctl(PR_SET_MM_MAP) asks for), unmaps its own
 * executable (the kernel refuses to replace mm->exe_file while the old one is
 * mapped), points mm->exe_file at TARGET, and then asks for a kernel-fault
 * userfaultfd context. /proc/PID/exe then names TARGET; an executable rule
 * allowing TARGET must still refuse it.
 *
 *   exeforge UID TARGET syscall|DEVICE-PATH [wait]
 *
 * With "wait", the forging child prints "ready" on stderr and waits for a line
 * on stdin before it forges: a process that already runs when uffdgate starts.
 *
 * Prints one JSON object: {"forged_errno":E1,"uffd_errno":E2,"pid":P}, where
 * forged_errno is prctl's (0: the exe link now names TARGET) and uffd_errno the
 * creation's (0: a kernel-fault context was created).
 *
 * C, not Go: the code that runs once the executable is unmapped must run from an
 * anonymous copy, in a process with a single thread.
 */
#define _GNU_SOURCE
#include "forge.h"
#include <sys/wait.h>

struct forge {
	long nranges;
	unsigned long start[MAX_RANGES], len[MAX_RANGES];
	struct prctl_mm_map map;
	long devfd; /* -1: the syscall */
	long forged, uffd;
	long done;
};

static void die(const char *what)
{
	printf("{\"error\":\"%s: %s\"}\n", what, strerror(errno));
	exit(1);
}

/*
 * Runs from an anonymous copy: no calls, no globals, only its argument. The
 * section gives its bounds (__start_/__stop_forge_text) for the copy.
 */
__attribute__((noinline, used, section("forge_text"))) void forge_run(struct forge *f)
{
	for (long i = 0; i < f->nranges; i++)
		sys3(SYS_munmap, f->start[i], f->len[i], 0);
	f->forged = sys5(SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, (long)&f->map, sizeof(f->map), 0);
	if (f->devfd >= 0)
		f->uffd = sys3(SYS_ioctl, f->devfd, USERFAULTFD_IOC_NEW, O_CLOEXEC);
	else
		f->uffd = sys3(SYS_userfaultfd, O_CLOEXEC, 0, 0);
	f->done = 1;
	sys3(SYS_exit_group, 0, 0, 0);
}


int main(int argc, char **argv)
{
	size_t code_len = __stop_forge_text - __start_forge_text;
	struct forge *f;
	void *code;
	pid_t pid;
	int status, exe_fd;

	if (argc != 4 && !(argc == 5 && strcmp(argv[4], "wait") == 0)) {
		fprintf(stderr, "usage: exeforge UID TARGET syscall|DEVICE-PATH [wait]\n");
		return 2;
	}
	f = mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	code = mmap(NULL, code_len, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (f == MAP_FAILED || code == MAP_FAILED)
		die("mmap");
	memcpy(code, __start_forge_text, code_len);
	f->forged = f->uffd = 1;
	f->devfd = -1;

	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		uid_t uid = atoi(argv[1]);

		if (setgroups(0, NULL) || setgid(uid) || setuid(uid))
			die("dropping privileges");
		exe_fd = open(argv[2], O_RDONLY | O_CLOEXEC);
		if (exe_fd < 0)
			die("opening the target");
		if (strcmp(argv[3], "syscall") != 0) {
			f->devfd = open(argv[3], O_RDWR | O_CLOEXEC);
			if (f->devfd < 0)
				die("opening the device");
		}
		if (unshare(CLONE_NEWUSER))
			die("unshare(CLONE_NEWUSER)");
		if (argc == 5) {
			char c;

			if (write(2, "ready\n", 6) != 6 || read(0, &c, 1) != 1)
				die("waiting for a line on stdin");
		}
		self_ranges(&f->nranges, f->start, f->len);
		stat_fields(&f->map);
		f->map.exe_fd = exe_fd;
		((void (*)(struct forge *))code)(f);
		_exit(3); /* not reached */
	}
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid");
	if (!f->done) {
		printf("{\"error\":\"the forging child did not finish (status 0x%x)\"}\n", status);
		return 1;
	}
	printf("{\"forged_errno\":%ld,\"uffd_errno\":%ld,\"pid\":%d}\n", f->forged < 0 ? -f->forged : f->forged,
	       f->uffd < 0 ? -f->uffd : 0, pid);
	return 0;
}
