//go:build linux && amd64

// Package probe is `uffdgate probe`: an active self-test. It starts children
// with chosen credentials (re-executing the uffdgate binary, since Go cannot fork
// without exec), has each try one creation path with one set of flags, exercises
// what gets created, and compares every cell of the matrix with what the kernel
// plus the policy in force (a running daemon's, else the kernel alone) should
// give per decision.Expect. Every child is SIGKILLed at its deadline and reaped;
// the device node's mode is never changed: cells it makes unreachable are
// reported as such and compared accordingly.
package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/hostinfo"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

// Identity is a set of credentials a child takes on.
type Identity struct {
	Name string
	UID  int
	GID  int
	// Keep is the capabilities the child keeps (of those the probe holds).
	Keep uint64
}

// Nobody is the unprivileged uid the probe uses; it needs no /etc/passwd entry.
const Nobody = 65534

const ptraceBit = uint64(1) << capability.SysPtrace

// Identities are the probe's subjects: root and an unprivileged uid, each with
// and without CAP_SYS_PTRACE.
func Identities() []Identity {
	all := uint64(1)<<(capability.Last+1) - 1
	return []Identity{
		{"root+ptrace", 0, 0, all},
		{"root-ptrace", 0, 0, all &^ ptraceBit},
		{"nobody+ptrace", Nobody, Nobody, ptraceBit},
		{"nobody-ptrace", Nobody, Nobody, 0},
	}
}

// Paths are every creation path and ABI.
func Paths() []decision.Path {
	return []decision.Path{decision.PathSyscall64, decision.PathSyscallIA32, decision.PathSyscallX32,
		decision.PathIoctl64, decision.PathIoctlIA32, decision.PathIoctlX32}
}

// Options configure a probe run.
type Options struct {
	Host hostinfo.Host
	Gate hostinfo.Gate
	// Exe and ChildArgs start a child: Exe ChildArgs... --uid ... (the uffdgate
	// binary and its hidden __probe-child subcommand).
	Exe       string
	ChildArgs []string
	// Timeout bounds each child; it is SIGKILLed when it runs out.
	Timeout time.Duration
	// Parallel children at most (default 8).
	Parallel int
}

// Verdicts of a cell.
const (
	Match      = "match"
	Mismatch   = "mismatch"
	NotOffered = "not-offered"
)

// Cell is one identity x path x flags.
type Cell struct {
	Identity     string `json:"identity"`
	UID          int    `json:"uid"`
	CapEff       string `json:"cap_eff"` // what the child really held, hex
	Path         string `json:"path"`
	Flags        string `json:"flags"`
	UserModeOnly bool   `json:"user_mode_only"`
	// Got: "created", an errno name ("EPERM"), "unreachable (EACCES on open)",
	// "not offered (ENOSYS)", "killed at deadline", or "child failed".
	Got string `json:"got"`
	// Behaviour of a created context: "user fault served, kernel access EFAULT"
	// or "kernel fault served", or what went wrong.
	Behaviour string `json:"behaviour,omitempty"`
	// Expected per decision.Expect (and the node's permissions for ioctl paths),
	// with the deciding layer: "created", "EPERM (kernel)", "EPERM (uffdgate)",
	// "unreachable (EACCES on open)".
	Expected string `json:"expected"`
	Verdict  string `json:"verdict"`
	Detail   string `json:"detail,omitempty"`
	Millis   int64  `json:"ms"`
}

// Summary counts cells.
type Summary struct {
	Cells      int `json:"cells"`
	Match      int `json:"match"`
	Mismatch   int `json:"mismatch"`
	NotOffered int `json:"not_offered"`
}

// Report is the probe's result.
type Report struct {
	Kernel string `json:"kernel"`
	Sysctl string `json:"unprivileged_userfaultfd"`
	Device string `json:"device"`
	// Model: what the cells are compared with.
	Model       string `json:"model"`
	GateRunning bool   `json:"uffdgate_running"`
	// NotApplicable is set when the kernel has no userfaultfd: no cells then.
	NotApplicable string   `json:"not_applicable,omitempty"`
	NotOfferedABI []string `json:"abis_not_offered"`
	Cells         []Cell   `json:"cells"`
	Summary       Summary  `json:"summary"`
	Millis        int64    `json:"ms"`
}

// OK reports whether every measured cell matched.
func (r *Report) OK() bool { return r.Summary.Mismatch == 0 }

// Run runs the probe. It returns an error when it cannot probe at all (not
// root, model inputs unreadable); mismatches are in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Parallel <= 0 {
		o.Parallel = 8
	}
	h := o.Host
	self, err := h.Process(os.Getpid(), mustInitNS(h))
	if err != nil {
		return nil, fmt.Errorf("reading this process's credentials: %w", err)
	}
	const setids = 1<<6 | 1<<7 // CAP_SETGID, CAP_SETUID
	if self.Status.UID[1] != 0 || self.Status.CapEff&setids != setids {
		return nil, errors.New("probe starts children with other credentials, which needs root (uid 0 with CAP_SETUID and CAP_SETGID): run it as root")
	}
	rep := &Report{Kernel: h.KernelRelease(), GateRunning: o.Gate.Enforced()}
	sysctl, serr := h.Sysctl(hostinfo.UffdSysctl)
	if fd, err := uffd.Syscall(decision.UserModeOnly | decision.CloseOnExec); err == nil {
		unix.Close(fd)
	} else if errors.Is(err, unix.ENOSYS) && serr != nil {
		rep.NotApplicable = "this kernel has no userfaultfd (the syscall returns ENOSYS and vm.unprivileged_userfaultfd does not exist): nothing to probe"
		rep.Cells = []Cell{}
		rep.NotOfferedABI = []string{}
		return rep, nil
	}
	if serr != nil {
		return nil, fmt.Errorf("reading %s: %w", hostinfo.UffdSysctl, serr)
	}
	if sysctl != "0" && sysctl != "1" {
		return nil, fmt.Errorf("%s is %q: the model knows 0 and 1", hostinfo.UffdSysctl, sysctl)
	}
	rep.Sysctl = sysctl
	node, err := h.Node(hostinfo.DeviceName)
	if err != nil {
		return nil, fmt.Errorf("inspecting /dev/userfaultfd: %w", err)
	}
	rep.Device = "absent"
	if node.Present {
		rep.Device = fmt.Sprintf("%s %d:%d", node.ModeString(), node.UID, node.GID)
		if node.ACL != nil {
			rep.Device += " ACL " + node.ACL.String()
		}
	}
	rep.Model = "the kernel's checks alone (uffdgate is not running)"
	if o.Gate.Enforced() {
		rep.Model = o.Gate.Describe()
	}
	k := decision.Kernel{UnprivilegedUserfaultfd: sysctl == "1"}
	// Children run o.Exe in this cgroup: the gate matches them on those, and
	// on the credentials each reports.
	base, _ := h.SubjectOf(self)
	if id, err := h.FileID(strings.TrimPrefix(o.Exe, "/")); err == nil {
		base.Exe, base.HasExe = id, true
	}

	// One child first: if children cannot set themselves up, say so once
	// instead of reporting a matrix of failures.
	if res, failed, _ := runChild(ctx, o, Identities()[3], decision.PathSyscall64, decision.UserModeOnly|decision.CloseOnExec); failed != "" {
		return nil, fmt.Errorf("a probe child could not run: %s", failed)
	} else if res.CapEff != 0 || res.UID != Nobody {
		return nil, fmt.Errorf("a probe child did not take the credentials asked for: uid %d, capabilities %#x (want uid %d, none)", res.UID, res.CapEff, Nobody)
	}

	type job struct {
		id    Identity
		path  decision.Path
		flags uint32
	}
	var jobs []job
	for _, id := range Identities() {
		for _, p := range Paths() {
			for _, f := range []uint32{decision.CloseOnExec, decision.CloseOnExec | decision.UserModeOnly} {
				jobs = append(jobs, job{id, p, f})
			}
		}
	}
	rep.Cells = make([]Cell, len(jobs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.Parallel)
	for i, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			res, got, ms := runChild(ctx, o, j.id, j.path, j.flags)
			rep.Cells[i] = judge(k, o.Gate, base, node, j.id, j.path, j.flags, res, got, ms)
		}()
	}
	wg.Wait()
	notOffered := map[string]bool{}
	for _, c := range rep.Cells {
		rep.Summary.Cells++
		switch c.Verdict {
		case Match:
			rep.Summary.Match++
		case Mismatch:
			rep.Summary.Mismatch++
		case NotOffered:
			rep.Summary.NotOffered++
		}
		notOffered[c.Path] = notOffered[c.Path] || c.Verdict == NotOffered
	}
	rep.NotOfferedABI = []string{}
	for _, p := range Paths() {
		if notOffered[p.String()] {
			rep.NotOfferedABI = append(rep.NotOfferedABI, p.String())
		}
	}
	rep.Millis = time.Since(start).Milliseconds()
	return rep, nil
}

func mustInitNS(h hostinfo.Host) string {
	ns, _ := h.InitUserNS()
	return ns
}

// runChild starts one child and waits for it, SIGKILLing it at its deadline.
func runChild(ctx context.Context, o Options, id Identity, p decision.Path, flags uint32) (childResult, string, int64) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	args := append(append([]string{}, o.ChildArgs...),
		"--uid", strconv.Itoa(id.UID), "--gid", strconv.Itoa(id.GID),
		"--caps", strconv.FormatUint(id.Keep, 16), "--path", p.String(), "--flags", strconv.FormatUint(uint64(flags), 16))
	cmd := exec.CommandContext(ctx, o.Exe, args...)
	// CommandContext kills with SIGKILL; nothing else ends a task stuck in a
	// kernel-mode fault. WaitDelay bounds waiting for its pipes after that.
	cmd.WaitDelay = time.Second
	// Die with the probe rather than outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run() // Run waits: the child is reaped on every path
	ms := time.Since(start).Milliseconds()
	var res childResult
	if ctx.Err() == context.DeadlineExceeded {
		return res, fmt.Sprintf("killed at deadline (%s)", o.Timeout), ms
	}
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil {
		return res, fmt.Sprintf("child failed: %v: %s%s", err, stdout.String(), stderr.String()), ms
	}
	if res.Error != "" {
		return res, "child failed: " + res.Error, ms
	}
	return res, "", ms
}

func errnoName(e int) string {
	if e == 0 {
		return "0"
	}
	return unix.ErrnoName(unix.Errno(e))
}

// judge compares one child's result with the model.
func judge(k decision.Kernel, gate hostinfo.Gate, base decision.Subject, node hostinfo.Node, id Identity, p decision.Path, flags uint32, res childResult, failed string, ms int64) Cell {
	umo := flags&decision.UserModeOnly != 0
	c := Cell{Identity: id.Name, UID: id.UID, Path: p.String(), Flags: decision.FlagNames(flags), UserModeOnly: umo,
		CapEff: strconv.FormatUint(res.CapEff, 16), Millis: ms}
	if failed != "" {
		c.Got, c.Verdict, c.Expected = failed, Mismatch, "a result"
		return c
	}
	// The subject as the child really was.
	s := base
	s.CapEffective, s.EUID, s.EGID = res.CapEff, uint32(res.UID), uint32(res.GID)
	s.Groups = make([]uint32, len(res.Groups))
	for i, g := range res.Groups {
		s.Groups[i] = uint32(g)
	}
	// What should happen: the node's permissions first for the device paths
	// (the child opens it O_RDWR), then the model.
	want, layer := "", ""
	if p.IsDevice() {
		cred := hostinfo.Cred{UID: uint32(res.UID), GID: uint32(res.GID), Groups: s.Groups, CapEff: res.CapEff, InitUserNS: s.InitUserNS}
		switch ok, why := node.Allows(cred, hostinfo.PermRead|hostinfo.PermWrite); {
		case !node.Present:
			want = "unreachable (ENOENT on open)"
		case !ok:
			want = "unreachable (EACCES on open)"
			c.Detail = "the node's permissions: " + why
		}
	}
	if want == "" {
		g := hostinfo.KernelOnly
		if gate.Enforced() {
			g = gate.Model()
		}
		o := decision.Expect(k, g, s, decision.Request{Path: p, Flags: flags, FlagsKnown: true})
		want, layer = "created", o.Layer
		if o.Errno != 0 {
			want = unix.ErrnoName(o.Errno)
		}
	}
	c.Expected = want
	if layer != "" {
		c.Expected += " (" + layer + ")"
	}
	switch {
	case res.OpenErrno != 0:
		c.Got = fmt.Sprintf("unreachable (%s on open)", errnoName(res.OpenErrno))
	case res.Errno == int(unix.ENOSYS) && p != decision.PathSyscall64 && p != decision.PathIoctl64:
		c.Got, c.Verdict = "not offered (ENOSYS)", NotOffered
		c.Detail = "this kernel does not offer the " + abiName(p) + " ABI"
		return c
	case res.Errno != 0:
		c.Got = errnoName(res.Errno)
	default:
		c.Got = "created"
	}
	if c.Got != want {
		c.Verdict = Mismatch
		c.Detail = "expected " + c.Expected + ", got " + c.Got
		return c
	}
	c.Verdict = Match
	if res.Created {
		c.Behaviour, c.Verdict = behaviour(res, umo)
	}
	return c
}

// behaviour checks what a created context does: user-mode-only ones serve a
// user-mode fault and refuse the kernel-mode access with EFAULT; kernel-fault
// ones serve it.
func behaviour(res childResult, umo bool) (string, string) {
	switch {
	case !res.Exercised:
		return "exercise failed: " + res.ExerciseError, Mismatch
	case umo && res.UserFaultServed && res.KernelAccessErrno == int(unix.EFAULT):
		return "user fault served, kernel access EFAULT", Match
	case umo:
		return fmt.Sprintf("user-mode-only context misbehaves: user fault served %v, kernel access errno %s (want EFAULT)", res.UserFaultServed, errnoName(res.KernelAccessErrno)), Mismatch
	case res.KernelFaultServed:
		return "kernel fault served", Match
	}
	return fmt.Sprintf("kernel-fault context did not serve the kernel-mode access (errno %s)", errnoName(res.KernelAccessErrno)), Mismatch
}

func abiName(p decision.Path) string {
	switch p {
	case decision.PathSyscallIA32, decision.PathIoctlIA32:
		return "ia32 (IA32 emulation off or disabled with ia32_emulation=0)"
	case decision.PathSyscallX32, decision.PathIoctlX32:
		return "x32 (CONFIG_X86_X32_ABI off)"
	}
	return p.String()
}
