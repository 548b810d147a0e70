//go:build linux && amd64

package uffd

import (
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pageSize is the x86_64 base page size.
const pageSize = 4096

// Exercised is what Exercise observed.
type Exercised struct {
	// UserFaultServed: a user-mode fault on the registered range was served by
	// the handler thread with UFFDIO_COPY (user-mode-only runs only).
	UserFaultServed bool
	// KernelAccessErrno and KernelAccessBytes are the result of write(2) copying
	// from the registered range: a kernel-mode access.
	KernelAccessErrno unix.Errno
	KernelAccessBytes int
	// KernelFaultServed: that kernel-mode fault was served and write(2) copied the
	// handler's data (kernel-fault runs only).
	KernelFaultServed bool
}

// Exercise drives the context fd end to end: UFFDIO_API, registration of two
// anonymous pages, then, if userModeOnly, a user-mode fault on the first page
// (served with UFFDIO_COPY), and in every case a kernel-mode access to the second
// page (write(2) from it). A user-mode-only context must fail that access with
// EFAULT; a kernel-fault context must serve it.
//
// Faults are served from a handler goroutine on its own thread, as kernel-facts.md
// requires: the calling thread never waits on its own fault. It is meant for a
// short-lived subject process: the handler thread, the mapping and fd stay as
// they are, and a kernel-mode access that does not finish within 20 s is left
// behind (only SIGKILL ends such a task).
func Exercise(fd int, userModeOnly bool) (Exercised, error) {
	var res Exercised
	if err := Handshake(fd); err != nil {
		return res, fmt.Errorf("UFFDIO_API: %w", err)
	}
	mem, err := unix.Mmap(-1, 0, 2*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return res, err
	}
	base := uintptr(unsafe.Pointer(&mem[0]))
	if err := Register(fd, base, 2*pageSize); err != nil {
		return res, fmt.Errorf("UFFDIO_REGISTER: %w", err)
	}
	src := make([]byte, pageSize)
	for i := range src {
		src[i] = byte(i%251) + 1
	}
	served := make(chan uint64, 4)
	go func() {
		runtime.LockOSThread()
		for {
			m, err := ReadMsg(fd)
			if err != nil {
				return
			}
			if m.Event != EventPagefault {
				continue
			}
			at := uintptr(m.Address) &^ (pageSize - 1)
			if err := Copy(fd, at, uintptr(unsafe.Pointer(&src[0])), pageSize); err == nil {
				served <- uint64(at)
			}
		}
	}()

	if userModeOnly {
		// User-mode fault on page 0.
		if mem[7] != src[7] {
			return res, fmt.Errorf("user-mode fault served wrong data: %d", mem[7])
		}
		// The handler reports after UFFDIO_COPY, which may wake this thread first.
		select {
		case <-served:
			res.UserFaultServed = true
		case <-time.After(5 * time.Second):
		}
	}

	// Kernel-mode access to page 1: write(2) copies from it with copy_from_user.
	var pfd [2]int
	if err := unix.Pipe2(pfd[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return res, err
	}
	type written struct {
		n     int
		errno unix.Errno
	}
	done := make(chan written, 1)
	go func() {
		n, werr := unix.Write(pfd[1], mem[pageSize:2*pageSize])
		var w written
		w.n = n
		errors.As(werr, &w.errno)
		done <- w
	}()
	select {
	case w := <-done:
		res.KernelAccessBytes, res.KernelAccessErrno = w.n, w.errno
	case <-time.After(20 * time.Second):
		return res, errors.New("the kernel-mode access did not finish in 20 s")
	}
	if !userModeOnly {
		got := make([]byte, pageSize)
		n, _ := unix.Read(pfd[0], got)
		res.KernelFaultServed = n == pageSize && string(got) == string(src)
	}
	return res, nil
}
