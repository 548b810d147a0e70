// Command probe checks, inside a vmtest VM, that the guest has what the
// enforcement tests rely on. Usage: probe <kernel series>. Exits 1 if any
// check fails.
package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: probe <kernel series>")
		os.Exit(2)
	}
	failed := false
	check := func(name string, err error) {
		if err != nil {
			failed = true
			fmt.Printf("probe: FAIL %s: %v\n", name, err)
			return
		}
		fmt.Printf("probe: ok %s\n", name)
	}

	check("uname", checkUname(os.Args[1]))
	check("lsm has bpf", checkLSM())
	check("/sys/kernel/btf/vmlinux", statMode("/sys/kernel/btf/vmlinux", 0))
	check("/dev/userfaultfd", statMode("/dev/userfaultfd", unix.S_IFCHR))
	check("userfaultfd(UFFD_USER_MODE_ONLY)", checkUserfaultfd())
	check("x32 syscalls", checkX32())

	if failed {
		os.Exit(1)
	}
}

func checkUname(series string) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	rel := unix.ByteSliceToString(u.Release[:])
	fmt.Println("probe: release", rel)
	// The trailing dot keeps "6.1" from matching "6.12.x".
	if !strings.HasPrefix(rel, series+".") {
		return fmt.Errorf("release %q is not series %s", rel, series)
	}
	return nil
}

func checkLSM() error {
	b, err := os.ReadFile("/sys/kernel/security/lsm")
	if err != nil {
		return err
	}
	fmt.Println("probe: lsm", string(b))
	if !slices.Contains(strings.Split(strings.TrimSpace(string(b)), ","), "bpf") {
		return fmt.Errorf("bpf not in %q", b)
	}
	return nil
}

// statMode checks that p exists and, if typ != 0, has that file type.
func statMode(p string, typ uint32) error {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return err
	}
	if typ != 0 && st.Mode&unix.S_IFMT != typ {
		return fmt.Errorf("mode %#o, want type %#o", st.Mode, typ)
	}
	return nil
}

func checkUserfaultfd() error {
	const uffdUserModeOnly = 1
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, uffdUserModeOnly|unix.O_CLOEXEC, 0, 0)
	if errno != 0 {
		return errno
	}
	return unix.Close(int(fd))
}

// checkX32 issues getpid through the x32 syscall table, which Debian only
// enables with syscall.x32=y on the command line.
func checkX32() error {
	const x32Bit, x32Getpid = 0x40000000, 39
	pid, _, errno := unix.RawSyscall(x32Bit|x32Getpid, 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("x32 getpid: %v", errno)
	}
	if int(pid) != os.Getpid() {
		return fmt.Errorf("x32 getpid returned %d, want %d", pid, os.Getpid())
	}
	return nil
}
