//go:build linux && amd64

package hostinfo_test

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/hostinfo/hostfixture"
	"github.com/uffdgate/uffdgate/internal/policy"
	"github.com/uffdgate/uffdgate/internal/state"
)

func TestCgroupIDs(t *testing.T) {
	f := hostfixture.New()
	f.Dir("sys/fs/cgroup/machine.slice", 50)
	f.Dir("sys/fs/cgroup/machine.slice/vm1.scope", 77)
	h := f.Host()
	if ids, err := h.CgroupIDs("/machine.slice/vm1.scope"); err != nil || !slices.Equal(ids, []uint64{77, 50, 1}) {
		t.Errorf("ids %v, %v; want the cgroup and its ancestors [77 50 1]", ids, err)
	}
	if _, err := h.CgroupIDs("machine.slice"); err == nil {
		t.Error("a relative cgroup path accepted")
	}
	if _, err := h.CgroupIDs("/nope"); err == nil {
		t.Error("a missing cgroup resolved")
	}
	// Hybrid host with the unified hierarchy unmounted: only its root exists.
	f.File("proc/self/mountinfo", "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n")
	if ids, err := f.Host().CgroupIDs("/"); err != nil || !slices.Equal(ids, []uint64{1}) {
		t.Errorf("unmounted root: %v, %v", ids, err)
	}
	if _, err := f.Host().CgroupIDs("/machine.slice"); err == nil || !strings.Contains(err.Error(), "no cgroup2") {
		t.Errorf("unmounted, below the root: %v", err)
	}
}

// TestSubjectOfMatchesRules: a policy's executable and cgroup rules, resolved
// through the fixture, match the process whose exe and cgroup are those, and
// no other.
func TestSubjectOfMatchesRules(t *testing.T) {
	f := hostfixture.New()
	f.Exe("usr/bin/qemu-system-x86_64", 0x801, 4711)
	f.Exe("usr/bin/other", 0x801, 4712)
	f.Dir("sys/fs/cgroup/machine.slice", 50)
	f.Dir("sys/fs/cgroup/machine.slice/vm1.scope", 77)
	f.AddProc(hostfixture.Proc{PID: 100, Name: "qemu", UID: 64055, GID: 108, Exe: "/usr/bin/qemu-system-x86_64",
		ExeFile: "usr/bin/qemu-system-x86_64", Cgroup: "/machine.slice/vm1.scope"})
	f.AddProc(hostfixture.Proc{PID: 101, Name: "other", UID: 64055, GID: 108, Exe: "/usr/bin/other",
		ExeFile: "usr/bin/other", Cgroup: "/machine.slice/vm1.scope"})
	f.AddProc(hostfixture.Proc{PID: 102, Name: "qemu", UID: 64055, GID: 108, Exe: "/usr/bin/qemu-system-x86_64",
		ExeFile: "usr/bin/qemu-system-x86_64"})
	h := f.Host()
	p, err := policy.Parse("p.yaml", []byte("mode: user-mode-only\nrules:\n  - name: qemu\n    executables: [/usr/bin/qemu-system-x86_64]\n    cgroups: [/machine.slice/**]\n"))
	if err != nil {
		t.Fatal(err)
	}
	g := h.WithPolicy(p, true)
	if len(g.Unresolved) > 0 {
		t.Fatalf("unresolved: %v", g.Unresolved)
	}
	req := decision.Request{Path: decision.PathIoctl64, Flags: 0, FlagsKnown: true}
	for pid, want := range map[int]decision.Verdict{100: decision.Allow, 101: decision.Deny, 102: decision.Deny} {
		proc, err := h.Process(pid, hostfixture.InitNS)
		if err != nil {
			t.Fatal(err)
		}
		s, notes := h.SubjectOf(proc)
		if len(notes) > 0 {
			t.Errorf("pid %d: %v", pid, notes)
		}
		if got := decision.Decide(g.Model(), s, req); got.Verdict != want {
			t.Errorf("pid %d: %s (%s), want %s", pid, got.Verdict, got.Reason, want)
		}
	}
}

func writeState(t *testing.T, path string, s state.State) {
	t.Helper()
	if err := state.Write(path, s); err != nil {
		t.Fatal(err)
	}
}

// TestResolveGate: not running, a policy given instead, a broken state file,
// and a running daemon (a real process named like uffdgate).
func TestResolveGate(t *testing.T) {
	h := hostfixture.New().Host()
	dir := t.TempDir()
	statePath := filepath.Join(dir, "state.json")

	g, err := h.ResolveGate(statePath, "")
	if err != nil || g.Running || g.Policy != nil || g.Enforced() || g.Model().Mode != decision.ModeAllow || len(g.Model().Rules) != 0 {
		t.Errorf("no state file: %+v, %v; want not running, kernel-only model", g, err)
	}
	if !strings.Contains(g.Describe(), "not running") || !strings.Contains(g.Describe(), statePath) {
		t.Errorf("description %q", g.Describe())
	}

	polPath := filepath.Join(dir, "p.yaml")
	os.WriteFile(polPath, []byte("mode: deny\n"), 0o644)
	g, err = h.ResolveGate(statePath, polPath)
	if err != nil || !g.Hypothetical || g.Enforced() || g.Model().Mode != decision.ModeDeny {
		t.Errorf("--policy: %+v, %v", g, err)
	}
	os.WriteFile(polPath, []byte("mode: sometimes\n"), 0o644)
	var perr *policy.Error
	if _, err = h.ResolveGate(statePath, polPath); !errors.As(err, &perr) {
		t.Errorf("invalid --policy: %v, want a *policy.Error", err)
	}

	os.WriteFile(statePath, []byte("{not json"), 0o644)
	if _, err = h.ResolveGate(statePath, ""); err == nil || !strings.Contains(err.Error(), "cannot tell") {
		t.Errorf("broken state file: %v", err)
	}

	// A daemon that is gone: not running.
	writeState(t, statePath, state.State{PID: 999999999, PolicyYAML: "mode: deny\n"})
	if g, err = h.ResolveGate(statePath, ""); err != nil || g.Running {
		t.Errorf("stale state: %+v, %v", g, err)
	}

	// A running daemon: state.Read wants a live process whose comm starts with
	// "uffdgate".
	sleeper := filepath.Join(dir, "uffdgate-sleep")
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, src, sleeper)
	cmd := exec.Command(sleeper, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitComm(t, cmd.Process.Pid, "uffdgate-sleep")
	writeState(t, statePath, state.State{PID: cmd.Process.Pid, State: "enforcing", PolicySource: "/etc/uffdgate.yaml", PolicyYAML: "mode: deny\naudit: true\n"})
	g, err = h.ResolveGate(statePath, "")
	if err != nil || !g.Running || !g.Enforced() || g.PID != cmd.Process.Pid || g.Model().Mode != decision.ModeDeny || !g.Model().Audit {
		t.Errorf("running daemon: %+v, %v", g, err)
	}
	// Regression: a daemon in the audit backend refuses nothing, whatever its
	// policy says; probe and explain expected refusals from it.
	writeState(t, statePath, state.State{PID: cmd.Process.Pid, State: "auditing", Backend: "audit", PolicyYAML: "mode: user-mode-only\n"})
	g, err = h.ResolveGate(statePath, "")
	if err != nil || !g.Enforced() || !g.Model().Audit || g.Backend != "audit" || !strings.Contains(g.Describe(), "refuses nothing") {
		t.Errorf("daemon in the audit backend: %+v (%q), %v; want its policy evaluated as auditing", g, g.Describe(), err)
	}
	if res := decision.Decide(g.Model(), decision.Subject{}, decision.Request{Path: decision.PathSyscall64, Flags: decision.CloseOnExec, FlagsKnown: true}); res.Verdict != decision.WouldDeny {
		t.Errorf("audit backend: a kernel-fault request is %s, want would-deny", res.Verdict)
	}
	writeState(t, statePath, state.State{PID: cmd.Process.Pid, State: "enforcing"})
	if _, err = h.ResolveGate(statePath, ""); err == nil || !strings.Contains(err.Error(), "publishes no policy") {
		t.Errorf("running daemon without a policy text: %v", err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
}

func waitComm(t *testing.T, pid int, want string) {
	for i := 0; i < 200; i++ {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if strings.TrimSpace(string(b)) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d never became %s", pid, want)
}
