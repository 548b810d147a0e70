//go:build !vme2e

package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/uffdgate/uffdgate/internal/vmtest"
)

// BenchmarkHostSyscallTax measures, on this machine's real CPU, what the
// fallbacks that run here cost unrelated syscalls: one seccomp filter (uffdgate
// exec) and the audit backend (a raw sys_exit tracepoint), against no
// protection, interleaved. (The LSM gate cannot load here; its figures come from
// the VM: TestBench.) Then the daemon's start and a flood on this CPU, through
// the audit backend, which feeds the daemon the same events the gate would.
// Run with -benchtime 1x: each run is a whole measurement.
func BenchmarkHostSyscallTax(b *testing.B) {
	for range b.N {
		b.Logf("\n%s", hostBench(b, "-n", "1000000", "-rounds", "7", "-startups", "5"))
	}
}

// TestHostBenchSmoke runs BenchmarkHostSyscallTax's code with tiny counts, so
// that it cannot rot.
func TestHostBenchSmoke(t *testing.T) {
	out := hostBench(t, "-n", "2000", "-rounds", "1", "-startups", "1")
	for _, want := range []string{"| getpid | seccomp |", "| fork | audit-backend |", "BENCH startup of the audit backend", "BENCH flood (audit backend): 100000 refused requests"} {
		if !strings.Contains(out, want) {
			t.Errorf("host bench output lacks %q:\n%s", want, out)
		}
	}
}

// hostBench runs benchguest on this host with the variants that run here.
func hostBench(tb testing.TB, args ...string) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("needs root (BPF)")
	}
	dir := tb.TempDir()
	ug := vmtest.BuildStatic(tb, module+"/cmd/uffdgate", dir)
	guest := vmtest.BuildStatic(tb, module+"/e2e/benchguest", dir)
	try := vmtest.BuildStatic(tb, module+"/e2e/uffdtry", dir)
	argv := append([]string{"-variants", "seccomp,audit-backend", "-backend", "audit", "-uffdgate", ug, "-uffdtry", try}, args...)
	out, err := exec.Command(guest, argv...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "BENCH failed") {
		tb.Fatalf("benchguest %v: %v\n%s", argv, err, out)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "|") || strings.HasPrefix(l, "BENCH") && !strings.HasPrefix(l, "BENCH-TABLE") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
