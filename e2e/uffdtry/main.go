//go:build linux && amd64

// Command uffdtry is the test subject of uffdgate's end-to-end tests: a real
// process that takes on chosen credentials and then creates userfaultfd contexts,
// or exercises one end to end. It prints one JSON object on stdout.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

// Attempt is one creation request and its result.
type Attempt struct {
	Path  string `json:"path"`
	Arg   uint64 `json:"arg"`
	Errno int    `json:"errno"`
}

// Report is what uffdtry prints.
type Report struct {
	PID      int       `json:"pid"`
	UID      int       `json:"uid"`
	CapEff   string    `json:"cap_eff"`
	Attempts []Attempt `json:"attempts,omitempty"`
	// End-to-end results.
	UserFaultServed   bool   `json:"user_fault_served,omitempty"`
	KernelAccessErrno int    `json:"kernel_access_errno"`
	KernelAccessBytes int    `json:"kernel_access_bytes"`
	KernelFaultServed bool   `json:"kernel_fault_served,omitempty"`
	Error             string `json:"error,omitempty"`
}

func main() {
	uid := flag.Int("uid", 0, "switch to this uid (and gid) before acting")
	caps := flag.String("caps", "all", "effective+permitted capabilities to keep: all, all-but-ptrace, ptrace, none")
	tries := flag.String("try", "", "comma-separated PATH:ARG requests (PATH as in decision.Path, or syscall-nrhigh); ARG in hex or decimal")
	devfd := flag.Int("devfd", -1, "issue device requests on this inherited /dev/userfaultfd fd instead of opening the node")
	e2e := flag.String("e2e", "", "run an end-to-end scenario instead: user-mode-only or kernel-fault")
	path := flag.String("path", "syscall", "creation path for -e2e")
	userns := flag.Bool("userns", false, "after switching credentials, act as root of a new user namespace")
	flag.Parse()

	runtime.LockOSThread()
	rep := Report{PID: os.Getpid()}
	// Resolved now: once the credentials change, /proc/self is no longer ours to read.
	self, err := os.Executable()
	if err != nil {
		fail(rep, err)
	}
	if err := become(*uid, *caps); err != nil {
		fail(rep, err)
	}
	if *userns {
		os.Exit(inUserNS(self, *uid))
	}
	rep.UID = os.Getuid()
	rep.CapEff = capEff()
	switch {
	case *e2e != "":
		if err := scenario(&rep, *e2e, *path); err != nil {
			fail(rep, err)
		}
	case *tries != "":
		for _, t := range strings.Split(*tries, ",") {
			a, err := attempt(t, *devfd)
			if err != nil {
				fail(rep, err)
			}
			rep.Attempts = append(rep.Attempts, a)
		}
	default:
		fail(rep, errors.New("nothing to do: give -try or -e2e"))
	}
	json.NewEncoder(os.Stdout).Encode(rep)
}

func fail(rep Report, err error) {
	rep.Error = err.Error()
	json.NewEncoder(os.Stdout).Encode(rep)
	os.Exit(1)
}

// become switches every thread to uid and the capability set named by caps.
func become(uid int, caps string) error {
	var keep uint64
	all := uint64(1)<<(capability.Last+1) - 1
	switch caps {
	case "all":
		keep = all
	case "all-but-ptrace":
		keep = all &^ (1 << capability.SysPtrace)
	case "ptrace":
		keep = 1 << capability.SysPtrace
	case "none":
	default:
		return fmt.Errorf("unknown -caps %q", caps)
	}
	if uid != 0 {
		if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0); e != 0 {
			return fmt.Errorf("PR_SET_KEEPCAPS: %w", e)
		}
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setresgid(uid, uid, uid); err != nil {
			return fmt.Errorf("setresgid: %w", err)
		}
		if err := syscall.Setresuid(uid, uid, uid); err != nil {
			return fmt.Errorf("setresuid: %w", err)
		}
		// A uid change makes the process non-dumpable, which would keep it from
		// writing its own child's uid_map (-userns).
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("PR_SET_DUMPABLE: %w", err)
		}
	}
	if caps == "all" && uid == 0 {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	// Capabilities can only be dropped: keep what is asked for and still permitted.
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	keep &= uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32
	data[0].Effective, data[0].Permitted = uint32(keep), uint32(keep)
	data[1].Effective, data[1].Permitted = uint32(keep>>32), uint32(keep>>32)
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}

// inUserNS re-runs uffdtry, minus the credential flags, as root of a user
// namespace that the current (unprivileged) credentials create, and relays its
// report: a Go process cannot unshare a user namespace itself once threaded.
func inUserNS(self string, uid int) int {
	var args []string
	for i := 1; i < len(os.Args); i++ {
		switch a := os.Args[i]; a {
		case "-userns":
		case "-uid", "-caps":
			i++
		default:
			args = append(args, a)
		}
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
	}
	if err := cmd.Run(); err != nil {
		if cmd.ProcessState == nil {
			fail(Report{PID: os.Getpid()}, fmt.Errorf("starting in a user namespace: %w", err))
		}
		return cmd.ProcessState.ExitCode()
	}
	return 0
}

func capEff() string {
	b, _ := os.ReadFile("/proc/thread-self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func parsePath(s string) (decision.Path, error) {
	for p := decision.Path(0); p < decision.NumPaths; p++ {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown path %q", s)
}

func attempt(spec string, devfd int) (Attempt, error) {
	name, argS, ok := strings.Cut(spec, ":")
	if !ok {
		return Attempt{}, fmt.Errorf("bad -try element %q: want PATH:ARG", spec)
	}
	arg, err := strconv.ParseUint(argS, 0, 64)
	if err != nil {
		return Attempt{}, fmt.Errorf("bad argument in %q: %w", spec, err)
	}
	a := Attempt{Path: name, Arg: arg}
	var fd int
	if name == "syscall-nrhigh" {
		// The kernel uses the low 32 bits of rax as the syscall number.
		r1, _, e := unix.RawSyscall(323|1<<32, uintptr(arg), 0, 0)
		fd, err = int(r1), nil
		if e != 0 {
			err = e
		}
	} else {
		p, perr := parsePath(name)
		if perr != nil {
			return a, perr
		}
		if devfd >= 0 && p.IsDevice() {
			fd, err = uffd.CreateOnDevice(devfd, p, arg)
		} else {
			fd, err = uffd.Create(p, arg)
		}
	}
	var errno unix.Errno
	switch {
	case err == nil:
		unix.Close(fd)
	case errors.As(err, &errno):
		a.Errno = int(errno)
	default:
		return a, err
	}
	return a, nil
}

const page = 4096

// scenario exercises a context end to end: a user-mode fault served with
// UFFDIO_COPY, then a kernel-mode access (write(2) from the registered range).
// Faults are served from a handler goroutine on its own thread, as kernel-facts.md
// requires: the main thread never waits on its own fault.
func scenario(rep *Report, kind, pathName string) error {
	p, err := parsePath(pathName)
	if err != nil {
		return err
	}
	flags := decision.CloseOnExec
	if kind == "user-mode-only" {
		flags |= decision.UserModeOnly
	} else if kind != "kernel-fault" {
		return fmt.Errorf("unknown scenario %q", kind)
	}
	fd, err := uffd.Create(p, uint64(flags))
	if err != nil {
		return fmt.Errorf("creating the context: %w", err)
	}
	if err := uffd.Handshake(fd); err != nil {
		return fmt.Errorf("UFFDIO_API: %w", err)
	}
	mem, err := unix.Mmap(-1, 0, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	base := uintptr(unsafe.Pointer(&mem[0]))
	if err := uffd.Register(fd, base, 2*page); err != nil {
		return fmt.Errorf("UFFDIO_REGISTER: %w", err)
	}
	src := make([]byte, page)
	for i := range src {
		src[i] = byte(i%251) + 1
	}
	served := make(chan uint64, 4)
	go func() {
		runtime.LockOSThread()
		for {
			m, err := uffd.ReadMsg(fd)
			if err != nil {
				return
			}
			if m.Event != uffd.EventPagefault {
				continue
			}
			at := uintptr(m.Address) &^ (page - 1)
			if err := uffd.Copy(fd, at, uintptr(unsafe.Pointer(&src[0])), page); err == nil {
				served <- uint64(at)
			}
		}
	}()

	if kind == "user-mode-only" {
		// User-mode fault on page 0.
		if mem[7] != src[7] {
			return fmt.Errorf("user-mode fault served wrong data: %d", mem[7])
		}
		// The handler reports after UFFDIO_COPY, which may wake this thread first.
		select {
		case <-served:
			rep.UserFaultServed = true
		case <-time.After(5 * time.Second):
		}
	}

	// Kernel-mode access to page 1: write(2) copies from it with copy_from_user.
	var pfd [2]int
	if err := unix.Pipe2(pfd[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		n, werr := unix.Write(pfd[1], mem[page:2*page])
		rep.KernelAccessBytes = n
		var e unix.Errno
		if errors.As(werr, &e) {
			rep.KernelAccessErrno = int(e)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		return errors.New("the kernel-mode access did not finish in 20 s")
	}
	if kind == "kernel-fault" {
		got := make([]byte, page)
		n, _ := unix.Read(pfd[0], got)
		rep.KernelFaultServed = n == page && string(got) == string(src)
	}
	return nil
}
