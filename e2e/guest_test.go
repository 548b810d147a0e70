//go:build vme2e

// These tests run inside a VM booted by vm_test.go, with BPF LSM active and
// uffdgate, uffdtry and this binary in the initramfs. They run as pid 1's child,
// as root, on a real stock kernel.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
)

const (
	uffdgateBin = "/uffdgate"
	tryBin      = "/uffdtry"
	testUID     = 1000
)

func TestMain(m *testing.M) {
	// Widen the device node as admins do (field case 2, 8): uid 1000 can open it,
	// so the gate, not the node's mode, must hold it to user-mode-only.
	if err := os.Chmod("/dev/userfaultfd", 0o666); err != nil {
		fmt.Println("chmod /dev/userfaultfd:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// daemon is a running `uffdgate run` with its JSON log lines.
type daemon struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []map[string]any
	raw   []string
	done  chan error
}

func startDaemon(t *testing.T, policyYAML string) *daemon {
	t.Helper()
	if policyYAML == "" {
		return startDaemonFile(t, "")
	}
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(policyYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	return startDaemonFile(t, p)
}

// startDaemonFile runs `uffdgate run` on a policy file ("" for the default).
func startDaemonFile(t *testing.T, policyFile string, extra ...string) *daemon {
	t.Helper()
	args := append([]string{"run"}, extra...)
	if policyFile != "" {
		args = append(args, "--policy", policyFile)
	}
	d := &daemon{cmd: exec.Command(uffdgateBin, args...), done: make(chan error, 1)}
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	d.cmd.Stderr = &stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			json.Unmarshal(sc.Bytes(), &m)
			d.mu.Lock()
			d.raw = append(d.raw, sc.Text())
			d.lines = append(d.lines, m)
			d.mu.Unlock()
		}
		d.done <- d.cmd.Wait()
	}()
	if _, ok := d.waitFor(func(m map[string]any) bool { return m["event"] == "started" }, 90*time.Second); !ok {
		d.cmd.Process.Kill()
		t.Fatalf("uffdgate run did not report started:\n%s\nstderr: %s", d.log(), stderr.String())
	}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
		}
	})
	return d
}

func (d *daemon) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.raw, "\n")
}

func (d *daemon) find(pred func(map[string]any) bool) (map[string]any, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.lines {
		if m != nil && pred(m) {
			return m, true
		}
	}
	return nil, false
}

func (d *daemon) waitFor(pred func(map[string]any) bool, timeout time.Duration) (map[string]any, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if m, ok := d.find(pred); ok {
			return m, true
		}
		if time.Now().After(deadline) {
			return nil, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and requires a clean exit within seconds.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("uffdgate exited with %v after SIGTERM\n%s", err, d.log())
		}
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		t.Fatalf("uffdgate did not exit within 10 s of SIGTERM")
	}
	if _, ok := d.find(func(m map[string]any) bool { return m["event"] == "stopped" }); !ok {
		t.Errorf("no stopped line after SIGTERM:\n%s", d.log())
	}
	t.Logf("uffdgate stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}

func setSysctl(t *testing.T, v int) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/unprivileged_userfaultfd", []byte(fmt.Sprint(v)), 0); err != nil {
		t.Fatal(err)
	}
}

// subject is a kind of caller: credentials for uffdtry and the model's view.
type subject struct {
	name   string
	uid    int
	caps   string
	userns bool
	model  decision.Subject
}

const allCaps = uint64(1)<<(capability.Last+1) - 1

func subjects() []subject {
	ptrace := uint64(1) << capability.SysPtrace
	return []subject{
		{"uid0+ptrace", 0, "all", false, decision.Subject{CapEffective: allCaps, InitUserNS: true}},
		{"uid0-ptrace", 0, "all-but-ptrace", false, decision.Subject{CapEffective: allCaps &^ ptrace, InitUserNS: true}},
		{"uid1000+ptrace", testUID, "ptrace", false, decision.Subject{CapEffective: ptrace, InitUserNS: true}},
		{"uid1000-ptrace", testUID, "none", false, decision.Subject{InitUserNS: true}},
		// Root of a user namespace made by uid 1000: every capability, none of them
		// in the initial namespace.
		{"userns-root", testUID, "none", true, decision.Subject{CapEffective: allCaps, InitUserNS: false}},
	}
}

// runTry runs uffdtry as s with extra arguments and returns its report.
func runTry(t *testing.T, s subject, extraFiles []*os.File, args ...string) report {
	t.Helper()
	argv := append([]string{"-uid", fmt.Sprint(s.uid), "-caps", s.caps}, args...)
	if s.userns {
		argv = append([]string{"-userns"}, argv...)
	}
	cmd := exec.Command(tryBin, argv...)
	cmd.ExtraFiles = extraFiles
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan struct{})
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.Output()
	close(done)
	var r report
	if jerr := json.Unmarshal(out, &r); jerr != nil || err != nil || r.Error != "" {
		t.Fatalf("uffdtry %v: %v / %v: %s %s", argv, err, jerr, out, stderr.String())
	}
	return r
}

func parsePath(t *testing.T, s string) decision.Path {
	for p := decision.Path(0); p < decision.NumPaths; p++ {
		if p.String() == s {
			return p
		}
	}
	t.Fatalf("unknown path %q", s)
	return 0
}

// availablePaths drops the ABIs this kernel does not offer (x32 needs
// syscall.x32=y on Debian kernels), checked with a user-mode-only request.
func availablePaths(t *testing.T) []decision.Path {
	var all []string
	for p := decision.PathSyscall64; p <= decision.PathIoctlX32; p++ {
		all = append(all, fmt.Sprintf("%s:1", p))
	}
	r := runTry(t, subjects()[0], nil, "-try", strings.Join(all, ","))
	var out []decision.Path
	for _, a := range r.Attempts {
		if a.Errno == int(unix.ENOSYS) {
			t.Logf("ABI path %s not offered by this kernel (ENOSYS)", a.Path)
			continue
		}
		if a.Errno != 0 {
			t.Fatalf("user-mode-only request through %s failed for root: errno %d", a.Path, a.Errno)
		}
		out = append(out, parsePath(t, a.Path))
	}
	if len(out) < 4 {
		t.Fatalf("only %v available: want at least the x86_64 and ia32 ABIs of both paths", out)
	}
	return out
}

// capGate is the model of a policy with the default CAP_SYS_PTRACE allowlist.
func capGate(mode decision.Mode, audit bool) decision.Gate {
	return decision.Gate{Mode: mode, Audit: audit, Rules: []decision.Rule{decision.CapabilityRule(1 << capability.SysPtrace)}}
}

func policyYAML(g decision.Gate) string {
	return fmt.Sprintf("mode: %s\naudit: %v\nallowlist:\n  capabilities: [CAP_SYS_PTRACE]\n", g.Mode, g.Audit)
}

func kernelRelease() string {
	var u unix.Utsname
	unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}

func errnoName(e int) string {
	if e == 0 {
		return "ok"
	}
	return unix.ErrnoName(unix.Errno(e))
}

// TestMatrix: {allow, user-mode-only, deny} x {enforce, audit} x {sysctl 0, 1} x
// subjects x every creation path and ABI x {with, without UFFD_USER_MODE_ONLY}:
// every real outcome equals the model's, and every decision the model says is
// reported shows up as a log line with the right fields.
func TestMatrix(t *testing.T) {
	paths := availablePaths(t)
	flagSets := []uint32{decision.CloseOnExec, decision.UserModeOnly | decision.CloseOnExec}
	cases, mismatches, checkedEvents := 0, 0, 0
	for _, mode := range decision.Modes() {
		for _, audit := range []bool{false, true} {
			g := capGate(mode, audit)
			// Every decision's line is checked here: no rate limit.
			p := filepath.Join(t.TempDir(), "policy.yaml")
			if err := os.WriteFile(p, []byte(policyYAML(g)), 0o600); err != nil {
				t.Fatal(err)
			}
			d := startDaemonFile(t, p, "--log-burst", "1000000")
			for _, sysctl := range []int{0, 1} {
				setSysctl(t, sysctl)
				k := decision.Kernel{UnprivilegedUserfaultfd: sysctl == 1}
				for _, s := range subjects() {
					var tries []string
					for _, p := range paths {
						for _, f := range flagSets {
							tries = append(tries, fmt.Sprintf("%s:%#x", p, f))
						}
					}
					r := runTry(t, s, nil, "-try", strings.Join(tries, ","))
					for _, a := range r.Attempts {
						cases++
						req := decision.Request{Path: parsePath(t, a.Path), Flags: uint32(a.Arg), FlagsKnown: true}
						want := decision.Expect(k, g, s.model, req)
						if a.Errno != int(want.Errno) {
							mismatches++
							t.Errorf("mode=%s audit=%v sysctl=%d %s %s flags=%s: got %s, model says %s (%s)",
								mode, audit, sysctl, s.name, a.Path, decision.FlagNames(req.Flags), errnoName(a.Errno), errnoName(int(want.Errno)), want.Layer)
						}
						if n := checkEvent(t, d, r.PID, req, want); n < 0 {
							t.Logf("... in mode=%s audit=%v sysctl=%d subject=%s", mode, audit, sysctl, s.name)
						} else {
							checkedEvents += n
						}
					}
				}
			}
			d.stop(t)
			if m, _ := d.find(func(m map[string]any) bool { return m["event"] == "stopped" }); m["events_lost"] != float64(0) {
				t.Errorf("the daemon lost events at this rate: %v", m)
			}
		}
	}
	t.Logf("MATRIX kernel=%s cases=%d mismatches=%d events_checked=%d", kernelRelease(), cases, mismatches, checkedEvents)
	fmt.Printf("MATRIX kernel=%s cases=%d mismatches=%d events_checked=%d\n", kernelRelease(), cases, mismatches, checkedEvents)
}

// checkEvent requires a log line for a reported decision, with the fields of the
// request, and none for a decision that is not reported.
func checkEvent(t *testing.T, d *daemon, pid int, req decision.Request, want decision.Outcome) int {
	t.Helper()
	match := func(m map[string]any) bool {
		// The report's pid is the process id: the event's tgid (its pid is the thread's).
		return m["event"] == "decision" && m["tgid"] == float64(pid) && m["path"] == req.Path.String() &&
			m["flags"] == fmt.Sprintf("0x%x", req.Flags)
	}
	if want.GateSaw && want.Gate.Report {
		m, ok := d.waitFor(match, 10*time.Second)
		if !ok {
			var same []string
			for _, l := range strings.Split(d.log(), "\n") {
				if strings.Contains(l, fmt.Sprintf(`"tgid":%d,`, pid)) {
					same = append(same, l)
				}
			}
			t.Errorf("no event for pid %d %s flags 0x%x (want %s); the daemon logged for this pid:\n%s", pid, req.Path, req.Flags, want.Gate.Verdict, strings.Join(same, "\n"))
			return -1
		}
		for k, v := range map[string]any{"decision": want.Gate.Verdict.String(), "comm": "uffdtry", "exe": tryBin} {
			if m[k] != v {
				t.Errorf("event for pid %d %s: %s = %v, want %v", pid, req.Path, k, m[k], v)
			}
		}
		for _, k := range []string{"time", "uid", "cgroup", "reason", "flags_decoded"} {
			if m[k] == nil || m[k] == "" {
				t.Errorf("event for pid %d %s: field %s missing: %v", pid, req.Path, k, m)
			}
		}
		if want.Gate.Verdict != decision.Allow && (m["remedy"] == nil || m["remedy"] == "") {
			t.Errorf("event for pid %d %s: no remedy: %v", pid, req.Path, m)
		}
		return 1
	}
	if m, ok := d.find(match); ok {
		t.Errorf("unexpected event for pid %d %s flags 0x%x (gate saw it: %v): %v", pid, req.Path, req.Flags, want.GateSaw, m)
	}
	return 0
}

func subjectNamed(t *testing.T, name string) subject {
	for _, s := range subjects() {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("no subject %q", name)
	return subject{}
}

// TestEndToEnd: under the default policy a user-mode-only context works (API,
// register, a user-mode fault served with UFFDIO_COPY) and a kernel-mode access to
// it fails with EFAULT; an allowlisted process's kernel-fault context serves a
// kernel-mode fault.
func TestEndToEnd(t *testing.T) {
	setSysctl(t, 0)
	d := startDaemon(t, "")
	defer d.stop(t)
	for _, path := range []string{"syscall", "ioctl", "syscall-ia32", "ioctl-ia32"} {
		r := runTry(t, subjectNamed(t, "uid1000-ptrace"), nil, "-e2e", "user-mode-only", "-path", path)
		if !r.UserFaultServed || r.KernelAccessErrno != int(unix.EFAULT) {
			t.Errorf("user-mode-only context via %s as uid 1000: user fault served %v, kernel access errno %s (want served, EFAULT)",
				path, r.UserFaultServed, errnoName(r.KernelAccessErrno))
		}
		for _, s := range []string{"uid0+ptrace", "uid1000+ptrace"} {
			r := runTry(t, subjectNamed(t, s), nil, "-e2e", "kernel-fault", "-path", path)
			if !r.KernelFaultServed {
				t.Errorf("kernel-fault context via %s as allowlisted %s: kernel-mode fault not served (errno %s)", path, s, errnoName(r.KernelAccessErrno))
			}
		}
	}
}

// TestAttackVariants probes what an attacker controls: high bits of registers the
// kernel ignores, an open device fd handed to an unprivileged process, invalid
// flags, root without CAP_SYS_PTRACE. Each outcome must equal the model's.
func TestAttackVariants(t *testing.T) {
	setSysctl(t, 1) // let the syscall path reach the gate for unprivileged callers
	defer setSysctl(t, 0)
	d := startDaemonFile(t, "", "--log-burst", "1000000") // every line is checked
	defer d.stop(t)
	g := capGate(decision.ModeUserModeOnly, false)
	k := decision.Kernel{UnprivilegedUserfaultfd: true}

	type tc struct {
		subject string
		try     string
		path    decision.Path
		flags   uint32 // what the kernel keeps
	}
	cases := []tc{
		// The kernel keeps the low 32 bits of the ioctl argument and the flags.
		{"uid1000-ptrace", "ioctl:0x100000000", decision.PathIoctl64, 0},
		{"uid1000-ptrace", "ioctl:0x100000001", decision.PathIoctl64, 1},
		{"uid1000-ptrace", "syscall:0x100000000", decision.PathSyscall64, 0},
		{"uid1000-ptrace", "syscall:0xffffffff00000001", decision.PathSyscall64, 1},
		// ... and the low 32 bits of the syscall number.
		{"uid1000-ptrace", "syscall-nrhigh:0", decision.PathSyscall64, 0},
		{"uid1000-ptrace", "syscall-nrhigh:1", decision.PathSyscall64, 1},
		// Root is not special.
		{"uid0-ptrace", "ioctl:0", decision.PathIoctl64, 0},
		{"uid0-ptrace", "ioctl-ia32:0", decision.PathIoctlIA32, 0},
		{"uid0-ptrace", "syscall-ia32:0", decision.PathSyscallIA32, 0},
		// Invalid flags: the kernel's EINVAL, before the gate.
		{"uid1000-ptrace", "ioctl:0x2", decision.PathIoctl64, 2},
		{"uid0+ptrace", "syscall:0x3", decision.PathSyscall64, 3},
		{"userns-root", "ioctl:0x80000", decision.PathIoctl64, decision.CloseOnExec},
	}
	for _, c := range cases {
		s := subjectNamed(t, c.subject)
		r := runTry(t, s, nil, "-try", c.try)
		want := decision.Expect(k, g, s.model, decision.Request{Path: c.path, Flags: c.flags, FlagsKnown: true})
		if got := r.Attempts[0].Errno; got != int(want.Errno) {
			t.Errorf("%s %s: got %s, model says %s", c.subject, c.try, errnoName(got), errnoName(int(want.Errno)))
		}
		if want.Errno == unix.EPERM && want.Layer == "uffdgate" {
			checkEvent(t, d, r.PID, decision.Request{Path: c.path, Flags: c.flags, FlagsKnown: true}, want)
		}
	}

	// An fd of the node opened by root and handed over: the context belongs to the
	// process issuing the ioctl, and so does the decision.
	if err := os.Chmod("/dev/userfaultfd", 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod("/dev/userfaultfd", 0o666)
	dev, err := os.OpenFile("/dev/userfaultfd", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	s := subjectNamed(t, "uid1000-ptrace")
	r := runTry(t, s, []*os.File{dev}, "-devfd", "3", "-try", "ioctl:0,ioctl:1,ioctl-ia32:0x80000")
	for i, want := range []syscall.Errno{unix.EPERM, 0, unix.EPERM} {
		if got := r.Attempts[i].Errno; got != int(want) {
			t.Errorf("passed device fd, uid 1000, %s:%#x: got %s, want %s", r.Attempts[i].Path, r.Attempts[i].Arg, errnoName(got), errnoName(int(want)))
		}
	}
}

// TestStopDetaches: SIGTERM detaches the gate; the device path is open again.
func TestStopDetaches(t *testing.T) {
	s := subjectNamed(t, "uid0-ptrace")
	d := startDaemon(t, "")
	if r := runTry(t, s, nil, "-try", "ioctl:0"); r.Attempts[0].Errno != int(unix.EPERM) {
		t.Fatalf("with the gate running, root without CAP_SYS_PTRACE got %s for a kernel-fault context, want EPERM", errnoName(r.Attempts[0].Errno))
	}
	d.stop(t)
	if r := runTry(t, s, nil, "-try", "ioctl:0"); r.Attempts[0].Errno != 0 {
		t.Fatalf("after stop, the device path still fails with %s: the gate did not detach", errnoName(r.Attempts[0].Errno))
	}
}
