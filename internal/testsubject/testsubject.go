//go:build linux && amd64

// Package testsubject gives live tests real subject processes: the test binary
// re-executed with chosen credentials (set by the kernel at fork, before exec,
// so every thread has them), doing one action and then staying alive until the
// test lets it go, so its /proc entry can be read meanwhile.
//
// A test package uses it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testsubject.Run(m)) }
package testsubject

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

const envAction = "UFFDGATE_TEST_SUBJECT"

// exe is a copy of the test binary that any uid can execute: go test leaves its
// binary in a 0700 directory.
var exe string

// Run runs the tests, or, in a subject process, the subject's action.
func Run(m *testing.M) int {
	if a := os.Getenv(envAction); a != "" {
		return subjectMain(a, os.Getenv(envAction+"_ARG"))
	}
	dir, err := os.MkdirTemp("", "uffdgate-subject-")
	if err == nil {
		defer os.RemoveAll(dir)
		err = os.Chmod(dir, 0o755)
	}
	if err == nil {
		exe = filepath.Join(dir, "subject")
		err = copyExe(exe)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsubject: preparing the subject binary:", err)
		return 1
	}
	return m.Run()
}

func copyExe(dst string) error {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Spec says who the subject is and what it does.
type Spec struct {
	// UID, GID and Groups: nil Cred keeps the test's (root's) credentials.
	Cred *syscall.Credential
	// AmbientCaps survive the uid change and exec (capabilities(7)).
	AmbientCaps []uintptr
	// Action: "attempts" (the four kinds of request, see Attempts), "open"
	// (Arg is a path: see Opens), "hold" (keep a user-mode-only context open),
	// "idle".
	Action string
	Arg    string
}

// Subject is a running subject process.
type Subject struct {
	PID    int
	Result json.RawMessage
	cmd    *exec.Cmd
	stdin  io.WriteCloser
}

// Start starts a subject and waits for its result line; the test's cleanup
// stops it.
func Start(t testing.TB, s Spec) *Subject {
	t.Helper()
	if exe == "" {
		t.Fatal("testsubject.Run was not called from TestMain")
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envAction+"="+s.Action, envAction+"_ARG="+s.Arg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.Cred, AmbientCaps: s.AmbientCaps, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a subject as %+v: %v", s.Cred, err)
	}
	sub := &Subject{PID: cmd.Process.Pid, cmd: cmd, stdin: stdin}
	t.Cleanup(sub.stop)
	line := make(chan []byte, 1)
	go func() {
		b, _ := bufio.NewReader(stdout).ReadBytes('\n')
		line <- b
		io.Copy(io.Discard, stdout)
	}()
	select {
	case b := <-line:
		if len(b) == 0 {
			t.Fatalf("subject %d (%s) printed nothing", sub.PID, s.Action)
		}
		sub.Result = b
	case <-time.After(20 * time.Second):
		t.Fatalf("subject %d (%s) did not report within 20 s", sub.PID, s.Action)
	}
	return sub
}

// stop lets the subject exit (EOF on its stdin), SIGKILLs it if it does not
// within 5 s, and reaps it.
func (s *Subject) stop() {
	s.stdin.Close()
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// Attempts is what the "attempts" action reports: the errno (0: created) of
// each kind of request, the device opened in the first mode that works.
type Attempts struct {
	SyscallKernelFault  int `json:"syscall_kernel_fault"`
	SyscallUserModeOnly int `json:"syscall_user_mode_only"`
	IoctlKernelFault    int `json:"ioctl_kernel_fault"`
	IoctlUserModeOnly   int `json:"ioctl_user_mode_only"`
	// IoctlOpenErrno: no open mode worked (then the ioctl fields repeat it).
	IoctlOpenErrno int `json:"ioctl_open_errno"`
}

// Opens is what the "open" action reports: open(2) errnos per mode and the
// USERFAULTFD_IOC_NEW(0) errno on the first fd that opened (-1: none did).
type Opens struct {
	Read      int `json:"read"`
	Write     int `json:"write"`
	ReadWrite int `json:"read_write"`
	IoctlNew  int `json:"ioctl_new"`
}

// Held is what the "hold" action reports.
type Held struct {
	FD int `json:"fd"`
}

func subjectMain(action, arg string) int {
	var res any
	switch action {
	case "attempts":
		res = attempts()
	case "open":
		res = opens(arg)
	case "hold":
		fd, err := uffd.Syscall(decision.UserModeOnly) // no O_CLOEXEC: irrelevant, it never execs
		if err != nil {
			fmt.Fprintln(os.Stderr, "subject: hold:", err)
			return 1
		}
		res = Held{FD: fd}
	case "idle":
		res = struct{}{}
	default:
		fmt.Fprintln(os.Stderr, "subject: unknown action", action)
		return 2
	}
	json.NewEncoder(os.Stdout).Encode(res)
	io.Copy(io.Discard, os.Stdin) // until the test lets go
	return 0
}

func errno(err error) int {
	var e unix.Errno
	if errors.As(err, &e) {
		return int(e)
	}
	if err != nil {
		return -1
	}
	return 0
}

func attempts() Attempts {
	try := func(flags uint32) int {
		fd, err := uffd.Syscall(flags)
		if err == nil {
			unix.Close(fd)
		}
		return errno(err)
	}
	a := Attempts{
		SyscallKernelFault:  try(decision.CloseOnExec),
		SyscallUserModeOnly: try(decision.CloseOnExec | decision.UserModeOnly),
	}
	// The ioctl does not check the open mode: any mode that opens will do.
	dev := -1
	for _, m := range []int{unix.O_RDWR, unix.O_RDONLY, unix.O_WRONLY} {
		fd, err := unix.Open(uffd.DevicePath, m|unix.O_CLOEXEC, 0)
		if err == nil {
			dev = fd
			break
		}
		if a.IoctlOpenErrno == 0 {
			a.IoctlOpenErrno = errno(err)
		}
	}
	if dev < 0 {
		a.IoctlKernelFault, a.IoctlUserModeOnly = a.IoctlOpenErrno, a.IoctlOpenErrno
		return a
	}
	a.IoctlOpenErrno = 0
	for _, f := range []struct {
		flags uint32
		into  *int
	}{{decision.CloseOnExec, &a.IoctlKernelFault}, {decision.CloseOnExec | decision.UserModeOnly, &a.IoctlUserModeOnly}} {
		fd, err := uffd.CreateOnDevice(dev, decision.PathIoctl64, uint64(f.flags))
		if err == nil {
			unix.Close(fd)
		}
		*f.into = errno(err)
	}
	unix.Close(dev)
	return a
}

func opens(path string) Opens {
	o := Opens{IoctlNew: -1}
	first := -1
	for _, m := range []struct {
		mode int
		into *int
	}{{unix.O_RDONLY, &o.Read}, {unix.O_WRONLY, &o.Write}, {unix.O_RDWR, &o.ReadWrite}} {
		fd, err := unix.Open(path, m.mode|unix.O_CLOEXEC, 0)
		*m.into = errno(err)
		if err == nil {
			if first < 0 {
				first = fd
			} else {
				unix.Close(fd)
			}
		}
	}
	if first >= 0 {
		fd, err := uffd.CreateOnDevice(first, decision.PathIoctl64, 0)
		if err == nil {
			unix.Close(fd)
		}
		o.IoctlNew = errno(err)
		unix.Close(first)
	}
	return o
}
