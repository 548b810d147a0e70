//go:build linux

package seccompfilter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Install applies the filter to the calling OS thread: PR_SET_NO_NEW_PRIVS, then
// seccomp(SECCOMP_SET_MODE_FILTER). It locks the calling goroutine to its thread
// for good, because the filter belongs to that thread only; the intended use is
// an execve from the same goroutine right after, which hands the filter to the
// new program and everything it starts. Other threads of a Go process stay
// unfiltered, so do not call Install in a process that goes on running Go code
// you rely on being filtered.
//
// With AllowKernelFaults nothing is installed: a filter that allows everything
// would still set no_new_privs (breaking setuid programs) and tax every syscall,
// for no effect.
//
// On error the thread may be left with no_new_privs set and no filter; the caller
// must not go on to execve.
func Install(o Options) error {
	if o.AllowKernelFaults {
		return nil
	}
	// Fail closed on machines the syscall numbers were not written for: there the
	// filter would allow everything (see Program).
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "386" {
		return fmt.Errorf("seccompfilter: the filter knows the x86 syscall ABIs only and this is %s: run uffdgate's BPF LSM gate instead", runtime.GOARCH)
	}
	raw, err := Assemble(o)
	if err != nil {
		return fmt.Errorf("seccompfilter: assembling the filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}

	runtime.LockOSThread() // never unlocked, see above
	// Without no_new_privs the kernel lets only CAP_SYS_ADMIN install a filter, and
	// it is what keeps a setuid program from running with a filter it did not expect.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccompfilter: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(filter)
	switch {
	case errno == unix.ENOSYS:
		return fmt.Errorf("seccompfilter: seccomp(SECCOMP_SET_MODE_FILTER): %w: this kernel has no seccomp(2); use `uffdgate harden` or the BPF LSM gate", errno)
	case errno == unix.EINVAL:
		return fmt.Errorf("seccompfilter: seccomp(SECCOMP_SET_MODE_FILTER): %w: the kernel lacks seccomp filters (CONFIG_SECCOMP_FILTER) or rejected the program; use `uffdgate harden` or the BPF LSM gate", errno)
	case errno != 0:
		return fmt.Errorf("seccompfilter: seccomp(SECCOMP_SET_MODE_FILTER): %w", errno)
	}
	// The kernel said yes; check that it says so for this very thread too, so a
	// refusal we never saw cannot leave the command unfiltered.
	st, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		return fmt.Errorf("seccompfilter: checking the filter is in place: %w", err)
	}
	if !bytes.Contains(st, []byte("\nSeccomp:\t2\n")) {
		return errors.New("seccompfilter: the kernel accepted the filter but /proc/thread-self/status does not show seccomp filter mode (Seccomp: 2) for this thread")
	}
	return nil
}
