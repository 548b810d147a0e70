//go:build linux && amd64

package uffd

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestExercise drives real contexts in this process: a user-mode-only one serves
// a user-mode fault and refuses the kernel-mode access with EFAULT; a kernel-fault
// one (root has CAP_SYS_PTRACE) serves the kernel-mode fault.
func TestExercise(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a kernel-fault context needs CAP_SYS_PTRACE: run as root")
	}
	const cloexec, umo = 0x80000, 0x1
	for _, c := range []struct {
		name         string
		flags        uint32
		userModeOnly bool
	}{{"user-mode-only", cloexec | umo, true}, {"kernel-fault", cloexec, false}} {
		t.Run(c.name, func(t *testing.T) {
			fd, err := Syscall(c.flags)
			if err != nil {
				t.Fatal(err)
			}
			// The handler thread stays blocked on fd: Exercise leaves it for a
			// short-lived process, and this test binary is one.
			res, err := Exercise(fd, c.userModeOnly)
			if err != nil {
				t.Fatal(err)
			}
			if c.userModeOnly {
				if !res.UserFaultServed || res.KernelAccessErrno != unix.EFAULT || res.KernelFaultServed {
					t.Errorf("user-mode-only context: %+v, want the user fault served and the kernel access refused with EFAULT", res)
				}
			} else if !res.KernelFaultServed || res.KernelAccessErrno != 0 || res.KernelAccessBytes != pageSize {
				t.Errorf("kernel-fault context: %+v, want the kernel access served (%d bytes)", res, pageSize)
			}
		})
	}
}

// TestExerciseNotAContext: a descriptor that is not a context fails at UFFDIO_API.
func TestExerciseNotAContext(t *testing.T) {
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Exercise(int(f.Fd()), true); err == nil {
		t.Fatal("Exercise on /dev/null succeeded")
	}
}
