//go:build !vme2e

package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/uffdgate/uffdgate/internal/benchrun"
	"github.com/uffdgate/uffdgate/internal/vmtest"
)

// BenchmarkHostSyscallTax measures, on this machine's real CPU, what the
// fallbacks that run here cost unrelated syscalls: one seccomp filter (uffdgate
// exec) and the audit backend (a raw sys_exit tracepoint), against no
// protection, interleaved. (The LSM gate cannot load here; its figures come from
// the VM: TestBench.) Then the daemon under a flood on this CPU, fed by the
// audit backend. Run with -benchtime 1x: each run is a whole measurement.
func BenchmarkHostSyscallTax(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root (BPF)")
	}
	dir := b.TempDir()
	ug := vmtest.BuildStatic(b, module+"/cmd/uffdgate", dir)
	guest := vmtest.BuildStatic(b, module+"/e2e/benchguest", dir)
	up := func() (func(), error) {
		cmd := exec.Command(ug, "run", "--backend", "audit", "--state", "", "--metrics-addr", "")
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() && !strings.Contains(sc.Text(), `"event":"started"`) {
		}
		go func() {
			for sc.Scan() {
			}
		}()
		return func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }, nil
	}
	variants := []benchrun.Variant{
		{Name: "none"},
		{Name: "seccomp", Wrap: func(a []string) []string { return append([]string{ug, "exec", "--"}, a...) }},
		{Name: "audit-backend", Up: up},
	}
	try := vmtest.BuildStatic(b, module+"/e2e/uffdtry", dir)
	for range b.N {
		s, err := benchrun.Run(guest, variants, benchrun.Workloads, 7, 1000000, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("\n%s", benchrun.Table(s, variants, benchrun.Workloads))
		// The daemon's side of a flood on a real CPU: the audit backend feeds
		// it the same events the LSM gate would.
		out, err := exec.Command(guest, "-table=false", "-flood-backend", "audit", "-uffdgate", ug, "-uffdtry", try).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "BENCH flood") {
			b.Fatalf("flood: %v\n%s", err, out)
		}
		b.Logf("%s", strings.TrimSpace(string(out)))
	}
}
