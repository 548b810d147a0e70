//go:build linux && amd64

package probe

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

// childResult is what a probe child prints: one JSON object.
type childResult struct {
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
	Groups []int  `json:"groups"`
	CapEff uint64 `json:"cap_eff"`
	// OpenErrno: opening /dev/userfaultfd O_RDWR failed (device paths).
	OpenErrno int `json:"open_errno"`
	// Errno of the creation request; 0 with Created.
	Errno   int  `json:"errno"`
	Created bool `json:"created"`
	// Exercise results, for a created context.
	Exercised         bool   `json:"exercised"`
	UserFaultServed   bool   `json:"user_fault_served"`
	KernelAccessErrno int    `json:"kernel_access_errno"`
	KernelFaultServed bool   `json:"kernel_fault_served"`
	ExerciseError     string `json:"exercise_error,omitempty"`
	// Error: the child could not set itself up (the cell is not measured).
	Error string `json:"error,omitempty"`
}

// ChildMain is the probe child: it takes on the credentials it is given on all
// threads, makes one creation request, exercises a created context, and prints
// a childResult. It returns the exit status. It runs in a fresh process (the
// parent re-executes the uffdgate binary) because Go cannot fork without exec.
func ChildMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uffdgate __probe-child", flag.ContinueOnError)
	fs.SetOutput(stderr)
	uid := fs.Int("uid", 0, "uid (and gid, unless --gid) to take")
	gid := fs.Int("gid", -1, "gid to take")
	keep := fs.String("caps", "", "hex mask of capabilities to keep effective and permitted")
	pathName := fs.String("path", "", "creation path (decision.Path name)")
	flagsS := fs.String("flags", "", "creation flags, hex")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var res childResult
	out := func(code int) int {
		json.NewEncoder(stdout).Encode(res)
		return code
	}
	fail := func(err error) int {
		res.Error = err.Error()
		return out(1)
	}
	mask, err := strconv.ParseUint(*keep, 16, 64)
	if err != nil {
		return fail(fmt.Errorf("--caps %q: %w", *keep, err))
	}
	flags, err := strconv.ParseUint(*flagsS, 16, 32)
	if err != nil {
		return fail(fmt.Errorf("--flags %q: %w", *flagsS, err))
	}
	path, err := parsePath(*pathName)
	if err != nil {
		return fail(err)
	}
	if *gid < 0 {
		*gid = *uid
	}
	if err := become(*uid, *gid, mask); err != nil {
		return fail(err)
	}
	// Report the credentials the kernel will see, not the ones asked for.
	res.UID, res.GID = syscall.Geteuid(), syscall.Getegid()
	if res.Groups, err = syscall.Getgroups(); err != nil {
		return fail(fmt.Errorf("getgroups: %w", err))
	}
	if res.CapEff, err = capEff(); err != nil {
		return fail(err)
	}

	var fd int
	if path.IsDevice() {
		dev, oerr := unix.Open(uffd.DevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if oerr != nil {
			res.OpenErrno = errnoOf(oerr)
			if res.OpenErrno == 0 {
				return fail(oerr)
			}
			return out(0)
		}
		fd, err = uffd.CreateOnDevice(dev, path, flags)
		unix.Close(dev)
	} else {
		fd, err = uffd.Create(path, flags)
	}
	if err != nil {
		if res.Errno = errnoOf(err); res.Errno == 0 {
			return fail(err)
		}
		return out(0)
	}
	res.Created = true
	ex, xerr := uffd.Exercise(fd, uint32(flags)&decision.UserModeOnly != 0)
	res.Exercised = xerr == nil
	res.UserFaultServed, res.KernelAccessErrno, res.KernelFaultServed = ex.UserFaultServed, int(ex.KernelAccessErrno), ex.KernelFaultServed
	if xerr != nil {
		res.ExerciseError = xerr.Error()
	}
	return out(0)
}

func errnoOf(err error) int {
	var e unix.Errno
	if errors.As(err, &e) {
		return int(e)
	}
	return 0
}

func parsePath(s string) (decision.Path, error) {
	for p := decision.PathSyscall64; p <= decision.PathIoctlX32; p++ {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown creation path %q", s)
}

// become switches every thread to uid/gid with no supplementary groups (when
// uid or gid changes) and keeps exactly the capabilities in keep that are
// permitted now, effective and permitted. Go's setresuid, setresgid and
// setgroups already act on all threads; capset goes through AllThreadsSyscall.
func become(uid, gid int, keep uint64) error {
	if uid != 0 || gid != 0 {
		// Without KEEPCAPS a uid change from 0 empties the permitted set.
		if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0); e != 0 {
			return allThreadsErr("PR_SET_KEEPCAPS", e)
		}
		if err := syscall.Setgroups([]int{}); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setresgid(gid, gid, gid); err != nil {
			return fmt.Errorf("setresgid %d: %w", gid, err)
		}
		if err := syscall.Setresuid(uid, uid, uid); err != nil {
			return fmt.Errorf("setresuid %d: %w", uid, err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	keep &= uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32
	data[0].Effective, data[0].Permitted, data[0].Inheritable = uint32(keep), uint32(keep), 0
	data[1].Effective, data[1].Permitted, data[1].Inheritable = uint32(keep>>32), uint32(keep>>32), 0
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return allThreadsErr("capset", e)
	}
	return nil
}

// allThreadsErr explains ENOTSUP: AllThreadsSyscall refuses in a cgo binary.
func allThreadsErr(what string, e syscall.Errno) error {
	if e == syscall.ENOTSUP {
		return fmt.Errorf("%s on all threads: %w (this uffdgate binary uses cgo; build it with CGO_ENABLED=0)", what, e)
	}
	return fmt.Errorf("%s: %w", what, e)
}

// capEff is the calling thread's effective set.
func capEff() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capget: %w", err)
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}
