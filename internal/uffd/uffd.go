//go:build linux && amd64

// Package uffd creates and drives userfaultfd contexts through every way the
// kernel offers: the syscall through the x86_64, i386 and x32 ABIs, and the
// /dev/userfaultfd ioctl through the same ABIs.
package uffd

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
)

// DevicePath is the userfaultfd device node (Linux 6.1+).
const DevicePath = "/dev/userfaultfd"

// Kernel ABI constants (include/uapi/linux/userfaultfd.h).
const (
	IocNew          = 0xAA00
	API             = 0xAA
	IoctlAPI        = 0xc018aa3f
	IoctlRegister   = 0xc020aa00
	IoctlCopy       = 0xc028aa03
	RegisterMissing = 1
	EventPagefault  = 0x12
	MsgSize         = 32

	nrUserfaultfd64   = 323
	nrUserfaultfdIA32 = 374
	nrIoctl64         = 16
	nrIoctlIA32       = 54
	nrIoctlX32        = 514
	x32Bit            = 0x40000000
)

// Syscall creates a context with userfaultfd(flags) through the x86_64 ABI.
func Syscall(flags uint32) (int, error) {
	return Create(decision.PathSyscall64, uint64(flags))
}

// Device creates a context with USERFAULTFD_IOC_NEW on a fresh /dev/userfaultfd fd.
func Device(flags uint32) (int, error) {
	return Create(decision.PathIoctl64, uint64(flags))
}

// Create creates a context through path, opening /dev/userfaultfd for the device
// paths. arg is passed as the full register value, so callers can test what the
// kernel does with the high bits.
func Create(path decision.Path, arg uint64) (int, error) {
	if path.IsDevice() {
		dev, err := unix.Open(DevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("opening %s: %w", DevicePath, err)
		}
		defer unix.Close(dev)
		return CreateOnDevice(dev, path, arg)
	}
	switch path {
	case decision.PathSyscall64:
		return result(unix.RawSyscall(nrUserfaultfd64, uintptr(arg), 0, 0))
	case decision.PathSyscallX32:
		return result(unix.RawSyscall(nrUserfaultfd64|x32Bit, uintptr(arg), 0, 0))
	case decision.PathSyscallIA32:
		return result32(int80(nrUserfaultfdIA32, uintptr(uint32(arg)), 0, 0))
	}
	return -1, fmt.Errorf("uffd: %s is not a creation path", path)
}

// CreateOnDevice issues USERFAULTFD_IOC_NEW on an already open device fd, which
// may have been opened by another process and passed over.
func CreateOnDevice(dev int, path decision.Path, arg uint64) (int, error) {
	switch path {
	case decision.PathIoctl64:
		return result(unix.RawSyscall(nrIoctl64, uintptr(dev), IocNew, uintptr(arg)))
	case decision.PathIoctlX32:
		return result(unix.RawSyscall(nrIoctlX32|x32Bit, uintptr(dev), IocNew, uintptr(arg)))
	case decision.PathIoctlIA32:
		return result32(int80(nrIoctlIA32, uintptr(dev), IocNew, uintptr(uint32(arg))))
	}
	return -1, fmt.Errorf("uffd: %s is not a device path", path)
}

func result(r1, _ uintptr, errno unix.Errno) (int, error) {
	if errno != 0 {
		return -1, errno
	}
	return int(r1), nil
}

// result32 decodes an int $0x80 return: -errno in eax.
func result32(r uintptr) (int, error) {
	v := int32(uint32(r))
	if v < 0 && v > -4096 {
		return -1, unix.Errno(-v)
	}
	return int(v), nil
}

// int80 issues a syscall through the i386 ABI (implemented in int80_amd64.s).
func int80(nr, a1, a2, a3 uintptr) uintptr

type apiMsg struct {
	API, Features, Ioctls uint64
}

// Handshake performs UFFDIO_API.
func Handshake(fd int) error {
	a := apiMsg{API: API}
	return ioctl(fd, IoctlAPI, unsafe.Pointer(&a))
}

type registerMsg struct {
	Start, Len, Mode, Ioctls uint64
}

// Register registers [addr, addr+length) for missing-page faults.
func Register(fd int, addr, length uintptr) error {
	r := registerMsg{Start: uint64(addr), Len: uint64(length), Mode: RegisterMissing}
	return ioctl(fd, IoctlRegister, unsafe.Pointer(&r))
}

type copyMsg struct {
	Dst, Src, Len, Mode uint64
	Copy                int64
}

// Copy resolves a fault at dst with length bytes from src (UFFDIO_COPY).
func Copy(fd int, dst, src, length uintptr) error {
	c := copyMsg{Dst: uint64(dst), Src: uint64(src), Len: uint64(length)}
	return ioctl(fd, IoctlCopy, unsafe.Pointer(&c))
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// Msg is the part of struct uffd_msg a page-fault handler needs.
type Msg struct {
	Event   uint8
	Address uint64
}

// ReadMsg blocks for the next message.
func ReadMsg(fd int) (Msg, error) {
	var b [MsgSize]byte
	n, err := unix.Read(fd, b[:])
	if err != nil {
		return Msg{}, err
	}
	if n != MsgSize {
		return Msg{}, fmt.Errorf("short uffd_msg: %d bytes", n)
	}
	// struct uffd_msg: u8 event; u8 r1; u16 r2; u32 r3; then arg.pagefault {u64 flags; u64 address}.
	return Msg{Event: b[0], Address: *(*uint64)(unsafe.Pointer(&b[16]))}, nil
}
