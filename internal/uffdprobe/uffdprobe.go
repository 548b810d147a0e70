//go:build linux && amd64

// Package uffdprobe issues single syscalls named by short specs and reports the
// errno, so tests can run them inside a process under a seccomp filter and compare
// what the kernel answered. The specs:
//
//	userfaultfd:ARG  userfaultfd-ia32:ARG  userfaultfd-x32:ARG
//	    userfaultfd(ARG) through the 64-bit, i386 or x32 ABI
//	ioctl:ARG  ioctl-ia32:ARG  ioctl-x32:ARG
//	    USERFAULTFD_IOC_NEW with ARG on a fresh /dev/userfaultfd fd, through that ABI
//	ioctl-dev:CMD:ARG   ioctl(/dev/userfaultfd fd, CMD, ARG), 64-bit, full registers
//	ioctl-null:CMD:ARG  ioctl(/dev/null fd, CMD, ARG), 64-bit, full registers
//	getpid              getpid()
//	keyctl              keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING, 0)
//	personality:ARG     personality(ARG)
//	thread:SPEC         SPEC on a new OS thread, to see whether the filter reaches it
//
// ARG and CMD are 64-bit numbers in Go syntax (0x... for hex).
package uffdprobe

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

// Result is the outcome of one probe: Errno 0 means the syscall succeeded.
type Result struct {
	Probe string `json:"probe"`
	Errno int    `json:"errno"`
	Error string `json:"error,omitempty"` // the errno's name, or why the probe could not run
}

var paths = map[string]decision.Path{
	"userfaultfd":      decision.PathSyscall64,
	"userfaultfd-ia32": decision.PathSyscallIA32,
	"userfaultfd-x32":  decision.PathSyscallX32,
	"ioctl":            decision.PathIoctl64,
	"ioctl-ia32":       decision.PathIoctlIA32,
	"ioctl-x32":        decision.PathIoctlX32,
}

// Run performs one probe. Contexts it creates are closed again. It returns an
// error for a malformed spec or a probe that could not be set up (for example
// /dev/userfaultfd missing), never for the errno under test.
func Run(spec string) (Result, error) {
	if inner, ok := strings.CutPrefix(spec, "thread:"); ok {
		return onNewThread(spec, inner)
	}
	name, rest, _ := strings.Cut(spec, ":")
	nums, err := parseNums(rest)
	if err != nil {
		return Result{}, fmt.Errorf("probe %q: %w", spec, err)
	}
	want := func(n int) error {
		if len(nums) != n {
			return fmt.Errorf("probe %q: takes %d numbers after the name, got %d", spec, n, len(nums))
		}
		return nil
	}
	res := Result{Probe: spec}
	var errno unix.Errno
	switch name {
	case "userfaultfd", "userfaultfd-ia32", "userfaultfd-x32", "ioctl", "ioctl-ia32", "ioctl-x32":
		if err := want(1); err != nil {
			return res, err
		}
		fd, err := uffd.Create(paths[name], nums[0])
		if err == nil {
			unix.Close(fd)
		} else if e, ok := err.(unix.Errno); ok {
			errno = e
		} else {
			return res, fmt.Errorf("probe %q: %w", spec, err)
		}
	case "ioctl-dev", "ioctl-null":
		if err := want(2); err != nil {
			return res, err
		}
		dev := uffd.DevicePath
		if name == "ioctl-null" {
			dev = "/dev/null"
		}
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return res, fmt.Errorf("probe %q: opening %s: %w", spec, dev, err)
		}
		r, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), uintptr(nums[0]), uintptr(nums[1]))
		if e == 0 && name == "ioctl-dev" && nums[0]&0xffffffff == uffd.IocNew {
			unix.Close(int(r))
		}
		unix.Close(fd)
		errno = e
	case "getpid":
		if err := want(0); err != nil {
			return res, err
		}
		_, _, errno = unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0)
	case "keyctl":
		if err := want(0); err != nil {
			return res, err
		}
		_, _, errno = unix.RawSyscall(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, uintptr(0xfffffffe) /* KEY_SPEC_PROCESS_KEYRING */, 0)
		if errno == unix.ENOKEY { // no process keyring yet: the syscall ran
			errno = 0
		}
	case "personality":
		if err := want(1); err != nil {
			return res, err
		}
		_, _, errno = unix.RawSyscall(unix.SYS_PERSONALITY, uintptr(nums[0]), 0, 0)
	default:
		return res, fmt.Errorf("probe %q: unknown probe %q", spec, name)
	}
	res.Errno = int(errno)
	if errno != 0 {
		res.Error = unix.ErrnoName(errno)
	}
	return res, nil
}

// onNewThread runs inner on an OS thread other than the caller's. The caller's
// goroutine is locked first so the new goroutine, locked too, cannot share it; it
// exits locked, which ends its thread.
func onNewThread(spec, inner string) (Result, error) {
	runtime.LockOSThread()
	caller := unix.Gettid()
	type out struct {
		tid int
		r   Result
		err error
	}
	ch := make(chan out)
	go func() {
		runtime.LockOSThread()
		r, err := Run(inner)
		ch <- out{unix.Gettid(), r, err}
	}()
	o := <-ch
	if o.err != nil {
		return Result{}, o.err
	}
	if o.tid == caller {
		return Result{}, fmt.Errorf("probe %q: ran on the caller's thread %d", spec, caller)
	}
	o.r.Probe = spec
	return o.r, nil
}

func parseNums(s string) ([]uint64, error) {
	if s == "" {
		return nil, nil
	}
	var out []uint64
	for _, f := range strings.Split(s, ":") {
		n, err := strconv.ParseUint(f, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// RunAll performs the probes in order, on the calling thread, and writes the
// results to w as a JSON array.
func RunAll(w io.Writer, specs []string) error {
	results := make([]Result, 0, len(specs))
	for _, s := range specs {
		r, err := Run(s)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	return json.NewEncoder(w).Encode(results)
}

// Parse reads what RunAll wrote, as a map from spec to errno.
func Parse(out []byte) (map[string]int, error) {
	var results []Result
	if err := json.Unmarshal(out, &results); err != nil {
		return nil, fmt.Errorf("uffdprobe output %q: %w", out, err)
	}
	m := make(map[string]int, len(results))
	for _, r := range results {
		m[r.Probe] = r.Errno
	}
	return m, nil
}
