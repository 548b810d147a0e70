//go:build linux && amd64

// Command uffdtry is the test subject of uffdgate's end-to-end tests: a real
// process that takes on chosen credentials and then creates userfaultfd contexts,
// or exercises one end to end. It prints one JSON object on stdout.
package main

import (
	"bufio"
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
	// Counts: for -repeat, request -> errno -> how many times.
	Counts map[string]map[int]int `json:"counts,omitempty"`
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
	gid := flag.Int("gid", -1, "switch to this gid (default: the uid)")
	cgroup := flag.String("cgroup", "", "join this cgroup v2 (a path under /sys/fs/cgroup) before acting")
	repeat := flag.Int("repeat", 1, "make the -try requests this many times and report counts per errno")
	then := flag.String("then", "", "after reporting: `exec` or `spawn` the command in -next")
	next := flag.String("next", "", "program and arguments, space-separated, for -then")
	wait := flag.Bool("wait", false, "print \"ready\" on stderr, then wait for a line on stdin before acting")
	flag.Parse()

	runtime.LockOSThread()
	rep := Report{PID: os.Getpid()}
	// Resolved now: once the credentials change, /proc/self is no longer ours to read.
	self, err := os.Executable()
	if err != nil {
		fail(rep, err)
	}
	if *cgroup != "" {
		procs := "/sys/fs/cgroup" + *cgroup + "/cgroup.procs"
		if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			fail(rep, fmt.Errorf("joining cgroup %s: %w", *cgroup, err))
		}
	}
	if *gid < 0 {
		*gid = *uid
	}
	if err := become(*uid, *gid, *caps); err != nil {
		fail(rep, err)
	}
	if *userns {
		os.Exit(inUserNS(self, *uid))
	}
	rep.UID = os.Getuid()
	rep.CapEff = capEff()
	if *wait {
		fmt.Fprintln(os.Stderr, "ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			fail(rep, fmt.Errorf("-wait: %w", err))
		}
	}
	switch {
	case *e2e != "":
		if err := scenario(&rep, *e2e, *path); err != nil {
			fail(rep, err)
		}
	case *tries != "" && *repeat > 1:
		rep.Counts = map[string]map[int]int{}
		for range *repeat {
			for _, t := range strings.Split(*tries, ",") {
				a, err := attempt(t, *devfd)
				if err != nil {
					fail(rep, err)
				}
				if rep.Counts[t] == nil {
					rep.Counts[t] = map[int]int{}
				}
				rep.Counts[t][a.Errno]++
			}
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
	if *then != "" {
		os.Exit(chain(*then, strings.Fields(*next)))
	}
}

// chain runs the next program the way the process-tree tests need: exec
// replaces this process (same pid, new executable); spawn starts a child.
func chain(how string, argv []string) int {
	if len(argv) == 0 {
		fail(Report{PID: os.Getpid()}, errors.New("-then needs -next"))
	}
	switch how {
	case "exec":
		err := syscall.Exec(argv[0], argv, os.Environ())
		fail(Report{PID: os.Getpid()}, fmt.Errorf("exec %s: %w", argv[0], err))
	case "spawn":
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return 1
		}
		return 0
	}
	fail(Report{PID: os.Getpid()}, fmt.Errorf("unknown -then %q: exec or spawn", how))
	return 1
}

func fail(rep Report, err error) {
	rep.Error = err.Error()
	json.NewEncoder(os.Stdout).Encode(rep)
	os.Exit(1)
}

// become switches every thread to uid and the capability set named by caps.
func become(uid, gid int, caps string) error {
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
	// Already there (e.g. after exec of a file-capability binary): switching
	// would need capabilities the process may not have.
	already := os.Getuid() == uid && os.Geteuid() == uid && os.Getgid() == gid && os.Getegid() == gid
	if gid != 0 && !already {
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setresgid(gid, gid, gid); err != nil {
			return fmt.Errorf("setresgid: %w", err)
		}
	}
	if uid != 0 && !already {
		if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0); e != 0 {
			return fmt.Errorf("PR_SET_KEEPCAPS: %w", e)
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
		case "-uid", "-caps", "-gid", "-cgroup":
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

// scenario exercises a context end to end (uffd.Exercise): a user-mode fault
// served with UFFDIO_COPY, then a kernel-mode access (write(2) from the
// registered range).
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
	res, err := uffd.Exercise(fd, kind == "user-mode-only")
	rep.UserFaultServed = res.UserFaultServed
	rep.KernelAccessErrno = int(res.KernelAccessErrno)
	rep.KernelAccessBytes = res.KernelAccessBytes
	rep.KernelFaultServed = res.KernelFaultServed
	return err
}
