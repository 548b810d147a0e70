//go:build linux && amd64

package probe

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/hostinfo"
	"github.com/uffdgate/uffdgate/internal/hostinfo/hostfixture"
	"github.com/uffdgate/uffdgate/internal/policy"
)

// TestJudge compares hand-made child results with the model.
func TestJudge(t *testing.T) {
	f := hostfixture.New()
	h := f.Host()
	node, err := h.Node(hostinfo.DeviceName) // 0600 root:root
	if err != nil {
		t.Fatal(err)
	}
	f.Node("dev/wide", 0o666, 0, 0, nil)
	wide, _ := h.Node("dev/wide")
	ids := map[string]Identity{}
	for _, id := range Identities() {
		ids[id.Name] = id
	}
	all := uint64(1)<<41 - 1
	root := func(caps uint64) childResult { return childResult{UID: 0, GID: 0, CapEff: caps} }
	nobody := func(caps uint64) childResult { return childResult{UID: Nobody, GID: Nobody, CapEff: caps} }
	with := func(r childResult, edit func(*childResult)) childResult { edit(&r); return r }
	enforcing := h.WithPolicy(policy.Default(), true)
	off := hostinfo.Gate{}
	k0 := decision.Kernel{}
	kf, umo := decision.CloseOnExec, decision.CloseOnExec|decision.UserModeOnly
	for _, c := range []struct {
		name     string
		gate     hostinfo.Gate
		node     hostinfo.Node
		id       string
		path     decision.Path
		flags    uint32
		res      childResult
		failed   string
		verdict  string
		expected string
	}{
		{"kernel refuses", off, node, "nobody-ptrace", decision.PathSyscall64, kf, with(nobody(0), func(r *childResult) { r.Errno = int(unix.EPERM) }), "", Match, "EPERM (kernel)"},
		{"kernel would refuse, yet created", off, node, "nobody-ptrace", decision.PathSyscall64, kf, with(nobody(0), func(r *childResult) { r.Created, r.Exercised, r.KernelFaultServed = true, true, true }), "", Mismatch, "EPERM (kernel)"},
		{"kernel-fault context serves", off, node, "root+ptrace", decision.PathIoctl64, kf, with(root(all), func(r *childResult) { r.Created, r.Exercised, r.KernelFaultServed = true, true, true }), "", Match, "created"},
		{"kernel-fault context does not serve", off, node, "root+ptrace", decision.PathIoctl64, kf, with(root(all), func(r *childResult) { r.Created, r.Exercised = true, true }), "", Mismatch, "created"},
		{"user-mode-only context", off, node, "root-ptrace", decision.PathSyscallIA32, umo, with(root(all&^ptraceBit), func(r *childResult) {
			r.Created, r.Exercised, r.UserFaultServed, r.KernelAccessErrno = true, true, true, int(unix.EFAULT)
		}), "", Match, "created"},
		{"user-mode-only context serves a kernel fault", off, node, "root-ptrace", decision.PathSyscall64, umo, with(root(all&^ptraceBit), func(r *childResult) {
			r.Created, r.Exercised, r.UserFaultServed, r.KernelAccessErrno = true, true, true, 0
		}), "", Mismatch, "created"},
		{"unreachable node", off, node, "nobody-ptrace", decision.PathIoctl64, umo, with(nobody(0), func(r *childResult) { r.OpenErrno = int(unix.EACCES) }), "", Match, "unreachable (EACCES on open)"},
		{"node should open", off, wide, "nobody-ptrace", decision.PathIoctl64, umo, with(nobody(0), func(r *childResult) { r.OpenErrno = int(unix.EACCES) }), "", Mismatch, "created"},
		{"x32 not offered", off, node, "root+ptrace", decision.PathSyscallX32, kf, with(root(all), func(r *childResult) { r.Errno = int(unix.ENOSYS) }), "", NotOffered, "created"},
		{"64-bit ENOSYS is no ABI question", off, node, "root+ptrace", decision.PathSyscall64, kf, with(root(all), func(r *childResult) { r.Errno = int(unix.ENOSYS) }), "", Mismatch, "created"},
		{"killed", off, node, "root+ptrace", decision.PathSyscall64, kf, childResult{}, "killed at deadline (10s)", Mismatch, "a result"},
		{"gate refuses", enforcing, node, "root-ptrace", decision.PathIoctl64, kf, with(root(all&^ptraceBit), func(r *childResult) { r.Errno = int(unix.EPERM) }), "", Match, "EPERM (uffdgate)"},
		{"gate should refuse", enforcing, node, "root-ptrace", decision.PathIoctl64, kf, with(root(all&^ptraceBit), func(r *childResult) { r.Created, r.Exercised, r.KernelFaultServed = true, true, true }), "", Mismatch, "EPERM (uffdgate)"},
		{"gate allowlists ptrace", enforcing, node, "root+ptrace", decision.PathIoctlIA32, kf, with(root(all), func(r *childResult) { r.Created, r.Exercised, r.KernelFaultServed = true, true, true }), "", Match, "created"},
	} {
		cell := judge(k0, c.gate, decision.Subject{InitUserNS: true}, c.node, ids[c.id], c.path, c.flags, c.res, c.failed, 1)
		if cell.Verdict != c.verdict || !strings.HasPrefix(cell.Expected, c.expected) {
			t.Errorf("%s: verdict %s, expected %q (got %q, %s); want %s, %q", c.name, cell.Verdict, cell.Expected, cell.Got, cell.Detail, c.verdict, c.expected)
		}
	}
}

// TestChildKilledAtDeadline: a child that outlives its deadline is SIGKILLed
// and reaped, and the cell says so.
func TestChildKilledAtDeadline(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	o := Options{Exe: "/bin/sh", ChildArgs: []string{"-c", "echo $$ > " + pidFile + "; trap '' TERM; exec sleep 30", "sh"}, Timeout: 300 * time.Millisecond}
	start := time.Now()
	_, failed, _ := runChild(context.Background(), o, Identities()[0], decision.PathSyscall64, decision.CloseOnExec)
	if !strings.HasPrefix(failed, "killed at deadline") {
		t.Fatalf("result %q, want a kill at the deadline", failed)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s for a 300ms deadline", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	// Reaped: not even a zombie remains.
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !os.IsNotExist(err) {
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		t.Errorf("child %d still exists after runChild: %s", pid, st)
	}
}

// TestChildGarbage: output that is not a result is a failed child, not a cell.
func TestChildGarbage(t *testing.T) {
	o := Options{Exe: "/bin/echo", ChildArgs: []string{"hello"}, Timeout: 5 * time.Second}
	if _, failed, _ := runChild(context.Background(), o, Identities()[0], decision.PathSyscall64, decision.CloseOnExec); !strings.HasPrefix(failed, "child failed") {
		t.Errorf("result %q", failed)
	}
}

// TestRunNeedsRoot: without CAP_SETUID the probe refuses to start.
func TestRunNeedsRoot(t *testing.T) {
	f := hostfixture.New()
	f.AddProc(hostfixture.Proc{PID: os.Getpid(), Name: "uffdgate", UID: 1000, GID: 1000, Exe: "/usr/bin/uffdgate"})
	if _, err := Run(context.Background(), Options{Host: f.Host()}); err == nil || !strings.Contains(err.Error(), "run it as root") {
		t.Errorf("unprivileged probe: %v", err)
	}
}
