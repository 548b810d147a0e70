//go:build !vme2e

// Package e2e proves uffdgate on real kernels: this host-side test boots
// Debian's stock 6.1 and 6.12 kernels in QEMU with BPF LSM active and runs the
// guest tests (guest_test.go, built with -tags vme2e) inside each.
package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/uffdgate/uffdgate/internal/vmtest"
)

const module = "github.com/uffdgate/uffdgate"

func TestVM(t *testing.T) {
	kernels := vmtest.Kernels(t)
	dir := t.TempDir()
	files := map[string]string{
		"/uffdgate": vmtest.BuildStatic(t, module+"/cmd/uffdgate", dir),
		"/uffdtry":  vmtest.BuildStatic(t, module+"/e2e/uffdtry", dir),
		"/e2e.test": vmtest.BuildTest(t, module+"/e2e", dir, "vme2e"),
		"/exeforge": vmtest.BuildC(t, "e2e/exeforge/exeforge.c", dir),
		"/recycle":  vmtest.BuildC(t, "e2e/recycle/recycle.c", dir),
	}
	examples, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example policies found: %v", err)
	}
	for _, e := range examples {
		files["/examples/"+filepath.Base(e)] = e
	}
	matrix := regexp.MustCompile(`(?m)^(MATRIX|RULES|TREE|RELOAD|FLOOD|PROBE) .*$`)
	for _, k := range kernels {
		t.Run(k.Series, func(t *testing.T) {
			t.Parallel()
			argv := []string{"/e2e.test", "-test.v", "-test.count=1", "-test.timeout=20m"}
			if run := os.Getenv("UFFDGATE_VM_RUN"); run != "" {
				argv = append(argv, "-test.run", run) // narrows the guest tests while developing
			}
			res := vmtest.Run(t, k, vmtest.Guest{Files: files, Argv: argv}, 25*time.Minute)
			for _, l := range matrix.FindAllString(res.Output, -1) {
				t.Log(l)
			}
			t.Logf("kernel %s (%s): guest tests took %v in the VM", k.Series, k.Version, res.Duration.Round(time.Second))
			if res.ExitCode != 0 || !strings.Contains(res.Output, "\nPASS\n") {
				t.Fatalf("guest tests failed on %s (exit %d):\n%s", k.Series, res.ExitCode, guestFailures(res.Output))
			}
		})
	}
}

// guestFailures keeps the lines of the guest's go test output worth reading.
func guestFailures(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "FAIL") || strings.Contains(l, "_test.go:") || strings.Contains(l, "panic") {
			keep = append(keep, l)
		}
	}
	if len(keep) > 200 {
		keep = keep[len(keep)-200:]
	}
	return strings.Join(keep, "\n")
}

// TestDemo is `make demo`: the default policy on a real kernel, real processes
// asking for contexts the ways real programs do. Its console is the demo's output.
func TestDemo(t *testing.T) {
	k := vmtest.Kernels(t)[len(vmtest.Kernels(t))-1]
	dir := t.TempDir()
	res := vmtest.Run(t, k, vmtest.Guest{Files: map[string]string{
		"/uffdgate": vmtest.BuildStatic(t, module+"/cmd/uffdgate", dir),
		"/uffdtry":  vmtest.BuildStatic(t, module+"/e2e/uffdtry", dir),
		"/demo":     vmtest.BuildStatic(t, module+"/e2e/demo", dir),
	}, Argv: []string{"/demo"}}, 5*time.Minute)
	var shown []string
	for _, l := range strings.Split(res.Output, "\n") {
		if strings.HasPrefix(l, "demo |") || strings.HasPrefix(l, "  uffdgate |") {
			shown = append(shown, l)
		}
	}
	t.Logf("kernel %s, booted and ran in %v:\n%s", k.Version, res.Duration.Round(time.Second), strings.Join(shown, "\n"))
	if res.ExitCode != 0 {
		t.Fatalf("demo failed (exit %d)", res.ExitCode)
	}
}

// TestVMRefusesWithoutBPFLSM: on a kernel whose lsm= list lacks bpf, `uffdgate
// run` refuses with exit 3 and names the boot parameter to add.
func TestVMRefusesWithoutBPFLSM(t *testing.T) {
	k := vmtest.Kernels(t)[0]
	dir := t.TempDir()
	res := vmtest.Run(t, k, vmtest.Guest{
		Files: map[string]string{"/uffdgate": vmtest.BuildStatic(t, module+"/cmd/uffdgate", dir)},
		Argv:  []string{"/uffdgate", "run"},
		LSM:   "lockdown,capability",
	}, 3*time.Minute)
	if res.ExitCode != 3 {
		t.Fatalf("uffdgate run without BPF LSM: exit %d, want 3:\n%s", res.ExitCode, res.Output)
	}
	for _, want := range []string{"BPF LSM is not active", "lsm=lockdown,capability,bpf"} {
		if !strings.Contains(res.Output, want) {
			t.Errorf("refusal does not say %q:\n%s", want, res.Output)
		}
	}
}

// TestBench is `make bench` in a VM. The cost table runs under instruction
// counting (vmtest.Guest.ICount): the guest's clock then counts instructions,
// so every variant is measured without the host's noise, interleaved in one
// boot. The flood and the time to enforce are wall-clock figures, from a second,
// ordinary boot. In the normal test run it is a smoke test (tiny iteration
// counts) so the benchmark code cannot rot; UFFDGATE_BENCH=full runs the real
// measurement. UFFDGATE_BENCH_ARGS adds benchguest flags, e.g.
// "-variants lsm-gate -workloads uffd-create".
func TestBench(t *testing.T) {
	k := vmtest.Kernels(t)[len(vmtest.Kernels(t))-1]
	dir := t.TempDir()
	files := map[string]string{
		"/uffdgate":   vmtest.BuildStatic(t, module+"/cmd/uffdgate", dir),
		"/uffdtry":    vmtest.BuildStatic(t, module+"/e2e/uffdtry", dir),
		"/benchguest": vmtest.BuildStatic(t, module+"/e2e/benchguest", dir),
	}
	full := os.Getenv("UFFDGATE_BENCH") == "full"
	table := []string{"/benchguest", "-flood=false", "-n", "2000", "-rounds", "1"}
	wall := []string{"/benchguest", "-table=false", "-startups", "1"}
	timeout := 6 * time.Minute
	if full {
		table = []string{"/benchguest", "-flood=false", "-n", "100000", "-rounds", "5"}
		wall = []string{"/benchguest", "-table=false", "-startups", "5"}
		timeout = 40 * time.Minute
	}
	extra := strings.Fields(os.Getenv("UFFDGATE_BENCH_ARGS"))
	for _, b := range []struct {
		name   string
		argv   []string
		icount bool
	}{{"cost table, instruction-counted", append(table, extra...), true}, {"flood and start-up, wall clock", wall, false}} {
		res := vmtest.Run(t, k, vmtest.Guest{Files: files, Argv: b.argv, ICount: b.icount, SMP: map[bool]int{true: 1, false: 2}[b.icount]}, timeout)
		var keep []string
		in := false
		for _, l := range strings.Split(res.Output, "\n") {
			switch {
			case l == "BENCH-TABLE-BEGIN":
				in = true
			case l == "BENCH-TABLE-END":
				in = false
			case in || strings.HasPrefix(l, "BENCH"):
				keep = append(keep, l)
			}
		}
		t.Logf("%s: kernel %s, QEMU %v, %v:\n%s", b.name, k.Version, b.argv, res.Duration.Round(time.Second), strings.Join(keep, "\n"))
		if res.ExitCode != 0 || len(keep) == 0 || strings.Contains(res.Output, "BENCH failed") {
			t.Fatalf("benchmark %s failed (exit %d):\n%s", b.name, res.ExitCode, guestFailures(res.Output))
		}
	}
}
